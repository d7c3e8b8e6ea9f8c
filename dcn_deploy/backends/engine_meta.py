"""The sidecar that travels with every engine ``dcn-deploy build`` writes: ``MODEL.engine.json``.

A TensorRT engine only runs with the TensorRT version and GPU it was built for, and (when it contains our
plugin) with the same plugin library. TensorRT notices some of this itself, late and with a crash or a terse
log line; the sidecar lets the runner refuse a mismatch up front with a message that says what to rebuild.

Fields (all JSON):
    format            this file's version (:data:`FORMAT_VERSION`)
    engine_sha256     hash of the engine file, so a sidecar left beside a rebuilt engine is noticed
    tensorrt_version  ``tensorrt.__version__`` at build time, e.g. "10.14.1.48"
    gpu_name          e.g. "NVIDIA H100 80GB HBM3"
    compute_capability  [major, minor]
    plugin_library    {"path": ..., "sha256": ...} of the plugin library loaded for the build, or null
    precision         "fp32", "fp16" or "bf16"
    profiles          [{input: {"min": [...], "opt": [...], "max": [...]}}]  one dict per optimisation profile
    source_model      {"path": ..., "sha256": ...} of the ONNX file given to the build
    inputs / outputs  [{"name", "dtype", "shape"}] as the engine declares them (-1 for dynamic)
    created, dcn_deploy_version, extra (free-form, e.g. the precision report)

Everything here is pure: no TensorRT import. The runner gathers the running machine's facts and calls
:func:`check_compatible`.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

from ..io_utils import atomic_write_text
from .trt_profiles import Profile, profile_from_json, profile_to_json

__all__ = ["FORMAT_VERSION", "EngineMeta", "EngineMetaError", "EngineMismatchError", "RuntimeFacts",
           "check_compatible", "meta_path_for", "needs_plugin_library", "read_meta", "rebuild_command", "sha256_file",
           "write_meta"]

FORMAT_VERSION = 1
PRECISIONS = ("fp32", "fp16", "bf16")


class EngineMetaError(ValueError):
    """The sidecar is missing, unreadable or malformed."""


class EngineMismatchError(RuntimeError):
    """The engine was built for another TensorRT, GPU or plugin library than the one running now."""


def sha256_file(path: os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def meta_path_for(engine_path: os.PathLike) -> Path:
    """``model.engine`` -> ``model.engine.json``."""
    engine_path = Path(engine_path)
    return engine_path.with_name(engine_path.name + ".json")


@dataclass
class EngineMeta:
    engine_sha256: str
    tensorrt_version: str
    gpu_name: str
    compute_capability: Tuple[int, int]
    precision: str
    profiles: List[Profile]
    source_model: Dict[str, str]
    plugin_library: Optional[Dict[str, str]] = None
    inputs: List[Dict[str, Any]] = field(default_factory=list)
    outputs: List[Dict[str, Any]] = field(default_factory=list)
    created: str = ""
    dcn_deploy_version: str = ""
    extra: Dict[str, Any] = field(default_factory=dict)
    format: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise EngineMetaError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        self.compute_capability = tuple(int(v) for v in self.compute_capability)  # type: ignore[assignment]
        if len(self.compute_capability) != 2:
            raise EngineMetaError(f"compute_capability must be [major, minor], got {self.compute_capability!r}")
        if not self.created:
            self.created = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        if not self.dcn_deploy_version:
            from .. import __version__

            self.dcn_deploy_version = __version__

    def to_json(self) -> Dict[str, Any]:
        data = asdict(self)
        data["compute_capability"] = list(self.compute_capability)
        data["profiles"] = [profile_to_json(p) for p in self.profiles]
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any], source: str = "engine metadata") -> "EngineMeta":
        if not isinstance(data, Mapping):
            raise EngineMetaError(f"{source}: expected a JSON object, got {type(data).__name__}")
        fmt = data.get("format")
        if fmt != FORMAT_VERSION:
            raise EngineMetaError(f"{source}: format {fmt!r} is not {FORMAT_VERSION}, the one this dcn_deploy "
                                  "reads; rebuild the engine with this version's `dcn-deploy build`")
        required = ("engine_sha256", "tensorrt_version", "gpu_name", "compute_capability", "precision", "profiles",
                    "source_model")
        missing = [k for k in required if k not in data]
        if missing:
            raise EngineMetaError(f"{source}: missing field(s) {missing}; the file is damaged or not ours, rebuild "
                                  "the engine with `dcn-deploy build`")
        known = {f for f in cls.__dataclass_fields__}
        kwargs = {k: v for k, v in data.items() if k in known}
        try:
            kwargs["profiles"] = [profile_from_json(p) for p in data["profiles"]]
            return cls(**kwargs)
        except (KeyError, TypeError, ValueError) as exc:
            raise EngineMetaError(f"{source}: malformed ({exc}); rebuild the engine with `dcn-deploy build`") from exc


def write_meta(engine_path: os.PathLike, meta: EngineMeta) -> Path:
    """Write ``engine_path``'s sidecar atomically; returns its path."""
    path = meta_path_for(engine_path)
    atomic_write_text(path, json.dumps(meta.to_json(), indent=2, sort_keys=True) + "\n")
    return path


def read_meta(engine_path: os.PathLike, *, verify_engine_hash: bool = True) -> EngineMeta:
    """Read and validate ``engine_path``'s sidecar; with ``verify_engine_hash`` also check it belongs to the file."""
    engine_path = Path(engine_path)
    path = meta_path_for(engine_path)
    if not path.exists():
        raise EngineMetaError(
            f"{engine_path} has no metadata file {path.name} beside it, so its TensorRT version, GPU and plugin "
            "cannot be checked. Rebuild it with `dcn-deploy build`, or (for an engine from trtexec) load it with "
            "check_metadata=False / --no-check-metadata at your own risk")
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise EngineMetaError(f"{path}: cannot be read as JSON ({exc}); rebuild the engine") from exc
    meta = EngineMeta.from_json(data, source=str(path))
    if verify_engine_hash:
        actual = sha256_file(engine_path)
        if actual != meta.engine_sha256:
            raise EngineMetaError(
                f"{path} describes another engine (sha256 {meta.engine_sha256[:12]}..., the file {engine_path.name} "
                f"has {actual[:12]}...): the engine was replaced after the build. Rebuild it with `dcn-deploy build` "
                "so that both files match")
    return meta


def needs_plugin_library(meta: Optional[EngineMeta]) -> Optional[bool]:
    """Whether the engine holds our plugin layers, as far as its sidecar says: True, False, or None (unknown).

    True when the sidecar records the plugin library of the build. False only when it records none *and*
    ``extra["routed_nodes"]`` (which ``dcn-deploy build`` always writes) says no node was routed to our plugin.
    None without a sidecar (``check_metadata=False``), or when the two disagree or the count is missing (a sidecar
    written by other tools): the runner then loads the library when it finds one, as before it read this field.
    """
    if meta is None:
        return None
    if meta.plugin_library:
        return True
    routed = meta.extra.get("routed_nodes") if isinstance(meta.extra, Mapping) else None
    if isinstance(routed, int) and not isinstance(routed, bool) and routed == 0:
        return False
    return None


@dataclass(frozen=True)
class RuntimeFacts:
    """What the running machine offers: TensorRT version, GPU, and the hash of the plugin library it would load."""

    tensorrt_version: str
    gpu_name: str
    compute_capability: Tuple[int, int]
    plugin_library_sha256: Optional[str] = None


def _version_key(version: str) -> Tuple[str, ...]:
    # TensorRT engines are tied to the exact major.minor.patch; the build number does not matter.
    return tuple(version.split(".")[:3])


def check_compatible(meta: EngineMeta, facts: RuntimeFacts, *, engine_name: str = "engine") -> List[str]:
    """Raise :class:`EngineMismatchError` listing every hard mismatch; return soft warnings (other GPU model).

    Hard: TensorRT major.minor.patch, compute capability, the plugin library's content (when the engine uses it).
    Soft: the GPU's name differs but its compute capability matches (TensorRT allows it, tactics may be slower).
    """
    problems: List[str] = []
    warnings: List[str] = []
    if _version_key(meta.tensorrt_version) != _version_key(facts.tensorrt_version):
        problems.append(f"it was built with TensorRT {meta.tensorrt_version}, this process has "
                        f"{facts.tensorrt_version}")
    if tuple(meta.compute_capability) != tuple(facts.compute_capability):
        problems.append(f"it was built for compute capability {meta.compute_capability[0]}.{meta.compute_capability[1]}"
                        f" ({meta.gpu_name}), this GPU is {facts.compute_capability[0]}.{facts.compute_capability[1]}"
                        f" ({facts.gpu_name})")
    elif meta.gpu_name != facts.gpu_name:
        warnings.append(f"{engine_name} was built on {meta.gpu_name} and runs on {facts.gpu_name} (same compute "
                        "capability): it works, but rebuilding on this GPU may be faster")
    if meta.plugin_library:
        want = meta.plugin_library.get("sha256")
        if facts.plugin_library_sha256 is None:
            problems.append(f"it contains dcn_deploy plugin layers but no plugin library was found to load "
                            f"(built with {meta.plugin_library.get('path')})")
        elif want != facts.plugin_library_sha256:
            problems.append(f"it was built with another plugin library (sha256 {str(want)[:12]}..., the one found "
                            f"now has {facts.plugin_library_sha256[:12]}...)")
    if problems:
        raise EngineMismatchError(
            f"{engine_name} cannot run here: " + "; ".join(problems) + ". Rebuild it on this machine: "
            + rebuild_command(meta, engine_name))
    return warnings


def rebuild_command(meta: EngineMeta, engine_name: str = "ENGINE") -> str:
    """The ``dcn-deploy build`` command that builds an engine like ``meta``'s: same model, precision, profile, I/O
    type, nodes kept in float32 by name and TF32 setting (as far as the sidecar records them)."""
    import shlex

    words = ["dcn-deploy", "build", meta.source_model.get("path", "MODEL.onnx"), "-o", engine_name,
             "--precision", meta.precision]
    if len(meta.profiles) == 1:
        words += ["--shapes", ",".join(f"{name}:" + "/".join("x".join(str(int(v)) for v in s)
                                                               for s in (rng.min, rng.opt, rng.max))
                                       for name, rng in meta.profiles[0].items())]
    extra = meta.extra if isinstance(meta.extra, Mapping) else {}
    if extra.get("io_dtype") == "half":
        words += ["--io-dtype", "half"]
    report = extra.get("precision_report")
    kept = report.get("kept_fp32", []) if isinstance(report, Mapping) else []
    for entry in kept:
        if isinstance(entry, (list, tuple)) and len(entry) == 3 and entry[2] == "named in --keep-fp32":
            words += ["--keep-fp32", str(entry[0])]
    if extra.get("tf32") is False:
        words.append("--no-tf32")
    return " ".join(shlex.quote(w) for w in words)
