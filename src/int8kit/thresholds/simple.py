"""Range methods that read the histogram directly: ``max`` and ``percentile``.

``max`` keeps every observed value: ``T = max|x|`` (symmetric) or ``(min, max)`` widened to
contain 0 (asymmetric). It never clips and wastes levels when there are outliers.

``percentile`` drops a fixed share of the largest magnitudes: ``T`` is the ``percentile``-th
percentile of ``|x|`` (symmetric targets). For asymmetric targets each tail is cut separately:
``lo`` is the ``100 - percentile``-th and ``hi`` the ``percentile``-th percentile of ``x``, so
``percentile=99.99`` drops 0.01 % of the values at each end. Inside a bin the cumulative count is
interpolated linearly, so the result is exact to well below one bin width.
"""

from __future__ import annotations

import numpy as np

from int8kit.calib.histogram import Histogram
from int8kit.errors import ConfigError
from int8kit.thresholds.base import Target, finish, register


def quantile(counts: np.ndarray, start: float, width: float, q: float) -> float:
    """Value below which a share ``q`` (0..1) of the histogram's mass lies (linear inside bins)."""
    cum = np.cumsum(counts, dtype=np.float64)
    total = cum[-1]
    if total <= 0.0:
        return start
    target = min(max(q, 0.0), 1.0) * total
    idx = int(np.searchsorted(cum, target, side="left"))
    idx = min(idx, counts.size - 1)
    before = cum[idx - 1] if idx > 0 else 0.0
    frac = (target - before) / counts[idx] if counts[idx] > 0 else 0.0
    return float(start + (idx + frac) * width)


@register("max", aliases=("minmax", "min_max", "absmax"))
def max_(hist: Histogram, target: Target) -> tuple[float, float]:
    """The observed extremes (widened to include 0)."""
    return finish(min(hist.min, 0.0), max(hist.max, 0.0), hist, target)


@register("percentile", aliases=("pct",))
def percentile(hist: Histogram, target: Target, *, percentile: float = 99.99) -> tuple[float, float]:
    """Clip at the ``percentile``-th percentile (in percent, 0 < p <= 100) of ``|x|`` or of each tail."""
    p = _check_percent(percentile)
    if target.symmetric:
        t = quantile(hist.abs_counts(), 0.0, hist.width, p / 100.0)
        return finish(0.0, min(t, hist.absmax), hist, target)
    counts = hist.counts
    lo = quantile(counts, -hist.edge, hist.width, 1.0 - p / 100.0)
    hi = quantile(counts, -hist.edge, hist.width, p / 100.0)
    return finish(max(lo, hist.min), min(hi, hist.max), hist, target)


def _check_percent(value: object) -> float:
    try:
        p = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        p = float("nan")
    if not 0.0 < p <= 100.0:
        raise ConfigError(
            f"percentile must be a number in (0, 100] (in percent), got {value!r}; "
            "use e.g. percentile=99.99."
        )
    return p
