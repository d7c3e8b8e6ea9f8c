"""What deformable layers cost in the zoo's networks: parameters, multiply-accumulates and latency, each
deformable model next to its plain twin (same network, ordinary 3x3 convolutions, plain PS RoI pooling).

    dcn-deploy zoo report                                          # default pairs, ONNX Runtime CPU
    dcn-deploy zoo report --pairs resnet50_dcn_c5 --size 224 --iterations 20 -o out.json
    (benchmarks/zoo_report.py runs the same report as a script)

Counting (analytic, from forward hooks on one run at the report's input size):
- convolution and linear layers: one multiply-accumulate (MAC) per weight per output position;
- a deformable convolution: its GEMM counts like the convolution it replaces, its offset branch ``conv_offset``
  is an ordinary convolution (counted as such), and its bilinear sampling costs 4 MACs per sampled value
  (C x kH x kW x oH x oW of them), plus 1 for the v2 mask;
- (deformable) PS RoI pooling: 4 MACs per bilinear sample (R x channels x k x k x samples_per_part^2).
FLOPs = 2 x MACs. BatchNorm, ReLU, pooling and additions are not counted (the same in both twins).

Latency: each model is exported with ``dcn_deploy.onnx.export`` (its ONNX Runtime output checked against PyTorch on
the report's inputs) and run with
``dcn_deploy.backends.ort_runner.OrtRunner`` on the CPU. A model that cannot be exported is timed in PyTorch
eager instead, and the table says so. Twins are timed alternately, iteration by iteration, so that load from
other processes on a shared machine hits both alike. Both sessions are open meanwhile, so their worker threads
(``--threads`` > 1) spin only during a run (``OrtRunner(spinning="within-run")``, ONNX Runtime's
``session.force_spinning_stop``): with its default, a session's threads spin on after a run and took the CPU from
the twin's timed run (resnet50_dcn_c5 and its twin at 128x128, 2 threads on 2 cores: medians of 12.3-25.8 ms and a
difference between the twins of -32% to +44%; stopping: 7.8-9.2 ms and +1% to +7%, as each session timed alone,
7.8-10.3 ms; benchmarks/RESULTS.md). Spinning is not turned off altogether (``spinning="off"``), which slows models
of many small nodes, such as the RoI pooling bodies, and would time the sessions in a setting deployments do not
run. The settings say so (``ort_spinning``).
"""
from __future__ import annotations

import datetime
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from . import zoo
from dcn_deploy.json_text import json_text
from dcn_deploy.ops.modules import DeformConv2d, ModulatedDeformConv2dPack

DEFAULT_PAIRS = ("resnet50_dcn_c5", "resnet50_dcnv2_c3c5", "resnet101_dcn_c5", "deeplab_resnet50_dcn",
                 "rfcn_resnet50_dcn")
DEFAULT_SIZES = {"classification": (224, 224), "segmentation": (256, 256), "detection": (256, 256)}
# How the report's ONNX Runtime sessions spin (OrtRunner's ``spinning``; see the module docstring), and what the
# settings say about it.
ORT_SPINNING = "within-run"
ORT_SPINNING_NOTE = "within-run (session.force_spinning_stop=1: worker threads stop spinning when a run returns)"


# ---- counting --------------------------------------------------------------------------------------------------------
@dataclass
class Cost:
    """Parameters and multiply-accumulates of one model at one input size."""

    params: int = 0
    conv_macs: int = 0  # ordinary convolutions and linear layers, offset branches included
    offset_macs: int = 0  # the offset branches alone (part of conv_macs)
    deform_gemm_macs: int = 0  # the deformable convolutions' weight products
    sampling_macs: int = 0  # bilinear sampling (deformable conv and RoI pooling) and v2 masks
    pooling_macs: int = 0  # PS RoI pooling samples (part of sampling_macs)

    @property
    def total_macs(self) -> int:
        return self.conv_macs + self.deform_gemm_macs + self.sampling_macs


def _conv_macs(module: nn.Conv2d, output: torch.Tensor) -> int:
    kh, kw = module.kernel_size
    return output.numel() * (module.in_channels // module.groups) * kh * kw


def count_cost(model: nn.Module, inputs: Sequence[torch.Tensor]) -> Cost:
    """Parameters and MACs of ``model`` on ``inputs`` (one forward pass with hooks; see the module docstring)."""
    cost = Cost(params=sum(p.numel() for p in model.parameters()))
    handles = []

    def on_conv(name):
        def hook(module, args, output):
            macs = _conv_macs(module, output)
            cost.conv_macs += macs
            if name.endswith("conv_offset") or "offset_conv" in name:
                cost.offset_macs += macs
        return hook

    def on_linear(module, args, output):
        cost.conv_macs += output.numel() * module.in_features

    def on_deform(module, args, output):
        kh, kw = module.kernel_size
        cost.deform_gemm_macs += output.numel() * (module.in_channels // module.groups) * kh * kw
        samples = output.shape[0] * module.in_channels * kh * kw * output.shape[2] * output.shape[3]
        cost.sampling_macs += samples * (5 if isinstance(module, ModulatedDeformConv2dPack) else 4)

    def on_rfcn_head(module, args, output):
        rois = args[1].shape[0]
        k2 = module.group_size ** 2
        channels = module.num_classes + 4 * module.box_classes
        if module.deformable:
            channels += 2 * module.num_classes + 2  # the offsets are pooled too
        macs = 4 * rois * channels * k2 * module.sample_per_part ** 2
        cost.sampling_macs += macs
        cost.pooling_macs += macs

    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            handles.append(module.register_forward_hook(on_conv(name)))
        elif isinstance(module, nn.Linear):
            handles.append(module.register_forward_hook(on_linear))
        elif isinstance(module, DeformConv2d):
            handles.append(module.register_forward_hook(on_deform))
        elif type(module).__name__ == "RFCNHead":
            handles.append(module.register_forward_hook(on_rfcn_head))
    try:
        with torch.no_grad():
            model(*inputs)
    finally:
        for handle in handles:
            handle.remove()
    return cost


# ---- timing ----------------------------------------------------------------------------------------------------------
@dataclass
class Timed:
    backend: str
    median_ms: float
    p90_ms: float
    min_ms: float
    note: str = ""


class _EagerRunner:
    """Times a PyTorch model in eager mode, with the same call shape as the ONNX Runtime path below."""

    def __init__(self, model, inputs):
        self.model, self.inputs = model, inputs

    def __call__(self) -> float:
        start = time.perf_counter()
        with torch.no_grad():
            self.model(*self.inputs)
        return time.perf_counter() - start


class _OrtCall:
    def __init__(self, runner, feed):
        self.runner, self.feed = runner, feed

    def __call__(self) -> float:
        self.runner.infer(self.feed)
        return self.runner.last_inference_time()


def _ort_callable(model, inputs, entry, folder: Path, threads: int, stack):
    """Export and open an ONNX Runtime session; returns (callable, "") or (None, why the export failed)."""
    from dcn_deploy.backends.ort_runner import OrtRunner
    from dcn_deploy.onnx.export import export

    path = folder / f"{entry.name}.onnx"
    try:
        # Verified below on the report's own inputs (random values would make meaningless RoIs).
        export(model, inputs, path, require_deformable=entry.deformable, verify=False)
    except Exception as exc:  # noqa: BLE001 - any export failure falls back to eager, and is reported
        first = re.sub(r"\x1b\[[0-9;]*m", "", str(exc).strip().splitlines()[0])[:160]  # no terminal colours
        return None, f"{type(exc).__name__}: {first}"
    # Both twins' sessions stay open while they are timed by turns: their threads must not spin between runs.
    runner = stack.enter_context(OrtRunner(path, threads=threads, spinning=ORT_SPINNING))
    names = [meta.name for meta in runner.input_metadata()]
    feed = {n: t.numpy() for n, t in zip(names, inputs)}
    with torch.no_grad():
        expected = model(*inputs)
    expected = expected if isinstance(expected, tuple) else (expected,)
    for got, want in zip(runner.infer(feed).values(), expected):
        want = want.numpy()
        if got.shape != want.shape or not np.allclose(got, want, rtol=1e-3, atol=1e-3 * max(1.0, np.abs(want).max())):
            raise RuntimeError(f"{entry.name}: ONNX Runtime's output differs from PyTorch's (max abs difference "
                               f"{np.abs(got - want).max() if got.shape == want.shape else 'shape ' + str(got.shape)})")
    return _OrtCall(runner, feed), ""


def time_pair(calls: Dict[str, object], iterations: int, warmup: int) -> Dict[str, List[float]]:
    """Alternate the callables iteration by iteration; seconds per call for each."""
    for _ in range(warmup):
        for call in calls.values():
            call()
    times: Dict[str, List[float]] = {name: [] for name in calls}
    for _ in range(iterations):
        for name, call in calls.items():
            times[name].append(call())
    return times


def _summary(seconds: List[float], backend: str, note: str) -> Timed:
    ms = np.asarray(seconds) * 1e3
    return Timed(backend, float(np.median(ms)), float(np.percentile(ms, 90)), float(ms.min()), note)


# ---- the report --------------------------------------------------------------------------------------------------------
@dataclass
class Row:
    name: str
    plain: str
    size: Tuple[int, int]
    rois: int
    dcn: Cost
    base: Cost
    dcn_time: Optional[Timed] = None
    base_time: Optional[Timed] = None
    layers: int = 0
    notes: List[str] = field(default_factory=list)


def check_pair(name: str) -> "zoo.ZooEntry":
    """The zoo entry of a deformable model to measure, or an error naming the problem: KeyError for an unknown
    name (listing the valid ones), ValueError for a plain model (naming the deformable models it is the twin of).
    Run on every name before any is measured: a measurement takes minutes."""
    entry = zoo.get(name)
    if not entry.deformable:
        twins = [n for n in zoo.names() if zoo.get(n).plain == name]
        raise ValueError(f"{name} has no deformable layers; give a deformable zoo name (its plain twin is added)"
                         + (f"; {name} is the plain twin of {', '.join(twins)}" if twins else ""))
    return entry


def measure(name: str, size: Optional[Tuple[int, int]], backend: str, threads: int, iterations: int, warmup: int,
            folder: Path, rois: int = 100) -> Row:
    import contextlib

    entry = check_pair(name)
    twin = zoo.get(entry.plain)
    size = size or DEFAULT_SIZES[entry.task]
    models = {entry.name: entry.build(), twin.name: twin.build()}
    inputs = entry.example_inputs(batch=1, size=size, rois_per_image=rois if entry.needs_roi_pool else None)
    costs = {n: count_cost(m, inputs) for n, m in models.items()}
    deform_layers = sum(isinstance(m, DeformConv2d) for m in models[entry.name].modules())
    row = Row(name, twin.name, size, inputs[1].shape[0] if len(inputs) > 1 else 0, costs[entry.name],
              costs[twin.name], layers=deform_layers)
    if backend == "none":
        return row
    with contextlib.ExitStack() as stack:
        calls, labels, notes = {}, {}, {}
        for e in (entry, twin):
            call, note = (None, "eager requested") if backend == "torch" else _ort_callable(
                models[e.name], inputs, e, folder, threads, stack)
            if call is None:
                calls[e.name], labels[e.name] = _EagerRunner(models[e.name], inputs), "PyTorch eager"
                notes[e.name] = "" if backend == "torch" else f"ONNX export failed ({note}); timed in PyTorch eager"
            else:
                calls[e.name], labels[e.name], notes[e.name] = call, f"ORT CPU ({threads} thread{'s' * (threads > 1)})", ""
        if labels[entry.name] != labels[twin.name]:  # compare like with like
            calls = {n: _EagerRunner(models[n], inputs) for n in calls}
            labels = {n: "PyTorch eager" for n in calls}
        times = time_pair(calls, iterations, warmup)
    row.dcn_time = _summary(times[entry.name], labels[entry.name], notes[entry.name])
    row.base_time = _summary(times[twin.name], labels[twin.name], notes[twin.name])
    row.notes = sorted({n for n in notes.values() if n})
    return row


def _pct(new: float, old: float) -> str:
    return f"{100.0 * (new - old) / old:+.1f}%" if old else "n/a"


def markdown(rows: Sequence[Row], settings: Dict[str, object]) -> str:
    lines = [
        "| model (vs plain twin) | input | deformable layers | params | Δ params | GMACs | Δ GMACs | of which offsets / sampling (GMACs) | latency median (p90), ms | plain, ms | Δ latency | backend |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        size = f"1x3x{r.size[0]}x{r.size[1]}" + (f" + {r.rois} RoIs" if r.rois else "")
        extra = f"{r.dcn.offset_macs / 1e9:.3f} / {r.dcn.sampling_macs / 1e9:.3f}"
        if r.dcn_time:
            lat = f"{r.dcn_time.median_ms:.1f} ({r.dcn_time.p90_ms:.1f})"
            base = f"{r.base_time.median_ms:.1f} ({r.base_time.p90_ms:.1f})"
            delta, backend = _pct(r.dcn_time.median_ms, r.base_time.median_ms), r.dcn_time.backend
        else:
            lat = base = delta = backend = "not timed"
        lines.append(
            f"| {r.name} (vs {r.plain}) | {size} | {r.layers} | {r.dcn.params / 1e6:.3f} M | "
            f"{r.dcn.params - r.base.params:+,} ({_pct(r.dcn.params, r.base.params)}) | {r.dcn.total_macs / 1e9:.3f} | "
            f"{_pct(r.dcn.total_macs, r.base.total_macs)} | {extra} | {lat} | {base} | {delta} | {backend} |")
    notes = sorted({n for r in rows for n in r.notes})
    lines += [f"\nNote: {n}" for n in notes]
    return "\n".join(lines)


def environment(threads: int) -> Dict[str, object]:
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=Path(__file__).resolve().parent, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain"], capture_output=True, text=True,
                               cwd=Path(__file__).resolve().parent, check=True).stdout.strip()
        commit += " (+ uncommitted changes)" if dirty else ""
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    try:
        import onnxruntime
        ort_version = onnxruntime.__version__
    except ImportError:
        ort_version = None
    return {"date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M"),
            "commit": commit, "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "threads": threads, "python": platform.python_version(), "torch": torch.__version__,
            "onnxruntime": ort_version, "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None}


def run_report(pairs: Sequence[str] = DEFAULT_PAIRS, size: Optional[Tuple[int, int]] = None, backend: str = "ort",
               threads: int = 1, iterations: int = 10, warmup: int = 2, rois: int = 100,
               progress=lambda message: print(message, file=sys.stderr, flush=True)) -> Tuple[List[Row], Dict[str, object]]:
    """Measure every deformable zoo model in ``pairs`` next to its plain twin; returns (rows, settings).

    ``size`` (H, W) for every model, default per task; ``backend`` "ort", "torch" or "none" (counts only).
    Sets torch's intra-op thread count to ``threads`` (ONNX Runtime gets the same).
    """
    if backend not in ("ort", "torch", "none"):
        raise ValueError(f"backend must be ort, torch or none, got {backend!r}")
    for name in pairs:
        check_pair(name)  # fail early, on a typo or a plain model, before minutes of measuring
    torch.set_num_threads(threads)
    rows = []
    with tempfile.TemporaryDirectory(prefix="zoo_report_") as folder:
        for name in pairs:
            progress(f"[zoo report] {name} ...")
            rows.append(measure(name, size, backend, threads, iterations, warmup, Path(folder), rois))
    settings = {"iterations": iterations, "warmup": warmup, "rois": rois, **environment(threads)}
    if backend == "ort":
        settings["ort_spinning"] = ORT_SPINNING_NOTE
    return rows, settings


def report_json(rows: Sequence[Row], settings: Dict[str, object]) -> str:
    """The raw numbers of a report as JSON text."""
    payload = {"settings": settings, "rows": [
        {**asdict(r), "dcn_total_macs": r.dcn.total_macs, "plain_total_macs": r.base.total_macs} for r in rows]}
    return json_text(payload)
