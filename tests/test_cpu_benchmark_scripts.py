"""The CPU benchmark scripts' command lines (benchmarks/cpu_*.py): counts are checked before anything is timed."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _script(name: str):
    pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("script, words", [
    ("cpu_roi_pool", ["--iterations", "0"]), ("cpu_roi_pool", ["--threads", "0"]),
    ("cpu_roi_pool", ["--warmup", "-1"]), ("cpu_zoo_torch", ["--iterations", "0"]),
    ("cpu_zoo_torch", ["--threads", "0"]), ("cpu_detr_files", ["OUT", "--custom-ops", "LIB", "--threads", "0"])])
def test_bad_counts_are_refused_before_timing(script, words, capsys):
    """--iterations 0 ended in statistics' "no median for empty data" traceback after the model was built and
    checked (cpu_zoo_torch: after its three warm-up passes); --threads 0 in torch's own error."""
    with pytest.raises(SystemExit) as exc:
        _script(script).main(words)
    assert exc.value.code == 2
    assert "must be >= 1" in capsys.readouterr().err
