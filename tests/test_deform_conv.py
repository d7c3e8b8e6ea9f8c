"""dcn_deploy.deform_conv2d: semantics, agreement with independent references, autograd, dtypes, errors, and
the torch.library integration (opcheck, torch.export, torch.compile).

References used here, none of them the code under test:
- torch.nn.functional.conv2d (zero and integer offsets),
- ONNX Runtime's native DeformConv (tests/ort_reference.py),
- a per-sample float64 loop in numpy (tests/ort_reference.naive_deform_conv2d),
- values worked out by hand for the out-of-image rule.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Tuple

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dcn_deploy import ShapeError, deform_conv2d
from ort_reference import naive_deform_conv2d, ort_deform_conv2d


# ----------------------------------------------------------------------------------------------------------------
# Case construction


@dataclass(frozen=True)
class Case:
    """One deformable convolution configuration (all integers); tensors come from :meth:`tensors`."""

    n: int = 2
    c: int = 4
    h: int = 7
    w: int = 6
    oc: int = 6
    kernel: Tuple[int, int] = (3, 3)
    stride: Tuple[int, int] = (1, 1)
    padding: Tuple[int, int] = (1, 1)
    dilation: Tuple[int, int] = (1, 1)
    groups: int = 1
    offset_groups: int = 1
    has_mask: bool = True
    has_bias: bool = True
    offset_scale: float = 1.5

    @property
    def out_hw(self) -> Tuple[int, int]:
        return tuple(  # type: ignore[return-value]
            (size + 2 * p - d * (k - 1) - 1) // s + 1
            for size, k, s, p, d in zip((self.h, self.w), self.kernel, self.stride, self.padding, self.dilation))

    def tensors(self, seed: int, dtype=torch.float64):
        """(input, offset, weight, bias, mask): random, non-zero; bias/mask None when the case has none."""
        g = torch.Generator().manual_seed(seed)
        kh, kw = self.kernel
        oh, ow = self.out_hw
        k = kh * kw
        x = torch.randn(self.n, self.c, self.h, self.w, generator=g, dtype=torch.float64)
        weight = torch.randn(self.oc, self.c // self.groups, kh, kw, generator=g, dtype=torch.float64)
        offset = (torch.rand(self.n, 2 * self.offset_groups * k, oh, ow, generator=g, dtype=torch.float64) * 2 - 1)
        offset = offset * self.offset_scale
        bias = torch.randn(self.oc, generator=g, dtype=torch.float64) if self.has_bias else None
        mask = (torch.rand(self.n, self.offset_groups * k, oh, ow, generator=g, dtype=torch.float64)
                if self.has_mask else None)
        return tuple(None if t is None else t.to(dtype) for t in (x, offset, weight, bias, mask))

    def run(self, x, offset, weight, bias, mask):
        return deform_conv2d(x, offset, weight, bias, stride=self.stride, padding=self.padding,
                             dilation=self.dilation, mask=mask)


def random_case(seed: int) -> Case:
    """A random valid configuration: groups, offset groups, per-axis stride/padding/dilation, odd shapes."""
    rng = np.random.default_rng(seed)
    groups = int(rng.choice([1, 1, 2, 3]))
    offset_groups = int(rng.choice([1, 1, 2, 4]))
    c = math.lcm(groups, offset_groups) * int(rng.integers(1, 3))
    oc = groups * int(rng.integers(1, 4))
    kernel = tuple(int(v) for v in rng.integers(1, 4, size=2))
    stride = tuple(int(v) for v in rng.integers(1, 3, size=2))
    padding = tuple(int(v) for v in rng.integers(0, 3, size=2))
    dilation = tuple(int(v) for v in rng.integers(1, 3, size=2))
    sizes = []
    for axis in range(2):
        size = 1 if rng.random() < 0.15 else int(rng.integers(2, 9))  # H or W of 1 now and then
        reach = dilation[axis] * (kernel[axis] - 1) + 1
        size = max(size, reach - 2 * padding[axis])  # the output must not be empty
        sizes.append(size)
    return Case(n=int(rng.integers(1, 4)), c=c, h=sizes[0], w=sizes[1], oc=oc, kernel=kernel, stride=stride,
                padding=padding, dilation=dilation, groups=groups, offset_groups=offset_groups,
                has_mask=bool(rng.random() < 0.6), has_bias=bool(rng.random() < 0.6),
                offset_scale=float(rng.choice([0.5, 2.0, 12.0])))  # 12: most samples fall off the image


NAMED_CASES = {
    "plain_3x3": Case(),
    "groups_and_offset_groups": Case(c=6, oc=9, groups=3, offset_groups=2),
    "depthwise": Case(c=4, oc=4, groups=4, offset_groups=4),
    "depthwise_multiplier": Case(c=3, oc=6, groups=3),
    "per_axis_stride_padding_dilation": Case(h=9, w=8, kernel=(3, 2), stride=(2, 1), padding=(2, 0), dilation=(1, 3)),
    "non_square_kernel": Case(kernel=(1, 3), padding=(0, 1)),
    "height_1": Case(h=1, kernel=(1, 3), padding=(0, 1)),
    "width_1": Case(w=1, kernel=(3, 3), padding=(1, 1)),
    "one_pixel": Case(h=1, w=1, kernel=(1, 1), padding=(0, 0)),
    "large_offsets_off_image": Case(offset_scale=40.0),
    "mask_without_bias": Case(has_bias=False, has_mask=True),
    "bias_without_mask": Case(has_bias=True, has_mask=False),
    "neither_bias_nor_mask": Case(has_bias=False, has_mask=False),
    "batch_3": Case(n=3),
    "padding_bigger_than_kernel": Case(h=3, w=2, kernel=(2, 2), padding=(3, 2)),
}


def _numpy(*tensors):
    return [None if t is None else t.detach().numpy() for t in tensors]


def _assert_close(actual: torch.Tensor, expected: torch.Tensor, rel: float) -> None:
    """Elementwise |a - e| <= rel * (|e| + scale), scale = the largest |e| (at least 1)."""
    scale = max(1.0, float(expected.abs().max())) if expected.numel() else 1.0
    torch.testing.assert_close(actual, expected, rtol=rel, atol=rel * scale)


# ----------------------------------------------------------------------------------------------------------------
# Zero and integer offsets against torch.nn.functional.conv2d

CONV_CASES = {
    "plain": Case(),
    "grouped": Case(c=6, oc=4, groups=2, offset_groups=3),
    "depthwise": Case(c=4, oc=8, groups=4),
    "stride_padding_dilation_per_axis": Case(h=10, w=9, kernel=(3, 2), stride=(2, 3), padding=(1, 2), dilation=(2, 1)),
    "kernel_1x4": Case(kernel=(1, 4), padding=(0, 2)),
    "width_1": Case(w=1, kernel=(3, 1), padding=(1, 0)),
}


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("name", sorted(CONV_CASES))
def test_zero_offsets_equal_conv2d(name, dtype):
    case = CONV_CASES[name]
    x, offset, weight, bias, mask = case.tensors(seed=1, dtype=dtype)
    offset = torch.zeros_like(offset)
    expected = F.conv2d(x, weight, bias, case.stride, case.padding, case.dilation, case.groups)
    rel = 1e-12 if dtype == torch.float64 else 1e-5
    _assert_close(case.run(x, offset, weight, bias, None), expected, rel)
    # a mask of ones is the same as no mask (v2 reduces to v1)
    _assert_close(case.run(x, offset, weight, bias, torch.ones_like(mask)), expected, rel)


def _shift(image: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """out[..., y, x] = image[..., y + dy, x + dx], zero where that falls outside the image."""
    h, w = image.shape[-2:]
    margin = max(abs(dy), abs(dx))
    padded = F.pad(image, (margin, margin, margin, margin))
    return padded[..., margin + dy: margin + dy + h, margin + dx: margin + dx + w]


def _shifted_convolution(case: Case, x, weight, bias, shifts, mask_scalars):
    """Integer offsets (the same at every output pixel) as an explicit sum of ordinary convolutions.

    shifts[g][i][j] = (dy, dx) of kernel point (i, j) of offset group g; mask_scalars[g][i][j] multiplies it.
    Kernel point (i, j) alone is a conv2d with a weight that is zero elsewhere, applied to the zero-padded input
    whose channel block g is shifted by that point's offset. (Padding first: a sample from the padding band can
    be shifted back into the image.)
    """
    kh, kw = case.kernel
    block = case.c // case.offset_groups
    padded = F.pad(x, (case.padding[1], case.padding[1], case.padding[0], case.padding[0]))
    total = None
    for i in range(kh):
        for j in range(kw):
            shifted = torch.cat([
                _shift(padded[:, g * block:(g + 1) * block], *shifts[g][i][j]) * mask_scalars[g][i][j]
                for g in range(case.offset_groups)], dim=1)
            point_weight = torch.zeros_like(weight)
            point_weight[:, :, i, j] = weight[:, :, i, j]
            term = F.conv2d(shifted, point_weight, None, case.stride, 0, case.dilation, case.groups)
            total = term if total is None else total + term
    return total if bias is None else total + bias.view(1, -1, 1, 1)


SHIFT_CASES = {
    "plain": Case(c=4, offset_groups=2),
    "grouped_per_axis": Case(c=6, oc=4, h=9, w=8, groups=2, offset_groups=3, kernel=(2, 3), stride=(2, 1),
                             padding=(0, 2), dilation=(1, 2)),
    "depthwise": Case(c=4, oc=4, groups=4, offset_groups=4, kernel=(3, 2), padding=(1, 0)),
}


@pytest.mark.parametrize("with_mask", [False, True])
@pytest.mark.parametrize("name", sorted(SHIFT_CASES))
def test_integer_offsets_equal_shifted_convolution(name, with_mask):
    case = SHIFT_CASES[name]
    x, offset, weight, bias, _ = case.tensors(seed=2)
    kh, kw = case.kernel
    rng = np.random.default_rng(3)
    # a different integer shift per (offset group, kernel point), some of them past the image border
    shifts = rng.integers(-4, 5, size=(case.offset_groups, kh, kw, 2)).tolist()
    scalars = (rng.uniform(0.2, 1.0, size=(case.offset_groups, kh, kw)) if with_mask
               else np.ones((case.offset_groups, kh, kw))).tolist()

    oh, ow = case.out_hw
    offset = torch.tensor(shifts, dtype=torch.float64).view(1, -1, 1, 1).expand(case.n, -1, oh, ow).contiguous()
    mask = (torch.tensor(scalars, dtype=torch.float64).view(1, -1, 1, 1).expand(case.n, -1, oh, ow).contiguous()
            if with_mask else None)

    expected = _shifted_convolution(case, x, weight, bias, shifts, scalars)
    _assert_close(case.run(x, offset, weight, bias, mask), expected, 1e-12)


# ----------------------------------------------------------------------------------------------------------------
# The out-of-image rule, by hand


def test_bilinear_boundary_rule_by_hand():
    """1x1 kernel of weight 1: out[y, x] is the bilinear sample at (y + dy, x + dx) of a 3x4 image."""
    image = torch.arange(1.0, 13.0, dtype=torch.float64).view(1, 1, 3, 4) * torch.tensor(
        [1.0, -0.5, 2.0, 0.25], dtype=torch.float64)  # non-constant along both axes
    v = image[0, 0]
    # (sample y, sample x) -> expected value: each neighbour outside [0, 2] x [0, 3] counts as zero
    targets = [
        ((-1.0, 1.0), 0.0),                   # one full row above the image
        ((-0.5, 1.0), 0.5 * v[0, 1]),         # half way to the row above: half of row 0
        ((-0.999, 2.0), 0.001 * v[0, 2]),     # just inside the (-1, H) band
        ((2.5, 1.0), 0.5 * v[2, 1]),          # half a row below the last one
        ((3.0, 1.0), 0.0),                    # y == H
        ((1.0, -1.0), 0.0),                   # x == -1
        ((1.0, -0.25), 0.75 * v[1, 0]),
        ((1.0, 3.5), 0.5 * v[1, 3]),
        ((1.0, 4.0), 0.0),                    # x == W
        ((0.5, 1.5), 0.25 * (v[0, 1] + v[0, 2] + v[1, 1] + v[1, 2])),
        ((-0.5, -0.5), 0.25 * v[0, 0]),       # corner: one of four neighbours inside
        ((2.25, 3.75), 0.75 * 0.25 * v[2, 3]),
    ]
    offset = torch.zeros(1, 2, 3, 4, dtype=torch.float64)
    expected = torch.zeros(1, 1, 3, 4, dtype=torch.float64)
    for index, ((sy, sx), value) in enumerate(targets):
        y, x = divmod(index, 4)
        offset[0, 0, y, x] = sy - y
        offset[0, 1, y, x] = sx - x
        expected[0, 0, y, x] = value
    weight = torch.ones(1, 1, 1, 1, dtype=torch.float64)
    torch.testing.assert_close(deform_conv2d(image, offset, weight), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("native", ["1", "0"], ids=["native_cpu", "composite"])
@pytest.mark.parametrize("groups", [1, 2])
def test_nan_and_infinite_offsets_sample_nothing(monkeypatch, native, groups):
    # as far off the image as possible: such a sample contributes zero, in the forward and the backward
    monkeypatch.setenv("DCN_DEPLOY_NATIVE_CPU", native)
    g = torch.Generator().manual_seed(11)
    x = torch.randn(2, 4, 5, 6, generator=g, requires_grad=True)
    weight = torch.randn(6, 4 // groups, 3, 3, generator=g, requires_grad=True)
    offset = torch.randn(2, 18, 5, 6, generator=g)
    far = offset.clone()
    for value, where in ((math.nan, (0, 4, 1, 2)), (math.inf, (1, 9, 3, 0)), (-math.inf, (1, 16, 0, 5))):
        offset[where] = value
        far[where] = 1e6
    offset.requires_grad_()
    mask = torch.rand(2, 9, 5, 6, generator=g)
    out = deform_conv2d(x, offset, weight, padding=1, mask=mask)
    with torch.no_grad():
        expected = deform_conv2d(x, far, weight, padding=1, mask=mask)
    torch.testing.assert_close(out.detach(), expected, rtol=1e-5, atol=1e-5)
    out.sum().backward()
    assert all(torch.isfinite(t.grad).all() for t in (x, weight, offset))


# ----------------------------------------------------------------------------------------------------------------
# An independent per-sample float64 loop


NAIVE_CASES = {
    "plain": Case(n=1, c=2, h=4, w=5, oc=2),
    "groups_offset_groups_per_axis": Case(n=2, c=4, h=5, w=4, oc=4, kernel=(2, 3), stride=(2, 1), padding=(1, 2),
                                          dilation=(1, 2), groups=2, offset_groups=2, offset_scale=3.0),
    "no_mask_no_bias_far_offsets": Case(n=1, c=2, h=3, w=3, oc=2, has_mask=False, has_bias=False, offset_scale=5.0),
    "height_1": Case(n=1, c=2, h=1, w=5, oc=1, kernel=(1, 2), padding=(0, 0), offset_scale=1.0),
}


# The forward on the CPU runs the host library's compiled code when it is built (as ./dev builds it), else the torch
# composite; the float64 reference checks below run on each path, so neither goes unchecked on a machine with the
# library. ("composite" sets DCN_DEPLOY_NATIVE_CPU=0; "default" is the path users get here.)
FORWARD_PATHS = {"default": "1", "composite": "0"}


@pytest.fixture(params=sorted(FORWARD_PATHS))
def forward_path(request, monkeypatch):
    monkeypatch.setenv("DCN_DEPLOY_NATIVE_CPU", FORWARD_PATHS[request.param])
    return request.param


@pytest.mark.parametrize("name", sorted(NAIVE_CASES))
def test_matches_naive_float64_loop(name, forward_path):
    case = NAIVE_CASES[name]
    x, offset, weight, bias, mask = case.tensors(seed=4)
    expected = naive_deform_conv2d(*_numpy(x, offset, weight, bias), case.stride, case.padding, case.dilation,
                                   *_numpy(mask))
    _assert_close(case.run(x, offset, weight, bias, mask), torch.from_numpy(expected), 1e-12)


# ----------------------------------------------------------------------------------------------------------------
# ONNX Runtime's native DeformConv over many configurations

ORT_CASES = {**{f"random_{seed}": random_case(seed) for seed in range(40)}, **NAMED_CASES}


@pytest.mark.parametrize("name", list(ORT_CASES))
def test_matches_onnxruntime_float32(name):
    case = ORT_CASES[name]
    x, offset, weight, bias, mask = case.tensors(seed=5, dtype=torch.float32)
    expected = ort_deform_conv2d(*_numpy(x, offset, weight, bias), case.stride, case.padding, case.dilation,
                                 *_numpy(mask))
    actual = case.run(x, offset, weight, bias, mask)
    assert actual.dtype == torch.float32 and actual.shape == expected.shape
    _assert_close(actual, torch.from_numpy(expected), 1e-5)


@pytest.mark.parametrize("name", [f"random_{seed}" for seed in range(0, 40, 3)] + sorted(NAMED_CASES))
def test_matches_onnxruntime_float64(name, forward_path):
    case = ORT_CASES[name]
    x, offset, weight, bias, mask = case.tensors(seed=6, dtype=torch.float64)
    expected = ort_deform_conv2d(*_numpy(x, offset, weight, bias), case.stride, case.padding, case.dilation,
                                 *_numpy(mask))
    _assert_close(case.run(x, offset, weight, bias, mask), torch.from_numpy(expected), 1e-11)


# ----------------------------------------------------------------------------------------------------------------
# Shapes and memory layout


def test_empty_batch_forward_and_backward():
    case = Case(n=0, c=4, oc=6, groups=2, offset_groups=2, stride=(2, 1), dilation=(1, 2), padding=(1, 2))
    x, offset, weight, bias, mask = (t.requires_grad_() for t in case.tensors(seed=7))
    out = case.run(x, offset, weight, bias, mask)
    assert out.shape == (0, 6, *case.out_hw) and out.dtype == x.dtype
    (out * 2).sum().backward()
    for t in (x, offset, mask):
        assert t.grad is not None and t.grad.shape == t.shape
    # no image contributes: the parameter gradients are zero, not missing
    assert weight.grad is not None and torch.count_nonzero(weight.grad) == 0
    assert bias.grad is not None and torch.count_nonzero(bias.grad) == 0


def test_output_is_contiguous_nchw():
    """The fake (meta) implementation promises a contiguous NCHW output; the real one must deliver it."""
    for name in ("plain_3x3", "groups_and_offset_groups", "depthwise"):
        case = NAMED_CASES[name]
        out = case.run(*case.tensors(seed=8))
        assert out.is_contiguous(), f"{name}: output strides {out.stride()} for shape {tuple(out.shape)}"


def test_non_contiguous_inputs_give_the_same_result():
    case = Case(c=4, oc=4, groups=2, offset_groups=2)
    x, offset, weight, bias, mask = case.tensors(seed=9)
    expected = case.run(x, offset, weight, bias, mask)
    x_cl = x.to(memory_format=torch.channels_last)
    offset_t = offset.transpose(2, 3).contiguous().transpose(2, 3)  # same values, transposed strides
    mask_cl = mask.to(memory_format=torch.channels_last)
    weight_cl = weight.to(memory_format=torch.channels_last)
    bias_strided = torch.stack([bias, bias], dim=1)[:, 0]
    assert not (x_cl.is_contiguous() or offset_t.is_contiguous() or bias_strided.is_contiguous())
    _assert_close(case.run(x_cl, offset_t, weight_cl, bias_strided, mask_cl), expected, 1e-12)


# ----------------------------------------------------------------------------------------------------------------
# Autograd


def _away_from_kinks(offset: torch.Tensor, seed: int) -> torch.Tensor:
    """Integer part from [-2, 2] plus a fraction in [0.2, 0.8]: sampling positions (integer grid + offset) then
    stay away from integers, where bilinear interpolation has kinks that break finite differences."""
    g = torch.Generator().manual_seed(seed)
    whole = torch.randint(-2, 3, offset.shape, generator=g).to(offset.dtype)
    fraction = torch.rand(offset.shape, generator=g, dtype=offset.dtype) * 0.6 + 0.2
    return whole + fraction


GRAD_CASES = {
    "v2_groups_per_axis": Case(n=2, c=4, h=5, w=4, oc=4, kernel=(2, 3), stride=(1, 2), padding=(1, 1),
                               dilation=(1, 2), groups=2, offset_groups=2),
    "v1_no_mask": Case(n=1, c=2, h=3, w=4, oc=2, kernel=(2, 2), padding=(0, 1), has_mask=False),
    "depthwise": Case(n=1, c=3, h=4, w=3, oc=3, kernel=(3, 2), padding=(1, 0), groups=3, offset_groups=3),
    # channel multiplier 2: the composite's depth-wise branch with more than one output channel per group (the
    # backward always runs the composite, so only finite differences of the forward check its gradients)
    "depthwise_multiplier": Case(n=1, c=2, h=4, w=3, oc=4, kernel=(2, 2), padding=(1, 0), groups=2,
                                 offset_groups=2),
}


@pytest.mark.parametrize("name", sorted(GRAD_CASES))
def test_gradcheck_float64(name):
    case = GRAD_CASES[name]
    x, offset, weight, bias, mask = case.tensors(seed=10)
    offset = _away_from_kinks(offset, seed=11)
    leaves = [t.requires_grad_() for t in (x, offset, weight, bias, mask) if t is not None]

    def function(*args):
        it = iter(args)
        return case.run(next(it), next(it), next(it), next(it) if bias is not None else None,
                        next(it) if mask is not None else None)

    # fast mode (random projections of the Jacobian) keeps this to about a second; the tiny case runs in full
    fast = name != "v1_no_mask"
    assert torch.autograd.gradcheck(function, tuple(leaves), eps=1e-6, atol=1e-6, rtol=1e-5, fast_mode=fast)


def test_gradient_flows_to_every_argument_that_asks():
    case = GRAD_CASES["v2_groups_per_axis"]
    x, offset, weight, bias, mask = case.tensors(seed=12)
    offset = _away_from_kinks(offset, seed=13).requires_grad_()
    weight.requires_grad_()  # input, bias and mask are constants here
    case.run(x, offset, weight, bias, mask).square().sum().backward()
    assert x.grad is None and bias.grad is None and mask.grad is None
    assert torch.count_nonzero(offset.grad) > 0 and torch.count_nonzero(weight.grad) > 0


def test_double_backward_is_refused_not_silently_first_order():
    """A gradient penalty (create_graph=True) would get gradients without this op's second-order terms: the
    backward works on detached copies, and the composite it runs has no double backward itself. It says so."""
    case = GRAD_CASES["v2_groups_per_axis"]
    x, offset, weight, bias, mask = case.tensors(seed=14)
    x.requires_grad_()
    weight.requires_grad_()
    out = case.run(x, offset, weight, bias, mask).square().sum()
    with pytest.raises(RuntimeError, match="first-order gradients only"):
        torch.autograd.grad(out, x, create_graph=True)
    (grad,) = torch.autograd.grad(case.run(x, offset, weight, bias, mask).square().sum(), x)   # first order works
    assert torch.count_nonzero(grad) > 0


# ----------------------------------------------------------------------------------------------------------------
# dtypes

HALF_EPS = {torch.float16: 2.0 ** -10, torch.bfloat16: 2.0 ** -7}


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_types_match_float32_on_the_same_rounded_inputs(dtype):
    case = Case(c=8, oc=8, groups=2, offset_groups=2, stride=(1, 2), dilation=(2, 1), padding=(2, 1))
    half = [None if t is None else t.to(dtype) for t in case.tensors(seed=14)]
    out = case.run(*half)
    assert out.dtype == dtype and out.shape == (case.n, case.oc, *case.out_hw)
    expected = case.run(*[None if t is None else t.float() for t in half])
    # computed in float32, then rounded once: within about one unit in the last place of the output dtype
    eps = HALF_EPS[dtype]
    torch.testing.assert_close(out.float(), expected, rtol=eps, atol=eps * float(expected.abs().max()) / 8)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_backward_keeps_each_arguments_dtype(dtype):
    case = Case(n=1, c=2, h=4, w=4, oc=2)
    leaves = [t.to(dtype).requires_grad_() for t in case.tensors(seed=15)]
    out = case.run(*leaves)
    assert out.dtype == dtype
    out.float().sum().backward()
    for t in leaves:
        assert t.grad is not None and t.grad.dtype == dtype and torch.isfinite(t.grad.float()).all()
    # the half-type gradients agree with float64's, to the output dtype's precision
    reference = [t.detach().double().requires_grad_() for t in leaves]
    case.run(*reference).sum().backward()
    eps = HALF_EPS.get(dtype, 1e-6)
    for t, r in zip(leaves, reference):
        torch.testing.assert_close(t.grad.double(), r.grad, rtol=4 * eps, atol=4 * eps * float(r.grad.abs().max()))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_output_dtype_equals_input_dtype(dtype):
    case = Case(n=1, c=2, h=3, w=3, oc=2)
    assert case.run(*case.tensors(seed=16, dtype=dtype)).dtype == dtype


# ----------------------------------------------------------------------------------------------------------------
# Errors: each names the argument at fault


def _valid(**changes):
    """Arguments of a valid call (as a dict), with some replaced."""
    case = Case(n=2, c=4, h=5, w=5, oc=4, groups=2, offset_groups=2)
    x, offset, weight, bias, mask = case.tensors(seed=17, dtype=torch.float32)
    args = dict(input=x, offset=offset, weight=weight, bias=bias, stride=case.stride, padding=case.padding,
                dilation=case.dilation, mask=mask)
    args.update(changes)
    return args


def test_valid_call_used_by_the_error_tests_runs():
    assert deform_conv2d(**_valid()).shape == (2, 4, 5, 5)


BAD_SHAPES = {
    # name: (argument changes, exception type, words the message must contain)
    "offset channels not 2*kH*kW*G": (dict(offset=torch.randn(2, 35, 5, 5)), ShapeError, ["offset", "18"]),
    "offset with no channels": (dict(offset=torch.randn(2, 0, 5, 5)), ShapeError, ["offset"]),
    "offset groups do not divide C": (dict(offset=torch.randn(2, 54, 5, 5), mask=None), ShapeError,
                                      ["offset_groups", "3"]),
    "offset spatial size": (dict(offset=torch.randn(2, 36, 4, 5)), ShapeError, ["offset", "5x5"]),
    "offset batch": (dict(offset=torch.randn(1, 36, 5, 5)), ShapeError, ["offset", "batch"]),
    "channels not divisible by weight.shape[1]": (dict(weight=torch.randn(4, 3, 3, 3)), ShapeError,
                                                  ["input channels", "weight"]),
    "out channels not divisible by groups": (dict(weight=torch.randn(5, 2, 3, 3), bias=torch.randn(5)), ShapeError,
                                             ["weight.shape[0]", "groups"]),
    "mask channels": (dict(mask=torch.rand(2, 9, 5, 5)), ShapeError, ["mask", "(2, 18, 5, 5)"]),
    "mask spatial size": (dict(mask=torch.rand(2, 18, 5, 4)), ShapeError, ["mask"]),
    "mask rank": (dict(mask=torch.rand(2, 18, 25)), ShapeError, ["mask"]),
    "bias length": (dict(bias=torch.randn(3)), ShapeError, ["bias", "(4,)"]),
    "bias rank": (dict(bias=torch.randn(4, 1)), ShapeError, ["bias"]),
    "input 3-D": (dict(input=torch.randn(4, 5, 5)), ShapeError, ["input", "4-D"]),
    "input 5-D": (dict(input=torch.randn(2, 4, 5, 5, 1)), ShapeError, ["input", "4-D"]),
    "offset 3-D": (dict(offset=torch.randn(36, 5, 5)), ShapeError, ["offset", "4-D"]),
    "weight 2-D": (dict(weight=torch.randn(4, 18)), ShapeError, ["weight", "4-D"]),
    "empty kernel": (dict(weight=torch.randn(4, 2, 0, 3)), ShapeError, ["weight"]),
    "empty image": (dict(input=torch.randn(2, 4, 0, 5)), ShapeError, ["input"]),
    "kernel larger than padded input": (dict(dilation=(4, 1)), ShapeError,
                                        ["output would be empty"]),
    "stride 0": (dict(stride=0), ShapeError, ["stride", ">= 1"]),
    "negative padding": (dict(padding=(1, -1)), ShapeError, ["padding", ">= 0"]),
    "dilation 0": (dict(dilation=(0, 1)), ShapeError, ["dilation", ">= 1"]),
    "stride of 3 values": (dict(stride=(1, 1, 1)), ShapeError, ["stride", "2 values"]),
    "stride bool": (dict(stride=True), ShapeError, ["stride"]),
    "padding None": (dict(padding=None), ShapeError, ["padding"]),
    "stride float": (dict(stride=1.5), ShapeError, ["stride"]),
    "stride pair with a float": (dict(stride=(1.5, 1)), ShapeError, ["stride"]),
    "dilation string": (dict(dilation="11"), ShapeError, ["dilation"]),
    "mixed dtypes": (dict(mask=torch.rand(2, 18, 5, 5, dtype=torch.float64)), TypeError, ["mask", "dtype"]),
    "integer input": (dict(input=torch.ones(2, 4, 5, 5, dtype=torch.int64)), TypeError, ["input", "dtype"]),
    "complex input": (dict(input=torch.ones(2, 4, 5, 5, dtype=torch.complex64)), TypeError, ["input", "dtype"]),
    "input not a tensor": (dict(input=np.ones((2, 4, 5, 5), np.float32)), TypeError, ["input", "Tensor"]),
    "offset not a tensor": (dict(offset=[[0.0]]), TypeError, ["offset", "Tensor"]),
    "weight on another device": (dict(weight=torch.randn(4, 2, 3, 3, device="meta")), ValueError,
                                 ["weight", "device"]),
}


@pytest.mark.parametrize("name", list(BAD_SHAPES))
def test_bad_arguments_raise_an_error_naming_the_argument(name):
    changes, error, words = BAD_SHAPES[name]
    with pytest.raises(error) as info:
        deform_conv2d(**_valid(**changes))
    message = str(info.value)
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"


def test_shape_error_is_a_value_error():
    # callers that catch ValueError (as torch's own shape errors are) keep working
    assert issubclass(ShapeError, ValueError)


def test_numpy_integers_are_accepted_as_stride_padding_dilation():
    """torchvision accepts any integer type (configs loaded from numpy/yaml give numpy ints)."""
    expected = deform_conv2d(**_valid())
    actual = deform_conv2d(**_valid(stride=np.int64(1), padding=(np.int32(1), np.int64(1)), dilation=np.int64(1)))
    torch.testing.assert_close(actual, expected)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device to put tensors on two real devices")
def test_tensors_on_two_devices_are_rejected():
    with pytest.raises(ValueError, match="offset"):
        deform_conv2d(**_valid(offset=_valid()["offset"].cuda()))


# ----------------------------------------------------------------------------------------------------------------
# torch.library integration


def _opcheck_args(name: str, seed: int):
    case = GRAD_CASES[name]
    x, offset, weight, bias, mask = case.tensors(seed=seed)
    offset = _away_from_kinks(offset, seed=seed + 1)
    tensors = [t.requires_grad_() if t is not None else None for t in (x, offset, weight, bias, mask)]
    return (*tensors, list(case.stride), list(case.padding), list(case.dilation))


# opcheck's fifth check, AOT dispatch with dynamic shapes, takes ~20 s of CPU here; dynamic shapes are covered
# by the torch.export test below instead
FAST_OPCHECKS = ("test_schema", "test_autograd_registration", "test_faketensor", "test_aot_dispatch_static")


@pytest.mark.parametrize("name", ["v2_groups_per_axis", "v1_no_mask"])
def test_opcheck_custom_op(name):
    """Schema, fake (meta) implementation against the real one (shape, dtype and strides), autograd
    registration and AOT dispatch of the registered op."""
    torch.library.opcheck(torch.ops.dcn_deploy.deform_conv2d.default, _opcheck_args(name, seed=18),
                          test_utils=FAST_OPCHECKS)


@pytest.mark.parametrize("name", ["v2_groups_per_axis", "depthwise"])
def test_a_channels_last_input_gives_a_channels_last_output(name):
    """As torch's convolutions: the output follows the input's memory format (on the GPU a dense layer's GEMM path
    reads and writes channels-last tensors where they are), with the same values; the fake implementation plans
    the same strides (opcheck's fake-tensor check compares them), so torch.compile's code indexes it rightly."""
    case = GRAD_CASES[name]
    x, offset, weight, bias, mask = case.tensors(seed=5)
    expected = deform_conv2d(x, offset, weight, bias, stride=case.stride, padding=case.padding,
                             dilation=case.dilation, mask=mask)
    x_last = x.contiguous(memory_format=torch.channels_last)
    got = deform_conv2d(x_last, offset, weight, bias, stride=case.stride, padding=case.padding,
                        dilation=case.dilation, mask=mask)
    assert got.is_contiguous(memory_format=torch.channels_last) and not got.is_contiguous()
    assert torch.equal(got, expected)
    assert expected.is_contiguous()
    args = list(_opcheck_args(name, seed=7))
    args[0] = args[0].detach().contiguous(memory_format=torch.channels_last).requires_grad_()
    torch.library.opcheck(torch.ops.dcn_deploy.deform_conv2d.default, tuple(args),
                          test_utils=("test_faketensor", "test_autograd_registration"))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("name", sorted(NAMED_CASES))
def test_channels_last_inputs_give_the_nchw_values_on_every_path(name, dtype):
    """Every named case, on the CPU forward the op runs (the host library's where built, which reads a channels-last
    input where it is, else the composite) and in float32, float64 and bfloat16 (computed in float32): a
    channels-last input gives the NCHW input's values exactly, in a channels-last output where the layout differs."""
    case = NAMED_CASES[name]
    x, offset, weight, bias, mask = (None if t is None else t.to(dtype) for t in case.tensors(seed=31))
    expected = case.run(x, offset, weight, bias, mask)
    x_last = x.contiguous(memory_format=torch.channels_last)
    got = case.run(x_last, offset, weight, bias, mask)
    assert torch.equal(got, expected), name
    both = x.is_contiguous(memory_format=torch.channels_last)  # C or H*W of 1: the two layouts are one
    assert got.is_contiguous() if both else got.is_contiguous(memory_format=torch.channels_last)


class _OffsetsFromInput(torch.nn.Module):
    """A tiny DCNv2 block that predicts its offsets and mask from the input, as models do."""

    def __init__(self):
        super().__init__()
        self.conv_offset = torch.nn.Conv2d(4, 3 * 2 * 9, 3, padding=1)
        self.weight = torch.nn.Parameter(torch.randn(6, 2, 3, 3))
        self.bias = torch.nn.Parameter(torch.randn(6))

    def forward(self, x):
        out = self.conv_offset(x)
        offset, mask = out[:, :36], torch.sigmoid(out[:, 36:])
        return deform_conv2d(x, offset, self.weight, self.bias, padding=1, mask=mask)


def test_torch_export_with_dynamic_batch_and_size():
    model = _OffsetsFromInput().eval()
    x = torch.randn(2, 4, 8, 7)
    batch, height = torch.export.Dim("batch", min=1, max=16), torch.export.Dim("height", min=4, max=64)
    program = torch.export.export(model, (x,), dynamic_shapes={"x": {0: batch, 2: height}})
    targets = [str(node.target) for node in program.graph.nodes if node.op == "call_function"]
    assert "dcn_deploy.deform_conv2d.default" in targets  # kept as one opaque op, ready for the ONNX exporter
    for shape in ((2, 4, 8, 7), (3, 4, 11, 7)):
        other = torch.randn(shape)
        torch.testing.assert_close(program.module()(other), model(other))


@pytest.mark.slow
def test_torch_compile_forward_and_backward():
    model = _OffsetsFromInput()
    compiled = torch.compile(model, dynamic=False)
    x = torch.randn(2, 4, 8, 7)
    expected = model(x)
    actual = compiled(x)
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5)
    actual.square().sum().backward()
    compiled_grad = model.weight.grad.clone()
    model.zero_grad()
    expected.square().sum().backward()
    torch.testing.assert_close(compiled_grad, model.weight.grad, rtol=1e-4, atol=1e-4)


# ----------------------------------------------------------------------------------------------------------------
# The composite in chunks: images, then bands of output rows (a small column budget forces both)

@pytest.mark.parametrize("name", ["per_axis_stride_padding_dilation", "groups_and_offset_groups", "depthwise",
                                  "height_1", "large_offsets_off_image", "batch_3"])
@pytest.mark.parametrize("budget", [1, 40, 200])  # elements: one row per band, a few rows, whole images
def test_composite_in_row_bands_and_image_chunks_is_the_same_function(monkeypatch, name, budget):
    from dcn_deploy.ops import deform_conv as module

    case = NAMED_CASES[name]
    x, offset, weight, bias, mask = case.tensors(seed=21)
    args = (x, offset, weight, bias, mask, case.stride, case.padding, case.dilation)
    whole = module._forward_composite(*args)
    monkeypatch.setattr(module, "_MAX_COLUMN_ELEMENTS", budget)
    leaves = [t.detach().clone().requires_grad_() for t in (x, offset, weight)]
    chunked = module._forward_composite(*leaves, bias, mask, case.stride, case.padding, case.dilation)
    _assert_close(chunked, whole, 1e-12)
    # gradients flow through the bands: the same as the unchunked function's
    grad = torch.randn_like(chunked)
    got = torch.autograd.grad(chunked, leaves, grad)
    monkeypatch.setattr(module, "_MAX_COLUMN_ELEMENTS", 1 << 30)
    refs = [t.detach().clone().requires_grad_() for t in (x, offset, weight)]
    want = torch.autograd.grad(module._forward_composite(*refs, bias, mask, case.stride, case.padding,
                                                         case.dilation), refs, grad)
    for g, w in zip(got, want):
        _assert_close(g, w, 1e-12)
