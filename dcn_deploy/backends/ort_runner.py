"""The ONNX Runtime runner: CPU by default, the CUDA execution provider when asked for and present.

Exported files carry the body of every ``dcn_deploy`` op as an ONNX function (a standard ``DeformConv``), so a
stock onnxruntime >= 1.25 runs them with no extra library. Importing ``dcn_deploy.onnx.opset`` (when present)
registers our op schemas with ``onnx`` so that models handled in the same process check and infer shapes.
"""
from __future__ import annotations

import importlib
import os
import re
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from ..wording import for_reader
from .base import Runner, RunnerError, TensorMeta

__all__ = ["OrtRunner", "missing_float64_kernel", "no_float64_kernel_hint", "ort_type_to_numpy",
           "register_dcn_schemas"]

_ORT_TYPES = {
    "tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(float16)": np.float16,
    "tensor(int8)": np.int8, "tensor(int16)": np.int16, "tensor(int32)": np.int32, "tensor(int64)": np.int64,
    "tensor(uint8)": np.uint8, "tensor(uint16)": np.uint16, "tensor(uint32)": np.uint32,
    "tensor(uint64)": np.uint64, "tensor(bool)": np.bool_,
}

# OrtRunner's ``spinning`` settings as ONNX Runtime session config entries ("on" is its default: none).
_SPINNING: Dict[str, Dict[str, str]] = {
    "on": {},
    "within-run": {"session.force_spinning_stop": "1"},
    "off": {"session.intra_op.allow_spinning": "0", "session.inter_op.allow_spinning": "0"},
}

ModelSource = Union[str, os.PathLike, bytes, "onnx.ModelProto"]  # noqa: F821


def ort_type_to_numpy(ort_type: str, name: str = "") -> np.dtype:
    """``"tensor(float)"`` -> ``float32``; raises RunnerError for types numpy cannot hold (e.g. bfloat16)."""
    try:
        return np.dtype(_ORT_TYPES[ort_type])
    except KeyError:
        raise RunnerError(f"ort: tensor {name!r} has type {ort_type}, which numpy feeds cannot hold; "
                          "supported: " + ", ".join(sorted(_ORT_TYPES))) from None


def missing_float64_kernel(message: str, float64: bool) -> Optional[str]:
    """The op ONNX Runtime found no kernel for (``Conv`` in "NOT_IMPLEMENTED : Could not find an implementation for
    Conv(11) node ..."), when the model computes in float64 (``float64``); None otherwise. Its CPU provider has
    float64 DeformConv but no float64 Conv, so such a model cannot be loaded (the message does not name the type)."""
    match = re.search(r"NOT_IMPLEMENTED.*?implementation for (\w+)\(", message)
    return match.group(1) if match and float64 else None


def no_float64_kernel_hint(op: str) -> str:
    """Why a float64 model with ``op`` does not load in ONNX Runtime, and the fix (shared by export's check)."""
    how = for_reader("model.float(), CLI: dcn-deploy export --dtype float32", "dcn-deploy export --dtype float32")
    return f"ONNX Runtime's CPU provider has no float64 {op}; export in float32 ({how})"


def _read_model(source):
    """The ModelProto of a path (external data not loaded), serialised bytes or a ModelProto (returned as is)."""
    import onnx

    if isinstance(source, (bytes, bytearray)):
        return onnx.load_from_string(bytes(source))
    if isinstance(source, (str, os.PathLike)):
        return onnx.load(str(source), load_external_data=False)
    return source


def _foreign_op_advice(source, path: Optional[str]) -> Optional[str]:
    """The adopt step for a model holding mmcv's/mmdeploy's deformable ops (:func:`dcn_deploy.onnx.adopt.
    foreign_op_advice`; ``path`` None for a model given as bytes or a ModelProto); None otherwise or when the model
    cannot be read."""
    try:
        from ..onnx.adopt import foreign_op_advice

        return foreign_op_advice(_read_model(source), path, "ONNX Runtime runs")
    except Exception:  # noqa: BLE001 - only a hint depends on it
        return None


def _computes_in_float64(source) -> bool:
    """Whether the model (a path, serialised bytes or a ModelProto) has float64 inputs or weights; False when it
    cannot be read (the load error then speaks for itself)."""
    try:
        import onnx

        graph = _read_model(source).graph
        return (any(v.type.tensor_type.elem_type == onnx.TensorProto.DOUBLE for v in graph.input)
                or any(t.data_type == onnx.TensorProto.DOUBLE for t in graph.initializer))
    except Exception:  # noqa: BLE001 - only a hint depends on it
        return False


def invalid_roi_pool_message(proto, label: str) -> Optional[str]:
    """What to tell about the ``dcn_deploy`` RoI pooling nodes of the ModelProto ``proto`` whose attributes the op
    refuses (:func:`dcn_deploy.onnx.roi_opset.invalid_roi_pool_nodes`: a hand-edited ``sampling_ratio=0``, say),
    where the function body would compute NaN without a word; None if there are none. Checked where the model is in
    memory anyway: the CLI's one read of the file (``commands._runtime.file_facts``), a ModelProto given to
    :class:`OrtRunner`, and the onnx-reference runner's load (a path given to OrtRunner is not read again for it)."""
    from ..onnx.roi_opset import invalid_roi_pool_nodes

    problems = invalid_roi_pool_nodes(proto)
    if not problems:
        return None
    return (f"{label} holds RoI pooling node(s) whose attributes the op refuses: {'; '.join(problems)}. Their "
            "function bodies would compute NaN or wrong values: fix the attributes in the file, or re-export the "
            "model (dcn-deploy export refuses them, saying how)")


def register_dcn_schemas() -> bool:
    """Import ``dcn_deploy.onnx.opset`` (which registers our op schemas with onnx) if it exists."""
    try:
        importlib.import_module("dcn_deploy.onnx.opset")
    except ModuleNotFoundError as exc:
        if exc.name == "dcn_deploy.onnx.opset":
            return False
        raise
    return True


def _metas(args) -> Tuple[TensorMeta, ...]:
    return tuple(TensorMeta(a.name, ort_type_to_numpy(a.type, a.name),
                            tuple(d if isinstance(d, int) else (d or None) for d in (a.shape or ())))
                 for a in args)


def _host_array(value, runner: str = "ort", name: str = ""):
    """A torch tensor as a numpy array (detached, on the CPU); anything else as it is. A tensor of a type numpy
    cannot hold (bfloat16) is a RunnerError naming the input, not torch's "Got unsupported ScalarType"."""
    if hasattr(value, "detach") and hasattr(value, "cpu"):
        try:
            return value.detach().cpu().numpy()
        except TypeError as exc:
            raise RunnerError(f"{runner}: input {name!r} is a {value.dtype} tensor, which numpy cannot hold ({exc}); "
                              f"convert it to the model's input dtype first, e.g. tensor.float()") from None
    return value


def _checked_input(value, meta: TensorMeta, runner: str) -> np.ndarray:
    """A feed value as a contiguous numpy array of ``meta``'s dtype and shape (None dims: any size), or a
    RunnerError naming ``runner`` and the input."""
    array = np.ascontiguousarray(_host_array(value, runner, meta.name))
    if array.dtype != meta.dtype:
        raise RunnerError(f"{runner}: input {meta.name!r} has dtype {array.dtype}, the model expects {meta.dtype}")
    if array.ndim != len(meta.shape) or any(isinstance(d, int) and d != s for d, s in zip(meta.shape, array.shape)):
        raise RunnerError(f"{runner}: input {meta.name!r} has shape {tuple(array.shape)}, the model expects "
                          f"{tuple('?' if d is None else d for d in meta.shape)}")
    return array


class OrtRunner(Runner):
    """Runs an ONNX model in an ``onnxruntime.InferenceSession``.

    Args:
        model: a path to a .onnx file, its bytes, or an ``onnx.ModelProto``.
        device: ``"cpu"`` (default) or ``"cuda"`` (needs onnxruntime-gpu's CUDAExecutionProvider; the CPU provider
            stays as the fallback for nodes CUDA lacks).
        providers: an explicit provider list for ``InferenceSession``; overrides ``device``.
        threads: intra-op threads, an int >= 1 (None: onnxruntime's default, one per core).
        optimization: graph optimisation level ``"all"`` (default), ``"extended"``, ``"basic"`` or ``"disable"``.
        spinning: what the session's worker threads do while they wait for work (moot with ``threads=1``, which
            has none). ``"on"`` (default, ONNX Runtime's): they spin, also for a while after ``infer`` returns
            (25-46 ms of a core after a ResNet-50 run at 64x64 on a 2-core machine), so an idle session takes
            the CPU from whatever runs next beside it, such as another session being timed. ``"within-run"``: they
            spin during a run and stop when it returns (``session.force_spinning_stop``): a run is timed as with
            ``"on"``, and nothing is left spinning in between (what ``dcn-deploy zoo report`` uses, timing two
            sessions by turns). ``"off"``: they never spin (``session.intra_op.allow_spinning`` and
            ``session.inter_op.allow_spinning`` = 0): the least CPU, but a model of many small nodes runs slower
            (benchmarks/RESULTS.md: the RoI pooling bodies took 123 ms without spinning, 80 with).
        name: the runner's name in reports (default ``"ort"``, ``"ort-cuda"``).

    ``infer`` takes numpy arrays (torch tensors are converted) of the model's dtypes and returns numpy arrays.

    Example::

        with OrtRunner("model.onnx") as runner:
            (meta,) = runner.input_metadata()          # TensorMeta(name, dtype, shape)
            outputs = runner.infer({meta.name: image})  # {output name: np.ndarray}
            print(runner.last_inference_time())          # seconds
    """

    def __init__(self, model: ModelSource, *, device: str = "cpu", providers: Optional[Sequence[str]] = None,
                 threads: Optional[int] = None, optimization: str = "all", spinning: str = "on",
                 name: Optional[str] = None) -> None:
        super().__init__()
        if device not in ("cpu", "cuda"):
            raise ValueError(f"ort: device must be 'cpu' or 'cuda', got {device!r}")
        if optimization not in ("all", "extended", "basic", "disable"):
            raise ValueError(f"ort: optimization must be all, extended, basic or disable, got {optimization!r}")
        if not isinstance(spinning, str) or spinning not in _SPINNING:
            raise ValueError(f"ort: spinning must be on, within-run or off, got {spinning!r}")
        if isinstance(model, (str, os.PathLike)) and not Path(model).exists():
            raise FileNotFoundError(f"ONNX model {model} does not exist")
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
            raise ValueError(f"ort: threads must be an int >= 1 (or None for one per core), got {threads!r}")
        if isinstance(providers, str):  # a bare name would be read as a list of one-letter providers
            raise TypeError(f"ort: providers must be a list of provider names, e.g. [{providers!r}], got a string")
        self.model = model
        self.device = device
        self.providers = None if providers is None else list(providers)
        self.threads = threads
        self.optimization = optimization
        self.spinning = spinning
        self.name = name or ("ort" if device == "cpu" else "ort-cuda")
        self.session = None

    def _session_providers(self, ort) -> List[str]:
        if self.providers is not None:
            # onnxruntime would print an "EP Error" and fall back to the CPU without telling the caller
            available = ort.get_available_providers()
            names = [p[0] if isinstance(p, (tuple, list)) else p for p in self.providers]  # (name, options) too
            unknown = [name for name in names if name not in available]
            if unknown:
                raise RunnerError(f"ort: execution provider(s) {unknown} are not available in this onnxruntime "
                                  f"({ort.__version__}); available: {available}. Install the onnxruntime package "
                                  "that has them (e.g. onnxruntime-gpu for CUDAExecutionProvider) or choose from "
                                  "the available ones")
            return self.providers
        if self.device == "cuda":
            available = ort.get_available_providers()
            if "CUDAExecutionProvider" not in available:
                raise RunnerError(
                    f"ort: the CUDA execution provider is not available in this onnxruntime "
                    f"({ort.__version__}, providers {available}); install onnxruntime-gpu instead of onnxruntime "
                    "(pip uninstall onnxruntime && pip install onnxruntime-gpu) on a machine with a GPU, or run on "
                    "the CPU (dcn-deploy: --runner ort; Python: OrtRunner(model, device='cpu'))")
            return ["CUDAExecutionProvider", "CPUExecutionProvider"]
        return ["CPUExecutionProvider"]

    def _model_bytes_or_path(self):
        if isinstance(self.model, (str, os.PathLike)):
            return str(self.model)
        if isinstance(self.model, (bytes, bytearray)):
            return bytes(self.model)
        if hasattr(self.model, "SerializeToString"):
            return self.model.SerializeToString()
        raise TypeError(f"ort: model must be a path, bytes or onnx.ModelProto, got {type(self.model).__name__}")

    def _activate(self) -> None:
        import onnxruntime as ort

        register_dcn_schemas()
        options = ort.SessionOptions()
        options.graph_optimization_level = {
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        }[self.optimization]
        if self.threads is not None:
            options.intra_op_num_threads = int(self.threads)
        for key, value in _SPINNING[self.spinning].items():
            options.add_session_config_entry(key, value)
        options.log_severity_level = 4  # fatal only: its warnings are noise here, and its errors come back as our
        # exceptions (one message); logged too, they printed a second, red copy first
        source = self._model_bytes_or_path()
        label = source if isinstance(source, str) else "the model"
        invalid = invalid_roi_pool_message(self.model, label) if hasattr(self.model, "graph") else None
        if invalid is not None:  # (a ModelProto in memory; a path is checked by the CLI's one read of it)
            raise RunnerError(f"ort: {invalid}")
        try:
            self.session = ort.InferenceSession(source, sess_options=options,
                                                providers=self._session_providers(ort))
        except RunnerError:
            raise
        except Exception as exc:  # onnxruntime raises its own exception types (Fail, InvalidGraph, ...)
            hint = ""
            text = str(exc)
            if "INVALID_PROTOBUF" in text or "No graph was found" in text:  # not a ModelProto, or an empty one
                from .factory import not_an_onnx_model

                raise RunnerError(f"ort: {not_an_onnx_model(label, 'onnxruntime: ' + text)}") from exc
            op = missing_float64_kernel(text, "NOT_IMPLEMENTED" in text and _computes_in_float64(self.model))
            foreign = _foreign_op_advice(self.model, source if isinstance(source, str) else None)
            if op is not None:
                hint = f" (the model is float64, and {no_float64_kernel_hint(op)})"
            elif foreign is not None:
                hint = f". {foreign}"
            elif "dcn_deploy" in text or "DeformConv" in text:
                hint = (" (onnxruntime runs DeformConv from version 1.25 on, and dcn_deploy ops through the function "
                        f"body stored in the file; this is onnxruntime {ort.__version__}; re-export the model with "
                        + for_reader("dcn_deploy.export (CLI: dcn-deploy export)", "dcn-deploy export")
                        + " if its dcn_deploy nodes have no function body)")
            raise RunnerError(f"ort: cannot load {label}: {text.strip()}{hint}") from exc
        self._input_metas = _metas(self.session.get_inputs())
        self._output_metas = _metas(self.session.get_outputs())

    def _deactivate(self) -> None:
        self.session = None

    def input_metadata(self) -> Tuple[TensorMeta, ...]:
        if self.session is None:
            raise RunnerError("ort: input_metadata() needs an active runner ('with runner:')")
        return self._input_metas

    def output_metadata(self) -> Tuple[TensorMeta, ...]:
        if self.session is None:
            raise RunnerError("ort: output_metadata() needs an active runner ('with runner:')")
        return self._output_metas

    def compute_dtype(self) -> Optional[str]:
        """The half type the graph computes in, if any (:mod:`dcn_deploy.onnx.compute_type`)."""
        from ..onnx.compute_type import model_half_type

        return model_half_type(self.model)

    def roi_inputs(self) -> Tuple[str, ...]:
        """Inputs that are RoI boxes (input 1 of a ``dcn_deploy`` RoI pooling node), read from the model's graph."""
        from ..feeds import roi_input_names, roi_inputs

        if isinstance(self.model, (str, os.PathLike)):
            return roi_inputs(self.model)
        if hasattr(self.model, "graph"):
            return roi_input_names(self.model.graph)
        if isinstance(self.model, (bytes, bytearray)):
            try:
                return roi_input_names(_read_model(self.model).graph)
            except Exception:  # not a model: activate() reports that
                return ()
        return ()

    def active_providers(self) -> List[str]:
        return [] if self.session is None else list(self.session.get_providers())

    def _infer(self, feed: Mapping[str, object]) -> Dict[str, np.ndarray]:
        arrays = {meta.name: _checked_input(feed[meta.name], meta, "ort") for meta in self._input_metas}
        try:
            values = self.session.run(None, arrays)
        except Exception as exc:  # onnxruntime's own exception types
            shapes = ", ".join(f"{k}: {tuple(v.shape)}" for k, v in arrays.items())
            raise RunnerError(f"ort: inference failed on inputs ({shapes}): {str(exc).strip()}") from exc
        return {meta.name: value for meta, value in zip(self._output_metas, values)}
