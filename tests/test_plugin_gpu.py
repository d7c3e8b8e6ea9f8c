"""The CUDA kernels (libdcn_deploy_kernels.so, through ctypes) against the reference op, on many random configs.

Skipped without a CUDA device. On the GPU machine: build first (`dcn-deploy plugin build`), then
`python -m pytest -q tests/test_plugin_gpu.py`; run it under `compute-sanitizer --tool memcheck` too (see
plugins/README.md).
"""
from __future__ import annotations

import ctypes
import os
import random

import pytest
import torch

from dcn_deploy.plugin import library
from dcn_deploy.plugin.native import NativeError, NativeLibrary, deform_conv2d_cuda
from plugin_configs import (HALF_EPS, SMALL_GROUP_MAX, VECTOR_CHANNELS, WIDE_GROUPS, Case,
                            auto_takes_channels_last_direct, channels_last_direct_takes, half_precision_cases,
                            make_tensors, max_relative_error, peak_relative_error, random_case, random_depthwise_case,
                            random_group_mma_case, random_implicit_case, random_layer_case, random_many_groups_case,
                            random_shared_taps_case, random_small_groups_case, reference, shared_taps_takes,
                            group_mma_takes)

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU (torch.cuda.is_available() is False)"),
]

# Half types: inputs rounded to the type, samples rounded to it before the tensor-core product, float32 sums.
TOLERANCE = {torch.float64: 1e-12, torch.float32: 2e-5, torch.float16: 5e-3, torch.bfloat16: 4e-2}


@pytest.fixture(scope="module")
def kernels(tmp_path_factory) -> NativeLibrary:
    path = library.find_library("kernels")
    if path is None:  # build it here (needs nvcc and cmake on the GPU machine)
        path = library.build_libraries(tmp_path_factory.mktemp("dcn_build"), cuda=True).libraries["kernels"]
    lib = NativeLibrary(path)
    assert lib.lib.dcn_cuda_available() == 1, "the kernels library sees no CUDA device although torch does"
    return lib


def run(kernels, case: Case, tensors, algo: str, **options):
    """The kernel's output, written into a NaN-poisoned tensor: an element the kernel skips stays NaN and fails."""
    x, off, w, b, m = tensors
    oh, ow = case.out_size
    out = torch.full((case.batch, case.out_channels, oh, ow), float("nan"), dtype=x.dtype, device=x.device)
    return deform_conv2d_cuda(x, off, w, b, stride=case.stride, padding=case.pads, dilation=case.dilation, mask=m,
                              algo=algo, out=out, library=kernels, **options)


def expected_for(case: Case, tensors):
    """The reference in float64 on the same (already rounded) inputs."""
    return reference(case, *[None if t is None else t.double() for t in tensors])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("algo", ["direct", "fused", "gemm", "auto"])
def test_random_small_configs(kernels, dtype, algo):
    if dtype == torch.float64 and algo == "fused":
        pytest.skip("the fused kernel has no float64 path (direct serves float64)")
    for seed in range(60):
        case = random_case(random.Random(seed), max_channels_per_group=6, max_size=11)
        tensors = make_tensors(case, dtype, device="cuda", seed=seed)
        got = run(kernels, case, tensors, algo)
        torch.cuda.synchronize()
        assert got.dtype == dtype and got.shape == expected_for(case, tensors).shape
        error = max_relative_error(got, expected_for(case, tensors))
        assert not got.isnan().any(), (seed, case, "an output element was never written")
        assert error < TOLERANCE[dtype], (seed, case, error)


def _workspace_bytes(kernels, case: Case, tensors, algo: str) -> int:
    """The C ABI's workspace size for the case's layer, dtype and algo (as deform_conv2d_cuda asks for it)."""
    from dcn_deploy.plugin.native import ALGOS, DTYPE_CODES, _checked_desc

    x, off, w, b, m = tensors
    desc = _checked_desc(x, off, w, b, m, case.stride, case.pads, case.dilation)
    size = ctypes.c_size_t()
    kernels.call("dcn_deform_conv2d_workspace_size", ctypes.byref(desc), DTYPE_CODES[str(x.dtype).split(".")[-1]],
                 ALGOS[algo], 0, ctypes.byref(size))
    return size.value


# The direct kernel's small-group layers, each with its generator and first seed: many small groups (blocks of 8
# output channels spanning groups: deformConvDirectBlock.h) and depth-wise layers.
_SMALL_GROUP_LAYERS = {"many_groups": (random_many_groups_case, 900), "depthwise": (random_depthwise_case, 1300)}


def _small_groups_cases(dtype):
    """Grouped layers the channels-last direct kernel takes (2 to 16 channels per group in and out, up to 64 bytes
    of the dtype: wide items past a vector), and three of 256 channels, in groups of a vector's worth and of the
    wide items' widths (two and four vectors), 4 offset groups, 600 pixels: several blocks of pixels and of
    channels, each filling its weight tables."""
    def large(cpg):
        return Case(2, 256 // cpg, 4, 256, 256, 20, 30, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), True, True, 2.0, False)

    return ([random_small_groups_case(random.Random(1600 + seed), SMALL_GROUP_MAX[dtype]) for seed in range(12)]
            + [large(VECTOR_CHANNELS[dtype])] + [large(cpg) for cpg in WIDE_GROUPS[dtype]])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
def test_direct_kernel_on_small_groups_channels_last(kernels, dtype):
    """The channels-last direct kernel on grouped layers (its grouped instance: each block's weight tables in shared
    memory; wide items of two or four 16-byte gathers a neighbour for groups of 32 or 64 bytes), asked for as direct
    and as auto's choice (groups of 8 too, which are dense: the workspace auto sizes is the direct kernel's; not on
    dense layers of groups of 16, whose GEMM path auto keeps): from NCHW tensors over its channels-last copy
    (in the direct_chunks child in chunks of 1 MiB; in the direct_nchw child the NCHW direct kernel, and auto's GEMM
    path for groups of 8) and on channels-last tensors (no copy), against the reference."""
    cases = _small_groups_cases(dtype)
    for index, case in enumerate(cases):
        tensors = make_tensors(case, dtype, device="cuda", seed=index)
        direct_bytes = _workspace_bytes(kernels, case, tensors, "direct")
        if os.environ.get("DCN_DEPLOY_DIRECT_LAYOUT") != "nchw":  # there auto keeps the GEMM path for groups of 8
            assert direct_bytes > 0, case
            auto_bytes = _workspace_bytes(kernels, case, tensors, "auto")
            assert (auto_bytes == direct_bytes) == auto_takes_channels_last_direct(case, dtype), case
        for algo in ("direct", "auto"):
            got = run(kernels, case, tensors, algo)
            assert not got.isnan().any(), (algo, case, "an output element was never written")
            error = max_relative_error(got, expected_for(case, tensors))
            assert error < TOLERANCE[dtype], (algo, case, error)
    _check_channels_last_cases(kernels, cases, ("direct", "auto"), dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("layers", list(_SMALL_GROUP_LAYERS))
def test_direct_kernel_on_small_groups(kernels, dtype, layers):
    """The direct kernel and auto (which picks it) on small-group layers: over a channels-last copy of the input for
    the layers that kernel takes (the default: depth-wise ones, and groups of 2 to 16 channels in and out), over
    NCHW for the others, and for every layer in the direct_nchw child (DCN_DEPLOY_DIRECT_LAYOUT=nchw). Outputs are
    written into NaN-poisoned tensors, so an item the kernel skips fails."""
    make_case, first_seed = _SMALL_GROUP_LAYERS[layers]
    for seed in range(24):
        case = make_case(random.Random(first_seed + seed))
        channels_last = (channels_last_direct_takes(case, dtype)
                         and os.environ.get("DCN_DEPLOY_DIRECT_LAYOUT") != "nchw")
        tensors = make_tensors(case, dtype, device="cuda", seed=seed)
        # where the channels-last kernel runs, its workspace (the channels-last input) is sized
        assert (_workspace_bytes(kernels, case, tensors, "direct") > 0) == channels_last, (seed, case)
        for algo in ("direct", "auto"):
            got = run(kernels, case, tensors, algo)
            assert not got.isnan().any(), (algo, seed, case, "an output element was never written")
            error = max_relative_error(got, expected_for(case, tensors))
            assert error < TOLERANCE[dtype], (algo, seed, case, error)


# A depth-wise layer of 1 MiB an image in float32 (0.5 MiB in the half types): in the direct_chunks child, whose 1 MiB
# budget holds one image (two), the channels-last kernel runs in 3 chunks (2), the last one cut short.
DEPTHWISE_IN_CHUNKS = Case(3, 64, 2, 64, 64, 64, 64, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), True, True, 2.0, False)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_direct_kernel_depthwise_in_chunks(kernels, dtype):
    case = DEPTHWISE_IN_CHUNKS
    tensors = make_tensors(case, dtype, device="cuda", seed=5)
    got = run(kernels, case, tensors, "direct")
    assert not got.isnan().any(), (case, "an output element was never written")
    error = max_relative_error(got, expected_for(case, tensors))
    assert error < TOLERANCE[dtype], (case, error)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
def test_direct_kernel_with_shared_taps(kernels, dtype):
    """DCN_FORWARD_SHARED_TAPS (experimental): the layers the shared-taps kernel takes (random depth-wise and
    small-group ones; depth-wise res4's and grouped res4's channels at batch 2: several blocks of pixels and of
    channels), as direct and as auto, from NCHW tensors (in the direct_chunks child over 1 MiB chunks of images) and
    on channels-last tensors, against the reference and within the dtype's tolerance of the per-item kernels (the
    last case, 1 MiB or more an image, in chunks of one image there); a layer it does not take (offset groups of 4
    vectors) runs the per-item kernel under the flag."""
    cases = [random_shared_taps_case(random.Random(3200 + seed), dtype) for seed in range(12)]
    cases.append(Case(2, 256, 1, 256, 256, 25, 42, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), True, True, 2.0, False))
    grouped_res4 = Case(2, 32, 4, 256, 256, 25, 42, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), True, True, 2.0, False)
    if shared_taps_takes(grouped_res4, dtype):  # not in float64: its tables there pass 48 KiB
        cases.append(grouped_res4)
    cases.append(Case(3, 128, 1, 128, 128, 64, 64, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), True, True, 2.0, False))
    untaken = Case(1, 64, 16 // VECTOR_CHANNELS[dtype], 64, 64, 9, 9, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), True,
                   True, 2.0, False)
    assert all(shared_taps_takes(case, dtype) for case in cases) and not shared_taps_takes(untaken, dtype)
    for index, case in enumerate(cases + [untaken]):
        tensors = make_tensors(case, dtype, device="cuda", seed=index)
        expected = expected_for(case, tensors)
        per_item = run(kernels, case, tensors, "direct")
        for algo in ("direct", "auto"):
            got = run(kernels, case, tensors, algo, shared_taps=True)
            assert not got.isnan().any(), (algo, case, "an output element was never written")
            assert max_relative_error(got, expected) < TOLERANCE[dtype], (algo, case)
            assert max_relative_error(got, per_item.double()) < TOLERANCE[dtype], (algo, case)
    _check_channels_last_cases(kernels, cases, ("direct", "auto"), dtype, shared_taps=True)


def _direct_with_group_mma(kernels, case: Case, dtype: torch.dtype, seed: int):
    """The case's layer asked for as direct with DCN_FORWARD_GROUP_MMA and without, on NCHW tensors: the flag's
    output fully written and within the dtype's tolerance of the reference and of the output without it; returns
    both outputs."""
    tensors = make_tensors(case, dtype, device="cuda", seed=seed)
    expected = expected_for(case, tensors)
    without = run(kernels, case, tensors, "direct")
    got = run(kernels, case, tensors, "direct", group_mma=True)
    assert not got.isnan().any(), (case, "an output element was never written")
    assert max_relative_error(got, expected) < TOLERANCE[dtype], case
    assert max_relative_error(got, without.double()) < TOLERANCE[dtype], case
    return got, without


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_direct_kernel_with_group_mma(kernels, dtype):
    """DCN_FORWARD_GROUP_MMA (experimental): layers of 1, 2, 4, 8 or 16 channels a group in and out, which the
    tensor-core group kernel takes (random groups, offset groups, strides, paddings, dilations and kernels; ResNeXt
    c4's channels, grouped res4's (32 groups of 8, 4 offset groups) and depth-wise res4's at batch 2: many blocks of
    pixels, a 1 MiB image), asked for as direct, from NCHW tensors (in the direct_chunks child
    over 1 MiB chunks of images) and on channels-last tensors, against the reference and within the dtype's
    tolerance of the per-item kernel; a layer it does not take (offset groups of 8 channels) runs the per-item kernel
    under the flag. Named to run in the direct children too (chunks of 1 MiB; over NCHW, where the flag does
    nothing on NCHW tensors)."""
    cases = [random_group_mma_case(random.Random(3400 + seed)) for seed in range(10)]
    cases.append(Case(2, 32, 1, 512, 512, 25, 42, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), True, True, 2.0, False))
    cases.append(Case(2, 32, 4, 256, 256, 25, 42, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), True, True, 2.0, False))
    cases.append(Case(2, 256, 1, 256, 256, 25, 42, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), True, True, 2.0, False))
    untaken = Case(1, 64, 8, 64, 64, 9, 9, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), True, True, 2.0, False)
    assert all(group_mma_takes(case, dtype) for case in cases) and not group_mma_takes(untaken, dtype)
    for index, case in enumerate(cases + [untaken]):
        got, per_item = _direct_with_group_mma(kernels, case, dtype, seed=index)
        # which kernel ran: the tensor-core one rounds its samples to the dtype, so on the large layer some outputs
        # differ from the per-item kernel's; the per-item kernel under the flag gives its own results exactly (and
        # so does the NCHW direct kernel, which the direct_nchw child runs on NCHW tensors, flag or not)
        if case is untaken or os.environ.get("DCN_DEPLOY_DIRECT_LAYOUT") == "nchw":
            assert torch.equal(got, per_item), (case, "the flag changed a layer the tensor-core kernel does not take")
        elif got.numel() > 100_000:
            assert not torch.equal(got, per_item), (case, "the flag ran the per-item kernel")
    _check_channels_last_cases(kernels, cases, ("direct",), dtype, group_mma=True)
    # infinities and a NaN in the input (groups of 4: the block-diagonal zeros): the per-item kernel's NaNs and
    # infinities exactly, each in its own group (the kernel takes such pixels again by FMAs), the rest as above
    fours = Case(2, 16, 1, 64, 64, 13, 21, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), True, True, 2.0, False)
    x, off, w, b, m = make_tensors(fours, dtype, device="cuda", seed=99)
    flat = x.view(-1)
    flat[flat.numel() // 7], flat[flat.numel() // 3], flat[flat.numel() // 2] = float("inf"), -float("inf"), float("nan")
    per_item = run(kernels, fours, (x, off, w, b, m), "direct")
    got = run(kernels, fours, (x, off, w, b, m), "direct", group_mma=True)
    assert torch.equal(got.isnan(), per_item.isnan()) and per_item.isnan().any()
    assert torch.equal(got.isinf(), per_item.isinf()) and torch.equal(got[got.isinf()], per_item[per_item.isinf()])
    finite = per_item.isfinite()
    assert max_relative_error(got[finite], per_item[finite].double()) < TOLERANCE[dtype]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_direct_kernel_with_group_mma_on_groups_of_32(kernels, dtype):
    """DCN_FORWARD_GROUP_MMA's blocks of 32 channels (groups of 32: ResNeXt's c5, which no per-item kernel takes):
    random layers and ResNeXt c5's channels at batch 2, asked for as direct from NCHW tensors, against the reference
    and within the dtype's tolerance of the NCHW direct kernel (what runs them without the flag, and on GPUs older
    than sm_80 with it); a 5x5 kernel past the default 48 KiB of shared memory (the launch opts in). On channels-last
    tensors no direct kernel takes them: refused, naming the kernels that do."""
    cases = [random_group_mma_case(random.Random(3500 + seed), block_channels=32) for seed in range(6)]
    cases.append(Case(2, 32, 1, 1024, 1024, 13, 21, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), True, True, 2.0, False))
    cases.append(Case(1, 2, 1, 64, 64, 9, 11, (5, 5), (1, 1), (2, 2, 2, 2), (1, 1), True, True, 3.0, False))
    assert all(group_mma_takes(case, dtype) for case in cases)
    capable = torch.cuda.get_device_capability()[0] >= 8
    for index, case in enumerate(cases):
        got, nchw_kernel = _direct_with_group_mma(kernels, case, dtype, seed=index)
        if capable and os.environ.get("DCN_DEPLOY_DIRECT_LAYOUT") != "nchw" and got.numel() > 100_000:
            assert not torch.equal(got, nchw_kernel), (case, "the flag ran the NCHW kernel")
    x, off, w, b, m = make_tensors(cases[-2], dtype, device="cuda", seed=1)
    with pytest.raises(NativeError, match="channels-last tensors .* take the GEMM path"):
        deform_conv2d_cuda(x.contiguous(memory_format=torch.channels_last), off, w, b, 1, 1, 1, m, algo="direct",
                           channels_last=True, group_mma=True, library=kernels)


def random_dense_case(rng: random.Random) -> Case:
    """A layer wide enough for the fused kernel's tiles, with every size off the tile multiples."""
    groups = rng.choice([1, 1, 2])
    cpg = rng.randint(8, 80)
    offset_groups = rng.choice([d for d in (1, 2, 4) if (groups * cpg) % d == 0])
    return random_layer_case(rng, groups, offset_groups, cpg, (16, 150), 19, 23, (0.5, 2.0, 8.0))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_random_dense_configs_every_algo(kernels, dtype):
    for seed in range(16):
        case = random_dense_case(random.Random(1000 + seed))
        tensors = make_tensors(case, dtype, device="cuda", seed=seed)
        expected = expected_for(case, tensors)
        for algo in ("fused", "direct", "gemm"):
            got = run(kernels, case, tensors, algo)
            assert not got.isnan().any(), (algo, seed, case, "an output element was never written")
            error = max_relative_error(got, expected)
            assert error < TOLERANCE[dtype], (algo, seed, case, error)


DENSE_CASES = [
    # channels not a multiple of the 32-channel step, output channels not a multiple of the 64-row tile,
    # output pixels spanning several images in one 64-column tile
    Case(2, 1, 1, 48, 80, 13, 17, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), True, True, 2.0, False),
    Case(3, 2, 4, 64, 96, 9, 7, (3, 3), (2, 1), (1, 0, 2, 1), (1, 2), True, False, 3.0, False),
    Case(1, 1, 2, 256, 256, 20, 24, (3, 3), (1, 1), (2, 2, 2, 2), (2, 2), False, True, 1.0, False),
    Case(4, 4, 4, 128, 128, 6, 5, (1, 3), (1, 1), (0, 1, 0, 1), (1, 1), True, True, 25.0, True),
    # under the 1 MiB budget of the "chunks" child: each image in slices, the input transposed 2 (float32) or 4 (half
    # types) images at a time, so a chunk starts inside a transposed range
    Case(5, 1, 2, 48, 40, 48, 48, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), True, True, 4.0, False),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("index", range(len(DENSE_CASES)))
def test_dense_layers_fused_and_direct_agree_with_reference(kernels, dtype, index):
    case = DENSE_CASES[index]
    tensors = make_tensors(case, dtype, device="cuda", seed=index)
    expected = expected_for(case, tensors)
    for algo in ("fused", "direct", "gemm"):
        got = run(kernels, case, tensors, algo)
        assert not got.isnan().any(), (algo, case, "an output element was never written")
        error = max_relative_error(got, expected)
        assert error < TOLERANCE[dtype], (algo, case, error)


def _run_channels_last(kernels, case: Case, tensors, algo: str = "auto", **options):
    """The kernels on channels-last tensors (DCN_FORWARD_CHANNELS_LAST), into a NaN-poisoned channels-last output."""
    x, off, w, b, m = tensors
    oh, ow = case.out_size
    out = torch.full((case.batch, case.out_channels, oh, ow), float("nan"), dtype=x.dtype, device=x.device)
    out = out.contiguous(memory_format=torch.channels_last)
    return deform_conv2d_cuda(x.contiguous(memory_format=torch.channels_last), off, w, b, stride=case.stride,
                              padding=case.pads, dilation=case.dilation, mask=m, algo=algo, channels_last=True,
                              out=out, library=kernels, **options)


def _check_channels_last_cases(kernels, cases, algos, dtype, **options):
    """Each case under each algo on channels-last tensors (_run_channels_last): a channels-last output, every
    element written, within the dtype's tolerance of the reference."""
    for index, case in enumerate(cases):
        tensors = make_tensors(case, dtype, device="cuda", seed=index)
        for algo in algos:
            got = _run_channels_last(kernels, case, tensors, algo, **options)
            assert got.is_contiguous(memory_format=torch.channels_last)
            assert not got.isnan().any(), (algo, case, "an output element was never written")
            error = max_relative_error(got, expected_for(case, tensors))
            assert error < TOLERANCE[dtype], (algo, case, error)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_dense_layers_on_channels_last_tensors(kernels, dtype):
    """The GEMM path reading a channels-last input where it is (an outside neighbour from the zero vector by its own
    pointer) and its product writing the channels-last output (the bias written first, or in the children with
    DCN_DEPLOY_GEMM_BIAS=epilogue added by cuBLASLt): the dense cases and random dense layers against the reference.
    Named to run in every child of _CHILD_ENVS too (1 MiB chunks and pixel slices, one-pixel tiles, the per-thread
    sampler, NN products, split-K; the output setting does not apply)."""
    _check_channels_last_cases(kernels, DENSE_CASES + [random_dense_case(random.Random(3000 + seed))
                                                       for seed in range(8)], ("auto", "gemm"), dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
def test_direct_kernel_depthwise_on_channels_last_tensors(kernels, dtype):
    """The channels-last direct kernel reading a channels-last input where it is and writing each item's channels as
    one store into a channels-last output (no workspace), auto's choice and asked for, against the reference."""
    _check_channels_last_cases(kernels, [random_depthwise_case(random.Random(1400 + seed)) for seed in range(6)],
                               ("auto", "direct"), dtype)


def test_channels_last_tensors_refused_elsewhere_and_misaligned_input_copied(kernels):
    """A layer neither the GEMM path nor the channels-last direct kernel takes (3 channels a group, which no vector
    of 4 or 8 holds whole: auto sends it to the NCHW direct kernel), or algo fused, refuse channels-last tensors as
    "unsupported" (the op then runs NCHW copies); an input view starting off a 16-byte boundary is copied by the
    binding."""
    from dcn_deploy.plugin.native import DCN_ERROR_UNSUPPORTED

    few_per_group = Case(2, 4, 1, 12, 12, 9, 11, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), True, True, 2.0)
    for case, algo in ((few_per_group, "auto"), (DENSE_CASES[0], "fused")):
        tensors = make_tensors(case, torch.float16, device="cuda", seed=1)
        with pytest.raises(NativeError, match="take the GEMM path .dense layers. or the channels-last direct kernel") \
                as refused:
            _run_channels_last(kernels, case, tensors, algo)
        assert refused.value.code == DCN_ERROR_UNSUPPORTED
    case = DENSE_CASES[0]
    x, off, w, b, m = make_tensors(case, torch.float16, device="cuda", seed=2)
    n, c, h, width = x.shape
    room = torch.empty(x.numel() + 8, dtype=x.dtype, device=x.device)
    misaligned = room[1:1 + x.numel()].view(n, h, width, c).permute(0, 3, 1, 2)
    misaligned.copy_(x)
    assert misaligned.is_contiguous(memory_format=torch.channels_last) and misaligned.data_ptr() % 16
    got = deform_conv2d_cuda(misaligned, off, w, b, stride=case.stride, padding=case.pads, dilation=case.dilation,
                             mask=m, channels_last=True, library=kernels)
    assert peak_relative_error(got, expected_for(case, (x, off, w, b, m))) <= HALF_EPS[torch.float16]


def _split_k_cases():
    """Dense layers whose K = C*kH*kW is a multiple of 64, so that every split-K (2, 4, 8) applies
    (gemmSplitK in plugins/deform_conv/deformConvGemmPlan.h): det res5- and res4-like in float32 at batch 1 (the
    products cuBLAS ran on few output tiles), then random small ones in each type, with and without a bias, batch
    up to 3, output planes that are not multiples of the 64-pixel tile."""
    cases = [(Case(1, 1, 1, 512, 512, 25, 42, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), True, True, 2.0), torch.float32),
             (Case(1, 1, 1, 256, 256, 50, 84, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), True, True, 2.0), torch.float32)]
    rng = random.Random(4242)
    for index in range(9):
        case = Case(rng.randint(1, 3), 1, rng.choice([1, 2, 4]), rng.choice([64, 128]), rng.randint(8, 100),
                    rng.randint(5, 20), rng.randint(5, 20), (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), rng.random() < 0.5,
                    index % 2 == 0, rng.choice([1.0, 4.0]))
        cases.append((case, [torch.float32, torch.float16, torch.bfloat16][index % 3]))
    return cases


def test_split_k_layers_match_reference(kernels):
    """The GEMM path on layers where split-K applies. In this process DCN_DEPLOY_GEMM_SPLIT_K is whatever the
    environment says (unset: auto, which splits the first two, float32 layers of few output tiles, in 4); the
    split2 and split4 children of test_gemm_path_split_k run it with the staged product in 2 and 4 slices of K."""
    for index, (case, dtype) in enumerate(_split_k_cases()):
        tensors = make_tensors(case, dtype, device="cuda", seed=index)
        expected = expected_for(case, tensors)
        got = run(kernels, case, tensors, "gemm")
        assert not got.isnan().any(), (index, case, dtype, "an output element was never written")
        error = max_relative_error(got, expected)
        assert error < TOLERANCE[dtype], (index, case, dtype, error)


@pytest.mark.skipif(os.environ.get("DCN_DEPLOY_GEMM_TF32") != "1",
                    reason="runs in test_gemm_path_tf32's child process (DCN_DEPLOY_GEMM_TF32=1)")
def test_tf32_products_within_tf32_precision(kernels):
    """DCN_DEPLOY_GEMM_TF32=1: float32 products on TF32 tensor cores (inputs rounded to 10 mantissa bits). Within
    5e-3 of the float64 reference on the split-K layers' float32 cases, and on det res5 at batch 1 measurably not
    IEEE float32 (above 1e-5; IEEE float32 is near 1e-7 there), so the setting took effect."""
    for index, (case, dtype) in enumerate(_split_k_cases()):
        if dtype != torch.float32:
            continue
        tensors = make_tensors(case, dtype, device="cuda", seed=index)
        error = max_relative_error(run(kernels, case, tensors, "gemm"), expected_for(case, tensors))
        assert error < 5e-3, (index, case, error)
        if index == 0:
            assert error > 1e-5, ("float32 products still IEEE under DCN_DEPLOY_GEMM_TF32=1", error)


HALF_CASES = half_precision_cases()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["float16", "bfloat16"])
@pytest.mark.parametrize("case_name", list(HALF_CASES))
@pytest.mark.parametrize("algo", ["direct", "fused", "gemm"])
def test_half_types_accumulate_in_float32(kernels, algo, case_name, dtype):
    """Within one unit of the half type at the output's peak (HALF_EPS): the tolerance the host build and the other
    implementations meet in tests/test_cross_implementation.py, which a kernel summing in the half type fails on
    these long reductions (TOLERANCE above is looser, for the short random cases)."""
    case = HALF_CASES[case_name]
    tensors = make_tensors(case, dtype, device="cuda", seed=3)
    got = run(kernels, case, tensors, algo)
    assert got.dtype == dtype and not got.isnan().any(), (algo, case, "an output element was never written")
    error = peak_relative_error(got, expected_for(case, tensors))
    assert error <= HALF_EPS[dtype], (algo, case, f"{error / HALF_EPS[dtype]:.2f} units of the half type")


# The implicit-GEMM kernel (algo "implicit": experimental, never chosen by auto): half types, channels per group and
# per offset group multiples of 32. Its indexing is checked on the host (tests/test_plugin_host.py); here its
# tensor-core tiles, double buffers and shared-memory layout.
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["float16", "bfloat16"])
def test_implicit_kernel_on_random_layers(kernels, dtype):
    for seed in range(24):
        case = random_implicit_case(random.Random(2000 + seed))
        tensors = make_tensors(case, dtype, device="cuda", seed=seed)
        got = run(kernels, case, tensors, "implicit")
        assert not got.isnan().any(), (seed, case, "an output element was never written")
        error = max_relative_error(got, expected_for(case, tensors))
        assert error < TOLERANCE[dtype], (seed, case, error)


IMPLICIT_CASES = [
    # several 128-pixel tiles crossing images, 256-row tiles and a second row block, far offsets, mask and bias
    Case(3, 1, 1, 64, 300, 21, 19, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), True, True, 25.0, False),
    # the ResNet res4 layer's channels at a small size, dilated, asymmetric padding
    Case(2, 1, 1, 256, 256, 17, 30, (3, 3), (1, 1), (2, 1, 2, 1), (2, 1), True, True, 2.0, False),
    # two offset groups in one group (18 rows of taps), integer offsets (samples on pixels and on the border)
    Case(2, 1, 2, 64, 96, 11, 13, (3, 3), (2, 1), (1, 0, 1, 2), (1, 2), True, False, 3.0, True),
]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["float16", "bfloat16"])
@pytest.mark.parametrize("index", range(len(IMPLICIT_CASES)))
def test_implicit_kernel_on_layer_shapes(kernels, dtype, index):
    case = IMPLICIT_CASES[index]
    tensors = make_tensors(case, dtype, device="cuda", seed=index)
    got = run(kernels, case, tensors, "implicit")
    assert not got.isnan().any(), (case, "an output element was never written")
    assert max_relative_error(got, expected_for(case, tensors)) < TOLERANCE[dtype], case


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["float16", "bfloat16"])
@pytest.mark.parametrize("case_name", ["grouped", "height_1"])
def test_implicit_kernel_accumulates_in_float32(kernels, case_name, dtype):
    case = HALF_CASES[case_name]  # the half-precision cases with 32-channel multiples
    tensors = make_tensors(case, dtype, device="cuda", seed=3)
    got = run(kernels, case, tensors, "implicit")
    assert got.dtype == dtype and not got.isnan().any(), (case, "an output element was never written")
    error = peak_relative_error(got, expected_for(case, tensors))
    assert error <= HALF_EPS[dtype], (case, f"{error / HALF_EPS[dtype]:.2f} units of the half type")


def test_implicit_kernel_refuses_what_it_cannot_run(kernels):
    case = IMPLICIT_CASES[0]
    tensors = make_tensors(case, torch.float32, device="cuda", seed=0)
    with pytest.raises(NativeError, match="float16 and bfloat16 only"):
        run(kernels, case, tensors, "implicit")
    grouped = Case(1, 1, 1, 48, 16, 6, 6, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), True, True, 1.0, False)
    with pytest.raises(NativeError, match="multiples of 32, got 48"):
        run(kernels, grouped, make_tensors(grouped, torch.float16, device="cuda", seed=0), "implicit")
    four_offset_groups = Case(1, 1, 4, 128, 16, 6, 6, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), True, True, 1.0, False)
    with pytest.raises(NativeError, match="at most 24"):
        run(kernels, four_offset_groups, make_tensors(four_offset_groups, torch.float16, device="cuda", seed=0),
            "implicit")


def test_specialised_implicit_kernel(kernels):
    """The warp-specialised implicit-GEMM kernel (DCN_DEPLOY_IMPLICIT_KERNEL=specialised: producer warps feeding a
    ring of stages to consumer warps at named barriers) on this file's implicit-kernel tests, in a child process (the
    C ABI reads the variable once per process). A hang (a barrier protocol error) fails after the limit."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, DCN_DEPLOY_IMPLICIT_KERNEL="specialised")
    try:
        child = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__, "-k",
                                "implicit_kernel_on or implicit_kernel_accumulates"],
                               env=env, capture_output=True, text=True, timeout=_CHILD_TIMEOUT_S)
    except subprocess.TimeoutExpired as hung:
        pytest.fail(f"the specialised implicit kernel's tests did not finish in {_CHILD_TIMEOUT_S} s: "
                    f"{str(hung.stdout)[-3000:]}")
    last = child.stdout.strip().splitlines()[-1] if child.stdout.strip() else ""
    assert child.returncode == 0 and " passed" in last and "skipped" not in last, \
        child.stdout[-4000:] + child.stderr[-2000:]


# The C ABI's GEMM options (read once per process) under which the dense-layer tests of this file run again, each
# in a child process: a 1 MiB column budget (chunks of whole images and slices of one image's pixels, through the
# staging scratch too), and each output way forced for every shape (by default: direct for one group where NCHW
# rows are whole 16-byte vectors, else staged).
_CHILD_ENVS = {
    "chunks": {"DCN_DEPLOY_GEMM_CHUNK_MB": "1", "DCN_DEPLOY_GEMM_OUTPUT": "staged",
               "DCN_DEPLOY_GEMM_TILE_ITEMS": "1"},
    "full": {"DCN_DEPLOY_GEMM_CHUNK_MB": "1", "DCN_DEPLOY_GEMM_CHUNKS": "full"},
    "direct": {"DCN_DEPLOY_GEMM_OUTPUT": "direct"},
    "staged": {"DCN_DEPLOY_GEMM_OUTPUT": "staged"},
    "thread": {"DCN_DEPLOY_GEMM_SAMPLER": "thread"},
    "nn": {"DCN_DEPLOY_GEMM_PRODUCT": "nn", "DCN_DEPLOY_GEMM_OUTPUT": "staged", "DCN_DEPLOY_GEMM_CHUNK_MB": "1"},
    # split-K (experimental, off by default): the staged product in slices of K where K allows (K = 9 * C: C a
    # multiple of 16 for 2 slices, of 32 for 4), summed by the staged output's transpose; these children also run
    # test_split_k_layers_match_reference, whose layers all split
    "split2": {"DCN_DEPLOY_GEMM_SPLIT_K": "2", "DCN_DEPLOY_GEMM_OUTPUT": "staged"},
    "split4": {"DCN_DEPLOY_GEMM_SPLIT_K": "4", "DCN_DEPLOY_GEMM_OUTPUT": "staged", "DCN_DEPLOY_GEMM_CHUNK_MB": "1"},
    # float32 products on TF32 tensor cores (an experiment, off by default): only its own test, whose tolerance is
    # TF32's (the dense tests' float32 tolerance is IEEE float32's)
    "tf32": {"DCN_DEPLOY_GEMM_TF32": "1"},
    # a half type's bias added by the staged product (cuBLASLt's epilogue; by default only on channels-last tensors),
    # every dense layer staged; and never by it (the bias written first, or added by the transpose)
    "bias_epilogue": {"DCN_DEPLOY_GEMM_BIAS": "epilogue", "DCN_DEPLOY_GEMM_OUTPUT": "staged"},
    "bias_fill": {"DCN_DEPLOY_GEMM_BIAS": "fill"},
    # no cuBLASLt (as where a cuBLAS comes without it): auto's epilogue on channels-last tensors gives way to the fill
    "no_cublaslt": {"DCN_DEPLOY_CUBLASLT": "off"},
    "bias_epilogue_nn": {"DCN_DEPLOY_GEMM_BIAS": "epilogue", "DCN_DEPLOY_GEMM_OUTPUT": "staged",
                         "DCN_DEPLOY_GEMM_PRODUCT": "nn"},
    # the direct kernel's own tests only: over a channels-last copy of the input (the default on depth-wise layers)
    # transposed in chunks of 1 MiB, and over NCHW (DCN_DEPLOY_DIRECT_LAYOUT=nchw, no workspace)
    "direct_chunks": {"DCN_DEPLOY_GEMM_CHUNK_MB": "1"},
    "direct_nchw": {"DCN_DEPLOY_DIRECT_LAYOUT": "nchw"},
}
# The tests each child runs: the dense-layer tests, and for the split-K children the split-K layers too.
_CHILD_TESTS = "random_dense_configs or dense_layers"
_SPLIT_K_CHILD_TESTS = _CHILD_TESTS + " or split_k_layers"
_TF32_CHILD_TESTS = "tf32_products"
_DIRECT_CHILD_TESTS = ("direct_kernel_on_small_groups or direct_kernel_depthwise_in_chunks or "
                       "direct_kernel_with_shared_taps or direct_kernel_with_group_mma")
# Each child re-runs 15 small tests after a fresh start-up (torch, CUDA and cuBLAS set-up; not yet timed on a GPU).
# All of them start at once (one GPU runs them side by side), so together they cost about one child's time; the limit
# turns a hang into a failure that shows the child's output, inside gpu_checks.sh's 200 s for all the GPU tests.
_CHILD_TIMEOUT_S = 150


def _child_tests(name: str) -> str:
    """The -k expression a child runs: see _CHILD_ENVS."""
    if name == "tf32":
        return _TF32_CHILD_TESTS
    if name.startswith("direct_"):
        return _DIRECT_CHILD_TESTS
    return _SPLIT_K_CHILD_TESTS if name.startswith("split") else _CHILD_TESTS


@pytest.fixture(scope="module")
def dense_children():
    """name -> the running child process (pytest on this file's dense-layer tests) under _CHILD_ENVS[name]."""
    import os
    import subprocess
    import sys

    children = {name: subprocess.Popen([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__,
                                        "-k", _child_tests(name)],
                                       env=dict(os.environ, **env_vars), stdout=subprocess.PIPE,
                                       stderr=subprocess.PIPE, text=True)
                for name, env_vars in _CHILD_ENVS.items()}
    yield children
    for child in children.values():
        if child.poll() is None:
            child.kill()
            child.communicate()


def _check_dense_child(children, name: str) -> None:
    import subprocess

    try:
        stdout, stderr = children[name].communicate(timeout=_CHILD_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        children[name].kill()
        stdout, stderr = children[name].communicate()
        pytest.fail(f"the dense tests under {_CHILD_ENVS[name]} did not finish in {_CHILD_TIMEOUT_S} s:\n"
                    f"{stdout[-4000:]}{stderr[-2000:]}")
    assert children[name].returncode == 0, (_CHILD_ENVS[name], stdout[-4000:] + stderr[-2000:])
    last = stdout.strip().splitlines()[-1] if stdout.strip() else ""
    assert " passed" in last and "skipped" not in last, (_CHILD_ENVS[name], stdout[-2000:] + stderr[-2000:])


def test_direct_kernel_channels_last_in_chunks(dense_children):
    """The small-group direct-kernel tests with a 1 MiB budget: the channels-last input transposed in chunks."""
    _check_dense_child(dense_children, "direct_chunks")


def test_direct_kernel_over_nchw(dense_children):
    """The small-group direct-kernel tests under DCN_DEPLOY_DIRECT_LAYOUT=nchw: every layer over NCHW."""
    _check_dense_child(dense_children, "direct_nchw")


def test_gemm_path_tf32(dense_children):
    """DCN_DEPLOY_GEMM_TF32=1 (test_tf32_products_within_tf32_precision, in its child)."""
    _check_dense_child(dense_children, "tf32")


def test_gemm_path_in_chunks_and_pixel_slices(dense_children):
    """The GEMM path cuts the batch when its columns exceed the budget: with a 1 MiB budget the dense configs run
    in chunks of whole images and in slices of one image's pixels, through the staging scratch, in tiles of one pixel
    (DCN_DEPLOY_GEMM_TILE_ITEMS=1)."""
    _check_dense_child(dense_children, "chunks")


def test_gemm_path_in_full_chunks(dense_children):
    """The same budget with full chunks (DCN_DEPLOY_GEMM_CHUNKS=full: as many as fit, then the remainder; the
    default is even chunks), each output way as auto chooses."""
    _check_dense_child(dense_children, "full")


def test_gemm_path_staged_product_as_nn(dense_children):
    """The staged product with output-major weights (DCN_DEPLOY_GEMM_PRODUCT=nn: cuBLAS "NN"), in 1 MiB chunks."""
    _check_dense_child(dense_children, "nn")


@pytest.mark.parametrize("slices", [2, 4])
def test_gemm_path_split_k(dense_children, slices):
    """The staged product as 2 or 4 slices of K (DCN_DEPLOY_GEMM_SPLIT_K; 4 in 1 MiB chunks and pixel slices): the
    dense-layer tests (those whose K allows it split, the others fall back to 1) and the split-K layers, det res5-like
    float32 at batch 1 among them."""
    _check_dense_child(dense_children, f"split{slices}")


@pytest.mark.parametrize("output", ["direct", "staged"])
def test_gemm_path_each_output_way(dense_children, output):
    """Where the product writes, forced for every shape (by default: direct for one group and 16-byte rows)."""
    _check_dense_child(dense_children, output)


@pytest.mark.parametrize("child", ["bias_epilogue", "bias_epilogue_nn", "bias_fill"])
def test_gemm_path_bias_added_by_the_product_or_not(dense_children, child):
    """The dense-layer tests under DCN_DEPLOY_GEMM_BIAS=epilogue (the half types' staged and channels-last products
    add the bias in cuBLASLt's epilogue, which fails rather than falls back: passing means it ran), with TN and NN
    products; and under DCN_DEPLOY_GEMM_BIAS=fill (never the epilogue: the channels-last outputs filled with the bias
    first, auto's way before it took the epilogue)."""
    _check_dense_child(dense_children, child)


def test_gemm_path_without_cublaslt(dense_children):
    """DCN_DEPLOY_CUBLASLT=off, as where cuBLAS comes without cuBLASLt: auto's bias epilogue on channels-last half
    tensors gives way to the fill at run time (the dense-layer tests pass in that child); a required epilogue
    (DCN_DEPLOY_GEMM_BIAS=epilogue) is an error naming the switch instead of a silent fill."""
    import subprocess
    import sys

    _check_dense_child(dense_children, "no_cublaslt")
    script = ("import torch; from dcn_deploy.plugin import library;"
              "from dcn_deploy.plugin.native import NativeError, NativeLibrary, deform_conv2d_cuda;"
              "lib = NativeLibrary(library.find_library('kernels')); torch.manual_seed(0);"
              "half = dict(device='cuda', dtype=torch.float16);"
              "x = torch.randn(1, 16, 9, 9, **half).contiguous(memory_format=torch.channels_last);"
              "args = (x, torch.randn(1, 18, 9, 9, **half), torch.randn(16, 16, 3, 3, **half), torch.randn(16, **half));"
              "\ntry:\n    deform_conv2d_cuda(*args, padding=1, channels_last=True, library=lib); print('ran')"
              "\nexcept NativeError as error:\n    print(error)")
    required = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=_CHILD_TIMEOUT_S,
                              env=dict(os.environ, DCN_DEPLOY_CUBLASLT="off", DCN_DEPLOY_GEMM_BIAS="epilogue"))
    assert required.returncode == 0, required.stderr[-2000:]
    assert "cuBLASLt is switched off (DCN_DEPLOY_CUBLASLT=off)" in required.stdout, required.stdout


def test_gemm_path_per_thread_sampler(dense_children):
    """The per-thread sampler (the tiled one is the default; this one serves where a tile's tables do not fit)."""
    _check_dense_child(dense_children, "thread")


def test_runs_on_the_current_stream_and_is_deterministic(kernels):
    case = DENSE_CASES[0]
    tensors = make_tensors(case, torch.float16, device="cuda", seed=3)
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        first = run(kernels, case, tensors, "auto")
        second = run(kernels, case, tensors, "auto")
    stream.synchronize()
    assert torch.equal(first, second)
    assert max_relative_error(first, expected_for(case, tensors)) < TOLERANCE[torch.float16]


def test_bad_arguments_raise_instead_of_launching(kernels):
    x = torch.randn(1, 4, 5, 5, device="cuda")
    with pytest.raises(NativeError, match="fused"):
        deform_conv2d_cuda(x.double(), torch.randn(1, 18, 5, 5, device="cuda").double(),
                           torch.randn(4, 4, 3, 3, device="cuda").double(), padding=1, algo="fused", library=kernels)
    # The fused kernel without its workspace: an error, not a launch.
    import ctypes
    from dcn_deploy.plugin.native import DeformConvDesc

    desc = DeformConvDesc(1, 4, 5, 5, 4, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1)
    w = torch.randn(4, 4, 3, 3, device="cuda")
    off = torch.randn(1, 18, 5, 5, device="cuda")
    out = torch.empty(1, 4, 5, 5, device="cuda")
    with pytest.raises(NativeError, match="workspace"):
        kernels.call("dcn_deform_conv2d_forward_cuda", ctypes.byref(desc), 0, 2, 0, x.data_ptr(), off.data_ptr(),
                     w.data_ptr(), None, None, out.data_ptr(), None, 0, None)
    with pytest.raises(ValueError, match="cuda"):
        deform_conv2d_cuda(x.cpu(), torch.randn(1, 18, 5, 5), torch.randn(4, 4, 3, 3), padding=1, library=kernels)


# dcn_deploy.deform_conv2d on CUDA tensors runs these kernels (dcn_deploy/ops/native_paths.py): dense layers, and
# depth-wise ones (the direct kernel over a channels-last copy of the input, in a workspace the op allocates)
_DEPTHWISE = [random_depthwise_case(random.Random(1300 + seed)) for seed in range(40)]
_SYMMETRIC = [c for c in DENSE_CASES + list(HALF_CASES.values()) if c.pads[:2] == c.pads[2:]] + \
    [c for c in _DEPTHWISE if c.pads[:2] == c.pads[2:]][:3]


@pytest.fixture
def op_on_kernels(kernels, monkeypatch):
    """The op's CUDA forward on the ``kernels`` fixture's library (it may have been built into a temporary folder,
    where the op's own lookup does not look); the per-device probe runs afresh."""
    from dcn_deploy.ops import native_paths

    monkeypatch.setattr(native_paths, "_cuda_library", lambda: kernels)
    monkeypatch.setattr(native_paths, "_CUDA_DEVICE_RUNS", {})
    return native_paths


def test_torch_op_finds_the_built_kernels_and_probes_the_device(kernels):
    from dcn_deploy.ops import native_paths

    if library.find_library("kernels") is None:
        pytest.skip("the kernels library was built into a temporary folder by the fixture; the op looks in "
                    "build/native/lib and DCN_DEPLOY_PLUGIN_DIR")
    x = torch.randn(1, 2, 3, 3, device="cuda")
    assert native_paths.cuda_library_for(x) is not None, "the op finds no usable kernels library, the test does"
    assert native_paths._CUDA_DEVICE_RUNS[torch.cuda.current_device()] is True


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
def test_torch_op_on_cuda_runs_the_kernels(op_on_kernels, dtype, monkeypatch):
    """The PyTorch op's CUDA forward goes through the kernels (counted), in the tensors' own dtype, and agrees with
    the reference as closely as the kernels called directly; with DCN_DEPLOY_NATIVE_CUDA=0 it runs the composite."""
    import dcn_deploy
    from dcn_deploy.plugin import native

    calls = []
    real = native.deform_conv2d_cuda
    monkeypatch.setattr(native, "deform_conv2d_cuda", lambda *a, **k: calls.append(a[0].dtype) or real(*a, **k))
    assert _SYMMETRIC, "no case with symmetric padding (the op's padding is per axis)"
    cases_run = 0
    for index, case in enumerate(_SYMMETRIC):
        if dtype == torch.float64 and case.in_channels > 128:
            continue  # float64 runs the direct kernel: keep the test short
        cases_run += 1
        x, off, w, b, m = make_tensors(case, dtype, device="cuda", seed=index)
        args = dict(stride=case.stride, padding=case.pads[:2], dilation=case.dilation, mask=m)
        got = dcn_deploy.deform_conv2d(x, off, w, b, **args)
        expected = expected_for(case, (x, off, w, b, m))
        assert got.dtype == dtype and got.device == x.device
        if dtype in HALF_EPS:
            assert peak_relative_error(got, expected) <= HALF_EPS[dtype], (case, "half type")
        else:
            assert max_relative_error(got, expected) < TOLERANCE[dtype], case
    # the device's probe (float32, passed), then every case on the kernels in its own dtype, none upcast
    assert op_on_kernels._CUDA_DEVICE_RUNS == {torch.cuda.current_device(): True}
    assert calls == [torch.float32] + [dtype] * cases_run, calls
    calls.clear()
    monkeypatch.setenv(op_on_kernels.NATIVE_CUDA_ENV, "0")
    case = _SYMMETRIC[0]
    x, off, w, b, m = make_tensors(case, dtype, device="cuda", seed=0)
    composite = dcn_deploy.deform_conv2d(x, off, w, b, stride=case.stride, padding=case.pads[:2],
                                         dilation=case.dilation, mask=m)
    assert not calls and composite.dtype == dtype


def test_torch_op_reads_and_writes_channels_last_tensors_in_place(op_on_kernels, monkeypatch):
    """A channels-last input: a dense, a depth-wise and a grouped layer's kernels called with channels_last
    (DCN_FORWARD_CHANNELS_LAST, no transposes), a layer of 3 channels a group refused there and run on an NCHW copy;
    every output channels-last, as torch's convolutions give, and within the half type's rounding of the reference."""
    import dcn_deploy
    from dcn_deploy.plugin import native

    calls = []
    real = native.deform_conv2d_cuda
    monkeypatch.setattr(native, "deform_conv2d_cuda",
                        lambda *a, **k: calls.append(k.get("channels_last", False)) or real(*a, **k))
    dense = DENSE_CASES[0]
    depthwise = Case(2, 16, 1, 16, 16, 9, 11, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), True, True, 2.0)
    grouped = Case(2, 4, 1, 16, 16, 9, 11, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), True, True, 2.0)
    few_per_group = Case(2, 4, 1, 12, 12, 9, 11, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), True, True, 2.0)
    for case, expected_calls in ((dense, [True]), (depthwise, [True]), (grouped, [True]),
                                 (few_per_group, [True, False])):
        x, off, w, b, m = make_tensors(case, torch.float16, device="cuda", seed=4)
        calls.clear()
        got = dcn_deploy.deform_conv2d(x.contiguous(memory_format=torch.channels_last), off, w, b,
                                       stride=case.stride, padding=case.pads[:2], dilation=case.dilation, mask=m)
        assert calls[-len(expected_calls):] == expected_calls, (case, calls)
        assert got.is_contiguous(memory_format=torch.channels_last) and not got.is_contiguous()
        assert peak_relative_error(got, expected_for(case, (x, off, w, b, m))) <= HALF_EPS[torch.float16], case


@pytest.mark.skipif(os.environ.get("DCN_DEPLOY_GEMM_TF32") == "1", reason="DCN_DEPLOY_GEMM_TF32=1 forces TF32 on")
def test_torch_op_follows_torchs_tf32_setting_for_float32(op_on_kernels, monkeypatch):
    """torch.backends.cuda.matmul.allow_tf32 (off by default) reaches the kernels (DCN_FORWARD_ALLOW_TF32): off,
    det res5 at batch 1 in float32 is IEEE float32 (under 1e-5 of the float64 reference); on, TF32 products
    (above 1e-5, within 5e-3), as torch's own float32 products under set_float32_matmul_precision("high")."""
    import dcn_deploy

    case, dtype = _split_k_cases()[0]
    x, off, w, b, m = make_tensors(case, dtype, device="cuda", seed=0)
    expected = expected_for(case, (x, off, w, b, m))
    errors = {}
    for allowed in (False, True):
        monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", allowed)
        got = dcn_deploy.deform_conv2d(x, off, w, b, stride=case.stride, padding=case.pads[:2],
                                       dilation=case.dilation, mask=m)
        errors[allowed] = max_relative_error(got, expected)
    assert errors[False] < 1e-5 and 1e-5 < errors[True] < 5e-3, errors


def test_torch_op_on_cuda_trains_through_the_kernels_forward(op_on_kernels, monkeypatch):
    """The forward comes from the kernels and the gradients from the composite's backward: gradcheck (finite
    differences of the kernels' float64 forward against that backward) shows they describe one function."""
    import dcn_deploy
    from dcn_deploy.plugin import native

    calls = []
    real = native.deform_conv2d_cuda
    monkeypatch.setattr(native, "deform_conv2d_cuda", lambda *a, **k: calls.append(a[0].dtype) or real(*a, **k))

    rng = random.Random(7)
    case = next(c for c in (random_case(rng, max_channels_per_group=3, max_size=7) for _ in range(200))
                if c.pads[:2] == c.pads[2:] and c.with_mask and c.with_bias and not c.integer_offsets)
    tensors = tuple(t.requires_grad_() for t in make_tensors(case, torch.float64, device="cuda", seed=5))
    args = dict(stride=case.stride, padding=case.pads[:2], dilation=case.dilation)

    def layer(x, off, w, b, m):
        return dcn_deploy.deform_conv2d(x, off, w, b, mask=m, **args)

    assert torch.autograd.gradcheck(layer, tensors, eps=1e-6, atol=1e-5, fast_mode=True)
    assert calls[0] == torch.float32 and len(calls) > 2 and set(calls[1:]) == {torch.float64}, calls  # kernels ran


def test_a_device_the_kernels_cannot_run_on_keeps_the_composite_with_a_warning(op_on_kernels, monkeypatch):
    """A build without this GPU's architecture fails every launch: the probe finds it once, warns, and the op runs
    its composite on that device from then on."""
    import dcn_deploy
    from dcn_deploy.plugin import native

    def no_kernel_image(*args, **kwargs):
        raise native.NativeError(3, "CUDA error: no kernel image is available for execution on the device")

    monkeypatch.setattr(native, "deform_conv2d_cuda", no_kernel_image)
    case = _SYMMETRIC[0]
    x, off, w, b, m = make_tensors(case, torch.float32, device="cuda", seed=1)
    with pytest.warns(RuntimeWarning, match="does not run on .*no kernel image.*--cuda-archs"):
        got = dcn_deploy.deform_conv2d(x, off, w, b, stride=case.stride, padding=case.pads[:2],
                                       dilation=case.dilation, mask=m)
    assert max_relative_error(got, expected_for(case, (x, off, w, b, m))) < TOLERANCE[torch.float32]
    assert op_on_kernels._CUDA_DEVICE_RUNS == {torch.cuda.current_device(): False}


def test_an_error_that_says_nothing_of_the_device_propagates_and_is_not_recorded(op_on_kernels, monkeypatch):
    """Only the library's own CUDA launch errors (or a wrong result) mean the kernels cannot run on a device; a bad
    setting (invalid argument) is the user's to see, and the next forward probes again."""
    import dcn_deploy
    from dcn_deploy.plugin import native

    def bad_setting(*args, **kwargs):
        raise native.NativeError(1, "DCN_DEPLOY_GEMM_OUTPUT must be one of auto, direct, staged, got 'stagged'")

    monkeypatch.setattr(native, "deform_conv2d_cuda", bad_setting)
    case = _SYMMETRIC[0]
    x, off, w, b, m = make_tensors(case, torch.float32, device="cuda", seed=2)
    for _ in range(2):
        with pytest.raises(native.NativeError, match="stagged"):
            dcn_deploy.deform_conv2d(x, off, w, b, stride=case.stride, padding=case.pads[:2],
                                     dilation=case.dilation, mask=m)
        assert op_on_kernels._CUDA_DEVICE_RUNS == {}
