"""Shape arithmetic and validation for deformable convolution, with no torch import.

One source of truth for how the shapes of a deformable convolution fit together. The PyTorch op,
the ONNX shape inference, the TensorRT profile logic and the CLI all call :func:`deform_conv_spec`.
"""
from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Sequence, Tuple, Union

IntPair = Union[int, Sequence[int]]


class ShapeError(ValueError):
    """An argument's shape or value does not fit the deformable convolution."""


def _as_int(value, name: str) -> int:
    # operator.index accepts int and numpy/torch integers and rejects floats, strings and bools' lookalikes
    if isinstance(value, bool):
        raise ShapeError(f"{name} must be an int or a pair of ints (height, width), got {value!r}")
    try:
        return operator.index(value)
    except TypeError:
        raise ShapeError(f"{name} must be an int or a pair of ints (height, width), got {value!r}") from None


def as_pair(value: IntPair, name: str, minimum: int) -> Tuple[int, int]:
    """Turn an int or a 2-sequence of ints into ``(height, width)``, checking each is >= ``minimum``."""
    if isinstance(value, (str, bytes)):
        raise ShapeError(f"{name} must be an int or a pair of ints (height, width), got {value!r}")
    if hasattr(value, "__index__"):
        pair = (_as_int(value, name),) * 2
    else:
        try:
            items = list(value)  # type: ignore[arg-type]
        except TypeError:
            raise ShapeError(f"{name} must be an int or a pair of ints (height, width), got {value!r}") from None
        if len(items) != 2:
            raise ShapeError(f"{name} must have 2 values (height, width), got {len(items)}: {tuple(items)!r}")
        pair = (_as_int(items[0], name), _as_int(items[1], name))
    if min(pair) < minimum:
        raise ShapeError(f"{name} values must be >= {minimum}, got {pair}")
    return pair


def positive_int(value, name: str) -> int:
    """``value`` as an int >= 1 (numpy/torch integers too), or a ShapeError naming ``name``.

    For layer constructors: a 0 there used to surface later as a ZeroDivisionError or an empty layer."""
    if isinstance(value, bool) or not hasattr(value, "__index__") or int(value) < 1:
        raise ShapeError(f"{name} must be an int >= 1, got {value!r}")
    return int(value)


def conv_output_size(size: int, kernel: int, stride: int, pad_begin: int, pad_end: int, dilation: int) -> int:
    """Output length of a convolution along one axis (the same arithmetic as torch and ONNX)."""
    return (size + pad_begin + pad_end - dilation * (kernel - 1) - 1) // stride + 1


@dataclass(frozen=True)
class DeformConvSpec:
    """Every integer that describes one deformable convolution call.

    Shapes are NCHW. ``offset_groups`` input-channel blocks share one set of offsets (and mask);
    ``groups`` is the ordinary grouped-convolution count.
    """

    batch: int
    in_channels: int
    height: int
    width: int
    out_channels: int
    kernel: Tuple[int, int]
    stride: Tuple[int, int]
    padding: Tuple[int, int]
    dilation: Tuple[int, int]
    groups: int
    offset_groups: int
    out_height: int
    out_width: int
    has_mask: bool
    has_bias: bool

    @property
    def kernel_points(self) -> int:
        return self.kernel[0] * self.kernel[1]

    @property
    def output_shape(self) -> Tuple[int, int, int, int]:
        return (self.batch, self.out_channels, self.out_height, self.out_width)

    @property
    def offset_shape(self) -> Tuple[int, int, int, int]:
        return (self.batch, 2 * self.offset_groups * self.kernel_points, self.out_height, self.out_width)

    @property
    def mask_shape(self) -> Tuple[int, int, int, int]:
        return (self.batch, self.offset_groups * self.kernel_points, self.out_height, self.out_width)

    @property
    def pads(self) -> Tuple[int, int, int, int]:
        """ONNX order: (top, left, bottom, right)."""
        return (self.padding[0], self.padding[1], self.padding[0], self.padding[1])


def _shape(shape: Sequence[int], name: str, rank: int, layout: str) -> Tuple[int, ...]:
    shape = tuple(int(s) for s in shape)
    if len(shape) != rank:
        raise ShapeError(f"{name} must be {rank}-D {layout}, got shape {shape}")
    return shape


def deform_conv_spec(
    input_shape: Sequence[int],
    offset_shape: Sequence[int],
    weight_shape: Sequence[int],
    bias_shape: Sequence[int] | None = None,
    mask_shape: Sequence[int] | None = None,
    stride: IntPair = 1,
    padding: IntPair = 0,
    dilation: IntPair = 1,
) -> DeformConvSpec:
    """Check that the shapes of one deformable convolution agree; return its :class:`DeformConvSpec`.

    Groups and offset groups are inferred from the shapes, as torchvision does:
    ``groups = C / weight.shape[1]`` and ``offset_groups = offset.shape[1] / (2 * kH * kW)``.
    Raises :class:`ShapeError` naming the argument, the expected and the actual value.
    """
    n, c, h, w = _shape(input_shape, "input", 4, "(N, C, H, W)")
    oc, c_per_group, kh, kw = _shape(weight_shape, "weight", 4, "(out_channels, in_channels/groups, kH, kW)")
    off = _shape(offset_shape, "offset", 4, "(N, 2*offset_groups*kH*kW, out_H, out_W)")
    stride_hw = as_pair(stride, "stride", 1)
    padding_hw = as_pair(padding, "padding", 0)
    dilation_hw = as_pair(dilation, "dilation", 1)

    if min(kh, kw) < 1 or oc < 1 or c_per_group < 1:
        raise ShapeError(f"weight must have positive out_channels, in_channels/groups and kernel sizes, got {tuple(weight_shape)}")
    if c < 1 or h < 1 or w < 1:
        raise ShapeError(f"input must have C, H and W >= 1, got shape {(n, c, h, w)}")
    if c % c_per_group:
        raise ShapeError(
            f"input channels ({c}) must be a multiple of weight.shape[1] ({c_per_group}, the channels per group); "
            "check that the weight belongs to this layer")
    groups = c // c_per_group
    if oc % groups:
        raise ShapeError(f"weight.shape[0] ({oc} output channels) must be divisible by groups ({groups} = {c} input channels / {c_per_group})")

    out_h = conv_output_size(h, kh, stride_hw[0], padding_hw[0], padding_hw[0], dilation_hw[0])
    out_w = conv_output_size(w, kw, stride_hw[1], padding_hw[1], padding_hw[1], dilation_hw[1])
    if out_h < 1 or out_w < 1:
        raise ShapeError(
            f"the output would be empty ({out_h}x{out_w}): input {h}x{w} is smaller than the dilated kernel "
            f"{(kh - 1) * dilation_hw[0] + 1}x{(kw - 1) * dilation_hw[1] + 1} with padding {padding_hw}; add padding or use a smaller kernel")

    k = kh * kw
    if off[0] != n:
        raise ShapeError(f"offset batch size ({off[0]}) must equal the input's ({n})")
    if off[1] == 0 or off[1] % (2 * k):
        raise ShapeError(
            f"offset must have 2*offset_groups*kH*kW channels, a multiple of {2 * k} for a {kh}x{kw} kernel, "
            f"got {off[1]}")
    offset_groups = off[1] // (2 * k)
    if c % offset_groups:
        raise ShapeError(f"input channels ({c}) must be divisible by offset_groups ({offset_groups}, from offset channels {off[1]} / {2 * k})")
    if (off[2], off[3]) != (out_h, out_w):
        raise ShapeError(
            f"offset spatial size {off[2]}x{off[3]} must equal the convolution's output size {out_h}x{out_w} "
            f"(input {h}x{w}, kernel {kh}x{kw}, stride {stride_hw}, padding {padding_hw}, dilation {dilation_hw})")

    if bias_shape is not None and tuple(int(s) for s in bias_shape) != (oc,):
        raise ShapeError(f"bias must have shape ({oc},) (one value per output channel), got {tuple(bias_shape)}")
    if mask_shape is not None:
        expected = (n, offset_groups * k, out_h, out_w)
        if tuple(int(s) for s in mask_shape) != expected:
            raise ShapeError(
                f"mask must have shape {expected} (N, offset_groups*kH*kW, out_H, out_W), got {tuple(mask_shape)}")

    return DeformConvSpec(
        batch=n, in_channels=c, height=h, width=w, out_channels=oc, kernel=(kh, kw), stride=stride_hw,
        padding=padding_hw, dilation=dilation_hw, groups=groups, offset_groups=offset_groups,
        out_height=out_h, out_width=out_w, has_mask=mask_shape is not None, has_bias=bias_shape is not None)
