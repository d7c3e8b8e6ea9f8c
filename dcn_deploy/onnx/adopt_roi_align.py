"""mmdeploy's RoIAlign nodes -> standard ONNX ``RoiAlign`` (opset 16) computing what mmdeploy's TensorRT plugins do.

mmdeploy writes the RoI feature extractor of two-stage detectors (Faster, Mask, Cascade R-CNN: mmdet's
``SingleRoIExtractor``) for TensorRT as one ``mmdeploy::MMCVMultiLevelRoiAlign`` node, and a direct call of mmcv's
``roi_align`` as ``mmcv::MMCVRoiAlign``; only mmdeploy's plugin library runs either. What the plugins compute (read
from mmdeploy 1.3.1's ``csrc/mmdeploy/backend_ops/tensorrt/{multi_level_roi_align,roi_align}``; not run against the
binaries), and so what the rewrite computes:

``MMCVMultiLevelRoiAlign(rois, feat_0, ..., feat_{L-1})``, rois (K, 5) = (image, x1, y1, x2, y2), the maps finest
first; attributes ``featmap_strides`` (one per map), ``output_height``/``output_width``, ``sampling_ratio``
(0: adaptive), ``pool_mode`` (0 max, else avg), ``aligned``, ``finest_scale``, ``roi_scale_factor``:

- Each RoI's level: ``floor(log2(sqrt(w * h) / finest_scale + 1e-6))`` clamped to [0, L - 1], in float32, on the
  RoI as given (mmdet's ``map_roi_levels``). Written here as comparisons of the float32 area with thresholds
  computed at adoption, which is that formula bit for bit (a NaN area, w or h negative, is level 0).
- Then, when ``roi_scale_factor`` > 0 (mmdeploy writes 1.0), the RoI is rescaled about its centre by the plugin's
  rule, half-width ``(w + 1) * factor / 2 - 0.5`` (the old "+1" convention; at 1.0 it is the identity up to float32
  rounding, which is kept).
- RoIAlign of the RoI on its level's map at scale ``1 / stride``: with ``aligned``, the half-pixel shift and sizes
  clamped to >= 0 (an inverted RoI is empty); without it, sizes clamped to >= 1; ``sampling_ratio`` 0 takes
  ``ceil(size / output)`` samples per bin side; samples beyond a pixel outside the map are 0; average pooling.

``mmcv::MMCVRoiAlign(input, rois)``: the same RoIAlign on one map at ``spatial_scale``, without the >= 0 clamp
(mmcv's CUDA kernel).

Both are ONNX ``RoiAlign`` (``half_pixel`` when aligned, ``output_half_pixel`` when not): each level's RoIs are
gathered (NonZero), pooled and scattered back, so every RoI is pooled once. An aligned, adaptive RoI of zero size
is set to 0 after pooling: the plugin gives 0 there, ONNX Runtime too, TensorRT's RoIAlign plugin 0 / 0.

Not rewritten (refused, naming the node): max pooling, which ONNX's ``RoiAlign`` defines differently (the largest
weighted corner, not the largest interpolated value: ONNX Runtime and TensorRT follow the standard). The outputs
agree with the plugin's to float32 rounding (the order of the sample arithmetic differs; about 1e-5 on unit-scale
features), except where a sample lands exactly on a discontinuity (a map's edge, a bin-count step).
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import onnx
from onnx import helper

from .adopt_nodes import (AdoptedNode, AdoptionError, GraphBuilder, GraphScope, attributes_of, exact_inputs,
                          int_attribute, node_id, node_label, number_attribute, source_op)

__all__ = ["adopt_multi_level_roi_align", "adopt_mmcv_roi_align", "level_area_thresholds", "ROI_ALIGN_TARGET"]

ROI_ALIGN_TARGET = "ONNX RoiAlign"
# why the rewrite stays float32 in a half-precision build: box corners in pixels, areas past float16's range
_BOX_ARITHMETIC = "mmdeploy's RoIAlign plugins are float32 (RoI corners in pixels, RoI areas)"


def level_area_thresholds(finest_scale: int, levels: int) -> List[float]:
    """The smallest float32 RoI area of each level 1 .. levels - 1 under the plugin's float32 formula
    ``floor(log2f(sqrtf(area) / finest_scale + 1e-6))`` (the sum added in double, as its literal is one): the
    level is monotone in the area, so ``level = sum(area >= threshold)``. Found by bisection over float32 bit
    patterns, with a correctly rounded float32 log2 (numpy's)."""
    f32 = np.float32

    def level(bits: int) -> float:
        area = np.array(bits, np.uint32).view(f32)
        quotient = f32(np.sqrt(area, dtype=f32) / f32(finest_scale))
        return float(np.floor(np.log2(f32(np.float64(quotient) + 1e-6))))

    thresholds = []
    for k in range(1, levels):
        low, high = 0, 0x7F800000  # +0 .. +inf as bit patterns, ordered as the values
        while low < high:
            middle = (low + high) // 2
            if level(middle) >= k:
                high = middle
            else:
                low = middle + 1
        thresholds.append(float(np.array(low, np.uint32).view(f32)))
    return thresholds


def _avg_only(node: onnx.NodeProto, max_pooling: bool) -> None:
    if max_pooling:
        raise AdoptionError(f"{node_label(node)} max-pools, and ONNX's RoiAlign defines max pooling differently (the "
                            "largest weighted corner, not the largest interpolated value; ONNX Runtime and TensorRT "
                            "follow the standard), so it has no standard form with the same results; models with "
                            "average pooling (mmcv's default) are rewritten")


def _rois_columns(g: GraphBuilder, rois: str) -> Tuple[str, List[str]]:
    """(the image index of each RoI, int64 (K,), truncated as the plugins' cast; x1, y1, x2, y2 as (K, 1))."""
    image = g.op("Cast", [g.op("Squeeze", [g.op("Slice", [rois, g.const([0]), g.const([1]), g.const([1])]),
                                           g.const([1])])], to=onnx.TensorProto.INT64)
    corners = [g.op("Slice", [rois, g.const([i]), g.const([i + 1]), g.const([1])]) for i in range(1, 5)]
    return image, corners


def _roi_align(g: GraphBuilder, features: str, boxes: str, image: str, attributes: Dict[str, object],
               scale: float, outputs: Optional[List[str]] = None) -> str:
    return g.op("RoiAlign", [features, boxes, image], outputs, output_height=attributes["output_height"],
                output_width=attributes["output_width"], sampling_ratio=attributes["sampling_ratio"],
                spatial_scale=scale, mode="avg",
                coordinate_transformation_mode="half_pixel" if attributes["aligned"] else "output_half_pixel")


def _zero_where_empty(g: GraphBuilder, pooled: str, corners: Sequence[str], output: str) -> None:
    """``pooled`` with the RoIs of zero width or height set to 0 (aligned, adaptive sampling: no sample in a bin;
    TensorRT's RoIAlign plugin divides by that count)."""
    x1, y1, x2, y2 = corners
    empty = g.op("Or", [g.op("Equal", [x1, x2]), g.op("Equal", [y1, y2])])  # (K, 1)
    empty = g.op("Unsqueeze", [empty, g.const([2, 3])])
    g.op("Where", [empty, g.float_like(0.0, pooled, "zero"), pooled], [output])


def _read_multi_level(node: onnx.NodeProto) -> Dict[str, object]:
    attrs = attributes_of(node)
    where = node_label(node)
    strides = attrs.get("featmap_strides")
    if not isinstance(strides, list) or not strides or not all(isinstance(s, (int, float)) and s > 0 for s in strides):
        raise AdoptionError(f"{where}: featmap_strides must hold one positive stride per feature map, got "
                            f"{strides!r}; the file is malformed: re-export it")
    maps = len(node.input) - 1
    if maps != len(strides) or not all(node.input):
        raise AdoptionError(f"{where} has {maps} feature map input(s) {list(node.input[1:])} for "
                            f"{len(strides)} featmap_strides {strides}; it takes (rois, one map per stride); the file "
                            "is malformed: re-export it")
    read = {"output_height": int_attribute(node, attrs, "output_height", 7),
            "output_width": int_attribute(node, attrs, "output_width", 7),
            "sampling_ratio": int_attribute(node, attrs, "sampling_ratio", 2),
            "featmap_strides": [float(np.float32(s)) for s in strides],
            "finest_scale": int_attribute(node, attrs, "finest_scale", 56),
            "roi_scale_factor": number_attribute(node, attrs, "roi_scale_factor", -1.0),
            "aligned": int(int_attribute(node, attrs, "aligned", 0) != 0),
            "pool_mode": int_attribute(node, attrs, "pool_mode", 0)}
    _avg_only(node, read["pool_mode"] == 0)
    for name in ("output_height", "output_width", "finest_scale"):
        if read[name] < 1:
            raise AdoptionError(f"{where}: {name} must be >= 1, got {read[name]}; the file is malformed: re-export it")
    if read["sampling_ratio"] < 0:
        raise AdoptionError(f"{where}: sampling_ratio must be >= 0 (0: adaptive), got {read['sampling_ratio']}; the "
                            "file is malformed: re-export it")
    return read


def adopt_multi_level_roi_align(node: onnx.NodeProto, scope: GraphScope, roi_sampling_ratio: Optional[int] = None
                                ) -> Tuple[List[onnx.NodeProto], AdoptedNode]:
    """The standard nodes that replace ``node`` (an ``mmdeploy::MMCVMultiLevelRoiAlign``), writing its output, and
    the report of it."""
    read = _read_multi_level(node)
    g = GraphBuilder(scope, node_id(node), keep_fp32=_BOX_ARITHMETIC)
    rois, maps = node.input[0], list(node.input[1:])
    image, (x1, y1, x2, y2) = _rois_columns(g, rois)

    area = g.op("Squeeze", [g.op("Mul", [g.op("Sub", [y2, y1]), g.op("Sub", [x2, x1])]), g.const([1])])  # (K,)
    level = g.op("ConstantOfShape", [g.op("Shape", [area])],
                 value=helper.make_tensor("zero", onnx.TensorProto.INT64, [1], [0]))  # (K,): also with one level
    for threshold in level_area_thresholds(read["finest_scale"], len(maps)):
        above = g.op("GreaterOrEqual", [area, g.float_like(threshold, area, "area")])
        level = g.op("Add", [level, g.op("Cast", [above], to=onnx.TensorProto.INT64)])

    factor = read["roi_scale_factor"]
    if factor > 0:  # the plugin's rescale about the centre, in float32, as it computes it
        half = g.float_like(np.float32(factor) * np.float32(0.5), area, "half_factor")
        one, mid = g.float_like(1.0, area, "one"), g.float_like(0.5, area, "mid")
        rescaled = []
        for low, high in ((x1, x2), (y1, y2)):
            centre = g.op("Mul", [g.op("Add", [low, high]), mid])
            half_size = g.op("Sub", [g.op("Mul", [g.op("Add", [g.op("Sub", [high, low]), one]), half]), mid])
            rescaled.append((g.op("Sub", [centre, half_size]), g.op("Add", [centre, half_size])))
        (x1, x2), (y1, y2) = rescaled
    if read["aligned"]:  # sizes clamped to >= 0
        x2, y2 = g.op("Max", [x2, x1]), g.op("Max", [y2, y1])
    boxes = g.op("Concat", [x1, y1, x2, y2], axis=1)

    first = maps[0]
    shape = g.op("Concat", [g.op("Shape", [rois], end=1), g.op("Shape", [first], start=1, end=2),
                            g.const([read["output_height"], read["output_width"]])], axis=0)
    pooled = g.op("CastLike", [g.op("ConstantOfShape", [shape]), first])
    for index, (features, stride) in enumerate(zip(maps, read["featmap_strides"])):
        chosen = g.op("Transpose", [g.op("NonZero", [g.op("Equal", [level, g.const(index)])])], perm=[1, 0])  # (M, 1)
        part = _roi_align(g, features, g.op("GatherND", [boxes, chosen]), g.op("GatherND", [image, chosen]), read,
                          float(np.float32(1.0) / np.float32(stride)))
        pooled = g.op("ScatterND", [pooled, chosen, part])
    if read["aligned"] and read["sampling_ratio"] == 0:
        _zero_where_empty(g, pooled, (x1, y1, x2, y2), node.output[0])
    else:
        g.op("Identity", [pooled], [node.output[0]])
    return g.nodes, AdoptedNode(node_id(node), source_op(node), ROI_ALIGN_TARGET, read, ())


def adopt_mmcv_roi_align(node: onnx.NodeProto, scope: GraphScope, roi_sampling_ratio: Optional[int] = None
                         ) -> Tuple[List[onnx.NodeProto], AdoptedNode]:
    """The standard nodes that replace ``node`` (an ``mmcv::MMCVRoiAlign``: mmcv's ``roi_align`` as mmdeploy writes
    it for TensorRT), writing its output, and the report of it."""
    attrs = attributes_of(node)
    where = node_label(node)
    features, rois = exact_inputs(node, ("input", "rois"))
    mode = attrs.get("mode", b"avg")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    if mode not in ("avg", "max"):
        raise AdoptionError(f"{where}: mode must be 'avg' or 'max', got {mode!r}; the file is malformed: re-export it")
    _avg_only(node, mode == "max")
    read = {"output_height": int_attribute(node, attrs, "output_height", 7),
            "output_width": int_attribute(node, attrs, "output_width", 7),
            "spatial_scale": number_attribute(node, attrs, "spatial_scale", 1.0),
            "sampling_ratio": int_attribute(node, attrs, "sampling_ratio", 0),
            "aligned": int(int_attribute(node, attrs, "aligned", 1) != 0), "mode": mode}
    if min(read["output_height"], read["output_width"]) < 1 or read["sampling_ratio"] < 0:
        raise AdoptionError(f"{where}: needs output sizes >= 1 and sampling_ratio >= 0, got {read}; the file is "
                            "malformed: re-export it")
    g = GraphBuilder(scope, node_id(node), keep_fp32=_BOX_ARITHMETIC)
    image, corners = _rois_columns(g, rois)
    boxes = g.op("Concat", corners, axis=1)
    if read["aligned"] and read["sampling_ratio"] == 0:
        pooled = _roi_align(g, features, boxes, image, read, read["spatial_scale"])
        _zero_where_empty(g, pooled, corners, node.output[0])
    else:
        _roi_align(g, features, boxes, image, read, read["spatial_scale"], [node.output[0]])
    return g.nodes, AdoptedNode(node_id(node), source_op(node), ROI_ALIGN_TARGET, read, ())
