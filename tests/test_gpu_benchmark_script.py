"""benchmarks/gpu_deform_conv.py's command line and table, on the CPU (its timing needs a GPU: see gpu_checks.sh)."""
from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_deform_conv.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("gpu_deform_conv", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_unknown_algo_is_refused_naming_the_choices(bench, capsys):
    with pytest.raises(SystemExit) as exc:
        bench.main(["--algos", "gemm,fast"])
    assert exc.value.code == 2
    assert "unknown implementation(s) ['fast']" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message printed without a GPU")
def test_every_kernel_name_parses_and_no_gpu_is_a_clear_error(bench, capsys):
    assert bench.main(["--algos", "auto,gemm,fused,direct,torch"]) == 2
    assert "no CUDA device" in capsys.readouterr().err


def test_table_has_one_column_per_kernel_and_the_ratios(bench, monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "Test GPU")
    row = {"layer": "det res4", "shape": "1x256x50x84", "dtype": "float16", "ours_gemm_ms": 0.2, "ours_gemm_err": 2e-4,
           "ours_fused_ms": 0.5, "ours_fused_err": 3e-4, "torchvision_ms": 0.4, "torchvision_err": 7e-3,
           "conv_ms": 0.1}
    missing = dict(row, torchvision_ms=None, torchvision_err=None)
    args = argparse.Namespace(algos="gemm,fused", iters=30, warmup=5, eager=False)
    table = bench.to_markdown([row, missing], args)
    assert "Test GPU" in table and "CUDA-graph replays" in table
    lines = [line for line in table.splitlines() if line.startswith("| det res4")]
    assert lines[0].split(" | ")[3:9] == ["0.200", "0.500", "0.400", "0.100", "2.00x", "2.00x"]
    assert "n/a" in lines[1]


def test_kernel_breakdown_table(bench):
    rows = [{"layer": "det res4", "shape": "8x256x50x84", "dtype": "float16", "gemm_kernels": [
        ("void dcn::(anonymous namespace)::columnsKernel<__half, 8>(dcn::DeformConvGeometry, __half const*)", 0.3),
        ("sm90_xmma_gemm_f16f16_f16f32_f32_tn_n_tilesize128x128x64_warpgroupsize1x1x1_execute_segment_k_off", 0.1),
        ("void dcn::(anonymous namespace)::fillBiasKernel<__half>(__half*, __half const*, int)", 0.1)]},
        {"layer": "no breakdown", "shape": "1x1x1x1", "dtype": "float32"}]
    table = bench.breakdown_markdown(rows)
    assert "`columnsKernel<__half, 8>` 0.300 (60%)" in table
    assert "`fillBiasKernel<__half>` 0.100 (20%)" in table
    assert "`sm90_xmma_gemm_f16f16_f16f32_f32_tn_n_tilesize128x128x64_...` 0.100 (20%)" in table
    assert "no breakdown" not in table


def test_layer_sets(bench, capsys):
    assert [layer.groups for layer in bench.LAYER_SETS["grouped"]] == [32, 256]
    assert bench.LAYER_SETS["all"] == bench.LAYERS + bench.GROUPED_LAYERS
    with pytest.raises(SystemExit):
        bench.main(["--layers", "resnext"])
    assert "invalid choice: 'resnext'" in capsys.readouterr().err
