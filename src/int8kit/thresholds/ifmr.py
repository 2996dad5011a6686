"""``ifmr``: Huawei AMCT's IFMR activation calibration, on the histogram.

IFMR starts from a percentile range and scales it. ``max_percentile`` picks the start of the upper
bound: with the values sorted from large to small, the value after the top
``1 - max_percentile`` share (``1.0`` = the maximum); ``min_percentile`` does the same for the
lower bound from the small end. Both start bounds are widened to include zero, because the
quantized range must represent it. Every factor ``f`` in ``search_range`` (both ends included)
with spacing ``search_step`` scales the start range, and the factor whose quantized tensor has the
smallest expected squared error wins (see :mod:`int8kit.thresholds._error`; the error counts
rounding and clipping for the target's exact grid).

* Asymmetric target ("with offset" in AMCT): candidates ``(f * min0, f * max0)`` with
  ``2**bits`` levels.
* Symmetric target: ``T = f * max(|min0|, |max0|)`` (``f * max0`` for unsigned tensors).

Candidates beyond the observed extremes are clamped to them before evaluation, since levels
outside the data are wasted.

Bounded work: at most ``MAX_CANDIDATES`` (10 000) factors, ``(end - start) / search_step + 1``; a
finer step or a wider range is refused with the step that fits. They are evaluated in blocks of
``_BLOCK``, so memory stays at a few MB per tensor whatever the count.
"""

from __future__ import annotations

import math

import numpy as np

from int8kit.calib.histogram import Histogram
from int8kit.errors import ConfigError
from int8kit.thresholds._error import edge_weights, expected_error
from int8kit.thresholds.base import Target, finish, is_unsigned, qmax, register
from int8kit.thresholds.simple import quantile

MAX_CANDIDATES = 10_000  # AMCT's default is 61 (0.7..1.3 by 0.01); 10 000 is 0.0001 steps over 0.7..1.7
_BLOCK = 256  # candidates per evaluation block: histogram edges x 256 float64s at a time


@register("ifmr", aliases=("ifmr_quantize", "amct"))
def ifmr(
    hist: Histogram,
    target: Target,
    *,
    max_percentile: float = 0.999999,
    min_percentile: float = 0.999999,
    search_range: tuple[float, float] | None = None,
    search_step: float = 0.01,
    search_range_start: float | None = None,
    search_range_end: float | None = None,
) -> tuple[float, float]:
    """Scale a percentile range by the factor (from ``search_range``) with least quantization MSE.

    ``search_range_start``/``search_range_end`` are the manual's .cfg names for the two ends."""
    if search_range is not None and (search_range_start is not None or search_range_end is not None):
        raise ConfigError("ifmr got search_range and search_range_start/_end; give the range one way.")
    if search_range is None:  # default (0.7, 1.3)
        search_range = (0.7 if search_range_start is None else search_range_start,
                        1.3 if search_range_end is None else search_range_end)
    factors = _factors(max_percentile, min_percentile, search_range, search_step)
    max0 = max(quantile(hist.counts, -hist.edge, hist.width, max_percentile), 0.0)
    min0 = min(quantile(hist.counts, -hist.edge, hist.width, 1.0 - min_percentile), 0.0)
    max0, min0 = min(max0, max(hist.max, 0.0)), max(min0, min(hist.min, 0.0))
    if target.symmetric:
        start = max0 if is_unsigned(hist) else max(-min0, max0)
        limit = hist.max if is_unsigned(hist) else hist.absmax
        t = np.minimum(factors * start, limit)
        if not start > 0.0:
            return finish(0.0, 0.0, hist, target)
        edges, weights = edge_weights(hist.abs_counts(), 0.0, hist.width)
        err = _in_blocks(edges, weights, np.zeros_like(t), t, qmax(hist, target))
        return finish(0.0, float(t[int(np.argmin(err))]), hist, target)
    lo = np.maximum(factors * min0, min(hist.min, 0.0))
    hi = np.minimum(factors * max0, max(hist.max, 0.0))
    if not max0 - min0 > 0.0:
        return finish(0.0, 0.0, hist, target)
    edges, weights = edge_weights(hist.counts, -hist.edge, hist.width)
    err = _in_blocks(edges, weights, lo, hi, 2 ** int(target.bits) - 1)
    best = int(np.argmin(err))
    return finish(float(lo[best]), float(hi[best]), hist, target)


def _in_blocks(edges: np.ndarray, weights: np.ndarray, lo: np.ndarray, hi: np.ndarray, steps: int) -> np.ndarray:
    """``expected_error`` for every candidate, ``_BLOCK`` candidates at a time (bounded memory)."""
    return np.concatenate([expected_error(edges, weights, lo[i : i + _BLOCK], hi[i : i + _BLOCK], steps)
                           for i in range(0, len(lo), _BLOCK)])


def _factors(
    max_percentile: float, min_percentile: float, search_range: object, search_step: float
) -> np.ndarray:
    """Validate the AMCT parameters and list the scale factors to try."""
    for name, value in (("max_percentile", max_percentile), ("min_percentile", min_percentile)):
        if not isinstance(value, (int, float)) or not 0.5 < float(value) <= 1.0:
            raise ConfigError(
                f"ifmr {name} must be a number in (0.5, 1], got {value!r}; the default is 0.999999."
            )
    try:
        start, end = (float(v) for v in search_range)  # type: ignore[attr-defined]
    except (TypeError, ValueError):
        start, end = math.nan, math.nan
    if not 0.0 < start < end:
        raise ConfigError(
            f"ifmr search_range must be two numbers 0 < start < end, got {search_range!r}; "
            "the default is (0.7, 1.3)."
        )
    # the step may equal the width; 0.6 - 0.5 is 0.0999... in floating point
    if not isinstance(search_step, (int, float)) or not 0.0 < search_step <= (end - start) * (1 + 1e-9):
        raise ConfigError(
            f"ifmr search_step must be in (0, {end - start:g}] for search_range {search_range!r}, "
            f"got {search_step!r}; the default is 0.01."
        )
    count = math.floor((end - start) / search_step + 1e-9) + 1
    if count > MAX_CANDIDATES:
        fits = (end - start) / (MAX_CANDIDATES - 1)
        raise ConfigError(
            f"ifmr search_step {search_step!r} over search_range ({start:g}, {end:g}) gives {count:,} candidate factors, "
            f"more than the {MAX_CANDIDATES:,} int8kit evaluates per tensor; use a search_step of at least {fits:.3g} "
            "or a narrower search_range."
        )
    return start + np.arange(count) * float(search_step)
