"""Input domains of saturating activations: the part of a tensor's range its consumers can tell apart.

HardSwish maps every x <= -3 to 0, HardSigmoid is flat outside [-beta/alpha, (1-beta)/alpha],
Clip outside [min, max], Relu below 0. When every consumer of a tensor is such an op, values
outside the union of their domains need no codes: the tensor's histogram is clamped to it before
a threshold is chosen, which frees up to half of the grid (PP-LCNet's HardSwish inputs reach
-10 and beyond but only [-3, max] matters).

Graphs exported below opset 14 spell HardSwish out as a gated product, ``x * Clip(x + 3, 0, 6) / 6``
(paddle2onnx) or ``x * HardSigmoid(x)``: ``x`` feeds both the product and the gate, and the gate is
0 wherever ``x`` lies below its bias, so the product is 0 there too. Such a tensor gets the same
clamp (:func:`gated_product_domain`).
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


def _positive_scale(facts: GraphFacts, node: onnx.NodeProto, tensor: str) -> bool:
    """``node`` multiplies or divides ``tensor`` by a positive scalar constant (keeps 0 at 0, order)."""
    if node.op_type not in ("Mul", "Div") or len(node.input) != 2 or tensor not in node.input:
        return False
    other = node.input[1] if node.input[0] == tensor else node.input[0]
    if node.op_type == "Div" and node.input[0] != tensor:
        return False
    value = _const(facts, node, list(node.input).index(other), 0.0)
    return value is not None and value > 0


def _gate_zero_below(facts: GraphFacts, gate: onnx.NodeProto, tensor: str) -> float | None:
    """If ``gate`` (reading ``tensor``, maybe through ``+ c`` or ``- c``) outputs 0 for every
    ``tensor`` value below some ``a``, return ``a``; the gates are Relu, Clip(0, hi), HardSigmoid."""
    shift = 0.0
    if gate.op_type in ("Add", "Sub") and len(gate.input) == 2 and gate.input[0] == tensor:
        c = _const(facts, gate, 1, 0.0)
        if c is None:
            return None
        shift = c if gate.op_type == "Add" else -c
        nexts = facts.consumers.get(gate.output[0], [])
        if len(nexts) != 1 or gate.output[0] in facts.graph_outputs:
            return None
        gate = nexts[0]
    elif gate.op_type in ("Add", "Sub"):
        return None
    dom = op_domain(facts, gate) if gate.op_type in ("Relu", "Clip", "HardSigmoid") else None
    if dom is None or not math.isfinite(dom[0]):
        return None
    if gate.op_type == "Clip" and dom[0] != 0.0:
        return None  # a gate clipped at a nonzero floor does not silence the product
    return dom[0] - shift


def gated_product_domain(facts: GraphFacts, tensor: str) -> Domain | None:
    """``(a, inf)`` when ``tensor`` is read only by a product ``tensor * g`` and by the gate ``g``
    (Relu / Clip(0, hi) / HardSigmoid of ``tensor + c``, maybe scaled by a positive constant)
    that is 0 for every value below ``a``: decomposed HardSwish. Else ``None``."""
    consumers = facts.consumers.get(tensor, [])
    if len(consumers) != 2 or tensor in facts.graph_outputs:
        return None
    for mul, gate in (consumers, consumers[::-1]):
        if mul.op_type != "Mul" or len(mul.input) != 2 or tensor not in mul.input or mul.input[0] == mul.input[1]:
            continue
        low = _gate_zero_below(facts, gate, tensor)
        if low is None:
            continue
        # follow the gate's output through positive scalings to the product's other input
        g = gate.output[0] if gate.op_type not in ("Add", "Sub") else facts.consumers[gate.output[0]][0].output[0]
        other = mul.input[1] if mul.input[0] == tensor else mul.input[0]
        while g != other:
            nexts = facts.consumers.get(g, [])
            if len(nexts) != 1 or g in facts.graph_outputs or not _positive_scale(facts, nexts[0], g):
                break
            g = nexts[0].output[0]
        if g == other:
            return (low, math.inf)
    return None


def consumer_domain(facts: GraphFacts, tensor: str) -> Domain | None:
    """Union of the consumers' domains when every consumer saturates, else ``None``."""
    consumers = facts.consumers.get(tensor, [])
    if not consumers or tensor in facts.graph_outputs:
        return None
    gated = gated_product_domain(facts, tensor)
    if gated is not None:
        return gated
    lo, hi = math.inf, -math.inf
    for node in consumers:
        dom = op_domain(facts, node)
        if dom is None or node.input[0] != tensor or any(i == tensor for i in node.input[1:]):
            return None
        lo, hi = min(lo, dom[0]), max(hi, dom[1])
    return lo, hi
