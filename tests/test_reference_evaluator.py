"""The onnx-reference runner's evaluator (dcn_deploy.backends.reference_evaluator): its GatherElements against numpy
indexing (onnx's own stops at 64 values along the axis), and calls of our functions that leave optional inputs out."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from dcn_deploy.backends.reference_evaluator import OracleEvaluator
from dcn_deploy.onnx import opset

torch = pytest.importorskip("torch")


def _gather_elements_model(data_shape, index_shape, axis):
    node = helper.make_node("GatherElements", ["data", "index"], ["out"], axis=axis)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("data", TensorProto.FLOAT, data_shape),
                                            helper.make_tensor_value_info("index", TensorProto.INT64, index_shape)],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])


@pytest.mark.parametrize("data_shape,index_shape,axis", [((5000,), (3000,), 0), ((300, 7), (200, 5), 0),
                                                         ((4, 90, 3), (4, 120, 2), 1), ((6, 70), (6, 70), -1)])
def test_gather_elements_matches_numpy_indexing(data_shape, index_shape, axis):
    rng = np.random.default_rng(3)
    data = rng.standard_normal(data_shape).astype(np.float32)
    size = data_shape[axis]
    index = rng.integers(-size, size, index_shape)
    got = OracleEvaluator(_gather_elements_model(data_shape, index_shape, axis)).run(None, {"data": data,
                                                                                           "index": index})[0]
    want = np.empty(index_shape, np.float32)
    for position in np.ndindex(*index_shape):
        source = list(position)
        source[axis] = index[position] % size
        want[position] = data[tuple(source)]
    np.testing.assert_array_equal(got, want)


def test_gather_elements_refuses_an_index_off_the_axis():
    data = np.arange(100, dtype=np.float32)
    evaluator = OracleEvaluator(_gather_elements_model((100,), (3,), 0))
    with pytest.raises(ValueError, match=r"indices must lie in \[-100, 99\] on axis 0, got \[2, 100\]"):
        evaluator.run(None, {"data": data, "index": np.array([2, 100, 5])})


@pytest.mark.parametrize("with_bias", [False, True])
def test_deform_conv2d_calls_without_trailing_optional_inputs(with_bias):
    # what the exporter writes for v1 layers (3 of the function's 5 inputs, or 4 with a bias); onnx's evaluator
    # wants every function input
    from dcn_deploy.ops.deform_conv import _forward_composite

    gen = torch.Generator().manual_seed(3)
    x = torch.randn(1, 4, 6, 5, generator=gen, dtype=torch.float64)
    w = torch.randn(6, 2, 3, 1, generator=gen, dtype=torch.float64)  # groups 2, non-square kernel
    off = torch.randn(1, 2 * 2 * 3, 5, 3, generator=gen, dtype=torch.float64) * 2  # offset groups 2
    b = torch.randn(6, generator=gen, dtype=torch.float64)
    names = ["X", "W", "offset"] + (["B"] if with_bias else [])
    values = [x, w, off] + ([b] if with_bias else [])
    node = helper.make_node("DeformConv2d", names, ["Y"], domain=opset.DOMAIN, strides=[1, 2], pads=[0, 1, 1, 0],
                            dilations=[1, 1], group=2, offset_group=2)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info(n, TensorProto.DOUBLE, list(v.shape))
                                            for n, v in zip(names, values)],
                              [helper.make_tensor_value_info("Y", TensorProto.DOUBLE, [None] * 4)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    opset.attach_functions(model)
    onnx.checker.check_model(model, full_check=True)  # a valid model, which ONNX Runtime runs
    feeds = {n: v.numpy() for n, v in zip(names, values)}
    ort = pytest.importorskip("onnxruntime")
    from_ort = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)[0]

    got = OracleEvaluator(model).run(None, feeds)[0]

    padded = torch.nn.functional.pad(x, (1, 0, 0, 1))  # pads (top, left, bottom, right) = (0, 1, 1, 0)
    want = _forward_composite(padded, off, w, b if with_bias else None, None, (1, 2), (0, 0), (1, 1))
    np.testing.assert_allclose(from_ort, want.numpy(), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-10, atol=1e-10)


def test_function_calls_that_leave_attributes_at_their_defaults():
    # a DeformRoIPool node without spatial_scale and gamma: the function's defaults (1.0, 0.1) apply, which onnx's
    # evaluator does not look up ("Unable to find a value for linked attribute 'value_float'")
    from dcn_deploy.ops.roi_pool import deform_roi_pool

    names = ["X", "rois", "offset"]
    node = helper.make_node("DeformRoIPool", names, ["Y"], domain=opset.DOMAIN, pooled_height=2, pooled_width=3,
                            sampling_ratio=2)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in names],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    opset.attach_functions(model)
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(2, 3, 9, 8, generator=gen)
    rois = torch.tensor([[0.0, 1.0, 1.5, 6.0, 7.0], [1.0, -1.0, 2.0, 5.5, 4.0]])
    offset = torch.randn(2, 2, 2, 3, generator=gen) * 0.3
    got = OracleEvaluator(model).run(None, {"X": x.numpy(), "rois": rois.numpy(), "offset": offset.numpy()})[0]
    want = deform_roi_pool(x, rois, offset, (2, 3), 1.0, 2, 0.1)
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-5, atol=1e-6)


def _grid_sample_model(opset, mode, padding_mode, align_corners):
    node = helper.make_node("GridSample", ["x", "grid"], ["out"], mode=mode, padding_mode=padding_mode,
                            align_corners=align_corners)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, None),
                                            helper.make_tensor_value_info("grid", TensorProto.FLOAT, None)],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


@pytest.mark.parametrize("mode", ["bilinear", "nearest", "bicubic"])
@pytest.mark.parametrize("padding_mode", ["zeros", "border", "reflection"])
@pytest.mark.parametrize("align_corners", [0, 1])
@pytest.mark.parametrize("opset", [16, 20])
def test_grid_sample_matches_torch(mode, padding_mode, align_corners, opset):
    """The evaluator's GridSample (onnx's own refuses opset 16's mode names) against torch's grid_sample, an
    independent implementation of the same definition, with a grid reaching 1.6 past the borders (reflection folds
    such positions more than once) and maps of 1 pixel on an axis."""
    rng = np.random.default_rng(len(mode) * 7 + len(padding_mode) + align_corners)
    name = {16: mode, 20: {"bilinear": "linear", "bicubic": "cubic"}.get(mode, mode)}[opset]
    for shape in ((2, 3, 5, 6), (1, 2, 1, 4)):
        x = rng.standard_normal(shape).astype(np.float32)
        grid = rng.uniform(-2.6, 2.6, (shape[0], 4, 7, 2)).astype(np.float32)
        got = OracleEvaluator(_grid_sample_model(opset, name, padding_mode, align_corners)).run(
            None, {"x": x, "grid": grid})[0]
        want = torch.nn.functional.grid_sample(torch.from_numpy(x), torch.from_numpy(grid), mode=mode,
                                               padding_mode=padding_mode, align_corners=bool(align_corners)).numpy()
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mode", ["linear", "nearest"])
@pytest.mark.parametrize("padding_mode", ["zeros", "border", "reflection"])
def test_grid_sample_of_volumes_matches_torch(mode, padding_mode):
    rng = np.random.default_rng(len(mode) + len(padding_mode))
    x = rng.standard_normal((2, 2, 3, 4, 5)).astype(np.float32)
    grid = rng.uniform(-1.5, 1.5, (2, 2, 3, 4, 3)).astype(np.float32)
    got = OracleEvaluator(_grid_sample_model(20, mode, padding_mode, 0)).run(None, {"x": x, "grid": grid})[0]
    want = torch.nn.functional.grid_sample(torch.from_numpy(x), torch.from_numpy(grid),
                                           mode={"linear": "bilinear"}.get(mode, mode), padding_mode=padding_mode,
                                           align_corners=False).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_grid_sample_nearest_rounds_halves_to_even():
    """Positions exactly between two pixels (0.5, 1.5, 2.5, 3.5 with align_corners=1 on 5 pixels) take the even one,
    as torch's and ONNX Runtime's nearest do."""
    x = np.arange(1, 6, dtype=np.float32).reshape(1, 1, 1, 5)
    grid = np.array([[[[-0.75, 0.0], [-0.25, 0.0], [0.25, 0.0], [0.75, 0.0]]]], np.float32)
    got = OracleEvaluator(_grid_sample_model(16, "nearest", "zeros", 1)).run(None, {"x": x, "grid": grid})[0]
    np.testing.assert_array_equal(got.ravel(), [1, 3, 3, 5])


@pytest.mark.parametrize("x_shape, grid_shape", [((0, 3, 4, 5), (0, 2, 3, 2)), ((2, 0, 4, 5), (2, 2, 3, 2)),
                                                 ((2, 3, 4, 5), (2, 0, 3, 2))])
def test_grid_sample_of_an_empty_batch_channel_set_or_grid(x_shape, grid_shape):
    """An empty output, as ONNX Runtime gives (an adopted attention fed a batch of 0 samples its maps so)."""
    x, grid = np.ones(x_shape, np.float32), np.zeros(grid_shape, np.float32)
    got = OracleEvaluator(_grid_sample_model(16, "bilinear", "zeros", 0)).run(None, {"x": x, "grid": grid})[0]
    assert got.shape == x_shape[:2] + grid_shape[1:3]
