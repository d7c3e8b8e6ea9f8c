"""The README's promises: its first lines are the two commands, its Python example runs as written."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


def _blocks(language: str):
    return re.findall(rf"```{language}\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_opens_with_the_two_commands_and_ci_runs_the_test_one():
    first = _blocks("bash")[0].strip().splitlines()
    assert [line.split("#")[0].strip() for line in first] == ["./dev demo", "./dev test"]
    ci = (README.parent / ".ci" / "run").read_text()
    assert "./dev test" in ci


def test_readme_python_example_runs(tmp_path, monkeypatch):
    example = _blocks("python")[0]
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(example, "README.md example", "exec"), namespace)  # noqa: S102 - our own README
    assert (tmp_path / "model.onnx").is_file()
    assert namespace["report"].verified
    y = namespace["y"]
    assert len(y) == 1 and next(iter(y.values())).shape == (1, 16, 64, 64)
