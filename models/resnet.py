"""ResNet-50/101 with deformable convolution in the 3x3 layers of chosen stages (Dai et al. 2017; Zhu et al. 2019).

Module names follow torchvision's ``ResNet`` exactly (``conv1``, ``bn1``, ``layer1``..``layer4`` of
``Bottleneck`` blocks with ``conv1/bn1/conv2/bn2/conv3/bn3/downsample``, ``fc``), so a torchvision ImageNet
state_dict loads with ``strict=False`` and only the offset branches missing. A deformable 3x3 keeps the name
``conv2`` and its ``weight``; it adds ``conv2.conv_offset.weight`` and ``conv2.conv_offset.bias`` (mmcv's names,
so mmdetection DCN backbones load too). Offsets start at zero, so a v1 model starts as the plain ResNet; a v2
model's mask starts at sigmoid(0) = 0.5 (mmcv's and the DCNv2 paper's initialisation), i.e. each deformable 3x3
starts as half the plain convolution.

Stages are named as in the papers: c2..c5 are torchvision's layer1..layer4 (strides 4, 8, 16, 32).
The paper's default is deformable 3x3 layers in the last three blocks of c5 (``deform_stages=(5,)``, which for
ResNet-50/101 is all of c5); mmdetection's is c3-c5 (``deform_stages=(3, 4, 5)``).
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import torch
from torch import nn

from dcn_deploy.ops.modules import DeformConv2dPack, ModulatedDeformConv2dPack

__all__ = ["Bottleneck", "ResNet", "resnet50", "resnet101", "STAGE_BLOCKS", "DEFORM_VERSIONS"]

# blocks per stage (c2, c3, c4, c5)
STAGE_BLOCKS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}
DEFORM_VERSIONS = {"v1": DeformConv2dPack, "v2": ModulatedDeformConv2dPack}


def _conv3x3(in_channels: int, out_channels: int, stride: int, dilation: int, deform: Optional[str],
             deform_groups: int, groups: int = 1) -> nn.Module:
    """The block's 3x3 convolution (``groups`` groups: ResNeXt's): plain, or deformable v1/v2 with the same
    ``weight`` (and no bias, like torchvision)."""
    if deform is None:
        return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=dilation, dilation=dilation,
                         groups=groups, bias=False)
    layer = DEFORM_VERSIONS[deform]
    return layer(in_channels, out_channels, 3, stride=stride, padding=dilation, dilation=dilation, groups=groups,
                 deform_groups=deform_groups, bias=False)


class Bottleneck(nn.Module):
    """torchvision's Bottleneck (ResNet v1.5: the stride is on the 3x3), optionally with a deformable 3x3; with
    ``groups`` and ``width_per_group`` ResNeXt's (its 3x3 of ``planes * width_per_group / 64 * groups`` channels in
    ``groups`` groups, as torchvision's ``resnext50_32x4d``).

    ``forward(x)``: (N, in_channels, H, W) -> (N, planes*4, H/stride, W/stride).
    """

    expansion = 4

    def __init__(self, in_channels: int, planes: int, stride: int = 1, downsample: Optional[nn.Module] = None,
                 dilation: int = 1, deform: Optional[str] = None, deform_groups: int = 1, groups: int = 1,
                 width_per_group: int = 64):
        super().__init__()
        width = int(planes * (width_per_group / 64.0)) * groups
        self.conv1 = nn.Conv2d(in_channels, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = _conv3x3(width, width, stride, dilation, deform, deform_groups, groups)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.deform = deform

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    """ResNet-50/101 (or ResNeXt) backbone or classifier with deformable 3x3 convolutions in chosen stages.

    Args:
        depth: 50 or 101.
        groups, width_per_group: ResNeXt's cardinality and width (32 and 4: ResNeXt-50 32x4d, torchvision's
            ``resnext50_32x4d`` and its key names); 1 and 64 (the default) give ResNet.
        num_classes: size of the ``fc`` classifier; None builds a backbone without ``avgpool``/``fc``.
        deform_stages: stages (2..5 = c2..c5) whose 3x3 convolutions are deformable. () gives the plain ResNet.
        deform_last_blocks: only the last this-many blocks of each deformable stage; None = every block.
        deform_version: "v1" (offsets only, the 2017 paper) or "v2" (offsets and a modulation mask).
        deform_groups: offset groups of each deformable layer.
        dilate_stages: stages whose stride is replaced by dilation (torchvision's
            ``replace_stride_with_dilation``); ``(5,)`` gives output stride 16 (DeepLab, R-FCN).
        contract_dilation: in a dilated stage, the first block's 3x3 keeps the previous stage's dilation (True:
            torchvision's ``replace_stride_with_dilation``, mmsegmentation's ``contract_dilation``) or takes the
            stage's new dilation like the other blocks (False: Dai et al. 2017, whose dilated c5 has dilation 2 in
            all its 3x3 layers, res5a's included, as in the authors' code and mmdetection's ``dilations``).
            Only the dilation differs: the parameters, and so the checkpoints, are the same.

    ``forward(x)``: x (N, 3, H, W) -> logits (N, num_classes), or with ``num_classes=None`` the c5 feature map
    (N, 2048, H/32, W/32) (H/16 when c5 is dilated). ``forward_features(x)`` returns ``{"c2".."c5": tensor}``.
    """

    def __init__(self, depth: int = 50, num_classes: Optional[int] = 1000, deform_stages: Sequence[int] = (5,),
                 deform_last_blocks: Optional[int] = None, deform_version: str = "v1", deform_groups: int = 1,
                 dilate_stages: Sequence[int] = (), contract_dilation: bool = True, groups: int = 1,
                 width_per_group: int = 64):
        super().__init__()
        if depth not in STAGE_BLOCKS:
            raise ValueError(f"depth must be one of {sorted(STAGE_BLOCKS)}, got {depth!r}")
        if deform_version not in DEFORM_VERSIONS:
            raise ValueError(f"deform_version must be one of {sorted(DEFORM_VERSIONS)}, got {deform_version!r}")
        for name, stages in (("deform_stages", deform_stages), ("dilate_stages", dilate_stages)):
            bad = [s for s in stages if s not in (2, 3, 4, 5)]
            if bad:
                raise ValueError(f"{name} must name stages 2..5 (c2..c5 = layer1..layer4), got {list(stages)}")
        if 2 in dilate_stages:
            raise ValueError("dilate_stages cannot include 2: c2 has stride 1 already (use stages 3, 4 or 5)")
        if deform_last_blocks is not None and deform_last_blocks < 1:
            raise ValueError(f"deform_last_blocks must be >= 1 or None (every block), got {deform_last_blocks}")
        if groups < 1 or width_per_group < 1:
            raise ValueError(f"groups and width_per_group must be >= 1, got {groups} and {width_per_group}")
        self._groups = groups
        self._width_per_group = width_per_group

        self.depth = depth
        self.deform_stages = tuple(sorted(set(deform_stages)))
        self.deform_version = deform_version
        self.dilate_stages = tuple(sorted(set(dilate_stages)))
        self.contract_dilation = bool(contract_dilation)
        self.num_classes = num_classes
        self.out_channels = 512 * Bottleneck.expansion

        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)

        self._in_channels = 64
        self._dilation = 1
        for index, (blocks, planes) in enumerate(zip(STAGE_BLOCKS[depth], (64, 128, 256, 512))):
            stage = index + 2
            deform = deform_version if stage in self.deform_stages else None
            first_deform = 0 if deform_last_blocks is None else max(0, blocks - deform_last_blocks)
            layer = self._make_stage(planes, blocks, stride=1 if stage == 2 else 2, deform=deform,
                                     first_deform=first_deform, deform_groups=deform_groups,
                                     dilate=stage in self.dilate_stages)
            setattr(self, f"layer{index + 1}", layer)
        del self._in_channels, self._dilation, self._groups, self._width_per_group

        if num_classes is not None:
            self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
            self.fc = nn.Linear(self.out_channels, num_classes)
        self._init_weights()

    def _make_stage(self, planes: int, blocks: int, stride: int, deform: Optional[str], first_deform: int,
                    deform_groups: int, dilate: bool) -> nn.Sequential:
        previous_dilation = self._dilation
        if dilate:  # torchvision's replace_stride_with_dilation: keep the resolution, grow the dilation
            self._dilation *= stride
            stride = 1
        downsample = None
        if stride != 1 or self._in_channels != planes * Bottleneck.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self._in_channels, planes * Bottleneck.expansion, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes * Bottleneck.expansion))
        first_dilation = previous_dilation if self.contract_dilation else self._dilation
        shape = {"groups": self._groups, "width_per_group": self._width_per_group}
        layers = [Bottleneck(self._in_channels, planes, stride, downsample, first_dilation,
                             deform if first_deform <= 0 else None, deform_groups, **shape)]
        self._in_channels = planes * Bottleneck.expansion
        for i in range(1, blocks):
            layers.append(Bottleneck(self._in_channels, planes, dilation=self._dilation,
                                     deform=deform if i >= first_deform else None, deform_groups=deform_groups,
                                     **shape))
        return nn.Sequential(*layers)

    def _init_weights(self) -> None:
        # torchvision's initialisation, but for the last BatchNorm of each residual branch (bn3), which starts at 0.5
        # instead of 1: with 1, an untrained ResNet-101's outputs reach 1e4 (c5 activations near 1e5), where float32
        # roundoff alone exceeds an export's verification tolerance; with 0.5 they stay near 10 (ResNet-50: 34 ->
        # 1). Not 0 (torchvision's zero_init_residual): the residual branches, and the deformable layers in them,
        # must still reach the output. A checkpoint overwrites all of it. The offset branches stay at zero (set by
        # the deformable layers).
        for name, module in self.named_modules():
            if name.endswith("conv_offset"):
                continue
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, (DeformConv2dPack, ModulatedDeformConv2dPack)):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.constant_(module.weight, 0.5 if name.endswith(".bn3") else 1.0)
                nn.init.zeros_(module.bias)

    def deformable_layers(self) -> List[str]:
        """Names of the deformable 3x3 layers, e.g. ``["layer4.0.conv2", ...]``."""
        return [name for name, m in self.named_modules() if isinstance(m, (DeformConv2dPack, ModulatedDeformConv2dPack))]

    def forward_features(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        """x (N, 3, H, W) -> {"c2": (N, 256, H/4, W/4), "c3": (N, 512, H/8, ..), "c4": (N, 1024, ..), "c5": (N, 2048, ..)}."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        features = {}
        for index in range(4):
            x = getattr(self, f"layer{index + 1}")(x)
            features[f"c{index + 2}"] = x
        return features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c5 = self.forward_features(x)["c5"]
        if self.num_classes is None:
            return c5
        return self.fc(torch.flatten(self.avgpool(c5), 1))


def resnet50(**kwargs) -> ResNet:
    """ResNet-50; keyword arguments as :class:`ResNet` (default: deformable v1 in c5, 1000 classes)."""
    return ResNet(depth=50, **kwargs)


def resnet101(**kwargs) -> ResNet:
    """ResNet-101; keyword arguments as :class:`ResNet` (default: deformable v1 in c5, 1000 classes)."""
    return ResNet(depth=101, **kwargs)
