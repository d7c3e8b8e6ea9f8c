"""One foreign deformable node -> the ``dcn_deploy`` node that computes the same (dispatched by
:mod:`dcn_deploy.onnx.adopt_dispatch`), for :mod:`dcn_deploy.onnx.adopt`, whose docstring has the table of ops and
how their inputs and attributes map.

Each translation reads the node's attributes (refusing malformed ones, naming the node), writes our node under the
same name and output, and adds what our op needs that the source leaves out: a zero bias before a mask, a zero RoI
offset. :class:`GraphScope` is the graph being rewritten: the initializers visible in it and fresh value names.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ..wording import argument
from .opset import DEFORM_CONV, DOMAIN, VERSION, all_nodes, subgraphs
from .precision import KEEP_FP32_MARK
from .roi_opset import DEFORM_ROI_POOL

__all__ = ["FOREIGN_DOMAINS", "STANDARD_DOMAINS", "AdoptionError", "AdoptedNode", "GraphBuilder", "GraphScope",
           "Translation",
           "fresh_name", "node_id", "node_label", "source_op", "int_attribute", "number_attribute", "attributes_of",
           "exact_inputs",
           "adopt_standard_deform_conv", "adopt_mmcv_deform_conv", "adopt_mmcv_modulated_deform_conv",
           "adopt_mmcv_deform_roi_pool"]

# The custom-op domains of mmcv's own ONNX symbolics and of mmdeploy's rewrites of them.
FOREIGN_DOMAINS = ("mmcv", "mmdeploy")
STANDARD_DOMAINS = ("", "ai.onnx")


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


def source_op(node: onnx.NodeProto) -> str:
    """``"mmdeploy::MMCVModulatedDeformConv2d"``; ``"ai.onnx::DeformConv"`` for the default domain."""
    return f"{node.domain or 'ai.onnx'}::{node.op_type}"


def node_id(node: onnx.NodeProto) -> str:
    """How the report names a node: its name, else its first output's."""
    return node.name or (node.output[0] if node.output else "(unnamed)")


def node_label(node: onnx.NodeProto) -> str:
    if node.name or not node.output:
        return f"node {node_id(node)!r} ({source_op(node)})"
    return f"the {source_op(node)} node writing {node.output[0]!r}"


# --------------------------------------------------------------------------------------------------------------
# Attributes
# --------------------------------------------------------------------------------------------------------------

def attributes_of(node: onnx.NodeProto) -> Dict[str, object]:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _int_values(node: onnx.NodeProto, attrs: Dict[str, object], name: str, default) -> List[int]:
    """An attribute written as an int or ints (INT or INTS), as a list; refused when of another type."""
    value = attrs.get(name, default)
    if isinstance(value, int):
        return [value]
    if isinstance(value, list) and all(isinstance(v, int) for v in value):
        return value
    raise AdoptionError(f"{node_label(node)}: {name} must be an int or ints, got {value!r}; the file is malformed: "
                        "re-export it")


def int_attribute(node: onnx.NodeProto, attrs: Dict[str, object], name: str, default: int) -> int:
    """An int attribute (INT, or a FLOAT holding a whole number); refused otherwise."""
    value = attrs.get(name, default)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int):
        raise AdoptionError(f"{node_label(node)}: {name} must be a whole number, got {value!r}; the file is malformed: "
                            "re-export it")
    return value


def number_attribute(node: onnx.NodeProto, attrs: Dict[str, object], name: str, default: float) -> float:
    """A number attribute, as the shortest decimal that is the same float32 (a FLOAT 0.05 reads 0.05, not
    0.05000000074505806, in reports and messages; written back as a FLOAT it is the same value)."""
    value = attrs.get(name, default)
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise AdoptionError(f"{node_label(node)}: {name} must be a number, got {value!r}; the file is malformed: "
                            "re-export it")
    return float(str(np.float32(value)))


def _pair(node: onnx.NodeProto, attrs: Dict[str, object], name: str, default: int) -> List[int]:
    """An mmcv pair attribute: an int (both axes) or two ints, (h, w)."""
    values = _int_values(node, attrs, name, default)
    if len(values) == 1:
        values *= 2
    if len(values) != 2:
        raise AdoptionError(f"{node_label(node)}: {name} must hold 1 or 2 values (h, w), got {values}")
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
    raise AdoptionError(f"{node_label(node)}: padding {values} is neither (pad_h, pad_w) nor mmdeploy's "
                        "[pad_h, pad_h, pad_w, pad_w]; fix the attribute to one of those forms")


def _positive(node: onnx.NodeProto, name: str, value: int) -> int:
    if value < 1:
        raise AdoptionError(f"{node_label(node)}: {name} must be >= 1, got {value}")
    return value


# --------------------------------------------------------------------------------------------------------------
# The graph being rewritten: names, initializers, and nodes added beside the rewritten ones
# --------------------------------------------------------------------------------------------------------------

class GraphScope:
    """One graph's rewrite: the initializers visible in it (its own and its outer graphs'), fresh value names, and
    the initializers to add to it."""

    def __init__(self, graph: onnx.GraphProto, names: set, outer: Optional["GraphScope"] = None,
                 model: Optional[onnx.ModelProto] = None):
        """``model``: the model whose main graph this is (None for a subgraph's scope, which asks ``outer``): its
        default opset, and the shapes onnx's inference finds in it (:meth:`dims`)."""
        self.graph = graph
        self.names = names  # every value name of the model, shared by the scopes
        self.outer = outer
        self.model = model
        self._inferred: Optional[Dict[str, Tuple[Optional[int], ...]]] = None
        self.initializers = {t.name: t for t in graph.initializer}
        self.constants = {n.output[0]: n for n in graph.node if n.op_type == "Constant" and n.domain in STANDARD_DOMAINS
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

    def dims(self, name: str) -> Optional[Tuple[Optional[int], ...]]:
        """The shape of value ``name``, each axis a size or None where unknown: as the file declares it (an
        initializer, a Constant, an input, a value_info or an output of this graph or an outer one), else as onnx's
        shape inference (with data propagation) finds it in the model; None where the rank is unknown too."""
        declared = self._declared_dims(name)
        if declared is not None and all(d is not None for d in declared):
            return declared
        return self._inferred_dims().get(name, declared)

    def stored_tensor(self, name: str) -> Optional[onnx.TensorProto]:
        """``name``'s tensor where the file stores it: an initializer (of this graph or an outer one) or a Constant
        of this graph."""
        tensor = self.initializer(name)
        if tensor is None and name in self.constants:
            value = next((a for a in self.constants[name].attribute if a.name == "value"), None)
            tensor = value.t if value is not None else None
        return tensor

    def _declared_dims(self, name: str) -> Optional[Tuple[Optional[int], ...]]:
        tensor = self.stored_tensor(name)
        if tensor is not None:
            return tuple(int(d) for d in tensor.dims)
        for value in list(self.graph.input) + list(self.graph.value_info) + list(self.graph.output):
            if value.name == name and value.type.tensor_type.HasField("shape"):
                return _shape_dims(value)
        return self.outer._declared_dims(name) if self.outer is not None else None

    def _inferred_dims(self) -> Dict[str, Tuple[Optional[int], ...]]:
        if self.outer is not None:
            return self.outer._inferred_dims()
        if self._inferred is None:
            self._inferred = _inferred_shapes(self.model) if self.model is not None else {}
        return self._inferred

    def opset(self) -> Optional[int]:
        """The model's default opset; None where the scope has no model."""
        if self.outer is not None:
            return self.outer.opset()
        if self.model is None:
            return None
        return next((imp.version for imp in self.model.opset_import if imp.domain in STANDARD_DOMAINS), None)

    def elem_type(self, name: str) -> Optional[int]:
        """The element type the graph declares for value ``name`` (an output or a value_info of this graph or an
        outer one); None where unknown."""
        for value in list(self.graph.output) + list(self.graph.value_info):
            if value.name == name and value.type.tensor_type.elem_type:
                return value.type.tensor_type.elem_type
        return self.outer.elem_type(name) if self.outer is not None else None

    def is_empty_constant(self, name: str) -> bool:
        """``name`` is a tensor of no elements stored in the file (an initializer or a Constant)."""
        tensor = self.stored_tensor(name)
        return tensor is not None and any(d == 0 for d in tensor.dims)

    def fresh(self, base: str) -> str:
        return fresh_name(self.names, base)


def _shape_dims(value: onnx.ValueInfoProto) -> Tuple[Optional[int], ...]:
    return tuple(d.dim_value if d.HasField("dim_value") else None for d in value.type.tensor_type.shape.dim)


def _inferred_shapes(model: onnx.ModelProto) -> Dict[str, Tuple[Optional[int], ...]]:
    """Value name -> shape, as onnx's shape inference with data propagation finds them in ``model`` (in every graph;
    empty where inference fails: the shapes are then unknown, not wrong). Our ops written by an earlier round of the
    rewrite are inferred by their schemas, whose domain the model imports only once the rewrite ends."""
    if (not any(imp.domain == DOMAIN for imp in model.opset_import)
            and any(n.domain == DOMAIN for n in all_nodes(model.graph))):
        imported = onnx.ModelProto()
        imported.CopyFrom(model)
        imported.opset_import.append(helper.make_opsetid(DOMAIN, VERSION))
        model = imported
    try:
        inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    except Exception:  # noqa: BLE001 - inference raises its own C++ error types; unknown shapes are handled
        return {}
    shapes: Dict[str, Tuple[Optional[int], ...]] = {}
    graphs = [inferred.graph]
    while graphs:
        graph = graphs.pop()
        for value in list(graph.input) + list(graph.value_info) + list(graph.output):
            if value.type.tensor_type.HasField("shape"):
                shapes[value.name] = _shape_dims(value)
        graphs += [subgraph for node in graph.node for subgraph in subgraphs(node)]
    return shapes


class GraphBuilder:
    """Builds a replacement made of several standard nodes: each op's output gets a fresh name under ``stem``, each
    constant is an initializer of the scope's graph."""

    def __init__(self, scope: GraphScope, stem: str, keep_fp32: Optional[str] = None):
        """``keep_fp32``: why every node built here stays float32 when the model is converted to a half type
        (:data:`dcn_deploy.onnx.precision.KEEP_FP32_MARK`); None: they convert as any node."""
        self.scope, self.stem, self.keep_fp32 = scope, stem, keep_fp32
        self.nodes: List[onnx.NodeProto] = []

    def op(self, op_type: str, inputs: List[str], outputs: Optional[List[str]] = None, count: int = 1,
           **attributes) -> str:
        """Add one node; returns its (first) output name. ``outputs`` given: those names (the source's)."""
        if outputs is None:
            outputs = [self.scope.fresh(f"{self.stem}_{op_type.lower()}") for _ in range(count)]
        doc = f"{KEEP_FP32_MARK}: {self.keep_fp32}" if self.keep_fp32 else None
        self.nodes.append(helper.make_node(op_type, inputs, outputs, name=self.scope.fresh(f"{self.stem}_{op_type}"),
                                           doc_string=doc, **attributes))
        return outputs[0]

    def op2(self, op_type: str, inputs: List[str], **attributes) -> Tuple[str, str]:
        first = self.op(op_type, inputs, count=2, **attributes)
        return first, self.nodes[-1].output[1]

    def float_like(self, value: float, like: str, name: str) -> str:
        """The float ``value`` (written as float32) in the element type of value ``like``."""
        return self.op("CastLike", [self.const(value, np.float32, name), like])

    def const(self, values, dtype=np.int64, name: str = "const") -> str:
        tensor_name = self.scope.fresh(f"{self.stem}_{name}")
        self.scope.added.append(numpy_helper.from_array(np.asarray(values, dtype=dtype), tensor_name))
        return tensor_name


def fresh_name(names: set, base: str) -> str:
    """``base``, or ``base_2``, ``base_3``, ...: the first not in ``names``, which it joins."""
    name, index = base, 1
    while name in names:
        index += 1
        name = f"{base}_{index}"
    names.add(name)
    return name


def _zero_bias(weight: str, stem: str, scope: GraphScope) -> Tuple[str, List[onnx.NodeProto]]:
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
                     scope: GraphScope) -> Tuple[str, List[onnx.NodeProto]]:
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

Translation = Callable[[onnx.NodeProto, GraphScope, Optional[int]], Tuple[List[onnx.NodeProto], AdoptedNode]]


def exact_inputs(node: onnx.NodeProto, names: Sequence[str]) -> List[str]:
    """The node's inputs, refused (naming them and ``names``, the op's) unless there is exactly one per name."""
    if len(node.input) != len(names) or not all(node.input):
        raise AdoptionError(f"{node_label(node)} has inputs {list(node.input)}; the op takes ({', '.join(names)}); "
                            "the file is malformed: re-export it")
    return list(node.input)


def _inputs(node: onnx.NodeProto, count: int) -> List[str]:
    """The node's first ``count`` inputs, "" for those left out."""
    return list(node.input[:count]) + [""] * max(0, count - len(node.input))


def _require(node: onnx.NodeProto, names: Sequence[str], values: Sequence[str]) -> None:
    missing = [n for n, v in zip(names, values) if not v]
    if missing:
        raise AdoptionError(f"{node_label(node)} lacks its required input(s) {missing}; the file is malformed: "
                            "re-export it")


def _deform_conv_node(node: onnx.NodeProto, x: str, w: str, offset: str, bias: str, mask: str,
                      attributes: Dict[str, object], scope: GraphScope,
                      notes: Tuple[str, ...] = ()) -> Tuple[List[onnx.NodeProto], AdoptedNode]:
    """Our DeformConv2d with inputs (X, W, offset[, B[, mask]]): no hole in the list (docs/ops.md), so a mask
    without a bias gets a zero bias."""
    strides, pads, dilations = attributes["strides"], attributes["pads"], attributes["dilations"]
    if min(strides) < 1 or min(dilations) < 1 or min(pads) < 0:
        raise AdoptionError(f"{node_label(node)}: needs strides and dilations >= 1 and pads >= 0, got "
                            f"strides={strides}, dilations={dilations}, pads={pads}; the file is malformed: "
                            "re-export it")
    added: List[onnx.NodeProto] = []
    if mask and not bias:
        bias, added = _zero_bias(w, node_id(node), scope)
    inputs = [x, w, offset] + ([bias] if bias else []) + ([mask] if mask else [])
    ours = helper.make_node(DEFORM_CONV, inputs, list(node.output[:1]), name=node.name, domain=DOMAIN, **attributes)
    return added + [ours], AdoptedNode(node_id(node), source_op(node), f"{DOMAIN}::{DEFORM_CONV}",
                                       attributes, notes)


def _check_standard_2d(node: onnx.NodeProto, attrs: Dict[str, object], weight: Optional[onnx.TensorProto],
                       ranks: Dict[str, int]) -> None:
    """A standard DeformConv that our 2-D op can take: 2-D attributes, a rank-4 weight and input where known
    (``ranks``: X's and W's ranks from the graph's declared types)."""
    for name, rank in ranks.items():
        if rank != 4:
            raise AdoptionError(f"{node_label(node)}: its {name} has rank {rank}; {DOMAIN}'s DeformConv2d is 2-D only "
                                "(rank 4), so this node cannot be adopted")
    lengths = {"strides": 2, "dilations": 2, "pads": 4, "kernel_shape": 2}
    for name, length in lengths.items():
        given = len(_int_values(node, attrs, name, 0)) if name in attrs else length
        if given != length:
            raise AdoptionError(f"{node_label(node)}: {name} has {given} values; {DOMAIN}'s DeformConv2d is 2-D only "
                                f"({length} values), so this node cannot be adopted")
    if weight is not None and len(weight.dims) != 4:
        raise AdoptionError(f"{node_label(node)}: its weight has rank {len(weight.dims)}; {DOMAIN}'s DeformConv2d is "
                            "2-D only (rank 4)")
    if weight is not None and "kernel_shape" in attrs and list(attrs["kernel_shape"]) != list(weight.dims[2:]):
        raise AdoptionError(f"{node_label(node)}: kernel_shape {list(attrs['kernel_shape'])} disagrees with its "
                            f"weight's kernel {list(weight.dims[2:])}; the file is malformed: re-export it")


def adopt_standard_deform_conv(node: onnx.NodeProto, scope: GraphScope, roi_sampling_ratio: Optional[int]):
    attrs = attributes_of(node)
    x, w, offset, bias, mask = _inputs(node, 5)
    _require(node, ("X", "W", "offset"), (x, w, offset))
    _check_standard_2d(node, attrs, scope.initializer(w),
                       {name: rank for name, rank in (("X", scope.rank(x)), ("W", scope.rank(w))) if rank is not None})
    ours = {"strides": _int_values(node, attrs, "strides", [1, 1]),
            "pads": _int_values(node, attrs, "pads", [0, 0, 0, 0]),
            "dilations": _int_values(node, attrs, "dilations", [1, 1]),
            "group": int_attribute(node, attrs, "group", 1),
            "offset_group": int_attribute(node, attrs, "offset_group", 1)}
    return _deform_conv_node(node, x, w, offset, bias, mask, ours, scope)


def _mmcv_conv_attributes(node: onnx.NodeProto, attrs: Dict[str, object]) -> Tuple[Dict[str, object], Tuple[str, ...]]:
    pad, notes = _mmcv_padding(node, attrs)
    return {"strides": _pair(node, attrs, "stride", 1), "pads": [pad[0], pad[1], pad[0], pad[1]],
            "dilations": _pair(node, attrs, "dilation", 1),
            "group": _positive(node, "groups", int_attribute(node, attrs, "groups", 1)),
            # deformable_groups: the older spelling (mmdetection 1.x's layers), which some plugins still read
            "offset_group": _positive(node, "deform_groups", int_attribute(node, attrs, "deform_groups",
                                                                  attrs.get("deformable_groups", 1)))}, notes


def adopt_mmcv_deform_conv(node: onnx.NodeProto, scope: GraphScope, roi_sampling_ratio: Optional[int]):
    attrs = attributes_of(node)
    if int_attribute(node, attrs, "bias", 0):
        raise AdoptionError(f"{node_label(node)} has bias=1, which mmcv's DeformConv2d never computes (it has no bias "
                            "input); the file is malformed: re-export it")
    x, offset, w = _inputs(node, 3)
    _require(node, ("input", "offset", "weight"), (x, offset, w))
    ours, notes = _mmcv_conv_attributes(node, attrs)
    return _deform_conv_node(node, x, w, offset, "", "", ours, scope, notes)


def adopt_mmcv_modulated_deform_conv(node: onnx.NodeProto, scope: GraphScope, roi_sampling_ratio: Optional[int]):
    x, offset, mask, w, bias = _inputs(node, 5)
    _require(node, ("input", "offset", "mask", "weight"), (x, offset, mask, w))
    ours, notes = _mmcv_conv_attributes(node, attributes_of(node))
    return _deform_conv_node(node, x, w, offset, bias, mask, ours, scope, notes)


def adopt_mmcv_deform_roi_pool(node: onnx.NodeProto, scope: GraphScope, roi_sampling_ratio: Optional[int]):
    attrs = attributes_of(node)
    x, rois, offset = _inputs(node, 3)
    _require(node, ("input", "rois"), (x, rois))
    pooled = [_positive(node, name, int_attribute(node, attrs, name, 1)) for name in ("pooled_height", "pooled_width")]
    ratio = number_attribute(node, attrs, "sampling_ratio", 0)
    notes: Tuple[str, ...] = ()
    if ratio != int(ratio) or ratio < 0:
        raise AdoptionError(f"{node_label(node)}: sampling_ratio {ratio} is not a whole number >= 0; the file is "
                            "malformed: re-export it")
    if int(ratio) == 0:
        if roi_sampling_ratio is None:
            raise AdoptionError(
                f"{node_label(node)} samples adaptively (sampling_ratio=0: ceil(RoI size / output size) points per "
                "bin side, which depends on each box), which has no static form in our op; give a fixed count "
                f"with {argument('roi_sampling_ratio=N', '--roi-sampling-ratio N')} (2, say). The outputs then differ "
                "from adaptive sampling: check the accuracy")
        notes = (f"sampling_ratio 0 (adaptive) replaced by {roi_sampling_ratio} as asked; outputs differ from "
                 "adaptive sampling",)
        ratio = roi_sampling_ratio
    added: List[onnx.NodeProto] = []
    if not offset or scope.is_empty_constant(offset):
        offset, added = _zero_roi_offset(rois, x, pooled, node_id(node), scope)
    ours = {"pooled_height": pooled[0], "pooled_width": pooled[1],
            "spatial_scale": number_attribute(node, attrs, "spatial_scale", 1.0), "sampling_ratio": int(ratio),
            "gamma": number_attribute(node, attrs, "gamma", 0.1)}
    new = helper.make_node(DEFORM_ROI_POOL, [x, rois, offset], list(node.output[:1]), name=node.name, domain=DOMAIN,
                           **ours)
    return added + [new], AdoptedNode(node_id(node), source_op(node), f"{DOMAIN}::{DEFORM_ROI_POOL}",
                                      ours, notes)
