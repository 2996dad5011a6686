"""The command line on the bundled demo model: every verb, outputs, and user errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from int8kit.cli import main
from int8kit.demo_data import demo_model_path, load_demo_data
from int8kit.errors import ConfigError
from int8kit.emit.records import read_calibration_table, read_quant_json, read_tensorrt_cache


@pytest.fixture(scope="module")
def demo_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    data = load_demo_data()
    np.save(root / "calib.npy", data["calib"][:128])
    np.save(root / "test.npy", data["test"][:200])
    np.save(root / "labels.npy", data["test_labels"][:200])
    return root, Path(demo_model_path())


def test_quantize_writes_every_output_and_leaves_input_alone(demo_files, capsys):
    root, model = demo_files
    before = model.read_bytes()
    out = root / "out"
    code = main(["quantize", str(model), "--data", str(root / "calib.npy"), "-o", str(out), "--per-channel", "--json", "--no-progress"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    stem = model.stem
    for name in ("_int8.onnx", "_fp32_optimized.onnx", "_quant.json", "_calibration_table.txt", "_trt_calib.cache"):
        assert (out / f"{stem}{name}").is_file()
    assert summary["quantized_tensors"] > 5
    assert model.read_bytes() == before
    onnx.checker.check_model(onnx.load(str(out / f"{stem}_int8.onnx")))
    table = read_calibration_table(out / f"{stem}_calibration_table.txt")
    cache = read_tensorrt_cache(out / f"{stem}_trt_calib.cache")
    doc = read_quant_json(out / f"{stem}_quant.json")
    assert set(table) <= set(doc["tensors"])
    assert set(cache) == set(table)
    assert not list(out.glob("*.tmp"))


def test_weights_are_per_channel_unless_per_tensor_is_asked(demo_files, capsys):
    root, model = demo_files
    stats = root / "granularity_stats.npz"
    assert main(["calibrate", str(model), "--data", str(root / "calib.npy"), "-o", str(stats), "--no-progress"]) == 0
    scales = {}
    for flag in ("", "--per-tensor"):
        out = root / f"granularity{flag}"
        assert main(["quantize", str(model), "--stats", str(stats), "-o", str(out), "--no-progress", *([flag] if flag else [])]) == 0
        doc = read_quant_json(out / f"{model.stem}_quant.json")
        scales[flag] = [np.size(t["scale"]) for t in doc["tensors"].values() if t["kind"] == "weight"]
    assert max(scales[""]) > 1 and max(scales["--per-tensor"]) == 1
    with pytest.raises(SystemExit) as exc:  # argparse: the two flags exclude each other
        main(["quantize", str(model), "--stats", str(stats), "-o", str(root / "x"), "--per-channel", "--per-tensor"])
    assert exc.value.code == 2


def test_th_binnum_with_stats_sums_bins_down_and_iterations_is_refused(demo_files, capsys):
    root, model = demo_files
    stats = root / "bins_stats.npz"
    assert main(["calibrate", str(model), "--data", str(root / "calib.npy"), "-o", str(stats), "--no-progress"]) == 0
    args = ["quantize", str(model), "--no-progress", "--th-method", "mse"]
    assert main(args + ["--stats", str(stats), "-o", str(root / "b1"), "--th-binnum", "1024"]) == 0
    assert main(args + ["--data", str(root / "calib.npy"), "-o", str(root / "b2"), "--th-binnum", "1024"]) == 0
    tables = [read_calibration_table(root / d / f"{model.stem}_calibration_table.txt") for d in ("b1", "b2")]
    assert tables[0] == tables[1]
    assert read_quant_json(root / "b1" / f"{model.stem}_quant.json")["config"]["calibration"]["bins"] == 1024
    capsys.readouterr()
    assert main(args + ["--stats", str(stats), "-o", str(root / "b3"), "--th-binnum", "4096"]) == 2
    assert "finer histograms than the statistics hold (2048" in capsys.readouterr().err
    assert main(args + ["--stats", str(stats), "-o", str(root / "b4"), "--iterations", "8"]) == 2
    assert "--iterations" in capsys.readouterr().err and not (root / "b4").exists()


def test_calibrate_then_quantize_from_stats_equals_one_shot(demo_files, capsys):
    root, model = demo_files
    stats = root / "stats.npz"
    assert main(["calibrate", str(model), "--data", str(root / "calib.npy"), "-o", str(stats), "--no-progress"]) == 0
    assert main(["quantize", str(model), "--stats", str(stats), "-o", str(root / "a"), "--th-method", "mse", "--no-progress"]) == 0
    assert main(["quantize", str(model), "--data", str(root / "calib.npy"), "-o", str(root / "b"), "--th-method", "mse", "--no-progress"]) == 0
    a = read_calibration_table(root / "a" / f"{model.stem}_calibration_table.txt")
    b = read_calibration_table(root / "b" / f"{model.stem}_calibration_table.txt")
    assert a == b


def test_eval_json_reports_accuracy_and_agreement(demo_files, capsys):
    root, model = demo_files
    out = root / "e"
    assert main(["quantize", str(model), "--data", str(root / "calib.npy"), "-o", str(out), "--no-progress"]) == 0
    capsys.readouterr()
    int8 = out / f"{model.stem}_int8.onnx"
    code = main(["eval", str(model), str(int8), "--data", str(root / "test.npy"), "--labels", str(root / "labels.npy"), "--json", "--no-progress"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    text = json.dumps(report)
    assert "agreement" in text and "cosine" in text


@pytest.mark.parametrize(
    "args, needle",
    [
        (["quantize", "missing.onnx", "--data", "x.npy"], "missing.onnx"),
        (["quantize", "{model}", "--data", "{root}/calib.npy", "--fp-layers", "conv_nope"], "conv_nope"),
        (["quantize", "{model}", "--data", "{root}/calib.npy", "--th-method", "klx"], "klx"),
        (["quantize", "{model}", "--data", "{root}/calib.npy", "--bitwidth", "17"], "bitwidth"),
        (["quantize", "{model}", "--data", "{root}/calib.npy", "--iterations", "100000"], "100000"),
        (["quantize", "{model}"], "--data"),
        (["optimize", "{model}", "--no-fuse", "nonexistent_layer", "-o", "{root}/o.onnx"], "nonexistent_layer"),
    ],
)
def test_user_errors_are_one_clear_line(demo_files, capsys, args, needle):
    root, model = demo_files
    args = [a.format(model=model, root=root) for a in args] + (["--no-progress"] if args[0] == "quantize" else [])
    code = main(args)
    err = capsys.readouterr().err
    assert code == 2
    assert needle in err
    assert "Traceback" not in err


def test_corrupt_model_is_reported(tmp_path, capsys):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"this is not a protobuf")
    np.save(tmp_path / "d.npy", np.zeros((4, 1, 28, 28), np.float32))
    code = main(["quantize", str(bad), "--data", str(tmp_path / "d.npy"), "--no-progress"])
    assert code == 2
    assert "bad.onnx" in capsys.readouterr().err


def test_demo_runs_and_prints_fp32_vs_int8(tmp_path, capsys):
    code = main(["demo", "-o", str(tmp_path / "demo"), "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0
    assert "FP32" in out and "INT8" in out and "accuracy" in out
    assert (tmp_path / "demo").is_dir()


def test_th_params_read_numbers_lists_and_aliases(demo_files, capsys):
    from int8kit.cli.options import apply_percentile, parse_th_params

    assert parse_th_params(["search_range=0.5,2", "r=(0.7, 1.3)", "n=3", "s=x,y"]) == {
        "search_range": [0.5, 2.0], "r": [0.7, 1.3], "n": 3, "s": "x,y"}
    assert apply_percentile({"th_method": "PERCENTILE9999"}, 99.9)["th_params"] == {"percentile": 99.9}
    with pytest.raises(ConfigError, match="--percentile sets the percentile of --th-method percentile, but the method is 'kl'"):
        apply_percentile({}, 99.9)
    root, model = demo_files
    out = root / "alias"
    assert main(["quantize", str(model), "--data", str(root / "calib.npy"), "-o", str(out), "--th-method", "PERCENTILE9999", "--no-progress"]) == 0
    config = read_quant_json(out / f"{model.stem}_quant.json")["config"]["quantization"]
    assert config["th_method"] == "percentile" and config["th_params"] == {"percentile": 99.99}


def test_bare_command_lists_the_verbs_and_sub_commands_name_their_choices(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    assert all(verb in out for verb in ("quantize", "calibrate", "eval", "lmdb", "convert"))
    for argv, choices in ((["lmdb"], "{create,info,refresh}"), (["data"], "{templates}")):
        with pytest.raises(SystemExit):
            main(argv)
        err = capsys.readouterr().err
        assert choices in err and "_cmd" not in err and "_verb" not in err  # no internal names


def test_quantize_names_its_float_layers_and_the_next_command(demo_files, capsys):
    root, model = demo_files
    assert main(["quantize", str(model), "--data", str(root / "calib.npy"), "-o", str(root / "nf"), "--no-progress",
                 "--no-latency-check"]) == 0
    out = capsys.readouterr().out
    assert "kept float (1):" in out and "stem conv on the model input" in out
    assert f"next: int8kit eval {model} {root / 'nf' / (model.stem + '_int8.onnx')}" in out
