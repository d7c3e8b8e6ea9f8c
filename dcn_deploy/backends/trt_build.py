"""Build a TensorRT engine from an ONNX file: ``build_engine(model.onnx, model.engine, precision="fp16", ...)``.

The work is split so that almost all of it runs without TensorRT:

- :func:`prepare_onnx` (pure ONNX): precision conversion (``dcn_deploy.onnx.precision``) and routing of our
  nodes to the plugin (``dcn_deploy.onnx.plugin_routing``);
- profiles (``trt_profiles``), metadata (``engine_meta``), progress lines (:class:`BuildProgress`), parser
  error messages (:func:`format_parser_errors`) and sizes (:func:`parse_size`) are plain Python;
- :func:`build_engine` is the thin shell that talks to TensorRT (10.x or 11.x Python API):
  plugin library -> ``trt.get_plugin_registry().load_library``; network (strongly typed: in 11 always, in 10
  through ``NetworkDefinitionCreationFlag.STRONGLY_TYPED``, so the converted graph's types are obeyed and both
  versions build the same thing); ``OnnxParser.parse`` on the serialised model, or ``parse_from_file`` on a copy
  written with external data for models over protobuf's 2 GiB (:func:`choose_parse_route`); one
  ``IOptimizationProfile``; workspace pool limit;
  timing cache; ``IProgressMonitor``; ``build_serialized_network``; engine + sidecar written atomically.

Precision: ``fp16``/``bf16`` always convert the ONNX graph (TensorRT 11 has no FP16/BF16 builder flags; using
the same path on 10 keeps our float32 rule for sensitive nodes instead of letting the builder choose).
"""
from __future__ import annotations

import ctypes
import os
import re
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence, TextIO, Tuple, Union

from ..io_utils import atomic_write_bytes, check_output_path
from ..onnx.external_data import serialized_size, uses_external_data, write_with_external_data
from . import engine_meta
from .factory import read_onnx_model
from .trt_profiles import Profile, compute_profile, format_shape, onnx_input_shapes

__all__ = [
    "BuildCancelled", "BuildError", "BuildProgress", "BuildResult", "PARSE_IN_MEMORY_LIMIT", "TensorRTMissingError",
    "build_engine", "choose_parse_route", "cuda_device_facts", "duplicate_library_message", "format_parser_errors",
    "import_tensorrt", "load_plugin_library", "looks_like_plugin_library", "mapped_shared_objects", "parse_size",
    "plugin_fields_from_registry", "prepare_onnx", "read_model_for_build", "register_tensorrt_plugins",
    "tensorrt_install_hint",
]

PathLike = Union[str, os.PathLike]


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
        "On a machine without a GPU use ONNX Runtime instead: --runner ort (or dcn-deploy verify MODEL.onnx "
        "--against ort)")


def import_tensorrt(module: str = "tensorrt"):
    """``import tensorrt`` (or another module with its API, e.g. ``tensorrt_rtx``) or raise
    :class:`TensorRTMissingError` with the install instructions."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise TensorRTMissingError(tensorrt_install_hint(str(exc))) from exc


# pure helpers -------------------------------------------------------------------------------------------------------
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*$", re.IGNORECASE)


def parse_size(text: Union[str, int], default_unit: str = "M") -> int:
    """``"4G"`` / ``"512M"`` / ``"1024"`` (MiB by default, like trtexec's ``--memPoolSize``) -> bytes."""
    if isinstance(text, int):
        text = str(text)
    match = _SIZE_RE.match(text)
    if not match:
        raise ValueError(f"--workspace: {text!r} is not a size; write e.g. 4G, 512M or 1024 (MiB)")
    number, unit = float(match.group(1)), (match.group(2) or default_unit).upper()
    size = int(number * {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}[unit])
    if size <= 0:
        raise ValueError(f"--workspace must be positive, got {text!r}")
    return size


def format_parser_errors(errors: Sequence[Dict[str, object]], model_name: str = "the model") -> str:
    """One message from the ONNX parser's errors (dicts with desc, code, node, node_name, op), with a hint."""
    lines = [f"TensorRT's ONNX parser rejected {model_name} ({len(errors)} error(s)):"]
    hints = []
    for err in errors:
        where = []
        if err.get("node_name"):
            where.append(f"node {err['node_name']!r}")
        elif err.get("node") not in (None, -1):
            where.append(f"node #{err['node']}")
        if err.get("op"):
            where.append(f"op {err['op']}")
        desc = str(err.get("desc", "")).strip()
        lines.append(f"  - {' '.join(where) + ': ' if where else ''}{desc}" + (f" [{err['code']}]" if err.get("code") else ""))
        low = desc.lower()
        if "plugin" in low and ("could not find" in low or "not found" in low or "no importer" in low):
            hints.append("the dcn_deploy plugin library was not loaded or has another name/version: check "
                         "`dcn-deploy plugin --info` and pass --plugin PATH")
        elif "deformconv" in low or "modulateddeformconv" in low:
            hints.append("a deformable convolution reached TensorRT's own plugin; build without --no-plugin so our "
                         "plugin handles it")
    lines += [f"hint: {h}" for h in dict.fromkeys(hints)]
    return "\n".join(lines)


class BuildProgress:
    """Turns ``IProgressMonitor`` callbacks into indented lines: ``[build]   Tactic selection 3/12 (1.2 s)``.

    Thread-safe (TensorRT may call from its worker threads). Step lines are throttled to one per
    ``min_interval`` seconds per phase; ``cancel()`` makes the next ``step_complete`` return False, which
    asks TensorRT to stop the build.
    """

    def __init__(self, write: Callable[[str], None], *, min_interval: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._write = write
        self._min_interval = min_interval
        self._clock = clock
        self._lock = threading.Lock()
        self._phases: Dict[str, Tuple[int, int, float, float]] = {}  # name -> (depth, steps, start, last print)
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True

    def phase_start(self, name: str, parent: Optional[str], steps: int) -> None:
        with self._lock:
            depth = self._phases[parent][0] + 1 if parent in self._phases else 0
            now = self._clock()
            self._phases[name] = (depth, steps, now, now)
            self._write(f"[build] {'  ' * depth}{name} ({steps} step{'s' if steps != 1 else ''})")

    def step_complete(self, name: str, step: int) -> bool:
        with self._lock:
            if name in self._phases:
                depth, steps, start, last = self._phases[name]
                now = self._clock()
                if now - last >= self._min_interval and step + 1 < steps:
                    self._write(f"[build] {'  ' * depth}{name} {step + 1}/{steps} ({now - start:.1f} s)")
                    self._phases[name] = (depth, steps, start, now)
            return not self.cancelled

    def phase_finish(self, name: str) -> None:
        with self._lock:
            info = self._phases.pop(name, None)
            if info is not None and info[0] == 0:
                self._write(f"[build] {name} done ({self._clock() - info[2]:.1f} s)")


def prepare_onnx(model, *, precision: str = "fp32", keep_fp32: Iterable[str] = (), io_dtype: str = "float32",
                 route_plugin: bool = True, plugin_fields: Optional[Dict[str, Sequence[str]]] = None):
    """The ONNX graph TensorRT will parse: converted to ``precision`` and (optionally) routed to our plugins.

    ``plugin_fields`` (op_type -> the creator's field names) says which of our ops have a plugin; default
    ``plugin_routing.PLUGIN_FIELDS``. Returns ``(model, precision_report, routed_node_count)``. Pure ONNX.
    """
    from ..onnx.plugin_routing import route_to_plugin
    from ..onnx.precision import convert_precision

    converted, report = convert_precision(model, precision, keep_fp32_nodes=keep_fp32, io_dtype=io_dtype)
    routed = 0
    if route_plugin:
        converted, routed = route_to_plugin(converted, fields=plugin_fields)
    return converted, report, routed


def plugin_fields_from_registry(trt, op_types: Iterable[str], namespace: str = "dcn_deploy"
                                ) -> Dict[str, Tuple[str, ...]]:
    """op_type -> field names of its creator (version "1") in TensorRT's registry, for the ops that have one."""
    registry = trt.get_plugin_registry()
    fields = {}
    for op in op_types:
        creator = registry.get_creator(op, "1", namespace)
        if creator is not None:
            fields[op] = tuple(f.name for f in creator.field_names)
    return fields


# the machine: GPU and plugin ----------------------------------------------------------------------------------------
def cuda_device_facts(device: int = 0) -> Tuple[str, Tuple[int, int]]:
    """(GPU name, compute capability) through the CUDA driver API (libcuda), without pycuda or torch."""
    try:
        cuda = ctypes.CDLL("libcuda.so.1" if sys.platform != "win32" else "nvcuda.dll")
    except OSError as exc:
        raise BuildError(f"no NVIDIA driver here (cannot load libcuda: {exc}); TensorRT engines need a GPU") from exc

    def check(result: int, call: str) -> None:
        if result != 0:
            raise BuildError(f"CUDA driver call {call} failed with error {result}; is GPU {device} visible "
                             "(CUDA_VISIBLE_DEVICES, nvidia-smi)?")

    check(cuda.cuInit(0), "cuInit")
    handle = ctypes.c_int()
    check(cuda.cuDeviceGet(ctypes.byref(handle), device), "cuDeviceGet")
    name = ctypes.create_string_buffer(256)
    check(cuda.cuDeviceGetName(name, 256, handle), "cuDeviceGetName")
    major, minor = ctypes.c_int(), ctypes.c_int()
    check(cuda.cuDeviceGetAttribute(ctypes.byref(major), 75, handle), "cuDeviceGetAttribute(major)")  # CC major
    check(cuda.cuDeviceGetAttribute(ctypes.byref(minor), 76, handle), "cuDeviceGetAttribute(minor)")  # CC minor
    return name.value.decode(errors="replace"), (major.value, minor.value)


def _find_plugin_library(explicit: Optional[PathLike]) -> Path:
    if explicit is not None:
        path = Path(explicit)
        if not path.is_file():
            raise FileNotFoundError(f"--plugin {path}: no such file; build the plugin library (dcn-deploy plugin "
                                    "build) or give the path of libdcn_deploy_plugin.so")
        return path
    from ..plugin.library import require_library  # raises FileNotFoundError saying how to build it

    return Path(require_library("plugin"))


# resolved path -> (the path TensorRT really loaded for it, the registry's handle or None), for every plugin library
# this process loaded through us: the path itself, or for a file with the same bytes as a library already loaded
# (TensorRT registers a creator only once), that library.
_loaded_libraries: Dict[str, Tuple[str, object]] = {}
_loaded_library_lock = threading.Lock()


def mapped_shared_objects(maps_text: str) -> List[str]:
    """The files mapped into a process, from the text of ``/proc/<pid>/maps`` (in order of first appearance).

    A line is ``address perms offset dev inode [path]``; the path may contain spaces and may end in ``(deleted)``.
    """
    seen: Dict[str, None] = {}
    for line in maps_text.splitlines():
        parts = line.split(None, 5)
        if len(parts) == 6 and parts[5].startswith("/"):
            seen.setdefault(parts[5].strip(), None)
    return list(seen)


def _mapped_files() -> List[str]:
    try:
        return mapped_shared_objects(Path("/proc/self/maps").read_text())
    except OSError:  # not Linux: the message then says the earlier library's path is unknown
        return []


def duplicate_library_message(path: PathLike, creators: Sequence[str], loaded_before: Sequence[str] = (),
                              mapped: Sequence[str] = ()) -> str:
    """The error for a plugin library TensorRT refused because creators of the same name, version and namespace
    are already registered in this process (``load_library`` then returns None). ``loaded_before``: libraries
    dcn_deploy loaded earlier in this process; ``mapped``: other candidate files mapped into the process (used
    when ``loaded_before`` is empty, e.g. a library loaded by the application itself)."""
    what = ", ".join(f"dcn_deploy::{name} (version 1)" for name in creators)
    if loaded_before:
        where = "by the plugin library loaded earlier from " + " and ".join(str(p) for p in loaded_before)
    elif mapped:
        where = ("by a library loaded outside dcn_deploy; plugin libraries mapped in this process: "
                 + ", ".join(str(p) for p in mapped))
    else:
        where = "by a library loaded outside dcn_deploy (its path is unknown)"
    use = loaded_before[0] if loaded_before else (mapped[0] if mapped else "that library")
    differ = f" (its contents differ from {path})" if loaded_before or mapped else ""
    return (f"TensorRT did not load the plugin library {path}: the creators {what} are already registered in this "
            f"process, {where}{differ}. TensorRT keeps one creator per name, version and namespace, so one process "
            f"can use one copy of the library: keep using {use} (pass it as plugin_library / --plugin), or start a "
            f"new process to use {path}")


def looks_like_plugin_library(path: PathLike) -> bool:
    """Whether ``path`` is an ELF shared object naming ``getCreators`` (the entry point TensorRT's registry calls):
    the check that tells a file TensorRT could not load at all from a copy refused as a duplicate."""
    try:
        data = Path(path).read_bytes()
    except OSError:
        return False
    return data.startswith(b"\x7fELF") and b"getCreators" in data


def _registered_creators(registry, names: Iterable[str]) -> List[str]:
    return [name for name in names if registry.get_creator(name, "1", "dcn_deploy") is not None]


def _same_content(path: Path, candidates: Iterable[str]) -> Optional[str]:
    """The first candidate file with the same bytes as ``path`` (an identical copy may stand in for it)."""
    want = engine_meta.sha256_file(path)
    for candidate in candidates:
        try:
            if Path(candidate).is_file() and engine_meta.sha256_file(candidate) == want:
                return candidate
        except OSError:
            continue
    return None


def load_plugin_library(trt, path: Optional[PathLike] = None, *, required_creators: Sequence[str] = ()) -> Path:
    """Load our plugin library into TensorRT's plugin registry (once per process) and check its creators.

    TensorRT registers a creator name/version/namespace once per process: ``load_library`` returns None for a
    second library with the same creators. A copy with the same bytes as the one already loaded is accepted (it
    would behave the same); a different one is refused with :func:`duplicate_library_message`.
    """
    from ..onnx.plugin_routing import PLUGIN_FIELDS

    path = _find_plugin_library(path).resolve()
    registry = trt.get_plugin_registry()
    with _loaded_library_lock:
        if str(path) not in _loaded_libraries:
            mapped_before = _mapped_files()
            handle = registry.load_library(str(path))
            if handle is None:
                registered = _registered_creators(registry, PLUGIN_FIELDS)
                if not registered or not looks_like_plugin_library(path):
                    raise BuildError(f"TensorRT could not load the plugin library {path} (see the log above); it "
                                     "must be built for this TensorRT major version and CUDA")
                origin = str(path)  # the application itself loaded this very file before, unless:
                if str(path) not in mapped_before:
                    ours = list(dict.fromkeys(o for o, _ in _loaded_libraries.values() if o != str(path)))
                    mapped = [f for f in mapped_before if f != str(path) and "dcn_deploy" in Path(f).name]
                    origin = _same_content(path, ours + mapped)
                    if origin is None:
                        raise BuildError(duplicate_library_message(path, registered, ours, mapped))
                    handle = _loaded_libraries.get(origin, (origin, None))[1]  # its creators serve this path too
                _loaded_libraries[str(path)] = (origin, handle)
            else:
                _loaded_libraries[str(path)] = (str(path), handle)
    for name in required_creators:
        if registry.get_creator(name, "1", "dcn_deploy") is None:
            raise BuildError(f"the plugin library {path} loaded, but TensorRT's registry has no creator {name!r} "
                             "version '1' in namespace 'dcn_deploy'; rebuild the plugin library from this checkout")
    return path


_plugin_library_loggers: Dict[str, object] = {}
_plugin_library_lock = threading.Lock()


def register_tensorrt_plugins(trt) -> bool:
    """Register TensorRT's own plugins (libnvinfer_plugin, e.g. ``ModulatedDeformConv2d``, which standard DeformConv
    nodes and our unrouted ops' function bodies become) in this process, once per TensorRT module, as trtexec does.

    Needed before parsing such a model and again before deserialising its engine in a fresh process: ``import
    tensorrt`` registers none of them. The logger lives as long as the process, because libnvinfer_plugin keeps the
    pointer it is given. Returns False for a TensorRT without that library (TensorRT-RTX, the lean runtime).
    """
    if not hasattr(trt, "init_libnvinfer_plugins"):
        return False
    key = getattr(trt, "__name__", "tensorrt")
    with _plugin_library_lock:
        if key not in _plugin_library_loggers:
            logger = trt.Logger(trt.Logger.WARNING)
            trt.init_libnvinfer_plugins(logger, "")
            _plugin_library_loggers[key] = logger
    return True


def _check_rtx_parser_can_import_plugins() -> None:
    """TensorRT-RTX's ONNX parser dlopens the unversioned ``libtensorrt_rtx.so`` when it imports a plugin node
    and aborts the whole process (std::terminate) when that fails; the wheel ships only ``libtensorrt_rtx.so.1``.
    Fail with the fix instead (found with TensorRT-RTX 1.7.1)."""
    try:
        ctypes.CDLL("libtensorrt_rtx.so")
    except OSError:
        import tensorrt_rtx_libs

        folder = Path(tensorrt_rtx_libs.__file__).parent
        raise BuildError(
            "TensorRT-RTX's ONNX parser needs libtensorrt_rtx.so (unversioned) on the library path to import plugin "
            f"nodes, else it aborts the process. Fix: mkdir -p ~/.local/lib/trt_rtx && ln -s "
            f"{folder}/libtensorrt_rtx.so.1 ~/.local/lib/trt_rtx/libtensorrt_rtx.so and start Python with "
            "LD_LIBRARY_PATH=~/.local/lib/trt_rtx") from None


# the shell ------------------------------------------------------------------------------------------------------------
@dataclass
class BuildResult:
    engine_path: Path
    meta_path: Path
    meta: engine_meta.EngineMeta
    precision_report: object
    seconds: float
    warnings: List[str] = field(default_factory=list)


def _network_io(trt, network) -> Tuple[List[dict], List[dict]]:
    def describe(t) -> dict:
        try:
            import numpy as np

            dtype = np.dtype(trt.nptype(t.dtype)).name
        except (TypeError, KeyError, ValueError):
            dtype = str(t.dtype).split(".")[-1].lower()
        return {"name": t.name, "dtype": dtype, "shape": [int(d) for d in t.shape]}

    return ([describe(network.get_input(i)) for i in range(network.num_inputs)],
            [describe(network.get_output(i)) for i in range(network.num_outputs)])


def _make_monitor(trt, progress: BuildProgress):
    class _Monitor(trt.IProgressMonitor):
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)

        def phase_start(self, phase_name, parent_phase, num_steps):
            progress.phase_start(phase_name, parent_phase, num_steps)

        def step_complete(self, phase_name, step):
            return progress.step_complete(phase_name, step)

        def phase_finish(self, phase_name):
            progress.phase_finish(phase_name)

    return _Monitor()


def _load_plugins(trt, model, plugin_library, *, rtx: bool, say: Callable[[str], None]
                  ) -> Tuple[Optional[Path], Dict[str, Sequence[str]]]:
    """Load our plugin library when the model uses our ops (``plugin_library=False``: do not), and TensorRT's own
    plugins. Returns (library path or None, op_type -> field names of the ops that have a plugin)."""
    from ..onnx.plugin_routing import used_ops

    ours = used_ops(model)
    routed_lib, fields = None, {}
    if plugin_library is not False and ours:
        if rtx:
            _check_rtx_parser_can_import_plugins()
        # Every op of ours the model uses must reach our plugin (the library has one for each); an older library
        # without one is refused here rather than silently falling back to a slower function body.
        routed_lib = load_plugin_library(trt, plugin_library, required_creators=sorted(ours))
        fields = plugin_fields_from_registry(trt, ours)
        say(f"[build] plugin library {routed_lib}: plugins for {sorted(fields)}")
        for op in sorted(set(ours) - set(fields)):
            say(f"[build] {op}: no plugin in the library; TensorRT builds it from its ONNX function body")
    # TensorRT's own plugins, as trtexec loads them: standard DeformConv nodes (and our ops' function bodies when
    # not routed) need its ModulatedDeformConv2d.
    register_tensorrt_plugins(trt)
    return routed_lib, fields


# the ONNX model handed to the parser ---------------------------------------------------------------------------
# Protobuf refuses to serialise or parse a message of 2 GiB or more, so ``parser.parse(model.SerializeToString())``
# cannot take large models. Their tensor data goes to a file beside a copy of the model instead, which
# ``parse_from_file`` reads (external weights are found relative to the model file). The size is the one export
# uses too (external_data.serialized_size: the serialised model, graph included). The limit errs early: writing a
# 1 GiB model to disk costs seconds, failing costs the build, and ``parse`` holds a serialised copy of the model
# beside it, which the file route does not.
PARSE_IN_MEMORY_LIMIT = 1 << 30


def choose_parse_route(tensor_bytes: int, source_has_external_data: bool, *,
                       limit: int = PARSE_IN_MEMORY_LIMIT) -> str:
    """How the parser gets the prepared model: ``"memory"`` (``parse`` on the serialised bytes) or ``"file"``
    (``parse_from_file`` on a copy written with external data) for a model whose source file kept its weights
    outside (such models are large by intent) or that reaches ``limit`` bytes serialised.

    ``tensor_bytes``: the prepared model's serialised size, :func:`dcn_deploy.onnx.external_data.serialized_size`
    (its tensor data and the graph around them; the name is kept for callers that pass it by keyword)."""
    if tensor_bytes < 0:
        raise ValueError(f"tensor_bytes must be >= 0, got {tensor_bytes}")
    return "file" if source_has_external_data or tensor_bytes >= limit else "memory"


def read_model_for_build(onnx_path: Path):
    """(model with every tensor loaded, whether its file keeps tensors in external data files)."""
    import onnx
    from onnx.external_data_helper import load_external_data_for_model

    model = read_onnx_model(onnx_path, load_external_data=False)
    external = uses_external_data(model)
    if external:
        try:
            load_external_data_for_model(model, str(onnx_path.parent))
        except (OSError, ValueError, onnx.checker.ValidationError) as exc:
            raise ValueError(f"{onnx_path}: its external tensor data cannot be read ({exc}); keep the data file(s) "
                             f"it names beside it in {onnx_path.parent}, as onnx.save_model(..., "
                             "save_as_external_data=True) wrote them") from exc
    return model, external


def _parse(trt, builder, logger, prepared, onnx_path: Path, *, source_external: bool, scratch: Path,
           say: Callable[[str], None]):
    """(network, parser): a strongly typed network (TensorRT 11: always; 10: by flag) from the prepared model."""
    flags = 0
    if hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"):
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    size = serialized_size(prepared)
    if choose_parse_route(size, source_external, limit=PARSE_IN_MEMORY_LIMIT) == "memory":
        ok = parser.parse(prepared.SerializeToString(), str(onnx_path))
    else:
        # The parser reads external weights into its own memory while parsing, so the copy can go right after.
        # Beside the engine, not in /tmp: the output folder is known to be writable, and /tmp may be RAM.
        with tempfile.TemporaryDirectory(prefix=".dcn_deploy_parse_", dir=scratch) as folder:
            model_file = write_with_external_data(prepared, folder)
            say(f"[build] a {size / 2**20:.0f} MiB model{' (weights in external data)' if source_external else ''}: "
                f"parsing from {model_file.name} with its data file")
            ok = parser.parse_from_file(str(model_file))
    if not ok:
        errors = []
        for i in range(parser.num_errors):
            err = parser.get_error(i)
            errors.append({"desc": err.desc(), "code": str(err.code()).split(".")[-1], "node": err.node(),
                           "node_name": getattr(err, "node_name", lambda: "")(),
                           "op": getattr(err, "node_operator", lambda: "")()})
        raise BuildError(format_parser_errors(errors, onnx_path.name))
    return network, parser  # the parser owns the parsed weights: keep it alive until the build is done


def _configure(trt, builder, profile: Profile, *, workspace_bytes: Optional[int], tf32: bool,
               optimization_level: Optional[int], say: Callable[[str], None]):
    config = builder.create_builder_config()
    if workspace_bytes is not None:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    if not tf32 and hasattr(trt.BuilderFlag, "TF32"):
        config.clear_flag(trt.BuilderFlag.TF32)
    if optimization_level is not None:
        config.builder_optimization_level = int(optimization_level)
    trt_profile = builder.create_optimization_profile()
    for name, rng in profile.items():
        trt_profile.set_shape(name, rng.min, rng.opt, rng.max)
        say(f"[build] profile {name}: min {format_shape(rng.min)} opt {format_shape(rng.opt)} "
            f"max {format_shape(rng.max)}")
    if config.add_optimization_profile(trt_profile) < 0:
        raise BuildError("TensorRT rejected the optimisation profile "
                         + "; ".join(f"{n}: {format_shape(r.min)}/{format_shape(r.opt)}/{format_shape(r.max)}"
                                     for n, r in profile.items())
                         + ". Check --shapes (or --min/--opt/--max-shapes) against the model's inputs: names, ranks "
                           "and fixed dimensions must match, and min <= opt <= max")
    return config


def _attach_timing_cache(config, path: Path, say: Callable[[str], None]):
    cache = config.create_timing_cache(path.read_bytes() if path.exists() else b"")
    if not config.set_timing_cache(cache, False):
        say(f"[build] timing cache {path} is from another GPU or TensorRT; starting a new one")
        cache = config.create_timing_cache(b"")
        config.set_timing_cache(cache, True)
    return cache


def _build_serialized(trt, builder, network, config, say: Optional[Callable[[str], None]]):
    """``build_serialized_network`` with progress lines; Ctrl-C asks TensorRT to stop at its next step."""
    state = BuildProgress(say or (lambda line: None))
    monitor = None
    if say is not None and hasattr(trt, "IProgressMonitor"):
        monitor = _make_monitor(trt, state)  # kept referenced until the build returns
        config.progress_monitor = monitor
    previous = None
    # Only with a monitor: TensorRT asks it whether to go on, which is how a Ctrl-C reaches the builder. Without one
    # the handler would just swallow Ctrl-C until the (possibly long) build ends.
    if monitor is not None and threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGINT, lambda *_: state.cancel())
    try:
        serialized = builder.build_serialized_network(network, config)
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
    if state.cancelled and serialized is None:
        raise BuildCancelled("build cancelled; nothing was written")
    if state.cancelled:  # the build finished before TensorRT looked at the request: keep the engine
        (say or (lambda line: None))("[build] Ctrl-C came too late to stop the build; the engine is written anyway")
    if serialized is None:
        raise BuildError("TensorRT could not build the engine (its log above says why). Common causes: a profile "
                         "too large for the workspace (--workspace), an op the GPU lacks in this precision "
                         "(--precision fp32 or --keep-fp32 NODE), or a plugin that rejected its inputs")
    return serialized


def _stored_examples(model) -> Dict[str, Tuple[int, ...]]:
    """The example input shapes ``dcn_deploy.export`` stored in ``model`` for its dynamic inputs (those that still
    fit the graph), read from the model already loaded; empty for files written elsewhere."""
    from ..feeds import parse_shape_options  # with no --shape items: exactly the stored defaults

    return parse_shape_options((), model=model)


def _check_options(model, *, precision: str, io_dtype: str, keep_fp32: Iterable[str],
                   optimization_level: Optional[int]) -> None:
    """The build options that need no TensorRT, checked before it is imported (see build_engine; the workspace
    size is read before the model)."""
    from ..onnx.precision import check_keep_fp32_nodes, check_precision_options

    check_precision_options(precision, io_dtype)
    if precision != "fp32":
        check_keep_fp32_nodes(model, keep_fp32)
    if optimization_level is not None and not (isinstance(optimization_level, int) and 0 <= optimization_level <= 5):
        raise ValueError(f"optimization_level (--opt-level) must be an integer from 0 to 5 (TensorRT's builder "
                         f"optimisation levels; its default is 3), got {optimization_level!r}")


def build_engine(onnx_path: PathLike, engine_path: Optional[PathLike] = None, *, precision: str = "fp32",
                 shapes=None, min_shapes=None, opt_shapes=None, max_shapes=None, max_batch: int = 8,
                 workspace: Union[str, int, None] = None, timing_cache: Optional[PathLike] = None,
                 keep_fp32: Iterable[str] = (), io_dtype: str = "float32", plugin_library: Optional[PathLike] = None,
                 use_plugin: bool = True, tf32: bool = True, optimization_level: Optional[int] = None,
                 progress: bool = True, log: Optional[TextIO] = None, device: int = 0,
                 tensorrt_module: str = "tensorrt", target_gpu: Optional[Tuple[str, Tuple[int, int]]] = None
                 ) -> BuildResult:
    """Build ``onnx_path`` into a TensorRT engine at ``engine_path`` (default: beside it, ``.engine``).

    Args:
        precision: "fp32", "fp16" or "bf16" (graph conversion, see ``dcn_deploy.onnx.precision``).
        shapes / min_shapes / opt_shapes / max_shapes / max_batch: the optimisation profile
            (see ``dcn_deploy.backends.trt_profiles.compute_profile``). A dynamic batch not given ranges over
            1..max_batch; other dynamic dimensions of an input not given are fixed to the example shape that
            ``dcn_deploy.export`` stored in the file (``dcn_deploy.feeds.stored_example_shapes``), with a note
            in ``log``; a file without one needs them in ``shapes``.
        workspace: workspace pool limit, e.g. "4G" (an int or a bare number is MiB, as :func:`parse_size` reads
            it); None: TensorRT's default (the GPU's memory).
        timing_cache: a file read before and written after the build (created if missing) to speed up rebuilds.
        keep_fp32: node names kept in float32 by the precision conversion.
        io_dtype: "float32" (default) or "half": the engine's input/output type under fp16/bf16.
        plugin_library: our plugin library; default ``dcn_deploy.plugin.library.require_library("plugin")``.
        use_plugin: False leaves our nodes unrouted (TensorRT then uses the ONNX function body -> its own DCN plugin).
        tf32: allow TF32 for float32 layers (TensorRT's default); False for bit-closer fp32 results.
        optimization_level: builder optimisation level 0-5 (TensorRT's default 3).
        progress / log: progress lines go to ``log`` (default ``sys.stderr``) when ``progress`` is true; notes
            about defaults taken for you (the profile's example sizes) go there always.
        tensorrt_module: the Python module with TensorRT's API: "tensorrt", or "tensorrt_rtx" (TensorRT for RTX,
            which also builds ahead of time on a machine without a GPU).
        target_gpu: (name, (major, minor)) to record in the sidecar instead of asking the CUDA driver, for
            ahead-of-time builds without a GPU.
        device: must be 0 (the first visible GPU, where TensorRT builds); select another GPU with
            ``CUDA_VISIBLE_DEVICES``.
    Returns a :class:`BuildResult`; writes the engine and ``ENGINE.json`` (see ``engine_meta``) atomically.
    """
    if device != 0:
        # TensorRT builds and times tactics on the current CUDA device, which is the first visible one; recording
        # another GPU in the sidecar would describe an engine tuned for a card it was not built on.
        raise BuildError(f"device={device}: engines are built on the first visible GPU; to build for GPU {device} "
                         f"run with CUDA_VISIBLE_DEVICES={device} (and device=0)")
    start = time.monotonic()
    # The arguments first (the workspace size, the model file, the profile, the output path), then TensorRT: a
    # wrong argument is reported as such on any machine, not hidden behind TensorRT's install instructions. The
    # size comes before the model, which can take seconds to read. The CLI's --workspace is checked here only.
    workspace_bytes = parse_size(workspace) if workspace is not None else None
    onnx_path = Path(onnx_path)
    model, source_external = read_model_for_build(onnx_path)
    engine_path = Path(engine_path) if engine_path is not None else onnx_path.with_suffix(".engine")
    check_output_path(engine_path, "engine path")
    log = sys.stderr if log is None else log  # looked up per call, so a redirected stderr is honoured

    def note(line: str) -> None:
        print(f"[build] note: {line}", file=log, flush=True)

    profile: Profile = compute_profile(onnx_input_shapes(model), shapes=shapes, min_shapes=min_shapes,
                                       opt_shapes=opt_shapes, max_shapes=max_shapes, max_batch=max_batch,
                                       examples=_stored_examples(model), note=note)
    _check_options(model, precision=precision, io_dtype=io_dtype, keep_fp32=keep_fp32,
                   optimization_level=optimization_level)
    trt = import_tensorrt(tensorrt_module)
    say = (lambda line: print(line, file=log, flush=True)) if progress else (lambda line: None)
    logger = trt.Logger(trt.Logger.WARNING)
    routed_lib, fields = _load_plugins(trt, model, plugin_library if use_plugin else False,
                                       rtx=tensorrt_module == "tensorrt_rtx", say=say)
    prepared, report, routed = prepare_onnx(model, precision=precision, keep_fp32=keep_fp32, io_dtype=io_dtype,
                                            route_plugin=bool(fields), plugin_fields=fields)
    if precision != "fp32":
        say("[build] " + report.summary().replace("\n", "\n[build] "))

    gpu_name, capability = target_gpu if target_gpu is not None else cuda_device_facts(device)
    builder = trt.Builder(logger)
    network, _parser = _parse(trt, builder, logger, prepared, onnx_path, source_external=source_external,
                              scratch=engine_path.parent, say=say)
    config = _configure(trt, builder, profile, workspace_bytes=workspace_bytes, tf32=tf32,
                        optimization_level=optimization_level, say=say)
    cache = _attach_timing_cache(config, Path(timing_cache), say) if timing_cache is not None else None
    serialized = _build_serialized(trt, builder, network, config, say if progress else None)

    atomic_write_bytes(engine_path, bytes(serialized))
    if cache is not None:
        atomic_write_bytes(Path(timing_cache), bytes(config.get_timing_cache().serialize()))
    inputs, outputs = _network_io(trt, network)
    meta = engine_meta.EngineMeta(
        engine_sha256=engine_meta.sha256_file(engine_path), tensorrt_version=trt.__version__, gpu_name=gpu_name,
        compute_capability=capability, precision=precision, profiles=[profile],
        source_model={"path": str(onnx_path), "sha256": engine_meta.sha256_file(onnx_path)},
        plugin_library=({"path": str(routed_lib), "sha256": engine_meta.sha256_file(routed_lib)}
                        if routed_lib is not None and routed else None),
        inputs=inputs, outputs=outputs,
        extra={"precision_report": report.to_json(), "routed_nodes": routed, "io_dtype": io_dtype, "tf32": tf32})
    meta_path = engine_meta.write_meta(engine_path, meta)
    seconds = time.monotonic() - start
    say(f"[build] wrote {engine_path} ({engine_path.stat().st_size / 2**20:.1f} MiB) and {meta_path.name} "
        f"in {seconds:.1f} s")
    return BuildResult(engine_path, meta_path, meta, report, seconds)
