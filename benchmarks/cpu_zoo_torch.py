#!/usr/bin/env python3
"""CPU latency of a zoo model's PyTorch forward, run three ways, alternately: as the ops choose (compiled forwards
of the host library when it is built), with only the RoI pooling ops on their torch composites, and with every op
on its composite (``composite_forward``).

    python benchmarks/cpu_zoo_torch.py                              # R-FCN ResNet-50, 256x256, 100 RoIs, 1 thread
    python benchmarks/cpu_zoo_torch.py --model resnet50_dcnv2_c3c5 --size 224 --iterations 10

Random weights and inputs (``models.zoo``), float32, torch.inference_mode; medians of ``--iterations`` runs after
2 warm-up runs, each mode timed in turn so that a change of load hits all three.
"""
from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Dict, Iterator, List

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from dcn_deploy.ops import native_paths  # noqa: E402
from dcn_deploy.ops import roi_pool  # noqa: E402
from models import zoo  # noqa: E402


@contextlib.contextmanager
def roi_pooling_on_composites() -> Iterator[None]:
    """The RoI pooling ops' forwards on their composites; deformable convolution as the ops choose."""
    real = roi_pool._forward

    def composite_only(native, composite, input, rois, shifts, *params):
        with torch.no_grad():
            return composite(input, rois, shifts, *params)

    roi_pool._forward = composite_only
    try:
        yield
    finally:
        roi_pool._forward = real


MODES: Dict[str, Callable[[], contextlib.AbstractContextManager]] = {
    "as the ops choose": contextlib.nullcontext,
    "RoI pooling on composites": roi_pooling_on_composites,
    "every op on composites": native_paths.composite_forward,
}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="rfcn_resnet50_dcn", choices=zoo.names())
    parser.add_argument("--size", type=int, default=256, help="input height and width")
    parser.add_argument("--rois", type=int, default=100, help="RoIs per image (detection models)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--iterations", type=int, default=7)
    args = parser.parse_args(argv)
    if args.threads < 1 or args.iterations < 1 or args.size < 1 or args.rois < 1:
        parser.error(f"--threads, --iterations, --size and --rois must be >= 1; got {args.threads}, "
                     f"{args.iterations}, {args.size}, {args.rois}")
    torch.set_num_threads(args.threads)
    entry = zoo.get(args.model)
    model = entry.build()
    inputs = entry.example_inputs(size=(args.size, args.size), rois_per_image=args.rois) \
        if entry.needs_roi_pool else entry.example_inputs(size=(args.size, args.size))
    times: Dict[str, List[float]] = {mode: [] for mode in MODES}
    with torch.inference_mode():
        reference = None
        for mode, context in MODES.items():
            with context():
                out = model(*inputs)
                model(*inputs)  # second warm-up run
            out = out[0] if isinstance(out, (tuple, list)) else out
            reference = out if reference is None else reference
            print(f"{mode}: max |difference| from the first mode {float((out - reference).abs().max()):.1e}")
        for _ in range(args.iterations):
            for mode, context in MODES.items():
                with context():
                    start = time.perf_counter()
                    model(*inputs)
                    times[mode].append((time.perf_counter() - start) * 1e3)
    compiled = native_paths.cpu_library_for(inputs[0]) is not None
    print(f"{args.model}, {args.size}x{args.size}{f', {args.rois} RoIs' if entry.needs_roi_pool else ''}, "
          f"{args.threads} thread(s), torch {torch.__version__}; host library {'used' if compiled else 'NOT BUILT'}")
    print("| mode | median ms | min ms |")
    print("| --- | ---: | ---: |")
    for mode, values in times.items():
        print(f"| {mode} | {statistics.median(values):.1f} | {min(values):.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
