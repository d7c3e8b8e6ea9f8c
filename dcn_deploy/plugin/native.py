"""ctypes binding of the C ABI (plugins/common/dcn_kernels.h) on torch tensors.

``deform_conv2d_host`` runs the host build of the kernels (CPU tensors; CI checks the CUDA code's indexing and
math this way), ``deform_conv2d_cpu`` the fast CPU forward (what :func:`dcn_deploy.deform_conv2d` uses on the CPU
when the library is built), ``deform_conv2d_cuda`` the CUDA kernels (CUDA tensors, on the current stream). They take
torchvision's arguments, plus ``padding`` as 4 values ``(top, left, bottom, right)`` for asymmetric padding
(ONNX ``pads`` order). The RoI pooling entries are bound in :mod:`dcn_deploy.plugin.native_roi`. The plugin's
plain logic (field parsing, serialisation, shape checks) is reachable through :class:`NativeLibrary` too, for
tests.
"""
from __future__ import annotations

import ctypes
import threading
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple, Union

from .library import require_library
from .native_roi import declare_entries as declare_roi_entries

__all__ = ["ABI_VERSION", "DCN_ERROR_UNSUPPORTED", "DCN_ERROR_CUDA", "NativeError", "StaleLibraryError",
           "DeformConvDesc", "DeformConvAttrs", "NativeLibrary", "load_library", "deform_conv2d_host", "deform_conv2d_cpu",
           "deform_conv2d_cuda", "DTYPE_CODES", "ALGOS", "FIELD_TYPE_INT32"]

# The C ABI this binding speaks: DCN_ABI_VERSION in plugins/common/dcn_kernels.h. A library of another version is a
# stale build: NativeLibrary refuses it (StaleLibraryError), since its entries may take other arguments.
ABI_VERSION = 14
DCN_OK = 0
DCN_ERROR_UNSUPPORTED = 2
DCN_ERROR_CUDA = 3
DCN_FORWARD_ALLOW_TF32 = 1  # dcn_deform_conv2d_forward_cuda's flags
DCN_FORWARD_CHANNELS_LAST = 2
DCN_FORWARD_SHARED_TAPS = 4
DCN_FORWARD_GROUP_MMA = 8
STATUS_NAMES = {0: "ok", 1: "invalid argument", 2: "unsupported", 3: "CUDA error", 4: "workspace too small",
                5: "internal error"}
DTYPE_CODES = {"float32": 0, "float16": 1, "bfloat16": 2, "float64": 3}
ALGOS = {"auto": 0, "direct": 1, "fused": 2, "gemm": 3, "implicit": 4}
FIELD_TYPE_INT32 = 5  # nvinfer1::PluginFieldType::kINT32


class NativeError(RuntimeError):
    """A C ABI call returned an error code; the message is the library's dcn_last_error()."""

    def __init__(self, code: int, message: str):
        super().__init__(f"{message} [{STATUS_NAMES.get(code, 'error')} {code}]")
        self.code = code
        self.message = message


class StaleLibraryError(OSError):
    """A built library speaks another C ABI version than this binding: calling it could pass wrong arguments."""

    def __init__(self, path: Path, version: object):
        super().__init__(f"{path} is a stale build: it speaks C ABI version {version}, this package speaks "
                         f"{ABI_VERSION}. Rebuild it (dcn-deploy plugin build), or point DCN_DEPLOY_PLUGIN_DIR at a "
                         "current build")
        self.path = path
        self.version = version


class DeformConvDesc(ctypes.Structure):
    _fields_ = [(name, ctypes.c_int32) for name in (
        "batch", "in_channels", "height", "width", "out_channels", "kernel_h", "kernel_w", "stride_h", "stride_w",
        "pad_top", "pad_left", "pad_bottom", "pad_right", "dilation_h", "dilation_w", "group", "offset_group")]


class DeformConvAttrs(ctypes.Structure):
    _fields_ = [("strides", ctypes.c_int32 * 2), ("pads", ctypes.c_int32 * 4), ("dilations", ctypes.c_int32 * 2),
                ("group", ctypes.c_int32), ("offset_group", ctypes.c_int32)]

    def as_dict(self) -> Dict[str, object]:
        return {"strides": list(self.strides), "pads": list(self.pads), "dilations": list(self.dilations),
                "group": self.group, "offset_group": self.offset_group}

    @classmethod
    def from_values(cls, strides=(1, 1), pads=(0, 0, 0, 0), dilations=(1, 1), group=1, offset_group=1):
        attrs = cls()
        attrs.strides[:] = list(strides)
        attrs.pads[:] = list(pads)
        attrs.dilations[:] = list(dilations)
        attrs.group = group
        attrs.offset_group = offset_group
        return attrs


_P = ctypes.POINTER
_VOIDP = ctypes.c_void_p


class NativeLibrary:
    """One loaded library (host, kernels or plugin) with typed entry points; errors raise :class:`NativeError`. A
    library of another C ABI version (or none) raises :class:`StaleLibraryError` here, before any entry is called."""

    def __init__(self, path: Union[str, Path]):
        self.path = Path(path)
        self.lib = ctypes.CDLL(str(self.path))
        self._declare("dcn_abi_version", [], ctypes.c_int32)
        version = self.abi_version if self.has("dcn_abi_version") else "none (no dcn_abi_version entry)"
        if version != ABI_VERSION:
            raise StaleLibraryError(self.path, version)
        self._declare("dcn_last_error", [], ctypes.c_char_p)
        self._declare("dcn_deform_conv2d_output_size", [_P(DeformConvDesc), _P(ctypes.c_int32), _P(ctypes.c_int32)])
        self._declare("dcn_deform_conv2d_forward_host", [_P(DeformConvDesc), ctypes.c_int32] + [_VOIDP] * 6)
        self._declare("dcn_deform_conv2d_forward_host_gemm",
                      [_P(DeformConvDesc), ctypes.c_int32] + [_VOIDP] * 6
                      + [ctypes.c_size_t, ctypes.c_int32, ctypes.c_int32, ctypes.c_int32, ctypes.c_int32,
                         ctypes.c_int32, ctypes.c_int32, ctypes.c_int32])
        self._declare("dcn_deform_conv2d_forward_host_implicit", [_P(DeformConvDesc), ctypes.c_int32] + [_VOIDP] * 6)
        self._declare("dcn_deform_conv2d_forward_host_direct_channels_last",
                      [_P(DeformConvDesc), ctypes.c_int32] + [_VOIDP] * 6 + [ctypes.c_size_t, ctypes.c_int32])
        self._declare("dcn_deform_conv2d_forward_cpu",
                      [_P(DeformConvDesc), ctypes.c_int32] + [_VOIDP] * 6 + [ctypes.c_int32, ctypes.c_int32])
        self._declare("dcn_deform_conv2d_columns_cpu",
                      [_P(DeformConvDesc), ctypes.c_int32] + [_VOIDP] * 3
                      + [ctypes.c_int32, ctypes.c_int64, ctypes.c_int64, _VOIDP, ctypes.c_int32])
        self._declare("dcn_channels_last_cpu",
                      [ctypes.c_int32, _VOIDP, _VOIDP, ctypes.c_int32, ctypes.c_int32, ctypes.c_int64, ctypes.c_int32])
        self._declare("dcn_prefault_cpu", [_VOIDP, ctypes.c_int64])
        self._declare("dcn_cuda_available", [], ctypes.c_int32)
        self._declare("dcn_deform_conv2d_workspace_size",
                      [_P(DeformConvDesc), ctypes.c_int32, ctypes.c_int32, ctypes.c_int32, _P(ctypes.c_size_t)])
        self._declare("dcn_deform_conv2d_forward_cuda",
                      [_P(DeformConvDesc), ctypes.c_int32, ctypes.c_int32, ctypes.c_int32] + [_VOIDP] * 7
                      + [ctypes.c_size_t, _VOIDP])
        self._declare("dcn_plugin_deform_conv_parse_fields",
                      [ctypes.c_int32, _P(ctypes.c_char_p), _P(_VOIDP), _P(ctypes.c_int32), _P(ctypes.c_int32),
                       _P(DeformConvAttrs)])
        self._declare("dcn_plugin_deform_conv_roundtrip", [_P(DeformConvAttrs), _P(DeformConvAttrs)])
        self._declare("dcn_plugin_deform_conv_output_dims",
                      [_P(DeformConvAttrs), ctypes.c_int32, _P(ctypes.c_int32), _P(ctypes.c_int64), _P(ctypes.c_int64)])
        declare_roi_entries(self.lib)

    def _declare(self, name: str, argtypes, restype=ctypes.c_int32) -> None:
        fn = getattr(self.lib, name, None)
        if fn is not None:
            fn.argtypes = argtypes
            fn.restype = restype

    def has(self, name: str) -> bool:
        return hasattr(self.lib, name)

    def call(self, name: str, *args) -> None:
        """Call an entry point returning a dcn_status; raise NativeError with the library's message on failure."""
        if not self.has(name):
            raise NativeError(2, f"{self.path.name} does not export {name}")
        code = getattr(self.lib, name)(*args)
        if code != DCN_OK:
            raise NativeError(code, (self.lib.dcn_last_error() or b"").decode(errors="replace"))

    @property
    def abi_version(self) -> int:
        return int(self.lib.dcn_abi_version())

    def last_error(self) -> str:
        return (self.lib.dcn_last_error() or b"").decode(errors="replace")

    # ---- the plugin's plain logic ----
    def parse_fields(self, fields: Sequence[Tuple[str, Sequence[int], int]]) -> Dict[str, object]:
        """Parse ``(name, int values, PluginFieldType code)`` fields as the TensorRT creator does."""
        count = len(fields)
        names = (ctypes.c_char_p * max(count, 1))(*[f[0].encode() for f in fields])
        buffers = [(ctypes.c_int32 * max(len(f[1]), 1))(*f[1]) for f in fields]
        data = (_VOIDP * max(count, 1))(*[ctypes.cast(b, _VOIDP) for b in buffers])
        lengths = (ctypes.c_int32 * max(count, 1))(*[len(f[1]) for f in fields])
        types = (ctypes.c_int32 * max(count, 1))(*[f[2] for f in fields])
        attrs = DeformConvAttrs()
        self.call("dcn_plugin_deform_conv_parse_fields", count, names, data, lengths, types, ctypes.byref(attrs))
        return attrs.as_dict()

    def roundtrip_fields(self, **attrs) -> Dict[str, object]:
        """Serialise attrs into the plugin's fields and parse them back."""
        out = DeformConvAttrs()
        self.call("dcn_plugin_deform_conv_roundtrip", ctypes.byref(DeformConvAttrs.from_values(**attrs)),
                  ctypes.byref(out))
        return out.as_dict()

    def plugin_output_dims(self, input_shapes: Sequence[Sequence[int]], **attrs) -> Tuple[int, ...]:
        """The plugin's build-time shape check and output shape; -1 marks a dynamic dimension."""
        count = len(input_shapes)
        ranks = (ctypes.c_int32 * max(count, 1))(*[len(s) for s in input_shapes])
        flat = []
        for shape in input_shapes:
            flat += list(shape)[:4] + [0] * (4 - min(len(shape), 4))
        dims = (ctypes.c_int64 * max(len(flat), 1))(*flat)
        out = (ctypes.c_int64 * 4)()
        self.call("dcn_plugin_deform_conv_output_dims", ctypes.byref(DeformConvAttrs.from_values(**attrs)), count,
                  ranks, dims, out)
        return tuple(out)

    def output_size(self, desc: DeformConvDesc) -> Tuple[int, int]:
        oh, ow = ctypes.c_int32(), ctypes.c_int32()
        self.call("dcn_deform_conv2d_output_size", ctypes.byref(desc), ctypes.byref(oh), ctypes.byref(ow))
        return oh.value, ow.value


_LOADED: Dict[str, NativeLibrary] = {}
_LOCK = threading.Lock()


def load_library(kind: str = "host", path: Optional[Union[str, Path]] = None) -> NativeLibrary:
    """Load (once) the ``host`` or ``kernels`` library, found as in :func:`dcn_deploy.plugin.library.find_library`."""
    key = str(path) if path else kind
    with _LOCK:
        if key not in _LOADED:
            _LOADED[key] = NativeLibrary(path or require_library(kind))
        return _LOADED[key]


# ---- torch front ends ----

def _pads(padding) -> Tuple[int, int, int, int]:
    """int, (h, w) or (top, left, bottom, right) -> (top, left, bottom, right)."""
    if isinstance(padding, int) and not isinstance(padding, bool):
        return (padding,) * 4
    values = tuple(int(v) for v in padding)
    if len(values) == 2:
        return (values[0], values[1], values[0], values[1])
    if len(values) == 4:
        return values  # type: ignore[return-value]
    raise ValueError(f"padding must be an int, (pad_h, pad_w) or (top, left, bottom, right), got {padding!r}")


def _checked_desc(input, offset, weight, bias, mask, stride, padding, dilation) -> DeformConvDesc:
    """Validate the tensors' shapes with the shared spec and fill the C descriptor."""
    from ..ops.spec import ShapeError, as_pair, deform_conv_spec

    top, left, bottom, right = _pads(padding)
    if min(top, left, bottom, right) < 0:
        raise ShapeError(f"padding values must be >= 0, got {(top, left, bottom, right)}")
    n, c, h, w = (tuple(input.shape) + (0, 0, 0, 0))[:4] if input.dim() == 4 else (None,) * 4
    if n is None:
        raise ShapeError(f"input must be 4-D (N, C, H, W), got shape {tuple(input.shape)}")
    bias_shape = None if bias is None else tuple(bias.shape)
    mask_shape = None if mask is None else tuple(mask.shape)
    if (top, left) == (bottom, right):
        spec = deform_conv_spec(input.shape, offset.shape, weight.shape, bias_shape, mask_shape, stride, (top, left),
                                dilation)
    else:
        # Asymmetric padding is zero padding of the input: check the shapes as for the padded input.
        try:
            spec = deform_conv_spec((n, c, h + top + bottom, w + left + right), offset.shape, weight.shape,
                                    bias_shape, mask_shape, stride, 0, dilation)
        except ShapeError as exc:
            raise ShapeError(f"{exc} (sizes include the asymmetric padding {(top, left, bottom, right)})") from None
    stride_h, stride_w = as_pair(stride, "stride", 1)
    dilation_h, dilation_w = as_pair(dilation, "dilation", 1)
    return DeformConvDesc(n, c, h, w, spec.out_channels, spec.kernel[0], spec.kernel[1], stride_h, stride_w,
                          top, left, bottom, right, dilation_h, dilation_w, spec.groups, spec.offset_groups)


def _prepare(input, offset, weight, bias, mask, device_type: str, channels_last: bool = False):
    """_prepare_tensors for the deformable convolution's entries; where ``channels_last`` (DCN_FORWARD_CHANNELS_LAST),
    the input channels-last in memory and starting 16-byte aligned (the kernels read 16-byte channel vectors where
    it is), copied only where it is not already so."""
    import torch

    tensors = {"input": input, "offset": offset, "weight": weight, "bias": bias, "mask": mask}
    skip = ("input",) if channels_last else ()
    t, dtype = _prepare_tensors(tensors, device_type, "this entry point", skip_contiguous=skip)
    if channels_last:
        t["input"] = input.contiguous(memory_format=torch.channels_last)
        if t["input"].data_ptr() % 16:  # a misaligned view
            t["input"] = t["input"].clone(memory_format=torch.channels_last)
    return t, dtype


def _prepare_tensors(tensors, device_type: str, caller: str, skip_contiguous=()):
    """Check ``tensors`` (name -> tensor or None, ``"input"`` among them: one supported float dtype, one
    ``device_type`` device; ``caller`` names the entry in the device error); returns (name -> contiguous tensor or
    None, the dtype's code in :data:`DTYPE_CODES`). The tensors named in ``skip_contiguous`` are returned as they
    are (the caller lays them out)."""
    from ..ops._checks import check_tensors  # tensors, one supported float dtype, one device

    check_tensors(tensors)
    input = tensors["input"]
    if input.device.type != device_type:
        raise ValueError(f"input is on {input.device}; {caller} needs every tensor on one {device_type} device")
    dtype_name = str(input.dtype).replace("torch.", "")
    contiguous = {k: t if t is None or k in skip_contiguous else t.contiguous() for k, t in tensors.items()}
    return contiguous, DTYPE_CODES[dtype_name]


def _ptr(t) -> Optional[int]:
    return None if t is None else t.data_ptr()


def _run_host_entry(entry: str, extra_args: tuple, input, offset, weight, bias, mask, stride, padding, dilation,
                    library: Optional[NativeLibrary], channels_last: bool = False):
    """Call one of the host library's forward entries on CPU tensors; returns a new output tensor (channels-last in
    memory, with the input passed so, where ``channels_last``: the entry's flags must say so)."""
    import torch

    desc = _checked_desc(input, offset, weight, bias, mask, stride, padding, dilation)
    t, dtype = _prepare(input, offset, weight, bias, mask, "cpu", channels_last=channels_last)
    lib = library or load_library("host")
    oh, ow = lib.output_size(desc)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    out = torch.empty((desc.batch, desc.out_channels, oh, ow), dtype=input.dtype, memory_format=memory_format)
    lib.call(entry, ctypes.byref(desc), dtype, _ptr(t["input"]), _ptr(t["offset"]), _ptr(t["weight"]),
             _ptr(t["bias"]), _ptr(t["mask"]), _ptr(out), *extra_args)
    return out


# Where the GEMM path's product writes and how it samples (GemmOutput, GemmSampler in
# plugins/deform_conv/deformConvColumns.h).
GEMM_OUTPUTS = {"auto": 0, "direct": 1, "staged": 2, "staged-bias-in-product": 3}
GEMM_SAMPLERS = {"auto": 0, "tiled": 1, "thread": 2}
GEMM_CHUNKS = {"even": 0, "full": 1}
GEMM_PRODUCTS = {"tn": 0, "nn": 1}
GEMM_SPLIT_KS = (0, 1, 2, 4, 8)  # 0: auto, as the GPU chooses


def deform_conv2d_host(input, offset, weight, bias=None, stride=1, padding=0, dilation=1, mask=None, *,
                       path: str = "direct", column_budget_bytes: int = 0, gemm_output: str = "auto",
                       gemm_sampler: str = "auto", tile_items: int = 0, gemm_chunks: str = "even",
                       gemm_product: str = "tn", gemm_split_k: int = 0, channels_last: bool = False,
                       shared_taps: bool = False, library: Optional[NativeLibrary] = None):
    """Deformable convolution by the host build of the kernels (CPU tensors; float32/64, float16, bfloat16).

    Shapes as :func:`dcn_deploy.ops.deform_conv.deform_conv2d`; ``padding`` may also be (top, left, bottom, right).
    ``path``: ``direct`` (the direct kernel's arithmetic), ``direct-channels-last``, ``implicit`` (both below) or
    ``gemm`` (the CUDA GEMM path step by step: chunks of at most ``column_budget_bytes`` of columns, 0 for the CUDA
    default; channels-last sampling; the cuBLAS call's arguments through a plain product). ``gemm_output`` (gemm
    only): ``direct`` (the product adds into the NCHW output), ``staged`` (through a pixel-major scratch, then
    transposed with the bias), ``staged-bias-in-product`` (staged, a half type's bias added by the product, as
    ``DCN_DEPLOY_GEMM_BIAS=epilogue`` does on the GPU) or ``auto`` (as on the GPU: direct for one group where the
    output rows are whole 16-byte vectors, else staged). ``gemm_sampler`` (gemm only): ``tiled`` (a tile's taps computed once, in shared
    memory on the GPU), ``thread`` (each thread its own taps) or ``auto`` (as on the GPU: tiled where it can);
    ``tile_items``: the tiled sampler's channel vectors per tile (0: the GPU's default). ``gemm_chunks``: ``even``
    (as few chunks as fit, of equal size: the GPU's default) or ``full`` (as many images or pixels per chunk as fit,
    then the remainder). ``gemm_product``: the staged product's operand layout, ``tn`` (weights along K: the GPU's
    default) or ``nn`` (weights along the output channels; the direct product stays TN). ``gemm_split_k``: the
    staged product in slices of K, summed by the transpose: 0 as the GPU chooses (4 for float32 layers of few output
    tiles and K = C*kH*kW of 2048 or more, staged then; else 1), or 1, 2, 4 or 8 where one group and K a multiple of
    8 * slices (else 1). ``direct-channels-last``: the CUDA direct kernel over a channels-last copy of the input
    (its default on the layers it takes; ``DCN_DEPLOY_DIRECT_LAYOUT=nchw`` there turns it off): depth-wise layers and
    groups of 2 to 16 channels in and out (up to 64 bytes: float32 groups of 8 and 16, half groups of 16 and float64
    groups of 4 and 8 in wide items, two or four 16-byte gathers a neighbour),
    the input transposed in chunks of the images
    ``column_budget_bytes`` holds (at least one; 0 for the CUDA default). ``implicit``: the CUDA implicit-GEMM kernel
    (``algo="implicit"``) block by block, its tensor-core products as plain loops (every dtype here; channels per
    group and per offset group must be multiples of 32). ``channels_last`` (gemm and direct-channels-last): the
    input and output channels-last in memory, as ``DCN_FORWARD_CHANNELS_LAST`` on the GPU (gemm: the input read
    where it is, the product writing the output; ``gemm_output`` auto, or ``staged-bias-in-product`` for the product
    adding a half type's bias; split-K's slices summed into the output. direct-channels-last: no transpose, each
    item's channels one store). ``shared_taps`` (direct-channels-last only; ``DCN_FORWARD_SHARED_TAPS``): the
    items in the shared-taps kernel's blocks (a block of 32 pixels x 8 channel vectors of a depth-wise or small-group
    layer computes its taps and weights once), refusing the layers that kernel does not take.
    Returns (N, out_channels, oH, oW) in the input's dtype (channels-last in memory where ``channels_last``).
    """
    if shared_taps and path != "direct-channels-last":
        raise ValueError(f"shared_taps applies to path='direct-channels-last', got path={path!r}")
    if channels_last and path not in ("gemm", "direct-channels-last"):
        raise ValueError("channels_last applies to path='gemm' and path='direct-channels-last' (the GPU paths that "
                         f"read channels-last tensors), got path={path!r}")
    if path == "direct":
        return _run_host_entry("dcn_deform_conv2d_forward_host", (), input, offset, weight, bias, mask, stride,
                               padding, dilation, library)
    if path == "gemm":
        if gemm_output not in GEMM_OUTPUTS:
            raise ValueError(f"gemm_output must be one of {', '.join(GEMM_OUTPUTS)}, got {gemm_output!r}")
        if gemm_sampler not in GEMM_SAMPLERS:
            raise ValueError(f"gemm_sampler must be one of {', '.join(GEMM_SAMPLERS)}, got {gemm_sampler!r}")
        if int(tile_items) < 0:
            raise ValueError(f"tile_items must be 0 (the default) or positive, got {tile_items}")
        if gemm_chunks not in GEMM_CHUNKS:
            raise ValueError(f"gemm_chunks must be one of {', '.join(GEMM_CHUNKS)}, got {gemm_chunks!r}")
        if gemm_product not in GEMM_PRODUCTS:
            raise ValueError(f"gemm_product must be one of {', '.join(GEMM_PRODUCTS)}, got {gemm_product!r}")
        if gemm_split_k not in GEMM_SPLIT_KS or isinstance(gemm_split_k, bool):
            raise ValueError(f"gemm_split_k must be one of {', '.join(map(str, GEMM_SPLIT_KS))}, got {gemm_split_k!r}")
        extra = (ctypes.c_size_t(int(column_budget_bytes)), ctypes.c_int32(GEMM_OUTPUTS[gemm_output]),
                 ctypes.c_int32(GEMM_SAMPLERS[gemm_sampler]), ctypes.c_int32(int(tile_items)),
                 ctypes.c_int32(GEMM_CHUNKS[gemm_chunks]), ctypes.c_int32(GEMM_PRODUCTS[gemm_product]),
                 ctypes.c_int32(int(gemm_split_k)),
                 ctypes.c_int32(DCN_FORWARD_CHANNELS_LAST if channels_last else 0))
        return _run_host_entry("dcn_deform_conv2d_forward_host_gemm", extra, input, offset, weight, bias, mask,
                               stride, padding, dilation, library, channels_last=channels_last)
    if path == "direct-channels-last":
        return _run_host_entry("dcn_deform_conv2d_forward_host_direct_channels_last",
                               (ctypes.c_size_t(int(column_budget_bytes)),
                                ctypes.c_int32((DCN_FORWARD_CHANNELS_LAST if channels_last else 0)
                                               | (DCN_FORWARD_SHARED_TAPS if shared_taps else 0))),
                               input, offset, weight, bias, mask, stride, padding, dilation, library,
                               channels_last=channels_last)
    if path == "implicit":
        return _run_host_entry("dcn_deform_conv2d_forward_host_implicit", (), input, offset, weight, bias, mask,
                               stride, padding, dilation, library)
    raise ValueError(f"path must be 'direct', 'direct-channels-last', 'gemm' or 'implicit', got {path!r}")


def deform_conv2d_cpu(input, offset, weight, bias=None, stride=1, padding=0, dilation=1, mask=None, *,
                      num_threads: Optional[int] = None, library: Optional[NativeLibrary] = None):
    """Deformable convolution by the fast CPU forward of the host library (CPU tensors, float32 or float64).

    Shapes as :func:`dcn_deploy.ops.deform_conv.deform_conv2d`; ``padding`` may also be (top, left, bottom, right).
    ``num_threads``: OpenMP threads (default: torch's intra-op thread count). Not differentiable.
    Grouped and depth-wise layers run the library's whole forward; dense layers (groups == 1) its sampling, slice
    by slice, each slice multiplied with the weights by torch (beats the library's own contraction there): in
    float32 as a convolution over the columns (oneDNN, :class:`_ColumnsProduct`), else a matrix product. A
    channels-last input gives a channels-last output (as torch's convolutions), with the same values: every layer
    reads the input where it is; grouped layers write the output so, dense ones transpose theirs once (the
    library's copy). Returns (N, out_channels, oH, oW) in the input's dtype.
    """
    import torch

    from ..ops._checks import channels_last_only

    threads = torch.get_num_threads() if num_threads is None else int(num_threads)
    channels_last = channels_last_only(input)
    if input.dim() == 4 and weight.dim() == 4 and input.shape[1] == weight.shape[1]:
        out = _dense_forward_cpu(input, offset, weight, bias, mask, stride, padding, dilation, threads, library,
                                 channels_last)
        return _channels_last_copy_cpu(out, library, threads) if channels_last else out
    flags = DCN_FORWARD_CHANNELS_LAST if channels_last else 0
    return _run_host_entry("dcn_deform_conv2d_forward_cpu", (threads, flags), input, offset, weight, bias, mask,
                           stride, padding, dilation, library, channels_last=channels_last)


def _channels_last_copy_cpu(t, library: Optional[NativeLibrary], threads: int):
    """A contiguous (N, C, H, W) tensor copied channels-last by the host library's transpose
    (dcn_channels_last_cpu: about 5x faster than torch's permuted copy on one thread)."""
    import torch

    n, c, h, w = t.shape
    out = torch.empty(t.shape, dtype=t.dtype, memory_format=torch.channels_last)
    if t.numel():
        lib = library or load_library("host")
        lib.call("dcn_channels_last_cpu", DTYPE_CODES[str(t.dtype).replace("torch.", "")], _ptr(t), _ptr(out), n,
                 c, h * w, threads)
    return out


# Sampled columns per slice of the dense CPU forward. Under glibc's 32 MiB ceiling for its mmap threshold, so that
# the allocator reuses freed buffers instead of mapping fresh pages on every call: fresh pages cost more than the
# sampling itself (21 ms to fault in 38 MB against 6 ms of sampling, C=256 at 64x64). 1 MiB slices were 20% slower
# (more, smaller products); 16 and 30 MiB the same.
_DENSE_SLICE_BYTES = 16 << 20


def _dense_forward_cpu(input, offset, weight, bias, mask, stride, padding, dilation, threads: int,
                       library: Optional[NativeLibrary], channels_last: bool):
    """Dense layers: compiled sampling of a slice of output pixels (whole output rows for the convolution
    product), then one product per slice (:class:`_ColumnsProduct`)."""
    import torch

    desc = _checked_desc(input, offset, weight, bias, mask, stride, padding, dilation)
    t, dtype = _prepare(input, offset, weight, bias, mask, "cpu", channels_last=channels_last)
    t = {name: None if v is None else v.detach() for name, v in t.items()}  # mm(out=...) refuses autograd inputs
    lib = library or load_library("host")
    oh, ow = lib.output_size(desc)
    plane, points = oh * ow, desc.kernel_h * desc.kernel_w
    row = points * desc.in_channels  # one output pixel's column, (kernel point, channel)
    out = torch.empty((desc.batch, desc.out_channels, plane), dtype=input.dtype)
    if desc.batch == 0 or plane == 0:
        return out.view(desc.batch, desc.out_channels, oh, ow)
    lib.call("dcn_prefault_cpu", _ptr(out), out.numel() * out.element_size())  # written whole below
    # (N, H, W, C): a pixel's channels are contiguous. A channels-last input is that table already (no copy).
    nhwc = t["input"] if channels_last else _channels_last_copy_cpu(t["input"], lib, threads)
    table = nhwc.permute(0, 2, 3, 1)
    slice_pixels = max(16, min(plane, _DENSE_SLICE_BYTES // (row * input.element_size())))
    product = _ColumnsProduct(t["weight"], ow)
    if product.whole_rows:
        slice_pixels = max(1, slice_pixels // ow) * ow
    columns = torch.empty((slice_pixels, row), dtype=input.dtype)
    for image in range(desc.batch):
        for begin in range(0, plane, slice_pixels):
            count = min(slice_pixels, plane - begin)
            lib.call("dcn_deform_conv2d_columns_cpu", ctypes.byref(desc), dtype, _ptr(table), _ptr(t["offset"]),
                     _ptr(t["mask"]), image, begin, count, _ptr(columns), threads)
            product(columns[:count], out[image, :, begin:begin + count])
    if t["bias"] is not None:
        out += t["bias"].view(1, -1, 1)
    return out.view(desc.batch, desc.out_channels, oh, ow)


class _ColumnsProduct:
    """(oC, row) weights times a slice's sampled columns (count, row), written into out (oC, count) (rows of the
    output: stride plane): where :func:`dcn_deploy.ops.deform_conv.onednn_columns_product`, as the composite's
    oneDNN convolution over whole output rows (``whole_rows``; 19 ms against the matrix product's 45 for a dense
    C=256 layer at 64x64 on an AVX-512 AMD EPYC, benchmarks/RESULTS.md), else the matrix product (BLAS writes into
    the output's rows)."""

    def __init__(self, weight, ow: int):
        from ..ops.deform_conv import columns_kernel, dense_weight_matrix, onednn_columns_product

        self.ow = ow
        self.whole_rows = onednn_columns_product(weight)
        if self.whole_rows:
            self.kernel = columns_kernel(weight)
        else:
            self.weights = dense_weight_matrix(weight)  # (oC, row), the columns' (kernel point, channel) order

    def __call__(self, columns, out) -> None:
        import torch

        from ..ops.deform_conv import multiply_column_rows

        if not self.whole_rows:
            torch.mm(self.weights, columns.t(), out=out)
            return
        oc, c, _, points = self.kernel.shape
        product = multiply_column_rows(columns.view(1, -1, points, c), self.kernel, self.ow)[0]
        # The product is channels-last: (pixels, oC) in memory. torch copies a transposed 2-D matrix into a
        # contiguous one by blocks, 3.4x faster than its copy into out's strided rows (0.2 against 0.7 ms for 256
        # channels x 1792 pixels): into out directly where its rows are contiguous (a slice of whole images), else
        # through a contiguous staging matrix in the columns' memory, read already (no new buffer: a fresh one
        # changed which buffers glibc reused, and some processes then faulted the columns in on every call), or
        # a new one where the output outgrows the columns (fewer kernel points x channels than outputs).
        transposed = product.permute(1, 2, 0).reshape(-1, oc).t()
        if out.is_contiguous():
            out.copy_(transposed)
            return
        if columns.numel() >= out.numel():
            staging = columns.view(-1)[:out.numel()].view(out.shape)
        else:
            staging = torch.empty(out.shape, dtype=out.dtype)
        staging.copy_(transposed)
        out.copy_(staging)


def deform_conv2d_cuda(input, offset, weight, bias=None, stride=1, padding=0, dilation=1, mask=None, *,
                       algo: str = "auto", allow_tf32: bool = False, channels_last: bool = False,
                       shared_taps: bool = False, group_mma: bool = False, out=None,
                       library: Optional[NativeLibrary] = None):
    """Deformable convolution by the CUDA kernels, enqueued on torch's current stream (CUDA tensors).

    ``algo``: ``auto`` (``direct`` for depth-wise-like layers and groups of 2 to 8 channels in and out; other dense
    layers, groups of 16 included: ``gemm`` where cuBLAS loads, else ``fused``), ``gemm``
    (sampled columns in a workspace, then cuBLAS), ``fused`` (implicit GEMM, no column buffer), ``direct``, or
    ``implicit`` (experimental: column tiles sampled from a channels-last copy straight into tensor-core products;
    float16/bfloat16, channels per group and per offset group multiples of 32; never chosen by ``auto``; the
    warp-specialised variant with ``DCN_DEPLOY_IMPLICIT_KERNEL=specialised`` set before the process's first call).
    ``allow_tf32``: float32 layers may run the GEMM path's products on TF32 tensor cores (10-bit mantissa inputs,
    float32 sums; ``DCN_FORWARD_ALLOW_TF32``), as ``torch.backends.cuda.matmul.allow_tf32`` lets torch's own
    products; the op passes that setting. No effect on other dtypes and paths.
    ``channels_last``: the input is read, and the output written, channels-last in memory (torch's
    ``channels_last`` memory format; ``DCN_FORWARD_CHANNELS_LAST``): the GEMM path reads the input where it is and
    its product writes the output, with no transposes; so does the direct kernel on the layers it takes (depth-wise,
    or groups of 2 to 16 channels in and out, of up to 64 bytes, in items of whole groups within offset groups;
    ``auto`` takes it there but for dense layers of groups of 16, on the GEMM path). Those two
    only (``gemm``; ``direct``, or ``auto``, on a layer the direct kernel takes; ``auto`` on another dense layer;
    else :class:`NativeError` with code
    ``DCN_ERROR_UNSUPPORTED``). An input in another memory format, or starting off a 16-byte boundary, is copied
    first.
    ``shared_taps`` (experimental; on an H100 no faster than without; ``DCN_FORWARD_SHARED_TAPS``): where the
    channels-last direct kernel runs a layer (depth-wise, or small groups) whose offset groups hold whole blocks of 8
    of its items, a block of 32 pixels x 8 items computes its taps and weights once into shared memory instead of
    each item its own; the same results, other layers unchanged (``DCN_DEPLOY_DIRECT_TAPS=shared`` does the same
    for every call).
    ``group_mma`` (experimental, not yet timed; ``DCN_FORWARD_GROUP_MMA``): where the channels-last direct kernel
    runs a float16 or bfloat16 layer of 1, 2, 4, 8 or 16 channels per group in and out in blocks of 16 channels
    within offset groups (ResNeXt's c4, grouped and depth-wise res4), and, asked for as ``direct`` on NCHW tensors,
    on groups of 32 within offset groups (ResNeXt's c5; without the flag the NCHW direct kernel), on an sm_80 or
    newer GPU, a warp samples 32 pixels of 16 (or 32) channels into shared memory and multiplies them by their
    weights on tensor cores (the samples rounded to the dtype first, as the GEMM path's columns; a pixel whose sums
    come out infinite or NaN is taken again from unrounded samples); other layers unchanged
    (``DCN_DEPLOY_DIRECT_MMA=on`` does the same for every call).
    ``out``: an optional output tensor of the right shape, dtype and device to write into, contiguous (in the
    channels-last memory format where ``channels_last``).
    """
    import torch

    if algo not in ALGOS:
        raise ValueError(f"algo must be one of {sorted(ALGOS)}, got {algo!r}")
    desc = _checked_desc(input, offset, weight, bias, mask, stride, padding, dilation)
    t, dtype = _prepare(input, offset, weight, bias, mask, "cuda", channels_last=channels_last)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    lib = library or load_library("kernels")
    oh, ow = lib.output_size(desc)
    shape = (desc.batch, desc.out_channels, oh, ow)
    if out is not None and (tuple(out.shape) != shape or out.dtype != input.dtype or out.device != input.device
                            or not out.is_contiguous(memory_format=memory_format)):
        layout = "channels-last " if channels_last else ""
        raise ValueError(f"out must be a contiguous {layout}{input.dtype} tensor of shape {shape} on {input.device}, "
                         f"got {out.dtype} {tuple(out.shape)} on {out.device} with strides {tuple(out.stride())}")
    with torch.cuda.device(input.device):
        if out is None:
            out = torch.empty(shape, dtype=input.dtype, device=input.device, memory_format=memory_format)
        flags = ((DCN_FORWARD_ALLOW_TF32 if allow_tf32 else 0) | (DCN_FORWARD_CHANNELS_LAST if channels_last else 0)
                 | (DCN_FORWARD_SHARED_TAPS if shared_taps else 0) | (DCN_FORWARD_GROUP_MMA if group_mma else 0))
        size = ctypes.c_size_t()
        lib.call("dcn_deform_conv2d_workspace_size", ctypes.byref(desc), dtype, ALGOS[algo], flags,
                 ctypes.byref(size))
        workspace = torch.empty((max(size.value, 1),), dtype=torch.uint8, device=input.device) if size.value else None
        stream = torch.cuda.current_stream(input.device).cuda_stream
        lib.call("dcn_deform_conv2d_forward_cuda", ctypes.byref(desc), dtype, ALGOS[algo], flags, _ptr(t["input"]),
                 _ptr(t["offset"]), _ptr(t["weight"]), _ptr(t["bias"]), _ptr(t["mask"]), _ptr(out),
                 _ptr(workspace), size.value, stream)
    return out
