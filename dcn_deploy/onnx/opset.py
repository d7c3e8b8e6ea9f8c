"""The ``dcn_deploy`` ONNX op set (domain ``dcn_deploy``, version 1): schemas, function bodies, exporter hooks.

docs/ops.md is the description of every op; this module turns it into code:

- an ``onnx.defs.OpSchema`` per op, registered on import (idempotently), so ``onnx.checker`` (full check) and
  ``onnx.shape_inference`` understand files that use the ops;
- a ``FunctionProto`` per op whose body is standard ONNX, stored in every exported model (``model.functions``),
  so a stock ONNX Runtime (>= 1.25) runs the file by inlining it, and TensorRT's parser falls back to it when
  our plugin is not loaded. onnx's Python ``OpSchema`` cannot carry a function body, hence ``model.functions``;
  the body refers to the node's attributes (``ref_attr_name``), so one function serves every node;
- for each op, how the PyTorch exporter maps our torch op onto the node (:attr:`OpDefinition.make_translation`).

Other op families register themselves the same way: a module ``dcn_deploy/onnx/<family>_opset.py`` that calls
:func:`register_op` at import and is listed in ``_EXTENSION_MODULES``; :func:`definitions` imports them.
Importing this module needs onnx only (onnxscript is imported inside the translation factories).
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Sequence

import onnx
from onnx import defs, helper

from ..ops.spec import ShapeError, conv_output_size
from .schema_inference import inference_error, known_size, tensor_dims

__all__ = [
    "DOMAIN", "VERSION", "MIN_OPSET", "BFLOAT16_MIN_OPSET", "FLOAT_TYPES", "OpDefinition", "ExportRefusal", "register_op",
    "definitions", "get_definition", "attach_functions", "write_default_attributes", "used_ops", "is_deformable_node",
    "all_nodes", "subgraphs", "with_subgraphs", "domain_nodes", "default_opset",
    "deform_conv_function", "deform_conv_schema", "plugin_attribute_schemas", "TF32_ATTRIBUTE",
]

DOMAIN = "dcn_deploy"
VERSION = 1
# Standard DeformConv exists from opset 19; bfloat16 was added to it in opset 22.
MIN_OPSET = 19
BFLOAT16_MIN_OPSET = 22
FLOAT_TYPES = ("tensor(float)", "tensor(float16)", "tensor(double)", "tensor(bfloat16)")

# Modules of other op families; each calls register_op at import.
_EXTENSION_MODULES = ("dcn_deploy.onnx.roi_opset",)


@dataclass(frozen=True)
class OpDefinition:
    """Everything the project knows about one op of the ``dcn_deploy`` domain.

    Attributes:
        name: op_type in the ``dcn_deploy`` domain (and the TensorRT plugin creator's name).
        make_schema: builds the ``onnx.defs.OpSchema`` (domain ``dcn_deploy``, since ``VERSION``).
        make_function: ``make_function(opset) -> FunctionProto`` whose body uses the default domain at ``opset``
            (the model's), with attributes by reference to the node's.
        torch_op: qualified name of the torch op the exporter maps, e.g. ``"dcn_deploy::deform_conv2d"``
            (its ``.default`` overload), or None when the op is not produced by the exporter.
        make_translation: ``make_translation(standard, opset) -> callable`` for ``torch.onnx.export``'s
            ``custom_translation_table``; ``standard=True`` asks for standard ONNX ops instead of our node.
        check_model: ``check_model(model)`` runs before export and raises :class:`ExportRefusal` naming the layer
            when the model uses the op in a way ONNX cannot express (None: nothing to check).
    """

    name: str
    make_schema: Callable[[], "defs.OpSchema"]
    make_function: Callable[[int], onnx.FunctionProto]
    torch_op: Optional[str] = None
    make_translation: Optional[Callable[[bool, int], Callable]] = None
    check_model: Optional[Callable[[object], None]] = None


class ExportRefusal(ValueError):
    """An op's exporter hook refuses a use that has no ONNX form; the message names the layer and the fix."""


_REGISTRY: Dict[str, OpDefinition] = {}
_extensions_loaded = False


def register_op(definition: OpDefinition) -> None:
    """Register ``definition``'s schema with onnx (once per process) and remember the definition.

    Safe to call again with the same op: the schema is registered only if onnx does not know it yet
    (``onnx.defs.register_schema`` refuses a second registration of the same name/version/domain).
    """
    if not defs.has(definition.name, VERSION, DOMAIN):
        defs.register_schema(definition.make_schema())
    _REGISTRY[definition.name] = definition


def definitions() -> List[OpDefinition]:
    """Every registered op, after importing the extension op families (:data:`_EXTENSION_MODULES`)."""
    global _extensions_loaded
    if not _extensions_loaded:
        for module in _EXTENSION_MODULES:
            importlib.import_module(module)
        _extensions_loaded = True
    return list(_REGISTRY.values())


def get_definition(name: str) -> OpDefinition:
    for definition in definitions():
        if definition.name == name:
            return definition
    raise KeyError(f"no op {name!r} in the {DOMAIN} op set; known: {sorted(_REGISTRY)}")


# --------------------------------------------------------------------------------------------------------------
# Model-level helpers
# --------------------------------------------------------------------------------------------------------------

def all_nodes(graph: onnx.GraphProto) -> Iterable[onnx.NodeProto]:
    """Nodes of ``graph`` and of its subgraphs (If/Loop/Scan bodies)."""
    return with_subgraphs(graph.node)


def subgraphs(node: onnx.NodeProto) -> Iterator[onnx.GraphProto]:
    """The graphs ``node`` holds in its attributes (an If's branches, a Loop's or Scan's body)."""
    for attr in node.attribute:
        if attr.type == onnx.AttributeProto.GRAPH:
            yield attr.g
        elif attr.type == onnx.AttributeProto.GRAPHS:
            yield from attr.graphs


def with_subgraphs(nodes: Iterable[onnx.NodeProto]) -> Iterator[onnx.NodeProto]:
    """``nodes`` and the nodes of their subgraphs, each node before those of its subgraphs."""
    for node in nodes:
        yield node
        for graph in subgraphs(node):
            yield from all_nodes(graph)


def domain_nodes(model: onnx.ModelProto, domain: str = DOMAIN) -> Iterator[onnx.NodeProto]:
    """The nodes of ``domain`` in the model's graph, its subgraphs and the bodies of its local functions (an
    exporter may keep a module as a function; ONNX Runtime and TensorRT's parser inline them). The bodies of
    ``domain``'s own functions are skipped: ours are standard ONNX."""
    for node in all_nodes(model.graph):
        if node.domain == domain:
            yield node
    for function in model.functions:
        if function.domain != domain:
            yield from (node for node in with_subgraphs(function.node) if node.domain == domain)


def is_deformable_node(node: onnx.NodeProto) -> bool:
    """A node of our domain, or a standard ``DeformConv``."""
    return node.domain == DOMAIN or (node.domain in ("", "ai.onnx") and node.op_type == "DeformConv")


def used_ops(model: onnx.ModelProto, domain: str = DOMAIN) -> List[str]:
    """op_types of ``domain`` (ours by default) the model uses, sorted: :func:`domain_nodes`' op types."""
    return sorted({n.op_type for n in domain_nodes(model, domain)})


def default_opset(model: onnx.ModelProto) -> int:
    """The version of the default (``ai.onnx``) domain the model imports."""
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return imp.version
    raise ValueError("the model imports no default ONNX opset; it cannot hold standard ops")


def attach_functions(model: onnx.ModelProto) -> onnx.ModelProto:
    """Give ``model`` (in place) the function body of every ``dcn_deploy`` op it uses and the domain import, and
    write onto each of its ``dcn_deploy`` nodes the attributes it leaves at their defaults
    (:func:`write_default_attributes`).

    The bodies use the model's default opset, which must be >= 19 (>= 22 when a body runs in bfloat16).
    Functions already present are replaced, so calling this twice is harmless. Returns ``model``.
    """
    names = used_ops(model)
    if not names:
        return model
    opset = default_opset(model)
    if opset < MIN_OPSET:
        raise ValueError(f"the model imports ONNX opset {opset}; the {DOMAIN} function bodies need >= {MIN_OPSET}")
    kept = [f for f in model.functions if not (f.domain == DOMAIN and f.name in names)]
    del model.functions[:]
    model.functions.extend(kept)
    for name in names:
        model.functions.append(get_definition(name).make_function(opset))
    if not any(imp.domain == DOMAIN for imp in model.opset_import):
        model.opset_import.append(helper.make_opsetid(DOMAIN, VERSION))
    write_default_attributes(model)
    return model


def write_default_attributes(model: onnx.ModelProto) -> onnx.ModelProto:
    """Write onto every ``dcn_deploy`` node of ``model`` (in place, :func:`domain_nodes`) each attribute it leaves
    out that its function in ``model.functions`` gives a default (``FunctionProto.attribute_proto``, built from the
    same table as the op's schema). Returns ``model``.

    Why: ONNX Runtime and onnx's shape inference apply a function's declared defaults, but onnx's inliner
    (``onnx.inliner.inline_local_functions``; onnx 1.23.2 and its main branch when this was written) does not: it
    deletes a reference (``ref_attr_name``) to an attribute the call leaves out, which leaves the RoI pooling
    bodies' ``Constant`` nodes with no value, so the inlined model fails the checker and ONNX Runtime (DeformConv2d's
    body survives only because standard DeformConv's own defaults equal ours). Nothing in a body can stand in for a
    missing value (Constant has no default), so the call must state it. A node whose op's function is not in the
    model is left as it is.
    """
    functions = {f.name: f for f in model.functions if f.domain == DOMAIN}
    for node in domain_nodes(model):
        function = functions.get(node.op_type)
        if function is None:
            continue
        given = {a.name for a in node.attribute}
        node.attribute.extend(a for a in function.attribute_proto if a.name not in given)
    return model


# --------------------------------------------------------------------------------------------------------------
# DeformConv2d
# --------------------------------------------------------------------------------------------------------------

DEFORM_CONV = "DeformConv2d"
_DEFORM_CONV_INPUTS = ("X", "W", "offset", "B", "mask")
# DeformConv2d's optional attribute for TensorRT only, never exported: the build's TF32 setting as our plugin's field
# (1: float32 products may run on TF32 tensor cores; absent or 0: IEEE float32). plugin_routing writes it.
TF32_ATTRIBUTE = "allow_tf32"
# Integer attributes and their defaults; the names are the TensorRT plugin's field names.
_DEFORM_CONV_INT_ATTRIBUTES = {
    "strides": [1, 1],
    "pads": [0, 0, 0, 0],
    "dilations": [1, 1],
    "group": 1,
    "offset_group": 1,
}

_DEFORM_CONV_DOC = """Deformable convolution v1 (no mask) or v2 (modulated), torchvision's and ONNX DeformConv's semantics.
X (N, C, H, W); W (oC, C/group, kH, kW); offset (N, 2*offset_group*kH*kW, oH, oW), channel ((g*kH+i)*kW+j)*2 is dy
and +1 is dx; optional B (oC); optional mask (N, offset_group*kH*kW, oH, oW). Y (N, oC, oH, oW). See docs/ops.md."""


def plugin_attribute_schemas() -> List["defs.OpSchema.Attribute"]:
    """The optional attributes that route a ``dcn_deploy`` node to our TensorRT plugin (every op's schema has
    them; :mod:`dcn_deploy.onnx.plugin_routing` sets them)."""
    attribute = defs.OpSchema.Attribute
    return [attribute("plugin_namespace", defs.OpSchema.AttrType.STRING,
                      "TensorRT: set to 'dcn_deploy' to route the node to our plugin", required=False),
            attribute("plugin_version", defs.OpSchema.AttrType.STRING,
                      "TensorRT: plugin version (default '1')", required=False)]


def deform_conv_schema() -> "defs.OpSchema":
    """The OpSchema of ``dcn_deploy::DeformConv2d`` version 1, with its type-and-shape inference."""
    param = defs.OpSchema.FormalParameter
    optional = defs.OpSchema.FormalParameterOption.Optional
    attribute = defs.OpSchema.Attribute
    docs_by_attr = {
        "strides": "(stride_h, stride_w)",
        "pads": "(top, left, bottom, right)",
        "dilations": "(dilation_h, dilation_w)",
        "group": "convolution groups",
        "offset_group": "offset groups (input-channel blocks sharing one set of offsets)",
    }
    attributes = [attribute(name, helper.make_attribute(name, default), docs_by_attr[name])
                  for name, default in _DEFORM_CONV_INT_ATTRIBUTES.items()]
    attributes += plugin_attribute_schemas()
    attributes.append(attribute(TF32_ATTRIBUTE, defs.OpSchema.AttrType.INT,
                                "TensorRT: set by the build from its TF32 setting; 1 lets our plugin run float32 "
                                "products on TF32 tensor cores, absent or 0 keeps IEEE float32", required=False))
    schema = defs.OpSchema(
        DEFORM_CONV, DOMAIN, VERSION, _DEFORM_CONV_DOC,
        inputs=[param("X", "T", "input (N, C, H, W)"),
                param("W", "T", "weight (oC, C/group, kH, kW)"),
                param("offset", "T", "offsets (N, 2*offset_group*kH*kW, oH, oW)"),
                param("B", "T", "bias (oC)", param_option=optional),
                param("mask", "T", "modulation (N, offset_group*kH*kW, oH, oW)", param_option=optional)],
        outputs=[param("Y", "T", "output (N, oC, oH, oW)")],
        type_constraints=[("T", list(FLOAT_TYPES), "floating-point tensors")],
        attributes=attributes,
        node_determinism=defs.OpSchema.NodeDeterminism.Deterministic,
    )
    schema.set_type_and_shape_inference_function(_infer_deform_conv)
    return schema


def _attribute_value(ctx, name: str):
    attr = ctx.get_attribute(name)
    if attr is None:
        return _DEFORM_CONV_INT_ATTRIBUTES[name]
    value = helper.get_attribute_value(attr)
    return list(value) if isinstance(value, (list, tuple)) or hasattr(value, "__len__") else value


def _inference_error(message: str) -> Exception:
    return inference_error(DOMAIN, DEFORM_CONV, message)


def _check_rank(dims, name: str, rank: int, layout: str) -> None:
    if dims is not None and len(dims) != rank:
        raise _inference_error(f"input {name} must be {rank}-D {layout}, got rank {len(dims)}")


def _infer_deform_conv(ctx) -> None:
    """Output type = X's element type; shape (N, oC, oH, oW) from X, W and the attributes (or from offset).

    Checks every relation between known dimensions (channels vs group/offset_group, offset/mask/bias sizes)
    and raises an InferenceError naming the input when one does not hold. Unknown dimensions stay unknown.
    """
    n_inputs = ctx.get_num_inputs()
    types = [ctx.get_input_type(i) if i < n_inputs and ctx.has_input(i) else None for i in range(5)]
    x, w, off, b, mask = (tensor_dims(t) for t in types)
    _check_rank(x, "X", 4, "(N, C, H, W)")
    _check_rank(w, "W", 4, "(oC, C/group, kH, kW)")
    _check_rank(off, "offset", 4, "(N, 2*offset_group*kH*kW, oH, oW)")
    _check_rank(b, "B", 1, "(oC,)")
    _check_rank(mask, "mask", 4, "(N, offset_group*kH*kW, oH, oW)")
    strides, pads, dilations, group, offset_group = _deform_conv_attributes(ctx)
    _check_channels(x, w, off, b, mask, group, offset_group)
    spatial = _spatial_output_dims(x, w, off, mask, strides, pads, dilations)

    batch = onnx.TensorShapeProto.Dimension()
    if x is not None:
        batch.CopyFrom(x[0])
    elif off is not None:
        batch.CopyFrom(off[0])
    channels = onnx.TensorShapeProto.Dimension()
    if w is not None:
        channels.CopyFrom(w[0])

    elem_type = next((t.tensor_type.elem_type for t in types if t is not None and t.HasField("tensor_type")),
                     onnx.TensorProto.UNDEFINED)
    output = onnx.TypeProto()
    output.tensor_type.elem_type = elem_type
    if x is not None or w is not None or off is not None:
        output.tensor_type.shape.dim.extend([batch, channels] + spatial)
    ctx.set_output_type(0, output)


def _deform_conv_attributes(ctx) -> tuple:
    """``(strides, pads, dilations, group, offset_group)`` of the node, checked for length and range."""
    strides, pads, dilations = (_attribute_value(ctx, a) for a in ("strides", "pads", "dilations"))
    group, offset_group = _attribute_value(ctx, "group"), _attribute_value(ctx, "offset_group")
    if len(strides) != 2 or len(dilations) != 2 or len(pads) != 4:
        raise _inference_error(f"strides and dilations need 2 values and pads 4 (top, left, bottom, right); "
                               f"got strides={strides}, dilations={dilations}, pads={pads}")
    if min(strides) < 1 or min(dilations) < 1 or min(pads) < 0 or group < 1 or offset_group < 1:
        raise _inference_error(f"need strides, dilations, group, offset_group >= 1 and pads >= 0; got strides={strides}, "
                               f"dilations={dilations}, pads={pads}, group={group}, offset_group={offset_group}")
    return strides, pads, dilations, group, offset_group


def _check_channels(x, w, off, b, mask, group: int, offset_group: int) -> None:
    """The channel counts of X, W, B, offset and mask agree with each other and the groups, where known."""
    c = known_size(x[1]) if x else None
    oc = known_size(w[0]) if w else None
    c_per_group = known_size(w[1]) if w else None
    kh, kw = (known_size(w[2]), known_size(w[3])) if w else (None, None)
    if c is not None and c_per_group is not None and c != c_per_group * group:
        raise _inference_error(f"X has {c} channels but W.shape[1] * group = {c_per_group} * {group}; "
                               "set group = C / W.shape[1]")
    if oc is not None and oc % group:
        raise _inference_error(f"W.shape[0] ({oc} output channels) must be divisible by group ({group})")
    if c is not None and c % offset_group:
        raise _inference_error(f"X channels ({c}) must be divisible by offset_group ({offset_group})")
    if b is not None and oc is not None and known_size(b[0]) not in (None, oc):
        raise _inference_error(f"B must have shape ({oc},), got ({known_size(b[0])},)")
    if kh is not None and kw is not None:
        points = offset_group * kh * kw
        if off is not None and known_size(off[1]) not in (None, 2 * points):
            raise _inference_error(f"offset must have 2*offset_group*kH*kW = {2 * points} channels, got {known_size(off[1])}")
        if mask is not None and known_size(mask[1]) not in (None, points):
            raise _inference_error(f"mask must have offset_group*kH*kW = {points} channels, got {known_size(mask[1])}")


def _spatial_output_dims(x, w, off, mask, strides, pads, dilations) -> List[onnx.TensorShapeProto.Dimension]:
    """(oH, oW): computed when X's size and the kernel are known (and checked against offset and mask), else
    taken from offset, else unknown."""
    kh, kw = (known_size(w[2]), known_size(w[3])) if w else (None, None)
    spatial: List[onnx.TensorShapeProto.Dimension] = []
    for axis, kernel in ((0, kh), (1, kw)):
        dim = onnx.TensorShapeProto.Dimension()
        size = known_size(x[2 + axis]) if x else None
        if size is not None and kernel is not None:
            out = conv_output_size(size, kernel, strides[axis], pads[axis], pads[axis + 2], dilations[axis])
            if out < 1:
                raise _inference_error(f"the output would be empty along {'HW'[axis]}: input size {size}, kernel {kernel}, "
                                       f"stride {strides[axis]}, pads {pads[axis]}/{pads[axis + 2]}, dilation {dilations[axis]}")
            for name, dims in (("offset", off), ("mask", mask)):
                if dims is not None and known_size(dims[2 + axis]) not in (None, out):
                    raise _inference_error(f"{name} {'HW'[axis]} ({known_size(dims[2 + axis])}) must equal the output size {out}")
            dim.dim_value = out
        elif off is not None:
            dim.CopyFrom(off[2 + axis])
        spatial.append(dim)
    return spatial


def deform_conv_function(opset: int) -> onnx.FunctionProto:
    """The body of ``dcn_deploy::DeformConv2d``: one standard ``DeformConv`` at ``opset`` (>= 19).

    Attributes are references to the calling node's (``ref_attr_name``), with the op's defaults declared on
    the function, so one function serves every node. ``plugin_namespace``/``plugin_version`` and
    ``allow_tf32`` are for TensorRT only and are not passed on. Missing optional inputs (B, mask) stay missing in the body.
    """
    if opset < MIN_OPSET:
        raise ValueError(f"DeformConv needs ONNX opset >= {MIN_OPSET}, got {opset}")
    body = helper.make_node("DeformConv", list(_DEFORM_CONV_INPUTS), ["Y"], name="DeformConv")
    for name, default in _DEFORM_CONV_INT_ATTRIBUTES.items():
        ref = onnx.AttributeProto()
        ref.name = name
        ref.ref_attr_name = name
        ref.type = onnx.AttributeProto.INTS if isinstance(default, list) else onnx.AttributeProto.INT
        body.attribute.append(ref)
    return helper.make_function(
        DOMAIN, DEFORM_CONV, list(_DEFORM_CONV_INPUTS), ["Y"], [body],
        opset_imports=[helper.make_opsetid("", opset)],
        attribute_protos=[helper.make_attribute(name, default) for name, default in _DEFORM_CONV_INT_ATTRIBUTES.items()],
        doc_string=f"{DOMAIN}::{DEFORM_CONV} as standard ONNX DeformConv (opset {opset}).",
    )


def deform_conv_attributes(input_channels: int, weight_shape: Sequence[int], offset_channels: int,
                           stride: Sequence[int], padding: Sequence[int], dilation: Sequence[int]) -> dict:
    """Node attributes for one call of ``dcn_deploy.deform_conv2d`` (torchvision's argument convention).

    ``group`` and ``offset_group`` are inferred from the channel counts as the torch op does; padding (pad_h,
    pad_w) is applied on both sides, so ``pads = [pad_h, pad_w, pad_h, pad_w]``.
    """
    _, c_per_group, kh, kw = (int(v) for v in weight_shape)
    if input_channels % c_per_group:
        raise ShapeError(f"input channels ({input_channels}) must be a multiple of weight.shape[1] ({c_per_group})")
    if offset_channels % (2 * kh * kw):
        raise ShapeError(f"offset channels ({offset_channels}) must be a multiple of 2*kH*kW = {2 * kh * kw}")
    return {
        "strides": [int(stride[0]), int(stride[1])],
        "pads": [int(padding[0]), int(padding[1]), int(padding[0]), int(padding[1])],
        "dilations": [int(dilation[0]), int(dilation[1])],
        "group": input_channels // c_per_group,
        "offset_group": offset_channels // (2 * kh * kw),
    }


def _static_channels(value, name: str) -> int:
    shape = getattr(value, "shape", None)
    dim = None if shape is None or len(shape) < 2 else shape[1]
    if not isinstance(dim, int):
        raise ValueError(f"{name} has a dynamic channel dimension ({dim}); the exporter needs it fixed to compute "
                         "group/offset_group: keep dynamic dimensions to batch, height and width")
    return dim


def _make_deform_conv_translation(standard: bool, opset: int) -> Callable:
    """A translation of ``torch.ops.dcn_deploy.deform_conv2d.default`` for torch.onnx's dynamo exporter."""
    import numpy as np
    import onnxscript
    from onnx import numpy_helper

    op = onnxscript.values.Opset("", opset)
    ours = onnxscript.values.Opset(DOMAIN, VERSION)

    def deform_conv2d(input, offset, weight, bias=None, mask=None, stride=(1, 1), padding=(0, 0), dilation=(1, 1)):
        weight_shape = [int(d) for d in weight.shape]
        attrs = deform_conv_attributes(_static_channels(input, "input"), weight_shape,
                                       _static_channels(offset, "offset"), stride, padding, dilation)
        inputs = [input, weight, offset]
        if bias is not None or mask is not None:
            if bias is None:
                # No holes in the input list (docs/ops.md): a mask without a bias gets a zero bias.
                zeros = numpy_helper.from_array(np.zeros(weight_shape[0], np.float32), "zero_bias")
                bias = op.CastLike(op.Constant(value=zeros), input)
            inputs.append(bias)
        if mask is not None:
            inputs.append(mask)
        if standard:
            return op.DeformConv(*inputs, kernel_shape=weight_shape[2:], **attrs)
        return ours.DeformConv2d(*inputs, **attrs)

    return deform_conv2d


register_op(OpDefinition(
    name=DEFORM_CONV,
    make_schema=deform_conv_schema,
    make_function=deform_conv_function,
    torch_op="dcn_deploy::deform_conv2d",
    make_translation=_make_deform_conv_translation,
))
