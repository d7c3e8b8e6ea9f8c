"""Reproducible random inputs: :func:`random_feed` fills each input's resolved shape
(:func:`dcn_deploy.feeds.shape_resolution.resolve_shapes`) with seeded random data (:func:`random_array`), and each RoI
input with valid boxes (:func:`random_boxes`) inside the image :func:`box_image` picks.
"""
from __future__ import annotations

from typing import Dict, Mapping, Optional, Sequence

import numpy as np

from ..backends.base import TensorMeta
from ..wording import argument
from .shape_resolution import resolve_shapes
from .shapes import FeedError, Shape, format_shape


def _give_values() -> str:
    """The fix when no random input will do: the caller's own arrays (benchmark takes random inputs only)."""
    return "give the values yourself: " + argument("compare_runners(..., feed={name: array})", "--input NAME=file.npy")


def random_array(shape: Shape, dtype: np.dtype, rng: np.random.Generator) -> np.ndarray:
    """Random data of a dtype: floats ~ N(0, 1), integers in [0, 10), booleans fair coins."""
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return rng.standard_normal(shape, dtype=np.float32).astype(dtype)
    if dtype.kind in "iu":
        return rng.integers(0, 10, size=shape).astype(dtype)
    if dtype.kind == "b":
        return rng.random(shape) < 0.5
    raise FeedError(f"cannot generate random inputs of dtype {dtype}; {_give_values()}")


def box_image(shapes: Sequence[Shape], is_roi: Sequence[bool]) -> Optional[Shape]:
    """The (N, C, H, W) image random RoI boxes are placed in: the first 4-D input that is not a RoI input."""
    return next((tuple(s) for s, roi in zip(shapes, is_roi) if not roi and len(s) == 4), None)


def random_boxes(shape: Shape, dtype: np.dtype, image: Shape, rng: np.random.Generator) -> np.ndarray:
    """(K, 5) RoIs inside an (N, C, H, W) image: rows (batch index, x1, y1, x2, y2) in pixels, each box 10% to 60%
    of the image's side and at least one pixel, its batch index in [0, N)."""
    if len(shape) != 2 or shape[1] != 5:
        raise FeedError(f"RoI input of shape {format_shape(shape)}: expected (K, 5) rows (batch index, x1, y1, x2, "
                        f"y2); {_give_values()}")
    count = shape[0]
    batch, (height, width) = image[0], (image[2], image[3])
    sides = [rng.uniform(0.1, 0.6, count) * size + 1 for size in (width, height)]
    starts = [rng.uniform(0, 1, count) * np.maximum(size - side, 0) for size, side in zip((width, height), sides)]
    boxes = np.stack([rng.integers(0, batch, count), starts[0], starts[1], starts[0] + sides[0],
                      starts[1] + sides[1]], axis=1)
    return boxes.astype(dtype)


def random_feed(metas: Sequence[TensorMeta], shapes: Optional[Mapping[str, Sequence[int]]] = None,
                batch: Optional[int] = None, seed: int = 0, rois: Sequence[str] = ()) -> Dict[str, np.ndarray]:
    """One reproducible random array per input (same seed -> same arrays), shapes from :func:`resolve_shapes`.

    ``rois``: inputs that hold RoI boxes (:func:`dcn_deploy.feeds.onnx_file_inputs.roi_inputs`); they get valid
    boxes inside the image, the first other 4-D input (a model with RoIs but no such input needs its boxes given
    as a file)."""
    if isinstance(seed, bool) or not hasattr(seed, "__index__") or seed < 0:
        # numpy's own message ("SeedSequence expects int or sequence of ints") names neither the argument nor the fix
        raise FeedError(f"{argument('seed', '--seed')} must be an int >= 0 (it fixes the random inputs), got {seed!r}")
    resolved = resolve_shapes(metas, shapes, batch, rois)
    rng = np.random.default_rng(int(seed))
    feed = {}
    for m in metas:
        if m.name not in rois:
            try:
                feed[m.name] = random_array(resolved[m.name], m.dtype, rng)
            except MemoryError as exc:
                raise FeedError(f"input {m.name!r}: a random {format_shape(resolved[m.name])} {np.dtype(m.dtype)} "
                                f"array does not fit in memory ({exc}); give smaller sizes with "
                                + argument("shapes=/batch=", "--shape/--batch")) from None
    image = box_image([resolved[m.name] for m in metas], [m.name in rois for m in metas])
    for m in metas:
        if m.name in rois:
            if image is None:
                raise FeedError(f"input {m.name!r} holds RoI boxes, but the model has no 4-D image input to place "
                                f"them in; {_give_values()}")
            feed[m.name] = random_boxes(resolved[m.name], m.dtype, image, rng)
    return {m.name: feed[m.name] for m in metas}
