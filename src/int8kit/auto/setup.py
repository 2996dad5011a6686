"""Everything a search needs before its first trial: the split test set and its scorer, the FP32
score and the budget, MACs per layer, a latency feed, and the key that says which earlier search
log belongs to the same arguments."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np
import onnx

from int8kit.auto.budget import Budget, Score
from int8kit.auto.macs import layer_macs
from int8kit.auto.scorer import TaskScorer
from int8kit.auto.split import Halves
from int8kit.auto.trial import SearchContext
from int8kit.calib.stats import Stats, model_fingerprint
from int8kit.config import QuantConfig
from int8kit.config.search import SearchOptions
from int8kit.data.sources import model_input_specs
from int8kit.evaluate.store import data_fingerprint


def make_context(optimized: onnx.ModelProto, stats: Stats, halves: Halves, base: QuantConfig, options: SearchOptions,
                 *, postprocess: str | None = None, tuning_batches: list[dict[str, np.ndarray]] | None = None,
                 batch_size: int | None = None, progress: bool = False) -> tuple[SearchContext, str, Score]:
    """The shared context of every trial, the metric's name and the FP32 validation score."""
    metric = options.metric_for(halves.validation_labels is not None)
    scorer = TaskScorer(optimized, halves, metric, postprocess=postprocess, batch_size=batch_size, progress=progress)
    n = halves.sizes[0]
    fp32 = Score.exact(options.fp32_score, n) if options.fp32_score is not None else scorer.fp32("validation")
    budget = Budget(fp32.value, options.accept_drop, options.relative)
    ctx = SearchContext(optimized, stats, base, scorer, budget, layer_macs(optimized), latency_feed(optimized, halves),
                        options.latency_runs, list(tuning_batches or []))
    return ctx, metric, fp32


def latency_feed(model: onnx.ModelProto, halves: Halves) -> dict[str, np.ndarray]:
    """The first validation sample (a whole batch where the model fixes its batch size)."""
    rows = next((s.batch_dim for s in model_input_specs(model) if s.batch_dim), 1)
    return {k: np.ascontiguousarray(v[:rows]) for k, v in halves.validation.items()}


def run_key(optimized: onnx.ModelProto, calib_id: Any, halves: Halves, base: QuantConfig, options: SearchOptions,
            *, metric: str, postprocess: str | None, calib_options: dict[str, Any]) -> str:
    """A short id of everything a trial's result depends on (not the budget: scores do not depend on it)."""
    parts = {
        "model": model_fingerprint(optimized),
        "calibration": str(calib_id),
        "calibration_options": calib_options,
        "validation": data_fingerprint(halves.validation),
        "held_out": data_fingerprint(halves.held_out),
        "labels": None if halves.validation_labels is None else hashlib.sha1(
            np.ascontiguousarray(np.concatenate([halves.validation_labels, halves.held_out_labels]))).hexdigest(),
        "metric": metric,
        "postprocess": postprocess,
        "base": base.to_dict(),
        "latency_runs": options.latency_runs,
        "bias_tuning_samples": options.bias_tuning_samples,
    }
    return hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:20]
