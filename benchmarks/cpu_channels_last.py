#!/usr/bin/env python3
"""CPU speed of the host library's channels-last copy (dcn_channels_last_cpu: every CPU forward's first step on an
NCHW input, and the dense forward's table) against torch's permuted copy, into a buffer allocated once.

    python benchmarks/cpu_channels_last.py                                  # the built library, one thread
    python benchmarks/cpu_channels_last.py --library old.so --library build/native/lib/libdcn_deploy_host.so

With --library given more than once, each library is a column: builds compared side by side, timed round-robin (one
call of each per round) so that a change of machine load hits them alike. Each copy is checked bit for bit against
torch's first. Times are medians over the rounds, in ms and in ns an element.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import List, Optional

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from dcn_deploy.plugin.native import DTYPE_CODES, NativeLibrary, load_library  # noqa: E402

# (N, C, H, W): the CPU benchmark's 64x64 layers' input, ResNeXt c5's, an RGB image, a larger map, odd sizes
SHAPES = [(1, 256, 64, 64), (1, 1024, 16, 16), (1, 3, 224, 224), (4, 64, 128, 128), (1, 1000, 7, 9)]


def copy_with(library: NativeLibrary, x: torch.Tensor, out: torch.Tensor, threads: int) -> None:
    n, c, h, w = x.shape
    library.call("dcn_channels_last_cpu", DTYPE_CODES[str(x.dtype).replace("torch.", "")], x.data_ptr(),
                 out.data_ptr(), n, c, h * w, threads)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--library", action="append", type=Path,
                        help="a host library to time (repeatable; default: the one dcn_deploy finds)")
    parser.add_argument("--dtype", choices=["float32", "float16", "float64"], default="float32")
    parser.add_argument("--threads", type=int, default=1, help="threads for both copies (default 1)")
    parser.add_argument("--iterations", type=int, default=50, help="timed rounds (default 50)")
    args = parser.parse_args(argv)
    if args.threads < 1 or args.iterations < 1:
        parser.error("--threads and --iterations must be >= 1")
    torch.set_num_threads(args.threads)
    libraries = {}
    for path in args.library or []:
        try:
            libraries[str(path)] = NativeLibrary(path)
        except OSError as exc:
            parser.error(f"--library {path}: cannot load it as a host library ({exc}); give the path of a built "
                         "libdcn_deploy_host.so")
    if not libraries:
        libraries["dcn_deploy"] = load_library("host")
    dtype = getattr(torch, args.dtype)

    names = list(libraries) + ["torch permuted copy"]
    print("| N, C, H, W | " + " | ".join(f"{name} ms (ns/elem)" for name in names) + " |")
    print("| --- | " + " | ".join("---:" for _ in names) + " |")
    for shape in SHAPES:
        x = torch.randn(shape).to(dtype)
        expected = x.permute(0, 2, 3, 1).contiguous()
        out = torch.empty_like(expected)
        copies = {name: (lambda lib=lib: copy_with(lib, x, out, args.threads)) for name, lib in libraries.items()}
        copies["torch permuted copy"] = lambda: out.copy_(x.permute(0, 2, 3, 1))
        for name, copy in copies.items():
            out.fill_(float("nan"))
            copy()
            if not torch.equal(out, expected):
                raise SystemExit(f"error: {name}'s copy of {shape} differs from torch's permuted copy")
        times = {name: [] for name in copies}
        for _ in range(args.iterations):
            for name, copy in copies.items():
                start = time.perf_counter()
                copy()
                times[name].append(time.perf_counter() - start)
        cells = []
        for name in names:
            median = statistics.median(times[name])
            cells.append(f"{median * 1e3:.3f} ({median * 1e9 / x.numel():.2f})")
        print(f"| {', '.join(map(str, shape))} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
