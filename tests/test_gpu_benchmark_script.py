"""benchmarks/gpu_deform_conv.py's command line and table, on the CPU (its timing needs a GPU: see gpu_checks.sh)."""
from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

import pytest
import torch
from benchmark_scripts import load_benchmark_script

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_deform_conv.py"


@pytest.fixture(scope="module")
def bench():
    return load_benchmark_script("gpu_deform_conv")


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


def test_the_table_says_whether_the_layers_had_a_bias(bench, monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "Test GPU")
    row = {"layer": "det res3", "shape": "8x128x100x167", "dtype": "float16", "ours_gemm_ms": 0.3, "conv_ms": 0.2}
    args = argparse.Namespace(algos="gemm", iters=20, warmup=3, eager=False)
    assert "v2 (mask), with a bias," in bench.to_markdown([row], args)  # rows saved before the field: a bias
    assert "v2 (mask), no bias," in bench.to_markdown([dict(row, bias=False)], args)


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
    # the same path on channels-last tensors, from its own key, named in the header
    rows[0]["gemm_nhwc_kernels"] = rows[0].pop("gemm_kernels")[:1]
    assert "`columnsKernel<__half, 8>`" not in bench.breakdown_markdown(rows)
    nhwc = bench.breakdown_markdown(rows, key="gemm_nhwc_kernels", path="gemm, channels-last")
    assert "kernels of `gemm, channels-last`" in nhwc and "`columnsKernel<__half, 8>` 0.300 (100%)" in nhwc


def test_layer_sets(bench, capsys):
    assert [layer.groups for layer in bench.LAYER_SETS["grouped"]] == [32, 256, 64, 32, 32]
    assert bench.LAYER_SETS["all"] == bench.LAYERS + bench.GROUPED_LAYERS
    with pytest.raises(SystemExit):
        bench.main(["--layers", "resnext"])
    assert "invalid choice: 'resnext'" in capsys.readouterr().err


def _row_like_run(bench, monkeypatch, algos, failing=(), eager=(), breakdown=False):
    """A row built the way run() builds one, by measure() on CPU tensors (time_cuda_detail stubbed: no GPU here):
    each algo in `failing` raises (torchvision too when named there), each in `eager` could not be captured in a
    CUDA graph."""
    times = iter(range(1, 100))
    monkeypatch.setattr(bench, "time_cuda_detail",
                        lambda fn, warmup, iters, graph: (fn(), 0.1 * next(times))[1:] + (True,))
    gen = torch.Generator().manual_seed(len(algos))
    reference = torch.randn(2, 3, 4, 5, generator=gen, dtype=torch.float64)
    row = {"layer": "det res4 (stride 16)", "shape": "8x256x50x84", "dtype": "float16", "device": "Test GPU",
           "torch": "2.11.0+cu130", "cuda": "13.0", "commit": "abc1234", "python": "3.12.3", "reference": "torchvision"}

    def implementation(name):
        def call():
            if name in failing:
                raise RuntimeError(f"{name}: CUDA out of memory.\nmore lines")
            return reference.half() + 1e-3 * torch.randn(reference.shape, generator=gen, dtype=torch.float64).half()
        return call

    for algo in algos:
        if algo in eager:
            monkeypatch.setattr(bench, "time_cuda_detail", lambda fn, warmup, iters, graph: (fn(), 0.5)[1:] + (False,))
        bench.measure(row, f"ours_{algo}", implementation(algo), reference, 5, 30, True)
        monkeypatch.setattr(bench, "time_cuda_detail",
                            lambda fn, warmup, iters, graph: (fn(), 0.1 * next(times))[1:] + (True,))
    bench.measure(row, "torchvision", implementation("torchvision"), reference, 5, 30, True)
    bench.measure(row, "conv", lambda: reference, None, 5, 30, True)
    if breakdown:
        row["gemm_kernels"] = [["void dcn::columnsKernel<__half, 8, unsigned int>(dcn::Geometry)", 0.2],
                               ["sm90_xmma_gemm_f16f16_f32f32", 0.1]]
    return row


def test_measure_records_a_failure_and_an_eager_fallback_in_the_row(bench, monkeypatch, capsys):
    row = _row_like_run(bench, monkeypatch, ["gemm", "torch"], failing={"gemm", "torchvision"}, eager={"torch"})
    assert row["ours_gemm_ms"] is None and row["ours_gemm_err"] is None
    assert row["ours_gemm_failed"] == "RuntimeError: gemm: CUDA out of memory."
    assert row["ours_torch_timing"] == "eager" and row["ours_torch_ms"] == 0.5
    assert 0 < row["ours_torch_err"] < 1e-2  # half-precision rounding against the float64 reference
    assert row["torchvision_ms"] is None and "torchvision_failed" in row
    assert row["conv_ms"] > 0 and "conv_err" not in row
    assert "gemm failed on det res4 (stride 16) 8x256x50x84 float16" in capsys.readouterr().err
    json.dumps(row)  # what --json writes after every row


@pytest.mark.parametrize("algos", [",".join(c) for n in (1, 2, 5) for c in itertools.combinations(
    ("auto", "gemm", "fused", "direct", "torch"), n)])
def test_tables_render_rows_of_every_algo_combination(bench, monkeypatch, algos):
    names = algos.split(",")
    ok = _row_like_run(bench, monkeypatch, names, breakdown=True)
    all_failed = _row_like_run(bench, monkeypatch, names, failing=set(names) | {"torchvision"})
    some_eager = _row_like_run(bench, monkeypatch, names, eager={names[-1]})
    args = argparse.Namespace(algos=algos, iters=30, warmup=5, eager=False)
    table = bench.render([ok, all_failed, some_eager], args)
    lines = [line for line in table.splitlines() if line.startswith("| det res4")]
    assert len(lines) == 3 + 1  # three timing rows, one breakdown row
    columns = len(table.splitlines()[table.splitlines().index(lines[0]) - 2].split(" | "))
    assert all(len(line.split(" | ")) == columns for line in lines[:3])
    assert "fail" in lines[1] and lines[1].count("n/a") >= 2  # no best time: no ratios
    assert "*" in lines[2].split(" | ")[2 + len(names)]
    assert "Failures:" in table and "torchvision: RuntimeError: torchvision: CUDA out of memory." in table
    assert "`columnsKernel<__half, 8, unsigned int>` 0.200 (67%)" in table


def test_from_json_renders_saved_rows_without_a_gpu(bench, monkeypatch, tmp_path, capsys):
    rows = [_row_like_run(bench, monkeypatch, ["gemm", "torch"], breakdown=True),
            _row_like_run(bench, monkeypatch, ["gemm", "torch"], failing={"torch"})]
    saved = tmp_path / "bench.json"
    saved.write_text(json.dumps(rows, indent=1))
    monkeypatch.setenv("DCN_DEPLOY_GEMM_OUTPUT", "staged")
    out = tmp_path / "bench.md"
    assert bench.main(["--from-json", str(saved), "--algos", "gemm,torch", "--iters", "30", "--warmup", "5",
                       "--output", str(out)]) == 0
    table = out.read_text()
    assert table.startswith("# Benchmark results") and "Test GPU" in table
    # the run's own versions and commit, not this machine's
    assert "commit `abc1234`, torch 2.11.0+cu130, CUDA 13.0, Python 3.12.3;" in table
    assert "DCN_DEPLOY_GEMM_OUTPUT=staged python benchmarks/gpu_deform_conv.py" in table
    assert "| ours gemm ms | ours torch ms | torchvision ms |" in table
    assert "Where the `gemm` path's time goes" in table
    assert "## Deformable convolution, Test GPU" in capsys.readouterr().out


def test_the_command_line_shown_names_the_kernel_knobs_set(bench, monkeypatch):
    for name in ("DCN_DEPLOY_GEMM_CHUNK_MB", "DCN_DEPLOY_GEMM_CHUNKS", "DCN_DEPLOY_GEMM_OUTPUT",
                 "DCN_DEPLOY_GEMM_PRODUCT", "DCN_DEPLOY_GEMM_SPLIT_K",
                 "DCN_DEPLOY_GEMM_SAMPLER", "DCN_DEPLOY_GEMM_TILE_ITEMS", "DCN_DEPLOY_IMPLICIT_TILE_M",
                 "DCN_DEPLOY_IMPLICIT_THREADS", "DCN_DEPLOY_IMPLICIT_KERNEL", "DCN_DEPLOY_CUBLAS_WORKSPACE_MB",
                 "DCN_DEPLOY_DIRECT_LAYOUT", "DCN_DEPLOY_DIRECT_TAPS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DCN_DEPLOY_GEMM_CHUNKS", "even")
    monkeypatch.setenv("DCN_DEPLOY_IMPLICIT_TILE_M", "128")
    monkeypatch.setenv("DCN_DEPLOY_GEMM_SPLIT_K", "4")
    monkeypatch.setenv("DCN_DEPLOY_GEMM_OUTPUT", "")  # set but empty: the default, not shown
    monkeypatch.setenv("DCN_DEPLOY_CUBLAS_WORKSPACE_MB", "32")
    monkeypatch.setenv("DCN_DEPLOY_DIRECT_LAYOUT", "nchw")
    assert bench.kernel_settings() == ("DCN_DEPLOY_CUBLAS_WORKSPACE_MB=32 DCN_DEPLOY_DIRECT_LAYOUT=nchw "
                                       "DCN_DEPLOY_GEMM_CHUNKS=even DCN_DEPLOY_GEMM_SPLIT_K=4 "
                                       "DCN_DEPLOY_IMPLICIT_TILE_M=128")


@pytest.fixture(scope="module")
def layouts():
    return load_benchmark_script("gemm_layouts")


def test_gemm_layouts_sizes_and_table(layouts):
    res4 = next(layer for layer in layouts.LAYERS if layer.name.startswith("det res4"))
    sizes = layouts.product_sizes(res4, 8)
    assert sizes == {"out_channels": 256, "pixels": 8 * 50 * 84, "k": 2304}
    times = {"staged_ms": 1.0, "staged_bmm_ms": 1.1, "direct_ms": 0.99, "nn_option_ms": 0.9, "torchvision_ms": 0.8}
    row = {"layer": res4.name, "dtype": "float32", "blas": "cublaslt", **sizes, **times}
    line = layouts.to_markdown([row]).splitlines()[2]
    # 2 * 256 * 33600 * 2304 = 39.6 GFLOP: 39.6 TFLOP/s in 1 ms, 49.5 in 0.8; the best of ours is the NN option's
    assert line.split(" | ")[3:] == ["cublaslt", "1.000 (39.6)", "1.100 (36.0)", "0.990 (40.0)", "0.900 (44.0)",
                                     "0.800 (49.5)", "1.12 |"]


def test_gemm_layouts_refuses_an_unknown_blas(layouts, capsys):
    with pytest.raises(SystemExit):
        layouts.main(["--blas", "cublas,mkl"])
    assert "--blas takes default, cublas or cublaslt, got mkl" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message printed without a GPU")
def test_gemm_layouts_without_a_gpu_is_a_clear_error(layouts, capsys):
    assert layouts.main(["--dtypes", "float32"]) == 2
    assert "no CUDA device" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message printed without a GPU")
def test_gpu_roi_pool_without_a_gpu_is_a_clear_error():
    import subprocess

    done = subprocess.run([sys.executable, str(SCRIPT.parent / "gpu_roi_pool.py"), "--dtypes", "float16"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "needs a CUDA GPU" in done.stderr and "benchmarks/cpu_roi_pool.py" in done.stderr


def test_gpu_roi_pool_rows_on_the_cpu(monkeypatch):
    """benchmarks/gpu_roi_pool.py's measuring code, run on the CPU with CUDA's calls stood in (tensors stay put,
    events read a clock), on a small case: it must reach the table row with both timings and the comparison."""
    import time

    module = load_benchmark_script("gpu_roi_pool")

    class Event:
        def __init__(self, enable_timing=False):
            self.at = None

        def record(self):
            self.at = time.perf_counter()

        def synchronize(self):
            pass

        def elapsed_time(self, other):
            return (other.at - self.at) * 1e3

    monkeypatch.setattr(torch.Tensor, "cuda", lambda self: self)
    monkeypatch.setattr(torch.cuda, "Event", Event)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *args: None)
    case = module.RoiCase("tiny", module.CASES["mmdet_roi"].op, 5, 4, samples=2)
    row = module.run_case(case, torch.float32, iterations=2, warmup=1)
    assert row["dtype"] == "float32" and row["op_ms"] > 0 and row["composite_ms"] > 0
    assert row["max_abs_diff"] < 1e-5


def _run_gpu_checks(tmp_path, **env_vars):
    """benchmarks/gpu_checks.sh on this machine, with a stand-in build (so that it builds nothing): its summary."""
    import os
    import subprocess

    build = tmp_path / "build"
    (build / "lib").mkdir(parents=True)
    (build / "lib" / "libdcn_deploy_kernels.so").write_bytes(b"")  # present: the script skips its build step
    out = tmp_path / "out"
    env = dict(os.environ, DCN_GPU_BUILD=str(build), PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}",
               **env_vars)
    done = subprocess.run(["bash", str(SCRIPT.parent / "gpu_checks.sh"), str(out)], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    summary = done.stdout.split("--- summary\n")[1].splitlines()
    assert sorted(p.name for p in out.iterdir()) == ["checks.log"]  # nothing else was run
    return summary


def test_gpu_checks_runs_only_the_named_steps(tmp_path):
    """DCN_GPU_ONLY: the named steps and the device step run, every other one is listed as skipped; a malformed
    variant is reported, not run (no GPU is needed for this: the step's command is plain Python)."""
    summary = _run_gpu_checks(tmp_path, DCN_GPU_ONLY="plugin-info", DCN_GPU_VARIANTS="bad")
    assert any(line.startswith("device rc=") for line in summary)
    assert any(line.startswith("plugin-info rc=0 ") for line in summary), summary
    for step in ("pytest-gpu", "bench", "racecheck-specialised", "memcheck", "bench-roi", "bench-grouped"):
        assert f"{step} skipped: not in DCN_GPU_ONLY" in summary
    assert "variant 'bad' skipped: not NAME:VAR=VALUE" in summary
    assert any(line.startswith("racecheck-ring-sync skipped: ") for line in summary)  # not named, or not carried
    assert any(line.startswith("racecheck-sync-copies skipped: ") for line in summary)
    assert summary[-1].startswith("total ")


@pytest.mark.skipif(torch.cuda.is_available(), reason="the benchmark exits at once without a GPU")
def test_gpu_checks_times_each_alternative_build_beside_this_one(tmp_path):
    """DCN_GPU_ALT_BUILDS: each carried build's benchmark under its own library, then this build's, in neighbouring
    processes; a name without a carried library is reported, not run."""
    alt = tmp_path / "old"
    (alt / "lib").mkdir(parents=True)
    (alt / "lib" / "libdcn_deploy_kernels.so").write_bytes(b"")
    summary = _run_gpu_checks(tmp_path, DCN_GPU_ONLY="alt-old alt-old-base",
                              DCN_GPU_ALT_BUILDS=f"old:{alt} missing:{tmp_path / 'nowhere'}",
                              DCN_GPU_ALT_ARGS="--layers grouped --algos direct")
    assert [line.split(" rc=")[0] for line in summary if line.startswith("alt-")] == ["alt-old", "alt-old-base"]
    assert any(line.startswith(f"alt 'missing:{tmp_path / 'nowhere'}' skipped") for line in summary), summary
    log = (tmp_path / "out" / "checks.log").read_text()
    assert (f"=== alt-old (limit 60s): env DCN_DEPLOY_PLUGIN_DIR={alt}/lib python3 benchmarks/gpu_deform_conv.py "
            "--layers grouped --algos direct") in log
    assert "=== alt-old-base (limit 60s): python3 benchmarks/gpu_deform_conv.py --layers grouped --algos direct" in log


@pytest.mark.skipif(torch.cuda.is_available(), reason="the variant's benchmark exits at once without a GPU")
def test_gpu_checks_passes_dcn_gpu_variant_args_to_every_variant(tmp_path):
    summary = _run_gpu_checks(tmp_path, DCN_GPU_ONLY="variant-c20", DCN_GPU_VARIANTS="c20:DCN_DEPLOY_GEMM_CHUNK_MB=20",
                              DCN_GPU_VARIANT_ARGS="--batches 8 --breakdown")
    assert any(line.startswith("variant-c20 rc=2 ") for line in summary), summary  # no CUDA device here
    log = (tmp_path / "out" / "checks.log").read_text()
    assert ("=== variant-c20 (limit 60s): env DCN_DEPLOY_GEMM_CHUNK_MB=20 python3 benchmarks/gpu_deform_conv.py "
            "--algos gemm --dtypes float16 --iters 20 --warmup 3 --batches 8 --breakdown") in log
    assert "no CUDA device" in log


def test_gpu_checks_skips_the_steps_named_in_dcn_gpu_skip(tmp_path):
    summary = _run_gpu_checks(tmp_path, DCN_GPU_ONLY="plugin-info", DCN_GPU_SKIP="plugin-info")
    assert "plugin-info skipped: DCN_GPU_SKIP" in summary


def test_float32_rows_show_cudnn_without_tf32_beside_its_default(bench, monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "Test GPU")
    half = {"layer": "det res4", "shape": "8x256x50x84", "dtype": "float16", "ours_gemm_ms": 0.18, "conv_ms": 0.12,
            "torchvision_ms": 0.18, "cudnn_tf32": True, "matmul_tf32": False}
    single = dict(half, dtype="float32", ours_gemm_ms=1.0, conv_ms=0.25, conv_no_tf32_ms=0.8, torchvision_ms=1.1)
    args = argparse.Namespace(algos="gemm", iters=20, warmup=3, eager=False)
    table = bench.to_markdown([half, single], args)
    assert "| best / conv2d | cuDNN conv2d without TF32 ms | best / that |" in table
    assert "In float32, `cuDNN conv2d` ran with TF32 allowed" in table
    lines = [line.split(" | ") for line in table.splitlines() if line.startswith("| det res4")]
    assert lines[0][8:10] == ["n/a", "n/a"]  # float16: no such column measured
    assert lines[1][6:10] == ["1.10x", "4.00x", "0.800", "1.25x"]
    assert len(lines[0]) == len(lines[1]) == len(table.splitlines()[table.splitlines().index(
        next(line for line in table.splitlines() if line.startswith("| layer")))].split(" | "))
    # float16 only: neither the columns nor the note
    only_half = bench.to_markdown([half], args)
    assert "without TF32" not in only_half and "In float32" not in only_half


def test_rows_with_cudnn_on_channels_last_tensors_show_it_beside_the_nchw_convolution(bench, monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "Test GPU")
    row = {"layer": "det res3", "shape": "8x128x100x167", "dtype": "float16", "ours_gemm_ms": 0.30, "conv_ms": 0.18,
           "conv_nhwc_ms": 0.15, "torchvision_ms": 0.31}
    args = argparse.Namespace(algos="gemm", iters=20, warmup=3, eager=False)
    table = bench.to_markdown([row], args)
    assert "| best / conv2d | cuDNN conv2d channels-last ms | best / that |" in table
    cells = next(line for line in table.splitlines() if line.startswith("| det res3")).split(" | ")
    assert cells[6:10] == ["1.03x", "1.67x", "0.150", "2.00x"]
    # rows without the measurement: no such columns
    plain = {k: v for k, v in row.items() if k != "conv_nhwc_ms"}
    assert "channels-last" not in bench.to_markdown([plain], args)


def test_rows_with_ours_on_channels_last_tensors_show_it_beside_cudnn_channels_last(bench, monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "Test GPU")
    row = {"layer": "det res3", "shape": "8x128x100x167", "dtype": "float16", "ours_gemm_ms": 0.30, "conv_ms": 0.18,
           "conv_nhwc_ms": 0.15, "torchvision_ms": 0.31, "ours_nhwc_ms": 0.20, "ours_nhwc_err": 2e-4,
           "ours_gemm_err": 2e-4, "torchvision_err": 3e-4}
    args = argparse.Namespace(algos="gemm", iters=20, warmup=3, eager=False)
    table = bench.to_markdown([row], args)
    header = next(line for line in table.splitlines() if line.startswith("| layer"))
    assert ("| cuDNN conv2d channels-last ms | best / that | ours channels-last ms | its speed-up vs torchvision | "
            "it / cuDNN channels-last | err channels-last |") in header
    cells = next(line for line in table.splitlines() if line.startswith("| det res3")).split(" | ")
    assert cells[8:14] == ["0.150", "2.00x", "0.200", "1.55x", "1.33x", "2.0e-04"]
    assert len(cells) == len(header.split(" | "))
    # a wrong channels-last result is shown with its mark and left out of the ratios
    wrong = dict(row, ours_nhwc_err=0.5)
    cells = next(line for line in bench.to_markdown([wrong], args).splitlines()
                 if line.startswith("| det res3")).split(" | ")
    assert cells[10:13] == ["0.200!", "n/a", "n/a"]


def test_without_tf32_turns_cudnn_tf32_off_for_the_call_only(bench):
    seen = []
    before = torch.backends.cudnn.allow_tf32
    assert bench.without_tf32(lambda: seen.append(torch.backends.cudnn.allow_tf32) or "out")() == "out"

    def failing():
        raise RuntimeError("boom")
    with pytest.raises(RuntimeError):
        bench.without_tf32(failing)()
    assert seen == [False] and torch.backends.cudnn.allow_tf32 == before
    assert bench.tf32_settings() == {"cudnn_tf32": before, "matmul_tf32": torch.backends.cuda.matmul.allow_tf32}


def test_timed_runs_go_back_to_back_with_no_host_sync_between_their_events(bench, monkeypatch):
    """A host sync after each timed run leaves the GPU idle when the next start event is recorded: that event then
    fires at once and the time includes the host's launch of the call (a graph launch: microseconds, a large share
    of a 40 us layer). The events of every run are recorded back to back, and the host waits once, at the end."""
    log = []

    class Event:
        def __init__(self, enable_timing=False):
            self.at = None

        def record(self):
            self.at = len(log)
            log.append("record")

        def synchronize(self):
            log.append("sync")

        def elapsed_time(self, other):
            return float(other.at - self.at)

    monkeypatch.setattr(torch.cuda, "Event", Event)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *args: log.append("sync"))
    ms, graphed = bench.time_cuda_detail(lambda: log.append("run"), warmup=2, iters=4, graph=False)
    timed = log[log.index("record"):]
    assert timed.count("record") == 8 and timed.count("run") == 4
    assert "sync" not in timed[:len(timed) - timed[::-1].index("record")]  # none between the first and last event
    assert timed[-1] == "sync" and ms == 2.0 and graphed is False  # each run: start, run, stop


def test_saved_rows_render_with_their_own_run_settings_not_the_renderers(bench, monkeypatch):
    """--from-json (gpu_checks.sh re-renders a run cut short) must not print today's date, this command line or the
    --iters/--warmup/--eager it was given (defaults 50/10/graphs) for rows timed otherwise: the rows say theirs."""
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "Test GPU")
    row = {"layer": "det res4", "shape": "1x256x50x84", "dtype": "float16", "ours_gemm_ms": 0.04, "conv_ms": 0.03,
           "torchvision_ms": 0.05, "iters": 30, "warmup": 5, "timing": "eager", "date_utc": "2026-11-20 10:00",
           "command": "DCN_DEPLOY_GEMM_CHUNKS=even python benchmarks/gpu_deform_conv.py --iters 30 --eager"}
    args = argparse.Namespace(algos="gemm", iters=50, warmup=10, eager=False)
    table = bench.to_markdown([row], args)
    assert "## Deformable convolution, Test GPU (2026-11-20)" in table
    assert "median of 30 CUDA-event-timed eager calls" in table and "after 5 warm-up runs" in table
    assert "command: `DCN_DEPLOY_GEMM_CHUNKS=even python benchmarks/gpu_deform_conv.py --iters 30 --eager`" in table
    assert "L2" in table  # whether the cache was flushed between runs (it is not) is said
    assert "back to back" in table
    # rows saved before they held their settings: the renderer's arguments, and how such runs were timed
    old = {k: v for k, v in row.items() if k not in ("iters", "warmup", "timing", "date_utc", "command")}
    assert "median of 50 CUDA-event-timed CUDA-graph replays" in bench.to_markdown([old], args)
    assert "one at a time (a host wait after each run)" in bench.to_markdown([old], args)
    # the run's rows record what the table needs: run() puts them in every row
    context = bench.run_settings(iters=30, warmup=5, graph=False)
    assert {k: context[k] for k in ("iters", "warmup", "timing")} == {"iters": 30, "warmup": 5, "timing": "eager"}
    assert context["date_utc"].startswith("20") and "gpu_deform_conv.py" in context["command"]


def test_an_implementation_with_a_wrong_output_is_not_the_best(bench, monkeypatch):
    """The speed-up and /conv2d columns take the fastest of ours: one whose error against the float64 reference is
    gross (a wrong result, or NaN) must not be that fastest, and its cell says why."""
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "Test GPU")
    row = {"layer": "det res4", "shape": "8x256x50x84", "dtype": "float16", "torchvision_ms": 0.4, "conv_ms": 0.1,
           "ours_gemm_ms": 0.2, "ours_gemm_err": 2e-4, "ours_fused_ms": 0.05, "ours_fused_err": 0.9,
           "ours_direct_ms": 0.01, "ours_direct_err": float("nan")}
    args = argparse.Namespace(algos="gemm,fused,direct", iters=30, warmup=5, eager=False)
    table = bench.to_markdown([row], args)
    cells = next(line for line in table.splitlines() if line.startswith("| det res4")).split(" | ")
    assert cells[3:10] == ["0.200", "0.050!", "0.010!", "0.400", "0.100", "2.00x", "2.00x"]
    assert "`!`" in table


@pytest.mark.parametrize("words, message", [
    (["--iters", "0"], "--iters must be >= 1 and --warmup >= 0, got 0 and 10"),
    (["--warmup", "-1"], "--iters must be >= 1 and --warmup >= 0, got 50 and -1"),
    (["--batches", "1,x"], "--batches takes comma-separated integers >= 1, e.g. 1,8; got '1,x'"),
    (["--batches", "0"], "--batches takes comma-separated integers >= 1"),
    (["--dtypes", "float16,half"], "--dtypes: unknown ['half']; choose from float16, bfloat16, float32")])
def test_gpu_scripts_refuse_bad_counts_before_timing(bench, layouts, words, message, capsys, monkeypatch):
    """Checked before the GPU is asked for: on a GPU, --iters 0 failed every cell (no median of no times), and an
    unknown dtype or batch stopped the run with a traceback when its turn came, after the other rows' minutes."""
    with pytest.raises(SystemExit) as exc:
        bench.main(words)
    assert exc.value.code == 2 and message in capsys.readouterr().err
    if words[0] in ("--iters", "--warmup"):
        with pytest.raises(SystemExit):
            layouts.main(words)
        assert "--iters must be >= 1 and --warmup >= 0" in capsys.readouterr().err
        roi = load_benchmark_script("gpu_roi_pool")
        monkeypatch.setattr(sys, "argv", ["gpu_roi_pool.py", words[0].replace("--iters", "--iterations"), words[1]])
        with pytest.raises(SystemExit):
            roi.main()
        assert "--iterations must be >= 1 and --warmup >= 0" in capsys.readouterr().err


def test_rows_of_two_runs_timed_back_to_back_are_not_said_to_be_timed_one_at_a_time(bench, monkeypatch):
    """Rows of two runs that differ in a setting (one run's CUDA graphs, another's eager calls) were both timed back
    to back: only rows saved before the rows held their settings were timed one at a time."""
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "Test GPU")
    row = {"layer": "det res4", "shape": "1x256x50x84", "dtype": "float16", "ours_gemm_ms": 0.04, "conv_ms": 0.03,
           "torchvision_ms": 0.05, "iters": 30, "warmup": 5, "date_utc": "2026-11-20 10:00", "command": "x"}
    args = argparse.Namespace(algos="gemm", iters=50, warmup=10, eager=False)
    table = bench.to_markdown([{**row, "timing": "graph"}, {**row, "timing": "eager"}], args)
    assert "back to back" in table and "one at a time" not in table
