"""dcn_deploy.export: PyTorch -> ONNX (dcn_deploy ops with function bodies) -> stock ONNX Runtime, within tolerance.

Each torch.onnx export takes a few seconds on 2 cores, so one module exports several deformable layers with
different configurations at once, and its file is shared by the tests that read it.
"""
from __future__ import annotations

import shutil

import numpy as np
import onnx
import pytest

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")

from dcn_deploy.onnx import opset  # noqa: E402
from dcn_deploy.onnx.export import (ExportError, NoDeformableLayerError, VerificationError,  # noqa: E402
                                    export)
from dcn_deploy.ops.modules import DeformConv2d, ModulatedDeformConv2dPack  # noqa: E402
from dcn_deploy.ops.spec import conv_output_size  # noqa: E402

# name: (in, out, kernel, stride, padding, dilation, groups, offset_groups, bias, mask)
CONFIGS = {
    "v1": (4, 6, 3, 1, 1, 1, 1, 1, False, False),
    "v1_bias": (4, 6, 3, 1, 1, 1, 1, 1, True, False),
    "v2_bias": (4, 6, 3, 1, 1, 1, 1, 1, True, True),
    "v2_no_bias": (4, 6, 3, 1, 1, 1, 1, 1, False, True),
    "groups": (4, 8, 3, 1, 1, 1, 2, 1, True, True),
    "offset_groups": (6, 4, 3, 1, 0, 1, 1, 3, False, True),
    "asymmetric": (4, 5, (3, 2), (2, 1), (1, 0), (1, 2), 1, 2, True, False),
    "non_square_kernel": (4, 4, (1, 3), 1, (0, 2), (1, 2), 4, 2, False, True),
}
IMAGE = (2, 8, 7)  # batch, height, width (C per config)


class ManyDeformConvs(torch.nn.Module):
    """One DeformConv2d per config; inputs x_<name>, offset_<name>[, mask_<name>]; one output per config."""

    def __init__(self):
        super().__init__()
        self.layers = torch.nn.ModuleDict()
        for name, (cin, cout, k, s, p, d, g, _, bias, _) in CONFIGS.items():
            self.layers[name] = DeformConv2d(cin, cout, k, stride=s, padding=p, dilation=d, groups=g, bias=bias)

    def forward(self, *tensors):
        it = iter(tensors)
        outputs = []
        for name, config in CONFIGS.items():
            x, offset = next(it), next(it)
            mask = next(it) if config[-1] else None
            outputs.append(self.layers[name](x, offset, mask))
        return tuple(outputs)


def _example_inputs(model: ManyDeformConvs, batch: int, height: int, width: int, seed: int):
    generator = torch.Generator().manual_seed(seed)
    inputs = []
    for name, (cin, _, _, _, _, _, _, og, _, has_mask) in CONFIGS.items():
        layer = model.layers[name]
        kh, kw = layer.kernel_size
        oh = conv_output_size(height, kh, layer.stride[0], layer.padding[0], layer.padding[0], layer.dilation[0])
        ow = conv_output_size(width, kw, layer.stride[1], layer.padding[1], layer.padding[1], layer.dilation[1])
        inputs.append(torch.randn(batch, cin, height, width, generator=generator))
        inputs.append(2 * torch.randn(batch, 2 * og * kh * kw, oh, ow, generator=generator))
        if has_mask:
            inputs.append(torch.rand(batch, og * kh * kw, oh, ow, generator=generator))
    return tuple(inputs)


@pytest.fixture(scope="module")
def many(tmp_path_factory):
    torch.manual_seed(0)
    model = ManyDeformConvs().eval()
    for layer in model.layers.values():  # non-trivial bias values
        if layer.bias is not None:
            torch.nn.init.normal_(layer.bias)
    path = tmp_path_factory.mktemp("export") / "many.onnx"
    stages = []
    report = export(model, _example_inputs(model, *IMAGE, seed=1), path, progress=stages.append)
    return model, path, report, stages


def _run_ort(path, inputs):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    assert len(names) == len(inputs)
    return session.run(None, {n: t.numpy() for n, t in zip(names, inputs)})


def test_every_configuration_exports_to_one_dcn_deploy_node(many):
    model, path, report, stages = many
    loaded = onnx.load(str(path))
    onnx.checker.check_model(str(path), full_check=True)
    nodes = [n for n in loaded.graph.node if n.domain == opset.DOMAIN]
    assert [n.op_type for n in nodes] == ["DeformConv2d"] * len(CONFIGS)
    assert [(f.domain, f.name) for f in loaded.functions] == [(opset.DOMAIN, "DeformConv2d")]
    assert {(i.domain or "", i.version) for i in loaded.opset_import} >= {("", 19), (opset.DOMAIN, 1)}
    assert not any(a.name == "plugin_namespace" for n in nodes for a in n.attribute)  # TensorRT builder adds it
    for node, (name, (cin, _, k, s, p, d, g, og, bias, mask)) in zip(nodes, CONFIGS.items()):
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        layer = model.layers[name]
        assert attrs["strides"] == list(layer.stride), name
        assert attrs["pads"] == [layer.padding[0], layer.padding[1]] * 2, name
        assert attrs["dilations"] == list(layer.dilation), name
        assert (attrs["group"], attrs["offset_group"]) == (g, og), name
        # 3 inputs (v1, no bias), 4 (bias) or 5 (mask, with a zero bias when the layer has none)
        assert len(node.input) == (5 if mask else 4 if bias else 3), name
    assert report.op_counts == {"dcn_deploy::DeformConv2d": len(CONFIGS)}
    assert any("verifying" in s for s in stages)


def test_exported_file_matches_pytorch_in_stock_onnxruntime_on_new_inputs(many):
    model, path, report, _ = many
    assert report.verified and len(report.verification[0].outputs) == len(CONFIGS)
    inputs = _example_inputs(model, *IMAGE, seed=7)
    with torch.no_grad():
        expected = model(*inputs)
    got = _run_ort(path, inputs)
    for name, e, g in zip(CONFIGS, expected, got):
        assert g.shape == tuple(e.shape), name
        np.testing.assert_allclose(g, e.numpy(), rtol=1e-4, atol=1e-4, err_msg=name)
        assert np.abs(e.numpy()).max() > 0.1, name  # a real signal, not all zeros


def test_shape_inference_on_the_exported_file_gives_the_output_shapes(many):
    model, path, _, _ = many
    inferred = onnx.shape_inference.infer_shapes(onnx.load(str(path)), strict_mode=True)
    with torch.no_grad():
        expected = model(*_example_inputs(model, *IMAGE, seed=1))
    for output, e in zip(inferred.graph.output, expected):
        assert [d.dim_value for d in output.type.tensor_type.shape.dim] == list(e.shape)


def test_dynamic_export_runs_at_other_batch_and_sizes(tmp_path):
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(),
                                ModulatedDeformConv2dPack(4, 5, 3, stride=2, padding=1, deform_groups=2)).eval()
    for p in model[2].conv_offset.parameters():  # non-zero offsets and masks
        torch.nn.init.normal_(p, std=0.5)
    path = tmp_path / "dyn.onnx"
    report = export(model, (torch.randn(1, 3, 12, 10),), path, dynamic=True)
    (name, dtype, shape), = report.inputs
    assert (dtype, shape) == ("float", ("batch", 3, "height", "width"))
    assert [r.label for r in report.verification][1].endswith("batch 2, height/width x2")
    for batch, h, w in ((3, 9, 17), (1, 32, 6)):
        x = torch.randn(batch, 3, h, w)
        with torch.no_grad():
            expected = model(x).numpy()
        (got,) = _run_ort(path, (x,))
        assert got.shape == expected.shape == (batch, 5, (h + 1) // 2, (w + 1) // 2)
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_large_model_weights_go_to_an_external_data_file(tmp_path, monkeypatch):
    # A model over ~2 GiB cannot be one protobuf file; the threshold is lowered so that a small model takes that path.
    from dcn_deploy.onnx import export_file
    from dcn_deploy.onnx.inspect import inspect_model

    monkeypatch.setattr(export_file, "EXTERNAL_DATA_THRESHOLD_BYTES", 0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1),
                                ModulatedDeformConv2dPack(8, 8, 3, padding=1, deform_groups=2)).eval()
    torch.nn.init.normal_(model[1].conv_offset.weight, std=0.3)
    folder = tmp_path / "out"
    folder.mkdir()
    report = export(model, (torch.randn(1, 3, 9, 11),), folder / "big.onnx")
    assert report.verified  # ONNX Runtime loaded the weights from the data file
    assert report.weights_path == folder / "big.onnx.data" and "weights in" in str(report)
    assert sorted(p.name for p in folder.iterdir()) == ["big.onnx", "big.onnx.data"]  # no temporary leftovers
    proto = onnx.load(str(folder / "big.onnx"), load_external_data=False)
    external = [t.name for t in proto.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    assert external and all(e.value == "big.onnx.data" for t in proto.graph.initializer
                            if t.data_location == onnx.TensorProto.EXTERNAL for e in t.external_data if e.key == "location")
    assert inspect_model(folder / "big.onnx")["deformable_nodes"][0]["weight_shape"] == [8, 8, 3, 3]
    assert all((folder / name).stat().st_mode & 0o777 == (folder / "big.onnx").stat().st_mode & 0o777
               for name in ("big.onnx", "big.onnx.data"))  # the weights as readable as the model
    # a smaller model written over it takes its weights file away with it
    monkeypatch.setattr(export_file, "EXTERNAL_DATA_THRESHOLD_BYTES", 1 << 40)
    export(model, (torch.randn(1, 3, 9, 11),), folder / "small.onnx", verify=False)
    (folder / "keep.onnx.data").write_bytes(b"not ours")
    shutil.copy(folder / "small.onnx", folder / "keep.onnx")
    assert sorted(p.name for p in folder.iterdir()) == ["big.onnx", "big.onnx.data", "keep.onnx", "keep.onnx.data",
                                                        "small.onnx"]
    export(model, (torch.randn(1, 3, 9, 11),), folder / "keep.onnx", verify=False)  # its old file used no .data
    assert (folder / "keep.onnx.data").exists()
    monkeypatch.setattr(export_file, "EXTERNAL_DATA_THRESHOLD_BYTES", 0)
    export(model, (torch.randn(1, 3, 9, 11),), folder / "big.onnx")
    monkeypatch.setattr(export_file, "EXTERNAL_DATA_THRESHOLD_BYTES", 1 << 40)
    export(model, (torch.randn(1, 3, 9, 11),), folder / "big.onnx")
    assert not (folder / "big.onnx.data").exists()
    for name in ("small.onnx", "keep.onnx", "keep.onnx.data"):
        (folder / name).unlink()
    monkeypatch.setattr(export_file, "EXTERNAL_DATA_THRESHOLD_BYTES", 0)
    export(model, (torch.randn(1, 3, 9, 11),), folder / "big.onnx")
    # the pair moves together: the model refers to its weights by file name, not by path
    moved = tmp_path / "moved"
    folder.rename(moved)
    x = torch.randn(1, 3, 9, 11)
    with torch.no_grad():
        expected = model(x).numpy()
    np.testing.assert_allclose(_run_ort(moved / "big.onnx", (x,))[0], expected, rtol=1e-4, atol=1e-5)


def test_standard_option_emits_onnx_deform_conv(tmp_path):
    model = DeformConv2d(4, 6, (3, 2), stride=(1, 2), padding=(1, 0), dilation=(2, 1)).eval()
    x, off, mask = torch.randn(2, 4, 9, 8), torch.randn(2, 12, 7, 4), torch.rand(2, 6, 7, 4)
    path = tmp_path / "std.onnx"
    report = export(model, (x, off, mask), path, standard=True)
    loaded = onnx.load(str(path))
    (node,) = [n for n in loaded.graph.node if n.op_type == "DeformConv"]
    assert node.domain == "" and not loaded.functions
    assert {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}["kernel_shape"] == [3, 2]
    assert report.op_counts == {"ai.onnx::DeformConv": 1} and report.verified
    with torch.no_grad():
        expected = model(x, off, mask).numpy()
    np.testing.assert_allclose(_run_ort(path, (x, off, mask))[0], expected, rtol=1e-4, atol=1e-4)


def test_float16_export_runs_in_onnxruntime(tmp_path):
    model = DeformConv2d(4, 4, 3, padding=1).half().eval()
    inputs = (torch.randn(1, 4, 6, 6).half(), torch.randn(1, 18, 6, 6).half(), torch.rand(1, 9, 6, 6).half())
    report = export(model, inputs, tmp_path / "half.onnx")
    assert report.inputs[0][1] == "float16" and report.outputs[0][1] == "float16"
    assert report.verified
    assert report.verification[0].outputs[0].atol == pytest.approx(1e-2)


class ExportsSomethingElse(torch.nn.Module):
    """Computes y in PyTorch but writes y + 1 to the file: an export that cannot verify."""

    def __init__(self):
        super().__init__()
        self.dcn = DeformConv2d(2, 2, 3, padding=1)

    def forward(self, x, offset):
        y = self.dcn(x, offset)
        return y + 1 if torch.onnx.is_in_onnx_export() else y


def test_verification_failure_raises_and_keeps_the_file(tmp_path):
    path = tmp_path / "wrong.onnx"
    with pytest.raises(VerificationError, match="does not match PyTorch") as info:
        export(ExportsSomethingElse().eval(), (torch.randn(1, 2, 5, 5), torch.randn(1, 18, 5, 5)), path)
    assert path.exists()
    assert info.value.report.verification[0].outputs[0].max_abs == pytest.approx(1.0, rel=1e-5)


def test_model_without_deformable_layer_is_refused_unless_allowed(tmp_path):
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU()).eval()
    path = tmp_path / "plain.onnx"
    with pytest.raises(NoDeformableLayerError, match="no deformable convolution.*require_deformable=False"):
        export(model, (torch.randn(1, 3, 8, 8),), path)
    assert not path.exists()
    report = export(model, (torch.randn(1, 3, 8, 8),), path, require_deformable=False)
    assert path.exists() and report.op_counts == {} and report.verified


_TINY = (torch.randn(1, 2, 5, 5), torch.randn(1, 18, 5, 5))


@pytest.mark.parametrize("opset_version, message", [
    (18, "opset 18 is not supported.*from opset 19"),
    (99, "opset 99 is not supported"),
])
def test_unsupported_opset_is_refused(tmp_path, opset_version, message):
    with pytest.raises(ValueError, match=message):
        export(DeformConv2d(2, 2, 3, padding=1), _TINY, tmp_path / "m.onnx", opset=opset_version)
    assert not (tmp_path / "m.onnx").exists()


def test_bfloat16_needs_opset_22(tmp_path):
    model = DeformConv2d(2, 2, 3, padding=1).bfloat16()
    inputs = tuple(t.bfloat16() for t in _TINY)
    with pytest.raises(ValueError, match="bfloat16.*opset=22"):
        export(model, inputs, tmp_path / "bf16.onnx", opset=19)
    # at opset 22 it exports; ONNX Runtime's CPU provider cannot run it, and the warning says where it can run
    report = export(model.eval(), inputs, tmp_path / "bf16.onnx", opset=22)
    (warning,) = [w for w in report.warnings if w.startswith("not verified")]
    assert "--runner ort-cuda" in warning and "--precision bf16" in warning


def test_bfloat16_with_batch_norm_exports(tmp_path):
    # torch.onnx's optimizer folds BatchNorm into the Conv in float32 beside a bfloat16 input (onnx.checker: "W has
    # inconsistent type"); every zoo network has BatchNorm
    model = torch.nn.Sequential(torch.nn.Conv2d(2, 2, 1), torch.nn.BatchNorm2d(2)).eval().bfloat16()
    dcn = DeformConv2d(2, 2, 3, padding=1).eval().bfloat16()

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.pre, self.dcn = model, dcn

        def forward(self, x, offset):
            return self.dcn(self.pre(x), offset)

    report = export(Net(), tuple(t.bfloat16() for t in _TINY), tmp_path / "bf16_bn.onnx", opset=22)
    assert report.inputs[0][1] == "bfloat16"


def test_program_traced_in_training_mode_is_refused(tmp_path):
    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.bn, self.drop, self.dcn = torch.nn.BatchNorm2d(2), torch.nn.Dropout(0.5), DeformConv2d(2, 2, 3, padding=1)

        def forward(self, x, offset):
            return self.dcn(self.drop(self.bn(x)), offset)

    program = torch.export.export(Net().train(), _TINY)
    with pytest.raises(ExportError, match="traced in training mode.*model.eval\\(\\) before torch.export"):
        export(program, None, tmp_path / "train.onnx", verify=False)
    assert not (tmp_path / "train.onnx").exists()
    export(torch.export.export(Net().eval(), _TINY), None, tmp_path / "eval.onnx")  # eval mode: as before


@pytest.mark.parametrize("bad, message", [
    (_TINY[0], "got a single tensor; pass \\(x,\\)"),
    (list(_TINY), "must be a tuple of tensors.*got list"),
    ((), "example_inputs is empty"),
    ((_TINY[0], 3), "example_inputs\\[1\\] must be a torch.Tensor, got int"),
])
def test_bad_example_inputs_are_refused(tmp_path, bad, message):
    with pytest.raises(TypeError, match=message):
        export(DeformConv2d(2, 2, 3, padding=1), bad, tmp_path / "m.onnx")


def test_bad_model_and_output_path_are_refused(tmp_path):
    with pytest.raises(TypeError, match="must be a torch.nn.Module"):
        export(lambda x: x, _TINY, tmp_path / "m.onnx")
    with pytest.raises(ValueError, match="is a folder"):
        export(DeformConv2d(2, 2, 3, padding=1).eval(), _TINY, tmp_path)
    with pytest.raises(FileNotFoundError, match="folder .*missing does not exist"):
        export(DeformConv2d(2, 2, 3, padding=1).eval(), _TINY, tmp_path / "missing" / "m.onnx")


def test_exporter_failure_is_one_clear_error(tmp_path):
    class DataDependent(torch.nn.Module):
        def forward(self, x):
            if x.sum() > 0:  # data-dependent control flow cannot be exported
                return x
            return -x

    with pytest.raises(ExportError, match="torch.onnx.export \\(dynamo\\) failed on DataDependent"):
        export(DataDependent().eval(), (torch.randn(1, 2, 3, 3),), tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()


def test_program_of_a_batch_norm_without_running_stats_in_eval_mode_is_not_refused(tmp_path):
    """BatchNorm2d(track_running_stats=False) normalises with batch statistics in eval mode too (training=True in the
    traced batch_norm, running_mean None): that is no training-mode trace, and the nn.Module itself exports."""
    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.bn, self.dcn = torch.nn.BatchNorm2d(2, track_running_stats=False), DeformConv2d(2, 2, 3, padding=1)

        def forward(self, x, offset):
            return self.dcn(self.bn(x), offset)

    export(torch.export.export(Net().eval(), _TINY), None, tmp_path / "no_stats.onnx", verify=False)
