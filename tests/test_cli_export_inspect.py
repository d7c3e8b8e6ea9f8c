"""``dcn-deploy export`` and ``dcn-deploy inspect`` through click's test runner.

One real export (a FILE.py:FACTORY model with --weights) is shared by the tests that read its file; bad inputs
fail before any export, so they are fast.
"""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import onnx
import pytest
from cli_helpers import cli_runner

from dcn_deploy.cli import main

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")

MODEL_FILE = textwrap.dedent("""
    import torch
    from dcn_deploy.ops.modules import ModulatedDeformConv2dPack


    class TinyNet(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = torch.nn.Conv2d(3, 4, 3, padding=1)
            self.dcn = ModulatedDeformConv2dPack(4, 4, 3, padding=1)
            self.head = torch.nn.Conv2d(4, 2, 1)

        def forward(self, x):
            return self.head(torch.relu(self.dcn(torch.relu(self.stem(x)))))


    def build():
        return TinyNet()


    def not_a_model():
        return 42
""")


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli")
    path = folder / "tinynet.py"
    path.write_text(MODEL_FILE)
    return path


@pytest.fixture(scope="module")
def trained_weights(model_file):
    """A state_dict with non-zero offsets (unlike a fresh model), so loading it changes the output."""
    sys.path.insert(0, str(model_file.parent))
    try:
        import tinynet
    finally:
        sys.path.remove(str(model_file.parent))
    torch.manual_seed(3)
    model = tinynet.build()
    for p in model.dcn.conv_offset.parameters():
        torch.nn.init.normal_(p, std=0.5)
    weights = model_file.parent / "tinynet.pt"
    torch.save(model.state_dict(), weights)
    return model.eval(), weights


@pytest.fixture(scope="module")
def exported(model_file, trained_weights):
    model, weights = trained_weights
    out = model_file.parent / "tiny.onnx"
    result = cli_runner().invoke(main, ["export", f"{model_file}:build", "--weights", str(weights),
                                     "--input-shape", "1x3x12x12", "-o", str(out), "--json"])
    return model, out, result


def test_help_lists_the_commands_with_examples():
    runner = cli_runner()
    top = runner.invoke(main, ["--help"])
    assert top.exit_code == 0 and "export" in top.output and "inspect" in top.output
    for name in ("export", "inspect"):
        result = runner.invoke(main, [name, "--help"])
        assert result.exit_code == 0
        assert "Examples:" in result.output and f"dcn-deploy {name} " in result.output


def test_cli_help_does_not_import_torch_or_onnx():
    code = ("import sys; from click.testing import CliRunner; from dcn_deploy.cli import main; "
            "r = CliRunner().invoke(main, ['export', '--help']); assert r.exit_code == 0, r.output; "
            "r = CliRunner().invoke(main, ['inspect', '--help']); assert r.exit_code == 0, r.output; "
            "print(sorted(m for m in ('torch', 'onnx', 'onnxruntime', 'onnxscript') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_export_writes_a_verified_file_with_the_given_weights(exported):
    model, out, result = exported
    assert result.exit_code == 0, result.output + str(result.exception)
    report = json.loads(result.stdout)
    assert report["verified"] and report["deformable_ops"] == {"dcn_deploy::DeformConv2d": 1}
    assert report["inputs"][0]["shape"] == [1, 3, 12, 12]
    for stage in ("[export] loading", "[export] exporting TinyNet", "[export] writing and checking",
                  "[export] verifying"):
        assert stage in result.stderr
    x = torch.randn(2, 3, 12, 12)[:1]
    with torch.no_grad():
        expected = model(x).numpy()
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    with torch.no_grad():  # the weights mattered: an untrained model gives another output
        model.dcn.conv_offset.weight.zero_()
        assert np.abs(model(x).numpy() - got).max() > 1e-3


def test_inspect_describes_the_exported_file(exported):
    _, out, _ = exported
    result = cli_runner().invoke(main, ["inspect", str(out)])
    assert result.exit_code == 0, result.output
    text = result.stdout
    assert "opsets: ai.onnx 19, dcn_deploy 1" in text
    assert "x: float [1 x 3 x 12 x 12]" in text
    assert "dcn_deploy::DeformConv2d  [weight 4x4x3x3; bias, mask (v2)]" in text
    assert "pads=[1, 1, 1, 1]" in text
    assert "dcn_deploy::DeformConv2d = ai.onnx::DeformConv  (opset ai.onnx 19)" in text


def test_inspect_nodes_lists_the_names_build_keep_fp32_takes(exported):
    """`build --keep-fp32 NAME` sends the user to inspect for node names; --nodes lists them (text and JSON), the
    plain summary says how to get them, and every listed name is one --keep-fp32 accepts."""
    from dcn_deploy.onnx.precision import check_keep_fp32_nodes

    _, out, _ = exported
    graph = onnx.load(str(out)).graph
    plain = cli_runner().invoke(main, ["inspect", str(out)])
    assert f"(node names and op types: dcn-deploy inspect --nodes {out})" in plain.stdout
    text = cli_runner().invoke(main, ["inspect", str(out), "--nodes"])
    assert text.exit_code == 0, text.output
    listed = [line.split() for line in text.stdout.splitlines()[-len(graph.node):]]
    expected = [[n.name, n.op_type if not n.domain else f"{n.domain}::{n.op_type}"] for n in graph.node]
    assert listed == expected and ["node_deform_conv2d", "dcn_deploy::DeformConv2d"] in listed
    info = json.loads(cli_runner().invoke(main, ["inspect", str(out), "--nodes", "--json"]).stdout)
    assert [(n["name"], n["op_type"]) for n in info["nodes"]] == [(n.name, n.op_type) for n in graph.node]
    check_keep_fp32_nodes(onnx.load(str(out)), [n["name"] for n in info["nodes"]])  # raises on a wrong name
    assert "nodes" not in json.loads(cli_runner().invoke(main, ["inspect", str(out), "--json"]).stdout)


def test_inspect_json(exported):
    _, out, _ = exported
    result = cli_runner().invoke(main, ["inspect", str(out), "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["opsets"] == {"ai.onnx": 19, "dcn_deploy": 1}
    (node,) = info["deformable_nodes"]
    assert node["domain"] == "dcn_deploy" and node["has_mask"] and node["has_bias"]
    assert node["attributes"]["group"] == 1 and node["attributes"]["offset_group"] == 1
    assert info["functions"][0]["body"] == ["ai.onnx::DeformConv"]
    assert [i["dtype"] for i in info["inputs"]] == ["float"]


def test_inspect_writes_its_json_to_a_file(exported, tmp_path):
    _, out, _ = exported
    target = tmp_path / "info.json"
    result = cli_runner().invoke(main, ["inspect", str(out), "--nodes", "-o", str(target)])
    assert result.exit_code == 0, result.output
    assert f"JSON description: {target}" in result.stdout and "deformable" in result.stdout.lower()
    written = json.loads(target.read_text())
    assert written == json.loads(cli_runner().invoke(main, ["inspect", str(out), "--nodes", "--json"]).stdout)
    assert written["nodes"] and not list(target.parent.glob("*.tmp*"))
    folder = cli_runner().invoke(main, ["inspect", str(out), "-o", str(tmp_path) + "/"])
    assert folder.exit_code == 2 and "names a folder" in folder.output


def test_export_of_a_saved_torch_export_program(tmp_path, model_file, trained_weights):
    model, _ = trained_weights
    program_path = tmp_path / "tiny.pt2"
    torch.export.save(torch.export.export(model, (torch.randn(1, 3, 10, 10),)), str(program_path))
    out = tmp_path / "from_program.onnx"
    result = cli_runner().invoke(main, ["export", str(program_path), "-o", str(out), "--standard"])
    assert result.exit_code == 0, result.output + str(result.exception)
    assert "ai.onnx::DeformConv x1" in result.stdout and "PASS" in result.stdout
    assert out.exists()


@pytest.mark.parametrize("args, message", [
    (["missing.py:build"], "missing.py: no such file"),
    (["{model}:no_such_factory"], "defines no function or class 'no_such_factory'; it defines TinyNet, build"),
    (["{model}:not_a_model"], "returned an int, not a torch.nn.Module"),
    (["{model}"], "name the function or class that builds the model"),
    (["no_such_zoo_model"], "no_such_zoo_model"),
    (["missing.pt2"], "missing.pt2: no such file"),
    (["dcn_deploy.no_such_module:build"], "cannot import module 'dcn_deploy.no_such_module'"),
    (["{model}:build", "--input-shape", "1x3xabc"], "sizes joined by 'x'"),
    (["{model}:build"], "give one --input-shape per model input"),
    (["{model}:build", "--input-shape", "1x3x8x8", "--opset", "17"], "opset 17 is not supported"),
    (["{model}:build", "--input-shape", "1x3x8x8", "--dtype", "bfloat16"], "pass --opset 22"),
    (["{model}:build", "--weights", "{weights_dir}/nothing.pt"], "nothing.pt: no such file"),
    (["{model}:build", "--weights", "{bad_weights}", "--input-shape", "1x3x8x8"], "does not fit the model"),
])
def test_bad_inputs_exit_2_with_a_clear_message(tmp_path, model_file, args, message):
    bad_weights = tmp_path / "bad.pt"
    torch.save({"other.weight": torch.zeros(2)}, bad_weights)
    args = [a.format(model=model_file, weights_dir=tmp_path, bad_weights=bad_weights) for a in args]
    out = tmp_path / "never.onnx"
    result = cli_runner().invoke(main, ["export", *args, "-o", str(out)])
    assert result.exit_code == 2, result.output + str(result.exception)
    assert "error:" in result.stderr and message in result.stderr.replace("\n", " ")
    assert "Traceback" not in result.stderr
    assert not out.exists()


def test_inspect_bad_files_exit_2(tmp_path):
    runner = cli_runner()
    missing = runner.invoke(main, ["inspect", str(tmp_path / "missing.onnx")])
    assert missing.exit_code == 2 and "does not exist" in missing.stderr
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00not an onnx model at all" * 10)
    result = runner.invoke(main, ["inspect", str(junk)])
    assert result.exit_code == 2 and "error:" in result.stderr and "junk.onnx" in result.stderr


def test_zoo_models_load_with_their_own_inputs():
    from dcn_deploy.onnx.model_loading import load_model

    loaded = load_model("resnet50_dcn_c5")
    assert loaded.kind == "zoo" and not loaded.model.training
    (image,) = loaded.example_inputs([(2, 3, 32, 48)])
    assert tuple(image.shape) == (2, 3, 32, 48)
    with pytest.raises(ValueError, match="takes 3 input channels"):
        loaded.example_inputs([(1, 4, 32, 32)])


def test_missing_zoo_gives_a_clear_error(monkeypatch):
    from dcn_deploy.onnx.model_loading import load_model

    monkeypatch.setitem(sys.modules, "dcn_deploy.models.zoo", None)  # as if models/zoo.py were absent
    with pytest.raises(ValueError, match="has no model zoo.*FILE.py:FACTORY"):
        load_model("resnet50_dcn_c5")


def test_inspect_summarises_a_long_function_body(tmp_path):
    # a RoI pooling body has hundreds of nodes: the text gives counts of the most frequent ops, --json all of them
    from dcn_deploy.onnx import opset, roi_opset
    from dcn_deploy.onnx.inspect import format_inspection, inspect_model

    names = ["X", "rois", "trans"]
    node = onnx.helper.make_node(roi_opset.DEFORM_PSROI_POOL, names, ["Y"], domain=opset.DOMAIN, output_dim=2,
                                 group_size=2, pooled_size=2)
    graph = onnx.helper.make_graph(
        [node], "g", [onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None) for n in names],
        [onnx.helper.make_tensor_value_info("Y", onnx.TensorProto.FLOAT, None)])
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 19)])
    opset.attach_functions(model)
    path = tmp_path / "psroi.onnx"
    onnx.save(model, str(path))
    info = inspect_model(path)
    (body,) = [f["body"] for f in info["functions"] if f["name"] == roi_opset.DEFORM_PSROI_POOL]
    line = next(x for x in format_inspection(info).splitlines() if "DeformPSRoIPool =" in x)
    kinds = len(set(body))
    assert line.startswith(f"  dcn_deploy::DeformPSRoIPool = {len(body)} nodes: Constant ")
    assert line.endswith(f", and {kinds - 8} more kinds  (opset ai.onnx 19)")
    assert " -> " not in line and "ai.onnx::If" in body


def test_export_dtype_choices_are_the_loaders_dtypes():
    """--dtype's choices are a copy (model_loading imports torch, the CLI must start without it): keep them equal."""
    from dcn_deploy.commands.export import _DTYPES
    from dcn_deploy.onnx.model_loading import DTYPES

    assert _DTYPES == tuple(DTYPES)


@pytest.mark.parametrize("given,name", [("fp16", "float16"), ("BF16", "bfloat16"), ("fp32", "float32"),
                                        ("float64", "float64"), ("half", "float16")])
def test_export_dtype_takes_the_short_spellings_build_uses(given, name):
    from dcn_deploy.commands.export import _dtype_option

    assert _dtype_option(None, None, given) == name


def test_export_dtype_names_the_choices_for_an_unknown_one(tmp_path):
    result = cli_runner().invoke(main, ["export", "dcn_deploy.models.demo:DemoNet", "--dtype", "fp8",
                                        "-o", str(tmp_path / "x.onnx")])
    assert result.exit_code == 2
    assert "'fp8' is not one of float32, float16, bfloat16, float64 (or fp32, fp16, bf16, fp64)" in result.stderr
    assert not list(tmp_path.iterdir())
