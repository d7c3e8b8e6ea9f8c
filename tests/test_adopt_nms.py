"""mmdeploy's ``TRTBatchedNMS`` adopted as standard ONNX (dcn_deploy.onnx.adopt_nms), run in ONNX Runtime.

The reference is a plain NumPy model of what mmdeploy 1.3.1's TensorRT plugin computes, written from its source
(``csrc/mmdeploy/backend_ops/tensorrt/batched_nms`` and ``common_impl/nms``): per class, the scores strictly above
the threshold, the ``min(topk, B)`` best (a stable sort: equal scores keep the lower box first), greedy NMS with the
plugin's float32 IoU (0 when the boxes do not overlap with positive width and height, no +1) suppressing strictly
above ``iou_threshold``; then per image every class's survivors by score (stable over class, then rank), the first
``keep_topk`` as rows, the rest dets 0, label -1, index -1. It shares nothing with the rewrite (no ONNX ops), and
the random cases are built to hit its edges: integer boxes with many exact overlaps and equal scores, scores equal
to the threshold and NaN, boxes with x2 < x1, more rows asked than survive, per-class boxes, a background class.
"""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

ort = pytest.importorskip("onnxruntime")

from dcn_deploy.onnx.adopt import AdoptionError, adopt_model  # noqa: E402


# ----------------------------------------------------------------------------------------------------------------
# The plugin, as its source reads


def _iou(a, b):
    """The plugin's jaccardOverlap in float32 (offset 0)."""
    f = np.float32
    if b[0] > a[2] or b[2] < a[0] or b[1] > a[3] or b[3] < a[1]:
        return f(0)
    ix1, iy1, ix2, iy2 = max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])
    width, height = f(ix2 - ix1), f(iy2 - iy1)
    if not (width > 0 and height > 0):
        return f(0)

    def area(box):
        return f(0) if box[2] < box[0] or box[3] < box[1] else f(f(box[2] - box[0]) * f(box[3] - box[1]))

    inter = f(width * height)
    return f(inter / f(f(area(a) + area(b)) - inter))


def plugin_batched_nms(boxes, scores, *, num_classes, score_threshold, iou_threshold, topk, keep_topk,
                       background_label_id=-1, clip_boxes=False):
    n_images, n_boxes, layers, _ = boxes.shape
    limit = topk if 0 < topk <= n_boxes else n_boxes
    dets = np.zeros((n_images, keep_topk, 5), np.float32)
    labels = np.full((n_images, keep_topk), -1, np.int64)
    index = np.full((n_images, keep_topk), -1, np.int64)
    for n in range(n_images):
        pool = []  # (score, class, rank, box)
        for c in range(num_classes):
            if c == background_label_id:
                continue
            location = 0 if layers == 1 else c
            candidates = [b for b in range(n_boxes) if scores[n, b, c] > np.float32(score_threshold)]
            candidates = sorted(candidates, key=lambda b: -scores[n, b, c])[:limit]  # sorted() is stable
            kept = []
            for b in candidates:
                if all(_iou(boxes[n, k, location], boxes[n, b, location]) <= np.float32(iou_threshold) for k in kept):
                    kept.append(b)
            pool += [(scores[n, b, c], c, rank, b) for rank, b in enumerate(kept)]
        pool.sort(key=lambda entry: -entry[0])  # stable: pool is in (class, rank) order
        for row, (score, c, _, b) in enumerate(pool[:keep_topk]):
            box = boxes[n, b, 0 if layers == 1 else c]
            dets[n, row, :4] = np.clip(box, 0, 1) if clip_boxes else box
            dets[n, row, 4] = score
            labels[n, row] = c
            index[n, row] = b if layers == 1 else c * n_boxes + b
    return dets, labels, index


# ----------------------------------------------------------------------------------------------------------------
# Files as mmdeploy writes them (opset 11, labels declared int64)


def nms_model(n_images, n_boxes, layers, classes, *, dynamic=False, return_index=True, opset=11, **attributes):
    attributes = {"num_classes": classes, "background_label_id": -1, "iou_threshold": 0.5, "score_threshold": 0.05,
                  "topk": 5000, "keep_topk": 100, "is_normalized": 0, "clip_boxes": 0,
                  "return_index": int(return_index), **attributes}
    outputs = ["dets", "labels"] + (["index"] if attributes["return_index"] else [])
    node = helper.make_node("TRTBatchedNMS", ["boxes", "scores"], outputs, domain="mmdeploy", name="nms",
                            **attributes)
    batch, count = ("N", "B") if dynamic else (n_images, n_boxes)
    rows = attributes["keep_topk"]
    graph = helper.make_graph(
        [node], "nms",
        [helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [batch, count, layers, 4]),
         helper.make_tensor_value_info("scores", TensorProto.FLOAT, [batch, count, classes])],
        [helper.make_tensor_value_info("dets", TensorProto.FLOAT, [batch, rows, 5]),
         helper.make_tensor_value_info("labels", TensorProto.INT64, [batch, rows])]
        + ([helper.make_tensor_value_info("index", TensorProto.INT32, [batch, rows])]
           if attributes["return_index"] else []))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset), helper.make_opsetid("mmdeploy", 1)])
    model.ir_version = 8
    return model


def random_case(rng, n_images, n_boxes, layers, classes, inverted=0.1, nan=0.02):
    corner = rng.integers(0, 12, (n_images, n_boxes, layers, 2)).astype(np.float32)
    size = rng.integers(0, 8, (n_images, n_boxes, layers, 2)).astype(np.float32)
    boxes = np.concatenate([corner, corner + size], axis=3)
    flip = rng.random((n_images, n_boxes, layers)) < inverted  # x2 < x1: IoU 0 with every box in the plugin
    boxes[flip] = boxes[flip][:, [2, 1, 0, 3]]
    scores = (rng.integers(0, 20, (n_images, n_boxes, classes)) / 20).astype(np.float32)  # many equal scores
    scores[rng.random(scores.shape) < nan] = np.nan
    return boxes, scores


def run_adopted(model, boxes, scores):
    adopted, adoption = adopt_model(model)
    onnx.checker.check_model(adopted, full_check=True)
    session = ort.InferenceSession(adopted.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"boxes": boxes, "scores": scores}), adoption


def assert_same(outputs, expected, return_index=True):
    dets, labels = outputs[0], outputs[1]
    np.testing.assert_array_equal(dets, expected[0])
    np.testing.assert_array_equal(labels, expected[1])
    if return_index:
        np.testing.assert_array_equal(outputs[2], expected[2])


# ----------------------------------------------------------------------------------------------------------------


CASES = [  # (images, boxes, layers, classes, attributes)
    (1, 30, 1, 3, dict(topk=5000, keep_topk=100)),  # mmdeploy's defaults over fewer boxes than keep_topk
    (2, 40, 1, 4, dict(topk=6, keep_topk=5, score_threshold=0.3, iou_threshold=0.4)),
    (3, 25, 1, 2, dict(topk=-1, keep_topk=7, iou_threshold=0.0)),
    (2, 33, 3, 3, dict(topk=10, keep_topk=12)),  # per-class boxes
    (1, 20, 1, 5, dict(topk=0, keep_topk=40, background_label_id=2, iou_threshold=1.0)),
    (2, 1, 1, 1, dict(topk=3, keep_topk=2)),
    (2, 17, 1, 3, dict(topk=4, keep_topk=9, clip_boxes=1, score_threshold=0.0)),
]


@pytest.mark.parametrize("images, boxes_, layers, classes, attributes", CASES)
def test_adopted_nms_matches_the_plugin(images, boxes_, layers, classes, attributes):
    rng = np.random.default_rng(images * 1000 + boxes_ * 10 + classes)
    model = nms_model(images, boxes_, layers, classes, **attributes)
    for trial in range(6):
        boxes, scores = random_case(rng, images, boxes_, layers, classes)
        if attributes.get("clip_boxes"):
            boxes = boxes / 8 - 0.25  # some corners outside [0, 1]
        outputs, adoption = run_adopted(model, boxes, scores)
        expected = plugin_batched_nms(boxes, scores, num_classes=classes, **{
            k: v for k, v in {"score_threshold": 0.05, "iou_threshold": 0.5, **attributes}.items()})
        assert_same(outputs, expected)
        assert outputs[1].dtype == np.int64 and outputs[2].dtype == np.int32  # as the file declares them
    assert adoption.nodes[0].source == "mmdeploy::TRTBatchedNMS" and adoption.left == []


def test_dynamic_shapes_and_scores_on_the_threshold():
    model = nms_model(0, 0, 1, 2, dynamic=True, topk=8, keep_topk=6, score_threshold=0.25)
    rng = np.random.default_rng(5)
    for images, count in ((1, 9), (3, 30), (2, 2)):
        boxes, scores = random_case(rng, images, count, 1, 2)
        scores[0, : count // 2, 0] = 0.25  # exactly the threshold: never a candidate
        outputs, _ = run_adopted(model, boxes, scores)
        assert_same(outputs, plugin_batched_nms(boxes, scores, num_classes=2, score_threshold=0.25,
                                                iou_threshold=0.5, topk=8, keep_topk=6))
        assert outputs[0].shape == (images, 6, 5)
        assert not np.isin(0.25, outputs[0][..., 4][outputs[1] >= 0])


def test_no_boxes():
    for topk in (5, -1):
        outputs, _ = run_adopted(nms_model(0, 0, 1, 3, dynamic=True, topk=topk, keep_topk=4),
                                 np.zeros((2, 0, 1, 4), np.float32), np.zeros((2, 0, 3), np.float32))
        assert [o.shape for o in outputs] == [(2, 4, 5), (2, 4), (2, 4)]
        assert (outputs[0] == 0).all() and (outputs[1] == -1).all() and (outputs[2] == -1).all()


def test_without_index_and_after_a_network():
    """Two outputs (mmdeploy's default), the node fed by other nodes, the file's other nodes kept."""
    base = nms_model(2, 12, 1, 3, return_index=False, topk=5, keep_topk=4)
    graph = base.graph
    graph.input[0].name, graph.input[1].name = "raw_boxes", "logits"
    graph.node.insert(0, helper.make_node("Sigmoid", ["logits"], ["scores"], name="sigmoid"))
    graph.node.insert(0, helper.make_node("Relu", ["raw_boxes"], ["boxes"], name="relu"))
    rng = np.random.default_rng(8)
    boxes, scores = random_case(rng, 2, 12, 1, 3, inverted=0, nan=0)
    logits = np.log(scores / (1 - scores + 1e-3) + 1e-3).astype(np.float32)
    adopted, adoption = adopt_model(base)
    session = ort.InferenceSession(adopted.SerializeToString(), providers=["CPUExecutionProvider"])
    dets, labels = session.run(None, {"raw_boxes": boxes, "logits": logits})
    expected = plugin_batched_nms(boxes, 1 / (1 + np.exp(-logits)), num_classes=3, score_threshold=0.05,
                                  iou_threshold=0.5, topk=5, keep_topk=4)
    np.testing.assert_allclose(dets, expected[0], rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(labels, expected[1])
    assert {n.domain for n in adopted.graph.node} == {""} and adoption.opset_after == 19
    assert {imp.domain for imp in adopted.opset_import} == {""}


@pytest.mark.parametrize("attributes, words", [
    (dict(score_threshold=-0.1), "score_threshold -0.1 is negative"),
    (dict(iou_threshold=1.5), "iou_threshold 1.5 is outside [0, 1]"),
    (dict(keep_topk=0), "keep_topk (the rows per image) must be >= 1, got 0"),
    (dict(num_classes=0), "num_classes must be >= 1, got 0"),
    (dict(topk=2.5), "topk must be a whole number, got 2.5"),
])
def test_attributes_it_cannot_honour_are_refused_naming_the_node(attributes, words):
    with pytest.raises(AdoptionError, match=r"node 'nms' \(mmdeploy::TRTBatchedNMS\)") as caught:
        adopt_model(nms_model(1, 5, 1, 2, **attributes))
    assert words in str(caught.value)


def test_outputs_that_contradict_return_index_are_refused():
    model = nms_model(1, 5, 1, 2, return_index=False)
    model.graph.node[0].output.append("index")
    with pytest.raises(AdoptionError, match=r"with return_index=0 the op has 2 \(dets, labels\)"):
        adopt_model(model)


def test_the_notes_say_where_the_plugin_or_tensorrt_would_differ():
    _, adoption = adopt_model(nms_model(1, 5, 1, 2, topk=3, keep_topk=4000))
    notes = " ".join(adoption.nodes[0].notes)
    assert "keep_topk 4000 > topk 3: mmdeploy's plugin leaves its outputs unwritten" in notes
    assert "keep_topk 4000 is above TensorRT's TopK limit 3840" in notes
    _, adoption = adopt_model(nms_model(1, 5, 1, 2, topk=5000, keep_topk=100))  # mmdeploy's defaults
    assert adoption.nodes[0].notes == ()  # the pre-selection of 5000 runs in two TopK stages
    assert [n.op_type for n in adopt_model(nms_model(1, 5, 1, 2, topk=5000))[0].graph.node].count("TopK") == 3
    assert "mmdeploy::TRTBatchedNMS -> ONNX NonMaxSuppression + TopK" in adoption.summary()


def test_a_half_precision_build_keeps_the_nms_float32():
    """Under --precision fp16 the rewrite stays float32, as mmdeploy's plugin is: the same detections."""
    from dcn_deploy.onnx.precision import convert_precision

    rng = np.random.default_rng(12)
    boxes, scores = random_case(rng, 2, 40, 1, 3)
    boxes = boxes * 150  # corners past 1024 pixels, where float16 steps by 1
    adopted, _ = adopt_model(nms_model(2, 40, 1, 3, topk=20, keep_topk=10))
    half, report = convert_precision(adopted, "fp16")

    def outputs(model):
        session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        return session.run(None, {"boxes": boxes, "scores": scores})

    for got, expected in zip(outputs(half), outputs(adopted)):
        np.testing.assert_array_equal(got, expected)
    assert report.half_nodes == 0 and report.kept_fp32


@pytest.mark.parametrize("seed", range(4))
def test_the_per_class_preselection_in_stages_is_the_same_selection(monkeypatch, seed):
    """TensorRT's TopK takes k <= 3840, so a topk above that is selected in stages; with stages of 3 here, topk
    4 to 20 over 0 to 30 boxes takes 2 to 7 stages, more than the candidates where the scores run out."""
    from dcn_deploy.onnx import adopt_nms

    monkeypatch.setattr(adopt_nms, "_TOPK_STAGE", 3)
    rng = np.random.default_rng(100 + seed)
    for trial in range(8):
        topk, count, classes = int(rng.integers(4, 21)), int(rng.integers(0, 31)), int(rng.integers(1, 4))
        attributes = dict(topk=topk, keep_topk=int(rng.integers(1, 25)), iou_threshold=0.4, score_threshold=0.2)
        boxes, scores = random_case(rng, 2, count, 1, classes)
        outputs, _ = run_adopted(nms_model(0, 0, 1, classes, dynamic=True, **attributes), boxes, scores)
        assert_same(outputs, plugin_batched_nms(boxes, scores, num_classes=classes, **attributes))
