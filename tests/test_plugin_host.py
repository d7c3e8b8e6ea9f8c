"""The host (CPU) build of the deformable-convolution kernels, through the C ABI, against the reference op.

The host library is compiled from the same per-sample arithmetic (plugins/deform_conv/deformConvMath.h) as the
CUDA kernels, so these tests check the kernels' indexing, sampling and boundary rule on machines without a GPU.
"""
from __future__ import annotations

import ctypes
import dataclasses
import random
import re

import pytest
import torch

from dcn_deploy.ops.spec import ShapeError
from dcn_deploy.plugin.native import (DTYPE_CODES, DeformConvDesc, NativeError, NativeLibrary, deform_conv2d_host)
from plugin_configs import (HALF_EPS, Case, make_tensors, max_relative_error, peak_relative_error, random_case,
                            random_depthwise_case, random_implicit_case, random_layer_case, random_many_groups_case,
                            random_small_groups_case, SMALL_GROUP_MAX, WIDE_GROUPS, channels_last_direct_takes,
                            reference)


@pytest.fixture(scope="module")
def host_lib(host_library_path) -> NativeLibrary:
    return NativeLibrary(host_library_path)


def run_host(host_lib, case, x, off, w, b, m):
    return deform_conv2d_host(x, off, w, b, stride=case.stride, padding=case.pads, dilation=case.dilation, mask=m,
                              library=host_lib)


@pytest.mark.parametrize("seed", range(40))
def test_random_configs_float64_match_reference(host_lib, seed):
    case = random_case(random.Random(seed))
    tensors = make_tensors(case, torch.float64, seed=seed)
    got = run_host(host_lib, case, *tensors)
    expected = reference(case, *tensors)
    assert got.shape == expected.shape, case
    assert max_relative_error(got, expected) < 1e-12, case


@pytest.mark.parametrize("seed", range(100, 115))
def test_random_configs_float32_match_reference(host_lib, seed):
    case = random_case(random.Random(seed), max_channels_per_group=8, max_size=12)
    tensors = make_tensors(case, torch.float32, seed=seed)
    got = run_host(host_lib, case, *tensors)
    assert max_relative_error(got, reference(case, *tensors)) < 2e-6, case


@pytest.mark.parametrize("seed", range(24))
def test_direct_blocks_across_groups_match_reference(host_lib, seed):
    """The direct kernel's item is 8 consecutive output channels: blocks spanning several small groups (each
    output may add only its own group's channels), a last block cut short, offset groups starting mid-block."""
    case = random_many_groups_case(random.Random(900 + seed))
    tensors = make_tensors(case, torch.float64, seed=seed)
    got = run_host(host_lib, case, *tensors)
    assert max_relative_error(got, reference(case, *tensors)) < 1e-12, case


def run_host_direct_channels_last(host_lib, case, x, off, w, b, m, budget=0, channels_last=False):
    return deform_conv2d_host(x, off, w, b, stride=case.stride, padding=case.pads, dilation=case.dilation, mask=m,
                              path="direct-channels-last", column_budget_bytes=budget, channels_last=channels_last,
                              library=host_lib)


# The layers the channels-last direct kernel takes, each from its generator: depth-wise ones (vectors of 8, 4 or 2
# channels, offset groups of one vector or several) and groups of 2, 4, 8 or 16 channels in and out (up to 64 bytes
# of the dtype, wide items past 16; each group's samples times its block of weights from the item's weight table,
# the grouped kernel's shared memory on the GPU).
_CHANNELS_LAST_DIRECT_LAYERS = {
    "depthwise": lambda seed, dtype: random_depthwise_case(random.Random(1300 + seed)),
    "small_groups": lambda seed, dtype: random_small_groups_case(random.Random(1500 + seed), SMALL_GROUP_MAX[dtype]),
}


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("seed", range(10))
@pytest.mark.parametrize("layers", list(_CHANNELS_LAST_DIRECT_LAYERS))
def test_direct_channels_last_matches_the_direct_kernel(host_lib, layers, seed, dtype):
    """The channels-last direct kernel (the GPU's default on the layers it takes) with far offsets. It sums each
    channel in the NCHW direct kernel's order, so on the host (no FMA contraction: no -march) the two are bit for
    bit equal, on NCHW and on channels-last tensors; float64 also agrees with the reference to 1e-12. (On a GPU the
    compiler may contract differently: tests/test_plugin_gpu.py holds the two to the reference's tolerance.)"""
    case = _CHANNELS_LAST_DIRECT_LAYERS[layers](seed, dtype)
    tensors = make_tensors(case, dtype, seed=seed)
    got = run_host_direct_channels_last(host_lib, case, *tensors)
    nchw = run_host(host_lib, case, *tensors)
    assert got.dtype == dtype and torch.equal(got, nchw), case
    if dtype == torch.float64:
        assert max_relative_error(got, reference(case, *tensors)) < 1e-12, case
    # channels-last tensors (DCN_FORWARD_CHANNELS_LAST): read and written where they are, the same sums
    tensors_last = (tensors[0].contiguous(memory_format=torch.channels_last),) + tuple(tensors[1:])
    on_tensors = run_host_direct_channels_last(host_lib, case, *tensors_last, channels_last=True)
    assert on_tensors.is_contiguous(memory_format=torch.channels_last) and torch.equal(on_tensors, nchw), case


# Wide items (a group of 32 or 64 bytes: two or four 16-byte gathers a neighbour), each layer one edge: a row or a
# column of one pixel, far offsets with integer ones (samples on pixels and the border), a non-square kernel with
# asymmetric stride, padding and dilation, several images and offset groups of one group or of two.
_WIDE_ITEM_EDGES = [
    dict(height=1, width=9, kernel=(1, 3), stride=(1, 2), pads=(0, 1, 0, 2), dilation=(1, 1), offset_scale=25.0,
         integer_offsets=False),
    dict(height=7, width=1, kernel=(3, 1), stride=(2, 1), pads=(1, 0, 2, 0), dilation=(2, 1), offset_scale=2.0,
         integer_offsets=True),
    dict(height=6, width=7, kernel=(2, 3), stride=(1, 2), pads=(2, 0, 1, 1), dilation=(1, 2), offset_scale=25.0,
         integer_offsets=False),
]


@pytest.mark.parametrize("dtype, cpg", [(dtype, cpg) for dtype in (torch.float64, torch.float32, torch.float16,
                                                                    torch.bfloat16) for cpg in WIDE_GROUPS[dtype]])
@pytest.mark.parametrize("edge", range(len(_WIDE_ITEM_EDGES)))
@pytest.mark.parametrize("offset_groups", [2, 1])
def test_direct_channels_last_wide_items_at_the_edges(host_lib, dtype, cpg, edge, offset_groups):
    """Groups of 32 bytes (float64 4, float32 8, the half types 16 channels) and of 64 (float64 8, float32 16), two
    groups of them over one or two offset groups, three images: bit for bit the NCHW direct kernel, on NCHW and on
    channels-last tensors; float64 also the reference to 1e-12."""
    case = Case(batch=3, groups=2, offset_groups=offset_groups, in_channels=2 * cpg, out_channels=2 * cpg,
                with_mask=edge != 1, with_bias=edge != 2, **_WIDE_ITEM_EDGES[edge])
    assert min(case.out_size) >= 1
    tensors = make_tensors(case, dtype, seed=40 + edge)
    nchw = run_host(host_lib, case, *tensors)
    assert torch.equal(run_host_direct_channels_last(host_lib, case, *tensors), nchw), case
    tensors_last = (tensors[0].contiguous(memory_format=torch.channels_last),) + tuple(tensors[1:])
    on_tensors = run_host_direct_channels_last(host_lib, case, *tensors_last, channels_last=True)
    assert torch.equal(on_tensors, nchw), case
    if dtype == torch.float64:
        assert max_relative_error(nchw, reference(case, *tensors)) < 1e-12, case


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_direct_channels_last_in_chunks_matches_the_direct_kernel(host_lib, dtype):
    """Under a budget of about one image, then of two, the input is transposed in chunks (3 of 1 image and 2 of
    2 + 1 from 3 images): every chunk's items read their own images (offsets, masks and outputs at n0 + img), and the
    last chunk, cut short, too. Bit for bit the NCHW kernel's result."""
    case = Case(3, 8, 2, 8, 8, 9, 11, (3, 3), (1, 2), (1, 0, 2, 1), (2, 1), True, True, 4.0, False)
    tensors = make_tensors(case, dtype, seed=7)
    image = case.in_channels * case.height * case.width * tensors[0].element_size()
    nchw = run_host(host_lib, case, *tensors)
    for budget in (image, 2 * image, image // 2):  # the last: less than an image still takes one
        assert torch.equal(run_host_direct_channels_last(host_lib, case, *tensors, budget=budget), nchw), budget


def test_direct_channels_last_refuses_other_layers(host_lib):
    """More output than input channels per group, groups past 16 channels or 64 bytes (float64's groups of 16),
    groups split by an item (groups of 12 channels; an offset group inside a group), channels per offset group odd,
    or a weight table past its shared memory: an error naming why, not a wrong result."""
    def case(groups, offset_groups, channels, out_channels, kernel=(3, 3)):
        return Case(1, groups, offset_groups, channels, out_channels, 12, 12, kernel, (1, 1), (1, 1, 1, 1), (1, 1),
                    True, True, 1.0, False)

    for layer, dtype, why in (
            (case(1, 1, 8, 16), torch.float16, "as many output as input channels per group, at most 16 .depth-wise, "
                                              "or small groups., got 8 and 16"),
            (case(1, 1, 32, 32), torch.float16, "at most 16 .depth-wise, or small groups., got 32 and 32"),
            (case(2, 1, 32, 32), torch.float64, "whole groups in each item of 2 channels .16 bytes or fewer, "
                                                "within an offset group, or one group of up to 64 bytes., got 16 "
                                                "channels per group"),
            (case(2, 1, 32, 32, (5, 5)), torch.float32, "keeps a block's weights in 49152 bytes, and this layer's "
                                                        "25 kernel points need 51200"),
            (case(2, 1, 24, 24), torch.float16, "whole groups in each item of 8 channels"),
            (case(2, 4, 8, 8), torch.float16, "whole groups in each item of 2 channels"),
            (case(3, 3, 3, 3), torch.float32, "multiples of 2"),
            (case(2, 1, 16, 16, (11, 11)), torch.float16, "keeps a block's weights in 49152 bytes, and this layer's "
                                                          "121 kernel points need 61952"),
            (case(2, 1, 32, 32, (5, 5)), torch.float16, "keeps a block's weights in 49152 bytes, and this layer's "
                                                        "25 kernel points need 51200")):
        with pytest.raises(NativeError, match=why):
            run_host_direct_channels_last(host_lib, layer, *make_tensors(layer, dtype, seed=0))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16])
def test_which_layers_the_channels_last_direct_kernel_takes(host_lib, dtype):
    """tests/plugin_configs.py's channels_last_direct_takes, which the GPU tests use to know where that kernel runs,
    states the library's rule (directChannelsLastLayoutRefusal): on layers of every channel structure the host
    entry, which refuses what the kernel does not take, runs exactly where the oracle says (and then agrees with the
    NCHW direct kernel)."""
    rng = random.Random(2400)
    structures = [(groups, offset_groups, cpg, ocpg) for groups in (1, 2, 3, 4)
                  for cpg in (1, 2, 3, 4, 6, 8, 12, 16, 32)
                  for ocpg in {cpg, 2 * cpg} for offset_groups in (1, 2, 4, 8)
                  if groups * cpg % offset_groups == 0]
    taken = 0
    for groups, offset_groups, cpg, ocpg in structures:
        case = Case(1, groups, offset_groups, groups * cpg, groups * ocpg, 3, 4, (rng.randint(1, 3), 2), (1, 1),
                    (1, 0, 0, 1), (1, 1), rng.random() < 0.5, rng.random() < 0.5, 2.0, False)
        tensors = make_tensors(case, dtype, seed=taken)
        takes = channels_last_direct_takes(case, dtype)
        try:
            got = run_host_direct_channels_last(host_lib, case, *tensors)
        except NativeError as error:
            assert not takes and "channels-last direct kernel" in str(error), (case, error)
            continue
        assert takes and torch.equal(got, run_host(host_lib, case, *tensors)), case
        taken += 1
    assert 15 <= taken <= len(structures) - 100, (taken, len(structures))  # both answers, often


@pytest.mark.parametrize("dtype,tolerance", [(torch.float16, 2e-3), (torch.bfloat16, 1.6e-2)])
@pytest.mark.parametrize("seed", range(200, 206))
def test_half_types_on_random_small_cases(host_lib, seed, dtype, tolerance):
    # Both sides compute in float32 and round once at the end: the difference is at most about one output ulp. These
    # reductions are short, so a half accumulator would mostly pass here too; the check that tells them apart (long
    # reductions, one unit of the half type) is test_cross_implementation's half test.
    case = random_case(random.Random(seed), max_channels_per_group=8)
    tensors = make_tensors(case, dtype, seed=seed)
    got = run_host(host_lib, case, *tensors)
    assert got.dtype == dtype
    assert max_relative_error(got, reference(case, *tensors)) < tolerance, case


def _vector_friendly_case(rng: random.Random):
    """Channel counts that are multiples of 8 (16-byte vectors for half types), sometimes of 4 or 2 only."""
    groups = rng.choice([1, 1, 2])
    offset_groups = rng.choice([1, 2])
    cpg = rng.choice([8, 8, 4, 2]) * offset_groups * rng.randint(1, 3)
    return random_layer_case(rng, groups, offset_groups, cpg, (1, 5), 9, 9, (0.5, 2.0, 25.0))


def run_host_gemm(host_lib, case, x, off, w, b, m, budget=0, output="auto", sampler="auto", tile_items=0,
                  chunks="even", product="tn", split_k=0, channels_last=False):
    return deform_conv2d_host(x, off, w, b, stride=case.stride, padding=case.pads, dilation=case.dilation, mask=m,
                              path="gemm", column_budget_bytes=budget, gemm_output=output, gemm_sampler=sampler,
                              tile_items=tile_items, gemm_chunks=chunks, gemm_product=product, gemm_split_k=split_k,
                              channels_last=channels_last, library=host_lib)


# How the columns are sampled: tiled (a tile's taps once, then its columns front to back; the default) with tiles
# of one pixel, of a few pixels (a tile crossing images, a last tile cut short) and the default, or one thread per
# channel vector.
SAMPLERS = [("tiled", 1), ("tiled", 60), ("tiled", 0), ("thread", 0)]


@pytest.mark.parametrize("sampler,tile_items", SAMPLERS)
@pytest.mark.parametrize("seed", range(12))
def test_gemm_path_samplers_match_reference(host_lib, seed, sampler, tile_items):
    rng = random.Random(500 + seed)
    case = random_case(rng, max_channels_per_group=6) if seed % 3 == 0 else _vector_friendly_case(rng)
    tensors = make_tensors(case, torch.float64, seed=seed)
    expected = reference(case, *tensors)
    got = run_host_gemm(host_lib, case, *tensors, sampler=sampler, tile_items=tile_items)
    assert max_relative_error(got, expected) < 1e-12, case


# Where the product writes: straight into NCHW, or through the pixel-major scratch and the transpose that adds the
# bias (the default). Each is forced here, on every shape.
GEMM_OUTPUTS = ["direct", "staged"]


@pytest.mark.parametrize("output", GEMM_OUTPUTS)
@pytest.mark.parametrize("seed", range(30))
def test_gemm_path_float64_matches_reference(host_lib, seed, output):
    """The CUDA GEMM path's layouts, per-thread sampling and cuBLAS arguments, run on the host: odd channel
    counts (one channel per thread) and vector-friendly ones (2, 4 or 8 channels per thread)."""
    rng = random.Random(seed)
    case = random_case(rng, max_channels_per_group=6) if seed % 3 == 0 else _vector_friendly_case(rng)
    tensors = make_tensors(case, torch.float64, seed=seed)
    expected = reference(case, *tensors)
    assert max_relative_error(run_host_gemm(host_lib, case, *tensors, output=output), expected) < 1e-12, case


@pytest.mark.parametrize("seed", range(16))
def test_staged_product_as_nn_matches_reference(host_lib, seed):
    """The staged product with the weights re-laid out output channel last ("NN", GemmProduct): grouped layers (one
    batch entry per group, A's stride a group's weights) and odd channel counts, in chunks and pixel slices."""
    rng = random.Random(1200 + seed)
    case = random_case(rng, max_channels_per_group=6) if seed % 3 == 0 else _vector_friendly_case(rng)
    tensors = make_tensors(case, torch.float64, seed=seed)
    expected = reference(case, *tensors)
    budget = rng.choice([0, 1, 20_000])
    got = run_host_gemm(host_lib, case, *tensors, budget=budget, output="staged", product="nn")
    assert max_relative_error(got, expected) < 1e-12, (case, budget)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_staged_product_as_nn_equals_tn_in_each_type(host_lib, dtype):
    """The same sums in the same order either way (the layout moves the weights, not the arithmetic): bit for bit."""
    case = _vector_friendly_case(random.Random(1300))
    tensors = make_tensors(case, dtype, seed=5)
    tn = run_host_gemm(host_lib, case, *tensors, output="staged", product="tn")
    nn = run_host_gemm(host_lib, case, *tensors, output="staged", product="nn")
    assert torch.equal(tn, nn), case


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("seed", range(8))
def test_bias_added_by_the_staged_product_equals_the_other_ways(host_lib, dtype, seed):
    """DCN_DEPLOY_GEMM_BIAS=epilogue's arithmetic (the staged product adds a half type's bias and rounds once into a
    half-width scratch; the transpose only moves it): bit for bit the direct output's and the float staging's, which
    also add the bias to the float32 sum before one rounding; in chunks and pixel slices too. Grouped layers and
    float64 keep the float staging (the option applies to one group of a half type)."""
    rng = random.Random(2400 + seed)
    case = _vector_friendly_case(rng)
    tensors = make_tensors(case, dtype, seed=seed)
    budget = rng.choice([0, 1, 150_000])
    staged = run_host_gemm(host_lib, case, *tensors, budget=budget, output="staged")
    in_product = run_host_gemm(host_lib, case, *tensors, budget=budget, output="staged-bias-in-product")
    assert torch.equal(in_product, staged), (case, budget)
    nn = run_host_gemm(host_lib, case, *tensors, budget=budget, output="staged-bias-in-product", product="nn")
    assert torch.equal(nn, staged), (case, budget)
    if case.groups == 1:
        assert torch.equal(in_product, run_host_gemm(host_lib, case, *tensors, budget=budget, output="direct"))
    tensors64 = make_tensors(case, torch.float64, seed=seed)
    got64 = run_host_gemm(host_lib, case, *tensors64, output="staged-bias-in-product")
    assert max_relative_error(got64, reference(case, *tensors64)) < 1e-12, case


@pytest.mark.parametrize("sampler,tile_items", SAMPLERS)
@pytest.mark.parametrize("output", GEMM_OUTPUTS)
@pytest.mark.parametrize("budget,chunks", [(1, "full"), (150_000, "full"), (500_000, "full"), (1_000_000, "full"),
                                           (150_000, "even"), (1_000_000, "even")])
def test_gemm_path_in_chunks_and_pixel_slices(host_lib, budget, chunks, output, sampler, tile_items):
    """Small column budgets (one image's columns take 384 192 bytes here, its input 42 688, 667 pixels): one image
    in slices of 256 pixels (even: 256, 256, 155), each image transposed alone (budget 1) or three, then two, at a
    time (150 000); one image per chunk (500 000), two images per chunk and a last chunk of one (1 000 000), the
    batch transposed at once; each sampler, with tiles crossing images and cut short at a chunk's end."""
    from plugin_configs import Case

    case = Case(5, 1, 2, 8, 6, 23, 29, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), True, True, 3.0)
    tensors = make_tensors(case, torch.float64, seed=budget)
    expected = reference(case, *tensors)
    got = run_host_gemm(host_lib, case, *tensors, budget=budget, output=output, sampler=sampler,
                        tile_items=tile_items, chunks=chunks)
    assert max_relative_error(got, expected) < 1e-12


@pytest.mark.parametrize("seed", range(24))
def test_channels_last_tensors_match_reference(host_lib, seed):
    """DCN_FORWARD_CHANNELS_LAST on the host: the input read where it is (channels-last), an outside neighbour read
    from the zero vector by a pointer of its own, the product writing the channels-last output. Random layers (odd
    channel counts, groups, offset groups, H or W of 1, offsets far off the image), each sampler, TN and NN
    products, in chunks and pixel slices (small budgets); the output is channels-last in memory."""
    rng = random.Random(2600 + seed)
    case = random_case(rng, max_channels_per_group=6) if seed % 3 == 0 else _vector_friendly_case(rng)
    tensors = make_tensors(case, torch.float64, seed=seed)
    expected = reference(case, *tensors)
    sampler, tile_items = SAMPLERS[seed % len(SAMPLERS)]
    budget = rng.choice([0, 1, 20_000])
    product = "nn" if seed % 2 else "tn"
    got = run_host_gemm(host_lib, case, *tensors, budget=budget, sampler=sampler, tile_items=tile_items,
                        product=product, channels_last=True)
    assert got.is_contiguous(memory_format=torch.channels_last)
    assert max_relative_error(got, expected) < 1e-12, (case, sampler, tile_items, budget, product)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("seed", range(6))
def test_channels_last_tensors_equal_nchw_bit_for_bit(host_lib, dtype, seed):
    """The same samples and the same sums (bias written first, the product added: one rounding), only their places
    differ: bit for bit the staged NCHW output in each type, with and without a bias, and with a half type's bias
    "added by the product" (the same sums on the host); an NCHW input is made channels-last by the binding."""
    rng = random.Random(2700 + seed)
    case = _vector_friendly_case(rng)
    x, off, w, b, m = make_tensors(case, dtype, seed=seed)
    budget = rng.choice([0, 1, 150_000])
    for bias in (b, None):
        staged = run_host_gemm(host_lib, case, x, off, w, bias, m, budget=budget, output="staged")
        channels_last = run_host_gemm(host_lib, case, x.contiguous(memory_format=torch.channels_last), off, w, bias,
                                      m, budget=budget, channels_last=True)
        assert torch.equal(channels_last, staged), (case, budget, bias is None)
        assert torch.equal(run_host_gemm(host_lib, case, x, off, w, bias, m, budget=budget, channels_last=True),
                           staged)
        if dtype != torch.float32:
            in_product = run_host_gemm(host_lib, case, x, off, w, bias, m, budget=budget,
                                       output="staged-bias-in-product", channels_last=True)
            assert torch.equal(in_product, staged), (case, budget, bias is None)


def test_channels_last_tensors_refuse_other_paths_and_outputs(host_lib):
    from plugin_configs import Case

    case = Case(1, 1, 1, 8, 8, 5, 5, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), True, True, 1.0)
    tensors = make_tensors(case, torch.float64, seed=0)
    with pytest.raises(ValueError, match="channels_last applies to path='gemm' and path='direct-channels-last'"):
        deform_conv2d_host(*tensors[:4], padding=1, mask=tensors[4], path="direct", channels_last=True,
                           library=host_lib)
    for output in ("direct", "staged"):
        with pytest.raises(NativeError, match="output_mode with DCN_FORWARD_CHANNELS_LAST must be 0 .the product "
                                              "writes the channels-last output. or 3"):
            run_host_gemm(host_lib, case, *tensors, output=output, channels_last=True)


@pytest.mark.parametrize("path", ["gemm", "direct-channels-last"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16])
def test_channels_last_tensors_misaligned_views(host_lib, path, dtype):
    """A channels-last input that is a view starting one element past an aligned address: the binding runs it on an
    aligned copy (as deform_conv2d_cuda does), and each host entry refuses a misaligned input or output pointer (as
    the CUDA launch does) instead of reading vectors from it (it crashed the process)."""
    depthwise = path == "direct-channels-last"
    case = Case(2, 16 if depthwise else 1, 1, 16, 16 if depthwise else 8, 9, 9, (3, 3), (1, 1), (1, 1, 1, 1),
                (1, 1), True, True, 2.0)
    x, off, w, b, m = make_tensors(case, dtype, seed=0)
    n, c, h, wd = x.shape
    view = torch.zeros(x.numel() + 1, dtype=dtype)[1:].view(n, h, wd, c).permute(0, 3, 1, 2)
    view.copy_(x)
    assert view.is_contiguous(memory_format=torch.channels_last) and view.data_ptr() % 16

    def run(inp):
        return deform_conv2d_host(inp, off, w, b, stride=case.stride, padding=case.pads, dilation=case.dilation,
                                  mask=m, path=path, channels_last=True, library=host_lib)

    assert torch.equal(run(view), run(x))
    desc = DeformConvDesc(n, c, h, wd, case.out_channels, *case.kernel, *case.stride, *case.pads, *case.dilation,
                          case.groups, case.offset_groups)
    extra = ((ctypes.c_size_t(0), ctypes.c_int32(2)) if depthwise
             else (ctypes.c_size_t(0), *[ctypes.c_int32(0)] * 6, ctypes.c_int32(2)))
    entry = "dcn_deform_conv2d_forward_host_" + ("direct_channels_last" if depthwise else "gemm")
    out = torch.empty(n * case.out_channels * h * wd + 1, dtype=dtype)
    for inp, output in ((view, out[:-1]), (x.contiguous(memory_format=torch.channels_last), out[1:])):
        with pytest.raises(NativeError, match="must start 16-byte aligned"):
            host_lib.call(entry, ctypes.byref(desc), DTYPE_CODES[str(dtype)[6:]], inp.data_ptr(), off.data_ptr(),
                          w.data_ptr(), b.data_ptr(), m.data_ptr(), output.data_ptr(), *extra)


def _split_k_case(rng: random.Random, split_k: int, splits: bool):
    """A one-group layer whose K = C * kH*kW is a multiple of split_k * 8 (splits) or not (the plan falls back to 1
    slice): C a multiple of 8 * split_k with a 3x3 kernel, else 8 * split_k + 4 channels."""
    channels = 8 * split_k * rng.randint(1, 2) if splits else 8 * split_k + 4
    return Case(rng.randint(1, 3), 1, rng.choice([1, 2, 4]), channels, rng.randint(3, 40), rng.randint(4, 11),
                rng.randint(4, 11), (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), rng.random() < 0.7, rng.random() < 0.5,
                rng.choice([1.0, 3.0]))


@pytest.mark.parametrize("split_k", [2, 4, 8])
@pytest.mark.parametrize("seed", range(6))
def test_split_k_matches_reference(host_lib, split_k, seed):
    """The staged product in slices of K (GemmOptions::splitK), the slices summed by the transpose, in float64
    against the reference: TN and NN, with and without a bias, whole chunks and pixel slices (small budgets), and
    layers whose K does not allow the split (1 slice)."""
    rng = random.Random(1500 + 10 * split_k + seed)
    case = _split_k_case(rng, split_k, splits=seed % 3 != 2)
    tensors = make_tensors(case, torch.float64, seed=seed)
    expected = reference(case, *tensors)
    budget = rng.choice([0, 1, 20_000])
    product = "nn" if seed % 2 else "tn"
    got = run_host_gemm(host_lib, case, *tensors, budget=budget, output="staged", product=product, split_k=split_k)
    assert max_relative_error(got, expected) < 1e-12, (case, budget, product)


@pytest.mark.parametrize("dtype,tolerance", [(torch.float32, 2e-6), (torch.float16, 4e-3), (torch.bfloat16, 3e-2)])
@pytest.mark.parametrize("split_k", [2, 4, 8])
def test_split_k_in_each_type(host_lib, dtype, tolerance, split_k):
    """Each type, with and without a bias (a half type without one stages accumulators when split, not T): against
    the reference on the same rounded inputs, and as close to the unsplit product as the type's rounding allows."""
    for seed, with_bias in ((0, True), (1, False)):
        case = dataclasses.replace(_split_k_case(random.Random(1600 + seed), split_k, splits=True),
                                   with_bias=with_bias, batch=2)
        tensors = make_tensors(case, dtype, seed=seed)
        expected = reference(case, *[None if t is None else t.double() for t in tensors])
        got = run_host_gemm(host_lib, case, *tensors, output="staged", split_k=split_k)
        single = run_host_gemm(host_lib, case, *tensors, output="staged")
        assert got.dtype == dtype and not got.isnan().any()
        assert max_relative_error(got, expected) < tolerance, (case, split_k)
        assert max_relative_error(got, single.double()) < tolerance, (case, split_k)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("split_k", [2, 4, 8])
def test_split_k_on_channels_last_tensors_equals_the_staged_split(host_lib, dtype, split_k):
    """Channels-last tensors split as the staged product: the slices staged, then summed in slice order with the
    bias straight into the channels-last output. The same sums as the NCHW staged split (bit for bit, in every type,
    with and without a bias, in chunks and pixel slices), and float64 within 1e-12 of the reference; layers whose K
    does not allow the split run unsplit (the product writes the output)."""
    for seed in range(4):
        rng = random.Random(2900 + 10 * split_k + seed)
        case = _split_k_case(rng, split_k, splits=seed != 3)
        tensors = make_tensors(case, dtype, seed=seed)
        budget = rng.choice([0, 1, 20_000])
        staged = run_host_gemm(host_lib, case, *tensors, budget=budget, output="staged", split_k=split_k)
        got = run_host_gemm(host_lib, case, *tensors, budget=budget, split_k=split_k, channels_last=True)
        assert got.is_contiguous(memory_format=torch.channels_last) and torch.equal(got, staged), (case, budget)
        if dtype == torch.float64:
            assert max_relative_error(got, reference(case, *tensors)) < 1e-12, case


def test_auto_split_k_stages_float32_products_of_few_tiles(host_lib):
    """Auto (split_k 0, the CUDA default): a float32 layer of one group with K = C * 9 >= 2048 and few output tiles
    goes staged in 4 slices of K (autoSplitK), even where its rows would go direct; within float32 rounding of the
    reference and of the unsplit direct product. A float64 layer of the same shape is not split (exact to 1e-12)."""
    from plugin_configs import Case

    case = Case(1, 1, 1, 256, 64, 8, 10, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), True, True, 2.0)  # K 2304, 8x10 rows
    tensors = make_tensors(case, torch.float32, seed=7)
    expected = reference(case, *[None if t is None else t.double() for t in tensors])
    auto = run_host_gemm(host_lib, case, *tensors)
    unsplit = run_host_gemm(host_lib, case, *tensors, split_k=1)
    assert max_relative_error(auto, expected) < 2e-6 and max_relative_error(auto, unsplit.double()) < 2e-6
    assert not torch.equal(auto, unsplit)  # summed in another order: the split took effect
    assert torch.equal(auto, run_host_gemm(host_lib, case, *tensors, output="staged", split_k=4))
    # on channels-last tensors auto splits the same layer alike (the slices summed into the output)
    assert torch.equal(auto, run_host_gemm(host_lib, case, *tensors, channels_last=True))
    tensors64 = make_tensors(case, torch.float64, seed=7)
    assert max_relative_error(run_host_gemm(host_lib, case, *tensors64), reference(case, *tensors64)) < 1e-12


@pytest.mark.parametrize("option,match", [
    ({"output": "nchw"}, "gemm_output must be one of auto, direct, staged, staged-bias-in-product, got 'nchw'"),
    ({"sampler": "tile"}, "gemm_sampler must be one of auto, tiled, thread, got 'tile'"),
    ({"tile_items": -3}, "tile_items must be 0 .the default. or positive, got -3"),
    ({"chunks": "half"}, "gemm_chunks must be one of even, full, got 'half'"),
    ({"product": "nt"}, "gemm_product must be one of tn, nn, got 'nt'"),
    ({"split_k": 3}, "gemm_split_k must be one of 0, 1, 2, 4, 8, got 3"),
    ({"split_k": 16}, "gemm_split_k must be one of 0, 1, 2, 4, 8, got 16"),
])
def test_gemm_options_are_checked(host_lib, option, match):
    from plugin_configs import Case

    case = Case(1, 1, 1, 2, 2, 4, 4, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), True, True, 1.0)
    tensors = make_tensors(case, torch.float64, seed=0)
    with pytest.raises(ValueError, match=match):
        run_host_gemm(host_lib, case, *tensors, **option)


@pytest.mark.parametrize("output", GEMM_OUTPUTS)
@pytest.mark.parametrize("dtype,tolerance", [(torch.float32, 2e-6), (torch.float16, 4e-3), (torch.bfloat16, 3e-2)])
@pytest.mark.parametrize("seed", range(6))
def test_gemm_path_dtypes(host_lib, dtype, tolerance, seed, output):
    # Wider vectors than float64 allows (4 float32 or 8 half channels per thread). Half types: samples rounded to
    # the type in the columns (as on the GPU), products summed in float32 (staged: kept in float32 until the bias
    # is added, then rounded once): within one unit of the type at the output's peak. These cases' reductions are
    # short, so a half-type sum would pass too: tests/test_cross_implementation.py's long ones check the sum.
    case = _vector_friendly_case(random.Random(300 + seed))
    tensors = make_tensors(case, dtype, seed=seed)
    got = run_host_gemm(host_lib, case, *tensors, output=output)
    assert got.dtype == dtype
    expected = reference(case, *[None if t is None else t.double() for t in tensors])
    if dtype == torch.float32:
        assert max_relative_error(got, expected) < tolerance, case
    else:
        assert peak_relative_error(got, expected) <= HALF_EPS[dtype], case


@pytest.mark.parametrize("with_bias", [True, False])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("seed", range(4))
def test_half_types_staged_equals_direct_bit_for_bit(host_lib, dtype, seed, with_bias):
    """Both outputs round the same float32 sum (plus the bias) once. Staged holds the sums as float32 with a bias,
    and, without one, as the half type itself (cuBLAS rounds them: half the scratch's bytes): a misplaced element of
    either scratch, or a second rounding, would show as a difference."""
    case = _vector_friendly_case(random.Random(700 + seed))
    x, off, w, b, m = make_tensors(case, dtype, seed=seed)
    if with_bias and b is None:
        b = torch.randn(w.shape[0], dtype=torch.float64).to(dtype)
    b = b if with_bias else None
    staged = run_host_gemm(host_lib, case, x, off, w, b, m, output="staged")
    direct = run_host_gemm(host_lib, case, x, off, w, b, m, output="direct")
    assert torch.equal(staged.view(torch.int16), direct.view(torch.int16)), case
    expected = reference(case, *[None if t is None else t.double() for t in (x, off, w, b, m)])
    assert max_relative_error(staged, expected) < (4e-3 if dtype == torch.float16 else 3e-2), case


def test_dense_layer_with_mask_and_bias(host_lib):
    # A small "real" layer: 3x3, padding 1, 2 offset groups, v2.
    g = torch.Generator().manual_seed(7)
    x = torch.randn(2, 16, 12, 10, generator=g, dtype=torch.float64)
    w = torch.randn(24, 16, 3, 3, generator=g, dtype=torch.float64)
    off = torch.randn(2, 36, 12, 10, generator=g, dtype=torch.float64) * 1.5
    m = torch.rand(2, 18, 12, 10, generator=g, dtype=torch.float64)
    b = torch.randn(24, generator=g, dtype=torch.float64)
    from dcn_deploy.ops.deform_conv import deform_conv2d

    expected = deform_conv2d(x, off, w, b, padding=1, mask=m)
    got = deform_conv2d_host(x, off, w, b, padding=1, mask=m, library=host_lib)
    assert max_relative_error(got, expected) < 1e-12


def test_samples_far_off_the_image_give_the_bias(host_lib):
    # Every sample at least one pixel outside the image: all four neighbours contribute zero.
    x = torch.randn(1, 3, 5, 6, dtype=torch.float64)
    w = torch.randn(4, 3, 3, 3, dtype=torch.float64)
    b = torch.randn(4, dtype=torch.float64)
    off = torch.full((1, 18, 5, 6), 40.0, dtype=torch.float64)
    off[:, 1::2] = -40.0
    got = deform_conv2d_host(x, off, w, b, padding=1, library=host_lib)
    assert torch.equal(got, b.view(1, 4, 1, 1).expand(1, 4, 5, 6))


def test_sample_exactly_on_the_border_keeps_only_inside_neighbours(host_lib):
    # 1x1 kernel, offset dy = H - 1 from row 0 lands on the last row: the value is exactly that pixel.
    x = torch.randn(1, 1, 4, 4, dtype=torch.float64)
    w = torch.ones(1, 1, 1, 1, dtype=torch.float64)
    off = torch.zeros(1, 2, 4, 4, dtype=torch.float64)
    off[0, 0] = 3.0 - torch.arange(4, dtype=torch.float64).view(4, 1)  # every row samples row 3
    got = deform_conv2d_host(x, off, w, library=host_lib)
    assert torch.equal(got[0, 0], x[0, 0, 3].expand(4, 4))
    off[0, 0] += 1.0  # now row 4 == H: outside
    assert torch.count_nonzero(deform_conv2d_host(x, off, w, library=host_lib)) == 0


def test_empty_batch(host_lib):
    x = torch.randn(0, 2, 5, 5)
    out = deform_conv2d_host(x, torch.randn(0, 18, 5, 5), torch.randn(3, 2, 3, 3), padding=1, library=host_lib)
    assert out.shape == (0, 3, 5, 5)


# ---- bad arguments: an error code and a message, never a crash ----

def _desc(**overrides) -> DeformConvDesc:
    values = dict(batch=1, in_channels=4, height=5, width=5, out_channels=4, kernel_h=3, kernel_w=3, stride_h=1,
                  stride_w=1, pad_top=1, pad_left=1, pad_bottom=1, pad_right=1, dilation_h=1, dilation_w=1, group=1,
                  offset_group=1)
    values.update(overrides)
    return DeformConvDesc(**values)


@pytest.mark.parametrize("overrides,fragment", [
    ({"group": 3}, "group"),
    ({"out_channels": 6, "group": 4}, "group"),
    ({"offset_group": 3}, "offset_group"),
    ({"stride_w": 0}, "strides"),
    ({"dilation_h": 0}, "dilations"),
    ({"pad_bottom": -1}, "pads"),
    ({"kernel_h": 9, "pad_top": 0, "pad_bottom": 0}, "empty"),
    ({"height": 0}, "H"),
    ({"batch": -1}, "batch"),
])
def test_invalid_descriptor_returns_error_code_and_message(host_lib, overrides, fragment):
    buf = ctypes.create_string_buffer(4096)
    code = host_lib.lib.dcn_deform_conv2d_forward_host(ctypes.byref(_desc(**overrides)), DTYPE_CODES["float32"],
                                                      buf, buf, buf, None, None, buf)
    assert code == 1
    assert fragment in host_lib.last_error()


def test_null_pointers_and_unknown_dtype_are_rejected(host_lib):
    buf = ctypes.create_string_buffer(4096)
    assert host_lib.lib.dcn_deform_conv2d_forward_host(ctypes.byref(_desc()), 0, None, buf, buf, None, None, buf) == 1
    assert "NULL" in host_lib.last_error()
    assert host_lib.lib.dcn_deform_conv2d_forward_host(None, 0, buf, buf, buf, None, None, buf) == 1
    assert host_lib.lib.dcn_deform_conv2d_forward_host(ctypes.byref(_desc()), 9, buf, buf, buf, None, None, buf) == 2
    assert "dtype" in host_lib.last_error()
    # A later success clears the message.
    assert host_lib.output_size(_desc()) == (5, 5)
    assert host_lib.last_error() == ""


def test_python_front_end_names_the_bad_tensor(host_lib):
    x = torch.randn(1, 4, 5, 5)
    with pytest.raises(ShapeError, match="offset"):
        deform_conv2d_host(x, torch.randn(1, 17, 5, 5), torch.randn(4, 4, 3, 3), padding=1, library=host_lib)
    with pytest.raises(ShapeError, match="asymmetric"):
        deform_conv2d_host(x, torch.randn(1, 18, 5, 5), torch.randn(4, 4, 3, 3), padding=(1, 1, 0, 1),
                           library=host_lib)
    with pytest.raises(TypeError, match="weight"):
        deform_conv2d_host(x, torch.randn(1, 18, 5, 5), torch.randn(4, 4, 3, 3, dtype=torch.float64), padding=1,
                           library=host_lib)


def test_pads_near_int32_max_are_summed_without_wrapping(host_lib):
    """Two pads of 2^31-1 wrapped around in int32 to a sum of -2: a 5-row input with a 1x1 kernel was given 3
    output rows (and the plugin declared a 3-row output). The true extent is refused, as is any padded size the
    kernels' int32 sample positions cannot hold."""
    big = 2**31 - 1
    with pytest.raises(NativeError, match="padded input too large"):
        host_lib.output_size(_desc(kernel_h=1, kernel_w=1, pad_top=big, pad_bottom=big, pad_left=0, pad_right=0))
    with pytest.raises(NativeError, match="padded input too large"):  # one pad: H + pad past int32
        host_lib.output_size(_desc(pad_left=big - 2))
    dims = host_lib.plugin_output_dims([(1, 1, 5, 5), (1, 1, 1, 1), (1, 2, -1, -1)], pads=(big, 0, big, 0))
    assert dims == (1, 1, 5 + 2 * big, 5)


def test_errors_raise_native_error_with_the_library_message(host_lib):
    with pytest.raises(NativeError, match="offset_group"):
        host_lib.output_size(_desc(offset_group=3))


# The CUDA implicit-GEMM kernel (algo "implicit") block by block on the host: its chunks, pixel and taps tables,
# reduction steps, 8-channel gathers and tile rounding, with the tensor cores' products as plain loops. It takes
# layers whose channels per group and per offset group are multiples of 32.
def run_host_implicit(host_lib, case, x, off, w, b, m):
    return deform_conv2d_host(x, off, w, b, stride=case.stride, padding=case.pads, dilation=case.dilation, mask=m,
                              path="implicit", library=host_lib)


@pytest.mark.parametrize("seed", range(16))
def test_implicit_kernel_float64_matches_reference(host_lib, seed):
    case = random_implicit_case(random.Random(900 + seed))
    tensors = make_tensors(case, torch.float64, seed=seed)
    assert max_relative_error(run_host_implicit(host_lib, case, *tensors), reference(case, *tensors)) < 1e-12, case


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("seed", range(4))
def test_implicit_kernel_half_types(host_lib, dtype, seed):
    # As on the GPU: samples rounded to the type in the column tiles, products summed in float32, the bias added
    # before the one rounding of the output: within one unit of the type at the output's peak (HALF_EPS). Summing
    # the products in the type itself measured 0.77-3.98 units on these cases (session 23), this path 0.27-0.44.
    case = random_implicit_case(random.Random(950 + seed))
    tensors = make_tensors(case, dtype, seed=seed)
    got = run_host_implicit(host_lib, case, *tensors)
    assert got.dtype == dtype
    expected = reference(case, *[None if t is None else t.double() for t in tensors])
    assert peak_relative_error(got, expected) <= HALF_EPS[dtype], case


@pytest.mark.parametrize("groups,offset_groups,cpg,fragment", [
    (1, 1, 48, "multiples of 32, got 48 and 48"),
    (1, 2, 32, "multiples of 32, got 32 and 16"),
    (1, 4, 128, "at most 24 (offset groups per group) x (kernel points), got 36"),
])
def test_implicit_kernel_refuses_layers_it_cannot_tile(host_lib, groups, offset_groups, cpg, fragment):
    case = Case(batch=1, groups=groups, offset_groups=offset_groups, in_channels=groups * cpg, out_channels=4,
                height=5, width=6, kernel=(3, 3), stride=(1, 1), pads=(1, 1, 1, 1), dilation=(1, 1), with_mask=True,
                with_bias=True, offset_scale=1.0, integer_offsets=False)
    tensors = make_tensors(case, torch.float32, seed=0)
    with pytest.raises(NativeError, match=re.escape(fragment)):
        run_host_implicit(host_lib, case, *tensors)


def test_implicit_kernel_cuda_source_on_emulated_blocks():
    """The implicit-GEMM kernels' CUDA source itself (deformConvImplicitKernel.cuh, the stepwise kernel, and
    deformConvImplicitSpecialised.cuh, the warp-specialised one), run on the CPU block by block with each block's
    threads as threads at real barriers (named ones too), cp.async copies landing only at their wait, and WMMA as
    plain tile products (plugins/tests/implicitKernelEmulation.cpp): each kernel's shared-memory carve-up, buffers
    and barriers (the specialised kernel's ring: every copy waited for, every named-barrier phase completed, a
    deadlock reported after 60 s), warp layout, epilogue and WMMA alignment rules, every tile height, against the
    float64 reference. (The fragment layout inside a warp and the timing need the GPU: tests/test_plugin_gpu.py.)"""
    from shell_tests import run_shell_test

    output = run_shell_test("dcn_implicit_kernel_emulation", min_checks=39, needs="a C++ compiler and cmake",
                            timeout=300)
    assert "never written" in output and "256-row tiles" in output and "64-row tiles" in output
    assert "specialised, 256-row tiles, 384 threads" in output and "specialised, 64-row tiles" in output


def test_group_mma_kernel_source_on_emulated_blocks():
    """The tensor-core group kernel's CUDA source (deformConvGroupMma.cuh) runs on the CPU block by block
    (plugins/tests/groupMmaEmulation.cpp), its warps' mma.m16n8k16 products by the emulation, fragments laid out as
    PTX documents them: on layers of 16 channels a group (several groups and offset groups, pixels ending inside a
    warp and a block, a row or a column of one pixel, a 2x3 and a 5x5 kernel, far offsets), of 8, 4 and 2 (their
    weights block-diagonal in blocks of 16 channels) and of 32 (blocks of 32: two m16 tiles and two k16 steps; a 5x5
    kernel past the default 48 KiB of shared memory), in float16 and bfloat16, NCHW and channels-last outputs, within
    one rounding of its own rounded samples' sum and within the samples' rounding of the float64 reference; and
    groupMmaRefusal's rule; and with infinite and NaN inputs (groups of 4, 16 and 32) and masks that take float16
    samples past its range (groups of 8 and 32), the same infinities and NaNs as the reference, each in its own group
    (a pixel whose sums come out non-finite taken again by FMAs)."""
    from shell_tests import run_shell_test

    output = run_shell_test("dcn_group_mma_emulation", min_checks=73, needs="a C++ compiler and cmake", timeout=300)
    assert "one column, bfloat16, NHWC out" in output and "5x5, float16, NCHW out" in output
    assert "groups of 2, bfloat16, NCHW out" in output and "groups of 8, float16, NHWC out" in output
    assert "groups of 4, non-finite inputs, float16, NHWC out" in output and "masks of 3e4, float16" in output
    assert "groups of 32, 5x5, bfloat16, NHWC out" in output and "groups of 32, asymmetric, float16" in output
    assert "groups of 32, non-finite inputs, bfloat16" in output and "groups of 32, masks of 3e4, float16" in output


# The group kernel's emulation built under each sanitizer (CMakeLists.txt, dcn_add_sanitized_emulation): its
# negative control's argument and what the sanitizer must say about it.
_SANITIZED_EMULATIONS = {
    "thread": ("dcn_group_mma_emulation_tsan", "--race-control", "WARNING: ThreadSanitizer: data race"),
    "address,undefined": ("dcn_group_mma_emulation_asan", "--overflow-control",
                          "ERROR: AddressSanitizer: heap-buffer-overflow"),
}


@pytest.mark.parametrize("sanitizers", list(_SANITIZED_EMULATIONS))
def test_group_mma_kernel_source_under_sanitizers(sanitizers):
    """The same emulation built with -fsanitize=thread, and with -fsanitize=address,undefined. Under ThreadSanitizer
    every emulated block's threads are real threads at real barriers (the block's, the warp's __syncwarp, each mma's
    exchange), so a shared-memory access that none of them orders against another thread's is reported: what the
    GPU's racecheck would find. Under AddressSanitizer and UBSan a read or write past the kernel's tensors (a gather
    past the image, an offset read past its plane for a lane past the last pixel) or undefined behaviour in its
    indexing is reported: what the GPU's memcheck would find. Neither tool has yet run on this kernel on a GPU. First
    each build's negative control (a deliberate race; a read one past a tensor's end) must be reported, so that a
    clean run is not clean because the tool sees nothing. (ThreadSanitizer cannot see what only the GPU's memory
    model adds: an mma's operands read before another lane's store after it, which the emulation's mma exchange
    orders.)"""
    from shell_tests import SANITIZER_OPTIONS, run_program, run_shell_test

    name, control_argument, control_report = _SANITIZED_EMULATIONS[sanitizers]
    needs = f"a C++ compiler with -fsanitize={sanitizers}, and DCN_EMULATION_SANITIZERS on"
    control = run_program(name, [control_argument], SANITIZER_OPTIONS, needs)
    assert control.returncode != 0 and control_report in control.stderr, control.stdout + control.stderr
    run_shell_test(name, min_checks=73, needs=needs, timeout=600, env=SANITIZER_OPTIONS,
                   stderr_free_of=("Sanitizer", "runtime error"))


def test_specialised_implicit_kernel_ring_under_thread_sanitizer():
    """The warp-specialised implicit kernel's emulation built with -fsanitize=thread
    (dcn_implicit_kernel_emulation_tsan), on its --specialised cases (float16, the 64-, 128- and 256-row instances on
    layers of one and of two offset groups): its producers and consumers meet only at named barriers over a ring of
    stages filled by cp.async, and the GPU's racecheck reported hazards there that were judged the tool's
    (benchmarks/gpu_notes.md). Here ThreadSanitizer sees every access and barrier of the emulated blocks: no report,
    and the results right. (Its reach: test_group_mma_kernel_source_under_sanitizers's race control; and with the
    producers' wait on the "empty" barrier removed by hand, session 39, it reported 14 races.)"""
    from shell_tests import SANITIZER_OPTIONS, run_shell_test

    output = run_shell_test("dcn_implicit_kernel_emulation_tsan", min_checks=6, timeout=600, args=["--specialised"],
                            needs="a C++ compiler with -fsanitize=thread, and DCN_EMULATION_SANITIZERS on",
                            env=SANITIZER_OPTIONS, stderr_free_of=("ThreadSanitizer",))
    assert len(re.findall(r"^ok .*specialised, (64|128|256)-row tiles", output, re.M)) == 6, output


def test_gemm_path_cuda_kernel_sources_on_emulated_blocks():
    """The GEMM path's CUDA kernel sources (deformConvGemmKernels.cuh, deformConvRelayout.cuh) run on the CPU block by
    block (plugins/tests/gemmKernelsEmulation.cpp): the channels-last transpose, the weight re-layout, both samplers
    (bit for bit against the per-thread sampler's function, with tiles of 1 pixel, 7 pixels across images and cut
    short, and the default), the direct output's bias fill and the staged output's transpose, on grids cut short so
    that the kernels' own loops run, in float32, float16 and float64."""
    from shell_tests import run_shell_test

    output = run_shell_test("dcn_gemm_kernels_emulation", min_checks=90, needs="a C++ compiler and cmake", timeout=300)
    assert "tiled sampler, 7-pixel tiles" in output and "bias fill" in output
