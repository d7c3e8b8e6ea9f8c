"""The TensorRT plugin's plain logic (fields, serialisation, shape checks), through the C ABI of the host library.

The plugin classes (plugins/deform_conv/deformConvPlugin.cpp) are thin shells over exactly these functions; the
symbolic output shape uses the same template (convOutputExtent) as dcn_deform_conv2d_output_size.
"""
from __future__ import annotations

import ctypes
import os
import random

import pytest

from dcn_deploy.ops.spec import conv_output_size
from dcn_deploy.plugin import library
from dcn_deploy.plugin import native as native_module
from dcn_deploy.plugin.native import ABI_VERSION, FIELD_TYPE_INT32, DeformConvDesc, NativeError, NativeLibrary
from shell_tests import run_shell_test

DEFAULTS = {"strides": [1, 1], "pads": [0, 0, 0, 0], "dilations": [1, 1], "group": 1, "offset_group": 1}


@pytest.fixture(scope="module")
def lib(tmp_path_factory) -> NativeLibrary:
    path = library.find_library("host")
    if path is None:
        path = library.build_libraries(tmp_path_factory.mktemp("dcn_build"), cuda=False).libraries["host"]
    return NativeLibrary(path)


def test_missing_fields_take_the_op_set_defaults(lib):
    assert lib.parse_fields([]) == DEFAULTS


def test_fields_are_parsed_and_unknown_fields_ignored(lib):
    fields = [("strides", [2, 3], FIELD_TYPE_INT32), ("pads", [1, 2, 3, 4], FIELD_TYPE_INT32),
              ("dilations", [2, 1], FIELD_TYPE_INT32), ("group", [4], FIELD_TYPE_INT32),
              ("offset_group", [2], FIELD_TYPE_INT32), ("kernel_shape", [3, 3], FIELD_TYPE_INT32)]
    assert lib.parse_fields(fields) == {"strides": [2, 3], "pads": [1, 2, 3, 4], "dilations": [2, 1], "group": 4,
                                        "offset_group": 2}


@pytest.mark.parametrize("field,values,ftype,fragment", [
    ("pads", [1, 1], FIELD_TYPE_INT32, "'pads' must hold 4"),
    ("strides", [1], FIELD_TYPE_INT32, "'strides' must hold 2"),
    ("strides", [1, 0], FIELD_TYPE_INT32, "'strides'"),
    ("dilations", [0, 1], FIELD_TYPE_INT32, "'dilations'"),
    ("pads", [0, -1, 0, 0], FIELD_TYPE_INT32, "'pads'"),
    ("group", [0], FIELD_TYPE_INT32, "'group'"),
    ("offset_group", [-2], FIELD_TYPE_INT32, "'offset_group'"),
    ("group", [1], 1, "'group' must be INT32"),  # 1 = kFLOAT32
    # The revision the plugin writes into engines: another library's engine is refused (its workspace may be short).
    ("dcn_kernels_revision", [999], FIELD_TYPE_INT32, "built by a dcn_deploy plugin library of kernels revision 999"),
    ("dcn_kernels_revision", [1, 1], FIELD_TYPE_INT32, "'dcn_kernels_revision' must be one INT32 value"),
    # The build's TF32 setting (dcn-deploy build writes it on routed nodes): 0 or 1 only.
    ("allow_tf32", [2], FIELD_TYPE_INT32, "'allow_tf32' must be 0 \\(IEEE float32\\) or 1 .*, got 2"),
    ("allow_tf32", [-1], FIELD_TYPE_INT32, "'allow_tf32' must be 0 .*, got -1"),
    ("allow_tf32", [1], 1, "'allow_tf32' must be INT32"),  # 1 = kFLOAT32
    ("allow_tf32", [1, 1], FIELD_TYPE_INT32, "'allow_tf32' must hold 1 value"),
])
def test_invalid_fields_are_rejected_naming_the_field(lib, field, values, ftype, fragment):
    with pytest.raises(NativeError, match=fragment) as info:
        lib.parse_fields([(field, values, ftype)])
    assert info.value.code == 1


@pytest.mark.parametrize("value", [0, 1])
def test_allow_tf32_0_and_1_are_accepted(lib, value):
    """The field has no place in the C ABI's attrs (the plugin keeps it; its round trip through the engine is the
    shell test's, plugins/tests/pluginShellTest.cpp): accepted here, beside the other fields, which keep their values."""
    fields = [("strides", [2, 3], FIELD_TYPE_INT32), ("allow_tf32", [value], FIELD_TYPE_INT32)]
    assert lib.parse_fields(fields) == {**DEFAULTS, "strides": [2, 3]}


@pytest.mark.parametrize("seed", range(10))
def test_serialisation_round_trip(lib, seed):
    rng = random.Random(seed)
    attrs = {"strides": [rng.randint(1, 4), rng.randint(1, 4)], "pads": [rng.randint(0, 5) for _ in range(4)],
             "dilations": [rng.randint(1, 3), rng.randint(1, 3)], "group": rng.randint(1, 8),
             "offset_group": rng.randint(1, 8)}
    assert lib.roundtrip_fields(**attrs) == attrs


def test_round_trip_rejects_invalid_attributes(lib):
    with pytest.raises(NativeError, match="'strides'"):
        lib.roundtrip_fields(strides=(0, 1))


@pytest.mark.parametrize("seed", range(30))
def test_output_size_matches_the_python_spec(lib, seed):
    rng = random.Random(seed)
    h, w, kh, kw = rng.randint(1, 40), rng.randint(1, 40), rng.randint(1, 7), rng.randint(1, 7)
    sh, sw, dh, dw = rng.randint(1, 4), rng.randint(1, 4), rng.randint(1, 3), rng.randint(1, 3)
    t, l, b, r = (rng.randint(0, 4) for _ in range(4))
    oh = conv_output_size(h, kh, sh, t, b, dh)
    ow = conv_output_size(w, kw, sw, l, r, dw)
    desc = DeformConvDesc(2, 4, h, w, 6, kh, kw, sh, sw, t, l, b, r, dh, dw, 2, 4)
    if oh >= 1 and ow >= 1:
        assert lib.output_size(desc) == (oh, ow)
    else:
        with pytest.raises(NativeError, match="empty"):
            lib.output_size(desc)


def _shapes(n=2, c=8, h=10, w=12, oc=16, kh=3, kw=2, group=2, offset_group=2, oh=None, ow=None, bias=True, mask=True):
    shapes = [(n, c, h, w), (oc, c // group, kh, kw), (n, 2 * offset_group * kh * kw, oh, ow)]
    if bias:
        shapes.append((oc,))
    if mask:
        shapes.append((n, offset_group * kh * kw, oh, ow))
    return shapes


ATTRS = dict(strides=(2, 1), pads=(1, 0, 2, 1), dilations=(1, 2), group=2, offset_group=2)
OH = conv_output_size(10, 3, 2, 1, 2, 1)
OW = conv_output_size(12, 2, 1, 0, 1, 2)


@pytest.mark.parametrize("bias,mask", [(False, False), (True, False), (True, True)])
def test_plugin_output_dims_for_3_4_and_5_inputs(lib, bias, mask):
    shapes = _shapes(oh=OH, ow=OW, bias=bias, mask=mask)
    assert lib.plugin_output_dims(shapes, **ATTRS) == (2, 16, OH, OW)


def test_dynamic_dimensions_stay_unknown(lib):
    shapes = _shapes(n=-1, h=-1, w=12, oh=-1, ow=OW)
    assert lib.plugin_output_dims(shapes, **ATTRS) == (-1, 16, -1, OW)


@pytest.mark.parametrize("change,fragment", [
    (dict(group=4), "'group'"),
    (dict(offset_group=3), "'offset_group'"),
    (dict(pads=(0, 0, 0, 0)), "'pads'"),
    (dict(strides=(1, 1)), "'strides'"),
    (dict(dilations=(0, 1)), "'dilations'"),
])
def test_shape_checks_name_the_field_to_fix(lib, change, fragment):
    shapes = _shapes(oh=OH, ow=OW)
    with pytest.raises(NativeError, match=fragment):
        lib.plugin_output_dims(shapes, **{**ATTRS, **change})


def test_shape_products_that_overflow_are_refused_not_wrapped(lib):
    """Found by sanitizer fuzzing: 2*offset_group overflowed int32 from 2^30 (a negative channel count in the
    message), and offset_group*kH*kW wrapped int64 for huge kernels, which skipped the mask check."""
    big = 2**31 - 1
    with pytest.raises(NativeError, match="offset_group\\*kH\\*kW = 1073741824\\*3\\*3 is too large"):
        lib.plugin_output_dims([(1, -1, 8, 8), (4, -1, 3, 3), (1, 18, 6, 6)], **{**ATTRS, "offset_group": 2**30})
    with pytest.raises(NativeError, match="is too large"):
        lib.plugin_output_dims([(1, -1, big, big), (4, -1, big, big), (1, -1, 1, 1), (4,), (1, 12345, 1, 1)],
                               **{**ATTRS, "offset_group": 4, "strides": (1, 1), "dilations": (1, 1),
                                  "pads": (0, 0, 0, 0), "group": 1})


def test_shape_checks_name_the_input(lib):
    good = _shapes(oh=OH, ow=OW)
    with pytest.raises(NativeError, match="B must have shape"):
        lib.plugin_output_dims(good[:3] + [(15,)] + good[4:], **ATTRS)
    with pytest.raises(NativeError, match="mask must have shape"):
        lib.plugin_output_dims(good[:4] + [(2, 12, OH, OW + 1)], **ATTRS)
    with pytest.raises(NativeError, match="offset batch"):
        lib.plugin_output_dims(good[:2] + [(3,) + tuple(good[2][1:])] + good[3:], **ATTRS)
    with pytest.raises(NativeError, match="3 inputs"):
        lib.plugin_output_dims(good[:2], **ATTRS)
    with pytest.raises(NativeError, match="input X must be 4-D"):
        lib.plugin_output_dims([(2, 8, 10)] + good[1:], **ATTRS)


def test_shape_checks_take_batch_0_and_refuse_impossible_sizes(lib):
    good = _shapes(oh=OH, ow=OW)
    empty = [(0,) + tuple(s[1:]) if k in (0, 2, 4) else s for k, s in enumerate(good)]
    assert lib.plugin_output_dims(empty, **ATTRS) == (0, 16, OH, OW)  # an empty batch: X, offset and mask at N = 0
    with pytest.raises(NativeError, match=r"input X dimension 0 must be from 0 to 2\^31-1 \(or -1 while unknown\), got -7"):
        lib.plugin_output_dims([(-7,) + tuple(good[0][1:])] + good[1:], **ATTRS)
    with pytest.raises(NativeError, match="input W dimension 1 must be from 0 to 2\\^31-1"):
        lib.plugin_output_dims(good[:1] + [(16, 2**32 + 4, 3, 2)] + good[2:], **ATTRS)
    with pytest.raises(NativeError, match="input W has an empty dimension"):
        lib.plugin_output_dims(good[:1] + [(0,) + tuple(good[1][1:])] + good[2:], **ATTRS)


def test_libraries_export_the_c_abi_and_plugin_entry_points():
    """Whatever was built exports the same ABI; the plugin library also exports TensorRT's entry points."""
    found = {kind: library.find_library(kind) for kind in library.LIBRARY_FILES}
    if found["host"] is None:
        pytest.skip("host library not built (run `dcn-deploy plugin build`)")
    for kind, path in found.items():
        if path is None:
            continue
        lib = NativeLibrary(path)
        assert lib.abi_version == ABI_VERSION
        assert lib.has("dcn_plugin_deform_conv_parse_fields")
        if kind in ("kernels", "plugin"):
            assert lib.has("dcn_deform_conv2d_forward_cuda")
            # Bad arguments are rejected before any CUDA call, so this runs without a GPU.
            code = lib.lib.dcn_deform_conv2d_forward_cuda(ctypes.byref(DeformConvDesc()), 0, 0, 0, *([None] * 7), 0,
                                                           None)
            assert code == 1 and "C, H and W" in lib.last_error()
            assert lib.lib.dcn_cuda_available() in (0, 1)
        if kind == "plugin":
            assert lib.has("getCreators") and lib.has("setLoggerFinder")


@pytest.fixture(scope="module")
def kernels_lib() -> NativeLibrary:
    path = library.find_library("kernels")
    if path is None:
        pytest.skip("libdcn_deploy_kernels.so not built (needs nvcc; run `dcn-deploy plugin build`)")
    return NativeLibrary(path)


def _workspace(lib, desc, dtype, algo, flags=0):
    size = ctypes.c_size_t()
    lib.call("dcn_deform_conv2d_workspace_size", ctypes.byref(desc), dtype, algo, flags, ctypes.byref(size))
    return size.value


def test_workspace_size_refuses_an_unknown_dtype_or_algo(kernels_lib):
    # one group of 32 channels: past the channels-last direct kernel's 16, so direct is the NCHW kernel
    desc = DeformConvDesc(batch=1, in_channels=32, height=8, width=8, out_channels=32, kernel_h=3, kernel_w=3,
                          stride_h=1, stride_w=1, pad_top=1, pad_left=1, pad_bottom=1, pad_right=1, dilation_h=1,
                          dilation_w=1, group=1, offset_group=1)
    with pytest.raises(NativeError, match=r"dtype 99 is not one of float32 \(0\)"):
        _workspace(kernels_lib, desc, 99, 0)
    with pytest.raises(NativeError, match=r"algo must be 0 \(auto\).*got 99"):
        _workspace(kernels_lib, desc, 0, 99)
    assert _workspace(kernels_lib, desc, 0, 1) == 0  # direct: none


BUDGET = 256 << 20  # the GEMM path's default column budget


def _gemm_workspace(batch, channels, height, width, out_channels, channels_per_group, kernel_points, out_pixels,
                    element, vector, split_k=1, channels_last=False):
    """The GEMM path's workspace (plugins/deform_conv/deformConvGemmPlan.h): room for one chunk's columns,
    min(whole batch, max(budget, 256 pixels' columns)), and for the channels-last input, min(whole batch, max(budget,
    one image)), then the zero vector (C elements), each rounded up to 256 bytes, the re-laid-out weights, the tiled
    sampler's row table (8 bytes per `vector` channels of a pixel's column), the staging scratch (one accumulator,
    4 bytes or 8 for float64, per output channel of every pixel the columns room holds; split_k times, one room
    per slice of K, where the split applies), and 8 MiB for cuBLAS. For channels-last tensors
    (DCN_FORWARD_CHANNELS_LAST) neither the input's room nor the staging scratch: the input is read where it is and
    the product writes the output."""
    up = lambda n: -(-n // 256) * 256  # noqa: E731
    row = channels * kernel_points * element
    image = channels * height * width * element
    columns_room = min(batch * row * out_pixels, max(BUDGET, 256 * row))
    staging = 0 if channels_last else columns_room // row * out_channels * (8 if element == 8 else 4)
    input_room = 0 if channels_last else up(min(batch * image, max(BUDGET, image)))
    return (up(columns_room) + input_room + up(channels * element)
            + up(out_channels * channels_per_group * kernel_points * element)
            + up(channels * kernel_points // vector * 8) + split_k * up(staging) + (8 << 20))


def test_workspace_sizes_follow_the_algorithm(kernels_lib):
    # Host-side logic of the CUDA library: no CUDA call is made, so this runs without a GPU.
    dense = DeformConvDesc(2, 64, 20, 20, 96, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 2, 4)
    weights = 96 * 32 * 9
    # one chunk; channels per thread (vector): 16 bytes' worth, within the 16 channels of an offset group
    gemm = lambda element: _gemm_workspace(2, 64, 20, 20, 96, 32, 9, 400, element, 16 // element)  # noqa: E731
    assert _workspace(kernels_lib, dense, 0, 2) == -(-weights * 4 // 256) * 256  # float32, fused
    assert _workspace(kernels_lib, dense, 1, 3) == gemm(2)                       # float16, GEMM
    assert _workspace(kernels_lib, dense, 3, 3) == gemm(8)                       # float64, GEMM
    # auto: the most either dense path needs, whether or not cuBLAS loads on this machine
    assert _workspace(kernels_lib, dense, 1, 0) == gemm(2)
    assert _workspace(kernels_lib, dense, 0, 1) == 0                              # direct
    depthwise = DeformConvDesc(1, 32, 20, 20, 32, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 32, 1)
    # auto -> direct, over a channels-last copy of the input (float16: 32 x 20 x 20 x 2 bytes)
    assert _workspace(kernels_lib, depthwise, 1, 0) == -(-32 * 400 * 2 // 256) * 256
    # One image whose columns exceed the 256 MiB budget runs in slices of its pixels: room for the budget.
    big = DeformConvDesc(1, 512, 128, 128, 512, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1)
    assert _workspace(kernels_lib, big, 0, 3) == _gemm_workspace(1, 512, 128, 128, 512, 512, 9, 128 * 128, 4, 4)


def test_channels_last_tensors_take_the_gemm_path_or_the_depthwise_kernel(kernels_lib):
    """DCN_FORWARD_CHANNELS_LAST (2): the GEMM path's workspace without the input's room or the staging scratch,
    none for the channels-last direct kernel (depth-wise layers) or the other paths, and a forward that refuses,
    before any CUDA call, a layer neither takes ("unsupported", naming why and the fix) and a misaligned input."""
    channels_last = 2
    dense = DeformConvDesc(2, 64, 20, 20, 96, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 2, 4)
    gemm = lambda element: _gemm_workspace(2, 64, 20, 20, 96, 32, 9, 400, element, 16 // element,  # noqa: E731
                                           channels_last=True)
    assert _workspace(kernels_lib, dense, 1, 3, channels_last) == gemm(2)
    assert _workspace(kernels_lib, dense, 0, 0, channels_last) == gemm(4)  # auto: the GEMM path alone
    assert _workspace(kernels_lib, dense, 1, 3, channels_last) < _workspace(kernels_lib, dense, 1, 3)
    assert _workspace(kernels_lib, dense, 1, 2, channels_last) == 0        # fused: refused at the forward
    depthwise = DeformConvDesc(1, 32, 20, 20, 32, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 32, 1)
    assert _workspace(kernels_lib, depthwise, 1, 0, channels_last) == 0
    # DCN_FORWARD_SHARED_TAPS (4) keeps the direct kernel's workspace (its taps table is in shared memory)
    assert _workspace(kernels_lib, depthwise, 1, 0, 4) == _workspace(kernels_lib, depthwise, 1, 0) > 0
    assert _workspace(kernels_lib, depthwise, 1, 0, channels_last | 4) == 0
    # DCN_FORWARD_GROUP_MMA (8) likewise (its tiles are in shared memory), on a layer of half groups of 16
    sixteens = DeformConvDesc(2, 64, 20, 20, 64, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 4, 1)
    assert _workspace(kernels_lib, sixteens, 1, 1, 8) == _workspace(kernels_lib, sixteens, 1, 1) > 0
    assert _workspace(kernels_lib, sixteens, 1, 1, channels_last | 8) == 0
    with pytest.raises(NativeError, match=r"flags 16 has bits other than DCN_FORWARD_ALLOW_TF32 \(1\), "
                                          r"DCN_FORWARD_CHANNELS_LAST \(2\), DCN_FORWARD_SHARED_TAPS \(4\) and "
                                          r"DCN_FORWARD_GROUP_MMA \(8\)"):
        _workspace(kernels_lib, dense, 1, 3, 16)

    forward = kernels_lib.lib.dcn_deform_conv2d_forward_cuda
    fake = ctypes.c_void_p(0x1000)  # never dereferenced: every check below fails first
    misaligned = ctypes.c_void_p(0x1008)
    assert forward(ctypes.byref(depthwise), 1, 0, channels_last, misaligned, fake, fake, None, None, fake, None, 0,
                   None) == 1
    assert "must start 16-byte aligned" in kernels_lib.last_error()
    prefix = ("channels-last tensors (DCN_FORWARD_CHANNELS_LAST) take the GEMM path (dense layers) or the "
              "channels-last direct kernel (depth-wise layers and groups of 2 to 16 channels), ")
    odd_groups = DeformConvDesc(1, 24, 20, 20, 24, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 8, 1)  # 3 in, 3 out a group
    for desc, algo, why in ((odd_groups, 0, "and this layer is neither (the channels-last direct kernel needs whole "
                                            "groups in each item of 8 channels"),
                            (dense, 1, "and this layer is neither"), (dense, 2, "not algo 2: ask for algo 0 (auto)")):
        assert forward(ctypes.byref(desc), 1, algo, channels_last, fake, fake, fake, None, None, fake, None, 0,
                       None) == 2
        assert prefix + why in kernels_lib.last_error() and "or pass NCHW tensors" in kernels_lib.last_error()
    code = forward(ctypes.byref(dense), 1, 0, channels_last, misaligned, fake, fake, None, None, fake, None, 0, None)
    message = kernels_lib.last_error()
    if kernels_lib.lib.dcn_gemm_path_available() == 1:
        assert code == 1 and "must start 16-byte aligned" in message
    else:  # auto falls back to the fused kernel without cuBLAS, which reads no channels-last tensors
        assert code == 2 and "this layer cannot take the GEMM path here: cuBLAS could not be loaded" in message


@pytest.mark.parametrize("variable,value,message", [
    ("DCN_DEPLOY_GEMM_OUTPUT", "nchw", "DCN_DEPLOY_GEMM_OUTPUT must be one of auto, direct, staged, got 'nchw'"),
    ("DCN_DEPLOY_GEMM_SAMPLER", "tile", "DCN_DEPLOY_GEMM_SAMPLER must be one of auto, tiled, thread, got 'tile'"),
    ("DCN_DEPLOY_GEMM_CHUNKS", "half", "DCN_DEPLOY_GEMM_CHUNKS must be one of even, full, got 'half'"),
    ("DCN_DEPLOY_GEMM_PRODUCT", "NT", "DCN_DEPLOY_GEMM_PRODUCT must be one of tn, nn, got 'NT'"),
    ("DCN_DEPLOY_GEMM_SPLIT_K", "3", "DCN_DEPLOY_GEMM_SPLIT_K must be one of auto, 1, 2, 4, 8, got '3'"),
    ("DCN_DEPLOY_GEMM_SPLIT_K", "16", "DCN_DEPLOY_GEMM_SPLIT_K must be one of auto, 1, 2, 4, 8, got '16'"),
    ("DCN_DEPLOY_GEMM_SPLIT_K", "0", "DCN_DEPLOY_GEMM_SPLIT_K must be one of auto, 1, 2, 4, 8, got '0'"),
    ("DCN_DEPLOY_GEMM_TF32", "yes", "DCN_DEPLOY_GEMM_TF32 must be one of 0, 1, got 'yes'"),
    ("DCN_DEPLOY_GEMM_BIAS", "lt", "DCN_DEPLOY_GEMM_BIAS must be one of auto, epilogue, fill, got 'lt'"),
    ("DCN_DEPLOY_GEMM_TILE_ITEMS", "64k",
     "DCN_DEPLOY_GEMM_TILE_ITEMS must be a whole number from 1 to 1048576, got '64k'"),
    ("DCN_DEPLOY_GEMM_CHUNK_MB", "64MB", "DCN_DEPLOY_GEMM_CHUNK_MB must be a whole number from 1 to 1048576, got '64MB'"),
    ("DCN_DEPLOY_GEMM_CHUNK_MB", "0", "DCN_DEPLOY_GEMM_CHUNK_MB must be a whole number from 1 to 1048576, got '0'"),
    ("DCN_DEPLOY_DIRECT_LAYOUT", "NHWC", "DCN_DEPLOY_DIRECT_LAYOUT must be one of nhwc, nchw, got 'NHWC'"),
    ("DCN_DEPLOY_DIRECT_TAPS", "block", "DCN_DEPLOY_DIRECT_TAPS must be one of item, shared, got 'block'"),
    ("DCN_DEPLOY_CUBLAS_WORKSPACE_MB", "32MB",
     "DCN_DEPLOY_CUBLAS_WORKSPACE_MB must be a whole number from 1 to 1024, got '32MB'"),
    ("DCN_DEPLOY_CUBLAS_WORKSPACE_MB", "2048",
     "DCN_DEPLOY_CUBLAS_WORKSPACE_MB must be a whole number from 1 to 1024, got '2048'"),
    ("DCN_DEPLOY_IMPLICIT_TILE_M", "96", "DCN_DEPLOY_IMPLICIT_TILE_M must be one of auto, 64, 128, 256, got '96'"),
    ("DCN_DEPLOY_IMPLICIT_THREADS", "1024",
     "DCN_DEPLOY_IMPLICIT_THREADS must be one of auto, 256, 512, got '1024'"),
    ("DCN_DEPLOY_CUBLASLT", "0", "DCN_DEPLOY_CUBLASLT must be one of on, off, got '0'"),
    ("DCN_DEPLOY_IMPLICIT_KERNEL", "specialized",
     "DCN_DEPLOY_IMPLICIT_KERNEL must be one of stepwise, specialised, got 'specialized'"),
])
def test_an_unknown_gemm_option_is_an_error_naming_it(kernels_lib, variable, value, message):
    """The C ABI reads its DCN_DEPLOY_GEMM_* options once per process, so each is set in a child process. The error
    still names the value read after the variable is unset (the message used to call getenv again: a crash)."""
    import subprocess
    import sys

    script = ("import ctypes, os, sys; from dcn_deploy.plugin.native import DeformConvDesc, NativeError, NativeLibrary;"
              "lib = NativeLibrary(sys.argv[1]); size = ctypes.c_size_t();"
              "desc = DeformConvDesc(1, 8, 6, 6, 8, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1)\n"
              "for attempt in range(2):\n"
              " try:\n  lib.call('dcn_deform_conv2d_workspace_size', ctypes.byref(desc), 0, 3, 0, ctypes.byref(size))\n"
              " except NativeError as exc:\n  print(exc, flush=True)\n"
              f" os.environ.pop('{variable}', None)")
    env = dict(os.environ, **{variable: value})
    proc = subprocess.run([sys.executable, "-c", script, str(kernels_lib.path)], env=env, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.count(message) == 2, (proc.returncode, proc.stdout + proc.stderr)


# (desc, dtype, the slices the staging room holds under DCN_DEPLOY_GEMM_SPLIT_K=4) for the GEMM path's workspace:
# split-K applies to one group with K = C*kH*kW a multiple of 4 * 8, and its room is reserved whether or not the shape
# is staged (a plugin's largest shape may go direct where a smaller one is staged).
_SPLIT_K_WORKSPACES = [
    (DeformConvDesc(2, 64, 19, 19, 96, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 4), 0, 4),  # K 576: staged 19x19 float32
    (DeformConvDesc(2, 64, 16, 16, 96, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 4), 1, 4),  # direct by default: still 4
    (DeformConvDesc(1, 8, 9, 9, 16, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1), 0, 1),     # K 72: not a multiple of 32
    (DeformConvDesc(2, 64, 20, 20, 96, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 2, 4), 0, 1),  # two groups
]


def _workspaces_under(kernels_lib, split_k, cases, algo=3, **environment):
    """The workspace of `algo` (the GEMM path's by default) for each (desc, dtype) with
    DCN_DEPLOY_GEMM_SPLIT_K=split_k ("" for the default) and the other variables given, in a child process (the C
    ABI reads its options once per process)."""
    import json
    import subprocess
    import sys

    script = ("import ctypes, json, sys; from dcn_deploy.plugin.native import DeformConvDesc, NativeLibrary;"
              "lib = NativeLibrary(sys.argv[1]); cases = json.loads(sys.argv[2]); algo = int(sys.argv[3]); sizes = []\n"
              "for fields, dtype in cases:\n"
              " size = ctypes.c_size_t(); desc = DeformConvDesc(*fields)\n"
              " lib.call('dcn_deform_conv2d_workspace_size', ctypes.byref(desc), dtype, algo, 0, ctypes.byref(size))\n"
              " sizes.append(size.value)\n"
              "print(json.dumps(sizes))")
    fields = [([getattr(desc, name) for name, _ in DeformConvDesc._fields_], dtype) for desc, dtype in cases]
    env = dict(os.environ, DCN_DEPLOY_GEMM_SPLIT_K=split_k, **environment)
    proc = subprocess.run([sys.executable, "-c", script, str(kernels_lib.path), json.dumps(fields), str(algo)], env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout)


def test_auto_sizes_the_direct_kernel_for_small_groups(kernels_lib):
    """Auto's rule (resolveAlgo, deformConvWorkspaceSize): groups of 8 channels in and out are dense by the matrix
    rule, yet auto takes the channels-last direct kernel, whose workspace is the input's channels-last copy, in
    float16 (vectors of 8 hold a group) and in float32 (a wide item: two vectors); under
    DCN_DEPLOY_DIRECT_LAYOUT=nchw (no channels-last copy) the GEMM path's."""
    grouped = DeformConvDesc(2, 256, 20, 30, 256, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 32, 4)  # 32 groups of 8
    for dtype, element in ((1, 2), (0, 4)):
        copy = 2 * 256 * 20 * 30 * element  # the input, channels-last
        direct, gemm = _workspace(kernels_lib, grouped, dtype, 1), _workspace(kernels_lib, grouped, dtype, 3)
        assert copy <= direct < gemm and _workspace(kernels_lib, grouped, dtype, 0) == direct, dtype
        (nchw_auto,) = _workspaces_under(kernels_lib, "", [(grouped, dtype)], algo=0, DCN_DEPLOY_DIRECT_LAYOUT="nchw")
        (nchw_direct,) = _workspaces_under(kernels_lib, "", [(grouped, dtype)], algo=1,
                                           DCN_DEPLOY_DIRECT_LAYOUT="nchw")
        assert nchw_direct == 0 and nchw_auto >= gemm, dtype


def _staging_room(desc, element):
    """Bytes of one staging room (float accumulators) under the default budget: planGemm's formula."""
    oh = desc.height + desc.pad_top + desc.pad_bottom - (desc.kernel_h - 1)
    ow = desc.width + desc.pad_left + desc.pad_right - (desc.kernel_w - 1)
    row = desc.in_channels * desc.kernel_h * desc.kernel_w * element
    room = min(desc.batch * row * oh * ow, max(BUDGET, 256 * row))
    return room // row * desc.out_channels


def _align256(nbytes):
    return -(-nbytes // 256) * 256


def test_split_k_workspace_holds_a_staging_room_per_slice(kernels_lib):
    """DCN_DEPLOY_GEMM_SPLIT_K=4: the GEMM workspace grows by (S - 1) staging rooms where the split applies, and not
    at all where it does not; for these layers (none an auto candidate) 1 is the default's size."""
    cases = [(desc, dtype) for desc, dtype, _ in _SPLIT_K_WORKSPACES]
    split, plain = _workspaces_under(kernels_lib, "4", cases), _workspaces_under(kernels_lib, "1", cases)
    for (desc, dtype, slices), got, default in zip(_SPLIT_K_WORKSPACES, split, plain):
        assert default == _workspace(kernels_lib, desc, dtype, 3), desc
        staging = _align256(_staging_room(desc, 4 if dtype == 0 else 2) * 4)
        assert got == default + (slices - 1) * staging, (desc, dtype, got, default)


# Float32 layers of one group with K = C * 9 >= 2048, auto's candidates for 4 slices (autoSplitK): det res4 at batch
# 1 (split: 264 tiles) and 8 (not split, but its room still holds the slices of a smaller shape); det res5 at batch 1;
# and the same det res4 in float16 and det res3 (K 1152) in float32, which auto never splits.
_AUTO_SPLIT_WORKSPACES = [
    (DeformConvDesc(1, 256, 50, 84, 256, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1), 0, True),
    (DeformConvDesc(8, 256, 50, 84, 256, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1), 0, True),
    (DeformConvDesc(1, 512, 25, 42, 512, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1), 0, True),
    (DeformConvDesc(1, 256, 50, 84, 256, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1), 1, False),
    (DeformConvDesc(1, 128, 100, 167, 128, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1), 0, False),
]


def test_auto_split_k_reserves_its_slices_for_candidate_layers(kernels_lib):
    """Auto (the default) reserves 4 staging slices of at most 264 * 64 * 64 accumulators for a candidate layer,
    whatever its shape, and nothing more for the others; DCN_DEPLOY_GEMM_SPLIT_K=1 turns it off."""
    cases = [(desc, dtype) for desc, dtype, _ in _AUTO_SPLIT_WORKSPACES]
    auto, off = _workspaces_under(kernels_lib, "", cases), _workspaces_under(kernels_lib, "1", cases)
    for (desc, dtype, candidate), got, plain in zip(_AUTO_SPLIT_WORKSPACES, auto, off):
        values = _staging_room(desc, 4 if dtype == 0 else 2)
        room = _align256(values * 4)
        expected = max(room, 4 * _align256(min(values, 264 * 64 * 64) * 4)) if candidate else room
        assert got - plain == expected - room, (desc, dtype, got, plain)
    # det res4 and res5 at batch 1 grow; at batch 8 the one room already holds 4 slices of the largest split product
    assert auto[0] > off[0] and auto[2] > off[2] and auto[1] == off[1]


def test_direct_channels_last_workspace_holds_the_channels_last_input(kernels_lib):
    """By default (unset, or DCN_DEPLOY_DIRECT_LAYOUT=nhwc) the direct kernel (and auto, which picks it) on a
    depth-wise layer needs room for the channels-last input (the whole batch here, under the 256 MiB budget); on a
    layer it does not take (dense, or channels per offset group odd), and everywhere under nchw, the direct kernel
    needs none."""
    depthwise = DeformConvDesc(3, 32, 20, 20, 32, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 32, 2)
    odd = DeformConvDesc(3, 6, 20, 20, 6, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 6, 2)
    dense = DeformConvDesc(3, 32, 20, 20, 32, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1)
    cases = [(depthwise, 0), (depthwise, 1), (odd, 0), (dense, 0)]
    for algo in (1, 0):
        unset = _workspaces_under(kernels_lib, "", cases, algo, DCN_DEPLOY_DIRECT_LAYOUT="")
        nhwc = _workspaces_under(kernels_lib, "", cases, algo, DCN_DEPLOY_DIRECT_LAYOUT="nhwc")
        nchw = _workspaces_under(kernels_lib, "", cases, algo, DCN_DEPLOY_DIRECT_LAYOUT="nchw")
        assert nchw[:3] == [0, 0, 0], nchw
        assert nhwc == unset, (nhwc, unset)
        assert nhwc[:3] == [_align256(3 * 32 * 400 * 4), _align256(3 * 32 * 400 * 2), 0], nhwc
        assert nhwc[3] == nchw[3] == _workspace(kernels_lib, dense, 0, algo)  # dense: untouched
    # under a 1 MiB column budget (DCN_DEPLOY_GEMM_CHUNK_MB): room for the images it holds, at least one
    big = DeformConvDesc(3, 64, 64, 64, 64, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 64, 2)  # 1 MiB an image in float32
    small = _workspaces_under(kernels_lib, "", [(big, 0), (big, 1), (depthwise, 0)], 1, DCN_DEPLOY_GEMM_CHUNK_MB="1")
    assert small == [1 << 20, 1 << 20, _align256(3 * 32 * 400 * 4)], small
    # an image of 2^31 elements or more: its gathers' 32-bit offsets would overflow, so the NCHW kernel (no
    # workspace) serves it, for every dtype
    huge = DeformConvDesc(1, 2, 33000, 33000, 2, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 2, 1)  # 2.18e9 elements an image
    assert _workspaces_under(kernels_lib, "", [(huge, 0), (huge, 1)], 1) == [0, 0]
    assert _workspaces_under(kernels_lib, "", [(huge, 1)], 0) == [0]


def test_auto_keeps_the_gemm_path_on_dense_layers_of_groups_of_16(kernels_lib):
    """Wide items (one group of 32 or 64 bytes: float32 groups of 8 and 16, half groups of 16, float64 groups of 4
    and 8; two or four 16-byte gathers a neighbour) are the channels-last direct kernel's when it is asked for, and
    its workspace is then the channels-last input. On dense layers of groups of 16 (the half types', as fast on an
    H100, session 38; float32's, untimed) auto keeps the GEMM path, so its workspace is the GEMM path's, on NCHW and
    on channels-last tensors; float32 groups of 8 and float64 groups of 4 and 8 are auto's direct, as float16 groups
    of 8 (one vector)."""
    def grouped(groups):  # 64 channels in and out, batch 2, 20 x 20, 3 x 3
        return DeformConvDesc(2, 64, 20, 20, 64, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, groups, 1)

    channels_last = 2
    # float16, bfloat16 and float32 x 16
    for desc, dtype, element in ((grouped(4), 1, 2), (grouped(4), 2, 2), (grouped(4), 0, 4)):
        assert _workspace(kernels_lib, desc, dtype, 1) == _align256(2 * 64 * 400 * element)
        assert _workspace(kernels_lib, desc, dtype, 0) == max(_workspace(kernels_lib, desc, dtype, 2),
                                                              _workspace(kernels_lib, desc, dtype, 3))
        assert _workspace(kernels_lib, desc, dtype, 1, channels_last) == 0
        assert _workspace(kernels_lib, desc, dtype, 0, channels_last) == _workspace(kernels_lib, desc, dtype, 3,
                                                                                    channels_last) > 0
    for desc, dtype, element in ((grouped(8), 1, 2), (grouped(8), 0, 4), (grouped(16), 3, 8), (grouped(8), 3, 8)):
        room = _align256(2 * 64 * 400 * element)
        assert _workspace(kernels_lib, desc, dtype, 0) == _workspace(kernels_lib, desc, dtype, 1) == room, dtype
        assert _workspace(kernels_lib, desc, dtype, 0, channels_last) == 0, dtype


def test_auto_takes_the_channels_last_direct_kernel_where_the_oracle_says(kernels_lib):
    """tests/plugin_configs.py's auto_takes_channels_last_direct (the GPU tests' oracle) states auto's rule: over
    layers of every small channel structure and kernel size, auto's workspace is the channels-last direct kernel's
    (a channels-last copy of the input) exactly where it says."""
    import torch
    from plugin_configs import Case, auto_takes_channels_last_direct, make_tensors

    codes = {torch.float64: 3, torch.float32: 0, torch.float16: 1}
    taken = set()
    for dtype, code in codes.items():
        for groups, cpg, kernel in ((g, c, k) for g in (1, 2, 4) for c in (1, 2, 4, 8, 16) for k in (1, 2, 3)):
            case = Case(2, groups, 1, groups * cpg, groups * cpg, 6, 7, (kernel, kernel), (1, 1), (1, 1, 1, 1),
                        (1, 1), True, True, 2.0, False)
            x, off, w, b, m = make_tensors(case, dtype, seed=0)
            desc = native_module._checked_desc(x, off, w, b, m, case.stride, case.pads, case.dilation)
            room = _align256(2 * groups * cpg * 42 * x.element_size())
            auto = _workspace(kernels_lib, desc, code, 0)
            assert (auto == room) == auto_takes_channels_last_direct(case, dtype), (case, dtype, auto, room)
            taken.add(auto == room)
    assert taken == {True, False}


def test_cublas_workspace_size_follows_its_knob(kernels_lib):
    """DCN_DEPLOY_CUBLAS_WORKSPACE_MB=32 (cuBLAS's recommendation on Hopper) makes cuBLAS's slice of the GEMM
    workspace 32 MiB instead of the default 8, for every layer and dtype; unset it is the default."""
    cases = [(desc, dtype) for desc, dtype, _ in _AUTO_SPLIT_WORKSPACES]
    default = _workspaces_under(kernels_lib, "", cases, DCN_DEPLOY_CUBLAS_WORKSPACE_MB="")
    larger = _workspaces_under(kernels_lib, "", cases, DCN_DEPLOY_CUBLAS_WORKSPACE_MB="32")
    assert default == [_workspace(kernels_lib, desc, dtype, 3) for desc, dtype in cases]
    assert [big - small for big, small in zip(larger, default)] == [(32 - 8) << 20] * len(cases)


@pytest.mark.parametrize("dtype", [0, 1])
@pytest.mark.parametrize("kernel,stride", [(3, 1), (1, 2), (3, 2)])
def test_workspace_never_shrinks_as_the_shape_grows(kernels_lib, dtype, kernel, stride):
    """A TensorRT plugin sizes its workspace for the largest profile shape and runs smaller shapes in it: for every
    smaller N, H or W the size must not be larger (a review found shapes needing 29 MB more than the largest)."""
    def size(n, h, w, c=64):
        pad = kernel // 2
        desc = DeformConvDesc(n, c, h, w, c, kernel, kernel, stride, stride, pad, pad, pad, pad, 1, 1, 1, 1)
        return _workspace(kernels_lib, desc, dtype, 0), _workspace(kernels_lib, desc, dtype, 3)

    for n_max, h_max, c in ((2, 132, 64), (8, 200, 256), (16, 64, 512)):
        largest = size(n_max, h_max, h_max, c)
        for n in range(1, n_max + 1):
            for h in range(max(1, h_max // 3), h_max + 1, 7):
                smaller = size(n, h, h_max - (h % 5), c)
                assert smaller[0] <= largest[0] and smaller[1] <= largest[1], (n, h, c, smaller, largest)


def test_plugin_info_says_whether_the_gemm_path_can_run(kernels_lib):
    """`dcn-deploy plugin info` reports cuBLAS: the GEMM path where it loads, else why not (CPU machines: not)."""
    code = kernels_lib.lib.dcn_gemm_path_available()
    status = library.library_info()["gemm_path"]
    if code == 1:
        assert status.startswith("available")
    else:
        assert status.startswith("unavailable, dense layers use the fused kernel: cuBLAS could not be loaded")


def test_cuda_entry_rejects_bad_requests_before_touching_the_device(kernels_lib):
    dense = DeformConvDesc(2, 64, 20, 20, 96, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 2, 4)
    fake = ctypes.c_void_p(0x1000)  # never dereferenced: every check below fails first
    forward = kernels_lib.lib.dcn_deform_conv2d_forward_cuda
    assert forward(ctypes.byref(dense), 1, 2, 0, fake, fake, fake, None, None, fake, None, 0, None) == 4
    assert "workspace" in kernels_lib.last_error()
    assert forward(ctypes.byref(dense), 3, 2, 0, fake, fake, fake, None, None, fake, None, 0, None) == 2
    assert "direct" in kernels_lib.last_error()
    assert forward(ctypes.byref(dense), 0, 7, 0, fake, fake, fake, None, None, fake, None, 0, None) == 1
    assert "algo" in kernels_lib.last_error()
    assert forward(ctypes.byref(dense), 0, 0, 0, None, fake, fake, None, None, fake, None, 0, None) == 1
    assert "NULL" in kernels_lib.last_error()
    if kernels_lib.lib.dcn_gemm_path_available() == 1:  # the GEMM path's checks come after cuBLAS is found
        assert forward(ctypes.byref(dense), 0, 3, 0, fake, fake, fake, None, None, fake, ctypes.c_void_p(0x1010),
                       1 << 30, None) == 1
        assert "256-byte aligned" in kernels_lib.last_error()
    assert forward(ctypes.byref(dense), 0, 3, 16, fake, fake, fake, None, None, fake, None, 0, None) == 1
    assert "flags 16 has bits other than DCN_FORWARD_ALLOW_TF32 (1)" in kernels_lib.last_error()
    # The GEMM path: without a loadable cuBLAS an "unsupported" error that says so, else a workspace error.
    code = forward(ctypes.byref(dense), 0, 3, 0, fake, fake, fake, None, None, fake, None, 0, None)
    assert code in (2, 4), kernels_lib.last_error()
    assert ("cuBLAS" if code == 2 else "GEMM path needs a workspace") in kernels_lib.last_error()


def test_tensorrt_plugin_shell_without_tensorrt():
    """plugins/tests/pluginShellTest.cpp drives the IPluginV3 classes (creator, fields, getOutputShapes with a
    constant-folding stand-in for TensorRT's expression builder, format checks, configure, serialisation, clone).
    It checks our shell, not TensorRT; it is built with the plugin (nvcc + TensorRT headers)."""
    run_shell_test("dcn_plugin_shell_test", min_checks=20)


def test_tensorrt_plugin_tactics_without_tensorrt():
    """The plugin lets TensorRT time its kernels as tactics (plugins/deform_conv/deformConvTactics.h): the shell test
    checks the ids and the algorithm each runs, the fused kernel's rule against the kernels' own, what
    getNbTactics/getValidTactics offer (gemm only where cuBLAS loads), a workspace that covers every offered tactic,
    setTactic on the build and the load path (the tactic is TensorRT's to store, not a field), the timing-cache ID.
    TensorRT's own timing and engine storage stay GPU-machine checks."""
    out = run_shell_test("dcn_plugin_shell_test", min_checks=20)
    for line in ("tactics 0/1/2/3 run auto/direct/fused/gemm",
                 "the gemm tactic runs the heuristic where cuBLAS does not load",
                 "fusedKernelAccepts agrees with the kernels' resolveAlgo (12 of 24 refused",
                 "getNbTactics / getValidTactics offer direct fused ",
                 "getValidTactics refuses more slots than getNbTactics said",
                 "getWorkspaceSize of a depth-wise-like layer covers its tactics",
                 "setTactic refuses an unknown id and keeps the last one",
                 "the tactic is not serialised as a field",
                 "a plugin loaded before setTactic runs the heuristic (tactic 0)",
                 "setTactic on load, then attachToContext: the context runs the engine's tactic",
                 "getTimingCacheID: DeformConv2d/1;strides=2,1;pads=1,0,2,1;dilations=1,2;group=2;offset_group=2;"):
        assert "ok   " + line in out, line


def test_plugin_info_reports_the_build_settings_of_the_libraries_it_found(tmp_path, monkeypatch, lib):
    """With DCN_DEPLOY_PLUGIN_DIR at another build's lib/ (e.g. build/gpu/lib), the CUDA architectures and TensorRT
    headers reported are that build's, not the default build folder's."""
    import shutil

    other = tmp_path / "gpu_build"
    (other / "lib").mkdir(parents=True)
    shutil.copy(lib.path, other / "lib" / lib.path.name)
    (other / "CMakeCache.txt").write_text("CMAKE_CUDA_ARCHITECTURES:STRING=90\nTENSORRT_INCLUDE_DIR:PATH=/opt/trt/include\n")
    monkeypatch.setenv(library.ENV_DIR, str(other / "lib"))
    info = library.library_info()
    assert info["host"] == str(other / "lib" / lib.path.name)
    assert info["build_dir"] == str(other.resolve())
    assert info["cuda_architectures"] == "90" and info["tensorrt_include_dir"] == "/opt/trt/include"
    assert info["abi_version"] == native_module.ABI_VERSION
    monkeypatch.setattr(native_module, "ABI_VERSION", native_module.ABI_VERSION + 1)  # as if the build were stale
    assert library.library_info()["abi_version"] == (
        f"{native_module.ABI_VERSION - 1}: a stale build, this package speaks {native_module.ABI_VERSION}; rebuild it "
        "(dcn-deploy plugin build)")


def test_a_library_folder_override_that_is_no_folder_is_named_in_a_warning(tmp_path, monkeypatch):
    """DCN_DEPLOY_PLUGIN_DIR at the library file itself, or at nothing: the search falls back to the default
    places, and a warning says so (a silent fallback could run another build than the one meant)."""
    the_file = tmp_path / library.LIBRARY_FILES["host"]
    the_file.write_bytes(b"\x7fELF")
    monkeypatch.setenv(library.ENV_DIR, str(the_file))
    with pytest.warns(UserWarning, match=r"is not a folder; give the folder that holds the library, not the file"):
        library.search_dirs()
    monkeypatch.setenv(library.ENV_DIR, str(tmp_path / "missing"))
    with pytest.warns(UserWarning, match=r"missing is not a folder: the libraries are looked for in the default"):
        library.search_dirs()


def test_the_cli_prints_our_warnings_as_one_line(tmp_path, monkeypatch):
    from cli_helpers import cli_runner

    from dcn_deploy.cli import main

    monkeypatch.setenv(library.ENV_DIR, str(tmp_path / "nowhere"))
    result = cli_runner().invoke(main, ["plugin", "info"])
    assert f"warning: {library.ENV_DIR}={tmp_path / 'nowhere'} is not a folder" in result.stderr
    assert "UserWarning" not in result.stderr


def test_plugin_info_says_how_to_build_libraries_it_did_not_find(tmp_path, monkeypatch):
    from cli_helpers import cli_runner

    from dcn_deploy.cli import main

    monkeypatch.setattr(library, "search_dirs", lambda: [tmp_path])  # an empty folder: nothing built there
    result = cli_runner().invoke(main, ["plugin", "info"])
    assert result.exit_code == 0, result.output
    assert "host                   not found" in result.stdout
    assert "not built: host, kernels, plugin; build them with `dcn-deploy plugin build`" in result.stdout
