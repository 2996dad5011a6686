"""Loading and saving ONNX models with clear errors and atomic writes."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import onnx

from int8kit.errors import ModelError, OutputError, PathError, refuse_unreadable
from int8kit.graph.fsops import clear_stale_temps, os_reason, safe_resolve
from int8kit.graph.output_set import OutputSet

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
    refuse_unreadable(path, "model file", ModelError)
    try:
        model = onnx.load(str(path))
    except Exception as exc:  # protobuf raises several unrelated types
        raise ModelError(
            f"model file '{path}' is not a readable ONNX model ({type(exc).__name__}: {exc}); "
            "expected an ONNX protobuf file, re-export or re-download it."
        ) from None
    if not model.graph.node:
        raise ModelError(f"model file '{path}' holds no graph nodes; expected an ONNX model, got an empty or corrupt file.")
    if 0 < model.ir_version < 4:
        # IR 3 lists every initializer as a graph input too, and the opset converter then demands
        # it of the weights optimize adds; IR 4 only lifts that rule. The listed weights are dropped
        # from the inputs (else a weight replaced by its INT8 form would become a real input).
        model.ir_version = 4
        weights = {t.name for t in model.graph.initializer}
        kept = [vi for vi in model.graph.input if vi.name not in weights]
        del model.graph.input[:]
        model.graph.input.extend(kept)
    return model


def as_model(model: onnx.ModelProto | str | os.PathLike) -> onnx.ModelProto:
    """Accept a loaded model or a path."""
    if isinstance(model, onnx.ModelProto):
        return model
    return load_model(model)


class _Staging:
    """Inside ``outputs_together``: the output set being staged, and the (temp file, final path)
    pairs of other files that wait for the block to succeed."""

    def __init__(self, output_set: OutputSet | None):
        self.output_set = output_set
        self.deferred: list[tuple[Path, Path]] = []


_STAGED: ContextVar[_Staging | None] = ContextVar("int8kit_staged_outputs", default=None)


def _write_atomically(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Call ``write(temp_path)`` on a temp file beside ``path``, then rename it into place.

    A failure leaves an existing ``path`` untouched. The file gets the permissions a plain
    ``open()`` would give it (``mkstemp`` makes temp files private to their owner). Inside
    ``outputs_together`` the rename waits for the end of the block.
    """
    path = Path(path)
    staging = _STAGED.get()
    inside = staging.output_set.staged_path(path) if staging is not None and staging.output_set is not None else None
    if inside is not None:  # a member of the output set: its run folder is private until the commit
        try:
            write(str(inside))
            os.chmod(inside, 0o666 & ~_UMASK)
        except OSError as exc:
            inside.unlink(missing_ok=True)
            raise _unwritable(path, exc) from None
        return path
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_dir():
            raise IsADirectoryError(21, "it is a folder")
        clear_stale_temps(path)
        # the writer's process id in the name lets a later run tell a killed writer's file from a live one's
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}-", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise _unwritable(path, exc) from None
    os.close(fd)
    tmp = Path(name)
    try:
        write(name)
        os.chmod(tmp, 0o666 & ~_UMASK)
        if staging is None:
            os.replace(tmp, path)
        else:
            staging.deferred.append((tmp, path))
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise _unwritable(path, exc) from None
        raise
    return path


def _unwritable(path: Path, exc: OSError) -> OutputError:
    return OutputError(f"cannot write '{path}' ({os_reason(exc)}); expected a writable file path, choose another output path.")


@contextmanager
def outputs_together(files: Iterable[str | os.PathLike] = ()) -> Iterator[None]:
    """Files written inside the block appear together when it ends, or none of them when it fails.

    ``files`` (paths in one folder) form an output set replaced as one unit
    (``int8kit.graph.output_set``): the previous complete set stays until the new one is complete,
    whatever interrupts the run, SIGKILL included; a second run into the same set is refused while
    this one holds it. Other files written in the block are renamed into place after the set.
    Nested blocks join the outer one.
    """
    if _STAGED.get() is not None:
        yield
        return
    files = list(files)
    output_set = OutputSet(files) if files else None
    if output_set is not None:
        output_set.begin()
    staging = _Staging(output_set)
    token = _STAGED.set(staging)
    try:
        yield
    except BaseException:
        for tmp, _ in staging.deferred:
            tmp.unlink(missing_ok=True)
        if output_set is not None:
            output_set.discard()
        raise
    finally:
        _STAGED.reset(token)
    try:
        if output_set is not None:
            output_set.commit()
    except BaseException:
        for tmp, _ in staging.deferred:
            tmp.unlink(missing_ok=True)
        raise
    for i, (tmp, path) in enumerate(staging.deferred):
        try:
            os.replace(tmp, path)
        except OSError as exc:
            for left, _ in staging.deferred[i:]:
                left.unlink(missing_ok=True)
            raise _unwritable(path, exc) from None


def check_outputs(outputs: Mapping[str, Any], inputs: Mapping[str, Any]) -> None:
    """Before any work: refuse an output path that names one of the inputs (int8kit never
    overwrites its inputs) or that cannot be created (a file in the way, a read-only folder).

    Both map a label for messages ("--dump-stats", "the data file") to a path; entries that are
    not paths (arrays, loaded models, ``None``) are skipped.
    """
    taken = {resolve_path(what, p): what for what, p in inputs.items() if isinstance(p, (str, os.PathLike)) and str(p)}
    written: dict[Path, str] = {}
    for what, p in outputs.items():
        if not isinstance(p, (str, os.PathLike)):
            continue
        path = Path(p)
        if not str(p):
            raise OutputError(f"{what} is an empty path; expected a file path.")
        real = resolve_path(what, path)
        if real in taken:
            raise OutputError(f"{what} '{path}' is {taken[real]}; int8kit never overwrites its inputs, choose another path.")
        if real in written:
            raise OutputError(f"{what} '{path}' is also {written[real]}; one would overwrite the other, choose another path.")
        written[real] = what
        _check_creatable(what, path)


def resolve_path(what: str, path: str | os.PathLike) -> Path:
    """``Path(path).resolve()``; a symbolic-link loop is a ``PathError`` naming ``what``."""
    try:
        return safe_resolve(Path(path))
    except OSError as exc:
        raise PathError(f"{what} '{path}' cannot be followed ({os_reason(exc)}).") from None


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
UMASK = _UMASK  # the process's umask, for folders made private first (mkdtemp) then opened up


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
