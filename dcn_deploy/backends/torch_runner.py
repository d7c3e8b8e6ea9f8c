"""The PyTorch eager runner: the reference every other backend is compared with.

:class:`TorchRunner` wraps an ``nn.Module`` whose ``forward`` takes the model's inputs positionally, in the
order of ``inputs`` (the ONNX file's input order when it verifies an exported model). Outputs (a tensor, a
tuple/list of tensors or a dict of tensors) are returned as numpy arrays named ``output_names`` (the ONNX
file's output names), or ``output_0``, ``output_1``, ... (dict keys for dict outputs) when none are given.

Loading a model from what a user has (``FILE.py:FACTORY``, a .pt2 program, a zoo name) is
``dcn_deploy.onnx.model_loading.load_model``'s job; :func:`as_module` turns its result into a module.
"""
from __future__ import annotations

from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np
import torch

from .base import Runner, RunnerError, TensorMeta

__all__ = ["TorchRunner", "as_module", "floating_dtypes", "metas_from_examples"]


def metas_from_examples(names: Sequence[str], examples: Sequence[torch.Tensor],
                        dynamic_batch: bool = False) -> tuple:
    """Input metadata from example tensors (``dynamic_batch`` marks dimension 0 as ``"batch"``)."""
    if len(names) != len(examples):
        raise ValueError(f"{len(names)} input names {list(names)} for {len(examples)} example inputs")
    metas = []
    for name, example in zip(names, examples):
        shape = tuple(int(d) for d in example.shape)
        if dynamic_batch and shape:
            shape = ("batch",) + shape[1:]
        metas.append(TensorMeta(name, np.dtype(str(example.dtype).replace("torch.", "")), shape))
    return tuple(metas)


def _to_torch(value: object, meta: TensorMeta, device: torch.device) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        # the same rule as for numpy arrays (and as the ONNX Runtime runner's): a tensor of another dtype would
        # fail deep in the model, or, in a model that casts its input, run where the exported file refuses it
        dtype = str(value.dtype).replace("torch.", "")
        if dtype != np.dtype(meta.dtype).name:
            raise RunnerError(f"torch: input {meta.name!r} has dtype {dtype}, the model expects {meta.dtype}")
        return value.to(device)
    array = np.ascontiguousarray(value)
    if array.dtype != meta.dtype:
        raise RunnerError(f"torch: input {meta.name!r} has dtype {array.dtype}, the model expects {meta.dtype}")
    return torch.from_numpy(array).to(device)


def _flatten_outputs(result: object, prefix: Optional[str] = None) -> List[tuple]:
    """(name or None, tensor) pairs from a tensor, a (nested) tuple/list or a dict of tensors.

    Dict entries are named by their keys (``key.0``, ``key.1`` for a sequence inside); top-level sequence items
    are unnamed (None), so the runner names them by position.
    """
    if isinstance(result, torch.Tensor):
        return [(prefix, result)]
    if isinstance(result, Mapping):
        pairs = []
        for key, value in result.items():
            pairs.extend(_flatten_outputs(value, str(key) if prefix is None else f"{prefix}.{key}"))
        return pairs
    if isinstance(result, (tuple, list)):
        pairs = []
        for index, value in enumerate(result):
            pairs.extend(_flatten_outputs(value, None if prefix is None else f"{prefix}.{index}"))
        return pairs
    raise RunnerError(f"torch: the model returned a {type(result).__name__}; a runner needs tensors "
                      "(a tensor, a tuple/list or a dict of tensors)")


class TorchRunner(Runner):
    """PyTorch eager inference under ``torch.inference_mode`` with the module in eval mode.

    While active, the module is in eval mode and on ``device``; deactivating puts back each submodule's
    train/eval mode and the device its parameters were on, so a model validated during training goes on training.

    Args:
        model: the module; ``forward(*inputs)`` in the order of ``inputs``.
        inputs: the inputs' metadata (names, dtypes, shapes with dynamic dims), e.g. from an ONNX runner or
            :func:`metas_from_examples`.
        output_names: names for the flattened outputs, in order (e.g. the ONNX file's outputs).
        device: ``"cpu"`` or ``"cuda"`` (inputs are moved there; outputs come back as numpy).
        threads: PyTorch's intra-op threads while active (``torch.set_num_threads``, process-wide: the previous
            count is put back on deactivation); None leaves torch's setting as it is.
        channels_last: run the module's 4-D weights and the 4-D inputs channels-last in memory
            (``torch.channels_last``: cuDNN's and our deformable convolutions' faster layout on a GPU); the weights
            that were not are put back on deactivation.
    """

    def __init__(self, model: torch.nn.Module, inputs: Sequence[TensorMeta],
                 output_names: Optional[Sequence[str]] = None, device: str = "cpu", name: str = "torch",
                 threads: Optional[int] = None, channels_last: bool = False) -> None:
        super().__init__()
        self.model = as_module(model)
        if isinstance(inputs, (str, bytes)) or not hasattr(inputs, "__iter__") \
                or not all(isinstance(m, TensorMeta) for m in inputs):
            raise TypeError(f"torch: inputs must be a list of TensorMeta (e.g. OrtRunner(path).activate()"
                            f".input_metadata(), or metas_from_examples(names, example_tensors)), got {inputs!r}")
        self._inputs = tuple(inputs)
        if isinstance(output_names, str):
            raise TypeError(f"torch: output_names must be a list of names, e.g. [{output_names!r}], got a string")
        self._output_names = None if output_names is None else list(output_names)
        try:
            self.device = torch.device(device)
        except (RuntimeError, TypeError) as exc:
            raise ValueError(f"torch: device must be 'cpu' or 'cuda' (or 'cuda:N'), got {device!r}") from exc
        self.name = name
        self._modes: List[tuple] = []  # (submodule, its training flag) before activate
        self._home: Optional[torch.device] = None  # the parameters' device before activate, when it differs
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
            raise ValueError(f"torch: threads must be an int >= 1 (or None to keep torch's setting), got {threads!r}")
        self.threads = threads
        self._threads_before: Optional[int] = None  # torch's thread count before activate, when threads is set
        self.channels_last = bool(channels_last)
        self._made_channels_last: List[torch.nn.Parameter] = []  # 4-D weights this runner laid out channels-last

    def input_metadata(self) -> tuple:
        return self._inputs

    def compute_dtype(self) -> Optional[str]:
        """``"tf32"`` for a float32 model on a CUDA device where torch lets cuDNN's convolutions (on by default) or
        cuBLAS's products round to TF32, so that a comparison allows TF32's error; else None (also where torch's
        settings cannot be read as one value)."""
        if self.device.type != "cuda" or "float32" not in floating_dtypes(self.model):
            return None
        try:
            tf32 = torch.backends.cudnn.allow_tf32 or torch.backends.cuda.matmul.allow_tf32
        except RuntimeError:  # set through both of torch's APIs: unreadable as one value
            return None
        return "tf32" if tf32 else None

    def _activate(self) -> None:
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise RunnerError(f"{self.name}: device 'cuda' was asked for but this PyTorch (torch {torch.__version__}, "
                              f"CUDA build {torch.version.cuda or 'none'}) has no usable CUDA device; use device "
                              "'cpu' (CLI: --runner torch), or a CUDA build of torch on a machine with a GPU")
        self._modes = [(module, module.training) for module in self.model.modules()]
        devices = {t.device for t in (*self.model.parameters(), *self.model.buffers())}
        # one device to go back to; a model spread over several stays on ``device``
        self._home = next(iter(devices)) if len(devices) == 1 and self.device not in devices else None
        _eval_mode(self.model).to(self.device)
        if self.channels_last:
            with torch.no_grad():
                for param in self.model.parameters():
                    if param.dim() == 4 and not param.is_contiguous(memory_format=torch.channels_last):
                        param.data = param.data.contiguous(memory_format=torch.channels_last)
                        self._made_channels_last.append(param)
        if self.threads is not None:
            self._threads_before = torch.get_num_threads()
            torch.set_num_threads(self.threads)

    def _deactivate(self) -> None:
        if self._threads_before is not None:
            torch.set_num_threads(self._threads_before)
            self._threads_before = None
        # the flags themselves, not model.train(): a user may keep some layers (e.g. frozen BatchNorm) in eval mode
        for module, training in self._modes:
            module.training = training
        with torch.no_grad():
            for param in self._made_channels_last:
                param.data = param.data.contiguous()
        if self._home is not None:
            self.model.to(self._home)
        self._modes, self._home, self._made_channels_last = [], None, []

    def _infer(self, feed: Mapping[str, object]) -> Dict[str, np.ndarray]:
        args = [_to_torch(feed[m.name], m, self.device) for m in self._inputs]
        if self.channels_last:
            args = [a.contiguous(memory_format=torch.channels_last) if a.dim() == 4 else a for a in args]
        try:
            with torch.inference_mode():
                result = self.model(*args)
        except (RuntimeError, ValueError, TypeError) as exc:
            shapes = ", ".join(f"{m.name}: {tuple(a.shape)}" for m, a in zip(self._inputs, args))
            raise RunnerError(f"torch: the model failed on inputs ({shapes}): {exc}") from exc
        pairs = _flatten_outputs(result)
        if self._output_names is not None and len(self._output_names) != len(pairs):
            raise RunnerError(f"torch: the model returned {len(pairs)} outputs but {len(self._output_names)} "
                              f"output names were given ({self._output_names}); is it the model the file came from?")
        outputs: Dict[str, np.ndarray] = {}
        for i, (key, tensor) in enumerate(pairs):
            if self._output_names is not None:
                name = self._output_names[i]
            else:
                name = key if key is not None else f"output_{i}"
            outputs[name] = tensor.detach().to("cpu").numpy()
        return outputs


def _eval_mode(model: torch.nn.Module) -> torch.nn.Module:
    # Modules unflattened from torch.export refuse train()/eval(); they are already in inference form.
    try:
        return model.eval()
    except (NotImplementedError, RuntimeError):
        return model


def as_module(model) -> torch.nn.Module:
    """An ``nn.Module`` from a module or a ``torch.export.ExportedProgram`` (its ``.module()``)."""
    if isinstance(model, torch.export.ExportedProgram):
        return model.module()
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"expected a torch.nn.Module or ExportedProgram, got {type(model).__name__}")
    return model


def floating_dtypes(model) -> set:
    """Names (``"float32"``, ``"float16"``, ...) of the dtypes of a module's or ``ExportedProgram``'s floating
    parameters and buffers; empty for a model without any."""
    if isinstance(model, torch.export.ExportedProgram):
        tensors = model.state_dict.values()  # an attribute here, not a method
    else:
        tensors = as_module(model).state_dict().values()
    return {str(t.dtype).replace("torch.", "") for t in tensors if t.is_floating_point()}
