"""Evaluate nodes whose inputs are all constant and store their outputs as initializers."""

from __future__ import annotations

import logging

import numpy as np
import onnx
from onnx.reference import ReferenceEvaluator

from int8kit.graph.graphview import GraphView, subgraphs

logger = logging.getLogger(__name__)

MAX_FOLDED_BYTES = 64 * 1024 * 1024

# Random ops must stay random; Q/DQ pairs carry quantization meaning that folding would erase.
_NEVER_FOLD = frozenset(
    {
        "RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial",
        "Bernoulli", "Dropout", "Constant", "QuantizeLinear", "DequantizeLinear",
        "DynamicQuantizeLinear",
    }
)


def _opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 13)


def _foldable(view: GraphView, node: onnx.NodeProto) -> bool:
    inputs = [n for n in node.input if n]
    return (
        node.domain in ("", "ai.onnx")
        and node.op_type not in _NEVER_FOLD
        and bool(inputs)
        and all(view.is_constant(n) for n in inputs)
        and not any(True for _ in subgraphs(node))
        and not any(view.is_graph_output(o) for o in node.output)
    )


def _evaluate(node: onnx.NodeProto, feeds: dict[str, np.ndarray], opset: int) -> list[np.ndarray] | None:
    """Run one node with onnx's reference implementation; ``None`` if it cannot."""
    try:
        results = ReferenceEvaluator(node, opsets={"": opset}).run(None, feeds)
    except Exception as exc:  # the reference runtime raises many types for unsupported cases
        logger.debug("cannot evaluate %s '%s': %s", node.op_type, node.name, exc)
        return None
    return [np.asarray(r) for r in results]


def fold_constants(model: onnx.ModelProto, log: list[str]) -> int:
    """Replace constant sub-expressions by initializers; returns the number of nodes folded.

    Nodes are visited in graph (topological) order, so chains of constant nodes fold in one
    sweep. Results larger than 64 MB are skipped to keep model files small.
    """
    view = GraphView(model.graph)
    opset = _opset(model)
    folded: list[str] = []
    for node in view.live_nodes():
        if not _foldable(view, node):
            continue
        feeds = {n: view.get_array(n) for n in node.input if n}
        outputs = _evaluate(node, feeds, opset)
        names = [o for o in node.output]
        if outputs is None or len(outputs) < len([o for o in names if o]):
            continue
        if sum(o.nbytes for o in outputs) > MAX_FOLDED_BYTES:
            logger.info("not folding %s '%s': result above 64 MB", node.op_type, node.name)
            continue
        view.remove_node(node)
        for name, value in zip(names, outputs):
            if name:
                view.set_initializer(name, value)
        folded.append(node.name or node.op_type)
    view.commit()
    if folded:
        shown = ", ".join(f"'{n}'" for n in folded[:8]) + (" ..." if len(folded) > 8 else "")
        log.append(f"folded {len(folded)} constant node(s) into initializers: {shown}")
    return len(folded)
