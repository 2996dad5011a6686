"""Input domains of saturating activations: the part of a tensor's range its consumers can tell apart.

HardSwish maps every x <= -3 to 0, HardSigmoid is flat outside [-beta/alpha, (1-beta)/alpha],
Clip outside [min, max], Relu below 0. When every consumer of a tensor is such an op, values
outside the union of their domains need no codes: the threshold method's range is intersected
with it, which frees up to half of the grid (PP-LCNet's HardSwish inputs reach -30 and beyond but
only [-3, max] matters). The method still sees the whole histogram: clamping the histogram
instead let it clip the positive tail harder, which HardSwish passes on linearly.

"""

from __future__ import annotations

import math

import onnx
from onnx import numpy_helper

from int8kit.plan.graph_facts import GraphFacts

Domain = tuple[float, float]


def _attr(node: onnx.NodeProto, name: str, default: float) -> float:
    for a in node.attribute:
        if a.name == name:
            return float(onnx.helper.get_attribute_value(a))
    return default


def _const(facts: GraphFacts, node: onnx.NodeProto, index: int, default: float) -> float | None:
    """Scalar constant input ``index`` of ``node`` (``default`` if absent, ``None`` if not constant)."""
    if len(node.input) <= index or not node.input[index]:
        return default
    init = facts.initializers.get(node.input[index])
    if init is None:
        return None
    value = numpy_helper.to_array(init)
    return float(value.reshape(-1)[0]) if value.size == 1 else None  # shape () or [1]


def op_domain(facts: GraphFacts, node: onnx.NodeProto) -> Domain | None:
    """Input values ``node`` distinguishes, or ``None`` when it is not saturating (or not known)."""
    op = node.op_type
    if op == "HardSwish":
        return (-3.0, math.inf)
    if op == "HardSigmoid":
        alpha, beta = _attr(node, "alpha", 0.2), _attr(node, "beta", 0.5)
        if alpha <= 0:
            return None
        return (-beta / alpha, (1.0 - beta) / alpha)
    if op == "Relu":
        return (0.0, math.inf)
    if op == "Clip":
        if node.attribute:  # opset < 11 keeps min/max as attributes
            return (_attr(node, "min", -math.inf), _attr(node, "max", math.inf))
        lo, hi = _const(facts, node, 1, -math.inf), _const(facts, node, 2, math.inf)
        return None if lo is None or hi is None else (lo, hi)
    return None


def _is_hardswish_parts(facts: GraphFacts, tensor: str, consumers: list[onnx.NodeProto]) -> bool:
    """``x * Clip(x + 3, 0, 6)``: HardSwish as exporters for opset < 14 write it (paddle2onnx's
    PP-OCRv4 models), read by nothing else; it is 0 for every x <= -3 just like the op."""
    adds = [n for n in consumers if n.op_type == "Add"]
    muls = [n for n in consumers if n.op_type == "Mul"]
    if len(consumers) != 2 or len(adds) != 1 or len(muls) != 1:
        return False
    add, mul = adds[0], muls[0]
    other = [i for i in add.input if i != tensor]
    if len(other) != 1 or _const(facts, add, list(add.input).index(other[0]), 0.0) != 3.0:
        return False
    clips = facts.consumers.get(add.output[0], [])
    if len(clips) != 1 or clips[0].op_type != "Clip" or op_domain(facts, clips[0]) != (0.0, 6.0):
        return False
    return sorted(mul.input) == sorted([tensor, clips[0].output[0]])


def consumer_domain(facts: GraphFacts, tensor: str) -> Domain | None:
    """Union of the consumers' domains when every consumer saturates, else ``None``."""
    consumers = facts.consumers.get(tensor, [])
    if not consumers or tensor in facts.graph_outputs:
        return None
    if _is_hardswish_parts(facts, tensor, consumers):
        return (-3.0, math.inf)
    lo, hi = math.inf, -math.inf
    for node in consumers:
        dom = op_domain(facts, node)
        if dom is None or node.input[0] != tensor or any(i == tensor for i in node.input[1:]):
            return None
        lo, hi = min(lo, dom[0]), max(hi, dom[1])
    return lo, hi
