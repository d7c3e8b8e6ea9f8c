"""The ops and layers inside PyTorch's own machinery: torch.compile and opcheck of the RoI ops' backward, the fake
kernels' strides, strided offsets and masks in the backward, autocast, torch.func transforms (refused where
unsupported, never silently wrong) and TorchScript.
Small sizes throughout: each test takes well under a few seconds on 2 cores, torch.compile ones a few more."""
from __future__ import annotations

import pytest
import torch

from dcn_deploy.ops.deform_conv import deform_conv2d
from dcn_deploy.ops.modules import DeformConv2d, DeformConv2dPack, ModulatedDeformConv2dPack
from dcn_deploy.ops.roi_modules import DeformPSRoIPool, DeformRoIPool, ModulatedDeformRoIPoolPack
from dcn_deploy.ops.roi_pool import deform_psroi_pool, deform_roi_pool

# torch's own deprecation notices for TorchScript (torch.func's transforms raise one internally too)
pytestmark = [pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning"),
              pytest.mark.filterwarnings("ignore:`torch.jit.trace(_method)?` is deprecated:DeprecationWarning")]


def _conv_args(dtype=torch.float32, seed=0):
    """A v2 layer with 2 groups and 2 offset groups on a 6x5 map, padding 1 (output 6x5)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 4, 6, 5, generator=g, dtype=dtype)
    offset = torch.randn(2, 2 * 2 * 9, 6, 5, generator=g, dtype=dtype) * 2
    weight = torch.randn(6, 2, 3, 3, generator=g, dtype=dtype)
    bias = torch.randn(6, generator=g, dtype=dtype)
    mask = torch.rand(2, 2 * 9, 6, 5, generator=g, dtype=dtype)
    return x, offset, weight, bias, mask


def _rois(dtype=torch.float32, k=3, seed=0):
    """k boxes (batch index, x1, y1, x2, y2) of 4 to 24 pixels on a 2-image batch, fractional corners."""
    g = torch.Generator().manual_seed(seed)
    index = torch.randint(0, 2, (k, 1), generator=g).to(dtype)
    corner = torch.rand(k, 2, generator=g, dtype=dtype) * 20
    size = torch.rand(k, 2, generator=g, dtype=dtype) * 20 + 4
    return torch.cat((index, corner, corner + size), dim=1)


def _roi_pool(x, rois, offset):  # adaptive sampling: the data-dependent grid sizes
    return deform_roi_pool(x, rois, offset, (3, 3), 0.5, 0, 0.1)


def _roi_pool_fixed(x, rois, offset):
    return deform_roi_pool(x, rois, offset, (3, 3), 0.5, 2, 0.1)


def _psroi_pool(x, rois, trans):  # 2 output channels, group 3, pooled 3, part 3, 2 samples per part
    return deform_psroi_pool(x, rois, trans, 0.5, 2, 3, 3, 3, 2, 0.1, False)


def _roi_case(name: str, dtype=torch.float64):
    g = torch.Generator().manual_seed(1)
    rois = _rois(dtype)
    shifts = (torch.rand(3, 2, 3, 3, generator=g, dtype=dtype) - 0.5) * 0.6
    channels = 18 if name == "psroi" else 4
    x = torch.randn(2, channels, 12, 12, generator=g, dtype=dtype)
    fn = {"roi_adaptive": _roi_pool, "roi_fixed": _roi_pool_fixed, "psroi": _psroi_pool}[name]
    return fn, x, rois, shifts


ROI_CASES = ("roi_adaptive", "roi_fixed", "psroi")


# ----------------------------------------------------------------------------------------------------------------
# The RoI ops' fake kernels and backward under tracing


@pytest.mark.parametrize("name", ROI_CASES)
def test_roi_op_outputs_are_contiguous_as_the_fake_kernels_promise(monkeypatch, name):
    """The composites pool into channels-last views: returned as they were, torch.compile planned the next op on
    the fake kernel's contiguous strides (inductor's stride assert failed; aot_eager's view of a flatten failed)."""
    fn, x, rois, shifts = _roi_case(name)
    assert fn(x, rois, shifts).is_contiguous()  # float64 always runs the composite
    monkeypatch.setenv("DCN_DEPLOY_NATIVE_CPU", "0")
    assert fn(x.float(), rois.float(), shifts.float()).is_contiguous()


@pytest.mark.parametrize("name", ROI_CASES)
def test_roi_ops_pass_opcheck(name):
    """Fake kernel against the real one (shapes, dtypes, strides), autograd registration and AOT dispatch of the
    forward with its backward (the backward's data-dependent RoI checks had no fake form: AOT tracing failed)."""
    fn, x, rois, shifts = _roi_case(name)
    op = torch.ops.dcn_deploy.deform_psroi_pool.default if name == "psroi" else \
        torch.ops.dcn_deploy.deform_roi_pool.default
    params = ((0.5, 2, 3, 3, 3, 2, 0.1, False) if name == "psroi"
              else ([3, 3], 0.5, 0 if name == "roi_adaptive" else 2, 0.1))
    args = (x.requires_grad_(), rois, shifts.requires_grad_(), *params)
    torch.library.opcheck(op, args, test_utils=("test_schema", "test_autograd_registration", "test_faketensor",
                                                "test_aot_dispatch_static"))
    # the backward op too: its fake kernel against the real one, each gradient asked for alone and both, and the
    # gradients it returns
    backward = torch.ops.dcn_deploy.deform_psroi_pool_backward.default if name == "psroi" else \
        torch.ops.dcn_deploy.deform_roi_pool_backward.default
    leaves = [x.detach().clone().requires_grad_(), shifts.detach().clone().requires_grad_()]
    out = fn(leaves[0], rois, leaves[1])
    grad_output = torch.randn_like(out)
    out.backward(grad_output)
    for flags in ((True, True), (True, False), (False, True)):
        backward_args = (grad_output, x.detach(), rois, shifts.detach(), *params, *flags)
        torch.library.opcheck(backward, backward_args, test_utils=("test_schema", "test_faketensor"))
        for flag, got, leaf in zip(flags, backward(*backward_args), leaves):
            if flag:
                torch.testing.assert_close(got, leaf.grad, rtol=1e-12, atol=1e-12)
            else:
                assert got.numel() == 0


@pytest.mark.parametrize("name", ["roi_adaptive", "psroi"])
def test_roi_backward_on_meta_and_fake_tensors(name):
    """Shape propagation of the backward (it called .item() on the RoIs: an error on meta and fake tensors)."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    fn, x, rois, shifts = _roi_case(name, torch.float32)
    x_meta, shifts_meta = x.to("meta").requires_grad_(), shifts.to("meta").requires_grad_()
    fn(x_meta, rois.to("meta"), shifts_meta).sum().backward()
    assert x_meta.grad.shape == x.shape and shifts_meta.grad.shape == shifts.shape
    with FakeTensorMode() as mode:
        x_fake, shifts_fake = mode.from_tensor(x).requires_grad_(), mode.from_tensor(shifts).requires_grad_()
        fn(x_fake, mode.from_tensor(rois), shifts_fake).sum().backward()
        assert x_fake.grad.shape == x.shape and shifts_fake.grad.shape == shifts.shape


@pytest.mark.parametrize("name", ["roi_adaptive", "psroi"])
def test_roi_backward_under_a_torch_dispatch_mode(name):
    """FlopCounterMode (a TorchDispatchMode) over a training step: the backward op's kernel recomputes its gradient
    with autograd turned back on inside the kernel (torch.func.vjp there failed under any dispatch mode: 'Cannot
    access storage of TensorWrapper')."""
    from torch.utils.flop_counter import FlopCounterMode

    fn, x, rois, shifts = _roi_case(name, torch.float32)
    leaves = [x.requires_grad_(), shifts.requires_grad_()]
    with FlopCounterMode(display=False):
        fn(leaves[0], rois, leaves[1]).sum().backward()
    assert all(leaf.grad is not None and leaf.grad.shape == leaf.shape for leaf in leaves)


@pytest.mark.slow
@pytest.mark.parametrize("name,dynamic", [("roi_adaptive", False), ("roi_adaptive", True), ("psroi", True)])
def test_roi_ops_compile_forward_and_backward(name, dynamic):
    """torch.compile of a training step through a RoI op, one graph (it failed: the backward's data-dependent
    checks were traced into the graph)."""
    torch._dynamo.reset()
    fn, x, rois, shifts = _roi_case(name, torch.float32)
    compiled = torch.compile(fn, backend="aot_eager", fullgraph=True, dynamic=dynamic)
    leaves = [t.clone().requires_grad_() for t in (x, shifts)]
    refs = [t.clone().requires_grad_() for t in (x, shifts)]
    got, want = compiled(leaves[0], rois, leaves[1]), fn(refs[0], rois, refs[1])
    torch.testing.assert_close(got, want)
    got.square().sum().backward()
    want.square().sum().backward()
    for leaf, ref in zip(leaves, refs):
        torch.testing.assert_close(leaf.grad, ref.grad)


@pytest.mark.slow
@pytest.mark.parametrize("layer", ["DeformRoIPool", "DeformPSRoIPool"])
def test_roi_layers_compile_with_dynamic_shapes_in_one_graph(layer):
    """torch.compile(dynamic=True) turns a layer's float attributes (spatial_scale, gamma) into symbolic floats;
    the argument check's math.isfinite could not take one (graph break; an error with fullgraph=True)."""
    torch._dynamo.reset()
    if layer == "DeformRoIPool":
        module, (_, x, rois, offset) = DeformRoIPool(3, 0.5, 2), _roi_case("roi_fixed", torch.float32)
        args = (x, rois, offset)
    else:
        module, (_, x, rois, _) = DeformPSRoIPool(2, 3, 0.5, sample_per_part=2), _roi_case("psroi", torch.float32)
        args = (x, rois)
    compiled = torch.compile(module, backend="aot_eager", fullgraph=True, dynamic=True)
    with torch.no_grad():
        torch.testing.assert_close(compiled(*args), module(*args))


# ----------------------------------------------------------------------------------------------------------------
# Memory layouts in the backward


def _width_slice(t: torch.Tensor) -> torch.Tensor:
    """The same values as a slice of a wider map: its rows do not merge into one axis."""
    wider = torch.zeros(*t.shape[:-1], t.shape[-1] + 1, dtype=t.dtype)
    wider[..., 1:] = t
    return wider[..., 1:]


def _transposed(t: torch.Tensor) -> torch.Tensor:
    return t.transpose(2, 3).contiguous().transpose(2, 3)


@pytest.mark.parametrize("path", ["host library", "composite"])
@pytest.mark.parametrize("layout", ["width_slice", "transposed"])
@pytest.mark.parametrize("which", ["offset", "mask"])
def test_conv_forward_and_backward_take_offset_and_mask_of_any_strides(monkeypatch, path, layout, which):
    """The backward (and the composite's forward, for the mask) viewed them as (N, G, K, 2, oH*oW): a width slice or
    transposed strides failed with 'view size is not compatible with input tensor's size and stride'."""
    if path == "composite":
        monkeypatch.setenv("DCN_DEPLOY_NATIVE_CPU", "0")
    x, offset, weight, bias, mask = _conv_args(torch.float64)
    strided = {"width_slice": _width_slice, "transposed": _transposed}[layout]
    args = {"offset": offset, "mask": mask}
    args[which] = strided(args[which])
    assert not args[which].is_contiguous()

    def run(offset, mask):
        leaves = [t.detach().requires_grad_() for t in (x, offset, weight, mask)]  # detach keeps the strides
        out = deform_conv2d(leaves[0], leaves[1], leaves[2], bias, padding=1, mask=leaves[3])
        out.square().sum().backward()
        return [out] + [t.grad for t in leaves]

    for got, want in zip(run(args["offset"], args["mask"]), run(offset, mask)):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


# ----------------------------------------------------------------------------------------------------------------
# Autocast


def _relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    got, want = got.detach().double(), want.detach().double()
    return float((got - want).abs().max() / want.abs().max())


@pytest.mark.parametrize("path", ["host library", "composite"])
def test_autocast_runs_the_ops_inside_in_float32_forward_and_backward(monkeypatch, path):
    """The public functions cast their arguments to float32 under autocast, but autocast stayed on inside the op: a
    dense layer's product (oneDNN's convolution on the host library's path, a matmul on the composite's) and the
    RoI composite's einsum ran in bfloat16, so a float32 call came back float32 with bfloat16's error (3e-3
    relative); a backward called inside the autocast block recomputed in bfloat16 too."""
    if path == "composite":
        monkeypatch.setenv("DCN_DEPLOY_NATIVE_CPU", "0")
    g = torch.Generator().manual_seed(5)
    x = torch.randn(2, 32, 6, 5, generator=g)
    offset = torch.randn(2, 2 * 9, 6, 5, generator=g) * 2
    weight = torch.randn(32, 32, 3, 3, generator=g)  # dense: groups 1
    bias, mask = torch.randn(32, generator=g), torch.rand(2, 9, 6, 5, generator=g)
    _, x_roi, rois, shifts = _roi_case("roi_fixed", torch.float32)

    def run():
        leaves = [t.clone().requires_grad_() for t in (x, weight, x_roi, shifts)]
        conv = deform_conv2d(leaves[0], offset, leaves[1], bias, padding=1, mask=mask)
        pooled = _roi_pool_fixed(leaves[2], rois, leaves[3])
        (conv.square().sum() + pooled.square().sum()).backward()
        return [conv, pooled] + [t.grad for t in leaves]

    want = run()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = run()
    for g_, w_ in zip(got, want):
        assert g_.dtype == torch.float32
        assert _relative_error(g_, w_) < 1e-5


_WITHOUT_REGISTER_AUTOCAST = """
import json, sys
import torch
from torch._library import custom_ops

if hasattr(custom_ops.CustomOpDef, "register_autocast"):
    del custom_ops.CustomOpDef.register_autocast  # as in torch before 2.7: the ops get no autocast rule
import dcn_deploy
from dcn_deploy.ops.roi_pool import deform_psroi_pool, deform_roi_pool

g = torch.Generator().manual_seed(5)
x = torch.randn(2, 32, 6, 5, generator=g)
offset = torch.randn(2, 2 * 9, 6, 5, generator=g) * 2
weight, bias = torch.randn(32, 32, 3, 3, generator=g), torch.randn(32, generator=g)
rois = torch.tensor([[0, 1.0, 1.0, 7.0, 8.0], [1, 0.5, 2.0, 8.0, 6.0]])
trans = torch.randn(2, 2, 2, 2, generator=g) * 0.3
calls = {
    "deform_conv2d": lambda: dcn_deploy.deform_conv2d(x, offset, weight, bias, padding=1),
    "deform_roi_pool": lambda: deform_roi_pool(x, rois, None, 3, 1.0, 2),
    "deform_psroi_pool": lambda: deform_psroi_pool(x[:, :8], rois, trans, 1.0, 2, 2, 2, 2, 2, 0.1),
}
errors = {}
for name, call in calls.items():
    want = call()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = call()
    errors[name] = [str(got.dtype), float((got - want).abs().max() / want.abs().max())]
print(json.dumps(errors))
"""


@pytest.mark.parametrize("path", ["host library", "composite"])
def test_autocast_is_off_inside_the_ops_also_where_torch_cannot_register_it(path):
    """torch before 2.7 has no ``register_autocast`` for custom ops (register_float32_autocast then does nothing):
    the public functions' own cast to float32 was all, and autocast stayed on inside the op, so a float32 call under
    CPU autocast came back with bfloat16's error (2e-3 relative). A separate process: the op's registration happens
    at import, with the method removed as it is in those versions."""
    import json
    import os
    import subprocess
    import sys

    env = {**os.environ, "DCN_DEPLOY_NATIVE_CPU": "0" if path == "composite" else "1"}
    done = subprocess.run([sys.executable, "-c", _WITHOUT_REGISTER_AUTOCAST], capture_output=True, text=True,
                          env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    errors = json.loads(done.stdout.strip().splitlines()[-1])
    assert all(dtype == "torch.float32" and error < 1e-5 for dtype, error in errors.values()), errors


# ----------------------------------------------------------------------------------------------------------------
# torch.func and forward-mode autodiff


def _primal(name):
    """(function of one tensor, that tensor); the other arguments are made here, outside any transform."""
    if name == "conv":
        x, offset, weight, bias, mask = _conv_args(torch.float64)
        return (lambda w: deform_conv2d(x, offset, w, bias, padding=1, mask=mask)), weight
    if name == "roi":
        _, x, rois, offset = _roi_case("roi_fixed")
        return (lambda o: _roi_pool_fixed(x, rois, o)), offset
    _, x, rois, trans = _roi_case("psroi")
    return (lambda t: _psroi_pool(t, rois, trans)), x


def _forward_ad(fn, primal):
    import torch.autograd.forward_ad as fwAD

    with fwAD.dual_level():
        return fwAD.unpack_dual(fn(fwAD.make_dual(primal, torch.ones_like(primal)))).tangent


FORWARD_MODES = {
    "forward_ad": _forward_ad,
    "jvp": lambda fn, primal: torch.func.jvp(fn, (primal,), (torch.ones_like(primal),))[1],
    "jacfwd": lambda fn, primal: torch.func.jacfwd(lambda p: fn(p).sum())(primal),
}


@pytest.mark.parametrize("mode", sorted(FORWARD_MODES))
@pytest.mark.parametrize("name", ["conv", "roi", "psroi"])
def test_forward_mode_autodiff_is_refused(name, mode):
    """The ops have no forward-mode formula: torch gave their outputs no tangent, a derivative of 0 (jvp, jacfwd)
    or None (forward_ad), silently."""
    fn, primal = _primal(name)
    with pytest.raises(RuntimeError, match="no forward-mode derivative.*loss.backward"):
        FORWARD_MODES[mode](fn, primal)


REVERSE_TRANSFORMS = {
    "grad": lambda fn, primal: torch.func.grad(lambda p: fn(p).sum())(primal),
    "vjp": lambda fn, primal: torch.func.vjp(fn, primal)[1](torch.ones_like(fn(primal))),
    "per_sample_grad": lambda fn, primal: torch.func.vmap(torch.func.grad(lambda p: fn(p).sum()))(
        primal.unsqueeze(0).expand(2, *primal.shape)),
}


@pytest.mark.parametrize("transform", sorted(REVERSE_TRANSFORMS))
@pytest.mark.parametrize("name", ["conv", "roi"])
def test_torch_func_reverse_transforms_are_refused_naming_the_op(name, transform):
    """torch refused them with an error about autograd.Function.setup_context, naming neither the op nor a way out."""
    fn, primal = _primal(name)
    with pytest.raises(RuntimeError, match=r"dcn_deploy\.deform_\w+ does not support torch\.func\.grad.*"
                                           r"loss\.backward"):
        REVERSE_TRANSFORMS[transform](fn, primal)


def test_vmap_and_backward_still_work():
    """What the refusals must leave alone: vmap over the ops, autograd of a vmapped call, and a torch.func.grad
    whose differentiated input does not reach the op."""
    x, offset, weight, bias, mask = _conv_args(torch.float64)

    def single(xi, oi, mi):
        return deform_conv2d(xi[None], oi[None], weight, bias, padding=1, mask=mi[None])[0]

    torch.testing.assert_close(torch.func.vmap(single)(x, offset, mask),
                               deform_conv2d(x, offset, weight, bias, padding=1, mask=mask))
    w = weight.clone().requires_grad_()
    torch.func.vmap(lambda xi: deform_conv2d(xi[None], offset[:1], w, bias, padding=1, mask=mask[:1])[0])(x).sum() \
        .backward()
    assert w.grad is not None and torch.isfinite(w.grad).all()
    scale = torch.tensor(2.0, dtype=torch.float64)
    out = torch.func.grad(lambda s: (deform_conv2d(x, offset, weight, bias, padding=1, mask=mask) * s).sum())(scale)
    torch.testing.assert_close(out, deform_conv2d(x, offset, weight, bias, padding=1, mask=mask).sum())
    _, fn_x, rois, shifts = _roi_case("roi_fixed")
    stacked = torch.stack((shifts, 2 * shifts))
    got = torch.func.vmap(lambda o: _roi_pool_fixed(fn_x, rois, o))(stacked)
    torch.testing.assert_close(got[1], _roi_pool_fixed(fn_x, rois, 2 * shifts))


# ----------------------------------------------------------------------------------------------------------------
# TorchScript


@pytest.mark.parametrize("target", ["DeformConv2d", "ModulatedDeformConv2dPack", "ModulatedDeformRoIPoolPack",
                                    "DeformPSRoIPool", "model_with_a_layer", "deform_conv2d", "deform_roi_pool"])
def test_torchscript_is_refused_in_one_clear_error(target):
    """torch.jit.script failed inside this package's argument checks (``Unknown type constructor Mapping``, ``'Tensor'
    object has no attribute 'forward'``); torch.jit.trace works and is what the error points to."""
    objects = {
        "DeformConv2d": lambda: DeformConv2d(4, 6, 3, padding=1),
        "ModulatedDeformConv2dPack": lambda: ModulatedDeformConv2dPack(4, 6, 3, padding=1),
        "ModulatedDeformRoIPoolPack": lambda: ModulatedDeformRoIPoolPack(3, 4, 16, 0.5, 2),
        "DeformPSRoIPool": lambda: DeformPSRoIPool(2, 3, 0.5),
        "model_with_a_layer": lambda: torch.nn.Sequential(torch.nn.Conv2d(4, 4, 1), DeformConv2dPack(4, 6, 3)),
        "deform_conv2d": lambda: deform_conv2d,
        "deform_roi_pool": lambda: deform_roi_pool,
    }
    with pytest.raises(RuntimeError, match="cannot be compiled with torch.jit.script.*torch.jit.trace"):
        torch.jit.script(objects[target]())


def test_torch_jit_trace_of_a_layer_runs_at_other_shapes():
    module = ModulatedDeformConv2dPack(4, 6, 3, padding=1).eval()
    torch.nn.init.normal_(module.conv_offset.weight, std=0.1)  # offsets that vary with the input
    traced = torch.jit.trace(module, (_conv_args()[0],))
    other = torch.randn(1, 4, 9, 7)
    torch.testing.assert_close(traced(other), module(other))
