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

Implementation: the four bilinear neighbours of every sample are gathered and weighted (mask folded into the
weights) by one ``embedding_bag`` over a channels-last copy of the input, then one matrix product (or one per
convolution group). Everything is differentiable torch, so the backward pass is autograd through the same code.
Half types are computed in float32 here. The forward runs compiled code instead where it is built: the host library's
on the CPU, the CUDA kernels on a GPU (half types read and written as they are, summed in float32); see
:mod:`dcn_deploy.ops.native_paths`.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F

from . import native_paths
from ._checks import (autocast_off, call_in_float32, channels_last_only, checked_arguments, compute_dtype,
                      has_concrete_shapes, refuse_double_backward, refuse_torchscript, register_float32_autocast)
from .spec import ShapeError, as_pair, conv_output_size, deform_conv_spec

__all__ = ["deform_conv2d"]

# Largest sampled-column buffer (elements) built at once; more images, or more output rows of one image, are
# processed in chunks. Why this small (16 MiB in float32): a fresh buffer of tens of MB is mapped anew by the
# allocator on every call and faulting it in cost a dense 256-channel 64x64 layer a fifth of its time; buffers
# this size are reused. On a GPU (torch's caching allocator reuses memory, and each band costs kernel launches)
# the budget stays at 256 MiB, as it was.
_MAX_COLUMN_ELEMENTS = 1 << 22
_MAX_COLUMN_ELEMENTS_GPU = 1 << 26


def _bilinear_taps(offset: torch.Tensor, mask: Optional[torch.Tensor], height: int, width: int,
                   kernel: Sequence[int], stride: Sequence[int], padding: Sequence[int],
                   dilation: Sequence[int], first_row: int = 0):
    """Table rows and weights of the four bilinear neighbours of every deformed sample.

    ``offset`` and ``mask`` may hold a band of output rows starting at row ``first_row``.

    Returns ``(index, weight)``, both of shape (N, oH*oW, kH*kW, G, 4): (image, output pixel, kernel point,
    offset group, corner).
    ``index`` is a row of the channels-last table built by :func:`_channels_last_table`; a neighbour outside
    the image gets weight 0 (and a clamped, harmless index). The mask is folded into the weights.
    """
    n, _, oh, ow = offset.shape
    kh, kw = kernel
    k = kh * kw
    groups = offset.shape[1] // (2 * k)
    dtype, device = offset.dtype, offset.device

    ky = torch.arange(kh, device=device, dtype=dtype) * dilation[0]
    kx = torch.arange(kw, device=device, dtype=dtype) * dilation[1]
    oy = torch.arange(first_row, first_row + oh, device=device, dtype=dtype) * stride[0] - padding[0]
    ox = torch.arange(ow, device=device, dtype=dtype) * stride[1] - padding[1]
    # (oH, oW, kH, kW, 1): the undeformed sampling grid
    base_y = (oy.view(oh, 1, 1, 1) + ky.view(1, 1, kh, 1)).expand(oh, ow, kh, kw).reshape(1, oh * ow, k, 1)
    base_x = (ox.view(1, ow, 1, 1) + kx.view(1, 1, 1, kw)).expand(oh, ow, kh, kw).reshape(1, oh * ow, k, 1)

    # offset (N, G*K*2, oH, oW) -> (N, oH*oW, K, G, 2); reshape, not view: the backward re-runs this on the caller's
    # own offset and mask, whose rows may not merge into one axis (a slice along the width, transposed strides)
    off = offset.reshape(n, groups, k, 2, oh * ow).permute(0, 4, 2, 1, 3)
    py = base_y + off[..., 0]
    px = base_x + off[..., 1]
    # A NaN or infinite offset samples nothing (as in the kernels, ONNX Runtime and the ONNX reference): move the
    # position to -2, where all four neighbours are outside, so floor, the weights and the indices stay finite.
    finite = torch.isfinite(py) & torch.isfinite(px)
    py = torch.where(finite, py, -2.0)
    px = torch.where(finite, px, -2.0)
    y0 = torch.floor(py)
    x0 = torch.floor(px)
    ly, lx = py - y0, px - x0
    # Per-axis weights of the two neighbours, zero where that neighbour is outside the image; the four corner
    # weights are their products. (Built per axis, not per corner: 4x fewer elementwise passes.)
    wy0 = (1 - ly) * ((y0 >= 0) & (y0 <= height - 1))
    wy1 = ly * ((y0 >= -1) & (y0 <= height - 2))
    wx0 = (1 - lx) * ((x0 >= 0) & (x0 <= width - 1))
    wx1 = lx * ((x0 >= -1) & (x0 <= width - 2))
    if mask is not None:
        modulation = mask.reshape(n, groups, k, oh * ow).permute(0, 3, 2, 1)
        wy0, wy1 = wy0 * modulation, wy1 * modulation
    weight = torch.stack((wy0 * wx0, wy0 * wx1, wy1 * wx0, wy1 * wx1), dim=-1)

    # Clamping keeps the (zero-weighted) index of an outside neighbour inside the table, and far-off samples
    # away from integer overflow. Each (image, offset group) owns height*width consecutive rows of the table.
    plane = (torch.arange(n, device=device).view(n, 1, 1, 1) * groups
             + torch.arange(groups, device=device).view(1, 1, 1, groups)) * (height * width)
    row0 = y0.clamp(0, height - 1).long() * width + plane
    row1 = (y0 + 1).clamp(0, height - 1).long() * width + plane
    col0 = x0.clamp(0, width - 1).long()
    col1 = (x0 + 1).clamp(0, width - 1).long()
    index = torch.stack((row0 + col0, row0 + col1, row1 + col0, row1 + col1), dim=-1)
    return index, weight


def _channels_last_table(input: torch.Tensor, groups: int) -> torch.Tensor:
    """(N, C, H, W) -> (N*groups*H*W, C/groups): one row of channels per pixel of each (image, offset group)."""
    n, c, h, w = input.shape
    # .contiguous(): with N = groups = 1 a reshape alone would return a column-major view, which embedding_bag
    # handles an order of magnitude slower
    table = input.reshape(n, groups, c // groups, h * w).permute(0, 1, 3, 2).contiguous()
    # .view(-1).unsqueeze(1): one channel per group leaves the size-1 column a stride from the input's layout, and
    # embedding_bag's sums then depend on it (by an ulp): the same strides whatever the input's memory format
    return table.view(-1).unsqueeze(1) if c == groups else table.view(n * groups * h * w, c // groups)


def _sample_columns(table: torch.Tensor, image_size: Sequence[int], offset: torch.Tensor,
                    mask: Optional[torch.Tensor], kernel: Sequence[int], stride: Sequence[int],
                    padding: Sequence[int], dilation: Sequence[int], first_row: int = 0) -> torch.Tensor:
    """Bilinear samples at every deformed kernel point of a band of output rows, times the mask: (N, L, kH*kW, C).

    ``table``: :func:`_channels_last_table` of the N images (height, width = ``image_size``); ``offset`` and
    ``mask`` hold the band's L = rows * oW output pixels, from output row ``first_row``. Sampling is one weighted
    ``embedding_bag`` over the table (four rows per sample), a fused, vectorised and differentiable gather that
    never materialises the four neighbours separately.
    """
    n = offset.shape[0]
    k = kernel[0] * kernel[1]
    groups = offset.shape[1] // (2 * k)
    length = offset.shape[2] * offset.shape[3]
    index, weight = _bilinear_taps(offset, mask, image_size[0], image_size[1], kernel, stride, padding, dilation,
                                   first_row)
    bags = torch.arange(0, index.numel(), 4, device=offset.device)
    samples = F.embedding_bag(index.reshape(-1), table, bags, mode="sum", per_sample_weights=weight.reshape(-1))
    # rows are ordered (n, pixel, kernel point, offset group): channel g*C/G + c' lands at position g*C/G + c'
    return samples.view(n, length, k, groups * table.shape[1])


def dense_weight_matrix(weight: torch.Tensor) -> torch.Tensor:
    """(oC, C, kH, kW) -> (oC, kH*kW*C): a dense layer's weights in the columns' (kernel point, channel) order,
    the order of :func:`_sample_columns` and of the host library's ``dcn_deform_conv2d_columns_cpu``."""
    oc, c = weight.shape[0], weight.shape[1]
    k = weight.shape[2] * weight.shape[3]
    return weight.reshape(oc, c, k).transpose(1, 2).reshape(oc, k * c)


def onednn_columns_product(t: torch.Tensor) -> bool:
    """Whether a dense layer's columns like ``t`` are multiplied as a oneDNN convolution (:func:`multiply_column_rows`):
    float32 on the CPU, torch's oneDNN enabled. There oneDNN's convolution ran 2.3x torch's matrix product on an
    AVX-512 AMD EPYC, where MKL keeps to its AVX2 code (benchmarks/RESULTS.md, 2026-11-26)."""
    return (t.device.type == "cpu" and t.dtype == torch.float32 and torch.backends.mkldnn.is_available()
            and torch.backends.mkldnn.enabled)


def columns_kernel(weight: torch.Tensor) -> torch.Tensor:
    """A dense layer's weights (oC, C, kH, kW) as the (oC, C, 1, K) kernel of :func:`multiply_column_rows`, in the
    columns' kernel-point order, channels-last (oneDNN's layout)."""
    oc, c = weight.shape[0], weight.shape[1]
    return weight.reshape(oc, c, -1).unsqueeze(2).contiguous(memory_format=torch.channels_last)


def multiply_column_rows(columns: torch.Tensor, kernel: torch.Tensor, row_width: int) -> torch.Tensor:
    """Columns (n, L, K, C) of whole output rows of ``row_width`` pixels times the weights, as a convolution: the
    columns are a channels-last image of (rows, row_width * K) pixels of C channels, and ``kernel``
    (:func:`columns_kernel`), of stride (1, K), is the product. Returns (n, oC, rows, row_width), channels-last."""
    n, length, k, c = columns.shape
    image = columns.view(n, length // row_width, row_width * k, c).permute(0, 3, 1, 2)  # NCHW view of NHWC memory
    return torch.nn.functional.conv2d(image, kernel, stride=(1, k))


def _contract_columns(columns: torch.Tensor, weight: torch.Tensor, groups: int, row_width: int) -> torch.Tensor:
    """The convolution's weighted sum over (kernel point, channel): columns (n, L, K, C) -> (n, oC, L), contiguous;
    L is whole output rows of ``row_width`` pixels."""
    n, length, k, c = columns.shape
    oc, c_per_group = weight.shape[0], weight.shape[1]
    if groups == 1 and onednn_columns_product(columns):
        return multiply_column_rows(columns, columns_kernel(weight), row_width).contiguous().view(n, oc, length)
    if groups == 1:
        # (oC, C, kH, kW) -> (oC, K*C), matching the (kernel point, channel) order of the columns; the transposed
        # columns go to the matrix product as they are, so the result comes out NCHW-contiguous with no copy
        return torch.matmul(dense_weight_matrix(weight), columns.view(n, length, k * c).transpose(1, 2))
    per_group = oc // groups
    if c_per_group == 1:
        # depth-wise (channel multiplier per_group): a weighted sum over kernel points, no matrix product
        weight_k = weight.reshape(c, per_group, k)
        outs = []
        for j in range(per_group):
            # (n, L, C), one fused multiply-add per kernel point: no (n, L, K, C) temporary
            acc = columns[:, :, 0] * weight_k[:, j, 0]
            for point in range(1, k):
                acc = torch.addcmul(acc, columns[:, :, point], weight_k[:, j, point])
            outs.append(acc)
        return torch.stack(outs, dim=-1).view(n, length, oc).transpose(1, 2).contiguous()
    # grouped: for each kernel point, one batched product over the groups read straight from strided views of
    # the columns, out[g] += columns[:, :, point, g] @ W[g, :, :, point]; no permuted copy of the columns
    # (a copy that put the groups outermost cost 3x the products)
    grouped = columns.view(n * length, k, groups, c_per_group)
    weight_k = weight.reshape(groups, per_group, c_per_group, k).permute(3, 0, 2, 1)  # (K, groups, C/g, oC/g)
    out = torch.bmm(grouped[:, 0].transpose(0, 1), weight_k[0])  # (groups, n*L, oC/groups)
    for point in range(1, k):
        out = torch.baddbmm(out, grouped[:, point].transpose(0, 1), weight_k[point])
    return out.view(groups, n, length, per_group).permute(1, 0, 3, 2).contiguous().view(n, oc, length)


def _forward_composite(input: torch.Tensor, offset: torch.Tensor, weight: torch.Tensor,
                       bias: Optional[torch.Tensor], mask: Optional[torch.Tensor],
                       stride: Sequence[int], padding: Sequence[int], dilation: Sequence[int]) -> torch.Tensor:
    """Deformable convolution from differentiable torch ops, in the inputs' own dtype."""
    n, c, h, w = input.shape
    oc, c_per_group, kh, kw = weight.shape
    k = kh * kw
    groups = c // c_per_group
    offset_groups = offset.shape[1] // (2 * k)
    oh, ow = offset.shape[2], offset.shape[3]
    per_row = max(1, c * k * ow)  # column elements of one output row of one image
    budget = _MAX_COLUMN_ELEMENTS if input.device.type == "cpu" else _MAX_COLUMN_ELEMENTS_GPU
    images = max(1, budget // (per_row * oh))
    rows = oh if images > 1 else max(1, min(oh, budget // per_row))
    outputs = []
    for start in range(0, n, images):
        stop = min(n, start + images)
        table = _channels_last_table(input[start:stop], offset_groups)
        bands = []
        for top in range(0, oh, rows):
            bottom = min(oh, top + rows)
            columns = _sample_columns(table, (h, w), offset[start:stop, :, top:bottom],
                                      None if mask is None else mask[start:stop, :, top:bottom], (kh, kw), stride,
                                      padding, dilation, first_row=top)
            bands.append(_contract_columns(columns, weight, groups, ow))  # (images, oC, band rows * oW)
        band = bands[0] if len(bands) == 1 else torch.cat(bands, dim=2)
        outputs.append(band.view(stop - start, oc, oh, ow))
    out = outputs[0] if len(outputs) == 1 else torch.cat(outputs)
    if bias is not None:
        out = out + bias.view(1, oc, 1, 1)
    return out


def _upcast(t: Optional[torch.Tensor], dtype: torch.dtype) -> Optional[torch.Tensor]:
    return None if t is None else t.to(dtype)


def _output_memory_format(input: torch.Tensor) -> torch.memory_format:
    """The op's output memory format, as torch's convolutions choose it: channels-last where the input is
    channels-last (and not also plainly contiguous, as when C or H*W is 1), else contiguous. The real op and its
    fake (which torch.compile plans strides by) both follow it."""
    return torch.channels_last if channels_last_only(input) else torch.contiguous_format


def _output_shape(input: torch.Tensor, weight: torch.Tensor, stride, padding, dilation):
    out_h = conv_output_size(input.shape[2], weight.shape[2], stride[0], padding[0], padding[0], dilation[0])
    out_w = conv_output_size(input.shape[3], weight.shape[3], stride[1], padding[1], padding[1], dilation[1])
    return (input.shape[0], weight.shape[0], out_h, out_w)


@torch.library.custom_op("dcn_deploy::deform_conv2d", mutates_args=())
def _deform_conv2d_op(input: torch.Tensor, offset: torch.Tensor, weight: torch.Tensor,
                      bias: Optional[torch.Tensor], mask: Optional[torch.Tensor],
                      stride: Sequence[int], padding: Sequence[int], dilation: Sequence[int]) -> torch.Tensor:
    compute = compute_dtype(input.dtype)
    memory_format = _output_memory_format(input)
    if input.shape[0] == 0:
        return torch.empty(_output_shape(input, weight, stride, padding, dilation), dtype=input.dtype,
                           device=input.device, memory_format=memory_format)  # no elements to fill
    kernels = native_paths.cuda_library_for(input)
    if kernels is not None:  # every dtype as it is: the kernels sum half types in float32
        with torch.no_grad():
            out = native_paths.forward_cuda(kernels, input, offset.contiguous(), weight, bias, mask, stride, padding,
                                            dilation, channels_last=memory_format == torch.channels_last)
        if out is not None:
            return out.contiguous(memory_format=memory_format)
    with torch.no_grad():
        x = input.to(compute)  # channels-last stays so: the dense CPU forward and the composite read it in place
        args = (x if memory_format == torch.channels_last else x.contiguous(), offset.to(compute).contiguous(),
                weight.to(compute), _upcast(bias, compute), _upcast(mask, compute), stride, padding, dilation)
        host = native_paths.cpu_library_for(args[0])
        out = native_paths.forward_cpu(host, *args) if host is not None else _forward_composite(*args)
    return out.to(input.dtype).contiguous(memory_format=memory_format)


@_deform_conv2d_op.register_fake
def _deform_conv2d_fake(input, offset, weight, bias, mask, stride, padding, dilation):
    return torch.empty(_output_shape(input, weight, stride, padding, dilation), dtype=input.dtype,
                       device=input.device, memory_format=_output_memory_format(input))


def _setup_context(ctx, inputs, output):
    input, offset, weight, bias, mask, stride, padding, dilation = inputs
    ctx.save_for_backward(input, offset, weight, bias, mask)
    ctx.conv_args = (stride, padding, dilation)


def _backward(ctx, grad_output):
    # Gradients by re-running the differentiable composite: the same arithmetic as the forward, so the
    # gradients are exactly those of the function the forward computes.
    if any(ctx.needs_input_grad[:5]):
        refuse_double_backward("deform_conv2d")
    input, offset, weight, bias, mask = ctx.saved_tensors
    stride, padding, dilation = ctx.conv_args
    compute = compute_dtype(input.dtype)
    originals = (input, offset, weight, bias, mask)
    leaves = [None if t is None else t.detach().to(compute).requires_grad_(needs)
              for t, needs in zip(originals, ctx.needs_input_grad[:5])]
    wanted = [t for t in leaves if t is not None and t.requires_grad]
    grads = [None] * 5
    if wanted and input.shape[0] > 0:
        with torch.enable_grad(), autocast_off(input.device.type):
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
register_float32_autocast(_deform_conv2d_op)


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
        in the input's dtype; float16/bfloat16 are summed in float32 (on a GPU, the CUDA kernels' GEMM path
        rounds the sampled values to the half type before its product, as a half-precision convolution does).
        Under ``torch.autocast`` the tensors may mix float32 and the half types: all are computed in float32
        and the result is in the input's dtype (torchvision's rule).

    Autodiff: ``backward()``/``torch.autograd.grad`` (first order) and ``torch.func.vmap``; forward mode
    (``torch.func.jvp``, ``torch.autograd.forward_ad``) and ``torch.func.grad``/``vjp``/``jacrev`` raise.

    Raises:
        ShapeError (a ValueError) naming the argument whose shape or value does not fit; TypeError for a
        non-tensor, an unsupported dtype or mixed dtypes (outside autocast); ValueError for tensors on different
        devices; RuntimeError for an unsupported autodiff transform (above);
        :class:`dcn_deploy.plugin.native.NativeError` when the CUDA kernels fail on a device they ran on before.
    """
    (input, offset, weight, bias, mask), result_dtype = checked_arguments(  # under autocast: float32, as torchvision
        "deform_conv2d", {"input": input, "offset": offset, "weight": weight, "bias": bias, "mask": mask})
    stride_hw = as_pair(stride, "stride", 1)
    padding_hw = as_pair(padding, "padding", 0)
    dilation_hw = as_pair(dilation, "dilation", 1)
    if has_concrete_shapes(input, offset, weight, bias, mask):
        deform_conv_spec(input.shape, offset.shape, weight.shape,
                         None if bias is None else bias.shape, None if mask is None else mask.shape,
                         stride_hw, padding_hw, dilation_hw)
    elif input.dim() != 4 or offset.dim() != 4 or weight.dim() != 4:
        raise ShapeError("input, offset and weight must be 4-D (NCHW)")
    return call_in_float32(lambda: _deform_conv2d_op(input, offset, weight, bias, mask, list(stride_hw),
                                                     list(padding_hw), list(dilation_hw)), input, result_dtype)


# torch.jit.script(deform_conv2d): one clear error
deform_conv2d.__prepare_scriptable__ = refuse_torchscript("deform_conv2d")
