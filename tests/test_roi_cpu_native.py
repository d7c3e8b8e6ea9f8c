"""The fast CPU forwards of the RoI pooling ops (``dcn_deform_roi_pool_forward_cpu``,
``dcn_deform_psroi_pool_forward_cpu`` in the host library) against the torch composites, and their use by
:func:`deform_roi_pool` / :func:`deform_psroi_pool` on the CPU.

The composites (``_roi_pool_composite``, ``_psroi_composite``) are the reference here, called directly: the ops
themselves may now run the compiled forwards.
"""
from __future__ import annotations

import random

import pytest
import torch

from dcn_deploy.ops import native_paths
from dcn_deploy.ops import roi_pool as rp
from dcn_deploy.ops.spec import ShapeError
from dcn_deploy.plugin.native import NativeError, NativeLibrary
from dcn_deploy.plugin.native_roi import deform_psroi_pool_native, deform_roi_pool_native
from plugin_configs import max_relative_error

ENTRIES = ("dcn_deform_roi_pool_forward_cpu", "dcn_deform_psroi_pool_forward_cpu")


@pytest.fixture(scope="module")
def cpu_lib(host_library_path) -> NativeLibrary:
    lib = NativeLibrary(host_library_path)
    missing = [entry for entry in ENTRIES if not lib.has(entry)]
    if missing:
        pytest.skip(f"{host_library_path} predates {missing}; rebuild with `dcn-deploy plugin build`")
    return lib


def _rois(rng: random.Random, count: int, batch: int, height: int, width: int, scale: float,
          dtype) -> torch.Tensor:
    """Boxes in image pixels: some reaching past the map's edges, some tiny, some flipped (x2 < x1)."""
    rows = []
    for _ in range(count):
        x1 = rng.uniform(-0.3, 1.1) * width / scale
        y1 = rng.uniform(-0.3, 1.1) * height / scale
        w = rng.choice([rng.uniform(0.0, 0.3), rng.uniform(0.2, 1.2), -rng.uniform(0.0, 0.2)]) * width / scale
        h = rng.choice([rng.uniform(0.0, 0.3), rng.uniform(0.2, 1.2)]) * height / scale
        rows.append([rng.randrange(batch), x1, y1, x1 + w, y1 + h])
    return torch.tensor(rows, dtype=dtype)


def roi_case(seed: int, dtype=torch.float32):
    """A random DeformRoIPool call: batch 1-3, H or W of 1 sometimes, non-square output, adaptive or fixed
    sampling, offsets large enough to push samples off the map, or none."""
    rng = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)
    batch, channels = rng.randint(1, 3), rng.choice([1, 3, 8, 17])
    height, width = rng.choice([1, rng.randint(2, 12)]), rng.choice([1, rng.randint(2, 15)])
    out = (rng.randint(1, 4), rng.randint(1, 4))
    scale = rng.choice([1.0, 0.5, 0.25])
    x = torch.randn(batch, channels, height, width, generator=gen, dtype=dtype)
    rois = _rois(rng, rng.randint(1, 9), batch, height, width, scale, dtype)
    offset = None if rng.random() < 0.25 else \
        torch.randn(rois.shape[0], 2, *out, generator=gen, dtype=dtype) * rng.choice([0.3, 3.0])
    params = dict(output_size=out, spatial_scale=scale, sampling_ratio=rng.choice([0, 0, 1, 2, 3]),
                  gamma=rng.choice([0.1, 0.5]))
    return x, rois, offset, params


def psroi_case(seed: int, dtype=torch.float32):
    """A random DeformPSRoIPool call: offset classes 1 to output_dim (one channel per class included), a part grid
    and a group grid other than the pooled grid, or no offsets."""
    rng = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)
    batch = rng.randint(1, 3)
    group, pooled = rng.randint(1, 3), rng.randint(1, 4)
    part = rng.choice([0, rng.randint(1, 4)])
    classes = rng.choice([1, 2, 3])
    output_dim = classes * rng.choice([1, 1, 2, 5])
    height, width = rng.choice([1, rng.randint(2, 10)]), rng.choice([1, rng.randint(2, 12)])
    scale = rng.choice([1.0, 0.5])
    no_trans = rng.random() < 0.25
    x = torch.randn(batch, output_dim * group * group, height, width, generator=gen, dtype=dtype)
    rois = _rois(rng, rng.randint(1, 9), batch, height, width, scale, dtype)
    trans = None if no_trans else \
        torch.randn(rois.shape[0], 2 * classes, part or pooled, part or pooled, generator=gen, dtype=dtype)
    params = dict(spatial_scale=scale, output_dim=output_dim, group_size=group, pooled_size=pooled,
                  part_size=part or pooled, sample_per_part=rng.randint(1, 4), trans_std=rng.choice([0.1, 1.0]),
                  no_trans=no_trans)
    return x, rois, trans, params


def composite_roi(x, rois, offset, params):
    p = params
    return rp._roi_pool_composite(x, rois, offset, p["output_size"], p["spatial_scale"], p["sampling_ratio"],
                                  p["gamma"])


def composite_psroi(x, rois, trans, params):
    return rp._psroi_composite(x, rois, trans, *params.values())


OPS = {"roi": (roi_case, deform_roi_pool_native, composite_roi),
       "psroi": (psroi_case, deform_psroi_pool_native, composite_psroi)}


@pytest.mark.parametrize("op", list(OPS))
@pytest.mark.parametrize("seed", range(40))
def test_random_calls_float32_match_composite(cpu_lib, op, seed):
    make_case, native, composite = OPS[op]
    x, rois, shifts, params = make_case(seed)
    got = native(x, rois, shifts, **params, library=cpu_lib)
    want = composite(x, rois, shifts, params)
    assert got.shape == want.shape and got.dtype == torch.float32
    assert max_relative_error(got, want) < 1e-5, params


def _exact_in_float32(params, *names):
    """The attributes the kernels take in float32, replaced by values float32 holds exactly, so that float64
    results can be compared at 1e-12."""
    return {**params, **{n: {0.1: 0.125, 1.0: 1.0, 0.5: 0.5, 0.25: 0.25}[params[n]] for n in names}}


@pytest.mark.parametrize("seed", range(8))
def test_float64_agrees_to_rounding(cpu_lib, seed):
    x, rois, offset, params = roi_case(100 + seed, torch.float64)
    params = _exact_in_float32(params, "gamma")
    got = deform_roi_pool_native(x, rois, offset, **params, library=cpu_lib)
    torch.testing.assert_close(got, composite_roi(x, rois, offset, params), rtol=1e-12, atol=1e-12)
    x, rois, trans, params = psroi_case(100 + seed, torch.float64)
    params = _exact_in_float32(params, "trans_std")
    got = deform_psroi_pool_native(x, rois, trans, **params, library=cpu_lib)
    torch.testing.assert_close(got, composite_psroi(x, rois, trans, params), rtol=1e-12, atol=1e-12)


def test_thread_counts_give_identical_results(cpu_lib):
    """Each RoI is pooled by one thread, so thread counts must agree bit for bit: this catches shared scratch or
    a race, not arithmetic."""
    x, rois, offset, params = roi_case(7)
    one = deform_roi_pool_native(x, rois, offset, **params, num_threads=1, library=cpu_lib)
    assert torch.equal(one, deform_roi_pool_native(x, rois, offset, **params, num_threads=3, library=cpu_lib))
    x, rois, trans, params = psroi_case(8)
    one = deform_psroi_pool_native(x, rois, trans, **params, num_threads=1, library=cpu_lib)
    assert torch.equal(one, deform_psroi_pool_native(x, rois, trans, **params, num_threads=3, library=cpu_lib))


def test_offsets_far_off_the_map_pool_to_zero(cpu_lib):
    x = torch.randn(2, 5, 6, 7) + 3.0  # no zero values: a zero result means no sample was taken
    rois = torch.tensor([[0, 1.0, 1.0, 5.0, 4.0], [1, 0.0, 0.0, 6.0, 5.0]])
    far = torch.full((2, 2, 2, 3), 50.0)
    assert torch.count_nonzero(deform_roi_pool_native(x, rois, far, (2, 3), 1.0, 2, 1.0, library=cpu_lib)) == 0
    trans = torch.full((2, 2, 2, 2), -60.0)
    out = deform_psroi_pool_native(x[:, :4], rois, trans, 1.0, 1, 2, 2, 2, 3, 1.0, library=cpu_lib)
    assert torch.count_nonzero(out) == 0


def test_empty_rois_and_argument_errors(cpu_lib):
    x = torch.randn(1, 4, 5, 5)
    assert deform_roi_pool_native(x, torch.zeros(0, 5), None, 2, library=cpu_lib).shape == (0, 4, 2, 2)
    rois = torch.tensor([[0, 0.0, 0.0, 3.0, 3.0]])
    with pytest.raises(NativeError, match="dtype float16 .* is not supported; use float32"):
        deform_roi_pool_native(x.half(), rois.half(), None, 2, library=cpu_lib)
    with pytest.raises(NativeError, match="num_threads must be >= 0"):
        deform_psroi_pool_native(x, rois, None, 1.0, 1, 2, 2, no_trans=True, num_threads=-1, library=cpu_lib)
    with pytest.raises(ValueError, match="entry must be one of host, cpu, cuda, got 'gpu'"):
        deform_roi_pool_native(x, rois, None, 2, entry="gpu", library=cpu_lib)
    with pytest.raises(ShapeError, match="offset must have shape"):
        deform_roi_pool_native(x, rois, torch.zeros(1, 2, 3, 3), 2, library=cpu_lib)
    with pytest.raises(TypeError, match="rois has dtype torch.float64 but input has torch.float32"):
        deform_roi_pool_native(x, rois.double(), None, 2, library=cpu_lib)


def test_a_table_too_large_to_allocate_is_an_error_not_a_crash(cpu_lib):
    """The channels-last copy is allocated before the input is read: a descriptor asking for 2^48 bytes (more than
    the address space) gets the library's out-of-memory message."""
    import ctypes

    from dcn_deploy.plugin.native_roi import RoiPoolDesc

    x, rois = torch.zeros(4), torch.tensor([[0, 0.0, 0.0, 1.0, 1.0]])
    out = torch.zeros(1, 1 << 20, 1, 1)
    desc = RoiPoolDesc(1, 1 << 20, 1 << 13, 1 << 13, 1, 1, 1, 1, 1.0, 0.1)
    with pytest.raises(NativeError, match="out of memory: a scratch buffer .* pass fewer images or RoIs per call"):
        cpu_lib.call("dcn_deform_roi_pool_forward_cpu", ctypes.byref(desc), 0, x.data_ptr(), rois.data_ptr(), None,
                     out.data_ptr(), 1)


# ---- the ops' dispatch ----

def _count_calls(monkeypatch, name):
    calls = []
    real = getattr(rp, name)
    monkeypatch.setattr(rp, name, lambda *args, **kwargs: calls.append(kwargs["entry"]) or real(*args, **kwargs))
    return calls


@pytest.mark.parametrize("dtype,tolerance", [(torch.float32, 1e-5), (torch.bfloat16, 1.6e-2),
                                             (torch.float16, 2e-3)])
def test_ops_run_the_cpu_forward_with_the_same_results(cpu_lib, monkeypatch, dtype, tolerance):
    roi_calls = _count_calls(monkeypatch, "deform_roi_pool_native")
    psroi_calls = _count_calls(monkeypatch, "deform_psroi_pool_native")
    x, rois, offset, params = roi_case(11)
    cast = [None if t is None else t.to(dtype) for t in (x, rois, offset)]
    x2, rois2, trans, params2 = psroi_case(12)
    cast2 = [None if t is None else t.to(dtype) for t in (x2, rois2, trans)]
    monkeypatch.setenv(native_paths.NATIVE_CPU_ENV, "1")
    roi_native = rp.deform_roi_pool(*cast, **params)
    psroi_native = rp.deform_psroi_pool(*cast2, **params2)
    assert roi_calls == ["cpu"] and psroi_calls == ["cpu"], "the CPU ops did not take the compiled path"
    monkeypatch.setenv(native_paths.NATIVE_CPU_ENV, "0")
    roi_composite = rp.deform_roi_pool(*cast, **params)
    psroi_composite = rp.deform_psroi_pool(*cast2, **params2)
    assert roi_calls == ["cpu"] and psroi_calls == ["cpu"]
    assert roi_native.dtype == dtype and psroi_native.dtype == dtype
    assert max_relative_error(roi_native, roi_composite) < tolerance
    assert max_relative_error(psroi_native, psroi_composite) < tolerance


def test_float64_stays_on_the_composite(cpu_lib, monkeypatch):
    calls = _count_calls(monkeypatch, "deform_roi_pool_native")
    monkeypatch.setenv(native_paths.NATIVE_CPU_ENV, "1")
    x, rois, offset, params = roi_case(13, torch.float64)
    torch.testing.assert_close(rp.deform_roi_pool(x, rois, offset, **params),
                               composite_roi(x, rois, offset, params), rtol=0, atol=0)
    assert calls == []


def test_ops_still_refuse_batch_indices_the_kernels_would_pool_to_zero(cpu_lib, monkeypatch):
    monkeypatch.setenv(native_paths.NATIVE_CPU_ENV, "1")
    x = torch.randn(2, 4, 5, 5)
    with pytest.raises(ShapeError, match=r"rois\[:, 0\] holds batch index 2, outside \[0, 2\)"):
        rp.deform_roi_pool(x, torch.tensor([[2, 0.0, 0.0, 3.0, 3.0]]), None, 2)
    with pytest.raises(ShapeError, match="NaN or infinite"):
        rp.deform_psroi_pool(x, torch.tensor([[0, float("nan"), 0.0, 3.0, 3.0]]), None, 1.0, 1, 2, 2, no_trans=True)


def test_gradients_are_the_composites(cpu_lib, monkeypatch):
    x, rois, offset, params = roi_case(14)
    offset = torch.randn(rois.shape[0], 2, *params["output_size"]) if offset is None else offset
    grad_out = torch.randn(rois.shape[0], x.shape[1], *params["output_size"])
    results = {}
    for flag in ("1", "0"):
        monkeypatch.setenv(native_paths.NATIVE_CPU_ENV, flag)
        leaves = [x.clone().requires_grad_(), offset.clone().requires_grad_()]
        out = rp.deform_roi_pool(leaves[0], rois, leaves[1], **params)
        out.backward(grad_out)
        results[flag] = (out.detach(), [t.grad for t in leaves])
    assert max_relative_error(results["1"][0], results["0"][0]) < 1e-5
    for a, b in zip(results["1"][1], results["0"][1]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_tables_of_2_mib_and_more_match_the_host_build(cpu_lib):
    """Inputs whose channels-last copy takes ScratchArray's mapped branch (>= 2 MiB: mmap, MADV_HUGEPAGE,
    MADV_POPULATE_WRITE); the random cases above all stay on its malloc branch."""
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2, 68, 64, 61, generator=gen)  # 2.1 MB as float32 (67 channels would stay under 2 MiB)
    xy = torch.rand(24, 2, generator=gen) * 60
    rois = torch.cat([torch.randint(0, 2, (24, 1), generator=gen).float(), xy - 4, xy + 25], 1)
    offset = torch.randn(24, 2, 7, 7, generator=gen)
    for threads in (1, 2):
        got = deform_roi_pool_native(x, rois, offset, 7, 0.5, 2, 0.1, num_threads=threads, library=cpu_lib)
        want = deform_roi_pool_native(x, rois, offset, 7, 0.5, 2, 0.1, entry="host", library=cpu_lib)
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
    xp = torch.randn(1, 3 * 49, 60, 62, generator=gen)  # 2.2 MB
    trans = torch.randn(24, 6, 7, 7, generator=gen)
    rois[:, 0] = 0
    got = deform_psroi_pool_native(xp, rois, trans, 0.5, 3, 7, 7, 7, 2, 0.1, num_threads=2, library=cpu_lib)
    want = deform_psroi_pool_native(xp, rois, trans, 0.5, 3, 7, 7, 7, 2, 0.1, entry="host", library=cpu_lib)
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("flag", ["1", "0"], ids=["compiled", "composite"])
def test_nan_offsets_give_nan_on_every_path(cpu_lib, monkeypatch, flag):
    """A NaN offset / trans pools to NaN (roiPoolMath.h's BilinearTap) on the compiled forward and the composite
    alike, and the backward (always the composite) runs."""
    monkeypatch.setenv(native_paths.NATIVE_CPU_ENV, flag)
    x = torch.randn(1, 4, 6, 6, requires_grad=True)
    rois = torch.tensor([[0, 1.0, 1.0, 4.0, 4.0]])
    shifts = torch.full((1, 2, 1, 1), float("nan"), requires_grad=True)
    out = rp.deform_roi_pool(x, rois, shifts, 1, 1.0, 2)
    assert torch.isnan(out).all()
    out.sum().backward()
    ps = rp.deform_psroi_pool(x.detach(), rois, shifts.detach(), 1.0, 4, 1, 1, 1, 2, 0.1)
    assert torch.isnan(ps).all()


# ---- non-finite offsets / trans: the composite against the kernels ----

_NAN, _INF = float("nan"), float("inf")


def _nonfinite_shift_rows(op: str, dtype, ratio: int = 2, scale: float = 0.5, box=(3.0, 2.0, 15.0, 13.0)):
    """(x, rois, shifts, params, labels) for ``op``: RoI 0 finite; every other RoI one or two non-finite (or far)
    values in the x / y shift of one bin (DeformRoIPool) or of one part cell of class 0 (DeformPSRoIPool).
    ``scale``: gamma / trans_std (0: an infinite shift meets 0 x inf = NaN); ``ratio``: DeformRoIPool's
    sampling_ratio (0: adaptive, so the zero-width / zero-height boxes take no samples); ``box``: the RoIs' box
    (x1, y1, x2, y2) but for the last three cases."""
    gen = torch.Generator().manual_seed(23)
    if op == "roi":
        x = torch.randn(2, 5, 9, 11, generator=gen, dtype=dtype)
        grid, classes = (2, 3), 1
        params = dict(output_size=grid, spatial_scale=0.5, sampling_ratio=ratio, gamma=scale)
    else:
        x = torch.randn(2, 2 * 2 * 9, 9, 11, generator=gen, dtype=dtype)   # output_dim 4, group 3, 2 classes
        grid, classes = (2, 2), 2
        params = dict(spatial_scale=0.5, output_dim=4, group_size=3, pooled_size=3, part_size=2, sample_per_part=2,
                      trans_std=scale, no_trans=False)
    far = 100.0  # x 0.5 (gamma, trans_std) x a RoI side of about 6: a shift far off the 9 x 11 map
    rows, shifts, labels = [], [], []

    def add(label, changes=(), coords=box):
        third = torch.randn(2 * classes, *grid, generator=gen, dtype=dtype) * 0.3
        for channel, value in changes:
            third[channel, 1, 1] = value  # channel 0: x shift, 1: y shift (class 0), of bin / cell (1, 1)
        rows.append([len(rows) % 2, *coords])
        shifts.append(third)
        labels.append(label)

    add("finite")
    for channel, axis in ((0, "x"), (1, "y")):
        for name, value in (("nan", _NAN), ("+inf", _INF), ("-inf", -_INF)):
            add(f"{axis} {name}", [(channel, value)])
    add("x nan, y off the map", [(0, _NAN), (1, far)])
    add("y nan, x off the map", [(1, _NAN), (0, -far)])
    add("x nan, y +inf", [(0, _NAN), (1, _INF)])
    add("y nan, x -inf", [(1, _NAN), (0, -_INF)])
    add("x nan, y nan", [(0, _NAN), (1, _NAN)])
    add("x +inf, y -inf", [(0, _INF), (1, -_INF)])
    add("zero-width box, y nan", [(1, _NAN)], [3.0, 2.0, 3.0, 13.0])
    add("zero-height box, x nan", [(0, _NAN)], [3.0, 2.0, 15.0, 2.0])
    add("box below the map, x nan", [(0, _NAN)], [3.0, 40.0, 15.0, 60.0])
    return x, torch.tensor(rows, dtype=dtype), torch.stack(shifts), params, labels


def _host(op, x, rois, shifts, params, lib):
    native = deform_roi_pool_native if op == "roi" else deform_psroi_pool_native
    return native(x, rois, shifts, **params, entry="host", library=lib)


def _op(op, x, rois, shifts, params):
    if op == "roi":
        return rp.deform_roi_pool(x, rois, shifts, **params)
    return rp.deform_psroi_pool(x, rois, shifts, **params)


_NONFINITE_CONFIGS = [("roi", 2, 0.5), ("roi", 0, 0.5), ("roi", 0, 0.0), ("psroi", 0, 0.5), ("psroi", 0, 0.0)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("op,ratio,scale", _NONFINITE_CONFIGS)
def test_composite_puts_nan_where_the_kernels_do_for_nonfinite_shifts(cpu_lib, monkeypatch, op, ratio, scale,
                                                                     dtype):
    """NaN / +-inf offsets and trans: the composite (DCN_DEPLOY_NATIVE_CPU=0; float64 always) gives the host
    build's results bin by bin. A sample at +-inf is off the map (skipped); one at a NaN position is taken (the
    kernels' boundary tests are false for NaN) and makes its bin NaN, unless its other coordinate is off the map
    or its grid side is 0 (no sample: 0; the composite gave NaN there, 0 x NaN in its outer product of weights).
    The scale 0 cases make NaN of an infinite shift (0 x inf) and move nothing off the map, but the box below the
    map still leaves a NaN shift without a sample."""
    monkeypatch.setenv(native_paths.NATIVE_CPU_ENV, "0")
    x, rois, shifts, params, labels = _nonfinite_shift_rows(op, dtype, ratio, scale)
    want = _host(op, x, rois, shifts, params, cpu_lib)
    got = _op(op, x, rois, shifts, params)
    nan = want.isnan()
    # what the kernels do here (the cases mean what their labels say)
    assert not nan[0].any() and nan[labels.index("x nan")].any() and not nan[labels.index("x nan")].all()
    if scale == 0:  # every shift is 0 x shift: NaN for +-inf, nothing off the map
        assert nan[labels.index("x +inf")].any() and nan[labels.index("x nan, y off the map")].any()
    else:
        for label in ("x nan, y off the map", "y nan, x off the map", "x nan, y +inf", "y nan, x -inf"):
            assert not nan[labels.index(label)].any() and (want[labels.index(label)] == 0).any(), label
        assert not nan[labels.index("x +inf")].any()
    empty = ["box below the map, x nan"] + (["zero-width box, y nan", "zero-height box, x nan"]
                                            if op == "roi" and ratio == 0 else [])
    for label in empty:  # no sample taken in any bin
        assert torch.count_nonzero(want[labels.index(label)]) == 0, label
    tolerance = 1e-5 if dtype == torch.float32 else 1e-12  # gamma, trans_std 0.5 or 0: exact in float32
    for k, label in enumerate(labels):
        assert torch.equal(got[k].isnan(), nan[k]), f"RoI {k}: {label}: NaN in other bins than the kernels'"
        torch.testing.assert_close(got[k], want[k], rtol=tolerance, atol=tolerance, equal_nan=True,
                                   msg=lambda m, label=label: f"{label}: {m}")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("ratio", [0, 300])
def test_composite_matches_the_kernels_on_boxes_far_larger_than_the_map(cpu_lib, monkeypatch, ratio, dtype):
    """Boxes about 60 times the 9 x 11 map (bins of about 175 x 200 pixels: an adaptive grid of that many samples
    per side, or a fixed 300), of which the composite gathers only the samples that land on the map: the host
    build's values, and NaN in the same bins, for the finite, NaN, infinite and far offsets of
    :func:`_nonfinite_shift_rows` (the far ones move a bin off the map, so the samples are chosen after the shift).
    Its three small boxes, pooled over their whole grids, are compared for NaN only: with the fixed ratio the
    zero-width and zero-height ones sum 90000 samples per bin, which the kernels add one by one (1e-4 apart in
    float32, as before this composite took runs)."""
    monkeypatch.setenv(native_paths.NATIVE_CPU_ENV, "0")
    x, rois, shifts, params, labels = _nonfinite_shift_rows("roi", dtype, ratio, 0.5, box=(-300.0, -250.0, 400.0,
                                                                                        350.0))
    want = _host("roi", x, rois, shifts, params, cpu_lib)
    got = _op("roi", x, rois, shifts, params)
    assert torch.equal(got.isnan(), want.isnan())
    assert (want[0] != 0).any() and want.isnan().any() and (want[labels.index("x +inf")] == 0).any()
    huge = slice(0, len(labels) - 3)
    tolerance = 1e-5 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(got[huge], want[huge], rtol=tolerance, atol=tolerance * float(want[0].abs().max()),
                               equal_nan=True)


@pytest.mark.parametrize("op", ["roi", "psroi"])
def test_nonfinite_shifts_the_kernels_skip_change_no_other_value(cpu_lib, monkeypatch, op):
    """The composite's values beside a skipped non-finite shift are those of the same RoIs with that bin's (cell's)
    shift finite, in every other bin; the skipped bin itself is the kernels' (0 where every sample is skipped). The
    backward (the composite) gives finite gradients there: no skipped NaN sample reaches them."""
    monkeypatch.setenv(native_paths.NATIVE_CPU_ENV, "0")
    x, rois, shifts, params, labels = _nonfinite_shift_rows(op, torch.float32)
    keep = [labels.index(label) for label in ("x +inf", "x nan, y off the map", "y nan, x -inf",
                                              "box below the map, x nan")]
    rois, shifts = rois[keep], shifts[keep]
    leaves = [x.clone().requires_grad_(), shifts.clone().requires_grad_()]
    got = _op(op, leaves[0], rois, leaves[1], params)
    got.backward(torch.ones_like(got))
    assert all(torch.isfinite(t.grad).all() for t in leaves)
    got = got.detach()
    assert not got.isnan().any()
    finite = shifts.clone()
    finite[:, :2, 1, 1] = 0.0
    want = _op(op, x, rois, finite, params)
    moved = torch.zeros(got.shape[1:], dtype=torch.bool)
    if op == "roi":
        moved[:, 1, 1] = True
    else:  # class 0's channels (0, 1) in the bins of part cell (1, 1): rows and columns 2 of a 3 x 3 grid
        moved[:2, 2, 2] = True
    torch.testing.assert_close(got[:, ~moved], want[:, ~moved], rtol=0, atol=0)
    torch.testing.assert_close(got, _host(op, x, rois, shifts, params, cpu_lib), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("op", ["roi", "psroi"])
def test_the_nonfinite_step_changes_nothing_for_finite_shifts(monkeypatch, op):
    """The composite's extra step for non-finite shifts (taken when their sum is not finite, so also when a finite
    sum overflows) gives the same values and gradients as the plain arithmetic on finite shifts."""
    results = {}
    for forced in (False, True):
        if forced:
            monkeypatch.setattr(rp, "_has_nonfinite", lambda shifts: shifts is not None)
        runs = []
        for seed in range(6):
            x, rois, shifts, params = (roi_case if op == "roi" else psroi_case)(200 + seed, torch.float64)
            if shifts is None:
                continue
            leaves = [x.requires_grad_(), shifts.requires_grad_()]
            out = (composite_roi if op == "roi" else composite_psroi)(leaves[0], rois, leaves[1], params)
            runs.append([out.detach(), *torch.autograd.grad(out, leaves, torch.ones_like(out))])
        results[forced] = runs
    assert len(results[True]) >= 3
    for plain, careful in zip(results[False], results[True]):
        for a, b in zip(plain, careful):
            assert torch.equal(a, b)
