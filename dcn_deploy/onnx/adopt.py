"""Rewrite the deformable nodes that other exporters write as ``dcn_deploy``'s own (:func:`adopt_model`).

Files exported by mmcv, mmdeploy or torch's exporter (torchvision's ``deform_conv2d``) hold deformable nodes that
only their own runtimes know: mmcv's and mmdeploy's custom ops need those projects' plugin libraries ("plugin not
found" on TensorRT, "no op registered" in ONNX Runtime), and the standard ``DeformConv`` goes to TensorRT's own
plugin (float and half only, symmetric pads only). These are the same layers as ours, so each node can be replaced
by the ``dcn_deploy`` node that computes the same thing:

| node | becomes | how |
| --- | --- | --- |
| ``DeformConv`` (ONNX, 2-D) | ``DeformConv2d`` | same inputs and attributes, ``kernel_shape`` dropped |
| ``mmcv::MMCVDeformConv2d``, ``mmdeploy::MMCVDeformConv2d`` | ``DeformConv2d`` | inputs (input, offset, weight) -> (X, W, offset) |
| ``mmcv::MMCVModulatedDeformConv2d``, ``mmdeploy::...`` | ``DeformConv2d`` | (input, offset, mask, weight[, bias]) -> (X, W, offset, B, mask) |
| ``mmcv::MMCVDeformRoIPool``, ``mmdeploy::...`` | ``DeformRoIPool`` | same inputs and attribute names (ours are mmcv's) |

mmcv's attributes ``stride``, ``padding``, ``dilation``, ``groups``, ``deform_groups`` become ``strides``, ``pads``
(padding on both sides), ``dilations``, ``group`` and ``offset_group``. mmdeploy writes ``MMCVDeformConv2d``'s
padding as four values ``[pad_h, pad_h, pad_w, pad_w]`` (each of the PyTorch layer's two values twice); it is read
so, which is what the PyTorch layer computed; mmdeploy's own kernels read the first two values as (pad_h, pad_w),
that is (pad_h, pad_h), and lose the width padding when it differs. A missing bias becomes zeros, a missing RoI
offset zeros (what mmcv computes without one). The semantics (sampling, the out-of-image rule, offset and mask
layouts) are the same in all of these ops: torchvision's, which mmcv's kernels follow.

The model's default opset is raised to 19 when it is lower (``onnx.version_converter``; mmdeploy exports opset 11),
because the function bodies stored with our ops (so that ONNX Runtime runs the file) use the standard
``DeformConv`` of opset 19. Nodes keep their names and their output names, so the rest of the graph is unchanged,
but for a ``Hardmax`` below opset 13 whose axis is not -1: the converter keeps it as it is though opset 13 changed its
meaning, so it is first written in the form that means the same in both (Flatten, Hardmax, Reshape).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ..wording import argument
from .opset import DEFORM_CONV, DOMAIN, MIN_OPSET, default_opset, all_nodes, attach_functions
from .roi_opset import DEFORM_ROI_POOL

__all__ = ["FOREIGN_DOMAINS", "AdoptedNode", "AdoptedFile", "Adoption", "AdoptionError", "is_adoptable", "foreign_nodes",
           "node_summary", "foreign_op_advice", "adopt_model", "adopt_file"]

# The custom-op domains of mmcv's own ONNX symbolics and of mmdeploy's rewrites of them.
FOREIGN_DOMAINS = ("mmcv", "mmdeploy")
_STANDARD = ("", "ai.onnx")


class AdoptionError(ValueError):
    """A foreign node that cannot be rewritten as ours (the message names it, the reason and the fix)."""


@dataclass(frozen=True)
class AdoptedNode:
    """One rewritten node: its name, the op it was (``"mmdeploy::MMCVModulatedDeformConv2d"``), the op it is now
    (``"dcn_deploy::DeformConv2d"``), our attributes, and notes on how a value was read."""

    name: str
    source: str
    target: str
    attributes: Dict[str, object]
    notes: Tuple[str, ...] = ()

    def to_dict(self) -> dict:
        return {"name": self.name, "source": self.source, "target": self.target, "attributes": self.attributes,
                "notes": list(self.notes)}


@dataclass
class Adoption:
    """What :func:`adopt_model` did: the nodes rewritten, in graph order, and the default opset before and after."""

    nodes: List[AdoptedNode] = field(default_factory=list)
    opset_before: int = 0
    opset_after: int = 0
    left: List[str] = field(default_factory=list)  # other mmcv/mmdeploy nodes, "name (domain::op)"
    inlined: List[str] = field(default_factory=list)  # local functions inlined because they held foreign nodes

    def summary(self) -> str:
        lines = [f"rewrote {len(self.nodes)} node(s) as {DOMAIN} ops"
                 + (f"; raised the default opset from {self.opset_before} to {self.opset_after}"
                    if self.opset_after != self.opset_before else "")]
        if self.inlined:
            lines.append(f"  inlined the local function(s) holding them: {', '.join(self.inlined)}")
        for node in self.nodes:
            attrs = ", ".join(f"{k}={v}" for k, v in node.attributes.items())
            lines.append(f"  {node.name}: {node.source} -> {node.target} ({attrs})")
            lines += [f"    note: {note}" for note in node.notes]
        if self.left:
            lines.append(f"left as they are (not deformable layers; they still need their project's plugin "
                         f"library): {', '.join(self.left)}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"nodes": [n.to_dict() for n in self.nodes], "opset_before": self.opset_before,
                "opset_after": self.opset_after, "left": list(self.left), "inlined": list(self.inlined)}


def _source(node: onnx.NodeProto) -> str:
    return f"{node.domain or 'ai.onnx'}::{node.op_type}"


def _node_id(node: onnx.NodeProto) -> str:
    """How the report names a node: its name, else its first output's."""
    return node.name or (node.output[0] if node.output else "(unnamed)")


def _label(node: onnx.NodeProto) -> str:
    if node.name or not node.output:
        return f"node {_node_id(node)!r} ({_source(node)})"
    return f"the {_source(node)} node writing {node.output[0]!r}"


# --------------------------------------------------------------------------------------------------------------
# Attributes
# --------------------------------------------------------------------------------------------------------------

def _attributes(node: onnx.NodeProto) -> Dict[str, object]:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _int_values(node: onnx.NodeProto, attrs: Dict[str, object], name: str, default) -> List[int]:
    """An attribute written as an int or ints (INT or INTS), as a list; refused when of another type."""
    value = attrs.get(name, default)
    if isinstance(value, int):
        return [value]
    if isinstance(value, list) and all(isinstance(v, int) for v in value):
        return value
    raise AdoptionError(f"{_label(node)}: {name} must be an int or ints, got {value!r}; the file is malformed: "
                        "re-export it")


def _int(node: onnx.NodeProto, attrs: Dict[str, object], name: str, default: int) -> int:
    """An int attribute (INT, or a FLOAT holding a whole number); refused otherwise."""
    value = attrs.get(name, default)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int):
        raise AdoptionError(f"{_label(node)}: {name} must be a whole number, got {value!r}; the file is malformed: "
                            "re-export it")
    return value


def _number(node: onnx.NodeProto, attrs: Dict[str, object], name: str, default: float) -> float:
    value = attrs.get(name, default)
    if not isinstance(value, (int, float)):
        raise AdoptionError(f"{_label(node)}: {name} must be a number, got {value!r}; the file is malformed: "
                            "re-export it")
    return float(value)


def _pair(node: onnx.NodeProto, attrs: Dict[str, object], name: str, default: int) -> List[int]:
    """An mmcv pair attribute: an int (both axes) or two ints, (h, w)."""
    values = _int_values(node, attrs, name, default)
    if len(values) == 1:
        values *= 2
    if len(values) != 2:
        raise AdoptionError(f"{_label(node)}: {name} must hold 1 or 2 values (h, w), got {values}")
    return values


def _mmcv_padding(node: onnx.NodeProto, attrs: Dict[str, object]) -> Tuple[List[int], Tuple[str, ...]]:
    """(pad_h, pad_w) of an mmcv convolution: one or two values (mmcv's symbolic), or mmdeploy's four, each of the
    layer's two values twice ([pad_h, pad_h, pad_w, pad_w]). Also the notes for the report."""
    values = _int_values(node, attrs, "padding", 0)
    if len(values) in (1, 2):
        return _pair(node, attrs, "padding", 0), ()
    if len(values) == 4 and values[0] == values[1] and values[2] == values[3]:
        pad = [values[0], values[2]]
        notes = ()
        if pad[0] != pad[1]:
            notes = (f"padding {values} read as mmdeploy writes it, (pad_h, pad_w) = ({pad[0]}, {pad[1]}); mmdeploy's "
                     f"own plugins read ({values[0]}, {values[1]}) and lose the width padding",)
        return pad, notes
    raise AdoptionError(f"{_label(node)}: padding {values} is neither (pad_h, pad_w) nor mmdeploy's "
                        "[pad_h, pad_h, pad_w, pad_w]; fix the attribute to one of those forms")


def _positive(node: onnx.NodeProto, name: str, value: int) -> int:
    if value < 1:
        raise AdoptionError(f"{_label(node)}: {name} must be >= 1, got {value}")
    return value


# --------------------------------------------------------------------------------------------------------------
# The graph being rewritten: names, initializers, and nodes added beside the rewritten ones
# --------------------------------------------------------------------------------------------------------------

class _Scope:
    """One graph's rewrite: the initializers visible in it (its own and its outer graphs'), fresh value names, and
    the initializers to add to it."""

    def __init__(self, graph: onnx.GraphProto, names: set, outer: Optional["_Scope"] = None):
        self.graph = graph
        self.names = names  # every value name of the model, shared by the scopes
        self.outer = outer
        self.initializers = {t.name: t for t in graph.initializer}
        self.constants = {n.output[0]: n for n in graph.node if n.op_type == "Constant" and n.domain in _STANDARD
                          and len(n.output) == 1}
        self.added: List[onnx.TensorProto] = []

    def initializer(self, name: str) -> Optional[onnx.TensorProto]:
        if name in self.initializers:
            return self.initializers[name]
        return self.outer.initializer(name) if self.outer is not None else None

    def rank(self, name: str) -> Optional[int]:
        """The rank the graph declares for value ``name`` (an input, a value_info or an initializer of this graph or
        an outer one); None where unknown."""
        tensor = self.initializer(name)
        if tensor is not None:
            return len(tensor.dims)
        for value in list(self.graph.input) + list(self.graph.value_info):
            if value.name == name and value.type.tensor_type.HasField("shape"):
                return len(value.type.tensor_type.shape.dim)
        return self.outer.rank(name) if self.outer is not None else None

    def is_empty_constant(self, name: str) -> bool:
        """``name`` is a tensor of no elements stored in the file (an initializer or a Constant)."""
        tensor = self.initializer(name)
        if tensor is None and name in self.constants:
            value = next((a for a in self.constants[name].attribute if a.name == "value"), None)
            tensor = value.t if value is not None else None
        return tensor is not None and any(d == 0 for d in tensor.dims)

    def fresh(self, base: str) -> str:
        return _fresh(self.names, base)


def _fresh(names: set, base: str) -> str:
    """``base``, or ``base_2``, ``base_3``, ...: the first not in ``names``, which it joins."""
    name, index = base, 1
    while name in names:
        index += 1
        name = f"{base}_{index}"
    names.add(name)
    return name


def _zero_bias(weight: str, stem: str, scope: _Scope) -> Tuple[str, List[onnx.NodeProto]]:
    """A zero bias of W's output channels and type: an initializer when W is one, else built from W's shape."""
    tensor = scope.initializer(weight)
    if tensor is not None and len(tensor.dims) == 4:
        name = scope.fresh(f"{stem}_zero_bias")
        dtype = helper.tensor_dtype_to_np_dtype(tensor.data_type)
        scope.added.append(numpy_helper.from_array(np.zeros(int(tensor.dims[0]), dtype=dtype), name))
        return name, []
    shape, zeros, bias = (scope.fresh(f"{stem}_zero_bias_{part}") for part in ("shape", "float", "cast"))
    return bias, [helper.make_node("Shape", [weight], [shape], start=0, end=1, name=shape),
                  helper.make_node("ConstantOfShape", [shape], [zeros], name=zeros),
                  helper.make_node("CastLike", [zeros, weight], [bias], name=bias)]


def _zero_roi_offset(rois: str, like: str, pooled: Sequence[int], stem: str,
                     scope: _Scope) -> Tuple[str, List[onnx.NodeProto]]:
    """Zeros (K, 2, pooled_height, pooled_width) of ``like``'s type, K from the boxes' rows: the offset mmcv uses
    when its call has none."""
    count, tail, shape, zeros, offset = (scope.fresh(f"{stem}_zero_offset_{part}")
                                         for part in ("rows", "tail", "shape", "float", "cast"))
    scope.added.append(numpy_helper.from_array(np.array([2, *pooled], dtype=np.int64), tail))
    return offset, [helper.make_node("Shape", [rois], [count], start=0, end=1, name=count),
                    helper.make_node("Concat", [count, tail], [shape], axis=0, name=shape),
                    helper.make_node("ConstantOfShape", [shape], [zeros], name=zeros),
                    helper.make_node("CastLike", [zeros, like], [offset], name=offset)]


# --------------------------------------------------------------------------------------------------------------
# One translation per foreign op: (node, scope) -> (new nodes, the rewritten node's report)
# --------------------------------------------------------------------------------------------------------------

Translation = Callable[[onnx.NodeProto, _Scope, Optional[int]], Tuple[List[onnx.NodeProto], AdoptedNode]]


def _inputs(node: onnx.NodeProto, count: int) -> List[str]:
    """The node's first ``count`` inputs, "" for those left out."""
    return list(node.input[:count]) + [""] * max(0, count - len(node.input))


def _require(node: onnx.NodeProto, names: Sequence[str], values: Sequence[str]) -> None:
    missing = [n for n, v in zip(names, values) if not v]
    if missing:
        raise AdoptionError(f"{_label(node)} lacks its required input(s) {missing}; the file is malformed: "
                            "re-export it")


def _deform_conv_node(node: onnx.NodeProto, x: str, w: str, offset: str, bias: str, mask: str,
                      attributes: Dict[str, object], scope: _Scope,
                      notes: Tuple[str, ...] = ()) -> Tuple[List[onnx.NodeProto], AdoptedNode]:
    """Our DeformConv2d with inputs (X, W, offset[, B[, mask]]): no hole in the list (docs/ops.md), so a mask
    without a bias gets a zero bias."""
    strides, pads, dilations = attributes["strides"], attributes["pads"], attributes["dilations"]
    if min(strides) < 1 or min(dilations) < 1 or min(pads) < 0:
        raise AdoptionError(f"{_label(node)}: needs strides and dilations >= 1 and pads >= 0, got strides={strides}, "
                            f"dilations={dilations}, pads={pads}; the file is malformed: re-export it")
    added: List[onnx.NodeProto] = []
    if mask and not bias:
        bias, added = _zero_bias(w, _node_id(node), scope)
    inputs = [x, w, offset] + ([bias] if bias else []) + ([mask] if mask else [])
    ours = helper.make_node(DEFORM_CONV, inputs, list(node.output[:1]), name=node.name, domain=DOMAIN, **attributes)
    return added + [ours], AdoptedNode(_node_id(node), _source(node), f"{DOMAIN}::{DEFORM_CONV}",
                                       attributes, notes)


def _check_standard_2d(node: onnx.NodeProto, attrs: Dict[str, object], weight: Optional[onnx.TensorProto],
                       ranks: Dict[str, int]) -> None:
    """A standard DeformConv that our 2-D op can take: 2-D attributes, a rank-4 weight and input where known
    (``ranks``: X's and W's ranks from the graph's declared types)."""
    for name, rank in ranks.items():
        if rank != 4:
            raise AdoptionError(f"{_label(node)}: its {name} has rank {rank}; {DOMAIN}'s DeformConv2d is 2-D only "
                                "(rank 4), so this node cannot be adopted")
    lengths = {"strides": 2, "dilations": 2, "pads": 4, "kernel_shape": 2}
    for name, length in lengths.items():
        if name in attrs and len(_int_values(node, attrs, name, 0)) != length:
            raise AdoptionError(f"{_label(node)}: {name} has {len(_int_values(node, attrs, name, 0))} values; "
                                f"{DOMAIN}'s DeformConv2d is 2-D only ({length} values), so this node cannot be "
                                "adopted")
    if weight is not None and len(weight.dims) != 4:
        raise AdoptionError(f"{_label(node)}: its weight has rank {len(weight.dims)}; {DOMAIN}'s DeformConv2d is "
                            "2-D only (rank 4)")
    if weight is not None and "kernel_shape" in attrs and list(attrs["kernel_shape"]) != list(weight.dims[2:]):
        raise AdoptionError(f"{_label(node)}: kernel_shape {list(attrs['kernel_shape'])} disagrees with its weight's "
                            f"kernel {list(weight.dims[2:])}; the file is malformed: re-export it")


def _adopt_standard_deform_conv(node: onnx.NodeProto, scope: _Scope, roi_sampling_ratio: Optional[int]):
    attrs = _attributes(node)
    x, w, offset, bias, mask = _inputs(node, 5)
    _require(node, ("X", "W", "offset"), (x, w, offset))
    _check_standard_2d(node, attrs, scope.initializer(w),
                       {name: rank for name, rank in (("X", scope.rank(x)), ("W", scope.rank(w))) if rank is not None})
    ours = {"strides": _int_values(node, attrs, "strides", [1, 1]),
            "pads": _int_values(node, attrs, "pads", [0, 0, 0, 0]),
            "dilations": _int_values(node, attrs, "dilations", [1, 1]),
            "group": _int(node, attrs, "group", 1), "offset_group": _int(node, attrs, "offset_group", 1)}
    return _deform_conv_node(node, x, w, offset, bias, mask, ours, scope)


def _mmcv_conv_attributes(node: onnx.NodeProto, attrs: Dict[str, object]) -> Tuple[Dict[str, object], Tuple[str, ...]]:
    pad, notes = _mmcv_padding(node, attrs)
    return {"strides": _pair(node, attrs, "stride", 1), "pads": [pad[0], pad[1], pad[0], pad[1]],
            "dilations": _pair(node, attrs, "dilation", 1),
            "group": _positive(node, "groups", _int(node, attrs, "groups", 1)),
            # deformable_groups: the older spelling (mmdetection 1.x's layers), which some plugins still read
            "offset_group": _positive(node, "deform_groups", _int(node, attrs, "deform_groups",
                                                                  attrs.get("deformable_groups", 1)))}, notes


def _adopt_mmcv_deform_conv(node: onnx.NodeProto, scope: _Scope, roi_sampling_ratio: Optional[int]):
    attrs = _attributes(node)
    if _int(node, attrs, "bias", 0):
        raise AdoptionError(f"{_label(node)} has bias=1, which mmcv's DeformConv2d never computes (it has no bias "
                            "input); the file is malformed: re-export it")
    x, offset, w = _inputs(node, 3)
    _require(node, ("input", "offset", "weight"), (x, offset, w))
    ours, notes = _mmcv_conv_attributes(node, attrs)
    return _deform_conv_node(node, x, w, offset, "", "", ours, scope, notes)


def _adopt_mmcv_modulated_deform_conv(node: onnx.NodeProto, scope: _Scope, roi_sampling_ratio: Optional[int]):
    x, offset, mask, w, bias = _inputs(node, 5)
    _require(node, ("input", "offset", "mask", "weight"), (x, offset, mask, w))
    ours, notes = _mmcv_conv_attributes(node, _attributes(node))
    return _deform_conv_node(node, x, w, offset, bias, mask, ours, scope, notes)


def _adopt_mmcv_deform_roi_pool(node: onnx.NodeProto, scope: _Scope, roi_sampling_ratio: Optional[int]):
    attrs = _attributes(node)
    x, rois, offset = _inputs(node, 3)
    _require(node, ("input", "rois"), (x, rois))
    pooled = [_positive(node, name, _int(node, attrs, name, 1)) for name in ("pooled_height", "pooled_width")]
    ratio = _number(node, attrs, "sampling_ratio", 0)
    notes: Tuple[str, ...] = ()
    if ratio != int(ratio) or ratio < 0:
        raise AdoptionError(f"{_label(node)}: sampling_ratio {ratio} is not a whole number >= 0; the file is "
                            "malformed: re-export it")
    if int(ratio) == 0:
        if roi_sampling_ratio is None:
            raise AdoptionError(
                f"{_label(node)} samples adaptively (sampling_ratio=0: ceil(RoI size / output size) points per "
                "bin side, which depends on each box), which has no static form in our op; give a fixed count "
                f"with {argument('roi_sampling_ratio=N', '--roi-sampling-ratio N')} (2, say). The outputs then differ "
                "from adaptive sampling: check the accuracy")
        notes = (f"sampling_ratio 0 (adaptive) replaced by {roi_sampling_ratio} as asked; outputs differ from "
                 "adaptive sampling",)
        ratio = roi_sampling_ratio
    added: List[onnx.NodeProto] = []
    if not offset or scope.is_empty_constant(offset):
        offset, added = _zero_roi_offset(rois, x, pooled, _node_id(node), scope)
    ours = {"pooled_height": pooled[0], "pooled_width": pooled[1],
            "spatial_scale": _number(node, attrs, "spatial_scale", 1.0), "sampling_ratio": int(ratio),
            "gamma": _number(node, attrs, "gamma", 0.1)}
    new = helper.make_node(DEFORM_ROI_POOL, [x, rois, offset], list(node.output[:1]), name=node.name, domain=DOMAIN,
                           **ours)
    return added + [new], AdoptedNode(_node_id(node), _source(node), f"{DOMAIN}::{DEFORM_ROI_POOL}",
                                      ours, notes)


_MMCV_TRANSLATIONS: Dict[str, Translation] = {
    "MMCVDeformConv2d": _adopt_mmcv_deform_conv,
    "MMCVModulatedDeformConv2d": _adopt_mmcv_modulated_deform_conv,
    "MMCVDeformRoIPool": _adopt_mmcv_deform_roi_pool,
}


def _translation(node: onnx.NodeProto) -> Optional[Translation]:
    if node.domain in _STANDARD and node.op_type == "DeformConv":
        return _adopt_standard_deform_conv
    if node.domain in FOREIGN_DOMAINS:
        return _MMCV_TRANSLATIONS.get(node.op_type)
    return None


# --------------------------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------------------------

def is_adoptable(node: onnx.NodeProto) -> bool:
    """A node :func:`adopt_model` rewrites: a standard ``DeformConv`` or mmcv's/mmdeploy's deformable ops."""
    return _translation(node) is not None


def _function_nodes(function: onnx.FunctionProto) -> Iterator[onnx.NodeProto]:
    """A local function's nodes and those of their subgraphs; none for our own ops' bodies (attach_functions), whose
    standard DeformConv nodes are how ONNX Runtime runs our ops, not nodes to rewrite."""
    if function.domain == DOMAIN:
        return
    for node in function.node:
        yield node
        for subgraph in _graphs_in(node):
            yield from all_nodes(subgraph)


def foreign_nodes(model: onnx.ModelProto, *, standard: bool = True, where: str = "everywhere"
                  ) -> List[onnx.NodeProto]:
    """The nodes :func:`adopt_model` rewrites: in the graph and its subgraphs (``where="graph"``), inside local
    functions (``where="functions"``, whose calls it inlines first: torch's ``export_modules_as_functions`` writes
    mmcv's nodes there), or both (the default). ``standard=False`` leaves out the standard ``DeformConv`` nodes (which
    ONNX Runtime runs as they are)."""
    nodes = list(all_nodes(model.graph)) if where != "functions" else []
    if where != "graph":
        nodes += [n for f in model.functions for n in _function_nodes(f)]
    return [n for n in nodes if is_adoptable(n) and (standard or n.domain in FOREIGN_DOMAINS)]


def node_summary(nodes: Sequence[onnx.NodeProto]) -> str:
    """``"3 mmdeploy::MMCVModulatedDeformConv2d, 1 ai.onnx::DeformConv"``."""
    counts: Dict[str, int] = {}
    for node in nodes:
        counts[_source(node)] = counts.get(_source(node), 0) + 1
    return ", ".join(f"{n} {op}" for op, n in counts.items())


def foreign_op_advice(model: onnx.ModelProto, path, runs_it: str) -> Optional[str]:
    """For a model holding mmcv's or mmdeploy's deformable nodes, what to tell the user who wants ``runs_it``
    ("TensorRT builds", "ONNX Runtime runs") to run it: what the nodes are and the adopt step (``adopt_model`` where
    ``path`` is None, a model held in memory); None without them."""
    from ..wording import for_reader

    nodes = foreign_nodes(model, standard=False)
    if not nodes:
        return None
    what = (f"{node_summary(nodes)} node(s): mmcv's/mmdeploy's own ops, which {runs_it} only with that project's "
            f"plugin library. Rewrite them as {DOMAIN}'s ops with ")
    if path is None:  # a model in memory: no file to name
        return f"the model holds {what}dcn_deploy.onnx.adopt.adopt_model(model), then use the model it returns"
    adopt = for_reader(f"dcn_deploy.onnx.adopt.adopt_file({str(path)!r}) (CLI: dcn-deploy adopt {path})",
                       f"dcn-deploy adopt {path}")
    return f"{path} holds {what}{adopt}, then use the file it writes ({adopted_name(Path(path))})"


def adopted_name(source: Path) -> Path:
    """Where :func:`adopt_file` writes by default: ``model.onnx`` -> ``model.adopted.onnx`` beside it."""
    return source.with_name(f"{source.stem}.adopted.onnx")


def _graphs_in(node: onnx.NodeProto) -> Iterator[onnx.GraphProto]:
    for attr in node.attribute:
        if attr.type == onnx.AttributeProto.GRAPH:
            yield attr.g
        elif attr.type == onnx.AttributeProto.GRAPHS:
            yield from attr.graphs


def _all_graphs(graph: onnx.GraphProto) -> Iterator[onnx.GraphProto]:
    yield graph
    for node in graph.node:
        for subgraph in _graphs_in(node):
            yield from _all_graphs(subgraph)


def _value_names(model: onnx.ModelProto) -> set:
    names = set()
    for graph in _all_graphs(model.graph):
        names.update(v.name for v in list(graph.input) + list(graph.output) + list(graph.value_info))
        names.update(t.name for t in graph.initializer)
        for node in graph.node:
            names.update(node.output)
            names.add(node.name)
    return names


def _rewrite_graph(graph: onnx.GraphProto, scope: _Scope, roi_sampling_ratio: Optional[int],
                   adopted: List[AdoptedNode]) -> None:
    rewritten: List[onnx.NodeProto] = []
    for node in graph.node:
        for subgraph in _graphs_in(node):
            _rewrite_graph(subgraph, _Scope(subgraph, scope.names, scope), roi_sampling_ratio, adopted)
        translate = _translation(node)
        if translate is None:
            rewritten.append(node)
            continue
        if len(node.output) != 1:
            raise AdoptionError(f"{_label(node)} has {len(node.output)} outputs; the op has one")
        new_nodes, report = translate(node, scope, roi_sampling_ratio)
        rewritten.extend(new_nodes)
        adopted.append(report)
    del graph.node[:]
    graph.node.extend(rewritten)
    graph.initializer.extend(scope.added)


def _functions_holding_foreign_nodes(model: onnx.ModelProto) -> List[Tuple[str, str]]:
    """(domain, name) of the local functions whose bodies hold a node :func:`adopt_model` rewrites, directly or
    through a call to another such function (torch's export_modules_as_functions nests a block's function around its
    layer's), in the model's order."""
    holding = {(f.domain, f.name) for f in model.functions if any(is_adoptable(n) for n in _function_nodes(f))}
    grown = True
    while grown:
        callers = {(f.domain, f.name) for f in model.functions
                   if any((n.domain, n.op_type) in holding for n in _function_nodes(f))}
        grown = not callers <= holding
        holding |= callers
    return [(f.domain, f.name) for f in model.functions if (f.domain, f.name) in holding]


def _inlined(model: onnx.ModelProto, functions: List[Tuple[str, str]]) -> onnx.ModelProto:
    """``model`` with the calls to these local functions replaced by their bodies (onnx's inliner), so that the
    foreign nodes inside become graph nodes."""
    from onnx import inliner

    try:
        inlined = inliner.inline_selected_functions(model, functions)
    except Exception as exc:  # noqa: BLE001 - the inliner raises its own C++ error types
        raise AdoptionError(f"the local function(s) {[f'{d}::{n}' for d, n in functions]} hold foreign deformable "
                            f"nodes, and onnx's inliner could not inline them: {str(exc).strip()}; export the model "
                            "without export_modules_as_functions") from exc
    left = [f"{f.domain}::{f.name}" for f in inlined.functions if any(is_adoptable(n) for n in _function_nodes(f))]
    if left:
        raise AdoptionError(f"the local function(s) {left} still hold foreign deformable nodes after inlining; export "
                            "the model without export_modules_as_functions")
    return inlined


def _keep_hardmax_meaning(model: onnx.ModelProto) -> None:
    """Before opset 13, Hardmax(axis=a) flattens its input to 2-D at ``a`` and takes the hardmax of each row; from 13
    on it works along axis ``a`` alone, and onnx's version converter keeps the node as it is (it rewrites Softmax and
    LogSoftmax, not Hardmax). So, in place, each such node whose axis is not -1 becomes the opset-11 form that means
    the same in both: Flatten at ``a``, Hardmax along the rows, Reshape back (the node's output name kept)."""
    names = _value_names(model)
    for graph in _all_graphs(model.graph):
        nodes: List[onnx.NodeProto] = []
        for node in graph.node:
            axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
            if node.op_type != "Hardmax" or node.domain not in _STANDARD or axis == -1:
                nodes.append(node)
                continue
            stem = _node_id(node)
            shape, flat, rows = (_fresh(names, f"{stem}_{part}") for part in ("shape", "flat", "rows"))
            nodes += [helper.make_node("Shape", [node.input[0]], [shape], name=shape),
                      helper.make_node("Flatten", [node.input[0]], [flat], axis=axis, name=flat),
                      helper.make_node("Hardmax", [flat], [rows], axis=1, name=node.name),
                      helper.make_node("Reshape", [rows, shape], list(node.output), name=rows)]
        del graph.node[:]
        graph.node.extend(nodes)


def _raised_opset(model: onnx.ModelProto, opset: int) -> onnx.ModelProto:
    from onnx import version_converter

    if default_opset(model) < 13:
        _keep_hardmax_meaning(model)
    try:
        return version_converter.convert_version(model, opset)
    except Exception as exc:  # noqa: BLE001 - the converter raises its own C++ error types
        raise AdoptionError(
            f"the model imports ONNX opset {default_opset(model)}, and our ops' function bodies need >= {opset}, but "
            f"onnx's version converter could not raise it: {str(exc).strip()}. Re-export the model at opset "
            f">= {opset} (torch.onnx.export(..., opset_version={opset}); mmdeploy: onnx_config's opset_version)"
        ) from exc


def adopt_model(model: onnx.ModelProto, *, roi_sampling_ratio: Optional[int] = None
                ) -> Tuple[onnx.ModelProto, Adoption]:
    """A copy of ``model`` with every foreign deformable node (this module's table) rewritten as a ``dcn_deploy``
    node, our function bodies attached (:func:`dcn_deploy.onnx.opset.attach_functions`), the default opset raised to
    19 where lower, and the imports of foreign domains no node uses any more dropped. ``model`` is not changed.

    Other mmcv/mmdeploy nodes (``mmdeploy::TRTBatchedNMS``, say) are left as they are and listed in
    ``adoption.left``: they still need their project's plugin library.

    Args:
        model: the ONNX model.
        roi_sampling_ratio: the fixed samples per bin side for an ``MMCVDeformRoIPool`` with mmcv's adaptive
            ``sampling_ratio=0``, which our op cannot express (None: such a node is refused, naming it).

    Returns ``(adopted, adoption)``: the new model and an :class:`Adoption` listing the rewritten nodes. Raises
    :class:`AdoptionError` naming the node when one cannot be rewritten (a 3-D DeformConv, a malformed attribute,
    adaptive RoI sampling without ``roi_sampling_ratio``), or when the local functions holding foreign nodes (which
    torch's ``export_modules_as_functions`` writes; their calls are inlined first, listed in ``adoption.inlined``)
    cannot be inlined, or when the opset cannot be raised.
    """
    if roi_sampling_ratio is not None and (isinstance(roi_sampling_ratio, bool) or not isinstance(roi_sampling_ratio, int)
                                           or roi_sampling_ratio < 1):
        raise ValueError(f"roi_sampling_ratio must be an int >= 1, got {roi_sampling_ratio!r}")
    holding = _functions_holding_foreign_nodes(model)
    adaptive = [n for n in foreign_nodes(model) if n.op_type == "MMCVDeformRoIPool"
                and _number(n, _attributes(n), "sampling_ratio", 0) == 0]
    if roi_sampling_ratio is not None and not adaptive:
        raise AdoptionError(f"{argument('roi_sampling_ratio', '--roi-sampling-ratio')} is for mmcv DeformRoIPool "
                            "nodes with adaptive sampling (sampling_ratio=0), and this model has none: drop it")
    adoption = Adoption(opset_before=default_opset(model))
    work = onnx.ModelProto()
    work.CopyFrom(model)
    if holding:  # torch's export_modules_as_functions puts a layer's node inside a function of its module
        work = _inlined(work, holding)
        adoption.inlined = [f"{domain}::{name}" for domain, name in holding]
    if adoption.opset_before < MIN_OPSET and foreign_nodes(work):
        work = _raised_opset(work, MIN_OPSET)
    _rewrite_graph(work.graph, _Scope(work.graph, _value_names(work)), roi_sampling_ratio, adoption.nodes)
    adoption.opset_after = default_opset(work)
    adoption.left = [f"{_node_id(n)} ({_source(n)})" for n in all_nodes(work.graph)
                     if n.domain in FOREIGN_DOMAINS]
    used = {n.domain for n in all_nodes(work.graph)} | {n.domain for f in work.functions for n in f.node}
    dropped = set(FOREIGN_DOMAINS) | {domain for domain, _ in holding}  # no longer needed where no node uses them
    kept = [imp for imp in work.opset_import if imp.domain not in dropped or imp.domain in used]
    del work.opset_import[:]
    work.opset_import.extend(kept)
    attach_functions(work)
    return work, adoption


@dataclass(frozen=True)
class AdoptedFile:
    """What :func:`adopt_file` wrote: the new file (and its weights file, when external) and the :class:`Adoption`."""

    path: Path
    weights_path: Optional[Path]
    adoption: Adoption


def adopt_file(source, output=None, *, roi_sampling_ratio: Optional[int] = None) -> AdoptedFile:
    """Read the ONNX file ``source``, rewrite its foreign deformable nodes (:func:`adopt_model`) and write the result
    to ``output`` (default: ``<source stem>.adopted.onnx`` beside it), atomically, checked by ``onnx.checker`` (full)
    and strict shape inference before it takes the name.

    Raises :class:`AdoptionError` when the file has no node to rewrite (naming what it has instead) or a node
    cannot be rewritten, ValueError/FileNotFoundError for a path that is not a readable ONNX file or an output that
    cannot be written (or is the source itself).
    """
    from ..backends.factory import read_onnx_model
    from ..io_utils import check_not_an_input, check_output_path
    from .export_file import external_data_name, needs_external_data, write_checked
    from .export_report import ExportError

    source = Path(source)
    output = Path(output) if output is not None else adopted_name(source)
    what = argument("output", "--output")
    check_output_path(output, what)
    check_not_an_input(output, what, [("ONNX model", source)])
    model = read_onnx_model(source)
    if not foreign_nodes(model):
        ours = sum(1 for n in all_nodes(model.graph) if n.domain == DOMAIN)
        raise AdoptionError(
            f"{source} has no deformable node of another exporter (ONNX DeformConv; mmcv's or mmdeploy's "
            f"{', '.join(sorted(_MMCV_TRANSLATIONS))}), so there is nothing to adopt"
            + (f"; its {ours} {DOMAIN} node(s) are ours already: build or run it as it is" if ours else ""))
    adopted, adoption = adopt_model(model, roi_sampling_ratio=roi_sampling_ratio)
    external = needs_external_data(adopted)
    try:
        write_checked(adopted, output, external)
    except ExportError as exc:
        cause = str(exc.__cause__ or exc).strip().rstrip(".")
        try:
            onnx.checker.check_model(model)
        except onnx.checker.ValidationError as invalid:
            raise AdoptionError(f"{source} itself fails onnx's checker ({str(invalid).strip().rstrip('.')}), and so "
                                f"does the adopted model ({cause}); fix or re-export the source") from exc
        if cause.startswith(f"[{DOMAIN}::"):  # our schema's check of a node's inputs against its attributes
            raise AdoptionError(f"{source} holds a deformable node whose inputs do not fit its attributes ({cause}); "
                                "onnx's checker does not check this for the source's op, and ONNX Runtime refuses "
                                "the node when it runs: fix or re-export the source") from exc
        raise AdoptionError(f"the adopted model fails onnx's checker or shape inference ({cause}), though {source} "
                            "passes the checker: this is a bug in dcn_deploy's adoption; please report it with the "
                            "file") from exc
    return AdoptedFile(output, output.parent / external_data_name(output) if external else None, adoption)
