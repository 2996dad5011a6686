"""A plain listing of a model's layers, so users know the names the per-layer options take."""

from __future__ import annotations

import os

from tabulate import tabulate

from int8kit.graph.io import load_model


def describe(path: str | os.PathLike) -> str:
    """One row per node: name, op type, inputs, outputs."""
    model = load_model(path)
    inits = {t.name for t in model.graph.initializer}
    rows = [
        (n.name or "(unnamed)", n.op_type, ", ".join(i for i in n.input if i and i not in inits), ", ".join(n.output))
        for n in model.graph.node
    ]
    return tabulate(rows, headers=["layer", "op", "activation inputs", "outputs"])
