#!/usr/bin/env bash
# Issue 4's GPU checks in one run, for a machine with an NVIDIA GPU, nvcc, cmake, torch and torchvision. In order of
# importance, so that a slow run loses the least useful steps to the deadline:
#   1. build the libraries for this GPU (skipped when $DCN_GPU_BUILD already holds them: build here and carry),
#   2. the kernels against the reference (the GPU tests), and the plugin shells with a real enqueue,
#   3. the benchmark against torchvision and cuDNN, with the GEMM path's kernel breakdown, then the experimental
#      implicit-GEMM kernels beside the GEMM path (fp16; the warp-specialised one under racecheck and synccheck
#      first),
#   4. compute-sanitizer memcheck over small cases of every kernel,
#   5. the GEMM path's product output forced staged (auto writes NCHW directly where the rows allow), and a
#      16 MiB column budget,
#   6. racecheck, memcheck of the plugin shells and the RoI kernels, then the grouped / depth-wise benchmark and
#      whole zoo networks in PyTorch,
#   7. optional: variants of the GEMM path's settings (DCN_GPU_VARIANTS) and an Nsight Compute profile of the
#      transpose, sampling and output kernels at res4, batch 8, fp16 (DCN_GPU_NCU="tiled thread": the samplers to
#      profile; "implicit" or "specialised": that implicit-GEMM kernel with its stall sites, and its SASS with
#      stall samples in implicit_sass.csv or specialised_sass.csv; "direct": the direct kernel, by default on the
#      depth-wise layer; "direct-taps": its shared-taps blocks, likewise; "direct-mma": the tensor-core group
#      kernel, with DCN_GPU_NCU_AT=resnext-c4), into checks.log, on the layer DCN_GPU_NCU_AT (res3, res4 (default),
#      res5, seg, grouped, depthwise or resnext-c4).
# Every step runs even when an earlier one fails, each under its own time limit and all within
# $DCN_GPU_CHECKS_SECONDS (540); the summary at the end lists each step's exit code (124/137: timed out).
# DCN_GPU_SKIP: space-separated step names to leave out (a shorter run while iterating); DCN_GPU_ONLY: the step
# names to run, besides the device step and (without a carried build) the build (e.g. "plugin-info variant-even
# ncu-specialised ncu-specialised-sass"). DCN_GPU_PYTEST_K: the -k expression of pytest-gpu's GPU kernel tests
# (default "not implicit"); DCN_GPU_MEMCHECK_ALGOS: memcheck's sanitizer_cases.py --algos (default all): a call short
# of device time can check one new kernel alone.
# DCN_GPU_VARIANTS: space-separated NAME:VAR=VALUE[,VAR=VALUE] entries; each times $DCN_GPU_VARIANT_ALGOS (default:
# gemm) in $DCN_GPU_VARIANT_DTYPES (default: float16; comma-separated) with those variables set, its table in
# checks.log, e.g. "thread:DCN_DEPLOY_GEMM_SAMPLER=thread" or,
# with DCN_GPU_VARIANT_ALGOS=implicit, "m128:DCN_DEPLOY_IMPLICIT_TILE_M=128" or "t256:DCN_DEPLOY_IMPLICIT_THREADS=256".
# DCN_GPU_VARIANT_ARGS: more gpu_deform_conv.py arguments for every variant (e.g. "--batches 8 --breakdown": where
# each variant's time goes, kernel by kernel).
#
#   DCN_BENCH_COMMIT=$(git rev-parse --short HEAD) bash benchmarks/gpu_checks.sh [output folder]
#   (default: $OUT, else artifacts/gpu; writes these files there: checks.log, bench.json, bench.md,
#    bench_implicit.json, bench_output_staged.json, bench_chunk_64.json, bench_grouped.json, bench_grouped.md,
#    bench_nhwc.json, bench_nhwc.md, bench_grouped_nhwc.json, bench_zoo.json, and
#    implicit_sass.csv or specialised_sass.csv with DCN_GPU_NCU; the device tool brings back 8: skip a step to stay
#    within them)
set -u
OUT_DIR=${1:-${OUT:-artifacts/gpu}}
mkdir -p "$OUT_DIR" && OUT_DIR=$(cd "$OUT_DIR" && pwd) || exit 1  # absolute: the cd below must not move it
cd "$(dirname "$0")/.." || exit 1
LOG="$OUT_DIR/checks.log"
: >"$LOG"
# A fresh set of results: the benchmark appends its tables to bench*.md, and a JSON left from an earlier run would be
# taken for this run's rows.
rm -f "$OUT_DIR"/bench.json "$OUT_DIR"/bench.md "$OUT_DIR"/bench_implicit.json "$OUT_DIR"/bench_output_staged.json \
    "$OUT_DIR"/bench_chunk_64.json "$OUT_DIR"/bench_grouped.json "$OUT_DIR"/bench_grouped.md "$OUT_DIR"/implicit_sass.csv "$OUT_DIR"/specialised_sass.csv \
    "$OUT_DIR"/direct_sass.csv "$OUT_DIR"/bench_nhwc.json "$OUT_DIR"/bench_nhwc.md "$OUT_DIR"/bench_grouped_nhwc.json
STARTED=$(date +%s)
export PYTHONUNBUFFERED=1
# The package from this checkout, without installing it (the machine has no network and its own packages):
# benchmarks, tests, their subprocesses and the sanitizer runs all import dcn_deploy from here.
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
BUILD=${DCN_GPU_BUILD:-build/gpu}
case $BUILD in /*) ;; *) BUILD=$PWD/$BUILD ;; esac
SUMMARY=()
DEADLINE=$(( $(date +%s) + ${DCN_GPU_CHECKS_SECONDS:-540} ))  # the whole run stays inside a device lease

step() { # step NAME TIMEOUT_S COMMAND...
    local name=$1 limit=$2 start rc
    shift 2
    case " ${DCN_GPU_SKIP:-} " in *" $name "*) SUMMARY+=("$name skipped: DCN_GPU_SKIP"); return 0 ;; esac
    if [ -n "${DCN_GPU_ONLY:-}" ] && [ "$name" != device ] && [ "$name" != build ]; then
        case " $DCN_GPU_ONLY " in *" $name "*) ;; *) SUMMARY+=("$name skipped: not in DCN_GPU_ONLY"); return 0 ;; esac
    fi
    start=$(date +%s)
    if (( start + limit > DEADLINE )); then limit=$(( DEADLINE - start )); fi
    if (( limit < 10 )); then SUMMARY+=("$name skipped: out of time"); return 0; fi
    echo "=== $name (limit ${limit}s): $*" | tee -a "$LOG"
    # -k: a step that ignores SIGTERM (a hung CUDA call) is killed 5 s later
    timeout -k 5 "$limit" "$@" >>"$LOG" 2>&1
    rc=$?
    SUMMARY+=("$name rc=$rc $(( $(date +%s) - start ))s$( (( rc == 124 || rc == 137 )) && echo ' TIMED OUT')")
    echo "=== $name rc=$rc" | tee -a "$LOG"
    return 0
}

bench() { # bench NAME TIMEOUT_S JSON [MARKDOWN] -- ARGS...: the benchmark; its JSON is rewritten after every row
    local name=$1 limit=$2 json=$3 md=$4
    shift 5
    step "$name" "$limit" python3 benchmarks/gpu_deform_conv.py "$@" --json "$OUT_DIR/$json" \
        ${md:+--output "$OUT_DIR/$md"}
    if [ -n "$md" ] && [ ! -f "$OUT_DIR/$md" ] && [ -f "$OUT_DIR/$json" ]; then  # cut short: the rows it has
        python3 benchmarks/gpu_deform_conv.py "$@" --from-json "$OUT_DIR/$json" --output "$OUT_DIR/$md" >>"$LOG" 2>&1
    fi
}

# shellcheck disable=SC2016  # expanded by the inner bash
step device 60 bash -c 'nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv;
    nvcc --version | tail -n 2; echo "commit: ${DCN_BENCH_COMMIT:-unknown (set DCN_BENCH_COMMIT)}";
    python3 -c "import torch, torchvision, dcn_deploy.ops; print(torch.__version__, torch.version.cuda, torchvision.__version__, torch.cuda.get_device_name(), dcn_deploy.ops.__file__)"'
if [ ! -f "$BUILD/lib/libdcn_deploy_kernels.so" ]; then
    echo "no carried build in $BUILD: building here (minutes of device time; build on the CPU machine and carry it)" | tee -a "$LOG"
    arch=$(python3 -c "import torch; print('%d%d' % torch.cuda.get_device_capability())")
    step build 300 bash -c "cmake -S . -B '$BUILD' -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=$arch && cmake --build '$BUILD'"
fi
export DCN_DEPLOY_PLUGIN_DIR=$BUILD/lib
# The GEMM path dlopens libcublas.so.13/.12: inside torch it is already loaded; for the C++ shell tests, put the
# folder of torch's (or the toolkit's) cuBLAS on the library path when the loader does not know it.
cublas_from="the ldconfig cache"
if ! ldconfig -p | grep -q 'libcublas\.so\.1[23]'; then
    cublas_dir=$(python3 -c "import glob, os, site; print(next((os.path.dirname(p) for d in site.getsitepackages() for p in glob.glob(d + '/nvidia/**/libcublas.so.1[23]', recursive=True)), ''))")
    if [ -n "$cublas_dir" ]; then
        export LD_LIBRARY_PATH=$cublas_dir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
        cublas_from=$cublas_dir
    else
        cublas_from="nowhere found (the shell tests' GEMM path will report it)"
    fi
fi
echo "cuBLAS from: $cublas_from" | tee -a "$LOG"
# Which libraries the tests and benchmarks will load, their build settings, and whether the GEMM path's cuBLAS loads
# (after torch, as in the benchmark).
step plugin-info 30 python3 -c "import json, torch; from dcn_deploy.plugin.library import library_info; \
print(json.dumps(library_info(), indent=1, default=str))"

# 2. Correctness: every test that needs the GPU (the torch runners' on CUDA too), and convert_modules against real
# torchvision (which imports only on this machine; about 6 s).
step pytest-gpu 200 python3 -m pytest -q -p no:cacheprovider tests/test_plugin_gpu.py -k "${DCN_GPU_PYTEST_K:-not implicit}" \
    tests/test_roi_plugin_host.py::test_cuda_kernels_match_reference \
    tests/test_roi_plugin_host.py::test_ops_on_a_gpu_run_the_cuda_kernels \
    tests/test_deform_conv.py::test_tensors_on_two_devices_are_rejected tests/test_convert_modules.py \
    tests/test_model_left_as_found.py::test_torch_runner_moves_the_model_back_from_cuda \
    tests/test_cli_errors.py::test_torch_cuda_verifies_against_torch_on_the_cpu
# The experimental implicit-GEMM kernel in a process of its own: a fault there (a sticky CUDA error) must not fail
# the other kernels' tests.
step pytest-implicit 120 python3 -m pytest -q -p no:cacheprovider tests/test_plugin_gpu.py -k implicit
for shell in dcn_plugin_shell_test dcn_roi_pool_shell_test; do
    [ -x "$BUILD/bin/$shell" ] && step "$shell" 60 "$BUILD/bin/$shell"
done
# 3. The benchmark: our GEMM path, the PyTorch op (its forward on these kernels) and the op's torch composite
# against torchvision and cuDNN.
bench bench 240 bench.json bench.md -- --algos "${DCN_BENCH_ALGOS:-gemm,torch,composite}" --iters 30 --warmup 5 \
    --breakdown
# 3a. cuDNN's convolution on channels-last tensors as well (its half-precision kernels' own layout, and TensorRT's
# around a plugin), beside ours on NCHW (table in checks.log): what the goal's 1.5x would mean for a channels-last
# path of ours, whose layer would skip the input transpose and the staged output (the breakdown above).
step bench-cudnn-nhwc 90 python3 benchmarks/gpu_deform_conv.py --algos gemm --dtypes float16 --iters 30 --warmup 5 \
    --conv-channels-last
# 3a'. Ours on channels-last tensors too (DCN_FORWARD_CHANNELS_LAST: the GEMM path without its input transpose and
# staged output), beside ours on NCHW, torchvision and cuDNN both ways, in both types; the markdown goes to bench_nhwc.md.
bench bench-nhwc 150 bench_nhwc.json bench_nhwc.md -- --algos gemm --iters 30 --warmup 5 --channels-last --breakdown
# 3b. The implicit-GEMM kernel (experimental, fp16 only: it has no float32) beside the GEMM path, torchvision and
# cuDNN in the same process.
bench bench-implicit 90 bench_implicit.json "" -- --algos implicit,gemm --dtypes float16 --iters 20 --warmup 3
# 3c. The warp-specialised implicit-GEMM kernel (DCN_DEPLOY_IMPLICIT_KERNEL=specialised; written without a GPU): its
# ring of stages under racecheck (named barriers, cp.async groups) and synccheck (barriers reached by whole warps),
# then its time beside the GEMM path (table in the log). Its correctness: pytest-implicit's child process.
step racecheck-specialised 60 env DCN_DEPLOY_IMPLICIT_KERNEL=specialised compute-sanitizer --tool racecheck \
    --error-exitcode 3 python3 tests/sanitizer_cases.py --algos implicit
# The same racecheck under diagnostic builds of the kernels library, built on the CPU machine and carried
# (gpu_notes.md, runbook; without one: skipped): racecheck_build STEP FOLDER.
racecheck_build() {
    local name=$1 folder=$2
    case $folder in /*) ;; *) folder=$PWD/$folder ;; esac
    if [ -f "$folder/lib/libdcn_deploy_kernels.so" ]; then
        step "$name" 60 env DCN_DEPLOY_IMPLICIT_KERNEL=specialised DCN_DEPLOY_PLUGIN_DIR="$folder/lib" \
            compute-sanitizer --tool racecheck --error-exitcode 3 python3 tests/sanitizer_cases.py --algos implicit
    else
        SUMMARY+=("$name skipped: no $folder/lib/libdcn_deploy_kernels.so carried")
    fi
}
# Consumers that bar.sync (not bar.arrive) the ring's "empty" barriers (DCN_RING_CONSUMERS_SYNC,
# deformConvImplicitSpecialised.cuh); session 25: 47 hazard groups, against 37 without.
racecheck_build racecheck-ring-sync "${DCN_GPU_RING_SYNC_BUILD:-build/gpu-ringsync}"
# And weights copies as plain loads and shared stores besides (DCN_IMPLICIT_SYNC_COPIES=1,
# deformConvImplicitKernel.cuh); session 25: 46, so cp.async is not their cause either (RESULTS.md).
racecheck_build racecheck-sync-copies "${DCN_GPU_SYNC_COPIES_BUILD:-build/gpu-synccopies}"
step synccheck-specialised 40 env DCN_DEPLOY_IMPLICIT_KERNEL=specialised compute-sanitizer --tool synccheck \
    --error-exitcode 3 python3 tests/sanitizer_cases.py --algos implicit
# Its gathers read the input through computed indices (into registers since session 23): memcheck on it as well.
step memcheck-specialised 40 env DCN_DEPLOY_IMPLICIT_KERNEL=specialised PYTORCH_NO_CUDA_MEMORY_CACHING=1 \
    compute-sanitizer --tool memcheck --error-exitcode 3 python3 tests/sanitizer_cases.py --algos implicit
step bench-specialised 90 env DCN_DEPLOY_IMPLICIT_KERNEL=specialised python3 benchmarks/gpu_deform_conv.py \
    --algos implicit,gemm --dtypes float16 --iters 20 --warmup 3
# 4. memcheck over small cases of every kernel and dtype.
# (torch's caching allocator off: an overrun inside one of its blocks would not be reported)
step memcheck 100 env PYTORCH_NO_CUDA_MEMORY_CACHING=1 compute-sanitizer --tool memcheck --error-exitcode 3 \
    python3 tests/sanitizer_cases.py ${DCN_GPU_MEMCHECK_ALGOS:+--algos "$DCN_GPU_MEMCHECK_ALGOS"}
# The direct kernel over NCHW on depth-wise layers too (DCN_DEPLOY_DIRECT_LAYOUT=nchw; the default there is a
# channels-last copy of the input, which the memcheck step above covers).
step memcheck-direct-nchw 40 env DCN_DEPLOY_DIRECT_LAYOUT=nchw PYTORCH_NO_CUDA_MEMORY_CACHING=1 compute-sanitizer \
    --tool memcheck --error-exitcode 3 python3 tests/sanitizer_cases.py --algos direct
# 5. The GEMM path's product through the staging scratch everywhere (auto writes straight into NCHW for one group
# where the rows are whole 16-byte vectors: directOutputByDefault), then the 64 MiB column budget that was the
# default before 2026-11-26 (now 256: fewer, larger products), to time that choice with the current kernels.
DCN_DEPLOY_GEMM_OUTPUT=staged bench bench-output-staged 90 bench_output_staged.json "" -- --algos gemm \
    --iters 20 --warmup 3 --breakdown
DCN_DEPLOY_GEMM_CHUNK_MB=64 bench bench-chunk-64MB 90 bench_chunk_64.json "" -- --algos gemm --dtypes float16 \
    --iters 20 --warmup 3
# Every implementation without a bias (DCN layers followed by batch norm have none): where staged, a half type's
# product is then rounded by cuBLAS into a scratch of half the bytes (stagesNarrow); its table in the log.
step bench-no-bias 60 python3 benchmarks/gpu_deform_conv.py --algos gemm --dtypes float16 --no-bias --iters 20 \
    --warmup 3
# cuBLAS on the layers' products in our operand layout (K contiguous) and in torchvision's (pixels contiguous):
# whether our float32 products, 1.3x-1.5x slower than torchvision's layer at 09f36e1, are slow for their layout.
step gemm-layouts 60 python3 benchmarks/gemm_layouts.py
# The same at batch 1, float32, under both of torch's BLAS back ends: our product there ran a 32x32-tile kernel at
# 22 TFLOP/s on det res5 (0.219 ms) where torch.mm of the same operands took 0.130 (session 25): is that cuBLASLt's?
step gemm-layouts-batch1 40 python3 benchmarks/gemm_layouts.py --batch 1 --dtypes float32 --blas cublas,cublaslt
# 6. The rest of the sanitizer runs (clean at bf7556d), then grouped and depth-wise layers.
step racecheck 80 compute-sanitizer --tool racecheck --error-exitcode 3 python3 tests/sanitizer_cases.py --quick
# The channels-last direct kernel's shared-memory instances alone (its grouped weight tables, the shared-taps blocks,
# the tensor-core group kernel's tiles), on channels-last tensors: the quick racecheck above ran out of its 80 s
# before reaching them (session 38, H100).
step racecheck-direct 60 compute-sanitizer --tool racecheck --error-exitcode 3 python3 tests/sanitizer_cases.py --quick \
    --algos direct-nhwc,direct-taps-nhwc,direct-mma-nhwc,direct-mma
for shell in dcn_plugin_shell_test dcn_roi_pool_shell_test; do # their enqueue on the GPU
    [ -x "$BUILD/bin/$shell" ] && step "memcheck-$shell" 60 compute-sanitizer --tool memcheck --error-exitcode 3 "$BUILD/bin/$shell"
done
step memcheck-roi 60 compute-sanitizer --tool memcheck --error-exitcode 3 python3 -m pytest -q -p no:cacheprovider \
    tests/test_roi_plugin_host.py -k cuda
# The RoI pooling ops: the PyTorch op on the CUDA kernels against its composite (table in checks.log).
step bench-roi 60 python3 benchmarks/gpu_roi_pool.py
# The grouped and depth-wise layers, each way: auto, the GEMM path, the direct kernel (over a channels-last copy of the
# input where it takes the layer: depth-wise, and groups of up to 16 channels, the widest as wide items: ResNeXt c4 in
# float32 too since kernels revision 13), the same with the tensor-core group kernel (direct-mma: the half types' groups
# of 1 to 16 channels, ResNeXt c4 and the grouped and depth-wise res4 layers; experimental; the per-item kernel where it
# does not take the layer; session 38 timed direct-taps, the shared-taps blocks, in this place), and the direct kernel
# on channels-last tensors.
bench bench-grouped 150 bench_grouped.json bench_grouped.md -- --layers grouped --algos auto,gemm,direct,direct-mma \
    --iters 20 --warmup 3 --channels-last --channels-last-algo direct
# The grouped and depth-wise layers on channels-last tensors too (the depth-wise one: the channels-last direct kernel
# without its transpose; the grouped one: the GEMM path without its two); the table in checks.log, with the grouped
# layer's kernels both ways (why its float32 rows were slower on channels-last tensors in session 34).
bench bench-grouped-nhwc 90 bench_grouped_nhwc.json "" -- --layers grouped --algos auto --channels-last --iters 20 \
    --warmup 3 --breakdown
# Whole networks in PyTorch (fp16, NCHW and channels-last): the plain twin, the deformable network on our op and on
# torchvision's (benchmarks/gpu_zoo_torch.py; rows in bench_zoo.json, the table in checks.log).
step bench-zoo 200 python3 benchmarks/gpu_zoo_torch.py --json "$OUT_DIR/bench_zoo.json"
# The depth-wise layer again with the direct kernel over NCHW (the layout before kernels revision 7; table in
# checks.log), against bench-grouped's direct column (channels-last by default).
step bench-direct-nchw 60 env DCN_DEPLOY_DIRECT_LAYOUT=nchw python3 benchmarks/gpu_deform_conv.py --layers grouped \
    --algos auto,direct --iters 20 --warmup 3

# 6b. A/B against other builds of the kernels (an older commit's, a variant's), built on the CPU machine and carried:
# DCN_GPU_ALT_BUILDS="NAME:FOLDER ..." (FOLDER holding lib/libdcn_deploy_kernels.so). Each runs the benchmark of
# DCN_GPU_ALT_ARGS (default: the grouped and depth-wise layers under auto) under its library, then again under this
# build's, in neighbouring processes, so the pair is timed under the same conditions (tables in checks.log).
for alt in ${DCN_GPU_ALT_BUILDS:-}; do
    alt_name=${alt%%:*} alt_folder=${alt#*:}
    case $alt_folder in /*) ;; *) alt_folder=$PWD/$alt_folder ;; esac
    if [ "$alt_name" = "$alt" ] || [ ! -f "$alt_folder/lib/libdcn_deploy_kernels.so" ]; then
        echo "DCN_GPU_ALT_BUILDS: '$alt' is not NAME:FOLDER with FOLDER/lib/libdcn_deploy_kernels.so; skipped" | tee -a "$LOG"
        SUMMARY+=("alt '$alt' skipped: not NAME:FOLDER with a carried library")
        continue
    fi
    # shellcheck disable=SC2086  # the arguments are words
    step "alt-$alt_name" 60 env DCN_DEPLOY_PLUGIN_DIR="$alt_folder/lib" python3 benchmarks/gpu_deform_conv.py \
        ${DCN_GPU_ALT_ARGS:---layers grouped --algos auto --iters 20 --warmup 3}
    # shellcheck disable=SC2086
    step "alt-$alt_name-base" 60 python3 benchmarks/gpu_deform_conv.py \
        ${DCN_GPU_ALT_ARGS:---layers grouped --algos auto --iters 20 --warmup 3}
done

# 7. Variants of the GEMM path's settings, each a table in the log, and the sampling kernels under Nsight Compute.
for variant in ${DCN_GPU_VARIANTS:-}; do
    if [[ $variant != *:*=* ]]; then
        echo "DCN_GPU_VARIANTS: '$variant' is not NAME:VAR=VALUE[,VAR=VALUE]; skipped" | tee -a "$LOG"
        SUMMARY+=("variant '$variant' skipped: not NAME:VAR=VALUE")
        continue
    fi
    settings=${variant#*:}
    step "variant-${variant%%:*}" 60 env ${settings//,/ } python3 benchmarks/gpu_deform_conv.py \
        --algos "${DCN_GPU_VARIANT_ALGOS:-gemm}" \
        --dtypes "${DCN_GPU_VARIANT_DTYPES:-float16}" --iters 20 --warmup 3 ${DCN_GPU_VARIANT_ARGS:-}
done
if [ -n "${DCN_GPU_NCU:-}" ]; then
    if command -v ncu >/dev/null; then
        for target in $DCN_GPU_NCU; do
            if [ "$target" = implicit ] || [ "$target" = specialised ]; then
                # an implicit-GEMM kernel (the stepwise one, or the warp-specialised one), with where its warps stall
                # (source counters), then its SASS with each instruction's stall samples as CSV (a file of its own)
                kernel=stepwise
                [ "$target" = specialised ] && kernel=specialised
                step "ncu-$target" 120 env DCN_DEPLOY_IMPLICIT_KERNEL=$kernel ncu \
                    --kernel-name regex:'implicitKernel|specialisedKernel' --launch-count 1 \
                    --section SpeedOfLight --section MemoryWorkloadAnalysis --section Occupancy \
                    --section WarpStateStats --section SchedulerStats --section InstructionStats --section LaunchStats \
                    --section SourceCounters python3 benchmarks/gpu_deform_conv.py --profile-layer implicit \
                    --profile-at "${DCN_GPU_NCU_AT:-res4}"
                step "ncu-$target-sass" 120 bash -c "DCN_DEPLOY_IMPLICIT_KERNEL=$kernel ncu \
                    --kernel-name regex:'implicitKernel|specialisedKernel' --launch-count 1 \
                    --section SourceCounters --section WarpStateStats --page source --print-source sass --csv \
                    python3 benchmarks/gpu_deform_conv.py --profile-layer implicit --profile-at '${DCN_GPU_NCU_AT:-res4}' \
                    >'$OUT_DIR/${target}_sass.csv'"
                continue
            fi
            if [ "$target" = direct ] || [ "$target" = direct-taps ] || [ "$target" = direct-mma ]; then
                # the direct kernel (auto's choice for depth-wise layers: over a channels-last copy of the input
                # since kernels revision 7; direct-taps: its shared-taps blocks, DCN_FORWARD_SHARED_TAPS) on the
                # depth-wise res4 layer by default: what bounds it (memory throughput, sectors per request, issue),
                # then its SASS with each instruction's stall samples as CSV (direct_sass.csv, direct-taps_sass.csv);
                # direct-mma: the tensor-core group kernel (DCN_GPU_NCU_AT=resnext-c4)
                kernels='deformConvDirectKernel|depthwiseChannelsLastKernel|groupedChannelsLastKernel'
                kernels+='|sharedTapsKernel|groupMmaKernel'
                step "ncu-$target" 90 ncu --kernel-name regex:"$kernels" --launch-count 1 \
                    --section SpeedOfLight --section MemoryWorkloadAnalysis --section MemoryWorkloadAnalysis_Tables \
                    --section Occupancy --section WarpStateStats --section SchedulerStats --section SourceCounters \
                    python3 benchmarks/gpu_deform_conv.py --profile-layer "$target" \
                    --profile-at "${DCN_GPU_NCU_AT:-depthwise}"
                step "ncu-$target-sass" 90 bash -c "ncu --kernel-name regex:'$kernels' \
                    --launch-count 1 --section SourceCounters --section WarpStateStats --page source --print-source sass \
                    --csv python3 benchmarks/gpu_deform_conv.py --profile-layer $target \
                    --profile-at '${DCN_GPU_NCU_AT:-depthwise}' >'$OUT_DIR/${target}_sass.csv'"
                continue
            fi
            # a sampler of the GEMM path: the first chunk's transpose, sampling and output kernels
            step "ncu-$target" 90 env DCN_DEPLOY_GEMM_SAMPLER=$target ncu \
                --kernel-name regex:'olumnsKernel|nhwcKernel|stagedOutputKernel' --launch-count 3 \
                --section SpeedOfLight --section MemoryWorkloadAnalysis --section Occupancy --section WarpStateStats \
                --section LaunchStats python3 benchmarks/gpu_deform_conv.py --profile-layer --profile-at "${DCN_GPU_NCU_AT:-res4}"
        done
    else
        echo "ncu: not on this machine" | tee -a "$LOG"
    fi
fi

rm -f "$OUT_DIR"/.*.tmp  # a write cut off by a timeout (the results come back only as plain, named files)
# Tables first, the summary last: the device tool returns only the end of the output.
for table in bench.md bench_nhwc.md bench_grouped.md; do
    [ -f "$OUT_DIR/$table" ] && cat "$OUT_DIR/$table"
done
echo "--- log lines that matter"
grep -E "passed|failed|skipped|no tests ran|ERROR SUMMARY|failure\(s\)|^FAIL|Error|warning: CUDA graph" "$LOG" | cut -c1-200 | tail -n 30
echo "--- files in $OUT_DIR ($(find "$OUT_DIR" -type f | wc -l); at most 8 come back)"
ls -l "$OUT_DIR"
echo "--- summary" | tee -a "$LOG"
printf '%s\n' "${SUMMARY[@]}" "total $(( $(date +%s) - STARTED ))s" | tee -a "$LOG"
exit 0
