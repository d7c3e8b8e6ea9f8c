"""Shapes as text, and the error of every input module.

``1x3x64x64`` is how the CLI, the messages and the stored example shapes write a shape: :func:`parse_shape` reads
it, :func:`format_shape` writes it (``?`` for a dynamic dimension). :class:`FeedError` is what
:mod:`dcn_deploy.feeds` and the modules beside it (shape options, shape resolution, random feeds, input files)
raise for an input that cannot be made or loaded; it is defined here, the one module all of them import.
"""
from __future__ import annotations

from typing import Sequence, Tuple

Shape = Tuple[int, ...]


class FeedError(ValueError):
    """An input could not be made or loaded; the message names the input, the expectation and the fix."""


def parse_shape(text: str) -> Shape:
    """``"1x3x64x64"`` (or ``"1,3,64,64"``) -> ``(1, 3, 64, 64)``."""
    parts = text.replace(",", "x").lower().split("x")
    try:
        shape = tuple(int(p) for p in parts)
    except ValueError:
        raise FeedError(f"cannot read shape {text!r}: write it as sizes joined by 'x', e.g. 1x3x64x64") from None
    if any(s < 0 for s in shape):
        raise FeedError(f"shape {text!r} has a negative size ({min(shape)}); every size must be >= 0, "
                        "e.g. 1x3x64x64")
    return shape


def format_shape(shape: Sequence[object]) -> str:
    """``(1, 3, 64, 64)`` -> ``1x3x64x64``; a shape with symbolic dimensions is spaced, ``batch x 3 x height x width``
    (``batchx3xheightxwidth`` reads as one word)."""
    joiner = " x " if any(isinstance(d, str) for d in shape) else "x"
    return joiner.join("?" if d is None else str(d) for d in shape) or "scalar"

