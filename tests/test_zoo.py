"""The model zoo: every model builds and runs at small sizes, the ResNet is torchvision-compatible by name and
shape, zero-initialised offsets make a deformable model equal its plain twin, and checkpoints load as promised."""
from __future__ import annotations

import json

import pytest
import torch

from dcn_deploy.models import zoo
from dcn_deploy.models.checkpoint import (CheckpointError, IncompleteCheckpointError, LoadReport, head_class_count,
                                          load_checkpoint)
from dcn_deploy.models.deeplab import DeepLab
from dcn_deploy.models.resnet import ResNet
from dcn_deploy.models.rfcn import RFCNHead


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ---- torchvision's names, written out from the ResNet definition (torchvision cannot be imported here) -------------
def torchvision_resnet_keys(blocks):
    keys = ["conv1.weight"] + _bn("bn1")
    for stage, count in enumerate(blocks, start=1):
        for b in range(count):
            prefix = f"layer{stage}.{b}."
            for i in (1, 2, 3):
                keys += [f"{prefix}conv{i}.weight"] + _bn(f"{prefix}bn{i}")
            if b == 0:
                keys += [f"{prefix}downsample.0.weight"] + _bn(f"{prefix}downsample.1")
    return keys + ["fc.weight", "fc.bias"]


def _bn(name):
    return [f"{name}.{s}" for s in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")]


RESNET50_BLOCKS, RESNET101_BLOCKS = (3, 4, 6, 3), (3, 4, 23, 3)


def randomise(model, seed=0):
    """Random weights and BatchNorm statistics, so eval-mode BatchNorm is not the identity."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if not tensor.is_floating_point() or ".conv_offset." in name:
                continue
            if name.endswith("running_var"):
                tensor.copy_(0.5 + torch.rand(tensor.shape, generator=g))
            elif name.endswith("running_mean") or name.endswith("bias"):
                tensor.copy_(0.1 * torch.randn(tensor.shape, generator=g))
            elif tensor.dim() == 1:  # BatchNorm scale
                tensor.copy_(0.5 + 0.5 * torch.rand(tensor.shape, generator=g))
            else:
                fan_in = tensor[0].numel()
                tensor.copy_(torch.randn(tensor.shape, generator=g) * (2.0 / fan_in) ** 0.5)
    return model


def close(a, b, rtol=1e-4):
    scale = b.abs().max().item()
    return (a - b).abs().max().item() <= rtol * max(scale, 1e-6)


# ---- registry -----------------------------------------------------------------------------------------------------
def test_registry_has_the_papers_networks_and_their_plain_twins():
    listed = zoo.names()
    for name in ("resnet50_dcn_c5", "resnet50_dcnv2_c3c5", "resnet101_dcn_c5", "deeplab_resnet50_dcn",
                 "rfcn_resnet50_dcn", "resnet50_plain", "deeplab_resnet50_plain", "rfcn_resnet50_plain"):
        assert name in listed
    for name in listed:
        entry = zoo.get(name)
        assert entry.description
        if entry.deformable:
            twin = zoo.get(entry.plain)
            assert not twin.deformable and twin.task == entry.task and twin.input_names == entry.input_names


def test_resnext_is_torchvisions_resnext50_32x4d_with_grouped_deformable_layers():
    """The ResNeXt entries have torchvision's resnext50_32x4d parameters (25,028,904; its grouped 3x3 weights of
    4 to 32 input channels a group) and key names; the DCNv2 one's 13 deformable layers keep the 32 groups."""
    plain = zoo.get("resnext50_32x4d_plain").build()
    deformable = zoo.get("resnext50_32x4d_dcnv2_c3c5").build()
    assert sum(p.numel() for p in plain.parameters()) == 25_028_904
    shapes = {k: tuple(v.shape) for k, v in plain.state_dict().items()}
    assert shapes["layer1.0.conv2.weight"] == (128, 4, 3, 3) and shapes["layer4.2.conv2.weight"] == (1024, 32, 3, 3)
    layers = deformable.deformable_layers()
    assert len(layers) == 13 and layers[0] == "layer2.0.conv2"
    assert all(deformable.get_submodule(name).groups == 32 for name in layers)
    own = {k: tuple(v.shape) for k, v in deformable.state_dict().items() if "conv_offset" not in k}
    assert own == shapes  # a plain checkpoint's keys and shapes, plus the offset branches


def test_unknown_name_lists_the_valid_ones():
    with pytest.raises(KeyError, match="resnet50_dcn_c5"):
        zoo.get("resnet50_dcn")


def test_example_inputs_are_seeded_and_rois_lie_inside_the_image():
    entry = zoo.get("rfcn_resnet50_dcn")
    image, rois = entry.example_inputs(batch=2, size=(48, 80))
    again, rois_again = entry.example_inputs(batch=2, size=(48, 80))
    assert image.shape == (2, 3, 48, 80) and torch.equal(image, again) and torch.equal(rois, rois_again)
    assert rois.shape == (8, 5) and set(rois[:, 0].tolist()) == {0.0, 1.0}
    assert (rois[:, 1] >= 0).all() and (rois[:, 3] <= 79).all() and (rois[:, 2] >= 0).all() and (rois[:, 4] <= 47).all()
    assert (rois[:, 3] - rois[:, 1] >= 8).all() and (rois[:, 4] - rois[:, 2] >= 8).all()
    (single,) = zoo.get("resnet50_plain").example_inputs()
    assert single.shape == (1, 3, 64, 64) and single.std() > 0.5
    with pytest.raises(ValueError, match="at least 32x32"):
        zoo.get("resnet50_plain").example_inputs(size=(16, 16))


@pytest.mark.parametrize("name", [n for n in zoo.names() if zoo.get(n).task != "detection"])
def test_every_model_builds_and_runs_at_small_size(name):
    entry = zoo.get(name)
    model = entry.build()
    (image,) = entry.example_inputs(batch=1)
    with torch.no_grad():
        out = model(image)
    expected = (1, 1000) if entry.task == "classification" else (1, 21, 64, 64)
    assert tuple(out.shape) == expected and torch.isfinite(out).all()
    assert bool(model.backbone.deformable_layers() if hasattr(model, "backbone") else model.deformable_layers()) \
        == entry.deformable


def test_a_name_builds_the_same_model_every_time():
    # so a file exported from a zoo name checks against a fresh build (verify --against torch --model NAME)
    entry = zoo.get("resnet50_dcnv2_c5")
    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    first, second = entry.build().state_dict(), entry.build().state_dict()
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert torch.equal(torch.random.get_rng_state(), state)  # the global random state is left as it was
    other = entry.build(seed=1).state_dict()
    assert not all(torch.equal(first[k], other[k]) for k in first)


@pytest.mark.parametrize("name", [n for n in zoo.names() if zoo.get(n).task == "detection" and "101" not in n])
def test_detection_models_build_and_run(name):
    entry = zoo.get(name)
    model = entry.build(num_classes=5)
    image, rois = entry.example_inputs(batch=2)
    with torch.no_grad():
        scores, boxes = model(image, rois)
    assert scores.shape == (8, 5) and boxes.shape == (8, 8)
    assert torch.isfinite(scores).all() and torch.isfinite(boxes).all()


# ---- torchvision compatibility ------------------------------------------------------------------------------------
@pytest.mark.parametrize("depth, blocks, params", [(50, RESNET50_BLOCKS, 25_557_032), (101, RESNET101_BLOCKS, 44_549_160)])
def test_plain_resnet_matches_torchvision_names_and_parameter_count(depth, blocks, params):
    model = ResNet(depth, deform_stages=())
    assert list(model.state_dict()) == torchvision_resnet_keys(blocks)
    # torchvision's documented parameter counts for resnet50 / resnet101
    assert sum(p.numel() for p in model.parameters()) == params
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert shapes["conv1.weight"] == (64, 3, 7, 7)
    assert shapes["layer2.0.conv2.weight"] == (128, 128, 3, 3)
    assert shapes["layer4.0.downsample.0.weight"] == (2048, 1024, 1, 1)
    assert shapes["fc.weight"] == (1000, 2048)


@pytest.mark.parametrize("stages, last, version, expected_layers", [
    ((5,), None, "v1", ["layer4.0", "layer4.1", "layer4.2"]),
    ((5,), 2, "v1", ["layer4.1", "layer4.2"]),
    ((3, 4, 5), None, "v2", [f"layer2.{i}" for i in range(4)] + [f"layer3.{i}" for i in range(6)]
     + [f"layer4.{i}" for i in range(3)]),
])
def test_deformable_resnet_adds_only_offset_keys(stages, last, version, expected_layers):
    model = ResNet(50, deform_stages=stages, deform_last_blocks=last, deform_version=version)
    assert model.deformable_layers() == [f"{layer}.conv2" for layer in expected_layers]
    keys = list(model.state_dict())
    extra = [k for k in keys if k not in set(torchvision_resnet_keys(RESNET50_BLOCKS))]
    assert sorted(extra) == sorted(f"{layer}.conv2.conv_offset.{s}" for layer in expected_layers for s in ("weight", "bias"))
    assert set(torchvision_resnet_keys(RESNET50_BLOCKS)) <= set(keys)
    per_point = 2 if version == "v1" else 3
    offset = model.state_dict()[f"{expected_layers[-1]}.conv2.conv_offset.weight"]
    assert offset.shape == (per_point * 9, 512, 3, 3) and not offset.any()  # zero-initialised


# ---- zero offsets: deformable == plain on the same weights ----------------------------------------------------------
def test_v1_model_with_zero_offsets_equals_plain_model_on_the_same_weights():
    torch.manual_seed(0)
    plain = randomise(ResNet(50, num_classes=10, deform_stages=())).eval()
    dcn = ResNet(50, num_classes=10, deform_stages=(3, 4, 5)).eval()
    report = load_checkpoint(dcn, plain.state_dict())
    assert report.complete and not report.unexpected and len(report.missing_offsets) == 2 * 13
    image = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected, got = plain(image), dcn(image)
    assert close(got, expected), (got - expected).abs().max()
    # and the offsets are really used: non-zero offsets change the output
    with torch.no_grad():
        dcn.layer4[1].conv2.conv_offset.bias.copy_(torch.randn(18, generator=torch.Generator().manual_seed(2)))
        moved = dcn(image)
    assert not close(moved, expected, rtol=1e-2)


def test_v2_model_with_zero_offsets_is_plain_with_half_the_3x3_weights():
    # v2's mask starts at sigmoid(0) = 0.5, so doubling the deformable weights recovers the plain network.
    plain = randomise(ResNet(50, num_classes=10, deform_stages=())).eval()
    dcn = ResNet(50, num_classes=10, deform_stages=(5,), deform_version="v2").eval()
    state = dict(plain.state_dict())
    for layer in dcn.deformable_layers():
        state[f"{layer}.weight"] = 2 * state[f"{layer}.weight"]
    load_checkpoint(dcn, state, strict=True)
    image = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert close(dcn(image), plain(image))


def test_dilated_deeplab_dcn_equals_plain_and_keeps_output_stride_16():
    plain = randomise(DeepLab(50, num_classes=5, deform_stages=()), seed=4).eval()
    dcn = DeepLab(50, num_classes=5, deform_stages=(5,)).eval()
    report = load_checkpoint(dcn, plain.state_dict(), strict=True)
    assert len(report.missing_offsets) == 6
    image = torch.randn(1, 3, 64, 96, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        assert dcn.backbone(image).shape == (1, 2048, 4, 6)  # output stride 16
        out = dcn(image)
        assert out.shape == (1, 5, 64, 96)
        assert close(out, plain(image))


# ---- checkpoints ----------------------------------------------------------------------------------------------------
def test_torchvision_checkpoint_file_loads_into_deeplab_backbone(tmp_path):
    source = randomise(ResNet(50, deform_stages=()), seed=6)
    path = tmp_path / "resnet50.pth"
    torch.save(source.state_dict(), path)
    model = DeepLab(50, deform_stages=(5,))
    report = load_checkpoint(model, path)
    assert report.added_prefix == "backbone." and report.unexpected == ["fc.weight", "fc.bias"]
    assert len(report.missing_offsets) == 6
    # only the new head is missing besides the offsets
    assert report.missing_other and all(k.startswith(("head.", "classifier.")) for k in report.missing_other)
    assert torch.equal(model.backbone.layer3[2].conv2.weight, source.layer3[2].conv2.weight)
    assert torch.equal(model.backbone.layer4[0].conv2.weight, source.layer4[0].conv2.weight)  # deformable, same name
    text = report.summary()
    assert "offset-branch" in text and "MISSING" in text and "fc" in text


def test_mmdetection_checkpoint_with_wrapper_prefix_and_old_offset_names(tmp_path):
    source = randomise(ResNet(50, num_classes=None, deform_stages=(5,), deform_version="v2"), seed=7)
    with torch.no_grad():
        source.layer4[0].conv2.conv_offset.weight.normal_(generator=torch.Generator().manual_seed(8))
    state = {f"backbone.{k}": v for k, v in source.state_dict().items()}
    # older mmcv names the v2 offset branch conv_offset_mask
    for s in ("weight", "bias"):
        state[f"backbone.layer4.0.conv2.conv_offset_mask.{s}"] = state.pop(f"backbone.layer4.0.conv2.conv_offset.{s}")
    state["neck.lateral.weight"] = torch.ones(3)
    path = tmp_path / "mmdet.pth"
    torch.save({"meta": {"mmdet_version": "2.28.2", "epoch": 12}, "state_dict": state}, path)
    model = ResNet(50, num_classes=None, deform_stages=(5,), deform_version="v2")
    report = load_checkpoint(model, path, strict=True)
    assert report.stripped_prefix == "backbone." and report.unexpected == ["neck.lateral.weight"]
    assert torch.equal(model.layer4[0].conv2.conv_offset.weight, source.layer4[0].conv2.conv_offset.weight)


def test_own_dataparallel_checkpoint_and_class_count_mismatch():
    source = randomise(ResNet(50, deform_stages=(5,)), seed=9)
    state = {"model": {f"module.{k}": v for k, v in source.state_dict().items()}}
    model = ResNet(50, num_classes=21, deform_stages=(5,))
    report = load_checkpoint(model, state)
    assert report.stripped_prefix == "module."
    assert [m[0] for m in report.mismatched] == ["fc.weight", "fc.bias"] and not report.missing
    assert "SHAPE MISMATCH" in report.summary() and "(1000, 2048)" in report.summary()
    assert not report.complete
    with pytest.raises(CheckpointError, match="strict=True"):
        load_checkpoint(model, state, strict=True)


def test_head_class_count_reads_the_class_count_of_a_fine_tuned_head():
    from dcn_deploy.models.rfcn import RFCN

    source = randomise(RFCN(50, num_classes=81, deform_stages=(5,)), seed=3)
    report = load_checkpoint(RFCN(50, num_classes=21, deform_stages=(5,)), source.state_dict())
    # the score maps (k*k per class) and their offset maps (2*k*k per class) scale alike; the box maps do not
    assert sorted(k for k, *_ in report.mismatched) == ["head.cls_conv.bias", "head.cls_conv.weight",
                                                       "head.cls_offset_conv.bias", "head.cls_offset_conv.weight"]
    assert head_class_count(report, 21) == 81
    model = RFCN(50, num_classes=head_class_count(report, 21), deform_stages=(5,))
    assert load_checkpoint(model, source.state_dict(), strict=True).complete

    def count(mismatched, head=("fc.weight", "fc.bias"), num_classes=1000):
        return head_class_count(LoadReport("x", mismatched=mismatched, head=list(head)), num_classes)

    assert count([("fc.weight", (10, 2048), (1000, 2048)), ("fc.bias", (10,), (1000,))]) == 10
    assert count([]) is None  # nothing differs
    assert count([("fc.weight", (10, 100), (1000, 2048))]) is None  # another input width
    assert count([("fc.weight", (10, 2048), (1000, 2048)), ("fc.bias", (20,), (1000,))]) is None  # disagree
    assert count([("layer1.0.conv1.weight", (32, 64, 1, 1), (64, 64, 1, 1))]) is None  # not the head
    assert count([("head.cls_conv.weight", (50, 8, 1, 1), (49 * 21, 8, 1, 1))], ("head.cls_conv.weight",), 21) is None


def test_unreadable_or_unrelated_checkpoints_give_clear_errors(tmp_path):
    model = ResNet(50, num_classes=None, deform_stages=())
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(model, tmp_path / "missing.pth")
    with pytest.raises(CheckpointError, match=r"no tensor .* matches the model.*pass prefix=\(strip, add\)"):
        load_checkpoint(model, {"encoder.block.weight": torch.ones(2)})
    from dcn_deploy.wording import cli_wording

    with cli_wording(), pytest.raises(CheckpointError) as info:  # the CLI's --weights has no prefix= to pass
        load_checkpoint(model, {"encoder.block.weight": torch.ones(2)})
    assert "pass prefix=" not in str(info.value) and "check that it is a checkpoint of this model" in str(info.value)
    with pytest.raises(CheckpointError, match="no tensors"):
        load_checkpoint(model, {"epoch": 3})


def test_require_backbone_refuses_a_checkpoint_of_another_architecture():
    from dcn_deploy.models.demo import DemoNet

    torch.manual_seed(11)
    state = DemoNet().state_dict()  # shares a few names (bn1.*) with a ResNet, nothing else
    with pytest.raises(IncompleteCheckpointError, match=r"the given state_dict leaves 265 of the model's 326 tensors "
                       r"missing \(or of another shape\) that a checkpoint of this architecture holds \(conv1.weight, "
                       ) as caught:
        load_checkpoint(ResNet(50, deform_stages=(5,)), state, require_backbone=True)
    assert "belongs to another architecture" in str(caught.value)
    report = caught.value.report
    assert len(report.missing_required) > 250 and not any(".conv_offset." in k for k in report.missing_required)
    # a library caller that does not ask keeps the old behaviour: loaded, and the summary says what is missing
    report = load_checkpoint(ResNet(50, deform_stages=(5,)), state)
    assert report.missing_required and "MISSING, kept at their random initial values" in report.summary()


def test_require_backbone_accepts_what_converted_checkpoints_lack():
    # torchvision's ImageNet file: no num_batches_tracked (it predates them) and no offsets, into a DeepLab whose
    # head it cannot hold; an mmdetection backbone (no fc) into a classifier ResNet
    source = randomise(ResNet(50, deform_stages=()), seed=12)
    imagenet = {k: v for k, v in source.state_dict().items() if not k.endswith("num_batches_tracked")}
    report = load_checkpoint(DeepLab(50, num_classes=5, deform_stages=(5,)), imagenet, require_backbone=True)
    assert report.missing_head and all(k.startswith(("head.", "classifier.")) for k in report.missing_head)
    assert len(report.missing_offsets) == 6 and not report.missing_required
    mmdet = {f"backbone.{k}": v for k, v in imagenet.items() if not k.startswith("fc.")}
    report = load_checkpoint(ResNet(50, deform_stages=(5,)), mmdet, require_backbone=True)
    assert report.missing_head == ["fc.weight", "fc.bias"] and not report.missing_required
    # a class count of its own only changes the head: allowed; the same names at other widths (another
    # architecture, e.g. a wide ResNet) are refused, as the skipped tensors would keep their random values
    widened = {k: (torch.cat([v, v]) if v.dim() and not k.startswith("fc.") else v) for k, v in imagenet.items()}
    with pytest.raises(IncompleteCheckpointError, match=r"missing \(or of another shape\)"):
        load_checkpoint(ResNet(50, deform_stages=(5,)), widened, require_backbone=True)
    other_classes = dict(imagenet, **{"fc.weight": imagenet["fc.weight"][:10], "fc.bias": imagenet["fc.bias"][:10]})
    report = load_checkpoint(ResNet(50, deform_stages=(5,)), other_classes, require_backbone=True)
    assert [k for k, *_ in report.mismatched] == ["fc.weight", "fc.bias"] and not report.missing_required
    # but a backbone tensor missing is refused, named
    del imagenet["layer2.1.conv2.weight"]
    with pytest.raises(IncompleteCheckpointError, match=r"leaves 1 of .*\(backbone.layer2.1.conv2.weight\)"):
        load_checkpoint(DeepLab(50, num_classes=5, deform_stages=(5,)), imagenet, require_backbone=True)


def test_loaded_counts_only_what_the_checkpoint_holds():
    # BatchNorm fills in num_batches_tracked that a file lacks (torchvision's ImageNet files): not "loaded"
    source = randomise(ResNet(50, deform_stages=()), seed=13)
    imagenet = {k: v for k, v in source.state_dict().items() if not k.endswith("num_batches_tracked")}
    report = load_checkpoint(ResNet(50, deform_stages=(5,)), imagenet, strict=True)
    assert len(report.loaded) == len(imagenet) == 267 and len(report.missing_counters) == 53 and report.complete
    assert "53 batch-norm step counters" in report.summary() and "MISSING" not in report.summary()
    report = load_checkpoint(DeepLab(50, num_classes=5, deform_stages=(5,)), source.state_dict())
    assert set(report.loaded) == {f"backbone.{k}" for k in source.state_dict() if not k.startswith("fc.")}
    assert all(k.startswith("head.") for k in report.missing_counters) and len(report.missing_counters) == 4


def test_dilated_c5_follows_the_paper_in_deeplab_and_rfcn_and_torchvision_in_resnet():
    from dcn_deploy.models.rfcn import RFCN

    def dilations(backbone):
        return [backbone.layer4[i].conv2.dilation for i in range(3)]

    # Dai et al. 2017 (and the authors' code): every 3x3 of the dilated c5 has dilation 2, res5a's included
    assert dilations(DeepLab(50).backbone) == [(2, 2)] * 3
    assert dilations(RFCN(50).backbone) == [(2, 2)] * 3
    # torchvision's replace_stride_with_dilation keeps dilation 1 in the first block
    assert dilations(ResNet(50, num_classes=None, dilate_stages=(5,))) == [(1, 1), (2, 2), (2, 2)]
    assert dilations(DeepLab(50, contract_dilation=True).backbone) == [(1, 1), (2, 2), (2, 2)]
    # the authors' R-FCN uses 4 offset groups (a 72-channel offset convolution)
    model = RFCN(50, deform_groups=4, deform_last_blocks=2)
    assert model.backbone.deformable_layers() == ["layer4.1.conv2", "layer4.2.conv2"]
    assert model.backbone.layer4[1].conv2.conv_offset.weight.shape == (72, 512, 3, 3)


def test_bad_arguments_name_the_option():
    with pytest.raises(ValueError, match="depth"):
        ResNet(34)
    with pytest.raises(ValueError, match="deform_version"):
        ResNet(50, deform_version="v3")
    with pytest.raises(ValueError, match="deform_stages"):
        ResNet(50, deform_stages=(6,))


# ---- R-FCN head -------------------------------------------------------------------------------------------------------
def test_rfcn_head_with_zero_offsets_equals_plain_head():
    g = torch.Generator().manual_seed(10)
    features = torch.randn(2, 64, 6, 8, generator=g)
    rois = torch.tensor([[0, 4.0, 4.0, 60.0, 40.0], [1, 10.0, 20.0, 90.0, 80.0], [0, 0.0, 0.0, 127.0, 95.0]])
    kwargs = dict(in_channels=64, num_classes=4, hidden_channels=32, group_size=3, sample_per_part=2)
    plain = RFCNHead(deformable=False, **kwargs).eval()
    dcn = RFCNHead(deformable=True, **kwargs).eval()
    report = load_checkpoint(dcn, plain.state_dict())
    assert sorted(report.missing) == sorted(f"{c}.{s}" for c in ("cls_offset_conv", "bbox_offset_conv")
                                            for s in ("weight", "bias"))
    with torch.no_grad():
        for conv in (plain.conv_new, plain.cls_conv, plain.bbox_conv):
            conv.weight.normal_(generator=g)
        dcn.load_state_dict(plain.state_dict(), strict=False)
        expected, got = plain(features, rois), dcn(features, rois)
        assert got[0].shape == (3, 4) and got[1].shape == (3, 8)
        assert close(got[0], expected[0]) and close(got[1], expected[1])
        dcn.cls_offset_conv.bias.normal_(generator=g)
        moved = dcn(features, rois)
        assert not close(moved[0], expected[0], rtol=1e-3) and close(moved[1], expected[1])


def test_rfcn_rejects_badly_shaped_rois():
    head = RFCNHead(in_channels=8, num_classes=2, hidden_channels=4, group_size=2)
    with pytest.raises(ValueError, match=r"rois must be \(R, 5\)"):
        head(torch.randn(1, 8, 4, 4), torch.randn(3, 4))


def test_rfcn_runs_in_half_precision():
    # `dcn-deploy export rfcn_resnet50_dcn --dtype fp16` casts the boxes with the image; the RoI ops take half types
    head = RFCNHead(in_channels=8, num_classes=2, hidden_channels=4, group_size=2).eval()
    rois = torch.tensor([[0.0, 0.0, 0.0, 7.0, 7.0]])
    features = torch.randn(1, 8, 4, 4)
    expected = head(features, rois)
    for dtype in (torch.float16, torch.bfloat16):
        got = head.to(dtype)(features.to(dtype), rois.to(dtype))
        assert all(g.dtype == dtype and torch.allclose(g.float(), e, atol=5e-2, rtol=5e-2)
                   for g, e in zip(got, expected))
    with pytest.raises(TypeError, match="floating-point"):
        head.float()(features, rois.long())


# ---- the cost report's counting ---------------------------------------------------------------------------------------
def test_cost_counts_add_exactly_the_offset_branches_and_sampling():
    from dcn_deploy.models import cost_report as report

    (image,) = zoo.get("resnet50_plain").example_inputs(size=(64, 64))
    plain = report.count_cost(zoo.get("resnet50_plain").build(), (image,))
    dcn = report.count_cost(zoo.get("resnet50_dcn_c5").build(), (image,))
    # three offset convolutions 512 -> 18 channels, 3x3, with bias
    assert dcn.params - plain.params == 3 * (512 * 9 * 18 + 18)
    # c5 runs at 2x2 for a 64x64 input: offsets 18 x 2x2 x 512x9 MACs per layer, sampling 4 per sampled value
    assert dcn.offset_macs == 3 * 18 * 4 * 512 * 9
    assert dcn.sampling_macs == 3 * 4 * (512 * 9 * 4)
    # the deformable GEMMs replace the plain 3x3 convolutions MAC for MAC
    assert dcn.conv_macs + dcn.deform_gemm_macs - dcn.offset_macs == plain.conv_macs
    assert plain.deform_gemm_macs == plain.sampling_macs == 0



def test_cost_report_json_is_strict_json_when_a_timing_is_not_finite():
    """A failed timing (NaN) must not make the report unreadable to strict parsers (jq, JSON.parse)."""
    from dcn_deploy.models import cost_report as report

    row = report.Row("resnet50_dcn_c5", "resnet50_plain", (64, 64), 0, report.Cost(params=1), report.Cost(params=1),
                     dcn_time=report.Timed("ort", float("nan"), float("inf"), 1.0))
    text = report.report_json([row], {"threads": 2})
    parsed = json.loads(text, parse_constant=lambda name: pytest.fail(f"non-JSON constant {name}"))
    assert parsed["rows"][0]["dcn_time"]["median_ms"] == "nan" and parsed["rows"][0]["size"] == [64, 64]

def _idle_cpu_ms(seconds=0.1):
    """The process's CPU time (ms) while its main thread sleeps: what threads left running (spinning) take."""
    import time

    start = time.process_time()
    time.sleep(seconds)
    return (time.process_time() - start) * 1e3


def test_cost_report_sessions_leave_no_thread_spinning_between_runs(tmp_path, monkeypatch):
    """The report times a model and its twin by turns with both ONNX Runtime sessions open: with more than one
    thread, ONNX Runtime's workers spin on after a run by default (about 25 ms of a core here) and take the CPU
    from the other session's timed run. The report's sessions stop spinning when a run returns."""
    from dcn_deploy.models import cost_report as report

    seen = {}

    def inspect(calls, iterations, warmup):
        for name, call in calls.items():
            assert isinstance(call, report._OrtCall), f"{name} was not timed in ONNX Runtime"
            call()
            call()  # the pool is started; what runs after a returned run is what the other session would meet
            seen[name + " idle"] = _idle_cpu_ms()
            try:
                seen[name] = call.runner.session.get_session_options().get_session_config_entry(
                    "session.force_spinning_stop")
            except RuntimeError:  # not set: onnxruntime's default, spinning on after a run
                seen[name] = None
        return {name: [1e-3] for name in calls}

    monkeypatch.setattr(report, "time_pair", inspect)
    row = report.measure("resnet50_dcn_c5", (64, 64), "ort", threads=2, iterations=1, warmup=0, folder=tmp_path)
    assert row.dcn_time.backend == row.base_time.backend == "ORT CPU (2 threads)"
    assert seen["resnet50_dcn_c5 idle"] < 15 and seen["resnet50_plain idle"] < 15, seen  # ms of CPU in 100 ms (36-46 before)
    assert seen["resnet50_dcn_c5"] == seen["resnet50_plain"] == "1", seen


def test_cost_report_settings_say_how_its_sessions_spin(monkeypatch):
    from dcn_deploy.models import cost_report as report

    def counted(name, size, backend, *args):
        return report.Row(name, "plain", size, 0, report.Cost(), report.Cost())

    monkeypatch.setattr(report, "measure", counted)
    _, settings = report.run_report(["resnet50_dcn_c5"], (64, 64), "ort", threads=2, progress=lambda message: None)
    assert settings["ort_spinning"].startswith("within-run (session.force_spinning_stop=1")
    assert json.loads(report.report_json([], settings))["settings"]["ort_spinning"] == settings["ort_spinning"]
    _, settings = report.run_report(["resnet50_dcn_c5"], (64, 64), "none", progress=lambda message: None)
    assert "ort_spinning" not in settings  # nothing was timed in ONNX Runtime


# ---- the CLI ------------------------------------------------------------------------------------------------------
def test_cli_zoo_list_and_counts_only_report():
    from click.testing import CliRunner

    from dcn_deploy.cli import main

    listed = CliRunner().invoke(main, ["zoo", "list", "--json"])
    assert listed.exit_code == 0, listed.output
    assert {e["name"] for e in json.loads(listed.output)} == set(zoo.names())
    report = CliRunner().invoke(main, ["zoo", "report", "--pairs", "resnet50_dcn_c5", "--size", "64x64",
                                       "--backend", "none"])
    assert report.exit_code == 0, report.output
    assert "| resnet50_dcn_c5 (vs resnet50_plain) | 1x3x64x64 | 3 | 25.806 M | +248,886 (+1.0%)" in report.output
    bad = CliRunner().invoke(main, ["zoo", "report", "--pairs", "resnet50_plain", "--backend", "none"])
    assert bad.exit_code == 2 and "has no deformable layers" in bad.output


def test_report_refuses_a_plain_model_before_measuring_any_pair():
    from dcn_deploy.cli import main
    from dcn_deploy.models import cost_report
    from cli_helpers import cli_runner

    result = cli_runner().invoke(main, ["zoo", "report", "--pairs", "resnet50_dcn_c5", "--pairs", "resnet50_plain",
                                        "--backend", "none", "--size", "64"])
    assert result.exit_code == 2, result.output + result.stderr
    assert "[zoo report]" not in result.stderr  # nothing was measured
    assert ("error: --pairs resnet50_plain has no deformable layers; give a deformable zoo name (its plain twin is "
            "added); resnet50_plain is the plain twin of resnet50_dcn_c3c5, resnet50_dcn_c5") in result.stderr
    said = []
    with pytest.raises(ValueError, match="resnet50_plain has no deformable layers"):
        cost_report.run_report(["resnet50_dcn_c5", "resnet50_plain"], (64, 64), "none", progress=said.append)
    assert said == []


@pytest.mark.parametrize("kind, says", [
    ("text", "not a file written by torch.save (it starts with b'junk\\n'"),
    ("empty", "the file is empty"),
    ("module", "it holds a pickled module"),
])
def test_unreadable_checkpoint_files_are_explained(tmp_path, kind, says):
    path = tmp_path / f"{kind}.pth"
    if kind == "text":
        path.write_text("junk\n")
    elif kind == "empty":
        path.write_bytes(b"")
    else:
        torch.save(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1)), path)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(ResNet(50, num_classes=None, deform_stages=()), path)
    assert f"cannot read checkpoint {path}: {says}" in str(info.value)
    assert "174812789" not in str(info.value) and "two options" not in str(info.value)


def test_untrained_deep_networks_keep_outputs_where_float32_verifies():
    """bn3 starts at 0.5, not torchvision's 1: an untrained ResNet-101's logits were near 1.4e4, where float32
    roundoff alone failed `dcn-deploy export resnet101_dcn_c5` verification; now near 10. The residual branches
    (and their deformable layers) still reach the output (not zero_init_residual)."""
    from dcn_deploy.models import zoo

    model = zoo.get("resnet101_dcn_c5").build().eval()
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits = model(x)
        assert 0.1 < float(logits.abs().max()) < 100
        torch.nn.init.normal_(model.layer4[2].conv2.conv_offset.weight, std=0.05)   # offsets now move samples
        assert not torch.allclose(model(x), logits)
