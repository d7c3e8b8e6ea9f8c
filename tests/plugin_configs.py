"""Random deformable-convolution configurations shared by the host and GPU kernel tests."""
from __future__ import annotations

import dataclasses
import math
import random
from dataclasses import dataclass
from typing import Dict, Tuple

import numpy as np

import torch
import torch.nn.functional as F

from dcn_deploy.ops.deform_conv import deform_conv2d
from dcn_deploy.ops.native_paths import composite_forward
from dcn_deploy.ops.spec import conv_output_size


@dataclass
class Case:
    batch: int
    groups: int
    offset_groups: int
    in_channels: int
    out_channels: int
    height: int
    width: int
    kernel: Tuple[int, int]
    stride: Tuple[int, int]
    pads: Tuple[int, int, int, int]  # top, left, bottom, right
    dilation: Tuple[int, int]
    with_mask: bool
    with_bias: bool
    offset_scale: float
    integer_offsets: bool = False  # round the offsets: samples exactly on pixels and on the border

    @property
    def out_size(self) -> Tuple[int, int]:
        t, l, b, r = self.pads
        return (conv_output_size(self.height, self.kernel[0], self.stride[0], t, b, self.dilation[0]),
                conv_output_size(self.width, self.kernel[1], self.stride[1], l, r, self.dilation[1]))


def random_case(rng: random.Random, max_channels_per_group: int = 3, max_size: int = 9) -> Case:
    """A small random case with a non-empty output: groups, offset groups, asymmetric everything, H or W may be 1."""
    while True:
        groups = rng.choice([1, 1, 2, 3])
        cpg = rng.randint(1, max_channels_per_group)
        in_channels = groups * cpg
        offset_groups = rng.choice([d for d in range(1, in_channels + 1) if in_channels % d == 0])
        case = Case(
            batch=rng.randint(1, 3), groups=groups, offset_groups=offset_groups, in_channels=in_channels,
            out_channels=groups * rng.randint(1, 3),
            height=rng.choice([1, rng.randint(1, max_size)]), width=rng.choice([1, rng.randint(2, max_size)]),
            kernel=(rng.randint(1, 3), rng.randint(1, 3)), stride=(rng.randint(1, 3), rng.randint(1, 3)),
            pads=tuple(rng.randint(0, 2) for _ in range(4)), dilation=(rng.randint(1, 2), rng.randint(1, 2)),
            with_mask=rng.random() < 0.6, with_bias=rng.random() < 0.6,
            # Mostly offsets of a few pixels, sometimes far enough to push every sample off the image.
            offset_scale=rng.choice([0.5, 2.0, 2.0, 25.0]), integer_offsets=rng.random() < 0.2)
        oh, ow = case.out_size
        if oh >= 1 and ow >= 1:
            return case


def random_layer_case(rng: random.Random, groups: int, offset_groups: int, channels_per_group: int,
                      out_channels_per_group: Tuple[int, int], max_height: int, max_width: int,
                      offset_scales: Tuple[float, ...]) -> Case:
    """A random layer with the given channel structure: everything else (batch, sizes, kernel, per-axis stride,
    padding and dilation, mask, bias, offsets) drawn at random, retried until the output is not empty."""
    while True:
        case = Case(batch=rng.randint(1, 3), groups=groups, offset_groups=offset_groups,
                    in_channels=groups * channels_per_group,
                    out_channels=groups * rng.randint(*out_channels_per_group), height=rng.randint(1, max_height),
                    width=rng.randint(1, max_width), kernel=(rng.randint(1, 3), rng.randint(1, 3)),
                    stride=(rng.randint(1, 2), rng.randint(1, 2)), pads=tuple(rng.randint(0, 2) for _ in range(4)),
                    dilation=(rng.randint(1, 2), rng.randint(1, 2)), with_mask=rng.random() < 0.7,
                    with_bias=rng.random() < 0.6, offset_scale=rng.choice(offset_scales),
                    integer_offsets=rng.random() < 0.2)
        if min(case.out_size) >= 1:
            return case


def random_many_groups_case(rng: random.Random) -> Case:
    """A layer with many small groups, for the direct kernel's blocks of 8 output channels (deformConvDirectBlock.h):
    depth-wise, 2 or 3 outputs per group (a block spanning several groups, or ending inside one), groups of 1-3
    channels, offset groups inside a group or spanning several, out_channels not a multiple of 8."""
    groups = rng.choice([5, 8, 12, 19])
    channels_per_group = rng.choice([1, 1, 2, 3])
    in_channels = groups * channels_per_group
    offset_groups = rng.choice([d for d in range(1, in_channels + 1) if in_channels % d == 0])
    return random_layer_case(rng, groups, offset_groups, channels_per_group, (1, 3), 7, 9, (0.5, 2.0, 25.0))


def random_depthwise_case(rng: random.Random) -> Case:
    """A depth-wise layer (groups = C = out_channels) that the channels-last direct kernel takes: C and the channels
    per offset group in vectors of 8, 4 or 2 channels, one or several offset groups."""
    channels = rng.choice([8, 16, 24, 4, 12, 2, 6])
    offset_groups = rng.choice([d for d in range(1, channels + 1) if channels % d == 0 and (channels // d) % 2 == 0])
    return random_layer_case(rng, channels, offset_groups, 1, (1, 1), 9, 11, (0.5, 2.0, 25.0))


def random_small_groups_case(rng: random.Random, max_group: int) -> Case:
    """A grouped layer the channels-last direct kernel takes besides depth-wise ones: 2, 4, 8 or 16 channels per
    group in and out (at most max_group: 64 bytes of the dtype, a wide item past 16), offset groups of whole groups
    (one for all, one per group, or one per few), so that each item holds whole groups."""
    channels_per_group = rng.choice([g for g in (2, 4, 8, 16) if g <= max_group])
    groups = rng.choice([1, 2, 3, 4, 6, 8])
    offset_groups = rng.choice([d for d in range(1, groups + 1) if groups % d == 0])
    return random_layer_case(rng, groups, offset_groups, channels_per_group,
                             (channels_per_group, channels_per_group), 9, 11, (0.5, 2.0, 25.0))


# The channels of 16 bytes in each dtype (the channels-last direct kernel's vector); the groups wider than that which
# it takes as wide items of one group each (two or four 16-byte gathers per neighbour: up to 64 bytes, at most 16
# channels); and the largest group it takes.
VECTOR_CHANNELS = {torch.float64: 2, torch.float32: 4, torch.float16: 8, torch.bfloat16: 8}
WIDE_GROUPS = {dtype: [width * channels for width in (2, 4) if width * channels <= 16]
               for dtype, channels in VECTOR_CHANNELS.items()}
SMALL_GROUP_MAX = {dtype: max(widths) for dtype, widths in WIDE_GROUPS.items()}


def channels_last_direct_item(case: Case, dtype: torch.dtype) -> int:
    """The channels of the channels-last direct kernel's item for the case's layer, by the rule of directItemWidth
    (plugins/deform_conv/deformConvDirectChannelsLast.h): the widest vector of up to 16 bytes dividing C and the
    channels per offset group, or a group wider than that (a power of two of at most 64 bytes and 16 channels,
    within an offset group): a wide item."""
    channels_per_group = case.in_channels // case.groups
    per_offset_group = case.in_channels // case.offset_groups
    vector = next((v for v in (8, 4, 2) if v <= VECTOR_CHANNELS[dtype]
                   and case.in_channels % v == 0 and per_offset_group % v == 0), 1)
    wide = (channels_per_group > vector and channels_per_group & (channels_per_group - 1) == 0
            and channels_per_group <= SMALL_GROUP_MAX[dtype] and per_offset_group % channels_per_group == 0)
    return channels_per_group if wide else vector


def channels_last_direct_takes(case: Case, dtype: torch.dtype) -> bool:
    """Whether the channels-last direct kernel takes the case's (small) layer, by the rule its refusal states
    (directChannelsLastLayoutRefusal): as many output as input channels per group, at most 16; items
    (channels_last_direct_item) of at least 2 channels and whole groups."""
    channels_per_group = case.in_channels // case.groups
    if channels_per_group != case.out_channels // case.groups or channels_per_group > 16:
        return False
    item = channels_last_direct_item(case, dtype)
    return item >= 2 and item % channels_per_group == 0


def auto_takes_channels_last_direct(case: Case, dtype: torch.dtype) -> bool:
    """Whether auto runs the channels-last direct kernel on the case's layer (autoTakesDirectChannelsLast): where
    that kernel takes it, but for dense layers (autoTakesMatrixPath: 8 or more output channels per group, 32 or more
    products per output) of groups of more than 8 channels (the half types' groups of 16), whose GEMM path auto keeps
    (autoKeepsMatrixPathOnWideGroups: it was as fast there on an H100)."""
    channels_per_group = case.in_channels // case.groups
    dense = case.out_channels // case.groups >= 8 and channels_per_group * case.kernel[0] * case.kernel[1] >= 32
    return channels_last_direct_takes(case, dtype) and not (dense and channels_per_group > 8)


def shared_taps_takes(case: Case, dtype: torch.dtype) -> bool:
    """Whether the shared-taps direct kernel (DCN_FORWARD_SHARED_TAPS) takes the case's layer, by the rule its
    refusal states (sharedTapsRefusal, plugins/deform_conv/deformConvDirectSharedTaps.h): a layer the channels-last
    direct kernel takes (depth-wise, or small groups), whose offset groups hold whole blocks of 8 items, with tables
    of at most 48 KiB: the taps (an entry of 48 bytes, 64 in float64, per kernel point and each of a block's 32
    pixels) and the weights (per kernel point, 8 items' channels times the channels per group, in float32, float64
    for float64)."""
    if not channels_last_direct_takes(case, dtype):
        return False
    item = channels_last_direct_item(case, dtype)
    channels_per_group = case.in_channels // case.groups
    entry, acc = (64, 8) if dtype == torch.float64 else (48, 4)
    points = case.kernel[0] * case.kernel[1]
    return ((case.in_channels // case.offset_groups) % (8 * item) == 0
            and points * (32 * entry + 8 * item * channels_per_group * acc) <= 48 * 1024)


def random_shared_taps_case(rng: random.Random, dtype: torch.dtype) -> Case:
    """A layer the shared-taps direct kernel takes: depth-wise, or groups of 2, 4 or 8 channels in and out within a
    vector (8 in the half types only), or one group of two vectors' width (a wide item: float32 groups of 8, float64
    groups of 4; the half types' groups of 16 need more than 48 KiB of weights at 3x3, so not those); one or two
    offset groups of one or two blocks of 8 items each; rows of up to 40 pixels (images of one block of 32 pixels or
    several, the last cut short, or of one row or one column)."""
    vector = VECTOR_CHANNELS[dtype]
    choices = [1] + [g for g in (2, 4, 8) if g <= vector] + ([2 * vector] if dtype.itemsize >= 4 else [])
    channels_per_group = rng.choice(choices)
    item = max(vector, channels_per_group)
    offset_groups = rng.choice([1, 2])
    channels = 8 * item * offset_groups * rng.choice([1, 2])
    return random_layer_case(rng, channels // channels_per_group, offset_groups, channels_per_group,
                             (channels_per_group, channels_per_group), 9, 40, (0.5, 2.0, 25.0))


def group_mma_takes(case: Case, dtype: torch.dtype) -> bool:
    """Whether the tensor-core group kernel (DCN_FORWARD_GROUP_MMA) takes the case's layer, by the rule its refusal
    states (groupMmaRefusal, plugins/deform_conv/deformConvGroupMma.h): float16 or bfloat16, 1, 2, 4, 8, 16 or 32
    channels per group in and out, blocks of 16 channels (32 for groups of 32) within offset groups, for groups of
    16 or fewer a layer the channels-last direct kernel takes, at most 113 kernel points (29 in blocks of 32: its
    shared memory)."""
    channels_per_group = case.in_channels // case.groups
    block = 32 if channels_per_group == 32 else 16
    return (dtype in (torch.float16, torch.bfloat16) and channels_per_group in (1, 2, 4, 8, 16, 32)
            and case.out_channels // case.groups == channels_per_group
            and (case.in_channels // case.offset_groups) % block == 0
            and (block == 32 or channels_last_direct_takes(case, dtype))
            and case.kernel[0] * case.kernel[1] <= (29 if block == 32 else 113))


def random_group_mma_case(rng: random.Random, block_channels: int = 16) -> Case:
    """A layer the tensor-core group kernel takes: 1 to 4 blocks of 16 channels, in groups of 1, 2, 4, 8 or 16
    channels in and out (block_channels=32: blocks of 32, groups of 32), one offset group for all or one per block or
    per few; everything else as random_layer_case draws it, rows of up to 40 pixels (a warp's 32 and more)."""
    blocks = rng.choice([1, 2, 3, 4])
    channels_per_group = 32 if block_channels == 32 else rng.choice([1, 2, 4, 8, 16])
    offset_groups = rng.choice([d for d in range(1, blocks + 1) if blocks % d == 0])
    return random_layer_case(rng, blocks * block_channels // channels_per_group, offset_groups, channels_per_group,
                             (channels_per_group, channels_per_group), 9, 40, (0.5, 2.0, 25.0))


def random_implicit_case(rng: random.Random) -> Case:
    """A layer the implicit-GEMM kernel (algo "implicit") takes (channels per group and per offset group multiples
    of 32): groups and offset groups in every relation (a group holding several offset groups, an offset group
    holding several groups, neither dividing the other), output channels per group from a few to past one 256-row
    block, so every tile height and a second row block are used."""
    groups, offset_groups, cpg = rng.choice([(1, 1, 32), (1, 2, 64), (2, 1, 32), (2, 3, 96), (3, 2, 64), (1, 1, 64),
                                             (3, 1, 32)])
    ocg = rng.choice([(1, 8), (60, 70), (129, 140), (250, 270)])
    cpog = groups * cpg // offset_groups
    # offset groups a group's channels touch (implicitOffsetGroupSpan): the kernel keeps 24 rows of taps at most
    span = (cpog - math.gcd(cpg, cpog) + cpg - 1) // cpog + 1
    while True:
        case = random_layer_case(rng, groups, offset_groups, cpg, ocg, 9, 9, (0.5, 2.0, 25.0))
        if span * case.kernel[0] * case.kernel[1] <= 24:
            return case


def make_tensors(case: Case, dtype: torch.dtype, device: str = "cpu", seed: int = 0):
    """(input, offset, weight, bias, mask) for a case, random with a fixed seed, never all zeros."""
    g = torch.Generator().manual_seed(seed)
    oh, ow = case.out_size
    k = case.kernel[0] * case.kernel[1]
    x = torch.randn(case.batch, case.in_channels, case.height, case.width, generator=g, dtype=torch.float64)
    w = torch.randn(case.out_channels, case.in_channels // case.groups, *case.kernel, generator=g, dtype=torch.float64)
    off = torch.randn(case.batch, 2 * case.offset_groups * k, oh, ow, generator=g, dtype=torch.float64) * case.offset_scale
    if case.integer_offsets:  # samples exactly on pixels and on the image border (-1, H)
        off = off.round()
    b = torch.randn(case.out_channels, generator=g, dtype=torch.float64) if case.with_bias else None
    m = torch.rand(case.batch, case.offset_groups * k, oh, ow, generator=g, dtype=torch.float64) if case.with_mask else None
    cast = lambda t: None if t is None else t.to(dtype=dtype, device=device)  # noqa: E731
    return cast(x), cast(off), cast(w), cast(b), cast(m)


def reference(case: Case, x, off, w, b, m) -> torch.Tensor:
    """dcn_deploy's reference op on its torch composite. Asymmetric padding = zero-padding the input
    (out-of-image samples are zero).

    The op's compiled paths (the host library on the CPU, the CUDA kernels on a GPU) are built from the same
    deformConvMath.h as the kernels under test here, so they are switched off: the reference stays independent of
    the code it checks.
    """
    with composite_forward():
        t, l, bottom, r = case.pads
        if (t, l) == (bottom, r):
            return deform_conv2d(x, off, w, b, stride=case.stride, padding=(t, l), dilation=case.dilation, mask=m)
        padded = F.pad(x, (l, r, t, bottom))
        return deform_conv2d(padded, off, w, b, stride=case.stride, padding=0, dilation=case.dilation, mask=m)


def max_relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """max |a - e| / (max |e| + 1): one number that is meaningful for every dtype."""
    a, e = actual.double().cpu(), expected.double().cpu()
    return float((a - e).abs().max() / (e.abs().max() + 1.0)) if e.numel() else 0.0


def layer_case(rng: random.Random, groups: int, offset_groups: int, channels_per_group: int,
               offset_scale: float, **fixed) -> Case:
    """A random layer (batch 2-3, per-axis kernel/stride/padding/dilation, mask and bias at random) with the given
    channel structure; ``fixed`` overrides fields after the draw. Redrawn until the output is not empty."""
    while True:
        case = Case(batch=rng.randint(2, 3), groups=groups, offset_groups=offset_groups,
                    in_channels=groups * channels_per_group, out_channels=groups * rng.randint(1, 3),
                    height=rng.randint(2, 9), width=rng.randint(2, 9),
                    kernel=(rng.randint(1, 3), rng.randint(1, 3)), stride=(rng.randint(1, 3), rng.randint(1, 3)),
                    pads=tuple(rng.randint(0, 2) for _ in range(4)), dilation=(rng.randint(1, 2), rng.randint(1, 2)),
                    with_mask=rng.random() < 0.6, with_bias=rng.random() < 0.6, offset_scale=offset_scale)
        case = dataclasses.replace(case, **fixed)
        if min(case.out_size) >= 1:
            return case


# One unit of the half type (its epsilon) at the output's largest magnitude: the tolerance for half-precision
# outputs that are accumulated in float32 and rounded once. Implementations measured 0.20-0.57 units on
# half_precision_cases(); one that sums its products in the half type measured 2.1-7.2 units there
# (tests/test_cross_implementation.py keeps that separation checked).
HALF_EPS = {torch.float16: 2.0 ** -10, torch.bfloat16: 2.0 ** -7}


def half_precision_cases() -> Dict[str, Case]:
    """Long reductions (C/group * kH * kW = 144 to 288), where summing in the half type shows."""
    rng = random.Random(7)
    return {
        "dense": layer_case(rng, 1, 2, 16, 1.5, kernel=(3, 3), stride=(1, 2), dilation=(1, 1), pads=(1, 0, 2, 1),
                            height=6, width=7, with_mask=True, with_bias=True),
        "grouped": layer_case(rng, 2, 2, 32, 1.0, kernel=(3, 3), stride=(1, 1), dilation=(2, 1), pads=(2, 1, 2, 1),
                              height=5, width=6, with_mask=False, with_bias=True),
        "height_1": layer_case(rng, 1, 1, 96, 0.5, height=1, kernel=(1, 3), stride=(1, 1), dilation=(1, 1),
                               pads=(0, 1, 0, 1), width=16, with_mask=True, with_bias=False),
    }


def peak_relative_error(got, expected: torch.Tensor) -> float:
    """max |got - expected| / max |expected| (expected must not be all zeros: every case here has signal).
    ``got``: a torch tensor or a numpy array of any float type."""
    got = torch.as_tensor(np.asarray(got, dtype=np.float64)) if not isinstance(got, torch.Tensor) else got.detach()
    got, expected = got.detach().double().cpu(), expected.detach().double().cpu()
    scale = float(expected.abs().max())
    assert scale > 0, "the reference is all zeros: the case checks nothing"
    assert got.shape == expected.shape, (tuple(got.shape), tuple(expected.shape))
    return float((got - expected).abs().max()) / scale
