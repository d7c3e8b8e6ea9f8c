"""The demo: procedural digits, DemoNet, and a shortened end-to-end run (train, export, verify, bench)."""
from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from click.testing import CliRunner  # noqa: E402

from dcn_deploy.cli import main  # noqa: E402
from dcn_deploy.demo import DemoConfig  # noqa: E402
from dcn_deploy.models.demo import DemoNet, digit_templates, make_digits  # noqa: E402
from dcn_deploy.ops.modules import ModulatedDeformConv2dPack  # noqa: E402


def test_digits_are_reproducible_balanced_and_distorted():
    images, labels = make_digits(200, seed=3)
    again, labels_again = make_digits(200, seed=3)
    other, _ = make_digits(200, seed=4)
    assert images.shape == (200, 1, 28, 28) and images.dtype == torch.float32 and labels.dtype == torch.int64
    assert torch.equal(images, again) and torch.equal(labels, labels_again)
    assert not torch.equal(images, other)
    assert torch.bincount(labels, minlength=10).tolist() == [20] * 10
    # Distortion: two images of the same digit differ far more than the noise alone would make them.
    same = images[labels == 1]
    assert (same[0] - same[1]).abs().mean() > 0.1
    templates = digit_templates()
    assert templates.shape == (10, 1, 28, 28) and 0 <= templates.min() and templates.max() <= 1
    assert len({tuple(t.flatten().tolist()) for t in templates}) == 10  # ten different glyphs
    with pytest.raises(ValueError, match="count must be >= 1"):
        make_digits(0)


def test_demo_net_is_deformable_and_size_agnostic():
    model = DemoNet().eval()
    assert sum(isinstance(m, ModulatedDeformConv2dPack) for m in model.modules()) == 2
    with torch.no_grad():
        assert model(make_digits(3)[0]).shape == (3, 10)
        assert model(torch.randn(2, 1, 36, 20)).shape == (2, 10)
    (example,) = model.example_inputs(batch=4)
    assert example.shape == (4, 1, 28, 28)


def test_demo_config_rejects_bad_values():
    with pytest.raises(ValueError, match="epochs must be >= 1"):
        DemoConfig(epochs=0)
    with pytest.raises(ValueError, match="width must be even"):
        DemoConfig(width=15)


def test_training_shorter_than_a_one_cycle_warm_up():
    # 4 steps in all: too few for the one-cycle schedule (it divided by zero); trains at the constant rate
    from dcn_deploy.demo import _train

    torch.manual_seed(0)
    images, labels = make_digits(100, seed=0)
    model = DemoNet()
    before = [p.detach().clone() for p in model.parameters()]
    history = _train(model, images, labels, DemoConfig(epochs=1, batch_size=32, progress=False), lambda _: None)
    assert len(history) == 1 and np.isfinite(history[0]["loss"])
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_shortened_demo_end_to_end(tmp_path):
    out = tmp_path / "demo"
    result = CliRunner().invoke(main, ["demo", "-o", str(out), "--train-size", "800", "--test-size", "200",
                                       "--epochs", "3", "--batch-size", "32", "--lr", "8e-3",
                                       "--bench-iterations", "3", "--json", "--no-progress"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["passed"] is True and data["export_verified"] is True
    acc = data["accuracy"]
    assert acc["torch"] == acc["onnxruntime"]  # ONNX Runtime reproduces PyTorch's predictions
    assert acc["torch"] > 0.5  # learnt in 75 steps (chance is 0.1; measured 0.9)
    assert data["predictions_agree"] == data["test_size"] == 200
    assert data["logits"]["within_tolerance"] and data["logits"]["max_abs_error"] < 1e-3
    assert set(data["latency_median_ms"]) == {"torch", "ort"}
    assert all(v > 0 for d in data["latency_median_ms"].values() for v in d.values())
    assert [h["epoch"] for h in data["history"]] == [1, 2, 3]

    for name in ("demo.onnx", "demo_weights.pt", "sample_digits.npy", "sample_labels.npy", "bench.json",
                 "demo_report.json"):
        assert (out / name).is_file(), name
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary files left
    report = json.loads((out / "demo_report.json").read_text())
    assert report["export"]["deformable_ops"] and report["accuracy"] == acc

    # The artefacts work with the other commands, as the demo's "try next" lines say.
    infer = CliRunner().invoke(main, ["infer", str(out / "demo.onnx"), "--input", str(out / "sample_digits.npy"),
                                      "--json"])
    assert infer.exit_code == 0, infer.output
    assert json.loads(infer.output)["outputs"][next(iter(json.loads(infer.output)["outputs"]))]["shape"] == [16, 10]
    # demo_weights.pt is the model in demo.onnx: the same logits on the sample digits (not just an accuracy near
    # the test set's, which weights from another point of the training could also give)
    from dcn_deploy.backends.ort_runner import OrtRunner

    model = DemoNet()
    model.load_state_dict(torch.load(out / "demo_weights.pt"))
    digits = np.load(out / "sample_digits.npy")
    with torch.no_grad():
        logits = model.eval()(torch.from_numpy(digits)).numpy()
    with OrtRunner(out / "demo.onnx") as runner:
        from_file = runner.infer({runner.input_metadata()[0].name: digits})["logits"]
    np.testing.assert_allclose(logits, from_file, rtol=1e-4, atol=1e-4 * float(np.abs(logits).max()))
    sample_accuracy = (logits.argmax(1) == np.load(out / "sample_labels.npy")).mean()
    assert sample_accuracy > 0.5, sample_accuracy  # a trained model (measured 14 of 16; chance is 0.1)


def test_try_next_commands_name_a_dcn_deploy_the_shell_can_run(tmp_path, monkeypatch):
    # ./dev demo runs .venv/bin/dcn-deploy without activating .venv: a bare "dcn-deploy" would not be found
    import sys
    from pathlib import Path

    from dcn_deploy.demo import cli_command

    monkeypatch.setenv("PATH", str(tmp_path))  # nothing called dcn-deploy on PATH
    beside_python = Path(sys.executable).parent / "dcn-deploy"
    if not beside_python.exists():
        pytest.skip(f"no dcn-deploy script beside {sys.executable} (package not installed with its scripts)")
    monkeypatch.chdir(beside_python.parent.parent.parent)  # e.g. the repository holding .venv
    command = cli_command()
    assert Path(command).resolve() == beside_python.resolve() and not Path(command).is_absolute()
    monkeypatch.chdir(tmp_path)  # outside: the absolute path
    assert Path(cli_command()) == beside_python
    monkeypatch.setenv("PATH", str(beside_python.parent))
    assert cli_command() == "dcn-deploy"
