"""Streaming scores of one candidate against the FP32 reference: per-output errors, top-1
agreement and, with labels, top-1/top-5 accuracy of both models."""

from __future__ import annotations

import numpy as np

from int8kit.errors import DataError, ModelError
from int8kit.evaluate import metrics
from int8kit.evaluate.accumulate import ErrorAccumulator
from int8kit.evaluate.labels import label_mismatch
from int8kit.evaluate.result import EvalResult, OutputSimilarity


class Scorer:
    """Folds (FP32 outputs, INT8 outputs) batch pairs into an ``EvalResult``."""

    def __init__(self, names: list[str], output: str, labels: np.ndarray | None, label_width: int | None = None) -> None:
        self.names, self.output, self.labels, self.label_width = names, output, labels, label_width
        self.samples = 0
        self.errors = {n: ErrorAccumulator() for n in names}
        self.hits = {"fp32_top1": 0.0, "int8_top1": 0.0, "fp32_top5": 0.0, "int8_top5": 0.0}
        self.agree = 0.0
        self.classes: int | None = None  # set when the chosen output is 2-D

    def add(self, fp: dict[str, np.ndarray], q: dict[str, np.ndarray]) -> int:
        """Fold one batch in; returns its samples."""
        n = len(fp[self.output]) if np.ndim(fp[self.output]) else 1
        for name in self.names:
            if fp[name].shape != q[name].shape:
                raise ModelError(
                    f"output '{name}' has shape {fp[name].shape} in the FP32 model but {q[name].shape} "
                    "in the INT8 model; expected equal shapes; compare an INT8 model made from this FP32 one."
                )
            self.errors[name].add(fp[name], q[name])
        a, b = np.asarray(fp[self.output]), q[self.output]
        if a.ndim == 2 and n:
            self.classes = a.shape[1]
            self.agree += metrics.top1_agreement(a, b) * n
            if self.labels is not None:
                self._add_accuracy(a, b, n)
        self.samples += n
        return n

    def _add_accuracy(self, a: np.ndarray, b: np.ndarray, n: int) -> None:
        if self.label_width is not None and self.label_width != a.shape[1]:
            raise DataError(f"the labels are one-hot over {self.label_width} classes but output '{self.output}' has "
                            f"{a.shape[1]}; expected one column per class; pass labels for this model.")
        lab = self.labels[self.samples : self.samples + n]
        if len(lab) < n:
            raise label_mismatch(len(self.labels), self.samples + n)
        bad = np.flatnonzero((lab < 0) | (lab >= a.shape[1]))
        if bad.size:
            raise DataError(
                f"label {int(lab[bad[0]])} of sample {self.samples + int(bad[0])} is not a class of output '{self.output}' "
                f"(0-{a.shape[1] - 1}); expected class indices of this model, check the labels file."
            )
        for k in (1, 5):
            self.hits[f"fp32_top{k}"] += metrics.topk_accuracy(a, lab, k) * n
            self.hits[f"int8_top{k}"] += metrics.topk_accuracy(b, lab, k) * n

    def result(self) -> EvalResult:
        """The scores of every batch folded in."""
        n = self.samples
        res = EvalResult(output=self.output, samples=n)
        for name in self.names:
            e = self.errors[name].result()
            res.outputs.append(OutputSimilarity(name, e.cosine, e.max_abs_error, e.relative_error, e.min_cosine, e.sqnr_db))
        if self.classes is not None:
            res.top1_agreement = self.agree / n
            if self.labels is not None:
                res.fp32_top1, res.int8_top1 = self.hits["fp32_top1"] / n, self.hits["int8_top1"] / n
                if self.classes > 5:  # top-5 of five or fewer classes is always 1
                    res.fp32_top5, res.int8_top5 = self.hits["fp32_top5"] / n, self.hits["int8_top5"] / n
        return res
