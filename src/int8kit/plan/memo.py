"""A small bounded memo for the planner's caches, and hashable keys from option values.

The planner's caches hold results that do not change between configurations (threshold searches,
quantized weights). Each is a ``Memo``: least-recently-used eviction past ``maxsize`` entries
(so memory stays bounded however many configurations a search tries) and hit/miss counters
(tests and benchmarks read them).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping
from typing import Any, Generic, TypeVar

import numpy as np

V = TypeVar("V")


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
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.maxsize:
                self._data.popitem(last=False)
        return value

    def __len__(self) -> int:
        return len(self._data)

    def clear(self) -> None:
        """Drop every entry and reset the counters."""
        with self._lock:
            self._data.clear()
            self.hits = self.misses = 0


def frozen(value: Any) -> Hashable:
    """A hashable stand-in for an option value: mappings and sequences become sorted/ordered tuples,
    arrays their dtype, shape and bytes (two equal values give equal keys, as ``==`` would)."""
    if isinstance(value, Mapping):
        return ("map",) + tuple(sorted((str(k), frozen(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return ("seq",) + tuple(frozen(v) for v in value)
    if isinstance(value, np.ndarray):
        return ("array", value.dtype.str, value.shape, value.tobytes())
    if isinstance(value, np.generic):
        return value.item()
    hash(value)  # anything else must be hashable as it is (raises TypeError otherwise)
    return value


def read_only(array: np.ndarray | None) -> np.ndarray | None:
    """``array`` marked read-only: cached results are shared by every plan that hits them, so an
    in-place change would silently alter the others; it raises instead."""
    if array is not None and isinstance(array, np.ndarray):
        array.flags.writeable = False
    return array
