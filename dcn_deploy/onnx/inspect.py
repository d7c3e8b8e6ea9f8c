"""What an ONNX file holds, as data (:func:`inspect_model`) and as text (:func:`format_inspection`).

Opsets, inputs/outputs (dtype, shape with fixed sizes and dimension names), the deformable nodes (our
``dcn_deploy`` domain, standard ``DeformConv``, and mmcv's/mmdeploy's ops that ``dcn-deploy adopt`` rewrites) with
their attributes, the local functions stored in the model (the bodies that let stock ONNX Runtime run our ops), a
count of every op type and, when asked for, every node's name and op type (the names
``build_engine(keep_fp32=...)`` / ``dcn-deploy build --keep-fp32`` take).
Needs onnx only.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Dict, List, Union

import numpy as np
import onnx
from onnx import helper

from ..feeds import fed_inputs
from .adopt import FOREIGN_DOMAINS, count_summary, foreign_nodes, is_adoptable_deformable, node_counts
from .opset import DOMAIN, is_deformable_node

__all__ = ["inspect_model", "format_inspection"]


def _dtype(elem_type: int) -> str:
    return onnx.TensorProto.DataType.Name(elem_type).lower()


def _shape(type_proto: onnx.TypeProto) -> Union[List[object], None]:
    tt = type_proto.tensor_type
    if not tt.HasField("shape"):
        return None  # unknown rank
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tt.shape.dim]


def _value_info(value: onnx.ValueInfoProto) -> dict:
    return {"name": value.name, "dtype": _dtype(value.type.tensor_type.elem_type), "shape": _shape(value.type)}


def _float32_text(value: float) -> float:
    """The shortest decimal that reads back as the same float32 (ONNX stores float attributes in float32)."""
    return float(str(np.float32(value)))


def _attribute(attr: onnx.AttributeProto) -> object:
    if attr.ref_attr_name:
        return f"@{attr.ref_attr_name}"
    value = helper.get_attribute_value(attr)
    if attr.type in (onnx.AttributeProto.FLOAT, onnx.AttributeProto.FLOATS):  # stored as float32: 0.1, not 0.100000001
        value = [_float32_text(v) for v in value] if attr.type == onnx.AttributeProto.FLOATS else _float32_text(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, (list, tuple)):
        return [v.decode("utf-8", "replace") if isinstance(v, bytes) else v for v in value]
    if isinstance(value, (int, float, str)):
        return value
    return f"<{onnx.AttributeProto.AttributeType.Name(attr.type).lower()}>"


def _node(node: onnx.NodeProto, initializers: Dict[str, onnx.TensorProto], index: int) -> dict:
    inputs = list(node.input)
    present = [bool(name) for name in inputs] + [False] * (5 - len(inputs))
    info = {
        "name": node.name or f"#{index}",
        "op_type": node.op_type,
        "domain": node.domain or "ai.onnx",
        "inputs": inputs,
        "outputs": list(node.output),
        "attributes": {a.name: _attribute(a) for a in node.attribute},
    }
    if node.op_type in ("DeformConv", "DeformConv2d"):
        info["has_bias"] = present[3]
        info["has_mask"] = present[4]
        weight = initializers.get(inputs[1]) if len(inputs) > 1 else None
        if weight is not None:
            info["weight_shape"] = list(weight.dims)
    return info


def inspect_model(path: Union[str, Path], *, nodes: bool = False) -> dict:
    """A JSON-ready description of the ONNX file at ``path`` (weights stored as external data are not loaded).

    Keys: path, ir_version, producer, opsets {domain: version}, inputs/outputs [{name, dtype, shape}],
    deformable_nodes [{name, op_type, domain, inputs, outputs, attributes, has_bias, has_mask, weight_shape}],
    foreign_in_functions {"domain::op_type": n} (mmcv's/mmdeploy's deformable nodes inside local functions; {}
    without), foreign_other {"domain::op_type": n} (mmcv's/mmdeploy's other ops that adopt rewrites as standard ONNX:
    mmdeploy's NMS, RoIAlign, multi-scale deformable attention, ...; {} without),
    functions [{domain, name, opsets, body}], op_counts {"domain::op_type": n}, node_count, metadata; with
    ``nodes=True`` (CLI: ``--nodes``) also nodes [{name, op_type, domain}] for every graph node in order (an
    unnamed node is "#<index>").
    """
    from ..backends.factory import read_onnx_model

    model = read_onnx_model(path, load_external_data=False)  # checks the argument is a path first
    path = Path(path)

    graph = model.graph
    initializers = {t.name: t for t in graph.initializer}
    graph_inputs = fed_inputs(graph)
    counts = Counter(f"{n.domain or 'ai.onnx'}::{n.op_type}" for n in graph.node)
    info = {
        "path": str(path),
        "ir_version": model.ir_version,
        "producer": f"{model.producer_name} {model.producer_version}".strip(),
        "opsets": {(imp.domain or "ai.onnx"): imp.version for imp in model.opset_import},
        "inputs": [_value_info(v) for v in graph_inputs],
        "outputs": [_value_info(v) for v in graph.output],
        "deformable_nodes": [_node(n, initializers, i) for i, n in enumerate(graph.node)
                             if is_deformable_node(n) or is_adoptable_deformable(n)],
        "functions": [{
            "domain": f.domain,
            "name": f.name,
            "opsets": {(imp.domain or "ai.onnx"): imp.version for imp in f.opset_import},
            "body": [f"{n.domain or 'ai.onnx'}::{n.op_type}" for n in f.node],
        } for f in model.functions],
        # mmcv's/mmdeploy's nodes inside local functions (torch's export_modules_as_functions), which adopt inlines
        "foreign_in_functions": node_counts(foreign_nodes(model, standard=False, where="functions")),
        # mmcv's/mmdeploy's other ops that adopt rewrites as standard ONNX (NMS, RoIAlign, deformable attention, ...)
        "foreign_other": node_counts([n for n in foreign_nodes(model, standard=False, where="graph")
                                      if not is_adoptable_deformable(n)]),
        "op_counts": dict(sorted(counts.items())),
        "node_count": len(graph.node),
        "initializer_count": len(graph.initializer),
        "metadata": {p.key: p.value for p in model.metadata_props},
    }
    if nodes:
        info["nodes"] = [{"name": n.name or f"#{i}", "op_type": n.op_type, "domain": n.domain or "ai.onnx"}
                         for i, n in enumerate(graph.node)]
    return info


def spaced_shape(shape) -> str:
    """Sizes joined by " x " (a derived size such as ``((height - 1)//2) + 1`` stays one readable piece), "?" for an
    unknown one; "unknown rank" for None."""
    if shape is None:
        return "unknown rank"
    return " x ".join("?" if d is None else str(d) for d in shape) or "scalar"


# Longer bodies are summarised by op counts: a chain of hundreds of nodes says nothing at a glance.
_BODY_CHAIN_MAX = 6
_BODY_KINDS_SHOWN = 8


def _format_body(body: List[str]) -> str:
    """The body's ops as a chain when short, else '<n> nodes: op count, ...' (the most frequent kinds; the full
    list is in ``dcn-deploy inspect --json``)."""
    if len(body) <= _BODY_CHAIN_MAX:
        return " -> ".join(body)
    counts: Dict[str, int] = {}
    for op in body:
        short = op.split("::", 1)[1] if op.startswith("ai.onnx::") else op
        counts[short] = counts.get(short, 0) + 1
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    shown = ", ".join(f"{op} {n}" for op, n in ranked[:_BODY_KINDS_SHOWN])
    more = len(ranked) - _BODY_KINDS_SHOWN
    return f"{len(body)} nodes: {shown}" + (f", and {more} more kinds" if more > 0 else "")


def format_inspection(info: dict) -> str:
    """The human summary of :func:`inspect_model`'s result."""
    lines = [f"{info['path']}  (IR {info['ir_version']}, producer {info['producer'] or '?'})",
             "opsets: " + ", ".join(f"{d} {v}" for d, v in info["opsets"].items())]
    lines.append("inputs:")
    lines += [f"  {v['name']}: {v['dtype']} [{spaced_shape(v['shape'])}]" for v in info["inputs"]]
    lines.append("outputs:")
    lines += [f"  {v['name']}: {v['dtype']} [{spaced_shape(v['shape'])}]" for v in info["outputs"]]
    nodes = info["deformable_nodes"]
    none = (" (none: no deformable convolution or RoI pooling)" if not info.get("foreign_in_functions")
            else " in the graph")
    lines.append(f"deformable nodes: {len(nodes)}" + ("" if nodes else none))
    for n in nodes:
        extras = []
        if "weight_shape" in n:
            extras.append("weight " + "x".join(map(str, n["weight_shape"])))
        if "has_bias" in n:
            extras.append(("bias" if n["has_bias"] else "no bias") + ", " + ("mask (v2)" if n["has_mask"] else "no mask (v1)"))
        attrs = ", ".join(f"{k}={v}" for k, v in n["attributes"].items())
        lines.append(f"  {n['name']}: {n['domain']}::{n['op_type']}" + (f"  [{'; '.join(extras)}]" if extras else ""))
        if attrs:
            lines.append(f"      {attrs}")
    foreign = sorted({f"{n['domain']}::{n['op_type']}" for n in nodes if n["domain"] in FOREIGN_DOMAINS})
    if info.get("foreign_in_functions"):
        lines.append(f"  inside local functions: {count_summary(info['foreign_in_functions'])}; "
                     f"dcn-deploy adopt {info['path']} inlines them and rewrites them as {DOMAIN}'s")
    if foreign:
        lines.append(f"  hint: mmcv's/mmdeploy's ops ({', '.join(foreign)}) run only with their project's plugin "
                     f"library; dcn-deploy adopt {info['path']} rewrites them as {DOMAIN}'s")
    elif any(n["op_type"] == "DeformConv" and n["domain"] == "ai.onnx" for n in nodes):
        lines.append(f"  hint: TensorRT builds a standard DeformConv with its own plugin (float and half, symmetric "
                     f"pads); dcn-deploy adopt {info['path']} rewrites them as {DOMAIN}'s, for our plugin")
    if info.get("foreign_other"):
        lines.append(f"other mmcv/mmdeploy ops: {count_summary(info['foreign_other'])}: they run only with their "
                     f"project's plugin library; dcn-deploy adopt {info['path']} rewrites them as standard ONNX")
    if info["functions"]:
        lines.append("functions (bodies that stock ONNX Runtime inlines):")
        for f in info["functions"]:
            opsets = ", ".join(f"{d} {v}" for d, v in f["opsets"].items())
            lines.append(f"  {f['domain']}::{f['name']} = {_format_body(f['body'])}  (opset {opsets})")
    elif any(n["domain"] == DOMAIN for n in nodes):
        lines.append(f"functions: none -- the {DOMAIN} nodes need our plugin (TensorRT) or a re-export to run elsewhere")
    lines.append(f"nodes: {info['node_count']} ("
                 + ", ".join(f"{k.split('::')[1] if k.startswith('ai.onnx::') else k} {v}"
                             for k, v in sorted(info["op_counts"].items(), key=lambda kv: -kv[1])) + ")")
    if "nodes" in info:
        width = min(max((len(n["name"]) for n in info["nodes"]), default=0), 48)
        lines += [f"  {n['name']:{width}s}  {_op_label(n)}" for n in info["nodes"]]
    else:  # the names are what --keep-fp32 takes: say where to find them
        lines.append(f"  (node names and op types: dcn-deploy inspect --nodes {info['path']})")
    return "\n".join(lines)


def _op_label(node: dict) -> str:
    return node["op_type"] if node["domain"] == "ai.onnx" else f"{node['domain']}::{node['op_type']}"
