"""Deformable convolution (Dai et al. 2017, v1; Zhu et al. 2019, v2 with a mask) as a PyTorch op.

This file is the reference: every other implementation (the ONNX function body, ONNX Runtime, the CUDA
kernel, the TensorRT plugin) is tested against :func:`deform_conv2d`.

Semantics (torchvision's, and ONNX ``DeformConv``'s):

    out[n, o, y, x] = bias[o] + sum_{c in group(o)} sum_{i, j}
        weight[o, c, i, j] * mask[n, g, i, j, y, x] * bilinear(input[n, c], py, px)
    py = y * stride_h - pad_h + i * dilation_h + offset[n, g, i, j, 0, y, x]
    px = x * stride_w - pad_w + j * dilation_w + offset[n, g, i, j, 1, y, x]

where ``g = c // (C / offset_groups)``, the offset tensor is ``(N, offset_groups*kH*kW*2, oH, oW)`` with channel
``((g*kH + i)*kW + j)*2 + {0: dy, 1: dx}``, the mask ``(N, offset_groups*kH*kW, oH, oW)`` (all ones when None:
the paper's v1), and ``bilinear`` lets each of the four neighbours outside the image contribute zero.

Implementation: the bilinear sampling is done by ``grid_sample`` (one fused, vectorised pass that writes the
sampled columns), then one batched matrix product per convolution group. Half types are computed in float32.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F

from .spec import ShapeError, as_pair, conv_output_size, deform_conv_spec

__all__ = ["deform_conv2d"]

# Largest sampled-column buffer (elements) built at once; larger batches are processed in chunks.
_MAX_COLUMN_ELEMENTS = 1 << 26
_HALF_TYPES = (torch.float16, torch.bfloat16)
_SUPPORTED_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def _sample_columns(input: torch.Tensor, offset: torch.Tensor, mask: Optional[torch.Tensor],
                    kernel: Sequence[int], stride: Sequence[int], padding: Sequence[int],
                    dilation: Sequence[int]) -> torch.Tensor:
    """Bilinear samples at every deformed kernel point: (N, C, kH*kW, oH*oW), already multiplied by the mask."""
    n, c, h, w = input.shape
    kh, kw = kernel
    oh, ow = offset.shape[2], offset.shape[3]
    k = kh * kw
    groups = offset.shape[1] // (2 * k)
    dtype, device = input.dtype, input.device

    ky = torch.arange(kh, device=device, dtype=dtype) * dilation[0]
    kx = torch.arange(kw, device=device, dtype=dtype) * dilation[1]
    oy = torch.arange(oh, device=device, dtype=dtype) * stride[0] - padding[0]
    ox = torch.arange(ow, device=device, dtype=dtype) * stride[1] - padding[1]
    base_y = (ky.view(kh, 1, 1, 1) + oy.view(1, 1, oh, 1)).expand(kh, kw, oh, ow).reshape(k, oh, ow)
    base_x = (kx.view(1, kw, 1, 1) + ox.view(1, 1, 1, ow)).expand(kh, kw, oh, ow).reshape(k, oh, ow)

    off = offset.view(n, groups, k, 2, oh, ow)
    # grid_sample with align_corners=False maps g -> ((g + 1) * size - 1) / 2, so this is the exact pixel position;
    # unlike align_corners=True it stays well defined when H or W is 1.
    grid_x = (base_x + off[:, :, :, 1]) * (2.0 / w) + (1.0 / w - 1.0)
    grid_y = (base_y + off[:, :, :, 0]) * (2.0 / h) + (1.0 / h - 1.0)
    grid = torch.stack((grid_x, grid_y), dim=-1).view(n * groups, k * oh, ow, 2)
    columns = F.grid_sample(input.reshape(n * groups, c // groups, h, w), grid, mode="bilinear",
                            padding_mode="zeros", align_corners=False)
    columns = columns.view(n, groups, c // groups, k, oh * ow)
    if mask is not None:
        columns = columns * mask.view(n, groups, 1, k, oh * ow)
    return columns.view(n, c, k, oh * ow)


def _forward_composite(input: torch.Tensor, offset: torch.Tensor, weight: torch.Tensor,
                       bias: Optional[torch.Tensor], mask: Optional[torch.Tensor],
                       stride: Sequence[int], padding: Sequence[int], dilation: Sequence[int]) -> torch.Tensor:
    """Deformable convolution from differentiable torch ops, in the inputs' own dtype."""
    n, c, _, _ = input.shape
    oc, c_per_group, kh, kw = weight.shape
    groups = c // c_per_group
    oh, ow = offset.shape[2], offset.shape[3]
    weight_g = weight.reshape(groups, oc // groups, c_per_group * kh * kw)

    per_image = max(1, c * kh * kw * oh * ow)
    chunk = max(1, _MAX_COLUMN_ELEMENTS // per_image)
    outputs = []
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        columns = _sample_columns(input[start:stop], offset[start:stop],
                                  None if mask is None else mask[start:stop], (kh, kw), stride, padding, dilation)
        columns = columns.view(stop - start, groups, c_per_group * kh * kw, oh * ow)
        outputs.append(torch.matmul(weight_g, columns).view(stop - start, oc, oh, ow))
    out = outputs[0] if len(outputs) == 1 else torch.cat(outputs)
    if bias is not None:
        out = out + bias.view(1, oc, 1, 1)
    return out


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float32 if dtype in _HALF_TYPES else dtype


def _upcast(t: Optional[torch.Tensor], dtype: torch.dtype) -> Optional[torch.Tensor]:
    return None if t is None else t.to(dtype)


@torch.library.custom_op("dcn_deploy::deform_conv2d", mutates_args=())
def _deform_conv2d_op(input: torch.Tensor, offset: torch.Tensor, weight: torch.Tensor,
                      bias: Optional[torch.Tensor], mask: Optional[torch.Tensor],
                      stride: Sequence[int], padding: Sequence[int], dilation: Sequence[int]) -> torch.Tensor:
    compute = _compute_dtype(input.dtype)
    if input.shape[0] == 0:
        spec_h = conv_output_size(input.shape[2], weight.shape[2], stride[0], padding[0], padding[0], dilation[0])
        spec_w = conv_output_size(input.shape[3], weight.shape[3], stride[1], padding[1], padding[1], dilation[1])
        return input.new_zeros((0, weight.shape[0], spec_h, spec_w))
    with torch.no_grad():
        out = _forward_composite(input.to(compute).contiguous(), offset.to(compute).contiguous(), weight.to(compute),
                                 _upcast(bias, compute), _upcast(mask, compute), stride, padding, dilation)
    return out.to(input.dtype)


@_deform_conv2d_op.register_fake
def _deform_conv2d_fake(input, offset, weight, bias, mask, stride, padding, dilation):
    out_h = conv_output_size(input.shape[2], weight.shape[2], stride[0], padding[0], padding[0], dilation[0])
    out_w = conv_output_size(input.shape[3], weight.shape[3], stride[1], padding[1], padding[1], dilation[1])
    return input.new_empty((input.shape[0], weight.shape[0], out_h, out_w))


def _setup_context(ctx, inputs, output):
    input, offset, weight, bias, mask, stride, padding, dilation = inputs
    ctx.save_for_backward(input, offset, weight, bias, mask)
    ctx.conv_args = (stride, padding, dilation)


def _backward(ctx, grad_output):
    # Gradients by re-running the differentiable composite: the same arithmetic as the forward, so the
    # gradients are exactly those of the function the forward computes.
    input, offset, weight, bias, mask = ctx.saved_tensors
    stride, padding, dilation = ctx.conv_args
    compute = _compute_dtype(input.dtype)
    originals = (input, offset, weight, bias, mask)
    leaves = [None if t is None else t.detach().to(compute).requires_grad_(needs)
              for t, needs in zip(originals, ctx.needs_input_grad[:5])]
    wanted = [t for t in leaves if t is not None and t.requires_grad]
    grads = [None] * 5
    if wanted and input.shape[0] > 0:
        with torch.enable_grad():
            out = _forward_composite(leaves[0], leaves[1], leaves[2], leaves[3], leaves[4], stride, padding, dilation)
            found = torch.autograd.grad(out, wanted, grad_output.to(compute))
        found_iter = iter(found)
        for i, t in enumerate(leaves):
            if t is not None and t.requires_grad:
                grads[i] = next(found_iter).to(originals[i].dtype)
    elif wanted:  # empty batch: zero gradients of the right shapes
        for i, t in enumerate(leaves):
            if t is not None and t.requires_grad:
                grads[i] = torch.zeros_like(originals[i])
    return (*grads, None, None, None)


_deform_conv2d_op.register_autograd(_backward, setup_context=_setup_context)


def _check_tensors(named: dict) -> None:
    reference = named["input"]
    if not isinstance(reference, torch.Tensor):
        raise TypeError(f"input must be a torch.Tensor, got {type(reference).__name__}")
    if reference.dtype not in _SUPPORTED_DTYPES:
        raise TypeError(f"input has dtype {reference.dtype}; supported: float32, float64, float16, bfloat16")
    for name, t in named.items():
        if t is None:
            continue
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor or None, got {type(t).__name__}")
        if t.dtype != reference.dtype:
            raise TypeError(f"{name} has dtype {t.dtype} but input has {reference.dtype}; cast all tensors to one dtype")
        if t.device != reference.device:
            raise ValueError(f"{name} is on {t.device} but input is on {reference.device}; move all tensors to one device")


def _concrete(shape) -> bool:
    return all(type(s) is int for s in shape)


def deform_conv2d(input: torch.Tensor, offset: torch.Tensor, weight: torch.Tensor,
                  bias: Optional[torch.Tensor] = None, stride=1, padding=0, dilation=1,
                  mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Deformable convolution, v1 (``mask=None``) or v2 (modulated, with ``mask``). torchvision's signature.

    Args:
        input: (N, C, H, W).
        offset: (N, 2*offset_groups*kH*kW, oH, oW); channel ``((g*kH + i)*kW + j)*2`` is dy, ``+1`` is dx, in pixels.
        weight: (out_channels, C/groups, kH, kW). ``groups`` is inferred as ``C / weight.shape[1]``.
        bias: (out_channels,) or None.
        stride, padding, dilation: int or (height, width). Padding is applied on both sides of each axis.
        mask: (N, offset_groups*kH*kW, oH, oW) modulation scalars, or None for all ones.

    Returns:
        (N, out_channels, oH, oW), ``oH = (H + 2*pad_h - dilation_h*(kH-1) - 1) // stride_h + 1`` (likewise oW),
        in the input's dtype; float16/bfloat16 are computed in float32.

    Raises:
        ShapeError (a ValueError) naming the argument whose shape does not fit; TypeError for mixed dtypes.
    """
    _check_tensors({"input": input, "offset": offset, "weight": weight, "bias": bias, "mask": mask})
    stride_hw = as_pair(stride, "stride", 1)
    padding_hw = as_pair(padding, "padding", 0)
    dilation_hw = as_pair(dilation, "dilation", 1)
    shapes = [input.shape, offset.shape, weight.shape] + [t.shape for t in (bias, mask) if t is not None]
    if all(_concrete(s) for s in shapes):
        deform_conv_spec(input.shape, offset.shape, weight.shape,
                         None if bias is None else bias.shape, None if mask is None else mask.shape,
                         stride_hw, padding_hw, dilation_hw)
    elif input.dim() != 4 or offset.dim() != 4 or weight.dim() != 4:
        raise ShapeError("input, offset and weight must be 4-D (NCHW)")
    return _deform_conv2d_op(input, offset, weight, bias, mask, list(stride_hw), list(padding_hw), list(dilation_hw))
