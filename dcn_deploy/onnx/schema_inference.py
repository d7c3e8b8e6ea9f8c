"""What the shape-inference functions of our ops' schemas share (:mod:`dcn_deploy.onnx.opset`,
:mod:`dcn_deploy.onnx.roi_opset`): a tensor type's dimensions, a dimension's known size, and the error that names
the op."""
from __future__ import annotations

from typing import List, Optional

import onnx

__all__ = ["inference_error", "known_size", "tensor_dims"]


def tensor_dims(type_proto: Optional[onnx.TypeProto]) -> Optional[List[onnx.TensorShapeProto.Dimension]]:
    """The dimensions of a tensor type, or None when its shape is unknown."""
    if type_proto is None or not type_proto.HasField("tensor_type") or not type_proto.tensor_type.HasField("shape"):
        return None
    return list(type_proto.tensor_type.shape.dim)


def known_size(dim: Optional[onnx.TensorShapeProto.Dimension]) -> Optional[int]:
    """A dimension's size, or None when it is symbolic or unknown."""
    return dim.dim_value if dim is not None and dim.HasField("dim_value") else None


def inference_error(domain: str, op: str, message: str) -> Exception:
    """The error shape inference raises for ``domain::op``: onnx reports it with the node."""
    return onnx.shape_inference.InferenceError(f"[{domain}::{op}] {message}")
