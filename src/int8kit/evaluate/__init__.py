"""Evaluation: one definition of each FP32-vs-INT8 metric, and the ``Evaluator`` that computes the
FP32 reference of a data set once and scores any number of INT8 candidates against it.

``int8kit.evaluate`` is also the API verb (``int8kit.evaluate(fp32, int8, data)``): importing this
package makes ``int8kit.evaluate`` the package, so the package itself is callable and runs
``int8kit.api.evaluate``.
"""

from __future__ import annotations

import sys
import types
from typing import Any

from int8kit.evaluate.accumulate import ErrorAccumulator, ErrorStats
from int8kit.evaluate.compare import compare_models
from int8kit.evaluate.evaluator import Evaluator
from int8kit.evaluate.labels import load_labels
from int8kit.evaluate.latency import measure_latencies, measure_latency
from int8kit.evaluate.metrics import max_abs_error, mean_cosine, sample_cosines, top1_agreement, topk_accuracy
from int8kit.evaluate.result import EvalResult, OutputSimilarity, TaskComparison
from int8kit.evaluate.tasks import MetricSpec, TaskMetric, make_metric
from int8kit.evaluate.uncertainty import Drop, Score, drop

__all__ = [
    "Drop",
    "ErrorAccumulator",
    "ErrorStats",
    "EvalResult",
    "Evaluator",
    "MetricSpec",
    "OutputSimilarity",
    "Score",
    "TaskComparison",
    "TaskMetric",
    "compare_models",
    "drop",
    "load_labels",
    "make_metric",
    "max_abs_error",
    "mean_cosine",
    "measure_latencies",
    "measure_latency",
    "sample_cosines",
    "top1_agreement",
    "topk_accuracy",
]


class _CallablePackage(types.ModuleType):
    """The package, callable as the ``evaluate`` verb: Python binds ``int8kit.evaluate`` to this
    package once it is imported, and the API name must keep working."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from int8kit.api import evaluate

        return evaluate(*args, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage
