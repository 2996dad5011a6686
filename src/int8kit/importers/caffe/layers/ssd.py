"""SSD layers: PriorBox (a constant) and DetectionOutput (float post-processing from ONNX ops)."""

from __future__ import annotations

from int8kit.importers.caffe.detection import detection_output
from int8kit.importers.caffe.priorbox import prior_boxes
from int8kit.importers.caffe.registry import LayerContext, register_layer


@register_layer("PriorBox")
def prior_box(ctx: LayerContext) -> list[str]:
    """Prior boxes depend only on shapes: store them as an initializer named after the top."""
    layer_hw = ctx.shape(0)[2:4]
    image_hw = ctx.shape(1)[2:4] if len(ctx.inputs) > 1 else (0, 0)
    value = prior_boxes(ctx.layer.prior_box_param, layer_hw, image_hw)
    return [ctx.b.const(ctx.outputs[0], value, exact=True)]


register_layer("DetectionOutput")(detection_output)
