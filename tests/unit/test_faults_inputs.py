"""Wrong inputs are refused before any work instead of giving a wrong result: damaged statistics
files (naming the file and the tensor), float64 models, convert --compare arguments."""

from __future__ import annotations

import shutil

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import int8kit
from int8kit.calib.stats import Stats
from int8kit.demo_data import demo_model_path, load_demo_data
from int8kit.errors import CalibrationError, ConfigError, ModelError


@pytest.fixture()
def stats_file(tmp_path):
    model = tmp_path / "net.onnx"
    shutil.copy(demo_model_path(), model)
    np.save(tmp_path / "calib.npy", load_demo_data()["calib"][:8])
    path = tmp_path / "s.npz"
    int8kit.calibrate(model, tmp_path / "calib.npy", output=path, progress=False)
    return path


def _edited(path, **changes):
    with np.load(path, allow_pickle=False) as npz:
        data = {k: npz[k] for k in npz.files}
    for key, value in changes.items():
        data[key.replace("__", ".")] = value(data) if callable(value) else value
    np.savez(path, **data)
    return path


@pytest.mark.parametrize("changes, message", [
    ({"bins": np.int64(8192), "samples": np.int64(-5)}, "samples=-5"),
    ({"bins": np.int64(8192)}, "bins=8192, expected a power of two from 512 to 4096"),
    ({"bins": np.int64(1024)}, "tensor '.*histogram is int64 of shape \\(4096,\\), expected 2048"),
    ({"t0__counts": lambda d: d["t0.counts"][:100]}, "tensor '.*'.*shape \\(100,\\)"),
    ({"t0__counts": lambda d: -d["t0.counts"] - 1}, "negative count"),
    ({"t1__range": np.array([1.0, 5.0, -5.0])}, "min <= max"),
    ({"t0__range": np.array([np.nan, 0.0, 1.0])}, "edge > 0"),
    ({"names": lambda d: np.array([d["names"][0]] * d["names"].size)}, "distinct"),
])
def test_a_damaged_statistics_file_is_refused_naming_the_file_and_tensor(stats_file, changes, message):
    _edited(stats_file, **changes)
    with pytest.raises(CalibrationError, match=f"statistics file '.*s.npz'.*{message}.*re-run calibrate"):
        Stats.load(stats_file)


def _double_model(path) -> None:
    w = numpy_helper.from_array(np.ones((4, 3), np.float64), "w")
    node = helper.make_node("MatMul", ["x", "w"], ["y"])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.DOUBLE, [None, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.DOUBLE, [None, 3])], [w])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


def test_a_float64_model_is_refused_before_any_work(tmp_path):
    _double_model(tmp_path / "d.onnx")
    np.save(tmp_path / "x.npy", np.ones((8, 4), np.float64))
    with pytest.raises(ModelError, match="float64.*'x'.*float32"):
        int8kit.quantize(tmp_path / "d.onnx", tmp_path / "x.npy", output_dir=tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("options, message", [
    ({"samples": 0}, "--samples must be a positive whole number, got 0"),
    ({"tolerance": -1}, "--tolerance must be a non-negative number"),
    ({"tolerance": float("nan")}, "--tolerance must be a non-negative number"),
    ({"batch_size": 0}, "--batch must be a positive whole number"),
])
def test_convert_compare_arguments_are_checked_before_the_output_is_written(tmp_path, options, message):
    shutil.copy(demo_model_path(), tmp_path / "m.onnx")
    with pytest.raises(ConfigError, match=message):
        int8kit.convert(tmp_path / "m.onnx", output=tmp_path / "c.onnx", compare=True, **options)
    assert not (tmp_path / "c.onnx").exists()


def test_an_opset7_ir3_model_is_converted_as_promised(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    from int8kit.cli import main

    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.normal(size=(4, 3, 3, 3)).astype(np.float32), "w")
    b = numpy_helper.from_array(rng.normal(size=4).astype(np.float32), "b")
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["y"])]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8]),  # IR 3: weights are inputs too
              helper.make_tensor_value_info("w", TensorProto.FLOAT, [4, 3, 3, 3]),
              helper.make_tensor_value_info("b", TensorProto.FLOAT, [4])]
    graph = helper.make_graph(nodes, "g", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])], [w, b])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 7)])
    model.ir_version = 3
    onnx.save(model, tmp_path / "old.onnx")
    np.save(tmp_path / "x.npy", rng.random((8, 3, 8, 8), dtype=np.float32))
    assert main(["quantize", str(tmp_path / "old.onnx"), "--data", str(tmp_path / "x.npy"), "-o", str(tmp_path / "out"),
                 "--quantize-stem", "--no-progress"]) == 0
    int8 = onnx.load(tmp_path / "out" / "old_int8.onnx")
    assert [vi.name for vi in int8.graph.input] == ["x"] and any(n.op_type == "QuantizeLinear" for n in int8.graph.node)
    session = ort.InferenceSession(str(tmp_path / "out" / "old_int8.onnx"), providers=["CPUExecutionProvider"])
    assert session.run(None, {"x": np.load(tmp_path / "x.npy")[:1]})[0].shape == (1, 4, 8, 8)


def test_a_statistics_file_that_inflates_to_gigabytes_is_refused_unread(stats_file):
    import tracemalloc
    import zipfile

    with zipfile.ZipFile(stats_file, "a", zipfile.ZIP_DEFLATED) as zf, zf.open("padding.npy", "w", force_zip64=True) as out:
        np.lib.format.write_array_header_1_0(out, {"descr": "<f8", "fortran_order": False, "shape": (40 << 20,)})
        zeros = bytes(1 << 20)
        for _ in range(320):  # 320 MiB inflated, ~300 KB on disk
            out.write(zeros)
    tracemalloc.start()
    with pytest.raises(CalibrationError, match="inflates beyond 64 MiB .*padding.npy"):
        Stats.load(stats_file)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 100 << 20, f"{peak >> 20} MiB"
