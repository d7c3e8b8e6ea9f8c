"""How the CLI checks the inputs it is given: mislabelled or pickled input files, a float16 export verified against
its float32 PyTorch factory, RoI batch indices outside the batch and RoI rows with a NaN or infinite coordinate,
zero-sized shapes, a float64 input cast to float32 (with a note), a list fed to ``Runner.infer``, and gaps in
``--batch`` lists. Bad input exits 2 with one ``error: ...`` line naming the file or option, the expectation and the
fix."""
from __future__ import annotations

import pickle

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

import onnx  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from dcn_deploy.backends.ort_runner import OrtRunner  # noqa: E402
from dcn_deploy.feeds import FeedError, check_roi_batch_indices  # noqa: E402
from dcn_deploy.onnx import opset  # noqa: E402
from runtime_models import build_tiny_net, tiny_net_onnx, write_tiny_net  # noqa: E402
from test_cli_errors import assert_bad_input, run  # noqa: E402


def _half_copy(source, path):
    """The TinyNet ONNX file with float16 inputs, outputs and weights: what `export --dtype float16` writes."""
    model = onnx.load(str(source))
    for value in list(model.graph.input) + list(model.graph.output):
        value.type.tensor_type.elem_type = TensorProto.FLOAT16
    for tensor in model.graph.initializer:
        if tensor.data_type == TensorProto.FLOAT:
            tensor.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(tensor).astype(np.float16), tensor.name))
    onnx.save(model, str(path))
    return path


def _roi_pool_onnx(path):
    """image (N, 2, 6, 6), rois (K, 5) -> dcn_deploy::DeformRoIPool 2x2 with zero offsets -> y (K, 2, 2, 2)."""
    zero = helper.make_tensor("zero", TensorProto.FLOAT, [1], [0.0])
    nodes = [helper.make_node("Shape", ["rois"], ["count"], end=1),
             helper.make_node("Concat", ["count", "offset_tail"], ["offset_shape"], axis=0),
             helper.make_node("ConstantOfShape", ["offset_shape"], ["offset"], value=zero),
             helper.make_node("DeformRoIPool", ["image", "rois", "offset"], ["y"], domain=opset.DOMAIN,
                              pooled_height=2, pooled_width=2, spatial_scale=1.0, sampling_ratio=1)]
    graph = helper.make_graph(
        nodes, "roi_pool", [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 2, 6, 6]),
                            helper.make_tensor_value_info("rois", TensorProto.FLOAT, ["K", 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.array([2, 2, 2], dtype=np.int64), "offset_tail")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    model.ir_version = 9
    onnx.save(opset.attach_functions(model), str(path))
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """tiny.onnx (x: N x 2 x H x W float32), its float16 copy, tiny_net.py:build, roi.onnx, input files."""
    folder = tmp_path_factory.mktemp("cli_inputs")
    rng = np.random.default_rng(11)
    tiny = tiny_net_onnx(build_tiny_net(), folder / "tiny.onnx")
    x = rng.standard_normal((1, 2, 6, 6))  # float64, as numpy makes it
    np.save(folder / "x64.npy", x)
    np.save(folder / "x32.npy", x.astype(np.float32))
    np.save(folder / "fake.npz", x.astype(np.float32))  # np.save names it fake.npz.npy: rename, as the user did
    (folder / "fake.npz.npy").rename(folder / "fake.npz")
    image = rng.standard_normal((1, 2, 6, 6)).astype(np.float32)
    boxes = np.array([[3, 0, 0, 4, 4], [0, 1, 1, 5, 3]], dtype=np.float32)  # row 0 names image 3 of 1
    np.savez(folder / "bad_rois.npz", image=image, rois=boxes)
    good = boxes.copy()
    good[0, 0] = 0.7  # truncated toward zero: image 0
    np.savez(folder / "good_rois.npz", image=image, rois=good)
    return {"folder": folder, "tiny": tiny, "half": _half_copy(tiny, folder / "half.onnx"),
            "factory": f"{write_tiny_net(folder)}:build", "roi": _roi_pool_onnx(folder / "roi.onnx"), "x": x}


# input files that are not what their name says ------------------------------------------------------------------
@pytest.mark.parametrize("command", ["infer", "verify"])
def test_an_npz_that_holds_one_npy_array_says_to_rename_it(files, command):
    fake = files["folder"] / "fake.npz"
    assert_bad_input(run(command, files["tiny"], "--input", fake),
                     f"{fake} holds one array (the .npy format), not an .npz archive: rename it to .npy or pass "
                     f"it as NAME={fake}")


def test_an_npz_that_holds_one_npy_array_runs_when_named(files):
    result = run("infer", files["tiny"], "--input", f"x={files['folder'] / 'fake.npz'}")
    assert result.exit_code == 0, (result.output, result.stderr)
    assert "y: 1x4x6x6 float32" in result.output


def _write_pickle(path):
    with open(path, "wb") as handle:
        pickle.dump({"x": [1.0, 2.0]}, handle)


def _write_npz_as_npy(path):
    with open(path, "wb") as handle:  # a file object: numpy adds no .npz suffix
        np.savez(handle, x=np.arange(3.0))


@pytest.mark.parametrize("name, write, fragments", [
    ("pickled.npy", _write_pickle, ["holds pickled Python objects (pickle.dump), not a numeric array",
                                    "numpy.save(path, array)"]),
    ("garbage.npz", lambda p: p.write_bytes(b"garbage\n"), ["is neither a .npy array nor an .npz archive",
                                                            "numpy.save(path, array)"]),
    ("objects.npy", lambda p: np.save(p, np.array([{"a": 1}, None]), allow_pickle=True),
     ["holds Python objects (an array of dtype object, pickled), not a numeric array", "numpy.save("]),
    ("objects.npz", lambda p: np.savez(p, x=np.array([[1.0], "a"], dtype=object)),
     ["holds Python objects (an array of dtype object, pickled), not a numeric array", "numpy.save("]),
    ("archive.npy", _write_npz_as_npy, ["is a zip archive (as numpy.savez writes), not one .npy array",
                                        "rename it to .npz"]),
    ("weights.npz", lambda p: torch.save({"w": torch.ones(2)}, p),
     ["is a zip archive but not one numpy.savez wrote", "a torch.save file?", "numpy.save(path, array)"]),
])
def test_files_numpy_would_unpickle_are_refused_without_numpys_allow_pickle_advice(files, tmp_path, name, write,
                                                                                    fragments):
    path = tmp_path / name
    write(path)
    result = run("infer", files["tiny"], "--input", f"x={path}")
    assert_bad_input(result, str(path), *fragments)
    assert "allow_pickle" not in result.stderr


# a float16 export verified against the float32 factory it came from ---------------------------------------------
def test_verify_casts_the_torch_model_to_the_files_float16_inputs(files):
    result = run("verify", files["half"], "--against", "torch", "--model", files["factory"], "--shape", "x=1x2x6x6")
    assert result.exit_code == 0, (result.output, result.stderr)
    assert "x 1x2x6x6 float16" in result.output and "PASSED: 1 of 1" in result.output
    assert f"note: --model {files['factory']} cast from float32 to float16, the dtype of half.onnx's inputs" \
        in result.stderr
    # a float32 file needs no cast, and gets no note
    plain = run("verify", files["tiny"], "--against", "torch", "--model", files["factory"], "--shape", "x=1x2x6x6")
    assert plain.exit_code == 0 and "cast" not in plain.stderr, (plain.output, plain.stderr)


def test_a_saved_program_in_another_dtype_says_it_cannot_be_cast(files, tmp_path):
    # a torch.export program keeps the dtype it was exported in: name it, and what to export instead
    program = torch.export.export(torch.nn.Conv2d(2, 4, 3, padding=1).eval(), (torch.randn(1, 2, 6, 6),))
    torch.export.save(program, tmp_path / "conv.pt2")
    assert_bad_input(run("verify", files["half"], "--against", "torch", "--model", tmp_path / "conv.pt2", "--shape",
                         "x=1x2x6x6"),
                     f"--model {tmp_path / 'conv.pt2'} is a torch.export program in float32, but half.onnx takes "
                     "float16 inputs: save the program in float16")


# RoI batch indices outside the image batch -----------------------------------------------------------------------
@pytest.mark.parametrize("command", [["infer"], ["verify", "--against", "ort"]])
def test_roi_batch_index_outside_the_batch_is_named_before_running(files, command):
    result = run(*command, files["roi"], "--input", files["folder"] / "bad_rois.npz")
    assert_bad_input(result, "input 'rois': rois[:, 0] (batch index) must lie in [0, 1) for an image batch of 1; "
                             "row 0 has 3")
    ok = run(*command, files["roi"], "--input", files["folder"] / "good_rois.npz")
    assert ok.exit_code == 0, (ok.output, ok.stderr)


def test_roi_batch_indices_are_truncated_toward_zero_and_nan_is_outside():
    image = np.random.default_rng(2).standard_normal((2, 3, 8, 8)).astype(np.float32)
    boxes = np.array([[1.9, 0, 0, 4, 4], [-0.5, 1, 1, 5, 5]], dtype=np.float32)  # images 1 and 0
    check_roi_batch_indices({"image": image, "rois": boxes}, ["rois"])
    for index, shown in [(2.0, "row 1 has 2"), (-1.0, "row 1 has -1"), (np.nan, "row 1 has nan")]:
        boxes[1, 0] = index
        with pytest.raises(FeedError, match=rf"must lie in \[0, 2\) for an image batch of 2; {shown}"):
            check_roi_batch_indices({"image": image, "rois": boxes}, ["rois"])


# zero-sized inputs: nothing to compare ----------------------------------------------------------------------------
def test_a_zero_sized_shape_or_input_is_refused(files, tmp_path):
    assert_bad_input(run("verify", files["tiny"], "--shape", "x=0x2x6x6"),
                     "input 'x': --shape gives shape 0x2x6x6, with size 0 in dimension 0", "nothing to run or compare")
    assert_bad_input(run("bench", files["tiny"], "--shape", "x=1x2x0x6", "--no-progress"),
                     "with size 0 in dimension 2")
    np.save(tmp_path / "empty.npy", np.zeros((0, 2, 6, 6), dtype=np.float32))
    assert_bad_input(run("verify", files["tiny"], "--input", f"x={tmp_path / 'empty.npy'}"),
                     "input 'x': --input gives shape 0x2x6x6", "give every dimension a size >= 1")


# the float64 -> float32 cast is told; a list fed to Runner.infer -------------------------------------------------
def test_infer_notes_a_float64_input_cast_to_the_models_float32(files):
    result = run("infer", files["tiny"], "--input", f"x={files['folder'] / 'x64.npy'}", "--json")
    assert result.exit_code == 0, (result.output, result.stderr)
    assert "note: input 'x' was float64, cast to the model's float32" in result.stderr
    exact = run("infer", files["tiny"], "--input", f"x={files['folder'] / 'x32.npy'}", "--json")
    assert exact.exit_code == 0 and "note:" not in exact.stderr, (exact.output, exact.stderr)


def test_runner_infer_with_a_list_says_it_takes_a_dict(files):
    x = files["x"].astype(np.float32)
    with OrtRunner(files["tiny"]) as runner:
        with pytest.raises(TypeError, match=r"infer takes a dict \{input name: array\}; got a list \(names: \['x'\]\)"):
            runner.infer([x])
        assert runner.infer({"x": x})["y"].shape == (1, 4, 6, 6)


# --batch lists with gaps -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("sizes", ["1,,2", "1,2,", ",1"])
def test_bench_batch_list_with_an_empty_item_is_refused(files, sizes):
    assert_bad_input(run("bench", files["tiny"], "--batch", sizes, "--no-progress"),
                     f"--batch '{sizes}' has an empty item", "e.g. --batch 1,8")


# RoI rows with a NaN or infinite coordinate ----------------------------------------------------------------------
def test_roi_rows_with_non_finite_coordinates_are_named():
    rng = np.random.default_rng(5)
    image = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    boxes = np.array([[0, 1, 1, 5, 5], [1, 0, 2, 6, 7], [0, 2, 2, 4, 4]], dtype=np.float32)
    check_roi_batch_indices({"image": image, "rois": boxes}, ["rois"])
    for column, value in [(1, np.nan), (4, np.inf), (2, -np.inf)]:
        bad = boxes.copy()
        bad[1, column] = value
        with pytest.raises(FeedError, match=r"input 'rois': row 1 \(1, .*\) has a NaN or infinite coordinate; every "
                                            r"RoI row \(batch index, x1, y1, x2, y2\) must be finite"):
            check_roi_batch_indices({"image": image, "rois": bad}, ["rois"])
    bad = boxes.copy()
    bad[1:, 3] = np.nan
    with pytest.raises(FeedError, match=r"row 1 .* \(2 rows do\)"):
        check_roi_batch_indices({"rois": bad}, ["rois"])  # no image to check indices against: still checked


@pytest.mark.parametrize("command", [["infer"], ["verify", "--against", "ort"]])
def test_roi_file_with_a_nan_coordinate_is_bad_input_not_a_runtime_crash(files, tmp_path, command):
    with np.load(files["folder"] / "good_rois.npz") as good:
        image, rois = good["image"], good["rois"].copy()
    rois[1, 1] = np.nan
    np.savez(tmp_path / "nan_rois.npz", image=image, rois=rois)
    result = run(*command, files["roi"], "--input", tmp_path / "nan_rois.npz")
    assert_bad_input(result, "input 'rois': row 1 (0, nan, 1, 5, 3) has a NaN or infinite coordinate")
    assert "GatherElements" not in result.stderr


def test_library_compare_runners_checks_a_given_feeds_boxes(files):
    """The library's compare_runners(feed=...) refuses the same boxes the CLI does, before ONNX Runtime reports only
    an out-of-range GatherElements index."""
    from dcn_deploy import OrtRunner, compare_runners

    with np.load(files["folder"] / "good_rois.npz") as good:
        feed = {"image": good["image"], "rois": good["rois"].copy()}
    runners = [OrtRunner(files["roi"]), OrtRunner(files["roi"])]
    assert compare_runners(runners, feed=feed).passed
    feed["rois"][1, 2] = np.inf
    with pytest.raises(FeedError, match=r"input 'rois': row 1 \(0, .*inf.*\) has a NaN or infinite coordinate"):
        compare_runners(runners, feed=feed)
    feed["rois"][1, 2], feed["rois"][0, 0] = 1.0, 4.0
    with pytest.raises(FeedError, match=r"rois\[:, 0\] \(batch index\) must lie in \[0, 1\)"):
        compare_runners(runners, feed=feed)


def test_an_output_folder_that_refuses_new_files_is_named_with_the_file(tmp_path, monkeypatch):
    """A folder that passes the permission check but refuses files (a virtual or read-only file system): the error
    names the file the user gave, not the temporary name it was written under."""
    import tempfile

    from dcn_deploy.io_utils import atomic_write_text

    def refuse(*args, **kwargs):
        raise FileNotFoundError(2, "No such file or directory", str(tmp_path / ".out.txt.x.tmp"))

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    target = tmp_path / "out.txt"
    with pytest.raises(FileNotFoundError) as failure:
        atomic_write_text(target, "x")
    assert str(failure.value) == (f"cannot write {target}: No such file or directory when creating a file in "
                                  f"{tmp_path}; choose another path")
    assert not target.exists()
