"""The distribution: every package is listed in pyproject.toml, and importing the package or the CLI stays cheap."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib", reason="tomllib needs Python >= 3.11")

ROOT = Path(__file__).resolve().parent.parent


def test_every_package_folder_is_listed_in_pyproject():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "dcn_deploy").rglob("__init__.py")}
    found.add("dcn_deploy.models")  # mapped from models/ by package-dir
    assert found - listed == set(), "add these to [tool.setuptools] packages in pyproject.toml"
    assert config["package-dir"]["dcn_deploy.models"] == "models"


def _imports_torch(code: str) -> bool:
    probe = f"import sys\n{code}\nprint('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=ROOT)
    return out.stdout.strip().splitlines()[-1] == "True"


def test_import_and_cli_help_do_not_import_torch():
    assert not _imports_torch("import dcn_deploy, dcn_deploy.ops.spec")
    assert not _imports_torch(
        "from click.testing import CliRunner\nfrom dcn_deploy.cli import main\n"
        "result = CliRunner().invoke(main, ['--help'])\nassert result.exit_code == 0, result.output")
    assert _imports_torch("import dcn_deploy\ndcn_deploy.deform_conv2d")  # the probe itself can tell
