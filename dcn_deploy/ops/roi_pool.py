"""Deformable RoI pooling (Dai et al. 2017, section 2.2) as PyTorch ops: the reference for every other layer.

Two forms, each matching the implementation that trained models come from, so their weights carry over:

``deform_roi_pool`` -- mmcv's ``deform_roi_pool`` (mmdetection's DeformRoIPoolPack): RoIAlign with a learned,
normalised shift per bin. For RoI k with rows (b, x1, y1, x2, y2), bin (i, j) of an (out_h, out_w) grid::

    sx = x1 * spatial_scale - 0.5,   sy = y1 * spatial_scale - 0.5       # RoIAlign's half-pixel shift
    rw = x2 * spatial_scale - 0.5 - sx,   rh = y2 * spatial_scale - 0.5 - sy   # no rounding, no clamping
    bw = rw / out_w,   bh = rh / out_h
    gh = sampling_ratio or ceil(rh / out_h),   gw = sampling_ratio or ceil(rw / out_w)   # 0 = adaptive
    x(u) = sx + gamma * rw * offset[k, 0, i, j] + j * bw + (u + 0.5) * bw / gw,   u = 0 .. gw-1
    y(v) = sy + gamma * rh * offset[k, 1, i, j] + i * bh + (v + 0.5) * bh / gh,   v = 0 .. gh-1
    out[k, c, i, j] = sum_{u, v} bilinear_roialign(input[b, c], y(v), x(u)) / max(gh * gw, 1)

  ``offset`` channel 0 shifts x (width), channel 1 shifts y (height); ``offset=None`` is plain RoIAlign
  (mmcv's, ``aligned=True``). RoIAlign's boundary rule: a sample with y < -1, y > H, x < -1 or x > W is 0;
  otherwise y and x are clamped to [0, H-1] x [0, W-1] and interpolated bilinearly. A RoI with a width or
  height <= 0 pools to 0 with the adaptive ``sampling_ratio=0`` (no samples); with a fixed ratio its samples are
  taken as the formulas say (a flipped RoI samples backwards from x1, y1), as mmcv's kernel does.

``deform_psroi_pool`` -- the official Deformable-ConvNets ``DeformablePSROIPooling`` (R-FCN). For RoI k,
output channel ctop, bin (i, j) of a pooled_size x pooled_size grid (P = pooled_size, S = sample_per_part)::

    sx = round(x1) * spatial_scale - 0.5,   ex = (round(x2) + 1) * spatial_scale - 0.5   # round: half away from 0
    rw = max(ex - sx, 0.1)  (likewise sy, rh from y1, y2),   bw = rw / P,   bh = rh / P
    cls = ctop // (output_dim / num_classes),   pi = floor(i * part_size / P),   pj = floor(j * part_size / P)
    tx = trans[k, 2*cls, pi, pj] * trans_std,   ty = trans[k, 2*cls + 1, pi, pj] * trans_std  (0 when no_trans)
    x(u) = j * bw + sx + tx * rw + u * bw / S,   y(v) = i * bh + sy + ty * rh + v * bh / S,   u, v = 0 .. S-1
    gi = min(floor(i * group_size / P), group_size-1),  gj likewise,  channel = (ctop*group_size + gi)*group_size + gj
    out[k, ctop, i, j] = mean over the valid samples of bilinear(input[b, channel], clamp(y), clamp(x)), 0 if none

  A sample is valid when -0.5 <= x <= W - 0.5 and -0.5 <= y <= H - 0.5 (skip-invalid-and-average-valid); a valid
  sample is clamped to [0, W-1] x [0, H-1]. ``num_classes = trans.shape[1] / 2``.

Both: rois (K, 5) rows (batch index, x1, y1, x2, y2) in input-image coordinates, in the input's dtype; the batch
index is truncated toward zero as the reference kernels do and must lie in [0, N). Autograd flows to ``input`` and
to ``offset``/``trans`` (never to rois): the gradient is the exact derivative of the forward above. The reference
CUDA kernels' offset gradients differ in one place: for a sample clamped onto the border (up to one pixel, or half
a pixel for psroi, outside the map) the forward is flat, so this gradient is 0 there while theirs uses the slope of
the border pixels; input gradients agree.

Implementation: the forward runs compiled code when the library is built (:mod:`dcn_deploy.ops.native_paths`
chooses): the host library's CPU forward, or the CUDA kernels on a GPU. Otherwise, and for every backward pass, the
composite: vectorised gathers from a channels-last copy of the input (four bilinear corners per sample, all bins
and RoIs at once), in chunks of RoIs that bound memory; with the adaptive ``sampling_ratio=0`` the RoIs are sorted
by grid size so each chunk pads its sample grid only to its own largest RoI. A RoI whose bins are larger than the
map (a box many times the image) gathers per bin only the run of samples that lands in RoIAlign's range, found
exactly by a binary search on the sample positions; its other samples are 0 (and still counted in the divisor).
Half types compute in float32.
"""
from __future__ import annotations

from typing import Callable, List, Optional, Sequence, Tuple

import torch

from ..plugin.native_roi import deform_psroi_pool_native, deform_roi_pool_native
from . import native_paths
from ._checks import (autocast_off, autograd_inside_kernel, call_in_float32, checked_arguments, compute_dtype,
                      has_concrete_shapes, refuse_double_backward, refuse_torchscript, register_float32_autocast)
from .roi_spec import (MAX_SAMPLES_PER_BIN_SIDE, check_float, check_sampling_ratio, deform_psroi_pool_spec,
                       deform_roi_pool_spec)
from .spec import ShapeError, as_pair

__all__ = ["deform_roi_pool", "deform_psroi_pool"]

# Largest gathered-sample buffer (elements) built at once; more RoIs are processed in chunks. Why this small (8 MiB
# in float32): a fresh buffer of tens of MB is mapped anew by the allocator on every call and its first touch
# (page faults) can cost more than the gather itself; buffers this size are reused. On benchmarks/cpu_roi_pool.py's
# cases (one thread, separate processes, medians) the PyTorch op took 2.1x less time than with 1 << 24 for
# mmdetection's RoI pooling, 1.6x for R-FCN's offset pooling, 1.2x for its classification head, the same for its
# box head. On a GPU (torch's caching allocator reuses memory) the budget stays at 16M elements, as it was.
_MAX_GATHER_ELEMENTS = 1 << 21
_MAX_GATHER_ELEMENTS_GPU = 1 << 24


def _gather_budget(device: torch.device) -> int:
    """Elements gathered at once on ``device`` (see above)."""
    return _MAX_GATHER_ELEMENTS if device.type == "cpu" else _MAX_GATHER_ELEMENTS_GPU


def _axis_corners(coord: torch.Tensor, size: int, valid: torch.Tensor):
    """Low/high pixel indices and weights along one axis for coordinates already inside [0, size-1].

    Returns (index, weight), each with a trailing axis of 2*n: first the n low corners, then the n high ones;
    invalid samples get weight 0.
    """
    low = coord.detach().floor()
    frac = coord - low  # the derivative w.r.t. coord flows through frac
    # A NaN coordinate (a NaN offset or trans; the clamps keep NaN) takes pixel 0 with NaN weights, so the value is
    # NaN as in the kernels (roiPoolMath.h, BilinearTap), valid or not (NaN x 0: the callers leave no NaN position
    # in a bin the kernels take no sample in, _positions_of_taken_bins). NaN cast to int64 is a wild index
    # (IndexError before).
    # At most size - 1: a coordinate clamped onto float32(size - 1) is size itself for a size above 2^24 (e.g.
    # 2^24 + 4), whose floor would index one row past the map; as in the kernels (bilinearTapInside).
    low_i = low.nan_to_num(0.0).long().clamp(max=size - 1)
    high_i = (low_i + 1).clamp(max=size - 1)
    valid = valid.to(coord.dtype)
    index = torch.cat((low_i, high_i), dim=-1)
    weight = torch.cat(((1 - frac) * valid, frac * valid), dim=-1)
    return index, weight


def _has_nonfinite(shifts: Optional[torch.Tensor]) -> bool:
    """Whether an offset / trans may hold NaN or +-inf: only then can a sample position be NaN (the rois are
    finite), and the chunks keep NaN out of the bins the kernels take no sample in (:func:`_positions_of_taken_bins`);
    finite shifts, the usual case, run the arithmetic as it was. Its sum is NaN or infinite when any element is (a
    finite sum that overflows only takes that step for nothing): one pass, 30x faster here than
    ``isfinite(shifts).all()``, and one read back per call (the composite reads the rois back anyway)."""
    return shifts is not None and not bool(torch.isfinite(shifts.detach().sum()))


def _positions_of_taken_bins(x: torch.Tensor, y: torch.Tensor, taken: torch.Tensor):
    """x and y (a bin's sample positions along the trailing axis) where ``taken``, else 0; ``taken``: whether the
    bin has a valid x and a valid y, so that the kernels take a sample in it.

    The kernels' boundary tests are false for NaN, so a NaN position counts as valid: its NaN weights make its bin
    NaN, as in the kernels. A bin that takes no sample (every sample of the other axis outside, or a grid side of
    0) is 0 in the kernels, but there a NaN position would meet the other axis's zero weights in
    :func:`_bilinear_sum` (0 x NaN = NaN). Position 0 instead leaves the weights 0 (validity is decided before)
    and the gradients finite.
    """
    return torch.where(taken, x, 0.0), torch.where(taken, y, 0.0)


def _bilinear_sum(table: torch.Tensor, row_base: torch.Tensor, height: int, width: int,
                  y_index: torch.Tensor, y_weight: torch.Tensor, x_index: torch.Tensor,
                  x_weight: torch.Tensor, stride: int = 1, extra: Optional[torch.Tensor] = None) -> torch.Tensor:
    """sum_{r, s} y_weight[..., r] * x_weight[..., s] * table[((row_base*H + y[r])*W + x[s])*stride + extra].

    ``table`` is (rows, D); ``row_base``, ``extra`` broadcast against the leading dims ``B...`` of the index
    tensors (B..., R) and (B..., Q). Returns (B..., D).
    """
    # one full-size (B..., R, Q) add: everything else is folded into the row and column parts first
    rows = (row_base.unsqueeze(-1) * height + y_index) * (width * stride)     # (B..., R)
    if extra is not None:
        rows = rows + extra.unsqueeze(-1)
    flat = rows.unsqueeze(-1) + (x_index * stride).unsqueeze(-2)              # (B..., R, Q)
    lead = flat.shape[:-2]
    r, q = flat.shape[-2], flat.shape[-1]
    vals = table.index_select(0, flat.reshape(-1)).view(-1, r * q, table.shape[1])
    weight = (y_weight.unsqueeze(-1) * x_weight.unsqueeze(-2)).expand(*lead, r, q).reshape(-1, r * q)
    return torch.einsum("bs,bsd->bd", weight, vals).view(*lead, table.shape[1])


def _check_batch_indices(rois: torch.Tensor, batch: int) -> torch.Tensor:
    """The (truncated) batch index of every RoI, after checking the rows: finite, boxes of finite width and height,
    the index in [0, batch)."""
    if rois.numel() and not bool(torch.isfinite(rois).all()):
        raise ShapeError("rois hold NaN or infinite coordinates; every row must be finite "
                         "(batch index, x1, y1, x2, y2) in input-image pixels")
    corners = rois[:, 1:].to(torch.promote_types(rois.dtype, torch.float32))   # the kernels' accumulation type
    if corners.numel() and not bool(torch.isfinite(corners[:, 2:] - corners[:, :2]).all()):
        raise ShapeError("rois hold a box whose width or height overflows to infinity (corners near the float32 "
                         "limit, about 3.4e38); give boxes in input-image pixels")
    index = rois[:, 0].to(torch.int64)
    if index.numel():
        lo, hi = int(index.min()), int(index.max())
        if lo < 0 or hi >= batch:
            bad = lo if lo < 0 else hi
            raise ShapeError(
                f"rois[:, 0] holds batch index {bad}, outside [0, {batch}) for an input of batch size {batch}; "
                "column 0 of rois must be the index of the image each box belongs to")
    return index


# ---------------------------------------------------------------------------------------------------------------
# deform_roi_pool
# ---------------------------------------------------------------------------------------------------------------

def _roi_grid(rois: torch.Tensor, output_size: Sequence[int], spatial_scale: float, sampling_ratio: int):
    """RoI start corner, size and per-RoI sample counts (gh, gw) as mmcv computes them."""
    out_h, out_w = output_size
    start_x = rois[:, 1] * spatial_scale - 0.5
    start_y = rois[:, 2] * spatial_scale - 0.5
    roi_w = rois[:, 3] * spatial_scale - 0.5 - start_x
    roi_h = rois[:, 4] * spatial_scale - 0.5 - start_y
    if sampling_ratio > 0:
        grid_h = torch.full_like(roi_h, sampling_ratio, dtype=torch.int64)
        grid_w = grid_h
    else:
        # mmcv takes ceilf of the single-precision quotient, also for double inputs.
        # Capped at MAX_SAMPLES_PER_BIN_SIDE per bin side, as in the CUDA/host kernels: a guard against absurd boxes
        # (mmcv has none and can loop for ever); it only differs from mmcv for bins over 1024 pixels wide.
        grid_h = torch.ceil((roi_h / out_h).detach().float()).clamp(min=0, max=MAX_SAMPLES_PER_BIN_SIDE).to(torch.int64)
        grid_w = torch.ceil((roi_w / out_w).detach().float()).clamp(min=0, max=MAX_SAMPLES_PER_BIN_SIDE).to(torch.int64)
    return start_x, start_y, roi_w, roi_h, grid_h, grid_w


def _bin_origins(start_x: torch.Tensor, start_y: torch.Tensor, roi_w: torch.Tensor, roi_h: torch.Tensor,
                 offset: Optional[torch.Tensor], gamma: float, output_size: Sequence[int], dtype: torch.dtype):
    """Where each bin's samples start, the deformable shift applied: (origin_x, origin_y), each (k, out_h, out_w, 1),
    and the bin sizes (bin_w, bin_h), each (k, 1, 1, 1). Sample u of a bin lies at :func:`_sample_positions`."""
    out_h, out_w = output_size
    device = start_x.device
    bin_w = (roi_w / out_w).view(-1, 1, 1, 1)
    bin_h = (roi_h / out_h).view(-1, 1, 1, 1)
    sx = start_x.view(-1, 1, 1)
    sy = start_y.view(-1, 1, 1)
    if offset is not None:
        sx = sx + gamma * roi_w.view(-1, 1, 1) * offset[:, 0]
        sy = sy + gamma * roi_h.view(-1, 1, 1) * offset[:, 1]
    k = start_x.shape[0]
    j = torch.arange(out_w, device=device, dtype=dtype).view(1, 1, out_w, 1)
    i = torch.arange(out_h, device=device, dtype=dtype).view(1, out_h, 1, 1)
    origin_x = sx.expand(k, out_h, out_w).unsqueeze(-1) + j * bin_w
    origin_y = sy.expand(k, out_h, out_w).unsqueeze(-1) + i * bin_h
    return origin_x, origin_y, bin_w, bin_h


def _sample_positions(origin: torch.Tensor, bin_size: torch.Tensor, grid: torch.Tensor,
                      index: torch.Tensor) -> torch.Tensor:
    """Positions along one axis of the samples ``index`` (in the positions' dtype) of bins of ``grid`` samples:
    origin + (index + 0.5) * bin_size / grid. The one formula for the pooling and for :func:`_sample_run`, so that
    both see the same positions, bit for bit."""
    return origin + (index + 0.5) * bin_size / grid.clamp(min=1).to(origin.dtype)


def _first_index_where(is_past: Callable[[torch.Tensor], torch.Tensor], grid: torch.Tensor,
                       longest: int) -> torch.Tensor:
    """Per bin, the least sample index u in [0, grid) with ``is_past(u)``, or ``grid`` if none, for a test that is
    false and then true along u: a binary search of bit_length(longest) steps, ``longest`` the largest grid."""
    low = torch.zeros_like(grid)
    high = grid
    for _ in range(longest.bit_length()):
        middle = (low + high) // 2
        searching = low < high
        past = is_past(middle)
        high = torch.where(searching & past, middle, high)
        low = torch.where(searching & ~past, middle + 1, low)
    return low


def _sample_run(origin: torch.Tensor, bin_size: torch.Tensor, grid: torch.Tensor, size: int, longest: int):
    """Per bin along one axis: [first, stop), the indices of the samples that pass RoIAlign's test (a position in
    [-1, size]; every other sample is 0), each (k, out_h, out_w, 1) int64.

    Exact, not an estimate. A sample's position is monotone in its index (a chain of correctly rounded products, a
    quotient and a sum of a growing term), rising for a bin size >= 0 and falling below 0 (a flipped RoI with a fixed
    sampling_ratio), so the samples that pass form one run, whose two ends are searched on the very positions the
    pooling computes (:func:`_sample_positions`). A NaN position passes the test, as in the kernels: every sample of
    a NaN bin (a NaN offset) passes and all sit at the same NaN position (pixels 0 and 1 of the axis), so the run
    keeps one of them, which makes the bin and the gradients on those pixels NaN, as all of them do.
    """
    grid = grid.expand(origin.shape).contiguous()
    rising = bin_size >= 0

    def position(index):
        return _sample_positions(origin, bin_size, grid, index.to(origin.dtype))

    def before(index):  # on the side of the map the bin's samples come from
        p = position(index)
        return torch.where(rising, p < -1, p > size)

    def beyond(index):  # on the side they go to
        p = position(index)
        return torch.where(rising, p > size, p < -1)

    first = _first_index_where(lambda index: ~before(index), grid, longest)
    stop = _first_index_where(beyond, grid, longest)
    nan_bin = position(first).isnan()
    return first, torch.where(nan_bin, torch.minimum(stop, first + 1), stop)


def _sample_runs(start_x: torch.Tensor, start_y: torch.Tensor, roi_w: torch.Tensor, roi_h: torch.Tensor,
                 grid_h: torch.Tensor, grid_w: torch.Tensor, offset: Optional[torch.Tensor], gamma: float,
                 output_size: Sequence[int], height: int, width: int, dtype: torch.dtype):
    """The samples to take per bin: (first_x, stop_x, first_y, stop_y), each (K, out_h, out_w, 1), or None when no
    RoI has bins larger than the map.

    A bin wider (taller) than the range RoIAlign samples, [-1, W] ([-1, H]), always has samples off the map, whatever
    its offset: a box many times the map (an adaptive grid of up to 1024 x 1024 samples per bin) has few on it. For
    the RoIs with such bins the runs hold only the samples that pass the test (:func:`_sample_run`), so the pooling
    gathers no more than about (H + 2) x (W + 2) samples per bin with the adaptive grid (ceil(bin) samples per side:
    more than (size + 1) / (size + 2) pixels apart) instead of the whole grid; the skipped samples were 0 and the
    divisor still counts them. Every other RoI keeps its whole grid, [0, grid), and is pooled exactly as before.
    """
    out_h, out_w = output_size
    with torch.no_grad():
        large = ((roi_w / out_w).abs() > width + 1) | ((roi_h / out_h).abs() > height + 1)
        if not bool(large.any()):
            return None
        shape = (roi_w.shape[0], out_h, out_w, 1)
        first_x = torch.zeros(shape, dtype=torch.int64, device=roi_w.device)
        first_y = torch.zeros_like(first_x)
        stop_x = grid_w.view(-1, 1, 1, 1).expand(shape).clone()
        stop_y = grid_h.view(-1, 1, 1, 1).expand(shape).clone()
        rows = large.nonzero().squeeze(1)
        pick = lambda t: t.index_select(0, rows)
        origin_x, origin_y, bin_w, bin_h = _bin_origins(pick(start_x), pick(start_y), pick(roi_w), pick(roi_h),
                                                        None if offset is None else pick(offset), gamma,
                                                        output_size, dtype)
        grid_x, grid_y = pick(grid_w).view(-1, 1, 1, 1), pick(grid_h).view(-1, 1, 1, 1)
        first_x[rows], stop_x[rows] = _sample_run(origin_x, bin_w, grid_x, width, int(grid_x.max()))
        first_y[rows], stop_y[rows] = _sample_run(origin_y, bin_h, grid_y, height, int(grid_y.max()))
    return first_x, stop_x, first_y, stop_y


def _sample_indices(length: int, first: Optional[torch.Tensor], stop: torch.Tensor, dtype: torch.dtype):
    """Indices first + (0 .. length-1) of the samples to gather along one axis (from 0 when ``first`` is None), in
    ``dtype``, and whether each is below ``stop`` (a sample of the run, not padding to ``length``)."""
    if first is None:  # as the whole grids always were: the test on the index in dtype (bfloat16 rounds it past 256)
        index = torch.arange(length, device=stop.device, dtype=dtype).view(1, 1, 1, length)
        return index, index < stop
    index = first + torch.arange(length, device=stop.device)
    return index.to(dtype), index < stop


def _roi_pool_chunk(table: torch.Tensor, height: int, width: int, batch: torch.Tensor,
                    start_x: torch.Tensor, start_y: torch.Tensor, roi_w: torch.Tensor, roi_h: torch.Tensor,
                    grid_h: torch.Tensor, grid_w: torch.Tensor, offset: Optional[torch.Tensor],
                    output_size: Sequence[int], gamma: float, max_h: int, max_w: int,
                    nonfinite: bool = False, runs: Optional[Tuple[torch.Tensor, ...]] = None) -> torch.Tensor:
    """Pooled values (k, C, out_h, out_w) for one chunk of k RoIs whose runs of samples fit max_h x max_w;
    ``nonfinite``: the offset may hold NaN or +-inf (:func:`_has_nonfinite`); ``runs``: the chunk's
    (first_x, stop_x, first_y, stop_y) (:func:`_sample_runs`), None for the whole grids."""
    dtype = table.dtype
    origin_x, origin_y, bin_w, bin_h = _bin_origins(start_x, start_y, roi_w, roi_h, offset, gamma, output_size,
                                                    dtype)
    gw = grid_w.view(-1, 1, 1, 1)
    gh = grid_h.view(-1, 1, 1, 1)
    first_x, stop_x, first_y, stop_y = (None, gw, None, gh) if runs is None else runs
    u, in_run_x = _sample_indices(max_w, first_x, stop_x, dtype)
    v, in_run_y = _sample_indices(max_h, first_y, stop_y, dtype)
    x = _sample_positions(origin_x, bin_w, gw, u)          # (k, out_h, out_w, max_w)
    y = _sample_positions(origin_y, bin_h, gh, v)          # (k, out_h, out_w, max_h)
    # RoIAlign's rule: samples beyond one pixel outside the map are 0, the rest clamp onto it. Tested as the kernels
    # test it (roiAlignTap), "outside" being false for NaN: a sample at a NaN position (a NaN offset, or 0 x inf) is
    # taken and makes its bin NaN; one at +-inf is outside.
    valid_x = ~((x < -1) | (x > width)) & in_run_x
    valid_y = ~((y < -1) | (y > height)) & in_run_y
    if nonfinite:
        x, y = _positions_of_taken_bins(x, y, valid_x.any(-1, keepdim=True) & valid_y.any(-1, keepdim=True))
    x_index, x_weight = _axis_corners(x.clamp(0, width - 1), width, valid_x)
    y_index, y_weight = _axis_corners(y.clamp(0, height - 1), height, valid_y)
    pooled = _bilinear_sum(table, batch.view(-1, 1, 1), height, width, y_index, y_weight, x_index, x_weight)
    count = (grid_h * grid_w).clamp(min=1).to(dtype).view(-1, 1, 1, 1)
    return (pooled / count).permute(0, 3, 1, 2)


def _chunks(sizes: List[int], per_unit: int, budget: int) -> List[Tuple[int, int]]:
    """Split sorted, non-decreasing sides (of grids or of runs of samples) into [start, stop) chunks of RoIs with
    (stop-start)*per_unit*side**2 <= budget (a chunk is at least one RoI)."""
    import numpy as np

    side = np.maximum(np.asarray(sizes, dtype=np.int64), 1)
    out, start, n = [], 0, len(sizes)
    while start < n:
        counts = np.arange(1, n - start + 1, dtype=np.float64)
        cost = counts * per_unit * side[start:].astype(np.float64) ** 2   # non-decreasing in the chunk length
        stop = start + max(1, int(np.searchsorted(cost, budget, side="right")))
        out.append((start, stop))
        start = stop
    return out


def _longest_run(runs: Tuple[torch.Tensor, ...]) -> torch.Tensor:
    """Per RoI, its longest run of samples (:func:`_sample_runs`) along either axis over its bins: the side that
    :func:`_chunks` sizes its chunk by (the chunk pads each axis to at most its largest such side)."""
    first_x, stop_x, first_y, stop_y = runs
    return torch.maximum(stop_x - first_x, stop_y - first_y).flatten(1).amax(1)


def _padded_sides(grid_h: torch.Tensor, grid_w: torch.Tensor,
                  runs: Optional[Tuple[torch.Tensor, ...]]) -> Tuple[int, int]:
    """(max_h, max_w): the sides a chunk pads its bins' samples to, its longest grids or, with ``runs``, its longest
    runs (:func:`_sample_runs`); at least 1."""
    if runs is None:
        return max(1, int(grid_h.max())), max(1, int(grid_w.max()))
    first_x, stop_x, first_y, stop_y = runs
    return max(1, int((stop_y - first_y).max())), max(1, int((stop_x - first_x).max()))


def _roi_pool_composite(input: torch.Tensor, rois: torch.Tensor, offset: Optional[torch.Tensor],
                        output_size: Sequence[int], spatial_scale: float, sampling_ratio: int,
                        gamma: float) -> torch.Tensor:
    """deform_roi_pool from differentiable torch ops, in the inputs' own dtype. rois must be non-empty."""
    n, c, h, w = input.shape
    out_h, out_w = output_size
    batch = _check_batch_indices(rois, n)
    table = input.permute(0, 2, 3, 1).reshape(n * h * w, c)  # channels last: one gather fetches all channels
    start_x, start_y, roi_w, roi_h, grid_h, grid_w = _roi_grid(rois, output_size, spatial_scale, sampling_ratio)
    runs = _sample_runs(start_x, start_y, roi_w, roi_h, grid_h, grid_w, offset, gamma, output_size, h, w,
                        table.dtype)
    nonfinite = _has_nonfinite(offset)
    per_unit = 4 * out_h * out_w * c  # gathered elements per RoI per sample of a side-1 grid
    if sampling_ratio > 0 and runs is None:
        order = None
        sizes = [sampling_ratio] * rois.shape[0]
    else:
        side = torch.maximum(grid_h, grid_w) if runs is None else _longest_run(runs)
        side, order = torch.sort(side)
        sizes = side.tolist()
    outputs = []
    for start, stop in _chunks(sizes, per_unit, _gather_budget(input.device)):
        sel = slice(start, stop) if order is None else order[start:stop]
        pick = (lambda t: t[sel]) if order is None else (lambda t: t.index_select(0, sel))
        chunk_runs = None if runs is None else tuple(pick(t) for t in runs)
        max_h, max_w = (sampling_ratio, sampling_ratio) if order is None else \
            _padded_sides(pick(grid_h), pick(grid_w), chunk_runs)
        outputs.append(_roi_pool_chunk(
            table, h, w, pick(batch), pick(start_x), pick(start_y), pick(roi_w), pick(roi_h), pick(grid_h),
            pick(grid_w), None if offset is None else pick(offset), output_size, gamma, max_h, max_w, nonfinite,
            chunk_runs))
    out = outputs[0] if len(outputs) == 1 else torch.cat(outputs)
    if order is not None:
        out = out.index_select(0, torch.argsort(order))
    return out


def _forward(native: Callable, composite: Callable, input: torch.Tensor, rois: torch.Tensor,
             shifts: Optional[torch.Tensor], *params) -> torch.Tensor:
    """One op's forward, in the input's dtype: the CUDA kernels on a GPU (half types as they are, float32 sums), the
    host library's CPU forward, or the composite (:mod:`dcn_deploy.ops.native_paths` chooses). float64 always runs
    the composite: the kernels take spatial_scale, gamma and trans_std in float32 (as ONNX attributes and TensorRT
    fields hold them), which would move float64 samples that lie on a boundary. ``native``: the
    :mod:`dcn_deploy.plugin.native_roi` function; ``shifts``: offset or trans. rois must be non-empty."""
    exact = input.dtype == torch.float64
    with torch.no_grad():
        kernels = None if exact else native_paths.cuda_library_for(input)
        if kernels is not None:
            _check_batch_indices(rois, input.shape[0])  # the kernels pool such a RoI to 0; the op raises
            return native(input, rois, shifts, *params, entry="cuda", library=kernels)
        compute = compute_dtype(input.dtype)
        args = (input.to(compute), rois.to(compute), None if shifts is None else shifts.to(compute))
        host = None if exact else native_paths.cpu_library_for(args[0])
        if host is not None:
            _check_batch_indices(rois, input.shape[0])
            out = native(*args, *params, entry="cpu", library=host)
        else:
            out = composite(*args, *params)
    # contiguous, as the fake implementations promise (the composites' outputs are channels-last views): torch.compile
    # and torch.export plan the next ops on the promised strides
    return out.to(input.dtype).contiguous()


@torch.library.custom_op("dcn_deploy::deform_roi_pool", mutates_args=())
def _deform_roi_pool_op(input: torch.Tensor, rois: torch.Tensor, offset: Optional[torch.Tensor],
                        output_size: Sequence[int], spatial_scale: float, sampling_ratio: int,
                        gamma: float) -> torch.Tensor:
    if rois.shape[0] == 0:
        return input.new_zeros((0, input.shape[1], output_size[0], output_size[1]))
    return _forward(deform_roi_pool_native, _roi_pool_composite, input, rois, offset, output_size, spatial_scale,
                    sampling_ratio, gamma)


@_deform_roi_pool_op.register_fake
def _deform_roi_pool_fake(input, rois, offset, output_size, spatial_scale, sampling_ratio, gamma):
    return input.new_empty((rois.shape[0], input.shape[1], output_size[0], output_size[1]))


def _roi_pool_setup_context(ctx, inputs, output):
    input, rois, offset, output_size, spatial_scale, sampling_ratio, gamma = inputs
    ctx.save_for_backward(input, rois, offset)
    ctx.pool_args = (output_size, spatial_scale, sampling_ratio, gamma)


def _composite_gradients(composite, grad_output: torch.Tensor, input: torch.Tensor, rois: torch.Tensor,
                         shifts: Optional[torch.Tensor], params, input_grad: bool,
                         shifts_grad: bool) -> Tuple[torch.Tensor, torch.Tensor]:
    """(grad_input, grad_shifts) of ``composite`` (an op's differentiable torch form, re-run in the compute dtype)
    for the output gradient ``grad_output``; ``shifts``: offset or trans; a gradient not asked for is an empty
    tensor."""
    nothing = input.new_empty(0)
    if rois.shape[0] == 0:
        return (input.new_zeros(input.shape) if input_grad else nothing,
                shifts.new_zeros(shifts.shape) if shifts_grad else nothing)
    compute = compute_dtype(input.dtype)
    x, r = input.detach().to(compute), rois.detach().to(compute)
    s = None if shifts is None else shifts.detach().to(compute)
    primals = [t.requires_grad_() for t, flag in ((x, input_grad), (s, shifts_grad)) if flag]
    with torch.enable_grad(), autocast_off(input.device.type):
        out = composite(x, r, s, *params)
        found = iter(torch.autograd.grad(out, primals, grad_output.to(compute), allow_unused=True))
    grads = []
    for flag, like in ((input_grad, input), (shifts_grad, shifts)):
        if not flag:
            grads.append(nothing)
            continue
        g = next(found)
        # contiguous, as the fake kernels promise (the composites' gradients come out channels-last)
        grads.append(like.new_zeros(like.shape) if g is None else g.to(like.dtype).contiguous())
    return grads[0], grads[1]


def _gradients_fake(input: torch.Tensor, shifts: Optional[torch.Tensor], input_grad: bool, shifts_grad: bool):
    nothing = input.new_empty(0)
    return (input.new_empty(input.shape) if input_grad else nothing,
            shifts.new_empty(shifts.shape) if shifts_grad else nothing)


@torch.library.custom_op("dcn_deploy::deform_roi_pool_backward", mutates_args=())
def _deform_roi_pool_backward_op(grad_output: torch.Tensor, input: torch.Tensor, rois: torch.Tensor,
                                 offset: Optional[torch.Tensor], output_size: Sequence[int], spatial_scale: float,
                                 sampling_ratio: int, gamma: float, input_grad: bool,
                                 offset_grad: bool) -> Tuple[torch.Tensor, torch.Tensor]:
    """deform_roi_pool's backward as one opaque op with a fake kernel: the composite's data-dependent steps (the RoI
    checks, the adaptive grid sizes) cannot be traced by torch.compile, meta or fake tensors, so a compiled training
    step failed (and a meta or fake backward). Torch runs a kernel with autograd off: it is turned back on."""
    with autograd_inside_kernel():
        return _composite_gradients(_roi_pool_composite, grad_output, input, rois, offset,
                                    (output_size, spatial_scale, sampling_ratio, gamma), input_grad, offset_grad)


@_deform_roi_pool_backward_op.register_fake
def _deform_roi_pool_backward_fake(grad_output, input, rois, offset, output_size, spatial_scale, sampling_ratio,
                                   gamma, input_grad, offset_grad):
    return _gradients_fake(input, offset, input_grad, offset_grad)


def _recompute_grads(ctx, op: str, backward_op, grad_output):
    """Gradients for (input, rois, shifts) through ``backward_op``, which re-runs the differentiable composite in
    the compute dtype (``op``: the op's name, for the error on a double backward)."""
    input, rois, shifts = ctx.saved_tensors
    needs = ctx.needs_input_grad
    want_input = bool(needs[0])
    want_shifts = shifts is not None and bool(needs[2])
    if not (want_input or want_shifts):
        return [None, None, None]
    refuse_double_backward(op)
    grad_input, grad_shifts = backward_op(grad_output, input, rois, shifts, *ctx.pool_args, want_input, want_shifts)
    return [grad_input if want_input else None, None, grad_shifts if want_shifts else None]


def _roi_pool_backward(ctx, grad_output):
    grads = _recompute_grads(ctx, "deform_roi_pool", _deform_roi_pool_backward_op, grad_output)
    return (*grads, None, None, None, None)


_deform_roi_pool_op.register_autograd(_roi_pool_backward, setup_context=_roi_pool_setup_context)
register_float32_autocast(_deform_roi_pool_op)
register_float32_autocast(_deform_roi_pool_backward_op)


# ---------------------------------------------------------------------------------------------------------------
# deform_psroi_pool
# ---------------------------------------------------------------------------------------------------------------

def _round_half_away(t: torch.Tensor) -> torch.Tensor:
    """C's round(): halves go away from zero (torch.round goes to even)."""
    return torch.sign(t) * torch.floor(t.abs() + 0.5)


def _psroi_chunk(table: torch.Tensor, height: int, width: int, batch: torch.Tensor, rois: torch.Tensor,
                 trans: Optional[torch.Tensor], spatial_scale: float, group_size: int, pooled_size: int,
                 part_size: int, sample_per_part: int, trans_std: float, num_classes: int,
                 nonfinite: bool = False) -> torch.Tensor:
    """Pooled values (k, num_classes, P, P, channels_per_class) for one chunk of RoIs; ``nonfinite``: the trans may
    hold NaN or +-inf (:func:`_has_nonfinite`)."""
    dtype, device = table.dtype, table.device
    p, s, g = pooled_size, sample_per_part, group_size
    k = rois.shape[0]
    start_x = (_round_half_away(rois[:, 1]) * spatial_scale - 0.5).view(-1, 1, 1, 1)
    start_y = (_round_half_away(rois[:, 2]) * spatial_scale - 0.5).view(-1, 1, 1, 1)
    end_x = (_round_half_away(rois[:, 3]) + 1.0) * spatial_scale - 0.5
    end_y = (_round_half_away(rois[:, 4]) + 1.0) * spatial_scale - 0.5
    roi_w = (end_x - start_x.view(-1)).clamp(min=0.1).view(-1, 1, 1, 1)
    roi_h = (end_y - start_y.view(-1)).clamp(min=0.1).view(-1, 1, 1, 1)
    bin_w, bin_h = roi_w / p, roi_h / p
    sub_w, sub_h = bin_w / s, bin_h / s

    bins = torch.arange(p, device=device)
    i = bins.to(dtype).view(1, 1, p, 1)
    j = bins.to(dtype).view(1, 1, 1, p)
    wstart = j * bin_w + start_x                                           # (k, 1, 1, P)
    hstart = i * bin_h + start_y                                           # (k, 1, P, 1)
    if trans is not None:
        part = (bins * part_size) // p                                      # floor(i / P * part_size), exactly
        t = trans.view(k, num_classes, 2, part_size, part_size)[:, :, :, part][:, :, :, :, part]
        wstart = wstart + t[:, :, 0] * trans_std * roi_w                    # (k, classes, P, P)
        hstart = hstart + t[:, :, 1] * trans_std * roi_h
    shape = (k, num_classes, p, p)
    samples = torch.arange(s, device=device, dtype=dtype)
    x = wstart.expand(shape).unsqueeze(-1) + samples * sub_w.unsqueeze(-1)  # (k, classes, P, P, S)
    y = hstart.expand(shape).unsqueeze(-1) + samples * sub_h.unsqueeze(-1)
    # tested as the kernels test it (psroiSampleCoordinate), "outside" being false for NaN: a sample at a NaN
    # position (a NaN trans, or 0 x inf) is taken and makes its bin NaN; one at +-inf is outside
    valid_x = ~((x < -0.5) | (x > width - 0.5))
    valid_y = ~((y < -0.5) | (y > height - 0.5))
    count = valid_x.sum(-1) * valid_y.sum(-1)                              # valid (x, y) pairs per bin
    if nonfinite:
        x, y = _positions_of_taken_bins(x, y, (count > 0).unsqueeze(-1))
    x_index, x_weight = _axis_corners(x.clamp(0, width - 1), width, valid_x)
    y_index, y_weight = _axis_corners(y.clamp(0, height - 1), height, valid_y)

    group = ((bins * g) // p).clamp(0, g - 1)
    # rows of the table are (n, gi, gj, y, x, class); each row holds that class's channels_per_class channels
    base = (batch.view(-1, 1, 1, 1) * g + group.view(1, 1, p, 1)) * g + group.view(1, 1, 1, p)
    classes = torch.arange(num_classes, device=device).view(1, -1, 1, 1)
    pooled = _bilinear_sum(table, base, height, width, y_index, y_weight, x_index, x_weight,
                           stride=num_classes, extra=classes)
    return pooled / count.clamp(min=1).to(dtype).unsqueeze(-1)


def _psroi_composite(input: torch.Tensor, rois: torch.Tensor, trans: Optional[torch.Tensor],
                     spatial_scale: float, output_dim: int, group_size: int, pooled_size: int, part_size: int,
                     sample_per_part: int, trans_std: float, no_trans: bool) -> torch.Tensor:
    """deform_psroi_pool from differentiable torch ops, in the inputs' own dtype. rois must be non-empty."""
    n, c, h, w = input.shape
    g, p = group_size, pooled_size
    part_size = part_size or pooled_size
    batch = _check_batch_indices(rois, n)
    if no_trans:
        trans = None
    num_classes = 1 if trans is None else trans.shape[1] // 2
    per_class = output_dim // num_classes
    # channel (ctop*G + gi)*G + gj with ctop = cls*per_class + m  ->  table rows (n, gi, gj, y, x, cls), columns m
    table = (input.reshape(n, num_classes, per_class, g, g, h, w).permute(0, 3, 4, 5, 6, 1, 2)
             .reshape(n * g * g * h * w * num_classes, per_class))
    k = rois.shape[0]
    per_roi = num_classes * p * p * 4 * sample_per_part ** 2 * per_class
    step = max(1, _gather_budget(input.device) // per_roi)
    nonfinite = _has_nonfinite(trans)
    outputs = []
    for start in range(0, k, step):
        sel = slice(start, min(k, start + step))
        outputs.append(_psroi_chunk(table, h, w, batch[sel], rois[sel], None if trans is None else trans[sel],
                                    spatial_scale, g, p, part_size, sample_per_part, trans_std, num_classes,
                                    nonfinite))
    out = outputs[0] if len(outputs) == 1 else torch.cat(outputs)         # (K, classes, P, P, per_class)
    return out.permute(0, 1, 4, 2, 3).reshape(k, output_dim, p, p)


@torch.library.custom_op("dcn_deploy::deform_psroi_pool", mutates_args=())
def _deform_psroi_pool_op(input: torch.Tensor, rois: torch.Tensor, trans: Optional[torch.Tensor],
                          spatial_scale: float, output_dim: int, group_size: int, pooled_size: int,
                          part_size: int, sample_per_part: int, trans_std: float, no_trans: bool) -> torch.Tensor:
    if rois.shape[0] == 0:
        return input.new_zeros((0, output_dim, pooled_size, pooled_size))
    return _forward(deform_psroi_pool_native, _psroi_composite, input, rois, trans, spatial_scale, output_dim,
                    group_size, pooled_size, part_size, sample_per_part, trans_std, no_trans)


@_deform_psroi_pool_op.register_fake
def _deform_psroi_pool_fake(input, rois, trans, spatial_scale, output_dim, group_size, pooled_size, part_size,
                            sample_per_part, trans_std, no_trans):
    return input.new_empty((rois.shape[0], output_dim, pooled_size, pooled_size))


def _psroi_setup_context(ctx, inputs, output):
    input, rois, trans, *args = inputs
    ctx.save_for_backward(input, rois, trans)
    ctx.pool_args = tuple(args)


@torch.library.custom_op("dcn_deploy::deform_psroi_pool_backward", mutates_args=())
def _deform_psroi_pool_backward_op(grad_output: torch.Tensor, input: torch.Tensor, rois: torch.Tensor,
                                   trans: Optional[torch.Tensor], spatial_scale: float, output_dim: int,
                                   group_size: int, pooled_size: int, part_size: int, sample_per_part: int,
                                   trans_std: float, no_trans: bool, input_grad: bool,
                                   trans_grad: bool) -> Tuple[torch.Tensor, torch.Tensor]:
    """deform_psroi_pool's backward as one opaque op (see :func:`_deform_roi_pool_backward_op`)."""
    with autograd_inside_kernel():
        return _composite_gradients(_psroi_composite, grad_output, input, rois, trans,
                                    (spatial_scale, output_dim, group_size, pooled_size, part_size, sample_per_part,
                                     trans_std, no_trans), input_grad, trans_grad)


@_deform_psroi_pool_backward_op.register_fake
def _deform_psroi_pool_backward_fake(grad_output, input, rois, trans, spatial_scale, output_dim, group_size,
                                     pooled_size, part_size, sample_per_part, trans_std, no_trans, input_grad,
                                     trans_grad):
    return _gradients_fake(input, trans, input_grad, trans_grad)


def _psroi_backward(ctx, grad_output):
    grads = _recompute_grads(ctx, "deform_psroi_pool", _deform_psroi_pool_backward_op, grad_output)
    return (*grads, *([None] * len(ctx.pool_args)))


_deform_psroi_pool_op.register_autograd(_psroi_backward, setup_context=_psroi_setup_context)
register_float32_autocast(_deform_psroi_pool_op)
register_float32_autocast(_deform_psroi_pool_backward_op)


# ---------------------------------------------------------------------------------------------------------------
# Public functions
# ---------------------------------------------------------------------------------------------------------------

def deform_roi_pool(input: torch.Tensor, rois: torch.Tensor, offset: Optional[torch.Tensor], output_size,
                    spatial_scale: float = 1.0, sampling_ratio: int = 0, gamma: float = 0.1) -> torch.Tensor:
    """Deformable RoI pooling, mmcv's ``deform_roi_pool`` (formulas in this module's docstring).

    Args:
        input: (N, C, H, W) feature map.
        rois: (K, 5) rows (batch index, x1, y1, x2, y2) in input-image pixels, the input's dtype.
        offset: (K, 2, out_h, out_w) normalised bin shifts (channel 0: x, channel 1: y), scaled by
            ``gamma`` times the RoI's width/height; None for plain RoIAlign.
        output_size: int or (out_h, out_w).
        spatial_scale: feature-map pixels per image pixel (1/stride).
        sampling_ratio: samples per bin side; 0 = adaptive, ceil(roi size / output size) per RoI.
        gamma: offset scale.

    Returns:
        (K, C, out_h, out_w) in the input's dtype (float16/bfloat16 computed in float32). Under ``torch.autocast``
        the tensors may mix float32 and the half types (float32 boxes beside a half-precision map): all are
        computed in float32, the result in the input's dtype. Autodiff as
        :func:`dcn_deploy.ops.deform_conv.deform_conv2d`'s: backward and vmap, no forward mode or torch.func.grad.

    Raises:
        ShapeError (a ValueError) for malformed rois, out-of-range batch indices, an offset of the wrong shape, or
        a spatial_scale that is not a finite number > 0; TypeError for mixed dtypes (outside torch.autocast).
    """
    (input, rois, offset), result_dtype = checked_arguments("deform_roi_pool",
                                                            {"input": input, "rois": rois, "offset": offset})
    out = as_pair(output_size, "output_size", 1)
    spatial_scale = check_float(spatial_scale, "spatial_scale", positive=True)
    gamma = check_float(gamma, "gamma")
    sampling_ratio = check_sampling_ratio(sampling_ratio)
    if has_concrete_shapes(input, rois, offset):
        deform_roi_pool_spec(input.shape, rois.shape, None if offset is None else offset.shape, out, sampling_ratio)
    elif input.dim() != 4 or rois.dim() != 2:
        raise ShapeError("input must be 4-D (N, C, H, W) and rois 2-D (K, 5)")
    return call_in_float32(lambda: _deform_roi_pool_op(input, rois, offset, list(out), float(spatial_scale),
                                                       int(sampling_ratio), float(gamma)), input, result_dtype)


def deform_psroi_pool(input: torch.Tensor, rois: torch.Tensor, trans: Optional[torch.Tensor], spatial_scale: float,
                      output_dim: int, group_size: int, pooled_size: int, part_size: int = 0,
                      sample_per_part: int = 1, trans_std: float = 0.0, no_trans: bool = False) -> torch.Tensor:
    """Deformable position-sensitive RoI pooling, Deformable-ConvNets' ``DeformablePSROIPooling`` (R-FCN).

    Formulas in this module's docstring. Argument names and defaults are the original operator's.

    Args:
        input: (N, output_dim*group_size**2, H, W) position-sensitive score maps.
        rois: (K, 5) rows (batch index, x1, y1, x2, y2) in input-image pixels (rounded to integers), input's dtype.
        trans: (K, 2*num_classes, part_size, part_size) normalised part offsets (channel 2*cls: x, 2*cls+1: y),
            scaled by ``trans_std`` and the RoI size; ignored (may be None) when ``no_trans``.
        spatial_scale: feature-map pixels per image pixel (1/stride).
        output_dim: output channels (classes, or 4*classes for boxes, ...).
        group_size: side of the position-sensitive channel grid.
        pooled_size: side of the output grid.
        part_size: side of the offset grid (0 = pooled_size).
        sample_per_part: samples per bin side.
        trans_std: offset scale.
        no_trans: pool without offsets.

    Returns:
        (K, output_dim, pooled_size, pooled_size) in the input's dtype (float16/bfloat16 computed in float32);
        autocast and autodiff as :func:`deform_roi_pool`.
    """
    if no_trans:
        trans = None
    (input, rois, trans), result_dtype = checked_arguments("deform_psroi_pool",
                                                           {"input": input, "rois": rois, "trans": trans})
    spatial_scale = check_float(spatial_scale, "spatial_scale", positive=True)
    trans_std = check_float(trans_std, "trans_std")
    if has_concrete_shapes(input, rois, trans):
        spec = deform_psroi_pool_spec(input.shape, rois.shape, None if trans is None else trans.shape, output_dim,
                                      group_size, pooled_size, part_size, sample_per_part, no_trans)
        part_size = spec.part_size
    else:
        if input.dim() != 4 or rois.dim() != 2:
            raise ShapeError("input must be 4-D (N, C, H, W) and rois 2-D (K, 5)")
        part_size = int(part_size) or int(pooled_size)
    return call_in_float32(lambda: _deform_psroi_pool_op(input, rois, trans, float(spatial_scale), int(output_dim),
                                                         int(group_size), int(pooled_size), int(part_size),
                                                         int(sample_per_part), float(trans_std), bool(no_trans)),
                           input, result_dtype)


# torch.jit.script of either function: one clear error
deform_roi_pool.__prepare_scriptable__ = refuse_torchscript("deform_roi_pool")
deform_psroi_pool.__prepare_scriptable__ = refuse_torchscript("deform_psroi_pool")
