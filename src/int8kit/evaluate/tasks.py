"""Task metrics: what a model is for, scored on its outputs (``--metric``; docs/metrics.md).

A metric folds the batches of one model in and returns one number, higher is better::

    class ExactMatch:                       # the TaskMetric protocol (the manual's
        labels_from = "labels"              # postprocess_and_calc_score_class)
        def __init__(self): self.hits = []
        def update(self, outputs, labels):  # outputs: {name: batch array}; labels: this batch's labels
            ...
        def score(self): return float(np.mean(self.hits))
        def per_sample(self): return np.asarray(self.hits)   # optional: enables the interval

``make_metric`` turns a spec (``top1``, ``top5``, ``agreement``, ``cosine``, ``map`` or
``module:Class``) into a ``MetricSpec``, a factory of fresh metrics; ``Evaluator.task_score`` runs one.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import numpy as np

from int8kit.errors import ConfigError, DataError
from int8kit.evaluate import metrics
from int8kit.evaluate.plugins import load_object
from int8kit.evaluate.uncertainty import Paired, Score, is_binary, score_with_interval

BUILTIN = ("top1", "top5", "agreement", "cosine", "map")
LABELS_FROM = ("labels", "fp32")


@runtime_checkable
class TaskMetric(Protocol):
    """One model's task score over batches. ``update(outputs, labels)``: ``outputs`` maps every
    output name to this batch's array (samples first), ``labels`` this batch's labels (an array
    or a list, one per sample; ``None`` without labels) or, when the class sets
    ``labels_from = "fp32"``, the FP32 model's outputs of the same samples. ``score()``: the score,
    higher is better. Optional: ``per_sample()`` (values whose mean is the score: gives the
    interval; ``binary = True`` declares them hits, for the binomial interval, else 0/1 values
    count as hits) or ``score_of(indices)`` (the score of a resample of the samples seen, by index)."""

    def update(self, outputs: dict[str, np.ndarray], labels: Any) -> None: ...

    def score(self) -> float: ...


@dataclasses.dataclass(frozen=True)
class MetricSpec:
    """A factory of fresh metrics: ``spec(output)`` makes one for the evaluator's chosen output.

    ``labels_from``: what ``update`` gets as labels (``labels``: the data's labels; ``fp32``: the
    FP32 outputs). ``needs_labels``: refuse to run without them (built-in accuracy and mAP)."""

    name: str
    make: Callable[[str | None], Any]
    labels_from: str = "labels"
    needs_labels: bool = False

    def __call__(self, output: str | None = None) -> Any:
        metric = self.make(output)
        for method in ("update", "score"):
            if not callable(getattr(metric, method, None)):
                raise ConfigError(f"metric '{self.name}' ({type(metric).__name__}) has no {method}() method; expected the "
                                  "TaskMetric protocol: update(outputs, labels) and score(); add the method (docs/metrics.md).")
        return metric


def _chosen(outputs: dict[str, np.ndarray], output: str | None) -> np.ndarray:
    return outputs[output] if output is not None else next(iter(outputs.values()))


def _class_scores(arr: np.ndarray, what: str) -> np.ndarray:
    if arr.ndim != 2:
        raise DataError(f"--metric {what} reads class scores of shape (samples, classes) but the output has shape "
                        f"{arr.shape}; pick a class-score output with --output.")
    return arr


class TopK:
    """Top-k accuracy against class-index labels (``k=1``: ``top1``)."""

    labels_from = "labels"
    binary = True

    def __init__(self, k: int = 1, output: str | None = None) -> None:
        self.k, self.output, self.hits = k, output, []

    def update(self, outputs: dict[str, np.ndarray], labels: Any) -> None:
        scores = _class_scores(np.asarray(_chosen(outputs, self.output)), f"top{self.k}")
        lab = np.asarray(labels) if not isinstance(labels, list) or all(np.ndim(v) == 0 for v in labels) else np.asarray(labels, dtype=object)
        if lab.ndim != 1 or not np.issubdtype(lab.dtype, np.integer):
            raise DataError(f"--metric top{self.k} reads one class index per sample but the labels are {lab.dtype} of shape "
                            f"{lab.shape} (text or boxes?); expected class indices; pass --labels with them, or pick the "
                            "metric these labels are for.")
        if len(lab) != len(scores):
            raise DataError(f"--metric top{self.k} got {len(lab)} labels for {len(scores)} samples; expected one class "
                            "index per sample; pass the labels of this data.")
        bad = np.flatnonzero((lab < 0) | (lab >= scores.shape[1]))
        if bad.size:
            raise DataError(f"label {int(lab[bad[0]])} is not a class of the output (0-{scores.shape[1] - 1}); "
                            "expected class indices of this model; check the labels.")
        self.hits.append(metrics.topk_hits(scores, lab, self.k).astype(np.float64))

    def per_sample(self) -> np.ndarray:
        return np.concatenate(self.hits) if self.hits else np.zeros(0)

    def score(self) -> float:
        v = self.per_sample()
        return float(v.mean()) if v.size else math.nan


class Agreement(TopK):
    """Top-1 agreement: the FP32 model's top-1 class is the label (the manual's mode without labels)."""

    labels_from = "fp32"

    def __init__(self, output: str | None = None) -> None:
        super().__init__(1, output)

    def update(self, outputs: dict[str, np.ndarray], labels: Any) -> None:
        ref = _class_scores(np.asarray(_chosen(labels, self.output)), "agreement")
        super().update(outputs, ref.argmax(axis=1))


class Cosine:
    """Per-sample cosine of the output against the FP32 output (embeddings, features)."""

    labels_from = "fp32"
    binary = False

    def __init__(self, output: str | None = None) -> None:
        self.output, self.values = output, []

    def update(self, outputs: dict[str, np.ndarray], labels: Any) -> None:
        self.values.append(metrics.sample_cosines(_chosen(labels, self.output), _chosen(outputs, self.output)))

    def per_sample(self) -> np.ndarray:
        return np.concatenate(self.values) if self.values else np.zeros(0)

    def score(self) -> float:
        v = self.per_sample()
        return float(v.mean()) if v.size else math.nan


def make_metric(spec: str, *, postprocess: str | None = None) -> MetricSpec:
    """The ``MetricSpec`` of ``spec``: ``top1``, ``top5``, ``agreement``, ``cosine``, ``map`` or
    ``module:Class`` (a ``TaskMetric`` class importable from the Python path or the current folder).
    ``postprocess`` (``module:function``, ``map`` only) turns raw outputs into boxes."""
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigError(f"--metric {spec!r} is not a metric; expected one of {', '.join(BUILTIN)} or module:Class.")
    spec = spec.strip()
    if spec.lower() in BUILTIN:  # "mAP", "Top1": the built-in names in any case
        spec = spec.lower()
    if postprocess is not None and spec != "map":
        raise ConfigError(f"--postprocess applies to --metric map; got --metric {spec}; a module:Class metric does "
                          "its own post-processing in update(); drop --postprocess.")
    if spec in ("top1", "top5"):
        k = int(spec[3])
        return MetricSpec(spec, lambda out: TopK(k, out), "labels", needs_labels=True)
    if spec == "agreement":
        return MetricSpec(spec, Agreement, "fp32")
    if spec == "cosine":
        return MetricSpec(spec, Cosine, "fp32")
    if spec == "map":
        from int8kit.evaluate.detection import MeanAP, load_postprocess

        hook = load_postprocess(postprocess) if postprocess else None
        return MetricSpec(spec, lambda out: MeanAP(out, postprocess=hook), "labels", needs_labels=True)
    if ":" in spec:
        cls = load_object(spec, what="TaskMetric class", flag="--metric")
        return plugin_spec(cls, spec)
    close = difflib.get_close_matches(spec.lower(), BUILTIN, n=1)
    hint = f"did you mean '{close[0]}'?" if close else "or name your own class as module:Class"
    raise ConfigError(f"--metric '{spec}' is not a metric; expected one of {', '.join(BUILTIN)} or module:Class; {hint}")


def plugin_spec(cls: Any, name: str | None = None) -> MetricSpec:
    """A ``MetricSpec`` for a user's ``TaskMetric`` class (or any zero-argument factory)."""
    name = name or getattr(cls, "__qualname__", repr(cls))
    if not callable(cls):
        raise ConfigError(f"--metric '{name}' names a {type(cls).__name__}, not a class; expected a TaskMetric class.")
    labels_from = getattr(cls, "labels_from", "labels")
    if labels_from not in LABELS_FROM:
        raise ConfigError(f"metric '{name}' has labels_from = {labels_from!r}; expected one of {LABELS_FROM}; fix the class attribute.")

    def make(_output: str | None) -> Any:
        try:
            return cls()
        except TypeError as exc:
            raise ConfigError(f"metric '{name}' cannot be made without arguments ({exc}); expected a class whose "
                              "__init__ takes no required arguments.") from None

    return MetricSpec(name, make, labels_from)


def as_metric_spec(metric: Any, postprocess: str | None = None) -> MetricSpec:
    """``metric`` as a ``MetricSpec``: a spec string, a ``MetricSpec``, or a TaskMetric class."""
    if isinstance(metric, MetricSpec):
        return metric
    if isinstance(metric, str):
        return make_metric(metric, postprocess=postprocess)
    return plugin_spec(metric)


def finish(spec: MetricSpec, metric: Any, n: int, key: Any) -> Score:
    """The ``Score`` of a metric that saw ``n`` samples (``key``: which ones), checking what the
    plugin returned."""
    try:
        value = float(metric.score())
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"metric '{spec.name}': score() did not return a number ({exc}); expected a float, higher is better.") from None
    values, score_of, binary = None, getattr(metric, "score_of", None), False
    if callable(getattr(metric, "per_sample", None)):
        values = np.asarray(metric.per_sample(), dtype=np.float64).reshape(-1)
        if len(values) != n:
            raise ConfigError(f"metric '{spec.name}': per_sample() returned {len(values)} values for {n} samples; "
                              "expected one value per sample seen by update().")
        if n and math.isfinite(value) and not math.isclose(values.mean(), value, rel_tol=1e-6, abs_tol=1e-9):
            raise ConfigError(f"metric '{spec.name}': per_sample() values average {values.mean():.6g} but score() is "
                              f"{value:.6g}; expected values whose mean is the score (or define score_of(indices) instead).")
        # accuracy-like (hits): as the metric says, else as its values show
        declared = getattr(metric, "binary", None)
        binary = is_binary(values) if declared is None else bool(declared)
    return score_with_interval(spec.name, value, n, Paired(key, values, score_of if callable(score_of) else None, binary))
