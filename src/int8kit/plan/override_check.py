"""An override that sets a range (threshold, th_scale, th_method) must reach a quantized tensor.

Otherwise it would be ignored without a word: a conv's own output is not quantized when the
Relu/Clip after it is fused, and a layer kept float has no range at all.
"""

from __future__ import annotations

from int8kit.errors import ConfigError
from int8kit.config import QuantConfig
from int8kit.plan.graph_facts import GraphFacts
from int8kit.plan.types import QuantPlan


def check_overrides_apply(facts: GraphFacts, config: QuantConfig, result: QuantPlan) -> None:
    """Raise ``ConfigError`` naming the first range override whose tensor is not quantized, and
    the quantized tensor it probably meant."""
    nodes = {n.name: n for n in facts.nodes}
    for key, ov in config.overrides.items():
        sets = [k for k, on in (("threshold", ov.threshold is not None), ("th_method", bool(ov.th_method)),
                                ("th_scale", ov.th_scale != 1.0)) if on]
        if not sets or ov.float:
            continue
        node = nodes.get(key)
        tensors = list(node.output) if node is not None else [key]
        if any(t in result.tensors for t in tensors):
            continue
        owner = node if node is not None else facts.producer.get(key)
        if owner is not None and owner.name in result.float_nodes:
            why = f"layer '{owner.name}' stays float ({result.float_nodes[owner.name]})"
            hint = "drop the override or the option that keeps the layer float"
        else:
            later = _next_quantized(facts, result, tensors[0])
            if later:
                why = f"tensor '{tensors[0]}' is not quantized (it stays inside a fused INT8 op)"
                hint = f"put it on '{later}', the quantized tensor after it"
            else:
                why = f"tensor '{tensors[0]}' is not quantized (a model output, or read by float layers only)"
                hint = "drop it, or name a tensor listed in <stem>_quant.json"
        raise ConfigError(f"override for '{key}' sets {', '.join(sets)} but {why}; {hint}.")


def _next_quantized(facts: GraphFacts, result: QuantPlan, tensor: str) -> str | None:
    """Follow single-consumer, single-output nodes (Relu, Clip...) to the first quantized tensor."""
    for _ in range(8):
        consumers = facts.consumers.get(tensor, [])
        if len(consumers) != 1 or not consumers[0].output:
            return None
        tensor = consumers[0].output[0]
        if tensor in result.tensors:
            return tensor
    return None
