"""Runners (PyTorch eager, ONNX Runtime, onnx's reference evaluator) on a real small deformable network."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from dcn_deploy.backends.base import RunnerError, TensorMeta  # noqa: E402
from dcn_deploy.backends.factory import make_runner, onnx_io_metadata, tensorrt_missing_reason  # noqa: E402
from dcn_deploy.backends.onnx_reference_runner import OnnxReferenceRunner  # noqa: E402
from dcn_deploy.backends.ort_runner import OrtRunner, ort_type_to_numpy  # noqa: E402
from dcn_deploy.backends.torch_runner import TorchRunner, metas_from_examples  # noqa: E402
from runtime_models import build_tiny_net, tiny_net_onnx  # noqa: E402


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny")
    model = build_tiny_net()
    return model, tiny_net_onnx(model, folder / "tiny.onnx"), tiny_net_onnx(model, folder / "tiny_static.onnx",
                                                                             dynamic=False, batch=2, size=5)


def test_ort_runner_reads_input_and_output_metadata(tiny):
    _, path, static = tiny
    with OrtRunner(path) as runner:
        (meta,) = runner.input_metadata()
        assert meta == TensorMeta("x", np.dtype(np.float32), ("N", 2, "H", "W"))
        assert meta.is_dynamic()
        assert [m.name for m in runner.output_metadata()] == ["y"]
        assert runner.active_providers()[0] == "CPUExecutionProvider"
    with OrtRunner(static) as runner:
        assert runner.input_metadata()[0].shape == (2, 2, 5, 5)
        assert not runner.input_metadata()[0].is_dynamic()


@pytest.mark.parametrize("spinning, entries", [
    ("on", {"session.force_spinning_stop": None, "session.intra_op.allow_spinning": None}),
    ("within-run", {"session.force_spinning_stop": "1", "session.intra_op.allow_spinning": None}),
    ("off", {"session.force_spinning_stop": None, "session.intra_op.allow_spinning": "0",
             "session.inter_op.allow_spinning": "0"}),
])
def test_ort_runner_spinning_reaches_the_session(tiny, spinning, entries):
    _, path, _ = tiny
    with OrtRunner(path, threads=2, spinning=spinning) as runner:
        options = runner.session.get_session_options()
        for key, value in entries.items():
            if value is None:  # onnxruntime's default: not set
                with pytest.raises(RuntimeError, match="does not have configuration with key"):
                    options.get_session_config_entry(key)
            else:
                assert options.get_session_config_entry(key) == value
        assert runner.spinning == spinning


def test_ort_runner_refuses_an_unknown_spinning_setting(tiny):
    with pytest.raises(ValueError, match="spinning must be on, within-run or off, got 'no'"):
        OrtRunner(tiny[1], spinning="no")


def test_ort_matches_torch_on_random_inputs_of_several_shapes(tiny, rng):
    model, path, _ = tiny
    with OrtRunner(path) as ort_runner, TorchRunner(model, ort_runner.input_metadata(), ["y"]) as torch_runner:
        for shape in [(1, 2, 6, 6), (3, 2, 5, 9)]:
            x = rng.standard_normal(shape).astype(np.float32)
            ours, theirs = ort_runner.infer({"x": x}), torch_runner.infer({"x": x})
            assert ours["y"].shape == (shape[0], 4, shape[2], shape[3])
            np.testing.assert_allclose(ours["y"], theirs["y"], rtol=1e-4, atol=1e-5)
            assert np.abs(ours["y"]).max() > 0.1  # a real signal, not zeros
        assert ort_runner.last_inference_time() > 0 and torch_runner.last_inference_time() > 0


def test_torch_runner_against_reference_deform_conv(tiny, rng):
    """The torch runner returns exactly the module's output (the reference), as numpy, named."""
    model, _, _ = tiny
    x = rng.standard_normal((2, 2, 5, 5)).astype(np.float32)
    metas = metas_from_examples(["x"], [torch.from_numpy(x)], dynamic_batch=True)
    assert metas[0].shape == ("batch", 2, 5, 5)
    with TorchRunner(model, metas) as runner:
        out = runner.infer({"x": x})
    assert list(out) == ["output_0"]
    with torch.no_grad():
        np.testing.assert_array_equal(out["output_0"], model(torch.from_numpy(x)).numpy())


def test_torch_runner_names_dict_and_tuple_outputs():
    class TwoHeads(torch.nn.Module):
        def forward(self, x):
            return {"sum": x.sum(1), "pair": (x * 2, x - 1)}

    metas = (TensorMeta("x", np.dtype(np.float32), (None, 3)),)
    x = np.arange(6, dtype=np.float32).reshape(2, 3) + 1
    with TorchRunner(TwoHeads(), metas) as runner:
        out = runner.infer({"x": x})
    assert list(out) == ["sum", "pair.0", "pair.1"]
    np.testing.assert_array_equal(out["sum"], x.sum(1))
    with TorchRunner(TwoHeads(), metas, output_names=["a", "b", "c"]) as runner:
        out = runner.infer({"x": x})
    assert list(out) == ["a", "b", "c"]
    np.testing.assert_array_equal(out["c"], x - 1)
    with TorchRunner(TwoHeads(), metas, output_names=["only_one"]) as runner:
        with pytest.raises(RunnerError, match="returned 3 outputs but 1 output names"):
            runner.infer({"x": x})


def test_reference_evaluator_agrees_with_ort(tiny, rng):
    _, path, _ = tiny
    x = rng.standard_normal((1, 2, 4, 5)).astype(np.float32)
    with OrtRunner(path) as ort_runner, OnnxReferenceRunner(path) as reference:
        assert reference.input_metadata() == ort_runner.input_metadata()
        np.testing.assert_allclose(reference.infer({"x": x})["y"], ort_runner.infer({"x": x})["y"],
                                   rtol=1e-4, atol=1e-5)


def test_feed_errors_name_the_input(tiny, rng):
    _, path, static = tiny
    runner = OrtRunner(path)
    with pytest.raises(RunnerError, match="inside 'with runner:'"):
        runner.infer({"x": np.zeros((1, 2, 4, 4), np.float32)})
    with runner:
        with pytest.raises(RunnerError, match=r"missing \['x'\].*unknown \['image'\]"):
            runner.infer({"image": np.ones((1, 2, 4, 4), np.float32)})
        with pytest.raises(RunnerError, match="'x' has dtype float64, the model expects float32"):
            runner.infer({"x": rng.standard_normal((1, 2, 4, 4))})
        with pytest.raises(RunnerError, match="'x' has shape"):
            runner.infer({"x": rng.standard_normal((1, 3, 4, 4)).astype(np.float32)})
    with OrtRunner(static) as runner:
        with pytest.raises(RunnerError, match=r"'x' has shape \(1, 2, 5, 5\), the model expects \(2, 2, 5, 5\)"):
            runner.infer({"x": rng.standard_normal((1, 2, 5, 5)).astype(np.float32)})


def test_missing_and_broken_model_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        OrtRunner(tmp_path / "nope.onnx")
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a protobuf")
    with pytest.raises(RunnerError, match="ort: .*broken.onnx is not a readable ONNX model"):
        OrtRunner(broken).activate()
    with pytest.raises(ValueError, match="device must be 'cpu' or 'cuda'"):
        OrtRunner(broken, device="gpu")


def _conv_model(elem_type: int, dtype, rng):
    """One Conv (N, 3, 8, 8) -> (N, 2, 6, 6) in ``elem_type`` with random weights, as an onnx.ModelProto."""
    from onnx import helper, numpy_helper

    weight = numpy_helper.from_array(rng.standard_normal((2, 3, 3, 3)).astype(dtype), "w")
    graph = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"], name="node_conv")], "conv",
                              [helper.make_tensor_value_info("x", elem_type, ["N", 3, 8, 8])],
                              [helper.make_tensor_value_info("y", elem_type, None)], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    model.ir_version = 10
    return model


def test_float64_model_load_error_says_to_export_in_float32(tmp_path, rng):
    """ONNX Runtime's CPU provider has no float64 Conv; the load error says so and gives export's fix."""
    import onnx

    from dcn_deploy.backends.ort_runner import missing_float64_kernel

    path = tmp_path / "f64.onnx"
    onnx.save(_conv_model(onnx.TensorProto.DOUBLE, np.float64, rng), str(path))
    for source in (path, str(path), onnx.load(str(path)), path.read_bytes()):
        with pytest.raises(RunnerError) as info:
            OrtRunner(source).activate()
        message = str(info.value)
        assert "NOT_IMPLEMENTED" in message and "Conv(11)" in message  # ONNX Runtime's own words, kept
        assert ("(the model is float64, and ONNX Runtime's CPU provider has no float64 Conv; export in float32 "
                "(model.float(), CLI: dcn-deploy export --dtype float32))") in message
    # the same model in float32 loads and runs: the hint is about the type only
    f32 = tmp_path / "f32.onnx"
    onnx.save(_conv_model(onnx.TensorProto.FLOAT, np.float32, rng), str(f32))
    with OrtRunner(f32) as runner:
        assert runner.infer({"x": rng.standard_normal((2, 3, 8, 8)).astype(np.float32)})["y"].shape == (2, 2, 6, 6)
    not_implemented = "[ONNXRuntimeError] : 9 : NOT_IMPLEMENTED : Could not find an implementation for Conv(11) node"
    assert missing_float64_kernel(not_implemented, True) == "Conv"
    assert missing_float64_kernel(not_implemented, False) is None  # another type's missing kernel: no such hint
    assert missing_float64_kernel("[ONNXRuntimeError] : 1 : FAIL : Load model failed", True) is None


def test_ort_cuda_without_the_cuda_provider_says_what_to_install(tiny):
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this onnxruntime has the CUDA provider")
    with pytest.raises(RunnerError, match="onnxruntime-gpu"):
        OrtRunner(tiny[1], device="cuda").activate()


def test_ort_type_mapping():
    assert ort_type_to_numpy("tensor(float16)") == np.float16
    assert ort_type_to_numpy("tensor(int64)") == np.int64
    with pytest.raises(RunnerError, match="bfloat16"):
        ort_type_to_numpy("tensor(bfloat16)", "x")


def test_torch_runner_runs_with_the_threads_asked_for_and_puts_torch_back(tiny):
    """bench --threads N reaches the torch runner too (make_runner's device_threads), so that a comparison with
    ONNX Runtime at N threads is like for like; torch's own setting comes back after."""
    model, path, _ = tiny
    seen = []

    class Counting(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = model

        def forward(self, x):
            seen.append(torch.get_num_threads())
            return self.inner(x)

    before = torch.get_num_threads()
    wanted = 1 if before > 1 else 2
    x = np.ones((1, 2, 6, 6), dtype=np.float32)
    with make_runner("torch", path, torch_model=Counting(), device_threads=wanted) as runner:
        runner.infer({"x": x})
    assert seen == [wanted] and torch.get_num_threads() == before
    with pytest.raises(ValueError, match="threads must be an int >= 1"):
        TorchRunner(model, runner.input_metadata(), threads=0)


def test_factory_makes_each_runner_and_explains_what_is_missing(tiny, tmp_path):
    model, path, _ = tiny
    inputs, outputs = onnx_io_metadata(path)
    assert [m.name for m in inputs] == ["x"] and outputs == ("y",)
    assert isinstance(make_runner("ort", path), OrtRunner)
    assert isinstance(make_runner("onnx-reference", path), OnnxReferenceRunner)
    torch_runner = make_runner("torch", path, torch_model=model)
    assert isinstance(torch_runner, TorchRunner) and torch_runner.input_metadata() == inputs
    with pytest.raises(ValueError, match="needs the PyTorch model"):
        make_runner("torch", path)
    with pytest.raises(ValueError, match="unknown runner 'tvm'"):
        make_runner("tvm", path)
    with pytest.raises(FileNotFoundError, match="missing.onnx"):
        make_runner("ort", tmp_path / "missing.onnx")
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"\0")
    with pytest.raises(ValueError, match="needs an ONNX file"):
        make_runner("ort", engine)


@pytest.mark.skipif(tensorrt_missing_reason() is None, reason="TensorRT is installed here")
def test_trt_runner_without_tensorrt_says_so(tiny):
    with pytest.raises(RunnerError, match="TensorRT is not installed"):
        make_runner("trt", tiny[1])


def test_exported_program_runs_in_torch_runner(tiny, rng):
    model, _, _ = tiny
    x = torch.from_numpy(rng.standard_normal((1, 2, 5, 5)).astype(np.float32))
    program = torch.export.export(model, (x,))
    with TorchRunner(program, metas_from_examples(["x"], [x])) as runner:
        out = runner.infer({"x": x.numpy()})["output_0"]
    with torch.no_grad():
        np.testing.assert_allclose(out, model(x).numpy(), rtol=1e-5, atol=1e-6)


def test_cli_runner_choices_are_the_factorys_runner_kinds():
    """The CLI keeps its own copy (importing the factory would import numpy at `dcn-deploy --help`): the two must
    name the same runners, in the same order."""
    from dcn_deploy.backends.factory import RUNNER_KINDS, TORCH_RUNNER_KINDS
    from dcn_deploy.commands._runtime import RUNNER_CHOICES, TORCH_RUNNERS

    assert RUNNER_CHOICES == RUNNER_KINDS
    assert TORCH_RUNNERS == TORCH_RUNNER_KINDS
