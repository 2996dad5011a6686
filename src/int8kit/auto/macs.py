"""Multiply-accumulates of every compute layer (Conv, ConvTranspose, Gemm, MatMul), from the
shapes ONNX shape inference gives: the full search minimises the MACs left in float."""

from __future__ import annotations

import math

import numpy as np
import onnx

from int8kit.graph.ops import COMPUTE, op_info


def _shapes(model: onnx.ModelProto) -> dict[str, tuple[int, ...]]:
    """Known static shapes of every value (a dynamic batch counts as 1)."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    except Exception:  # a model shape inference cannot follow: initializer shapes only
        inferred = model
    shapes: dict[str, tuple[int, ...]] = {}
    for vi in (*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output):
        dims = vi.type.tensor_type.shape.dim
        shapes[vi.name] = tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else 1 for d in dims)
    for init in model.graph.initializer:
        shapes[init.name] = tuple(init.dims)
    return shapes


def layer_macs(model: onnx.ModelProto) -> dict[str, int]:
    """MACs per sample of every compute node by name (0 where a shape is unknown)."""
    shapes = _shapes(model)
    out: dict[str, int] = {}
    for node in model.graph.node:
        info = op_info(node.op_type)
        if info is None or info.role != COMPUTE:
            continue
        y = shapes.get(node.output[0], ())
        w = shapes.get(node.input[1], ()) if len(node.input) > 1 else ()
        if not y or not w:
            out[node.name] = 0
        elif node.op_type == "Conv":  # every output value: (in channels / group) x kernel
            out[node.name] = int(np.prod(y) * math.prod(w[1:]))
        elif node.op_type == "ConvTranspose":  # every input value spreads over out channels / group x kernel
            x = shapes.get(node.input[0], ())
            out[node.name] = int(np.prod(x) * math.prod(w[1:])) if x else 0
        else:  # Gemm / MatMul: every output value is a dot product over the shared dimension
            x = shapes.get(node.input[0], ())
            out[node.name] = int(np.prod(y) * x[-1]) if x else 0
    return out


def int8_mac_fraction(macs: dict[str, int], float_nodes: set[str] | dict[str, str]) -> float:
    """The share of all compute MACs in layers that run in INT8."""
    total = sum(macs.values())
    if total == 0:
        return 1.0 if not float_nodes else 0.0
    return 1.0 - sum(v for k, v in macs.items() if k in float_nodes) / total
