#!/usr/bin/env python3
"""CPU speed of the deformable RoI pooling ops: as exported (their ONNX function bodies run by ONNX Runtime) and
in PyTorch (the op, which runs the host library's compiled CPU forward when it is built, and its torch composite).

    python benchmarks/cpu_roi_pool.py                          # all cases, 1 thread, median of 10 runs
    python benchmarks/cpu_roi_pool.py --case rfcn_cls --iterations 20 --json results.json

Each case is one node (``dcn_deploy::DeformPSRoIPool`` or ``dcn_deploy::DeformRoIPool``) at a detector's sizes:
an 800x1333 image at stride 16 (a 50x84 feature map), R-FCN's heads with 300 proposals (Dai et al. 2017) and
mmdetection's deformable RoI pooling with 1000. Before timing, ONNX Runtime's output and the op's are compared with
the composite's (max |difference| in the table).
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Dict, List

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import TensorProto, helper

from dcn_deploy.io_utils import atomic_write_text
from dcn_deploy.onnx import opset, roi_opset
from dcn_deploy.ops import native_paths
from dcn_deploy.ops.native_paths import composite_forward
from dcn_deploy.ops.roi_pool import deform_psroi_pool, deform_roi_pool

HEIGHT, WIDTH, STRIDE = 50, 84, 16


@dataclass(frozen=True)
class RoiCase:
    name: str
    op: str
    rois: int
    channels: int  # input channels
    output_dim: int = 0  # PS RoI pooling only
    classes: int = 1  # offset classes (PS RoI pooling): class-specific offsets when == output_dim
    no_trans: int = 0
    pooled: int = 7
    samples: int = 4  # sample_per_part, or sampling_ratio

    def describe(self) -> str:
        if self.op == roi_opset.DEFORM_ROI_POOL:
            return f"DeformRoIPool C={self.channels} {self.pooled}x{self.pooled} ratio={self.samples} K={self.rois}"
        offsets = "no offsets" if self.no_trans else f"{self.classes} offset class(es)"
        return (f"DeformPSRoIPool output_dim={self.output_dim} {self.pooled}x{self.pooled} S={self.samples} "
                f"{offsets} K={self.rois}")


CASES = {
    "rfcn_cls": RoiCase("rfcn_cls", roi_opset.DEFORM_PSROI_POOL, 300, 21 * 49, output_dim=21, classes=21),
    "rfcn_bbox": RoiCase("rfcn_bbox", roi_opset.DEFORM_PSROI_POOL, 300, 8 * 49, output_dim=8, classes=1),
    "rfcn_offsets": RoiCase("rfcn_offsets", roi_opset.DEFORM_PSROI_POOL, 300, 42 * 49, output_dim=42, no_trans=1),
    "mmdet_roi": RoiCase("mmdet_roi", roi_opset.DEFORM_ROI_POOL, 1000, 256, samples=2),
}


def _inputs(case: RoiCase, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(1, case.channels, HEIGHT, WIDTH, generator=gen)
    corner = torch.rand(case.rois, 2, generator=gen) * torch.tensor([WIDTH * STRIDE, HEIGHT * STRIDE]) * 0.9
    size = torch.rand(case.rois, 2, generator=gen) * 400 + 16
    rois = torch.cat([torch.zeros(case.rois, 1), corner, corner + size], dim=1)
    shifts = 2 if case.op == roi_opset.DEFORM_ROI_POOL else 2 * case.classes
    offsets = torch.randn(case.rois, shifts, case.pooled, case.pooled, generator=gen) * 0.3
    return x, rois, offsets


def _model(case: RoiCase) -> onnx.ModelProto:
    names = ["X", "rois", "offset"]
    if case.op == roi_opset.DEFORM_ROI_POOL:
        attrs = dict(pooled_height=case.pooled, pooled_width=case.pooled, spatial_scale=1 / STRIDE,
                     sampling_ratio=case.samples, gamma=0.1)
    else:
        attrs = dict(spatial_scale=1 / STRIDE, output_dim=case.output_dim, group_size=case.pooled,
                     pooled_size=case.pooled, sample_per_part=case.samples, trans_std=0.1, no_trans=case.no_trans)
    node = helper.make_node(case.op, names, ["Y"], domain=opset.DOMAIN, **attrs)
    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in names]
    graph = helper.make_graph([node], case.name, inputs, [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    opset.attach_functions(model)
    return model


def _run_op(case: RoiCase, x, rois, offsets) -> torch.Tensor:
    """The PyTorch op of ``case``: its compiled forward where the library is built, else (and under
    ``composite_forward``, the reference) its composite."""
    if case.op == roi_opset.DEFORM_ROI_POOL:
        return deform_roi_pool(x, rois, offsets, case.pooled, 1 / STRIDE, case.samples, 0.1)
    return deform_psroi_pool(x, rois, None if case.no_trans else offsets, 1 / STRIDE, case.output_dim, case.pooled,
                             case.pooled, case.pooled, case.samples, 0.1, bool(case.no_trans))


def _times_ms(call, iterations: int) -> List[float]:
    times = []
    for _ in range(iterations):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1e3)
    return times


def run_case(case: RoiCase, threads: int, iterations: int, warmup: int) -> Dict[str, object]:
    x, rois, offsets = _inputs(case)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(_model(case).SerializeToString(), options, providers=["CPUExecutionProvider"])
    feed = {"X": x.numpy(), "rois": rois.numpy(), "offset": offsets.numpy()}
    with torch.inference_mode():
        with composite_forward():
            want = _run_op(case, x, rois, offsets).numpy()
        got = session.run(None, feed)[0]
        op_out = _run_op(case, x, rois, offsets).numpy()
        for _ in range(warmup):
            session.run(None, feed)
            _run_op(case, x, rois, offsets)
        ort_ms = _times_ms(lambda: session.run(None, feed), iterations)
        op_ms = _times_ms(lambda: _run_op(case, x, rois, offsets), iterations)
        with composite_forward():
            composite_ms = _times_ms(lambda: _run_op(case, x, rois, offsets), max(3, iterations // 3))
    return {"case": asdict(case), "describe": case.describe(), "ort_median_ms": statistics.median(ort_ms),
            "ort_min_ms": min(ort_ms), "op_median_ms": statistics.median(op_ms), "op_min_ms": min(op_ms),
            "op_compiled": native_paths.cpu_library_for(x) is not None,
            "composite_median_ms": statistics.median(composite_ms),
            "max_abs_diff": float(np.abs(got - want).max()), "op_max_abs_diff": float(np.abs(op_out - want).max())}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--case", action="append", choices=sorted(CASES), help="repeatable; default: all")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads for ONNX Runtime and torch")
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--json", help="also write the raw numbers here")
    args = parser.parse_args(argv)
    if args.threads < 1 or args.iterations < 1 or args.warmup < 0:
        parser.error(f"--threads and --iterations must be >= 1, --warmup >= 0; got {args.threads}, {args.iterations}, "
                     f"{args.warmup}")
    torch.set_num_threads(args.threads)
    rows = [run_case(CASES[name], args.threads, args.iterations, args.warmup) for name in (args.case or CASES)]
    print(f"ONNX Runtime {ort.__version__}, torch {torch.__version__}, {args.threads} thread(s), "
          f"{platform.processor() or platform.machine()}")
    op = "PyTorch op (compiled CPU forward)" if rows and rows[0]["op_compiled"] else "PyTorch op (composite)"
    print(f"| case | ONNX Runtime median (min) ms | {op} median (min) ms | PyTorch composite median ms | "
          "max abs diff: ORT, op |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for row in rows:
        print(f"| {row['describe']} | {row['ort_median_ms']:.1f} ({row['ort_min_ms']:.1f}) | "
              f"{row['op_median_ms']:.1f} ({row['op_min_ms']:.1f}) | {row['composite_median_ms']:.1f} | "
              f"{row['max_abs_diff']:.1e}, {row['op_max_abs_diff']:.1e} |")
    if args.json:
        atomic_write_text(args.json, json.dumps({"threads": args.threads, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
