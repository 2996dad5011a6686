"""Calibration statistics: per-tensor histograms and ranges, exact merging, and the statistics file.

The file is a versioned ``.npz`` (the ``-dump_dist`` / ``-load_dist`` of the vendor tools). Tensor
names are stored in one array and each tensor's arrays under an index, so any name is allowed.
"""

from __future__ import annotations

import hashlib
import io
import os
import zipfile
import zlib
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import onnx

from int8kit.calib.histogram import Histogram
from int8kit.errors import CalibrationError, refuse_unreadable
from int8kit.graph.io import write_bytes_atomic

# Bounds on reading a statistics file: the largest array is a tensor's per-channel extremes or its
# 2 x 4096 histogram counts; a whole file of 10 000 tensors stays far below the total.
_MEMBER_BYTES = 64 << 20
_TOTAL_BYTES = 4 << 30

FORMAT_NAME = "int8kit-stats"
FORMAT_VERSION = 2  # 2: the model id covers weights and attributes too


@dataclass
class TensorStats:
    """What calibration keeps of one tensor: its histogram (with exact min/max) and per-channel extremes."""

    hist: Histogram
    channel_min: np.ndarray | None = None
    channel_max: np.ndarray | None = None
    channel_sum: np.ndarray | None = None  # float64 sum per channel (means for bias correction)
    values: int = 0  # values seen; the histogram may count a strided subset of them

    @property
    def channel_mean(self) -> np.ndarray | None:
        """Mean of every channel, or ``None`` when the tensor has no stable channel axis."""
        total = self.values or self.hist.count
        if self.channel_sum is None or self.channel_sum.size == 0 or total == 0:
            return None
        return self.channel_sum / (total / self.channel_sum.size)

    @property
    def min(self) -> float:
        return self.hist.min

    @property
    def max(self) -> float:
        return self.hist.max


def widen_counts(counts: np.ndarray, doublings: int) -> np.ndarray:
    """Counts of the same values on a range ``2**doublings`` times wider (exact: sums bin pairs).

    Bin ``i`` of ``[-e, e)`` lies inside bin ``bins/2 + i//2`` of ``[-2e, 2e)``, because every edge is a
    power of two and ``bins`` is even.
    """
    out = counts
    bins = counts.size // 2
    for _ in range(doublings):
        wider = np.zeros_like(out)
        wider[bins // 2 : bins // 2 + bins] = out.reshape(bins, 2).sum(axis=1)
        out = wider
        if out[bins - 1] + out[bins] == out.sum():
            # Everything sits in the two central bins: further doublings do not move it.
            break
    return out


def merge_histograms(a: Histogram, b: Histogram) -> Histogram:
    """Exact sum of two histograms of the same tensor, on the larger of the two edges."""
    if a.counts.size != b.counts.size:
        raise CalibrationError(
            f"cannot merge histograms with {a.bins} and {b.bins} bins per side; expected equal --th-binnum, re-run calibrate."
        )
    edge = max(a.edge, b.edge)
    ca = widen_counts(a.counts, _doublings(a.edge, edge))
    cb = widen_counts(b.counts, _doublings(b.edge, edge))
    return Histogram(counts=ca + cb, edge=edge, min=min(a.min, b.min), max=max(a.max, b.max))


def _doublings(small: float, big: float) -> int:
    return int(round(np.log2(big / small))) if big > small else 0


def _merge_channels(x: np.ndarray | None, y: np.ndarray | None, op: np.ufunc) -> np.ndarray | None:
    if x is None or y is None or x.shape != y.shape:
        return None
    return op(x, y)


@dataclass
class Stats:
    """Statistics of every tapped tensor of one model over ``samples`` calibration samples."""

    tensors: dict[str, TensorStats]
    samples: int
    model_id: str
    bins: int
    meta: dict[str, str] = field(default_factory=dict)

    def __getitem__(self, name: str) -> TensorStats:
        return self.tensors[name]

    def __contains__(self, name: object) -> bool:
        return name in self.tensors

    def merge(self, other: "Stats") -> "Stats":
        """Statistics of both sample sets together; merging disjoint halves equals one pass over all."""
        if other.model_id != self.model_id:
            raise CalibrationError(
                f"cannot merge statistics of model {other.model_id} into statistics of model {self.model_id}; "
                "expected statistics of the same model, re-run calibrate on one model."
            )
        if other.bins != self.bins:
            raise CalibrationError(
                f"cannot merge statistics with {other.bins} bins into statistics with {self.bins} bins; "
                "expected the same --th-binnum, re-run calibrate with one value."
            )
        if set(other.tensors) != set(self.tensors):
            diff = sorted(set(other.tensors) ^ set(self.tensors))[:5]
            raise CalibrationError(
                f"cannot merge statistics over different tensors (e.g. {diff}); expected the same tensor list, "
                "re-run calibrate with the same tensors."
            )
        merged = {}
        for name, a in self.tensors.items():
            b = other.tensors[name]
            merged[name] = TensorStats(
                merge_histograms(a.hist, b.hist),
                _merge_channels(a.channel_min, b.channel_min, np.minimum),
                _merge_channels(a.channel_max, b.channel_max, np.maximum),
                _merge_channels(a.channel_sum, b.channel_sum, np.add),
                a.values + b.values,
            )
        return Stats(merged, self.samples + other.samples, self.model_id, self.bins, dict(self.meta))

    def with_bins(self, bins: int) -> "Stats":
        """These statistics with ``bins`` histogram bins per side (at most the calibrated number:
        fewer bins are exact sums of neighbours, more need a new pass)."""
        if bins == self.bins:
            return self
        if bins > self.bins:
            raise CalibrationError(
                f"--th-binnum {bins} asks for finer histograms than the statistics hold ({self.bins} bins per side); "
                f"pass at most {self.bins}, or calibrate again with --th-binnum {bins}."
            )
        tensors = {name: replace(t, hist=t.hist.coarsened(bins)) for name, t in self.tensors.items()}
        return Stats(tensors, self.samples, self.model_id, bins, dict(self.meta))

    def save(self, path: str | os.PathLike) -> Path:
        """Write the statistics file atomically (temp file + rename)."""
        names = list(self.tensors)
        arrays: dict[str, np.ndarray] = {
            "format": np.array(FORMAT_NAME),
            "version": np.array(FORMAT_VERSION, dtype=np.int64),
            "model_id": np.array(self.model_id),
            "samples": np.array(self.samples, dtype=np.int64),
            "bins": np.array(self.bins, dtype=np.int64),
            "names": np.array(names, dtype=str) if names else np.zeros(0, dtype="<U1"),
            "meta_keys": np.array(list(self.meta), dtype=str) if self.meta else np.zeros(0, dtype="<U1"),
            "meta_values": np.array(list(self.meta.values()), dtype=str) if self.meta else np.zeros(0, dtype="<U1"),
        }
        for i, name in enumerate(names):
            t = self.tensors[name]
            arrays[f"t{i}.counts"] = t.hist.counts.astype(np.int64, copy=False)
            arrays[f"t{i}.range"] = np.array([t.hist.edge, t.hist.min, t.hist.max], dtype=np.float64)
            arrays[f"t{i}.values"] = np.array(t.values, dtype=np.int64)
            if t.channel_min is not None and t.channel_max is not None:
                arrays[f"t{i}.cmin"] = t.channel_min
                arrays[f"t{i}.cmax"] = t.channel_max
            if t.channel_sum is not None:
                arrays[f"t{i}.csum"] = t.channel_sum
        buf = io.BytesIO()
        np.savez_compressed(buf, **arrays)
        return write_bytes_atomic(path, buf.getvalue())

    @classmethod
    def load(cls, path: str | os.PathLike, *, model_id: str | None = None) -> "Stats":
        """Read a statistics file; ``model_id`` (from ``model_fingerprint``) checks it belongs to that model."""
        path = Path(path)
        if not path.is_file():
            what = "is a folder" if path.is_dir() else "does not exist"
            raise CalibrationError(f"statistics file '{path}' {what}; expected the .npz written by calibrate, check the path.")
        refuse_unreadable(path, "statistics file", CalibrationError)
        not_stats = CalibrationError(
            f"file '{path}' is not an int8kit statistics file; expected the .npz written by calibrate, re-run calibrate."
        )
        try:
            if not zipfile.is_zipfile(path):  # a plain .npy array, or anything else
                raise not_stats
            data = _read_members(path)
        except (ValueError, OSError, zipfile.BadZipFile, EOFError, SyntaxError, zlib.error):
            raise not_stats from None
        if "format" not in data or str(data["format"]) != FORMAT_NAME:
            raise not_stats
        try:
            version = int(data.get("version", -1))
        except (TypeError, ValueError):
            version = -1
        if version != FORMAT_VERSION:
            raise CalibrationError(
                f"statistics file '{path}' has format version {version}, this int8kit reads version {FORMAT_VERSION}; "
                "re-run calibrate to write it again."
            )
        file_model = str(data["model_id"])
        if model_id is not None and file_model != model_id:
            raise CalibrationError(
                f"statistics file '{path}' was collected on another model or other weights ({file_model[:12]}, this one is {model_id[:12]}), "
                "or with other --no-fuse layers; re-run calibrate on this model with the same --no-fuse."
            )
        try:
            _check_arrays(data, path)
            return cls._from_arrays(data, file_model)
        except KeyError as exc:
            raise CalibrationError(
                f"statistics file '{path}' is incomplete (missing {exc}); expected a file written by calibrate, re-run calibrate."
            ) from None

    @classmethod
    def _from_arrays(cls, data: dict[str, np.ndarray], file_model: str) -> "Stats":
        tensors = {}
        for i, name in enumerate(data["names"].tolist()):
            edge, lo, hi = (float(v) for v in data[f"t{i}.range"])
            hist = Histogram(counts=data[f"t{i}.counts"].astype(np.int64), edge=edge, min=lo, max=hi)
            tensors[str(name)] = TensorStats(
                hist, data.get(f"t{i}.cmin"), data.get(f"t{i}.cmax"), data.get(f"t{i}.csum"), int(data.get(f"t{i}.values", 0))
            )
        meta = dict(zip(map(str, data["meta_keys"].tolist()), map(str, data["meta_values"].tolist())))
        return cls(tensors, int(data["samples"]), file_model, int(data["bins"]), meta)


def _read_members(path: Path) -> dict[str, np.ndarray]:
    """Every array of a statistics .npz, each inflated at most to ``_MEMBER_BYTES`` (and all together
    to ``_TOTAL_BYTES``): a small compressed file cannot make int8kit allocate gigabytes."""
    data: dict[str, np.ndarray] = {}
    total = 0
    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            raw = bytearray()
            with zf.open(info) as member:
                while len(raw) <= _MEMBER_BYTES and (chunk := member.read(1 << 20)):
                    raw += chunk
            total += len(raw)
            if len(raw) > _MEMBER_BYTES or total > _TOTAL_BYTES:
                raise CalibrationError(
                    f"statistics file '{path}' inflates beyond {(_MEMBER_BYTES if len(raw) > _MEMBER_BYTES else _TOTAL_BYTES) >> 20} MiB "
                    f"(at '{info.filename}'); a file written by calibrate is far smaller, re-run calibrate."
                )
            name = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
            data[name] = np.lib.format.read_array(io.BytesIO(raw), allow_pickle=False)
    return data


def _check_arrays(data: dict[str, np.ndarray], path: Path) -> None:
    """Check every array of a statistics file against its header, before anything reads them: a
    damaged or edited file is refused here, naming the file and the tensor, not later as an empty
    histogram or a wrong threshold."""
    def bad(what: str, tensor: str | None = None) -> CalibrationError:
        where = f"statistics file '{path}'" + (f", tensor '{tensor}'" if tensor is not None else "")
        return CalibrationError(f"{where}: {what}; the file is damaged or was edited, re-run calibrate to write it again.")

    def whole(key: str) -> int:
        arr = data[key]
        if arr.shape != () or not np.issubdtype(arr.dtype, np.integer):
            raise bad(f"'{key}' is {arr.dtype} of shape {arr.shape}, expected one integer")
        return int(arr)

    samples, bins = whole("samples"), whole("bins")
    if samples < 1:
        raise bad(f"the header says samples={samples}, expected at least 1")
    if not 512 <= bins <= 4096 or bins & (bins - 1):  # what calibrate's --th-binnum allows
        raise bad(f"the header says bins={bins}, expected a power of two from 512 to 4096")
    names = data["names"]
    if names.ndim != 1 or names.dtype.kind != "U" or len(set(names.tolist())) != names.size:
        raise bad(f"the tensor names are {names.dtype} of shape {names.shape}, expected distinct strings")
    for i, name in enumerate(names.tolist()):
        counts, rng = data[f"t{i}.counts"], data[f"t{i}.range"]
        if counts.shape != (2 * bins,) or not np.issubdtype(counts.dtype, np.integer):
            raise bad(f"its histogram is {counts.dtype} of shape {counts.shape}, expected {2 * bins} integer counts (bins={bins})", name)
        if counts.size and counts.min() < 0:
            raise bad(f"its histogram holds a negative count ({int(counts.min())})", name)
        if rng.shape != (3,) or not np.all(np.isfinite(rng)) or not rng[0] > 0 or rng[1] > rng[2]:
            raise bad(f"its range (edge, min, max) is {rng.tolist()}, expected finite numbers with edge > 0 and min <= max", name)
        if f"t{i}.values" in data and (data[f"t{i}.values"].shape != () or int(data[f"t{i}.values"]) < 0):
            raise bad(f"its value count is {data[f't{i}.values'].tolist()}, expected one integer >= 0", name)
        channels = [data[k] for k in (f"t{i}.cmin", f"t{i}.cmax", f"t{i}.csum") if k in data]
        if channels and (len({c.shape for c in channels}) != 1 or channels[0].ndim != 1
                         or not all(np.issubdtype(c.dtype, np.floating) and np.all(np.isfinite(c)) for c in channels)):
            raise bad(f"its per-channel arrays have shapes {[c.shape for c in channels]}, expected one finite float per channel each", name)
        if f"t{i}.cmin" in data and f"t{i}.cmax" in data and np.any(data[f"t{i}.cmin"] > data[f"t{i}.cmax"]):
            raise bad("a channel's minimum is above its maximum", name)


def model_fingerprint(model: onnx.ModelProto) -> str:
    """A stable id of the model: op types, attributes, tensor names and weights (unchanged by
    re-saving). Statistics of the same graph with other weights do not fit it: a first conv's
    weights x20 gave agreement 0.06 with the old, structure-only id."""
    h = hashlib.sha1()
    g = model.graph
    for vi in g.input:
        h.update(b"i:" + vi.name.encode() + b"\0")
    for node in g.node:
        h.update(f"n:{node.domain}:{node.op_type}\0".encode())
        for name in node.input:
            h.update(b"<" + name.encode() + b"\0")
        for name in node.output:
            h.update(b">" + name.encode() + b"\0")
        for attr in node.attribute:
            h.update(attr.SerializeToString())
    for vi in g.output:
        h.update(b"o:" + vi.name.encode() + b"\0")
    for t in g.initializer:
        h.update(t.SerializeToString())
    return h.hexdigest()
