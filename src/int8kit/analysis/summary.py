"""What runs in INT8 and what stays float in one quantized model, and where the multiply-
accumulates are: the model summary of ``int8kit analyze``."""

from __future__ import annotations

import copy
import logging
from collections import Counter
from dataclasses import dataclass, field

import onnx
from onnx import numpy_helper

from int8kit.analysis.isolated import node_macs, plan_layers
from int8kit.analysis.ort_fusion import float_in_onnxruntime
from int8kit.graph.ops import COMPUTE, op_info
from int8kit.plan.types import QuantPlan

log = logging.getLogger(__name__)


@dataclass
class FloatNode:
    """A node kept in float (a compute node, or any node a rule keeps float), and why."""

    name: str
    op_type: str
    macs: int
    reason: str


@dataclass
class ModelSummary:
    """Op counts (INT8 / float per op type), MACs per sample in INT8 and in float, float nodes."""

    ops: list[tuple[str, int, int]] = field(default_factory=list)  # (op type, INT8 nodes, float nodes)
    int8_macs: int = 0
    float_macs: int = 0
    float_nodes: list[FloatNode] = field(default_factory=list)

    @property
    def int8_mac_share(self) -> float:
        total = self.int8_macs + self.float_macs
        return self.int8_macs / total if total else 0.0


def model_summary(model: onnx.ModelProto, plan: QuantPlan, input_shapes: dict[str, tuple[int, ...]] | None = None,
                  int8_model: onnx.ModelProto | None = None) -> ModelSummary:
    """Summary of ``plan`` on ``model`` (the optimized FP32 model it was made for). ``input_shapes``
    (one sample, batch axis included) fixes dynamic sizes so that MACs can be counted. With the
    emitted ``int8_model``, the convs onnxruntime runs in float anyway count as float (``ort_fusion``)."""
    shapes = _output_shapes(model, input_shapes or {})
    inits = {t.name: t for t in model.graph.initializer}
    float_nodes = float_in_onnxruntime(int8_model, plan) if int8_model is not None else plan.float_nodes
    int8 = {l.name for l in plan_layers(model, plan) if l.int8 and l.name not in float_nodes} | set(plan.fused)
    int8 |= {n for form in plan.integer_hardswish.values() for n in form.nodes}
    counts: dict[str, Counter] = {}
    summary = ModelSummary()
    for node in model.graph.node:
        info = op_info(node.op_type)
        weight = None
        if info is not None and info.role == COMPUTE and info.weight_input is not None and len(node.input) > info.weight_input:
            t = inits.get(node.input[info.weight_input])
            weight = numpy_helper.to_array(t) if t is not None else None
        macs = node_macs(node, weight, shapes.get(node.output[0]) if node.output else None)
        in_int8 = node.name in int8
        counts.setdefault(node.op_type, Counter())["int8" if in_int8 else "float"] += 1
        if in_int8:
            summary.int8_macs += macs
            continue
        summary.float_macs += macs
        if info is not None and info.role == COMPUTE or node.name in float_nodes:
            reason = float_nodes.get(node.name) or ("no quantized input (its neighbours are float)" if info else "not quantizable")
            summary.float_nodes.append(FloatNode(node.name, node.op_type, macs, reason))
    summary.ops = sorted(((op, c["int8"], c["float"]) for op, c in counts.items()), key=lambda r: (-(r[1] + r[2]), r[0]))
    return summary


def _output_shapes(model: onnx.ModelProto, input_shapes: dict[str, tuple[int, ...]]) -> dict[str, tuple]:
    """Each tensor's shape by ONNX shape inference with the inputs fixed to ``input_shapes``."""
    fixed = copy.deepcopy(model)
    for vi in fixed.graph.input:
        shape = input_shapes.get(vi.name)
        if shape is None or not vi.type.HasField("tensor_type"):
            continue
        dims = vi.type.tensor_type.shape.dim
        if len(dims) == len(shape):
            for d, n in zip(dims, shape):
                d.Clear()
                d.dim_value = int(n)
    del fixed.graph.value_info[:]
    try:
        inferred = onnx.shape_inference.infer_shapes(fixed, strict_mode=False)
    except Exception as exc:  # custom ops, >2 GB: MACs stay unknown (0)
        log.info("shape inference failed (%s); MACs are not counted", exc)
        return {}
    out = {}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.output):
        if vi.type.HasField("tensor_type") and vi.type.tensor_type.HasField("shape"):
            out[vi.name] = tuple(d.dim_value if d.HasField("dim_value") else None for d in vi.type.tensor_type.shape.dim)
    return out
