"""The ``Evaluator``: the FP32 reference of one data set, computed once, scored against any number
of INT8 candidates with one INT8 pass each.

    ev = Evaluator("model.onnx", "test.npy", labels="labels.npy")
    for candidate in candidates:
        print(ev.evaluate(candidate, latency=False).to_table())

The reference (every output of every sample, and on request every activation of the first few
samples) is stored on disk under ``<cache>/evaluate/<key>``, keyed by the model's fingerprint, the
data's content hash, the batch size and the onnxruntime version: a second evaluator of the same
model and data reads it instead of running the FP32 model. Data without a content hash (an image
folder, an LMDB, a generator) gets a private temporary reference instead; a generator, read once,
has its inputs kept with it so that later passes can read them again. Large references are read
record by record, so memory does not grow with the number of samples.
"""

from __future__ import annotations

import logging
import os
import tempfile
import weakref
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from tqdm import tqdm

from int8kit.calib.stats import model_fingerprint
from int8kit.calib.taps import activation_tensors
from int8kit.data.sources import batches_from, model_input_specs
from int8kit.errors import DataError, ModelError
from int8kit.evaluate.accumulate import ErrorAccumulator
from int8kit.evaluate.chance import warn_if_chance
from int8kit.evaluate.labels import label_mismatch, labels_and_width, load_task_labels, source_class_labels, source_labels
from int8kit.evaluate.latency import measure_latencies
from int8kit.evaluate.reference import ModelLike, compute_layer_reference, compute_reference, load_model
from int8kit.evaluate.result import EvalResult, TaskComparison
from int8kit.evaluate.scoring import Scorer
from int8kit.evaluate.task_pass import TaskRun, pick_rows, subset_plan
from int8kit.evaluate.tasks import MetricSpec, as_metric_spec
from int8kit.evaluate.uncertainty import Score, drop
from int8kit.evaluate.store import RecordReader, cache_root, data_fingerprint, open_cached, prune, reference_key
from int8kit.runtime.chunking import rows
from int8kit.runtime.openvino import runtime_version, session_for
from int8kit.runtime.session import run_checked

log = logging.getLogger(__name__)

# A reference group up to this size is read into RAM once; larger ones are read record by record.
IN_MEMORY_BYTES = 64 << 20
LAYER_SAMPLES = 32  # samples the per-layer comparison runs


class Evaluator:
    """The FP32 reference of ``data`` for ``fp32_model``, and the scores of candidates against it.

    ``labels``, ``output``, ``batch_size`` and ``threads`` mean what they mean for
    ``int8kit.evaluate``. ``cache``: ``True`` keeps references in ``<cache>/evaluate``
    (``$INT8KIT_CACHE``, default ``~/.cache/int8kit``), a path keeps them there, ``False`` keeps
    them in a temporary folder deleted with the evaluator.
    """

    def __init__(
        self,
        fp32_model: ModelLike,
        data: Any,
        *,
        labels: Any = None,
        output: str | None = None,
        batch_size: int | None = None,
        threads: int | None = None,
        runtime: str = "onnxruntime",
        cache: bool | str | os.PathLike = True,
        progress: bool = True,
    ) -> None:
        self.model, self.size_bytes = load_model(fp32_model)
        self.specs = model_input_specs(self.model)
        self.names = [o.name for o in self.model.graph.output]
        self.output = output or self.names[0]
        if self.output not in self.names:
            raise DataError(f"output '{self.output}' is not an output of the model; expected one of {self.names}; pick one of those.")
        self.batch_size, self.threads, self.progress = batch_size, threads, progress
        self.runtime = runtime  # both models run there: onnxruntime, or OpenVINO (its default precision)
        self.labels, self.label_width, self.task_labels = self._read_labels(labels)
        self._data = data
        declared = _count_samples(data)
        if self.task_labels is not None and declared is not None and declared != len(self.task_labels):
            raise label_mismatch(len(self.task_labels), declared)  # before any pass
        # a generator (or any iterator) can be read once: its inputs are kept with the reference
        self._one_shot = isinstance(data, Iterator)
        # hashing the data costs a read of it: only done when the reference may be shared
        digest = None if self._one_shot or cache is False else data_fingerprint(data)
        if cache is False or digest is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="int8kit-eval-")
            weakref.finalize(self, self._tmp.cleanup)
            self.root, self.shared = Path(self._tmp.name), False
        else:
            self.root = Path(cache) if cache is not True else cache_root() / "evaluate"
            self.shared = True
        # the fingerprint leaves out input shapes; they decide the batches (a fixed batch size), so they count
        shapes = [(spec.name, spec.shape, str(spec.dtype)) for spec in self.specs]
        self._key = reference_key(model_fingerprint(self.model), shapes, digest, batch_size, runtime_version(runtime))
        self._reference: RecordReader | None = None
        self._layers: dict[tuple[int, tuple[str, ...]], RecordReader] = {}
        self.fp32_runs = 0  # FP32 passes this evaluator ran (0 when the disk cache had them)
        self._kept_session: tuple[Any, Any] | None = None  # (model key, session) of the last model task_score ran

    def _read_labels(self, labels: Any) -> tuple[np.ndarray | None, int | None, Any]:
        """Class labels (and one-hot width) for accuracy, and the labels task metrics read: the
        same, or, for an output that is not (samples, classes), labels of any kind (text, boxes)."""
        if labels is None:
            return None, None, None
        try:
            classes, width = labels_and_width(labels)
            return classes, width, classes
        except (DataError, ValueError) as exc:  # ValueError: ragged lists (boxes, texts) numpy cannot stack
            dims = _output_rank(self.model, self.output)
            if dims is None or dims == 2:  # class scores: the labels must be class indices
                if isinstance(exc, DataError):
                    raise
                raise DataError(f"labels are lists of different lengths, not class indices, but output '{self.output}' holds "
                                "class scores; expected one class index per sample; pass the class labels.") from None
            return None, None, load_task_labels(labels)

    # ---------------------------------------------------------------- references

    @property
    def reference(self) -> RecordReader:
        """Every FP32 output of every batch (and the latency feed); computed on first use."""
        if self._reference is None:
            self._reference = self._open_or_compute(self._key, self._compute_outputs)
            self._check_labels(self._reference.meta["samples"], self._reference.meta.get("declared"))
        return self._reference

    def layer_reference(self, max_samples: int = LAYER_SAMPLES, tensors: Sequence[str] | None = None) -> RecordReader:
        """The float activations ``tensors`` (default: all) of the FP32 model on its first
        ``max_samples`` samples, in pieces of bounded size (inputs kept with each piece, so
        candidates run exactly these pieces). A reference already made for a wider set serves."""
        names = tuple(tensors) if tensors is not None else tuple(activation_tensors(self.model))
        for (samples, held), ref in self._layers.items():
            if samples == max_samples and set(names) <= set(held):
                return ref
        key = reference_key(self._key, "layers", max_samples, sorted(names))
        ref = self._open_or_compute(key, lambda path: self._compute_layers(path, max_samples, list(names)))
        self._layers[(max_samples, names)] = ref
        return ref

    def _open_or_compute(self, key: str, compute: Any) -> RecordReader:
        folder = self.root / key
        found = open_cached(folder, in_memory_bytes=IN_MEMORY_BYTES) if self.shared else None
        if found is not None:
            log.info("FP32 reference read from %s", folder)
            return found
        reader = compute(folder)
        reader.in_memory_bytes = IN_MEMORY_BYTES
        if self.shared:
            prune(self.root, keep=folder)
        return reader

    def _compute_outputs(self, folder: Path) -> RecordReader:
        self.fp32_runs += 1
        session = session_for(self.model, self.runtime, threads=self.threads)
        source = self._source()
        self._source_labels(source)
        return compute_reference(session, self.names, source, folder, keep_inputs=self._one_shot,
                                 latency_rows=self._latency_rows(), declared=_count_samples(self._data) or source.num_samples,
                                 progress=self.progress)

    def _compute_layers(self, folder: Path, max_samples: int, names: list[str]) -> RecordReader:
        return compute_layer_reference(self.model, names, self._batches(), folder, max_samples,
                                       splittable=self._latency_rows() == 1, progress=self.progress)

    # ---------------------------------------------------------------- data

    def _source(self) -> Any:
        return batches_from(self._data, self.specs, batch_size=self.batch_size)

    def _source_labels(self, source: Any) -> None:
        if self.labels is None and self.task_labels is None:
            self.labels = source_class_labels(source)
            self.task_labels = source_labels(source)  # class ids or detection boxes

    def _batches(self) -> Iterable[Mapping[str, np.ndarray]]:
        """The data's batches again: read from the data, or from the kept inputs of a one-shot stream."""
        if not self._one_shot:
            source = self._source()
            self._source_labels(source)
            return source
        ref = self.reference
        return (ref.record("inputs", i) for i in range(ref.records("inputs")))

    def _latency_rows(self) -> int | None:
        """Latency runs at batch 1 unless the model fixes its batch size (then: one whole batch)."""
        return 1 if all(s.batch_dim is None for s in self.specs) else None

    def _check_labels(self, samples: int, declared: int | None) -> None:
        # A fixed-batch model may skip a tail of samples; labels must still match the whole data.
        if self.task_labels is not None:
            total = declared if declared is not None else samples
            if total != len(self.task_labels):
                raise label_mismatch(len(self.task_labels), total)

    # ---------------------------------------------------------------- candidates

    def evaluate(self, int8_model: ModelLike, *, latency: bool = True, metric: MetricSpec | str | None = None) -> EvalResult:
        """Score one candidate: one INT8 pass over the data against the stored FP32 outputs.

        ``latency`` times both models at batch 1 (``measure_latencies``). ``metric`` (a spec of
        ``tasks.make_metric`` or a ``MetricSpec``) also scores both models on the task in the same
        pass (``result.task``: FP32 and INT8 scores and the drop). The per-layer comparison is
        ``analysis.layerwise.layer_errors(..., evaluator=this)``.
        """
        q_proto, q_size = load_model(int8_model)
        session = session_for(q_proto, self.runtime, threads=self.threads)
        self._check_candidate(session)
        ref = self.reference
        scorer = Scorer(self.names, self.output, self.labels, self.label_width)
        spec = as_metric_spec(metric) if metric is not None else None
        task = TaskRun(spec, self.output, self.task_labels, (0, ref.meta["samples"], 1)) if spec else None
        with tqdm(total=ref.meta["samples"], unit="sample", desc="evaluate", disable=not self.progress) as bar:
            for i, batch in enumerate(self._batches()):
                if i >= ref.records("outputs"):
                    raise DataError("the evaluation data has more batches than when its FP32 reference was computed; "
                                    "expected the same data; create a new Evaluator for changed data.")
                at = f"evaluation samples {scorer.samples}-{scorer.samples + len(next(iter(batch.values()))) - 1}"
                q_out = dict(zip(self.names, run_checked(session, self.names, batch, where=f"{at} (INT8 model)")))
                bar.update(scorer.add(ref.record("outputs", i), q_out))
                if task is not None:
                    task.add(ref.record("outputs", i), q_out, np.arange(task.samples, task.samples + rows(batch)))
        if scorer.samples != ref.meta["samples"]:
            raise DataError(f"the evaluation data yielded {scorer.samples} samples, its FP32 reference {ref.meta['samples']}; "
                            "expected the same data; create a new Evaluator for changed data.")
        if self.labels is not None and scorer.classes is None:
            log.warning("labels were given but output '%s' has no class axis (not 2-D); accuracy is not measured", self.output)
        result = scorer.result()
        warn_if_chance(result, scorer.classes, self.labels, self._data)  # word-named class folders, wrong labels
        result.fp32_size_bytes, result.int8_size_bytes = self.size_bytes, q_size
        result.runtime = self.runtime
        if task is not None:
            fp32, int8 = self.task_score(None, spec), task.score()
            result.task = TaskComparison(spec.name, fp32, int8, drop(fp32, int8))
        feed = self.latency_feed() if latency else None
        if feed is not None:
            self._add_latency(result, q_proto, feed)
        return result

    def latency_feed(self) -> dict[str, np.ndarray] | None:
        """The batch-1 sample (or the model's fixed batch) that latency and the op profile run on."""
        ref = self.reference
        if not ref.records("feed"):
            return None
        return {k: np.array(v) for k, v in ref.record("feed", 0).items()}  # onnxruntime reads plain arrays, not maps

    def task_score(self, model: ModelLike | None, metric: MetricSpec | str | Any, *,
                   samples: slice | range | None = None, output_error: ErrorAccumulator | None = None) -> Score:
        """The task score (``Score``: value, n, 95 % interval) of ``model`` on the evaluation samples
        ``samples`` (default: all); ``model=None`` scores the FP32 model from the stored reference.

        ``metric``: a spec (``top1``, ``top5``, ``agreement``, ``cosine``, ``map``, ``module:Class``),
        a ``MetricSpec`` (``tasks.make_metric``) or a TaskMetric class. Only the batches that hold
        ``samples`` run, and only their chosen rows where the batch axis is free: half the samples
        cost about half a pass. Two scores of the same ``samples`` pair in ``uncertainty.drop``.
        """
        spec = as_metric_spec(metric)
        ref = self.reference
        plan, index, key = subset_plan(self.record_rows(), samples)
        run = TaskRun(spec, self.output, self.task_labels, key)
        session = self._candidate_session(model) if model is not None else None
        wanted = {record: (first, local) for record, first, local in plan}
        per_record = self.record_rows()
        free_batch = self._latency_rows() == 1  # no fixed batch size: a batch's chosen rows can run alone
        desc = "FP32 task score" if model is None else "task score"
        with tqdm(total=len(index), unit="sample", desc=desc, disable=not self.progress) as bar:
            for i, batch in self._planned(wanted, need_inputs=session is not None):
                first, local = wanted[i]
                at = f"evaluation samples {first + int(local[0])}-{first + int(local[-1])}"
                fp = pick_rows(ref.record("outputs", i), local, per_record[i], at)
                out = fp
                if session is not None:
                    part = free_batch and len(local) < per_record[i]
                    feed = {k: np.asarray(v)[local] for k, v in batch.items()} if part else batch
                    out = dict(zip(self.names, run_checked(session, self.names, feed, where=f"{at} (model scored)")))
                    out = out if part else pick_rows(out, local, per_record[i], at)
                run.add(fp, out, first + local)
                if output_error is not None:
                    output_error.add(fp[self.output], out[self.output])
                bar.update(len(local))
        return run.score()

    def _candidate_session(self, model: ModelLike) -> Any:
        """A session of ``model``; the last one is kept, so scoring its validation and held-out
        halves builds it once (a path counts as the same model while its file is unchanged)."""
        if isinstance(model, onnx.ModelProto):
            key: Any = model  # compared by identity: the kept entry holds the proto, so its id stays its own
        elif Path(model).is_file():
            stat = Path(model).stat()
            key = (str(Path(model).resolve()), stat.st_mtime_ns, stat.st_size)
        else:
            key = None  # load_model below says what is wrong with the path
        kept = self._kept_session
        if kept is not None and (kept[0] is key if isinstance(key, onnx.ModelProto) else kept[0] == key):
            return kept[1]
        self._kept_session = None  # the old one goes before the new one is built
        session = session_for(load_model(model)[0], self.runtime, threads=self.threads)
        self._check_candidate(session)
        self._kept_session = (key, session)
        return session

    def record_rows(self) -> list[int]:
        """Samples of each stored FP32 batch, in order."""
        ref = self.reference
        found = ref.meta.get("rows")
        if found is None:  # a reference stored before the batches' sizes were kept: count them once
            found = ref.meta["rows"] = [rows(batch) for batch in self._batches()]
        return list(found)

    def _planned(self, wanted: dict[int, Any], *, need_inputs: bool) -> Iterator[tuple[int, Any]]:
        """The stored batches ``wanted`` (with their inputs when a model runs), skipping the others."""
        if not need_inputs:
            yield from ((i, None) for i in sorted(wanted))
            return
        last = max(wanted)
        for i, batch in enumerate(self._batches()):
            if i > last:
                break
            if i in wanted:
                yield i, batch

    def _check_candidate(self, session: Any) -> None:
        fp_inputs = sorted(s.name for s in self.specs)
        q_inputs = sorted(i.name for i in session.get_inputs())
        if fp_inputs != q_inputs:
            raise ModelError(
                f"the INT8 model takes inputs {q_inputs} but the FP32 model {fp_inputs}; expected the same inputs; "
                "compare an INT8 model made from this FP32 one."
            )
        q_names = {o.name for o in session.get_outputs()}
        missing = [n for n in self.names if n not in q_names]
        if missing:
            raise ModelError(
                f"the INT8 model lacks outputs {missing} of the FP32 model; expected the same output names; "
                "compare an INT8 model made from this FP32 one."
            )

    def _add_latency(self, result: EvalResult, q_proto: onnx.ModelProto, feed: dict[str, np.ndarray]) -> None:
        sessions = [session_for(m, self.runtime, threads=1) for m in (self.model, q_proto)]
        result.fp32_latency_ms, result.int8_latency_ms = measure_latencies(sessions, feed)
        result.latency_batch = len(next(iter(feed.values())))
        if result.fp32_latency_ms > 0:
            result.latency_ratio = result.int8_latency_ms / result.fp32_latency_ms


def _output_rank(model: onnx.ModelProto, name: str) -> int | None:
    """Declared rank of output ``name`` (``None`` when the model does not say)."""
    for out in model.graph.output:
        if out.name == name and out.type.tensor_type.HasField("shape"):
            return len(out.type.tensor_type.shape.dim)
    return None


def _count_samples(data: Any) -> int | None:
    """Sample count of in-memory data before any batching, else ``None``."""
    if isinstance(data, np.ndarray) and data.ndim:
        return int(data.shape[0])
    if isinstance(data, dict) and data and all(np.ndim(v) for v in data.values()):
        return int(len(next(iter(data.values()))))
    return None
