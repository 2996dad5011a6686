"""Results computed from one ModelProto (or a few objects), kept while the same objects come back.

Re-planning and re-emitting use one model many times (the automatic search, overrides tried one
by one); what depends only on the model (its graph facts, its opset-converted copy) is computed
once. Entries are found by the identity of their objects and hold them, so an id cannot be
reused while its entry lives; a cheap token notices nodes, initializers, inputs or outputs added
or removed in place. Values edited in place are not noticed: call ``clear_model_memo()`` after
that. Each store is bounded, least recently used dropped first.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

import onnx

T = TypeVar("T")
MAX_ENTRIES = 4  # e.g. graph facts and the opset-13 copy of two models


class IdentityLRU:
    """Values per (objects, key), the objects compared by identity and held; at most ``maxsize``."""

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self._entries: OrderedDict[tuple, tuple[tuple[object, ...], Hashable, Any]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, owners: tuple[object, ...], key: Hashable, token: Hashable, compute: Callable[[], T]) -> T:
        """The value stored for ``owners`` and ``key`` while ``token`` is unchanged; else ``compute()``."""
        slot = (tuple(id(o) for o in owners), key)
        with self._lock:
            entry = self._entries.get(slot)
            if entry is not None and all(a is b for a, b in zip(entry[0], owners)) and entry[1] == token:
                self._entries.move_to_end(slot)
                return entry[2]
        value = compute()
        with self._lock:
            self._entries[slot] = (owners, token, value)
            self._entries.move_to_end(slot)
            while len(self._entries) > self.maxsize:
                self._entries.popitem(last=False)
        return value

    def clear(self) -> None:
        """Forget every entry (and release the objects they hold)."""
        with self._lock:
            self._entries.clear()


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
