"""Give every node a unique, non-empty name so users can refer to layers by name."""

from __future__ import annotations

import onnx


def name_nodes(model: onnx.ModelProto, log: list[str]) -> int:
    """Name empty or duplicate node names ``<OpType>_<index>``; existing unique names stay.

    The first node holding a name keeps it; later duplicates are renamed. Returns the count.
    """
    nodes = model.graph.node
    taken = {n.name for n in nodes if n.name}
    seen: set[str] = set()
    empty, duplicates = 0, []
    for index, node in enumerate(nodes):
        if node.name and node.name not in seen:
            seen.add(node.name)
            continue
        new = f"{node.op_type}_{index}"
        suffix = 0
        while new in taken:
            suffix += 1
            new = f"{node.op_type}_{index}_{suffix}"
        if node.name:
            duplicates.append(f"renamed duplicate node name '{node.name}' (node {index}) to '{new}'")
        else:
            empty += 1
        node.name = new
        taken.add(new)
        seen.add(new)
    if empty:
        log.append(f"named {empty} unnamed node(s) as <OpType>_<index>")
    log.extend(duplicates)
    return empty + len(duplicates)
