"""Fold per-channel ``Mul``/``Add`` (Caffe Scale and Bias layers) into the linear op before them."""

from __future__ import annotations

import logging
from collections.abc import Collection

import numpy as np
import onnx

from int8kit.graph.graphview import GraphView
from int8kit.graph.passes.linear import LinearUnit, channel_vector, find_unit, fold_unless_blocked

logger = logging.getLogger(__name__)

_OPS = ("Mul", "Add", "Sub", "Div")


def _affine_of(view: GraphView, node: onnx.NodeProto) -> tuple[LinearUnit, np.ndarray | None, np.ndarray | None] | None:
    """The unit before ``node`` and ``node`` as per-channel (scale, shift), when legal."""
    if len(node.input) != 2:
        return None
    # Sub and Div only fold with the constant second: y - c, y / c.
    sides = (0, 1) if node.op_type in ("Mul", "Add") else (0,)
    for k in sides:
        act, const = node.input[k], node.input[1 - k]
        c = view.get_array(const)
        if c is None or act == const or c.dtype.kind != "f":
            continue
        unit = find_unit(view, act)
        if unit is None:
            continue
        if unit.kind == "MatMul" and unit.bias_add is None and node.op_type in ("Add", "Sub"):
            continue  # MatMul + Add(constant) is already the canonical biased MatMul
        vec = channel_vector(c, unit.channels, unit.channel_axis, unit.out_rank)
        if vec is None:
            continue
        if node.op_type == "Mul":
            return unit, vec, None
        if node.op_type == "Div":
            return (unit, 1.0 / vec, None) if np.all(vec != 0) else None
        return unit, None, (vec if node.op_type == "Add" else -vec)
    return None


def fuse_affine(model: onnx.ModelProto, log: list[str], no_fuse: Collection[str] = ()) -> int:
    """Fold constant per-channel Mul/Add/Sub/Div into a preceding linear op; returns the count.

    Runs until nothing changes, so ``Conv -> Mul -> Add`` folds both layers.
    """
    total = 0
    while True:
        view = GraphView(model.graph)
        folded = 0
        for node in view.nodes_of_type(*_OPS):
            found = _affine_of(view, node)
            if found is None:
                continue
            unit, scale, shift = found
            folded += fold_unless_blocked(view, unit, node, scale, shift, no_fuse, log)
        view.commit()
        total += folded
        if folded == 0:
            return total
