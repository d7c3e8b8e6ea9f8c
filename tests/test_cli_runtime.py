"""``dcn-deploy verify``, ``bench`` and ``infer`` through click's test runner: results, exit codes, bad input."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from dcn_deploy.backends.factory import tensorrt_missing_reason  # noqa: E402
from dcn_deploy.cli import main  # noqa: E402
from runtime_models import build_tiny_net, tiny_net_onnx, write_tiny_net  # noqa: E402


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """tiny.onnx (dynamic N/H/W), tiny_net.py:build (the same weights), a perturbed state_dict, an input file."""
    folder = tmp_path_factory.mktemp("cli")
    model = build_tiny_net()
    onnx_path = tiny_net_onnx(model, folder / "tiny.onnx")
    source = write_tiny_net(folder)
    wrong = {k: v + 0.05 for k, v in model.state_dict().items()}
    torch.save(wrong, folder / "wrong.pt")
    torch.save(model.state_dict(), folder / "right.pt")
    rng = np.random.default_rng(5)
    np.save(folder / "x.npy", rng.standard_normal((2, 2, 6, 5)).astype(np.float32))
    np.save(folder / "x_bad.npy", rng.standard_normal((2, 3, 6, 5)).astype(np.float32))
    return {"folder": folder, "onnx": str(onnx_path), "factory": f"{source}:build", "wrong": str(folder / "wrong.pt"),
            "right": str(folder / "right.pt"), "x": str(folder / "x.npy"), "x_bad": str(folder / "x_bad.npy"),
            "model": model}


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_help_of_each_command_has_examples():
    for command in ("verify", "bench", "infer"):
        result = run(command, "--help")
        assert result.exit_code == 0, result.output
        assert "Examples:" in result.output and f"dcn-deploy {command} " in result.output


def test_verify_against_torch_passes_and_fails(files):
    ok = run("verify", files["onnx"], "--against", "torch", "--model", files["factory"], "--shape", "x=1x2x7x7")
    assert ok.exit_code == 0, ok.output
    assert "ort against torch" in ok.output and "PASSED: 1 of 1" in ok.output

    same = run("verify", files["onnx"], "--model", files["factory"], "--weights", files["right"], "--input",
               f"x={files['x']}", "--json")
    assert same.exit_code == 0, same.output
    data = json.loads(same.output)
    assert data["passed"] and data["reference"] == "torch" and data["inputs"]["x"]["shape"] == [2, 2, 6, 5]
    assert data["outputs"][0]["max_abs"] < 1e-4

    bad = run("verify", files["onnx"], "--model", files["factory"], "--weights", files["wrong"],
              "--shape", "x=1x2x5x5", "--json")
    assert bad.exit_code == 1, bad.output
    data = json.loads(bad.output)
    assert not data["passed"] and data["outputs"][0]["max_abs"] > 1e-3


def test_verify_tolerance_options(files):
    # The same mismatching weights pass when the user accepts a huge tolerance.
    loose = run("verify", files["onnx"], "--model", files["factory"], "--weights", files["wrong"],
                "--shape", "x=1x2x5x5", "--atol", "100", "--rtol", "1")
    assert loose.exit_code == 0, loose.output
    assert "100 / 1" in loose.output


def test_verify_against_ort_uses_the_reference_evaluator(files):
    result = run("verify", files["onnx"], "--against", "ort", "--shape", "x=1x2x4x4")
    assert result.exit_code == 0, result.output
    assert "onnx-reference against ort" in result.output


def test_verify_and_bench_read_the_model_file_once_for_themselves(files, monkeypatch):
    """verify and bench read the ONNX file once for what they take from it (stored example shapes, RoI inputs);
    beyond that only the runners load it: ONNX Runtime's session, and onnx-reference's evaluator (which needs the
    weights). They read it three times in Python before (0.3 s of 1.3 s for a 100 MB model)."""
    import onnx
    import onnxruntime

    loads = []
    real_load, real_session = onnx.load, onnxruntime.InferenceSession

    def load(path, *args, **kwargs):
        loads.append("onnx.load")
        return real_load(path, *args, **kwargs)

    class Session(real_session):
        def __init__(self, *args, **kwargs):
            loads.append("ort session")
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(onnx, "load", load)
    monkeypatch.setattr(onnxruntime, "InferenceSession", Session)
    result = run("verify", files["onnx"], "--against", "ort", "--shape", "x=1x2x4x4")
    assert result.exit_code == 0 and "onnx-reference against ort" in result.output, result.output
    assert sorted(loads) == ["onnx.load", "onnx.load", "ort session"]  # ours, onnx-reference's, ONNX Runtime's
    loads.clear()
    result = run("bench", files["onnx"], "--shape", "x=1x2x6x6", "--iterations", "2", "--warmup", "0",
                 "--no-progress")
    assert result.exit_code == 0, result.output
    # ours; ONNX Runtime's when make_runners checks that the model loads, and when benchmark reads the input
    # metadata and then times it
    assert sorted(loads) == ["onnx.load", "ort session", "ort session"]


@pytest.mark.parametrize("args, message", [
    (["--against", "torch"], "needs the PyTorch model"),
    (["--against", "ort", "--runner", "ort"], "choose two different runners"),
    (["--model", "no_such_module_xyz:build"], "cannot import module"),
    (["--shape", "x=1x3x4x4"], "dimension 1 is fixed to 2"),
    (["--shape", "y=1x2x4x4"], "not inputs of the model"),
    ([], "give its size: --shape x="),
    (["--input", "y=X"], "'y' is not an input of the model"),
    (["--input", "x=X_BAD"], "dimension 1 must be 2"),
    (["--input", "x=missing.npy"], "does not exist"),
])
def test_verify_bad_input_exits_2_with_a_clear_message(files, args, message):
    args = [a.replace("X_BAD", files["x_bad"]).replace("X", files["x"]) if a.startswith(("x=", "y=")) else a
            for a in args]
    result = run("verify", files["onnx"], *args)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output


def test_missing_model_file_exits_2(files):
    for command in ("verify", "bench", "infer"):
        extra = ["--input", files["x"]] if command == "infer" else []
        result = run(command, str(files["folder"] / "nope.onnx"), *extra)
        assert result.exit_code == 2 and "does not exist" in result.output


@pytest.mark.skipif(tensorrt_missing_reason() is None, reason="TensorRT is installed here")
def test_trt_says_tensorrt_is_missing(files):
    for args in (["verify", files["onnx"], "--against", "trt"], ["bench", files["onnx"], "--runner", "ort,trt"],
                 ["infer", files["onnx"], "--runner", "trt", "--input", files["x"]]):
        result = run(*args)
        assert result.exit_code == 2, result.output
        assert "TensorRT is not installed" in result.output and "pip install" in result.output


def test_bench_json_report(files, tmp_path):
    out = tmp_path / "bench.json"
    result = run("bench", files["onnx"], "--runner", "ort,torch", "--model", files["factory"], "--batch", "1,2",
                 "--shape", "x=1x2x8x8", "--iterations", "5", "--warmup", "1", "--json", "--no-progress", "-o", out)
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert json.loads(out.read_text()) == data
    assert [(r["runner"], r["batch"]) for r in data["results"]] == [("ort", 1), ("torch", 1), ("ort", 2), ("torch", 2)]
    for r in data["results"]:
        lat = r["latency_ms"]
        assert r["iterations"] == 5 and lat["min"] <= lat["median"] <= lat["p99"] <= lat["max"]
        assert r["inputs"]["x"] == [r["batch"], 2, 8, 8]


def test_bench_table_and_duration(files):
    result = run("bench", files["onnx"], "--shape", "x=1x2x6x6", "--duration", "0.2", "--warmup", "0", "--no-progress")
    assert result.exit_code == 0, result.output
    assert "0.2 s per measurement" in result.output
    assert "speed vs" not in result.output  # one runner: no ratio to show


@pytest.mark.parametrize("args, message", [
    (["--iterations", "3", "--duration", "1"], "not both"),
    (["--batch", "1,a"], "comma-separated integers"),
    (["--batch", "0"], "positive integers"),
    (["--runner", "ort,tvm"], "unknown runner(s) ['tvm']"),
    (["--runner", "ort,ort"], "names a runner twice"),
    (["--runner", "torch"], "needs the PyTorch model"),
])
def test_bench_bad_options_exit_2(files, args, message):
    result = run("bench", files["onnx"], "--shape", "x=1x2x4x4", "--no-progress", *args)
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_infer_writes_outputs_atomically_and_they_match(files, tmp_path):
    out = tmp_path / "out.npz"
    result = run("infer", files["onnx"], "--input", f"x={files['x']}", "-o", out)
    assert result.exit_code == 0, result.output
    assert "y: 2x4x6x5 float32" in result.output and f"outputs written to {out}" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.npz"]  # no temporary file left behind
    with np.load(out) as saved:
        y = saved["y"]
    with torch.no_grad():
        expected = files["model"](torch.from_numpy(np.load(files["x"]))).numpy()
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-5)

    single = tmp_path / "y.npy"
    as_json = run("infer", files["onnx"], "--input", files["x"], "-o", single, "--runner", "torch",
                  "--model", files["factory"], "--json")
    assert as_json.exit_code == 0, as_json.output
    summary = json.loads(as_json.output)
    assert summary["runner"] == "torch" and summary["outputs"]["y"]["shape"] == [2, 4, 6, 5]
    np.testing.assert_allclose(np.load(single), expected, rtol=1e-5, atol=1e-6)


def test_infer_bad_input(files, tmp_path):
    no_input = run("infer", files["onnx"])  # --input is required
    assert no_input.exit_code == 2 and "Missing option '--input'" in no_input.output, no_input.output
    wrong_suffix = run("infer", files["onnx"], "--input", files["x"], "-o", tmp_path / "out.txt")
    assert wrong_suffix.exit_code == 2 and "use a .npz file" in wrong_suffix.output
    bad_shape = run("infer", files["onnx"], "--input", f"x={files['x_bad']}")
    assert bad_shape.exit_code == 2 and "dimension 1 must be 2" in bad_shape.output
    assert not (tmp_path / "out.txt").exists()


def test_runtime_commands_import_no_heavy_modules():
    code = ("import sys\n"
            "import dcn_deploy.cli\n"  # registers every command, as `dcn-deploy --help` does
            "from dcn_deploy.commands import verify, bench, infer, demo\n"
            "heavy = sorted(m for m in ('torch', 'onnx', 'onnxruntime', 'tensorrt') if m in sys.modules)\n"
            "print(','.join(heavy))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_trt_build_options_cover_the_shapes_and_batches_asked_for(files):
    from dcn_deploy.backends.trt_profiles import parse_range_specs
    from dcn_deploy.commands._runtime import trt_build_options

    options = trt_build_options(Path(files["onnx"]), {"x": (2, 2, 8, 8)}, [1, 16])
    assert options["max_batch"] == 16
    (name, spec), = parse_range_specs(options["shapes"]).items()  # the TensorRT builder's own parser accepts them
    assert name == "x" and (spec.min, spec.opt, spec.max) == ((1, 2, 8, 8), (2, 2, 8, 8), (16, 2, 8, 8))
    assert trt_build_options(Path(files["onnx"]), {}, []) == {"max_batch": 8}
    # a size with no --batch (e.g. the file's stored example shape, batch 1) keeps the default batch range
    assert trt_build_options(Path(files["onnx"]), {"x": (1, 2, 8, 8)}, [])["shapes"] == ["x:1x2x8x8/1x2x8x8/8x2x8x8"]


@pytest.mark.tensorrt
@pytest.mark.skipif(tensorrt_missing_reason() is not None, reason="needs TensorRT (import tensorrt) and an NVIDIA GPU")
def test_trt_runner_in_verify_and_bench(files):
    verify = run("verify", files["onnx"], "--runner", "trt", "--against", "ort", "--shape", "x=1x2x8x8", "--json")
    assert verify.exit_code == 0, verify.output
    assert json.loads(verify.output)["passed"]
    bench = run("bench", files["onnx"], "--runner", "ort,trt", "--shape", "x=1x2x8x8", "--batch", "1,4",
                "--iterations", "5", "--json", "--no-progress")
    assert bench.exit_code == 0, bench.output
    results = json.loads(bench.output)["results"]
    trt = [r for r in results if r["runner"] != "ort"]
    assert len(trt) == 2 and all(set(r["phases_ms"]) == {"h2d", "compute", "d2h"} for r in trt)


def test_infer_warns_when_an_output_holds_nan(files, tmp_path):
    x = np.load(files["x"])
    x[0, 0, 0, 0] = np.nan
    nan_input = tmp_path / "nan.npy"
    np.save(nan_input, x)
    result = run("infer", files["onnx"], "--input", f"x={nan_input}")
    assert result.exit_code == 0, result.output
    (warning,) = [line for line in result.output.splitlines() if line.startswith("warning:")]
    assert warning.startswith("warning: output y holds ") and " NaN and 0 infinite value(s) of 240:" in warning
    clean = run("infer", files["onnx"], "--input", f"x={files['x']}")
    assert "warning" not in clean.output


def test_verify_holds_a_graph_converted_to_float16_to_float16s_tolerance(files, tmp_path):
    """A file whose graph computes in float16 behind float32 inputs and outputs (convert_precision, what an fp16
    engine runs): verify compares it at float16's tolerance and says so, instead of failing it at float32's."""
    import onnx

    from dcn_deploy.onnx.precision import convert_precision

    half, _ = convert_precision(onnx.load(files["onnx"]), "fp16")
    path = tmp_path / "half.onnx"
    onnx.save(half, str(path))
    result = run("verify", path, "--against", "ort", "--shape", "x=1x2x6x6", "--json")
    assert result.exit_code == 0, result.output
    (output,) = json.loads(result.stdout)["outputs"]
    assert (output["atol"], output["rtol"]) == (1e-2, 1e-2) and "computed in float16" in output["note"]


def test_json_reports_are_strict_json_when_outputs_hold_nan(files, tmp_path):
    """infer --json with a NaN in its input wrote bare NaN (not JSON: JSON.parse and jq refuse the file); every
    report goes through dcn_deploy.json_text, which writes "nan"/"inf" strings."""
    x = np.full((1, 2, 6, 6), np.nan, dtype=np.float32)
    np.save(tmp_path / "nan.npy", x)
    result = run("infer", files["onnx"], "--input", f"x={tmp_path / 'nan.npy'}", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout, parse_constant=lambda name: pytest.fail(f"non-JSON constant {name}"))
    assert "nan" in json.dumps(summary)
