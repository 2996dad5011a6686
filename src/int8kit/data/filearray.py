"""Arrays read from .npy files and uncompressed .npz members slice by slice.

Calibration sets are often larger than the model's working memory. ``np.load`` reads a whole
.npz member at once, and a memory map keeps every touched page resident (it counts in the
process's RSS until the kernel needs it back). A ``FileArray`` instead reads the rows a batch asks
for with plain file reads, so memory holds one batch whatever the file size.
"""

from __future__ import annotations

import os
import struct
import zipfile
from pathlib import Path

import numpy as np

_LOCAL_HEADER = 30  # bytes of a zip local file header before its name and extra field


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
        return FileArray(self.path, self.offset, self.dtype, (min(n, self.shape[0]),) + self.shape[1:])

    def __getitem__(self, key: slice) -> np.ndarray:
        if not isinstance(key, slice) or key.step not in (None, 1):
            raise TypeError("FileArray supports contiguous slices of the first axis only")
        start, stop, _ = key.indices(self.shape[0])
        count = max(stop - start, 0)
        with open(self.path, "rb") as fh:
            fh.seek(self.offset + start * self._row * self.dtype.itemsize)
            flat = np.fromfile(fh, dtype=self.dtype, count=count * self._row)
        return flat.reshape((count,) + self.shape[1:])


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
    """Every member of an .npz: uncompressed ones (``np.savez``) as FileArrays, compressed ones
    (``np.savez_compressed``) loaded whole, since they cannot be read at an offset."""
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
            if lazy is None:
                with np.load(path, allow_pickle=False) as npz:
                    out[name] = npz[name]
            else:
                out[name] = lazy
    return out
