"""One model's task metric over a subset of the evaluation samples: which stored batches (and
which rows of them) the subset covers, and the folding of those rows into a metric."""

from __future__ import annotations

from typing import Any

import numpy as np

from int8kit.errors import DataError, Int8kitError
from int8kit.evaluate.labels import take
from int8kit.evaluate.tasks import MetricSpec, finish
from int8kit.evaluate.uncertainty import Score

Plan = list[tuple[int, int, np.ndarray]]  # (record, its first sample, the record's rows in the subset)


def subset_plan(record_rows: list[int], samples: slice | range | None) -> tuple[Plan, np.ndarray, tuple[int, int, int]]:
    """The records a subset of the samples touches, every chosen sample index in order, and the
    subset's key (start, stop, step) that pairs two scores."""
    total = sum(record_rows)
    if samples is None:
        chosen = range(total)
    elif isinstance(samples, slice):
        chosen = range(*samples.indices(total))
    elif isinstance(samples, range):
        chosen = samples
        if chosen.step > 0 and len(chosen) and (chosen.start < 0 or chosen[-1] >= total):
            raise DataError(f"samples={samples} reaches outside the {total} evaluation samples; expected indices "
                            f"0-{total - 1}; pass a range inside them.")
    else:
        raise DataError(f"samples= is a {type(samples).__name__}; expected a slice, a range or None.")
    if chosen.step <= 0:
        raise DataError(f"samples={samples} steps backwards; expected an increasing slice or range.")
    if not len(chosen):
        raise DataError(f"samples={samples} selects none of the {total} evaluation samples; expected at least one.")
    index = np.arange(chosen.start, chosen.stop, chosen.step, dtype=np.int64)
    plan: Plan = []
    start = 0
    for record, n in enumerate(record_rows):
        lo, hi = np.searchsorted(index, [start, start + n])
        if hi > lo:
            plan.append((record, start, index[lo:hi] - start))
        start += n
    return plan, index, (chosen.start, chosen.stop, chosen.step)


def pick_rows(outputs: dict[str, np.ndarray], local: np.ndarray, n: int, where: str) -> dict[str, np.ndarray]:
    """The rows ``local`` of a batch of ``n`` samples from each output (all of it when every row is chosen)."""
    if len(local) == n:
        return outputs
    picked = {}
    for name, arr in outputs.items():
        if np.ndim(arr) == 0 or len(arr) != n:
            raise DataError(f"output '{name}' of shape {np.shape(arr)} has no axis of the batch's {n} samples, so {where} "
                            "cannot be split; expected a subset that starts and ends on a batch boundary; pass "
                            "samples= aligned to the batch size.")
        picked[name] = arr[local]
    return picked


class TaskRun:
    """One metric folding one model's rows of the subset (labels, or the FP32 rows, as it asks)."""

    def __init__(self, spec: MetricSpec, output: str, labels: Any, key: tuple[int, int, int]) -> None:
        if spec.needs_labels and labels is None:
            alt = " or --metric agreement (the FP32 model's top-1 as labels)" if spec.name in ("top1", "top5") else ""
            raise DataError(f"--metric {spec.name} needs labels but the evaluation data has none; expected --labels "
                            f"(labels=) or data that carries them (class sub-folders, an LMDB's data.label); pass them{alt}.")
        self.spec, self.labels, self.key = spec, labels, key
        self.metric = spec(output)
        self.samples = 0

    def add(self, fp32: dict[str, np.ndarray], outputs: dict[str, np.ndarray], index: np.ndarray) -> None:
        """Fold in one batch: ``outputs`` of the model scored, ``fp32`` the same rows' FP32 outputs,
        ``index`` the rows' sample indices."""
        if self.spec.labels_from == "fp32":
            labels = fp32
        else:
            labels = None if self.labels is None else take(self.labels, index)
        try:
            self.metric.update(outputs, labels)
        except Int8kitError:
            raise
        except Exception as exc:  # the user's update(): one line that names it and the samples
            raise DataError(f"metric '{self.spec.name}': update() failed on evaluation samples {int(index[0])}-{int(index[-1])} "
                            f"({type(exc).__name__}: {exc}); expected update(outputs, labels) to fold one batch in; "
                            "fix the metric (docs/metrics.md).") from None
        self.samples += len(index)

    def score(self) -> Score:
        return finish(self.spec, self.metric, self.samples, self.key)
