"""Options and helpers shared by the commands that run models (verify, bench, infer). Imports click only."""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence

import click

from . import CliError

# = backends.factory.RUNNER_KINDS and TORCH_RUNNER_KINDS (a test keeps them equal); copies so that the CLI starts
# without numpy
RUNNER_CHOICES = ("ort", "ort-cuda", "torch", "torch-cuda", "trt", "onnx-reference")
TORCH_RUNNERS = ("torch", "torch-cuda")


def model_argument(fn: Callable) -> Callable:
    return click.argument("model_path", metavar="MODEL", type=click.Path(exists=True, dir_okay=False,
                                                                          path_type=Path))(fn)


def engine_option(fn: Callable) -> Callable:
    return click.option("--engine", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
                        help="A TensorRT engine for the trt runner, built from MODEL (default: build MODEL.engine "
                             "beside an ONNX MODEL).")(fn)


def torch_model_options(fn: Callable) -> Callable:
    fn = click.option("--weights", "--checkpoint", "checkpoint",
                      type=click.Path(exists=True, dir_okay=False, path_type=Path),
                      help="state_dict (torch.save) to load into the module that --model builds.")(fn)
    fn = click.option("--model", "torch_model", metavar="REF",
                      help="The PyTorch model for the torch runner: FILE.py:FACTORY, package.module:FACTORY, "
                           "a torch.export .pt2 file, or a zoo name (e.g. resnet50_dcn_c5).")(fn)
    fn = click.option("--channels-last", "torch_channels_last", is_flag=True,
                      help="Run the torch runners' model and 4-D inputs channels-last in memory "
                           "(torch.channels_last: the faster layout for convolutions on a GPU).")(fn)
    return fn


def shape_options(fn: Callable) -> Callable:
    fn = click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
                      help="Seed of the random inputs.")(fn)
    fn = click.option("--shape", "shapes", multiple=True, metavar="NAME=SHAPE",
                      help="Size of an input with dynamic dimensions, e.g. --shape input=1x3x224x224 (repeatable).")(fn)
    return fn


def check_tolerance_options(atol: Optional[float], rtol: Optional[float]) -> None:
    """--atol/--rtol by the rule of every comparison (:class:`dcn_deploy.compare.Tolerance`: finite, >= 0; click
    takes 'nan' and 'inf' as floats), the message naming the option."""
    from ..compare import Tolerance

    try:
        Tolerance(atol=0.0 if atol is None else atol, rtol=0.0 if rtol is None else rtol)
    except ValueError as exc:
        raise CliError(str(exc)) from None  # worded for the CLI: "--atol must be a finite number >= 0, got nan"


class FileFacts(NamedTuple):
    """What verify and bench take from the model file itself, read once (:func:`file_facts`)."""

    shapes: dict      # --shape options, with the file's stored example shapes for the sizes not given
    rois: tuple       # the RoI box inputs
    half_type: Optional[str]  # the half type the graph computes in (dcn_deploy.onnx.compute_type), else None


def file_facts(shapes: Sequence[str], model_path: Path) -> FileFacts:
    """:class:`FileFacts` from one read of ``model_path`` (an engine: no facts); the copy is dropped on return,
    before the runners load their own. A RoI pooling node whose attributes the op refuses is refused here
    (:func:`dcn_deploy.backends.ort_runner.invalid_roi_pool_message`)."""
    from ..feeds import parse_shape_options, read_onnx_file, roi_input_names
    from ..onnx.compute_type import half_compute_type

    model = read_onnx_file(model_path)
    if model is not None:
        from ..backends.ort_runner import invalid_roi_pool_message

        invalid = invalid_roi_pool_message(model, str(model_path))
        if invalid is not None:
            raise ValueError(invalid)
    return FileFacts(parse_shape_options(shapes, model=model), () if model is None else roi_input_names(model.graph),
                     half_compute_type(model))


def model_ref_file(reference: Optional[str]) -> Optional[Path]:
    """The file a model reference reads: FILE for FILE.py:FACTORY and FILE.pt2; None for a module or a zoo name."""
    if not reference:
        return None
    from ..onnx.model_loading import reference_file  # load_model's own rule (imports torch: --model loads it anyway)

    return reference_file(reference)


def input_option_files(items: Sequence[str]) -> List[Path]:
    """The files of ``--input NAME=FILE`` / ``--input FILE`` options, as the feed reader reads them."""
    from ..feeds.feed_files import split_input_item

    paths = (split_input_item(item)[1] for item in items)
    return [path for path in paths if path is not None]


def check_output_option(output: Path, model_path: Optional[Path], torch_model: Optional[str],
                        checkpoint: Optional[Path], engine: Optional[Path] = None,
                        inputs: Sequence[str] = ()) -> None:
    """-o/--output of verify/bench/infer: a writable path that is none of the files the command reads; checked
    before the runners load and the work runs, not after."""
    from ..io_utils import check_not_an_input, check_output_path

    check_output_path(output, "--output")
    read = [("model", model_path), ("--model file", model_ref_file(torch_model)), ("--weights file", checkpoint),
            ("--engine file", engine)] + [("--input file", path) for path in input_option_files(inputs)]
    check_not_an_input(output, "--output", read)


def inference_failure(message: str, model_path: Path, torch_model: Optional[str]) -> str:
    """A runner's inference error, with what to check; the torch runner's names --model (RunnerError messages
    start with the runner's name)."""
    if torch_model and message.startswith("torch:"):  # (both torch runners' model errors)
        return (f"--model {torch_model}{message[len('torch'):]}; check that --model builds the network "
                f"{model_path.name} was exported from and that --shape/--input fit it")
    return f"{message}; check that --shape/--input fit {model_path.name}"


def echo_note(message: str) -> None:
    """Print ``note: MESSAGE`` on stderr: something the command changed or assumed, that the user should know."""
    click.echo(f"note: {message}", err=True)


def parse_int_list(text: str, option: str) -> List[int]:
    """``"1,8"`` -> ``[1, 8]``: positive integers, comma-separated, none left empty (``1,,8`` is a typo)."""
    items = text.split(",")
    if len(items) > 1 and not all(v.strip() for v in items):
        raise CliError(f"{option} {text!r} has an empty item: give comma-separated integers without gaps, "
                       f"e.g. {option} 1,8")
    try:
        values = [int(v) for v in items if v.strip()]
    except ValueError:
        raise CliError(f"{option} {text!r}: expected comma-separated integers, e.g. {option} 1,8") from None
    if not values or min(values) < 1:
        raise CliError(f"{option} {text!r}: give one or more positive integers, e.g. {option} 1,8")
    return values


def parse_runner_list(text: str) -> List[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in RUNNER_CHOICES]
    if not names or unknown:
        raise CliError(f"--runner {text!r}: unknown runner(s) {unknown}; choose from {', '.join(RUNNER_CHOICES)} "
                       "(comma-separated)")
    if len(set(names)) != len(names):
        raise CliError(f"--runner {text!r} names a runner twice")
    return names


def default_runner(model_path: Path) -> str:
    from ..backends.factory import ENGINE_SUFFIXES

    return "trt" if model_path.suffix.lower() in ENGINE_SUFFIXES else "ort"


def trt_build_options(model_path: Path, shapes: Dict[str, tuple], batches: Sequence[int]) -> dict:
    """``build_engine`` options for an ONNX model the trt runner builds itself: a profile covering the user's
    ``--shape`` sizes, with a dynamic batch dimension ranging from 1 to the largest batch asked for."""
    from ..backends.factory import onnx_io_metadata
    from ..backends.trt_profiles import DEFAULT_MAX_BATCH

    inputs, _ = onnx_io_metadata(model_path)
    # without --batch the profile keeps the default batch range (sizes from the file's stored shapes are batch 1)
    largest = max(list(batches) or [DEFAULT_MAX_BATCH])
    specs = []
    for meta in inputs:
        if meta.name not in shapes:
            continue
        opt = list(shapes[meta.name])
        low, high = list(opt), list(opt)
        if meta.shape and not isinstance(meta.shape[0], int):
            low[0], high[0] = 1, max(largest, opt[0])
        specs.append(f"{meta.name}:" + "/".join("x".join(map(str, s)) for s in (low, opt, high)))
    return {"shapes": specs, "max_batch": largest} if specs else {"max_batch": largest}


def make_runners(kinds: Sequence[str], model_path: Path, torch_model: Optional[str],
                 checkpoint: Optional[Path], threads: Optional[int] = None, engine: Optional[Path] = None,
                 shapes: Optional[Dict[str, tuple]] = None, batches: Sequence[int] = (),
                 keep_active: bool = True, torch_channels_last: bool = False) -> list:
    """Runners for the CLI, each loaded once here, so that a model that cannot be loaded (not an ONNX file,
    a provider that is missing, TensorRT missing, no --model, a --model whose code raises) is a CliError (exit 2)
    naming the file and the fix before any work starts.

    ``shapes``/``batches`` (the command's --shape/--batch) shape the profile of an engine built for ``trt``;
    ``torch_channels_last`` (--channels-last) lays the torch runners' model and inputs out channels-last.
    The runners come back active (the caller deactivates them: ``with runner:``, or ``finally``) unless
    ``keep_active`` is false (``bench`` activates each only while it times it, so that an idle session does not
    compete for the cores).
    """
    from ..backends.base import RunnerError
    from ..backends.factory import make_runner

    _check_trt_runner(kinds, engine)
    torch_kinds = [kind for kind in kinds if kind in TORCH_RUNNERS]
    if torch_channels_last and not torch_kinds:
        raise CliError(f"--channels-last is only used by the torch runners; add one ({_add_torch_runner_hint()})")
    module = _torch_module(torch_kinds, model_path, torch_model, checkpoint)
    # each torch runner its own copy of the module but the first: activating one moves its module to its device
    modules = {kind: copy.deepcopy(module) if i else module for i, kind in enumerate(torch_kinds)}
    runners: list = []
    try:
        engine_options = None
        if "trt" in kinds and engine is None and model_path.suffix.lower() == ".onnx":
            engine_options = trt_build_options(model_path, shapes or {}, batches)
        for kind in kinds:
            runners.append(make_runner(kind, model_path, torch_model=modules.get(kind), device_threads=threads,
                                       engine=engine, engine_options=engine_options,
                                       torch_channels_last=torch_channels_last))
            runners[-1].activate()
    except BaseException as exc:
        for runner in runners:
            runner.deactivate()
        if isinstance(exc, RunnerError):  # the model cannot be loaded by this runner here
            raise CliError(str(exc)) from exc
        raise
    if not keep_active:
        for runner in runners:
            runner.deactivate()
    return runners


def _check_trt_runner(kinds: Sequence[str], engine: Optional[Path]) -> None:
    """CliError for --engine without the trt runner, and for the trt runner where TensorRT cannot be imported."""
    from ..backends.factory import tensorrt_missing_reason

    if engine is not None and "trt" not in kinds:
        raise CliError("--engine is only used by the trt runner; add it (e.g. --runner trt)")
    if "trt" in kinds:
        reason = tensorrt_missing_reason()
        if reason:
            raise CliError(f"the trt runner cannot run: {reason}")


def _torch_module(torch_kinds: Sequence[str], model_path: Path, torch_model: Optional[str],
                  checkpoint: Optional[Path]):
    """The nn.Module that --model/--weights build for the torch runners of the command (``torch_kinds``; None
    without them); CliError for a torch runner without --model, and for --model/--weights without a torch runner."""
    if not torch_kinds:
        if torch_model or checkpoint:
            raise CliError(f"--model/--weights are only used by the torch runner; add it ({_add_torch_runner_hint()})")
        return None
    if not torch_model:
        raise CliError(f"the {' and '.join(torch_kinds)} runner needs the PyTorch model: add --model FILE.py:FACTORY "
                       "(or package.module:FACTORY, a .pt2 file, a zoo name) and --weights STATE_DICT.pt if the "
                       "factory builds an untrained model")
    from ..onnx.model_loading import load_model

    loaded = load_model(torch_model, checkpoint)  # errors of the user's code: ModelCodeError, exit 2
    if loaded.converted or loaded.converted.skipped:  # which op the torch runner's deformable layers run
        first, *left = str(loaded.converted).splitlines()
        if loaded.converted:
            echo_note(f"--model {torch_model}: {first}; the torch runner runs those")
        for line in left:
            echo_note(f"--model {torch_model}: {line} (it runs its own library's op)")
    return _in_input_dtype(loaded, model_path, torch_model).model


def _in_input_dtype(loaded, model_path: Path, torch_model: str):
    """The ``--model`` network (a ``LoadedModel``) cast to the floating dtype of the ONNX file's inputs.

    ``export --dtype float16`` (bfloat16, float64) casts the network before exporting, so the file takes inputs
    of that dtype; the factory builds it in float32 again, and float16 inputs would fail in a float32 network
    ("Input type (c10::Half) and bias type (float)"). Unchanged when the network has that dtype already, when the
    file's inputs have several floating dtypes or none, and when the file is not ONNX (make_runner reports that).
    """
    from ..backends.factory import onnx_io_metadata
    from ..backends.torch_runner import floating_dtypes
    from ..onnx.model_loading import DTYPES

    if model_path.suffix.lower() != ".onnx":
        return loaded
    inputs, _ = onnx_io_metadata(model_path)
    floating = {str(m.dtype) for m in inputs} & set(DTYPES)
    if len(floating) != 1:
        return loaded
    (target,) = floating
    current = floating_dtypes(loaded.model)
    if not current or current == {target}:
        return loaded
    try:
        loaded.cast(DTYPES[target])
    except ValueError as exc:  # a saved torch.export program keeps the dtype it was exported in
        raise CliError(f"--model {torch_model} is a torch.export program in {', '.join(sorted(current))}, but "
                       f"{model_path.name} takes {target} inputs: save the program in {target} (or verify the "
                       f"{', '.join(sorted(current))} ONNX file)") from exc
    echo_note(f"--model {torch_model} cast from {', '.join(sorted(current))} to {target}, the dtype of "
              f"{model_path.name}'s inputs (as export --dtype did)")
    return loaded


def _add_torch_runner_hint() -> str:
    """How the running command adds the torch runner: its options differ (verify --against, bench --runner A,B)."""
    context = click.get_current_context(silent=True)
    name = context.command.name if context is not None else None
    return {"verify": "e.g. --against torch", "bench": "e.g. --runner ort,torch",
            "infer": "--runner torch"}.get(name, "e.g. --runner torch")

