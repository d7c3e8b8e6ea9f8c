"""dcn_deploy.convert_modules: torchvision's DeformConv2d layers inside a model swapped for ours, in place.

The first tests need no torchvision. The walk itself (nesting, shared layers, the root, subclasses, hooks) is also
checked without torchvision, on a stand-in class that carries torchvision's module path and attributes, because
convert_modules recognises the class by that path; whether the real class converts and computes the same is
checked against torchvision itself further down (skipped where torchvision cannot be imported, e.g. CPU-only
machines: its compiled ops need libtorch_cuda).
"""
from __future__ import annotations

import copy
import warnings

import pytest
import torch
from torch import nn

import dcn_deploy
from dcn_deploy import DeformConv2d, convert_modules
from dcn_deploy.ops.convert import TORCHVISION_DEFORM_CONV, ConvertedModules


class _Plain(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.offset = nn.Conv2d(4, 18, 3, padding=1)
        self.dcn = DeformConv2d(4, 4, 3, padding=1)
        self.head = nn.Sequential(nn.ReLU(), nn.Conv2d(4, 2, 1))

    def forward(self, x):
        x = self.conv(x)
        return self.head(self.dcn(x, self.offset(x)))


def test_model_without_torchvision_layers_comes_back_unchanged():
    model = _Plain().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    children = dict(model.named_modules())
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing to warn about
        out, converted = convert_modules(model)
    assert out is model
    assert converted == [] and converted.skipped == [] and isinstance(converted, ConvertedModules)
    assert dict(model.named_modules()) == children and model.training
    after = model.state_dict()
    assert list(after) == list(before) and all(torch.equal(after[k], before[k]) for k in before)
    assert "converted 0" in str(converted)


def test_also_exported_from_dcn_deploy_ops():
    assert dcn_deploy.ops.convert_modules is convert_modules
    assert "convert_modules" in dir(dcn_deploy) and "convert_modules" in dcn_deploy.ops.__all__


@pytest.mark.parametrize("bad, words", [
    (torch.randn(2, 3), ["model must be a torch.nn.Module", "Tensor"]),
    (_Plain().state_dict(), ["state_dict", "build the model"]),
    (None, ["model must be a torch.nn.Module", "NoneType"]),
])
def test_argument_that_is_not_a_module_is_refused(bad, words):
    with pytest.raises(TypeError) as info:
        convert_modules(bad)
    assert all(w in str(info.value) for w in words), str(info.value)


def test_exported_program_is_refused_with_the_fix():
    program = torch.export.export(nn.ReLU(), (torch.randn(2, 3),))
    with pytest.raises(TypeError, match="ExportedProgram cannot be changed: convert the nn.Module, then export it"):
        convert_modules(program)


def test_torchscript_module_is_refused_with_the_fix():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TorchScript's deprecation notice
        scripted = torch.jit.trace(nn.Conv2d(2, 2, 1), torch.randn(1, 2, 3, 3))
    with pytest.raises(TypeError, match="convert the model first, then script it"):
        convert_modules(scripted)


# ----------------------------------------------------------------------------------------------------------------
# The walk, on a stand-in with torchvision's module path (see the module docstring)


def _stand_in_class():
    """A class that looks to convert_modules like torchvision.ops.DeformConv2d: same module path, name,
    constructor, attributes and parameter registration (``register_parameter("bias", None)`` without bias)."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1, bias=True):
        nn.Module.__init__(self)
        pair = nn.modules.utils._pair
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel_size, self.stride = pair(kernel_size), pair(stride)
        self.padding, self.dilation = pair(padding), pair(dilation)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels // groups, *self.kernel_size))
        if bias:
            self.bias = nn.Parameter(torch.randn(out_channels))
        else:
            self.register_parameter("bias", None)

    def forward(self, input, offset, mask=None):
        return dcn_deploy.deform_conv2d(input, offset, self.weight, self.bias, stride=self.stride,
                                        padding=self.padding, dilation=self.dilation, mask=mask)

    module, name = TORCHVISION_DEFORM_CONV
    return type(name, (nn.Module,), {"__init__": __init__, "forward": forward, "__module__": module,
                                     "__qualname__": name})


def test_walk_replaces_nested_shared_and_container_layers():
    StandIn = _stand_in_class()
    shared = StandIn(4, 4, 3, padding=1)
    model = nn.Module()
    model.block = nn.Sequential(nn.Conv2d(4, 4, 1), StandIn(4, 6, (3, 2), stride=(2, 1), dilation=(1, 2),
                                                            groups=2, bias=False))
    model.heads = nn.ModuleList([shared, nn.ModuleDict({"a": shared, "b": StandIn(4, 2, 1)})])
    model.block[1].eval()  # one layer's own mode differs from the model's
    model.heads[1]["b"].weight.requires_grad_(False)
    model.to(torch.float64)
    params = {name: p for name, p in model.named_parameters(remove_duplicate=False)}
    keys = list(model.state_dict())

    out, converted = convert_modules(model)

    assert out is model
    assert list(converted) == ["block.1", "heads.0", "heads.1.a", "heads.1.b"] and converted.skipped == []
    assert all(type(m) is DeformConv2d for m in (model.block[1], model.heads[0], model.heads[1]["b"]))
    assert model.heads[0] is model.heads[1]["a"]  # still one shared layer
    assert type(model.block[0]) is nn.Conv2d
    # the very same Parameter objects: values, dtype, device, requires_grad, and an optimizer's references
    assert all(p is params[name] for name, p in model.named_parameters(remove_duplicate=False))
    assert list(model.state_dict()) == keys
    assert model.heads[1]["b"].weight.requires_grad is False and model.block[1].weight.dtype == torch.float64
    assert model.block[1].training is False and model.heads[0].training is True
    layer = model.block[1]
    assert (layer.kernel_size, layer.stride, layer.dilation, layer.groups, layer.bias) == ((3, 2), (2, 1), (1, 2),
                                                                                          2, None)
    assert "converted 4" in str(converted) and "heads.1.b" in str(converted)


def test_root_layer_is_returned_converted():
    layer = _stand_in_class()(3, 5, 3, padding=1)
    out, converted = convert_modules(layer)
    assert type(out) is DeformConv2d and converted == [""] and out.weight is layer.weight


def test_subclass_and_hooked_layer_are_left_with_the_reason_and_a_warning():
    StandIn = _stand_in_class()

    class Scaled(StandIn):
        def forward(self, input, offset, mask=None):
            return 2 * super().forward(input, offset, mask)

    class Doubled(nn.Module):
        def forward(self, weight):
            return 2 * weight

    model = nn.Sequential(Scaled(2, 2, 1), StandIn(2, 2, 1), StandIn(2, 2, 1), StandIn(2, 2, 1))
    model[1].register_forward_hook(lambda module, args, output: output)
    nn.utils.parametrize.register_parametrization(model[3], "weight", Doubled())
    with pytest.warns(UserWarning, match="left these torchvision/mmcv-derived layers unconverted"):
        _, converted = convert_modules(model)
    assert converted == ["2"]
    reasons = dict(converted.skipped)
    assert set(reasons) == {"0", "1", "3"}
    assert "Scaled" in reasons["0"] and "override" in reasons["0"]
    assert "hooks" in reasons["1"] and "parametrizations" in reasons["3"]
    assert type(model[0]) is Scaled and type(model[1]) is StandIn and type(model[2]) is DeformConv2d
    assert nn.utils.parametrize.is_parametrized(model[3], "weight")
    assert "not converted: 0" in str(converted)


# ----------------------------------------------------------------------------------------------------------------
# Against torchvision itself (needs an importable torchvision: a CUDA build of torch, e.g. the GPU machine)


def _torchvision_ops():
    try:
        torchvision = pytest.importorskip("torchvision", reason="torchvision is not installed here (it is not a "
                                                                "dependency of dcn_deploy)")
    except (OSError, RuntimeError) as exc:  # beside a CPU-only torch its compiled ops need libtorch_cuda
        pytest.skip(f"torchvision is installed but cannot be imported: {type(exc).__name__}: {exc}"[:300])
    return torchvision.ops


OFFSET_SCALE = 12.0  # the offset convolutions' outputs are ~N(0, 0.3): scaled, some samples leave the image


def _off_image_fraction(offset, height, width, kernel=3, pad=1):
    """Share of a stride-1 3x3 layer's samples (offset (N, 2*G*k*k, H, W)) whose position is off the image, where
    all four bilinear neighbours are zero: y <= -1, y >= height, x <= -1 or x >= width."""
    n, _, oh, ow = offset.shape
    off = offset.reshape(n, -1, kernel, kernel, 2, oh, ow)
    taps = torch.arange(kernel, dtype=offset.dtype)
    y = (torch.arange(oh, dtype=offset.dtype) - pad).view(1, 1, 1, 1, oh, 1) + taps.view(1, 1, kernel, 1, 1, 1)
    x = (torch.arange(ow, dtype=offset.dtype) - pad).view(1, 1, 1, 1, 1, ow) + taps.view(1, 1, 1, kernel, 1, 1)
    y, x = y + off[:, :, :, :, 0], x + off[:, :, :, :, 1]
    return ((y <= -1) | (y >= height) | (x <= -1) | (x >= width)).double().mean().item()


class _TorchvisionNet(nn.Module):
    """torchvision layers nested at several depths: groups, bias=False, a non-square kernel with asymmetric stride
    and dilation, a mask; offsets scaled so that many samples land off the image."""

    def __init__(self, ops):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.offset1 = nn.Conv2d(8, 2 * 2 * 3 * 3, 3, padding=1)  # 2 offset groups
        self.dcn1 = ops.DeformConv2d(8, 8, 3, padding=1, groups=2)
        self.stage = nn.Sequential(nn.ReLU(), nn.ModuleDict({
            "offset": nn.Conv2d(8, 2 * 3 * 2, 3, stride=(2, 1), padding=(1, 2), dilation=(1, 2)),
            "dcn": ops.DeformConv2d(8, 6, (3, 2), stride=(2, 1), padding=(1, 1), dilation=(1, 2), bias=False),
        }))
        self.heads = nn.ModuleList([ops.DeformConv2d(6, 4, 1)])

    def forward(self, x):
        x = self.stem(x)
        offset = OFFSET_SCALE * self.offset1(x)
        mask = torch.sigmoid(offset[:, :18])
        x = self.dcn1(x, offset, mask)
        x = self.stage[0](x)
        x = self.stage[1]["dcn"](x, OFFSET_SCALE * self.stage[1]["offset"](x))
        return self.heads[0](x, 3 * x[:, :2])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_converted_torchvision_model_matches_torchvision(dtype):
    ops = _torchvision_ops()
    model = _TorchvisionNet(ops).to(dtype).eval()
    x = torch.randn(2, 3, 11, 9, dtype=dtype)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        expected = model(x)
        off_image = _off_image_fraction(model.offset1(model.stem(x)) * OFFSET_SCALE, 11, 9)
    assert 0.05 < off_image < 0.8, f"{off_image:.0%} of dcn1's samples off the image: the test needs some, not all"

    model, converted = convert_modules(model)

    assert list(converted) == ["dcn1", "stage.1.dcn", "heads.0"] and converted.skipped == []
    assert not any(type(m).__module__.startswith("torchvision") for m in model.modules())
    assert list(model.state_dict()) == list(state)
    assert all(torch.equal(v, state[k]) and v.dtype == dtype for k, v in model.state_dict().items())
    with torch.no_grad():
        actual = model(x)
    tol = {torch.float32: 1e-5, torch.float64: 1e-12}[dtype]
    torch.testing.assert_close(actual, expected, rtol=tol, atol=tol)


def test_converted_torchvision_layer_matches_on_random_offsets_and_gradients():
    ops = _torchvision_ops()
    layer = ops.DeformConv2d(6, 4, (2, 3), stride=(1, 2), padding=(0, 1), dilation=(2, 1), groups=2).double()
    x = torch.randn(2, 6, 8, 10, dtype=torch.float64, requires_grad=True)
    oh = (8 - 2 * (2 - 1) - 1) // 1 + 1
    ow = (10 + 2 - (3 - 1) - 1) // 2 + 1
    offset = (8 * torch.randn(2, 2 * 2 * 3, oh, ow, dtype=torch.float64)).requires_grad_()
    mask = torch.rand(2, 2 * 3, oh, ow, dtype=torch.float64)
    expected = layer(x, offset, mask)
    grads_expected = torch.autograd.grad(expected.square().sum(), (x, offset, layer.weight))

    converted_layer, names = convert_modules(layer)
    assert names == [""] and type(converted_layer) is DeformConv2d
    actual = converted_layer(x, offset, mask)
    torch.testing.assert_close(actual, expected, rtol=1e-10, atol=1e-10)
    grads = torch.autograd.grad(actual.square().sum(), (x, offset, converted_layer.weight))
    for got, want in zip(grads, grads_expected):
        torch.testing.assert_close(got, want, rtol=1e-8, atol=1e-8)


def test_torchvision_class_is_recognised_by_its_path_and_a_subclass_is_not_converted():
    ops = _torchvision_ops()
    assert (ops.DeformConv2d.__module__, ops.DeformConv2d.__qualname__) == TORCHVISION_DEFORM_CONV

    class Custom(ops.DeformConv2d):
        pass

    model = nn.Sequential(Custom(2, 2, 1), ops.DeformConv2d(2, 2, 1, bias=False))
    with pytest.warns(UserWarning, match="unconverted"):
        model, converted = convert_modules(model)
    assert converted == ["1"] and [name for name, _ in converted.skipped] == ["0"]
    assert type(model[0]) is Custom and type(model[1]) is DeformConv2d and model[1].bias is None


def test_converted_torchvision_model_exports_and_verifies_in_onnx_runtime(tmp_path):
    ops = _torchvision_ops()
    pytest.importorskip("onnxruntime")
    model = _TorchvisionNet(ops).eval()
    model, converted = convert_modules(model)
    assert len(converted) == 3
    report = dcn_deploy.export(model, (torch.randn(1, 3, 12, 10),), tmp_path / "net.onnx", dynamic=True)
    assert report.verified  # export raises when ONNX Runtime disagrees with PyTorch
    assert sum(report.op_counts.values()) == 3
    assert sum(type(m) is DeformConv2d for m in copy.deepcopy(model).modules()) == 3  # an ordinary module now


# ----------------------------------------------------------------------------------------------------------------
# torchvision's deform_conv2d called as a function: convert_modules cannot swap it, export says so

FUNCTIONAL_TORCHVISION = '''
import json, sys
import torch
import dcn_deploy

# torchvision's op as torchvision registers it (its schema); computed by ours, since torchvision's compiled ops do
# not load on CPU-only torch. The exporter translates torchvision::deform_conv2d to the standard DeformConv.
lib = torch.library.Library("torchvision", "DEF")
lib.define("deform_conv2d(Tensor input, Tensor weight, Tensor offset, Tensor mask, Tensor bias, SymInt stride_h, "
           "SymInt stride_w, SymInt pad_h, SymInt pad_w, SymInt dilation_h, SymInt dilation_w, SymInt groups, "
           "SymInt offset_groups, bool use_mask) -> Tensor")


def _impl(input, weight, offset, mask, bias, sh, sw, ph, pw, dh, dw, groups, offset_groups, use_mask):
    return dcn_deploy.deform_conv2d(input, offset, weight, bias, (sh, sw), (ph, pw), (dh, dw),
                                    mask if use_mask else None)


lib.impl("deform_conv2d", _impl, "CPU")
torch.library.register_fake("torchvision::deform_conv2d", lambda input, weight, offset, mask, bias, *args:
                            input.new_empty(input.shape[0], weight.shape[0], offset.shape[2], offset.shape[3]),
                            lib=lib)


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.offset = torch.nn.Conv2d(4, 18, 3, padding=1)
        self.dcn = dcn_deploy.DeformConv2d(4, 4, 3, padding=1)
        self.weight = torch.nn.Parameter(torch.randn(4, 4, 3, 3) / 6)

    def forward(self, x):
        x = self.dcn(x, self.offset(x))
        mask = torch.ones(x.shape[0], 9, x.shape[2], x.shape[3])
        return torch.ops.torchvision.deform_conv2d(x, self.weight, self.offset(x), mask, torch.zeros(4),
                                                   1, 1, 1, 1, 1, 1, 1, 1, True)  # torchvision.ops.deform_conv2d


report = dcn_deploy.export(Net().eval(), (torch.randn(1, 4, 6, 5),), sys.argv[1], progress=None)
print(json.dumps({"ops": report.op_counts, "warnings": report.warnings}))
'''


def test_export_warns_about_a_functional_torchvision_call_it_leaves_standard(tmp_path):
    """A forward that calls torchvision.ops.deform_conv2d itself keeps torchvision's op (convert_modules swaps layers
    only); the exporter writes it as a standard DeformConv beside ours, which is correct but not our op (no
    plugin in TensorRT). The report says so, where it was called, and the fix. A separate process: the stand-in
    torchvision op must not meet a real torchvision in this one."""
    pytest.importorskip("onnxruntime")
    import json
    import subprocess
    import sys

    (tmp_path / "functional_net.py").write_text(FUNCTIONAL_TORCHVISION)
    # torch's exporter registers its torchvision translations only where a torchvision package is found: an empty
    # one beside the script (sys.path[0]) stands in for it
    (tmp_path / "torchvision").mkdir()
    (tmp_path / "torchvision" / "__init__.py").write_text("")
    done = subprocess.run([sys.executable, str(tmp_path / "functional_net.py"), str(tmp_path / "net.onnx")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["ops"] == {"dcn_deploy::DeformConv2d": 1, "ai.onnx::DeformConv": 1}
    (warning,) = [w for w in result["warnings"] if "DeformConv" in w]
    line = next(i for i, text in enumerate(FUNCTIONAL_TORCHVISION.splitlines(), 1)
                if "return torch.ops.torchvision.deform_conv2d(" in text)
    assert f"1 standard DeformConv node(s) (called at functional_net.py:{line})" in warning, warning
    assert "torchvision.ops.deform_conv2d" in warning and "Call dcn_deploy.deform_conv2d" in warning
    assert f"dcn_deploy.adopt_file({str(tmp_path / 'net.onnx')!r})" in warning
