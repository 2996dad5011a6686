"""Bad models, data, labels and statistics: one clear line and exit code 2, never a traceback."""

from __future__ import annotations

import shutil

import numpy as np
import onnx
import pytest

from int8kit.cli import main
from int8kit.demo_data import demo_model_path, load_demo_data


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad")
    model = root / "net.onnx"
    shutil.copy(demo_model_path(), model)
    data = load_demo_data()
    np.save(root / "calib.npy", data["calib"][:32])
    np.save(root / "test.npy", data["test"][:16])
    np.save(root / "labels.npy", data["test_labels"][:16])
    assert main(["quantize", str(model), "--data", str(root / "calib.npy"), "-o", str(root / "q"), "--no-progress"]) == 0
    return root, model


def _write(root, name, make):
    path = root / name
    if not path.exists():
        make(path)
    return path


@pytest.mark.parametrize("case, needle", [
    ("requantize", "already quantized"),
    ("fp16", "float16"),
    ("truncated_npy", "truncated"),
    ("bad_header_npy", "not a readable .npy"),
    ("complex_npy", "real-valued"),
    ("stats_is_npy", "not an int8kit statistics file"),
    ("nan_fp32_outputs", "NaN/Inf"),
    ("labels_out_of_range", "is not a class"),
    ("labels_bool", "expected integer class indices"),
    ("labels_str", "expected integer class indices"),
    ("other_int8_model", "takes inputs"),
])
def test_bad_input_is_one_clear_line(files, capsys, case, needle):
    root, model = files
    calib, test, int8 = root / "calib.npy", root / "test.npy", root / "q" / "net_int8.onnx"
    x = np.load(calib)

    def fp16(path):
        m = onnx.load(str(model))
        for t in m.graph.initializer:
            if t.data_type == onnx.TensorProto.FLOAT:
                arr = onnx.numpy_helper.to_array(t).astype(np.float16)
                t.CopyFrom(onnx.numpy_helper.from_array(arr, t.name))
        onnx.save(m, str(path))

    def other(path):  # same output name, another input name
        m = onnx.load(str(int8))
        old = m.graph.input[0].name
        m.graph.input[0].name = "pixels"
        for n in m.graph.node:
            n.input[:] = ["pixels" if i == old else i for i in n.input]
        onnx.save(m, str(path))

    args = {
        "requantize": ["quantize", str(int8), "--data", str(calib), "-o", str(root / "rq")],
        "fp16": ["quantize", str(_write(root, "half.onnx", fp16)), "--data", str(calib), "-o", str(root / "h")],
        "truncated_npy": ["calibrate", str(model), "--data", str(_write(root, "trunc.npy", lambda p: p.write_bytes(calib.read_bytes()[:-100])))],
        "bad_header_npy": ["calibrate", str(model), "--data", str(_write(root, "hdr.npy", lambda p: p.write_bytes(calib.read_bytes()[:12] + b"{'descr': '<f4', 'sha" + calib.read_bytes()[33:])))],
        "complex_npy": ["calibrate", str(model), "--data", str(_write(root, "c.npy", lambda p: np.save(p, x.astype(np.complex64))))],
        "stats_is_npy": ["quantize", str(model), "--stats", str(calib), "-o", str(root / "s")],
        "nan_fp32_outputs": ["eval", str(model), str(int8), "--data", str(_write(root, "huge.npy", lambda p: np.save(p, np.full_like(x[:4], 3e38)))), "--no-latency"],
        "labels_out_of_range": ["eval", str(model), str(int8), "--data", str(test), "--labels", str(_write(root, "l10.npy", lambda p: np.save(p, np.full(16, 10)))), "--no-latency"],
        "labels_bool": ["eval", str(model), str(int8), "--data", str(test), "--labels", str(_write(root, "lb.npy", lambda p: np.save(p, np.ones(16, bool)))), "--no-latency"],
        "labels_str": ["eval", str(model), str(int8), "--data", str(test), "--labels", str(_write(root, "ls.npy", lambda p: np.save(p, np.array(["cat"] * 16)))), "--no-latency"],
        "other_int8_model": ["eval", str(model), str(_write(root, "other.onnx", other)), "--data", str(test), "--no-latency"],
    }[case]
    assert main(args + ["--no-progress"]) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err
    assert err.count("\n") == 1, err  # one line


def test_folded_layer_names_are_explained_before_calibration(files, capsys):
    root, model = files
    assert main(["inspect", str(model)]) == 0
    listing = capsys.readouterr().out
    assert "/stem/stem.1/BatchNormalization" in listing.split("Folded or removed")[1]  # listed as folded...
    assert "/stem/stem.0/Conv" in listing.split("Folded or removed")[0]  # ...into a layer the options take
    args = ["quantize", str(model), "--data", str(root / "missing.npy"), "-o", str(root / "f"),
            "--fp-layers", "/stem/stem.1/BatchNormalization", "--no-progress"]
    assert main(args) == 2  # the data path is never opened: the name fails first
    err = capsys.readouterr().err
    assert "folded away" in err and "/stem/stem.0/Conv" in err


@pytest.mark.parametrize("kwargs, needle", [
    ({"per_channel": "no"}, "per_channel"), ({"bins": "2048"}, "bins"), ({"fp_layers": [1]}, "fp_layers"),
    ({"th_params": [1]}, "th_params"), ({"batch_size": True}, "batch_size"), ({"skew_ratio": float("nan")}, "skew_ratio"),
])
def test_api_arguments_of_the_wrong_type_are_config_errors(files, kwargs, needle):
    import int8kit

    root, model = files
    with pytest.raises(int8kit.errors.ConfigError, match=needle):
        int8kit.quantize(model, root / "calib.npy", output_dir=root / "api", progress=False, **kwargs)
    assert int8kit.quantize(model, root / "calib.npy", output_dir=root / "api", progress=False,
                            fp_layers="/fc/Gemm").plan.float_nodes["/fc/Gemm"] == "--fp-layers"  # one string: comma list


def test_per_layer_errors_from_a_one_shot_generator_match_a_list(files):
    """A generator is read once by the output comparison; the per-layer pass gets the kept
    first samples again instead of an empty stream (which read as 'no error anywhere')."""
    import int8kit

    root, model = files
    x = np.load(root / "test.npy")

    def batches():
        for i in range(0, len(x), 4):
            yield {"image": x[i:i + 4]}

    int8 = root / "q" / "net_int8.onnx"
    a = int8kit.evaluate(model, int8, batches(), per_layer=True, latency=False, progress=False)
    b = int8kit.evaluate(model, int8, list(batches()), per_layer=True, latency=False, progress=False)
    errors = [e.relative_error for e in a.layers]
    assert max(errors) > 0 and errors == [e.relative_error for e in b.layers]


def test_deeply_nested_json_in_th_param_and_quant_json_is_one_line(files, capsys):
    root, model = files
    deep = "[" * 100_000 + "]" * 100_000
    assert main(["quantize", str(model), "--data", str(root / "calib.npy"), "-o", str(root / "o"), "--th-method", "ifmr",
                 "--th-param", f"search_range={deep}", "--no-progress"]) == 2
    assert "nested too deeply" in capsys.readouterr().err
    (root / "q.json").write_text(deep)
    from int8kit.emit.records import read_quant_json
    from int8kit.errors import ConfigError

    with pytest.raises(ConfigError, match="nested too deeply"):
        read_quant_json(root / "q.json")
