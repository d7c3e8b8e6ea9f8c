"""TensorRT tests that need the real thing; each group skips with the reason when its requirements are missing.

1. TensorRT-RTX on the CPU (``TestTensorRTRtxAheadOfTime``): TensorRT for RTX builds engines without a GPU, so
   ``build_engine``'s shell (plugin loading, parser, profile, workspace, timing cache, progress monitor,
   sidecar) and our plugin's whole build phase (creator, fields, output types and shapes, format
   combinations, configure, workspace size, field serialisation) run for real on a CPU machine. Needs a
   Python with ``tensorrt_rtx`` and ``onnx`` (this interpreter, or the one named by ``DCN_DEPLOY_RTX_PYTHON``)
   and the built plugin library. Runs in a subprocess: RTX's ONNX parser dlopens ``libtensorrt_rtx.so``
   (unversioned; the wheel ships only ``.so.1``) when it imports a plugin node, and aborts the process with
   "terminate called without an active exception" if it cannot, so the test puts that name on
   ``LD_LIBRARY_PATH``.
2. TensorRT + pycuda + an NVIDIA GPU (``TestTensorRTOnGpu``): build, run, compare with ONNX Runtime, profile
   limits, engines with several profiles, stage times, CUDA graphs, torch tensors, threads, metadata refusal,
   plugin loading only where needed and a second library copy, models parsed from file (external data), timing
   cache, the CLI. ``DCN_DEPLOY_BIG_MODEL_TEST=1`` adds a build from a model with over 2 GiB of weights.
"""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import threading
import textwrap
from pathlib import Path
from typing import Tuple

import numpy as np
import onnx
import pytest

from dcn_deploy.backends import engine_meta

sys.path.insert(0, str(Path(__file__).parent))
from test_trt_pure import accuracy_report, dcn_model, mmdeploy_dcn_model, run_ort  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def _second_library_copy_script(tensorrt_module: str) -> str:
    """A child process (TensorRT registers a creator once per process): load our plugin library, then an identical
    copy (SAME: accepted), then ask TensorRT itself for a second copy (PROBE: True when it refuses with None, what
    our handling rests on), then a different build (OTHER_ERROR: our message)."""
    return textwrap.dedent(f"""
        import sys, {tensorrt_module} as trt
        from dcn_deploy.backends.trt_build import BuildError, load_plugin_library
        first, same, probe, other = sys.argv[1:5]
        load_plugin_library(trt, first, required_creators=["DeformConv2d"])
        print("SAME", load_plugin_library(trt, same, required_creators=["DeformConv2d"]))
        print("PROBE", trt.get_plugin_registry().load_library(probe) is None)
        try:
            load_plugin_library(trt, other)
            print("OTHER loaded")
        except BuildError as exc:
            print("OTHER_ERROR", exc)
    """)

def _plugin_library():
    try:
        from dcn_deploy.plugin.library import find_library
    except ImportError:
        return None
    return find_library("plugin")


# 1. TensorRT-RTX, ahead of time on the CPU ---------------------------------------------------------------------------
def _rtx_python():
    """(python executable, folder of libtensorrt_rtx.so.1) for a Python that imports tensorrt_rtx and onnx, or a reason."""
    candidates = [os.environ.get("DCN_DEPLOY_RTX_PYTHON")] if os.environ.get("DCN_DEPLOY_RTX_PYTHON") else []
    if importlib.util.find_spec("tensorrt_rtx") is not None:
        candidates.append(sys.executable)
    if not candidates:
        return None, ("no Python with tensorrt_rtx: pip install tensorrt-rtx-cu13 onnx numpy into a venv and set "
                      "DCN_DEPLOY_RTX_PYTHON to its python")
    probe = "import os, onnx, tensorrt_rtx_libs; print(os.path.dirname(tensorrt_rtx_libs.__file__))"
    for python in candidates:
        try:
            out = subprocess.run([python, "-c", probe], capture_output=True, text=True, timeout=120)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return None, f"{python} does not run: {exc}"
        if out.returncode == 0:
            return (python, out.stdout.strip()), None
    return None, f"{candidates[0]} cannot import tensorrt_rtx and onnx: {out.stderr.strip()[-200:]}"


_RTX, _RTX_REASON = _rtx_python()
_PLUGIN = _plugin_library()

_RTX_BUILD = textwrap.dedent("""
    import json, sys
    from dcn_deploy.backends.trt_build import BuildError, build_engine
    model, engine, precision, plugin = sys.argv[1:5]
    try:
        result = build_engine(model, engine, precision=precision, shapes=["x:1x4x8x8/2x4x8x8/4x4x8x8"],
                              workspace="256M", timing_cache=engine + ".cache", plugin_library=plugin,
                              tensorrt_module="tensorrt_rtx", target_gpu=("RTX (ahead of time)", (8, 9)))
    except BuildError as exc:
        print("BUILD_ERROR", exc)
        sys.exit(3)
    print("RESULT", json.dumps(result.meta.to_json()))
""")


# Parse an ONNX file with TensorRT-RTX's parser and build it under one profile: argv = (file, profile as JSON:
# {input: [min, opt, max]}); prints the parser's errors, the layer types and whether an engine came out.
_RTX_PARSE_AND_BUILD = textwrap.dedent("""
    import json, sys, tensorrt_rtx as trt
    logger = trt.Logger(trt.Logger.ERROR)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    parser.parse(open(sys.argv[1], "rb").read())
    print("ERRORS", json.dumps([parser.get_error(i).desc() for i in range(parser.num_errors)]))
    print("LAYERS", json.dumps(sorted({str(network.get_layer(i).type).split(".")[-1]
                                       for i in range(network.num_layers)})))
    config = builder.create_builder_config()
    profile = builder.create_optimization_profile()
    for name, (low, opt, high) in json.loads(sys.argv[2]).items():
        profile.set_shape(name, low, opt, high)
    config.add_optimization_profile(profile)
    print("BUILT", builder.build_serialized_network(network, config) is not None)
""")


def _rtx_parse_and_build(env, model: onnx.ModelProto, path: Path, profile: dict) -> Tuple[list, list, bool, str]:
    """(the parser's errors, the network's layer types, whether RTX built an engine, the log) for ``model``."""
    python, environ, _ = env
    onnx.save(model, path)
    out = subprocess.run([python, "-c", _RTX_PARSE_AND_BUILD, str(path), json.dumps(profile)], capture_output=True,
                         text=True, env=environ, timeout=600)
    lines = {line.split(" ", 1)[0]: line.split(" ", 1)[1] for line in out.stdout.splitlines()
             if line.startswith(("ERRORS ", "LAYERS ", "BUILT "))}
    log = out.stdout[-2000:] + out.stderr[-2000:]
    assert "ERRORS" in lines and "BUILT" in lines, log
    return json.loads(lines["ERRORS"]), json.loads(lines.get("LAYERS", "[]")), lines["BUILT"] == "True", log


@pytest.fixture(scope="module")
def rtx_env(tmp_path_factory):
    """(python, environment, private plugin copy) for the RTX subprocess."""
    folder = tmp_path_factory.mktemp("rtx_lib")
    python, lib_dir = _RTX
    # RTX's parser dlopens the unversioned name when it imports a plugin node (see the module docstring).
    (folder / "libtensorrt_rtx.so").symlink_to(Path(lib_dir) / "libtensorrt_rtx.so.1")
    plugin = folder / "libdcn_deploy_plugin.so"
    shutil.copy(_PLUGIN, plugin)  # a private copy: a rebuild of build/native/lib during the test does not race it
    env = dict(os.environ, PYTHONPATH=str(REPO), LD_LIBRARY_PATH=f"{folder}:{os.environ.get('LD_LIBRARY_PATH', '')}")
    return python, env, plugin


@pytest.mark.tensorrt
@pytest.mark.skipif(_RTX is None, reason=_RTX_REASON or "")
@pytest.mark.skipif(_PLUGIN is None, reason="the plugin library libdcn_deploy_plugin.so is not built "
                                            "(dcn-deploy plugin build)")
class TestTensorRTRtxAheadOfTime:
    def build(self, env, model: onnx.ModelProto, tmp_path: Path, precision: str):
        python, environ, plugin = env
        model_path, engine = tmp_path / "m.onnx", tmp_path / f"m_{precision}.engine"
        onnx.save(model, model_path)
        out = subprocess.run([python, "-c", _RTX_BUILD, str(model_path), str(engine), precision, str(plugin)],
                             capture_output=True, text=True, env=environ, timeout=600)
        return out, engine

    @pytest.mark.parametrize("precision, opset", [("fp32", 19), ("fp16", 19), ("bf16", 22)])
    def test_build_engine_with_our_plugin_on_the_cpu(self, rtx_env, tmp_path, precision, opset):
        out, engine = self.build(rtx_env, dcn_model(opset), tmp_path, precision)
        assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
        meta = json.loads(out.stdout.split("RESULT ", 1)[1])
        assert meta["extra"]["routed_nodes"] == 1 and meta["precision"] == precision
        assert meta["profiles"] == [{"x": {"min": [1, 4, 8, 8], "opt": [2, 4, 8, 8], "max": [4, 4, 8, 8]}}]
        assert meta["plugin_library"]["sha256"] == engine_meta.sha256_file(rtx_env[2])
        assert [o["dtype"] for o in meta["outputs"]] == ["float32", "float32"]  # float32 I/O under fp16 too
        assert "[build] Building engine" in out.stderr  # the progress monitor reported
        data = engine.read_bytes()
        # our plugin layer, with its namespace and serialised fields (allow_tf32 among them), is in the engine
        assert b"dcn_deploy" in data and b"DeformConv2d" in data and b"allow_tf32" in data
        assert engine_meta.read_meta(engine).engine_sha256 == engine_meta.sha256_file(engine)
        assert (tmp_path / f"m_{precision}.engine.cache").stat().st_size > 0

    @pytest.mark.parametrize("precision", ["fp32", "fp16"])
    @pytest.mark.parametrize("group", [8, 2])
    def test_small_group_layer_builds_with_its_workspace(self, rtx_env, tmp_path, precision, group):
        """A depth-wise layer (8 groups of one channel) and one of 2 groups of 4: since kernels revisions 7 and 10 the
        plugin asks for a workspace for them (the direct kernel's channels-last copy of the input) and offers them
        channels-last formats; the builder must accept the plugin's sizes and formats."""
        out, engine = self.build(rtx_env, dcn_model(19, group=group), tmp_path, precision)
        assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
        meta = json.loads(out.stdout.split("RESULT ", 1)[1])
        assert meta["extra"]["routed_nodes"] == 1 and meta["precision"] == precision
        assert b"DeformConv2d" in engine.read_bytes()

    def test_adopted_mmdeploy_export_builds_with_our_plugin(self, rtx_env, tmp_path):
        """mmdeploy's file (opset 11, mmdeploy::MMCVModulatedDeformConv2d), refused as it is (no TensorRT needed for
        that), builds once adopted, with its deformable node routed to our plugin layer."""
        from dcn_deploy.onnx.adopt import adopt_model

        refused, _ = self.build(rtx_env, mmdeploy_dcn_model(), tmp_path, "fp32")
        assert refused.returncode != 0 and "dcn-deploy adopt" in refused.stderr + refused.stdout
        adopted, _ = adopt_model(mmdeploy_dcn_model())
        out, engine = self.build(rtx_env, adopted, tmp_path, "fp16")
        assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
        meta = json.loads(out.stdout.split("RESULT ", 1)[1])
        assert meta["extra"]["routed_nodes"] == 1
        assert b"dcn_deploy" in engine.read_bytes() and b"DeformConv2d" in engine.read_bytes()

    def test_adopted_mmdeploy_nms_parses(self, rtx_env, tmp_path):
        """mmdeploy's TRTBatchedNMS, adopted as standard ops (dynamic boxes and batch, shared and per-class boxes),
        goes through a real ONNX parser into TensorRT layers: NMS, TopK with a K computed at run time, ScatterND.
        Building stops at the NMS layer: TensorRT-RTX has no implementation of it (TensorRT's INMSLayer; RTX lacks
        data-dependent layers, as NonZero), which is asserted here so that a release that adds one is noticed."""
        from test_adopt_nms import nms_model

        from dcn_deploy.onnx.adopt import adopt_model

        for layers, topk in ((1, 50), (3, -1)):
            adopted, _ = adopt_model(nms_model(0, 0, layers, 3, dynamic=True, topk=topk, keep_topk=20))
            profile = {"boxes": [[1, 10, layers, 4], [2, 100, layers, 4], [4, 1000, layers, 4]],
                       "scores": [[1, 10, 3], [2, 100, 3], [4, 1000, 3]]}
            errors, found, built, log = _rtx_parse_and_build(rtx_env, adopted, tmp_path / f"nms_{layers}.onnx",
                                                             profile)
            assert errors == [] and {"NMS", "TOPK", "SCATTER", "GATHER"} <= set(found), (errors, found)
            assert not built and "NonMaxSuppression" in log and "has no runners" in log, log

    def test_adopted_nms_preselection_of_5000_builds_in_stages(self, rtx_env, tmp_path, monkeypatch):
        """mmdeploy's pre_top_k=5000 over up to 6000 boxes: the adopted NMS's per-class pre-selection (everything
        before its NonMaxSuppression, which RTX cannot build) builds as TopK stages of at most 3840; as one TopK of
        min(5000, B), TensorRT refuses it (its TopK takes k <= 3840)."""
        from onnx import utils

        from dcn_deploy.onnx import adopt_nms
        from dcn_deploy.onnx.adopt import adopt_model
        from test_adopt_nms import nms_model

        profile = {"boxes": [[1, 10, 1, 4], [1, 6000, 1, 4], [1, 6000, 1, 4]],
                   "scores": [[1, 10, 3], [1, 6000, 3], [1, 6000, 3]]}
        built = {}
        for name, stage in (("staged", adopt_nms._TOPK_STAGE), ("one TopK", 10 ** 6)):
            monkeypatch.setattr(adopt_nms, "_TOPK_STAGE", stage)
            adopted, _ = adopt_model(nms_model(0, 0, 1, 3, dynamic=True, topk=5000, keep_topk=100))
            nms = next(n for n in adopted.graph.node if n.op_type == "NonMaxSuppression")
            full = tmp_path / f"{stage}_full.onnx"
            onnx.save(adopted, full)
            utils.extract_model(str(full), str(tmp_path / f"{stage}.onnx"), ["boxes", "scores"], [nms.input[1]])
            errors, _, built[name], _ = _rtx_parse_and_build(rtx_env, onnx.load(str(tmp_path / f"{stage}.onnx")),
                                                             tmp_path / f"{stage}.onnx", profile)
            assert errors == []
        assert built == {"staged": True, "one TopK": False}

    def test_adopted_mmdeploy_head_ops_build(self, rtx_env, tmp_path):
        """mmdeploy's GridPriorsTRT and GatherTopk, adopted as standard ops (Range, Expand, GatherND with a batch
        axis), parse and build into an engine with dynamic feature sizes and batch."""
        from onnx import TensorProto, helper

        from dcn_deploy.onnx.adopt import adopt_model

        def info(name, dtype, shape):
            return helper.make_tensor_value_info(name, dtype, shape)

        graph = helper.make_graph(
            [helper.make_node("GridPriorsTRT", ["base", "zero_h", "zero_w"], ["anchors"], domain="mmdeploy",
                              stride_h=8, stride_w=8),
             helper.make_node("GatherTopk", ["data", "indices"], ["top"], domain="mmdeploy")], "head",
            [info("base", TensorProto.FLOAT, [9, 4]), info("zero_h", TensorProto.INT64, ["H"]),
             info("zero_w", TensorProto.INT64, ["W"]), info("data", TensorProto.FLOAT, ["B", 50, 4]),
             info("indices", TensorProto.INT64, ["B", 7])],
            [info("anchors", TensorProto.FLOAT, ["n", 4]), info("top", TensorProto.FLOAT, ["B", 7, 4])])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11),
                                                        helper.make_opsetid("mmdeploy", 1)])
        adopted, _ = adopt_model(model)
        profile = {"zero_h": [[1], [100], [100]], "zero_w": [[1], [100], [100]],
                   "data": [[1, 50, 4], [4, 50, 4], [4, 50, 4]], "indices": [[1, 7], [4, 7], [4, 7]]}
        errors, _, built, log = _rtx_parse_and_build(rtx_env, adopted, tmp_path / "head.onnx", profile)
        assert errors == [] and built, log

    def test_adopted_multi_scale_deformable_attention_builds(self, rtx_env, tmp_path):
        """mmdeploy's MMCVMultiScaleDeformableAttention, adopted as GridSample per level and fed as in mmdeploy's
        Deformable DETR exports (4 levels whose spatial shapes come from the feature maps' Shape and start indices
        from a CumSum), parses and builds with dynamic batch, queries and feature sizes up to an 800x1600 input's
        strides 8-64."""
        from test_adopt_msda import detr_like_model

        from dcn_deploy.onnx.adopt import adopt_model

        adopted, _ = adopt_model(detr_like_model())
        profile = {f"feat{k}": [[1, 8, 1, 1], [1, 8, 100 >> k, 134 >> k], [2, 8, 100 >> k, 200 >> k]]
                   for k in range(4)}
        profile.update(sampling_locations=[[1, 1, 2, 4, 2, 2], [1, 300, 2, 4, 2, 2], [2, 300, 2, 4, 2, 2]],
                       attention_weights=[[1, 1, 2, 4, 2], [1, 300, 2, 4, 2], [2, 300, 2, 4, 2]])
        errors, layers, built, log = _rtx_parse_and_build(rtx_env, adopted, tmp_path / "msda.onnx", profile)
        assert errors == [] and built, log
        assert "GRID_SAMPLE" in layers, layers

    def test_models_parsed_from_file(self, rtx_env, tmp_path):
        """The file route under a real ONNX parser (TensorRT-RTX's, on the CPU): a model whose weights live in an
        external file, and an ordinary one pushed onto the route by a limit of 1 byte, both build with our plugin
        layer; the forced one parses into the very network the in-memory parse gives (every layer's name, type,
        inputs, output shapes and types, weights, plugin names). No scratch folder is left.

        Why networks, not engines: RTX's engine bytes depend on more than the network. In session 23 (2026-11-26)
        a refactor that left the parsed bytes the same (one md5 on both routes) swapped the order of two outputs
        in the in-memory route's engine, reproducibly, and an import moved from one module to another did it again
        in session 24: RTX lays an engine out by the process's allocations."""
        python, environ, plugin = rtx_env
        script = textwrap.dedent("""
            import hashlib, io, json, sys
            from dcn_deploy.backends import trt_build, trt_parse
            model, out, limit, plugin = sys.argv[1:5]
            trt_parse.PARSE_IN_MEMORY_LIMIT = int(limit)
            described = []

            def parse_and_describe(trt, *args, **kwargs):
                network, parser = trt_parse.parse_network(trt, *args, **kwargs)
                for i in range(network.num_layers):
                    layer = network.get_layer(i)
                    outputs = [layer.get_output(j) for j in range(layer.num_outputs)]
                    row = [layer.name, str(layer.type), [layer.get_input(j).name if layer.get_input(j) else None
                                                         for j in range(layer.num_inputs)],
                           [[o.name, list(o.shape), str(o.dtype)] for o in outputs]]
                    if layer.type == trt.LayerType.CONSTANT:
                        layer.__class__ = trt.IConstantLayer
                        row.append(hashlib.md5(layer.weights.tobytes()).hexdigest())
                    if layer.type == trt.LayerType.CONVOLUTION:
                        layer.__class__ = trt.IConvolutionLayer
                        row.append([hashlib.md5(w.tobytes()).hexdigest() for w in (layer.kernel, layer.bias)])
                    if layer.type == trt.LayerType.PLUGIN_V3:
                        layer.__class__ = trt.IPluginV3Layer
                        core = layer.plugin.get_capability_interface(trt.PluginCapabilityType.CORE)
                        row.append([core.plugin_name, core.plugin_namespace])
                    described.append(row)
                described.append(["outputs", [network.get_output(k).name for k in range(network.num_outputs)]])
                return network, parser

            trt_build.parse_network = parse_and_describe
            log = io.StringIO()
            trt_build.build_engine(model, out, shapes=["x:1x4x8x8/2x4x8x8/4x4x8x8"], plugin_library=plugin,
                                   tensorrt_module="tensorrt_rtx", target_gpu=("RTX (ahead of time)", (8, 9)),
                                   log=log)
            print("PARSE_LINES", [l for l in log.getvalue().splitlines() if "parsing from" in l])
            print("NETWORK " + json.dumps(described))
        """)
        model = dcn_model(seed=4)
        plain = tmp_path / "plain.onnx"
        onnx.save(model, plain)
        external = tmp_path / "ext" / "m.onnx"
        external.parent.mkdir()
        onnx.save_model(onnx.ModelProto.FromString(model.SerializeToString()), str(external),
                        save_as_external_data=True, all_tensors_to_one_file=True, location="m.weights",
                        size_threshold=0)

        def build(name: str, source, limit: int) -> list:
            folder = tmp_path / f"out_{name}"
            folder.mkdir()
            engine = folder / "m.engine"
            out = subprocess.run([python, "-c", script, str(source), str(engine), str(limit), str(plugin)],
                                 capture_output=True, text=True, env=environ, timeout=600)
            assert out.returncode == 0, (name, out.stdout[-2000:], out.stderr[-2000:])
            from_file = "parsing from model.onnx with its data file" in out.stdout
            assert from_file == (not name.startswith("memory")), (name, out.stdout)
            assert sorted(p.name for p in folder.iterdir()) == ["m.engine", "m.engine.json"]
            data = engine.read_bytes()
            assert b"dcn_deploy" in data and b"DeformConv2d" in data
            return json.loads(next(line for line in out.stdout.splitlines() if line.startswith("NETWORK "))[8:])

        external_network = build("external", external, 1 << 30)
        memory, forced = build("memory", plain, 1 << 30), build("forced", plain, 1)
        plugins = [row for row in memory if "PLUGIN_V3" in row[1]]
        assert plugins and all(row[-1] == ["DeformConv2d", "dcn_deploy"] for row in plugins), memory
        assert any("CONSTANT" in row[1] for row in memory)  # weights compared by their md5 (and the convolutions')
        assert forced == memory, "the file route parsed another network than the in-memory one"
        assert external_network == memory, "the model with external weights parsed another network"

    def test_second_plugin_library_copy(self, rtx_env, tmp_path):
        """TensorRT-RTX's registry as TensorRT documents it: load_library answers None for a second library with
        our creators. An identical copy is accepted; another build gets the message naming the first."""
        python, environ, plugin = rtx_env
        copies = []
        for name in ("same", "probe", "other"):
            (tmp_path / name).mkdir()
            copies.append(tmp_path / name / "libdcn_deploy_plugin.so")
            shutil.copy(plugin, copies[-1])
        with open(copies[2], "ab") as fh:
            fh.write(b"\0another build")
        script = _second_library_copy_script("tensorrt_rtx")
        paths = [str(Path(p).resolve()) for p in [plugin, *copies]]
        out = subprocess.run([python, "-c", script, *paths], capture_output=True, text=True, env=environ, timeout=600)
        assert out.returncode == 0, (out.stdout[-2000:], out.stderr[-2000:])
        assert f"SAME {paths[1]}" in out.stdout and "PROBE True" in out.stdout, out.stdout
        assert f"OTHER_ERROR TensorRT did not load the plugin library {paths[3]}" in out.stdout, out.stdout
        assert f"loaded earlier from {paths[0]} (its contents differ" in out.stdout, out.stdout

    def test_the_builds_tf32_setting_reaches_our_plugin_as_its_field(self, rtx_env, tmp_path):
        """A real ONNX parser (TensorRT-RTX's) passes a node's allow_tf32 to our creator, which lists the field:
        prepare_onnx writes it from the build's setting (1 here), the parse takes 1 and 0, and a value the plugin
        refuses (2) fails the parse with the plugin's message naming the field."""
        python, environ, plugin = rtx_env
        model_path = tmp_path / "m.onnx"
        onnx.save(dcn_model(), model_path)
        script = textwrap.dedent("""
            import sys
            from pathlib import Path
            import onnx, tensorrt_rtx as trt
            from dcn_deploy.backends.trt_build import (BuildError, load_plugin_library, plugin_fields_from_registry,
                                                       prepare_onnx)
            from dcn_deploy.backends.trt_parse import parse_network
            model_path, plugin = sys.argv[1:3]
            load_plugin_library(trt, plugin, required_creators=["DeformConv2d"])
            fields = plugin_fields_from_registry(trt, ["DeformConv2d"])
            print("FIELDS", ",".join(fields["DeformConv2d"]))
            logger = trt.Logger(trt.Logger.WARNING)
            for value in (None, 0, 2):
                prepared, _, routed = prepare_onnx(onnx.load(model_path), plugin_fields=fields, tf32=True)
                node = next(n for n in prepared.graph.node if n.op_type == "DeformConv2d")
                stamped = next(a for a in node.attribute if a.name == "allow_tf32")
                print("STAMPED", stamped.i, routed)
                if value is not None:
                    stamped.i = value
                try:
                    parse_network(trt, trt.Builder(logger), logger, prepared, Path(model_path), source_external=False,
                                  scratch=Path(model_path).parent, say=print)
                    print("PARSED", value)
                except BuildError as exc:
                    print("REFUSED", value, str(exc).replace(chr(10), " "))
                sys.stdout.flush()
        """)
        out = subprocess.run([python, "-c", script, str(model_path), str(plugin)], capture_output=True, text=True,
                             env=environ, timeout=600)
        assert out.returncode == 0, (out.stdout[-2000:], out.stderr[-2000:])
        assert "FIELDS strides,pads,dilations,group,offset_group,allow_tf32" in out.stdout, out.stdout
        assert out.stdout.count("STAMPED 1 1") == 3, out.stdout
        assert "PARSED None" in out.stdout and "PARSED 0" in out.stdout, (out.stdout, out.stderr[-2000:])
        assert "REFUSED 2" in out.stdout and "dcn1" in out.stdout, (out.stdout, out.stderr[-2000:])
        assert "field 'allow_tf32' must be 0 (IEEE float32) or 1" in out.stderr + out.stdout, out.stderr[-2000:]

    def test_plugin_rejects_bad_shapes_with_a_parser_error(self, rtx_env, tmp_path):
        from onnx import numpy_helper

        model = dcn_model()
        for tensor in model.graph.initializer:
            if tensor.name == "w_off":  # 16 offset channels: not 2*kH*kW for a 3x3 kernel
                tensor.CopyFrom(numpy_helper.from_array(np.ones((16, 8, 3, 3), np.float32), "w_off"))
        out, engine = self.build(rtx_env, model, tmp_path, "fp32")
        assert out.returncode == 3, out.stdout[-2000:] + out.stderr[-2000:]
        assert "TensorRT's ONNX parser rejected" in out.stdout and "dcn1" in out.stdout
        assert not engine.exists()

    @pytest.mark.parametrize("op", ["DeformRoIPool", "DeformPSRoIPool"])
    @pytest.mark.parametrize("precision", ["fp32", "fp16"])
    def test_roi_pooling_plugins_build_with_dynamic_rois(self, rtx_env, tmp_path, op, precision):
        """The RoI pooling plugins under a real builder (TensorRT-RTX's, on the CPU): a one-node model with a
        dynamic RoI count builds with our plugin layer (creator, fields, output shapes from dynamic dimensions,
        formats, serialisation), in fp32 and fp16; the engine holds the plugin and its field names."""
        from onnx import TensorProto, helper

        from dcn_deploy.onnx import opset

        python, environ, plugin = rtx_env
        if op == "DeformRoIPool":
            channels, shifts = 8, "offset"
            attrs = dict(pooled_height=3, pooled_width=2, spatial_scale=0.5, sampling_ratio=2, gamma=0.1)
            shift_shape = ["num_rois", 2, 3, 2]
            fields = [b"pooled_height", b"sampling_ratio", b"gamma"]
        else:
            channels, shifts = 2 * 9, "trans"
            attrs = dict(spatial_scale=0.5, output_dim=2, group_size=3, pooled_size=3, part_size=3,
                         sample_per_part=2, trans_std=0.1, no_trans=0)
            shift_shape = ["num_rois", 4, 3, 3]  # two offset classes
            fields = [b"output_dim", b"group_size", b"trans_std"]
        inputs = [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, channels, 10, 12]),
                  helper.make_tensor_value_info("rois", TensorProto.FLOAT, ["num_rois", 5]),
                  helper.make_tensor_value_info(shifts, TensorProto.FLOAT, shift_shape)]
        node = helper.make_node(op, ["X", "rois", shifts], ["Y"], domain=opset.DOMAIN, name="pool", **attrs)
        graph = helper.make_graph([node], "roi", inputs, [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)])
        model = opset.attach_functions(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)]))
        model_path, engine = tmp_path / "roi.onnx", tmp_path / "roi.engine"
        onnx.save(model, model_path)
        k = "1x{}/8x{}/32x{}"
        shapes = [f"rois:{k.format(5, 5, 5)}",
                  f"{shifts}:" + k.format(*["x".join(map(str, shift_shape[1:]))] * 3)]
        script = textwrap.dedent("""
            import json, sys
            from dcn_deploy.backends.trt_build import build_engine
            model, engine, precision, plugin, shapes = sys.argv[1:6]
            result = build_engine(model, engine, precision=precision, shapes=json.loads(shapes), plugin_library=plugin,
                                  tensorrt_module="tensorrt_rtx", target_gpu=("RTX (ahead of time)", (8, 9)))
            print("RESULT", json.dumps(result.meta.to_json()))
        """)
        out = subprocess.run([python, "-c", script, str(model_path), str(engine), precision, str(plugin),
                              json.dumps(shapes)], capture_output=True, text=True, env=environ, timeout=600)
        assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
        meta = json.loads(out.stdout.split("RESULT ", 1)[1])
        assert meta["extra"]["routed_nodes"] == 1 and meta["precision"] == precision
        assert meta["profiles"][0]["rois"] == {"min": [1, 5], "opt": [8, 5], "max": [32, 5]}
        data = engine.read_bytes()
        assert b"dcn_deploy" in data and op.encode() in data
        assert all(name in data for name in fields), "the plugin's serialised fields are not in the engine"

    def test_workspace_limit_fits_the_plugins_column_budget(self, rtx_env, tmp_path):
        """A real builder (TensorRT-RTX's, on the CPU) under a workspace limit: det res3's layer (128 channels,
        100x167) in fp16 up to batch 8 asks 354 MiB with the default column budget, which TensorRT-RTX refuses under
        --workspace 300M ("Failed to create any myelin custom layer tactic", tried on 2026-11-26). build_engine tells
        the plugin the limit (DCN_DEPLOY_PLUGIN_WORKSPACE) and that this builder counts the layer's inputs and outputs
        (72.4 MiB here) against it too (DCN_DEPLOY_PLUGIN_WORKSPACE_CHARGES_TENSORS): under 300M and under 256M (where
        a 128 MiB budget, 197 MiB of workspace, failed with "OutOfMemory" before the tensors were counted) the engine
        builds and carries its budget. Under 64M, less than the layer's tensors and least workspace, the build stops
        with the plugin's message naming both variables."""
        from onnx import TensorProto, helper, numpy_helper

        from dcn_deploy.onnx import opset

        rng = np.random.default_rng(5)
        weights = [numpy_helper.from_array((rng.standard_normal([128, 128, 3, 3]) * 0.05).astype(np.float32), "w"),
                   numpy_helper.from_array((rng.standard_normal([128]) * 0.1).astype(np.float32), "b")]
        node = helper.make_node("DeformConv2d", ["x", "w", "off", "b", "mask"], ["y"], domain="dcn_deploy",
                                strides=[1, 1], pads=[1, 1, 1, 1], dilations=[1, 1], group=1, offset_group=1,
                                name="dcn_res3")
        inputs = [helper.make_tensor_value_info(name, TensorProto.FLOAT, ["N", channels, 100, 167])
                  for name, channels in (("x", 128), ("off", 18), ("mask", 9))]
        graph = helper.make_graph([node], "res3", inputs,
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 128, 100, 167])],
                                  weights)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
        model.ir_version = 10
        model_path = tmp_path / "res3.onnx"
        onnx.save(opset.attach_functions(model), model_path)
        script = textwrap.dedent("""
            import sys
            from dcn_deploy.backends.trt_build import BuildError, build_engine
            model, engine, workspace, plugin = sys.argv[1:5]
            shapes = [f"{name}:1x{c}x100x167/8x{c}x100x167/8x{c}x100x167" for name, c in (("x", 128), ("off", 18),
                                                                                         ("mask", 9))]
            try:
                build_engine(model, engine, precision="fp16", shapes=shapes, workspace=workspace,
                             plugin_library=plugin, tensorrt_module="tensorrt_rtx",
                             target_gpu=("RTX (ahead of time)", (8, 9)), progress=False)
            except BuildError as exc:
                print("BUILD_ERROR", exc)
                sys.exit(3)
            print("BUILT")
        """)
        python, environ, plugin = rtx_env
        environ = {name: value for name, value in environ.items()
                   if not name.startswith("DCN_DEPLOY_PLUGIN_WORKSPACE")}

        def build(workspace: str):
            engine = tmp_path / f"res3_{workspace}.engine"
            out = subprocess.run([python, "-c", script, str(model_path), str(engine), workspace, str(plugin)],
                                 capture_output=True, text=True, env=environ, timeout=600)
            return out, engine

        for limit in ("300M", "256M"):
            fits, engine = build(limit)
            assert fits.returncode == 0 and "BUILT" in fits.stdout, (limit, fits.stdout[-2000:] + fits.stderr[-3000:])
            data = engine.read_bytes()
            assert b"dcn_deploy" in data and b"dcn_column_budget_mib" in data
        too_small, engine = build("64M")
        assert too_small.returncode == 3 and not engine.exists(), too_small.stdout[-2000:] + too_small.stderr[-2000:]
        assert ("this layer needs at least 13.6 MiB of workspace and 72.4 MiB for its inputs and outputs, which this "
                "builder counts against the limit too (DCN_DEPLOY_PLUGIN_WORKSPACE_CHARGES_TENSORS=1), in all 86.0 MiB, "
                "over the limit of 64.0 MiB (DCN_DEPLOY_PLUGIN_WORKSPACE)") in too_small.stderr


# 2. TensorRT and a GPU ---------------------------------------------------------------------------------------------------
def _gpu_reason():
    if importlib.util.find_spec("tensorrt") is None:
        return "tensorrt is not installed (pip install tensorrt, or NVIDIA's TensorRT container)"
    try:
        import pycuda.driver  # noqa: F401
    except ImportError as exc:
        return f"pycuda cannot be imported ({exc}); it needs the NVIDIA driver"
    try:
        from dcn_deploy.backends.trt_build import cuda_device_facts

        cuda_device_facts(0)
    except Exception as exc:  # noqa: BLE001 - any failure means no usable GPU
        return f"no usable NVIDIA GPU: {exc}"
    if _PLUGIN is None:
        return "the plugin library libdcn_deploy_plugin.so is not built (dcn-deploy plugin build)"
    return None


_GPU_REASON = _gpu_reason()


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """(model path, {precision: engine path}) built once for the GPU tests."""
    from dcn_deploy.backends.trt_build import build_engine

    folder = tmp_path_factory.mktemp("trt")
    model_path = folder / "m.onnx"
    onnx.save(dcn_model(), model_path)
    engines = {}
    for precision in ("fp32", "fp16"):
        engines[precision] = build_engine(model_path, folder / f"m_{precision}.engine", precision=precision,
                                          shapes=["x:1x4x8x8/2x4x8x8/4x4x8x8"], tf32=False,
                                          timing_cache=folder / "timing.cache", progress=False).engine_path
    return model_path, engines



@pytest.mark.gpu
@pytest.mark.tensorrt
@pytest.mark.skipif(_GPU_REASON is not None, reason=_GPU_REASON or "")
class TestTensorRTOnGpu:
    def feed(self, batch, seed=0):
        return {"x": np.random.default_rng(seed).standard_normal((batch, 4, 8, 8)).astype(np.float32)}

    def test_sidecar_describes_the_build(self, built):
        import tensorrt as trt

        meta = engine_meta.read_meta(built[1]["fp32"])
        assert meta.tensorrt_version == trt.__version__ and meta.extra["routed_nodes"] == 1
        assert meta.plugin_library["sha256"] == engine_meta.sha256_file(_PLUGIN)

    @pytest.mark.parametrize("precision, limit", [("fp32", 1e-4), ("fp16", 5e-3)])
    def test_matches_onnxruntime(self, built, precision, limit):
        from dcn_deploy.backends.trt_runner import TrtRunner

        model = onnx.load(built[0])
        with TrtRunner(built[1][precision]) as runner:
            for batch in (1, 3, 4):
                feed = self.feed(batch, seed=batch)
                report = accuracy_report(run_ort(model, feed), runner.infer(feed), f"TensorRT {precision} b={batch}")
                for name, r in report.items():
                    assert r["max_rel_to_scale"] < limit, (name, r)

    def test_shape_outside_the_profile_is_a_clear_error(self, built):
        from dcn_deploy.backends.base import RunnerError
        from dcn_deploy.backends.trt_runner import TrtRunner

        with TrtRunner(built[1]["fp32"]) as runner:
            with pytest.raises(RunnerError, match="outside the engine's profile"):
                runner.infer(self.feed(8))

    def test_stage_times_and_cuda_graphs(self, built):
        from dcn_deploy.backends.trt_runner import TrtRunner

        feed = self.feed(2)
        with TrtRunner(built[1]["fp32"]) as plain:
            expected = plain.infer(feed)
            stages = plain.last_stage_times()
        assert stages.h2d_ms > 0 and stages.compute_ms > 0 and stages.d2h_ms > 0
        with TrtRunner(built[1]["fp32"], cuda_graph=True) as graphed:
            for seed in range(3):  # the first call captures, the others replay with new data
                other = self.feed(2, seed)
                with TrtRunner(built[1]["fp32"]) as check:
                    want = check.infer(other)
                got = graphed.infer(other)
                for name in want:
                    np.testing.assert_array_equal(got[name], want[name])
            np.testing.assert_array_equal(graphed.infer(feed)["s1"], expected["s1"])

    def test_torch_cuda_tensors_are_used_in_place(self, built):
        torch = pytest.importorskip("torch")
        if not torch.cuda.is_available():
            pytest.skip("torch has no CUDA device")
        from dcn_deploy.backends.trt_runner import TrtRunner

        feed = self.feed(2)
        with TrtRunner(built[1]["fp32"]) as runner:
            want = runner.infer(feed)
            got = runner.infer({"x": torch.from_numpy(feed["x"]).cuda()})
        np.testing.assert_array_equal(got["s1"], want["s1"])

    def test_one_runner_shared_by_threads(self, built):
        from dcn_deploy.backends.trt_runner import TrtRunner

        feeds = [self.feed(1 + i % 4, seed=i) for i in range(12)]
        with TrtRunner(built[1]["fp32"]) as runner:
            want = [runner.infer(f)["prob"] for f in feeds]
            got = [None] * len(feeds)

            def work(i):
                got[i] = runner.infer(feeds[i])["prob"]

            threads = [threading.Thread(target=work, args=(i,)) for i in range(len(feeds))]
            [t.start() for t in threads]
            [t.join() for t in threads]
        for w, g in zip(want, got):
            np.testing.assert_array_equal(w, g)

    def test_engine_with_tensorrt_own_plugin_runs_in_a_fresh_process(self, built, tmp_path):
        """An engine without our plugin (the function body's standard DeformConv -> TensorRT's ModulatedDeformConv2d)
        and one with it, each run by TrtRunner in a new process: deserialising there needs TensorRT's own plugins
        and our library registered by the runner itself (in this process the build already did both)."""
        from dcn_deploy.backends.trt_build import build_engine

        engines = {"theirs": build_engine(built[0], tmp_path / "theirs.engine", use_plugin=False, tf32=False,
                                          shapes=["x:1x4x8x8/2x4x8x8/4x4x8x8"], progress=False).engine_path,
                   "ours": built[1]["fp32"]}
        feed = self.feed(3, seed=5)
        np.savez(tmp_path / "feed.npz", **feed)
        script = textwrap.dedent("""
            import sys, numpy as np
            from dcn_deploy.backends.trt_runner import TrtRunner
            feed = dict(np.load(sys.argv[2]))
            with TrtRunner(sys.argv[1]) as runner:
                np.savez(sys.argv[3], **runner.infer(feed))
        """)
        want = run_ort(onnx.load(built[0]), feed)
        for kind, engine in engines.items():
            out_file = tmp_path / f"{kind}_out.npz"
            proc = subprocess.run([sys.executable, "-c", script, str(engine), str(tmp_path / "feed.npz"),
                                   str(out_file)], capture_output=True, text=True, timeout=300,
                                  env=dict(os.environ, PYTHONPATH=str(REPO)))
            assert proc.returncode == 0, (kind, proc.stdout[-2000:], proc.stderr[-2000:])
            got = dict(np.load(out_file))
            for name, r in accuracy_report(want, got, f"TensorRT fp32 ({kind} DCN plugin), fresh process").items():
                assert r["max_rel_to_scale"] < 1e-4, (kind, name, r)

    @staticmethod
    def build_with_profiles(model_path: Path, engine_path: Path, batches) -> Path:
        """An engine with one profile per (min, opt, max) batch, built straight with TensorRT's API as a user's
        own build (or trtexec --profile) makes it; no sidecar."""
        import tensorrt as trt

        from dcn_deploy.backends.trt_build import load_plugin_library, prepare_onnx, register_tensorrt_plugins

        load_plugin_library(trt, _PLUGIN)
        register_tensorrt_plugins(trt)
        prepared, _, routed = prepare_onnx(onnx.load(model_path))
        assert routed == 1
        logger = trt.Logger(trt.Logger.WARNING)
        builder = trt.Builder(logger)
        network = builder.create_network(0)
        parser = trt.OnnxParser(network, logger)
        assert parser.parse(prepared.SerializeToString()), [parser.get_error(i) for i in range(parser.num_errors)]
        config = builder.create_builder_config()
        if hasattr(trt.BuilderFlag, "TF32"):
            config.clear_flag(trt.BuilderFlag.TF32)
        for lo, opt, hi in batches:
            profile = builder.create_optimization_profile()
            profile.set_shape("x", (lo, 4, 8, 8), (opt, 4, 8, 8), (hi, 4, 8, 8))
            assert config.add_optimization_profile(profile) >= 0
        serialized = builder.build_serialized_network(network, config)
        assert serialized is not None
        engine_path.write_bytes(bytes(serialized))
        return engine_path

    @pytest.mark.parametrize("cuda_graph", [False, True])
    def test_engine_with_several_profiles(self, built, tmp_path, cuda_graph):
        """Each call runs with the first profile that contains its shapes, switching back and forth (and, with CUDA
        graphs, never replaying a graph recorded under the other profile); outside all of them, every profile is
        listed."""
        from dcn_deploy.backends.base import RunnerError
        from dcn_deploy.backends.trt_runner import TrtRunner

        engine = self.build_with_profiles(built[0], tmp_path / "two.engine", [(1, 2, 2), (2, 4, 6)])
        model = onnx.load(built[0])
        with TrtRunner(engine, check_metadata=False, cuda_graph=cuda_graph) as runner:
            assert [(p["x"].min[0], p["x"].max[0]) for p in runner.profiles] == [(1, 2), (2, 6)]
            for step, (batch, profile) in enumerate([(1, 0), (4, 1), (2, 0), (6, 1), (6, 1), (3, 1), (1, 0), (1, 0)]):
                feed = self.feed(batch, seed=20 + step)
                got = runner.infer(feed)
                assert runner.active_profile == profile, (batch, runner.active_profile)
                for name, r in accuracy_report(run_ort(model, feed), got, f"profile {profile} b={batch}").items():
                    assert r["max_rel_to_scale"] < 1e-4, (batch, name, r)
            with pytest.raises(RunnerError) as info:
                runner.infer(self.feed(7))
        message = str(info.value)
        assert "fit none of the engine's 2 optimisation profiles" in message
        assert "profile 0: x min 1x4x8x8 .. max 2x4x8x8" in message and "profile 1: x min 2x4x8x8 .. max 6x4x8x8" \
            in message

    def test_engine_without_our_layers_ignores_a_broken_plugin_library(self, built, tmp_path):
        """The sidecar says the engine has no layers of ours: the runner does not load the library it is given, so
        a broken one cannot stop it. Without the sidecar's word (check_metadata=False) it loads it, as before."""
        from dcn_deploy.backends.base import RunnerError
        from dcn_deploy.backends.trt_build import build_engine
        from dcn_deploy.backends.trt_runner import TrtRunner

        engine = build_engine(built[0], tmp_path / "theirs.engine", use_plugin=False, tf32=False,
                              shapes=["x:1x4x8x8/2x4x8x8/4x4x8x8"], progress=False).engine_path
        assert engine_meta.needs_plugin_library(engine_meta.read_meta(engine)) is False
        broken = tmp_path / "libdcn_deploy_plugin.so"
        broken.write_bytes(b"\x7fELF but truncated")
        feed = self.feed(3, seed=9)
        with TrtRunner(engine, plugin_library=broken) as runner:
            got = runner.infer(feed)
        assert any("not loaded" in w for w in runner.warnings), runner.warnings
        for name, r in accuracy_report(run_ort(onnx.load(built[0]), feed), got, "no plugin layers").items():
            assert r["max_rel_to_scale"] < 1e-4, (name, r)
        with pytest.raises(RunnerError, match="could not load the plugin library"):
            with TrtRunner(engine, plugin_library=broken, check_metadata=False):
                pass

    def test_second_plugin_library_from_another_path(self, tmp_path):
        """In a fresh process: TensorRT refuses a second library with our creators (load_library returns None);
        an identical copy is accepted, a different build gets a message naming the library loaded first."""
        folders = [tmp_path / name for name in ("first", "same", "probe", "other")]
        for folder in folders:
            folder.mkdir()
            shutil.copy(_PLUGIN, folder / "libdcn_deploy_plugin.so")
        with open(folders[3] / "libdcn_deploy_plugin.so", "ab") as fh:
            fh.write(b"\0another build")  # other bytes, still a loadable ELF file
        script = _second_library_copy_script("tensorrt")
        paths = [str((f / "libdcn_deploy_plugin.so").resolve()) for f in folders]
        proc = subprocess.run([sys.executable, "-c", script, *paths], capture_output=True, text=True, timeout=300,
                              env=dict(os.environ, PYTHONPATH=str(REPO)))
        assert proc.returncode == 0, (proc.stdout[-2000:], proc.stderr[-2000:])
        assert f"SAME {paths[1]}" in proc.stdout and "PROBE True" in proc.stdout, proc.stdout
        assert "OTHER_ERROR" in proc.stdout and f"loaded earlier from {paths[0]}" in proc.stdout, proc.stdout
        assert "must be built for this TensorRT" not in proc.stdout

    @pytest.mark.parametrize("how", ["external data", "forced by size"])
    def test_model_parsed_from_file(self, built, tmp_path, monkeypatch, how):
        """A model whose weights live in an external file (as every model over 2 GiB must) is written with its data
        beside it in a scratch folder next to the engine and parsed with parse_from_file; the same route is forced
        for an ordinary model by lowering the size limit. Both engines match ONNX Runtime."""
        import io

        from dcn_deploy.backends import trt_build, trt_parse
        from dcn_deploy.backends.trt_runner import TrtRunner

        model = onnx.load(built[0])
        source = tmp_path / "src" / "m.onnx"
        source.parent.mkdir()
        if how == "external data":
            onnx.save_model(onnx.ModelProto.FromString(model.SerializeToString()), str(source),
                            save_as_external_data=True, all_tensors_to_one_file=True, location="m.weights",
                            size_threshold=0)
        else:
            onnx.save(model, source)
            monkeypatch.setattr(trt_parse, "PARSE_IN_MEMORY_LIMIT", 1)
        out = tmp_path / "out"
        out.mkdir()
        log = io.StringIO()
        result = trt_build.build_engine(source, out / "m.engine", shapes=["x:1x4x8x8/2x4x8x8/4x4x8x8"], tf32=False,
                                        log=log)
        assert "parsing from model.onnx with its data file" in log.getvalue(), log.getvalue()
        assert sorted(p.name for p in out.iterdir()) == ["m.engine", "m.engine.json"]  # the scratch folder is gone
        assert result.meta.extra["routed_nodes"] == 1
        feed = self.feed(4, seed=11)
        with TrtRunner(result.engine_path) as runner:
            got = runner.infer(feed)
        for name, r in accuracy_report(run_ort(model, feed), got, f"parsed from file ({how})").items():
            assert r["max_rel_to_scale"] < 1e-4, (name, r)

    @pytest.mark.skipif(os.environ.get("DCN_DEPLOY_BIG_MODEL_TEST") != "1",
                        reason="builds from a model with 2.25 GiB of weights (minutes, ~10 GB of host memory, 5 GB "
                               "of disk); set DCN_DEPLOY_BIG_MODEL_TEST=1 to run it")
    def test_model_over_two_gib(self, tmp_path):
        """Over protobuf's 2 GiB limit ``parse(model.SerializeToString())`` cannot work; the build goes through
        parse_from_file and the engine computes x @ W like numpy."""
        from onnx import TensorProto, helper, numpy_helper

        from dcn_deploy.backends.trt_build import build_engine
        from dcn_deploy.backends.trt_runner import TrtRunner

        k = 24576  # W: k x k float32 = 2.25 GiB
        rng = np.random.default_rng(7)
        w = rng.standard_normal((k, k), dtype=np.float32)
        w *= np.float32(1 / np.sqrt(k))  # in place: no float64 copy of 2.25 GiB
        graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "big",
                                  [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, k])],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, k])],
                                  [numpy_helper.from_array(w, "w")])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
        model.ir_version = 10
        source = tmp_path / "big.onnx"
        onnx.save_model(model, str(source), save_as_external_data=True, location="big.weights")
        del model, graph
        result = build_engine(source, tmp_path / "big.engine", tf32=False, progress=False)
        x = rng.standard_normal((1, k), dtype=np.float32)
        with TrtRunner(result.engine_path) as runner:
            got = runner.infer({"x": x})["y"]
        want = x @ w  # float32 BLAS: far closer than the bound below
        assert np.abs(got - want).max() / np.abs(want).max() < 1e-4

    def test_engine_for_another_tensorrt_is_refused(self, built, tmp_path):
        from dcn_deploy.backends.trt_runner import TrtRunner

        engine = tmp_path / "copy.engine"
        shutil.copy(built[1]["fp32"], engine)
        meta = engine_meta.read_meta(built[1]["fp32"])
        meta.tensorrt_version = "9.0.0.1"
        engine_meta.write_meta(engine, meta)
        with pytest.raises(engine_meta.EngineMismatchError, match="TensorRT 9.0.0.1"):
            TrtRunner(engine).activate()

    def test_cli_build(self, built, tmp_path):
        from click.testing import CliRunner

        from dcn_deploy.cli import main

        engine = tmp_path / "cli.engine"
        result = CliRunner().invoke(main, ["build", str(built[0]), "-o", str(engine), "--precision", "fp16",
                                           "--shapes", "x:1x4x8x8/1x4x8x8/2x4x8x8", "--workspace", "1G",
                                           "--timing-cache", str(tmp_path / "c.cache"), "--keep-fp32", "conv1"])
        assert result.exit_code == 0, result.output
        assert engine.exists() and engine_meta.read_meta(engine).precision == "fp16"
