"""Model input specs (name, dtype, shape) and the checks every array of data passes against them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx

from int8kit.data.filearray import FileArray
from int8kit.errors import DataError


@dataclass(frozen=True)
class InputSpec:
    """One model input: name, numpy dtype and shape (``None`` for a dynamic dim; shape ``None`` if unknown)."""

    name: str
    dtype: np.dtype
    shape: tuple[int | None, ...] | None

    @property
    def is_float(self) -> bool:
        return np.issubdtype(self.dtype, np.floating)

    @property
    def batch_dim(self) -> int | None:
        """Fixed size of the first (batch) dim, or ``None`` when dynamic or unknown."""
        return self.shape[0] if self.shape else None

    @property
    def sample_shape(self) -> tuple[int | None, ...] | None:
        return None if self.shape is None or not self.shape else self.shape[1:]


def model_input_specs(model: onnx.ModelProto) -> list[InputSpec]:
    """The model's real inputs (initializers listed as graph inputs are left out)."""
    inits = {t.name for t in model.graph.initializer}
    specs = []
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        tt = vi.type.tensor_type
        dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type)) if tt.elem_type else np.dtype(np.float32)
        shape = None
        if tt.HasField("shape"):
            shape = tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in tt.shape.dim)
        specs.append(InputSpec(vi.name, dtype, shape))
    return specs


def _fmt(shape: tuple[int | None, ...]) -> str:
    inner = ", ".join("?" if d is None else str(d) for d in shape)
    return f"({inner},)" if len(shape) == 1 else f"({inner})"


def check_shape(spec: InputSpec, got: tuple[int, ...], *, what: str) -> None:
    """Compare a sample (or batch) shape with the model's fixed dims."""
    want = spec.sample_shape if what == "samples" else spec.shape
    if want is None:
        return
    if len(got) != len(want) or any(w is not None and w != g for w, g in zip(want, got)):
        sample_got, sample_want = (got, want) if what == "samples" else (got[1:], want[1:])
        hint = _transpose_hint(tuple(sample_got), tuple(sample_want)) or (
            f"reshape it to (N, {_fmt(want)[1:]}" if what == "samples" and want else "fix the data's layout")
        raise DataError(
            f"input '{spec.name}' expects {what} of shape {_fmt(want)}, got {_fmt(got)}; {hint}."
        )


def _fits(got: tuple[int, ...], want: tuple[int | None, ...]) -> bool:
    return len(got) == len(want) and all(w is None or w == g for w, g in zip(want, got))


def _transpose_hint(got: tuple[int, ...], want: tuple[int | None, ...]) -> str | None:
    """The transpose that fixes channels-last data for a channels-first input (or the reverse),
    given per-sample shapes; ``None`` when the axes are not merely in the other order. A reshape
    would keep the values in memory order and scramble every image."""
    if len(got) < 2 or _fits(got, want):
        return None
    rank = len(got) + 1  # with the batch axis
    if _fits(got[-1:] + got[:-1], want):
        perm, names = (0, rank - 1, *range(1, rank - 1)), "channels last but the model takes channels first"
    elif _fits(got[1:] + got[:1], want):
        perm, names = (0, *range(2, rank), 1), "channels first but the model takes channels last"
    else:
        return None
    one = tuple(a - 1 for a in perm[1:])
    return (f"the data is {names}: transpose it with np.transpose(x, {perm}) ({one} for one sample without "
            "the batch axis; a reshape would scramble the images)")


def to_input_dtype(spec: InputSpec, arr: Any, *, where: str) -> np.ndarray:
    """Bring data to the input's dtype: cast ints/bools to float inputs, refuse floats for int inputs."""
    arr = np.asarray(arr)
    if arr.dtype == spec.dtype:
        return arr
    if spec.is_float:
        if np.issubdtype(arr.dtype, np.complexfloating) or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
            raise DataError(f"input '{spec.name}' expects {spec.dtype} data, got {arr.dtype} in {where}; provide real-valued numeric arrays.")
        return arr.astype(spec.dtype)
    if np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.complexfloating):
        raise DataError(
            f"input '{spec.name}' expects integer ({spec.dtype}) data such as token ids or masks, got {arr.dtype} "
            f"in {where}; save it with the integer dtype instead of floats."
        )
    if not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == np.bool_):
        raise DataError(f"input '{spec.name}' expects {spec.dtype} data, got {arr.dtype} in {where}; provide numeric arrays.")
    return arr.astype(spec.dtype)


def check_finite(spec: InputSpec, arr: np.ndarray, *, where: str, chunk: int = 1 << 20) -> None:
    """Count NaN/Inf in chunks so memory-mapped data is never materialised at once."""
    if not np.issubdtype(arr.dtype, np.floating):
        return
    if isinstance(arr, FileArray):
        rows = max(1, chunk // max(1, int(np.prod(arr.shape[1:], dtype=np.int64))))
        for start in range(0, arr.shape[0], rows):
            check_finite(spec, arr[start : start + rows], where=where, chunk=chunk)
        return
    flat = arr.reshape(-1) if arr.flags.c_contiguous else np.ravel(arr)
    bad = 0
    for start in range(0, flat.size, chunk):
        part = flat[start : start + chunk]
        bad += part.size - int(np.count_nonzero(np.isfinite(part)))
    if bad:
        raise DataError(
            f"input '{spec.name}' has {bad} NaN/Inf values in {where}; expected finite numbers, clean the data first."
        )
