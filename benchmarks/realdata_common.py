"""Shared helpers for the real-model fixtures: cache location, atomic writes, dataset cases."""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np


def cache_dir() -> Path:
    """Directory holding exported models and generated datasets (never inside the repo)."""
    root = os.environ.get("INT8KIT_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "int8kit")
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def atomic_write(path: Path, writer: Callable[[Path], None]) -> Path:
    """Call ``writer(tmp)`` then rename tmp to ``path`` so readers never see half-written files.

    The temp file keeps ``path``'s suffix because np.savez and onnx choose behaviour by it.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
    os.close(fd)
    try:
        writer(Path(tmp))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def save_npz(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    """Save ``arrays`` (keyed by model input name) as an uncompressed .npz, atomically."""
    return atomic_write(path, lambda tmp: np.savez(tmp, **arrays))


def cached_splits(name: str, splits: list[tuple[str, int, int]], make: Callable[[int, int], dict[str, np.ndarray]]) -> dict[str, Path]:
    """The ``<name>_<split>_n<n>_s<seed>.npz`` of each ``(split, n, seed)`` in the cache, made by
    ``make(n, seed)`` (arrays keyed by model input name) when it is not there yet."""
    paths = {}
    for split, n, seed in splits:
        path = cache_dir() / f"{name}_{split}_n{n}_s{seed}.npz"
        if not path.exists():
            save_npz(path, make(n, seed))
        paths[split] = path
    return paths


def save_npy(path: Path, array: np.ndarray) -> Path:
    """Save one array as .npy, atomically."""
    return atomic_write(path, lambda tmp: np.save(tmp, array))


@dataclass(frozen=True)
class Case:
    """One benchmark/e2e case: FP32 model, calibration and test inputs, optional labels.

    ``kind`` tells the evaluator which metric is meaningful: "classify" (top-1 agreement),
    "labels" (accuracy against ``labels``) or "embedding" (mask-aware mean-pooled cosine).
    """

    name: str
    model_path: Path
    calib_npz: Path
    test_npz: Path
    labels: Path | None
    kind: str

    def as_tuple(self) -> tuple[Path, Path, Path, Path | None]:
        """(model_path, calib_npz, test_npz, labels) as the e2e fixtures hand them out."""
        return self.model_path, self.calib_npz, self.test_npz, self.labels
