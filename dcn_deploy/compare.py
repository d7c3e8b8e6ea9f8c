"""Compare runners on the same inputs: per-output max absolute/relative error, pass/fail with per-dtype tolerances.

The first runner is the reference. Every other runner gets the same feed (random with a fixed seed, or the
user's arrays) and each of its outputs is compared with the reference's output of the same name:

- ``max_abs = max |out - ref|``
- ``max_rel = max |out - ref| / max(|ref|, atol)`` (``atol`` in the denominator keeps the ratio finite where the
  reference is near zero, where only the absolute error means anything)
- pass when every element has ``|out - ref| <= atol + rtol * |ref|`` (numpy's ``allclose`` rule) and shapes agree;
- ``of_tolerance = max |out - ref| / (atol + rtol * |ref|)``: that rule as one number, at most 1 to pass (the max
  relative error alone can exceed rtol on a passing output: the atol term absorbs small references).

NaN is never "matched": a verification that compares NaN with NaN verifies nothing (an all-NaN model, e.g. a
checkpoint that left tensors at random values, would pass against itself). An infinity matches only the same
infinity at the same place (a model that masks logits with -inf verifies). So:

- a reference output holding NaN, or an inf the output under test does not reproduce, fails, with a note saying
  how many values and what to check (the weights, the inputs); its finite elements are still compared and
  reported;
- an output under test holding NaN/inf where the reference is finite fails too: those elements count as an
  infinite error (``max_abs``, ``max_rel`` and ``of_tolerance`` are ``inf``) and the note says how many;
- the errors are computed over the elements whose reference is finite, so ``max_rel`` is never NaN; with no
  such element (or shapes that differ) every error is ``inf``, or 0 when every value is an inf reproduced.

Tolerances depend on the output's dtype (:data:`DEFAULT_TOLERANCES`), or, for a float32/float64 output, on the half
type either runner computes in (:meth:`Runner.compute_dtype`: an fp16 TensorRT engine, a graph converted to float16
inside float32 inputs and outputs; ``"tf32"`` for a float32 engine built with TF32 allowed), with a note saying so;
the caller may override them.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from .backends.base import Runner
from .feeds import check_roi_batch_indices, format_shape, random_feed
from .json_text import json_text
from .onnx.compute_type import NARROW_TYPES, narrowest_compute_type
from .wording import argument

__all__ = ["DEFAULT_TOLERANCES", "Tolerance", "OutputComparison", "ComparisonResult", "compare_outputs",
           "compare_runners", "runner_roi_inputs", "tolerance_for"]


@dataclass(frozen=True)
class Tolerance:
    """Pass rule ``|out - ref| <= atol + rtol * |ref|``; both finite and >= 0."""

    atol: float
    rtol: float

    def __post_init__(self) -> None:
        # a negative bound fails every element, and the report then reads like a wrong model
        for name in ("atol", "rtol"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)) \
                    or not np.isfinite(value) or value < 0:
                raise ValueError(f"{argument(name, '--' + name)} must be a finite number >= 0, got {value!r}")


# float32 bounds: a deformable network's outputs differ between implementations by summation order only
# (measured ~1e-6 relative); 1e-4/1e-3 leaves room for deep networks without hiding a wrong offset or mask.
DEFAULT_TOLERANCES: Dict[str, Tolerance] = {
    "float64": Tolerance(1e-7, 1e-6),
    "float32": Tolerance(1e-4, 1e-3),
    "float16": Tolerance(1e-2, 1e-2),
    "bfloat16": Tolerance(5e-2, 5e-2),
    # float32 values whose products are rounded to float16's 10-bit mantissa (a float32 TensorRT engine built with
    # TF32 allowed): float16's bounds, as the products lose what float16 storage would
    "tf32": Tolerance(1e-2, 1e-2),
    "integer": Tolerance(0.0, 0.0),
    "bool": Tolerance(0.0, 0.0),
}


def tolerance_for(dtype: np.dtype, overrides: Optional[Mapping[str, Tolerance]] = None) -> Tolerance:
    """The tolerance for a dtype: ``overrides`` first (keyed like :data:`DEFAULT_TOLERANCES`), then the default."""
    if isinstance(dtype, str) and dtype in DEFAULT_TOLERANCES:  # e.g. computed_in="bfloat16": numpy may not know it
        key = dtype
    else:
        dtype = np.dtype(dtype)
        key = {"i": "integer", "u": "integer", "b": "bool"}.get(dtype.kind, dtype.name)
    table = dict(DEFAULT_TOLERANCES)
    table.update(overrides or {})
    if key not in table:
        raise ValueError(f"no tolerance for dtype {dtype}; give one (e.g. --atol/--rtol)")
    return table[key]


@dataclass
class OutputComparison:
    """One output of one runner compared with the reference's."""

    runner: str
    output: str
    dtype: str
    shape: Tuple[int, ...]
    max_abs: float
    max_rel: float
    mean_abs: float
    atol: float
    rtol: float
    mismatched: int  # elements beyond atol + rtol*|ref|, NaN/inf under test, and NaN/inf in the reference
    of_tolerance: float  # max |out - ref| / (atol + rtol*|ref|): <= 1 passes
    passed: bool
    note: str = ""


@dataclass
class ComparisonResult:
    """Every comparison of one run; ``passed`` when all passed. ``table()`` for people, ``to_dict()`` for JSON."""

    reference: str
    runners: List[str]
    feed: Dict[str, Tuple[Tuple[int, ...], str]]  # input -> (shape, dtype)
    outputs: List[OutputComparison] = field(default_factory=list)
    seed: Optional[int] = None

    @property
    def passed(self) -> bool:
        return bool(self.outputs) and all(o.passed for o in self.outputs)

    @property
    def max_abs(self) -> float:
        return max((o.max_abs for o in self.outputs), default=float("nan"))

    def to_dict(self) -> dict:
        return {
            "passed": self.passed,
            "reference": self.reference,
            "runners": self.runners,
            "seed": self.seed,
            "inputs": {k: {"shape": list(s), "dtype": d} for k, (s, d) in self.feed.items()},
            "outputs": [{**asdict(o), "shape": list(o.shape)} for o in self.outputs],
        }

    def to_json(self) -> str:
        return json_text(self.to_dict())

    def table(self) -> str:
        inputs = ", ".join(f"{k} {format_shape(s)} {d}" for k, (s, d) in self.feed.items())
        seed = "" if self.seed is None else f" (seed {self.seed})"
        lines = [f"reference: {self.reference}    inputs: {inputs}{seed}"]
        header = ("runner", "output", "shape", "dtype", "max abs err", "max rel err", "atol / rtol", "of tolerance",
                  "result")
        rows = [header]
        for o in self.outputs:
            verdict = "PASS" if o.passed else "FAIL"
            if o.note:
                verdict += f" ({o.note})"
            rows.append((o.runner, o.output, format_shape(o.shape), o.dtype, f"{o.max_abs:.3g}", f"{o.max_rel:.3g}",
                         f"{o.atol:g} / {o.rtol:g}", f"{o.of_tolerance:.3g}", verdict))
        lines.extend(_format_rows(rows))
        lines.append(f"{'PASSED' if self.passed else 'FAILED'}: {sum(o.passed for o in self.outputs)} of "
                     f"{len(self.outputs)} outputs within tolerance (|err| <= atol + rtol*|ref| everywhere, i.e. "
                     f"'of tolerance' <= 1)")
        return "\n".join(lines)


def check_rois_argument(rois) -> Optional[Tuple[str, ...]]:
    """``rois=`` of :func:`compare_runners` / :func:`dcn_deploy.bench.benchmark` as a tuple of names (None kept).
    A bare string is refused: ``name in "rois_a"`` would match substrings, so inputs such as ``"a"`` would be
    taken for RoI inputs."""
    if rois is None:
        return None
    if isinstance(rois, (str, bytes)):
        raise TypeError(f"rois must be a list of input names, e.g. rois=[{rois!r}], got the string {rois!r}")
    names = tuple(rois)
    if not all(isinstance(n, str) for n in names):
        raise TypeError(f"rois must be a list of input names (strings), got {names!r}")
    return names


def check_runners_argument(runners, call: str) -> List[Runner]:
    """``runners`` of :func:`compare_runners` / :func:`dcn_deploy.bench.benchmark` as a list of Runner objects,
    or a TypeError naming the call and the fix (a single runner, a model, a path)."""
    if isinstance(runners, Runner):
        raise TypeError(f"{call} takes a list of runners, got one {type(runners).__name__}; pass [runner]")
    if isinstance(runners, (str, bytes)) or not hasattr(runners, "__iter__"):
        raise TypeError(f"{call} takes a list of Runner objects, got {type(runners).__name__} {runners!r}")
    runners = list(runners)
    strangers = [r for r in runners if not isinstance(r, Runner)]
    if strangers:
        raise TypeError(f"{call} takes Runner objects, got {type(strangers[0]).__name__} "
                        f"{strangers[0]!r}; make them with dcn_deploy.make_runner(kind, path), e.g. "
                        "make_runner('ort', 'model.onnx')")
    return runners


def _format_rows(rows: Sequence[Sequence[str]]) -> List[str]:
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    out = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    out.insert(1, "  ".join("-" * w for w in widths))
    return out


# What a note says after the count when the reference holds NaN, or inf the output does not reproduce (export's
# verification recognises it by this text).
REFERENCE_NOT_FINITE = "NaN/inf values: nothing to compare there"


# How the note of an output whose shape differs from the reference's begins (verify's hint looks for it).
SHAPE_MISMATCH = "shape "


def _narrowed_note(computed_in: str) -> str:
    """The note of an output held to a narrower compute type's tolerance than its own dtype's."""
    if computed_in == "tf32":
        return ("computed with TF32 products (a float32 engine built with TF32 allowed, TensorRT's default): tf32's "
                "tolerance; build with --no-tf32 for IEEE float32")
    return f"computed in {computed_in}: {computed_in}'s tolerance"


def compare_outputs(runner: str, name: str, actual: np.ndarray, expected: np.ndarray,
                    tolerance: Optional[Tolerance] = None,
                    overrides: Optional[Mapping[str, Tolerance]] = None,
                    reference: str = "", computed_in: Optional[str] = None) -> OutputComparison:
    """Compare one output array with the reference's (see the module docstring for the rule).

    ``reference`` names the reference runner in the note of a failure (e.g. ``"PyTorch"``); empty: "reference".
    ``computed_in``: ``"float16"``/``"bfloat16"``/``"tf32"`` when one side computed in that type
    (:meth:`Runner.compute_dtype`): a float32 or float64 output is then held to that type's tolerance, and the note
    says so.
    """
    actual = np.asarray(actual)
    expected = np.asarray(expected)
    narrowed = (tolerance is None and computed_in is not None and expected.dtype.kind == "f"
                and expected.dtype.itemsize > 2)
    tol = tolerance or tolerance_for(computed_in if narrowed else expected.dtype, overrides)
    base = dict(runner=runner, output=name, dtype=str(expected.dtype), shape=tuple(expected.shape),
                atol=tol.atol, rtol=tol.rtol)
    inf = float("inf")
    if actual.shape != expected.shape:
        return OutputComparison(**base, max_abs=inf, max_rel=inf, mean_abs=inf,
                                mismatched=int(expected.size), of_tolerance=inf, passed=False,
                                note=f"{SHAPE_MISMATCH}{format_shape(actual.shape)} != reference "
                                     f"{format_shape(expected.shape)}")
    if expected.size == 0:
        return OutputComparison(**base, max_abs=0.0, max_rel=0.0, mean_abs=0.0, mismatched=0, of_tolerance=0.0,
                                passed=True,
                                note="empty")
    a = actual.astype(np.float64)
    e = expected.astype(np.float64)
    # Only a finite reference can be checked against; a NaN there, or an inf not reproduced exactly, fails the output
    # (module docstring). An inf reproduced exactly (a -inf mask of logits, say) is a match.
    checked = np.isfinite(e)
    same_inf = np.isinf(e) & (a == e)
    broken = checked & ~np.isfinite(a)  # NaN/inf under test where the reference is finite: an infinite error
    both = checked & ~broken
    with np.errstate(invalid="ignore", over="ignore"):
        diff = np.where(both, np.abs(a - e), 0.0)
        diff[broken] = inf
        rel = diff / np.maximum(np.abs(e), max(tol.atol, np.finfo(np.float64).tiny))
        allowed = tol.atol + tol.rtol * np.where(checked, np.abs(e), 0.0)
        bad = (diff > allowed) & checked
        # a zero allowance (atol = rtol = 0, or rtol alone on a zero reference) makes any error infinitely many
        # tolerances, and an exact match zero of them
        with np.errstate(divide="ignore"):
            ratio = np.where(diff > 0, diff / allowed, 0.0)
    unchecked = int((~checked & ~same_inf).sum())
    notes = [_narrowed_note(computed_in)] if narrowed else []
    if unchecked:
        notes.append(f"the reference ({reference}) output" if reference else "the reference output")
        notes[-1] += (f" has {unchecked} of {expected.size} {REFERENCE_NOT_FINITE}; check the weights (tensors "
                      "missing from a checkpoint stay at random values) and the inputs")
    if broken.any():
        notes.append(f"{int(broken.sum())} of {expected.size} values NaN/inf where the reference is finite")
    if bad.sum() > broken.sum():
        notes.append(f"{int(bad.sum() - broken.sum())} of {expected.size} elements beyond tolerance")
    mismatched = int(bad.sum()) + unchecked
    if checked.any():
        max_abs, max_rel = float(diff[checked].max()), float(rel[checked].max())
        mean_abs, of_tolerance = float(diff[checked].mean()), float(ratio[checked].max())
    elif mismatched == 0:  # every value an inf reproduced exactly
        max_abs = max_rel = mean_abs = of_tolerance = 0.0
    else:  # nothing could be compared: no number would be honest but "unbounded"
        max_abs = max_rel = mean_abs = of_tolerance = inf
    return OutputComparison(**base, max_abs=max_abs, max_rel=max_rel, mean_abs=mean_abs, mismatched=mismatched,
                            of_tolerance=of_tolerance, passed=mismatched == 0, note="; ".join(notes))


def compare_runners(runners: Sequence[Runner], feed: Optional[Mapping[str, np.ndarray]] = None, *,
                    shapes: Optional[Mapping[str, Sequence[int]]] = None, batch: Optional[int] = None,
                    seed: int = 0, tolerances: Optional[Mapping[str, Tolerance]] = None,
                    tolerance: Optional[Tolerance] = None,
                    rois: Optional[Sequence[str]] = None,
                    computed_in: Optional[str] = None) -> ComparisonResult:
    """Run every runner on one feed and compare each with ``runners[0]`` (the reference).

    Args:
        runners: the reference first, then the runners to check (e.g. ``[TorchRunner(...), OrtRunner(path)]``).
            Runners that are not active are activated for the call and deactivated after.
        feed: ``{input name: np.ndarray}``; None for a random feed made from the reference's input metadata.
        shapes: ``{input name: shape}`` for the dynamic dimensions of a random feed; ``batch`` sets dimension 0.
        seed: fixes a random feed's values.
        tolerances: ``{dtype key: Tolerance}`` overriding :data:`DEFAULT_TOLERANCES` (keys ``"float32"``, ...);
            ``tolerance`` applies one to every output.
        rois: inputs that hold RoI boxes and get valid random boxes (:func:`dcn_deploy.feeds.roi_inputs`);
            None (default): those the runners report (:meth:`Runner.roi_inputs`; the ONNX Runtime runner reads
            them from its graph). Give them when you know them (the CLI does) to spare that runner a second read
            of its file. A given ``feed``'s boxes are checked (a batch index naming an image, finite coordinates).
        computed_in: the narrowest type any runner computes in, ``"float32"`` (none narrower), ``"float16"``,
            ``"bfloat16"`` or ``"tf32"``, when the caller knows it (the CLI reads the file once for everything);
            None (default): each pair asks its runners (:meth:`Runner.compute_dtype`). A narrower type holds
            float32/float64 outputs to its own tolerance, with a note.

    Returns:
        :class:`ComparisonResult` (``passed``, ``table()``, ``to_dict()``). Outputs are matched by name; if the
        names differ but the counts agree they are matched by position.
    """
    runners = check_runners_argument(runners, "compare_runners")
    if len(runners) < 2:
        raise ValueError("compare_runners needs at least two runners: a reference and one to check")
    rois = check_rois_argument(rois)
    if feed is not None and not isinstance(feed, Mapping):
        raise TypeError(f"compare_runners' feed must be a dict {{input name: array}} (or None for random inputs), "
                        f"got a {type(feed).__name__}")
    if tolerances is not None and not isinstance(tolerances, Mapping):
        raise TypeError(f"compare_runners' tolerances must be a dict {{dtype: Tolerance}}, e.g. "
                        f"{{'float32': Tolerance(atol=1e-4, rtol=1e-3)}}, got {tolerances!r}; one Tolerance for every "
                        "output is tolerance=")
    unknown = sorted(set(tolerances or {}) - set(DEFAULT_TOLERANCES))
    if unknown:  # a misspelt key would be ignored and the default tolerance used without a word
        raise ValueError(f"compare_runners' tolerances has keys {unknown}; the keys are {sorted(DEFAULT_TOLERANCES)}")
    for name, value in (("tolerance", tolerance), *((f"tolerances[{k!r}]", v) for k, v in (tolerances or {}).items())):
        if value is not None and not isinstance(value, Tolerance):
            raise TypeError(f"compare_runners' {name} must be a Tolerance, got {value!r}; write "
                            "Tolerance(atol=1e-4, rtol=1e-3)")
    if computed_in not in (None, "float32", *NARROW_TYPES):
        raise ValueError(f"computed_in must be None, 'float32', 'float16', 'bfloat16' or 'tf32', got {computed_in!r}")
    if len({id(r) for r in runners}) != len(runners):
        raise ValueError("compare_runners got the same runner object twice: it would only be compared with itself; "
                         "make a second runner (e.g. another backend) to compare with")
    # The ONNX Runtime runner reads its file to name its RoI inputs: asked only for a random feed, or for a given
    # feed that holds (K, 5) arrays, whose boxes are checked (ONNX Runtime would only say "index out of range").
    maybe_boxes = feed is not None and any(np.ndim(v) == 2 and np.shape(v)[1] == 5 for v in feed.values())
    if rois is None and (feed is None or maybe_boxes):
        rois = runner_roi_inputs(runners)
    if maybe_boxes:
        check_roi_batch_indices(feed, rois)
    activated = [r for r in runners if not r.is_active]
    try:
        for r in activated:
            r.activate()
        reference = runners[0]
        if feed is None:
            feed = random_feed(reference.input_metadata(), shapes, batch, seed, rois)
        else:
            seed = None
        result = ComparisonResult(reference=reference.name, runners=[r.name for r in runners],
                                  feed={k: _feed_summary(v) for k, v in feed.items()}, seed=seed)
        expected = reference.infer(feed)
        # the reference asked once, not once per runner compared: the ONNX Runtime runner reads its file to answer
        reference_half = reference.compute_dtype() if computed_in is None else computed_in
        for runner in runners[1:]:
            actual = runner.infer(feed)
            pairs = match_outputs(runner.name, actual, expected)
            half = narrowest_compute_type(reference_half, runner.compute_dtype() if computed_in is None else None)
            for name, act, exp in pairs:
                result.outputs.append(compare_outputs(runner.name, name, act, exp, tolerance, tolerances,
                                                      reference=reference.name, computed_in=half))
        return result
    finally:
        for r in activated:
            r.deactivate()


def _feed_summary(value) -> Tuple[Tuple[int, ...], str]:
    """(shape, dtype name) of a feed value: a numpy array, a torch tensor (``float32``, not ``torch.float32``) or
    anything else numpy reads (the runners then say whether they take it)."""
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        return tuple(int(d) for d in value.shape), str(value.dtype).replace("torch.", "")
    try:
        array = np.asarray(value)
    except (ValueError, TypeError):  # e.g. a ragged list: the runner reports it
        return (), type(value).__name__
    return tuple(array.shape), str(array.dtype)


def runner_roi_inputs(runners: Sequence[Runner]) -> Tuple[str, ...]:
    """The RoI box inputs any of ``runners`` reports (:meth:`Runner.roi_inputs`), in order, without repeats."""
    names: Dict[str, None] = {}
    for runner in runners:
        method = getattr(runner, "roi_inputs", None)  # runners written before the method existed
        names.update(dict.fromkeys(method() if callable(method) else ()))
    return tuple(names)


def match_outputs(runner: str, actual: Mapping[str, object],
                  expected: Mapping[str, object]) -> List[Tuple[str, object, object]]:
    """``(reference name, runner's value, reference's value)`` per output: by name, else by position when the
    counts agree (compare_runners and bench's output check); ValueError when neither matches."""
    if set(actual) == set(expected):
        return [(k, actual[k], expected[k]) for k in expected]
    if len(actual) == len(expected):  # e.g. a PyTorch model's unnamed outputs vs an ONNX file's names
        return [(k, a, expected[k]) for k, a in zip(expected, actual.values())]
    raise ValueError(f"{runner} returned outputs {sorted(actual)}, the reference returned {sorted(expected)}; "
                     "they cannot be matched by name or by position")

