"""``dcn-deploy bench``, ``zoo``, ``infer`` and ``plugin build`` through click's test runner: help examples that
parse, output folders and batch sizes checked before any measurement, the progress bar, infer's warm-up, the
plugin folder hint."""
from __future__ import annotations

import json
import shlex
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from dcn_deploy.cli import main  # noqa: E402
from runtime_models import build_tiny_net, tiny_net_onnx  # noqa: E402


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """tiny.onnx (dynamic N/H/W), fixed1.onnx / fixed2.onnx (fixed shape 1x2x6x6 / 2x2x6x6), an input file."""
    folder = tmp_path_factory.mktemp("bench_zoo")
    model = build_tiny_net()
    np.save(folder / "x.npy", np.random.default_rng(3).standard_normal((2, 2, 6, 5)).astype(np.float32))
    return {"tiny": str(tiny_net_onnx(model, folder / "tiny.onnx")),
            "fixed1": str(tiny_net_onnx(model, folder / "fixed1.onnx", dynamic=False, batch=1, size=6)),
            "fixed2": str(tiny_net_onnx(model, folder / "fixed2.onnx", dynamic=False, batch=2, size=6)),
            "x": str(folder / "x.npy")}


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture
def no_measurement(monkeypatch):
    """Records every timed measurement bench starts; a check that must come first asserts the list stays empty."""
    import dcn_deploy.bench as bench

    calls = []
    real = bench._measure

    def counting(*args, **kwargs):
        calls.append(args[0].name)
        return real(*args, **kwargs)

    monkeypatch.setattr(bench, "_measure", counting)
    return calls


# ---- every help example parses -------------------------------------------------------------------------------------
_HELP_PAGES = [("zoo",), ("zoo", "list"), ("zoo", "report"), ("bench",), ("infer",), ("plugin",), ("plugin", "build")]


def _examples(words):
    text = run(*words, "--help").output
    lines = text.split("Example", 1)[1].splitlines()[1:]
    return [line.split("  #")[0].strip() for line in lines if line.strip().startswith("dcn-deploy ")]


@pytest.mark.parametrize("words", _HELP_PAGES, ids=" ".join)
def test_every_help_example_parses(words, tmp_path, monkeypatch):
    """Each example's options are accepted by the command it names (click parses them; nothing runs)."""
    monkeypatch.chdir(tmp_path)
    examples = _examples(words)
    assert examples, f"no examples in `dcn-deploy {' '.join(words)} --help`"
    for example in examples:
        tokens = shlex.split(example)[1:]
        for token in tokens:  # files the example reads must exist for click's checks; empty ones are enough
            path = Path(token.partition("=")[2] if "=" in token else token)
            if path.suffix in (".onnx", ".engine", ".pt", ".npy", ".npz"):
                path.parent.mkdir(parents=True, exist_ok=True)
                path.touch()
        command, rest = main, tokens
        while hasattr(command, "commands"):  # groups: walk down to the command
            command, rest = command.commands[rest[0]], rest[1:]
        try:
            command.make_context(command.name, list(rest))
        except Exception as exc:  # noqa: BLE001 - report which example failed and why
            pytest.fail(f"help example does not parse: {example}\n{type(exc).__name__}: {exc}")


def test_zoo_group_example_with_two_pairs_runs():
    # The group help's example, counts only at a small size so it stays fast.
    result = run("zoo", "report", "--pairs", "resnet50_dcn_c5", "--pairs", "resnet50_dcnv2_c5", "--size", "64",
                 "--backend", "none", "--iterations", "1")
    assert result.exit_code == 0, result.output
    assert "| resnet50_dcn_c5 (vs resnet50_plain) | 1x3x64x64 |" in result.output
    assert "| resnet50_dcnv2_c5 (vs resnet50_plain) | 1x3x64x64 |" in result.output


# ---- zoo -----------------------------------------------------------------------------------------------------------
def test_zoo_list_text_shows_the_plain_twin_column():
    from dcn_deploy.models import zoo

    result = run("zoo", "list")
    assert result.exit_code == 0, result.output
    header, *rows = result.output.splitlines()
    assert header.split()[:4] == ["name", "task", "plain", "twin"]
    assert len(rows) == len(zoo.names())
    for row in rows:
        name, task, twin = row.split()[:3]
        entry = zoo.get(name)
        assert task == entry.task and twin == (entry.plain or "-")


def test_zoo_report_help_explains_every_option():
    text = run("zoo", "report", "--help").output
    assert "Timed runs of each model" in text and "Untimed runs of each model" in text
    assert "N for NxN" in text


@pytest.mark.parametrize("text, expected", [("224", (224, 224)), ("256x128", (256, 128)), ("64X64", (64, 64))])
def test_zoo_size_accepts_n_or_hxw(text, expected):
    from dcn_deploy.commands.zoo import parse_size

    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["0", "axb", "1x2x3", "64x", "-64"])
def test_zoo_size_refuses_other_text(text):
    result = run("zoo", "report", "--size", text, "--backend", "none")
    assert result.exit_code == 2, result.output
    assert f"--size {text!r}" in result.output and "HEIGHTxWIDTH or one size N" in result.output


def test_zoo_report_single_size_and_json(tmp_path):
    out = tmp_path / "zoo.json"
    result = run("zoo", "report", "--pairs", "resnet50_dcn_c5", "--size", "64", "--backend", "none", "-o", out)
    assert result.exit_code == 0, result.output
    assert "| resnet50_dcn_c5 (vs resnet50_plain) | 1x3x64x64 |" in result.output
    (row,) = json.loads(out.read_text())["rows"]
    assert row["name"] == "resnet50_dcn_c5" and row["size"] == [64, 64] and row["dcn_total_macs"] > 0
    # --json: the same numbers on stdout instead of the table, as bench and inspect print them
    printed = run("zoo", "report", "--pairs", "resnet50_dcn_c5", "--size", "64", "--backend", "none", "--json")
    assert printed.exit_code == 0, printed.output
    assert json.loads(printed.stdout)["rows"][0]["dcn_total_macs"] == row["dcn_total_macs"]


def test_zoo_report_checks_the_json_folder_before_measuring(tmp_path, monkeypatch):
    import dcn_deploy.models.cost_report as cost_report

    def must_not_run(*args, **kwargs):
        raise AssertionError("the report ran before its output folder was checked")

    monkeypatch.setattr(cost_report, "run_report", must_not_run)
    missing = tmp_path / "nodir" / "z.json"
    result = run("zoo", "report", "--pairs", "resnet50_dcn_c5", "-o", missing)
    assert result.exit_code == 2, result.output
    assert f"--output {missing}" in result.output and "does not exist" in result.output and "mkdir -p" in result.output


# ---- bench: checks before measuring ----------------------------------------------------------------------------------
def test_bench_checks_the_output_folder_before_measuring(models, tmp_path, no_measurement):
    missing = tmp_path / "nodir" / "b.json"
    result = run("bench", models["tiny"], "--shape", "x=1x2x6x6", "--iterations", "1", "--no-progress", "-o", missing)
    assert result.exit_code == 2, result.output
    assert f"--output {missing}" in result.output and "does not exist" in result.output
    assert no_measurement == [] and not missing.parent.exists()


def test_bench_checks_every_batch_against_a_fixed_batch_before_measuring(models, no_measurement):
    result = run("bench", models["fixed1"], "--batch", "1,8", "--iterations", "1", "--warmup", "0", "--no-progress")
    assert result.exit_code == 2, result.output
    assert "input 'x' has a fixed batch size 1" in result.output and "--batch 1," in result.output
    assert "batch 8 cannot run" in result.output and "--dynamic" in result.output
    assert no_measurement == []  # batch 1 was not measured first


def test_bench_checks_every_shape_before_measuring(models, no_measurement):
    # No --shape for the dynamic H/W: refused before batch 1 is timed.
    result = run("bench", models["tiny"], "--batch", "1,8", "--iterations", "1", "--no-progress")
    assert result.exit_code == 2, result.output
    assert "give its size: --shape x=" in result.output
    assert no_measurement == []


def test_bench_default_batch_is_the_models_fixed_batch(models, no_measurement):
    result = run("bench", models["fixed2"], "--iterations", "2", "--warmup", "0", "--json", "--no-progress")
    assert result.exit_code == 0, result.output
    (entry,) = json.loads(result.output)["results"]
    assert entry["batch"] == 2 and entry["inputs"]["x"] == [2, 2, 6, 6] and entry["iterations"] == 2
    assert no_measurement == ["ort"]


# ---- bench: the progress bar -----------------------------------------------------------------------------------------
def test_progress_bar_never_starts_before_the_feed_checks(models, capsys):
    from dcn_deploy.backends.ort_runner import OrtRunner
    from dcn_deploy.bench import benchmark
    from dcn_deploy.feeds import FeedError

    with pytest.raises(FeedError, match="dynamic dimension 2"):
        benchmark([OrtRunner(models["tiny"])], batches=[1, 8], iterations=1, warmup=0, progress=True)
    with pytest.raises(FeedError, match="fixed batch size 1"):
        benchmark([OrtRunner(models["fixed1"])], batches=[1, 8], iterations=1, warmup=0, progress=True)
    assert capsys.readouterr().err == ""  # no bar was drawn, so no error can share its line


def test_progress_bar_counts_warm_up(models, capsys):
    from dcn_deploy.backends.ort_runner import OrtRunner
    from dcn_deploy.bench import benchmark

    result = benchmark([OrtRunner(models["tiny"])], batches=[1, 2], shapes={"x": (1, 2, 5, 5)}, iterations=2,
                       warmup=3, progress=True)
    assert [e.iterations for e in result.entries] == [2, 2]
    # stderr is not a terminal here, so the progress comes as a line per quarter of 2 batches x (3 warm-up + 2
    # timed) = 10 runs, each naming what was running when the quarter was passed
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(" (")[0] for line in lines] == [
        "ort batch 1 warm-up:  30%", "ort batch 1:  50%", "ort batch 2 warm-up:  80%", "ort batch 2: 100%"]
    assert lines[-1].startswith("ort batch 2: 100% (10/10 it, ")


def test_check_batches_rules():
    from dcn_deploy.backends.base import TensorMeta
    from dcn_deploy.bench import check_batches, default_batches
    from dcn_deploy.feeds import FeedError

    fixed = [TensorMeta("x", np.float32, (4, 3, 8, 8))]
    dynamic = [TensorMeta("x", np.float32, ("N", 3, 8, 8)), TensorMeta("rois", np.float32, (5, 5))]
    check_batches(fixed, [4])
    check_batches(dynamic, [1, 7])  # one input with a dynamic first dimension: any batch
    with pytest.raises(FeedError, match=r"batches \(CLI: --batch 1,4\): input 'x' has a fixed batch size 4 .* batch 1 "
                                        r"cannot run; use batches=\[4\] \(CLI: --batch 4\)"):
        check_batches(fixed, [1, 4])
    assert default_batches(fixed) == [4] and default_batches(dynamic) == [1]


# ---- infer -----------------------------------------------------------------------------------------------------------
def test_infer_times_a_warm_call_and_shows_the_first_apart(models):
    result = run("infer", models["tiny"], "--input", models["x"], "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["latency_ms"] > 0 and summary["first_call_ms"] > 0
    assert summary["outputs"]["y"]["shape"] == [2, 4, 6, 5]
    text = run("infer", models["tiny"], "--input", models["x"])
    assert text.exit_code == 0, text.output
    assert "(warm call; the first call, with one-time set-up, took" in text.output


# ---- plugin build: where the libraries went -------------------------------------------------------------------------
def test_plugin_build_elsewhere_says_how_to_find_the_libraries(tmp_path, monkeypatch):
    """The hint's logic against the real search order; build_libraries is replaced (a CMake build takes minutes)."""
    import dcn_deploy.plugin.library as library
    from dcn_deploy.commands.plugin import library_dir_hint

    lib = tmp_path / "X" / "lib"
    lib.mkdir(parents=True)
    host = lib / library.LIBRARY_FILES["host"]
    host.write_bytes(b"\x7fELF")
    monkeypatch.delenv(library.ENV_DIR, raising=False)
    monkeypatch.setattr(library, "build_libraries",
                        lambda build_dir, **kwargs: library.BuildResult(Path(build_dir), {"host": host}))
    result = run("plugin", "build", "--build-dir", tmp_path / "X", "--no-cuda", "-q")
    assert result.exit_code == 0, result.output
    assert f"export {library.ENV_DIR}={lib.resolve()}" in result.output

    monkeypatch.setenv(library.ENV_DIR, str(lib))
    assert library_dir_hint({"host": host}) is None  # found now: no hint
    assert library.find_library("host") == host


def test_a_plain_zoo_twin_exports_without_allow_no_deformable(tmp_path):
    """The zoo's plain networks have no deformable layer by design: export does not ask for --allow-no-deformable
    for them (a FILE.py:FACTORY without one still does: test_export_ux)."""
    out = tmp_path / "plain.onnx"
    result = run("export", "resnet50_plain", "-o", out, "--input-shape", "1x3x32x32", "--no-verify")
    assert result.exit_code == 0, result.output
    assert out.is_file()
