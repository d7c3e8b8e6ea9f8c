"""Failures of the user's model code, told in one line: :class:`ModelCodeError` (its file, module, factory or
``example_inputs`` raised: a bad ``--model``) and :func:`describe_exception`, the exception and where in the user's
file it was raised.
"""
from __future__ import annotations

import traceback
from pathlib import Path


class ModelCodeError(ValueError):
    """The user's model code (its file or module, or the factory) raised while being loaded: a bad --model for the
    CLI (exit 2), with the reference, the exception and where in the user's file it was raised."""


def describe_exception(exc: BaseException, user_file=None) -> str:
    """``RuntimeError: boom (at my_model.py:2)``: an exception from the user's code, in one line, and where it was
    raised: the last line of ``user_file`` on its way, or without one the last line outside the installed
    packages and dcn_deploy (a SyntaxError names its own file and line)."""
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    text = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    if isinstance(exc, SyntaxError):
        return text
    if user_file is not None:
        target = Path(user_file).resolve()
        frames = [f for f in traceback.extract_tb(exc.__traceback__) if Path(f.filename).resolve() == target]
    else:
        frames = [f for f in traceback.extract_tb(exc.__traceback__)
                  if "site-packages" not in f.filename and "/dcn_deploy/" not in f.filename.replace("\\", "/")]
    return text + (f" (at {Path(frames[-1].filename).name}:{frames[-1].lineno})" if frames else "")
