"""Compare one INT8 model with its FP32 original: accuracy, output similarity, latency and size.

``compare_models`` is a one-candidate ``Evaluator``; to score several candidates on the same
data, keep one ``Evaluator`` (the FP32 model then runs once for all of them).
"""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np

from int8kit.evaluate.evaluator import Evaluator
from int8kit.evaluate.labels import load_labels
from int8kit.evaluate.latency import LATENCY_TURN_RUNS, measure_latencies, measure_latency
from int8kit.evaluate.reference import ModelLike
from int8kit.evaluate.result import EvalResult, OutputSimilarity

__all__ = ["LATENCY_TURN_RUNS", "EvalResult", "OutputSimilarity", "compare_models", "load_labels",
           "measure_latencies", "measure_latency"]

log = logging.getLogger(__name__)


def compare_models(
    fp32_model: ModelLike,
    int8_model: ModelLike,
    data: Any,
    *,
    labels: np.ndarray | str | os.PathLike | None = None,
    output: str | None = None,
    batch_size: int | None = None,
    threads: int | None = None,
    latency: bool = True,
    progress: bool = True,
    cache: bool | str | os.PathLike = True,
) -> EvalResult:
    """Run both models over ``data`` and measure how far the INT8 model is from the FP32 one.

    ``data`` is anything ``int8kit.data.sources.batches_from`` accepts. ``output`` picks the output
    for accuracy and agreement (default: the first). ``labels`` (array or .npy path) must have one
    entry per sample. ``threads`` applies to the evaluation sessions; latency always uses batch 1
    and one thread. ``cache``: where the FP32 reference is kept (see ``Evaluator``); a reference
    cached by an earlier call for the same model and data is reused.
    """
    evaluator = Evaluator(fp32_model, data, labels=labels, output=output, batch_size=batch_size, threads=threads,
                          cache=cache, progress=progress)
    result = evaluator.evaluate(int8_model, latency=latency)
    log.info("compared %d samples on output '%s'", result.samples, result.output)
    return result
