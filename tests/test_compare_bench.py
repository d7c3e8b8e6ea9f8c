"""Comparison (pass and fail), benchmark statistics and JSON, and input feeds, on a real small network."""
from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pytest

from dcn_deploy.backends.base import Runner, TensorMeta
from dcn_deploy.bench import BenchResult, benchmark, latency_stats, stage_times
from dcn_deploy.compare import (DEFAULT_TOLERANCES, ComparisonResult, Tolerance, compare_outputs, compare_runners,
                                tolerance_for)
from dcn_deploy.feeds import (FeedError, load_feed, parse_shape, parse_shape_options, random_feed,
                              resolve_shapes)

F32 = np.dtype(np.float32)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(99)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    from runtime_models import build_tiny_net, tiny_net_onnx

    model = build_tiny_net()
    return model, tiny_net_onnx(model, tmp_path_factory.mktemp("tiny") / "tiny.onnx")


class Perturbed(Runner):
    """Another runner's outputs with ``delta`` added to one element: a stand-in for a backend with a bug."""

    def __init__(self, inner: Runner, delta: float, name: str = "buggy") -> None:
        super().__init__()
        self.inner, self.delta, self.name = inner, delta, name

    def input_metadata(self):
        return self.inner.input_metadata()

    def _activate(self):
        self.inner.activate()

    def _deactivate(self):
        self.inner.deactivate()

    def _infer(self, feed):
        outputs = {k: v.copy() for k, v in self.inner.infer(feed).items()}
        for value in outputs.values():
            value.reshape(-1)[value.size // 2] += self.delta
        return outputs


class Doubling(Runner):
    """y = 2x on inputs x (N, 3): counts how often its model is loaded (activated) and asked for RoI inputs."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name, self.loads, self.roi_questions = name, 0, 0

    def input_metadata(self):
        return (TensorMeta("x", F32, ("N", 3)),)

    def roi_inputs(self):
        self.roi_questions += 1
        return ()

    def _activate(self):
        self.loads += 1

    def _deactivate(self):
        pass

    def _infer(self, feed):
        return {"y": feed["x"] * 2}


def test_runners_load_their_model_once_per_use():
    """benchmark's first runner, activated to read the input metadata, is measured in that activation (it loaded
    its model once more before); compare_runners asks for RoI inputs (the ONNX Runtime runner reads its file for
    them) only to make a random feed, or to check a given feed's (K, 5) arrays (tests/test_cli_input_checks.py)."""
    first, second = Doubling("a"), Doubling("b")
    result = benchmark([first, second], batches=[1, 2], iterations=1, warmup=0, progress=False)
    assert [(e.runner, e.batch) for e in result.entries] == [("a", 1), ("b", 1), ("a", 2), ("b", 2)]
    assert (first.loads, second.loads) == (2, 2)  # once per measurement: active only while measured
    assert not first.is_active and not second.is_active
    with pytest.raises(FeedError):  # a failed check leaves no runner active either
        benchmark([first], shapes={"y": (1, 3)}, iterations=1, warmup=0, progress=False)
    assert not first.is_active

    first, second = Doubling("a"), Doubling("b")
    feed = {"x": np.random.default_rng(4).standard_normal((2, 3)).astype(np.float32)}
    assert compare_runners([first, second], feed).passed
    assert (first.roi_questions, second.roi_questions) == (0, 0)
    assert compare_runners([first, second], shapes={"x": (2, 3)}).passed
    assert (first.roi_questions, second.roi_questions) == (1, 1)


def test_benchmark_leaves_a_runner_the_caller_activated_as_it_was():
    """The caller's session is theirs: active while the others are timed, never closed nor reloaded (benchmark's
    docstring says what that costs with a spinning ONNX Runtime session); the others are active only while timed."""

    class Watching(Doubling):
        """Records, at each of its runs, whether the caller's runner is active then."""

        def __init__(self, name, other):
            super().__init__(name)
            self.other, self.saw_other_active = other, []

        def _infer(self, feed):
            self.saw_other_active.append(self.other.is_active)
            return super()._infer(feed)

    for callers_index in (0, 1):
        callers = Doubling("callers")
        ours = Watching("ours", callers)
        callers.activate()
        runners = [callers, ours] if callers_index == 0 else [ours, callers]
        benchmark(runners, batches=[1, 2], iterations=2, warmup=1, progress=False)
        assert callers.is_active and callers.loads == 1, callers_index
        assert not ours.is_active and ours.loads == 2, callers_index  # once per measurement
        assert ours.saw_other_active == [True] * 6, callers_index  # 2 batches x (1 warm-up + 2 timed)


# --- compare ------------------------------------------------------------------------------------------------------
def test_compare_outputs_rule(rng):
    ref = rng.standard_normal((4, 5)).astype(np.float32)
    same = compare_outputs("r", "y", ref.copy(), ref)
    assert same.passed and same.max_abs == 0 and same.mismatched == 0
    close = compare_outputs("r", "y", ref + np.float32(5e-5), ref)
    assert close.passed and 4e-5 < close.max_abs < 6e-5
    off = ref.copy()
    off[1, 2] += 0.5
    far = compare_outputs("r", "y", off, ref)
    assert not far.passed and far.mismatched == 1 and far.max_abs == pytest.approx(0.5, rel=1e-5)
    assert far.max_rel == pytest.approx(0.5 / max(abs(ref[1, 2]), 1e-4), rel=1e-4)
    assert "1 of 20 elements" in far.note
    shape = compare_outputs("r", "y", ref[:2], ref)
    assert not shape.passed and "shape 2x5 != reference 4x5" in shape.note


def test_of_tolerance_is_the_pass_rule_as_one_number():
    # near-zero references: the max relative error exceeds rtol, yet |err| <= atol + rtol*|ref| holds everywhere
    ref = np.array([1e-6, 2.0, -3.0], dtype=np.float32)
    passing = compare_outputs("r", "y", ref + np.array([5e-5, 1e-3, 0.0], dtype=np.float32), ref)
    assert passing.passed and passing.max_rel > passing.rtol
    assert passing.of_tolerance == pytest.approx(0.5, rel=1e-2)  # the worst element: 5e-5 / (1e-4 + 1e-9)
    failing = compare_outputs("r", "y", ref + np.array([0.0, 0.0, 0.02], dtype=np.float32), ref)
    assert not failing.passed and failing.of_tolerance == pytest.approx(0.02 / (1e-4 + 3e-3), rel=1e-3)


def test_of_tolerance_with_a_zero_allowance():
    # --atol 0 --rtol 0 printed "5.7e+300 of the tolerance": any error is now infinitely many, none is zero
    expected = np.array([1.0, 0.0, 2.0])
    off = compare_outputs("r", "y", expected + np.array([1e-7, 0.0, 0.0]), expected, Tolerance(atol=0.0, rtol=0.0))
    exact = compare_outputs("r", "y", expected.copy(), expected, Tolerance(atol=0.0, rtol=0.0))
    assert off.of_tolerance == float("inf") and not off.passed
    assert exact.of_tolerance == 0.0 and exact.passed


def test_a_nan_reference_fails_even_against_the_same_values(rng):
    # an all-NaN model must not "verify" against itself (max abs 0, max rel nan, PASS): NaN never matches NaN;
    # an inf matches only the same inf (here the output has -inf where the reference has +inf)
    ref = rng.standard_normal(6).astype(np.float32)
    ref[0], ref[1] = np.nan, np.inf
    same = ref.copy()
    same[1] = -np.inf
    same = compare_outputs("r", "y", same, ref, reference="torch")
    assert not same.passed and same.mismatched == 2
    assert same.note == ("the reference (torch) output has 2 of 6 NaN/inf values: nothing to compare there; check "
                         "the weights (tensors missing from a checkpoint stay at random values) and the inputs")
    # its finite elements are still compared: an error there is reported too, with finite numbers (the inf matches)
    off = ref.copy()
    off[4] += 1.0
    result = compare_outputs("r", "y", off, ref)
    assert not result.passed and result.mismatched == 2 and result.max_abs == pytest.approx(1.0)
    assert result.note.startswith("the reference output has 1 of 6 NaN/inf values") \
        and result.note.endswith("; 1 of 6 elements beyond tolerance")


def test_an_inf_reproduced_exactly_matches(rng):
    # a model that masks logits with -inf passes when ONNX Runtime gives the same -inf
    ref = rng.standard_normal(10).astype(np.float32)
    ref[ref < 0] = -np.inf
    got = ref.copy()
    got[np.isfinite(got)] += 1e-7
    result = compare_outputs("ort", "logits", got, ref, reference="PyTorch")
    assert result.passed and result.note == "" and 0 < result.max_abs < 1e-6
    all_inf = np.full(4, np.inf, np.float32)
    assert compare_outputs("ort", "y", all_inf.copy(), all_inf).max_abs == 0.0


def test_an_all_nan_reference_reports_no_nan_numbers():
    ref = np.full((2, 1000), np.nan, np.float32)
    result = compare_outputs("onnxruntime", "logits", ref.copy(), ref, reference="PyTorch")
    assert not result.passed and result.mismatched == 2000
    assert "the reference (PyTorch) output has 2000 of 2000 NaN/inf values" in result.note
    # nothing could be compared: every error is unbounded, none is NaN (never "max rel nan")
    numbers = (result.max_abs, result.max_rel, result.mean_abs, result.of_tolerance)
    assert all(v == float("inf") for v in numbers), numbers
    table = ComparisonResult("torch", ["torch", "ort"], {"x": ((2, 3), "float32")}, [result]).table()
    assert "nan" not in table.lower().replace("nan/inf", "") and "FAIL (the reference (PyTorch) output" in table


class NanDoubling(Doubling):
    """y = 2x * NaN: an all-NaN model, as a checkpoint of another architecture can give."""

    def _infer(self, feed):
        return {"y": feed["x"] * np.float32("nan")}


def test_compare_runners_names_the_reference_whose_output_is_nan():
    result = compare_runners([NanDoubling("torch"), NanDoubling("ort")], shapes={"x": (2, 3)}, seed=5)
    assert not result.passed
    (output,) = result.outputs
    assert output.note.startswith("the reference (torch) output has 6 of 6 NaN/inf values: nothing to compare there")
    assert "FAILED: 0 of 1 outputs" in result.table()
    assert json.loads(result.to_json())["outputs"][0]["max_rel"] == "inf"  # strict JSON: no Infinity


def test_nan_under_test_where_the_reference_is_finite_fails_with_finite_numbers(rng):
    ref = rng.standard_normal(8).astype(np.float32)
    got = ref.copy()
    got[2], got[5] = np.nan, -np.inf
    result = compare_outputs("r", "y", got, ref)
    assert not result.passed and result.mismatched == 2
    assert result.note == "2 of 8 values NaN/inf where the reference is finite"
    assert result.max_abs == result.max_rel == result.of_tolerance == float("inf")
    # max_rel is computed where the reference is finite only: a finite pair never gives NaN
    ref[0] = 0.0
    close = compare_outputs("r", "y", ref + np.float32(1e-6), ref)
    assert close.passed and np.isfinite(close.max_rel) and np.isfinite(close.of_tolerance)


def test_tolerances_per_dtype_and_overrides():
    assert tolerance_for(np.float32) == DEFAULT_TOLERANCES["float32"]
    assert tolerance_for(np.float16).atol > tolerance_for(np.float32).atol > tolerance_for(np.float64).atol
    assert tolerance_for(np.int64) == Tolerance(0.0, 0.0)
    assert tolerance_for(np.float32, {"float32": Tolerance(1.0, 0.0)}) == Tolerance(1.0, 0.0)
    half = np.array([1.0, 2.0], np.float16)
    assert compare_outputs("r", "y", half + np.float16(0.004), half).passed  # fp16 rounding is within fp16 tolerance
    assert not compare_outputs("r", "y", half.astype(np.float32) + 0.004, half.astype(np.float32)).passed


def test_compare_runners_pass_then_fail_on_a_perturbed_output(tiny):
    from dcn_deploy.backends.ort_runner import OrtRunner
    from dcn_deploy.backends.torch_runner import TorchRunner

    model, path = tiny
    ort_runner = OrtRunner(path)
    with ort_runner:
        torch_runner = TorchRunner(model, ort_runner.input_metadata(), ["y"])
    result = compare_runners([torch_runner, ort_runner], shapes={"x": (2, 2, 6, 7)}, seed=3)
    assert result.passed and result.reference == "torch" and result.seed == 3
    assert [o.output for o in result.outputs] == ["y"] and result.outputs[0].shape == (2, 4, 6, 7)
    assert 0 < result.max_abs < 1e-4
    assert not torch_runner.is_active and not ort_runner.is_active  # activated for the call only
    table = result.table()
    assert "PASS" in table and "x 2x2x6x7 float32" in table

    failed = compare_runners([torch_runner, ort_runner, Perturbed(OrtRunner(path), 0.05)],
                             shapes={"x": (1, 2, 5, 5)})
    assert not failed.passed
    by_runner = {o.runner: o for o in failed.outputs}
    assert by_runner["ort"].passed and not by_runner["buggy"].passed
    assert by_runner["buggy"].mismatched == 1 and by_runner["buggy"].max_abs == pytest.approx(0.05, rel=1e-3)
    data = json.loads(failed.to_json())
    assert data["passed"] is False and data["inputs"]["x"]["shape"] == [1, 2, 5, 5]
    assert {o["runner"] for o in data["outputs"]} == {"ort", "buggy"}
    assert "FAILED: 1 of 2 outputs" in failed.table()


def test_a_graph_computing_in_half_is_held_to_the_half_types_tolerance(tiny, tmp_path):
    """A float32-I/O graph converted to compute in float16 (what `dcn-deploy build --precision fp16` builds) is
    compared at float16's tolerance, with a note, not at float32's, which its rounding would fail; a float32 graph
    against itself keeps float32's."""
    import onnx

    from dcn_deploy.backends.ort_runner import OrtRunner
    from dcn_deploy.onnx.compute_type import half_compute_type
    from dcn_deploy.onnx.precision import convert_precision

    _, path = tiny
    half, _ = convert_precision(onnx.load(str(path)), "fp16")
    half_path = tmp_path / "tiny_fp16.onnx"
    onnx.save(half, str(half_path))
    assert half_compute_type(half) == "float16" and half_compute_type(onnx.load(str(path))) is None
    assert OrtRunner(half_path).compute_dtype() == "float16" and OrtRunner(path).compute_dtype() is None
    result = compare_runners([OrtRunner(path), OrtRunner(half_path)], shapes={"x": (1, 2, 6, 7)})
    (output,) = result.outputs
    assert output.dtype == "float32" and (output.atol, output.rtol) == (1e-2, 1e-2)
    assert "computed in float16: float16's tolerance" in output.note and result.passed
    same = compare_runners([OrtRunner(path), OrtRunner(path)], shapes={"x": (1, 2, 6, 7)}).outputs[0]
    assert (same.atol, same.rtol) == (1e-4, 1e-3) and same.note == ""



def test_an_output_computed_with_tf32_products_gets_tf32s_tolerance_and_a_note():
    """A float32 engine built with TF32 allowed (TensorRT's default; our plugin follows it) rounds products to a
    10-bit mantissa: its float32 outputs are held to tf32's tolerance, and the note says how to get IEEE float32."""
    from dcn_deploy.compare import DEFAULT_TOLERANCES, compare_outputs

    rng = np.random.default_rng(3)
    expected = rng.standard_normal((4, 64)).astype(np.float32)
    actual = (expected * (1 + 2e-3 * rng.standard_normal(expected.shape))).astype(np.float32)  # TF32-sized errors
    strict = compare_outputs("tensorrt", "y", actual, expected)
    tf32 = compare_outputs("tensorrt", "y", actual, expected, computed_in="tf32")
    assert not strict.passed and tf32.passed
    assert (tf32.atol, tf32.rtol) == (DEFAULT_TOLERANCES["tf32"].atol, DEFAULT_TOLERANCES["tf32"].rtol)
    assert "TF32 products" in tf32.note and "--no-tf32" in tf32.note
    wrong = compare_outputs("tensorrt", "y", expected[::-1].copy(), expected, computed_in="tf32")
    assert not wrong.passed  # a wrong result still fails

def test_an_engine_says_its_build_precision(tmp_path):
    """The TensorRT runner reads its compute type from the engine's sidecar (no TensorRT needed for that)."""
    from dcn_deploy.backends import engine_meta
    from dcn_deploy.backends.trt_runner import TrtRunner

    for precision, tf32, expected in (("fp16", True, "float16"), ("bf16", True, "bfloat16"), ("fp32", False, None),
                                      ("fp32", True, "tf32"), ("fp32", None, None)):
        engine = tmp_path / f"{precision}-{tf32}.engine"
        engine.write_bytes(b"engine")
        engine_meta.write_meta(engine, engine_meta.EngineMeta(
            engine_sha256=engine_meta.sha256_file(engine), tensorrt_version="10.14", gpu_name="GPU",
            compute_capability=(9, 0), precision=precision, profiles=[], source_model={}, plugin_library=None,
            inputs=[], outputs=[], extra={} if tf32 is None else {"tf32": tf32}))
        assert TrtRunner(engine).compute_dtype() == expected, (precision, tf32)
    (tmp_path / "bare.engine").write_bytes(b"engine")
    assert TrtRunner(tmp_path / "bare.engine").compute_dtype() is None   # no sidecar: unknown


def test_compare_runners_uses_a_given_feed_and_needs_two_runners(tiny, rng):
    from dcn_deploy.backends.ort_runner import OrtRunner

    _, path = tiny
    feed = {"x": rng.standard_normal((1, 2, 4, 4)).astype(np.float32)}
    result = compare_runners([OrtRunner(path), OrtRunner(path, optimization="disable", name="ort-plain")], feed)
    assert result.passed and result.seed is None and result.feed["x"] == ((1, 2, 4, 4), "float32")
    with pytest.raises(ValueError, match="at least two runners"):
        compare_runners([OrtRunner(path)])


# --- bench --------------------------------------------------------------------------------------------------------
def test_latency_stats_known_values():
    stats = latency_stats([0.004, 0.001, 0.003, 0.002])
    assert stats.min == pytest.approx(1.0) and stats.max == pytest.approx(4.0)
    assert stats.mean == pytest.approx(2.5) and stats.median == pytest.approx(2.5)
    assert stats.p90 == pytest.approx(3.7) and stats.p99 == pytest.approx(3.97)
    with pytest.raises(ValueError, match="no timings"):
        latency_stats([])


def test_benchmark_report_structure_on_a_real_model(tiny):
    from dcn_deploy.backends.ort_runner import OrtRunner
    from dcn_deploy.backends.torch_runner import TorchRunner

    model, path = tiny
    with OrtRunner(path) as probe:
        metas = probe.input_metadata()
    runners = [OrtRunner(path), TorchRunner(model, metas, ["y"])]
    result = benchmark(runners, batches=[1, 3], shapes={"x": (1, 2, 8, 8)}, iterations=7, warmup=2, progress=False)
    assert isinstance(result, BenchResult)
    assert [(e.runner, e.batch) for e in result.entries] == [("ort", 1), ("torch", 1), ("ort", 3), ("torch", 3)]
    for e in result.entries:
        lat = e.latency_ms
        assert e.iterations == 7 and e.warmup == 2 and e.inputs == {"x": [e.batch, 2, 8, 8]}
        assert 0 < lat.min <= lat.median <= lat.p90 <= lat.p99 <= lat.max
        assert lat.min <= lat.mean <= lat.max
        assert e.total_s == pytest.approx(lat.mean * 7 / 1e3, rel=1e-6)
        assert e.samples_per_s == pytest.approx(e.batch * e.inferences_per_s)
        assert e.wall_s >= e.total_s
    assert result.entry("ort", 3).relative_speed == 1.0
    assert result.entry("torch", 3).relative_speed == pytest.approx(
        result.entry("ort", 3).latency_ms.median / result.entry("torch", 3).latency_ms.median)
    data = json.loads(result.to_json())
    assert set(data) == {"settings", "environment", "results"}
    assert data["settings"]["runners"] == ["ort", "torch"] and data["settings"]["batches"] == [1, 3]
    assert set(data["results"][0]["latency_ms"]) == {"min", "mean", "median", "p90", "p99", "max", "std"}
    assert "onnxruntime" in data["environment"]
    table = result.table()
    assert "speed vs ort" in table and "median" in table and table.count("\n") >= 5


def test_benchmark_by_duration_and_argument_checks(tiny):
    from dcn_deploy.backends.ort_runner import OrtRunner

    _, path = tiny
    result = benchmark([OrtRunner(path)], batches=[2], shapes={"x": (1, 2, 4, 4)}, duration=0.2, warmup=0,
                       progress=False)
    (entry,) = result.entries
    assert entry.iterations >= 1 and entry.wall_s >= 0.2 and result.settings["duration_s"] == 0.2
    with pytest.raises(ValueError, match="iterations or duration, not both"):
        benchmark([OrtRunner(path)], iterations=3, duration=1.0)
    with pytest.raises(ValueError, match="batch sizes must be >= 1"):
        benchmark([OrtRunner(path)], batches=[0])
    with pytest.raises(ValueError, match="distinct"):
        benchmark([OrtRunner(path), OrtRunner(path)], iterations=1)


def test_the_report_says_each_runners_intra_op_threads_and_when(tiny):
    """Two reports made with different --threads must not read the same: each entry says the runner's intra-op
    threads (its own setting; torch's process-wide count for a torch runner without one; None: the backend's
    default), the table's footer says them too, and the environment has the date and dcn_deploy's version."""
    import torch

    from dcn_deploy import __version__
    from dcn_deploy.backends.ort_runner import OrtRunner
    from dcn_deploy.backends.torch_runner import TorchRunner

    model, path = tiny
    with OrtRunner(path) as probe:
        metas = probe.input_metadata()
    runners = [OrtRunner(path, threads=1), OrtRunner(path, name="ort-default"), TorchRunner(model, metas, ["y"])]
    result = benchmark(runners, batches=[1], shapes={"x": (1, 2, 4, 4)}, iterations=1, warmup=0, progress=False)
    assert [e.threads for e in result.entries] == [1, None, torch.get_num_threads()]
    assert [r["threads"] for r in json.loads(result.to_json())["results"]] == [1, None, torch.get_num_threads()]
    assert (f"intra-op threads: ort: 1, ort-default: the backend's default (ONNX Runtime: one per core), torch: "
            f"{torch.get_num_threads()}" in result.table())
    assert result.environment["dcn_deploy"] == __version__ and result.environment["date_utc"].startswith("20")


class Truncating(Doubling):
    """y = 2x on the first two columns only: a runner that does not compute what Doubling computes."""

    def _infer(self, feed):
        return {"y": feed["x"][:, :2] * 2}


def test_runners_whose_outputs_differ_in_shape_are_not_timed_side_by_side():
    """Times of runners that do not compute the same function (a --model that is not the ONNX file's network)
    cannot be compared: the first output of each runner is checked against the first runner's, before its timing."""
    from dcn_deploy.backends.base import RunnerError

    timed = []

    class Counting(Truncating):
        def last_inference_time(self):
            timed.append(self.name)
            return super().last_inference_time()

    with pytest.raises(RunnerError, match=r"b: output 'y' has shape \(1, 2\) where a's has \(1, 3\)"):
        benchmark([Doubling("a"), Counting("b")], batches=[1], iterations=5, warmup=2, progress=False)
    assert timed == []  # refused after its first warm-up run, before any timed one
    with pytest.raises(RunnerError, match="b: output 'y' has shape"):  # without warm-up: its first timed run
        benchmark([Doubling("a"), Truncating("b")], batches=[1], iterations=5, warmup=0, progress=False)


def test_stage_times_from_runners_that_report_them():
    @dataclass(frozen=True)
    class Stages:  # the shape of TrtRunner.last_stage_times()'s result
        h2d_ms: float
        compute_ms: float
        d2h_ms: float

    class Staged:
        def last_stage_times(self):
            return Stages(0.5, 2.0, 0.25)

    assert stage_times(Staged()) == {"h2d": 0.0005, "compute": 0.002, "d2h": 0.00025}
    assert stage_times(object()) == {}


# --- feeds --------------------------------------------------------------------------------------------------------
METAS = (TensorMeta("image", F32, ("N", 3, "H", "W")), TensorMeta("scale", F32, (1,)),
         TensorMeta("ids", np.dtype(np.int64), ("N", 4)))


def test_resolve_shapes_fills_batch_and_user_sizes():
    shapes = resolve_shapes(METAS, {"image": (1, 3, 16, 20)}, batch=4)
    assert shapes == {"image": (4, 3, 16, 20), "scale": (1,), "ids": (4, 4)}
    with pytest.raises(FeedError, match=r"input 'image' has a dynamic dimension 2 \(H\).*--shape image="):
        resolve_shapes(METAS)
    with pytest.raises(FeedError, match=r"dimension 1 is fixed to 3 in the model, shapes \(CLI: --shape\) gives 5"):
        resolve_shapes(METAS, {"image": (1, 5, 8, 8)})
    with pytest.raises(FeedError, match=r"not inputs of the model"):
        resolve_shapes(METAS, {"imgae": (1, 3, 8, 8)})
    with pytest.raises(FeedError, match="fixed batch size 1"):
        resolve_shapes((TensorMeta("x", F32, (1, 3)),), batch=8)
    assert resolve_shapes((TensorMeta("x", F32, (2, 3)),), batch=2) == {"x": (2, 3)}


def test_random_boxes_lie_inside_the_image_and_its_batch():
    from dcn_deploy.backends.base import TensorMeta
    from dcn_deploy.feeds import FeedError

    metas = [TensorMeta("image", np.dtype(np.float32), ("n", 3, 40, 30)), TensorMeta("rois", np.dtype(np.float32),
                                                                                   ("k", 5))]
    feed = random_feed(metas, {"rois": (64, 5)}, batch=3, seed=1, rois=["rois"])
    boxes = feed["rois"]
    assert feed["image"].shape == (3, 3, 40, 30) and boxes.shape == (64, 5) and boxes.dtype == np.float32
    assert set(boxes[:, 0]) <= {0.0, 1.0, 2.0} and len(set(boxes[:, 0])) > 1
    assert (boxes[:, 1] >= 0).all() and (boxes[:, 3] <= 30).all() and (boxes[:, 3] - boxes[:, 1] >= 1).all()
    assert (boxes[:, 2] >= 0).all() and (boxes[:, 4] <= 40).all() and (boxes[:, 4] - boxes[:, 2] >= 1).all()
    np.testing.assert_array_equal(random_feed(metas, {"rois": (64, 5)}, 3, 1, ["rois"])["rois"], boxes)
    with pytest.raises(FeedError, match="no 4-D image input"):
        random_feed(metas[1:], {"rois": (4, 5)}, rois=["rois"])
    with pytest.raises(FeedError, match=r"expected \(K, 5\)"):
        random_feed([metas[0], TensorMeta("rois", np.dtype(np.float32), (4, 4))], batch=1, rois=["rois"])


def test_random_feed_is_reproducible_and_typed():
    a = random_feed(METAS, {"image": (2, 3, 5, 5)}, seed=1)
    b = random_feed(METAS, {"image": (2, 3, 5, 5)}, seed=1)
    c = random_feed(METAS, {"image": (2, 3, 5, 5)}, seed=2)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["image"], c["image"])
    assert a["image"].dtype == F32 and a["ids"].dtype == np.int64 and a["ids"].shape == (2, 4)
    assert 0.5 < a["image"].std() < 1.5 and a["ids"].min() >= 0 and a["ids"].max() < 10


def test_parse_shapes():
    assert parse_shape("1x3x64x64") == (1, 3, 64, 64) == parse_shape("1,3,64,64")
    assert parse_shape_options(["a=2x3"]) == {"a": (2, 3)}
    with pytest.raises(FeedError, match="NAME=SHAPE"):
        parse_shape_options(["2x3"])
    with pytest.raises(FeedError, match="joined by 'x'"):
        parse_shape("2 by 3")
    with pytest.raises(FeedError, match=r"negative size \(-2\); every size must be >= 0"):
        parse_shape("1x3x-2x64")


def test_load_feed_from_npy_and_npz(tmp_path, rng):
    metas = (TensorMeta("x", F32, ("N", 2, 4, 4)),)
    x = rng.standard_normal((3, 2, 4, 4))  # float64, as numpy saves by default: cast to the model's float32
    np.save(tmp_path / "x.npy", x)
    np.savez(tmp_path / "inputs.npz", x=x.astype(np.float32))
    for items in (["x.npy"], ["x=x.npy"], ["inputs.npz"]):
        feed = load_feed([str(tmp_path / i) if "=" not in i else "x=" + str(tmp_path / "x.npy") for i in items], metas)
        assert feed["x"].dtype == F32 and feed["x"].shape == (3, 2, 4, 4)
        np.testing.assert_allclose(feed["x"], x, rtol=1e-6)


def test_load_feed_errors_name_file_input_and_fix(tmp_path, rng):
    metas = (TensorMeta("x", F32, ("N", 2, 4, 4)), TensorMeta("y", np.dtype(np.int64), ("N",)))
    np.save(tmp_path / "x.npy", rng.standard_normal((1, 2, 4, 4)).astype(np.float32))
    np.save(tmp_path / "bad.npy", rng.standard_normal((1, 2, 5, 4)).astype(np.float32))
    np.save(tmp_path / "ints.npy", rng.standard_normal(1).astype(np.float32))
    (tmp_path / "notes.txt").write_text("hello")
    x = f"x={tmp_path / 'x.npy'}"
    with pytest.raises(FeedError, match="does not exist"):
        load_feed([f"x={tmp_path / 'missing.npy'}"], metas)
    with pytest.raises(FeedError, match=r"no file gives input\(s\) \['y'\]"):
        load_feed([x], metas)
    with pytest.raises(FeedError, match="'z' is not an input of the model"):
        load_feed([x, f"z={tmp_path / 'x.npy'}"], metas)
    with pytest.raises(FeedError, match=r"dimension 2 must be 4"):
        load_feed([f"x={tmp_path / 'bad.npy'}", f"y={tmp_path / 'ints.npy'}"], metas)
    with pytest.raises(FeedError, match="has dtype float32, the model expects int64"):
        load_feed([x, f"y={tmp_path / 'ints.npy'}"], metas)
    with pytest.raises(FeedError, match=r"say which with items=\['NAME=.*'\] \(CLI: --input NAME="):
        load_feed([str(tmp_path / "x.npy")], metas)
    with pytest.raises(FeedError, match="expected a .npy or .npz file"):
        load_feed([f"x={tmp_path / 'notes.txt'}"], metas)
    with pytest.raises(FeedError, match="given twice"):
        load_feed([x, x], metas)


def test_a_static_model_batch_is_its_first_inputs():
    # a second input's first dimension (7 boxes, 7 points, ...) is not a batch size
    from dcn_deploy.backends.base import TensorMeta
    from dcn_deploy.bench import check_batches, default_batches
    from dcn_deploy.feeds import FeedError, resolve_shapes

    metas = [TensorMeta("x", np.dtype(np.float32), (1, 3, 16, 16)), TensorMeta("pts", np.dtype(np.float32), (7, 2))]
    assert default_batches(metas) == [1]
    check_batches(metas, [1])
    assert resolve_shapes(metas, batch=1) == {"x": (1, 3, 16, 16), "pts": (7, 2)}
    with pytest.raises(FeedError, match="input 'x' has a fixed batch size 1"):
        check_batches(metas, [1, 7])
    with pytest.raises(FeedError, match="input 'x' has a fixed batch size 1"):
        resolve_shapes(metas, batch=7)


def test_fixed_batch_has_one_wording_for_one_batch_and_for_several():
    """resolve_shapes (one batch) and check_batches (benchmark's list) word the error through fixed_batch_error:
    the same text, but for the argument it names and the batches refused. RoI inputs (box counts) never fix it."""
    from dcn_deploy.bench import check_batches
    from dcn_deploy.feeds import fixed_batch_error

    metas = [TensorMeta("x", F32, (2, 3, 8, 8)), TensorMeta("rois", F32, ("K", 5))]
    with pytest.raises(FeedError) as one:
        resolve_shapes(metas, batch=5, rois=("rois",))
    with pytest.raises(FeedError) as several:
        check_batches(metas[:1], [2, 5, 7])
    assert str(one.value) == str(fixed_batch_error(metas, [5], ("rois",)))
    assert str(several.value) == str(fixed_batch_error(metas[:1], [5, 7], asked=[2, 5, 7]))
    assert str(several.value).startswith("batches (CLI: --batch 2,5,7): input 'x' has a fixed batch size 2 (model "
                                         "shape 2x3x8x8), so batch 5, 7 cannot run; use batches=[2] (CLI: --batch 2)")
    own = str(one.value)
    assert own.startswith("input 'x' has a fixed batch size 2 (model shape 2x3x8x8), so batch 5 cannot run; use "
                          "batch=2 (CLI: --batch 2)")
    assert own[own.index(", or export"):] == str(several.value)[str(several.value).index(", or export"):]
    with pytest.raises(ValueError, match="runs any batch size"):
        fixed_batch_error([TensorMeta("x", F32, ("N", 3))], [4])


def test_a_bfloat16_compute_type_needs_no_bfloat16_numpy_dtype():
    """computed_in="bfloat16" picks bfloat16's tolerance by name: numpy knows no bfloat16 until ml_dtypes (onnx)
    registers it, and a torch runner against a bf16 engine need not import onnx."""
    import subprocess
    import sys

    script = ("import numpy as np\nfrom dcn_deploy.compare import compare_outputs\n"
              "a = np.ones(4, np.float32)\n"
              "print(compare_outputs('trt', 'y', a * 1.01, a, computed_in='bfloat16').passed)\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "True", out.stderr[-2000:]


def test_bench_matches_outputs_as_verify_does_by_position_when_names_differ():
    """A PyTorch runner without output names (a library caller's TorchRunner) names its outputs output0, ...: bench
    matches them by position, as compare_runners does, instead of refusing the runners as different models."""
    from dcn_deploy.backends.base import RunnerError

    class Renamed(Doubling):
        def _infer(self, feed):
            return {f"out{i}": v for i, v in enumerate(super()._infer(feed).values())}

    class Two(Doubling):
        def _infer(self, feed):
            return {"y": feed["x"] * 2, "z": feed["x"]}

    result = benchmark([Doubling("a"), Renamed("b")], batches=[1], iterations=2, warmup=1, progress=False)
    assert [e.runner for e in result.entries] == ["a", "b"]
    with pytest.raises(RunnerError, match=r"cannot be matched by name or by position: the runners do not run"):
        benchmark([Doubling("a"), Two("b")], batches=[1], iterations=2, warmup=1, progress=False)


def test_the_progress_lines_carry_the_callers_prefix(tiny, capsys):
    """dcn_deploy.demo runs a benchmark inside its own work: its lines say whose they are ("[demo] ort batch 2")."""
    from dcn_deploy.backends.ort_runner import OrtRunner

    _, path = tiny
    benchmark([OrtRunner(path)], batches=[2], shapes={"x": (1, 2, 4, 4)}, iterations=4, warmup=0,
              progress=True, progress_prefix="[demo] ")
    lines = capsys.readouterr().err.splitlines()  # not a terminal: one plain line per quarter
    assert lines and all(line.startswith("[demo] ort batch 2: ") for line in lines), lines
