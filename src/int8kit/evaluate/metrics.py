"""Pure metric functions on numpy arrays: accuracy against labels and FP32-vs-INT8 similarity.

All functions take the batch axis first. ``docs/metrics.md`` defines every metric; streaming
sums over many batches live in ``evaluate.accumulate``.
"""

from __future__ import annotations

import numpy as np

from int8kit.errors import DataError


def as_pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cast two outputs to float64 and check they have the same shape."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise DataError(
            f"outputs to compare have shapes {a.shape} and {b.shape}; expected equal shapes; "
            "compare the same output of two models run on the same data."
        )
    return a, b


def as_rows(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both arrays as (samples, values): a scalar is one sample of one value."""
    if a.ndim == 0:
        return a.reshape(1, 1), b.reshape(1, 1)
    width = int(np.prod(a.shape[1:], dtype=np.int64))
    return a.reshape(len(a), width), b.reshape(len(b), width)


def topk_accuracy(scores: np.ndarray, labels: np.ndarray, k: int = 1) -> float:
    """Fraction of samples whose label is among the ``k`` highest scores.

    ``scores`` is (N, C) class scores, ``labels`` is (N,) integer class indices. ``k`` larger than
    C counts every sample as correct. Ties are broken by ``np.argpartition`` order.
    """
    scores = np.asarray(scores)
    labels = np.asarray(labels).reshape(-1)
    if scores.ndim != 2:
        raise DataError(
            f"scores have shape {scores.shape}; expected (samples, classes) for top-k accuracy; "
            "pick a class-score output."
        )
    if len(labels) != len(scores):
        raise DataError(
            f"labels have {len(labels)} entries but scores have {len(scores)} samples; expected one "
            "label per sample; pass the labels that belong to this data."
        )
    if k < 1:
        raise DataError(f"top-k got k={k}; expected k >= 1; pass a positive k.")
    if len(labels) == 0:
        return float("nan")
    return float(np.mean(topk_hits(scores, labels, k)))


def topk_hits(scores: np.ndarray, labels: np.ndarray, k: int = 1) -> np.ndarray:
    """Per sample, whether its label is among the ``k`` highest of its (N, C) ``scores`` (the
    per-sample form of ``topk_accuracy``; shapes checked by the caller)."""
    k = min(k, scores.shape[1])
    # argpartition puts the k largest in the last k columns without a full sort.
    top = np.argpartition(scores, -k, axis=1)[:, -k:]
    return np.any(top == np.asarray(labels).reshape(-1)[:, None], axis=1)


def top1_agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Fraction of samples where two (N, C) score arrays pick the same class."""
    a, b = as_pair(a, b)
    if a.ndim != 2:
        raise DataError(
            f"scores have shape {a.shape}; expected (samples, classes) for top-1 agreement; "
            "pick a class-score output."
        )
    if len(a) == 0:
        return float("nan")
    return float(np.mean(a.argmax(axis=1) == b.argmax(axis=1)))


def sample_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of each sample's flattened values (first axis = samples).

    A scalar or 0-d output counts as one sample. Where both vectors are all zeros the cosine is 1
    (identical); where exactly one is, 0 (nothing in common).
    """
    a, b = as_rows(*as_pair(a, b))
    return cosines_from_sums(np.einsum("ij,ij->i", a, b), np.einsum("ij,ij->i", a, a), np.einsum("ij,ij->i", b, b))


def cosines_from_sums(dot: np.ndarray, a_sq: np.ndarray, b_sq: np.ndarray) -> np.ndarray:
    """Per-sample cosines from per-sample ``a·b``, ``‖a‖²``, ``‖b‖²`` (the one definition: both all
    zero -> 1, exactly one all zero -> 0, clipped to [-1, 1])."""
    denom = np.sqrt(a_sq * b_sq)
    cos = np.where(denom > 0, dot / np.where(denom > 0, denom, 1.0), np.where((a_sq > 0) | (b_sq > 0), 0.0, 1.0))
    return np.clip(cos, -1.0, 1.0)


def mean_cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Mean over samples of ``sample_cosines`` (NaN for empty arrays)."""
    cos = sample_cosines(a, b)
    return float(np.mean(cos)) if cos.size and np.size(a) else float("nan")


def max_abs_error(a: np.ndarray, b: np.ndarray) -> float:
    """Largest absolute element-wise difference between two outputs (0 for empty arrays)."""
    a, b = as_pair(a, b)
    if a.size == 0:
        return 0.0
    return float(np.max(np.abs(a - b)))
