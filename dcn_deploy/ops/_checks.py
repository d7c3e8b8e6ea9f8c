"""Argument checks shared by the PyTorch ops: tensor types, one dtype and one device for all tensors; the
autocast rule; the autodiff transforms the ops refuse."""
from __future__ import annotations

import contextlib
from typing import Callable, Mapping, Optional

import torch
from torch.autograd import forward_ad

SUPPORTED_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
HALF_TYPES = (torch.float16, torch.bfloat16)


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """Half types are computed in float32; float32 and float64 in themselves."""
    return torch.float32 if dtype in HALF_TYPES else dtype


def refuse_double_backward(op: str) -> None:
    """Raise when a backward runs under grad mode (create_graph=True: double backward, gradient penalties). The ops'
    backwards re-run their composite on detached copies, so a graph through the gradients would silently drop the
    op's second-order terms."""
    if torch.is_grad_enabled():
        raise RuntimeError(f"dcn_deploy.{op} supports first-order gradients only: its backward cannot be "
                           "differentiated (create_graph=True, double backward, gradient penalties)")


def autocast_to_float32(named: Mapping[str, Optional[torch.Tensor]]):
    """Under ``torch.autocast`` for the first tensor's device: every float32/float16/bfloat16 tensor of ``named`` as
    float32, and the dtype to return the result in (the first tensor's); otherwise ``named`` and None.

    Why: under autocast the convolution before a deformable layer hands it a half-precision input (and
    ``conv_offset`` half-precision offsets) while the layer's own weight stays float32. torchvision's op computes
    such calls in float32 and returns the input's dtype (mmcv's casts to the input's type); without this rule the
    mixed dtypes were refused. float64 tensors are left as they are, as autocast leaves them.
    """
    (_, first), *_ = named.items()
    if not isinstance(first, torch.Tensor):
        return named, None
    if not autocast_enabled(first.device.type):
        return named, None
    cast = {name: t.float() if isinstance(t, torch.Tensor) and t.dtype in HALF_TYPES else t
            for name, t in named.items()}
    return cast, first.dtype


def autocast_enabled(*device_types: str) -> bool:
    """Whether torch.autocast is on in this thread for any of ``device_types`` (False for a device type autocast
    does not know, such as meta)."""
    for device_type in device_types:
        try:
            if torch.is_autocast_enabled(device_type):
                return True
        except RuntimeError:
            continue
    return False


def check_tensors(named: Mapping[str, Optional[torch.Tensor]]) -> None:
    """Every value is a tensor (or None) of the first one's dtype and device; that dtype is a supported float.

    The first entry is the reference (``input``); errors name the offending argument and the fix.
    """
    (first_name, reference), *_ = named.items()
    if not isinstance(reference, torch.Tensor):
        raise TypeError(f"{first_name} must be a torch.Tensor, got {type(reference).__name__}")
    if reference.dtype not in SUPPORTED_DTYPES:
        raise TypeError(f"{first_name} has dtype {reference.dtype}; supported: float32, float64, float16, bfloat16")
    for name, t in named.items():
        if t is None:
            continue
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor or None, got {type(t).__name__}")
        if t.dtype != reference.dtype:
            raise TypeError(f"{name} has dtype {t.dtype} but {first_name} has {reference.dtype}; "
                            f"cast it with {name}.to({first_name}.dtype)")
        if t.device != reference.device:
            raise ValueError(f"{name} is on {t.device} but {first_name} is on {reference.device}; "
                             "move all tensors to one device")


def channels_last_only(t: torch.Tensor) -> bool:
    """Whether a 4-D tensor is channels-last in memory and not also plainly contiguous (as when C or H*W is 1): the
    op then gives a channels-last output (as torch's convolutions), and its compiled forwards read the input where
    it is."""
    return t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous()


def has_concrete_shapes(*tensors: Optional[torch.Tensor]) -> bool:
    """True when no shape is symbolic (under torch.export/compile tracing shapes can be SymInts, which the
    pure-Python shape checks would specialise)."""
    return all(t is None or all(type(s) is int for s in t.shape) for t in tensors)


def register_float32_autocast(op) -> None:
    """Under autocast the custom op ``op`` takes its half-type inputs as float32 and runs with autocast off, on every
    device type this torch autocasts. Why: :func:`autocast_to_float32` casts the public functions' arguments, but
    autocast stayed on inside the op, so the products of the host library's path and of the composites ran in the
    half type (a float32 call under CPU autocast came back float32 with bfloat16's error, 3e-3 relative); and a
    program that calls ``torch.ops.dcn_deploy.*`` directly (a loaded torch.export program) gets the same rule."""
    if not hasattr(op, "register_autocast"):  # torch < 2.7: the public functions' rule only (call_in_float32)
        return
    for device_type in ("cpu", "cuda"):
        if _autocast_available(device_type):
            op.register_autocast(device_type, torch.float32)


def _autocast_available(device_type: str) -> bool:
    check = getattr(torch.amp, "is_autocast_available", None)  # torch >= 2.4's name
    return device_type in ("cpu", "cuda") if check is None else bool(check(device_type))


def autocast_off(device_type: str):
    """A block with autocast off on ``device_type`` (the backward passes recompute their composites in float32 also
    when ``backward()`` is called inside ``torch.autocast``, as torch's own ops do)."""
    if _autocast_available(device_type):
        return torch.autocast(device_type, enabled=False)
    return contextlib.nullcontext()


def checked_arguments(op: str, named: Mapping[str, Optional[torch.Tensor]]):
    """The public functions' rule for their tensor arguments ``named`` (the input first), in order: under autocast
    the half types as float32 (:func:`autocast_to_float32`), one dtype and one device (:func:`check_tensors`), no
    unsupported autodiff transform (:func:`refuse_function_transforms`). Returns (the tensors, in ``named``'s order;
    the dtype to return the result in, None outside autocast), for :func:`call_in_float32`."""
    named, result_dtype = autocast_to_float32(named)
    check_tensors(named)
    refuse_function_transforms(op, *named.values())
    return tuple(named.values()), result_dtype


def call_in_float32(call: Callable[[], torch.Tensor], input: torch.Tensor, result_dtype: Optional[torch.dtype]):
    """``call()`` (the custom op on :func:`checked_arguments`' tensors): as it is outside autocast (an export's graph
    gets no autocast region); under autocast with autocast off, what :func:`register_float32_autocast` registers on
    the op, done here too where torch cannot register it (< 2.7), else the op's products ran in the half type; and
    its result in ``result_dtype``."""
    if result_dtype is None:
        return call()
    with autocast_off(input.device.type):
        return call().to(result_dtype)


@contextlib.contextmanager
def autograd_inside_kernel():
    """Autograd back on inside a custom op's kernel, which torch runs with the autograd dispatch keys excluded
    (and perhaps under inference mode): the RoI ops' backward ops recompute their composites' gradients there with
    ``torch.autograd.grad``. (``torch.func.vjp`` would run there too, but not under a torch dispatch mode such as
    FlopCounterMode or opcheck's: 'Cannot access storage of TensorWrapper'.)"""
    names = ("AutogradFunctionality", "AutogradOther", "AutogradNestedTensor", "ADInplaceOrView")
    keys = [getattr(torch._C.DispatchKey, name) for name in names if hasattr(torch._C.DispatchKey, name)]
    with torch.inference_mode(False):
        excluded = [torch._C._dispatch_tls_is_dispatch_key_excluded(key) for key in keys]
        for key in keys:
            torch._C._dispatch_tls_set_dispatch_key_excluded(key, False)
        try:
            yield
        finally:
            for key, was in zip(keys, excluded):
                torch._C._dispatch_tls_set_dispatch_key_excluded(key, was)


def _below_vmap(t: torch.Tensor) -> torch.Tensor:
    """The tensor a ``torch.func.vmap`` batched tensor wraps (itself for any other tensor): a transform below vmap
    (vmap inside jvp or grad) shows only there."""
    functorch = getattr(torch._C, "_functorch", None)
    if functorch is None or not hasattr(functorch, "is_batchedtensor"):
        return t
    while functorch.is_batchedtensor(t):
        t = functorch.get_unwrapped(t)
    return t


def refuse_function_transforms(op: str, *tensors: Optional[torch.Tensor]) -> None:
    """Raise when a tensor argument is differentiated by a transform the ops do not support.

    - Forward mode (``torch.func.jvp``/``jacfwd``/``hessian``, ``torch.autograd.forward_ad``): the ops have no
      forward-mode formula, and torch's custom-op machinery returns their output without a tangent, i.e. a
      derivative of zero, silently.
    - ``torch.func.grad``/``vjp``/``jacrev`` (and per-sample gradients, vmap over grad): torch refuses those with an
      error about ``autograd.Function.setup_context`` that names neither the op nor the fix.

    ``torch.func.vmap`` and ``functional_call`` work, as do ``backward()`` and ``torch.autograd.grad`` (also of a
    vmapped call). Nothing is checked while torch.compile or torch.export traces.
    """
    if torch.compiler.is_compiling():
        return
    # the common case in 0.2 us instead of 3: no forward-mode level entered and no torch.func transform running
    transforms_active = getattr(torch._C, "_are_functorch_transforms_active", lambda: True)
    if getattr(forward_ad, "_current_level", 0) < 0 and not transforms_active():
        return
    functorch = getattr(torch._C, "_functorch", None)
    for t in tensors:
        if not isinstance(t, torch.Tensor):
            continue
        t = _below_vmap(t)
        if forward_ad.unpack_dual(t).tangent is not None:
            raise RuntimeError(
                f"dcn_deploy.{op} has no forward-mode derivative (torch.func.jvp, jacfwd, hessian, "
                "torch.autograd.forward_ad); its output would carry no tangent. Use reverse mode: loss.backward() "
                "or torch.autograd.grad")
        if functorch is not None and hasattr(functorch, "is_gradtrackingtensor") and \
                functorch.is_gradtrackingtensor(t) and t.requires_grad:
            raise RuntimeError(
                f"dcn_deploy.{op} does not support torch.func.grad, vjp, jacrev or per-sample gradients "
                "(vmap over grad); use loss.backward() or torch.autograd.grad (torch.func.vmap of the forward "
                "works)")


def refuse_torchscript(what: str):
    """A ``__prepare_scriptable__`` for ``what`` (a layer class or an op): ``torch.jit.script`` calls it first, so it
    raises one clear error instead of a TorchScript compiler error about this package's internals (its Python
    argument checks, keyword-only helpers and error messages are not TorchScript)."""
    def prepare_scriptable(*_):
        raise RuntimeError(f"dcn_deploy's {what} cannot be compiled with torch.jit.script (TorchScript); use "
                           "torch.jit.trace, torch.export.export or torch.compile instead, or dcn_deploy.export "
                           "for ONNX")
    return prepare_scriptable
