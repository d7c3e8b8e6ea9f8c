"""Convert a float32 ONNX graph to float16 or bfloat16, keeping numerically sensitive nodes in float32.

TensorRT 11 builds every network strongly typed (it removed the FP16/BF16 builder flags), so a half-precision
engine needs half-precision tensors in the ONNX graph itself. This module is that conversion, done on the
ONNX graph alone, so it is checked on the CPU by running the result in ONNX Runtime against the float32 model.

The rule (what stays float32)
-----------------------------
A node stays float32 when

1. its op is in :data:`KEEP_FP32_OPS`: reductions and global pooling (sums of many terms lose digits and
   overflow in half), Softmax/LogSoftmax, normalisations (mean/variance over many values), Exp, Log, Pow,
   Sqrt, Reciprocal (range: exp(12) already overflows float16), and ops that carry pixel coordinates
   (GridSample, RoiAlign, NonMaxSuppression, Range: float16 has a 0.5 px step from 512 px, 1 px from 1024);
   Our own RoI pooling ops (``dcn_deploy`` DeformRoIPool, DeformPSRoIPool, :data:`KEEP_FP32_DOMAIN_OPS`) stay
   float32 for the same reason: their box corners share the feature map's type, and float16 boxes move in
   1 px steps from 1024 px, bfloat16 boxes in 4 px steps from 512 px (their TensorRT plugin then runs its
   float32 kernel on a float32 copy of the pooled feature map);
2. the caller names it (``keep_fp32_nodes``, the CLI's ``--keep-fp32 NODE``), or its ``doc_string`` starts with
   :data:`KEEP_FP32_MARK`: the standard ops that ``dcn-deploy adopt`` writes for mmdeploy's NMS, RoIAlign and
   anchor plugins (box arithmetic in pixels, RoI areas past float16's 65504, score ranking), which are float32
   plugins;
3. its ONNX schema at the model's opset does not allow the half type (e.g. an op without bfloat16 before
   opset 22) -- such nodes are listed in the report.

Every other node that computes on float32 tensors runs in the half type, including ``dcn_deploy``
DeformConv2d nodes: our TensorRT plugin reads half inputs and accumulates in float32, and the sampling
position (base + offset) is formed in float32 inside the kernel, so offsets in half lose nothing that matters.

Mechanics
---------
- Types are propagated through each node's schema: an input is converted only if its formal type parameter
  allows the half type (``Resize``'s ``scales`` stay float32), and an output becomes half only if it shares
  that type parameter with a converted input. Ops without a schema (custom domains) convert every float input
  and output. ``Cast(to=float)`` nodes become ``Cast(to=half)``.
- Float32 initializers and ``Constant`` nodes feeding only half consumers are converted in place (float16
  values beyond +-65504 are clipped and counted); shared ones get a half copy.
- A ``Cast`` is inserted wherever a tensor's type and its consumer's differ (one per tensor and type).
- Model inputs and outputs: by default they stay float32 (``io_dtype="float32"``): the same float32 feed works
  for every backend and for ``verify``, and the Casts at the boundary cost one pass over the input and output
  (TensorRT fuses them into the first and last kernels when it can). ``io_dtype="half"`` makes them half, for
  pipelines that already hold half data, except RoI box inputs, which stay float32 (box corners in pixels: float16
  rounds them to 1 px past 1024, bfloat16 to 4 px past 512).
- ``dcn_deploy`` function bodies (``model.functions``) are type-polymorphic (attributes by reference, the
  zero bias built with CastLike) and need no change; a bfloat16 body needs the model's default opset >= 22,
  where standard DeformConv gained bfloat16.
- Graphs with control flow (If/Loop/Scan) are refused: their subgraphs read outer tensors by name and the
  conversion does not rewrite them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Set, Tuple

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..wording import argument
# Importing the op set also registers the dcn_deploy schemas with onnx (it needs onnx only, no torch): their
# type parameters then guide the conversion of our nodes.
from .opset import BFLOAT16_MIN_OPSET

__all__ = ["KEEP_FP32_DOMAIN_OPS", "KEEP_FP32_MARK", "KEEP_FP32_OPS", "PrecisionError", "check_convertible",
           "check_keep_fp32_nodes", "check_precision_options", "keep_fp32_names", "PrecisionReport",
           "convert_precision", "float_to_bfloat16_bits"]

# op_type (default domain) -> why it stays float32. See the module docstring for the rule.
KEEP_FP32_OPS: Dict[str, str] = {
    **{op: "reduction" for op in ("ReduceMean", "ReduceSum", "ReduceSumSquare", "ReduceL1", "ReduceL2",
                                  "ReduceLogSum", "ReduceLogSumExp", "ReduceProd", "CumSum", "GlobalAveragePool",
                                  "GlobalLpPool", "LpPool", "Einsum")},
    **{op: "softmax" for op in ("Softmax", "LogSoftmax")},
    **{op: "normalisation" for op in ("BatchNormalization", "InstanceNormalization", "LayerNormalization",
                                      "GroupNormalization", "MeanVarianceNormalization", "LpNormalization",
                                      "RMSNormalization", "LRN")},
    **{op: "exp/log/power range" for op in ("Exp", "Log", "Pow", "Sqrt", "Reciprocal", "Softplus")},
    **{op: "pixel coordinates" for op in ("GridSample", "AffineGrid", "RoiAlign", "MaxRoiPool",
                                          "NonMaxSuppression", "Range")},
}

# (domain, op_type) of other domains -> why it stays float32: the RoI pooling ops take their boxes in the type of
# the feature map, and a box corner in half precision is off by up to 0.5 px (float16, from 1024 px) or 2 px
# (bfloat16, from 512 px).
KEEP_FP32_DOMAIN_OPS: Dict[Tuple[str, str], str] = {
    ("dcn_deploy", op): "box coordinates" for op in ("DeformRoIPool", "DeformPSRoIPool")
}

# A node whose doc_string starts so stays float32, for the reason written after it (``MARK: reason``).
KEEP_FP32_MARK = "dcn_deploy: keep float32"

_HALF = {"fp16": TensorProto.FLOAT16, "bf16": TensorProto.BFLOAT16}
_TYPE_STR = {TensorProto.FLOAT16: "tensor(float16)", TensorProto.BFLOAT16: "tensor(bfloat16)"}
_FLOAT = TensorProto.FLOAT
_FP16_MAX = 65504.0
# Inputs whose type does not decide the output's (read as they are, never cast).
_ANY_TYPE_INPUTS = {"Cast": (0,), "Shape": (0,), "Size": (0,), "CastLike": (0,)}
# Data movement: they compute nothing, so they stay float32 when their input already is (no Cast round trip).
_FOLLOW_OPS = {"Flatten", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Identity", "Slice", "Gather", "Split",
               "Expand", "Tile", "Concat", "MaxPool", "DepthToSpace", "SpaceToDepth", "Relu"}
_CONTROL_FLOW = {"If", "Loop", "Scan", "SequenceMap"}
# "tensor(float)" -> TensorProto.FLOAT, "tensor(int64)" -> TensorProto.INT64, ...
_FIXED_TYPES = {f"tensor({name.lower()})": value for name, value in TensorProto.DataType.items() if value}


class PrecisionError(ValueError):
    """The model cannot be converted as asked; the message says why and what to change."""


@dataclass
class PrecisionReport:
    """What :func:`convert_precision` did."""

    precision: str
    io_dtype: str
    half_nodes: int = 0
    kept_fp32: List[Tuple[str, str, str]] = field(default_factory=list)  # (node, op_type, reason)
    followed_fp32: int = 0  # data movement (Reshape, Relu, ...) left float32 after float32 inputs: no Cast round trip
    casts_inserted: int = 0
    initializers_converted: int = 0
    values_clipped: int = 0

    def summary(self) -> str:
        lines = [f"precision {self.precision}: {self.half_nodes} node(s) in {self.precision}, "
                 f"{len(self.kept_fp32)} kept in float32"
                 + (f" (and {self.followed_fp32} data-movement node(s) left float32 on float32 values)"
                    if self.followed_fp32 else "")
                 + f", {self.casts_inserted} Cast(s) inserted, "
                 f"{self.initializers_converted} initializer(s) converted, model I/O {self.io_dtype}"]
        if self.values_clipped:
            lines.append(f"  warning: {self.values_clipped} constant value(s) beyond +-65504 clipped to float16's range")
        for name, op, reason in self.kept_fp32:
            lines.append(f"  float32: {name} ({op}): {reason}")
        return "\n".join(lines)

    def to_json(self) -> dict:
        return {"precision": self.precision, "io_dtype": self.io_dtype, "half_nodes": self.half_nodes,
                "kept_fp32": [list(k) for k in self.kept_fp32], "followed_fp32": self.followed_fp32,
                "casts_inserted": self.casts_inserted,
                "initializers_converted": self.initializers_converted, "values_clipped": self.values_clipped}


# value conversion ---------------------------------------------------------------------------------------------------
def float_to_bfloat16_bits(values: np.ndarray) -> np.ndarray:
    """float32 array -> uint16 bfloat16 bit patterns, rounded to nearest even (NaN stays NaN)."""
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32).astype(np.uint64)
    rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)
    return np.where(np.isnan(values), np.uint16(0x7FC0), rounded).astype(np.uint16)


def _to_half_tensor(tensor: TensorProto, half: int, name: Optional[str] = None) -> Tuple[TensorProto, int]:
    """A half copy of a float32 TensorProto (external data must already be loaded); returns (tensor, clipped)."""
    values = numpy_helper.to_array(tensor).astype(np.float32)
    clipped = 0
    if half == TensorProto.FLOAT16:
        finite = np.isfinite(values)
        clipped = int(np.count_nonzero(finite & (np.abs(values) > _FP16_MAX)))
        out = numpy_helper.from_array(np.where(finite, np.clip(values, -_FP16_MAX, _FP16_MAX), values)
                                      .astype(np.float16), name or tensor.name)
    else:
        out = TensorProto()
        out.name = name or tensor.name
        out.data_type = TensorProto.BFLOAT16
        out.dims.extend(values.shape)
        out.raw_data = float_to_bfloat16_bits(values).astype("<u2").tobytes()
    out.doc_string = tensor.doc_string
    return out, clipped


# type propagation ---------------------------------------------------------------------------------------------------
def _is_default_domain(node: onnx.NodeProto) -> bool:
    return node.domain in ("", "ai.onnx")


def _opsets(model: onnx.ModelProto) -> Dict[str, int]:
    """domain -> imported version, the default domain spelled ""."""
    return {("" if i.domain == "ai.onnx" else i.domain): i.version for i in model.opset_import}


def _schema(node: onnx.NodeProto, opsets: Dict[str, int]):
    domain = "" if _is_default_domain(node) else node.domain
    version = opsets.get(domain)
    if version is None:
        return None
    try:
        return onnx.defs.get_schema(node.op_type, version, domain)
    except onnx.defs.SchemaError:
        return None


def _formal(params, index: int):
    """The formal parameter that the ``index``-th actual input/output binds to (variadic ones repeat)."""
    if index < len(params):
        return params[index]
    if params and params[-1].option == onnx.defs.OpSchema.FormalParameterOption.Variadic:
        return params[-1]
    return None


def _slot_params(node: onnx.NodeProto, schema) -> Tuple[List[Optional[str]], List[Optional[str]], Dict[str, Set[str]]]:
    """Type parameter (e.g. "T") or fixed type (e.g. "tensor(float)") of each input and output."""
    if schema is None:
        return ([None] * len(node.input), [None] * len(node.output), {})
    allowed = {c.type_param_str: set(c.allowed_type_strs) for c in schema.type_constraints}
    ins = [getattr(_formal(schema.inputs, i), "type_str", None) for i in range(len(node.input))]
    outs = [getattr(_formal(schema.outputs, i), "type_str", None) for i in range(len(node.output))]
    return ins, outs, allowed


def _known_types(model: onnx.ModelProto) -> Dict[str, int]:
    """Element type of every tensor whose type is known, by onnx's inference plus a forward pass of our own."""
    types: Dict[str, int] = {}
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    except Exception:  # noqa: BLE001 - inference is a help here, the forward pass below covers what it misses
        inferred = model
    g = inferred.graph
    for vi in list(g.input) + list(g.output) + list(g.value_info):
        if vi.type.HasField("tensor_type") and vi.type.tensor_type.elem_type:
            types[vi.name] = vi.type.tensor_type.elem_type
    for init in model.graph.initializer:
        types[init.name] = init.data_type
    opsets = _opsets(model)
    for node in model.graph.node:
        if all(o in types or not o for o in node.output):
            continue
        if node.op_type == "Constant" and _is_default_domain(node):
            attr = node.attribute[0] if node.attribute else None
            if attr is not None:
                types[node.output[0]] = (attr.t.data_type if attr.name == "value" else
                                         _FLOAT if attr.name in ("value_float", "value_floats") else
                                         TensorProto.INT64 if attr.name in ("value_int", "value_ints") else 0)
            continue
        if node.op_type == "Cast" and _is_default_domain(node):
            types[node.output[0]] = helper.get_attribute_value(next(a for a in node.attribute if a.name == "to"))
            continue
        ins, outs, allowed = _slot_params(node, _schema(node, opsets))
        for o, out_param in zip(node.output, outs):
            if not o or o in types:
                continue
            if out_param is not None and out_param in _FIXED_TYPES:
                types[o] = _FIXED_TYPES[out_param]
            else:
                same = [types.get(i) for i, p in zip(node.input, ins) if i and (p == out_param or out_param is None)]
                same = [t for t in same if t]
                if same:
                    types[o] = same[0]
    return types


# the conversion -----------------------------------------------------------------------------------------------------
def check_precision_options(precision: str, io_dtype: str = "float32") -> None:
    """Raises :class:`PrecisionError` for a ``precision`` or ``io_dtype`` that :func:`convert_precision` does not
    take (callers that must check before slower work, e.g. before importing TensorRT, call this first)."""
    if precision != "fp32" and precision not in _HALF:
        raise PrecisionError(f"precision must be fp32, fp16 or bf16, got {precision!r}")
    if io_dtype not in ("float32", "half"):
        raise PrecisionError(f"io_dtype must be 'float32' or 'half', got {io_dtype!r}")


def keep_fp32_names(keep_fp32_nodes: Iterable[str]) -> List[str]:
    """``keep_fp32_nodes`` (``--keep-fp32``) as a list, read once (a generator too); a bare string is a
    :class:`PrecisionError` (``list("node_a")`` would be its letters)."""
    if isinstance(keep_fp32_nodes, (str, bytes)):
        raise PrecisionError(f"{argument('keep_fp32', '--keep-fp32')} must be a list of node names, e.g. "
                             f"[{keep_fp32_nodes!r}], got the string {keep_fp32_nodes!r}")
    return list(keep_fp32_nodes)


def check_keep_fp32_nodes(model: onnx.ModelProto, keep_fp32_nodes: Iterable[str]) -> None:
    """Raises :class:`PrecisionError` naming the ``keep_fp32_nodes`` (``--keep-fp32``) that are not nodes of the
    model's graph."""
    names = {n.name for n in model.graph.node if n.name}
    unknown = sorted(set(keep_fp32_names(keep_fp32_nodes)) - names)
    if unknown:
        raise PrecisionError(f"{argument('keep_fp32', '--keep-fp32')}: no node named {unknown} in the model; "
                             f"node names look like {sorted(names)[:8]} (all of them: dcn-deploy inspect --nodes "
                             "MODEL.onnx)")


def convert_precision(model: onnx.ModelProto, precision: str = "fp16", *,
                      keep_fp32_nodes: Iterable[str] = (), keep_fp32_ops: Optional[Dict[str, str]] = None,
                      io_dtype: str = "float32") -> Tuple[onnx.ModelProto, PrecisionReport]:
    """Return a copy of ``model`` computing in ``precision`` ("fp16" or "bf16"; "fp32" returns a copy as is).

    Args:
        keep_fp32_nodes: node names to keep in float32 (each must exist).
        keep_fp32_ops: op_type -> reason; defaults to :data:`KEEP_FP32_OPS`.
        io_dtype: "float32" (model inputs/outputs stay float32, Casts at the boundary) or "half" (RoI box inputs
            stay float32).
    Raises :class:`PrecisionError` for unknown node names, control flow, or bf16 below opset 22 with our ops.
    """
    check_precision_options(precision, io_dtype)
    out = onnx.ModelProto()
    out.CopyFrom(model)
    report = PrecisionReport(precision, io_dtype)
    if precision == "fp32":
        return out, report
    keep_names = set(keep_fp32_names(keep_fp32_nodes))
    check_keep_fp32_nodes(out, keep_names)
    check_convertible(out, precision)
    conversion = _HalfConversion(out, precision, io_dtype, report, keep_names,
                                 KEEP_FP32_OPS if keep_fp32_ops is None else keep_fp32_ops)
    conversion.plan_nodes()  # 1. which float inputs/outputs of each node run in half
    conversion.convert_sources()  # 2. initializers and Constants wanted in half
    nodes = conversion.nodes_with_casts()  # 3. a Cast wherever a tensor's type and its consumer's differ
    conversion.cast_model_io(nodes)  # 4. model inputs and outputs in the requested I/O type
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    del out.graph.value_info[:]  # stale types; shape inference recomputes them
    return out, report


def check_convertible(model: onnx.ModelProto, precision: str) -> None:
    """Raises :class:`PrecisionError` for control flow, and for bf16 with our ops below opset 22 (callers that must
    check before slower work, e.g. before importing TensorRT, call this first)."""
    for node in model.graph.node:
        if node.op_type in _CONTROL_FLOW or any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
                                                for a in node.attribute):
            raise PrecisionError(f"node {node.name or node.op_type!r} ({node.op_type}) holds a subgraph; precision "
                                 "conversion does not rewrite control flow: convert the model without it, or build "
                                 "in fp32")
    default_opset = _opsets(model).get("", 0)
    if (precision == "bf16" and any(n.domain == "dcn_deploy" for n in model.graph.node)
            and default_opset < BFLOAT16_MIN_OPSET):
        raise PrecisionError(f"bf16: the model imports ONNX opset {default_opset}, but the dcn_deploy function "
                             f"bodies (standard DeformConv) have bfloat16 only from opset {BFLOAT16_MIN_OPSET}: re-export "
                             f"with --opset {BFLOAT16_MIN_OPSET}, or use fp16")


def _rule_reason(node: onnx.NodeProto, keep_names: Set[str], keep_ops: Dict[str, str]) -> Optional[str]:
    """Why ``node`` stays float32 by name or by op rule (1. and 2. of the module docstring), or None."""
    if node.name and node.name in keep_names:
        return "named in --keep-fp32"
    if node.doc_string.startswith(KEEP_FP32_MARK):
        return node.doc_string[len(KEEP_FP32_MARK):].lstrip(": ") or "marked"
    if _is_default_domain(node) and node.op_type in keep_ops:
        return f"rule: {keep_ops[node.op_type]}"
    if (node.domain, node.op_type) in KEEP_FP32_DOMAIN_OPS:
        return f"rule: {KEEP_FP32_DOMAIN_OPS[(node.domain, node.op_type)]}"
    return None


class _HalfConversion:
    """The state that the steps of :func:`convert_precision` share, for one model converted in place.

    ``current[t]`` is the element type tensor ``t`` will have after the conversion; ``plan[i]`` the element type
    node ``i`` needs on each input (None: read it as it is); ``wants[s]`` the types the consumers of a source
    (initializer or float32 Constant) need. Nodes are keyed by index: the node list is not reordered until step 3.
    """

    def __init__(self, model: onnx.ModelProto, precision: str, io_dtype: str, report: PrecisionReport,
                 keep_names: Set[str], keep_ops: Dict[str, str]) -> None:
        self.graph = model.graph
        self.precision = precision
        self.half = _HALF[precision]
        self.io_dtype = io_dtype
        self.report = report
        self.keep_names = keep_names
        self.keep_ops = keep_ops
        self.opsets = _opsets(model)
        self.types = _known_types(model)
        g = self.graph
        self.initializers = {t.name: t for t in g.initializer}
        self.constants = {n.output[0]: n for n in g.node if n.op_type == "Constant" and _is_default_domain(n)
                          and self.types.get(n.output[0]) == _FLOAT}
        from ..feeds.onnx_file_inputs import fed_inputs, roi_input_names

        self.graph_inputs = {vi.name for vi in fed_inputs(g)}
        # RoI boxes stay float32 even under io_dtype="half": float16 rounds a box corner to 0.5 px steps past 512 px
        # and 1 px steps past 1024 (bfloat16: 4 px steps past 512), which the float32 RoI pooling rule exists to avoid
        self.float32_inputs = set(roi_input_names(g))
        self.current: Dict[str, int] = {}
        self.plan: Dict[int, List[Optional[int]]] = {}
        self.wants: Dict[str, List[int]] = {}
        self.half_copy: Dict[str, str] = {}  # shared source -> the name of its half copy
        self.after: Dict[int, List[onnx.NodeProto]] = {}  # index of a Constant node -> its half copy, placed after it
        self.suffix = {self.half: precision, _FLOAT: "fp32"}

    def _is_source(self, tensor: str) -> bool:
        return tensor in self.initializers or tensor in self.constants

    def _keep_output_types(self, node: onnx.NodeProto) -> None:
        for o in node.output:
            if o in self.types:
                self.current[o] = self.types[o]

    def _require(self, index: int, node: onnx.NodeProto, required: List[Optional[int]]) -> None:
        """Record the input types node ``index`` needs, and what its source inputs are wanted in."""
        self.plan[index] = required
        for t, r in zip(node.input, required):
            if r is not None and self._is_source(t):
                self.wants.setdefault(t, []).append(r)

    # 1. ------------------------------------------------------------------------------------------------------
    def plan_nodes(self) -> None:
        """Decide, per node, which float inputs/outputs run in half (sources are decided after their consumers)."""
        for vi in self.graph.input:
            if vi.name in self.graph_inputs and self.types.get(vi.name) == _FLOAT:
                half_input = self.io_dtype == "half" and vi.name not in self.float32_inputs
                self.current[vi.name] = self.half if half_input else _FLOAT
        for index, node in enumerate(self.graph.node):
            if node.output and node.output[0] in self.constants:
                continue  # Constant nodes are sources, decided after their consumers
            float_ins = [i for i, t in enumerate(node.input) if t and self.types.get(t) == _FLOAT]
            float_outs = [i for i, t in enumerate(node.output) if t and self.types.get(t) == _FLOAT]
            if node.op_type == "Cast" and _is_default_domain(node):
                self._plan_cast(index, node)
            elif not float_ins and not float_outs:
                self.plan[index] = [None] * len(node.input)
                self._keep_output_types(node)
            elif not self._plan_follow_op(index, node, float_ins):
                self._plan_compute_node(index, node, float_ins)

    def _plan_cast(self, index: int, node: onnx.NodeProto) -> None:
        """A cast into float32 becomes a cast into the half type."""
        self.plan[index] = [None]
        to = next(a for a in node.attribute if a.name == "to")
        if to.i == _FLOAT and node.name not in self.keep_names:
            to.i = self.half
            self.report.half_nodes += 1
        for o in node.output:
            self.current[o] = to.i

    def _plan_follow_op(self, index: int, node: onnx.NodeProto, float_ins: List[int]) -> bool:
        """Data movement whose computed inputs are all float32 stays float32 (no Cast round trip); True if so."""
        if not (_is_default_domain(node) and node.op_type in _FOLLOW_OPS):
            return False
        produced = [self.current.get(node.input[i]) for i in float_ins if not self._is_source(node.input[i])]
        if not produced or any(t != _FLOAT for t in produced):
            return False
        self._require(index, node, [_FLOAT if i in float_ins else None for i in range(len(node.input))])
        self._keep_output_types(node)
        self.report.followed_fp32 += 1
        return True

    def _plan_compute_node(self, index: int, node: onnx.NodeProto, float_ins: List[int]) -> None:
        """Half for the inputs whose type parameter allows it, float32 (and a report line) for kept nodes."""
        schema = _schema(node, self.opsets)
        ins, outs, allowed = _slot_params(node, schema)
        reason = _rule_reason(node, self.keep_names, self.keep_ops)
        half_params: Set[Optional[str]] = set()
        if reason is None:
            for i in float_ins:
                p = ins[i]
                if schema is None:
                    half_params.add(None)
                elif p in allowed and _TYPE_STR[self.half] in allowed[p]:
                    half_params.add(p)
                elif p in allowed:
                    reason = f"ONNX opset {self.opsets.get('', 0)} {node.op_type} has no {self.precision} for input {i}"
                    break
            if reason is None and not float_ins:
                reason = "no float input (output type set by an attribute)"
        if reason is not None:
            self.report.kept_fp32.append((node.name or f"{node.op_type}#{index}", node.op_type, reason))
            half_params = set()
        any_type = _ANY_TYPE_INPUTS.get(node.op_type, ()) if _is_default_domain(node) else ()
        required: List[Optional[int]] = []
        for i, t in enumerate(node.input):
            if not t or self.types.get(t) != _FLOAT or i in any_type:
                required.append(None)
            else:
                required.append(self.half if (ins[i] in half_params) else _FLOAT)
        for i, o in enumerate(node.output):
            if not o:
                continue
            if self.types.get(o) == _FLOAT:
                self.current[o] = self.half if (half_params and (outs[i] in half_params)) else _FLOAT
            elif o in self.types:
                self.current[o] = self.types[o]
        # counted when it computes in half: a Shape of a float tensor (any type in, int64 out) does not
        if any(r == self.half for r in required) or any(self.current.get(o) == self.half for o in node.output if o):
            self.report.half_nodes += 1
        self._require(index, node, required)

    # 2. ------------------------------------------------------------------------------------------------------
    def convert_sources(self) -> None:
        """Convert initializers/Constants wanted only in half in place; shared ones get a half copy."""
        g, half, precision = self.graph, self.half, self.precision
        constant_index = {n.output[0]: i for i, n in enumerate(g.node) if n.output and n.output[0] in self.constants}
        model_outputs = {o.name for o in g.output}
        for name, wanted in self.wants.items():
            if half not in wanted:
                continue
            only_half = all(w == half for w in wanted) and name not in model_outputs
            target = name if only_half else f"{name}__{precision}"
            if name in self.initializers:
                tensor, clipped = _to_half_tensor(self.initializers[name], half, target)
                if only_half:
                    self.initializers[name].CopyFrom(tensor)
                else:
                    g.initializer.append(tensor)
            else:
                node = self.constants[name]
                attr = node.attribute[0]
                source = attr.t if attr.name == "value" else numpy_helper.from_array(
                    np.asarray(helper.get_attribute_value(attr), np.float32))
                tensor, clipped = _to_half_tensor(source, half, "")
                if only_half:
                    del node.attribute[:]
                    node.attribute.append(helper.make_attribute("value", tensor))
                else:
                    self.after[constant_index[name]] = [helper.make_node("Constant", [], [target], value=tensor,
                                                                         name=f"{node.name or name}__{precision}")]
            self.report.values_clipped += clipped
            self.report.initializers_converted += 1
            self.current[name] = half if only_half else _FLOAT
            if not only_half:
                self.half_copy[name] = target
        for name in list(self.initializers) + list(self.constants):
            self.current.setdefault(name, _FLOAT)

    # 3. ------------------------------------------------------------------------------------------------------
    def nodes_with_casts(self) -> List[onnx.NodeProto]:
        """The node list with a Cast wherever a tensor's type and its consumer's differ (one per tensor and
        type, placed before its first consumer), and the half copies of shared Constants."""
        casts: Dict[Tuple[str, int], str] = {}
        new_nodes: List[onnx.NodeProto] = []

        def cast_to(tensor: str, to: int) -> str:
            key = (tensor, to)
            if key not in casts:
                casts[key] = f"{tensor}__to_{self.suffix[to]}"
                new_nodes.append(helper.make_node("Cast", [tensor], [casts[key]], to=to,
                                                  name=f"{tensor}__cast_{self.suffix[to]}"))
                self.report.casts_inserted += 1
            return casts[key]

        for index, node in enumerate(list(self.graph.node)):
            for i, (t, r) in enumerate(zip(list(node.input), self.plan.get(index, ()))):
                if r is None:
                    continue
                if r == self.half and t in self.half_copy:
                    node.input[i] = self.half_copy[t]
                elif self.current.get(t, r) != r:
                    node.input[i] = cast_to(t, r)
            new_nodes.append(node)
            new_nodes.extend(self.after.get(index, ()))
        return new_nodes

    # 4. ------------------------------------------------------------------------------------------------------
    def cast_model_io(self, nodes: List[onnx.NodeProto]) -> None:
        """Cast model outputs back to the requested I/O type under their original names (appending to ``nodes``),
        and type the model inputs and outputs."""
        half = self.half
        want_out = half if self.io_dtype == "half" else _FLOAT
        for vi in self.graph.output:
            if self.types.get(vi.name) not in (_FLOAT, half) or self.current.get(vi.name, want_out) == want_out:
                if vi.type.tensor_type.elem_type == _FLOAT and self.io_dtype == "half":
                    vi.type.tensor_type.elem_type = half
                continue
            inner = f"{vi.name}__{self.suffix[self.current[vi.name]]}"
            for n in nodes:
                for i, t in enumerate(n.input):
                    if t == vi.name:
                        n.input[i] = inner
                for i, t in enumerate(n.output):
                    if t == vi.name:
                        n.output[i] = inner
            nodes.append(helper.make_node("Cast", [inner], [vi.name], to=want_out, name=f"{vi.name}__cast_out"))
            self.report.casts_inserted += 1
            vi.type.tensor_type.elem_type = want_out
        if self.io_dtype == "half":
            for vi in self.graph.input:
                if (vi.name in self.graph_inputs and vi.name not in self.float32_inputs
                        and vi.type.tensor_type.elem_type == _FLOAT):
                    vi.type.tensor_type.elem_type = half
