"""PyTorch ops and modules."""
from .deform_conv import deform_conv2d
from .modules import DeformConv2d, DeformConv2dPack, ModulatedDeformConv2dPack
from .spec import DeformConvSpec, ShapeError, deform_conv_spec

__all__ = ["deform_conv2d", "DeformConv2d", "DeformConv2dPack", "ModulatedDeformConv2dPack",
           "DeformConvSpec", "ShapeError", "deform_conv_spec"]
