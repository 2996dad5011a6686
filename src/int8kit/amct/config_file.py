"""AMCT's ``config.json``: written by ``create_quant_config``, read and validated by ``init``, and
mapped onto int8kit's one QuantConfig (plus the graph optimiser's ``no_fuse``).

Every range is the manual's (its configuration tables); every error names the key, what was
expected, what came, and the nearest valid name where a name was misspelt.
"""

from __future__ import annotations

import difflib
import json
import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from int8kit.config import QuantConfig, TuneOptions
from int8kit.errors import ConfigError

# The manual's defaults (config.json tables 15-26); IFMR's own defaults are the same.
ACT_DEFAULTS: dict[str, Any] = {"num_bits": 8, "max_percentile": 0.999999, "min_percentile": 0.999999,
                                "search_range": [0.7, 1.3], "search_step": 0.01}
ARQ_DEFAULTS: dict[str, Any] = {"wts_algo": "arq_quantize", "channel_wise": True, "num_bits": 8}
SNQ_DEFAULTS: dict[str, Any] = {"wts_algo": "snq_quantize", "channel_wise": True, "num_bits": 4,
                                "max_iteration": 1000, "min_distance": 1e-10, "init_algo": "uniform"}
BN_DEFAULTS: dict[str, Any] = {"bn_moving_average_fraction": 0.5, "bn_update_iterations": 30, "bn_dump_dir": "tmp/bn_data"}
GLOBAL_KEYS = ("version", "batch_num", "activation_offset", "joint_quant", "do_fusion", "skip_fusion_layers",
               "update_bn", "bn_update_config")
LAYER_KEYS = ("quant_enable", "activation_quant_params", "weight_quant_params")
ACT_KEYS = (*ACT_DEFAULTS, "with_offset")
WTS_KEYS = tuple(SNQ_DEFAULTS)
WTS_ALGOS = ("arq_quantize", "snq_quantize")
INIT_ALGOS = ("uniform", "gaussian")


@dataclass(frozen=True)
class LayerSettings:
    """One layer's entry of config.json, validated."""

    quant_enable: bool = True
    act: dict[str, Any] = field(default_factory=lambda: dict(ACT_DEFAULTS))
    wts: dict[str, Any] = field(default_factory=lambda: dict(ARQ_DEFAULTS))
    plain: bool = False  # a layer without weights (pooling, softmax...) that skip_layers keeps float


@dataclass(frozen=True)
class AmctSettings:
    """A whole config.json, validated."""

    batch_num: int = 1
    activation_offset: bool = True
    do_fusion: bool = True
    skip_fusion_layers: tuple[str, ...] = ()
    update_bn: bool = False
    bn_update_config: dict[str, Any] = field(default_factory=lambda: dict(BN_DEFAULTS))
    layers: dict[str, LayerSettings] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The config.json document, in the manual's layout."""
        doc: dict[str, Any] = {"version": 1, "batch_num": self.batch_num, "activation_offset": self.activation_offset,
                               "do_fusion": self.do_fusion, "skip_fusion_layers": list(self.skip_fusion_layers)}
        if self.update_bn:
            doc["update_bn"] = True
            doc["bn_update_config"] = dict(self.bn_update_config)
        for name, ls in self.layers.items():
            doc[name] = {"quant_enable": False} if ls.plain else {
                "quant_enable": ls.quant_enable, "activation_quant_params": dict(ls.act), "weight_quant_params": dict(ls.wts)}
        return doc


def dump(settings: AmctSettings) -> str:
    return json.dumps(settings.to_json(), indent=4) + "\n"


# ---------------------------------------------------------------- checks


def _nearest(key: str, names: list[str]) -> str:
    close = difflib.get_close_matches(key, names, n=1, cutoff=0.5) or [n for n in names if n.startswith(str(key))][:1]
    return f"; did you mean '{close[0]}'?" if close else ""


def check_bool(where: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{where} must be true or false, got {value!r}.")
    return value


def check_int(where: str, value: Any, lo: int, hi: int, hint: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not lo <= value <= hi:
        raise ConfigError(f"{where} must be a whole number {hint}, got {value!r}.")
    return int(value)


def _float(where: str, value: Any, ok, hint: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or not ok(float(value)):
        raise ConfigError(f"{where} must be a number {hint}, got {value!r}.")
    return float(value)


def _keys(where: str, raw: Any, allowed: tuple[str, ...]) -> Mapping[str, Any]:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where} must be an object like {{\"{allowed[0]}\": ...}}, got {raw!r}.")
    for key in raw:
        if key not in allowed:
            raise ConfigError(f"{where} has an unknown key '{key}'{_nearest(key, list(allowed)) or '; accepted: ' + ', '.join(allowed) + '.'}")
    return raw


def check_activation(where: str, raw: Any) -> dict[str, Any]:
    """activation_quant_params (an object, or the list of one object the SNQ sample uses)."""
    if isinstance(raw, list):
        if len(raw) != 1:
            raise ConfigError(f"{where} must be one object (or a list of one), got a list of {len(raw)}.")
        raw = raw[0]
    raw = _keys(where, raw, ACT_KEYS)
    out = {**ACT_DEFAULTS, **raw}
    out["num_bits"] = check_int(f"{where}.num_bits", out["num_bits"], 8, 16, "from 8 to 16 (8 or 12 recommended)")
    for key in ("max_percentile", "min_percentile"):
        out[key] = _float(f"{where}.{key}", out[key], lambda v: 0.5 < v <= 1.0, "in (0.5, 1] (0.999999 recommended)")
    rng = out["search_range"]
    if (not isinstance(rng, (list, tuple)) or len(rng) != 2 or
            not all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in rng) or not 0 < rng[0] < rng[1]):
        raise ConfigError(f"{where}.search_range must be two numbers 0 < start < end (e.g. [0.7, 1.3]), got {rng!r}.")
    out["search_range"] = [float(rng[0]), float(rng[1])]
    width = rng[1] - rng[0]
    out["search_step"] = _float(f"{where}.search_step", out["search_step"], lambda v: 0 < v <= width * (1 + 1e-9),
                                f"in (0, {width:g}] (search_range end - start; 0.01 recommended)")
    if "with_offset" in out:
        check_bool(f"{where}.with_offset", out["with_offset"])
    return out


def check_weights(where: str, raw: Any) -> dict[str, Any]:
    """weight_quant_params: arq_quantize (8-bit) or snq_quantize (4-bit) with their parameters."""
    raw = _keys(where, raw, WTS_KEYS)
    algo = raw.get("wts_algo", "arq_quantize")
    if algo not in WTS_ALGOS:
        raise ConfigError(f"{where}.wts_algo must be one of {', '.join(WTS_ALGOS)}, got {algo!r}{_nearest(str(algo), list(WTS_ALGOS))}")
    snq = algo == "snq_quantize"
    if not snq:
        extra = [k for k in raw if k not in ARQ_DEFAULTS]
        if extra:
            raise ConfigError(f"{where}.{extra[0]} is an snq_quantize parameter, but wts_algo is arq_quantize; "
                              "drop it or set wts_algo to snq_quantize.")
    out = {**(SNQ_DEFAULTS if snq else ARQ_DEFAULTS), **raw}
    check_bool(f"{where}.channel_wise", out["channel_wise"])
    bits = 4 if snq else 8
    if out["num_bits"] != bits or isinstance(out["num_bits"], bool):
        raise ConfigError(f"{where}.num_bits must be {bits} for {algo} (uniform weights are 8-bit, snq 4-bit), "
                          f"got {out['num_bits']!r}.")
    if snq:
        out["max_iteration"] = check_int(f"{where}.max_iteration", out["max_iteration"], 500, 2000, "from 500 to 2000")
        out["min_distance"] = _float(f"{where}.min_distance", out["min_distance"], lambda v: 1e-10 <= v <= 1e-3,
                                     "from 1e-10 to 1e-3")
        if out["init_algo"] not in INIT_ALGOS:
            raise ConfigError(f"{where}.init_algo must be one of {', '.join(INIT_ALGOS)}, got {out['init_algo']!r}"
                              f"{_nearest(str(out['init_algo']), list(INIT_ALGOS))}")
    return out


def check_bn_update(where: str, raw: Any) -> dict[str, Any]:
    raw = _keys(where, raw, tuple(BN_DEFAULTS))
    out = {**BN_DEFAULTS, **raw}
    out["bn_moving_average_fraction"] = _float(f"{where}.bn_moving_average_fraction", out["bn_moving_average_fraction"],
                                               lambda v: 0 < v < 1, "in (0, 1) (0.5 recommended)")
    out["bn_update_iterations"] = check_int(f"{where}.bn_update_iterations", out["bn_update_iterations"], 1, 999,
                                       "in (0, 1000) (30 recommended)")
    if not isinstance(out["bn_dump_dir"], str) or not out["bn_dump_dir"]:
        raise ConfigError(f"{where}.bn_dump_dir must be a folder path, got {out['bn_dump_dir']!r}.")
    return out


def _names(where: str, raw: Any) -> tuple[str, ...]:
    if not isinstance(raw, list) or not all(isinstance(v, str) for v in raw):
        raise ConfigError(f"{where} must be a list of layer names, got {raw!r}.")
    return tuple(raw)


def parse_settings(doc: Any, layers: list[str], fusable: list[str], source: str = "config.json",
                   others: tuple[str, ...] = ()) -> AmctSettings:
    """Validate a config.json document against the model's quantizable ``layers``, the layers
    that can be fused (``skip_fusion_layers``) and its ``others`` (layers without weights, which
    may appear only as ``{"quant_enable": false}``: kept float)."""
    if not isinstance(doc, Mapping):
        raise ConfigError(f"{source} must hold a JSON object of global keys and layer names, got {type(doc).__name__}.")
    if doc.get("version", 1) != 1:
        raise ConfigError(f"{source}: version must be 1 (the only version), got {doc['version']!r}.")
    batch_num = check_int(f"{source}: batch_num", doc.get("batch_num", 1), 1, 2**31 - 1, "greater than 0")
    skip_fusion = _names(f"{source}: skip_fusion_layers", doc.get("skip_fusion_layers", []))
    for name in skip_fusion:
        if name not in fusable:
            raise ConfigError(f"{source}: skip_fusion_layers names '{name}', which is not a layer of the model that "
                              f"can be fused{_nearest(name, fusable) or ''}")
    update_bn = check_bool(f"{source}: update_bn", doc.get("update_bn", False))
    per_layer: dict[str, LayerSettings] = {}
    for key, raw in doc.items():
        if key in GLOBAL_KEYS:
            continue
        if key in others:
            if raw != {"quant_enable": False}:
                raise ConfigError(f"{source}: layer '{key}' has no weights to quantize; only {{\"quant_enable\": false}} "
                                  f"(keep it float) applies to it, got {raw!r}.")
            per_layer[key] = LayerSettings(quant_enable=False, plain=True)
            continue
        if key not in layers:
            hint = _nearest(key, layers + list(GLOBAL_KEYS))
            raise ConfigError(f"{source} names layer '{key}', which is not a quantizable layer of the model"
                              f"{hint or '; quantizable layers: ' + ', '.join(layers[:8]) + (' ...' if len(layers) > 8 else '') + '.'}")
        raw = _keys(f"{source}: layer '{key}'", raw, LAYER_KEYS)
        per_layer[key] = LayerSettings(
            quant_enable=check_bool(f"{source}: layer '{key}'.quant_enable", raw.get("quant_enable", True)),
            act=check_activation(f"{source}: layer '{key}'.activation_quant_params", raw.get("activation_quant_params", {})),
            wts=check_weights(f"{source}: layer '{key}'.weight_quant_params", raw.get("weight_quant_params", {})),
        )
    return AmctSettings(
        batch_num=batch_num,
        activation_offset=check_bool(f"{source}: activation_offset", doc.get("activation_offset", True)),
        do_fusion=check_bool(f"{source}: do_fusion", doc.get("do_fusion", True)),
        skip_fusion_layers=skip_fusion,
        update_bn=update_bn,
        bn_update_config=check_bn_update(f"{source}: bn_update_config", doc.get("bn_update_config", {})),
        layers=per_layer,
    )


# ---------------------------------------------------------------- onto the core


def _ifmr_params(act: dict[str, Any]) -> dict[str, Any]:
    return {"max_percentile": act["max_percentile"], "min_percentile": act["min_percentile"],
            "search_range": tuple(act["search_range"]), "search_step": act["search_step"]}


def to_quant_config(settings: AmctSettings, inputs: dict[str, str], source: str = "config.json") -> QuantConfig:
    """The QuantConfig that quantizes as ``settings`` say; ``inputs`` maps each quantizable layer
    to its input tensor (where the layer's activation parameters apply).

    AMCT's choices become explicit core options: IFMR on every activation (no per-tensor method
    rules), offsets only where activation_offset / with_offset ask (no skew rule), and no
    int8kit-only rewrites (bias correction, per-channel activation steps, integer HardSwish), so the
    record file alone rebuilds the model (``convert_model``)."""
    enabled = {n: ls for n, ls in settings.layers.items() if ls.quant_enable}
    bits = {ls.act["num_bits"] for ls in enabled.values()} or {8}
    if len(bits) > 1:
        raise ConfigError(f"{source}: activation num_bits differ between layers ({', '.join(map(str, sorted(bits)))}); "
                          "int8kit quantizes every activation at one width: give all layers the same num_bits.")
    snq = {n for n, ls in enabled.items() if ls.wts["wts_algo"] == "snq_quantize"}
    snq_params = {(ls.wts["init_algo"], ls.wts["max_iteration"], ls.wts["min_distance"]) for n, ls in enabled.items() if n in snq}
    if len(snq_params) > 1:
        raise ConfigError(f"{source}: snq_quantize layers differ in init_algo/max_iteration/min_distance; int8kit runs "
                          "SNQ with one set of them: give all snq layers the same values.")
    overrides: dict[str, dict[str, Any]] = {}
    owner: dict[str, str] = {}
    for name, ls in enabled.items():
        act = ls.act
        if _ifmr_params(act) != _ifmr_params(ACT_DEFAULTS) or "with_offset" in act:
            tensor = inputs[name]
            entry = {"th_method": "ifmr", "th_params": _ifmr_params(act)}
            if "with_offset" in act:
                entry["with_offset"] = act["with_offset"]
            if tensor in overrides and overrides[tensor] != entry:
                raise ConfigError(f"{source}: layers '{owner[tensor]}' and '{name}' read the same tensor '{tensor}' but "
                                  "give it different activation_quant_params; give both the same.")
            overrides[tensor], owner[tensor] = entry, name
    for name, ls in enabled.items():
        ov = overrides.setdefault(name, {}) if (not ls.wts["channel_wise"] or (snq and name not in snq)) else None
        if ov is not None and not ls.wts["channel_wise"]:
            ov["per_channel"] = False
        if ov is not None and snq and name not in snq:
            ov["weight_algo"] = "arq"
    options: dict[str, Any] = dict(
        th_method="ifmr", th_params=_ifmr_params(ACT_DEFAULTS), method_rules=False, skew_ratio=0.0,
        activation_offset=settings.activation_offset, bitwidth=bits.pop(), bias_correction=False,
        channel_scales=False, integer_hardswish=False, stem_float=False,  # the config decides, as in AMCT
        # quant_enable false, or left out of the file; and layers without weights skip_layers named
        fp_layers=tuple(n for n in inputs if n not in enabled) + tuple(n for n, ls in settings.layers.items() if ls.plain),
        overrides={k: v for k, v in overrides.items() if v},
    )
    if snq:
        init, iterations, distance = snq_params.pop()
        options.update(weight_algo="snq", weight_bits=4, snq_init=init, snq_iterations=iterations,
                       snq_min_distance=distance, snq_keep_ends=False)
    return QuantConfig(**options)


def to_tune_options(settings: AmctSettings) -> TuneOptions:
    """update_bn and its bn_update_config as the core's tuning options."""
    bn = settings.bn_update_config
    return TuneOptions(update_bn=settings.update_bn, bn_update_iterations=bn["bn_update_iterations"],
                       bn_moving_average_fraction=bn["bn_moving_average_fraction"], bn_dump_dir=bn["bn_dump_dir"])
