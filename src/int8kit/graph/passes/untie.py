"""Give every Conv/ConvTranspose/Gemm/MatMul its own weight and bias initializers.

A layer called twice (or equal constants the exporter merged) leaves one initializer read by
several nodes. Folding a BatchNormalization into one reader, per-layer weight scales, INT32 bias
scales and bias correction all rewrite a layer's own parameters, so a shared one would silently
change the other readers.
"""

from __future__ import annotations

import onnx

from int8kit.graph.graphview import node_inputs
from int8kit.graph.ops import COMPUTE, op_info


def untie_parameters(model: onnx.ModelProto, log: list[str]) -> int:
    """Copy each shared weight/bias for every compute node that reads it; returns the copies made."""
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    reads: dict[str, int] = {}
    for node in graph.node:
        for name in node_inputs(node):
            reads[name] = reads.get(name, 0) + 1
    interface = {i.name for i in graph.input} | {o.name for o in graph.output}
    copies = 0
    for node in graph.node:
        info = op_info(node.op_type)
        if info is None or info.role != COMPUTE:
            continue
        for idx in {info.weight_input, info.bias_input, *info.activation_inputs} - {None}:
            name = node.input[idx] if idx < len(node.input) else ""
            if name not in inits or (reads.get(name, 0) < 2 and name not in interface):
                continue
            copy = onnx.TensorProto()
            copy.CopyFrom(inits[name])
            copy.name = f"{name}__{node.name or node.op_type}"
            graph.initializer.append(copy)
            node.input[idx] = copy.name
            reads[name] -= 1
            copies += 1
    if copies:
        log.append(f"gave {copies} layer input(s) their own copy of a shared weight/bias")
    return copies
