"""Export a PyTorch model that uses ``dcn_deploy`` ops to an ONNX file, then check and verify it.

``export(model, example_inputs, path)``:

1. validates the arguments (a module or ``torch.export`` program, a tuple of tensors, a supported opset) and
   runs the model once on the example inputs, so inputs that do not fit it are named before the exporter runs;
2. runs torch.onnx's dynamo exporter, with each ``dcn_deploy`` torch op mapped to its node of the ``dcn_deploy``
   ONNX domain (or to standard ONNX with ``standard=True``), see :mod:`dcn_deploy.onnx.opset`;
3. stores the ops' function bodies in the model, so stock ONNX Runtime runs it, and the example input shapes in
   its ``metadata_props`` (key ``dcn_deploy.example_shapes``, JSON ``{input name: [dims]}``), which ``dcn-deploy
   verify/bench`` use for dynamic dimensions not given with ``--shape``;
4. writes the file atomically, after ``onnx.checker`` (full check) and strict shape inference passed;
5. with ``verify=True`` runs the file in ONNX Runtime (CPU) against the PyTorch model on fresh random inputs
   (and, for a dynamic export, again at another batch size and spatial size) and raises
   :class:`VerificationError` when an output differs beyond tolerance.
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
import shutil
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import onnx
import torch

from ..backends.ort_runner import missing_float64_kernel, no_float64_kernel_hint
from ..compare import OutputComparison, Tolerance, compare_outputs, tolerance_for
from ..feeds import EXAMPLE_SHAPES_KEY, box_image, format_shape, random_boxes, roi_input_names
from ..io_utils import atomic_path, check_output_path, give_default_permissions
from . import opset as dcn_opset
from .dynamic_shapes import dynamic_shapes, tied_dynamic_shapes
from .external_data import PROTOBUF_LIMIT, data_file_name, serialized_size, write_with_external_data
from .graph_names import check_io_names, rename_graph_io, rename_symbols, rois_sharing_the_batch
from .inspect import spaced_shape
from .model_loading import describe_exception, program_shape_mismatch

__all__ = ["export", "ExportReport", "VerificationRun", "ExportError", "ExampleInputsError", "VerificationError",
           "NoDeformableLayerError", "EXAMPLE_SHAPES_KEY"]

Progress = Optional[Callable[[str], None]]


class ExportError(RuntimeError):
    """The exporter could not turn the model into a valid ONNX file; the message says what to change."""


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
    """What :func:`export` wrote and measured. ``str(report)`` is a human summary."""

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

    @property
    def verified(self) -> bool:
        return bool(self.verification) and all(run.passed for run in self.verification)

    def to_dict(self) -> dict:
        return {
            "path": str(self.path), "weights_path": None if self.weights_path is None else str(self.weights_path),
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
        lines = [f"wrote {self.path} (ONNX opset {self.opset}, {shapes}, {ops})"]
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
                      f"tolerance atol {o.atol:g} + rtol {o.rtol:g} x |ref|{'' if o.passed else '  <- beyond tolerance'}"
                      for o in run.outputs]
        lines += [f"  warning: {w}" for w in self.warnings]
        return "\n".join(lines)


# --------------------------------------------------------------------------------------------------------------
# argument checks
# --------------------------------------------------------------------------------------------------------------

def _check_model(model) -> None:
    if not isinstance(model, (torch.nn.Module, torch.export.ExportedProgram)):
        raise TypeError(f"model must be a torch.nn.Module or a torch.export.ExportedProgram, got {type(model).__name__}")


@contextlib.contextmanager
def _eval_mode(model):
    """Export and verify in eval mode, as ``torch.onnx.export`` does by default: a deployed model runs inference,
    and dropout and BatchNorm differ in training mode. Yields the first submodule that was training ('' for the
    model itself), or None; every submodule's own flag is put back afterwards (a frozen BatchNorm stays frozen)."""
    if not isinstance(model, torch.nn.Module) or "eval" in vars(model):
        yield None  # a torch.export program's module() refuses eval(): its graph was fixed when it was exported
        return
    modes = {module: module.training for module in model.modules()}
    training = next((name for name, module in model.named_modules() if module.training), None)
    model.eval()
    try:
        yield training
    finally:
        for module, mode in modes.items():
            module.training = mode


def _check_tolerance(rtol: Optional[float], atol: Optional[float]) -> None:
    """The verification tolerance, checked before the (slow) export by the rule every comparison uses."""
    Tolerance(atol=0.0 if atol is None else atol, rtol=0.0 if rtol is None else rtol)


def _check_example_inputs(example_inputs) -> Tuple[torch.Tensor, ...]:
    if isinstance(example_inputs, torch.Tensor):
        raise TypeError("example_inputs must be a tuple of tensors, got a single tensor; pass (x,) instead of x")
    if not isinstance(example_inputs, tuple):
        raise TypeError(f"example_inputs must be a tuple of tensors (as in torch.onnx.export), "
                        f"got {type(example_inputs).__name__}; wrap it: tuple(inputs)")
    if not example_inputs:
        raise TypeError("example_inputs is empty; give one example tensor per model input, e.g. (torch.randn(1, 3, 64, 64),)")
    for i, t in enumerate(example_inputs):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"example_inputs[{i}] must be a torch.Tensor, got {type(t).__name__}; "
                            "models whose inputs are not tensors cannot be exported")
    return example_inputs


def _check_inputs_fit(model, example_inputs: Sequence[torch.Tensor]) -> None:
    """Run the model once, eagerly, on the example inputs: a model that cannot run on them fails here with its
    own message, instead of deep inside torch.export with an internal one."""
    shapes = [tuple(t.shape) for t in example_inputs]
    if isinstance(model, torch.export.ExportedProgram):
        # a program's module() runs at other shapes too, but the exporter writes the program's own shapes
        problem = program_shape_mismatch(model, shapes)
        if problem is not None:
            raise ExampleInputsError(shapes, type(model).__name__, ValueError(
                f"{problem}; a torch.export program keeps the shapes it was exported with: export it again "
                "with dynamic_shapes, or give inputs of its shapes"))
    module = model.module() if isinstance(model, torch.export.ExportedProgram) else model
    if getattr(module, "training", False):
        return  # a training-mode forward would update BatchNorm statistics: the exporter's own trace must do
    try:
        with torch.no_grad():
            module(*example_inputs)
    except Exception as exc:  # noqa: BLE001 - whatever the user's model raises is reported as its own error
        raise ExampleInputsError(shapes, type(model).__name__, exc) from exc


def _float_dtypes(model, example_inputs: Sequence[torch.Tensor]) -> set:
    tensors = list(example_inputs)
    if isinstance(model, torch.nn.Module):
        tensors += list(model.parameters()) + list(model.buffers())
    else:
        tensors += list(model.state_dict.values())
    return {t.dtype for t in tensors if isinstance(t, torch.Tensor) and t.is_floating_point()}


def _check_opset(opset, dtypes: set) -> int:
    newest = onnx.defs.onnx_opset_version()
    if isinstance(opset, bool) or not isinstance(opset, int):
        raise TypeError(f"opset must be an int, got {opset!r}")
    if opset < dcn_opset.MIN_OPSET or opset > newest:
        raise ValueError(f"ONNX opset {opset} is not supported: deformable convolution (DeformConv) exists from opset "
                         f"{dcn_opset.MIN_OPSET}; choose an opset from {dcn_opset.MIN_OPSET} to {newest} (default 19)")
    if torch.bfloat16 in dtypes and opset < dcn_opset.BFLOAT16_MIN_OPSET:
        raise ValueError(f"the model uses bfloat16, which DeformConv supports from ONNX opset "
                         f"{dcn_opset.BFLOAT16_MIN_OPSET}; got opset {opset}: pass opset={dcn_opset.BFLOAT16_MIN_OPSET} (CLI: --opset 22)")
    return opset


# --------------------------------------------------------------------------------------------------------------
# export
# --------------------------------------------------------------------------------------------------------------

def _translation_table(standard: bool, opset: int) -> dict:
    from dcn_deploy.ops import register_torch_ops

    register_torch_ops()

    table = {}
    for definition in dcn_opset.definitions():
        if definition.torch_op is None or definition.make_translation is None:
            continue
        namespace, name = definition.torch_op.split("::")
        try:
            packet = getattr(getattr(torch.ops, namespace), name)
        except (AttributeError, RuntimeError):
            continue  # the torch op's module is not loaded, so no model can use it
        table[packet.default] = definition.make_translation(standard, opset)
    return table


def _tied_program(model: torch.nn.Module, example_inputs: Sequence[torch.Tensor],
                  untied: Sequence[int] = ()) -> Optional["torch.export.ExportedProgram"]:
    """torch.export of ``model`` with :func:`tied_dynamic_shapes`, or None when no size is shared or the model
    does not allow the ties (e.g. it fixes one of the sizes): the caller then frees each size on its own.

    torch.export is called here rather than inside torch.onnx.export because the latter, when the shapes given
    are refused, retries with shapes of its own guessing; a refusal here is a clean fallback instead."""
    shapes = tied_dynamic_shapes(example_inputs, untied)
    if shapes is None:
        return None
    try:
        # backed_size_oblivious: an example batch of 1 stays dynamic (as torch.onnx.export does it). A private
        # setting: on a torch without it this raises, and the export goes on untied.
        from torch.fx.experimental import _config as fx_config

        with _quiet_exporter(), fx_config.patch(backed_size_oblivious=True):
            return torch.export.export(model, tuple(example_inputs), dynamic_shapes=shapes, strict=False)
    except Exception:  # noqa: BLE001 - constraint violations and any trace failure: export untied instead
        return None


@contextlib.contextmanager
def _quiet_exporter():
    """Silence the exporter's chatter (torchvision-missing notices, deprecation warnings); keep real errors.

    torch.export's tracer logs some failures at ERROR level (e.g. "always_classified is unsupported") before it
    raises, symbolic_shapes and dynamo warn about the same failure ("Unable to find user code ..."), and
    torch.export prints a failed trace's partial FX graph to stderr (tens of lines per try): the raised exception
    (chained into ExportError, the graph in its ``partial_fx_graph``) carries the same information, so those lines
    go. What is printed to stderr during an export that succeeds is passed on afterwards.
    """
    quieted = {"torch.onnx._internal.exporter._registration": logging.ERROR, "torch.export._trace": logging.CRITICAL,
               "torch.fx.experimental.symbolic_shapes": logging.ERROR, "torch._dynamo": logging.ERROR}
    levels = {name: logging.getLogger(name).level for name in quieted}
    for name, level in quieted.items():
        logging.getLogger(name).setLevel(level)
    printed = io.StringIO()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stderr(printed):
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.filterwarnings("ignore", message=".*torchvision.*")
            yield
    except BaseException:
        raise  # what was printed describes this failure again (the partial graphs): dropped
    else:
        if printed.getvalue():
            sys.stderr.write(printed.getvalue())
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


def _run_exporter(model, example_inputs, opset: int, dynamic: bool, standard: bool,
                  untied: Sequence[int] = ()) -> onnx.ModelProto:
    """torch.onnx's dynamo exporter on ``model``; with ``dynamic`` (an nn.Module), the inputs' sizes that are equal
    in the example share one symbol (:func:`_tied_program`) where the model allows it, except dim 0 of the
    inputs at the positions ``untied``."""
    kwargs = dict(dynamo=True, opset_version=opset, verbose=False, optimize=True,
                  custom_translation_table=_translation_table(standard, opset))
    name = type(model).__name__
    if dynamic and isinstance(model, torch.nn.Module):
        tied = _tied_program(model, example_inputs, untied)
        if tied is not None:
            model = tied  # its symbols are already shared: the exporter keeps them
        else:
            kwargs["dynamic_shapes"] = dynamic_shapes(example_inputs)
    try:
        with _quiet_exporter(), torch.no_grad():
            program = torch.onnx.export(model, example_inputs, **kwargs)
    except Exception as exc:  # the exporter raises many types; one clear message with the cause chained
        refusal = _find_refusal(exc)
        if refusal is not None:  # an op's translation refused the call: its message says what to change
            raise ExportError(f"cannot export {name}: {refusal}") from exc
        raise ExportError(f"torch.onnx.export (dynamo) failed on {name}: {_failure_cause(exc)}. "
                          f"{_failure_hint(exc)}; run dcn-deploy --debug export ... (CLI) or read the chained "
                          "exception for details") from exc
    return program.model_proto


def _exception_chain(exc: BaseException) -> List[BaseException]:
    """``exc`` and its causes (``__cause__``, else ``__context__``), outermost first."""
    chain: List[BaseException] = []
    while exc is not None and all(exc is not seen for seen in chain):
        chain.append(exc)
        exc = exc.__cause__ or exc.__context__
    return chain


_ANSI = re.compile(r"\x1b\[[0-9;]*m")  # torch.onnx colours parts of its messages


def _failure_cause(exc: BaseException) -> str:
    """The innermost cause of an exporter failure in one line, where it was raised in the user's code when known:
    ``GuardOnDataDependentSymNode: Could not guard on data-dependent expression ... (at my_model.py:7)``. The outer
    exceptions only say which exporter step failed ("Failed to export the model with torch.export ...")."""
    innermost = _exception_chain(exc)[-1]
    return _ANSI.sub("", describe_exception(innermost))


def _failure_hint(exc: BaseException) -> str:
    """What to change, for the failures whose cause is known: data-dependent control flow, a torchvision op."""
    chain = _exception_chain(exc)
    names = {type(e).__name__ for e in chain}
    text = " ".join(str(e) for e in chain)
    if "GuardOnDataDependentSymNode" in names or "data-dependent expression" in text:
        return ("The model branches on a tensor's values (data-dependent control flow, e.g. `if x.sum() > 0:`), "
                "which one exported graph cannot hold: compute both sides and pick with torch.where, or use "
                "torch.cond")
    if "torchvision" in text:
        return ("Use dcn_deploy.ops (not torchvision) for deformable convolution: dcn_deploy.convert_modules(model) "
                "swaps torchvision's DeformConv2d layers for ours")
    return "Check that the model runs on the example inputs and that torch.export.export(model, inputs) succeeds"


def _find_refusal(exc: BaseException) -> Optional[BaseException]:
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, dcn_opset.ExportRefusal):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def _dim(d) -> object:
    if d.HasField("dim_value"):
        return d.dim_value
    return d.dim_param or None


def _value_infos(values) -> List[Tuple[str, str, Tuple]]:
    out = []
    for v in values:
        tt = v.type.tensor_type
        dtype = onnx.TensorProto.DataType.Name(tt.elem_type).lower()
        out.append((v.name, dtype, tuple(_dim(d) for d in tt.shape.dim)))
    return out


def _count_deformable(model: onnx.ModelProto) -> Dict[str, int]:
    counts: Dict[str, int] = {}
    for node in dcn_opset.all_nodes(model.graph):
        if dcn_opset.is_deformable_node(node):
            key = f"{node.domain or 'ai.onnx'}::{node.op_type}"
            counts[key] = counts.get(key, 0) + 1
    return counts


# A model file is one protobuf message, which cannot reach 2 GiB. From this serialised size on (external_data.
# serialized_size, the measure the TensorRT build uses too; a margin below the limit for safety), the weights go
# to one external data file beside the model: model.onnx + model.onnx.data, ONNX's own layout, which ONNX Runtime
# and TensorRT's parser read from the model's folder.
EXTERNAL_DATA_THRESHOLD_BYTES = PROTOBUF_LIMIT - (148 << 20)  # 1900 MiB


def external_data_name(path: Path) -> str:
    """The weights file beside ``path`` when the model is too large for one file: ``model.onnx.data``."""
    return data_file_name(path.name)


def _needs_external_data(proto: onnx.ModelProto) -> bool:
    # serialized_size, not proto.ByteSize(): that serialises the whole model (seconds and a copy of it)
    try:
        return serialized_size(proto) >= EXTERNAL_DATA_THRESHOLD_BYTES
    except Exception:  # noqa: BLE001 - a part protobuf cannot even size is over its limit
        return True


def _uses_data_file(path: Path, data: Path) -> bool:
    """Whether the ONNX file at ``path`` keeps its weights in ``data`` (a file beside it); False without either."""
    if not (data.is_file() and path.is_file()):  # checked first: most exports never read the old model
        return False
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception:  # noqa: BLE001 - not ONNX: nothing of ours to clean up
        return False
    return any(entry.key == "location" and entry.value == data.name
               for t in proto.graph.initializer for entry in t.external_data)


def _write_checked(proto: onnx.ModelProto, path: Path, external: bool) -> onnx.ModelProto:
    """Write ``proto`` to ``path`` (and its weights to ``path.data`` when ``external``), check the written files,
    and return the inferred model. Nothing appears at ``path`` unless the check passes: files are written under
    temporary names in the same folder and renamed at the end, the weights first, then the model. The weights
    file of a replaced model that had one is deleted when the new model has none."""
    data = path.parent / external_data_name(path)
    stale = not external and _uses_data_file(path, data)
    if not external:
        with atomic_path(path) as tmp:
            onnx.save(proto, str(tmp))
            inferred = _check_file(tmp)
    else:
        folder = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
        try:
            # in a private folder, under the final names: the model refers to its weights by file name
            inferred = _check_file(write_with_external_data(proto, folder, path.name))
            for name in (data.name, path.name):
                give_default_permissions(folder / name)
            os.replace(folder / data.name, data)
            os.replace(folder / path.name, path)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    if stale:
        data.unlink(missing_ok=True)
    return inferred


def _check_file(path: Path) -> onnx.ModelProto:
    """Full checker and strict shape inference on the written file; returns the inferred model (without its
    weights' values: shape inference needs only their shapes, and a model over 2 GiB cannot be one message)."""
    try:
        onnx.checker.check_model(str(path), full_check=True)
        return onnx.shape_inference.infer_shapes(onnx.load(str(path), load_external_data=False), check_type=True,
                                                 strict_mode=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise ExportError(f"the exported model fails onnx.checker/shape inference: {exc}. This is a bug in "
                          "dcn_deploy's exporter or op set: please report it with the model") from exc


# --------------------------------------------------------------------------------------------------------------
# verification
# --------------------------------------------------------------------------------------------------------------

def _random_like(t: torch.Tensor, shape: Sequence[int], generator: torch.Generator) -> torch.Tensor:
    if t.is_floating_point():
        return torch.randn(tuple(shape), generator=generator, dtype=torch.float32).to(t.dtype).to(t.device)
    if t.dtype == torch.bool:
        return torch.randint(0, 2, tuple(shape), generator=generator).bool().to(t.device)
    if tuple(shape) == tuple(t.shape):  # integer inputs (indices, sizes): random values could be invalid
        return t.clone()
    raise ExportError(f"cannot make random integer inputs of a new shape {tuple(shape)}; export with dynamic=False")


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


def _kept(path: Path) -> str:
    """What a failed verification leaves: the written file, kept on purpose (it passed onnx.checker) so the
    failure can be looked into."""
    return f"The file {path} was kept for inspection (dcn-deploy inspect {path}); delete it if not needed"


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
    comparisons = [compare_outputs("onnxruntime", n, np.asarray(g), e, _tolerance(e, rtol, atol))
                   for n, g, e in zip(out_names, got, expected)]
    return VerificationRun(label, {n: tuple(int(d) for d in t.shape) for n, t in zip(names, inputs)}, comparisons)


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


def _make_session(path: Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


# --------------------------------------------------------------------------------------------------------------
# the entry point
# --------------------------------------------------------------------------------------------------------------

def export(model, example_inputs: Optional[Tuple[torch.Tensor, ...]], path, *, dynamic: bool = False,
           opset: int = 19, standard: bool = False, verify: bool = True, rtol: Optional[float] = None,
           atol: Optional[float] = None, require_deformable: bool = True, seed: int = 0,
           verify_inputs: Optional[Sequence[Tuple[torch.Tensor, ...]]] = None, progress: Progress = None,
           input_names: Optional[Sequence[str]] = None, output_names: Optional[Sequence[str]] = None) -> ExportReport:
    """Export ``model`` to the ONNX file ``path`` with its deformable convolutions as ``dcn_deploy`` ops.

    Args:
        model: a ``torch.nn.Module`` (one in training mode is exported and verified in eval mode, as
            ``torch.onnx.export`` does, with a warning in the report, and its modes are put back afterwards) or a
            ``torch.export.ExportedProgram``.
        example_inputs: tuple of tensors, one per model input, e.g. ``(torch.randn(1, 3, 224, 224),)``; may be None
            for an ExportedProgram (its own example inputs are used).
        path: output file; written atomically (a temporary file, renamed once checked). A model whose weights
            exceed ~1.9 GiB (protobuf's 2 GiB limit) keeps them in ``<path>.data`` beside it (ONNX external data;
            ``report.weights_path``); keep the two files together. Its ``metadata_props``
            record the example input shapes under ``"dcn_deploy.example_shapes"`` (:data:`EXAMPLE_SHAPES_KEY`) as
            JSON ``{input name: [dims]}``, e.g. ``{"input": [1, 3, 64, 64]}``; ``dcn-deploy verify/bench`` take
            them as the size of dynamic dimensions the user does not give with ``--shape``.
        dynamic: make batch (dim 0 of every input) and height/width (dims 2, 3 of 4-D inputs) dynamic where the
            model allows it; sizes equal in the example inputs share one symbol where the model allows it (the
            inputs' batch; an image's and its offset map's height and width), a RoI box list's count is its own
            (``num_rois``). The report names the inputs' symbolic dimensions. A torch.export program keeps the
            shapes it was exported with: ``report.dynamic`` then says whether they are dynamic, and
            ``dynamic=True`` adds a warning that it did not apply.
        opset: ONNX opset, 19 or newer (22 or newer for bfloat16 models).
        standard: emit standard ONNX ``DeformConv`` nodes instead of ``dcn_deploy::DeformConv2d``.
        verify: run the file in ONNX Runtime (CPU) against PyTorch on fresh random inputs.
        rtol, atol: verification tolerance; by default that of each output's dtype in
            :data:`dcn_deploy.compare.DEFAULT_TOLERANCES` (float32: atol 1e-4, rtol 1e-3; float16: 1e-2).
        require_deformable: raise :class:`NoDeformableLayerError` when the graph has no deformable node (the
            CLI's ``--allow-no-deformable`` sets it to False).
        seed: seed of the random verification inputs.
        verify_inputs: tuples of inputs to verify on instead of random ones (for inputs random values would make
            invalid, e.g. boxes); for a dynamic export, give tuples of other sizes too.
        progress: called with a short message at each stage (the CLI prints them on stderr).

        input_names, output_names: names for the file's inputs / outputs, one per input / output in order
            (default: the exporter's, from the forward's argument names and the graph's last ops, e.g. ``mean``).

    Returns:
        :class:`ExportReport`. Raises TypeError/ValueError for bad arguments, :class:`ExampleInputsError` (an
        ExportError and a ValueError) when the model raises on the example inputs, :class:`ExportError` when the
        exporter fails, :class:`VerificationError` beyond tolerance; after either of these last two raised by the
        verification (ONNX Runtime cannot load or run the file, or its outputs differ) the file is kept, for
        inspection, and the message says so.
    """
    say = progress or (lambda message: None)
    _check_model(model)
    for definition in dcn_opset.definitions():  # layers an op cannot export, named before the exporter runs
        if definition.check_model is not None:
            definition.check_model(model)
    if example_inputs is None and isinstance(model, torch.export.ExportedProgram) and model.example_inputs:
        example_inputs = tuple(model.example_inputs[0])
    example_inputs = _check_example_inputs(example_inputs)
    dtypes = _float_dtypes(model, example_inputs)
    opset = _check_opset(opset, dtypes)
    _check_tolerance(rtol, atol)
    input_names, output_names = check_io_names(input_names, output_names)  # before the export: it is slow
    path = Path(path)
    check_output_path(path, "output path")  # before the (slow) export, not after
    with _eval_mode(model) as training:
        report, proto = _export_checked(model, example_inputs, path, dynamic=dynamic, standard=standard,
                                        opset=opset, rtol=rtol, atol=atol, input_names=input_names,
                                        output_names=output_names, require_deformable=require_deformable, say=say)
        if training is not None:
            where = f"its submodule {training!r} was" if training else "it was"
            report.warnings.append(f"{type(model).__name__}: {where} in training mode; exported and verified in "
                                   "eval mode, as torch.onnx.export does (dropout off, BatchNorm's running "
                                   "statistics), and put back in training mode afterwards")
        if verify:
            _verify(report, model, example_inputs, proto, seed, say, verify_inputs)
    return report


def _export_checked(model, example_inputs, path: Path, *, dynamic: bool, standard: bool, opset: int,
                    rtol: Optional[float], atol: Optional[float], input_names, output_names,
                    require_deformable: bool, say) -> Tuple["ExportReport", onnx.ModelProto]:
    """The export itself, once the arguments are checked: run the exporter, finish the graph, write and check the
    file. Returns its report and the written model (for the verification)."""
    seconds: Dict[str, float] = {}
    _check_inputs_fit(model, example_inputs)

    start = time.perf_counter()
    program = isinstance(model, torch.export.ExportedProgram)
    say(f"exporting {type(model).__name__} with torch.onnx (dynamo, opset {opset}"
        f"{', shapes as saved in the program' if program else ', dynamic batch/height/width' if dynamic else ''})")
    proto = _run_exporter(model, example_inputs, opset, dynamic, standard)
    rois = rois_sharing_the_batch(proto) if dynamic and not program else []
    if rois:  # equal example counts of images and boxes are no reason to tie them: export again, untied
        proto = _run_exporter(model, example_inputs, opset, dynamic, standard, untied=rois)
    rename_graph_io(proto, input_names, output_names)
    dcn_opset.attach_functions(proto)
    rename_symbols(proto)
    proto.metadata_props.add(key="dcn_deploy.opset", value=f"{dcn_opset.DOMAIN}:{dcn_opset.VERSION}")
    _record_example_shapes(proto, example_inputs)
    counts = _count_deformable(proto)
    seconds["export"] = time.perf_counter() - start
    if not counts and require_deformable:
        raise NoDeformableLayerError(
            f"{type(model).__name__} has no deformable convolution: the exported graph contains no "
            f"{dcn_opset.DOMAIN} op and no DeformConv. Build deformable layers from dcn_deploy.ops (DeformConv2d, "
            "DeformConv2dPack, ModulatedDeformConv2dPack or deform_conv2d; torchvision's have the same signatures, "
            "and dcn_deploy.convert_modules(model) swaps torchvision's DeformConv2d layers for ours), "
            "or pass require_deformable=False (CLI: --allow-no-deformable) to export a plain model anyway")

    start = time.perf_counter()
    external = _needs_external_data(proto)
    say(f"writing and checking {path}{f' and its weights {external_data_name(path)}' if external else ''} "
        "(onnx.checker full check, shape inference)")
    inferred = _write_checked(proto, path, external)
    seconds["write_check"] = time.perf_counter() - start

    inputs = _value_infos(inferred.graph.input)
    asked_dynamic = dynamic
    if program:  # the file has the program's own shapes, static or dynamic, whatever ``dynamic`` asked
        dynamic = any(not isinstance(d, int) for _, _, shape in inputs for d in shape)
    report = ExportReport(
        path=path, opset=opset, dynamic=dynamic, standard=standard, inputs=inputs,
        outputs=_value_infos(inferred.graph.output), op_counts=counts, rtol=rtol, atol=atol, seconds=seconds,
        weights_path=path.parent / external_data_name(path) if external else None, program=program)
    if program and asked_dynamic:
        report.warnings.append(f"--dynamic (dynamic=True) does not apply to a saved torch.export program: the file "
                               f"keeps the program's {'dynamic' if dynamic else 'static'} shapes; to change them "
                               "export the program again with dynamic_shapes (or export the nn.Module)")
    elif dynamic and not program:
        fixed = [name for name, _, shape in report.inputs if all(isinstance(d, int) for d in shape)]
        if fixed:
            report.warnings.append(f"inputs {fixed} came out with fixed shapes: the model fixes their sizes "
                                   "(e.g. a reshape with constants or a fixed-size linear layer)")
    return report, proto


def _verify(report: ExportReport, model, example_inputs, proto: onnx.ModelProto, seed: int, say,
            verify_inputs=None) -> None:
    if any(t.dtype == torch.bfloat16 for t in example_inputs):
        report.warnings.append("not verified: ONNX Runtime's CPU provider has no bfloat16 kernels for Conv or "
                               "DeformConv (1.32), so this file runs only where bfloat16 does (ONNX Runtime's CUDA "
                               "provider: dcn-deploy verify FILE --runner ort-cuda --against torch --model ...). For "
                               "TensorRT, export in float32 and build with --precision bf16 instead: the build "
                               "converts the graph and keeps reductions in float32")
        return
    start = time.perf_counter()
    say("verifying against PyTorch in ONNX Runtime (CPUExecutionProvider) on "
        + ("the given inputs" if verify_inputs is not None else "random inputs"))
    try:
        runs = _verification_runs(report, model, example_inputs, proto, seed, verify_inputs)
    except ExportError as exc:  # ONNX Runtime could not load or run the file it passed onnx.checker
        raise ExportError(f"{str(exc).rstrip('. ')}. {_kept(report.path)}") from exc
    report.verification = runs
    report.seconds["verify"] = time.perf_counter() - start
    for run in runs:
        for out in run.outputs:
            say(f"  {run.label}: {out.output} max abs {out.max_abs:.3g}, max rel {out.max_rel:.3g}"
                f"{'' if out.passed else '  FAIL'}")
    if not report.verified:
        bad = [f"{o.output} ({r.label}): max abs {o.max_abs:.3g}, max rel {o.max_rel:.3g}, {o.of_tolerance:.2g} of the "
               f"tolerance (atol {o.atol:g}, rtol {o.rtol:g}{', ' + o.note if o.note else ''})"
               for r in runs for o in r.outputs if not o.passed]
        raise VerificationError(
            f"{report.path} does not match PyTorch: "
            + "; ".join(bad) + f". {_kept(report.path)}. A loose tolerance may be right for deep float16 models "
            "(rtol/atol). In float32, roundoff grows with large offsets (e.g. an untrained network's random offset "
            "branch samples far off the image); to tell it from a bug, compare PyTorch's float32 output with a "
            "float64 copy's (copy.deepcopy(model).double() on input.double()): a difference as large as the above "
            "is roundoff (a float64 export verifies in ONNX Runtime only without plain convolutions: its CPU "
            "provider has no float64 Conv). Otherwise please report it", report)


def _verification_runs(report: ExportReport, model, example_inputs, proto: onnx.ModelProto, seed: int,
                       verify_inputs=None) -> List[VerificationRun]:
    """ONNX Runtime vs PyTorch on ``verify_inputs``, or on random inputs of the example shapes and, for a dynamic
    file, of other shapes (:func:`_other_shapes`)."""
    try:
        session = _make_session(report.path)
    except Exception as exc:  # onnxruntime's own exception types
        op = missing_float64_kernel(str(exc), torch.float64 in _float_dtypes(model, example_inputs))
        if op is not None:
            raise ExportError(f"ONNX Runtime cannot load {report.path} ({str(exc).strip()}): "
                              f"{no_float64_kernel_hint(op)}, or pass verify=False (CLI: --no-verify)") from exc
        raise ExportError(f"ONNX Runtime cannot load {report.path}: {str(exc).strip()}") from exc
    if verify_inputs is not None:
        return [_verify_once(session, model, tuple(inputs), "given inputs "
                             + ", ".join("x".join(map(str, t.shape)) for t in inputs), report.rtol, report.atol)
                for inputs in verify_inputs]
    roi_names = roi_input_names(proto.graph)
    rois = [i for i, graph_input in enumerate(proto.graph.input) if graph_input.name in roi_names]
    runs = [_verify_once(session, model, _random_inputs(example_inputs, [t.shape for t in example_inputs], seed, rois),
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


def _record_example_shapes(proto: onnx.ModelProto, example_inputs: Sequence[torch.Tensor]) -> None:
    """Store ``{input name: [dims]}`` of the example inputs under :data:`EXAMPLE_SHAPES_KEY`: the sizes a dynamic
    model is known to run at, the default of ``dcn-deploy verify/bench`` for dimensions not given with --shape."""
    initialisers = {t.name for t in proto.graph.initializer}
    names = [v.name for v in proto.graph.input if v.name not in initialisers]
    if len(names) != len(example_inputs):  # inputs the model ignores were dropped: no sure pairing, record none
        return
    shapes = {name: [int(d) for d in t.shape] for name, t in zip(names, example_inputs)}
    proto.metadata_props.add(key=EXAMPLE_SHAPES_KEY, value=json.dumps(shapes, separators=(",", ":")))
