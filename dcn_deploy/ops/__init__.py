"""PyTorch ops and modules. Names load lazily, so ``dcn_deploy.ops.spec`` (pure Python) never imports torch."""
from __future__ import annotations

import importlib

_LAZY = {
    "deform_conv2d": "dcn_deploy.ops.deform_conv",
    "DeformConv2d": "dcn_deploy.ops.modules",
    "DeformConv2dPack": "dcn_deploy.ops.modules",
    "ModulatedDeformConv2dPack": "dcn_deploy.ops.modules",
    "upgrade_mmcv_state_dict": "dcn_deploy.ops.modules",
    "DeformConvSpec": "dcn_deploy.ops.spec",
    "ShapeError": "dcn_deploy.ops.spec",
    "deform_conv_spec": "dcn_deploy.ops.spec",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'dcn_deploy.ops' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return __all__
