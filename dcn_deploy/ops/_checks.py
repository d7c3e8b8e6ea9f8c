"""Argument checks shared by the PyTorch ops: tensor types, one dtype and one device for all tensors."""
from __future__ import annotations

from typing import Mapping, Optional

import torch

SUPPORTED_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
HALF_TYPES = (torch.float16, torch.bfloat16)


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """Half types are computed in float32; float32 and float64 in themselves."""
    return torch.float32 if dtype in HALF_TYPES else dtype


def refuse_double_backward(op: str) -> None:
    """Raise when a backward runs under grad mode (create_graph=True: double backward, gradient penalties). The ops'
    backwards re-run their composite on detached copies, so a graph through the gradients would silently drop the
    op's second-order terms."""
    if torch.is_grad_enabled():
        raise RuntimeError(f"dcn_deploy.{op} supports first-order gradients only: its backward cannot be "
                           "differentiated (create_graph=True, double backward, gradient penalties)")


def autocast_to_float32(named: Mapping[str, Optional[torch.Tensor]]):
    """Under ``torch.autocast`` for the first tensor's device: every float32/float16/bfloat16 tensor of ``named`` as
    float32, and the dtype to return the result in (the first tensor's); otherwise ``named`` and None.

    Why: under autocast the convolution before a deformable layer hands it a half-precision input (and
    ``conv_offset`` half-precision offsets) while the layer's own weight stays float32. torchvision's op computes
    such calls in float32 and returns the input's dtype (mmcv's casts to the input's type); without this rule the
    mixed dtypes were refused. float64 tensors are left as they are, as autocast leaves them.
    """
    (_, first), *_ = named.items()
    if not isinstance(first, torch.Tensor):
        return named, None
    try:
        enabled = torch.is_autocast_enabled(first.device.type)
    except RuntimeError:  # a device type autocast does not know (meta)
        return named, None
    if not enabled:
        return named, None
    cast = {name: t.float() if isinstance(t, torch.Tensor) and t.dtype in (torch.float16, torch.bfloat16) else t
            for name, t in named.items()}
    return cast, first.dtype


def check_tensors(named: Mapping[str, Optional[torch.Tensor]]) -> None:
    """Every value is a tensor (or None) of the first one's dtype and device; that dtype is a supported float.

    The first entry is the reference (``input``); errors name the offending argument and the fix.
    """
    (first_name, reference), *_ = named.items()
    if not isinstance(reference, torch.Tensor):
        raise TypeError(f"{first_name} must be a torch.Tensor, got {type(reference).__name__}")
    if reference.dtype not in SUPPORTED_DTYPES:
        raise TypeError(f"{first_name} has dtype {reference.dtype}; supported: float32, float64, float16, bfloat16")
    for name, t in named.items():
        if t is None:
            continue
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor or None, got {type(t).__name__}")
        if t.dtype != reference.dtype:
            raise TypeError(f"{name} has dtype {t.dtype} but {first_name} has {reference.dtype}; "
                            f"cast it with {name}.to({first_name}.dtype)")
        if t.device != reference.device:
            raise ValueError(f"{name} is on {t.device} but {first_name} is on {reference.device}; "
                             "move all tensors to one device")


def has_concrete_shapes(*tensors: Optional[torch.Tensor]) -> bool:
    """True when no shape is symbolic (under torch.export/compile tracing shapes can be SymInts, which the
    pure-Python shape checks would specialise)."""
    return all(t is None or all(type(s) is int for s in t.shape) for t in tensors)
