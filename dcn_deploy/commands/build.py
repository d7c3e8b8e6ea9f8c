"""``dcn-deploy build``: an ONNX file -> a TensorRT engine (+ its ``.engine.json`` sidecar)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import click

from ..backends.engine_meta import PRECISIONS  # no TensorRT, no torch
from ..backends.factory import ENGINE_SUFFIXES
from ..backends.trt_profiles import DEFAULT_MAX_BATCH, DEFAULT_MAX_ROIS
from . import DTYPE_SHORT_NAMES, EXIT_INTERRUPTED, CliError, Command, OutputFile, check_output_suffix

# export's --dtype names, accepted for --precision too (float64 has no precision: refused as before)
_PRECISION_ALIASES = {**DTYPE_SHORT_NAMES, "half": "fp16"}


def _precision_option(ctx, param, value: str) -> str:
    """--precision: fp32, fp16 or bf16, or the dtype names export's --dtype takes (float16, half, bfloat16, ...)."""
    name = _PRECISION_ALIASES.get(value.lower(), value.lower())
    if name not in PRECISIONS:
        raise click.BadParameter(f"{value!r} is not one of {', '.join(PRECISIONS)} (or float32, float16, half, "
                                 "bfloat16)", ctx=ctx, param=param)
    return name


@click.command("build", cls=Command)
@click.argument("model_path", metavar="MODEL.onnx", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("-o", "--output", type=OutputFile(), default=None,
              help="Engine file to write [default: MODEL.engine beside the model]. A MODEL.engine.json sidecar "
                   "records TensorRT version, GPU, plugin hash, precision and profile.")
@click.option("--precision", default="fp32", show_default=True, callback=_precision_option,
              metavar="[" + "|".join(PRECISIONS) + "]",
              help="fp16/bf16 convert the ONNX graph (TensorRT 11 networks are strongly typed), keeping reductions, "
                   "softmax, normalisation and exp/log in float32 (float16, half, bfloat16 also accepted).")
@click.option("--shapes", multiple=True, metavar="NAME:SHAPE[/OPT/MAX]",
              help="Input shapes, trtexec style: x:1x3x224x224 (fixed) or x:1x3x224x224/4x3x224x224/8x3x224x224 "
                   "(min/opt/max; x=... also works); comma-separated or repeated. A dynamic batch defaults to "
                   "1..--max-batch, other "
                   "dynamic sizes of an input not given to the example shape export stored in the file, and a "
                   f"RoI input's box count to 1..{DEFAULT_MAX_ROIS} (a note says each).")
@click.option("--min-shapes", multiple=True, metavar="NAME:SHAPE",
              help="trtexec's --minShapes (comma-separated or repeated).")
@click.option("--opt-shapes", multiple=True, metavar="NAME:SHAPE",
              help="trtexec's --optShapes (comma-separated or repeated).")
@click.option("--max-shapes", multiple=True, metavar="NAME:SHAPE",
              help="trtexec's --maxShapes (comma-separated or repeated).")
@click.option("--max-batch", type=click.IntRange(min=1), default=DEFAULT_MAX_BATCH, show_default=True,
              help="Largest batch of the profile when the batch dimension is dynamic and not given in --shapes.")
@click.option("--workspace", metavar="SIZE", default=None,
              help="Workspace limit, e.g. 4G or 512M (a bare number is MiB) [default: TensorRT's]. Deformable "
                   "convolutions fit their column buffer under it (more, smaller chunks).")
@click.option("--timing-cache", type=OutputFile(), default=None,
              help="Timing cache file to read and update (makes rebuilds much faster).")
@click.option("--keep-fp32", "keep_fp32", multiple=True, metavar="NODE",
              help="Keep this ONNX node in float32 under --precision fp16/bf16 (repeatable; the node names are "
                   "listed by `dcn-deploy inspect --nodes MODEL.onnx`).")
@click.option("--io-dtype", type=click.Choice(["float32", "half"]), default="float32", show_default=True,
              help="Engine input/output type under fp16/bf16: float32 (casts inside the engine) or the half type "
                   "(RoI box inputs stay float32).")
@click.option("--plugin", "plugin_library", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="Our TensorRT plugin library [default: the one `dcn-deploy plugin info` shows].")
@click.option("--no-plugin", is_flag=True,
              help="Do not route dcn_deploy nodes to our plugin (TensorRT then uses its own DeformConv plugin).")
@click.option("--no-tf32", is_flag=True,
              help="Disallow TF32 in float32 layers, TensorRT's and our DeformConv2d plugin's (its allow_tf32 field), "
                   "for results closer to the float32 reference.")
@click.option("--opt-level", "optimization_level", type=click.IntRange(0, 5), default=None,
              help="Builder optimisation level 0-5 [default: TensorRT's, 3]; higher searches longer.")
@click.option("--quiet", is_flag=True, help="No progress lines (notes about defaults still print).")
def command(model_path: Path, output: Optional[Path], precision: str, shapes: Sequence[str],
            min_shapes: Sequence[str], opt_shapes: Sequence[str], max_shapes: Sequence[str], max_batch: int,
            workspace: Optional[str], timing_cache: Optional[Path], keep_fp32: Sequence[str], io_dtype: str,
            plugin_library: Optional[Path], no_plugin: bool, no_tf32: bool, optimization_level: Optional[int],
            quiet: bool) -> None:
    """Build a TensorRT engine from MODEL.onnx (needs TensorRT 10.1+/11 and an NVIDIA GPU).

    Our deformable-convolution nodes are routed to the dcn_deploy plugin library, which is loaded first.

    \b
    Examples:
      dcn-deploy build demo.onnx -o demo.engine    # dynamic H/W: the size export stored
      dcn-deploy build net.onnx --precision fp16 --shapes input:1x3x512x512/4x3x512x512/8x3x512x512
      dcn-deploy build net.onnx --precision fp16 --keep-fp32 node_linear --timing-cache trt.cache --workspace 4G
    """
    from ..backends.trt_build import BuildCancelled, BuildError, TensorRTMissingError, build_engine
    from ..backends.trt_profiles import ProfileError

    # verify, bench and infer read the file as an engine by its name; -o naming the model itself gets build_engine's
    # more specific "is the ONNX model" error instead
    if output is not None and output.resolve() != model_path.resolve():
        check_output_suffix(output, ENGINE_SUFFIXES, "a TensorRT engine")
    # A bad --workspace (and any other option build_engine checks) is a ValueError from the library, raised before
    # the model is read or TensorRT imported: the CLI prints it as bad input, exit 2 (cli.is_bad_input).
    try:
        result = build_engine(
            model_path, output, precision=precision, shapes=shapes or None, min_shapes=min_shapes or None,
            opt_shapes=opt_shapes or None, max_shapes=max_shapes or None, max_batch=max_batch, workspace=workspace,
            timing_cache=timing_cache, keep_fp32=keep_fp32, io_dtype=io_dtype, plugin_library=plugin_library,
            use_plugin=not no_plugin, tf32=not no_tf32, optimization_level=optimization_level, progress=not quiet)
    except (ProfileError, TensorRTMissingError) as exc:  # after the arguments are checked: see build_engine
        raise CliError(str(exc)) from None
    except BuildCancelled as exc:
        click.echo(f"error: {exc}", err=True)  # "build cancelled; nothing was written"
        raise click.exceptions.Exit(EXIT_INTERRUPTED) from exc
    except BuildError as exc:
        click.echo(f"error: {exc}", err=True)
        raise click.exceptions.Exit(1) from exc
    click.echo(f"{result.engine_path} ({result.meta.precision}, TensorRT {result.meta.tensorrt_version}, "
               f"{result.meta.gpu_name})")
