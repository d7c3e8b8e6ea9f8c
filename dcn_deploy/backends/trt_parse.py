"""The ONNX model TensorRT's parser gets: read with its external data (:func:`read_model_for_build`), prepared
(precision conversion, routing of our nodes to the plugin: :func:`prepare_onnx`), parsed into a strongly typed
network by the route its size allows (:func:`choose_parse_route`, :func:`parse_network`), and the parser's
errors turned into one message with a hint (:func:`format_parser_errors`)."""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Callable, Dict, Iterable, Optional, Sequence

from ..onnx.external_data import serialized_size, uses_external_data, write_with_external_data
from ..wording import argument
from .factory import read_onnx_model
from .trt_errors import BuildError

__all__ = ["PARSE_IN_MEMORY_LIMIT", "choose_parse_route", "format_parser_errors", "parse_network", "prepare_onnx",
           "read_model_for_build"]


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


def prepare_onnx(model, *, precision: str = "fp32", keep_fp32: Iterable[str] = (), io_dtype: str = "float32",
                 route_plugin: bool = True, plugin_fields: Optional[Dict[str, Sequence[str]]] = None,
                 tf32: bool = False):
    """The ONNX graph TensorRT will parse: converted to ``precision``, GridSample's modes named as before opset 20
    (:data:`_GRID_SAMPLE_MODES_BEFORE_20`) and (optionally) routed to our plugins.

    ``plugin_fields`` (op_type -> the creator's field names) says which of our ops have a plugin; default
    ``plugin_routing.PLUGIN_FIELDS``. ``tf32``: the build's TF32 setting, written as ``allow_tf32`` (1, or 0 for
    False, the default) on the routed nodes whose plugin lists that field (``route_to_plugin``'s ``allow_tf32``).
    Returns ``(model, precision_report, routed_node_count)``. Pure ONNX.
    """
    from ..onnx.plugin_routing import route_to_plugin
    from ..onnx.precision import convert_precision

    converted, report = convert_precision(model, precision, keep_fp32_nodes=keep_fp32, io_dtype=io_dtype)
    _grid_sample_modes_as_before_opset_20(converted)
    routed = 0
    if route_plugin:
        converted, routed = route_to_plugin(converted, fields=plugin_fields, allow_tf32=tf32)
    return converted, report, routed


# GridSample's modes renamed by opset 20 -> their opset-16 names. TensorRT's ONNX parser (onnx-tensorrt 10.1's
# importer, and per onnx/onnx-tensorrt#1060 still TensorRT 11.1 and TensorRT-RTX 1.5) compares the mode with the old
# names only and reads any other as nearest, silently; it does not check the names against the opset.
_GRID_SAMPLE_MODES_BEFORE_20 = {b"linear": b"bilinear", b"cubic": b"bicubic"}


def _grid_sample_modes_as_before_opset_20(model) -> None:
    """In place: each standard GridSample's mode of opset 20 ("linear", "cubic") written as opset 16 names it, for
    the parser (an absent mode is read as "bilinear" by the parser, as opset 20 reads it "linear")."""
    from ..onnx.opset import with_subgraphs

    for node in with_subgraphs([*model.graph.node, *(n for f in model.functions for n in f.node)]):
        if node.op_type == "GridSample" and node.domain in ("", "ai.onnx"):
            for attribute in node.attribute:
                if attribute.name == "mode" and attribute.s in _GRID_SAMPLE_MODES_BEFORE_20:
                    attribute.s = _GRID_SAMPLE_MODES_BEFORE_20[attribute.s]


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


def parse_network(trt, builder, logger, prepared, onnx_path: Path, *, source_external: bool, scratch: Path,
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


def format_parser_errors(errors: Sequence[Dict[str, object]], model_name: str = "the model") -> str:
    """One message from the ONNX parser's errors (dicts with desc, code, node, node_name, op), with a hint."""
    from ..onnx.plugin_routing import PLUGIN_FIELDS

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
        op = str(err.get("op", ""))
        standard = op in ("DeformConv", "ModulatedDeformConv2d")
        missing = "plugin" in low and ("could not find" in low or "not found" in low or "no importer" in low)
        if standard and missing:
            hints.append("a standard DeformConv needs TensorRT's own plugin (libnvinfer_plugin's "
                         "ModulatedDeformConv2d), which this TensorRT lacks: export without --standard (or rewrite "
                         "the file's DeformConv nodes as ours with "
                         f"{argument('dcn_deploy.adopt_file', 'dcn-deploy adopt')}) and build without --no-plugin so "
                         "our plugin handles it")
        elif missing and op and op not in PLUGIN_FIELDS:
            hints.append(f"{op} is not one of dcn_deploy's ops ({', '.join(PLUGIN_FIELDS)}), and the build loads "
                         "only our plugin library (and TensorRT's own): the library that defines that op must be "
                         "loaded into the process first (mmdeploy's ops: its libmmdeploy_tensorrt_ops.so, e.g. "
                         "with LD_PRELOAD), or the op replaced before the build")
        elif missing:
            hints.append("the dcn_deploy plugin library was not loaded or has another name/version: check "
                         f"`dcn-deploy plugin info` and pass {argument('plugin_library=', '--plugin PATH')}")
        elif "deformconv" in low or "modulateddeformconv" in low:
            hints.append("a deformable convolution reached TensorRT's own plugin; build without --no-plugin so our "
                         "plugin handles it")
    lines += [f"hint: {h}" for h in dict.fromkeys(hints)]
    return "\n".join(lines)
