"""mmdeploy's ops with a direct standard form -> standard ONNX: ``GatherTopk``, ``GridPriorsTRT``,
``TRTInstanceNormalization`` and ``grid_sampler``.

mmdeploy's TensorRT exports of detectors (RetinaNet, FCOS, the RPN of Faster R-CNN) hold these of its plugin ops
besides the NMS and RoIAlign (:mod:`dcn_deploy.onnx.adopt_nms`, :mod:`dcn_deploy.onnx.adopt_roi_align`). What
their plugins compute (mmdeploy 1.3.1, ``csrc/mmdeploy/backend_ops/tensorrt/{gather_topk,grid_priors,
instance_norm}``):

- ``GatherTopk(data, indices)``: with indices of rank r, the first r - 1 axes of both are batch axes and each index
  picks along data's axis r - 1: ``out[b..., k, rest...] = data[b..., indices[b..., k], rest...]`` (mmdeploy's
  heads gather their ``topk`` indices (batch, k) so). Standard: ``GatherND`` with ``batch_dims = r - 1``.
- ``GridPriorsTRT(base_anchors (A, 4), zero_h (H,), zero_w (W,))`` with ``stride_h``, ``stride_w`` (default 1):
  the anchors of every cell, (H * W * A, 4), row after row of cells, each cell's A anchors, anchor a of cell (y, x)
  ``base[a] + (x * stride_w, y * stride_h, x * stride_w, y * stride_h)`` (the shifts exact integers; only the
  lengths of ``zero_h``/``zero_w`` are read). Standard: ``Range``, ``Expand`` and an addition, bit for bit.
- ``TRTInstanceNormalization(input, scale, bias)`` with ``epsilon`` (default 1e-5): how mmdeploy writes GroupNorm
  (FCOS's and VFNet's heads) for TensorRT, on the input reshaped to (N, groups, -1): cuDNN's batch normalisation
  over N * C channels of (H, W), i.e. per (image, channel) the mean and the biased variance over the rest, then the
  scale and bias of the channel. Standard: ``InstanceNormalization``, the same inputs and ``epsilon``. The plugin
  reads an input of rank 3 or 4 only.
- ``grid_sampler(input, grid)`` (``mmdeploy::``, or ``mmcv::`` in mmdeploy's PPL exports) with PyTorch's enum
  values ``interpolation_mode`` (0 bilinear, 1 nearest, 2 bicubic), ``padding_mode`` (0 zeros, 1 border,
  2 reflection) and ``align_corners``: how mmdeploy writes ``F.grid_sample`` at opset 11, which has no GridSample
  (mmdeploy ``pytorch/symbolics/grid_sampler.py``; e.g. mmcv's multi-scale deformable attention when exported on
  the CPU). Standard: ``GridSample`` (opset 16; 4-D, or 5-D from opset 20), the same modes, which computes what
  ``F.grid_sample`` does. Where mmdeploy's TensorRT plugin departs from PyTorch, the rewrite follows PyTorch: the
  plugin computes bicubic as bilinear (noted in the report), rounds a nearest position exactly halfway between two
  pixels away from zero (PyTorch and ONNX Runtime to even), and reads a non-finite position as off the map (ONNX
  leaves that to the runtime).
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import numpy as np
import onnx
from onnx import helper

from .adopt_nodes import (AdoptedNode, AdoptionError, GraphBuilder, GraphScope, attributes_of, exact_inputs,
                          int_attribute, node_id, node_label, number_attribute, source_op)

__all__ = ["adopt_gather_topk", "adopt_grid_priors", "adopt_grid_sampler", "adopt_instance_norm", "grid_sample_mode"]


def adopt_gather_topk(node: onnx.NodeProto, scope: GraphScope, roi_sampling_ratio: Optional[int] = None
                      ) -> Tuple[List[onnx.NodeProto], AdoptedNode]:
    """``mmdeploy::GatherTopk`` as ``GatherND`` over its batch axes."""
    data, indices = exact_inputs(node, ("data", "indices"))
    rank, notes = scope.rank(indices), ()
    if rank is None:  # mmdeploy's heads gather topk indices of shape (batch, k)
        rank, notes = 2, ("the indices' rank is not declared: read as mmdeploy writes them, (batch, k)",)
    data_rank = scope.rank(data)
    if rank < 1 or (data_rank is not None and data_rank < rank):
        raise AdoptionError(f"{node_label(node)}: indices of rank {rank} need data of at least that rank, got "
                            f"{data_rank}; the file is malformed: re-export it")
    g = GraphBuilder(scope, node_id(node))
    where = g.op("Unsqueeze", [g.op("Cast", [indices], to=onnx.TensorProto.INT64), g.const([-1])])
    g.op("GatherND", [data, where], [node.output[0]], batch_dims=rank - 1)
    return g.nodes, AdoptedNode(node_id(node), source_op(node), "ONNX GatherND", {"batch_dims": rank - 1}, notes)


def adopt_grid_priors(node: onnx.NodeProto, scope: GraphScope, roi_sampling_ratio: Optional[int] = None
                      ) -> Tuple[List[onnx.NodeProto], AdoptedNode]:
    """``mmdeploy::GridPriorsTRT`` as the anchors of every cell from ``Range`` and ``Expand``."""
    base, zero_h, zero_w = exact_inputs(node, ("base_anchors", "zero_h", "zero_w"))
    attrs = attributes_of(node)
    strides = {name: int_attribute(node, attrs, name, 1) for name in ("stride_h", "stride_w")}
    g = GraphBuilder(scope, node_id(node), keep_fp32="anchor corners in pixels (mmdeploy's plugin is float32)")

    def shifts(zeros: str, stride: int) -> str:  # (length,) multiples of the stride, as the anchors' type
        length = g.op("Squeeze", [g.op("Shape", [zeros], start=0, end=1), g.const([0])])
        steps = g.op("Range", [g.const(0, np.int64, "start"), length, g.const(1, np.int64, "step")])
        return g.op("CastLike", [g.op("Mul", [steps, g.const(stride, np.int64, "stride")]), base])

    ys, xs = shifts(zero_h, strides["stride_h"]), shifts(zero_w, strides["stride_w"])
    cells = g.op("Concat", [g.op("Shape", [zero_h], start=0, end=1), g.op("Shape", [zero_w], start=0, end=1)], axis=0)
    x_grid = g.op("Expand", [g.op("Unsqueeze", [xs, g.const([0])]), cells])  # (H, W)
    y_grid = g.op("Expand", [g.op("Unsqueeze", [ys, g.const([1])]), cells])
    parts = [g.op("Unsqueeze", [part, g.const([2])]) for part in (x_grid, y_grid, x_grid, y_grid)]
    offsets = g.op("Unsqueeze", [g.op("Concat", parts, axis=2), g.const([2])])  # (H, W, 1, 4)
    anchors = g.op("Add", [offsets, g.op("Unsqueeze", [base, g.const([0, 1])])])  # (H, W, A, 4)
    g.op("Reshape", [anchors, g.const([-1, 4])], [node.output[0]])
    return g.nodes, AdoptedNode(node_id(node), source_op(node), "ONNX Range + Expand", strides, ())


def adopt_instance_norm(node: onnx.NodeProto, scope: GraphScope, roi_sampling_ratio: Optional[int] = None
                        ) -> Tuple[List[onnx.NodeProto], AdoptedNode]:
    """``mmdeploy::TRTInstanceNormalization`` as the standard ``InstanceNormalization`` (same name and values)."""
    inputs = exact_inputs(node, ("input", "scale", "bias"))
    rank = scope.rank(inputs[0])
    if rank is not None and rank not in (3, 4):
        raise AdoptionError(f"{node_label(node)}: its input has rank {rank}, and mmdeploy's plugin reads ranks 3 and 4 "
                            "only (N, C, H[, W]); the file is malformed: re-export it")
    epsilon = number_attribute(node, attributes_of(node), "epsilon", 1e-5)
    standard = helper.make_node("InstanceNormalization", inputs, [node.output[0]], name=node.name, epsilon=epsilon)
    return [standard], AdoptedNode(node_id(node), source_op(node), "ONNX InstanceNormalization",
                                   {"epsilon": epsilon}, ())


_GRID_MODES = {0: "bilinear", 1: "nearest", 2: "bicubic"}  # PyTorch's enum -> GridSample's mode (opset 16)
_GRID_MODES_20 = {"bilinear": "linear", "nearest": "nearest", "bicubic": "cubic"}  # renamed in opset 20
_GRID_PADDINGS = {0: "zeros", 1: "border", 2: "reflection"}


def grid_sample_mode(mode: str, opset: int) -> str:
    """GridSample's name at ``opset`` for ``mode`` given by opset 16's name (bilinear, nearest or bicubic): opset 20
    renamed bilinear and bicubic."""
    return _GRID_MODES_20[mode] if opset >= 20 else mode


def adopt_grid_sampler(node: onnx.NodeProto, scope: GraphScope, roi_sampling_ratio: Optional[int] = None
                       ) -> Tuple[List[onnx.NodeProto], AdoptedNode]:
    """``mmdeploy::grid_sampler`` (PyTorch's ``grid_sampler`` at opset 11) as the standard ``GridSample``."""
    inputs = exact_inputs(node, ("input", "grid"))
    attrs = attributes_of(node)
    values = {name: int_attribute(node, attrs, name, 0)
              for name in ("interpolation_mode", "padding_mode", "align_corners")}
    if values["interpolation_mode"] not in _GRID_MODES or values["padding_mode"] not in _GRID_PADDINGS:
        raise AdoptionError(f"{node_label(node)}: interpolation_mode {values['interpolation_mode']} and padding_mode "
                            f"{values['padding_mode']} must be PyTorch's values (0-2 each); the file is malformed: "
                            "re-export it")
    opset = scope.opset() or 0
    rank = scope.rank(inputs[0])
    if rank is not None and rank != 4 and not (rank == 5 and opset >= 20):
        raise AdoptionError(f"{node_label(node)}: its input has rank {rank}; GridSample takes rank 4 before opset 20 "
                            "(and 5 from it): re-export the model at opset >= 20 for a 3-D grid_sample")
    mode = _GRID_MODES[values["interpolation_mode"]]
    notes = (("bicubic as PyTorch computes it; mmdeploy's TensorRT plugin computes it as bilinear",)
             if mode == "bicubic" else ())
    standard = helper.make_node("GridSample", inputs, [node.output[0]], name=node.name,
                                mode=grid_sample_mode(mode, opset),
                                padding_mode=_GRID_PADDINGS[values["padding_mode"]],
                                align_corners=1 if values["align_corners"] else 0)
    return [standard], AdoptedNode(node_id(node), source_op(node), "ONNX GridSample",
                                   {"mode": mode, "padding_mode": _GRID_PADDINGS[values["padding_mode"]],
                                    "align_corners": int(bool(values["align_corners"]))}, notes)
