"""Model import (the manual's Parse-Tools): other frameworks' models to ONNX, plus their reference runtimes.

Each framework is a module (or object) with two functions::

    convert(model, weights=None, *, input_shapes=None, input_names=None, **options) -> onnx.ModelProto
    reference(model, weights=None, *, input_shapes=None, input_names=None) -> Reference

imported only when that framework is used, so a missing optional package never breaks the others.
``load_any_model`` is what ``quantize``/``calibrate``/``eval``/``optimize`` call: an ONNX file is
loaded as is, anything else is converted first.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from pathlib import Path
from typing import Any

import onnx

from int8kit.errors import ConfigError, ModelError

log = logging.getLogger(__name__)

#: framework -> "module" or "module:attribute" holding convert/reference
FRAMEWORKS: dict[str, str] = {
    "caffe": "int8kit.importers.caffe",
    "darknet": "int8kit.importers.darknet",
    "pytorch": "int8kit.importers.pytorch",
    "onnx": "int8kit.importers.onnx_import",
    "tensorflow": "int8kit.importers.external:tensorflow",
    "paddle": "int8kit.importers.external:paddle",
    "tflite": "int8kit.importers.external:tflite",
}

_ALIASES = {"torch": "pytorch", "tf": "tensorflow", "paddlepaddle": "paddle"}

_UNSUPPORTED = {
    "mxnet": (
        "MXNet models are not supported: Apache MXNet was retired and its repository archived in 2023, so no "
        "maintained runtime exists to convert or check against; export the model to ONNX with MXNet's own "
        "mxnet.onnx.export_model and pass the .onnx file (--framework onnx)."
    ),
}

# (suffix, framework) in match order; longer suffixes first
_EXTENSIONS: tuple[tuple[str, str], ...] = (
    (".prototxt.txt", "caffe"),
    (".prototxt", "caffe"),
    (".cfg", "darknet"),
    (".torchscript", "pytorch"),
    (".pt", "pytorch"),
    (".pth", "pytorch"),
    (".onnx", "onnx"),
    (".pb", "tensorflow"),
    (".keras", "tensorflow"),
    (".tflite", "tflite"),
    (".pdmodel", "paddle"),
)


def normalize_framework(name: str) -> str:
    """Lower-case a framework name, accept common aliases, and reject unknown or unsupported ones."""
    key = _ALIASES.get(name.strip().lower(), name.strip().lower())
    if key in _UNSUPPORTED:
        raise ConfigError(_UNSUPPORTED[key])
    if key not in FRAMEWORKS:
        raise ConfigError(f"framework '{name}' is not known; expected one of {', '.join(FRAMEWORKS)}.")
    return key


def get_importer(framework: str) -> Any:
    """The module (or object) with ``convert`` and ``reference`` for ``framework``, imported now."""
    key = normalize_framework(framework)
    target = FRAMEWORKS[key]
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name or module_name.startswith(f"{exc.name}."):
            raise ConfigError(
                f"the {key} importer ({module_name}) is not part of this int8kit installation yet; "
                "update int8kit, or convert the model to ONNX with another tool and pass the .onnx file."
            ) from None
        raise ConfigError(
            f"the {key} importer needs the Python package '{exc.name}', which is not installed; "
            f"pip install {exc.name} (or the matching extra) and retry."
        ) from None
    importer = getattr(module, attr) if attr else module
    if not (callable(getattr(importer, "convert", None)) and callable(getattr(importer, "reference", None))):
        raise ConfigError(
            f"the {key} importer ({target}) is not complete in this int8kit installation (no convert/reference); "
            "update int8kit, or convert the model to ONNX with another tool and pass the .onnx file."
        )
    return importer


def detect_framework(path: str | os.PathLike) -> str:
    """The framework a model path belongs to, from its extension (a folder is a TensorFlow SavedModel)."""
    if _looks_like_factory(str(path)):
        return "pytorch"
    p = Path(path)
    if p.is_dir():
        if (p / "saved_model.pb").exists() or (p / "saved_model.pbtxt").exists():
            return "tensorflow"
        raise ConfigError(
            f"model path '{p}' is a folder without saved_model.pb; expected a model file or a TensorFlow SavedModel folder."
        )
    name = p.name.lower()
    if name.endswith(".json") and p.with_suffix(".pdiparams").exists():  # Paddle 3's paddle.jit.save
        return "paddle"
    for suffix, framework in _EXTENSIONS:
        if name.endswith(suffix):
            return framework
    raise ConfigError(
        f"cannot tell the framework of '{p}' from its extension; pass --framework "
        f"({', '.join(FRAMEWORKS)})."
    )


def _looks_like_factory(text: str) -> bool:
    """``package.module:factory`` or ``file.py:factory`` (a Windows drive letter is not a factory)."""
    head, sep, tail = text.rpartition(":")
    return bool(sep) and len(head) > 1 and tail.isidentifier() and not Path(text).exists()


def default_weights(framework: str, model: str | os.PathLike) -> Path | None:
    """The weights file beside a Caffe prototxt (same stem, .caffemodel) or a Darknet cfg (.weights)."""
    p = Path(model)
    stem = p.name[: -len(".prototxt.txt")] if p.name.lower().endswith(".prototxt.txt") else p.stem
    suffix = {"caffe": ".caffemodel", "darknet": ".weights"}.get(framework)
    if suffix is None:
        return None
    candidate = p.with_name(stem + suffix)
    if candidate.exists():
        return candidate
    siblings = sorted(p.parent.glob(f"*{suffix}")) if p.parent.is_dir() else []
    if len(siblings) == 1:  # one unambiguous weights file beside it (deploy.prototxt + res10_....caffemodel)
        log.info("using weights %s found beside %s", siblings[0], p)
        return siblings[0]
    return None


def resolve(
    model: Any, framework: str | None = None, weights: str | os.PathLike | None = None
) -> tuple[str, Any, str | os.PathLike | None]:
    """Framework (given or detected), model and weights (given or found beside the model).

    ``model`` is a path, ``package.module:factory``, or an in-memory model (a ``torch.nn.Module``).
    """
    key = normalize_framework(framework) if framework else None  # an unsupported framework is said first
    if not isinstance(model, (str, os.PathLike)):  # an in-memory model, e.g. a torch.nn.Module
        key = key or ("pytorch" if _is_torch_module(model) else None)
        if key is None:
            raise ConfigError(f"cannot tell the framework of a {type(model).__name__} object; pass framework=...")
    else:
        if not _looks_like_factory(str(model)) and not Path(model).exists():
            raise ModelError(f"model file '{model}' does not exist; check the path.")
        key = key or detect_framework(model)
        if weights is None and key in ("caffe", "darknet"):
            weights = default_weights(key, model)
            if weights is None:
                want = "--weights model.caffemodel" if key == "caffe" else "--weights model.weights"
                raise ConfigError(
                    f"{key} model '{model}' needs its weights file and none with the same name was found beside it; pass {want}."
                )
    if weights is not None and not Path(weights).exists():
        raise ModelError(f"weights file '{weights}' does not exist; check the path.")
    return key, model, weights


def _is_torch_module(obj: Any) -> bool:
    torch = sys.modules.get("torch")  # never import torch just to ask
    return torch is not None and isinstance(obj, torch.nn.Module)


def load_any_model(
    model: onnx.ModelProto | str | os.PathLike,
    *,
    framework: str | None = None,
    weights: str | os.PathLike | None = None,
    input_shapes: Any = None,
    input_names: Any = None,
) -> onnx.ModelProto:
    """An ONNX model from any supported source: a loaded ModelProto, an .onnx file, or another
    framework's files (converted in memory; nothing is written)."""
    from int8kit.graph.io import as_model
    from int8kit.importers.common import parse_input_shapes, parse_names

    if isinstance(model, (str, os.PathLike)) and not str(model):
        raise ModelError("the model path is empty; expected a model file (.onnx, .prototxt, .cfg, ...).")
    if isinstance(model, onnx.ModelProto):
        if framework not in (None, "onnx") or weights is not None:
            raise ConfigError("a loaded ONNX ModelProto was given with a framework or weights; pass the original files instead.")
        return model
    in_memory = not isinstance(model, (str, os.PathLike))
    plain_onnx = not in_memory and framework in (None, "onnx") and str(model).lower().endswith(".onnx")
    if plain_onnx and input_shapes is None and input_names is None:
        return as_model(model)  # the common case: no checks beyond loading, exactly as before
    if not in_memory and framework is None and weights is None and Path(model).is_file():
        try:
            detect_framework(model)
        except ConfigError:
            return as_model(model)  # an ONNX file under another extension, as before importers existed
    key, model, weights = resolve(model, framework, weights)
    importer = get_importer(key)
    return importer.convert(
        model, weights, input_shapes=parse_input_shapes(input_shapes), input_names=parse_names(input_names)
    )


def load_reference(
    model: str | os.PathLike,
    *,
    framework: str | None = None,
    weights: str | os.PathLike | None = None,
    input_shapes: Any = None,
    input_names: Any = None,
) -> Any:
    """The original model in its own runtime (see ``common.Reference``)."""
    from int8kit.importers.common import parse_input_shapes, parse_names

    key, model, weights = resolve(model, framework, weights)
    return get_importer(key).reference(
        model, weights, input_shapes=parse_input_shapes(input_shapes), input_names=parse_names(input_names)
    )


__all__ = [
    "FRAMEWORKS",
    "default_weights",
    "detect_framework",
    "get_importer",
    "load_any_model",
    "load_reference",
    "normalize_framework",
    "resolve",
]
