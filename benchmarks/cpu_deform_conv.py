#!/usr/bin/env python3
"""CPU speed of dcn_deploy.deform_conv2d against ONNX Runtime's native DeformConv, with torch's conv2d of the
same shape as a floor (what the convolution costs with no sampling at all).

    python benchmarks/cpu_deform_conv.py                       # the three 64x64 cases, 2 threads, median of 20 runs
    python benchmarks/cpu_deform_conv.py --threads 1 --iterations 50 --json results.json
    python benchmarks/cpu_deform_conv.py --case dense --case depthwise
    python benchmarks/cpu_deform_conv.py --channels-last        # also dcn_deploy on a channels-last input

Every case runs forward only (inference: torch.inference_mode), float32, NCHW, with a mask (DCNv2).
The implementations are timed round-robin (one call of each per round) so that a change of machine load hits
them alike; the table gives the median and the minimum over the rounds, and each time divided by ONNX Runtime's.
Before timing, the outputs of dcn_deploy and ONNX Runtime are compared (max |difference| in the table).
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Dict, List

import numpy as np
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))  # the one-node ONNX DeformConv builder shared with the tests
from ort_reference import OrtDeformConv  # noqa: E402

from dcn_deploy import deform_conv2d  # noqa: E402
from dcn_deploy.io_utils import atomic_write_text  # noqa: E402


@dataclass(frozen=True)
class BenchCase:
    name: str
    n: int = 1
    channels: int = 256
    out_channels: int = 256
    size: int = 64
    kernel: int = 3
    groups: int = 1
    offset_groups: int = 1
    with_mask: bool = True

    def describe(self) -> str:
        mask = "mask" if self.with_mask else "no mask"
        return (f"N={self.n} C={self.channels} OC={self.out_channels} {self.size}x{self.size} {self.kernel}x{self.kernel} "
                f"groups={self.groups} offset_groups={self.offset_groups} {mask}")


CASES = {
    "dense": BenchCase("dense"),
    "grouped": BenchCase("grouped", groups=32, offset_groups=4),
    "depthwise": BenchCase("depthwise", groups=256),
    # larger inputs (64 MiB, 64 MiB and 36 MiB in float32), only when named: --case grouped_large
    "dense_large": BenchCase("dense_large", n=4, size=128),
    "grouped_large": BenchCase("grouped_large", n=4, size=128, groups=32, offset_groups=4),
    "depthwise_large": BenchCase("depthwise_large", n=8, channels=128, out_channels=128, size=96, groups=128),
    # ResNeXt-50 32x4d's deformable c4 layer (32 groups of 16, one offset group) at a 512x512 input's stride 16
    "resnext_c4": BenchCase("resnext_c4", channels=512, out_channels=512, size=32, groups=32),
    # its c5 layer (32 groups of 32) at the same input's stride 32
    "resnext_c5": BenchCase("resnext_c5", channels=1024, out_channels=1024, size=16, groups=32),
}
DEFAULT_CASES = ("dense", "grouped", "depthwise")


def make_inputs(case: BenchCase, seed: int = 0) -> Dict[str, np.ndarray]:
    """Random float32 inputs; offsets of a few pixels (some samples leave the image), mask in (0, 1)."""
    rng = np.random.default_rng(seed)
    k = case.kernel * case.kernel
    pad = case.kernel // 2
    inputs = {
        "x": rng.standard_normal((case.n, case.channels, case.size, case.size), dtype=np.float32),
        "weight": rng.standard_normal((case.out_channels, case.channels // case.groups, case.kernel, case.kernel),
                                      dtype=np.float32) * 0.05,
        "bias": rng.standard_normal(case.out_channels, dtype=np.float32),
        "offset": rng.uniform(-2.5, 2.5, (case.n, 2 * case.offset_groups * k, case.size, case.size)).astype(np.float32),
    }
    if case.with_mask:
        inputs["mask"] = rng.uniform(0, 1, (case.n, case.offset_groups * k, case.size, case.size)).astype(np.float32)
    assert case.size + 2 * pad - case.kernel + 1 == case.size  # "same" convolution
    return inputs


def build_runners(case: BenchCase, inputs: Dict[str, np.ndarray], threads: int,
                  channels_last: bool = False) -> Dict[str, Callable[[], object]]:
    """Name -> a zero-argument callable that runs one forward pass; ``channels_last`` adds dcn_deploy on the same
    input laid out channels-last (torch.channels_last; its output is channels-last too)."""
    pad = case.kernel // 2
    t = {name: torch.from_numpy(a) for name, a in inputs.items()}
    mask = t.get("mask")
    ort = OrtDeformConv(inputs["x"].shape, inputs["offset"].shape, inputs["weight"], inputs["bias"],
                        None if mask is None else inputs["mask"].shape, padding=(pad, pad), threads=threads)

    def run_dcn_deploy():
        with torch.inference_mode():
            return deform_conv2d(t["x"], t["offset"], t["weight"], t["bias"], padding=pad, mask=mask)

    def run_ort():
        return ort(inputs["x"], inputs["offset"], inputs.get("mask"))

    def run_conv2d():
        with torch.inference_mode():
            return F.conv2d(t["x"], t["weight"], t["bias"], padding=pad, groups=case.groups)

    runners = {"dcn_deploy": run_dcn_deploy, "onnxruntime": run_ort, "torch conv2d (floor)": run_conv2d}
    if channels_last:
        x_last = t["x"].contiguous(memory_format=torch.channels_last)

        def run_dcn_deploy_channels_last():
            with torch.inference_mode():
                return deform_conv2d(x_last, t["offset"], t["weight"], t["bias"], padding=pad, mask=mask)

        runners["dcn_deploy, channels-last input"] = run_dcn_deploy_channels_last
    return runners


def time_round_robin(runners: Dict[str, Callable[[], object]], warmup: int, iterations: int) -> Dict[str, List[float]]:
    """Seconds per call of each runner, measured one call of each per round."""
    for _ in range(warmup):
        for run in runners.values():
            run()
    times: Dict[str, List[float]] = {name: [] for name in runners}
    for _ in range(iterations):
        for name, run in runners.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return times


def run_case(case: BenchCase, threads: int, warmup: int, iterations: int, channels_last: bool = False) -> dict:
    inputs = make_inputs(case)
    runners = build_runners(case, inputs, threads, channels_last)
    ours = runners["dcn_deploy"]().numpy()
    reference = runners["onnxruntime"]()
    max_diff = float(np.abs(ours - reference).max())
    times = time_round_robin(runners, warmup, iterations)
    ort_median = statistics.median(times["onnxruntime"])
    rows = []
    for name, samples in times.items():
        median = statistics.median(samples)
        rows.append(dict(implementation=name, median_ms=median * 1e3, min_ms=min(samples) * 1e3,
                         ratio_to_ort=median / ort_median))
    return dict(case=asdict(case), description=case.describe(), max_abs_diff_vs_ort=max_diff,
                output_max_abs=float(np.abs(reference).max()), rows=rows)


def markdown_table(results: List[dict]) -> str:
    lines = ["| case | implementation | median ms | min ms | / ORT |", "| --- | --- | ---: | ---: | ---: |"]
    for result in results:
        for row in result["rows"]:
            lines.append(f"| {result['case']['name']} | {row['implementation']} | {row['median_ms']:.2f} | "
                         f"{row['min_ms']:.2f} | {row['ratio_to_ort']:.2f}x |")
    lines.append("")
    for result in results:
        lines.append(f"- {result['case']['name']}: {result['description']}; max |dcn_deploy - ORT| = "
                     f"{result['max_abs_diff_vs_ort']:.2e} (outputs up to {result['output_max_abs']:.1f})")
    return "\n".join(lines)


def environment(threads: int) -> dict:
    import onnxruntime

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return dict(cpu=cpu, threads=threads, torch=torch.__version__, onnxruntime=onnxruntime.__version__,
                python=platform.python_version())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2, help="intra-op threads for torch and ONNX Runtime (default 2)")
    parser.add_argument("--iterations", type=int, default=20, help="timed rounds (default 20)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed rounds first (default 3)")
    parser.add_argument("--case", action="append", choices=sorted(CASES),
                        help=f"run only this case (repeatable; default: {', '.join(DEFAULT_CASES)})")
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    parser.add_argument("--channels-last", action="store_true",
                        help="also time dcn_deploy on the input laid out channels-last (torch.channels_last)")
    args = parser.parse_args(argv)
    if args.threads < 1 or args.iterations < 1 or args.warmup < 0:
        parser.error("--threads and --iterations must be >= 1, --warmup >= 0")

    torch.set_num_threads(args.threads)
    env = environment(args.threads)
    results = [run_case(CASES[name], args.threads, args.warmup, args.iterations, args.channels_last)
               for name in (args.case or DEFAULT_CASES)]
    print(f"CPU: {env['cpu']}; threads={env['threads']}; torch {env['torch']}; onnxruntime {env['onnxruntime']}; "
          f"median of {args.iterations} rounds after {args.warmup} warm-up\n")
    print(markdown_table(results))
    if args.json:
        payload = dict(environment=env, iterations=args.iterations, warmup=args.warmup, results=results)
        atomic_write_text(args.json, json.dumps(payload, indent=2) + "\n")
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
