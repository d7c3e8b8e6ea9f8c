"""mmdeploy's multi-scale deformable attention (Deformable DETR, DINO) -> standard ONNX ``GridSample``, per level.

mmdeploy exports mmcv's ``MultiScaleDeformableAttnFunction`` as ``mmdeploy::MMCVMultiScaleDeformableAttention``
(mmdeploy 1.3.1, ``mmdeploy/mmcv/ops/multi_scale_deform_attn.py``; its TensorRT plugin in
``csrc/mmdeploy/backend_ops/tensorrt/multi_scale_deform_attn``). What the plugin computes:

- inputs ``value`` (bs, keys, heads, dim), ``value_spatial_shapes`` (L, 2) integers (H_l, W_l),
  ``value_level_start_index`` (L,) integers, ``sampling_locations`` (bs, nq, heads, L, P, 2) as (x, y) fractions of
  the level's width and height, ``attention_weights`` (bs, nq, heads, L, P); attribute ``im2col_step`` (how the CUDA
  kernel batches; it does not change the result);
- output (bs, nq, heads * dim): for each query and head, the sum over levels l and points p of the attention weight
  times the bilinear sample of level l's map (keys ``start_l`` to ``start_l + H_l * W_l`` of ``value``, row after
  row) at pixel ``(y * H_l - 0.5, x * W_l - 0.5)``. A sample counts only where that position lies in
  (-1, H_l) x (-1, W_l), and each of its four neighbours outside the map reads zero.

That is ``GridSample`` (bilinear, zero padding, ``align_corners=0``) of each level's map at ``2 * location - 1``, the
grid ``GridSample`` reads as (x, y) in [-1, 1], which is also how mmcv computes the op in PyTorch
(``multi_scale_deformable_attn_pytorch``). Before that, locations are clipped to [-1, 2] and NaN ones set to 2: every
location out there is out of the map, so its sample is zero as in the plugin (which skips NaN and far positions),
where ``GridSample`` on a NaN, an infinity or 1e30 reads pixels of the map (ONNX Runtime 1.32 returns a pixel's
value).

The levels are written out one by one, so their number must be known from the file: from the shapes it declares or
that onnx's shape inference finds for the spatial shapes, start indices, locations or weights (Deformable DETR's
exports fix it: the locations come from a Reshape to (bs, nq, heads, L, P, 2)). Everything else (batch, queries,
the levels' sizes, heads, points) may be dynamic. The nodes stay float32 in a half-precision build (sampling
positions in pixels, sums over levels and points), where mmdeploy's plugin computes in the input's type.
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import onnx

from .adopt_nodes import (AdoptedNode, AdoptionError, GraphBuilder, GraphScope, exact_inputs, node_id, node_label,
                          source_op)
from .adopt_small_ops import grid_sample_mode

__all__ = ["adopt_multi_scale_deformable_attention"]

_INPUTS = ("value", "value_spatial_shapes", "value_level_start_index", "sampling_locations", "attention_weights")
# Where each input holds the level axis, and the rank it must have.
_LEVEL_AXIS = {"value_spatial_shapes": (0, 2), "value_level_start_index": (0, 1), "sampling_locations": (3, 6),
               "attention_weights": (3, 5)}


def _level_count(node: onnx.NodeProto, scope: GraphScope, inputs: List[str]) -> int:
    """The number of levels, from every input whose shape says it; refused when none does or they disagree."""
    counts = {}
    for name, value in zip(_INPUTS, inputs):
        if name not in _LEVEL_AXIS:
            continue
        axis, rank = _LEVEL_AXIS[name]
        dims = scope.dims(value)
        if dims is None:
            continue
        if len(dims) != rank:
            raise AdoptionError(f"{node_label(node)}: its {name} {value!r} has rank {len(dims)}, and the op takes rank "
                                f"{rank}; the file is malformed: re-export it")
        if dims[axis] is not None:
            counts[name] = dims[axis]
    if not counts:
        raise AdoptionError(
            f"{node_label(node)}: the number of feature levels is not known from the file (no shape is declared or "
            "inferred that gives it: axis 3 of sampling_locations or attention_weights, axis 0 of "
            "value_spatial_shapes or value_level_start_index); adopt writes one GridSample per level, so it needs "
            "that number: re-export with a fixed number of levels (mmdeploy's torch2onnx does), or declare the shape "
            "of sampling_locations in the file's value_info")
    if len(set(counts.values())) > 1:
        raise AdoptionError(f"{node_label(node)}: its inputs disagree on the number of feature levels ({counts}); the "
                            "file is malformed: re-export it")
    if min(counts.values()) < 1:
        raise AdoptionError(f"{node_label(node)}: its inputs hold no feature level ({counts}); the file is malformed: "
                            "re-export it")
    return next(iter(counts.values()))


def adopt_multi_scale_deformable_attention(node: onnx.NodeProto, scope: GraphScope,
                                           roi_sampling_ratio: Optional[int] = None
                                           ) -> Tuple[List[onnx.NodeProto], AdoptedNode]:
    """``mmdeploy::MMCVMultiScaleDeformableAttention`` as ``GridSample`` per level (this module's docstring)."""
    inputs = exact_inputs(node, _INPUTS)
    value, shapes, starts, locations, weights = inputs
    levels = _level_count(node, scope, inputs)
    g = GraphBuilder(scope, node_id(node), keep_fp32="sampling positions in pixels and the sum over levels and "
                                                     "points (mmdeploy's plugin computes in the input's type)")
    i64 = onnx.TensorProto.INT64

    def dims(tensor: str, start: int, end: Optional[int] = None) -> str:  # its sizes start..end, as a 1-D tensor
        return g.op("Shape", [tensor], start=start, **({} if end is None else {"end": end}))

    # the Reshapes that fold and unfold the heads get every size (no -1, allowzero): a batch, query count or channel
    # count of 0 stays 0
    batch, heads = dims(value, 0, 1), dims(value, 2, 3)
    batch_heads = g.op("Mul", [batch, heads])

    def fold_heads(tensor: str, perm: List[int]) -> str:  # transposed so that (bs, heads, ...) lead, those two folded
        moved = g.op("Transpose", [tensor], perm=perm)
        return g.op("Reshape", [moved, g.op("Concat", [batch_heads, dims(moved, 2)], axis=0)], allowzero=1)

    # value (bs, keys, heads, dim) -> (bs*heads, dim, keys)
    maps = fold_heads(value, [0, 2, 3, 1])
    # locations -> (bs*heads, L, nq, P, 2) in GridSample's [-1, 1], out-of-map ones kept out of the map
    lowest, highest = g.float_like(-1.0, locations, "lowest"), g.float_like(2.0, locations, "highest")
    clipped = g.op("Clip", [locations, lowest, highest])
    safe = g.op("Where", [g.op("IsNaN", [locations]), highest, clipped])  # NaN: as far as the highest
    grid = g.op("Sub", [g.op("Mul", [fold_heads(safe, [0, 2, 3, 1, 4, 5]), g.float_like(2.0, locations, "two")]),
                        g.float_like(1.0, locations, "one")])
    # weights (bs, nq, heads, L, P) -> (bs*heads, L, nq, P)
    attention = fold_heads(weights, [0, 2, 3, 1, 4])
    # the levels' sizes, first and end keys
    shapes64 = g.op("Cast", [shapes], to=i64)
    starts64 = g.op("Cast", [starts], to=i64)
    sizes = g.op("Mul", [g.op("Gather", [shapes64, g.const(0, name="h")], axis=1),
                         g.op("Gather", [shapes64, g.const(1, name="w")], axis=1)])
    ends = g.op("Add", [starts64, sizes])
    mode = grid_sample_mode("bilinear", scope.opset() or 0)
    parts = []
    for level in range(levels):
        index, first = g.const(level, name=f"level{level}"), g.const([level], name=f"level{level}_first")
        keys = g.op("Slice", [maps, g.op("Gather", [starts64, first]), g.op("Gather", [ends, first]),
                              g.const([2], name="keys_axis")])
        size = g.op("Gather", [shapes64, index])  # (H, W)
        level_map = g.op("Reshape", [keys, g.op("Concat", [g.const([0, 0], name="keep"), size], axis=0)])
        samples = g.op("GridSample", [level_map, g.op("Gather", [grid, index], axis=1)], mode=mode,
                       padding_mode="zeros", align_corners=0)  # (bs*heads, dim, nq, P)
        level_weights = g.op("Unsqueeze", [g.op("Gather", [attention, index], axis=1), g.const([1], name="dim_axis")])
        parts.append(g.op("ReduceSum", [g.op("Mul", [samples, level_weights]), g.const([3], name="points_axis")],
                          keepdims=0))  # (bs*heads, dim, nq)
    total = g.op("Sum", parts) if len(parts) > 1 else parts[0]
    # (bs*heads, dim, nq) -> (bs, heads*dim, nq) -> (bs, nq, heads*dim)
    channels = g.op("Mul", [heads, dims(value, 3, 4)])
    unfolded = g.op("Reshape", [total, g.op("Concat", [batch, channels, dims(locations, 1, 2)], axis=0)],
                    allowzero=1)
    g.op("Transpose", [unfolded], [node.output[0]], perm=[0, 2, 1])
    return g.nodes, AdoptedNode(node_id(node), source_op(node), "ONNX GridSample, per level", {"levels": levels}, ())
