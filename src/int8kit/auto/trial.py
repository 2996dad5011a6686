"""One trial of the search: re-plan from the shared statistics, emit in memory, score on the
validation half and time against FP32. Nothing here calibrates or writes files."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx

from int8kit.analysis.ort_fusion import float_as_run
from int8kit.auto.budget import Budget, Score
from int8kit.auto.candidates import Candidate
from int8kit.auto.macs import int8_mac_fraction
from int8kit.auto.scorer import TaskScorer
from int8kit.calib.stats import Stats
from int8kit.config import QuantConfig, TuneOptions
from int8kit.evaluate.accumulate import ErrorAccumulator
from int8kit.evaluate.latency import measure_latencies
from int8kit.plan.planner import plan
from int8kit.plan.types import QuantPlan
from int8kit.runtime.openvino import session_for
from int8kit.tune.steps import tune_and_emit
from int8kit.tune.weight_rounding import RoundingMemo


@dataclass
class Trial:
    """What the search log keeps of one scored candidate."""

    key: str
    name: str
    stage: str
    changes: dict[str, Any]
    bias_tuning: int
    score: Score
    drop: float  # from the budget's FP32 score (relative with --relative)
    meets: bool
    float_layers: list[str]  # compute layers (Conv, Gemm, MatMul) that run in float
    int8_macs: float  # share of compute MACs in INT8
    latency_ratio: float  # INT8 / FP32, measured in turns
    int8_ms: float
    fp32_ms: float
    size_bytes: int
    seconds: float
    drop_interval: list[float] | None = None  # paired 95 % interval of the drop against FP32 on the same samples
    weight_rounding: str = "nearest"
    # the scored output's SQNR against FP32 on the same samples (dB; None in logs written before
    # it): far steadier than a task score on n samples, so the search decides by it where the
    # float set stays the same (tuning) and between trials that are otherwise as good
    output_sqnr_db: float | None = None

    def to_dict(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in self.__dataclass_fields__}
        out["score"] = self.score.to_dict()
        out["changes"] = {k: list(v) if isinstance(v, tuple) else v for k, v in self.changes.items()}
        return out

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "Trial":
        fields = {k: raw[k] for k in cls.__dataclass_fields__ if k in raw}
        fields["score"] = Score.from_dict(raw["score"])
        return cls(**fields)

    def candidate(self) -> Candidate:
        changes = {k: tuple(v) if isinstance(v, list) else v for k, v in self.changes.items()}
        return Candidate(self.name, changes, self.bias_tuning, self.stage, self.weight_rounding)


@dataclass
class Built:
    """A candidate's INT8 model, its plan and configuration."""

    model: onnx.ModelProto
    plan: QuantPlan
    config: QuantConfig
    bias_tuned: int = 0


@dataclass
class SearchContext:
    """Everything trials share: the optimized model, one calibration pass, the scorer and budget."""

    optimized: onnx.ModelProto
    stats: Stats
    base: QuantConfig
    scorer: TaskScorer
    budget: Budget
    macs: dict[str, int]
    feed: dict[str, np.ndarray]  # one validation sample, for latency
    latency_runs: int = 20
    tuning_batches: list[dict[str, np.ndarray]] = field(default_factory=list)  # calibration samples for bias tuning
    runtime: str = "onnxruntime"  # where latency is timed: the target's runtime when it is here
    _fp32_session: Any = None
    _rounding: RoundingMemo = field(default_factory=RoundingMemo)  # GPTQ's input statistics, shared by trials
    _channel_steps: bool | None = None  # uses_channel_steps(), once known

    def build(self, candidate: Candidate) -> Built:
        """Plan and emit ``candidate`` (and tune its biases when it asks): milliseconds to seconds."""
        config = candidate.config(self.base)
        tune = TuneOptions(bias_tuning=candidate.bias_tuning, weight_rounding=candidate.weight_rounding)
        tuned = tune_and_emit(self.optimized, plan(self.optimized, self.stats, config), self.tuning_batches, tune,
                              bias_correction=config.bias_correction, rounding_memo=self._rounding)
        return Built(tuned.model, tuned.plan, config, tuned.bias_tuned)

    def uses_channel_steps(self) -> bool:
        """Whether the base plan gives any conv input per-channel steps (without, dropping them
        changes nothing). Planned once: quick mode asks first, full mode's last step again."""
        if self._channel_steps is None:
            self._channel_steps = self.base.channel_scales and any(
                tq.channel_step is not None for tq in plan(self.optimized, self.stats, self.base).tensors.values())
        return self._channel_steps

    def latencies(self, model: onnx.ModelProto) -> tuple[float, float]:
        """FP32 and INT8 milliseconds on one sample, one thread, the two taking turns."""
        fp32_ms, int8_ms = measure_latencies([self._fp32(), self._session(model)], self.feed, warmup=2,
                                             runs=self.latency_runs)
        return fp32_ms, int8_ms

    def time_together(self, trials: list[Trial]) -> None:
        """Time these trials' models again, all in one interleaved run with FP32, and update their
        latencies: each trial was timed alone against FP32, and on a busy machine ratios taken at
        different moments differ more than the models do; taking turns in one run makes them comparable."""
        if len(trials) < 2:
            return
        sessions = [self._session(self.build(t.candidate()).model) for t in trials]
        fp32_ms, *int8_ms = measure_latencies([self._fp32(), *sessions], self.feed, warmup=2, runs=self.latency_runs)
        for trial, ms in zip(trials, int8_ms):
            trial.fp32_ms, trial.int8_ms = fp32_ms, ms
            trial.latency_ratio = ms / fp32_ms if fp32_ms > 0 else float("inf")

    def _session(self, model: onnx.ModelProto) -> Any:
        """A one-thread session of ``model`` on the runtime latency is timed on."""
        return session_for(model, self.runtime, threads=1)

    def _fp32(self) -> Any:
        if self._fp32_session is None:
            self._fp32_session = self._session(self.optimized)
        return self._fp32_session

    def float_layers(self, built: Built) -> list[str]:
        """Compute layers that run in float, in graph order: those the plan keeps float and, for
        onnxruntime, the convs it runs in float because a float layer reads their output too."""
        floats = float_as_run(built.model, built.plan, built.config.inputs_only)
        return [name for name in self.macs if name in floats]

    def run(self, candidate: Candidate) -> tuple[Trial, Built]:
        """Build, score and time one candidate."""
        start = time.perf_counter()
        built = self.build(candidate)
        error = ErrorAccumulator()
        raw = self.scorer.score(built.model, output_error=error)
        paired = self.scorer.drop(raw, relative=self.budget.relative)
        fp32_ms, int8_ms = self.latencies(built.model)
        floats = self.float_layers(built)
        score = Score.of(raw)
        trial = Trial(candidate.key, candidate.name, candidate.stage, dict(candidate.changes), candidate.bias_tuning,
                      score, self.budget.drop(score.value), self.budget.meets(score.value), floats,
                      # 9-16 bit activations run no INT8 kernel: none of their MACs count as INT8
                      int8_mac_fraction(self.macs, set(floats)) if built.config.bitwidth == 8 else 0.0,
                      int8_ms / fp32_ms if fp32_ms > 0 else float("inf"),
                      int8_ms, fp32_ms, built.model.ByteSize(), time.perf_counter() - start,
                      None if paired.low is None else [float(paired.low), float(paired.high)], candidate.weight_rounding,
                      _finite(error.result().sqnr_db))
        return trial, built


def _finite(value: float) -> float | None:
    """``value``, or None where it is not finite (an output equal to FP32's: no error to rank by)."""
    return value if math.isfinite(value) else None
