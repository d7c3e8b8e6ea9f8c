"""Export a PyTorch model that uses ``dcn_deploy`` ops to an ONNX file, then check and verify it.

``export(model, example_inputs, path)``:

1. validates the arguments (a module or ``torch.export`` program, a tuple of tensors, a supported opset) and
   runs the model once on the example inputs, so inputs that do not fit it are named before the exporter runs;
2. runs torch.onnx's dynamo exporter, with each ``dcn_deploy`` torch op mapped to its node of the ``dcn_deploy``
   ONNX domain (or to standard ONNX with ``standard=True``), see :mod:`dcn_deploy.onnx.opset` and
   :mod:`dcn_deploy.onnx.torch_exporter` (which also explains the exporter's failures);
3. stores the ops' function bodies in the model, so stock ONNX Runtime runs it, and the example input shapes in
   its ``metadata_props`` (key ``dcn_deploy.example_shapes``, JSON ``{input name: [dims]}``), which ``dcn-deploy
   verify/bench`` use for dynamic dimensions not given with ``--shape``;
4. writes the file atomically, after ``onnx.checker`` (full check) and strict shape inference passed
   (:mod:`dcn_deploy.onnx.export_file`, with external data for models past protobuf's 2 GiB);
5. with ``verify=True`` runs the file in ONNX Runtime (CPU) against the PyTorch model on fresh random inputs
   (and, for a dynamic export, again at another batch size and spatial size) and raises
   :class:`VerificationError` when an output differs beyond tolerance (:mod:`dcn_deploy.onnx.export_verification`).

What it returns and raises (:class:`ExportReport`, :class:`ExportError`, ...) is defined in
:mod:`dcn_deploy.onnx.export_report` and importable from here.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import onnx
import torch

from ..compare import Tolerance
from ..feeds import EXAMPLE_SHAPES_KEY, fed_inputs
from ..interrupts import interrupt_in, reraise_interrupt
from ..io_utils import check_output_path
from ..ops.convert import refuse_unconverted_layers
from ..wording import argument, for_reader
from . import opset as dcn_opset
from .export_file import EarlierFile, external_data_name, needs_external_data, write_checked
from .export_report import (ExampleInputsError, ExportError, ExportRefusedError, ExportReport,
                            NoDeformableLayerError, VerificationError, VerificationRun)
from .export_verification import verify_export
from .graph_names import check_io_names, rename_graph_io, rename_symbols, rois_sharing_the_batch
from .model_loading import program_shape_mismatch
from .torch_exporter import float_dtypes, run_exporter

__all__ = ["export", "ExportReport", "VerificationRun", "ExportError", "ExampleInputsError", "VerificationError",
           "NoDeformableLayerError", "EXAMPLE_SHAPES_KEY"]

Progress = Optional[Callable[[str], None]]


def export(model, example_inputs: Optional[Tuple[torch.Tensor, ...]], path, *, dynamic: bool = False,
           opset: int = 19, standard: bool = False, verify: bool = True, rtol: Optional[float] = None,
           atol: Optional[float] = None, require_deformable: bool = True, seed: int = 0,
           verify_inputs: Optional[Sequence[Tuple[torch.Tensor, ...]]] = None, verify_examples: bool = False,
           verify_inputs_label: str = "given inputs", progress: Progress = None,
           input_names: Optional[Sequence[str]] = None, output_names: Optional[Sequence[str]] = None) -> ExportReport:
    """Export ``model`` to the ONNX file ``path`` with its deformable convolutions as ``dcn_deploy`` ops.

    Args:
        model: a ``torch.nn.Module`` (one in training mode is exported and verified in eval mode, as
            ``torch.onnx.export`` does, with a warning in the report, and its modes are put back afterwards) or a
            ``torch.export.ExportedProgram``.
        example_inputs: tuple of tensors, one per model input, e.g. ``(torch.randn(1, 3, 224, 224),)``; may be None
            for an ExportedProgram (its own example inputs are used).
        path: output file; written atomically (a temporary file, renamed once checked). A file already there
            survives a failed verification: the new file is then kept as ``<stem>.failed<suffix>`` (not for models
            with external weights, below, which replace it). A KeyboardInterrupt (Ctrl-C) during the verification
            leaves the folder as it was: the unverified new file is removed and an earlier one is back (again not
            for external weights: the new file stays). A model whose weights exceed ~1.9 GiB (protobuf's 2 GiB
            limit) keeps them in ``<path>.data`` beside it (ONNX external data; ``report.weights_path``); keep the
            two files together. Its ``metadata_props``
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
        verify_examples: also verify on ``example_inputs`` themselves, first (real data, such as the CLI's
            ``--input`` files, with real boxes).
        verify_inputs_label: what the progress messages and ``report.verification`` call ``verify_inputs``
            (the CLI: "model's own inputs", those its input sampler made).
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
    _check_options(dynamic=dynamic, standard=standard, verify=verify, require_deformable=require_deformable,
                   verify_examples=verify_examples, seed=seed, progress=progress)
    say = progress or (lambda message: None)
    _check_model(model)
    _refuse_training_program(model)
    refuse_unconverted_layers(model)  # mmcv's compiled ops would fail inside the exporter, unexplained
    for definition in dcn_opset.definitions():  # layers an op cannot export, named before the exporter runs
        if definition.check_model is not None:
            definition.check_model(model)
    if example_inputs is None and isinstance(model, torch.export.ExportedProgram) and model.example_inputs:
        example_inputs = tuple(model.example_inputs[0])
    example_inputs = _check_example_inputs(example_inputs)
    verify_inputs = _check_verify_inputs(verify_inputs, len(example_inputs))
    dtypes = float_dtypes(model, example_inputs)
    opset = _check_opset(opset, dtypes)
    _check_tolerance(rtol, atol)
    input_names, output_names = check_io_names(input_names, output_names)  # before the export: it is slow
    path = Path(path)
    check_output_path(path, "output path")  # before the (slow) export, not after
    earlier = EarlierFile(path) if verify else None  # a file already there survives a failed export
    abandonable = False  # the new file is at path in one piece (no external weights): an interrupt may drop it
    try:
        with _eval_mode(model) as training:
            report, proto = _export_checked(model, example_inputs, path, dynamic=dynamic, standard=standard,
                                            opset=opset, rtol=rtol, atol=atol, input_names=input_names,
                                            output_names=output_names, require_deformable=require_deformable,
                                            say=say)
            abandonable = report.weights_path is None
            if training is not None:
                where = f"its submodule {training!r} was" if training else "it was"
                report.warnings.append(f"{type(model).__name__}: {where} in training mode; exported and verified "
                                       "in eval mode, as torch.onnx.export does (dropout off, BatchNorm's running "
                                       "statistics), and put back in training mode afterwards")
            if verify:
                if report.weights_path is not None:  # the new file's weights replaced the old: it stays
                    earlier.discard()
                verify_export(report, model, example_inputs, proto, seed, say, verify_inputs, verify_examples,
                              inputs_label=verify_inputs_label, uses_float64=torch.float64 in dtypes,
                              kept_as=earlier.failed_name() if earlier.kept else None)
    except BaseException as exc:
        interrupted = interrupt_in(exc) is not None  # also a Ctrl-C that onnxruntime's import turned into an error
        if earlier is not None and interrupted and abandonable:
            earlier.abandon()  # the folder as it was: an interrupted check proves nothing either way
        elif earlier is not None:
            earlier.restore()
        reraise_interrupt(exc)
        raise
    if earlier is not None:
        earlier.discard()
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
    proto = run_exporter(model, example_inputs, opset, dynamic, standard)
    rois = rois_sharing_the_batch(proto) if dynamic and not program else []
    if rois:  # equal example counts of images and boxes are no reason to tie them: export again, untied
        proto = run_exporter(model, example_inputs, opset, dynamic, standard, untied=rois)
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
            "DeformConv2dPack, ModulatedDeformConv2dPack or deform_conv2d; torchvision's and mmcv's have the same "
            "signatures, and dcn_deploy.convert_modules(model) swaps their layers for ours), "
            f"or pass {argument('require_deformable=False', '--allow-no-deformable')} to export a plain model anyway")

    start = time.perf_counter()
    external = needs_external_data(proto)
    say(f"writing and checking {path}{f' and its weights {external_data_name(path)}' if external else ''} "
        "(onnx.checker full check, shape inference)")
    inferred = write_checked(proto, path, external)
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
    if not standard:
        report.warnings.extend(_standard_deform_conv_warnings(proto, path))
    if dynamic and not program:
        fixed = [name for name, _, shape in report.inputs if all(isinstance(d, int) for d in shape)]
        if fixed:
            report.warnings.append(f"inputs {fixed} came out with fixed shapes: the model fixes their sizes "
                                   "(e.g. a reshape with constants or a fixed-size linear layer)")
    return report, proto


# --------------------------------------------------------------------------------------------------------------
# argument checks
# --------------------------------------------------------------------------------------------------------------

def _check_options(*, seed, progress, **flags) -> None:
    """The switches and the seed, checked before the (slow) export: ``dynamic="no"`` is truthy and exported a dynamic
    model, a seed torch refuses failed only in the verification, after the file was written."""
    for name, value in flags.items():
        if not (isinstance(value, int) and value in (0, 1)):  # True, False, 1 or 0
            raise TypeError(f"{name} must be True or False, got {value!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise TypeError(f"seed must be an int >= 0 (it fixes the random verification inputs), got {seed!r}")
    if progress is not None and not callable(progress):
        raise TypeError(f"progress must be a function taking one message (e.g. print) or None, got {progress!r}")


def _check_verify_inputs(verify_inputs, count: int):
    """``verify_inputs``: a list of input tuples, one tensor per model input in each (a list of bare tensors was
    unpacked along the batch dimension and failed in ONNX Runtime after the export, as a rank mismatch)."""
    if verify_inputs is None:
        return None
    if isinstance(verify_inputs, (torch.Tensor, tuple)) and (isinstance(verify_inputs, torch.Tensor)
                                                              or all(isinstance(t, torch.Tensor) for t in verify_inputs)):
        raise TypeError("verify_inputs must be a list of input tuples, one tuple per verification run, e.g. "
                        "[(x1,), (x2,)]; got a single run's inputs: wrap them as [inputs]")
    runs = list(verify_inputs)
    for i, run in enumerate(runs):
        if not isinstance(run, (tuple, list)) or len(run) != count or not all(isinstance(t, torch.Tensor) for t in run):
            got = (f"a {type(run).__name__}" if not isinstance(run, (tuple, list))
                   else f"{len(run)} item(s): {[type(t).__name__ for t in run]}")
            raise TypeError(f"verify_inputs[{i}] must be a tuple of {count} tensor(s), like example_inputs, got {got}; "
                            "e.g. verify_inputs=[(x1,), (x2,)]")
    return [tuple(run) for run in runs]


def _check_model(model) -> None:
    if not isinstance(model, (torch.nn.Module, torch.export.ExportedProgram)):
        raise TypeError(f"model must be a torch.nn.Module or a torch.export.ExportedProgram, got {type(model).__name__}")


# aten op -> (index of its ``training``/``train`` argument, what it is), for programs traced in training mode
_BATCH_STATISTICS = (5, "BatchNorm (batch statistics)")
_TRAINING_ARGS = {"batch_norm": _BATCH_STATISTICS, "_native_batch_norm_legit": _BATCH_STATISTICS,
                  "_native_batch_norm_legit_functional": _BATCH_STATISTICS,
                  "dropout": (2, "dropout"), "native_dropout": (2, "dropout"), "feature_dropout": (2, "dropout"),
                  "alpha_dropout": (2, "dropout"), "feature_alpha_dropout": (2, "dropout")}


def _refuse_training_program(model) -> None:
    """A torch.export program traced from a module in training mode holds training-mode dropout and batch norm: its
    ONNX file would drop random values and its outputs would not match the program's (a nn.Module is exported in
    eval mode instead, but a program's graph is fixed). Refused, naming the layers and the fix."""
    if not isinstance(model, torch.export.ExportedProgram):
        return
    found = []
    for node in model.graph.nodes:
        name = getattr(getattr(node.target, "_overloadpacket", None), "__name__", None)
        if node.op != "call_function" or name not in _TRAINING_ARGS:
            continue
        index, what = _TRAINING_ARGS[name]
        training = (node.args[index] if len(node.args) > index
                    else node.kwargs.get("training", node.kwargs.get("train")))
        # a BatchNorm without running statistics (track_running_stats=False) normalises with the batch's in eval
        # mode too: training=True there is no sign of a training-mode trace
        no_running_stats = what == _BATCH_STATISTICS[1] and len(node.args) > 4 and node.args[3] is None
        if training is True and not no_running_stats:
            found.append(f"{what} at {node.name}")
    if found:
        raise ExportRefusedError(
            f"the torch.export program was traced in training mode ({', '.join(sorted(set(found))[:4])}"
            f"{', ...' if len(set(found)) > 4 else ''}): its graph keeps training-mode dropout and batch norm, which "
            "a deployed model must not run. Call model.eval() before torch.export.export(...), save the program "
            "again, and export that (or export the nn.Module itself: it is exported in eval mode)")


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


def _check_opset(opset, dtypes: set) -> int:
    newest = onnx.defs.onnx_opset_version()
    if isinstance(opset, bool) or not isinstance(opset, int):
        raise TypeError(f"opset must be an int, got {opset!r}")
    if opset < dcn_opset.MIN_OPSET or opset > newest:
        raise ValueError(f"ONNX opset {opset} is not supported: deformable convolution (DeformConv) exists from opset "
                         f"{dcn_opset.MIN_OPSET}; choose an opset from {dcn_opset.MIN_OPSET} to {newest} (default 19)")
    if torch.bfloat16 in dtypes and opset < dcn_opset.BFLOAT16_MIN_OPSET:
        raise ValueError(f"the model uses bfloat16, which DeformConv supports from ONNX opset "
                         f"{dcn_opset.BFLOAT16_MIN_OPSET}; got opset {opset}: pass "
                         + argument(f"opset={dcn_opset.BFLOAT16_MIN_OPSET}", f"--opset {dcn_opset.BFLOAT16_MIN_OPSET}"))
    return opset


# --------------------------------------------------------------------------------------------------------------
# what the exported graph holds
# --------------------------------------------------------------------------------------------------------------

def _record_example_shapes(proto: onnx.ModelProto, example_inputs: Sequence[torch.Tensor]) -> None:
    """Store ``{input name: [dims]}`` of the example inputs under :data:`EXAMPLE_SHAPES_KEY`: the sizes a dynamic
    model is known to run at, the default of ``dcn-deploy verify/bench`` for dimensions not given with --shape."""
    names = [v.name for v in fed_inputs(proto.graph)]
    if len(names) != len(example_inputs):  # inputs the model ignores were dropped: no sure pairing, record none
        return
    shapes = {name: [int(d) for d in t.shape] for name, t in zip(names, example_inputs)}
    proto.metadata_props.add(key=EXAMPLE_SHAPES_KEY, value=json.dumps(shapes, separators=(",", ":")))


def _count_deformable(model: onnx.ModelProto) -> Dict[str, int]:
    counts: Dict[str, int] = {}
    for node in dcn_opset.all_nodes(model.graph):
        if dcn_opset.is_deformable_node(node):
            key = f"{node.domain or 'ai.onnx'}::{node.op_type}"
            counts[key] = counts.get(key, 0) + 1
    return counts


_STACK_FRAME = re.compile(r'File "([^"]+)", line (\d+)')


def _standard_deform_conv_warnings(model: onnx.ModelProto, path: Path) -> List[str]:
    """A warning for standard ``DeformConv`` nodes in an export that asked for ours: they come from a deformable
    convolution dcn_deploy does not own, typically ``torchvision.ops.deform_conv2d`` called in a forward, which
    :func:`dcn_deploy.convert_modules` cannot swap (it swaps layers, not function calls). The file is correct, but
    those nodes are not ours (TensorRT builds them with its own support, not our plugin); the warning names where
    each was called, from the exporter's stack trace."""
    nodes = [n for n in dcn_opset.all_nodes(model.graph) if n.domain in ("", "ai.onnx") and n.op_type == "DeformConv"]
    if not nodes:
        return []
    places = []
    for node in nodes:
        trace = next((p.value for p in node.metadata_props if p.key == "pkg.torch.onnx.stack_trace"), "")
        frame = _STACK_FRAME.search(trace)
        if frame:
            places.append(f"{os.path.basename(frame.group(1))}:{frame.group(2)}")
    where = f" (called at {', '.join(dict.fromkeys(places))})" if places else ""
    return [f"{len(nodes)} standard DeformConv node(s){where} come from a deformable convolution that is not "
            "dcn_deploy's, such as torchvision.ops.deform_conv2d called in forward (convert_modules swaps layers, "
            "not function calls): they run as ONNX's DeformConv, and TensorRT builds them with its own support "
            "instead of dcn_deploy's plugin. Call dcn_deploy.deform_conv2d (torchvision's arguments) there instead, "
            "or rewrite the file's nodes as ours with "
            + for_reader(f"dcn_deploy.adopt_file({str(path)!r})", f"dcn-deploy adopt {path}")]


def _value_infos(values) -> List[Tuple[str, str, Tuple]]:
    out = []
    for v in values:
        tt = v.type.tensor_type
        dtype = onnx.TensorProto.DataType.Name(tt.elem_type).lower()
        out.append((v.name, dtype, tuple(_dim(d) for d in tt.shape.dim)))
    return out


def _dim(d) -> object:
    if d.HasField("dim_value"):
        return d.dim_value
    return d.dim_param or None
