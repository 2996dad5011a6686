"""Pooling with Caffe's output size (ceil by default, last window clipped) and AVE divisor."""

from __future__ import annotations

import math

import numpy as np

from int8kit.importers.caffe import proto
from int8kit.importers.caffe.registry import LayerContext, register_layer

_P = proto.PoolingParameter


def _hw(p, field: str, default: int) -> list[int]:
    single = getattr(p, field if field != "kernel" else "kernel_size")
    h, w = f"{field}_h", f"{field}_w"
    if p.HasField(h) or p.HasField(w):
        return [int(getattr(p, h)), int(getattr(p, w))]
    has_single = p.HasField(field if field != "kernel" else "kernel_size")
    return [int(single)] * 2 if has_single else [default] * 2


def caffe_pool_size(size: int, kernel: int, stride: int, pad: int, ceil: bool) -> int:
    """Caffe's pooled size: ceil (or floor) division, minus a last window that starts in the padding."""
    rounding = math.ceil if ceil else math.floor
    out = int(rounding((size + 2 * pad - kernel) / stride)) + 1
    if pad and (out - 1) * stride >= size + pad:
        out -= 1
    return out


@register_layer("Pooling")
def pooling(ctx: LayerContext) -> None:
    p = ctx.layer.pooling_param
    if p.pool not in (_P.MAX, _P.AVE):
        raise ctx.unsupported("STOCHASTIC pooling")
    x = ctx.inputs[0]
    shape = ctx.shape(0)
    if p.global_pooling:
        ctx.node("GlobalMaxPool" if p.pool == _P.MAX else "GlobalAveragePool", [x], ctx.outputs[0])
        return
    kernel, stride, pad = _hw(p, "kernel", 0), _hw(p, "stride", 1), _hw(p, "pad", 0)
    if 0 in kernel:
        raise ctx.unsupported("a pooling layer without kernel_size")
    ceil = p.round_mode == _P.CEIL
    out = [caffe_pool_size(shape[2 + i], kernel[i], stride[i], pad[i], ceil) for i in range(2)]
    # End padding that makes a floor-mode ONNX pool produce exactly Caffe's size.
    end = [max(0, (out[i] - 1) * stride[i] + kernel[i] - shape[2 + i] - pad[i]) for i in range(2)]
    if p.pool == _P.MAX:
        ctx.node("MaxPool", [x], ctx.outputs[0], kernel_shape=kernel, strides=stride, pads=pad + end)
        return
    # Caffe's AVE divides by the window clipped to the padded input (size + pad), never by the
    # extra ceil-mode area: pad with zeros explicitly, then exclude only the extra area.
    if any(pad):
        pads = ctx.const("pads", [0, 0, pad[0], pad[1], 0, 0, pad[0], pad[1]], np.int64)
        x = ctx.node("Pad", [x, pads], mode="constant")
    extra = [max(0, end[i] - pad[i]) for i in range(2)]
    got = [(shape[2 + i] + 2 * pad[i] + extra[i] - kernel[i]) // stride[i] + 1 for i in range(2)]
    attrs = dict(kernel_shape=kernel, strides=stride, pads=[0, 0, *extra], count_include_pad=0)
    if got == out:
        ctx.node("AveragePool", [x], ctx.outputs[0], **attrs)
        return
    # Caffe dropped a last window that starts in the padding: drop it here too.
    pooled = ctx.node("AveragePool", [x], **attrs)
    ctx.node("Slice", [pooled, ctx.const("starts", [0, 0], np.int64), ctx.const("ends", out, np.int64),
                       ctx.const("axes", [2, 3], np.int64)], ctx.outputs[0])
