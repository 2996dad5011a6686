"""Find HardSwish in the forms exporters write: ``x * clip(x + shift, 0, top) * factor``.

The HardSwish op needs opset 14; older exports write ``x * HardSigmoid(x)`` (PyTorch) or
``x * Clip(x + 3, 0, 6) / 6`` (paddle2onnx, PP-OCRv4). Every form is 0 for ``x <= -shift``, which
the domain rule uses, and every form runs as an INT8 Add and Mul (plan/integer_ops.py). Pure.
"""

from __future__ import annotations

import onnx

from int8kit.plan.graph_facts import GraphFacts, node_attr
from int8kit.plan.types import HardSwishForm


def hardswish_forms(facts: GraphFacts) -> tuple[HardSwishForm, ...]:
    """Every HardSwish-like subgraph of the model, whose inner tensors nothing else reads."""
    return facts.memo("hardswish forms", lambda: tuple(f for f in (_form_at(facts, n) for n in facts.nodes) if f is not None))


def form_reading(facts: GraphFacts, tensor: str) -> HardSwishForm | None:
    """The form whose nodes are all of ``tensor``'s consumers, if there is one."""
    return facts.memo(("hardswish form reading", tensor), lambda: _form_reading(facts, tensor))


def _form_reading(facts: GraphFacts, tensor: str) -> HardSwishForm | None:
    readers = {n.name for n in facts.consumers.get(tensor, [])}
    for node in facts.consumers.get(tensor, []):
        form = _form_at(facts, node)
        if form is not None and form.x == tensor and readers <= set(form.nodes):
            return form
    return None


def _form_at(facts: GraphFacts, node: onnx.NodeProto) -> HardSwishForm | None:
    """The form whose first node is ``node``, in any of the three spellings."""
    return _from_hardswish(node) or _from_hardsigmoid(facts, node) or _from_add(facts, node)


def _from_hardswish(node: onnx.NodeProto) -> HardSwishForm | None:
    if node.op_type != "HardSwish":
        return None
    return HardSwishForm(node.input[0], node.output[0], (node.name,), 3.0, 6.0, 1.0 / 6.0)


def _from_hardsigmoid(facts: GraphFacts, node: onnx.NodeProto) -> HardSwishForm | None:
    """``x * HardSigmoid(x)``: clip(alpha x + beta, 0, 1) = alpha clip(x + beta/alpha, 0, 1/alpha)."""
    if node.op_type != "HardSigmoid":
        return None
    alpha, beta = node_attr(node, "alpha", 0.2), node_attr(node, "beta", 0.5)
    x, gate = node.input[0], node.output[0]
    mul = _only_reader(facts, gate)
    if alpha <= 0 or beta <= 0 or mul is None or mul.op_type != "Mul" or sorted(mul.input) != sorted([x, gate]):
        return None
    return HardSwishForm(x, mul.output[0], (node.name, mul.name), beta / alpha, 1.0 / alpha, alpha)


def _from_add(facts: GraphFacts, add: onnx.NodeProto) -> HardSwishForm | None:
    """``x * Clip(x + shift, 0, top)``, then optionally ``/ d`` or ``* f``."""
    if add.op_type != "Add" or len(add.input) != 2:
        return None
    consts = [facts.scalar_input(add, i) for i in range(2)]
    if consts[0] is None and consts[1] is not None:
        x, shift = add.input[0], consts[1]
    elif consts[1] is None and consts[0] is not None:
        x, shift = add.input[1], consts[0]
    else:
        return None
    clip = _only_reader(facts, add.output[0])
    if shift <= 0 or clip is None or clip.op_type != "Clip" or clip.input[0] != add.output[0]:
        return None
    bounds = clip_bounds(facts, clip)
    if bounds is None or bounds[0] != 0.0 or not 0.0 < bounds[1] < float("inf"):
        return None
    mul = _only_reader(facts, clip.output[0])
    if mul is None or mul.op_type != "Mul" or sorted(mul.input) != sorted([x, clip.output[0]]):
        return None
    nodes, factor, last = [add.name, clip.name, mul.name], 1.0, mul
    post = _only_reader(facts, mul.output[0])
    if post is not None and post.op_type in ("Div", "Mul") and post.input[0] == mul.output[0] and len(post.input) == 2:
        value = facts.scalar_input(post, 1)
        if value is not None and value > 0:
            factor = 1.0 / value if post.op_type == "Div" else value
            nodes.append(post.name)
            last = post
    return HardSwishForm(x, last.output[0], tuple(nodes), shift, bounds[1], factor)


def clip_bounds(facts: GraphFacts, clip: onnx.NodeProto) -> tuple[float, float] | None:
    """A Clip's (min, max), or ``None`` when a bound is not a constant number."""
    if any(a.name in ("min", "max") for a in clip.attribute):  # opset < 11
        return node_attr(clip, "min", float("-inf")), node_attr(clip, "max", float("inf"))
    lo = facts.scalar_input(clip, 1) if len(clip.input) > 1 and clip.input[1] else float("-inf")
    hi = facts.scalar_input(clip, 2) if len(clip.input) > 2 and clip.input[2] else float("inf")
    return None if lo is None or hi is None else (lo, hi)


def _only_reader(facts: GraphFacts, tensor: str) -> onnx.NodeProto | None:
    readers = facts.consumers.get(tensor, [])
    return readers[0] if len(readers) == 1 and tensor not in facts.graph_outputs else None
