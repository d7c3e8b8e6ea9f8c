"""``dcn-deploy verify``: compare a model's outputs between two runners on the same inputs."""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence, Tuple

import click

from . import EXIT_FAILED, CliError, Command, OutputFile, echo_report, json_stdout
from ._runtime import (RUNNER_CHOICES, TORCH_RUNNERS, check_output_option, check_tolerance_options, default_runner,
                       echo_note, engine_option, file_facts, inference_failure, make_runners, model_argument,
                       shape_options, torch_model_options)


@click.command("verify", cls=Command)
@model_argument
@click.option("--against", type=click.Choice(RUNNER_CHOICES), default=None,
              help="The reference runner. Default: torch when --model is given, else ort.")
@click.option("--runner", "subject", type=click.Choice(RUNNER_CHOICES), default=None,
              help="The runner under test. Default: trt for an engine; ort for an ONNX file, or onnx-reference "
                   "(onnx's numpy evaluator of the standard) when --against is ort.")
@torch_model_options
@engine_option
@click.option("--input", "inputs", multiple=True, metavar="NAME=FILE",
              help="Use real inputs: NAME=file.npy or file.npz (keys = input names); repeatable. Default: random.")
@shape_options
@click.option("--batch", type=click.IntRange(min=1), default=None,
              help="Batch size of random inputs; it also replaces the batch of a --shape given for a dynamic batch.")
@click.option("--atol", type=float, default=None, help="Absolute tolerance for every output (default per dtype).")
@click.option("--rtol", type=float, default=None, help="Relative tolerance for every output (default per dtype).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option("-o", "--output", type=OutputFile(), default=None,
              help="Also write the JSON result to this file (written whether or not the outputs pass).")
@json_stdout
def command(model_path: Path, against: Optional[str], subject: Optional[str], torch_model: Optional[str],
            checkpoint: Optional[Path], torch_channels_last: bool, engine: Optional[Path], inputs: Sequence[str],
            shapes: Sequence[str], seed: int,
            batch: Optional[int], atol: Optional[float], rtol: Optional[float], as_json: bool,
            output: Optional[Path]) -> None:
    """Compare MODEL's outputs from two runners; exit 0 when within tolerance, 1 when not, 2 on bad input.

    Per output: max absolute error, max relative error (|diff| / max(|ref|, atol)) and pass/fail by
    |out - ref| <= atol + rtol*|ref| (float32: atol 1e-4, rtol 1e-3; float16: 1e-2, 1e-2; bfloat16: 5e-2, 5e-2;
    float64: 1e-7, 1e-6). A float32 output of a model that computes in float16/bfloat16 (a graph converted to
    half precision, an fp16/bf16 engine) is held to that type's tolerance, with a note; so is one of a float32
    engine built with TF32 allowed (the default; tf32: 1e-2, 1e-2), unless built with --no-tf32.

    \b
    Examples:
      dcn-deploy verify demo.onnx --model dcn_deploy.models.demo:DemoNet --weights demo_weights.pt --shape image=1x1x28x28
      dcn-deploy verify demo.onnx --against torch --model net.py:build_model --weights net.pt --shape input=1x3x224x224
      dcn-deploy verify demo.onnx --against ort --shape image=1x1x28x28   # vs onnx's reference evaluator (numpy)
      dcn-deploy verify demo.onnx --runner trt --against ort --input image=batch.npy
      dcn-deploy verify demo.onnx --runner trt --engine demo.engine --against torch --model net.py:build
    """
    from ..backends.base import RunnerError
    from ..compare import DEFAULT_TOLERANCES, SHAPE_MISMATCH, Tolerance, compare_runners
    from ..feeds import load_feed, reject_empty
    from ..io_utils import atomic_write_text
    from ..onnx.compute_type import narrowest_compute_type

    against, subject = _runner_pair(against, subject, torch_model, model_path)
    if inputs and (shapes or batch):
        raise CliError("--input gives the inputs; --shape/--batch only apply to random inputs")
    check_tolerance_options(atol, rtol)
    if output is not None:
        check_output_option(output, model_path, torch_model, checkpoint, engine, inputs)  # before the runners load

    overrides = None
    if atol is not None or rtol is not None:
        overrides = {k: Tolerance(v.atol if atol is None else atol, v.rtol if rtol is None else rtol)
                     for k, v in DEFAULT_TOLERANCES.items()}

    shape_map, rois, file_half = file_facts(shapes, model_path)  # one read, dropped before the runners load
    runners = make_runners([against, subject], model_path, torch_model, checkpoint, engine=engine, shapes=shape_map,
                           torch_channels_last=torch_channels_last,
                           batches=[batch] if batch else [], keep_active=True)
    # what the file computes in (ort, onnx-reference), or an engine (its sidecar, read without the engine)
    engine_half = [r.compute_dtype() for r in runners if r.name == "tensorrt"]
    computed_in = narrowest_compute_type(file_half, *engine_half) or "float32"
    if "onnx-reference" in (subject, against):  # once the arguments are known to be good: why this may take seconds
        echo_note("onnx-reference is onnx's numpy evaluator of the standard, slower than the runtimes")
    try:
        feed = load_feed(inputs, runners[0].input_metadata(), rois=rois, note=echo_note) if inputs else None
        if feed is not None:
            reject_empty({name: array.shape for name, array in feed.items()}, "--input")
        result = compare_runners(runners, feed, shapes=shape_map, batch=batch, seed=seed,
                                 tolerances=overrides, rois=rois, computed_in=computed_in)
    except RunnerError as exc:  # a runner could not run these inputs: nothing was compared
        raise CliError(inference_failure(str(exc), model_path, torch_model)) from exc
    finally:
        for r in runners:
            r.deactivate()
    if output is not None:
        atomic_write_text(output, result.to_json() + "\n")
    if as_json:
        echo_report(result.to_json())
    else:
        click.echo(f"verify {model_path}: {subject} against {against}")
        click.echo(result.table())
        if output is not None:
            click.echo(f"JSON result: {output}")
    reshaped = [o for o in result.outputs if o.note.startswith(SHAPE_MISMATCH)]
    if reshaped and torch_model and {subject, against} & set(TORCH_RUNNERS):
        # Weights never change an output's shape: --model builds another network than the file holds.
        first = reshaped[0]
        click.echo(f"hint: output {first.output!r} has another shape from each runner ({first.note}): --model "
                   f"{torch_model} does not build the network {model_path.name} was exported from (weights would not "
                   f"change a shape); give the factory, zoo name or .pt2 that {model_path.name} came from", err=True)
    elif not result.passed and torch_model and checkpoint is None and not torch_model.endswith(".pt2"):
        # A factory or zoo entry builds its model with initial weights: without --weights a mismatch is expected.
        click.echo(f"hint: --model {torch_model} builds an untrained model unless --weights STATE_DICT.pt is given; "
                   f"pass the weights {model_path.name} was exported with", err=True)
    click.get_current_context().exit(EXIT_FAILED if not result.passed else 0)


def _runner_pair(against: Optional[str], subject: Optional[str], torch_model: Optional[str],
                 model_path: Path) -> Tuple[str, str]:
    """(reference, runner under test): --against defaults to torch with --model, else ort; --runner to the file's
    own runner (trt for an engine, ort for ONNX) unless that is the reference already, then onnx-reference
    against ort, ort against anything else."""
    if against is None:
        against = "torch" if torch_model else "ort"
    if subject is None:
        subject = default_runner(model_path)
        if subject == against:
            subject = "onnx-reference" if against == "ort" else "ort"
    if subject == against:
        raise CliError(f"--runner and --against are both {against!r}: choose two different runners")
    return against, subject

