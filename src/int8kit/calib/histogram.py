"""The histogram every threshold method reads, and that calibration keeps per tensor.

A ``Histogram`` covers the symmetric range ``[-edge, edge]`` with ``2 * bins`` equal bins
(``bins`` per side). ``edge`` is always a power of two: when a batch exceeds it, the range doubles
and pairs of bins merge, which is exact. Because every edge is a power of two, two histograms of
the same tensor can always be brought to a common edge and summed, so statistics collected on
disjoint halves of the data merge to exactly the single-pass result.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Histogram:
    """Signed histogram of one tensor's values.

    Bin ``i`` covers ``[-edge + i * width, -edge + (i + 1) * width)`` with ``width = edge / bins``.
    ``min``/``max`` are the exact extremes seen; ``count`` the number of values.
    """

    counts: np.ndarray  # int64, shape (2 * bins,)
    edge: float
    min: float
    max: float

    @property
    def bins(self) -> int:
        """Bins per side (the user's ``--th-binnum``)."""
        return self.counts.size // 2

    @property
    def width(self) -> float:
        return self.edge / self.bins

    @property
    def count(self) -> int:
        return int(self.counts.sum())

    @property
    def absmax(self) -> float:
        return max(abs(self.min), abs(self.max))

    def abs_counts(self) -> np.ndarray:
        """Histogram of ``|x|`` over ``[0, edge]`` with ``bins`` bins (what TensorRT's entropy method reads)."""
        n = self.bins
        return self.counts[n:] + self.counts[:n][::-1]

    def centers(self) -> np.ndarray:
        """Centre of every signed bin."""
        return -self.edge + (np.arange(self.counts.size) + 0.5) * self.width

    def abs_centers(self) -> np.ndarray:
        """Centre of every ``|x|`` bin."""
        return (np.arange(self.bins) + 0.5) * self.width

    def coarsened(self, bins: int) -> "Histogram":
        """The same histogram with ``bins`` per side (a divisor of ``self.bins``): neighbouring bins
        summed over the same edge, exactly what calibrating with ``bins`` would have counted."""
        factor = self.bins // bins
        return Histogram(self.counts.reshape(2 * bins, factor).sum(axis=1), self.edge, self.min, self.max)

    @classmethod
    def from_values(cls, values: np.ndarray, bins: int = 2048) -> "Histogram":
        """Build a histogram directly from an array (tests and small inputs)."""
        values = np.asarray(values, dtype=np.float64).ravel()
        absmax = float(np.abs(values).max()) if values.size else 0.0
        edge = edge_for(absmax)
        idx = np.floor((values + edge) / (edge / bins)).astype(np.int64)
        np.clip(idx, 0, 2 * bins - 1, out=idx)
        counts = np.bincount(idx, minlength=2 * bins).astype(np.int64)
        return cls(counts=counts, edge=edge, min=float(values.min()), max=float(values.max()))


def edge_for(absmax: float) -> float:
    """Smallest power of two that is >= ``absmax`` (and > 0)."""
    if not np.isfinite(absmax):
        raise ValueError(f"cannot histogram a non-finite range ({absmax})")
    if absmax <= 0.0:
        return 2.0**-126
    return float(2.0 ** np.ceil(np.log2(absmax)))
