"""The CPU benchmark scripts' command lines (benchmarks/cpu_*.py): counts are checked before anything is timed."""
from __future__ import annotations

import pytest
from benchmark_scripts import load_benchmark_script


def _script(name: str):
    pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    return load_benchmark_script(name)


@pytest.mark.parametrize("script, words", [
    ("cpu_roi_pool", ["--iterations", "0"]), ("cpu_roi_pool", ["--threads", "0"]),
    ("cpu_roi_pool", ["--warmup", "-1"]), ("cpu_zoo_torch", ["--iterations", "0"]),
    ("cpu_zoo_torch", ["--threads", "0"]), ("cpu_detr_files", ["OUT", "--custom-ops", "LIB", "--threads", "0"]),
    ("cpu_channels_last", ["--iterations", "0"]), ("cpu_channels_last", ["--threads", "0"])])
def test_bad_counts_are_refused_before_timing(script, words, capsys):
    """--iterations 0 ended in statistics' "no median for empty data" traceback after the model was built and
    checked (cpu_zoo_torch: after its three warm-up passes); --threads 0 in torch's own error."""
    with pytest.raises(SystemExit) as exc:
        _script(script).main(words)
    assert exc.value.code == 2
    assert "must be >= 1" in capsys.readouterr().err


def test_channels_last_copy_benchmark_checks_and_times_each_copy(host_library_path, capsys):
    """One round of the copy benchmark: each copy checked bit for bit against torch's before it is timed, a row a
    shape, a column for the library (by its path) and one for torch."""
    script = _script("cpu_channels_last")
    assert script.main(["--library", str(host_library_path), "--iterations", "1", "--dtype", "float16"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].startswith("| N, C, H, W | ") and table[0].endswith("| torch permuted copy ms (ns/elem) |")
    assert len(table) == 2 + len(script.SHAPES)


def test_channels_last_copy_benchmark_names_a_library_it_cannot_load(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        _script("cpu_channels_last").main(["--library", str(tmp_path / "missing.so"), "--iterations", "1"])
    assert exc.value.code == 2
    assert "--library " + str(tmp_path / "missing.so") + ": cannot load it as a host library" in capsys.readouterr().err
