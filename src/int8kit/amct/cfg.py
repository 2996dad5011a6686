"""AMCT's simple configuration file (``.cfg``, AMCTConfig in protobuf text format), parsed through
protobuf from int8kit's own ``amct.proto``, and turned into config.json settings layer by layer:
an ``override_layer_configs`` entry wins over an ``override_layer_types`` entry, which wins over
``common_config``; ``skip_layers`` and ``skip_layer_types`` turn quantization off."""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Any

import numpy as np
from google.protobuf import text_format
from google.protobuf.message import Message

from int8kit.amct.config_file import (
    ACT_DEFAULTS, ARQ_DEFAULTS, SNQ_DEFAULTS, AmctSettings, LayerSettings, check_activation, check_bn_update, check_weights,
)
from int8kit.amct.protos import AMCTConfig
from int8kit.errors import ConfigError


def read_cfg(path: str | os.PathLike) -> Message:
    """The AMCTConfig message of a .cfg file, or one sentence saying where it is wrong."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"simple config file '{p}' does not exist; pass the path of a .cfg file.")
    try:
        return text_format.Parse(p.read_text(encoding="utf-8"), AMCTConfig())
    except UnicodeDecodeError:
        raise ConfigError(f"simple config file '{p}' is not UTF-8 text; pass an AMCTConfig in protobuf text format.") from None
    except text_format.ParseError as err:
        fields = [f.name for f in AMCTConfig.DESCRIPTOR.fields]
        word = str(err).rsplit('"', 2)[-2] if str(err).count('"') >= 2 else ""
        close = difflib.get_close_matches(word.rsplit(".", 1)[-1], fields, n=1) if word else []
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ConfigError(f"simple config file '{p}' is not a valid AMCTConfig: {err}{hint}; fix that line "
                          "(fields: " + ", ".join(fields) + ").") from None


def _calibration(where: str, cc: Message, base: LayerSettings | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """(activation params, weight params) of one CalibrationConfig, checked with config.json's ranges."""
    if cc.HasField("arq_quantize") and cc.HasField("snq_quantize"):
        raise ConfigError(f"{where} sets both arq_quantize and snq_quantize; a layer's weights take one of them.")
    act = dict(base.act) if base else dict(ACT_DEFAULTS)
    if cc.HasField("ifmr_quantize"):
        f = cc.ifmr_quantize
        act = {"num_bits": f.num_bits, "max_percentile": _f32(f.max_percentile),
               "min_percentile": _f32(f.min_percentile),
               "search_range": [_f32(f.search_range_start), _f32(f.search_range_end)], "search_step": _f32(f.search_step)}
        if f.HasField("with_offset"):
            act["with_offset"] = f.with_offset
    wts = dict(base.wts) if base else dict(ARQ_DEFAULTS)
    if cc.HasField("arq_quantize"):
        wts = {"wts_algo": "arq_quantize", "channel_wise": cc.arq_quantize.channel_wise,
               "num_bits": cc.arq_quantize.num_bits}
    elif cc.HasField("snq_quantize"):
        s = cc.snq_quantize
        wts = {**SNQ_DEFAULTS, "channel_wise": s.channel_wise, "num_bits": s.num_bits, "max_iteration": s.max_iteration,
               "min_distance": _f32(s.min_distance), "init_algo": s.init_algo}
    return check_activation(f"{where}.ifmr_quantize", act), check_weights(f"{where}.{wts['wts_algo']}", wts)


def _f32(value: float) -> float:
    """A float field as the shortest decimal that reads back as the same float32 (0.7, not 0.699999988)."""
    short = float(f"{value:.7g}")
    return short if np.float32(short) == np.float32(value) else float(value)


def settings_from_cfg(cfg: Message, layers: dict[str, str], fusable: list[str], source: str,
                      others: dict[str, str] | None = None) -> AmctSettings:
    """config.json settings from an AMCTConfig; ``layers`` maps each quantizable layer to its type
    (the Caffe layer type for Caffe models, the ONNX op type for ONNX models), ``others`` the
    model's layers without weights (``skip_layers`` may name them: they stay float)."""
    others = others or {}
    names = list(layers) + list(others)
    types = sorted(set(layers.values()))
    for name in cfg.skip_layers:
        if name not in names:
            close = difflib.get_close_matches(name, names, n=1)
            raise ConfigError(f"{source}: skip_layers names '{name}', which is not a layer of the model"
                              + (f"; did you mean '{close[0]}'?" if close else "."))
    for kind in cfg.skip_layer_types:
        if kind not in types and kind not in others.values():
            close = difflib.get_close_matches(kind, sorted(set(types) | set(others.values())), n=1)
            raise ConfigError(f"{source}: skip_layer_types names '{kind}', which is not a layer type of the model"
                              + (f"; did you mean '{close[0]}'?" if close else "."))
    for kind in (o.layer_type for o in cfg.override_layer_types):
        if kind not in types:
            close = difflib.get_close_matches(kind, types, n=1)
            raise ConfigError(f"{source}: override_layer_types names '{kind}', which is not a type of any quantizable "
                              f"layer (the model has {', '.join(types)})" + (f"; did you mean '{close[0]}'?" if close else "."))
    by_type: dict[str, Message] = {}
    for o in cfg.override_layer_types:
        if o.layer_type in by_type:
            raise ConfigError(f"{source}: override_layer_types gives layer type '{o.layer_type}' twice; keep one.")
        by_type[o.layer_type] = o.calibration_config
    by_name: dict[str, Message] = {}
    for o in cfg.override_layer_configs:
        if o.layer_name not in layers:
            close = difflib.get_close_matches(o.layer_name, names, n=1)
            raise ConfigError(f"{source}: override_layer_configs names '{o.layer_name}', which is not a quantizable "
                              "layer of the model" + (f"; did you mean '{close[0]}'?" if close else "."))
        if o.layer_name in by_name:
            raise ConfigError(f"{source}: override_layer_configs gives layer '{o.layer_name}' twice; keep one.")
        by_name[o.layer_name] = o.calibration_config
    common = LayerSettings(*(True, *_calibration(f"{source}: common_config", cfg.common_config))) \
        if cfg.HasField("common_config") else LayerSettings()
    out: dict[str, LayerSettings] = {}
    for name, kind in layers.items():
        skip = name in cfg.skip_layers or kind in cfg.skip_layer_types
        if name in by_name:
            act, wts = _calibration(f"{source}: override_layer_configs '{name}'", by_name[name], common)
        elif kind in by_type:
            act, wts = _calibration(f"{source}: override_layer_types '{kind}'", by_type[kind], common)
        else:
            act, wts = common.act, common.wts
        out[name] = LayerSettings(quant_enable=not skip, act=dict(act), wts=dict(wts))
    for name, kind in others.items():  # layers without weights (pooling, Add...) named or typed: kept float
        if name in cfg.skip_layers or kind in cfg.skip_layer_types:
            out[name] = LayerSettings(quant_enable=False, plain=True)
    for name in cfg.skip_fusion_layers:
        if name not in fusable:
            close = difflib.get_close_matches(name, fusable, n=1)
            raise ConfigError(f"{source}: skip_fusion_layers names '{name}', which is not a layer that can be fused"
                              + (f"; did you mean '{close[0]}'?" if close else "."))
    bn = {}
    if cfg.HasField("bn_update_config"):
        b = cfg.bn_update_config
        bn = {"bn_update_iterations": b.bn_update_iterations, "bn_moving_average_fraction": _f32(b.bn_moving_average_fraction),
              "bn_dump_dir": b.bn_dump_dir}
    if cfg.batch_num < 1:
        raise ConfigError(f"{source}: batch_num must be greater than 0, got {cfg.batch_num}.")
    return AmctSettings(batch_num=cfg.batch_num, activation_offset=cfg.activation_offset, do_fusion=cfg.do_fusion,
                        skip_fusion_layers=tuple(cfg.skip_fusion_layers), update_bn=cfg.update_bn,
                        bn_update_config=check_bn_update(f"{source}: bn_update_config", bn), layers=out)
