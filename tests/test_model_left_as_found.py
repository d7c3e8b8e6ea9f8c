"""The model is left as the user gave it: the torch runner puts each module's train/eval mode and the model's device
back after a run, and export runs a training-mode model in eval mode (as torch.onnx.export does), then puts its
modes back."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from dcn_deploy.backends.torch_runner import TorchRunner, metas_from_examples
from dcn_deploy.onnx.export import export
from dcn_deploy.ops import DeformConv2dPack

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _net() -> torch.nn.Sequential:
    return torch.nn.Sequential(DeformConv2dPack(3, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.Dropout(0.5))


# ---- TorchRunner restores train/eval mode and device ------------------------------------------------------------

def test_torch_runner_restores_each_modules_mode():
    net = _net().train()
    net[1].eval()  # a frozen BatchNorm, as detectors train: must stay frozen, not be switched by net.train()
    x = torch.randn(2, 3, 8, 8)
    with TorchRunner(net, metas_from_examples(["x"], [x])) as runner:
        assert not any(m.training for m in net.modules())
        first, second = runner.infer({"x": x.numpy()}), runner.infer({"x": x.numpy()})
        np.testing.assert_array_equal(first["output_0"], second["output_0"])  # no dropout while it runs
    assert net.training and net[0].training and net[2].training and not net[1].training


def test_torch_runner_channels_last_runs_that_layout_and_puts_the_weights_back():
    net = _net().eval()
    net[0].conv_offset.weight.data = net[0].conv_offset.weight.data.contiguous(memory_format=torch.channels_last)
    x = torch.randn(2, 3, 8, 8)
    seen = []
    net[0].register_forward_pre_hook(lambda _m, args: seen.append(args[0].is_contiguous(
        memory_format=torch.channels_last)))
    with TorchRunner(net, metas_from_examples(["x"], [x])) as runner:
        want = runner.infer({"x": x.numpy()})["output_0"]
    with TorchRunner(net, metas_from_examples(["x"], [x]), channels_last=True) as runner:
        assert net[0].weight.is_contiguous(memory_format=torch.channels_last)
        got = runner.infer({"x": x.numpy()})["output_0"]
    assert seen == [False, True]  # the input laid out channels-last for the model
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    # put back: the weight it laid out is NCHW again, the one the user had made channels-last stays so
    assert net[0].weight.is_contiguous() and not net[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert net[0].conv_offset.weight.is_contiguous(memory_format=torch.channels_last)


def test_torch_runner_on_cuda_says_cudnn_may_round_float32_to_tf32(monkeypatch):
    """Asked without running anything (no GPU needed): torch lets cuDNN's float32 convolutions use TF32 by default,
    so a float32 model on CUDA computes in TF32 unless the user turned it off; on the CPU, or in float64, never."""
    net = _net().eval()
    x = torch.randn(1, 3, 6, 6)
    on_cuda = TorchRunner(net, metas_from_examples(["x"], [x]), device="cuda")
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", True)
    assert on_cuda.compute_dtype() == "tf32"
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    assert not torch.backends.cuda.matmul.allow_tf32  # torch's default for its own products
    assert on_cuda.compute_dtype() is None
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", True)
    assert TorchRunner(net, metas_from_examples(["x"], [x])).compute_dtype() is None  # the CPU
    assert TorchRunner(_net().double(), metas_from_examples(["x"], [x.double()]), device="cuda").compute_dtype() is None


class _MoveRecorder(torch.nn.Sequential):
    """Records the devices it is asked to move to, and stays where it is (no second device on a CPU machine)."""

    def __init__(self, *layers):
        super().__init__(*layers)
        self.moves = []

    def to(self, device):
        self.moves.append(torch.device(device))
        return self


def test_torch_runner_moves_the_model_back_to_its_device():
    net = _MoveRecorder(DeformConv2dPack(3, 4, 3, padding=1))
    x = torch.randn(1, 3, 6, 6)
    runner = TorchRunner(net, metas_from_examples(["x"], [x]))
    runner.device = torch.device("meta")  # another device than the parameters' (cpu), without a GPU
    with runner:
        assert net.moves == [torch.device("meta")]
    assert net.moves == [torch.device("meta"), torch.device("cpu")]
    net.moves.clear()
    with TorchRunner(net, metas_from_examples(["x"], [x])):  # already on the runner's device: no move back
        pass
    assert net.moves == [torch.device("cpu")]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (PyTorch has none here)")
def test_torch_runner_moves_the_model_back_from_cuda():
    net = _net().eval()
    x = torch.randn(1, 3, 6, 6)
    with TorchRunner(net, metas_from_examples(["x"], [x]), device="cuda") as runner:
        assert next(net.parameters()).is_cuda
        runner.infer({"x": x.numpy()})
    assert all(p.device.type == "cpu" for p in net.parameters())


# ---- a model in training mode is exported and verified in eval mode, then put back ---------------------------------

def test_export_runs_a_training_mode_model_in_eval_mode_and_puts_it_back(tmp_path):
    """Without eval mode the file would hold training-mode dropout and BatchNorm, and verification would fail on
    dropout's randomness; torch.onnx.export's own default is to export in eval mode."""
    net = _net().train()
    net[1].eval()  # a BatchNorm the user froze stays frozen
    before = {k: v.clone() for k, v in net.state_dict().items()}
    report = export(net, (torch.randn(2, 3, 8, 8),), tmp_path / "m.onnx")
    assert report.verified
    assert any("Sequential: it was in training mode; exported and verified in eval mode" in w for w in report.warnings)
    assert net.training and net[0].training and not net[1].training and net[2].training
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())  # BatchNorm statistics untouched
    net.eval()[2].train()  # one submodule left in training mode is named
    report = export(net, (torch.randn(2, 3, 8, 8),), tmp_path / "m2.onnx")
    assert any("its submodule '2' was in training mode" in w for w in report.warnings)
    assert net[2].training and not net.training


def test_a_programs_module_is_not_taken_for_training_mode(tmp_path):
    # torch.export's module() reports training=True and refuses eval(): its graph was fixed when it was exported
    x = torch.randn(1, 3, 8, 8)
    program = torch.export.export(_net().eval(), (x,))
    assert program.module().training
    report = export(program, (x,), tmp_path / "p.onnx")
    assert report.verified and not any("training mode" in w for w in report.warnings)
