"""The demo: a small deformable CNN and procedurally drawn digits under random affine distortions.

Data (no downloads): the ten digits of a 5x7 pixel font, each drawn on a 28x28 canvas and pushed through a
random affine map (rotation, anisotropic scale, shear, translation), with random stroke contrast and pixel
noise. A plain CNN must learn every pose; deformable layers can move their sampling points to follow the
strokes, which is what they are for.

    images, labels = make_digits(1000, seed=0)    # (1000, 1, 28, 28) float32 in about [-0.5, 1.5], (1000,) int64
    model = DemoNet()                             # (N, 1, H, W) -> (N, 10) logits; any H, W >= 8
"""
from __future__ import annotations

import math
from typing import Tuple

import torch
import torch.nn.functional as F
from torch import nn

from dcn_deploy.ops.modules import ModulatedDeformConv2dPack

__all__ = ["DemoNet", "make_digits", "digit_templates", "IMAGE_SIZE", "NUM_CLASSES"]

IMAGE_SIZE = 28
NUM_CLASSES = 10

# 5 columns x 7 rows per digit ('#' = ink).
_FONT = {
    0: (" ### ", "#   #", "#  ##", "# # #", "##  #", "#   #", " ### "),
    1: ("  #  ", " ##  ", "  #  ", "  #  ", "  #  ", "  #  ", " ### "),
    2: (" ### ", "#   #", "    #", "   # ", "  #  ", " #   ", "#####"),
    3: ("#####", "   # ", "  #  ", "   # ", "    #", "#   #", " ### "),
    4: ("   # ", "  ## ", " # # ", "#  # ", "#####", "   # ", "   # "),
    5: ("#####", "#    ", "#### ", "    #", "    #", "#   #", " ### "),
    6: ("  ## ", " #   ", "#    ", "#### ", "#   #", "#   #", " ### "),
    7: ("#####", "    #", "   # ", "  #  ", " #   ", " #   ", " #   "),
    8: (" ### ", "#   #", "#   #", " ### ", "#   #", "#   #", " ### "),
    9: (" ### ", "#   #", "#   #", " ####", "    #", "   # ", " ##  "),
}


def digit_templates(size: int = IMAGE_SIZE) -> torch.Tensor:
    """The ten upright digits, (10, 1, size, size) float32 in [0, 1]: the 5x7 glyphs scaled to ~60% of the
    canvas height, centred, with soft edges."""
    glyphs = torch.tensor([[[1.0 if ch == "#" else 0.0 for ch in row] for row in _FONT[d]] for d in range(10)])
    cell = max(1, round(size * 0.6 / 7))
    big = glyphs.repeat_interleave(cell, dim=1).repeat_interleave(cell, dim=2)  # (10, 7*cell, 5*cell)
    canvas = torch.zeros(10, size, size)
    top, left = (size - big.shape[1]) // 2, (size - big.shape[2]) // 2
    canvas[:, top:top + big.shape[1], left:left + big.shape[2]] = big
    blur = torch.tensor([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]]).div(16).view(1, 1, 3, 3)
    return F.conv2d(canvas.unsqueeze(1), blur, padding=1).clamp(0, 1)


def _random_affine(n: int, generator: torch.Generator) -> torch.Tensor:
    """(n, 2, 3) matrices for ``affine_grid`` (output -> input coordinates, normalised to [-1, 1])."""
    def uniform(low: float, high: float) -> torch.Tensor:
        return torch.rand(n, generator=generator) * (high - low) + low

    angle = uniform(-math.radians(30), math.radians(30))
    scale_x, scale_y = uniform(0.8, 1.25), uniform(0.8, 1.25)  # >1 shrinks the digit (inverse map)
    shear = uniform(-0.35, 0.35)
    shift_x, shift_y = uniform(-0.2, 0.2), uniform(-0.2, 0.2)
    cos, sin = torch.cos(angle), torch.sin(angle)
    # rotation @ shear @ scale, written out
    a = cos * scale_x
    b = (cos * shear - sin) * scale_y
    c = sin * scale_x
    d = (sin * shear + cos) * scale_y
    return torch.stack([torch.stack([a, b, shift_x], 1), torch.stack([c, d, shift_y], 1)], 1)


def make_digits(count: int, seed: int = 0, size: int = IMAGE_SIZE) -> Tuple[torch.Tensor, torch.Tensor]:
    """``count`` distorted digits with balanced random labels: images (count, 1, size, size) float32, labels
    (count,) int64. The same seed gives the same data; different seeds give disjoint-looking samples."""
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randperm(count, generator=generator) % NUM_CLASSES
    templates = digit_templates(size)[labels]
    grid = F.affine_grid(_random_affine(count, generator), [count, 1, size, size], align_corners=False)
    images = F.grid_sample(templates, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    contrast = torch.rand(count, 1, 1, 1, generator=generator) * 0.5 + 0.6
    noise = torch.randn(count, 1, size, size, generator=generator) * 0.15
    return (images * contrast + noise).contiguous(), labels


class DemoNet(nn.Module):
    """Two plain convolutions -> two modulated deformable convolutions (DCNv2) -> global average -> linear.

    ``forward(image)``: image (N, 1, H, W) float32 -> logits (N, 10). A 28x28 input reaches the deformable layers
    as 7x7 maps (small, so training on a CPU takes seconds); any H, W >= 4 works (the head averages over space).
    """

    def __init__(self, width: int = 32, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(1, width // 2, 3, padding=1, bias=False), nn.BatchNorm2d(width // 2), nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(width // 2, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
            nn.MaxPool2d(2))
        self.dcn1 = ModulatedDeformConv2dPack(width, width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.dcn2 = ModulatedDeformConv2dPack(width, width, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.head = nn.Linear(width, num_classes)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = self.stem(image)
        x = F.relu(self.bn1(self.dcn1(x)))
        x = F.relu(self.bn2(self.dcn2(x)))
        return self.head(x.mean(dim=(2, 3)))

    def example_inputs(self, batch: int = 1, seed: int = 0) -> Tuple[torch.Tensor]:
        """(images,) of ``batch`` distorted digits, for export and verification."""
        return (make_digits(batch, seed)[0],)
