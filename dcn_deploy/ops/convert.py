"""Swap torchvision's ``DeformConv2d`` layers inside an existing model for :class:`dcn_deploy.DeformConv2d`.

Why: ``dcn_deploy.export`` exports our ops; a model built from ``torchvision.ops.DeformConv2d`` does not export
(and torchvision's compiled ops cannot even load on CPU-only machines). Both classes have the same constructor,
the same ``forward(input, offset, mask=None)`` and the same state_dict keys, so one can stand in for the other.

torchvision's class is recognised by its module path and name, never by importing torchvision.
"""
from __future__ import annotations

import warnings
from typing import Dict, List, Optional, Tuple

import torch
from torch import nn

from .modules import DeformConv2d

__all__ = ["convert_modules", "ConvertedModules", "TORCHVISION_DEFORM_CONV"]

# (type(m).__module__, type(m).__qualname__) of torchvision.ops.DeformConv2d
TORCHVISION_DEFORM_CONV = ("torchvision.ops.deform_conv", "DeformConv2d")


class ConvertedModules(list):
    """The qualified names (as in ``model.named_modules()``; ``""`` is the root) of the replaced layers, in the
    order they were found, plus ``skipped``: ``[(name, reason)]`` for torchvision-derived layers left as they were.
    A layer shared between several attributes is listed once per attribute."""

    def __init__(self, names=(), skipped=()):
        super().__init__(names)
        self.skipped: List[Tuple[str, str]] = list(skipped)

    def __str__(self) -> str:
        lines = [f"converted {len(self)} torchvision DeformConv2d layer(s) to dcn_deploy.DeformConv2d"
                 + (f": {', '.join(n or '<root>' for n in self)}" if self else "")]
        lines += [f"not converted: {name or '<root>'}: {reason}" for name, reason in self.skipped]
        return "\n".join(lines)


def _class_key(cls: type) -> Tuple[str, str]:
    return cls.__module__, cls.__qualname__


def _is_torchvision_deform_conv(module: nn.Module) -> bool:
    return _class_key(type(module)) == TORCHVISION_DEFORM_CONV


def _derives_from_torchvision_deform_conv(module: nn.Module) -> bool:
    return any(_class_key(cls) == TORCHVISION_DEFORM_CONV for cls in type(module).__mro__[1:])


def _why_not_convertible(module: nn.Module) -> Optional[str]:
    """None when ``module`` (an exact torchvision DeformConv2d) can be swapped without losing anything."""
    if getattr(module, "parametrizations", None) is not None:
        return "it has parametrizations (torch.nn.utils.parametrize); remove them, convert, then add them again"
    if not _is_torchvision_deform_conv(module):
        cls = type(module)
        return (f"{cls.__module__}.{cls.__qualname__} subclasses torchvision's DeformConv2d and may override "
                "forward; replace it by hand (dcn_deploy.DeformConv2d takes the same arguments and state_dict)")
    if not isinstance(module.weight, nn.Parameter) or not (module.bias is None
                                                           or isinstance(module.bias, nn.Parameter)):
        return "its weight or bias is a plain tensor, not an nn.Parameter"
    own_params = {name for name, _ in module.named_parameters(recurse=False)}
    extras = sorted((own_params - {"weight", "bias"}) | {name for name, _ in module.named_buffers(recurse=False)}
                    | {name for name, _ in module.named_children()})
    if extras:
        return f"it carries parameters, buffers or submodules that DeformConv2d has no place for: {extras}"
    hooks = [kind for kind in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
             if getattr(module, kind, None)]
    if hooks:
        # Hook handles point at this module's dicts; moving the hooks would break handle.remove().
        return (f"it has hooks registered ({', '.join(h.strip('_') for h in hooks)}); remove them, convert, then "
                "register them on the new layer")
    kh, kw = tuple(module.kernel_size)
    expected = (module.out_channels, module.in_channels // module.groups, kh, kw)
    if tuple(module.weight.shape) != expected:
        return (f"its weight has shape {tuple(module.weight.shape)} but its attributes (out_channels, "
                f"in_channels // groups, *kernel_size) say {expected}")
    return None


def _converted(old: nn.Module) -> DeformConv2d:
    """A dcn_deploy.DeformConv2d holding ``old``'s own Parameter objects (values, dtype, device, requires_grad
    and identity, so an optimizer built before the conversion keeps updating them)."""
    # Built on the meta device: its fresh weights are never used, so allocate and initialise nothing.
    with torch.device("meta"):
        new = DeformConv2d(old.in_channels, old.out_channels, old.kernel_size, stride=old.stride,
                           padding=old.padding, dilation=old.dilation, groups=old.groups, bias=old.bias is not None)
    new.weight = old.weight
    if old.bias is not None:
        new.bias = old.bias
    new.train(old.training)
    return new


def convert_modules(model: nn.Module) -> Tuple[nn.Module, ConvertedModules]:
    """Replace every ``torchvision.ops.DeformConv2d`` inside ``model`` by :class:`dcn_deploy.DeformConv2d`, in place.

    Each replacement is built with the same arguments (in/out channels, kernel_size, stride, padding, dilation,
    groups, bias) and holds the original's Parameter objects, so outputs, the state_dict keys and values, dtype,
    device, ``requires_grad`` and the training flag are all unchanged; the parent's attribute (also inside
    ``nn.Sequential``/``ModuleList``/``ModuleDict``) is set to the new layer. A layer shared by several attributes
    stays shared.

    Only torchvision's exact class is converted. Subclasses (whose forward may differ) and layers that carry
    hooks, parametrizations or extra parameters/buffers are left as they were, listed in ``converted.skipped``
    with the reason, and a warning names them. The model's own ``forward`` is not touched: it keeps calling
    ``self.<layer>(...)``.

    mmcv's ``DeformConv2dPack`` / ``ModulatedDeformConv2dPack`` are not converted here: rebuild the network with
    :class:`dcn_deploy.DeformConv2dPack` / :class:`dcn_deploy.ModulatedDeformConv2dPack` (same constructor and
    state_dict keys) and load its checkpoint; pass an old checkpoint (``conv_offset_mask.*``,
    ``<layer>_offset.*`` keys) through :func:`dcn_deploy.upgrade_mmcv_state_dict` first.

    Args:
        model: an ``nn.Module`` (itself a torchvision ``DeformConv2d`` is allowed), before ``torch.jit.script``,
            ``torch.export`` or ``torch.compile``.

    Returns:
        ``(model, converted)``: the same model object (a new layer when ``model`` itself was a torchvision
        DeformConv2d) and a :class:`ConvertedModules` list of the replaced qualified names, e.g.
        ``["backbone.layer3.0.dcn"]``.

    Example::

        model, converted = dcn_deploy.convert_modules(model)
        dcn_deploy.export(model.eval(), (x,), "model.onnx")
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
    replacements: Dict[int, nn.Module] = {}  # id(old) -> new, so a shared layer stays shared

    def convert_one(name: str, module: nn.Module) -> Optional[nn.Module]:
        if id(module) in replacements:
            converted.append(name)
            return replacements[id(module)]
        if not (_is_torchvision_deform_conv(module) or _derives_from_torchvision_deform_conv(module)):
            return None
        reason = _why_not_convertible(module)
        if reason is not None:
            converted.skipped.append((name, reason))
            return None
        new = replacements[id(module)] = _converted(module)
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
        warnings.warn("convert_modules left these torchvision-derived layers unconverted (the model will not "
                      "export until they are replaced):\n" + "\n".join(f"  {n or '<root>'}: {r}"
                                                                       for n, r in converted.skipped),
                      stacklevel=2)
    return (root if root is not None else model), converted
