"""What ``dcn-deploy adopt`` tells a user beside the rewrite: the next commands with the sizes a dynamic input needs,
the batch-offset note of mmdeploy's DETR heads (dcn_deploy.onnx.adopt_batch_offsets), and the errors for a file that
is already adopted or truncated."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

ort = pytest.importorskip("onnxruntime")

from cli_helpers import cli_runner, error_lines  # noqa: E402

from dcn_deploy.cli import main  # noqa: E402
from dcn_deploy.feeds.shapes import format_shape  # noqa: E402
from dcn_deploy.onnx.adopt import adopt_file  # noqa: E402

QUERIES, CLASSES, PER_IMAGE = 6, 4, 3


def _constant(name, value):
    return helper.make_node("Constant", [], [name], name=name, value=numpy_helper.from_array(np.array(value), name))


def _detr_like(step, boxes="static"):
    """An mmdeploy grid_sampler beside a DETR-like head as mmdeploy 1.3.1 writes it (opset 11): TopK over the
    flattened (queries x classes) sigmoid scores, query = index // classes, plus Range(batch) * ``step`` to reach
    each image's rows of the (batch * queries, 4) box table. ``boxes``: "static", the table reshaped from
    (batch, queries, 4) boxes; "dynamic", from (batch, q, 4) boxes with q a symbol, and the scores' too (as DINO's
    two-stage head leaves them to inference); "flat", boxes given as the (rows, 4) table (the spacing not shown)."""
    nodes = [
        helper.make_node("grid_sampler", ["data", "grid"], ["sampled"], domain="mmdeploy", name="sampler",
                         interpolation_mode=0, padding_mode=0, align_corners=0),
        helper.make_node("Sigmoid", ["scores"], ["sig"], name="sig"),
        helper.make_node("Flatten", ["sig"], ["flat"], axis=1, name="flat"),
        _constant("k", np.array([PER_IMAGE], np.int64)),
        helper.make_node("TopK", ["flat", "k"], ["top", "index"], axis=1, name="topk"),
        _constant("classes", np.int64(CLASSES)),
        helper.make_node("Div", ["index", "classes"], ["query"], name="div"),
        helper.make_node("Shape", ["scores"], ["shape"], name="shape"),
        _constant("zero", np.int64(0)), _constant("one", np.int64(1)), _constant("step", np.int64(step)),
        helper.make_node("Gather", ["shape", "zero"], ["batch"], axis=0, name="batch"),
        helper.make_node("Range", ["zero", "batch", "one"], ["images"], name="range"),
        helper.make_node("Mul", ["images", "step"], ["starts"], name="starts"),
        helper.make_node("Unsqueeze", ["starts"], ["starts2"], axes=[1], name="unsqueeze"),
        helper.make_node("Add", ["query", "starts2"], ["rows"], name="offset"),
        _constant("flat_rows", np.array([-1], np.int64)), _constant("table_shape", np.array([-1, 4], np.int64)),
        helper.make_node("Reshape", ["rows", "flat_rows"], ["rows1"], name="rows1"),
        helper.make_node("Reshape", ["boxes", "table_shape"], ["table"], name="table"),
        helper.make_node("Gather", ["table", "rows1"], ["dets"], axis=0, name="pick"),
    ]
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info("data", TensorProto.FLOAT, ["N", 3, "height", "width"]),
         helper.make_tensor_value_info("grid", TensorProto.FLOAT, ["N", 4, 5, 2]),
         helper.make_tensor_value_info("scores", TensorProto.FLOAT,
                                       ["N", "queries" if boxes == "dynamic" else QUERIES, CLASSES]),
         helper.make_tensor_value_info("boxes", TensorProto.FLOAT, {"static": ["N", QUERIES, 4], "flat": ["rows", 4],
                                                                    "dynamic": ["N", "queries", 4]}[boxes])],
        [helper.make_tensor_value_info("sampled", TensorProto.FLOAT, ["N", 3, 4, 5]),
         helper.make_tensor_value_info("dets", TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11), helper.make_opsetid("mmdeploy", 1)])
    model.ir_version = 6
    return model


@pytest.mark.parametrize("step, boxes", [(PER_IMAGE, "static"), (PER_IMAGE, "dynamic"), (PER_IMAGE, "flat"),
                                         (QUERIES, "static")])
def test_batch_offset_of_the_wrong_rows_is_repaired_or_noted(tmp_path, step, boxes):
    """A step of max_per_img (mmdeploy 1.3.1's): where the boxes show their rows per image (a static count, or a
    (batch, q, 4) tensor of dynamic q), adopt repairs the offset (the second image of a batch of 2 gets its own
    boxes) and says so; where they do not, a note names the Add, both counts and the workaround, and the rows stay as
    they were. A step of the query count: nothing said or changed."""
    source = tmp_path / "detr.onnx"
    onnx.save(_detr_like(step, boxes), source)
    adopted = adopt_file(source)
    rng = np.random.default_rng(0)
    scores, table = rng.standard_normal((2, QUERIES, CLASSES), np.float32), rng.standard_normal((2, QUERIES, 4))
    feed = {"data": rng.standard_normal((2, 3, 8, 8), np.float32), "grid": rng.uniform(-1, 1, (2, 4, 5, 2)),
            "scores": scores, "boxes": (table.reshape(-1, 4) if boxes == "flat" else table).astype(np.float32)}
    feed["grid"] = feed["grid"].astype(np.float32)
    session = ort.InferenceSession(str(adopted.path), providers=["CPUExecutionProvider"])
    dets = session.run(["dets"], feed)[0].reshape(2, PER_IMAGE, 4)
    second = np.argsort(-scores[1].reshape(-1), kind="stable")[:PER_IMAGE] // CLASSES
    right = np.allclose(dets[1], table[1][second].astype(np.float32))
    if step == QUERIES:
        assert adopted.adoption.notes == [] and right
        return
    (note,) = adopted.adoption.notes
    assert adopted.adoption.to_dict()["notes"] == [note] and f"note: {note}" in adopted.adoption.summary()
    if boxes == "flat":
        assert note.startswith(f"offset offsets the box rows of image i by i*{PER_IMAGE}, but topk picks from "
                               f"{QUERIES} rows per image") and "batch 1" in note, note
        assert not right
        return
    spacing = f"i*{QUERIES}" if boxes == "static" else "i * the rows of boxes per image, read at run time"
    assert note.startswith(f"repaired offset: it offset the box rows of image i by i*{PER_IMAGE}, but topk picks ")
    assert f"now offsets them by {spacing}" in note, note
    assert right
    assert "step" not in {out for n in onnx.load(str(adopted.path)).graph.node for out in n.output}  # unused: gone


def test_next_commands_carry_the_sizes_a_dynamic_input_needs(tmp_path):
    """adopt's next: lines run as printed once the placeholders are sizes: --shape/--shapes for the input with a
    dynamic height and width and no stored example, none for those whose batch alone is dynamic."""
    source = tmp_path / "detr.onnx"
    onnx.save(_detr_like(QUERIES), source)
    result = cli_runner().invoke(main, ["adopt", str(source)])
    assert result.exit_code == 0, result.output
    adopted = tmp_path / "detr.adopted.onnx"
    lines = result.stdout.splitlines()
    verify = next(line for line in lines if line.strip().startswith("dcn-deploy verify"))
    build = next(line for line in lines if line.strip().startswith("dcn-deploy build"))
    assert f"dcn-deploy verify {adopted} --against ort --shape data=1x3xHEIGHTxWIDTH " in verify
    assert f"dcn-deploy build {adopted} --shapes data:1x3xHEIGHTxWIDTH " in build and "plugin" not in build
    assert "--shape grid" not in verify and "--shape scores" not in verify
    args = verify.split("#")[0].split()[1:]
    run = cli_runner().invoke(main, [a.replace("HEIGHT", "8").replace("WIDTH", "6") for a in args])
    assert run.exit_code == 0 and "PASSED" in run.stdout, run.output


def test_adopting_an_adopted_or_truncated_file_says_what_it_is(tmp_path):
    source = tmp_path / "detr.onnx"
    onnx.save(_detr_like(QUERIES), source)
    adopted = adopt_file(source).path
    again = cli_runner().invoke(main, ["adopt", str(adopted)])
    assert again.exit_code == 2 and "all standard ONNX" in error_lines(again)[0], again.output
    data = source.read_bytes()
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(data[: len(data) // 2])
    truncated = cli_runner().invoke(main, ["adopt", str(cut)])
    assert truncated.exit_code == 2 and f"truncated or damaged copy reads so: compare its size, {len(data) // 2} " \
        "bytes" in error_lines(truncated)[0], truncated.output
    model = _detr_like(QUERIES)
    del model.opset_import[0]  # the default opset's import gone, as where a copy stops before it
    onnx.save(model, tmp_path / "no_opset.onnx")
    no_opset = cli_runner().invoke(main, ["adopt", str(tmp_path / "no_opset.onnx")])
    assert no_opset.exit_code == 2 and f"{tmp_path / 'no_opset.onnx'} imports no default ONNX opset" in \
        error_lines(no_opset)[0], no_opset.output


def test_symbolic_shapes_are_spaced():
    assert format_shape(("batch", 3, "height", "width")) == "batch x 3 x height x width"
    assert format_shape((1, 3, 64, 64)) == "1x3x64x64" and format_shape((None, 3)) == "?x3"
