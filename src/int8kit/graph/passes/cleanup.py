"""Remove nodes whose results never reach a graph output, and initializers nobody reads."""

from __future__ import annotations

import onnx

from int8kit.graph.graphview import GraphView, node_inputs


def remove_dead(model: onnx.ModelProto, log: list[str]) -> int:
    """Drop dead nodes and unused initializers; returns how many things were removed.

    Initializers that are also graph inputs are kept: removing them would change the
    model's interface (the input would become required).
    """
    view = GraphView(model.graph)
    needed = set(view.output_names)
    dead = []
    for node in reversed(view.nodes):
        if any(o in needed for o in node.output if o):
            needed.update(node_inputs(node))
        else:
            dead.append(node)
    dead_names = [n.name or n.op_type for n in dead]
    for node in dead:
        view.remove_node(node)
    view.commit()
    unused = [name for name in view.initializers if name not in needed and name not in view.input_names]
    view.remove_initializers(unused)
    if dead:
        shown = ", ".join(f"'{n}'" for n in dead_names[:8]) + (" ..." if len(dead) > 8 else "")
        log.append(f"removed {len(dead)} dead node(s): {shown}")
    if unused:
        log.append(f"removed {len(unused)} unused initializer(s)")
    return len(dead) + len(unused)
