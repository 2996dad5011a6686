"""The one place where every option of a run and its default is defined.

Three frozen, typed, versioned configurations, one per stage:

- :class:`QuantConfig`: what ``plan()`` reads (methods, granularity, mixed precision, overrides);
- :class:`CalibOptions`: how the calibration pass reads the data (bins, samples, batch);
- :class:`TuneOptions`: steps that run the quantized model after planning (bias tuning).

Each field carries its help text and command-line flag as metadata: the CLI builds its options
from them (``int8kit.cli.options``) and the API accepts the field names as keywords, so names,
defaults and help cannot drift apart. A configuration is validated on construction, never mutated
afterwards (``replace`` returns a changed copy), and round-trips through JSON; the run
configuration file (``--save-config`` / ``--config``) holds all three.
"""

from __future__ import annotations

import difflib
import json
import math
import numbers
import os
from collections.abc import Iterator, Mapping
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, ClassVar

from int8kit.errors import ConfigError

CONFIG_VERSION = 1


class Params(Mapping[str, Any]):
    """An immutable, hashable mapping of method parameters (lists become tuples)."""

    __slots__ = ("_items",)

    def __init__(self, raw: Mapping[str, Any] | None = None) -> None:
        self._items = dict(sorted((k, _frozen(v)) for k, v in (raw or {}).items()))

    def __getitem__(self, key: str) -> Any:
        return self._items[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return hash(tuple(self._items.items()))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Mapping) and dict(self._items) == dict(other)

    def __repr__(self) -> str:
        return f"Params({self._items!r})"

    def to_json(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in self._items.items()}


def _frozen(value: Any) -> Any:
    return tuple(_frozen(v) for v in value) if isinstance(value, (list, tuple)) else value


def option(default: Any, help: str, *, flag: str | None = None, off_flag: str | None = None, on_help: str | None = None,
           aliases: tuple[str, ...] = (), metavar: str | None = None, cli: bool = True) -> Any:
    """A configuration field with its help text and command-line spelling.

    ``flag`` sets the value (``--th-method X``; for a bool, the flag that turns it on),
    ``off_flag`` turns a bool off (``--no-bias-correction``), ``aliases`` are older spellings of
    whichever flag there is one of. Without ``flag``/``off_flag`` the flag is the field name.
    ``help`` says what the flag does (``off_flag``'s when there is one; ``on_help``: ``flag``'s then).
    """
    meta = {"help": help, "flag": flag, "off_flag": off_flag, "on_help": on_help, "aliases": aliases, "metavar": metavar, "cli": cli}
    return field(default=default, metadata=meta)


def name_list(value: Any, option_name: str) -> tuple[str, ...]:
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
        raise ConfigError(f"{option_name} takes layer names (a list of strings or 'a,b'), got {value!r}.")
    return names


def unknown_key(where: str, key: str, allowed: list[str]) -> ConfigError:
    """The error for a key nobody defines, with the nearest accepted one."""
    close = difflib.get_close_matches(key, allowed, n=1)
    hint = f"; did you mean '{close[0]}'?" if close else f"; accepted keys: {', '.join(sorted(allowed))}."
    return ConfigError(f"{where} has an unknown key '{key}'{hint}")


def _positive(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


class _Options:
    """Shared behaviour of the three configurations: typed checks, replace, JSON round-trip."""

    WHAT: ClassVar[str] = "configuration"

    def _check_types(self) -> None:
        for f in fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if f.type == "bool" and not isinstance(value, bool):
                if isinstance(value, int) and value in (0, 1):  # JSON writers that store 0/1
                    object.__setattr__(self, f.name, bool(value))
                    continue
                raise ConfigError(f"{f.name} must be True or False, got {value!r}.")
            if f.type.startswith("int") and value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Integral)):
                raise ConfigError(f"{f.name} must be a whole number, got {value!r}.")
            if f.type == "float" and (isinstance(value, bool) or not isinstance(value, numbers.Real)):
                raise ConfigError(f"{f.name} must be a number, got {value!r}.")

    def replace(self, **changes: Any):
        """A copy with ``changes`` applied (and validated); unknown names fail with the nearest one."""
        allowed = [f.name for f in fields(self)]  # type: ignore[arg-type]
        for key in changes:
            if key not in allowed:
                raise unknown_key(self.WHAT, key, allowed)
        return replace(self, **changes)  # type: ignore[type-var]

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values, every field (defaults included)."""
        out = {}
        for f in fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    @classmethod
    def from_dict(cls, raw: Any):
        """Validate ``raw`` (as ``to_dict`` writes it; missing keys take their defaults)."""
        if not isinstance(raw, Mapping):
            raise ConfigError(f"{cls.WHAT} must be a JSON object of option names, got {type(raw).__name__}.")
        allowed = [f.name for f in fields(cls)]  # type: ignore[arg-type]
        for key in raw:
            if key not in allowed:
                raise unknown_key(cls.WHAT, key, allowed)
        return cls(**raw)


_FP_FIELDS = ("fp_inputs", "fp_outputs", "fp_blocks", "fp_layers", "fp_op_types")

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
        return cls(**raw)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["th_params"] = None if self.th_params is None else self.th_params.to_json()
        return out


class Overrides(Mapping[str, LayerOverride]):
    """Per-layer overrides by layer or tensor name: immutable and hashable, in the given order."""

    __slots__ = ("_items",)

    def __init__(self, raw: Mapping[str, Any] | None = None) -> None:
        self._items = {k: LayerOverride.from_dict(k, v) for k, v in (raw or {}).items()}

    def __getitem__(self, key: str) -> LayerOverride:
        return self._items[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return hash(tuple(self._items.items()))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Mapping) and dict(self._items) == dict(other)

    def __repr__(self) -> str:
        return f"Overrides({self._items!r})"


# What each deployment target implies (--target): the QDQ form that runtime fuses into integer
# kernels, measured there. onnxruntime: int8kit's defaults. OpenVINO and TensorRT fuse a
# DequantizeLinear into the conv that reads it, so only compute inputs are quantized (a conv
# output feeding a float op stays float), biases stay float, and the onnxruntime-only rewrites
# (per-channel-step Muls, HardSwish as an INT8 Add and Mul) are off; TensorRT also takes only
# symmetric int8 activations.
TARGETS: dict[str, dict[str, Any]] = {
    "onnxruntime": {},
    "openvino": {"channel_scales": False, "integer_hardswish": False},
    "tensorrt": {"channel_scales": False, "integer_hardswish": False, "signed_activations": True},
}


@dataclass(frozen=True)
class QuantConfig(_Options):
    """Everything the planner needs besides the model and the statistics."""

    WHAT: ClassVar[str] = "quantization config"

    target: str = option("onnxruntime", "the runtime the INT8 model is for: onnxruntime, openvino or tensorrt; each gets "
                                        "the QDQ form it runs with integer kernels (openvino, tensorrt: float biases, "
                                        "quantized compute inputs only, no per-channel-step Muls or integer HardSwish; "
                                        "tensorrt: symmetric int8 activations)", metavar="RUNTIME")
    th_method: str = option("kl", "activation threshold method: max, percentile, kl, symkl, jsd, mse, admm, "
                                  "aciq_laplace, aciq_gauss, ifmr (the manuals' names such as PERCENTILE9999 too)")
    th_params: Params = option(Params(), "extra threshold method parameter, repeatable", flag="--th-param",
                               metavar="KEY=VALUE")
    method_rules: bool = option(True, "apply --th-method to every activation (default: max for model inputs and "
                                      "bounded outputs, mse where kl/symkl/jsd would clip signed or one-sided "
                                      "tensors; overrides still apply)", off_flag="--no-method-rules")
    per_channel: bool = option(True, "one weight scale per tensor (the vendor tools' default; hurts depthwise convs)",
                               flag="--per-channel", off_flag="--per-tensor",
                               on_help="one weight scale per output channel (the default)")
    activation_offset: bool = option(False, "asymmetric activations with a zero point (AMCT with_offset)")
    bitwidth: int = option(8, "activation bits, 8 to 16; 9-16 are held in 16-bit types, e.g. 12: int12 steps saved "
                              "as int16 (onnxruntime has no 16-bit integer kernels: an accuracy reference, slower than FP32)")
    conv_group: bool = option(False, "group output channels of similar range, one weight scale per group")
    fold_concat_scale: bool = option(False, "give Concat inputs the output's scale")
    accuracy_opt: bool = option(False, "keep depthwise convolutions in float")
    bias_correction: bool = option(True, "do not correct the mean shift of weight rounding in the INT32 bias",
                                   off_flag="--no-bias-correction")
    channel_scales: bool = option(True, "one scale per tensor also for float-op outputs only convs read "
                                        "(default: one step per channel, folded into the conv weights)",
                                  off_flag="--no-channel-scales", aliases=("--no-depthwise-channel-scales",))
    integer_hardswish: bool = option(True, "run HardSwish in float between its QDQ pairs (default: as an INT8 Add "
                                           "and Mul, which onnxruntime runs with integer kernels)",
                                     off_flag="--float-hardswish")
    stem_float: bool = option(True, "also quantize a first conv with <= 4 input channels and the depthwise conv right "
                                    "after it (float by default: no speed-up, costly)", off_flag="--quantize-stem")
    signed_activations: bool = option(False, "symmetric int8 activations only (TensorRT's QDQ rule; --target tensorrt "
                                             "sets it); default: uint8 with zero points. onnxruntime's CPU kernels "
                                             "run int8 activations several times slower than uint8 on the same grid")
    outlier_ratio: float = option(2.0, "MatMul/Gemm whose input max exceeds this many 99.99th percentiles stay float (0: off)")
    skew_ratio: float = option(0.5, "signed tensors with |min|/max (or max/|min|) below this get a zero point (0: off)")
    fp_inputs: tuple[str, ...] = option((), "these layers and all before them stay float (comma-separated)")
    fp_outputs: tuple[str, ...] = option((), "these layers and all after them stay float (comma-separated)")
    fp_blocks: tuple[str, ...] = option((), "from each layer to the next compute layer stays float (comma-separated)")
    fp_layers: tuple[str, ...] = option((), "these layers stay float (comma-separated)")
    fp_op_types: tuple[str, ...] = option((), "all layers of these op types stay float (comma-separated)")
    overrides: Overrides = option(Overrides(), "JSON file of per-layer th_method / th_params / th_scale / threshold / float",
                                  metavar="JSON")
    version: int = option(CONFIG_VERSION, "configuration format version", cli=False)

    def __post_init__(self) -> None:
        for name in _FP_FIELDS:
            object.__setattr__(self, name, name_list(getattr(self, name), name))
        if not isinstance(self.th_params, Mapping) or not all(isinstance(k, str) for k in self.th_params):
            raise ConfigError(f"th_params must be a mapping of parameter names to values, got {self.th_params!r}.")
        if not isinstance(self.overrides, Overrides):
            object.__setattr__(self, "overrides", as_overrides(self.overrides))
        self._check_types()
        self._apply_target()
        self._resolve_methods()
        self._check_values()

    def _apply_target(self) -> None:
        if self.target not in TARGETS:
            close = difflib.get_close_matches(str(self.target), list(TARGETS), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise ConfigError(f"target must be one of {', '.join(TARGETS)}, got {self.target!r}{hint}")
        if self.target == "tensorrt" and self.activation_offset:
            raise ConfigError("--target tensorrt takes symmetric int8 activations only, but --activation-offset asks for "
                              "zero points; drop one of them.")
        for name, value in TARGETS[self.target].items():
            object.__setattr__(self, name, value)

    @property
    def inputs_only(self) -> bool:
        """Quantize compute inputs only (a compute output only for a quantized reader), with float
        biases: the form OpenVINO and TensorRT fuse."""
        return self.target != "onnxruntime"

    def _resolve_methods(self) -> None:
        """Write the global method by its canonical name with the parameters an alias implies
        (PERCENTILE9999: percentile 99.99), so the record says what ran; a misspelt method or
        parameter fails here, before any work."""
        from int8kit.thresholds import check_params, resolve
        from int8kit.thresholds import override_method_name

        name, implied = resolve(self.th_method)
        params = Params({**implied, **self.th_params})
        check_params(name, params, "--th-param")
        object.__setattr__(self, "th_method", name)
        object.__setattr__(self, "th_params", params)
        for layer, ov in self.overrides.items():
            if ov.th_method:
                method = override_method_name(ov.th_method, name)
                resolve(method)
                if ov.th_params:
                    check_params(method, ov.th_params, f"the override for '{layer}'")

    def _check_values(self) -> None:
        if not 8 <= self.bitwidth <= 16:
            raise ConfigError(
                f"--bitwidth must be 8 to 16, got {self.bitwidth}; 9-16 bit activations are held in 16-bit types (e.g. 12)."
            )
        if self.signed_activations and self.activation_offset:
            raise ConfigError(
                "--signed-activations (symmetric int8, for TensorRT) and --activation-offset (zero points) "
                "contradict each other; choose one."
            )
        for name in ("outlier_ratio", "skew_ratio"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ConfigError(f"{name} must be a number >= 0 (0 disables the rule), got {value!r}.")
        if self.version != CONFIG_VERSION:
            raise ConfigError(f"config version {self.version} is not supported; expected {CONFIG_VERSION}.")

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        out["th_params"] = self.th_params.to_json()
        out["overrides"] = {k: v.to_dict() for k, v in self.overrides.items()}
        return out

    @classmethod
    def from_dict(cls, raw: Any) -> "QuantConfig":
        if isinstance(raw, Mapping) and "depthwise_channel_scales" in raw:  # its name in records written before it covered every conv
            raw = dict(raw)
            raw.setdefault("channel_scales", raw.pop("depthwise_channel_scales"))
        if isinstance(raw, Mapping):
            raw = {k: v for k, v in raw.items() if k not in ("bins", "bias_tuning")}  # stage options of version-1 records
        return super().from_dict(raw)


MIN_BINS, MAX_BINS = 512, 4096


@dataclass(frozen=True)
class CalibOptions(_Options):
    """How the calibration pass reads the data (``-dump_dist`` statistics depend on these)."""

    WHAT: ClassVar[str] = "calibration options"

    bins: int | None = option(None, "histogram bins per side, a power of two 512-4096 (default 2048; with --stats: "
                                    "the statistics' own, or fewer summed from them exactly)", flag="--th-binnum")
    iterations: int | None = option(None, "number of calibration samples to use (default: all)")
    batch_size: int | None = option(None, "samples per inference batch (default: up to 32 and at most 20 MB of input)",
                                    flag="--batch")

    DEFAULT_BINS: ClassVar[int] = 2048

    def __post_init__(self) -> None:
        self._check_types()
        if self.bins is not None and (self.bins < MIN_BINS or self.bins > MAX_BINS or self.bins & (self.bins - 1)):
            raise ConfigError(f"--th-binnum must be a power of two between {MIN_BINS} and {MAX_BINS}, got {self.bins}.")
        for name in ("iterations", "batch_size"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"{name} must be a positive number of samples, got {value}.")

    @property
    def histogram_bins(self) -> int:
        """The bins a new calibration pass uses."""
        return self.DEFAULT_BINS if self.bins is None else self.bins


@dataclass(frozen=True)
class TuneOptions(_Options):
    """Steps that run the quantized model on calibration samples after planning."""

    WHAT: ClassVar[str] = "tuning options"

    bias_tuning: int = option(0, "after quantizing, run the INT8 model on the first N calibration samples and move "
                                 "each conv's bias so its output mean matches FP32, in graph order (0: off; try 32 for "
                                 "deep networks whose accuracy swings with the calibration set; adds a fifth to two "
                                 "fifths to the time)", metavar="N")

    def __post_init__(self) -> None:
        self._check_types()
        if self.bias_tuning < 0:
            raise ConfigError(f"--bias-tuning takes a number of samples (0 turns it off), got {self.bias_tuning!r}; pass e.g. 32.")


STAGES: tuple[type, ...] = (QuantConfig, CalibOptions, TuneOptions)


def field_default(cls: type, name: str) -> Any:
    """The default of one configuration field (the one place defaults live)."""
    f = {f.name: f for f in fields(cls)}[name]
    return f.default if f.default is not MISSING else f.default_factory()  # type: ignore[misc]


def split_options(options: Mapping[str, Any], *, stages: tuple[type, ...] = STAGES,
                  where: str = "quantize") -> list[dict[str, Any]]:
    """Keyword options by the stage that defines them (one dict per class of ``stages``);
    a name no stage defines fails with the nearest one."""
    out: list[dict[str, Any]] = [{} for _ in stages]
    owners = {f.name: i for i, cls in enumerate(stages) for f in fields(cls) if f.name != "version"}
    for key, value in options.items():
        if key not in owners:
            raise unknown_key(f"{where}()", key, sorted(owners))
        out[owners[key]][key] = value
    return out


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


def read_json(path: str | os.PathLike, what: str) -> Any:
    """A JSON file's content, or one sentence saying why it cannot be read."""
    path = Path(path)
    if not path.is_file():
        state = "is a folder" if path.is_dir() else "does not exist"
        raise ConfigError(f"{what} '{path}' {state}; expected a JSON file, check the path.")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{what} '{path}' is not valid UTF-8 JSON ({exc}).") from None
    except RecursionError:
        raise ConfigError(f"{what} '{path}' is nested too deeply to be a configuration; check the file.") from None


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
