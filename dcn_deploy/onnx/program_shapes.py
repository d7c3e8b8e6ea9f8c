"""The input shapes a saved ``torch.export`` program (.pt2) accepts, and why given shapes do not fit it.

A program runs only at the shapes it was exported with (fixed sizes, or dynamic ones in a range and tied by their
symbols), so a wrong ``--input-shape`` is reported as bad input before export (:func:`program_shape_mismatch`)
rather than written into a file that then fails to run.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, List, Optional, Sequence, Tuple

if TYPE_CHECKING:  # only for the annotations: this module reads a program's graph, it needs no torch import
    import torch


def program_input_shapes(program: "torch.export.ExportedProgram") -> List[Tuple[object, ...]]:
    """The shapes a saved program's user inputs take: an int for a fixed size, the program's symbol (a sympy
    expression, e.g. ``s0``) for a dynamic one; ``()`` for an input that is no tensor."""
    placeholders = {node.name: node for node in program.graph.nodes if node.op == "placeholder"}
    shapes = []
    for name in program.graph_signature.user_inputs:
        value = placeholders[name].meta.get("val") if name in placeholders else None
        dims = getattr(value, "shape", ())
        shapes.append(tuple(d if isinstance(d, int) else d.node.expr for d in dims))
    return shapes


def program_shape_mismatch(program: "torch.export.ExportedProgram",
                           shapes: Sequence[Sequence[int]]) -> Optional[str]:
    """Why inputs of ``shapes`` do not fit the saved ``program`` (e.g. "input 1, dimension 0 is fixed at 1"),
    or None when they fit: fixed sizes must match, a dynamic one lie in its range and equal every other
    dimension with the same symbol. Sizes derived from a symbol (``2*s0``) are left to the program's own check."""
    accepted = program_input_shapes(program)
    if len(shapes) != len(accepted):
        return f"it takes {len(accepted)} input{'s' if len(accepted) != 1 else ''}, {len(shapes)} given"
    seen = {}
    for index, (want, got) in enumerate(zip(accepted, shapes), start=1):
        if len(want) != len(got):
            return f"input {index} has {len(want)} dimensions, {len(got)} given"
        for axis, (dim, size) in enumerate(zip(want, got)):
            where = f"input {index}, dimension {axis}"
            if isinstance(dim, int):
                if dim != size:
                    return f"{where} is fixed at {dim}"
                continue
            bounds = program.range_constraints.get(dim)
            if bounds is not None and not bounds.lower <= size <= bounds.upper:
                upper = str(bounds.upper)  # "int_oo" (torch's integer infinity) without a maximum
                return f"{where} ranges over {bounds.lower}..{upper if upper.isdigit() else '(no limit)'}"
            if getattr(dim, "is_Symbol", False) and seen.setdefault(dim, (size, where))[0] != size:
                return f"{where} must equal {seen[dim][1]} ({seen[dim][0]})"
    return None
