#!/usr/bin/env python3
"""GPU latency of whole zoo networks in PyTorch: what the deformable layers cost a network, with dcn_deploy's op and
with torchvision's, next to the plain twin (the same network with ordinary 3x3 convolutions, cuDNN's).

    python benchmarks/gpu_zoo_torch.py                          # the default cases, float16, NCHW and channels-last
    python benchmarks/gpu_zoo_torch.py --cases resnet50_dcnv2_c3c5@800x1333 --batches 1 --layouts channels-last
    python benchmarks/gpu_zoo_torch.py --from-json zoo.json     # render saved rows (no GPU)

Each row is one network at one input size, batch, dtype and memory format, timed three ways on the same input: the
plain twin, the deformable network on dcn_deploy's op (its CUDA kernels: the channels-last GEMM path where the input
is channels-last), and the same deformable network with torchvision's ``deform_conv2d`` in place of ours. Random
weights (``models.zoo``, seed 0); the offset convolutions' weights are redrawn (normal, std ``--offset-std``), so that
the offsets are not the zoo's zeros and the samples land between pixels and off the image. Times are medians of
CUDA-event-timed CUDA-graph replays after a warm-up (:func:`gpu_deform_conv.time_cuda`: the GPU's work, not Python's
launch of it). Errors are ||out - ref|| / ||ref|| of the network's output against the deformable network in float32
on our op (TF32 off); in float16 they are mostly cuDNN's and the rest of the network's rounding, so they only show
that neither op broke the network.

Needs a GPU, torch with CUDA, torchvision and the built kernels library (``dcn-deploy plugin build``).
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import sys
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from gpu_deform_conv import (command_line, git_commit, kernel_settings, relative_error,  # noqa: E402
                             time_cuda_detail, without_tf32)

from dcn_deploy.io_utils import atomic_write_text  # noqa: E402

# name@HxW: the backbones of the layers (ResNet-50 with DCNv2 in c3-c5, mmdetection's default, at the
# 800x1333 detection input; with DCN in c5, the paper's) and the paper's segmentation setting (DeepLab, c5, on a
# 1024x2048 Cityscapes image), and ResNeXt-50 32x4d with DCNv2 in c3-c5 (grouped deformable layers: 32 groups of 8,
# 16 and 32 channels)
DEFAULT_CASES = ("resnet50_dcnv2_c3c5@800x1333", "resnet50_dcn_c5@800x1333", "deeplab_resnet50_dcn@1024x2048",
                 "resnext50_32x4d_dcnv2_c3c5@800x1333")
LAYOUTS = ("nchw", "channels-last")
DTYPES = ("float16", "float32", "bfloat16")


def parse_case(text: str) -> Tuple[str, Tuple[int, int]]:
    """'name@HxW' -> (name, (H, W)); the name must be a deformable zoo model (one with a plain twin)."""
    from models import zoo

    name, _, size = text.partition("@")
    try:
        height, width = (int(v) for v in size.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME@HxW, e.g. resnet50_dcn_c5@800x1333") from None
    deformable = [n for n in zoo.names() if zoo.get(n).deformable and not zoo.get(n).needs_roi_pool]
    if name not in deformable:
        raise argparse.ArgumentTypeError(f"{name!r} is not a deformable zoo model without RoI inputs; "
                                         f"choose from {', '.join(deformable)}")
    return name, (height, width)


@contextlib.contextmanager
def on_torchvision() -> Iterator[None]:
    """dcn_deploy's deformable convolution layers call torchvision's ``deform_conv2d`` instead of ours (same
    arguments; the zoo's layers pad symmetrically)."""
    import torchvision
    from dcn_deploy.ops import modules

    ours = modules.deform_conv2d

    def torchvision_op(input, offset, weight, bias=None, stride=1, padding=0, dilation=1, mask=None):
        return torchvision.ops.deform_conv2d(input, offset, weight, bias, stride=stride, padding=padding,
                                             dilation=dilation, mask=mask)

    modules.deform_conv2d = torchvision_op
    try:
        yield
    finally:
        modules.deform_conv2d = ours


def redraw_offset_weights(model, std: float, seed: int = 1) -> int:
    """Redraw every ``conv_offset`` (the layers predicting offsets and masks) from N(0, std), bias 0; returns how
    many."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    count = 0
    for module in model.modules():
        conv = getattr(module, "conv_offset", None)
        if isinstance(conv, torch.nn.Conv2d):
            with torch.no_grad():
                conv.weight.copy_(torch.randn(conv.weight.shape, generator=generator) * std)
                if conv.bias is not None:
                    conv.bias.zero_()
            count += 1
    return count


def measure_case(name: str, size: Tuple[int, int], batch: int, dtype_name: str, layout: str, iters: int, warmup: int,
                 offset_std: float, device: str = "cuda", timer=time_cuda_detail) -> Dict[str, object]:
    """One row: the plain twin, ours and torchvision's op on one network, input size, batch, dtype and layout.
    ``timer(fn, warmup, iters)`` -> (median ms, whether graph-replayed); ``device`` and ``timer`` are there for the
    CPU test of this function."""
    import torch
    from models import zoo

    entry = zoo.get(name)
    dtype = getattr(torch, dtype_name)
    memory_format = torch.channels_last if layout == "channels-last" else torch.contiguous_format
    image = entry.example_inputs(batch=batch, size=size)[0].to(device)
    deformable = entry.build()
    layers = redraw_offset_weights(deformable, offset_std)
    plain = zoo.get(entry.plain).build()
    row: Dict[str, object] = {"model": name, "plain": entry.plain, "input": f"{batch}x3x{size[0]}x{size[1]}",
                              "dtype": dtype_name, "layout": layout, "offset_layers": layers,
                              "offset_std": offset_std}
    with torch.inference_mode():
        deformable = deformable.to(device)
        sizes = []  # mean |output| of each offset convolution: how far the samples move, in pixels (and mask logits)
        hooks = [m.register_forward_hook(lambda _m, _a, out: sizes.append(float(out.abs().mean())))
                 for m in deformable.modules() if isinstance(getattr(m, "conv_offset", None), torch.nn.Conv2d)
                 for m in [m.conv_offset]]
        try:
            reference = without_tf32(lambda: deformable(image))().float()  # our float32 op follows matmul's flag: off
        finally:
            for hook in hooks:
                hook.remove()
        row["offset_abs_mean"] = sum(sizes) / max(len(sizes), 1)
        x = image.to(dtype).contiguous(memory_format=memory_format)
        deformable = deformable.to(dtype).to(memory_format=memory_format)
        plain = plain.to(device).to(dtype).to(memory_format=memory_format)
        runs = (("plain", plain, contextlib.nullcontext), ("ours", deformable, contextlib.nullcontext),
                ("torchvision", deformable, on_torchvision))
        graphed = True
        for key, model, context in runs:
            with context():
                try:
                    out = model(x)
                    if key != "plain":
                        row[f"{key}_err"] = relative_error(out, reference)
                    row[f"{key}_ms"], replayed = timer(lambda: model(x), warmup, iters)
                    graphed = graphed and replayed
                except (RuntimeError, ValueError) as exc:  # out of memory, an op that refuses: that cell fails
                    row[f"{key}_ms"] = None
                    row[f"{key}_failed"] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                    if device == "cuda":
                        torch.cuda.empty_cache()
        row["timing"] = "graph" if graphed else "eager"
    del deformable, plain, x, image
    if device == "cuda":
        torch.cuda.empty_cache()
    return row


def _ms(row: dict, key: str) -> str:
    value = row.get(f"{key}_ms")
    return "fail" if value is None else f"{value:.3f}"


def _ratio(row: dict, numerator: str, denominator: str) -> str:
    a, b = row.get(f"{numerator}_ms"), row.get(f"{denominator}_ms")
    return "n/a" if a is None or b is None else f"{a / b:.2f}x"


def _err(row: dict, key: str) -> str:
    value = row.get(f"{key}_err")
    return "n/a" if value is None else f"{value:.1e}"


def _offsets(row: dict) -> str:
    value = row.get("offset_abs_mean")
    return "n/a" if value is None else f"{value:.2f}"


def to_markdown(rows: Sequence[dict], settings: dict) -> str:
    """The rows as a markdown table, with the run's device, versions, commit, command and timing under its title."""
    lines = [f"## Zoo networks in PyTorch on {settings.get('device', 'a GPU')} ({settings.get('date_utc', '?')[:10]})",
             "",
             f"commit `{settings.get('commit', '?')}`, torch {settings.get('torch', '?')}, torchvision "
             f"{settings.get('torchvision', '?')}, CUDA {settings.get('cuda', '?')}; median of {settings.get('iters')} "
             f"CUDA-event-timed CUDA-graph replays after {settings.get('warmup')} warm-up runs (`*`: eager calls, the "
             "capture failed); random weights, offset convolutions redrawn from N(0, "
             f"{settings.get('offset_std')}); `|offset|`: the offset convolutions' mean |output|, in pixels; cuDNN "
             "autotuned (`torch.backends.cudnn.benchmark`). `plain`: the plain twin (cuDNN's 3x3 convolutions); "
             "`ours` and `torchvision`: the deformable network on each op. Errors: ||out - ref|| / ||ref|| against the "
             "deformable network in float32 on our op.",
             "",
             f"command: `{settings.get('command', '?')}`",
             "",
             "| model | input | dtype | layout | plain ms | ours ms | torchvision ms | ours / plain | "
             "torchvision / plain | torchvision / ours | err ours | err torchvision | \\|offset\\| |",
             "| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        star = "" if r.get("timing", "graph") == "graph" else "*"
        lines.append(f"| {r['model']} | {r['input']} | {r['dtype']} | {r['layout']}{star} | {_ms(r, 'plain')} | "
                     f"{_ms(r, 'ours')} | {_ms(r, 'torchvision')} | {_ratio(r, 'ours', 'plain')} | "
                     f"{_ratio(r, 'torchvision', 'plain')} | {_ratio(r, 'torchvision', 'ours')} | {_err(r, 'ours')} | "
                     f"{_err(r, 'torchvision')} | {_offsets(r)} |")
    failures = [f"- {r['model']} {r['input']} {r['dtype']} {r['layout']}, {key}: {r[key + '_failed']}"
                for r in rows for key in ("plain", "ours", "torchvision") if r.get(f"{key}_failed")]
    return "\n".join(lines + ([""] + failures if failures else [])) + "\n"


def run_settings(iters: int, warmup: int, offset_std: float) -> dict:
    import torch
    import torchvision

    return {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "torchvision": torchvision.__version__,
            "cuda": torch.version.cuda, "commit": git_commit(), "iters": iters, "warmup": warmup,
            "offset_std": offset_std, "kernel_settings": kernel_settings(),
            "command": command_line(Path(__file__).name),
            "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M")}


def _comma_list(choices: Sequence[str]):
    def parse(text: str) -> List[str]:
        values = [v.strip() for v in text.split(",") if v.strip()]
        unknown = [v for v in values if v not in choices]
        if unknown or not values:
            raise argparse.ArgumentTypeError(f"unknown {unknown or text!r}; choose from {', '.join(choices)}")
        return values
    return parse


def _batches(text: str) -> List[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of sizes >= 1, e.g. 1,8")
    return values


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=parse_case, nargs="+", default=None,
                        help=f"NAME@HxW, deformable zoo models (default: {' '.join(DEFAULT_CASES)})")
    parser.add_argument("--batches", type=_batches, default=[1, 8], help="comma-separated batch sizes (default 1,8)")
    parser.add_argument("--dtypes", type=_comma_list(DTYPES), default=["float16"],
                        help="comma-separated: float16, float32, bfloat16 (default float16)")
    parser.add_argument("--layouts", type=_comma_list(LAYOUTS), default=list(LAYOUTS),
                        help="comma-separated memory formats: nchw, channels-last (default both)")
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--offset-std", type=float, default=0.01,
                        help="std of the redrawn offset-convolution weights (default 0.01)")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here (rewritten after each row)")
    parser.add_argument("--output", type=Path, default=None, help="also write the markdown table here")
    parser.add_argument("--from-json", type=Path, default=None, help="render rows saved by --json; no GPU needed")
    args = parser.parse_args(argv)

    if args.from_json is not None:
        try:
            saved = json.loads(args.from_json.read_text())
            rows, settings = saved["rows"], saved["settings"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            print(f"--from-json: {args.from_json} is not a file this script wrote with --json ({exc})", file=sys.stderr)
            return 2
        print(to_markdown(rows, settings))
        return 0

    import torch

    if not torch.cuda.is_available():
        print("no CUDA device: this benchmark needs a GPU (render saved rows with --from-json)", file=sys.stderr)
        return 2
    cases = args.cases or [parse_case(c) for c in DEFAULT_CASES]
    torch.backends.cudnn.benchmark = True  # cuDNN's convolutions at their best (tried during the warm-up)
    settings = run_settings(args.iters, args.warmup, args.offset_std)
    rows: List[dict] = []
    for name, size in cases:
        for batch in args.batches:
            for dtype_name in args.dtypes:
                for layout in args.layouts:
                    row = measure_case(name, size, batch, dtype_name, layout, args.iters, args.warmup, args.offset_std)
                    rows.append(row)
                    print(json.dumps(row), flush=True)
                    if args.json is not None:
                        atomic_write_text(args.json, json.dumps({"settings": settings, "rows": rows}, indent=1))
    table = to_markdown(rows, settings)
    print(table)
    if args.output is not None:
        atomic_write_text(args.output, table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
