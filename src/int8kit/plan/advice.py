"""Warnings about INT8 choices that can cost accuracy, with what to do about them."""

from __future__ import annotations

import logging

import numpy as np

from int8kit.graph.ops import VARIADIC, op_info
from int8kit.plan.graph_facts import GraphFacts
from int8kit.plan.types import QuantPlan

log = logging.getLogger(__name__)

# An input of a QLinearConcat keeps about 256 * its share of the output range levels.
_FEW_LEVELS = 16


def warn_narrow_concat_inputs(facts: GraphFacts, result: QuantPlan, already: set[str] | None = None) -> list[str]:
    """Warn about each INT8 Concat input whose range is a small share of the output's: the
    requantization to the output's one scale leaves it a handful of levels (a skip connection
    joining a feature map 100x larger). Returns the warnings; those in ``already`` (the ones
    earlier plans of the same model logged) are returned but not logged again, and added to it."""
    out: list[str] = []
    for node in facts.nodes:
        info = op_info(node.op_type)
        if info is None or info.role != VARIADIC or node.output[0] not in result.tensors or node.name in result.float_nodes:
            continue
        whole = _span(result, node.output[0])
        for name in node.input:
            if name not in result.tensors or whole <= 0:
                continue
            levels = 256 * _span(result, name) / whole
            if levels < _FEW_LEVELS:
                readers = ", ".join(c.name for c in facts.consumers.get(node.output[0], [])) or "its readers"
                out.append(f"Concat '{node.name}': input '{name}' spans {_span(result, name) / whole:.1%} of the output range "
                           f"and keeps about {levels:.0f} of 256 INT8 levels; if accuracy suffers, keep {readers} float (--fp-layers)")
    for line in out:
        if already is None or line not in already:
            log.warning(line)
    if already is not None:
        already.update(out)
    return out


def _span(result: QuantPlan, name: str) -> float:
    tq = result.tensors[name]
    return float(np.max(np.asarray(tq.scale))) * 255.0
