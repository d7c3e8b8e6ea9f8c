"""Load a user's checkpoint (torchvision, mmdetection or our own) into a zoo model and say what did not match.

No weights are ever downloaded: the user gives a file (or a state_dict) they already have. Key names are matched
after stripping a wrapper (``state_dict``/``model``), a ``module.`` (DataParallel) prefix and a ``backbone.``
prefix (mmdetection), and after adding the model's own ``backbone.`` prefix where it has one (DeepLab, R-FCN);
the combination that matches the most tensors wins. Tensors whose shapes differ (a 1000-class ``fc`` into a
21-class head) are skipped and listed, never loaded half-way.

What a converted checkpoint is expected to lack: the offset branches (``*.conv_offset.*``: torchvision's and
mmdetection's ImageNet weights have none, and they start at zero by design) and, in a model with a ``backbone.``
(DeepLab, R-FCN), the head outside it (ImageNet weights cover the backbone only), a ResNet's classifier ``fc``
(mmdetection's backbones have none), and batch-norm step counters
(``num_batches_tracked``, absent from torchvision's ImageNet files). Anything else missing means the
checkpoint belongs to another architecture; ``require_backbone=True`` refuses it (the CLI does), the default only
reports it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Tuple, Union

import torch
from torch import nn

from dcn_deploy.onnx.model_loading import describe_exception, unreadable_weights_reason
from dcn_deploy.ops.modules import upgrade_mmcv_state_dict
from dcn_deploy.wording import for_reader

__all__ = ["CheckpointError", "IncompleteCheckpointError", "LoadReport", "head_class_count", "load_checkpoint",
           "read_state_dict"]

_WRAPPER_KEYS = ("state_dict", "model", "model_state_dict", "net", "weights")
_STRIP_PREFIXES = ("", "module.", "backbone.", "module.backbone.", "model.", "model.backbone.")


class CheckpointError(ValueError):
    """The checkpoint cannot be read, or does not fit the model well enough; the message says what to do."""


class IncompleteCheckpointError(CheckpointError):
    """``require_backbone=True`` and the checkpoint leaves tensors missing that it should hold (``report``
    says which)."""

    def __init__(self, message: str, report: "LoadReport"):
        super().__init__(message)
        self.report = report


@dataclass
class LoadReport:
    """What happened when a checkpoint was loaded. ``unexpected`` holds the checkpoint's own key names, the
    other lists the model's."""

    source: str
    loaded: List[str] = field(default_factory=list)
    missing: List[str] = field(default_factory=list)
    unexpected: List[str] = field(default_factory=list)
    mismatched: List[Tuple[str, Tuple[int, ...], Tuple[int, ...]]] = field(default_factory=list)
    stripped_prefix: str = ""
    added_prefix: str = ""
    head: List[str] = field(default_factory=list)  # the model's tensors a backbone checkpoint does not cover

    @property
    def missing_offsets(self) -> List[str]:
        """Missing offset-branch tensors: expected for ImageNet weights, they start at zero (the paper's init)."""
        return [k for k in self.missing if ".conv_offset." in k]

    @property
    def missing_counters(self) -> List[str]:
        """Missing batch-norm step counters (``num_batches_tracked``): torchvision's ImageNet files have none, and
        inference never reads them; they keep the model's values."""
        return [k for k in self.missing if k.endswith(".num_batches_tracked")]

    @property
    def missing_other(self) -> List[str]:
        return [k for k in self.missing if ".conv_offset." not in k and not k.endswith(".num_batches_tracked")]

    @property
    def missing_head(self) -> List[str]:
        """Missing tensors of the head (DeepLab's and R-FCN's outside ``backbone.``, a ResNet's ``fc``), kept at
        their initialisation: a backbone checkpoint (ImageNet for DeepLab, mmdetection's) does not hold them."""
        head = set(self.head)
        return [k for k in self.missing_other if k in head]

    @property
    def missing_required(self) -> List[str]:
        """Missing tensors a converted torchvision/mmdetection checkpoint of this architecture holds: all but the
        offsets, the head (:attr:`missing_head`) and batch-norm step counters (``num_batches_tracked``: torchvision's
        ImageNet files predate them; inference never reads them), plus those outside the head whose shapes did not
        fit (skipped, so also left at their initialisation). Any means the checkpoint is of another architecture."""
        head, missing_head = set(self.head), set(self.missing_head)
        missing = [k for k in self.missing_other if k not in missing_head]
        return missing + [key for key, *_ in self.mismatched if key not in head]

    @property
    def complete(self) -> bool:
        """True when every tensor of the model came from the checkpoint except the zero-initialised offsets (and
        batch-norm step counters, :attr:`missing_counters`)."""
        return not self.missing_other and not self.mismatched

    def summary(self, limit: int = 8) -> str:
        """A few readable lines; long key lists are grouped by their top-level module and cut at ``limit``."""
        lines = [f"loaded {len(self.loaded)} tensors from {self.source}"
                 + (f" (stripped prefix {self.stripped_prefix!r})" if self.stripped_prefix else "")
                 + (f" (added prefix {self.added_prefix!r})" if self.added_prefix else "")]
        if self.missing_offsets:
            lines.append(f"missing, kept at zero (the paper's initialisation of offsets): {len(self.missing_offsets)} "
                         f"offset-branch tensors in {_group(self.missing_offsets, limit)}")
        if self.missing_counters:
            lines.append(f"not in the checkpoint, kept as they were: {len(self.missing_counters)} batch-norm step "
                         "counters (num_batches_tracked; inference does not read them)")
        if self.missing_other:
            lines.append(f"MISSING, kept at their random initial values: {len(self.missing_other)} tensors: "
                         f"{_listing(self.missing_other, limit)}")
        if self.mismatched:
            shown = ", ".join(f"{k} (checkpoint {tuple(a)} vs model {tuple(b)})" for k, a, b in self.mismatched[:limit])
            more = f", ... {len(self.mismatched) - limit} more" if len(self.mismatched) > limit else ""
            lines.append(f"SHAPE MISMATCH, skipped (e.g. a classifier with another class count): {shown}{more}")
        if self.unexpected:
            lines.append(f"unused (in the checkpoint, not in the model): {len(self.unexpected)} tensors in "
                         f"{_group(self.unexpected, limit)}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()


def head_class_count(report: LoadReport, num_classes: int) -> Optional[int]:
    """The class count the checkpoint's head was trained for, when it differs from the model's ``num_classes``;
    None when no head tensor's shape differs, or when they differ in another way than a class count would.

    A head tensor's first dimension is proportional to the class count (a ResNet's ``fc`` and a DeepLab's
    ``classifier``: one row per class; R-FCN's score maps: k*k per class, its offset maps 2*k*k): every mismatched
    head tensor must then differ in that dimension alone, by one common ratio."""
    head = set(report.head)
    counts = set()
    for key, checkpoint_shape, model_shape in report.mismatched:
        if key not in head:
            return None
        if (len(checkpoint_shape) != len(model_shape) or not model_shape
                or checkpoint_shape[1:] != model_shape[1:]):
            return None
        scaled = checkpoint_shape[0] * num_classes
        if scaled % model_shape[0]:
            return None
        counts.add(scaled // model_shape[0])
    if len(counts) != 1:
        return None
    count = counts.pop()
    return count if count > 0 else None


def _group(keys: List[str], limit: int) -> str:
    counts: Dict[str, int] = {}
    for key in keys:
        parts = key.split(".")
        head = ".".join(parts[:2]) if parts[0].startswith("layer") else parts[0]
        counts[head] = counts.get(head, 0) + 1
    items = [f"{k} ({n})" for k, n in counts.items()]
    return ", ".join(items[:limit]) + (f", ... {len(items) - limit} more groups" if len(items) > limit else "")


def _listing(keys: List[str], limit: int) -> str:
    return ", ".join(keys[:limit]) + (f", ... {len(keys) - limit} more" if len(keys) > limit else "")


def read_state_dict(checkpoint: Union[str, os.PathLike, Mapping[str, object]], trusted: bool = False
                    ) -> Dict[str, torch.Tensor]:
    """Return the tensors of a checkpoint file or mapping, unwrapping ``{"state_dict": ...}``/``{"model": ...}``.

    Files are read with ``torch.load(weights_only=True)``; a checkpoint that stores other Python objects (old
    mmdetection ``meta``) needs ``trusted=True``, which runs its pickle: only for files you trust.
    """
    if isinstance(checkpoint, (str, os.PathLike)):
        path = os.fspath(checkpoint)
        if not os.path.isfile(path):
            raise CheckpointError(f"checkpoint file {path} does not exist; give the path of a .pth/.pt file")
        try:
            data = torch.load(path, map_location="cpu", weights_only=not trusted)
        except Exception as exc:  # noqa: BLE001 - any unpickling failure gets the same advice
            if trusted:
                raise CheckpointError(f"cannot read checkpoint {path}: {describe_exception(exc)}") from exc
            # the explanation --weights gives for every model (FILE.py:FACTORY too), with this function's argument
            raise CheckpointError(f"cannot read checkpoint {path}: "
                                  f"{unreadable_weights_reason(Path(path), exc, 'trusted=True')}") from exc
    else:
        data = checkpoint
    if not isinstance(data, Mapping):
        raise CheckpointError(f"checkpoint holds a {type(data).__name__}, expected a state_dict (a dict of tensors) "
                              "or a dict with one under 'state_dict' or 'model'")
    for key in _WRAPPER_KEYS:
        inner = data.get(key)
        if isinstance(inner, Mapping) and any(isinstance(v, torch.Tensor) for v in inner.values()):
            data = inner
            break
    tensors = {k: v for k, v in data.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointError(f"checkpoint has no tensors (top-level keys: {sorted(data)[:10]}); expected a state_dict")
    return tensors


def _head_keys(own: Mapping[str, torch.Tensor]) -> List[str]:
    """The tensors a backbone checkpoint does not hold: outside ``backbone.`` where the model has one (DeepLab,
    R-FCN), else a classifier ``fc`` (ResNet: mmdetection's backbones have none)."""
    if any(k.startswith("backbone.") for k in own):
        return [k for k in own if not k.startswith("backbone.")]
    return [k for k in own if k.startswith("fc.")]


def _rename(state: Mapping[str, torch.Tensor], strip: str, add: str) -> Dict[str, torch.Tensor]:
    return {add + k[len(strip):]: v for k, v in state.items() if k.startswith(strip)}


def _best_renaming(state: Mapping[str, torch.Tensor], model_keys: set, prefix: Optional[Tuple[str, str]]
                   ) -> Tuple[str, str]:
    if prefix is not None:
        return prefix
    adds = [""] + sorted({k.split(".")[0] + "." for k in model_keys if k.startswith("backbone.")})
    best, best_hits = ("", ""), -1
    for strip in _STRIP_PREFIXES:
        for add in adds:
            hits = sum(1 for k in _rename(state, strip, add) if k in model_keys)
            if hits > best_hits:
                best, best_hits = (strip, add), hits
    return best


def load_checkpoint(model: nn.Module, checkpoint: Union[str, os.PathLike, Mapping[str, object]],
                    prefix: Optional[Tuple[str, str]] = None, strict: bool = False, trusted: bool = False,
                    verbose: bool = False, require_backbone: bool = False) -> LoadReport:
    """Load ``checkpoint`` into ``model`` and return a :class:`LoadReport` (``print(report)`` for a summary).

    Args:
        model: a zoo model (``ResNet``, ``DeepLab``, ``RFCN``) or any module.
        checkpoint: a file path or a state_dict / ``{"state_dict": ...}`` mapping: torchvision's ImageNet
            weights, an mmdetection checkpoint (its ``backbone.*`` tensors are used) or one saved from a zoo model.
        prefix: ``(strip, add)`` to rename keys explicitly; None finds the renaming that matches most tensors.
        strict: raise :class:`CheckpointError` unless every tensor except the zero-initialised offsets (and
            batch-norm step counters, which inference does not read) was loaded.
        trusted: allow a full unpickle of the file (see :func:`read_state_dict`).
        verbose: print the summary.
        require_backbone: raise :class:`IncompleteCheckpointError` when a tensor the checkpoint should hold is
            missing or of another shape (:attr:`LoadReport.missing_required`: all but the offsets and the head, see
            the module docstring), i.e. the checkpoint is of another architecture; the model is then partly loaded.
            Shape mismatches in the head (another class count) are still only reported. The CLI passes True.
    """
    source = os.fspath(checkpoint) if isinstance(checkpoint, (str, os.PathLike)) else "the given state_dict"
    state = upgrade_mmcv_state_dict(read_state_dict(checkpoint, trusted=trusted))
    own = model.state_dict()
    strip, add = _best_renaming(state, set(own), prefix)
    renamed = _rename(state, strip, add)

    report = LoadReport(source=source, stripped_prefix=strip, added_prefix=add, head=_head_keys(own))
    loadable = {}
    for key, value in renamed.items():
        if key in own and tuple(own[key].shape) != tuple(value.shape):
            report.mismatched.append((key, tuple(value.shape), tuple(own[key].shape)))
        else:
            loadable[key] = value
    if not any(k in own for k in loadable) and not any(".conv_offset_mask." in k for k in loadable):
        raise CheckpointError(
            f"no tensor of {source} matches the model (checkpoint keys look like {sorted(state)[:3]}, the model's "
            f"like {sorted(own)[:3]}); " + for_reader(
                "pass prefix=(strip, add) to rename them",
                "check that it is a checkpoint of this model; if only the key prefixes differ, rename them in Python "
                "(dcn_deploy.models.checkpoint.load_checkpoint(model, FILE, prefix=(strip, add)), then "
                "torch.save(model.state_dict(), NEW_FILE)) and give NEW_FILE"))
    result = model.load_state_dict(loadable, strict=False)
    skipped = {m[0] for m in report.mismatched}
    # BatchNorm fills in a num_batches_tracked that a state_dict without version metadata lacks (its loading path
    # for pre-1.0 files), so load_state_dict does not list it as missing: count it here, or ``loaded`` would claim
    # tensors the checkpoint does not hold (all 53 counters of a torchvision ResNet-50 file, a new head's).
    missing = set(result.missing_keys) | {k for k in own if k.endswith(".num_batches_tracked") and k not in loadable}
    report.missing = [k for k in own if k in missing and k not in skipped]
    original = {add + k[len(strip):]: k for k in state if k.startswith(strip)}
    report.unexpected = ([original.get(k, k) for k in result.unexpected_keys]
                         + sorted(k for k in state if not k.startswith(strip)))
    missing = set(report.missing)
    report.loaded = [k for k in own if k not in missing and k not in skipped]
    if verbose:
        print(report.summary())
    if require_backbone and report.missing_required:
        required = report.missing_required
        raise IncompleteCheckpointError(
            f"{source} leaves {len(required)} of the model's {len(own)} tensors missing (or of another shape) that a "
            f"checkpoint of this architecture holds ({_listing(required, 5)}); they would keep their random initial values and the "
            "outputs would mean nothing (only the offset branches, which start at zero, and the head a backbone "
            "checkpoint does not cover may be missing). The checkpoint belongs to another architecture: give "
            "the checkpoint of this model", report)
    if strict and not report.complete:
        raise CheckpointError(f"checkpoint does not cover the model (strict=True):\n{report.summary()}")
    return report
