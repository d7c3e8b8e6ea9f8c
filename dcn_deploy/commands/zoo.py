"""``dcn-deploy zoo list|report``: the model zoo's names, and what deformable layers cost in each network."""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import click

from ..io_utils import check_output_path
from ..json_text import json_text
from . import CliError, Group, OutputFile, echo_report, json_stdout


@click.group("zoo", cls=Group)
def command() -> None:
    """The paper's networks (dcn_deploy.models): list them, or measure what deformable layers cost.

    \b
    Examples:
      dcn-deploy zoo list
      dcn-deploy zoo report --pairs resnet50_dcn_c5 --pairs deeplab_resnet50_dcn --iterations 20
      dcn-deploy export resnet50_dcn_c5 --input-shape 1x3x224x224 -o r50.onnx
    """


@command.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def list_command(as_json: bool) -> None:
    """Every zoo name with its task, its plain twin ("-" for a plain model) and a description.

    \b
    Example:
      dcn-deploy zoo list --json
    """
    from ..models import zoo

    entries = [zoo.get(name) for name in zoo.names()]
    if as_json:
        click.echo(json_text([{"name": e.name, "task": e.task, "deformable": e.deformable, "plain_twin": e.plain,
                                "description": e.description} for e in entries]))
        return
    rows = [("name", "task", "plain twin", "description")]
    rows += [(e.name, e.task, e.plain or "-", e.description) for e in entries]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[3])


@command.command("report")
@click.option("--pairs", multiple=True, metavar="NAME",
              help="Deformable zoo name to measure next to its plain twin (repeatable) [default: five of the paper's "
                   "settings].")
@click.option("--size", default=None, metavar="HxW", help="Input size for every model: HxW, or N for NxN "
              "[default: 224x224 for classifiers, 256x256 otherwise].")
@click.option("--backend", type=click.Choice(["ort", "torch", "none"]), default="ort", show_default=True,
              help="ort: export and time in ONNX Runtime on the CPU; torch: PyTorch eager; none: counts only.")
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True,
              help="Intra-op threads (ONNX Runtime's stop spinning when a run returns, so that the twin's idle "
                   "session does not slow the one being timed).")
@click.option("--rois", type=click.IntRange(min=1), default=100, show_default=True,
              help="Proposals per image for the detectors.")
@click.option("--iterations", type=click.IntRange(min=1), default=10, show_default=True,
              help="Timed runs of each model; a model and its twin alternate run by run.")
@click.option("--warmup", type=click.IntRange(min=0), default=2, show_default=True,
              help="Untimed runs of each model before timing.")
@click.option("--json", "as_json", is_flag=True, help="Print the raw numbers as JSON instead of the table.")
@click.option("-o", "--output", type=OutputFile(), default=None,
              help="Also write the raw numbers (JSON) to this file.")
@json_stdout
def report_command(pairs: Sequence[str], size: Optional[str], backend: str, threads: int, rois: int, iterations: int,
                   warmup: int, as_json: bool, output: Optional[Path]) -> None:
    """Parameters, multiply-accumulates and latency of deformable zoo models next to their plain twins.

    Prints a markdown table (the one in benchmarks/RESULTS.md) and the settings it was measured with.

    \b
    Examples:
      dcn-deploy zoo report
      dcn-deploy zoo report --pairs resnet50_dcn_c5 --size 128x128 --backend none
      dcn-deploy zoo report --pairs rfcn_resnet50_dcn --size 256 --rois 50 --iterations 20 -o rfcn.json
    """
    hw = None if size is None else parse_size(size)
    if output is not None:
        check_output_path(output, "--output")  # before the (minutes-long) measurement, not after it

    from ..io_utils import atomic_write_text
    from ..models.cost_report import DEFAULT_PAIRS, check_pair, markdown, report_json, run_report

    repeated = sorted({name for name in pairs if pairs.count(name) > 1})
    if repeated:
        raise CliError(f"--pairs {', '.join(repeated)} given more than once; give each network once")
    for name in pairs:  # every name before any measuring: bad input (exit 2); errors of the measurement are not
        try:
            check_pair(name)
        except KeyError as exc:
            raise CliError(f"--pairs {name}: {exc.args[0]}") from None
        except ValueError as exc:
            raise CliError(f"--pairs {exc}") from None
    rows, settings = run_report(pairs or DEFAULT_PAIRS, hw, backend, threads, iterations, warmup, rois,
                                progress=lambda message: click.echo(message, err=True))
    raw = report_json(rows, settings) if output is not None or as_json else None
    if output is not None:
        atomic_write_text(output, raw)
    if as_json:
        echo_report(raw)
        return
    click.echo(markdown(rows, settings))
    click.echo("\n" + ", ".join(f"{k}: {v}" for k, v in settings.items()))
    if output is not None:
        click.echo(f"JSON: {output}")


def parse_size(text: str) -> tuple:
    """``"224"`` -> (224, 224); ``"256x512"`` -> (256, 512). Raises CliError naming --size otherwise."""
    from ..feeds import FeedError, parse_shape

    try:
        hw = parse_shape(text)
    except FeedError:
        hw = ()
    if len(hw) == 1:
        hw = hw * 2
    if len(hw) != 2 or min(hw) < 1:
        raise CliError(f"--size {text!r}: give HEIGHTxWIDTH or one size N for NxN, e.g. 224x224 or 224")
    if min(hw) < 32:  # models.zoo refuses it too, but only once the measurement has started
        raise CliError(f"--size {text!r}: the zoo's networks have stride 32; give at least 32x32, e.g. 224x224")
    return hw
