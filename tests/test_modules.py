"""dcn_deploy's nn.Modules: torchvision's DeformConv2d and mmcv's DeformConv2dPack / ModulatedDeformConv2dPack,
with their constructor signatures and state_dict keys, and that they train."""
from __future__ import annotations

import copy
import inspect
from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dcn_deploy import DeformConv2d, DeformConv2dPack, ModulatedDeformConv2dPack, ShapeError, deform_conv2d

# torchvision.ops.DeformConv2d.__init__ (torchvision cannot be imported on CPU-only machines; see FIELD-NOTES)
TORCHVISION_SIGNATURE = [("in_channels", inspect.Parameter.empty), ("out_channels", inspect.Parameter.empty),
                         ("kernel_size", inspect.Parameter.empty), ("stride", 1), ("padding", 0), ("dilation", 1),
                         ("groups", 1), ("bias", True)]
# mmcv.ops.DeformConv2dPack / ModulatedDeformConv2dPack (less mmcv's CUDA-only im2col_step)
# mmcv: (in, out, kernel_size, stride, padding, dilation, groups, deform_groups, bias, im2col_step)
MMCV_PACK_SIGNATURE = TORCHVISION_SIGNATURE[:7] + [("deform_groups", 1), ("im2col_step", 32)]


def _signature(cls):
    return [(p.name, p.default) for p in inspect.signature(cls.__init__).parameters.values() if p.name != "self"]


# ----------------------------------------------------------------------------------------------------------------
# DeformConv2d: torchvision's module


def test_deform_conv2d_constructor_matches_torchvision():
    assert _signature(DeformConv2d) == TORCHVISION_SIGNATURE
    assert list(inspect.signature(DeformConv2d.forward).parameters) == ["self", "input", "offset", "mask"]


def test_deform_conv2d_parameters_have_torchvision_names_and_shapes():
    layer = DeformConv2d(6, 4, (3, 2), stride=(2, 1), padding=(1, 0), dilation=(1, 2), groups=2)
    shapes = {name: tuple(p.shape) for name, p in layer.named_parameters()}
    assert shapes == {"weight": (4, 3, 3, 2), "bias": (4,)}
    assert list(layer.state_dict()) == ["weight", "bias"]
    no_bias = DeformConv2d(6, 4, 3, bias=False)
    assert no_bias.bias is None and list(no_bias.state_dict()) == ["weight"]


def test_torchvision_state_dict_loads_and_is_used():
    g = torch.Generator().manual_seed(1)
    checkpoint = OrderedDict(weight=torch.randn(8, 2, 3, 3, generator=g), bias=torch.randn(8, generator=g))
    layer = DeformConv2d(4, 8, 3, padding=1, groups=2)
    layer.load_state_dict(checkpoint, strict=True)
    x = torch.randn(2, 4, 6, 5, generator=g)
    offset = torch.randn(2, 2 * 2 * 9, 6, 5, generator=g)
    mask = torch.rand(2, 2 * 9, 6, 5, generator=g)
    expected = deform_conv2d(x, offset, checkpoint["weight"], checkpoint["bias"], padding=1, mask=mask)
    torch.testing.assert_close(layer(x, offset, mask), expected, rtol=0, atol=0)
    torch.testing.assert_close(layer(x, offset), deform_conv2d(x, offset, checkpoint["weight"], checkpoint["bias"],
                                                               padding=1), rtol=0, atol=0)


def test_deform_conv2d_initialisation_is_like_conv2d():
    # torchvision (and nn.Conv2d) draw weights and bias from U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    layer = DeformConv2d(16, 32, 3).requires_grad_(False)
    bound = 1 / (16 * 9) ** 0.5
    assert float(layer.weight.abs().max()) <= bound and float(layer.bias.abs().max()) <= bound
    assert float(layer.weight.std()) > bound / 4  # not all zeros


@pytest.mark.parametrize("kwargs, words", [
    (dict(in_channels=6, out_channels=4, kernel_size=3, groups=4), ["in_channels (6)", "groups (4)"]),
    (dict(in_channels=6, out_channels=4, kernel_size=3, groups=3), ["out_channels (4)", "groups (3)"]),
    (dict(in_channels=4, out_channels=4, kernel_size=0), ["kernel_size"]),
    (dict(in_channels=4, out_channels=4, kernel_size=3, stride=0), ["stride"]),
    (dict(in_channels=4, out_channels=4, kernel_size=3, padding=-1), ["padding"]),
    (dict(in_channels=4, out_channels=4, kernel_size=3, dilation=(1, 0)), ["dilation"]),
])
def test_deform_conv2d_constructor_errors_name_the_argument(kwargs, words):
    with pytest.raises(ShapeError) as info:
        DeformConv2d(**kwargs)
    for word in words:
        assert word in str(info.value)


# ----------------------------------------------------------------------------------------------------------------
# DeformConv2dPack / ModulatedDeformConv2dPack: mmcv's layers


@pytest.mark.parametrize("cls", [DeformConv2dPack, ModulatedDeformConv2dPack])
def test_pack_constructor_matches_mmcv(cls):
    names = [(name, default) for name, default in _signature(cls) if name != "bias"]
    assert names == MMCV_PACK_SIGNATURE
    # mmcv: DeformConv2d has no bias by default, ModulatedDeformConv2d has one
    assert dict(_signature(cls))["bias"] is (cls is ModulatedDeformConv2dPack)


@pytest.mark.parametrize("cls, per_point, keys", [
    (DeformConv2dPack, 2, ["weight", "conv_offset.weight", "conv_offset.bias"]),
    (ModulatedDeformConv2dPack, 3, ["weight", "bias", "conv_offset.weight", "conv_offset.bias"]),
])
def test_pack_state_dict_has_mmcv_keys_and_shapes(cls, per_point, keys):
    layer = cls(8, 6, (3, 2), stride=(1, 2), padding=(1, 0), dilation=(2, 1), groups=2, deform_groups=4)
    state = layer.state_dict()
    assert sorted(state) == sorted(keys)
    assert state["weight"].shape == (6, 4, 3, 2)
    assert state["conv_offset.weight"].shape == (4 * per_point * 6, 8, 3, 2)
    assert state["conv_offset.bias"].shape == (4 * per_point * 6,)
    # the offset branch has the main convolution's geometry, so its output is the offset's spatial size
    conv = layer.conv_offset
    assert (conv.stride, conv.padding, conv.dilation) == ((1, 2), (1, 0), (2, 1))


def _random_pack_state(layer: nn.Module, seed: int) -> "OrderedDict[str, torch.Tensor]":
    g = torch.Generator().manual_seed(seed)
    return OrderedDict((name, torch.randn(t.shape, generator=g) * 0.3) for name, t in layer.state_dict().items())


@pytest.mark.parametrize("cls", [DeformConv2dPack, ModulatedDeformConv2dPack])
def test_mmcv_checkpoint_loads_and_forward_is_mmcvs_computation(cls):
    layer = cls(4, 6, 3, padding=1, deform_groups=2)
    state = _random_pack_state(layer, seed=2)
    layer.load_state_dict(state, strict=True)
    x = torch.randn(2, 4, 7, 6)
    # mmcv's forward: conv_offset output split in three chunks (o1, o2, mask logits) for v2, all offsets for v1
    out = F.conv2d(x, state["conv_offset.weight"], state["conv_offset.bias"], padding=1)
    if cls is ModulatedDeformConv2dPack:
        o1, o2, logits = torch.chunk(out, 3, dim=1)
        expected = deform_conv2d(x, torch.cat((o1, o2), dim=1), state["weight"], state["bias"], padding=1,
                                 mask=torch.sigmoid(logits))
    else:
        expected = deform_conv2d(x, out, state["weight"], None, padding=1)
    torch.testing.assert_close(layer(x), expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("cls", [DeformConv2dPack, ModulatedDeformConv2dPack])
def test_old_conv_offset_mask_keys_load(cls):
    layer = cls(4, 6, 3, padding=1)
    state = _random_pack_state(layer, seed=3)
    old = OrderedDict((k.replace("conv_offset.", "conv_offset_mask."), v) for k, v in state.items())
    parent = nn.Sequential(OrderedDict(dcn=layer))  # keys are found under a prefix too
    parent.load_state_dict(OrderedDict((f"dcn.{k}", v) for k, v in old.items()), strict=True)
    torch.testing.assert_close(layer.conv_offset.weight.detach(), state["conv_offset.weight"], rtol=0, atol=0)
    torch.testing.assert_close(layer.conv_offset.bias.detach(), state["conv_offset.bias"], rtol=0, atol=0)


class _Block(nn.Module):
    """A residual-block fragment as old mmdetection (v1) ResNets named it: ``conv2`` and, beside it, ``conv2_offset``."""

    def __init__(self, cls):
        super().__init__()
        self.conv2 = cls(4, 4, 3, padding=1)


@pytest.mark.parametrize("cls", [DeformConv2dPack, ModulatedDeformConv2dPack])
def test_mmcv_legacy_sibling_offset_keys_load(cls):
    """mmcv's own legacy rule (state_dict version < 2): ``<name>_offset.*`` beside the layer means
    ``<name>.conv_offset.*``. Checkpoints of the mmdetection v1 model zoo use it."""
    block = _Block(cls)
    state = _random_pack_state(block.conv2, seed=4)
    legacy = OrderedDict()
    for key, value in state.items():
        legacy[key.replace("conv_offset.", "conv2_offset.") if key.startswith("conv_offset.") else f"conv2.{key}"] = value
    # PyTorch hands each child only its own keys, so siblings are renamed on the checkpoint first.
    from dcn_deploy.ops.modules import upgrade_mmcv_state_dict

    block.load_state_dict(upgrade_mmcv_state_dict(legacy), strict=True)
    torch.testing.assert_close(block.conv2.conv_offset.weight.detach(), state["conv_offset.weight"], rtol=0, atol=0)
    torch.testing.assert_close(block.conv2.conv_offset.bias.detach(), state["conv_offset.bias"], rtol=0, atol=0)


def test_pack_deform_groups_must_divide_channels():
    with pytest.raises(ShapeError, match=r"deform_groups \(4\)"):
        ModulatedDeformConv2dPack(6, 6, 3, deform_groups=4)


def test_pack_repr_names_deform_groups():
    assert "deform_groups=2" in repr(DeformConv2dPack(4, 4, 3, deform_groups=2))


# ----------------------------------------------------------------------------------------------------------------
# Initialisation: a plain convolution at the start


@pytest.mark.parametrize("geometry", [dict(kernel_size=3, padding=1),
                                      dict(kernel_size=(3, 2), stride=(2, 1), padding=(1, 0), dilation=(1, 2),
                                           groups=2, deform_groups=2)])
def test_pack_layers_start_as_a_plain_convolution(geometry):
    x = torch.randn(2, 4, 9, 8)
    v1 = DeformConv2dPack(4, 6, bias=True, **geometry)
    assert torch.count_nonzero(v1.conv_offset.weight) == 0 and torch.count_nonzero(v1.conv_offset.bias) == 0
    conv_args = (v1.stride, v1.padding, v1.dilation, v1.groups)
    torch.testing.assert_close(v1(x), F.conv2d(x, v1.weight, v1.bias, *conv_args), rtol=1e-5, atol=1e-5)
    # v2: the mask starts at sigmoid(0) = 1/2 (as in mmcv), so the layer is half the convolution plus its bias
    v2 = ModulatedDeformConv2dPack(4, 6, **geometry)
    expected = F.conv2d(x, v2.weight * 0.5, v2.bias, *conv_args)
    torch.testing.assert_close(v2(x), expected, rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------------------------------------------
# Training


class _TinyNet(nn.Module):
    def __init__(self, cls):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.dcn = cls(8, 8, 3, padding=1, deform_groups=2)
        self.head = nn.Conv2d(8, 2, 1)

    def forward(self, x):
        return self.head(torch.relu(self.dcn(torch.relu(self.stem(x)))))


@pytest.mark.parametrize("cls", [DeformConv2dPack, ModulatedDeformConv2dPack])
def test_gradient_reaches_the_zero_initialised_offset_branch(cls):
    """The paper's initialisation only works if d(loss)/d(offset) is non-zero at offset 0 (integer positions)."""
    net = _TinyNet(cls)
    x = torch.randn(2, 3, 10, 9)
    net(x).square().mean().backward()
    assert torch.count_nonzero(net.dcn.conv_offset.weight.grad) > 0
    assert torch.isfinite(net.dcn.conv_offset.weight.grad).all()


@pytest.mark.parametrize("cls", [DeformConv2dPack, ModulatedDeformConv2dPack])
def test_a_few_training_steps_reduce_the_loss_and_move_the_offsets(cls):
    net = _TinyNet(cls)
    g = torch.Generator().manual_seed(5)
    x = torch.randn(4, 3, 10, 9, generator=g)
    # the target is a fixed shift of a smooth function of the input: offsets help to fit it
    target = torch.roll(x[:, :2], shifts=(1, -1), dims=(2, 3)) * 0.5
    optimiser = torch.optim.Adam(net.parameters(), lr=1e-2)
    losses = []
    for step in range(12):
        optimiser.zero_grad()
        loss = F.mse_loss(net(x), target)
        loss.backward()
        if step == 1:  # after one step the offsets are non-zero; their branch still gets gradient
            assert torch.count_nonzero(net.dcn.conv_offset.weight.detach()) > 0
            assert torch.count_nonzero(net.dcn.conv_offset.weight.grad) > 0
        optimiser.step()
        losses.append(float(loss.detach()))
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < 0.9 * losses[0], losses


# ----------------------------------------------------------------------------------------------------------------
# dtypes and empty batches


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_modules_run_in_other_dtypes(dtype):
    layer = ModulatedDeformConv2dPack(4, 4, 3, padding=1)
    with torch.no_grad():
        layer.conv_offset.weight.normal_(0, 0.1)
    x = torch.randn(1, 4, 6, 6)
    expected = layer(x).detach()
    layer.to(dtype)
    out = layer(x.to(dtype)).detach()
    assert out.dtype == dtype
    if dtype == torch.float64:
        # float64 against float32: float32's rounding only (measured 3e-7 of the output's scale)
        torch.testing.assert_close(out.float(), expected, rtol=1e-5, atol=1e-5 * float(expected.abs().max()))
        return
    # the converted layer against float64 on the same rounded weights and input, within one unit of the half type
    # at the output's scale: measured 0.53 (float16) and 0.54 (bfloat16) units; with the deformable convolution
    # computed in the half type instead of float32, 2.1 and 2.2 units
    with torch.no_grad():
        reference = copy.deepcopy(layer).double()(x.to(dtype).double())
    eps = {torch.float16: 2.0 ** -10, torch.bfloat16: 2.0 ** -7}[dtype]
    bound = eps * float(reference.abs().max())
    error = float((out.double() - reference).abs().max())
    assert error <= bound, f"{error / bound:.2f} units of {dtype}"


def test_modules_accept_an_empty_batch():
    layer = ModulatedDeformConv2dPack(4, 6, 3, stride=2, padding=1)
    out = layer(torch.randn(0, 4, 7, 8))
    assert out.shape == (0, 6, 4, 4)


# ----------------------------------------------------------------------------------------------------------------
# Migrating code that used mmcv's or torchvision's layers


@pytest.mark.parametrize("cls", [DeformConv2dPack, ModulatedDeformConv2dPack])
def test_pack_takes_mmcvs_old_deformable_groups_keyword(cls):
    """mmcv's layers still take ``deformable_groups=`` (their old name for ``deform_groups``), and older
    mmdetection code and configs pass it: the same call builds ours, with the same signature as before."""
    layer = cls(8, 4, 3, padding=1, deformable_groups=4)
    assert layer.deform_groups == 4 and layer.conv_offset.out_channels == 4 * cls._channels_per_point * 9
    with pytest.raises(TypeError, match="deform_groups=2 and deformable_groups=4"):
        cls(8, 4, 3, deform_groups=2, deformable_groups=4)
    assert "deformable_groups" not in dict(_signature(cls))


def test_mmcv_plain_layer_call_with_deform_groups_in_bias_place_is_refused():
    """mmcv's DeformConv2d(in, out, k, stride, padding, dilation, groups, deform_groups) with the import swapped for
    ours (torchvision's order: the 8th argument is bias) built a layer with a bias mmcv's has not: strict loading
    then fails on a missing key, and strict=False keeps a random bias (wrong outputs, no error)."""
    with pytest.raises(TypeError) as info:
        DeformConv2d(8, 8, 3, 1, 1, 1, 1, 2)
    assert "bias must be True or False, got 2" in str(info.value) and "deform_groups" in str(info.value)
    assert DeformConv2d(8, 8, 3, 1, 1, 1, 1, False).bias is None and DeformConv2d(8, 8, 3, bias=True).bias is not None
    assert ModulatedDeformConv2dPack(8, 8, 3, 1, 1, 1, 1, 2).deform_groups == 2  # mmcv's order for the Pack layers


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_op_under_autocast_computes_in_float32_as_torchvisions_does(dtype):
    """Under torch.autocast the convolution before hands a half-precision input and offsets while the layer's
    weight stays float32. torchvision's deform_conv2d (and mmcv's) run such a call, torchvision in float32 with the
    result in the input's dtype; ours refused it (mixed dtypes)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 6, 5, generator=g).to(dtype)
    offset = (2 * torch.randn(2, 2 * 2 * 9, 6, 5, generator=g)).to(dtype)
    mask = torch.rand(2, 2 * 9, 6, 5, generator=g)
    weight, bias = torch.randn(6, 2, 3, 3, generator=g), torch.randn(6, generator=g)
    with torch.autocast("cpu", dtype=dtype):
        out = deform_conv2d(x, offset, weight, bias, padding=1, mask=mask)
        same = deform_conv2d(x.float(), offset.float(), weight, bias, padding=1, mask=mask)
    expected = deform_conv2d(x.float(), offset.float(), weight, bias, padding=1, mask=mask)
    assert out.dtype == dtype and torch.equal(out, expected.to(dtype))
    assert same.dtype == torch.float32 and torch.equal(same, expected)
    with pytest.raises(TypeError, match="weight has dtype torch.float32 but input has"):  # outside autocast: refused
        deform_conv2d(x, offset, weight, bias, padding=1, mask=mask)


def test_model_under_autocast_runs_and_trains_its_float32_weights():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), ModulatedDeformConv2dPack(8, 8, 3, padding=1, deform_groups=2),
                          nn.ReLU(), DeformConv2dPack(8, 4, 3, stride=2, padding=1))
    for layer in (model[1], model[3]):
        nn.init.normal_(layer.conv_offset.weight, std=0.1)
    x = torch.randn(2, 3, 9, 8)
    expected = model(x).detach()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)
    assert out.dtype == torch.bfloat16 and out.shape == expected.shape
    # bfloat16 rounding of the autocast convolutions' inputs and outputs, a few units at the output's scale
    torch.testing.assert_close(out.float(), expected, rtol=0, atol=8 * 2.0 ** -7 * float(expected.abs().max()))
    out.float().square().mean().backward()
    for layer in (model[1], model[3]):
        assert layer.weight.grad.dtype == torch.float32 and layer.weight.grad.abs().sum() > 0
        assert layer.conv_offset.weight.grad.abs().sum() > 0
