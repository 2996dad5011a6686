"""Task scores of candidates on the two halves of the test set, through one ``Evaluator``: the FP32
reference is computed once for the whole set; the first half (validation) scores every candidate,
the second (held out) only the chosen one. Scores, intervals and paired drops are those of
``int8kit.evaluate`` (``task_score``, ``uncertainty.drop``)."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx

from int8kit.errors import DataError
from int8kit.evaluate.accumulate import ErrorAccumulator
from int8kit.evaluate.evaluator import Evaluator
from int8kit.evaluate.tasks import make_metric
from int8kit.evaluate.uncertainty import Drop, Score, drop

PARTS = ("validation", "held_out")
MIN_SAMPLES = 4  # two per half: below that no score means anything


class TaskScorer:
    """Scores of ``metric`` for FP32 (``model=None``) and INT8 candidates on either half."""

    def __init__(self, fp32: onnx.ModelProto, data: Any, metric: str, *, labels: Any = None, postprocess: str | None = None,
                 batch_size: int | None = None, progress: bool = False) -> None:
        self.metric = metric
        self.spec = make_metric(metric, postprocess=postprocess)
        self.evaluator = Evaluator(fp32, data, labels=labels, batch_size=batch_size, progress=progress)
        n = int(self.evaluator.reference.meta["samples"])
        if n < MIN_SAMPLES:
            raise DataError(f"the test data has {n} samples; expected at least {MIN_SAMPLES} (half validate the search, "
                            "half are held out for the report); pass more test samples.")
        self.evaluator.progress = False  # the search shows one bar of its own per trial
        half = n // 2
        self.parts = {"validation": slice(0, half), "held_out": slice(half, n)}
        self._fp32: dict[str, Score] = {}

    def fp32(self, part: str = "validation") -> Score:
        """The FP32 model's score on ``part`` (from the stored reference; computed once)."""
        if part not in self._fp32:
            self._fp32[part] = self.evaluator.task_score(None, self.spec, samples=self.parts[part])
        return self._fp32[part]

    def score(self, model: onnx.ModelProto, part: str = "validation", *,
              output_error: ErrorAccumulator | None = None) -> Score:
        """``model``'s score on ``part``: one INT8 pass over that half against the stored FP32
        reference (which also folds the output's error against FP32 into ``output_error``)."""
        return self.evaluator.task_score(model, self.spec, samples=self.parts[part], output_error=output_error)

    def drop(self, score: Score, part: str = "validation", relative: bool = False) -> Drop:
        """FP32 minus ``score`` on the same samples, with its paired interval."""
        return drop(self.fp32(part), score, relative)

    def latency_feed(self) -> dict[str, np.ndarray]:
        """The evaluator's latency feed: the first sample (a whole batch for a fixed-batch model)."""
        ref = self.evaluator.reference
        if not ref.records("feed"):
            raise DataError("the test data gave no sample to time; expected re-readable test data.")
        return {k: np.array(v) for k, v in ref.record("feed", 0).items()}
