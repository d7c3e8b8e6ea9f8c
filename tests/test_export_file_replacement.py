"""An export over an existing file: the earlier file survives a failed export or verification (the new one is
kept beside it as ``<stem>.failed.onnx``, for inspection), is replaced by one that verifies, and no second name
is left behind either way."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from dcn_deploy.onnx.export import NoDeformableLayerError, VerificationError, export  # noqa: E402
from dcn_deploy.ops.modules import ModulatedDeformConv2dPack  # noqa: E402


class _Net(torch.nn.Module):
    def __init__(self, scale: float = 1.0):
        super().__init__()
        self.dcn = ModulatedDeformConv2dPack(3, 4, 3, padding=1)
        self.scale = scale

    def forward(self, x):
        return self.dcn(x) * self.scale


def _model(scale: float = 1.0) -> torch.nn.Module:
    torch.manual_seed(0)
    return _Net(scale).eval()


EXAMPLE = (torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(1)),)


def _folder(tmp_path):
    return sorted(p.name for p in tmp_path.iterdir())


def test_a_failed_verification_keeps_the_earlier_file_and_the_new_one_beside_it(tmp_path):
    path = tmp_path / "model.onnx"
    export(_model(), EXAMPLE, path)
    earlier = path.read_bytes()
    with pytest.raises(VerificationError) as failure:  # PyTorch's own output is NaN: nothing can verify
        export(_model(float("nan")), EXAMPLE, path)
    failed = tmp_path / "model.failed.onnx"
    assert path.read_bytes() == earlier
    assert failed.is_file() and failed.read_bytes() != earlier
    assert (f"The new file was kept for inspection as {failed} (dcn-deploy inspect {failed}); {path}, which was "
            "there before, is unchanged") in str(failure.value)
    assert _folder(tmp_path) == ["model.failed.onnx", "model.onnx"]  # no backup name left
    # the report (the CLI prints it before the error) says where the new file went, not "wrote model.onnx"
    report = failure.value.report
    assert report.kept_as == failed and report.to_dict()["kept_as"] == str(failed)
    assert str(report).splitlines()[0].startswith(
        f"wrote {failed} (failed verification: {path}, which was there before, is unchanged) (ONNX opset")


def test_a_verified_export_replaces_the_earlier_file(tmp_path):
    path = tmp_path / "model.onnx"
    export(_model(float("nan")), EXAMPLE, path, verify=False)
    earlier = path.read_bytes()
    export(_model(), EXAMPLE, path)
    assert path.read_bytes() != earlier
    assert _folder(tmp_path) == ["model.onnx"]


def test_an_export_that_fails_before_writing_leaves_the_earlier_file_alone(tmp_path):
    path = tmp_path / "model.onnx"
    export(_model(), EXAMPLE, path)
    earlier = path.read_bytes()
    with pytest.raises(NoDeformableLayerError):
        export(torch.nn.Conv2d(3, 4, 3).eval(), EXAMPLE, path)
    assert path.read_bytes() == earlier
    assert _folder(tmp_path) == ["model.onnx"]


def test_without_an_earlier_file_a_failed_one_stays_at_the_path(tmp_path):
    path = tmp_path / "model.onnx"
    with pytest.raises(VerificationError, match=f"The file {path} was kept for inspection"):
        export(_model(float("nan")), EXAMPLE, path)
    assert _folder(tmp_path) == ["model.onnx"]


def _interrupt_the_verification(monkeypatch, disguised: bool):
    """Ctrl-C as the verification starts: a KeyboardInterrupt, or (``disguised``) the ExportError that a Ctrl-C
    during ``import onnxruntime`` became (ImportError "initialization failed" raised from the interrupt)."""
    import dcn_deploy.onnx.export as export_module
    from dcn_deploy.onnx.export_report import ExportError

    def interrupted(report, *args, **kwargs):
        assert report.path.is_file()  # the new file is at the path, not yet verified
        if not disguised:
            raise KeyboardInterrupt
        try:
            try:
                raise KeyboardInterrupt
            except KeyboardInterrupt as interrupt:
                raise ImportError("initialization failed") from interrupt
        except ImportError as exc:
            raise ExportError(f"ONNX Runtime cannot load {report.path}: initialization failed") from exc

    monkeypatch.setattr(export_module, "verify_export", interrupted)


@pytest.mark.parametrize("disguised", [False, True])
def test_ctrl_c_during_the_verification_puts_the_earlier_file_back_and_keeps_no_failed_copy(tmp_path, monkeypatch,
                                                                                             disguised):
    path = tmp_path / "model.onnx"
    export(_model(), EXAMPLE, path)
    earlier = path.read_bytes()
    _interrupt_the_verification(monkeypatch, disguised)
    with pytest.raises(KeyboardInterrupt):
        export(_model(2.0), EXAMPLE, path)
    assert path.read_bytes() == earlier
    assert _folder(tmp_path) == ["model.onnx"]  # no model.failed.onnx: the new file did not fail, it was not checked


@pytest.mark.parametrize("disguised", [False, True])
def test_ctrl_c_during_the_verification_leaves_no_unverified_file(tmp_path, monkeypatch, disguised):
    _interrupt_the_verification(monkeypatch, disguised)
    with pytest.raises(KeyboardInterrupt):
        export(_model(), EXAMPLE, tmp_path / "model.onnx")
    assert _folder(tmp_path) == []
