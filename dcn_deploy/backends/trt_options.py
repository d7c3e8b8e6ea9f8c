"""The build options that need no TensorRT, checked before it is imported, so a wrong option is reported as
such on any machine: the workspace size (:func:`parse_size`), precision and I/O type, the nodes kept in float32,
the builder optimisation level (:func:`check_build_options`)."""
from __future__ import annotations

import re
from typing import Iterable, Optional, Union

__all__ = ["check_build_options", "parse_size"]


_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*$", re.IGNORECASE)


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
        raise ValueError(f"--workspace must be positive, got {text!r}")
    return size


def check_build_options(model, *, precision: str, io_dtype: str, keep_fp32: Iterable[str],
                        optimization_level: Optional[int]) -> None:
    """The build options that need no TensorRT, checked before it is imported (see build_engine; the workspace
    size is read before the model)."""
    from ..onnx.precision import check_keep_fp32_nodes, check_precision_options

    check_precision_options(precision, io_dtype)
    if precision != "fp32":
        check_keep_fp32_nodes(model, keep_fp32)
    if optimization_level is not None and not (isinstance(optimization_level, int) and 0 <= optimization_level <= 5):
        raise ValueError(f"optimization_level (--opt-level) must be an integer from 0 to 5 (TensorRT's builder "
                         f"optimisation levels; its default is 3), got {optimization_level!r}")
