"""Arguments that export, the feeds and compare_runners refuse, and what they say: export refuses bad tolerances and
clashing input/output names before the (slow) exporter runs, and says what a float64 failure or a float32 roundoff
mismatch means; feed errors (batch, shapes) name the library argument with the CLI option in parentheses, and the
CLI names the option alone."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from dcn_deploy.backends.base import TensorMeta
from dcn_deploy.feeds import FeedError, resolve_shapes
from dcn_deploy.onnx import export as export_module
from dcn_deploy.onnx.export import ExportError, VerificationError, export
from dcn_deploy.ops import DeformConv2d, DeformConv2dPack, ModulatedDeformConv2dPack

from cli_helpers import cli_runner

pytestmark = pytest.mark.usefixtures("one_torch_thread")

F32 = np.dtype(np.float32)


@pytest.fixture
def no_exporter(monkeypatch):
    """Fails the test if torch.onnx's exporter is reached: the checks under test come before it."""
    def refuse(*args, **kwargs):
        raise AssertionError("the exporter ran before the argument was refused")

    monkeypatch.setattr(export_module, "run_exporter", refuse)  # export() looks it up in its own module


# ---- tolerances are checked before the export ----------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, message", [
    (dict(atol=-1.0), r"atol \(CLI: --atol\) must be a finite number >= 0, got -1.0"),
    (dict(rtol=float("nan")), r"rtol \(CLI: --rtol\) must be a finite number >= 0, got nan"),
    (dict(atol=float("inf")), r"atol \(CLI: --atol\) must be a finite number >= 0, got inf"),
])
def test_export_checks_the_tolerance_before_exporting(tmp_path, no_exporter, kwargs, message):
    with pytest.raises(ValueError, match=message):
        export(DeformConv2dPack(3, 4, 3, padding=1).eval(), (torch.randn(1, 3, 6, 6),), tmp_path / "m.onnx", **kwargs)
    assert not (tmp_path / "m.onnx").exists()


# ---- repeated input/output names are refused before the export -----------------------------------------------------

@pytest.mark.parametrize("names, message", [
    (dict(input_names=["a"], output_names=["a"]), r"output_names \(CLI: --output-names\) repeats the input name 'a'"),
    (dict(output_names=["y", "y"]), r"output_names \(CLI: --output-names\) gives 'y' twice"),
    (dict(input_names=["x", "x"]), r"input_names \(CLI: --input-names\) gives 'x' twice"),
])
def test_export_refuses_repeated_names_before_exporting(tmp_path, no_exporter, names, message):
    with pytest.raises(ValueError, match=message):
        export(DeformConv2dPack(3, 4, 3, padding=1).eval(), (torch.randn(1, 3, 6, 6),), tmp_path / "m.onnx", **names)
    with pytest.raises(TypeError, match=r"output_names \(CLI: --output-names\) must be a list of strings"):
        export(DeformConv2dPack(3, 4, 3, padding=1).eval(), (torch.randn(1, 3, 6, 6),), tmp_path / "m.onnx",
               output_names="logits")


def test_cli_export_refuses_an_output_named_like_the_input(tmp_path, no_exporter):
    from dcn_deploy.cli import main

    out = tmp_path / "demo.onnx"
    result = cli_runner().invoke(main, ["export", "dcn_deploy.models.demo:DemoNet", "--input-shape", "1x1x28x28",
                                        "-o", str(out), "--input-names", "image", "--output-names", "image"])
    assert result.exit_code == 2, result.output
    assert "error: --output-names repeats the input name 'image'" in result.stderr  # the CLI's wording of it
    assert not out.exists()


def test_cli_export_input_shape_with_a_name_says_to_give_the_sizes_alone(tmp_path, no_exporter):
    """verify's --shape takes NAME=SHAPE; export's --input-shape cannot (the inputs have no names before export)."""
    from dcn_deploy.cli import main

    out = tmp_path / "demo.onnx"
    for text in ("input=1x1x28x28", "input:1x1x28x28"):
        result = cli_runner().invoke(main, ["export", "dcn_deploy.models.demo:DemoNet", "--input-shape", text,
                                            "-o", str(out)])
        assert result.exit_code == 2, result.output
        assert (f"error: --input-shape '{text}': give the sizes alone, one --input-shape per model input in the "
                "order of its forward's arguments") in result.stderr
        assert not out.exists()


# ---- float64 in ONNX Runtime; float32 roundoff in the verification message -------------------------------------

def test_float64_model_with_a_conv_says_what_onnx_runtime_lacks(tmp_path):
    model = ModulatedDeformConv2dPack(2, 2, 3, padding=1).double().eval()
    path = tmp_path / "f64.onnx"
    with pytest.raises(ExportError, match=r"cannot load .*NOT_IMPLEMENTED.*CPU provider has no float64 Conv; export "
                                          r"in float32 .*or pass verify=False \(CLI: --no-verify\)"):
        export(model, (torch.randn(1, 2, 5, 5, dtype=torch.float64),), path)
    assert path.is_file()  # kept, as for every verification failure
    assert export(model, (torch.randn(1, 2, 5, 5, dtype=torch.float64),), path, verify=False).op_counts


def test_missing_kernel_is_float64_only():
    from dcn_deploy.backends.ort_runner import missing_float64_kernel

    text = ("[ONNXRuntimeError] : 9 : NOT_IMPLEMENTED : Could not find an implementation for Conv(11) node with name "
            "'node_Conv_30'")
    assert missing_float64_kernel(text, True) == "Conv"
    assert missing_float64_kernel(text, False) is None
    assert missing_float64_kernel("[ONNXRuntimeError] : 1 : FAIL : other", True) is None


def test_a_float64_export_without_plain_convolutions_verifies(tmp_path):
    # what the verification message offers to tell roundoff from a bug holds: ONNX Runtime runs float64 DeformConv
    model = DeformConv2d(2, 3, 3, padding=1).double().eval()
    x, offset = torch.randn(1, 2, 5, 5, dtype=torch.float64), 3 * torch.randn(1, 18, 5, 5, dtype=torch.float64)
    assert export(model, (x, offset), tmp_path / "f64.onnx").verified


def test_verification_error_explains_float32_roundoff_before_asking_for_a_report(tmp_path):
    from test_export import ExportsSomethingElse

    with pytest.raises(VerificationError) as info:
        export(ExportsSomethingElse().eval(), (torch.randn(1, 2, 5, 5), torch.randn(1, 18, 5, 5)), tmp_path / "w.onnx")
    text = str(info.value)
    hint = text.index("roundoff grows with large offsets")
    assert hint < text.index("Otherwise please report it")
    assert "copy.deepcopy(model).double()" in text[hint:] and "no float64 Conv" in text[hint:]


# ---- feed errors name the library argument and the CLI option --------------------------------------------------

def test_batch_below_one_is_refused_as_such():
    fixed = (TensorMeta("x", F32, (1, 3, 8, 8)),)
    for bad in (0, -2, 1.5, True):
        with pytest.raises(FeedError, match=r"batch \(CLI: --batch\) must be an int >= 1"):
            resolve_shapes(fixed, batch=bad)
    with pytest.raises(FeedError, match=r"fixed batch size 1 .*use batch=1 \(CLI: --batch 1\).*dynamic=True"):
        resolve_shapes(fixed, batch=3)
    assert resolve_shapes((TensorMeta("x", F32, ("N", 3)),), batch=np.int64(4)) == {"x": (4, 3)}


def test_shape_errors_give_the_library_form_and_the_cli_form():
    metas = (TensorMeta("image", F32, ("N", 3, "H", "W")),)
    with pytest.raises(FeedError) as info:
        resolve_shapes(metas)
    message = str(info.value)
    assert "give its size: shapes={'image': (1, 3, 64, 64)} (CLI: --shape image=1x3x64x64)" in message
    assert resolve_shapes(metas, shapes={"image": (1, 3, 64, 64)}) == {"image": (1, 3, 64, 64)}  # the fix works
    with pytest.raises(FeedError, match=r"shapes \(CLI: --shape\) names \['imgae'\], which are not inputs"):
        resolve_shapes(metas, {"imgae": (1, 3, 8, 8)})
    with pytest.raises(FeedError, match=r"shapes \(CLI: --shape\) gives 1x3x8, 3 dimensions; the model's input has 4"):
        resolve_shapes(metas, {"image": (1, 3, 8)})


@pytest.mark.parametrize("command", ["export", "verify"])
@pytest.mark.parametrize("option,value", [("--atol", "nan"), ("--rtol", "-1"), ("--atol", "inf")])
def test_cli_tolerances_are_finite_and_not_negative(tmp_path, command, option, value):
    from dcn_deploy.cli import main

    existing = tmp_path / "m.onnx"
    existing.write_bytes(b"not read: the options are checked first")
    args = (["export", "dcn_deploy.models.demo:DemoNet", "-o", str(tmp_path / "d.onnx")] if command == "export"
            else ["verify", str(existing)])
    result = cli_runner().invoke(main, args + [option, value])
    assert result.exit_code == 2, result.output
    assert f"{option} must be a finite number >= 0, got {float(value)}" in result.output
    assert not (tmp_path / "d.onnx").exists()


# ---- library errors name the library argument, the CLI option in parentheses ------------------------------------

def test_a_shape_given_as_text_names_the_argument_and_the_tuple():
    metas = (TensorMeta("image", F32, ("N", 3, "H", "W")),)
    with pytest.raises(FeedError) as info:
        resolve_shapes(metas, {"image": "1x3x8x8"})
    assert str(info.value) == ("shapes={'image': '1x3x8x8'}: each shape must be a tuple of ints >= 0, e.g. "
                               "shapes={'image': (1, 3, 8, 8)} (CLI: --shape image=1x3x8x8)")
    for bad in (5, (1, 3, 8.0, 8), None):
        with pytest.raises(FeedError, match=r"shapes=\{'image': .*\}: each shape must be a tuple of ints"):
            resolve_shapes(metas, {"image": bad})
    assert resolve_shapes(metas, {"image": [1, 3, np.int64(8), 8]}) == {"image": (1, 3, 8, 8)}


def test_compare_runners_with_a_text_shape_says_so(tmp_path):
    from dcn_deploy import OrtRunner, compare_runners, make_runner

    net = DeformConv2dPack(3, 4, 3, padding=1).eval()
    export(net, (torch.randn(1, 3, 8, 8),), tmp_path / "n.onnx", dynamic=True, input_names=["image"], verify=False)
    with pytest.raises(FeedError, match=r"shapes=\{'image': '1x3x8x8'\}: each shape must be a tuple of ints"):
        compare_runners([make_runner("torch", tmp_path / "n.onnx", torch_model=net), OrtRunner(tmp_path / "n.onnx")],
                        shapes={"image": "1x3x8x8"})
    with pytest.raises(ValueError) as info:
        make_runner("torch", tmp_path / "n.onnx")
    message = str(info.value)
    assert "pass torch_model=module" in message and "(CLI: --model FILE.py:FACTORY" in message
    assert message.index("torch_model=") < message.index("--model")
