"""Layers that combine, split, reshape or resize tensors."""

from __future__ import annotations

import numpy as np

from int8kit.importers.caffe import proto
from int8kit.importers.caffe.registry import LayerContext, register_layer

_E = proto.EltwiseParameter


def _i64(ctx: LayerContext, name: str, values) -> str:
    return ctx.const(name, [int(v) for v in values], np.int64)


@register_layer("Eltwise")
def eltwise(ctx: LayerContext) -> None:
    p = ctx.layer.eltwise_param
    xs = list(ctx.inputs)
    if p.operation == _E.SUM:
        coeff = list(p.coeff) or [1.0] * len(xs)
        if len(coeff) != len(xs):
            raise ctx.unsupported(f"{len(coeff)} coefficients for {len(xs)} inputs")
        xs = [x if c == 1 else ctx.node("Mul", [x, ctx.const("coeff", float(c))]) for x, c in zip(xs, coeff)]
        op = "Add"
    else:
        op = "Mul" if p.operation == _E.PROD else "Max"
    if len(xs) == 1:
        ctx.node("Identity", xs, ctx.outputs[0])
        return
    acc = xs[0]
    for i, x in enumerate(xs[1:], start=2):
        acc = ctx.node(op, [acc, x], ctx.outputs[0] if i == len(xs) else None)


@register_layer("Concat")
def concat(ctx: LayerContext) -> None:
    p = ctx.layer.concat_param
    axis = int(p.concat_dim) if p.HasField("concat_dim") and not p.HasField("axis") else int(p.axis)
    ctx.node("Concat", ctx.inputs, ctx.outputs[0], axis=axis)


@register_layer("Slice")
def slice_(ctx: LayerContext) -> None:
    p = ctx.layer.slice_param
    shape = ctx.shape(0)
    axis = (int(p.slice_dim) if p.HasField("slice_dim") and not p.HasField("axis") else int(p.axis)) % len(shape)
    n = len(ctx.outputs)
    points = [int(v) for v in p.slice_point]
    if points:
        bounds = [0, *points, shape[axis]]
        sizes = [b - a for a, b in zip(bounds, bounds[1:])]
    else:
        sizes = [shape[axis] // n] * n
    if len(sizes) != n or min(sizes) <= 0:
        raise ctx.unsupported(f"slice points {points} for axis size {shape[axis]} and {n} tops")
    ctx.node("Split", [ctx.inputs[0], _i64(ctx, "split", sizes)], ctx.outputs, axis=axis)


@register_layer("Split")
def split(ctx: LayerContext) -> list[str]:
    return [ctx.inputs[0]] * len(ctx.outputs)


@register_layer("Dropout")
def dropout(ctx: LayerContext) -> list[str]:
    """Identity at inference: the tops are the bottom tensor."""
    return [ctx.inputs[0]] * len(ctx.outputs)


@register_layer("Flatten")
def flatten(ctx: LayerContext) -> None:
    p = ctx.layer.flatten_param
    shape = ctx.shape(0)
    axis, end = int(p.axis) % len(shape), int(p.end_axis) % len(shape)
    target = [0] * axis + [-1] + list(shape[end + 1:])
    ctx.node("Reshape", [ctx.inputs[0], _i64(ctx, "shape", target)], ctx.outputs[0])


@register_layer("Reshape")
def reshape(ctx: LayerContext) -> None:
    """Caffe's Reshape: 0 copies a dimension, -1 infers one; axis/num_axes select the replaced span."""
    p = ctx.layer.reshape_param
    shape = ctx.shape(0)
    axis = int(p.axis) if p.axis >= 0 else len(shape) + 1 + int(p.axis)
    end = len(shape) if p.num_axes == -1 else axis + int(p.num_axes)
    spec = [int(d) for d in p.shape.dim]
    # Zeros in the spec copy the input dimension at the same position, as ONNX's 0 does, once the
    # prefix keeps positions aligned; the suffix is written out from the static shape.
    target = [0] * axis + spec + list(shape[end:])
    ctx.node("Reshape", [ctx.inputs[0], _i64(ctx, "shape", target)], ctx.outputs[0])


@register_layer("Permute")
def permute(ctx: LayerContext) -> None:
    rank = len(ctx.shape(0))
    order = [int(v) for v in ctx.layer.permute_param.order]
    order += [a for a in range(rank) if a not in order]
    ctx.node("Transpose", [ctx.inputs[0]], ctx.outputs[0], perm=order)


@register_layer("Crop")
def crop(ctx: LayerContext) -> None:
    """Crop bottom 0 to bottom 1's shape from ``axis`` on, starting at ``offset``."""
    p = ctx.layer.crop_param
    shape, ref = ctx.shape(0), ctx.shape(1)
    axis = int(p.axis) % len(shape)
    axes = list(range(axis, len(shape)))
    offsets = [int(v) for v in p.offset] or [0]
    offsets = offsets * len(axes) if len(offsets) == 1 else offsets
    starts = offsets
    ends = [o + ref[a] for o, a in zip(offsets, axes)]
    ctx.node("Slice", [ctx.inputs[0], _i64(ctx, "starts", starts), _i64(ctx, "ends", ends),
                       _i64(ctx, "axes", axes)], ctx.outputs[0])


@register_layer("ShuffleChannel")
def shuffle_channel(ctx: LayerContext) -> None:
    n, c, h, w = ctx.shape(0)
    g = int(ctx.layer.shuffle_channel_param.group)
    grouped = ctx.node("Reshape", [ctx.inputs[0], _i64(ctx, "grouped", [0, g, c // g, h, w])])
    swapped = ctx.node("Transpose", [grouped], perm=[0, 2, 1, 3, 4])
    ctx.node("Reshape", [swapped, _i64(ctx, "shape", [0, c, h, w])], ctx.outputs[0])


def _resize(ctx: LayerContext, size: list[int], mode: str, transform: str) -> None:
    n, c = ctx.shape(0)[:2]
    sizes = _i64(ctx, "sizes", [n, c, *size])
    attrs = dict(mode=mode, coordinate_transformation_mode=transform)
    if mode == "nearest":
        attrs["nearest_mode"] = "floor"
    ctx.node("Resize", [ctx.inputs[0], "", "", sizes], ctx.outputs[0], **attrs)


@register_layer("Interp")
def interp(ctx: LayerContext) -> None:
    """Bilinear resize with aligned corners (DeepLab/PSPNet's Interp)."""
    p = ctx.layer.interp_param
    h, w = ctx.shape(0)[2:]
    if p.pad_beg or p.pad_end:
        raise ctx.unsupported("Interp pad_beg/pad_end")
    h_eff, w_eff = h, w
    if p.shrink_factor != 1:
        h_eff, w_eff = (h - 1) // p.shrink_factor + 1, (w - 1) // p.shrink_factor + 1
    if p.height and p.width:
        size = [int(p.height), int(p.width)]
    elif len(ctx.inputs) > 1:
        size = list(ctx.shape(1)[2:])
    else:
        size = [h_eff + (h_eff - 1) * (p.zoom_factor - 1), w_eff + (w_eff - 1) * (p.zoom_factor - 1)]
    _resize(ctx, size, "linear", "align_corners")


@register_layer("Upsample")
def upsample(ctx: LayerContext) -> None:
    """Nearest-neighbour upsampling by an integer scale (YOLO/SegNet-style Upsample)."""
    p = ctx.layer.upsample_param
    h, w = ctx.shape(0)[2:]
    if p.upsample_h and p.upsample_w:
        size = [int(p.upsample_h), int(p.upsample_w)]
    else:
        sh = int(p.scale_h) if p.HasField("scale_h") else int(p.scale)
        sw = int(p.scale_w) if p.HasField("scale_w") else int(p.scale)
        size = [h * sh, w * sw]
    _resize(ctx, size, "nearest", "asymmetric")
