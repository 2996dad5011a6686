"""The ``int8kit`` command's Ctrl-C: a KeyboardInterrupt as Python raises it, except inside the
initialisation of a compiled module, where it waits until the initialisation has returned.

A compiled (C/C++) module that calls Python code while it initialises does not survive a
KeyboardInterrupt raised there: onnx's ``onnx_cpp2py_export`` segfaults or aborts, onnxruntime's
reports ``ImportError: initialization failed`` and numpy's ``ImportError: PyCapsule_Import could
not import module "datetime"``. So while a compiled module of the main thread initialises, the
handler only notes the Ctrl-C, and the loader raises the KeyboardInterrupt once the module is
done. A second Ctrl-C in that time ends the process at once (SIGINT's default action).

A KeyboardInterrupt raised inside a callback that Python calls from C (a weakref callback such as
the import system's module-lock clean-up, a ``__del__``) cannot propagate: Python prints
"Exception ignored in ..." with its traceback and goes on, the Ctrl-C lost. The command's
``sys.unraisablehook`` swallows that report and sends the SIGINT again, to be raised in the code
that runs next.

This replaces the SIGINT handler and wraps the extension-module loader of the whole process: only
the command (``int8kit.__main__``) installs it, never ``import int8kit``.
"""

from __future__ import annotations

import _thread
import os
import signal
import sys
from collections.abc import Callable
from importlib.machinery import ExtensionFileLoader
from typing import Any


class _State:
    seen = False  # a Ctrl-C came (a library may have turned its KeyboardInterrupt into another error)
    pending = False  # it came while a compiled module initialised: raise once that returns
    depth = 0  # compiled modules initialising in the main thread (one may import another)
    main_thread = -1
    modules: list[Any] = []  # every compiled module created: dropping a new one can crash (onnx's does)
    unraisablehook: Callable[[Any], Any] = sys.unraisablehook


_state = _State()


def install() -> None:
    """Take SIGINT and wrap the loader of compiled modules; call it from the main thread."""
    _state.main_thread = _thread.get_ident()
    if not getattr(ExtensionFileLoader, "_int8kit_waits_for_init", False):
        ExtensionFileLoader.create_module = _waiting(ExtensionFileLoader.create_module)
        ExtensionFileLoader.exec_module = _waiting(ExtensionFileLoader.exec_module)
        ExtensionFileLoader._int8kit_waits_for_init = True
    if sys.unraisablehook is not _unraisable:
        _state.unraisablehook = sys.unraisablehook
        sys.unraisablehook = _unraisable
    signal.signal(signal.SIGINT, _on_sigint)


def seen() -> bool:
    """True once a Ctrl-C came, whatever exception it became."""
    return _state.seen


def release() -> None:
    """The work is over: a Ctrl-C from here on ends the process at once, not as a KeyboardInterrupt
    in the interpreter's teardown (which would print a traceback)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _on_sigint(signum: int, frame: object) -> None:
    _state.seen = True
    if _state.depth == 0:
        raise KeyboardInterrupt
    if _state.pending:  # a second Ctrl-C while the module still initialises: stop now
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    _state.pending = True


def _unraisable(report: Any) -> None:
    if not isinstance(report.exc_value, KeyboardInterrupt):
        _state.unraisablehook(report)
        return
    # Send it from another thread: it gets the GIL only once this callback has returned, so the
    # handler raises the KeyboardInterrupt in the code that runs next, not in this callback again.
    _thread.start_new_thread(os.kill, (os.getpid(), signal.SIGINT))


def _waiting(method: Callable[..., Any]) -> Callable[..., Any]:
    """``method`` of the extension loader, with a Ctrl-C held back until it has returned."""

    def run(self: ExtensionFileLoader, *args: Any) -> Any:
        if _thread.get_ident() != _state.main_thread:  # signal handlers run in the main thread only
            return method(self, *args)
        _state.depth += 1
        try:
            result = method(self, *args)
            _state.modules.append(result)
            return result
        finally:
            _state.depth -= 1
            if _state.depth == 0 and _state.pending:
                _state.pending = False
                raise KeyboardInterrupt  # noqa: B012 - the Ctrl-C the user gave outranks the import's result

    return run
