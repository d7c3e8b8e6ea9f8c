"""JSON that strict parsers read: every JSON report the product writes (compare_runners/verify, benchmark/bench,
infer, export, inspect, the demo, the zoo's list and report, `plugin info`) goes through :func:`json_text`.

``json.dumps`` writes non-finite floats as ``Infinity``/``NaN``, which is not JSON (RFC 8259): JavaScript's
``JSON.parse`` and jq refuse the whole file, typically when a comparison failed or an output held NaN, which is when
the report matters most. Here they are the strings ``"inf"``, ``"-inf"`` and ``"nan"``, and numpy scalars are plain
numbers. Importing this module does not import numpy.
"""
from __future__ import annotations

import json
import math

__all__ = ["json_safe", "json_text"]


def json_safe(value):
    """``value`` with numpy scalars as Python numbers and non-finite floats as ``"inf"``/``"-inf"``/``"nan"``,
    through dicts, lists and tuples."""
    if type(value).__module__ == "numpy" and hasattr(value, "item") and getattr(value, "ndim", 0) == 0:
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else ("nan" if value != value else "inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def json_text(value, indent: int = 2) -> str:
    """``value`` as strict JSON text (:func:`json_safe`); a value JSON cannot hold is a TypeError naming it."""
    return json.dumps(json_safe(value), indent=indent, allow_nan=False)
