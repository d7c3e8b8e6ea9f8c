"""Rewrite the deformable nodes that other exporters write as ``dcn_deploy``'s own (:func:`adopt_model`).

Files exported by mmcv, mmdeploy or torch's exporter (torchvision's ``deform_conv2d``) hold deformable nodes that
only their own runtimes know: mmcv's and mmdeploy's custom ops need those projects' plugin libraries ("plugin not
found" on TensorRT, "no op registered" in ONNX Runtime), and the standard ``DeformConv`` goes to TensorRT's own
plugin (float and half only, symmetric pads only). These are the same layers as ours, so each node can be replaced
by the ``dcn_deploy`` node that computes the same thing:

| node | becomes | how |
| --- | --- | --- |
| ``DeformConv`` (ONNX, 2-D) | ``DeformConv2d`` | same inputs and attributes, ``kernel_shape`` dropped |
| ``mmcv::MMCVDeformConv2d``, ``mmdeploy::MMCVDeformConv2d`` | ``DeformConv2d`` | inputs (input, offset, weight) -> (X, W, offset) |
| ``mmcv::MMCVModulatedDeformConv2d``, ``mmdeploy::...`` | ``DeformConv2d`` | (input, offset, mask, weight[, bias]) -> (X, W, offset, B, mask) |
| ``mmcv::MMCVDeformRoIPool``, ``mmdeploy::...`` | ``DeformRoIPool`` | same inputs and attribute names (ours are mmcv's) |
| ``mmdeploy::TRTBatchedNMS`` | standard ``NonMaxSuppression``, ``TopK``, ... | what mmdeploy's TensorRT plugin computes (:mod:`dcn_deploy.onnx.adopt_nms`) |
| ``mmdeploy::MMCVMultiLevelRoiAlign``, ``mmcv::MMCVRoiAlign`` | standard ``RoiAlign`` (opset 16), per level | what mmdeploy's TensorRT plugins compute, average pooling (:mod:`dcn_deploy.onnx.adopt_roi_align`) |
| ``mmdeploy::MMCVMultiScaleDeformableAttention`` | standard ``GridSample``, per level | what mmdeploy's TensorRT plugin computes (:mod:`dcn_deploy.onnx.adopt_msda`) |
| ``mmdeploy::GatherTopk``, ``GridPriorsTRT``, ``TRTInstanceNormalization``, ``grid_sampler`` | standard ``GatherND``; ``Range``, ``Expand``; ``InstanceNormalization``; ``GridSample`` | the same; ``grid_sampler`` as PyTorch's ``grid_sample`` computes it (:mod:`dcn_deploy.onnx.adopt_small_ops`) |

mmcv's attributes ``stride``, ``padding``, ``dilation``, ``groups``, ``deform_groups`` become ``strides``, ``pads``
(padding on both sides), ``dilations``, ``group`` and ``offset_group``. mmdeploy writes ``MMCVDeformConv2d``'s
padding as four values ``[pad_h, pad_h, pad_w, pad_w]`` (each of the PyTorch layer's two values twice); it is read
so, which is what the PyTorch layer computed; mmdeploy's own kernels read the first two values as (pad_h, pad_w),
that is (pad_h, pad_h), and lose the width padding when it differs. A missing bias becomes zeros, a missing RoI
offset zeros (what mmcv computes without one). The semantics (sampling, the out-of-image rule, offset and mask
layouts) are the same in all of these ops: torchvision's, which mmcv's kernels follow.

The model's default opset is raised to 19 when it is lower (``onnx.version_converter``; mmdeploy exports opset 11),
because the function bodies stored with our ops (so that ONNX Runtime runs the file) use the standard
``DeformConv`` of opset 19, and the IR version with it where lower than the opset needs (9 for opset 19: the converter
keeps the old one). Nodes keep their names and their output names, so the rest of the graph is unchanged, but for a
``Hardmax`` below opset 13 whose axis is not -1: the converter keeps it as it is though opset 13 changed its meaning,
so it is first written in the form that means the same in both (Flatten, Hardmax, Reshape).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import onnx
from onnx import helper

from ..wording import argument
from .adopt_batch_offsets import repair_batch_offsets
from .adopt_dispatch import MMCV_OPS, is_adoptable, is_adoptable_deformable, reads_inferred_shapes, translate
from .adopt_nodes import (FOREIGN_DOMAINS, STANDARD_DOMAINS, AdoptedNode, AdoptionError, GraphScope, attributes_of,
                          fresh_name, node_id, number_attribute, source_op)
from .opset import DOMAIN, MIN_OPSET, all_nodes, attach_functions, default_opset, subgraphs, with_subgraphs

__all__ = ["FOREIGN_DOMAINS", "AdoptedNode", "AdoptedFile", "Adoption", "AdoptionError", "is_adoptable",
           "is_adoptable_deformable", "foreign_nodes",
           "node_counts", "count_summary", "node_summary", "foreign_op_advice", "adopt_model", "adopt_file"]


@dataclass
class Adoption:
    """What :func:`adopt_model` did: the nodes rewritten, in graph order (multi-scale deformable attention last: it
    is rewritten once the others are standard ONNX), and the default opset before and after."""

    nodes: List[AdoptedNode] = field(default_factory=list)
    opset_before: int = 0
    opset_after: int = 0
    left: List[str] = field(default_factory=list)  # other mmcv/mmdeploy nodes, "name (domain::op)"
    inlined: List[str] = field(default_factory=list)  # local functions inlined because they held foreign nodes
    notes: List[str] = field(default_factory=list)  # about the whole model (adopt_batch_offsets), not one node

    def summary(self) -> str:
        ours = sum(1 for node in self.nodes if node.target.startswith(f"{DOMAIN}::"))
        kinds = [f"{ours} as {DOMAIN} ops"] if ours else []
        kinds += [f"{len(self.nodes) - ours} as standard ONNX"] if ours < len(self.nodes) else []
        lines = [f"rewrote {len(self.nodes)} node(s): {' and '.join(kinds)}"
                 + (f"; raised the default opset from {self.opset_before} to {self.opset_after}"
                    if self.opset_after != self.opset_before else "")]
        if self.inlined:
            lines.append(f"  inlined the local function(s) holding them: {', '.join(self.inlined)}")
        for node in self.nodes:
            attrs = ", ".join(f"{k}={v}" for k, v in node.attributes.items())
            lines.append(f"  {node.name}: {node.source} -> {node.target} ({attrs})")
            lines += [f"    note: {note}" for note in node.notes]
        if self.left:
            lines.append(f"left as they are (no standard form here; they still need their project's plugin "
                         f"library): {', '.join(self.left)}")
        lines += [f"note: {note}" for note in self.notes]
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"nodes": [n.to_dict() for n in self.nodes], "opset_before": self.opset_before,
                "opset_after": self.opset_after, "left": list(self.left), "inlined": list(self.inlined),
                "notes": list(self.notes)}


# --------------------------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------------------------

def _function_nodes(function: onnx.FunctionProto) -> Iterable[onnx.NodeProto]:
    """A local function's nodes and those of their subgraphs; none for our own ops' bodies (attach_functions), whose
    standard DeformConv nodes are how ONNX Runtime runs our ops, not nodes to rewrite."""
    return () if function.domain == DOMAIN else with_subgraphs(function.node)


def foreign_nodes(model: onnx.ModelProto, *, standard: bool = True, where: str = "everywhere"
                  ) -> List[onnx.NodeProto]:
    """The nodes :func:`adopt_model` rewrites: in the graph and its subgraphs (``where="graph"``), inside local
    functions (``where="functions"``, whose calls it inlines first: torch's ``export_modules_as_functions`` writes
    mmcv's nodes there), or both (the default). ``standard=False`` leaves out the standard ``DeformConv`` nodes (which
    ONNX Runtime runs as they are)."""
    nodes = list(all_nodes(model.graph)) if where != "functions" else []
    if where != "graph":
        nodes += [n for f in model.functions for n in _function_nodes(f)]
    return [n for n in nodes if is_adoptable(n) and (standard or n.domain in FOREIGN_DOMAINS)]


def node_counts(nodes: Sequence[onnx.NodeProto]) -> Dict[str, int]:
    """``{"mmdeploy::MMCVModulatedDeformConv2d": 3, "ai.onnx::DeformConv": 1}``, in the order the ops first appear."""
    counts: Dict[str, int] = {}
    for node in nodes:
        counts[source_op(node)] = counts.get(source_op(node), 0) + 1
    return counts


def count_summary(counts: Dict[str, int]) -> str:
    """:func:`node_counts`' result as text: ``"3 mmdeploy::MMCVModulatedDeformConv2d, 1 ai.onnx::DeformConv"``."""
    return ", ".join(f"{n} {op}" for op, n in counts.items())


def node_summary(nodes: Sequence[onnx.NodeProto]) -> str:
    """``"3 mmdeploy::MMCVModulatedDeformConv2d, 1 ai.onnx::DeformConv"``."""
    return count_summary(node_counts(nodes))


def foreign_op_advice(model: onnx.ModelProto, path, runs_it: str) -> Optional[str]:
    """For a model holding mmcv's or mmdeploy's nodes that adopt rewrites, what to tell the user who wants ``runs_it``
    ("TensorRT builds", "ONNX Runtime runs") to run it: what the nodes are and the adopt step (``adopt_model`` where
    ``path`` is None, a model held in memory); None without them."""
    from ..wording import for_reader

    nodes = foreign_nodes(model, standard=False)
    if not nodes:
        return None
    what = (f"{node_summary(nodes)} node(s): mmcv's/mmdeploy's own ops, which {runs_it} only with that project's "
            f"plugin library. Rewrite them as {DOMAIN}'s ops and standard ONNX with ")
    if path is None:  # a model in memory: no file to name
        return f"the model holds {what}dcn_deploy.onnx.adopt.adopt_model(model), then use the model it returns"
    adopt = for_reader(f"dcn_deploy.onnx.adopt.adopt_file({str(path)!r}) (CLI: dcn-deploy adopt {path})",
                       f"dcn-deploy adopt {path}")
    return f"{path} holds {what}{adopt}, then use the file it writes ({adopted_name(Path(path))})"


def adopted_name(source: Path) -> Path:
    """Where :func:`adopt_file` writes by default: ``model.onnx`` -> ``model.adopted.onnx`` beside it."""
    return source.with_name(f"{source.stem}.adopted.onnx")


def _all_graphs(graph: onnx.GraphProto) -> Iterator[onnx.GraphProto]:
    yield graph
    for node in graph.node:
        for subgraph in subgraphs(node):
            yield from _all_graphs(subgraph)


def _value_names(model: onnx.ModelProto) -> set:
    names = set()
    for graph in _all_graphs(model.graph):
        names.update(v.name for v in list(graph.input) + list(graph.output) + list(graph.value_info))
        names.update(t.name for t in graph.initializer)
        for node in graph.node:
            names.update(node.output)
            names.add(node.name)
    return names


def _rewrite_graph(graph: onnx.GraphProto, scope: GraphScope, roi_sampling_ratio: Optional[int],
                   adopted: List[AdoptedNode], late: bool) -> None:
    """Rewrite the adoptable nodes of ``graph`` and its subgraphs, in place: those whose translation reads inferred
    shapes (``late``), or the others."""
    rewritten: List[onnx.NodeProto] = []
    for node in graph.node:
        for subgraph in subgraphs(node):
            _rewrite_graph(subgraph, GraphScope(subgraph, scope.names, scope), roi_sampling_ratio, adopted, late)
        if not is_adoptable(node) or reads_inferred_shapes(node) != late:
            rewritten.append(node)
            continue
        new_nodes, report = translate(node, scope, roi_sampling_ratio)
        rewritten.extend(new_nodes)
        adopted.append(report)
    del graph.node[:]
    graph.node.extend(rewritten)
    graph.initializer.extend(scope.added)


def _functions_holding_foreign_nodes(model: onnx.ModelProto) -> List[Tuple[str, str]]:
    """(domain, name) of the local functions whose bodies hold a node :func:`adopt_model` rewrites, directly or
    through a call to another such function (torch's export_modules_as_functions nests a block's function around its
    layer's), in the model's order."""
    holding = {(f.domain, f.name) for f in model.functions if any(is_adoptable(n) for n in _function_nodes(f))}
    grown = True
    while grown:
        callers = {(f.domain, f.name) for f in model.functions
                   if any((n.domain, n.op_type) in holding for n in _function_nodes(f))}
        grown = not callers <= holding
        holding |= callers
    return [(f.domain, f.name) for f in model.functions if (f.domain, f.name) in holding]


def _inlined(model: onnx.ModelProto, functions: List[Tuple[str, str]]) -> onnx.ModelProto:
    """``model`` with the calls to these local functions replaced by their bodies (onnx's inliner), so that the
    foreign nodes inside become graph nodes."""
    from onnx import inliner

    try:
        inlined = inliner.inline_selected_functions(model, functions)
    except Exception as exc:  # noqa: BLE001 - the inliner raises its own C++ error types
        raise AdoptionError(f"the local function(s) {[f'{d}::{n}' for d, n in functions]} hold foreign deformable "
                            f"nodes, and onnx's inliner could not inline them: {str(exc).strip()}; export the model "
                            "without export_modules_as_functions") from exc
    left = [f"{f.domain}::{f.name}" for f in inlined.functions if any(is_adoptable(n) for n in _function_nodes(f))]
    if left:
        raise AdoptionError(f"the local function(s) {left} still hold foreign deformable nodes after inlining; export "
                            "the model without export_modules_as_functions")
    return inlined


def _keep_hardmax_meaning(model: onnx.ModelProto) -> None:
    """Before opset 13, Hardmax(axis=a) flattens its input to 2-D at ``a`` and takes the hardmax of each row; from 13
    on it works along axis ``a`` alone, and onnx's version converter keeps the node as it is (it rewrites Softmax and
    LogSoftmax, not Hardmax). So, in place, each such node whose axis is not -1 becomes the opset-11 form that means
    the same in both: Flatten at ``a``, Hardmax along the rows, Reshape back (the node's output name kept)."""
    names = _value_names(model)
    for graph in _all_graphs(model.graph):
        nodes: List[onnx.NodeProto] = []
        for node in graph.node:
            axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
            if node.op_type != "Hardmax" or node.domain not in STANDARD_DOMAINS or axis == -1:
                nodes.append(node)
                continue
            stem = node_id(node)
            shape, flat, rows = (fresh_name(names, f"{stem}_{part}") for part in ("shape", "flat", "rows"))
            nodes += [helper.make_node("Shape", [node.input[0]], [shape], name=shape),
                      helper.make_node("Flatten", [node.input[0]], [flat], axis=axis, name=flat),
                      helper.make_node("Hardmax", [flat], [rows], axis=1, name=node.name),
                      helper.make_node("Reshape", [rows, shape], list(node.output), name=rows)]
        del graph.node[:]
        graph.node.extend(nodes)


def _raised_opset(model: onnx.ModelProto, opset: int) -> onnx.ModelProto:
    from onnx import version_converter

    if default_opset(model) < 13:
        _keep_hardmax_meaning(model)
    try:
        return version_converter.convert_version(model, opset)
    except Exception as exc:  # noqa: BLE001 - the converter raises its own C++ error types
        raise AdoptionError(
            f"the model imports ONNX opset {default_opset(model)}, and our ops' function bodies need >= {opset}, but "
            f"onnx's version converter could not raise it: {str(exc).strip()}. Re-export the model at opset "
            f">= {opset} (torch.onnx.export(..., opset_version={opset}); mmdeploy: onnx_config's opset_version)"
        ) from exc


def _raise_ir_version(model: onnx.ModelProto) -> None:
    """Raise ``model.ir_version`` (in place, never lower it) to the least IR version its opset imports need (onnx's
    table; domains it does not know need none). Why: onnx's version converter raises the opset and keeps the IR
    version, so an mmdeploy export (IR 6, opset 11) would come out as IR 6 with opset 19, which needs IR 9."""
    needed = helper.find_min_ir_version_for(list(model.opset_import), ignore_unknown=True)
    model.ir_version = max(model.ir_version, needed)


def adopt_model(model: onnx.ModelProto, *, roi_sampling_ratio: Optional[int] = None
                ) -> Tuple[onnx.ModelProto, Adoption]:
    """A copy of ``model`` with every foreign deformable node (this module's table) rewritten as a ``dcn_deploy``
    node, our function bodies attached (:func:`dcn_deploy.onnx.opset.attach_functions`), the default opset raised to
    19 where lower (and the IR version to what the opsets need), and the imports of foreign domains no node uses any
    more dropped. ``model`` is not changed.

    mmdeploy's multi-class NMS (``mmdeploy::TRTBatchedNMS``), RoIAlign (``MMCVMultiLevelRoiAlign``,
    ``MMCVRoiAlign``), multi-scale deformable attention (``MMCVMultiScaleDeformableAttention``) and ops with a
    direct standard form (``GatherTopk``, ``GridPriorsTRT``, ``TRTInstanceNormalization``, ``grid_sampler``) become
    standard ONNX ops that compute what its TensorRT plugins compute (:mod:`dcn_deploy.onnx.adopt_nms`,
    :mod:`dcn_deploy.onnx.adopt_roi_align`, :mod:`dcn_deploy.onnx.adopt_msda`, :mod:`dcn_deploy.onnx.adopt_small_ops`).
    Other mmcv/mmdeploy nodes (``mmdeploy::TRTBatchedRotatedNMS``, say) are left as they are and listed in
    ``adoption.left``: they still need their project's plugin library. mmdeploy's DETR-head batch offset, which
    gives wrong boxes after the first image at batch > 1, is repaired where the graph shows the rows' spacing, and
    noted in ``adoption.notes`` (:mod:`dcn_deploy.onnx.adopt_batch_offsets`).

    Args:
        model: the ONNX model.
        roi_sampling_ratio: the fixed samples per bin side for an ``MMCVDeformRoIPool`` with mmcv's adaptive
            ``sampling_ratio=0``, which our op cannot express (None: such a node is refused, naming it).

    Returns ``(adopted, adoption)``: the new model and an :class:`Adoption` listing the rewritten nodes. Raises
    :class:`AdoptionError` naming the node when one cannot be rewritten (a 3-D DeformConv, a malformed attribute,
    adaptive RoI sampling without ``roi_sampling_ratio``), or when the local functions holding foreign nodes (which
    torch's ``export_modules_as_functions`` writes; their calls are inlined first, listed in ``adoption.inlined``)
    cannot be inlined, or when the opset cannot be raised.
    """
    if roi_sampling_ratio is not None and (isinstance(roi_sampling_ratio, bool)
                                           or not isinstance(roi_sampling_ratio, int)
                                           or roi_sampling_ratio < 1):
        raise ValueError(f"roi_sampling_ratio must be an int >= 1, got {roi_sampling_ratio!r}")
    holding = _functions_holding_foreign_nodes(model)
    adaptive = [n for n in foreign_nodes(model) if n.op_type == "MMCVDeformRoIPool"
                and number_attribute(n, attributes_of(n), "sampling_ratio", 0) == 0]
    if roi_sampling_ratio is not None and not adaptive:
        raise AdoptionError(f"{argument('roi_sampling_ratio', '--roi-sampling-ratio')} is for mmcv DeformRoIPool "
                            "nodes with adaptive sampling (sampling_ratio=0), and this model has none: drop it")
    adoption = Adoption(opset_before=default_opset(model))
    work = onnx.ModelProto()
    work.CopyFrom(model)
    if holding:  # torch's export_modules_as_functions puts a layer's node inside a function of its module
        work = _inlined(work, holding)
        adoption.inlined = [f"{domain}::{name}" for domain, name in holding]
    if adoption.opset_before < MIN_OPSET and foreign_nodes(work):
        work = _raised_opset(work, MIN_OPSET)
    names = _value_names(work)
    for late in (False, True):  # the second round's shape inference sees the first round's standard ops
        _rewrite_graph(work.graph, GraphScope(work.graph, names, model=work), roi_sampling_ratio, adoption.nodes,
                       late)
    adoption.opset_after = default_opset(work)
    adoption.left = [f"{node_id(n)} ({source_op(n)})" for n in all_nodes(work.graph)
                     if n.domain in FOREIGN_DOMAINS]
    used = {n.domain for n in all_nodes(work.graph)} | {n.domain for f in work.functions for n in f.node}
    dropped = set(FOREIGN_DOMAINS) | {domain for domain, _ in holding}  # no longer needed where no node uses them
    kept = [imp for imp in work.opset_import if imp.domain not in dropped or imp.domain in used]
    del work.opset_import[:]
    work.opset_import.extend(kept)
    attach_functions(work)
    _raise_ir_version(work)
    adoption.notes += repair_batch_offsets(work, names)
    return work, adoption


@dataclass(frozen=True)
class AdoptedFile:
    """What :func:`adopt_file` wrote: the new file (and its weights file, when external) and the :class:`Adoption`."""

    path: Path
    weights_path: Optional[Path]
    adoption: Adoption
    # the written model's fed inputs that have a dynamic size beyond the batch and no stored example shape (the
    # sizes verify, bench and build ask for): {input name: dims (ints, symbol names or None)}
    sized_inputs: Dict[str, Tuple[object, ...]] = field(default_factory=dict)


def adopt_file(source, output=None, *, roi_sampling_ratio: Optional[int] = None) -> AdoptedFile:
    """Read the ONNX file ``source``, rewrite its foreign deformable nodes (:func:`adopt_model`) and write the result
    to ``output`` (default: ``<source stem>.adopted.onnx`` beside it), atomically, checked by ``onnx.checker`` (full)
    and strict shape inference before it takes the name.

    Raises :class:`AdoptionError` when the file has no node to rewrite (naming what it has instead) or a node
    cannot be rewritten, ValueError/FileNotFoundError for a path that is not a readable ONNX file or an output that
    cannot be written (or is the source itself).
    """
    from ..backends.factory import read_onnx_model
    from ..io_utils import check_not_an_input, check_output_path
    from .export_file import external_data_name, needs_external_data, write_checked
    from .export_report import ExportError

    source = Path(source)
    output = Path(output) if output is not None else adopted_name(source)
    what = argument("output", "--output")
    check_output_path(output, what)
    check_not_an_input(output, what, [("ONNX model", source)])
    model = read_onnx_model(source)
    if not foreign_nodes(model):
        ours = sum(1 for n in all_nodes(model.graph) if n.domain == DOMAIN)
        custom = {n.domain for n in all_nodes(model.graph) if n.domain not in STANDARD_DOMAINS + (DOMAIN,)}
        raise AdoptionError(
            f"{source} has no node of another exporter that adopt rewrites (ONNX DeformConv; mmcv's or mmdeploy's "
            f"{', '.join(MMCV_OPS)}), so there is nothing to adopt"
            + (f"; its {ours} {DOMAIN} node(s) are ours already: build or run it as it is" if ours else "")
            + ("" if ours or custom else "; its nodes are all standard ONNX (a file adopt wrote already, say), so "
               "ONNX Runtime and TensorRT run it as it is"))
    if not any(imp.domain in STANDARD_DOMAINS for imp in model.opset_import):
        raise AdoptionError(f"{source} imports no default ONNX opset (its opset_import lists "
                            f"{[imp.domain for imp in model.opset_import] or 'nothing'}), though its nodes are ONNX "
                            "ops: a truncated or hand-edited file reads so; adopt the exporter's original file")
    adopted, adoption = adopt_model(model, roi_sampling_ratio=roi_sampling_ratio)
    external = needs_external_data(adopted)
    try:
        write_checked(adopted, output, external)
    except ExportError as exc:
        cause = str(exc.__cause__ or exc).strip().rstrip(".")
        try:
            onnx.checker.check_model(model)
        except onnx.checker.ValidationError as invalid:
            raise AdoptionError(f"{source} itself fails onnx's checker ({str(invalid).strip().rstrip('.')}), and so "
                                f"does the adopted model ({cause}); fix or re-export the source") from exc
        if cause.startswith(f"[{DOMAIN}::"):  # our schema's check of a node's inputs against its attributes
            raise AdoptionError(f"{source} holds a deformable node whose inputs do not fit its attributes ({cause}); "
                                "onnx's checker does not check this for the source's op, and ONNX Runtime refuses "
                                "the node when it runs: fix or re-export the source") from exc
        raise AdoptionError(f"the adopted model fails onnx's checker or shape inference ({cause}), though {source} "
                            "passes the checker: this is a bug in dcn_deploy's adoption; please report it with the "
                            "file") from exc
    from ..feeds.onnx_file_inputs import read_stored_inputs

    stored, dims, _ = read_stored_inputs(adopted)
    sized = {name: shape for name, shape in dims.items()
             if name not in stored and any(not isinstance(d, int) for d in shape[1:])}
    return AdoptedFile(output, output.parent / external_data_name(output) if external else None, adoption, sized)
