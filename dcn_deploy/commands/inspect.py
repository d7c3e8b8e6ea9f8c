"""``dcn-deploy inspect``: what an ONNX file holds (opsets, inputs/outputs, deformable nodes, function bodies)."""
from __future__ import annotations

from pathlib import Path

import click

from typing import Optional

from ..json_text import json_text
from . import Command, OutputFile


@click.command("inspect", cls=Command)
@click.argument("model_path", metavar="FILE.onnx", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the description as JSON.")
@click.option("--nodes", "list_nodes", is_flag=True,
              help="Also list every node's name and op type (the names `build --keep-fp32` takes).")
@click.option("-o", "--output", type=OutputFile(), default=None,
              help="Also write the description as JSON to this file (with --nodes, the nodes too).")
def command(model_path: Path, as_json: bool, list_nodes: bool, output: Optional[Path]) -> None:
    """Describe an ONNX file: opsets, inputs and outputs (dtype, shape), deformable nodes (dcn_deploy ops and
    standard DeformConv) with their attributes, stored function bodies and op counts; with --nodes, every node.

    \b
    Examples:
      dcn-deploy inspect demo.onnx
      dcn-deploy inspect demo.onnx --nodes           # node names, e.g. for build --keep-fp32
      dcn-deploy inspect demo.onnx --json | python -m json.tool
      dcn-deploy inspect demo.onnx -o demo_inspect.json
    """
    from ..io_utils import atomic_write_text
    from ..onnx.inspect import format_inspection, inspect_model

    info = inspect_model(model_path, nodes=True) if list_nodes else inspect_model(model_path)
    if output is not None:
        atomic_write_text(output, json_text(info) + "\n")
    click.echo(json_text(info) if as_json else format_inspection(info))
    if output is not None and not as_json:
        click.echo(f"JSON description: {output}")
