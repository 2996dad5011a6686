"""Calibration and test data: arrays, sample sources (image folders, LMDB, Caffe Data layers) and LMDB writing."""

from __future__ import annotations

from typing import Any

__all__ = ["LmdbWriter"]


def __getattr__(name: str) -> Any:
    # lazy: importing int8kit.data (every calibration does) must not need the lmdb package
    if name == "LmdbWriter":
        from int8kit.data.lmdb_store import LmdbWriter

        return LmdbWriter
    raise AttributeError(f"module 'int8kit.data' has no attribute {name!r}")
