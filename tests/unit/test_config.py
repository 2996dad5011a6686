"""The configuration contract: one definition per option, frozen, validated, replayable bit for bit."""

from __future__ import annotations

import argparse
import dataclasses
import json

import pytest

import int8kit
from int8kit.cli import build_parser, main
from int8kit.config import CalibOptions, LayerOverride, QuantConfig, RunConfig, TuneOptions, field_default
from int8kit.errors import ConfigError


def _sub(verb: str) -> argparse.ArgumentParser:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices[verb]


def _flags(cls: type, field: dataclasses.Field) -> list[str]:
    meta = field.metadata
    named = [meta.get("flag"), meta.get("off_flag")]
    return [f for f in named if f] or ["--" + field.name.replace("_", "-")]


def test_config_is_frozen_validated_and_changed_by_copy():
    cfg = QuantConfig(th_method="mse", fp_layers=("conv_12",))
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.th_method = "kl"  # type: ignore[misc]
    cfg2 = cfg.replace(per_channel=False)
    assert (cfg.per_channel, cfg2.per_channel, cfg2.th_method, cfg2.fp_layers) == (True, False, "mse", ("conv_12",))
    with pytest.raises(ConfigError, match="did you mean 'per_channel'"):
        cfg.replace(per_chanel=False)
    with pytest.raises(ConfigError, match="bitwidth must be 8 to 16, got 4"):
        cfg.replace(bitwidth=4)
    assert hash(cfg) == hash(QuantConfig(th_method="mse", fp_layers="conv_12"))  # usable as a cache key
    assert QuantConfig(th_method="PERCENTILE9999").th_params == {"percentile": 99.99}  # an alias resolved once, at construction
    assert int8kit.QuantConfig is QuantConfig and int8kit.RunConfig is RunConfig  # the names the README uses


def test_every_config_round_trips_through_json():
    ov = {"conv1": {"th_method": "ifmr", "th_params": {"search_range": [0.8, 1.2]}}, "fc": {"float": True}}
    run = RunConfig(QuantConfig(th_method="percentile", th_params={"percentile": 99.9}, per_channel=False, overrides=ov,
                                fp_op_types=("Softmax",), skew_ratio=0.25),
                    CalibOptions(bins=1024, iterations=64), TuneOptions(bias_tuning=8))
    again = RunConfig.from_dict(json.loads(run.to_json()))
    assert again == run
    assert again.quant.overrides["conv1"] == LayerOverride(th_method="ifmr", th_params={"search_range": (0.8, 1.2)})
    with pytest.raises(ConfigError, match="unknown key 'th_metod'; did you mean 'th_method'"):
        QuantConfig.from_dict({"th_metod": "kl"})
    with pytest.raises(ConfigError, match="version 7"):
        RunConfig.from_dict({"version": 7})


@pytest.mark.parametrize("cls", [QuantConfig, CalibOptions, TuneOptions])
def test_the_quantize_command_line_is_built_from_the_config_fields(cls):
    parser = _sub("quantize")
    by_flag = {o: a for a in parser._actions for o in a.option_strings}
    for field in dataclasses.fields(cls):
        if not field.metadata.get("cli", True):
            continue
        for flag in _flags(cls, field):
            action = by_flag[flag]  # every option has its flag ...
            assert action.dest == field.name
            assert field.metadata["help"] in action.help or field.metadata.get("on_help") == action.help  # ... and its help
        default = field_default(cls, field.name)
        if field.type == "bool":  # an on/off flag sets the opposite of the default
            flag = field.metadata.get("off_flag") if default else (field.metadata.get("flag") or _flags(cls, field)[0])
            assert getattr(parser.parse_args(["m.onnx", flag]), field.name) is (not default)
    assert vars(parser.parse_args(["m.onnx"])).keys().isdisjoint(f.name for f in dataclasses.fields(cls))  # nothing typed


def test_api_keywords_are_the_config_fields(files):
    root, model = files
    with pytest.raises(ConfigError, match="unknown key 'skew_ration'; did you mean 'skew_ratio'"):
        int8kit.quantize(model, root / "calib.npy", output_dir=root / "o", skew_ration=0.3, progress=False)
    with pytest.raises(ConfigError, match="calibrate\\(\\) has an unknown key 'th_method'"):
        int8kit.calibrate(model, root / "calib.npy", th_method="kl", progress=False)


def test_a_saved_config_replays_the_run_bit_for_bit(files):
    root, model = files
    stats = int8kit.calibrate(model, root / "calib.npy", output=root / "s.npz", progress=False).path
    first = int8kit.quantize(model, stats=stats, output_dir=root / "a", th_method="mse", per_channel=False,
                             fp_layers="/fc/Gemm", skew_ratio=0.3, bins=1024, save_config=root / "a" / "config.json",
                             progress=False)
    saved = json.loads((root / "a" / "config.json").read_text())
    assert saved["quantization"]["th_method"] == "mse" and saved["calibration"]["bins"] == 1024
    replay = int8kit.quantize(model, stats=stats, config=root / "a" / "config.json", output_dir=root / "b", progress=False)
    default = int8kit.quantize(model, stats=stats, output_dir=root / "c", progress=False)
    assert replay.int8_model.read_bytes() == first.int8_model.read_bytes()
    assert default.int8_model.read_bytes() != first.int8_model.read_bytes()  # the replay used the file, not defaults
    assert replay.run_config == first.run_config
    from_record = int8kit.quantize(model, stats=stats, config=first.quant_json, output_dir=root / "d", progress=False)
    assert from_record.int8_model.read_bytes() == first.int8_model.read_bytes()  # a quant.json record replays too
    changed = int8kit.quantize(model, stats=stats, config=first.run_config.quant, per_channel=True, output_dir=root / "e",
                               progress=False)
    assert changed.config == first.config.replace(per_channel=True)  # keywords change the config given


def test_cli_save_config_and_config_replay(files, capsys):
    root, model = files
    calib = str(root / "calib.npy")
    assert main(["calibrate", str(model), "--data", calib, "-o", str(root / "s.npz"), "--no-progress"]) == 0
    args = ["quantize", str(model), "--stats", str(root / "s.npz"), "--no-progress"]
    assert main([*args, "-o", str(root / "a"), "--th-method", "PERCENTILE9999", "--per-tensor", "--no-bias-correction",
                 "--save-config", str(root / "run.json")]) == 0
    assert main([*args, "-o", str(root / "b"), "--config", str(root / "run.json")]) == 0
    assert (root / "a" / "net_int8.onnx").read_bytes() == (root / "b" / "net_int8.onnx").read_bytes()
    saved = RunConfig.load(root / "run.json")
    assert (saved.quant.th_method, saved.quant.th_params["percentile"], saved.quant.per_channel,
            saved.quant.bias_correction) == ("percentile", 99.99, False, False)
    # an option typed beside --config wins over the file; the others stay as the file says
    assert main([*args, "-o", str(root / "c"), "--config", str(root / "run.json"), "--per-channel",
                 "--save-config", str(root / "c.json")]) == 0
    changed = RunConfig.load(root / "c.json").quant
    assert changed == saved.quant.replace(per_channel=True)
    capsys.readouterr()
    (root / "bad.json").write_text('{"quantization": {"th_method": "kl", "per_chanel": false}}')
    assert main([*args, "-o", str(root / "d"), "--config", str(root / "bad.json")]) == 2
    assert "unknown key 'per_chanel'; did you mean 'per_channel'" in capsys.readouterr().err
    assert not (root / "d").exists()
