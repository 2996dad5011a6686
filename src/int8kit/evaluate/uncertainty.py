"""How sure a task score is: ``Score`` (value and 95 % interval), ``Drop`` (FP32 minus INT8 on
the same samples, with a paired interval) and the intervals behind them (docs/metrics.md).

Accuracy-like metrics (every per-sample value 0 or 1) get the Wilson score interval, and their
drop Newcombe's interval for a paired difference of proportions (his method 10), which uses the
correlation of the two models' hits: both models see the same samples, so the drop is far surer
than the two scores' intervals suggest. Other metrics are bootstrapped over samples (percentile
interval, a fixed seed so a rerun prints the same numbers); the drop's resamples pick the same
samples for both models.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np

from int8kit.errors import DataError

Z95 = 1.959963984540054  # the normal quantile of 97.5 %: two-sided 95 % intervals
BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_SEED = 0
_RESAMPLE_VALUES = 4_000_000  # sample indices held at once while resampling per-sample values


@dataclasses.dataclass
class Paired:
    """What a score keeps so that a drop can be paired with another score on the same samples."""

    key: Any  # which evaluation samples (the subset), in order
    values: np.ndarray | None = None  # per-sample values whose mean is the score
    score_of: Callable[[np.ndarray], float] | None = None  # the score of a resample (sample indices)
    binary: bool = False  # accuracy-like: the values are hits (0 or 1) and the score their mean


@dataclasses.dataclass
class Score:
    """A task score on ``n`` samples and its 95 % interval ``[low, high]`` (``None`` when the
    metric gives no per-sample values). ``method``: ``wilson``, ``bootstrap`` or ``none``."""

    value: float
    n: int
    low: float | None = None
    high: float | None = None
    method: str = "none"
    metric: str = ""
    paired: ClassVar[Paired | None] = None  # set per instance by ``score_with_interval``; not a field

    def __str__(self) -> str:
        if self.low is None or self.high is None:
            return f"{_fmt(self.value, None)} (n={self.n}, no interval: the metric gives no per-sample values)"
        half = (self.high - self.low) / 2
        if abs((self.high - self.value) - (self.value - self.low)) > half / 2:  # lopsided (near 0 or 1): say both ends
            return f"{_fmt(self.value, half)} (95 % interval {_fmt(self.low, half)} to {_fmt(self.high, half)}, n={self.n})"
        return f"{_fmt(self.value, half)} ± {_fmt(half, half)} (n={self.n})"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: value, n, low, high, method, metric (non-finite numbers as ``None``)."""
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in dataclasses.asdict(self).items()}


@dataclasses.dataclass
class Drop:
    """FP32 score minus INT8 score on the same samples (positive: INT8 is worse), relative to the
    FP32 score when ``relative``, with its paired 95 % interval."""

    value: float
    n: int
    low: float | None = None
    high: float | None = None
    method: str = "none"  # newcombe (paired proportions), bootstrap (paired resamples) or none
    relative: bool = False

    @property
    def significant(self) -> bool:
        """Whether the interval excludes 0: the models differ on such samples, not only on these."""
        return self.low is not None and self.high is not None and (self.low > 0 or self.high < 0)

    def __str__(self) -> str:
        if self.low is None or self.high is None:
            return f"{_fmt(self.value, None)} (n={self.n}, no interval)"
        return (f"{_fmt(self.value, self.high - self.low)} (95 % interval {_fmt(self.low, self.high - self.low)} "
                f"to {_fmt(self.high, self.high - self.low)}, paired, n={self.n})")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields plus ``significant``."""
        d = dataclasses.asdict(self)
        d["significant"] = self.significant
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in d.items()}


def _fmt(x: float, spread: float | None) -> str:
    """Enough decimals to show two significant digits of ``spread`` (3 at least, 6 at most)."""
    if x is None or not math.isfinite(x):
        return "n/a"
    tiny = not spread or not math.isfinite(spread) or abs(spread) < 1e-9  # no spread (both models alike): 3 places
    places = 3 if tiny else min(6, max(3, 1 - math.floor(math.log10(abs(spread)))))
    return f"{x:.{places}f}" if abs(x) >= 0.5 * 10**-places else f"{0.0:.{places}f}"  # no "-0.000"


def wilson(hits: float, n: int) -> tuple[float, float]:
    """Wilson score 95 % interval of a proportion ``hits / n``."""
    if n <= 0:
        return math.nan, math.nan
    p = hits / n
    centre = (p + Z95**2 / (2 * n)) / (1 + Z95**2 / n)
    half = Z95 / (1 + Z95**2 / n) * math.sqrt(p * (1 - p) / n + Z95**2 / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def is_binary(values: np.ndarray) -> bool:
    """Whether every value is 0 or 1 (an accuracy-like metric)."""
    return bool(values.size) and bool(np.isin(values, (0, 1)).all())


def _resample_indices(n: int, rng: np.random.Generator) -> Any:
    """``BOOTSTRAP_RESAMPLES`` resamples of ``n`` sample indices, in blocks of bounded memory."""
    per_block = max(1, _RESAMPLE_VALUES // max(n, 1))
    left = BOOTSTRAP_RESAMPLES
    while left:
        k = min(left, per_block)
        yield rng.integers(0, n, size=(k, n))
        left -= k


def bootstrap(stat: Callable[[np.ndarray], np.ndarray | float], n: int, *, batched: bool) -> tuple[float, float]:
    """Percentile 95 % interval of ``stat`` over bootstrap resamples of ``n`` samples. ``batched``:
    ``stat`` takes a (k, n) block of resamples and returns k values; else one resample at a time."""
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    stats: list[float] = []
    for block in _resample_indices(n, rng):
        stats += list(np.atleast_1d(stat(block))) if batched else [stat(row) for row in block]
    arr = np.asarray(stats, dtype=np.float64)
    arr = arr[np.isfinite(arr)]
    if not arr.size:
        return math.nan, math.nan
    low, high = np.percentile(arr, [2.5, 97.5])
    return float(low), float(high)


def score_with_interval(metric: str, value: float, n: int, paired: Paired) -> Score:
    """The ``Score`` of ``value`` on ``n`` samples with the interval its per-sample data allow."""
    if paired.values is not None and n:
        v = paired.values
        if paired.binary:
            low, high = wilson(float(v.sum()), n)
            method = "wilson"
        else:
            low, high = bootstrap(lambda idx: v[idx].mean(axis=1), n, batched=True)
            method = "bootstrap"
    elif paired.score_of is not None and n:
        low, high = bootstrap(paired.score_of, n, batched=False)
        method = "bootstrap"
    else:
        low = high = None
        method = "none"
    score = Score(value, n, low, high, method, metric)
    score.paired = paired
    return score


def drop(fp32: Score, int8: Score, relative: bool = False) -> Drop:
    """FP32 minus INT8 (divided by the FP32 score when ``relative``) with its paired 95 % interval.

    Both scores must come from the same samples (``Evaluator.task_score`` with the same
    ``samples``). Accuracy-like scores get Newcombe's paired interval; others a bootstrap whose
    resamples pick the same samples for both models.
    """
    value = fp32.value - int8.value
    if relative:
        value = value / fp32.value if fp32.value else math.nan
    a, b = fp32.paired, int8.paired
    if a is None or b is None:
        return Drop(value, fp32.n, relative=relative)
    if a.key != b.key or fp32.n != int8.n:
        raise DataError(f"the scores to compare come from different samples ({fp32.n} and {int8.n} samples, "
                        f"subsets {a.key} and {b.key}); expected the same samples; score both models with the same samples=.")
    n = fp32.n
    if a.values is not None and b.values is not None:
        va, vb = a.values, b.values
        if not relative and a.binary and b.binary:
            low, high = newcombe_paired(va, vb)
            return Drop(value, n, low, high, "newcombe", relative)

        def diff(idx: np.ndarray) -> np.ndarray:
            fa, fb = va[idx].mean(axis=1), vb[idx].mean(axis=1)
            return (fa - fb) / np.where(fa != 0, fa, np.nan) if relative else fa - fb

        low, high = bootstrap(diff, n, batched=True)
        return Drop(value, n, low, high, "bootstrap", relative)
    if a.score_of is not None and b.score_of is not None:

        def diff_one(idx: np.ndarray) -> float:
            fa, fb = a.score_of(idx), b.score_of(idx)
            return (fa - fb) / fa if relative and fa else (math.nan if relative else fa - fb)

        low, high = bootstrap(diff_one, n, batched=False)
        return Drop(value, n, low, high, "bootstrap", relative)
    return Drop(value, n, relative=relative)


def newcombe_paired(fp32_hits: np.ndarray, int8_hits: np.ndarray) -> tuple[float, float]:
    """95 % interval of ``mean(fp32_hits) - mean(int8_hits)`` for paired 0/1 outcomes (Newcombe
    1998, method 10: the two Wilson intervals combined with the phi correlation of the pairs)."""
    x, y = fp32_hits.astype(bool), int8_hits.astype(bool)
    n = len(x)
    e, f, g, h = int(np.sum(x & y)), int(np.sum(x & ~y)), int(np.sum(~x & y)), int(np.sum(~x & ~y))
    p1, p2 = (e + f) / n, (e + g) / n
    l1, u1 = wilson(e + f, n)
    l2, u2 = wilson(e + g, n)
    denom = (e + f) * (g + h) * (e + g) * (f + h)
    phi = (e * h - f * g) / math.sqrt(denom) if denom > 0 else 0.0
    d = p1 - p2
    below = math.sqrt(max(0.0, (p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2))
    above = math.sqrt(max(0.0, (u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2))
    return max(-1.0, d - below), min(1.0, d + above)
