"""convert_modules on mmcv's deformable layers, and the CLI's export converting a model file's layers itself.

convert_modules recognises mmcv's classes by module path and name. The first tests check the walk's side (which
class becomes which, parameters and submodules taken over as the same objects, settings carried, layers refused
with the reason) on stand-ins that carry mmcv's module paths and attributes and whose forward fails, as mmcv's does
where its compiled ops are missing. Whether a converted layer computes what mmcv's computes is checked against mmcv
itself at the end (skipped where ``mmcv.ops`` cannot be imported: mmcv is not a dependency, and its compiled ops
must be built for this torch), and so is ``dcn_deploy.onnx.adopt`` on the files mmcv's own ONNX symbolics write
(torch's TorchScript exporter, ``mmcv::MMCV*`` nodes), run in ONNX Runtime. Run on 2026-11-27 in a venv with torch
2.13.0 (CPU), onnx 1.23.2, onnxruntime 1.32.0 and mmcv 2.2.0 built from its source package (``MMCV_WITH_OPS=1
MAX_JOBS=2 pip install --no-build-isolation mmcv==2.2.0`` with setuptools < 81 and mmengine 0.10.7; about 12 min on
2 cores): ``PYTHONPATH=. /tmp/mmcvenv/bin/python -m pytest -q tests/test_convert_mmcv.py``: all 59 passed (the 41
that need mmcv skip without it).
"""
from __future__ import annotations

import textwrap
import warnings

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from dcn_deploy import DeformConv2d, DeformConv2dPack, ModulatedDeformConv2dPack, convert_modules  # noqa: E402
from dcn_deploy.ops.convert import FOREIGN_LAYERS  # noqa: E402
from dcn_deploy.ops.roi_modules import DeformRoIPool, DeformRoIPoolPack, ModulatedDeformRoIPoolPack  # noqa: E402

pair = nn.modules.utils._pair


class _NoCompiledOps(nn.Module):
    def forward(self, *args):
        raise RuntimeError(f"{type(self).__qualname__}: mmcv's compiled ops are not loaded (a stand-in)")


def _stand_in(module: str, name: str, init):
    return type(name, (_NoCompiledOps,), {"__init__": init, "__module__": module, "__qualname__": name})


def _conv_init(with_bias: bool, offset_channels_per_point: int = 0):
    """mmcv's convolution layout: settings as attributes, ``weight``, ``bias`` (absent on DeformConv2d, a
    Parameter or None on ModulatedDeformConv2d) and, for the Pack classes, ``conv_offset``."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1,
                 deform_groups=1, bias=with_bias):
        nn.Module.__init__(self)
        self.in_channels, self.out_channels, self.groups, self.deform_groups = (in_channels, out_channels, groups,
                                                                              deform_groups)
        self.kernel_size, self.stride = pair(kernel_size), pair(stride)
        self.padding, self.dilation = pair(padding), pair(dilation)
        self.transposed, self.output_padding, self.im2col_step = False, (0,), 32
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels // groups, *self.kernel_size))
        if with_bias:
            self.bias = nn.Parameter(torch.randn(out_channels)) if bias else None
        if offset_channels_per_point:
            kh, kw = self.kernel_size
            self.conv_offset = nn.Conv2d(in_channels, deform_groups * offset_channels_per_point * kh * kw,
                                         self.kernel_size, self.stride, self.padding, self.dilation)
    return __init__


def _roi_init(pack: bool, modulated: bool = False):
    def __init__(self, output_size, output_channels=None, deform_fc_channels=1024, spatial_scale=1.0,
                 sampling_ratio=0, gamma=0.1):
        nn.Module.__init__(self)
        self.output_size, self.spatial_scale = pair(output_size), float(spatial_scale)
        self.sampling_ratio, self.gamma = int(sampling_ratio), float(gamma)
        if pack:
            self.output_channels, self.deform_fc_channels = output_channels, deform_fc_channels
            bins = self.output_size[0] * self.output_size[1]
            self.offset_fc = nn.Sequential(nn.Linear(bins * output_channels, deform_fc_channels), nn.ReLU(),
                                           nn.Linear(deform_fc_channels, deform_fc_channels), nn.ReLU(),
                                           nn.Linear(deform_fc_channels, bins * 2))
            if modulated:
                self.mask_fc = nn.Sequential(nn.Linear(bins * output_channels, deform_fc_channels), nn.ReLU(),
                                             nn.Linear(deform_fc_channels, bins), nn.Sigmoid())
    return __init__


CONV, MODULATED, ROI = "mmcv.ops.deform_conv", "mmcv.ops.modulated_deform_conv", "mmcv.ops.deform_roi_pool"
MmcvDeformConv2d = _stand_in(CONV, "DeformConv2d", _conv_init(with_bias=False))
MmcvDeformConv2dPack = _stand_in(CONV, "DeformConv2dPack", _conv_init(with_bias=False, offset_channels_per_point=2))
MmcvModulated = _stand_in(MODULATED, "ModulatedDeformConv2d", _conv_init(with_bias=True))
MmcvModulatedPack = _stand_in(MODULATED, "ModulatedDeformConv2dPack",
                              _conv_init(with_bias=True, offset_channels_per_point=3))
MmcvRoIPool = _stand_in(ROI, "DeformRoIPool", _roi_init(pack=False))
MmcvRoIPoolPack = _stand_in(ROI, "DeformRoIPoolPack", _roi_init(pack=True))
MmcvModulatedRoIPoolPack = _stand_in(ROI, "ModulatedDeformRoIPoolPack", _roi_init(pack=True, modulated=True))


def test_every_mmcv_class_is_in_the_table_once():
    keys = [layer.key for layer in FOREIGN_LAYERS]
    assert len(keys) == len(set(keys))
    stand_ins = [MmcvDeformConv2d, MmcvDeformConv2dPack, MmcvModulated, MmcvModulatedPack, MmcvRoIPool,
                 MmcvRoIPoolPack, MmcvModulatedRoIPoolPack]
    assert {(c.__module__, c.__qualname__) for c in stand_ins} == {k for k in keys if k[0].startswith("mmcv.")}


def _mmcv_model():
    model = nn.Module()
    model.backbone = nn.Sequential(
        MmcvDeformConv2dPack(6, 8, 3, stride=(2, 1), padding=(1, 2), dilation=(1, 2), groups=2, deform_groups=3),
        MmcvModulatedPack(8, 4, (3, 1), padding=(1, 0), deform_groups=2, bias=False),
        MmcvModulatedPack(4, 4, 1))
    model.heads = nn.ModuleDict({"plain": MmcvDeformConv2d(4, 4, 3, padding=1),
                                 "modulated": MmcvModulated(4, 2, 3, padding=1, groups=2, deform_groups=2)})
    model.roi = nn.ModuleList([MmcvRoIPool(7, spatial_scale=0.25, sampling_ratio=2, gamma=0.2),
                               MmcvRoIPoolPack(3, 4, deform_fc_channels=16, spatial_scale=0.5),
                               MmcvModulatedRoIPoolPack((2, 3), 4, deform_fc_channels=8, sampling_ratio=1)])
    return model


def test_mmcv_layers_become_ours_with_their_own_parameters_submodules_and_settings():
    model = _mmcv_model().to(torch.float64)
    model.backbone[1].eval()
    model.backbone[0].conv_offset.eval()  # a submodule's own flag differs from its layer's
    params = dict(model.named_parameters())
    children = {name: m for name, m in model.named_modules() if name.endswith(("conv_offset", "_fc"))}
    keys = list(model.state_dict())

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing is left, so nothing to warn about
        out, converted = convert_modules(model)

    assert out is model
    assert list(converted) == ["backbone.0", "backbone.1", "backbone.2", "heads.plain", "heads.modulated",
                               "roi.0", "roi.1", "roi.2"]
    assert converted.sources["backbone.1"] == "mmcv ModulatedDeformConv2dPack"
    assert converted.sources["roi.2"] == "mmcv ModulatedDeformRoIPoolPack"
    expected_types = [DeformConv2dPack, ModulatedDeformConv2dPack, ModulatedDeformConv2dPack, DeformConv2d,
                      DeformConv2d, DeformRoIPool, DeformRoIPoolPack, ModulatedDeformRoIPoolPack]
    assert [type(model.get_submodule(n)) for n in converted] == expected_types
    assert all(p is params[name] for name, p in model.named_parameters())
    assert all(m is children[name] for name, m in model.named_modules() if name in children)
    assert list(model.state_dict()) == keys
    assert model.backbone[1].training is False and model.backbone[0].training is True
    assert model.backbone[0].conv_offset.training is False

    first, modulated_head, roi = model.backbone[0], model.heads["modulated"], model.roi
    assert (first.kernel_size, first.stride, first.padding, first.dilation, first.groups, first.deform_groups,
            first.bias) == ((3, 3), (2, 1), (1, 2), (1, 2), 2, 3, None)
    assert model.backbone[1].bias is None and model.heads["plain"].bias is None
    assert modulated_head.bias is params["heads.modulated.bias"] and modulated_head.groups == 2
    assert (roi[0].output_size, roi[0].spatial_scale, roi[0].sampling_ratio, roi[0].gamma) == ((7, 7), 0.25, 2, 0.2)
    assert (roi[1].output_channels, roi[1].deform_fc_channels, roi[1].spatial_scale) == (4, 16, 0.5)
    assert roi[2].output_size == (2, 3) and roi[2].sampling_ratio == 1
    text = str(converted)
    assert text.startswith("converted 8 torchvision/mmcv deformable layer(s)") and "roi.1 (mmcv DeformRoIPoolPack)" in text


def test_converted_mmcv_layers_run_where_the_stand_ins_could_not():
    model = _mmcv_model()
    with pytest.raises(RuntimeError, match="compiled ops are not loaded"):
        model.backbone(torch.randn(1, 6, 9, 8))
    convert_modules(model)
    for layer in model.backbone:  # the offset branches are random: many samples leave the image
        nn.init.normal_(layer.conv_offset.weight, std=0.5)
    x = torch.randn(2, 6, 9, 8)
    y = model.backbone(x)
    assert y.shape == (2, 4, 5, 8) and torch.isfinite(y).all()
    features = torch.randn(2, 4, 12, 10)
    rois = torch.tensor([[0, 1.0, 2.0, 15.0, 13.0], [1, -4.0, 0.5, 6.0, 30.0]])
    assert model.roi[1](features, rois).shape == (2, 4, 3, 3)
    assert model.roi[2](features, rois).shape == (2, 4, 2, 3)


@pytest.mark.parametrize("make, words", [
    (lambda: MmcvModulatedPack(6, 4, 3, deform_groups=4), ["ModulatedDeformConv2dPack refuses its settings",
                                                           "in_channels (6) must be divisible by deform_groups (4)"]),
    (lambda: _with(MmcvDeformConv2dPack(4, 4, 3, deform_groups=2), "conv_offset", nn.Conv2d(4, 27, 3)),
     ["conv_offset has 27 output channels", "deform_groups=2", "need 36"]),
    (lambda: _with(MmcvDeformConv2d(4, 4, 3), "extra", nn.Parameter(torch.ones(1))),
     ["DeformConv2d has no place for", "extra"]),
    (lambda: _without(MmcvModulatedRoIPoolPack(2, 4, 8), "mask_fc"), ["submodule(s) ['mask_fc'] are missing"]),
    (lambda: type("MyDCN", (MmcvModulatedPack,), {})(4, 4, 3),
     ["MyDCN subclasses mmcv ModulatedDeformConv2dPack and may override forward", "replace it by hand"]),
])
def test_mmcv_layer_that_cannot_be_swapped_is_left_with_the_reason(make, words):
    model = nn.Sequential(make(), MmcvDeformConv2d(4, 4, 1))
    with pytest.warns(UserWarning, match="left these torchvision/mmcv-derived layers unconverted"):
        _, converted = convert_modules(model)
    assert converted == ["1"] and [name for name, _ in converted.skipped] == ["0"]
    reason = converted.skipped[0][1]
    assert all(w in reason for w in words), reason
    assert type(model[0]).__module__.startswith("mmcv.") or type(model[0]).__name__ == "MyDCN"


def _with(layer, name, value):
    setattr(layer, name, value)
    return layer


def _without(layer, name):
    delattr(layer, name)
    return layer


# ----------------------------------------------------------------------------------------------------------------
# The CLI converts a model file's layers itself


MODEL_FILE = textwrap.dedent("""
    import torch
    from torch import nn


    class ModulatedDeformConv2dPack(nn.Module):  # mmcv's class as the converter sees it; its forward cannot run
        def __init__(self, in_channels, out_channels, kernel_size, padding=0, deform_groups=1):
            super().__init__()
            pair = nn.modules.utils._pair
            self.in_channels, self.out_channels, self.groups, self.deform_groups = in_channels, out_channels, 1, deform_groups
            self.kernel_size, self.stride, self.padding, self.dilation = pair(kernel_size), (1, 1), pair(padding), (1, 1)
            self.weight = nn.Parameter(torch.randn(out_channels, in_channels, *self.kernel_size) / 10)
            self.bias = nn.Parameter(torch.randn(out_channels))
            self.conv_offset = nn.Conv2d(in_channels, deform_groups * 3 * self.kernel_size[0] * self.kernel_size[1],
                                         self.kernel_size, padding=self.padding)

        def forward(self, x):
            raise RuntimeError("mmcv's compiled ops are not loaded")


    ModulatedDeformConv2dPack.__module__ = "mmcv.ops.modulated_deform_conv"


    def build():
        torch.manual_seed(0)
        return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
                             ModulatedDeformConv2dPack(8, 8, 3, padding=1, deform_groups=2))
""")


def test_cli_export_converts_the_model_files_mmcv_layers_and_says_so(tmp_path):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from cli_helpers import cli_runner

    from dcn_deploy.cli import main

    (tmp_path / "net.py").write_text(MODEL_FILE)
    output = tmp_path / "net.onnx"
    result = cli_runner().invoke(main, ["export", f"{tmp_path / 'net.py'}:build", "--input-shape", "1x3x10x12",
                                        "-o", str(output)])
    assert result.exit_code == 0, result.output + result.stderr
    assert ("[export] converted 1 torchvision/mmcv deformable layer(s) to dcn_deploy's: 2 (mmcv "
            "ModulatedDeformConv2dPack)") in result.stderr
    assert output.is_file() and "PASS" in result.output


# ----------------------------------------------------------------------------------------------------------------
# Against mmcv itself (needs mmcv with its compiled ops; its CPU build has the two convolutions, not RoI pooling)


def _mmcv_ops():
    try:
        return pytest.importorskip("mmcv.ops", reason="mmcv is not installed here (it is not a dependency of "
                                                      "dcn_deploy)")
    except (OSError, RuntimeError, ImportError) as exc:  # installed without (or with mismatched) compiled ops
        pytest.skip(f"mmcv is installed but mmcv.ops cannot be imported: {type(exc).__name__}: {exc}"[:300])


CASES = [  # in, out, kernel, stride, padding, dilation, groups, deform_groups, input size
    (4, 6, 3, 1, 1, 1, 1, 1, (9, 7)),
    (8, 4, (3, 2), (2, 1), (1, 0), (1, 2), 2, 4, (11, 6)),
    (6, 6, (1, 3), (1, 2), (0, 2), (2, 1), 3, 2, (5, 9)),
    (4, 4, 3, 1, 1, 1, 1, 2, (1, 8)),
    (4, 2, 3, (2, 1), 1, (2, 1), 2, 1, (7, 1)),
]
# mmcv's DeformConv2dPack (v1) refuses an input smaller than its kernel ("invalid spatial size of offset", from its
# own shape check); its modulated layer and its plain DeformConv2d (which pads such inputs) take them.
V1_CASES = [c for c in CASES if min(c[-1]) >= 3]


def _mmcv_pack(case, modulated: bool, offset_weight_std: float):
    """mmcv's DCN (v1) or DCNv2 Pack layer of a CASES row, in eval mode, its offset branch drawn so that offsets
    span pixels (some samples leave the image); and the input shape (cin, h, w)."""
    ops = _mmcv_ops()
    cin, cout, k, stride, padding, dilation, groups, deform_groups, (h, w) = case
    cls = ops.ModulatedDeformConv2dPack if modulated else ops.DeformConv2dPack
    layer = cls(cin, cout, k, stride=stride, padding=padding, dilation=dilation, groups=groups,
                deform_groups=deform_groups).eval()
    nn.init.normal_(layer.conv_offset.weight, std=offset_weight_std)
    nn.init.normal_(layer.conv_offset.bias, std=2.0)
    return layer, (cin, h, w)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("modulated, case", [(False, c) for c in V1_CASES] + [(True, c) for c in CASES])
def test_converted_mmcv_pack_computes_what_mmcv_computes(case, modulated, dtype):
    layer, (cin, h, w) = _mmcv_pack(case, modulated, offset_weight_std=2.0)  # many samples leave the image
    layer = layer.to(dtype)
    x = torch.randn(2, cin, h, w, dtype=dtype)
    with torch.no_grad():
        expected = layer(x)
    converted_layer, names = convert_modules(layer)
    assert names == [""] and type(converted_layer) is (ModulatedDeformConv2dPack if modulated else DeformConv2dPack)
    with torch.no_grad():
        actual = converted_layer(x)
    tol = {torch.float32: 1e-5, torch.float64: 1e-12}[dtype]
    torch.testing.assert_close(actual, expected, rtol=tol, atol=tol * expected.abs().max().item())


@pytest.mark.parametrize("modulated", [False, True], ids=["v1", "v2"])
def test_converted_mmcv_pack_trains_as_mmcv_does(modulated):
    """The gradients of the input, the weight and the offset branch: one training step changes both alike."""
    import copy

    ops = _mmcv_ops()
    cls = ops.ModulatedDeformConv2dPack if modulated else ops.DeformConv2dPack
    layer = cls(4, 6, (3, 2), stride=(1, 2), padding=1, groups=2, deform_groups=2).double()
    nn.init.normal_(layer.conv_offset.weight, std=1.0)
    x = torch.randn(2, 4, 7, 9, dtype=torch.float64, requires_grad=True)
    ours, _ = convert_modules(copy.deepcopy(layer))
    grads = []
    for net in (layer, ours):
        wanted = [x, net.weight, net.conv_offset.weight]
        grads.append(torch.autograd.grad(net(x).square().sum(), wanted))
    for got, want in zip(grads[1], grads[0]):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10 * want.abs().max().item())


@pytest.mark.parametrize("case", CASES)
def test_converted_mmcv_plain_layers_compute_what_mmcv_computes(case):
    ops = _mmcv_ops()
    cin, cout, k, stride, padding, dilation, groups, deform_groups, (h, w) = case
    plain = ops.DeformConv2d(cin, cout, k, stride=stride, padding=padding, dilation=dilation, groups=groups,
                             deform_groups=deform_groups).double()
    modulated = ops.ModulatedDeformConv2d(cin, cout, k, stride=stride, padding=padding, dilation=dilation,
                                          groups=groups, deform_groups=deform_groups).double()
    nn.init.normal_(modulated.bias)
    kh, kw = pair(k)
    out_h = (h + 2 * pair(padding)[0] - pair(dilation)[0] * (kh - 1) - 1) // pair(stride)[0] + 1
    out_w = (w + 2 * pair(padding)[1] - pair(dilation)[1] * (kw - 1) - 1) // pair(stride)[1] + 1
    x = torch.randn(2, cin, h, w, dtype=torch.float64)
    offset = 4 * torch.randn(2, 2 * deform_groups * kh * kw, out_h, out_w, dtype=torch.float64)
    mask = torch.rand(2, deform_groups * kh * kw, out_h, out_w, dtype=torch.float64)
    with torch.no_grad():
        expected = (plain(x, offset), modulated(x, offset, mask))
    model = nn.ModuleList([plain, modulated])
    _, names = convert_modules(model)
    assert names == ["0", "1"] and all(type(m) is DeformConv2d for m in model)
    with torch.no_grad():
        actual = (model[0](x, offset), model[1](x, offset, mask))
    for got, want in zip(actual, expected):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12 * want.abs().max().item())


def test_real_mmcv_classes_are_the_ones_in_the_table():
    ops = _mmcv_ops()
    table = {layer.key for layer in FOREIGN_LAYERS}
    for cls in (ops.DeformConv2d, ops.DeformConv2dPack, ops.ModulatedDeformConv2d, ops.ModulatedDeformConv2dPack,
                ops.DeformRoIPool, ops.DeformRoIPoolPack, ops.ModulatedDeformRoIPoolPack):
        assert (cls.__module__, cls.__qualname__) in table, cls


def test_converted_mmcv_roi_packs_keep_mmcv_state_dict_and_run():
    ops = _mmcv_ops()
    model = nn.ModuleList([ops.DeformRoIPoolPack(3, 4, deform_fc_channels=8, sampling_ratio=2),
                           ops.ModulatedDeformRoIPoolPack(2, 4, deform_fc_channels=8, sampling_ratio=2)])
    keys = list(model.state_dict())
    _, names = convert_modules(model)
    assert names == ["0", "1"] and list(model.state_dict()) == keys
    rois = torch.tensor([[0, 1.0, 2.0, 9.0, 7.0]])
    assert model[1](torch.randn(1, 4, 8, 10), rois).shape == (1, 4, 2, 2)


def test_converted_mmcv_model_exports_and_verifies_in_onnx_runtime(tmp_path):
    ops = _mmcv_ops()
    pytest.importorskip("onnxruntime")
    import dcn_deploy

    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
                          ops.ModulatedDeformConv2dPack(8, 8, 3, padding=1, deform_groups=2), nn.ReLU(),
                          ops.DeformConv2dPack(8, 4, 3, stride=2, padding=1)).eval()
    for layer in (model[2], model[4]):
        nn.init.normal_(layer.conv_offset.weight, std=0.3)
    x = torch.randn(1, 3, 12, 10)
    with torch.no_grad():
        expected = model(x)
    model, converted = convert_modules(model)
    assert list(converted) == ["2", "4"]
    report = dcn_deploy.export(model, (x,), tmp_path / "net.onnx")
    assert report.verified and sum(report.op_counts.values()) == 2
    with torch.no_grad():
        torch.testing.assert_close(model(x), expected, rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------------------------------------------
# mmcv's own ONNX export (its symbolics write mmcv::MMCV* nodes) adopted as ours (dcn_deploy.onnx.adopt), run in ONNX
# Runtime against mmcv's CPU forward


def _export_legacy(model, args, path, names, opset=11, **kwargs):
    """As mmcv users export: torch's TorchScript exporter, which calls mmcv's autograd Functions' symbolics."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, args, str(path), dynamo=False, opset_version=opset, input_names=names,
                          output_names=["y"], **kwargs)


def _adopted_run(path, feeds, **kwargs):
    ort = pytest.importorskip("onnxruntime")
    from dcn_deploy.onnx.adopt import adopt_file

    adopted = adopt_file(path, **kwargs)
    session = ort.InferenceSession(str(adopted.path), providers=["CPUExecutionProvider"])
    return adopted.adoption, [torch.from_numpy(session.run(None, feed)[0]) for feed in feeds]


def _mmcv_nodes(path):
    import onnx
    from onnx import helper

    return [(n.op_type, list(n.input), {a.name: helper.get_attribute_value(a) for a in n.attribute})
            for n in onnx.load(str(path)).graph.node if n.domain == "mmcv"]


def _close(actual, expected, rtol=1e-5):
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=rtol * expected.abs().max().item())


@pytest.mark.parametrize("modulated, case", [(False, c) for c in V1_CASES] + [(True, c) for c in CASES])
def test_adopted_mmcv_export_matches_mmcv(tmp_path, case, modulated):
    _, _, _, stride, padding, dilation, groups, deform_groups, _ = case
    layer, (cin, h, w) = _mmcv_pack(case, modulated, offset_weight_std=0.5)
    if modulated:
        nn.init.normal_(layer.bias)
    x = torch.randn(2, cin, h, w)
    with torch.no_grad():
        expected = layer(x)
    _export_legacy(layer, (x,), tmp_path / "m.onnx", ["x"])
    (op, inputs, attrs), = _mmcv_nodes(tmp_path / "m.onnx")
    # what mmcv's symbolic writes: (h, w) pairs as lists, the input order of mmcv's Function
    assert op == ("MMCVModulatedDeformConv2d" if modulated else "MMCVDeformConv2d")
    assert (attrs["stride"], attrs["padding"], attrs["dilation"]) == (list(pair(stride)), list(pair(padding)),
                                                                      list(pair(dilation)))
    assert (attrs["groups"], attrs["deform_groups"]) == (groups, deform_groups)
    assert inputs[0] == "x" and len(inputs) == (5 if modulated else 3)
    adoption, (actual,) = _adopted_run(tmp_path / "m.onnx", [{"x": x.numpy()}])
    (node,) = adoption.nodes
    ph, pw = pair(padding)
    assert node.attributes == {"strides": list(pair(stride)), "pads": [ph, pw, ph, pw],
                               "dilations": list(pair(dilation)), "group": groups, "offset_group": deform_groups}
    _close(actual, expected)


@pytest.mark.parametrize("opset", [11, 17])
def test_adopted_mmcv_network_with_a_dynamic_batch_matches_mmcv(tmp_path, opset):
    """Both mmcv layers in one network, one modulated layer without a bias (a zero bias is added), the batch a
    dynamic axis (run at 2 and 3), the functional ops called with plain ints (the symbolic writes int attributes)."""
    ops = _mmcv_ops()

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Conv2d(3, 8, 3, padding=1)
            self.v2 = ops.ModulatedDeformConv2dPack(8, 8, 3, padding=1, deform_groups=2, bias=False)
            self.v1 = ops.DeformConv2dPack(8, 4, 3, stride=2, padding=(1, 2), groups=2, deform_groups=2)
            self.offset = nn.Conv2d(4, 27, 3, padding=1)
            self.weight = nn.Parameter(torch.randn(4, 4, 3, 3) * 0.2)

        def forward(self, x):
            y = self.v1(torch.relu(self.v2(torch.relu(self.stem(x)))))
            o1, o2, mask = torch.chunk(self.offset(y), 3, dim=1)
            return ops.modulated_deform_conv2d(y, torch.cat((o1, o2), 1), torch.sigmoid(mask), self.weight, None,
                                               1, 1, 1, 1, 1)

    torch.manual_seed(0)
    net = Net().eval()
    for layer in (net.v2, net.v1):
        nn.init.normal_(layer.conv_offset.weight, std=0.5)
        nn.init.normal_(layer.conv_offset.bias, std=2.0)
    inputs = [torch.randn(2, 3, 12, 10), torch.randn(3, 3, 12, 10)]
    with torch.no_grad():
        expected = [net(x) for x in inputs]
    path = tmp_path / "net.onnx"
    _export_legacy(net, (inputs[0],), path, ["x"], opset, dynamic_axes={"x": {0: "n"}, "y": {0: "n"}})
    nodes = _mmcv_nodes(path)
    assert [op for op, _, _ in nodes] == ["MMCVModulatedDeformConv2d", "MMCVDeformConv2d",
                                          "MMCVModulatedDeformConv2d"]
    assert len(nodes[0][1]) == 4 and nodes[1][2]["bias"] == 0 and nodes[1][2]["im2col_step"] == 32
    assert (nodes[2][2]["stride"], nodes[2][2]["padding"]) == (1, 1)  # ints, not lists
    adoption, actual = _adopted_run(path, [{"x": x.numpy()} for x in inputs])
    assert (adoption.opset_before, adoption.opset_after) == (opset, 19)
    assert [n.attributes["pads"] for n in adoption.nodes] == [[1, 1, 1, 1], [1, 2, 1, 2], [1, 1, 1, 1]]
    for got, want in zip(actual, expected):
        _close(got, want)


def test_mmcv_export_with_modules_as_functions_is_inlined_and_adopted(tmp_path):
    """torch's export_modules_as_functions puts mmcv's node inside a local function: adoption inlines the call, then
    rewrites the node, and the file computes mmcv's result."""
    ops = _mmcv_ops()
    from dcn_deploy.onnx.adopt import adopt_model

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), ops.ModulatedDeformConv2dPack(8, 4, 3, padding=1,
                                                                                     deform_groups=2)).eval()
    nn.init.normal_(net[1].conv_offset.weight, std=0.5)
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        expected = net(x)
    path = tmp_path / "fn.onnx"
    _export_legacy(net, (x,), path, ["x"], 15, export_modules_as_functions={ops.ModulatedDeformConv2dPack})
    import onnx

    _, adoption = adopt_model(onnx.load(str(path)))
    assert adoption.inlined and "ModulatedDeformConv2dPack" in adoption.inlined[0]
    _, (actual,) = _adopted_run(path, [{"x": x.numpy()}])
    _close(actual, expected)


def test_mmcv_export_with_nested_module_functions_is_inlined_and_adopted(tmp_path):
    """A block's function calling mmcv's layer's function (export_modules_as_functions={Block, the layer}): both
    calls are inlined (before, the block's function was refused as still holding the node)."""
    ops = _mmcv_ops()

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.dcn = ops.ModulatedDeformConv2dPack(8, 4, 3, padding=1, deform_groups=2)

        def forward(self, x):
            return torch.relu(self.dcn(x))

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), Block()).eval()
    nn.init.normal_(net[1].dcn.conv_offset.weight, std=0.5)
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        expected = net(x)
    path = tmp_path / "nested.onnx"
    _export_legacy(net, (x,), path, ["x"], 15, export_modules_as_functions={Block, ops.ModulatedDeformConv2dPack})
    adoption, (actual,) = _adopted_run(path, [{"x": x.numpy()}])
    assert len(adoption.inlined) == 2
    _close(actual, expected)


@pytest.mark.parametrize("sampling_ratio", [2, 0])
@pytest.mark.parametrize("modulated", [False, True], ids=["plain", "modulated"])
def test_adopted_mmcv_roi_pack_export_matches_our_op_with_the_same_weights(tmp_path, monkeypatch, modulated,
                                                                        sampling_ratio):
    """mmcv's DeformRoIPoolPack/ModulatedDeformRoIPoolPack exported through mmcv's symbolic (two MMCVDeformRoIPool
    nodes: without the offset, then with the offset_fc's). mmcv has no CPU forward for deformable RoI pooling, and
    the TorchScript exporter runs the forward while tracing ("deform_roi_pool_forward_impl: implementation for
    device cpu not found"), so the Function's forward is our deform_roi_pool here (its symbolic stays mmcv's), and
    the reference is the same mmcv module computing with our op: the adopted file is checked against our op with
    mmcv's weights and mmcv's module around it, not against mmcv's kernels."""
    ops = _mmcv_ops()
    from mmcv.ops.deform_roi_pool import DeformRoIPoolFunction

    from dcn_deploy.ops.roi_pool import deform_roi_pool

    def forward(ctx, input, rois, offset, output_size, spatial_scale=1.0, sampling_ratio=0, gamma=0.1):
        return deform_roi_pool(input, rois, offset, output_size, spatial_scale, sampling_ratio, gamma)

    monkeypatch.setattr(DeformRoIPoolFunction, "forward", staticmethod(forward))
    cls = ops.ModulatedDeformRoIPoolPack if modulated else ops.DeformRoIPoolPack
    torch.manual_seed(0)
    pool = cls((3, 2), 4, deform_fc_channels=8, spatial_scale=0.5, sampling_ratio=sampling_ratio, gamma=0.2).eval()
    for fc in pool.offset_fc:
        if isinstance(fc, nn.Linear):
            nn.init.normal_(fc.weight, std=0.5)
    x = torch.randn(2, 4, 10, 12)
    rois = torch.tensor([[0, 1.0, 2.0, 9.0, 7.0], [1, 0.0, 0.0, 11.0, 9.0], [1, 3.0, 1.0, 6.0, 8.0]])
    path = tmp_path / "roi.onnx"
    _export_legacy(pool, (x, rois), path, ["x", "rois"])
    nodes = _mmcv_nodes(path)
    assert [(op, len(inputs)) for op, inputs, _ in nodes] == [("MMCVDeformRoIPool", 2), ("MMCVDeformRoIPool", 3)]
    assert nodes[0][2] == pytest.approx({"pooled_height": 3, "pooled_width": 2, "spatial_scale": 0.5,
                                         "sampling_ratio": float(sampling_ratio), "gamma": 0.2})
    fixed = {} if sampling_ratio else {"roi_sampling_ratio": 2}  # adaptive sampling has no static form in our op
    adoption, (actual,) = _adopted_run(path, [{"x": x.numpy(), "rois": rois.numpy()}], **fixed)
    assert [n.attributes["sampling_ratio"] for n in adoption.nodes] == [2, 2]
    if not sampling_ratio:
        pool.sampling_ratio = 2  # the reference samples as the adopted file does
    with torch.no_grad():
        expected = pool(x, rois)
    _close(actual, expected)


# ----------------------------------------------------------------------------------------------------------------
# Old mmcv checkpoints through --weights (load_model): offset-branch keys of mmcv before its state_dict version 2

OLD_KEYS_MODEL = textwrap.dedent("""
    import torch
    import dcn_deploy


    class Net(torch.nn.Module):  # an mmcv-style layer: the offset branch inside it, as conv_offset
        def __init__(self):
            super().__init__()
            self.stem = torch.nn.Conv2d(3, 8, 3, padding=1)
            self.dcn = dcn_deploy.ModulatedDeformConv2dPack(8, 8, 3, padding=1)

        def forward(self, x):
            return self.dcn(self.stem(x))


    class OwnOffsetConv(torch.nn.Module):  # a torchvision-style model whose offset convolution is dcn_offset
        def __init__(self):
            super().__init__()
            self.dcn_offset = torch.nn.Conv2d(3, 18, 3, padding=1)
            self.dcn = dcn_deploy.DeformConv2d(3, 4, 3, padding=1)

        def forward(self, x):
            return self.dcn(x, self.dcn_offset(x))
""")


@pytest.mark.parametrize("old_name", ["dcn_offset", "dcn.conv_offset_mask"])
def test_old_mmcv_offset_keys_load_through_weights(tmp_path, old_name):
    from dcn_deploy.onnx.model_loading import load_model

    (tmp_path / "net.py").write_text(OLD_KEYS_MODEL)
    saved = {k: torch.randn_like(v) for k, v in load_model(f"{tmp_path / 'net.py'}:Net").model.state_dict().items()}
    old = {k.replace("dcn.conv_offset", old_name): v for k, v in saved.items()}
    assert f"{old_name}.weight" in old and "dcn.conv_offset.weight" not in old
    torch.save(old, tmp_path / "old.pt")
    loaded = load_model(f"{tmp_path / 'net.py'}:Net", tmp_path / "old.pt").model
    assert all(torch.equal(v, saved[k]) for k, v in loaded.state_dict().items())


def test_a_models_own_offset_convolution_keeps_its_keys(tmp_path):
    from dcn_deploy.onnx.model_loading import load_model

    (tmp_path / "net.py").write_text(OLD_KEYS_MODEL)
    saved = {k: torch.randn_like(v) for k, v in load_model(f"{tmp_path / 'net.py'}:OwnOffsetConv").model.state_dict().items()}
    assert "dcn_offset.weight" in saved and "dcn.weight" in saved  # what an mmcv key rename would take for old keys
    torch.save(saved, tmp_path / "w.pt")
    loaded = load_model(f"{tmp_path / 'net.py'}:OwnOffsetConv", tmp_path / "w.pt").model
    assert all(torch.equal(v, saved[k]) for k, v in loaded.state_dict().items())


def test_old_and_new_offset_keys_together_are_not_mixed_up(tmp_path):
    """A checkpoint holding a layer's old and new offset keys: the new ones load, the old ones are reported as
    unexpected, and every other key keeps its own tensor (renaming pair by pair, never by position)."""
    from dcn_deploy import upgrade_mmcv_state_dict
    from dcn_deploy.onnx.model_loading import load_model

    (tmp_path / "net.py").write_text(OLD_KEYS_MODEL)
    saved = {k: torch.randn_like(v) for k, v in load_model(f"{tmp_path / 'net.py'}:Net").model.state_dict().items()}
    mixed = dict(saved, **{"dcn.conv_offset_mask.weight": torch.zeros(1)})
    upgraded = upgrade_mmcv_state_dict(mixed)
    assert list(upgraded) == list(mixed) and all(upgraded[k] is mixed[k] for k in mixed)
    torch.save(mixed, tmp_path / "mixed.pt")
    with pytest.raises(ValueError, match=r"unexpected 1 \(e\.g\. dcn\.conv_offset_mask\.weight\)") as info:
        load_model(f"{tmp_path / 'net.py'}:Net", tmp_path / "mixed.pt")
    assert "missing" not in str(info.value)


# ----------------------------------------------------------------------------------------------------------------
# Layers left unconverted are refused before the exporter runs; RoI models from the CLI


def test_export_refuses_unconverted_layers_naming_them_and_the_fix(tmp_path):
    import dcn_deploy
    from dcn_deploy import UnconvertedLayerError

    class MyDCN(MmcvModulatedPack):
        pass

    model = nn.Sequential(MyDCN(4, 4, 3, padding=1), MmcvDeformConv2dPack(4, 4, 3, padding=1))
    with pytest.raises(UnconvertedLayerError) as info:
        dcn_deploy.export(model, (torch.randn(1, 4, 6, 6),), tmp_path / "m.onnx")
    message = str(info.value)
    assert message.startswith("Sequential has 2 mmcv deformable layer(s), whose compiled ops do not export: 0: ")
    assert "MyDCN subclasses mmcv ModulatedDeformConv2dPack" in message
    assert "1 (mmcv DeformConv2dPack): dcn_deploy.convert_modules(model) converts it" in message
    assert isinstance(info.value, ValueError) and not (tmp_path / "m.onnx").exists()


ROI_MODEL_FILE = textwrap.dedent("""
    import torch
    from dcn_deploy.ops.roi_modules import ModulatedDeformRoIPoolPack


    class Head(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = torch.nn.Conv2d(3, 4, 3, padding=1)
            self.pool = ModulatedDeformRoIPoolPack(3, 4, deform_fc_channels=8, spatial_scale=0.5)  # mmcv's adaptive 0

        def forward(self, image, rois):
            return self.pool(self.stem(image), rois)


    def build():
        torch.manual_seed(0)
        return Head()
""")


def test_cli_export_of_a_roi_model_with_input_shapes_and_a_fixed_sampling_ratio(tmp_path):
    pytest.importorskip("onnxruntime")
    from cli_helpers import cli_runner, error_lines

    from dcn_deploy.cli import main

    (tmp_path / "head.py").write_text(ROI_MODEL_FILE)
    args = ["export", f"{tmp_path / 'head.py'}:build", "--input-shape", "2x3x24x20", "--input-shape", "6x5",
            "-o", str(tmp_path / "head.onnx")]
    refused = cli_runner().invoke(main, args)
    assert refused.exit_code == 2, refused.output + refused.stderr
    (error,) = error_lines(refused)
    assert "'pool' use sampling_ratio=0" in error and "give --roi-sampling-ratio N" in error, error
    result = cli_runner().invoke(main, args + ["--roi-sampling-ratio", "2"])
    assert result.exit_code == 0, result.output + result.stderr
    assert "[export] sampling_ratio=2 on the adaptive RoI pooling layer(s) pool" in result.stderr
    assert "PASS" in result.output


def test_cli_verify_against_the_model_file_says_its_layers_were_swapped(tmp_path):
    pytest.importorskip("onnxruntime")
    from cli_helpers import cli_runner

    from dcn_deploy.cli import main

    (tmp_path / "net.py").write_text(MODEL_FILE)
    factory = f"{tmp_path / 'net.py'}:build"
    exported = cli_runner().invoke(main, ["export", factory, "--input-shape", "1x3x10x12", "-o",
                                          str(tmp_path / "net.onnx")])
    assert exported.exit_code == 0, exported.output + exported.stderr
    result = cli_runner().invoke(main, ["verify", str(tmp_path / "net.onnx"), "--against", "torch", "--model", factory])
    assert result.exit_code == 0, result.output + result.stderr
    assert (f"note: --model {factory}: converted 1 torchvision/mmcv deformable layer(s) to dcn_deploy's: 2 (mmcv "
            "ModulatedDeformConv2dPack); the torch runner runs those") in result.stderr


def test_a_detectors_checkpoint_for_its_backbone_gets_the_prefix_and_a_command(tmp_path):
    from dcn_deploy.onnx.model_loading import load_model

    (tmp_path / "net.py").write_text(OLD_KEYS_MODEL)
    factory = f"{tmp_path / 'net.py'}:Net"
    backbone = {k: torch.randn_like(v) for k, v in load_model(factory).model.state_dict().items()}
    detector = {"meta": {"epoch": 12}, "state_dict": {**{f"backbone.{k}": v for k, v in backbone.items()},
                                                      "neck.weight": torch.ones(2)}}
    import shlex
    import subprocess

    for name, checkpoint in [("det.pt", detector), ("model.pt", {"model": detector["state_dict"]}),
                             ("dp.pt", {f"module.{k}": v for k, v in detector["state_dict"].items()})]:
        torch.save(checkpoint, tmp_path / name)
        with pytest.raises(ValueError, match="under the prefix 'backbone.'") as info:
            load_model(factory, tmp_path / name)
        command = str(info.value).split("save that part alone, e.g. ")[1].split(" and give ")[0]
        (tmp_path / "part.pt").unlink(missing_ok=True)
        subprocess.run(shlex.split(command), cwd=tmp_path, check=True)  # the command as printed, in a shell's words
        loaded = load_model(factory, tmp_path / "part.pt").model
        assert all(torch.equal(v, backbone[k]) for k, v in loaded.state_dict().items()), name


def test_cli_export_takes_example_inputs_from_files(tmp_path):
    """--input NAME=FILE: the example inputs are the user's own arrays (real boxes, say), matched to the forward's
    argument names; float64 files are cast to the model's float32 with a note; mistakes are named."""
    pytest.importorskip("onnxruntime")
    import numpy as np
    import onnx
    from cli_helpers import cli_runner, error_lines

    from dcn_deploy.cli import main

    (tmp_path / "head.py").write_text(ROI_MODEL_FILE)
    rng = np.random.default_rng(3)
    np.save(tmp_path / "image.npy", rng.standard_normal((2, 3, 24, 20)))  # float64, as numpy saves by default
    np.save(tmp_path / "rois.npy", np.array([[0, 1, 2, 15, 12], [1, 4, 0, 19, 23], [1, 0, 0, 5, 5]], np.float32))
    base = ["export", f"{tmp_path / 'head.py'}:build", "--roi-sampling-ratio", "2", "-o", str(tmp_path / "h.onnx")]
    result = cli_runner().invoke(main, base + ["--input", f"image={tmp_path / 'image.npy'}",
                                               "--input", f"rois={tmp_path / 'rois.npy'}"])
    assert result.exit_code == 0, result.output + result.stderr
    assert "input 'image' from" in result.stderr and "was torch.float64, cast to the model's torch.float32" \
        in result.stderr
    # verified on the files' own inputs first, then on random ones
    assert "on the example inputs and random inputs" in result.stderr
    assert "example inputs 2x3x24x20, 3x5" in result.output and "random inputs, example shapes" in result.output
    model = onnx.load(str(tmp_path / "h.onnx"))
    assert [d.dim_value for d in model.graph.input[1].type.tensor_type.shape.dim] == [3, 5]  # the file's 3 boxes
    for extra, words in [(["--input", f"rois={tmp_path / 'rois.npy'}"], "no file gives input(s) ['image']"),
                         (["--input", f"boxes={tmp_path / 'rois.npy'}"], "'boxes' is not an input of the model"),
                         (["--input", f"image={tmp_path / 'image.npy'}", "--input", f"rois={tmp_path / 'rois.npy'}",
                           "--input-shape", "1x3x8x8"], "either as --input files or as --input-shape")]:
        refused = cli_runner().invoke(main, base + extra)
        assert refused.exit_code == 2, refused.output + refused.stderr
        assert any(words in line for line in error_lines(refused)), (words, refused.stderr)
