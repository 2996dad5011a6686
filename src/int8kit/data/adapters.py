"""Data in the forms other quantizers take, turned into what ``batches_from`` already reads.

    torch.Tensor, dict of tensors           -> NumPy arrays (first axis = samples)
    nncf.Dataset                            -> its ``get_inference_data()``, asked again for every pass
    an object with only ``get_next()``      -> its items until ``None`` (onnxruntime's reader;
                                               ``rewind()`` before every pass when it has one)
    a DataLoader / iterable of tensors, of (x, y) tuples or lists, or of samples without a batch axis
        -> x is the input (an array, a dict, or a tuple/list in the inputs' order), y the label
           (``evaluate`` uses it when no ``labels`` are given); items one axis short of the model's
           input rank are single samples (NNCF's ``transform_fn`` style) and are batched here

torch and nncf stay optional: they are recognised by duck typing and ``sys.modules``, never
imported. Plain arrays, dicts of arrays and iterables of ``{name: batch}`` pass through unchanged.
"""

from __future__ import annotations

import itertools
import logging
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import numpy as np

from int8kit.data.samples import Sample, SampleSource
from int8kit.data.specs import InputSpec
from int8kit.errors import DataError

log = logging.getLogger(__name__)

Inputs = dict[str, Any]


def is_tensor(value: Any) -> bool:
    """A ``torch.Tensor``, recognised without importing torch (no torch loaded: no tensors exist)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(value, torch.Tensor)


def to_numpy(value: Any) -> Any:
    """A torch tensor as a NumPy array (detached, on the CPU); anything else unchanged."""
    if not is_tensor(value):
        return value
    value = value.detach().cpu()
    if str(value.dtype) == "torch.bfloat16":  # NumPy has no bfloat16
        value = value.float()
    return value.numpy()


class Reiterable:
    """An iterable made anew for every pass by ``make`` (``nncf.Dataset``, rewindable readers)."""

    def __init__(self, make: Callable[[], Iterable[Any]], description: str, length: int | None = None):
        self.make, self.description, self.length = make, description, length

    def __iter__(self) -> Iterator[Any]:
        return iter(self.make())


def _reader_items(reader: Any) -> Iterator[Any]:
    """Items of a ``get_next()`` reader up to its ``None``; an empty first call is an error, since a
    reader without ``rewind()`` read a second time (evaluate reads twice) returns nothing at all."""
    if callable(getattr(reader, "rewind", None)):
        reader.rewind()
    first = reader.get_next()
    if first is None:
        raise DataError(
            f"the data reader {type(reader).__name__} returned None on its first get_next(): it is empty or was "
            "read to the end already; expected items; give it a rewind() method, or pass iter(reader.get_next, None) "
            "to read it once."
        )
    yield first
    yield from iter(reader.get_next, None)


def _item_stream(data: Any) -> tuple[Iterable[Any], bool] | None:
    """``data`` as an iterable of items and whether items are inputs only (no labels), or ``None``
    when ``data`` is not a stream of items."""
    if callable(getattr(data, "get_inference_data", None)):  # nncf.Dataset: transform_fn gives model inputs
        length = data.get_length() if callable(getattr(data, "get_length", None)) else None
        return Reiterable(data.get_inference_data, f"the {type(data).__name__}", length), True
    if callable(getattr(data, "get_next", None)) and not isinstance(data, Iterator):
        # onnxruntime's CalibrationDataReader subclasses are iterators already; this is a bare reader,
        # read once unless it can rewind
        if not callable(getattr(data, "rewind", None)):
            return _reader_items(data), True
        return Reiterable(lambda: _reader_items(data), f"the data reader {type(data).__name__}"), True
    if isinstance(data, Iterable) and not isinstance(data, (str, bytes, np.ndarray, Mapping)):
        return data, False
    return None


def adapt(data: Any, specs: list[InputSpec], batch_size: int | None) -> Any:
    """``data`` in a form ``batches_from`` reads: arrays, dicts of arrays, an iterable of
    ``{name: batch}`` dicts, or a ``SampleSource`` (labelled or single-sample items)."""
    if isinstance(data, SampleSource):
        return data
    if is_tensor(data):
        return to_numpy(data)
    if isinstance(data, Mapping):
        return {k: to_numpy(v) for k, v in data.items()} if any(map(is_tensor, data.values())) else data
    stream = _item_stream(data)
    if stream is None:
        return data
    items, inputs_only = stream
    split = Splitter(specs, inputs_only)
    one_shot = isinstance(items, Iterator)
    it = iter(items)
    try:
        first = next(it)
    except StopIteration:  # empty: batches_from's own checks say so
        return items
    inputs, label = split(first, 0)
    if label is None and not split.is_sample(inputs):
        if isinstance(first, np.ndarray) or (isinstance(first, Mapping) and not any(map(is_tensor, first.values()))):
            return itertools.chain([first], it) if one_shot else items  # today's form: unchanged
        if one_shot:
            return (split(item, i)[0] for i, item in enumerate(itertools.chain([first], it)))
        return Reiterable(lambda: (split(item, i)[0] for i, item in enumerate(items)), "the data")
    if not one_shot:
        count = _sized(items) if split.is_sample(inputs) else None  # items are samples: no counting pass
        return ItemSamples(items, split, getattr(items, "description", f"the {type(items).__name__}"), count)
    if label is not None:
        log.info("the data yields (input, label) items once only (an iterator): the labels are not used; "
                 "pass a re-iterable DataLoader or list, or labels=, for accuracy")
    return _stacked(itertools.chain([first], it), split, specs, batch_size)


class Splitter:
    """Reads one item as (inputs by name, label): ``x``, ``(x, y, ...)``, ``[x, y]``; with
    ``inputs_only`` (nncf, readers) a tuple/list is the inputs in the model's order."""

    def __init__(self, specs: list[InputSpec], inputs_only: bool):
        self.specs, self.inputs_only = specs, inputs_only
        self.names = [s.name for s in specs]

    def __call__(self, item: Any, index: int) -> tuple[Inputs, Any]:
        label = None
        if isinstance(item, (tuple, list)) and not self.inputs_only:
            if not item:
                raise DataError(f"item {index} of the data is an empty {type(item).__name__}; "
                                "expected (input, label) or the input; yield the input first.")
            item, label = item[0], (item[1] if len(item) > 1 else None)
        return self._inputs(item, index), to_numpy(label)

    def _inputs(self, x: Any, index: int) -> Inputs:
        if isinstance(x, Mapping):
            return {k: to_numpy(v) for k, v in x.items()}
        if isinstance(x, (tuple, list)) and len(x) == len(self.names) and len(self.names) > 1:
            return {n: to_numpy(v) for n, v in zip(self.names, x)}
        if len(self.names) == 1:
            return {self.names[0]: to_numpy(x)}
        raise DataError(
            f"item {index} of the data is one {type(x).__name__} but the model has {len(self.names)} inputs {self.names}; "
            "expected a dict of input name to array; yield {name: array} (or a tuple/list in the inputs' order)."
        )

    def is_sample(self, inputs: Inputs) -> bool:
        """Whether ``inputs`` hold one sample without a batch axis (rank one below the model's)."""
        for spec in self.specs:
            if spec.shape and spec.name in inputs:
                return np.ndim(inputs[spec.name]) == len(spec.shape) - 1
        return False

    def rows(self, inputs: Inputs, label: Any, index: int) -> tuple[int, list[Any]]:
        """Samples in one item and their labels (``None`` each when unlabelled)."""
        if self.is_sample(inputs):
            return 1, [_scalar(label)]
        n = int(np.shape(next(iter(inputs.values())))[0]) if inputs and np.ndim(next(iter(inputs.values()))) else 1
        if label is None:
            return n, [None] * n
        arr = np.asarray(label)
        if arr.ndim == 0 or arr.shape[0] != n:
            raise DataError(
                f"the label of item {index} has shape {arr.shape} but the item holds {n} samples; "
                f"expected one label per sample, shape ({n}, ...); yield (inputs, labels) with matching first axes."
            )
        return n, [_scalar(v) for v in arr]


def _scalar(label: Any) -> Any:
    """An integer class index as a Python int (what accuracy reads); other labels as they came."""
    arr = np.asarray(label) if label is not None else None
    if arr is not None and arr.ndim == 0 and np.issubdtype(arr.dtype, np.integer):
        return int(arr)
    return label


def _loader_count(loader: Any) -> int | None:
    """Samples a torch-style DataLoader yields, from its sampler (no pass over the data), else ``None``."""
    sampler, size = getattr(loader, "sampler", None), getattr(loader, "batch_size", None)
    if sampler is None or not hasattr(loader, "dataset") or size is None:
        return None  # a custom batch_sampler or no batching: count by reading
    try:
        n = len(sampler)
    except TypeError:
        return None
    return n - n % size if getattr(loader, "drop_last", False) else n


def _sized(items: Iterable[Any]) -> int | None:
    """The number of items, when known without reading them (``nncf.Dataset.get_length()``, ``len()``)."""
    if isinstance(items, Reiterable):
        return items.length
    try:
        return len(items)  # type: ignore[arg-type]
    except (TypeError, NotImplementedError):
        return None


def _shuffles(loader: Any) -> bool:
    data = sys.modules.get("torch.utils.data")
    return data is not None and isinstance(getattr(loader, "sampler", None), data.RandomSampler)


class ItemSamples(SampleSource):
    """A re-iterable stream of labelled or single-sample items (a DataLoader of (x, y), a list of
    per-sample dicts), one ``Sample`` at a time, for ``SampleBatches`` to batch and validate.

    The sample count is ``count`` (the number of single-sample items) or comes from a DataLoader's
    sampler; otherwise the first ``len()`` or ``labels()`` reads the data once to count it.
    """

    def __init__(self, items: Iterable[Any], split: Splitter, description: str, count: int | None = None):
        self.items, self.split, self.description = items, split, description
        self._count = count if count is not None else _loader_count(items)
        self._labels: list[Any] | None = None

    def __len__(self) -> int:
        if self._count is None:
            self._index()
        return int(self._count or 0)

    def _index(self) -> None:
        """One pass that counts the samples and keeps their labels."""
        labels: list[Any] = []
        for index, item in enumerate(self.items):
            inputs, label = self.split(item, index)
            labels += self.split.rows(inputs, label, index)[1]
        self._count, self._labels = len(labels), labels

    def __iter__(self) -> Iterator[Sample]:
        for index, item in enumerate(self.items):
            inputs, label = self.split(item, index)
            n, labels = self.split.rows(inputs, label, index)
            if self.split.is_sample(inputs):
                yield Sample(inputs, labels[0])
                continue
            for i in range(n):
                yield Sample({k: np.asarray(v)[i] for k, v in inputs.items()}, labels[i])

    def labels(self) -> list[Any] | None:
        """Every sample's label (one pass over the data when not counted yet); ``None`` if unlabelled."""
        if _shuffles(self.items):
            raise DataError(
                f"{self.description} shuffles its samples (shuffle=True), so its labels and outputs come in another "
                "order every pass; expected a fixed order for evaluation; create the DataLoader with shuffle=False."
            )
        if self._labels is None:
            self._index()
        return None if not self._labels or any(v is None for v in self._labels) else list(self._labels)


def _stacked(items: Iterator[Any], split: Splitter, specs: list[InputSpec], batch_size: int | None) -> Iterator[Inputs]:
    """Batches of a one-shot stream whose items are single samples (or batches, passed through)."""
    from int8kit.data.sources import _resolve_batch  # sources imports this module

    size = _resolve_batch(specs, batch_size)
    fixed = any(s.batch_dim is not None for s in specs)
    rows: list[Inputs] = []
    for index, item in enumerate(items):
        inputs = split(item, index)[0]
        if not split.is_sample(inputs):
            yield inputs
            continue
        rows.append(inputs)
        if len(rows) == size:
            yield {k: np.stack([np.asarray(r[k]) for r in rows]) for k in rows[0]}
            rows = []
    if rows and fixed:
        log.warning("the model's batch size is fixed to %d; the last %d samples do not fill a batch and are skipped",
                    size, len(rows))
    elif rows:
        yield {k: np.stack([np.asarray(r[k]) for r in rows]) for k in rows[0]}
