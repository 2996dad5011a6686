"""int8kit: open post-training INT8 quantization for ONNX models.

``int8kit.convert``, ``quantize``, ``calibrate``, ``optimize``, ``evaluate`` and ``analyze`` are the functions of
``int8kit.api``, and ``int8kit.inspect`` is ``int8kit inspect`` (``int8kit.demo.run_demo`` is
``int8kit demo``). They are imported lazily so that ``import int8kit`` stays cheap. ``QuantConfig``,
``CalibOptions``, ``TuneOptions`` and ``RunConfig`` are the configuration (``int8kit.config``).

This file runs before the ``int8kit`` command can catch a Ctrl-C (``int8kit.__main__``), so it
imports nothing heavy: a Ctrl-C during an import here would be a KeyboardInterrupt traceback.
"""

from __future__ import annotations

from int8kit.runtime.import_guard import install as _keep_ctrl_c

_keep_ctrl_c()  # a Ctrl-C while onnxruntime imports stays a Ctrl-C, not an ImportError traceback
del _keep_ctrl_c

__version__ = "0.1.0"

_API = ("convert", "quantize", "calibrate", "optimize", "evaluate", "analyze", "auto")
_CONFIG = ("QuantConfig", "CalibOptions", "TuneOptions", "RunConfig")
_ERRORS = ("CalibrationError", "ConfigError", "DataError", "Int8kitError", "ModelError")

__all__ = [
    "CalibOptions",
    "CalibrationError",
    "ConfigError",
    "DataError",
    "Int8kitError",
    "ModelError",
    "QuantConfig",
    "RunConfig",
    "TuneOptions",
    "__version__",
    *_API,
    "inspect",
]


def __getattr__(name: str) -> object:
    import importlib  # here, not above: see the module docstring

    if name in _ERRORS:
        return getattr(importlib.import_module("int8kit.errors"), name)
    if name in _API:
        return getattr(importlib.import_module("int8kit.api"), name)
    if name in _CONFIG:
        return getattr(importlib.import_module("int8kit.config"), name)
    if name == "api":
        return importlib.import_module("int8kit.api")
    if name == "inspect":
        return importlib.import_module("int8kit.describe").describe
    raise AttributeError(f"module 'int8kit' has no attribute '{name}'")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__, "api"})
