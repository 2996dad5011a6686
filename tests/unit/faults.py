"""Fault injection for the tests that kill a writer at an exact file-system step."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterable


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
