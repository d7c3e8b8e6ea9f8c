"""benchmarks/gpu_zoo_torch.py on the CPU: its options, its table, and one row measured end to end on CPU tensors
(its timing needs a GPU: see gpu_checks.sh's `bench-zoo`)."""
from __future__ import annotations

import json
import sys
import types

import pytest
import torch
from benchmark_scripts import load_benchmark_script


@pytest.fixture(scope="module")
def zoo_bench():
    return load_benchmark_script("gpu_zoo_torch")


def test_cases_name_a_deformable_zoo_model_and_a_size(zoo_bench, capsys):
    assert zoo_bench.parse_case("resnet50_dcn_c5@800x1333") == ("resnet50_dcn_c5", (800, 1333))
    for bad, says in (("resnet50_plain@224x224", "is not a deformable zoo model without RoI inputs"),
                      ("rfcn_resnet50_dcn@256x256", "is not a deformable zoo model without RoI inputs"),
                      ("resnet50_dcn_c5@224", "is not NAME@HxW")):
        with pytest.raises(SystemExit) as exc:
            zoo_bench.main(["--cases", bad])
        assert exc.value.code == 2
        assert says in capsys.readouterr().err
    with pytest.raises(SystemExit):
        zoo_bench.main(["--layouts", "nhwc"])
    assert "unknown ['nhwc']; choose from nchw, channels-last" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message printed without a GPU")
def test_no_gpu_is_a_clear_error(zoo_bench, capsys):
    assert zoo_bench.main(["--batches", "1"]) == 2
    assert "no CUDA device" in capsys.readouterr().err


def test_saved_rows_render_with_the_ratios_and_failures(zoo_bench, tmp_path, capsys):
    settings = {"device": "Test GPU", "date_utc": "2026-11-27 17:00", "commit": "abc1234", "torch": "2.11",
                "torchvision": "0.26", "cuda": "13.0", "iters": 20, "warmup": 3, "offset_std": 0.01,
                "command": "python benchmarks/gpu_zoo_torch.py"}
    rows = [{"model": "resnet50_dcn_c5", "input": "8x3x800x1333", "dtype": "float16", "layout": "channels-last",
             "plain_ms": 10.0, "ours_ms": 12.5, "torchvision_ms": 25.0, "ours_err": 1e-3, "torchvision_err": 2e-3,
             "offset_abs_mean": 1.234, "timing": "graph"},
            {"model": "resnet50_dcn_c5", "input": "8x3x800x1333", "dtype": "bfloat16", "layout": "nchw",
             "plain_ms": 10.0, "ours_ms": 12.0, "torchvision_ms": None,
             "torchvision_failed": "RuntimeError: not implemented for 'BFloat16'", "timing": "eager"}]
    saved = tmp_path / "zoo.json"
    saved.write_text(json.dumps({"settings": settings, "rows": rows}))
    assert zoo_bench.main(["--from-json", str(saved)]) == 0
    table = capsys.readouterr().out
    assert "Test GPU" in table and "`abc1234`" in table
    line = next(x for x in table.splitlines() if x.startswith("| resnet50_dcn_c5") and "float16" in x)
    assert line.split(" | ")[4:13] == ["10.000", "12.500", "25.000", "1.25x", "2.50x", "2.00x", "1.0e-03",
                                       "2.0e-03", "1.23 |"]
    eager = next(x for x in table.splitlines() if "bfloat16" in x)
    assert "| nchw* |" in eager and "| fail |" in eager and "| n/a |" in eager
    assert "- resnet50_dcn_c5 8x3x800x1333 bfloat16 nchw, torchvision: RuntimeError: not implemented" in table
    (tmp_path / "bad.json").write_text("[]")
    assert zoo_bench.main(["--from-json", str(tmp_path / "bad.json")]) == 2
    assert "is not a file this script wrote with --json" in capsys.readouterr().err


@pytest.mark.parametrize("layout", ["nchw", "channels-last"])
def test_one_row_measured_on_cpu_tensors(zoo_bench, monkeypatch, layout):
    """measure_case's whole flow on the CPU: the three networks run, the offsets are not the zoo's zeros, and the
    torchvision run reaches torchvision's op (here a stand-in module that records its calls and computes with our
    op, since torchvision is not installed for CI) with the layer's arguments."""
    from dcn_deploy.ops.deform_conv import deform_conv2d

    calls = []

    def torchvision_deform_conv2d(input, offset, weight, bias=None, stride=(1, 1), padding=(0, 0), dilation=(1, 1),
                                  mask=None):
        calls.append((tuple(input.shape), stride, padding, dilation, mask is not None, offset.abs().max().item()))
        return deform_conv2d(input, offset, weight, bias, stride=stride, padding=padding, dilation=dilation,
                             mask=mask)

    fake = types.ModuleType("torchvision")
    fake.ops = types.SimpleNamespace(deform_conv2d=torchvision_deform_conv2d)
    monkeypatch.setitem(sys.modules, "torchvision", fake)
    timed = []

    def timer(fn, warmup, iters):
        fn()
        timed.append(iters)
        return 1.5, layout == "nchw"

    row = zoo_bench.measure_case("resnet50_dcnv2_c5", (64, 64), 2, "float32", layout, 4, 1, 0.05, device="cpu",
                                 timer=timer)
    assert row["offset_layers"] == 3 and row["input"] == "2x3x64x64" and row["layout"] == layout
    assert [row[f"{key}_ms"] for key in ("plain", "ours", "torchvision")] == [1.5, 1.5, 1.5] and timed == [4, 4, 4]
    assert row["timing"] == ("graph" if layout == "nchw" else "eager")
    assert row["ours_err"] < 1e-6 and row["torchvision_err"] < 1e-6  # float32, the same op: the reference's sums
    # three deformable layers (c5's 3x3s, v2: with a mask), each run once for the error and once by the timer
    # (the first block of c5 has stride 2, on its 3x3 layer as in torchvision's ResNet)
    assert [c[1] for c in calls] == [(2, 2), (1, 1), (1, 1)] * 2
    assert all(c[2] == (1, 1) and c[3] == (1, 1) and c[4] for c in calls)
    assert min(c[5] for c in calls) > 0.01 and row["offset_abs_mean"] > 0.01  # redrawn: not the zoo's zero offsets
    assert not any("_failed" in key for key in row)


def test_settings_name_this_script_in_the_command(zoo_bench, monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "Test GPU")
    monkeypatch.setitem(sys.modules, "torchvision", types.SimpleNamespace(__version__="0.0-test"))
    monkeypatch.setattr(sys, "argv", ["gpu_zoo_torch.py", "--batches", "1"])
    settings = zoo_bench.run_settings(20, 3, 0.01)
    assert settings["command"].endswith("python benchmarks/gpu_zoo_torch.py --batches 1")
    assert settings["device"] == "Test GPU" and settings["torchvision"] == "0.0-test"
