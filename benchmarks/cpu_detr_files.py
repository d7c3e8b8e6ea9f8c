#!/usr/bin/env python3
"""Make, check and profile the ONNX files of the Deformable DETR timing in benchmarks/RESULTS.md: mmdet's own
Deformable DETR (its config as it is: ResNet-50, 6 encoder and 6 decoder layers, 300 queries, 4 levels) with seeded
random weights, exported by mmdeploy two ways, then adopted. Time the files with benchmarks/cpu_onnx_files.py.

Needs mmdet 3.3, mmdeploy 1.3.1 and mmcv with its compiled ops (none of them a dependency of dcn_deploy; the
environment of tests/test_adopt_mmdet.py, whose helpers it uses), and for the un-adopted ONNX Runtime file mmdeploy's
ONNX Runtime custom-op library:

    PYTHONPATH=$PWD /tmp/mmdetenv/bin/python benchmarks/cpu_detr_files.py OUT --size 800x1333 \
        --custom-ops /path/to/libmmdeploy_onnxruntime_ops.so [--profile 10]

writes, in the folder OUT,

- ``detr_ort.onnx``: mmdeploy's ``torch2onnx`` with the values of its ONNX Runtime deploy config for mmdet
  (``detection_onnxruntime_dynamic.py``), on the CPU: mmcv's attention is its PyTorch implementation there, one
  ``mmdeploy::grid_sampler`` per level, which mmdeploy's custom-op library runs (what an mmdeploy user runs today);
- ``detr_ort.adopted.onnx``: that file after ``adopt_file`` (standard ``GridSample``; stock ONNX Runtime);
- ``detr_trt.onnx``: the export with mmdeploy's TensorRT deploy config (tests/test_adopt_mmdet.py's
  ``_deploy_config``) and the attention as exported on a GPU (``mmdeploy::MMCVMultiScaleDeformableAttention``, as
  that test's ``_msda_exported_as_on_cuda`` makes it), which ONNX Runtime cannot run even with mmdeploy's library
  (the script tries and prints ONNX Runtime's refusal);
- ``detr_trt.adopted.onnx``: that file adopted.

Then the detections of the three runnable files on the timed input (what cpu_onnx_files.py feeds: standard normal,
seed 0) and on a synthetic image at the same size are compared: the same labels in the same order, and the largest
box and score differences from the ONNX Runtime file's. With ``--profile N``, each runnable file is run N times
(after 2 warm-up runs) at ``--threads`` with ONNX Runtime's profiler: per run, the time of all nodes and of the
deformable attention modules (nodes named after their modules; their linear layers apart) and of their sampling
nodes (``grid_sampler`` or ``GridSample``), and the op types that take the most.
"""
from __future__ import annotations

import argparse
import collections
import contextlib
import functools
import inspect
import json
import re
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))  # the DETR's random weights, the deploy configs and the detection matcher
sys.path.insert(0, str(REPO / "benchmarks"))  # the timing script's sessions
import test_adopt_mmdet as mmdet_check  # noqa: E402
from cpu_onnx_files import ort_session  # noqa: E402

from dcn_deploy.onnx.adopt import adopt_file  # noqa: E402

CONFIG = "deformable_detr/deformable-detr_r50_16xb2-50e_coco.py"
SAMPLING = ("grid_sampler", "GridSample")  # the attention's sampling nodes, before and after adopt
# the nodes of the deformable attention modules (the exports name nodes by module; adopt keeps the prefix), and of
# their four linear layers
ATTENTION = re.compile(r"/(encoder/layers\.\d+/self_attn|decoder/layers\.\d+/cross_attn)/")
PROJECTIONS = re.compile(r"/(value_proj|sampling_offsets|attention_weights|output_proj)/")


def _ort_deploy_config():
    """The values of mmdeploy's ``detection_onnxruntime_dynamic.py`` (and its bases): dynamic batch, height, width."""
    from mmengine import Config

    axes = {"input": {0: "batch", 2: "height", 3: "width"}, "dets": {0: "batch", 1: "num_dets"},
            "labels": {0: "batch", 1: "num_dets"}}
    post_processing = dict(score_threshold=0.05, confidence_threshold=0.005, iou_threshold=0.5,
                           max_output_boxes_per_class=200, pre_top_k=5000, keep_top_k=100, background_label_id=-1)
    return Config(dict(
        onnx_config=dict(type="onnx", export_params=True, keep_initializers_as_inputs=False, opset_version=11,
                         save_file="end2end.onnx", input_names=["input"], output_names=["dets", "labels"],
                         input_shape=None, optimize=True, dynamic_axes=axes),
        codebase_config=dict(type="mmdet", task="ObjectDetection", model_type="end2end",
                             post_processing=post_processing),
        backend_config=dict(type="onnxruntime")))


@contextlib.contextmanager
def _mmdeploy_on_this_torch():
    """As tests/test_adopt_mmdet.py's ``mmdet_stack``: the legacy exporter (torch's default is its dynamo one), and no
    refusal to build a TensorRT task processor on the CPU."""
    import mmdeploy.apis.utils.utils as mmdeploy_utils

    export, check = torch.onnx.export, mmdeploy_utils.check_backend_device
    if "dynamo" in inspect.signature(export).parameters:
        torch.onnx.export = functools.partial(export, dynamo=False)
    mmdeploy_utils.check_backend_device = lambda deploy_cfg, device: None
    try:
        yield
    finally:
        torch.onnx.export, mmdeploy_utils.check_backend_device = export, check


def _export(image, folder, name, deploy_cfg, model_cfg, checkpoint):
    from mmdeploy.apis import torch2onnx

    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's, mmdet's and mmdeploy's
        torch2onnx(image, str(folder), name, deploy_cfg, model_cfg, str(checkpoint), "cpu")
    path = folder / name
    print(f"{name}: exported in {time.perf_counter() - start:.0f} s, {path.stat().st_size / 2**20:.0f} MiB, "
          f"custom nodes {mmdet_check._custom_nodes(path)}")
    return path


def _adopt(path):
    start = time.perf_counter()
    adopted = adopt_file(path)
    assert adopted.adoption.left == [], adopted.adoption.left
    print(f"{adopted.path.name}: adopted in {time.perf_counter() - start:.0f} s, custom nodes "
          f"{mmdet_check._custom_nodes(adopted.path)}")
    return adopted.path


def _spread_class_scores(model, task_processor, images, std=1.5):
    """Rescale the head's class layer so that each class's logits spread alike over the images (mean 0, standard
    deviation ``std``): with the random weights alone the sigmoid scores saturate and one or two classes take
    all 100 rows, which makes the agreement check's labels say little. The timing does not change."""
    layers = list({id(m): m for m in model.bbox_head.cls_branches}.values())  # one layer for all without refinement
    seen = {i: [] for i in range(len(layers))}
    hooks = [layer.register_forward_hook(lambda module, args, out, i=i: seen[i].append(out.detach().flatten(0, -2)))
             for i, layer in enumerate(layers)]
    with torch.no_grad():
        for image in images:
            data, inputs = task_processor.create_input(image, image.shape[1::-1],
                                                       data_preprocessor=model.data_preprocessor)
            model.predict(inputs, data["data_samples"])
    for hook in hooks:
        hook.remove()
    with torch.no_grad():
        for i, layer in enumerate(layers):
            out = torch.cat(seen[i])  # (queries, classes)
            factor = std / out.std(0)  # per class
            layer.weight.mul_(factor[:, None])
            layer.bias.mul_(factor).sub_(factor * out.mean(0))


def make_files(folder: Path, height: int, width: int):
    """The four files (module docstring), from one random model."""
    from mmdeploy.apis import build_task_processor
    from mmdeploy.utils import load_config

    import mmdet

    configs = Path(mmdet.__file__).parent / ".mim" / "configs"
    ort_cfg, model_cfg = load_config(_ort_deploy_config(), str(configs / CONFIG))
    trt_cfg = load_config(mmdet_check._deploy_config(False))[0]
    model_cfg.model.backbone.pop("init_cfg", None)  # no pretrained weights to download
    task_processor = build_task_processor(model_cfg, ort_cfg, "cpu")
    images = [mmdet_check.synthetic_image(height, width, 1), mmdet_check.synthetic_image(height, width, 2)]
    model = mmdet_check._random_detr(task_processor, images)
    _spread_class_scores(model, task_processor, images)
    print(f"model: {CONFIG}, {model_cfg.model.encoder.num_layers}+{model_cfg.model.decoder.num_layers} layers, "
          f"{model_cfg.model.num_queries} queries, {model_cfg.model.num_feature_levels} levels, "
          f"{sum(p.numel() for p in model.parameters()) / 1e6:.1f} M parameters")
    folder.mkdir(parents=True, exist_ok=True)
    checkpoint = folder / "random.pth"
    torch.save({"state_dict": model.state_dict(), "meta": {}}, checkpoint)
    with _mmdeploy_on_this_torch():
        ort_file = _export(images[0], folder, "detr_ort.onnx", ort_cfg, model_cfg, checkpoint)
        with mmdet_check._msda_exported_as_on_cuda():
            trt_file = _export(images[0], folder, "detr_trt.onnx", trt_cfg, model_cfg, checkpoint)
    checkpoint.unlink()
    _adopt(ort_file)
    _adopt(trt_file)
    # the synthetic image as the model's input (mmdet's normalisation), for the agreement check
    data, inputs = task_processor.create_input(images[1], images[1].shape[1::-1],
                                               data_preprocessor=model.data_preprocessor)
    np.save(folder / "image_input.npy", inputs.numpy())


def _runnable(folder: Path, library: str):
    """(label, path, library) of the three files ONNX Runtime runs."""
    return [("mmdeploy ORT export + mmdeploy's library", folder / "detr_ort.onnx", library),
            ("mmdeploy ORT export, adopted", folder / "detr_ort.adopted.onnx", ""),
            ("mmdeploy TensorRT export (MSDA), adopted", folder / "detr_trt.adopted.onnx", "")]


def _one_attention_node():
    """A model of one ``mmdeploy::MMCVMultiScaleDeformableAttention`` node, as mmdeploy writes it."""
    from onnx import TensorProto, helper

    names = ("value", "value_spatial_shapes", "value_level_start_index", "sampling_locations", "attention_weights")
    types = (TensorProto.FLOAT, TensorProto.INT64, TensorProto.INT64, TensorProto.FLOAT, TensorProto.FLOAT)
    node = helper.make_node("MMCVMultiScaleDeformableAttention", list(names), ["output"], domain="mmdeploy",
                            im2col_step=64)
    graph = helper.make_graph([node], "msda", [helper.make_tensor_value_info(n, t, None) for n, t in zip(names, types)],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, None)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11), helper.make_opsetid("mmdeploy", 1)])


def try_unadopted(folder: Path, library: str):
    """The TensorRT export as it is, and one attention node alone, in ONNX Runtime with mmdeploy's library: refused
    (the library has no kernel for the attention, nor for TRTInstanceNormalization)."""
    for what, model in (("detr_trt.onnx", str(folder / "detr_trt.onnx")),
                        ("one MMCVMultiScaleDeformableAttention node", _one_attention_node().SerializeToString())):
        try:
            ort_session(model, library=library)
        except Exception as exc:  # what ONNX Runtime says is the point
            print(f"{what} in ONNX Runtime {ort.__version__} with mmdeploy's library: {type(exc).__name__}: "
                  f"{str(exc).strip()[:300]}")
        else:
            print(f"{what} in ONNX Runtime with mmdeploy's library: the session was created (unexpected)")


def check_agreement(folder: Path, library: str, shape):
    """Detections of the three runnable files on the timed input and on the synthetic image."""
    timed = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    feeds = {"timed input (standard normal, seed 0)": timed, "synthetic image": np.load(folder / "image_input.npy")}
    files = _runnable(folder, library)
    sessions = [ort_session(path, library=lib) for _, path, lib in files]
    for what, x in feeds.items():
        outputs = [s.run(None, {"input": x}) for s in sessions]
        (dets, labels) = outputs[0][0][0], outputs[0][1][0]
        print(f"{what} {tuple(x.shape)}: {files[0][0]}: {len(labels)} rows, scores {dets[:, 4].min():.3f}.."
              f"{dets[:, 4].max():.3f}, {len(np.unique(labels))} labels")
        for (label, _, _), out in zip(files[1:], outputs[1:]):
            got, got_labels = out[0][0], out[1][0]
            same_order = got_labels.shape == labels.shape and bool((got_labels == labels).all())
            rows = mmdet_check._match_detections((got, got_labels), (dets, labels))
            box = max(np.abs(got[j, :4] - dets[i, :4]).max() for i, j in rows.items())
            score = max(abs(got[j, 4] - dets[i, 4]) for i, j in rows.items())
            in_order = np.abs(got[:, :4] - dets[:, :4]).max() if same_order else float("nan")
            print(f"  {label}: labels {'equal, same order' if same_order else 'NOT in the same order'}; "
                  f"{len(rows)}/{len(labels)} rows matched (same label, box within 1e-2 px, score within 1e-4): "
                  f"max |box| {box:.2g} px (row by row {in_order:.2g}), max |score| {score:.2g}")


def profile(folder: Path, library: str, shape, threads: int, runs: int):
    """Per file, ONNX Runtime's profiler over ``runs`` runs after 2 warm-up: ms per run of all nodes, of the
    deformable attention modules' nodes and their sampling nodes, and of the op types that take the most."""
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    print(f"profile: {threads} intra-op thread(s), {runs} runs after 2 warm-up, ms per run (sum of node times)")
    for label, path, lib in _runnable(folder, library):
        session = ort_session(path, threads, lib, profile_prefix=str(folder / f"profile_{path.stem}"))
        for _ in range(2):
            session.run(None, {"input": x})
        wall = []
        for _ in range(runs):
            start = time.perf_counter()
            session.run(None, {"input": x})
            wall.append((time.perf_counter() - start) * 1e3)
        trace = Path(session.end_profiling())
        events = json.loads(trace.read_text())
        trace.unlink()
        model_runs = sorted((e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"),
                            key=lambda e: e["ts"])
        first_end = model_runs[1]["ts"] + model_runs[1]["dur"]  # the warm-up runs end before the counted ones
        per_op, parts = collections.Counter(), collections.Counter()
        for e in events:
            if e.get("cat") == "Node" and e["name"].endswith("_kernel_time") and e["ts"] >= first_end:
                ms = e["dur"] / 1e3 / runs
                per_op[e["args"]["op_name"]] += ms
                node = e["name"][:-len("_kernel_time")]
                if ATTENTION.match(node):
                    parts["projections" if PROJECTIONS.search(node) else "core"] += ms
        total = sum(per_op.values())
        sampling = sum(per_op[op] for op in SAMPLING)
        attention = parts["core"] + parts["projections"]
        top = ", ".join(f"{op} {ms:.0f}" for op, ms in per_op.most_common(6))
        print(f"{label} ({path.name}): wall median {statistics.median(wall):.1f} ms; nodes {total:.1f} ms; the "
              f"deformable attention modules {attention:.1f} ms = {100 * attention / total:.1f} % (their linear "
              f"layers {parts['projections']:.1f}, the rest {parts['core']:.1f}, of which sampling "
              f"({'/'.join(op for op in SAMPLING if per_op[op])}) {sampling:.1f} ms = {100 * sampling / total:.1f} % "
              f"of all); top op types: {top}")


def _size(text: str):
    height, _, width = text.partition("x")
    return int(height), int(width)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--size", type=_size, default=(800, 1333), help="HEIGHTxWIDTH of the export and the check")
    parser.add_argument("--custom-ops", required=True, help="mmdeploy's libmmdeploy_onnxruntime_ops.so")
    parser.add_argument("--skip-export", action="store_true", help="check (and profile) the files already in FOLDER")
    parser.add_argument("--profile", type=int, default=0, metavar="N", help="profile N runs of each file")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads of the profiled runs")
    args = parser.parse_args(argv)
    if args.profile < 0:
        parser.error("--profile must be >= 0")
    if args.threads < 1:
        parser.error("--threads must be >= 1")
    height, width = args.size
    shape = (1, 3, height, width)
    print(f"onnxruntime {ort.__version__}, torch {torch.__version__}; input 1x3x{height}x{width}")
    if not args.skip_export:
        make_files(args.folder, height, width)
    try_unadopted(args.folder, args.custom_ops)
    check_agreement(args.folder, args.custom_ops, shape)
    if args.profile:
        profile(args.folder, args.custom_ops, shape, args.threads, args.profile)


if __name__ == "__main__":
    main()
