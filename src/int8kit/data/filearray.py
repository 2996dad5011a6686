"""Arrays read from .npy files and .npz members slice by slice.

Calibration sets are often larger than the model's working memory. ``np.load`` reads a whole
.npz member at once, and a memory map keeps every touched page resident (it counts in the
process's RSS until the kernel needs it back). A ``FileArray`` instead reads the rows a batch asks
for with plain file reads, so memory holds one batch whatever the file size. Compressed members
(``np.savez_compressed``) are decompressed as a stream (``ZipMemberArray``): a 2 MB file that
inflates to gigabytes (a decompression bomb) still costs one batch of memory.
"""

from __future__ import annotations

import copy
import os
import struct
import threading
import zipfile
from pathlib import Path

import numpy as np

from int8kit.errors import DataError

_LOCAL_HEADER = 30  # bytes of a zip local file header before its name and extra field
_WHOLE_BYTES = 256 << 20  # a compressed member that cannot be streamed (Fortran order) is inflated whole up to this


class FileArray:
    """A read-only array on disk: ``shape``, ``dtype``, ``ndim`` and slicing along the first axis."""

    def __init__(self, path: str | os.PathLike, offset: int, dtype: np.dtype, shape: tuple[int, ...]):
        self.path = Path(path)
        self.offset = offset
        self.dtype = np.dtype(dtype)
        self.shape = tuple(shape)
        self.ndim = len(self.shape)
        self._row = int(np.prod(self.shape[1:], dtype=np.int64)) if self.ndim > 1 else 1

    def __len__(self) -> int:
        return self.shape[0]

    def head(self, n: int) -> "FileArray":
        """The first ``n`` rows, still on disk."""
        clone = copy.copy(self)
        clone.shape = (min(n, self.shape[0]),) + self.shape[1:]
        clone._fresh()
        return clone

    def _fresh(self) -> None:
        """Forget per-reader state a copy must not share (none here)."""

    def __getitem__(self, key: slice) -> np.ndarray:
        if not isinstance(key, slice) or key.step not in (None, 1):
            raise TypeError("FileArray supports contiguous slices of the first axis only")
        start, stop, _ = key.indices(self.shape[0])
        count = max(stop - start, 0)
        flat = self._read(start * self._row, count * self._row)
        return flat.reshape((count,) + self.shape[1:])

    def _read(self, first: int, items: int) -> np.ndarray:
        with open(self.path, "rb") as fh:
            fh.seek(self.offset + first * self.dtype.itemsize)
            return np.fromfile(fh, dtype=self.dtype, count=items)


class ZipMemberArray(FileArray):
    """A compressed .npz member read as a stream: ``offset`` counts decompressed bytes.

    Batches are read front to back, so each read continues an open stream; a few streams are
    kept (workers may read different shares), and one behind the wanted rows is reopened."""

    _STREAMS = 4

    def __init__(self, path: str | os.PathLike, member: str, offset: int, dtype: np.dtype, shape: tuple[int, ...]):
        super().__init__(path, offset, dtype, shape)
        self.member = member
        self._fresh()

    def _fresh(self) -> None:
        self._lock = threading.Lock()
        self._idle: list[tuple[zipfile.ZipFile, object]] = []

    def _read(self, first: int, items: int) -> np.ndarray:
        pos = self.offset + first * self.dtype.itemsize
        need = items * self.dtype.itemsize
        with self._lock:  # take the open stream closest behind ``pos``
            behind = [s for s in self._idle if s[1].tell() <= pos]
            stream = max(behind, key=lambda s: s[1].tell()) if behind else None
            if stream is not None:
                self._idle.remove(stream)
        if stream is None:
            zf = zipfile.ZipFile(self.path)
            stream = (zf, zf.open(self.member))
        stream[1].seek(pos)  # forward: decompresses and drops the bytes in between, in bounded chunks
        data = stream[1].read(need)
        if len(data) != need:
            raise DataError(f"data file '{self.path}' member '{self.member}' ends after {len(data)} of the {need} bytes "
                            "its header promises at that point; re-save it with numpy.savez.")
        with self._lock:
            self._idle.append(stream)
            while len(self._idle) > self._STREAMS:
                old = min(self._idle, key=lambda s: s[1].tell())
                self._idle.remove(old)
                old[0].close()
        return np.frombuffer(data, dtype=self.dtype).copy()


def _header(fh) -> tuple[np.dtype, tuple[int, ...], bool] | None:
    version = np.lib.format.read_magic(fh)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
    elif version in ((2, 0), (3, 0)):
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
    else:
        return None
    return np.dtype(dtype), tuple(shape), fortran


def open_npy(path: str | os.PathLike, offset: int = 0) -> FileArray | None:
    """A FileArray for the .npy data at ``offset`` of ``path``; ``None`` when it cannot be read
    row by row (object dtype, Fortran order): the caller then loads it whole."""
    with open(path, "rb") as fh:
        fh.seek(offset)
        head = _header(fh)
        if head is None:
            return None
        dtype, shape, fortran = head
        if fortran or dtype.hasobject or not shape:
            return None
        start, need = fh.tell(), int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        have = os.fstat(fh.fileno()).st_size - start
        if have < need:  # found now, not as a reshape error batches later
            raise ValueError(f"truncated: the header promises {need} bytes of data, the file holds {have}")
        return FileArray(path, start, dtype, shape)


def open_npz(path: str | os.PathLike) -> dict[str, np.ndarray | FileArray]:
    """Every member of an .npz as a FileArray: uncompressed ones (``np.savez``) read at their
    offset, compressed ones (``np.savez_compressed``) as decompressing streams. Members that cannot
    be read row by row (Fortran order) are loaded whole."""
    out: dict[str, np.ndarray | FileArray] = {}
    with zipfile.ZipFile(path) as zf:
        infos = zf.infolist()
    with open(path, "rb") as fh:
        for info in infos:
            name = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
            lazy = None
            if info.compress_type == zipfile.ZIP_STORED:
                fh.seek(info.header_offset + 26)
                name_len, extra_len = struct.unpack("<HH", fh.read(4))
                lazy = open_npy(path, info.header_offset + _LOCAL_HEADER + name_len + extra_len)
            else:
                lazy = _open_compressed(path, info)
            if lazy is None:
                with np.load(path, allow_pickle=False) as npz:
                    out[name] = npz[name]
            else:
                out[name] = lazy
    return out


def _open_compressed(path: str | os.PathLike, info: zipfile.ZipInfo) -> ZipMemberArray | None:
    """A ZipMemberArray for a compressed .npy member (header read from the stream), or None."""
    with zipfile.ZipFile(path) as zf, zf.open(info) as member:
        head = _header(member)
        start = member.tell()
    if head is None:
        return None
    dtype, shape, fortran = head
    need = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if fortran and need > _WHOLE_BYTES:  # would be inflated whole: only small ones are
        raise ValueError(f"member '{info.filename}' is a Fortran-order array of {need >> 20} MiB, more than the "
                         f"{_WHOLE_BYTES >> 20} MiB int8kit inflates at once; save it in C order (np.ascontiguousarray)")
    if fortran or dtype.hasobject or not shape:
        return None
    if info.file_size - start < need:  # the archive's own size of the member, checked now
        raise ValueError(f"truncated: member '{info.filename}' promises {need} bytes of data, the archive lists {info.file_size - start}")
    return ZipMemberArray(path, info.filename, start, dtype, shape)
