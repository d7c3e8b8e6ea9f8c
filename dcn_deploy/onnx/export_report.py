"""What :func:`dcn_deploy.onnx.export.export` returns and raises: the :class:`ExportReport` (with one
:class:`VerificationRun` per ONNX Runtime check) and the errors, each saying what to change."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from ..compare import OutputComparison
from ..feeds import format_shape
from . import opset as dcn_opset
from .inspect import spaced_shape
from .user_code_errors import describe_exception  # not model_loading: that imports torch (adopt needs none)

__all__ = ["ExportReport", "VerificationRun", "ExportError", "ExportRefusedError", "ExampleInputsError",
           "VerificationError", "NoDeformableLayerError"]


class ExportError(RuntimeError):
    """The exporter could not turn the model into a valid ONNX file; the message says what to change."""


class ExportRefusedError(ExportError, ValueError):
    """One of our ops' exporter translations refused how the model calls it (e.g. adaptive RoI sampling in a
    functional call): bad input, and the message says what to change."""


class ExampleInputsError(ExportError, ValueError):
    """The model raised when run on the example inputs (wrong shape, count or dtype): bad input, not an exporter
    failure. ``shapes`` are the example shapes, ``model_name`` the model's class, ``cause`` the model's exception."""

    def __init__(self, shapes: Sequence[Tuple[int, ...]], model_name: str, cause: BaseException):
        self.shapes = [tuple(s) for s in shapes]
        self.model_name = model_name
        self.cause = cause
        super().__init__(f"the example inputs ({self.shapes_text}) do not fit {model_name}: {self.cause_text}")

    @property
    def shapes_text(self) -> str:
        return ", ".join(format_shape(s) for s in self.shapes)

    @property
    def cause_text(self) -> str:
        """``RuntimeError: <first line> (at my_model.py:12)``: where outside the installed packages it was raised."""
        return describe_exception(self.cause)


class NoDeformableLayerError(ValueError):
    """The exported graph contains no deformable convolution (nor other ``dcn_deploy`` op)."""


class VerificationError(RuntimeError):
    """The ONNX file's outputs differ from PyTorch's beyond tolerance. ``report`` holds every number."""

    def __init__(self, message: str, report: "ExportReport"):
        super().__init__(message)
        self.report = report


@dataclass
class VerificationRun:
    """ONNX Runtime vs PyTorch on one set of inputs (comparisons by :func:`dcn_deploy.compare.compare_outputs`,
    the rule ``dcn-deploy verify`` uses)."""

    label: str
    input_shapes: Dict[str, Tuple[int, ...]]
    outputs: List[OutputComparison]

    @property
    def passed(self) -> bool:
        return all(o.passed for o in self.outputs)


@dataclass
class ExportReport:
    """What :func:`dcn_deploy.onnx.export.export` wrote and measured. ``str(report)`` is a human summary."""

    path: Path
    opset: int
    dynamic: bool
    standard: bool
    inputs: List[Tuple[str, str, Tuple]]  # (name, dtype, shape with ints or dim names)
    outputs: List[Tuple[str, str, Tuple]]
    op_counts: Dict[str, int]  # "domain::op_type" -> count, for the dcn_deploy/DeformConv nodes
    rtol: Optional[float] = None  # None: the default of each output's dtype (dcn_deploy.compare)
    atol: Optional[float] = None
    verification: List[VerificationRun] = field(default_factory=list)
    warnings: List[str] = field(default_factory=list)
    seconds: Dict[str, float] = field(default_factory=dict)
    weights_path: Optional[Path] = None  # the external data file beside ``path`` (models over ~2 GiB), else None
    program: bool = False  # exported from a torch.export program: its shapes, whatever ``dynamic`` asked
    # where a file that failed verification was kept when an earlier file at ``path`` was put back, else None
    kept_as: Optional[Path] = None

    @property
    def verified(self) -> bool:
        return bool(self.verification) and all(run.passed for run in self.verification)

    def to_dict(self) -> dict:
        return {
            "path": str(self.path), "weights_path": None if self.weights_path is None else str(self.weights_path),
            "kept_as": None if self.kept_as is None else str(self.kept_as),
            "opset": self.opset, "dynamic": self.dynamic, "standard": self.standard, "program": self.program,
            "inputs": [{"name": n, "dtype": d, "shape": list(s)} for n, d, s in self.inputs],
            "outputs": [{"name": n, "dtype": d, "shape": list(s)} for n, d, s in self.outputs],
            "deformable_ops": dict(self.op_counts), "rtol": self.rtol, "atol": self.atol,
            "verification": [{"label": r.label, "input_shapes": {k: list(v) for k, v in r.input_shapes.items()},
                              "passed": r.passed,
                              "outputs": [{"name": o.output, "dtype": o.dtype, "shape": list(o.shape),
                                           "max_abs": o.max_abs, "max_rel": o.max_rel,
                                           "of_tolerance": o.of_tolerance, "atol": o.atol, "rtol": o.rtol,
                                           "passed": o.passed} for o in r.outputs]}
                             for r in self.verification],
            "verified": self.verified, "warnings": list(self.warnings), "seconds": dict(self.seconds),
        }

    def __str__(self) -> str:
        shapes = f"{'dynamic' if self.dynamic else 'static'} shapes{' kept from the program' if self.program else ''}"
        ops = ("no deformable ops" if not self.op_counts
               else "standard DeformConv" if self.standard else dcn_opset.DOMAIN + " ops")
        written = (f"{self.kept_as} (failed verification: {self.path}, which was there before, is unchanged)"
                   if self.kept_as is not None else str(self.path))
        lines = [f"wrote {written} (ONNX opset {self.opset}, {shapes}, {ops})"]
        if self.weights_path is not None:
            lines.append(f"  weights in {self.weights_path} (over 2 GiB: keep the two files together)")
        # " x " between sizes, as dcn-deploy inspect prints them: a derived size such as "((height - 1)//2) + 1"
        # then stays one readable piece
        lines += [f"  input  {n}: {d} {spaced_shape(s)}" for n, d, s in self.inputs]
        lines += [f"  output {n}: {d} {spaced_shape(s)}" for n, d, s in self.outputs]
        lines.append("  deformable nodes: " + (", ".join(f"{k} x{v}" for k, v in sorted(self.op_counts.items()))
                                               or "none"))
        for run in self.verification:
            lines.append(f"  ONNX Runtime vs PyTorch, {run.label}: {'PASS' if run.passed else 'FAIL'}")
            lines += [f"    {o.output}: max abs {o.max_abs:.3g}, max rel {o.max_rel:.3g}, {o.of_tolerance:.2g} of the "
                      f"tolerance atol {o.atol:g} + rtol {o.rtol:g} x |ref|{_why_failed(o)}" for o in run.outputs]
        lines += [f"  warning: {w}" for w in self.warnings]
        return "\n".join(lines)


def _why_failed(comparison) -> str:
    """"" for a passing output, else what failed: the comparison's note (NaN/inf, a shape) or the tolerance."""
    return "" if comparison.passed else f"  <- {comparison.note or 'beyond tolerance'}"
