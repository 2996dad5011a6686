"""Compare an INT8 model with its FP32 original: accuracy, output similarity, latency and size.

Both models run in onnxruntime over the same batches in one streaming pass; memory does not grow
with the number of samples.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from tabulate import tabulate
from tqdm import tqdm

from int8kit.errors import DataError, ModelError
from int8kit.evaluate import metrics
from int8kit.data.sources import SampleBatches, batches_from, model_input_specs
from int8kit.graph.io import as_model
from int8kit.runtime.session import make_session, run_checked

log = logging.getLogger(__name__)

ModelLike = onnx.ModelProto | str | os.PathLike


@dataclasses.dataclass
class OutputSimilarity:
    """How close the INT8 model's output is to the FP32 one."""

    name: str
    mean_cosine: float
    max_abs_error: float
    # ||INT8 - FP32|| / ||FP32|| over all samples: meaningful where a per-sample cosine is not
    # (one value per sample: a regression output's cosine is always 1)
    relative_error: float = 0.0


@dataclasses.dataclass
class EvalResult:
    """Everything ``compare_models`` measured. Fields are ``None`` where they do not apply.

    ``latency_ratio`` is INT8 latency / FP32 latency (below 1 means the INT8 model is faster).
    """

    output: str
    samples: int
    fp32_top1: float | None = None
    int8_top1: float | None = None
    fp32_top5: float | None = None
    int8_top5: float | None = None
    top1_agreement: float | None = None
    outputs: list[OutputSimilarity] = dataclasses.field(default_factory=list)
    fp32_latency_ms: float | None = None
    int8_latency_ms: float | None = None
    latency_ratio: float | None = None
    latency_batch: int | None = None  # samples per latency run: 1, or the model's fixed batch
    fp32_size_bytes: int | None = None
    int8_size_bytes: int | None = None
    layers: list[Any] | None = None  # per-tensor ``layerwise.LayerError``s when asked for (evaluate(per_layer=True))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict; non-finite floats become ``None`` (``layers`` only when measured)."""
        d = _finite(dataclasses.asdict(self))
        if self.layers is None:
            d.pop("layers")
        return d

    def to_table(self) -> str:
        """A human-readable FP32-vs-INT8 table."""
        rows: list[list[Any]] = []
        for label, a, b in (
            ("top-1 accuracy", self.fp32_top1, self.int8_top1),
            ("top-5 accuracy", self.fp32_top5, self.int8_top5),
        ):
            if a is not None and b is not None:
                rows.append([label, _pct(a), _pct(b), f"{(b - a) * 100:+.2f} pts"])
        if self.top1_agreement is not None:
            rows.append([f"top-1 agreement ({self.output})", "", _pct(self.top1_agreement), ""])
        for sim in self.outputs:
            rows.append([f"mean cosine ({sim.name})", "", f"{sim.mean_cosine:.6f}", ""])
            rows.append([f"max abs error ({sim.name})", "", f"{sim.max_abs_error:.6g}", ""])
            rows.append([f"relative error ({sim.name})", "", f"{sim.relative_error:.6g}", ""])
        if self.fp32_latency_ms is not None and self.int8_latency_ms is not None:
            ratio = f"x{self.latency_ratio:.2f}" if self.latency_ratio is not None else ""
            rows.append([f"latency, batch {self.latency_batch or 1} (ms)", f"{self.fp32_latency_ms:.3f}", f"{self.int8_latency_ms:.3f}", ratio])
        if self.fp32_size_bytes is not None and self.int8_size_bytes is not None:
            ratio = f"x{self.int8_size_bytes / self.fp32_size_bytes:.2f}" if self.fp32_size_bytes else ""
            rows.append(["model size (KiB)", f"{self.fp32_size_bytes / 1024:.1f}", f"{self.int8_size_bytes / 1024:.1f}", ratio])
        title = f"{self.samples} samples, output '{self.output}'"
        return title + "\n" + tabulate(rows, headers=["metric", "FP32", "INT8", "change"], tablefmt="simple")


def _relative(err_sq: float, ref_sq: float) -> float:
    if ref_sq > 0:
        return math.sqrt(err_sq / ref_sq)
    return 0.0 if err_sq == 0 else float("inf")


def _pct(x: float) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{x * 100:.2f}%"


def _finite(obj: Any) -> Any:
    """Replace NaN/Inf with None so ``json.dumps`` writes valid JSON."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return obj


def load_labels(labels: np.ndarray | str | os.PathLike) -> np.ndarray:
    """Labels as a 1-D int64 array from an array, a ``.npy`` file or a text file (one per line).

    One-hot (N, C) arrays are reduced to class indices.
    """
    return _labels_and_width(labels)[0]


def _labels_and_width(labels: np.ndarray | str | os.PathLike) -> tuple[np.ndarray, int | None]:
    """``load_labels`` and the class count of one-hot labels (``None`` for class indices)."""
    if isinstance(labels, (str, os.PathLike)):
        path = Path(labels)
        if not path.is_file():
            what = "is a folder" if path.is_dir() else "does not exist"
            raise DataError(f"labels file '{path}' {what}; expected a .npy or text file; check the path.")
        try:
            arr = np.load(path) if path.suffix == ".npy" else np.loadtxt(path, dtype=np.int64, ndmin=1)
        except Exception as exc:
            raise DataError(
                f"labels file '{path}' cannot be read ({type(exc).__name__}); expected a .npy array "
                "or one integer per line; fix or re-create the file."
            ) from None
    else:
        arr = np.asarray(labels)
    width = None
    if arr.ndim == 2 and arr.shape[1] > 1:
        numeric = np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_
        if not (numeric and np.isin(arr, (0, 1)).all() and (arr.sum(axis=1) == 1).all()):
            raise DataError(f"labels of shape {arr.shape} are not one-hot rows (a single 1 per row, else 0); "
                            "expected class indices of shape (N,) or one-hot (N, classes).")
        arr, width = arr.argmax(axis=1), arr.shape[1]
    arr = arr.reshape(-1)
    if arr.dtype == np.bool_ or not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise DataError(f"labels have dtype {arr.dtype}; expected integer class indices; pass an int array.")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        if not np.all(np.mod(arr, 1) == 0):
            raise DataError(
                f"labels have dtype {arr.dtype} with non-integer values; expected class indices; "
                "pass integer labels."
            )
    return arr.astype(np.int64), width


def _count_samples(data: Any) -> int | None:
    """Sample count of in-memory data before any batching, else ``None``."""
    if isinstance(data, np.ndarray) and data.ndim:
        return int(data.shape[0])
    if isinstance(data, dict) and data and all(np.ndim(v) for v in data.values()):
        return int(len(next(iter(data.values()))))
    return None


def _source_class_labels(source: Any) -> np.ndarray | None:
    """Class-index labels carried by a sample source (LMDB data.label, class sub-folders), if any."""
    labels = source.labels() if isinstance(source, SampleBatches) else None
    if not labels or not all(isinstance(v, (int, np.integer)) for v in labels):
        return None  # unlabelled, or detection boxes: no top-k accuracy
    return np.asarray(labels, dtype=np.int64)


def _label_mismatch(n_labels: int, n_samples: int) -> DataError:
    return DataError(
        f"labels have {n_labels} entries but the data has {n_samples} samples; "
        "expected one label per sample; pass the labels that belong to this data."
    )


def _model_inputs(model: ModelLike) -> tuple[onnx.ModelProto, int | None]:
    """Loaded model and its size (serialized, weights included even when they lie in an external
    data file beside the .onnx; only for models given as a path)."""
    if isinstance(model, onnx.ModelProto):
        return model, None
    loaded = as_model(model)
    return loaded, max(Path(model).stat().st_size, loaded.ByteSize())


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
    sessions = [m if isinstance(m, ort.InferenceSession) else make_session(m, threads=threads) for m in models]
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


class _Accumulator:
    """Streaming sums for every metric, one batch at a time."""

    def __init__(self, names: list[str], output: str, labels: np.ndarray | None, label_width: int | None = None) -> None:
        self.names, self.output, self.labels, self.label_width = names, output, labels, label_width
        self.samples = 0
        self.cos_sum = dict.fromkeys(names, 0.0)
        self.max_err = dict.fromkeys(names, 0.0)
        self.err_sq = dict.fromkeys(names, 0.0)
        self.ref_sq = dict.fromkeys(names, 0.0)
        self.hits = {"fp32_top1": 0.0, "int8_top1": 0.0, "fp32_top5": 0.0, "int8_top5": 0.0}
        self.agree = 0.0
        self.classes: int | None = None  # set when the chosen output is 2-D

    def add(self, fp: dict[str, np.ndarray], q: dict[str, np.ndarray]) -> int:
        n = len(fp[self.output]) if np.ndim(fp[self.output]) else 1
        for name in self.names:
            if fp[name].shape != q[name].shape:
                raise ModelError(
                    f"output '{name}' has shape {fp[name].shape} in the FP32 model but {q[name].shape} "
                    "in the INT8 model; expected equal shapes; compare an INT8 model made from this FP32 one."
                )
            if not np.isfinite(fp[name]).all():
                raise DataError(
                    f"the FP32 model's output '{name}' holds NaN/Inf for evaluation samples {self.samples}-{self.samples + n - 1}; "
                    "expected finite outputs to compare against; check the data's scale and preprocessing."
                )
            # Per-sample cosine needs the batch axis; scalar or batch-less outputs count as one sample.
            bn = len(fp[name]) if np.ndim(fp[name]) else 1
            self.cos_sum[name] += metrics.mean_cosine(fp[name], q[name]) * bn if bn else 0.0
            self.max_err[name] = max(self.max_err[name], metrics.max_abs_error(fp[name], q[name]))
            a, b = fp[name].astype(np.float64).ravel(), q[name].astype(np.float64).ravel()
            self.err_sq[name] += float((a - b) @ (a - b))
            self.ref_sq[name] += float(a @ a)
        a, b = fp[self.output], q[self.output]
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
            raise _label_mismatch(len(self.labels), self.samples + n)
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
        n = self.samples
        res = EvalResult(output=self.output, samples=n)
        res.outputs = [OutputSimilarity(m, self.cos_sum[m] / n, self.max_err[m], _relative(self.err_sq[m], self.ref_sq[m]))
                       for m in self.names]
        if self.classes is not None:
            res.top1_agreement = self.agree / n
            if self.labels is not None:
                res.fp32_top1, res.int8_top1 = self.hits["fp32_top1"] / n, self.hits["int8_top1"] / n
                if self.classes > 5:  # top-5 of five or fewer classes is always 1
                    res.fp32_top5, res.int8_top5 = self.hits["fp32_top5"] / n, self.hits["int8_top5"] / n
        return res


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
) -> EvalResult:
    """Run both models over ``data`` and measure how far the INT8 model is from the FP32 one.

    ``data`` is anything ``int8kit.data.sources.batches_from`` accepts. ``output`` picks the output
    for accuracy and agreement (default: the first). ``labels`` (array or .npy path) must have one
    entry per sample. ``threads`` applies to the evaluation sessions; latency always uses batch 1
    and one thread.
    """
    fp_proto, fp_size = _model_inputs(fp32_model)
    q_proto, q_size = _model_inputs(int8_model)
    fp_sess = make_session(fp_proto, threads=threads)
    q_sess = make_session(q_proto, threads=threads)
    fp_inputs, q_inputs = sorted(i.name for i in fp_sess.get_inputs()), sorted(i.name for i in q_sess.get_inputs())
    if fp_inputs != q_inputs:
        raise ModelError(
            f"the INT8 model takes inputs {q_inputs} but the FP32 model {fp_inputs}; expected the same inputs; "
            "compare an INT8 model made from this FP32 one."
        )
    names = [o.name for o in fp_sess.get_outputs()]
    q_names = {o.name for o in q_sess.get_outputs()}
    missing = [n for n in names if n not in q_names]
    if missing:
        raise ModelError(
            f"the INT8 model lacks outputs {missing} of the FP32 model; expected the same output names; "
            "compare an INT8 model made from this FP32 one."
        )
    output = output or names[0]
    if output not in names:
        raise DataError(f"output '{output}' is not an output of the model; expected one of {names}; pick one of those.")
    label_arr, label_width = _labels_and_width(labels) if labels is not None else (None, None)
    specs = model_input_specs(fp_proto)
    source = batches_from(data, specs, batch_size=batch_size)
    if label_arr is None:
        label_arr = _source_class_labels(source)
    # Latency runs at batch 1 unless the model fixes its batch size.
    latency_rows = 1 if all(s.batch_dim is None for s in specs) else None
    # A fixed-batch model may skip a tail of samples; labels must still match the whole data.
    total = _count_samples(data) or source.num_samples
    if label_arr is not None and total is not None and total != len(label_arr):
        raise _label_mismatch(len(label_arr), total)

    acc = _Accumulator(names, output, label_arr, label_width)
    first_feed: dict[str, np.ndarray] | None = None
    with tqdm(total=source.num_samples, unit="sample", desc="evaluate", disable=not progress) as bar:
        for feed in source:
            if first_feed is None:
                first_feed = {k: v[:latency_rows] for k, v in feed.items()}
            at = f"evaluation samples {acc.samples}-{acc.samples + len(next(iter(feed.values()))) - 1}"
            fp_out = dict(zip(names, run_checked(fp_sess, names, feed, where=f"{at} (FP32 model)")))
            q_out = dict(zip(names, run_checked(q_sess, names, feed, where=f"{at} (INT8 model)")))
            bar.update(acc.add(fp_out, q_out))
    if acc.samples == 0:
        raise DataError("the evaluation data yielded no samples; expected at least one; check the data source.")
    if label_arr is not None and total is None and acc.samples != len(label_arr):
        raise _label_mismatch(len(label_arr), acc.samples)

    if label_arr is not None and acc.classes is None:
        log.warning("labels were given but output '%s' has no class axis (not 2-D); accuracy is not measured", output)
    result = acc.result()
    result.fp32_size_bytes, result.int8_size_bytes = fp_size, q_size
    if latency and first_feed is not None:
        result.fp32_latency_ms, result.int8_latency_ms = measure_latencies([fp_proto, q_proto], first_feed, threads=1)
        result.latency_batch = len(next(iter(first_feed.values()))) if first_feed else None
        if result.fp32_latency_ms > 0:
            result.latency_ratio = result.int8_latency_ms / result.fp32_latency_ms
    log.info("compared %d samples on output '%s'", result.samples, output)
    return result
