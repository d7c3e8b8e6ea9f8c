"""ONNX models past protobuf's 2 GiB limit: the tensor bytes a model holds, the size it takes serialised, whether
it keeps tensors in external files, and writing a model with its tensors in a data file beside it.

Protobuf refuses to serialise or parse a message of 2 GiB or more, so such models live as ``model.onnx`` plus
``model.onnx.data``, and anything that hands a model to another library (TensorRT's parser) must do the same.
:func:`serialized_size` is the one measure of "too large" (export decides by it whether to write a data file,
the TensorRT build whether to parse from one).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Union

from ..io_utils import atomic_path

__all__ = ["PROTOBUF_LIMIT", "data_file_name", "model_tensor_bytes", "serialized_size", "uses_external_data",
           "write_with_external_data"]

PROTOBUF_LIMIT = 2 << 30  # protobuf serialises and parses messages below 2 GiB only

_SUB_BYTE_BITS = {"INT4": 4, "UINT4": 4, "FLOAT4E2M1": 4, "INT2": 2, "UINT2": 2}  # packed several to a byte


def _graph_tensors(graph) -> Iterable:
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices
    for node in graph.node:
        yield from _node_tensors(node)


def _node_tensors(node) -> Iterable:
    for attr in node.attribute:
        if attr.HasField("t"):
            yield attr.t
        yield from attr.tensors
        if attr.HasField("sparse_tensor"):
            yield attr.sparse_tensor.values
            yield attr.sparse_tensor.indices
        for sparse in attr.sparse_tensors:
            yield sparse.values
            yield sparse.indices
        if attr.HasField("g"):
            yield from _graph_tensors(attr.g)
        for graph in attr.graphs:
            yield from _graph_tensors(graph)


def _model_tensors(model) -> Iterable:
    """Every TensorProto of a model: initialisers, Constant values, subgraphs' and local functions' tensors."""
    yield from _graph_tensors(model.graph)
    for function in model.functions:
        for node in function.node:
            yield from _node_tensors(node)


def _tensor_bytes(tensor) -> int:
    """A tensor's data size from its shape and element type. Reading ``raw_data`` to measure it would copy the
    bytes (protobuf's Python objects hand out copies): 2 s and 2 GiB for the largest models."""
    import onnx

    if tensor.data_location == onnx.TensorProto.EXTERNAL:
        return 0
    if tensor.data_type == onnx.TensorProto.STRING:
        return sum(len(s) for s in tensor.string_data)
    count = 1
    for d in tensor.dims:
        count *= int(d)
    name = onnx.TensorProto.DataType.Name(tensor.data_type)
    if name in _SUB_BYTE_BITS:
        return (count * _SUB_BYTE_BITS[name] + 7) // 8
    try:
        return count * onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
    except (KeyError, ValueError, TypeError):  # a type this onnx does not know: measure the bytes themselves
        return len(tensor.raw_data)


def model_tensor_bytes(model) -> int:
    """Bytes of tensor data held inside ``model``, from each tensor's shape and type (external data counts 0)."""
    return sum(_tensor_bytes(t) for t in _model_tensors(model))


# Messages that can hold tensors, measured part by part; any other message (shapes, types, names) is small and
# measured by protobuf itself.
_TENSOR_HOLDERS = frozenset({"ModelProto", "GraphProto", "FunctionProto", "NodeProto", "AttributeProto",
                             "SparseTensorProto", "TrainingInfoProto", "TensorProto"})


def serialized_size(model) -> int:
    """The bytes ``model`` (a ModelProto) takes serialised, ``len(model.SerializeToString())``, measured without
    serialising any tensor's raw data: protobuf's own ``ByteSize()`` serialises the whole message (a copy of it,
    seconds for a large model) and fails at 2 GiB. Exact for every tensor whose raw data fits its shape and type.

    A tensor kept in an external data file counts only its reference (name, shape, location), as in the file.
    Compare with :data:`PROTOBUF_LIMIT`, less room for safety, to decide whether the model fits one message.
    """
    return _message_size(model)


def _message_size(message) -> int:
    kind = message.DESCRIPTOR.name
    if kind == "TensorProto":
        if not message.HasField("raw_data"):  # typed fields (small tensors) or external data: cheap
            return message.ByteSize()
        raw = message.DESCRIPTOR.fields_by_name["raw_data"]
        return _size_without(message, {raw.name}) + _field_size(raw.number, _tensor_bytes(message))
    if kind not in _TENSOR_HOLDERS or (kind == "NodeProto" and next(_node_tensors(message), None) is None):
        return message.ByteSize()  # e.g. a node without tensors (most nodes): small
    heavy = [(field, value) for field, value in message.ListFields()
             if field.message_type is not None and field.message_type.name in _TENSOR_HOLDERS]
    size = _size_without(message, {field.name for field, _ in heavy})
    for field, value in heavy:
        for item in (value if _is_repeated(field) else (value,)):
            size += _field_size(field.number, _message_size(item))
    return size


def _field_size(number: int, length: int) -> int:
    """Serialised size of a length-delimited field (a nested message, bytes) of ``length`` bytes: tag, length,
    payload."""
    return _varint_size(number << 3) + _varint_size(length) + length


def _varint_size(value: int) -> int:
    return max(1, (value.bit_length() + 6) // 7)


def _is_repeated(field) -> bool:
    repeated = getattr(field, "is_repeated", None)  # protobuf 6 and later; ``label`` is deprecated there
    return field.label == field.LABEL_REPEATED if repeated is None else bool(repeated)


def _size_without(message, skip) -> int:
    """Serialised size of ``message`` without its fields named in ``skip`` (a shallow copy of the rest, measured).
    Walks the descriptor, not ``ListFields()``: that would hand out a copy of every bytes field (raw_data)."""
    shell = type(message)()
    for field in message.DESCRIPTOR.fields:
        if field.name in skip:
            continue
        if _is_repeated(field):
            getattr(shell, field.name).extend(getattr(message, field.name))
        elif not message.HasField(field.name):
            continue
        elif field.message_type is not None:
            getattr(shell, field.name).CopyFrom(getattr(message, field.name))
        else:
            setattr(shell, field.name, getattr(message, field.name))
    return shell.ByteSize()


def uses_external_data(model) -> bool:
    """True when some tensor of ``model`` points at an external data file (as loaded with load_external_data=False)."""
    import onnx

    return any(t.data_location == onnx.TensorProto.EXTERNAL for t in _model_tensors(model))


def data_file_name(model_file_name: str) -> str:
    """The data file beside a model file: ``model.onnx`` -> ``model.onnx.data``."""
    return model_file_name + ".data"


def write_with_external_data(model, folder: Union[str, os.PathLike], name: str = "model.onnx") -> Path:
    """Write ``model`` as ``folder/name`` with its tensors (1 KiB and larger) in ``folder/name.data`` beside it, for
    a reader that finds the data by the model file's folder (TensorRT's ``parse_from_file``); returns the model's
    path. The model file appears atomically once its data is complete.

    Moves the tensor data out of ``model`` itself (onnx's external-data writer clears each tensor it writes), so
    a model over 2 GiB is never copied in memory; pass a copy to keep the original whole.
    """
    import onnx

    folder = Path(folder)
    target = folder / name
    data = folder / data_file_name(name)
    if data.exists():
        data.unlink()  # onnx appends to an existing data file
    with atomic_path(target) as tmp:
        onnx.save_model(model, str(tmp), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=data.name, size_threshold=1024)
    return target
