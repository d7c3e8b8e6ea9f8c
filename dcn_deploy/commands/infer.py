"""``dcn-deploy infer``: run a model on input files and save (or summarise) its outputs."""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import click

from . import CliError
from ._runtime import RUNNER_CHOICES, default_runner, echo_note, make_runners, model_argument, torch_model_options


@click.command("infer")
@model_argument
@click.option("--input", "inputs", multiple=True, metavar="NAME=FILE", required=True,
              help="An input: NAME=file.npy, or file.npz whose keys are input names (or a bare file.npy when the "
                   "model has one input). Repeatable.")
@click.option("--runner", type=click.Choice(RUNNER_CHOICES), default=None,
              help="Default: trt for an engine (.engine/.plan), ort for an ONNX file.")
@torch_model_options
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the outputs to this .npz (keys = output names), or .npy for a single output.")
@click.option("--json", "as_json", is_flag=True, help="Print the output summary as JSON.")
def command(model_path: Path, inputs: Sequence[str], runner: Optional[str], torch_model: Optional[str],
            checkpoint: Optional[Path], output: Optional[Path], as_json: bool) -> None:
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
    import json

    import numpy as np

    from ..feeds import format_shape, load_feed, roi_inputs
    from ..io_utils import atomic_path

    if output is not None and output.suffix.lower() not in (".npz", ".npy"):
        raise CliError(f"--output {output}: use a .npz file (or .npy for a model with one output)")
    kind = runner or default_runner(model_path)
    (model_runner,) = make_runners([kind], model_path, torch_model, checkpoint)
    with model_runner:
        feed = load_feed(inputs, model_runner.input_metadata(), rois=roi_inputs(model_path), note=echo_note)
        # A first call pays one-time costs (1 s and more for torch, vs ms warm): timing it as the latency would
        # mislead, and a warm second call costs little next to it.
        model_runner.infer(feed)
        first_seconds = model_runner.last_inference_time()
        outputs = model_runner.infer(feed)
        seconds = model_runner.last_inference_time()
    if output is not None:
        if output.suffix.lower() == ".npy" and len(outputs) != 1:
            raise CliError(f"--output {output}: the model has {len(outputs)} outputs ({sorted(outputs)}); "
                           "use a .npz file")
        with atomic_path(output) as tmp, open(tmp, "wb") as handle:  # a file object: numpy adds no suffix
            if output.suffix.lower() == ".npy":
                np.save(handle, next(iter(outputs.values())))
            else:
                np.savez(handle, **outputs)
    summary = {
        "runner": model_runner.name, "latency_ms": seconds * 1e3, "first_call_ms": first_seconds * 1e3,
        "inputs": {k: {"shape": list(v.shape), "dtype": str(v.dtype)} for k, v in feed.items()},
        "outputs": {k: {"shape": list(v.shape), "dtype": str(v.dtype),
                        **({"min": float(v.min()), "max": float(v.max()), "mean": float(v.mean(dtype=np.float64))}
                           if v.size and v.dtype.kind in "fiub" else {})}
                    for k, v in outputs.items()},
        "saved_to": None if output is None else str(output),
    }
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    click.echo(f"infer {model_path} with {model_runner.name} in {summary['latency_ms']:.2f} ms (warm call; the first "
               f"call, with one-time set-up, took {summary['first_call_ms']:.2f} ms)")
    for name, info in summary["outputs"].items():
        stats = (f"  min {info['min']:.4g}  max {info['max']:.4g}  mean {info['mean']:.4g}" if "min" in info else "")
        click.echo(f"  {name}: {format_shape(info['shape'])} {info['dtype']}{stats}")
    if output is not None:
        click.echo(f"outputs written to {output}")
