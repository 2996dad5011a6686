"""Ctrl-C while onnxruntime imports stays a Ctrl-C.

onnxruntime's compiled module turns any Python exception raised during its initialisation,
KeyboardInterrupt included, into ``ImportError: initialization failed`` (pybind11 keeps the
original as the cause). A Ctrl-C in the first second of a run then printed that traceback instead
of the one "interrupted" line. This finder wraps the import of the named packages and re-raises
such an ImportError as the KeyboardInterrupt it was; every other ImportError passes unchanged.

``import int8kit`` installs it before the command can catch a Ctrl-C, so this module imports
nothing that is not loaded at start-up already (``importlib.util`` only when a guarded package
imports; a finder needs no ``importlib.abc`` base class).
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from types import ModuleType

GUARDED = {"onnxruntime"}


def caused_by_interrupt(exc: BaseException) -> bool:
    """True when a KeyboardInterrupt is among ``exc``'s causes or contexts."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        if isinstance(cur, KeyboardInterrupt):
            return True
        seen.add(id(cur))
        cur = cur.__cause__ or cur.__context__
    return False


class _InterruptedImportFinder:
    """Finds nothing itself: it asks the other finders and wraps the loader of a guarded package."""

    def __init__(self) -> None:
        self._busy = False

    def find_spec(self, fullname: str, path=None, target=None):  # noqa: ANN001 - importlib's signature
        if fullname not in GUARDED or self._busy:
            return None
        import importlib.util

        self._busy = True  # the lookup below walks sys.meta_path again, this finder included
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            self._busy = False
        loader = getattr(spec, "loader", None)
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        run = loader.exec_module

        def exec_module(module: ModuleType) -> None:
            try:
                run(module)
            except ImportError as exc:
                if caused_by_interrupt(exc):
                    raise KeyboardInterrupt from None
                raise

        loader.exec_module = exec_module  # this one loader object, for this one import
        return spec


def install() -> None:
    """Put the finder first on ``sys.meta_path`` (once)."""
    if not any(isinstance(f, _InterruptedImportFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _InterruptedImportFinder())
