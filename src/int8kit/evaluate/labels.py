"""Labels: class indices for accuracy (arrays, .npy or text files, one-hot rows, the data source), and
task-metric labels of any kind (text, detection boxes) kept as they came."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from int8kit.data.lmdb_format import parse_labels
from int8kit.data.sources import SampleBatches
from int8kit.errors import DataError


def load_labels(labels: np.ndarray | str | os.PathLike) -> np.ndarray:
    """Labels as a 1-D int64 array from an array, a ``.npy`` file or a text file (one per line).

    One-hot (N, C) arrays are reduced to class indices.
    """
    return labels_and_width(labels)[0]


def labels_and_width(labels: np.ndarray | str | os.PathLike) -> tuple[np.ndarray, int | None]:
    """``load_labels`` and the class count of one-hot labels (``None`` for class indices)."""
    if isinstance(labels, (str, os.PathLike)):
        path = Path(labels)
        if not path.is_file():
            what = "is a folder" if path.is_dir() else "does not exist"
            raise DataError(f"labels file '{path}' {what}; expected a .npy or text file; check the path.")
        try:
            arr = np.load(path) if path.suffix == ".npy" else np.loadtxt(path, dtype=np.int64, ndmin=1)
        except Exception as exc:
            raise DataError(
                f"labels file '{path}' cannot be read ({type(exc).__name__}); expected a .npy array "
                "or one integer per line; fix or re-create the file."
            ) from None
    else:
        arr = np.asarray(labels)
    width = None
    if arr.ndim == 2 and arr.shape[1] > 1:
        numeric = np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_
        if not (numeric and np.isin(arr, (0, 1)).all() and (arr.sum(axis=1) == 1).all()):
            raise DataError(f"labels of shape {arr.shape} are not one-hot rows (a single 1 per row, else 0); "
                            "expected class indices of shape (N,) or one-hot (N, classes).")
        arr, width = arr.argmax(axis=1), arr.shape[1]
    arr = arr.reshape(-1)
    if arr.dtype == np.bool_ or not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise DataError(f"labels have dtype {arr.dtype}; expected integer class indices; pass an int array.")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        if not np.all(np.mod(arr, 1) == 0):
            raise DataError(
                f"labels have dtype {arr.dtype} with non-integer values; expected class indices; "
                "pass integer labels."
            )
    return arr.astype(np.int64), width


def source_class_labels(source: Any) -> np.ndarray | None:
    """Class-index labels carried by a sample source (LMDB data.label, class sub-folders), if any."""
    labels = source.labels() if isinstance(source, SampleBatches) else None
    if not labels or not all(isinstance(v, (int, np.integer)) for v in labels):
        return None  # unlabelled, or detection boxes: no top-k accuracy
    return np.asarray(labels, dtype=np.int64)


def label_mismatch(n_labels: int, n_samples: int) -> DataError:
    return DataError(
        f"labels have {n_labels} entries but the data has {n_samples} samples; "
        "expected one label per sample; pass the labels that belong to this data."
    )


def load_task_labels(labels: Any) -> Any:
    """Labels for a task metric, one per sample, kept as they are: an array (first axis = samples;
    e.g. (N, L) padded text indices), a list (e.g. detection boxes per image), a ``.npy`` file,
    a ``.json`` list, or a text file of one label per line (an integer, ``cls,x1,y1,x2,y2;...``
    boxes as in an LMDB's data.label, or else the line's text)."""
    if not isinstance(labels, (str, os.PathLike)):
        return labels if isinstance(labels, (list, tuple)) else np.asarray(labels)
    path = Path(labels)
    if not path.is_file():
        what = "is a folder" if path.is_dir() else "does not exist"
        raise DataError(f"labels file '{path}' {what}; expected a .npy, .json or text file; check the path.")
    try:
        if path.suffix == ".npy":
            return np.load(path, allow_pickle=False)
        if path.suffix == ".json":
            found = json.loads(path.read_text())
            if not isinstance(found, list):
                raise ValueError("not a list")
            return found
        return [_label_line(line, f"labels file '{path}' line {i + 1}") for i, line in enumerate(path.read_text().splitlines())]
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"labels file '{path}' cannot be read ({type(exc).__name__}: {exc}); expected a .npy array, a "
                        ".json list or one label per line; fix or re-create the file.") from None


def _label_line(line: str, where: str) -> Any:
    text = line.strip()
    if not text:
        return []  # an image without boxes (or an empty text)
    if text.lstrip("-").isdigit():
        return int(text)
    if text and all(len(box.split(",")) == 5 for box in text.split(";") if box.strip()):
        return parse_labels(text + "\n", [1], where=where)[1][0]  # one image's boxes, data.label's parser
    return line


def source_labels(source: Any) -> list[Any] | None:
    """Every label a sample source carries, of any kind (class ids, detection boxes), if any."""
    labels = source.labels() if isinstance(source, SampleBatches) else None
    return labels or None


def take(labels: Any, index: np.ndarray) -> Any:
    """The labels of the samples ``index`` (an array's rows, or a list's entries)."""
    if isinstance(labels, np.ndarray):
        return labels[index]
    return [labels[int(i)] for i in index]
