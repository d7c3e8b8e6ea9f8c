"""Independent references for deformable convolution, used by the tests and the CPU benchmark.

- :func:`deform_conv_onnx_model` / :class:`OrtDeformConv`: one standard ONNX ``DeformConv`` node (opset 19),
  built with ``onnx.helper`` and run by ONNX Runtime's native kernel (>= 1.25).
- :func:`naive_deform_conv2d`: a per-sample float64 loop in numpy that spells the semantics out, for tiny cases.

Neither imports dcn_deploy, so they check it rather than repeat it.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import numpy as np

_ONNX_ELEMENT_TYPE = {np.dtype(np.float32): 1, np.dtype(np.float16): 10, np.dtype(np.float64): 11}


def deform_conv_onnx_model(input_shape: Sequence[int], offset_shape: Sequence[int], weight: np.ndarray,
                           bias: Optional[np.ndarray] = None, mask_shape: Optional[Sequence[int]] = None,
                           stride: Tuple[int, int] = (1, 1), padding: Tuple[int, int] = (0, 0),
                           dilation: Tuple[int, int] = (1, 1), opset: int = 19):
    """A one-node model ``Y = DeformConv(X, W, offset, B, mask)`` with W and B as initializers.

    Graph inputs: ``X`` (input_shape), ``offset`` (offset_shape) and, when ``mask_shape`` is given, ``mask``.
    ``group`` and ``offset_group`` are inferred from the shapes as torchvision does. Padding is (pad_h, pad_w),
    applied on both sides (ONNX pads = [top, left, bottom, right]). A mask without a bias gets an empty ``B``.
    """
    import onnx
    from onnx import helper, numpy_helper

    elem = _ONNX_ELEMENT_TYPE[np.dtype(weight.dtype)]
    out_channels, c_per_group, kh, kw = weight.shape
    group = input_shape[1] // c_per_group
    offset_group = offset_shape[1] // (2 * kh * kw)

    inputs = [helper.make_tensor_value_info("X", elem, list(input_shape)),
              helper.make_tensor_value_info("offset", elem, list(offset_shape))]
    initializers = [numpy_helper.from_array(weight, "W")]
    node_inputs = ["X", "W", "offset"]
    if bias is not None:
        initializers.append(numpy_helper.from_array(bias.astype(weight.dtype), "B"))
        node_inputs.append("B")
    if mask_shape is not None:
        inputs.append(helper.make_tensor_value_info("mask", elem, list(mask_shape)))
        if bias is None:
            node_inputs.append("")  # optional input left empty
        node_inputs.append("mask")

    node = helper.make_node(
        "DeformConv", node_inputs, ["Y"], kernel_shape=[kh, kw], strides=list(stride),
        pads=[padding[0], padding[1], padding[0], padding[1]], dilations=list(dilation),
        group=group, offset_group=offset_group)
    out_h = (input_shape[2] + 2 * padding[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    out_w = (input_shape[3] + 2 * padding[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    output = helper.make_tensor_value_info("Y", elem, [input_shape[0], out_channels, out_h, out_w])
    graph = helper.make_graph([node], "deform_conv", inputs, [output], initializer=initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = min(model.ir_version, 10)  # ORT 1.32 reads IR <= 11; keep a margin
    onnx.checker.check_model(model)
    return model


class OrtDeformConv:
    """ONNX Runtime session for one DeformConv node; call it with numpy arrays."""

    def __init__(self, input_shape, offset_shape, weight: np.ndarray, bias: Optional[np.ndarray] = None,
                 mask_shape=None, stride=(1, 1), padding=(0, 0), dilation=(1, 1), threads: int = 1):
        import onnxruntime as ort

        model = deform_conv_onnx_model(input_shape, offset_shape, weight, bias, mask_shape, stride, padding, dilation)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        # ONNX Runtime's intra-op threads spin after a run by default, taking the CPU from whatever runs next
        # (benchmarks/cpu_deform_conv.py alternates implementations call by call): with 2 threads on 2 cores that
        # moved dcn_deploy's median from 15.5 to 22-32 ms, while this one-node model's own time stayed at about
        # 22 ms either way (benchmarks/RESULTS.md). (A model of many small nodes does lose by it: the RoI
        # pooling bodies took 80 ms spinning, 123 without, so benchmarks/cpu_roi_pool.py keeps the default.)
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        self.has_mask = mask_shape is not None

    def __call__(self, x: np.ndarray, offset: np.ndarray, mask: Optional[np.ndarray] = None) -> np.ndarray:
        feed = {"X": x, "offset": offset}
        if self.has_mask:
            feed["mask"] = mask
        return self.session.run(["Y"], feed)[0]


def ort_deform_conv2d(x: np.ndarray, offset: np.ndarray, weight: np.ndarray, bias: Optional[np.ndarray] = None,
                      stride=(1, 1), padding=(0, 0), dilation=(1, 1), mask: Optional[np.ndarray] = None) -> np.ndarray:
    """torchvision's ``deform_conv2d`` signature, computed by ONNX Runtime's native DeformConv."""
    runner = OrtDeformConv(x.shape, offset.shape, weight, bias, None if mask is None else mask.shape,
                           stride, padding, dilation)
    return runner(x, offset, mask)


def bilinear_zero_outside(image: np.ndarray, y: float, x: float) -> float:
    """Bilinear sample of a 2-D image at (y, x); each of the four neighbours outside the image counts as 0."""
    h, w = image.shape
    y0, x0 = int(np.floor(y)), int(np.floor(x))
    fy, fx = y - y0, x - x0
    total = 0.0
    for yy, wy in ((y0, 1.0 - fy), (y0 + 1, fy)):
        for xx, wx in ((x0, 1.0 - fx), (x0 + 1, fx)):
            if 0 <= yy < h and 0 <= xx < w:
                total += wy * wx * float(image[yy, xx])
    return total


def naive_deform_conv2d(x: np.ndarray, offset: np.ndarray, weight: np.ndarray, bias: Optional[np.ndarray] = None,
                        stride=(1, 1), padding=(0, 0), dilation=(1, 1), mask: Optional[np.ndarray] = None) -> np.ndarray:
    """The definition, one output element at a time, in float64. Only for tiny shapes (it is very slow).

    x (N, C, H, W), offset (N, 2*G*kH*kW, oH, oW) with channel ((g*kH+i)*kW+j)*2 + {0: dy, 1: dx},
    weight (O, C/groups, kH, kW), mask (N, G*kH*kW, oH, oW) or None -> (N, O, oH, oW).
    """
    x, offset, weight = (np.asarray(a, np.float64) for a in (x, offset, weight))
    n, c, h, w = x.shape
    out_channels, c_per_group, kh, kw = weight.shape
    groups = c // c_per_group
    oc_per_group = out_channels // groups
    oh, ow = offset.shape[2], offset.shape[3]
    offset_groups = offset.shape[1] // (2 * kh * kw)
    c_per_offset_group = c // offset_groups
    out = np.zeros((n, out_channels, oh, ow))
    for b in range(n):
        for o in range(out_channels):
            group = o // oc_per_group
            for oy in range(oh):
                for ox in range(ow):
                    acc = 0.0 if bias is None else float(bias[o])
                    for cg in range(c_per_group):
                        ch = group * c_per_group + cg
                        g = ch // c_per_offset_group
                        for i in range(kh):
                            for j in range(kw):
                                point = (g * kh + i) * kw + j
                                py = oy * stride[0] - padding[0] + i * dilation[0] + offset[b, 2 * point, oy, ox]
                                px = ox * stride[1] - padding[1] + j * dilation[1] + offset[b, 2 * point + 1, oy, ox]
                                value = bilinear_zero_outside(x[b, ch], py, px)
                                if mask is not None:
                                    value *= float(mask[b, point, oy, ox])
                                acc += float(weight[o, cg, i, j]) * value
                    out[b, o, oy, ox] = acc
    return out
