"""Caffe import: deploy prototxt + caffemodel to ONNX, in pure Python (no Caffe build).

``convert(model, weights)`` returns an ONNX model (opset 17) whose node names are the Caffe layer
names and whose outputs keep the Caffe blob names; ``reference(model, weights)`` runs the original
network in OpenCV dnn for parity checks; ``register_layer("Type")`` adds a converter for a custom
layer (see ``registry`` and docs/caffe.md).
"""

from __future__ import annotations

from collections.abc import Sequence

from int8kit.importers.caffe.network import LAYER_OUTPUTS_KEY, convert
from int8kit.importers.caffe.reference import Reference
from int8kit.importers.caffe.registry import LayerContext, register_layer, supported_types, unregister_layer

__all__ = ["convert", "reference", "Reference", "register_layer", "unregister_layer", "supported_types",
           "LayerContext", "LAYER_OUTPUTS_KEY"]


def reference(model, weights=None, *, input_shapes=None, input_names: Sequence[str] | None = None) -> Reference:
    """The original Caffe model, run by OpenCV dnn (``Reference.run(feeds, layers=None)``)."""
    return Reference(model, weights, input_shapes=input_shapes, input_names=input_names)
