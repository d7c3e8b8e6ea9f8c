"""``GridSample`` for the ``onnx-reference`` runner, vectorised, written from the standard's text (numpy only).

onnx's own reference ``GridSample`` (onnx 1.23) refuses the mode names of opsets 16-19 (``bilinear``, ``bicubic``:
"only supports nearest, linear, and cubic modes") and runs a Python loop per output value, so it could not check the
files ``dcn-deploy adopt`` writes for mmdeploy's deformable attention and ``grid_sampler``. This one takes both
namings and computes in float64:

- ``X`` (N, C, D1, ..., Dr), ``grid`` (N, O1, ..., Or, r) whose last axis holds the coordinates in reverse order of
  X's spatial axes (x for the last axis, then y, then z), normalised to [-1, 1];
- unnormalised, with ``align_corners=1``, -1 and 1 are the centres of the first and last pixels,
  ``(g + 1) / 2 * (size - 1)``; with ``align_corners=0``, their outer edges, ``((g + 1) * size - 1) / 2``;
- ``padding_mode``: ``zeros`` reads 0 outside; ``border`` clips the position to [0, size - 1]; ``reflection``
  reflects it about the borders (the pixel centres with ``align_corners=1``, their edges without) until it falls
  inside, then clips. For ``linear`` and ``nearest`` the position is padded; for ``cubic`` (2-D only), each of the
  4 x 4 taps is;
- ``nearest`` rounds halves to even; ``linear`` weights the 2^r neighbours; ``cubic`` uses the cubic convolution
  kernel with A = -0.75.

A non-finite position gives NaN.
"""
from __future__ import annotations

import itertools
from typing import List, Tuple

import numpy as np
from onnx.reference.op_run import OpRun

__all__ = ["GridSample"]

_MODES = {"bilinear": "linear", "bicubic": "cubic", "linear": "linear", "cubic": "cubic", "nearest": "nearest"}
_CUBIC_A = -0.75


def _unnormalised(grid: np.ndarray, size: int, align_corners: bool) -> np.ndarray:
    if align_corners:
        return (grid + 1) / 2 * (size - 1)
    return ((grid + 1) * size - 1) / 2


def _reflected(position: np.ndarray, low: float, high: float) -> np.ndarray:
    """``position`` reflected about ``low`` and ``high`` until it lies between them."""
    span = high - low
    if span <= 0:
        return np.zeros_like(position)
    distance = np.abs(position - low)
    flips = np.floor(distance / span)
    extra = distance - flips * span
    return np.where(flips % 2 == 0, low + extra, high - extra)


def _padded(position: np.ndarray, size: int, padding_mode: str, align_corners: bool) -> np.ndarray:
    if padding_mode == "border":
        return np.clip(position, 0, size - 1)
    if padding_mode == "reflection":
        low, high = (0.0, size - 1.0) if align_corners else (-0.5, size - 0.5)
        return np.clip(_reflected(position, low, high), 0, size - 1)
    return position


def _cubic_weights(fraction: np.ndarray) -> List[np.ndarray]:
    """The kernel's weights of the taps at -1, 0, 1, 2 from the floor, for the position's fraction past it."""
    def near(t):  # |t| <= 1
        return ((_CUBIC_A + 2) * t - (_CUBIC_A + 3)) * t * t + 1

    def far(t):  # 1 < |t| < 2
        return ((_CUBIC_A * t - 5 * _CUBIC_A) * t + 8 * _CUBIC_A) * t - 4 * _CUBIC_A

    return [far(fraction + 1), near(fraction), near(1 - fraction), far(2 - fraction)]


class GridSample(OpRun):
    """The standard's ``GridSample`` (opsets 16 and 20: both mode names), vectorised (module docstring)."""

    op_domain = ""

    def _run(self, X, grid, align_corners=0, mode="linear", padding_mode="zeros"):
        mode = _MODES.get(mode.decode() if isinstance(mode, bytes) else mode)
        padding_mode = padding_mode.decode() if isinstance(padding_mode, bytes) else padding_mode
        rank = X.ndim - 2
        if mode is None or padding_mode not in ("zeros", "border", "reflection"):
            raise ValueError(f"GridSample: mode must be one of {sorted(_MODES)} and padding_mode zeros, border or "
                             f"reflection, got {mode!r}, {padding_mode!r}")
        if grid.ndim != X.ndim or grid.shape[-1] != rank or grid.shape[0] != X.shape[0]:
            raise ValueError(f"GridSample: grid must be (N, ..., {rank}) for X of shape {X.shape}, got {grid.shape}")
        if mode == "cubic" and rank != 2:
            raise ValueError(f"GridSample: cubic mode takes 4-D X only, got rank {X.ndim}")
        sizes = X.shape[2:]
        batch, channels = X.shape[:2]
        flat = X.reshape(batch, channels, int(np.prod(sizes))).astype(np.float64)  # (no -1: batch or C may be 0)
        positions = [_unnormalised(grid[..., rank - 1 - axis].astype(np.float64), sizes[axis], bool(align_corners))
                     for axis in range(rank)]
        if mode != "cubic":
            positions = [_padded(p, size, padding_mode, bool(align_corners)) for p, size in zip(positions, sizes)]
        total = np.zeros((batch, channels) + grid.shape[1:-1])
        for indices, weight in self._taps(mode, positions, sizes, padding_mode, bool(align_corners)):
            inside = np.ones(weight.shape, bool)
            for index, size in zip(indices, sizes):
                inside &= (index >= 0) & (index < size)
            clipped = [np.clip(index, 0, size - 1) for index, size in zip(indices, sizes)]
            where = np.ravel_multi_index(clipped, sizes).reshape(batch, 1, int(np.prod(grid.shape[1:-1])))
            values = np.take_along_axis(flat, where, axis=2).reshape(total.shape)
            total += np.where(inside[:, None], values, 0.0) * weight[:, None]
        return (total.astype(X.dtype),)

    @staticmethod
    def _taps(mode: str, positions: List[np.ndarray], sizes: Tuple[int, ...], padding_mode: str,
              align_corners: bool):
        """(the tap's integer index per spatial axis, its weight) for each tap of every output value."""
        finite = np.logical_and.reduce([np.isfinite(p) for p in positions])
        safe = [np.where(finite, p, 0.0) for p in positions]
        nan = np.where(finite, 0.0, np.nan)  # added to every weight: a non-finite position gives NaN
        if mode == "nearest":
            yield [np.rint(p).astype(np.int64) for p in safe], 1.0 + nan
            return
        floors = [np.floor(p) for p in safe]
        fractions = [p - f for p, f in zip(safe, floors)]
        if mode == "linear":
            for corner in itertools.product((0, 1), repeat=len(safe)):
                weight = np.ones_like(safe[0]) + nan
                for step, fraction in zip(corner, fractions):
                    weight = weight * (fraction if step else 1 - fraction)
                yield [f.astype(np.int64) + step for f, step in zip(floors, corner)], weight
            return
        weights = [_cubic_weights(fraction) for fraction in fractions]  # cubic: 2-D, 4 x 4 taps, each padded
        for (dy, wy), (dx, wx) in itertools.product(enumerate(weights[0]), enumerate(weights[1])):
            taps = [floors[0] + dy - 1, floors[1] + dx - 1]
            if padding_mode != "zeros":
                taps = [_padded(t, size, padding_mode, align_corners) for t, size in zip(taps, sizes)]
            yield [t.astype(np.int64) for t in taps], wy * wx + nan
