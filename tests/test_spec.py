"""dcn_deploy.ops.spec: the pure shape arithmetic every other layer reuses."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from dcn_deploy.ops.spec import DeformConvSpec, ShapeError, as_pair, conv_output_size, deform_conv_spec


def _spec(**changes):
    """A valid call: N=2, C=6, 9x8 input, 6 output channels, 3x2 kernel, groups 3, offset groups 2."""
    args = dict(input_shape=(2, 6, 9, 8), offset_shape=(2, 24, 5, 8), weight_shape=(6, 2, 3, 2),
                bias_shape=(6,), mask_shape=(2, 12, 5, 8), stride=(2, 1), padding=(1, 1), dilation=(1, 2))
    args.update(changes)
    return deform_conv_spec(**args)


def test_full_spec_of_a_valid_call():
    spec = _spec()
    assert spec == DeformConvSpec(
        batch=2, in_channels=6, height=9, width=8, out_channels=6, kernel=(3, 2), stride=(2, 1), padding=(1, 1),
        dilation=(1, 2), groups=3, offset_groups=2, out_height=5, out_width=8, has_mask=True, has_bias=True)
    assert spec.kernel_points == 6
    assert spec.output_shape == (2, 6, 5, 8)
    assert spec.offset_shape == (2, 24, 5, 8)
    assert spec.mask_shape == (2, 12, 5, 8)
    assert spec.pads == (1, 1, 1, 1)


def test_optional_bias_and_mask_and_int_arguments():
    spec = deform_conv_spec([1, 4, 6, 5], [1, 18, 2, 5], [8, 4, 3, 3], stride=(2, 1), padding=(0, 1), dilation=1)
    assert (spec.has_bias, spec.has_mask, spec.groups, spec.offset_groups) == (False, False, 1, 1)
    assert spec.output_shape == (1, 8, 2, 5)
    assert spec.pads == (0, 1, 0, 1)  # ONNX order: top, left, bottom, right


def test_empty_batch_is_valid():
    spec = _spec(input_shape=(0, 6, 9, 8), offset_shape=(0, 24, 5, 8), mask_shape=(0, 12, 5, 8))
    assert spec.output_shape == (0, 6, 5, 8)


def test_conv_output_size_matches_torch_conv2d():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    for _ in range(200):
        size, kernel, stride, pad, dilation = (int(v) for v in rng.integers([1, 1, 1, 0, 1], [12, 5, 4, 4, 4]))
        expected = None
        try:
            expected = torch.nn.functional.conv2d(torch.empty(1, 1, size, 1, device="meta"),
                                                  torch.empty(1, 1, kernel, 1, device="meta"),
                                                  stride=(stride, 1), padding=(pad, 0), dilation=(dilation, 1)).shape[2]
        except RuntimeError:  # torch refuses an empty output; ours then reports a size < 1
            assert conv_output_size(size, kernel, stride, pad, pad, dilation) < 1
            continue
        assert conv_output_size(size, kernel, stride, pad, pad, dilation) == expected


def test_asymmetric_pads_in_conv_output_size():
    # ONNX pads may differ at the two ends of an axis: the arithmetic uses their sum
    assert conv_output_size(10, 3, 2, 0, 1, 1) == 5
    assert conv_output_size(10, 3, 2, 1, 0, 1) == 5
    assert conv_output_size(10, 3, 1, 2, 1, 2) == 9


@pytest.mark.parametrize("value, expected", [(3, (3, 3)), ((1, 2), (1, 2)), ([4, 5], (4, 5))])
def test_as_pair_accepts_int_tuple_and_list(value, expected):
    assert as_pair(value, "stride", 1) == expected


@pytest.mark.parametrize("value", [np.int64(2), (np.int32(2), np.int64(2))])
def test_as_pair_accepts_numpy_integers(value):
    """torchvision accepts numpy integers (configs read with numpy or yaml often hold them)."""
    assert as_pair(value, "stride", 1) == (2, 2)


BAD_PAIRS = {
    "bool": True,
    "none": None,
    "float": 1.5,
    "pair with a float": (1.5, 2),
    "string": "12",
    "three values": (1, 2, 3),
    "one value": (1,),
    "below minimum": (1, 0),
}


@pytest.mark.parametrize("name", list(BAD_PAIRS))
def test_as_pair_rejects_bad_values_naming_the_argument(name):
    with pytest.raises(ShapeError, match="dilation"):
        as_pair(BAD_PAIRS[name], "dilation", 1)


BAD_CALLS = {
    # name: (changes to the valid call, words the message must contain)
    "input 3-D": (dict(input_shape=(6, 9, 8)), ["input", "4-D", "(6, 9, 8)"]),
    "weight 5-D": (dict(weight_shape=(6, 2, 3, 2, 1)), ["weight", "4-D"]),
    "offset 2-D": (dict(offset_shape=(2, 24)), ["offset", "4-D"]),
    "stride 0": (dict(stride=0), ["stride", ">= 1"]),
    "negative padding": (dict(padding=(-1, 0)), ["padding", ">= 0"]),
    "dilation 0": (dict(dilation=(1, 0)), ["dilation", ">= 1"]),
    "weight with zero out channels": (dict(weight_shape=(0, 2, 3, 2)), ["weight", "positive"]),
    "weight with empty kernel": (dict(weight_shape=(6, 2, 0, 2)), ["weight", "positive"]),
    "input with no channels": (dict(input_shape=(2, 0, 9, 8)), ["input", ">= 1"]),
    "input with no rows": (dict(input_shape=(2, 6, 0, 8)), ["input", ">= 1"]),
    "channels not a multiple of weight.shape[1]": (dict(weight_shape=(6, 4, 3, 2)), ["input channels (6)", "weight.shape[1] (4"]),
    "out channels not divisible by groups": (dict(weight_shape=(4, 2, 3, 2)), ["weight.shape[0] (4", "groups (3"]),
    "empty output": (dict(dilation=(6, 2)), ["output would be empty", "padding"]),
    "offset batch": (dict(offset_shape=(3, 24, 5, 8)), ["offset batch size (3)", "(2)"]),
    "offset channels": (dict(offset_shape=(2, 20, 5, 8)), ["offset", "2*offset_groups*kH*kW", "12", "20"]),
    "offset with zero channels": (dict(offset_shape=(2, 0, 5, 8)), ["offset", "got 0"]),
    "offset groups not dividing channels": (dict(offset_shape=(2, 48, 5, 8), mask_shape=None),
                                            ["offset_groups (4", "input channels (6)"]),
    "offset spatial size": (dict(offset_shape=(2, 24, 9, 8)), ["offset spatial size 9x8", "5x8"]),
    "bias length": (dict(bias_shape=(3,)), ["bias", "(6,)", "(3,)"]),
    "bias rank": (dict(bias_shape=(6, 1)), ["bias", "(6,)"]),
    "mask channels": (dict(mask_shape=(2, 6, 5, 8)), ["mask", "(2, 12, 5, 8)", "(2, 6, 5, 8)"]),
    "mask spatial size": (dict(mask_shape=(2, 12, 8, 5)), ["mask", "(2, 12, 5, 8)"]),
    "mask batch": (dict(mask_shape=(1, 12, 5, 8)), ["mask"]),
}


@pytest.mark.parametrize("name", list(BAD_CALLS))
def test_bad_shapes_raise_shape_error_naming_the_argument(name):
    changes, words = BAD_CALLS[name]
    with pytest.raises(ShapeError) as info:
        _spec(**changes)
    message = str(info.value)
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"


def test_importing_the_spec_does_not_import_torch():
    """spec.py is pure shape arithmetic: the CLI and the TensorRT profile code use it without paying for torch."""
    code = "import sys, dcn_deploy.ops.spec; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False", "importing dcn_deploy.ops.spec imported torch (via dcn_deploy/ops/__init__.py)"
