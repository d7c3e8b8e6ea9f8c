"""Input feeds for runners: random arrays from input metadata, or arrays loaded from .npy/.npz files.

Pure numpy (no torch; onnx only to read a file's stored shapes), so the CLI and every backend share one
way to make inputs:

- :func:`parse_shape_options` reads ``--shape`` (``name=1x3x64x64`` or ``name:1x3x64x64``) and, given the model
  file, adds the example shapes :func:`dcn_deploy.export` stored in it (:data:`EXAMPLE_SHAPES_KEY`) for the
  inputs the user did not name, so a dynamic model runs without ``--shape``.
- :func:`resolve_shapes` turns each input's metadata (fixed and dynamic dimensions) plus what the user gave
  (``--shape name=1x3x64x64``, ``--batch 8``) into concrete shapes, or says which dimension is missing.
- :func:`random_feed` fills those shapes with reproducible random data (a fixed seed per call); inputs that
  :func:`roi_inputs` finds feeding a RoI op get valid boxes instead of noise.
- :func:`load_feed` reads ``name=file.npy`` / ``file.npz`` arguments and checks names, dtypes and shapes, and
  that RoI boxes name images of the batch and lie at finite places (:func:`check_roi_batch_indices`).
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Callable, Dict, Mapping, Optional, Sequence, Tuple

import numpy as np

from .backends.base import TensorMeta
from .io_utils import file_format

Shape = Tuple[int, ...]

# metadata_props key under which dcn_deploy.export records the example input shapes of an ONNX file, as JSON
# {input name: [dims]}; read back by parse_shape_options as the default size of dynamic dimensions.
EXAMPLE_SHAPES_KEY = "dcn_deploy.example_shapes"


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
        raise FeedError(f"shape {text!r} has a negative size")
    return shape


# NAME=SHAPE or NAME:SHAPE, split at the last separator: ONNX names may hold ':' (e.g. "input:0"), shapes never do
_SHAPE_OPTION = re.compile(r"^(?P<name>.+)[=:](?P<shape>[^=:]+)$")


def parse_shape_options(items: Sequence[str], model_path: Optional[os.PathLike] = None, *,
                        model=None) -> Dict[str, Shape]:
    """``["x=1x3x64x64", "y:1x8"]`` -> ``{"x": (1, 3, 64, 64), "y": (1, 8)}`` (the CLI's ``--shape`` option).

    With ``model_path`` (an ONNX file written by :func:`dcn_deploy.export`), the example shapes stored in it
    (:func:`stored_example_shapes`) are added for every input with a dynamic dimension that ``items`` does not
    name, so the user's ``--shape`` wins. A stored input's dynamic batch follows the batch the user gave for
    another input; :func:`resolve_shapes` still lets ``--batch`` replace it. Files without stored shapes give
    exactly the user's shapes (a dynamic dimension left unknown is then reported by :func:`resolve_shapes`).
    ``model``: the ``onnx.ModelProto`` of ``model_path`` when the caller has read it already (:func:`read_onnx_file`),
    so that the file is not read again.
    """
    shapes: Dict[str, Shape] = {}
    for item in items:
        match = _SHAPE_OPTION.match(item)
        if match is None:
            raise FeedError(f"--shape {item!r}: expected NAME=SHAPE or NAME:SHAPE, "
                            "e.g. --shape input=1x3x64x64 or --shape input:1x3x64x64")
        shapes[match["name"]] = parse_shape(match["shape"])
    reject_empty(shapes, "--shape")
    if model is not None or model_path is not None:
        shapes.update(_stored_defaults(model if model is not None else read_onnx_file(Path(model_path)), shapes))
    return shapes


def reject_empty(shapes: Mapping[str, Sequence[int]], source: str) -> None:
    """Refuse an input with a zero-sized dimension (``source``: where its shape came from, e.g. ``--shape``): its
    outputs would be empty, so a run shows nothing and a comparison passes on nothing."""
    for name, shape in shapes.items():
        if 0 in tuple(shape):
            raise FeedError(f"input {name!r}: {source} gives shape {format_shape(shape)}, with size 0 in dimension "
                            f"{tuple(shape).index(0)}: there is nothing to run or compare; give every dimension a "
                            "size >= 1")


def stored_example_shapes(model_path: os.PathLike) -> Dict[str, Shape]:
    """The example input shapes :func:`dcn_deploy.export` recorded in an ONNX file (metadata key
    :data:`EXAMPLE_SHAPES_KEY`), ``{input name: shape}``; empty for a file without them, or that is not ONNX."""
    return _read_stored(read_onnx_file(Path(model_path)))[0]


# Boxes in a random feed when a RoI input's box count is dynamic and not given.
DEFAULT_BOX_COUNT = 8
# The ops whose input 1 is a box list, rows (batch index, x1, y1, x2, y2) in input-image pixels.
_ROI_OPS = {("dcn_deploy", "DeformRoIPool"), ("dcn_deploy", "DeformPSRoIPool")}


def roi_inputs(model_path: os.PathLike) -> Tuple[str, ...]:
    """The graph inputs of an ONNX file that are RoI boxes (input 1 of a ``dcn_deploy`` RoI pooling node).

    Random normal values are no boxes (a batch index of -1 or 2, x2 < x1), so :func:`random_feed` makes valid
    ones for these. Empty for other models, engines and unreadable files."""
    proto = read_onnx_file(Path(model_path))
    return () if proto is None else roi_input_names(proto.graph)


def roi_input_names(graph) -> Tuple[str, ...]:
    """:func:`roi_inputs` for an ONNX ``GraphProto`` in memory."""
    inputs = {v.name for v in graph.input}
    return tuple(dict.fromkeys(n.input[1] for n in graph.node
                               if (n.domain, n.op_type) in _ROI_OPS and len(n.input) > 1 and n.input[1] in inputs))


Dim = object  # a graph input's dimension: an int, a symbol name (str), or None (dynamic, unnamed)


def read_onnx_file(path: os.PathLike):
    """The ONNX file at ``path`` without its external weights, or None for engines and unreadable files (the
    runner that opens such a file reports it, not this module). Read it once and hand it to
    :func:`parse_shape_options` (``model=``) and :func:`roi_input_names`, rather than give each the path."""
    path = Path(path)
    if path.suffix.lower() != ".onnx" or not path.is_file():
        return None
    import onnx  # here, not at the top: the rest of this module is numpy only

    try:
        return onnx.load(str(path), load_external_data=False)
    except Exception:  # noqa: BLE001 - protobuf raises several types for a file that is not a model
        return None


def _read_stored(proto) -> Tuple[Dict[str, Shape], Dict[str, Tuple[Dim, ...]], Tuple[str, ...]]:
    """(stored example shapes, the graph inputs' dims: ints, symbol names or None, the RoI inputs) of a model
    read by :func:`read_onnx_file`; all empty for None (a file that could not be read)."""
    if proto is None:
        return {}, {}, ()
    text = next((p.value for p in proto.metadata_props if p.key == EXAMPLE_SHAPES_KEY), None)
    try:
        raw = json.loads(text) if text else {}
        stored = {str(name): tuple(int(d) for d in dims) for name, dims in raw.items()}
    except (ValueError, TypeError, AttributeError):  # a hand-edited or foreign value: as if absent
        return {}, {}, ()
    initialisers = {t.name for t in proto.graph.initializer}
    dims = {v.name: tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                          for d in v.type.tensor_type.shape.dim)
            for v in proto.graph.input if v.name not in initialisers}
    return stored, dims, roi_input_names(proto.graph)


def _stored_defaults(proto, given: Mapping[str, Shape]) -> Dict[str, Shape]:
    """Stored example shapes for the dynamic inputs ``given`` does not name (only those that fit the graph).

    A dimension that shares its symbol (``batch``, ``height``, ...) with an input the user gave takes the user's
    size, so one ``--shape`` resizes every input tied to it; an unnamed dynamic batch dimension takes the user's
    batch (not a RoI input's first dimension: that counts boxes)."""
    stored, graph, rois = _read_stored(proto)
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


def format_shape(shape: Sequence[object]) -> str:
    return "x".join("?" if d is None else str(d) for d in shape) or "scalar"


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
    (``rois``, see :func:`roi_inputs`) counts boxes, not images: ``batch`` never sets it (a dynamic one defaults
    to :data:`DEFAULT_BOX_COUNT`).
    """
    if batch is not None and (isinstance(batch, bool) or not hasattr(batch, "__index__") or batch < 1):
        # first: a batch of 0 would otherwise read as a mismatch with a fixed batch size
        raise FeedError(f"batch (CLI: --batch) must be an int >= 1 (the batch size), got {batch!r}")
    shapes = dict(shapes or {})
    batched_metas = [m for m in metas if m.name not in rois]  # the inputs whose first dimension is the batch
    known = {m.name for m in metas}
    unknown = sorted(set(shapes) - known)
    if unknown:
        raise FeedError(f"shapes (CLI: --shape) names {unknown}, which are not inputs of the model; its inputs are "
                        f"{sorted(known)}")
    metas_by_name = {m.name: m for m in metas}
    shapes = {name: _shape_argument(metas_by_name[name], given) for name, given in shapes.items()}
    default_batch = batch
    if default_batch is None:  # a batch size the user gave for one batched input applies to the others
        given_batches = [tuple(shapes[m.name])[0] for m in batched_metas
                         if m.name in shapes and m.shape and not isinstance(m.shape[0], int) and len(shapes[m.name])]
        default_batch = given_batches[0] if given_batches else None
    resolved: Dict[str, Shape] = {}
    for meta in metas:
        given = shapes.get(meta.name)
        if given is not None:
            if len(given) != len(meta.shape):
                raise FeedError(f"input {meta.name!r}: shapes (CLI: --shape) gives {format_shape(given)}, "
                                f"{len(given)} dimensions; the model's input has {len(meta.shape)} "
                                f"({format_shape(meta.shape)})")
            for axis, (want, got) in enumerate(zip(meta.shape, given)):
                if isinstance(want, int) and want != got:
                    raise FeedError(f"input {meta.name!r}: dimension {axis} is fixed to {want} in the model, "
                                    f"shapes (CLI: --shape) gives {got} (model shape {format_shape(meta.shape)})")
            if batch is not None and given and not isinstance(meta.shape[0], int) and meta.name not in rois:
                given = (int(batch),) + given[1:]
            resolved[meta.name] = given
            continue
        dims = []
        for axis, dim in enumerate(meta.shape):
            if isinstance(dim, int):
                dims.append(dim)
            elif axis == 0 and meta.name in rois:
                dims.append(DEFAULT_BOX_COUNT)
            elif axis == 0:
                dims.append(1 if default_batch is None else int(default_batch))
            else:
                example = _example_shape(meta.shape)
                raise FeedError(
                    f"input {meta.name!r} has a dynamic dimension {axis} ({dim or 'unnamed'}) in shape "
                    f"{format_shape(meta.shape)}; give its size: shapes={{{meta.name!r}: {example}}} "
                    f"(CLI: --shape {meta.name}={format_shape(example)})")
        resolved[meta.name] = tuple(dims)
    fixed = fixed_batch(metas, rois)
    if batch is not None and fixed is not None and batch != fixed:
        raise fixed_batch_error(metas, [batch], rois)
    return resolved


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
    raise FeedError(f"shapes={{{meta.name!r}: {given!r}}}: each shape must be a tuple of ints, e.g. "
                    f"shapes={{{meta.name!r}: {tuple(example)}}} (CLI: --shape {meta.name}={format_shape(example)})")


def _int_sizes(given: object) -> Optional[Shape]:
    try:
        items = tuple(given)
    except TypeError:
        return None
    if any(isinstance(d, bool) or not hasattr(d, "__index__") for d in items):
        return None
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
        where, use = f"batches (CLI: --batch {','.join(map(str, asked))}): ", f"batches=[{fixed}]"
    return FeedError(f"{where}input {meta.name!r} has a fixed batch size {fixed} (model shape "
                     f"{format_shape(meta.shape)}), so batch {', '.join(map(str, refused))} cannot run; use {use} "
                     f"(CLI: --batch {fixed}), or export the model with a dynamic batch dimension (export(..., "
                     "dynamic=True); CLI: dcn-deploy export --dynamic)")


# The fix when no random input will do: the caller's own arrays (benchmark takes random inputs only).
_GIVE_VALUES = "give the values yourself: compare_runners(..., feed={name: array}) (CLI: --input NAME=file.npy)"


def random_array(shape: Shape, dtype: np.dtype, rng: np.random.Generator) -> np.ndarray:
    """Random data of a dtype: floats ~ N(0, 1), integers in [0, 10), booleans fair coins."""
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return rng.standard_normal(shape, dtype=np.float32).astype(dtype)
    if dtype.kind in "iu":
        return rng.integers(0, 10, size=shape).astype(dtype)
    if dtype.kind == "b":
        return rng.random(shape) < 0.5
    raise FeedError(f"cannot generate random inputs of dtype {dtype}; {_GIVE_VALUES}")


def box_image(shapes: Sequence[Shape], is_roi: Sequence[bool]) -> Optional[Shape]:
    """The (N, C, H, W) image random RoI boxes are placed in: the first 4-D input that is not a RoI input."""
    return next((tuple(s) for s, roi in zip(shapes, is_roi) if not roi and len(s) == 4), None)


def random_boxes(shape: Shape, dtype: np.dtype, image: Shape, rng: np.random.Generator) -> np.ndarray:
    """(K, 5) RoIs inside an (N, C, H, W) image: rows (batch index, x1, y1, x2, y2) in pixels, each box 10% to 60%
    of the image's side and at least one pixel, its batch index in [0, N)."""
    if len(shape) != 2 or shape[1] != 5:
        raise FeedError(f"RoI input of shape {format_shape(shape)}: expected (K, 5) rows (batch index, x1, y1, x2, "
                        f"y2); {_GIVE_VALUES}")
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

    ``rois``: inputs that hold RoI boxes (:func:`roi_inputs`); they get valid boxes inside the image, the first
    other 4-D input (a model with RoIs but no such input needs its boxes given as a file)."""
    resolved = resolve_shapes(metas, shapes, batch, rois)
    rng = np.random.default_rng(seed)
    feed = {m.name: random_array(resolved[m.name], m.dtype, rng) for m in metas if m.name not in rois}
    image = box_image([resolved[m.name] for m in metas], [m.name in rois for m in metas])
    for m in metas:
        if m.name in rois:
            if image is None:
                raise FeedError(f"input {m.name!r} holds RoI boxes, but the model has no 4-D image input to place "
                                f"them in; {_GIVE_VALUES}")
            feed[m.name] = random_boxes(resolved[m.name], m.dtype, image, rng)
    return {m.name: feed[m.name] for m in metas}


_HOW_TO_SAVE = "save a numeric array with numpy.save(path, array) (or numpy.savez(path, NAME=array, ...))"


def _load_file(path: Path, named: bool = False) -> Dict[str, np.ndarray]:
    """The arrays of a .npy (key ``""``) or .npz file (its keys). ``named``: the user said which input the file
    gives (``NAME=file``), so a one-array file named .npz is unambiguous."""
    kind = _checked_format(path, named)
    try:
        if kind == ".npy":
            return {"": np.load(path, allow_pickle=False)}
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except (ValueError, OSError) as exc:
        if "allow_pickle" in str(exc):  # numpy's wording for an array of dtype object, stored pickled
            raise FeedError(f"{path} holds Python objects (an array of dtype object, pickled), not a numeric "
                            "array; save a numeric one, e.g. numpy.save(path, numpy.asarray(data, "
                            "dtype=numpy.float32))") from None
        raise FeedError(f"cannot read {path} as a numpy file ({exc}); save it with numpy.save/numpy.savez") from None
    # numpy gives the raw bytes of a member that is no .npy array: the zip came from elsewhere (e.g. torch.save)
    other = next((key for key, value in arrays.items() if not isinstance(value, np.ndarray)), None)
    if other is not None:
        raise FeedError(f"{path} is a zip archive but not one numpy.savez wrote (its member {other!r} is no array; "
                        f"a torch.save file?); {_HOW_TO_SAVE}")
    return arrays


def _checked_format(path: Path, named: bool) -> str:
    """``".npy"`` or ``".npz"``: the format of the input file ``path`` by its content, once its name agrees with it
    (a one-array file named .npz is taken when ``named``); else a FeedError saying what the file is and the fix."""
    if not path.exists():
        raise FeedError(f"input file {path} does not exist")
    suffix = path.suffix.lower()
    if suffix not in (".npy", ".npz"):
        raise FeedError(f"input file {path}: expected a .npy or .npz file, got {suffix or 'no extension'}")
    try:
        kind = file_format(path)
    except OSError as exc:
        raise FeedError(f"cannot read input file {path} ({exc})") from None
    if kind == "pickle":
        raise FeedError(f"{path} holds pickled Python objects (pickle.dump), not a numeric array; {_HOW_TO_SAVE}")
    if kind is None:
        raise FeedError(f"{path} is neither a .npy array nor an .npz archive (numpy would read it only as pickled "
                        f"Python objects, which are not loaded); {_HOW_TO_SAVE}")
    if kind == "npy" and suffix == ".npz" and not named:
        raise FeedError(f"{path} holds one array (the .npy format), not an .npz archive: rename it to .npy or "
                        f"pass it as NAME={path}")
    if kind == "zip" and suffix == ".npy":
        raise FeedError(f"{path} is a zip archive (as numpy.savez writes), not one .npy array: rename it to .npz")
    return ".npy" if kind == "npy" else ".npz"


Note = Optional[Callable[[str], None]]  # called with a message about a change made to an input (the CLI prints it)


def check_array(meta: TensorMeta, array: np.ndarray, source: str, note: Note = None) -> np.ndarray:
    """Check an array against an input's metadata; floats of another width are cast to the model's dtype (and
    ``note`` is told, since the cast can lose precision)."""
    want = np.dtype(meta.dtype)
    if array.dtype != want:
        if array.dtype.kind == want.kind == "f":
            if note is not None:
                note(f"input {meta.name!r} was {array.dtype}, cast to the model's {want}")
            array = array.astype(want)  # e.g. float64 saved by default -> the model's float32
        else:
            raise FeedError(f"input {meta.name!r} from {source} has dtype {array.dtype}, the model expects {want}; "
                            f"convert it, e.g. numpy.save(path, array.astype('{want}'))")
    if array.ndim != len(meta.shape):
        raise FeedError(f"input {meta.name!r} from {source} has shape {format_shape(array.shape)} "
                        f"({array.ndim}-D), the model expects {format_shape(meta.shape)} ({len(meta.shape)}-D)")
    for axis, (want_dim, got) in enumerate(zip(meta.shape, array.shape)):
        if isinstance(want_dim, int) and want_dim != got:
            raise FeedError(f"input {meta.name!r} from {source} has shape {format_shape(array.shape)}, the model "
                            f"expects {format_shape(meta.shape)} (dimension {axis} must be {want_dim})")
    return np.ascontiguousarray(array)


def load_feed(items: Sequence[str], metas: Sequence[TensorMeta], rois: Sequence[str] = (),
              note: Note = None) -> Dict[str, np.ndarray]:
    """Read inputs from ``NAME=file.npy`` or ``file.npz`` items (an .npz's keys are input names).

    A bare ``file.npy`` is allowed when the model has exactly one input. Every model input must be given once.
    ``rois``: the inputs holding RoI boxes (:func:`roi_inputs`), whose batch indices and coordinates are checked
    (:func:`check_roi_batch_indices`). ``note`` is told of each float input cast to the model's dtype.
    """
    names = [m.name for m in metas]
    feed: Dict[str, Tuple[np.ndarray, str]] = {}
    for item in items:
        name, sep, file = item.partition("=")
        if not sep:
            name, file = "", item
        path = Path(os.path.expanduser(file))
        for key, array in _load_file(path, named=bool(name)).items():
            target = name or key
            if not target:
                if len(names) != 1:
                    raise FeedError(f"{path} holds one array but the model has inputs {names}; "
                                    f"say which with --input NAME={path}")
                target = names[0]
            if target not in names:
                raise FeedError(f"{path}: {target!r} is not an input of the model; its inputs are {names}")
            if target in feed:
                raise FeedError(f"input {target!r} is given twice ({feed[target][1]} and {path})")
            feed[target] = (array, str(path))
    missing = [n for n in names if n not in feed]
    if missing:
        raise FeedError(f"no file gives input(s) {missing}; add --input NAME=file.npy for each "
                        f"(the model's inputs: {names})")
    metas_by_name = {m.name: m for m in metas}
    loaded = {n: check_array(metas_by_name[n], *feed[n], note=note) for n in names}
    check_roi_batch_indices(loaded, rois)
    return loaded


def check_roi_batch_indices(feed: Mapping[str, np.ndarray], rois: Sequence[str]) -> None:
    """Refuse RoI boxes whose batch index (column 0, truncated toward zero as the RoI ops read it) names no image,
    and boxes with a NaN or infinite coordinate (columns 1 to 4).

    ``feed``: the inputs in the model's order; ``rois``: those holding (K, 5) boxes. The image batch N is that of
    the image the boxes refer to (:func:`box_image`), and every index must lie in [0, N): ONNX Runtime reports
    one outside, and a box at a NaN or infinite place, only as an out-of-range GatherElements index (the PyTorch op
    refuses such boxes itself). Boxes of another shape are left to the runner to report, and so are batch indices
    of a feed with no image."""
    names = list(feed)
    image = box_image([np.shape(feed[n]) for n in names], [n in rois for n in names])
    for name in rois:
        boxes = feed.get(name)
        if boxes is None or np.ndim(boxes) != 2 or np.shape(boxes)[1] != 5:
            continue
        if image is not None:
            _check_batch_index(name, np.asarray(boxes), image[0])
        _check_finite_coordinates(name, np.asarray(boxes))


def _check_batch_index(name: str, boxes: np.ndarray, batch: int) -> None:
    index = np.trunc(boxes[:, 0].astype(np.float64))
    outside = np.flatnonzero(~((index >= 0) & (index < batch)))  # NaN is outside too
    if outside.size:
        row = int(outside[0])
        raise FeedError(f"input {name!r}: {name}[:, 0] (batch index) must lie in [0, {batch}) for an image batch "
                        f"of {batch}; row {row} has {boxes[row, 0]:g}"
                        + (f" ({outside.size} rows are outside)" if outside.size > 1 else "")
                        + "; set each box's first column to the index of its image in the batch")


def _check_finite_coordinates(name: str, boxes: np.ndarray) -> None:
    bad = np.flatnonzero(~np.isfinite(boxes[:, 1:].astype(np.float64)).all(axis=1))
    if bad.size:
        row = int(bad[0])
        values = ", ".join(f"{v:g}" for v in boxes[row].astype(np.float64))
        raise FeedError(f"input {name!r}: row {row} ({values}) has a NaN or infinite coordinate"
                        + (f" ({bad.size} rows do)" if bad.size > 1 else "")
                        + f"; every RoI row (batch index, x1, y1, x2, y2) must be finite: drop or fix those rows "
                        f"of {name}")


def describe_feed(feed: Mapping[str, np.ndarray]) -> str:
    return ", ".join(f"{k}: {format_shape(v.shape)} {v.dtype}" for k, v in feed.items())
