"""A runner over ``onnx.reference.ReferenceEvaluator``: the ONNX specification in pure Python.

Slow (every op is numpy), but independent of any runtime, so it answers "does ONNX Runtime execute this file as
the standard says?" (``dcn-deploy verify MODEL.onnx --against ort``). It runs the function bodies stored in the
file, so our ``dcn_deploy`` ops need no registration. Two of its ops are our numpy versions of the standard
(:mod:`.reference_evaluator`): ``DeformConv`` (onnx's own takes minutes per small layer and divides by zero when H or
W is 1) and ``GatherElements`` (onnx's own fails past 64 values along the axis).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, Mapping, Optional, Tuple, Union

import numpy as np

from .base import Runner, RunnerError, TensorMeta
from .ort_runner import _checked_input, invalid_roi_pool_message, register_dcn_schemas

__all__ = ["OnnxReferenceRunner", "graph_io_metadata"]


def _value_info_meta(value_info) -> TensorMeta:
    from onnx import helper

    tensor_type = value_info.type.tensor_type
    try:
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tensor_type.elem_type))
    except (KeyError, TypeError, ValueError):
        raise RunnerError(f"onnx-reference: input {value_info.name!r} has an element type numpy cannot hold") from None
    shape = []
    for dim in tensor_type.shape.dim:
        if dim.HasField("dim_value"):
            shape.append(int(dim.dim_value))
        else:
            shape.append(dim.dim_param or None)
    return TensorMeta(value_info.name, dtype, tuple(shape))


def graph_io_metadata(proto) -> Tuple[Tuple[TensorMeta, ...], Tuple[str, ...]]:
    """The inputs (initialisers left out: they are weights, not feeds) and the output names of a ModelProto."""
    from ..feeds.onnx_file_inputs import fed_inputs

    inputs = tuple(_value_info_meta(v) for v in fed_inputs(proto.graph))
    return inputs, tuple(v.name for v in proto.graph.output)


class OnnxReferenceRunner(Runner):
    """Runs a model (path, bytes or ModelProto) with onnx's reference evaluator."""

    def __init__(self, model: Union[str, os.PathLike, bytes, object], name: str = "onnx-reference") -> None:
        super().__init__()
        if isinstance(model, (str, os.PathLike)) and not Path(model).exists():
            raise FileNotFoundError(f"ONNX model {model} does not exist")
        self.model = model
        self.name = name
        self._evaluator = None
        self._inputs: Tuple[TensorMeta, ...] = ()
        self._output_names: Tuple[str, ...] = ()

    def compute_dtype(self) -> Optional[str]:
        """The half type the graph computes in, if any (as the ONNX Runtime runner)."""
        from ..onnx.compute_type import model_half_type

        return model_half_type(self.model)

    def _activate(self) -> None:
        import onnx

        from .reference_evaluator import OracleEvaluator

        from .factory import not_an_onnx_model

        register_dcn_schemas()
        label = str(self.model) if isinstance(self.model, (str, os.PathLike)) else "the model"
        try:
            if isinstance(self.model, (str, os.PathLike)):
                proto = onnx.load(str(self.model))
            elif isinstance(self.model, (bytes, bytearray)):
                proto = onnx.load_from_string(bytes(self.model))
            else:
                proto = self.model
        except Exception as exc:  # protobuf's DecodeError for a file that is not a ModelProto
            raise RunnerError(f"onnx-reference: {not_an_onnx_model(label, f'{type(exc).__name__}: {exc}')}") from exc
        if not hasattr(proto, "graph"):
            raise TypeError(f"onnx-reference: model must be a path, bytes or onnx.ModelProto, "
                            f"got {type(self.model).__name__}")
        invalid = invalid_roi_pool_message(proto, label)
        if invalid is not None:
            raise RunnerError(f"onnx-reference: {invalid}")
        self._inputs, self._output_names = graph_io_metadata(proto)
        try:
            self._evaluator = OracleEvaluator(proto)
        except Exception as exc:  # the evaluator raises many types for unsupported ops
            raise RunnerError(f"onnx-reference: cannot load the model: {exc}") from exc

    def _deactivate(self) -> None:
        self._evaluator = None

    def input_metadata(self) -> Tuple[TensorMeta, ...]:
        if self._evaluator is None:
            raise RunnerError("onnx-reference: input_metadata() needs an active runner ('with runner:')")
        return self._inputs

    def _infer(self, feed: Mapping[str, object]) -> Dict[str, np.ndarray]:
        # the ONNX Runtime runner's checks: the evaluator would compute in any dtype
        arrays = {meta.name: _checked_input(feed[meta.name], meta, "onnx-reference") for meta in self._inputs}
        try:
            values = self._evaluator.run(None, arrays)
        except Exception as exc:  # the evaluator raises anything its op implementations raise
            raise RunnerError(f"onnx-reference: inference failed: {exc}") from exc
        return {name: np.asarray(v) for name, v in zip(self._output_names, values)}
