"""Remove ``Identity`` and inference-mode ``Dropout`` nodes, keeping graph output names intact."""

from __future__ import annotations

import logging

import onnx

from int8kit.graph.graphview import GraphView

logger = logging.getLogger(__name__)


def _is_inference_dropout(view: GraphView, node: onnx.NodeProto) -> bool:
    """A Dropout is a pass-through when not in training mode and its mask is not read."""
    if len(node.output) > 1 and node.output[1] and (view.consumers_of(node.output[1]) or view.is_graph_output(node.output[1])):
        return False
    if len(node.input) > 2 and node.input[2]:
        mode = view.get_array(node.input[2])
        if mode is None or bool(mode):
            return False
    return True


def _bypass(view: GraphView, node: onnx.NodeProto) -> bool:
    """Rewire around a pass-through node; returns False when it must stay."""
    src, dst = node.input[0], node.output[0]
    if not view.is_graph_output(dst):
        view.replace_input(dst, src)
        view.remove_node(node)
        return True
    # dst is part of the model's interface: let src's producer write dst directly instead.
    producer = view.producer(src)
    if producer is None or view.is_graph_output(src):
        return False  # src is a graph input / initializer / another output: the copy is needed
    view.remove_node(node)
    view.rename_output(producer, src, dst)
    view.replace_input(src, dst)
    return True


def remove_identities(model: onnx.ModelProto, log: list[str]) -> int:
    """Remove Identity nodes and Dropout nodes that do nothing at inference; returns the count."""
    view = GraphView(model.graph)
    removed = 0
    for node in view.nodes_of_type("Identity", "Dropout"):
        if not node.input or not node.input[0]:
            continue
        if node.op_type == "Dropout" and not _is_inference_dropout(view, node):
            logger.debug("Dropout '%s' kept: training mode or mask in use", node.name)
            continue
        if _bypass(view, node):
            log.append(f"removed {node.op_type} '{node.name}'")
            removed += 1
    view.commit()
    return removed
