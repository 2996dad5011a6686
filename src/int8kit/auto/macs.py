"""Multiply-accumulates of every compute layer (Conv, ConvTranspose, Gemm, MatMul with a constant
weight), counted once per search by ``analysis.summary`` (shape inference with the inputs fixed to
one real sample): the full search minimises the MACs left in float."""

from __future__ import annotations

import onnx

from int8kit.analysis.ort_fusion import integer_conv
from int8kit.analysis.summary import model_summary
from int8kit.graph.graphview import GraphView
from int8kit.graph.ops import FUSABLE, op_info
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


def float_cost(model: onnx.ModelProto, macs: dict[str, int], already_float: set[str]) -> dict[str, int]:
    """MACs that floating each layer puts in float: its own, plus those of the conv that feeds it
    (through a Relu/Clip) when that one is still INT8, since a float layer reads the unquantized
    tensor and onnxruntime then runs its producer in float too (``analysis.ort_fusion``)."""
    view = GraphView(model.graph)
    nodes = {n.name: n for n in model.graph.node}  # one map: GraphView finds nodes by name with a scan
    cost = {}
    for name, own in macs.items():
        node = nodes.get(name)
        feeder = view.producer(node.input[0]) if node is not None and node.input else None
        while feeder is not None and op_info(feeder.op_type) is not None and op_info(feeder.op_type).role == FUSABLE:
            feeder = view.producer(feeder.input[0])
        dragged = feeder is not None and integer_conv(feeder) and feeder.name not in already_float
        cost[name] = own + (macs.get(feeder.name, 0) if dragged else 0)
    return cost
