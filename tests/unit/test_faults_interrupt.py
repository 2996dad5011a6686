"""A Ctrl-C while onnxruntime imports is a Ctrl-C (one "interrupted" line), not an ImportError
traceback: onnxruntime's compiled module reports any exception in its initialisation, a
KeyboardInterrupt included, as ``ImportError: initialization failed``."""

from __future__ import annotations

import subprocess
import sys

import pytest

import int8kit  # noqa: F401  (installs the import guard)
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
