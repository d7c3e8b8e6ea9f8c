"""mmdeploy's ``TRTBatchedNMS`` node -> standard ONNX ops that compute what mmdeploy's TensorRT plugin computes.

mmdeploy writes its detectors' multi-class NMS for TensorRT as one ``mmdeploy::TRTBatchedNMS`` node, which only
mmdeploy's plugin library runs. Rewritten here as ``NonMaxSuppression``, ``TopK`` and indexing ops, the file runs in
stock ONNX Runtime and TensorRT (whose ONNX parser maps ``NonMaxSuppression`` to its NMS layer).

What the plugin computes (read from mmdeploy 1.3.1's plugin source, ``csrc/mmdeploy/backend_ops/tensorrt/``
``batched_nms`` and ``common_impl/nms``; not run against its binary), and so what this rewrite computes:

- Inputs ``boxes`` (N, B, 1 or C, 4) as (x1, y1, x2, y2), shared by every class when the third axis is 1, and
  ``scores`` (N, B, C). Attributes ``num_classes`` C, ``background_label_id`` (a class id in [0, C) is never output;
  mmdeploy writes -1), ``score_threshold``, ``iou_threshold``, ``topk``, ``keep_topk``, ``clip_boxes``,
  ``return_index`` (``is_normalized`` changes nothing: the plugin never adds 1 to box sides).
- Per image and class: the boxes whose score is above ``score_threshold`` (strictly; NaN never), the ``T`` best of
  them (``T = topk`` when 0 < topk <= B, else B; equal scores: the lower box first), greedy NMS over those (a box goes
  when its IoU with a kept, better one is above ``iou_threshold``, strictly). A box with x2 < x1 or y2 < y1 has IoU 0
  with every box: it neither suppresses nor is suppressed (ONNX's NMS would swap its corners, so its NMS input is
  collapsed to a point, which has the same effect; its output keeps the original corners).
- Per image: the survivors of every class, best score first (equal scores: the lower class, then the better rank),
  the first ``keep_topk`` as rows: ``dets`` (N, keep_topk, 5) = (x1, y1, x2, y2, score), ``labels`` (N, keep_topk)
  the class, and with ``return_index`` ``index`` (N, keep_topk) the box (b, or c * B + b for per-class boxes). Rows
  past the survivors are dets 0, label -1, index -1. ``clip_boxes`` (the plugin's default when the attribute is
  absent; mmdeploy writes 0) clamps the output corners to [0, 1].

Where the plugin misbehaves, the rewrite does what the rest of the definition says: with ``keep_topk > T`` the plugin
leaves its outputs unwritten (mmdeploy's ``keep_top_k=100`` over fewer than 100 boxes), and with ``T > 5120`` it
aborts the process; here the survivors are ranked and padded as always. A negative ``score_threshold`` (the plugin's
padding then mixes with its candidates) and an ``iou_threshold`` outside [0, 1] (ONNX's NMS refuses it) are refused.

On TensorRT, two limits of its layers apply. Its ``TopK`` takes k <= 3840: the per-class pre-selection runs in stages
of at most 3840 (the same selection; TensorRT-RTX builds a TopK of ``min(5000, B)`` only where B stays under 3840,
and the staged one for any B), and a ``keep_topk`` above 3840 does not build. Its NMS layer considers the 5000 best
candidates of each of its images, here one (image, class) pair each; the plugin takes up to T (at most 5120), so
results can differ only where T is over 5000.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import numpy as np
import onnx
from onnx import TensorProto, helper

from .adopt_nodes import (AdoptedNode, AdoptionError, GraphBuilder, GraphScope, attributes_of, exact_inputs,
                          int_attribute, node_id, node_label, number_attribute, source_op)

__all__ = ["adopt_batched_nms", "BATCHED_NMS_TARGET"]

BATCHED_NMS_TARGET = "ONNX NonMaxSuppression + TopK"

# The plugin's own default when the attribute is absent (its creator's ``clipBoxes = true``); mmdeploy writes 0.
_CLIP_BOXES_DEFAULT = 1
_PLUGIN_TOPK_LIMIT = 5120  # t_size = (top_k + 511) / 512 must be <= 10, else the plugin aborts
_TENSORRT_TOPK_LIMIT = 3840
_TOPK_STAGE = _TENSORRT_TOPK_LIMIT  # the largest k of one TopK in the per-class pre-selection (tests lower it)


def _read_attributes(node: onnx.NodeProto, scope: GraphScope) -> Dict[str, object]:
    attrs = attributes_of(node)
    read = {"num_classes": int_attribute(node, attrs, "num_classes", 0),
            "background_label_id": int_attribute(node, attrs, "background_label_id", -1),
            "score_threshold": number_attribute(node, attrs, "score_threshold", 0.0),
            "iou_threshold": number_attribute(node, attrs, "iou_threshold", 0.5),
            "topk": int_attribute(node, attrs, "topk", -1),
            "keep_topk": int_attribute(node, attrs, "keep_topk", -1),
            "clip_boxes": int_attribute(node, attrs, "clip_boxes", _CLIP_BOXES_DEFAULT),
            "return_index": int_attribute(node, attrs, "return_index", 0)}
    where = node_label(node)
    if read["num_classes"] < 1:
        raise AdoptionError(f"{where}: num_classes must be >= 1, got {read['num_classes']}; the file is malformed: "
                            "re-export it")
    if read["keep_topk"] < 1:
        raise AdoptionError(f"{where}: keep_topk (the rows per image) must be >= 1, got {read['keep_topk']}; "
                            "re-export with keep_top_k >= 1 in the deploy config's post_processing")
    if not 0.0 <= read["iou_threshold"] <= 1.0:
        raise AdoptionError(f"{where}: iou_threshold {read['iou_threshold']} is outside [0, 1], which ONNX's "
                            "NonMaxSuppression refuses; re-export with an iou_threshold in [0, 1]")
    if read["score_threshold"] < 0:
        raise AdoptionError(f"{where}: score_threshold {read['score_threshold']} is negative, where mmdeploy's plugin "
                            "mixes its padding into the candidates (its results are not defined); re-export with a "
                            "score_threshold >= 0")
    expected = 3 if read["return_index"] else 2
    if len(node.output) != expected or not all(node.output):
        raise AdoptionError(f"{where} has outputs {list(node.output)}, and with return_index={read['return_index']} "
                            f"the op has {expected} (dets, labels{', index' if expected == 3 else ''}); the file is "
                            "malformed: re-export it")
    exact_inputs(node, ("boxes", "scores"))
    for value, rank, what in ((node.input[0], 4, "boxes (N, B, 1 or num_classes, 4)"),
                              (node.input[1], 3, "scores (N, B, num_classes)")):
        if scope.rank(value) not in (None, rank):
            raise AdoptionError(f"{where}: its {what} input {value!r} has rank {scope.rank(value)}, and the op takes "
                                f"rank {rank}; the file is malformed: re-export it")
    return read


def _notes(read: Dict[str, object]) -> Tuple[str, ...]:
    notes = []
    topk, keep = read["topk"], read["keep_topk"]
    if topk > _PLUGIN_TOPK_LIMIT or topk <= 0:
        entering = "every box" if topk <= 0 else f"min({topk}, boxes)"
        notes.append(f"topk {topk}: {entering} per class enter NMS; where that is over {_PLUGIN_TOPK_LIMIT}, "
                     "mmdeploy's plugin aborts the process; the rewrite runs")
    if 0 < topk < keep:
        notes.append(f"keep_topk {keep} > topk {topk}: mmdeploy's plugin leaves its outputs unwritten there; the "
                     "rewrite gives the survivors, padded")
    if keep > _TENSORRT_TOPK_LIMIT:
        notes.append(f"keep_topk {keep} is above TensorRT's TopK limit {_TENSORRT_TOPK_LIMIT}: it runs in ONNX Runtime "
                     f"but does not build in TensorRT; re-export with keep_top_k <= {_TENSORRT_TOPK_LIMIT}")
    return tuple(notes)


def adopt_batched_nms(node: onnx.NodeProto, scope: GraphScope, roi_sampling_ratio: Optional[int] = None
                      ) -> Tuple[List[onnx.NodeProto], AdoptedNode]:
    """The standard nodes that replace ``node`` (an ``mmdeploy::TRTBatchedNMS``), writing its output names, and the
    report of it."""
    read = _read_attributes(node, scope)
    g = GraphBuilder(scope, node_id(node), keep_fp32="mmdeploy's NMS plugin is float32 (box coordinates, score ranks)")
    boxes, scores = node.input[0], node.input[1]
    sizes = _Sizes(g, scores, read["num_classes"])
    by_class, candidates, most = _candidates(g, scores, read, sizes)
    kept = _kept_by_nms(g, boxes, candidates, most, read, sizes)
    top, position, valid = _ranked(g, kept, by_class, read["keep_topk"], sizes)
    _write_outputs(g, node, boxes, top, position, valid, read, sizes)
    return g.nodes, AdoptedNode(node_id(node), source_op(node), BATCHED_NMS_TARGET, dict(read), _notes(read))


class _Sizes:
    """The run-time sizes, as 1-D int64 values: ``batch`` [N], ``boxes`` [B], ``images`` [N * C]; ``classes`` C
    from the attribute; ``by_class`` the (N, C, B, 4) shape of boxes per class."""

    def __init__(self, g: GraphBuilder, scores: str, classes: int):
        shape = g.op("Shape", [scores])
        self.classes = classes
        self.batch = g.op("Slice", [shape, g.const([0]), g.const([1])])
        self.boxes = g.op("Slice", [shape, g.const([1]), g.const([2])])
        self.images = g.op("Mul", [self.batch, g.const([classes])])
        self.by_class = g.op("Concat", [self.batch, g.const([classes]), self.boxes, g.const([4])], axis=0)
        self.minus_inf = g.float_like(-np.inf, scores, "minus_inf")


def _candidates(g: GraphBuilder, scores: str, read: Dict[str, object], sizes: _Sizes) -> Tuple[str, str, str]:
    """(scores as (N, C, B); the same with -inf where a box is no candidate of its class: not above the threshold
    (NaN never is), of the background class, or not among the class's ``topk`` best; the most a class can keep)."""
    by_class = g.op("Transpose", [scores], perm=[0, 2, 1])
    threshold = g.float_like(read["score_threshold"], scores, "score_threshold")
    above = g.op("Greater", [by_class, threshold])
    background = read["background_label_id"]
    if 0 <= background < sizes.classes:
        wanted = np.ones((1, sizes.classes, 1), dtype=bool)
        wanted[0, background, 0] = False
        above = g.op("And", [above, g.const(wanted, bool, "wanted_classes")])
    candidates = g.op("Where", [above, by_class, sizes.minus_inf])
    if read["topk"] <= 0:
        return by_class, candidates, sizes.boxes
    k = g.op("Min", [g.const([read["topk"]]), sizes.boxes])
    return by_class, _best_of_each_class(g, candidates, k, read["topk"], sizes), k


def _best_of_each_class(g: GraphBuilder, candidates: str, k: str, topk: int, sizes: _Sizes) -> str:
    """``candidates`` with -inf but for the ``k`` best of each class (equal scores: the lower box first, TopK's order
    and the plugin's stable sort's). In stages of at most ``_TOPK_STAGE`` (TensorRT's TopK takes k <= 3840): each
    stage takes the best of what the stages before it left, which is the same selection."""
    none = g.op("Expand", [sizes.minus_inf, g.op("Shape", [candidates])])
    stages = -(-topk // _TOPK_STAGE)
    if stages == 1:
        best, where = g.op2("TopK", [candidates, k], axis=2, largest=1, sorted=1)
        return g.op("ScatterElements", [none, where, best], axis=2)
    chosen, pool = none, candidates
    for stage in range(stages):
        left = g.op("Max", [g.op("Sub", [k, g.const([stage * _TOPK_STAGE])]), g.const([0])])
        best, where = g.op2("TopK", [pool, g.op("Min", [left, g.const([_TOPK_STAGE])])], axis=2, largest=1, sorted=1)
        # where a stage reaches past the last candidate (-inf), it may pick a place an earlier stage chose: keep that
        earlier = g.op("GatherElements", [chosen, where], axis=2)
        chosen = g.op("ScatterElements", [chosen, where, g.op("Max", [best, earlier])], axis=2)
        pool = g.op("ScatterElements", [pool, where, g.op("Expand", [sizes.minus_inf, g.op("Shape", [where])])],
                    axis=2)
    return chosen


def _kept_by_nms(g: GraphBuilder, boxes: str, candidates: str, most: str, read: Dict[str, object],
                 sizes: _Sizes) -> str:
    """(N, C, B) booleans: the candidates greedy NMS keeps, per image and class. ONNX's NMS runs over N * C images of
    one class each (so that TensorRT's NMS layer limits the candidates per class, as the plugin does, not per
    image), on boxes (N, C, B, 4) (shared boxes repeated for every class) where a box with x2 < x1 or y2 < y1 is
    collapsed to its first corner: IoU 0 with every box, as in the plugin (ONNX's NMS would swap its corners)."""
    x1, y1, x2, y2 = (g.op("Slice", [boxes, g.const([i]), g.const([i + 1]), g.const([3])]) for i in range(4))
    inverted = g.op("Or", [g.op("Less", [x2, x1]), g.op("Less", [y2, y1])])
    collapsed = g.op("Where", [inverted, g.op("Concat", [x1, y1, x1, y1], axis=3), boxes])  # (N, B, L, 4)
    per_class = g.op("Expand", [g.op("Transpose", [collapsed], perm=[0, 2, 1, 3]), sizes.by_class])
    # (allowzero: B may be 0, which Reshape would otherwise read as "copy that axis")
    folded = g.op("Reshape", [per_class, g.op("Concat", [sizes.images, sizes.boxes, g.const([4])], axis=0)],
                  allowzero=1)
    one_class = g.op("Reshape", [candidates, g.op("Concat", [sizes.images, g.const([1]), sizes.boxes], axis=0)],
                     allowzero=1)
    iou = g.const([read["iou_threshold"]], np.float32, "iou_threshold")
    any_score = g.const([-np.inf], np.float32, "no_score_threshold")  # the candidates are chosen already
    selected = g.op("NonMaxSuppression", [folded, one_class, most, iou, any_score])  # (M, 3): image*C+class, 0, b
    marks = g.op("Gather", [selected, g.const([0, 2])], axis=1)
    nothing = g.op("ConstantOfShape", [g.op("Concat", [sizes.images, sizes.boxes], axis=0)],
                   value=helper.make_tensor("false", TensorProto.BOOL, [1], [False]))
    marked = g.op("Expand", [g.const([True], bool, "true"),
                             g.op("Slice", [g.op("Shape", [marks]), g.const([0]), g.const([1])])])
    return g.op("Reshape", [g.op("ScatterND", [nothing, marks, marked]), g.op("Shape", [candidates])], allowzero=1)


def _ranked(g: GraphBuilder, kept: str, by_class: str, keep: int, sizes: _Sizes) -> Tuple[str, str, str]:
    """(the ``keep`` best scores of each image's survivors, (N, keep); their places c * B + b (meaningless in the rows
    that are not survivors); which rows are survivors). Ranked over (N, C * B) padded with ``keep`` misses, so that
    there are ``keep`` rows whatever B; equal scores: the lower class, then the lower box (TopK's order, the plugin's
    stable sort's)."""
    survivors = g.op("Where", [kept, by_class, sizes.minus_inf])
    flat = g.op("Reshape", [survivors, g.op("Concat", [sizes.batch, g.const([-1])], axis=0)])
    misses = g.op("Expand", [sizes.minus_inf, g.op("Concat", [sizes.batch, g.const([keep])], axis=0)])
    top, position = g.op2("TopK", [g.op("Concat", [flat, misses], axis=1), g.const([keep])], axis=1, largest=1,
                          sorted=1)
    return top, position, g.op("Greater", [top, sizes.minus_inf])


def _write_outputs(g: GraphBuilder, node: onnx.NodeProto, boxes: str, top: str, position: str, valid: str,
                   read: Dict[str, object], sizes: _Sizes) -> None:
    """The node's outputs: dets (the boxes as given, clipped to [0, 1] with ``clip_boxes``, and the score), the
    labels, and with ``return_index`` the index (b for shared boxes, c * B + b per class: the plugin's); rows that
    are not survivors 0, -1 and -1."""
    table = g.op("Reshape", [g.op("Expand", [g.op("Transpose", [boxes], perm=[0, 2, 1, 3]), sizes.by_class]),
                             g.op("Concat", [sizes.batch, g.const([-1, 4])], axis=0)])  # (N, C * B, 4)
    # one more row, read by the rows that are not survivors (so that there is a row to read when B is 0)
    spare = g.op("Slice", [g.op("Shape", [table]), g.const([1]), g.const([2])])
    zero = g.float_like(0.0, boxes, "zero")
    zero_row = g.op("Expand", [zero, g.op("Concat", [sizes.batch, g.const([1, 4])], axis=0)])
    table = g.op("Concat", [table, zero_row], axis=1)
    read_at = g.op("Where", [valid, position, spare])
    along = g.op("Expand", [g.op("Unsqueeze", [read_at, g.const([2])]),
                            g.op("Concat", [g.op("Shape", [position]), g.const([4])], axis=0)])
    corners = g.op("GatherElements", [table, along], axis=1)
    if read["clip_boxes"]:
        corners = g.op("Clip", [corners, zero, g.float_like(1.0, boxes, "one")])
    rows = g.op("Concat", [corners, g.op("Unsqueeze", [g.op("CastLike", [top, boxes]), g.const([2])])], axis=2)
    g.op("Where", [g.op("Unsqueeze", [valid, g.const([2])]), rows, zero], outputs=[node.output[0]])
    per_class = g.op("Max", [sizes.boxes, g.const([1])])  # B, or 1 where there are no boxes (no valid row either)
    _integer_output(g, valid, g.op("Div", [position, per_class]), node.output[1])
    if read["return_index"]:
        layers = g.op("Slice", [g.op("Shape", [boxes]), g.const([2]), g.const([3])])
        index = g.op("Where", [g.op("Greater", [layers, g.const([1])]), position,
                               g.op("Mod", [position, per_class])])
        _integer_output(g, valid, index, node.output[2])


def _integer_output(g: GraphBuilder, valid: str, values: str, name: str) -> None:
    """``values`` where ``valid``, else -1, as ``name`` in the type the file declares for it, else int64: what the
    exporter traced (mmdeploy's dummy forward gives int64, and the nodes after it were typed so; the plugin's
    TensorRT engine gives int32)."""
    declared = g.scope.elem_type(name) or TensorProto.INT64
    marked = g.op("Where", [valid, values, g.const(-1)])
    g.op("Cast", [marked], outputs=[name], to=declared)
