"""Which compiled forward the ops run: the host library's on the CPU, the CUDA kernels on a GPU, or neither (the
op's torch composite: :func:`dcn_deploy.ops.deform_conv._forward_composite`, and the RoI pooling ops' composites in
:mod:`dcn_deploy.ops.roi_pool`).

- CPU: the host library's forward, for float32/float64 tensors (half types are upcast before; the RoI pooling
  ops keep float64 on their composites). Why: the
  composite's sampling (a weighted ``embedding_bag`` over freshly allocated columns) costs a third of a dense
  layer's time, and for grouped and depth-wise layers its many small products cost 3-4x ONNX Runtime's kernel;
  the RoI pooling composites' gathers cost 3-18x the compiled forwards (benchmarks/RESULTS.md).
  ``DCN_DEPLOY_NATIVE_CPU=0`` (or false, off, no) turns it off.
- CUDA: the kernels (algorithm ``auto``), every dtype as it is: float16/bfloat16 are read and written in the half
  type and summed in float32 (the GEMM path's sampled columns are rounded to the half type, as its product reads
  them). Why: the composite builds a float32 column buffer of C*kH*kW*oH*oW values per image. A device the
  library cannot run on (built without that GPU's architecture, say) is found by one tiny forward the first time
  the device is used, and then keeps the composite, with a warning. The RoI pooling ops run their kernels the same
  way (float32 and the half types as they are, float32 sums; float64 on the composite).
  A channels-last input (``torch.channels_last``) of a dense layer (the GEMM path, without its two transposes) or
  of a depth-wise one or one of groups of 2 to 8 channels (the channels-last direct kernel, without its transpose;
  groups of 16 are dense, on the GEMM path) is read, and the output written, where it is; other layers run on
  NCHW copies. On every path the output follows the input's memory format, as torch's convolutions do.
  ``DCN_DEPLOY_NATIVE_CUDA=0`` (or false, off, no) turns it off.
- :func:`composite_forward`: a block in which this thread's forwards run the composite on every device, as an
  independent reference for tests and benchmarks of the compiled code.

A library is used only when it is built (never built here), loads, has the entries and this package's ABI
version (a stale build is left alone).
"""
from __future__ import annotations

import contextlib
import contextvars
import functools
import os
import warnings
from typing import Dict, Iterator, Optional, Sequence

import torch

__all__ = ["NATIVE_CPU_ENV", "NATIVE_CUDA_ENV", "composite_forward", "cpu_library_for", "cuda_library_for",
           "forward_cpu", "forward_cuda"]

# Set to 0 to keep every CPU (CUDA) forward on the torch composite, e.g. to compare the two.
NATIVE_CPU_ENV = "DCN_DEPLOY_NATIVE_CPU"
NATIVE_CUDA_ENV = "DCN_DEPLOY_NATIVE_CUDA"
_CPU_ENTRIES = ("dcn_deform_conv2d_forward_cpu", "dcn_deform_conv2d_columns_cpu", "dcn_channels_last_cpu",
                "dcn_prefault_cpu", "dcn_deform_roi_pool_forward_cpu", "dcn_deform_psroi_pool_forward_cpu")
_CUDA_ENTRIES = ("dcn_deform_conv2d_forward_cuda", "dcn_cuda_available", "dcn_deform_roi_pool_forward_cuda",
                 "dcn_deform_psroi_pool_forward_cuda")

# A ContextVar, not the environment: a block in one thread must not switch another thread's forwards.
_COMPOSITE_ONLY: contextvars.ContextVar[bool] = contextvars.ContextVar("dcn_deploy_composite_only", default=False)
_CUDA_DEVICE_RUNS: Dict[int, bool] = {}  # device index -> whether the kernels ran there (probed once)


@contextlib.contextmanager
def composite_forward() -> Iterator[None]:
    """Inside this block the op's forward runs its torch composite on every device (neither the host library nor
    the CUDA kernels), in this thread only: a reference independent of the compiled code checked against it."""
    token = _COMPOSITE_ONLY.set(True)
    try:
        yield
    finally:
        _COMPOSITE_ONLY.reset(token)


_OFF = ("0", "false", "off", "no")
_ON = ("", "1", "true", "on", "yes")


def _switched_off(env_name: str) -> bool:
    """Whether the composite is asked for: in :func:`composite_forward`, or ``env_name`` set to 0, false, off or no
    (any case). Another value keeps the library on and is named in a warning, once."""
    if _COMPOSITE_ONLY.get():
        return True
    value = os.environ.get(env_name, "1").strip().lower()
    if value not in _OFF and value not in _ON:
        _warn_unknown_switch(env_name, os.environ[env_name])
    return value in _OFF


@functools.lru_cache(maxsize=None)
def _warn_unknown_switch(env_name: str, value: str) -> None:
    warnings.warn(f"{env_name}={value!r} is neither on (1, true, on, yes) nor off (0, false, off, no); the compiled "
                  f"forward stays on. Set {env_name}=0 to run the torch composite", stacklevel=4)


def _load(kind: str, entries: Sequence[str]):
    """The built library of ``kind`` if it loads, has ``entries`` and this package's ABI version, else None; a
    library that is built but unusable is named in a warning (once: the callers cache the answer)."""
    from ..plugin.library import find_library
    from ..plugin.native import ABI_VERSION, StaleLibraryError, load_library

    path = find_library(kind)
    if path is None:
        return None
    try:
        lib = load_library(kind, path)
    except StaleLibraryError as exc:
        return _unusable(path, f"it is a stale build (C ABI version {exc.version}, this package speaks {ABI_VERSION})")
    except OSError as exc:  # a foreign-architecture build, or no CUDA driver for the kernels
        return _unusable(path, f"it does not load: {exc}")
    missing = [entry for entry in entries if not lib.has(entry)]
    if missing:
        return _unusable(path, f"it is a stale build (entries missing: {', '.join(missing)})")
    return lib


def _unusable(path, why: str) -> None:
    warnings.warn(f"dcn_deploy: {path} is not used ({why}); the ops run their torch composites instead. Rebuild "
                  "it: dcn-deploy plugin build", RuntimeWarning, stacklevel=2)
    return None


@functools.lru_cache(maxsize=1)
def _cpu_library():
    return _load("host", _CPU_ENTRIES)


@functools.lru_cache(maxsize=1)
def _cuda_library():
    lib = _load("kernels", _CUDA_ENTRIES)
    return lib if lib is not None and lib.lib.dcn_cuda_available() == 1 else None


def cpu_library_for(input: torch.Tensor):
    """The host library to run this CPU forward with (float32/float64 ``input``), or None for the composite."""
    if input.device.type != "cpu" or input.dtype not in (torch.float32, torch.float64):
        return None
    return None if _switched_off(NATIVE_CPU_ENV) else _cpu_library()


def cuda_library_for(input: torch.Tensor):
    """The CUDA kernels library to run this forward with, or None for the composite: not a CUDA tensor, switched
    off, not built, or not runnable on this device (probed on the device's first use, outside graph capture)."""
    if input.device.type != "cuda" or _switched_off(NATIVE_CUDA_ENV):
        return None
    lib = _cuda_library()
    if lib is None:
        return None
    index = input.device.index if input.device.index is not None else torch.cuda.current_device()
    if index not in _CUDA_DEVICE_RUNS:
        with torch.cuda.device(index):
            if torch.cuda.is_current_stream_capturing():  # a probe cannot synchronise inside a capture
                return None
            _probe(lib, torch.device("cuda", index))
    return lib if _CUDA_DEVICE_RUNS[index] else None


def _probe(lib, device: torch.device) -> None:
    """One tiny forward on ``device`` (a 1x1 kernel of weight 1 at zero offsets copies its input) records whether
    the kernels run there. A CUDA error of the library's own launch (a build without this GPU's architecture
    fails with "no kernel image") or a wrong result means they do not: recorded, with a warning. Any other error
    (a bad setting, out of memory, an earlier error of the user's own kernels) propagates and nothing is
    recorded, so the next forward probes again."""
    from ..plugin.native import DCN_ERROR_CUDA, NativeError, deform_conv2d_cuda

    x = torch.arange(4.0, device=device).view(1, 1, 2, 2)
    try:
        out = deform_conv2d_cuda(x, torch.zeros(1, 2, 2, 2, device=device), torch.ones(1, 1, 1, 1, device=device),
                                 library=lib)
        torch.cuda.current_stream(device).synchronize()
        problem = None if torch.equal(out, x) else f"a test forward computed {out.flatten().tolist()}, not 0..3"
    except NativeError as exc:
        if exc.code != DCN_ERROR_CUDA:
            raise
        problem = str(exc)
    _CUDA_DEVICE_RUNS[device.index] = problem is None  # recorded before warning: -W error must not re-probe
    if problem is not None:
        major, minor = torch.cuda.get_device_capability(device)
        warnings.warn(f"dcn_deploy: the CUDA kernels library {lib.path} does not run on "
                      f"{torch.cuda.get_device_name(device)} ({problem}); the ops run their torch composites "
                      f"there. Rebuild it for this GPU: dcn-deploy plugin build --cuda-archs {major}{minor}",
                      RuntimeWarning, stacklevel=2)


def forward_cpu(library, input, offset, weight, bias, mask, stride, padding, dilation) -> torch.Tensor:
    """The host library's CPU forward (the composite's function), on torch's intra-op thread count."""
    from ..plugin.native import deform_conv2d_cpu

    return deform_conv2d_cpu(input, offset, weight, bias, stride=tuple(stride), padding=tuple(padding),
                             dilation=tuple(dilation), mask=mask, library=library)


def forward_cuda(library, input, offset, weight, bias, mask, stride, padding, dilation,
                 channels_last: bool = False) -> Optional[torch.Tensor]:
    """The CUDA kernels' forward (the composite's function) on torch's current stream; None when the kernels
    cannot serve this request (the C ABI's "unsupported": the composite then runs it). Other errors propagate.
    Float32 products run on TF32 tensor cores where ``torch.backends.cuda.matmul.allow_tf32`` allows torch's own
    (``torch.set_float32_matmul_precision("high")``; off by default), as torchvision's deform_conv2d products do.
    ``channels_last``: the input is read and the output written channels-last (dense layers' GEMM path, and the
    direct kernel of depth-wise layers and small groups; no transposes); a layer neither takes runs on NCHW copies
    instead, its output
    NCHW."""
    from ..plugin.native import DCN_ERROR_UNSUPPORTED, NativeError, deform_conv2d_cuda

    run = functools.partial(deform_conv2d_cuda, input, offset, weight, bias, stride=tuple(stride),
                            padding=tuple(padding), dilation=tuple(dilation), mask=mask, library=library,
                            allow_tf32=torch.backends.cuda.matmul.allow_tf32)
    try:
        if channels_last:
            try:
                return run(channels_last=True)
            except NativeError as exc:
                if exc.code != DCN_ERROR_UNSUPPORTED:
                    raise
        return run()
    except NativeError as exc:
        if exc.code != DCN_ERROR_UNSUPPORTED:
            raise
        return None
