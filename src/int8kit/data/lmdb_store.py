"""Write int8kit LMDB datasets (``LmdbWriter``, the manuals' ``lmdb_save``) and refresh them after cleaning.

Every write goes to a hidden staging folder beside the target and is renamed into place on
``close()``, so a failure half-way (full disk, an exception in the ``with`` block) never leaves a
half-written or damaged LMDB at the target path; an existing LMDB is replaced only when the new
one is complete. Formats: ``int8kit.data.lmdb_format`` and docs/lmdb.md.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lmdb
import numpy as np

from int8kit.data.lmdb_format import (
    LABEL_FILE,
    ORIGINALS_DIR,
    decode_record,
    encode_record,
    format_labels,
    is_record,
    label_lines,
    original_name,
    read_label_file,
    record_key,
)
from int8kit.data.samples import UNNAMED
from int8kit.errors import DataError, OutputError
from int8kit.graph.fsops import is_abandoned, os_reason, rename_exchange, try_lock, unlock
from int8kit.graph.io import UMASK, write_text_atomic

log = logging.getLogger(__name__)

_INITIAL_MAP = 1 << 28  # 256 MiB of address space; the file only grows as data is written
_LMDB_FILES = {"data.mdb", "lock.mdb", LABEL_FILE, ORIGINALS_DIR}


def _as_images(originals: Any, n: int) -> list[np.ndarray]:
    """Check un-normalised originals: ``n`` uint8 HxW or HxWxC (C = 1 or 3) images."""
    images = list(originals) if not isinstance(originals, np.ndarray) or originals.ndim == 4 else None
    if images is None and isinstance(originals, np.ndarray) and originals.ndim in (2, 3) and n == 1:
        images = [originals]
    if images is None or len(images) != n:
        got = len(images) if images is not None else f"an array of shape {np.shape(originals)}"
        raise DataError(f"originals must hold one image per sample ({n}), got {got}; pass a (N, H, W, C) uint8 array or a list.")
    out = []
    for i, img in enumerate(images):
        img = np.asarray(img)
        if img.dtype != np.uint8:
            raise DataError(f"original image {i} has dtype {img.dtype}; expected un-normalised uint8 pixels (0-255), convert it first.")
        if img.ndim == 3 and img.shape[-1] == 1:
            img = img[..., 0]
        if img.ndim != 2 and not (img.ndim == 3 and img.shape[-1] == 3):
            hint = "; it looks CHW, transpose it to HWC" if img.ndim == 3 and img.shape[0] in (1, 3) else ""
            raise DataError(f"original image {i} has shape {img.shape}; expected HxW or HxWx3 (RGB){hint}.")
        out.append(img)
    return out


def _is_lmdb_folder(path: Path) -> bool:
    """A folder holding an LMDB (data.mdb), the only thing overwrite may replace."""
    return path.is_dir() and (path / "data.mdb").is_file()


def _carry_over(target: Path, staging: Path) -> None:
    """Give ``staging`` everything in ``target`` that is not the database (a user's notes, scripts,
    sub-folders), as hard links where the file system allows, so the swap keeps them."""
    for entry in target.iterdir():
        dst = staging / entry.name
        if entry.name in _LMDB_FILES or dst.exists() or entry.name.startswith(".int8kit-"):
            continue
        if entry.is_symlink():
            os.symlink(os.readlink(entry), dst)
        elif entry.is_dir():
            shutil.copytree(entry, dst, symlinks=True, copy_function=_link_or_copy)
        else:
            _link_or_copy(entry, dst)


def _link_or_copy(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    try:
        os.link(src, dst)
    except OSError:  # no hard links here: a copy keeps the content all the same
        shutil.copy2(src, dst)


def _swap_in(staging: Path, target: Path) -> None:
    """Put the finished folder ``staging`` at ``target`` in one step: a new path is one rename; an
    existing LMDB folder is exchanged with it (``renameat2(RENAME_EXCHANGE)``), so at every instant
    an LMDB, old or new, is at ``target``. The old one ends at ``staging`` and is removed."""
    if not target.exists():
        os.replace(staging, target)
        return
    _carry_over(target, staging)
    with contextlib.suppress(OSError):
        os.chmod(staging, target.stat().st_mode & 0o7777)  # the folder keeps its permissions
    if not rename_exchange(staging, target):  # file systems without the exchange: two renames
        old = staging.with_name(staging.name.replace(".tmp-", ".old-", 1))
        os.replace(target, old)
        try:
            os.replace(staging, target)
        except BaseException:
            os.replace(old, target)
            raise
        staging = old
    shutil.rmtree(staging, ignore_errors=True)


def _clear_stale(target: Path) -> None:
    """Remove the staging folders of killed writers of ``target`` (their lock is no longer held);
    an old LMDB a killed two-rename swap left aside is put back first."""
    for folder in sorted(target.parent.glob(f".{target.name}.*-*")):
        if not folder.is_dir() or not is_abandoned(folder.parent, _lock_name(folder)):
            continue
        if folder.name.startswith(f".{target.name}.old-") and not target.exists():
            os.replace(folder, target)
            continue
        shutil.rmtree(folder, ignore_errors=True)
        (folder.parent / _lock_name(folder)).unlink(missing_ok=True)
    for lock in target.parent.glob(f".{target.name}.tmp-*.lock"):  # a writer killed after its folder went
        if not lock.with_suffix("").exists() and is_abandoned(lock.parent, lock.name):
            lock.unlink(missing_ok=True)


def _lock_name(staging: Path) -> str:
    """The lock file beside a staging folder (outside it, so it never lands in the LMDB)."""
    return staging.name.replace(".old-", ".tmp-", 1) + ".lock"


@dataclass(frozen=True)
class _Lines:
    """Label lines already in data.label form (used by refresh to carry labels over unchanged)."""

    kind: str
    lines: list[str]


class LmdbWriter:
    """Write batches of arrays to an LMDB (one record per ``put``), with labels and original images.

    ``LmdbWriter("calib_lmdb")`` then ``put(batch)`` for every batch the training code feeds the
    network, then ``close()`` (or use it as a context manager). The LMDB appears at ``path`` only
    when ``close()`` succeeds; ``overwrite=True`` replaces an existing one at that moment.
    """

    def __init__(self, path: str | os.PathLike, *, overwrite: bool = False, map_size: int = _INITIAL_MAP):
        self.path = Path(path)
        if self.path.exists() and not overwrite:
            raise DataError(f"'{self.path}' already exists; choose a new LMDB folder, or replace it with overwrite=True (--overwrite on the command line).")
        if self.path.exists() and not _is_lmdb_folder(self.path):
            raise DataError(
                f"'{self.path}' exists and is not an LMDB folder (no data.mdb in it); "
                "overwrite replaces an LMDB only, choose a new folder."
            )
        self._lock: int | None = None
        self._staging: Path | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            _clear_stale(self.path)
            self._staging = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.tmp-", dir=self.path.parent))
            self._lock = try_lock(self.path.parent / _lock_name(self._staging))  # marks the staging folder live
            os.chmod(self._staging, 0o777 & ~UMASK)  # mkdtemp makes it private; an LMDB gets the user's umask
            self._env = lmdb.open(str(self._staging), map_size=map_size, subdir=True, sync=False, metasync=False)
        except (OSError, lmdb.Error) as exc:
            if self._staging is not None:
                shutil.rmtree(self._staging, ignore_errors=True)
            self._release()
            raise self._unwritable(exc) from None
        self._records = 0
        self._label_kind: str | None = None
        self._label_lines: list[str] = []
        self._closed = False

    @property
    def records(self) -> int:
        """Number of records written so far."""
        return self._records

    def put(self, batch: np.ndarray | Mapping[str, np.ndarray], labels: Any = None, originals: Any = None) -> None:
        """Store one batch (first axis = samples) as one record.

        ``batch``: an ndarray (single-input models) or ``{input_name: ndarray}``; any dtype and shape.
        ``labels``: one class id per sample, or one list of ``(cls, x1, y1, x2, y2)`` boxes per sample,
        or the manual's JSON string of either; give labels for every put or for none.
        ``originals``: the same samples as un-normalised uint8 HxWxC RGB images, saved as JPEG in
        ``original_images/`` so bad ones can be deleted before ``int8kit lmdb refresh``.
        """
        if not isinstance(batch, (np.ndarray, Mapping)):
            raise DataError(f"put() received a {type(batch).__name__}; expected an ndarray or a dict of input name to ndarray.")
        arrays = {UNNAMED: batch} if isinstance(batch, np.ndarray) else dict(batch)
        first = next(iter(arrays.values()), None)
        n = int(np.shape(first)[0]) if first is not None and np.ndim(first) else 0
        images = _as_images(originals, n) if originals is not None else None
        self._write(arrays, labels, originals=len(images) if images else 0, save=lambda folder, key: self._save_jpegs(images, folder, key))

    def _write(self, arrays: Mapping[str, np.ndarray], labels: Any, *, originals: int, save: Callable[[Path, bytes], None] | None) -> None:
        if self._closed:
            raise DataError(f"LmdbWriter for '{self.path}' is closed; open a new writer to add records.")
        value = encode_record({k: np.asarray(v) for k, v in arrays.items()}, originals)
        n = next(iter(arrays.values())).shape[0]
        if (labels is None) != (self._label_kind is None) and self._records:
            raise DataError(
                f"record {self._records} {'has' if labels is not None else 'has no'} labels but earlier records "
                f"{'do not' if labels is not None else 'do'}; give labels for every put() or for none."
            )
        if labels is not None:
            kind, lines = (labels.kind, labels.lines) if isinstance(labels, _Lines) else label_lines(labels, n)
            if self._label_kind not in (None, kind):
                raise DataError(f"record {self._records} has {kind} labels but earlier records have {self._label_kind} labels; use one kind.")
            self._label_kind = kind
        key = record_key(self._records)
        try:
            self._put(key, value)
            if originals and save is not None:
                save(self._staging / ORIGINALS_DIR, key)
        except (OSError, lmdb.Error) as exc:  # a full disk, a folder made read-only midway
            self.abort()
            raise self._unwritable(exc) from None
        if labels is not None:
            self._label_lines.extend(lines)
        self._records += 1

    def _put(self, key: bytes, value: bytes) -> None:
        while True:
            try:
                with self._env.begin(write=True) as txn:
                    txn.put(key, value, overwrite=False)
                return
            except lmdb.MapFullError:
                # LMDB's map is a fixed window: grow it and retry the aborted transaction.
                size = self._env.info()["map_size"]
                self._env.set_mapsize(max(2 * size, size + 4 * len(value)))

    def _unwritable(self, exc: OSError | lmdb.Error) -> OutputError:
        reason = os_reason(exc) if isinstance(exc, OSError) else f"{exc}; the disk may be full or the folder not writable"
        kept = "it was left as it was" if self.path.exists() else "nothing was left behind"
        return OutputError(f"cannot write the LMDB '{self.path}' ({reason}); {kept}.")

    def _release(self) -> None:
        if self._lock is not None:
            (self.path.parent / _lock_name(self._staging)).unlink(missing_ok=True)
            unlock(self._lock)
            self._lock = None

    @staticmethod
    def _save_jpegs(images: list[np.ndarray] | None, folder: Path, key: bytes) -> None:
        from PIL import Image

        if not images:
            return
        folder.mkdir(exist_ok=True)
        for i, img in enumerate(images):
            Image.fromarray(img).save(folder / original_name(key, i), quality=95)

    def close(self) -> Path:
        """Finish the LMDB and move it to ``path``; returns the path."""
        if self._closed:
            return self.path
        self._closed = True
        try:
            if not self._records:
                raise DataError(f"no records were put into '{self.path}'; expected at least one put() before close().")
            self._env.sync(True)
            self._env.close()
            if self._label_kind is not None:
                write_text_atomic(self._staging / LABEL_FILE, "".join(line + "\n" for line in self._label_lines))
            _swap_in(self._staging, self.path)
        except (OSError, lmdb.Error) as exc:
            self.abort()
            raise self._unwritable(exc) from None
        except BaseException:
            self.abort()
            raise
        self._release()
        return self.path

    def abort(self) -> None:
        """Discard everything written; ``path`` is left as it was."""
        self._closed = True
        try:
            self._env.close()
        finally:
            shutil.rmtree(self._staging, ignore_errors=True)
            self._release()

    def __enter__(self) -> "LmdbWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


@dataclass(frozen=True)
class RefreshResult:
    """What ``refresh_lmdb`` did: samples kept/dropped and records left."""

    kept: int
    dropped: int
    records: int
    dropped_names: tuple[str, ...]


def refresh_lmdb(path: str | os.PathLike) -> RefreshResult:
    """Drop the samples whose original image was deleted from ``original_images/`` (the manual's ``refresh_lmdb``).

    A batch record loses just the deleted samples (a record left empty disappears); records are
    renumbered, the remaining JPEGs renamed to match, and ``data.label`` rewritten in step. The
    new LMDB is built beside the old one and swapped in only when complete.
    """
    from int8kit.data.lmdb_source import close_env, open_env

    db = Path(path)
    env = open_env(db)
    originals = db / ORIGINALS_DIR
    try:
        with env.begin(buffers=True) as txn:
            values = [(bytes(k), bytes(v)) for k, v in txn.cursor()]
    finally:
        close_env(env)
    if not values:
        raise DataError(f"LMDB '{db}' holds no records; nothing to refresh.")
    if not is_record(values[0][1]):
        raise DataError(f"LMDB '{db}' is not an int8kit LMDB (Caffe Datum records have no original images); nothing to refresh.")
    if not originals.is_dir():
        raise DataError(f"LMDB '{db}' has no '{ORIGINALS_DIR}' folder; refresh needs originals saved with put(originals=...).")
    decoded = [(key, *decode_record(val, where=f"record {key.decode()} of LMDB '{db}'")) for key, val in values]
    sizes = [head.n for _, head, _ in decoded]
    parsed = read_label_file(db, sizes)
    labels = parsed[1] if parsed else None
    kept = dropped = pos = 0
    dropped_names: list[str] = []
    writer = LmdbWriter(db, overwrite=True)
    try:
        for key, head, arrays in decoded:
            keep = list(range(head.n))
            if head.originals:
                keep = [i for i in keep if (originals / original_name(key, i)).is_file()]
                dropped_names += [original_name(key, i) for i in range(head.n) if i not in keep]
            dropped += head.n - len(keep)
            if keep:
                rec_labels = None
                if parsed:
                    text = format_labels(parsed[0], [labels[pos + i] for i in keep], [len(keep)])
                    rec_labels = _Lines(parsed[0], text[:-1].split("\n"))

                def copy(folder: Path, new_key: bytes, key=key, keep=keep) -> None:
                    folder.mkdir(exist_ok=True)
                    for j, i in enumerate(keep):
                        shutil.copy2(originals / original_name(key, i), folder / original_name(new_key, j))

                writer._write({k: v[keep] for k, v in arrays.items()}, rec_labels,
                              originals=len(keep) if head.originals else 0, save=copy)
                kept += len(keep)
            pos += head.n
        if not kept:
            raise DataError(f"every original image of LMDB '{db}' was deleted; refusing to write an empty LMDB (it was left as is).")
        records = writer.records
        writer.close()
    except BaseException:
        writer.abort()
        raise
    return RefreshResult(kept, dropped, records, tuple(dropped_names))

