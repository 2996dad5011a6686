"""Latency of models on one feed, the models taking turns so they share the machine's load."""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Sequence

import numpy as np
import onnx
import onnxruntime as ort

from int8kit.errors import DataError
from int8kit.runtime.session import make_session

ModelLike = onnx.ModelProto | str | os.PathLike


LATENCY_TURN_RUNS = 10  # counted runs per model per turn in measure_latencies


def measure_latency(
    model: ModelLike | ort.InferenceSession,
    feed: dict[str, np.ndarray],
    *,
    threads: int = 1,
    warmup: int = 5,
    runs: int = 50,
) -> float:
    """Median wall time in milliseconds of ``runs`` inferences on ``feed`` after ``warmup`` runs.

    A session passed in is used as is (its thread setting wins over ``threads``).
    """
    return measure_latencies([model], feed, threads=threads, warmup=warmup, runs=runs)[0]


def measure_latencies(
    models: Sequence[ModelLike | ort.InferenceSession],
    feed: dict[str, np.ndarray],
    *,
    threads: int = 1,
    warmup: int = 5,
    runs: int = 50,
) -> list[float]:
    """Median wall time in milliseconds of each model on ``feed``, the models taking turns.

    Taking turns exposes every model to the same machine load, so their ratio stays steady on a busy
    machine where timing one model after the other does not. A turn is one uncounted run and then up
    to ``LATENCY_TURN_RUNS`` counted runs back to back: the first run after another model has run
    finds cold caches (measured on EfficientNet-Lite0: INT8/FP32 0.465 with single-run turns against
    0.42-0.43 in steady state), and a deployed model runs back to back.
    """
    if runs < 1 or warmup < 0:
        raise DataError(f"latency got runs={runs}, warmup={warmup}; expected runs >= 1 and warmup >= 0.")
    # anything with run(None, feed) is a session already (onnxruntime's, or runtime.openvino's)
    sessions = [make_session(m, threads=threads) if isinstance(m, (str, os.PathLike, onnx.ModelProto)) else m for m in models]
    for _ in range(warmup):
        for sess in sessions:
            sess.run(None, feed)
    times: list[list[float]] = [[] for _ in sessions]
    while len(times[0]) < runs:
        turn = min(LATENCY_TURN_RUNS, runs - len(times[0]))
        for sess, own in zip(sessions, times):
            sess.run(None, feed)  # warms the caches after the other models' turns; not counted
            for _ in range(turn):
                t0 = time.perf_counter()
                sess.run(None, feed)
                own.append((time.perf_counter() - t0) * 1000.0)
    return [float(statistics.median(own)) for own in times]
