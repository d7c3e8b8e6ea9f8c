"""Deformable RoI pooling ops and modules against hand-computed values and a scalar-loop transcription of the
reference kernels (mmcv's deform_roi_pool, Deformable-ConvNets' DeformablePSROIPooling)."""
from __future__ import annotations

import math
import re

import pytest
import torch

from dcn_deploy.ops.roi_modules import DeformPSRoIPool, DeformRoIPool, DeformRoIPoolPack, ModulatedDeformRoIPoolPack
from dcn_deploy.ops.roi_pool import deform_psroi_pool, deform_roi_pool
from dcn_deploy.ops.spec import ShapeError


# ------------------------------------------------------------------------------------------------------------
# Scalar-loop transcriptions of the two reference kernels: slow, obviously per-element, independent of the
# vectorised implementation.
# ------------------------------------------------------------------------------------------------------------

def _bilinear_roialign(img, y, x):
    h, w = img.shape
    if y < -1.0 or y > h or x < -1.0 or x > w:
        return 0.0
    y, x = max(y, 0.0), max(x, 0.0)
    y0, x0 = int(y), int(x)
    if y0 >= h - 1:
        y0 = y1 = h - 1
        y = float(y0)
    else:
        y1 = y0 + 1
    if x0 >= w - 1:
        x0 = x1 = w - 1
        x = float(x0)
    else:
        x1 = x0 + 1
    ly, lx = y - y0, x - x0
    return ((1 - ly) * (1 - lx) * img[y0, x0] + (1 - ly) * lx * img[y0, x1]
            + ly * (1 - lx) * img[y1, x0] + ly * lx * img[y1, x1])


def loop_deform_roi_pool(input, rois, offset, out_h, out_w, scale, sampling_ratio, gamma):
    x_in = input.double().numpy()
    k_total, c_total = rois.shape[0], input.shape[1]
    out = torch.zeros(k_total, c_total, out_h, out_w, dtype=torch.float64)
    for k in range(k_total):
        b, x1, y1, x2, y2 = [float(v) for v in rois[k]]
        sx, sy = x1 * scale - 0.5, y1 * scale - 0.5
        rw, rh = x2 * scale - 0.5 - sx, y2 * scale - 0.5 - sy
        bw, bh = rw / out_w, rh / out_h
        gh = sampling_ratio if sampling_ratio > 0 else int(math.ceil(rh / out_h))
        gw = sampling_ratio if sampling_ratio > 0 else int(math.ceil(rw / out_w))
        for c in range(c_total):
            for i in range(out_h):
                for j in range(out_w):
                    ox = oy = 0.0
                    if offset is not None:
                        ox = gamma * rw * float(offset[k, 0, i, j])
                        oy = gamma * rh * float(offset[k, 1, i, j])
                    total = 0.0
                    for v in range(max(gh, 0)):
                        y = sy + oy + i * bh + (v + 0.5) * bh / gh
                        for u in range(max(gw, 0)):
                            x = sx + ox + j * bw + (u + 0.5) * bw / gw
                            total += _bilinear_roialign(x_in[int(b), c], y, x)
                    out[k, c, i, j] = total / max(gh * gw, 1)
    return out


def _c_round(v):
    return math.floor(v + 0.5) if v >= 0 else -math.floor(-v + 0.5)


def loop_deform_psroi_pool(input, rois, trans, scale, output_dim, group, pooled, part, samples, trans_std, no_trans):
    x_in = input.double().numpy()
    _, _, h, w = input.shape
    part = part or pooled
    num_classes = 1 if no_trans else trans.shape[1] // 2
    per_class = output_dim // num_classes
    out = torch.zeros(rois.shape[0], output_dim, pooled, pooled, dtype=torch.float64)
    for k in range(rois.shape[0]):
        b, x1, y1, x2, y2 = [float(v) for v in rois[k]]
        sx, sy = _c_round(x1) * scale - 0.5, _c_round(y1) * scale - 0.5
        rw = max((_c_round(x2) + 1) * scale - 0.5 - sx, 0.1)
        rh = max((_c_round(y2) + 1) * scale - 0.5 - sy, 0.1)
        bw, bh = rw / pooled, rh / pooled
        for ctop in range(output_dim):
            cls = ctop // per_class
            for i in range(pooled):
                for j in range(pooled):
                    pi, pj = i * part // pooled, j * part // pooled
                    tx = 0.0 if no_trans else float(trans[k, 2 * cls, pi, pj]) * trans_std
                    ty = 0.0 if no_trans else float(trans[k, 2 * cls + 1, pi, pj]) * trans_std
                    wstart = j * bw + sx + tx * rw
                    hstart = i * bh + sy + ty * rh
                    gi = min(max(i * group // pooled, 0), group - 1)
                    gj = min(max(j * group // pooled, 0), group - 1)
                    channel = (ctop * group + gi) * group + gj
                    total, count = 0.0, 0
                    for v in range(samples):
                        for u in range(samples):
                            x = wstart + u * bw / samples
                            y = hstart + v * bh / samples
                            if x < -0.5 or x > w - 0.5 or y < -0.5 or y > h - 0.5:
                                continue
                            x, y = min(max(x, 0.0), w - 1.0), min(max(y, 0.0), h - 1.0)
                            xl, yl = math.floor(x), math.floor(y)
                            xh, yh = math.ceil(x), math.ceil(y)
                            dx, dy = x - xl, y - yl
                            img = x_in[int(b), channel]
                            total += ((1 - dx) * (1 - dy) * img[yl, xl] + (1 - dx) * dy * img[yh, xl]
                                      + dx * (1 - dy) * img[yl, xh] + dx * dy * img[yh, xh])
                            count += 1
                    out[k, ctop, i, j] = total / count if count else 0.0
    return out


def _ramp(h, w, channels=1, dtype=torch.float64):
    """Feature map with value 100*c + 2*x + 3*y: bilinear sampling of it is exact inside the map."""
    ys = torch.arange(h, dtype=dtype).view(1, h, 1)
    xs = torch.arange(w, dtype=dtype).view(1, 1, w)
    cs = torch.arange(channels, dtype=dtype).view(channels, 1, 1)
    return (100 * cs + 2 * xs + 3 * ys).unsqueeze(0)


def _random_rois(gen, count, batch, extent, dtype=torch.float64):
    xy = torch.rand(count, 2, generator=gen, dtype=dtype) * extent * 0.8 - 0.1 * extent
    wh = torch.rand(count, 2, generator=gen, dtype=dtype) * extent * 0.6 + 0.3
    index = torch.randint(0, batch, (count, 1), generator=gen).to(dtype)
    return torch.cat([index, xy, xy + wh], dim=1)


# ------------------------------------------------------------------------------------------------------------
# deform_roi_pool
# ------------------------------------------------------------------------------------------------------------

def test_roi_pool_ramp_hand_computed():
    # RoI x 1.5..5.5, y 1.5..3.5 -> shifted start (1.0, 1.0), 2x2 bins of 2x1 pixels; sample centres
    # x in {1.5, 2.5 | 3.5, 4.5}, y in {1.25, 1.75 | 2.25, 2.75} -> bin means x = 2, 4 and y = 1.5, 2.5.
    img = _ramp(8, 10)
    rois = torch.tensor([[0, 1.5, 1.5, 5.5, 3.5]], dtype=torch.float64)
    out = deform_roi_pool(img, rois, None, (2, 2), 1.0, 2)
    expected = torch.tensor([[2 * 2 + 3 * 1.5, 2 * 4 + 3 * 1.5], [2 * 2 + 3 * 2.5, 2 * 4 + 3 * 2.5]],
                            dtype=torch.float64)
    torch.testing.assert_close(out[0, 0], expected)


def test_roi_pool_offset_moves_bins_by_whole_pixels():
    img = _ramp(12, 12)
    rois = torch.tensor([[0, 2.5, 2.5, 6.5, 6.5]], dtype=torch.float64)  # width = height = 4 pixels
    base = deform_roi_pool(img, rois, None, 2, 1.0, 2)
    offset = torch.zeros(1, 2, 2, 2, dtype=torch.float64)
    # offset * gamma * roi size = pixels: bin (0, 1) moves +1 in x; bin (1, 0) moves +2 in y
    offset[0, 0, 0, 1] = 1 / (0.1 * 4)
    offset[0, 1, 1, 0] = 2 / (0.1 * 4)
    moved = deform_roi_pool(img, rois, offset, 2, 1.0, 2, gamma=0.1)
    delta = (moved - base)[0, 0]
    torch.testing.assert_close(delta, torch.tensor([[0.0, 2.0], [6.0, 0.0]], dtype=torch.float64))


def test_roi_pool_roialign_boundary_rule():
    # one 1x1 bin with one sample at (y, x) = centre of the RoI; place it at chosen positions
    img = _ramp(4, 5) + 1.0  # strictly positive so a zero means "outside"

    def sample_at(y, x):
        rois = torch.tensor([[0, x + 0.5 - 0.25, y + 0.5 - 0.25, x + 0.5 + 0.25, y + 0.5 + 0.25]], dtype=torch.float64)
        return float(deform_roi_pool(img, rois, None, 1, 1.0, 1)[0, 0, 0, 0])

    assert sample_at(-0.5, 2.0) == pytest.approx(float(img[0, 0, 0, 2]))   # within one pixel: clamped to row 0
    assert sample_at(-1.5, 2.0) == 0.0                                       # beyond: zero
    assert sample_at(1.0, 4.75) == pytest.approx(float(img[0, 0, 1, 4]))   # clamped to the last column
    assert sample_at(1.0, 5.25) == 0.0
    assert sample_at(1.5, 2.5) == pytest.approx(1 + 2 * 2.5 + 3 * 1.5)      # interior: exact bilinear


def test_roi_pool_zero_size_roi_pools_to_zero():
    img = _ramp(6, 6) + 1.0
    rois = torch.tensor([[0, 3, 3, 3, 3], [0, 4, 4, 2, 5]], dtype=torch.float64)
    assert torch.count_nonzero(deform_roi_pool(img, rois, None, 2, 1.0, 0)) == 0


@pytest.mark.parametrize("sampling_ratio", [0, 1, 3])
def test_roi_pool_matches_loop_reference(sampling_ratio):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 9, 11, generator=gen, dtype=torch.float64)
    rois = _random_rois(gen, 6, 2, 20.0)
    offset = torch.randn(6, 2, 3, 2, generator=gen, dtype=torch.float64) * 0.5
    for off in (None, offset):
        out = deform_roi_pool(x, rois, off, (3, 2), 0.5, sampling_ratio, gamma=0.2)
        ref = loop_deform_roi_pool(x, rois, off, 3, 2, 0.5, sampling_ratio, 0.2)
        torch.testing.assert_close(out, ref)


def test_roi_pool_adaptive_chunks_keep_roi_order(monkeypatch):
    import dcn_deploy.ops.roi_pool as module

    gen = torch.Generator().manual_seed(2)
    x = torch.randn(1, 2, 16, 16, generator=gen, dtype=torch.float64)
    rois = _random_rois(gen, 9, 1, 16.0)
    whole = deform_roi_pool(x, rois, None, 2, 1.0, 0)
    monkeypatch.setattr(module, "_MAX_GATHER_ELEMENTS", 1)  # one RoI per chunk, sorted by grid size
    torch.testing.assert_close(deform_roi_pool(x, rois, None, 2, 1.0, 0), whole)


def test_roi_pool_gradcheck():
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2, 2, 6, 7, generator=gen, dtype=torch.float64, requires_grad=True)
    rois = torch.tensor([[0, 0.3, 0.7, 4.1, 5.2], [1, 1.1, 2.3, 5.9, 4.4], [1, 2.2, 0.4, 3.3, 3.9]],
                        dtype=torch.float64)
    offset = (torch.randn(3, 2, 2, 2, generator=gen, dtype=torch.float64) * 0.3).requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: deform_roi_pool(a, rois, b, 2, 1.0, 0, 0.1), (x, offset))
    assert torch.autograd.gradcheck(lambda a: deform_roi_pool(a, rois, None, 2, 1.0, 2), (x,))


def _huge_box_case(gen, ratio_of_map=60.0, small_box=True):
    """A 2 x 2 x 6 x 7 map; three boxes, each covering the map, of 0.6 to 1 times ``ratio_of_map`` times its size,
    and, with ``small_box``, one box inside it; offsets that move the huge boxes' bins by up to a few map sizes."""
    x = torch.randn(2, 2, 6, 7, generator=gen, dtype=torch.float64)
    side = torch.tensor([7.0, 6.0], dtype=torch.float64) * ratio_of_map
    corner = -side * (0.2 + 0.3 * torch.rand(3, 2, generator=gen, dtype=torch.float64))
    huge = torch.cat([corner, corner + side * (0.6 + 0.4 * torch.rand(3, 2, generator=gen, dtype=torch.float64))], 1)
    boxes = torch.cat([huge, torch.tensor([[1.2, 0.7, 5.3, 4.1]], dtype=torch.float64)])
    rois = torch.cat([torch.tensor([[0.0], [1.0], [1.0], [0.0]], dtype=torch.float64), boxes], 1)
    offset = torch.randn(4, 2, 2, 2, generator=gen, dtype=torch.float64) * 0.3
    keep = 4 if small_box else 3
    return x, rois[:keep], offset[:keep]


@pytest.mark.parametrize("sampling_ratio", [0, 200])
def test_roi_pool_boxes_far_larger_than_the_map_gather_only_the_samples_on_it(monkeypatch, sampling_ratio):
    """Boxes 36 to 60 times the 6 x 7 map: grids of about 100 to 200 samples per bin side (adaptive), or 200 (fixed),
    over half a pixel apart, so at most 2 (size + 2) of them per side lie in RoIAlign's range [-1, size]; the rest are
    0 but still divide. The composite (float64: forward and backward) gathers only those (4 corners each), and
    gives the values and gradients of pooling over the whole grids, as it did before (offsets move the bins by
    up to a few map sizes, so the samples must be chosen after the shift)."""
    import dcn_deploy.ops.roi_pool as module

    # with the fixed ratio a box inside the map would rightly gather its 200 x 200 samples: huge boxes only
    x, rois, offset = _huge_box_case(torch.Generator().manual_seed(11), small_box=sampling_ratio == 0)
    grad_out = torch.randn(rois.shape[0], 2, 2, 2, generator=torch.Generator().manual_seed(12), dtype=torch.float64)

    def pool():
        leaves = [x.clone().requires_grad_(), offset.clone().requires_grad_()]
        out = deform_roi_pool(leaves[0], rois, leaves[1], 2, 1.0, sampling_ratio, gamma=0.1)
        return [out.detach(), *torch.autograd.grad(out, leaves, grad_out)]

    gathered = []
    gather = module._bilinear_sum

    def counting_gather(table, row_base, height, width, y_index, y_weight, x_index, x_weight, **kwargs):
        gathered.append(y_index.shape[-1] * x_index.shape[-1])  # rows read per bin: (2 * max_h) x (2 * max_w)
        return gather(table, row_base, height, width, y_index, y_weight, x_index, x_weight, **kwargs)

    monkeypatch.setattr(module, "_bilinear_sum", counting_gather)
    windowed = pool()
    assert len(gathered) >= 2 and max(gathered) <= 4 * (2 * 6 + 4) * (2 * 7 + 4), gathered
    monkeypatch.setattr(module, "_sample_runs", lambda *args: None)  # the whole grids, as before
    gathered.clear()
    whole = pool()
    assert max(gathered) >= 4 * 100 * 100
    for got, want in zip(windowed, whole):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    assert all(torch.count_nonzero(t) for t in windowed)  # some bins sample the map


def test_roi_pool_gradcheck_boxes_far_larger_than_the_map():
    """Gradients through the runs of samples on the map (boxes 5 to 8 times the map), adaptive and fixed grids."""
    x, rois, offset = _huge_box_case(torch.Generator().manual_seed(13), ratio_of_map=8.0)
    x.requires_grad_()
    offset.requires_grad_()
    for ratio in (0, 9):
        assert torch.autograd.gradcheck(lambda a, b: deform_roi_pool(a, rois, b, 2, 1.0, ratio, 0.1), (x, offset))


# One unit in the last place of the half type, at the output's largest magnitude: computed in float32 and rounded
# once, the half results measured 0.25-0.35 units from float64 on the same rounded inputs (the two tests below);
# the same ops computed in the half type itself measured 2.4-2.8 units.
HALF_EPS = {torch.float16: 2.0 ** -10, torch.bfloat16: 2.0 ** -7}


def _assert_within_one_half_unit(out: torch.Tensor, ref: torch.Tensor) -> None:
    bound = HALF_EPS[out.dtype] * float(ref.abs().max())
    error = float((out.double() - ref).abs().max())
    assert error <= bound, f"{out.dtype}: max error {error:.3g} is {error / bound:.2f} units (allowed: 1)"


def test_double_backward_is_refused_not_silently_first_order():
    """As deform_conv2d: create_graph=True would otherwise return gradients without the ops' second-order terms."""
    x = torch.randn(1, 8, 6, 6, requires_grad=True)
    rois = torch.tensor([[0.0, 1.0, 1.0, 9.0, 8.0]])
    offset = torch.randn(1, 2, 2, 2) * 0.1
    calls = {"deform_roi_pool": lambda: deform_roi_pool(x, rois, offset, 2, 0.5, 2),
             "deform_psroi_pool": lambda: deform_psroi_pool(x, rois, offset, 0.5, 2, 2, 2, 2, 2, 0.1, False)}
    for name, call in calls.items():
        with pytest.raises(RuntimeError, match=f"dcn_deploy.{name} supports first-order gradients only"):
            torch.autograd.grad(call().square().sum(), x, create_graph=True)
        (grad,) = torch.autograd.grad(call().square().sum(), x)
        assert torch.count_nonzero(grad) > 0


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_roi_pool_dtypes(dtype):
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(1, 4, 10, 10, generator=gen)
    rois = _random_rois(gen, 5, 1, 10.0, torch.float32).round()
    offset = torch.randn(5, 2, 2, 2, generator=gen) * 0.3
    rounded = [t.to(dtype) for t in (x, rois, offset)]
    out = deform_roi_pool(*rounded, 2, 1.0, 2)
    assert out.dtype == dtype
    # float64 on the same rounded inputs: what is left is the computation's own rounding
    ref = deform_roi_pool(*[t.double() for t in rounded], 2, 1.0, 2)
    if dtype == torch.float32:
        torch.testing.assert_close(out.double(), ref, atol=1e-5, rtol=1e-5)
    else:
        _assert_within_one_half_unit(out, ref)
    x_grad = x.to(dtype).requires_grad_()
    deform_roi_pool(x_grad, rois.to(dtype), offset.to(dtype), 2, 1.0, 2).sum().backward()
    assert x_grad.grad.dtype == dtype and torch.isfinite(x_grad.grad.float()).all()


def test_roi_pool_empty_rois():
    x = torch.randn(2, 3, 5, 5, requires_grad=True)
    out = deform_roi_pool(x, torch.zeros(0, 5), torch.zeros(0, 2, 4, 4), 4)
    assert out.shape == (0, 3, 4, 4)
    out.sum().backward()
    assert x.grad.shape == x.shape and torch.count_nonzero(x.grad) == 0


def test_roi_pool_errors():
    x = torch.randn(2, 3, 5, 5)
    with pytest.raises(ShapeError, match=r"rois must have shape \(K, 5\)"):
        deform_roi_pool(x, torch.zeros(1, 4), None, 2)
    with pytest.raises(ShapeError, match="batch index 2, outside"):
        deform_roi_pool(x, torch.tensor([[2.0, 0, 0, 3, 3]]), None, 2)
    with pytest.raises(ShapeError, match="batch index -1"):
        deform_roi_pool(x, torch.tensor([[-1.0, 0, 0, 3, 3]]), None, 2)
    with pytest.raises(ShapeError, match=r"offset must have shape \(1, 2, 2, 2\)"):
        deform_roi_pool(x, torch.tensor([[0.0, 0, 0, 3, 3]]), torch.zeros(1, 2, 3, 3), 2)
    with pytest.raises(TypeError, match="rois has dtype torch.float64"):
        deform_roi_pool(x, torch.zeros(1, 5, dtype=torch.float64), None, 2)
    with pytest.raises(ShapeError, match="sampling_ratio"):
        deform_roi_pool(x, torch.zeros(1, 5), None, 2, sampling_ratio=-1)


# ------------------------------------------------------------------------------------------------------------
# deform_psroi_pool
# ------------------------------------------------------------------------------------------------------------

def test_psroi_ramp_hand_computed():
    # 4 position-sensitive channels (output_dim 1, group 2). RoI (2, 1)-(5, 4) -> start (1.5, 0.5), size 4x4,
    # bins 2x2 with samples at +0 and +1: bin (i, j) reads channel 2*i + j at mean x = 2 + 2j, mean y = 1 + 2i.
    img = _ramp(6, 8, channels=4)
    rois = torch.tensor([[0, 2, 1, 5, 4]], dtype=torch.float64)
    out = deform_psroi_pool(img, rois, None, 1.0, 1, 2, 2, 0, 2, 0.0, True)
    expected = torch.tensor([[0 + 2 * 2 + 3 * 1, 100 + 2 * 4 + 3 * 1], [200 + 2 * 2 + 3 * 3, 300 + 2 * 4 + 3 * 3]],
                            dtype=torch.float64)
    torch.testing.assert_close(out[0, 0], expected)


def test_psroi_rounds_roi_corners_half_away_from_zero():
    img = _ramp(8, 8, channels=1)
    a = deform_psroi_pool(img, torch.tensor([[0, 2.5, 1.5, 4.5, 3.5]], dtype=torch.float64), None, 1.0, 1, 1, 1, 0, 2,
                          0.0, True)
    b = deform_psroi_pool(img, torch.tensor([[0, 3, 2, 5, 4]], dtype=torch.float64), None, 1.0, 1, 1, 1, 0, 2,
                          0.0, True)
    torch.testing.assert_close(a, b)


def test_psroi_trans_moves_parts_by_whole_pixels():
    img = _ramp(10, 10, channels=4)
    rois = torch.tensor([[0, 3, 3, 6, 6]], dtype=torch.float64)  # size 4 after the +1
    base = deform_psroi_pool(img, rois, torch.zeros(1, 2, 2, 2, dtype=torch.float64), 1.0, 1, 2, 2, 2, 2, 0.1, False)
    trans = torch.zeros(1, 2, 2, 2, dtype=torch.float64)
    trans[0, 0, 0, 0] = 1 / (0.1 * 4)   # part (0, 0): +1 pixel in x
    trans[0, 1, 1, 1] = -1 / (0.1 * 4)  # part (1, 1): -1 pixel in y
    delta = deform_psroi_pool(img, rois, trans, 1.0, 1, 2, 2, 2, 2, 0.1, False) - base
    torch.testing.assert_close(delta[0, 0], torch.tensor([[2.0, 0.0], [0.0, -3.0]], dtype=torch.float64))


def test_psroi_skips_samples_outside_and_averages_the_rest():
    img = _ramp(6, 6, channels=1) + 1.0
    rois = torch.tensor([[0, 0, 0, 3, 3]], dtype=torch.float64)  # start (-0.5, -0.5), size 4, one bin
    trans = torch.zeros(1, 2, 1, 1, dtype=torch.float64)
    trans[0, 0] = -1 / (0.1 * 4)  # shift 1 pixel left: x samples -1.5 (skipped), -0.5 (-> 0), 0.5, 1.5
    out = deform_psroi_pool(img, rois, trans, 1.0, 1, 1, 1, 1, 4, 0.1, False)
    # valid x: 0, 0.5, 1.5 -> mean 2/3; y samples -0.5 (-> 0), 0.5, 1.5, 2.5 -> mean 1.125
    assert float(out) == pytest.approx(1 + 2 * (2 / 3) + 3 * 1.125)
    far = torch.full((1, 2, 1, 1), -50.0, dtype=torch.float64)
    assert float(deform_psroi_pool(img, rois, far, 1.0, 1, 1, 1, 1, 4, 0.1, False)) == 0.0  # no valid sample


@pytest.mark.parametrize("num_classes,group,pooled,part,samples", [(1, 2, 2, 2, 2), (3, 3, 3, 2, 2), (3, 2, 3, 3, 1)])
def test_psroi_matches_loop_reference(num_classes, group, pooled, part, samples):
    gen = torch.Generator().manual_seed(5)
    output_dim = 3
    x = torch.randn(2, output_dim * group * group, 8, 9, generator=gen, dtype=torch.float64)
    rois = _random_rois(gen, 5, 2, 18.0)
    trans = torch.randn(5, 2 * num_classes, part, part, generator=gen, dtype=torch.float64)
    out = deform_psroi_pool(x, rois, trans, 0.5, output_dim, group, pooled, part, samples, 0.2, False)
    ref = loop_deform_psroi_pool(x, rois, trans, 0.5, output_dim, group, pooled, part, samples, 0.2, False)
    torch.testing.assert_close(out, ref)
    out = deform_psroi_pool(x, rois, None, 0.5, output_dim, group, pooled, part, samples, 0.2, True)
    ref = loop_deform_psroi_pool(x, rois, None, 0.5, output_dim, group, pooled, part, samples, 0.2, True)
    torch.testing.assert_close(out, ref)


def test_psroi_gradcheck():
    gen = torch.Generator().manual_seed(6)
    x = torch.randn(2, 2 * 4, 6, 7, generator=gen, dtype=torch.float64, requires_grad=True)
    rois = torch.tensor([[0, 0.3, 0.7, 8.1, 9.2], [1, 1.1, 2.3, 11.9, 8.4], [1, 4.2, 0.4, 6.3, 7.9]],
                        dtype=torch.float64)
    # offsets placed so no sample lies exactly on a pixel or on the validity edge (gradcheck needs smoothness)
    trans = (torch.rand(3, 4, 2, 2, generator=gen, dtype=torch.float64) * 0.8 + 0.1).requires_grad_()
    assert torch.autograd.gradcheck(
        lambda a, t: deform_psroi_pool(a, rois, t, 0.45, 2, 2, 2, 2, 2, 0.13, False), (x, trans))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_psroi_half_dtypes(dtype):
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(1, 2 * 9, 10, 10, generator=gen)
    rois = _random_rois(gen, 4, 1, 20.0, torch.float32).round()
    trans = torch.randn(4, 4, 3, 3, generator=gen) * 0.5
    rounded = [t.to(dtype) for t in (x, rois, trans)]
    out = deform_psroi_pool(*rounded, 0.5, 2, 3, 3, 3, 2, 0.1, False)
    assert out.dtype == dtype
    ref = deform_psroi_pool(*[t.double() for t in rounded], 0.5, 2, 3, 3, 3, 2, 0.1, False)
    _assert_within_one_half_unit(out, ref)


def test_psroi_empty_rois_and_errors():
    x = torch.randn(1, 8, 5, 5, requires_grad=True)
    out = deform_psroi_pool(x, torch.zeros(0, 5), torch.zeros(0, 2, 2, 2), 1.0, 2, 2, 2, 2, 2, 0.1, False)
    assert out.shape == (0, 2, 2, 2)
    out.sum().backward()
    assert torch.count_nonzero(x.grad) == 0
    roi = torch.tensor([[0.0, 0, 0, 3, 3]])
    with pytest.raises(ShapeError, match="output_dim\\*group_size\\*\\*2"):
        deform_psroi_pool(x, roi, None, 1.0, 3, 2, 2, 2, 2, 0.1, True)
    with pytest.raises(ShapeError, match="trans must have shape"):
        deform_psroi_pool(x, roi, torch.zeros(1, 2, 3, 3), 1.0, 2, 2, 2, 2, 2, 0.1, False)
    with pytest.raises(ShapeError, match="trans is required"):
        deform_psroi_pool(x, roi, None, 1.0, 2, 2, 2, 2, 2, 0.1, False)
    with pytest.raises(ShapeError, match="must be divisible by the number of offset classes"):
        deform_psroi_pool(x, roi, torch.zeros(1, 6, 2, 2), 1.0, 2, 2, 2, 2, 2, 0.1, False)
    with pytest.raises(ShapeError, match="batch index 1, outside"):
        deform_psroi_pool(x, torch.tensor([[1.0, 0, 0, 3, 3]]), None, 1.0, 2, 2, 2, 2, 2, 0.1, True)
    with pytest.raises(ShapeError, match=r"rois must have shape \(K, 5\)"):
        deform_psroi_pool(x, torch.zeros(2, 5, 1), None, 1.0, 2, 2, 2, 2, 2, 0.1, True)


# ------------------------------------------------------------------------------------------------------------
# Modules
# ------------------------------------------------------------------------------------------------------------

def test_pack_modules_have_mmcv_keys_and_start_as_roialign():
    torch.manual_seed(8)
    pack = DeformRoIPoolPack(2, 3, deform_fc_channels=8, spatial_scale=0.5)
    modulated = ModulatedDeformRoIPoolPack(2, 3, deform_fc_channels=8, spatial_scale=0.5)
    assert sorted(pack.state_dict()) == sorted(f"offset_fc.{i}.{p}" for i in (0, 2, 4) for p in ("weight", "bias"))
    assert sorted(modulated.state_dict()) == sorted(
        [f"offset_fc.{i}.{p}" for i in (0, 2, 4) for p in ("weight", "bias")]
        + [f"mask_fc.{i}.{p}" for i in (0, 2) for p in ("weight", "bias")])
    assert pack.offset_fc[0].weight.shape == (8, 2 * 2 * 3) and pack.offset_fc[4].weight.shape == (2 * 2 * 2, 8)
    x = torch.randn(1, 3, 8, 8)
    rois = torch.tensor([[0, 1.0, 2.0, 9.0, 12.0], [0, 0.0, 0.0, 15.0, 15.0]])
    plain = DeformRoIPool(2, 0.5)(x, rois)
    torch.testing.assert_close(pack(x, rois), plain)
    torch.testing.assert_close(modulated(x, rois), plain * 0.5)
    # trained offsets change the result, and gradients reach the offset branch
    torch.nn.init.normal_(pack.offset_fc[4].weight, std=0.1)
    out = pack(x, rois)
    assert not torch.allclose(out, plain)
    out.sum().backward()
    assert pack.offset_fc[4].weight.grad.abs().sum() > 0
    with pytest.raises(ShapeError, match="built for 3 input channels"):
        pack(torch.randn(1, 4, 8, 8), rois)


def test_pack_modules_take_no_rois():
    """An image without proposals: both pack modules return (0, C, h, w), as the plain ops do."""
    x = torch.randn(1, 3, 8, 8)
    for module in (DeformRoIPoolPack(2, 3, deform_fc_channels=8), ModulatedDeformRoIPoolPack(2, 3, deform_fc_channels=8)):
        assert module(x, torch.zeros(0, 5)).shape == (0, 3, 2, 2)


def test_pack_loads_an_mmcv_style_state_dict():
    source = ModulatedDeformRoIPoolPack(3, 2, deform_fc_channels=6)
    for p in source.parameters():
        torch.nn.init.normal_(p)
    state = {k: v.clone() for k, v in source.state_dict().items()}
    target = ModulatedDeformRoIPoolPack(3, 2, deform_fc_channels=6)
    target.load_state_dict(state)  # strict: the keys are exactly mmcv's
    x = torch.randn(1, 2, 9, 9)
    rois = torch.tensor([[0, 1.0, 1.0, 7.0, 6.0]])
    torch.testing.assert_close(target(x, rois), source(x, rois))


def test_psroi_module_offset_branch():
    torch.manual_seed(9)
    module = DeformPSRoIPool(output_dim=2, group_size=3, spatial_scale=0.5, sample_per_part=2)
    assert sorted(module.state_dict()) == ["offset_conv.bias", "offset_conv.weight"]
    assert module.offset_conv.weight.shape == (2 * 9, 2 * 9, 1, 1)
    x = torch.randn(1, 18, 10, 10)
    rois = torch.tensor([[0, 2.0, 3.0, 15.0, 12.0], [0, 0.0, 0.0, 19.0, 19.0]])
    plain = deform_psroi_pool(x, rois, None, 0.5, 2, 3, 3, 3, 2, 0.1, True)
    torch.testing.assert_close(module(x, rois), plain)  # zero-initialised offsets
    torch.nn.init.normal_(module.offset_conv.weight, std=0.1)
    out = module(x, rois)
    assert not torch.allclose(out, plain)
    out.sum().backward()
    assert module.offset_conv.weight.grad.abs().sum() > 0
    # offsets read from a separate feature map (the official R-FCN wiring), one offset set per output channel
    per_class = DeformPSRoIPool(2, 3, 0.5, sample_per_part=2, num_offset_classes=2, offset_in_channels=5)
    feat = torch.randn(1, 5, 10, 10)
    assert per_class(x, rois, feat).shape == (2, 2, 3, 3)


def test_ops_export_with_dynamic_rois():
    # the fake implementations give torch.export the output shapes, with a dynamic number of RoIs
    class Head(torch.nn.Module):
        def forward(self, x, rois, offset, scores, trans):
            a = deform_roi_pool(x, rois, offset, 2, 0.5, 2)
            b = deform_psroi_pool(scores, rois, trans, 0.5, 2, 2, 2, 2, 2, 0.1, False)
            return a, b

    k = torch.export.Dim("k", min=1, max=1024)
    args = (torch.randn(1, 3, 8, 8), torch.tensor([[0, 1.0, 1.0, 9.0, 9.0]] * 3), torch.zeros(3, 2, 2, 2),
            torch.randn(1, 8, 8, 8), torch.zeros(3, 2, 2, 2))
    program = torch.export.export(Head(), args, dynamic_shapes=({}, {0: k}, {0: k}, {}, {0: k}))
    targets = {str(n.target) for n in program.graph.nodes if n.op == "call_function"}
    assert "dcn_deploy.deform_roi_pool.default" in targets and "dcn_deploy.deform_psroi_pool.default" in targets
    eager = Head()(*args)
    for got, want in zip(program.module()(*args), eager):
        torch.testing.assert_close(got, want)


def test_non_finite_rois_are_refused_and_absurd_boxes_are_capped():
    from dcn_deploy.ops.roi_pool import MAX_SAMPLES_PER_BIN_SIDE, deform_roi_pool

    x = torch.randn(1, 2, 6, 6)
    bad = torch.tensor([[0.0, 1.0, float("nan"), 3.0, 4.0]])
    with pytest.raises(ValueError, match="NaN or infinite"):
        deform_roi_pool(x, bad, None, (2, 2))
    huge = torch.tensor([[0.0, -3e38, 0.0, 3e38, 4.0]])   # finite corners, a width of infinity in float32
    with pytest.raises(ValueError, match="width or height overflows"):
        deform_roi_pool(x, huge, None, (2, 2))
    # A box 10^7 pixels wide would ask mmcv for ~5e6 samples per bin side; the cap keeps it finite and fast.
    huge = torch.tensor([[0.0, 0.0, 0.0, 1e7, 3.0]])
    out = deform_roi_pool(x, huge, None, (2, 2), sampling_ratio=0)
    assert out.shape == (1, 2, 2, 2) and torch.isfinite(out).all()
    assert MAX_SAMPLES_PER_BIN_SIDE == 1024


def test_sample_counts_past_the_bound_are_refused_everywhere():
    """A fixed sampling_ratio or sample_per_part over 1024 per bin side: the op, the modules and the ONNX schema
    refuse it, as the kernels' descriptor check does (tests/test_roi_plugin_host.py)."""
    import onnx
    from onnx import helper

    from dcn_deploy.onnx import roi_opset  # noqa: F401 - registers the schemas
    from dcn_deploy.ops.roi_modules import DeformPSRoIPool, DeformRoIPool
    from dcn_deploy.ops.roi_pool import deform_roi_pool

    x, rois = torch.randn(1, 2, 6, 6), torch.tensor([[0.0, 0, 0, 4, 4]])
    with pytest.raises(ValueError, match=r"sampling_ratio must be an int from 0 \(adaptive\) to 1024"):
        deform_roi_pool(x, rois, None, (2, 2), sampling_ratio=1025)
    with pytest.raises(ValueError, match="sampling_ratio must be an int from 0"):
        DeformRoIPool((2, 2), sampling_ratio=2**31 - 1)
    with pytest.raises(ValueError, match="sample_per_part must be an int from 1 to 1024"):
        DeformPSRoIPool(2, 1, 1.0, sample_per_part=5000)
    assert DeformRoIPool((2, 2), sampling_ratio=1024).sampling_ratio == 1024
    node = helper.make_node("DeformRoIPool", ["X", "rois"], ["Y"], domain="dcn_deploy", sampling_ratio=1025)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("X", onnx.TensorProto.FLOAT, [1, 2, 6, 6]),
                                            helper.make_tensor_value_info("rois", onnx.TensorProto.FLOAT, [1, 5])],
                              [helper.make_tensor_value_info("Y", onnx.TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19), helper.make_opsetid("dcn_deploy", 1)])
    with pytest.raises(onnx.shape_inference.InferenceError, match="sampling_ratio must be from 1 .* to 1024, got 1025"):
        onnx.shape_inference.infer_shapes(model, strict_mode=True)


@pytest.mark.parametrize("op, attributes, message", [
    ("DeformRoIPool", {"sampling_ratio": 0}, r"sampling_ratio must be from 1 \(the adaptive 0 has no static form\)"),
    ("DeformPSRoIPool", {"sample_per_part": 0, "output_dim": 2, "group_size": 1},
     r"output_dim, .*sample_per_part must be >= 1"),
])
def test_runners_refuse_hand_built_roi_nodes_the_op_refuses(tmp_path, op, attributes, message):
    """A hand-built node with an attribute our schema refuses (mmcv's adaptive sampling_ratio=0 written into a file,
    say): onnx's checker refuses it through the schema, but ONNX Runtime does not run our inference, and the function
    body computed NaN without a word (verify then blamed the weights). verify and bench refuse the file (exit 2), and
    the runners a model in memory, naming the node."""
    import onnx
    from onnx import helper

    from cli_helpers import cli_runner

    from dcn_deploy.backends.base import RunnerError
    from dcn_deploy.backends.onnx_reference_runner import OnnxReferenceRunner
    from dcn_deploy.cli import main
    from dcn_deploy.backends.ort_runner import OrtRunner
    from dcn_deploy.onnx.opset import attach_functions

    node = helper.make_node(op, ["X", "rois"], ["Y"], domain="dcn_deploy", name="pool", **attributes)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("X", onnx.TensorProto.FLOAT, [1, 2, 6, 6]),
                                            helper.make_tensor_value_info("rois", onnx.TensorProto.FLOAT, [1, 5])],
                              [helper.make_tensor_value_info("Y", onnx.TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19), helper.make_opsetid("dcn_deploy", 1)])
    attach_functions(model)
    path = tmp_path / "hand_built.onnx"
    onnx.save(model, path)
    named = rf"node 'pool' \(dcn_deploy::{op}\): {message}.*fix the attributes"
    for runner in (OnnxReferenceRunner(str(path)), OrtRunner(model)):
        with pytest.raises(RunnerError, match=named):
            with runner:
                pass
    for command in (["verify", str(path), "--against", "ort"], ["bench", str(path), "--no-progress"]):
        result = cli_runner().invoke(main, command)
        assert result.exit_code == 2 and re.search(named, result.stderr), result.output


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_roi_layers_run_under_autocast_in_float32(dtype):
    """Under torch.autocast the feature map (and a Pack layer's predicted offsets) come in a half type while the
    boxes stay float32. Both ops refused those mixed dtypes (advising to cast the boxes to the half type, which moves
    their corners); they now compute in float32 and return the map's dtype, as a float32 call on the same rounded
    map does."""
    torch.manual_seed(3)
    conv = torch.nn.Conv2d(3, 18, 3, padding=1)
    pack = ModulatedDeformRoIPoolPack(3, 18, deform_fc_channels=8, sampling_ratio=2, spatial_scale=0.5)
    torch.nn.init.normal_(pack.offset_fc[-1].weight, std=0.1)
    ps = DeformPSRoIPool(output_dim=2, group_size=3, spatial_scale=0.5, sample_per_part=2)
    torch.nn.init.normal_(ps.offset_conv.weight, std=0.1)
    x = torch.randn(2, 3, 12, 10)
    rois = torch.tensor([[0, 1.0, 2.0, 17.5, 13.25], [1, 3.0, 0.5, 19.0, 21.0]])
    with torch.autocast("cpu", dtype=dtype):
        features = conv(x)
        pooled, parts = pack(features, rois), ps(features, rois)
        plain = deform_roi_pool(features, rois, None, 3, 0.5, 2)
    assert features.dtype == pooled.dtype == parts.dtype == plain.dtype == dtype
    torch.testing.assert_close(plain, deform_roi_pool(features.float(), rois, None, 3, 0.5, 2).to(dtype),
                               rtol=0, atol=0)
    with torch.no_grad():  # the float32 model, within the half type's rounding of the map
        expected = pack(conv(x), rois)
    torch.testing.assert_close(pooled.float(), expected, rtol=0, atol=8 * 2.0 ** -7 * float(expected.abs().max()))
    with pytest.raises(TypeError, match="rois has dtype torch.float32 but input has"):  # outside autocast: refused
        deform_roi_pool(features, rois, None, 3, 0.5, 2)
