"""A repair adopt makes beside the rewrite: mmdeploy 1.3.1's export of DETR heads with sigmoid scores (Deformable
DETR, DINO) picks each image's boxes by

    index = TopK(Flatten(scores (batch, queries, classes)), max_per_img).indices // classes
    rows  = index + Range(batch) * max_per_img          # the batch offset
    boxes = Gather(Reshape(bbox_pred (batch, queries, 4), (-1, 4)), rows)

where the rows of image ``i`` start at ``i * queries``, not ``i * max_per_img``. At batch 1 the offset is zero and
all is well; at batch > 1 every image after the first reads another image's rows (or an index out of range, where
``max_per_img`` > ``queries``), in ONNX Runtime and TensorRT alike, and two runners agree on the wrong boxes, so
``verify`` passes. ONNX holds no mistake to refuse here, so :func:`repair_batch_offsets` finds the pattern in the
model's inferred shapes (the TopK input's static width ``queries * classes``, the Div by ``classes``, the Add of
``Range * step``):

- where the gathered table is Reshape(x (batch, rows, 4), (-1, 4)), so the rows are x's second size apart for
  sure, the step is replaced by that size, which is what the PyTorch head computes, and a note says so: a new
  constant where it is static (Deformable DETR), else x's size read at run time (DINO, whose two-stage head leaves
  the query count to inference, which does not find it); the file's old constant goes where nothing else uses it;
- otherwise only a note names the Add, both counts and the workaround.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional

import numpy as np
import onnx
from onnx import numpy_helper

from .adopt_nodes import GraphScope

__all__ = ["repair_batch_offsets"]

# ops a value passes through unchanged in meaning on its way between the pattern's nodes
_PASS_THROUGH = {"Cast", "Unsqueeze", "Expand", "Reshape", "Squeeze", "Identity", "Flatten"}


@dataclass(frozen=True)
class _BatchOffset:
    """One batch offset whose step differs from the rows' spacing."""

    add: str            # the Add's name (or output)
    topk: str           # the TopK's name
    mul_output: str     # the Mul computing Range * step, by its output
    step_input: str     # the Mul's input holding the step
    step: int
    queries: Optional[int]  # the scores' rows per image, where their shape is static
    classes: int
    table_rows: Optional[int]  # rows per image of the gathered table, where the file shows them
    table_source: Optional[str]  # the (batch, rows, 4) tensor the table is reshaped from, where its rank shows it


def _find(scope: GraphScope) -> List[_BatchOffset]:
    """The batch offsets of TopK box rows whose step is not the rows' spacing, in the scope's graph (its own nodes,
    not its subgraphs'), with the shapes the scope finds (declared, or inferred)."""
    graph = scope.graph
    producer = {out: node for node in graph.node for out in node.output}
    consumers: Dict[str, List[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)

    def values(name: str) -> Optional[list]:  # a constant's values, flat; None for a computed value
        tensor = scope.stored_tensor(name)
        return None if tensor is None else numpy_helper.to_array(tensor).reshape(-1).tolist()

    def scalar(name: str) -> Optional[int]:
        flat = values(name)
        return int(flat[0]) if flat is not None and len(flat) == 1 and float(flat[0]).is_integer() else None

    def back(name: str) -> Optional[onnx.NodeProto]:
        node = producer.get(name)
        while node is not None and node.op_type in _PASS_THROUGH:
            node = producer.get(node.input[0])
        return node

    def forward(name: str) -> List[onnx.NodeProto]:
        found, todo = [], [name]
        while todo:
            for node in consumers.get(todo.pop(), []):
                if node.op_type in ("Cast", "Identity"):
                    todo.append(node.output[0])
                else:
                    found.append(node)
        return found

    def table(add: onnx.NodeProto):
        """(x, rows per image or None) of the table the Add's rows index: the data of the one Gather they index, made
        by Reshape(x (batch, rows, 4), (-1, 4)); (None, None) where the graph does not show it so."""
        gathers, todo = [], [add.output[0]]
        while todo:
            name = todo.pop()
            for node in consumers.get(name, []):
                if node.op_type in _PASS_THROUGH and node.input[0] == name:
                    todo.append(node.output[0])
                elif node.op_type == "Gather" and node.input[1] == name:
                    gathers.append(node)
        reshape = producer.get(gathers[0].input[0]) if len(gathers) == 1 else None
        if reshape is None or reshape.op_type != "Reshape" or values(reshape.input[1]) != [-1, 4]:
            return None, None
        source = scope.dims(reshape.input[0])
        if not source or len(source) != 3 or source[2] not in (4, None):
            return None, None
        return reshape.input[0], source[1]

    found = []
    for topk in (n for n in graph.node if n.op_type == "TopK" and len(n.output) > 1):
        shape = scope.dims(topk.input[0]) or ()
        axis = next((a.i for a in topk.attribute if a.name == "axis"), -1)
        width = shape[axis] if shape and -len(shape) <= axis < len(shape) else None
        for div in (n for n in forward(topk.output[1]) if n.op_type == "Div" and n.input[0] != n.input[1]):
            classes = scalar(div.input[1])
            if not classes or classes < 1 or (width and width % classes):
                continue
            queries = width // classes if width else None
            for add in (n for n in forward(div.output[0]) if n.op_type == "Add"):
                others = [name for name in add.input if back(name) is not div]
                offset = back(others[0]) if len(others) == 1 else None
                if offset is None or offset.op_type != "Mul":
                    continue
                if not any(getattr(back(name), "op_type", None) == "Range" for name in offset.input):
                    continue
                step_input = next((name for name in offset.input if scalar(name) is not None), None)
                source, rows = table(add)
                if step_input is None or scalar(step_input) == (queries or rows):
                    continue
                if queries is None and source is None:
                    continue  # neither count shown: nothing to say
                found.append(_BatchOffset(add.name or add.output[0], topk.name or "TopK", offset.output[0],
                                          step_input, scalar(step_input), queries, classes, rows, source))
    return found


def repair_batch_offsets(model: onnx.ModelProto, names: set) -> List[str]:
    """Repair, in place, each batch offset of this module's pattern whose table shows its rows per image (a static
    count: a new constant; a (batch, rows, 4) tensor of dynamic rows: its size read at run time); return a note for
    each offset found, repaired or not. ``names``: every value name of the model (new ones join it). Nothing is
    changed or said for a model without one, or whose shapes onnx cannot infer (a model over 2 GiB, say); shapes are
    inferred only for a model with a TopK."""
    scope = GraphScope(model.graph, names, model=model)
    notes = []
    muls = {node.output[0]: node for node in model.graph.node if node.op_type == "Mul"}
    added: List[onnx.NodeProto] = []
    for found in _find(scope):
        counts = (f"{found.topk} picks from {found.queries} rows per image ({found.queries * found.classes} scores = "
                  f"{found.queries} x {found.classes} classes)" if found.queries is not None else
                  f"{found.topk} picks from the {found.table_source} rows of each image")
        mul = muls.get(found.mul_output)
        if mul is not None and found.step_input not in mul.input:
            continue  # the same offset reached through a second Add: repaired already
        if mul is not None and found.queries is not None and found.table_rows == found.queries:
            step, spacing = _constant_like(model, scope.stored_tensor(found.step_input), found.queries,
                                           scope.fresh(f"{mul.name}_rows")), f"i*{found.queries}"
        elif mul is not None and found.table_source is not None and found.table_rows in (None, found.queries):
            step, nodes = _rows_at_run_time(model, found.table_source, scope.stored_tensor(found.step_input), scope,
                                            mul.name)
            added += nodes
            spacing = f"i * the rows of {found.table_source} per image, read at run time"
        else:
            notes.append(f"{found.add} offsets the box rows of image i by i*{found.step}, but {counts}: at batch > 1 "
                         f"each image after the first gets wrong boxes (mmdeploy 1.3.1's DETR heads write max_per_img "
                         f"there; docs/library.md). Run batch 1, or re-export with max_per_img equal to the number "
                         "of queries in the model's test_cfg")
            continue
        mul.input[list(mul.input).index(found.step_input)] = step
        _drop_if_unused(model, found.step_input)
        notes.append(f"repaired {found.add}: it offset the box rows of image i by i*{found.step}, but {counts}, so at "
                     f"batch > 1 each image after the first got another image's boxes (mmdeploy 1.3.1's DETR heads "
                     f"write max_per_img there); it now offsets them by {spacing}, as the PyTorch head does")
    if added:
        _insert_in_order(model.graph, added)
    return notes


def _rows_at_run_time(model: onnx.ModelProto, source: str, like: onnx.TensorProto, scope: GraphScope, stem: str):
    """(the name of, the nodes computing) ``source``'s size on axis 1 in the type and shape of the constant
    ``like``."""
    from onnx import helper

    shape, target, sized, cast = (scope.fresh(f"{stem}_rows_{part}") for part in ("shape", "target", "sized", "cast"))
    model.graph.initializer.append(numpy_helper.from_array(np.asarray(like.dims, np.int64).reshape(-1), target))
    nodes = [helper.make_node("Shape", [source], [shape], name=shape, start=1, end=2),
             helper.make_node("Reshape", [shape, target], [sized], name=sized),
             helper.make_node("Cast", [sized], [cast], name=cast, to=like.data_type)]
    return cast, nodes


def _insert_in_order(graph: onnx.GraphProto, added: List[onnx.NodeProto]) -> None:
    """Add ``added`` to ``graph`` and keep its nodes in an order where each comes after the producers of its inputs:
    the graph's own order wherever that allows (Kahn's algorithm, taking the earliest ready node first)."""
    import heapq

    nodes = list(graph.node) + added
    producer = {out: index for index, node in enumerate(nodes) for out in node.output}
    waiting = [0] * len(nodes)
    users: Dict[int, List[int]] = {}
    for index, node in enumerate(nodes):
        for source in {producer[name] for name in node.input if name in producer and producer[name] != index}:
            waiting[index] += 1
            users.setdefault(source, []).append(index)
    ready = [index for index, count in enumerate(waiting) if count == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        index = heapq.heappop(ready)
        order.append(nodes[index])
        for user in users.get(index, []):
            waiting[user] -= 1
            if waiting[user] == 0:
                heapq.heappush(ready, user)
    del graph.node[:]
    graph.node.extend(order)


def _constant_like(model: onnx.ModelProto, like: onnx.TensorProto, value: int, name: str) -> str:
    """A new initializer ``name`` holding ``value`` in the type and shape of the constant ``like``; returns
    ``name``."""
    template = numpy_helper.to_array(like)
    model.graph.initializer.append(numpy_helper.from_array(np.full(template.shape, value, template.dtype), name))
    return name


def _drop_if_unused(model: onnx.ModelProto, name: str) -> None:
    """Remove the constant ``name`` (an initializer or a Constant node) where no node or graph output uses it any
    more (ONNX Runtime warns of unused initializers)."""
    graph = model.graph
    if any(name in node.input for node in graph.node) or any(o.name == name for o in graph.output):
        return
    kept = [t for t in graph.initializer if t.name != name]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    nodes = [n for n in graph.node if not (n.op_type == "Constant" and list(n.output) == [name])]
    del graph.node[:]
    graph.node.extend(nodes)
