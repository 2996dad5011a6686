"""Hashable keys from option values, and read-only arrays, for the planner's caches.

The caches themselves are ``Memo``s (``graph/model_memo.py``): least-recently-used eviction past
``maxsize`` entries (memory stays bounded however many configurations a search tries) and
hit/miss counters (tests and benchmarks read them).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np


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
