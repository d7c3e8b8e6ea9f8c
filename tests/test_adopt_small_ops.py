"""mmdeploy's GatherTopk and GridPriorsTRT adopted as standard ONNX (dcn_deploy.onnx.adopt_small_ops), run in ONNX
Runtime against NumPy written from mmdeploy 1.3.1's plugin kernels (``gather_topk_kernel.cu``,
``trt_grid_priors_kernel.cu``)."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

ort = pytest.importorskip("onnxruntime")

from dcn_deploy.onnx.adopt import AdoptionError, adopt_model  # noqa: E402


def _model(node, inputs, outputs, before=(), opset=11):
    graph = helper.make_graph([*before, node], "g", inputs, outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset),
                                                    helper.make_opsetid("mmdeploy", 1)])
    model.ir_version = 8
    return model


def _run(model, feed):
    adopted, adoption = adopt_model(model)
    onnx.checker.check_model(adopted, full_check=True)
    session = ort.InferenceSession(adopted.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feed)[0], adoption


def plugin_gather_topk(data, indices):
    """The kernel: the first r - 1 axes (r the indices' rank) are one batch axis, gather along the next."""
    r = indices.ndim
    batch = int(np.prod(data.shape[: r - 1]))
    flat = data.reshape(batch, data.shape[r - 1], -1)
    picks = indices.reshape(batch, -1)
    out = np.stack([flat[b, picks[b]] for b in range(batch)])
    return out.reshape(*indices.shape, *data.shape[r:])


@pytest.mark.parametrize("data_shape, index_shape, declared", [
    ((2, 50, 4), (2, 7), True),  # boxes of a head, topk indices
    ((3, 40, 80), (3, 12), False),  # scores; the indices' rank undeclared: mmdeploy's (batch, k)
    ((2, 30), (2, 30), True),
    ((2, 3, 20, 5), (2, 3, 6), True),  # two batch axes
])
def test_gather_topk_matches_the_plugin(data_shape, index_shape, declared):
    rng = np.random.default_rng(len(data_shape) * 10 + index_shape[-1])
    data = rng.standard_normal(data_shape).astype(np.float32)
    indices = rng.integers(0, data_shape[len(index_shape) - 1], index_shape).astype(np.int64)
    node = helper.make_node("GatherTopk", ["data", "indices"], ["out"], domain="mmdeploy", name="gather")
    # declared: the indices are an input of the graph; not: the output of a node with no value_info, at opset 19
    # (below it, raising the opset infers the shapes)
    before = [] if declared else [helper.make_node("Identity", ["topk_indices"], ["indices"], name="topk")]
    index_info = helper.make_tensor_value_info("indices" if declared else "topk_indices", TensorProto.INT64,
                                               list(index_shape))
    model = _model(node, [helper.make_tensor_value_info("data", TensorProto.FLOAT, list(data_shape)), index_info],
                   [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["?"] * len(data_shape))], before,
                   opset=11 if declared else 19)
    got, adoption = _run(model, {"data": data, "indices" if declared else "topk_indices": indices})
    np.testing.assert_array_equal(got, plugin_gather_topk(data, indices))
    assert adoption.nodes[0].notes == (() if declared else
                                       ("the indices' rank is not declared: read as mmdeploy writes them, (batch, k)",))


def plugin_grid_priors(base, height, width, stride_h, stride_w):
    """The kernel, element by element (float32 base plus the integer shift cast to float)."""
    anchors = base.shape[0]
    out = np.zeros((height * width * anchors, 4), np.float32)
    for index in range(out.shape[0]):
        a = index % anchors
        x = np.float32(((index // anchors) % width) * stride_w)
        y = np.float32((index // (width * anchors)) * stride_h)
        out[index] = base[a] + np.array([x, y, x, y], np.float32)
    return out


@pytest.mark.parametrize("height, width, stride_h, stride_w", [(5, 7, 8, 8), (1, 3, 16, 32), (4, 1, 4, 4),
                                                                 (0, 6, 8, 8)])
def test_grid_priors_match_the_plugin(height, width, stride_h, stride_w):
    rng = np.random.default_rng(height * 100 + width)
    base = (rng.standard_normal((9, 4)) * 40).astype(np.float32)  # RetinaNet's 9 anchors a cell
    node = helper.make_node("GridPriorsTRT", ["base", "zero_h", "zero_w"], ["anchors"], domain="mmdeploy",
                            name="priors", stride_h=stride_h, stride_w=stride_w)
    model = _model(node, [helper.make_tensor_value_info("base", TensorProto.FLOAT, [9, 4]),
                          helper.make_tensor_value_info("zero_h", TensorProto.INT64, ["H"]),
                          helper.make_tensor_value_info("zero_w", TensorProto.INT64, ["W"])],
                   [helper.make_tensor_value_info("anchors", TensorProto.FLOAT, ["count", 4])])
    got, adoption = _run(model, {"base": base, "zero_h": np.zeros(height, np.int64),
                                 "zero_w": np.zeros(width, np.int64)})
    np.testing.assert_array_equal(got, plugin_grid_priors(base, height, width, stride_h, stride_w))
    assert adoption.nodes[0].attributes == {"stride_h": stride_h, "stride_w": stride_w}


def test_malformed_head_ops_are_refused_naming_the_node():
    node = helper.make_node("GatherTopk", ["data"], ["out"], domain="mmdeploy", name="gather")
    model = _model(node, [helper.make_tensor_value_info("data", TensorProto.FLOAT, [2, 5])],
                   [helper.make_tensor_value_info("out", TensorProto.FLOAT, [2, 5])])
    with pytest.raises(AdoptionError, match=r"node 'gather' \(mmdeploy::GatherTopk\) has inputs \['data'\]; the op "
                                            r"takes \(data, indices\)"):
        adopt_model(model)


def test_instance_norm_as_mmdeploy_writes_group_norm_matches_torch():
    """mmdeploy's GroupNorm for TensorRT: Reshape (N, groups, -1), TRTInstanceNormalization with unit scale and zero
    bias, Reshape back, the affine; adopted, against torch's group_norm."""
    import torch

    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 8, 5, 6)).astype(np.float32) * 3 + 1
    weight, bias = rng.standard_normal(8).astype(np.float32), rng.standard_normal(8).astype(np.float32)
    groups = 4
    nodes = [
        helper.make_node("Constant", [], ["grouped_shape"], value=numpy_helper.from_array(
            np.array([0, groups, -1], np.int64), "grouped_shape")),
        helper.make_node("Reshape", ["x", "grouped_shape"], ["grouped"]),
        helper.make_node("Constant", [], ["ones"], value=numpy_helper.from_array(np.ones(groups, np.float32), "o")),
        helper.make_node("Constant", [], ["zeros"], value=numpy_helper.from_array(np.zeros(groups, np.float32), "z")),
        helper.make_node("TRTInstanceNormalization", ["grouped", "ones", "zeros"], ["normed"], domain="mmdeploy",
                         name="gn", epsilon=1e-5),
        helper.make_node("Shape", ["x"], ["x_shape"]),
        helper.make_node("Reshape", ["normed", "x_shape"], ["back"]),
        helper.make_node("Mul", ["back", "weight"], ["scaled"]),
        helper.make_node("Add", ["scaled", "bias"], ["y"]),
    ]
    graph = helper.make_graph(nodes, "gn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x.shape))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(x.shape))],
                              [numpy_helper.from_array(weight.reshape(8, 1, 1), "weight"),
                               numpy_helper.from_array(bias.reshape(8, 1, 1), "bias")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11), helper.make_opsetid("mmdeploy", 1)])
    model.ir_version = 8
    got, adoption = _run(model, {"x": x})
    expected = torch.nn.functional.group_norm(torch.from_numpy(x), groups, torch.from_numpy(weight),
                                              torch.from_numpy(bias), eps=1e-5).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    assert adoption.nodes[0].target == "ONNX InstanceNormalization" and adoption.nodes[0].attributes == {
        "epsilon": 1e-5}


@pytest.mark.parametrize("mode", [0, 1, 2])
@pytest.mark.parametrize("padding_mode", [0, 1, 2])
@pytest.mark.parametrize("align_corners", [0, 1])
def test_grid_sampler_matches_torch_grid_sample(mode, padding_mode, align_corners):
    """mmdeploy's grid_sampler (PyTorch's enums) as GridSample gives what F.grid_sample gives, grid points off the
    map included (the grid reaches 1.4 past each border)."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(mode * 6 + padding_mode * 2 + align_corners)
    data = rng.standard_normal((2, 3, 5, 7)).astype(np.float32)
    grid = rng.uniform(-1.4, 1.4, (2, 4, 6, 2)).astype(np.float32)
    domain = "mmcv" if mode == 1 else "mmdeploy"  # mmdeploy's PPL exports write mmcv::grid_sampler
    node = helper.make_node("grid_sampler", ["data", "grid"], ["out"], domain=domain, name="sampler",
                            interpolation_mode=mode, padding_mode=padding_mode, align_corners=align_corners)
    model = _model(node, [helper.make_tensor_value_info("data", TensorProto.FLOAT, ["N", 3, "H", "W"]),
                          helper.make_tensor_value_info("grid", TensorProto.FLOAT, ["N", "h", "w", 2])],
                   [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", 3, "h", "w"])])
    if domain == "mmcv":
        model.opset_import.append(helper.make_opsetid("mmcv", 1))
    got, adoption = _run(model, {"data": data, "grid": grid})
    want = torch.nn.functional.grid_sample(torch.from_numpy(data), torch.from_numpy(grid),
                                           mode=("bilinear", "nearest", "bicubic")[mode],
                                           padding_mode=("zeros", "border", "reflection")[padding_mode],
                                           align_corners=bool(align_corners)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    report = adoption.nodes[0]
    assert report.target == "ONNX GridSample" and report.attributes["align_corners"] == align_corners
    assert bool(report.notes) == (mode == 2)  # bicubic: mmdeploy's plugin computes bilinear, noted


def test_grid_sampler_of_rank_5_needs_opset_20():
    node = helper.make_node("grid_sampler", ["data", "grid"], ["out"], domain="mmdeploy", name="sampler3d",
                            interpolation_mode=0, padding_mode=0, align_corners=0)
    model = _model(node, [helper.make_tensor_value_info("data", TensorProto.FLOAT, [1, 2, 3, 4, 5]),
                          helper.make_tensor_value_info("grid", TensorProto.FLOAT, [1, 2, 2, 2, 3])],
                   [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 2, 2, 2, 2])])
    with pytest.raises(AdoptionError, match=r"'sampler3d'.*rank 5.*opset >= 20"):
        adopt_model(model)
    next(a for a in node.attribute if a.name == "interpolation_mode").i = 7
    with pytest.raises(AdoptionError, match=r"'sampler3d'.*interpolation_mode 7.*PyTorch's values"):
        adopt_model(_model(node, list(model.graph.input), list(model.graph.output)))


def test_grid_sampler_of_rank_5_at_opset_20_matches_torch():
    """From opset 20, GridSample takes 5-D inputs (and renames bilinear "linear"): a 3-D grid_sample adopts."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(40)
    data = rng.standard_normal((1, 2, 3, 4, 5)).astype(np.float32)
    grid = rng.uniform(-1.2, 1.2, (1, 2, 3, 2, 3)).astype(np.float32)
    node = helper.make_node("grid_sampler", ["data", "grid"], ["out"], domain="mmdeploy", name="sampler3d",
                            interpolation_mode=0, padding_mode=1, align_corners=0)
    model = _model(node, [helper.make_tensor_value_info("data", TensorProto.FLOAT, [1, 2, 3, 4, 5]),
                          helper.make_tensor_value_info("grid", TensorProto.FLOAT, [1, 2, 3, 2, 3])],
                   [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 2, 2, 3, 2])], opset=20)
    got, _ = _run(model, {"data": data, "grid": grid})
    want = torch.nn.functional.grid_sample(torch.from_numpy(data), torch.from_numpy(grid), mode="bilinear",
                                           padding_mode="border", align_corners=False).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
