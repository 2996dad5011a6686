"""Task scores of candidates on the two halves of the test set, through one ``Evaluator`` per half
(the FP32 reference of each half is computed once; every candidate costs one INT8 pass).

The built-in metrics read the evaluator's ``EvalResult``: ``agreement`` (FP32 top-1 as labels),
``top1``/``top5`` (labels needed) and ``cosine`` (output similarity; no sampling interval).
``module:Class`` plugins and ``--postprocess`` hooks are scored by ``int8kit.evaluate.tasks`` when
that module is present.
"""

from __future__ import annotations

import importlib
from typing import Any

import numpy as np
import onnx

from int8kit.auto.budget import Score
from int8kit.auto.split import Halves
from int8kit.config.search import BUILTIN_METRICS
from int8kit.errors import ConfigError
from int8kit.evaluate.evaluator import Evaluator
from int8kit.evaluate.metrics import topk_accuracy

PARTS = ("validation", "held_out")


class TaskScorer:
    """Scores of ``metric`` for FP32 (``model=None``) and INT8 candidates on either half."""

    def __init__(self, fp32: onnx.ModelProto, halves: Halves, metric: str, *, postprocess: str | None = None,
                 batch_size: int | None = None, progress: bool = False) -> None:
        self.metric = metric
        labels = {"validation": halves.validation_labels, "held_out": halves.held_out_labels}
        if metric in ("top1", "top5") and labels["validation"] is None:
            raise ConfigError(f"--metric {metric} needs labels (--labels FILE, class folders or an LMDB's labels), "
                              "and the test data has none; pass --labels or use --metric agreement.")
        self._task = _task_metric(metric, postprocess)
        data = {"validation": halves.validation, "held_out": halves.held_out}
        self._evaluators = {part: Evaluator(fp32, data[part], labels=labels[part], batch_size=batch_size, progress=progress)
                            for part in PARTS}
        self._fp32: dict[str, Score] = {}

    def fp32(self, part: str = "validation") -> Score:
        """The FP32 model's score on ``part`` (computed once)."""
        if part not in self._fp32:
            self._fp32[part] = self._score(None, part)
        return self._fp32[part]

    def score(self, model: onnx.ModelProto, part: str = "validation") -> Score:
        """``model``'s score on ``part``: one INT8 pass against the stored FP32 reference."""
        return self._score(model, part)

    def _score(self, model: onnx.ModelProto | None, part: str) -> Score:
        evaluator = self._evaluators[part]
        if self._task is not None:
            return _as_score(evaluator.task_score(model, self._task))
        if model is None:
            return self._fp32_score(evaluator)
        result = evaluator.evaluate(model, latency=False)
        n = result.samples
        if self.metric == "agreement":
            return Score.proportion(result.top1_agreement, n)
        if self.metric in ("top1", "top5"):
            value = result.int8_top1 if self.metric == "top1" else result.int8_top5
            if value is None:
                raise ConfigError(f"--metric {self.metric} needs a classifier output (samples x classes); output "
                                  f"'{result.output}' is not one; use --metric cosine or a module:Class metric.")
            return Score.proportion(value, n)
        cosine = result.outputs[0].mean_cosine if result.outputs else 1.0
        return Score.exact(cosine, n)


    def _fp32_score(self, evaluator: Evaluator) -> Score:
        """FP32 against itself: agreement and cosine are 1; accuracy from the stored reference outputs."""
        ref = evaluator.reference
        n = int(ref.meta["samples"])
        if self.metric not in ("top1", "top5"):
            return Score.exact(1.0, n)
        labels = np.asarray(evaluator.labels)
        labels = labels.argmax(axis=1) if labels.ndim == 2 else labels  # one-hot rows
        scores = np.concatenate([np.asarray(ref.record("outputs", i)[evaluator.output])
                                 for i in range(ref.records("outputs"))])
        scores = scores.reshape(len(scores), -1)
        return Score.proportion(topk_accuracy(scores, labels[: len(scores)], k=1 if self.metric == "top1" else 5), len(scores))


def _task_metric(metric: str, postprocess: str | None) -> Any:
    """The task-metric object from ``int8kit.evaluate.tasks`` for metrics the EvalResult cannot give."""
    if metric in BUILTIN_METRICS and postprocess is None:
        return None
    if metric not in BUILTIN_METRICS and ":" not in metric:
        raise ConfigError(f"--metric '{metric}' is not one of {', '.join(BUILTIN_METRICS)} nor module:Class; "
                          "pass one of those.")
    try:
        tasks = importlib.import_module("int8kit.evaluate.tasks")
    except ImportError:
        raise ConfigError(f"--metric {metric}{' with --postprocess' if postprocess else ''} needs the task metrics "
                          "(int8kit.evaluate.tasks), which this int8kit lacks; use agreement, top1, top5 or cosine.") from None
    return tasks.make_metric(metric, postprocess=postprocess)


def _as_score(raw: Any) -> Score:
    """A task module's score (value, n, low, high) as this package's ``Score``."""
    return Score(float(raw.value), int(raw.n), float(raw.low), float(raw.high))
