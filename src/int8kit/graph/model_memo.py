"""Results computed from one ModelProto, kept while the same object comes back.

Re-planning and re-emitting use one model many times (the automatic search, overrides tried one
by one); what depends only on the model (its graph facts, its opset-converted copy) is computed
once. Entries are found by the model's identity and hold the model, so its id cannot be reused
while they live; a cheap token notices nodes, initializers, inputs or outputs added or removed in
place. Values edited in place are not noticed: call ``clear_model_memo()`` after that. At most
``MAX_ENTRIES`` entries, least recently used dropped first.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

import onnx

T = TypeVar("T")
MAX_ENTRIES = 4  # e.g. graph facts and the opset-13 copy of two models

_ENTRIES: OrderedDict[tuple[int, str], tuple[onnx.ModelProto, Hashable, Any]] = OrderedDict()
_LOCK = threading.Lock()


def model_token(model: onnx.ModelProto) -> Hashable:
    """Cheap fingerprint of a model's structure (counts, not contents: hashing the weights of
    EfficientNet-Lite0 would cost more than a whole re-plan)."""
    g = model.graph
    opsets = tuple((o.domain, o.version) for o in model.opset_import)
    return len(g.node), len(g.initializer), len(g.input), len(g.output), opsets


def per_model(model: onnx.ModelProto, what: str, compute: Callable[[onnx.ModelProto], T]) -> T:
    """``compute(model)``, computed once per model object and ``what``; treat the value as read-only."""
    key, token = (id(model), what), model_token(model)
    with _LOCK:
        entry = _ENTRIES.get(key)
        if entry is not None and entry[0] is model and entry[1] == token:
            _ENTRIES.move_to_end(key)
            return entry[2]
    value = compute(model)
    with _LOCK:
        _ENTRIES[key] = (model, token, value)
        _ENTRIES.move_to_end(key)
        while len(_ENTRIES) > MAX_ENTRIES:
            _ENTRIES.popitem(last=False)
    return value


def clear_model_memo() -> None:
    """Forget every entry (and release the models they hold)."""
    with _LOCK:
        _ENTRIES.clear()
