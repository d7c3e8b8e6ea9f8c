"""nn.Module forms of deformable convolution.

- :class:`DeformConv2d`: torchvision's module (same constructor, parameter names ``weight``/``bias`` and
  ``forward(input, offset, mask=None)``), so a torchvision state_dict loads unchanged.
- :class:`DeformConv2dPack` / :class:`ModulatedDeformConv2dPack`: layers that predict their own offsets (and mask)
  with a plain convolution ``conv_offset`` initialised to zero, with mmcv's state_dict keys
  (``weight``, ``bias``, ``conv_offset.weight``, ``conv_offset.bias``), so mmdetection checkpoints load.
"""
from __future__ import annotations

import functools
import math
from collections import OrderedDict
from typing import Collection, Mapping, Optional

import torch
from torch import nn

from ._checks import refuse_torchscript
from .deform_conv import deform_conv2d
from .spec import ShapeError, as_pair, positive_int

__all__ = ["DeformConv2d", "DeformConv2dPack", "ModulatedDeformConv2dPack", "upgrade_mmcv_state_dict"]


def _upgraded_key(key: str, state_dict: Mapping[str, torch.Tensor]) -> str:
    """The current name of one old offset-branch key (``<layer>_offset.weight`` beside ``<layer>.weight``, or
    ``<layer>.conv_offset_mask.weight``): ``<layer>.conv_offset.weight``; any other key as it is."""
    for suffix in (".weight", ".bias"):
        if not key.endswith(suffix):
            continue
        layer = key[: -len(suffix)]
        if layer.endswith("_offset") and f"{layer[:-len('_offset')]}.weight" in state_dict:
            return f"{layer[:-len('_offset')]}.conv_offset{suffix}"
        if layer.endswith(".conv_offset_mask"):
            return f"{layer[:-len('.conv_offset_mask')]}.conv_offset{suffix}"
    return key


def upgrade_mmcv_state_dict(state_dict: Mapping[str, torch.Tensor],
                            model_keys: Optional[Collection[str]] = None) -> "OrderedDict[str, torch.Tensor]":
    """Rename the offset-branch keys of old mmcv/mmdetection checkpoints to ``<layer>.conv_offset.*``.

    Before mmcv's state_dict version 2 the offset branch was a sibling module ``<layer>_offset.*`` beside
    ``<layer>.weight``; some checkpoints use ``<layer>.conv_offset_mask.*``. PyTorch hands each child module only
    its own keys, so a sibling cannot be renamed inside the layer: apply this to the checkpoint before
    ``load_state_dict``. Other keys pass through unchanged, and so does an old key whose new name the checkpoint
    holds already (the current key wins). ``model_keys`` (the model's state_dict keys), when given, limits the
    renaming to keys the model has under the new name and not under the old one (a model whose own offset
    convolution is called ``<layer>_offset`` keeps its keys).
    """
    if not isinstance(state_dict, Mapping):
        hint = "; pass model.state_dict()" if isinstance(state_dict, nn.Module) else ""
        raise TypeError(f"upgrade_mmcv_state_dict takes a state_dict (a dict of tensors), got "
                        f"{type(state_dict).__name__}{hint}")
    wrapped = [k for k in ("state_dict", "model") if isinstance(state_dict.get(k), Mapping)]
    if wrapped and not any(isinstance(v, torch.Tensor) for v in state_dict.values()):
        # an mmcv/mmdetection checkpoint file's dict ({"meta": ..., "state_dict": ...}): nothing here would be renamed
        raise ValueError(f"upgrade_mmcv_state_dict got a checkpoint wrapper (keys {sorted(state_dict)[:6]}), not a "
                         f"state_dict; pass checkpoint[{wrapped[0]!r}]")
    if isinstance(model_keys, (str, bytes)):  # ``in`` would match substrings
        raise TypeError("model_keys must be a collection of key names, e.g. model.state_dict().keys(), got a string")
    upgraded: "OrderedDict[str, torch.Tensor]" = OrderedDict()
    for key, value in state_dict.items():
        new_key = _upgraded_key(key, state_dict)
        fits = model_keys is None or (new_key in model_keys and key not in model_keys)
        upgraded[new_key if new_key != key and new_key not in state_dict and fits else key] = value
    return upgraded


class DeformConv2d(nn.Module):
    """Deformable convolution layer; see :func:`dcn_deploy.deform_conv2d` for shapes.

    ``forward(input, offset, mask=None)``: input (N, C, H, W), offset (N, 2*offset_groups*kH*kW, oH, oW),
    mask (N, offset_groups*kH*kW, oH, oW) or None. ``offset_groups`` follows from the offset's channels.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, dilation=1,
                 groups: int = 1, bias: bool = True):
        super().__init__()
        in_channels = positive_int(in_channels, "in_channels")
        out_channels = positive_int(out_channels, "out_channels")
        groups = positive_int(groups, "groups")
        if isinstance(bias, int) and not isinstance(bias, bool):
            # mmcv's DeformConv2d/ModulatedDeformConv2d take deform_groups where torchvision's (and ours) take bias
            raise TypeError(f"{type(self).__name__}: bias must be True or False, got {bias}. Converting a call to "
                            "mmcv's DeformConv2d or ModulatedDeformConv2d? Their 8th argument is deform_groups, ours "
                            "(torchvision's) is bias: drop deform_groups (it is read from the offset's channels) and "
                            "give bias=False for mmcv's DeformConv2d, which has none")
        if in_channels % groups:
            raise ShapeError(f"in_channels ({in_channels}) must be divisible by groups ({groups})")
        if out_channels % groups:
            raise ShapeError(f"out_channels ({out_channels}) must be divisible by groups ({groups})")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = as_pair(kernel_size, "kernel_size", 1)
        self.stride = as_pair(stride, "stride", 1)
        self.padding = as_pair(padding, "padding", 0)
        self.dilation = as_pair(dilation, "dilation", 1)
        self.groups = groups
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, *self.kernel_size))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.reset_parameters()

    __prepare_scriptable__ = refuse_torchscript("DeformConv2d layers")

    def reset_parameters(self) -> None:
        # torchvision's (and nn.Conv2d's) initialisation.
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in = self.weight.shape[1] * self.weight.shape[2] * self.weight.shape[3]
            bound = 1 / math.sqrt(fan_in)
            nn.init.uniform_(self.bias, -bound, bound)

    def _checked_input(self, input: torch.Tensor) -> torch.Tensor:
        """``input`` checked against this layer: 4-D with ``in_channels`` channels.

        Why: the functional op infers ``groups`` from the shapes (as torchvision does), so a 6-channel input to a
        3-channel layer would silently run as 2 groups; and the Pack layers' ``conv_offset`` error names only a
        weight size."""
        if not isinstance(input, torch.Tensor):
            raise TypeError(f"{type(self).__name__} takes a torch.Tensor (N, C, H, W), got {type(input).__name__}")
        if input.dim() != 4:
            hint = "; add the batch dimension with input.unsqueeze(0)" if input.dim() == 3 else ""
            raise ShapeError(f"{type(self).__name__} takes a 4-D input (N, C, H, W), got shape "
                             f"{tuple(input.shape)}{hint}")
        if type(input.shape[1]) is int and input.shape[1] != self.in_channels:  # (symbolic under tracing)
            raise ShapeError(f"{type(self).__name__} was built for in_channels={self.in_channels}, got input of shape "
                             f"{tuple(input.shape)} ({input.shape[1]} channels); check the previous layer's "
                             "out_channels")
        return input

    def forward(self, input: torch.Tensor, offset: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        return deform_conv2d(self._checked_input(input), offset, self.weight, self.bias, stride=self.stride,
                             padding=self.padding, dilation=self.dilation, mask=mask)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, dilation={self.dilation}, groups={self.groups}, bias={self.bias is not None}")


def _takes_deformable_groups(init):
    """``__init__`` that also takes ``deformable_groups=``: mmcv's layers still accept that old name of
    ``deform_groups`` (older mmdetection code and configs pass it), so the same call builds ours. The signature
    shown (``inspect.signature``) stays mmcv's current one."""

    @functools.wraps(init)
    def wrapper(self, *args, **kwargs):
        if "deformable_groups" in kwargs:
            old = kwargs.pop("deformable_groups")
            if "deform_groups" in kwargs:
                raise TypeError(f"{type(self).__name__}: got deform_groups={kwargs['deform_groups']} and "
                                f"deformable_groups={old} (mmcv's old name for deform_groups); give deform_groups "
                                "alone")
            kwargs["deform_groups"] = old
        init(self, *args, **kwargs)

    return wrapper


class _PackBase(DeformConv2d):
    """A deformable convolution whose offsets come from ``conv_offset``, a plain convolution on the same input."""

    _channels_per_point: int  # 2 (dy, dx) or 3 (dy, dx, mask logit)

    @_takes_deformable_groups
    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, dilation=1,
                 groups: int = 1, deform_groups: int = 1, bias: bool = True, im2col_step: int = 32):
        # im2col_step is accepted for mmcv config compatibility; it has no effect here (no im2col buffer).
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias)
        deform_groups = positive_int(deform_groups, "deform_groups")
        if in_channels % deform_groups:
            raise ShapeError(f"in_channels ({in_channels}) must be divisible by deform_groups ({deform_groups})")
        self.deform_groups = deform_groups
        kh, kw = self.kernel_size
        self.conv_offset = nn.Conv2d(in_channels, deform_groups * self._channels_per_point * kh * kw,
                                     self.kernel_size, self.stride, self.padding, self.dilation, bias=True)
        self.init_offset()

    def init_offset(self) -> None:
        """Zero the offset branch: the layer starts as a plain convolution (the paper's initialisation)."""
        nn.init.zeros_(self.conv_offset.weight)
        nn.init.zeros_(self.conv_offset.bias)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Older mmcv checkpoints name the offset branch conv_offset_mask.*
        for suffix in ("weight", "bias"):
            old, new = f"{prefix}conv_offset_mask.{suffix}", f"{prefix}conv_offset.{suffix}"
            if new not in state_dict and old in state_dict:
                state_dict[new] = state_dict.pop(old)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", deform_groups={self.deform_groups}"


class DeformConv2dPack(_PackBase):
    """v1 (the paper's): ``conv_offset`` predicts 2*deform_groups*kH*kW offset channels. mmcv's DeformConv2dPack.

    ``forward(input)``: input (N, C, H, W) -> (N, out_channels, oH, oW). mmcv's default is ``bias=False``.
    """

    _channels_per_point = 2

    @_takes_deformable_groups
    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, dilation=1,
                 groups: int = 1, deform_groups: int = 1, bias: bool = False, im2col_step: int = 32):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, deform_groups,
                         bias, im2col_step)

    def forward(self, input: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return super().forward(input, self.conv_offset(self._checked_input(input)))


class ModulatedDeformConv2dPack(_PackBase):
    """v2 (modulated): ``conv_offset`` predicts 3*deform_groups*kH*kW channels, split as mmcv does into
    offset = cat(first third, second third) and mask = sigmoid(last third). mmcv's ModulatedDeformConv2dPack.

    ``forward(input)``: input (N, C, H, W) -> (N, out_channels, oH, oW).
    """

    _channels_per_point = 3

    def forward(self, input: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        out = self.conv_offset(self._checked_input(input))
        split = out.shape[1] // 3
        offset = out[:, : 2 * split]
        mask = torch.sigmoid(out[:, 2 * split:])
        return super().forward(input, offset, mask)
