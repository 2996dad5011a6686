"""Loading and saving ONNX models with clear errors and atomic writes."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import onnx

from int8kit.errors import ModelError

# Models above this size keep their weights in a side file (protobuf's 2 GB limit).
_EXTERNAL_DATA_BYTES = 1_800_000_000


def load_model(path: str | os.PathLike) -> onnx.ModelProto:
    """Read an ONNX model, raising ``ModelError`` with a one-sentence reason when it cannot."""
    path = Path(path)
    if not path.exists():
        raise ModelError(f"model file '{path}' does not exist; check the path.")
    if path.is_dir():
        raise ModelError(f"model path '{path}' is a folder; expected an .onnx file.")
    try:
        model = onnx.load(str(path))
    except Exception as exc:  # protobuf raises several unrelated types
        raise ModelError(
            f"model file '{path}' is not a readable ONNX model ({type(exc).__name__}: {exc}); "
            "expected an ONNX protobuf file, re-export or re-download it."
        ) from None
    if not model.graph.node:
        raise ModelError(f"model file '{path}' holds no graph nodes; expected an ONNX model, got an empty or corrupt file.")
    return model


def as_model(model: onnx.ModelProto | str | os.PathLike) -> onnx.ModelProto:
    """Accept a loaded model or a path."""
    if isinstance(model, onnx.ModelProto):
        return model
    return load_model(model)


def _write_atomically(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Call ``write(temp_path)`` on a temp file beside ``path``, then rename it into place.

    A failure leaves an existing ``path`` untouched. The file gets the permissions a plain
    ``open()`` would give it (``mkstemp`` makes temp files private to their owner).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _read_umask() -> int:
    mask = os.umask(0)  # the only way to read it; done once, at import, before any thread starts
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def save_model(model: onnx.ModelProto, path: str | os.PathLike) -> Path:
    """Write ``model`` to ``path`` atomically: a temp file in the same folder, then a rename."""
    path = Path(path)
    large = model.ByteSize() > _EXTERNAL_DATA_BYTES

    def write(tmp: str) -> None:
        onnx.save(model, tmp, save_as_external_data=large, location=path.name + ".data" if large else None)

    return _write_atomically(path, write)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write a text file atomically (temp file + rename)."""
    return _write_atomically(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Write a binary file atomically (temp file + rename)."""
    return _write_atomically(path, lambda tmp: Path(tmp).write_bytes(data))
