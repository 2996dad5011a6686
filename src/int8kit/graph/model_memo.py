"""Results computed from one ModelProto (or a few objects), kept while the same objects come back.

Re-planning and re-emitting use one model many times (the automatic search, overrides tried one
by one); what depends only on the model (its graph facts, its opset-converted copy) is computed
once. Entries are found by the identity of their objects and hold them, so an id cannot be
reused while its entry lives; a cheap token notices nodes, initializers, inputs or outputs added
or removed in place. Values edited in place are not noticed: call ``clear_model_memo()`` after
that. Each store is bounded, least recently used dropped first (``Memo``, which the planner's
caches use too).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any, Generic, TypeVar

import onnx

T = TypeVar("T")
V = TypeVar("V")
MAX_ENTRIES = 4  # e.g. graph facts and the opset-13 copy of two models


class Memo(Generic[V]):
    """Bounded least-recently-used memo with hit and miss counters; safe across threads."""

    def __init__(self, maxsize: int) -> None:
        if maxsize < 1:
            raise ValueError(f"a Memo needs room for at least one entry, got maxsize={maxsize}")
        self.maxsize = maxsize
        self.hits = 0
        self.misses = 0
        self._data: OrderedDict[Hashable, V] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable, compute: Callable[[], V]) -> V:
        """The value stored under ``key``; on a miss ``compute()`` it and store it."""
        with self._lock:
            if key in self._data:
                self._data.move_to_end(key)
                self.hits += 1
                return self._data[key]
            self.misses += 1
        value = compute()  # outside the lock: a slow search must not block other threads' hits
        self.put(key, value)
        return value

    def peek(self, key: Hashable) -> V | None:
        """The value under ``key`` (marked as recently used), or ``None``; counts nothing."""
        with self._lock:
            if key in self._data:
                self._data.move_to_end(key)
                return self._data[key]
        return None

    def put(self, key: Hashable, value: V) -> None:
        """Store ``value`` under ``key``, dropping the least recently used past ``maxsize``."""
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.maxsize:
                self._data.popitem(last=False)

    def __len__(self) -> int:
        return len(self._data)

    def clear(self) -> None:
        """Drop every entry and reset the counters."""
        with self._lock:
            self._data.clear()
            self.hits = self.misses = 0


class IdentityLRU:
    """Values per (objects, key), the objects compared by identity and held; at most ``maxsize``."""

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self._memo: Memo[tuple[tuple[object, ...], Hashable, Any]] = Memo(maxsize)

    def get(self, owners: tuple[object, ...], key: Hashable, token: Hashable, compute: Callable[[], T]) -> T:
        """The value stored for ``owners`` and ``key`` while ``token`` is unchanged; else ``compute()``."""
        slot = (tuple(id(o) for o in owners), key)
        entry = self._memo.peek(slot)
        if entry is not None and all(a is b for a, b in zip(entry[0], owners)) and entry[1] == token:
            return entry[2]
        value = compute()
        self._memo.put(slot, (owners, token, value))
        return value

    def clear(self) -> None:
        """Forget every entry (and release the objects they hold)."""
        self._memo.clear()


_MODELS = IdentityLRU(MAX_ENTRIES)


def model_token(model: onnx.ModelProto) -> Hashable:
    """Cheap fingerprint of a model's structure (counts, not contents: hashing the weights of
    EfficientNet-Lite0 would cost more than a whole re-plan)."""
    g = model.graph
    opsets = tuple((o.domain, o.version) for o in model.opset_import)
    return len(g.node), len(g.initializer), len(g.input), len(g.output), opsets


def per_model(model: onnx.ModelProto, what: str, compute: Callable[[onnx.ModelProto], T]) -> T:
    """``compute(model)``, computed once per model object and ``what``; treat the value as read-only."""
    return _MODELS.get((model,), what, model_token(model), lambda: compute(model))


def clear_model_memo() -> None:
    """Forget every per-model result (and release the models they hold)."""
    _MODELS.clear()
