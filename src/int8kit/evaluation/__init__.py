"""Evaluation: accuracy and FP32-vs-INT8 similarity metrics, model comparison and latency."""

from __future__ import annotations

from int8kit.evaluation.compare import EvalResult, OutputSimilarity, compare_models, load_labels, measure_latency
from int8kit.evaluation.metrics import max_abs_error, mean_cosine, top1_agreement, topk_accuracy

__all__ = [
    "EvalResult",
    "OutputSimilarity",
    "compare_models",
    "load_labels",
    "max_abs_error",
    "mean_cosine",
    "measure_latency",
    "top1_agreement",
    "topk_accuracy",
]
