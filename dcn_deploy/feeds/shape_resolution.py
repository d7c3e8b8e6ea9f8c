"""Concrete input shapes from a model's input metadata and what the user gave (``shapes``, ``batch``).

:func:`resolve_shapes` keeps fixed dimensions, takes dynamic ones from the user's shapes or the batch, and says
which dimension is missing. :func:`fixed_batch` and :func:`fixed_batch_error` are the rule for a model that runs
only its own batch size, shared with :func:`dcn_deploy.bench.benchmark`. The first dimension of a RoI input counts
boxes, not images, so ``batch`` never sets it.
"""
from __future__ import annotations

from typing import Dict, Mapping, Optional, Sequence

from ..backends.base import TensorMeta
from ..wording import argument, for_reader
from .shapes import FeedError, Shape, format_shape, parse_shape

# Boxes in a random feed when a RoI input's box count is dynamic and not given.
DEFAULT_BOX_COUNT = 8


def _example_shape(shape: Sequence[object]) -> Shape:
    # batch 1, and a plausible image size for other unknown dimensions, as an example to edit
    return tuple(d if isinstance(d, int) else (1 if i == 0 else 64) for i, d in enumerate(shape))


def resolve_shapes(metas: Sequence[TensorMeta], shapes: Optional[Mapping[str, Sequence[int]]] = None,
                   batch: Optional[int] = None, rois: Sequence[str] = ()) -> Dict[str, Shape]:
    """Concrete shape of every input.

    A shape the user gave for an input wins (its fixed dimensions must agree with the model's). Otherwise
    fixed dimensions are kept and a dynamic first dimension takes ``batch`` (default: the first dimension of a
    shape given for another batched input, else 1). ``batch``, when given,
    also replaces the first dimension of a user shape for an input whose first dimension is dynamic, so
    ``--shape x=1x3x64x64 --batch 8`` runs batch 8; a model with no dynamic first dimension accepts only its own
    batch size. Any other dynamic dimension must come from ``shapes``. The first dimension of a RoI input
    (``rois``, see :func:`dcn_deploy.feeds.onnx_file_inputs.roi_inputs`) counts boxes, not images: ``batch``
    never sets it (a dynamic one defaults to :data:`DEFAULT_BOX_COUNT`).
    """
    if batch is not None and (isinstance(batch, bool) or not hasattr(batch, "__index__") or batch < 1):
        # first: a batch of 0 would otherwise read as a mismatch with a fixed batch size
        raise FeedError(f"{argument('batch', '--batch')} must be an int >= 1 (the batch size), got {batch!r}")
    if shapes is not None and not isinstance(shapes, Mapping):
        raise FeedError(f"{argument('shapes', '--shape')} must be a dict {{input name: shape}}, e.g. "
                        f"shapes={{'input': (1, 3, 64, 64)}}, got a {type(shapes).__name__}")
    shapes = dict(shapes or {})
    batched_metas = [m for m in metas if m.name not in rois]  # the inputs whose first dimension is the batch
    known = {m.name for m in metas}
    unknown = sorted(set(shapes) - known)
    if unknown:
        raise FeedError(f"{argument('shapes', '--shape')} names {unknown}, which are not inputs of the model; its "
                        f"inputs are {sorted(known)}")
    metas_by_name = {m.name: m for m in metas}
    shapes = {name: _shape_argument(metas_by_name[name], given) for name, given in shapes.items()}
    default_batch = batch
    if default_batch is None:  # a batch size the user gave for one batched input applies to the others
        given_batches = [tuple(shapes[m.name])[0] for m in batched_metas
                         if m.name in shapes and m.shape and not isinstance(m.shape[0], int) and len(shapes[m.name])]
        default_batch = given_batches[0] if given_batches else None
    resolved: Dict[str, Shape] = {}
    for meta in metas:
        is_roi = meta.name in rois
        given = shapes.get(meta.name)
        resolved[meta.name] = (_given_shape(meta, given, batch, is_roi) if given is not None
                               else _default_shape(meta, default_batch, is_roi))
    fixed = fixed_batch(metas, rois)
    if batch is not None and fixed is not None and batch != fixed:
        raise fixed_batch_error(metas, [batch], rois)
    return resolved


def _given_shape(meta: TensorMeta, given: Shape, batch: Optional[int], is_roi: bool) -> Shape:
    """The shape the user gave for ``meta``, checked against its fixed dimensions; ``batch`` (when given) replaces
    a dynamic first dimension, except a RoI input's (it counts boxes)."""
    if len(given) != len(meta.shape):
        raise FeedError(f"input {meta.name!r}: {argument('shapes', '--shape')} gives {format_shape(given)}, "
                        f"{len(given)} dimensions; the model's input has {len(meta.shape)} "
                        f"({format_shape(meta.shape)})")
    for axis, (want, got) in enumerate(zip(meta.shape, given)):
        if isinstance(want, int) and want != got:
            raise FeedError(f"input {meta.name!r}: dimension {axis} is fixed to {want} in the model, "
                            f"{argument('shapes', '--shape')} gives {got} (model shape {format_shape(meta.shape)})")
    if batch is not None and given and not isinstance(meta.shape[0], int) and not is_roi:
        return (int(batch),) + tuple(given[1:])
    return given


def _default_shape(meta: TensorMeta, default_batch: Optional[int], is_roi: bool) -> Shape:
    """``meta``'s shape when the user gave none: fixed dimensions as they are, a dynamic first dimension the batch
    (a RoI input's: :data:`DEFAULT_BOX_COUNT` boxes); any other dynamic dimension is a FeedError naming it."""
    dims = []
    for axis, dim in enumerate(meta.shape):
        if isinstance(dim, int):
            dims.append(dim)
        elif axis == 0 and is_roi:
            dims.append(DEFAULT_BOX_COUNT)
        elif axis == 0:
            dims.append(1 if default_batch is None else int(default_batch))
        else:
            example = _example_shape(meta.shape)
            raise FeedError(
                f"input {meta.name!r} has a dynamic dimension {axis} ({dim or 'unnamed'}) in shape "
                f"{format_shape(meta.shape)}; give its size: "
                + argument(f"shapes={{{meta.name!r}: {example}}}", f"--shape {meta.name}={format_shape(example)}"))
    return tuple(dims)


def _shape_argument(meta: TensorMeta, given: object) -> Shape:
    """``shapes[name]`` of a library call as a tuple of ints, or a FeedError naming the argument, the expected
    tuple and the CLI option (a string such as ``"1x3x8x8"`` is the CLI's spelling, not the library's)."""
    sizes = None if isinstance(given, (str, bytes)) else _int_sizes(given)
    if sizes is not None:
        return sizes
    try:  # the example: the sizes the user meant, when the text reads as a shape
        example = parse_shape(given) if isinstance(given, str) else _example_shape(meta.shape)
    except FeedError:
        example = _example_shape(meta.shape)
    raise FeedError(f"shapes={{{meta.name!r}: {given!r}}}: each shape must be a tuple of ints >= 0, e.g. "
                    + argument(f"shapes={{{meta.name!r}: {tuple(example)}}}",
                               f"--shape {meta.name}={format_shape(example)}"))


def _int_sizes(given: object) -> Optional[Shape]:
    try:
        items = tuple(given)
    except TypeError:
        return None
    if any(isinstance(d, bool) or not hasattr(d, "__index__") or d < 0 for d in items):
        return None  # a negative size reached numpy as "negative dimensions are not allowed"
    return tuple(int(d) for d in items)


def fixed_batch(metas: Sequence[TensorMeta], rois: Sequence[str] = ()) -> Optional[int]:
    """The model's only batch size, or None when any batch runs (some input's first dimension is dynamic).

    A model with no dynamic first dimension runs its first input's first dimension only; other inputs' first
    dimensions are theirs (e.g. a fixed number of points), and a RoI input's (``rois``) counts boxes."""
    batched = [m for m in metas if m.name not in rois and m.shape]
    if not batched or any(not isinstance(m.shape[0], int) for m in batched):
        return None
    return batched[0].shape[0]


def fixed_batch_error(metas: Sequence[TensorMeta], refused: Sequence[int], rois: Sequence[str] = (),
                      asked: Optional[Sequence[int]] = None) -> FeedError:
    """The one wording of "this model runs only its own batch size": the error for the batch sizes ``refused`` of
    a model with a fixed batch (:func:`fixed_batch`), naming the input that fixes it, its shape and the fixes.

    ``asked``: every batch size of a call that takes several (:func:`dcn_deploy.bench.benchmark`'s ``batches``),
    named with the argument; None for a call with one ``batch`` (:func:`resolve_shapes`)."""
    fixed = fixed_batch(metas, rois)
    if fixed is None:
        raise ValueError("fixed_batch_error: the model runs any batch size (some input's first dimension is dynamic)")
    meta = next(m for m in metas if m.name not in rois and m.shape)
    if asked is None:
        where, use = "", f"batch={fixed}"
    else:
        where, use = f"{argument('batches', '--batch ' + ','.join(map(str, asked)))}: ", f"batches=[{fixed}]"
    return FeedError(f"{where}input {meta.name!r} has a fixed batch size {fixed} (model shape "
                     f"{format_shape(meta.shape)}), so batch {', '.join(map(str, refused))} cannot run; use "
                     f"{argument(use, f'--batch {fixed}')}, or export the model with a dynamic batch dimension "
                     + for_reader("(export(..., dynamic=True); CLI: dcn-deploy export --dynamic)",
                                  "(dcn-deploy export --dynamic)"))
