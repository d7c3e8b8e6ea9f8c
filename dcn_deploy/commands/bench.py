"""``dcn-deploy bench``: latency and throughput of one or more runners over several batch sizes."""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import click

from . import CliError, Command, ListOption, OutputFile, echo_report, json_stdout
from ._runtime import (check_output_option, default_runner, engine_option, file_facts, inference_failure,
                       make_runners, model_argument, parse_int_list, parse_runner_list, shape_options,
                       torch_model_options)


@click.command("bench", cls=Command)
@model_argument
@click.option("--runner", "runner_list", default=None, cls=ListOption, metavar="NAMES",
              help="Comma-separated runners, side by side; ratios are to the first. "
                   "ort, ort-cuda, torch (needs --model), torch-cuda (the same on the GPU), trt, onnx-reference. "
                   "Default: trt for an engine, else ort.")
@click.option("--batch", "batch_list", default=None, cls=ListOption, metavar="SIZES",
              help="Comma-separated batch sizes (the model needs a dynamic batch dimension for more than its own) "
                   "[default: the model's fixed batch size, else 1].")
@click.option("--iterations", type=click.IntRange(min=1), default=None,
              help="Timed inferences per runner and batch size [default: 100 unless --duration].")
@click.option("--duration", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Seconds of timed inferences per runner and batch size (instead of --iterations).")
@click.option("--warmup", type=click.IntRange(min=0), default=10, show_default=True,
              help="Untimed inferences before timing each runner and batch size.")
@shape_options
@torch_model_options
@engine_option
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="Intra-op threads of the ort and torch runners (default: one per core).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON instead of a table.")
@click.option("-o", "--output", type=OutputFile(), default=None,
              help="Also write the JSON report to this file.")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Progress bar on stderr.")
@json_stdout
def command(model_path: Path, runner_list: Optional[str], batch_list: Optional[str], iterations: Optional[int],
            duration: Optional[float], warmup: int, shapes: Sequence[str], seed: int, torch_model: Optional[str],
            checkpoint: Optional[Path], torch_channels_last: bool, engine: Optional[Path], threads: Optional[int],
            as_json: bool,
            output: Optional[Path], progress: bool) -> None:
    """Time MODEL's inference: latency min/mean/median/p90/p99/max and throughput per runner and batch size.

    \b
    Examples:
      dcn-deploy bench artifacts/demo/demo.onnx --shape image=1x1x28x28 --batch 1,8 --iterations 200
      dcn-deploy bench artifacts/demo/demo.onnx --shape image=1x1x28x28 --runner ort,torch --duration 5 --model dcn_deploy.models.demo:DemoNet --weights artifacts/demo/demo_weights.pt
      dcn-deploy bench net.onnx --shape input=1x3x512x512 --batch 1,4 --json -o bench.json
      dcn-deploy bench demo.engine --runner trt --batch 1,16
      dcn-deploy bench r50.onnx --shape image=1x3x800x1333 --runner ort-cuda,torch-cuda --model resnet50_dcnv2_c3c5 --channels-last

    Batch sizes and shapes are checked against the model's inputs, and the -o folder exists, before anything is
    timed; a runner whose outputs differ from the first runner's (as verify matches them) is refused. The report gives
    each runner's intra-op threads. (artifacts/demo/ is what `dcn-deploy demo` writes.)
    """
    from ..bench import benchmark
    from ..io_utils import atomic_write_text

    if iterations is not None and duration is not None:
        raise CliError("give --iterations or --duration, not both")
    if output is not None:
        check_output_option(output, model_path, torch_model, checkpoint, engine)  # before the runners load
    kinds = parse_runner_list(runner_list) if runner_list else [default_runner(model_path)]
    batches = parse_int_list(batch_list, "--batch") if batch_list is not None else None
    shape_map, rois, _ = file_facts(shapes, model_path)  # one read of the file, dropped before the runners load
    runners = make_runners(kinds, model_path, torch_model, checkpoint, threads, engine, shapes=shape_map,
                           torch_channels_last=torch_channels_last,
                           batches=batches or (), keep_active=False)  # benchmark activates each while it times it
    from ..backends.base import RunnerError

    try:
        result = benchmark(runners, batches=batches, shapes=shape_map, iterations=iterations,
                           duration=duration, warmup=warmup, seed=seed, progress=progress, rois=rois)
    except RunnerError as exc:  # a runner could not run these inputs (as verify reports it: exit 2, what to check)
        raise CliError(inference_failure(str(exc), model_path, torch_model)) from exc
    if output is not None:
        atomic_write_text(output, result.to_json() + "\n")
    if as_json:
        echo_report(result.to_json())
    else:
        env = ", ".join(f"{k} {v}" for k, v in result.environment.items())
        click.echo(f"bench {model_path} ({env})")
        click.echo(result.table())
        if output is not None:
            click.echo(f"JSON report: {output}")
