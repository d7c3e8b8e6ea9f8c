"""dcn_deploy.onnx.adopt and ``dcn-deploy adopt``: other exporters' deformable nodes rewritten as ours.

The foreign nodes are built by hand with the op names, input orders and attributes that mmcv's symbolics and
mmdeploy's rewrites write (mmcv ``mmcv/ops/{deform_conv,modulated_deform_conv,deform_roi_pool}.py``, mmdeploy
``mmdeploy/mmcv/ops/{deform_conv,modulated_deform_conv}.py``), and the ONNX standard's ``DeformConv``. The adopted
file runs in ONNX Runtime (our function bodies) and is compared with references that know nothing of the rewrite:
the per-sample float64 definition (tests/ort_reference.naive_deform_conv2d) called with the PyTorch layer's
arguments, the PyTorch RoI op, and ONNX Runtime's own run of the standard node before the rewrite.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

ort = pytest.importorskip("onnxruntime")

from cli_helpers import cli_runner  # noqa: E402
from dcn_deploy.cli import main  # noqa: E402
from dcn_deploy.onnx.adopt import AdoptionError, adopt_file, adopt_model, foreign_nodes  # noqa: E402
from ort_reference import naive_deform_conv2d  # noqa: E402
from test_trt_pure import dcn_model, mmdeploy_dcn_model, run_ort  # noqa: E402


ROOT = Path(__file__).resolve().parent.parent


def _conv_out(size, k, s, p, d):
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


class ConvCase:
    """Random tensors for one deformable convolution in the PyTorch layer's terms (symmetric padding (ph, pw))."""

    def __init__(self, seed=0, n=2, c=4, h=7, w=5, oc=6, kernel=(3, 2), stride=(2, 1), padding=(1, 2),
                 dilation=(1, 2), groups=2, offset_groups=2, offset_scale=3.0):
        rng = np.random.default_rng(seed)
        self.kernel, self.stride, self.padding, self.dilation = kernel, stride, padding, dilation
        self.groups, self.offset_groups = groups, offset_groups
        oh, ow = (_conv_out(size, k, s, p, d) for size, k, s, p, d in zip((h, w), kernel, stride, padding, dilation))
        points = offset_groups * kernel[0] * kernel[1]
        self.x = rng.standard_normal((n, c, h, w)).astype(np.float32)
        # large enough that many samples land off the image, some far off
        self.offset = (rng.standard_normal((n, 2 * points, oh, ow)) * offset_scale).astype(np.float32)
        self.mask = rng.uniform(-0.5, 1.5, (n, points, oh, ow)).astype(np.float32)
        self.weight = rng.standard_normal((oc, c // groups, *kernel)).astype(np.float32)
        self.bias = rng.standard_normal(oc).astype(np.float32)
        self.out_shape = [n, oc, oh, ow]

    def expected(self, bias=True, mask=True):
        return naive_deform_conv2d(self.x, self.offset, self.weight, self.bias if bias else None, self.stride,
                                   self.padding, self.dilation, self.mask if mask else None)


def _model(nodes, inputs, outputs, initializers=(), opset=11, domains=("mmdeploy",)):
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]
                              + [helper.make_opsetid(d, 1) for d in domains])
    model.ir_version = 8
    return model


def _tensor(name, array):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, list(array.shape))


def _run(model, feed):
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feed)[0]


def _assert_close(actual, expected, rtol=1e-5):
    scale = max(1.0, float(np.abs(expected).max()))
    np.testing.assert_allclose(actual, expected, rtol=0, atol=rtol * scale)


def _modulated_model(case: ConvCase, domain: str, bias: bool):
    inputs = ["x", "offset", "mask", "weight"] + (["bias"] if bias else [])
    node = helper.make_node("MMCVModulatedDeformConv2d", inputs, ["y"], domain=domain, name="dcn",
                            stride=list(case.stride), padding=list(case.padding), dilation=list(case.dilation),
                            groups=case.groups, deform_groups=case.offset_groups)
    inits = [numpy_helper.from_array(case.weight, "weight")]
    if bias:
        inits.append(numpy_helper.from_array(case.bias, "bias"))
    return _model([node], [_tensor("x", case.x), _tensor("offset", case.offset), _tensor("mask", case.mask)],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, case.out_shape)], inits, domains=(domain,))


# ----------------------------------------------------------------------------------------------------------------
# Deformable convolutions


@pytest.mark.parametrize("domain", ["mmcv", "mmdeploy"])
@pytest.mark.parametrize("bias", [True, False])
def test_modulated_deform_conv_matches_the_definition(domain, bias):
    case = ConvCase(seed=1)
    adopted, adoption = adopt_model(_modulated_model(case, domain, bias))
    assert [n.target for n in adoption.nodes] == ["dcn_deploy::DeformConv2d"]
    assert (adoption.opset_before, adoption.opset_after) == (11, 19)
    assert domain not in {imp.domain for imp in adopted.opset_import}
    node = next(n for n in adopted.graph.node if n.domain == "dcn_deploy")
    assert node.name == "dcn" and len(node.input) == 5  # a zero bias fills the hole before the mask
    got = _run(adopted, {"x": case.x, "offset": case.offset, "mask": case.mask})
    _assert_close(got, case.expected(bias=bias))


@pytest.mark.parametrize("kw", [
    dict(h=1, w=6, kernel=(1, 3), stride=(1, 2), padding=(0, 1), dilation=(1, 1), groups=1, offset_groups=1),
    dict(h=5, w=1, kernel=(3, 1), stride=(1, 1), padding=(2, 0), dilation=(2, 1), groups=4, offset_groups=4, c=4, oc=4),
    dict(n=3, h=6, w=7, kernel=(3, 3), stride=(1, 2), padding=(1, 1), dilation=(1, 1), groups=1, offset_groups=2,
         offset_scale=12.0),
])
def test_modulated_deform_conv_edge_shapes(kw):
    case = ConvCase(seed=2, **kw)
    adopted, _ = adopt_model(_modulated_model(case, "mmdeploy", True))
    _assert_close(_run(adopted, {"x": case.x, "offset": case.offset, "mask": case.mask}), case.expected())


def _deform_conv_model(case: ConvCase, domain: str, padding):
    node = helper.make_node("MMCVDeformConv2d", ["x", "offset", "weight"], ["y"], domain=domain, name="dcn_v1",
                            stride=list(case.stride), padding=list(padding), dilation=list(case.dilation),
                            groups=case.groups, deform_groups=case.offset_groups)
    if domain == "mmcv":  # mmcv's own symbolic also writes these two
        node.attribute.extend([helper.make_attribute("bias", 0), helper.make_attribute("im2col_step", 32)])
    return _model([node], [_tensor("x", case.x), _tensor("offset", case.offset)],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, case.out_shape)],
                  [numpy_helper.from_array(case.weight, "weight")], domains=(domain,))


def test_deform_conv_reads_mmcvs_and_mmdeploys_padding_as_the_layer_had_it():
    case = ConvCase(seed=3, padding=(1, 2))
    expected = case.expected(bias=False, mask=False)
    for domain, padding in (("mmcv", [1, 2]), ("mmdeploy", [1, 1, 2, 2])):  # mmdeploy: each value twice
        adopted, adoption = adopt_model(_deform_conv_model(case, domain, padding))
        assert adoption.nodes[0].attributes["pads"] == [1, 2, 1, 2]
        node = next(n for n in adopted.graph.node if n.domain == "dcn_deploy")
        assert list(node.input) == ["x", "weight", "offset"]
        _assert_close(_run(adopted, {"x": case.x, "offset": case.offset}), expected)
    assert "lose the width padding" in adoption.nodes[0].notes[0]  # the mmdeploy file's note


def test_the_older_deformable_groups_spelling_is_read():
    case = ConvCase(seed=16)
    model = _modulated_model(case, "mmdeploy", True)
    next(a for a in model.graph.node[0].attribute if a.name == "deform_groups").name = "deformable_groups"
    adopted, adoption = adopt_model(model)
    assert adoption.nodes[0].attributes["offset_group"] == 2
    _assert_close(_run(adopted, {"x": case.x, "offset": case.offset, "mask": case.mask}), case.expected())


@pytest.mark.parametrize("padding, words", [([1, 2, 1, 2], r"neither \(pad_h, pad_w\) nor mmdeploy.s"),
                                            ([1, 2, 3], "neither")])
def test_deform_conv_padding_of_no_known_form_is_refused(padding, words):
    case = ConvCase(seed=4)
    with pytest.raises(AdoptionError, match=r"node 'dcn_v1' \(mmdeploy::MMCVDeformConv2d\).*" + words):
        adopt_model(_deform_conv_model(case, "mmdeploy", padding))


def test_standard_deform_conv_with_a_bias_hole_and_asymmetric_pads():
    """The standard node (mask without bias, pads top != bottom) before and after, both in ONNX Runtime."""
    case = ConvCase(seed=5, padding=(1, 1))
    pads = [0, 1, 2, 1]
    oh = (case.x.shape[2] + 2 - case.dilation[0] * (case.kernel[0] - 1) - 1) // case.stride[0] + 1
    ow = (case.x.shape[3] + 2 - case.dilation[1] * (case.kernel[1] - 1) - 1) // case.stride[1] + 1
    rng = np.random.default_rng(6)
    points = case.offset_groups * case.kernel[0] * case.kernel[1]
    offset = (rng.standard_normal((2, 2 * points, oh, ow)) * 3).astype(np.float32)
    mask = rng.uniform(0, 1, (2, points, oh, ow)).astype(np.float32)
    node = helper.make_node("DeformConv", ["x", "weight", "offset", "", "mask"], ["y"], name="std",
                            kernel_shape=list(case.kernel), strides=list(case.stride), pads=pads,
                            dilations=list(case.dilation), group=case.groups, offset_group=case.offset_groups)
    source = _model([node], [_tensor("x", case.x), _tensor("offset", offset), _tensor("mask", mask)],
                    [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 6, oh, ow])],
                    [numpy_helper.from_array(case.weight, "weight")], opset=19, domains=())
    feed = {"x": case.x, "offset": offset, "mask": mask}
    before = _run(source, feed)
    adopted, adoption = adopt_model(source)
    assert adoption.nodes[0].source == "ai.onnx::DeformConv" and adoption.opset_after == 19
    assert adoption.nodes[0].attributes["pads"] == pads
    assert foreign_nodes(source) and not foreign_nodes(adopted)
    np.testing.assert_array_equal(_run(adopted, feed), before)
    assert len(source.graph.node) == 1 and source.graph.node[0].op_type == "DeformConv"  # the source is untouched


def _save_contradicting_source(source: Path) -> Path:
    """A DeformConv with offset_group=3 over 4 channels: onnx's checker passes it, our schema's inference does not."""
    node = helper.make_node("DeformConv", ["x", "w", "offset"], ["y"], name="bad", pads=[1, 1, 1, 1], offset_group=3)
    onnx.save(_model([node], [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8]),
                              helper.make_tensor_value_info("offset", TensorProto.FLOAT, [1, 54, 8, 8])],
                     [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 6, 8, 8])],
                     [numpy_helper.from_array(np.ones((6, 4, 3, 3), np.float32), "w")], opset=19, domains=()),
              str(source))
    return source


def test_a_source_node_whose_shapes_contradict_its_attributes_is_the_sources_fault(tmp_path):
    """onnx's checker passes a DeformConv with offset_group=3 over 4 channels; our schema's inference does not. That
    is the source's error (ONNX Runtime refuses the node when it runs), not "a bug in dcn_deploy's adoption"."""
    source = _save_contradicting_source(tmp_path / "bad.onnx")
    result = cli_runner().invoke(main, ["adopt", str(source)])
    assert result.exit_code == 2, result.stderr
    assert "inputs do not fit its attributes" in result.stderr and "divisible by offset_group (3)" in result.stderr
    assert "bug in dcn_deploy" not in result.stderr and "fix or re-export the source" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.onnx"]


@pytest.mark.parametrize("attributes", [{}, {"strides": [1, 1, 1]}], ids=["2-D looking", "3 strides"])
def test_three_d_deform_conv_is_refused(attributes):
    """Told by its attributes, or by the ranks its graph declares (no 3-value attribute, the weight a graph input)."""
    node = helper.make_node("DeformConv", ["x", "w", "offset"], ["y"], name="conv3d", **attributes)
    model = _model([node], [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 1, 2, 2, 2])
                            for n in ("x", "w", "offset")],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 1, 1, 1])], opset=19, domains=())
    with pytest.raises(AdoptionError, match="node 'conv3d'.*(its X has rank 5|strides has 3 values).*2-D only"):
        adopt_model(model)


def test_mmcv_deform_conv_with_bias_set_is_refused():
    case = ConvCase(seed=7)
    model = _deform_conv_model(case, "mmcv", [1, 2])
    next(a for a in model.graph.node[0].attribute if a.name == "bias").i = 1
    with pytest.raises(AdoptionError, match="bias=1"):
        adopt_model(model)


# ----------------------------------------------------------------------------------------------------------------
# Deformable RoI pooling


def _roi_case(seed=8, k=5):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, 3, 9, 11)).astype(np.float32)
    x1 = rng.uniform(-8, 30, k)
    y1 = rng.uniform(-8, 25, k)
    rois = np.stack([rng.integers(0, 2, k), x1, y1, x1 + rng.uniform(0, 40, k), y1 + rng.uniform(0, 30, k)], 1)
    offset = rng.standard_normal((k, 2, 3, 2)).astype(np.float32)
    return x, rois.astype(np.float32), offset


def _roi_model(offset_input, sampling_ratio, initializers=()):
    node = helper.make_node("MMCVDeformRoIPool", ["x", "rois", offset_input], ["y"], domain="mmcv", name="roi",
                            pooled_height=3, pooled_width=2, spatial_scale=0.5, sampling_ratio=float(sampling_ratio),
                            gamma=0.2)
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 9, 11]),
              helper.make_tensor_value_info("rois", TensorProto.FLOAT, ["k", 5])]
    if offset_input == "offset":
        inputs.append(helper.make_tensor_value_info("offset", TensorProto.FLOAT, ["k", 2, 3, 2]))
    return _model([node], inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["k", 3, 3, 2])],
                  initializers, domains=("mmcv",))


def _torch_roi_pool(x, rois, offset, sampling_ratio):
    torch = pytest.importorskip("torch")
    from dcn_deploy.ops.roi_pool import deform_roi_pool

    return deform_roi_pool(torch.from_numpy(x), torch.from_numpy(rois),
                           None if offset is None else torch.from_numpy(offset), (3, 2), 0.5, sampling_ratio,
                           0.2).numpy()


def test_roi_pool_matches_the_pytorch_op():
    x, rois, offset = _roi_case()
    adopted, adoption = adopt_model(_roi_model("offset", 2))
    assert adoption.nodes[0].attributes == {"pooled_height": 3, "pooled_width": 2, "spatial_scale": 0.5,
                                            "sampling_ratio": 2, "gamma": pytest.approx(0.2)}
    _assert_close(_run(adopted, {"x": x, "rois": rois, "offset": offset}), _torch_roi_pool(x, rois, offset, 2))


@pytest.mark.parametrize("form", ["left out", "empty initializer"])
def test_roi_pool_without_offset_pools_as_with_none(form):
    x, rois, _ = _roi_case(seed=9)
    inits = [numpy_helper.from_array(np.zeros((0,), np.float32), "no_offset")] if form != "left out" else []
    model = _roi_model("" if form == "left out" else "no_offset", 2, inits)
    adopted, _ = adopt_model(model)
    _assert_close(_run(adopted, {"x": x, "rois": rois}), _torch_roi_pool(x, rois, None, 2))


def test_a_sampling_ratio_for_no_adaptive_node_is_refused():
    case = ConvCase(seed=15)
    for model in (_roi_model("offset", 2), _modulated_model(case, "mmcv", True)):
        with pytest.raises(AdoptionError, match="roi_sampling_ratio .* this model has none: drop it"):
            adopt_model(model, roi_sampling_ratio=2)


def test_roi_pool_adaptive_sampling_needs_a_fixed_ratio():
    x, rois, offset = _roi_case(seed=10)
    with pytest.raises(AdoptionError, match=r"node 'roi' \(mmcv::MMCVDeformRoIPool\) samples adaptively.*"
                                            r"roi_sampling_ratio=N \(CLI: --roi-sampling-ratio N\)"):
        adopt_model(_roi_model("offset", 0))
    adopted, adoption = adopt_model(_roi_model("offset", 0), roi_sampling_ratio=3)
    assert "replaced by 3" in adoption.nodes[0].notes[0]
    _assert_close(_run(adopted, {"x": x, "rois": rois, "offset": offset}), _torch_roi_pool(x, rois, offset, 3))


# ----------------------------------------------------------------------------------------------------------------
# The model around the nodes


def test_an_mmdeploy_export_becomes_our_export_of_the_same_model():
    """A whole network (convolutions, the offset and mask branches, residual, softmax) exported by mmdeploy at opset
    11 computes, once adopted, what our own export of it computes (the file TensorRT tests build too)."""
    adopted, adoption = adopt_model(mmdeploy_dcn_model(seed=3))
    assert [(n.name, n.source) for n in adoption.nodes] == [("dcn1", "mmdeploy::MMCVModulatedDeformConv2d")]
    assert adoption.left == [] and {imp.domain for imp in adopted.opset_import} == {"", "dcn_deploy"}
    x = np.random.default_rng(4).standard_normal((3, 4, 8, 8)).astype(np.float32)
    ours, theirs = run_ort(dcn_model(19, seed=3), {"x": x}), run_ort(adopted, {"x": x})
    for name in ("prob", "s1"):
        _assert_close(theirs[name], ours[name])


def test_other_foreign_ops_are_left_with_their_import():
    case = ConvCase(seed=11)
    model = _modulated_model(case, "mmdeploy", True)
    model.graph.node[0].output[0] = "features"
    model.graph.node.append(helper.make_node("TRTBatchedRotatedNMS", ["features"], ["y"], domain="mmdeploy",
                                             name="nms"))
    adopted, adoption = adopt_model(model)
    assert adoption.left == ["nms (mmdeploy::TRTBatchedRotatedNMS)"]
    assert "mmdeploy" in {imp.domain for imp in adopted.opset_import}
    assert [n.op_type for n in adopted.graph.node][-1] == "TRTBatchedRotatedNMS"


def test_nodes_inside_subgraphs_are_rewritten():
    case = ConvCase(seed=12)
    inner = _modulated_model(case, "mmdeploy", True).graph
    inner_graph = helper.make_graph(list(inner.node), "then", [], list(inner.output), list(inner.initializer))
    cond = helper.make_tensor_value_info("cond", TensorProto.BOOL, [])
    node = helper.make_node("If", ["cond"], ["y"], then_branch=inner_graph, else_branch=inner_graph, name="if")
    model = _model([node], [cond, _tensor("x", case.x), _tensor("offset", case.offset), _tensor("mask", case.mask)],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, case.out_shape)])
    adopted, adoption = adopt_model(model)
    assert len(adoption.nodes) == 2  # one per branch
    got = _run(adopted, {"cond": np.array(True), "x": case.x, "offset": case.offset, "mask": case.mask})
    _assert_close(got, case.expected())


def test_a_model_holding_our_ops_and_their_bodies_adopts_its_other_foreign_nodes():
    """Our ops' function bodies (standard DeformConv inside) are not local functions holding foreign nodes: a model
    that already holds our node (adopted, or exported by dcn_deploy) and an mmcv node besides adopts the latter."""
    case = ConvCase(seed=16)
    model, _ = adopt_model(_modulated_model(case, "mmcv", True))
    assert [f.domain for f in model.functions] == ["dcn_deploy"]
    dcn = helper.make_node("MMCVModulatedDeformConv2d", ["x", "offset", "mask", "weight", "bias"], ["y2"],
                           domain="mmcv", name="dcn2", stride=list(case.stride), padding=list(case.padding),
                           dilation=list(case.dilation), groups=case.groups, deform_groups=case.offset_groups)
    model.graph.node.append(dcn)
    model.graph.output.append(helper.make_tensor_value_info("y2", TensorProto.FLOAT, case.out_shape))
    model.opset_import.append(helper.make_opsetid("mmcv", 1))
    assert [n.name for n in foreign_nodes(model)] == ["dcn2"]
    adopted, adoption = adopt_model(model)
    assert [n.name for n in adoption.nodes] == ["dcn2"] and len(adopted.functions) == 1
    session = ort.InferenceSession(adopted.SerializeToString(), providers=["CPUExecutionProvider"])
    for got in session.run(None, {"x": case.x, "offset": case.offset, "mask": case.mask}):
        _assert_close(got, case.expected())


def test_a_file_whose_nodes_are_inside_local_functions_is_inlined_then_adopted(tmp_path):
    """torch's export_modules_as_functions puts mmcv's node in a local function and only a call to it in the graph
    (as a real mmcv export does: tests/test_convert_mmcv.py). The call is inlined, then the node adopted; the
    function and its domain's import go."""
    case = ConvCase(seed=15)
    source = _modulated_model(case, "mmcv", True)
    dcn = source.graph.node[0]
    block = helper.make_function("mmcv.ops.modulated_deform_conv", "ModulatedDeformConv2dPack", list(dcn.input),
                                 ["y"], [dcn], opset_imports=[helper.make_opsetid("mmcv", 1)])
    call = helper.make_node("ModulatedDeformConv2dPack", list(dcn.input), ["y"], domain=block.domain, name="call")
    del source.graph.node[:]
    source.graph.node.append(call)
    source.functions.append(block)
    source.opset_import.append(helper.make_opsetid(block.domain, 1))
    path = tmp_path / "fn.onnx"
    onnx.save(source, str(path))
    assert [n.op_type for n in foreign_nodes(source)] == ["MMCVModulatedDeformConv2d"]
    inspect = cli_runner().invoke(main, ["inspect", str(path)])
    assert "deformable nodes: 0 in the graph" in inspect.stdout
    assert f"inside local functions: 1 mmcv::MMCVModulatedDeformConv2d; dcn-deploy adopt {path}" in inspect.stdout
    info = json.loads(cli_runner().invoke(main, ["inspect", str(path), "--json"]).stdout)
    assert info["foreign_in_functions"] == {"mmcv::MMCVModulatedDeformConv2d": 1} and info["foreign_other"] == {}
    result = cli_runner().invoke(main, ["adopt", str(path)])
    assert result.exit_code == 0, result.output + result.stderr
    assert "inlined the local function(s) holding them: mmcv.ops.modulated_deform_conv::ModulatedDeformConv2dPack" \
        in result.stdout
    adopted = onnx.load(str(tmp_path / "fn.adopted.onnx"))
    assert [f.domain for f in adopted.functions] == ["dcn_deploy"]
    assert {imp.domain for imp in adopted.opset_import} == {"", "dcn_deploy"}
    feed = {"x": case.x, "offset": case.offset, "mask": case.mask}
    _assert_close(_run(adopted, feed), case.expected())


# ----------------------------------------------------------------------------------------------------------------
# The file and the CLI


@pytest.fixture
def mmdeploy_file(tmp_path) -> Path:
    path = tmp_path / "end2end.onnx"
    onnx.save(_modulated_model(ConvCase(seed=14), "mmdeploy", True), str(path))
    return path


def test_cli_adopt_writes_a_checked_file_beside_the_source(mmdeploy_file):
    result = cli_runner().invoke(main, ["adopt", str(mmdeploy_file)])
    assert result.exit_code == 0, result.stderr
    written = mmdeploy_file.with_name("end2end.adopted.onnx")
    assert f"wrote {written}" in result.stdout
    assert "dcn: mmdeploy::MMCVModulatedDeformConv2d -> dcn_deploy::DeformConv2d" in result.stdout
    onnx.checker.check_model(str(written), full_check=True)
    case = ConvCase(seed=14)
    _assert_close(_run(onnx.load(str(written)), {"x": case.x, "offset": case.offset, "mask": case.mask}),
                  case.expected())


def test_cli_adopt_json(mmdeploy_file, tmp_path):
    out = tmp_path / "ours.onnx"
    result = cli_runner().invoke(main, ["adopt", str(mmdeploy_file), "-o", str(out), "--json"])
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["path"] == str(out) and report["nodes"][0]["source"] == "mmdeploy::MMCVModulatedDeformConv2d"


def test_cli_adopt_refusal_writes_nothing(tmp_path):
    source = tmp_path / "roi.onnx"
    onnx.save(_roi_model("offset", 0), str(source))
    result = cli_runner().invoke(main, ["adopt", str(source)])
    assert result.exit_code == 2
    assert "--roi-sampling-ratio N" in result.stderr and "Traceback" not in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["roi.onnx"]


def test_cli_adopt_a_file_with_nothing_to_adopt(mmdeploy_file):
    adopted = adopt_file(mmdeploy_file).path
    result = cli_runner().invoke(main, ["adopt", str(adopted)])
    assert result.exit_code == 2
    assert "nothing to adopt" in result.stderr and "ours already" in result.stderr


def test_cli_adopt_refuses_to_overwrite_its_source(mmdeploy_file):
    result = cli_runner().invoke(main, ["adopt", str(mmdeploy_file), "-o", str(mmdeploy_file)])
    assert result.exit_code == 2
    assert "--output" in result.stderr and "choose another path" in result.stderr


def test_cli_adopt_does_not_import_torch(mmdeploy_file, tmp_path):
    """Adopting rewrites ONNX alone: importing torch added about 1.7 s to every run (through export_report's import
    of model_loading), and again where the adopted file fails the checker (export_file asked torch about autocast).
    Run in a fresh interpreter: this one has imported torch already."""
    bad = _save_contradicting_source(tmp_path / "bad.onnx")
    paths = [str(mmdeploy_file), str(bad)]
    code = ("import sys\nfrom click.testing import CliRunner\nfrom dcn_deploy.cli import main\n"
            f"codes = [CliRunner().invoke(main, ['adopt', path]).exit_code for path in {paths!r}]\n"
            "print(codes, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[0, 2] False", out.stdout + out.stderr


def test_cli_adopt_output_must_be_named_onnx(mmdeploy_file):
    """adopt wrote ONNX into any name it was given (out.txt); the name is how verify, bench and infer tell ONNX from a
    TensorRT engine (out.engine), so it is refused before any work, as export refuses it."""
    for name, renamed in [("out.txt", "out.onnx"), ("out.engine", "out.onnx"), ("out", "out.onnx")]:
        output = mmdeploy_file.with_name(name)
        result = cli_runner().invoke(main, ["adopt", str(mmdeploy_file), "-o", str(output)])
        assert result.exit_code == 2, result.output
        assert (f"--output {output}: the file written is an ONNX model; give a name ending in .onnx "
                f"(e.g. {output.with_name(renamed)})") in result.stderr
        assert sorted(p.name for p in mmdeploy_file.parent.iterdir()) == ["end2end.onnx"]
    upper = mmdeploy_file.with_name("OUT.ONNX")  # the suffix in any case, as the readers take it
    assert cli_runner().invoke(main, ["adopt", str(mmdeploy_file), "-o", str(upper)]).exit_code == 0
    assert upper.is_file()


def test_build_and_ort_point_to_adopt(mmdeploy_file):
    """TensorRT is not needed: the build refuses the file before importing it."""
    build = cli_runner().invoke(main, ["build", str(mmdeploy_file)])
    assert build.exit_code == 2
    assert f"dcn-deploy adopt {mmdeploy_file}" in build.stderr and "Traceback" not in build.stderr
    verify = cli_runner().invoke(main, ["verify", str(mmdeploy_file), "--against", "ort", "--runner",
                                        "onnx-reference"])
    assert verify.exit_code == 2 and f"dcn-deploy adopt {mmdeploy_file}" in verify.stderr, verify.stderr
    inspect = cli_runner().invoke(main, ["inspect", str(mmdeploy_file)])
    assert inspect.exit_code == 0 and "dcn-deploy adopt" in inspect.stdout


def test_a_file_from_torchs_legacy_exporter_with_mmdeploys_node(tmp_path):
    """The way mmdeploy's files are made: torch's TorchScript exporter at opset 11, the deformable layer's autograd
    Function writing ``mmdeploy::MMCVModulatedDeformConv2d`` from its symbolic (the op, input order and attribute
    names of mmdeploy's rewrite; a stand-in here, whose forward is our op). Adopted, the file computes the model."""
    torch = pytest.importorskip("torch")
    import warnings

    from dcn_deploy import deform_conv2d

    class ModulatedDeformConvFunction(torch.autograd.Function):
        @staticmethod
        def symbolic(g, x, offset, mask, weight, bias, stride, padding, dilation, groups, deform_groups):
            return g.op("mmdeploy::MMCVModulatedDeformConv2d", x, offset, mask, weight, bias, stride_i=stride,
                        padding_i=padding, dilation_i=dilation, groups_i=groups, deform_groups_i=deform_groups)

        @staticmethod
        def forward(ctx, x, offset, mask, weight, bias, stride, padding, dilation, groups, deform_groups):
            return deform_conv2d(x, offset, weight, bias, stride=stride, padding=padding, dilation=dilation,
                                 mask=mask)

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.offset = torch.nn.Conv2d(4, 3 * 2 * 6, 3, padding=1, stride=(2, 1))
            self.weight = torch.nn.Parameter(torch.randn(6, 2, 3, 2))
            self.bias = torch.nn.Parameter(torch.randn(6))

        def forward(self, x):
            o1, o2, mask = torch.chunk(self.offset(x) * 4, 3, dim=1)
            return ModulatedDeformConvFunction.apply(x, torch.cat((o1, o2), 1), torch.sigmoid(mask), self.weight,
                                                     self.bias, (2, 1), (1, 1), (1, 2), 2, 2)

    net, x = Net().eval(), torch.randn(2, 4, 9, 8)
    path = tmp_path / "end2end.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (x,), str(path), dynamo=False, opset_version=11, input_names=["x"],
                          output_names=["y"])
    assert {(n.domain, n.op_type) for n in onnx.load(str(path)).graph.node} >= {
        ("mmdeploy", "MMCVModulatedDeformConv2d")}
    adopted = adopt_file(path)
    with torch.no_grad():
        expected = net(x).numpy()
    _assert_close(_run(onnx.load(str(adopted.path)), {"x": x.numpy()}), expected)


# ----------------------------------------------------------------------------------------------------------------
# Review regressions


def test_nested_local_functions_holding_a_foreign_node_are_all_inlined():
    """torch's export_modules_as_functions with a block and its layer: the block's function calls the layer's,
    which holds the node. Both are inlined (before: 'still hold foreign deformable nodes after inlining')."""
    case = ConvCase(seed=17)
    source = _modulated_model(case, "mmdeploy", True)
    dcn = source.graph.node[0]
    layer = helper.make_function("pkg", "Layer", list(dcn.input), ["y"], [dcn],
                                 opset_imports=[helper.make_opsetid("mmdeploy", 1)])
    block = helper.make_function("pkg", "Block", list(dcn.input), ["z"],
                                 [helper.make_node("Layer", list(dcn.input), ["y"], domain="pkg"),
                                  helper.make_node("Relu", ["y"], ["z"])],
                                 opset_imports=[helper.make_opsetid("", 11), helper.make_opsetid("pkg", 1)])
    del source.graph.node[:]
    source.graph.node.append(helper.make_node("Block", list(dcn.input), ["y"], domain="pkg", name="call"))
    source.functions.extend([layer, block])
    source.opset_import.append(helper.make_opsetid("pkg", 1))
    adopted, adoption = adopt_model(source)
    assert sorted(adoption.inlined) == ["pkg::Block", "pkg::Layer"]
    assert [f.domain for f in adopted.functions] == ["dcn_deploy"]
    got = _run(adopted, {"x": case.x, "offset": case.offset, "mask": case.mask})
    _assert_close(got, np.maximum(case.expected(), 0))


@pytest.mark.parametrize("axis", [None, 2, -2, -1])
def test_raising_the_opset_keeps_what_hardmax_computes(axis):
    """Below opset 13 Hardmax flattens at its axis; onnx's version converter leaves the node as it is, so the raised
    file picked the maximum along that axis alone (another result) until adoption rewrote the node first."""
    case = ConvCase(seed=18)
    source = _modulated_model(case, "mmdeploy", True)
    hardmax = helper.make_node("Hardmax", ["x"], ["h"], name="hm", **({} if axis is None else {"axis": axis}))
    source.graph.node.append(hardmax)
    source.graph.output.append(helper.make_tensor_value_info("h", TensorProto.FLOAT, list(case.x.shape)))
    x = np.random.default_rng(19).standard_normal(case.x.shape).astype(np.float32)
    alone = _model([hardmax], [_tensor("x", x)], [helper.make_tensor_value_info("h", TensorProto.FLOAT, None)],
                   domains=())
    expected = _run(alone, {"x": x})  # ONNX Runtime's opset-11 Hardmax
    adopted, _ = adopt_model(source)
    session = ort.InferenceSession(adopted.SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_array_equal(session.run(["h"], {"x": x, "offset": case.offset, "mask": case.mask})[0],
                                  expected)
    assert adopted.graph.node[-1].output[0] == "h"


@pytest.mark.parametrize("ir_before, ir_after", [(6, 9), (10, 10)], ids=["raised", "never lowered"])
def test_raising_the_opset_raises_the_ir_version_it_needs(ir_before, ir_after):
    """onnx's version converter keeps the IR version: an mmdeploy export (IR 6, opset 11) must not come out as IR 6
    with opset 19, which needs IR 9 (onnx.helper's table)."""
    source = _modulated_model(ConvCase(seed=20), "mmcv", True)
    source.ir_version = ir_before
    adopted, adoption = adopt_model(source)
    assert (adoption.opset_before, adoption.opset_after) == (11, 19)
    assert adopted.ir_version == ir_after >= helper.find_min_ir_version_for([helper.make_opsetid("", 19)])
    onnx.checker.check_model(adopted, full_check=True)


@pytest.mark.parametrize("attribute, value, words", [
    ("stride", 1.0, "stride must be an int or ints, got 1.0"),
    ("padding", 1.0, "padding must be an int or ints"),
    ("groups", [1], r"groups must be a whole number, got \[1\]"),
    ("deform_groups", 1.5, "deform_groups must be a whole number, got 1.5"),  # was read as 1
])
def test_an_attribute_of_the_wrong_type_is_refused_naming_it(attribute, value, words):
    case = ConvCase(seed=20)
    source = _modulated_model(case, "mmcv", True)
    node = source.graph.node[0]
    kept = [a for a in node.attribute if a.name != attribute]
    del node.attribute[:]
    node.attribute.extend(kept + [helper.make_attribute(attribute, value)])
    with pytest.raises(AdoptionError, match=r"node 'dcn' \(mmcv::MMCVModulatedDeformConv2d\): " + words):
        adopt_model(source)


def test_an_unnamed_foreign_node_without_outputs_is_refused_not_a_traceback():
    node = helper.make_node("MMCVDeformConv2d", ["x", "offset", "weight"], [], domain="mmcv")
    model = _model([node], [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 1, 3, 3])
                            for n in ("x", "offset", "weight")], [], domains=("mmcv",))
    with pytest.raises(AdoptionError, match=r"node '\(unnamed\)' \(mmcv::MMCVDeformConv2d\) has 0 outputs"):
        adopt_model(model)


def test_ort_advice_for_a_model_in_memory_names_adopt_model():
    """An OrtRunner given a ModelProto has no file to adopt: the hint names adopt_model, not adopt_file('the model')."""
    from dcn_deploy.backends.base import RunnerError
    from dcn_deploy.backends.ort_runner import OrtRunner

    runner = OrtRunner(_modulated_model(ConvCase(seed=21), "mmdeploy", True))
    with pytest.raises(RunnerError) as info:
        runner.activate()
    assert "adopt_model(model), then use the model it returns" in str(info.value)
    assert "the model.adopted.onnx" not in str(info.value) and "adopt_file" not in str(info.value)
