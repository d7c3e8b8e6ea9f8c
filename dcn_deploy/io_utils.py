"""Files: writing that never leaves a half-written file (a temporary name beside the target, then a rename), and
what a given file is by its first bytes."""
from __future__ import annotations

import contextlib
import os
import shlex
import tempfile
from pathlib import Path
from typing import Iterator, Optional, Sequence, Tuple, Union

PathLike = Union[str, os.PathLike]


def check_output_path(target: PathLike, what: str = "output") -> None:
    """Raise FileNotFoundError / PermissionError (or ValueError for a folder given as the file), naming ``what``
    (e.g. ``--output``) and the fix, when ``target`` cannot be written: call it before slow work, not after."""
    target = Path(target)
    folder = target.parent
    if target.is_dir():
        raise ValueError(f"{what} {target} is a folder; give a file name inside it")
    if not folder.is_dir():
        above = next((p for p in (folder, *folder.parents) if p.exists()), None)
        if above is not None and not above.is_dir():  # e.g. model.py/out.onnx: mkdir -p would fail too
            raise FileNotFoundError(f"{what} {target}: {above} is a file, not a folder; choose another path")
        raise FileNotFoundError(f"{what} {target}: folder {folder} does not exist; create it "
                                f"(mkdir -p {shlex.quote(str(folder))}) or choose another path")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise PermissionError(f"{what} {target}: folder {folder} is not writable; choose another path")


def check_not_an_input(target: PathLike, what: str, inputs: Sequence[Tuple[str, Optional[PathLike]]]) -> None:
    """Raise ValueError when ``target`` (an output, ``what``: e.g. ``--output``) is one of the files the command
    reads (``inputs``: (what it is, its path or None where not given)): writing it would replace that file."""
    target = Path(target)
    for label, source in inputs:
        if source is None:
            continue
        source = Path(source)
        if target.exists() and source.exists():
            same = os.path.samefile(target, source)
        else:
            same = os.path.abspath(target) == os.path.abspath(source)
        if same:
            raise ValueError(f"{what} {target} is the {label} this command reads; writing there would replace it: "
                             "choose another path")


@contextlib.contextmanager
def atomic_path(target: PathLike) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; on success rename it onto ``target``, on error delete it.

    >>> with atomic_path("model.onnx") as tmp:
    ...     onnx.save(model, tmp)
    """
    target = Path(target)
    check_output_path(target)
    try:
        fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent or ".")
    except OSError as exc:  # a folder that refuses new files (a read-only or virtual file system, such as /proc)
        raise type(exc)(f"cannot write {target}: {exc.strerror or exc} when creating a file in "
                        f"{target.parent or '.'}; choose another path") from exc
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        give_default_permissions(tmp)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


def give_default_permissions(path: PathLike) -> None:
    """The permissions an ordinary open() would give (mkstemp and mkdtemp create private files)."""
    os.chmod(path, 0o666 & ~_current_umask())


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(target: PathLike, data: bytes) -> None:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(target: PathLike, text: str) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(text)


# The first bytes of the binary files users hand the tools: numpy's .npy, a zip archive (numpy.savez, torch.save
# since torch 1.6; an empty archive starts with its end record), a pickle of protocol 2 or later (pickle.dump,
# torch.save before 1.6).
_MAGIC = ((b"\x93NUMPY", "npy"), (b"PK\x03\x04", "zip"), (b"PK\x05\x06", "zip"), (b"\x80", "pickle"))


def file_format(path: PathLike) -> Optional[str]:
    """``"npy"``, ``"zip"`` or ``"pickle"`` from the file's first bytes, whatever its name says; None for any other
    content (an empty file too). OSError when the file cannot be read."""
    with open(path, "rb") as handle:
        head = handle.read(max(len(magic) for magic, _ in _MAGIC))
    return next((kind for magic, kind in _MAGIC if head.startswith(magic)), None)
