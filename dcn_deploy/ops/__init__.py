"""PyTorch ops and modules. Names load lazily, so ``dcn_deploy.ops.spec`` (pure Python) never imports torch."""
from __future__ import annotations

import importlib

from ..lazy import lazy_attributes

_LAZY = {
    "deform_conv2d": "dcn_deploy.ops.deform_conv",
    "DeformConv2d": "dcn_deploy.ops.modules",
    "DeformConv2dPack": "dcn_deploy.ops.modules",
    "ModulatedDeformConv2dPack": "dcn_deploy.ops.modules",
    "upgrade_mmcv_state_dict": "dcn_deploy.ops.modules",
    "convert_modules": "dcn_deploy.ops.convert",
    "UnconvertedLayerError": "dcn_deploy.ops.convert",
    "fix_adaptive_sampling": "dcn_deploy.ops.roi_modules",
    "deform_roi_pool": "dcn_deploy.ops.roi_pool",
    "deform_psroi_pool": "dcn_deploy.ops.roi_pool",
    "DeformRoIPool": "dcn_deploy.ops.roi_modules",
    "DeformRoIPoolPack": "dcn_deploy.ops.roi_modules",
    "ModulatedDeformRoIPoolPack": "dcn_deploy.ops.roi_modules",
    "DeformPSRoIPool": "dcn_deploy.ops.roi_modules",
    "DeformConvSpec": "dcn_deploy.ops.spec",
    "ShapeError": "dcn_deploy.ops.spec",
    "deform_conv_spec": "dcn_deploy.ops.spec",
}

__all__ = sorted(_LAZY) + ["register_torch_ops"]

# Modules whose import registers torch.ops.dcn_deploy.* (custom ops with fake and autograd implementations).
_TORCH_OP_MODULES = ("dcn_deploy.ops.deform_conv", "dcn_deploy.ops.roi_pool")


def register_torch_ops() -> None:
    """Make sure every ``torch.ops.dcn_deploy.*`` op is registered (e.g. before loading a saved .pt2 program)."""
    for module in _TORCH_OP_MODULES:
        importlib.import_module(module)


__getattr__, __dir__ = lazy_attributes("dcn_deploy.ops", _LAZY, globals())
