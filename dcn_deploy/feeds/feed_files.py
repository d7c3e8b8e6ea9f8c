"""Inputs the user gives as files: :func:`load_feed` reads ``NAME=file.npy`` / ``file.npz`` arguments (the format
told by content, pickled objects never loaded), matches them to the model's inputs and checks each array's dtype
and shape (:func:`check_array`); :func:`check_roi_batch_indices` refuses RoI rows whose batch index names no image
of the batch, or that lie at a NaN or infinite place.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Dict, Mapping, Optional, Sequence, Tuple

import numpy as np

from ..backends.base import TensorMeta
from ..io_utils import file_format
from ..wording import argument
from .random_feeds import box_image
from .shapes import FeedError, format_shape

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
        raise FeedError(f"{argument('items', '--input')}: input file {path} does not exist; check the path")
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


def split_input_item(item: str) -> Tuple[str, Optional[Path]]:
    """An ``--input`` item, ``NAME=file.npy`` or ``file.npz``, as (NAME or "", the file's path with ``~`` expanded,
    None when the item names no file)."""
    name, sep, file = item.partition("=")
    if not sep:
        name, file = "", item
    return name, (Path(os.path.expanduser(file)) if file else None)


def read_input_files(items: Sequence[str], names: Sequence[str],
                     required: Optional[Sequence[str]] = None) -> Dict[str, Tuple[np.ndarray, str]]:
    """``{input name: (array, source file)}`` from ``NAME=file.npy`` or ``file.npz`` items (an .npz's keys are input
    names) for a model whose inputs are ``names``; a bare ``file.npy`` is allowed when there is one input. Each
    input may be given once, and every one of ``required`` (default: all of ``names``) must be."""
    feed: Dict[str, Tuple[np.ndarray, str]] = {}
    for item in items:
        name, path = split_input_item(item)
        if path is None:
            raise FeedError(f"{argument(f'items entry {item!r}', f'--input {item}')} names no file; give "
                            + argument("'NAME=file.npy'", "--input NAME=file.npy") + " (or a .npz file of all inputs)")
        for key, array in _load_file(path, named=bool(name)).items():
            target = name or key
            if not target:
                if len(names) != 1:
                    raise FeedError(f"{path} holds one array but the model has inputs {list(names)}; "
                                    "say which with " + argument(f"items=['NAME={path}']", f"--input NAME={path}"))
                target = names[0]
            if target not in names:
                raise FeedError(f"{path}: {target!r} is not an input of the model; its inputs are {list(names)}")
            if target in feed:
                raise FeedError(f"input {target!r} is given twice ({feed[target][1]} and {path})")
            feed[target] = (array, str(path))
    missing = [n for n in (names if required is None else required) if n not in feed]
    if missing:
        raise FeedError(f"no file gives input(s) {missing}; add "
                        + argument("'NAME=file.npy' to items", "--input NAME=file.npy")
                        + f" for each (the model's inputs: {list(names)})")
    return feed


def load_feed(items: Sequence[str], metas: Sequence[TensorMeta], rois: Sequence[str] = (),
              note: Note = None) -> Dict[str, np.ndarray]:
    """Read inputs from ``NAME=file.npy`` or ``file.npz`` items (an .npz's keys are input names).

    A bare ``file.npy`` is allowed when the model has exactly one input. Every model input must be given once.
    ``rois``: the inputs holding RoI boxes (:func:`dcn_deploy.feeds.onnx_file_inputs.roi_inputs`), whose batch
    indices and coordinates are checked (:func:`check_roi_batch_indices`). ``note`` is told of each float input
    cast to the model's dtype.
    """
    names = [m.name for m in metas]
    feed = read_input_files(items, names)
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
