"""What an ONNX file says about its graph inputs, read without its external weights (onnx is imported only when a
file is read, so importing this module stays cheap):

- :func:`read_onnx_file` reads the file once; None for engines and unreadable files;
- :func:`stored_example_shapes`: the example input shapes :func:`dcn_deploy.export` recorded in it
  (:data:`EXAMPLE_SHAPES_KEY`);
- :func:`fed_inputs`: the graph inputs a run feeds (the initialisers left out);
- :func:`roi_inputs` / :func:`roi_input_names`: the inputs that are RoI boxes, which random feeds fill with valid
  boxes;
- :func:`read_stored_inputs`: the stored shapes with each graph input's dimensions and the RoI inputs, what
  :func:`dcn_deploy.feeds.shape_options.parse_shape_options` completes ``--shape`` from.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Dict, Tuple

from .shapes import Shape

# metadata_props key under which dcn_deploy.export records the example input shapes of an ONNX file, as JSON
# {input name: [dims]}; read back by parse_shape_options as the default size of dynamic dimensions.
EXAMPLE_SHAPES_KEY = "dcn_deploy.example_shapes"
# The ops whose input 1 is a box list, rows (batch index, x1, y1, x2, y2) in input-image pixels.
_ROI_OPS = {("dcn_deploy", "DeformRoIPool"), ("dcn_deploy", "DeformPSRoIPool")}
# The ops such rows pass through on their way to a standard RoiAlign's batch indices (input 2) in `dcn-deploy adopt`'s
# rewrite of mmcv's and mmdeploy's RoIAlign nodes: column 0 sliced, squeezed and cast to int64 (and, per feature
# level, gathered), each op's data being its input 0.
_BATCH_INDEX_PATH_OPS = {"Slice", "Squeeze", "Unsqueeze", "Cast", "Gather", "GatherND", "GatherElements", "Reshape",
                         "Flatten", "Identity", "Compress"}
Dim = object  # a graph input's dimension: an int, a symbol name (str), or None (dynamic, unnamed)


def read_onnx_file(path: os.PathLike):
    """The ONNX file at ``path`` without its external weights, or None for engines and unreadable files (the
    runner that opens such a file reports it, not this module). Read it once and hand it to
    :func:`dcn_deploy.feeds.shape_options.parse_shape_options` (``model=``) and :func:`roi_input_names`, rather
    than give each the path."""
    path = Path(path)
    if path.suffix.lower() != ".onnx" or not path.is_file():
        return None
    import onnx  # here, not at the top: importing this module must not import onnx

    try:
        return onnx.load(str(path), load_external_data=False)
    except Exception:  # noqa: BLE001 - protobuf raises several types for a file that is not a model
        return None


def stored_example_shapes(model_path: os.PathLike) -> Dict[str, Shape]:
    """The example input shapes :func:`dcn_deploy.export` recorded in an ONNX file (metadata key
    :data:`EXAMPLE_SHAPES_KEY`), ``{input name: shape}``; empty for a file without them, or that is not ONNX."""
    return read_stored_inputs(read_onnx_file(Path(model_path)))[0]


def read_stored_inputs(proto) -> Tuple[Dict[str, Shape], Dict[str, Tuple[Dim, ...]], Tuple[str, ...]]:
    """(stored example shapes, the graph inputs' dims: ints, symbol names or None, the RoI inputs) of a model
    read by :func:`read_onnx_file`; all empty for None (a file that could not be read)."""
    if proto is None:
        return {}, {}, ()
    text = next((p.value for p in proto.metadata_props if p.key == EXAMPLE_SHAPES_KEY), None)
    try:
        raw = json.loads(text) if text else {}
        stored = {str(name): tuple(int(d) for d in dims) for name, dims in raw.items()}
    except (ValueError, TypeError, AttributeError):  # a hand-edited or foreign value: as if absent
        return {}, {}, ()
    dims = {v.name: tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                          for d in v.type.tensor_type.shape.dim)
            for v in fed_inputs(proto.graph)}
    return stored, dims, roi_input_names(proto.graph)


def fed_inputs(graph) -> list:
    """The inputs of an ONNX ``GraphProto`` that a run feeds: its ``input`` ValueInfoProtos, in the graph's order,
    less those an initialiser of the same name gives (an older exporter lists weights as inputs too). This graph's
    own, not its subgraphs'."""
    initialisers = {t.name for t in graph.initializer}
    return [v for v in graph.input if v.name not in initialisers]


def roi_inputs(model_path: os.PathLike) -> Tuple[str, ...]:
    """The graph inputs of an ONNX file that are RoI boxes (input 1 of a ``dcn_deploy`` RoI pooling node).

    Random normal values are no boxes (a batch index of -1 or 2, x2 < x1), so
    :func:`dcn_deploy.feeds.random_feeds.random_feed` makes valid ones for these. Empty for other models, engines
    and unreadable files."""
    proto = read_onnx_file(Path(model_path))
    return () if proto is None else roi_input_names(proto.graph)


def roi_input_names(graph) -> Tuple[str, ...]:
    """:func:`roi_inputs` for an ONNX ``GraphProto`` in memory: input 1 of our RoI pooling nodes, and (K, 5) rows
    whose column 0 becomes a standard ``RoiAlign``'s batch indices (:func:`_rows_indexing_roi_align`)."""
    inputs = {v.name for v in graph.input}
    ours = [n.input[1] for n in graph.node
            if (n.domain, n.op_type) in _ROI_OPS and len(n.input) > 1 and n.input[1] in inputs]
    return tuple(dict.fromkeys(ours + _rows_indexing_roi_align(graph)))


def _rows_indexing_roi_align(graph) -> list:
    """The graph inputs declared (K, 5) from which a standard ``RoiAlign``'s batch indices (its input 2) are cut
    through :data:`_BATCH_INDEX_PATH_OPS` alone: the RoI rows of a file `dcn-deploy adopt` rewrote from mmcv's or
    mmdeploy's RoIAlign. Random values there are no boxes (ONNX Runtime refuses a batch index out of range)."""
    rows = {v.name for v in fed_inputs(graph) if len(v.type.tensor_type.shape.dim) == 2
            and v.type.tensor_type.shape.dim[1].dim_value == 5}
    producers = {out: n for n in graph.node for out in n.output}
    found = []
    for node in graph.node:
        if node.domain not in ("", "ai.onnx") or node.op_type != "RoiAlign" or len(node.input) < 3:
            continue
        name, seen = node.input[2], set()
        while name in producers and name not in seen:  # back along each op's data input
            seen.add(name)
            producer = producers[name]
            if producer.op_type not in _BATCH_INDEX_PATH_OPS or not producer.input:
                break
            name = producer.input[0]
        if name in rows:
            found.append(name)
    return found
