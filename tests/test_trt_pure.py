"""The TensorRT backend's pure parts, tested without TensorRT or a GPU.

Profiles (shape strings, defaults, range checks), the engine sidecar, the precision conversion (run in ONNX
Runtime on the CPU against the float32 model, with an accuracy report), the plugin-routing rewrite, the
builder's progress/error/size helpers, and the missing-TensorRT paths of ``build`` and the runner.
"""
from __future__ import annotations

import importlib.util
import json
import os
import threading
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto as TP
from onnx import helper, numpy_helper

from dcn_deploy.backends import engine_meta
from dcn_deploy.backends.trt_profiles import (InputShape, ProfileError, TensorRange, check_shapes_in_profile,
                                              compute_profile, onnx_input_shapes, parse_range_specs,
                                              parse_shape_specs)
from dcn_deploy.onnx import opset
from dcn_deploy.onnx.plugin_routing import RoutingError, check_plugin_fields, route_to_plugin, routed_nodes
from dcn_deploy.onnx.precision import PrecisionError, convert_precision, float_to_bfloat16_bits

HAS_TENSORRT = importlib.util.find_spec("tensorrt") is not None


# test models ------------------------------------------------------------------------------------------------------
def dcn_model(opset_version: int = 19, seed: int = 0, group: int = 1) -> onnx.ModelProto:
    """conv -> relu -> (offset conv, mask conv+sigmoid) -> dcn_deploy DeformConv2d (``group`` groups of its 8
    channels; 8: depth-wise) -> residual add -> GAP -> fc -> softmax. Input x (N, 4, 8, 8); outputs prob (N, 5) and
    the feature map s1 (N, 8, 8, 8)."""
    rng = np.random.default_rng(seed)

    def init(name, shape, scale=0.3):
        return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name)

    inits = [init("w1", [8, 4, 3, 3]), init("b1", [8]), init("w_off", [18, 8, 3, 3], 0.05),
             init("w_dcn", [8, 8 // group, 3, 3]), init("b_dcn", [8]), init("w_mask", [9, 8, 3, 3], 0.1), init("fc", [8, 5])]
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w_off"], ["off"], pads=[1, 1, 1, 1], name="conv_offset"),
        helper.make_node("Conv", ["r1", "w_mask"], ["m0"], pads=[1, 1, 1, 1], name="conv_mask"),
        helper.make_node("Sigmoid", ["m0"], ["mask"], name="sigmoid_mask"),
        helper.make_node("DeformConv2d", ["r1", "w_dcn", "off", "b_dcn", "mask"], ["d1"], domain="dcn_deploy",
                         strides=[1, 1], pads=[1, 1, 1, 1], dilations=[1, 1], group=group, offset_group=1,
                         name="dcn1"),
        helper.make_node("Add", ["d1", "r1"], ["s1"], name="residual"),
        helper.make_node("GlobalAveragePool", ["s1"], ["gap"], name="gap"),
        helper.make_node("Flatten", ["gap"], ["flat"], name="flatten"),
        helper.make_node("MatMul", ["flat", "fc"], ["logits"], name="fc"),
        helper.make_node("Softmax", ["logits"], ["prob"], axis=1, name="softmax"),
    ]
    graph = helper.make_graph(nodes, "dcn_test", [helper.make_tensor_value_info("x", TP.FLOAT, ["N", 4, 8, 8])],
                              [helper.make_tensor_value_info("prob", TP.FLOAT, ["N", 5]),
                               helper.make_tensor_value_info("s1", TP.FLOAT, ["N", 8, 8, 8])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset_version)])
    model.ir_version = 10
    return opset.attach_functions(model)


def mmdeploy_dcn_model(seed: int = 0) -> onnx.ModelProto:
    """:func:`dcn_model` as mmdeploy exports it: opset 11, its deformable node mmdeploy's
    ``MMCVModulatedDeformConv2d`` (inputs x, offset, mask, weight, bias; mmcv's attribute names), no function."""
    model = dcn_model(19, seed)  # its standard ops mean the same at opset 11
    index = next(i for i, n in enumerate(model.graph.node) if n.domain == opset.DOMAIN)
    x, w, offset, b, mask = model.graph.node[index].input
    foreign = helper.make_node("MMCVModulatedDeformConv2d", [x, offset, mask, w, b], ["d1"], domain="mmdeploy",
                               name="dcn1", stride=[1, 1], padding=[1, 1], dilation=[1, 1], groups=1, deform_groups=1)
    model.graph.node.remove(model.graph.node[index])
    model.graph.node.insert(index, foreign)
    del model.functions[:]
    del model.opset_import[:]
    model.opset_import.extend([helper.make_opsetid("", 11), helper.make_opsetid("mmdeploy", 1)])
    return model


def run_ort(model: onnx.ModelProto, feed: dict) -> dict:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in session.get_outputs()], session.run(None, feed)))


def accuracy_report(reference: dict, candidate: dict, label: str) -> dict:
    """Per output: max abs error, max error relative to the output's scale, and the cosine similarity."""
    report = {}
    for name, ref in reference.items():
        ref = ref.astype(np.float64)
        got = candidate[name].astype(np.float64)
        err = np.abs(ref - got)
        scale = max(np.abs(ref).max(), 1e-12)
        cosine = float((ref * got).sum() / max(np.linalg.norm(ref) * np.linalg.norm(got), 1e-30))
        report[name] = {"max_abs": float(err.max()), "max_rel_to_scale": float(err.max() / scale),
                        "mean_abs": float(err.mean()), "cosine": cosine}
    print(f"\naccuracy {label}:")
    for name, r in report.items():
        print(f"  {name:6s} max_abs {r['max_abs']:.3e}  max/scale {r['max_rel_to_scale']:.3e}  "
              f"mean_abs {r['mean_abs']:.3e}  cosine {r['cosine']:.8f}")
    return report


def tensor_types(model: onnx.ModelProto) -> dict:
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    g = inferred.graph
    types = {t.name: t.data_type for t in g.initializer}
    types.update({vi.name: vi.type.tensor_type.elem_type for vi in list(g.input) + list(g.output) + list(g.value_info)})
    return types


# profiles ---------------------------------------------------------------------------------------------------------
class TestShapeStrings:
    def test_trtexec_style_list(self):
        assert parse_shape_specs("x:1x3x224x224,offset:1x18x224x224") == {
            "x": (1, 3, 224, 224), "offset": (1, 18, 224, 224)}
        assert parse_shape_specs(["a:2x3", "b:4"]) == {"a": (2, 3), "b": (4,)}
        # NAME=SHAPE too, as verify's and bench's --shape take it
        assert parse_shape_specs("x=1x3x8x8,y:2") == {"x": (1, 3, 8, 8), "y": (2,)}
        assert parse_range_specs("x=1x3x8x8/2x3x8x8/4x3x8x8")["x"].max == (4, 3, 8, 8)

    def test_names_with_colons_and_quotes(self):
        assert parse_shape_specs("'input:0':1x3") == {"input:0": (1, 3)}

    def test_range_forms(self):
        ranges = parse_range_specs("x:1x3x64x64/4x3x64x64/8x3x64x64,y:2x2")
        assert ranges["x"] == TensorRange((1, 3, 64, 64), (4, 3, 64, 64), (8, 3, 64, 64))
        assert ranges["y"] == TensorRange((2, 2), (2, 2), (2, 2))

    @pytest.mark.parametrize("bad, words", [("x:1x3xa", "not a shape"), ("1x3", "NAME:SHAPE"),
                                            ("x:1x2/3x4", "MIN/OPT/MAX"), ("x:1,x:2", "twice")])
    def test_errors_name_the_problem(self, bad, words):
        with pytest.raises(ProfileError, match=words):
            parse_range_specs(bad)


class TestComputeProfile:
    inputs = [InputShape("x", ("N", 4, "H", "W")), InputShape("offset", ("N", 18, "H", "W")),
              InputShape("scale", (1,))]

    def test_shared_symbols_fill_other_inputs(self):
        profile = compute_profile(self.inputs, shapes="x:1x4x32x32/2x4x64x64/4x4x128x128")
        assert profile["offset"] == TensorRange((1, 18, 32, 32), (2, 18, 64, 64), (4, 18, 128, 128))
        assert profile["scale"] == TensorRange((1,), (1,), (1,))

    def test_dynamic_batch_defaults(self):
        profile = compute_profile([InputShape("x", (None, 3, 16, 16))], max_batch=6)
        assert profile["x"] == TensorRange((1, 3, 16, 16), (1, 3, 16, 16), (6, 3, 16, 16))

    def test_open_spatial_dims_ask_for_shapes(self):
        with pytest.raises(ProfileError) as info:
            compute_profile(self.inputs)
        message = str(info.value)
        assert "'x'" in message and "'offset'" in message and "--shapes x:1x4x<H>x<W>" in message
        # the library's arguments first, the CLI's options in parentheses (a build_engine caller has no --shapes)
        assert 'give shapes="x:1x4x<H>x<W>,offset:1x18x<H>x<W>"' in message
        assert "(CLI: --shapes x:1x4x<H>x<W>" in message and "min_shapes=" in message

    @pytest.mark.parametrize("seed", range(4))
    def test_stored_example_fixes_the_open_dims_and_keeps_the_batch_range(self, seed):
        """A file exported with --dynamic stores its example shapes: the profile fixes H/W to them (and says so),
        while the batch keeps its 1..max_batch default."""
        rng = np.random.default_rng(seed)
        h, w = (int(v) for v in rng.integers(3, 200, 2))
        max_batch = int(rng.integers(2, 17))
        notes = []
        profile = compute_profile(self.inputs, max_batch=max_batch, note=notes.append,
                                  examples={"x": (1, 4, h, w), "offset": (1, 18, h, w)})
        assert profile["x"] == TensorRange((1, 4, h, w), (1, 4, h, w), (max_batch, 4, h, w))
        assert profile["offset"] == TensorRange((1, 18, h, w), (1, 18, h, w), (max_batch, 18, h, w))
        assert profile["scale"] == TensorRange((1,), (1,), (1,))
        assert len(notes) == 2  # one line per input that took the example, none for the static one
        assert notes[0] == (f"no shapes for input 'x': H and W fixed to the exported example {h}x{w} (batch "
                            f"1..{max_batch}); for a range give shapes=\"x:MIN/OPT/MAX\" (CLI: --shapes "
                            f"x:1x4x{h // 2}x{w // 2}/1x4x{h}x{w}/{max_batch}x4x{2 * h}x{2 * w})")
        # the suggested range is itself a valid spec for this model
        suggested = notes[0].rsplit("--shapes ", 1)[1].rstrip(")")
        assert compute_profile(self.inputs, shapes=suggested)["x"].max == (max_batch, 4, 2 * h, 2 * w)

    def test_given_shapes_win_over_the_stored_example(self):
        notes = []
        profile = compute_profile(self.inputs, shapes="x:1x4x8x8/2x4x16x16/4x4x32x32", note=notes.append,
                                  examples={"x": (1, 4, 64, 64), "offset": (1, 18, 64, 64)})
        # offset shares N/H/W with x: it follows the given range, not its own example
        assert profile["offset"] == TensorRange((1, 18, 8, 8), (2, 18, 16, 16), (4, 18, 32, 32))
        assert notes == []

    def test_unnamed_dims_and_roi_inputs(self):
        inputs = [InputShape("image", (None, 3, None, None)), InputShape("rois", (None, 5))]
        notes = []
        profile = compute_profile(inputs, examples={"image": (2, 3, 40, 30), "rois": (7, 5)}, note=notes.append)
        assert profile["image"] == TensorRange((1, 3, 40, 30), (1, 3, 40, 30), (8, 3, 40, 30))
        assert profile["rois"] == TensorRange((1, 5), (1, 5), (8, 5))  # no open dimension besides the first
        assert len(notes) == 1
        assert "'image': dimension 2 and dimension 3 fixed to the exported example 40x30" in notes[0]

    def test_a_roi_input_counts_boxes_not_images(self):
        """Dimension 0 of a RoI box list is a box count: the batch range (1..max_batch) would cap a detector's
        proposals at 8 without a word. Declared as RoI input, it gets 1..DEFAULT_MAX_ROIS, tuned for the example."""
        from dcn_deploy.backends.trt_profiles import DEFAULT_MAX_ROIS

        inputs = [InputShape("image", (None, 3, None, None)), InputShape("rois", (None, 5))]
        notes = []
        profile = compute_profile(inputs, examples={"image": (2, 3, 40, 30), "rois": (300, 5)}, note=notes.append,
                                  rois=["rois"])
        assert profile["rois"] == TensorRange((1, 5), (300, 5), (DEFAULT_MAX_ROIS, 5))
        assert profile["image"].max[0] == 8  # the batch keeps its own range
        roi_note = next(n for n in notes if "'rois'" in n)
        assert f"1 to {DEFAULT_MAX_ROIS} boxes per call (tuned for 300)" in roi_note
        assert f"--shapes rois:1x5/300x5/{DEFAULT_MAX_ROIS}x5" in roi_note
        # without an example: tuned for 1 box; a range the user gives wins, with no note
        assert compute_profile(inputs[1:], rois=["rois"])["rois"].opt == (1, 5)
        notes.clear()
        given = compute_profile(inputs[1:], shapes="rois:1x5/50x5/64x5", rois=["rois"], note=notes.append)
        assert given["rois"] == TensorRange((1, 5), (50, 5), (64, 5)) and notes == []
        # boxes whose dimension 0 shares the images' batch name keep the batch range (TensorRT: one name, one size)
        tied = [InputShape("image", ("N", 3, 8, 8)), InputShape("rois", ("N", 5))]
        assert compute_profile(tied, rois=["rois"])["rois"].max == (8, 5)

    @pytest.mark.parametrize("example", [(1, 4, 8), (1, 5, 8, 8), (1, 4, 0, 8)])
    def test_an_example_that_no_longer_fits_is_ignored(self, example):
        """A file edited after export may store a shape of another rank or fixed size: asked for, not used."""
        with pytest.raises(ProfileError, match="no example shape stored"):
            compute_profile(self.inputs[:1], examples={"x": example})

    def test_library_arguments_are_named_with_the_cli_option(self):
        with pytest.raises(ProfileError, match=r"max_batch \(CLI: --max-batch\) must be >= 1"):
            compute_profile(self.inputs, max_batch=0)
        with pytest.raises(ProfileError, match=r"min_shapes, opt_shapes and max_shapes \(CLI: --min-shapes"):
            compute_profile(self.inputs, min_shapes="x:1x4x8x8", opt_shapes="x:1x4x8x8", max_shapes="offset:1x18x8x8")
        with pytest.raises(ProfileError, match=r"^shapes \(CLI: --shapes\): input 'x' has 4 dimensions"):
            compute_profile(self.inputs, shapes="x:1x4x8")

    def test_trtexec_triple(self):
        profile = compute_profile(self.inputs[:2], min_shapes="x:1x4x8x8,offset:1x18x8x8",
                                  opt_shapes="x:2x4x8x8,offset:2x18x8x8", max_shapes="x:3x4x8x8,offset:3x18x8x8")
        assert profile["x"].max == (3, 4, 8, 8) and profile["offset"].opt == (2, 18, 8, 8)

    def test_triple_must_name_the_same_inputs(self):
        with pytest.raises(ProfileError, match="same inputs"):
            compute_profile(self.inputs, min_shapes="x:1x4x8x8", opt_shapes="x:1x4x8x8",
                            max_shapes="offset:1x18x8x8")

    @pytest.mark.parametrize("spec, words", [
        ("x:1x4x8", "has 4 dimensions"),
        ("x:1x5x8x8", "fixed to 4"),
        ("x:1x4x8x8/1x4x4x4/1x4x8x8", "min <= opt <= max"),
        ("y:1x2", "does not have as input"),
        ("x:0x4x8x8", ">= 1"),
    ])
    def test_bad_ranges(self, spec, words):
        with pytest.raises(ProfileError, match=words):
            compute_profile(self.inputs, shapes=spec)

    def test_conflicting_shared_symbol(self):
        with pytest.raises(ProfileError, match="shared"):
            compute_profile(self.inputs, shapes="x:1x4x8x8,offset:1x18x16x16")

    def test_from_onnx_model(self):
        shapes = onnx_input_shapes(dcn_model())
        assert shapes == [InputShape("x", ("N", 4, 8, 8))]
        assert compute_profile(shapes)["x"] == TensorRange((1, 4, 8, 8), (1, 4, 8, 8), (8, 4, 8, 8))


class TestShapeCheck:
    profile = {"x": TensorRange((1, 3, 32, 32), (2, 3, 64, 64), (4, 3, 128, 128))}

    def test_inside_passes(self):
        check_shapes_in_profile({"x": (3, 3, 100, 32)}, self.profile)

    def test_outside_names_the_dimension_and_fix(self):
        with pytest.raises(ProfileError) as info:
            check_shapes_in_profile({"x": (8, 3, 64, 200)}, self.profile)
        message = str(info.value)
        assert "0 (8 not in 1..4)" in message and "3 (200 not in 32..128)" in message
        assert "dcn-deploy build" in message

    def test_rank_and_unknown_input(self):
        with pytest.raises(ProfileError, match="3 dimensions"):
            check_shapes_in_profile({"x": (1, 3, 32)}, self.profile)
        with pytest.raises(ProfileError, match="not in the engine"):
            check_shapes_in_profile({"y": (1,)}, self.profile)


# engine metadata ---------------------------------------------------------------------------------------------------
def make_meta(engine, **changes) -> engine_meta.EngineMeta:
    fields = dict(engine_sha256=engine_meta.sha256_file(engine), tensorrt_version="10.14.1.48",
                  gpu_name="NVIDIA H100 80GB HBM3", compute_capability=(9, 0), precision="fp16",
                  profiles=[{"x": TensorRange((1, 4, 8, 8), (2, 4, 8, 8), (8, 4, 8, 8))}],
                  source_model={"path": "m.onnx", "sha256": "ab" * 32},
                  plugin_library={"path": "/x/libdcn_deploy_plugin.so", "sha256": "cd" * 32},
                  inputs=[{"name": "x", "dtype": "float32", "shape": [-1, 4, 8, 8]}])
    fields.update(changes)
    return engine_meta.EngineMeta(**fields)


@pytest.fixture
def engine(tmp_path, rng):
    """A stand-in engine file: random bytes, for the sidecar (hashes, paths), never deserialised."""
    path = tmp_path / "m.engine"
    path.write_bytes(rng.integers(0, 255, 4096, dtype=np.uint8).tobytes())
    return path


class TestEngineMeta:
    def test_roundtrip_atomic(self, engine):
        meta = make_meta(engine)
        path = engine_meta.write_meta(engine, meta)
        assert path.name == "m.engine.json"
        assert sorted(p.name for p in engine.parent.iterdir()) == ["m.engine", "m.engine.json"]  # no temp files
        back = engine_meta.read_meta(engine)
        assert back.to_json() == meta.to_json()
        assert back.profiles[0]["x"].max == (8, 4, 8, 8) and back.compute_capability == (9, 0)

    def test_sidecar_of_another_engine_is_refused(self, engine):
        engine_meta.write_meta(engine, make_meta(engine))
        engine.write_bytes(b"rebuilt by someone else")
        with pytest.raises(engine_meta.EngineMetaError, match="replaced after the build"):
            engine_meta.read_meta(engine)

    def test_missing_damaged_and_foreign(self, engine):
        with pytest.raises(engine_meta.EngineMetaError, match="no metadata file"):
            engine_meta.read_meta(engine)
        sidecar = engine_meta.meta_path_for(engine)
        sidecar.write_text("{not json")
        with pytest.raises(engine_meta.EngineMetaError, match="JSON"):
            engine_meta.read_meta(engine)
        data = make_meta(engine).to_json()
        sidecar.write_text(json.dumps({**data, "format": 99}))
        with pytest.raises(engine_meta.EngineMetaError, match="format 99"):
            engine_meta.read_meta(engine)
        del data["gpu_name"]
        sidecar.write_text(json.dumps(data))
        with pytest.raises(engine_meta.EngineMetaError, match="gpu_name"):
            engine_meta.read_meta(engine)

    def test_bad_precision_rejected(self, engine):
        with pytest.raises(engine_meta.EngineMetaError, match="precision"):
            make_meta(engine, precision="int8")

    def test_compatible_machine(self, engine):
        meta = make_meta(engine)
        facts = engine_meta.RuntimeFacts("10.14.1.99", "NVIDIA H100 80GB HBM3", (9, 0), "cd" * 32)
        assert engine_meta.check_compatible(meta, facts) == []  # the build number does not matter

    def test_other_gpu_model_same_capability_is_a_warning(self, engine):
        facts = engine_meta.RuntimeFacts("10.14.1.48", "NVIDIA H200", (9, 0), "cd" * 32)
        warnings = engine_meta.check_compatible(make_meta(engine), facts)
        assert len(warnings) == 1 and "H200" in warnings[0]

    @pytest.mark.parametrize("facts, words", [
        (("11.4.0.1", "NVIDIA H100 80GB HBM3", (9, 0), "cd" * 32), "TensorRT 10.14.1.48"),
        (("10.14.1.48", "NVIDIA L4", (8, 9), "cd" * 32), "compute capability 9.0"),
        (("10.14.1.48", "NVIDIA H100 80GB HBM3", (9, 0), "ef" * 32), "another plugin library"),
        (("10.14.1.48", "NVIDIA H100 80GB HBM3", (9, 0), None), "no plugin library"),
    ])
    def test_mismatches_are_refused_with_the_rebuild_command(self, engine, facts, words):
        with pytest.raises(engine_meta.EngineMismatchError) as info:
            engine_meta.check_compatible(make_meta(engine), engine_meta.RuntimeFacts(*facts), engine_name="m.engine")
        assert words in str(info.value) and "dcn-deploy build m.onnx -o m.engine --precision fp16" in str(info.value)

    def test_engine_without_plugin_needs_no_library(self, engine):
        facts = engine_meta.RuntimeFacts("10.14.1.48", "NVIDIA H100 80GB HBM3", (9, 0), None)
        assert engine_meta.check_compatible(make_meta(engine, plugin_library=None), facts) == []


# precision conversion ----------------------------------------------------------------------------------------------
def assert_close_to_float32(report: dict) -> None:
    """Every output of a float16 conversion within 3e-3 of its float32 output's scale (about 3 units of float16;
    these models measure 1.8e-4 to 3.8e-4) and pointing the same way (cosine > 0.99999)."""
    for name, r in report.items():
        assert r["max_rel_to_scale"] < 3e-3, (name, r)
        assert r["cosine"] > 0.99999, (name, r)


@pytest.fixture(scope="module")
def models():
    model = dcn_model()
    half, report = convert_precision(model, "fp16")
    return model, half, report


class TestPrecisionFp16:
    def test_valid_model_with_the_documented_rule(self, models):
        _, half, report = models
        onnx.checker.check_model(half, full_check=True)
        kept = {name: reason for name, _, reason in report.kept_fp32}
        assert kept == {"gap": "rule: reduction", "softmax": "rule: softmax"}
        types = tensor_types(half)
        assert types["x"] == TP.FLOAT and types["prob"] == TP.FLOAT and types["s1"] == TP.FLOAT  # I/O float32
        dcn = next(n for n in half.graph.node if n.op_type == "DeformConv2d")
        assert {types[t] for t in dcn.input} | {types[dcn.output[0]]} == {TP.FLOAT16}
        gap = next(n for n in half.graph.node if n.name == "gap")
        assert types[gap.input[0]] == TP.FLOAT and types[gap.output[0]] == TP.FLOAT
        weights = {t.name: t.data_type for t in half.graph.initializer}
        assert weights["w_dcn"] == TP.FLOAT16 and weights["fc"] == TP.FLOAT16
        # Flatten follows its float32 input (GAP's) instead of casting to half and back.
        flatten = next(n for n in half.graph.node if n.name == "flatten")
        assert types[flatten.output[0]] == TP.FLOAT

    def test_runs_in_onnxruntime_close_to_float32(self, models, rng):
        model, half, _ = models
        feed = {"x": rng.standard_normal((2, 4, 8, 8)).astype(np.float32)}
        reference, got = run_ort(model, feed), run_ort(half, feed)
        report = accuracy_report(reference, got, "fp16 vs fp32 (ONNX Runtime CPU)")
        assert got["prob"].dtype == np.float32
        assert_close_to_float32(report)
        # and the conversion really computes in half: not bit-identical to float32
        assert report["s1"]["max_abs"] > 0

    def test_keep_named_nodes(self, rng):
        model = dcn_model()
        half, report = convert_precision(model, "fp16", keep_fp32_nodes=["conv_offset"])
        types = tensor_types(half)
        conv = next(n for n in half.graph.node if n.name == "conv_offset")
        assert types[conv.input[0]] == TP.FLOAT and types[conv.output[0]] == TP.FLOAT
        assert ("conv_offset", "Conv", "named in --keep-fp32") in report.kept_fp32
        feed = {"x": rng.standard_normal((1, 4, 8, 8)).astype(np.float32)}
        report = accuracy_report(run_ort(model, feed), run_ort(half, feed), "fp16, conv_offset kept in fp32")
        assert_close_to_float32(report)  # measured: max/scale 2.8e-4 at most

    def test_keep_named_nodes_from_a_generator(self):
        # the names are read once: checking them must not use up a generator before the conversion reads it
        _, report = convert_precision(dcn_model(), "fp16", keep_fp32_nodes=(n for n in ["conv_offset"]))
        assert ("conv_offset", "Conv", "named in --keep-fp32") in report.kept_fp32

    def test_unknown_node_name_is_an_error(self):
        with pytest.raises(PrecisionError, match="no node named \\['nope'\\]"):
            convert_precision(dcn_model(), "fp16", keep_fp32_nodes=["nope"])

    def test_half_io(self, rng):
        model = dcn_model()
        half, report = convert_precision(model, "fp16", io_dtype="half")
        assert report.io_dtype == "half"
        types = tensor_types(half)
        assert types["x"] == TP.FLOAT16 and types["prob"] == TP.FLOAT16 and types["s1"] == TP.FLOAT16
        x = rng.standard_normal((1, 4, 8, 8)).astype(np.float32)
        got = run_ort(half, {"x": x.astype(np.float16)})
        assert got["s1"].dtype == np.float16
        report = accuracy_report(run_ort(model, {"x": x}), got, "fp16 with half I/O")
        assert_close_to_float32(report)  # measured: max/scale 3.8e-4 at most (the outputs rounded to half too)

    def test_report_counts_what_each_node_runs_in(self):
        """Counted as half only where a node computes in half (not a Shape of a float tensor, whose output is
        int64); data movement left float32 after a kept node (a Relu after BatchNormalization) is counted apart."""
        w = numpy_helper.from_array(np.ones((2, 2, 1, 1), np.float32), "w")
        bn = [numpy_helper.from_array(np.full(2, v, np.float32), n) for n, v in
              (("g", 1.0), ("b", 0.0), ("m", 0.0), ("v", 1.0))]
        nodes = [helper.make_node("Shape", ["x"], ["s"], name="shape"),
                 helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
                 helper.make_node("BatchNormalization", ["c", "g", "b", "m", "v"], ["n"], name="bn"),
                 helper.make_node("Relu", ["n"], ["y"], name="relu")]
        graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TP.FLOAT, [1, 2, 4, 4])],
                                  [helper.make_tensor_value_info("y", TP.FLOAT, [1, 2, 4, 4]),
                                   helper.make_tensor_value_info("s", TP.INT64, [4])], [w, *bn])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
        _, report = convert_precision(model, "fp16")
        assert report.half_nodes == 1 and [k[0] for k in report.kept_fp32] == ["bn"] and report.followed_fp32 == 1
        assert "1 node(s) in fp16, 1 kept in float32 (and 1 data-movement node(s) left float32 on float32 values)" in report.summary()

    def test_fp32_is_an_unchanged_copy(self):
        model = dcn_model()
        same, report = convert_precision(model, "fp32")
        assert same is not model and same.SerializeToString() == model.SerializeToString()
        assert report.half_nodes == 0


def small_graph(nodes, inputs, outputs, inits=(), opset_version=19):
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset_version)])
    model.ir_version = 10
    return model


class TestPrecisionMechanics:
    def test_shared_initializer_gets_a_half_copy(self, rng):
        c = numpy_helper.from_array(rng.standard_normal((3, 4)).astype(np.float32), "c")
        model = small_graph(
            [helper.make_node("Add", ["x", "c"], ["a"], name="add"),
             helper.make_node("ReduceSum", ["c"], ["s"], keepdims=0, name="sum")],
            [helper.make_tensor_value_info("x", TP.FLOAT, [3, 4])],
            [helper.make_tensor_value_info("a", TP.FLOAT, [3, 4]), helper.make_tensor_value_info("s", TP.FLOAT, [])],
            [c])
        half, report = convert_precision(model, "fp16")
        onnx.checker.check_model(half, full_check=True)
        inits = {t.name: t.data_type for t in half.graph.initializer}
        assert inits == {"c": TP.FLOAT, "c__fp16": TP.FLOAT16}
        x = rng.standard_normal((3, 4)).astype(np.float32)
        ref, got = run_ort(model, {"x": x}), run_ort(half, {"x": x})
        np.testing.assert_allclose(got["s"], ref["s"], rtol=1e-6)  # the reduction really stayed float32
        np.testing.assert_allclose(got["a"], ref["a"], atol=5e-3)

    def test_shared_constant_node_gets_a_half_copy(self, rng):
        value = rng.standard_normal((3, 4)).astype(np.float32)
        model = small_graph(
            [helper.make_node("Constant", [], ["c"], value=numpy_helper.from_array(value), name="const"),
             helper.make_node("Mul", ["x", "c"], ["a"], name="mul"),
             helper.make_node("ReduceSum", ["c"], ["s"], keepdims=0, name="sum")],
            [helper.make_tensor_value_info("x", TP.FLOAT, [3, 4])],
            [helper.make_tensor_value_info("a", TP.FLOAT, [3, 4]), helper.make_tensor_value_info("s", TP.FLOAT, [])])
        half, report = convert_precision(model, "fp16")
        onnx.checker.check_model(half, full_check=True)
        assert [n.name for n in half.graph.node][:2] == ["const", "const__fp16"]
        types = tensor_types(half)
        assert types["c"] == TP.FLOAT and types["c__fp16"] == TP.FLOAT16
        x = rng.standard_normal((3, 4)).astype(np.float32)
        ref, got = run_ort(model, {"x": x}), run_ort(half, {"x": x})
        np.testing.assert_allclose(got["s"], ref["s"], rtol=1e-6)
        np.testing.assert_allclose(got["a"], ref["a"], atol=5e-3)

    def test_out_of_range_constants_are_clipped_and_counted(self):
        k = numpy_helper.from_array(np.array([1e5, -2.0], np.float32), "k")
        model = small_graph([helper.make_node("Mul", ["x", "k"], ["y"], name="mul")],
                            [helper.make_tensor_value_info("x", TP.FLOAT, [2])],
                            [helper.make_tensor_value_info("y", TP.FLOAT, [2])], [k])
        half, report = convert_precision(model, "fp16")
        assert report.values_clipped == 1 and "clipped" in report.summary()
        got = run_ort(half, {"x": np.array([0.5, 1.5], np.float32)})["y"]
        np.testing.assert_allclose(got, [32752.0, -3.0])

    def test_fixed_float_inputs_stay_float32(self, rng):
        # Resize's 'scales' is tensor(float) in the schema: it must not be cast to half.
        scales = numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")
        model = small_graph([helper.make_node("Resize", ["x", "", "scales"], ["y"], mode="linear", name="up")],
                            [helper.make_tensor_value_info("x", TP.FLOAT, [1, 2, 3, 3])],
                            [helper.make_tensor_value_info("y", TP.FLOAT, [1, 2, 6, 6])], [scales])
        half, _ = convert_precision(model, "fp16")
        assert {t.name: t.data_type for t in half.graph.initializer} == {"scales": TP.FLOAT}
        onnx.checker.check_model(half, full_check=True)
        x = rng.standard_normal((1, 2, 3, 3)).astype(np.float32)
        np.testing.assert_allclose(run_ort(half, {"x": x})["y"], run_ort(model, {"x": x})["y"], atol=5e-3)

    def test_cast_to_float_becomes_cast_to_half(self):
        model = small_graph([helper.make_node("Cast", ["i"], ["f"], to=TP.FLOAT, name="cast"),
                             helper.make_node("Mul", ["f", "f"], ["y"], name="sq")],
                            [helper.make_tensor_value_info("i", TP.INT64, [3])],
                            [helper.make_tensor_value_info("y", TP.FLOAT, [3])])
        half, report = convert_precision(model, "fp16")
        cast = next(n for n in half.graph.node if n.name == "cast")
        assert helper.get_attribute_value(cast.attribute[0]) == TP.FLOAT16
        assert report.casts_inserted == 1  # only the one back to the float32 output
        np.testing.assert_array_equal(run_ort(half, {"i": np.array([1, 2, 30])})["y"], [1, 4, 900])

    def test_control_flow_is_refused(self):
        then = helper.make_graph([helper.make_node("Identity", ["x"], ["t"])], "then", [],
                                 [helper.make_tensor_value_info("t", TP.FLOAT, [1])])
        model = small_graph([helper.make_node("If", ["c"], ["y"], then_branch=then, else_branch=then, name="if")],
                            [helper.make_tensor_value_info("c", TP.BOOL, []),
                             helper.make_tensor_value_info("x", TP.FLOAT, [1])],
                            [helper.make_tensor_value_info("y", TP.FLOAT, [1])])
        with pytest.raises(PrecisionError, match="subgraph"):
            convert_precision(model, "fp16")


class TestPrecisionBf16:
    def test_bits_round_to_nearest_even(self):
        values = np.array([1.0, -2.0, 1.0 + 2 ** -8, 1.0 + 3 * 2 ** -8, np.inf, np.nan], np.float32)
        bits = float_to_bfloat16_bits(values)
        assert list(bits[:5]) == [0x3F80, 0xC000, 0x3F80, 0x3F82, 0x7F80]  # ties go to even
        assert bits[5] & 0x7F80 == 0x7F80 and bits[5] & 0x7F  # NaN stays NaN

    def test_small_graph_in_the_reference_evaluator(self, rng):
        from onnx.reference import ReferenceEvaluator

        w = numpy_helper.from_array(rng.standard_normal((6, 6)).astype(np.float32), "w")
        model = small_graph(
            [helper.make_node("MatMul", ["x", "w"], ["h"], name="mm"),
             helper.make_node("Relu", ["h"], ["r"], name="relu"),
             helper.make_node("Softmax", ["r"], ["y"], axis=1, name="softmax")],
            [helper.make_tensor_value_info("x", TP.FLOAT, [4, 6])],
            [helper.make_tensor_value_info("y", TP.FLOAT, [4, 6])], [w], opset_version=22)
        half, report = convert_precision(model, "bf16")
        onnx.checker.check_model(half, full_check=True)
        assert {t.name: t.data_type for t in half.graph.initializer} == {"w": TP.BFLOAT16}
        assert [k[0] for k in report.kept_fp32] == ["softmax"]
        x = rng.standard_normal((4, 6)).astype(np.float32)
        ref = ReferenceEvaluator(model).run(None, {"x": x})[0]
        got = ReferenceEvaluator(half).run(None, {"x": x})[0]
        r = accuracy_report({"y": ref}, {"y": np.asarray(got, np.float32)}, "bf16 vs fp32 (onnx reference)")["y"]
        assert 0 < r["max_abs"] < 2e-2

    def test_dcn_needs_opset_22(self):
        with pytest.raises(PrecisionError, match="opset 22"):
            convert_precision(dcn_model(19), "bf16")
        half, _ = convert_precision(dcn_model(22), "bf16")
        onnx.checker.check_model(half, full_check=True)
        types = tensor_types(half)
        dcn = next(n for n in half.graph.node if n.op_type == "DeformConv2d")
        assert types[dcn.output[0]] == TP.BFLOAT16 and types["s1"] == TP.FLOAT


# plugin routing ----------------------------------------------------------------------------------------------------
class TestPluginRouting:
    def test_our_nodes_get_the_namespace(self):
        model = dcn_model()
        routed, count = route_to_plugin(model)
        assert count == 1
        assert routed_nodes(routed) == [("dcn1 (dcn_deploy::DeformConv2d)", "dcn_deploy")]
        assert routed_nodes(model) == [("dcn1 (dcn_deploy::DeformConv2d)", None)]  # the input is untouched
        # function bodies (standard DeformConv) are not touched
        assert all(not any(a.name == "plugin_namespace" for a in n.attribute)
                   for f in routed.functions for n in f.node)
        onnx.checker.check_model(routed, full_check=True)

    def test_idempotent_and_version(self):
        once, _ = route_to_plugin(dcn_model())
        twice, _ = route_to_plugin(once, version="1")
        node = next(n for n in twice.graph.node if n.op_type == "DeformConv2d")
        names = [a.name for a in node.attribute]
        assert names.count("plugin_namespace") == 1 and names.count("plugin_version") == 1

    def test_routed_model_still_runs_in_onnxruntime(self, rng):
        model = dcn_model()
        routed, _ = route_to_plugin(model)
        feed = {"x": rng.standard_normal((1, 4, 8, 8)).astype(np.float32)}
        np.testing.assert_array_equal(run_ort(routed, feed)["s1"], run_ort(model, feed)["s1"])

    def test_attributes_the_plugin_would_drop_are_reported(self):
        model = dcn_model()
        node = next(n for n in model.graph.node if n.op_type == "DeformConv2d")
        node.attribute.append(helper.make_attribute("deform_groups", 2))
        problems = check_plugin_fields(model)
        assert len(problems) == 1 and "deform_groups" in problems[0] and "offset_group" in problems[0]
        with pytest.raises(RoutingError, match="deform_groups"):
            route_to_plugin(model)
        _, count = route_to_plugin(model, strict=False)
        assert count == 1

    def test_ops_without_a_plugin_stay_unrouted(self):
        from dcn_deploy.onnx.opset import used_ops
        from dcn_deploy.onnx.plugin_routing import unrouted_ops

        model = dcn_model()
        next(n for n in model.graph.node if n.op_type == "DeformConv2d").op_type = "DeformRoIPool2d"
        assert check_plugin_fields(model) == [] and unrouted_ops(model) == ["DeformRoIPool2d"]
        routed, count = route_to_plugin(model)
        assert count == 0 and routed_nodes(routed) == [("dcn1 (dcn_deploy::DeformRoIPool2d)", None)]
        # with a registry that has the plugin (fields as the builder reads them), it is routed
        routed, count = route_to_plugin(model, fields={"DeformRoIPool2d": ("pooled_height",)}, strict=False)
        assert count == 1 and used_ops(routed) == ["DeformRoIPool2d"]

    @staticmethod
    def tf32_values(model):
        """allow_tf32 of each DeformConv2d node, None where it has none."""
        return [next((helper.get_attribute_value(a) for a in n.attribute if a.name == "allow_tf32"), None)
                for n in model.graph.node if n.op_type == "DeformConv2d"]

    def test_the_builds_tf32_setting_is_stamped_where_the_plugin_has_the_field(self):
        """A plugin cannot see the builder's TF32 flag: the build writes it as the field allow_tf32 on routed
        DeformConv2d nodes, 1 or 0 (the default), only where the loaded creator lists the field (an older library
        without it gets no attribute, which its parse would drop)."""
        from dcn_deploy.onnx.plugin_routing import PLUGIN_FIELDS, TF32_FIELD

        model = dcn_model()
        assert TF32_FIELD == "allow_tf32" and TF32_FIELD in PLUGIN_FIELDS["DeformConv2d"]
        routed, count = route_to_plugin(model, allow_tf32=True)
        assert count == 1 and self.tf32_values(routed) == [1]
        assert self.tf32_values(model) == [None]  # the input is untouched
        onnx.checker.check_model(routed, full_check=True)  # the op's schema declares the attribute
        assert self.tf32_values(route_to_plugin(model, allow_tf32=False)[0]) == [0]
        assert self.tf32_values(route_to_plugin(model)[0]) == [0]  # as trtexec users route: IEEE float32
        # the build's setting wins over one already on the node, and stays a single attribute
        again, _ = route_to_plugin(routed, allow_tf32=False)
        assert self.tf32_values(again) == [0]
        assert [a.name for a in next(n for n in again.graph.node if n.op_type == "DeformConv2d").attribute
                ].count("allow_tf32") == 1
        # a library whose creator does not list the field: routed, no attribute
        older = {"DeformConv2d": ("strides", "pads", "dilations", "group", "offset_group")}
        old_routed, count = route_to_plugin(model, fields=older, allow_tf32=True)
        assert count == 1 and self.tf32_values(old_routed) == [None]
        assert routed_nodes(old_routed) == [("dcn1 (dcn_deploy::DeformConv2d)", "dcn_deploy")]

    def test_a_routed_file_routes_again_for_a_library_without_the_field(self):
        """A file routed before (the trtexec recipe writes allow_tf32 = 0 or 1) and built with a library whose
        creator does not list the field: the stale attribute is the build's to set, not the model's, so it is
        dropped (that library runs IEEE float32), not refused as an attribute to re-export without."""
        routed, _ = route_to_plugin(dcn_model(), allow_tf32=True)
        older = {"DeformConv2d": ("strides", "pads", "dilations", "group", "offset_group")}
        again, count = route_to_plugin(routed, fields=older, allow_tf32=True)
        assert count == 1 and self.tf32_values(again) == [None]
        assert self.tf32_values(routed) == [1]  # the input is untouched

    def test_prepare_onnx_passes_the_tf32_setting(self):
        from dcn_deploy.backends.trt_build import prepare_onnx

        assert self.tf32_values(prepare_onnx(dcn_model(), tf32=True)[0]) == [1]
        assert self.tf32_values(prepare_onnx(dcn_model(), tf32=False)[0]) == [0]
        assert self.tf32_values(prepare_onnx(dcn_model())[0]) == [0]
        older = {"DeformConv2d": ("strides", "pads", "dilations", "group", "offset_group")}
        assert self.tf32_values(prepare_onnx(dcn_model(), tf32=True, plugin_fields=older)[0]) == [None]
        half, _, _ = prepare_onnx(dcn_model(), precision="fp16", tf32=True)  # the plugin ignores it for half types
        assert self.tf32_values(half) == [1]

    def test_prepare_onnx_converts_then_routes(self):
        from dcn_deploy.backends.trt_build import prepare_onnx

        prepared, report, routed = prepare_onnx(dcn_model(), precision="fp16", keep_fp32=["conv1"])
        assert routed == 1 and report.precision == "fp16"
        dcn = next(n for n in prepared.graph.node if n.op_type == "DeformConv2d")
        assert any(a.name == "plugin_namespace" for a in dcn.attribute)
        assert tensor_types(prepared)[dcn.output[0]] == TP.FLOAT16

    @pytest.mark.parametrize("opset", [19, 20])
    def test_prepare_onnx_names_grid_sample_modes_as_before_opset_20(self, opset):
        """TensorRT's ONNX parser reads opset 20's "linear" and "cubic" as nearest (onnx-tensorrt's importer knows
        opset 16's names only), so the graph it gets has those; the model given is left as it is."""
        from dcn_deploy.backends.trt_build import prepare_onnx

        names = {19: ["bilinear", "bicubic", "nearest"], 20: ["linear", "cubic", "nearest"]}[opset]
        nodes = [helper.make_node("GridSample", ["x", "grid"], [f"y{i}"], mode=mode) for i, mode in enumerate(names)]
        graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TP.FLOAT, [1, 1, 4, 4]),
                                               helper.make_tensor_value_info("grid", TP.FLOAT, [1, 2, 2, 2])],
                                  [helper.make_tensor_value_info(f"y{i}", TP.FLOAT, None) for i in range(3)])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
        prepared, _, _ = prepare_onnx(model)

        def modes(m):
            return [helper.get_attribute_value(a).decode() for n in m.graph.node for a in n.attribute
                    if a.name == "mode"]

        assert modes(prepared) == ["bilinear", "bicubic", "nearest"] and modes(model) == names


# builder helpers ---------------------------------------------------------------------------------------------------
class TestBuilderHelpers:
    def test_parse_size(self):
        from dcn_deploy.backends.trt_build import parse_size

        assert parse_size("4G") == 4 << 30 and parse_size("512M") == 512 << 20 and parse_size("1024") == 1 << 30
        assert parse_size("1.5GiB") == 3 << 29 and parse_size(256) == 256 << 20
        with pytest.raises(ValueError, match="--workspace"):
            parse_size("lots")

    def test_plugin_told_the_workspace_limit_during_the_build_only(self, monkeypatch):
        """build_engine wraps the build in plugin_workspace_limit: the plugin reads the variable in configurePlugin
        (its parsing and the column budget it then picks: the plugin shell test). The value is the limit in whole
        KiB, in the syntax both parsers share; an earlier value, or none, is restored, also after an error."""
        from dcn_deploy.backends.trt_options import PLUGIN_WORKSPACE_VARIABLE, parse_size, plugin_workspace_limit

        monkeypatch.delenv(PLUGIN_WORKSPACE_VARIABLE, raising=False)
        limit = parse_size("300M") + 1000
        with plugin_workspace_limit(limit):
            told = os.environ[PLUGIN_WORKSPACE_VARIABLE]
        assert told == f"{limit // 1024}K" and parse_size(told) == limit // 1024 * 1024
        assert PLUGIN_WORKSPACE_VARIABLE not in os.environ
        monkeypatch.setenv(PLUGIN_WORKSPACE_VARIABLE, "1G")
        with pytest.raises(RuntimeError, match="build failed"):
            with plugin_workspace_limit(parse_size("256M")):
                assert os.environ[PLUGIN_WORKSPACE_VARIABLE] == "262144K"
                raise RuntimeError("build failed")
        assert os.environ[PLUGIN_WORKSPACE_VARIABLE] == "1G"
        with plugin_workspace_limit(None):  # no --workspace: the user's own value stands
            assert os.environ[PLUGIN_WORKSPACE_VARIABLE] == "1G"

    def test_plugin_told_whether_the_builder_counts_layer_tensors(self, monkeypatch):
        """TensorRT-RTX's builder counts a layer's inputs and outputs against the workspace limit: with
        charges_tensors the plugin is told so, for the build only; without it, "0" (a value left by an earlier RTX
        build in the same process must not carry over)."""
        from dcn_deploy.backends.trt_options import (PLUGIN_WORKSPACE_CHARGES_TENSORS_VARIABLE as CHARGES,
                                                     plugin_workspace_limit)

        monkeypatch.delenv(CHARGES, raising=False)
        with plugin_workspace_limit(256 << 20, charges_tensors=True):
            assert os.environ[CHARGES] == "1"
        assert CHARGES not in os.environ
        monkeypatch.setenv(CHARGES, "1")
        with plugin_workspace_limit(256 << 20):
            assert os.environ[CHARGES] == "0"
        assert os.environ[CHARGES] == "1"

    def test_parser_errors_with_plugin_hint(self):
        from dcn_deploy.backends.trt_build import format_parser_errors

        text = format_parser_errors([{"desc": "Assertion failed: creator: Plugin not found, are the plugin name, "
                                              "version, and namespace correct?", "code": "UNSUPPORTED_NODE",
                                      "node": 5, "node_name": "dcn1", "op": "DeformConv2d"}], "m.onnx")
        assert "node 'dcn1' op DeformConv2d" in text and "[UNSUPPORTED_NODE]" in text
        assert "hint:" in text and "--plugin" in text

    def test_tensorrt_plugins_registered_once_with_a_lasting_logger(self, monkeypatch):
        """Our bookkeeping around ``trt.init_libnvinfer_plugins`` only (a stand-in module records the calls; that
        TensorRT then finds its plugins in a fresh process is test_trt_gpu's
        ``test_engine_with_tensorrt_own_plugin_runs_in_a_fresh_process``): one call per TensorRT module, with a
        logger that outlives the call (libnvinfer_plugin keeps the pointer), none for a module without it."""
        import gc
        import types
        import weakref

        from dcn_deploy.backends import trt_build, trt_plugins

        monkeypatch.setattr(trt_plugins, "_plugin_library_loggers", {})
        calls = []

        class Logger:
            WARNING = 2

            def __init__(self, severity):
                self.severity = severity

        def init(logger, namespace):
            calls.append((weakref.ref(logger), namespace))
            return True

        module = types.SimpleNamespace(__name__="tensorrt", Logger=Logger, init_libnvinfer_plugins=init)
        assert trt_build.register_tensorrt_plugins(module) and trt_build.register_tensorrt_plugins(module)
        gc.collect()
        assert len(calls) == 1 and calls[0][1] == ""
        assert calls[0][0]() is not None and calls[0][0]().severity == Logger.WARNING
        assert trt_build.register_tensorrt_plugins(types.SimpleNamespace(__name__="tensorrt_rtx")) is False
        assert len(calls) == 1

    def test_progress_lines_throttle_and_cancel(self):
        from dcn_deploy.backends.trt_build import BuildProgress

        lines, now = [], [0.0]
        progress = BuildProgress(lines.append, min_interval=1.0, clock=lambda: now[0])
        progress.phase_start("Building engine", None, 3)
        progress.phase_start("Tactic selection", "Building engine", 10)
        for step in range(10):
            now[0] += 0.4
            assert progress.step_complete("Tactic selection", step) is True
        progress.phase_finish("Tactic selection")
        progress.phase_finish("Building engine")
        assert lines[0] == "[build] Building engine (3 steps)"
        assert lines[1] == "[build]   Tactic selection (10 steps)"
        steps = [l for l in lines if "/10" in l]
        assert 2 <= len(steps) <= 4 and steps[0].startswith("[build]   Tactic selection ")
        assert lines[-1] == "[build] Building engine done (4.0 s)"
        progress.cancel()
        assert progress.step_complete("anything", 0) is False

    def test_progress_is_thread_safe(self):
        from dcn_deploy.backends.trt_build import BuildProgress

        lines = []
        progress = BuildProgress(lines.append, min_interval=0.0)

        def phase(i):
            progress.phase_start(f"p{i}", None, 50)
            for s in range(50):
                progress.step_complete(f"p{i}", s)
            progress.phase_finish(f"p{i}")

        threads = [threading.Thread(target=phase, args=(i,)) for i in range(8)]
        [t.start() for t in threads]
        [t.join() for t in threads]
        assert sum(l.endswith("done (0.0 s)") or "done" in l for l in lines) == 8
        assert len(lines) == 8 * (1 + 49 + 1)


# without TensorRT ---------------------------------------------------------------------------------------------------
@pytest.mark.skipif(HAS_TENSORRT, reason="checks the path for machines without TensorRT; tensorrt is installed")
class TestWithoutTensorRT:
    def test_build_command_says_what_to_install(self, tmp_path):
        from click.testing import CliRunner

        from dcn_deploy.cli import main

        model = tmp_path / "m.onnx"
        onnx.save(dcn_model(), model)
        result = CliRunner().invoke(main, ["build", str(model), "-o", str(tmp_path / "m.engine"),
                                           "--precision", "fp16"])
        assert result.exit_code == 2, result.output
        for words in ("TensorRT is not installed", "pip install tensorrt", "tensorrt-cu12",
                      "nvcr.io/nvidia/tensorrt", "pip install -e '.[tensorrt]'", "--runner ort"):
            assert words in result.output
        assert not (tmp_path / "m.engine").exists()

    def test_build_command_checks_options_first(self, tmp_path):
        from click.testing import CliRunner

        from dcn_deploy.cli import main

        model = tmp_path / "m.onnx"
        onnx.save(dcn_model(), model)
        result = CliRunner().invoke(main, ["build", str(model), "--workspace", "plenty"])
        assert result.exit_code == 2 and "--workspace" in result.output
        # the model file, the shapes and the output path are checked before TensorRT is looked for
        junk = tmp_path / "junk.onnx"
        junk.write_bytes(b"not a model")
        for args, words in ((["build", str(junk)], "junk.onnx is not a readable ONNX model"),
                            (["build", str(model), "--shapes", "1x4x8x8"], "must be NAME:SHAPE"),
                            (["build", str(model), "-o", str(tmp_path / "no" / "m.engine")], "does not exist")):
            result = CliRunner().invoke(main, args)
            assert result.exit_code == 2 and words in result.output, (args, result.output)
            assert "TensorRT is not installed" not in result.output

    def test_an_onnx_file_named_like_an_engine_needs_an_engine_path(self, tmp_path):
        from click.testing import CliRunner

        from dcn_deploy.cli import main

        model = tmp_path / "m.engine"
        onnx.save(dcn_model(), model)
        result = CliRunner().invoke(main, ["build", str(model)])
        assert result.exit_code == 2 and (f"{model} is named like an engine, so the default engine path (m.engine "
                                          "beside it) is the model itself: give the engine's path (-o)") in \
            result.output, result.output
        assert model.read_bytes() == dcn_model().SerializeToString()

    def test_precision_takes_exports_dtype_names_too(self, tmp_path):
        from click.testing import CliRunner

        from dcn_deploy.cli import main

        model = tmp_path / "m.onnx"
        onnx.save(dcn_model(), model)
        for name in ("float16", "HALF", "fp16"):  # past the options: stops only where TensorRT is missing
            result = CliRunner().invoke(main, ["build", str(model), "--precision", name])
            assert result.exit_code == 2 and "TensorRT is not installed" in result.output, (name, result.output)
        result = CliRunner().invoke(main, ["build", str(model), "--precision", "bfloat16"])  # read as bf16
        assert result.exit_code == 2 and "bf16: the model imports ONNX opset 19" in result.output, result.output
        result = CliRunner().invoke(main, ["build", str(model), "--precision", "fp8"])
        assert result.exit_code == 2 and "'fp8' is not one of fp32, fp16, bf16 (or float32, float16, half, bfloat16)" \
            in result.output, result.output

    def test_library_call_raises_an_import_error_with_the_hint(self, tmp_path):
        import dcn_deploy
        from dcn_deploy.backends.trt_build import TensorRTMissingError

        model = tmp_path / "m.onnx"
        onnx.save(dcn_model(), model)
        with pytest.raises(TensorRTMissingError, match="pip install tensorrt"):
            dcn_deploy.build_engine(model, tmp_path / "m.engine")
        with pytest.raises(FileNotFoundError, match="missing.onnx does not exist"):  # the arguments come first
            dcn_deploy.build_engine(tmp_path / "missing.onnx", tmp_path / "m.engine")

    def test_runner_activation_names_what_is_missing(self, tmp_path):
        from dcn_deploy.backends.base import RunnerError
        from dcn_deploy.backends.trt_runner import TrtRunner

        engine = tmp_path / "m.engine"
        engine.write_bytes(b"\x01\x02")
        engine_meta.write_meta(engine, make_meta(engine))
        runner = TrtRunner(engine)
        # The inputs are known from the sidecar before activation, without TensorRT.
        (meta,) = runner.input_metadata()
        assert meta.name == "x" and meta.shape == (None, 4, 8, 8) and meta.dtype == np.float32
        with pytest.raises(RunnerError, match="TensorRT is not installed"):
            runner.activate()
        with pytest.raises(FileNotFoundError, match="dcn-deploy build"):
            TrtRunner(tmp_path / "absent.engine")


class TestTrtRunnerInputChecks:
    """The runner's own input validation (before any TensorRT call), on a runner whose engine facts are set by hand."""

    @pytest.fixture
    def runner(self, tmp_path):
        from dcn_deploy.backends.base import TensorMeta
        from dcn_deploy.backends.trt_runner import TrtRunner

        engine = tmp_path / "m.engine"
        engine.write_bytes(b"\x00")
        runner = TrtRunner(engine, check_metadata=False)
        runner._inputs = (TensorMeta("x", np.dtype(np.float32), (None, 4, 8, 8)),)
        runner._profiles = [{"x": TensorRange((1, 4, 8, 8), (2, 4, 8, 8), (4, 4, 8, 8))}]
        return runner

    def test_float_inputs_are_converted_and_made_contiguous(self, runner, rng):
        x = rng.standard_normal((2, 8, 8, 4)).transpose(0, 3, 1, 2)  # float64, not contiguous
        arrays, shapes, profile_index = runner._prepare_inputs({"x": x})
        assert arrays["x"].dtype == np.float32 and arrays["x"].flags.c_contiguous
        assert shapes == {"x": (2, 4, 8, 8)} and profile_index == 0
        np.testing.assert_array_equal(arrays["x"], x.astype(np.float32))

    def test_outside_the_profile(self, runner, rng):
        from dcn_deploy.backends.base import RunnerError

        with pytest.raises(RunnerError, match="outside the engine's profile min 1x4x8x8 .. max 4x4x8x8"):
            runner._prepare_inputs({"x": rng.standard_normal((5, 4, 8, 8)).astype(np.float32)})

    def test_integer_data_for_a_float_input(self, runner):
        from dcn_deploy.backends.base import RunnerError

        with pytest.raises(RunnerError, match="dtype int64, the engine expects float32"):
            runner._prepare_inputs({"x": np.ones((1, 4, 8, 8), np.int64)})

    def test_infer_outside_with_block(self, runner):
        from dcn_deploy.backends.base import RunnerError

        with pytest.raises(RunnerError, match="inside 'with runner:'"):
            runner.infer({"x": np.zeros((1, 4, 8, 8), np.float32)})

    def test_several_profiles_pick_the_first_that_fits(self, runner, rng):
        from dcn_deploy.backends.base import RunnerError

        runner._profiles.append({"x": TensorRange((3, 4, 8, 8), (6, 4, 8, 8), (8, 4, 8, 8))})
        for batch, want in ((1, 0), (4, 0), (5, 1), (8, 1)):
            _, shapes, index = runner._prepare_inputs({"x": rng.standard_normal((batch, 4, 8, 8))})
            assert (shapes["x"][0], index) == (batch, want)
        with pytest.raises(RunnerError, match="fit none of the engine's 2 optimisation profiles") as info:
            runner._prepare_inputs({"x": rng.standard_normal((9, 4, 8, 8))})
        assert "profile 0: x min 1x4x8x8 .. max 4x4x8x8" in str(info.value)
        assert "profile 1: x min 3x4x8x8 .. max 8x4x8x8" in str(info.value)

    def test_profile_switch_bookkeeping(self, runner):
        """Our bookkeeping around ``set_optimization_profile_async`` only, with stand-ins for the context and stream
        (that TensorRT then runs each profile is test_trt_gpu's ``test_engine_with_several_profiles``): the switch
        goes to our stream's handle, the active index follows it, and a refusal leaves it unchanged."""
        import types

        from dcn_deploy.backends.base import RunnerError

        calls = []
        runner._profiles.append({"x": TensorRange((3, 4, 8, 8), (6, 4, 8, 8), (8, 4, 8, 8))})
        runner._stream = types.SimpleNamespace(handle=0x5EED)
        runner._exec = types.SimpleNamespace(set_optimization_profile_async=lambda i, h: calls.append((i, h)) or True)
        runner._select_profile(1)
        assert calls == [(1, 0x5EED)] and runner.active_profile == 1

        def refuse(index, handle):
            raise RuntimeError("Error in set optimization profile async.")  # what TensorRT's binding raises

        runner._exec = types.SimpleNamespace(set_optimization_profile_async=refuse)
        with pytest.raises(RunnerError, match="refused to switch the execution context to optimisation profile 0 "
                                              "of 2 .Error in set optimization profile async"):
            runner._select_profile(0)
        assert runner.active_profile == 1


class TestProfileSelection:
    one = [{"x": TensorRange((1, 4, 8, 8), (2, 4, 8, 8), (4, 4, 8, 8))}]
    two_inputs = [  # small images at any batch, then large images at batch 1..2; overlapping at 32x32
        {"x": TensorRange((1, 3, 16, 16), (4, 3, 32, 32), (8, 3, 32, 32)),
         "offset": TensorRange((1, 18, 16, 16), (4, 18, 32, 32), (8, 18, 32, 32))},
        {"x": TensorRange((1, 3, 32, 32), (1, 3, 128, 128), (2, 3, 128, 128)),
         "offset": TensorRange((1, 18, 32, 32), (1, 18, 128, 128), (2, 18, 128, 128))},
    ]

    def test_one_profile_keeps_the_single_profile_message(self):
        from dcn_deploy.backends.trt_profiles import select_profile

        assert select_profile({"x": (3, 4, 8, 8)}, self.one) == 0
        with pytest.raises(ProfileError, match=r"outside the engine's profile min 1x4x8x8 .. max 4x4x8x8: "
                                               r"dimension\(s\) 0 \(5 not in 1..4\)"):
            select_profile({"x": (5, 4, 8, 8)}, self.one)

    def test_first_profile_containing_every_input(self):
        from dcn_deploy.backends.trt_profiles import select_profile

        small, large = (6, 3, 20, 20), (2, 3, 100, 64)
        assert select_profile({"x": small, "offset": (6, 18, 20, 20)}, self.two_inputs) == 0
        assert select_profile({"x": large, "offset": (2, 18, 100, 64)}, self.two_inputs) == 1
        # both contain 2x3x32x32: the first wins, whatever ran before
        assert select_profile({"x": (2, 3, 32, 32), "offset": (2, 18, 32, 32)}, self.two_inputs) == 0
        # each input fits some profile, but not the same one: no profile runs the call
        with pytest.raises(ProfileError) as info:
            select_profile({"x": (6, 3, 20, 20), "offset": (2, 18, 100, 64)}, self.two_inputs)
        message = str(info.value)
        assert "x 6x3x20x20, offset 2x18x100x64 fit none of the engine's 2 optimisation profiles" in message
        assert ("profile 0: x min 1x3x16x16 .. max 8x3x32x32; offset min 1x18x16x16 .. max 8x18x32x32 (outside: "
                "offset: dimension(s) 2 (100 not in 16..32), 3 (64 not in 16..32))") in message
        assert "profile 1: x min 1x3x32x32" in message and "x: dimension(s) 0 (6 not in 1..2), 2 (20 not in " \
                                                             "32..128), 3 (20 not in 32..128)" in message
        assert "--shapes NAME:MIN/OPT/MAX" in message

    def test_unknown_input_and_rank(self):
        from dcn_deploy.backends.trt_profiles import select_profile

        with pytest.raises(ProfileError, match="'y' is not in the engine's profiles"):
            select_profile({"y": (1,)}, self.two_inputs)
        with pytest.raises(ProfileError, match="it has 3 dimensions, the profile 4"):
            select_profile({"x": (1, 3, 16), "offset": (1, 18, 16, 16)}, self.two_inputs)

    def test_against_a_brute_force_search(self, rng):
        from dcn_deploy.backends.trt_profiles import select_profile

        profiles = []
        for _ in range(4):  # random batch x height windows
            lo = rng.integers(1, 6, size=2)
            hi = lo + rng.integers(0, 6, size=2)
            profiles.append({"x": TensorRange((int(lo[0]), 3, int(lo[1])), (int(lo[0]), 3, int(lo[1])),
                                              (int(hi[0]), 3, int(hi[1])))})
        hits = misses = 0
        for _ in range(300):
            shape = (int(rng.integers(1, 12)), 3, int(rng.integers(1, 12)))
            fitting = [i for i, p in enumerate(profiles)
                       if all(a <= s <= b for a, s, b in zip(p["x"].min, shape, p["x"].max))]
            if fitting:
                hits += 1
                assert select_profile({"x": shape}, profiles) == fitting[0]
            else:
                misses += 1
                with pytest.raises(ProfileError, match="fit none"):
                    select_profile({"x": shape}, profiles)
        assert hits > 20 and misses > 20  # both branches were exercised


def test_build_engine_refuses_a_device_other_than_the_first_visible(tmp_path):
    from dcn_deploy.backends.trt_build import BuildError, build_engine

    with pytest.raises(BuildError, match="CUDA_VISIBLE_DEVICES=1"):
        build_engine(tmp_path / "model.onnx", device=1)


@pytest.mark.parametrize("options,message", [
    ({"precision": "int8"}, "precision must be fp32, fp16 or bf16, got 'int8'"),
    ({"precision": "fp16", "io_dtype": "float16"}, "io_dtype must be 'float32' or 'half'"),
    ({"precision": "fp16", "keep_fp32": ["no_such_node"]}, r"keep_fp32 \(CLI: --keep-fp32\): no node named \['no_such_node'\]"),
    ({"io_dtype": "half"}, r"io_dtype='half' \(CLI: --io-dtype half\) applies to half-precision builds only, but "
                           r"the precision is fp32 \(the default\): add precision=\"fp16\""),
    ({"keep_fp32": ["conv"]}, r"keep_fp32 \(CLI: --keep-fp32\) applies to half-precision builds only"),
    ({"workspace": "lots"}, "--workspace: 'lots' is not a size"),
    ({"optimization_level": 7}, r"optimization_level \(--opt-level\) must be an integer from 0 to 5"),
    ({"precision": "bf16"}, r"bf16: the model imports ONNX opset 19, .* re-export with --opset 22, or use fp16"),
    ({"timing_cache": "no_such_folder/t.cache"}, r"timing cache .*t.cache: folder .*no_such_folder does not exist"),
    ({"timing_cache": "m.engine.json"}, r"engine sidecar .*m.engine.json is the timing cache this command reads"),
])
def test_build_engine_checks_its_options_before_tensorrt(tmp_path, options, message):
    """A wrong option is reported as such on any machine, not after installing TensorRT (whose absence is reported
    otherwise: the last case below)."""
    from dcn_deploy.backends.trt_build import TensorRTMissingError, build_engine

    path = tmp_path / "model.onnx"
    onnx.save(dcn_model(), str(path))
    if "timing_cache" in options:  # paths beside the engine, written after the build: checked before it
        options = dict(options, timing_cache=tmp_path / options["timing_cache"])
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        build_engine(path, tmp_path / "m.engine", tensorrt_module="no_such_tensorrt_module", **options)
    with pytest.raises(TensorRTMissingError):  # the same call with good options gets as far as importing TensorRT
        build_engine(path, tmp_path / "m.engine", tensorrt_module="no_such_tensorrt_module")


def dynamic_dcn_model(example=None) -> onnx.ModelProto:
    """:func:`dcn_model` with dynamic N/H/W, as ``export --dynamic`` writes it; ``example``: the shape stored
    under feeds.EXAMPLE_SHAPES_KEY (as export records it), or None for a file from elsewhere."""
    from dcn_deploy.feeds import EXAMPLE_SHAPES_KEY

    model = dcn_model()
    for value in list(model.graph.input) + list(model.graph.output):
        dims = value.type.tensor_type.shape.dim
        for axis, symbol in ((0, "N"), (2, "H"), (3, "W")):
            if axis < len(dims):
                dims[axis].Clear()
                dims[axis].dim_param = symbol
    if example is not None:
        helper.set_model_props(model, {EXAMPLE_SHAPES_KEY: json.dumps({"x": list(example)})})
    return model


def test_build_engine_takes_the_stored_example_size_for_dynamic_height_and_width(tmp_path, monkeypatch):
    """A file exported with --dynamic builds without shapes=: H/W are fixed to the stored example (one note line says
    so) and the batch ranges over 1..max_batch. Checked up to the TensorRT import (the engine build itself needs
    TensorRT and a GPU: tests/test_trt_gpu.py)."""
    import io

    from dcn_deploy.backends import trt_build
    from dcn_deploy.backends.trt_build import TensorRTMissingError, build_engine

    path = tmp_path / "dynamic.onnx"
    onnx.save(dynamic_dcn_model((1, 4, 24, 16)), str(path))
    log = io.StringIO()
    with pytest.raises(TensorRTMissingError):
        build_engine(path, tmp_path / "m.engine", precision="fp16", progress=False, log=log,
                     tensorrt_module="no_such_tensorrt_module")
    assert log.getvalue() == ""  # the profile's notes wait for a TensorRT that can build it
    log = io.StringIO()
    with monkeypatch.context() as patch:  # a TensorRT that imports (and then fails: no Logger)
        patch.setattr(trt_build, "import_tensorrt", lambda module: object())
        with pytest.raises(AttributeError):
            build_engine(path, tmp_path / "m.engine", precision="fp16", progress=False, log=log)
    assert log.getvalue() == ("[build] note: no shapes for input 'x': H and W fixed to the exported example 24x16 "
                              "(batch 1..8); for a range give shapes=\"x:MIN/OPT/MAX\" (CLI: --shapes "
                              "x:1x4x12x8/1x4x24x16/8x4x48x32)\n")
    assert trt_build._stored_examples(onnx.load(str(path))) == {"x": (1, 4, 24, 16)}
    # given shapes: no note, and the same call gets as far as TensorRT
    log = io.StringIO()
    with pytest.raises(TensorRTMissingError):
        build_engine(path, tmp_path / "m.engine", shapes="x:1x4x8x8/2x4x16x16/4x4x32x32", log=log,
                     tensorrt_module="no_such_tensorrt_module")
    assert "note" not in log.getvalue()

    # a dynamic file with no stored example: the error names the library argument, then the CLI option
    bare = tmp_path / "bare.onnx"
    onnx.save(dynamic_dcn_model(None), str(bare))
    with pytest.raises(ProfileError) as info:
        build_engine(bare, tmp_path / "m.engine", tensorrt_module="no_such_tensorrt_module")
    assert 'give shapes="x:1x4x<H>x<W>"' in str(info.value) and "(CLI: --shapes x:1x4x<H>x<W>)" in str(info.value)


class _ParsedModel(Exception):
    """Raised by a stand-in parse_network, carrying the model TensorRT's parser would get."""

    def __init__(self, prepared):
        super().__init__("parsed")
        self.prepared = prepared


@pytest.mark.parametrize("tf32, library_fields, expected", [
    (True, None, [1]),  # the default build: TF32 allowed, and the plugin told so
    (False, None, [0]),  # --no-tf32
    (True, ("strides", "pads", "dilations", "group", "offset_group"), [None]),  # an older library: no such field
])
def test_build_engine_tells_our_plugin_its_tf32_setting(tmp_path, monkeypatch, tf32, library_fields, expected):
    """build_engine writes its tf32 onto the routed DeformConv2d nodes of the model the parser gets (in memory: the
    file is not changed), where the loaded library's creator lists allow_tf32. Checked up to the parse with a
    stand-in TensorRT (the real build: tests/test_trt_gpu.py)."""
    from dcn_deploy.backends import trt_build
    from dcn_deploy.onnx.plugin_routing import PLUGIN_FIELDS

    path = tmp_path / "m.onnx"
    onnx.save(dcn_model(), str(path))
    before = path.read_bytes()

    class FakeTensorRT:
        class Logger:
            WARNING = 2

            def __init__(self, level):
                pass

        class Builder:
            def __init__(self, logger):
                pass

    fields = {"DeformConv2d": library_fields or PLUGIN_FIELDS["DeformConv2d"]}

    def parse(trt, builder, logger, prepared, onnx_path, **kwargs):
        raise _ParsedModel(prepared)

    monkeypatch.setattr(trt_build, "import_tensorrt", lambda module: FakeTensorRT)
    monkeypatch.setattr(trt_build, "load_plugins", lambda trt, model, library, *, rtx, say: (None, fields))
    monkeypatch.setattr(trt_build, "parse_network", parse)
    kwargs = {} if tf32 else {"tf32": False}  # the default is True
    with pytest.raises(_ParsedModel) as parsed:
        trt_build.build_engine(path, tmp_path / "m.engine", shapes="x:1x4x8x8", progress=False,
                               target_gpu=("stand-in", (8, 9)), **kwargs)
    assert TestPluginRouting.tf32_values(parsed.value.prepared) == expected
    assert routed_nodes(parsed.value.prepared) == [("dcn1 (dcn_deploy::DeformConv2d)", "dcn_deploy")]
    assert path.read_bytes() == before


@pytest.mark.skipif(HAS_TENSORRT, reason="with tensorrt installed the command would build the engine")
def test_build_command_without_tensorrt_says_so_without_the_profile_notes(tmp_path):
    from click.testing import CliRunner

    from dcn_deploy.cli import main

    path = tmp_path / "dynamic.onnx"
    onnx.save(dynamic_dcn_model((1, 4, 24, 16)), str(path))
    result = CliRunner().invoke(main, ["build", str(path), "-o", str(tmp_path / "m.engine"), "--precision", "fp16",
                                       "--quiet"])
    # the profile is no longer the error: the next step is TensorRT itself (not installed here), and its notes
    # wait for it
    assert "[build] note" not in result.output
    assert result.exit_code == 2 and "TensorRT is not installed" in result.output, result.output
    bare = tmp_path / "bare.onnx"
    onnx.save(dynamic_dcn_model(None), str(bare))
    result = CliRunner().invoke(main, ["build", str(bare)])
    assert result.exit_code == 2 and "give --shapes x:1x4x<H>x<W> (one fixed shape)" in result.output, result.output
    assert "(CLI:" not in result.output
    assert "TensorRT is not installed" not in result.output


def test_workspace_is_checked_once_by_the_library_before_the_model_is_read(tmp_path):
    """--workspace has one check, build_engine's (parse_size), made before the model is read: the CLI prints the
    library's message as bad input (exit 2), and a model that could not be read is not reported instead."""
    from click.testing import CliRunner

    from dcn_deploy.backends.trt_build import build_engine
    from dcn_deploy.cli import main

    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    for size in ("0", "-5", "-2G"):
        with pytest.raises(ValueError, match=f"--workspace must be positive, got '{size}'"):
            build_engine(junk, tmp_path / "m.engine", workspace=size, tensorrt_module="no_such_tensorrt_module")
    result = CliRunner().invoke(main, ["build", str(junk), "--workspace", "plenty"])
    assert result.exit_code == 2, result.output
    assert result.output.splitlines()[0] == ("error: --workspace: 'plenty' is not a size; write e.g. 4G, 512M or "
                                             "1024 (MiB)")
    assert "not a readable ONNX model" not in result.output and "TensorRT is not installed" not in result.output


# which engines need our plugin library --------------------------------------------------------------------------------
class TestPluginLibraryNeed:
    def test_what_the_sidecar_says(self, engine):
        need = engine_meta.needs_plugin_library
        ours = make_meta(engine, extra={"routed_nodes": 2})
        theirs = make_meta(engine, plugin_library=None, extra={"routed_nodes": 0})  # as build writes --no-plugin
        assert need(ours) is True and need(theirs) is False
        assert need(None) is None  # check_metadata=False: no sidecar read
        assert need(make_meta(engine, plugin_library=None)) is None  # no routed_nodes: a sidecar from elsewhere
        assert need(make_meta(engine, plugin_library=None, extra={"routed_nodes": 3})) is None  # disagreeing
        assert need(make_meta(engine, plugin_library=None, extra={"routed_nodes": False})) is None
        # and it survives the file round trip
        engine_meta.write_meta(engine, theirs)
        assert need(engine_meta.read_meta(engine)) is False

    def test_runner_loads_the_library_only_when_needed(self, engine, tmp_path, monkeypatch):
        """The runner's choice of library (``_plugin_path_for``), before any TensorRT call: a library that cannot
        load (here a text file) is never chosen for an engine whose sidecar says it has no layers of ours."""
        from dcn_deploy.backends import trt_plugins
        from dcn_deploy.backends.trt_runner import TrtRunner

        broken = tmp_path / "libbroken_plugin.so"
        broken.write_text("not a shared library")
        theirs = make_meta(engine, plugin_library=None, extra={"routed_nodes": 0})
        ours = make_meta(engine, extra={"routed_nodes": 1})

        runner = TrtRunner(engine, plugin_library=broken)
        assert runner._plugin_path_for(theirs) is None
        assert len(runner.warnings) == 1 and "not loaded" in runner.warnings[0] and "no dcn_deploy plugin" in \
            runner.warnings[0]
        assert TrtRunner(engine, plugin_library=broken)._plugin_path_for(ours) == broken
        # without a sidecar: as before, the explicit library, else whatever is found, else none
        assert TrtRunner(engine, plugin_library=broken)._plugin_path_for(None) == broken

        def nothing_found(explicit):
            if explicit is not None:
                return Path(explicit)
            raise FileNotFoundError("libdcn_deploy_plugin.so not built")

        monkeypatch.setattr(trt_plugins, "find_plugin_library", nothing_found)
        assert TrtRunner(engine)._plugin_path_for(None) is None
        assert TrtRunner(engine)._plugin_path_for(theirs) is None
        with pytest.raises(FileNotFoundError, match="not built"):
            TrtRunner(engine)._plugin_path_for(make_meta(engine, plugin_library={"path": "/gone.so", "sha256": "0"}))


# a second copy of the plugin library ------------------------------------------------------------------------------
class _StandInRegistry:
    """Stands in for TensorRT's plugin registry to check OUR bookkeeping only; it behaves as TensorRT documents
    ``load_library`` (None when a creator of the same name/version/namespace is already registered). That real
    TensorRT does so is test_trt_gpu's ``test_second_plugin_library_from_another_path``."""

    def __init__(self, loadable=True):
        self.creators = set()
        self.loadable = loadable
        self.loads = []

    def load_library(self, path):
        self.loads.append(path)
        names = {"DeformConv2d", "DeformRoIPool", "DeformPSRoIPool"}
        if not self.loadable or self.creators & names:
            return None
        self.creators |= names
        return object()

    def get_creator(self, name, version, namespace=""):
        return object() if (name in self.creators and version == "1" and namespace == "dcn_deploy") else None


class TestDuplicatePluginLibrary:
    @pytest.fixture
    def setup(self, tmp_path, rng, monkeypatch):
        import types

        from dcn_deploy.backends import trt_build, trt_plugins

        monkeypatch.setattr(trt_plugins, "_loaded_libraries", {})
        mapped = []
        monkeypatch.setattr(trt_plugins, "_mapped_files", lambda: list(mapped))
        registry = _StandInRegistry()
        trt = types.SimpleNamespace(get_plugin_registry=lambda: registry)
        first = tmp_path / "a" / "libdcn_deploy_plugin.so"
        first.parent.mkdir()
        # the shape of a plugin library as far as our check looks (ELF magic, the getCreators entry point)
        first.write_bytes(b"\x7fELF" + rng.integers(0, 255, 256, dtype=np.uint8).tobytes() + b"getCreators\0")
        return trt_build, trt, registry, first, mapped

    def test_another_build_from_another_path_names_the_first(self, setup, tmp_path):
        trt_build, trt, registry, first, _ = setup
        other = tmp_path / "b" / "libdcn_deploy_plugin.so"
        other.parent.mkdir()
        other.write_bytes(first.read_bytes() + b"\x00")  # another build: other bytes
        assert trt_build.load_plugin_library(trt, first) == first.resolve()
        assert trt_build.load_plugin_library(trt, first) == first.resolve() and len(registry.loads) == 1  # once
        with pytest.raises(trt_build.BuildError) as info:
            trt_build.load_plugin_library(trt, other)
        message = str(info.value)
        assert f"did not load the plugin library {other.resolve()}" in message
        assert f"loaded earlier from {first.resolve()}" in message
        assert "dcn_deploy::DeformConv2d (version 1)" in message and "start a new process" in message
        assert "must be built for this TensorRT" not in message

    def test_an_identical_copy_is_accepted(self, setup, tmp_path):
        trt_build, trt, registry, first, _ = setup
        copy = tmp_path / "copy" / "libdcn_deploy_plugin.so"
        copy.parent.mkdir()
        copy.write_bytes(first.read_bytes())
        trt_build.load_plugin_library(trt, first)
        assert trt_build.load_plugin_library(trt, copy, required_creators=["DeformConv2d"]) == copy.resolve()
        assert trt_build.load_plugin_library(trt, copy) == copy.resolve() and len(registry.loads) == 2

    def test_loaded_outside_dcn_deploy(self, setup, tmp_path):
        trt_build, trt, registry, first, mapped = setup
        registry.creators.add("DeformConv2d")  # the application loaded some library itself
        with pytest.raises(trt_build.BuildError, match=r"outside dcn_deploy \(its path is unknown\)\. TensorRT keeps"):
            trt_build.load_plugin_library(trt, first)
        elsewhere = tmp_path / "libdcn_deploy_plugin_v0.so"
        elsewhere.write_bytes(first.read_bytes() + b"older build")
        mapped += ["/usr/lib/libc.so.6", str(elsewhere)]
        with pytest.raises(trt_build.BuildError) as info:
            trt_build.load_plugin_library(trt, first)
        assert f"plugin libraries mapped in this process: {elsewhere} (its contents differ" in str(info.value)
        assert "libc" not in str(info.value) and f"keep using {elsewhere}" in str(info.value)
        mapped.append(str(first.resolve()))  # the application had loaded this very file: nothing to refuse
        assert trt_build.load_plugin_library(trt, first) == first.resolve()

    def test_a_library_that_does_not_load_keeps_its_message(self, setup, tmp_path):
        trt_build, trt, registry, first, _ = setup
        registry.loadable = False
        with pytest.raises(trt_build.BuildError, match="must be built for this TensorRT major version"):
            trt_build.load_plugin_library(trt, first)
        # a file that is no plugin library is not blamed on a duplicate, even where our creators are registered
        registry.creators.add("DeformConv2d")
        junk = tmp_path / "libdcn_deploy_plugin_junk.so"
        junk.write_text("not a shared library")
        with pytest.raises(trt_build.BuildError, match="is not a TensorRT plugin library .* give libdcn_deploy_plugin"):
            trt_build.load_plugin_library(trt, junk)
        assert trt_build.looks_like_plugin_library(first) and not trt_build.looks_like_plugin_library(junk)
        assert not trt_build.looks_like_plugin_library(tmp_path / "absent.so")

    def test_mapped_shared_objects(self):
        from dcn_deploy.backends.trt_build import mapped_shared_objects

        maps = ("7f00-7f10 r--p 00000000 08:01 123 /opt/my libs/libdcn_deploy_plugin.so\n"
                "7f10-7f20 r-xp 00010000 08:01 123 /opt/my libs/libdcn_deploy_plugin.so\n"
                "7f20-7f30 rw-p 00000000 00:00 0 \n"
                "7f30-7f40 rw-p 00000000 00:00 0 [heap]\n"
                "7f40-7f50 r--p 00000000 08:01 9 /usr/lib/libc.so.6\n")
        assert mapped_shared_objects(maps) == ["/opt/my libs/libdcn_deploy_plugin.so", "/usr/lib/libc.so.6"]


# how the parser gets the model -------------------------------------------------------------------------------------
class TestParseRoute:
    def test_route_table(self):
        from dcn_deploy.backends.trt_build import PARSE_IN_MEMORY_LIMIT, choose_parse_route

        assert PARSE_IN_MEMORY_LIMIT < 2 ** 31  # protobuf's limit, with room for the graph
        assert choose_parse_route(0, False) == "memory"
        assert choose_parse_route(PARSE_IN_MEMORY_LIMIT - 1, False) == "memory"
        assert choose_parse_route(PARSE_IN_MEMORY_LIMIT, False) == "file"
        assert choose_parse_route(3 * 2 ** 30, False) == "file"
        assert choose_parse_route(10, True) == "file"  # the source kept its weights outside
        assert choose_parse_route(100, False, limit=100) == "file"
        with pytest.raises(ValueError, match="tensor_bytes"):
            choose_parse_route(-1, False)

    def test_tensor_bytes_count_every_tensor(self, rng):
        from dcn_deploy.onnx.external_data import model_tensor_bytes

        model = dcn_model()
        initialisers = sum(numpy_helper.to_array(t).nbytes for t in model.graph.initializer)
        functions = sum(numpy_helper.to_array(a.t).nbytes for f in model.functions for n in f.node
                        for a in n.attribute if a.HasField("t"))
        assert model_tensor_bytes(model) == initialisers + functions > 0
        # a Constant node with typed (not raw) data, and one inside an If branch
        const = helper.make_node("Constant", [], ["k"], value=helper.make_tensor("k", TP.INT64, [5], [1, 2, 3, 4, 5]))
        branch = helper.make_graph([helper.make_node("Constant", [], ["b"], value=numpy_helper.from_array(
            rng.standard_normal(7).astype(np.float32)))], "branch", [], [helper.make_tensor_value_info("b", TP.FLOAT,
                                                                                                        [7])])
        model.graph.node.extend([const, helper.make_node("If", ["cond"], ["o"], then_branch=branch,
                                                         else_branch=branch)])
        assert model_tensor_bytes(model) == initialisers + functions + 5 * 8 + 2 * 7 * 4
        # packed 4-bit values (5 -> 3 bytes) and strings (their lengths)
        model.graph.node.extend([
            helper.make_node("Constant", [], ["q"], value=helper.make_tensor("q", TP.INT4, [5], [1, -2, 3, -4, 5])),
            helper.make_node("Constant", [], ["s"], value=helper.make_tensor("s", TP.STRING, [2], [b"ab", b"cde"]))])
        assert model_tensor_bytes(model) == initialisers + functions + 5 * 8 + 2 * 7 * 4 + 3 + 5

    def test_serialized_size_is_the_serialised_models(self, rng, tmp_path):
        """The one measure of "too large" (export's data file, the build's parse route): the bytes protobuf writes,
        measured without serialising raw tensor data, on tensors of every kind: raw and typed data, a Constant in an
        If branch, a sparse initialiser, strings, a function's constants; external data counts only its reference."""
        from dcn_deploy.onnx.external_data import model_tensor_bytes, serialized_size

        model = dcn_model(seed=5)
        branch = helper.make_graph([helper.make_node("Constant", [], ["b"], value=numpy_helper.from_array(
            rng.standard_normal((3, 7)).astype(np.float32)))], "branch", [],
            [helper.make_tensor_value_info("b", TP.FLOAT, [3, 7])])
        model.graph.node.extend([
            helper.make_node("Constant", [], ["k"], value=helper.make_tensor("k", TP.INT64, [4], [1, -2, 3, 1 << 40])),
            helper.make_node("Constant", [], ["s"], value=helper.make_tensor("s", TP.STRING, [2], [b"ab", b"cde"])),
            helper.make_node("If", ["cond"], ["o"], then_branch=branch, else_branch=branch, doc_string="x" * 300)])
        model.graph.sparse_initializer.append(helper.make_sparse_tensor(
            numpy_helper.from_array(rng.standard_normal(3).astype(np.float32), "sv"),
            numpy_helper.from_array(np.array([0, 4, 9], dtype=np.int64), "si"), [10]))
        model.metadata_props.add(key="note", value="y" * 100)
        big = numpy_helper.from_array(rng.standard_normal((40, 50)).astype(np.float32), "big")  # lengths > 127 B
        model.graph.initializer.append(big)
        for case in (model, onnx.ModelProto(), model.graph.node[-1].attribute[0].g):
            assert serialized_size(case) == case.ByteSize()
        # weights in an external file: the model that refers to them is small, as its file is
        path = tmp_path / "ext.onnx"
        onnx.save_model(onnx.ModelProto.FromString(model.SerializeToString()), str(path),
                        save_as_external_data=True, all_tensors_to_one_file=True, location="ext.onnx.data",
                        size_threshold=0)
        shell = onnx.load(str(path), load_external_data=False)
        assert serialized_size(shell) == shell.ByteSize() == len(shell.SerializeToString())
        assert serialized_size(shell) < model_tensor_bytes(model) < serialized_size(model)

    def test_too_large_counts_the_graph_at_any_threshold(self, monkeypatch):
        """Both decisions take the same size at a threshold: a model whose graph (here long doc strings) holds most
        of its bytes goes to a data file / the file route as soon as the whole message reaches the limit (tensor
        bytes alone, the build's former measure, would have kept it in memory)."""
        from dcn_deploy.backends.trt_build import choose_parse_route
        from dcn_deploy.onnx import export_file
        from dcn_deploy.onnx.external_data import PROTOBUF_LIMIT, model_tensor_bytes, serialized_size

        assert export_file.EXTERNAL_DATA_THRESHOLD_BYTES == 1900 << 20 and PROTOBUF_LIMIT == 2 ** 31
        model = dcn_model(seed=6)
        for node in model.graph.node:
            node.doc_string = "why this node is here " * 200
        size = serialized_size(model)
        assert model_tensor_bytes(model) < size // 2
        for limit, route in ((size, "file"), (size + 1, "memory"), (model_tensor_bytes(model), "file")):
            assert choose_parse_route(size, False, limit=limit) == route
            monkeypatch.setattr(export_file, "EXTERNAL_DATA_THRESHOLD_BYTES", limit)
            assert export_file.needs_external_data(model) is (route == "file")

    def _save_external(self, model, folder):
        path = folder / "ext.onnx"
        onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                        location="ext.onnx.weights", size_threshold=0)
        return path

    def test_external_data_is_detected_and_loaded(self, tmp_path):
        from dcn_deploy.backends.trt_build import read_model_for_build
        from dcn_deploy.onnx.external_data import uses_external_data

        model = dcn_model(seed=3)
        path = self._save_external(onnx.ModelProto.FromString(model.SerializeToString()), tmp_path)
        assert uses_external_data(onnx.load(str(path), load_external_data=False))
        loaded, external = read_model_for_build(path)
        assert external and not uses_external_data(loaded)
        for want, got in zip(model.graph.initializer, loaded.graph.initializer):
            np.testing.assert_array_equal(numpy_helper.to_array(want), numpy_helper.to_array(got))
        plain = tmp_path / "plain.onnx"
        onnx.save(model, plain)
        assert read_model_for_build(plain)[1] is False
        (tmp_path / "ext.onnx.weights").unlink()
        with pytest.raises(ValueError, match="external tensor data cannot be read.*beside it"):
            read_model_for_build(path)

    def test_written_model_runs_from_its_file_with_the_data_beside_it(self, tmp_path, rng):
        """What parse_from_file gets: ONNX Runtime (which reads external data relative to the model file, as
        TensorRT's parser does) runs the written file to the same outputs as the in-memory model."""
        from dcn_deploy.backends.trt_build import prepare_onnx
        from dcn_deploy.onnx.external_data import model_tensor_bytes, uses_external_data, write_with_external_data

        prepared, _, routed = prepare_onnx(dcn_model(seed=1), precision="fp16")
        assert routed == 1
        keep = onnx.ModelProto.FromString(prepared.SerializeToString())
        size = model_tensor_bytes(prepared)
        folder = tmp_path / "scratch"
        folder.mkdir()
        for _ in range(2):  # writing twice into the same folder must not append to the data file
            written = write_with_external_data(onnx.ModelProto.FromString(keep.SerializeToString()), folder)
        assert sorted(p.name for p in folder.iterdir()) == ["model.onnx", "model.onnx.data"]  # no temp files
        data = folder / "model.onnx.data"
        shell = onnx.load(str(written), load_external_data=False)
        assert uses_external_data(shell)
        # every byte once: tensors of 1 KiB and more in the data file, smaller ones inline
        assert data.stat().st_size + model_tensor_bytes(shell) == size and data.stat().st_size > size // 2
        import onnxruntime as ort

        feed = {"x": rng.standard_normal((2, 4, 8, 8)).astype(np.float32)}
        options = ort.SessionOptions()
        options.log_severity_level = 3
        from_file = ort.InferenceSession(str(written), options, providers=["CPUExecutionProvider"])
        got = dict(zip([o.name for o in from_file.get_outputs()], from_file.run(None, feed)))
        want = run_ort(keep, feed)
        for name in want:
            np.testing.assert_array_equal(got[name], want[name])
        # the function writes the data out of the proto it is given (no copy of a large model in memory)
        moved = onnx.ModelProto.FromString(keep.SerializeToString())
        write_with_external_data(moved, tmp_path, name="moved.onnx")
        assert model_tensor_bytes(moved) < size


@pytest.mark.skipif(not (Path(__file__).resolve().parents[1] / "build/native/lib/libdcn_deploy_plugin.so").is_file(),
                    reason="the plugin library is not built (dcn-deploy plugin build)")
def test_real_plugin_library_is_recognised_and_seen_mapped(tmp_path):
    """On the built library (no TensorRT needed: it links none): our check takes it for a plugin library, and once
    a process has dlopened it, /proc/self/maps lists it where the duplicate message looks (a fresh process)."""
    import subprocess
    import sys

    from dcn_deploy.backends.trt_build import looks_like_plugin_library

    library = (Path(__file__).resolve().parents[1] / "build/native/lib/libdcn_deploy_plugin.so").resolve()
    assert looks_like_plugin_library(library)
    script = ("import ctypes, sys; from dcn_deploy.backends import trt_plugins; ctypes.CDLL(sys.argv[1]); "
              "print('\\n'.join(trt_plugins._mapped_files()))")
    out = subprocess.run([sys.executable, "-c", script, str(library)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert str(library) in out.stdout.splitlines()


def test_profile_errors_name_the_option_the_range_came_from():
    """A range given with trtexec's --min/--opt/--max-shapes is reported under those options, not --shapes."""
    from dcn_deploy.backends.trt_profiles import compute_profile
    from dcn_deploy.wording import cli_wording

    inputs = [InputShape("image", ("N", 3, "H", "W"))]
    with cli_wording():
        with pytest.raises(ProfileError, match=r"^--min-shapes/--opt-shapes/--max-shapes: input 'image' dimension 0 "
                                               r"needs min <= opt <= max, got 4 / 2 / 1"):
            compute_profile(inputs, min_shapes="image:4x3x8x8", opt_shapes="image:2x3x8x8", max_shapes="image:1x3x8x8")
        with pytest.raises(ProfileError, match=r"^--min-shapes/--opt-shapes/--max-shapes: shape given for \['foo'\]"):
            compute_profile(inputs, min_shapes="foo:1x3x8x8", opt_shapes="foo:1x3x8x8", max_shapes="foo:1x3x8x8")
        with pytest.raises(ProfileError, match=r"^--shapes: input 'image' has 4 dimensions"):
            compute_profile(inputs, shapes="image:1x3x8")


def test_parser_error_on_a_standard_deform_conv_without_tensorrt_plugin_names_the_fix():
    """TensorRT-RTX 1.7 (no libnvinfer_plugin) on a --standard export or a --no-plugin build: the hint is not
    "pass --plugin" (which --no-plugin refuses, and which a standard DeformConv never uses)."""
    from dcn_deploy.backends.trt_build import format_parser_errors

    text = format_parser_errors([{"desc": "Assertion failed: creator: Plugin not found, are the plugin name, "
                                          "version, and namespace correct?", "code": "UNSUPPORTED_NODE",
                                  "node": 3, "node_name": "node_deform_conv2d", "op": "DeformConv"}], "m.onnx")
    assert "--plugin" not in text and "export without --standard" in text and "build without --no-plugin" in text


def test_parser_error_for_another_projects_op_does_not_blame_our_library():
    """mmdeploy's NMS left in an adopted file: the hint says whose plugin is missing, not ours."""
    from dcn_deploy.backends.trt_build import format_parser_errors

    text = format_parser_errors([{"desc": "Assertion failed: creator: Plugin not found, are the plugin name, "
                                          "version, and namespace correct?", "code": "UNSUPPORTED_NODE",
                                  "node": 9, "node_name": "nms", "op": "TRTBatchedNMS"}], "m.adopted.onnx")
    assert "TRTBatchedNMS is not one of dcn_deploy's ops" in text and "libmmdeploy_tensorrt_ops.so" in text
    assert "dcn_deploy plugin library was not loaded" not in text


def test_rebuild_command_reproduces_the_build(engine):
    """The command a mismatch error prints builds the same engine: profile, I/O type, --keep-fp32, TF32."""
    meta = make_meta(engine, precision="fp16",
                     profiles=[{"x": TensorRange((1, 4, 8, 8), (2, 4, 8, 8), (4, 4, 16, 16))}],
                     extra={"io_dtype": "half", "tf32": False, "precision_report": {"kept_fp32": [
                         ["conv1", "Conv", "named in --keep-fp32"], ["mean", "ReduceMean", "rule: reduction"]]}})
    assert engine_meta.rebuild_command(meta, "m.engine") == (
        "dcn-deploy build m.onnx -o m.engine --precision fp16 --shapes x:1x4x8x8/2x4x8x8/4x4x16x16 --io-dtype half "
        "--keep-fp32 conv1 --no-tf32")


def test_progress_says_a_cancelled_build_stopped():
    from dcn_deploy.backends.trt_progress import BuildProgress

    lines = []
    progress = BuildProgress(lines.append, clock=lambda: 0.0)
    progress.phase_start("Building engine", None, 6)
    progress.cancel()
    assert progress.step_complete("Building engine", 0) is False
    progress.phase_finish("Building engine")
    assert lines[-1] == "[build] Building engine stopped (Ctrl-C) (0.0 s)"
