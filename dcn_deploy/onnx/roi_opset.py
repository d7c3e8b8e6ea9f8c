"""ONNX ops ``dcn_deploy::DeformRoIPool`` and ``dcn_deploy::DeformPSRoIPool``: schemas, function bodies, exporter.

Semantics: :mod:`dcn_deploy.ops.roi_pool` (mmcv's deform_roi_pool; Deformable-ConvNets' DeformablePSROIPooling).
Registered into :mod:`dcn_deploy.onnx.opset` at import (listed in its ``_EXTENSION_MODULES``).

The function bodies are standard ONNX (opset >= 19): the four bilinear corners of every sample of every bin are
fetched at once and weighted, all attributes are references to the calling node's, so one function serves every
node. DeformRoIPool gathers whole rows of channels from a channels-last copy of the input and weights them with one
small ``MatMul`` per bin. DeformPSRoIPool does the same when a class has at least ``_ROWS_FROM_CHANNELS`` channels;
with fewer (class-specific offsets give one channel per class) an ``If`` takes single values with
``GatherElements`` instead, which ONNX Runtime does 7x faster than one-value rows (benchmarks/RESULTS.md).
The bodies compute in float32 (ONNX Runtime's CPU kernels for Floor/Clip/Gather-arithmetic lack float16 and
bfloat16) and cast the result back to the input's type; for float64 inputs that means float32 precision.
A RoI whose batch index lies outside [0, N) pools to 0, as in the kernels, an empty batch (N = 0) included: the
gathered table is then one image of zeros (:func:`_transposed_table`).

Non-finite offsets, trans or boxes give what the kernels give (roiPoolMath.h): a sample whose position is NaN is
taken, with NaN weights, so a bin is NaN where it takes such a sample (its other coordinate not off the map), and a
position at +-inf is off the map, so that sample is skipped. The sample indices and weights come from an If
(:func:`_positions`): the arithmetic of the finite case, unchanged, unless a sample start or step is NaN or
infinite; then an exact form that keeps NaN out of the indices (Gather refuses the -2^63 a NaN casts to) and puts
it back once per bin (:func:`_axis_samples`, :func:`_nan_bins`).

The node always has its third input (offset / trans): the exporter writes zeros when the torch call had None,
which gives exactly the same result (plain RoIAlign, or no_trans). The adaptive ``sampling_ratio=0`` of
DeformRoIPool makes the number of samples per bin depend on each RoI's size and has no static form: the exporter
refuses it with a message naming the layer and the fix (:func:`check_model`).
"""
from __future__ import annotations

from typing import Callable, List, NamedTuple, Optional

import onnx
from onnx import TensorProto, defs, helper

from ..ops.roi_spec import MAX_SAMPLES_PER_BIN_SIDE
from ..wording import for_reader
from .opset import (DOMAIN, FLOAT_TYPES, VERSION, ExportRefusal, OpDefinition, all_nodes, plugin_attribute_schemas,
                    register_op)
from .schema_inference import inference_error, known_size, tensor_dims

__all__ = ["DEFORM_ROI_POOL", "DEFORM_PSROI_POOL", "deform_roi_pool_function", "deform_psroi_pool_function",
           "check_model", "invalid_roi_pool_nodes", "AdaptiveSamplingError"]

DEFORM_ROI_POOL = "DeformRoIPool"
DEFORM_PSROI_POOL = "DeformPSRoIPool"

# name -> (default, doc); names are mmcv's ONNX attribute names and the TensorRT plugin's fields
_ROI_ATTRIBUTES = {
    "pooled_height": (1, "output height (out_h)"),
    "pooled_width": (1, "output width (out_w)"),
    "spatial_scale": (1.0, "feature-map pixels per image pixel"),
    "sampling_ratio": (2, "samples per bin side, >= 1 (mmcv's adaptive 0 cannot be exported)"),
    "gamma": (0.1, "offset scale: shift = gamma * offset * RoI size"),
}
_PSROI_ATTRIBUTES = {
    "spatial_scale": (1.0, "feature-map pixels per image pixel"),
    "output_dim": (1, "output channels"),
    "group_size": (1, "side of the position-sensitive channel grid; X has output_dim*group_size**2 channels"),
    "pooled_size": (1, "output side"),
    "part_size": (0, "side of the offset grid; 0 = pooled_size"),
    "sample_per_part": (1, "samples per bin side"),
    "trans_std": (0.0, "offset scale: shift = trans_std * trans * RoI size"),
    "no_trans": (0, "1: ignore trans (pool without offsets)"),
}


class AdaptiveSamplingError(ExportRefusal):
    """A DeformRoIPool layer uses sampling_ratio=0, which has no static ONNX form."""


# --------------------------------------------------------------------------------------------------------------
# Schemas and shape inference
# --------------------------------------------------------------------------------------------------------------

def _attribute_protos(table: dict) -> List["defs.OpSchema.Attribute"]:
    attribute = defs.OpSchema.Attribute
    out = [attribute(name, helper.make_attribute(name, default), doc) for name, (default, doc) in table.items()]
    return out + plugin_attribute_schemas()


def _inference_error(op: str, message: str) -> Exception:
    return inference_error(DOMAIN, op, message)


def _attr(ctx, table: dict, name: str):
    attr = ctx.get_attribute(name)
    return table[name][0] if attr is None else helper.get_attribute_value(attr)


def _dims(ctx, index: int) -> Optional[list]:
    """Input ``index``'s dimensions, or None when it is absent or its shape unknown."""
    if index >= ctx.get_num_inputs() or not ctx.has_input(index):
        return None
    return tensor_dims(ctx.get_input_type(index))


def _check(op: str, dims, name: str, expected: list) -> None:
    """``expected`` holds ints or None (unchecked) per axis."""
    if dims is None:
        return
    if len(dims) != len(expected):
        raise _inference_error(op, f"input {name} must be {len(expected)}-D, got rank {len(dims)}")
    for axis, (dim, want) in enumerate(zip(dims, expected)):
        got = known_size(dim)
        if want is not None and got is not None and got != want:
            raise _inference_error(op, f"input {name} dim {axis} must be {want}, got {got} (expected shape {expected})")


def _set_output(ctx, dims: list) -> None:
    """Y: X's element type with the shape ``dims``."""
    t = ctx.get_input_type(0)
    output = onnx.TypeProto()
    output.tensor_type.elem_type = t.tensor_type.elem_type if t is not None else TensorProto.UNDEFINED
    output.tensor_type.shape.dim.extend(dims)
    ctx.set_output_type(0, output)


def _dim(value=None, copy=None):
    d = onnx.TensorShapeProto.Dimension()
    if copy is not None:
        d.CopyFrom(copy)
    elif value is not None:
        d.dim_value = value
    return d


def _roi_pool_attribute_error(values: dict) -> Optional[str]:
    """What is wrong with DeformRoIPool's attributes ``values`` (all of them, defaults filled in); None if nothing."""
    ph, pw, ratio = values["pooled_height"], values["pooled_width"], values["sampling_ratio"]
    if ph < 1 or pw < 1:
        return f"pooled_height and pooled_width must be >= 1, got {ph}, {pw}"
    if not 1 <= ratio <= MAX_SAMPLES_PER_BIN_SIDE:
        return (f"sampling_ratio must be from 1 (the adaptive 0 has no static form) to {MAX_SAMPLES_PER_BIN_SIDE}, "
                f"got {ratio}")
    return None


def _psroi_pool_attribute_error(values: dict) -> Optional[str]:
    """What is wrong with DeformPSRoIPool's attributes ``values`` (all of them, defaults filled in); None if
    nothing."""
    if (min(values["output_dim"], values["group_size"], values["pooled_size"], values["sample_per_part"]) < 1
            or values["part_size"] < 0 or values["sample_per_part"] > MAX_SAMPLES_PER_BIN_SIDE):
        return (f"output_dim, group_size, pooled_size and sample_per_part must be >= 1 (and sample_per_part <= "
                f"{MAX_SAMPLES_PER_BIN_SIDE}) and part_size >= 0, got {values}")
    return None


# op type -> (its attribute table, the check of its attributes)
_ATTRIBUTE_CHECKS = {DEFORM_ROI_POOL: (_ROI_ATTRIBUTES, _roi_pool_attribute_error),
                     DEFORM_PSROI_POOL: (_PSROI_ATTRIBUTES, _psroi_pool_attribute_error)}


def invalid_roi_pool_nodes(model: onnx.ModelProto) -> List[str]:
    """``"node 'pool' (dcn_deploy::DeformRoIPool): sampling_ratio must be ..."`` for each RoI pooling node of the
    model (graph and subgraphs) whose attributes the op refuses. onnx's checker reports these through the schemas'
    inference, which ONNX Runtime does not run: there, the function body computes NaN (sampling_ratio 0) or garbage."""
    problems = []
    for node in all_nodes(model.graph):
        if node.domain != DOMAIN or node.op_type not in _ATTRIBUTE_CHECKS:
            continue
        table, check = _ATTRIBUTE_CHECKS[node.op_type]
        given = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        error = check({name: given.get(name, default) for name, (default, _) in table.items()})
        if error is not None:
            problems.append(f"node {node.name or node.output[0]!r} ({DOMAIN}::{node.op_type}): {error}")
    return problems


def _infer_roi_pool(ctx) -> None:
    """Y (K, C, pooled_height, pooled_width): K from rois, C from X; checks rois (K, 5) and offset (K, 2, ph, pw)."""
    op = DEFORM_ROI_POOL
    values = {name: _attr(ctx, _ROI_ATTRIBUTES, name) for name in _ROI_ATTRIBUTES}
    error = _roi_pool_attribute_error(values)
    if error is not None:
        raise _inference_error(op, error)
    ph, pw = values["pooled_height"], values["pooled_width"]
    x, rois, offset = _dims(ctx, 0), _dims(ctx, 1), _dims(ctx, 2)
    _check(op, x, "X", [None] * 4)
    _check(op, rois, "rois", [None, 5])
    k = known_size(rois[0]) if rois else None
    _check(op, offset, "offset", [k, 2, ph, pw])
    count = rois[0] if rois else (offset[0] if offset else None)
    _set_output(ctx, [_dim(copy=count), _dim(copy=x[1] if x else None), _dim(ph), _dim(pw)])


def _infer_psroi_pool(ctx) -> None:
    """Y (K, output_dim, pooled_size, pooled_size); checks X's channels, rois (K, 5), trans (K, 2*classes, part, part)."""
    op = DEFORM_PSROI_POOL
    values = {name: _attr(ctx, _PSROI_ATTRIBUTES, name) for name in _PSROI_ATTRIBUTES}
    output_dim, group, pooled = values["output_dim"], values["group_size"], values["pooled_size"]
    part = values["part_size"] or pooled
    error = _psroi_pool_attribute_error(values)
    if error is not None:
        raise _inference_error(op, error)
    x, rois, trans = _dims(ctx, 0), _dims(ctx, 1), _dims(ctx, 2)
    _check(op, x, "X", [None, output_dim * group * group, None, None])
    _check(op, rois, "rois", [None, 5])
    k = known_size(rois[0]) if rois else None
    _check(op, trans, "trans", [k, None, part, part])
    if trans is not None and known_size(trans[1]) is not None:
        channels = known_size(trans[1])
        classes = 1 if values["no_trans"] else channels // 2   # no_trans pools as one class, whatever trans holds
        if channels < 2 or channels % 2 or output_dim % classes:
            raise _inference_error(op, f"trans must have 2*num_classes channels with output_dim ({output_dim}) "
                                       f"divisible by num_classes, got {channels}")
    count = rois[0] if rois else (trans[0] if trans else None)
    _set_output(ctx, [_dim(copy=count), _dim(output_dim), _dim(pooled), _dim(pooled)])


def _schema(name: str, doc: str, inputs, attributes: dict, infer) -> "defs.OpSchema":
    param = defs.OpSchema.FormalParameter
    schema = defs.OpSchema(
        name, DOMAIN, VERSION, doc,
        inputs=[param(n, "T", d) for n, d in inputs],
        outputs=[param("Y", "T", "pooled output")],
        type_constraints=[("T", list(FLOAT_TYPES), "floating-point tensors")],
        attributes=_attribute_protos(attributes),
        node_determinism=defs.OpSchema.NodeDeterminism.Deterministic,
    )
    schema.set_type_and_shape_inference_function(infer)
    return schema


def deform_roi_pool_schema() -> "defs.OpSchema":
    return _schema(DEFORM_ROI_POOL,
                   "Deformable RoI pooling, mmcv's deform_roi_pool (see dcn_deploy.ops.roi_pool and docs/ops.md).",
                   [("X", "input (N, C, H, W)"), ("rois", "(K, 5) rows (batch index, x1, y1, x2, y2)"),
                    ("offset", "(K, 2, pooled_height, pooled_width) normalised bin shifts, channel 0 x, 1 y")],
                   _ROI_ATTRIBUTES, _infer_roi_pool)


def deform_psroi_pool_schema() -> "defs.OpSchema":
    return _schema(DEFORM_PSROI_POOL,
                   "Deformable position-sensitive RoI pooling, Deformable-ConvNets' DeformablePSROIPooling "
                   "(see dcn_deploy.ops.roi_pool and docs/ops.md).",
                   [("X", "input (N, output_dim*group_size^2, H, W)"),
                    ("rois", "(K, 5) rows (batch index, x1, y1, x2, y2)"),
                    ("trans", "(K, 2*num_classes, part_size, part_size) normalised part offsets")],
                   _PSROI_ATTRIBUTES, _infer_psroi_pool)


# --------------------------------------------------------------------------------------------------------------
# Function bodies
# --------------------------------------------------------------------------------------------------------------

class _Body:
    """Collects the nodes of a function body; every call adds one node and returns its (single) output name."""

    def __init__(self, prefix: str = ""):
        self.nodes: List[onnx.NodeProto] = []
        self.prefix = prefix  # keeps a branch's names apart from the enclosing body's

    def _name(self) -> str:
        return f"_{self.prefix}t{len(self.nodes)}"

    def __call__(self, op: str, *inputs: str, **attrs) -> str:
        out = self._name()
        self.nodes.append(helper.make_node(op, list(inputs), [out], **attrs))
        return out

    def outputs(self, op: str, inputs: List[str], count: int, **attrs) -> List[str]:
        outs = [f"{self._name()}_{i}" for i in range(count)]
        self.nodes.append(helper.make_node(op, inputs, outs, **attrs))
        return outs

    def f(self, value: float) -> str:
        return self("Constant", value=helper.make_tensor("v", TensorProto.FLOAT, [], [value]))

    def i(self, *values: int) -> str:
        """An int64 scalar (one value) or 1-D tensor (several)."""
        if len(values) == 1:
            return self("Constant", value=helper.make_tensor("v", TensorProto.INT64, [], list(values)))
        return self("Constant", value_ints=list(values))

    def ints(self, values: List[int]) -> str:
        return self("Constant", value_ints=list(values))

    def ref(self, attribute: str, kind: str) -> str:
        """A scalar Constant whose value is the calling node's attribute (``kind``: 'int' or 'float')."""
        node = helper.make_node("Constant", [], [self._name()])
        ref = onnx.AttributeProto()
        ref.name = "value_int" if kind == "int" else "value_float"
        ref.ref_attr_name = attribute
        ref.type = onnx.AttributeProto.INT if kind == "int" else onnx.AttributeProto.FLOAT
        node.attribute.append(ref)
        self.nodes.append(node)
        return node.output[0]

    def dim(self, shape: str, axis: int) -> str:
        """Scalar int64 size of one axis from a Shape output."""
        return self("Squeeze", self("Slice", shape, self.ints([axis]), self.ints([axis + 1])), self.ints([0]))

    def unsq(self, x: str, *axes: int) -> str:
        return self("Unsqueeze", x, self.ints(list(axes)))

    def to_float(self, x: str) -> str:
        return self("Cast", x, to=TensorProto.FLOAT)


def _axis_corners(b: _Body, coord: str, low_bound: float, high: str, valid: str, size_i: str):
    """Clamp ``coord`` to [0, high] and return (indices, weights) with the low corners then the high ones on the
    last axis; weights are zeroed where ``valid`` is 0. ``size_i`` is the axis length (int64 scalar). ``coord``
    must hold no NaN (its int64 cast would be an index far out of range): see :func:`_axis_samples`."""
    clamped = b("Clip", coord, b.f(low_bound), high)
    low = b("Floor", clamped)
    frac = b("Sub", clamped, low)
    low_i = b("Cast", low, to=TensorProto.INT64)
    high_i = b("Min", b("Add", low_i, b.i(1)), b("Sub", size_i, b.i(1)))
    index = b("Concat", low_i, high_i, axis=-1)
    weight = b("Concat", b("Mul", b("Sub", b.f(1.0), frac), valid), b("Mul", frac, valid), axis=-1)
    return index, weight


class _AxisSamples(NamedTuple):
    """One axis of every sample of every bin (:func:`_axis_samples`): ``index``, ``weight`` as
    :func:`_axis_corners`'s (2S on the last axis); ``valid`` (S on the last axis, float 0/1) whether the sample is
    taken, times ``inside`` where given; ``nan`` (float 0/1, the samples axis reduced away; None in the finite
    form) whether a coordinate of the bin is NaN."""
    index: str
    weight: str
    valid: str
    nan: Optional[str]


def _axis_samples(b: _Body, coord: str, low: float, high_shift: float, size_i: str, inside: Optional[str],
                  finite: bool) -> _AxisSamples:
    """The kernels' rule for one coordinate of a sample (roiAlignTap, psroiSampleCoordinate in roiPoolMath.h): the
    sample is skipped when ``coord`` < ``low`` or > size + ``high_shift``, else clamped onto [0, size - 1] and
    interpolated; ``size_i`` the axis length (int64 scalar), ``inside`` (bool, optional) False where the sample
    is not taken whatever its position.

    ``finite``: the form for coordinates without NaN (:func:`_positions`). Otherwise a NaN coordinate (from a NaN
    or infinite offset, trans or box: inf - inf, 0 x inf) is what the kernels make of it: taken (the comparisons
    are false), with NaN weights, so that its bin is NaN when the sample's other coordinate is taken too
    (:func:`_nan_bins`) and pools as if it were not there when it is not. Here it counts as taken and reads
    position 0 (inside the bounds for both ops) with finite weights, so that no NaN reaches the int64 indices
    (Gather and GatherElements refuse -2^63) nor the weights (0 x NaN is NaN where the kernels skip the sample);
    the caller puts the bin's NaN back, once per bin.

    Runs in an If's branch: the float size is cast here (ONNX Runtime's optimizer warns, at every session, of
    a Cast output that a branch reads from the enclosing graph)."""
    nan = None
    if not finite:
        is_nan = b("IsNaN", coord)
        coord = b("Where", is_nan, b.f(0.0), coord)
        nan = b("ReduceMax", b("Cast", is_nan, to=TensorProto.FLOAT), b.ints([-1]), keepdims=0)
    size_f = b.to_float(size_i)
    high = size_f if high_shift == 0 else b("Add", size_f, b.f(high_shift))
    valid = b("And", b("GreaterOrEqual", coord, b.f(low)), b("LessOrEqual", coord, high))
    if inside is not None:
        valid = b("And", valid, inside)
    valid = b("Cast", valid, to=TensorProto.FLOAT)
    index, weight = _axis_corners(b, coord, 0.0, b("Sub", size_f, b.f(1.0)), valid, size_i)
    return _AxisSamples(index, weight, valid, nan)


def _nan_bins(b: _Body, x: _AxisSamples, y: _AxisSamples, x_taken: str, y_taken: str) -> str:
    """Bool, per bin: whether the kernels give NaN there, i.e. take a sample with a NaN coordinate: a bin with a
    NaN x and a taken y (a NaN one included), or the other way round. ``x_taken``, ``y_taken``: per bin, > 0
    where some x (y) coordinate is taken (a count or a maximum of ``valid``)."""
    return b("Greater", b("Add", b("Mul", x.nan, y_taken), b("Mul", y.nan, x_taken)), b.f(0.0))


def _any_nonfinite(b: _Body, *values: str) -> str:
    """Bool scalar: whether ``values`` hold a NaN or an infinity (or sum past the float32 range, which only
    chooses the exact form for nothing). The sample coordinates are sums start + step x (sample offset): NaN in
    them needs a start or a step that is NaN or infinite (two finite terms overflow to an infinity of one sign
    only), so these, far fewer than the samples, decide between the two forms of :func:`_positions`."""
    total = b("Sum", *[b("ReduceSum", v, keepdims=0) for v in values])
    return b("IsNaN", b("Sub", total, total))


# The element types of what both ops' ``sample_corners`` return first: x index, x weight, y index, y weight.
_POSITION_TYPES = [TensorProto.INT64, TensorProto.FLOAT, TensorProto.INT64, TensorProto.FLOAT]


def _positions(b: _Body, nonfinite: str, build: Callable[[_Body, bool], List[str]], types: List[int],
               name: str) -> List[str]:
    """The per-axis sample indices and weights (and what else ``build`` returns, ``types`` its element types),
    built by ``build(t, finite)`` in the two branches of an If on ``nonfinite``: the finite form, the body's
    arithmetic as it always was, for the inputs every model feeds, and the exact form (NaN coordinates as the
    kernels take them, :func:`_axis_samples`) only where a start or step is not finite. The exact form's ops (a
    Where and a max per sample and axis; ONNX Runtime's Where takes ~4 ns a value) made R-FCN's classification
    head ~3% slower in ONNX Runtime when always run; the If costs a sum over the starts and steps."""
    return b.outputs("If", [nonfinite], len(types),
                     then_branch=_branch(f"{name}_nonfinite", lambda t: build(t, False), types),
                     else_branch=_branch(f"{name}_finite", lambda t: build(t, True), types))


def _lead_then(b: _Body, like: str, *last: str) -> str:
    """A shape: ``like``'s shape without its last axis, then ``last`` (1-D int64 tensors). Explicit, so that an
    empty RoI list (K = 0) reshapes too."""
    return b("Concat", b("Shape", like, start=0, end=-1), *last, axis=0)


def _pair_weights(b: _Body, y_wt: str, x_wt: str, pairs: str) -> str:
    """(B..., 1, pairs): the bilinear weight of each (row corner, column corner) pair of a bin, rows outer, from
    the per-axis weights y_wt, x_wt (B..., 2S); ``pairs`` = 4S^2."""
    weight = b("Mul", b.unsq(y_wt, -1), b.unsq(x_wt, -2))
    return b("Reshape", weight, _lead_then(b, x_wt, b.ints([1]), b.unsq(pairs, 0)))


def _weighted_rows(b: _Body, gathered: str, y_wt: str, x_wt: str, pairs: str, channels: str) -> str:
    """(B..., channels): the rows gathered for every (row corner, column corner) pair of a bin, (B..., 2S, 2S,
    channels), summed with their bilinear weights by one small MatMul per bin (ONNX Runtime's broadcast Mul and
    ReduceSum over middle axes are several times slower)."""
    values = b("Reshape", gathered, _lead_then(b, x_wt, b.unsq(pairs, 0), b.unsq(channels, 0)))
    return b("Squeeze", b("MatMul", _pair_weights(b, y_wt, x_wt, pairs), values), b.ints([-2]))


def _function(name: str, inputs: List[str], body: _Body, result: str, attributes: dict, opset: int,
              doc: str) -> onnx.FunctionProto:
    body.nodes.append(helper.make_node("Identity", [result], ["Y"]))
    defaults = [helper.make_attribute(n, d) for n, (d, _) in attributes.items()]
    return helper.make_function(DOMAIN, name, inputs, ["Y"], body.nodes,
                                opset_imports=[helper.make_opsetid("", opset)],
                                attribute_protos=defaults, doc_string=doc)


def _batch_index(b: _Body, index: str, batch_size: str):
    """(image, inside) for rois[:, 0] given as ``index`` (float, (K, 1, 1, 1)): ``image`` the index truncated toward
    zero (int64), 0 where it lies outside [0, N) or is NaN; ``inside`` (bool) False there, to zero the samples of
    such a RoI so that it pools to 0 as in the kernels (batchIndexInside, roiPoolMath.h; :func:`_axis_samples`,
    :func:`_outside_to_zero`). Without it Gather wraps a negative index (-1 read the last image) and a NaN one read
    image 0."""
    n_f = b.to_float(batch_size)
    inside = b("And", b("Greater", index, b.f(-1.0)), b("Less", index, n_f))   # False for NaN
    # N > 0: for an empty batch an index in (-1, 0) truncates to image 0, which does not exist (as in the kernels)
    inside = b("And", inside, b("Greater", n_f, b.f(0.0)))
    image = b("Cast", b("Where", inside, index, b.f(0.0)), to=TensorProto.INT64)
    return image, inside


def _outside_to_zero(b: _Body, is_inside: str, *values: str) -> List[str]:
    """``values`` (sample positions) set to 0 for the RoIs outside [0, N): the kernels read neither the box nor the
    offsets of such a RoI, so a NaN there must not reach the index arithmetic (a NaN position becomes an index far
    out of range, which Gather refuses) nor the weights (0 x NaN), nor make its bins NaN (:func:`_nan_bins`). For
    an empty batch (N = 0) that is every RoI. Only in the exact form of :func:`_positions`: in the finite one such
    a RoI's positions are finite indices like any others, and its samples are not taken (``inside``)."""
    zero = b.f(0.0)
    return [b("Where", is_inside, v, zero) for v in values]


def _branch(name: str, build: Callable[[_Body], object], types: Optional[List[int]] = None) -> onnx.GraphProto:
    """One branch of an If in a body: the nodes ``build`` adds (they may read the body's names) and its result, one
    name (float32) or a list of names (element types ``types``), each written by the node that computes it (an
    Identity there would copy it), unless it is not computed here or is read again in the branch."""
    b = _Body(prefix=name)
    results = build(b)
    single = isinstance(results, str)
    results = [results] if single else list(results)
    types = types or [TensorProto.FLOAT] * len(results)
    producers = {out: node for node in b.nodes for out in node.output}
    read = {i for node in b.nodes for i in node.input}
    outputs = []
    for index, result in enumerate(results):
        output = f"{name}_out" if single else f"{name}_out{index}"
        node = producers.get(result)
        if node is not None and result not in read and result not in results[:index]:
            node.output[list(node.output).index(result)] = output
        else:
            b.nodes.append(helper.make_node("Identity", [result], [output]))
        outputs.append(helper.make_tensor_value_info(output, types[index], None))
    return helper.make_graph(b.nodes, name, [], outputs)


def _transposed_table(b: _Body, x: str, perm: List[int], batch_size: str) -> str:
    """``Transpose(x, perm)`` (x's batch axis staying first): the table the body gathers from. For an empty batch
    (N = 0) one image of zeros instead: every RoI then lies outside [0, N), its image index is 0 and its weights are
    0 (:func:`_batch_index`), so it pools to 0 as in the kernels, where a Gather from the empty table would fail.
    The If only chooses where the Transpose writes (its output is the If's, no copy); an If around the gather and
    weighting instead measured 1-5% slower in ONNX Runtime for N >= 1."""
    prefix = f"{b.prefix}_" if b.prefix else ""

    def zero_image(t: _Body) -> str:
        return t("ConstantOfShape", t("Gather", t("Concat", t.ints([1]), t("Shape", x, start=1), axis=0),
                                      t.ints(perm), axis=0))

    return b("If", b("Equal", batch_size, b.i(0)), then_branch=_branch(f"{prefix}empty_table", zero_image),
             else_branch=_branch(f"{prefix}table", lambda t: t("Transpose", x, perm=perm)))


def deform_roi_pool_function(opset: int) -> onnx.FunctionProto:
    """Body of ``dcn_deploy::DeformRoIPool`` (standard ONNX at ``opset`` >= 19); formulas of deform_roi_pool."""
    b = _Body()
    x = b.to_float("X")
    rois = b.to_float("rois")
    offset = b.to_float("offset")
    shape = b("Shape", x)
    h_i, w_i, c_i = b.dim(shape, 2), b.dim(shape, 3), b.dim(shape, 1)
    ph_i, pw_i, ratio_i = b.ref("pooled_height", "int"), b.ref("pooled_width", "int"), b.ref("sampling_ratio", "int")
    ph_f, pw_f, ratio_f = b.to_float(ph_i), b.to_float(pw_i), b.to_float(ratio_i)
    scale, gamma = b.ref("spatial_scale", "float"), b.ref("gamma", "float")
    # channels-last table: one row per (n, y, x) holds all C channels
    n_i = b.dim(shape, 0)
    table = b("Reshape", _transposed_table(b, x, [0, 2, 3, 1], n_i), b("Concat", b.ints([-1]), b.unsq(c_i, 0), axis=0))

    def col(i):  # rois[:, i] as (K, 1, 1, 1)
        return b("Reshape", b("Gather", rois, b.i(i), axis=1), b.ints([-1, 1, 1, 1]))

    batch, is_inside = _batch_index(b, col(0), n_i)  # truncation toward zero, as the kernels' (int) cast
    half = b.f(0.5)
    sx = b("Sub", b("Mul", col(1), scale), half)
    sy = b("Sub", b("Mul", col(2), scale), half)
    roi_w = b("Sub", b("Sub", b("Mul", col(3), scale), half), sx)
    roi_h = b("Sub", b("Sub", b("Mul", col(4), scale), half), sy)
    bin_w, bin_h = b("Div", roi_w, pw_f), b("Div", roi_h, ph_f)
    # offset (K, 2, ph, pw) -> shifts (K, ph, pw, 1)
    off_x = b.unsq(b("Gather", offset, b.i(0), axis=1), 3)
    off_y = b.unsq(b("Gather", offset, b.i(1), axis=1), 3)
    sx = b("Add", sx, b("Mul", b("Mul", gamma, roi_w), off_x))
    sy = b("Add", sy, b("Mul", b("Mul", gamma, roi_h), off_y))
    zero_f, one_f = b.f(0.0), b.f(1.0)
    j = b("Reshape", b("Range", zero_f, pw_f, one_f), b.ints([1, 1, -1, 1]))
    i = b("Reshape", b("Range", zero_f, ph_f, one_f), b.ints([1, -1, 1, 1]))
    u = b("Reshape", b("Add", b("Range", zero_f, ratio_f, one_f), half), b.ints([1, 1, 1, -1]))
    # x (K, ph, pw, ratio), y (K, ph, pw, ratio)
    x_s = b("Add", b("Add", sx, b("Mul", j, bin_w)), b("Div", b("Mul", u, bin_w), ratio_f))
    y_s = b("Add", b("Add", sy, b("Mul", i, bin_h)), b("Div", b("Mul", u, bin_h), ratio_f))

    # RoIAlign's rule: a sample beyond one pixel outside the map is 0 (skipped); a NaN one is NaN
    def sample_corners(br: _Body, finite: bool) -> List[str]:
        x, y = (x_s, y_s) if finite else _outside_to_zero(br, is_inside, x_s, y_s)
        xs = _axis_samples(br, x, -1.0, 0.0, w_i, is_inside, finite)
        ys = _axis_samples(br, y, -1.0, 0.0, h_i, None, finite)
        if finite:
            return [xs.index, xs.weight, ys.index, ys.weight]
        taken = [br("ReduceMax", a.valid, br.ints([-1]), keepdims=0) for a in (xs, ys)]
        # the bins the kernels make NaN: a NaN weight, (K, ph, pw, 1), on their x corners
        nan_bin = br.unsq(br("Where", _nan_bins(br, xs, ys, *taken), br.f(float("nan")), br.f(0.0)), 3)
        return [xs.index, br("Add", xs.weight, nan_bin), ys.index, ys.weight]

    # sx, sy (offsets in) (K, ph, pw, 1), bin_w, bin_h (K, 1, 1, 1): the starts and steps of the samples
    nonfinite = _any_nonfinite(b, sx, sy, bin_w, bin_h)
    x_idx, x_wt, y_idx, y_wt = _positions(b, nonfinite, sample_corners, _POSITION_TYPES, "roi")
    rows = b("Mul", b("Add", b("Mul", batch, h_i), y_idx), w_i)                      # (K, ph, pw, 2r)
    flat = b("Add", b.unsq(rows, 4), b.unsq(x_idx, 3))                               # (K, ph, pw, 2r, 2r)
    pairs = b("Mul", b("Mul", ratio_i, ratio_i), b.i(4))                              # 4r^2 corner pairs per bin
    pooled = _weighted_rows(b, b("Gather", table, flat, axis=0), y_wt, x_wt, pairs, c_i)  # (K, ph, pw, C)
    pooled = b("Div", pooled, b("Mul", ratio_f, ratio_f))
    result = b("CastLike", b("Transpose", pooled, perm=[0, 3, 1, 2]), "X")
    return _function(DEFORM_ROI_POOL, ["X", "rois", "offset"], b, result, _ROI_ATTRIBUTES, opset,
                     f"{DOMAIN}::{DEFORM_ROI_POOL} in standard ONNX (opset {opset}), computed in float32.")


# Below this many channels per class, PS RoI pooling gathers single values; from it on, whole rows of channels.
# Why (ONNX Runtime 1.32, one CPU thread): Gather moves ~9 ns per row whatever its length, GatherElements ~1.4 ns
# per value, so rows of 1 (class-specific offsets, R-FCN's classification head) are 7x faster as single values,
# while rows of 42 channels are faster as rows.
_ROWS_FROM_CHANNELS = 8


class _Corners(NamedTuple):
    """The bilinear corners of every sample of every bin, shared by both ways of gathering them.

    x_idx, x_wt: (K, classes, P, P, 2S) column indices and weights (low corners, then high ones); y_idx, y_wt
    likewise for rows. base: (K, 1, P, P) the (image, gi, gj) block of each bin. The rest are int64 scalars
    (images: N).
    """
    x_idx: str
    x_wt: str
    y_idx: str
    y_wt: str
    base: str
    classes: str
    per_class: str
    height: str
    width: str
    pairs: str  # 4S^2, the (row corner, column corner) pairs of a bin
    images: str


def _psroi_scalar_gather(b: _Body, grouped: str, c: _Corners) -> str:
    """(K, classes, P, P, per_class) sums, each value fetched alone by GatherElements from a flat table laid out
    (n, gi, gj, class, channel, y, x): the fast way when a class has few channels."""
    table = b("Reshape", _transposed_table(b, grouped, [0, 3, 4, 1, 2, 5, 6], c.images), b.ints([-1]))
    class_range = b("Reshape", b("Range", b.i(0), c.classes, b.i(1)), b.ints([1, -1, 1, 1]))
    channel_range = b("Reshape", b("Range", b.i(0), c.per_class, b.i(1)), b.ints([1, 1, 1, 1, -1]))
    channel = b("Add", b("Mul", b.unsq(b("Add", b("Mul", c.base, c.classes), class_range), 4), c.per_class),
                channel_range)                                                        # (K, classes, P, P, per_class)
    # Small tensors first, then one broadcast to the full size: ONNX Runtime's broadcasting over short inner
    # axes costs ~2 ns per output value, so the full-size index tensor is built by a single Add.
    row = b("Add", b.unsq(b("Mul", channel, b("Mul", c.height, c.width)), 5), b.unsq(b("Mul", c.y_idx, c.width), 4))
    flat = b("Add", b.unsq(row, 6), b.unsq(c.x_idx, 4, 5))                           # (..., per_class, 2S, 2S)
    flat = b("Reshape", flat, _lead_then(b, c.x_idx, b.unsq(c.per_class, 0), b.unsq(c.pairs, 0)))
    values = b("Reshape", b("GatherElements", table, b("Reshape", flat, b.ints([-1])), axis=0), b("Shape", flat))
    weights = _pair_weights(b, c.y_wt, c.x_wt, c.pairs)                               # (..., 1, 4S^2)
    return b("ReduceSum", b("Mul", values, weights), b.ints([5]), keepdims=0)


def _psroi_row_gather(b: _Body, grouped: str, c: _Corners) -> str:
    """(K, classes, P, P, per_class) sums from whole rows of a class's channels (Gather on a table laid out
    (n, gi, gj, y, x, class) x channel), weighted by one small matrix product per bin."""
    table = b("Reshape", _transposed_table(b, grouped, [0, 3, 4, 5, 6, 1, 2], c.images),
              b("Concat", b.ints([-1]), b.unsq(c.per_class, 0), axis=0))
    class_range = b("Reshape", b("Range", b.i(0), c.classes, b.i(1)), b.ints([1, -1, 1, 1, 1]))
    rows = b("Add", b("Mul", b("Add", b("Mul", b.unsq(c.base, 4), c.height), c.y_idx), b("Mul", c.width, c.classes)),
             class_range)
    flat = b("Add", b.unsq(rows, 5), b.unsq(b("Mul", c.x_idx, c.classes), 4))         # (K, classes, P, P, 2S, 2S)
    return _weighted_rows(b, b("Gather", table, flat, axis=0), c.y_wt, c.x_wt, c.pairs, c.per_class)


def deform_psroi_pool_function(opset: int) -> onnx.FunctionProto:
    """Body of ``dcn_deploy::DeformPSRoIPool`` (standard ONNX at ``opset`` >= 19); formulas of deform_psroi_pool."""
    b = _Body()
    x = b.to_float("X")
    rois = b.to_float("rois")
    trans = b.to_float("trans")
    shape = b("Shape", x)
    n_i, h_i, w_i = b.dim(shape, 0), b.dim(shape, 2), b.dim(shape, 3)
    out_i, g_i, p_i = b.ref("output_dim", "int"), b.ref("group_size", "int"), b.ref("pooled_size", "int")
    s_i, part_attr = b.ref("sample_per_part", "int"), b.ref("part_size", "int")
    no_trans = b.ref("no_trans", "int")
    p_f, s_f = b.to_float(p_i), b.to_float(s_i)
    scale = b.ref("spatial_scale", "float")
    trans_std = b.ref("trans_std", "float")
    part_i = b("Where", b("Equal", part_attr, b.i(0)), p_i, part_attr)
    trans_shape = b("Shape", trans)
    k_i = b.dim(b("Shape", rois), 0)
    # no_trans pools as one class (the kernels' rule), whatever number of classes trans holds
    use_trans = b("Equal", no_trans, b.i(0))
    classes_i = b("Where", use_trans, b("Div", b.dim(trans_shape, 1), b.i(2)), b.i(1))
    per_class_i = b("Div", out_i, classes_i)

    def zero_trans(t: _Body) -> str:  # (K, 2, part, part) zeros
        return t("ConstantOfShape", t("Concat", t("Shape", trans, start=0, end=1), t.ints([2]),
                                      t("Shape", trans, start=2), axis=0))

    # no_trans reads no offsets, zeros stand for them (as in the kernels a NaN or infinite trans then changes
    # nothing: a 0 x trans_std factor would have kept it); else the classes' 2*classes channels
    trans = b("If", use_trans, then_branch=_branch("trans", lambda t: t(
                  "Slice", trans, t.ints([0]), t.unsq(t("Mul", classes_i, t.i(2)), 0), t.ints([1]))),
              else_branch=_branch("no_trans", zero_trans))

    def cat(*scalars):
        return b("Concat", *[b.unsq(s, 0) for s in scalars], axis=0)

    def col(i):  # rois[:, i] as (K, 1, 1, 1)
        return b("Reshape", b("Gather", rois, b.i(i), axis=1), b.ints([-1, 1, 1, 1]))

    def c_round(v):  # half away from zero, as C's round()
        return b("Mul", b("Sign", v), b("Floor", b("Add", b("Abs", v), b.f(0.5))))

    half, one_f, zero_f = b.f(0.5), b.f(1.0), b.f(0.0)
    batch, is_inside = _batch_index(b, col(0), n_i)
    sx = b("Sub", b("Mul", c_round(col(1)), scale), half)
    sy = b("Sub", b("Mul", c_round(col(2)), scale), half)
    ex = b("Sub", b("Mul", b("Add", c_round(col(3)), one_f), scale), half)
    ey = b("Sub", b("Mul", b("Add", c_round(col(4)), one_f), scale), half)
    tenth = b.f(0.1)

    def at_least_tenth(v):  # the kernels' `v > 0.1 ? v : 0.1`: 0.1 for NaN too (Max would keep NaN)
        return b("Where", b("Greater", v, tenth), v, tenth)

    roi_w, roi_h = at_least_tenth(b("Sub", ex, sx)), at_least_tenth(b("Sub", ey, sy))
    bin_w, bin_h = b("Div", roi_w, p_f), b("Div", roi_h, p_f)
    sub_w, sub_h = b("Div", bin_w, s_f), b("Div", bin_h, s_f)

    bins = b("Range", b.i(0), p_i, b.i(1))                                            # (P,) int64
    part_idx = b("Div", b("Mul", bins, part_i), p_i)                                  # floor(i * part / P)
    group_idx = b("Min", b("Div", b("Mul", bins, g_i), p_i), b("Sub", g_i, b.i(1)))
    # trans (K, 2*classes, part, part) -> (K, classes, 2, P, P)
    t = b("Reshape", trans, cat(k_i, classes_i, b.i(2), part_i, part_i))
    t = b("Gather", b("Gather", t, part_idx, axis=3), part_idx, axis=4)
    tx = b("Mul", b("Gather", t, b.i(0), axis=2), trans_std)                          # (K, classes, P, P)
    ty = b("Mul", b("Gather", t, b.i(1), axis=2), trans_std)
    bins_f = b.to_float(bins)
    j = b("Reshape", bins_f, b.ints([1, 1, 1, -1]))
    i = b("Reshape", bins_f, b.ints([1, 1, -1, 1]))
    wstart = b("Add", b("Add", b("Mul", j, bin_w), sx), b("Mul", tx, roi_w))          # (K, classes, P, P)
    hstart = b("Add", b("Add", b("Mul", i, bin_h), sy), b("Mul", ty, roi_h))
    samples = b("Reshape", b("Range", zero_f, s_f, one_f), b.ints([1, 1, 1, 1, -1]))
    x_s = b("Add", b.unsq(wstart, 4), b("Mul", samples, b.unsq(sub_w, 4)))           # (K, classes, P, P, S)
    y_s = b("Add", b.unsq(hstart, 4), b("Mul", samples, b.unsq(sub_h, 4)))

    # the kernels' rule: a sample outside [-0.5, size - 0.5] is skipped; a NaN one is taken (and is NaN)
    def sample_corners(br: _Body, finite: bool) -> List[str]:
        x, y = (x_s, y_s) if finite else _outside_to_zero(br, br.unsq(is_inside, 4), x_s, y_s)
        xs = _axis_samples(br, x, -0.5, -0.5, w_i, br.unsq(is_inside, 4), finite)
        ys = _axis_samples(br, y, -0.5, -0.5, h_i, None, finite)
        taken = [br("ReduceSum", a.valid, br.ints([4]), keepdims=0) for a in (xs, ys)]  # (K, classes, P, P)
        divisor = br("Max", br("Mul", *taken), br.f(1.0))  # the mean over the samples taken, 0 where none is
        if not finite:  # NaN (a NaN divisor) in the bins the kernels make NaN
            divisor = br("Where", _nan_bins(br, xs, ys, *taken), br.f(float("nan")), divisor)
        return [xs.index, xs.weight, ys.index, ys.weight, divisor]

    # wstart, hstart (K, classes, P, P), sub_w, sub_h (K, 1, 1, 1): the starts and steps of the samples
    nonfinite = _any_nonfinite(b, wstart, hstart, sub_w, sub_h)
    x_idx, x_wt, y_idx, y_wt, divisor = _positions(b, nonfinite, sample_corners,
                                                   _POSITION_TYPES + [TensorProto.FLOAT], "psroi")
    gi = b("Reshape", group_idx, b.ints([1, 1, -1, 1]))
    gj = b("Reshape", group_idx, b.ints([1, 1, 1, -1]))
    base = b("Add", b("Mul", b("Add", b("Mul", batch, g_i), gi), g_i), gj)             # (K, 1, P, P)
    grouped = b("Reshape", x, cat(n_i, classes_i, per_class_i, g_i, g_i, h_i, w_i))
    two_s = b("Mul", s_i, b.i(2))
    corners = _Corners(x_idx, x_wt, y_idx, y_wt, base, classes_i, per_class_i, h_i, w_i, b("Mul", two_s, two_s),
                       n_i)
    small = b("Less", per_class_i, b.i(_ROWS_FROM_CHANNELS))
    pooled = b("If", small, then_branch=_branch("scalar", lambda t: _psroi_scalar_gather(t, grouped, corners)),
               else_branch=_branch("rows", lambda t: _psroi_row_gather(t, grouped, corners)))
    pooled = b("Div", pooled, b.unsq(divisor, 4))
    pooled = b("Transpose", pooled, perm=[0, 1, 4, 2, 3])
    result = b("CastLike", b("Reshape", pooled, cat(k_i, out_i, p_i, p_i)), "X")
    return _function(DEFORM_PSROI_POOL, ["X", "rois", "trans"], b, result, _PSROI_ATTRIBUTES, opset,
                     f"{DOMAIN}::{DEFORM_PSROI_POOL} in standard ONNX (opset {opset}), computed in float32.")


# --------------------------------------------------------------------------------------------------------------
# Exporter hooks
# --------------------------------------------------------------------------------------------------------------

def _adaptive_fix(how: str) -> str:
    """``how`` to fix the sample count, then how to choose it and what it changes."""
    return (f"{how}. Adaptive sampling takes ceil(RoI side x spatial_scale / output side) points per bin side: choose "
            "N near that for your typical boxes. The outputs then differ from the adaptive ones (the more the larger "
            "the boxes), so re-check accuracy on real data; or keep adaptive sampling in PyTorch")


def _layer_fix() -> str:
    """For DeformRoIPool layers (worded for the CLI inside dcn-deploy, which has an option for them)."""
    return _adaptive_fix(for_reader(
        "set a fixed sampling_ratio on the layer before export (layer.sampling_ratio = N, or "
        "dcn_deploy.ops.fix_adaptive_sampling(model, N) for all of them; CLI: --roi-sampling-ratio N)",
        "give --roi-sampling-ratio N"))


def check_model(model) -> None:
    """Raise :class:`AdaptiveSamplingError` naming every DeformRoIPool layer of ``model`` with sampling_ratio=0.

    sampling_ratio=0 samples ceil(roi size / output size) points per bin side, a number that depends on each RoI
    at run time; the ONNX function body (and a fixed-size engine) need it fixed.
    """
    import torch

    from ..ops.roi_modules import adaptive_sampling_layers

    if not isinstance(model, torch.nn.Module):
        return
    bad = [repr(name or type(model).__name__) for name in adaptive_sampling_layers(model)]
    if bad:
        raise AdaptiveSamplingError(
            f"DeformRoIPool layer(s) {', '.join(bad)} use sampling_ratio=0 (adaptive: the samples per bin depend on "
            f"each RoI's size), which has no static ONNX form; {_layer_fix()}")


def _make_roi_pool_translation(standard: bool, opset: int) -> Callable:
    import onnxscript

    op = onnxscript.values.Opset("", opset)
    ours = onnxscript.values.Opset(DOMAIN, VERSION)

    def deform_roi_pool(input, rois, offset=None, output_size=(1, 1), spatial_scale=1.0, sampling_ratio=0, gamma=0.1):
        if int(sampling_ratio) == 0:
            raise AdaptiveSamplingError(
                f"deform_roi_pool with sampling_ratio=0 (adaptive: the samples per bin depend on each RoI's size) "
                "has no static ONNX form (a call in the model's code, which no layer setting or option reaches); "
                + _adaptive_fix("pass a fixed sampling_ratio N >= 1 in that deform_roi_pool call"))
        ph, pw = int(output_size[0]), int(output_size[1])
        if offset is None:  # plain RoIAlign: zero offsets give exactly the same result
            count = op.Shape(rois, start=0, end=1)
            offset = op.CastLike(op.ConstantOfShape(op.Concat(count, op.Constant(value_ints=[2, ph, pw]), axis=0)),
                                 input)
        return ours.DeformRoIPool(input, rois, offset, pooled_height=ph, pooled_width=pw,
                                  spatial_scale=float(spatial_scale), sampling_ratio=int(sampling_ratio),
                                  gamma=float(gamma))

    return deform_roi_pool


def _make_psroi_pool_translation(standard: bool, opset: int) -> Callable:
    import onnxscript

    op = onnxscript.values.Opset("", opset)
    ours = onnxscript.values.Opset(DOMAIN, VERSION)

    def deform_psroi_pool(input, rois, trans=None, spatial_scale=1.0, output_dim=1, group_size=1, pooled_size=1,
                          part_size=0, sample_per_part=1, trans_std=0.0, no_trans=False):
        part = int(part_size) or int(pooled_size)
        if trans is None or no_trans:  # no offsets: zero trans of one class gives exactly the same result
            count = op.Shape(rois, start=0, end=1)
            trans = op.CastLike(op.ConstantOfShape(op.Concat(count, op.Constant(value_ints=[2, part, part]), axis=0)),
                                input)
        return ours.DeformPSRoIPool(input, rois, trans, spatial_scale=float(spatial_scale), output_dim=int(output_dim),
                                    group_size=int(group_size), pooled_size=int(pooled_size), part_size=part,
                                    sample_per_part=int(sample_per_part), trans_std=float(trans_std),
                                    no_trans=int(bool(no_trans)))

    return deform_psroi_pool


register_op(OpDefinition(
    name=DEFORM_ROI_POOL,
    make_schema=deform_roi_pool_schema,
    make_function=deform_roi_pool_function,
    torch_op="dcn_deploy::deform_roi_pool",
    make_translation=_make_roi_pool_translation,
    check_model=check_model,
))
register_op(OpDefinition(
    name=DEFORM_PSROI_POOL,
    make_schema=deform_psroi_pool_schema,
    make_function=deform_psroi_pool_function,
    torch_op="dcn_deploy::deform_psroi_pool",
    make_translation=_make_psroi_pool_translation,
))
