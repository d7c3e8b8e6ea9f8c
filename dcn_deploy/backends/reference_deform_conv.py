"""ONNX ``DeformConv`` (opset 19) for onnx's reference evaluator, vectorised with numpy.

Why: onnx's own implementation calls its pure-Python GridSample once per (image, output channel, input channel,
output pixel): over two minutes for one 16-channel layer at 64x64, hours for a real network, and it divides by zero
when H or W is 1. This one is written from the operator's specification alone (no torch, no ONNX Runtime), so the
``onnx-reference`` runner stays an independent oracle for ``dcn-deploy verify --against ort``:

    out[n, o, y, x] = B[o] + sum_{c in group(o), i, j} W[o, c', i, j] * mask[n, g, i, j, y, x]
                      * bilinear(X[n, c], y*stride_h - pad_top + i*dilation_h + offset[n, g, i, j, 0, y, x],
                                          x*stride_w - pad_left + j*dilation_w + offset[n, g, i, j, 1, y, x])

with g = c // (C / offset_group), and each of the four bilinear neighbours outside the image contributing zero
(GridSample with zero padding and align_corners=1, as the standard defines it). Computed in float64, returned in
X's dtype. Inputs other than 4-D fall back to onnx's implementation.
"""
from __future__ import annotations

import numpy as np
from onnx.reference.ops.op_deform_conv import DeformConv as _OnnxDeformConv

__all__ = ["DeformConv", "deform_conv_2d"]


def _corner_taps(py: np.ndarray, px: np.ndarray, height: int, width: int):
    """The four bilinear neighbours of each sample: [(flat index, weight, inside)], weight 0 where outside the
    image (index 0 there: the caller drops those values, so that an inf at pixel 0 cannot leak in as 0 x inf)."""
    y0 = np.floor(py)
    x0 = np.floor(px)
    with np.errstate(invalid="ignore"):  # inf - inf: that sample is outside, its weight is set to 0 below
        ly, lx = py - y0, px - x0
    taps = []
    for dy, wy in ((0, 1 - ly), (1, ly)):
        for dx, wx in ((0, 1 - lx), (1, lx)):
            row, col = y0 + dy, x0 + dx
            inside = (row >= 0) & (row <= height - 1) & (col >= 0) & (col <= width - 1)  # False for NaN too
            index = np.where(inside, row, 0).astype(np.int64) * width + np.where(inside, col, 0).astype(np.int64)
            taps.append((index, np.where(inside, wy * wx, 0.0), inside))
    return taps


def deform_conv_2d(X, W, offset, B=None, mask=None, *, dilations, group, offset_group, pads, strides,
                   kernel_shape=None) -> np.ndarray:
    """Numpy DeformConv for X (N, C, H, W); the other arguments as in the ONNX operator."""
    n, channels, height, width = X.shape
    out_channels, channels_per_group, kh, kw = W.shape
    points = kh * kw
    if min(strides) < 1 or min(dilations) < 1 or min(pads) < 0 or group < 1 or offset_group < 1:
        raise ValueError(f"DeformConv: strides={list(strides)} and dilations={list(dilations)} must be >= 1, "
                         f"pads={list(pads)} >= 0, group={group} and offset_group={offset_group} >= 1")
    if min(channels, height, width, out_channels, channels_per_group, kh, kw) < 1:
        raise ValueError(f"DeformConv: X {X.shape} and W {W.shape} must have C, H, W, output channels, channels "
                         "per group and kernel sizes >= 1")
    if B is not None and B.shape != (out_channels,):
        raise ValueError(f"DeformConv: B {B.shape} must have shape ({out_channels},), one value per output channel "
                         f"of W {W.shape}")
    if channels != channels_per_group * group or out_channels % group or channels % offset_group:
        raise ValueError(f"DeformConv: X {X.shape} and W {W.shape} do not fit group={group} and "
                         f"offset_group={offset_group} (C = W.shape[1] * group; group and offset_group divide C, "
                         f"group divides the output channels)")
    oh, ow = (  # the output size the attributes give; offset and mask must have it
        (size + pads[axis] + pads[axis + 2] - dilations[axis] * (kernel - 1) - 1) // strides[axis] + 1
        for axis, (size, kernel) in enumerate(((height, kh), (width, kw))))
    if oh < 1 or ow < 1:
        raise ValueError(f"DeformConv: X {X.shape} gives an empty {oh}x{ow} output with W {W.shape}, "
                         f"strides={list(strides)}, pads={list(pads)} and dilations={list(dilations)}: the padded "
                         "image is smaller than the dilated kernel")
    if kernel_shape is not None and tuple(kernel_shape) != (kh, kw):
        raise ValueError(f"DeformConv: kernel_shape={list(kernel_shape)} but W {W.shape} has a {kh}x{kw} kernel")
    if offset.shape != (n, offset_group * points * 2, oh, ow) or (mask is not None and mask.shape != (
            n, offset_group * points, oh, ow)):
        raise ValueError(f"DeformConv: offset {offset.shape} (expected {(n, offset_group * points * 2, oh, ow)})"
                         f" or mask {None if mask is None else mask.shape} (expected "
                         f"{(n, offset_group * points, oh, ow)}) does not fit X {X.shape}, W {W.shape}, "
                         f"offset_group={offset_group}, strides={list(strides)}, pads={list(pads)} and "
                         f"dilations={list(dilations)}")
    per_offset_group = channels // offset_group
    out_per_group = out_channels // group
    x64 = X.astype(np.float64)
    offsets = offset.astype(np.float64).reshape(n, offset_group, kh, kw, 2, oh, ow)
    scale = (np.ones((n, offset_group, kh, kw, oh, ow)) if mask is None
             else mask.astype(np.float64).reshape(n, offset_group, kh, kw, oh, ow))
    # undeformed sampling positions, (kH, kW, oH, oW)
    base_y = ((np.arange(oh) * strides[0] - pads[0]).reshape(1, 1, oh, 1)
              + (np.arange(kh) * dilations[0]).reshape(kh, 1, 1, 1))
    base_x = ((np.arange(ow) * strides[1] - pads[1]).reshape(1, 1, 1, ow)
              + (np.arange(kw) * dilations[1]).reshape(1, kw, 1, 1))
    w64 = W.astype(np.float64).reshape(out_channels, channels_per_group * points)
    out = np.empty((n, out_channels, oh * ow))
    for image in range(n):  # one image's columns at a time: memory stays at one image's C*kH*kW*oH*oW
        # columns[c, (i, j), (y, x)]: mask * bilinear sample
        columns = np.empty((channels, points, oh * ow))
        for g in range(offset_group):
            py = (base_y + offsets[image, g, :, :, 0]).reshape(points, oh * ow)
            px = (base_x + offsets[image, g, :, :, 1]).reshape(points, oh * ow)
            plane = x64[image, g * per_offset_group:(g + 1) * per_offset_group].reshape(per_offset_group, -1)
            sampled = np.zeros((per_offset_group, points, oh * ow))
            for index, weight, inside in _corner_taps(py, px, height, width):
                with np.errstate(invalid="ignore"):  # 0 x inf of an outside neighbour, dropped by the where
                    sampled += np.where(inside, plane[:, index] * weight, 0.0)   # outside: zero, as GridSample
            columns[g * per_offset_group:(g + 1) * per_offset_group] = (
                sampled * scale[image, g].reshape(points, oh * ow))
        for g in range(group):
            cols = columns[g * channels_per_group:(g + 1) * channels_per_group].reshape(-1, oh * ow)
            out[image, g * out_per_group:(g + 1) * out_per_group] = w64[g * out_per_group:(g + 1) * out_per_group] @ cols
    if B is not None:
        out += B.astype(np.float64).reshape(1, out_channels, 1)
    return out.reshape(n, out_channels, oh, ow).astype(X.dtype)


class DeformConv(_OnnxDeformConv):
    """onnx's ``DeformConv`` node class with the vectorised 2-D computation (``new_ops`` of ReferenceEvaluator)."""

    op_domain = ""

    def _run(self, X, W, offset, B=None, mask=None, dilations=None, group=None, kernel_shape=None,
             offset_group=None, pads=None, strides=None):
        if X.ndim != 4:
            return super()._run(X, W, offset, B, mask, dilations=dilations, group=group, kernel_shape=kernel_shape,
                                offset_group=offset_group, pads=pads, strides=strides)
        out = deform_conv_2d(X, W, offset, B, mask, dilations=dilations or (1, 1), group=group or 1,
                             offset_group=offset_group or 1, pads=pads or (0, 0, 0, 0), strides=strides or (1, 1),
                             kernel_shape=kernel_shape)
        return (out,)
