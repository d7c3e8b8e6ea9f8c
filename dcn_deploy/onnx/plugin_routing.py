"""Route ``dcn_deploy`` nodes to our TensorRT plugin: add ``plugin_namespace="dcn_deploy"`` to them.

Why a rewrite: TensorRT's ONNX parser handles a node in this order (field notes, onnx-tensorrt source):
(1) a registered plugin, but only if the node has a ``plugin_namespace`` attribute (or the parser's
plugin-override flag is set); (2) its built-in importer for the op_type; (3) the model's ONNX function;
(4) the fallback plugin lookup. Exported files carry no ``plugin_namespace`` (docs/ops.md), so without this
rewrite the parser inlines our function body, a standard ``DeformConv``, which its built-in importer sends
to TensorRT's own ``ModulatedDeformConv2d`` plugin (half accumulation, symmetric pads only). The builder
applies the rewrite after loading our plugin library, so the file on disk stays portable.

Only ops that have a plugin are routed (``fields``: op_type -> the creator's field names; the builder reads
them from TensorRT's registry after loading our library). Ops without a plugin stay unrouted, and TensorRT
builds them from their ONNX function bodies.

The parser passes a plugin only the attributes named in the creator's fields; :func:`check_plugin_fields`
finds attributes the plugin would silently drop (the "deform_groups vs deformable_groups" class of bug).

A plugin cannot see the builder's TF32 flag, so the build also tells it in a field: :func:`route_to_plugin` writes
``allow_tf32`` (1 where its ``allow_tf32`` is true, else 0) on each routed node whose plugin lists that field
(:data:`TF32_FIELD`; DeformConv2d's, in libraries that have it). Always written there, so TensorRT's parser finds
every field it was told of (it warns about a missing one). An older library without the field gets no such
attribute, and its layers stay IEEE float32.
"""
from __future__ import annotations

from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import onnx
from onnx import helper

from .opset import DOMAIN, TF32_ATTRIBUTE, domain_nodes

__all__ = ["PLUGIN_DOMAIN", "PLUGIN_NAMESPACE", "PLUGIN_FIELDS", "TF32_FIELD", "RoutingError", "check_plugin_fields",
           "route_to_plugin", "routed_nodes", "unrouted_ops"]

PLUGIN_DOMAIN = DOMAIN
PLUGIN_NAMESPACE = "dcn_deploy"
# The parser consumes these itself; they are not plugin fields.
_PARSER_ATTRIBUTES = ("plugin_namespace", "plugin_version")
# The field that carries the build's TF32 setting to a plugin: INT32, 1 lets float32 layers run their products on
# TF32 tensor cores, 0 (the plugin's default) keeps IEEE float32. Written only by route_to_plugin, never exported.
# One name, not two that happen to agree: the parser hands a plugin the node attributes named as its fields, so
# the field is DeformConv2d's schema attribute (defined once, in opset), named here as this module names fields.
TF32_FIELD = TF32_ATTRIBUTE
# What route_to_plugin writes, not the model: never a field the plugin would misread (a stale allow_tf32, from a
# file routed before, is rewritten for the library at hand).
_ROUTING_ATTRIBUTES = _PARSER_ATTRIBUTES + (TF32_FIELD,)
# Field names of our plugin creators (docs/ops.md); the node attributes must use exactly these names.
PLUGIN_FIELDS: Dict[str, Tuple[str, ...]] = {
    "DeformConv2d": ("strides", "pads", "dilations", "group", "offset_group", TF32_FIELD),
    "DeformRoIPool": ("pooled_height", "pooled_width", "sampling_ratio", "spatial_scale", "gamma"),
    "DeformPSRoIPool": ("spatial_scale", "output_dim", "group_size", "pooled_size", "part_size", "sample_per_part",
                        "trans_std", "no_trans"),
}


class RoutingError(ValueError):
    """A node cannot be routed to our plugin as it is; the message names the node and the fix."""


def _label(node: onnx.NodeProto) -> str:
    return f"{node.name or '(unnamed)'} ({node.domain}::{node.op_type})"


def check_plugin_fields(model: onnx.ModelProto, fields: Optional[Mapping[str, Sequence[str]]] = None,
                        domain: str = PLUGIN_DOMAIN) -> List[str]:
    """Problems that would make the parser feed a plugin badly: node attributes that are not its fields."""
    fields = PLUGIN_FIELDS if fields is None else fields
    problems = []
    for node in domain_nodes(model, domain):
        known = fields.get(node.op_type)
        if known is None:
            continue  # no plugin: not routed, built from its function body
        dropped = [a.name for a in node.attribute if a.name not in known and a.name not in _ROUTING_ATTRIBUTES]
        if dropped:
            problems.append(f"{_label(node)}: attribute(s) {dropped} are not fields of the {node.op_type} plugin "
                            f"({', '.join(known)}) and would be dropped by TensorRT's parser; re-export the model "
                            "with this dcn_deploy")
    return problems


def route_to_plugin(model: onnx.ModelProto, *, namespace: str = PLUGIN_NAMESPACE, domain: str = PLUGIN_DOMAIN,
                    version: Optional[str] = None, strict: bool = True,
                    fields: Optional[Mapping[str, Sequence[str]]] = None,
                    allow_tf32: bool = False) -> Tuple[onnx.ModelProto, int]:
    """A copy of ``model`` whose ``domain`` nodes with a plugin carry ``plugin_namespace=namespace``.

    Returns (copy, number of nodes routed). ``fields`` (op_type -> plugin field names, default
    :data:`PLUGIN_FIELDS`) says which ops have a plugin; nodes of other ops are left as they are. ``version``
    also sets ``plugin_version`` (the parser's default is "1", our creators' version). An existing
    ``plugin_namespace`` is overwritten, so the rewrite is idempotent. With ``strict`` a node the plugin would
    misread (see :func:`check_plugin_fields`) raises :class:`RoutingError`. ``allow_tf32`` (the build's TF32
    setting) is written as ``allow_tf32`` = 1 (True) or 0 (False, the default: IEEE float32) on the routed nodes
    whose plugin lists :data:`TF32_FIELD` in ``fields``, overwriting one already there; removed from those whose
    plugin does not (a file routed before, built with an older library: that library runs IEEE float32).
    """
    out = onnx.ModelProto()
    out.CopyFrom(model)
    fields = PLUGIN_FIELDS if fields is None else fields
    if strict:
        problems = check_plugin_fields(out, fields, domain)
        if problems:
            raise RoutingError("cannot route to the dcn_deploy TensorRT plugin:\n  " + "\n  ".join(problems))
    count = 0
    for node in domain_nodes(out, domain):
        if node.op_type not in fields:
            continue
        _set_attribute(node, "plugin_namespace", namespace)
        if version is not None:
            _set_attribute(node, "plugin_version", version)
        if TF32_FIELD in fields[node.op_type]:
            _set_attribute(node, TF32_FIELD, int(bool(allow_tf32)))
        else:  # an older library: it would drop the field, and runs IEEE float32
            _remove_attribute(node, TF32_FIELD)
        count += 1
    return out, count


def _set_attribute(node: onnx.NodeProto, name: str, value) -> None:
    _remove_attribute(node, name)
    node.attribute.append(helper.make_attribute(name, value))


def _remove_attribute(node: onnx.NodeProto, name: str) -> None:
    for attr in node.attribute:
        if attr.name == name:
            node.attribute.remove(attr)
            break


def unrouted_ops(model: onnx.ModelProto, fields: Optional[Mapping[str, Sequence[str]]] = None,
                 domain: str = PLUGIN_DOMAIN) -> List[str]:
    """op_types of ``domain`` used in the model that have no plugin in ``fields`` (sorted)."""
    fields = PLUGIN_FIELDS if fields is None else fields
    return sorted({n.op_type for n in domain_nodes(model, domain) if n.op_type not in fields})


def routed_nodes(model: onnx.ModelProto, domain: str = PLUGIN_DOMAIN) -> List[Tuple[str, Optional[str]]]:
    """``[(node label, plugin_namespace or None)]`` for every ``domain`` node: what the parser will do with it."""
    out = []
    for node in domain_nodes(model, domain):
        ns = next((helper.get_attribute_value(a) for a in node.attribute if a.name == "plugin_namespace"), None)
        out.append((_label(node), ns.decode() if isinstance(ns, bytes) else ns))
    return out
