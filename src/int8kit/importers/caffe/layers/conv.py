"""Convolution, Deconvolution and InnerProduct."""

from __future__ import annotations

import numpy as np

from int8kit.importers.caffe.registry import LayerContext, register_layer


def _pair(repeated, single_h: int, single_w: int, has_h: bool, default: int, n: int = 2) -> list[int]:
    """Caffe's spatial parameter: explicit _h/_w, else the repeated field (0, 1 or n values)."""
    if has_h:
        return [int(single_h), int(single_w)]
    values = [int(v) for v in repeated]
    if not values:
        return [default] * n
    return values * n if len(values) == 1 else values


def conv_geometry(p, spatial: int = 2) -> tuple[list[int], list[int], list[int], list[int]]:
    """(kernel, stride, pad, dilation) of a ConvolutionParameter."""
    kernel = _pair(p.kernel_size, p.kernel_h, p.kernel_w, p.HasField("kernel_h"), 1, spatial)
    stride = _pair(p.stride, p.stride_h, p.stride_w, p.HasField("stride_h"), 1, spatial)
    pad = _pair(p.pad, p.pad_h, p.pad_w, p.HasField("pad_h") or p.HasField("pad_w"), 0, spatial)
    dilation = _pair(p.dilation, 0, 0, False, 1, spatial)
    return kernel, stride, pad, dilation


def _conv(ctx: LayerContext, transpose: bool) -> None:
    p = ctx.layer.convolution_param
    in_shape = ctx.shape(0)
    spatial = len(in_shape) - 2
    kernel, stride, pad, dilation = conv_geometry(p, spatial)
    group = int(p.group)
    cin = in_shape[1]
    if transpose:  # Caffe and ONNX both store deconvolution weights as C_in x C_out/g x k...
        wshape = (cin, p.num_output // group, *kernel)
    else:
        wshape = (p.num_output, cin // group, *kernel)
    w = ctx.blob(0, "weights").reshape(wshape)
    inputs = [ctx.inputs[0], ctx.const("weight", w)]
    if p.bias_term:
        inputs.append(ctx.const("bias", ctx.blob(1, "bias").reshape(-1)))
    ctx.node("ConvTranspose" if transpose else "Conv", inputs, ctx.outputs[0], kernel_shape=kernel,
             strides=stride, pads=pad + pad, dilations=dilation, group=group)


@register_layer("Convolution")
def convolution(ctx: LayerContext) -> None:
    _conv(ctx, transpose=False)


@register_layer("Deconvolution")
def deconvolution(ctx: LayerContext) -> None:
    _conv(ctx, transpose=True)


@register_layer("InnerProduct")
def inner_product(ctx: LayerContext) -> None:
    p = ctx.layer.inner_product_param
    shape = ctx.shape(0)
    axis = p.axis % len(shape)
    k = int(np.prod(shape[axis:]))
    n = int(p.num_output)
    w = ctx.blob(0, "weights").reshape((k, n) if p.transpose else (n, k))
    flat = ctx.node("Flatten", [ctx.inputs[0]], axis=axis) if len(shape) != 2 or axis != 1 else ctx.inputs[0]
    inputs = [flat, ctx.const("weight", w)]
    if p.bias_term:
        inputs.append(ctx.const("bias", ctx.blob(1, "bias").reshape(-1)))
    if axis <= 1:
        ctx.node("Gemm", inputs, ctx.outputs[0], transB=0 if p.transpose else 1)
    else:  # keep the leading axes: Gemm on the flattened rows, then restore them
        gemm = ctx.node("Gemm", inputs, transB=0 if p.transpose else 1)
        target = ctx.const("shape", [*shape[:axis], n], np.int64)
        ctx.node("Reshape", [gemm, target], ctx.outputs[0])
