"""The TensorRT runner: an engine file served from Python with pycuda (the common ``Runner`` interface).

    with TrtRunner("model.engine") as runner:
        outputs = runner.infer({"input": image})          # numpy in, numpy out
        print(runner.last_stage_times())                  # host->device, compute, device->host (ms)

What ``activate`` does: check the engine's sidecar (``engine_meta``: TensorRT version, GPU, plugin hash) and
refuse a mismatch; load our plugin library (only when the sidecar says the engine has our layers, or when there
is no sidecar to say) and TensorRT's own plugins into TensorRT's registry (before deserialising: the engine's
plugin layers are recreated from it); deserialise; read every optimisation profile's ranges; create one execution
context, one CUDA stream, CUDA events, and grow-on-demand buffers (pinned host + device) per tensor.

Per call: the input shapes pick the first optimisation profile that contains them all (a clear error listing every
profile when none does; engines from ``dcn-deploy build`` have one), which is selected on the context with
``set_optimization_profile_async`` on our stream when it differs from the last call's (the switch costs layer
resource updates at the next execution, so calls that alternate between profiles are slower); the shapes are
set with ``set_input_shape``; numpy inputs are copied into pinned buffers and sent with async copies; torch CUDA
tensors are used in place (their pointer goes to ``set_tensor_address``: no host round trip); then
``execute_async_v3`` on our stream, async copies back, one synchronise, outputs returned as numpy arrays.

Threads: a runner owns one execution context, stream and set of buffers, and a lock serialises ``infer``,
so one runner may be shared by the threads of a serving process (requests then run one at a time). For
requests in parallel on one GPU, give each worker thread its own ``TrtRunner`` (each deserialises the engine
and has its own context and stream, so no two contexts of one engine compete for a profile). The CUDA context is
the device's primary context (the one PyTorch uses), pushed for the duration of each call, so any thread may call.

CUDA graphs (``cuda_graph=True``): for numpy inputs, the copies and the execution of one input-shape
combination are captured once (after one ordinary run, which TensorRT needs after a shape change) and
replayed afterwards, which removes the per-layer launch cost for small inputs. Calls with torch tensors
(whose addresses change) run without graphs.
"""
from __future__ import annotations

import ctypes
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from ..interrupts import reraise_interrupt
from .base import Runner, RunnerError, TensorMeta
from .trt_profiles import Profile, ProfileError, TensorRange, select_profile

__all__ = ["StageTimes", "TrtRunner"]

PathLike = Union[str, os.PathLike]


@dataclass(frozen=True)
class StageTimes:
    """GPU times of one ``infer`` call in milliseconds, measured with CUDA events on the runner's stream."""

    h2d_ms: float
    compute_ms: float
    d2h_ms: float


def _import_cuda():
    try:
        import pycuda.driver as cuda
    except ImportError as exc:
        reraise_interrupt(exc)
        raise RunnerError(
            f"trt: pycuda is needed to run TensorRT engines but cannot be imported ({exc}). Install it with "
            "`pip install pycuda` on a machine with the CUDA toolkit and an NVIDIA driver (it builds from source; "
            "see the project's field notes for building without cuRAND) or use NVIDIA's TensorRT container") from exc
    return cuda


class _Buffer:
    """A device allocation and a pinned host mirror, grown (never shrunk) to the largest size asked for."""

    def __init__(self, cuda, dtype: np.dtype) -> None:
        self._cuda = cuda
        self.dtype = np.dtype(dtype)
        self.capacity = 0
        self.device = None
        self.host: Optional[np.ndarray] = None

    def ensure(self, count: int) -> bool:
        """Make room for ``count`` elements; True when the buffers were reallocated (addresses changed)."""
        count = max(int(count), 1)
        if count <= self.capacity:
            return False
        self.device = self._cuda.mem_alloc(count * self.dtype.itemsize)
        self.host = self._cuda.pagelocked_empty(count, self.dtype)
        self.capacity = count
        return True

    @property
    def address(self) -> int:
        return int(self.device)


class _CudaGraph:
    """Stream capture through the CUDA driver API (libcuda), on a pycuda stream's handle."""

    _lib = None

    @classmethod
    def _driver(cls):
        if cls._lib is None:
            cls._lib = ctypes.CDLL("libcuda.so.1")
        return cls._lib

    def __init__(self) -> None:
        self.graph = ctypes.c_void_p()
        self.exec = ctypes.c_void_p()

    def begin(self, stream_handle: int) -> None:
        # CU_STREAM_CAPTURE_MODE_THREAD_LOCAL = 1: other threads' CUDA calls stay legal during our capture
        self._check(self._driver().cuStreamBeginCapture_v2(ctypes.c_void_p(stream_handle), 1), "cuStreamBeginCapture")

    def end(self, stream_handle: int) -> None:
        lib = self._driver()
        self._check(lib.cuStreamEndCapture(ctypes.c_void_p(stream_handle), ctypes.byref(self.graph)),
                    "cuStreamEndCapture")
        self._check(lib.cuGraphInstantiateWithFlags(ctypes.byref(self.exec), self.graph, ctypes.c_ulonglong(0)),
                    "cuGraphInstantiateWithFlags")

    def launch(self, stream_handle: int) -> None:
        self._check(self._driver().cuGraphLaunch(self.exec, ctypes.c_void_p(stream_handle)), "cuGraphLaunch")

    def destroy(self) -> None:
        lib = self._driver()
        if self.exec:
            lib.cuGraphExecDestroy(self.exec)
            self.exec = ctypes.c_void_p()
        if self.graph:
            lib.cuGraphDestroy(self.graph)
            self.graph = ctypes.c_void_p()

    @staticmethod
    def _check(result: int, call: str) -> None:
        if result != 0:
            raise RunnerError(f"trt: CUDA graph call {call} failed with CUDA error {result}; run with "
                              "cuda_graph=False (some plugins or data-dependent shapes cannot be captured)")


def _is_torch_cuda(value) -> bool:
    return type(value).__module__.startswith("torch") and getattr(value, "is_cuda", False)


def _engine_io(trt, engine) -> Tuple[Tuple[TensorMeta, ...], Tuple[TensorMeta, ...]]:
    """The engine's input and output tensors (dynamic sizes as None), in the engine's order."""
    inputs, outputs = [], []
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        try:
            dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(name)))
        except (TypeError, KeyError, ValueError) as exc:
            raise RunnerError(f"trt: tensor {name!r} has type {engine.get_tensor_dtype(name)}, which numpy "
                              "cannot hold; build the engine with float32 I/O (the default io_dtype)") from exc
        shape = tuple(None if d < 0 else int(d) for d in engine.get_tensor_shape(name))
        meta = TensorMeta(name, dtype, shape)
        if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
            inputs.append(meta)
        else:
            outputs.append(meta)
    return tuple(inputs), tuple(outputs)


def _engine_profiles(engine, inputs: Sequence[TensorMeta]) -> List[Profile]:
    """Each optimisation profile of the engine: input name -> its (min, opt, max) shapes."""
    profiles = []
    for index in range(engine.num_optimization_profiles):
        profile = {}
        for m in inputs:
            lo, opt, hi = engine.get_tensor_profile_shape(m.name, index)
            profile[m.name] = TensorRange(tuple(lo), tuple(opt), tuple(hi))
        profiles.append(profile)
    return profiles


class TrtRunner(Runner):
    """Runs a TensorRT engine built by ``dcn-deploy build`` (or, with ``check_metadata=False``, any engine).

    Args:
        engine_path: the ``.engine`` file (its ``.engine.json`` sidecar beside it).
        plugin_library: our plugin library; default: the path recorded at build time if it still has the
            recorded hash, else the one ``dcn_deploy.plugin.library`` finds.
        check_metadata: refuse engines without a sidecar, or built for another TensorRT/GPU/plugin.
        cuda_graph: capture and replay CUDA graphs for numpy inputs (see the module docstring).
        device: CUDA device ordinal.
    """

    name = "tensorrt"

    def __init__(self, engine_path: PathLike, *, plugin_library: Optional[PathLike] = None,
                 check_metadata: bool = True, cuda_graph: bool = False, device: int = 0) -> None:
        super().__init__()
        self.engine_path = Path(engine_path)
        if not self.engine_path.is_file():
            raise FileNotFoundError(f"TensorRT engine {self.engine_path} does not exist; build it with "
                                    "`dcn-deploy build MODEL.onnx -o ENGINE`")
        self.plugin_library = plugin_library
        self.check_metadata = check_metadata
        self.cuda_graph = cuda_graph
        self.device = device
        self.warnings: List[str] = []
        self._lock = threading.Lock()
        self._inputs: Tuple[TensorMeta, ...] = ()
        self._outputs: Tuple[TensorMeta, ...] = ()
        self._profiles: List[Profile] = []  # the engine's optimisation profiles, in index order
        self._active_profile = 0  # the profile selected on the execution context (a new context has 0)
        self._last_stages: Optional[StageTimes] = None
        self._graphs: Dict[tuple, Optional[_CudaGraph]] = {}  # at most one; None: capture failed

    def compute_dtype(self) -> Optional[str]:
        """float16 / bfloat16 for an engine built at that precision, whatever its I/O type; tf32 for a float32 engine
        built with TF32 allowed (its sidecar says both; None without one)."""
        from . import engine_meta

        try:
            meta = engine_meta.read_meta(self.engine_path, verify_engine_hash=False)
        except (engine_meta.EngineMetaError, OSError, ValueError):
            return None
        tf32 = isinstance(meta.extra, dict) and meta.extra.get("tf32") is True
        return {"fp16": "float16", "bf16": "bfloat16"}.get(meta.precision, "tf32" if tf32 else None)

    # activation -------------------------------------------------------------------------------------------------
    def _plugin_path_for(self, meta) -> Optional[Path]:
        """The plugin library to load: None when the sidecar says the engine has no layers of ours (a broken or
        mismatched library then cannot stop it); else explicit, else the recorded one when unchanged, else the
        discovered one (without a sidecar, None when none is found, as the engine may not need it)."""
        from . import engine_meta
        from .trt_plugins import find_plugin_library

        if engine_meta.needs_plugin_library(meta) is False:
            if self.plugin_library is not None:
                self.warnings.append(f"trt: plugin library {self.plugin_library} not loaded: {self.engine_path}'s "
                                     "sidecar says the engine has no dcn_deploy plugin layers")
            return None
        if self.plugin_library is not None:
            return find_plugin_library(self.plugin_library)
        if meta is not None and meta.plugin_library:
            recorded = Path(meta.plugin_library.get("path", ""))
            if recorded.is_file() and engine_meta.sha256_file(recorded) == meta.plugin_library.get("sha256"):
                return recorded
        try:
            return find_plugin_library(None)
        except (FileNotFoundError, RuntimeError, ImportError):
            if meta is not None and meta.plugin_library:
                raise
            return None  # an engine without our plugin layers does not need the library

    def _activate(self) -> None:
        from . import engine_meta
        from .trt_build import (BuildError, cuda_device_facts, import_tensorrt, load_plugin_library,
                                register_tensorrt_plugins)

        try:
            trt = import_tensorrt()
        except ImportError as exc:
            raise RunnerError(f"trt: {exc}") from exc
        cuda = _import_cuda()
        self.warnings = []
        meta = engine_meta.read_meta(self.engine_path) if self.check_metadata else None
        plugin = self._plugin_path_for(meta)
        if meta is not None:
            try:
                gpu_name, capability = cuda_device_facts(self.device)
            except BuildError as exc:
                raise RunnerError(f"trt: {exc}") from exc
            facts = engine_meta.RuntimeFacts(trt.__version__, gpu_name, capability,
                                             engine_meta.sha256_file(plugin) if plugin else None)
            self.warnings += engine_meta.check_compatible(meta, facts, engine_name=str(self.engine_path))
        if plugin is not None:
            try:
                load_plugin_library(trt, plugin)
            except BuildError as exc:
                raise RunnerError(f"trt: {exc}") from exc
        # TensorRT's own plugins too (an engine built without ours, or from standard DeformConv nodes, holds its
        # ModulatedDeformConv2d): deserialising finds no creator for them in a process that did not build.
        register_tensorrt_plugins(trt)

        cuda.init()
        self._cuda = cuda
        self._context = cuda.Device(self.device).retain_primary_context()
        self._context.push()
        try:
            self._logger = trt.Logger(trt.Logger.WARNING)
            self._runtime = trt.Runtime(self._logger)
            engine = self._runtime.deserialize_cuda_engine(self.engine_path.read_bytes())
            if engine is None:
                raise RunnerError(f"trt: TensorRT could not deserialise {self.engine_path} (see its log above): it "
                                  "was built by another TensorRT version or for another GPU, or needs a plugin that "
                                  "is not loaded; rebuild it with `dcn-deploy build`")
            self._engine = engine
            self._exec = engine.create_execution_context()
            # Non-blocking: no implicit synchronisation with the legacy default stream (which PyTorch uses).
            self._stream = cuda.Stream(flags=1)  # CU_STREAM_NON_BLOCKING
            self._events = [cuda.Event() for _ in range(4)]
            inputs, outputs = _engine_io(trt, engine)
            self._inputs, self._outputs, self._profiles = inputs, outputs, _engine_profiles(engine, inputs)
            self._active_profile = 0  # a new execution context starts with profile 0
            self._buffers = {m.name: _Buffer(cuda, m.dtype) for m in inputs + outputs}
        except BaseException:
            self._release_cuda_objects()
            self._context.pop()
            self._context.detach()  # release the primary context we retained
            raise
        self._context.pop()

    def _release_cuda_objects(self) -> None:
        """Drop every object that belongs to our CUDA context, in dependency order, while it is current: pycuda
        destroys streams and events in their own context, which is dead once we detach."""
        self._drop_graphs()
        self._exec = None
        self._engine = None
        self._runtime = None
        self._buffers = {}
        self._events = []
        self._stream = None

    def _deactivate(self) -> None:
        with self._lock:  # not while another thread is inside infer()
            self._context.push()
            try:
                self._release_cuda_objects()
            finally:
                self._context.pop()
                self._context.detach()

    # metadata ---------------------------------------------------------------------------------------------------
    def input_metadata(self) -> Tuple[TensorMeta, ...]:
        """The engine's inputs; before ``activate`` they are read from the sidecar (no TensorRT needed)."""
        if self._inputs:
            return self._inputs
        from . import engine_meta

        try:
            meta = engine_meta.read_meta(self.engine_path, verify_engine_hash=False)
        except engine_meta.EngineMetaError as exc:
            raise RunnerError(f"trt: the inputs are known after activate() (inside 'with runner:'): {exc}") from None
        metas = []
        for t in meta.inputs:
            try:
                dtype = np.dtype(t["dtype"])
            except TypeError:
                raise RunnerError(f"trt: input {t['name']!r} has type {t['dtype']}, which numpy cannot hold; build "
                                  "the engine with float32 I/O (the default io_dtype)") from None
            metas.append(TensorMeta(t["name"], dtype, tuple(None if d < 0 else d for d in t["shape"])))
        return tuple(metas)

    def output_metadata(self) -> Tuple[TensorMeta, ...]:
        return self._outputs

    @property
    def profile(self) -> Profile:
        """The engine's optimisation profile 0: input name -> TensorRange."""
        return dict(self._profiles[0]) if self._profiles else {}

    @property
    def profiles(self) -> List[Profile]:
        """Every optimisation profile of the engine, in index order (input name -> TensorRange each)."""
        return [dict(p) for p in self._profiles]

    @property
    def active_profile(self) -> int:
        """The index of the profile the last call ran with (0 before the first call)."""
        return self._active_profile

    def last_stage_times(self) -> Optional[StageTimes]:
        """Host-to-device, compute and device-to-host time of the last ``infer`` (CUDA events), or None."""
        return self._last_stages

    # inference --------------------------------------------------------------------------------------------------
    def _infer(self, feed: Mapping[str, object]) -> Dict[str, np.ndarray]:
        with self._lock:
            self._context.push()
            try:
                return self._infer_locked(feed)
            finally:
                self._context.pop()

    def _prepare_inputs(self, feed: Mapping[str, object]
                        ) -> Tuple[Dict[str, object], Dict[str, Tuple[int, ...]], int]:
        """(arrays, shapes, index of the first profile that contains the shapes), or RunnerError."""
        arrays: Dict[str, object] = {}
        shapes: Dict[str, Tuple[int, ...]] = {}
        for meta in self._inputs:
            value = feed[meta.name]
            if _is_torch_cuda(value):
                value = self._check_torch(meta, value)
            else:
                value = np.asarray(value)
                if value.dtype != meta.dtype:
                    if value.dtype.kind == "f" and meta.dtype.kind == "f":
                        value = value.astype(meta.dtype)  # float32 <-> float16 is a lossless-enough convenience
                    else:
                        raise RunnerError(f"trt: input {meta.name!r} has dtype {value.dtype}, the engine expects "
                                          f"{meta.dtype}; convert it (array.astype(np.{meta.dtype.name}))")
                value = np.ascontiguousarray(value)
            arrays[meta.name] = value
            shapes[meta.name] = tuple(int(s) for s in value.shape)
        try:
            profile_index = select_profile(shapes, self._profiles)
        except ProfileError as exc:
            raise RunnerError(f"trt: {exc}") from None
        return arrays, shapes, profile_index

    def _check_torch(self, meta: TensorMeta, tensor):
        import torch

        want = {np.dtype(np.float32): torch.float32, np.dtype(np.float16): torch.float16,
                np.dtype(np.int32): torch.int32, np.dtype(np.int64): torch.int64}.get(meta.dtype)
        if tensor.dtype != want:
            raise RunnerError(f"trt: input {meta.name!r} is a torch {tensor.dtype} tensor, the engine expects "
                              f"{want}; convert it with .to({want})")
        if tensor.device.index not in (None, self.device):
            raise RunnerError(f"trt: input {meta.name!r} is on cuda:{tensor.device.index}, the engine runs on "
                              f"cuda:{self.device}; move it with .to('cuda:{self.device}')")
        return tensor.contiguous()

    def _infer_locked(self, feed: Mapping[str, object]) -> Dict[str, np.ndarray]:
        ctx, stream = self._exec, self._stream
        arrays, shapes, profile_index = self._prepare_inputs(feed)
        uses_torch = any(not isinstance(v, np.ndarray) for v in arrays.values())
        if uses_torch:
            import torch

            # Our stream is not ordered after PyTorch's: wait for the producer of the tensors first.
            torch.cuda.current_stream(self.device).synchronize()

        reallocated = False
        switched = profile_index != self._active_profile
        if switched:
            self._select_profile(profile_index)
        profile = self._profiles[profile_index]
        for name, shape in shapes.items():
            if not ctx.set_input_shape(name, shape):
                raise RunnerError(f"trt: TensorRT refused shape {shape} for input {name!r} (profile "
                                  f"{profile_index}: {profile[name].min}..{profile[name].max})")
        out_shapes = {m.name: tuple(ctx.get_tensor_shape(m.name)) for m in self._outputs}
        for name, shape in out_shapes.items():
            if any(d < 0 for d in shape):
                raise RunnerError(f"trt: output {name!r} has data-dependent shape {shape}; this runner needs "
                                  "outputs whose shape follows from the input shapes")
        for name, value in arrays.items():
            if isinstance(value, np.ndarray):
                reallocated |= self._buffers[name].ensure(value.size)
        for name, shape in out_shapes.items():
            reallocated |= self._buffers[name].ensure(int(np.prod(shape)))
        key = tuple(sorted(shapes.items()))
        if reallocated or switched or (self._graphs and key not in self._graphs):
            # One graph at a time: a graph recorded at other shapes (or buffer addresses) would replay with the
            # state TensorRT set up for the shapes of the last ordinary run on this execution context.
            self._drop_graphs()

        # addresses and host staging
        for name, value in arrays.items():
            if isinstance(value, np.ndarray):
                buf = self._buffers[name]
                np.copyto(buf.host[:value.size].reshape(value.shape), value)
                ctx.set_tensor_address(name, buf.address)
            else:
                ctx.set_tensor_address(name, int(value.data_ptr()))
        for name in out_shapes:
            ctx.set_tensor_address(name, self._buffers[name].address)

        ev = self._events
        graph = None if uses_torch or not self.cuda_graph else self._graphs.get(key)
        if graph is not None:
            ev[0].record(stream)
            graph.launch(stream.handle)
            ev[3].record(stream)
        else:
            ev[0].record(stream)
            self._copy_in(arrays)
            ev[1].record(stream)
            if not ctx.execute_async_v3(stream.handle):
                raise RunnerError("trt: execute_async_v3 failed (see TensorRT's log above)")
            ev[2].record(stream)
            self._copy_out(out_shapes)
            ev[3].record(stream)
        stream.synchronize()
        if graph is None:
            self._last_stages = StageTimes(ev[0].time_till(ev[1]), ev[1].time_till(ev[2]), ev[2].time_till(ev[3]))
            if self.cuda_graph and not uses_torch and key not in self._graphs:
                self._capture(key, arrays, out_shapes)
        else:
            # A replayed graph is one unit on the GPU: report it as compute, copies included.
            self._last_stages = StageTimes(0.0, ev[0].time_till(ev[3]), 0.0)
        return {name: self._buffers[name].host[:int(np.prod(shape))].reshape(shape).copy()
                for name, shape in out_shapes.items()}

    def _select_profile(self, index: int) -> None:
        """Select optimisation profile ``index`` on our context. TensorRT may enqueue copies for the switch on the
        stream given; it is our execution stream, so they are ordered before the next execution. The input shapes
        must be set again afterwards (the caller does, for every call)."""
        try:
            ok = self._exec.set_optimization_profile_async(index, self._stream.handle)
        except RuntimeError as exc:  # TensorRT's binding raises where the C++ call returns false
            ok, reason = False, f" ({exc})"
        else:
            reason = ""
        if not ok:
            raise RunnerError(f"trt: TensorRT refused to switch the execution context to optimisation profile "
                              f"{index} of {len(self._profiles)}{reason}; see its log above")
        self._active_profile = index

    def _copy_in(self, arrays: Mapping[str, object]) -> None:
        for name, value in arrays.items():
            if isinstance(value, np.ndarray):
                buf = self._buffers[name]
                self._cuda.memcpy_htod_async(buf.device, buf.host[:max(value.size, 1)], self._stream)

    def _copy_out(self, out_shapes: Mapping[str, Tuple[int, ...]]) -> None:
        for name, shape in out_shapes.items():
            buf = self._buffers[name]
            self._cuda.memcpy_dtoh_async(buf.host[:max(int(np.prod(shape)), 1)], buf.device, self._stream)

    def _capture(self, key: tuple, arrays: Mapping[str, object], out_shapes: Mapping[str, Tuple[int, ...]]) -> None:
        """Record copies + execution for this shape combination (after the ordinary run TensorRT needs first)."""
        graph = _CudaGraph()
        try:
            graph.begin(self._stream.handle)
            try:
                self._copy_in(arrays)
                ok = self._exec.execute_async_v3(self._stream.handle)
                self._copy_out(out_shapes)
            finally:
                graph.end(self._stream.handle)
            if not ok:
                raise RunnerError("execute_async_v3 failed during capture")
        except RunnerError as exc:
            # Some engines cannot be captured (plugins, loops): run them without a graph from now on, and say so
            # once, instead of failing every call with these shapes.
            graph.destroy()
            self.warnings.append(f"trt: CUDA graph capture failed for shapes {dict(key)} ({exc}); running without")
            self._graphs[key] = None
            return
        self._graphs[key] = graph

    def _drop_graphs(self) -> None:
        for graph in self._graphs.values():
            if graph is not None:
                graph.destroy()
        self._graphs.clear()
