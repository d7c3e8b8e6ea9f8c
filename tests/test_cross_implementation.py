"""Every implementation of each op against the PyTorch reference, on one seeded list of random configurations.

The project's rule: every implementation agrees with the reference on random configurations (groups, offset
groups, asymmetric stride/padding/dilation, non-square kernels, batch > 1, H or W of 1, samples pushed off the
image), float32 to ~1e-5 relative, half types computed with float32 accumulation. This file checks that rule for
each implementation on the same cases, and checks that the cases really have those properties.

Deformable convolution, implementations under test:
  torch_op          dcn_deploy.deform_conv2d (on the CPU: the host library's compiled forward when built)
  ort_function      a dcn_deploy::DeformConv2d node with its function body, in ONNX Runtime
  ort_standard      a standard ONNX DeformConv node, ONNX Runtime's own kernel
  onnx_reference    the dcn_deploy::DeformConv2d model in onnx's ReferenceEvaluator (OracleEvaluator)
  host_direct, host_gemm_direct, host_gemm_staged, host_cpu_forward
                    the host build of the kernels through the C ABI (dcn_deploy.plugin.native)
  export            dcn_deploy.export of a module (our domain, and --standard), run in ONNX Runtime
The reference: the torch composite (``_forward_composite``, never the compiled path) in float64; asymmetric
padding is zero padding of the input.

Deformable RoI pooling (DeformRoIPool, its modulated form, DeformPSRoIPool), implementations under test: the
function bodies in ONNX Runtime and in the ReferenceEvaluator, the host build and the fast CPU forward through the
C ABI (dcn_deploy.plugin.native_roi), the PyTorch op (half types), the exported ModulatedDeformRoIPoolPack. The
reference: dcn_deploy.ops.roi_pool in float64 (its composite: the op never runs the compiled code in float64).

Half precision: inputs are rounded to the half type once; every implementation and the float64 reference see the
same rounded values. The tolerance is one unit of the half type at the output's largest magnitude
(max|got - ref| <= eps * max|ref|, eps = 2**-10 for float16, 2**-7 for bfloat16). How it was chosen: every
implementation here accumulates in float32 and rounds its output once (the GEMM path, ``host_gemm_*``, also rounds
its sampled columns to the half type before the product, as a half-precision convolution rounds its operands: on
short sums with cancellation that alone can reach 1.7 units against the float64 reference, which the cases here,
with their long reductions, do not show), and measured 0.20-0.57 units (convolution) and
0.15-0.41 units (RoI pooling); a convolution that sums its products in the half type measured 2.1-7.2 units on the
same cases (the cases have long reductions, 144-288 products per output, since short ones hide it), RoI pooling
computed in the half type 4-29 units. ``test_half_tolerance_rejects_half_accumulation`` keeps that separation true
for these cases; the RoI half test uses 8x8 samples per bin so that a kernel summing them in the half type fails.
"""
from __future__ import annotations

import dataclasses
import random
from typing import Dict, List, Optional, Tuple

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dcn_deploy.ops import deform_conv as dc
from dcn_deploy.ops import roi_pool as rp
from dcn_deploy.plugin.native_roi import deform_psroi_pool_native, deform_roi_pool_native
from plugin_configs import HALF_EPS as EPS
from plugin_configs import (Case, half_precision_cases, layer_case, make_tensors, peak_relative_error as relative_error,
                            reference)

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper  # noqa: E402

from dcn_deploy.onnx import opset, roi_opset  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FLOAT32_TOLERANCE = 1e-5
ELEMENT_TYPES = {torch.float32: TensorProto.FLOAT, torch.float16: TensorProto.FLOAT16,
                 torch.float64: TensorProto.DOUBLE, torch.bfloat16: TensorProto.BFLOAT16}


def _dtype_name(t) -> str:
    """'float16' for a torch tensor or a numpy array of that type (bfloat16 exists only as a torch tensor)."""
    return str(t.dtype).replace("torch.", "")


def tolerance(dtype: torch.dtype) -> float:
    return FLOAT32_TOLERANCE if dtype in (torch.float32, torch.float64) else EPS[dtype]


def _numpy(t: Optional[torch.Tensor]):
    return None if t is None else t.numpy()


@pytest.fixture(scope="module")
def host_lib(host_library_path):
    from dcn_deploy.plugin.native import NativeLibrary

    return NativeLibrary(host_library_path)


# ================================================================================================================
# Deformable convolution
# ================================================================================================================

def _conv_cases() -> Dict[str, Case]:
    rng = random.Random(20261126)
    return {
        "height_1": layer_case(rng, 1, 1, 3, 2.0, height=1, kernel=(1, 3), with_mask=True),
        "width_1": layer_case(rng, 2, 2, 2, 2.0, width=1, kernel=(3, 1), with_bias=True),
        "far_offsets": layer_case(rng, 3, 3, 2, 25.0),
        "height_1_far": layer_case(rng, 1, 2, 2, 6.0, height=1, pads=(1, 0, 1, 2)),
        "asymmetric": layer_case(rng, 2, 1, 3, 2.0, kernel=(3, 2), stride=(2, 1), dilation=(1, 2),
                                 pads=(0, 2, 1, 0), with_mask=True, with_bias=False),
        "groups_and_offset_groups": layer_case(rng, 2, 4, 4, 2.0, kernel=(2, 3)),
        "depthwise": layer_case(rng, 4, 4, 1, 3.0),
        "dense_integer_offsets": layer_case(rng, 1, 2, 4, 2.0, integer_offsets=True, with_mask=False),
    }


CONV_CASES = _conv_cases()


def off_image_fraction(case: Case, offset: torch.Tensor) -> float:
    """Fraction of the deformed samples with all four bilinear neighbours outside the (unpadded) image."""
    oh, ow = case.out_size
    kh, kw = case.kernel
    off = offset.double().view(case.batch, case.offset_groups, kh, kw, 2, oh, ow)
    base_y = (torch.arange(oh) * case.stride[0] - case.pads[0]).view(1, 1, 1, 1, oh, 1) \
        + (torch.arange(kh) * case.dilation[0]).view(1, 1, kh, 1, 1, 1)
    base_x = (torch.arange(ow) * case.stride[1] - case.pads[1]).view(1, 1, 1, 1, 1, ow) \
        + (torch.arange(kw) * case.dilation[1]).view(1, 1, 1, kw, 1, 1)
    py, px = base_y + off[:, :, :, :, 0], base_x + off[:, :, :, :, 1]
    outside = (py <= -1) | (py >= case.height) | (px <= -1) | (px >= case.width)
    return float(outside.double().mean())


def _symmetric_call(case: Case, x, off, w, b, m, run):
    """Asymmetric pads through a symmetric-padding API: the common part as padding, the rest as zero padding."""
    t, l, bottom, r = case.pads
    ph, pw = min(t, bottom), min(l, r)
    if (t, l) != (bottom, r):
        x = F.pad(x, (l - pw, r - pw, t - ph, bottom - ph))
    return run(x, off, w, b, m, (ph, pw))


def _conv_model(case: Case, dtype: torch.dtype, standard: bool, has_bias: bool, has_mask: bool):
    """One dcn_deploy::DeformConv2d node with its function body (or one standard DeformConv), every tensor an input."""
    oh, ow = case.out_size
    k = case.kernel[0] * case.kernel[1]
    names = ["X", "W", "offset"] + (["B"] if has_bias else []) + (["mask"] if has_mask else [])
    shapes = {"X": [case.batch, case.in_channels, case.height, case.width],
              "W": [case.out_channels, case.in_channels // case.groups, *case.kernel],
              "offset": [case.batch, 2 * case.offset_groups * k, oh, ow], "B": [case.out_channels],
              "mask": [case.batch, case.offset_groups * k, oh, ow]}
    attrs = dict(strides=list(case.stride), pads=list(case.pads), dilations=list(case.dilation), group=case.groups,
                 offset_group=case.offset_groups)
    elem = ELEMENT_TYPES[dtype]
    if standard:
        node = helper.make_node("DeformConv", names, ["Y"], kernel_shape=list(case.kernel), **attrs)
    else:
        node = helper.make_node(opset.DEFORM_CONV, names, ["Y"], domain=opset.DOMAIN, **attrs)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info(n, elem, shapes[n]) for n in names],
                              [helper.make_tensor_value_info("Y", elem, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 22 if dtype == torch.bfloat16 else 19)])
    model.ir_version = 10
    return model if standard else opset.attach_functions(model)


def _conv_feed(x, off, w, b, m) -> Tuple[dict, bool, bool]:
    """The feed of :func:`_conv_model`; a mask without a bias gets a zero bias (the exporter's convention)."""
    if m is not None and b is None:
        b = torch.zeros(w.shape[0], dtype=w.dtype)
    feed = {"X": x, "W": w, "offset": off, "B": b, "mask": m}
    arrays = {k: _bfloat16_numpy(v) if v.dtype == torch.bfloat16 else v.numpy() for k, v in feed.items()
              if v is not None}
    return arrays, b is not None, m is not None


def _bfloat16_numpy(t: torch.Tensor) -> np.ndarray:
    """A bfloat16 tensor as ml_dtypes' bfloat16 array (exactly: through float32)."""
    import ml_dtypes

    return t.float().numpy().astype(ml_dtypes.bfloat16)


def _ort_session(model):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - ONNX Runtime raises its own exception classes
        if "NOT_IMPLEMENTED" in str(exc):
            pytest.skip(f"ONNX Runtime {ort.__version__} has no CPU kernel for this type: {str(exc)[:200]}")
        raise


def _ort_run(model, feed: dict) -> np.ndarray:
    """ONNX Runtime's output for `feed`; a skip naming the limit where a bfloat16 input cannot be fed (its Python API
    takes no ml_dtypes arrays) or the model has no CPU kernel for the type (_ort_session)."""
    session = _ort_session(model)
    if any(str(a.dtype) == "bfloat16" for a in feed.values()):
        pytest.skip(f"ONNX Runtime {ort.__version__}'s Python API takes no bfloat16 numpy (ml_dtypes) arrays")
    return session.run(None, feed)[0]


def _run_onnx(case: Case, tensors, standard: bool, evaluator: str):
    """The file's output: a numpy array, or for bfloat16 a torch tensor (numpy has no bfloat16 of its own; onnx's
    reference evaluator takes and returns ml_dtypes' bfloat16 arrays). ONNX Runtime's CPU provider has no bfloat16
    DeformConv, which _ort_session turns into a skip naming the missing kernel."""
    dtype = tensors[0].dtype
    feed, has_bias, has_mask = _conv_feed(*tensors)
    model = _conv_model(case, dtype, standard, has_bias, has_mask)
    if evaluator == "ort":
        return _ort_run(model, feed)
    from dcn_deploy.backends.reference_evaluator import OracleEvaluator

    out = OracleEvaluator(model).run(None, feed)[0]
    return torch.from_numpy(out.astype(np.float32)).to(torch.bfloat16) if dtype == torch.bfloat16 else out


def _torch_op(case, x, off, w, b, m, lib):
    return _symmetric_call(case, x, off, w, b, m, lambda x, off, w, b, m, pad: dc.deform_conv2d(
        x, off, w, b, stride=case.stride, padding=pad, dilation=case.dilation, mask=m))


def _host(path: str, output: str = "auto"):
    def run(case, x, off, w, b, m, lib):
        from dcn_deploy.plugin.native import deform_conv2d_host

        return deform_conv2d_host(x, off, w, b, stride=case.stride, padding=case.pads, dilation=case.dilation,
                                  mask=m, path=path, gemm_output=output, library=lib)
    return run


def _host_cpu_forward(case, x, off, w, b, m, lib):
    from dcn_deploy.plugin.native import deform_conv2d_cpu

    if not all(lib.has(e) for e in ("dcn_deform_conv2d_forward_cpu", "dcn_deform_conv2d_columns_cpu")):
        pytest.skip(f"{lib.path} predates the CPU forward; rebuild with `dcn-deploy plugin build`")
    if x.dtype not in (torch.float32, torch.float64):
        pytest.skip("the CPU forward takes float32/float64 only (half types are upcast before it)")
    return deform_conv2d_cpu(x, off, w, b, stride=case.stride, padding=case.pads, dilation=case.dilation, mask=m,
                             library=lib)


# name -> (function(case, x, off, w, b, m, host_lib), needs the host library)
CONV_IMPLEMENTATIONS = {
    "torch_op": (_torch_op, False),
    "ort_function": (lambda case, *t: _run_onnx(case, t[:5], False, "ort"), False),
    "ort_standard": (lambda case, *t: _run_onnx(case, t[:5], True, "ort"), False),
    "onnx_reference": (lambda case, *t: _run_onnx(case, t[:5], False, "reference"), False),
    "host_direct": (_host("direct"), True),
    "host_gemm_direct": (_host("gemm", "direct"), True),
    "host_gemm_staged": (_host("gemm", "staged"), True),
    "host_cpu_forward": (_host_cpu_forward, True),
}


def _run_conv(name: str, case: Case, tensors, request):
    run, needs_host = CONV_IMPLEMENTATIONS[name]
    lib = request.getfixturevalue("host_lib") if needs_host else None
    return run(case, *tensors, lib)


def _conv_reference(case: Case, tensors) -> torch.Tensor:
    return reference(case, *[None if t is None else t.double() for t in tensors])


@pytest.mark.parametrize("case_name", list(CONV_CASES))
@pytest.mark.parametrize("implementation", list(CONV_IMPLEMENTATIONS))
def test_deform_conv_float32_matches_reference(implementation, case_name, request):
    case = CONV_CASES[case_name]
    tensors = make_tensors(case, torch.float32, seed=len(case_name))
    got = _run_conv(implementation, case, tensors, request)
    assert _dtype_name(got) == "float32"
    error = relative_error(got, _conv_reference(case, tensors))
    assert error <= FLOAT32_TOLERANCE, (implementation, case, error)


def test_conv_cases_cover_the_matrix():
    """The case list has every property of the rule (so a test above fails if one is handled wrongly)."""
    cases = list(CONV_CASES.values())
    fractions = [off_image_fraction(c, make_tensors(c, torch.float64, seed=len(n))[1]) for n, c in CONV_CASES.items()]
    assert any(c.height == 1 for c in cases) and any(c.width == 1 for c in cases)
    assert max(fractions) > 0.7, fractions  # samples pushed off the image
    assert all(c.batch > 1 for c in cases)
    assert any(c.groups > 1 and c.offset_groups > 1 and c.groups != c.offset_groups for c in cases)
    assert any(c.in_channels == c.groups for c in cases)  # depth-wise
    assert any(c.pads[0] != c.pads[2] and c.pads[1] != c.pads[3] for c in cases)
    assert any(c.stride[0] != c.stride[1] for c in cases) and any(c.dilation[0] != c.dilation[1] for c in cases)
    assert any(c.kernel[0] != c.kernel[1] for c in cases)
    assert {(c.with_mask, c.with_bias) for c in cases} >= {(True, True), (True, False), (False, True)}


# ---- half precision --------------------------------------------------------------------------------------------

HALF_CASES = half_precision_cases()
HALF_IMPLEMENTATIONS = ["torch_op", "ort_function", "ort_standard", "onnx_reference", "host_direct",
                        "host_gemm_direct", "host_gemm_staged"]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["float16", "bfloat16"])
@pytest.mark.parametrize("case_name", list(HALF_CASES))
@pytest.mark.parametrize("implementation", HALF_IMPLEMENTATIONS)
def test_deform_conv_half_accumulates_in_float32(implementation, case_name, dtype, request):
    case = HALF_CASES[case_name]
    tensors = make_tensors(case, dtype, seed=3)
    got = _run_conv(implementation, case, tensors, request)
    assert _dtype_name(got) == _dtype_name(tensors[0]), "the output must keep the input's dtype"
    error = relative_error(got, _conv_reference(case, tensors))
    assert error <= EPS[dtype], (implementation, case, f"{error / EPS[dtype]:.2f} units of the half type")


def _half_accumulating_conv(case: Case, x, off, w, b, m) -> torch.Tensor:
    """A deformable convolution that samples in float64, rounds the samples to the half type and sums the products
    one by one in the half type (a direct kernel with a half accumulator; cublasHgemm sums in half as well)."""
    dtype = x.dtype
    t, l, bottom, r = case.pads
    padded = F.pad(x.double(), (l, r, t, bottom))
    table = dc._channels_last_table(padded, case.offset_groups)
    columns = dc._sample_columns(table, padded.shape[2:], off.double(), None if m is None else m.double(),
                                 case.kernel, case.stride, (0, 0), case.dilation).to(dtype)  # (n, L, K, C)
    n, length, points, channels = columns.shape
    per_group, out_per_group = channels // case.groups, case.out_channels // case.groups
    weight = w.reshape(case.out_channels, per_group, points)
    out = torch.zeros(n, case.out_channels, length, dtype=dtype)
    for g in range(case.groups):
        rows = slice(g * out_per_group, (g + 1) * out_per_group)
        for point in range(points):
            for c in range(per_group):
                product = columns[:, :, point, g * per_group + c].unsqueeze(1) * weight[rows, c, point].view(1, -1, 1)
                out[:, rows] = out[:, rows] + product
    if b is not None:
        out = out + b.view(1, -1, 1)
    return out.view(n, case.out_channels, *case.out_size)


def _half_roi_case(dtype):
    gen = torch.Generator().manual_seed(31)
    x = torch.randn(2, 6, 11, 13, generator=gen).to(dtype)
    xy = torch.rand(20, 2, generator=gen) * 20 - 3
    rois = torch.cat([torch.randint(0, 2, (20, 1), generator=gen).float(), xy,
                      xy + torch.rand(20, 2, generator=gen) * 16 + 2], 1).to(dtype)
    offset = (torch.randn(20, 2, 3, 2, generator=gen) * 0.5).to(dtype)
    return x, rois, offset


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["float16", "bfloat16"])
def test_half_tolerance_rejects_half_accumulation(dtype):
    """The half tolerance above tells float32 accumulation from half accumulation on these very cases."""
    for name, case in HALF_CASES.items():
        tensors = make_tensors(case, dtype, seed=3)
        error = relative_error(_half_accumulating_conv(case, *tensors), _conv_reference(case, tensors))
        assert error > 1.5 * EPS[dtype], (name, error / EPS[dtype])
    # RoI pooling: the composite run in the half type itself (positions, weights and sums in half)
    x, rois, offset = _half_roi_case(dtype)
    want = rp.deform_roi_pool(x.double(), rois.double(), offset.double(), (3, 2), 0.5, 4, 0.125)
    in_half = rp._roi_pool_composite(x, rois, offset, (3, 2), 0.5, 4, 0.125)
    assert relative_error(in_half, want) > 2 * EPS[dtype]


# ---- the exporter ----------------------------------------------------------------------------------------------

class _ThreeLayers(torch.nn.Module):
    """Three deformable layers on three inputs: H of 1, W of 1 with groups, and offsets far off the image."""

    def __init__(self):
        from dcn_deploy.ops.modules import DeformConv2d

        super().__init__()
        self.flat = DeformConv2d(4, 6, (1, 3), stride=(1, 2), padding=(0, 1), dilation=(1, 2))
        self.tall = DeformConv2d(6, 4, (3, 1), stride=(2, 1), padding=(2, 0), groups=2)
        self.far = DeformConv2d(4, 4, (2, 3), padding=(1, 2), dilation=(2, 1), groups=2, bias=False)
        for p in self.parameters():
            torch.nn.init.normal_(p)

    def forward(self, x1, o1, m1, x2, o2, x3, o3, m3):
        return self.flat(x1, o1, m1), self.tall(x2, o2), self.far(x3, o3, m3)


def _three_layer_inputs(seed: int):
    gen = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=gen)  # noqa: E731
    u = lambda *s: torch.rand(*s, generator=gen)  # noqa: E731
    return (r(2, 4, 1, 9), 2 * r(2, 12, 1, 4), u(2, 6, 1, 4),           # flat: H = 1, 2 offset groups
            r(3, 6, 8, 1), 2 * r(3, 6, 5, 1),                            # tall: W = 1, 1 offset group
            r(2, 4, 6, 5), 20 * r(2, 24, 6, 7), u(2, 12, 6, 7))          # far: 2 offset groups


def _three_layer_reference(model: _ThreeLayers, inputs) -> List[torch.Tensor]:
    x1, o1, m1, x2, o2, x3, o3, m3 = (t.double() for t in inputs)
    out = []
    for layer, (x, o, m) in ((model.flat, (x1, o1, m1)), (model.tall, (x2, o2, None)), (model.far, (x3, o3, m3))):
        b = None if layer.bias is None else layer.bias.double()
        out.append(dc._forward_composite(x, o, layer.weight.double(), b, m, layer.stride, layer.padding,
                                         layer.dilation))
    return out


@pytest.mark.parametrize("standard", [False, True], ids=["dcn_deploy_domain", "standard_deform_conv"])
def test_exported_model_matches_reference(tmp_path, standard):
    from dcn_deploy.backends.reference_evaluator import OracleEvaluator
    from dcn_deploy.onnx.export import export

    torch.manual_seed(3)
    model = _ThreeLayers().eval()
    path = tmp_path / "three.onnx"
    export(model, _three_layer_inputs(1), path, standard=standard, verify=False)
    inputs = _three_layer_inputs(2)  # new values, same shapes
    assert off_image_fraction(Case(2, 2, 2, 4, 4, 6, 5, (2, 3), (1, 1), (1, 2, 1, 2), (2, 1), True, False, 20.0),
                              inputs[6]) > 0.6
    feed_names = [i.name for i in onnx.load(str(path)).graph.input]
    feed = dict(zip(feed_names, (t.numpy() for t in inputs)))
    session = _ort_session(onnx.load(str(path)))
    runs = {"ort": session.run(None, feed)}
    if not standard:
        runs["onnx_reference"] = OracleEvaluator(onnx.load(str(path))).run(None, feed)
    for runner, outputs in runs.items():
        for layer, got, want in zip(("flat", "tall", "far"), outputs, _three_layer_reference(model, inputs)):
            error = relative_error(got, want)
            assert error <= FLOAT32_TOLERANCE, (runner, layer, error)


# ================================================================================================================
# Deformable RoI pooling
# ================================================================================================================

@dataclasses.dataclass(frozen=True)
class RoiCase:
    batch: int
    channels: int
    height: int
    width: int
    pooled: Tuple[int, int]
    spatial_scale: float      # exactly representable in float32 (the kernels' attribute type)
    sampling_ratio: int
    gamma: float
    offset_scale: float


@dataclasses.dataclass(frozen=True)
class PsroiCase:
    batch: int
    height: int
    width: int
    output_dim: int
    classes: int
    group_size: int
    pooled_size: int
    part_size: int
    sample_per_part: int
    spatial_scale: float
    trans_std: float
    offset_scale: float


ROI_CASES = {
    "plain_scale_half": RoiCase(2, 5, 9, 11, (3, 2), 0.5, 2, 0.125, 0.4),
    "height_1": RoiCase(2, 3, 1, 12, (2, 3), 1.0, 3, 0.25, 0.5),
    "width_1": RoiCase(3, 4, 10, 1, (1, 4), 0.25, 1, 0.125, 0.5),
    "far_offsets": RoiCase(2, 4, 8, 9, (2, 2), 0.5, 2, 0.25, 10.0),
}
PSROI_CASES = {
    "one_class": PsroiCase(2, 8, 9, 3, 1, 3, 3, 3, 2, 0.5, 0.125, 1.0),
    "classes_part_2": PsroiCase(2, 7, 10, 6, 3, 2, 3, 2, 3, 0.25, 0.25, 1.0),
    "rows_per_class": PsroiCase(2, 9, 8, 16, 2, 2, 2, 2, 2, 0.5, 0.125, 1.0),  # 8 channels per class: row gathers
    "height_1_far": PsroiCase(2, 1, 12, 2, 1, 2, 2, 2, 2, 1.0, 0.5, 4.0),
    "width_1": PsroiCase(3, 11, 1, 2, 2, 1, 3, 3, 2, 0.5, 0.125, 1.0),
}


def _boxes(gen: torch.Generator, count: int, batch: int, height: int, width: int, scale: float) -> torch.Tensor:
    """(count, 5) boxes in image pixels: a third partly outside the map, a third tiny (under a feature-map pixel,
    some of zero size), the rest anywhere; batch indices spread over the batch."""
    h, w = height / scale, width / scale  # the map's extent in image pixels
    size = torch.tensor([w, h], dtype=torch.float64)
    start = (torch.rand(count, 2, generator=gen, dtype=torch.float64) * 1.3 - 0.15) * size
    extent = torch.rand(count, 2, generator=gen, dtype=torch.float64) * 0.8 * size
    third = count // 3
    start[:third] = torch.where(torch.rand(third, 2, generator=gen) < 0.5, -0.3 * size, 0.75 * size)
    extent[:third] = 0.6 * size
    extent[third:2 * third] = torch.rand(third, 2, generator=gen, dtype=torch.float64) * 0.9 / scale
    extent[2 * third] = 0.0  # one box of zero size
    index = torch.arange(count, dtype=torch.float64).remainder(batch).view(-1, 1)
    # float32 values, so the float32 implementations and the float64 reference see the same boxes
    return torch.cat([index, start, start + extent], dim=1).float().double()


def _roi_tensors(case: RoiCase, seed: int, count: int = 12):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(case.batch, case.channels, case.height, case.width, generator=gen, dtype=torch.float64)
    rois = _boxes(gen, count, case.batch, case.height, case.width, case.spatial_scale)
    offset = torch.randn(count, 2, *case.pooled, generator=gen, dtype=torch.float64) * case.offset_scale
    return x, rois, offset.float().double()


def _psroi_tensors(case: PsroiCase, seed: int, count: int = 12):
    gen = torch.Generator().manual_seed(seed)
    channels = case.output_dim * case.group_size ** 2
    x = torch.randn(case.batch, channels, case.height, case.width, generator=gen, dtype=torch.float64)
    rois = _boxes(gen, count, case.batch, case.height, case.width, case.spatial_scale)
    trans = torch.randn(count, 2 * case.classes, case.part_size, case.part_size, generator=gen, dtype=torch.float64)
    return x, rois, (trans * case.offset_scale).float().double()


def _roi_reference(case: RoiCase, x, rois, offset):
    return rp.deform_roi_pool(x.double(), rois.double(), offset.double(), case.pooled, case.spatial_scale,
                              case.sampling_ratio, case.gamma)


def _psroi_reference(case: PsroiCase, x, rois, trans, no_trans=False):
    return rp.deform_psroi_pool(x.double(), rois.double(), None if no_trans else trans.double(), case.spatial_scale,
                                case.output_dim, case.group_size, case.pooled_size, case.part_size,
                                case.sample_per_part, case.trans_std, no_trans)


def _roi_node_model(op: str, dtype: torch.dtype, **attrs):
    names = ["X", "rois", "offset" if op == roi_opset.DEFORM_ROI_POOL else "trans"]
    elem = ELEMENT_TYPES[dtype]
    node = helper.make_node(op, names, ["Y"], domain=opset.DOMAIN, **attrs)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info(n, elem, None) for n in names],
                              [helper.make_tensor_value_info("Y", elem, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    model.ir_version = 10
    return opset.attach_functions(model)


def _run_roi_model(model, evaluator: str, arrays):
    """The model's output: a numpy array, or for bfloat16 a torch tensor (as :func:`_run_onnx`)."""
    bfloat16 = arrays[0].dtype == torch.bfloat16
    feed = dict(zip([i.name for i in model.graph.input],
                    (_bfloat16_numpy(a) if a.dtype == torch.bfloat16 else a.numpy() for a in arrays)))
    if evaluator == "ort":
        return _ort_run(model, feed)
    from dcn_deploy.backends.reference_evaluator import OracleEvaluator

    out = OracleEvaluator(model).run(None, feed)[0]
    return torch.from_numpy(out.astype(np.float32)).to(torch.bfloat16) if bfloat16 else out


@pytest.fixture(scope="module")
def host_roi(host_lib):
    if not host_lib.has("dcn_deform_roi_pool_forward_cpu"):
        pytest.skip(f"{host_lib.path} predates the RoI pooling kernels' CPU forward; rebuild with "
                    "`dcn-deploy plugin build`")
    return host_lib


def _roi_pool_by(implementation: str, case: RoiCase, tensors, request):
    if implementation in ("host", "cpu"):  # the host build of the CUDA kernels' arithmetic, the fast CPU forward
        return deform_roi_pool_native(*tensors, case.pooled, case.spatial_scale, case.sampling_ratio, case.gamma,
                                      entry=implementation, library=request.getfixturevalue("host_roi"))
    model = _roi_node_model(roi_opset.DEFORM_ROI_POOL, tensors[0].dtype, pooled_height=case.pooled[0],
                            pooled_width=case.pooled[1], spatial_scale=case.spatial_scale,
                            sampling_ratio=case.sampling_ratio, gamma=case.gamma)
    return _run_roi_model(model, implementation, tensors)


def _psroi_pool_by(implementation: str, case: PsroiCase, tensors, no_trans: bool, request):
    if implementation in ("host", "cpu"):
        return deform_psroi_pool_native(*tensors, case.spatial_scale, case.output_dim, case.group_size,
                                        case.pooled_size, case.part_size, case.sample_per_part, case.trans_std,
                                        no_trans, entry=implementation, library=request.getfixturevalue("host_roi"))
    model = _roi_node_model(roi_opset.DEFORM_PSROI_POOL, tensors[0].dtype, spatial_scale=case.spatial_scale,
                            output_dim=case.output_dim, group_size=case.group_size, pooled_size=case.pooled_size,
                            part_size=case.part_size, sample_per_part=case.sample_per_part,
                            trans_std=case.trans_std, no_trans=int(no_trans))
    return _run_roi_model(model, implementation, tensors)


ROI_IMPLEMENTATIONS = ["ort", "onnx_reference", "host", "cpu"]


@pytest.mark.parametrize("case_name", list(ROI_CASES))
@pytest.mark.parametrize("implementation", ROI_IMPLEMENTATIONS)
def test_deform_roi_pool_float32_matches_reference(implementation, case_name, request):
    case = ROI_CASES[case_name]
    x, rois, offset = (t.float() for t in _roi_tensors(case, seed=len(case_name)))
    got = _roi_pool_by(implementation, case, (x, rois, offset), request)
    error = relative_error(got, _roi_reference(case, x, rois, offset))
    assert error <= FLOAT32_TOLERANCE, (implementation, case, error)


@pytest.mark.parametrize("no_trans", [False, True], ids=["trans", "no_trans"])
@pytest.mark.parametrize("case_name", list(PSROI_CASES))
@pytest.mark.parametrize("implementation", ROI_IMPLEMENTATIONS)
def test_deform_psroi_pool_float32_matches_reference(implementation, case_name, no_trans, request):
    case = PSROI_CASES[case_name]
    x, rois, trans = (t.float() for t in _psroi_tensors(case, seed=len(case_name)))
    got = _psroi_pool_by(implementation, case, (x, rois, trans), no_trans, request)
    error = relative_error(got, _psroi_reference(case, x, rois, trans, no_trans))
    assert error <= FLOAT32_TOLERANCE, (implementation, case, error)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["float16", "bfloat16"])
@pytest.mark.parametrize("implementation", ["torch_op", "ort", "host"])
def test_roi_pooling_half_types_accumulate_in_float32(implementation, dtype, request):
    roi_case = RoiCase(2, 6, 11, 13, (3, 2), 0.5, 8, 0.125, 0.5)
    ps_case = PsroiCase(2, 10, 9, 8, 2, 2, 3, 3, 3, 0.5, 0.125, 0.5)
    roi_inputs = [t.to(dtype) for t in _roi_tensors(roi_case, seed=41, count=30)]
    ps_inputs = [t.to(dtype) for t in _psroi_tensors(ps_case, seed=42, count=30)]
    if implementation == "torch_op":
        got_roi = rp.deform_roi_pool(*roi_inputs, roi_case.pooled, roi_case.spatial_scale, roi_case.sampling_ratio,
                                     roi_case.gamma)
        got_ps = rp.deform_psroi_pool(*ps_inputs, ps_case.spatial_scale, ps_case.output_dim, ps_case.group_size,
                                      ps_case.pooled_size, ps_case.part_size, ps_case.sample_per_part,
                                      ps_case.trans_std)
    else:
        got_roi = _roi_pool_by(implementation, roi_case, roi_inputs, request)
        got_ps = _psroi_pool_by(implementation, ps_case, ps_inputs, False, request)
    for name, got, want in (("DeformRoIPool", got_roi, _roi_reference(roi_case, *roi_inputs)),
                            ("DeformPSRoIPool", got_ps, _psroi_reference(ps_case, *ps_inputs))):
        assert _dtype_name(got) == _dtype_name(want.to(dtype)), name
        error = relative_error(got, want)
        assert error <= EPS[dtype], (name, implementation, f"{error / EPS[dtype]:.2f} units of the half type")


def test_roi_cases_cover_the_matrix():
    """Boxes partly outside, tiny and empty boxes, offsets that push bins off the map, H or W of 1, batch > 1."""
    for case in ROI_CASES.values():
        x, rois, offset = _roi_tensors(case, seed=0)
        h, w = case.height / case.spatial_scale, case.width / case.spatial_scale
        assert ((rois[:, 1] < 0) | (rois[:, 2] < 0) | (rois[:, 3] > w) | (rois[:, 4] > h)).sum() >= 3
        size = torch.minimum(rois[:, 3] - rois[:, 1], rois[:, 4] - rois[:, 2]) * case.spatial_scale
        assert (size < 1).sum() >= 3 and (size == 0).any()
        assert len(set(rois[:, 0].tolist())) == case.batch > 1
    far = ROI_CASES["far_offsets"]
    x, rois, offset = _roi_tensors(far, seed=len("far_offsets"))
    shift = far.gamma * offset[:, 0].abs() * (rois[:, 3] - rois[:, 1]).view(-1, 1, 1) * far.spatial_scale
    assert float((shift > far.width).double().mean()) > 0.2  # bins moved more than the map's width
    assert any(c.height == 1 for c in ROI_CASES.values()) and any(c.width == 1 for c in ROI_CASES.values())
    assert any(c.height == 1 for c in PSROI_CASES.values()) and any(c.width == 1 for c in PSROI_CASES.values())
    assert any(c.classes > 1 and c.part_size != c.pooled_size for c in PSROI_CASES.values())


# ---- ModulatedDeformRoIPoolPack through the exporter -----------------------------------------------------------

def test_exported_modulated_roi_pool_matches_reference(tmp_path):
    """mmcv's modulated RoI pooling (offsets and mask from fc layers) exported, then run by ONNX Runtime and the
    ReferenceEvaluator; random fc weights, so the offsets and the mask are far from their zero/0.5 start."""
    from dcn_deploy.backends.reference_evaluator import OracleEvaluator
    from dcn_deploy.onnx.export import export
    from dcn_deploy.ops.roi_modules import ModulatedDeformRoIPoolPack

    torch.manual_seed(5)
    layer = ModulatedDeformRoIPoolPack((2, 3), 4, deform_fc_channels=8, spatial_scale=0.5, sampling_ratio=2,
                                       gamma=0.25).eval()
    for p in layer.parameters():
        torch.nn.init.normal_(p, std=0.3)
    case = RoiCase(2, 4, 1, 10, (2, 3), 0.5, 2, 0.25, 0.0)  # H = 1
    x, rois, _ = _roi_tensors(case, seed=6)
    path = tmp_path / "modulated.onnx"
    export(layer, (x.float(), rois.float()), path, verify=False, dynamic=True)
    x2, rois2, _ = _roi_tensors(dataclasses.replace(case, height=7, width=1), seed=7, count=9)  # W = 1 now
    with torch.no_grad():
        want = layer.double()(x2, rois2)
    model = onnx.load(str(path))
    feed = dict(zip([i.name for i in model.graph.input], (x2.float().numpy(), rois2.float().numpy())))
    for runner, got in (("ort", _ort_session(model).run(None, feed)[0]),
                        ("onnx_reference", OracleEvaluator(model).run(None, feed)[0])):
        assert relative_error(got, want) <= FLOAT32_TOLERANCE, runner
