"""The fast CPU forward (``dcn_deform_conv2d_forward_cpu`` in the host library; for dense layers its sampling,
``dcn_deform_conv2d_columns_cpu``, then torch's matrix product) against the torch composite, and its use by
:func:`dcn_deploy.deform_conv2d` on the CPU.

The composite (``_forward_composite``) is the reference here, called directly: ``deform_conv2d`` itself may now
run the native forward.
"""
from __future__ import annotations

import ctypes
import os
import random
import warnings

import pytest
import torch
import torch.nn.functional as F

from dcn_deploy.ops import deform_conv as dc
from dcn_deploy.ops import native_paths
from dcn_deploy.plugin import native as native_module
from dcn_deploy.plugin.native import DTYPE_CODES, DeformConvDesc, NativeError, NativeLibrary, deform_conv2d_cpu
from plugin_configs import Case, make_tensors, max_relative_error, reference

ENTRIES = ("dcn_deform_conv2d_forward_cpu", "dcn_deform_conv2d_columns_cpu", "dcn_channels_last_cpu", "dcn_prefault_cpu")


@pytest.fixture(scope="module")
def cpu_lib(host_library_path) -> NativeLibrary:
    path = host_library_path
    lib = NativeLibrary(path)
    missing = [entry for entry in ENTRIES if not lib.has(entry)]
    if missing:
        pytest.skip(f"{path} predates {missing}; rebuild with `dcn-deploy plugin build`")
    return lib


def random_case(rng: random.Random) -> Case:
    """Mostly grouped layers: channels per group 1 (depth-wise) to 9, channel multiplier 1 to 9 (more than one
    8-wide register of output channels), offset groups any divisor of C, asymmetric everything, H or W of 1,
    and sometimes offsets far enough to push samples off the image."""
    while True:
        groups = rng.choice([1, 2, 3, 4, 8])
        cpg = rng.choice([1, 1, 2, 3, 5, 9])
        in_channels = groups * cpg
        case = Case(
            batch=rng.randint(1, 3), groups=groups,
            offset_groups=rng.choice([d for d in range(1, in_channels + 1) if in_channels % d == 0]),
            in_channels=in_channels, out_channels=groups * rng.choice([1, 2, 3, 9]),
            height=rng.choice([1, rng.randint(1, 10)]), width=rng.choice([1, rng.randint(2, 14)]),
            kernel=(rng.randint(1, 3), rng.randint(1, 3)), stride=(rng.randint(1, 3), rng.randint(1, 3)),
            pads=tuple(rng.randint(0, 2) for _ in range(4)), dilation=(rng.randint(1, 2), rng.randint(1, 2)),
            with_mask=rng.random() < 0.6, with_bias=rng.random() < 0.6,
            offset_scale=rng.choice([0.5, 2.0, 2.0, 25.0]))
        oh, ow = case.out_size
        if oh >= 1 and ow >= 1:
            return case


def composite(case: Case, x, off, w, b, m) -> torch.Tensor:
    """The torch composite; asymmetric padding = zero-padding the input (out-of-image samples are zero)."""
    t, l, bottom, r = case.pads
    if (t, l) != (bottom, r):
        x = F.pad(x, (l, r, t, bottom))
        t, l = 0, 0
    return dc._forward_composite(x, off, w, b, m, case.stride, (t, l), case.dilation)


def native(lib, case: Case, x, off, w, b, m, **kwargs) -> torch.Tensor:
    return deform_conv2d_cpu(x, off, w, b, stride=case.stride, padding=case.pads, dilation=case.dilation, mask=m,
                             library=lib, **kwargs)


@pytest.mark.parametrize("seed", range(60))
def test_random_configs_float32_match_composite(cpu_lib, seed):
    case = random_case(random.Random(seed))
    tensors = make_tensors(case, torch.float32, seed=seed)
    got = native(cpu_lib, case, *tensors)
    expected = composite(case, *tensors)
    assert got.shape == expected.shape, case
    assert max_relative_error(got, expected) < 1e-5, case


@pytest.mark.parametrize("seed", range(1000, 1012))
def test_random_configs_float64_match_composite(cpu_lib, seed):
    case = random_case(random.Random(seed))
    tensors = make_tensors(case, torch.float64, seed=seed)
    assert max_relative_error(native(cpu_lib, case, *tensors), composite(case, *tensors)) < 1e-12, case


@pytest.mark.parametrize("groups,offset_groups,multiplier", [(16, 4, 1), (16, 16, 2), (128, 1, 1), (128, 2, 3)])
def test_wide_layer_several_tiles_per_row(cpu_lib, groups, offset_groups, multiplier):
    # 128 channels x 9 kernel points: a row is cut into tiles of a few pixels, with a short last one (width 23).
    case = Case(batch=2, groups=groups, offset_groups=offset_groups, in_channels=128,
                out_channels=groups * multiplier, height=6, width=23, kernel=(3, 3), stride=(1, 1), pads=(1, 1, 1, 1),
                dilation=(1, 1), with_mask=True, with_bias=True, offset_scale=2.0)
    tensors = make_tensors(case, torch.float32, seed=groups + offset_groups + multiplier)
    got = native(cpu_lib, case, *tensors)
    assert max_relative_error(got, composite(case, *tensors)) < 1e-5
    # Threads split rows, never an output element: any thread count gives the same bits.
    assert torch.equal(got, native(cpu_lib, case, *tensors, num_threads=1))
    assert torch.equal(got, native(cpu_lib, case, *tensors, num_threads=3))


@pytest.mark.parametrize("dtype,tolerance", [(torch.float32, 1e-5), (torch.float64, 1e-12)])
@pytest.mark.parametrize("in_per_group,out_per_group,width", [
    (16, 16, 13), (32, 32, 7), (4, 32, 5), (8, 24, 11), (2, 48, 9), (3, 17, 2), (160, 16, 7)])
def test_grouped_contraction_register_blocks(cpu_lib, dtype, tolerance, in_per_group, out_per_group, width):
    """The grouped contraction's register blocks: 6 pixels x 2 vectors where a group's output channels fill pairs of
    vectors (float32 groups of 16, 32, 48; every float64 layer), else 8 pixels x 1 vector (24 and 17 in float32:
    several blocks, and one padded). Output rows of widths that leave a short last block of pixels (one pixel wide
    with 17), and with 160 input channels per group tiles of one block each (a column of 2880 values a pixel)."""
    case = Case(batch=2, groups=3, offset_groups=1, in_channels=3 * in_per_group, out_channels=3 * out_per_group,
                height=3, width=width, kernel=(3, 2), stride=(1, 1), pads=(1, 0, 1, 1), dilation=(1, 2),
                with_mask=True, with_bias=True, offset_scale=2.0)
    tensors = make_tensors(case, dtype, seed=in_per_group * 100 + out_per_group)
    got = native(cpu_lib, case, *tensors)
    assert max_relative_error(got, composite(case, *tensors)) < tolerance, case


@pytest.fixture(scope="module")
def baseline_lib(host_library_path):
    """The host library built with the x86-64 baseline's code only (no AVX2 versions; CMake's
    dcn_deploy_host_baseline, beside the host library, built here on demand: a plain build leaves it out): what a
    CPU without AVX2 runs, which the host library never runs on an AVX2 machine."""
    import subprocess

    build_dir = host_library_path.parent.parent
    if not (build_dir / "CMakeCache.txt").is_file():
        pytest.skip(f"{host_library_path} is not in a CMake build folder to build the baseline library in")
    built = subprocess.run(["cmake", "--build", str(build_dir), "--target", "dcn_deploy_host_baseline"],
                           capture_output=True, text=True, timeout=900)
    output = built.stdout + built.stderr
    if built.returncode != 0 and ("unknown target" in output or "No rule to make target" in output):
        pytest.skip("CMake defines dcn_deploy_host_baseline only for GCC on x86-64")
    assert built.returncode == 0, output
    return NativeLibrary(host_library_path.parent / "libdcn_deploy_host_baseline.so")


@pytest.mark.parametrize("in_per_group,out_per_group,width", [(16, 16, 13), (32, 32, 7), (8, 24, 11), (160, 16, 7)])
@pytest.mark.parametrize("dtype,tolerance", [(torch.float32, 1e-5), (torch.float64, 1e-12)])
def test_baseline_build_register_blocks(baseline_lib, dtype, tolerance, in_per_group, out_per_group, width):
    """The baseline code's register blocks (16-byte vectors, 3 or 4 pixels), on the layers of the test above."""
    case = Case(batch=2, groups=3, offset_groups=1, in_channels=3 * in_per_group, out_channels=3 * out_per_group,
                height=3, width=width, kernel=(3, 2), stride=(1, 1), pads=(1, 0, 1, 1), dilation=(1, 2),
                with_mask=True, with_bias=True, offset_scale=2.0)
    tensors = make_tensors(case, dtype, seed=in_per_group * 100 + out_per_group)
    assert max_relative_error(native(baseline_lib, case, *tensors), composite(case, *tensors)) < tolerance, case


@pytest.mark.parametrize("seed", range(3000, 3016))
def test_baseline_build_random_configs(baseline_lib, seed):
    """The baseline code of every CPU forward: grouped and depth-wise layers (the whole forward), dense ones (the
    sampling), a channels-last input for some, against the composite."""
    rng = random.Random(seed)
    case = random_case(rng)
    if seed % 4 == 0:
        case = Case(**{**case.__dict__, "groups": 1, "out_channels": rng.randint(1, 12)})
    tensors = make_tensors(case, torch.float32, seed=seed)
    if seed % 2:
        tensors = (tensors[0].contiguous(memory_format=torch.channels_last),) + tuple(tensors[1:])
    got = native(baseline_lib, case, *tensors)
    assert max_relative_error(got, composite(case, *tensors)) < 1e-5, case


@pytest.mark.parametrize("width", [8200, 300])
def test_grouped_rows_past_and_within_the_row_buffer(cpu_lib, width):
    """An NCHW output row goes through a per-thread buffer of at most 2^19 elements (oC x oW) and then out channel by
    channel; a wider row (64 x 8200) is written tile by tile. Both against the composite, and the same bits on any
    thread count (a row is one thread's), in both layouts."""
    case = Case(batch=2, groups=16, offset_groups=4, in_channels=64, out_channels=64, height=3, width=width,
                kernel=(3, 3), stride=(1, 1), pads=(1, 1, 1, 1), dilation=(1, 1), with_mask=True, with_bias=True,
                offset_scale=3.0)
    tensors = make_tensors(case, torch.float32, seed=width)
    got = native(cpu_lib, case, *tensors, num_threads=2)
    assert max_relative_error(got, composite(case, *tensors)) < 1e-5
    assert torch.equal(got, native(cpu_lib, case, *tensors, num_threads=1))
    x_last = tensors[0].contiguous(memory_format=torch.channels_last)
    assert torch.equal(native(cpu_lib, case, x_last, *tensors[1:], num_threads=2), got)


@pytest.mark.parametrize("batch,offset_groups,pads", [(2, 1, (1, 1, 1, 1)), (3, 4, (0, 2, 1, 0))])
def test_dense_layer_sampled_in_several_slices(cpu_lib, monkeypatch, batch, offset_groups, pads):
    # 3 KiB would be 5 pixels of 16 channels x 9 points; the floor of 16 pixels per slice applies: slices cross
    # rows and end short (7 x 11 outputs = 77 = 4 x 16 + 13, or 66 with the asymmetric pads).
    monkeypatch.setattr(native_module, "_DENSE_SLICE_BYTES", 3 << 10)
    case = Case(batch=batch, groups=1, offset_groups=offset_groups, in_channels=16, out_channels=12, height=7,
                width=11, kernel=(3, 3), stride=(1, 1), pads=pads, dilation=(1, 1), with_mask=True, with_bias=True,
                offset_scale=6.0)
    tensors = make_tensors(case, torch.float32, seed=batch + offset_groups)
    got = native(cpu_lib, case, *tensors)
    assert max_relative_error(got, composite(case, *tensors)) < 1e-5
    assert torch.equal(got, native(cpu_lib, case, *tensors, num_threads=1))
    assert torch.equal(got, native(cpu_lib, case, *tensors, num_threads=3))


@pytest.mark.parametrize("seed", range(2000, 2016))
def test_channels_last_input_is_sampled_in_place_with_the_same_bits(cpu_lib, monkeypatch, seed):
    """A channels-last input is read where it is (the dense sampling's (N, H, W, C) table, the grouped forward's
    DCN_FORWARD_CHANNELS_LAST) and gives a channels-last output with the NCHW input's values bit for bit. Random
    configurations (asymmetric everything, H or W of 1, samples off the image), float32 and float64."""
    rng = random.Random(seed)
    case = random_case(rng)
    if seed % 2 == 0:  # half of them dense, the path that reads the input in place
        case = Case(**{**case.__dict__, "groups": 1, "out_channels": rng.randint(1, 12)})
    dtype = torch.float64 if seed % 3 == 0 else torch.float32
    x, off, w, b, m = make_tensors(case, dtype, seed=seed)
    if case.groups == 1:
        w = torch.randn(case.out_channels, case.in_channels, *case.kernel, dtype=dtype,
                        generator=torch.Generator().manual_seed(seed))
    want = native(cpu_lib, case, x, off, w, b, m)
    calls = []
    real_call = cpu_lib.call
    monkeypatch.setattr(cpu_lib, "call", lambda entry, *args: (calls.append(entry), real_call(entry, *args))[1])
    x_last = x.contiguous(memory_format=torch.channels_last)
    got = native(cpu_lib, case, x_last, off, w, b, m)
    assert torch.equal(got, want), case
    channels_last = not x.is_contiguous(memory_format=torch.channels_last)  # not both (C or H*W of 1)
    assert got.is_contiguous(memory_format=torch.channels_last) if channels_last else got.is_contiguous(), case
    # the input is never copied to NCHW; a dense layer makes one library copy: the output's transpose where the
    # input is channels-last, the input's table where it is NCHW too (C or H*W of 1); a grouped layer none
    assert calls.count("dcn_channels_last_cpu") == int(case.groups == 1), (case, calls)


def test_dense_layer_in_slices_with_more_outputs_than_column_values(cpu_lib, monkeypatch):
    # A 1x1 kernel on 4 channels has 4 column values per pixel for 40 outputs: a slice's output is larger than its
    # columns, so the product's transpose cannot be staged in the columns' memory.
    monkeypatch.setattr(native_module, "_DENSE_SLICE_BYTES", 1 << 8)
    case = Case(batch=2, groups=1, offset_groups=2, in_channels=4, out_channels=40, height=6, width=9, kernel=(1, 1),
                stride=(1, 1), pads=(0, 0, 0, 0), dilation=(1, 1), with_mask=True, with_bias=True, offset_scale=3.0)
    tensors = make_tensors(case, torch.float32, seed=11)
    assert max_relative_error(native(cpu_lib, case, *tensors), composite(case, *tensors)) < 1e-5


@pytest.mark.parametrize("in_channels_per_group", [2, 4], ids=["grouped", "dense"])
def test_inputs_that_require_grad(cpu_lib, in_channels_per_group):
    # a trained module's Parameter straight in: the result is a plain tensor (not differentiable), not an error
    g = torch.Generator().manual_seed(3)
    weight = torch.nn.Parameter(torch.randn(6, in_channels_per_group, 3, 3, generator=g))
    x, off = torch.randn(1, 4, 5, 5, generator=g), torch.randn(1, 18, 5, 5, generator=g)
    bias = torch.nn.Parameter(torch.randn(6, generator=g))
    got = deform_conv2d_cpu(x, off, weight, bias, padding=1, library=cpu_lib)
    assert not got.requires_grad
    with torch.no_grad():
        expected = dc._forward_composite(x, off, weight, bias, None, (1, 1), (1, 1), (1, 1))
    assert max_relative_error(got, expected) < 1e-5


def test_samples_far_off_the_image_give_the_bias(cpu_lib):
    x = torch.randn(1, 8, 5, 6)
    w = torch.randn(8, 2, 3, 3)
    b = torch.randn(8)
    off = torch.full((1, 36, 5, 6), 40.0)
    off[:, 1::2] = -40.0
    got = deform_conv2d_cpu(x, off, w, b, padding=1, library=cpu_lib)
    assert torch.equal(got, b.view(1, 8, 1, 1).expand(1, 8, 5, 6))


def test_empty_batch(cpu_lib):
    out = deform_conv2d_cpu(torch.randn(0, 4, 5, 5), torch.randn(0, 18, 5, 5), torch.randn(6, 2, 3, 3), padding=1,
                            library=cpu_lib)
    assert out.shape == (0, 6, 5, 5)
    # through the op as well (grouped, so the native path would be chosen)
    out = dc.deform_conv2d(torch.randn(0, 4, 5, 5), torch.randn(0, 18, 5, 5), torch.randn(6, 2, 3, 3), padding=1)
    assert out.shape == (0, 6, 5, 5)


# ---- deform_conv2d: dispatch to the native forward ----

def test_dispatch_decision(cpu_lib, monkeypatch):
    monkeypatch.delenv(native_paths.NATIVE_CPU_ENV, raising=False)
    x = torch.randn(1, 8, 5, 5)
    assert native_paths.cpu_library_for(x) is not None
    assert native_paths.cpu_library_for(x.double()) is not None
    assert native_paths.cpu_library_for(x.half()) is None  # upcast before asking
    for off in ("0", "false", "OFF", "no"):
        monkeypatch.setenv(native_paths.NATIVE_CPU_ENV, off)
        assert native_paths.cpu_library_for(x) is None, off
    for on in ("1", "true", "On", ""):
        monkeypatch.setenv(native_paths.NATIVE_CPU_ENV, on)
        assert native_paths.cpu_library_for(x) is not None, on
    monkeypatch.setenv(native_paths.NATIVE_CPU_ENV, "disabled please")  # neither: kept on, and said so
    with pytest.warns(UserWarning, match=r"DCN_DEPLOY_NATIVE_CPU='disabled please' is neither on .* nor off"):
        assert native_paths.cpu_library_for(x) is not None


def test_composite_forward_turns_off_every_compiled_path_in_its_thread_only(cpu_lib, monkeypatch):
    import threading

    monkeypatch.setenv(native_paths.NATIVE_CPU_ENV, "1")
    x = torch.randn(1, 8, 5, 5)
    calls = []
    real = native_paths.forward_cpu
    monkeypatch.setattr(native_paths, "forward_cpu", lambda *args: calls.append(1) or real(*args))
    args = (x, torch.randn(1, 18, 5, 5), torch.randn(4, 8, 3, 3))
    inside, other_thread_ran = threading.Event(), threading.Event()

    def other_thread():  # runs while the main thread is inside the block: its forwards stay on the host library
        inside.wait(10)
        assert native_paths.cpu_library_for(x) is not None
        dc.deform_conv2d(*args, padding=1)
        other_thread_ran.set()

    worker = threading.Thread(target=other_thread)
    worker.start()
    with native_paths.composite_forward():
        assert native_paths.cpu_library_for(x) is None and native_paths.cuda_library_for(x) is None
        dc.deform_conv2d(*args, padding=1)
        inside.set()
        assert other_thread_ran.wait(30)
        with pytest.raises(KeyError):  # an error inside still ends the block
            with native_paths.composite_forward():
                raise KeyError("x")
        assert native_paths.cpu_library_for(x) is None
    worker.join()
    assert calls == [1]  # the other thread's forward only
    assert os.environ[native_paths.NATIVE_CPU_ENV] == "1"  # the user's own setting is never touched
    dc.deform_conv2d(*args, padding=1)
    assert calls == [1, 1]


def test_the_binding_speaks_the_headers_abi_version_and_a_stale_library_is_not_used(cpu_lib, monkeypatch):
    import re
    from pathlib import Path

    header = (Path(__file__).resolve().parents[1] / "plugins" / "common" / "dcn_kernels.h").read_text()
    assert int(re.search(r"#define DCN_ABI_VERSION (\d+)", header).group(1)) == native_module.ABI_VERSION
    assert int(re.search(r"DCN_FORWARD_ALLOW_TF32 = (\d+)", header).group(1)) == native_module.DCN_FORWARD_ALLOW_TF32
    assert cpu_lib.abi_version == native_module.ABI_VERSION
    monkeypatch.setattr(native_module, "ABI_VERSION", native_module.ABI_VERSION + 1)  # as if the build were stale
    monkeypatch.setattr(native_module, "_LOADED", {})
    with pytest.raises(native_module.StaleLibraryError,
                       match=rf"{re.escape(str(cpu_lib.path))} is a stale build: it speaks C ABI version "
                             rf"{cpu_lib.abi_version}, this package speaks {cpu_lib.abi_version + 1}\. Rebuild it "
                             r"\(dcn-deploy plugin build\)"):
        native_module.load_library("host", cpu_lib.path)  # what a benchmark or a test calls: refused, not called
    native_paths._cpu_library.cache_clear()
    try:
        with pytest.warns(RuntimeWarning, match=r"is not used \(it is a stale build .*dcn-deploy plugin build"):
            assert native_paths.cpu_library_for(torch.randn(1, 2, 3, 3)) is None
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # said once: the answer is cached
            assert native_paths.cpu_library_for(torch.randn(1, 2, 3, 3)) is None
    finally:
        native_paths._cpu_library.cache_clear()


# bfloat16: both sides compute in float32 and round once, so they differ by at most one bfloat16 ulp
@pytest.mark.parametrize("in_channels_per_group", [3, 12], ids=["grouped", "dense"])
@pytest.mark.parametrize("dtype,tolerance", [(torch.float32, 1e-5), (torch.float64, 1e-12), (torch.bfloat16, 1.6e-2)])
def test_deform_conv2d_same_with_and_without_native(cpu_lib, monkeypatch, dtype, tolerance, in_channels_per_group):
    g = torch.Generator().manual_seed(5)
    x = torch.randn(2, 12, 9, 8, generator=g).to(dtype)
    off = (torch.randn(2, 2 * 3 * 6, 5, 8, generator=g) * 2).to(dtype)
    w = torch.randn(8, in_channels_per_group, 3, 2, generator=g).to(dtype)
    b = torch.randn(8, generator=g).to(dtype)
    m = torch.rand(2, 3 * 6, 5, 8, generator=g).to(dtype)
    kwargs = dict(stride=(2, 1), padding=(1, 1), dilation=(1, 2), mask=m)
    calls = []
    real = native_paths.forward_cpu
    monkeypatch.setattr(native_paths, "forward_cpu", lambda *args: calls.append(1) or real(*args))
    monkeypatch.setenv(native_paths.NATIVE_CPU_ENV, "1")
    with_native = dc.deform_conv2d(x, off, w, b, **kwargs)
    assert calls, "the CPU layer did not take the native path"
    monkeypatch.setenv(native_paths.NATIVE_CPU_ENV, "0")
    without = dc.deform_conv2d(x, off, w, b, **kwargs)
    assert len(calls) == 1
    assert with_native.dtype == dtype and with_native.shape == without.shape == (2, 8, 5, 8)
    assert max_relative_error(with_native, without) < tolerance


def test_native_forward_keeps_the_composite_gradients(cpu_lib, monkeypatch):
    g = torch.Generator().manual_seed(9)
    leaves = [torch.randn(1, 6, 5, 5, generator=g), torch.randn(1, 2 * 2 * 9, 5, 5, generator=g),
              torch.randn(6, 2, 3, 3, generator=g), torch.randn(6, generator=g), torch.rand(1, 2 * 9, 5, 5, generator=g)]
    grad_out = torch.randn(1, 6, 5, 5, generator=g)
    results = {}
    for flag in ("1", "0"):
        monkeypatch.setenv(native_paths.NATIVE_CPU_ENV, flag)
        ts = [t.clone().requires_grad_() for t in leaves]
        out = dc.deform_conv2d(ts[0], ts[1], ts[2], ts[3], padding=1, mask=ts[4])
        out.backward(grad_out)
        results[flag] = (out.detach(), [t.grad for t in ts])
    assert max_relative_error(results["1"][0], results["0"][0]) < 1e-5
    for a, b in zip(results["1"][1], results["0"][1]):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-5)


# ---- bad arguments: an error code and a message, never a crash ----

def _desc(**overrides) -> DeformConvDesc:
    values = dict(batch=1, in_channels=4, height=5, width=5, out_channels=4, kernel_h=3, kernel_w=3, stride_h=1,
                  stride_w=1, pad_top=1, pad_left=1, pad_bottom=1, pad_right=1, dilation_h=1, dilation_w=1, group=2,
                  offset_group=1)
    values.update(overrides)
    return DeformConvDesc(**values)


@pytest.mark.parametrize("overrides,fragment", [
    ({"group": 3}, "group"),
    ({"offset_group": 3}, "offset_group"),
    ({"stride_w": 0}, "strides"),
    ({"dilation_h": 0}, "dilations"),
    ({"pad_bottom": -1}, "pads"),
    ({"kernel_h": 9, "pad_top": 0, "pad_bottom": 0}, "empty"),
    ({"width": 0}, "W"),
    ({"batch": -1}, "batch"),
])
def test_invalid_descriptor_returns_error_code_and_message(cpu_lib, overrides, fragment):
    buf = ctypes.create_string_buffer(4096)
    code = cpu_lib.lib.dcn_deform_conv2d_forward_cpu(ctypes.byref(_desc(**overrides)), DTYPE_CODES["float32"],
                                                     buf, buf, buf, None, None, buf, 1, 0)
    assert code == 1
    assert fragment in cpu_lib.last_error()


def test_null_pointers_dtype_and_threads_are_rejected(cpu_lib):
    buf = ctypes.create_string_buffer(4096)
    fn = cpu_lib.lib.dcn_deform_conv2d_forward_cpu
    assert fn(None, 0, buf, buf, buf, None, None, buf, 1, 0) == 1
    assert fn(ctypes.byref(_desc()), 0, buf, None, buf, None, None, buf, 1, 0) == 1
    assert "NULL" in cpu_lib.last_error()
    assert fn(ctypes.byref(_desc()), 0, buf, buf, buf, None, None, buf, -1, 0) == 1
    assert "num_threads" in cpu_lib.last_error()
    assert fn(ctypes.byref(_desc()), 0, buf, buf, buf, None, None, buf, 1, 1) == 1
    assert "flags must be 0 or DCN_FORWARD_CHANNELS_LAST (2), got 1" in cpu_lib.last_error()
    for dtype in (DTYPE_CODES["float16"], DTYPE_CODES["bfloat16"], 9):
        assert fn(ctypes.byref(_desc()), dtype, buf, buf, buf, None, None, buf, 1, 0) == 2
        assert "float32" in cpu_lib.last_error()
    assert cpu_lib.output_size(_desc()) == (5, 5)  # a later success clears the message
    assert cpu_lib.last_error() == ""


def test_python_front_end_errors(cpu_lib):
    x = torch.randn(1, 4, 5, 5)
    with pytest.raises(TypeError, match="weight"):
        deform_conv2d_cpu(x, torch.randn(1, 18, 5, 5), torch.randn(4, 2, 3, 3, dtype=torch.float64), padding=1,
                          library=cpu_lib)
    with pytest.raises(NativeError, match="float16"):
        deform_conv2d_cpu(x.half(), torch.randn(1, 18, 5, 5).half(), torch.randn(4, 2, 3, 3).half(), padding=1,
                          library=cpu_lib)


def test_columns_entry_rejects_bad_ranges_pointers_and_dtypes(cpu_lib):
    buf = ctypes.create_string_buffer(4 * 25 * 9 * 4)
    fn = cpu_lib.lib.dcn_deform_conv2d_columns_cpu
    desc = ctypes.byref(_desc(group=1))  # 5x5 output: pixels [0, 25)
    f32 = DTYPE_CODES["float32"]
    assert fn(desc, f32, buf, buf, None, 0, 20, 5, buf, 1) == 0
    for image, begin, count, fragment in [
            (1, 0, 5, "image 1 is outside the batch [0, 1)"), (-1, 0, 5, "image -1 is outside the batch [0, 1)"),
            (0, 21, 5, "pixel_begin 21 and pixel_count 5 must lie inside the output plane [0, 25)"),
            (0, -1, 5, "pixel_begin -1 and"), (0, 0, -2, "pixel_count -2 must"), (0, 26, 0, "pixel_begin 26 and"),
            (0, 2 ** 63 - 2, 5, "pixel_count 5 must")]:  # the last: begin + count overflows int64
        assert fn(desc, f32, buf, buf, None, image, begin, count, buf, 1) == 1
        assert fragment in cpu_lib.last_error()
    assert fn(desc, f32, buf, None, None, 0, 0, 5, buf, 1) == 1
    assert "NULL" in cpu_lib.last_error()
    assert fn(desc, f32, buf, buf, None, 0, 0, 5, buf, -1) == 1
    assert "num_threads" in cpu_lib.last_error()
    assert fn(desc, DTYPE_CODES["float16"], buf, buf, None, 0, 0, 5, buf, 1) == 2
    assert "float32" in cpu_lib.last_error()
    assert fn(ctypes.byref(_desc(group=3)), f32, buf, buf, None, 0, 0, 5, buf, 1) == 1
    assert "group" in cpu_lib.last_error()


@pytest.mark.parametrize("onednn", [True, False])
def test_dense_product_either_way_matches_the_reference(cpu_lib, onednn):
    """The dense float32 forward's product: a oneDNN convolution over whole output rows of columns, or (oneDNN off)
    the matrix product; slices of several rows and a last, shorter one (a small slice budget), batch 2."""
    import dcn_deploy.plugin.native as native

    case = Case(2, 1, 1, 8, 12, 9, 7, (3, 3), (1, 2), (1, 1, 2, 0), (2, 1), True, True, 3.0, False)
    tensors = make_tensors(case, torch.float32, seed=5)
    x, off, w, b, m = tensors
    expected = reference(case, *[None if t is None else t.double() for t in tensors])
    previous = torch.backends.mkldnn.enabled
    budget = native._DENSE_SLICE_BYTES
    try:
        torch.backends.mkldnn.enabled = onednn
        native._DENSE_SLICE_BYTES = 2 * case.out_size[1] * 9 * case.in_channels * 4  # two output rows a slice
        got = native.deform_conv2d_cpu(x, off, w, b, stride=case.stride, padding=case.pads, dilation=case.dilation,
                                       mask=m, library=cpu_lib)
    finally:
        torch.backends.mkldnn.enabled = previous
        native._DENSE_SLICE_BYTES = budget
    assert got.shape == expected.shape and max_relative_error(got, expected) < 1e-5


# ---- the layout helpers the dense forward's Python side calls ----

@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("threads", [1, 3])
@pytest.mark.parametrize("channels,height,width", [(37, 9, 13), (150, 7, 11), (5, 3, 4), (64, 8, 8)])
def test_channels_last_copy_matches_torch(cpu_lib, dtype, threads, channels, height, width):
    """dcn_channels_last_cpu moves elements (any dtype: NaN payloads and -0.0 survive) exactly as torch's permuted
    copy, for odd sizes that leave partial blocks (64 x 64) and tiles (a cache line of channels x 8 pixels) of
    pixels and channels, fewer channels than a tile, and whole blocks only."""
    x = torch.randn(2, channels, height, width).to(dtype)
    x[0, 0, 0, 0], x[1, channels - 1, height - 1, width - 1] = float("nan"), -0.0
    out = torch.empty(2, height, width, channels, dtype=dtype)
    cpu_lib.call("dcn_channels_last_cpu", DTYPE_CODES[str(dtype)[6:]], x.data_ptr(), out.data_ptr(), 2, channels,
                 height * width, threads)
    bits = {2: torch.int16, 4: torch.int32, 8: torch.int64}[dtype.itemsize]  # compared bit for bit
    assert torch.equal(out.view(bits), x.permute(0, 2, 3, 1).contiguous().view(bits))


def test_channels_last_copy_of_a_large_table_and_prefault(cpu_lib):
    """From 32 MiB the output is faulted in first (huge-page advice, one call): the copy is still exact, and
    dcn_prefault_cpu leaves a buffer's contents as they were."""
    x = torch.randn(1, 64, 384, 384)  # 36 MiB
    out = torch.empty(1, 384, 384, 64)
    cpu_lib.call("dcn_channels_last_cpu", 0, x.data_ptr(), out.data_ptr(), 1, 64, 384 * 384, 2)
    assert torch.equal(out, x.permute(0, 2, 3, 1))
    before = out.clone()
    cpu_lib.call("dcn_prefault_cpu", out.data_ptr(), out.numel() * 4)
    assert torch.equal(out, before)


def test_layout_helpers_reject_bad_arguments(cpu_lib):
    x = torch.zeros(4)
    with pytest.raises(NativeError, match="batch, channels and plane must be >= 0, got 1, -2, 2"):
        cpu_lib.call("dcn_channels_last_cpu", 0, x.data_ptr(), x.data_ptr(), 1, -2, 2, 1)
    with pytest.raises(NativeError, match="dtype 9 is not one of"):
        cpu_lib.call("dcn_channels_last_cpu", 9, x.data_ptr(), x.data_ptr(), 1, 2, 2, 1)
    with pytest.raises(NativeError, match="num_threads must be >= 0"):
        cpu_lib.call("dcn_channels_last_cpu", 0, x.data_ptr(), x.data_ptr(), 1, 2, 2, -1)
    with pytest.raises(NativeError, match="input and output must not be NULL"):
        cpu_lib.call("dcn_channels_last_cpu", 0, None, x.data_ptr(), 1, 2, 2, 1)
    # 4 * 1 * 2^62 elements wrapped to 0 in 64 bits, and the call returned success having copied nothing
    with pytest.raises(NativeError, match="batch\\*channels\\*plane = 4\\*1\\*4611686018427387904 elements do not fit"):
        cpu_lib.call("dcn_channels_last_cpu", 0, x.data_ptr(), x.data_ptr(), 4, 1, 2**62, 1)
    with pytest.raises(NativeError, match="bytes must be >= 0 and data not NULL, got -1 bytes"):
        cpu_lib.call("dcn_prefault_cpu", x.data_ptr(), -1)
