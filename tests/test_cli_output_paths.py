"""Outputs that would replace a file the command reads (the model, a --weights/--input file, the ONNX file under
build), a --shape given twice, negative seeds and job counts, random inputs too large for memory, and a torch model
that does not fit the inputs under bench/infer: bad input (exit 2) with one ``error: ...`` line, and nothing
overwritten."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from dcn_deploy.io_utils import check_not_an_input  # noqa: E402
from runtime_models import build_tiny_net, tiny_net_onnx, write_tiny_net  # noqa: E402
from test_cli_errors import assert_bad_input, run  # noqa: E402


@pytest.fixture()
def files(tmp_path):
    tiny = tiny_net_onnx(build_tiny_net(), tmp_path / "tiny.onnx")
    np.save(tmp_path / "x.npy", np.zeros((1, 2, 6, 6), dtype=np.float32))
    torch.save(build_tiny_net().state_dict(), tmp_path / "w.pt")
    return {"folder": tmp_path, "tiny": tiny, "factory": f"{write_tiny_net(tmp_path)}:build"}


def _unchanged(paths):
    return {p: p.read_bytes() for p in paths}


def test_export_refuses_to_write_over_its_model_file_weights_or_input(files):
    folder = files["folder"]
    source, weights, x = folder / "tiny_net.py", folder / "w.pt", folder / "x.npy"
    before = _unchanged([source, weights, x])
    assert_bad_input(run("export", files["factory"], "-o", source, "--input-shape", "1x2x6x6"),
                     f"--output {source} is the model file", "choose another path")
    assert_bad_input(run("export", files["factory"], "--weights", weights, "-o", weights, "--input-shape", "1x2x6x6"),
                     "is the --weights file")
    assert_bad_input(run("export", files["factory"], "--input", f"x={x}", "-o", x), "is the --input file")
    assert _unchanged([source, weights, x]) == before


def test_export_refuses_an_output_not_named_onnx(files):
    """The file holds ONNX, and the name is how verify, bench and infer tell ONNX from a TensorRT engine: m.txt or
    m.engine is refused before the model loads (adopt's -o too: tests/test_adopt.py)."""
    folder = files["folder"]
    for name in ("m.txt", "m.engine"):
        out = folder / name
        assert_bad_input(run("export", files["factory"], "-o", out, "--input-shape", "1x2x6x6"),
                         f"--output {out}: the file written is an ONNX model; give a name ending in .onnx",
                         f"(e.g. {folder / 'm.onnx'})")
        assert not out.exists()


def test_build_refuses_an_output_not_named_as_an_engine(files):
    """verify, bench and infer read .engine/.plan/.trt as a TensorRT engine and anything else as ONNX: build's -o
    must be such a name, checked before TensorRT is looked for (so here, without TensorRT, too)."""
    folder, tiny = files["folder"], files["tiny"]
    for name in ("m.onnx", "m"):
        out = folder / name
        assert_bad_input(run("build", tiny, "-o", out),
                         f"--output {out}: the file written is a TensorRT engine; give a name ending in .engine or "
                         f".plan or .trt (e.g. {folder / 'm.engine'})")
        assert not out.exists()


def test_an_output_name_ending_in_a_separator_is_refused_as_a_folder(files):
    """Path("outdir/") drops the "/", so `-o outdir/` for a folder not yet made would write a file named outdir."""
    folder = files["folder"]
    target = f"{folder / 'outdir'}/"
    for args in (("export", files["factory"], "--input-shape", "1x2x6x6"), ("adopt", files["tiny"]),
                 ("infer", files["tiny"])):
        result = run(*args, "-o", target)
        assert result.exit_code == 2, result.output
        assert f"'{target}' names a folder (it ends in '/'); give the name of the file to write" in result.stderr
        assert not (folder / "outdir").exists()


def test_verify_writes_its_json_result_with_o(files):
    """As bench's -o: the JSON result in a file (atomically), the table still on stdout; never over the model."""
    import json

    folder, tiny = files["folder"], files["tiny"]
    out = folder / "verify.json"
    result = run("verify", tiny, "--shape", "x=1x2x6x6", "-o", out)
    assert result.exit_code == 0, result.output
    assert f"JSON result: {out}" in result.stdout and "PASSED" in result.stdout
    assert json.loads(out.read_text())["passed"] is True
    before = _unchanged([tiny])
    assert_bad_input(run("verify", tiny, "-o", tiny), f"--output {tiny} is the model")
    assert _unchanged([tiny]) == before


def test_bench_and_infer_refuse_to_write_over_the_model_or_an_input(files):
    folder, tiny, x = files["folder"], files["tiny"], files["folder"] / "x.npy"
    before = _unchanged([tiny, x])
    assert_bad_input(run("bench", tiny, "-o", tiny, "--iterations", "1", "--no-progress"),
                     f"--output {tiny} is the model")
    assert_bad_input(run("infer", tiny, "--input", f"x={x}", "-o", x), f"--output {x} is the --input file")
    assert _unchanged([tiny, x]) == before
    missing = folder / "no_such_folder" / "out.npz"
    assert_bad_input(run("infer", tiny, "--input", f"x={x}", "-o", missing), "folder", "does not exist")


def test_an_output_under_a_file_or_in_a_folder_with_a_space_gets_a_fix_that_works(files):
    folder, tiny, x = files["folder"], files["tiny"], files["folder"] / "x.npy"
    # x.npy/out.npz: "create it (mkdir -p x.npy)" would fail, x.npy being a file
    assert_bad_input(run("infer", tiny, "--input", f"x={x}", "-o", x / "sub" / "out.npz"),
                     f"{x} is a file, not a folder", "choose another path")
    spaced = folder / "new folder"
    result = run("infer", tiny, "--input", f"x={x}", "-o", spaced / "out.npz")
    assert_bad_input(result, f"(mkdir -p '{spaced}')")  # quoted: unquoted, it would make two folders


def test_an_output_folder_the_user_may_not_write_is_bad_input(files, monkeypatch):
    """Exit 2 like any other output path that cannot be written, not 1 ("ran and failed"); nothing was run."""
    import os

    locked = files["folder"] / "locked"
    locked.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode, *a, **k: (
        False if str(path) == str(locked) and mode & os.W_OK else real_access(path, mode, *a, **k)))
    x = files["folder"] / "x.npy"
    for args in (("infer", files["tiny"], "--input", f"x={x}", "-o", locked / "out.npz"),
                 ("export", files["factory"], "--input-shape", "1x2x6x6", "-o", locked / "m.onnx")):
        assert_bad_input(run(*args), f"{locked / args[-1].name}", f"folder {locked} is not writable")
    assert list(locked.iterdir()) == []


def test_check_not_an_input_compares_files_not_spellings(tmp_path):
    model = tmp_path / "m.onnx"
    model.write_bytes(b"x")
    with pytest.raises(ValueError, match="engine path .* is the ONNX model"):
        check_not_an_input(tmp_path / "." / "m.onnx", "engine path", [("ONNX model", model)])
    link = tmp_path / "link.onnx"
    link.symlink_to(model)   # another spelling of the same file, which os.path.abspath does not see through
    with pytest.raises(ValueError, match="engine path .*link.onnx is the ONNX model"):
        check_not_an_input(link, "engine path", [("ONNX model", model)])
    check_not_an_input(tmp_path / "m.engine", "engine path", [("ONNX model", model), ("timing cache", None)])


def test_a_shape_given_twice_for_one_input_is_refused(files):
    assert_bad_input(run("verify", files["tiny"], "--shape", "x=1x2x6x6", "--shape", "x=1x2x8x8"),
                     "input 'x' is given twice", "one --shape per input")


@pytest.mark.parametrize("command", [("verify",), ("bench", "--no-progress")])
def test_a_negative_seed_is_a_usage_error(files, command):
    result = run(*command[:1], files["tiny"], "--seed", "-1", *command[1:])
    assert result.exit_code == 2 and "--seed" in result.stderr, (result.output, result.stderr)


def test_random_inputs_too_large_for_memory_name_the_input_and_option(files, monkeypatch):
    import dcn_deploy.feeds.random_feeds as random_feeds

    def no_memory(shape, dtype, rng):
        raise MemoryError("Unable to allocate 37.3 GiB")

    monkeypatch.setattr(random_feeds, "random_array", no_memory)
    assert_bad_input(run("verify", files["tiny"], "--shape", "x=1x2x99999x99999"),
                     "input 'x'", "does not fit in memory", "--shape/--batch")


@pytest.mark.parametrize("command", ["bench", "infer"])
def test_a_torch_model_that_does_not_fit_the_inputs_is_bad_input_as_in_verify(files, tmp_path, command):
    (tmp_path / "three.py").write_text("import torch\ndef build():\n    return torch.nn.Conv2d(3, 4, 3).eval()\n")
    factory = f"{tmp_path / 'three.py'}:build"
    args = (["--runner", "ort,torch", "--shape", "x=1x2x6x6", "--iterations", "1", "--warmup", "0", "--no-progress"]
            if command == "bench" else ["--runner", "torch", "--input", f"x={files['folder'] / 'x.npy'}"])
    assert_bad_input(run(command, files["tiny"], "--model", factory, *args),
                     f"--model {factory}: the model failed on inputs",
                     "builds the network tiny.onnx was exported from")


def test_build_refuses_to_write_its_engine_or_timing_cache_over_the_onnx_file(files):
    """Checked before TensorRT is imported, so this machine (no TensorRT) sees the same error a GPU machine does."""
    tiny = files["tiny"]
    before = _unchanged([tiny])
    assert_bad_input(run("build", tiny, "-o", tiny), f"engine path {tiny} is the ONNX model", "choose another path")
    assert_bad_input(run("build", tiny, "--timing-cache", tiny), f"timing cache {tiny} is the ONNX model")
    assert _unchanged([tiny]) == before


def test_ctrl_c_exits_130_with_one_error_line_and_leaves_no_report(files):
    """A real SIGINT to a running bench: exit 130 (not 1, "the run failed"), `error: interrupted ...`, and the -o
    report neither written nor left half-written."""
    import os
    import signal
    import subprocess
    import sys
    import time

    report = files["folder"] / "report.json"
    process = subprocess.Popen(
        [sys.executable, "-m", "dcn_deploy.cli", "bench", str(files["tiny"]), "--shape", "x=1x2x6x6", "--duration", "8",
         "-o", str(report)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        first = os.read(process.stderr.fileno(), 1)   # the progress bar's first quarter (unbuffered read): timing
        assert first, "bench ended before printing progress"
        time.sleep(0.5)
        process.send_signal(signal.SIGINT)
        _, rest = process.communicate(timeout=60)
    finally:
        process.kill()
    stderr = (first + rest).decode()
    assert process.returncode == 130, stderr
    assert "error: interrupted (Ctrl-C)" in stderr and "Traceback" not in stderr
    assert not list(files["folder"].glob("report*"))


def test_output_closed_by_its_reader_exits_141_not_0(files):
    """`dcn-deploy verify ... | head`: the reader gone, the command cannot finish (nor say whether it passed), so it
    exits 141 (128 + SIGPIPE), quietly: a pipeline under `set -o pipefail` must not pass a run it never saw end."""
    import os
    import subprocess
    import sys

    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the first line
    try:
        done = subprocess.run([sys.executable, "-m", "dcn_deploy.cli", "inspect", str(files["tiny"])],
                              stdout=write_end, stderr=subprocess.PIPE, timeout=60)
    finally:
        os.close(write_end)
    assert done.returncode == 141, done.stderr.decode()
    assert b"Traceback" not in done.stderr and b"error" not in done.stderr, done.stderr.decode()


def test_options_that_contradict_each_other_are_refused(files, tmp_path):
    """Each pair would otherwise run with one of the two silently ignored."""
    library = tmp_path / "libfake.so"
    library.write_bytes(b"\0")
    cases = [
        (("export", files["factory"], "-o", tmp_path / "m.onnx", "--input-shape", "1x2x6x6", "--no-verify",
          "--atol", "1e-3"), "--no-verify skips verification", "give one or the other"),
        (("build", files["tiny"], "--no-plugin", "--plugin", library), "--no-plugin builds without it",
         "give one or the other"),
        (("plugin", "build", "--no-cuda", "--cuda-archs", "80", "--build-dir", tmp_path / "b"),
         "--cuda-archs with --no-cuda", "drop one of the two"),
        (("plugin", "build", "--cuda-archs", "sm_90", "--build-dir", tmp_path / "b"),
         "--cuda-archs 'sm_90' is not a CMake CUDA architecture list", "\"80;90\""),
        (("zoo", "report", "--pairs", "resnet50_dcn_c5", "--pairs", "resnet50_dcn_c5"), "given more than once",
         "give each network once"),
        # CMake would take the folder as it is, and the plugin's #include <NvInfer.h> fail after the kernels compile
        (("plugin", "build", "--tensorrt-include-dir", files["folder"], "--build-dir", tmp_path / "b"),
         f"--tensorrt-include-dir {files['folder']} holds no NvInfer.h", "give the folder that holds it"),
    ]
    for args, *fragments in cases:
        assert_bad_input(run(*args), *fragments)
    assert not (tmp_path / "m.onnx").exists() and not (tmp_path / "b").exists()


def test_an_input_option_without_a_file_and_a_demo_folder_under_a_file_are_named(files):
    assert_bad_input(run("infer", files["tiny"], "--input", "x="), "--input x= names no file", "--input NAME=file.npy")
    blocker = files["folder"] / "not_a_folder"
    blocker.write_text("")
    assert_bad_input(run("demo", "-o", blocker / "sub", "--epochs", "1"),
                     f"--output-dir {blocker / 'sub'}: {blocker} is a file, not a folder", "choose another folder")


def test_cuda_architecture_lists_cmake_accepts_pass_the_check():
    from dcn_deploy.plugin.library import _CUDA_ARCHITECTURES

    for good in ("90", "80;90", "75-real;80-real;86-real;89-real;90", "90a-real", "100f-virtual", "all", "all-major",
                 "native"):
        assert _CUDA_ARCHITECTURES.fullmatch(good), good
    for bad in ("sm_90", "80,90", "compute_90", "90;", "garbage"):
        assert not _CUDA_ARCHITECTURES.fullmatch(bad), bad
