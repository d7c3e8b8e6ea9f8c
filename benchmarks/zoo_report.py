"""What deformable layers cost in the zoo's networks (the script form of ``dcn-deploy zoo report``).

    .venv/bin/python benchmarks/zoo_report.py                       # default pairs, ONNX Runtime CPU
    .venv/bin/python benchmarks/zoo_report.py --pairs resnet50_dcn_c5 --size 224 --iterations 20 --json out.json

How the counts and timings are made: see ``dcn_deploy.models.cost_report``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

from dcn_deploy.io_utils import atomic_write_text
from dcn_deploy.models.cost_report import DEFAULT_PAIRS, markdown, report_json, run_report


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", nargs="+", default=list(DEFAULT_PAIRS),
                        help="deformable zoo names (each is compared with its plain twin)")
    parser.add_argument("--size", type=int, nargs="+", default=None,
                        help="input H [W] for every model (default: 224 for classifiers, 256 otherwise)")
    parser.add_argument("--backend", choices=("ort", "torch", "none"), default="ort",
                        help="ort: export and run in ONNX Runtime CPU (falls back to eager per model); none: counts only")
    parser.add_argument("--threads", type=int, default=1,
                        help="intra-op threads for ORT and PyTorch (ORT's stop spinning when a run returns)")
    parser.add_argument("--rois", type=int, default=100, help="proposals per image for the detectors")
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None, help="also write the raw numbers here")
    args = parser.parse_args(argv)
    size = None if args.size is None else (args.size[0], args.size[-1])
    rows, settings = run_report(args.pairs, size, args.backend, args.threads, args.iterations, args.warmup, args.rois)
    print(markdown(rows, settings))
    print("\n" + ", ".join(f"{k}: {v}" for k, v in settings.items()))
    if args.json is not None:
        atomic_write_text(args.json, report_json(rows, settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
