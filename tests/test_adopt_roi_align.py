"""mmdeploy's RoIAlign nodes adopted as standard ONNX RoiAlign (dcn_deploy.onnx.adopt_roi_align), run in ONNX Runtime.

The reference is a NumPy model of mmdeploy 1.3.1's TensorRT plugins written from their source
(``multi_level_roi_align``, ``roi_align``): the level of a RoI from its float32 area (mmdet's ``map_roi_levels``),
the plugin's rescale, RoIAlign with its size clamps, adaptive grid, boundary rule and average; sampled in float64
on the float32 RoI. It shares no code with the rewrite. Random RoIs from sub-pixel to larger than the image,
inverted, zero-size, out of the image, on each level and across level thresholds, for a batch of two images.
"""
from __future__ import annotations

import math

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

ort = pytest.importorskip("onnxruntime")

from dcn_deploy.onnx.adopt import AdoptionError, adopt_model  # noqa: E402
from dcn_deploy.onnx.adopt_roi_align import level_area_thresholds  # noqa: E402

f32 = np.float32


# ----------------------------------------------------------------------------------------------------------------
# The plugins, as their source reads


def plugin_level(roi, levels, finest_scale):
    area = f32(f32(roi[4] - roi[2]) * f32(roi[3] - roi[1]))
    with np.errstate(invalid="ignore"):  # a negative area: NaN, level 0
        quotient = f32(np.sqrt(area, dtype=f32) / f32(finest_scale))
    value = np.log2(f32(np.float64(quotient) + 1e-6))
    if np.isnan(value):
        return 0
    return int(min(levels - 1, max(0, np.floor(value))))  # +inf: the last level


def plugin_rescale(roi, factor):
    x0, y0, x1, y1 = (f32(v) for v in roi[1:])
    half = f32(f32(factor) * f32(0.5))
    out = []
    for low, high in ((x0, x1), (y0, y1)):
        centre = f32(f32(low + high) * f32(0.5))
        half_size = f32(f32(f32(f32(high - low) + f32(1)) * half) - f32(0.5))
        out.append((f32(centre - half_size), f32(centre + half_size)))
    (x0, x1), (y0, y1) = out
    return x0, y0, x1, y1


def _bilinear(feature, y, x):
    """feature (C, H, W); y (A,), x (B,) -> (C, A, B), the mmcv/plugin boundary rule."""
    _, height, width = feature.shape
    out_y = (y < -1) | (y > height)
    out_x = (x < -1) | (x > width)
    y = np.clip(y, 0, None)
    x = np.clip(x, 0, None)
    y_low = np.minimum(np.floor(y).astype(int), height - 1)
    x_low = np.minimum(np.floor(x).astype(int), width - 1)
    y = np.where(y_low >= height - 1, y_low, y)
    x = np.where(x_low >= width - 1, x_low, x)
    y_high = np.minimum(y_low + 1, height - 1)
    x_high = np.minimum(x_low + 1, width - 1)
    ly, lx = y - y_low, x - x_low
    hy, hx = 1 - ly, 1 - lx
    value = (feature[:, y_low][:, :, x_low] * (hy[:, None] * hx[None, :])
             + feature[:, y_low][:, :, x_high] * (hy[:, None] * lx[None, :])
             + feature[:, y_high][:, :, x_low] * (ly[:, None] * hx[None, :])
             + feature[:, y_high][:, :, x_high] * (ly[:, None] * lx[None, :]))
    return np.where(out_y[:, None] | out_x[None, :], 0.0, value)


def plugin_roi_align(feature, box, scale, out_h, out_w, ratio, aligned, clamp_aligned=True):
    """One RoI (x0, y0, x1, y1, float32) on ``feature`` (C, H, W) -> (C, out_h, out_w), float64."""
    offset = f32(0.5) if aligned else f32(0)
    x0, y0, x1, y1 = (f32(f32(v * f32(scale)) - offset) for v in box)
    width, height = float(f32(x1 - x0)), float(f32(y1 - y0))
    if not aligned:
        width, height = max(width, 1.0), max(height, 1.0)
    elif clamp_aligned:
        width, height = max(width, 0.0), max(height, 0.0)
    bin_h, bin_w = height / out_h, width / out_w
    grid_h = ratio if ratio > 0 else math.ceil(height / out_h)
    grid_w = ratio if ratio > 0 else math.ceil(width / out_w)
    out = np.zeros((feature.shape[0], out_h, out_w))
    if grid_h <= 0 or grid_w <= 0:
        return out
    ys = (float(y0) + np.arange(out_h)[:, None] * bin_h + (np.arange(grid_h)[None, :] + 0.5) * bin_h / grid_h)
    xs = (float(x0) + np.arange(out_w)[:, None] * bin_w + (np.arange(grid_w)[None, :] + 0.5) * bin_w / grid_w)
    samples = _bilinear(feature.astype(np.float64), ys.ravel(), xs.ravel())
    samples = samples.reshape(feature.shape[0], out_h, grid_h, out_w, grid_w)
    return samples.sum(axis=(2, 4)) / max(grid_h * grid_w, 1)


def plugin_multi_level(rois, maps, strides, out_h, out_w, ratio, aligned, finest_scale, factor):
    out = np.zeros((len(rois), maps[0].shape[1], out_h, out_w))
    for k, roi in enumerate(rois):
        level = plugin_level(roi, len(maps), finest_scale)
        box = plugin_rescale(roi, factor) if factor > 0 else tuple(f32(v) for v in roi[1:])
        scale = f32(1) / f32(strides[level])
        out[k] = plugin_roi_align(maps[level][int(roi[0])], box, scale, out_h, out_w, ratio, aligned)
    return out


# ----------------------------------------------------------------------------------------------------------------
# Files as mmdeploy writes them


def multi_level_model(strides, channels=3, out=(7, 7), **attributes):
    attributes = {"output_height": out[0], "output_width": out[1], "pool_mode": 1, "sampling_ratio": 0,
                  "roi_scale_factor": 1.0, "finest_scale": 56, "featmap_strides": [float(s) for s in strides],
                  "aligned": 1, **attributes}
    maps = [f"p{i + 2}" for i in range(len(strides))]
    node = helper.make_node("MMCVMultiLevelRoiAlign", ["rois"] + maps, ["bbox_feats"], domain="mmdeploy",
                            name="roi_extractor", **attributes)
    graph = helper.make_graph(
        [node], "extractor",
        [helper.make_tensor_value_info("rois", TensorProto.FLOAT, ["K", 5])]
        + [helper.make_tensor_value_info(m, TensorProto.FLOAT, ["N", channels, f"h{i}", f"w{i}"])
           for i, m in enumerate(maps)],
        [helper.make_tensor_value_info("bbox_feats", TensorProto.FLOAT,
                                       ["K", channels, attributes["output_height"], attributes["output_width"]])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11), helper.make_opsetid("mmdeploy", 1)])
    model.ir_version = 8
    return model


def random_rois(rng, count, images, size):
    """RoIs (image, x0, y0, x1, y1) in image pixels: most inside, of every scale; some inverted, zero-size, sub-pixel,
    beyond the image."""
    height, width = size
    centre = rng.uniform([0, 0], [width, height], (count, 2))
    extent = np.exp(rng.uniform(np.log(0.3), np.log(2.5 * max(size)), (count, 2)))
    rois = np.concatenate([rng.integers(0, images, (count, 1)), centre - extent / 2, centre + extent / 2], axis=1)
    rois[: count // 12, 3] = rois[: count // 12, 1] - rng.uniform(0, 20, count // 12)  # inverted in x
    rois[count // 12: count // 8, 4] = rois[count // 12: count // 8, 2]  # zero height
    return rois.astype(np.float32)


def run(model, feed):
    adopted, adoption = adopt_model(model)
    onnx.checker.check_model(adopted, full_check=True)
    session = ort.InferenceSession(adopted.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feed)[0], adoption


STRIDES = (4, 8, 16, 32)


@pytest.mark.parametrize("attributes", [
    dict(),  # Faster R-CNN's box branch as mmdeploy writes it
    dict(output_height=14, output_width=14, sampling_ratio=2),  # a mask branch with a fixed grid
    dict(aligned=0, output_height=5, output_width=9),
    dict(roi_scale_factor=1.3, sampling_ratio=1),  # the plugin's own rescale rule
    dict(roi_scale_factor=-1.0, aligned=0, sampling_ratio=3, finest_scale=40),
])
def test_multi_level_roi_align_matches_the_plugin(attributes):
    rng = np.random.default_rng(len(str(attributes)))
    size = (256, 320)
    maps = [rng.standard_normal((2, 3, math.ceil(size[0] / s), math.ceil(size[1] / s))).astype(np.float32)
            for s in STRIDES]
    rois = random_rois(rng, 90, 2, size)
    model = multi_level_model(STRIDES, **attributes)
    got, adoption = run(model, {"rois": rois, **{f"p{i + 2}": m for i, m in enumerate(maps)}})
    a = {"output_height": 7, "output_width": 7, "sampling_ratio": 0, "aligned": 1, "finest_scale": 56,
         "roi_scale_factor": 1.0, **attributes}
    expected = plugin_multi_level(rois, maps, STRIDES, a["output_height"], a["output_width"], a["sampling_ratio"],
                                  a["aligned"], a["finest_scale"], a["roi_scale_factor"])
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=0, atol=5e-5)
    levels = {plugin_level(r, 4, a["finest_scale"]) for r in rois}
    assert levels == {0, 1, 2, 3}  # every level is taken, and some RoIs pool to all zeros (empty or outside)
    assert adoption.nodes[0].target == "ONNX RoiAlign" and adoption.left == []


def test_level_thresholds_are_the_float32_formula():
    """The thresholds (compared with the float32 area) give the plugin's level for every area, at each threshold's
    neighbours too; a negative area (NaN scale) is level 0."""
    for finest_scale, levels in ((56, 4), (40, 5), (1, 3)):
        thresholds = level_area_thresholds(finest_scale, levels)
        rng = np.random.default_rng(finest_scale)
        areas = list(f32(rng.uniform(0, 5e5, 20000)))
        for t in thresholds:
            areas += [np.nextafter(f32(t), f32(0)), f32(t), np.nextafter(f32(t), f32(np.inf))]
        for area in areas + [f32(0), f32(-3), f32(np.inf)]:
            expected = plugin_level(np.array([0, 0, 0, area, 1], np.float32), levels, finest_scale)
            assert sum(area >= f32(t) for t in thresholds) == expected, (finest_scale, area)
    # 112, 224 and 448 pixels squared, shifted a little by the 1e-6
    assert level_area_thresholds(56, 4) == pytest.approx([112 ** 2, 224 ** 2, 448 ** 2], rel=1e-5)


def test_no_roi_and_an_empty_level():
    rng = np.random.default_rng(2)
    maps = {f"p{i + 2}": rng.standard_normal((1, 2, 16 // s + 1, 16 // s + 1)).astype(np.float32)
            for i, s in enumerate(STRIDES)}
    model = multi_level_model(STRIDES, channels=2)
    got, _ = run(model, {"rois": np.zeros((0, 5), np.float32), **maps})
    assert got.shape == (0, 2, 7, 7)
    small = np.array([[0, 1, 1, 9, 7], [0, 2, 3, 4, 11]], np.float32)  # both on level 0
    got, _ = run(model, {"rois": small, **maps})
    expected = plugin_multi_level(small, [maps[f"p{i + 2}"] for i in range(4)], STRIDES, 7, 7, 0, 1, 56, 1.0)
    np.testing.assert_allclose(got, expected, rtol=0, atol=5e-5)


def test_one_level():
    """A single-level extractor (mmdeploy writes MMCVMultiLevelRoiAlign for every SingleRoIExtractor)."""
    rng = np.random.default_rng(4)
    feed = {"p2": rng.standard_normal((2, 3, 20, 24)).astype(np.float32), "rois": random_rois(rng, 30, 2, (80, 96))}
    got, _ = run(multi_level_model((4,), sampling_ratio=2), feed)
    expected = plugin_multi_level(feed["rois"], [feed["p2"]], (4,), 7, 7, 2, 1, 56, 1.0)
    np.testing.assert_allclose(got, expected, rtol=0, atol=5e-5)


def mmcv_roi_align_model(channels=3, **attributes):
    attributes = {"output_height": 7, "output_width": 7, "spatial_scale": 0.25, "sampling_ratio": 0, "mode": "avg",
                  "aligned": 1, **attributes}
    node = helper.make_node("MMCVRoiAlign", ["feat", "rois"], ["pooled"], domain="mmcv", name="roi_align",
                            **attributes)
    graph = helper.make_graph(
        [node], "roi_align",
        [helper.make_tensor_value_info("feat", TensorProto.FLOAT, ["N", channels, "H", "W"]),
         helper.make_tensor_value_info("rois", TensorProto.FLOAT, ["K", 5])],
        [helper.make_tensor_value_info("pooled", TensorProto.FLOAT,
                                       ["K", channels, attributes["output_height"], attributes["output_width"]])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11), helper.make_opsetid("mmcv", 1)])
    model.ir_version = 8
    return model


@pytest.mark.parametrize("attributes", [dict(), dict(aligned=0, sampling_ratio=2, output_height=3),
                                        dict(spatial_scale=0.125, sampling_ratio=1, output_width=5)])
def test_mmcv_roi_align_matches_mmcvs_kernel(attributes):
    """mmcv's own kernel (mmdeploy's MMCVRoiAlign plugin): no size clamp when aligned, >= 1 when not."""
    rng = np.random.default_rng(7)
    feat = rng.standard_normal((2, 3, 17, 23)).astype(np.float32)
    rois = random_rois(rng, 60, 2, (68, 92))
    rois = rois[(rois[:, 3] >= rois[:, 1]) | (attributes.get("sampling_ratio", 0) == 0)]  # see below for inverted
    got, adoption = run(mmcv_roi_align_model(**attributes), {"feat": feat, "rois": rois})
    a = {"output_height": 7, "output_width": 7, "spatial_scale": 0.25, "sampling_ratio": 0, "aligned": 1,
         **attributes}
    expected = np.stack([plugin_roi_align(feat[int(r[0])], tuple(r[1:]), a["spatial_scale"], a["output_height"],
                                          a["output_width"], a["sampling_ratio"], a["aligned"], clamp_aligned=False)
                         for r in rois])
    np.testing.assert_allclose(got, expected, rtol=0, atol=5e-5)
    assert adoption.nodes[0].source == "mmcv::MMCVRoiAlign"


@pytest.mark.parametrize("model, words", [
    (lambda: multi_level_model(STRIDES, pool_mode=0), "max-pools, and ONNX's RoiAlign defines max pooling"),
    (lambda: mmcv_roi_align_model(mode="max"), "max-pools"),
    (lambda: multi_level_model(STRIDES, featmap_strides=[4.0, 8.0]), "has 4 feature map input(s)"),
    (lambda: multi_level_model(STRIDES, featmap_strides=[4.0, 8.0, -16.0, 32.0]), "featmap_strides must hold"),
    (lambda: multi_level_model(STRIDES, sampling_ratio=-1), "sampling_ratio must be >= 0"),
])
def test_what_it_cannot_honour_is_refused_naming_the_node(model, words):
    with pytest.raises(AdoptionError, match=r"node '(roi_extractor|roi_align)'") as caught:
        adopt_model(model())
    assert words in str(caught.value)


def test_a_half_precision_build_keeps_the_box_arithmetic_float32():
    """Under --precision fp16 the rewrite stays float32 (mmdeploy's plugin is float32): in float16 a RoI area past
    65504 (256 x 256 pixels) is inf, and such a RoI would pool from the coarsest level. Run by onnx's reference
    evaluator, which computes each node in its declared type (ONNX Runtime's CPU provider has no float16 kernels for
    these ops and quietly computes them in float32, hiding the overflow; TensorRT's strongly typed network would
    not)."""
    from onnx.reference import ReferenceEvaluator

    from dcn_deploy.onnx.precision import convert_precision

    rng = np.random.default_rng(9)
    size = (256, 320)
    feed = {f"p{i + 2}": rng.standard_normal((2, 3, size[0] // s, size[1] // s)).astype(np.float32)
            for i, s in enumerate(STRIDES)}
    feed["rois"] = np.array([[0, 5, 5, 305, 305], [1, 20, 0, 320, 250], [0, 3, 4, 60, 90]], np.float32)
    adopted, _ = adopt_model(multi_level_model(STRIDES))
    expected = plugin_multi_level(feed["rois"], [feed[f"p{i + 2}"] for i in range(4)], STRIDES, 7, 7, 0, 1, 56, 1.0)

    half, report = convert_precision(adopted, "fp16")
    assert report.half_nodes == 0
    assert {reason for _, _, reason in report.kept_fp32} >= {
        "mmdeploy's RoIAlign plugins are float32 (RoI corners in pixels, RoI areas)"}
    np.testing.assert_allclose(ReferenceEvaluator(half).run(None, feed)[0], expected, rtol=0, atol=5e-5)

    unmarked = onnx.ModelProto()
    unmarked.CopyFrom(adopted)
    for node in unmarked.graph.node:
        node.doc_string = ""
    with np.errstate(over="ignore", invalid="ignore"):  # the float16 overflow this shows
        wrong = ReferenceEvaluator(convert_precision(unmarked, "fp16")[0]).run(None, feed)[0]
    error = np.abs(wrong - expected).max(axis=(1, 2, 3))
    assert (error[:2] > 0.1).all() and error[2] < 0.01  # the two large RoIs pooled from level 3


def test_verify_and_bench_give_the_adopted_rois_valid_boxes(tmp_path):
    """An adopted RoIAlign's (K, 5) rows reach the standard RoiAlign's batch indices through Slice, Squeeze and Cast:
    random_feed must fill them with boxes (a batch index of 7 in a batch of 2 is refused by ONNX Runtime), as it
    does for our own RoI ops' input 1; a (K, 5) input that feeds no RoiAlign is left alone."""
    from dcn_deploy.feeds.onnx_file_inputs import roi_input_names
    from dcn_deploy.feeds.random_feeds import random_feed
    from dcn_deploy.backends.ort_runner import OrtRunner

    for model in (mmcv_roi_align_model(), multi_level_model(STRIDES)):
        adopted, _ = adopt_model(model)
        assert roi_input_names(adopted.graph) == ("rois",)
        path = tmp_path / "adopted.onnx"
        onnx.save(adopted, path)
        with OrtRunner(path) as runner:
            metas = runner.input_metadata()
            shapes = {m.name: (2, 3, 32 >> i, 32 >> i) for i, m in enumerate(m for m in metas if m.name != "rois")}
            feed = random_feed(metas, shapes, rois=roi_input_names(adopted.graph))
            batch_index = feed["rois"][:, 0]
            assert np.all((batch_index >= 0) & (batch_index < 2) & (batch_index == np.round(batch_index)))
            assert np.all(feed["rois"][:, 3] >= feed["rois"][:, 1]) and np.all(feed["rois"][:, 4] >= feed["rois"][:, 2])
            assert runner.infer(feed)  # ONNX Runtime takes them
    rows = helper.make_tensor_value_info("rows", TensorProto.FLOAT, ["K", 5])
    other = helper.make_model(helper.make_graph([helper.make_node("Relu", ["rows"], ["out"])], "g", [rows],
                                                [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["K", 5])]))
    assert roi_input_names(other.graph) == ()
