#!/usr/bin/env bash
# Issue 4's GPU checks in one run, for a machine with an NVIDIA GPU, nvcc, cmake, torch and torchvision:
#   1. build the libraries for this GPU (skipped when $DCN_GPU_BUILD already holds them),
#   2. the kernels against the reference (pytest -m gpu), and the plugin shells with a real enqueue,
#   3. compute-sanitizer memcheck and racecheck over small cases,
#   4. the benchmark against torchvision and cuDNN.
# Every step runs even when an earlier one fails; the summary at the end lists each step's exit code.
#
#   bash benchmarks/gpu_checks.sh [output folder]     (default: artifacts/gpu; logs, bench.json, bench.md)
set -u
cd "$(dirname "$0")/.."
OUT_DIR=${1:-${OUT:-artifacts/gpu}}
mkdir -p "$OUT_DIR"
LOG="$OUT_DIR/checks.log"
: >"$LOG"
export PYTHONUNBUFFERED=1
BUILD=${DCN_GPU_BUILD:-build/gpu}
SUMMARY=()
DEADLINE=$(( $(date +%s) + ${DCN_GPU_CHECKS_SECONDS:-540} ))  # the whole run stays inside a device lease

step() { # step NAME TIMEOUT_S COMMAND...
    local name=$1 limit=$2 start rc
    shift 2
    start=$(date +%s)
    if (( start + limit > DEADLINE )); then limit=$(( DEADLINE - start )); fi
    if (( limit < 10 )); then SUMMARY+=("$name skipped: out of time"); return 0; fi
    echo "=== $name: $*" | tee -a "$LOG"
    timeout "$limit" "$@" >>"$LOG" 2>&1
    rc=$?
    SUMMARY+=("$name rc=$rc $(( $(date +%s) - start ))s")
    echo "=== $name rc=$rc" | tee -a "$LOG"
    return 0
}

step device 30 bash -c 'nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv;
    python3 -c "import torch, torchvision; print(torch.__version__, torch.version.cuda, torchvision.__version__, torch.cuda.get_device_name())"'
if [ ! -f "$BUILD/lib/libdcn_deploy_kernels.so" ]; then
    arch=$(python3 -c "import torch; print('%d%d' % torch.cuda.get_device_capability())")
    step build 300 bash -c "cmake -S . -B '$BUILD' -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=$arch && cmake --build '$BUILD'"
fi
export DCN_DEPLOY_PLUGIN_DIR=$PWD/$BUILD/lib
# The GEMM path dlopens libcublas.so.13/.12: inside torch it is already loaded; for the C++ shell tests, put the
# folder of torch's (or the toolkit's) cuBLAS on the library path when the loader does not know it.
if ! ldconfig -p | grep -q 'libcublas\.so\.1[23]'; then
    cublas_dir=$(python3 -c "import glob, os, site; print(next((os.path.dirname(p) for d in site.getsitepackages() for p in glob.glob(d + '/nvidia/**/libcublas.so.1[23]', recursive=True)), ''))")
    [ -n "$cublas_dir" ] && export LD_LIBRARY_PATH=$cublas_dir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
fi
echo "cuBLAS from: ${cublas_dir:-the ldconfig cache}" | tee -a "$LOG"
# The package from this checkout, without touching the machine's packages (editable, no dependencies).
step install 120 python3 -m pip install -q --no-deps --no-build-isolation --no-index -e .

step pytest-gpu 200 python3 -m pytest -q -m gpu -p no:cacheprovider tests/test_plugin_gpu.py \
    tests/test_roi_plugin_host.py tests/test_deform_conv.py
for shell in dcn_plugin_shell_test dcn_roi_pool_shell_test; do
    [ -x "$BUILD/bin/$shell" ] && step "$shell" 60 "$BUILD/bin/$shell"
done
step bench 240 python3 benchmarks/gpu_deform_conv.py --algos ${DCN_BENCH_ALGOS:-gemm,torch} --iters 30 --warmup 5 --breakdown \
    --json "$OUT_DIR/bench.json" --output "$OUT_DIR/bench.md"
# Where the GEMM path's product writes, each forced on every layer (auto, in the bench above, stages only where the
# NCHW rows are not 16-byte aligned: det res3 and res5), then a 16 MiB column budget (default 64), which keeps a
# chunk's columns in the H100's 50 MB L2 between the sampling kernel and the product (smaller products).
for output in direct staged; do
    step "bench-output-$output" 60 env DCN_DEPLOY_GEMM_OUTPUT=$output python3 benchmarks/gpu_deform_conv.py \
        --algos gemm --dtypes float16 --iters 20 --warmup 3 --json "$OUT_DIR/bench_output_${output}.json"
done
step bench-chunk-16MB 60 env DCN_DEPLOY_GEMM_CHUNK_MB=16 python3 benchmarks/gpu_deform_conv.py --algos gemm \
    --dtypes float16 --iters 20 --warmup 3 --json "$OUT_DIR/bench_chunk_16.json"
step bench-grouped 120 python3 benchmarks/gpu_deform_conv.py --layers grouped --algos auto,gemm --iters 20 --warmup 3 \
    --json "$OUT_DIR/bench_grouped.json" --output "$OUT_DIR/bench_grouped.md"
for shell in dcn_plugin_shell_test dcn_roi_pool_shell_test; do # their enqueue on the GPU
    [ -x "$BUILD/bin/$shell" ] && step "memcheck-$shell" 60 compute-sanitizer --tool memcheck --error-exitcode 3 "$BUILD/bin/$shell"
done
step memcheck 100 compute-sanitizer --tool memcheck --error-exitcode 3 python3 tests/sanitizer_cases.py
step memcheck-roi 60 compute-sanitizer --tool memcheck --error-exitcode 3 python3 -m pytest -q -p no:cacheprovider \
    tests/test_roi_plugin_host.py -k cuda
step racecheck 80 compute-sanitizer --tool racecheck --error-exitcode 3 python3 tests/sanitizer_cases.py --quick

echo "--- summary" | tee -a "$LOG"
printf '%s\n' "${SUMMARY[@]}" | tee -a "$LOG"
grep -E "passed|failed|ERROR SUMMARY|failure\(s\)|^FAIL|Error" "$LOG" | tail -n 40
for table in bench.md bench_grouped.md; do
    [ -f "$OUT_DIR/$table" ] && cat "$OUT_DIR/$table"
done
exit 0
