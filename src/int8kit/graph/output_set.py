"""A set of output files replaced as one unit: every interruption (an error, Ctrl-C, SIGKILL at any
instruction) leaves either the previous complete set or the new complete set, never a mix.

POSIX cannot rename five files at once, so the files the user sees are fixed relative symbolic
links through one pointer that *can* be replaced in one rename::

    OUT/net_int8.onnx  ->  .net.int8kit/current/net_int8.onnx      (never changes)
    OUT/.net.int8kit/current  ->  run-<pid>-<n>                     (the one rename that commits)
    OUT/.net.int8kit/run-<pid>-<n>/net_int8.onnx, net_quant.json, ...
    OUT/.net.int8kit/lock                                           (held while a run writes)

A run writes its files into its own ``run-*`` folder (invisible until committed), then replaces
``current``; the previous run folder is removed afterwards. A second run into the same set while
one holds the lock is refused; ``run-*`` folders of killed runs are removed by the next run.
Where symbolic links are unavailable the files are renamed one by one (the old behaviour).
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import time
from collections.abc import Iterable
from pathlib import Path

from int8kit.errors import OutputError
from int8kit.graph.fsops import clear_stale_temps, lock_owner, note_owner, os_reason, try_lock, unlock

log = logging.getLogger(__name__)

CURRENT = "current"
LOCK = "lock"


def store_name(files: Iterable[Path]) -> str:
    """The hidden folder of a set: ``.<common prefix of the names>.int8kit`` (``.net.int8kit``)."""
    names = [p.name for p in files]
    prefix = os.path.commonprefix(names).rstrip("_.-") or "outputs"
    return f".{prefix}.int8kit"


class OutputSet:
    """Stage, then commit or discard, the files ``files`` (all in one folder)."""

    def __init__(self, files: Iterable[str | os.PathLike]):
        self.files = [Path(f) for f in files]
        folders = {p.parent for p in self.files}
        if len(folders) != 1:
            raise ValueError(f"an output set lives in one folder, got {sorted(map(str, folders))}")
        self.folder = folders.pop()
        self.names = {p.name for p in self.files}
        self.store = self.folder / store_name(self.files)
        self.run: Path | None = None
        self._lock: int | None = None
        # folders this run made, removed again (when empty) if it ends without a set
        self._made = [p for p in (self.folder, *self.folder.parents) if not p.exists()]

    # -- begin -------------------------------------------------------------------------------
    def begin(self) -> None:
        """Take the lock, clear what killed runs left, and make this run's private folder."""
        try:
            for _ in range(3):  # the store may vanish between open and lock (a failed first run removes it)
                self.store.mkdir(parents=True, exist_ok=True)
                self._lock = try_lock(self.store / LOCK)
                if self._lock is None or _same_file(self._lock, self.store / LOCK):
                    break
                unlock(self._lock)
                self._lock = None
        except OSError as exc:
            raise OutputError(f"cannot write into '{self.folder}' ({os_reason(exc)}).") from None
        if self._lock is None:
            raise OutputError(
                f"output folder '{self.folder}' is being written by another int8kit run (process "
                f"{lock_owner(self.store / LOCK)}) for the same model; wait for it to finish or choose another output folder."
            )
        try:
            note_owner(self._lock)
            self._clear_stale()
            self.run = self.store / f"run-{os.getpid()}-{time.time_ns()}"
            self.run.mkdir()
        except OSError as exc:
            self.discard()
            raise OutputError(f"cannot write into '{self.folder}' ({os_reason(exc)}).") from None

    def _clear_stale(self) -> None:
        keep = {LOCK, CURRENT, self._current_target()}
        for entry in self.store.iterdir():
            if entry.name not in keep:  # a killed run's folder or pointer; we hold the lock, so none is live
                _remove(entry)
        for path in self.files:  # temp files of killed runs of int8kit versions that renamed file by file
            clear_stale_temps(path)

    def _current_target(self) -> str | None:
        try:
            return os.readlink(self.store / CURRENT)
        except OSError:
            return None

    def staged_path(self, path: Path) -> Path | None:
        """Where to write ``path`` now: inside this run's folder, or None when it is not in the set."""
        if self.run is None or path.parent != self.folder or path.name not in self.names:
            return None
        return self.run / path.name

    # -- end ---------------------------------------------------------------------------------
    def commit(self) -> None:
        """Make the staged files the set, in one rename; the previous run folder is removed."""
        assert self.run is not None
        try:
            if not _symlinks_work(self.store):
                self._rename_one_by_one()
                return
            written = sorted(p.name for p in self.run.iterdir())  # the set plus side files (external data)
            self._adopt_plain_files(written)
            for name in written:  # fixed links; they resolve once ``current`` names this run
                self._link(name)
            old = self._current_target()
            self._point_current(self.run.name)  # the commit
            self.run = None
            if old and old != CURRENT:
                shutil.rmtree(self.store / old, ignore_errors=True)
            self._drop_dangling_links()
        except OSError as exc:
            raise OutputError(f"cannot write the outputs into '{self.folder}' ({os_reason(exc)}); the previous outputs were kept.") from None
        finally:
            self.discard()

    def discard(self) -> None:
        """Drop the staged files (if not committed) and release the lock."""
        if self.run is not None:
            shutil.rmtree(self.run, ignore_errors=True)
            self.run = None
        if self._lock is not None and self._current_target() is None:  # no set yet: leave no trace
            shutil.rmtree(self.store, ignore_errors=True)
            for folder in self._made:
                try:
                    folder.rmdir()
                except OSError:  # not empty: something else lives there now
                    break
        unlock(self._lock)
        self._lock = None

    def _link_target(self, name: str) -> str:
        return f"{self.store.name}/{CURRENT}/{name}"

    def _link(self, name: str) -> None:
        flat = self.folder / name
        target = self._link_target(name)
        if flat.is_symlink() and os.readlink(flat) == target:
            return
        tmp = self.store / f".link-{os.getpid()}-{name}"
        tmp.unlink(missing_ok=True)
        os.symlink(target, tmp)
        os.replace(tmp, flat)

    def _drop_dangling_links(self) -> None:
        """Links to side files the new set does not have (an old run's external data)."""
        prefix = f"{self.store.name}/{CURRENT}/"
        for entry in self.folder.iterdir():
            if entry.is_symlink() and os.readlink(entry).startswith(prefix) and not entry.exists():
                entry.unlink(missing_ok=True)

    def _point_current(self, run_name: str) -> None:
        tmp = self.store / f".current-{os.getpid()}"
        tmp.unlink(missing_ok=True)
        os.symlink(run_name, tmp)
        os.replace(tmp, self.store / CURRENT)

    def _adopt_plain_files(self, names: list[str]) -> None:
        """Outputs of an int8kit that wrote plain files: before any of them becomes a link, make
        ``current`` a folder holding them (hard links), so each name keeps its old content until
        the commit."""
        plain = [n for n in names if (self.folder / n).is_file() and not (self.folder / n).is_symlink()]
        if not plain:
            return
        legacy = self.store / f"run-{os.getpid()}-{time.time_ns()}-kept"
        legacy.mkdir()
        old = self._current_target()
        for name in names:
            src = self.folder / name if name in plain else (self.store / old / name if old else None)
            if src is not None and src.exists():
                _link_or_copy(src, legacy / name)
        self._point_current(legacy.name)
        if old:
            shutil.rmtree(self.store / old, ignore_errors=True)

    def _rename_one_by_one(self) -> None:
        for entry in sorted(self.run.iterdir()):
            os.replace(entry, self.folder / entry.name)


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.fstat(fd).st_ino == os.stat(path).st_ino
    except OSError:
        return False


def _remove(entry: Path) -> None:
    if entry.is_dir() and not entry.is_symlink():
        shutil.rmtree(entry, ignore_errors=True)
    else:
        entry.unlink(missing_ok=True)


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:  # a file system without hard links
        shutil.copy2(src, dst)


def _symlinks_work(folder: Path) -> bool:
    probe = folder / f".probe-{os.getpid()}"
    try:
        probe.unlink(missing_ok=True)
        os.symlink("x", probe)
    except (OSError, NotImplementedError) as exc:
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EROFS):
            raise
        log.warning("'%s' does not support symbolic links; the outputs are renamed one by one", folder)
        return False
    probe.unlink()
    return True
