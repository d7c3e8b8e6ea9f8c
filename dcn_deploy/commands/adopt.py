"""``dcn-deploy adopt``: an ONNX file from another exporter (mmcv, mmdeploy, torchvision via torch's exporter) -> the
same model with dcn_deploy's ops, which our TensorRT plugin builds and stock ONNX Runtime runs."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import click

from ..json_text import json_text
from . import Command, OutputFile, check_output_suffix, echo_report, json_stdout


@click.command("adopt", cls=Command)
@click.argument("model_path", metavar="MODEL.onnx", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("-o", "--output", type=OutputFile(), default=None,
              help="ONNX file to write (atomically) [default: MODEL.adopted.onnx beside the model].")
@click.option("--roi-sampling-ratio", type=click.IntRange(min=1), default=None, metavar="N",
              help="Samples per bin side for mmcv DeformRoIPool nodes with adaptive sampling (sampling_ratio=0), "
                   "which has no static form; the outputs then differ from adaptive sampling.")
@click.option("--json", "as_json", is_flag=True, help="Print what was rewritten as JSON.")
@json_stdout
def command(model_path: Path, output: Optional[Path], roi_sampling_ratio: Optional[int], as_json: bool) -> None:
    """Rewrite the deformable nodes other exporters wrote as dcn_deploy's ops: mmcv's and mmdeploy's
    MMCVDeformConv2d, MMCVModulatedDeformConv2d and MMCVDeformRoIPool, and ONNX's DeformConv (torchvision's
    deform_conv2d through torch's exporter); and mmdeploy's detection ops (TRTBatchedNMS, MMCVMultiLevelRoiAlign,
    MMCVRoiAlign, GatherTopk, GridPriorsTRT, TRTInstanceNormalization, grid_sampler) and Deformable DETR's
    attention (MMCVMultiScaleDeformableAttention) as standard ONNX ops.

    The result builds with our TensorRT plugin (no mmdeploy plugin library, any TensorRT 10/11) and runs in stock ONNX
    Runtime. Nodes keep their names; a missing bias or RoI offset becomes zeros; mmdeploy's 4-value padding of
    MMCVDeformConv2d is read as it was written ([pad_h, pad_h, pad_w, pad_w]); a default opset below 19 is raised to
    19 (our ops' function bodies need it), and an IR version below what the opset needs (9 for opset 19) is raised to
    it. TRTBatchedNMS becomes NonMaxSuppression, TopK and indexing; the RoIAlign nodes RoiAlign per feature level;
    GatherTopk GatherND; GridPriorsTRT Range and Expand; TRTInstanceNormalization InstanceNormalization; grid_sampler
    GridSample; MMCVMultiScaleDeformableAttention GridSample per feature level: each computes what mmdeploy's TensorRT
    plugin computes, grid_sampler what PyTorch's grid_sample does (a max-pooled RoIAlign is refused). Other
    mmcv/mmdeploy ops (TRTBatchedRotatedNMS, say) are left as they are, and listed.

    \b
    Examples:
      dcn-deploy adopt end2end.onnx                      # mmdeploy's export -> end2end.adopted.onnx
      dcn-deploy adopt model.onnx -o model_dcn.onnx --roi-sampling-ratio 2
      dcn-deploy build end2end.adopted.onnx --precision fp16
    """
    from ..onnx.adopt import adopt_file

    if output is not None:
        check_output_suffix(output, [".onnx"], "an ONNX model")
    result = adopt_file(model_path, output, roi_sampling_ratio=roi_sampling_ratio)
    if as_json:
        report = result.adoption.to_dict()
        report.update(path=str(result.path),
                      weights_path=str(result.weights_path) if result.weights_path is not None else None)
        echo_report(json_text(report))
        return
    click.echo(result.adoption.summary())
    weights = f" and its weights {result.weights_path.name}" if result.weights_path is not None else ""
    click.echo(f"wrote {result.path}{weights} (checked: onnx.checker full check, shape inference)")
    ours = any(node.target.startswith("dcn_deploy::") for node in result.adoption.nodes)
    placeholders = {name: _placeholder_shape(dims) for name, dims in result.sized_inputs.items()}
    verify = f"dcn-deploy verify {result.path} --against ort" + "".join(
        f" --shape {name}={shape}" for name, shape in placeholders.items())
    build = f"dcn-deploy build {result.path}" + "".join(
        f" --shapes {name}:{shape}" for name, shape in placeholders.items())
    width = max(len(verify), len(build)) + 2
    click.echo("next:")
    click.echo(f"  {verify.ljust(width)}# runs it in ONNX Runtime and onnx's reference")
    click.echo(f"  {build.ljust(width)}# TensorRT" + (", with our plugin" if ours else ""))
    for name, dims in result.sized_inputs.items():
        names = [_placeholder(axis, dim) for axis, dim in enumerate(dims) if axis and not isinstance(dim, int)]
        click.echo(f"  (input {name!r} has dynamic sizes and the file stores no example: write the sizes you run it "
                   f"at for {', '.join(names)}; build also takes a range, {name}:MIN/OPT/MAX)")


def _placeholder(axis: int, dim: object) -> str:
    """A dynamic dimension's stand-in in a printed command: its symbol in capitals (HEIGHT), else D<axis>."""
    text = "".join(c for c in str(dim or "") if c.isalnum() or c == "_").upper()
    return text if text and not text[0].isdigit() else f"D{axis}"


def _placeholder_shape(dims) -> str:
    """``1x3xHEIGHTxWIDTH``: batch 1 where dynamic, the fixed sizes, a placeholder for each other dynamic size."""
    return "x".join(str(d) if isinstance(d, int) else ("1" if axis == 0 else _placeholder(axis, d))
                    for axis, d in enumerate(dims))
