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
   limits, stage times, CUDA graphs, torch tensors, threads, metadata refusal, timing cache, the CLI.
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

import numpy as np
import onnx
import pytest

from dcn_deploy.backends import engine_meta

sys.path.insert(0, str(Path(__file__).parent))
from test_trt_pure import accuracy_report, dcn_model, run_ort  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


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
        # our plugin layer, with its namespace and serialised fields, is in the engine
        assert b"dcn_deploy" in data and b"DeformConv2d" in data
        assert engine_meta.read_meta(engine).engine_sha256 == engine_meta.sha256_file(engine)
        assert (tmp_path / f"m_{precision}.engine.cache").stat().st_size > 0

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
