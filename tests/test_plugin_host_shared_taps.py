"""The channels-last direct kernel's shared-taps blocks (plugins/deform_conv/deformConvDirectSharedTaps.h) on the host
build, through the C ABI (DCN_FORWARD_SHARED_TAPS): a block of 32 pixels x 8 channel vectors (items) of a depth-wise
or small-group layer computes its taps and its weights once into tables, then each thread runs its item from them.
The host fills the tables by the GPU threads' shares, over NaN, then runs the 256 threads' items, so a missed entry or
a thread mapped to the wrong item shows. Without FMA contraction on the host, the sums are bit for bit those of the
per-item kernel (and so of the NCHW direct kernel), which is what these tests hold them to; float64 is also checked
against the reference."""
from __future__ import annotations

import random

import pytest
import torch

from dcn_deploy.plugin.native import NativeError, NativeLibrary, deform_conv2d_host
from plugin_configs import (Case, VECTOR_CHANNELS, make_tensors, max_relative_error, random_shared_taps_case,
                            reference, shared_taps_takes)

DTYPES = [torch.float64, torch.float32, torch.float16, torch.bfloat16]


@pytest.fixture(scope="module")
def host_lib(host_library_path) -> NativeLibrary:
    return NativeLibrary(host_library_path)


def run(host_lib, case, x, off, w, b, m, *, path="direct-channels-last", **options):
    return deform_conv2d_host(x, off, w, b, stride=case.stride, padding=case.pads, dilation=case.dilation, mask=m,
                              path=path, library=host_lib, **options)


def check_against_per_item(host_lib, case, dtype, seed, budget=0):
    """Shared taps against the per-item kernel and the NCHW direct kernel, bit for bit, on NCHW tensors (under
    `budget`) and on channels-last ones; float64 against the reference too."""
    tensors = make_tensors(case, dtype, seed=seed)
    shared = run(host_lib, case, *tensors, shared_taps=True, column_budget_bytes=budget)
    per_item = run(host_lib, case, *tensors, column_budget_bytes=budget)
    assert shared.dtype == dtype and torch.equal(shared, per_item), case
    assert torch.equal(shared, run(host_lib, case, *tensors, path="direct")), case
    if dtype == torch.float64:
        assert max_relative_error(shared, reference(case, *tensors)) < 1e-12, case
    tensors_last = (tensors[0].contiguous(memory_format=torch.channels_last),) + tuple(tensors[1:])
    on_tensors = run(host_lib, case, *tensors_last, shared_taps=True, channels_last=True)
    assert on_tensors.is_contiguous(memory_format=torch.channels_last) and torch.equal(on_tensors, per_item), case


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("seed", range(12))
def test_shared_taps_match_the_per_item_kernel(host_lib, dtype, seed):
    """Random layers the kernel takes (depth-wise, groups of 2 to 8 channels within an item, or a wide item's group;
    one or two offset groups of one or two blocks of items; images of one pixel block or several, the last cut
    short; far offsets; every kernel shape to 3x3, per-axis stride, padding and dilation; batch up to 3)."""
    case = random_shared_taps_case(random.Random(3100 + seed), dtype)
    assert shared_taps_takes(case, dtype)
    check_against_per_item(host_lib, case, dtype, seed)


def _depthwise(channels, offset_groups, height, width, kernel, stride=(1, 1), pads=(1, 1, 1, 1), dilation=(1, 1),
               batch=1, offset_scale=2.0, integer_offsets=False, with_mask=True, with_bias=True, per_group=1):
    """A layer of `per_group` channels per group in and out (depth-wise by default)."""
    return Case(batch, channels // per_group, offset_groups, channels, channels, height, width, kernel, stride, pads,
                dilation, with_mask, with_bias, offset_scale, integer_offsets)


# One edge each: a single row (two pixel blocks, the second cut short), a single column, fewer pixels than a block,
# offsets of 25 pixels (most samples off the image), integer offsets (samples on pixels and on the border), a 5x4
# kernel (20 kernel points in the tables, 42.5 KiB depth-wise in float64) with dilation 2, a 1x1 kernel, no mask and
# no bias, three images.
_EDGES = {
    "one row": lambda c, g: _depthwise(c, 1, 1, 45, (1, 3), pads=(0, 1, 0, 1), per_group=g),
    "one column": lambda c, g: _depthwise(c, 2, 40, 1, (3, 1), stride=(2, 1), pads=(2, 0, 1, 0), per_group=g),
    "under a block": lambda c, g: _depthwise(c, 1, 3, 5, (2, 3), pads=(0, 2, 1, 0), per_group=g),
    "far offsets": lambda c, g: _depthwise(c, 2, 7, 9, (3, 3), offset_scale=25.0, per_group=g),
    "integer offsets": lambda c, g: _depthwise(c, 1, 6, 7, (3, 2), pads=(1, 0, 1, 1), integer_offsets=True,
                                               per_group=g),
    "5x4, dilation 2": lambda c, g: _depthwise(c, 1, 9, 11, (5, 4), dilation=(2, 2), pads=(4, 3, 4, 3), per_group=g),
    "1x1, no mask, no bias": lambda c, g: _depthwise(c, 2, 5, 8, (1, 1), pads=(0, 0, 0, 0), with_mask=False,
                                                     with_bias=False, per_group=g),
    "three images": lambda c, g: _depthwise(c, 1, 6, 13, (3, 3), stride=(2, 1), dilation=(1, 2), batch=3,
                                            per_group=g),
}
# Channel structures, each as (channels per group, channels per item): depth-wise; groups of 2 (several an item);
# groups of a vector (one an item); groups of two vectors (a wide item: float32 groups of 8, float64 groups of 4;
# the half types' groups of 16 would need 72 KiB of weights at 3x3); groups of four vectors (64-byte wide items:
# float32 groups of 16, float64 groups of 8; past 16 channels in the half types, which the kernel does not take),
# whose weights fit the tables only for kernels of few points (1x1, 1x3, 3x1).
_STRUCTURES = {"depthwise": lambda vector: (1, vector), "groups of 2": lambda vector: (2, vector),
               "a vector's group": lambda vector: (vector, vector),
               "wide items": lambda vector: (2 * vector, 2 * vector),
               "64-byte wide items": lambda vector: (4 * vector, 4 * vector)}


@pytest.mark.parametrize("dtype, structure", [(dtype, structure) for dtype in DTYPES for structure in _STRUCTURES
                                              if _STRUCTURES[structure](VECTOR_CHANNELS[dtype])[0] <= 16])
@pytest.mark.parametrize("edge", list(_EDGES))
def test_shared_taps_at_the_edges(host_lib, dtype, structure, edge):
    per_group, item = _STRUCTURES[structure](VECTOR_CHANNELS[dtype])
    case = _EDGES[edge](2 * 8 * item, per_group)  # two offset groups of a block each, or one of two blocks
    if not shared_taps_takes(case, dtype):  # only where the weights pass the tables' 48 KiB: refused, saying so
        assert (edge == "5x4, dilation 2" or (structure == "wide items" and dtype.itemsize == 2)
                or (structure == "64-byte wide items" and case.kernel[0] * case.kernel[1] > 3)), case
        with pytest.raises(NativeError, match="keeps a block's taps and weights in 49152 bytes"):
            run(host_lib, case, *make_tensors(case, dtype), shared_taps=True)
        return
    check_against_per_item(host_lib, case, dtype, seed=len(edge))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_shared_taps_in_chunks_of_images(host_lib, dtype):
    """Under budgets of about one image and of two, the input is transposed in chunks: each chunk's blocks read
    their own images' offsets and masks and write their own outputs (n0 + image)."""
    case = _EDGES["three images"](8 * VECTOR_CHANNELS[dtype], 1)
    image = case.in_channels * case.height * case.width * torch.empty((), dtype=dtype).element_size()
    for budget in (image, 2 * image):
        check_against_per_item(host_lib, case, dtype, seed=3, budget=budget)


def test_shared_taps_refuse_other_layers(host_lib):
    """Asked for explicitly, the host entry refuses, naming why, the layers the kernel does not take: one the
    channels-last direct kernel does not take (more output than input channels per group), offset groups of fewer
    channels than a block (8 items), and tables past 48 KiB (7x7 in float32: taps of 49 kernel points x 32 pixels x
    48 bytes, weights of 49 x 32 channels x 4 bytes; groups of 16 in float16 at 3x3: 9 x 128 channels x 16 x 4 bytes
    of weights). The CUDA launch runs the per-item kernels on them instead."""
    for layer, dtype, why in (
            (Case(1, 16, 1, 64, 128, 6, 6, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), True, True, 1.0), torch.float16,
             "as many output as input channels per group"),
            (Case(1, 8, 1, 128, 128, 6, 6, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), True, True, 1.0), torch.float16,
             "keeps a block's taps and weights in 49152 bytes, and this layer's 9 kernel points need 87552"),
            (_depthwise(64, 2, 6, 6, (3, 3)), torch.float16,
             "needs offset groups of a multiple of 64 channels .8 items of 8., got 32"),
            (_depthwise(32, 1, 12, 12, (7, 7), pads=(3, 3, 3, 3)), torch.float32,
             "keeps a block's taps and weights in 49152 bytes, and this layer's 49 kernel points need 81536"),
            (_depthwise(32, 1, 6, 6, (3, 3)), torch.float16, "needs offset groups of a multiple of 64 channels")):
        assert not shared_taps_takes(layer, dtype)
        with pytest.raises(NativeError, match=why):
            run(host_lib, layer, *make_tensors(layer, dtype, seed=0), shared_taps=True)


@pytest.mark.parametrize("dtype", DTYPES)
def test_which_layers_the_shared_taps_kernel_takes(host_lib, dtype):
    """tests/plugin_configs.py's shared_taps_takes, which the GPU tests use to know where the kernel runs, states
    the library's rule (sharedTapsRefusal): over channel structures and kernel sizes the host entry runs exactly
    where the oracle says (and then agrees with the per-item kernel)."""
    vector = VECTOR_CHANNELS[dtype]
    taken = refused = 0
    for channels in (8 * vector, 16 * vector, 4 * vector, 12 * vector, 2):
        for offset_groups in (1, 2, 4):
            for kernel in ((3, 3), (5, 5), (6, 6), (7, 7), (1, 2)):
                for groups in {channels, channels // 2, channels // 4, channels // vector, channels // 16}:
                    if channels % offset_groups or groups < 1 or channels % groups:
                        continue
                    case = Case(1, groups, offset_groups, channels, channels, 7, 7, kernel, (1, 1), (1, 1, 1, 1),
                                (1, 1), True, True, 2.0)
                    if min(case.out_size) < 1:
                        continue
                    tensors = make_tensors(case, dtype, seed=taken + refused)
                    try:
                        got = run(host_lib, case, *tensors, shared_taps=True)
                    except NativeError as error:
                        assert not shared_taps_takes(case, dtype), (case, error)
                        refused += 1
                        continue
                    assert shared_taps_takes(case, dtype), case
                    assert torch.equal(got, run(host_lib, case, *tensors)), case
                    taken += 1
    assert taken >= 5 and refused >= 50, (taken, refused)  # both answers, often


def test_shared_taps_only_on_the_channels_last_direct_path(host_lib):
    case = _EDGES["under a block"](64, 1)
    with pytest.raises(ValueError, match="shared_taps applies to path='direct-channels-last'"):
        run(host_lib, case, *make_tensors(case, torch.float32), path="gemm", shared_taps=True)
