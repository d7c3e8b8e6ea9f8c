"""What the CLI tests share: a click runner that keeps stderr apart from stdout, on every click version."""
from __future__ import annotations

from click.testing import CliRunner


def cli_runner() -> CliRunner:
    try:
        return CliRunner(mix_stderr=False)  # click < 8.2
    except TypeError:
        return CliRunner()  # click >= 8.2 keeps stderr apart


def error_lines(result) -> list:
    """The ``error: ...`` lines of a run's stderr."""
    return [line for line in result.stderr.splitlines() if line.startswith("error:")]
