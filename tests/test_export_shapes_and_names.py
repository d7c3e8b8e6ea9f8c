"""Shapes and names in ``dcn-deploy export`` and ``export()``: a .pt2 program's fixed shapes against --input-shape and
--dynamic, one symbol per size shared by the inputs of a dynamic export (and ``num_rois`` for RoI boxes), the default
output name, the summary's shapes, input/output names, and the errors for unreadable --weights and a file that is
no torch.export program.

Every model is tiny; the tests that need no exporter run none.
"""
from __future__ import annotations

import json
import logging
import textwrap

import numpy as np
import pytest
from cli_helpers import cli_runner, error_lines

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from dcn_deploy.cli import main  # noqa: E402
from dcn_deploy.onnx.export import ExportError, export  # noqa: E402
from dcn_deploy.ops import DeformRoIPool, ModulatedDeformConv2dPack  # noqa: E402

MODEL_FILE = textwrap.dedent("""
    import torch
    from dcn_deploy import DeformConv2d, ModulatedDeformConv2dPack


    def build():
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(),
                                   ModulatedDeformConv2dPack(4, 4, 3, padding=1)).eval()


    class Explicit(torch.nn.Module):  # x, offset and mask given by the caller, as torchvision's layer takes them
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.dcn = DeformConv2d(4, 8, 3, padding=1)

        def forward(self, x, offset, mask):
            return self.dcn(x, offset, mask)
""")


def _input_dims(path) -> dict:
    return {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
            for v in onnx.load(str(path)).graph.input}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    path = tmp_path_factory.mktemp("export")
    (path / "my_model.py").write_text(MODEL_FILE)
    return path


def _build():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(),
                               ModulatedDeformConv2dPack(4, 4, 3, padding=1)).eval()


@pytest.fixture(scope="module")
def static_program(folder):
    """prog.pt2: saved with torch.export.save at batch 1, static shapes."""
    path = folder / "prog.pt2"
    torch.export.save(torch.export.export(_build(), (torch.randn(1, 3, 16, 16),)), str(path))
    return path


@pytest.fixture(scope="module")
def dynamic_program(folder):
    """dyn.pt2: batch dynamic from 1 to 4, height and width fixed at 16."""
    path = folder / "dyn.pt2"
    batch = torch.export.Dim("batch", min=1, max=4)
    program = torch.export.export(_build(), (torch.randn(2, 3, 16, 16),), dynamic_shapes=({0: batch},))
    torch.export.save(program, str(path))
    return path


# --------------------------------------------------------------------------------------------------------------
# a saved program keeps its shapes
# --------------------------------------------------------------------------------------------------------------

def test_input_shape_that_a_static_program_cannot_take_is_bad_input_and_writes_nothing(static_program):
    out = static_program.parent / "prog2.onnx"
    result = cli_runner().invoke(main, ["export", str(static_program), "-o", str(out), "--input-shape", "2x3x16x16"])
    assert result.exit_code == 2, result.output + result.stderr
    (error,) = error_lines(result)
    assert f"{static_program} was exported with fixed input shape 1x3x16x16; --input-shape 2x3x16x16 cannot " \
           "change it" in error
    assert "dimension 0 is fixed at 1" in error and "re-export the program with dynamic_shapes" in error
    assert "[export] exporting" not in result.stderr  # refused before the exporter ran
    assert not out.exists()


def test_input_shape_within_a_dynamic_program_exports(dynamic_program):
    out = dynamic_program.parent / "dyn3.onnx"
    result = cli_runner().invoke(main, ["export", str(dynamic_program), "-o", str(out), "--input-shape", "3x3x16x16",
                                     "--json"])
    assert result.exit_code == 0, result.output + result.stderr
    report = json.loads(result.stdout)
    assert report["verified"] and report["program"] and report["dynamic"]
    assert report["verification"][0]["input_shapes"]["input"] == [3, 3, 16, 16]
    # a second run at batch 4 (within 1..4); the fixed 16x16 is not doubled
    assert [run["input_shapes"]["input"] for run in report["verification"]][1] == [4, 3, 16, 16]
    outside = cli_runner().invoke(main, ["export", str(dynamic_program), "-o", str(out), "--input-shape", "8x3x16x16"])
    assert outside.exit_code == 2 and "dimension 0 ranges over 1..4" in error_lines(outside)[0]
    wrong_size = cli_runner().invoke(main, ["export", str(dynamic_program), "-o", str(out), "--input-shape",
                                         "2x3x32x16"])
    assert wrong_size.exit_code == 2 and "dimension 2 is fixed at 16" in error_lines(wrong_size)[0]


def test_library_refuses_example_inputs_outside_a_program(static_program, tmp_path):
    from dcn_deploy.onnx.export import ExampleInputsError

    program = torch.export.load(str(static_program))
    with pytest.raises(ExampleInputsError, match="dimension 0 is fixed at 1.*keeps the shapes it was exported with"):
        export(program, (torch.randn(2, 3, 16, 16),), tmp_path / "p.onnx")
    assert not (tmp_path / "p.onnx").exists()


def test_dynamic_on_a_static_program_says_what_the_file_has(static_program):
    out = static_program.parent / "prog3.onnx"
    result = cli_runner().invoke(main, ["export", str(static_program), "-o", str(out), "--dynamic"])
    assert result.exit_code == 0, result.output + result.stderr
    first = result.stdout.splitlines()[0]
    assert "static shapes kept from the program" in first and "dynamic shapes" not in first
    assert "--dynamic (dynamic=True) does not apply to a saved torch.export program: the file keeps the " \
           "program's static shapes" in result.stdout
    assert "no input dimension came out dynamic" not in result.stdout


def test_a_file_onnx_runtime_cannot_run_is_kept_and_the_message_says_where(tmp_path, monkeypatch):
    from dcn_deploy.onnx import export_verification

    def broken_session(path):
        raise RuntimeError("[ONNXRuntimeError] : 1 : FAIL : simulated")

    monkeypatch.setattr(export_verification, "_make_session", broken_session)
    path = tmp_path / "kept.onnx"
    with pytest.raises(ExportError, match=rf"ONNX Runtime cannot load {path}: .*simulated\. The file {path} was "
                                          rf"kept for inspection \(dcn-deploy inspect {path}\)"):
        export(_build(), (torch.randn(1, 3, 8, 8),), path)
    assert path.is_file()  # kept on purpose: it passed onnx.checker


# --------------------------------------------------------------------------------------------------------------
# the inputs of a dynamic export share their sizes' symbols
# --------------------------------------------------------------------------------------------------------------

def test_inputs_of_equal_example_sizes_share_batch_height_and_width(folder):
    out = folder / "tv.onnx"
    result = cli_runner().invoke(main, ["export", f"{folder / 'my_model.py'}:Explicit", "-o", str(out), "--dynamic",
                                     "--input-shape", "1x4x8x8", "--input-shape", "1x18x8x8",
                                     "--input-shape", "1x9x8x8", "--json"])
    assert result.exit_code == 0, result.output + result.stderr
    assert json.loads(result.stdout)["verified"]
    assert _input_dims(out) == {"x": ["batch", 4, "height", "width"], "offset": ["batch", 18, "height", "width"],
                                "mask": ["batch", 9, "height", "width"]}
    # one size given for x sets the others: verify at a new size needs only --shape x=...
    verify = cli_runner().invoke(main, ["verify", str(out), "--against", "ort", "--shape", "x=2x4x12x10", "--json"])
    assert verify.exit_code == 0, verify.output + verify.stderr
    assert json.loads(verify.stdout)["inputs"]["offset"]["shape"] == [2, 18, 12, 10]


def test_sizes_the_model_fixes_fall_back_to_separate_symbols(tmp_path):
    class FixedWidthSecond(torch.nn.Module):  # y must be 8 wide: a width shared with x would break the export
        def __init__(self):
            super().__init__()
            self.dcn = ModulatedDeformConv2dPack(3, 4, 3, padding=1)

        def forward(self, x, y):
            if y.shape[3] != 8:
                raise ValueError("y must be 8 wide")
            return self.dcn(x) + y.mean()

    torch.manual_seed(0)
    path = tmp_path / "fallback.onnx"
    example = (torch.randn(1, 3, 8, 8), torch.randn(1, 3, 8, 8))
    # verified on the example only: torch.onnx's own capture leaves y's width dynamic (its guard becomes a
    # runtime check that ONNX does not keep), so a run at another width would fail in PyTorch
    report = export(FixedWidthSecond().eval(), example, path, dynamic=True, verify_inputs=[example])
    assert report.verified, str(report)
    dims = _input_dims(path)
    assert dims["x"] == ["batch", 3, "height", "width"] and dims["y"][2:] == ["height_1", "width_1"]


class _RoIHead(torch.nn.Module):
    """A deformable convolution, then RoI pooling of boxes (K, 5) on its output."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.dcn = ModulatedDeformConv2dPack(3, 4, 3, padding=1)
        self.pool = DeformRoIPool(2, spatial_scale=1.0, sampling_ratio=2)

    def forward(self, image, rois):
        return self.pool(self.dcn(image), rois)


def _boxes(batch: int, count: int) -> torch.Tensor:
    rng = np.random.default_rng(1)
    low = rng.uniform(0, 6, (count, 2))
    high = low + rng.uniform(2, 8, (count, 2))
    index = np.arange(count) % batch
    return torch.tensor(np.column_stack([index, low, high]), dtype=torch.float32)


@pytest.mark.parametrize("batch, count", [(1, 3), (2, 2)], ids=["other-count", "count-equal-to-batch"])
def test_roi_box_count_is_num_rois_never_the_batch(tmp_path, batch, count):
    path = tmp_path / "roi.onnx"
    inputs = (torch.randn(batch, 3, 12, 12), _boxes(batch, count))
    report = export(_RoIHead().eval(), inputs, path, dynamic=True,
                    verify_inputs=[inputs, (torch.randn(batch + 1, 3, 12, 12), _boxes(batch + 1, count + 2))])
    assert report.verified, str(report)
    assert _input_dims(path) == {"image": ["batch", 3, "height", "width"], "rois": ["num_rois", 5]}


# --------------------------------------------------------------------------------------------------------------
# the default output name, and the summary's shapes
# --------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("reference, name", [
    ("my_model.py:build", "my_model.onnx"), ("models/net.py:Net", "net.onnx"), ("prog.pt2", "prog.onnx"),
    ("dcn_deploy.models.demo:DemoNet", "DemoNet.onnx"), ("rfcn_resnet50_dcn", "rfcn_resnet50_dcn.onnx")])
def test_default_output_is_named_after_the_model(reference, name):
    from dcn_deploy.commands.export import _default_output

    assert str(_default_output(reference)) == name


def test_file_factory_export_writes_the_file_stem_and_prints_shapes_as_inspect_does(folder, monkeypatch):
    monkeypatch.chdir(folder)
    result = cli_runner().invoke(main, ["export", "my_model.py:build", "--input-shape", "1x3x16x16", "--dynamic",
                                     "--no-verify"])
    assert result.exit_code == 0, result.output + result.stderr
    assert (folder / "my_model.onnx").is_file() and not (folder / "build.onnx").exists()
    assert "wrote my_model.onnx" in result.stdout
    assert "  input  input: float batch x 3 x height x width" in result.stdout
    inspected = cli_runner().invoke(main, ["inspect", "my_model.onnx"])
    assert "batch x 3 x height x width" in inspected.stdout


def test_summary_keeps_derived_sizes_readable(tmp_path):
    from dcn_deploy.onnx.export import ExportReport

    report = ExportReport(path=tmp_path / "m.onnx", opset=19, dynamic=True, standard=False,
                          inputs=[("x", "float", ("batch", 3, "height", "width"))],
                          outputs=[("y", "float", ("batch", 16, "((height - 1)//2) + 1", 7))], op_counts={})
    assert "  output y: float batch x 16 x ((height - 1)//2) + 1 x 7" in str(report).splitlines()


# --------------------------------------------------------------------------------------------------------------
# files that are not what they claim
# --------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("content, reason", [
    (b"hello", "not a file written by torch.save (it starts with b'hello', neither a zip archive nor a pickle)"),
    (b"", "the file is empty")], ids=["text", "empty"])
def test_weights_that_are_no_torch_save_file_say_why(folder, content, reason):
    weights = folder / "notapt.pt"
    weights.write_bytes(content)
    result = cli_runner().invoke(main, ["export", f"{folder / 'my_model.py'}:build", "--weights", str(weights),
                                     "--input-shape", "1x3x8x8", "-o", str(folder / "w.onnx")])
    assert result.exit_code == 2, result.output + result.stderr
    (error,) = error_lines(result)
    assert error == (f"error: --weights {weights} cannot be read as a state_dict saved with torch.save: {reason}; "
                     "give the file written by torch.save(model.state_dict(), PATH)")


def test_a_file_that_is_no_program_prints_one_line_and_leaves_torch_logging_as_it_was(folder):
    fake = folder / "fake.pt2"
    fake.write_text("garbage\n")
    logger = logging.getLogger("torch.export")
    before = (logger.handlers[:], logger.propagate, logger.level)
    result = cli_runner().invoke(main, ["export", str(fake), "-o", str(folder / "f.onnx")])
    assert result.exit_code == 2, result.output + result.stderr
    assert error_lines(result) == [f"error: {fake} is not a program saved with torch.export.save: "
                                    "BadZipFile: File is not a zip file"]
    assert "Traceback" not in result.stderr and "torch/export/__init__.py" not in result.stderr
    assert (logger.handlers[:], logger.propagate, logger.level) == before


def test_a_state_dict_saved_as_pt2_is_told_apart_from_a_broken_program(folder):
    weights = folder / "weights.pt2"
    torch.save({"w": torch.zeros(2)}, weights)
    result = cli_runner().invoke(main, ["export", str(weights), "-o", str(folder / "f.onnx")])
    assert result.exit_code == 2, result.output + result.stderr
    assert error_lines(result) == [f"error: {weights} was written by torch.save (a state_dict or a pickled model), not "
                                   "by torch.export.save: give the model's code and the weights, as FILE.py:FACTORY "
                                   f"--weights {weights} (or a zoo name --weights {weights})"]


def test_a_program_that_fails_to_deserialise_names_the_logged_cause():
    from dcn_deploy.onnx.model_loading import _load_failure

    raised = RuntimeError("We ran into an error when deserializing the saved file. Please check the warnings above")
    try:
        try:
            raise KeyError("op not found")
        except KeyError as inner:
            raise RuntimeError("Failed deserializing node") from inner
    except RuntimeError as logged:
        record = logging.LogRecord("torch.export", logging.WARNING, __file__, 1, "failed", (),
                                   (type(logged), logged, logged.__traceback__))
    assert isinstance(_load_failure(raised, [record]), KeyError)  # the root cause, not "the warnings above"
    assert _load_failure(RuntimeError("File is not a zip file"), [record]).args == ("File is not a zip file",)


def test_program_shape_mismatch_names_the_dimension_and_its_range():
    from dcn_deploy.onnx.model_loading import program_shape_mismatch

    auto = torch.export.Dim.AUTO
    program = torch.export.export(torch.nn.Conv2d(3, 4, 3), (torch.randn(2, 3, 8, 8),),
                                  dynamic_shapes=({0: auto, 2: auto},))
    assert program_shape_mismatch(program, [(5, 3, 20, 8)]) is None
    assert program_shape_mismatch(program, [(1, 3, 8, 8)]) == "input 1, dimension 0 ranges over 2..(no limit)"
    assert program_shape_mismatch(program, [(2, 3, 8, 9)]) == "input 1, dimension 3 is fixed at 8"
    assert program_shape_mismatch(program, [(2, 3, 8)]) == "input 1 has 4 dimensions, 3 given"


# --------------------------------------------------------------------------------------------------------------
# input and output names (the exporter's are "input" / "mean" / "deform_conv2d_1": meaningless to a user)
# --------------------------------------------------------------------------------------------------------------

class _TwoHeads(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.body = _build()

    def forward(self, x):
        y = self.body(x)
        return y.mean(dim=(2, 3)), y.amax(dim=(2, 3))


def test_export_names_inputs_and_outputs_and_the_file_runs_by_them(tmp_path):
    model = _TwoHeads().eval()
    x = torch.randn(2, 3, 12, 12)
    path = tmp_path / "named.onnx"
    report = export(model, (x,), path, dynamic=True, input_names=["pixels"], output_names=["scores", "peaks"])
    assert [n for n, _, _ in report.inputs] == ["pixels"] and [n for n, _, _ in report.outputs] == ["scores", "peaks"]
    assert report.verified
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    scores, peaks = session.run(["scores", "peaks"], {"pixels": x.numpy()})
    with torch.no_grad():
        want = model(x)
    np.testing.assert_allclose(scores, want[0].numpy(), atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(peaks, want[1].numpy(), atol=1e-5, rtol=1e-5)
    stored = json.loads(next(p.value for p in onnx.load(str(path)).metadata_props
                             if p.key == "dcn_deploy.example_shapes"))
    assert stored == {"pixels": [2, 3, 12, 12]}  # recorded under the new name


@pytest.mark.parametrize("names,words", [
    (dict(output_names=["only_one"]), "['only_one']: the model has 2 outputs (the exporter named them ["),
    (dict(output_names=["same", "same"]), "output_names (CLI: --output-names) gives 'same' twice"),
    (dict(input_names=["a", "b"]), "['a', 'b']: the model has 1 input (the exporter named it ['"),
])
def test_wrong_names_are_refused_with_the_exporter_names(tmp_path, names, words):
    # a repeated name is refused before the export, so without the exporter's names
    with pytest.raises(ValueError, match=r"exporter named (it|them) \[|twice") as info:
        export(_TwoHeads().eval(), (torch.randn(1, 3, 8, 8),), tmp_path / "bad.onnx", verify=False, **names)
    assert words in str(info.value)
    assert not (tmp_path / "bad.onnx").exists()


def test_cli_names_and_the_zoo_defaults(folder):
    out = folder / "named_cli.onnx"
    result = cli_runner().invoke(main, ["export", f"{folder / 'my_model.py'}:build", "--input-shape", "1x3x8x8",
                                     "-o", str(out), "--input-names", "pixels", "--output-names", "features"])
    assert result.exit_code == 0, result.output
    assert list(_input_dims(out)) == ["pixels"] and onnx.load(str(out)).graph.output[0].name == "features"
    gap = cli_runner().invoke(main, ["export", f"{folder / 'my_model.py'}:build", "--input-shape", "1x3x8x8",
                                  "-o", str(folder / "gap.onnx"), "--output-names", "a,,b"])
    assert gap.exit_code == 2 and "--output-names 'a,,b'" in gap.stderr
    from dcn_deploy.onnx.model_loading import load_model

    loaded = load_model("rfcn_resnet50_dcn")  # what `dcn-deploy export rfcn_resnet50_dcn` names the file's values
    assert loaded.input_names == ("image", "rois") and loaded.output_names == ("cls_score", "bbox_pred")
