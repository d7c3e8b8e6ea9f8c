"""Plugin libraries in TensorRT's registry: ours (found, loaded once per process, a second copy of it told apart
from an identical one: :func:`load_plugin_library`) and TensorRT's own (:func:`register_tensorrt_plugins`), and
which of our ops have a plugin (:func:`plugin_fields_from_registry`). :func:`load_plugins` does what a build
needs of all this."""
from __future__ import annotations

import ctypes
import threading
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from ..io_utils import PathLike
from . import engine_meta
from .trt_errors import BuildError

__all__ = ["duplicate_library_message", "find_plugin_library", "load_plugin_library", "load_plugins", "looks_like_plugin_library",
           "mapped_shared_objects", "plugin_fields_from_registry", "register_tensorrt_plugins"]


def load_plugins(trt, model, plugin_library, *, rtx: bool, say: Callable[[str], None]
                 ) -> Tuple[Optional[Path], Dict[str, Sequence[str]]]:
    """Load our plugin library when the model uses our ops (``plugin_library=False``: do not), and TensorRT's own
    plugins. Returns (library path or None, op_type -> field names of the ops that have a plugin)."""
    from ..onnx.opset import used_ops

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


def find_plugin_library(explicit: Optional[PathLike]) -> Path:
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


def load_plugin_library(trt, path: Optional[PathLike] = None, *, required_creators: Sequence[str] = ()) -> Path:
    """Load our plugin library into TensorRT's plugin registry (once per process) and check its creators.

    TensorRT registers a creator name/version/namespace once per process: ``load_library`` returns None for a
    second library with the same creators. A copy with the same bytes as the one already loaded is accepted (it
    would behave the same); a different one is refused with :func:`duplicate_library_message`.
    """
    from ..onnx.plugin_routing import PLUGIN_FIELDS

    path = find_plugin_library(path).resolve()
    registry = trt.get_plugin_registry()
    with _loaded_library_lock:
        if str(path) not in _loaded_libraries:
            mapped_before = _mapped_files()
            handle = registry.load_library(str(path))
            if handle is None:
                if not looks_like_plugin_library(path):
                    from ..wording import argument

                    raise BuildError(f"{argument('plugin_library', '--plugin')} {path} is not a TensorRT plugin "
                                     "library (not a shared object exporting getCreators); give "
                                     "libdcn_deploy_plugin.so (its path: dcn-deploy plugin info)")
                registered = _registered_creators(registry, PLUGIN_FIELDS)
                if not registered:
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


def looks_like_plugin_library(path: PathLike) -> bool:
    """Whether ``path`` is an ELF shared object naming ``getCreators`` (the entry point TensorRT's registry calls):
    the check that tells a file TensorRT could not load at all from a copy refused as a duplicate."""
    try:
        data = Path(path).read_bytes()
    except OSError:
        return False
    return data.startswith(b"\x7fELF") and b"getCreators" in data


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
