"""int8kit: open post-training INT8 quantization for ONNX models.

``int8kit.convert``, ``quantize``, ``calibrate``, ``optimize`` and ``evaluate`` are the functions of
``int8kit.api`` (imported lazily so that ``import int8kit`` stays cheap).
"""

from __future__ import annotations

from typing import Any

from int8kit.errors import CalibrationError, ConfigError, DataError, Int8kitError, ModelError

__version__ = "0.1.0"

_API = ("convert", "quantize", "calibrate", "optimize", "evaluate")

__all__ = [
    "CalibrationError",
    "ConfigError",
    "DataError",
    "Int8kitError",
    "ModelError",
    "__version__",
    *_API,
]


def __getattr__(name: str) -> Any:
    if name in _API:
        from int8kit import api

        return getattr(api, name)
    raise AttributeError(f"module 'int8kit' has no attribute '{name}'")
