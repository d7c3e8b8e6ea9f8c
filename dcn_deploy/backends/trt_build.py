"""Build a TensorRT engine from an ONNX file: ``build_engine(model.onnx, model.engine, precision="fp16", ...)``.

The work is split so that almost all of it runs without TensorRT; this module is the thin shell that talks to
TensorRT (10.x or 11.x Python API) and puts the pieces together:

- options checked before TensorRT is imported (:mod:`.trt_options`: :func:`parse_size`, precision, opt level);
  the optimisation profile (:mod:`.trt_profiles`); the errors and ``import tensorrt`` (:mod:`.trt_errors`);
- plugin libraries -> ``trt.get_plugin_registry().load_library`` and TensorRT's own plugins (:mod:`.trt_plugins`);
- the ONNX model (:mod:`.trt_parse`): precision conversion (``dcn_deploy.onnx.precision``) and routing of our
  nodes to the plugin (``dcn_deploy.onnx.plugin_routing``) by :func:`prepare_onnx`; a strongly typed network (in
  11 always, in 10 through ``NetworkDefinitionCreationFlag.STRONGLY_TYPED``, so the converted graph's types are
  obeyed and both versions build the same thing); ``OnnxParser.parse`` on the serialised model, or
  ``parse_from_file`` on a copy written with external data for models over protobuf's 2 GiB
  (:func:`choose_parse_route`); parser errors as one message (:func:`format_parser_errors`);
- here: one ``IOptimizationProfile``; workspace pool limit (also told to our plugin: :func:`plugin_workspace_limit`);
  timing cache; ``build_serialized_network`` with an
  ``IProgressMonitor`` (:mod:`.trt_progress`: :class:`BuildProgress`, Ctrl-C); engine + sidecar
  (:mod:`.engine_meta`) written atomically.

Every name of ``__all__`` is importable from here, wherever it is defined; a setting is patched in its own
module (e.g. ``trt_parse.PARSE_IN_MEMORY_LIMIT``), where it is read.

Precision: ``fp16``/``bf16`` always convert the ONNX graph (TensorRT 11 has no FP16/BF16 builder flags; using
the same path on 10 keeps our float32 rule for sensitive nodes instead of letting the builder choose).
"""
from __future__ import annotations

import ctypes
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, TextIO, Tuple, Union

from ..io_utils import PathLike, atomic_write_bytes, check_not_an_input, check_output_path
from . import engine_meta
from .trt_errors import BuildCancelled, BuildError, TensorRTMissingError, import_tensorrt, tensorrt_install_hint
from .trt_options import check_build_options, parse_size, plugin_workspace_limit, refuse_foreign_ops
from .trt_parse import (PARSE_IN_MEMORY_LIMIT, choose_parse_route, format_parser_errors, parse_network, prepare_onnx,
                        read_model_for_build)
from .trt_plugins import (duplicate_library_message, load_plugin_library, load_plugins, looks_like_plugin_library,
                          mapped_shared_objects, plugin_fields_from_registry, register_tensorrt_plugins)
from .trt_profiles import DEFAULT_MAX_BATCH, Profile, compute_profile, format_profile_shape, onnx_input_shapes
from .trt_progress import BuildProgress, build_with_progress

__all__ = [
    "BuildCancelled", "BuildError", "BuildProgress", "BuildResult", "PARSE_IN_MEMORY_LIMIT", "TensorRTMissingError",
    "build_engine", "choose_parse_route", "cuda_device_facts", "duplicate_library_message", "format_parser_errors",
    "import_tensorrt", "load_plugin_library", "looks_like_plugin_library", "mapped_shared_objects", "parse_size",
    "plugin_fields_from_registry", "prepare_onnx", "read_model_for_build", "register_tensorrt_plugins",
    "tensorrt_install_hint",
]


@dataclass
class BuildResult:
    engine_path: Path
    meta_path: Path
    meta: engine_meta.EngineMeta
    precision_report: object
    seconds: float
    warnings: List[str] = field(default_factory=list)


def build_engine(onnx_path: PathLike, engine_path: Optional[PathLike] = None, *, precision: str = "fp32",
                 shapes=None, min_shapes=None, opt_shapes=None, max_shapes=None, max_batch: int = DEFAULT_MAX_BATCH,
                 workspace: Union[str, int, None] = None, timing_cache: Optional[PathLike] = None,
                 keep_fp32: Iterable[str] = (), io_dtype: str = "float32", plugin_library: Optional[PathLike] = None,
                 use_plugin: bool = True, tf32: bool = True, optimization_level: Optional[int] = None,
                 progress: bool = True, log: Optional[TextIO] = None, device: int = 0,
                 tensorrt_module: str = "tensorrt", target_gpu: Optional[Tuple[str, Tuple[int, int]]] = None
                 ) -> BuildResult:
    """Build ``onnx_path`` into a TensorRT engine at ``engine_path`` (default: beside it, ``.engine``).

    Args:
        precision: "fp32", "fp16" or "bf16" (graph conversion, see ``dcn_deploy.onnx.precision``).
        shapes / min_shapes / opt_shapes / max_shapes / max_batch: the optimisation profile, as trtexec's text
            (``"input:1x3x64x64"``, ``"input:MIN/OPT/MAX"``) or a dict ``{name: (1, 3, 64, 64)}`` /
            ``{name: (min_shape, opt_shape, max_shape)}``
            (see ``dcn_deploy.backends.trt_profiles.compute_profile``). A dynamic batch not given ranges over
            1..max_batch; other dynamic dimensions of an input not given are fixed to the example shape that
            ``dcn_deploy.export`` stored in the file (``dcn_deploy.feeds.stored_example_shapes``), with a note
            in ``log``; a file without one needs them in ``shapes``.
        workspace: workspace pool limit, e.g. "4G" (an int or a bare number is MiB, as :func:`parse_size` reads
            it); None: TensorRT's default (the GPU's memory). Our plugin's layers fit their workspace under it.
        timing_cache: a file read before and written after the build (created if missing) to speed up rebuilds.
        keep_fp32: node names kept in float32 by the precision conversion.
        io_dtype: "float32" (default) or "half": the engine's input/output type under fp16/bf16 (RoI box inputs
            stay float32).
        plugin_library: our plugin library; default ``dcn_deploy.plugin.library.require_library("plugin")``.
        use_plugin: False leaves our nodes unrouted (TensorRT then uses the ONNX function body -> its own DCN plugin).
        tf32: allow TF32 for float32 layers (TensorRT's default), our DeformConv2d plugin's included (its field
            ``allow_tf32``, set on the routed nodes: its float32 GEMM-path products on TF32 tensor cores); False for
            bit-closer fp32 results (IEEE float32 in TensorRT's layers and ours).
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
    if plugin_library is not None and not use_plugin:
        from ..wording import argument

        raise ValueError(f"{argument('plugin_library', '--plugin')} names our plugin library to load, and "
                         f"{argument('use_plugin=False', '--no-plugin')} builds without it: give one or the other")
    onnx_path = Path(onnx_path)
    if engine_path is None and onnx_path.suffix.lower() == ".engine":  # its default name would be the model itself
        from ..wording import argument

        raise ValueError(f"{onnx_path} is named like an engine, so the default engine path ({onnx_path.stem}.engine "
                         f"beside it) is the model itself: give the engine's path ({argument('engine_path', '-o')}), "
                         f"or name the ONNX file .onnx")
    model, source_external = read_model_for_build(onnx_path)
    refuse_foreign_ops(model, onnx_path)
    engine_path = Path(engine_path) if engine_path is not None else onnx_path.with_suffix(".engine")
    check_output_path(engine_path, "engine path")
    check_not_an_input(engine_path, "engine path", [("ONNX model", onnx_path), ("timing cache", timing_cache)])
    # The sidecar and the timing cache are written after the build, beside the engine: a path that cannot be written
    # must stop the build now, not leave an engine without its sidecar after minutes of building.
    sidecar = engine_meta.meta_path_for(engine_path)
    check_output_path(sidecar, "engine sidecar")
    check_not_an_input(sidecar, "engine sidecar", [("ONNX model", onnx_path), ("timing cache", timing_cache)])
    if timing_cache is not None:  # read, then rewritten after the build
        check_output_path(timing_cache, "timing cache")
        check_not_an_input(timing_cache, "timing cache", [("ONNX model", onnx_path)])
    log = sys.stderr if log is None else log  # looked up per call, so a redirected stderr is honoured

    notes: List[str] = []  # the profile's notes, printed once TensorRT is there to build it
    profile: Profile = compute_profile(onnx_input_shapes(model), shapes=shapes, min_shapes=min_shapes,
                                       opt_shapes=opt_shapes, max_shapes=max_shapes, max_batch=max_batch,
                                       examples=_stored_examples(model), note=notes.append,
                                       rois=_roi_inputs(model))
    check_build_options(model, precision=precision, io_dtype=io_dtype, keep_fp32=keep_fp32,
                        optimization_level=optimization_level)
    trt = import_tensorrt(tensorrt_module)
    for line in notes:
        print(f"[build] note: {line}", file=log, flush=True)
    say = (lambda line: print(line, file=log, flush=True)) if progress else (lambda line: None)
    logger = trt.Logger(trt.Logger.WARNING)
    gpu_name, capability = target_gpu if target_gpu is not None else cuda_device_facts(device)
    # Created before the plugin library is loaded: TensorRT's registry reports why load_library failed only once a
    # builder has installed the logger (seen with TensorRT-RTX 1.7: nothing is printed otherwise).
    builder = trt.Builder(logger)
    routed_lib, fields = load_plugins(trt, model, plugin_library if use_plugin else False,
                                      rtx=tensorrt_module == "tensorrt_rtx", say=say)
    # The builder's TF32 flag does not reach plugins: our DeformConv2d layers get it as their field allow_tf32, where
    # the loaded library's creator lists that field (an older library's layers stay IEEE float32).
    prepared, report, routed = prepare_onnx(model, precision=precision, keep_fp32=keep_fp32, io_dtype=io_dtype,
                                            route_plugin=bool(fields), plugin_fields=fields, tf32=tf32)
    if precision != "fp32":
        say("[build] " + report.summary().replace("\n", "\n[build] "))

    # Our plugin reads the limit when the parser creates its layers (their timing-cache ID) and when the builder
    # configures them (the column budget that fits it). TensorRT-RTX's builder counts a layer's inputs and outputs
    # against the limit as well (measured: plugins/deform_conv/README.md, "Under a workspace limit").
    with plugin_workspace_limit(workspace_bytes, charges_tensors=tensorrt_module == "tensorrt_rtx"):
        network, _parser = parse_network(trt, builder, logger, prepared, onnx_path, source_external=source_external,
                                         scratch=engine_path.parent, say=say)
        config = _configure(trt, builder, profile, workspace_bytes=workspace_bytes, tf32=tf32,
                            optimization_level=optimization_level, say=say)
        cache = _attach_timing_cache(config, Path(timing_cache), say) if timing_cache is not None else None
        serialized = build_with_progress(trt, builder, network, config, say if progress else None)

    atomic_write_bytes(engine_path, bytes(serialized))
    if cache is not None:
        atomic_write_bytes(Path(timing_cache), bytes(config.get_timing_cache().serialize()))
    inputs, outputs = _network_io(trt, network)
    meta = engine_meta.EngineMeta(
        engine_sha256=engine_meta.sha256_file(engine_path), tensorrt_version=trt.__version__, gpu_name=gpu_name,
        compute_capability=capability, precision=precision, profiles=[profile],
        source_model={"path": str(onnx_path.resolve()), "sha256": engine_meta.sha256_file(onnx_path)},
        plugin_library=({"path": str(routed_lib), "sha256": engine_meta.sha256_file(routed_lib)}
                        if routed_lib is not None and routed else None),
        inputs=inputs, outputs=outputs,
        extra={"precision_report": report.to_json(), "routed_nodes": routed, "io_dtype": io_dtype, "tf32": tf32})
    meta_path = engine_meta.write_meta(engine_path, meta)
    seconds = time.monotonic() - start
    say(f"[build] wrote {engine_path} ({engine_path.stat().st_size / 2**20:.1f} MiB) and {meta_path.name} "
        f"in {seconds:.1f} s")
    return BuildResult(engine_path, meta_path, meta, report, seconds)


def _stored_examples(model) -> Dict[str, Tuple[int, ...]]:
    """The example input shapes ``dcn_deploy.export`` stored in ``model`` for its dynamic inputs (those that still
    fit the graph), read from the model already loaded; empty for files written elsewhere."""
    from ..feeds import parse_shape_options  # with no --shape items: exactly the stored defaults

    return parse_shape_options((), model=model)


def _roi_inputs(model) -> Tuple[str, ...]:
    """The inputs of ``model`` that are RoI box lists (their dimension 0 counts boxes, not images)."""
    from ..feeds import roi_input_names

    return roi_input_names(model.graph)


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
        say(f"[build] profile {name}: min {format_profile_shape(rng.min)} opt {format_profile_shape(rng.opt)} "
            f"max {format_profile_shape(rng.max)}")
    if config.add_optimization_profile(trt_profile) < 0:
        ranges = "; ".join(f"{n}: " + "/".join(format_profile_shape(s) for s in (r.min, r.opt, r.max))
                           for n, r in profile.items())
        raise BuildError("TensorRT rejected the optimisation profile " + ranges
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
