"""Running the C++ test programs (plugins/tests: the plugin shell tests, built with the plugin, and the kernels'
emulations, built with the host library, some also under sanitizers) from pytest."""
from __future__ import annotations

import os
import re
import subprocess
from typing import Mapping, Optional, Sequence

import pytest

from dcn_deploy.plugin import library

# The sanitizer builds' options (CMakeLists.txt, dcn_add_sanitized_emulation): every ThreadSanitizer report counted
# (exit code 66 at the end), AddressSanitizer without the leak check (the emulation's static buffers), UBSan stopping
# at its first report.
SANITIZER_OPTIONS = {"TSAN_OPTIONS": "halt_on_error=0 exitcode=66", "ASAN_OPTIONS": "detect_leaks=0",
                     "UBSAN_OPTIONS": "halt_on_error=1 print_stacktrace=1"}


def run_program(name: str, args: Sequence[str] = (), env: Optional[Mapping[str, str]] = None,
                needs: str = "nvcc and TensorRT headers", timeout: int = 60) -> subprocess.CompletedProcess:
    """Run build/native/bin/NAME with ``args`` (``env`` added to this process's environment); skip when it is not
    built (it needs ``needs``), or when a sanitizer it is built with cannot start on this machine (the tool, not the
    code under test)."""
    exe = library.default_build_dir() / "bin" / name
    if not exe.is_file():
        pytest.skip(f"{name} not built (needs {needs}; run ./dev test or "
                    "`dcn-deploy plugin build --fetch-trt-headers`)")
    proc = subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ, **(env or {})))
    if "FATAL: ThreadSanitizer" in proc.stderr:  # e.g. a memory layout it cannot run in
        pytest.skip(f"ThreadSanitizer cannot run here: {proc.stderr.strip().splitlines()[0]}")
    return proc


def run_shell_test(name: str, min_checks: int, needs: str = "nvcc and TensorRT headers", timeout: int = 60,
                   args: Sequence[str] = (), env: Optional[Mapping[str, str]] = None,
                   stderr_free_of: Sequence[str] = ()) -> str:
    """Run build/native/bin/NAME (run_program); fail unless it exits 0 with '0 failure(s)' after at least min_checks
    passed checks, and its error output holds none of ``stderr_free_of`` (a sanitizer's reports). Returns its
    output."""
    proc = run_program(name, args, env, needs, timeout)
    for report in stderr_free_of:
        assert report not in proc.stderr, proc.stderr[:20000]
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # whole lines: "10 failure(s)" contains "0 failure(s)", and an exit code wraps at 256 failures
    assert re.search(r"^0 failure\(s\)$", proc.stdout, re.M), proc.stdout
    assert len(re.findall(r"^ok ", proc.stdout, re.M)) >= min_checks, proc.stdout
    return proc.stdout
