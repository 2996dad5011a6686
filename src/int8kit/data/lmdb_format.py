"""The int8kit LMDB record format and the ``data.label`` line formats (see docs/lmdb.md).

Record (one LMDB value, one ``LmdbWriter.put`` call)::

    b"I8KR" | version (uint8, = 1) | header length (uint32 little-endian) | header (UTF-8 JSON) | payload

The header is ``{"n": N, "arrays": [{"name", "dtype", "shape", "offset", "nbytes"}, ...],
"originals": N or 0}``: every array keeps its NumPy dtype string (``'<f4'``, ``'|u1'``) and its full
shape, whose first axis is the N samples of the batch; ``offset`` counts from the payload start.
A bare ndarray is stored under the name ``""``. Keys are the record index as 10 zero-padded
ASCII digits, so LMDB's byte order is the write order. The magic cannot begin a Caffe ``Datum``
(its first byte would be protobuf field 9, which Datum lacks), so both formats are told apart by
the first value.

``data.label`` beside ``data.mdb`` (manual 003): classification, one line per record with one
integer class per sample (``3,13,4,6`` for a batch of four); detection, one line per sample with
its boxes ``cls,x1,y1,x2,y2`` separated by ``;`` (an empty line for a sample without boxes).
"""

from __future__ import annotations

import json
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from int8kit.errors import DataError

MAGIC = b"I8KR"
VERSION = 1
_PREFIX = struct.Struct("<4sBI")
LABEL_FILE = "data.label"
ORIGINALS_DIR = "original_images"
KEY_DIGITS = 10

Box = tuple  # (class, x1, y1, x2, y2)


def record_key(index: int) -> bytes:
    """The LMDB key of record ``index`` (zero-padded so byte order is write order)."""
    return f"{index:0{KEY_DIGITS}d}".encode("ascii")


def original_name(key: bytes | str, item: int) -> str:
    """File name of sample ``item``'s original image in record ``key`` (inside ``original_images/``)."""
    k = key.decode("ascii") if isinstance(key, bytes) else key
    return f"{k}_{item}.jpg"


@dataclass(frozen=True)
class ArrayInfo:
    """One array of a record: name, dtype, full shape (first axis = samples) and payload slice."""

    name: str
    dtype: np.dtype
    shape: tuple[int, ...]
    offset: int
    nbytes: int


@dataclass(frozen=True)
class RecordHeader:
    """A record's header: sample count, its arrays and how many original images were saved."""

    n: int
    arrays: tuple[ArrayInfo, ...]
    originals: int
    payload_start: int


def is_record(value: bytes | memoryview) -> bool:
    """True when an LMDB value is an int8kit record (starts with the magic)."""
    return bytes(value[:4]) == MAGIC


def _check_dtype(name: str, dtype: np.dtype) -> None:
    if dtype.hasobject or dtype.fields is not None or dtype.kind == "V":
        raise DataError(
            f"array '{name or 'data'}' has dtype {dtype}, which cannot be stored as raw bytes; "
            "expected a numeric or boolean array, convert it first."
        )


def encode_record(arrays: dict[str, np.ndarray], originals: int = 0) -> bytes:
    """Serialise named arrays that share their first (sample) axis into one record."""
    entries, chunks, offset, n = [], [], 0, None
    for name, arr in arrays.items():
        arr = np.ascontiguousarray(arr)
        _check_dtype(name, arr.dtype)
        if arr.ndim == 0:
            raise DataError(f"array '{name or 'data'}' is a scalar; expected a batch whose first axis is the samples.")
        if n is None:
            n = arr.shape[0]
        elif arr.shape[0] != n:
            raise DataError(
                f"the arrays of one put() have different batch sizes ({n} and {arr.shape[0]} for '{name}'); "
                "expected the same first axis for every input."
            )
        entries.append({"name": name, "dtype": arr.dtype.str, "shape": list(arr.shape), "offset": offset, "nbytes": arr.nbytes})
        chunks.append(arr.tobytes())
        offset += arr.nbytes
    if n is None:
        raise DataError("put() received no arrays; expected an ndarray or a dict of name to ndarray.")
    if n == 0:
        raise DataError("put() received a batch of 0 samples; expected at least one sample.")
    header = json.dumps({"n": n, "arrays": entries, "originals": originals}, separators=(",", ":")).encode()
    return _PREFIX.pack(MAGIC, VERSION, len(header)) + header + b"".join(chunks)


def decode_header(value: bytes | memoryview, *, where: str) -> RecordHeader:
    """Read a record's header without touching its payload."""
    try:
        magic, version, size = _PREFIX.unpack_from(value, 0)
        meta = json.loads(bytes(value[_PREFIX.size : _PREFIX.size + size]))
        arrays = tuple(
            ArrayInfo(a["name"], np.dtype(a["dtype"]), tuple(a["shape"]), a["offset"], a["nbytes"]) for a in meta["arrays"]
        )
        n = int(meta["n"])
    except (struct.error, ValueError, KeyError, TypeError, RecursionError) as exc:  # RecursionError: JSON nested absurdly deep
        raise DataError(f"{where} is not a valid int8kit record ({type(exc).__name__}: {exc}); re-create the LMDB with int8kit.data.LmdbWriter.") from None
    if magic != MAGIC or version != VERSION:
        raise DataError(f"{where} has record version {version}, expected {VERSION}; re-create the LMDB with this int8kit.")
    return RecordHeader(n, arrays, int(meta.get("originals", 0)), _PREFIX.size + size)


def decode_record(value: bytes | memoryview, *, where: str) -> tuple[RecordHeader, dict[str, np.ndarray]]:
    """A record's header and its arrays (copies, so they outlive the LMDB transaction)."""
    head = decode_header(value, where=where)
    out = {}
    for a in head.arrays:
        start = head.payload_start + a.offset
        if start + a.nbytes > len(value) or a.nbytes != int(np.prod(a.shape, dtype=np.int64)) * a.dtype.itemsize:
            raise DataError(f"{where} is truncated or corrupt (array '{a.name}'); re-create the LMDB.")
        out[a.name] = np.frombuffer(value, dtype=a.dtype, count=a.nbytes // max(1, a.dtype.itemsize), offset=start).reshape(a.shape).copy()
    return head, out


# ---------------------------------------------------------------- data.label


def _num(v: Any) -> str:
    f = float(v)
    return str(int(f)) if f.is_integer() else repr(f)


def _parse_num(text: str, where: str) -> int | float:
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            raise DataError(f"{where} has '{text}' where a number was expected; fix the label file.") from None


def _is_box_list(item: Any) -> bool:
    return isinstance(item, (list, tuple, np.ndarray)) and all(
        isinstance(b, (list, tuple, np.ndarray)) and len(b) == 5 for b in item
    )


def label_lines(labels: Any, n: int) -> tuple[str, list[str]]:
    """Label lines of one put() of ``n`` samples, and their kind (``"class"`` or ``"detect"``).

    ``labels``: ``n`` class ids (list or array); ``n`` lists of ``(cls, x1, y1, x2, y2)`` boxes; a
    JSON string of either (the manual's ``labels=json.dumps(...)``); or a preformatted line.
    """
    if isinstance(labels, str):
        try:
            labels = json.loads(labels)
        except json.JSONDecodeError:
            return _kind_of_text(labels, n)
        except RecursionError:
            raise DataError("labels JSON is nested too deeply to be labels; expected class ids or lists of boxes.") from None
        if isinstance(labels, (str, int)):
            return _kind_of_text(str(labels), n)
    if isinstance(labels, np.ndarray) and labels.ndim == 1:
        labels = labels.tolist()
    if not isinstance(labels, (list, tuple)) or len(labels) != n:
        got = len(labels) if isinstance(labels, (list, tuple)) else type(labels).__name__
        raise DataError(f"labels for a batch of {n} samples must hold {n} entries, got {got}; pass one label per sample.")
    if all(isinstance(x, (int, np.integer)) and not isinstance(x, bool) for x in labels):
        return "class", [",".join(str(int(x)) for x in labels)]
    if all(_is_box_list(x) for x in labels):
        return "detect", [";".join(",".join([str(int(b[0]))] + [_num(v) for v in b[1:]]) for b in boxes) for boxes in labels]
    raise DataError(
        "labels must be one integer class per sample or one list of (cls, x1, y1, x2, y2) boxes per sample; "
        "got another structure, convert it to one of those."
    )


def _kind_of_text(text: str, n: int) -> tuple[str, list[str]]:
    lines = text.strip("\n").split("\n")
    if len(lines) == 1 and ";" not in text and len(lines[0].split(",")) == n:
        return "class", lines
    if len(lines) == n:
        return "detect", lines
    raise DataError(f"label text '{text[:40]}' does not match a batch of {n} samples; expected {n} class ids or {n} box lines.")


def _boxes(line: str, where: str) -> list[Box]:
    if not line.strip():
        return []
    out = []
    for part in line.split(";"):
        if not part.strip():
            continue
        vals = [_parse_num(v.strip(), where) for v in part.split(",")]
        if len(vals) != 5:
            raise DataError(f"{where} has a box with {len(vals)} values ('{part}'); expected cls,x1,y1,x2,y2.")
        out.append((int(vals[0]), *vals[1:]))
    return out


def parse_labels(text: str, record_sizes: Sequence[int], *, where: str) -> tuple[str, list[Any]]:
    """Per-sample labels from ``data.label`` text, given each record's sample count.

    Classification has one line per record with as many class ids as the record has samples;
    detection has one line per sample. Returns the kind and one label per sample.
    """
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    total = sum(record_sizes)
    looks_class = (
        ";" not in text
        and len(lines) == len(record_sizes)
        and all(line.strip() and len(line.split(",")) == k for line, k in zip(lines, record_sizes))
    )
    if looks_class:
        out: list[Any] = []
        for i, line in enumerate(lines):
            for v in line.split(","):
                num = _parse_num(v.strip(), f"{where} line {i + 1}")
                if not float(num).is_integer():
                    raise DataError(f"{where} line {i + 1} has class '{v}'; expected integer class ids.")
                out.append(int(num))
        return "class", out
    if len(lines) == total:
        return "detect", [_boxes(line, f"{where} line {i + 1}") for i, line in enumerate(lines)]
    raise DataError(
        f"{where} has {len(lines)} lines but the LMDB holds {len(record_sizes)} records of {total} samples; expected one "
        "line of class ids per record (e.g. 3,13,4,6) or one line of boxes per sample; fix or remove the label file."
    )


def format_labels(kind: str, labels: Sequence[Any], record_sizes: Sequence[int]) -> str:
    """``data.label`` text for per-sample ``labels`` grouped into records of ``record_sizes``."""
    if kind == "detect":
        return "".join(";".join(",".join([str(int(b[0]))] + [_num(v) for v in b[1:]]) for b in boxes) + "\n" for boxes in labels)
    lines, pos = [], 0
    for k in record_sizes:
        lines.append(",".join(str(int(x)) for x in labels[pos : pos + k]) + "\n")
        pos += k
    return "".join(lines)


def read_label_file(db: Path, record_sizes: Sequence[int]) -> tuple[str, list[Any]] | None:
    """Parse ``db/data.label`` if present (``None`` when the LMDB has no label file)."""
    path = Path(db) / LABEL_FILE
    if not path.is_file():
        return None
    return parse_labels(path.read_text(encoding="utf-8"), record_sizes, where=f"label file '{path}'")
