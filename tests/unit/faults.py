"""Fault injection for the tests: kill a writer at an exact file-system step, run a call as a user
without root's rights."""

from __future__ import annotations

import os
import shutil
import signal
import stat
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest


def fault_at(step: int, names: Iterable[str], how: str = "kill") -> None:
    """In a forked child: the ``step``-th call to any of ``os.<names>`` kills the process
    (``how="kill"``: SIGKILL, nothing runs after it) or raises KeyboardInterrupt (a Ctrl-C)."""
    count = [0]

    def wrap(fn):
        def inner(*args, **kwargs):
            count[0] += 1
            if count[0] == step:
                if how == "kill":
                    os.kill(os.getpid(), signal.SIGKILL)
                raise KeyboardInterrupt
            return fn(*args, **kwargs)
        return inner

    for name in names:
        setattr(os, name, wrap(getattr(os, name)))


def readable_tmp() -> Path:
    """A fresh folder that every user can enter and read (pytest's ``tmp_path`` lies below a folder
    only its owner can enter, so an unprivileged user could not even reach the inputs there)."""
    path = Path(tempfile.mkdtemp(prefix="int8kit-test-"))
    path.chmod(0o755)
    return path


def remove_tree(path: Path) -> None:
    """``shutil.rmtree`` that first gives the owner back the write bit read-only test folders took."""
    for folder in [path, *(p for p in path.rglob("*") if p.is_dir() and not p.is_symlink())]:
        folder.chmod(folder.stat().st_mode | stat.S_IRWXU)
    shutil.rmtree(path)


_CANNOT_SWITCH = 77  # the child's exit code when it may not change its user


def as_unprivileged(fn: Callable[[], int]) -> tuple[int, str]:
    """Run ``fn`` (returning an exit code, like ``int8kit.cli.main``) in a forked child as a user
    without root's rights, and return ``(exit code, stderr)``; a traceback in the child gives 99.

    As root (here and in CI) the child drops to ``nobody`` (setgroups/setgid/setuid), so the file
    system really refuses it (PermissionError); as any other user it runs as that user. The child
    is forked, not a new interpreter, because the interpreter may sit below a folder only root can
    read (``/root/.pyenv``); for the same reason it cannot import modules the parent has not
    imported: call ``fn`` (or its equivalent on writable paths) once in the parent first. Skips the
    test when the process is root but may not change its user (a container without CAP_SETUID).
    """
    uid = os.geteuid()
    target = _nobody() if uid == 0 else None
    with tempfile.TemporaryFile(mode="w+") as err:
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the child: never returns into the test runner
            code = 99
            try:
                os.dup2(err.fileno(), 2)
                sys.stderr = err
                if target is not None:
                    try:
                        os.setgroups([])
                        os.setgid(target[1])
                        os.setuid(target[0])
                    except PermissionError:
                        os._exit(_CANNOT_SWITCH)
                code = fn()
            except BaseException:  # noqa: BLE001 - the parent reports it
                traceback.print_exc()
            finally:
                sys.stderr.flush()
                os._exit(code)
        code = _wait(pid, timeout=120)
        err.seek(0)
        text = err.read()
    if code == _CANNOT_SWITCH:
        pytest.skip("this test needs a non-root user: the process is root and may not switch to an unprivileged one")
    return code, text


def _wait(pid: int, timeout: float) -> int:
    """Exit code of child ``pid``; a child still running after ``timeout`` seconds is killed (-9)."""
    end = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() > end:
            os.kill(pid, signal.SIGKILL)
        time.sleep(0.01)


def _nobody() -> tuple[int, int]:
    """uid and gid of ``nobody`` (65534 where it has no entry)."""
    import pwd  # POSIX only, as is everything here

    try:
        entry = pwd.getpwnam("nobody")
    except KeyError:
        return 65534, 65534
    return entry.pw_uid, entry.pw_gid
