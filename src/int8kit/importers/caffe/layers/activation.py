"""Element-wise activations: ReLU, PReLU, ReLU6, Sigmoid, TanH, ELU, AbsVal, Power, Softmax, Axpy."""

from __future__ import annotations

import numpy as np

from int8kit.importers.caffe.registry import LayerContext, register_layer


@register_layer("ReLU")
def relu(ctx: LayerContext) -> None:
    slope = float(ctx.layer.relu_param.negative_slope)
    if slope:
        ctx.node("LeakyRelu", [ctx.inputs[0]], ctx.outputs[0], alpha=slope)
    else:
        ctx.node("Relu", [ctx.inputs[0]], ctx.outputs[0])


@register_layer("ReLU6")
def relu6(ctx: LayerContext) -> None:
    ctx.node("Clip", [ctx.inputs[0], ctx.const("min", 0.0), ctx.const("max", 6.0)], ctx.outputs[0])


@register_layer("Clip")
def clip(ctx: LayerContext) -> None:
    p = ctx.layer.clip_param
    ctx.node("Clip", [ctx.inputs[0], ctx.const("min", p.min), ctx.const("max", p.max)], ctx.outputs[0])


@register_layer("PReLU")
def prelu(ctx: LayerContext) -> None:
    rank = len(ctx.shape(0))
    slope = ctx.blob(0, "slopes").reshape(-1)
    if ctx.layer.prelu_param.channel_shared or slope.size == 1:
        slope = slope.reshape(1)
    else:  # one slope per channel (axis 1), broadcast over the trailing axes
        slope = slope.reshape((-1, *([1] * (rank - 2))))
    ctx.node("PRelu", [ctx.inputs[0], ctx.const("slope", slope)], ctx.outputs[0])


def _unary(op: str):
    def fn(ctx: LayerContext) -> None:
        ctx.node(op, [ctx.inputs[0]], ctx.outputs[0])
    fn.__doc__ = f"Caffe layer converted to one ONNX {op}."
    return fn


register_layer("Sigmoid")(_unary("Sigmoid"))
register_layer("TanH")(_unary("Tanh"))
register_layer("AbsVal")(_unary("Abs"))
register_layer("BNLL")(_unary("Softplus"))


@register_layer("ELU")
def elu(ctx: LayerContext) -> None:
    ctx.node("Elu", [ctx.inputs[0]], ctx.outputs[0], alpha=float(ctx.layer.elu_param.alpha))


@register_layer("Power")
def power(ctx: LayerContext) -> None:
    """(shift + scale * x) ^ power, leaving out the steps that are identities."""
    p = ctx.layer.power_param
    steps: list[tuple[str, float]] = []
    if p.scale != 1:
        steps.append(("Mul", p.scale))
    if p.shift != 0:
        steps.append(("Add", p.shift))
    if p.power != 1:
        steps.append(("Pow", p.power))
    if not steps:
        ctx.node("Identity", [ctx.inputs[0]], ctx.outputs[0])
        return
    x = ctx.inputs[0]
    for i, (op, value) in enumerate(steps):
        last = i == len(steps) - 1
        x = ctx.node(op, [x, ctx.const(op.lower(), float(value))], ctx.outputs[0] if last else None)


@register_layer("Softmax")
def softmax(ctx: LayerContext) -> None:
    ctx.node("Softmax", [ctx.inputs[0]], ctx.outputs[0], axis=int(ctx.layer.softmax_param.axis))


@register_layer("Axpy")
def axpy(ctx: LayerContext) -> None:
    """a * x + y, with a of shape N x C x 1 x 1 (SENet-style fused scale and shortcut)."""
    a, x, y = ctx.inputs
    if len(ctx.shape(0)) == 2:
        a = ctx.node("Unsqueeze", [a, ctx.const("axes", [2, 3], np.int64)])
    ctx.node("Add", [ctx.node("Mul", [a, x]), y], ctx.outputs[0])
