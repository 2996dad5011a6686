"""Options of the accuracy-driven search (``int8kit auto``; the manual's auto_calib).

The budget says how much of the task metric the INT8 model may lose; the search keeps the
fastest candidate that meets it (quick mode) or the one with the fewest float MACs that meets it
(``full``). Fields carry their help and flag like every other configuration, so the CLI builds its
flags from them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

from int8kit.config.base import _Options, option
from int8kit.errors import ConfigError

# the built-in metric names; anything of the form module:Class is a user plugin
BUILTIN_METRICS = ("agreement", "top1", "top5", "cosine")


@dataclass(frozen=True)
class SearchOptions(_Options):
    """What the search optimizes for and how far it looks."""

    WHAT: ClassVar[str] = "search options"

    metric: str | None = option(None, "task metric the budget is on: agreement (FP32 top-1 as labels), top1, top5 "
                                      "(need --labels), cosine, or module:Class for your own (default: top1 with "
                                      "--labels, else agreement)", metavar="METRIC")
    accept_drop: float = option(0.005, "largest accepted drop of the metric from FP32 (the manual's "
                                       "accept_int8_decay; absolute unless --relative; 0: no loss at all)",
                                metavar="DROP")
    relative: bool = option(False, "--accept-drop is a fraction of the FP32 score, not an absolute difference")
    fp32_score: float | None = option(None, "the FP32 model's score on the validation half (default: measured)",
                                      metavar="SCORE")
    full: bool = option(False, "full search (the manual's auto_calib): also float the most sensitive layers "
                               "(binary search), put layers back one by one, try bias tuning; minimises float "
                               "MACs, then latency")
    latency_runs: int = option(20, "timed runs per model and candidate when measuring INT8/FP32 latency", metavar="N")
    bias_tuning_samples: int = option(32, "calibration samples bias tuning reads when the full search tries it "
                                          "(0: never try bias tuning)", metavar="N")

    def __post_init__(self) -> None:
        self._check_types_loose()
        if self.metric is not None and (not isinstance(self.metric, str) or not self.metric.strip()):
            raise ConfigError(f"--metric takes a metric name ({', '.join(BUILTIN_METRICS)}) or module:Class, got {self.metric!r}.")
        if not math.isfinite(self.accept_drop):
            raise ConfigError(f"--accept-drop must be a finite number (e.g. 0.005), got {self.accept_drop!r}.")
        if self.relative and not 0 <= self.accept_drop < 1:
            raise ConfigError(f"--accept-drop with --relative is a fraction of the FP32 score in [0, 1), got {self.accept_drop}.")
        if self.fp32_score is not None and not math.isfinite(self.fp32_score):
            raise ConfigError(f"--fp32-score must be a finite number, got {self.fp32_score!r}.")
        if self.latency_runs < 1:
            raise ConfigError(f"--latency-runs must be at least 1, got {self.latency_runs}.")
        if self.bias_tuning_samples < 0:
            raise ConfigError(f"--bias-tuning-samples must be 0 or more, got {self.bias_tuning_samples}.")

    def _check_types_loose(self) -> None:
        """The shared checks, with ``float | None`` fields accepted as whole numbers too."""
        for name in ("accept_drop", "fp32_score"):
            value = getattr(self, name)
            if value is None and name == "fp32_score":
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"{name} must be a number, got {value!r}.")
            object.__setattr__(self, name, float(value))
        self._check_types()

    def metric_for(self, has_labels: bool) -> str:
        """The metric the search scores: the one given, or top1 with labels, agreement without."""
        if self.metric is not None:
            return self.metric.strip()
        return "top1" if has_labels else "agreement"

    def with_values(self, **changes: Any) -> "SearchOptions":
        """``replace`` for callers that pass ``None`` for options they leave at the default."""
        return self.replace(**{k: v for k, v in changes.items() if v is not None})
