"""Run torch.onnx's dynamo exporter on a model (:func:`run_exporter`): each ``dcn_deploy`` torch op translated to
its ONNX node, sizes equal in the example inputs tied to one symbol where the model allows it, the exporter's
chatter silenced, and a failure turned into one :class:`~dcn_deploy.onnx.export_report.ExportError` that names
its innermost cause and what to change."""
from __future__ import annotations

import contextlib
import logging
import re
import sys
import warnings
from typing import List, Optional, Sequence

import onnx
import torch

from ..wording import for_reader
from . import opset as dcn_opset
from .dynamic_shapes import dynamic_shapes, tied_dynamic_shapes
from .export_report import ExportError, ExportRefusedError
from .model_loading import describe_exception

__all__ = ["run_exporter"]


def run_exporter(model, example_inputs, opset: int, dynamic: bool, standard: bool,
                 untied: Sequence[int] = ()) -> onnx.ModelProto:
    """torch.onnx's dynamo exporter on ``model``; with ``dynamic`` (an nn.Module), the inputs' sizes that are equal
    in the example share one symbol (:func:`_tied_program`) where the model allows it, except dim 0 of the
    inputs at the positions ``untied``."""
    # torch.onnx's optimizer folds BatchNormalization into the preceding Conv in numpy, which has no bfloat16:
    # the folded weights come out float32 beside a bfloat16 input, and onnx.checker rejects the Conv. A bfloat16
    # model is exported unoptimised (BatchNormalization stays a node of its own).
    kwargs = dict(dynamo=True, opset_version=opset, verbose=False,
                  optimize=torch.bfloat16 not in float_dtypes(model, example_inputs),
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
            raise ExportRefusedError(f"cannot export {name}: {refusal}") from exc
        raise ExportError(f"torch.onnx.export (dynamo) failed on {name}: {_failure_cause(exc)}. "
                          f"{_failure_hint(exc)}{_failure_details()}") from exc
    return program.model_proto


def float_dtypes(model, example_inputs: Sequence[torch.Tensor]) -> set:
    """The floating-point dtypes of ``example_inputs`` and of the model's parameters and buffers (a program's
    state_dict)."""
    tensors = list(example_inputs)
    if isinstance(model, torch.nn.Module):
        tensors += list(model.parameters()) + list(model.buffers())
    else:
        tensors += list(model.state_dict.values())
    return {t.dtype for t in tensors if isinstance(t, torch.Tensor) and t.is_floating_point()}


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
    torch.export prints a failed trace's partial FX graph to stderr (tens of lines per try, also when a retry then
    succeeds): the raised exception (chained into ExportError, the graph in its ``partial_fx_graph``) carries the
    same information, so those lines go (:class:`_WithoutTorchPrints`). What the user's own code prints passes.
    """
    quieted = {"torch.onnx._internal.exporter._registration": logging.ERROR, "torch.export._trace": logging.CRITICAL,
               "torch.fx.experimental.symbolic_shapes": logging.ERROR, "torch._dynamo": logging.ERROR}
    levels = {name: logging.getLogger(name).level for name in quieted}
    for name, level in quieted.items():
        logging.getLogger(name).setLevel(level)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stderr(_WithoutTorchPrints(sys.stderr)):
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.filterwarnings("ignore", message=".*torchvision.*")
            yield
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


class _WithoutTorchPrints:
    """``sys.stderr`` while torch exports: a write made by torch's own Python code (``print(graph,
    file=sys.stderr)`` in torch.export) is dropped; every other write (the user's prints, warnings) goes through
    at once, in order."""

    def __init__(self, stream):
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            caller = sys._getframe(1).f_globals.get("__name__", "")  # print() is C: frame 1 is the code that printed
        except ValueError:  # called from C with no Python frame below (another thread): not torch's print
            return self._stream.write(text)
        if caller == "torch" or caller.startswith("torch."):
            return len(text)
        return self._stream.write(text)

    def __getattr__(self, name):  # flush, fileno, isatty, encoding, ...: the real stream's
        return getattr(self._stream, name)


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
    if "torchvision" in text or "mmcv" in text:
        return ("Use dcn_deploy.ops (not torchvision or mmcv) for deformable layers: dcn_deploy.convert_modules(model) "
                "swaps torchvision's and mmcv's deformable layers for ours")
    return "Check that the model runs on the example inputs and that torch.export.export(model, inputs) succeeds"


def _failure_details() -> str:
    """Where the exporter's whole error is: chained to ours for a library caller. Nothing for the CLI, which
    prints its own pointer (``dcn-deploy --debug export ...``) under every error."""
    return for_reader("; the exporter's full error is chained to this one (its __cause__, shown in the traceback)",
                      "")


def _find_refusal(exc: BaseException) -> Optional[BaseException]:
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, dcn_opset.ExportRefusal):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None
