"""The test set, read once into arrays and cut into a validation half (the search scores on it)
and a held-out half (only the chosen model is reported on it)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx

from int8kit.data.sources import batches_from, model_input_specs
from int8kit.errors import DataError
from int8kit.evaluate.labels import labels_and_width, label_mismatch, source_class_labels

MIN_SAMPLES = 4  # two per half: below that no score means anything


@dataclass
class Halves:
    """Inputs (name -> array, first axis samples) and labels of both halves."""

    validation: dict[str, np.ndarray]
    held_out: dict[str, np.ndarray]
    validation_labels: np.ndarray | None
    held_out_labels: np.ndarray | None

    @property
    def sizes(self) -> tuple[int, int]:
        return _count(self.validation), _count(self.held_out)


def _count(arrays: dict[str, np.ndarray]) -> int:
    return int(len(next(iter(arrays.values()))))


def split_test_data(model: onnx.ModelProto, data: Any, labels: Any = None, batch_size: int | None = None) -> Halves:
    """Read ``data`` (any form ``batches_from`` takes) and cut it in two: the first half validates,
    the second is held out. ``labels`` (a file or an array; default: the data's own class labels,
    as class folders or an LMDB carry them) are cut the same way."""
    source = batches_from(data, model_input_specs(model), batch_size=batch_size)
    pieces: dict[str, list[np.ndarray]] = {}
    for batch in source:
        for name, value in batch.items():
            pieces.setdefault(name, []).append(np.asarray(value))
    if not pieces:
        raise DataError("the test data yielded no samples; expected at least 4 (half validate, half are held out).")
    arrays = {name: np.concatenate(parts) for name, parts in pieces.items()}
    n = _count(arrays)
    if n < MIN_SAMPLES:
        raise DataError(f"the test data has {n} samples; expected at least {MIN_SAMPLES} (half validate the search, "
                        "half are held out for the report); pass more test samples.")
    if labels is not None:
        labels = labels_and_width(labels)[0]
    else:
        labels = source_class_labels(source)
    if labels is not None and len(labels) != n:
        raise label_mismatch(len(labels), n)
    half = n // 2  # a model with a fixed batch keeps whole batches in each half
    fixed = next((s.batch_dim for s in model_input_specs(model) if s.batch_dim), None)
    if fixed:
        half = max(fixed, half // fixed * fixed)
    cut = lambda a, part: a[:half] if part == 0 else a[half:]  # noqa: E731
    return Halves({k: cut(v, 0) for k, v in arrays.items()}, {k: cut(v, 1) for k, v in arrays.items()},
                  None if labels is None else cut(labels, 0), None if labels is None else cut(labels, 1))
