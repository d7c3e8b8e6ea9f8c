"""CLI commands: each module defines one click command (``command``) over a library call.

Every error the CLI prints has one form, ``error: MESSAGE`` on stderr, and one of these exit codes (``cli.py``
decides which for errors that are not :class:`CliError`).
"""
from __future__ import annotations

import contextlib
import functools
import os
import sys
from pathlib import Path
from typing import IO, Optional, Sequence

import click

EXIT_FAILED = 1  # the job ran and failed, e.g. a verification beyond tolerance
EXIT_INTERRUPTED = 130  # Ctrl-C (SIGINT), as shells report it: 128 + the signal's number
# stdout closed by its reader (`dcn-deploy verify ... | head`) before the command finished: 128 + SIGPIPE, as a
# process the signal ends reports it. Not 0: the run's own result (a verification beyond tolerance) is unknown then.
EXIT_BROKEN_PIPE = 141
EXIT_BAD_INPUT = 2  # bad usage or input: a missing or unreadable file, an option that does not fit the model

# Each dtype name of export's --dtype and its short spelling, build --precision's; both also take "half" for float16.
DTYPE_SHORT_NAMES = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16", "float64": "fp64"}


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


class OutputFile(click.Path):
    """A file the command writes (``-o/--output``, ``--timing-cache``): click's path to a file (``dir_okay=False``,
    a ``Path``), refusing a name that ends in a path separator. ``Path("outdir/")`` drops the separator, so without
    this ``-o outdir/`` for a folder not yet made writes a file named ``outdir``."""

    def __init__(self):
        super().__init__(dir_okay=False, path_type=Path)

    def convert(self, value, param, ctx):
        text = value if isinstance(value, str) else None
        if text and text.endswith(("/", os.sep)):
            self.fail(f"{text!r} names a folder (it ends in {text[-1]!r}); give the name of the file to write, "
                      f"e.g. {text}FILE", param, ctx)
        return super().convert(value, param, ctx)


def check_output_suffix(output: Path, suffixes: Sequence[str], holds: str) -> None:
    """Raise :class:`CliError` when ``--output`` (``output``) does not end in one of ``suffixes`` (any case): the
    file will hold ``holds`` (e.g. "an ONNX model"). Why: the name is how the other commands tell what a file is
    (verify, bench and infer read .engine/.plan/.trt as a TensorRT engine and anything else as ONNX), and how the
    user does. A folder is left to io_utils.check_output_path, which says so. Call it before slow work."""
    if output.name.lower().endswith(tuple(suffixes)) or output.is_dir():
        return
    renamed = output.with_suffix(suffixes[0]) if output.suffix else output.with_name(output.name + suffixes[0])
    raise CliError(f"--output {output}: the file written is {holds}; give a name ending in {' or '.join(suffixes)} "
                   f"(e.g. {renamed})")


def repeated_options(command: click.Command, args) -> list:
    """``(option, [values])`` for each option of ``command`` that takes one value and appears more than once in
    ``args`` (its command line, before ``--``): click would keep the last value and drop the others silently.

    Read as click's parser reads them: a value (``--opt VALUE``, ``--opt=VALUE``, ``-oVALUE``) is never an option,
    whatever it looks like (``-1``, ``-``, ``--``); an option that takes N values takes the inline one and N - 1 more
    (or N); a cluster of short options (``-qj2``) is its flags, then the first that takes a value, with the rest.
    """
    takes_one = {}
    takes_values = {}  # every option that takes values: its values are skipped, never read as options
    flags = set()  # short and long names of flags, for the clusters
    for param in command.params:
        if not isinstance(param, click.Option):
            continue
        for name in param.opts + param.secondary_opts:
            if param.is_flag or param.count:
                flags.add(name)
                continue
            takes_values[name] = param
            if not param.multiple:
                takes_one[name] = param
    seen = {}
    index = 0
    while index < len(args):
        token = args[index]
        index += 1
        if token == "--":
            break
        if token.startswith("--"):
            name, has_inline, inline = token.partition("=")
        elif token.startswith("-") and len(token) > 1:  # -o, -oVALUE, or a cluster -qo / -qoVALUE
            name, has_inline, inline = "", "", ""
            for position in range(1, len(token)):
                short = "-" + token[position]
                if short in takes_values:
                    name, inline = short, token[position + 1:]
                    has_inline = inline != ""
                    break
                if short not in flags:
                    break  # not our option (a negative number, an unknown option for click to refuse)
        else:
            continue
        param = takes_values.get(name)
        if param is None:
            continue
        count = param.nargs - (1 if has_inline else 0)
        value = " ".join(([inline] if has_inline else []) + list(args[index:index + count]))
        index += count
        if name in takes_one:
            seen.setdefault(param.name, (name, []))[1].append(value)
    return [(name, values) for name, values in seen.values() if len(values) > 1]


class Command(click.Command):
    """A command whose options that take one value may be given once: a second ``--runner`` or ``--batch`` is
    refused, where click would keep the last one without a word. Not while the shell completes a command line
    (click parses it resiliently), and after click's own parse, so that ``--help`` still shows the help."""

    def parse_args(self, ctx: click.Context, args):
        repeated = [] if ctx.resilient_parsing else repeated_options(self, args)
        rest = super().parse_args(ctx, list(args))
        for option, values in repeated:
            if _takes_a_list(self, option):  # bench --batch 1 --batch 8: the user meant --batch 1,8
                fix = f"it takes one list: give it once, comma-separated: {option} {','.join(values)}"
            else:
                fix = "it takes one value: give it once (an option that takes several values says so in --help)"
            raise click.UsageError(f"{option} is given {len(values)} times ({', '.join(map(repr, values))}); {fix}",
                                   ctx=ctx)
        return rest


class ListOption(click.Option):
    """An option whose one value is a comma-separated list (bench's --runner and --batch, export's --input-names and
    --output-names): declared with ``cls=ListOption``, so that :class:`Command` tells a user who repeats it to give
    one list instead."""


def _takes_a_list(command: click.Command, option: str) -> bool:
    """Whether ``option`` of ``command`` takes one comma-separated list (declared as a :class:`ListOption`)."""
    return any(isinstance(param, ListOption) and option in param.opts + param.secondary_opts
               for param in command.params)


class HelpWhenBare(click.Group):
    """A group that, given no command (a bare ``dcn-deploy``, ``dcn-deploy zoo``), prints its help on stdout and
    exits 0, as ``--help`` does, whatever click's version: click 8.1 did that itself, click >= 8.2 prints the help
    on stderr and exits 2 (its NoArgsIsHelpError, a usage error)."""

    def parse_args(self, ctx: click.Context, args):
        if not args and self.no_args_is_help and not ctx.resilient_parsing:
            click.echo(ctx.get_help(), color=ctx.color)
            ctx.exit()
        return super().parse_args(ctx, args)


class Group(HelpWhenBare):
    """A command group whose commands are :class:`Command` s; given no command, its help (:class:`HelpWhenBare`)."""

    command_class = Command


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
