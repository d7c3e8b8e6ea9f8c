"""Shape arithmetic and validation for the deformable RoI pooling ops, with no torch import.

One source of truth for how the shapes of :func:`dcn_deploy.ops.roi_pool.deform_roi_pool` and
:func:`dcn_deploy.ops.roi_pool.deform_psroi_pool` fit together; the PyTorch ops, the ONNX shape inference and
the TensorRT plugins follow it. Every function raises :class:`ShapeError` naming the argument, the expected and
the actual value.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

from .spec import ShapeError, as_pair

__all__ = ["MAX_SAMPLES_PER_BIN_SIDE", "RoIPoolSpec", "PSRoIPoolSpec", "deform_roi_pool_spec", "deform_psroi_pool_spec",
           "check_rois_shape", "check_float", "check_sampling_ratio", "check_sample_per_part"]

# Most samples per bin side: a fixed sampling_ratio or sample_per_part may not exceed it, and the adaptive
# sampling_ratio=0 is capped at it (a guard against absurd boxes). The same bound as kMaxSamplesPerBinSide in
# plugins/deform_roi_pool/roiPoolMath.h: the kernels loop over the samples of a bin, so an unbounded count would
# run for hours rather than fail.
MAX_SAMPLES_PER_BIN_SIDE = 1024


def _shape(shape: Sequence[int], name: str, rank: int, layout: str) -> Tuple[int, ...]:
    shape = tuple(int(s) for s in shape)
    if len(shape) != rank:
        raise ShapeError(f"{name} must be {rank}-D {layout}, got shape {shape}")
    return shape


def check_float(value, name: str, positive: bool = False) -> float:
    """``value`` as a finite float (> 0 when ``positive``), or a ShapeError naming ``name``.

    Why: ``float()`` alone takes strings ("0.25") and bools, and a scale of 0 or below pools every box onto one
    point without complaint."""
    if isinstance(value, (bool, str, bytes)):
        raise ShapeError(f"{name} must be a number, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ShapeError(f"{name} must be a number, got {value!r}") from None
    # comparisons, not math.isfinite: under torch.compile(dynamic=True) a layer's float attribute is a symbolic
    # float, which comparisons guard on and math.isfinite cannot take (a graph break, an error with fullgraph=True)
    if number != number or number in (math.inf, -math.inf) or (positive and number <= 0):
        kind = "a finite number > 0" if positive else "a finite number"
        hint = " (feature-map pixels per image pixel, e.g. 1/16 = 0.0625 for a stride-16 map)" \
            if name == "spatial_scale" else ""
        raise ShapeError(f"{name} must be {kind}{hint}, got {value!r}")
    return number


def _samples_per_side(value, name: str, minimum: int, minimum_meaning: str, usual: str) -> int:
    """``value`` as an int from ``minimum`` to :data:`MAX_SAMPLES_PER_BIN_SIDE`, or a ShapeError naming ``name``."""
    if isinstance(value, bool) or not hasattr(value, "__index__") or not minimum <= value <= MAX_SAMPLES_PER_BIN_SIDE:
        raise ShapeError(f"{name} must be an int from {minimum}{minimum_meaning} to {MAX_SAMPLES_PER_BIN_SIDE} "
                         f"(samples per bin side; {usual}), got {value!r}")
    return int(value)


def check_sampling_ratio(value) -> int:
    """deform_roi_pool's ``sampling_ratio``: an int from 0 (adaptive) to :data:`MAX_SAMPLES_PER_BIN_SIDE`."""
    return _samples_per_side(value, "sampling_ratio", 0, " (adaptive)", "mmcv's models use 0 or 2")


def check_sample_per_part(value) -> int:
    """deform_psroi_pool's ``sample_per_part``: an int from 1 to :data:`MAX_SAMPLES_PER_BIN_SIDE`."""
    return _samples_per_side(value, "sample_per_part", 1, "", "the paper's code uses 4")


def check_rois_shape(rois_shape: Sequence[int]) -> int:
    """rois must be (K, 5) rows of (batch index, x1, y1, x2, y2); returns K."""
    rois = tuple(int(s) for s in rois_shape)
    if len(rois) != 2 or rois[1] != 5:
        raise ShapeError(
            f"rois must have shape (K, 5), rows of (batch index, x1, y1, x2, y2), got {rois}; "
            "if your boxes are (K, 4), prepend the image index of each box as a first column")
    return rois[0]


@dataclass(frozen=True)
class RoIPoolSpec:
    """Every integer that describes one deform_roi_pool call."""

    batch: int
    channels: int
    height: int
    width: int
    num_rois: int
    output_size: Tuple[int, int]
    sampling_ratio: int
    has_offset: bool

    @property
    def output_shape(self) -> Tuple[int, int, int, int]:
        return (self.num_rois, self.channels, *self.output_size)

    @property
    def offset_shape(self) -> Tuple[int, int, int, int]:
        return (self.num_rois, 2, *self.output_size)


def deform_roi_pool_spec(input_shape: Sequence[int], rois_shape: Sequence[int],
                         offset_shape: Optional[Sequence[int]], output_size, sampling_ratio: int = 0) -> RoIPoolSpec:
    """Check the shapes of one deform_roi_pool call: input (N, C, H, W), rois (K, 5), offset (K, 2, out_h, out_w)."""
    n, c, h, w = _shape(input_shape, "input", 4, "(N, C, H, W)")
    if c < 1 or h < 1 or w < 1:
        raise ShapeError(f"input must have C, H and W >= 1, got shape {(n, c, h, w)}")
    k = check_rois_shape(rois_shape)
    out = as_pair(output_size, "output_size", 1)
    sampling_ratio = check_sampling_ratio(sampling_ratio)
    if offset_shape is not None:
        off = _shape(offset_shape, "offset", 4, "(K, 2, out_h, out_w)")
        if off != (k, 2, *out):
            raise ShapeError(
                f"offset must have shape {(k, 2, *out)} (K rois, 2 = (dx, dy), output_size {out}), got {off}")
    return RoIPoolSpec(batch=n, channels=c, height=h, width=w, num_rois=k, output_size=out,
                       sampling_ratio=int(sampling_ratio), has_offset=offset_shape is not None)


@dataclass(frozen=True)
class PSRoIPoolSpec:
    """Every integer that describes one deform_psroi_pool call.

    ``num_classes`` offset sets (pairs of trans channels) each serve ``output_dim / num_classes`` consecutive
    output channels; ``part_size`` is the offset grid's side (0 in the arguments means ``pooled_size``).
    """

    batch: int
    channels: int
    height: int
    width: int
    num_rois: int
    output_dim: int
    group_size: int
    pooled_size: int
    part_size: int
    sample_per_part: int
    num_classes: int
    no_trans: bool

    @property
    def output_shape(self) -> Tuple[int, int, int, int]:
        return (self.num_rois, self.output_dim, self.pooled_size, self.pooled_size)

    @property
    def channels_per_class(self) -> int:
        return self.output_dim // self.num_classes


def _positive(value, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or int(value) != value or value < minimum:
        raise ShapeError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def deform_psroi_pool_spec(input_shape: Sequence[int], rois_shape: Sequence[int], trans_shape: Optional[Sequence[int]],
                           output_dim: int, group_size: int, pooled_size: int, part_size: int,
                           sample_per_part: int, no_trans: bool) -> PSRoIPoolSpec:
    """Check the shapes of one deform_psroi_pool call.

    input (N, output_dim*group_size**2, H, W); rois (K, 5); trans (K, 2*num_classes, part_size, part_size),
    ignored (and may be None) when ``no_trans``.
    """
    n, c, h, w = _shape(input_shape, "input", 4, "(N, C, H, W)")
    if c < 1 or h < 1 or w < 1:
        raise ShapeError(f"input must have C, H and W >= 1, got shape {(n, c, h, w)}")
    k = check_rois_shape(rois_shape)
    output_dim = _positive(output_dim, "output_dim")
    group_size = _positive(group_size, "group_size")
    pooled_size = _positive(pooled_size, "pooled_size")
    sample_per_part = check_sample_per_part(sample_per_part)
    part_size = _positive(part_size, "part_size", 0) or pooled_size
    if c != output_dim * group_size * group_size:
        raise ShapeError(
            f"input must have output_dim*group_size**2 = {output_dim}*{group_size}**2 = "
            f"{output_dim * group_size * group_size} position-sensitive channels, got {c}")
    num_classes = 1
    if not no_trans:
        if trans_shape is None:
            raise ShapeError("trans is required when no_trans is False; pass trans or set no_trans=True")
        t = _shape(trans_shape, "trans", 4, "(K, 2*num_classes, part_size, part_size)")
        if t[0] != k or t[1] < 2 or t[1] % 2 or (t[2], t[3]) != (part_size, part_size):
            raise ShapeError(
                f"trans must have shape ({k}, 2*num_classes, {part_size}, {part_size}) (K rois, an (x, y) pair per "
                f"class, part_size {part_size}), got {t}")
        num_classes = t[1] // 2
        if output_dim % num_classes:
            raise ShapeError(
                f"output_dim ({output_dim}) must be divisible by the number of offset classes in trans "
                f"({num_classes} = {t[1]} channels / 2)")
    return PSRoIPoolSpec(batch=n, channels=c, height=h, width=w, num_rois=k, output_dim=output_dim,
                         group_size=group_size, pooled_size=pooled_size, part_size=part_size,
                         sample_per_part=sample_per_part, num_classes=num_classes, no_trans=bool(no_trans))
