"""The FP32 passes an ``Evaluator`` runs once: every output of every batch, and every float
activation of the first few samples, written batch by batch to a record store on disk."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from tqdm import tqdm

from int8kit.calib.taps import activation_tensors, tap_model
from int8kit.errors import DataError
from int8kit.evaluate.store import RecordReader, RecordWriter
from int8kit.graph.io import as_model
from int8kit.runtime.chunking import Chunker, rows
from int8kit.runtime.session import make_session, run_checked

ModelLike = onnx.ModelProto | str | os.PathLike

# The per-layer FP32 values are kept on disk up to this size; beyond it they are recomputed per candidate.
LAYER_STORE_BYTES = 2 << 30


def load_model(model: ModelLike) -> tuple[onnx.ModelProto, int | None]:
    """Loaded model and its size (serialized, weights included even when they lie in an external
    data file beside the .onnx; only for models given as a path)."""
    if isinstance(model, onnx.ModelProto):
        return model, None
    loaded = as_model(model)
    return loaded, max(Path(model).stat().st_size, loaded.ByteSize())


def compute_reference(
    session: ort.InferenceSession,
    names: list[str],
    batches: Iterable[Mapping[str, np.ndarray]],
    folder: Path,
    *,
    keep_inputs: bool,
    latency_rows: int | None,
    declared: int | None,
    progress: bool,
) -> RecordReader:
    """Run the FP32 model once over ``batches``; store its outputs (and the inputs of a one-shot
    stream, and the first batch's first ``latency_rows`` rows as the latency feed)."""
    writer = RecordWriter(folder)
    samples = 0
    per_record: list[int] = []  # samples of each stored batch: task metrics score subsets by them
    try:
        total = getattr(batches, "num_samples", None)
        with tqdm(total=total, unit="sample", desc="FP32 reference", disable=not progress) as bar:
            for batch in batches:
                n = rows(batch)
                at = f"evaluation samples {samples}-{samples + n - 1}"
                outs = dict(zip(names, run_checked(session, names, batch, where=f"{at} (FP32 model)")))
                for name, out in outs.items():
                    if not np.isfinite(out).all():
                        raise DataError(
                            f"the FP32 model's output '{name}' holds NaN/Inf for {at}; expected finite outputs to "
                            "compare against; check the data's scale and preprocessing."
                        )
                if samples == 0:
                    writer.append("feed", {k: v[:latency_rows] for k, v in batch.items()})
                writer.append("outputs", outs)
                if keep_inputs:
                    writer.append("inputs", batch)
                samples += n
                per_record.append(n)
                bar.update(n)
        if samples == 0:
            raise DataError("the evaluation data yielded no samples; expected at least one; check the data source.")
        return writer.finish({"samples": samples, "declared": declared, "names": names, "rows": per_record})
    except BaseException:
        writer.abort()
        raise


def compute_layer_reference(
    model: onnx.ModelProto,
    names: list[str],
    batches: Iterable[Mapping[str, np.ndarray]],
    folder: Path,
    max_samples: int,
    *,
    splittable: bool,
    progress: bool,
    max_bytes: int = LAYER_STORE_BYTES,
) -> RecordReader:
    """The float activations ``names`` of ``model`` on its first ``max_samples`` samples, run in pieces whose
    tensors take about ``chunking.RUN_BYTES`` (one sample at least); each piece's inputs are kept
    with it, so a candidate runs exactly the same pieces.

    The values are stored only when all of them fit in ``max_bytes`` (meta ``values``): PP-OCRv4
    det holds 660 MB of activations per 640x640 page. Otherwise only the pieces' inputs are kept
    and the per-layer comparison runs the FP32 model on them again (``analysis.layerwise``)."""
    tapped, _ = tap_model(model, names, activation_tensors(model))
    session = make_session(tapped)
    chunker = Chunker(splittable=splittable, limit=max_samples)
    writer = RecordWriter(folder)
    keep: bool | None = None  # decided by the first piece's bytes per sample
    try:
        with tqdm(total=max_samples, unit="sample", desc="FP32 per-layer", disable=not progress, leave=False) as bar:
            for batch in batches:
                for piece in chunker.pieces(batch):
                    writer.append("inputs", piece)
                    bar.update(rows(piece))
                    if keep is False:  # only the pieces' inputs are kept: no need to run them now
                        continue
                    at = f"per-layer samples {chunker.seen - rows(piece)}-{chunker.seen - 1}"
                    values = run_checked(session, names, piece, where=f"{at} (FP32 model)")
                    chunker.returned(values, piece)
                    if keep is None:
                        per_sample = sum(v.nbytes for v in values) / max(rows(piece), 1)
                        keep = per_sample * max_samples <= max_bytes
                        if not keep:
                            session = None  # frees its arena before the per-layer passes start theirs
                    if keep:
                        writer.append("values", dict(zip(names, values)))
                    del values
                if chunker.done:
                    break
        return writer.finish({"samples": chunker.seen, "names": names, "values": bool(keep)})
    except BaseException:
        writer.abort()
        raise
