"""``auto``: the planner picks, per tensor, among :data:`CANDIDATES` by the error its readers see.

The choice needs the model (who reads the tensor, with which weights), so the planner makes it
(plan/method_choice.py) and records the winner under its own name. Called here directly, on a
histogram alone, ``auto`` has no readers to weigh: it returns the candidate range with the least
mean squared error of the tensor itself (a reader that passes the error on as it is).
"""

from __future__ import annotations

from int8kit.calib.histogram import Histogram
from int8kit.thresholds.base import METHODS, Target, finish, register
from int8kit.thresholds.range_error import range_error

#: The methods ``auto`` chooses from, in order of preference on equal scores. Not ``percentile`` nor
#: ``ifmr``: the estimate rates their clipping of a HardSwish input's rare large values as cheap, and
#: it is not (PP-OCRv4 rec, calibration set 4: exact match 0.94 -> 0.41 from that one tensor;
#: mean over four sets 0.67 with them, 0.90 without; benchmarks/bench_methods.py).
CANDIDATES: tuple[str, ...] = ("mse", "kl", "max")


def steps_of(hist: Histogram, lo: float, hi: float, target: Target) -> float:
    """Quantization step of the range ``(lo, hi)`` on ``target``'s grid (the planner's scale)."""
    if target.symmetric and lo < 0.0:
        return max(-lo, hi) / (2 ** (int(target.bits) - 1) - 1)
    return (hi - lo) / (2 ** int(target.bits) - 1)


@register("auto")
def auto(hist: Histogram, target: Target) -> tuple[float, float]:
    """The candidate range with the least mean squared error on ``hist`` (no reader weighting)."""
    ranges = [finish(*METHODS[m](hist, target), hist, target) for m in CANDIDATES]
    errors = [range_error(hist, lo, hi, steps_of(hist, lo, hi, target))[1] for lo, hi in ranges]
    return ranges[errors.index(min(errors))]
