"""Latency and throughput of runners, side by side, over several batch sizes (after trtexec's report).

Every requested batch size and input shape is checked against the model's input metadata before anything runs,
so a bad ``--batch``/``--shape`` fails at once. For each batch size, every runner gets the same random feed, runs
``warmup`` untimed inferences, then a fixed number of ``iterations`` or as many as fit in ``duration`` seconds.
Each inference's time is the runner's own ``last_inference_time()`` (the model call, without feed generation).
The outputs of every runner's first inference (its first warm-up run, or with no warm-up its first timed run) are
checked against the first runner's (shapes, matched as compare_runners matches them: by name, else by position):
runners that do not run the same model are refused, not compared.
Reported per (runner, batch): latency min/mean/median/p90/p99/max/std in milliseconds, throughput in inferences
and samples per second (samples = batch x inferences, over the summed inference time), the speed relative to
the first runner at the same batch (``first median / this median``, so 2.0 means twice as fast), and the runner's
intra-op thread count (None: the backend's default).

Runners that time stages apart (the TensorRT runner: host-to-device, compute, device-to-host, as trtexec shows)
expose ``last_stage_times()`` returning a dataclass of ``<stage>_ms`` fields (``h2d_ms``, ``compute_ms``,
``d2h_ms``); each stage gets the same statistics, reported under ``phases_ms``.
"""
from __future__ import annotations

import dataclasses
import datetime
import math
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Dict, List, Mapping, Optional, Sequence

import numpy as np

from .backends.base import Runner, RunnerError, TensorMeta
from .compare import check_rois_argument, check_runners_argument, match_outputs, runner_roi_inputs
from .feeds import fixed_batch, fixed_batch_error, format_shape, random_feed, resolve_shapes
from .json_text import json_text
from .progress import Progress

__all__ = ["LatencyStats", "BenchEntry", "BenchResult", "benchmark", "check_batches", "default_batches",
           "latency_stats"]


@dataclass
class LatencyStats:
    """Statistics of a list of durations, in milliseconds."""

    min: float
    mean: float
    median: float
    p90: float
    p99: float
    max: float
    std: float


def latency_stats(seconds: Sequence[float]) -> LatencyStats:
    """Statistics (ms) of per-inference durations given in seconds; percentiles by linear interpolation."""
    if len(seconds) == 0:
        raise ValueError("no timings to summarise: run at least one iteration")
    ms = np.asarray(seconds, dtype=np.float64) * 1e3
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    return LatencyStats(min=float(ms.min()), mean=float(ms.mean()), median=float(p50), p90=float(p90),
                        p99=float(p99), max=float(ms.max()), std=float(ms.std()))


@dataclass
class BenchEntry:
    """One runner at one batch size."""

    runner: str
    batch: int
    inputs: Dict[str, List[int]]
    warmup: int
    iterations: int
    total_s: float  # summed inference time
    wall_s: float  # wall time of the timed loop
    latency_ms: LatencyStats
    inferences_per_s: float
    samples_per_s: float
    relative_speed: float = 1.0  # first runner's median / this median, at the same batch
    phases_ms: Dict[str, LatencyStats] = field(default_factory=dict)
    threads: Optional[int] = None  # intra-op threads while timed (intra_op_threads); None: the backend's default


@dataclass
class BenchResult:
    entries: List[BenchEntry]
    settings: Dict[str, object]
    environment: Dict[str, object]

    def entry(self, runner: str, batch: int) -> BenchEntry:
        for e in self.entries:
            if e.runner == runner and e.batch == batch:
                return e
        raise KeyError(f"no result for runner {runner!r} at batch {batch}")

    def to_dict(self) -> dict:
        return {"settings": self.settings, "environment": self.environment,
                "results": [asdict(e) for e in self.entries]}

    def to_json(self) -> str:
        return json_text(self.to_dict())

    def table(self) -> str:
        first = self.entries[0].runner if self.entries else ""
        compared = len({e.runner for e in self.entries}) > 1  # one runner: no speed ratio to show
        header = ("batch", "runner", "iters", "mean ms", "median", "p90", "p99", "min", "max",
                  "samples/s", f"speed vs {first}")[:None if compared else -1]
        rows = [header]
        for e in self.entries:
            lat = e.latency_ms
            rows.append((str(e.batch), e.runner, str(e.iterations), _ms(lat.mean), _ms(lat.median), _ms(lat.p90),
                         _ms(lat.p99), _ms(lat.min), _ms(lat.max), f"{e.samples_per_s:,.1f}",
                         f"{e.relative_speed:.3g}x")[:len(header)])
            for phase, stats in e.phases_ms.items():
                rows.append(("", f"  {phase}", "", _ms(stats.mean), _ms(stats.median), _ms(stats.p90),
                             _ms(stats.p99), _ms(stats.min), _ms(stats.max), "", "")[:len(header)])
        widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
        lines = ["  ".join(c.rjust(w) if i not in (1,) else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths)))
                 for row in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        s = self.settings
        mode = f"{s['iterations']} iterations" if s.get("iterations") else f"{s['duration_s']} s per measurement"
        runs = "warm-up run" if s["warmup"] == 1 else "warm-up runs"
        lines.append(f"latency in ms per inference ({mode} after {s['warmup']} {runs}); samples/s = batch x "
                     "inferences / summed latency" + ("; speed = first runner's median / this median" if compared
                                                      else ""))
        threads = {e.runner: "the backend's default (ONNX Runtime: one per core)" if e.threads is None
                   else str(e.threads) for e in self.entries}
        if threads:
            lines.append("intra-op threads: " + ", ".join(f"{name}: {n}" for name, n in threads.items()))
        return "\n".join(lines)


def _ms(value: float) -> str:
    return f"{value:.3f}" if value < 100 else f"{value:.1f}"


def environment_info() -> Dict[str, object]:
    """Versions and machine facts a reader needs to compare two reports (reads only modules already imported)."""
    from . import __version__

    info: Dict[str, object] = {"date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M"),
                               "dcn_deploy": __version__, "python": platform.python_version(),
                               "machine": platform.machine(), "system": platform.system(),
                               "cpu_count": os.cpu_count(), "numpy": np.__version__}
    for module in ("torch", "onnxruntime", "tensorrt"):
        if module in sys.modules:
            info[module] = getattr(sys.modules[module], "__version__", "?")
    return info


def stage_times(runner: Runner) -> Dict[str, float]:
    """The last inference's stage times in seconds ({"h2d": ..., "compute": ..., "d2h": ...}), or {}."""
    method = getattr(runner, "last_stage_times", None)
    stages = method() if callable(method) else None
    if stages is None:
        return {}
    values = dataclasses.asdict(stages) if dataclasses.is_dataclass(stages) else dict(stages)
    return {name[:-3]: float(ms) / 1e3 for name, ms in values.items() if name.endswith("_ms")}


def intra_op_threads(runner: Runner) -> Optional[int]:
    """The intra-op threads ``runner`` computes with (call it while the runner is active): its own ``threads``
    setting; for a torch runner on the CPU without one, torch's process-wide count; else None (the backend's default,
    e.g. ONNX Runtime's one per core, or no such setting, as TensorRT)."""
    threads = getattr(runner, "threads", None)
    if threads is not None:
        return int(threads)
    torch_runner = sys.modules.get("dcn_deploy.backends.torch_runner")  # loaded by any torch runner: no import here
    if torch_runner is not None and isinstance(runner, torch_runner.TorchRunner) and runner.device.type == "cpu":
        return int(sys.modules["torch"].get_num_threads())
    return None


def _output_shapes(outputs: Mapping[str, object]) -> Dict[str, tuple]:
    return {name: tuple(int(d) for d in np.shape(value)) for name, value in outputs.items()}


def _check_same_outputs(runner: Runner, outputs: Mapping[str, object], first: Optional[tuple]) -> Dict[str, tuple]:
    """The output shapes of ``runner``'s inference; RunnerError when they differ from ``first`` ((name, shapes) of
    the first runner at this batch), the outputs matched as compare_runners matches them (by name, else by
    position): runners that do not compute the same function have no speed ratio."""
    shapes = _output_shapes(outputs)
    if first is None:
        return shapes
    name, want = first
    try:
        pairs = match_outputs(runner.name, shapes, want)
    except ValueError as exc:
        raise RunnerError(f"{exc}: the runners do not run the same model, so their times cannot be compared") \
            from None
    for output, shape, wanted in pairs:
        if shape != wanted:
            raise RunnerError(f"{runner.name}: output {output!r} has shape {shape} where {name}'s has {wanted} on "
                              "the same inputs: the runners do not compute the same function, so their times cannot "
                              "be compared")
    return shapes


def _measure(runner: Runner, feed: Mapping[str, np.ndarray], iterations: Optional[int], duration: Optional[float],
             progress: Progress, on_first: Optional[Callable[[Mapping[str, object]], object]] = None) -> tuple:
    """Timed inferences of ``runner`` on ``feed``: ``(seconds per inference, {stage: seconds per inference},
    wall seconds of the loop)``, over ``iterations`` runs or ``duration`` seconds. ``on_first`` is given the first
    inference's outputs (after its time is taken)."""
    times: List[float] = []
    phases: Dict[str, List[float]] = {}
    start = time.perf_counter()
    last_tick = start
    while True:
        outputs = runner.infer(feed)
        times.append(runner.last_inference_time())
        if on_first is not None and len(times) == 1:
            on_first(outputs)
        del outputs  # freed before the next inference: no two sets of outputs alive at once (allocation, faults)
        for phase, seconds in stage_times(runner).items():
            phases.setdefault(phase, []).append(seconds)
        now = time.perf_counter()
        if iterations is not None:
            progress.update(1)
            if len(times) >= iterations:
                break
        else:
            progress.update(min(now, start + duration) - last_tick)
            last_tick = min(now, start + duration)
            if now - start >= duration:
                break
    return times, phases, time.perf_counter() - start


def default_batches(metas: Sequence[TensorMeta]) -> List[int]:
    """Batch sizes to time when none are asked for: the model's fixed batch size, else 1."""
    fixed = fixed_batch(metas)
    return [fixed if fixed else 1]


def check_batches(metas: Sequence[TensorMeta], batches: Sequence[int]) -> None:
    """Raise FeedError, naming the input and its fixed batch size, when the model cannot run one of ``batches``.

    A model with a dynamic first dimension on some input runs any batch; otherwise its batch is the first
    input's first dimension and only that size runs (the same rule as :func:`dcn_deploy.feeds.resolve_shapes`;
    other inputs' first dimensions, e.g. a fixed number of boxes, are theirs).
    """
    fixed = fixed_batch(metas)
    wrong = [b for b in batches if fixed is not None and b != fixed]
    if wrong:
        raise fixed_batch_error(metas, wrong, asked=batches)


def _whole(value, name: str) -> Optional[int]:
    """An int count (numpy integers too), None kept; a float such as 2.5 or a string is a TypeError naming it."""
    if value is None:
        return None
    if isinstance(value, bool) or not hasattr(value, "__index__"):
        raise TypeError(f"{name} must be an int, got {value!r}")
    return int(value)


def _checked_settings(iterations, duration: Optional[float], warmup, batches) -> tuple:
    """:func:`benchmark`'s counts checked and made ints: ``(iterations, warmup, batches)``, where ``iterations``
    is 100 when neither it nor ``duration`` is given, and ``batches`` stays None when not given."""
    iterations = _whole(iterations, "iterations")
    warmup = _whole(warmup, "warmup")
    if batches is not None:
        if isinstance(batches, (str, bytes)) or not hasattr(batches, "__iter__"):  # "1,8" is the CLI's form
            raise TypeError(f"batches must be a list of ints, e.g. [1, 8], got {batches!r}")
        batches = [_whole(b, "batch size") for b in batches]
    if iterations is not None and duration is not None:
        raise ValueError("give iterations or duration, not both")
    if iterations is None and duration is None:
        iterations = 100
    if duration is not None and (isinstance(duration, bool) or not isinstance(duration, (int, float, np.number))):
        raise TypeError(f"duration must be a number of seconds, got {duration!r}")
    if warmup is None:
        raise TypeError("warmup must be an int >= 0 (untimed runs before the timed ones), got None")
    if iterations is not None and iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    if duration is not None and not (duration > 0 and math.isfinite(duration)):
        raise ValueError(f"duration must be a positive number of seconds, got {duration}")
    if warmup < 0:
        raise ValueError(f"warmup must be >= 0, got {warmup}")
    if batches is not None:
        if not batches or min(batches) < 1:
            raise ValueError(f"batch sizes must be >= 1, got {batches}")
    return iterations, warmup, batches


def _time_runner(runner: Runner, own: bool, feed: Mapping[str, np.ndarray], batch: int, warmup: int,
                 iterations: Optional[int], duration: Optional[float], bar: Progress,
                 first: Optional[tuple] = None) -> tuple:
    """Warm ``runner`` up and time it on ``feed``; a runner it ``own``s is active only meanwhile. Its first
    inference's outputs are checked against ``first`` (:func:`_check_same_outputs`). Returns (entry, output shapes)."""
    shapes: Dict[str, tuple] = {}

    def check(outputs: Mapping[str, object]) -> None:
        shapes.update(_check_same_outputs(runner, outputs, first))

    runner.activate()
    try:
        threads = intra_op_threads(runner)
        if warmup:
            bar.set_description(f"{runner.name} batch {batch} warm-up")
        for index in range(warmup):
            if index == 0:
                check(runner.infer(feed))
            else:
                runner.infer(feed)
            if iterations is not None:
                bar.update(1)
        bar.set_description(f"{runner.name} batch {batch}")
        times, phases, wall = _measure(runner, feed, iterations, duration, bar, on_first=None if warmup else check)
    finally:
        if own:
            runner.deactivate()
    total = float(sum(times))
    return BenchEntry(
        runner=runner.name, batch=batch, inputs={k: list(v.shape) for k, v in feed.items()},
        warmup=warmup, iterations=len(times), total_s=total, wall_s=wall,
        latency_ms=latency_stats(times), inferences_per_s=len(times) / total if total else float("inf"),
        samples_per_s=batch * len(times) / total if total else float("inf"),
        phases_ms={k: latency_stats(v) for k, v in phases.items()}, threads=threads), shapes


def benchmark(runners: Sequence[Runner], *, batches: Optional[Sequence[int]] = None,
              shapes: Optional[Mapping[str, Sequence[int]]] = None, iterations: Optional[int] = None,
              duration: Optional[float] = None, warmup: int = 10, seed: int = 0,
              progress: bool = True, rois: Optional[Sequence[str]] = None, progress_prefix: str = "") -> BenchResult:
    """Time every runner at every batch size on the same random feed (see the module docstring).

    Give ``iterations`` (timed inferences per measurement) or ``duration`` (seconds per measurement); with
    neither, 100 iterations. ``batches`` (a list of ints, e.g. ``[1, 8]``) defaults to the model's fixed batch size,
    else 1. ``shapes`` (``{input name: shape}``) gives sizes for dynamic input dimensions (the batch dimension is set
    from ``batches``); ``rois`` names inputs that get valid boxes (:func:`dcn_deploy.feeds.roi_inputs`; None: those
    the runners report, see :meth:`dcn_deploy.backends.base.Runner.roi_inputs`). Every batch and shape is checked
    against the first runner's input metadata before anything is timed (FeedError names the input and the fix).
    Runners that are not active are activated only while they are measured (so one runner's thread pool does not
    slow the next); runners the caller activated stay active throughout, never closed nor reloaded (the caller's
    session, loaded once). Such a runner can still take the CPU while the next one runs: an active
    :class:`~dcn_deploy.backends.ort_runner.OrtRunner` with ``spinning="on"`` (its default) spins its threads for
    tens of milliseconds after each run, into the next runner's warm-up and, for a model that runs in less, its
    timed runs. To time runners side by side, pass them inactive (as ``dcn-deploy bench`` does), or create such
    OrtRunners with ``spinning="within-run"``. Each runner's first outputs must match the first runner's, by name
    or else by position, in shape (RunnerError otherwise, before that runner's timed runs where there is a warm-up).

    Returns:
        :class:`BenchResult`: one :class:`BenchEntry` per (batch, runner), latencies in milliseconds;
        ``table()`` for people, ``to_json()`` for files.
    """
    runners = check_runners_argument(runners, "benchmark")
    if not runners:
        raise ValueError("benchmark needs at least one runner")
    iterations, warmup, batches = _checked_settings(iterations, duration, warmup, batches)
    rois = check_rois_argument(rois)
    if rois is None:
        rois = runner_roi_inputs(runners)
    names = [r.name for r in runners]
    if len(set(names)) != len(names):
        raise ValueError(f"runner names must be distinct to be reported side by side, got {names}")

    # Runners the caller did not activate are active only while they are measured: ONNX Runtime's thread pool
    # spins after each run, and a live session would compete with the next runner's threads. Those the caller
    # activated are theirs, left active (see the docstring: ONNX Runtime has no call that stops a live session's
    # spinning, only the session option spinning="within-run" sets). The first runner,
    # activated to read the input metadata, stays active through the checks into its first measurement (no other
    # runner runs meanwhile): deactivating it in between would load its model twice.
    owned = [not r.is_active for r in runners]
    entries: List[BenchEntry] = []
    bar = Progress(0, enabled=False)  # the real one comes after the checks, so no error is printed on its line
    try:
        runners[0].activate()
        metas = runners[0].input_metadata()
        batched = [m for m in metas if m.name not in rois]  # a RoI input's first dimension counts boxes
        batches = default_batches(batched) if batches is None else batches
        check_batches(batched, batches)
        for batch in batches:  # every shape is checked before the first measurement, not when its turn comes
            resolve_shapes(metas, shapes, batch, rois)
        jobs = len(batches) * len(runners)
        # With --iterations the warm-up runs count in the bar (it would sit at 0% through them otherwise); with
        # --duration the bar counts timed seconds and the description says when a runner is warming up.
        bar = Progress(jobs * (warmup + iterations if iterations is not None else duration),
                       unit="it" if iterations is not None else "s", decimals=0 if iterations is not None else 1,
                       leave=False, enabled=progress, prefix=progress_prefix)
        for batch in batches:
            feed = random_feed(metas, shapes, batch, seed, rois)
            batch_entries: List[BenchEntry] = []
            first: Optional[tuple] = None  # (name, output shapes) of the first runner at this batch
            for runner, own in zip(runners, owned):
                entry, outputs = _time_runner(runner, own, feed, batch, warmup, iterations, duration, bar, first)
                first = first or (runner.name, outputs)
                batch_entries.append(entry)
            base = batch_entries[0].latency_ms.median
            for e in batch_entries:
                e.relative_speed = base / e.latency_ms.median if e.latency_ms.median > 0 else float("inf")
            entries.extend(batch_entries)
    finally:
        bar.close()
        for runner, own in zip(runners, owned):
            if own:
                runner.deactivate()
    settings = {"runners": names, "batches": batches, "iterations": iterations, "duration_s": duration,
                "warmup": warmup, "seed": seed,
                "inputs": {k: format_shape(v) for k, v in (shapes or {}).items()}}
    return BenchResult(entries=entries, settings=settings, environment=environment_info())
