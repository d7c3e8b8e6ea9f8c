"""The onnx-reference runner's GatherElements (dcn_deploy.backends.reference_evaluator) against numpy indexing:
onnx's own stops at 64 values along the axis."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

from dcn_deploy.backends.reference_evaluator import OracleEvaluator


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
