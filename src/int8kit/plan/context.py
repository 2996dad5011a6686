"""What stays the same while one model is re-planned from one set of statistics, kept between plans.

``plan()`` is called many times with the same model and statistics and a slightly different
configuration (the automatic search, overrides tried one by one). A ``PlanContext`` holds, for one
(model, statistics) pair, the graph facts and three bounded memos of results that depend on the
configuration only through their keys:

- ``ranges``: threshold searches, per (histogram, method, parameters, target);
- ``weights``: quantized weights and INT32 biases, per (layer, granularity, what the input's
  scale and channel steps are, bias correction);
- ``steps``: per-channel activation steps, per (tensor, its range and grid, gain limit).

Every key holds everything the result is computed from, so a changed override or option finds
other keys and never a stale result. Contexts are found by the identity of the model and of the
statistics (they are held, so an id cannot be reused while its context lives), at most
``MAX_CONTEXTS`` of them, least recently used dropped first. The model and statistics are
treated as values: after changing either in place, call ``clear_plan_caches()`` (a change in the
number of nodes, initializers or tensors is noticed on its own).
"""

from __future__ import annotations

from collections.abc import Hashable

import numpy as np
import onnx
from onnx import numpy_helper

from int8kit.calib.histogram import Histogram
from int8kit.calib.stats import Stats
from int8kit.graph.model_memo import IdentityLRU, Memo, clear_model_memo, model_token, per_model
from int8kit.plan.graph_facts import GraphFacts
from int8kit.plan.memo import frozen
from int8kit.thresholds import Target, compute_range

MAX_CONTEXTS = 2  # a search re-plans one model; each context holds its model, statistics and int8 weights
# Entries per memo: generous for a search (tensors x methods tried), bounded for memory.
_RANGE_ENTRIES_PER_TENSOR = 16
_WEIGHT_ENTRIES_PER_LAYER = 4


class PlanContext:
    """Graph facts and memos for one (model, statistics) pair; see the module docstring."""

    def __init__(self, model: onnx.ModelProto, stats: Stats) -> None:
        self.model = model
        self.stats = stats
        self.facts = per_model(model, "graph facts", GraphFacts.of)  # shared by contexts of other statistics
        tensors = max(len(stats.tensors), 1)
        self.ranges: Memo[tuple[Histogram, tuple[float, float]]] = Memo(_RANGE_ENTRIES_PER_TENSOR * tensors)
        self.weights: Memo[tuple] = Memo(_WEIGHT_ENTRIES_PER_LAYER * max(len(self.facts.nodes), 1))
        self.steps: Memo[tuple[int, np.ndarray]] = Memo(_RANGE_ENTRIES_PER_TENSOR * tensors)
        self.warned: set[str] = set()  # warnings already logged: a search re-plans 100 times

    def range(self, method: str, hist: Histogram, target: Target, **params: object) -> tuple[float, float]:
        """``compute_range`` memoized per (histogram, method, parameters, target).

        The histogram is keyed by identity and held in the entry, so its id cannot be reused."""
        key = (id(hist), method, frozen(params), target.bits, target.symmetric)
        held, result = self.ranges.get(key, lambda: (hist, compute_range(method, hist, target, **params)))
        if held is not hist:  # unreachable while the entry holds ``hist``; kept as a guard
            raise RuntimeError("plan cache: histogram identity mismatch")
        return result

    def weight_array(self, name: str) -> np.ndarray:
        """Initializer ``name`` as float32. Not kept: only layers whose quantization misses the
        memo read it, and a float copy of every weight would double the model in memory."""
        return numpy_helper.to_array(self.facts.initializers[name]).astype(np.float32)

    def cache_info(self) -> dict[str, tuple[int, int, int]]:
        """(hits, misses, entries) of each memo."""
        return {name: (m.hits, m.misses, len(m)) for name, m in (("ranges", self.ranges), ("weights", self.weights),
                                                                    ("steps", self.steps))}


def _token(model: onnx.ModelProto, stats: Stats) -> Hashable:
    """Cheap fingerprint of what a context was built from: catches nodes, initializers or
    statistics added or removed in place (not values edited in place: see the module docstring)."""
    return model_token(model), id(stats.tensors), len(stats.tensors), stats.bins, stats.samples


_CONTEXTS = IdentityLRU(MAX_CONTEXTS)


def context_for(model: onnx.ModelProto, stats: Stats) -> PlanContext:
    """The context of (``model``, ``stats``), made on first use."""
    return _CONTEXTS.get((model, stats), "plan context", _token(model, stats), lambda: PlanContext(model, stats))


def clear_plan_caches() -> None:
    """Forget every context and per-model result (and release the models and statistics they hold)."""
    _CONTEXTS.clear()
    clear_model_memo()
