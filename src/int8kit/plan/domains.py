"""Input domains of saturating activations: the part of a tensor's range its consumers can tell apart.

HardSwish maps every x <= -3 to 0 (in each form exporters write it, plan/hardswish.py), HardSigmoid is flat outside [-beta/alpha, (1-beta)/alpha],
Clip outside [min, max], Relu below 0. When every consumer of a tensor is such an op, values
outside the union of their domains need no codes: the threshold method's range is intersected
with it, which frees up to half of the grid (PP-LCNet's HardSwish inputs reach -30 and beyond but
only [-3, max] matters). The method still sees the whole histogram: clamping the histogram
instead let it clip the positive tail harder, which HardSwish passes on linearly.

"""

from __future__ import annotations

import math

import onnx

from int8kit.graph.ops import FUSABLE, op_info
from int8kit.plan.graph_facts import GraphFacts, node_attr
from int8kit.plan.hardswish import clip_bounds, form_reading

Domain = tuple[float, float]


def op_domain(facts: GraphFacts, node: onnx.NodeProto) -> Domain | None:
    """Input values ``node`` distinguishes, or ``None`` when it is not saturating (or not known)."""
    op = node.op_type
    if op == "HardSwish":
        return (-3.0, math.inf)
    if op == "HardSigmoid":
        alpha, beta = node_attr(node, "alpha", 0.2), node_attr(node, "beta", 0.5)
        if alpha <= 0:
            return None
        return (-beta / alpha, (1.0 - beta) / alpha)
    if op == "Relu":
        return (0.0, math.inf)
    if op == "Clip":
        return clip_bounds(facts, node)
    return None


def consumer_domain(facts: GraphFacts, tensor: str) -> Domain | None:
    """Union of the consumers' domains when every consumer saturates, else ``None``."""
    consumers = facts.consumers.get(tensor, [])
    if not consumers or tensor in facts.graph_outputs:
        return None
    form = form_reading(facts, tensor)
    if form is not None:  # x * clip(x + shift, 0, top): 0 for every x <= -shift
        return (-form.shift, math.inf)
    lo, hi = math.inf, -math.inf
    for node in consumers:
        dom = op_domain(facts, node)
        if dom is None or node.input[0] != tensor or any(i == tensor for i in node.input[1:]):
            return None
        lo, hi = min(lo, dom[0]), max(hi, dom[1])
    return lo, hi


def value_domain(facts: GraphFacts, tensor: str) -> Domain | None:
    """The values of ``tensor`` that need codes: its consumers' domain, within the bounds of a
    producing Clip/Relu. A fused Clip's bound is the QuantizeLinear's saturation, so a user's
    threshold or th_scale above it must not widen the range past it."""
    return facts.memo(("value domain", tensor), lambda: _value_domain(facts, tensor))


def _value_domain(facts: GraphFacts, tensor: str) -> Domain | None:
    seen = consumer_domain(facts, tensor)
    producer = facts.producer.get(tensor)
    fusable = producer is not None and (info := op_info(producer.op_type)) is not None and info.role == FUSABLE
    made = op_domain(facts, producer) if fusable else None  # a Relu/Clip output: bounded by the op
    if made is None or seen is None:
        return made or seen
    lo, hi = max(seen[0], made[0]), min(seen[1], made[1])
    return (lo, hi) if lo < hi else made
