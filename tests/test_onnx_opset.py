"""The dcn_deploy ONNX op set: schema registration, shape inference, function bodies, checker and stock ORT.

Models here are built by hand with onnx.helper (no torch export), so these tests are fast; the exporter's
output is tested in test_export.py.
"""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, inliner, numpy_helper

from dcn_deploy.onnx import opset
from dcn_deploy.ops.spec import conv_output_size

ort = pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")


def _deform_model(x_shape, w_shape, off_shape, b_shape=None, mask_shape=None, elem=TensorProto.FLOAT,
                  model_opset=19, initial=None, **attrs) -> onnx.ModelProto:
    """One dcn_deploy::DeformConv2d node; every input is a graph input unless given in ``initial`` (name -> array).

    A mask without a bias gets a zero bias, as the exporter writes it (no holes in the input list).
    """
    initial = initial or {}
    names, shapes = ["X", "W", "offset"], [x_shape, w_shape, off_shape]
    if b_shape is not None or mask_shape is not None:
        names.append("B")
        shapes.append(b_shape if b_shape is not None else [w_shape[0]])
    if mask_shape is not None:
        names.append("mask")
        shapes.append(mask_shape)
    node = helper.make_node("DeformConv2d", names, ["Y"], domain=opset.DOMAIN, name="dcn", **attrs)
    inputs = [helper.make_tensor_value_info(n, elem, s) for n, s in zip(names, shapes) if n not in initial]
    inits = [numpy_helper.from_array(v, n) for n, v in initial.items()]
    graph = helper.make_graph([node], "g", inputs, [helper.make_tensor_value_info("Y", elem, [None] * 4)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", model_opset)])
    model.ir_version = 10
    return opset.attach_functions(model)


def _inferred_output(model: onnx.ModelProto):
    out = onnx.shape_inference.infer_shapes(model, strict_mode=True, check_type=True).graph.output[0].type.tensor_type
    return out.elem_type, [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in out.shape.dim]


# --- schema --------------------------------------------------------------------------------------------------------

def test_schema_is_registered_with_the_documented_interface():
    schema = onnx.defs.get_schema("DeformConv2d", opset.VERSION, opset.DOMAIN)
    assert [i.name for i in schema.inputs] == ["X", "W", "offset", "B", "mask"]
    assert schema.min_input == 3 and schema.max_input == 5
    assert set(schema.attributes) == {"strides", "pads", "dilations", "group", "offset_group",
                                      "plugin_namespace", "plugin_version", "allow_tf32"}
    assert not schema.attributes["plugin_namespace"].required
    # the build's TF32 setting for our TensorRT plugin (plugin_routing writes it): optional, an int, not in the body
    assert not schema.attributes["allow_tf32"].required
    assert schema.attributes["allow_tf32"].type == onnx.defs.OpSchema.AttrType.INT
    allowed = set(schema.type_constraints[0].allowed_type_strs)
    assert allowed == {"tensor(float)", "tensor(float16)", "tensor(double)", "tensor(bfloat16)"}
    assert helper.get_attribute_value(schema.attributes["pads"].default_value) == [0, 0, 0, 0]


def test_registration_happens_on_import_and_is_idempotent():
    code = ("import onnx, dcn_deploy.onnx.opset as o; assert onnx.defs.has('DeformConv2d', 1, 'dcn_deploy'); "
            "d = o.get_definition('DeformConv2d'); o.register_op(d); o.register_op(d); "
            "print([x.name for x in o.definitions()].count('DeformConv2d'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "1"
    definition = opset.get_definition("DeformConv2d")
    opset.register_op(definition)  # again in this process, where the schema is already known to onnx
    assert onnx.defs.has("DeformConv2d", opset.VERSION, opset.DOMAIN)


def test_unknown_op_name_lists_the_known_ones():
    with pytest.raises(KeyError, match="DeformConv2d"):
        opset.get_definition("NoSuchOp")


# --- shape inference -----------------------------------------------------------------------------------------------

_CASES = [
    # (N, C, H, W), (oC, C/group, kH, kW), strides, pads (t, l, b, r), dilations, group, offset_group
    ((2, 4, 9, 8), (6, 4, 3, 3), [1, 1], [1, 1, 1, 1], [1, 1], 1, 1),
    ((1, 6, 11, 7), (4, 3, 3, 2), [2, 1], [1, 0, 2, 1], [1, 2], 2, 3),
    ((3, 8, 10, 10), (8, 2, 1, 3), [1, 3], [0, 2, 0, 2], [2, 1], 4, 2),
]


@pytest.mark.parametrize("case", _CASES, ids=["plain", "asymmetric", "grouped"])
@pytest.mark.parametrize("has_bias, has_mask", [(False, False), (True, False), (True, True), (False, True)],
                         ids=["X_W_offset", "with_B", "with_B_and_mask", "mask_without_B"])
def test_shape_inference_for_every_input_combination(case, has_bias, has_mask):
    (n, c, h, w), wshape, strides, pads, dilations, group, offset_group = case
    kh, kw = wshape[2:]
    oh = conv_output_size(h, kh, strides[0], pads[0], pads[2], dilations[0])
    ow = conv_output_size(w, kw, strides[1], pads[1], pads[3], dilations[1])
    b = [wshape[0]] if has_bias else None
    mask = [n, offset_group * kh * kw, oh, ow] if has_mask else None
    model = _deform_model([n, c, h, w], list(wshape), [n, 2 * offset_group * kh * kw, oh, ow], b, mask,
                          strides=strides, pads=pads, dilations=dilations, group=group, offset_group=offset_group)
    onnx.checker.check_model(model, full_check=True)
    elem, shape = _inferred_output(model)
    assert elem == TensorProto.FLOAT
    assert shape == [n, wshape[0], oh, ow]


def test_shape_inference_keeps_symbolic_dimensions():
    model = _deform_model(["batch", 4, "height", "width"], [6, 4, 3, 3], ["batch", 18, "height", "width"],
                          mask_shape=["batch", 9, "height", "width"], pads=[1, 1, 1, 1])
    onnx.checker.check_model(model, full_check=True)
    assert _inferred_output(model)[1] == ["batch", 6, "height", "width"]


@pytest.mark.parametrize("elem, model_opset", [(TensorProto.FLOAT16, 19), (TensorProto.DOUBLE, 19),
                                               (TensorProto.BFLOAT16, 22)])
def test_shape_inference_keeps_the_element_type(elem, model_opset):
    model = _deform_model([1, 2, 5, 5], [3, 2, 3, 3], [1, 18, 3, 3], elem=elem, model_opset=model_opset)
    onnx.checker.check_model(model, full_check=True)
    assert _inferred_output(model) == (elem, [1, 3, 3, 3])


@pytest.mark.parametrize("kwargs, message", [
    (dict(off_shape=[2, 17, 7, 6]), "offset must have 2\\*offset_group\\*kH\\*kW = 18 channels, got 17"),
    (dict(mask_shape=[2, 8, 7, 6]), "mask must have offset_group\\*kH\\*kW = 9 channels, got 8"),
    (dict(b_shape=[5]), "B must have shape \\(6,\\)"),
    (dict(group=2), "X has 4 channels but W.shape\\[1\\] \\* group"),
    (dict(off_shape=[2, 18, 6, 6]), "offset H \\(6\\) must equal the output size 7"),
    (dict(x_shape=[2, 4, 9]), "input X must be 4-D"),
    (dict(strides=[1]), "strides and dilations need 2 values"),
])
def test_shape_inference_rejects_inconsistent_shapes(kwargs, message):
    args = dict(x_shape=[2, 4, 9, 8], w_shape=[6, 4, 3, 3], off_shape=[2, 18, 7, 6], b_shape=None, mask_shape=None)
    attrs = {k: kwargs.pop(k) for k in ("group", "strides") if k in kwargs}
    args.update(kwargs)
    model = _deform_model(**args, **attrs)
    with pytest.raises(onnx.shape_inference.InferenceError, match=message):
        onnx.shape_inference.infer_shapes(model, strict_mode=True)


# --- function bodies ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("model_opset", [19, 22])
def test_function_body_is_standard_deform_conv_with_attribute_references(model_opset):
    function = opset.deform_conv_function(model_opset)
    assert (function.domain, function.name) == (opset.DOMAIN, "DeformConv2d")
    assert [(i.domain, i.version) for i in function.opset_import] == [("", model_opset)]
    (node,) = function.node
    assert node.op_type == "DeformConv" and node.domain == ""
    assert {a.name: a.ref_attr_name for a in node.attribute} == {
        n: n for n in ("strides", "pads", "dilations", "group", "offset_group")}
    assert {a.name for a in function.attribute_proto} == {"strides", "pads", "dilations", "group", "offset_group"}


def test_function_body_needs_opset_19():
    with pytest.raises(ValueError, match="opset >= 19"):
        opset.deform_conv_function(18)
    model = _deform_model([1, 2, 5, 5], [3, 2, 3, 3], [1, 18, 3, 3])
    model.opset_import[0].version = 18
    with pytest.raises(ValueError, match="need >= 19"):
        opset.attach_functions(model)


def test_attach_functions_is_idempotent_and_adds_the_domain():
    model = _deform_model([1, 2, 5, 5], [3, 2, 3, 3], [1, 18, 3, 3])
    opset.attach_functions(model)
    opset.attach_functions(model)
    assert [(f.domain, f.name) for f in model.functions] == [(opset.DOMAIN, "DeformConv2d")]
    assert sum(i.domain == opset.DOMAIN for i in model.opset_import) == 1
    assert opset.used_ops(model) == ["DeformConv2d"]


def test_attach_functions_finds_our_ops_inside_a_local_function_and_ort_runs_it():
    """An exporter may keep a module as a local function: our node inside it still gets its body (the same walk
    plugin routing uses: opset.domain_nodes), and stock ONNX Runtime runs the model."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1, 2, 5, 5)).astype(np.float32)
    w = rng.standard_normal((3, 2, 3, 3)).astype(np.float32)
    off = rng.standard_normal((1, 18, 3, 3)).astype(np.float32)
    inner = helper.make_node("DeformConv2d", ["X", "W", "offset"], ["Y"], domain=opset.DOMAIN, name="dcn")
    block = helper.make_function("local", "Block", ["X", "W", "offset"], ["Y"], [inner],
                                 [helper.make_opsetid("", 19), helper.make_opsetid(opset.DOMAIN, opset.VERSION)])
    call = helper.make_node("Block", ["X", "W", "offset"], ["Y"], domain="local")
    graph = helper.make_graph([call], "g", [helper.make_tensor_value_info(n, TensorProto.FLOAT, a.shape)
                                            for n, a in (("X", x), ("W", w), ("offset", off))],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1, 3, 3, 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19), helper.make_opsetid("local", 1)],
                              functions=[block])
    model.ir_version = 10
    assert opset.used_ops(model) == ["DeformConv2d"]
    opset.attach_functions(model)
    assert (opset.DOMAIN, "DeformConv2d") in [(f.domain, f.name) for f in model.functions]
    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    (y,) = session.run(None, {"X": x, "W": w, "offset": off})
    expected = _torch_reference(x, off, w, None, None, (1, 1), (0, 0, 0, 0), (1, 1))
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)


# --- stock ONNX Runtime runs the function body ----------------------------------------------------------------------

def _torch_reference(x, offset, weight, bias, mask, strides, pads, dilations):
    """dcn_deploy's reference op; asymmetric pads by zero-padding the image first (exact: outside samples are 0)."""
    from dcn_deploy.ops.deform_conv import deform_conv2d

    t = {k: None if v is None else torch.from_numpy(v) for k, v in
         dict(x=x, offset=offset, weight=weight, bias=bias, mask=mask).items()}
    padded = torch.nn.functional.pad(t["x"], (pads[1], pads[3], pads[0], pads[2]))
    return deform_conv2d(padded, t["offset"], t["weight"], t["bias"], stride=strides, padding=0,
                         dilation=dilations, mask=t["mask"]).numpy()


@pytest.mark.parametrize("case", _CASES, ids=["plain", "asymmetric", "grouped"])
@pytest.mark.parametrize("has_bias, has_mask", [(False, False), (True, False), (True, True), (False, True)],
                         ids=["X_W_offset", "with_B", "with_B_and_mask", "mask_without_B"])
@pytest.mark.parametrize("plugin_namespace", [False, True], ids=["plain_node", "with_plugin_namespace"])
def test_stock_onnxruntime_runs_the_node_like_the_reference(case, has_bias, has_mask, plugin_namespace, rng):
    (n, c, h, w), wshape, strides, pads, dilations, group, offset_group = case
    kh, kw = wshape[2:]
    oh = conv_output_size(h, kh, strides[0], pads[0], pads[2], dilations[0])
    ow = conv_output_size(w, kw, strides[1], pads[1], pads[3], dilations[1])
    arrays = {
        "X": rng.standard_normal((n, c, h, w)).astype(np.float32),
        "W": rng.standard_normal(wshape).astype(np.float32),
        "offset": (2 * rng.standard_normal((n, 2 * offset_group * kh * kw, oh, ow))).astype(np.float32),
        "B": rng.standard_normal(wshape[0]).astype(np.float32) if has_bias else None,
        "mask": rng.random((n, offset_group * kh * kw, oh, ow)).astype(np.float32) if has_mask else None,
    }
    if has_mask and not has_bias:  # the exporter's zero bias (docs/ops.md)
        arrays["B"] = np.zeros(wshape[0], np.float32)
    extra = {"plugin_namespace": "dcn_deploy", "plugin_version": "1"} if plugin_namespace else {}
    model = _deform_model(
        [n, c, h, w], list(wshape), [n, 2 * offset_group * kh * kw, oh, ow],
        None if arrays["B"] is None else [wshape[0]], None if arrays["mask"] is None else [n, offset_group * kh * kw, oh, ow],
        initial={"W": arrays["W"], **({"B": arrays["B"]} if arrays["B"] is not None else {})},
        strides=strides, pads=pads, dilations=dilations, group=group, offset_group=offset_group, **extra)
    onnx.checker.check_model(model, full_check=True)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    feed = {i.name: arrays[i.name] for i in session.get_inputs()}
    (got,) = session.run(None, feed)
    expected = _torch_reference(arrays["X"], arrays["offset"], arrays["W"], arrays["B"], arrays["mask"],
                                strides, pads, dilations)
    assert got.shape == expected.shape == (n, wshape[0], oh, ow)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


# --- the extension hook -------------------------------------------------------------------------------------------

def test_another_op_family_registers_through_the_same_hook():
    """A toy op (Y = 2 * X) registered like the RoI-pooling family will be: schema, function body, ORT run."""
    name = "TestDoubleForHook"

    def schema():
        param = onnx.defs.OpSchema.FormalParameter
        return onnx.defs.OpSchema(name, opset.DOMAIN, opset.VERSION, "Y = 2 * X", inputs=[param("X", "T")],
                                  outputs=[param("Y", "T")], type_constraints=[("T", ["tensor(float)"], "")])

    def function(model_opset):
        two = helper.make_node("Constant", [], ["two"], value=numpy_helper.from_array(np.array(2.0, np.float32)))
        mul = helper.make_node("Mul", ["X", "two"], ["Y"])
        return helper.make_function(opset.DOMAIN, name, ["X"], ["Y"], [two, mul], [helper.make_opsetid("", model_opset)])

    opset.register_op(opset.OpDefinition(name, schema, function))
    try:
        node = helper.make_node(name, ["X"], ["Y"], domain=opset.DOMAIN)
        graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [3])],
                                  [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [3])])
        model = opset.attach_functions(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)]))
        model.ir_version = 10
        onnx.checker.check_model(model, full_check=True)
        session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        x = np.array([1.0, -2.5, 4.0], np.float32)
        np.testing.assert_array_equal(session.run(None, {"X": x})[0], 2 * x)
    finally:
        opset._REGISTRY.pop(name, None)
        onnx.defs.deregister_schema(name, opset.VERSION, opset.DOMAIN)


def test_node_without_attributes_runs_with_the_documented_defaults(rng):
    """A node with none of its attributes (all have defaults: strides 1, pads 0, dilations 1, group 1, offset_group 1)
    gives the torch reference and what the node with the defaults written gives: (c) the same inferred output, (b)
    in ONNX Runtime, which expands the function and applies its declared defaults (FunctionProto.attribute_proto),
    also to a call that a later tool stripped of them, and (a) through onnx's inliner, then the checker and ONNX
    Runtime. The inliner ignores declared defaults: it deletes a reference to an attribute the call does not set.
    The standard DeformConv of the body happens to have our defaults, but attach_functions writes them onto the
    call, so the inlined node states them instead of relying on that (as the RoI pooling bodies must)."""
    attributes = onnx.defs.get_schema("DeformConv2d", opset.VERSION, opset.DOMAIN).attributes
    defaults = {name: helper.get_attribute_value(a.default_value) for name, a in attributes.items()
                if a.default_value.type != onnx.AttributeProto.UNDEFINED}
    assert set(defaults) == {"strides", "pads", "dilations", "group", "offset_group"}
    x = rng.standard_normal((1, 2, 6, 5)).astype(np.float32)
    weight = rng.standard_normal((3, 2, 3, 3)).astype(np.float32)
    offset = rng.standard_normal((1, 18, 4, 3)).astype(np.float32)
    shapes = ([1, 2, 6, 5], [3, 2, 3, 3], [1, 18, 4, 3])

    def run(model):
        session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        return session.run(None, {"X": x, "offset": offset})[0]

    written = _deform_model(*shapes, initial={"W": weight}, **defaults)
    want = run(written)
    np.testing.assert_allclose(want, _torch_reference(x, offset, weight, None, None, [1, 1], [0, 0, 0, 0], [1, 1]),
                               rtol=1e-4, atol=1e-4)
    bare = _deform_model(*shapes, initial={"W": weight})
    stripped = onnx.ModelProto()
    stripped.CopyFrom(written)
    del stripped.graph.node[0].attribute[:]
    for model in (bare, stripped):
        onnx.checker.check_model(model, full_check=True)
    assert _inferred_output(stripped) == _inferred_output(written)                               # (c)
    for model in (bare, stripped):                                                               # (b)
        np.testing.assert_array_equal(run(model), want)
    for model in (bare, opset.attach_functions(stripped)):                                       # (a)
        inlined = inliner.inline_local_functions(model)
        onnx.checker.check_model(inlined, full_check=True)
        (node,) = inlined.graph.node
        assert {a.name: helper.get_attribute_value(a) for a in node.attribute} == defaults
        np.testing.assert_array_equal(run(inlined), want)
