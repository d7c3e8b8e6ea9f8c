"""The library's public calls as a user coming from torchvision or mmcv makes them: ``deform_conv2d`` against a loop
written from the formula; layers and RoI ops that check their arguments and input, naming the argument and the fix;
``compare_runners`` and ``benchmark`` giving valid boxes to the RoI inputs a runner reports; ``OrtRunner``'s
argument checks; and docs/library.md (its example runs as written, every name it shows is importable)."""
from __future__ import annotations

import math

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from dcn_deploy import (DeformConv2d, DeformConv2dPack, DeformPSRoIPool, DeformRoIPool, DeformRoIPoolPack,
                        ModulatedDeformConv2dPack, ShapeError, deform_conv2d, deform_psroi_pool, deform_roi_pool)
from dcn_deploy.backends.base import Runner, RunnerError, TensorMeta
from dcn_deploy.backends.ort_runner import OrtRunner
from dcn_deploy.bench import benchmark
from dcn_deploy.compare import Tolerance, compare_runners


# --------------------------------------------------------------------------------------------------------------
# deform_conv2d against a loop written from the formula alone (torchvision's semantics)
# --------------------------------------------------------------------------------------------------------------

def _bilinear_zero_outside(image: np.ndarray, y: float, x: float) -> float:
    height, width = image.shape
    y0, x0 = math.floor(y), math.floor(x)
    total = 0.0
    for yy, wy in ((y0, 1 - (y - y0)), (y0 + 1, y - y0)):
        for xx, wx in ((x0, 1 - (x - x0)), (x0 + 1, x - x0)):
            if 0 <= yy < height and 0 <= xx < width:
                total += wy * wx * image[yy, xx]
    return total


def _loop_deform_conv2d(x, offset, weight, bias, stride, padding, dilation, mask):
    n, c, _, _ = x.shape
    oc, c_per_group, kh, kw = weight.shape
    oh, ow = offset.shape[2:]
    groups, offset_groups = c // c_per_group, offset.shape[1] // (2 * kh * kw)
    out = np.zeros((n, oc, oh, ow))
    per_group = oc // groups
    for b in range(n):
        for ch in range(c):
            g, grp = ch // (c // offset_groups), ch // c_per_group
            for i in range(kh):
                for j in range(kw):
                    point = (g * kh + i) * kw + j
                    for y in range(oh):
                        for xo in range(ow):
                            py = y * stride[0] - padding[0] + i * dilation[0] + offset[b, 2 * point, y, xo]
                            px = xo * stride[1] - padding[1] + j * dilation[1] + offset[b, 2 * point + 1, y, xo]
                            value = _bilinear_zero_outside(x[b, ch], py, px) * mask[b, point, y, xo]
                            rows = slice(grp * per_group, (grp + 1) * per_group)
                            out[b, rows, y, xo] += weight[rows, ch % c_per_group, i, j] * value
    return out + bias[None, :, None, None]


def test_op_matches_the_formula_with_groups_asymmetric_geometry_and_samples_off_the_image():
    gen = torch.Generator().manual_seed(11)
    stride, padding, dilation = (2, 1), (0, 2), (1, 2)
    x = torch.randn(2, 4, 6, 5, generator=gen, dtype=torch.float64)
    weight = torch.randn(6, 2, 3, 2, generator=gen, dtype=torch.float64)  # groups 2, non-square kernel
    oh = (6 - 1 * 2 - 1) // 2 + 1
    ow = (5 + 4 - 2 * 1 - 1) // 1 + 1
    offset = torch.randn(2, 2 * 2 * 6, oh, ow, generator=gen, dtype=torch.float64) * 4  # 2 offset groups, far out
    mask = torch.rand(2, 2 * 6, oh, ow, generator=gen, dtype=torch.float64)
    bias = torch.randn(6, generator=gen, dtype=torch.float64)
    expected = _loop_deform_conv2d(*(t.numpy() for t in (x, offset, weight, bias)), stride, padding, dilation,
                                   mask.numpy())
    assert np.abs(offset.numpy()).max() > 6  # some samples land beyond the image
    got = deform_conv2d(x, offset, weight, bias, stride, padding, dilation, mask)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-10, atol=1e-10)


# --------------------------------------------------------------------------------------------------------------
# modules: what a layer knows about its input is checked
# --------------------------------------------------------------------------------------------------------------

def test_deform_conv2d_module_refuses_an_input_with_other_channels_instead_of_inferring_groups():
    layer = DeformConv2d(3, 8, 3, padding=1)
    offset = torch.randn(1, 18, 8, 8, generator=torch.Generator().manual_seed(0))
    # 6 channels = 2 x 3: the functional op would take it as 2 groups and return a plausible (1, 8, 8, 8)
    with pytest.raises(ShapeError, match=r"DeformConv2d was built for in_channels=3.*6 channels"):
        layer(torch.randn(1, 6, 8, 8), offset)


@pytest.mark.parametrize("cls", [DeformConv2dPack, ModulatedDeformConv2dPack])
def test_pack_layers_name_themselves_for_a_wrong_input(cls):
    layer = cls(3, 4, 3, padding=1)
    with pytest.raises(ShapeError, match=rf"{cls.__name__} was built for in_channels=3"):
        layer(torch.randn(1, 4, 8, 8))
    with pytest.raises(ShapeError, match=r"4-D input.*unsqueeze\(0\)"):
        layer(torch.randn(3, 8, 8))


@pytest.mark.parametrize("build, argument", [
    (lambda: DeformConv2d(0, 8, 3), "in_channels"),
    (lambda: DeformConv2d(4, 0, 3), "out_channels"),
    (lambda: DeformConv2d(4, 8, 3, groups=0), "groups"),
    (lambda: DeformConv2d(4.0, 8, 3), "in_channels"),
    (lambda: DeformConv2dPack(4, 8, 3, deform_groups=0), "deform_groups"),
    (lambda: DeformRoIPoolPack(3, 0), "output_channels"),
    (lambda: DeformRoIPoolPack(3, 4, deform_fc_channels=0), "deform_fc_channels"),
    (lambda: DeformPSRoIPool(2, 0, 0.25), "group_size"),
    (lambda: DeformPSRoIPool(2, 3, 0.25, num_offset_classes=0), "num_offset_classes"),
    (lambda: DeformRoIPool(3, spatial_scale=0), "spatial_scale"),
    (lambda: DeformRoIPool(3, sampling_ratio=-1), "sampling_ratio"),
])
def test_constructors_name_the_argument_that_is_not_a_positive_int(build, argument):
    # these were a ZeroDivisionError or a layer with empty weights
    with pytest.raises(ShapeError, match=argument):
        build()


def test_psroi_module_names_the_channels_it_expects():
    layer = DeformPSRoIPool(2, 3, 0.25)
    rois = torch.tensor([[0.0, 1.0, 2.0, 20.0, 18.0]])
    with pytest.raises(ShapeError, match=r"DeformPSRoIPool: input must have 18 channels"):
        layer(torch.randn(1, 3, 10, 12), rois)
    with pytest.raises(ShapeError, match=r"offset_input must have 5 channels"):
        DeformPSRoIPool(2, 3, 0.25, offset_in_channels=5)(torch.randn(1, 18, 10, 12), rois, torch.randn(1, 4, 10, 12))


@pytest.mark.parametrize("scale", [0, -0.25, float("nan"), "0.25", True])
def test_roi_ops_refuse_a_spatial_scale_that_is_not_a_positive_number(scale):
    x = torch.randn(1, 18, 10, 12, generator=torch.Generator().manual_seed(1))
    rois = torch.tensor([[0.0, 1.0, 2.0, 20.0, 18.0]])
    with pytest.raises(ShapeError, match="spatial_scale"):
        deform_roi_pool(x, rois, None, 2, scale, 2)
    with pytest.raises(ShapeError, match="spatial_scale"):
        deform_psroi_pool(x, rois, None, scale, 2, 3, 3, no_trans=True)


# --------------------------------------------------------------------------------------------------------------
# compare / bench / runners
# --------------------------------------------------------------------------------------------------------------

class _BoxRunner(Runner):
    """A pure-Python runner over (image, rois): returns the mean of each box's x1 and fails on an invalid box, as
    the PyTorch op does (batch index outside the image batch, x2 < x1)."""

    def __init__(self, name: str, report_rois: bool) -> None:
        super().__init__()
        self.name = name
        self.report_rois = report_rois

    def input_metadata(self):
        return (TensorMeta("image", np.dtype(np.float32), (2, 3, 16, 16)),
                TensorMeta("rois", np.dtype(np.float32), (4, 5)))

    def roi_inputs(self):
        return ("rois",) if self.report_rois else ()

    def _activate(self):
        pass

    def _deactivate(self):
        pass

    def _infer(self, feed):
        boxes = feed["rois"]
        if boxes[:, 0].min() < 0 or boxes[:, 0].max() >= 2 or (boxes[:, 3] < boxes[:, 1]).any():
            raise RunnerError(f"{self.name}: invalid boxes")
        return {"y": boxes[:, 1:].mean(axis=1)}


def test_compare_runners_gives_valid_boxes_to_the_roi_inputs_a_runner_reports():
    result = compare_runners([_BoxRunner("a", report_rois=False), _BoxRunner("b", report_rois=True)])
    assert result.passed and result.outputs[0].output == "y"
    with pytest.raises(RunnerError, match="invalid boxes"):  # rois=() says: no RoI inputs, random values
        compare_runners([_BoxRunner("a", False), _BoxRunner("b", True)], rois=())


def test_compare_runners_names_what_it_takes_when_given_runner_names():
    with pytest.raises(TypeError, match=r"compare_runners takes Runner objects, got str 'ort'; make them with "
                                        r"dcn_deploy.make_runner\(kind, path\)"):
        compare_runners(["ort", "onnx-reference"])


def test_benchmark_gives_valid_boxes_to_the_roi_inputs_a_runner_reports():
    result = benchmark([_BoxRunner("b", report_rois=True)], iterations=2, warmup=0, progress=False)
    assert result.entries[0].iterations == 2


def test_compare_runners_refuses_the_same_runner_twice_and_bad_tolerances():
    runner = _BoxRunner("a", True)
    with pytest.raises(ValueError, match="same runner object twice"):
        compare_runners([runner, runner])
    with pytest.raises(ValueError, match=r"atol \(CLI: --atol\) must be a finite number >= 0"):
        Tolerance(-1.0, 1e-3)
    with pytest.raises(ValueError, match="rtol"):
        Tolerance(1e-4, float("nan"))


@pytest.mark.parametrize("kwargs, words", [
    ({"batches": "1,8"}, "batches must be a list of ints"),
    ({"iterations": 2.5}, "iterations must be an int"),
    ({"warmup": 1.5}, "warmup must be an int"),
    ({"batches": [1, 2.5]}, "batch size must be an int"),
])
def test_benchmark_names_a_count_that_is_not_an_int(kwargs, words):
    with pytest.raises(TypeError, match=words):
        benchmark([_BoxRunner("b", True)], progress=False, **kwargs)


@pytest.fixture(scope="module")
def relu_model() -> onnx.ModelProto:
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "relu",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])


def test_ort_runner_refuses_unknown_providers_and_thread_counts(relu_model):
    with pytest.raises(RunnerError, match=r"execution provider\(s\) \['NoSuchExecutionProvider'\].*available"):
        OrtRunner(relu_model, providers=["NoSuchExecutionProvider"]).activate()
    with pytest.raises(TypeError, match="list of provider names"):
        OrtRunner(relu_model, providers="CPUExecutionProvider")
    for threads in (0, -1, 1.5):
        with pytest.raises(ValueError, match="threads must be an int >= 1"):
            OrtRunner(relu_model, threads=threads)


def test_ort_runner_takes_torch_tensors_that_require_grad(relu_model):
    x = torch.tensor([[-1.0, 0.5, 2.0]], requires_grad=True)
    with OrtRunner(relu_model) as runner:
        np.testing.assert_array_equal(runner.infer({"x": x})["y"], [[0.0, 0.5, 2.0]])


def test_ort_runner_reads_its_roi_inputs_from_the_graph(relu_model):
    assert OrtRunner(relu_model).roi_inputs() == ()
    node = helper.make_node("DeformRoIPool", ["x", "boxes", "offset"], ["y"], domain="dcn_deploy")
    graph = helper.make_graph([node], "roi", [helper.make_tensor_value_info(n, TensorProto.FLOAT, None)
                                             for n in ("x", "boxes", "offset")],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19), helper.make_opsetid("dcn_deploy", 1)])
    assert OrtRunner(model).roi_inputs() == ("boxes",)
    assert OrtRunner(model.SerializeToString()).roi_inputs() == ("boxes",)


# --------------------------------------------------------------------------------------------------------------
# docs/library.md: its example runs, and every name it shows is importable
# --------------------------------------------------------------------------------------------------------------

def test_docs_library_example_runs_as_written(tmp_path, monkeypatch):
    """docs/library.md's Python blocks, in order: train a step, export, run, compare, benchmark, inspect."""
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parent.parent / "docs" / "library.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert len(blocks) == 2
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile("\n".join(blocks), "docs/library.md example", "exec"), namespace)  # noqa: S102 - our own docs
    assert namespace["result"].passed and (tmp_path / "net.onnx").is_file()
    assert [e.batch for e in namespace["timing"].entries] == [1, 1, 4, 4]


def _library_doc_claims():
    """(top-level names, dotted paths) that docs/library.md writes: ``dcn_deploy.NAME``, ``from dcn_deploy import
    ...``, the error and tolerance classes it names; and every ``dcn_deploy.a.b`` path (module, then attribute)."""
    import builtins
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "library.md").read_text()
    # dcn_deploy.NAME, not "import dcn_deploy.feeds" / "from dcn_deploy.feeds import ..." (a module path)
    names = set(re.findall(r"(?<!import )(?<!from )\bdcn_deploy\.([A-Za-z_]\w*)\b(?!\.)", text))
    for group in re.findall(r"from dcn_deploy import ([\w, ]+)", text):
        names.update(n.strip() for n in group.split(",") if n.strip())
    names.update(n for n in re.findall(r"`(\w*(?:Error|Tolerance))\b", text) if not hasattr(builtins, n))
    names.discard("NAME")  # the placeholder in "each name written `dcn_deploy.NAME`"
    paths = set(re.findall(r"\bdcn_deploy(?:\.[A-Za-z_]\w*){2,}", text))
    return names, paths


def test_every_name_the_library_doc_shows_is_importable_without_tensorrt():
    import subprocess
    import sys

    names, paths = _library_doc_claims()
    assert {"VerificationError", "RunnerError", "FeedError", "TensorRTMissingError", "Tolerance", "ShapeError",
            "export", "compare_runners", "OrtRunner"} <= names  # the parse found what the doc lists
    script = (
        "import importlib, sys\n"
        f"names, paths = {sorted(names)!r}, {sorted(paths)!r}\n"
        "import dcn_deploy\n"
        "missing = [n for n in names if n not in dcn_deploy.__all__]  # before any import adds a submodule\n"
        "for n in names:\n"
        "    exec(f'from dcn_deploy import {n}')\n"
        "unresolved = []\n"
        "for path in paths:\n"
        "    parts = path.split('.')\n"
        "    for cut in range(len(parts), 0, -1):\n"
        "        try:\n"
        "            value = importlib.import_module('.'.join(parts[:cut]))\n"
        "        except ImportError:\n"
        "            continue\n"
        "        try:\n"
        "            for part in parts[cut:]:\n"
        "                value = getattr(value, part)\n"
        "        except AttributeError:\n"
        "            unresolved.append(path)\n"
        "        break\n"
        "print(missing, unresolved, 'tensorrt' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[0] == "[] [] False", done.stdout


def test_compare_runners_names_a_tolerance_that_is_not_one():
    with pytest.raises(TypeError, match=r"compare_runners' tolerance must be a Tolerance, got \(1, 2\); write "
                                        r"Tolerance\(atol=1e-4, rtol=1e-3\)"):
        compare_runners([_BoxRunner("a", False), _BoxRunner("b", True)], tolerance=(1, 2))
    with pytest.raises(TypeError, match=r"tolerances\['float32'\] must be a Tolerance"):
        compare_runners([_BoxRunner("a", False), _BoxRunner("b", True)], tolerances={"float32": 1e-3})


# --- found by the library API audit helper -------------------------------------------------------------------------
def _audit_runners(tmp_path):
    import torch

    from dcn_deploy import ModulatedDeformConv2dPack, OrtRunner, TorchRunner, export

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1),
                                ModulatedDeformConv2dPack(4, 4, 3, padding=1)).eval()
    path = tmp_path / "m.onnx"
    export(model, (torch.randn(1, 3, 8, 8),), path, dynamic=True, verify=False)
    with OrtRunner(path) as ort:
        metas = ort.input_metadata()
    return model, path, OrtRunner, lambda: TorchRunner(model, metas, output_names=["out"])


def test_audit_argument_checks_of_compare_and_bench(tmp_path):
    import numpy as np
    import pytest

    from dcn_deploy import FeedError, Tolerance, benchmark, compare_runners

    model, path, OrtRunner, torch_runner = _audit_runners(tmp_path)
    shapes = {"input": (1, 3, 8, 8)}
    with pytest.raises(TypeError, match=r"rois must be a list of input names, e.g. rois=\['input_boxes'\]"):
        compare_runners([torch_runner(), OrtRunner(path)], shapes=shapes, rois="input_boxes")
    with pytest.raises(ValueError, match=r"tolerances has keys \['fp32'\]"):
        compare_runners([torch_runner(), OrtRunner(path)], shapes=shapes, tolerances={"fp32": Tolerance(0, 0)})
    with pytest.raises(TypeError, match="feed must be a dict"):
        compare_runners([torch_runner(), OrtRunner(path)], [np.zeros((1, 3, 8, 8), np.float32)])
    with pytest.raises(FeedError, match="tuple of ints >= 0"):
        compare_runners([torch_runner(), OrtRunner(path)], shapes={"input": (1, 3, -8, 8)})
    with pytest.raises(FeedError, match="seed"):
        compare_runners([torch_runner(), OrtRunner(path)], shapes=shapes, seed="1")
    with pytest.raises(TypeError, match=r"got one OrtRunner; pass \[runner\]"):
        benchmark(OrtRunner(path), shapes=shapes, iterations=1, progress=False)
    with pytest.raises(TypeError, match="warmup must be an int"):
        benchmark([OrtRunner(path)], shapes=shapes, iterations=1, warmup=None, progress=False)


def test_audit_nested_with_keeps_the_runner_active_and_repr_names_it(tmp_path):
    model, path, OrtRunner, torch_runner = _audit_runners(tmp_path)
    runner = OrtRunner(path)
    with runner:
        with runner:
            pass
        assert runner.is_active
    assert not runner.is_active
    assert repr(runner) == f"OrtRunner(name='ort', model={path!r}, inactive)"


def test_audit_failed_comparison_is_strict_json(tmp_path):
    import json

    import numpy as np

    from dcn_deploy.compare import ComparisonResult, compare_outputs

    failed = compare_outputs("ort", "y", np.array([np.nan, 1.0], np.float32), np.ones(2, np.float32))
    text = ComparisonResult("torch", ["torch", "ort"], {"x": ((2,), "float32")}, [failed], 0).to_json()
    json.loads(text, parse_constant=lambda name: (_ for _ in ()).throw(AssertionError(name)))
