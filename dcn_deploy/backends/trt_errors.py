"""What can go wrong around TensorRT before and during a build: the errors the builder raises, and importing
TensorRT (:func:`import_tensorrt`) with install instructions when it is missing. Needs no TensorRT."""
from __future__ import annotations

from ..interrupts import reraise_interrupt

__all__ = ["BuildCancelled", "BuildError", "TensorRTMissingError", "import_tensorrt", "tensorrt_install_hint"]


class TensorRTMissingError(ImportError):
    """``import tensorrt`` failed; the message says exactly what to install."""


class BuildError(RuntimeError):
    """TensorRT could not parse the model or build the engine; the message says what failed and what to try."""


class BuildCancelled(BuildError):
    """The user interrupted the build (Ctrl-C); nothing was written."""


def tensorrt_install_hint(reason: str = "") -> str:
    return (
        "TensorRT is not installed in this Python environment"
        + (f" (import tensorrt failed: {reason})" if reason else "") + ".\n"
        "`dcn-deploy build` and the trt runner need TensorRT 10.1+ (or 11.x), an NVIDIA GPU with its driver, and "
        "pycuda for running engines. Install one of:\n"
        "  pip install tensorrt pycuda                      # TensorRT for CUDA 13 from PyPI/NVIDIA's index\n"
        "  pip install tensorrt-cu12 pycuda                 # the CUDA 12 variant\n"
        "  pip install -e '.[tensorrt]'                     # the same, as this checkout's extra\n"
        "  (if pip cannot find the wheels: add --extra-index-url https://pypi.nvidia.com)\n"
        "or run inside NVIDIA's container, which has TensorRT and CUDA: "
        "docker run --gpus all -it -v $PWD:/work nvcr.io/nvidia/tensorrt:<yy.mm>-py3\n"
        "On a machine without a GPU use ONNX Runtime instead: `--runner ort` with verify, bench and infer (e.g. "
        "dcn-deploy bench MODEL.onnx --runner ort)")


def import_tensorrt(module: str = "tensorrt"):
    """``import tensorrt`` (or another module with its API, e.g. ``tensorrt_rtx``) or raise
    :class:`TensorRTMissingError` with the install instructions."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        reraise_interrupt(exc)  # a Ctrl-C while TensorRT loaded is no missing TensorRT
        raise TensorRTMissingError(tensorrt_install_hint(str(exc))) from exc
