"""Finding and building the compiled libraries (no torch import).

Three shared libraries come out of the root ``CMakeLists.txt`` (see plugins/README.md):

=========== ============================ ==================================================================
kind        file                         what
=========== ============================ ==================================================================
``host``    ``libdcn_deploy_host.so``    the kernels' arithmetic built for the CPU, behind the C ABI (tests)
``kernels`` ``libdcn_deploy_kernels.so`` the CUDA kernels behind the C ABI (ctypes on torch tensors)
``plugin``  ``libdcn_deploy_plugin.so``  the TensorRT IPluginV3 plugins (``load_library`` / ``--dynamicPlugins``)
=========== ============================ ==================================================================

They are looked up, in order, in ``$DCN_DEPLOY_PLUGIN_DIR``, the checkout's ``build/native/lib`` and the package's own
``dcn_deploy/plugin/lib`` (for wheels that ship them), so users never pass paths. :func:`build_libraries` runs
CMake; ``dcn-deploy plugin build`` is its command-line form.
"""
from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import sys
import tempfile
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

from ..wording import argument

__all__ = ["LIBRARY_FILES", "ENV_DIR", "PluginBuildError", "BuildResult", "repo_root", "default_build_dir",
           "search_dirs", "find_library", "require_library", "build_libraries", "configure_reason",
           "fetch_tensorrt_headers", "library_info"]

LIBRARY_FILES: Dict[str, str] = {
    "host": "libdcn_deploy_host.so",
    "kernels": "libdcn_deploy_kernels.so",
    "plugin": "libdcn_deploy_plugin.so",
}
ENV_DIR = "DCN_DEPLOY_PLUGIN_DIR"

# The only registry wheel that carries TensorRT's C++ headers (10.14.1, Apache-2.0); never committed.
TENSORRT_HEADERS_WHEEL = "kernel-lens==2.0.1"
_WHEEL_INCLUDE_PREFIX = "kernel_lens/include/tensorrt/"


class PluginBuildError(RuntimeError):
    """CMake failed to configure or compile the libraries."""


@dataclass
class BuildResult:
    build_dir: Path
    libraries: Dict[str, Path] = field(default_factory=dict)  # kind -> built file
    tensorrt_include_dir: Optional[str] = None
    log: str = ""


def repo_root() -> Path:
    """The source checkout holding CMakeLists.txt (this file is dcn_deploy/plugin/library.py)."""
    return Path(__file__).resolve().parents[2]


def default_build_dir() -> Path:
    # build/native, not build/: setuptools stages wheels in build/lib and would pack our libraries into them
    return repo_root() / "build" / "native"


def default_tensorrt_headers_dir() -> Path:
    return repo_root() / ".third_party" / "tensorrt" / "include"


def search_dirs() -> List[Path]:
    """Folders searched for the libraries, first match wins."""
    dirs = []
    override = os.environ.get(ENV_DIR)
    if override:
        folder = Path(override).expanduser()
        if not folder.is_dir():
            _warn_override_not_a_folder(override)
        dirs.append(folder)
    dirs.append(default_build_dir() / "lib")
    dirs.append(Path(__file__).resolve().parent / "lib")
    return dirs


@functools.lru_cache(maxsize=None)
def _warn_override_not_a_folder(value: str) -> None:
    hint = "; give the folder that holds the library, not the file" if Path(value).expanduser().is_file() else ""
    warnings.warn(f"{ENV_DIR}={value} is not a folder{hint}: the libraries are looked for in the default places "
                  "instead", stacklevel=3)


def _check_kind(kind: str) -> str:
    if kind not in LIBRARY_FILES:
        raise ValueError(f"library kind must be one of {sorted(LIBRARY_FILES)}, got {kind!r}")
    return LIBRARY_FILES[kind]


def find_library(kind: str) -> Optional[Path]:
    """Path of the built library of this kind (``host``, ``kernels``, ``plugin``), or None."""
    name = _check_kind(kind)
    for folder in search_dirs():
        candidate = folder / name
        if candidate.is_file():
            return candidate
    return None


def require_library(kind: str) -> Path:
    """Like :func:`find_library`, but raise FileNotFoundError saying how to get the library."""
    path = find_library(kind)
    if path is None:
        looked = ", ".join(str(d) for d in search_dirs())
        need = {"host": "a C++ compiler", "kernels": "the CUDA toolkit (nvcc)",
                "plugin": "the CUDA toolkit and TensorRT headers (NvInfer.h)"}[kind]
        raise FileNotFoundError(
            f"{LIBRARY_FILES[kind]} not found (looked in {looked}). Build it with `dcn-deploy plugin build` "
            f"(needs cmake and {need}), or point {ENV_DIR} at the folder holding it.")
    return path


def fetch_tensorrt_headers(dest: Optional[Path] = None, python: str = sys.executable) -> Path:
    """Download the headers wheel with pip and unpack only TensorRT's include folder into ``dest``.

    The headers stay in the (gitignored) ``.third_party`` folder; they are never part of the package.
    """
    dest = Path(dest) if dest is not None else default_tensorrt_headers_dir()
    if (dest / "NvInfer.h").is_file():
        return dest
    with tempfile.TemporaryDirectory(prefix="dcn_trt_headers_") as tmp:
        cmd = [python, "-m", "pip", "download", "--quiet", "--disable-pip-version-check", "--no-deps",
               TENSORRT_HEADERS_WHEEL, "-d", tmp]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if proc.returncode != 0 or not wheels:
            raise PluginBuildError(
                f"could not download the TensorRT headers ({' '.join(cmd)}):\n{proc.stderr.strip()}\n"
                "Install TensorRT's headers and pass --tensorrt-include-dir, or build without the plugin.")
        staging = Path(tmp) / "include"
        with zipfile.ZipFile(wheels[0]) as wheel:
            members = [m for m in wheel.namelist() if m.startswith(_WHEEL_INCLUDE_PREFIX) and not m.endswith("/")]
            if not any(m.endswith("/NvInfer.h") for m in members):
                raise PluginBuildError(f"{wheels[0].name} has no {_WHEEL_INCLUDE_PREFIX}NvInfer.h")
            staging.mkdir()
            for member in members:
                (staging / Path(member).name).write_bytes(wheel.read(member))
        dest.parent.mkdir(parents=True, exist_ok=True)
        if dest.exists():
            shutil.rmtree(dest)
        shutil.move(str(staging), str(dest))  # whole folder at once: never a half-filled include dir
    return dest


def _cache_entry(cache_text: str, key: str) -> Optional[str]:
    """The raw value of ``key`` in the text of a CMakeCache.txt (``KEY:TYPE=VALUE`` lines), or None if absent."""
    for line in cache_text.splitlines():
        if line.startswith(key + ":") and "=" in line:
            return line.split("=", 1)[1].strip()
    return None


def _read_cache(build_dir: Path) -> Optional[str]:
    cache = build_dir / "CMakeCache.txt"
    return cache.read_text(errors="replace") if cache.is_file() else None


def _cmake_cache_value(build_dir: Path, key: str) -> Optional[str]:
    """``key``'s value in the build folder's CMake cache; None when absent, empty or ``...-NOTFOUND``."""
    value = _cache_entry(_read_cache(build_dir) or "", key)
    return None if not value or value.endswith("-NOTFOUND") else value


def configure_reason(*, generated: bool, saved_args: Optional[str], wanted_args: str, cache_text: Optional[str],
                     headers_present: bool, headers_fetched: bool = False) -> Optional[str]:
    """Why CMake's configure step must run before ``cmake --build``, or None when building alone is enough.

    ``cmake --build`` re-configures by itself only when CMakeLists.txt changes, so this decides the rest:
    no build files yet (``generated`` false); other arguments than the saved ones (``saved_args``, the stamp
    ``dcn_configure_args.txt``, against ``wanted_args``); TensorRT headers fetched just now; or headers now in
    ``.third_party`` (``headers_present``) while the cache (``cache_text``) still holds the ``-NOTFOUND`` of a
    configure that ran before they were there: ``find_path`` looks again only when configure runs.
    """
    if not generated:
        return "no build files yet"
    if saved_args is None:
        return "no saved configure arguments"
    if saved_args != wanted_args:
        return "the build options changed"
    if headers_fetched:
        return "TensorRT headers were just fetched"
    include_dir = _cache_entry(cache_text or "", "TENSORRT_INCLUDE_DIR")
    if headers_present and include_dir is not None and include_dir.endswith("NOTFOUND"):
        return "TensorRT headers are now in .third_party, and the last configure did not find any"
    return None


# CMAKE_CUDA_ARCHITECTURES: "80;90", "90a-real", "all", ... (CMake's documented forms)
_CUDA_ARCHITECTURES = re.compile(r"all|all-major|native|\d+[af]?(-real|-virtual)?(;\d+[af]?(-real|-virtual)?)*")


def build_libraries(build_dir: Optional[Path] = None, *, cuda: bool = True,
                    tensorrt_include_dir: Optional[str] = None, cuda_architectures: Optional[str] = None,
                    build_type: str = "Release", jobs: Optional[int] = None, fetch_headers: bool = False,
                    echo: bool = False) -> BuildResult:
    """Configure (first time, when options change, or when TensorRT headers appeared: :func:`configure_reason`) and
    build the libraries with CMake; incremental after that.

    Args:
        build_dir: CMake build folder (default: ``build/native`` in the checkout; libraries land in
            ``build_dir/lib``). Libraries built elsewhere are found only with ``$DCN_DEPLOY_PLUGIN_DIR`` set to
            that ``lib`` folder (see :func:`search_dirs`).
        cuda: build the CUDA kernels and the TensorRT plugin when nvcc is found.
        tensorrt_include_dir: folder holding NvInfer.h (default: CMake's search, see CMakeLists.txt).
        cuda_architectures: e.g. ``"80;90"`` (default: 75-real;80-real;86-real;89-real;90, i.e. sm_75-sm_90 + PTX).
        fetch_headers: download the TensorRT headers wheel into .third_party first if no headers are there.
        echo: stream CMake's output to stderr.

    Raises:
        PluginBuildError with the end of CMake's log when configuring or compiling fails.
    """
    if fetch_headers and not cuda:
        option = argument("fetch_headers=True with cuda=False", "--fetch-trt-headers with --no-cuda")
        raise ValueError(f"{option}: the TensorRT plugin is built only with the CUDA kernels, so its headers would not "
                         "be used; drop one of the two")
    if cuda_architectures and not cuda:
        option = argument("cuda_architectures with cuda=False", "--cuda-archs with --no-cuda")
        raise ValueError(f"{option}: the architectures choose the GPUs the CUDA sources are compiled for, and no CUDA "
                         "source is compiled; drop one of the two")
    if cuda_architectures and not _CUDA_ARCHITECTURES.fullmatch(cuda_architectures):
        option = argument("cuda_architectures", "--cuda-archs")
        raise ValueError(f"{option} {cuda_architectures!r} is not a CMake CUDA architecture list: give numbers "
                         "separated by ';', each optionally -real or -virtual (e.g. \"80;90\" or \"90-real\"), "
                         "or all, all-major or native")
    if tensorrt_include_dir and not (Path(tensorrt_include_dir) / "NvInfer.h").is_file():
        # CMake takes the folder as given (find_path does not search a set cache variable), and the plugin's first
        # #include then fails, after every CUDA kernel has compiled.
        option = argument("tensorrt_include_dir", "--tensorrt-include-dir")
        inside = Path(tensorrt_include_dir) / "include"
        fix = (f"give {inside}, which holds it" if (inside / "NvInfer.h").is_file() else
               "give the folder that holds it (TensorRT's include/, e.g. /usr/include/x86_64-linux-gnu), or drop the "
               "option for CMake's search (--fetch-trt-headers downloads them)")
        raise ValueError(f"{option} {tensorrt_include_dir} holds no NvInfer.h; {fix}")
    if shutil.which("cmake") is None:
        raise PluginBuildError("cmake not found on PATH; install cmake >= 3.24 (and ninja) first")
    source = repo_root()
    if not (source / "CMakeLists.txt").is_file():
        raise PluginBuildError(f"{source} has no CMakeLists.txt: building needs a source checkout of dcn_deploy")
    build_dir = Path(build_dir) if build_dir is not None else default_build_dir()
    headers = default_tensorrt_headers_dir() / "NvInfer.h"
    had_headers = headers.is_file()
    if fetch_headers and tensorrt_include_dir is None:  # (with cuda: refused above otherwise)
        fetch_tensorrt_headers()

    configure = ["cmake", "-S", str(source), "-B", str(build_dir), f"-DCMAKE_BUILD_TYPE={build_type}",
                 f"-DDCN_WITH_CUDA={'ON' if cuda else 'OFF'}"]
    if not (build_dir / "CMakeCache.txt").is_file() and shutil.which("ninja"):
        configure += ["-G", "Ninja"]
    if tensorrt_include_dir:
        configure.append(f"-DTENSORRT_INCLUDE_DIR={tensorrt_include_dir}")
    if cuda_architectures:
        configure.append(f"-DCMAKE_CUDA_ARCHITECTURES={cuda_architectures}")
    build = ["cmake", "--build", str(build_dir)] + (["--parallel", str(jobs)] if jobs else [])

    # Configure only when needed (see configure_reason: new options, or TensorRT headers that appeared since).
    stamp = build_dir / "dcn_configure_args.txt"
    wanted = "\n".join(arg for arg in configure if arg != "Ninja" and arg != "-G")
    reason = configure_reason(
        generated=(build_dir / "build.ninja").is_file() or (build_dir / "Makefile").is_file(),
        saved_args=stamp.read_text() if stamp.is_file() else None, wanted_args=wanted,
        cache_text=_read_cache(build_dir), headers_present=headers.is_file(),
        headers_fetched=headers.is_file() and not had_headers)
    steps = [build] if reason is None else [configure, build]
    if reason is not None and echo:
        sys.stderr.write(f"[dcn_deploy] configuring ({reason})\n")

    log = []
    for cmd in steps:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert proc.stdout is not None
        for line in proc.stdout:
            log.append(line)
            if echo:
                sys.stderr.write(line)
        if proc.wait() != 0:
            tail = "".join(log[-40:])
            raise PluginBuildError(f"`{' '.join(cmd)}` failed (exit {proc.returncode}):\n{tail}")
        if cmd is configure:
            stamp.write_text(wanted)

    result = BuildResult(build_dir=build_dir, log="".join(log),
                         tensorrt_include_dir=_cmake_cache_value(build_dir, "TENSORRT_INCLUDE_DIR"))
    for kind, name in LIBRARY_FILES.items():
        path = build_dir / "lib" / name
        if path.is_file():
            result.libraries[kind] = path
    return result


def _build_dir_of(library: Optional[str]) -> Path:
    """The CMake build folder a found library came from (``<build>/lib/<file>`` beside ``<build>/CMakeCache.txt``),
    so that the build settings reported are that library's (e.g. with DCN_DEPLOY_PLUGIN_DIR=build/gpu/lib); the
    default build folder when the library is elsewhere or none was found."""
    if library:
        candidate = Path(library).resolve().parent.parent
        if (candidate / "CMakeCache.txt").is_file():
            return candidate
    return default_build_dir()


def library_info() -> Dict[str, object]:
    """What is available: each library's path (or None), the ABI version of the host library, build settings."""
    info: Dict[str, object] = {"search_dirs": [str(d) for d in search_dirs()]}
    for kind in LIBRARY_FILES:
        path = find_library(kind)
        info[kind] = str(path) if path else None
    build_dir = _build_dir_of(next((info[k] for k in LIBRARY_FILES if info[k]), None))
    info["build_dir"] = str(build_dir)
    info["tensorrt_include_dir"] = _cmake_cache_value(build_dir, "TENSORRT_INCLUDE_DIR")
    info["cuda_architectures"] = _cmake_cache_value(build_dir, "CMAKE_CUDA_ARCHITECTURES")
    info["cuda_compiler"] = _cmake_cache_value(build_dir, "CMAKE_CUDA_COMPILER")
    info["cmake"] = shutil.which("cmake")
    info["nvcc"] = shutil.which("nvcc") or ("/usr/local/cuda/bin/nvcc" if Path("/usr/local/cuda/bin/nvcc").is_file() else None)
    info["gemm_path"] = _gemm_path_status(info["kernels"])
    if info["host"]:
        import ctypes

        from .native import ABI_VERSION

        try:
            version = int(ctypes.CDLL(str(info["host"])).dcn_abi_version())
            info["abi_version"] = version if version == ABI_VERSION else (
                f"{version}: a stale build, this package speaks {ABI_VERSION}; rebuild it (dcn-deploy plugin build)")
        except OSError as exc:
            info["abi_version"] = f"cannot load: {exc}"
    return info


def _gemm_path_status(kernels: Optional[str]) -> Optional[str]:
    """Whether the kernels' GEMM path (dense layers: sampled columns + cuBLAS) can run here, and if not why."""
    if not kernels:
        return None
    import ctypes

    try:
        lib = ctypes.CDLL(kernels)
    except OSError as exc:
        return f"cannot load the kernels library: {exc}"
    if not hasattr(lib, "dcn_gemm_path_available"):
        return "unknown (the kernels library predates the GEMM path; rebuild it)"
    lib.dcn_last_error.restype = ctypes.c_char_p
    if lib.dcn_gemm_path_available() == 1:
        return "available (cuBLAS loads; dense layers use it)"
    reason = (lib.dcn_last_error() or b"").decode(errors="replace")
    return f"unavailable, dense layers use the fused kernel: {reason}"
