"""``dcn-deploy export``: a PyTorch model (file, module, .pt2 program or zoo name) -> a checked, verified ONNX file."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional, Sequence, Tuple

import click

from ..json_text import json_text
from . import (DTYPE_SHORT_NAMES, CliError, Command, ListOption, OutputFile, check_output_suffix, echo_report,
               json_stdout)
from ._runtime import check_tolerance_options, input_option_files, model_ref_file

_DTYPES = ("float32", "float16", "bfloat16", "float64")  # = onnx.loaded_model.DTYPES, without importing torch
_DTYPE_ALIASES = {**{short: name for name, short in DTYPE_SHORT_NAMES.items()}, "half": "float16"}


def _dtype_option(ctx, param, value: Optional[str]) -> Optional[str]:
    """--dtype: a dtype name, or the short spelling ``build --precision`` uses (fp16, bf16, ...)."""
    if value is None:
        return None
    name = _DTYPE_ALIASES.get(value.lower(), value.lower())
    if name not in _DTYPES:
        raise click.BadParameter(f"{value!r} is not one of {', '.join(_DTYPES)} (or fp32, fp16, bf16, fp64)",
                                 ctx=ctx, param=param)
    return name


def _default_output(reference: str) -> Path:
    """``<name>.onnx`` in the current folder: FILE's stem for FILE.py:FACTORY and FILE.pt2 (a factory's name such
    as ``build`` says nothing of the model), FACTORY for package.module:FACTORY, NAME for a zoo model."""
    owner, sep, factory = reference.rpartition(":")
    if not (sep and owner and factory.isidentifier()):  # FILE.pt2 (also on a Windows drive) or a zoo name
        name = Path(reference).stem
    elif owner.endswith(".py") or "/" in owner or "\\" in owner:
        name = Path(owner).stem
    else:
        name = factory
    return Path(f"{name or 'model'}.onnx")


@click.command("export", cls=Command)
@click.argument("model_ref", metavar="MODEL")
@click.option("-o", "--output", type=OutputFile(), default=None,
              help="ONNX file to write (atomically). Default, in the current folder: FILE.onnx for FILE.py:FACTORY "
                   "or FILE.pt2, FACTORY.onnx for package.module:FACTORY, NAME.onnx for a zoo model.")
@click.option("--weights", "--checkpoint", "weights", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="state_dict (torch.save) to load into the model that FILE.py:FACTORY or the zoo builds; also a "
                   "checkpoint dict holding it under 'state_dict' or 'model' (mmdetection's), with DataParallel's "
                   "'module.' prefixes and old mmcv offset-branch keys (<layer>_offset.*) renamed. A zoo model "
                   "takes the class count of the checkpoint's head.")
@click.option("--input-shape", "input_shapes", multiple=True, metavar="SHAPE",
              help="Shape of an example input, e.g. 1x3x224x224; repeat once per model input, in order. "
                   "Zoo models take one image shape. A (K, 5) input of a model with dcn_deploy's (or mmcv's, "
                   "converted) deformable RoI pooling layers gets valid random boxes (batch index, x1, y1, x2, "
                   "y2). Default: the model's own example inputs, from its example_inputs method if it has one (it "
                   "may take any of batch, size=(H, W) and seed).")
@click.option("--input", "input_files", multiple=True, metavar="NAME=FILE",
              help="Example input from a file instead of --input-shape: NAME=file.npy (NAME: the forward's argument) "
                   "or one file.npz whose keys are the names; repeat per input. Floats are cast to the model's dtype. "
                   "Verification runs on these inputs too, before the random ones.")
@click.option("--roi-sampling-ratio", type=click.IntRange(min=1), default=None, metavar="N",
              help="Samples per bin side for deformable RoI pooling layers that sample adaptively (mmcv's default "
                   "sampling_ratio=0, which has no ONNX form). The outputs differ from adaptive sampling: re-check "
                   "accuracy.")
@click.option("--dtype", default=None, callback=_dtype_option, metavar="[" + "|".join(_DTYPES) + "]",
              help="Cast the model and inputs before export (bfloat16 needs --opset 22; fp16, bf16 ... also "
                   "accepted). Default: as built.")
@click.option("--dynamic", is_flag=True,
              help="Dynamic batch, height and width (where the model allows them); inputs of equal example sizes "
                   "share them. A .pt2 program keeps the shapes it was saved with.")
@click.option("--opset", type=int, default=19, show_default=True, help="ONNX opset (>= 19; >= 22 for bfloat16).")
@click.option("--standard", is_flag=True,
              help="Emit standard ONNX DeformConv nodes instead of dcn_deploy::DeformConv2d (for tools that know "
                   "only the standard; TensorRT then uses its own plugin, not ours).")
@click.option("--no-verify", is_flag=True, help="Skip the ONNX Runtime vs PyTorch check on random inputs (and on the "
              "--input files).")
@click.option("--atol", type=float, default=None, help="Verification absolute tolerance (default per dtype).")
@click.option("--rtol", type=float, default=None, help="Verification relative tolerance (default per dtype).")
@click.option("--allow-no-deformable", is_flag=True, help="Export even if the model has no deformable layer.")
@click.option("--input-names", default=None, cls=ListOption, metavar="A,B",
              help="Names of the file's inputs, comma-separated in the model's order [default: a zoo model's own "
                   "(image, rois), else the forward's argument names].")
@click.option("--output-names", default=None, cls=ListOption, metavar="A,B",
              help="Names of the file's outputs, comma-separated in order [default: a zoo model's own (logits; "
                   "cls_score,bbox_pred), else the exporter's, e.g. 'linear' or 'mean'].")
@click.option("--json", "as_json", is_flag=True, help="Print the export report as JSON.")
@json_stdout
def command(model_ref: str, output: Optional[Path], weights: Optional[Path], input_shapes: Sequence[str],
            dtype: Optional[str], dynamic: bool, opset: int, standard: bool, no_verify: bool, atol: Optional[float],
            rtol: Optional[float], allow_no_deformable: bool, input_names: Optional[str],
            output_names: Optional[str], as_json: bool, roi_sampling_ratio: Optional[int],
            input_files: Sequence[str]) -> None:
    """Export MODEL to ONNX with deformable convolutions as dcn_deploy ops, check it (onnx.checker full check,
    shape inference) and verify it against PyTorch in ONNX Runtime. Exit 0 on success, 1 when verification
    fails (the new file is kept for inspection: at the output path, or as NAME.failed.onnx beside an earlier file
    there, which stays as it was), 2 on bad input.

    \b
    MODEL is one of:
      path/to/file.py:FACTORY      FACTORY() returns the nn.Module (with --weights for its state_dict)
      package.module:FACTORY       the same, importable
      path/to/program.pt2          a program saved with torch.export.save
      NAME                         a zoo model, e.g. resnet50_dcn_c5

    A FACTORY's torchvision and mmcv deformable layers (DeformConv2d, DCN, DCNv2, deformable RoI pooling) are
    swapped for dcn_deploy's first (dcn_deploy.convert_modules), and the swapped layers are listed.

    \b
    Examples:
      dcn-deploy export dcn_deploy.models.demo:DemoNet --input-shape 1x1x28x28 -o demo.onnx
      dcn-deploy export net.py:build_model --weights net.pt --input-shape 1x3x224x224 -o net.onnx
      dcn-deploy export resnet50_dcn_c5 --input-shape 1x3x224x224 --dynamic -o r50.onnx
      dcn-deploy export program.pt2 --standard -o std.onnx
    """
    from ..onnx.model_loading import DTYPES, load_model, parse_input_shape

    def stage(message: str) -> None:
        click.echo(f"[export] {message}", err=True)

    check_tolerance_options(atol, rtol)
    if no_verify and (atol is not None or rtol is not None):
        raise CliError("--atol/--rtol are verification tolerances, and --no-verify skips verification: give one or "
                       "the other")
    shapes = [parse_input_shape(s) for s in input_shapes]
    if input_files and shapes:  # before the (slow) model load
        raise CliError("give the example inputs either as --input files or as --input-shape sizes, not both")
    torch_dtype = DTYPES[dtype] if dtype else None
    output = output or _default_output(model_ref)
    from ..io_utils import check_not_an_input

    check_not_an_input(output, "--output", [("model file", model_ref_file(model_ref)), ("--weights file", weights)]
                       + [("--input file", path) for path in input_option_files(input_files)])
    check_output_suffix(output, [".onnx"], "an ONNX model")  # second: "would replace the model file" says more

    stage(f"loading {model_ref}" + (f" with weights {weights}" if weights else ""))
    loaded = load_model(model_ref, weights).cast(torch_dtype)
    if loaded.converted or loaded.converted.skipped:
        for line in str(loaded.converted).splitlines():
            stage(line)
    if roi_sampling_ratio is not None:
        _fix_adaptive_sampling(loaded, roi_sampling_ratio, stage)
    example = (loaded.inputs_from_files(input_files, torch_dtype, note=stage) if input_files
               else loaded.example_inputs(shapes, torch_dtype, seed=0))
    # Models that make their own inputs (e.g. boxes) are verified on inputs they make, from another seed.
    verify_inputs = None if no_verify else loaded.verification_inputs(example, dynamic, torch_dtype)

    from ..onnx.export import ExampleInputsError, VerificationError, export

    try:
        report = export(loaded.model, example, output, dynamic=dynamic, opset=opset, standard=standard,
                        verify=not no_verify, rtol=rtol, atol=atol,
                        require_deformable=not allow_no_deformable and not _plain_zoo_model(loaded),
                        verify_inputs=verify_inputs, verify_examples=bool(input_files),
                        verify_inputs_label="model's own inputs", progress=stage,
                        input_names=_names(input_names, "--input-names") or loaded.input_names,
                        output_names=_names(output_names, "--output-names") or loaded.output_names)
    except ExampleInputsError as exc:  # bad input (exit 2), named as the user wrote it
        fix = ("check --input-shape (one per model input, in order) and the model's code" if input_shapes
               else "check the --input files (one per forward argument, by name) and the model's code"
               if input_files else
               "they came from the model itself; give --input-shape (one per model input, in order)")
        raise CliError(f"{model_ref} ({exc.model_name}) raised {exc.cause_text} on the example inputs "
                       f"({exc.shapes_text}); {fix}") from exc
    except VerificationError as exc:
        echo_report(json_text(exc.report.to_dict()) if as_json else str(exc.report))
        raise
    echo_report(json_text(report.to_dict()) if as_json else str(report))


def _plain_zoo_model(loaded) -> bool:
    """True for a zoo model listed as plain (a deformable model's twin): it has no deformable layer by design, so
    the export does not ask for --allow-no-deformable (the zoo report exports it the same way)."""
    if loaded.kind != "zoo":
        return False
    from ..models import zoo

    return not zoo.get(loaded.reference).deformable


def _fix_adaptive_sampling(loaded, ratio: int, stage: Callable[[str], None]) -> None:
    """--roi-sampling-ratio: a fixed sample count on the model's adaptive RoI pooling layers, said per layer."""
    import torch

    from ..ops.roi_modules import fix_adaptive_sampling

    if not isinstance(loaded.model, torch.nn.Module):
        raise CliError(f"--roi-sampling-ratio: {loaded.reference} is a saved torch.export program, whose layers "
                       "cannot be changed; set sampling_ratio on the model before saving the program")
    changed = fix_adaptive_sampling(loaded.model, ratio)
    if not changed:
        raise CliError(f"--roi-sampling-ratio: {loaded.reference} has no deformable RoI pooling layer with adaptive "
                       "sampling (sampling_ratio=0); drop the option")
    stage(f"sampling_ratio={ratio} on the adaptive RoI pooling layer(s) {', '.join(n or '<root>' for n in changed)}; "
          "the outputs differ from adaptive sampling: re-check accuracy")


def _names(text: Optional[str], option: str) -> Optional[Tuple[str, ...]]:
    """``"a,b"`` -> ``("a", "b")``; None when the option is not given."""
    if text is None:
        return None
    names = tuple(part.strip() for part in text.split(","))
    if not all(names):
        example = "image,rois" if option == "--input-names" else "cls_score,bbox_pred"  # the R-FCN zoo model's
        raise CliError(f"{option} {text!r}: give comma-separated names without gaps, e.g. {option} {example}")
    return names
