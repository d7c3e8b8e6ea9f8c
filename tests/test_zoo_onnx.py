"""Zoo round trips: PyTorch -> ONNX (dcn_deploy.onnx.export) -> ONNX Runtime (OrtRunner) within tolerance.

Small sizes keep these at a few seconds of export each; the segmentation and detection ones are marked slow.
"""
from __future__ import annotations


import numpy as np
import pytest
import torch

from dcn_deploy.models import zoo

pytest.importorskip("onnxruntime")
from dcn_deploy.onnx import export as export_module  # noqa: E402
from dcn_deploy.backends.ort_runner import OrtRunner  # noqa: E402

RTOL = ATOL = 1e-4


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def round_trip(name, tmp_path, **build_kwargs):
    entry = zoo.get(name)
    model = entry.build(**build_kwargs)
    inputs = entry.example_inputs(batch=1)
    path = tmp_path / f"{name}.onnx"
    # Random values make meaningless RoIs (batch indices out of range): detectors verify on the zoo's own inputs.
    verify_inputs = [entry.example_inputs(batch=1, seed=s) for s in (0, 5)] if entry.needs_roi_pool else None
    report = export_module.export(model, inputs, path, require_deformable=entry.deformable,
                                  verify_inputs=verify_inputs)
    assert report.verified, str(report)
    # An independent check through the runner users call, on the example and on fresh inputs (another seed).
    with OrtRunner(path, threads=1) as runner:
        names = [meta.name for meta in runner.input_metadata()]
        for seed in (0, 11):
            feed = entry.example_inputs(batch=1, seed=seed)
            with torch.no_grad():
                expected = model(*feed)
            expected = expected if isinstance(expected, tuple) else (expected,)
            outputs = runner.infer({n: t.numpy() for n, t in zip(names, feed)})
            assert len(outputs) == len(expected)
            for got, want in zip(outputs.values(), expected):
                want = want.numpy()
                assert got.shape == want.shape and np.abs(want).max() > 0
                np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL * max(1.0, float(np.abs(want).max())))
    return report


def test_resnet50_dcn_c5_round_trip(tmp_path):
    report = round_trip("resnet50_dcn_c5", tmp_path, num_classes=10)
    assert sum(report.op_counts.values()) == 3  # the three deformable 3x3 layers of c5


@pytest.mark.slow
def test_deeplab_resnet50_dcn_round_trip(tmp_path):
    report = round_trip("deeplab_resnet50_dcn", tmp_path, num_classes=5)
    assert sum(report.op_counts.values()) == 3


@pytest.mark.slow
def test_rfcn_resnet50_dcn_round_trip(tmp_path):
    report = round_trip("rfcn_resnet50_dcn", tmp_path, num_classes=5, group_size=3, sample_per_part=2,
                        hidden_channels=64)
    # 3 deformable convolutions; 4 PS RoI poolings (offsets for scores and boxes, then scores and boxes)
    assert sorted(report.op_counts.values()) == [3, 4], report.op_counts


def test_resnext50_32x4d_dcnv2_c3c5_round_trip(tmp_path):
    """Grouped deformable layers (ResNeXt's 32 groups of 8, 16 and 32 channels, one offset group; DCNv2 in c3-c5: 13
    layers) through the export and ONNX Runtime."""
    report = round_trip("resnext50_32x4d_dcnv2_c3c5", tmp_path, num_classes=10)
    assert sum(report.op_counts.values()) == 13, report.op_counts


def test_resnet50_dcnv2_c3c5_dynamic_round_trip(tmp_path):
    """mmdetection's layout (v2, modulated, deformable in c3-c5: 13 layers) exported with dynamic batch, height and
    width, then run by ONNX Runtime at sizes other than the export's: batch 2, a non-square image."""
    entry = zoo.get("resnet50_dcnv2_c3c5")
    model = entry.build(num_classes=10)
    path = tmp_path / "dcnv2.onnx"
    report = export_module.export(model, entry.example_inputs(batch=1), path, dynamic=True)
    assert report.verified and sum(report.op_counts.values()) == 13, str(report)
    with OrtRunner(path, threads=1) as runner:
        name = runner.input_metadata()[0].name
        for batch, size in ((2, (96, 80)), (1, (48, 64))):
            (image,) = entry.example_inputs(batch=batch, size=size, seed=batch)
            with torch.no_grad():
                want = model(image).numpy()
            got = next(iter(runner.infer({name: image.numpy()}).values()))
            assert got.shape == want.shape == (batch, 10)
            np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL * max(1.0, float(np.abs(want).max())))
