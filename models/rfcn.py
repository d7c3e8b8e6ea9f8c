"""R-FCN-style detection head with deformable position-sensitive RoI pooling (Dai et al. 2017, section 2.2).

Given a feature map and proposals, the head predicts per-RoI class scores and class-agnostic box deltas:

    features (N, C, h, w) -> 1x1 conv + ReLU -> hidden (N, D, h, w)
      cls maps  (N, k*k*num_classes, h, w)   box maps (N, k*k*4*2, h, w)
      cls offset maps (N, k*k*2*num_classes)  box offset maps (N, k*k*2)   [deformable only; zero-initialised]
    offsets = PS RoI pooling of the offset maps (no offsets)  -> (R, 2*num_classes, k, k) and (R, 2, k, k)
    scores  = deformable PS RoI pooling of the cls maps with those offsets -> (R, num_classes, k, k) -> mean
    boxes   = deformable PS RoI pooling of the box maps                     -> (R, 8, k, k)           -> mean

With zero-initialised offset convolutions the head starts as the plain R-FCN head. Proposals come from the
user (an RPN is outside this zoo): ``rois`` is (R, 5) ``(batch_index, x1, y1, x2, y2)`` in input-image pixels.

The pooling op is ``dcn_deploy.ops.roi_pool.deform_psroi_pool``; it is imported when the head first runs.
"""
from __future__ import annotations

from typing import Sequence, Tuple

import torch
from torch import nn

from dcn_deploy.ops.roi_pool import deform_psroi_pool

from .resnet import ResNet

__all__ = ["RFCNHead", "RFCN"]


def _check_rois(rois: torch.Tensor) -> None:
    if rois.dim() != 2 or rois.shape[1] != 5:
        raise ValueError(f"rois must be (R, 5) = (batch_index, x1, y1, x2, y2) in image pixels, got shape {tuple(rois.shape)}")
    if not rois.is_floating_point():
        raise TypeError(f"rois must be a floating-point tensor (the feature map's dtype), got {rois.dtype}")


class RFCNHead(nn.Module):
    """R-FCN head on one feature map; deformable PS RoI pooling when ``deformable`` (the paper's), else plain.

    Args:
        in_channels: channels of the feature map (2048 for a ResNet c5).
        num_classes: classes including background (21 for PASCAL VOC).
        hidden_channels: width of the 1x1 reduction ("conv_new").
        group_size: k, the k x k grid of position-sensitive bins (also the pooled and part size).
        sample_per_part: bilinear samples per bin along each axis.
        trans_std: scale of the pooled offsets (they are fractions of the RoI size times this).
        spatial_scale: feature-map pixels per image pixel (1/16 for a dilated c5).
        deformable: learn per-bin offsets (the paper's deformable PS RoI pooling) or not.

    ``forward(features, rois)``: features (N, in_channels, h, w), rois (R, 5) ->
    ``(cls_score (R, num_classes), bbox_pred (R, 8))``; boxes are class-agnostic (background, foreground) deltas.
    """

    box_classes = 2  # class-agnostic regression: background and foreground, as the paper's R-FCN

    def __init__(self, in_channels: int = 2048, num_classes: int = 21, hidden_channels: int = 1024,
                 group_size: int = 7, sample_per_part: int = 4, trans_std: float = 0.1,
                 spatial_scale: float = 1.0 / 16, deformable: bool = True):
        super().__init__()
        k2 = group_size * group_size
        self.num_classes = num_classes
        self.group_size = group_size
        self.sample_per_part = sample_per_part
        self.trans_std = trans_std
        self.spatial_scale = spatial_scale
        self.deformable = deformable
        self.conv_new = nn.Conv2d(in_channels, hidden_channels, 1)
        self.relu = nn.ReLU(inplace=True)
        self.cls_conv = nn.Conv2d(hidden_channels, k2 * num_classes, 1)
        self.bbox_conv = nn.Conv2d(hidden_channels, k2 * 4 * self.box_classes, 1)
        for conv in (self.conv_new, self.cls_conv, self.bbox_conv):
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.zeros_(conv.bias)
        if deformable:
            # One (dy, dx) per bin and class for the scores; one shared per bin for the boxes.
            self.cls_offset_conv = nn.Conv2d(hidden_channels, k2 * 2 * num_classes, 1)
            self.bbox_offset_conv = nn.Conv2d(hidden_channels, k2 * 2, 1)
            for conv in (self.cls_offset_conv, self.bbox_offset_conv):
                nn.init.zeros_(conv.weight)
                nn.init.zeros_(conv.bias)

    def _pool(self, maps: torch.Tensor, rois: torch.Tensor, output_dim: int, trans) -> torch.Tensor:
        pool = deform_psroi_pool
        k = self.group_size
        return pool(maps, rois, trans, self.spatial_scale, output_dim, k, k, k, self.sample_per_part,
                    self.trans_std, trans is None)

    def forward(self, features: torch.Tensor, rois: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        _check_rois(rois)
        hidden = self.relu(self.conv_new(features))
        cls_maps, box_maps = self.cls_conv(hidden), self.bbox_conv(hidden)
        cls_trans = box_trans = None
        if self.deformable:
            cls_trans = self._pool(self.cls_offset_conv(hidden), rois, 2 * self.num_classes, None)
            box_trans = self._pool(self.bbox_offset_conv(hidden), rois, 2, None)
        scores = self._pool(cls_maps, rois, self.num_classes, cls_trans)  # (R, num_classes, k, k)
        boxes = self._pool(box_maps, rois, 4 * self.box_classes, box_trans)  # (R, 8, k, k)
        # Each bin votes; the RoI's score is the average vote (the paper's average pooling over k x k bins).
        return scores.mean(dim=(2, 3)), boxes.mean(dim=(2, 3))


class RFCN(nn.Module):
    """R-FCN detector without its RPN: dilated deformable ResNet (output stride 16) + :class:`RFCNHead`.

    Args:
        depth: 50 or 101.
        num_classes: classes including background.
        deform_stages, deform_version, deform_last_blocks, deform_groups: as :class:`ResNet` (``()`` for a plain
            backbone; the authors' R-FCN uses ``deform_groups=4``).
        contract_dilation: as :class:`ResNet`; False (default) gives the paper's c5, dilation 2 in all three
            3x3 layers; True torchvision's (res5a's 3x3 keeps dilation 1).
        deformable_pooling: deformable (True, the paper's) or plain position-sensitive RoI pooling.
        head_kwargs: passed to :class:`RFCNHead` (group_size, sample_per_part, hidden_channels, ...).

    ``forward(image, rois)``: image (N, 3, H, W), rois (R, 5) in image pixels ->
    ``(cls_score (R, num_classes), bbox_pred (R, 8))``.
    """

    def __init__(self, depth: int = 50, num_classes: int = 21, deform_stages: Sequence[int] = (5,),
                 deform_version: str = "v1", deformable_pooling: bool = True, deform_last_blocks=None,
                 deform_groups: int = 1, contract_dilation: bool = False, **head_kwargs):
        super().__init__()
        self.backbone = ResNet(depth, num_classes=None, deform_stages=deform_stages, deform_version=deform_version,
                               deform_last_blocks=deform_last_blocks, deform_groups=deform_groups,
                               dilate_stages=(5,), contract_dilation=contract_dilation)
        self.num_classes = num_classes
        self.head = RFCNHead(self.backbone.out_channels, num_classes, spatial_scale=1.0 / 16,
                             deformable=deformable_pooling, **head_kwargs)

    def forward(self, image: torch.Tensor, rois: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        return self.head(self.backbone(image), rois)
