"""What a new user meets first: ``dcn-deploy export`` of the demo model, example shapes stored in the exported file
for ``verify``/``bench``, inputs that do not fit the model, and the spellings of ``--shape``.

One small dynamic export is shared by the tests that read its file; the sampler and bad-input tests run no exporter.
"""
from __future__ import annotations

import json
import sys
import textwrap

import pytest
from cli_helpers import cli_runner, error_lines

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from dcn_deploy.cli import main  # noqa: E402
from dcn_deploy.feeds import (EXAMPLE_SHAPES_KEY, FeedError, parse_shape_options, random_feed,  # noqa: E402
                              stored_example_shapes)

MODEL_FILE = textwrap.dedent("""
    import torch
    import dcn_deploy


    def build():
        torch.manual_seed(0)
        return torch.nn.Sequential(
            torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.ReLU(),
            dcn_deploy.ModulatedDeformConv2dPack(16, 16, 3, padding=1, deform_groups=2)).eval()


    class _Conv(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 2, 1)

        def forward(self, x):
            return self.conv(x)


    class NoArgs(_Conv):  # example_inputs takes nothing: its own batch and size
        def example_inputs(self):
            return (torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(1)),)


    class BatchSeed(_Conv):  # like dcn_deploy.models.demo.DemoNet: a batch and a seed, no size
        def example_inputs(self, batch=1, seed=0):
            return (torch.randn(batch, 3, 8, 8, generator=torch.Generator().manual_seed(seed)),)


    class Sized(_Conv):  # like a zoo entry: batch, size and seed
        def example_inputs(self, batch=1, size=None, seed=0):
            h, w = size or (8, 8)
            return (torch.randn(batch, 3, h, w, generator=torch.Generator().manual_seed(seed)),)
""")

EXAMPLE = (1, 3, 24, 20)  # height != width, so a swapped default would show


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("ux") / "my_model.py"
    path.write_text(MODEL_FILE)
    return path


@pytest.fixture(scope="module")
def dynamic_export(model_file):
    """model.onnx: the README's flow, `export my_model.py:build --input-shape 1x3x24x20 --dynamic`."""
    out = model_file.parent / "model.onnx"
    result = cli_runner().invoke(main, ["export", f"{model_file}:build", "-o", str(out), "--dynamic",
                                     "--input-shape", "x".join(map(str, EXAMPLE))])
    assert result.exit_code == 0, result.output + result.stderr
    return out


@pytest.fixture(scope="module")
def old_export(dynamic_export):
    """The same file as an earlier dcn_deploy wrote it: no example shapes in its metadata."""
    proto = onnx.load(str(dynamic_export))
    kept = [p for p in proto.metadata_props if p.key != EXAMPLE_SHAPES_KEY]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    path = dynamic_export.parent / "old.onnx"
    onnx.save(proto, str(path))
    return path


# --------------------------------------------------------------------------------------------------------------
# the demo model exports as the help says
# --------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("args", [["--input-shape", "1x1x28x28"], ["--dynamic"]], ids=["input-shape", "own-inputs"])
def test_demo_model_exports_and_verifies(tmp_path, args):
    out = tmp_path / "demo.onnx"
    result = cli_runner().invoke(main, ["export", "dcn_deploy.models.demo:DemoNet", "-o", str(out), *args, "--json"])
    assert result.exit_code == 0, result.output + result.stderr
    report = json.loads(result.stdout)
    assert report["verified"] and report["deformable_ops"] == {"dcn_deploy::DeformConv2d": 2}
    verified_on = [run["input_shapes"]["image"] for run in report["verification"]]
    # the digits DemoNet makes itself (28x28); a dynamic export is also verified at the next batch size
    assert verified_on == ([[1, 1, 28, 28], [2, 1, 28, 28]] if "--dynamic" in args else [[1, 1, 28, 28]])
    # named as what they are: the user gave none
    assert "on the model's own inputs" in result.stderr and "given inputs" not in result.stderr
    assert all(run["label"].startswith("model's own inputs ") for run in report["verification"])
    assert stored_example_shapes(out) == {"image": (1, 1, 28, 28)}


def test_export_help_examples_use_the_working_spelling():
    help_text = cli_runner().invoke(main, ["export", "--help"]).stdout
    assert "dcn-deploy export dcn_deploy.models.demo:DemoNet --input-shape 1x1x28x28" in help_text
    assert " models.demo:" not in help_text


def _load(model_file, name):
    from dcn_deploy.onnx.model_loading import load_model

    return load_model(f"{model_file}:{name}")


def test_example_inputs_without_batch_or_size(model_file):
    loaded = _load(model_file, "NoArgs")
    assert not loaded.sampler.takes_size and not loaded.sampler.takes_batch
    (own,) = loaded.example_inputs()
    assert tuple(own.shape) == (1, 3, 8, 8)
    (same,) = loaded.example_inputs([(1, 3, 8, 8)])
    assert torch.equal(same, own)  # the shape asked for is the model's own: its own values
    (other,) = loaded.example_inputs([(2, 3, 5, 7)], seed=4)
    assert tuple(other.shape) == (2, 3, 5, 7) and 0.5 < other.std() < 1.5  # another shape: random normal
    runs = loaded.verification_inputs((own,), dynamic=True)
    assert [tuple(t.shape) for (t,) in runs] == [(1, 3, 8, 8)]  # it cannot change the batch
    assert loaded.verification_inputs((other,), dynamic=True) is None  # not its inputs: random verification


def test_example_inputs_with_batch_and_seed_but_no_size(model_file):
    loaded = _load(model_file, "BatchSeed")
    assert not loaded.sampler.takes_size and loaded.sampler.takes_batch
    (example,) = loaded.example_inputs([(4, 3, 8, 8)], dtype=torch.float64)
    assert example.dtype == torch.float64
    assert torch.equal(example, loaded.model.example_inputs(4, seed=0)[0].double())
    runs = loaded.verification_inputs((example,), dynamic=True, dtype=torch.float64)
    assert [tuple(t.shape) for (t,) in runs] == [(4, 3, 8, 8), (5, 3, 8, 8)]
    assert not torch.equal(runs[0][0], example)  # another seed than the export's example
    (other,) = loaded.example_inputs([(1, 3, 16, 16)])  # a size it cannot make: random of that shape
    assert tuple(other.shape) == (1, 3, 16, 16)
    assert loaded.verification_inputs((other,), dynamic=False) is None


def test_example_inputs_with_a_size(model_file):
    loaded = _load(model_file, "Sized")
    assert loaded.sampler.takes_size
    (image,) = loaded.example_inputs([(2, 3, 12, 10)])
    assert tuple(image.shape) == (2, 3, 12, 10)
    runs = loaded.verification_inputs((image,), dynamic=True)
    assert [tuple(t.shape) for (t,) in runs] == [(2, 3, 12, 10), (3, 3, 24, 20)]
    with pytest.raises(ValueError, match="one 4-D shape"):
        loaded.example_inputs([(1, 3, 8, 8), (1, 3, 8, 8)])


# --------------------------------------------------------------------------------------------------------------
# example shapes stored at export, used where the user gives no --shape
# --------------------------------------------------------------------------------------------------------------

def test_export_stores_the_example_shapes(dynamic_export):
    props = {p.key: p.value for p in onnx.load(str(dynamic_export)).metadata_props}
    assert json.loads(props[EXAMPLE_SHAPES_KEY]) == {"input": list(EXAMPLE)}
    assert stored_example_shapes(dynamic_export) == {"input": EXAMPLE}


def test_stored_shapes_fill_what_shape_does_not_give(dynamic_export):
    from dcn_deploy.backends.ort_runner import OrtRunner

    assert parse_shape_options([], dynamic_export) == {"input": EXAMPLE}
    assert parse_shape_options(["input=2x3x8x6"], dynamic_export) == {"input": (2, 3, 8, 6)}  # --shape wins
    assert parse_shape_options(["input:2x3x8x6"], dynamic_export) == {"input": (2, 3, 8, 6)}
    with OrtRunner(dynamic_export) as runner:
        metas = runner.input_metadata()
    feed = random_feed(metas, parse_shape_options([], dynamic_export), batch=8, seed=3)
    assert feed["input"].shape == (8,) + EXAMPLE[1:]  # --batch still sets the batch


def test_compare_and_benchmark_run_a_dynamic_file_on_its_stored_shapes(dynamic_export):
    from dcn_deploy.backends.onnx_reference_runner import OnnxReferenceRunner
    from dcn_deploy.backends.ort_runner import OrtRunner
    from dcn_deploy.bench import benchmark
    from dcn_deploy.compare import compare_runners

    shapes = parse_shape_options([], dynamic_export)
    result = compare_runners([OrtRunner(dynamic_export), OnnxReferenceRunner(dynamic_export)], shapes=shapes)
    assert result.passed and result.feed["input"][0] == EXAMPLE
    timed = benchmark([OrtRunner(dynamic_export)], batches=[1, 3], shapes=shapes, iterations=2, warmup=0,
                      progress=False)
    assert [e.inputs["input"] for e in timed.entries] == [list(EXAMPLE), [3] + list(EXAMPLE[1:])]


def test_verify_and_bench_need_no_shape_after_a_dynamic_export(dynamic_export):
    runner = cli_runner()
    verify = runner.invoke(main, ["verify", str(dynamic_export), "--against", "ort", "--json"])
    assert verify.exit_code == 0, verify.output + verify.stderr
    assert json.loads(verify.stdout)["inputs"]["input"]["shape"] == list(EXAMPLE)
    bench = runner.invoke(main, ["bench", str(dynamic_export), "--runner", "ort", "--batch", "1,8", "--iterations",
                                 "2", "--warmup", "0", "--no-progress", "--json"])
    assert bench.exit_code == 0, bench.output + bench.stderr
    assert [r["inputs"]["input"] for r in json.loads(bench.stdout)["results"]] == [
        list(EXAMPLE), [8] + list(EXAMPLE[1:])]
    given = runner.invoke(main, ["verify", str(dynamic_export), "--against", "ort", "--shape", "input:2x3x8x6",
                                 "--json"])
    assert given.exit_code == 0, given.output + given.stderr
    assert json.loads(given.stdout)["inputs"]["input"]["shape"] == [2, 3, 8, 6]


def test_a_file_without_stored_shapes_still_asks_for_shape(old_export):
    from dcn_deploy.backends.ort_runner import OrtRunner

    assert stored_example_shapes(old_export) == {} and parse_shape_options([], old_export) == {}
    with OrtRunner(old_export) as runner:
        with pytest.raises(FeedError, match="dynamic dimension 2 .*give its size: .*--shape input="):
            random_feed(runner.input_metadata(), parse_shape_options([], old_export))
    result = cli_runner().invoke(main, ["verify", str(old_export), "--against", "ort"])
    assert result.exit_code == 2 and "--shape input=" in result.stderr


def _two_input_file(path, stored):
    """a (N, 2, H, W) and b (N, 4) -> Identity each; ``stored`` is the raw metadata value (None: no key)."""
    from onnx import TensorProto, helper

    a = helper.make_tensor_value_info("a", TensorProto.FLOAT, ["N", 2, "H", "W"])
    b = helper.make_tensor_value_info("b", TensorProto.FLOAT, ["N", 4])
    graph = helper.make_graph(
        [helper.make_node("Identity", ["a"], ["a_out"]), helper.make_node("Identity", ["b"], ["b_out"])], "two",
        [a, b], [helper.make_tensor_value_info("a_out", TensorProto.FLOAT, ["N", 2, "H", "W"]),
                 helper.make_tensor_value_info("b_out", TensorProto.FLOAT, ["N", 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    if stored is not None:
        model.metadata_props.add(key=EXAMPLE_SHAPES_KEY, value=stored)
    onnx.save(model, str(path))
    return path


def test_stored_shapes_follow_the_batch_given_and_ignore_what_no_longer_fits(tmp_path):
    good = _two_input_file(tmp_path / "two.onnx", json.dumps({"a": [1, 2, 5, 6], "b": [1, 4]}))
    assert parse_shape_options([], good) == {"a": (1, 2, 5, 6), "b": (1, 4)}
    # a batch given for one input applies to the stored shape of the other, as resolve_shapes does
    assert parse_shape_options(["a=3x2x7x7"], good) == {"a": (3, 2, 7, 7), "b": (3, 4)}
    stale = _two_input_file(tmp_path / "stale.onnx", json.dumps({"a": [1, 2, 5], "b": [1, 5]}))
    assert parse_shape_options([], stale) == {}  # wrong rank, and a fixed dimension that disagrees
    junk = _two_input_file(tmp_path / "junk.onnx", "not json")
    assert parse_shape_options(["b=2x4"], junk) == {"b": (2, 4)}
    assert parse_shape_options([], tmp_path / "missing.onnx") == {}
    (tmp_path / "m.engine").write_bytes(b"\x00engine")
    assert parse_shape_options([], tmp_path / "m.engine") == {}


# --------------------------------------------------------------------------------------------------------------
# example inputs that do not fit the model
# --------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("shapes, cause", [
    (["1x4x64x64"], "RuntimeError: Given groups=1, weight of size [16, 3, 3, 3], expected input[1, 4, 64, 64]"),
    (["1x3x64"], "RuntimeError:"),
    (["1x3x8x8", "1x3x8x8"], "TypeError:"),
])
def test_input_shape_that_does_not_fit_is_one_line_and_exit_2(model_file, shapes, cause):
    out = model_file.parent / "never.onnx"
    args = ["export", f"{model_file}:build", "-o", str(out)]
    for shape in shapes:
        args += ["--input-shape", shape]
    result = cli_runner().invoke(main, args)
    assert result.exit_code == 2, result.output + result.stderr
    errors = error_lines(result)
    assert len(errors) == 1 and cause in errors[0]
    assert f"{model_file}:build (Sequential) raised " in errors[0]
    assert f"on the example inputs ({', '.join(shapes)})" in errors[0]
    assert "check --input-shape" in errors[0]
    for noise in ("Traceback", "always_classified", "_trace.py", "torch.onnx.export"):
        assert noise not in result.stderr
    assert not out.exists()


def test_library_names_the_model_and_its_own_error(tmp_path):
    from dcn_deploy.onnx.export import ExampleInputsError, ExportError, export
    from dcn_deploy.ops import DeformConv2d

    model = DeformConv2d(2, 2, 3, padding=1).eval()
    with pytest.raises(ExampleInputsError, match=r"the example inputs \(1x2x5x5, 1x9x5x5\) do not fit DeformConv2d: "
                                                 r"\w+Error: ") as info:
        export(model, (torch.randn(1, 2, 5, 5), torch.randn(1, 9, 5, 5)), tmp_path / "m.onnx")
    assert isinstance(info.value, ExportError) and isinstance(info.value, ValueError)  # CLI: exit 2
    assert not (tmp_path / "m.onnx").exists()


# --------------------------------------------------------------------------------------------------------------
# the no-deformable-layer error names the CLI flag too
# --------------------------------------------------------------------------------------------------------------

def test_no_deformable_layer_error_names_the_flag_and_the_argument(tmp_path):
    from dcn_deploy.onnx.export import NoDeformableLayerError, export

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU()).eval()
    with pytest.raises(NoDeformableLayerError) as info:
        export(model, (torch.randn(1, 3, 8, 8),), tmp_path / "plain.onnx", verify=False)
    assert "require_deformable=False (CLI: --allow-no-deformable)" in str(info.value)


# --------------------------------------------------------------------------------------------------------------
# --shape NAME=SHAPE or NAME:SHAPE
# --------------------------------------------------------------------------------------------------------------

def test_shape_option_accepts_both_separators():
    assert parse_shape_options(["image=1x1x28x28", "mask:2x9"]) == {"image": (1, 1, 28, 28), "mask": (2, 9)}
    # split at the last separator: ONNX names such as "input:0" keep their colon
    assert parse_shape_options(["input:0:1x3"]) == parse_shape_options(["input:0=1x3"]) == {"input:0": (1, 3)}


@pytest.mark.parametrize("item", ["1x3x8x8", "image=", "=1x3", "image:"])
def test_bad_shape_option_lists_both_forms(item):
    with pytest.raises(FeedError, match="expected NAME=SHAPE or NAME:SHAPE.*--shape input:1x3x64x64"):
        parse_shape_options([item])


@pytest.mark.parametrize("name, fragment", [
    ("notes.txt", "model notes.txt: not a model reference; give FILE.py:FACTORY"),  # was: "no zoo model named"
    ("demo.onnx", "model demo.onnx: an ONNX file, where the PyTorch model is wanted"),
])
def test_a_file_that_is_no_model_reference_is_named_as_such(tmp_path, monkeypatch, name, fragment):
    from dcn_deploy.onnx.model_loading import load_model

    monkeypatch.chdir(tmp_path)
    (tmp_path / name).write_text("x")
    with pytest.raises(ValueError) as info:
        load_model(name)
    assert str(info.value).startswith(fragment), str(info.value)
    assert "zoo model named" not in str(info.value)


@pytest.mark.parametrize("name", ["missing.onnx", "MISSING.ONNX", "Weights.PT"])
def test_a_missing_model_file_is_named_whatever_its_suffix_case(tmp_path, monkeypatch, name):
    from dcn_deploy.onnx.model_loading import load_model

    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match=f"model {name}: no such file"):
        load_model(name)


def test_a_bare_shape_is_answered_with_the_models_input_names(tmp_path):
    """`--shape 1x1x28x28` (trtexec's habit): the error writes the option with the model's own input name."""
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Identity", ["image"], ["out"])], "g",
                              [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 1, 28, 28])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", 1, 28, 28])])
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph), str(path))
    with pytest.raises(FeedError, match=r"expected NAME=SHAPE or NAME:SHAPE, e\.g\. --shape image=1x1x28x28 "
                                        r"\(the model's inputs: image\)"):
        parse_shape_options(["1x1x28x28"], path)
    with pytest.raises(FeedError, match="--shape input:1x3x64x64"):  # not a shape: the general form
        parse_shape_options(["image"], path)


def test_a_given_shape_resizes_the_stored_shapes_of_inputs_tied_to_it(tmp_path):
    # x and y share batch, height and width symbols (the model adds them): --shape for x resizes y as well
    from dcn_deploy.feeds import parse_shape_options
    from dcn_deploy.onnx.export import export
    from dcn_deploy.ops import ModulatedDeformConv2dPack

    class TwoInputs(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.dcn = ModulatedDeformConv2dPack(3, 4, 3, padding=1)

        def forward(self, x, y):
            return self.dcn(x) + y

    path = tmp_path / "two.onnx"
    export(TwoInputs().eval(), (torch.randn(1, 3, 16, 16), torch.randn(1, 4, 16, 16)), path, dynamic=True)
    x_name, y_name = [i.name for i in onnx.load(str(path)).graph.input]
    assert parse_shape_options([], path) == {x_name: (1, 3, 16, 16), y_name: (1, 4, 16, 16)}
    assert parse_shape_options([f"{x_name}=2x3x32x24"], path)[y_name] == (2, 4, 32, 24)


def test_the_early_run_leaves_a_training_mode_model_as_it_was(tmp_path):
    # a training-mode model runs in eval mode (the eager check would otherwise update BatchNorm's statistics)
    from dcn_deploy.onnx.export import export
    from dcn_deploy.ops import ModulatedDeformConv2dPack

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.BatchNorm2d(4),
                                ModulatedDeformConv2dPack(4, 4, 3, padding=1))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    report = export(model, (torch.randn(2, 3, 8, 8),), tmp_path / "train.onnx", verify=False)
    assert any("training mode" in warning for warning in report.warnings) and model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


# --------------------------------------------------------------------------------------------------------------
# --weights that do not fit or cannot be read, data-dependent control flow, small wording
# --------------------------------------------------------------------------------------------------------------

def _smaller_state_dict(path):
    """The state_dict of build()'s architecture with 8 channels where build() has 16: every size differs."""
    from dcn_deploy import ModulatedDeformConv2dPack

    torch.manual_seed(3)
    small = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
                                ModulatedDeformConv2dPack(8, 8, 3, padding=1, deform_groups=2))
    torch.save(small.state_dict(), path)
    return path


@pytest.mark.parametrize("command", ["export", "verify"])
def test_weights_with_other_sizes_name_the_keys_and_both_shapes(model_file, dynamic_export, tmp_path, command):
    weights = _smaller_state_dict(tmp_path / "small.pt")
    model = f"{model_file}:build"
    args = (["export", model, "--weights", str(weights), "--input-shape", "1x3x8x8", "-o", str(tmp_path / "w.onnx")]
            if command == "export" else
            ["verify", str(dynamic_export), "--against", "torch", "--model", model, "--weights", str(weights)])
    result = cli_runner().invoke(main, args)
    assert result.exit_code == 2, result.output + result.stderr
    (line,) = error_lines(result)
    assert f"--weights {weights} does not fit the model built by {model}: " in line
    assert "0.weight (checkpoint 8x3x3x3 vs model 16x3x3x3)" in line and "with another shape" in line
    assert "size mismatch" not in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "w.onnx").exists()


def _write_unreadable(kind, path):
    if kind == "text":
        path.write_text("junk\n")
    elif kind == "module":  # torch.save(model, PATH): a whole pickled module
        torch.save(torch.nn.Linear(2, 2), path)
    else:  # tensors next to other Python objects (an mmdetection checkpoint's meta holds numpy arrays)
        import numpy as np

        torch.save({"meta": {"mean": np.arange(3.0)}, "state_dict": {"w": torch.ones(2)}}, path)
    return path


@pytest.mark.parametrize("kind, says", [
    ("text", "not a file written by torch.save (it starts with b'junk\\n'"),
    ("module", "it holds a pickled module (torch.save(model, PATH)"),
    ("objects", "it stores Python objects besides tensors (numpy"),
])
@pytest.mark.parametrize("model", ["factory", "zoo"])
def test_unreadable_weights_get_one_explanation_for_every_model(model_file, tmp_path, kind, says, model):
    weights = _write_unreadable(kind, tmp_path / f"{kind}.pt")
    reference = f"{model_file}:build" if model == "factory" else "resnet50_dcn_c5"
    result = cli_runner().invoke(main, ["export", reference, "--weights", str(weights), "--input-shape", "1x3x32x32",
                                        "-o", str(tmp_path / "w.onnx")])
    assert result.exit_code == 2, result.output + result.stderr
    (line,) = error_lines(result)
    assert says in line
    assert "two options" not in line and "174812789" not in line  # torch's cut-off advice, its bare KeyError
    if kind == "objects":  # the CLI's way forward: a command that re-saves the tensors, with no option to trust
        assert f"re-save its tensors once as a plain state_dict: {sys.executable} -c" in line
        # load_checkpoint's trusted=True (zoo models) is the library's way, which the CLI has no option for
        assert "pass trusted=True" not in line and "(CLI:" not in line
    if kind == "module":
        assert ".state_dict(), " in line


def test_the_resave_command_in_the_message_gives_a_file_that_loads(tmp_path):
    import re

    from dcn_deploy.models.checkpoint import CheckpointError, read_state_dict

    weights = _write_unreadable("objects", tmp_path / "meta.pth")
    with pytest.raises(CheckpointError, match=r"pass trusted=True, or \(CLI: --weights never runs pickled code\)"
                       ) as info:
        read_state_dict(weights)
    command = re.search(re.escape(sys.executable) + r' -c "([^"]+)"', str(info.value)).group(1)
    exec(command, {})  # what the user pastes, here in-process
    saved = tmp_path / "meta_state_dict.pt"
    assert f"then give {saved}" in str(info.value)
    assert torch.load(saved, weights_only=True)["w"].tolist() == [1.0, 1.0]


DATA_DEPENDENT = textwrap.dedent("""
    import torch
    from dcn_deploy import DeformConv2dPack


    class Branchy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.d = DeformConv2dPack(3, 8, 3, padding=1)

        def forward(self, x):
            if x.sum() > 0:
                return self.d(x)
            return -self.d(x)


    def build():
        return Branchy().eval()
""")


def test_data_dependent_control_flow_names_the_cause_and_the_line_quietly(tmp_path):
    path = tmp_path / "branchy.py"
    path.write_text(DATA_DEPENDENT)
    result = cli_runner().invoke(main, ["export", f"{path}:build", "--input-shape", "1x3x8x8",
                                        "-o", str(tmp_path / "b.onnx")])
    assert result.exit_code == 1, result.output + result.stderr
    (line,) = error_lines(result)
    assert "Could not guard on data-dependent expression" in line and "(at branchy.py:12)" in line
    assert "torch.where" in line and "torchvision" not in line and "\x1b[" not in line
    for noise in ("def forward", "GraphModule", "Unable to find user code"):
        assert noise not in result.stderr
    assert len(result.stderr.splitlines()) <= 5, result.stderr
    assert not (tmp_path / "b.onnx").exists()


def test_while_exporting_torchs_own_prints_are_dropped_and_the_users_pass(capsys):
    """torch.export prints a failed try's partial FX graph to stderr, also when a retry then succeeds; the user's
    own prints during the export must still reach them (as they happen, not only after a success)."""
    import sys

    from dcn_deploy.onnx.torch_exporter import _quiet_exporter

    printing = "import sys\nprint({!r}, file=sys.stderr)"
    with _quiet_exporter():
        exec(printing.format("def forward(self, arg0_1): graph dump"), {"__name__": "torch.export._trace"})
        exec(printing.format("user line"), {"__name__": "my_model"})
        print("user line 2", file=sys.stderr)
    err = capsys.readouterr().err
    assert "graph dump" not in err
    assert err.index("user line") < err.index("user line 2")


def test_a_report_without_deformable_nodes_says_none():
    from dcn_deploy.onnx.export import ExportReport

    text = str(ExportReport(path="plain.onnx", opset=19, dynamic=False, standard=False,
                            inputs=[("x", "float", (1, 3, 8, 8))], outputs=[("y", "float", (1, 4, 6, 6))],
                            op_counts={}))
    assert "  deformable nodes: none" in text.splitlines()
    assert "no deformable ops" in text.splitlines()[0] and "dcn_deploy ops" not in text


def test_empty_input_names_get_an_example_of_input_names(tmp_path):
    result = cli_runner().invoke(main, ["export", "dcn_deploy.models.demo:DemoNet", "--input-names", ",",
                                        "-o", str(tmp_path / "d.onnx")])
    assert result.exit_code == 2, result.output + result.stderr
    (line,) = error_lines(result)
    assert "e.g. --input-names image,rois" in line and "cls_score" not in line


# an all-NaN model fails verification (NaN never matches NaN); weights of another architecture are refused
# --------------------------------------------------------------------------------------------------------------

NAN_MODEL_FILE = textwrap.dedent("""
    import torch
    import dcn_deploy


    class NanNet(torch.nn.Module):  # a deformable layer whose every output is NaN
        def __init__(self):
            super().__init__()
            self.dcn = dcn_deploy.ModulatedDeformConv2dPack(3, 4, 3, padding=1)

        def forward(self, x):
            return self.dcn(x) * float("nan")


    def build():
        torch.manual_seed(0)
        return NanNet().eval()
""")


def test_export_of_a_model_whose_output_is_nan_fails_and_keeps_the_file(tmp_path):
    path = tmp_path / "nan_model.py"
    path.write_text(NAN_MODEL_FILE)
    out = tmp_path / "all_invalid.onnx"
    result = cli_runner().invoke(main, ["export", f"{path}:build", "--input-shape", "1x3x8x8", "-o", str(out)])
    assert result.exit_code == 1, result.output + result.stderr
    (line,) = error_lines(result)
    assert f"{out} cannot be verified against PyTorch" in line
    assert "the reference (PyTorch) output has 256 of 256 NaN/inf values: nothing to compare there" in line
    assert "Nothing can be verified while PyTorch's own output holds NaN/inf" in line
    words = line.replace(str(tmp_path), "PATH").lower()  # the test's own folder name holds "nan"
    assert "roundoff" not in words and "nan" not in words.replace("nan/inf", "")
    assert "PASS" not in result.output and "max rel nan" not in result.output + result.stderr
    assert out.exists() and f"The file {out} was kept for inspection" in line  # as for every verification failure


def test_zoo_weights_of_another_architecture_are_refused(tmp_path):
    from dcn_deploy.models.demo import DemoNet

    torch.manual_seed(4)
    weights = tmp_path / "demo_weights.pt"
    torch.save(DemoNet().state_dict(), weights)
    out = tmp_path / "r50.onnx"
    result = cli_runner().invoke(main, ["export", "resnet50_dcn_c5", "--weights", str(weights), "--input-shape",
                                        "1x3x32x32", "-o", str(out)])
    assert result.exit_code == 2, result.output + result.stderr
    (line,) = error_lines(result)
    assert f"--weights {weights} does not fit zoo model resnet50_dcn_c5: " in line
    assert "missing or of another shape that a checkpoint of resnet50_dcn_c5 holds (e.g. conv1.weight, layer1.0.conv1.weight" in line
    assert ("The checkpoint belongs to another architecture: check the zoo name (dcn-deploy zoo list) or give the "
            "checkpoint saved from resnet50_dcn_c5") in line
    assert "Traceback" not in result.stderr and not out.exists()


def test_zoo_export_takes_the_class_count_of_a_fine_tuned_checkpoint(tmp_path):
    import numpy as np
    import onnxruntime as ort

    from dcn_deploy.models import zoo

    fine_tuned = zoo.get("resnet50_dcn_c5").build(seed=5, num_classes=10)
    weights = tmp_path / "ten_classes.pt"
    torch.save(fine_tuned.state_dict(), weights)
    out = tmp_path / "r50.onnx"
    result = cli_runner().invoke(main, ["export", "resnet50_dcn_c5", "--weights", str(weights), "--input-shape",
                                        "1x3x32x32", "-o", str(out)])
    assert result.exit_code == 0, result.output + result.stderr
    assert ("note: the checkpoint's head is for 10 classes, not 1000: built resnet50_dcn_c5 with num_classes=10"
            in result.stderr)
    assert "SHAPE MISMATCH" not in result.stderr and "output logits: float 1 x 10" in result.output
    image = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    (logits,) = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {"image": image.numpy()})
    with torch.no_grad():
        np.testing.assert_allclose(logits, fine_tuned(image).numpy(), rtol=1e-4, atol=1e-5)

    # a head that differs in another way than a class count would export random tensors: refused
    state = fine_tuned.state_dict()
    state["fc.weight"] = state["fc.weight"][:, :100]
    torch.save(state, weights)
    refused = tmp_path / "refused.onnx"
    result = cli_runner().invoke(main, ["export", "resnet50_dcn_c5", "--weights", str(weights), "--input-shape",
                                        "1x3x32x32", "-o", str(refused)])
    assert result.exit_code == 2, result.output + result.stderr
    (line,) = error_lines(result)
    assert (f"--weights {weights} does not fit zoo model resnet50_dcn_c5's head: fc.weight (checkpoint 10x100 vs "
            "model 1000x2048), fc.bias (checkpoint 10 vs model 1000)") in line
    assert "not those of another class count" in line and not refused.exists()


CHATTY_MODEL_FILE = textwrap.dedent("""
    import torch
    import dcn_deploy


    class Chatty(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.dcn = dcn_deploy.ModulatedDeformConv2dPack(3, 4, 3, padding=1)

        def forward(self, x):
            print("forward called")  # the user's own debugging output
            return self.dcn(x)


    def build():
        print("building the model")
        torch.manual_seed(0)
        return Chatty().eval()
""")


def test_json_stdout_holds_the_report_alone_when_the_model_prints(tmp_path):
    """`dcn-deploy ... --json | jq` must parse: what the model's code prints goes to stderr, not into the JSON."""
    model_file = tmp_path / "chatty.py"
    model_file.write_text(CHATTY_MODEL_FILE)
    result = cli_runner().invoke(main, ["export", f"{model_file}:build", "--input-shape", "1x3x8x8",
                                        "-o", str(tmp_path / "c.onnx"), "--json"])
    assert result.exit_code == 0, result.output + result.stderr
    assert json.loads(result.stdout)["verified"]
    assert "building the model" in result.stderr and "forward called" in result.stderr
    # without --json the printout stays where the user's code sent it
    plain = cli_runner().invoke(main, ["export", f"{model_file}:build", "--input-shape", "1x3x8x8",
                                       "-o", str(tmp_path / "d.onnx")])
    assert plain.exit_code == 0 and "building the model" in plain.stdout
    # the same for every command that runs the model's code (--model) and prints JSON
    model = ["--model", f"{model_file}:build"]
    for args in (["verify", str(tmp_path / "c.onnx"), "--against", "torch", *model],
                 ["bench", str(tmp_path / "c.onnx"), "--runner", "ort,torch", *model, "--iterations", "2",
                  "--warmup", "0", "--no-progress"],
                 ["infer", str(tmp_path / "c.onnx"), "--runner", "torch", *model, "--input",
                  str(_saved_input(tmp_path))]):
        result = cli_runner().invoke(main, [*args, "--json"])
        assert result.exit_code == 0, (args[0], result.output + result.stderr)
        json.loads(result.stdout)
        assert "forward called" in result.stderr, args[0]


def _saved_input(tmp_path):
    import numpy as np

    path = tmp_path / "x.npy"
    np.save(path, np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(np.float32))
    return path


def test_an_export_under_bfloat16_autocast_that_fails_the_checker_names_autocast_not_a_bug(tmp_path):
    """Under torch.autocast the exporter writes bfloat16 Conv nodes, which the checker refuses at this opset: the
    error said "a bug in dcn_deploy's exporter"; it now names autocast and the way out."""
    import torch

    import dcn_deploy
    from dcn_deploy import ModulatedDeformConv2dPack
    from dcn_deploy.onnx.export_report import ExportError

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), ModulatedDeformConv2dPack(8, 8, 3, padding=1))
    with torch.autocast("cpu", torch.bfloat16), pytest.raises(ExportError) as info:
        dcn_deploy.export(model.eval(), (torch.randn(1, 3, 16, 16),), tmp_path / "m.onnx")
    assert "torch.autocast was on" in str(info.value) and "export outside torch.autocast" in str(info.value)
    assert "bug" not in str(info.value)
