"""The run configuration: all three stages of one run, as ``--save-config`` writes it."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from int8kit.config.base import CONFIG_VERSION, unknown_key
from int8kit.config.layers import read_json
from int8kit.config.stages import CalibOptions, QuantConfig, TuneOptions
from int8kit.errors import ConfigError

@dataclass(frozen=True)
class RunConfig:
    """What ``--save-config`` writes and ``--config`` replays: all three stages of one run."""

    quant: QuantConfig = QuantConfig()
    calib: CalibOptions = CalibOptions()
    tune: TuneOptions = TuneOptions()

    def to_dict(self) -> dict[str, Any]:
        return {"version": CONFIG_VERSION, "quantization": self.quant.to_dict(), "calibration": self.calib.to_dict(),
                "tuning": self.tune.to_dict()}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    @classmethod
    def from_dict(cls, raw: Any, where: str = "configuration") -> "RunConfig":
        """Read a run configuration; a quantize record (``<stem>_quant.json``) works too."""
        if isinstance(raw, Mapping) and "config" in raw and "tensors" in raw:  # a quant.json record
            if isinstance(raw["config"], Mapping) and "quantization" in raw["config"]:
                return cls.from_dict(raw["config"], where)
            flat = raw["config"]  # records of int8kit 0.1: one flat object with bins and bias_tuning in it
            return cls(QuantConfig.from_dict(flat), CalibOptions(bins=flat.get("bins")),
                       TuneOptions(bias_tuning=flat.get("bias_tuning", 0)))
        if not isinstance(raw, Mapping):
            raise ConfigError(f"{where} must be a JSON object, got {type(raw).__name__}.")
        allowed = ["version", "quantization", "calibration", "tuning"]
        for key in raw:
            if key not in allowed:
                raise unknown_key(where, key, allowed)
        if raw.get("version", CONFIG_VERSION) != CONFIG_VERSION:
            raise ConfigError(f"{where} has version {raw['version']!r}; this int8kit reads version {CONFIG_VERSION}.")
        return cls(QuantConfig.from_dict(raw.get("quantization", {})), CalibOptions.from_dict(raw.get("calibration", {})),
                   TuneOptions.from_dict(raw.get("tuning", {})))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "RunConfig":
        """Read a ``--save-config`` file (or a quant.json record)."""
        return cls.from_dict(read_json(path, "configuration file"), where=f"configuration file '{path}'")

    def save(self, path: str | os.PathLike) -> Path:
        """Write atomically (a temp name, then a rename)."""
        from int8kit.graph.io import write_text_atomic

        return write_text_atomic(Path(path), self.to_json())
