"""The registry of Caffe layer converters and the context each converter works with.

A converter is a function ``fn(ctx: LayerContext) -> list[str] | None`` registered for one or more
Caffe layer type names. It reads ``ctx.layer`` (the LayerParameter), ``ctx.blobs`` (the trained
weights as numpy arrays) and ``ctx.inputs`` (the ONNX tensors of the layer's bottoms, with shapes
from ``ctx.shape(i)``), and adds ONNX nodes with ``ctx.node``: the node writing ``ctx.outputs[i]``
is named after the Caffe layer, so every per-layer option works with the Caffe names. A converter
that adds no node for a top (Split, Dropout) returns the tensor names to use for the tops instead.

Custom layers::

    from int8kit.importers.caffe import register_layer

    @register_layer("MySwish")
    def my_swish(ctx):
        sig = ctx.node("Sigmoid", [ctx.inputs[0]])
        ctx.node("Mul", [ctx.inputs[0], sig], ctx.outputs[0])
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from int8kit.errors import ModelError
from int8kit.importers.caffe.builder import GraphBuilder

Converter = Callable[["LayerContext"], "list[str] | None"]
_CONVERTERS: dict[str, Converter] = {}


def register_layer(*type_names: str, replace: bool = False) -> Callable[[Converter], Converter]:
    """Decorator registering a converter for the Caffe layer types ``type_names``.

    Registering a type that already has a converter needs ``replace=True`` (it then overrides the
    built-in one, e.g. to change how a layer is lowered).
    """
    if not type_names:
        raise TypeError("register_layer needs at least one Caffe layer type name")

    def deco(fn: Converter) -> Converter:
        for t in type_names:
            if t in _CONVERTERS and not replace and _CONVERTERS[t] is not fn:
                raise ValueError(f"Caffe layer type {t!r} already has a converter; pass replace=True to override it")
            _CONVERTERS[t] = fn
        return fn

    return deco


def unregister_layer(type_name: str) -> None:
    """Remove the converter of ``type_name`` (used by tests of custom layers)."""
    _CONVERTERS.pop(type_name, None)


def converter_for(type_name: str) -> Converter | None:
    """The converter registered for ``type_name``, or None."""
    return _CONVERTERS.get(type_name)


def supported_types() -> list[str]:
    """Every Caffe layer type name with a converter."""
    return sorted(_CONVERTERS)


class LayerContext:
    """What a converter sees of one Caffe layer, and how it adds ONNX nodes for it."""

    def __init__(self, builder: GraphBuilder, layer, inputs: Sequence[str], outputs: Sequence[str],
                 blobs: Sequence[np.ndarray]):
        self.b = builder
        self.layer = layer
        self.name: str = layer.name
        self.type: str = layer.type
        self.inputs = list(inputs)
        self.outputs = list(outputs)
        self.blobs = list(blobs)
        self._named = False

    def shape(self, i: int = 0) -> tuple[int, ...]:
        """The static shape of the i-th bottom."""
        return self.b.shape(self.inputs[i])

    def tensor_shape(self, name: str) -> tuple[int, ...]:
        """The static shape of any tensor made so far."""
        return self.b.shape(name)

    def blob(self, i: int, what: str) -> np.ndarray:
        """The i-th trained blob, or a clear error when the weights do not have it."""
        if i >= len(self.blobs):
            raise ModelError(f"Caffe layer {self.name!r} ({self.type}) needs its {what} (blob {i}) but the weights "
                             f"hold {len(self.blobs)} blob(s); pass the .caffemodel trained for this prototxt.")
        return self.blobs[i]

    def const(self, suffix: str, value, dtype=np.float32) -> str:
        """A constant named after this layer."""
        return self.b.const(f"{self.name}/{suffix}", value, dtype)

    def node(self, op: str, inputs: Sequence[str], outputs: str | Sequence[str] | None = None,
             **attrs) -> str:
        """Add one ONNX node and return its (first) output name.

        Without ``outputs`` the node writes a fresh intermediate tensor. The first node that writes
        one of the layer's reserved outputs takes the layer name as its node name.
        """
        if outputs is None:
            outs = [self.b.unique(f"{self.name}/{op}")]
        elif isinstance(outputs, str):
            outs = [outputs]
        else:
            outs = list(outputs)
        if not self._named and any(o in self.outputs for o in outs):
            node_name, self._named = self.name, True
        else:  # intermediate tensor names are unique, so they serve as node names too
            node_name = outs[0] if outputs is None else self.b.unique(f"{self.name}/{op}")
        self.b.node(op, inputs, outs, node_name, **attrs)
        return outs[0]

    def multi(self, op: str, inputs: Sequence[str], count: int, **attrs) -> list[str]:
        """Add a node with ``count`` fresh intermediate outputs (Split, TopK) and return their names."""
        outs = [self.b.unique(f"{self.name}/{op}") for _ in range(count)]
        self.b.node(op, inputs, outs, outs[0], **attrs)
        return outs

    def unsupported(self, what: str) -> ModelError:
        """An error for a parameter value this converter does not handle."""
        return ModelError(f"Caffe layer {self.name!r} ({self.type}) uses {what}, which int8kit cannot convert; "
                          "change the layer or register your own converter with "
                          "int8kit.importers.caffe.register_layer.")
