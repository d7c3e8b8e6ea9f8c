"""Which dimensions of a dynamic export are free, as torch.export ``dynamic_shapes``: the batch (dim 0) of every
input, height and width (dims 2, 3) of NCHW inputs, and which of them share one symbol."""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import torch

__all__ = ["dynamic_axes", "dynamic_shapes", "tied_dynamic_shapes"]


def dynamic_axes(t: torch.Tensor) -> List[Tuple[int, str]]:
    """(axis, role) of the dimensions a dynamic export frees: the batch (dim 0) of every input, height and
    width (dims 2, 3) of 4-D (NCHW) inputs."""
    axes = [(0, "batch")] if t.dim() >= 1 else []
    return axes + ([(2, "height"), (3, "width")] if t.dim() == 4 else [])


def dynamic_shapes(example_inputs: Sequence[torch.Tensor]) -> tuple:
    """Batch (dim 0) dynamic for every input; height and width too for 4-D (NCHW) inputs; each its own symbol.

    ``Dim.AUTO`` lets torch.export keep a dimension static where the model needs it so (e.g. a fixed-size
    classifier head); :func:`dcn_deploy.onnx.export.export` then reports which dimensions really came out dynamic.
    """
    auto = torch.export.Dim.AUTO
    return tuple({axis: auto for axis, _ in dynamic_axes(t)} or None for t in example_inputs)


def tied_dynamic_shapes(example_inputs: Sequence[torch.Tensor], untied: Sequence[int] = ()) -> Optional[tuple]:
    """:func:`dynamic_shapes` where a role's dimensions of equal example size in several inputs share one named
    ``Dim`` (a model's inputs share the batch; an image and its offset map share height and width), and the
    others stay ``Dim.AUTO``; dim 0 of the inputs at ``untied`` (RoI box lists: their dim 0 counts boxes) is
    never shared. None when nothing is shared."""
    groups: Dict[Tuple[str, int], List[Tuple[int, int]]] = {}
    for index, t in enumerate(example_inputs):
        for axis, role in dynamic_axes(t):
            if not (axis == 0 and index in untied):
                groups.setdefault((role, int(t.shape[axis])), []).append((index, axis))
    shapes = [dict.fromkeys((axis for axis, _ in dynamic_axes(t)), torch.export.Dim.AUTO) for t in example_inputs]
    shared = [(role, members) for (role, _), members in groups.items() if len(members) > 1]
    for k, (role, members) in enumerate(shared):
        dim = torch.export.Dim(f"{role}_{k}")  # a name torch.export needs; the file's names come later
        for index, axis in members:
            shapes[index][axis] = dim
    return tuple(s or None for s in shapes) if shared else None
