"""Swap torchvision's and mmcv's deformable layers inside an existing model for dcn_deploy's, in place.

Why: ``dcn_deploy.export`` exports our ops (our TensorRT plugin, our ONNX function bodies); mmcv's compiled ops
have no ONNX form, torchvision's op becomes at best the standard ``DeformConv``, and both libraries' compiled ops
often cannot even load on the machine that exports (torchvision's need a CUDA build of torch). Each foreign class
below has a dcn_deploy counterpart with the same constructor arguments, the same ``forward`` and the same
state_dict keys, so one can stand in for the other:

| foreign class | dcn_deploy class |
| --- | --- |
| ``torchvision.ops.DeformConv2d`` | :class:`~dcn_deploy.ops.modules.DeformConv2d` |
| ``mmcv.ops.DeformConv2d`` (``forward(x, offset)``, no bias) | :class:`~dcn_deploy.ops.modules.DeformConv2d` |
| ``mmcv.ops.ModulatedDeformConv2d`` (``forward(x, offset, mask)``) | :class:`~dcn_deploy.ops.modules.DeformConv2d` |
| ``mmcv.ops.DeformConv2dPack`` ("DCN") | :class:`~dcn_deploy.ops.modules.DeformConv2dPack` |
| ``mmcv.ops.ModulatedDeformConv2dPack`` ("DCNv2") | :class:`~dcn_deploy.ops.modules.ModulatedDeformConv2dPack` |
| ``mmcv.ops.DeformRoIPool``, ``DeformRoIPoolPack``, ``ModulatedDeformRoIPoolPack`` | the same, in ``roi_modules`` |

A foreign class is recognised by its module path and name, never by importing torchvision or mmcv.
"""
from __future__ import annotations

import inspect
import os
import warnings
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

import torch
from torch import nn

from ..wording import for_reader
from . import modules, roi_modules

__all__ = ["convert_modules", "ConvertedModules", "ForeignLayer", "FOREIGN_LAYERS", "TORCHVISION_DEFORM_CONV",
           "UnconvertedLayerError", "refuse_unconverted_layers"]

# (type(m).__module__, type(m).__qualname__) of torchvision.ops.DeformConv2d
TORCHVISION_DEFORM_CONV = ("torchvision.ops.deform_conv", "DeformConv2d")


@dataclass(frozen=True)
class ForeignLayer:
    """A foreign deformable layer class that :func:`convert_modules` replaces, and how.

    ``build`` makes the dcn_deploy layer with the foreign layer's settings (on the meta device: its own fresh
    parameters are discarded); ``parameters`` and ``children`` are the foreign layer's own parameters and
    submodules that the new layer takes over as they are (the same objects)."""

    library: str
    module: str
    name: str
    target: type
    build: Callable[[nn.Module], nn.Module]
    parameters: Tuple[str, ...] = ()
    children: Tuple[str, ...] = ()

    @property
    def key(self) -> Tuple[str, str]:
        return self.module, self.name

    @property
    def label(self) -> str:
        return f"{self.library} {self.name}"


def _has_bias(layer: nn.Module) -> bool:
    return getattr(layer, "bias", None) is not None  # mmcv's DeformConv2d has no bias attribute at all


def _conv(layer: nn.Module) -> nn.Module:
    return modules.DeformConv2d(layer.in_channels, layer.out_channels, layer.kernel_size, stride=layer.stride,
                                padding=layer.padding, dilation=layer.dilation, groups=layer.groups,
                                bias=_has_bias(layer))


def _conv_pack(cls: type) -> Callable[[nn.Module], nn.Module]:
    def build(layer: nn.Module) -> nn.Module:
        return cls(layer.in_channels, layer.out_channels, layer.kernel_size, stride=layer.stride,
                   padding=layer.padding, dilation=layer.dilation, groups=layer.groups,
                   deform_groups=layer.deform_groups, bias=_has_bias(layer))
    return build


def _roi_pool(layer: nn.Module) -> nn.Module:
    return roi_modules.DeformRoIPool(layer.output_size, layer.spatial_scale, layer.sampling_ratio, layer.gamma)


def _roi_pack(cls: type) -> Callable[[nn.Module], nn.Module]:
    def build(layer: nn.Module) -> nn.Module:
        return cls(layer.output_size, layer.output_channels, layer.deform_fc_channels, layer.spatial_scale,
                   layer.sampling_ratio, layer.gamma)
    return build


_MMCV_CONV, _MMCV_MODULATED, _MMCV_ROI = ("mmcv.ops.deform_conv", "mmcv.ops.modulated_deform_conv",
                                          "mmcv.ops.deform_roi_pool")

FOREIGN_LAYERS: Tuple[ForeignLayer, ...] = (
    ForeignLayer("torchvision", *TORCHVISION_DEFORM_CONV, modules.DeformConv2d, _conv, ("weight", "bias")),
    ForeignLayer("mmcv", _MMCV_CONV, "DeformConv2d", modules.DeformConv2d, _conv, ("weight",)),
    ForeignLayer("mmcv", _MMCV_MODULATED, "ModulatedDeformConv2d", modules.DeformConv2d, _conv,
                 ("weight", "bias")),
    ForeignLayer("mmcv", _MMCV_CONV, "DeformConv2dPack", modules.DeformConv2dPack,
                 _conv_pack(modules.DeformConv2dPack), ("weight",), ("conv_offset",)),
    ForeignLayer("mmcv", _MMCV_MODULATED, "ModulatedDeformConv2dPack", modules.ModulatedDeformConv2dPack,
                 _conv_pack(modules.ModulatedDeformConv2dPack), ("weight", "bias"), ("conv_offset",)),
    ForeignLayer("mmcv", _MMCV_ROI, "DeformRoIPool", roi_modules.DeformRoIPool, _roi_pool),
    ForeignLayer("mmcv", _MMCV_ROI, "DeformRoIPoolPack", roi_modules.DeformRoIPoolPack,
                 _roi_pack(roi_modules.DeformRoIPoolPack), (), ("offset_fc",)),
    ForeignLayer("mmcv", _MMCV_ROI, "ModulatedDeformRoIPoolPack", roi_modules.ModulatedDeformRoIPoolPack,
                 _roi_pack(roi_modules.ModulatedDeformRoIPoolPack), (), ("offset_fc", "mask_fc")),
)
_BY_KEY: Dict[Tuple[str, str], ForeignLayer] = {layer.key: layer for layer in FOREIGN_LAYERS}


class ConvertedModules(list):
    """The qualified names (as in ``model.named_modules()``; ``""`` is the root) of the replaced layers, in the
    order they were found, plus ``sources``: ``{name: "torchvision DeformConv2d"}`` (the foreign class each
    replaced), and ``skipped``: ``[(name, reason)]`` for foreign-derived layers left as they were. A layer shared
    between several attributes is listed once per attribute."""

    def __init__(self, names=(), skipped=(), sources=None):
        super().__init__(names)
        self.skipped: List[Tuple[str, str]] = list(skipped)
        self.sources: Dict[str, str] = dict(sources or {})

    def __str__(self) -> str:
        replaced = ", ".join(f"{n or '<root>'}" + (f" ({self.sources[n]})" if n in self.sources else "")
                             for n in self)
        lines = [f"converted {len(self)} torchvision/mmcv deformable layer(s) to dcn_deploy's"
                 + (f": {replaced}" if self else "")]
        lines += [f"not converted: {name or '<root>'}: {reason}" for name, reason in self.skipped]
        return "\n".join(lines)


def _class_key(cls: type) -> Tuple[str, str]:
    return cls.__module__, cls.__qualname__


def _foreign_base(module: nn.Module) -> Optional[ForeignLayer]:
    """The foreign class ``module`` is, or derives from; None for every other module."""
    for cls in type(module).__mro__:
        if _class_key(cls) in _BY_KEY:
            return _BY_KEY[_class_key(cls)]
    return None


def _class_text(cls: type) -> str:
    """``module.Class``, or ``Class (file.py:line)`` for a class of a generated module (a model file the CLI
    imported under a private name)."""
    if cls.__module__.startswith("_"):
        try:
            where = f"{os.path.basename(inspect.getsourcefile(cls))}:{inspect.getsourcelines(cls)[1]}"
            return f"{cls.__qualname__} ({where})"
        except (TypeError, OSError):
            pass
    return f"{cls.__module__}.{cls.__qualname__}"


def _why_not_convertible(module: nn.Module, foreign: ForeignLayer) -> Optional[str]:
    """None when ``module`` (an exact ``foreign`` class) can be swapped without losing anything."""
    if getattr(module, "parametrizations", None) is not None:
        return "it has parametrizations (torch.nn.utils.parametrize); remove them, convert, then add them again"
    if _class_key(type(module)) != foreign.key:
        return (f"{_class_text(type(module))} subclasses {foreign.label} and may override forward; "
                f"replace it by hand (dcn_deploy's {foreign.target.__name__} takes the same arguments and "
                "state_dict)")
    params = dict(module.named_parameters(recurse=False))
    if any(not isinstance(getattr(module, name, None), (nn.Parameter, type(None))) for name in foreign.parameters):
        return f"its {' or '.join(foreign.parameters)} is a plain tensor, not an nn.Parameter"
    extras = sorted((set(params) - set(foreign.parameters))
                    | {name for name, _ in module.named_buffers(recurse=False)}
                    | ({name for name, _ in module.named_children()} - set(foreign.children)))
    if extras:
        return (f"it carries parameters, buffers or submodules that {foreign.target.__name__} has no place for: "
                f"{extras}")
    missing = [name for name in foreign.children if not isinstance(getattr(module, name, None), nn.Module)]
    if missing:
        return f"its submodule(s) {missing} are missing or not modules"
    hooks = [kind for kind in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
             if getattr(module, kind, None)]
    if hooks:
        # Hook handles point at this module's dicts; moving the hooks would break handle.remove().
        return (f"it has hooks registered ({', '.join(h.strip('_') for h in hooks)}); remove them, convert, then "
                "register them on the new layer")
    return _shape_mismatch(module, foreign)


def _shape_mismatch(module: nn.Module, foreign: ForeignLayer) -> Optional[str]:
    """Why the weights do not fit the layer's own settings, for the convolutions; None when they fit."""
    if "weight" not in foreign.parameters:
        return None
    kh, kw = tuple(module.kernel_size)
    expected = (module.out_channels, module.in_channels // module.groups, kh, kw)
    if tuple(module.weight.shape) != expected:
        return (f"its weight has shape {tuple(module.weight.shape)} but its attributes (out_channels, "
                f"in_channels // groups, *kernel_size) say {expected}")
    offset_branch = getattr(module, "conv_offset", None)
    if isinstance(offset_branch, nn.Conv2d):
        per_point = 3 if issubclass(foreign.target, modules.ModulatedDeformConv2dPack) else 2
        want = module.deform_groups * per_point * kh * kw
        if offset_branch.out_channels != want:
            return (f"its conv_offset has {offset_branch.out_channels} output channels but deform_groups="
                    f"{module.deform_groups} and kernel_size={(kh, kw)} need {want}")
    return None


def _converted(old: nn.Module, foreign: ForeignLayer) -> nn.Module:
    """The dcn_deploy layer holding ``old``'s own Parameter objects and submodules (values, dtype, device,
    requires_grad and identity, so an optimizer built before the conversion keeps updating them)."""
    # Built on the meta device: its fresh parameters are never used, so allocate and initialise nothing.
    with torch.device("meta"):
        new = foreign.build(old)
    for name in foreign.parameters:
        value = getattr(old, name, None)
        if value is not None:
            setattr(new, name, value)
    for name in foreign.children:
        setattr(new, name, getattr(old, name))
    new.training = old.training  # this layer's flag only: the adopted submodules keep their own
    return new


class UnconvertedLayerError(ValueError):
    """The model still holds mmcv deformable layers, which do not export."""


def refuse_unconverted_layers(model) -> None:
    """Raise :class:`UnconvertedLayerError` naming every mmcv deformable layer left in ``model`` (an
    ``nn.Module``; anything else passes) and why: mmcv's compiled ops have no ONNX form, and the exporter would fail
    on them with an unrelated-looking error. (torchvision's ``deform_conv2d`` has a translation to the standard
    ``DeformConv`` in torch's exporter, so its layers are left to it.)"""
    if not isinstance(model, nn.Module):
        return
    left = [(name, module, _foreign_base(module)) for name, module in model.named_modules()]
    left = [(name, module, foreign) for name, module, foreign in left
            if foreign is not None and foreign.library == "mmcv"]
    if not left:
        return
    lines = []
    for name, module, foreign in left:
        reason = _why_not_convertible(module, foreign) or "dcn_deploy.convert_modules(model) converts it"
        exact = _class_key(type(module)) == foreign.key  # a subclass's reason names its class itself
        lines.append(f"{name or '<root>'}{f' ({foreign.label})' if exact else ''}: {reason}")
    fix = for_reader("Convert the model with dcn_deploy.convert_modules(model), and replace the layers it leaves by "
                     "hand", "Replace them by hand")
    raise UnconvertedLayerError(
        f"{type(model).__name__} has {len(left)} mmcv deformable layer(s), whose compiled ops do not export: "
        + "; ".join(lines[:5]) + (f"; and {len(lines) - 5} more" if len(lines) > 5 else "")
        + f". {fix} with dcn_deploy's of the same name (same arguments and state_dict keys)")


def convert_modules(model: nn.Module) -> Tuple[nn.Module, ConvertedModules]:
    """Replace every torchvision or mmcv deformable layer inside ``model`` by dcn_deploy's, in place.

    The classes replaced, and by what, are listed in this module's docstring (:data:`FOREIGN_LAYERS`):
    ``torchvision.ops.DeformConv2d``; mmcv's ``DeformConv2d``, ``ModulatedDeformConv2d``, ``DeformConv2dPack``
    (DCN), ``ModulatedDeformConv2dPack`` (DCNv2), ``DeformRoIPool``, ``DeformRoIPoolPack`` and
    ``ModulatedDeformRoIPoolPack``. Each replacement is built with the same arguments and takes over the
    original's Parameter objects and submodules (``conv_offset``, ``offset_fc``, ``mask_fc``), so outputs, the
    state_dict keys and values, dtype, device, ``requires_grad`` and the training flags are all unchanged; the
    parent's attribute (also inside ``nn.Sequential``/``ModuleList``/``ModuleDict``) is set to the new layer. A
    layer shared by several attributes stays shared.

    mmcv's ``DeformConv2d`` and ``ModulatedDeformConv2d`` become :class:`dcn_deploy.DeformConv2d`, which reads
    the offset groups from the offset's channels (2*offset_groups*kH*kW) instead of a ``deform_groups``
    attribute. mmcv's RoI layers default to ``sampling_ratio=0`` (adaptive), which runs in PyTorch but has no
    ONNX form: set the converted layers' ``sampling_ratio`` (e.g. 2) before exporting.

    Only the exact classes are converted. Subclasses (whose forward may differ) and layers that carry hooks,
    parametrizations or extra parameters/buffers/submodules are left as they were, listed in
    ``converted.skipped`` with the reason, and a warning names them. The model's own ``forward`` is not touched:
    it keeps calling ``self.<layer>(...)``.

    Args:
        model: an ``nn.Module`` (itself a foreign layer is allowed), before ``torch.jit.script``,
            ``torch.export`` or ``torch.compile``.

    Returns:
        ``(model, converted)``: the same model object (a new layer when ``model`` itself was a foreign layer) and a
        :class:`ConvertedModules` list of the replaced qualified names, e.g. ``["backbone.layer3.0.conv2"]``.

    Example::

        model, converted = dcn_deploy.convert_modules(model)
        dcn_deploy.export(model.eval(), (x,), "model.onnx")

    Old mmcv checkpoints (``conv_offset_mask.*``, ``<layer>_offset.*`` keys) load into the converted model after
    :func:`dcn_deploy.upgrade_mmcv_state_dict`.
    """
    if isinstance(model, torch.jit.ScriptModule):
        raise TypeError("convert_modules takes a plain nn.Module, got a TorchScript module: convert the model "
                        "first, then script it")
    if not isinstance(model, nn.Module):
        hint = ("; got a state_dict-like mapping: build the model, load the state_dict, then convert it"
                if isinstance(model, dict) else
                "; an ExportedProgram cannot be changed: convert the nn.Module, then export it"
                if type(model).__name__ == "ExportedProgram" else "")
        raise TypeError(f"convert_modules: model must be a torch.nn.Module, got {type(model).__name__}{hint}")

    converted = ConvertedModules()
    replacements: Dict[int, Tuple[nn.Module, str]] = {}  # id(old) -> (new, source), so a shared layer stays shared

    def convert_one(name: str, module: nn.Module) -> Optional[nn.Module]:
        if id(module) not in replacements:
            foreign = _foreign_base(module)
            if foreign is None:
                return None
            reason = _why_not_convertible(module, foreign)
            if reason is None:
                try:
                    replacements[id(module)] = (_converted(module, foreign), foreign.label)
                except (ValueError, TypeError) as exc:  # settings our constructor refuses (ShapeError included)
                    reason = f"dcn_deploy's {foreign.target.__name__} refuses its settings: {exc}"
            if reason is not None:
                converted.skipped.append((name, reason))
                return None
        new, converted.sources[name] = replacements[id(module)]
        converted.append(name)
        return new

    visited = set()

    def walk(prefix: str, parent: nn.Module) -> None:
        if id(parent) in visited:  # a shared container: its children were replaced the first time
            return
        visited.add(id(parent))
        for child_name, child in list(parent.named_children()):
            qualified = f"{prefix}.{child_name}" if prefix else child_name
            new = convert_one(qualified, child)
            if new is not None:
                setattr(parent, child_name, new)
            else:
                walk(qualified, child)

    root = convert_one("", model)
    if root is None:
        walk("", model)
    if converted.skipped:
        warnings.warn("convert_modules left these torchvision/mmcv-derived layers unconverted (the model will not "
                      "export until they are replaced):\n" + "\n".join(f"  {n or '<root>'}: {r}"
                                                                       for n, r in converted.skipped),
                      stacklevel=2)
    return (root if root is not None else model), converted
