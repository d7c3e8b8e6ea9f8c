"""Names in an exported graph: its inputs and outputs as the user asks, readable symbols for its dynamic sizes
(``batch``, ``height``, ``width``, ``num_rois`` in place of the exporter's ``s0``, ``s77``)."""
from __future__ import annotations

import re
from typing import Dict, List, Optional, Sequence

import onnx

from ..feeds import fed_inputs, roi_input_names
from ..wording import argument, for_reader
from .opset import all_nodes

__all__ = ["check_io_names", "rename_graph_io", "rename_symbols", "rois_sharing_the_batch"]


def rois_sharing_the_batch(proto: onnx.ModelProto) -> List[int]:
    """Positions of the RoI box inputs (:func:`dcn_deploy.feeds.roi_input_names`) whose dim 0, a box count,
    came out as the same symbol as another input's dim 0, a batch of images."""
    inputs = list(proto.graph.input)
    rois = set(roi_input_names(proto.graph))

    def first_symbol(value) -> str:
        dims = value.type.tensor_type.shape.dim
        return dims[0].dim_param if dims else ""

    batches = {first_symbol(v) for v in inputs if v.name not in rois} - {""}
    return [i for i, v in enumerate(inputs) if v.name in rois and first_symbol(v) in batches]


def check_io_names(input_names: Optional[Sequence[str]], output_names: Optional[Sequence[str]]) -> tuple:
    """What can be checked of ``input_names`` / ``output_names`` before the export: lists of strings, no name
    given twice, no output named like an input (the file's values need distinct names). ValueError names the
    argument, its CLI option and the repeated name; their counts are checked by :func:`rename_graph_io`.
    Returns both as lists (None kept)."""
    seen: Dict[str, str] = {}  # name -> the argument that gave it first
    checked = []
    for kind, names in (("input", input_names), ("output", output_names)):
        if names is not None:
            option = argument(f"{kind}_names", f"--{kind}-names")
            wrong = isinstance(names, (str, bytes)) or not hasattr(names, "__iter__")
            names = names if wrong else list(names)
            if wrong or not all(isinstance(n, str) for n in names):
                raise TypeError(f"{option} must be a list of strings, one per model {kind}, e.g. ['{kind}'], "
                                f"got {names!r}")
            for name in names:
                if name in seen:
                    same = seen[name] == kind
                    raise ValueError(f"{option} {'gives' if same else 'repeats the input name'} {name!r}"
                                     f"{' twice' if same else ''}: every input and output of the file needs its own "
                                     "name; choose another")
                seen[name] = kind
        checked.append(names)
    return tuple(checked)


def rename_graph_io(proto: onnx.ModelProto, input_names: Optional[Sequence[str]],
                     output_names: Optional[Sequence[str]]) -> None:
    """Rename the graph's inputs and outputs to ``input_names`` / ``output_names`` (None keeps the exporter's),
    everywhere the names are used. ValueError when a list has the wrong length, repeats a name, or takes a name
    that another value of the graph already has."""
    graph = proto.graph
    initialisers = {t.name for t in graph.initializer}
    mapping: Dict[str, str] = {}
    for kind, values, names in (("input", fed_inputs(graph), input_names),
                                ("output", list(graph.output), output_names)):
        if names is None:
            continue
        names = list(names)
        current = [v.name for v in values]
        option = argument(f"{kind}_names", f"--{kind}-names")
        if len(names) != len(current) or len(set(names)) != len(names) or not all(names):
            raise ValueError(f"{option} {_names_as_given(names)}: the model has {len(current)} {kind}"
                             f"{'s' if len(current) != 1 else ''} (the exporter named "
                             f"{'it' if len(current) == 1 else 'them'} {_names_as_given(current)}); give "
                             + (f"{len(current)} distinct, non-empty names, one per {kind} in order"
                                if len(current) != 1 else "one non-empty name"))
        for old, new in zip(current, names):
            if mapping.get(old, new) != new:  # an output that is an input itself cannot take two names
                raise ValueError(f"{option}: {old!r} is both a model input and an output; it keeps one name")
            mapping[old] = new
    mapping = {old: new for old, new in mapping.items() if old != new}
    if not mapping:
        return
    nodes = list(all_nodes(graph))  # a subgraph (If, Loop) may read the graph's inputs by name
    used = {name for node in nodes for name in (*node.input, *node.output)} | initialisers
    taken = sorted(set(mapping.values()) & (used - set(mapping)))
    if taken:
        raise ValueError(f"name(s) {taken} already belong to other values of the exported graph; choose others")
    for node in nodes:
        node.input[:] = [mapping.get(n, n) for n in node.input]
        node.output[:] = [mapping.get(n, n) for n in node.output]
    for value in (*graph.input, *graph.output, *graph.value_info):
        value.name = mapping.get(value.name, value.name)


def _names_as_given(names: Sequence[str]) -> str:
    """Names as the reader writes them: a Python list for a library caller, ``a,b`` for the CLI's option."""
    return for_reader(repr(list(names)), ",".join(map(str, names)))


def rename_symbols(proto: onnx.ModelProto) -> None:
    """Give the exporter's symbols (s0, s77, ...) readable names: batch, height, width (then batch_1, ...).

    Dim 0 of an input is a batch, or ``num_rois`` for a RoI box list (:func:`dcn_deploy.feeds.roi_input_names`);
    dims 2 and 3 of a 4-D input are height and width. The names are substituted as whole words in every shape
    of the graph, so derived sizes read e.g. ``((height - 1)//2) + 1``.
    """
    mapping: Dict[str, str] = {}
    rois = set(roi_input_names(proto.graph))
    taken = {d.dim_param for v in proto.graph.input for d in v.type.tensor_type.shape.dim
             if d.dim_param and not re.fullmatch(r"s\d+", d.dim_param)}  # names the exporter already gave

    def name_for(symbol: str, role: str) -> None:
        if symbol in mapping or not re.fullmatch(r"s\d+", symbol):
            return
        candidate, k = role, 1
        while candidate in taken:
            candidate, k = f"{role}_{k}", k + 1
        mapping[symbol] = candidate
        taken.add(candidate)

    for value in proto.graph.input:
        dims = value.type.tensor_type.shape.dim
        roles = {0: "num_rois" if value.name in rois else "batch"}
        if len(dims) == 4:
            roles.update({2: "height", 3: "width"})
        for axis, role in roles.items():
            if axis < len(dims) and dims[axis].dim_param:
                name_for(dims[axis].dim_param, role)
    if not mapping:
        return
    pattern = re.compile(r"\b(" + "|".join(re.escape(s) for s in mapping) + r")\b")
    for value in list(proto.graph.input) + list(proto.graph.output) + list(proto.graph.value_info):
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param:
                dim.dim_param = pattern.sub(lambda m: mapping[m.group(1)], dim.dim_param)
