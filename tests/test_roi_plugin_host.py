"""The deformable RoI pooling kernels (plugins/deform_roi_pool) through their C ABI, against the PyTorch reference.

The host build runs the same per-element arithmetic (roiPoolMath.h) as the CUDA kernels, so CPU machines check
the kernels' indexing, rounding and boundary rules; the CUDA build is checked where a GPU is present.
"""
from __future__ import annotations

import ctypes

import pytest
import torch

from dcn_deploy.ops.native_paths import composite_forward
from dcn_deploy.ops.roi_pool import deform_psroi_pool, deform_roi_pool
from dcn_deploy.plugin import library
from dcn_deploy.plugin.native_roi import PsroiPoolDesc, RoiPoolDesc
from shell_tests import run_shell_test

DTYPES = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2, torch.float64: 3}


def _load(path):
    lib = ctypes.CDLL(str(path))
    lib.dcn_last_error.restype = ctypes.c_char_p
    return lib


@pytest.fixture(scope="module")
def host_lib(tmp_path_factory):
    """The host library with the RoI pooling symbols; built host-only into a temporary folder when the one found
    predates them."""
    path = library.find_library("host")
    if path is not None and all(hasattr(_load(path), name) for name in (
            "dcn_deform_roi_pool_forward_host", "dcn_plugin_deform_psroi_pool_parse_fields")):
        return _load(path)
    if not library.repo_root().joinpath("CMakeLists.txt").is_file():
        pytest.skip("no source checkout to build the host library from")
    result = library.build_libraries(tmp_path_factory.mktemp("roi_build"), cuda=False)
    return _load(result.libraries["host"])


def _ptr(t):
    return ctypes.c_void_p(t.data_ptr()) if t is not None else None


def _check(lib, code):
    if code != 0:
        raise RuntimeError(lib.dcn_last_error().decode())


def roi_pool_host(lib, x, rois, offset, size, scale, ratio, gamma):
    d = RoiPoolDesc(*x.shape, rois.shape[0], size[0], size[1], ratio, scale, gamma)
    out = torch.empty(rois.shape[0], x.shape[1], *size, dtype=x.dtype)
    args = [x.contiguous(), rois.contiguous(), None if offset is None else offset.contiguous()]
    _check(lib, lib.dcn_deform_roi_pool_forward_host(ctypes.byref(d), DTYPES[x.dtype], *map(_ptr, args), _ptr(out)))
    return out


def psroi_pool_host(lib, x, rois, trans, scale, output_dim, group, pooled, part, samples, trans_std, no_trans):
    classes = 1 if trans is None else trans.shape[1] // 2
    d = PsroiPoolDesc(*x.shape, rois.shape[0], output_dim, group, pooled, part, samples, classes, int(no_trans),
                      scale, trans_std)
    out = torch.empty(rois.shape[0], output_dim, pooled, pooled, dtype=x.dtype)
    args = [x.contiguous(), rois.contiguous(), None if trans is None else trans.contiguous()]
    _check(lib, lib.dcn_deform_psroi_pool_forward_host(ctypes.byref(d), DTYPES[x.dtype], *map(_ptr, args), _ptr(out)))
    return out


def _rois(gen, count, batch, extent, dtype=torch.float64):
    xy = torch.rand(count, 2, generator=gen, dtype=dtype) * extent - 0.15 * extent
    wh = torch.rand(count, 2, generator=gen, dtype=dtype) * extent * 0.7
    index = torch.randint(0, batch, (count, 1), generator=gen).to(dtype)
    return torch.cat([index, xy, xy + wh], dim=1)


# scale values exactly representable in float32, so the kernels' float attribute equals the reference's double
@pytest.mark.parametrize("ratio,size,scale", [(0, (3, 2), 0.5), (2, (2, 2), 0.25), (1, (1, 4), 1.0)])
def test_roi_pool_host_float64_matches_reference(host_lib, ratio, size, scale):
    gen = torch.Generator().manual_seed(20)
    x = torch.randn(2, 3, 9, 11, generator=gen, dtype=torch.float64)
    rois = _rois(gen, 9, 2, 11.0 / scale)
    offset = torch.randn(9, 2, *size, generator=gen, dtype=torch.float64) * 0.5
    for off in (None, offset):
        got = roi_pool_host(host_lib, x, rois, off, size, scale, ratio, 0.125)
        torch.testing.assert_close(got, deform_roi_pool(x, rois, off, size, scale, ratio, 0.125), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("classes,group,pooled,part,samples", [(1, 3, 3, 3, 2), (3, 3, 3, 2, 4), (3, 2, 3, 3, 1)])
def test_psroi_host_float64_matches_reference(host_lib, classes, group, pooled, part, samples):
    gen = torch.Generator().manual_seed(21)
    x = torch.randn(2, 3 * group * group, 8, 9, generator=gen, dtype=torch.float64)
    rois = _rois(gen, 7, 2, 18.0)
    rois[0, 1:] = torch.tensor([2.5, -1.5, 6.5, 3.5], dtype=torch.float64)  # halves: rounded away from zero
    trans = torch.randn(7, 2 * classes, part, part, generator=gen, dtype=torch.float64)
    for t, no_trans in ((trans, False), (None, True)):
        got = psroi_pool_host(host_lib, x, rois, t, 0.5, 3, group, pooled, part, samples, 0.25, no_trans)
        want = deform_psroi_pool(x, rois, t, 0.5, 3, group, pooled, part, samples, 0.25, no_trans)
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float16, 2e-3), (torch.bfloat16, 2e-2)])
def test_host_dtypes(host_lib, dtype, tol):
    # Every tensor type in and out. Whether half types are summed in float32 is checked at one unit of the type,
    # with enough samples per bin to tell, in test_cross_implementation's RoI half test.
    gen = torch.Generator().manual_seed(22)
    x = torch.randn(1, 8, 10, 10, generator=gen).to(dtype)
    rois = _rois(gen, 5, 1, 20.0, torch.float32).round().to(dtype)
    offset = (torch.randn(5, 2, 2, 2, generator=gen) * 0.3).to(dtype)
    got = roi_pool_host(host_lib, x, rois, offset, (2, 2), 0.5, 2, 0.1)
    assert got.dtype == dtype
    with composite_forward():  # the reference, not the host library's own CPU forward
        want = deform_roi_pool(x, rois, offset, 2, 0.5, 2, 0.1)
    torch.testing.assert_close(got.float(), want.float(), atol=tol, rtol=tol)
    got = psroi_pool_host(host_lib, x, rois, offset, 0.5, 2, 2, 2, 2, 2, 0.1, False)
    with composite_forward():
        want = deform_psroi_pool(x, rois, offset, 0.5, 2, 2, 2, 2, 2, 0.1, False)
    torch.testing.assert_close(got.float(), want.float(), atol=tol, rtol=tol)


def test_host_errors_and_empty(host_lib):
    x = torch.randn(1, 8, 5, 5, dtype=torch.float64)
    assert roi_pool_host(host_lib, x, torch.zeros(0, 5, dtype=torch.float64), None, (2, 2), 1.0, 0, 0.1).shape == (0, 8, 2, 2)
    with pytest.raises(RuntimeError, match="pooled_height must be >= 1, got 0"):
        roi_pool_host(host_lib, x, torch.zeros(1, 5, dtype=torch.float64), None, (0, 2), 1.0, 0, 0.1)
    with pytest.raises(RuntimeError, match="output_dim\\*group_size\\^2 = 18 channels, got 8"):
        psroi_pool_host(host_lib, x, torch.zeros(1, 5, dtype=torch.float64), None, 1.0, 2, 3, 3, 3, 1, 0.1, True)
    # a batch index out of range pools to 0 in the kernels (they cannot raise)
    out = roi_pool_host(host_lib, x, torch.tensor([[3.0, 0, 0, 4, 4]], dtype=torch.float64), None, (2, 2), 1.0, 2, 0.1)
    assert torch.count_nonzero(out) == 0


_NAN_SAMPLES_SCRIPT = """
import sys
import torch
sys.path.insert(0, sys.argv[2])
from test_roi_plugin_host import _load, psroi_pool_host, roi_pool_host
lib = _load(sys.argv[1])
x = torch.randn(1, 4, 5, 5, generator=torch.Generator().manual_seed(24), dtype=torch.float64)
rois = torch.tensor([[0.0, 1, 1, 3, 3]], dtype=torch.float64)
nan = torch.full((1, 2, 2, 2), float("nan"), dtype=torch.float64)
wide = torch.tensor([[0.0, 1, 1, float("inf"), 3]], dtype=torch.float64)
nan_batch = torch.tensor([[float("nan"), 1, 1, 3, 3]], dtype=torch.float64)
results = [roi_pool_host(lib, x, rois, nan, (2, 2), 1.0, 2, 0.1),
           psroi_pool_host(lib, x, rois, nan, 1.0, 1, 2, 2, 2, 2, 0.1, False),
           roi_pool_host(lib, x, wide, None, (2, 2), 1.0, 2, 0.1),
           roi_pool_host(lib, x, nan_batch, None, (2, 2), 1.0, 2, 0.1)]
torch.save(results, sys.argv[3])
"""


def test_nan_sample_positions_give_nan_without_reading_outside_the_input(host_lib, tmp_path):
    """A NaN offset or trans, or an infinite box, makes NaN sample positions. The clamp onto the map keeps NaN,
    and casting NaN to a pixel index read far outside the input (the host build crashed with SIGSEGV). The GPU's
    conversion gives index 0 and NaN weights, the reference NaN: the host build must agree. Run in a child
    process so that a crash fails this test instead of ending the session."""
    import subprocess
    import sys
    from pathlib import Path

    saved = tmp_path / "out.pt"
    proc = subprocess.run([sys.executable, "-c", _NAN_SAMPLES_SCRIPT, str(host_lib._name),
                           str(Path(__file__).parent), str(saved)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"child exited with {proc.returncode}: {proc.stderr[-2000:]}"
    roi_nan, psroi_nan, wide, nan_batch = torch.load(saved)
    assert torch.isnan(roi_nan).all() and torch.isnan(psroi_nan).all()
    # x2 = inf: column 0 samples at 0*inf + inf = NaN, column 1 at inf, beyond the map (0)
    assert torch.isnan(wide[..., 0]).all() and torch.count_nonzero(wide[..., 1]) == 0
    # a NaN batch index is outside [0, N): 0 (the GPU's float->int conversion would have picked image 0)
    assert torch.count_nonzero(nan_batch) == 0


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU (torch.cuda.is_available() is False)")
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-5), (torch.float16, 2e-3),
                                       (torch.bfloat16, 2e-2)])
def test_cuda_kernels_match_reference(dtype, tol):
    path = library.find_library("kernels")
    if path is None or not hasattr(_load(path), "dcn_deform_roi_pool_forward_cuda"):
        pytest.skip("libdcn_deploy_kernels.so with the RoI pooling kernels is not built (dcn-deploy plugin build)")
    lib = _load(path)
    gen = torch.Generator().manual_seed(23)
    x = torch.randn(2, 2 * 9, 12, 13, generator=gen, dtype=torch.float64)
    rois = _rois(gen, 300, 2, 26.0)
    offset = torch.randn(300, 2, 3, 3, generator=gen, dtype=torch.float64) * 0.3
    cast = [t.to(dtype) for t in (x, rois, offset)]
    # gamma and trans_std exactly representable in float32 (the kernels' attribute type), so float64 agrees to 1e-12
    want_roi = deform_roi_pool(*cast, 3, 0.5, 0, 0.125).float()
    want_ps = deform_psroi_pool(cast[0], cast[1], cast[2], 0.5, 2, 3, 3, 3, 4, 0.125, False).float()
    dev = [t.cuda() for t in cast]
    out = torch.empty(300, 18, 3, 3, dtype=dtype, device="cuda")
    d = RoiPoolDesc(2, 18, 12, 13, 300, 3, 3, 0, 0.5, 0.125)
    _check(lib, lib.dcn_deform_roi_pool_forward_cuda(ctypes.byref(d), DTYPES[dtype], *map(_ptr, dev), _ptr(out), None))
    torch.cuda.synchronize()
    torch.testing.assert_close(out.cpu().float(), want_roi, atol=tol, rtol=tol)
    out = torch.empty(300, 2, 3, 3, dtype=dtype, device="cuda")
    d = PsroiPoolDesc(2, 18, 12, 13, 300, 2, 3, 3, 3, 4, 1, 0, 0.5, 0.125)
    _check(lib, lib.dcn_deform_psroi_pool_forward_cuda(ctypes.byref(d), DTYPES[dtype], *map(_ptr, dev), _ptr(out), None))
    torch.cuda.synchronize()
    torch.testing.assert_close(out.cpu().float(), want_ps, atol=tol, rtol=tol)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU (torch.cuda.is_available() is False)")
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float16, 2e-3), (torch.bfloat16, 2e-2)])
def test_ops_on_a_gpu_run_the_cuda_kernels(monkeypatch, dtype, tol):
    """deform_roi_pool / deform_psroi_pool on CUDA tensors run the kernels (through native_roi, entry "cuda"), in
    the tensors' own dtype, and agree with the composite on the CPU."""
    from dcn_deploy.ops import native_paths
    from dcn_deploy.ops import roi_pool as rp

    if native_paths.cuda_library_for(torch.zeros(1, device="cuda")) is None:
        pytest.skip("the CUDA kernels library is not built or does not run on this GPU (dcn-deploy plugin build)")
    entries = []
    for name in ("deform_roi_pool_native", "deform_psroi_pool_native"):
        real = getattr(rp, name)
        monkeypatch.setattr(rp, name, lambda *a, _real=real, **k: entries.append(k["entry"]) or _real(*a, **k))
    gen = torch.Generator().manual_seed(25)
    x = torch.randn(2, 2 * 9, 12, 13, generator=gen).to(dtype)
    rois = _rois(gen, 50, 2, 26.0, torch.float32).to(dtype)
    offset = (torch.randn(50, 2, 3, 3, generator=gen) * 0.3).to(dtype)
    got_roi = rp.deform_roi_pool(x.cuda(), rois.cuda(), offset.cuda(), 3, 0.5, 0, 0.1)
    got_ps = rp.deform_psroi_pool(x.cuda(), rois.cuda(), offset.cuda(), 0.5, 2, 3, 3, 3, 4, 0.1, False)
    assert entries == ["cuda", "cuda"] and got_roi.dtype == dtype and got_ps.dtype == dtype
    with native_paths.composite_forward():
        want_roi = rp.deform_roi_pool(x, rois, offset, 3, 0.5, 0, 0.1)
        want_ps = rp.deform_psroi_pool(x, rois, offset, 0.5, 2, 3, 3, 3, 4, 0.1, False)
    torch.testing.assert_close(got_roi.cpu().float(), want_roi.float(), atol=tol, rtol=tol)
    torch.testing.assert_close(got_ps.cpu().float(), want_ps.float(), atol=tol, rtol=tol)


def _fields(spec):
    """(name, value, PluginFieldType code) triples -> the C arrays the parse functions take."""
    keep, names, data, lengths, types = [], [], [], [], []
    ctype = {1: ctypes.c_float, 2: ctypes.c_double, 5: ctypes.c_int32, 10: ctypes.c_int64}
    for name, value, code in spec:
        cell = ctype[code](value)
        keep.append(cell)
        names.append(name.encode())
        data.append(ctypes.cast(ctypes.byref(cell), ctypes.c_void_p))
        lengths.append(1)
        types.append(code)
    n = len(spec)
    return (n, (ctypes.c_char_p * n)(*names), (ctypes.c_void_p * n)(*data), (ctypes.c_int32 * n)(*lengths),
            (ctypes.c_int32 * n)(*types), keep)


def test_plugin_fields_parse(host_lib):
    n, names, data, lengths, types, _keep = _fields([
        ("pooled_height", 7, 5), ("pooled_width", 5, 10), ("sampling_ratio", 2, 5), ("spatial_scale", 0.0625, 1),
        ("gamma", 0.2, 2), ("plugin_namespace", 0, 5)])
    desc = RoiPoolDesc()
    _check(host_lib, host_lib.dcn_plugin_deform_roi_pool_parse_fields(n, names, data, lengths, types, ctypes.byref(desc)))
    assert (desc.pooled_height, desc.pooled_width, desc.sampling_ratio) == (7, 5, 2)
    assert desc.spatial_scale == 0.0625 and desc.gamma == pytest.approx(0.2)
    # defaults when absent: the ONNX schema's
    _check(host_lib, host_lib.dcn_plugin_deform_roi_pool_parse_fields(0, None, None, None, None, ctypes.byref(desc)))
    assert (desc.pooled_height, desc.sampling_ratio, desc.gamma) == (1, 2, pytest.approx(0.1))
    n, names, data, lengths, types, _keep = _fields([("pooled_height", 0, 5)])
    with pytest.raises(RuntimeError, match="DeformRoIPool: pooled_height must be >= 1, got 0"):
        _check(host_lib, host_lib.dcn_plugin_deform_roi_pool_parse_fields(n, names, data, lengths, types,
                                                                           ctypes.byref(desc)))
    n, names, data, lengths, types, _keep = _fields([("gamma", 1, 5)])
    with pytest.raises(RuntimeError, match="field 'gamma' must be a FLOAT32"):
        _check(host_lib, host_lib.dcn_plugin_deform_roi_pool_parse_fields(n, names, data, lengths, types,
                                                                           ctypes.byref(desc)))
    ps = PsroiPoolDesc()
    n, names, data, lengths, types, _keep = _fields([
        ("output_dim", 21, 5), ("group_size", 7, 5), ("pooled_size", 7, 5), ("part_size", 0, 5),
        ("sample_per_part", 4, 5), ("no_trans", 1, 5), ("trans_std", 0.1, 1), ("spatial_scale", 0.0625, 1)])
    _check(host_lib, host_lib.dcn_plugin_deform_psroi_pool_parse_fields(n, names, data, lengths, types, ctypes.byref(ps)))
    assert (ps.output_dim, ps.group_size, ps.pooled_size, ps.part_size, ps.sample_per_part, ps.no_trans) == \
        (21, 7, 7, 7, 4, 1)  # part_size 0 -> pooled_size
    assert ps.trans_std == pytest.approx(0.1) and ps.spatial_scale == 0.0625


def test_sample_counts_are_bounded_so_a_huge_one_fails_instead_of_running_for_hours(host_lib):
    """sampling_ratio and sample_per_part at most 1024 (the kernels loop over a bin's samples: 2^31 - 1 ran for
    hours); an INT64 field beyond 32 bits and a negative field count are refused, not truncated or ignored."""
    x = torch.rand(1, 2, 4, 4, dtype=torch.float64)
    rois = torch.tensor([[0.0, 0, 0, 3, 3]], dtype=torch.float64)
    with pytest.raises(RuntimeError, match="DeformRoIPool: sampling_ratio must be from 0 to 1024, got 2147483647"):
        roi_pool_host(host_lib, x, rois, None, (1, 1), 1.0, 2**31 - 1, 0.1)
    with pytest.raises(RuntimeError, match="DeformPSRoIPool: sample_per_part must be from 1 to 1024, got 1025"):
        psroi_pool_host(host_lib, x, rois, None, 1.0, 2, 1, 1, 1, 1025, 0.1, True)
    assert roi_pool_host(host_lib, x, rois, None, (1, 1), 1.0, 1024, 0.1).shape == (1, 2, 1, 1)
    desc = RoiPoolDesc()
    for spec, message in [([("sampling_ratio", 1025, 5)], "sampling_ratio must be from 0 to 1024, got 1025"),
                          ([("pooled_height", 2**32 + 7, 10)], "field 'pooled_height' must fit 32 bits, got 4294967303")]:
        n, names, data, lengths, types, _keep = _fields(spec)
        with pytest.raises(RuntimeError, match=message):
            _check(host_lib, host_lib.dcn_plugin_deform_roi_pool_parse_fields(n, names, data, lengths, types,
                                                                               ctypes.byref(desc)))
    n, names, data, lengths, types, _keep = _fields([("sample_per_part", 2000, 5)])
    with pytest.raises(RuntimeError, match="sample_per_part must be from 1 to 1024, got 2000"):
        _check(host_lib, host_lib.dcn_plugin_deform_psroi_pool_parse_fields(n, names, data, lengths, types,
                                                                            ctypes.byref(PsroiPoolDesc())))
    with pytest.raises(RuntimeError, match="negative count"):
        _check(host_lib, host_lib.dcn_plugin_deform_roi_pool_parse_fields(-5, None, None, None, None, ctypes.byref(desc)))


def test_tensorrt_plugin_shells_without_tensorrt():
    """plugins/tests/roiPoolShellTest.cpp drives both IPluginV3 classes (creators, fields, getOutputShapes with a
    constant-folding stand-in for TensorRT's expression builder, type/format checks, configure, onShapeChange,
    serialisation round trip, clone). It checks our shells, not TensorRT; it is built with the plugin."""
    run_shell_test("dcn_roi_pool_shell_test", min_checks=30)


def test_out_of_range_descriptors_are_refused_not_run(host_lib):
    """Found by sanitizer fuzzing: output_dim*group_size^2 wrapped in 64 bits onto the input's channel count (5 *
    1920767767^2 = 2^64 + 21279829) and the forwards then crashed; a NaN, 0 or negative spatial_scale, a non-finite
    gamma/trans_std, and a FLOAT64 field beyond float's range were accepted."""
    wrapped = PsroiPoolDesc(1, 21279829, 1, 1, 1, 5, 1920767767, 1, 0, 1, 1, 1, 1.0, 0.0)
    assert host_lib.dcn_deform_psroi_pool_check(ctypes.byref(wrapped)) == 1
    assert "output_dim*group_size^2 = 5*1920767767^2 channels, got 21279829" in host_lib.dcn_last_error().decode()
    x = torch.rand(1, 2, 4, 4, dtype=torch.float64)
    rois = torch.tensor([[0.0, 0, 0, 3, 3]], dtype=torch.float64)
    for scale in (float("nan"), 0.0, -1.0, float("inf")):
        with pytest.raises(RuntimeError, match="spatial_scale must be a finite number > 0"):
            roi_pool_host(host_lib, x, rois, None, (1, 1), scale, 1, 0.1)
    with pytest.raises(RuntimeError, match="gamma must be a finite number, got nan"):
        roi_pool_host(host_lib, x, rois, None, (1, 1), 1.0, 1, float("nan"))
    with pytest.raises(RuntimeError, match="trans_std must be a finite number, got inf"):
        psroi_pool_host(host_lib, x, rois, None, 1.0, 2, 1, 1, 1, 1, float("inf"), True)
    n, names, data, lengths, types, _keep = _fields([("spatial_scale", 1e300, 2)])   # FLOAT64
    with pytest.raises(RuntimeError, match="spatial_scale' must fit float32"):
        _check(host_lib, host_lib.dcn_plugin_deform_roi_pool_parse_fields(n, names, data, lengths, types,
                                                                           ctypes.byref(RoiPoolDesc())))


def test_an_empty_batch_pools_a_roi_of_index_minus_half_to_zero(host_lib):
    """Index -0.5 truncates to image 0, which an empty batch does not have: it pools to 0 (read past the input)."""
    buffer = torch.rand(16, dtype=torch.float64)   # a caller's valid pointer, for a batch of 0 images
    rois = torch.tensor([[-0.5, 1, 1, 2, 2]], dtype=torch.float64)
    d = RoiPoolDesc(0, 1, 4, 4, 1, 2, 2, 2, 1.0, 0.1)
    out = torch.full((1, 1, 2, 2), float("nan"), dtype=torch.float64)
    _check(host_lib, host_lib.dcn_deform_roi_pool_forward_host(ctypes.byref(d), DTYPES[torch.float64], _ptr(buffer),
                                                               _ptr(rois), None, _ptr(out)))
    assert torch.count_nonzero(out) == 0


def test_maps_taller_than_2_to_the_24_keep_the_last_row_in_float32(host_lib):
    """float32(H - 1) is H for H = 2^24 + 4: a sample clamped onto the last row floored to row H, one past the map
    (read from the next channel's plane: 7 instead of 1). Host entry, the op's compiled forward and its composite."""
    height = 2**24 + 4
    x = torch.ones(1, 2, height, 1)
    x[0, 1] = 7.0
    rois = torch.tensor([[0.0, 0, height, 0, height]])
    want = torch.tensor([1.0, 7.0])
    assert torch.equal(roi_pool_host(host_lib, x, rois, None, (1, 1), 1.0, 1, 0.1).flatten(), want)
    assert torch.equal(deform_roi_pool(x, rois, None, 1, 1.0, 1).flatten(), want)
    with composite_forward():
        assert torch.equal(deform_roi_pool(x, rois, None, 1, 1.0, 1).flatten(), want)
