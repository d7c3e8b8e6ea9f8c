"""The ``dcn-deploy`` command line: a click group whose commands are thin layers over library calls.

Importing this module must stay cheap (no torch, onnx or tensorrt): each command imports what it needs
inside its function, so ``dcn-deploy --help`` starts fast.

Exit codes: 0 success (also a bare ``dcn-deploy``, which prints the help), 1 the job ran and failed (e.g.
verification beyond tolerance), 2 bad usage or input, 130 interrupted (Ctrl-C).
"""
from __future__ import annotations

import contextlib
import os
import sys
import traceback
import warnings

import click

from . import __version__
from .commands import (EXIT_BAD_INPUT, EXIT_BROKEN_PIPE, EXIT_FAILED, EXIT_INTERRUPTED,  # noqa: F401
                       CliError, HelpWhenBare, echo_error)  # CliError re-exported
from .interrupts import interrupt_in
from .wording import cli_wording

# Library errors that mean the input was wrong (a file, an option, a model that does not fit, an output folder the
# user may not write) when our own code raised them (is_bad_input); every other exception means it ran and failed.
BAD_INPUT_ERRORS = (ValueError, FileNotFoundError, PermissionError, SyntaxError)


class _Group(HelpWhenBare):
    """Turns errors into one line ``error: MESSAGE`` (for an error click finds in the command line, then the
    command's usage on a second line) and an exit code unless --debug is given. Given no command, prints the help
    on stdout and exits 0 (:class:`~dcn_deploy.commands.HelpWhenBare`).

    The one place that maps exceptions to exit codes: CliError and bad input (:func:`is_bad_input`) give 2, others 1.
    """

    def make_context(self, info_name, args, parent=None, **extra) -> click.Context:
        # The group's own command line (dcn-deploy --bogus ...) is parsed here, before invoke.
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except click.ClickException as exc:
            raise in_our_form(exc) from exc.__cause__

    def invoke(self, ctx: click.Context):
        debug = bool(ctx.params.get("debug"))  # the group's own option, parsed before invoke
        try:
            # errors built while the command runs name its options (--keep-fp32), not arguments
            with cli_wording(), _our_warnings_as_lines():
                return super().invoke(ctx)
        except click.ClickException as exc:
            if isinstance(exc, click.NoSuchOption) and exc.option_name == "--debug":
                exc.message += f" (--debug goes before the command: {debug_command(ctx)})"
            if debug and exc.__cause__ is not None:  # CliError(...) from exc: show where the cause came from
                traceback.print_exception(type(exc.__cause__), exc.__cause__, exc.__cause__.__traceback__)
            raise in_our_form(exc) from exc.__cause__
        except (click.exceptions.Exit, click.Abort, SystemExit):
            raise
        except KeyboardInterrupt:  # Ctrl-C: not a failure of the run (1), and not click's bare "Aborted!"
            _exit_interrupted()
        except BrokenPipeError:  # output piped into e.g. `head`, which stopped reading: no error message, but no
            # success either (the command did not finish; a failed verify must not pass a pipeline)
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(EXIT_BROKEN_PIPE)
        except Exception as exc:  # noqa: BLE001 - the CLI's one place that turns errors into messages
            if debug:
                traceback.print_exception(type(exc), exc, exc.__traceback__)
            if interrupt_in(exc) is not None:  # Ctrl-C while e.g. onnxruntime loaded: "initialization failed"
                _exit_interrupted()
            echo_error(str(exc).strip() or type(exc).__name__)
            if not debug:
                click.echo(f"(for the traceback run: {debug_command(ctx)})", err=True)
            sys.exit(EXIT_BAD_INPUT if is_bad_input(exc) else EXIT_FAILED)


@contextlib.contextmanager
def _our_warnings_as_lines():
    """While a command runs, a warning our own code raises prints as one line ``warning: MESSAGE`` on stderr (the
    form of the CLI's other notes), not Python's ``path.py:316: UserWarning: MESSAGE`` and the source line after it;
    other libraries' warnings keep Python's form."""
    shown = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, UserWarning) and os.path.abspath(filename).startswith(_our_source_dirs()):
            click.echo(f"warning: {message}", err=True)
        else:
            shown(message, category, filename, lineno, file, line)

    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = shown


def _exit_interrupted() -> None:
    """Report a Ctrl-C and exit 130 (EXIT_INTERRUPTED): the run was stopped, it did not fail."""
    echo_error("interrupted (Ctrl-C); every file is written under a temporary name and renamed when "
               "complete, so none is left half-written")
    sys.exit(EXIT_INTERRUPTED)


class CommandLineError(CliError):
    """An error click found in the command line (an unknown option, a value an option's type refuses, a missing
    file for a path argument), printed in our form: ``error: MESSAGE``, then the command's usage on a second line,
    where click would print ``Usage: ...`` and ``Error: MESSAGE``."""

    def __init__(self, message: str, exit_code: int, usage: str = "") -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.usage = usage

    def show(self, file=None) -> None:
        super().show(file)
        if self.usage:
            click.echo(self.usage, file=file, err=file is None)


def in_our_form(exc: click.ClickException) -> click.ClickException:
    """``exc`` as an exception that prints ``error: MESSAGE``: itself when it does already (a CliError), else a
    :class:`CommandLineError` with its message and exit code.

    Click shows every ClickException with the exception's own ``show``, which for click's classes (and any
    ClickException that is not this module's CliError) prints ``Error: MESSAGE``.
    """
    if isinstance(exc, CliError):
        return exc
    usage = ""
    ctx = getattr(exc, "ctx", None)  # a UsageError's command
    if isinstance(exc, click.UsageError) and ctx is not None:
        usage = " ".join([ctx.command_path] + ctx.command.collect_usage_pieces(ctx))
        help_names = ctx.command.get_help_option_names(ctx) if ctx.command.get_help_option(ctx) else ()
        usage = (f"(usage: {usage}; for help run: {ctx.command_path} {max(help_names, key=len)})" if help_names
                 else f"(usage: {usage})")
    return CommandLineError(exc.format_message(), exc.exit_code, usage)


def _our_source_dirs() -> tuple:
    """The folders of dcn_deploy's own code: the package and, in a checkout, models/ (dcn_deploy.models)."""
    dirs = [os.path.dirname(os.path.abspath(__file__))]
    models = sys.modules.get("dcn_deploy.models")
    if models is not None and getattr(models, "__file__", None):
        dirs.append(os.path.dirname(os.path.abspath(models.__file__)))
    return tuple(d + os.sep for d in dirs)


def is_bad_input(exc: BaseException) -> bool:
    """Whether an exception from a command means the input was wrong (exit 2) rather than a failure (exit 1).

    BAD_INPUT_ERRORS raised by our own code are our checks of the input. A ValueError raised inside a dependency
    (numpy, torch, onnx) that our code let through unchecked is not known to be the input's fault: a failure.
    """
    if not isinstance(exc, BAD_INPUT_ERRORS):
        return False
    if not isinstance(exc, ValueError) or type(exc).__module__.startswith("dcn_deploy"):
        return True  # a missing file, the user's own syntax error, or one of our error classes
    frames = traceback.extract_tb(exc.__traceback__)
    return not frames or os.path.abspath(frames[-1].filename).startswith(_our_source_dirs())


def debug_command(ctx: click.Context) -> str:
    """``dcn-deploy --debug COMMAND ...``: --debug is an option of the group, so it goes before the command."""
    return f"dcn-deploy --debug {ctx.invoked_subcommand or 'COMMAND'} ..."


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="dcn-deploy")
@click.option("--debug", is_flag=True, help="Show full tracebacks on errors. It goes before the command, as in "
              "'dcn-deploy --debug verify ...'.")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """Deploy deformable convolution networks: PyTorch -> ONNX -> ONNX Runtime / TensorRT.

    \b
    Typical flow:
      dcn-deploy export dcn_deploy.models.demo:DemoNet -o demo.onnx --input-shape 1x1x28x28 --dynamic
      dcn-deploy verify demo.onnx --against ort
      dcn-deploy bench demo.onnx --runner ort --batch 1,8
      dcn-deploy build demo.onnx -o demo.engine      (TensorRT)

    \b
    A file exported by mmdeploy, mmcv or torchvision (their own deformable and detection ops):
      dcn-deploy adopt end2end.onnx                  -> end2end.adopted.onnx, with ours
    """
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug


def _register_commands() -> None:
    # Each module defines one command object named ``command``; importing them is cheap (click only).
    import importlib

    for module in ("demo", "export", "adopt", "verify", "bench", "inspect", "infer", "build", "plugin", "zoo"):
        main.add_command(importlib.import_module(f"dcn_deploy.commands.{module}").command)


_register_commands()

if __name__ == "__main__":
    main()
