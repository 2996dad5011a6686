"""Loading and saving ONNX models with clear errors and atomic writes."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import onnx

from int8kit.errors import ModelError, OutputError

# Models above this size keep their weights in a side file (protobuf's 2 GB limit).
_EXTERNAL_DATA_BYTES = 1_800_000_000


def load_model(path: str | os.PathLike) -> onnx.ModelProto:
    """Read an ONNX model, raising ``ModelError`` with a one-sentence reason when it cannot."""
    if not str(path):
        raise ModelError("the model path is empty; expected an .onnx file.")
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


# Inside ``outputs_together``: the (temp file, final path) pairs waiting for the block to succeed.
_STAGED: ContextVar[list[tuple[Path, Path]] | None] = ContextVar("int8kit_staged_outputs", default=None)


def _write_atomically(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Call ``write(temp_path)`` on a temp file beside ``path``, then rename it into place.

    A failure leaves an existing ``path`` untouched. The file gets the permissions a plain
    ``open()`` would give it (``mkstemp`` makes temp files private to their owner). Inside
    ``outputs_together`` the rename waits for the end of the block.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_dir():
            raise IsADirectoryError(21, "it is a folder")
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise _unwritable(path, exc) from None
    os.close(fd)
    tmp = Path(name)
    try:
        write(name)
        os.chmod(tmp, 0o666 & ~_UMASK)
        staged = _STAGED.get()
        if staged is None:
            os.replace(tmp, path)
        else:
            staged.append((tmp, path))
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise _unwritable(path, exc) from None
        raise
    return path


def _unwritable(path: Path, exc: OSError) -> OutputError:
    reason = exc.strerror or str(exc)
    return OutputError(f"cannot write '{path}' ({reason}); expected a writable file path, choose another output path.")


@contextmanager
def outputs_together() -> Iterator[None]:
    """Files written inside the block appear together when it ends, or none of them when it fails
    (an error or Ctrl-C midway leaves no partial set of outputs). Nested blocks join the outer one."""
    if _STAGED.get() is not None:
        yield
        return
    staged: list[tuple[Path, Path]] = []
    token = _STAGED.set(staged)
    try:
        yield
    except BaseException:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)
        raise
    finally:
        _STAGED.reset(token)
    for i, (tmp, path) in enumerate(staged):
        try:
            os.replace(tmp, path)
        except OSError as exc:
            for left, _ in staged[i:]:
                left.unlink(missing_ok=True)
            raise _unwritable(path, exc) from None


def check_outputs(outputs: Mapping[str, Any], inputs: Mapping[str, Any]) -> None:
    """Before any work: refuse an output path that names one of the inputs (int8kit never
    overwrites its inputs) or that cannot be created (a file in the way, a read-only folder).

    Both map a label for messages ("--dump-stats", "the data file") to a path; entries that are
    not paths (arrays, loaded models, ``None``) are skipped.
    """
    taken = {Path(p).resolve(): what for what, p in inputs.items() if isinstance(p, (str, os.PathLike)) and str(p)}
    written: dict[Path, str] = {}
    for what, p in outputs.items():
        if not isinstance(p, (str, os.PathLike)):
            continue
        path = Path(p)
        if not str(p):
            raise OutputError(f"{what} is an empty path; expected a file path.")
        if path.resolve() in taken:
            raise OutputError(f"{what} '{path}' is {taken[path.resolve()]}; int8kit never overwrites its inputs, choose another path.")
        if path.resolve() in written:
            raise OutputError(f"{what} '{path}' is also {written[path.resolve()]}; one would overwrite the other, choose another path.")
        written[path.resolve()] = what
        _check_creatable(what, path)


def _check_creatable(what: str, path: Path) -> None:
    if path.is_dir():
        raise OutputError(f"{what} '{path}' is a folder; expected a file path.")
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise OutputError(f"{what} '{path}' lies under '{parent}', which is a file, not a folder; choose another path.")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"{what} '{path}' cannot be written: folder '{parent}' is not writable; choose another path.")


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
