#!/usr/bin/env python3
"""GPU speed of the deformable RoI pooling ops in PyTorch: the op (the CUDA kernels when the library is built) and
its torch composite, on benchmarks/cpu_roi_pool.py's cases (R-FCN's heads with 300 proposals, mmdetection's RoI
pooling with 1000, at an 800x1333 image's stride-16 feature map).

    python benchmarks/gpu_roi_pool.py                      # every case, float32 and float16, median of 50 runs
    python benchmarks/gpu_roi_pool.py --case rfcn_cls --dtypes float16 --json results.json

Times are CUDA-event medians of the forward alone, after warm-up. Before timing, each output is compared with the
composite's on the same inputs and GPU (max |difference| in the table).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Dict, List

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cpu_roi_pool import CASES, RoiCase, _inputs, _run_op  # noqa: E402
from gpu_deform_conv import time_cuda  # noqa: E402

from dcn_deploy.io_utils import atomic_write_text  # noqa: E402
from dcn_deploy.ops import native_paths  # noqa: E402
from dcn_deploy.ops.native_paths import composite_forward  # noqa: E402

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def run_case(case: RoiCase, dtype: torch.dtype, iterations: int, warmup: int) -> Dict[str, object]:
    cast = [t.cuda().to(dtype) for t in _inputs(case)]
    with torch.inference_mode():
        with composite_forward():
            want = _run_op(case, *cast).float()
        got = _run_op(case, *cast).float()
        # eager, not CUDA graphs: the op checks the RoIs' batch indices on the host
        op_ms = time_cuda(lambda: _run_op(case, *cast), warmup, iterations, graph=False)
        with composite_forward():
            composite_ms = time_cuda(lambda: _run_op(case, *cast), 2, max(5, iterations // 5), graph=False)
    return {"case": case.name, "describe": case.describe(), "dtype": str(dtype).replace("torch.", ""),
            "op_ms": op_ms, "composite_ms": composite_ms,
            "op_uses_kernels": native_paths.cuda_library_for(cast[0]) is not None,
            "max_abs_diff": float((got - want).abs().max())}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--case", action="append", choices=sorted(CASES), help="repeatable; default: all")
    parser.add_argument("--dtypes", default="float32,float16", help="comma-separated: float32, float16, bfloat16")
    parser.add_argument("--iterations", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--json", help="also write the raw numbers here")
    args = parser.parse_args()
    if args.iterations < 1 or args.warmup < 0:
        parser.error(f"--iterations must be >= 1 and --warmup >= 0, got {args.iterations} and {args.warmup}")
    if not torch.cuda.is_available():
        parser.error("needs a CUDA GPU (torch.cuda.is_available() is False); for the CPU: benchmarks/cpu_roi_pool.py")
    unknown = [d for d in args.dtypes.split(",") if d not in DTYPES]
    if unknown:
        parser.error(f"--dtypes: unknown {unknown}; choose from {', '.join(DTYPES)}")
    rows: List[Dict[str, object]] = [run_case(CASES[name], DTYPES[d], args.iterations, args.warmup)
                                     for d in args.dtypes.split(",") for name in (args.case or CASES)]
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}")
    print("| case | dtype | PyTorch op median ms | composite median ms | composite / op | op runs the kernels | "
          "max abs diff |")
    print("| --- | --- | ---: | ---: | ---: | --- | ---: |")
    for row in rows:
        print(f"| {row['describe']} | {row['dtype']} | {row['op_ms']:.3f} | {row['composite_ms']:.3f} | "
              f"{row['composite_ms'] / row['op_ms']:.1f}x | {row['op_uses_kernels']} | {row['max_abs_diff']:.1e} |")
    if args.json:
        atomic_write_text(args.json, json.dumps({"device": torch.cuda.get_device_name(), "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
