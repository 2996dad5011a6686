"""A Ctrl-C is one "interrupted" line and exit code 130, never a traceback: from the first moment
the ``int8kit`` command runs code of its own (``int8kit.__main__``), while onnxruntime imports
(its compiled module reports any exception in its initialisation, a KeyboardInterrupt included,
as ``ImportError: initialization failed``), and after the work, during the interpreter's teardown."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import int8kit  # noqa: F401  (installs the import guard)
from int8kit.__main__ import INTERRUPTED
from int8kit.runtime import import_guard as _interrupt


@pytest.fixture()
def fake_package(tmp_path, monkeypatch):
    """A package that fails to import the way onnxruntime does after a Ctrl-C, and one that fails for real."""
    (tmp_path / "fake_ort_interrupted.py").write_text(
        "try:\n    raise KeyboardInterrupt\nexcept KeyboardInterrupt as e:\n"
        "    err = ImportError('initialization failed')\n    err.__cause__ = e\nraise err\n")
    (tmp_path / "fake_ort_broken.py").write_text("raise ImportError('libonnxruntime.so: cannot open shared object file')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(_interrupt, "GUARDED", {"fake_ort_interrupted", "fake_ort_broken"})
    yield
    for name in ("fake_ort_interrupted", "fake_ort_broken"):
        sys.modules.pop(name, None)


def test_an_import_interrupted_by_ctrl_c_is_a_keyboard_interrupt(fake_package):
    with pytest.raises(KeyboardInterrupt):
        import fake_ort_interrupted  # noqa: F401
    with pytest.raises(ImportError, match="cannot open shared object"):  # a real failure stays itself
        import fake_ort_broken  # noqa: F401


def test_onnxruntime_still_imports_through_the_guard():
    code = "import int8kit, onnxruntime; print(onnxruntime.InferenceSession.__name__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "InferenceSession", out.stderr


# --- Ctrl-C at any moment of the command's start-up -------------------------------------------------

_STARTUP_MODULES = {"__future__", "int8kit", "int8kit.__main__", "int8kit.runtime", "int8kit.runtime.import_guard"}


def _command() -> list[list[str]]:
    """The real console script (when this Python has it) and ``python -m int8kit``."""
    script = Path(sys.executable).parent / "int8kit"
    return ([[str(script)]] if script.is_file() else []) + [[sys.executable, "-m", "int8kit"]]


def test_the_command_imports_almost_nothing_before_it_can_catch_ctrl_c():
    # Until int8kit.__main__.main runs, a Ctrl-C is Python's KeyboardInterrupt traceback: what the
    # console script imports before it (the package and the entry module) must stay this small.
    code = ("import sys; before = set(sys.modules); import int8kit.__main__; "
            "print(*sorted(set(sys.modules) - before))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert set(out.stdout.split()) <= _STARTUP_MODULES, out.stdout


def _before_main(err: str, script: str) -> bool:
    """A traceback from before ``int8kit.__main__.main`` could catch anything: Python's own start-up
    (site, with whatever the installed packages' .pth files import) or the console script's import of
    the package and the entry module, nothing further."""
    frames = re.findall(r'File "([^"]+)", line -?\d+, in (\S+)', err)
    if any(path in ("<frozen site>", "site.py") or path.endswith("/site.py") for path, _ in frames):
        return True  # site runs, and fails with "init_import_site", before any script
    startup_files = ("int8kit/__init__.py", "int8kit/__main__.py", "int8kit/runtime/__init__.py",
                     "int8kit/runtime/import_guard.py")
    return bool(frames) and all(
        path.startswith("<frozen ") or path.endswith("/__future__.py")  # the stdlib module, class bodies too
        or (func == "<module>" and (path == script or path.endswith(startup_files)))
        for path, func in frames)


def test_ctrl_c_at_any_moment_of_the_start_up_is_one_line(tmp_path):
    """SIGINT at 30 moments spread over the first 0.3 s of `int8kit --help` (which imports every verb's
    modules: argparse, numpy, onnx, the configuration), or over 90% of its run where it is quicker:
    each try ends with the one "interrupted" line and exit code 130, finishes (exit 0), or is killed
    silently before Python has its handler."""
    commands = _command()
    start = time.perf_counter()
    subprocess.run([*commands[0], "--help"], stdout=subprocess.DEVNULL, check=True, cwd=tmp_path, timeout=120)
    window = min(0.3, 0.9 * (time.perf_counter() - start))
    outcomes: list[str] = []
    for i, delay in enumerate(np.linspace(0.0, window, 30)):
        cmd = commands[i % len(commands)]
        p = subprocess.Popen([*cmd, "--help"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
        time.sleep(delay)
        p.send_signal(signal.SIGINT)
        err = p.communicate(timeout=120)[1]
        where = f"try {i}, SIGINT after {delay * 1000:.0f} ms, exit code {p.returncode}:\n{err}"
        if "Traceback" in err or "Fatal Python error" in err:
            # Python's start-up and the console script's two small imports (the test above keeps
            # them small) come before any code of ours runs; a traceback from later is a failure.
            assert _before_main(err, cmd[0]), where
            assert p.returncode != 0, where
            outcomes.append("before main")
        elif p.returncode == 0:
            outcomes.append("finished")
        elif p.returncode == -signal.SIGINT:
            assert err == "", where  # killed before Python installed its handler
            outcomes.append("killed")
        else:
            assert (p.returncode, err) == (130, INTERRUPTED + "\n"), where
            outcomes.append("interrupted")
    # The time before main is a few ms of the window (more where site imports .pth files, and a run
    # can finish early on a machine that was slower at the first timing): half the tries at least
    # must have hit our own code.
    assert outcomes.count("interrupted") >= 15, outcomes


def test_a_ctrl_c_that_a_library_turned_into_another_error_is_still_a_ctrl_c():
    # numpy's import turns a KeyboardInterrupt in its C part into "ImportError: PyCapsule_Import
    # could not import module datetime", without the KeyboardInterrupt as cause or context.
    code = """if True:
        import os, signal, sys
        import int8kit.cli
        from int8kit.__main__ import main

        def swallowing_import():
            try:
                os.kill(os.getpid(), signal.SIGINT)
                for _ in range(10_000):
                    pass
            except KeyboardInterrupt:
                pass
            raise ImportError('PyCapsule_Import could not import module "datetime"')

        int8kit.cli.main = swallowing_import if sys.argv[1] == "ctrl-c" else lambda: int("not a number")
        sys.exit(main())
    """
    out = subprocess.run([sys.executable, "-c", code, "ctrl-c"], capture_output=True, text=True, timeout=60)
    assert (out.returncode, out.stderr) == (130, INTERRUPTED + "\n")
    bug = subprocess.run([sys.executable, "-c", code, "bug"], capture_output=True, text=True, timeout=60)
    assert bug.returncode == 1 and "Traceback" in bug.stderr and "ValueError" in bug.stderr  # a real error stays visible


def test_a_ctrl_c_after_the_work_ends_the_process_silently():
    # After main() returned, a KeyboardInterrupt would be raised in the interpreter's teardown
    # (a traceback, or "Exception ignored" from an atexit handler): the signal ends the process.
    code = """if True:
        import os, signal, sys, time
        import int8kit.cli
        from int8kit.__main__ import main

        int8kit.cli.main = lambda: 0
        code = main()
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(5)
        sys.exit(code)
    """
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert (out.returncode, out.stderr) == (-signal.SIGINT, "")


# --- Ctrl-C while a compiled module initialises ------------------------------------------------------

_AT_ONNX_INIT = """if True:
    import os, signal, sys
    import int8kit.cli
    from int8kit.__main__ import main

    def ctrl_c_at_onnx_init(frame, event, arg):
        # SIGINT just as onnx's compiled module returns from its initialisation, before the import
        # has stored it (a KeyboardInterrupt there drops the new module: onnx then segfaults)
        if event == "c_return" and getattr(arg, "__name__", "") == "create_dynamic":
            spec = frame.f_locals.get("args", (None,))[0]
            if getattr(spec, "name", "") == "onnx.onnx_cpp2py_export":
                sys.setprofile(None)
                for _ in range(int(sys.argv[1])):
                    os.kill(os.getpid(), signal.SIGINT)
                    len(str(frame))  # Python code: the handler runs here, inside the import

    assert "onnx" not in sys.modules
    int8kit.cli.main = lambda: len([__import__("onnx")]) - 1  # the verb's first step: import onnx
    sys.setprofile(ctrl_c_at_onnx_init)
    sys.exit(main())
"""


def test_a_ctrl_c_as_onnx_initialises_is_one_line_not_a_segfault():
    pytest.importorskip("onnx")
    out = subprocess.run([sys.executable, "-X", "faulthandler", "-c", _AT_ONNX_INIT, "1"],
                         capture_output=True, text=True, timeout=60)
    assert (out.returncode, out.stderr) == (130, INTERRUPTED + "\n")


def test_a_second_ctrl_c_while_a_compiled_module_initialises_ends_the_process_at_once():
    pytest.importorskip("onnx")
    out = subprocess.run([sys.executable, "-c", _AT_ONNX_INIT, "2"], capture_output=True, text=True, timeout=60)
    assert (out.returncode, out.stderr) == (-signal.SIGINT, "")


def test_a_ctrl_c_inside_a_weakref_callback_is_not_lost():
    # Python cannot propagate an exception out of a weakref callback (the import system runs one
    # for every module lock): it prints "Exception ignored in ..." and goes on, the Ctrl-C lost.
    code = """if True:
        import os, signal, sys, time, weakref
        import int8kit.cli
        from int8kit.__main__ import main

        class Thing:
            pass

        def run():
            thing = Thing()

            def callback(ref):
                os.kill(os.getpid(), signal.SIGINT)
                len("the handler runs here, inside the callback")

            ref = weakref.ref(thing, callback)
            del thing  # the callback runs now
            for _ in range(2000):  # the Ctrl-C must still end the command
                time.sleep(0.001)
            return 0

        int8kit.cli.main = run
        sys.exit(main())
    """
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert (out.returncode, out.stderr) == (130, INTERRUPTED + "\n")
