"""GPU benchmark: dcn_deploy's CUDA deformable convolution vs torchvision's and vs cuDNN's plain convolution.

Shapes: the 3x3 deformable layers of ResNet-50 stages 3-5 (conv2 of a bottleneck, stride 1) at a 800x1333
detection input (feature maps at strides 8/16/32), batch 1 and 8, and the paper's segmentation setting (DeepLab,
res5 with dilation 2 at output stride 16 on a 1024x2048 Cityscapes image). v2 (with mask) throughout, one offset
group; fp16 and fp32. ``--layers grouped`` times grouped and depth-wise layers instead (where im2col designs
collapse). Every implementation runs on the same tensors in the same process; times are medians over
CUDA-event-timed CUDA-graph replays after a warm-up, run back to back (no host wait between them, so a time is the
GPU's work and not the host's launch of it) on the same buffers (no L2 flush: inputs that fit stay in the cache).

Needs a GPU, torch with CUDA, torchvision and the built kernels library (``dcn-deploy plugin build``):

    python benchmarks/gpu_deform_conv.py                       # prints a markdown table
    python benchmarks/gpu_deform_conv.py --output benchmarks/RESULTS.md
    python benchmarks/gpu_deform_conv.py --from-json bench.json --algos gemm,torch  # no GPU

An implementation that raises (an unsupported dtype, out of memory) gets `fail` in its cells and its reason under the
table; the other implementations and rows go on. ``--json`` is rewritten after every row, so a run cut short by a
time limit still leaves its rows for ``--from-json``.

Goal (issue 4): >= 3x faster than torchvision in fp16, <= 1.5x the plain convolution's time.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional, Tuple

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # runs from a checkout without installing the package
    sys.path.insert(0, str(REPO))


@dataclass(frozen=True)
class Layer:
    name: str
    channels: int
    height: int
    width: int
    dilation: int = 1
    groups: int = 1
    offset_groups: int = 1


def _feature(size: int, stride: int) -> int:
    # ResNet's stem and stage strides round up (conv with padding): ceil(size / stride)
    return -(-size // stride)


LAYERS = [
    Layer("det res3 (stride 8)", 128, _feature(800, 8), _feature(1333, 8)),
    Layer("det res4 (stride 16)", 256, _feature(800, 16), _feature(1333, 16)),
    Layer("det res5 (stride 32)", 512, _feature(800, 32), _feature(1333, 32)),
    Layer("seg res5 (OS16, dilation 2)", 512, _feature(1024, 16), _feature(2048, 16), dilation=2),
]
# Where im2col designs collapse (the motivation): grouped (ResNeXt-like) and depth-wise layers at res4 size.
GROUPED_LAYERS = [
    Layer("grouped res4 (32 groups, 4 offset groups)", 256, _feature(800, 16), _feature(1333, 16), groups=32,
          offset_groups=4),
    Layer("depth-wise res4", 256, _feature(800, 16), _feature(1333, 16), groups=256),
    # groups of 4 (ResNeXt 32x4d's res3 width at res4 size): auto takes the direct kernel there, not a product
    Layer("grouped res4 (64 groups of 4, 4 offset groups)", 256, _feature(800, 16), _feature(1333, 16), groups=64,
          offset_groups=4),
    # ResNeXt-50 32x4d's deformable c4 and c5 layers at the detection input (32 groups of 16 and of 32, one offset
    # group, as mmdetection's dconv configs): auto's GEMM path (the direct kernel takes c4's groups as wide items
    # when asked for, 32 bytes in the half types and 64 in float32; c5's groups are past it)
    Layer("ResNeXt c4 (32 groups of 16)", 512, _feature(800, 16), _feature(1333, 16), groups=32),
    Layer("ResNeXt c5 (32 groups of 32)", 1024, _feature(800, 32), _feature(1333, 32), groups=32),
]
# The CUDA kernels through the C ABI; the PyTorch op as users call it ("torch": its CUDA forward runs these kernels
# when the library is built); and the op's composite of torch ops ("composite", DCN_DEPLOY_NATIVE_CUDA=0: what it
# ran on CUDA before, and what its backward still runs).
ALGOS = ("auto", "gemm", "fused", "direct", "direct-taps", "direct-mma", "implicit", "torch", "composite")
LAYER_SETS = {"issue": LAYERS, "grouped": GROUPED_LAYERS, "all": LAYERS + GROUPED_LAYERS}
DTYPES = ("float16", "bfloat16", "float32")


def on_composite(op, *args):
    """``op(*args)`` with the PyTorch op on its torch composite, not the kernels under test (read at each call, so
    a CUDA graph captures the composite)."""
    from dcn_deploy.ops.native_paths import composite_forward

    with composite_forward():
        return op(*args)


def without_tf32(fn: Callable[[], object]) -> Callable[[], object]:
    """fn with cuDNN's TF32 off while it runs (captured that way in a CUDA graph). Torch lets cuDNN run float32
    convolutions in TF32 by default (10-bit mantissa products); our float32 kernels and torchvision's float32 products
    (cuBLAS under torch.backends.cuda.matmul.allow_tf32, off by default) do not. The legacy flag only: mixing it with
    torch's newer fp32_precision settings makes reading either an error."""
    import torch

    def call():
        allowed = torch.backends.cudnn.allow_tf32
        torch.backends.cudnn.allow_tf32 = False
        try:
            return fn()
        finally:
            torch.backends.cudnn.allow_tf32 = allowed
    return call


def tf32_settings() -> dict:
    """Whether torch lets cuDNN's convolutions and cuBLAS's float32 products use TF32 in this process."""
    import torch

    try:
        return {"cudnn_tf32": bool(torch.backends.cudnn.allow_tf32),
                "matmul_tf32": bool(torch.backends.cuda.matmul.allow_tf32)}
    except RuntimeError as exc:  # flags set through both of torch's APIs: unreadable as one value
        return {"tf32_settings_unreadable": str(exc).splitlines()[0]}


def time_cuda(fn: Callable[[], object], warmup: int, iters: int, graph: bool = True) -> float:
    """Median milliseconds of fn over iters runs, each timed with CUDA events.

    graph: capture one call of fn in a CUDA graph and time its replays, so the numbers are the GPU's work and not
    Python's launch overhead (which at batch 1 is larger than some of the kernels); falls back to eager calls,
    with a warning, when fn cannot be captured.
    """
    return time_cuda_detail(fn, warmup, iters, graph)[0]


def time_cuda_detail(fn: Callable[[], object], warmup: int, iters: int, graph: bool = True) -> Tuple[float, bool]:
    """:func:`time_cuda`, and whether the times are CUDA-graph replays (False: eager calls, asked for or after a
    failed capture)."""
    import torch

    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    run = fn
    graphed = False
    if graph:
        try:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                fn()
            torch.cuda.current_stream().wait_stream(side)
            captured = torch.cuda.CUDAGraph()
            with torch.cuda.graph(captured):
                fn()
            run = captured.replay
            run()
            torch.cuda.synchronize()
            graphed = True
        except Exception as exc:  # noqa: BLE001 - any capture failure: time eagerly instead
            print(f"warning: CUDA graph capture failed ({exc}); timing eager calls", file=sys.stderr)
            torch.cuda.synchronize()
            run = fn
    # Back to back: the host records every run's events without waiting in between, so the GPU has the next run
    # queued when a start event fires. (Waiting after each run left the GPU idle at the next start event, which then
    # fired at once: each time included the host's launch of the run, microseconds against a 40 us layer.)
    events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(iters)]
    for start, stop in events:
        start.record()
        run()
        stop.record()
    torch.cuda.synchronize()
    return statistics.median(start.elapsed_time(stop) for start, stop in events), graphed


def git_commit() -> str:
    """The commit measured: $DCN_BENCH_COMMIT where set (a lent GPU machine's copy of the tree has no .git), else
    git's short hash of HEAD, else "unknown"."""
    if os.environ.get("DCN_BENCH_COMMIT"):  # a copy of the tree without .git (a lent GPU machine)
        return os.environ["DCN_BENCH_COMMIT"]
    try:
        return subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def run_settings(iters: int, warmup: int, graph: bool) -> dict:
    """How a run times (stored in each of its rows, so that --from-json renders the run's own settings): repeats,
    warm-up runs, CUDA-graph replays or eager calls, the date and the command line."""
    return {"iters": iters, "warmup": warmup, "timing": "graph" if graph else "eager",
            "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M"),
            "command": command_line()}


def command_line(script: Optional[str] = None) -> str:
    """This process's command (``script``: the benchmark's file, this one by default), with the kernel knobs set in
    its environment (:func:`kernel_settings`) first."""
    env = kernel_settings()
    name = script or Path(__file__).name
    return f"{env + ' ' if env else ''}python benchmarks/{name} {' '.join(sys.argv[1:])}".rstrip()


# Relative errors against the float64 reference above which an implementation's result is wrong, not rounded:
# its time is marked and left out of the best (torchvision's own fp16 error reaches 1.6e-2, ours 2.4e-4; float32 allows
# TF32 products, up to ~8e-4 on a 256-channel layer in a CPU emulation).
ERROR_LIMITS = {"float16": 5e-2, "bfloat16": 5e-2, "float32": 5e-3}


def wrong_result(r: dict, key: str) -> bool:
    """Whether row r's implementation `key` gave a result far from the reference (or NaN); False without one."""
    err = r.get(f"{key}_err")
    return err is not None and not (err <= ERROR_LIMITS.get(r.get("dtype"), 1e-3))


def relative_error(got, reference) -> float:
    """||got - reference|| / ||reference||, in float64."""
    got, reference = got.double(), reference.double()
    return float((got - reference).norm() / reference.norm().clamp_min(1e-300))


def kernel_breakdown(fn: Callable[[], object], calls: int = 10) -> List[Tuple[str, float]]:
    """GPU milliseconds per call of each kernel fn launches (torch.profiler, CUDA activity), largest first: where
    a deformable convolution's time goes (sampling, transpose, bias, the product)."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(calls):
            fn()
        torch.cuda.synchronize()
    kernels = []
    for event in prof.key_averages():
        # self time: a kernel's own duration; an operator that launched kernels would count them again
        total_us = getattr(event, "self_device_time_total", None)
        if total_us is None:  # older torch
            total_us = getattr(event, "self_cuda_time_total", 0.0)
        if total_us > 0:
            kernels.append((event.key, total_us / calls / 1000.0))
    return sorted(kernels, key=lambda item: -item[1])


def breakdown_markdown(rows: List[dict], top: int = 6, key: str = "gemm_kernels", path: str = "gemm") -> str:
    """One line per (layer, dtype): the GEMM path's largest kernels (rows' ``key``: on NCHW tensors, or
    ``gemm_nhwc_kernels`` on channels-last ones) and their share of its time; ``path`` names it in the header."""
    lines = [f"| layer | NxCxHxW | dtype | kernels of `{path}`, ms per call (share) |", "| --- | --- | --- | --- |"]
    for r in rows:
        kernels = r.get(key)
        if not kernels:
            continue
        total = sum(ms for _, ms in kernels) or 1.0
        cells = "; ".join(f"`{_short_kernel_name(name)}` {ms:.3f} ({100 * ms / total:.0f}%)" for name, ms in kernels[:top])
        lines.append(f"| {r['layer']} | {r['shape']} | {r['dtype']} | {cells} |")
    return "\n".join(lines) + "\n"


def _short_kernel_name(name: str, width: int = 60) -> str:
    """A kernel's name without return type, namespaces and parameter list (template arguments kept), cut to width:
    'void dcn::(anonymous namespace)::columnsKernel<__half, 8>(...)' -> 'columnsKernel<__half, 8>'."""
    name = name.replace("(anonymous namespace)::", "")
    depth, cut, start = 0, len(name), 0
    for index, ch in enumerate(name):
        if ch == "<":
            depth += 1
        elif ch == ">":
            depth -= 1
        elif depth == 0 and ch == "(":
            cut = index
            break
        elif depth == 0 and ch == " ":
            start = index + 1  # drop a return type
        elif depth == 0 and name.startswith("::", index):
            start = index + 2
    short = name[start:cut].strip() or name
    return short if len(short) <= width else short[:width - 3] + "..."


def make_inputs(layer: Layer, batch: int, dtype_name: str, with_bias: bool = True):
    """(x, offset, weight, bias, mask) on the GPU for one layer, random with a fixed seed (the same on every call);
    bias None unless with_bias."""
    import torch

    dtype = getattr(torch, dtype_name)
    g = torch.Generator(device="cuda").manual_seed(0)
    c, h, w = layer.channels, layer.height, layer.width
    cg, og = c // layer.groups, layer.offset_groups
    x = torch.randn(batch, c, h, w, device="cuda", dtype=dtype, generator=g)
    weight = torch.randn(c, cg, 3, 3, device="cuda", dtype=dtype, generator=g) * (1.0 / (3 * cg ** 0.5))
    bias = torch.randn(c, device="cuda", dtype=dtype, generator=g)
    offset = torch.randn(batch, 18 * og, h, w, device="cuda", dtype=dtype, generator=g) * 2.0
    mask = torch.rand(batch, 9 * og, h, w, device="cuda", dtype=dtype, generator=g)
    return x, offset, weight, bias if with_bias else None, mask


def _failure_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300]


def measure(row: dict, key: str, fn: Callable[[], object], reference, warmup: int, iters: int, graph: bool) -> None:
    """row[key_err] (against reference, unless None) and row[key_ms]; on any exception both None and the reason in
    row[key_failed], so that one implementation failing (an unsupported dtype, out of memory) costs its own cells
    and not the rest of the run. row[key_timing] = 'eager' where a CUDA graph was asked for but could not be
    captured."""
    import torch

    try:
        if reference is not None:
            row[f"{key}_err"] = None
            row[f"{key}_err"] = relative_error(fn(), reference)
        row[f"{key}_ms"], graphed = time_cuda_detail(fn, warmup, iters, graph)
        if graph and not graphed:
            row[f"{key}_timing"] = "eager"
    except Exception as exc:  # noqa: BLE001 - recorded in the row and on stderr
        row[f"{key}_ms"] = None
        row[f"{key}_failed"] = _failure_text(exc)
        print(f"{key} failed on {row['layer']} {row['shape']} {row['dtype']}: {row[f'{key}_failed']}", file=sys.stderr)
        try:
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
        except Exception:  # noqa: BLE001 - a sticky CUDA error: the next measurement will say so
            pass


def _cuda_options(algo: str) -> dict:
    """deform_conv2d_cuda's arguments for one of our ALGOS: ``direct-taps`` is the direct kernel with
    ``shared_taps`` (DCN_FORWARD_SHARED_TAPS: the items' taps computed once per block where that kernel
    takes the layer, the per-item kernel elsewhere); ``direct-mma`` the direct kernel with ``group_mma``
    (DCN_FORWARD_GROUP_MMA: the tensor-core group kernel on the half types' groups of 1 to 16 and of 32 channels, the
    per-item or NCHW kernel elsewhere)."""
    if algo == "direct-taps":
        return {"algo": "direct", "shared_taps": True}
    if algo == "direct-mma":
        return {"algo": "direct", "group_mma": True}
    return {"algo": algo}


def run(batches: List[int], dtypes: List[str], warmup: int, iters: int, algos: List[str],
        graph: bool = True, breakdown: bool = False, layers: List[Layer] = LAYERS,
        on_row: Optional[Callable[[List[dict]], None]] = None, with_bias: bool = True,
        conv_channels_last: bool = False, channels_last: bool = False,
        channels_last_algo: str = "auto") -> List[dict]:
    """One row per (dtype, layer, batch): each implementation's error and median time (see :func:`measure`).

    with_bias: False runs every implementation without a bias (as DCN layers followed by batch norm are).
    conv_channels_last: also time cuDNN's convolution on channels-last copies of the input and weight (the layout
    cuDNN's half-precision kernels work in, and TensorRT's around a plugin), as ``conv_nhwc``.
    channels_last: that, and ours (algo channels_last_algo, auto by default) on channels-last tensors too
    (``DCN_FORWARD_CHANNELS_LAST``: the GEMM path with no transposes, or the channels-last direct kernel; the output
    channels-last), as ``ours_nhwc`` (the algo in each row's ``nhwc_algo``).

    on_row(rows) is called after each row (and after the breakdown), so a run cut short still leaves its rows.
    breakdown: after all timings (so the profiler cannot disturb them), the `gemm` path's kernels of each row where
    auto takes that path (8 or more channels per group: the dense rows and the grouped one), and with channels_last
    of the same on channels-last tensors.
    """
    import torch
    import torch.nn.functional as F
    import torchvision

    from dcn_deploy.ops import deform_conv2d
    from dcn_deploy.plugin.native import deform_conv2d_cuda, load_library

    kernels = load_library("kernels")
    torch.backends.cudnn.benchmark = True
    # where and what ran, in every row, so that --from-json renders the run's own header anywhere
    context = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "cuda": torch.version.cuda,
               "commit": git_commit(), "python": platform.python_version(), **tf32_settings(),
               **run_settings(iters, warmup, graph)}
    rows = []
    cases = []
    for dtype_name in dtypes:
        for layer in layers:
            for batch in batches:
                d = layer.dilation
                x, offset, weight, bias, mask = make_inputs(layer, batch, dtype_name, with_bias)

                def ours(algo):
                    if algo == "torch":  # the PyTorch op itself, as a user calls it
                        return lambda: deform_conv2d(x, offset, weight, bias, 1, d, d, mask)
                    if algo == "composite":
                        return lambda: on_composite(deform_conv2d, x, offset, weight, bias, 1, d, d, mask)
                    return lambda: deform_conv2d_cuda(x, offset, weight, bias, 1, d, d, mask,
                                                      **_cuda_options(algo), library=kernels)

                tv = lambda: torchvision.ops.deform_conv2d(x, offset, weight, bias, 1, d, d, mask)  # noqa: E731
                conv = lambda: F.conv2d(x, weight, bias, 1, d, d, layer.groups)  # noqa: E731

                row = {"layer": layer.name, "shape": f"{batch}x{layer.channels}x{layer.height}x{layer.width}",
                       "dtype": dtype_name, "bias": with_bias, **context}
                with torch.no_grad():
                    # the float64 reference: torchvision's op on the same (rounded) inputs, upcast; dcn_deploy's
                    # composite in float64 if torchvision fails
                    wide = [None if t is None else t.double() for t in (x, offset, weight, bias, mask)]
                    try:
                        reference = torchvision.ops.deform_conv2d(*wide[:4], 1, d, d, wide[4])
                        row["reference"] = "torchvision"
                    except Exception as exc:  # noqa: BLE001
                        print(f"torchvision's float64 reference failed ({_failure_text(exc)}); using dcn_deploy's "
                              "composite", file=sys.stderr)
                        try:
                            reference = on_composite(deform_conv2d, *wide[:4], 1, d, d, wide[4])
                            row["reference"] = "dcn_deploy composite"
                        except Exception as again:  # noqa: BLE001 - times without errors beat no row at all
                            print(f"no float64 reference ({_failure_text(again)}): errors are n/a", file=sys.stderr)
                            reference = None
                            row["reference"] = "none"
                    del wide
                    for algo in algos:
                        measure(row, f"ours_{algo}", ours(algo), reference, warmup, iters, graph)
                    measure(row, "torchvision", tv, reference, warmup, iters, graph)
                    measure(row, "conv", conv, None, warmup, iters, graph)
                    if dtype_name == "float32":  # the plain convolution at our float32 kernels' precision
                        measure(row, "conv_no_tf32", without_tf32(conv), None, warmup, iters, graph)
                    if conv_channels_last or channels_last:
                        nhwc = x.contiguous(memory_format=torch.channels_last)
                        nhwc_weight = weight.contiguous(memory_format=torch.channels_last)
                        measure(row, "conv_nhwc", lambda: F.conv2d(nhwc, nhwc_weight, bias, 1, d, d, layer.groups),
                                None, warmup, iters, graph)
                        if channels_last:
                            row["nhwc_algo"] = channels_last_algo
                            measure(row, "ours_nhwc",
                                    lambda: deform_conv2d_cuda(nhwc, offset, weight, bias, 1, d, d, mask,
                                                               **_cuda_options(channels_last_algo),
                                                               channels_last=True, library=kernels),
                                    reference, warmup, iters, graph)
                        del nhwc, nhwc_weight
                    del reference
                rows.append(row)
                if breakdown and layer.channels // layer.groups >= 8:  # where auto takes the GEMM path
                    cases.append((row, layer, batch, dtype_name))
                print(json.dumps(row), file=sys.stderr, flush=True)  # progress, and the raw numbers
                if on_row:
                    on_row(rows)
                x = offset = weight = bias = mask = None  # free the GPU memory before the next case
                torch.cuda.empty_cache()
    for row, layer, batch, dtype_name in cases:
        x, offset, weight, bias, mask = make_inputs(layer, batch, dtype_name, with_bias)
        d = layer.dilation
        nhwc = x.contiguous(memory_format=torch.channels_last) if channels_last else None
        for key, layout in (("gemm_kernels", None), ("gemm_nhwc_kernels", nhwc)):
            if key == "gemm_nhwc_kernels" and layout is None:
                continue
            try:
                with torch.no_grad():
                    row[key] = kernel_breakdown(
                        lambda: deform_conv2d_cuda(x if layout is None else layout, offset, weight, bias, 1, d, d,
                                                   mask, algo="gemm", channels_last=layout is not None,
                                                   library=kernels))
            except Exception as exc:  # noqa: BLE001 - the timings above stay
                row[f"{key}_failed"] = _failure_text(exc)
                print(f"breakdown failed on {row['layer']} {row['shape']} {dtype_name}: {row[f'{key}_failed']}",
                      file=sys.stderr)
        nhwc = None
        x = offset = weight = bias = mask = None  # free the GPU memory before the next case
        torch.cuda.empty_cache()
        if on_row:
            on_row(rows)
    return rows


def _run_context(rows: List[dict]) -> dict:
    """Device, torch, CUDA and commit of the run: from its rows, else (rows saved before they held them) from here."""
    import torch

    first = rows[0] if rows else {}
    context = {"torch": first.get("torch") or torch.__version__, "cuda": first.get("cuda") or torch.version.cuda,
               "commit": first.get("commit") or git_commit(), "device": first.get("device"),
               "python": first.get("python") or platform.python_version()}
    if not context["device"]:
        try:
            context["device"] = torch.cuda.get_device_name()
        except Exception:  # noqa: BLE001 - no GPU here (rendering saved rows)
            context["device"] = "unknown GPU"
    return context


def _ms_cell(r: dict, key: str) -> str:
    """A time in ms; 'fail' where it failed; a * where a CUDA graph could not be captured (eager time); a ! where
    its result was wrong (:func:`wrong_result`)."""
    ms = r.get(f"{key}_ms")
    if ms is None:
        return "fail" if r.get(f"{key}_failed") else "n/a"
    return (f"{ms:.3f}" + ("*" if r.get(f"{key}_timing") == "eager" else "")
            + ("!" if wrong_result(r, key) else ""))


def _err_cell(r: dict, key: str) -> str:
    err = r.get(f"{key}_err")
    return "n/a" if err is None else f"{err:.1e}"


# The C ABI's kernel options a run was made under (read by the kernels library from the environment:
# DCN_DEPLOY_GEMM_CHUNK_MB, _CHUNKS, _OUTPUT, _PRODUCT, _SPLIT_K, _TF32, _SAMPLER, _TILE_ITEMS,
# DCN_DEPLOY_IMPLICIT_TILE_M, _THREADS, _KERNEL, DCN_DEPLOY_CUBLAS_WORKSPACE_MB, DCN_DEPLOY_DIRECT_LAYOUT).
KERNEL_ENV_PREFIXES = ("DCN_DEPLOY_GEMM_", "DCN_DEPLOY_IMPLICIT_", "DCN_DEPLOY_CUBLAS_", "DCN_DEPLOY_DIRECT_")


def kernel_settings() -> str:
    """The kernel knobs set in this process's environment, as NAME=VALUE words (for the command line shown)."""
    return " ".join(f"{name}={os.environ[name]}" for name in sorted(os.environ)
                    if name.startswith(KERNEL_ENV_PREFIXES) and os.environ[name])


def _tf32_note(rows: List[dict]) -> str:
    """What the cuDNN columns ran under in float32: torch's TF32 setting of the run (rows saved before it was
    recorded: unknown), and the column timed without TF32."""
    if not any(r.get("dtype") == "float32" for r in rows):
        return ""
    settings = {r.get("cudnn_tf32") for r in rows if r.get("dtype") == "float32"}
    if settings == {True}:
        said = "with TF32 allowed (torch's default for cuDNN convolutions)"
    elif settings == {False}:
        said = "without TF32"
    else:
        said = "under a TF32 setting this run did not record"
    strict = (" `cuDNN conv2d without TF32` is the same convolution with TF32 off (IEEE float32 products, as ours and "
              "torchvision's)." if any("conv_no_tf32_ms" in r for r in rows) else "")
    return f" In float32, `cuDNN conv2d` ran {said}.{strict}"


def _saved_setting(rows: List[dict], key: str, default):
    """The rows' own value of a run setting (:func:`run_settings`) where they all have the same; else ``default``
    (rows saved before the rows held it, or rows of several runs: the renderer's arguments)."""
    values = {r.get(key) for r in rows}
    return values.pop() if len(values) == 1 and None not in values else default


def to_markdown(rows: List[dict], args) -> str:
    algos = args.algos.split(",")
    run_context = _run_context(rows)
    strict_conv = any("conv_no_tf32_ms" in r for r in rows)
    nhwc_conv = any("conv_nhwc_ms" in r for r in rows)
    nhwc_ours = any("ours_nhwc_ms" in r for r in rows)
    nhwc_algo = _saved_setting(rows, "nhwc_algo", "auto")
    iters = _saved_setting(rows, "iters", args.iters)
    warmup = _saved_setting(rows, "warmup", args.warmup)
    eager = _saved_setting(rows, "timing", "eager" if args.eager else "graph") == "eager"
    # rows saved before the rows held their settings were timed one run at a time, the host waiting after each
    order = ("back to back" if all(r.get("timing") for r in rows)
             else "one at a time (a host wait after each run)")
    date = _saved_setting(rows, "date_utc", datetime.date.today().isoformat())[:10]
    command = _saved_setting(rows, "command", command_line())
    wrong = any(wrong_result(r, f"ours_{a}") for r in rows for a in algos)
    lines = [
        f"## Deformable convolution, {run_context['device']} ({date})",
        "",
        f"commit `{run_context['commit']}`, torch {run_context['torch']}, CUDA {run_context['cuda']}, Python {run_context['python']}; "
        f"median of {iters} CUDA-event-timed "
        f"{'CUDA-graph replays (GPU time without Python launch overhead)' if not eager else 'eager calls'} "
        f"after {warmup} warm-up runs, {order} on the same tensors (no L2 flush: inputs that fit in L2 stay "
        "there between runs); v2 (mask), "
        f"{'with a bias' if all(r.get('bias', True) for r in rows) else 'no bias'}, 3x3, stride 1, "
        f"one offset group unless named, C = out channels. Errors are ||out - ref|| / ||ref|| against torchvision's op in float64 "
        f"on the same inputs. `fail`: that implementation raised (the reason is in the JSON rows and the log); "
        f"`*`: the call could not be captured in a CUDA graph, so that time is of eager calls."
        + (f" `!`: a wrong result (error over {ERROR_LIMITS['float16']:g} in half types, "
           f"{ERROR_LIMITS['float32']:g} in float32), left out of the best." if wrong else "")
        + _tf32_note(rows),
        "",
        f"command: `{command}`",
        "",
        "| layer | NxCxHxW | dtype | " + " | ".join(f"ours {a} ms" for a in algos)
        + " | torchvision ms | cuDNN conv2d ms | best speed-up vs torchvision | best / conv2d | "
        + ("cuDNN conv2d without TF32 ms | best / that | " if strict_conv else "")
        + ("cuDNN conv2d channels-last ms | best / that | " if nhwc_conv else "")
        + (f"ours channels-last{'' if nhwc_algo == 'auto' else f' ({nhwc_algo})'} ms | its speed-up vs torchvision | it / cuDNN channels-last | err channels-last | "
           if nhwc_ours else "")
        + " | ".join(f"err {a}" for a in algos) + " | err torchvision |",
        "| --- | --- | --- | " + " | ".join("---:" for _ in algos) + " | ---: | ---: | ---: | ---: | "
        + ("---: | ---: | " if strict_conv else "") + ("---: | ---: | " if nhwc_conv else "")
        + ("---: | ---: | ---: | ---: | " if nhwc_ours else "")
        + " | ".join("---:" for _ in algos) + " | ---: |",
    ]
    for r in rows:
        times = [r.get(f"ours_{a}_ms") for a in algos if not wrong_result(r, f"ours_{a}")]
        best = min((t for t in times if t is not None), default=None)
        tv, conv = r.get("torchvision_ms"), r.get("conv_ms")
        speedup = f"{tv / best:.2f}x" if tv and best else "n/a"
        to_conv = f"{best / conv:.2f}x" if conv and best else "n/a"
        strict = r.get("conv_no_tf32_ms")
        strict_cells = (f"{_ms_cell(r, 'conv_no_tf32')} | {f'{best / strict:.2f}x' if strict and best else 'n/a'} | "
                        if strict_conv else "")
        nhwc = r.get("conv_nhwc_ms")
        nhwc_cells = (f"{_ms_cell(r, 'conv_nhwc')} | {f'{best / nhwc:.2f}x' if nhwc and best else 'n/a'} | "
                      if nhwc_conv else "")
        if nhwc_ours:
            ours_nhwc = None if wrong_result(r, "ours_nhwc") else r.get("ours_nhwc_ms")
            nhwc_cells += (f"{_ms_cell(r, 'ours_nhwc')} | {f'{tv / ours_nhwc:.2f}x' if tv and ours_nhwc else 'n/a'} | "
                           f"{f'{ours_nhwc / nhwc:.2f}x' if nhwc and ours_nhwc else 'n/a'} | "
                           f"{_err_cell(r, 'ours_nhwc')} | ")
        lines.append(f"| {r['layer']} | {r['shape']} | {r['dtype']} | "
                     + " | ".join(_ms_cell(r, f"ours_{a}") for a in algos)
                     + f" | {_ms_cell(r, 'torchvision')} | {_ms_cell(r, 'conv')} | {speedup} | {to_conv} | "
                     + strict_cells + nhwc_cells
                     + " | ".join(_err_cell(r, f"ours_{a}") for a in algos) + f" | {_err_cell(r, 'torchvision')} |")
    other_references = sorted({r["reference"] for r in rows if r.get("reference", "torchvision") != "torchvision"})
    if other_references:
        lines += ["", f"Where torchvision's float64 op failed, the reference was {', '.join(other_references)} in float64."]
    failures = [(r, key[:-len("_failed")], r[key]) for r in rows for key in sorted(r) if key.endswith("_failed")]
    if failures:
        lines += ["", "Failures:", ""]
        lines += [f"- {r['layer']} {r['shape']} {r['dtype']}, {name}: {text}" for r, name, text in failures]
    return "\n".join(lines) + "\n"


def render(rows: List[dict], args) -> str:
    """The timing table, and the breakdown table where the rows have one."""
    table = to_markdown(rows, args)
    if any(r.get("gemm_kernels") for r in rows):
        table += "\nWhere the `gemm` path's time goes (torch.profiler, 10 eager calls):\n\n" + breakdown_markdown(rows)
    if any(r.get("gemm_nhwc_kernels") for r in rows):
        table += ("\nWhere the `gemm` path's time goes on channels-last tensors (torch.profiler, 10 eager calls):\n\n"
                  + breakdown_markdown(rows, key="gemm_nhwc_kernels", path="gemm, channels-last"))
    return table


PROFILE_LAYERS = {"res3": LAYERS[0], "res4": LAYERS[1], "res5": LAYERS[2], "seg": LAYERS[3],
                  "grouped": GROUPED_LAYERS[0], "depthwise": GROUPED_LAYERS[1],
                  "resnext-c4": next(layer for layer in GROUPED_LAYERS if layer.name.startswith("ResNeXt c4"))}


def profile_layer(algo: str = "gemm", at: str = "res4") -> int:
    """One call of the CUDA kernels' `algo` path (gemm, implicit, direct, direct-taps or direct-mma) on the layer
    `at` (a detection layer, seg res5, the grouped or depth-wise res4 layer, or ResNeXt c4), batch 8, float16,
    synchronised: the launch a profiler looks at."""
    import torch

    from dcn_deploy.plugin.native import deform_conv2d_cuda

    layer = PROFILE_LAYERS[at]
    x, offset, weight, bias, mask = make_inputs(layer, 8, "float16")
    # as the benchmark calls it: padding = dilation (seg res5's 2), so the output keeps the input's size
    deform_conv2d_cuda(x, offset, weight, bias, 1, layer.dilation, layer.dilation, mask, **_cuda_options(algo))
    torch.cuda.synchronize()
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", default="1,8", help="comma-separated batch sizes (default 1,8)")
    parser.add_argument("--dtypes", default="float16,float32", help="comma-separated dtypes (default float16,float32)")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--iters", type=int, default=50)
    parser.add_argument("--algos", default="auto",
                        help="comma-separated implementations to time side by side: the CUDA kernels auto, gemm, "
                             "fused, direct, direct-taps (direct with DCN_FORWARD_SHARED_TAPS: the items' taps "
                             "shared by a block, experimental), direct-mma (direct with DCN_FORWARD_GROUP_MMA: the "
                             "half types' groups of 1 to 16 on tensor cores, experimental), implicit, and torch "
                             "(dcn_deploy.ops.deform_conv2d, the PyTorch op a model runs when trained on the GPU) "
                             "(default auto)")
    parser.add_argument("--eager", action="store_true",
                        help="time eager calls (with Python's launch overhead) instead of CUDA-graph replays")
    parser.add_argument("--layers", default="issue", choices=sorted(LAYER_SETS),
                        help="issue: ResNet-50 res3-5 at 800x1333 and DeepLab res5 (default); grouped: grouped and "
                             "depth-wise layers at res4 size; all: both")
    parser.add_argument("--no-bias", action="store_true",
                        help="run every implementation without a bias (DCN layers followed by batch norm have none)")
    parser.add_argument("--conv-channels-last", action="store_true",
                        help="also time cuDNN's conv2d on channels-last input and weight (torch.channels_last), the "
                             "layout of its half-precision kernels and of TensorRT's layers around a plugin")
    parser.add_argument("--channels-last", action="store_true",
                        help="that, and ours (auto) on channels-last input and output too (DCN_FORWARD_CHANNELS_LAST: "
                             "the GEMM path reads and writes them where they are, with no transposes)")
    parser.add_argument("--channels-last-algo", default="auto",
                        choices=("auto", "gemm", "direct", "direct-taps", "direct-mma"),
                        help="the algo of ours on channels-last tensors (--channels-last): auto (default), gemm, "
                             "direct (the channels-last direct kernel: depth-wise layers and groups of 2 to 16 "
                             "channels, up to 32 bytes), direct-taps (that with shared taps, as in --algos) or "
                             "direct-mma (that with the tensor-core group kernel, as in --algos)")
    parser.add_argument("--breakdown", action="store_true",
                        help="also profile the gemm path's kernels (torch.profiler) and print where its time goes")
    parser.add_argument("--json", type=Path, default=None,
                        help="also write the raw rows to this JSON file (rewritten after every row)")
    parser.add_argument("--output", type=Path, default=None, help="append the table to this markdown file")
    parser.add_argument("--from-json", type=Path, default=None, metavar="ROWS.json",
                        help="time nothing: render the table of rows saved with --json (e.g. by a run cut short); "
                             "give the --algos of that run (rows saved before they held the run's settings also "
                             "need its --iters, --warmup and --eager)")
    parser.add_argument("--profile-layer", nargs="?", const="gemm", default=None,
                        choices=("gemm", "implicit", "direct", "direct-taps", "direct-mma"),
                        help="time nothing: run the gemm path (or the implicit-GEMM or the direct kernel: "
                             "--profile-layer implicit|direct|direct-taps|direct-mma) once on --profile-at's layer "
                             "(det res4 by default) at batch 8 in float16 and exit (for a profiler such as Nsight Compute: "
                             "`ncu --kernel-name regex:olumnsKernel ...`)")
    parser.add_argument("--profile-at", default="res4", choices=sorted(PROFILE_LAYERS),
                        help="the layer --profile-layer runs: det res3, res4 (default), res5, seg res5, the "
                             "grouped or depth-wise res4 layer of --layers grouped, or its ResNeXt c4 layer")
    args = parser.parse_args(argv)

    if args.profile_layer:
        return profile_layer(args.profile_layer, args.profile_at)
    algos = args.algos.split(",")
    unknown = sorted(set(algos) - set(ALGOS))
    if unknown:
        parser.error(f"--algos: unknown implementation(s) {unknown}; choose from {', '.join(ALGOS)}")
    # checked here, not when their turn comes: a bad value would fail every cell, or stop the run after minutes
    if args.iters < 1 or args.warmup < 0:
        parser.error(f"--iters must be >= 1 and --warmup >= 0, got {args.iters} and {args.warmup}")
    batches = [b.strip() for b in args.batches.split(",")]
    if not all(b.isdigit() and int(b) >= 1 for b in batches):
        parser.error(f"--batches takes comma-separated integers >= 1, e.g. 1,8; got {args.batches!r}")
    bad_dtypes = [d for d in args.dtypes.split(",") if d not in DTYPES]
    if bad_dtypes:
        parser.error(f"--dtypes: unknown {bad_dtypes}; choose from {', '.join(DTYPES)}")

    from dcn_deploy.io_utils import atomic_write_text

    if args.from_json:
        rows = json.loads(args.from_json.read_text())
    else:
        import torch

        if not torch.cuda.is_available():
            print("error: no CUDA device; this benchmark needs a GPU", file=sys.stderr)
            return 2
        save = (lambda rows: atomic_write_text(args.json, json.dumps(rows, indent=1))) if args.json else None
        rows = run([int(b) for b in batches], args.dtypes.split(","), args.warmup, args.iters, algos,
                   graph=not args.eager, breakdown=args.breakdown, layers=LAYER_SETS[args.layers], on_row=save,
                   with_bias=not args.no_bias, conv_channels_last=args.conv_channels_last,
                   channels_last=args.channels_last, channels_last_algo=args.channels_last_algo)
    table = render(rows, args)
    print(table)
    if args.output:
        previous = args.output.read_text() if args.output.exists() else "# Benchmark results\n"
        atomic_write_text(args.output, previous.rstrip("\n") + "\n\n" + table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
