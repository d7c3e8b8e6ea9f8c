"""Running the C++ test programs (plugins/tests: the plugin shell tests, built with the plugin, and the
implicit-GEMM kernel's emulation, built with the host library) from pytest."""
from __future__ import annotations

import re
import subprocess

import pytest

from dcn_deploy.plugin import library


def run_shell_test(name: str, min_checks: int, needs: str = "nvcc and TensorRT headers", timeout: int = 60) -> str:
    """Run build/native/bin/NAME; skip when it is not built (it needs ``needs``); fail unless it exits 0 with
    '0 failure(s)' after at least min_checks passed checks. Returns its output."""
    exe = library.default_build_dir() / "bin" / name
    if not exe.is_file():
        pytest.skip(f"{name} not built (needs {needs}; run ./dev test or "
                    "`dcn-deploy plugin build --fetch-trt-headers`)")
    proc = subprocess.run([str(exe)], capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # whole lines: "10 failure(s)" contains "0 failure(s)", and an exit code wraps at 256 failures
    assert re.search(r"^0 failure\(s\)$", proc.stdout, re.M), proc.stdout
    assert len(re.findall(r"^ok ", proc.stdout, re.M)) >= min_checks, proc.stdout
    return proc.stdout
