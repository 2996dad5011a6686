"""int8kit: open post-training INT8 quantization for ONNX models."""

from __future__ import annotations

__version__ = "0.1.0"

from int8kit.errors import CalibrationError, ConfigError, DataError, Int8kitError, ModelError

__all__ = [
    "CalibrationError",
    "ConfigError",
    "DataError",
    "Int8kitError",
    "ModelError",
    "__version__",
]
