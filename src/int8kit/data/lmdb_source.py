"""Read LMDB datasets: int8kit records (``LmdbWriter``) and Caffe ``Datum`` LMDBs (``convert_imageset``).

The format is detected from the first record. int8kit records are split into their samples and
yielded as stored (any dtype, named arrays kept by name). Caffe datums are yielded the way Caffe
keeps them: channels-first (CHW) in **BGR** order (``convert_imageset`` stores OpenCV's BGR
pixels), uint8 for ``data`` bytes or float32 for ``float_data``; encoded (JPEG/PNG) datums are
decoded with Pillow and turned to BGR the same way. A ``pipeline`` (``int8kit.data.preprocess``)
receives each datum as an HxWxC **RGB** image, like every other image source, and returns the
model input.
"""

from __future__ import annotations

import io
import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lmdb
import numpy as np

from int8kit.data.annotated_datum import is_annotated, split_annotated
from int8kit.data.lmdb_format import LABEL_FILE, ORIGINALS_DIR, decode_header, decode_record, is_record, read_label_file
from int8kit.data.samples import UNNAMED, Sample, SampleSource
from int8kit.errors import ConfigError, DataError

CAFFE, ANNOTATED, INT8KIT = "caffe-datum", "caffe-annotated-datum", "int8kit"
DATUM_KINDS = (CAFFE, ANNOTATED)


def lmdb_dir(path: str | os.PathLike) -> Path:
    """The LMDB folder for ``path`` (the folder itself or its ``data.mdb``), checked to exist."""
    p = Path(path)
    if p.name == "data.mdb" and p.is_file():
        p = p.parent
    if not p.exists():
        raise DataError(f"LMDB '{p}' does not exist; check the path (an LMDB is a folder holding data.mdb).")
    if not (p / "data.mdb").is_file():
        raise DataError(f"'{p}' is not an LMDB folder (no data.mdb inside); pass the folder that holds data.mdb.")
    return p


_OPEN: dict[tuple, list[Any]] = {}  # py-lmdb allows one Environment per path and process: share it
_LOCK = threading.Lock()


def open_env(path: str | os.PathLike) -> lmdb.Environment:
    """Open an LMDB read-only without the writer's lock file (read-only media work); pair with ``close_env``."""
    db = lmdb_dir(path)
    st = (db / "data.mdb").stat()
    key = (db.resolve(), st.st_dev, st.st_ino)  # a refreshed LMDB (new file) gets a new environment
    with _LOCK:
        if key in _OPEN:
            _OPEN[key][1] += 1
            return _OPEN[key][0]
        try:
            env = lmdb.open(str(db), readonly=True, lock=False, readahead=False, subdir=True, max_readers=64)
        except lmdb.Error as exc:
            raise DataError(f"LMDB '{db}' cannot be opened ({exc}); the file may be corrupt, re-create it.") from None
        _OPEN[key] = [env, 1]
        return env


def close_env(env: lmdb.Environment) -> None:
    """Release an environment from ``open_env``; the last user closes it."""
    with _LOCK:
        for key, entry in list(_OPEN.items()):
            if entry[0] is env:
                entry[1] -= 1
                if entry[1] == 0:
                    del _OPEN[key]
                    env.close()
                return


def decode_datum(value: bytes, *, where: str) -> tuple[np.ndarray, Any]:
    """A Caffe ``Datum`` as a CHW BGR array (uint8, or float32 for float_data) and its label.

    An SSD ``AnnotatedDatum`` gives its inner Datum and, as the label, its boxes
    ``(cls, xmin, ymin, xmax, ymax)`` in normalised 0-1 coordinates.
    """
    from int8kit.importers.caffe.proto import Datum

    boxes = None
    if is_annotated(value):
        value, boxes = split_annotated(value, where=where)
    datum = Datum()
    try:
        datum.ParseFromString(value)
    except Exception as exc:  # protobuf raises DecodeError, or RuntimeWarning-like errors
        raise DataError(f"{where} is neither an int8kit record nor a Caffe Datum ({exc}); check the LMDB.") from None
    c, h, w = datum.channels, datum.height, datum.width
    if datum.encoded:
        from PIL import Image

        try:
            img = Image.open(io.BytesIO(datum.data))
            img.load()
        except Exception as exc:
            raise DataError(f"{where} holds an encoded image Pillow cannot decode ({exc}); re-create the LMDB.") from None
        if img.mode in ("L", "I;16", "I", "F") or c == 1:
            arr = np.asarray(img.convert("L"))[None]
        else:
            arr = np.ascontiguousarray(np.asarray(img.convert("RGB"))[:, :, ::-1].transpose(2, 0, 1))
        return arr, int(datum.label) if boxes is None else boxes
    if datum.data:
        arr = np.frombuffer(datum.data, dtype=np.uint8)
    elif len(datum.float_data):
        arr = np.asarray(datum.float_data, dtype=np.float32)
    else:
        raise DataError(f"{where} is a Caffe Datum without data or float_data; re-create the LMDB.")
    if arr.size != c * h * w or arr.size == 0:
        raise DataError(f"{where} holds {arr.size} values but says channels*height*width = {c}x{h}x{w}; the LMDB is corrupt.")
    return arr.reshape(c, h, w), int(datum.label) if boxes is None else boxes


def bgr_chw_to_rgb_hwc(arr: np.ndarray) -> np.ndarray:
    """Caffe's CHW BGR layout to the HxWxC RGB image a preprocessing pipeline takes."""
    hwc = arr.transpose(1, 2, 0)
    return np.ascontiguousarray(hwc[:, :, ::-1] if hwc.shape[2] == 3 else hwc)


@dataclass
class _Index:
    """What a scan of the keys found: format, per-record sample counts, sample shapes/dtypes."""

    kind: str
    sizes: list[int] = field(default_factory=list)
    arrays: dict[str, tuple[tuple[int, ...], np.dtype]] = field(default_factory=dict)
    originals: int = 0


def scan(env: lmdb.Environment, db: Path) -> _Index:
    """Detect the format and, for int8kit records, read every header (payloads stay untouched)."""
    with env.begin(buffers=True) as txn:
        cur = txn.cursor()
        if not cur.first():
            raise DataError(f"LMDB '{db}' holds no records; expected at least one, re-create it.")
        if not is_record(cur.value()):
            return _Index(ANNOTATED if is_annotated(cur.value()) else CAFFE, [1] * env.stat()["entries"])
        index = _Index(INT8KIT)
        for key, value in cur:
            where = f"record {bytes(key).decode(errors='replace')} of LMDB '{db}'"
            if not is_record(value):
                raise DataError(f"{where} is not an int8kit record while the first one is; the LMDB mixes formats, re-create it.")
            head = decode_header(value, where=where)
            shapes = {a.name: (a.shape[1:], a.dtype) for a in head.arrays}
            if not index.arrays:
                index.arrays = shapes
            elif shapes != index.arrays:
                raise DataError(
                    f"{where} has samples {_fmt(shapes)} but the records before it have {_fmt(index.arrays)}; "
                    "expected one shape and dtype per input, write every batch with the same layout."
                )
            index.sizes.append(head.n)
            index.originals += head.originals
        return index


def _fmt(arrays: dict[str, tuple[tuple[int, ...], np.dtype]]) -> str:
    return ", ".join(f"{name or 'data'} {shape} {dtype}" for name, (shape, dtype) in arrays.items())


def parallel_map(fn: Callable[[Any], Any], items: Iterator[Any], workers: int) -> Iterator[Any]:
    """``map`` over threads with a bounded window (decoding releases the GIL), order kept."""
    if workers <= 1:
        yield from map(fn, items)
        return
    with ThreadPoolExecutor(workers) as pool:
        window: list[Any] = []
        for item in items:
            window.append(pool.submit(fn, item))
            if len(window) >= 2 * workers:
                yield window.pop(0).result()
        for fut in window:
            yield fut.result()


class LmdbSource(SampleSource):
    """An LMDB as a ``SampleSource``: int8kit batch records split into samples, or Caffe datums.

    ``pipeline``: preprocessing for Caffe datum images (HxWxC RGB in, model input out);
    ``transform``: a function of the raw CHW BGR datum array instead (the Caffe Data layer uses
    it). Labels come from ``data.label`` when the folder has one, else from the datums.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        pipeline: Callable[[np.ndarray], np.ndarray] | None = None,
        transform: Callable[[np.ndarray], np.ndarray] | None = None,
        workers: int | None = None,
    ):
        self.path = lmdb_dir(path)
        self.description = f"LMDB '{self.path}'"
        if pipeline is not None and transform is not None:
            raise ConfigError("LmdbSource takes a preprocessing pipeline or a transform, not both; pass one.")
        self._env = open_env(self.path)
        try:
            self.index = scan(self._env, self.path)
            self._labels: list[Any] | None = None
            self._label_kind: str | None = None
            parsed = read_label_file(self.path, self.index.sizes)
        except BaseException:
            self.close()
            raise
        if parsed is not None:
            self._label_kind, self._labels = parsed
        if self.index.kind == INT8KIT and (pipeline is not None or transform is not None):
            self.close()
            raise ConfigError(
                f"{self.description} holds int8kit records, which are stored already preprocessed; "
                "drop the preprocessing (it applies to Caffe image LMDBs)."
            )
        self._fn = transform or (None if pipeline is None else (lambda a: pipeline(bgr_chw_to_rgb_hwc(a))))
        self._pipeline = pipeline
        self.workers = workers if workers is not None else min(4, os.cpu_count() or 1)

    @property
    def kind(self) -> str:
        """``"int8kit"``, ``"caffe-datum"`` or ``"caffe-annotated-datum"`` (SSD)."""
        return self.index.kind

    @property
    def label_kind(self) -> str | None:
        """``"class"``, ``"detect"`` or ``None`` (Caffe datum labels count as ``"class"``)."""
        if self._label_kind is None and self.index.kind in DATUM_KINDS:
            return "class" if self.index.kind == CAFFE else "detect"
        return self._label_kind

    def __len__(self) -> int:
        return sum(self.index.sizes)

    def labels(self) -> list[Any] | None:
        if self._labels is None and self.index.kind in DATUM_KINDS:
            with self._env.begin() as txn:
                self._labels = [self._datum_label(v, k) for k, v in txn.cursor()]
        return None if self._labels is None else list(self._labels)

    def sample_shapes(self) -> dict[str, tuple[int, ...]] | None:
        """int8kit records: the one layout the scan checked. Datums: the preprocessing's output
        shape when it does not depend on the image size (probed with the first datum's channels)."""
        if self.index.kind == INT8KIT:
            return {name: shape for name, (shape, _) in self.index.arrays.items()}
        fixed = getattr(self._pipeline, "fixed_output_shape", None)
        if fixed is None:
            return None
        with self._env.begin() as txn:
            key, value = next(iter(txn.cursor()))
            first, _ = decode_datum(value, where=f"record {key.decode(errors='replace')} of {self.description}")
        shape = fixed(first.shape[0])
        return None if shape is None else {UNNAMED: shape}

    def _datum_label(self, value: bytes, key: bytes) -> Any:
        from int8kit.importers.caffe.proto import Datum

        if is_annotated(value):
            return split_annotated(value, where=f"record {key.decode(errors='replace')} of {self.description}")[1]
        d = Datum()
        try:
            d.ParseFromString(value)
        except Exception as exc:
            raise DataError(f"record {key.decode(errors='replace')} of {self.description} is not a Caffe Datum ({exc}).") from None
        return int(d.label)

    def _values(self) -> Iterator[tuple[bytes, bytes]]:
        with self._env.begin() as txn:
            yield from txn.cursor()

    def _datum_sample(self, item: tuple[bytes, bytes]) -> tuple[np.ndarray, int]:
        key, value = item
        arr, label = decode_datum(value, where=f"record {key.decode(errors='replace')} of {self.description}")
        return (arr if self._fn is None else self._fn(arr)), label

    def __iter__(self) -> Iterator[Sample]:
        labels = self._labels
        pos = 0
        if self.index.kind in DATUM_KINDS:
            for arr, label in parallel_map(self._datum_sample, self._values(), self.workers):
                yield Sample({UNNAMED: arr}, labels[pos] if labels is not None else label)
                pos += 1
            return
        for key, value in self._values():
            head, arrays = decode_record(value, where=f"record {key.decode(errors='replace')} of {self.description}")
            for i in range(head.n):
                yield Sample({name: arr[i] for name, arr in arrays.items()}, labels[pos] if labels is not None else None)
                pos += 1

    def close(self) -> None:
        if self._env is not None:
            close_env(self._env)
            self._env = None


@dataclass(frozen=True)
class LmdbInfo:
    """Summary of an LMDB for ``int8kit lmdb info``."""

    path: Path
    kind: str
    records: int
    samples: int
    arrays: dict[str, dict[str, Any]]
    labels: str
    originals: int


def describe_lmdb(path: str | os.PathLike, *, progress: bool = False) -> LmdbInfo:
    """Count, per-input sample shape, dtype and value range (one pass), label format, originals."""
    from tqdm import tqdm

    src = LmdbSource(path)
    try:
        stats: dict[str, dict[str, Any]] = {}
        for sample in tqdm(src, total=len(src), desc="lmdb info", unit="sample", disable=not progress):
            for name, arr in sample.inputs.items():
                arr = np.asarray(arr)
                s = stats.setdefault(name or "data", {"shapes": set(), "dtype": arr.dtype, "min": np.inf, "max": -np.inf})
                s["shapes"].add(arr.shape)
                if arr.size:
                    s["min"], s["max"] = min(s["min"], float(arr.min())), max(s["max"], float(arr.max()))
        label_file = (src.path / LABEL_FILE).is_file()
        kind = src.label_kind
        labels = "none" if kind is None else (f"{kind} ({LABEL_FILE})" if label_file else f"{kind} ({'AnnotatedDatum boxes' if src.kind == ANNOTATED else 'Datum label field'})")
        originals = len(list((src.path / ORIGINALS_DIR).glob("*.jpg"))) if (src.path / ORIGINALS_DIR).is_dir() else 0
        return LmdbInfo(src.path, src.kind, len(src.index.sizes), len(src), stats, labels, originals)
    finally:
        src.close()
