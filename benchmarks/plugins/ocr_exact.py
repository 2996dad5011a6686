"""CTC exact match of a text-line recogniser (PP-OCRv4 rec), written as an int8kit metric plugin:

    int8kit eval rec.onnx rec_int8.onnx --data test.npz --labels test_labels.npy \
        --metric benchmarks.plugins.ocr_exact:ExactMatch
    int8kit eval rec.onnx rec_int8.onnx --data test.npz --metric benchmarks.plugins.ocr_exact:FP32ExactMatch

A line counts when the greedy CTC decoding of the model's (N, T, C) probabilities (argmax per
step, repeats merged, blanks dropped) equals its label exactly, spaces at either end aside (the
last class is the space; PP-OCRv4 reads a crop's blank margins as spaces: on the 200 rendered
test lines every FP32 miss of the raw comparison was a space). ``RawFP32ExactMatch`` counts
every character, end spaces too: bench_ocr's "exact match" exactly. ``ExactMatch`` reads labels as
rows of class indices padded with -1 (benchmarks/realdata_ocr_labels.py makes them for the
rendered test lines); ``FP32ExactMatch`` needs none: the FP32 model's decoding is the label
(bench_ocr's "exact match").
"""
from __future__ import annotations

from typing import Any

import numpy as np

from benchmarks.bench_ocr import ctc_greedy

PAD = -1


class ExactMatch:
    """Fraction of lines decoded exactly as their label (higher is better)."""

    binary = True  # per-line hits: the binomial interval applies
    strip_ends = True  # spaces at either end of a line do not count

    def __init__(self) -> None:
        self.hits: list[bool] = []

    def update(self, outputs: dict[str, np.ndarray], labels: Any) -> None:
        if labels is None:
            raise ValueError("ExactMatch needs labels (text indices padded with -1); pass --labels, or use FP32ExactMatch")
        probs = next(iter(outputs.values()))
        space = probs.shape[-1] - 1
        for got, want in zip(ctc_greedy(probs), labels):
            want = [int(i) for i in np.asarray(want).reshape(-1) if i != PAD]
            if self.strip_ends:
                got, want = _strip(list(got), space), _strip(want, space)
            self.hits.append(list(got) == want)

    def score(self) -> float:
        return float(np.mean(self.hits)) if self.hits else float("nan")

    def per_sample(self) -> np.ndarray:
        return np.asarray(self.hits, dtype=np.float64)


def _strip(indices: list[int], space: int) -> list[int]:
    """The indices without spaces at either end."""
    while indices and indices[0] == space:
        indices = indices[1:]
    while indices and indices[-1] == space:
        indices = indices[:-1]
    return indices


class FP32ExactMatch(ExactMatch):
    """Fraction of lines decoded exactly as the FP32 model decodes them."""

    labels_from = "fp32"  # update() gets the FP32 outputs of the same lines as labels

    def update(self, outputs: dict[str, np.ndarray], labels: Any) -> None:
        super().update(outputs, [np.asarray(t, dtype=np.int64) for t in ctc_greedy(next(iter(labels.values())))])


class RawFP32ExactMatch(FP32ExactMatch):
    """bench_ocr's exact match: the FP32 decoding as the label, every character counted."""

    strip_ends = False
