"""CLI commands: each module defines one click command (``command``) over a library call."""
from __future__ import annotations

import click


class CliError(click.ClickException):
    """A user-facing error: printed as 'error: ...' with exit code 2, no traceback unless --debug."""

    exit_code = 2

    def format_message(self) -> str:
        return self.message
