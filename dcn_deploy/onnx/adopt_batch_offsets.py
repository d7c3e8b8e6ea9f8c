"""A check adopt runs on the model it wrote: mmdeploy 1.3.1's export of DETR heads with sigmoid scores (Deformable
DETR, DINO) picks each image's boxes by

    index = TopK(Flatten(scores (batch, queries, classes)), max_per_img).indices // classes
    rows  = index + Range(batch) * max_per_img          # the batch offset
    boxes = Gather(Reshape(bbox_pred, (-1, 4)), rows)

where the rows of image ``i`` start at ``i * queries``, not ``i * max_per_img``. At batch 1 the offset is zero and
all is well; at batch > 1 every image after the first reads another image's rows (or an index out of range, where
``max_per_img`` > ``queries``), in ONNX Runtime and TensorRT alike, and two runners agree on the wrong boxes, so
``verify`` passes. ONNX holds no mistake to refuse here, so :func:`batch_offset_notes` finds the pattern in the
inferred model (the TopK input's static width ``queries * classes``, the Div by ``classes``, the Add of
``Range * step``) and says where the step differs from ``queries``; nothing is changed.
"""
from __future__ import annotations

from typing import Dict, List, Optional

import onnx
from onnx import numpy_helper

# ops a value passes through unchanged in meaning on its way between the pattern's nodes
_PASS_THROUGH = {"Cast", "Unsqueeze", "Expand", "Reshape", "Squeeze", "Identity"}


def batch_offset_notes(model: onnx.ModelProto) -> List[str]:
    """One note per batch offset of a TopK's box rows whose step is not the rows' spacing (module docstring), for a
    model with inferred shapes (the graph's own nodes; subgraphs are not searched). Empty when none is found."""
    graph = model.graph
    producer = {out: node for node in graph.node for out in node.output}
    consumers: Dict[str, List[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    dims = {v.name: [d.dim_value if d.HasField("dim_value") else None for d in v.type.tensor_type.shape.dim]
            for v in list(graph.value_info) + list(graph.input) + list(graph.output)}
    initialisers = {t.name: t for t in graph.initializer}

    def scalar(name: str) -> Optional[int]:
        node = producer.get(name)
        tensor = initialisers.get(name)
        if node is not None and node.op_type == "Constant":
            tensor = next((a.t for a in node.attribute if a.name == "value"), None)
        if tensor is None:
            return None
        value = numpy_helper.to_array(tensor)
        return int(value.reshape(-1)[0]) if value.size == 1 and float(value.reshape(-1)[0]).is_integer() else None

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

    notes = []
    for topk in (n for n in graph.node if n.op_type == "TopK" and len(n.output) > 1):
        shape = dims.get(topk.input[0]) or []
        axis = next((a.i for a in topk.attribute if a.name == "axis"), -1)
        width = shape[axis] if shape and -len(shape) <= axis < len(shape) else None
        if not width:
            continue
        for div in (n for n in forward(topk.output[1]) if n.op_type == "Div" and n.input[0] != n.input[1]):
            classes = scalar(div.input[1])
            if not classes or classes < 1 or width % classes:
                continue
            queries = width // classes
            for add in (n for n in forward(div.output[0]) if n.op_type == "Add"):
                others = [name for name in add.input if back(name) is not div]
                offset = back(others[0]) if len(others) == 1 else None
                if offset is None or offset.op_type != "Mul":
                    continue
                if not any(getattr(back(name), "op_type", None) == "Range" for name in offset.input):
                    continue
                step = next((s for s in map(scalar, offset.input) if s is not None), None)
                if step is not None and step != queries:
                    notes.append(
                        f"{add.name or add.output[0]} offsets the box rows of image i by i*{step}, but "
                        f"{topk.name or 'TopK'} picks from {queries} rows per image ({width} scores = {queries} x "
                        f"{classes} classes): at "
                        f"batch > 1 each image after the first gets wrong boxes (mmdeploy 1.3.1's DETR heads write "
                        f"max_per_img there; docs/library.md). Run batch 1, or re-export with max_per_img = "
                        f"{queries} in the model's test_cfg")
    return notes
