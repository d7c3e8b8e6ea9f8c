"""Which type a model computes in, when narrower than its inputs and outputs: a half type for a graph converted by
:func:`dcn_deploy.onnx.precision.convert_precision` with float32 I/O, or an fp16/bf16 TensorRT engine (its sidecar
says; :meth:`dcn_deploy.backends.trt_runner.TrtRunner.compute_dtype`); ``"tf32"`` for a float32 engine built with
TF32 allowed (TensorRT's default, and our plugin's ``allow_tf32``: float32 values, products rounded to float16's
10-bit mantissa). Comparisons hold such a runner's float32 outputs to that type's tolerance
(:func:`dcn_deploy.compare.compare_runners`).

Importing this module does not import onnx.
"""
from __future__ import annotations

import os
from typing import Optional

__all__ = ["HALF_TYPES", "NARROW_TYPES", "half_compute_type", "model_half_type", "narrowest_compute_type"]

HALF_TYPES = ("bfloat16", "float16")  # the narrowest first
NARROW_TYPES = HALF_TYPES + ("tf32",)  # every compute type narrower than float32, the least precise first
_ONNX_CODES = {16: "bfloat16", 10: "float16"}  # onnx.TensorProto.BFLOAT16, FLOAT16


def narrowest_compute_type(*types: Optional[str]) -> Optional[str]:
    """The least precise of :data:`NARROW_TYPES` among ``types`` (bfloat16, then float16, then tf32), or None when
    there is none."""
    return next((t for t in NARROW_TYPES if t in types), None)


def half_compute_type(model) -> Optional[str]:
    """``"bfloat16"`` or ``"float16"`` when a ``ModelProto`` computes in that type anywhere (an initializer, a Cast
    to it, a typed value, a Constant), the narrower one if both; None for None (an unreadable file) or a model
    without either."""
    if model is None:
        return None
    graph = model.graph
    found = {t.data_type for t in graph.initializer}
    found |= {v.type.tensor_type.elem_type for v in (*graph.value_info, *graph.input, *graph.output)}
    for node in graph.node:
        for attribute in node.attribute:
            if node.op_type == "Cast" and attribute.name == "to":
                found.add(attribute.i)
            elif attribute.name == "value" and attribute.HasField("t"):
                found.add(attribute.t.data_type)
    return narrowest_compute_type(*(_ONNX_CODES[code] for code in found if code in _ONNX_CODES))


def model_half_type(source) -> Optional[str]:
    """:func:`half_compute_type` of a model given as a path (read without its external data), serialised bytes or a
    ``ModelProto``; None for anything unreadable (the runner that loads it reports that)."""
    if isinstance(source, (str, os.PathLike)):
        from ..feeds import read_onnx_file

        return half_compute_type(read_onnx_file(source))
    if isinstance(source, (bytes, bytearray)):
        import onnx

        try:
            return half_compute_type(onnx.load_from_string(bytes(source)))
        except Exception:  # noqa: BLE001 - protobuf raises several types for bytes that are not a model
            return None
    return half_compute_type(source) if hasattr(source, "graph") else None
