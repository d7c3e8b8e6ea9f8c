"""A Ctrl-C that arrives while a C extension initialises (``import onnxruntime`` at a command's first model run,
``import tensorrt``) fails that import with ``ImportError: initialization failed`` raised from the
KeyboardInterrupt. It must still read as an interrupt: exit 130 and ``error: interrupted``, not "ONNX Runtime
cannot load the file" (exit 1, seen on `dcn-deploy demo` interrupted as its export's verification started) nor
"TensorRT is not installed"."""
from __future__ import annotations

import sys

import pytest

from cli_helpers import cli_runner, error_lines
from dcn_deploy.cli import main
from dcn_deploy.commands import EXIT_INTERRUPTED
from dcn_deploy.interrupts import interrupt_in, reraise_interrupt


def _import_interrupted(name: str = "onnxruntime") -> ImportError:
    """The error a Ctrl-C during a C extension's initialisation leaves: an ImportError raised from it."""
    try:
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt as interrupt:
            raise ImportError("initialization failed", name=name) from interrupt
    except ImportError as exc:
        return exc


def test_the_interrupt_is_found_behind_wrapping_errors_and_only_there():
    disguised = _import_interrupted()
    try:
        raise RuntimeError("ONNX Runtime cannot load model.onnx: initialization failed") from disguised
    except RuntimeError as exc:
        wrapped = exc
    assert isinstance(interrupt_in(wrapped), KeyboardInterrupt)
    assert interrupt_in(KeyboardInterrupt()) is not None
    assert interrupt_in(ImportError("No module named 'tensorrt'")) is None
    assert interrupt_in(None) is None
    with pytest.raises(KeyboardInterrupt):
        reraise_interrupt(wrapped)
    reraise_interrupt(ValueError("not an interrupt"))  # returns


def test_the_cli_reports_a_disguised_ctrl_c_as_an_interrupt(monkeypatch, tmp_path):
    import dcn_deploy.onnx.inspect as inspect_module

    def interrupted(*args, **kwargs):
        raise RuntimeError("ONNX Runtime cannot load model.onnx: initialization failed") from _import_interrupted()

    monkeypatch.setattr(inspect_module, "inspect_model", interrupted)
    model = tmp_path / "model.onnx"
    model.write_bytes(b"")
    result = cli_runner().invoke(main, ["inspect", str(model)])
    assert result.exit_code == EXIT_INTERRUPTED, (result.exit_code, result.stderr)
    assert [line.split(";")[0] for line in error_lines(result)] == ["error: interrupted (Ctrl-C)"], result.stderr


def test_a_ctrl_c_while_tensorrt_loads_is_not_a_missing_tensorrt(monkeypatch):
    from dcn_deploy.backends.factory import tensorrt_missing_reason
    from dcn_deploy.backends.trt_errors import import_tensorrt

    class InterruptedLoad:  # a finder that fails `import tensorrt` as a Ctrl-C during its initialisation does
        @staticmethod
        def find_spec(name, path=None, target=None):
            if name == "tensorrt":
                raise _import_interrupted("tensorrt")
            return None

    monkeypatch.delitem(sys.modules, "tensorrt", raising=False)
    monkeypatch.setattr(sys, "meta_path", [InterruptedLoad(), *sys.meta_path])
    with pytest.raises(KeyboardInterrupt):
        tensorrt_missing_reason()
    with pytest.raises(KeyboardInterrupt):
        import_tensorrt()
