"""ctypes binding of the deformable RoI pooling entries of the C ABI (plugins/deform_roi_pool/roi_pool_kernels.h).

:func:`deform_roi_pool_native` and :func:`deform_psroi_pool_native` take the arguments of
:func:`dcn_deploy.ops.roi_pool.deform_roi_pool` / :func:`~dcn_deploy.ops.roi_pool.deform_psroi_pool` and run one of
the library's forwards, chosen by ``entry``: ``host`` (the host build of the CUDA kernels' arithmetic, CPU
tensors of every dtype: what CI checks the kernels' indexing with), ``cpu`` (the fast CPU forward, float32/float64:
what the ops use on the CPU when the library is built) or ``cuda`` (the CUDA kernels, CUDA tensors of every dtype,
on torch's current stream). Not differentiable. Unlike the ops, the kernels pool a RoI whose batch index lies
outside [0, N) to 0 instead of raising.
"""
from __future__ import annotations

import ctypes
from typing import Optional, Sequence

__all__ = ["RoiPoolDesc", "PsroiPoolDesc", "ROI_ENTRIES", "deform_roi_pool_native", "deform_psroi_pool_native"]

# entry -> the device its tensors are on
ROI_ENTRIES = {"host": "cpu", "cpu": "cpu", "cuda": "cuda"}


class RoiPoolDesc(ctypes.Structure):
    """dcn_deform_roi_pool_desc."""

    _fields_ = [(name, ctypes.c_int32) for name in (
        "batch", "channels", "height", "width", "num_rois", "pooled_height", "pooled_width", "sampling_ratio")] + \
        [("spatial_scale", ctypes.c_float), ("gamma", ctypes.c_float)]


class PsroiPoolDesc(ctypes.Structure):
    """dcn_deform_psroi_pool_desc."""

    _fields_ = [(name, ctypes.c_int32) for name in (
        "batch", "channels", "height", "width", "num_rois", "output_dim", "group_size", "pooled_size", "part_size",
        "sample_per_part", "num_classes", "no_trans")] + \
        [("spatial_scale", ctypes.c_float), ("trans_std", ctypes.c_float)]


def declare_entries(lib: ctypes.CDLL) -> None:
    """Give the RoI pooling entries of a loaded library their argument types (pointers must not be truncated)."""
    pointers = [ctypes.c_void_p] * 4
    for op, desc in (("roi_pool", RoiPoolDesc), ("psroi_pool", PsroiPoolDesc)):
        for entry, extra in (("host", []), ("cpu", [ctypes.c_int32]), ("cuda", [ctypes.c_void_p])):
            fn = getattr(lib, f"dcn_deform_{op}_forward_{entry}", None)
            if fn is not None:
                fn.argtypes = [ctypes.POINTER(desc), ctypes.c_int32] + pointers + extra
                fn.restype = ctypes.c_int32


def deform_roi_pool_native(input, rois, offset, output_size, spatial_scale: float = 1.0, sampling_ratio: int = 0,
                           gamma: float = 0.1, *, entry: str = "cpu", num_threads: Optional[int] = None,
                           library=None):
    """DeformRoIPool by the library's ``entry`` forward (see the module docstring); returns (K, C, out_h, out_w)."""
    from ..ops.roi_spec import deform_roi_pool_spec

    spec = deform_roi_pool_spec(input.shape, rois.shape, None if offset is None else offset.shape, output_size,
                                sampling_ratio)
    desc = RoiPoolDesc(spec.batch, spec.channels, spec.height, spec.width, spec.num_rois, *spec.output_size,
                       spec.sampling_ratio, float(spatial_scale), float(gamma))
    shape = (spec.num_rois, spec.channels, *spec.output_size)
    return _run("roi_pool", desc, shape, entry, {"input": input, "rois": rois, "offset": offset}, num_threads,
                library)


def deform_psroi_pool_native(input, rois, trans, spatial_scale: float, output_dim: int, group_size: int,
                             pooled_size: int, part_size: int = 0, sample_per_part: int = 1, trans_std: float = 0.0,
                             no_trans: bool = False, *, entry: str = "cpu", num_threads: Optional[int] = None,
                             library=None):
    """DeformPSRoIPool by the library's ``entry`` forward (see the module docstring); returns (K, output_dim, P, P)."""
    from ..ops.roi_spec import deform_psroi_pool_spec

    trans = None if no_trans else trans
    spec = deform_psroi_pool_spec(input.shape, rois.shape, None if trans is None else trans.shape, output_dim,
                                  group_size, pooled_size, part_size, sample_per_part, no_trans)
    desc = PsroiPoolDesc(spec.batch, spec.channels, spec.height, spec.width, spec.num_rois, spec.output_dim,
                         spec.group_size, spec.pooled_size, spec.part_size, spec.sample_per_part, spec.num_classes,
                         int(spec.no_trans), float(spatial_scale), float(trans_std))
    return _run("psroi_pool", desc, spec.output_shape, entry, {"input": input, "rois": rois, "trans": trans},
                num_threads, library)


def _run(op: str, desc, shape: Sequence[int], entry: str, tensors, num_threads: Optional[int], library):
    import torch

    from .native import _prepare_tensors, _ptr, load_library

    if entry not in ROI_ENTRIES:
        raise ValueError(f"entry must be one of {', '.join(ROI_ENTRIES)}, got {entry!r}")
    contiguous, dtype = _prepare_tensors(tensors, ROI_ENTRIES[entry], f"the {entry} forward")
    input = contiguous["input"]
    lib = library or load_library("kernels" if entry == "cuda" else "host")
    out = torch.empty(tuple(shape), dtype=input.dtype, device=input.device)
    name = f"dcn_deform_{op}_forward_{entry}"
    args = [ctypes.byref(desc), dtype, *[_ptr(t) for t in contiguous.values()], out.data_ptr()]
    if entry == "cpu":
        lib.call(name, *args, torch.get_num_threads() if num_threads is None else int(num_threads))
    elif entry == "cuda":
        with torch.cuda.device(input.device):
            lib.call(name, *args, torch.cuda.current_stream(input.device).cuda_stream)
    else:
        lib.call(name, *args)
    return out
