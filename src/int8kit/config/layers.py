"""Per-layer overrides (the manuals' th_strategy / th_scale / threshold / forward_with_float) and
the JSON files that carry them."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from int8kit.config.base import CONFIG_VERSION, Params, _FrozenMapping, _positive, unknown_key
from int8kit.errors import ConfigError

# The manual's th_strategy values: USE_DEFAULT is the global method under int8kit's rules (no
# override), USE_KL the global divergence method (resolved by the planner), USE_MAX the maximum.
_STRATEGIES = {"USE_DEFAULT": None, "USE_KL": "USE_KL", "USE_MAX": "max"}


@dataclass(frozen=True)
class LayerOverride:
    """Per-tensor or per-layer settings (the manual's th_strategy / th_scale / threshold / forward_with_float).

    Keys may name a tensor or a node; for a node they apply to its output tensors.
    """

    th_method: str | None = None
    th_params: Params | None = None  # the method's parameters; default: the global ones for the global method
    th_scale: float = 1.0
    threshold: float | None = None
    float: bool = False
    weight_algo: str | None = None  # the layer's weights: "arq" (uniform INT8) or "snq" (INT4 clustered); None: global
    with_offset: bool | None = None  # the tensor's range gets a zero point (AMCT with_offset); None: global activation_offset
    per_channel: bool | None = None  # a compute layer's weights: one scale per output channel (AMCT channel_wise); None: global

    def __post_init__(self) -> None:
        if self.th_params is not None and not isinstance(self.th_params, Params):
            if not isinstance(self.th_params, Mapping) or not all(isinstance(k, str) for k in self.th_params):
                raise ConfigError(f"th_params must be an object of parameter values like {{\"search_step\": 0.02}}, "
                                  f"got {self.th_params!r}.")
            object.__setattr__(self, "th_params", Params(self.th_params))

    @classmethod
    def from_dict(cls, name: str, raw: Any) -> "LayerOverride":
        """Validate one override; every message names the layer."""
        if isinstance(raw, LayerOverride):
            return raw
        if not isinstance(raw, Mapping):
            raise ConfigError(f"override for '{name}' must be an object like {{\"th_method\": \"max\"}}, got {type(raw).__name__}.")
        allowed = [f.name for f in fields(cls)]
        for key in raw:
            if key not in allowed:
                raise unknown_key(f"override for '{name}'", key, allowed)
        raw = dict(raw)
        method = raw.get("th_method")
        if method is not None and not isinstance(method, str):
            raise ConfigError(f"override for '{name}': th_method must be a method name like \"max\", got {method!r}.")
        if isinstance(method, str) and method.upper() in _STRATEGIES:  # the manual's th_strategy values
            raw["th_method"] = _STRATEGIES[method.upper()]
        params = raw.get("th_params")
        if params is not None and (not isinstance(params, Mapping) or not all(isinstance(k, str) for k in params)):
            raise ConfigError(f"override for '{name}': th_params must be an object of parameter values like "
                              f"{{\"search_step\": 0.02}}, got {params!r}.")
        if params is not None and not raw.get("th_method"):
            raise ConfigError(f"override for '{name}' gives th_params without a method for them (th_method missing or "
                              "USE_DEFAULT); name the method they are for.")
        if not _positive(raw.get("th_scale", 1.0)):
            raise ConfigError(f"override for '{name}': th_scale must be a positive finite number, got {raw['th_scale']!r}.")
        if raw.get("threshold") is not None and not _positive(raw["threshold"]):
            raise ConfigError(f"override for '{name}': threshold must be a positive finite number, got {raw['threshold']!r}.")
        if not isinstance(raw.get("float", False), bool):
            raise ConfigError(f"override for '{name}': float must be true or false, got {raw['float']!r}.")
        for key in ("with_offset", "per_channel"):
            if raw.get(key) is not None and not isinstance(raw[key], bool):
                raise ConfigError(f"override for '{name}': {key} must be true, false or null, got {raw[key]!r}.")
        if raw.get("weight_algo") not in (None, "arq", "snq"):
            raise ConfigError(f"override for '{name}': weight_algo must be \"arq\" or \"snq\", got {raw['weight_algo']!r}.")
        return cls(**raw)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["th_params"] = None if self.th_params is None else self.th_params.to_json()
        return out


class Overrides(_FrozenMapping):
    """Per-layer overrides by layer or tensor name, in the given order."""

    def __init__(self, raw: Mapping[str, Any] | None = None) -> None:
        self._items = {k: LayerOverride.from_dict(k, v) for k, v in (raw or {}).items()}



def read_json(path: str | os.PathLike, what: str, hint: str = "check the file") -> Any:
    """A JSON file's content, or one sentence saying why it cannot be read (ending with ``hint``)."""
    path = Path(path)
    if not path.is_file():
        state = "is a folder" if path.is_dir() else "does not exist"
        raise ConfigError(f"{what} '{path}' {state}; expected a JSON file, check the path.")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{what} '{path}' is not valid UTF-8 JSON ({exc}); {hint}.") from None
    except RecursionError:
        raise ConfigError(f"{what} '{path}' is nested too deeply to be read; {hint}.") from None


def load_overrides(path: str | os.PathLike) -> Overrides:
    """Read a per-layer overrides JSON file: ``{"layers": {"conv1": {"th_method": "max"}, ...}}``.

    A bare mapping of names to settings is accepted too.
    """
    raw = read_json(path, "overrides file")
    if isinstance(raw, dict) and "layers" in raw:
        extra = set(raw) - {"layers", "version"}
        if extra:
            raise unknown_key(f"overrides file '{path}'", sorted(extra)[0], ["layers", "version"])
        if raw.get("version", CONFIG_VERSION) != CONFIG_VERSION:
            raise ConfigError(f"overrides file '{path}' has version {raw['version']!r}; this int8kit reads version {CONFIG_VERSION}.")
        raw = raw["layers"]
    if not isinstance(raw, dict):
        raise ConfigError(f"overrides file '{path}' must hold an object of layer names, got {type(raw).__name__}.")
    return Overrides(raw)


def as_overrides(raw: str | os.PathLike | Mapping[str, Any] | None) -> Overrides:
    """Overrides from a JSON file path, a mapping (with or without its "layers" key) or ``None``."""
    if raw is None:
        return Overrides()
    if isinstance(raw, Overrides):
        return raw
    if isinstance(raw, Mapping):
        layers = raw.get("layers", raw)
        if not isinstance(layers, Mapping):
            raise ConfigError(f"overrides must map layer names to settings, got {type(layers).__name__}: {layers!r}.")
        return Overrides(layers)
    if not isinstance(raw, (str, os.PathLike)):
        raise ConfigError(f"overrides must be a JSON file path or a mapping, got {type(raw).__name__}.")
    return load_overrides(raw)
