"""Calibration data sources: arrays, .npy/.npz files and iterables of batches, validated against the model.

Every source yields ``{input_name: array}`` batches ready for onnxruntime: the model's dtypes,
C-contiguous, batch size fixed by the model when its batch dimension is fixed.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from int8kit.data.adapters import adapt
from int8kit.data.filearray import FileArray, open_npy, open_npz
from int8kit.data.samples import UNNAMED, Sample, SampleSource
from int8kit.data.specs import InputSpec, check_finite, check_shape, to_input_dtype
from int8kit.data.specs import model_input_specs  # noqa: F401 (re-exported: callers import it from here)
from int8kit.errors import ConfigError, DataError, refuse_unreadable

log = logging.getLogger(__name__)

DEFAULT_BATCH = 32
# Without a batch size asked, batches hold at most this many input bytes (one sample at least):
# onnxruntime's memory grows with the batch, and large inputs gain nothing from big batches
# (PP-OCRv4 det evaluated on 24 pages at 640x640 in one batch: 8.7 s / 4.0 GB; in batches of 4:
# 3.7-4.2 s / 1.1 GB). 224x224 float images still batch by DEFAULT_BATCH.
DEFAULT_BATCH_BYTES = 20 << 20
Batch = dict[str, np.ndarray]


class DataSource:
    """An iterable of ``{input_name: array}`` batches.

    ``num_samples`` is the number of samples it yields, or ``None`` when unknown (plain iterables).
    ``sample_shapes`` is the one shape every sample of each input has, by input name, when the
    source guarantees it (whole arrays, images preprocessed to a fixed size), else ``None``.
    """

    num_samples: int | None = None
    batch_size: int | None = None
    sample_shapes: dict[str, tuple[int, ...]] | None = None

    def __iter__(self) -> Iterator[Batch]:  # pragma: no cover - abstract
        raise NotImplementedError


class KeepFirst(DataSource):
    """Passes ``source``'s batches through and keeps the first ones, up to ``samples`` samples
    (a stream can be read once; bias tuning needs a few samples again after calibration)."""

    def __init__(self, source: DataSource, samples: int, *, max_bytes: int | None = None, what: str = "the kept samples"):
        self.source, self.samples, self.max_bytes, self.what = source, samples, max_bytes, what
        self.num_samples, self.batch_size = source.num_samples, source.batch_size
        self.sample_shapes = source.sample_shapes
        self.kept: list[Batch] = []

    def __iter__(self) -> Iterator[Batch]:
        held, held_bytes = 0, 0
        for batch in self.source:
            if held < self.samples:
                take = min(self.samples - held, len(next(iter(batch.values()))))
                piece = {k: np.array(v[:take]) for k, v in batch.items()}
                held_bytes += sum(v.nbytes for v in piece.values())
                self._check_bound(held + take, held_bytes)
                self.kept.append(piece)
                held += take
            yield batch

    def _check_bound(self, held: int, held_bytes: int) -> None:
        """Refuse, before memory runs out, a sample count whose samples do not fit ``max_bytes``."""
        if self.max_bytes is None or held_bytes <= self.max_bytes:
            return
        per_sample = held_bytes / held
        raise DataError(f"{self.what} ({self.samples} samples) are kept in memory and these samples take "
                        f"{per_sample * self.samples / 2**30:.1f} GB, over the {self.max_bytes / 2**30:.0f} GB bound; "
                        f"ask for at most {int(self.max_bytes // per_sample)} samples.")

    def fill(self) -> None:
        """Read only as far as the kept samples need (when nothing else reads the source)."""
        for _ in self:
            if sum(len(next(iter(b.values()))) for b in self.kept) >= self.samples:
                break


class ArraySource(DataSource):
    """Whole arrays (first axis = samples) sliced into batches; can be iterated any number of times."""

    def __init__(self, arrays: Mapping[str, np.ndarray], specs: list[InputSpec], batch_size: int, num_samples: int):
        self.arrays = dict(arrays)
        self.specs = specs
        self.batch_size = batch_size
        self.num_samples = num_samples
        self.sample_shapes = {s.name: tuple(self.arrays[s.name].shape[1:]) for s in specs}

    def __iter__(self) -> Iterator[Batch]:
        for start in range(0, self.num_samples, self.batch_size):
            stop = min(start + self.batch_size, self.num_samples)
            # to_input_dtype casts only this batch, so int8 images never become a full float copy.
            yield {
                s.name: np.ascontiguousarray(to_input_dtype(s, self.arrays[s.name][start:stop], where="the data"))
                for s in self.specs
            }


class IterableSource(DataSource):
    """A user iterable of batches, validated batch by batch and capped at ``iterations`` samples."""

    def __init__(self, data: Iterable[Any], specs: list[InputSpec], iterations: int | None, at_most: bool = False):
        self.data = data
        self.specs = specs
        self.iterations = iterations
        self.at_most = at_most
        self.num_samples = None
        # A one-shot iterator (generator) can be consumed once only.
        self._one_shot = iter(data) is data
        self._consumed = False

    def _validate(self, raw: Any, index: int) -> Batch:
        where = f"batch {index}"
        if isinstance(raw, np.ndarray) and len(self.specs) == 1:
            raw = {self.specs[0].name: raw}
        if not isinstance(raw, Mapping):
            raise DataError(
                f"{where} of the data iterable is a {type(raw).__name__}; expected a dict of input name to array."
            )
        names = [s.name for s in self.specs]
        missing = [n for n in names if n not in raw]
        extra = [k for k in raw if k not in names]
        if missing or extra:
            raise DataError(
                f"{where} has keys {sorted(map(str, raw))} but the model's inputs are {names}; "
                f"{'add ' + str(missing) if missing else 'remove ' + str(extra)}."
            )
        out: Batch = {}
        sizes = set()
        for spec in self.specs:
            arr = to_input_dtype(spec, raw[spec.name], where=where)
            if arr.ndim == 0:
                raise DataError(f"input '{spec.name}' in {where} is a scalar; expected a batch array.")
            check_shape(spec, arr.shape, what="batches")
            check_finite(spec, arr, where=where)
            sizes.add(arr.shape[0])
            out[spec.name] = np.ascontiguousarray(arr)
        if len(sizes) > 1:
            raise DataError(f"{where} mixes batch sizes {sorted(sizes)} across inputs; expected one batch size.")
        return out

    def __iter__(self) -> Iterator[Batch]:
        if self._one_shot and self._consumed:
            raise DataError("the data iterable was already consumed; pass a list or arrays to iterate it again.")
        self._consumed = True
        seen = 0
        for index, raw in enumerate(self.data):
            if self.iterations is not None and seen >= self.iterations:
                break
            batch = self._validate(raw, index)
            n = next(iter(batch.values())).shape[0] if batch else 0
            if self.iterations is not None and seen + n > self.iterations:
                keep = self.iterations - seen
                batch = {k: v[:keep] for k, v in batch.items()}
                n = keep
            seen += n
            yield batch
        if self.iterations is not None and seen < self.iterations and not self.at_most:
            raise DataError(
                f"the data iterable has {seen} samples but {self.iterations} iterations were asked; "
                f"lower --iterations to {seen} or provide more data."
            )


def _named_shapes(source: SampleSource, specs: list[InputSpec]) -> dict[str, tuple[int, ...]] | None:
    """``source.sample_shapes()`` keyed by the model's input names (an unnamed source feeds the one
    input), or ``None`` when unknown or not one per input."""
    shapes = source.sample_shapes()
    if shapes is not None and set(shapes) == {UNNAMED} and len(specs) == 1:
        shapes = {specs[0].name: shapes[UNNAMED]}
    return shapes if shapes is not None and set(shapes) == {s.name for s in specs} else None


class SampleBatches(DataSource):
    """A ``SampleSource`` (image folder, LMDB, ...) stacked into validated model batches.

    Samples come without a batch axis; a source that does not know input names (``UNNAMED``)
    feeds a single-input model. ``iterations`` caps the samples; a fixed-batch model drops the
    tail that does not fill a batch.
    """

    def __init__(self, source: SampleSource, specs: list[InputSpec], batch_size: int | None, iterations: int | None,
                 at_most: bool = False):
        self.sample_shapes = _named_shapes(source, specs)
        batch_size = _resolve_batch(specs, batch_size, self.sample_shapes)
        self.source, self.specs, self.batch_size = source, specs, batch_size
        total = len(source)
        if total == 0:
            raise DataError(f"{source.description} holds 0 samples; expected at least one.")
        n = total if iterations is None else min(iterations, total)
        if iterations is not None and iterations > total and not at_most:
            raise DataError(
                f"{source.description} has {total} samples but {iterations} iterations were asked; "
                f"lower --iterations to {total} or provide more data."
            )
        if any(s.batch_dim is not None for s in specs) and n % batch_size:
            if n < batch_size:
                raise _fewer_than_batch(source.description, total, n, batch_size)
            log.warning("the model's batch size is fixed to %d; the last %d samples do not fill a batch and are skipped", batch_size, n % batch_size)
            n -= n % batch_size
        self.num_samples = n

    def labels(self) -> list[Any] | None:
        """Labels of the samples this source yields (``None`` if the data has none)."""
        labels = self.source.labels()
        return None if labels is None else list(labels)[: self.num_samples]

    def _named(self, sample: Sample, index: int) -> dict[str, Any]:
        inputs = sample.inputs
        if set(inputs) == {UNNAMED}:
            if len(self.specs) != 1:
                raise DataError(
                    f"{self.source.description} gives one array per sample but the model has {len(self.specs)} inputs "
                    f"{[s.name for s in self.specs]}; use a source with one array per input name."
                )
            return {self.specs[0].name: inputs[UNNAMED]}
        names = [s.name for s in self.specs]
        if sorted(inputs) != sorted(names):
            raise DataError(
                f"sample {index} of {self.source.description} has inputs {sorted(inputs)} but the model's inputs are {names}; "
                "name the arrays after the model inputs (int8kit inspect lists them)."
            )
        return dict(inputs)

    def _stack(self, rows: list[dict[str, Any]], first: int) -> Batch:
        where = f"samples {first}-{first + len(rows) - 1} of {self.source.description}"
        batch: Batch = {}
        for spec in self.specs:
            arrays = [np.asarray(r[spec.name]) for r in rows]
            shapes = {a.shape for a in arrays}
            if len(shapes) > 1:
                listed = ", ".join(map(str, sorted(shapes)[:3])) + (f" and {len(shapes) - 3} more" if len(shapes) > 3 else "")
                any_size = spec.sample_shape is not None and None in spec.sample_shape
                hint = "resize or crop them to the same size" + (
                    ", or use batches of one sample (--batch 1): the model takes any size" if any_size else "")
                raise DataError(f"input '{spec.name}' has samples of different shapes ({listed}) in {where}; expected one shape; {hint}.")
            check_shape(spec, arrays[0].shape, what="samples")
            arr = to_input_dtype(spec, np.stack(arrays), where=where)
            check_finite(spec, arr, where=where)
            batch[spec.name] = np.ascontiguousarray(arr)
        return batch

    def __iter__(self) -> Iterator[Batch]:
        rows: list[dict[str, Any]] = []
        first = 0
        for index, sample in enumerate(self.source):
            if index >= self.num_samples:
                break
            rows.append(self._named(sample, index))
            if len(rows) == self.batch_size:
                yield self._stack(rows, first)
                first, rows = index + 1, []
        if rows:
            yield self._stack(rows, first)


def _load_file(path: Path, specs: list[InputSpec]) -> dict[str, np.ndarray]:
    if not path.exists():
        raise DataError(f"data file '{path}' does not exist; check the path.")
    ext = path.suffix.lower()
    refuse_unreadable(path, "data file", DataError)
    if ext == ".npy":
        if len(specs) != 1:
            names = [s.name for s in specs]
            raise DataError(
                f"data file '{path}' is a single .npy array but the model has {len(specs)} inputs {names}; "
                "use an .npz file with one array per input name."
            )
        try:
            # read slice by slice: memory holds one batch, whatever the file size
            lazy = open_npy(path)
            return {specs[0].name: lazy if lazy is not None else np.load(path, allow_pickle=False)}
        except Exception as exc:  # numpy raises ValueError, OSError, SyntaxError or TokenError for a bad header
            raise DataError(f"data file '{path}' is not a readable .npy array ({type(exc).__name__}: {exc}); re-save it with numpy.save.") from None
    if ext == ".npz":
        try:
            arrays = open_npz(path)
        except Exception as exc:  # zipfile and numpy raise many unrelated types for a damaged archive
            raise DataError(f"data file '{path}' is not a readable .npz archive ({type(exc).__name__}: {exc}); re-save it with numpy.savez.") from None
        return arrays
    raise DataError(f"data file '{path}' has extension '{path.suffix}'; expected .npy or .npz.")


def _fewer_than_batch(origin: str, total: int, used: int, batch: int) -> DataError:
    if used < total:  # --iterations asked fewer
        return DataError(f"{used} iterations are fewer than the model's fixed batch size {batch}; ask at least {batch}.")
    return DataError(f"{origin} has {total} samples, fewer than the model's fixed batch size {batch}; provide more data.")


def _resolve_batch(specs: list[InputSpec], batch_size: int | None, shapes: Mapping[str, tuple[int, ...]] | None = None) -> int:
    """The model's fixed batch size, else ``batch_size``, else as many samples of ``shapes`` (one
    shape per input, when known) as fit in ``DEFAULT_BATCH_BYTES``, at most ``DEFAULT_BATCH``."""
    fixed = {s.batch_dim for s in specs if s.batch_dim is not None}
    if fixed:
        size = min(fixed)
        if batch_size is not None and batch_size != size:
            log.warning("the model's batch dimension is fixed to %d; ignoring batch size %d", size, batch_size)
        return size
    if batch_size is not None:
        return batch_size
    if not shapes:
        return DEFAULT_BATCH
    sample_bytes = sum(s.dtype.itemsize * int(np.prod(shapes[s.name], dtype=np.int64)) for s in specs if s.name in shapes)
    return int(min(DEFAULT_BATCH, max(1, DEFAULT_BATCH_BYTES // max(sample_bytes, 1))))


def _array_source(
    arrays: Mapping[str, Any], specs: list[InputSpec], origin: str, batch_size: int | None, iterations: int | None,
    at_most: bool = False,
) -> ArraySource:
    names = [s.name for s in specs]
    missing = [n for n in names if n not in arrays]
    if missing:
        raise DataError(
            f"{origin} has no array for input(s) {missing}; it holds {sorted(arrays)}, "
            f"expected one array per model input {names}."
        )
    extra = [k for k in arrays if k not in names]
    if extra:
        raise DataError(f"{origin} holds arrays {extra} that are not model inputs {names}; remove them or rename them.")
    counts: dict[str, int] = {}
    converted: dict[str, np.ndarray] = {}
    for spec in specs:
        arr = arrays[spec.name]
        if not isinstance(arr, (np.ndarray, FileArray)):
            arr = np.asarray(arr)
        if arr.ndim == 0:
            raise DataError(f"input '{spec.name}' in {origin} is a scalar; expected an array whose first axis is samples.")
        check_shape(spec, arr.shape[1:], what="samples")
        to_input_dtype(spec, arr[:1], where=origin)  # dtype check only; the cast happens per batch
        counts[spec.name] = arr.shape[0]
        converted[spec.name] = arr
    if len(set(counts.values())) > 1:
        raise DataError(f"{origin} has different sample counts per input {counts}; expected the same number for every input.")
    total = next(iter(counts.values()))
    if total == 0:
        raise DataError(f"{origin} holds 0 samples; expected at least one.")
    n = total
    if iterations is not None:
        if iterations > total and not at_most:
            raise DataError(
                f"{origin} has {total} samples but {iterations} iterations were asked; "
                f"lower --iterations to {total} or provide more data."
            )
        n = min(iterations, total)
    for spec in specs:
        arr = converted[spec.name]
        check_finite(spec, arr.head(n) if isinstance(arr, FileArray) else arr[:n], where=origin)
    bs = _resolve_batch(specs, batch_size, {s.name: tuple(converted[s.name].shape[1:]) for s in specs})
    if specs and any(s.batch_dim is not None for s in specs) and n % bs:
        if n < bs:
            raise _fewer_than_batch(origin, total, n, bs)
        dropped = n % bs
        log.warning("the model's batch size is fixed to %d; the last %d samples do not fill a batch and are skipped", bs, dropped)
        n -= dropped
    return ArraySource(converted, specs, bs, n)


def batches_from(
    data: Any, specs: list[InputSpec], *, batch_size: int | None = None, iterations: int | None = None,
    at_most: bool = False,
) -> DataSource:
    """Turn user data into a validated ``DataSource`` for the model inputs ``specs``.

    ``data``: a path to .npy (single-input models) or .npz (arrays keyed by input name), an array,
    a dict name→array (first axis = samples), an iterable of ``{name: batch}`` dicts, or a
    ``DataSource`` (returned as is); also torch tensors, DataLoaders of tensors or (x, y) items,
    single-sample items, an ``nncf.Dataset`` or a ``get_next()`` reader (``int8kit.data.adapters``).
    ``iterations`` is the number of samples to use: more than the data holds is an error, unless
    ``at_most`` (then it is only a cap, for previews and compares).
    """
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
        raise ConfigError(f"batch size must be a positive integer, got {batch_size!r}; pass e.g. 32.")
    if iterations is not None and (not isinstance(iterations, int) or iterations < 1):
        raise ConfigError(f"iterations must be a positive integer, got {iterations!r}; pass the number of samples to use.")
    if not specs:
        raise DataError("the model has no inputs to feed; expected at least one non-initializer graph input.")
    if isinstance(data, DataSource):
        return data
    data = adapt(data, specs, batch_size)  # tensors, DataLoaders, nncf.Dataset, get_next() readers
    if isinstance(data, SampleSource):
        return SampleBatches(data, specs, batch_size, iterations, at_most)
    if isinstance(data, (str, os.PathLike)):
        path = Path(data)
        return _array_source(_load_file(path, specs), specs, f"data file '{path}'", batch_size, iterations, at_most)
    if isinstance(data, np.ndarray):
        if len(specs) != 1:
            raise DataError(
                f"a single array was given but the model has {len(specs)} inputs {[s.name for s in specs]}; "
                "pass a dict of input name to array."
            )
        return _array_source({specs[0].name: data}, specs, "the data array", batch_size, iterations, at_most)
    if isinstance(data, Mapping):
        return _array_source(data, specs, "the data dict", batch_size, iterations, at_most)
    if isinstance(data, Iterable):
        return IterableSource(data, specs, iterations, at_most)
    raise DataError(
        f"calibration data of type {type(data).__name__} is not supported; expected a .npy/.npz path, an array, "
        "a dict of arrays, tensors, a DataLoader, an nncf.Dataset, a get_next() reader or an iterable of batches."
    )
