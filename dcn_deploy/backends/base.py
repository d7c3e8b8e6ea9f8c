"""The runner interface every backend implements (after Polygraphy's runners).

A runner is a context manager: ``activate`` loads the model (session, engine, module) and ``deactivate``
frees it. Inside, ``input_metadata()`` describes the inputs and ``infer(feed)`` maps a dict of numpy arrays
(or, for backends that accept them, device tensors) to a dict of numpy outputs.
``last_inference_time()`` is the wall time of the last ``infer`` call in seconds.
"""
from __future__ import annotations

import os
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Dict, Mapping, Optional, Tuple, Union

import numpy as np

Dim = Union[int, str, None]  # a fixed size, or a symbolic/unknown one


@dataclass(frozen=True)
class TensorMeta:
    """Name, numpy dtype and shape (ints for fixed dimensions, a name or None for dynamic ones)."""

    name: str
    dtype: np.dtype
    shape: Tuple[Dim, ...]

    def is_dynamic(self) -> bool:
        return any(not isinstance(d, int) for d in self.shape)


class RunnerError(RuntimeError):
    """A runner could not load its model or run an inference; the message says what to change."""


class Runner(ABC):
    """Base class: subclasses implement ``_activate``, ``_deactivate``, ``input_metadata``, ``_infer``."""

    name: str = "runner"

    def __init__(self) -> None:
        self._active = False
        self._last_time: Optional[float] = None
        self._entered: list = []  # per ``with`` block: whether that block activated the runner

    def __repr__(self) -> str:
        model = getattr(self, "model", None)
        what = f", model={model!r}" if isinstance(model, (str, os.PathLike)) else (
            f", model={type(model).__name__}" if model is not None else "")
        return (f"{type(self).__name__}(name={self.name!r}{what}, "
                f"{'active' if getattr(self, '_active', False) else 'inactive'})")

    # context management -------------------------------------------------------------------------------------
    def activate(self) -> "Runner":
        if not self._active:
            self._activate()
            self._active = True
        return self

    def deactivate(self) -> None:
        if self._active:
            self._deactivate()
            self._active = False

    def __enter__(self) -> "Runner":
        # A nested ``with runner:`` (or one around an already active runner) leaves the runner as it found it:
        # only the block that activated it deactivates it, so the outer block's infer() still works.
        self._entered.append(not self._active)
        return self.activate()

    def __exit__(self, *exc) -> None:
        if self._entered.pop() if self._entered else True:
            self.deactivate()

    @property
    def is_active(self) -> bool:
        return self._active

    # inference ----------------------------------------------------------------------------------------------
    def infer(self, feed: Mapping[str, object]) -> Dict[str, np.ndarray]:
        """Run once. ``feed`` maps every input name to an array; returns every output by name."""
        if not self._active:
            raise RunnerError(f"{self.name}: call infer() inside 'with runner:' (or after runner.activate())")
        names = [m.name for m in self.input_metadata()]
        if not isinstance(feed, Mapping):  # e.g. a list of arrays: its items have no names to match
            raise TypeError(f"{self.name}: infer takes a dict {{input name: array}}; got a {type(feed).__name__} "
                            f"(names: {names})")
        expected = set(names)
        missing = expected - set(feed)
        extra = set(feed) - expected
        if missing or extra:
            raise RunnerError(f"{self.name}: feed has inputs {sorted(feed)}, the model expects {sorted(expected)}"
                              + (f"; missing {sorted(missing)}" if missing else "")
                              + (f"; unknown {sorted(extra)}" if extra else ""))
        start = time.perf_counter()
        outputs = self._infer(feed)
        self._last_time = time.perf_counter() - start
        return outputs

    def roi_inputs(self) -> Tuple[str, ...]:
        """Names of the inputs that hold RoI boxes, rows (batch index, x1, y1, x2, y2): random feeds
        (:func:`dcn_deploy.compare.compare_runners`, :func:`dcn_deploy.bench.benchmark`) give them valid boxes.
        Empty unless the runner can tell from its model (the ONNX Runtime runner reads the graph)."""
        return ()

    def compute_dtype(self) -> Optional[str]:
        """``"float16"`` or ``"bfloat16"`` when the runner computes in that half type although its outputs may be
        float32 (an fp16 TensorRT engine, a graph converted by ``convert_precision``); ``"tf32"`` for float32 values
        whose products are rounded to TF32 (a float32 TensorRT engine built with TF32 allowed): comparisons then allow
        that type's error (:func:`dcn_deploy.compare.compare_runners`). None when unknown or not narrower."""
        return None

    def last_inference_time(self) -> Optional[float]:
        """Seconds taken by the last ``infer`` call, or None before the first."""
        return self._last_time

    @abstractmethod
    def input_metadata(self) -> Tuple[TensorMeta, ...]:
        """The model's inputs, in order."""

    @abstractmethod
    def _activate(self) -> None: ...

    @abstractmethod
    def _deactivate(self) -> None: ...

    @abstractmethod
    def _infer(self, feed: Mapping[str, object]) -> Dict[str, np.ndarray]: ...
