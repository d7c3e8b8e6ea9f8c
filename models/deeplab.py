"""DeepLab-style semantic segmentation on the deformable ResNet (the paper's segmentation setting).

The backbone's c5 is dilated (output stride 16) and its 3x3 layers are deformable; a light ASPP head (a 1x1
branch, two dilated 3x3 branches and an image-pooling branch, concatenated and projected) predicts per-class
logits that are bilinearly upsampled to the input size. Backbone tensors are named ``backbone.<torchvision name>``,
so ImageNet weights load through :func:`dcn_deploy.models.checkpoint.load_checkpoint`.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .resnet import ResNet

__all__ = ["ASPPLite", "DeepLab"]


def _conv_bn_relu(in_channels: int, out_channels: int, kernel: int, dilation: int = 1) -> nn.Sequential:
    padding = dilation * (kernel // 2)
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, kernel, padding=padding, dilation=dilation, bias=False),
                         nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))


class ASPPLite(nn.Module):
    """Atrous spatial pyramid pooling, light: 1x1 + one dilated 3x3 per rate + image pooling, then a 1x1 projection.

    ``forward(x)``: (N, in_channels, h, w) -> (N, channels, h, w).
    """

    def __init__(self, in_channels: int, channels: int = 256, rates: Sequence[int] = (6, 12)):
        super().__init__()
        self.branches = nn.ModuleList([_conv_bn_relu(in_channels, channels, 1)]
                                      + [_conv_bn_relu(in_channels, channels, 3, rate) for rate in rates])
        # Image pooling: a global context vector. No BatchNorm on a 1x1 map (batch-1 training would break it).
        self.image_pool = nn.Sequential(nn.Conv2d(in_channels, channels, 1), nn.ReLU(inplace=True))
        self.project = _conv_bn_relu(channels * (len(rates) + 2), channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = [branch(x) for branch in self.branches]
        pooled = self.image_pool(x.mean(dim=(2, 3), keepdim=True))
        outs.append(pooled.expand(-1, -1, x.shape[2], x.shape[3]))  # broadcast, exports as Expand
        return self.project(torch.cat(outs, dim=1))


class DeepLab(nn.Module):
    """Segmentation network: dilated deformable ResNet (output stride 16) + :class:`ASPPLite` + upsampling.

    Args:
        depth: 50 or 101.
        num_classes: output classes (21 for PASCAL VOC, the paper's segmentation benchmark).
        deform_stages, deform_version, deform_last_blocks, deform_groups: as :class:`ResNet`; ``()`` gives the
            plain network.
        contract_dilation: as :class:`ResNet`; False (default) gives the paper's c5, dilation 2 in all three
            3x3 layers; True torchvision's (res5a's 3x3 keeps dilation 1).
        aspp_channels, aspp_rates: head width and dilation rates (for output stride 16).

    ``forward(x)``: x (N, 3, H, W) -> logits (N, num_classes, H, W).
    """

    def __init__(self, depth: int = 50, num_classes: int = 21, deform_stages: Sequence[int] = (5,),
                 deform_version: str = "v1", deform_last_blocks=None, aspp_channels: int = 256,
                 aspp_rates: Sequence[int] = (6, 12), deform_groups: int = 1, contract_dilation: bool = False):
        super().__init__()
        self.backbone = ResNet(depth, num_classes=None, deform_stages=deform_stages, deform_version=deform_version,
                               deform_last_blocks=deform_last_blocks, deform_groups=deform_groups,
                               dilate_stages=(5,), contract_dilation=contract_dilation)
        self.head = ASPPLite(self.backbone.out_channels, aspp_channels, aspp_rates)
        self.classifier = nn.Conv2d(aspp_channels, num_classes, 1)
        self.num_classes = num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.classifier(self.head(self.backbone(x)))
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)
