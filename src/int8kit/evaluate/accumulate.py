"""The one error accumulator: how far a tensor of one model is from the same tensor of a reference.

Every comparison in int8kit folds batches into an ``ErrorAccumulator``: the output metrics of
``eval``, the per-layer analysis, the report and ``convert --compare``. Memory is a few floats per
tensor; every batch is reduced at once. ``docs/metrics.md`` defines each number.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from int8kit.evaluate.metrics import as_pair, as_rows, cosines_from_sums


@dataclass(frozen=True)
class ErrorStats:
    """The error of one tensor over every sample folded in."""

    samples: int
    cosine: float  # mean over samples of each sample's cosine similarity
    min_cosine: float  # the lowest per-sample cosine
    relative_error: float  # ||got - ref|| / ||ref|| over all samples (inf: ref all zero, got not)
    max_abs_error: float  # max |got - ref|
    sqnr_db: float  # 10 log10(||ref||^2 / ||got - ref||^2); inf when equal
    ref_max_abs: float  # max |ref| (the scale ``convert --compare``'s tolerance is relative to)

    @property
    def peak_relative_error(self) -> float:
        """``max_abs_error / ref_max_abs``: the largest error relative to the largest reference value."""
        return self.max_abs_error / self.ref_max_abs if self.ref_max_abs > 0 else self.max_abs_error


class ErrorAccumulator:
    """Running sums of one tensor's errors, batch by batch (first axis = samples).

    ``domain`` (lo, hi) clips both sides first: a tensor whose every reader is flat outside it is
    compared as the readers see it.
    """

    def __init__(self, domain: tuple[float, float] | None = None) -> None:
        self.domain = domain
        self.samples = 0
        self.cos_sum = 0.0
        self.cos_min = math.inf
        self.err_sq = 0.0
        self.ref_sq = 0.0
        self.max_abs = 0.0
        self.ref_max = 0.0

    def add(self, ref: np.ndarray, got: np.ndarray) -> int:
        """Fold one batch in (same shapes; checked by the caller); returns its samples."""
        a, b = as_pair(ref, got)
        if self.domain is not None:
            a, b = np.clip(a, *self.domain), np.clip(b, *self.domain)
        a, b = as_rows(a, b)
        if not len(a):
            return 0
        d = a - b
        na = np.einsum("ij,ij->i", a, a)
        cos = cosines_from_sums(np.einsum("ij,ij->i", a, b), na, np.einsum("ij,ij->i", b, b))
        self.cos_sum += float(cos.sum())
        self.cos_min = min(self.cos_min, float(cos.min()))
        self.err_sq += float(np.einsum("ij,ij->", d, d))
        self.ref_sq += float(na.sum())
        if d.size:  # in place and without |a|: no more float64 copies of a large tensor than needed
            self.max_abs = max(self.max_abs, float(np.abs(d, out=d).max()))
            self.ref_max = max(self.ref_max, float(a.max()), -float(a.min()))
        self.samples += len(a)
        return len(a)

    def result(self) -> ErrorStats:
        """The metrics so far (NaN cosines before any sample)."""
        n = self.samples
        return ErrorStats(
            samples=n,
            cosine=self.cos_sum / n if n else math.nan,
            min_cosine=self.cos_min if n else math.nan,
            relative_error=relative_error(self.err_sq, self.ref_sq),
            max_abs_error=self.max_abs,
            sqnr_db=sqnr_db(self.err_sq, self.ref_sq),
            ref_max_abs=self.ref_max,
        )


def relative_error(err_sq: float, ref_sq: float) -> float:
    """``sqrt(err_sq / ref_sq)``; 0 when both are 0, inf when only the reference is 0."""
    if ref_sq > 0:
        return math.sqrt(err_sq / ref_sq)
    return 0.0 if err_sq == 0 else math.inf


def sqnr_db(err_sq: float, ref_sq: float) -> float:
    """Signal-to-quantization-noise ratio in dB; inf without error, -inf for noise on a zero signal."""
    if err_sq == 0:
        return math.inf
    if ref_sq == 0:
        return -math.inf
    return 10.0 * math.log10(ref_sq / err_sq)
