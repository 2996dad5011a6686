"""Where FP32 references live: the cache folder, the fingerprints that key it, and a record store.

A reference is a folder of raw files, one per tensor, each holding that tensor's arrays of every
batch (or piece) back to back, plus ``index.json`` with each record's offset, dtype and shape.
A small group is read into RAM once; a large one record by record, so memory follows one record.
A folder is written under a temporary name and renamed when complete: a half-written reference
is never read.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from int8kit.graph.io import write_text_atomic

log = logging.getLogger(__name__)

STORE_VERSION = 1  # bump when the layout or what a reference holds changes
CACHE_LIMIT_BYTES = 8 << 30  # older references are deleted past this much in <cache>/evaluate
_HASH_BLOCK = 16 << 20  # bytes per hashed block (one thread task)


def cache_root() -> Path:
    """int8kit's cache folder: ``$INT8KIT_CACHE``, else ``~/.cache/int8kit``."""
    return Path(os.environ.get("INT8KIT_CACHE") or Path.home() / ".cache" / "int8kit")


def data_fingerprint(data: Any) -> str | None:
    """A content hash of arrays or of a .npy/.npz file; ``None`` for data read only by iterating
    (iterables, image folders, LMDBs): those references are not kept across evaluators."""
    if isinstance(data, np.ndarray):
        return _digest([("", data)])
    if isinstance(data, Mapping) and data and all(isinstance(v, np.ndarray) for v in data.values()):
        return _digest([(str(k), data[k]) for k in sorted(data)])
    if isinstance(data, (str, os.PathLike)) and Path(data).suffix.lower() in (".npy", ".npz") and Path(data).is_file():
        return _digest([("file", np.memmap(data, dtype=np.uint8, mode="r"))])
    return None


def _digest(arrays: list[tuple[str, np.ndarray]]) -> str:
    """SHA-256 of each block of the arrays' bytes, hashed in threads (hashlib releases the GIL),
    then of the block digests in order: 300 MB of test images in about half the time of one thread."""
    head, blocks = hashlib.sha256(), []
    for key, arr in arrays:
        head.update(f"{key}\0{arr.dtype.str}\0{arr.shape}\0".encode())
        raw = memoryview(np.ascontiguousarray(arr)).cast("B")
        blocks += [raw[i : i + _HASH_BLOCK] for i in range(0, len(raw), _HASH_BLOCK)]
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        for digest in pool.map(lambda block: hashlib.sha256(block).digest(), blocks):
            head.update(digest)
    return head.hexdigest()


def reference_key(*parts: Any) -> str:
    """A short stable id of everything a reference depends on."""
    return hashlib.sha1(json.dumps([STORE_VERSION, *map(str, parts)]).encode()).hexdigest()[:24]


class RecordWriter:
    """Appends arrays to a new store folder; ``finish`` makes it readable under its final name."""

    def __init__(self, final: Path) -> None:
        self.final = final
        final.parent.mkdir(parents=True, exist_ok=True)
        self.folder = Path(tempfile.mkdtemp(prefix=final.name + ".tmp-", dir=final.parent))
        self.groups: dict[str, dict[str, Any]] = {}
        self._files: dict[tuple[str, str], Any] = {}

    def append(self, group: str, arrays: Mapping[str, np.ndarray]) -> None:
        """One record of ``group``: an array per tensor name (the same names in every record)."""
        g = self.groups.setdefault(group, {"names": list(arrays), "records": []})
        row = []
        for k, name in enumerate(g["names"]):
            arr = np.ascontiguousarray(arrays[name])
            fh = self._files.get((group, name))
            if fh is None:
                fh = self._files[(group, name)] = open(self.folder / f"{group}.{k}.bin", "wb")
            row.append([fh.tell(), arr.dtype.str, list(arr.shape)])
            fh.write(memoryview(arr).cast("B") if arr.size else b"")
        g["records"].append(row)

    def finish(self, meta: Mapping[str, Any]) -> "RecordReader":
        """Close the files, write the index, move the folder to its final name and open it."""
        for fh in self._files.values():
            fh.close()
        write_text_atomic(self.folder / "index.json", json.dumps({"meta": dict(meta), "groups": self.groups}))
        try:
            os.rename(self.folder, self.final)
        except OSError:  # another process finished the same reference first: use that one
            shutil.rmtree(self.folder, ignore_errors=True)
        return RecordReader(self.final)

    def abort(self) -> None:
        """Drop the partial folder (after a failure)."""
        for fh in self._files.values():
            fh.close()
        shutil.rmtree(self.folder, ignore_errors=True)


class RecordReader:
    """Reads a finished store: groups up to ``in_memory_bytes`` are held in RAM, larger ones are
    read from disk at each access."""

    def __init__(self, folder: Path, *, in_memory_bytes: int = 0) -> None:
        self.folder = folder
        index = json.loads((folder / "index.json").read_text())
        self.meta: dict[str, Any] = index["meta"]
        self.groups: dict[str, dict[str, Any]] = index["groups"]
        self.in_memory_bytes = in_memory_bytes
        self._held: dict[tuple[str, int], np.ndarray] = {}
        self._index = {g: {n: k for k, n in enumerate(v["names"])} for g, v in self.groups.items()}
        self._bytes = {g: self._group_bytes(g) for g in self.groups}

    def names(self, group: str) -> list[str]:
        return list(self.groups.get(group, {}).get("names", []))

    def records(self, group: str) -> int:
        return len(self.groups.get(group, {}).get("records", []))

    def nbytes(self, group: str) -> int:
        """Bytes of every record of ``group``."""
        return self._bytes.get(group, 0)

    def _group_bytes(self, group: str) -> int:
        return sum(int(np.prod(shape, dtype=np.int64)) * np.dtype(dt).itemsize
                   for row in self.groups[group]["records"] for _, dt, shape in row)

    def record(self, group: str, index: int) -> dict[str, np.ndarray]:
        """Record ``index`` of ``group``: an array per tensor name."""
        g = self.groups[group]
        return {name: self._array(group, k, *g["records"][index][k]) for k, name in enumerate(g["names"])}

    def get(self, group: str, name: str, index: int) -> np.ndarray:
        """One tensor of record ``index`` of ``group``."""
        k = self._index[group][name]
        return self._array(group, k, *self.groups[group]["records"][index][k])

    def _array(self, group: str, k: int, offset: int, dtype: str, shape: list[int]) -> np.ndarray:
        dt = np.dtype(dtype)
        count = int(np.prod(shape, dtype=np.int64))
        if count == 0:
            return np.empty(shape, dt)
        path = self.folder / f"{group}.{k}.bin"
        if self.nbytes(group) > self.in_memory_bytes:
            # large groups are read record by record and held by nobody here: memory follows one record
            return np.fromfile(path, dtype=dt, count=count, offset=offset).reshape(shape)
        raw = self._held.get((group, k))
        if raw is None:  # small groups are read into RAM once
            raw = self._held[(group, k)] = np.fromfile(path, dtype=np.uint8)
        return raw[offset : offset + count * dt.itemsize].view(dt).reshape(shape)

    def touch(self) -> None:
        """Mark the store as used (the cache deletes the least recently used first)."""
        os.utime(self.folder / "index.json")


def open_cached(folder: Path, *, in_memory_bytes: int = 0) -> RecordReader | None:
    """The finished store at ``folder``, or ``None`` when there is none (or it cannot be read)."""
    if not (folder / "index.json").is_file():
        return None
    try:
        reader = RecordReader(folder, in_memory_bytes=in_memory_bytes)
        reader.touch()
        return reader
    except (OSError, ValueError, KeyError) as exc:
        log.warning("ignoring the unreadable cached reference %s (%s)", folder, exc)
        return None


def prune(root: Path, limit: int = CACHE_LIMIT_BYTES, keep: Path | None = None) -> None:
    """Delete the least recently used references in ``root`` until they take at most ``limit`` bytes."""
    entries = []
    for folder in root.glob("*"):
        try:  # other processes may be writing or deleting entries meanwhile
            if ".tmp-" in folder.name and time.time() - folder.stat().st_mtime > 86400:
                shutil.rmtree(folder, ignore_errors=True)  # left by a killed process
                continue
            index = folder / "index.json"
            if folder.is_dir() and index.is_file() and folder != keep:
                size = sum(f.stat().st_size for f in folder.iterdir())
                entries.append((index.stat().st_mtime, size, folder))
        except OSError:
            continue
    total = sum(e[1] for e in entries) + (sum(f.stat().st_size for f in keep.iterdir()) if keep and keep.is_dir() else 0)
    for _, size, folder in sorted(entries):
        if total <= limit:
            break
        shutil.rmtree(folder, ignore_errors=True)
        total -= size
