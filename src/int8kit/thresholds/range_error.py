"""Mean and mean square of the quantization error one clipping range makes on a histogram.

Rounding error is zero-mean; clipping moves every clipped value the same way (towards the range).
A reader that adds up many inputs averages the first out but adds the second up, so ``auto``
(plan/method_choice.py) needs both parts, not only their sum (which ``mse`` minimises).

Values are taken at their bin centres (2 x 2048 bins: far below one quantization step); values
inside the range cost ``step**2 / 12`` of rounding,
except exact zeros (see :func:`exact_zeros`). ``domain``: the values the tensor's readers
tell apart; a value beyond it reads as the bound itself (a HardSwish input below -3 gives 0
whatever it is), so it costs only the distance from that bound to the range. O(bins) per range.
"""

from __future__ import annotations

import numpy as np

from int8kit.calib.histogram import Histogram


def range_error(hist: Histogram, lo: float, hi: float, step: float,
                domain: tuple[float, float] | None = None) -> tuple[float, float]:
    """``(mean error, mean squared error)`` per value of quantizing ``hist`` to ``[lo, hi]`` with ``step``."""
    n = hist.counts.astype(np.float64)
    n /= max(n.sum(), 1.0)
    seen = hist.centers()
    if domain is not None:
        seen = np.clip(seen, domain[0], domain[1])
    clipped = np.clip(seen, lo, hi) - seen
    inside = clipped == 0.0
    bias = float(n @ clipped)
    rounded = float(n[inside].sum()) - exact_zeros(hist) / max(float(hist.counts.sum()), 1.0)
    square = float(n @ (clipped * clipped)) + max(rounded, 0.0) * step * step / 12.0
    return bias, square


def exact_zeros(hist: Histogram) -> float:
    """Values that are exactly 0 (a ReLU's cut-off half), estimated: zero is on every grid, so they
    round without error. The bin just above 0 holds them and the small positive values; the
    excess over the next bin up is taken as the zeros (0 for signed tensors)."""
    if hist.min < 0.0 or hist.counts.size < 4:
        return 0.0
    first = hist.bins  # the bin [0, width)
    return float(max(hist.counts[first] - hist.counts[first + 1], 0))


def mean_square(hist: Histogram) -> float:
    """Mean of ``x**2`` over the histogram (the signal the errors are compared with)."""
    n = hist.counts.astype(np.float64)
    return float(n @ hist.centers() ** 2 / max(n.sum(), 1.0))
