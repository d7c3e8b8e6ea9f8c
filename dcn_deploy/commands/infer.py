"""``dcn-deploy infer``: run a model on input files and save (or summarise) its outputs."""
from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Dict, Optional, Sequence

import click

from . import CliError, Command, OutputFile, echo_report, json_stdout
from ._runtime import (RUNNER_CHOICES, check_output_option, default_runner, echo_note, inference_failure,
                       make_runners, model_argument, torch_model_options)

if TYPE_CHECKING:  # numpy is imported when the command runs, not when the CLI starts
    import numpy as np


@click.command("infer", cls=Command)
@model_argument
@click.option("--input", "inputs", multiple=True, metavar="NAME=FILE", required=True,
              help="An input: NAME=file.npy, or file.npz whose keys are input names (or a bare file.npy when the "
                   "model has one input). Repeatable.")
@click.option("--runner", type=click.Choice(RUNNER_CHOICES), default=None,
              help="Default: trt for an engine (.engine/.plan), ort for an ONNX file.")
@torch_model_options
@click.option("-o", "--output", type=OutputFile(), default=None,
              help="Write the outputs to this .npz (keys = output names), or .npy for a single output.")
@click.option("--json", "as_json", is_flag=True, help="Print the output summary as JSON.")
@json_stdout
def command(model_path: Path, inputs: Sequence[str], runner: Optional[str], torch_model: Optional[str],
            checkpoint: Optional[Path], torch_channels_last: bool, output: Optional[Path], as_json: bool) -> None:
    """Run MODEL on real inputs; print each output's shape and statistics, optionally save them.

    The inputs run twice: a warm-up call (it pays one-time set-up: memory allocation, kernel selection, lazy
    initialisation), then the call whose time and outputs are reported; the warm-up's time is shown apart.
    `dcn-deploy bench` gives latency statistics over many runs.

    \b
    Examples:
      dcn-deploy infer artifacts/demo/demo.onnx --input image=artifacts/demo/sample_digits.npy -o logits.npz
      dcn-deploy infer demo.engine --input inputs.npz -o out.npz        # .npz keys = input names
      dcn-deploy infer artifacts/demo/demo.onnx --input artifacts/demo/sample_digits.npy --runner torch --model dcn_deploy.models.demo:DemoNet --weights artifacts/demo/demo_weights.pt

    (artifacts/demo/ is what `dcn-deploy demo` writes.)
    """
    from ..feeds import format_shape, load_feed, roi_inputs
    from ..json_text import json_text

    if output is not None and output.suffix.lower() not in (".npz", ".npy"):
        raise CliError(f"--output {output}: use a .npz file (or .npy for a model with one output)")
    if output is not None:
        check_output_option(output, model_path, torch_model, checkpoint, inputs=inputs)  # before the model loads
    kind = runner or default_runner(model_path)
    from ..backends.base import RunnerError

    (model_runner,) = make_runners([kind], model_path, torch_model, checkpoint, torch_channels_last=torch_channels_last)
    with model_runner:
        feed = load_feed(inputs, model_runner.input_metadata(), rois=roi_inputs(model_path), note=echo_note)
        # A first call pays one-time costs (1 s and more for torch, vs ms warm): timing it as the latency would
        # mislead, and a warm second call costs little next to it.
        try:
            model_runner.infer(feed)
        except RunnerError as exc:  # these inputs do not fit the model (as verify reports it: exit 2)
            raise CliError(inference_failure(str(exc), model_path, torch_model)) from exc
        first_seconds = model_runner.last_inference_time()
        outputs = model_runner.infer(feed)
        seconds = model_runner.last_inference_time()
    if output is not None:
        _save_outputs(outputs, output)
    summary = {
        "runner": model_runner.name, "latency_ms": seconds * 1e3, "first_call_ms": first_seconds * 1e3,
        "inputs": {k: {"shape": list(v.shape), "dtype": str(v.dtype)} for k, v in feed.items()},
        "outputs": {k: _array_summary(v) for k, v in outputs.items()},
        "saved_to": None if output is None else str(output),
    }
    if as_json:
        echo_report(json_text(summary))
        return
    click.echo(f"infer {model_path} with {model_runner.name} in {summary['latency_ms']:.2f} ms (warm call; the first "
               f"call, with one-time set-up, took {summary['first_call_ms']:.2f} ms)")
    for name, info in summary["outputs"].items():
        stats = (f"  min {info['min']:.4g}  max {info['max']:.4g}  mean {info['mean']:.4g}" if "min" in info else "")
        click.echo(f"  {name}: {format_shape(info['shape'])} {info['dtype']}{stats}")
    for name, info in summary["outputs"].items():
        if info.get("nan") or info.get("inf"):
            click.echo(f"warning: output {name} holds {info['nan']} NaN and {info['inf']} infinite value(s) of "
                       f"{math.prod(info['shape'])}: check the inputs (a NaN in gives NaN out) and the weights",
                       err=True)
    if output is not None:
        click.echo(f"outputs written to {output}")


def _save_outputs(outputs: Dict[str, np.ndarray], output: Path) -> None:
    """Write ``outputs`` to ``output``: an .npz keyed by output name, or an .npy for a model with one output."""
    import numpy as np

    from ..io_utils import atomic_path

    if output.suffix.lower() == ".npy" and len(outputs) != 1:
        raise CliError(f"--output {output}: the model has {len(outputs)} outputs ({sorted(outputs)}); "
                       "use a .npz file")
    with atomic_path(output) as tmp, open(tmp, "wb") as handle:  # a file object: numpy adds no suffix
        if output.suffix.lower() == ".npy":
            np.save(handle, next(iter(outputs.values())))
        else:
            np.savez(handle, **outputs)


def _array_summary(array: np.ndarray) -> dict:
    """Shape and dtype of an output, with its min, max and mean when it is a non-empty number array."""
    import numpy as np

    stats = ({"min": float(array.min()), "max": float(array.max()), "mean": float(array.mean(dtype=np.float64))}
             if array.size and array.dtype.kind in "fiub" else {})
    if array.size and array.dtype.kind == "f":  # how many values are not numbers: min/max/mean then say nan
        stats["nan"] = int(np.isnan(array).sum())
        stats["inf"] = int(np.isinf(array).sum())
    return {"shape": list(array.shape), "dtype": str(array.dtype), **stats}
