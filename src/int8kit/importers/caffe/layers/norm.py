"""BatchNorm, Scale, Bias, LRN and Normalize (kept as separate nodes; the optimizer folds them)."""

from __future__ import annotations

import numpy as np

from int8kit.importers.caffe import proto
from int8kit.importers.caffe.registry import LayerContext, register_layer


def _channel_shape(rank: int, axis: int, param_shape: tuple[int, ...]) -> tuple[int, ...]:
    """Shape that broadcasts a parameter over axes axis..axis+len-1 of a rank-``rank`` tensor."""
    return (*param_shape, *([1] * (rank - axis - len(param_shape))))


@register_layer("BatchNorm")
def batch_norm(ctx: LayerContext) -> None:
    p = ctx.layer.batch_norm_param
    mean = ctx.blob(0, "running mean").reshape(-1).astype(np.float64)
    var = ctx.blob(1, "running variance").reshape(-1).astype(np.float64)
    # Caffe keeps unnormalised running sums plus their moving-average scale factor (blob 2).
    factor = float(ctx.blob(2, "moving-average factor").reshape(-1)[0]) if len(ctx.blobs) > 2 else 1.0
    factor = 0.0 if factor == 0 else 1.0 / factor
    c = mean.size
    ctx.node("BatchNormalization",
             [ctx.inputs[0], ctx.const("scale", np.ones(c)), ctx.const("bias", np.zeros(c)),
              ctx.const("mean", mean * factor), ctx.const("var", var * factor)],
             ctx.outputs[0], epsilon=float(p.eps))


def _scale_like(ctx: LayerContext, p, op: str, first_blob: int) -> str:
    """The broadcast operand of Scale/Bias: the second bottom, or the layer's learned blob."""
    shape = ctx.shape(0)
    axis = p.axis % len(shape)
    if len(ctx.inputs) > 1:
        other = ctx.shape(1)
        target = _channel_shape(len(shape), axis, other)
        if tuple(target) == tuple(other):
            return ctx.inputs[1]
        return ctx.node("Reshape", [ctx.inputs[1], ctx.const("shape", target, np.int64)])
    num_axes = len(shape) - axis if p.num_axes == -1 else int(p.num_axes)
    pshape = shape[axis: axis + num_axes]
    value = ctx.blob(first_blob, "scale" if op == "Mul" else "bias").reshape(pshape)
    return ctx.const("scale" if op == "Mul" else "bias", value.reshape(_channel_shape(len(shape), axis, pshape)))


@register_layer("Scale")
def scale(ctx: LayerContext) -> None:
    p = ctx.layer.scale_param
    factor = _scale_like(ctx, p, "Mul", 0)
    if not p.bias_term:
        ctx.node("Mul", [ctx.inputs[0], factor], ctx.outputs[0])
        return
    pshape = ctx.tensor_shape(factor)
    bias_blob = 1 if len(ctx.inputs) == 1 else 0
    bias = ctx.blob(bias_blob, "bias").reshape(pshape)
    mul = ctx.node("Mul", [ctx.inputs[0], factor])
    ctx.node("Add", [mul, ctx.const("bias", bias)], ctx.outputs[0])


@register_layer("Bias")
def bias(ctx: LayerContext) -> None:
    ctx.node("Add", [ctx.inputs[0], _scale_like(ctx, ctx.layer.bias_param, "Add", 0)], ctx.outputs[0])


@register_layer("LRN")
def lrn(ctx: LayerContext) -> None:
    p = ctx.layer.lrn_param
    size, alpha, beta, k = int(p.local_size), float(p.alpha), float(p.beta), float(p.k)
    x = ctx.inputs[0]
    if p.norm_region == proto.LRNParameter.ACROSS_CHANNELS:
        # Caffe and ONNX share the convention: alpha is divided by local_size.
        ctx.node("LRN", [x], ctx.outputs[0], size=size, alpha=alpha, beta=beta, bias=k)
        return
    # WITHIN_CHANNEL: x / (1 + alpha * mean of x^2 over a size x size window)^beta
    pad = (size - 1) // 2
    sq = ctx.node("Mul", [x, x])
    avg = ctx.node("AveragePool", [sq], kernel_shape=[size, size], pads=[pad, pad, pad, pad],
                   count_include_pad=1)
    scaled = ctx.node("Mul", [avg, ctx.const("alpha", alpha)])
    base = ctx.node("Add", [scaled, ctx.const("one", 1.0)])
    den = ctx.node("Pow", [base, ctx.const("beta", beta)])
    ctx.node("Div", [x, den], ctx.outputs[0])


@register_layer("Normalize")
def normalize(ctx: LayerContext) -> None:
    """SSD's L2 normalisation: x / sqrt(sum x^2 + eps) times a learned scale."""
    p = ctx.layer.norm_param
    x = ctx.inputs[0]
    rank = len(ctx.shape(0))
    axes = list(range(1, rank)) if p.across_spatial else [1]
    sq = ctx.node("Mul", [x, x])
    total = ctx.node("ReduceSum", [sq, ctx.const("axes", axes, np.int64)], keepdims=1)
    norm = ctx.node("Sqrt", [ctx.node("Add", [total, ctx.const("eps", float(p.eps))])])
    if not ctx.blobs:
        ctx.node("Div", [x, norm], ctx.outputs[0])
        return
    divided = ctx.node("Div", [x, norm])
    w = ctx.blob(0, "scale").reshape(-1)
    w = w.reshape(()) if p.channel_shared or w.size == 1 else w.reshape((-1, *([1] * (rank - 2))))
    ctx.node("Mul", [divided, ctx.const("scale", w)], ctx.outputs[0])
