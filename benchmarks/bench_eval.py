"""FP32-vs-INT8 evaluation for the benchmark cases: agreement, accuracy, cosine, latency."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from benchmarks.realdata_common import Case
from benchmarks.realdata_minilm import mean_pool


def load_npz(path: Path) -> dict[str, np.ndarray]:
    """All arrays of an .npz, keyed by model input name."""
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


def _session(model: Path, threads: int | None = None):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3  # the PP-OCR exports' unused initializers warn on every session
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"])


def run_model(model: Path, data: dict[str, np.ndarray], batch: int = 32) -> np.ndarray:
    """First output of ``model`` over all samples, in batches."""
    sess = _session(model)
    n = len(next(iter(data.values())))
    outs = [sess.run(None, {k: v[i:i + batch] for k, v in data.items()})[0] for i in range(0, n, batch)]
    return np.concatenate(outs)


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of every sample (flattened) of ``a`` and ``b``."""
    a = a.reshape(len(a), -1).astype(np.float64)
    b = b.reshape(len(b), -1).astype(np.float64)
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return (a * b).sum(axis=1) / np.maximum(den, 1e-12)


def case_outputs(case: Case, model: Path, data: dict[str, np.ndarray] | None = None) -> np.ndarray:
    """What the metric compares: logits, or mask-aware mean-pooled embeddings for MiniLM."""
    data = data if data is not None else load_npz(case.test_npz)
    out = run_model(model, data)
    if case.kind == "embedding":
        return mean_pool(out, data["attention_mask"])
    return out


def compare(case: Case, fp32: np.ndarray, int8: np.ndarray) -> dict[str, float]:
    """Metrics of INT8 outputs against FP32 outputs (and labels where the case has them)."""
    res: dict[str, float] = {"cosine": float(cosines(fp32, int8).mean())}
    if case.kind in ("classify", "labels"):
        res["agreement"] = float((fp32.argmax(1) == int8.argmax(1)).mean())
    if case.kind == "labels" and case.labels is not None:
        labels = np.load(case.labels)
        res["accuracy"] = float((int8.argmax(1) == labels).mean())
        res["fp32_accuracy"] = float((fp32.argmax(1) == labels).mean())
    return res


def latency_ms(model: Path, sample: dict[str, np.ndarray], runs: int = 30, warmup: int = 5) -> float:
    """Median batch-1 latency with one intra-op thread."""
    return latency_pair_ms([model], sample, runs=runs, warmup=warmup)[0]


def latency_pair_ms(models: list[Path], sample: dict[str, np.ndarray], runs: int = 30, warmup: int = 5) -> list[float]:
    """Median batch-1 latencies of several models that take turns of back-to-back runs (one machine load for all)."""
    from int8kit.evaluate.compare import measure_latencies

    return measure_latencies([_session(m, threads=1) for m in models], sample, warmup=warmup, runs=runs)


def first_sample(case: Case) -> dict[str, np.ndarray]:
    """Batch-1 input for latency measurement."""
    return {k: v[:1] for k, v in load_npz(case.test_npz).items()}


def fp32_pass_seconds(case: Case, batch: int = 16) -> float:
    """Wall time of one plain FP32 inference pass over the calibration samples.

    The floor for any calibration that runs the model once on every sample.
    """
    data = load_npz(case.calib_npz)
    sess = _session(case.model_path)
    n = len(next(iter(data.values())))
    sess.run(None, {k: v[:batch] for k, v in data.items()})  # warm-up, not counted
    t = time.perf_counter()
    for i in range(0, n, batch):
        sess.run(None, {k: v[i:i + batch] for k, v in data.items()})
    return time.perf_counter() - t
