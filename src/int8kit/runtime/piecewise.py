"""Run a model a few nodes at a time over fixed batches, keeping only the tensors still to be read.

For steps that change the model as they go (bias tuning): rerunning the whole model after every
change costs one model pass per change, running it piecewise about one pass in all. Each piece
is its own small onnxruntime session; a piece can replace initializers, and what it computes is
kept only once the caller commits it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import onnx
from onnx import helper, numpy_helper

from int8kit.graph.graphview import node_inputs
from int8kit.runtime.session import make_session

Values = dict[str, list[np.ndarray]]  # tensor name -> one array per batch


class PiecewiseRun:
    """One pass over ``model`` on ``batches``, run in pieces the caller chooses in graph order."""

    def __init__(self, model: onnx.ModelProto, batches: Sequence[Mapping[str, np.ndarray]]) -> None:
        self._model = model
        self._nodes = list(model.graph.node)
        self._inits = {t.name: t for t in model.graph.initializer}
        self._producer = {o: i for i, n in enumerate(self._nodes) for o in n.output if o}
        self._reads = [set(node_inputs(n)) for n in self._nodes]
        self._pending_reads = Counter(name for reads in self._reads for name in reads)
        self._done: set[int] = set()
        self._batches = len(batches)
        self._values: Values = {name: [b[name] for b in batches] for name in batches[0]} if batches else {}

    @property
    def held(self) -> set[str]:
        """Names of the tensors kept for pieces still to run."""
        return set(self._values)

    def pending_for(self, names: Iterable[str]) -> list[int]:
        """Indices of the nodes not yet run that producing ``names`` needs, in graph order."""
        needed: set[int] = set()
        stack = [self._producer[n] for n in names if n in self._producer]
        while stack:
            index = stack.pop()
            if index in self._done or index in needed:
                continue
            needed.add(index)
            stack.extend(self._producer[r] for r in self._reads[index] if r in self._producer)
        return sorted(needed)

    def run(self, indices: Sequence[int], *, fetch: Sequence[str] = (),
            initializers: Mapping[str, np.ndarray] | None = None) -> Values:
        """Run nodes ``indices`` on every batch; return what later nodes read, and ``fetch``.

        ``initializers`` replace the model's for this run only. Nothing is kept until ``commit``.
        """
        nodes = [self._nodes[i] for i in sorted(indices)]
        inside = Counter(name for i in indices for name in self._reads[i])
        produced = [o for n in nodes for o in n.output if o]
        wanted = [o for o in produced if self._pending_reads[o] > inside[o] or o in fetch]
        if not wanted:
            return {}
        reads = set(inside) - set(produced)
        feeds = sorted(r for r in reads if r in self._values)
        replaced = dict(initializers or {})
        inits = [numpy_helper.from_array(replaced[r], r) if r in replaced else self._inits[r]
                 for r in sorted(reads - set(feeds)) if r in self._inits]
        graph = helper.make_graph(
            nodes, "piece",
            [helper.make_tensor_value_info(f, helper.np_dtype_to_tensor_dtype(self._values[f][0].dtype), None)
             for f in feeds],
            [onnx.ValueInfoProto(name=w) for w in wanted], inits)
        piece = helper.make_model(graph, opset_imports=self._model.opset_import, ir_version=self._model.ir_version)
        piece.functions.extend(self._model.functions)
        session = make_session(piece)
        out: Values = {w: [] for w in wanted}
        for b in range(self._batches):
            for w, value in zip(wanted, session.run(wanted, {f: self._values[f][b] for f in feeds})):
                out[w].append(value)
        return out

    def commit(self, indices: Sequence[int], produced: Values) -> None:
        """Mark nodes ``indices`` as run with outputs ``produced``; forget tensors nobody reads any more."""
        self._done.update(indices)
        for i in indices:
            self._pending_reads.subtract(self._reads[i])
        self._values.update(produced)
        for name in [n for n in self._values if self._pending_reads[n] <= 0]:
            del self._values[name]
