"""The build options that need no TensorRT, checked before it is imported, so a wrong option is reported as
such on any machine: the workspace size (:func:`parse_size`), precision and I/O type, the nodes kept in float32,
the builder optimisation level (:func:`check_build_options`)."""
from __future__ import annotations

import os
import re
from contextlib import contextmanager
from typing import Iterable, Iterator, Optional, Union

__all__ = ["PLUGIN_WORKSPACE_CHARGES_TENSORS_VARIABLE", "PLUGIN_WORKSPACE_VARIABLE", "check_build_options",
           "parse_size", "plugin_workspace_limit"]

# What our TensorRT plugin reads while an engine is built: the workspace limit, so that a deformable convolution
# asks for no more than the builder allows (plugins/deform_conv/deformConvPluginWorkspace.h). Same syntax as
# --workspace.
PLUGIN_WORKSPACE_VARIABLE = "DCN_DEPLOY_PLUGIN_WORKSPACE"
# Set to 1 with the limit where the builder counts a layer's inputs and outputs against it too, as TensorRT-RTX's
# does (kWorkspaceChargesTensorsVariable in plugins/deform_conv/deformConvPluginWorkspace.h).
PLUGIN_WORKSPACE_CHARGES_TENSORS_VARIABLE = "DCN_DEPLOY_PLUGIN_WORKSPACE_CHARGES_TENSORS"


_SIZE_RE = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*$", re.IGNORECASE)  # a sign, for its own message


def parse_size(text: Union[str, int], default_unit: str = "M") -> int:
    """``"4G"`` / ``"512M"`` / ``"1024"`` (MiB by default, like trtexec's ``--memPoolSize``) -> bytes."""
    if isinstance(text, int):
        text = str(text)
    match = _SIZE_RE.match(text)
    if not match:
        raise ValueError(f"--workspace: {text!r} is not a size; write e.g. 4G, 512M or 1024 (MiB)")
    number, unit = float(match.group(1)), (match.group(2) or default_unit).upper()
    size = int(number * {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}[unit])
    if size <= 0:
        raise ValueError(f"--workspace must be positive, got {text!r}; write e.g. 4G, 512M or 1024 (MiB)")
    return size


def check_build_options(model, *, precision: str, io_dtype: str, keep_fp32: Iterable[str],
                        optimization_level: Optional[int]) -> None:
    """The build options that need no TensorRT, checked before it is imported (see build_engine; the workspace
    size is read before the model)."""
    from ..onnx.precision import (PrecisionError, check_convertible, check_keep_fp32_nodes, check_precision_options,
                                  keep_fp32_names)
    from ..wording import argument

    check_precision_options(precision, io_dtype)
    keep_fp32 = keep_fp32_names(keep_fp32)
    if precision != "fp32":
        check_keep_fp32_nodes(model, keep_fp32)
        check_convertible(model, precision)  # bf16 below opset 22 with our ops, control flow
    elif io_dtype != "float32" or keep_fp32:  # options of a half-precision build, which this is not
        given = argument("io_dtype='half'", "--io-dtype half") if io_dtype != "float32" else \
            argument("keep_fp32", "--keep-fp32")
        fix = argument('precision="fp16"', "--precision fp16")
        raise PrecisionError(f"{given} applies to half-precision builds only, but the precision is fp32 (the "
                             f"default): add {fix} (or bf16), or drop it")
    if optimization_level is not None and not (isinstance(optimization_level, int) and 0 <= optimization_level <= 5):
        raise ValueError(f"optimization_level (--opt-level) must be an integer from 0 to 5 (TensorRT's builder "
                         f"optimisation levels; its default is 3), got {optimization_level!r}")


def refuse_foreign_ops(model, onnx_path) -> None:
    """Refuse (ValueError naming them and the ``adopt`` step) a model with mmcv's or mmdeploy's nodes that adopt
    rewrites (deformable layers, mmdeploy's NMS, RoIAlign and other detection ops): only their project's plugin
    library builds them, and TensorRT would stop at the parser with "plugin not found" after the slow part of the
    setup."""
    from ..onnx.adopt import foreign_op_advice

    advice = foreign_op_advice(model, onnx_path, "TensorRT builds")
    if advice is not None:
        raise ValueError(advice)


@contextmanager
def plugin_workspace_limit(workspace_bytes: Optional[int], charges_tensors: bool = False) -> Iterator[None]:
    """While the engine is built, tell our plugin the builder's workspace limit (``PLUGIN_WORKSPACE_VARIABLE``, in
    whole KiB, rounded down): TensorRT gives a plugin layer no implementation when its workspace is over the limit,
    and the plugin is not told the limit otherwise, so under one it fits its GEMM path's column buffer to it (more,
    smaller chunks; the same results). ``charges_tensors``: the builder counts each layer's inputs and outputs against
    the limit too (TensorRT-RTX's does), so the plugin leaves room for them
    (``PLUGIN_WORKSPACE_CHARGES_TENSORS_VARIABLE``). None: leave the variables as they are. The previous values are
    restored after."""
    if workspace_bytes is None:
        yield
        return
    told = {PLUGIN_WORKSPACE_VARIABLE: f"{max(1, workspace_bytes // 1024)}K",
            PLUGIN_WORKSPACE_CHARGES_TENSORS_VARIABLE: "1" if charges_tensors else "0"}
    previous = {name: os.environ.get(name) for name in told}
    os.environ.update(told)
    try:
        yield
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
