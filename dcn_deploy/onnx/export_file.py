"""Write an exported model to its file and check it (:func:`write_checked`): atomically, with the weights in one
external data file beside it when the model nears protobuf's 2 GiB limit, and ``onnx.checker`` (full check) plus
strict shape inference on what was written."""
from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Optional

import onnx

from ..io_utils import atomic_path, give_default_permissions
from .export_report import ExportError
from .external_data import PROTOBUF_LIMIT, data_file_name, serialized_size, write_with_external_data

__all__ = ["EXTERNAL_DATA_THRESHOLD_BYTES", "EarlierFile", "external_data_name", "needs_external_data",
           "write_checked"]


# A model file is one protobuf message, which cannot reach 2 GiB. From this serialised size on (external_data.
# serialized_size, the measure the TensorRT build uses too; a margin below the limit for safety), the weights go
# to one external data file beside the model: model.onnx + model.onnx.data, ONNX's own layout, which ONNX Runtime
# and TensorRT's parser read from the model's folder.
EXTERNAL_DATA_THRESHOLD_BYTES = PROTOBUF_LIMIT - (148 << 20)  # 1900 MiB


def external_data_name(path: Path) -> str:
    """The weights file beside ``path`` when the model is too large for one file: ``model.onnx.data``."""
    return data_file_name(path.name)


def needs_external_data(proto: onnx.ModelProto) -> bool:
    # serialized_size, not proto.ByteSize(): that serialises the whole model (seconds and a copy of it)
    try:
        return serialized_size(proto) >= EXTERNAL_DATA_THRESHOLD_BYTES
    except Exception:  # noqa: BLE001 - a part protobuf cannot even size is over its limit
        return True


def write_checked(proto: onnx.ModelProto, path: Path, external: bool) -> onnx.ModelProto:
    """Write ``proto`` to ``path`` (and its weights to ``path.data`` when ``external``), check the written files,
    and return the inferred model. Nothing appears at ``path`` unless the check passes: files are written under
    temporary names in the same folder and renamed at the end, the weights first, then the model. The weights
    file of a replaced model that had one is deleted when the new model has none."""
    data = path.parent / external_data_name(path)
    stale = not external and _uses_data_file(path, data)
    if not external:
        with atomic_path(path) as tmp:
            onnx.save(proto, str(tmp))
            inferred = _check_file(tmp)
    else:
        folder = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
        try:
            # in a private folder, under the final names: the model refers to its weights by file name
            inferred = _check_file(write_with_external_data(proto, folder, path.name))
            for name in (data.name, path.name):
                give_default_permissions(folder / name)
            os.replace(folder / data.name, data)
            os.replace(folder / path.name, path)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    if stale:
        data.unlink(missing_ok=True)
    return inferred


def _uses_data_file(path: Path, data: Path) -> bool:
    """Whether the ONNX file at ``path`` keeps its weights in ``data`` (a file beside it); False without either."""
    if not (data.is_file() and path.is_file()):  # checked first: most exports never read the old model
        return False
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception:  # noqa: BLE001 - not ONNX: nothing of ours to clean up
        return False
    return any(entry.key == "location" and entry.value == data.name
               for t in proto.graph.initializer for entry in t.external_data)


def _autocast_enabled() -> bool:
    """Whether torch.autocast is on, asked without importing torch: it cannot be on where nothing imported torch, and
    adopt, which writes its files through here, needs no torch (importing it costs over a second)."""
    if "torch" not in sys.modules:
        return False
    from ..ops._checks import autocast_enabled

    return autocast_enabled("cpu", "cuda")


def _check_file(path: Path) -> onnx.ModelProto:
    """Full checker and strict shape inference on the written file; returns the inferred model (without its
    weights' values: shape inference needs only their shapes, and a model over 2 GiB cannot be one message)."""
    try:
        onnx.checker.check_model(str(path), full_check=True)
        return onnx.shape_inference.infer_shapes(onnx.load(str(path), load_external_data=False), check_type=True,
                                                 strict_mode=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        if _autocast_enabled():
            raise ExportError(f"the exported model fails onnx.checker/shape inference: {exc}. torch.autocast was on "
                              "during the export, and the exporter writes its casts into the graph (half-precision "
                              "nodes, such as a bfloat16 Conv, that this opset may not allow for that type): export "
                              "outside torch.autocast, and for a half-precision file cast the model and its inputs to "
                              "that type (model.to(torch.float16); CLI: --dtype) or use "
                              "dcn_deploy.onnx.precision.convert_precision") from exc
        raise ExportError(f"the exported model fails onnx.checker/shape inference: {exc}. This is a bug in "
                          "dcn_deploy's exporter or op set: please report it with the model") from exc


class EarlierFile:
    """A model file already at ``path`` when an export starts, kept until the new file is verified.

    The export writes its file to ``path`` as before (ONNX Runtime verifies it there); a second name for the earlier
    file (a hard link, or a copy where links are refused) keeps it meanwhile. After a failure, :meth:`restore` moves
    the new file to :meth:`failed_name` and puts the earlier one back; after a Ctrl-C during the verification,
    :meth:`abandon` puts the folder back as it was; after success, :meth:`discard` drops the second name. Files with
    external weights (``path.data``) are not kept this way: a model refers to its weights by file name, so the new
    one stays at ``path`` (``kept`` is False) and the failure message says so."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.existed = self.path.exists()
        self.backup: Optional[Path] = None
        self._identity = None
        if not self.path.is_file() or (self.path.parent / external_data_name(self.path)).exists():
            return
        stat = self.path.stat()
        self._identity = (stat.st_dev, stat.st_ino)
        backup = self.path.with_name(f".{self.path.name}.{os.getpid()}.earlier")
        try:
            os.link(self.path, backup)
        except OSError:  # a file system without hard links: a copy
            shutil.copy2(self.path, backup)
        self.backup = backup

    @property
    def kept(self) -> bool:
        return self.backup is not None

    def failed_name(self) -> Path:
        """Where a new file that failed its verification goes when an earlier one is put back: ``model.failed.onnx``."""
        return self.path.with_name(f"{self.path.stem}.failed{self.path.suffix}")

    def _replaced(self) -> bool:
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return False
        return (stat.st_dev, stat.st_ino) != self._identity

    def restore(self) -> None:
        """After a failed export or verification: a new file written over the earlier one goes to
        :meth:`failed_name`, and the earlier file is back at ``path``."""
        if self.backup is None:
            return
        if self._replaced():
            os.replace(self.path, self.failed_name())
            os.replace(self.backup, self.path)
        self.discard()

    def abandon(self) -> None:
        """After an interrupt (Ctrl-C) while the new file at ``path`` was being verified: the folder as the export
        found it. The earlier file is back at ``path`` and the unverified new one is dropped, not kept as
        :meth:`failed_name` (it did not fail: nobody knows); where there was no file, ``path`` is removed. A new
        file that replaced an earlier one which could not be kept (external weights) stays."""
        if self.backup is not None:
            if self._replaced():
                os.replace(self.backup, self.path)
            self.discard()
        elif not self.existed:
            self.path.unlink(missing_ok=True)

    def discard(self) -> None:
        if self.backup is not None:
            self.backup.unlink(missing_ok=True)
            self.backup = None
