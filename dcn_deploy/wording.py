"""How an error names an argument, worded for whoever reads it: a library caller or a ``dcn-deploy`` user.

A library error names the Python argument and, in parentheses, the CLI option that sets it
(``keep_fp32 (CLI: --keep-fp32): no node named ...``). While the CLI runs (:func:`cli_wording`, set by
``dcn_deploy.cli``) the same error names the option alone (``--keep-fp32: no node named ...``), so a shell user reads
nothing to translate. Messages are rendered when the exception is built, which happens inside the CLI's command.

Pure Python (no torch): imported by every layer that raises.
"""
from __future__ import annotations

import contextlib
import contextvars
from typing import Iterator

# True while a dcn-deploy command runs; a ContextVar rather than a global so a library call made after the CLI
# returned (tests run both in one process) gets library wording again.
_CLI_READER: contextvars.ContextVar[bool] = contextvars.ContextVar("dcn_deploy_cli_reader", default=False)


def cli_is_reading() -> bool:
    """Whether messages are being worded for the CLI (inside :func:`cli_wording`)."""
    return _CLI_READER.get()


@contextlib.contextmanager
def cli_wording() -> Iterator[None]:
    """Word every message built inside this block for a ``dcn-deploy`` user; the previous wording comes back after."""
    token = _CLI_READER.set(True)
    try:
        yield
    finally:
        _CLI_READER.reset(token)


def argument(library: str, cli: str) -> str:
    """An argument as the reader spells it: ``"LIBRARY (CLI: CLI)"`` for a library caller, ``"CLI"`` for the CLI.

    Put the verb outside so both read as a sentence: ``"pass " + argument("verify=False", "--no-verify")`` gives
    ``pass verify=False (CLI: --no-verify)`` or ``pass --no-verify``.
    """
    return cli if cli_is_reading() else f"{library} (CLI: {cli})"


def for_reader(library: str, cli: str) -> str:
    """``library`` or ``cli`` whole: for advice whose CLI form is not the library's with the option swapped in
    (the library text then carries its own ``(CLI: ...)``, and ``cli`` may be empty where the CLI has no such way)."""
    return cli if cli_is_reading() else library
