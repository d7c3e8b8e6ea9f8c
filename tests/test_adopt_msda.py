"""mmdeploy's MMCVMultiScaleDeformableAttention (Deformable DETR, DINO) adopted as standard ONNX GridSample per level
(dcn_deploy.onnx.adopt_msda), run in ONNX Runtime against a NumPy model of mmdeploy 1.3.1's TensorRT kernel
(``trt_ms_deform_attn_kernel.cuh``: per query, head and channel, the sum over levels and points of the weight times
the bilinear sample at ``(y * H - 0.5, x * W - 0.5)``, counted only inside (-1, H) x (-1, W), each neighbour outside
the map reading zero), written element by element in float64 with no GridSample in it."""
from __future__ import annotations

import json
import math

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

ort = pytest.importorskip("onnxruntime")

from dcn_deploy.onnx.adopt import AdoptionError, adopt_model  # noqa: E402
from dcn_deploy.onnx.precision import convert_precision  # noqa: E402

_INPUT_NAMES = ["value", "spatial_shapes", "level_start_index", "sampling_locations", "attention_weights"]


def plugin_msda(value, shapes, starts, locations, weights):
    """The kernel's loop, in float64: output (bs, nq, heads * dim)."""
    bs, _, heads, dim = value.shape
    _, nq, _, levels, points, _ = locations.shape
    out = np.zeros((bs, nq, heads, dim))
    for b in range(bs):
        for q in range(nq):
            for m in range(heads):
                for level in range(levels):
                    height, width = (int(v) for v in shapes[level])
                    level_map = value[b, int(starts[level]):int(starts[level]) + height * width, m]
                    level_map = level_map.reshape(height, width, dim).astype(np.float64)
                    for p in range(points):
                        x, y = (float(v) for v in locations[b, q, m, level, p])
                        h_im, w_im = y * height - 0.5, x * width - 0.5
                        if not (h_im > -1 and w_im > -1 and h_im < height and w_im < width):  # NaN: skipped
                            continue
                        h0, w0 = math.floor(h_im), math.floor(w_im)
                        lh, lw = h_im - h0, w_im - w0
                        sample = np.zeros(dim)
                        for dy, dx, weight in ((0, 0, (1 - lh) * (1 - lw)), (0, 1, (1 - lh) * lw),
                                               (1, 0, lh * (1 - lw)), (1, 1, lh * lw)):
                            if 0 <= h0 + dy < height and 0 <= w0 + dx < width:
                                sample += weight * level_map[h0 + dy, w0 + dx]
                        out[b, q, m] += float(weights[b, q, m, level, p]) * sample
    return out.reshape(bs, nq, heads * dim)


def _case(rng, bs, nq, heads, dim, sizes, points, spread=0.3, dtype=np.float32):
    """Random inputs: locations in [-spread, 1 + spread] (some off the map), weights softmax-like and random."""
    shapes = np.array(sizes, np.int64)
    starts = np.concatenate([[0], np.cumsum(shapes[:, 0] * shapes[:, 1])[:-1]]).astype(np.int64)
    keys = int((shapes[:, 0] * shapes[:, 1]).sum())
    value = rng.standard_normal((bs, keys, heads, dim)).astype(dtype)
    locations = rng.uniform(-spread, 1 + spread, (bs, nq, heads, len(sizes), points, 2)).astype(dtype)
    weights = rng.uniform(0.05, 1.0, (bs, nq, heads, len(sizes), points)).astype(dtype)
    return value, shapes, starts, locations, weights


def _model(levels, *, index_type=TensorProto.INT64, shapes_as=None, declare_levels=True, opset=11,
           float_type=TensorProto.FLOAT, before=()):
    """A graph holding one mmdeploy node; ``shapes_as``: spatial shapes and start indices as initializers (their
    values), else graph inputs."""
    node = helper.make_node("MMCVMultiScaleDeformableAttention", _INPUT_NAMES, ["out"], domain="mmdeploy",
                            name="msda", im2col_step=64)
    level_dim = levels if declare_levels else "levels"
    inputs = [helper.make_tensor_value_info("value", float_type, ["bs", "keys", "heads", "dim"]),
              helper.make_tensor_value_info("sampling_locations", float_type,
                                            ["bs", "nq", "heads", level_dim, "points", 2]),
              helper.make_tensor_value_info("attention_weights", float_type,
                                            ["bs", "nq", "heads", level_dim, "points"])]
    initializers = []
    if shapes_as is None:
        inputs += [helper.make_tensor_value_info("spatial_shapes", index_type, [level_dim, 2]),
                   helper.make_tensor_value_info("level_start_index", index_type, [level_dim])]
    else:
        np_type = helper.tensor_dtype_to_np_dtype(index_type)
        initializers = [numpy_helper.from_array(shapes_as[0].astype(np_type), "spatial_shapes"),
                        numpy_helper.from_array(shapes_as[1].astype(np_type), "level_start_index")]
    output = helper.make_tensor_value_info("out", float_type, ["bs", "nq", "channels"])
    graph = helper.make_graph([*before, node], "g", inputs, [output], initializer=initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset), helper.make_opsetid("mmdeploy", 1)])
    model.ir_version = 8
    return model


def _run(model, value, shapes, starts, locations, weights, index_type=np.int64):
    adopted, adoption = adopt_model(model)
    onnx.checker.check_model(adopted, full_check=True)
    assert all(n.domain in ("", "ai.onnx") for n in adopted.graph.node)
    session = ort.InferenceSession(adopted.SerializeToString(), providers=["CPUExecutionProvider"])
    names = {i.name for i in session.get_inputs()}
    feed = {"value": value, "sampling_locations": locations, "attention_weights": weights,
            "spatial_shapes": shapes.astype(index_type), "level_start_index": starts.astype(index_type)}
    return session.run(None, {k: v for k, v in feed.items() if k in names})[0], adoption


@pytest.mark.parametrize("bs, nq, heads, dim, sizes, points, seed", [
    (1, 7, 2, 4, [(6, 9), (3, 5), (2, 3), (1, 2)], 4, 0),  # Deformable DETR's 4 levels, small
    (2, 5, 3, 2, [(4, 4), (2, 2)], 3, 1),  # batch 2
    (1, 4, 1, 3, [(1, 7), (5, 1)], 2, 2),  # H or W of 1
    (2, 3, 8, 1, [(5, 6)], 1, 3),  # one level, one point, 8 heads
    (1, 6, 2, 5, [(3, 4), (7, 2), (1, 1)], 5, 4),  # a 1x1 level
])
def test_multi_scale_deformable_attention_matches_the_plugin(bs, nq, heads, dim, sizes, points, seed):
    rng = np.random.default_rng(seed)
    inputs = _case(rng, bs, nq, heads, dim, sizes, points)
    got, adoption = _run(_model(len(sizes)), *inputs)
    want = plugin_msda(*inputs)
    assert got.shape == (bs, nq, heads * dim) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert any(abs(v) > 0.1 for v in want.ravel())  # not all zeros
    report = adoption.nodes[0]
    assert (report.source, report.target, report.attributes) == (
        "mmdeploy::MMCVMultiScaleDeformableAttention", "ONNX GridSample, per level", {"levels": len(sizes)})


def test_locations_far_off_the_map_nan_and_infinite_add_nothing():
    """The plugin skips a sample out of (-1, H) x (-1, W), a NaN one included; GridSample alone would read a pixel
    for NaN, infinity or 1e30 (ONNX Runtime returns one), so the adopted graph clips the locations first."""
    rng = np.random.default_rng(5)
    value, shapes, starts, locations, weights = _case(rng, 1, 10, 2, 3, [(4, 5), (2, 3)], 2)
    # queries 7 and 9 set y (odd), on level 0 (H = 4) exactly at y * H - 0.5 = -1 and = H
    odd = [np.nan, np.inf, -np.inf, 1e30, -1e30, 5.0, -4.0, -0.5 / 4, 1.0 + 1.5 / 5, 1.0 + 0.5 / 4]
    for q, bad in enumerate(odd):
        locations[0, q, :, :, 0, q % 2] = bad  # one coordinate of the first point of each level
    got, _ = _run(_model(2), value, shapes, starts, locations, weights)
    want = plugin_msda(value, shapes, starts, locations, weights)
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_locations_on_the_map_border_and_just_inside():
    """Positions exactly at -1 < pos and pos = H - 1 + epsilon, where the plugin's per-neighbour zero rule decides."""
    rng = np.random.default_rng(6)
    value, shapes, starts, locations, weights = _case(rng, 1, 6, 1, 4, [(4, 6)], 3)
    height, width = 4, 6
    for q, (h_im, w_im) in enumerate([(-0.999, 0.0), (3.001, 5.5), (0.0, -0.5), (2.5, 5.0), (-0.5, -0.5),
                                      (3.999, 5.999)]):
        locations[0, q, 0, 0, 0] = [(w_im + 0.5) / width, (h_im + 0.5) / height]
    got, _ = _run(_model(1), value, shapes, starts, locations, weights)
    np.testing.assert_allclose(got, plugin_msda(value, shapes, starts, locations, weights), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("index_type", [TensorProto.INT32, TensorProto.INT64])
def test_spatial_shapes_as_stored_constants_of_either_integer_type(index_type):
    """mmdeploy's TensorRT plugin reads int32 shapes; torch writes int64. Stored in the file, their count gives the
    levels even where nothing else declares it."""
    rng = np.random.default_rng(7)
    inputs = _case(rng, 1, 5, 2, 3, [(5, 4), (3, 2), (1, 1)], 2)
    model = _model(3, index_type=index_type, shapes_as=(inputs[1], inputs[2]), declare_levels=False)
    got, adoption = _run(model, *inputs)
    np.testing.assert_allclose(got, plugin_msda(*inputs), rtol=1e-5, atol=1e-5)
    assert adoption.nodes[0].attributes == {"levels": 3}


def test_spatial_shapes_fed_as_int32_inputs():
    """The same, the shapes and start indices fed at run time as int32 (what the plugin reads)."""
    inputs = _case(np.random.default_rng(16), 2, 4, 2, 3, [(5, 4), (3, 2)], 2)
    got, _ = _run(_model(2, index_type=TensorProto.INT32), *inputs, index_type=np.int32)
    np.testing.assert_allclose(got, plugin_msda(*inputs), rtol=1e-5, atol=1e-5)


def test_level_sizes_and_start_indices_are_read_at_run_time():
    """One adopted file, fed two different pyramids (dynamic height and width) and a start index that is not the
    running sum (keys before the first level, which the plugin skips)."""
    model = _model(2)
    adopted, _ = adopt_model(model)
    session = ort.InferenceSession(adopted.SerializeToString(), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(8)
    for sizes in ([(6, 8), (3, 4)], [(5, 3), (3, 2)]):
        value, shapes, starts, locations, weights = _case(rng, 2, 4, 2, 3, sizes, 2)
        value = np.concatenate([rng.standard_normal((2, 3, 2, 3)).astype(np.float32), value], axis=1)
        starts = starts + 3
        got = session.run(None, {"value": value, "spatial_shapes": shapes, "level_start_index": starts,
                                 "sampling_locations": locations, "attention_weights": weights})[0]
        np.testing.assert_allclose(got, plugin_msda(value, shapes, starts, locations, weights), rtol=1e-5,
                                   atol=1e-5)


def test_level_count_from_shape_inference():
    """Locations made by a Reshape to a constant shape (how DETR's heads write them) and no declared level axis
    anywhere: onnx's shape inference finds the count."""
    rng = np.random.default_rng(9)
    value, shapes, starts, locations, weights = _case(rng, 1, 3, 2, 2, [(3, 3), (2, 2)], 2)
    target = numpy_helper.from_array(np.array([1, 3, 2, 2, 2, 2], np.int64), "loc_shape")
    before = [helper.make_node("Constant", [], ["loc_shape"], value=target),
              helper.make_node("Reshape", ["flat_locations", "loc_shape"], ["sampling_locations"])]
    model = _model(2, declare_levels=False, before=before, opset=19)
    model.graph.input[1].name = "flat_locations"
    model.graph.input[1].type.tensor_type.shape.Clear()
    adopted, adoption = adopt_model(model)
    assert adoption.nodes[0].attributes == {"levels": 2}
    session = ort.InferenceSession(adopted.SerializeToString(), providers=["CPUExecutionProvider"])
    got = session.run(None, {"value": value, "spatial_shapes": shapes, "level_start_index": starts,
                             "flat_locations": locations.reshape(-1), "attention_weights": weights})[0]
    np.testing.assert_allclose(got, plugin_msda(value, shapes, starts, locations, weights), rtol=1e-5, atol=1e-5)


def test_unknown_level_count_is_refused_naming_the_node():
    model = _model(2, declare_levels=False)
    with pytest.raises(AdoptionError, match=r"'msda'.*number of feature levels is not known.*sampling_locations"):
        adopt_model(model)


def test_inputs_disagreeing_on_the_level_count_are_refused():
    model = _model(2)
    model.graph.input[2].type.tensor_type.shape.dim[3].dim_value = 3  # the weights say 3 levels
    with pytest.raises(AdoptionError, match=r"'msda'.*disagree on the number of feature levels"):
        adopt_model(model)


def test_wrong_rank_of_locations_is_refused():
    model = _model(2)
    del model.graph.input[1].type.tensor_type.shape.dim[-1]
    with pytest.raises(AdoptionError, match=r"'msda'.*sampling_locations 'sampling_locations' has rank 5.*rank 6"):
        adopt_model(model)


def test_opset_20_writes_the_renamed_linear_mode():
    adopted, _ = adopt_model(_model(1, opset=20))
    modes = {helper.get_attribute_value(a) for n in adopted.graph.node if n.op_type == "GridSample"
             for a in n.attribute if a.name == "mode"}
    assert modes == {b"linear"}
    rng = np.random.default_rng(10)
    inputs = _case(rng, 1, 3, 1, 2, [(3, 4)], 2)
    got, _ = _run(_model(1, opset=20), *inputs)
    np.testing.assert_allclose(got, plugin_msda(*inputs), rtol=1e-5, atol=1e-5)


def test_a_float16_build_keeps_the_attention_float32():
    """``build --precision fp16``'s conversion leaves every adopted node float32 (marked), so the attention of a
    float16 model fed float32 inputs gives the float32 result."""
    rng = np.random.default_rng(11)
    value, shapes, starts, locations, weights = _case(rng, 1, 5, 2, 4, [(8, 9), (4, 5)], 3)
    adopted, _ = adopt_model(_model(2))
    half, _ = convert_precision(adopted, "fp16")
    assert half.graph.node and all(n.doc_string.startswith("dcn_deploy: keep float32") for n in half.graph.node)
    session = ort.InferenceSession(half.SerializeToString(), providers=["CPUExecutionProvider"])
    got = session.run(None, {"value": value, "spatial_shapes": shapes, "level_start_index": starts,
                             "sampling_locations": locations, "attention_weights": weights})[0]
    np.testing.assert_allclose(got, plugin_msda(value, shapes, starts, locations, weights), rtol=1e-5, atol=1e-5)


def test_inspect_points_to_adopt_for_mmdeploy_ops_that_are_not_convolutions(tmp_path):
    """A file whose only mmdeploy node is the attention: ``inspect`` names it and the adopt command."""
    from cli_helpers import cli_runner
    from dcn_deploy.cli import main
    from dcn_deploy.onnx.inspect import format_inspection, inspect_model

    path = tmp_path / "detr.onnx"
    onnx.save(_model(2), path)
    info = inspect_model(path)
    assert info["foreign_other"] == {"mmdeploy::MMCVMultiScaleDeformableAttention": 1}  # counted, as op_counts is
    printed = cli_runner().invoke(main, ["inspect", str(path), "--json"])
    assert json.loads(printed.stdout)["foreign_other"] == {"mmdeploy::MMCVMultiScaleDeformableAttention": 1}
    text = format_inspection(info)
    assert (f"other mmcv/mmdeploy ops: 1 mmdeploy::MMCVMultiScaleDeformableAttention: they run only with their "
            f"project's plugin library; dcn-deploy adopt {path} rewrites them as standard ONNX") in text
    adopted, _ = adopt_model(onnx.load(path))
    onnx.save(adopted, tmp_path / "adopted.onnx")
    assert inspect_model(tmp_path / "adopted.onnx")["foreign_other"] == {}


def _locations_reshaped_from(source: str):
    """Nodes making sampling_locations (bs, nq, 2, 2, 2, 2) from ``source``'s first two sizes and a constant ``tail``
    (2, 2, 2, 2), as DETR heads' Reshapes do: only data propagation through ``source``'s shape gives the levels."""
    return [helper.make_node("Shape", [source], ["lead"], start=0, end=2),
            helper.make_node("Concat", ["lead", "tail"], ["target"], axis=0),
            helper.make_node("Reshape", [source, "target"], ["raw_locations"]),
            helper.make_node("Sigmoid", ["raw_locations"], ["sampling_locations"])]


def _adopted_both(model, first: str):
    """The ONNX Runtime session of ``model`` adopted: its ``first`` node, then the attention in the second round,
    whose 2 levels shape inference found through the first's rewrite."""
    adopted, adoption = adopt_model(model)
    assert [n.source for n in adoption.nodes] == [first, "mmdeploy::MMCVMultiScaleDeformableAttention"]
    assert adoption.nodes[1].attributes == {"levels": 2} and adoption.left == []
    return ort.InferenceSession(adopted.SerializeToString(), providers=["CPUExecutionProvider"])


def test_level_count_inferred_through_other_mmdeploy_nodes():
    """As in mmdeploy's Deformable DETR exports: the locations' shape is only known by data propagation through the
    output of another mmdeploy node (GroupNorm as TRTInstanceNormalization, which shape inference cannot see
    through), so the attention is rewritten after that node is standard ONNX."""
    rng = np.random.default_rng(12)
    value, shapes, starts, _, weights = _case(rng, 2, 3, 2, 2, [(3, 4), (2, 2)], 2)
    features = rng.standard_normal((2, 3, 16)).astype(np.float32)
    ones, zeros = (numpy_helper.from_array(np.full(3, v, np.float32), n) for v, n in ((1, "scale"), (0, "bias")))
    tail = numpy_helper.from_array(np.array([2, 2, 2, 2], np.int64), "tail")
    before = [helper.make_node("TRTInstanceNormalization", ["features", "scale", "bias"], ["normed"],
                               domain="mmdeploy", epsilon=1e-5),
              *_locations_reshaped_from("normed")]
    model = _model(2, declare_levels=False, before=before)
    model.graph.input[1].CopyFrom(helper.make_tensor_value_info("features", TensorProto.FLOAT, ["bs", "nq", 16]))
    model.graph.initializer.extend([ones, zeros, tail])
    session = _adopted_both(model, "mmdeploy::TRTInstanceNormalization")
    got = session.run(None, {"value": value, "spatial_shapes": shapes, "level_start_index": starts,
                             "features": features, "attention_weights": weights})[0]
    centred = features - features.mean(-1, keepdims=True)
    normed = centred / np.sqrt((centred ** 2).mean(-1, keepdims=True) + 1e-5)
    locations = 1 / (1 + np.exp(-normed.reshape(2, 3, 2, 2, 2, 2)))
    np.testing.assert_allclose(got, plugin_msda(value, shapes, starts, locations, weights), rtol=1e-5, atol=1e-5)


def test_level_count_inferred_through_an_adopted_deformable_convolution():
    """As above with a deformable convolution (a DCN backbone) before the locations: adopted in the first round as
    our op, whose schema shape inference must know in the second (the model imports our domain only at the end)."""
    rng = np.random.default_rng(14)
    value, shapes, starts, _, weights = _case(rng, 2, 3, 2, 2, [(3, 4), (2, 2)], 2)
    features = rng.standard_normal((2, 3, 4, 4)).astype(np.float32)
    offset = rng.uniform(-1, 1, (2, 18, 4, 4)).astype(np.float32)
    mask = rng.uniform(0, 1, (2, 9, 4, 4)).astype(np.float32)
    kernel = numpy_helper.from_array((rng.standard_normal((3, 3, 3, 3)) * 0.3).astype(np.float32), "kernel")
    bias = numpy_helper.from_array(np.zeros(3, np.float32), "bias")
    tail = numpy_helper.from_array(np.array([2, 2, 2, 2], np.int64), "tail")
    before = [helper.make_node("MMCVModulatedDeformConv2d", ["features", "offset", "mask", "kernel", "bias"],
                               ["convolved"], domain="mmdeploy", name="dcn", stride=[1, 1], padding=[1, 1],
                               dilation=[1, 1], groups=1, deform_groups=1),
              *_locations_reshaped_from("convolved")]
    model = _model(2, declare_levels=False, before=before)
    model.graph.input[1].CopyFrom(helper.make_tensor_value_info("features", TensorProto.FLOAT, ["bs", 3, 4, 4]))
    model.graph.input.extend([helper.make_tensor_value_info("offset", TensorProto.FLOAT, ["bs", 18, 4, 4]),
                              helper.make_tensor_value_info("mask", TensorProto.FLOAT, ["bs", 9, 4, 4])])
    model.graph.output.append(helper.make_tensor_value_info("sampling_locations", TensorProto.FLOAT, None))
    model.graph.initializer.extend([kernel, bias, tail])
    session = _adopted_both(model, "mmdeploy::MMCVModulatedDeformConv2d")
    got, locations = session.run(None, {"value": value, "spatial_shapes": shapes, "level_start_index": starts,
                                        "features": features, "offset": offset, "mask": mask,
                                        "attention_weights": weights})
    assert locations.shape == (2, 3, 2, 2, 2, 2)
    np.testing.assert_allclose(got, plugin_msda(value, shapes, starts, locations, weights), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("bs, nq, dim", [(0, 3, 2), (2, 0, 2), (2, 3, 0)])
def test_an_empty_batch_query_set_or_channel_set_gives_an_empty_output(bs, nq, dim):
    """The heads are folded into the batch and back by Reshapes given every size (a -1 beside a 0 is ambiguous, and
    a 0 would copy the input's size)."""
    inputs = _case(np.random.default_rng(15), bs, nq, 2, dim, [(3, 4), (2, 2)], 2)
    got, _ = _run(_model(2), *inputs)
    assert got.shape == (bs, nq, 2 * dim)


def detr_like_model(heads=2, dim=4, levels=4, points=2):
    """The attention as mmdet's Deformable DETR feeds it in mmdeploy's exports: the spatial shapes from the Shape of
    each feature map (so they change with the input size), the start indices from their running sum (CumSum), the
    value from the maps flattened and concatenated, split into heads by a Reshape."""
    nodes, initializers = [], []

    def const(name, values):
        initializers.append(numpy_helper.from_array(np.asarray(values, np.int64), name))
        return name

    for level in range(levels):
        nodes += [helper.make_node("Shape", [f"feat{level}"], [f"shape{level}"]),  # opset 11: Slice, no start=2
                  helper.make_node("Slice", [f"shape{level}", const(f"from{level}", [2]), const(f"to{level}", [4])],
                                   [f"size{level}"]),
                  helper.make_node("Reshape", [f"feat{level}", const(f"flat{level}", [0, 0, -1])], [f"keys{level}"])]
    nodes += [helper.make_node("Concat", [f"size{level}" for level in range(levels)], ["sizes"], axis=0),
              helper.make_node("Reshape", ["sizes", const("pairs", [-1, 2])], ["spatial_shapes"]),
              helper.make_node("ReduceProd", ["spatial_shapes"], ["areas"], axes=[1], keepdims=0),
              helper.make_node("CumSum", ["areas", const("axis0", 0)], ["ends"]),
              helper.make_node("Slice", ["ends", const("start0", [0]), const("end_last", [-1])], ["later"]),
              helper.make_node("Concat", [const("zero", [0]), "later"], ["level_start_index"], axis=0),
              helper.make_node("Concat", [f"keys{level}" for level in range(levels)], ["all_keys"], axis=2),
              helper.make_node("Transpose", ["all_keys"], ["keys_first"], perm=[0, 2, 1]),
              helper.make_node("Reshape", ["keys_first", const("split_heads", [0, 0, heads, dim])], ["value"]),
              helper.make_node("MMCVMultiScaleDeformableAttention", _INPUT_NAMES, ["out"], domain="mmdeploy",
                               name="msda", im2col_step=64)]
    inputs = [helper.make_tensor_value_info(f"feat{level}", TensorProto.FLOAT,
                                            ["bs", heads * dim, f"h{level}", f"w{level}"]) for level in range(levels)]
    inputs += [helper.make_tensor_value_info("sampling_locations", TensorProto.FLOAT,
                                             ["bs", "nq", heads, levels, points, 2]),
               helper.make_tensor_value_info("attention_weights", TensorProto.FLOAT,
                                             ["bs", "nq", heads, levels, points])]
    graph = helper.make_graph(nodes, "detr", inputs,
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["bs", "nq", heads * dim])],
                              initializer=initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11), helper.make_opsetid("mmdeploy", 1)])
    model.ir_version = 8
    return model


def test_detr_like_feeding_at_two_input_sizes():
    """Spatial shapes and start indices computed in the graph from the feature maps, at two pyramid sizes."""
    adopted, _ = adopt_model(detr_like_model())
    session = ort.InferenceSession(adopted.SerializeToString(), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(13)
    for height, width in ((12, 10), (9, 16)):
        maps = [rng.standard_normal((2, 8, -(-height // 2 ** k), -(-width // 2 ** k))).astype(np.float32)
                for k in range(4)]
        feed = {f"feat{k}": m for k, m in enumerate(maps)}
        feed["sampling_locations"] = rng.uniform(-0.2, 1.2, (2, 5, 2, 4, 2, 2)).astype(np.float32)
        feed["attention_weights"] = rng.uniform(0, 1, (2, 5, 2, 4, 2)).astype(np.float32)
        value = np.concatenate([m.reshape(2, 8, -1) for m in maps], axis=2).transpose(0, 2, 1).reshape(2, -1, 2, 4)
        shapes = np.array([m.shape[2:] for m in maps])
        starts = np.concatenate([[0], np.cumsum(shapes[:, 0] * shapes[:, 1])[:-1]])
        np.testing.assert_allclose(session.run(None, feed)[0],
                                   plugin_msda(value, shapes, starts, feed["sampling_locations"],
                                               feed["attention_weights"]), rtol=1e-5, atol=1e-5)


def test_cli_adopt_then_verify_against_ort(tmp_path):
    """The two commands adopt prints for next: the adopted attention (stored level sizes, as a fixed-size export
    has them) passes ``verify --against ort``, the onnx reference evaluator (our GridSample, both mode names)
    against ONNX Runtime."""
    from cli_helpers import cli_runner

    from dcn_deploy.cli import main

    shapes = np.array([[6, 5], [3, 3], [2, 2]])
    starts = np.concatenate([[0], np.cumsum(shapes[:, 0] * shapes[:, 1])[:-1]])
    for opset in (11, 20):
        path = tmp_path / f"detr_{opset}.onnx"
        onnx.save(_model(3, shapes_as=(shapes, starts), opset=opset), path)
        adopt = cli_runner().invoke(main, ["adopt", str(path)])
        assert adopt.exit_code == 0, adopt.output
        adopted = tmp_path / f"detr_{opset}.adopted.onnx"
        assert f"dcn-deploy verify {adopted} --against ort" in adopt.stdout
        verify = cli_runner().invoke(main, ["verify", str(adopted), "--against", "ort", "--shape", "value=2x43x2x4",
                                            "--shape", "sampling_locations=2x6x2x3x2x2",
                                            "--shape", "attention_weights=2x6x2x3x2"])
        assert verify.exit_code == 0 and "PASSED: 1 of 1" in verify.stdout, verify.output
