"""The numpy DeformConv of the onnx-reference runner against the reference op, and against onnx's own
implementation on configurations small enough for it (it loops in Python per output element)."""
from __future__ import annotations

import random
import warnings

import numpy as np
import pytest
import torch
from onnx import TensorProto, helper

from dcn_deploy.backends.reference_deform_conv import deform_conv_2d
from dcn_deploy.backends.reference_evaluator import OracleEvaluator
from plugin_configs import Case, make_tensors, max_relative_error, random_case, reference


def _numpy_args(case: Case, tensors, dtype=np.float64):
    x, off, w, b, m = (None if t is None else t.numpy().astype(dtype) for t in tensors)
    return x, w, off, b, m


def _attrs(case: Case):
    return dict(dilations=list(case.dilation), group=case.groups, offset_group=case.offset_groups,
                pads=list(case.pads), strides=list(case.stride))


@pytest.mark.parametrize("seed", range(40))
def test_random_configs_match_the_reference_op(seed):
    # groups, offset groups, per-axis stride/dilation, asymmetric pads, non-square kernels, batch up to 3,
    # H or W of 1, offsets up to 25 px (off the image) and integer offsets (exactly on pixels and borders)
    case = random_case(random.Random(seed), max_channels_per_group=4)
    tensors = make_tensors(case, torch.float64, seed=seed)
    got = deform_conv_2d(*_numpy_args(case, tensors), **_attrs(case))
    assert max_relative_error(torch.from_numpy(got), reference(case, *tensors)) < 1e-12, case


def _deform_conv_model(case: Case, dtype=TensorProto.FLOAT):
    oh, ow = case.out_size
    k = case.kernel[0] * case.kernel[1]
    inputs = [helper.make_tensor_value_info("X", dtype, [case.batch, case.in_channels, case.height, case.width]),
              helper.make_tensor_value_info("W", dtype, [case.out_channels, case.in_channels // case.groups,
                                                         *case.kernel]),
              helper.make_tensor_value_info("offset", dtype, [case.batch, 2 * case.offset_groups * k, oh, ow]),
              helper.make_tensor_value_info("B", dtype, [case.out_channels]),
              helper.make_tensor_value_info("mask", dtype, [case.batch, case.offset_groups * k, oh, ow])]
    node = helper.make_node("DeformConv", ["X", "W", "offset", "B", "mask"], ["Y"], kernel_shape=list(case.kernel),
                            **_attrs(case))
    graph = helper.make_graph([node], "g", inputs, [helper.make_tensor_value_info("Y", dtype, None)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])


@pytest.mark.parametrize("seed", range(6))
def test_same_as_onnx_own_implementation(seed):
    from onnx.reference import ReferenceEvaluator

    rng = random.Random(100 + seed)
    while True:  # onnx's implementation needs H, W > 1 (it divides by H - 1 and W - 1)
        case = random_case(rng, max_channels_per_group=2, max_size=6)
        if case.height > 1 and case.width > 1:
            break
    case.with_bias = case.with_mask = True
    x, w, off, b, m = _numpy_args(case, make_tensors(case, torch.float32, seed=seed), np.float32)
    feed = {"X": x, "W": w, "offset": off, "B": b, "mask": m}
    model = _deform_conv_model(case)
    ours = OracleEvaluator(model).run(None, feed)[0]
    onnx_own = ReferenceEvaluator(model).run(None, feed)[0]
    assert ours.dtype == np.float32 and ours.shape == onnx_own.shape
    np.testing.assert_allclose(ours, onnx_own, rtol=1e-5, atol=1e-5)


def test_override_reaches_function_bodies(tmp_path):
    # our dcn_deploy ops reach DeformConv through a function body: the fast version must run there too
    from dcn_deploy.backends import reference_deform_conv as module
    from dcn_deploy.backends.onnx_reference_runner import OnnxReferenceRunner
    from dcn_deploy.onnx.export import export
    from dcn_deploy.ops.modules import ModulatedDeformConv2dPack

    calls = []
    original = module.deform_conv_2d
    module.deform_conv_2d = lambda *a, **k: calls.append(1) or original(*a, **k)
    try:
        model = ModulatedDeformConv2dPack(4, 6, 3, padding=1, deform_groups=2).eval()
        torch.nn.init.normal_(model.conv_offset.weight, std=0.5)
        x = torch.randn(1, 4, 1, 7)  # H of 1: onnx's own implementation divides by zero here
        path = tmp_path / "m.onnx"
        export(model, (x,), path, verify=False)
        with OnnxReferenceRunner(path) as runner:
            got = runner.infer({runner.input_metadata()[0].name: x.numpy()})
    finally:
        module.deform_conv_2d = original
    assert calls, "the function body ran onnx's own DeformConv"
    with torch.no_grad():
        expected = model(x).numpy()
    np.testing.assert_allclose(next(iter(got.values())), expected, rtol=1e-4, atol=1e-5)


def test_v1_layers_without_bias_run_in_the_reference_evaluator(tmp_path):
    # DeformConv2d(x, offset, weight): a call with 3 of the function's 5 inputs, which onnx's evaluator refused
    from dcn_deploy.backends.onnx_reference_runner import OnnxReferenceRunner
    from dcn_deploy.backends.ort_runner import OrtRunner
    from dcn_deploy.onnx.export import export
    from dcn_deploy.ops.modules import DeformConv2dPack

    model = DeformConv2dPack(4, 6, 3, padding=1, deform_groups=2, bias=False).eval()
    torch.nn.init.normal_(model.conv_offset.weight, std=0.5)
    x = torch.randn(2, 4, 6, 5)
    path = tmp_path / "v1.onnx"
    export(model, (x,), path)
    with OnnxReferenceRunner(path) as reference, OrtRunner(path) as ort_runner:
        name = reference.input_metadata()[0].name
        got, expected = reference.infer({name: x.numpy()}), ort_runner.infer({name: x.numpy()})
    np.testing.assert_allclose(next(iter(got.values())), next(iter(expected.values())), rtol=1e-4, atol=1e-5)


def test_inconsistent_shapes_are_named():
    x = np.ones((1, 4, 5, 5))
    with pytest.raises(ValueError, match="offset_group=3"):
        deform_conv_2d(x, np.ones((4, 4, 3, 3)), np.ones((1, 18, 5, 5)), dilations=(1, 1), group=1, offset_group=3,
                       pads=(1, 1, 1, 1), strides=(1, 1))
    with pytest.raises(ValueError, match=r"offset \(1, 16, 5, 5\)"):
        deform_conv_2d(x, np.ones((4, 4, 3, 3)), np.ones((1, 16, 5, 5)), dilations=(1, 1), group=1, offset_group=1,
                       pads=(1, 1, 1, 1), strides=(1, 1))
    with pytest.raises(ValueError, match=r"expected \(1, 18, 3, 2\)"):  # strides (2, 3): a 3x2 output, not 5x5
        deform_conv_2d(x, np.ones((4, 4, 3, 3)), np.ones((1, 18, 5, 5)), dilations=(1, 1), group=1, offset_group=1,
                       pads=(1, 1, 1, 1), strides=(2, 3))
    with pytest.raises(ValueError, match=r"kernel_shape=\[2, 2\]"):
        deform_conv_2d(x, np.ones((4, 4, 3, 3)), np.ones((1, 18, 5, 5)), dilations=(1, 1), group=1, offset_group=1,
                       pads=(1, 1, 1, 1), strides=(1, 1), kernel_shape=(2, 2))


def test_infinite_and_nan_offsets_sample_nothing_without_warnings():
    rng = np.random.default_rng(4)
    x, w = rng.standard_normal((1, 2, 4, 4)), rng.standard_normal((3, 2, 3, 3))
    offset = rng.standard_normal((1, 18, 4, 4))
    far = offset.copy()
    offset[0, 3, 1, 1], offset[0, 8, 2, 0], offset[0, 11, 3, 3] = np.inf, -np.inf, np.nan
    far[0, 3, 1, 1] = far[0, 8, 2, 0] = far[0, 11, 3, 3] = 1e6
    kwargs = dict(dilations=(1, 1), group=1, offset_group=1, pads=(1, 1, 1, 1), strides=(1, 1))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = deform_conv_2d(x, w, offset, **kwargs)
    np.testing.assert_allclose(got, deform_conv_2d(x, w, far, **kwargs), rtol=1e-12, atol=1e-12)


def test_bad_shapes_and_attributes_are_named_not_numpy_errors():
    """What the op's own checks (spec.py) refuse, the onnx-reference runner's DeformConv refuses too, in its words
    (before: numpy reshape errors, a ZeroDivisionError for stride 0, and negative pads accepted)."""
    x = np.random.default_rng(0).standard_normal((1, 2, 4, 4)).astype(np.float32)
    w = np.ones((2, 2, 3, 3), np.float32)
    attrs = dict(dilations=(1, 1), group=1, offset_group=1, pads=(1, 1, 1, 1), strides=(1, 1))
    offset = np.zeros((1, 18, 4, 4), np.float32)
    bad = [
        (dict(attrs, strides=(0, 1)), offset, None, "strides=\\[0, 1\\] and dilations=\\[1, 1\\] must be >= 1"),
        (dict(attrs, pads=(-1, -1, 0, 0)), np.zeros((1, 18, 2, 4), np.float32), None, "pads=\\[-1, -1, 0, 0\\] >= 0"),
        (dict(attrs, pads=(0, 0, 0, 0)), offset, np.ones(2, np.float32)[:1], "B \\(1,\\) must have shape \\(2,\\)"),
    ]
    for kwargs, off, bias, message in bad:
        with pytest.raises(ValueError, match=message):
            deform_conv_2d(x, w, off, bias, **kwargs)
    with pytest.raises(ValueError, match="empty 0x0 output"):
        deform_conv_2d(x[:, :, :2, :2], w, np.zeros((1, 18, 0, 0), np.float32), **dict(attrs, pads=(0, 0, 0, 0)))


def test_an_inf_pixel_reaches_only_the_outputs_that_sample_it():
    """Neighbours outside the image are zero padding (GridSample's), not pixel 0 with weight 0: an inf at (0, 0)
    must not turn every border output into NaN (ONNX Runtime's DeformConv does; the kernels and torchvision do not)."""
    x = np.arange(9.0, dtype=np.float32).reshape(1, 1, 3, 3)
    x[0, 0, 0, 0] = np.inf
    out = deform_conv_2d(x, np.ones((1, 1, 1, 1), np.float32), np.zeros((1, 2, 3, 3), np.float32), dilations=(1, 1),
                         group=1, offset_group=1, pads=(0, 0, 0, 0), strides=(1, 1))
    np.testing.assert_array_equal(out.ravel(), [np.inf, 1, 2, 3, 4, 5, 6, 7, 8])
