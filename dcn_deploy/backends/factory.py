"""One place that turns a runner name from the CLI (``ort``, ``torch``, ``trt``, ...) into a Runner.

Backends are imported only when their runner is made, so naming ``ort`` never imports torch and naming
``trt`` on a machine without TensorRT gives one clear message instead of an ImportError.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Tuple

from ..wording import argument, for_reader
from .base import Runner, RunnerError, TensorMeta

__all__ = ["ENGINE_SUFFIXES", "RUNNER_KINDS", "TORCH_RUNNER_KINDS", "make_runner", "onnx_io_metadata",
           "read_onnx_model",
           "tensorrt_missing_reason"]

RUNNER_KINDS = ("ort", "ort-cuda", "torch", "torch-cuda", "trt", "onnx-reference")
# The runners of the PyTorch model itself: on the CPU, and on the current CUDA device (the op's CUDA kernels)
TORCH_RUNNER_KINDS = ("torch", "torch-cuda")
# File suffixes read as TensorRT engines (trtexec writes .engine, .plan or .trt).
ENGINE_SUFFIXES = (".engine", ".plan", ".trt")


def onnx_io_metadata(path: os.PathLike) -> Tuple[Tuple[TensorMeta, ...], Tuple[str, ...]]:
    """Inputs (without initialisers) and output names of an ONNX file, read without a runtime session.

    Raises FileNotFoundError for a missing file and ValueError, naming the file, for one that is not an ONNX model.
    """
    from .onnx_reference_runner import graph_io_metadata

    return graph_io_metadata(read_onnx_model(path, load_external_data=False))


def read_onnx_model(path: os.PathLike, *, load_external_data: bool = True):
    """The ``onnx.ModelProto`` in ``path``: the one reader of model files for commands that take one.

    Raises FileNotFoundError for a missing file and ValueError, naming the file and the fix, for one that is not an
    ONNX model (protobuf parses some junk into an empty message, so an empty graph counts as not a model).
    """
    import onnx

    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"the ONNX model must be given as a path (str or pathlib.Path), got {type(path).__name__}"
                        + ("; save it first (onnx.save(model, 'model.onnx')) or run it with OrtRunner(model)"
                           if hasattr(path, "graph") or isinstance(path, (bytes, bytearray)) else ""))
    if Path(path).is_dir():
        raise ValueError(f"ONNX model {path} is a folder; give the .onnx file inside it")
    if not Path(path).is_file():
        raise FileNotFoundError(f"ONNX model {path} does not exist")
    try:
        proto = onnx.load(str(path), load_external_data=load_external_data)
    except Exception as exc:  # protobuf's DecodeError (and its relatives) for a file that is not a ModelProto
        reason = f"{type(exc).__name__}: {exc}"
        if type(exc).__name__ == "DecodeError" and Path(path).suffix.lower() == ".onnx":
            reason += (f"; a truncated or damaged copy reads so: compare its size, {Path(path).stat().st_size} "
                       "bytes, with the original's")
        raise ValueError(not_an_onnx_model(path, reason)) from exc
    if not proto.ir_version or not proto.HasField("graph"):
        raise ValueError(not_an_onnx_model(path, "no ONNX graph in it"))
    return proto


def not_an_onnx_model(path: os.PathLike, reason: object) -> str:
    """The message for a model file that cannot be read as ONNX: the file, what was wrong, the fix (for a PyTorch
    file, given where an .onnx one belongs: export it first)."""
    head = f"{path} is not a readable ONNX model ({str(reason).strip() or type(reason).__name__})"
    suffix = Path(str(path)).suffix.lower()
    if suffix == ".pt2":
        return (f"{head}; it looks like a torch.export program: export it to ONNX first ("
                + for_reader(f"dcn_deploy.export(torch.export.load('{path}'), None, 'model.onnx'); CLI: "
                             f"dcn-deploy export {path} -o model.onnx", f"dcn-deploy export {path} -o model.onnx")
                + ") and give the .onnx file")
    if suffix in (".pt", ".pth", ".ckpt"):
        return (f"{head}; it looks like a PyTorch checkpoint: load it into the model and export that to ONNX first ("
                + for_reader("dcn_deploy.export(model, example_inputs, 'model.onnx'); CLI: dcn-deploy export "
                             f"FILE.py:FACTORY --weights {path} -o model.onnx",
                             f"dcn-deploy export FILE.py:FACTORY --weights {path} -o model.onnx")
                + ") and give the .onnx file")
    return f"{head}; give an .onnx file written by " + for_reader(
        "dcn_deploy.export (CLI: dcn-deploy export) or torch.onnx.export", "dcn-deploy export or torch.onnx.export")


def tensorrt_missing_reason() -> Optional[str]:
    """None when ``import tensorrt`` works, else what is missing and how to install it (:func:`import_tensorrt`'s
    message)."""
    from .trt_errors import TensorRTMissingError, import_tensorrt

    try:
        import_tensorrt()
    except TensorRTMissingError as exc:
        return str(exc)
    return None


def make_runner(kind: str, model_path: os.PathLike, *, torch_model=None, device_threads: Optional[int] = None,
                engine: Optional[os.PathLike] = None, engine_options: Optional[dict] = None,
                torch_channels_last: bool = False) -> Runner:
    """A runner of ``kind`` (one of :data:`RUNNER_KINDS`) for the model file ``model_path``.

    ``torch_model`` (an nn.Module) is required for ``torch`` and ``torch-cuda`` (on the CUDA device): it runs with
    the ONNX file's input and output names; ``torch_channels_last`` runs it and its 4-D inputs channels-last
    in memory (:class:`~dcn_deploy.backends.torch_runner.TorchRunner`'s ``channels_last``). ``trt`` runs ``engine``
    when given, else ``model_path`` itself when it is an engine, else builds ``MODEL.engine`` beside the ``.onnx``
    file with ``dcn_deploy.backends.trt_build.build_engine`` (``engine_options`` are passed to it).
    """
    if not isinstance(model_path, (str, os.PathLike)):
        raise TypeError(f"make_runner: model_path must be the model file's path (str or pathlib.Path), "
                        f"got {type(model_path).__name__}")
    path = Path(model_path)
    if not path.exists():
        raise FileNotFoundError(f"model file {path} does not exist")
    is_engine = path.suffix.lower() in ENGINE_SUFFIXES
    if kind not in RUNNER_KINDS:
        raise ValueError(f"unknown runner {kind!r}; choose from {', '.join(RUNNER_KINDS)}")
    if kind == "trt":
        reason = tensorrt_missing_reason()
        if reason:
            raise RunnerError(f"trt: {reason}")
        from .trt_runner import TrtRunner

        if engine is not None:
            return TrtRunner(engine)
        if not is_engine:
            from .trt_build import build_engine

            engine_path = path.with_suffix(".engine")
            build_engine(path, engine_path, **(engine_options or {}))
            path = engine_path
        return TrtRunner(path)
    if is_engine:
        raise ValueError(f"runner {kind!r} needs an ONNX file, got the TensorRT engine {path}; "
                         "give the .onnx file the engine was built from")
    if kind in ("ort", "ort-cuda"):
        from .ort_runner import OrtRunner

        return OrtRunner(path, device="cuda" if kind == "ort-cuda" else "cpu", threads=device_threads)
    if kind == "onnx-reference":
        from .onnx_reference_runner import OnnxReferenceRunner

        return OnnxReferenceRunner(path)
    # torch, torch-cuda
    if torch_model is None:
        raise ValueError(f"runner {kind!r} needs the PyTorch model: pass "
                         + argument("torch_model=module (an nn.Module, e.g. "
                                    "dcn_deploy.onnx.model_loading.load_model(ref, weights).model)",
                                    "--model FILE.py:FACTORY, module:FACTORY, a .pt2 file or a zoo name, and --weights "
                                    "STATE_DICT.pt if the factory builds an untrained model"))
    from .torch_runner import TorchRunner

    inputs, outputs = onnx_io_metadata(path)
    return TorchRunner(torch_model, inputs, output_names=outputs, threads=device_threads,
                       device="cuda" if kind == "torch-cuda" else "cpu", channels_last=torch_channels_last,
                       name=f"{kind}-channels-last" if torch_channels_last else kind)  # reports say which layout ran
