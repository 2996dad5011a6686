"""Everything a search needs before its first trial: the scorer of the test set's two halves, the
FP32 score and the budget, MACs per layer, a latency feed, and the key that says which earlier search
log belongs to the same arguments."""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

import numpy as np
import onnx

from int8kit.analysis.speed import timing_runtime
from int8kit.auto.budget import Budget
from int8kit.auto.macs import layer_macs
from int8kit.auto.scorer import TaskScorer
from int8kit.auto.trial import SearchContext
from int8kit.calib.stats import Stats, model_fingerprint
from int8kit.config import QuantConfig
from int8kit.config.search import SearchOptions

log = logging.getLogger(__name__)


def make_context(optimized: onnx.ModelProto, stats: Stats, test_data: Any, base: QuantConfig, options: SearchOptions,
                 *, labels: Any = None, postprocess: str | None = None,
                 tuning_batches: list[dict[str, np.ndarray]] | None = None, batch_size: int | None = None,
                 progress: bool = False) -> tuple[SearchContext, str]:
    """The shared context of every trial and the metric's name (the FP32 reference of the test
    data is computed here, once)."""
    has_labels = labels is not None or _has_class_labels(test_data)
    metric = options.metric_for(has_labels)
    scorer = TaskScorer(optimized, test_data, metric, labels=labels, postprocess=postprocess, batch_size=batch_size,
                        progress=progress)
    fp32 = options.fp32_score if options.fp32_score is not None else scorer.fp32("validation").value
    budget = Budget(fp32, options.accept_drop, options.relative)
    feed = scorer.latency_feed()
    macs = layer_macs(optimized, {name: value.shape for name, value in feed.items()})
    runtime = timing_runtime(base.target)
    if runtime is None:
        log.warning("the %s form is timed in onnxruntime here (%s is not installed): its latencies say little about "
                    "%s", base.target, base.target, base.target)
    ctx = SearchContext(optimized, stats, base, scorer, budget, macs, feed, options.latency_runs, list(tuning_batches or []),
                        runtime or "onnxruntime")
    return ctx, metric


def _has_class_labels(data: Any) -> bool:
    """Whether the data carries class labels of its own (class folders, an LMDB's labels)."""
    labels = getattr(data, "labels", None)
    try:
        return callable(labels) and bool(labels())
    except Exception:  # a source that cannot list its labels has none to offer
        return False


def run_key(optimized: onnx.ModelProto, calib_id: Any, test_id: Any, labels: Any, base: QuantConfig,
            options: SearchOptions, *, metric: str, postprocess: str | None, calib_options: dict[str, Any]) -> str:
    """A short id of everything a trial's result depends on (not the budget: scores do not depend on it)."""
    parts = {
        "model": model_fingerprint(optimized),
        "calibration": str(calib_id),
        "calibration_options": calib_options,
        "test": str(test_id),
        "labels": None if labels is None else hashlib.sha1(np.ascontiguousarray(labels)).hexdigest(),
        "metric": metric,
        "postprocess": postprocess,
        "base": base.to_dict(),
        "latency_runs": options.latency_runs,
        "bias_tuning_samples": options.bias_tuning_samples,
    }
    return hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:20]
