"""Which translation rewrites which foreign node: the deformable layers (:mod:`dcn_deploy.onnx.adopt_nodes`, into our
ops), and mmdeploy's multi-class NMS, RoIAlign, multi-scale deformable attention and ops with a direct standard form
(:mod:`dcn_deploy.onnx.adopt_nms`, :mod:`dcn_deploy.onnx.adopt_roi_align`, :mod:`dcn_deploy.onnx.adopt_msda`,
:mod:`dcn_deploy.onnx.adopt_small_ops`; into standard ONNX)."""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import onnx

from .adopt_msda import adopt_multi_scale_deformable_attention
from .adopt_nms import adopt_batched_nms
from .adopt_nodes import (FOREIGN_DOMAINS, STANDARD_DOMAINS, AdoptedNode, AdoptionError, GraphScope, Translation,
                          adopt_mmcv_deform_conv, adopt_mmcv_deform_roi_pool, adopt_mmcv_modulated_deform_conv,
                          adopt_standard_deform_conv, node_label)
from .adopt_roi_align import adopt_mmcv_roi_align, adopt_multi_level_roi_align
from .adopt_small_ops import adopt_gather_topk, adopt_grid_priors, adopt_grid_sampler, adopt_instance_norm

__all__ = ["MMCV_OPS", "is_adoptable", "is_adoptable_deformable", "reads_inferred_shapes", "translate"]

# mmcv's/mmdeploy's deformable ops, each becoming one of ours (one output each)
_DEFORMABLE: Dict[str, Translation] = {
    "MMCVDeformConv2d": adopt_mmcv_deform_conv,
    "MMCVModulatedDeformConv2d": adopt_mmcv_modulated_deform_conv,
    "MMCVDeformRoIPool": adopt_mmcv_deform_roi_pool,
}
# mmdeploy's other ops (of detectors; Deformable DETR's attention) that have a standard form
_OTHER: Dict[str, Translation] = {
    "TRTBatchedNMS": adopt_batched_nms,
    "MMCVMultiLevelRoiAlign": adopt_multi_level_roi_align,
    "MMCVRoiAlign": adopt_mmcv_roi_align,
    "GatherTopk": adopt_gather_topk,
    "GridPriorsTRT": adopt_grid_priors,
    "TRTInstanceNormalization": adopt_instance_norm,
    "MMCVMultiScaleDeformableAttention": adopt_multi_scale_deformable_attention,
    "grid_sampler": adopt_grid_sampler,
}
_MORE_OUTPUTS = {"TRTBatchedNMS"}  # (its translation checks them)
# Translations that read shapes the file may leave to onnx's shape inference, which cannot see through the other
# foreign nodes: they run after those are rewritten.
_READS_INFERRED_SHAPES = {"MMCVMultiScaleDeformableAttention"}

# The mmcv/mmdeploy op types adopted, for messages.
MMCV_OPS = tuple(sorted(_DEFORMABLE)) + tuple(sorted(_OTHER))


def _translation(node: onnx.NodeProto) -> Optional[Translation]:
    if node.domain in STANDARD_DOMAINS and node.op_type == "DeformConv":
        return adopt_standard_deform_conv
    if node.domain in FOREIGN_DOMAINS:
        return _DEFORMABLE.get(node.op_type) or _OTHER.get(node.op_type)
    return None


def is_adoptable(node: onnx.NodeProto) -> bool:
    """A node :func:`dcn_deploy.onnx.adopt.adopt_model` rewrites: a standard ``DeformConv``, mmcv's/mmdeploy's
    deformable ops, mmdeploy's ``TRTBatchedNMS``, ``MMCVMultiLevelRoiAlign``, ``MMCVRoiAlign``,
    ``MMCVMultiScaleDeformableAttention``, ``GatherTopk``, ``GridPriorsTRT``, ``TRTInstanceNormalization`` and
    ``grid_sampler``."""
    return _translation(node) is not None


def is_adoptable_deformable(node: onnx.NodeProto) -> bool:
    """An adoptable node that is a deformable layer (not one of the detection ops)."""
    return is_adoptable(node) and not (node.domain in FOREIGN_DOMAINS and node.op_type in _OTHER)


def reads_inferred_shapes(node: onnx.NodeProto) -> bool:
    """An adoptable node whose translation reads shapes from onnx's shape inference: rewrite it after the others
    (inference knows nothing past a foreign node, such as mmdeploy's GroupNorm before Deformable DETR's attention)."""
    return node.domain in FOREIGN_DOMAINS and node.op_type in _READS_INFERRED_SHAPES


def translate(node: onnx.NodeProto, scope: GraphScope, roi_sampling_ratio: Optional[int]
              ) -> Tuple[List[onnx.NodeProto], AdoptedNode]:
    """(the nodes that replace ``node``, writing its outputs, and the report of it); ``node`` must be adoptable."""
    if node.op_type not in _MORE_OUTPUTS and len(node.output) != 1:
        raise AdoptionError(f"{node_label(node)} has {len(node.output)} outputs; the op has one")
    return _translation(node)(node, scope, roi_sampling_ratio)
