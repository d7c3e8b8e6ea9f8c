"""The ``dcn-deploy`` command line: a click group whose commands are thin layers over library calls.

Importing this module must stay cheap (no torch, onnx or tensorrt): each command imports what it needs
inside its function, so ``dcn-deploy --help`` starts fast.

Exit codes: 0 success, 1 the job ran and failed (e.g. verification beyond tolerance), 2 bad usage or input.
"""
from __future__ import annotations

import os
import sys

import click

from . import __version__
from .commands import CliError  # noqa: F401 - re-exported: the error type commands raise


class _Group(click.Group):
    """Turns library errors into one-line messages unless --debug is given."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort, SystemExit):
            raise
        except BrokenPipeError:  # output piped into e.g. `head`, which stopped reading: not an error of ours
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(0)
        except Exception as exc:  # noqa: BLE001 - the CLI's one place that turns errors into messages
            if ctx.obj and ctx.obj.get("debug"):
                raise
            click.echo(f"error: {exc}", err=True)
            click.echo("(run with --debug for the traceback)", err=True)
            sys.exit(2 if isinstance(exc, (ValueError, TypeError, FileNotFoundError, KeyError)) else 1)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="dcn-deploy")
@click.option("--debug", is_flag=True, help="Show full tracebacks on errors.")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """Deploy deformable convolution networks: PyTorch -> ONNX -> ONNX Runtime / TensorRT.

    \b
    Typical flow:
      dcn-deploy export models.demo:DemoNet -o demo.onnx --input-shape 1x1x28x28
      dcn-deploy verify demo.onnx --against ort
      dcn-deploy bench demo.onnx --runner ort --batch 1,8
      dcn-deploy build demo.onnx -o demo.engine      (TensorRT)
    """
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug


def _register_commands() -> None:
    # Each module defines one command object named ``command``; importing them is cheap (click only).
    import importlib

    for module in ("demo", "export", "verify", "bench", "inspect", "infer", "build", "plugin", "zoo"):
        try:
            mod = importlib.import_module(f"dcn_deploy.commands.{module}")
        except ModuleNotFoundError as exc:
            if exc.name == f"dcn_deploy.commands.{module}":
                continue  # command not written yet
            raise
        main.add_command(mod.command)


_register_commands()

if __name__ == "__main__":
    main()
