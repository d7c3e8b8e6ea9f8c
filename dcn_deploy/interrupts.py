"""Ctrl-C that reaches us disguised as another error.

A SIGINT while a C extension initialises (``import onnxruntime`` the first time a command runs a model, ``import
tensorrt``) does not surface as a KeyboardInterrupt: the import fails with ``ImportError: initialization failed``,
raised from the KeyboardInterrupt. Code that catches ImportError ("TensorRT is not installed") or Exception ("ONNX
Runtime cannot load the file") would then report the user's Ctrl-C as a failure of the run, with exit code 1 or 2
instead of 130. :func:`interrupt_in` finds the interrupt behind such an error; :func:`reraise_interrupt` raises it
again as what it is.
"""
from __future__ import annotations

from typing import Optional

__all__ = ["interrupt_in", "reraise_interrupt"]


def interrupt_in(exc: Optional[BaseException]) -> Optional[KeyboardInterrupt]:
    """The KeyboardInterrupt that ``exc`` is, or was raised from or while handling (its ``__cause__`` and
    ``__context__`` chain); None when there is none."""
    seen = set()
    pending = [exc]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, KeyboardInterrupt):
            return current
        pending.extend((current.__cause__, current.__context__))
    return None


def reraise_interrupt(exc: BaseException) -> None:
    """Raise KeyboardInterrupt (from ``exc``) when ``exc`` is an error that a Ctrl-C caused; else return."""
    if not isinstance(exc, KeyboardInterrupt) and interrupt_in(exc) is not None:
        raise KeyboardInterrupt() from exc
