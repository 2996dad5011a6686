"""The accuracy budget: a score with its sampling uncertainty, the drop from FP32, and whether
the drop is within what the user accepts."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

# below this the difference of two scores is rounding, not a drop (scores are means of n values)
_EPS = 1e-9


@dataclass(frozen=True)
class Score:
    """What the search log keeps of a score: value on ``n`` samples, 95 % interval [``low``, ``high``]."""

    value: float
    n: int
    low: float
    high: float

    @classmethod
    def of(cls, score: Any) -> "Score":
        """The record of an ``int8kit.evaluate`` score (a metric without an interval: value for both ends)."""
        low = score.value if score.low is None else score.low
        high = score.value if score.high is None else score.high
        return cls(float(score.value), int(score.n), float(low), float(high))

    @classmethod
    def exact(cls, value: float, n: int) -> "Score":
        """A value given without an interval (``--fp32-score``, or a metric that reports none)."""
        return cls(float(value), int(n), float(value), float(value))

    def text(self) -> str:
        """``0.952 [0.918, 0.975]``."""
        if self.low == self.high == self.value:
            return f"{self.value:.4f}"
        return f"{self.value:.4f} [{self.low:.4f}, {self.high:.4f}]"

    def to_dict(self) -> dict[str, float | int]:
        return {"value": self.value, "n": self.n, "low": self.low, "high": self.high}

    @classmethod
    def from_dict(cls, raw: dict) -> "Score":
        return cls(float(raw["value"]), int(raw["n"]), float(raw["low"]), float(raw["high"]))


@dataclass(frozen=True)
class Budget:
    """How much below FP32 a candidate may score (higher scores are better)."""

    fp32: float
    accept_drop: float
    relative: bool = False

    @property
    def threshold(self) -> float:
        """The lowest score that meets the budget."""
        allowed = self.accept_drop * abs(self.fp32) if self.relative else self.accept_drop
        return self.fp32 - allowed

    def drop(self, score: float) -> float:
        """FP32 minus ``score`` (as a fraction of FP32 with ``relative``)."""
        diff = self.fp32 - score
        return diff / abs(self.fp32) if self.relative and self.fp32 else diff

    def meets(self, score: float) -> bool:
        return score >= self.threshold - _EPS

    def gap(self, score: float) -> float:
        """How far ``score`` is below the threshold (0 when it meets it)."""
        return max(0.0, self.threshold - score)

    def holds(self, score: Score) -> bool:
        """The budget is within the score's uncertainty (held-out check): its interval reaches the threshold."""
        return score.high >= self.threshold - _EPS or math.isclose(score.value, self.threshold)

    def text(self) -> str:
        kind = "relative" if self.relative else "absolute"
        return f"score >= {self.threshold:.4f} (FP32 {self.fp32:.4f}, accepted drop {self.accept_drop:g} {kind})"
