"""AMCT-style logging: the screen at ``INT8KIT_LOG_LEVEL``, the file ``int8kit_log/int8kit_amct.log``
(in the working directory, as AMCT writes ``amct_log/``) at ``INT8KIT_LOG_FILE_LEVEL``; both
DEBUG, INFO (default), WARNING or ERROR, in any case. Set up on the first facade call only."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from int8kit.errors import ConfigError

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
LOG_DIR = "int8kit_log"
LOG_FILE = "int8kit_amct.log"
log = logging.getLogger("int8kit.amct")
_FORMAT = "%(asctime)s [%(levelname)s] %(name)s: %(message)s"


class _Screen(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time (a redirected or captured stream too)."""

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def _level(var: str) -> int:
    raw = os.environ.get(var, "INFO")
    name = raw.strip().upper()
    if name not in LEVELS:
        raise ConfigError(f"{var} must be one of {', '.join(LEVELS)} (any case), got {raw!r}; unset it for INFO.")
    return getattr(logging, name)


def setup_logging() -> logging.Logger:
    """Attach the screen and file handlers to the ``int8kit`` logger once (levels read each call)."""
    root = logging.getLogger("int8kit")
    screen, file_level = _level("INT8KIT_LOG_LEVEL"), _level("INT8KIT_LOG_FILE_LEVEL")
    path = (Path.cwd() / LOG_DIR / LOG_FILE).resolve()
    handlers = {getattr(h, "_amct", None): h for h in root.handlers}
    if "screen" not in handlers:
        h = _Screen()
        h.setFormatter(logging.Formatter("[%(levelname)s] %(message)s"))
        h._amct = "screen"  # type: ignore[attr-defined]
        root.addHandler(h)
        handlers["screen"] = h
    current = handlers.get("file")
    if current is None or Path(current.baseFilename) != path:  # type: ignore[attr-defined]
        if current is not None:
            root.removeHandler(current)
            current.close()
        path.parent.mkdir(parents=True, exist_ok=True)
        h = logging.FileHandler(path, encoding="utf-8")
        h.setFormatter(logging.Formatter(_FORMAT))
        h._amct = "file"  # type: ignore[attr-defined]
        root.addHandler(h)
        handlers["file"] = h
    handlers["screen"].setLevel(screen)
    handlers["file"].setLevel(file_level)
    root.setLevel(min(screen, file_level, root.level or logging.WARNING))
    return log
