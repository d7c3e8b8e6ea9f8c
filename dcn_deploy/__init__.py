"""dcn_deploy: deformable convolution networks from PyTorch to ONNX, ONNX Runtime and TensorRT.

The main calls (each CLI command is one of them; docs/library.md walks through them):

- ``deform_conv2d``, ``DeformConv2d``, ``DeformConv2dPack``, ``ModulatedDeformConv2dPack``, the RoI pooling
  layers: the op and modules (torchvision's and mmcv's signatures); ``convert_modules(model)`` swaps theirs for ours;
- ``export(model, (x,), "model.onnx", dynamic=True)``: ONNX with ``dcn_deploy`` ops, verified in ONNX Runtime;
- ``make_runner(kind, path)`` (``ort``, ``torch``, ``trt``, ...), ``compare_runners([ref, other])``,
  ``benchmark(runners, batches=[1, 8])``, ``inspect_model(path)``;
- ``build_engine("model.onnx", "model.engine", precision="fp16")``: a TensorRT engine through our plugin;
- ``adopt_file("end2end.onnx")``: a file from mmdeploy, mmcv or torchvision's export with its deformable nodes
  rewritten as ours.

Importing this package is cheap: torch, onnx, onnxruntime and tensorrt are imported only when a name
that needs them is first used (``dcn_deploy.deform_conv2d``, ``dcn_deploy.export``, ...).
"""
from __future__ import annotations

from . import ops as _ops  # cheap: its names load lazily too
from .lazy import lazy_attributes

__version__ = "0.1.0"

# Public names -> the module that defines them. The op names come from dcn_deploy.ops (whose own names are lazy).
_LAZY = {name: "dcn_deploy.ops" for name in _ops.__all__}
_LAZY.update({
    "export": "dcn_deploy.onnx.export",
    "build_engine": "dcn_deploy.backends.trt_build",
    # What the CLI's commands call (docs/library.md): one import for a library user too.
    "inspect_model": "dcn_deploy.onnx.inspect",
    "adopt_file": "dcn_deploy.onnx.adopt",
    "OrtRunner": "dcn_deploy.backends.ort_runner",
    "TorchRunner": "dcn_deploy.backends.torch_runner",
    "make_runner": "dcn_deploy.backends.factory",
    "compare_runners": "dcn_deploy.compare",
    "benchmark": "dcn_deploy.bench",
    # The errors the library raises and the tolerance compare_runners takes (docs/library.md names them).
    # trt_build imports tensorrt only inside its functions, so TensorRTMissingError needs no TensorRT.
    "VerificationError": "dcn_deploy.onnx.export",
    "RunnerError": "dcn_deploy.backends.base",
    "FeedError": "dcn_deploy.feeds",
    "TensorRTMissingError": "dcn_deploy.backends.trt_build",
    "AdoptionError": "dcn_deploy.onnx.adopt",
    "Tolerance": "dcn_deploy.compare",
})

__all__ = sorted(_LAZY) + ["__version__"]
__getattr__, __dir__ = lazy_attributes("dcn_deploy", _LAZY, globals())
