"""``--weights`` for a FILE.py:FACTORY or package.module:FACTORY model: a ``state_dict`` read with
``torch.load(weights_only=True)`` and loaded exactly (:func:`load_weights`); and :func:`unreadable_weights_reason`,
the one explanation of why a checkpoint cannot be read (empty, not written by torch.save, a pickled module, Python
objects besides tensors) and what to do, shared with the zoo's ``dcn_deploy.models.checkpoint``.
"""
from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path
from typing import Mapping, Optional, Sequence, Union

import torch

from ..io_utils import atomic_path, file_format
from ..feeds.shapes import format_shape
from ..ops.modules import upgrade_mmcv_state_dict
from ..wording import argument, for_reader
from .user_code_errors import describe_exception


def unreadable_weights_reason(path: Path, exc: BaseException, trusted_argument: Optional[str] = None) -> str:
    """Why ``torch.load(path, weights_only=True)`` raised ``exc``, in words, and what to do: the one explanation for
    ``--weights`` of every model (FILE.py:FACTORY here, zoo models in :mod:`dcn_deploy.models.checkpoint`).

    torch's own texts can be a bare number (a KeyError from its unpickler on a text file), empty (EOFError), or a
    page on ``weights_only`` whose advice only works in Python. ``trusted_argument``: the library argument that
    allows a full unpickle (``"trusted=True"``), named in the advice; the CLI has none on purpose (a shell option
    that runs a file's pickled code is too easy to pass by habit), so its way is to re-save the tensors once.
    """
    with open(path, "rb") as f:
        head = f.read(8)
    if not head:
        return "the file is empty; give the file written by torch.save(model.state_dict(), PATH)"
    if file_format(path) not in ("zip", "pickle"):  # what torch.save writes (a zip since torch 1.6, else a pickle)
        return (f"not a file written by torch.save (it starts with {head!r}, neither a zip archive nor a pickle); "
                "give the file written by torch.save(model.state_dict(), PATH)")
    refused = _refused_global(exc)
    if refused is None:
        return f"{describe_exception(exc)}; give the file written by torch.save(model.state_dict(), PATH)"
    saved = path.with_name(f"{path.stem}_state_dict.pt")
    if _pickles_a_module(path) or refused.startswith("torch.nn.modules."):
        return (f"it holds a pickled module (torch.save(model, PATH), with classes such as {refused}), not a "
                "state_dict. Where the model's class can be imported, and only if you trust the file (loading it "
                f"runs its pickled code), save its weights: torch.save(torch.load({str(path)!r}, "
                f"weights_only=False).state_dict(), {str(saved)!r}), then give {saved}")
    # the CLI has no way to trust a file (see above): its users are told only to re-save the tensors
    allow = (for_reader(f"pass {trusted_argument}, or (CLI: --weights never runs pickled code) ", "")
             if trusted_argument else "")
    return (f"it stores Python objects besides tensors ({refused}; e.g. the 'meta' of an mmdetection checkpoint), "
            "which torch.load(weights_only=True) does not unpickle because unpickling can run code. If you trust the "
            f"file, {allow}re-save its tensors once as a plain state_dict: {_python()} -c \"import torch; from "
            "dcn_deploy.models.checkpoint import read_state_dict; "
            f"torch.save(read_state_dict({str(path)!r}, trusted=True), {str(saved)!r})\", then give {saved}")


_REFUSED_GLOBAL = re.compile(r"Unsupported global: GLOBAL ([\w.]+)")


def _refused_global(exc: BaseException) -> Optional[str]:
    """The class or function (``numpy._core.multiarray._reconstruct``) that torch.load's weights-only unpickler
    refused, or None when ``exc`` is another failure."""
    match = _REFUSED_GLOBAL.search(str(exc))
    return match.group(1) if match else None


def _pickles_a_module(path: Path) -> bool:
    """Whether the torch.save file at ``path`` names a ``torch.nn`` module class in its pickle (a whole model saved
    with torch.save(model, PATH)). The opcodes are read, never run; False when the file cannot be read so."""
    import pickletools
    import zipfile

    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                name = next((n for n in archive.namelist() if n.endswith("/data.pkl") or n == "data.pkl"), None)
                data = archive.read(name) if name is not None else b""
        else:
            data = path.read_bytes()
        for opcode, arg, _ in pickletools.genops(data):
            if opcode.name == "GLOBAL" and str(arg).startswith("torch.nn.modules."):
                return True
    except Exception:  # noqa: BLE001 - a damaged pickle: fall back to the refused class's name
        return False
    return False


def _state_dict_from(path: Path) -> Mapping[str, torch.Tensor]:
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling errors come in many types
        raise ValueError(f"{argument('weights', '--weights')} {path} cannot be read as a state_dict saved with "
                         "torch.save: "
                         f"{unreadable_weights_reason(path, exc)}") from exc
    if isinstance(state, Mapping):
        for key in ("state_dict", "model", "model_state_dict"):
            if isinstance(state.get(key), Mapping):
                state = state[key]
                break
    if not isinstance(state, Mapping):
        raise ValueError(f"{argument('weights', '--weights')} {path} holds a {type(state).__name__}, not a "
                         "state_dict; save model.state_dict()")
    if state and all(k.startswith("module.") for k in state):  # saved from DataParallel
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def shape_mismatches(mismatched) -> str:
    """``(key, checkpoint shape, model shape)`` triples as ``"fc.weight (checkpoint 10x2048 vs model 1000x2048), ..."``,
    the first three."""
    return ", ".join(f"{k} (checkpoint {format_shape(a)} vs model {format_shape(b)})" for k, a, b in mismatched[:3])


def load_weights(model: torch.nn.Module, path: Path, reference: str) -> None:
    """Load the state_dict in ``path`` into ``model`` exactly: a missing, unexpected or differently shaped tensor
    is a ValueError naming a few of each (load_state_dict(strict=False) still raises on shapes, in torch's words)."""
    own = model.state_dict()
    state = upgrade_mmcv_state_dict(_state_dict_from(path), model_keys=own)  # old mmcv keys, where they fit
    resized = [(k, tuple(v.shape), tuple(own[k].shape)) for k, v in state.items()
               if k in own and isinstance(v, torch.Tensor) and tuple(v.shape) != tuple(own[k].shape)]
    skipped = {k for k, _, _ in resized}
    result = model.load_state_dict({k: v for k, v in state.items() if k not in skipped}, strict=False)
    problems = []
    if resized:
        problems.append(f"{len(resized)} with another shape (e.g. {shape_mismatches(resized)})")
    missing = [k for k in result.missing_keys if k not in skipped]
    if missing:
        problems.append(f"missing {len(missing)} (e.g. {', '.join(missing[:3])})")
    if result.unexpected_keys:
        problems.append(f"unexpected {len(result.unexpected_keys)} (e.g. {', '.join(result.unexpected_keys[:3])})")
    if problems:
        prefix = _shared_prefix(missing, state)
        fix = (f". The checkpoint holds every missing tensor under the prefix {prefix!r} (a whole detector's or "
               f"wrapper's checkpoint?): save that part alone, e.g. {_save_part_command(path, prefix)} and give "
               + argument("weights='part.pt'", "--weights part.pt")
               if prefix else ". Check that the factory builds the architecture the checkpoint was saved from")
        raise ValueError(f"{argument('weights', '--weights')} {path} does not fit the model built by {reference}: "
                         + "; ".join(problems) + fix)


def save_part(checkpoint: Union[str, Path], prefix: str, output: Union[str, Path]) -> int:
    """Save the tensors of ``checkpoint`` whose keys start with ``prefix``, without it, as a state_dict in
    ``output`` (atomically); the checkpoint is read as ``--weights`` reads it (a ``state_dict``/``model`` entry,
    DataParallel's ``module.``). Returns how many tensors were saved: e.g. a detector's backbone
    (``prefix="backbone."``) for a factory that builds the backbone alone."""
    state = _state_dict_from(Path(checkpoint))
    part = {key[len(prefix):]: value for key, value in state.items() if key.startswith(prefix)}
    if not part:
        raise ValueError(f"{checkpoint} has no tensor whose key starts with {prefix!r}")
    with atomic_path(output) as tmp:
        torch.save(part, str(tmp))
    return len(part)


def _save_part_command(path: Path, prefix: str) -> str:
    """A shell command (for this Python) that runs :func:`save_part` into ``part.pt``."""
    code = f"from dcn_deploy.onnx.weights_loading import save_part; save_part({str(path)!r}, {prefix!r}, 'part.pt')"
    return f"{_python()} -c {shlex.quote(code)}"


def _shared_prefix(missing: Sequence[str], state: Mapping[str, object]) -> Optional[str]:
    """The one key prefix (ending in '.') under which the checkpoint holds every missing key, if there is one:
    a detector's checkpoint (``backbone.layer1...``) given for its backbone alone."""
    if not missing:
        return None
    first = missing[0]
    candidates = {key[: -len(first)] for key in state if key.endswith("." + first)}
    found = [p for p in candidates if all(p + key in state for key in missing)]
    return min(found, key=len) if found else None


def _python() -> str:
    """The interpreter to print in a command to paste: this one, which has torch and dcn_deploy (a bare ``python``
    on the user's PATH may have neither)."""
    return shlex.quote(sys.executable or "python")
