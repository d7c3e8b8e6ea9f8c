"""dcn_deploy: deformable convolution networks from PyTorch to ONNX, ONNX Runtime and TensorRT.

Importing this package is cheap: torch, onnx, onnxruntime and tensorrt are imported only when a name
that needs them is first used (``dcn_deploy.deform_conv2d``, ``dcn_deploy.export``, ...).
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

# public name -> module that defines it
_LAZY = {
    "deform_conv2d": "dcn_deploy.ops.deform_conv",
    "DeformConv2d": "dcn_deploy.ops.modules",
    "DeformConv2dPack": "dcn_deploy.ops.modules",
    "ModulatedDeformConv2dPack": "dcn_deploy.ops.modules",
    "upgrade_mmcv_state_dict": "dcn_deploy.ops.modules",
    "deform_roi_pool": "dcn_deploy.ops.roi_pool",
    "deform_psroi_pool": "dcn_deploy.ops.roi_pool",
    "DeformRoIPool": "dcn_deploy.ops.roi_modules",
    "DeformRoIPoolPack": "dcn_deploy.ops.roi_modules",
    "ModulatedDeformRoIPoolPack": "dcn_deploy.ops.roi_modules",
    "DeformPSRoIPool": "dcn_deploy.ops.roi_modules",
    "ShapeError": "dcn_deploy.ops.spec",
    "deform_conv_spec": "dcn_deploy.ops.spec",
    "export": "dcn_deploy.onnx.export",
    "build_engine": "dcn_deploy.backends.trt_build",
}

__all__ = sorted(_LAZY) + ["__version__"]


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'dcn_deploy' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return __all__
