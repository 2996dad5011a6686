"""A plain listing of a model's layers, so users know the names the per-layer options take."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import onnx
from tabulate import tabulate

from int8kit.graph.optimize import optimize_model
from int8kit.importers import load_any_model


@dataclass(frozen=True)
class Layer:
    """One layer of the optimized graph: the name the per-layer options take, its op type, its
    activation inputs (weights and other initializers left out) and its outputs."""

    name: str
    op: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


@dataclass(frozen=True)
class FoldedLayer:
    """A layer graph optimisation folded away: its name, op type and the layer it went into
    (or why it was removed)."""

    name: str
    op: str
    into: str


class Layers(list):
    """The layers of a model (a list of ``Layer``), with ``folded`` (``FoldedLayer``s);
    ``str()`` is the ``int8kit inspect`` listing."""

    def __init__(self, layers: list[Layer], folded: list[FoldedLayer]):
        super().__init__(layers)
        self.folded = folded

    def names(self) -> list[str]:
        """Layer names in graph order."""
        return [layer.name for layer in self]

    def __str__(self) -> str:
        rows = [(x.name, x.op, ", ".join(x.inputs), ", ".join(x.outputs)) for x in self]
        text = tabulate(rows, headers=["layer", "op", "activation inputs", "outputs"])
        if self.folded:
            text += ("\n\nFolded or removed by graph optimisation (per-layer options name the layers above):\n"
                     + tabulate([(f.name, f.op, f.into) for f in self.folded], headers=["layer", "op", "now part of"]))
        return text


def describe(
    path: onnx.ModelProto | str | os.PathLike,
    *,
    framework: str | None = None,
    weights: str | os.PathLike | None = None,
    input_shapes: Any = None,
) -> Layers:
    """One ``Layer`` per layer of the optimized graph (the one the per-layer options name), and in
    ``.folded`` the layers graph optimisation folded away, and where; ``print()`` shows the listing.

    Another framework's files (Caffe, Darknet, PyTorch, ...) are converted in memory first, as
    ``quantize`` converts them, so the names are the ones its options take."""
    model = load_any_model(path, framework=framework, weights=weights, input_shapes=input_shapes)
    optimized, _ = optimize_model(model)
    inits = {t.name for t in optimized.graph.initializer}
    layers = [
        Layer(n.name or "(unnamed)", n.op_type, tuple(i for i in n.input if i and i not in inits), tuple(n.output))
        for n in optimized.graph.node
        if n.op_type != "Constant"
    ]
    return Layers(layers, [FoldedLayer(*row) for row in folded_layers(model, optimized)])


# Ops the optimizer folds into the conv/gemm before them.
_AFFINE = {"BatchNormalization", "Mul", "Add", "Sub", "Div"}


def folded_layers(model: onnx.ModelProto, optimized: onnx.ModelProto) -> list[tuple[str, str, str]]:
    """(name, op type, the surviving layer it went into, or "removed") for every named node the
    optimizer folded away: BatchNormalization/Scale into the conv before it, Identity, Dropout."""
    kept = {n.name for n in optimized.graph.node}
    producer = {o: n for n in model.graph.node for o in n.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    out = []
    for node in model.graph.node:
        if node.name in kept or node.op_type == "Constant" or not node.name:
            continue
        source = producer.get(node.input[0]) if node.input else None
        while source is not None and source.name not in kept:  # a chain of folded layers
            source = producer.get(source.input[0]) if source.input else None
        if node.op_type == "Pad":  # padding goes into the conv/pool after it
            source = next((c for c in consumers.get(node.output[0], []) if c.name in kept), None)
        into = source.name if source is not None and node.op_type in _AFFINE | {"Pad"} else "removed (a no-op, or folded into a constant)"
        out.append((node.name, node.op_type, into))
    return out
