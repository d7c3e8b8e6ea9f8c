"""How the CLI reports bad input: exit code 2, one line ``error: ...`` naming the file, factory or option and the
fix, no traceback (unless --debug); exit 1 stays for "ran and the comparison failed"."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from cli_helpers import cli_runner

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")

from dcn_deploy.backends.base import RunnerError  # noqa: E402
from dcn_deploy.cli import main  # noqa: E402
from runtime_models import build_tiny_net, tiny_net_onnx, write_tiny_net  # noqa: E402

CUDA_PROVIDER = "CUDAExecutionProvider" in ort.get_available_providers()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """tiny.onnx (dynamic N/H/W) with tiny_net.py:build, broken model files and factories, an input file."""
    folder = tmp_path_factory.mktemp("cli_errors")
    model = build_tiny_net()
    onnx_path = tiny_net_onnx(model, folder / "tiny.onnx")
    source = write_tiny_net(folder)
    (folder / "junk.onnx").write_bytes(b"\x00this is not an onnx model" * 8)
    (folder / "boom.py").write_text("def build():\n    raise RuntimeError('boom')\n")
    (folder / "syntax.py").write_text("def build(:\n    pass\n")
    (folder / "needs_dep.py").write_text("import no_such_dependency_xyz\n\n\ndef build():\n    pass\n")
    (folder / "three_channels.py").write_text("import torch\n\n\ndef build():\n    return torch.nn.Conv2d(3, 4, 3)\n")
    # The TinyNet architecture with other (untrained-like) weights: what a factory without --weights gives.
    (folder / "untrained.py").write_text(
        "import torch\nfrom tiny_net import build as trained\n\n\ndef build():\n    model = trained()\n"
        "    with torch.no_grad():\n        for p in model.parameters():\n            p.add_(0.05)\n    return model\n")
    # Another network on the same input: weights cannot make its output the file's shape.
    (folder / "wider.py").write_text("import torch\n\n\ndef build():\n    return torch.nn.Conv2d(2, 7, 1)\n")
    torch.save({"other.weight": torch.ones(2)}, folder / "unrelated.pt")
    np.save(folder / "x.npy", np.random.default_rng(3).standard_normal((1, 2, 5, 5)).astype(np.float32))
    return {"folder": folder, "onnx": str(onnx_path), "factory": f"{source}:build", "junk": str(folder / "junk.onnx"),
            "x": str(folder / "x.npy")}


def run(*args):
    return cli_runner().invoke(main, [str(a) for a in args])


def assert_bad_input(result, *fragments):
    """Exit 2, the fragments in one 'error: ...' line on stderr, no traceback."""
    assert result.exit_code == 2, (result.output, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert "Traceback" not in result.output + result.stderr
    assert not any(line.startswith("Error: ") for line in result.stderr.splitlines())  # click's spelling


# model files that are not ONNX models --------------------------------------------------------------------------
@pytest.mark.parametrize("command", [
    ["infer", "JUNK", "--input", "X"],
    ["verify", "JUNK", "--against", "torch", "--model", "FACTORY"],
    ["verify", "JUNK", "--against", "ort"],
    ["bench", "JUNK", "--runner", "ort,onnx-reference", "--no-progress"],
])
def test_a_model_file_that_is_not_onnx_is_named(files, command):
    args = [files["junk"] if a == "JUNK" else files["x"] if a == "X" else files["factory"] if a == "FACTORY" else a
            for a in command]
    assert_bad_input(run(*args), files["junk"], "not a readable ONNX model", "give an .onnx file")


def test_an_empty_model_file_is_named(files, tmp_path):
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    assert_bad_input(run("infer", empty, "--input", files["x"]), f"ort: {empty} is not a readable ONNX model")


def test_onnx_io_metadata_names_a_file_protobuf_cannot_read(files, tmp_path):
    from dcn_deploy.backends.factory import onnx_io_metadata

    with pytest.raises(ValueError, match="junk.onnx is not a readable ONNX model"):
        onnx_io_metadata(files["junk"])
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")  # protobuf reads an empty file as an empty message: no graph
    with pytest.raises(ValueError, match="empty.onnx is not a readable ONNX model .no ONNX graph in it"):
        onnx_io_metadata(empty)
    inputs, outputs = onnx_io_metadata(files["onnx"])
    assert [m.name for m in inputs] == ["x"] and outputs == ("y",)


# an execution provider that is not there ------------------------------------------------------------------------
@pytest.mark.skipif(CUDA_PROVIDER, reason="this onnxruntime has the CUDA provider, so ort-cuda loads")
def test_ort_cuda_without_the_cuda_provider(files):
    result = run("infer", files["onnx"], "--input", files["x"], "--runner", "ort-cuda")
    assert_bad_input(result, "CUDA execution provider is not available", "onnxruntime-gpu", "--runner ort")
    assert "device 'cpu'" not in result.stderr

    from dcn_deploy.backends.ort_runner import OrtRunner

    with pytest.raises(RunnerError, match=r"device='cpu'"):  # the library's own callers get their spelling
        OrtRunner(files["onnx"], device="cuda").activate()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message printed without a CUDA device")
def test_torch_cuda_without_a_gpu(files):
    result = run("verify", files["onnx"], "--runner", "torch-cuda", "--against", "ort", "--model", files["factory"],
                 "--shape", "x=1x2x5x5")
    assert_bad_input(result, "torch-cuda: device 'cuda' was asked for but this PyTorch", "has no usable CUDA device",
                     "--runner torch")


def test_torch_cuda_needs_the_model_too(files):
    result = run("bench", files["onnx"], "--runner", "ort,torch-cuda", "--shape", "x=1x2x4x4")
    assert_bad_input(result, "the torch-cuda runner needs the PyTorch model: add --model")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_torch_cuda_verifies_against_torch_on_the_cpu(files):
    """Both torch runners at once (each its own copy of the module: activating one moves it to its device)."""
    result = run("verify", files["onnx"], "--runner", "torch-cuda", "--against", "torch", "--model",
                 files["factory"], "--shape", "x=2x2x6x7")
    assert result.exit_code == 0, (result.output, result.stderr)
    assert "torch-cuda against torch" in result.output


def test_channels_last_runs_the_torch_runner_so_and_needs_one(files):
    passed = run("verify", files["onnx"], "--against", "torch", "--model", files["factory"], "--channels-last",
                 "--shape", "x=2x2x6x7")
    assert passed.exit_code == 0, (passed.output, passed.stderr)
    timed = run("bench", files["onnx"], "--runner", "ort,torch", "--model", files["factory"], "--channels-last",
                "--shape", "x=1x2x4x4", "--iterations", "2", "--warmup", "0", "--no-progress")
    assert timed.exit_code == 0 and " torch-channels-last " in timed.output, (timed.output, timed.stderr)
    result = run("bench", files["onnx"], "--runner", "ort", "--channels-last", "--shape", "x=1x2x4x4")
    assert_bad_input(result, "--channels-last is only used by the torch runners; add one (e.g. --runner ort,torch)")


# the user's model code fails ----------------------------------------------------------------------------------
def test_a_factory_that_raises_is_named_with_its_error(files):
    boom = files["folder"] / "boom.py"
    result = run("verify", files["onnx"], "--model", f"{boom}:build", "--shape", "x=1x2x5x5")
    assert_bad_input(result, f"error: {boom}:build raised RuntimeError: boom (at boom.py:2)",
                     "called with no arguments")


def test_a_module_factory_that_raises_is_named(files, tmp_path, monkeypatch):
    (tmp_path / "cli_errors_user_models.py").write_text("def build():\n    raise ValueError('no such layer')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    result = run("infer", files["onnx"], "--input", files["x"], "--runner", "torch",
                 "--model", "cli_errors_user_models:build")
    assert_bad_input(result, "error: cli_errors_user_models:build raised ValueError: no such layer "
                             "(at cli_errors_user_models.py:2)")


@pytest.mark.parametrize("file, error", [
    ("syntax.py", "raised SyntaxError: invalid syntax"),
    ("needs_dep.py", "raised ModuleNotFoundError: No module named 'no_such_dependency_xyz' (at needs_dep.py:1)"),
])
def test_a_model_file_that_cannot_be_imported_is_named(files, file, error):
    path = files["folder"] / file
    result = run("bench", files["onnx"], "--runner", "ort,torch", "--model", f"{path}:build", "--shape", "x=1x2x5x5",
                 "--no-progress")
    assert_bad_input(result, f"importing {path} {error}", f"fix {path}")


def test_the_loaders_own_errors_pass_unchanged(files):
    # Not "raised ...": model_loading's messages already name the reference and the fix.
    missing = run("verify", files["onnx"], "--model", f"{files['factory'][:-len(':build')]}:nosuch")
    assert_bad_input(missing, "defines no function or class 'nosuch'; it defines")
    unfit = run("verify", files["onnx"], "--model", files["factory"], "--weights", files["folder"] / "unrelated.pt")
    assert_bad_input(unfit, "does not fit the model built by")
    assert "raised" not in missing.stderr + unfit.stderr


def test_verify_when_the_torch_model_does_not_fit_the_inputs(files):
    factory = f"{files['folder'] / 'three_channels.py'}:build"
    result = run("verify", files["onnx"], "--against", "torch", "--model", factory, "--shape", "x=1x2x5x5")
    assert_bad_input(result, f"--model {factory}: the model failed on inputs (x: (1, 2, 5, 5))", "3 channels",
                     "builds the network tiny.onnx was exported from")


# a failed comparison is exit 1, with a hint about --weights only when it applies ---------------------------------
def test_verify_failure_without_weights_hints_at_weights(files):
    factory = f"{files['folder'] / 'untrained.py'}:build"
    failed = run("verify", files["onnx"], "--model", factory, "--shape", "x=1x2x5x5")
    assert failed.exit_code == 1, (failed.output, failed.stderr)
    assert "FAIL" in failed.output and "error:" not in failed.stderr
    assert f"hint: --model {factory} builds an untrained model unless --weights" in failed.stderr

    passed = run("verify", files["onnx"], "--model", files["factory"], "--shape", "x=1x2x5x5")
    assert passed.exit_code == 0 and "hint:" not in passed.stderr

    right, wrong = files["folder"] / "right.pt", files["folder"] / "wrong.pt"
    torch.save(build_tiny_net().state_dict(), right)  # the weights tiny.onnx was made with
    torch.save({k: v + 0.05 for k, v in build_tiny_net().state_dict().items()}, wrong)
    fixed = run("verify", files["onnx"], "--model", factory, "--weights", right, "--shape", "x=1x2x5x5")
    assert fixed.exit_code == 0 and "hint:" not in fixed.stderr  # what the hint says to do, done
    failed_with_weights = run("verify", files["onnx"], "--model", files["factory"], "--weights", wrong,
                              "--shape", "x=1x2x5x5")
    assert failed_with_weights.exit_code == 1 and "hint:" not in failed_with_weights.stderr


def test_verify_against_another_network_says_so_not_that_weights_are_missing(files):
    factory = f"{files['folder'] / 'wider.py'}:build"
    failed = run("verify", files["onnx"], "--model", factory, "--shape", "x=1x2x5x5")
    assert failed.exit_code == 1, (failed.output, failed.stderr)
    assert "shape 1x4x5x5 != reference 1x7x5x5" in failed.output
    assert f"--model {factory} does not build the network tiny.onnx was exported from" in failed.stderr
    assert "untrained" not in failed.stderr  # --weights cannot fix a shape


# hints name the options of the command that was run -----------------------------------------------------------
@pytest.mark.parametrize("command, hint", [
    (["bench", "ONNX", "--shape", "x=1x2x4x4"], "--runner ort,torch"),
    (["verify", "ONNX", "--runner", "ort", "--against", "onnx-reference"], "--against torch"),
    (["infer", "ONNX", "--input", "X"], "--runner torch"),
])
def test_model_without_the_torch_runner_names_the_commands_option(files, command, hint):
    args = [files["onnx"] if a == "ONNX" else files["x"] if a == "X" else a for a in command]
    result = run(*args, "--model", files["factory"])
    assert_bad_input(result, "--model/--weights are only used by the torch runner", hint)
    if command[0] == "bench":
        assert "--against" not in result.stderr  # bench has no --against


# one error style; the --debug hint puts --debug before the command --------------------------------------------
def test_cli_errors_and_library_errors_print_the_same_way(files):
    usage = run("verify", files["onnx"], "--runner", "ort", "--against", "ort")  # a CliError
    assert_bad_input(usage, "--runner and --against are both 'ort'")
    assert "--debug" not in usage.stderr  # nothing to trace
    library = run("verify", files["junk"], "--against", "torch", "--model", files["factory"])  # a ValueError
    assert_bad_input(library, "not a readable ONNX model")
    assert "(for the traceback run: dcn-deploy --debug verify ...)" in library.stderr


def test_debug_after_the_command_says_where_it_goes(files):
    result = run("verify", files["onnx"], "--debug")
    assert result.exit_code == 2
    assert "--debug goes before the command: dcn-deploy --debug verify ..." in result.stderr


def test_debug_shows_the_users_traceback(files):
    boom = files["folder"] / "boom.py"
    result = run("--debug", "verify", files["onnx"], "--model", f"{boom}:build", "--shape", "x=1x2x5x5")
    assert result.exit_code == 2
    assert "Traceback" in result.stderr and "RuntimeError: boom" in result.stderr and str(boom) in result.stderr
    assert f"error: {boom}:build raised RuntimeError: boom" in result.stderr


# make_runners loads each runner once (so a bad model fails early) and hands them back as documented -----------
def test_make_runners_activation(files):
    from dcn_deploy.commands._runtime import make_runners

    path = Path(files["onnx"])
    (single,) = make_runners(["ort"], path, None, None)
    assert single.is_active  # infer uses it at once
    single.deactivate()
    released = make_runners(["ort", "onnx-reference"], path, None, None, keep_active=False)
    assert not any(r.is_active for r in released)  # bench activates each only while it measures it
    kept = make_runners(["ort", "onnx-reference"], path, None, None)
    assert all(r.is_active for r in kept)
    for r in kept:
        r.deactivate()


def _numpy_style_failure(path):
    # stands in for a dependency (numpy, onnx, torch) raising ValueError on something our code did not check
    raise ValueError("cannot reshape array of size 7 into shape (2,4)")


def test_a_value_error_from_outside_our_code_is_a_failure_not_bad_input(files, monkeypatch):
    """Exit 2 says "your input is wrong": only our own checks may say that. A ValueError raised outside dcn_deploy's
    code is a failure (exit 1), with the same one-line message."""
    import dcn_deploy.onnx.inspect as inspect_module
    from dcn_deploy.cli import is_bad_input
    from dcn_deploy.feeds import FeedError

    monkeypatch.setattr(inspect_module, "inspect_model", _numpy_style_failure)
    result = run("inspect", files["onnx"])
    assert result.exit_code == 1 and "cannot reshape array of size 7" in result.output
    # ours: a plain ValueError raised in dcn_deploy's code, or one of its error classes wherever it was raised
    from dcn_deploy.backends.trt_build import parse_size

    with pytest.raises(ValueError) as info:
        parse_size("lots")
    assert type(info.value) is ValueError and is_bad_input(info.value)
    assert is_bad_input(FeedError("x")) and is_bad_input(FileNotFoundError("x"))
    assert not is_bad_input(RuntimeError("x"))
