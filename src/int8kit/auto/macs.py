"""Multiply-accumulates of every compute layer (Conv, ConvTranspose, Gemm, MatMul with a constant
weight), counted once per search by ``analysis.summary`` (shape inference with the inputs fixed to
one real sample): the full search minimises the MACs left in float."""

from __future__ import annotations

import onnx

from int8kit.analysis.summary import model_summary
from int8kit.plan.types import QuantPlan


def layer_macs(model: onnx.ModelProto, input_shapes: dict[str, tuple[int, ...]] | None = None) -> dict[str, int]:
    """MACs per sample of every compute node by name, in graph order (0 where a shape is unknown)."""
    everything_float = model_summary(model, QuantPlan(), input_shapes)  # an empty plan: every compute node is listed
    return {f.name: f.macs for f in everything_float.float_nodes}


def int8_mac_fraction(macs: dict[str, int], float_nodes: set[str] | dict[str, str]) -> float:
    """The share of all compute MACs in layers that run in INT8."""
    total = sum(macs.values())
    if total == 0:
        return 1.0 if not float_nodes else 0.0
    return 1.0 - sum(v for k, v in macs.items() if k in float_nodes) / total
