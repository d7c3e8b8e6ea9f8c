"""onnx's reference evaluator with the ops our function bodies and adopted files need replaced by versions written from
the standard's text alone (numpy only, no torch, no ONNX Runtime), so the ``onnx-reference`` runner stays an
independent oracle that can run our models:

- ``DeformConv``: onnx's own runs a Python loop per output value (minutes per small layer) and divides by zero when
  H or W is 1: :mod:`.reference_deform_conv`.
- ``GatherElements``: onnx's own picks values with ``numpy.choose``, which takes at most 64 choices along the axis,
  so it fails on any real table (the PS RoI pooling body gathers single values from a flat copy of the input).
- ``GridSample``: onnx's own refuses the mode names of opsets 16-19 and loops per output value; adopt writes it for
  mmdeploy's deformable attention and ``grid_sampler``: :mod:`.reference_grid_sample`.
"""
from __future__ import annotations

import numpy as np
from onnx import ModelProto
from onnx.reference import ReferenceEvaluator
from onnx.reference.op_run import OpRun

from .reference_deform_conv import DeformConv
from .reference_grid_sample import GridSample

__all__ = ["GatherElements", "OracleEvaluator"]


class GatherElements(OpRun):
    """``out[i][j][k] = data[index[i][j][k]][j][k]`` for axis 0 (likewise for the others); ``index`` has data's rank,
    each of its other axes at most data's length there, and values in [-s, s-1] with s = data's length on ``axis``
    (negative ones count from the end)."""

    op_domain = ""

    def _run(self, data, indices, axis=0):
        axis = int(axis) % data.ndim
        size = data.shape[axis]
        if indices.ndim != data.ndim:
            raise ValueError(f"GatherElements: indices must have data's rank {data.ndim}, got {indices.ndim}")
        if indices.size and (indices.min() < -size or indices.max() >= size):
            raise ValueError(f"GatherElements: indices must lie in [{-size}, {size - 1}] on axis {axis}, got "
                             f"[{indices.min()}, {indices.max()}]")
        index = np.where(indices < 0, indices + size, indices).astype(np.int64)
        # take_along_axis needs equal shapes off the axis; the standard allows index to be smaller there
        view = data[tuple(slice(None) if a == axis else slice(0, n) for a, n in enumerate(indices.shape))]
        return (np.take_along_axis(view, index, axis=axis),)


def _with_complete_function_calls(proto):
    """A copy of ``proto`` in which every call of a local function passes all of the function's inputs and sets
    every attribute the function gives a default.

    ONNX lets a call leave trailing optional inputs out (our ``dcn_deploy::DeformConv2d`` without bias and mask
    has 3 of 5) and leave attributes at the function's defaults (``gamma`` of ``DeformRoIPool``); onnx's
    evaluator requires the inputs and does not look the defaults up, so the missing inputs are passed as empty
    names (absent) and the defaults written onto the call.
    """
    functions = {(f.domain, f.name): f for f in proto.functions}
    if not functions:
        return proto
    complete = type(proto)()
    complete.CopyFrom(proto)
    nodes = list(complete.graph.node) + [n for f in complete.functions for n in f.node]
    for node in nodes:  # (functions called from subgraphs of If/Loop are left as they are: none of ours)
        function = functions.get((node.domain, node.op_type))
        if function is None:
            continue
        node.input.extend([""] * (len(function.input) - len(node.input)))
        given = {a.name for a in node.attribute}
        node.attribute.extend(a for a in function.attribute_proto if a.name not in given)
    return complete


class OracleEvaluator(ReferenceEvaluator):
    """``ReferenceEvaluator`` with :class:`DeformConv`, :class:`GatherElements` and :class:`GridSample`, in function
    bodies too.

    onnx builds the evaluators of a model's functions (our ``dcn_deploy`` ops' bodies) as ``self.__class__(...)``
    without the ``new_ops`` argument, so the replacements are given here, by default, instead of by the caller.
    A caller's own ``new_ops`` come first (onnx keeps the first class per op), so they win over ours. A model's
    calls of its local functions get their left-out inputs and attributes (:func:`_with_complete_function_calls`).
    """

    def __init__(self, proto, *args, new_ops=None, **kwargs):
        if isinstance(proto, ModelProto):  # (onnx also builds the function bodies' evaluators with this class)
            proto = _with_complete_function_calls(proto)
        super().__init__(proto, *args, new_ops=[*(new_ops or []), DeformConv, GatherElements, GridSample], **kwargs)
