"""The advice in export, model-loading and file-reading errors names what its reader types: a failed verification,
input/output names of the wrong count, an exporter failure, bad tolerances, a missing weights file or layer package,
a missing input file, and a PyTorch file given where an ONNX file belongs. A library caller reads the Python argument
with the CLI option in parentheses; a ``dcn-deploy`` user reads the option alone, and no advice twice
(:mod:`dcn_deploy.wording`; the wording mechanism itself: tests/test_error_wording.py)."""
from __future__ import annotations

import sys
import textwrap

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from dcn_deploy.backends.base import TensorMeta
from dcn_deploy.backends.factory import read_onnx_model
from dcn_deploy.cli import main
from dcn_deploy.compare import Tolerance
from dcn_deploy.feeds import FeedError, load_feed
from dcn_deploy.onnx.export import ExportError, VerificationError, export
from dcn_deploy.onnx.graph_names import rename_graph_io
from dcn_deploy.onnx.model_loading import ModelCodeError, load_model
from dcn_deploy.wording import cli_wording

from cli_helpers import cli_runner, error_lines

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# Model files the CLI loads: one whose file computes y + 1 (it cannot verify), one that branches on a tensor's
# values (the exporter fails), one deformable layer for the name checks.
_MODELS = '''
import torch
from dcn_deploy import DeformConv2dPack


class Wrong(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.dcn = DeformConv2dPack(2, 2, 3, padding=1)

    def forward(self, x):
        y = self.dcn(x)
        return y + 1 if torch.onnx.is_in_onnx_export() else y


class Branchy(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.dcn = DeformConv2dPack(2, 2, 3, padding=1)

    def forward(self, x):
        y = self.dcn(x)
        if y.sum() > 0:
            return y * 2
        return y
'''


@pytest.fixture
def models_file(tmp_path):
    path = tmp_path / "wording_models.py"
    path.write_text(_MODELS)
    return path


def _load(models_file, name):
    return load_model(f"{models_file}:{name}").model


def _cli(*args):
    return cli_runner().invoke(main, [str(a) for a in args])


def _one_error(result) -> str:
    lines = error_lines(result)
    assert len(lines) == 1, result.stderr
    return lines[0]


# ---- the verification-failure advice ------------------------------------------------------------------------------

def test_cli_verification_advice_names_the_options(models_file, tmp_path):
    out = tmp_path / "w.onnx"
    result = _cli("export", f"{models_file}:Wrong", "-o", out, "--input-shape", "1x2x5x5")
    assert result.exit_code != 0
    error = _one_error(result)
    assert "does not match PyTorch" in error
    assert "pass --rtol/--atol." in error and "(rtol/atol)" not in error
    assert "export again with --dtype float64: if that verifies, the float32 difference is roundoff" in error
    assert error.endswith("If neither explains it, please report it")


def test_library_verification_advice_names_the_arguments_and_the_options(models_file, tmp_path):
    with pytest.raises(VerificationError) as info:
        export(_load(models_file, "Wrong"), (torch.randn(1, 2, 5, 5),), tmp_path / "w.onnx")
    text = str(info.value)
    assert "pass rtol/atol (CLI: --rtol/--atol)." in text
    assert "copy.deepcopy(model).double() run on input.double()" in text and "--dtype" not in text
    assert text.endswith("Otherwise please report it")


# ---- input/output names of the wrong count ------------------------------------------------------------------------

def _two_output_graph() -> onnx.ModelProto:
    """x (1x3) -> Relu -> r, Neg -> n: one input, two outputs."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])
    outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 3]) for n in ("r", "n")]
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Neg", ["x"], ["n"])],
                              "g", [x], outs)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])


def test_wrong_name_count_library_wording():
    with pytest.raises(ValueError) as info:
        rename_graph_io(_two_output_graph(), ["a", "b"], None)
    assert str(info.value) == ("input_names (CLI: --input-names) ['a', 'b']: the model has 1 input (the exporter "
                               "named it ['x']); give one non-empty name")
    with pytest.raises(ValueError) as info:
        rename_graph_io(_two_output_graph(), None, ["y"])
    assert str(info.value).startswith("output_names (CLI: --output-names) ['y']: the model has 2 outputs (the "
                                      "exporter named them ['r', 'n']); give 2 distinct, non-empty names")
    proto = _two_output_graph()
    rename_graph_io(proto, ["image"], ["relu", "neg"])  # the fix works
    assert [o.name for o in proto.graph.output] == ["relu", "neg"]


def test_wrong_name_count_cli_wording(models_file, tmp_path):
    with cli_wording():
        with pytest.raises(ValueError) as info:
            rename_graph_io(_two_output_graph(), None, ["y", "y"])
    assert str(info.value) == ("--output-names y,y: the model has 2 outputs (the exporter named them r,n); give 2 "
                               "distinct, non-empty names, one per output in order")
    out = tmp_path / "n.onnx"
    result = _cli("export", f"{models_file}:Wrong", "-o", out, "--input-shape", "1x2x5x5", "--input-names", "a,b",
                  "--no-verify")
    assert result.exit_code != 0
    assert _one_error(result) == ("error: --input-names a,b: the model has 1 input (the exporter named it x); "
                                  "give one non-empty name")


# ---- an exporter failure points at its details once --------------------------------------------------------------

def test_exporter_failure_library_points_at_the_chained_exception(models_file, tmp_path):
    with pytest.raises(ExportError) as info:
        export(_load(models_file, "Branchy"), (torch.randn(1, 2, 5, 5),), tmp_path / "b.onnx")
    text = str(info.value)
    assert "data-dependent control flow" in text
    assert text.endswith("; the exporter's full error is chained to this one (its __cause__, shown in the traceback)")
    assert "dcn-deploy" not in text and info.value.__cause__ is not None


def test_exporter_failure_cli_gives_the_debug_advice_once(models_file, tmp_path):
    result = _cli("export", f"{models_file}:Branchy", "-o", tmp_path / "b.onnx", "--input-shape", "1x2x5x5")
    assert result.exit_code != 0
    error = _one_error(result)
    assert "data-dependent control flow" in error and error.endswith("or use torch.cond")
    assert "chained" not in error and "--debug" not in error
    assert result.stderr.count("--debug") == 1  # the CLI's own "(for the traceback run: ...)" line


# ---- tolerances ---------------------------------------------------------------------------------------------------

def test_tolerance_error_names_the_cli_option_for_a_library_caller(tmp_path):
    with pytest.raises(ValueError) as info:
        export(torch.nn.Identity(), (torch.randn(1, 2),), tmp_path / "m.onnx", rtol=-1)
    assert str(info.value) == "rtol (CLI: --rtol) must be a finite number >= 0, got -1"
    with pytest.raises(ValueError, match=r"^atol \(CLI: --atol\) must be a finite number >= 0, got nan$"):
        Tolerance(atol=float("nan"), rtol=0.0)
    assert not (tmp_path / "m.onnx").exists()


def test_tolerance_error_in_the_cli_names_the_option_once(tmp_path):
    result = _cli("export", "dcn_deploy.models.demo:DemoNet", "-o", tmp_path / "d.onnx", "--atol", "-1")
    assert result.exit_code == 2
    assert _one_error(result) == "error: --atol must be a finite number >= 0, got -1.0"


# ---- model loading ------------------------------------------------------------------------------------------------

def test_missing_weights_file_library_and_cli(models_file, tmp_path):
    missing = tmp_path / "nope.pt"
    with pytest.raises(FileNotFoundError) as info:
        load_model(f"{models_file}:Wrong", missing)
    assert str(info.value).startswith(f"weights (CLI: --weights) {missing}: no such file")
    result = _cli("export", f"{models_file}:Wrong", "-o", tmp_path / "x.onnx", "--weights", missing)
    assert _one_error(result).startswith(f"error: --weights {missing}: no such file")


_LAYER_HINT = ("(deformable layers of torchvision and mmcv are then converted to dcn_deploy's automatically); or, if "
               "the model needs {package} only for its deformable layers, build it with dcn_deploy's layers of the same "
               "names (same arguments and state_dict keys): dcn_deploy.DeformConv2d, DeformConv2dPack, "
               "ModulatedDeformConv2dPack, dcn_deploy.ops.roi_modules.*")


@pytest.mark.parametrize("package", ["mmcv", "mmdet", "mmengine", "torchvision"])
def test_a_model_file_needing_a_layer_package_says_both_ways_out(tmp_path, monkeypatch, package):
    monkeypatch.setitem(sys.modules, package, None)  # not installed, here or wherever the test runs
    path = tmp_path / "uses_pkg.py"
    path.write_text(f"import {package}.ops\n\n\ndef build():\n    pass\n")
    with pytest.raises(ModelCodeError) as info:
        load_model(f"{path}:build")
    text = str(info.value)
    assert f"; {package} is not installed here: load the model in the Python environment that has {package} " \
           f"{_LAYER_HINT.format(package=package)}" in text and "fix " not in text
    result = _cli("export", f"{path}:build", "-o", tmp_path / "x.onnx")
    assert f"{package} is not installed here: run dcn-deploy in the environment that has {package} " \
           f"{_LAYER_HINT.format(package=package)}" \
        in _one_error(result)


def test_a_module_needing_mmcv_says_both_ways_out(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "mmcv", None)
    (tmp_path / "fake_mmcv_user_model.py").write_text("from mmcv.ops import DeformConv2dPack\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModelCodeError, match=r"importing module 'fake_mmcv_user_model' raised ModuleNotFoundError.*; "
                                             r"mmcv is not installed here: load the model"):
        load_model("fake_mmcv_user_model:build")
    monkeypatch.setitem(sys.modules, "mmdet", None)
    with pytest.raises(ValueError, match=r"cannot import module 'mmdet.apis' \(no module 'mmdet(.apis)?'\); mmdet is "
                                         r"not installed here: load the model"):
        load_model("mmdet.apis:init_detector")


@pytest.mark.parametrize("package, files, raised", [
    # torchvision built for another torch: its own import fails registering its ops
    ("torchvision", {"__init__.py": "raise RuntimeError('operator torchvision::nms does not exist')\n"},
     "RuntimeError: operator torchvision::nms does not exist"),
    # mmcv without its compiled ops (mmcv-lite, or built without them): mmcv imports, mmcv.ops does not
    ("mmcv", {"__init__.py": "", "ops/__init__.py": "import mmcv._ext\n"}, "No module named 'mmcv._ext'"),
])
def test_a_layer_package_that_is_installed_but_broken_is_not_called_missing(tmp_path, monkeypatch, package, files,
                                                                             raised):
    """The package is there but its import fails: the advice is a build that fits this torch (or our layers), not
    'fix your file' and not 'not installed'."""
    site = tmp_path / "site"
    for name, text in files.items():
        (site / package / name).parent.mkdir(parents=True, exist_ok=True)
        (site / package / name).write_text(text)
    for name in [m for m in sys.modules if m == package or m.startswith(package + ".")]:
        monkeypatch.delitem(sys.modules, name)  # a real one imported by an earlier test: find this one instead
    monkeypatch.syspath_prepend(str(site))
    path = tmp_path / "uses_pkg.py"
    path.write_text(f"import {package}.ops\n\n\ndef build():\n    pass\n")
    with pytest.raises(ModelCodeError) as info:
        load_model(f"{path}:build")
    text = str(info.value)
    assert raised in text and f"; {package} is installed here but fails to import" in text, text
    assert f"install the {package} built for this torch" in text and f"({torch.__version__})" in text
    assert _LAYER_HINT.format(package=package) in text and "fix " not in text and "not installed" not in text


def test_a_layer_package_that_imports_but_raises_in_a_call_keeps_the_plain_advice(tmp_path, monkeypatch):
    """The model file's own module-level code called the package (which imported fine) and the call raised: the
    package is not broken, the file is; the advice is 'fix the file', not 'install another build'."""
    site = tmp_path / "site"
    (site / "torchvision").mkdir(parents=True)
    (site / "torchvision" / "__init__.py").write_text("")
    (site / "torchvision" / "ops.py").write_text(
        "def deform_layer(groups):\n    raise ValueError(f'groups must divide the channels, got {groups}')\n")
    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.syspath_prepend(str(site))
    path = tmp_path / "calls_pkg.py"
    path.write_text("import torchvision.ops\n\nLAYER = torchvision.ops.deform_layer(groups=3)\n\n\n"
                    "def build():\n    pass\n")
    with pytest.raises(ModelCodeError) as info:
        load_model(f"{path}:build")
    text = str(info.value)
    assert "groups must divide the channels, got 3" in text and "fails to import" not in text, text
    assert text.endswith(f"; fix {path} (or the module it imports)"), text


def test_other_missing_modules_keep_the_plain_advice(tmp_path):
    path = tmp_path / "uses_other.py"
    path.write_text("import no_such_package_xyz\n")
    with pytest.raises(ModelCodeError) as info:
        load_model(f"{path}:build")
    assert str(info.value).endswith(f"; fix {path} (or the module it imports)")
    assert "not installed here" not in str(info.value)


def test_missing_zoo_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "dcn_deploy.models.zoo", None)  # as if models/ were not installed
    with pytest.raises(ValueError) as info:
        load_model("resnet50_dcn_c5")
    text = str(info.value)
    assert "(dcn_deploy.models, the repository's models/ folder) is installed by `pip install -e .` from a " \
           "checkout; running from a source tree with PYTHONPATH alone lacks it" in text
    assert text.endswith("give FILE.py:FACTORY, package.module:FACTORY, or a torch.export program FILE.pt2")
    assert "python -c" not in text and "zoo name" not in text


def test_reference_forms_point_to_zoo_list(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        load_model(tmp_path / "missing.pth")
    assert str(info.value).endswith("or a zoo name (list them: dcn-deploy zoo list)")
    assert "python -c" not in str(info.value)


# ---- a missing input file names --input --------------------------------------------------------------------------

def _relu_onnx(path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)]), str(path))


def test_missing_input_file_names_the_option(tmp_path):
    missing = tmp_path / "nope.npy"
    meta = TensorMeta("x", np.dtype(np.float32), (1, 3))
    with pytest.raises(FeedError) as info:
        load_feed([f"x={missing}"], [meta])
    assert str(info.value) == f"items (CLI: --input): input file {missing} does not exist; check the path"
    model = tmp_path / "relu.onnx"
    _relu_onnx(model)
    result = _cli("infer", model, "--input", f"x={missing}")
    assert result.exit_code == 2
    assert _one_error(result) == f"error: --input: input file {missing} does not exist; check the path"
    np.save(tmp_path / "x.npy", np.random.default_rng(0).standard_normal((1, 3)).astype(np.float32))
    assert _cli("infer", model, "--input", f"x={tmp_path / 'x.npy'}").exit_code == 0  # the fix works


# ---- a PyTorch file given where an ONNX file belongs --------------------------------------------------------------

def test_verify_of_a_state_dict_says_to_export_it_first(tmp_path):
    torch.manual_seed(0)
    checkpoint = tmp_path / "sd.pt"
    torch.save(torch.nn.Conv2d(3, 4, 3).state_dict(), checkpoint)
    result = _cli("verify", checkpoint)
    assert result.exit_code == 2
    error = _one_error(result)
    assert "is not a readable ONNX model" in error and "dcn_deploy.onnx.export" not in error
    assert error.endswith(f"export that to ONNX first (dcn-deploy export FILE.py:FACTORY --weights {checkpoint} -o "
                          "model.onnx) and give the .onnx file")
    with pytest.raises(ValueError) as info:
        read_onnx_model(checkpoint)
    assert str(info.value).endswith("(dcn_deploy.export(model, example_inputs, 'model.onnx'); CLI: dcn-deploy export "
                                    f"FILE.py:FACTORY --weights {checkpoint} -o model.onnx) and give the .onnx file")


def test_other_unreadable_files_name_the_writer_for_the_reader(tmp_path):
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(ValueError) as info:
        read_onnx_model(junk)
    assert str(info.value).endswith("give an .onnx file written by dcn_deploy.export (CLI: dcn-deploy export) or "
                                    "torch.onnx.export")
    error = _one_error(_cli("inspect", junk))
    assert error.endswith("give an .onnx file written by dcn-deploy export or torch.onnx.export")
    program = tmp_path / "p.pt2"
    program.write_bytes(b"not a zip")
    with cli_wording():
        with pytest.raises(ValueError) as info:
            read_onnx_model(program)
    assert str(info.value).endswith(f"export it to ONNX first (dcn-deploy export {program} -o model.onnx) and give "
                                    "the .onnx file")
