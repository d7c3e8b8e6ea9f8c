"""Verify an exported ONNX file in ONNX Runtime (CPU) against the PyTorch model (:func:`verify_export`): on fresh
random inputs of the example shapes and, for a dynamic file, of another batch and spatial size, or on inputs the
caller gives; each output compared by :func:`dcn_deploy.compare.compare_outputs`, the rule ``dcn-deploy verify``
uses."""
from __future__ import annotations

import time
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np
import onnx
import torch

from ..backends.ort_runner import missing_float64_kernel, no_float64_kernel_hint
from ..compare import REFERENCE_NOT_FINITE, Tolerance, compare_outputs, tolerance_for
from ..feeds import box_image, format_shape, random_boxes, roi_input_names
from ..wording import argument, for_reader
from .export_report import ExportError, ExportReport, VerificationError, VerificationRun
from .model_loading import program_shape_mismatch

__all__ = ["verify_export"]


def verify_export(report: ExportReport, model, example_inputs, proto: onnx.ModelProto, seed: int, say,
                  verify_inputs=None, verify_examples: bool = False, *, inputs_label: str,
                  uses_float64: bool, kept_as: Optional[Path] = None) -> None:
    """Fill ``report.verification`` (and ``report.seconds["verify"]``) from ONNX Runtime vs PyTorch runs; raise
    :class:`VerificationError` beyond tolerance, :class:`ExportError` when ONNX Runtime cannot load or run the file.
    ``verify_examples``: run on the example inputs too, first (the user's own data). ``inputs_label``: what the
    messages call ``verify_inputs``.
    ``uses_float64``: the model or its inputs hold float64 tensors (names the missing ONNX Runtime kernel).
    ``kept_as``: where the file will be kept after a failure, when not at ``report.path`` (an earlier file there is
    put back: :class:`dcn_deploy.onnx.export_file.EarlierFile`)."""
    if any(t.dtype == torch.bfloat16 for t in example_inputs):
        report.warnings.append("not verified: ONNX Runtime's CPU provider has no bfloat16 kernels for Conv or "
                               "DeformConv (1.32), so this file runs only where bfloat16 does (ONNX Runtime's CUDA "
                               "provider: dcn-deploy verify FILE --runner ort-cuda --against torch --model ...). For "
                               "TensorRT, export in float32 and build with --precision bf16 instead: the build "
                               "converts the graph and keeps reductions in float32")
        return
    start = time.perf_counter()
    say("verifying against PyTorch in ONNX Runtime (CPUExecutionProvider) on "
        + ("the example inputs and " if verify_examples else "")
        + (f"the {inputs_label}" if verify_inputs is not None else "random inputs"))
    try:
        runs = _verification_runs(report, model, example_inputs, proto, seed, verify_inputs, verify_examples,
                                  uses_float64, inputs_label=inputs_label)
    except ExportError as exc:  # ONNX Runtime could not load or run the file it passed onnx.checker
        raise ExportError(f"{str(exc).rstrip('. ')}. {_kept(report.path, kept_as)}") from exc
    report.verification = runs
    report.seconds["verify"] = time.perf_counter() - start
    for run in runs:
        for out in run.outputs:
            say(f"  {run.label}: {out.output} max abs {out.max_abs:.3g}, max rel {out.max_rel:.3g}"
                f"{'' if out.passed else '  FAIL'}")
    if not report.verified:
        failed = [(r, o) for r in runs for o in r.outputs if not o.passed]
        bad = [f"{o.output} ({r.label}): max abs {o.max_abs:.3g}, max rel {o.max_rel:.3g}, {o.of_tolerance:.2g} of the "
               f"tolerance (atol {o.atol:g}, rtol {o.rtol:g}{', ' + o.note if o.note else ''})" for r, o in failed]
        if any(REFERENCE_NOT_FINITE in o.note for _, o in failed):
            # nothing to tune: PyTorch's own output is NaN/inf, so no file could be shown to match it
            head = f"{report.path} cannot be verified against PyTorch"
            advice = ("Nothing can be verified while PyTorch's own output holds NaN/inf: fix the model first (a "
                      "checkpoint of another architecture, for one, leaves tensors at random values), then export "
                      "again")
        else:
            head = f"{report.path} does not match PyTorch"
            advice = _mismatch_advice()
        report.kept_as = kept_as
        raise VerificationError(
            f"{head}: " + "; ".join(bad) + f". {_kept(report.path, kept_as)}. {advice}", report)


def _mismatch_advice() -> str:
    """What a mismatch may be and how to tell, worded for the reader: a library caller compares a float64 copy of
    the model in Python; a CLI user may first export again with --dtype float64."""
    roundoff = ("In float32, roundoff grows with large offsets (e.g. an untrained network's random offset branch "
                "samples far off the image). ")
    float64_copy = ("compare PyTorch's float32 output with that of a float64 copy (copy.deepcopy(model).double() run "
                    "on input.double()): a difference as large as the above is roundoff")
    tell = for_reader(
        f"To tell it from a bug, {float64_copy} (exporting that copy verifies in ONNX Runtime only without plain "
        "convolutions: its CPU provider has no float64 Conv). Otherwise please report it",
        "To tell it from a bug: for a model without plain convolutions (ONNX Runtime's CPU provider has no float64 "
        "Conv), export again with --dtype float64: if that verifies, the float32 difference is roundoff; for any "
        f"model, in Python, {float64_copy}. If neither explains it, please report it")
    return (f"A looser tolerance may be right for deep float16 models: pass {argument('rtol/atol', '--rtol/--atol')}. "
            f"{roundoff}{tell}")


def _kept(path: Path, kept_as: Optional[Path] = None) -> str:
    """What a failed verification leaves: the written file, kept on purpose (it passed onnx.checker) so the
    failure can be looked into; at ``kept_as`` when the file that was at ``path`` before is put back."""
    if kept_as is not None:
        return (f"The new file was kept for inspection as {kept_as} (dcn-deploy inspect {kept_as}); {path}, which "
                "was there before, is unchanged")
    return f"The file {path} was kept for inspection (dcn-deploy inspect {path}); delete it if not needed"


def _verification_runs(report: ExportReport, model, example_inputs, proto: onnx.ModelProto, seed: int,
                       verify_inputs=None, verify_examples: bool = False, uses_float64: bool = False, *,
                       inputs_label: str) -> List[VerificationRun]:
    """ONNX Runtime vs PyTorch on the example inputs (``verify_examples``), then on ``verify_inputs``, or on random
    inputs of the example shapes and, for a dynamic file, of other shapes (:func:`_other_shapes`)."""
    try:
        session = _make_session(report.path)
    except Exception as exc:  # onnxruntime's own exception types
        op = missing_float64_kernel(str(exc), uses_float64)
        if op is not None:
            raise ExportError(f"ONNX Runtime cannot load {report.path} ({str(exc).strip()}): "
                              f"{no_float64_kernel_hint(op)}, or pass "
                              + argument("verify=False", "--no-verify")) from exc
        raise ExportError(f"ONNX Runtime cannot load {report.path}: {str(exc).strip()}") from exc
    examples = ([_verify_once(session, model, tuple(example_inputs), "example inputs " + _shapes_text(example_inputs),
                              report.rtol, report.atol)] if verify_examples else [])
    if verify_inputs is not None:
        return examples + [_verify_once(session, model, tuple(inputs), f"{inputs_label} " + _shapes_text(inputs),
                                        report.rtol, report.atol) for inputs in verify_inputs]
    roi_names = roi_input_names(proto.graph)
    rois = [i for i, graph_input in enumerate(proto.graph.input) if graph_input.name in roi_names]
    runs = examples + [_verify_once(session, model,
                                    _random_inputs(example_inputs, [t.shape for t in example_inputs], seed, rois),
                                    "random inputs, example shapes", report.rtol, report.atol)]
    if report.dynamic:
        other = _other_shapes(example_inputs, proto.graph.input)
        if other is None:
            report.warnings.append("dynamic export, but no input dimension came out dynamic")
        elif isinstance(model, torch.export.ExportedProgram) and program_shape_mismatch(model, other[0]):
            pass  # beyond the ranges the program was exported with: it could not run them
        else:
            shapes, label = other
            runs.append(_verify_once(session, model, _random_inputs(example_inputs, shapes, seed + 1, rois),
                                     f"random inputs, {label}", report.rtol, report.atol))
    return runs


def _shapes_text(inputs: Sequence[torch.Tensor]) -> str:
    return ", ".join(format_shape(t.shape) for t in inputs)


def _make_session(path: Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _verify_once(session, model, inputs: Sequence[torch.Tensor], label: str,
                 rtol: Optional[float], atol: Optional[float]) -> VerificationRun:
    names = [i.name for i in session.get_inputs()]
    if len(names) != len(inputs):
        raise ExportError(f"the ONNX model has {len(names)} inputs {names} but {len(inputs)} example inputs were given; "
                          "inputs that the model ignores or constants are dropped by the exporter: remove them")
    feed = {n: t.detach().cpu().numpy() for n, t in zip(names, inputs)}
    try:
        got = session.run(None, feed)
    except Exception as exc:  # onnxruntime's own exception types
        shapes_text = ", ".join(f"{n} {tuple(a.shape)}" for n, a in feed.items())
        raise ExportError(f"ONNX Runtime failed to run the exported model ({label}: {shapes_text}): "
                          f"{str(exc).strip()}") from exc
    expected = _torch_outputs(model, inputs)
    out_names = [o.name for o in session.get_outputs()]
    if len(expected) != len(got):
        raise ExportError(f"PyTorch returned {len(expected)} tensors but the ONNX model has {len(got)} outputs {out_names}")
    comparisons = [compare_outputs("onnxruntime", n, np.asarray(g), e, _tolerance(e, rtol, atol),
                                   reference="PyTorch")
                   for n, g, e in zip(out_names, got, expected)]
    return VerificationRun(label, {n: tuple(int(d) for d in t.shape) for n, t in zip(names, inputs)}, comparisons)


def _torch_outputs(model, inputs: Sequence[torch.Tensor]) -> List[np.ndarray]:
    module = model.module() if isinstance(model, torch.export.ExportedProgram) else model
    with torch.no_grad():
        result = module(*inputs)
    leaves = torch.utils._pytree.tree_leaves(result)
    return [t.detach().cpu().float().numpy() if t.dtype == torch.bfloat16 else t.detach().cpu().numpy()
            for t in leaves if isinstance(t, torch.Tensor)]


def _tolerance(expected: np.ndarray, rtol: Optional[float], atol: Optional[float]) -> Tolerance:
    default = tolerance_for(expected.dtype)
    return Tolerance(atol=default.atol if atol is None else atol, rtol=default.rtol if rtol is None else rtol)


def _other_shapes(example_inputs: Sequence[torch.Tensor], graph_inputs) -> Optional[Tuple[List[List[int]], str]]:
    """Shapes for a second run of a dynamic model: batch + 1 where dim 0 is dynamic, and height/width doubled
    where they are dynamic and every 4-D input has the same height and width (doubling keeps sizes divisible
    by any stride, and inputs of different sizes, e.g. an offset map behind a strided layer, may be related)."""
    shapes = [list(t.shape) for t in example_inputs]
    dynamic = [[i for i, d in enumerate(gi.type.tensor_type.shape.dim) if not d.HasField("dim_value")]
               for gi in graph_inputs]
    spatial_sizes = {tuple(s[2:]) for s, dyn in zip(shapes, dynamic) if len(s) == 4 and (2 in dyn or 3 in dyn)}
    double = len(spatial_sizes) == 1
    changed = []
    for s, dyn in zip(shapes, dynamic):
        if 0 in dyn:
            s[0] += 1
            changed.append("batch")
        if double and len(s) == 4:
            for axis in (2, 3):
                if axis in dyn:
                    s[axis] *= 2
                    changed.append("spatial")
    if not changed:
        return None
    parts = []
    if "batch" in changed:
        parts.append(f"batch {shapes[0][0]}")
    if "spatial" in changed:
        parts.append("height/width x2")
    return shapes, ", ".join(parts)


def _random_inputs(example_inputs, shapes: Sequence[Sequence[int]], seed: int,
                   rois: Sequence[int] = ()) -> List[torch.Tensor]:
    """Random inputs of the given shapes; those at the positions ``rois`` (RoI box lists) get valid boxes inside
    the first other 4-D input (random normal values would put boxes in images that do not exist)."""
    generator = torch.Generator().manual_seed(seed)
    inputs = [_random_like(t, s, generator) for t, s in zip(example_inputs, shapes)]
    image = box_image(shapes, [i in rois for i in range(len(shapes))])
    rng = np.random.default_rng(seed)
    for i in rois:
        if image is not None:
            boxes = random_boxes(tuple(shapes[i]), np.float32, image, rng)
            inputs[i] = torch.from_numpy(boxes).to(example_inputs[i].dtype)
    return inputs


def _random_like(t: torch.Tensor, shape: Sequence[int], generator: torch.Generator) -> torch.Tensor:
    if t.is_floating_point():
        return torch.randn(tuple(shape), generator=generator, dtype=torch.float32).to(t.dtype).to(t.device)
    if t.dtype == torch.bool:
        return torch.randint(0, 2, tuple(shape), generator=generator).bool().to(t.device)
    if tuple(shape) == tuple(t.shape):  # integer inputs (indices, sizes): random values could be invalid
        return t.clone()
    raise ExportError(f"cannot make random integer inputs of a new shape {tuple(shape)}; export with dynamic=False")
