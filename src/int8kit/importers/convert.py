"""One conversion: framework files -> ONNX file, optionally checked against the original runtime."""

from __future__ import annotations

import os
import time
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx

from int8kit.errors import ConfigError
from int8kit.graph.io import resolve_path, save_model
from int8kit.importers import get_importer, resolve
from int8kit.importers.common import parse_input_shapes, parse_names
from int8kit.importers.compare import CompareResult
from int8kit.importers.compare import compare as run_compare


@dataclass
class ConvertResult:
    """The converted model, where it was written, and the compare result when one was asked for."""

    model: onnx.ModelProto
    path: Path | None
    framework: str
    seconds: float
    compare: CompareResult | None = None

    def to_dict(self) -> dict[str, Any]:
        g = self.model.graph
        inits = {t.name for t in g.initializer}
        return {
            "framework": self.framework,
            "path": str(self.path) if self.path else None,
            "seconds": round(self.seconds, 3),
            "nodes": len(g.node),
            "inputs": [vi.name for vi in g.input if vi.name not in inits],
            "outputs": [o.name for o in g.output],
            "compare": self.compare.to_dict() if self.compare else None,
        }


def convert_model(
    model: str | os.PathLike,
    *,
    framework: str | None = None,
    weights: str | os.PathLike | None = None,
    output: str | os.PathLike | None = None,
    input_shapes: Any = None,
    input_names: Any = None,
    compare: bool = False,
    compare_layers: bool | Collection[str] = False,
    data: Any = None,
    tolerance: float = 1e-3,
    samples: int | None = 8,
    batch_size: int | None = None,
    progress: bool = True,
    preprocess: str | None = None,
    preprocess_template: str | None = None,
    strict: bool = False,
) -> ConvertResult:
    """Convert ``model`` to ONNX, write it to ``output`` (atomically) and compare when asked.

    ``data`` for the compare: anything ``calibrate`` accepts (.npy/.npz, image folders or lists with
    ``preprocess``, LMDB folders, arrays, iterables of batches); ``None``: seeded random data.
    """
    if output is not None and Path(output).suffix.lower() != ".onnx":
        raise ConfigError(f"output '{output}' should end in .onnx; pass e.g. -o model.onnx.")
    check_compare_options(tolerance=tolerance, samples=samples, batch_size=batch_size)  # before anything is written
    key, model, weights = resolve(model, framework, weights)
    if output is not None and isinstance(model, (str, os.PathLike)):
        if resolve_path("output", output) == resolve_path("the model", model):
            raise ConfigError(f"output '{output}' is the input model; choose another path (inputs are never overwritten).")
    shapes, names = parse_input_shapes(input_shapes), parse_names(input_names)
    start = time.perf_counter()
    if key == "pytorch" and (compare or compare_layers):
        from int8kit.importers.pytorch import load_module

        # One module for the export and the reference: a factory called twice could build two
        # differently initialised models.
        model, weights = load_module(model, weights), None
    onnx_model = get_importer(key).convert(model, weights, input_shapes=shapes, input_names=names)
    seconds = time.perf_counter() - start
    path = save_model(onnx_model, output) if output is not None else None
    result = ConvertResult(onnx_model, path, key, seconds)
    if compare or compare_layers:
        layers = compare_layers if compare_layers is True else list(compare_layers or [])
        data = _open(onnx_model, data, preprocess, preprocess_template, strict)
        result.compare = run_compare(
            key, model, weights, data=data, input_shapes=shapes, input_names=names, layers=layers or False,
            tolerance=tolerance, samples=samples, batch_size=batch_size, onnx_model=onnx_model, progress=progress,
        )
    return result


def check_compare_options(*, tolerance: Any, samples: Any, batch_size: Any) -> None:
    """Refuse compare options no compare can use, before the conversion writes its output."""
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or not tolerance >= 0:
        raise ConfigError(f"--tolerance must be a non-negative number (the largest relative error accepted), got {tolerance!r}; pass e.g. 1e-3.")
    for name, value in (("--samples", samples), ("--batch", batch_size)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ConfigError(f"{name} must be a positive whole number, got {value!r}; pass e.g. 8.")


def _open(model: onnx.ModelProto, data: Any, preprocess: str | None, template: str | None, strict: bool) -> Any:
    """Image folders/lists, LMDBs and Caffe Data layers become sample sources (as in calibrate)."""
    if data is None or (preprocess is None and template is None and (
            not isinstance(data, (str, os.PathLike)) or Path(data).suffix.lower() in (".npy", ".npz"))):
        return data
    from int8kit.data.open import open_data
    from int8kit.data.sources import model_input_specs

    specs = model_input_specs(model)
    return open_data(data, preprocess=preprocess, preprocess_template=template, strict=strict,
                     input_shapes=[s.shape for s in specs], input_names=[s.name for s in specs])
