"""One error, two readers (dcn_deploy.wording): ``dcn-deploy`` prints the option alone (``error: --keep-fp32: ...``),
a library call names the argument and then the option (``keep_fp32 (CLI: --keep-fp32): ...``).

Each case runs the real command in-process (click's runner, as a user's shell would reach ``_Group.invoke``), then
the same library call in the same process, which must get library wording again once the command has returned.
"""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto as TP
from onnx import helper

from cli_helpers import cli_runner, error_lines
from dcn_deploy import wording
from dcn_deploy.cli import main


def relu_model(path, shape) -> str:
    """x -> Relu (node 'relu1') -> y with the given input shape (ints fixed, names dynamic): an ONNX file that every
    command reads in well under a second."""
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"], name="relu1")], "relu",
                              [helper.make_tensor_value_info("x", TP.FLOAT, list(shape))],
                              [helper.make_tensor_value_info("y", TP.FLOAT, list(shape))])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    model.ir_version = 10
    onnx.save(model, str(path))
    return str(path)


def cli_error(*args) -> str:
    """The one ``error:`` line of a command that must refuse its input (exit 2), without the ``error: `` prefix."""
    result = cli_runner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 2, result.output + result.stderr
    (line,) = error_lines(result)
    assert "(CLI:" not in result.stderr and "Traceback" not in result.output + result.stderr
    assert not wording.cli_is_reading()  # the command returned: back to library wording
    return line[len("error: "):]


# ---- the wording itself -----------------------------------------------------------------------------------------
def test_argument_and_for_reader_follow_the_reader():
    assert wording.argument("verify=False", "--no-verify") == "verify=False (CLI: --no-verify)"
    assert wording.for_reader("library text", "cli text") == "library text"
    with wording.cli_wording():
        assert wording.cli_is_reading()
        assert "pass " + wording.argument("verify=False", "--no-verify") == "pass --no-verify"
        assert wording.for_reader("library text", "cli text") == "cli text"
        with wording.cli_wording():  # nested (a command group inside the CLI): still the CLI's, and unwound in order
            assert wording.argument("a", "--a") == "--a"
        assert wording.cli_is_reading()
    assert not wording.cli_is_reading()
    with pytest.raises(KeyError):  # an error leaving the block resets the wording too
        with wording.cli_wording():
            raise KeyError("x")
    assert wording.argument("shapes", "--shape") == "shapes (CLI: --shape)"


# ---- real errors through the CLI and the library ---------------------------------------------------------------
def test_keep_fp32_names_the_option_in_build_and_the_argument_in_the_library(tmp_path):
    from dcn_deploy.onnx.precision import PrecisionError, check_keep_fp32_nodes

    path = relu_model(tmp_path / "relu.onnx", ["N", 2, 8, 8])
    line = cli_error("build", path, "-o", tmp_path / "m.engine", "--precision", "fp16", "--keep-fp32", "nope")
    assert line.startswith("--keep-fp32: no node named ['nope'] in the model; node names look like ['relu1']"), line
    with pytest.raises(PrecisionError) as info:
        check_keep_fp32_nodes(onnx.load(path), ["nope"])
    assert str(info.value).startswith("keep_fp32 (CLI: --keep-fp32): no node named ['nope'] in the model")


def test_shape_errors_of_verify_and_bench_name_the_option(tmp_path):
    from dcn_deploy.backends.base import TensorMeta
    from dcn_deploy.feeds.shape_resolution import fixed_batch_error, resolve_shapes
    from dcn_deploy.feeds.shapes import FeedError

    dynamic = relu_model(tmp_path / "dynamic.onnx", ["N", 2, "H", "W"])
    line = cli_error("verify", dynamic, "--against", "ort")
    assert line == ("input 'x' has a dynamic dimension 2 (H) in shape N x 2 x H x W; give its size: "
                    "--shape x=1x2x64x64"), line
    line = cli_error("verify", dynamic, "--against", "ort", "--shape", "x=1x3x4x4")
    assert line == "input 'x': dimension 1 is fixed to 2 in the model, --shape gives 3 (model shape N x 2 x H x W)", line
    fixed = relu_model(tmp_path / "fixed.onnx", [1, 2, 4, 4])
    line = cli_error("bench", fixed, "--batch", "1,8", "--iterations", "1", "--warmup", "0", "--no-progress")
    assert line == ("--batch 1,8: input 'x' has a fixed batch size 1 (model shape 1x2x4x4), so batch 8 cannot run; "
                    "use --batch 1, or export the model with a dynamic batch dimension (dcn-deploy export --dynamic)")

    metas = [TensorMeta("x", np.dtype(np.float32), ("N", 2, "H", "W"))]
    with pytest.raises(FeedError) as info:
        resolve_shapes(metas)
    assert str(info.value).endswith("give its size: shapes={'x': (1, 2, 64, 64)} (CLI: --shape x=1x2x64x64)")
    with pytest.raises(FeedError, match=r"fixed to 2 in the model, shapes \(CLI: --shape\) gives 3"):
        resolve_shapes(metas, shapes={"x": (1, 3, 4, 4)})
    fixed_metas = [TensorMeta("x", np.dtype(np.float32), (1, 2, 4, 4))]
    assert str(fixed_batch_error(fixed_metas, [8], asked=[1, 8])) == (
        "batches (CLI: --batch 1,8): input 'x' has a fixed batch size 1 (model shape 1x2x4x4), so batch 8 cannot "
        "run; use batches=[1] (CLI: --batch 1), or export the model with a dynamic batch dimension (export(..., "
        "dynamic=True); CLI: dcn-deploy export --dynamic)")


def test_build_profile_error_gives_the_shapes_option(tmp_path):
    from dcn_deploy.backends.trt_profiles import InputShape, ProfileError, compute_profile

    path = relu_model(tmp_path / "dynamic.onnx", ["N", 2, "H", "W"])
    line = cli_error("build", path, "-o", tmp_path / "m.engine")
    assert line.endswith("so they need a size range: give --shapes x:1x2x<H>x<W> (one fixed shape) or "
                         "NAME:MIN/OPT/MAX, or trtexec-style --min-shapes/--opt-shapes/--max-shapes"), line
    with pytest.raises(ProfileError) as info:
        compute_profile([InputShape("x", ("N", 2, "H", "W"))])
    assert str(info.value).endswith(
        "give shapes=\"x:1x2x<H>x<W>\" (one fixed shape) or NAME:MIN/OPT/MAX (CLI: --shapes x:1x2x<H>x<W>), or "
        "trtexec-style min_shapes=, opt_shapes=, max_shapes= (CLI: --min-shapes/--opt-shapes/--max-shapes)")


def test_plugin_build_names_the_two_options(tmp_path):
    from dcn_deploy.plugin import library

    line = cli_error("plugin", "build", "--fetch-trt-headers", "--no-cuda", "--build-dir", tmp_path / "build")
    assert line.startswith("--fetch-trt-headers with --no-cuda: the TensorRT plugin is built only with the CUDA "
                           "kernels"), line
    with pytest.raises(ValueError) as info:
        library.build_libraries(tmp_path / "build", cuda=False, fetch_headers=True)
    assert str(info.value).startswith("fetch_headers=True with cuda=False (CLI: --fetch-trt-headers with --no-cuda): ")
    assert not (tmp_path / "build").exists()


def test_export_of_a_plain_model_says_pass_allow_no_deformable(tmp_path):
    torch = pytest.importorskip("torch")
    from dcn_deploy.onnx.export import NoDeformableLayerError, export

    source = tmp_path / "plain.py"
    source.write_text("import torch\n\n\ndef build():\n"
                      "    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU()).eval()\n")
    line = cli_error("export", f"{source}:build", "--input-shape", "1x3x8x8", "-o", tmp_path / "cli.onnx")
    assert line.startswith("Sequential has no deformable convolution") and line.endswith(
        ", or pass --allow-no-deformable to export a plain model anyway"), line
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU()).eval()
    with pytest.raises(NoDeformableLayerError) as info:
        export(model, (torch.randn(1, 3, 8, 8),), tmp_path / "lib.onnx", verify=False)
    assert str(info.value).endswith(
        ", or pass require_deformable=False (CLI: --allow-no-deformable) to export a plain model anyway")
    assert not (tmp_path / "cli.onnx").exists() and not (tmp_path / "lib.onnx").exists()
