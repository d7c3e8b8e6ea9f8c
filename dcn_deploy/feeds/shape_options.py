"""The CLI's ``--shape`` option: ``NAME=SHAPE`` items read into ``{input name: shape}`` and, given the model file,
completed with the example shapes :func:`dcn_deploy.export` stored in it for the dynamic inputs the user did not
name, so a dynamic model runs without ``--shape``; and :func:`reject_empty`, which refuses a zero-sized dimension
wherever a shape comes from.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Dict, Mapping, Optional, Sequence

from .onnx_file_inputs import fed_inputs, read_onnx_file, read_stored_inputs
from .shapes import FeedError, Shape, format_shape, parse_shape

# NAME=SHAPE or NAME:SHAPE, split at the last separator: ONNX names may hold ':' (e.g. "input:0"), shapes never do
_SHAPE_OPTION = re.compile(r"^(?P<name>.+)[=:](?P<shape>[^=:]+)$")


def parse_shape_options(items: Sequence[str], model_path: Optional[os.PathLike] = None, *,
                        model=None) -> Dict[str, Shape]:
    """``["x=1x3x64x64", "y:1x8"]`` -> ``{"x": (1, 3, 64, 64), "y": (1, 8)}`` (the CLI's ``--shape`` option).

    With ``model_path`` (an ONNX file written by :func:`dcn_deploy.export`), the example shapes stored in it
    (:func:`dcn_deploy.feeds.onnx_file_inputs.stored_example_shapes`) are added for every input with a dynamic
    dimension that ``items`` does not name, so the user's ``--shape`` wins. A stored input's dynamic batch follows
    the batch the user gave for another input; :func:`dcn_deploy.feeds.shape_resolution.resolve_shapes` still lets
    ``--batch`` replace it. Files without stored shapes give exactly the user's shapes (a dynamic dimension left
    unknown is then reported by :func:`dcn_deploy.feeds.shape_resolution.resolve_shapes`).
    ``model``: the ``onnx.ModelProto`` of ``model_path`` when the caller has read it already (:func:`read_onnx_file`),
    so that the file is not read again.
    """
    shapes: Dict[str, Shape] = {}
    for item in items:
        match = _SHAPE_OPTION.match(item)
        if match is None:
            if model is None and model_path is not None:
                model = read_onnx_file(Path(model_path))
            raise FeedError(f"--shape {item!r}: expected NAME=SHAPE or NAME:SHAPE, e.g. "
                            + (_named_example(item, model) or "--shape input=1x3x64x64 or --shape input:1x3x64x64"))
        if match["name"] in shapes:
            raise FeedError(f"--shape {item!r}: input {match['name']!r} is given twice (also "
                            f"{format_shape(shapes[match['name']])}); give one --shape per input")
        shapes[match["name"]] = parse_shape(match["shape"])
    reject_empty(shapes, "--shape")
    if model is not None or model_path is not None:
        shapes.update(_stored_defaults(model if model is not None else read_onnx_file(Path(model_path)), shapes))
    return shapes


def _named_example(item: str, model) -> str:
    """For a bare shape (``--shape 1x3x64x64``, as trtexec users write it) and a model read: the option as it should
    be written, with the model's input names; "" otherwise."""
    if model is None:
        return ""
    try:
        shape = format_shape(parse_shape(item))
    except (FeedError, ValueError):
        return ""
    names = [v.name for v in fed_inputs(model.graph)]
    if not names:
        return ""
    return f"--shape {names[0]}={shape} (the model's inputs: {', '.join(names)})"


def reject_empty(shapes: Mapping[str, Sequence[int]], source: str) -> None:
    """Refuse an input with a zero-sized dimension (``source``: where its shape came from, e.g. ``--shape``): its
    outputs would be empty, so a run shows nothing and a comparison passes on nothing."""
    for name, shape in shapes.items():
        if 0 in tuple(shape):
            raise FeedError(f"input {name!r}: {source} gives shape {format_shape(shape)}, with size 0 in dimension "
                            f"{tuple(shape).index(0)}: there is nothing to run or compare; give every dimension a "
                            "size >= 1")


def _stored_defaults(proto, given: Mapping[str, Shape]) -> Dict[str, Shape]:
    """Stored example shapes for the dynamic inputs ``given`` does not name (only those that fit the graph).

    A dimension that shares its symbol (``batch``, ``height``, ...) with an input the user gave takes the user's
    size, so one ``--shape`` resizes every input tied to it; an unnamed dynamic batch dimension takes the user's
    batch (not a RoI input's first dimension: that counts boxes)."""
    stored, graph, rois = read_stored_inputs(proto)
    symbols: Dict[str, int] = {}  # symbol -> the size the user gave it
    for name, shape in given.items():
        for dim, size in zip(graph.get(name, ()), shape):
            if isinstance(dim, str):
                symbols.setdefault(dim, int(size))
    user_batches = [given[n][0] for n, dims in graph.items()
                    if n in given and n not in rois and dims and not isinstance(dims[0], int) and given[n]]
    defaults: Dict[str, Shape] = {}
    for name, dims in graph.items():
        shape = stored.get(name)
        if name in given or shape is None or all(isinstance(d, int) for d in dims):
            continue
        if len(shape) != len(dims) or min(shape, default=1) < 1 or any(
                isinstance(d, int) and d != s for d, s in zip(dims, shape)):
            continue  # the file was changed after export: ignore what no longer fits
        shape = tuple(symbols.get(d, s) if isinstance(d, str) else s for d, s in zip(dims, shape))
        if user_batches and dims[0] is None and name not in rois:
            shape = (user_batches[0],) + shape[1:]
        defaults[name] = shape
    return defaults
