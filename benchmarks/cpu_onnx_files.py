"""Time whole ONNX files in ONNX Runtime on the CPU, side by side: e.g. a detector exported by mmdeploy for its own
ONNX Runtime custom ops, the same file after ``dcn-deploy adopt``, and mmdeploy's TensorRT export after adopt.

    .venv/bin/python benchmarks/cpu_onnx_files.py A.onnx B.onnx --shape input=1x3x320x480 \
        --custom-ops /path/to/libmmdeploy_onnxruntime_ops.so:A.onnx --threads 1 --iterations 10

Every file gets the same random input (seed 0) for each named input; ``--custom-ops LIB:FILE`` registers a custom-op
library for that file only. Prints, per file, the median and minimum of ``--iterations`` runs after 2 warm-up runs
(milliseconds), with spinning intra-op threads off (a spinning thread takes a core from the next file's run).
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort


def _shape(text: str):
    name, _, dims = text.partition("=")
    return name, tuple(int(d) for d in dims.split("x"))


def ort_session(path, threads: int = 1, library: str = "", profile_prefix: str = ""):
    """An ONNX Runtime CPU session of ``path`` (a file, or the model's bytes) as these timings run it: ``threads``
    intra-op threads, no spinning; with mmdeploy's (or another) custom-op ``library``; profiling to
    ``profile_prefix`` when given (benchmarks/cpu_detr_files.py)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    if library:
        options.register_custom_ops_library(library)
    if profile_prefix:
        options.enable_profiling = True
        options.profile_file_prefix = profile_prefix
    model = path if isinstance(path, bytes) else str(path)
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--shape", action="append", required=True, type=_shape, help="NAME=1x3x320x480")
    parser.add_argument("--custom-ops", action="append", default=[], help="LIB.so:FILE.onnx")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--iterations", type=int, default=10)
    args = parser.parse_args()
    libraries = {Path(f).resolve(): lib for lib, _, f in (c.rpartition(":") for c in args.custom_ops)}
    rng = np.random.default_rng(0)
    feed = {name: rng.standard_normal(shape).astype(np.float32) for name, shape in args.shape}
    print(f"onnxruntime {ort.__version__}, {args.threads} intra-op thread(s), {args.iterations} runs after 2 warm-up")
    for path in args.files:
        session = ort_session(path, args.threads, libraries.get(path.resolve(), ""))
        names = {i.name for i in session.get_inputs()}
        inputs = {k: v for k, v in feed.items() if k in names}
        for _ in range(2):
            session.run(None, inputs)
        times = []
        for _ in range(args.iterations):
            start = time.perf_counter()
            session.run(None, inputs)
            times.append((time.perf_counter() - start) * 1e3)
        print(f"{path.name}: median {statistics.median(times):.1f} ms, min {min(times):.1f} ms")


if __name__ == "__main__":
    main()
