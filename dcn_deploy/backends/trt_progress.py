"""Progress and Ctrl-C during ``build_serialized_network`` (:func:`build_with_progress`): TensorRT's
``IProgressMonitor`` callbacks become indented ``[build]`` lines (:class:`BuildProgress`, plain Python), and
Ctrl-C asks the builder to stop at its next step."""
from __future__ import annotations

import signal
import threading
import time
from typing import Callable, Dict, Optional, Tuple

from .trt_errors import BuildCancelled, BuildError

__all__ = ["BuildProgress", "build_with_progress"]


def build_with_progress(trt, builder, network, config, say: Optional[Callable[[str], None]]):
    """``build_serialized_network`` with progress lines; Ctrl-C asks TensorRT to stop at its next step."""
    state = BuildProgress(say or (lambda line: None))
    monitor = None
    if say is not None and hasattr(trt, "IProgressMonitor"):
        monitor = _make_monitor(trt, state)  # kept referenced until the build returns
        config.progress_monitor = monitor
    previous = None
    # Only with a monitor: TensorRT asks it whether to go on, which is how a Ctrl-C reaches the builder. Without one
    # the handler would just swallow Ctrl-C until the (possibly long) build ends.
    if monitor is not None and threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGINT, lambda *_: state.cancel())
    try:
        serialized = builder.build_serialized_network(network, config)
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
    if state.cancelled and serialized is None:
        raise BuildCancelled("build cancelled; nothing was written")
    if state.cancelled:  # the build finished before TensorRT looked at the request: keep the engine
        (say or (lambda line: None))("[build] Ctrl-C came too late to stop the build; the engine is written anyway")
    if serialized is None:
        raise BuildError("TensorRT could not build the engine (its log above says why). Common causes: a profile "
                         "too large for the workspace (--workspace), an op the GPU lacks in this precision "
                         "(--precision fp32 or --keep-fp32 NODE), or a plugin that rejected its inputs")
    return serialized


class BuildProgress:
    """Turns ``IProgressMonitor`` callbacks into indented lines: ``[build]   Tactic selection 3/12 (1.2 s)``.

    Thread-safe (TensorRT may call from its worker threads). Step lines are throttled to one per
    ``min_interval`` seconds per phase; ``cancel()`` makes the next ``step_complete`` return False, which
    asks TensorRT to stop the build.
    """

    def __init__(self, write: Callable[[str], None], *, min_interval: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._write = write
        self._min_interval = min_interval
        self._clock = clock
        self._lock = threading.Lock()
        self._phases: Dict[str, Tuple[int, int, float, float]] = {}  # name -> (depth, steps, start, last print)
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True

    def phase_start(self, name: str, parent: Optional[str], steps: int) -> None:
        with self._lock:
            depth = self._phases[parent][0] + 1 if parent in self._phases else 0
            now = self._clock()
            self._phases[name] = (depth, steps, now, now)
            self._write(f"[build] {'  ' * depth}{name} ({steps} step{'s' if steps != 1 else ''})")

    def step_complete(self, name: str, step: int) -> bool:
        with self._lock:
            if name in self._phases:
                depth, steps, start, last = self._phases[name]
                now = self._clock()
                if now - last >= self._min_interval and step + 1 < steps:
                    self._write(f"[build] {'  ' * depth}{name} {step + 1}/{steps} ({now - start:.1f} s)")
                    self._phases[name] = (depth, steps, start, now)
            return not self.cancelled

    def phase_finish(self, name: str) -> None:
        with self._lock:
            info = self._phases.pop(name, None)
            if info is not None and info[0] == 0:
                outcome = "stopped (Ctrl-C)" if self.cancelled else "done"
                self._write(f"[build] {name} {outcome} ({self._clock() - info[2]:.1f} s)")


def _make_monitor(trt, progress: BuildProgress):
    class _Monitor(trt.IProgressMonitor):
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)

        def phase_start(self, phase_name, parent_phase, num_steps):
            progress.phase_start(phase_name, parent_phase, num_steps)

        def step_complete(self, phase_name, step):
            return progress.step_complete(phase_name, step)

        def phase_finish(self, phase_name):
            progress.phase_finish(phase_name)

    return _Monitor()
