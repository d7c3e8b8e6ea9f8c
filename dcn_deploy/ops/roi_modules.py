"""nn.Module forms of deformable RoI pooling.

Correspondence with mmcv (``mmcv.ops.deform_roi_pool``), same constructor arguments and state_dict keys, so
mmdetection checkpoints load unchanged:

| here | mmcv | parameters (state_dict keys) |
| --- | --- | --- |
| :class:`DeformRoIPool` | ``DeformRoIPool`` | none; ``forward(input, rois, offset=None)`` |
| :class:`DeformRoIPoolPack` | ``DeformRoIPoolPack`` | ``offset_fc.{0,2,4}.{weight,bias}`` |
| :class:`ModulatedDeformRoIPoolPack` | ``ModulatedDeformRoIPoolPack`` | ``offset_fc.{0,2,4}.*``, ``mask_fc.{0,2}.*`` |

The Pack layers follow the paper (section 2.2): a plain pooling pass (offset None), fully connected layers that
predict the normalised offsets (the last layer initialised to zero, so training starts from RoIAlign), then the
deformable pass. The modulated form (DCNv2) also predicts a per-bin sigmoid mask that scales the output.

:class:`DeformPSRoIPool` is the paper's R-FCN head (Deformable-ConvNets' ``rfcn_*_offset_t`` -> offset pooling ->
``DeformablePSROIPooling``): a 1x1 convolution ``offset_conv`` (zero-initialised) writes 2*num_offset_classes*k*k
position-sensitive offset maps, position-sensitive pooling without offsets turns them into per-RoI, per-part
offsets, and those drive the deformable position-sensitive pooling of the score maps. mmcv has no counterpart.
"""
from __future__ import annotations

from typing import List, Optional

import torch
from torch import nn

from ._checks import refuse_torchscript
from .roi_pool import deform_psroi_pool, deform_roi_pool
from .roi_spec import check_float, check_sample_per_part, check_sampling_ratio
from .spec import ShapeError, as_pair, positive_int

__all__ = ["DeformRoIPool", "DeformRoIPoolPack", "ModulatedDeformRoIPoolPack", "DeformPSRoIPool",
           "adaptive_sampling_layers", "fix_adaptive_sampling"]


class DeformRoIPool(nn.Module):
    """Deformable RoI pooling; see :func:`dcn_deploy.ops.roi_pool.deform_roi_pool`.

    ``forward(input, rois, offset=None)``: input (N, C, H, W), rois (K, 5), offset (K, 2, out_h, out_w) or None
    -> (K, C, out_h, out_w).
    """

    __prepare_scriptable__ = refuse_torchscript("DeformRoIPool layers")

    def __init__(self, output_size, spatial_scale: float = 1.0, sampling_ratio: int = 0, gamma: float = 0.1):
        super().__init__()
        self.output_size = as_pair(output_size, "output_size", 1)
        self.spatial_scale = check_float(spatial_scale, "spatial_scale", positive=True)
        self.sampling_ratio = check_sampling_ratio(sampling_ratio)
        self.gamma = check_float(gamma, "gamma")

    def forward(self, input: torch.Tensor, rois: torch.Tensor, offset: Optional[torch.Tensor] = None) -> torch.Tensor:
        return deform_roi_pool(input, rois, offset, self.output_size, self.spatial_scale, self.sampling_ratio,
                               self.gamma)

    def extra_repr(self) -> str:
        return (f"output_size={self.output_size}, spatial_scale={self.spatial_scale}, "
                f"sampling_ratio={self.sampling_ratio}, gamma={self.gamma}")


def _fc_stack(in_features: int, hidden: int, out_features: int, layers: int) -> nn.Sequential:
    """Linear/ReLU stack with mmcv's indices (Linear at 0, 2, 4, ...), the last Linear zero-initialised."""
    modules = []
    width = in_features
    for _ in range(layers - 1):
        modules += [nn.Linear(width, hidden), nn.ReLU(inplace=True)]
        width = hidden
    last = nn.Linear(width, out_features)
    nn.init.zeros_(last.weight)
    nn.init.zeros_(last.bias)
    modules.append(last)
    return nn.Sequential(*modules)


class DeformRoIPoolPack(DeformRoIPool):
    """Deformable RoI pooling that predicts its own offsets; mmcv's ``DeformRoIPoolPack``.

    offset = offset_fc(plain pooled features flattened) viewed as (K, 2, out_h, out_w); offset_fc is
    Linear(out_h*out_w*output_channels, deform_fc_channels), ReLU, Linear(deform_fc_channels, deform_fc_channels),
    ReLU, Linear(deform_fc_channels, out_h*out_w*2), the last zero-initialised.

    ``forward(input, rois)``: input (N, output_channels, H, W), rois (K, 5) -> (K, output_channels, out_h, out_w).
    """

    def __init__(self, output_size, output_channels: int, deform_fc_channels: int = 1024,
                 spatial_scale: float = 1.0, sampling_ratio: int = 0, gamma: float = 0.1):
        super().__init__(output_size, spatial_scale, sampling_ratio, gamma)
        self.output_channels = positive_int(output_channels, "output_channels")
        self.deform_fc_channels = positive_int(deform_fc_channels, "deform_fc_channels")
        bins = self.output_size[0] * self.output_size[1]
        self.offset_fc = _fc_stack(bins * self.output_channels, self.deform_fc_channels, bins * 2, layers=3)

    def _check_channels(self, input: torch.Tensor) -> None:
        if input.dim() != 4 or input.shape[1] != self.output_channels:
            raise ShapeError(f"{type(self).__name__} was built for {self.output_channels} input channels "
                             f"(output_channels), got input of shape {tuple(input.shape)}")

    def _offsets(self, pooled: torch.Tensor) -> torch.Tensor:
        k = pooled.shape[0]
        return self.offset_fc(pooled.flatten(1)).view(k, 2, *self.output_size)

    def forward(self, input: torch.Tensor, rois: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        self._check_channels(input)
        pooled = super().forward(input, rois, None)
        return super().forward(input, rois, self._offsets(pooled))

    def extra_repr(self) -> str:
        return (super().extra_repr()
                + f", output_channels={self.output_channels}, deform_fc_channels={self.deform_fc_channels}")


class ModulatedDeformRoIPoolPack(DeformRoIPoolPack):
    """Modulated deformable RoI pooling (DCNv2); mmcv's ``ModulatedDeformRoIPoolPack``.

    As :class:`DeformRoIPoolPack`, plus mask = mask_fc(plain pooled features) viewed as (K, 1, out_h, out_w),
    mask_fc = Linear(out_h*out_w*output_channels, deform_fc_channels), ReLU, Linear(deform_fc_channels,
    out_h*out_w), Sigmoid (the second Linear zero-initialised: the mask starts at 0.5); the output is
    ``deform_roi_pool(...) * mask``.
    """

    def __init__(self, output_size, output_channels: int, deform_fc_channels: int = 1024,
                 spatial_scale: float = 1.0, sampling_ratio: int = 0, gamma: float = 0.1):
        super().__init__(output_size, output_channels, deform_fc_channels, spatial_scale, sampling_ratio, gamma)
        bins = self.output_size[0] * self.output_size[1]
        self.mask_fc = _fc_stack(bins * self.output_channels, self.deform_fc_channels, bins, layers=2)
        self.mask_fc.append(nn.Sigmoid())

    def forward(self, input: torch.Tensor, rois: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        self._check_channels(input)
        pooled = DeformRoIPool.forward(self, input, rois, None)
        k = pooled.shape[0]
        mask = self.mask_fc(pooled.flatten(1)).view(k, 1, *self.output_size)
        return DeformRoIPool.forward(self, input, rois, self._offsets(pooled)) * mask


class DeformPSRoIPool(nn.Module):
    """Deformable position-sensitive RoI pooling with its offset branch, as in the paper's R-FCN.

    Args:
        output_dim: output channels (e.g. classes + 1 for the score head, 8 for class-agnostic boxes).
        group_size: k, the side of the position-sensitive grid; the input has output_dim*k*k channels.
        spatial_scale: feature-map pixels per image pixel.
        pooled_size: output side (default: group_size). The offsets use part_size = pooled_size.
        sample_per_part: samples per bin side (the paper's code: 4).
        trans_std: offset scale (the paper's code: 0.1).
        num_offset_classes: independent offset sets (1: shared by all output channels; output_dim: one each).
        offset_in_channels: channels of the map the offset convolution reads; None = the score maps themselves
            (the paper's figure 4). The official code reads the shared feature before the score convolution:
            pass its channel count and give that map as ``offset_input``.

    ``forward(input, rois, offset_input=None)``: input (N, output_dim*k*k, H, W), rois (K, 5)
    -> (K, output_dim, pooled_size, pooled_size). Parameters: ``offset_conv.{weight, bias}`` (zero-initialised).
    """

    __prepare_scriptable__ = refuse_torchscript("DeformPSRoIPool layers")

    def __init__(self, output_dim: int, group_size: int, spatial_scale: float, pooled_size: Optional[int] = None,
                 sample_per_part: int = 4, trans_std: float = 0.1, num_offset_classes: int = 1,
                 offset_in_channels: Optional[int] = None):
        super().__init__()
        self.output_dim = positive_int(output_dim, "output_dim")
        self.group_size = positive_int(group_size, "group_size")
        self.spatial_scale = check_float(spatial_scale, "spatial_scale", positive=True)
        self.pooled_size = positive_int(pooled_size or group_size, "pooled_size")
        self.sample_per_part = check_sample_per_part(sample_per_part)
        self.trans_std = check_float(trans_std, "trans_std")
        self.num_offset_classes = positive_int(num_offset_classes, "num_offset_classes")
        if self.output_dim % self.num_offset_classes:
            raise ShapeError(f"output_dim ({output_dim}) must be divisible by num_offset_classes ({num_offset_classes})")
        in_channels = self.output_dim * self.group_size ** 2
        self.offset_in_channels = positive_int(offset_in_channels or in_channels, "offset_in_channels")
        self.offset_conv = nn.Conv2d(self.offset_in_channels, 2 * self.num_offset_classes * self.group_size ** 2, 1)
        nn.init.zeros_(self.offset_conv.weight)
        nn.init.zeros_(self.offset_conv.bias)

    def forward(self, input: torch.Tensor, rois: torch.Tensor,
                offset_input: Optional[torch.Tensor] = None) -> torch.Tensor:
        source = input if offset_input is None else offset_input
        self._check_channels(input, self.output_dim * self.group_size ** 2, "input",
                             "output_dim*group_size**2 position-sensitive score maps")
        self._check_channels(source, self.offset_in_channels, "offset_input" if offset_input is not None else "input",
                             "offset_in_channels, read by offset_conv")
        offset_maps = self.offset_conv(source)
        trans = deform_psroi_pool(offset_maps, rois, None, self.spatial_scale, 2 * self.num_offset_classes,
                                  self.group_size, self.pooled_size, self.pooled_size, self.sample_per_part,
                                  0.0, True)
        return deform_psroi_pool(input, rois, trans, self.spatial_scale, self.output_dim, self.group_size,
                                 self.pooled_size, self.pooled_size, self.sample_per_part, self.trans_std, False)

    def _check_channels(self, tensor: torch.Tensor, expected: int, name: str, what: str) -> None:
        """Name this layer and what it expects (torch's conv error names only a weight size)."""
        if not isinstance(tensor, torch.Tensor) or tensor.dim() != 4:
            shape = tuple(tensor.shape) if isinstance(tensor, torch.Tensor) else type(tensor).__name__
            raise ShapeError(f"{type(self).__name__}: {name} must be a 4-D tensor (N, C, H, W), got {shape}")
        if type(tensor.shape[1]) is int and tensor.shape[1] != expected:  # (symbolic under tracing)
            raise ShapeError(f"{type(self).__name__}: {name} must have {expected} channels ({what}), got shape "
                             f"{tuple(tensor.shape)}")

    def extra_repr(self) -> str:
        return (f"output_dim={self.output_dim}, group_size={self.group_size}, pooled_size={self.pooled_size}, "
                f"spatial_scale={self.spatial_scale}, sample_per_part={self.sample_per_part}, "
                f"trans_std={self.trans_std}, num_offset_classes={self.num_offset_classes}")


def fix_adaptive_sampling(model: nn.Module, sampling_ratio: int) -> List[str]:
    """Set ``sampling_ratio`` on every :class:`DeformRoIPool` layer of ``model`` that samples adaptively (0, mmcv's
    default), in place, so that it exports; returns their qualified names.

    Adaptive sampling takes ceil(RoI side * spatial_scale / output side) points per bin side, a count that depends
    on each box at run time, which an ONNX graph cannot hold. A fixed count changes the outputs (the more so the
    larger the boxes): choose about that ceil for your typical boxes, and re-check accuracy on real data.
    """
    sampling_ratio = check_sampling_ratio(positive_int(sampling_ratio, "sampling_ratio"))
    changed = adaptive_sampling_layers(model)
    for name in changed:
        model.get_submodule(name).sampling_ratio = sampling_ratio
    return changed


def adaptive_sampling_layers(model: nn.Module) -> List[str]:
    """The qualified names of ``model``'s :class:`DeformRoIPool` layers with ``sampling_ratio=0`` (adaptive)."""
    return [name for name, module in model.named_modules()
            if isinstance(module, DeformRoIPool) and module.sampling_ratio == 0]
