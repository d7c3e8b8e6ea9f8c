"""The model zoo: the paper's networks by name, each with a builder and small example inputs.

>>> from dcn_deploy.models import zoo
>>> zoo.names()                                   # every registered name
>>> entry = zoo.get("resnet50_dcn_c5")
>>> model = entry.build()                         # random weights, eval mode; load yours with load_checkpoint
>>> inputs = entry.example_inputs(batch=1)        # a tuple of tensors, small by default (64x64)

Every deformable entry names its ``plain`` counterpart (the same network with ordinary 3x3 convolutions and
plain PS RoI pooling) for cost comparisons. No weights are downloaded.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

__all__ = ["ZooEntry", "get", "names", "register"]

DEFAULT_SIZE = (64, 64)  # small so tests and CI stay fast; pass size=(H, W) for real resolutions


@dataclass(frozen=True)
class ZooEntry:
    """One zoo model: how to build it, what it takes and returns, and its plain counterpart."""

    name: str
    description: str
    task: str  # "classification", "segmentation" or "detection"
    builder: Callable[..., object]
    defaults: Dict[str, object]
    input_names: Tuple[str, ...]
    output_names: Tuple[str, ...]
    plain: Optional[str] = None  # the same network without deformable layers; None if this one is plain
    rois_per_image: int = 0  # detection: proposals per image in example_inputs
    notes: Tuple[str, ...] = field(default_factory=tuple)

    @property
    def deformable(self) -> bool:
        return self.plain is not None

    @property
    def needs_roi_pool(self) -> bool:
        """True for models that run ``dcn_deploy.ops.roi_pool.deform_psroi_pool``."""
        return self.task == "detection"

    def build(self, seed: Optional[int] = 0, **kwargs):
        """Build the model with random weights in eval mode; ``kwargs`` override the entry's defaults
        (e.g. ``num_classes=80``). Offsets start at zero.

        The weights are drawn with ``seed`` (torch's global random state is left as it was), so every build of a
        name is the same model and a file exported from it checks against a fresh build
        (``dcn-deploy verify X.onnx --against torch --model NAME``). ``seed=None`` draws from the global state.
        """
        import torch

        if seed is None:
            model = self.builder(**{**self.defaults, **kwargs})
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                model = self.builder(**{**self.defaults, **kwargs})
        model.eval()
        return model

    def example_inputs(self, batch: int = 1, size: Optional[Tuple[int, int]] = None, seed: int = 0,
                       rois_per_image: Optional[int] = None):
        """A tuple of random inputs in ``input_names`` order, from a fixed seed.

        image: (batch, 3, H, W) with (H, W) = ``size`` or 64x64. Detection adds rois (batch*rois_per_image, 5):
        ``(batch_index, x1, y1, x2, y2)`` boxes inside the image, at least 8 pixels wide and tall
        (``rois_per_image`` defaults to the entry's, 4).
        """
        import torch

        if batch < 1:
            raise ValueError(f"batch must be >= 1, got {batch}")
        height, width = size if size is not None else DEFAULT_SIZE
        if min(height, width) < 32:
            raise ValueError(f"size must be at least 32x32 (the networks have stride 32), got {height}x{width}")
        generator = torch.Generator().manual_seed(seed)
        image = torch.randn(batch, 3, height, width, generator=generator)
        if not self.needs_roi_pool:
            return (image,)
        per_image = self.rois_per_image if rois_per_image is None else int(rois_per_image)
        if per_image < 1:
            raise ValueError(f"rois_per_image must be >= 1, got {per_image}")
        count = batch * per_image
        index = torch.arange(batch, dtype=torch.float32).repeat_interleave(per_image)
        low = torch.rand(count, 2, generator=generator) * torch.tensor([width - 9.0, height - 9.0])
        extent = 8.0 + torch.rand(count, 2, generator=generator) * (torch.tensor([width - 1.0, height - 1.0]) - low - 8.0)
        high = low + extent
        rois = torch.stack([index, low[:, 0], low[:, 1], high[:, 0], high[:, 1]], dim=1)
        return image, rois


_REGISTRY: Dict[str, ZooEntry] = {}


def register(entry: ZooEntry) -> ZooEntry:
    if entry.name in _REGISTRY:
        raise ValueError(f"zoo name {entry.name!r} is already registered")
    _REGISTRY[entry.name] = entry
    return entry


def names() -> List[str]:
    """Every registered name, sorted."""
    return sorted(_REGISTRY)


def get(name: str) -> ZooEntry:
    """The entry called ``name``; a KeyError lists the valid names."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"no zoo model named {name!r}; choose one of: {', '.join(names())}") from None


# builders (imports torch only when a model is built) -------------------------------------------------------------
def _resnet(**kwargs):
    from .resnet import ResNet
    return ResNet(**kwargs)


def _deeplab(**kwargs):
    from .deeplab import DeepLab
    return DeepLab(**kwargs)


def _rfcn(**kwargs):
    from .rfcn import RFCN
    return RFCN(**kwargs)


_STAGES = {"c5": (5,), "c3c5": (3, 4, 5)}
_VERSIONS = {"dcn": "v1", "dcnv2": "v2"}


def _register_all() -> None:
    for depth in (50, 101):
        base = f"resnet{depth}"
        register(ZooEntry(base + "_plain", f"ResNet-{depth} ImageNet classifier, no deformable layers "
                          "(torchvision's architecture and key names)", "classification", _resnet,
                          {"depth": depth, "deform_stages": ()}, ("image",), ("logits",)))
        variants = [("dcn", "c5"), ("dcnv2", "c3c5")] + ([("dcnv2", "c5"), ("dcn", "c3c5")] if depth == 50 else [])
        for kind, stages in variants:
            where = ("the 3x3 layers of c5 (the DCN paper's default: the last three blocks)" if stages == "c5"
                     else "the 3x3 layers of c3-c5 (the DCNv2 paper's and mmdetection's default)")
            register(ZooEntry(
                f"{base}_{kind}_{stages}",
                f"ResNet-{depth} classifier with deformable convolution {_VERSIONS[kind]} in {where}",
                "classification", _resnet,
                {"depth": depth, "deform_stages": _STAGES[stages], "deform_version": _VERSIONS[kind]},
                ("image",), ("logits",), plain=base + "_plain"))

        if depth == 50:  # ResNeXt-50 32x4d: grouped 3x3 layers (4 to 32 channels a group), DCNv2 in c3-c5 as mmdetection's
            register(ZooEntry("resnext50_32x4d_plain", "ResNeXt-50 (32x4d) ImageNet classifier, no deformable layers "
                              "(torchvision's resnext50_32x4d architecture and key names)", "classification", _resnet,
                              {"depth": 50, "deform_stages": (), "groups": 32, "width_per_group": 4},
                              ("image",), ("logits",)))
            register(ZooEntry(
                "resnext50_32x4d_dcnv2_c3c5", "ResNeXt-50 (32x4d) classifier with deformable convolution v2 in the "
                "grouped 3x3 layers of c3-c5 (32 groups of 8, 16 and 32 channels; one offset group, as mmdetection's "
                "x101_32x4d dconv configs)", "classification", _resnet,
                {"depth": 50, "deform_stages": _STAGES["c3c5"], "deform_version": "v2", "groups": 32,
                 "width_per_group": 4},
                ("image",), ("logits",), plain="resnext50_32x4d_plain"))

        seg = f"deeplab_resnet{depth}"
        register(ZooEntry(seg + "_plain", f"DeepLab-style segmentation (dilated ResNet-{depth}, output stride 16, "
                          "ASPP-lite head), no deformable layers", "segmentation", _deeplab,
                          {"depth": depth, "deform_stages": ()}, ("image",), ("logits",)))
        register(ZooEntry(seg + "_dcn", f"DeepLab-style segmentation on dilated ResNet-{depth} with deformable v1 "
                          "3x3 layers in c5 (the paper's segmentation setting)", "segmentation", _deeplab,
                          {"depth": depth, "deform_stages": (5,)}, ("image",), ("logits",), plain=seg + "_plain"))

        det = f"rfcn_resnet{depth}"
        register(ZooEntry(det + "_plain", f"R-FCN-style detector on dilated ResNet-{depth} (proposals given), "
                          "plain PS RoI pooling, no deformable layers", "detection", _rfcn,
                          {"depth": depth, "deform_stages": (), "deformable_pooling": False},
                          ("image", "rois"), ("cls_score", "bbox_pred"), rois_per_image=4))
        register(ZooEntry(det + "_dcn", f"R-FCN-style detector on dilated ResNet-{depth} with deformable v1 3x3 "
                          "layers in c5 and deformable PS RoI pooling (the paper's detection setting, with "
                          "mmdetection's one offset group; the authors' code uses 4: RFCN(deform_groups=4))",
                          "detection",
                          _rfcn, {"depth": depth, "deform_stages": (5,), "deformable_pooling": True},
                          ("image", "rois"), ("cls_score", "bbox_pred"), plain=det + "_plain", rois_per_image=4))


_register_all()
