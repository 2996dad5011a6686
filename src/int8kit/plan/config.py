"""Typed quantization configuration: global options plus per-layer overrides.

Round-trips through JSON (with a version) and validates every key: a typo fails loudly with
the key, what was expected and what came, instead of being ignored.
"""

from __future__ import annotations

import difflib
import json
import math
import numbers
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from int8kit.errors import ConfigError

CONFIG_VERSION = 1


def name_list(value: Any, option: str) -> tuple[str, ...]:
    """Layer/op names from a collection of strings, or one string of comma-separated names."""
    if value is None:
        return ()
    if isinstance(value, str):
        return tuple(v.strip() for v in value.split(",") if v.strip())
    try:
        names = tuple(value)
    except TypeError:
        names = None
    if names is None or not all(isinstance(v, str) for v in names):
        raise ConfigError(f"{option} takes layer names (a list of strings or 'a,b'), got {value!r}.")
    return names


def _positive(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def _unknown_key(where: str, key: str, allowed: list[str]) -> ConfigError:
    close = difflib.get_close_matches(key, allowed, n=1)
    hint = f"; did you mean '{close[0]}'?" if close else f"; accepted keys: {', '.join(sorted(allowed))}."
    return ConfigError(f"{where} has an unknown key '{key}'{hint}")


# The manual's th_strategy values: USE_DEFAULT is the global method under int8kit's rules (no
# override), USE_KL the global divergence method (resolved by the planner), USE_MAX the maximum.
_STRATEGIES = {"USE_DEFAULT": None, "USE_KL": "USE_KL", "USE_MAX": "max"}


@dataclass
class LayerOverride:
    """Per-tensor or per-layer settings (the manual's th_strategy / th_scale / threshold / forward_with_float).

    Keys may name a tensor or a node; for a node they apply to its output tensors.
    """

    th_method: str | None = None
    th_params: dict[str, Any] | None = None  # the method's parameters; default: the global ones for the global method
    th_scale: float = 1.0
    threshold: float | None = None
    float: bool = False

    @classmethod
    def from_dict(cls, name: str, raw: Any) -> "LayerOverride":
        if not isinstance(raw, dict):
            raise ConfigError(f"override for '{name}' must be an object like {{\"th_method\": \"max\"}}, got {type(raw).__name__}.")
        allowed = [f.name for f in fields(cls)]
        for key in raw:
            if key not in allowed:
                raise _unknown_key(f"override for '{name}'", key, allowed)
        out = cls(**raw)
        if isinstance(out.th_method, str) and out.th_method.upper() in _STRATEGIES:  # the manual's th_strategy values
            out.th_method = _STRATEGIES[out.th_method.upper()]
        if out.th_params is not None and (
                not isinstance(out.th_params, dict) or not all(isinstance(k, str) for k in out.th_params)):
            raise ConfigError(f"override for '{name}': th_params must be an object of parameter values like "
                              f"{{\"search_step\": 0.02}}, got {out.th_params!r}.")
        if out.th_params is not None and not out.th_method:
            raise ConfigError(f"override for '{name}' gives th_params without a method for them (th_method missing or "
                              "USE_DEFAULT); name the method they are for.")
        if not _positive(out.th_scale):
            raise ConfigError(f"override for '{name}': th_scale must be a positive finite number, got {out.th_scale!r}.")
        if out.threshold is not None and not _positive(out.threshold):
            raise ConfigError(f"override for '{name}': threshold must be a positive finite number, got {out.threshold!r}.")
        if out.th_method is not None and not isinstance(out.th_method, str):
            raise ConfigError(f"override for '{name}': th_method must be a method name like \"max\", got {out.th_method!r}.")
        if not isinstance(out.float, bool):
            raise ConfigError(f"override for '{name}': float must be true or false, got {out.float!r}.")
        return out


@dataclass
class QuantConfig:
    """Everything the planner needs besides the model and the statistics."""

    th_method: str = "kl"
    th_params: dict[str, Any] = field(default_factory=dict)
    method_rules: bool = True  # int8kit's per-tensor method rules (plan/method_rules.py); off: th_method everywhere
    bins: int = 2048
    per_channel: bool = True  # one scale per output channel; per-tensor collapses depthwise convs
    activation_offset: bool = False
    bitwidth: int = 8
    conv_group: bool = False
    fold_concat_scale: bool = False
    accuracy_opt: bool = False
    bias_correction: bool = True
    channel_scales: bool = True
    integer_hardswish: bool = True
    bias_tuning: int = 0  # calibration samples for empirical bias correction (emit/bias_tuning.py); 0: off
    stem_float: bool = True
    signed_activations: bool = False
    outlier_ratio: float = 2.0
    skew_ratio: float = 0.5
    fp_inputs: tuple[str, ...] = ()
    fp_outputs: tuple[str, ...] = ()
    fp_blocks: tuple[str, ...] = ()
    fp_layers: tuple[str, ...] = ()
    fp_op_types: tuple[str, ...] = ()
    overrides: dict[str, LayerOverride] = field(default_factory=dict)
    version: int = CONFIG_VERSION

    def __post_init__(self) -> None:
        for name in ("fp_inputs", "fp_outputs", "fp_blocks", "fp_layers", "fp_op_types"):
            setattr(self, name, name_list(getattr(self, name), name))
        self.validate()

    def validate(self) -> None:
        """Check types and value ranges; raise ConfigError naming the option."""
        for f in fields(self):
            value = getattr(self, f.name)
            if f.type == "bool" and not (isinstance(value, (bool, int)) and value in (True, False)):
                raise ConfigError(f"{f.name} must be True or False, got {value!r}.")
            if f.type == "int" and (isinstance(value, bool) or not isinstance(value, numbers.Integral)):
                raise ConfigError(f"{f.name} must be a whole number, got {value!r}.")
        if not isinstance(self.th_method, str) or not isinstance(self.th_params, dict):
            raise ConfigError(f"th_method must be a method name and th_params a mapping, got {self.th_method!r} and {self.th_params!r}.")
        if not 8 <= self.bitwidth <= 16:
            raise ConfigError(
                f"--bitwidth must be 8 to 16, got {self.bitwidth}; 9-16 bit activations are held in 16-bit types (e.g. 12)."
            )
        if not isinstance(self.bias_tuning, int) or self.bias_tuning < 0:
            raise ConfigError(f"--bias-tuning takes a number of samples (0 turns it off), got {self.bias_tuning!r}; pass e.g. 32.")
        if self.bins < 512 or self.bins > 4096 or self.bins & (self.bins - 1):
            raise ConfigError(f"--th-binnum must be a power of two between 512 and 4096, got {self.bins}.")
        if self.signed_activations and self.activation_offset:
            raise ConfigError(
                "--signed-activations (symmetric int8, for TensorRT) and --activation-offset (zero points) "
                "contradict each other; choose one."
            )
        for name in ("outlier_ratio", "skew_ratio"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value < 0:
                raise ConfigError(f"{name} must be a number >= 0 (0 disables the rule), got {value!r}.")
        if self.version != CONFIG_VERSION:
            raise ConfigError(f"config version {self.version} is not supported; expected {CONFIG_VERSION}.")

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["overrides"] = {k: {kk: vv for kk, vv in asdict(v).items()} for k, v in self.overrides.items()}
        for key in ("fp_inputs", "fp_outputs", "fp_blocks", "fp_layers", "fp_op_types"):
            out[key] = list(out[key])
        return out

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "QuantConfig":
        allowed = [f.name for f in fields(cls)]
        for key in raw:
            if key not in allowed and key != "depthwise_channel_scales":
                raise _unknown_key("quantization config", key, allowed)
        raw = dict(raw)
        if "depthwise_channel_scales" in raw:  # its name in records written before it covered every conv
            raw.setdefault("channel_scales", raw.pop("depthwise_channel_scales"))
        raw["overrides"] = {k: LayerOverride.from_dict(k, v) for k, v in (raw.get("overrides") or {}).items()}
        return cls(**raw)


def load_overrides(path: str | os.PathLike) -> dict[str, LayerOverride]:
    """Read a per-layer overrides JSON file: ``{"layers": {"conv1": {"th_method": "max"}, ...}}``.

    A bare mapping of names to settings is accepted too.
    """
    path = Path(path)
    if not path.is_file():
        what = "is a folder" if path.is_dir() else "does not exist"
        raise ConfigError(f"overrides file '{path}' {what}; expected a JSON file, check the path.")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"overrides file '{path}' is not valid UTF-8 JSON ({exc}); expected {{\"layers\": {{NAME: {{...}}}}}}.") from None
    if isinstance(raw, dict) and "layers" in raw:
        extra = set(raw) - {"layers", "version"}
        if extra:
            raise _unknown_key(f"overrides file '{path}'", sorted(extra)[0], ["layers", "version"])
        if raw.get("version", CONFIG_VERSION) != CONFIG_VERSION:
            raise ConfigError(f"overrides file '{path}' has version {raw['version']!r}; this int8kit reads version {CONFIG_VERSION}.")
        raw = raw["layers"]
    if not isinstance(raw, dict):
        raise ConfigError(f"overrides file '{path}' must hold an object of layer names, got {type(raw).__name__}.")
    return {name: LayerOverride.from_dict(name, value) for name, value in raw.items()}


def as_overrides(raw: str | os.PathLike | Mapping[str, Any] | None) -> dict[str, LayerOverride]:
    """Overrides from a JSON file path, a mapping (with or without its "layers" key) or ``None``."""
    if raw is None:
        return {}
    if isinstance(raw, Mapping):
        layers = raw.get("layers", raw)
        if not isinstance(layers, Mapping):
            raise ConfigError(f"overrides must map layer names to settings, got {type(layers).__name__}: {layers!r}.")
        return {k: v if isinstance(v, LayerOverride) else LayerOverride.from_dict(k, v) for k, v in layers.items()}
    if not isinstance(raw, (str, os.PathLike)):
        raise ConfigError(f"overrides must be a JSON file path or a mapping, got {type(raw).__name__}.")
    return load_overrides(raw)
