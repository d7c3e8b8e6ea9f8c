"""``dcn_deploy.onnx.adopt`` on files that mmdeploy itself writes, run in ONNX Runtime against mmcv's CPU forward.

mmdeploy exports mmcv's deformable layers through torch's TorchScript exporter with its own symbolic rewrites of mmcv's
autograd Functions (``mmdeploy/mmcv/ops/{deform_conv,modulated_deform_conv}.py``): the nodes are
``mmdeploy::MMCVDeformConv2d`` (inputs input, offset, weight; padding written as four values) and
``mmdeploy::MMCVModulatedDeformConv2d`` (input, offset, mask, weight[, bias]). The files here are written by
``mmdeploy.apis.onnx.export`` with a deploy config for the TensorRT backend, as ``mmdeploy.apis.torch2onnx`` calls it
(opset 11, names, dynamic axes), from plain modules holding mmcv's layers (no codebase such as mmdet is needed).

Skipped where mmdeploy or mmcv's compiled ops cannot be imported (neither is a dependency of dcn_deploy). Run on
2026-11-27 with mmdeploy 1.3.1 (its wheel installed with ``--no-deps``: its metadata pins protobuf<=3.20.2; its
runtime dependencies aenum, multiprocess, prettytable, six, terminaltables installed by hand) next to mmcv 2.2.0
(compiled CPU ops), mmengine 0.10.7, torch 2.13.0 (CPU), onnx 1.23.2 and onnxruntime 1.32.0. mmdeploy 1.3.1 calls
``torch.onnx.export`` without ``dynamo=``, and torch 2.13 then takes its dynamo exporter (its default), which neither
traces mmcv's compiled ops nor uses mmdeploy's symbolic rewrites; so these tests give mmdeploy ``dynamo=False`` (as a
user of mmdeploy on such a torch must).
"""
from __future__ import annotations

import functools
import inspect
import warnings
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

AXES = {"input": {0: "batch"}, "output": {0: "batch"}}


def _skip_unless(module: str, missing: str):
    try:
        return pytest.importorskip(module, reason=missing)
    except (OSError, RuntimeError, ImportError) as exc:  # installed, but broken here (compiled ops, dependencies)
        pytest.skip(f"{module.split('.')[0]} is installed but {module} cannot be imported: "
                    f"{type(exc).__name__}: {exc}"[:300])


def _mmcv_ops():
    _skip_unless("mmdeploy.apis.onnx", "mmdeploy is not installed here (it is not a dependency of dcn_deploy)")
    return _skip_unless("mmcv.ops", "mmcv is not installed here (it is not a dependency of dcn_deploy)")


@pytest.fixture
def mmdeploy_export(monkeypatch):
    """Export as mmdeploy's torch2onnx does for a TensorRT deploy config; returns the .onnx path."""
    if "dynamo" in inspect.signature(torch.onnx.export).parameters:  # where torch defaults to its dynamo exporter
        monkeypatch.setattr(torch.onnx, "export", functools.partial(torch.onnx.export, dynamo=False))

    def export(model, x, prefix, opset=11, keep_initializers_as_inputs=False, dynamic_axes=AXES):
        from mmdeploy.apis.onnx import export as mmdeploy_export
        from mmengine import Config

        onnx_config = dict(type="onnx", export_params=True, keep_initializers_as_inputs=keep_initializers_as_inputs,
                           opset_version=opset, save_file="end2end.onnx", input_names=["input"],
                           output_names=["output"], input_shape=None, dynamic_axes=dynamic_axes)
        deploy_cfg = Config(dict(onnx_config=onnx_config, backend_config=dict(type="tensorrt", common_config=dict(
            fp16_mode=False, max_workspace_size=1 << 30))))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the tracer's warnings on mmcv's shape checks
            mmdeploy_export(model, x, str(prefix), backend="tensorrt", input_names=["input"], output_names=["output"],
                            context_info={"deploy_cfg": deploy_cfg}, opset_version=opset, dynamic_axes=dynamic_axes,
                            keep_initializers_as_inputs=keep_initializers_as_inputs)
        return prefix.with_name(prefix.name + ".onnx")

    return export


def _foreign_nodes(path):
    import onnx
    from onnx import helper

    return [(n.domain, n.op_type, list(n.input), {a.name: helper.get_attribute_value(a) for a in n.attribute})
            for n in onnx.load(str(path)).graph.node if n.domain not in ("", "ai.onnx")]


def _adopted_run(path, inputs, **kwargs):
    ort = pytest.importorskip("onnxruntime")
    from dcn_deploy.onnx.adopt import adopt_file

    adopted = adopt_file(path, **kwargs)
    session = ort.InferenceSession(str(adopted.path), providers=["CPUExecutionProvider"])
    return adopted.adoption, [torch.from_numpy(session.run(None, {"input": x.numpy()})[0]) for x in inputs]


def _close(actual, expected, rtol=1e-5):
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=rtol * expected.abs().max().item())


def _randomise_offsets(*layers):
    for layer in layers:
        nn.init.normal_(layer.conv_offset.weight, std=0.5)
        nn.init.normal_(layer.conv_offset.bias, std=2.0)  # offsets of pixels: some samples leave the image


# in, out, kernel, stride, padding (pad_h != pad_w), dilation, groups, deform_groups
LAYER = dict(in_channels=4, out_channels=6, kernel_size=(3, 2), stride=(2, 1), padding=(1, 2), dilation=(1, 2),
             groups=2, deform_groups=2)


@pytest.mark.parametrize("kind", ["v1", "v2", "v2-no-bias"])
def test_mmdeploy_export_of_an_mmcv_pack_adopted_matches_mmcv(tmp_path, mmdeploy_export, kind):
    ops = _mmcv_ops()
    torch.manual_seed(0)
    if kind == "v1":
        layer = ops.DeformConv2dPack(**LAYER)
    else:
        layer = ops.ModulatedDeformConv2dPack(**LAYER, bias=kind == "v2")
    layer.eval()
    _randomise_offsets(layer)
    if kind == "v2":
        nn.init.normal_(layer.bias)
    inputs = [torch.randn(2, 4, 11, 9), torch.randn(3, 4, 11, 9)]  # the batch is a dynamic axis
    with torch.no_grad():
        expected = [layer(x) for x in inputs]
    path = mmdeploy_export(layer, inputs[0], tmp_path / kind)
    (domain, op, names, attrs), = _foreign_nodes(path)
    # what mmdeploy 1.3.1's rewrites wrote: mmcv's attribute names, (h, w) lists, and for MMCVDeformConv2d the
    # padding as each of the layer's two values twice
    assert domain == "mmdeploy" and names[0] == "input"
    if kind == "v1":
        assert op == "MMCVDeformConv2d" and len(names) == 3 and names[2] == "weight"
        assert attrs == {"stride": [2, 1], "padding": [1, 1, 2, 2], "dilation": [1, 2], "groups": 2,
                         "deform_groups": 2}
    else:
        assert op == "MMCVModulatedDeformConv2d" and names[3:] == (["weight", "bias"] if kind == "v2" else ["weight"])
        assert attrs == {"stride": [2, 1], "padding": [1, 2], "dilation": [1, 2], "groups": 2, "deform_groups": 2}
    adoption, actual = _adopted_run(path, inputs)
    (node,) = adoption.nodes
    assert (adoption.opset_before, adoption.opset_after, node.source) == (11, 19, f"mmdeploy::{op}")
    assert node.attributes == {"strides": [2, 1], "pads": [1, 2, 1, 2], "dilations": [1, 2], "group": 2,
                               "offset_group": 2}
    assert bool(node.notes) == (kind == "v1")  # the note on mmdeploy's own plugins, which read pads (1, 1)
    for got, want in zip(actual, expected):
        _close(got, want)


class _Net(nn.Module):
    def __init__(self, ops):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.v2 = ops.ModulatedDeformConv2dPack(8, 8, 3, stride=(1, 2), padding=(2, 1), dilation=(2, 1), groups=2,
                                                deform_groups=2, bias=False)
        self.v1 = ops.DeformConv2dPack(8, 4, (3, 2), stride=(2, 1), padding=(1, 2), dilation=(1, 2), groups=2,
                                       deform_groups=2)

    def forward(self, x):
        return self.v1(torch.relu(self.v2(torch.relu(self.stem(x)))))


@pytest.mark.parametrize("opset, keep_initializers_as_inputs", [(11, False), (13, True)])
def test_mmdeploy_export_of_a_network_adopted_matches_mmcv(tmp_path, mmdeploy_export, opset,
                                                           keep_initializers_as_inputs):
    """Both layers in one network, batch, height and width dynamic; also opset 13 with the weights as graph inputs
    too (torch2onnx's default where a deploy config leaves keep_initializers_as_inputs out)."""
    ops = _mmcv_ops()
    torch.manual_seed(0)
    net = _Net(ops).eval()
    _randomise_offsets(net.v2, net.v1)
    inputs = [torch.randn(2, 3, 11, 9), torch.randn(1, 3, 13, 10)]
    with torch.no_grad():
        expected = [net(x) for x in inputs]
    axes = {name: {0: "batch", 2: "height", 3: "width"} for name in ("input", "output")}
    path = mmdeploy_export(net, inputs[0], tmp_path / "net", opset, keep_initializers_as_inputs, axes)
    nodes = _foreign_nodes(path)
    assert [(domain, op, len(names)) for domain, op, names, _ in nodes] == [
        ("mmdeploy", "MMCVModulatedDeformConv2d", 4), ("mmdeploy", "MMCVDeformConv2d", 3)]
    assert [attrs["padding"] for *_, attrs in nodes] == [[2, 1], [1, 1, 2, 2]]
    adoption, actual = _adopted_run(path, inputs)
    assert (adoption.opset_before, adoption.opset_after, adoption.left) == (opset, 19, [])
    assert [n.attributes["pads"] for n in adoption.nodes] == [[2, 1, 2, 1], [1, 2, 1, 2]]
    for got, want in zip(actual, expected):
        _close(got, want)


def test_cli_adopt_of_an_mmdeploy_export(tmp_path, mmdeploy_export):
    ops = _mmcv_ops()
    pytest.importorskip("onnxruntime")
    from cli_helpers import cli_runner
    from dcn_deploy.cli import main

    torch.manual_seed(0)
    layer = ops.DeformConv2dPack(**LAYER).eval()
    _randomise_offsets(layer)
    x = torch.randn(2, 4, 11, 9)
    with torch.no_grad():
        expected = layer(x)
    path = mmdeploy_export(layer, x, tmp_path / "end2end")
    result = cli_runner().invoke(main, ["adopt", str(path)])
    assert result.exit_code == 0, result.stderr
    written = tmp_path / "end2end.adopted.onnx"
    assert f"wrote {written}" in result.stdout
    assert ("/MMCVDeformConv2d: mmdeploy::MMCVDeformConv2d -> dcn_deploy::DeformConv2d (strides=[2, 1], "
            "pads=[1, 2, 1, 2], dilations=[1, 2], group=2, offset_group=2)") in result.stdout
    assert "padding [1, 1, 2, 2] read as mmdeploy writes it, (pad_h, pad_w) = (1, 2)" in result.stdout
    import onnxruntime as ort

    session = ort.InferenceSession(str(written), providers=["CPUExecutionProvider"])
    _close(torch.from_numpy(session.run(None, {"input": x.numpy()})[0]), expected)


# ----------------------------------------------------------------------------------------------------------------
# mmdeploy's multi-class NMS (mmdeploy.mmcv.ops.nms.multiclass_nms, as its detectors' heads call it)


def _export_for(tmp_path, backend, module, inputs, names, axes):
    """The file mmdeploy writes for ``module`` under the ``backend`` rewrites (outputs dets, labels)."""
    from mmdeploy.apis.onnx import export as mmdeploy_export
    from mmengine import Config

    onnx_config = dict(type="onnx", export_params=True, keep_initializers_as_inputs=False, opset_version=11,
                       save_file="end2end.onnx", input_names=names, output_names=["dets", "labels"],
                       input_shape=None, dynamic_axes=axes)
    deploy_cfg = Config(dict(onnx_config=onnx_config, codebase_config=dict(type="mmdet", task="ObjectDetection"),
                             backend_config=dict(type=backend)))
    prefix = tmp_path / backend
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mmdeploy_export(module, inputs, str(prefix), backend=backend, input_names=names,
                        output_names=["dets", "labels"], context_info={"deploy_cfg": deploy_cfg}, opset_version=11,
                        dynamic_axes=axes)
    return prefix.with_name(prefix.name + ".onnx")


def _nms_export(tmp_path, backend, pre_top_k, keep_top_k):
    """``multiclass_nms`` alone: ``mmdeploy::TRTBatchedNMS`` for TensorRT, standard NonMaxSuppression and mmdeploy's
    own ranking for ONNX Runtime."""
    from mmdeploy.mmcv.ops.nms import multiclass_nms

    class Head(nn.Module):
        def forward(self, boxes, scores):
            return multiclass_nms(boxes, scores, max_output_boxes_per_class=200, iou_threshold=0.5,
                                  score_threshold=0.05, pre_top_k=pre_top_k, keep_top_k=keep_top_k)

    axes = {"boxes": {0: "batch", 1: "num"}, "scores": {0: "batch", 1: "num"}}
    return _export_for(tmp_path, backend, Head(), (torch.rand(2, 50, 4), torch.rand(2, 50, 3)), ["boxes", "scores"],
                       axes)


def test_mmdeploy_nms_for_tensorrt_adopted_matches_its_onnxruntime_export(tmp_path, mmdeploy_export):
    """mmdeploy's TensorRT file (TRTBatchedNMS, pre_top_k 5000 over 50-90 boxes: every box a candidate), adopted,
    against mmdeploy's own ONNX Runtime file of the same call (its ranking of ONNX NMS's selections) and against
    the NumPy model of the plugin (tests/test_adopt_nms.py), on random boxes at two batch sizes and box counts."""
    _skip_unless("mmdeploy.mmcv.ops.nms", "mmdeploy is not installed here (it is not a dependency of dcn_deploy)")
    ort = pytest.importorskip("onnxruntime")
    import numpy as np
    from dcn_deploy.onnx.adopt import adopt_file
    from test_adopt_nms import plugin_batched_nms

    theirs = _nms_export(tmp_path, "tensorrt", 5000, 20)
    assert [n[1] for n in _foreign_nodes(theirs)] == ["TRTBatchedNMS"]
    adopted = adopt_file(theirs)
    assert [n.source for n in adopted.adoption.nodes] == ["mmdeploy::TRTBatchedNMS"] and not adopted.adoption.left
    ours = ort.InferenceSession(str(adopted.path), providers=["CPUExecutionProvider"])
    mmdeploy_ort = ort.InferenceSession(str(_nms_export(tmp_path, "onnxruntime", -1, 20)),
                                        providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(3)
    for images, count in ((2, 50), (3, 90)):
        corner = rng.uniform(0, 40, (images, count, 2))
        boxes = np.concatenate([corner, corner + rng.uniform(2, 25, (images, count, 2))], axis=2).astype(np.float32)
        scores = rng.random((images, count, 3)).astype(np.float32)
        feed = {"boxes": boxes, "scores": scores}
        dets, labels = ours.run(None, feed)
        expected = plugin_batched_nms(boxes[:, :, None], scores, num_classes=3, score_threshold=0.05,
                                      iou_threshold=0.5, topk=5000, keep_topk=20)
        np.testing.assert_array_equal(dets, expected[0])
        np.testing.assert_array_equal(labels, expected[1])
        assert labels.dtype == np.int64 and dets.shape == (images, 20, 5)
        their_dets, their_labels = mmdeploy_ort.run(None, feed)
        valid = labels >= 0
        assert valid.sum() == (their_dets[..., 4] > 0).sum() > images * 10
        np.testing.assert_array_equal(dets[valid], their_dets[:, :20][valid])
        np.testing.assert_array_equal(labels[valid], their_labels[:, :20][valid])


def test_mmdeploy_detector_with_dcn_and_nms_adopted_matches_mmcv_and_the_plugin(tmp_path, mmdeploy_export):
    """A small detector as mmdeploy exports one for TensorRT: mmcv's modulated deformable convolution, box and class
    heads, mmdeploy's multiclass_nms. Adopted, the whole file runs in stock ONNX Runtime; its detections are those of
    mmcv's forward passed through the NumPy model of mmdeploy's plugin (tests/test_adopt_nms.py)."""
    ops = _mmcv_ops()
    ort = pytest.importorskip("onnxruntime")
    import numpy as np
    from dcn_deploy.onnx.adopt import adopt_file
    from mmdeploy.mmcv.ops.nms import multiclass_nms
    from test_adopt_nms import plugin_batched_nms

    class Detector(nn.Module):
        def __init__(self):
            super().__init__()
            self.dcn = ops.ModulatedDeformConv2dPack(3, 8, 3, padding=1)
            self.box, self.cls = nn.Conv2d(8, 4, 1), nn.Conv2d(8, 3, 1)

        def candidates(self, image):
            features = torch.relu(self.dcn(image))
            n = image.shape[0]
            raw = self.box(features).flatten(2).transpose(1, 2)  # (N, H*W, 4)
            corner = raw[..., :2] * 30
            boxes = torch.cat([corner, corner + nn.functional.softplus(raw[..., 2:]) * 6], dim=2)
            return boxes, torch.sigmoid(self.cls(features)).flatten(2).transpose(1, 2).reshape(n, -1, 3)

        def forward(self, image):
            return multiclass_nms(*self.candidates(image), max_output_boxes_per_class=200, iou_threshold=0.5,
                                  score_threshold=0.05, pre_top_k=60, keep_top_k=25)

    torch.manual_seed(2)
    detector = Detector().eval()
    _randomise_offsets(detector.dcn)
    image = torch.randn(2, 3, 9, 11)
    path = _export_for(tmp_path, "tensorrt", detector, (image,), ["image"], {"image": {0: "batch"}})
    assert sorted(n[1] for n in _foreign_nodes(path)) == ["MMCVModulatedDeformConv2d", "TRTBatchedNMS"]
    adopted = adopt_file(path)
    assert [n.target for n in adopted.adoption.nodes] == ["dcn_deploy::DeformConv2d", "ONNX NonMaxSuppression + TopK"]
    session = ort.InferenceSession(str(adopted.path), providers=["CPUExecutionProvider"])
    for batch in (2, 3):
        image = torch.randn(batch, 3, 9, 11)
        dets, labels = session.run(None, {"image": image.numpy()})
        with torch.no_grad():
            boxes, scores = (t.numpy() for t in detector.candidates(image))
        expected = plugin_batched_nms(boxes[:, :, None], scores, num_classes=3, score_threshold=0.05,
                                      iou_threshold=0.5, topk=60, keep_topk=25)
        np.testing.assert_array_equal(labels, expected[1])
        np.testing.assert_allclose(dets, expected[0], rtol=1e-5, atol=1e-5)
        assert (labels >= 0).sum() > batch * 10


def _mmdeploy_mmdet_module(relative: str):
    """A module of ``mmdeploy.codebase.mmdet`` (the autograd Functions its TensorRT rewrites of mmdet call): imported
    where mmdet can be imported, else loaded from its file (importing the package imports mmdet, which is not
    installed next to mmcv 2.2: mmdet 3.3 pins mmcv < 2.2). Not a copy where the real one imports: a copy registers
    its rewrites again, and for the rest of the session mmdeploy's rewrites of mmdet call the copy's Functions
    (tests/test_adopt_mmdet.py gives the real ones computing forwards)."""
    import importlib
    import importlib.util

    try:
        return importlib.import_module("mmdeploy.codebase.mmdet." + relative.removesuffix(".py").replace("/", "."))
    except (ImportError, AssertionError, OSError, RuntimeError):  # no mmdet here, or one that refuses this mmcv
        pass
    spec = importlib.util.find_spec("mmdeploy")
    path = Path(spec.submodule_search_locations[0]) / "codebase/mmdet" / relative
    module_spec = importlib.util.spec_from_file_location("mmdeploy_" + path.stem, path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def _mmdeploy_multi_level_roi_align():
    """mmdeploy's ``MultiLevelRoiAlign`` (what its TensorRT rewrite of mmdet's SingleRoIExtractor calls)."""
    return _mmdeploy_mmdet_module("models/roi_heads/single_level_roi_extractor.py").MultiLevelRoiAlign


def test_mmdeploy_multi_level_roi_align_adopted_matches_mmcv_and_mmdet_levels(tmp_path, mmdeploy_export):
    """The node mmdeploy writes for a Faster R-CNN's RoI extractor (4 levels, strides 4-32, 7x7, adaptive sampling,
    aligned, average), adopted, against mmcv's own CPU roi_align on the level mmdet's map_roi_levels picks."""
    ops = _mmcv_ops()
    ort = pytest.importorskip("onnxruntime")
    from dcn_deploy.onnx.adopt import adopt_file

    multi_level_roi_align = _mmdeploy_multi_level_roi_align()
    strides = [4.0, 8.0, 16.0, 32.0]

    class Extractor(nn.Module):
        def forward(self, rois, p2, p3, p4, p5):
            return multi_level_roi_align.apply(p2, p3, p4, p5, rois, (7, 7), "avg", 0, 1.0, 56, strides, True)

    generator = torch.Generator().manual_seed(5)
    feats = [torch.randn(2, 6, 256 // int(s), 320 // int(s), generator=generator) for s in strides]
    centre = torch.rand(120, 2, generator=generator) * torch.tensor([320.0, 256.0])
    extent = torch.exp(torch.rand(120, 2, generator=generator) * 6.5)  # 1 to 665 pixels
    rois = torch.cat([torch.randint(0, 2, (120, 1), generator=generator).float(), centre - extent / 2,
                      centre + extent / 2], dim=1)
    path = tmp_path / "extractor.onnx"
    names = ["rois", "p2", "p3", "p4", "p5"]
    torch.onnx.export(Extractor(), (rois, *feats), str(path), opset_version=11, input_names=names,
                      output_names=["bbox_feats"], dynamic_axes={"rois": {0: "K"}})
    assert [n[1] for n in _foreign_nodes(path)] == ["MMCVMultiLevelRoiAlign"]
    adopted = adopt_file(path)
    session = ort.InferenceSession(str(adopted.path), providers=["CPUExecutionProvider"])
    got = torch.from_numpy(session.run(None, dict(zip(names, [t.numpy() for t in (rois, *feats)])))[0])

    scale = torch.sqrt((rois[:, 3] - rois[:, 1]) * (rois[:, 4] - rois[:, 2]))  # mmdet's map_roi_levels
    levels = torch.floor(torch.log2(scale / 56 + 1e-6)).clamp(min=0, max=3).long()
    assert set(levels.tolist()) == {0, 1, 2, 3}
    expected = torch.zeros_like(got)
    for level, stride in enumerate(strides):
        chosen = levels == level
        expected[chosen] = ops.roi_align(feats[level], rois[chosen], (7, 7), 1 / stride, 0, "avg", True)
    _close(got, expected, rtol=1e-4)


def test_mmdeploy_head_ops_adopted_match_their_torch_forward(tmp_path, mmdeploy_export):
    """The anchors and top-k gather of a dense head as mmdeploy writes them for TensorRT (GridPriorsTRT for a
    dynamic feature size, GatherTopk), adopted, against the torch forward of mmdeploy's own Functions, at two feature
    sizes and batches."""
    _skip_unless("mmdeploy.core", "mmdeploy is not installed here (it is not a dependency of dcn_deploy)")
    ort = pytest.importorskip("onnxruntime")
    from dcn_deploy.onnx.adopt import adopt_file

    priors = _mmdeploy_mmdet_module("models/task_modules/prior_generators/anchor.py").GridPriorsTRTOp
    gather = _mmdeploy_mmdet_module("deploy/utils.py").TRTGatherTopk
    base = torch.tensor([[-8.5, -8.0, 8.5, 8.0], [-16.25, -4.0, 16.25, 4.0], [-3.0, -11.0, 3.0, 11.0]])

    def anchors_of(height, width):
        priors.output = None  # as mmdeploy's rewrite does: the forward computes them once, the export records it
        return priors.forward(None, base, height, width, 8, 16)

    class Head(nn.Module):
        def forward(self, feat, scores):
            priors.output = anchors_of(feat.shape[2], feat.shape[3]).data
            anchors = priors.apply(base, feat.shape[2], feat.shape[3], 8, 16)
            _, top = scores.max(dim=2)[0].topk(6, dim=1)  # the best boxes by their best class, as mmdeploy's heads
            return anchors, gather.apply(scores, top)

    path = tmp_path / "head.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Head(), (torch.rand(1, 3, 5, 7), torch.rand(2, 30, 4)), str(path), opset_version=11,
                          input_names=["feat", "scores"], output_names=["anchors", "top"],
                          dynamic_axes={"feat": {2: "h", 3: "w"}, "scores": {0: "n", 1: "boxes"}})
    assert sorted(n[1] for n in _foreign_nodes(path)) == ["GatherTopk", "GridPriorsTRT"]
    session = ort.InferenceSession(str(adopt_file(path).path), providers=["CPUExecutionProvider"])
    for (height, width), batch in (((5, 7), 2), ((9, 4), 3)):
        scores = torch.rand(batch, 40, 4)
        anchors, top = session.run(None, {"feat": torch.rand(1, 3, height, width).numpy(), "scores": scores.numpy()})
        assert torch.equal(torch.from_numpy(anchors), anchors_of(height, width))
        _, indices = scores.max(dim=2)[0].topk(6, dim=1)
        assert torch.equal(torch.from_numpy(top), scores[torch.arange(batch)[:, None], indices])


def test_mmdeploy_group_norm_adopted_matches_torch(tmp_path, mmdeploy_export):
    """mmdeploy writes GroupNorm (FCOS's and VFNet's GN heads) for TensorRT as mmdeploy::TRTInstanceNormalization on
    the (N, groups, -1) reshape; adopted as the standard InstanceNormalization, the file equals torch's forward."""
    ops = _mmcv_ops()
    torch.manual_seed(0)

    class Head(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = ops.ModulatedDeformConv2dPack(3, 8, 3, padding=1)
            self.gn = nn.GroupNorm(4, 8)

        def forward(self, x):
            return torch.relu(self.gn(self.conv(x)))

    head = Head().eval()
    _randomise_offsets(head.conv)
    nn.init.normal_(head.gn.weight)
    nn.init.normal_(head.gn.bias)
    inputs = [torch.randn(2, 3, 9, 11), torch.randn(3, 3, 9, 11)]
    with torch.no_grad():
        expected = [head(x) for x in inputs]
    path = mmdeploy_export(head, inputs[0], tmp_path / "gn")
    assert sorted(n[1] for n in _foreign_nodes(path)) == ["MMCVModulatedDeformConv2d", "TRTInstanceNormalization"]
    adoption, actual = _adopted_run(path, inputs)
    assert not adoption.left and [n.target for n in adoption.nodes] == ["dcn_deploy::DeformConv2d",
                                                                         "ONNX InstanceNormalization"]
    for got, want in zip(actual, expected):
        _close(got, want)
