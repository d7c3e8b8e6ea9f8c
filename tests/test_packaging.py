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


# ---- plugin build: when CMake's configure step runs again -----------------------------------------------------------
_ARGS = "cmake\n-S\n/src\n-B\n/src/build/native\n-DCMAKE_BUILD_TYPE=Release\n-DDCN_WITH_CUDA=ON"
_NOTFOUND_CACHE = "CMAKE_BUILD_TYPE:STRING=Release\nTENSORRT_INCLUDE_DIR:PATH=TENSORRT_INCLUDE_DIR-NOTFOUND\n"
_FOUND_CACHE = "TENSORRT_INCLUDE_DIR:PATH=/src/.third_party/tensorrt/include\n"


@pytest.mark.parametrize("state, expected", [
    (dict(generated=False), "no build files yet"),
    (dict(saved_args=None), "no saved configure arguments"),
    (dict(saved_args=_ARGS + "\n-DCMAKE_CUDA_ARCHITECTURES=90"), "the build options changed"),
    (dict(), None),  # same arguments, headers found before: build only
    (dict(cache_text=_NOTFOUND_CACHE, headers_present=False), None),  # still no headers: nothing new to find
    (dict(cache_text=_NOTFOUND_CACHE), "TensorRT headers are now in .third_party"),  # fetched by an earlier run
    (dict(headers_fetched=True), "TensorRT headers were just fetched"),
    (dict(cache_text=""), None),  # a cache without the entry (e.g. another project's): no guess
])
def test_configure_reason(state, expected):
    from dcn_deploy.plugin.library import configure_reason

    args = dict(generated=True, saved_args=_ARGS, wanted_args=_ARGS, cache_text=_FOUND_CACHE, headers_present=True)
    args.update(state)
    reason = configure_reason(**args)
    assert (reason is None) if expected is None else (reason is not None and reason.startswith(expected)), reason


def test_fetching_headers_after_a_build_without_them_configures_again(tmp_path, monkeypatch):
    """A user's steps: `plugin build` without headers, then `plugin build --fetch-trt-headers`. The second run
    must run CMake's configure step (so find_path looks again) though its arguments are the same. CMake itself is
    replaced by a recorder here (a real build takes minutes); the reason is checked above."""
    import dcn_deploy.plugin.library as library

    headers = tmp_path / "third_party" / "include"
    build_dir = tmp_path / "build"
    build_dir.mkdir()
    commands = []

    class RecordedCMake:
        def __init__(self, cmd, **kwargs):
            commands.append(cmd)
            self.stdout, self.returncode = iter(()), 0
            if cmd[:2] == ["cmake", "-S"]:  # what configure writes: build files and a cache with find_path's answer
                (build_dir / "build.ninja").write_text("")
                found = headers if (headers / "NvInfer.h").is_file() else "TENSORRT_INCLUDE_DIR-NOTFOUND"
                (build_dir / "CMakeCache.txt").write_text(f"TENSORRT_INCLUDE_DIR:PATH={found}\n")

        def wait(self):
            return 0

    def fetch(dest=None, python=None):
        headers.mkdir(parents=True, exist_ok=True)
        (headers / "NvInfer.h").write_text("// stand-in header\n")
        return headers

    monkeypatch.setattr(library.subprocess, "Popen", RecordedCMake)
    monkeypatch.setattr(library, "default_tensorrt_headers_dir", lambda: headers)
    monkeypatch.setattr(library, "fetch_tensorrt_headers", fetch)
    configures = lambda: sum(cmd[:2] == ["cmake", "-S"] for cmd in commands)  # noqa: E731

    assert library.build_libraries(build_dir).tensorrt_include_dir is None and configures() == 1
    library.build_libraries(build_dir)  # nothing changed: build only
    assert configures() == 1
    assert library.build_libraries(build_dir, fetch_headers=True).tensorrt_include_dir == str(headers)
    assert configures() == 2
    library.build_libraries(build_dir, fetch_headers=True)  # headers there and found: build only again
    assert configures() == 2 and len(commands) == 6


def test_plugin_missing_reason_names_what_is_missing(tmp_path):
    from dcn_deploy.commands.plugin import plugin_missing_reason
    from dcn_deploy.plugin.library import BuildResult

    lib = tmp_path / "lib"
    no_headers = BuildResult(tmp_path, {"host": lib / "h.so", "kernels": lib / "k.so"})
    assert "--fetch-trt-headers" in plugin_missing_reason(no_headers, fetched_headers=False)
    after_fetch = plugin_missing_reason(no_headers, fetched_headers=True)
    assert "pass --fetch-trt-headers" not in after_fetch and "--tensorrt-include-dir" in after_fetch
    no_nvcc = BuildResult(tmp_path, {"host": lib / "h.so"}, tensorrt_include_dir="/opt/trt/include")
    assert "no CUDA compiler" in plugin_missing_reason(no_nvcc, fetched_headers=True)


def test_fetching_headers_for_a_build_without_cuda_is_refused(tmp_path):
    """The TensorRT headers serve only the plugin, which needs the CUDA build: asking for both is a mistake to name,
    not a flag to ignore (it used to print `ninja: no work to do.` and fetch nothing)."""
    from dcn_deploy.plugin import library

    with pytest.raises(ValueError, match=r"fetch_headers=True with cuda=False \(CLI: --fetch-trt-headers with "
                                         r"--no-cuda\).*drop one of the two"):
        library.build_libraries(tmp_path / "build", cuda=False, fetch_headers=True)
    assert not (tmp_path / "build").exists()
