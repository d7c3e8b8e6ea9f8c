"""GPU micro-benchmark: does cuBLAS multiply the GEMM path's operand layouts as fast as torchvision's?

The GEMM path's columns hold the reduction K = C * kH * kW contiguous per pixel (cols[pixel][K], as the
channels-last sampler writes them). torchvision's deform_conv2d samples columns with the pixels contiguous
(cols[K][pixel]). In float32 on an H100 (09f36e1, benchmarks/RESULTS.md), cuBLAS ran our products with
`sm80_xmma_gemm_f32f32_f32f32_f32_tn_n` FFMA kernels at about 36-38 TFLOP/s, while torchvision's whole layer was
1.3x to 1.5x faster than ours. Is the layout the reason?

This times each layer's whole product, at the given batch, in four layouts, as plain torch.mm calls (cuBLAS
underneath). TF32 is off, so float32 is IEEE as in our path. In cuBLAS's column-major terms (op(A) is m x k, B is
k x n):

    staged       our default where the output rows are not 16-byte aligned: T,N with m = oC (A = weights[oC][K],
                 B = cols[pixel][K]), into a pixel-major scratch     torch.mm(cols, weights.t())
    direct       our default for one group where they are: T,N with m = pixels (A = cols, B = weights), into NCHW
                                                                    torch.mm(weights, cols.t())
    nn_option    DCN_DEPLOY_GEMM_PRODUCT=nn: N,N with m = oC (A = weights re-laid out [K][oC], B = cols[pixel][K])
                                                                    torch.mm(cols, weights_k_major)
    torchvision  N,N with m = pixels (A = cols[K][pixel], B = weights[oC][K]): its columns pixel-contiguous, a
                 layout our sampler does not write                  torch.mm(weights, cols_t)

The NN option gives cuBLAS the same transposes as torchvision's call, with the roles of the pixels and the output
channels swapped; only this table says whether that is enough. `staged_bmm` is the staged product as a batch of one
(torch.bmm: cuBLAS's strided-batched call, as the GEMM path makes it). Times are medians of CUDA-event-timed
CUDA-graph replays.

`--blas cublas,cublaslt` times every layout once under each of torch's BLAS back ends
(torch.backends.cuda.preferred_blas_library): on an H100 (session 25) float32 det res5 at batch 1 took 0.130 ms as
torch.mm but 0.219 inside our layer, whose cuBLAS handle chose a 32x32-tile kernel whether called strided-batched or
as cublasGemmEx; this says whether torch's speed comes from cuBLASLt's heuristic. Needs a GPU:

    python benchmarks/gemm_layouts.py [--batch 8] [--dtypes float32,float16] [--blas default|cublas,cublaslt]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Dict, List

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from gpu_deform_conv import LAYERS, time_cuda  # noqa: E402  (the benchmark's layers and timer)

LAYOUTS = ("staged", "staged_bmm", "direct", "nn_option", "torchvision")


def product_sizes(layer, batch: int) -> Dict[str, int]:
    """(M, N, K) of a layer's whole product: oC output channels, batch * oH * oW pixels, C * 9 (3x3, stride 1)."""
    return {"out_channels": layer.channels, "pixels": batch * layer.height * layer.width, "k": layer.channels * 9}


def time_layouts(layer, batch: int, dtype_name: str, warmup: int, iters: int) -> Dict[str, float]:
    """Median milliseconds of the layer's product in each of LAYOUTS, on random operands of dtype_name."""
    import torch

    sizes = product_sizes(layer, batch)
    dtype = getattr(torch, dtype_name)
    g = torch.Generator(device="cuda").manual_seed(0)
    weights = torch.randn(sizes["out_channels"], sizes["k"], device="cuda", dtype=dtype, generator=g)
    weights_k_major = weights.t().contiguous()
    times = {}
    cols = torch.randn(sizes["pixels"], sizes["k"], device="cuda", dtype=dtype, generator=g)
    times["staged"] = time_cuda(lambda: torch.mm(cols, weights.t()), warmup, iters)
    times["staged_bmm"] = time_cuda(lambda: torch.bmm(cols[None], weights.t()[None]), warmup, iters)
    times["direct"] = time_cuda(lambda: torch.mm(weights, cols.t()), warmup, iters)
    times["nn_option"] = time_cuda(lambda: torch.mm(cols, weights_k_major), warmup, iters)
    del cols
    cols_t = torch.randn(sizes["k"], sizes["pixels"], device="cuda", dtype=dtype, generator=g)
    times["torchvision"] = time_cuda(lambda: torch.mm(weights, cols_t), warmup, iters)
    del cols_t
    torch.cuda.empty_cache()
    return times


def to_markdown(rows: List[dict]) -> str:
    """One line per (layer, dtype): each layout's milliseconds and TFLOP/s, and the best of ours against
    torchvision's."""
    lines = ["| layer | product (oC x pixels x K) | dtype | BLAS | "
             + " | ".join(f"{name} ms (TFLOP/s)" for name in LAYOUTS) + " | best of ours / torchvision |",
             "| --- | --- | --- | --- | " + " | ".join("---:" for _ in LAYOUTS) + " | ---: |"]
    for r in rows:
        flop = 2.0 * r["out_channels"] * r["pixels"] * r["k"]
        cells = [f"{r[name + '_ms']:.3f} ({flop / r[name + '_ms'] / 1e9:.1f})" for name in LAYOUTS]
        ours = min(r[name + "_ms"] for name in LAYOUTS if name != "torchvision")
        lines.append(f"| {r['layer']} | {r['out_channels']} x {r['pixels']} x {r['k']} | {r['dtype']} | "
                     f"{r.get('blas', 'default')} | "
                     + " | ".join(cells) + f" | {ours / r['torchvision_ms']:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=8, help="images whose pixels form one product (default 8)")
    parser.add_argument("--dtypes", default="float32,float16", help="comma-separated (default float32,float16)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--blas", default="default",
                        help="comma-separated torch BLAS back ends to time under: default, cublas, cublaslt")
    args = parser.parse_args(argv)
    backends = args.blas.split(",")
    unknown = [name for name in backends if name not in ("default", "cublas", "cublaslt")]
    if unknown:
        parser.error(f"--blas takes default, cublas or cublaslt, got {', '.join(unknown)}")
    if args.batch < 1:
        parser.error(f"--batch must be at least 1, got {args.batch}")
    if args.iters < 1 or args.warmup < 0:
        parser.error(f"--iters must be >= 1 and --warmup >= 0, got {args.iters} and {args.warmup}")
    import torch

    if not torch.cuda.is_available():
        print("error: no CUDA device; this benchmark needs a GPU", file=sys.stderr)
        return 2
    torch.backends.cuda.matmul.allow_tf32 = False  # IEEE float32, as the GEMM path's cuBLAS calls
    rows = []
    default_blas = torch.backends.cuda.preferred_blas_library()  # torch's own choice, put back for "default" rows
    for blas in backends:
        torch.backends.cuda.preferred_blas_library(default_blas if blas == "default" else blas)
        for dtype_name in args.dtypes.split(","):
            for layer in LAYERS:
                times = time_layouts(layer, args.batch, dtype_name, args.warmup, args.iters)
                rows.append({"layer": layer.name, "dtype": dtype_name, "blas": blas,
                             **product_sizes(layer, args.batch), **{f"{name}_ms": times[name] for name in LAYOUTS}})
                print(rows[-1], file=sys.stderr, flush=True)
    print(f"cuBLAS products in two operand layouts, {torch.cuda.get_device_name()}, batch {args.batch}, "
          f"median of {args.iters} CUDA-graph replays:\n")
    print(to_markdown(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
