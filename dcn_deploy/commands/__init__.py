"""CLI commands: each module defines one click command (``command``) over a library call.

Every error the CLI prints has one form, ``error: MESSAGE`` on stderr, and one of these exit codes (``cli.py``
decides which for errors that are not :class:`CliError`).
"""
from __future__ import annotations

import contextlib
import functools
import sys
from typing import IO, Optional

import click

EXIT_FAILED = 1  # the job ran and failed, e.g. a verification beyond tolerance
EXIT_INTERRUPTED = 130  # Ctrl-C (SIGINT), as shells report it: 128 + the signal's number
EXIT_BAD_INPUT = 2  # bad usage or input: a missing or unreadable file, an option that does not fit the model


def echo_error(message: str, file: Optional[IO] = None) -> None:
    """Print ``error: MESSAGE`` (on stderr unless ``file``): the one form of every error the CLI reports."""
    click.echo(f"error: {message}", file=file, err=file is None)


class CliError(click.ClickException):
    """A user-facing error: printed as one line ``error: MESSAGE`` on stderr, exit code 2 (bad usage or input).

    No traceback is shown; with ``dcn-deploy --debug`` the traceback of the error it was raised from
    (``raise CliError(...) from exc``) is printed first.
    """

    exit_code = EXIT_BAD_INPUT

    def format_message(self) -> str:
        return self.message

    def show(self, file: Optional[IO] = None) -> None:  # click's default prints "Error: ..."
        echo_error(self.format_message(), file)


# Where echo_report prints while a --json command runs (the real stdout); None otherwise.
_report_stream: Optional[IO] = None


def echo_report(text: str) -> None:
    """Print a command's report on stdout: the real one, also while :func:`json_stdout` sends the rest to stderr."""
    click.echo(text, file=_report_stream)


def json_stdout(command):
    """For a command with ``--json`` (its ``as_json`` argument): while it runs, everything else that writes to
    stdout (a model's own ``print``, a library's chatter) goes to stderr, so that stdout holds the JSON report
    alone (printed with :func:`echo_report`) and ``dcn-deploy ... --json | jq`` parses. Goes under the click
    decorators, right above the function."""

    @functools.wraps(command)
    def run(*args, **kwargs):
        global _report_stream
        if not kwargs.get("as_json"):
            return command(*args, **kwargs)
        saved, _report_stream = _report_stream, sys.stdout
        try:
            with contextlib.redirect_stdout(sys.stderr):
                return command(*args, **kwargs)
        finally:
            _report_stream = saved

    return run
