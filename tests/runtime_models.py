"""A tiny deformable network and the same network written directly as ONNX, for the runner/compare/bench/CLI tests.

The ONNX graph is built node by node with ``onnx.helper`` (not by the exporter), so these tests check the runners
independently of ``dcn_deploy.onnx.export``. ``TINY_NET_SOURCE`` is also written to a file for the CLI's
``--model FILE.py:build``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

TINY_NET_SOURCE = '''
import torch
from torch import nn

from dcn_deploy.ops.modules import DeformConv2d


class TinyNet(nn.Module):
    """Conv predicting offsets and mask logits -> modulated DeformConv2d(2 -> 4, 3x3, pad 1). (N,2,H,W) -> (N,4,H,W)."""

    def __init__(self):
        super().__init__()
        generator = torch.Generator().manual_seed(7)
        self.offset = nn.Conv2d(2, 27, 3, padding=1)  # 18 offset channels + 9 mask logits
        self.dcn = DeformConv2d(2, 4, 3, padding=1)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=generator) * 0.3)

    def forward(self, x):
        o = self.offset(x)
        return self.dcn(x, o[:, :18], torch.sigmoid(o[:, 18:]))


def build():
    return TinyNet().eval()
'''


def write_tiny_net(folder: Path) -> Path:
    path = Path(folder) / "tiny_net.py"
    path.write_text(TINY_NET_SOURCE)
    return path


def build_tiny_net():
    namespace: dict = {}
    exec(compile(TINY_NET_SOURCE, "tiny_net.py", "exec"), namespace)  # the same code the CLI imports
    return namespace["build"]()


def tiny_net_onnx(model, path: Path, *, dynamic: bool = True, batch: int = 1, size: int = 6) -> Path:
    """Write ``model`` (a TinyNet) as ONNX: Conv -> Slice/Sigmoid -> dcn_deploy::DeformConv2d (function body attached).

    Input ``x`` (N, 2, H, W) with N/H/W symbolic when ``dynamic``; output ``y`` (N, 4, H, W).
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from dcn_deploy.onnx import opset

    def init(name, tensor):
        return numpy_helper.from_array(tensor.detach().numpy().astype(np.float32), name)

    def ints(name, values):
        return numpy_helper.from_array(np.asarray(values, dtype=np.int64), name)

    nodes = [
        helper.make_node("Conv", ["x", "Wo", "Bo"], ["o"], pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
        helper.make_node("Slice", ["o", "zero", "eighteen", "one"], ["offset"]),
        helper.make_node("Slice", ["o", "eighteen", "big", "one"], ["mask_logits"]),
        helper.make_node("Sigmoid", ["mask_logits"], ["mask"]),
        helper.make_node("DeformConv2d", ["x", "W", "offset", "B", "mask"], ["y"], domain=opset.DOMAIN,
                         strides=[1, 1], pads=[1, 1, 1, 1], dilations=[1, 1], group=1, offset_group=1),
    ]
    initialisers = [init("Wo", model.offset.weight), init("Bo", model.offset.bias), init("W", model.dcn.weight),
                    init("B", model.dcn.bias), ints("zero", [0]), ints("eighteen", [18]), ints("big", [1 << 30]),
                    ints("one", [1])]
    shape = ["N", 2, "H", "W"] if dynamic else [batch, 2, size, size]
    out_shape = ["N", 4, "H", "W"] if dynamic else [batch, 4, size, size]
    graph = helper.make_graph(nodes, "tiny_net", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)], initialisers)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    proto.ir_version = 9
    opset.attach_functions(proto)
    onnx.save(proto, str(path))
    return Path(path)
