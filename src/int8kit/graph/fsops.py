"""File-system steps that must not half-happen: an atomic swap of two folders, a lock that dies
with its process, and the one-line reason for an ``OSError``.

Used by the output sets of ``quantize`` (``int8kit.graph.output_set``) and by the LMDB writer.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import glob
import os
from pathlib import Path

try:  # POSIX only; elsewhere runs are not locked (see ``try_lock``)
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2
_renameat2 = None


def _load_renameat2():
    global _renameat2
    if _renameat2 is None:
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
            _renameat2 = libc.renameat2
            _renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
        except (OSError, AttributeError):  # not Linux / glibc < 2.28
            _renameat2 = False
    return _renameat2


def rename_exchange(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Swap the entries at ``a`` and ``b`` in one step (Linux ``renameat2(RENAME_EXCHANGE)``).

    Returns False when the system or file system cannot do it (the caller falls back to two
    renames); raises ``OSError`` for any other failure. Either both names are swapped or neither.
    """
    fn = _load_renameat2()
    if not fn:
        return False
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(a))


def try_lock(path: Path) -> int | None:
    """Open and exclusively lock ``path`` (created if missing) without waiting.

    Returns the open descriptor (the lock lasts until it is closed or the process dies, SIGKILL
    included), or None when another process holds it. Without ``fcntl`` nothing is locked and a
    descriptor is returned all the same.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    if fcntl is None:  # pragma: no cover
        return fd
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            return None
        raise
    return fd


def note_owner(fd: int) -> None:
    """Write this process's id into a held lock file, for the message another run prints."""
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)


def lock_owner(path: Path) -> str:
    """The process id written into lock file ``path`` ('?' when unreadable)."""
    try:
        return path.read_text().strip() or "?"
    except OSError:
        return "?"


def unlock(fd: int | None) -> None:
    """Release a lock from ``try_lock``."""
    if fd is not None:
        os.close(fd)


def is_abandoned(folder: Path, lock_name: str = ".lock") -> bool:
    """True when ``folder`` is a staging folder whose writer is gone: its lock file is not held.

    A folder without a lock file is abandoned too (a run killed before it took the lock)."""
    lock = folder / lock_name
    if not lock.exists():
        return True
    try:
        fd = try_lock(lock)
    except OSError:
        return False
    if fd is None:
        return False
    unlock(fd)
    return True


def os_reason(exc: OSError) -> str:
    """A short human reason for ``exc``, naming the usual fixes for a full disk, a missing
    permission and a symlink loop."""
    code = exc.errno
    if code == errno.ENOSPC or code == errno.EDQUOT:
        return "the disk is full; free space or choose another location"
    if code in (errno.EACCES, errno.EPERM, errno.EROFS):
        return "permission denied; choose a folder you can write or fix its permissions"
    if code == errno.ELOOP:
        return "a symbolic link in it loops back on itself; fix or remove the link"
    return exc.strerror or str(exc)


def safe_resolve(path: Path) -> Path:
    """``path.resolve()``, but a symlink loop raises ``OSError(ELOOP)`` (Python < 3.13 raises
    ``RuntimeError``) so callers turn it into their one-line error."""
    try:
        return path.resolve()
    except RuntimeError:
        raise OSError(errno.ELOOP, "Symlink loop", str(path)) from None


def clear_stale_temps(path: Path) -> None:
    """Remove temp files of ``path`` (``.<name>.<pid>-<random>.tmp``) whose writing process is
    gone (killed before its rename); files of older int8kit versions carry no id and go too."""
    for tmp in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        pid = tmp.name[len(path.name) + 2 :].split("-", 1)[0]
        if pid.isdigit() and _alive(int(pid)):
            continue
        tmp.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True
