"""``eval --profile``: onnxruntime's own profiler, per op type of the graph it runs, FP32 against INT8."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import int8kit
from int8kit.evaluate.op_profile import op_table, profile_ops


def _conv_net(path) -> str:
    """x -> Conv -> Relu -> Conv -> y, big enough that every kernel takes measurable time."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((16, 16, 3, 3)).astype(np.float32) * 0.1, n) for n in ("wa", "wb")]
    nodes = [helper.make_node("Conv", ["x", "wa"], ["a"], name="conv_a", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["a"], ["ar"], name="relu_a"),
             helper.make_node("Conv", ["ar", "wb"], ["y"], name="conv_b", pads=[1, 1, 1, 1])]
    graph = helper.make_graph(nodes, "net", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16, 32, 32])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 16, 32, 32])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return str(path)


@pytest.fixture()
def pair(tmp_path):
    model = _conv_net(tmp_path / "net.onnx")
    calib = np.random.default_rng(1).standard_normal((16, 16, 32, 32)).astype(np.float32)
    np.save(tmp_path / "calib.npy", calib)
    int8 = int8kit.quantize(model, calib, output=tmp_path / "net_int8.onnx", stem_float=False, progress=False,
                            check_latency=False)
    return model, str(int8.int8_model), calib


def test_the_profile_counts_the_ops_onnxruntime_runs_after_its_fusions(pair):
    model, int8, calib = pair
    fp32_ops, int8_ops = profile_ops([model, int8], {"x": calib[:1]}, runs=5, warmup=2)
    assert sum(n for n, _ in fp32_ops.values()) >= 2 and "QLinearConv" not in fp32_ops
    assert int8_ops["QLinearConv"][0] == 2  # both convs fused into integer kernels, each counted once
    # a whole microsecond is the profiler's grain: a tiny op may read 0, the model as a whole may not
    assert all(us >= 0 for _, us in (*fp32_ops.values(), *int8_ops.values()))
    assert sum(us for _, us in fp32_ops.values()) > 0 and sum(us for _, us in int8_ops.values()) > 0
    table = op_table({"FP32": fp32_ops, "INT8": int8_ops}, {"FP32": 100.0, "INT8": 50.0})
    assert "QLinearConv" in table and "2 / " in table and "0.500" in table  # the wall ratio row


def test_eval_profile_prints_the_table_and_puts_it_in_the_report(pair, tmp_path, capsys):
    from int8kit.cli import main

    model, int8, _ = pair
    report = tmp_path / "report.html"
    assert main(["eval", model, int8, "--data", str(tmp_path / "calib.npy"), "--profile", "--no-progress",
                 "--report", str(report)]) == 0
    out = capsys.readouterr().out
    assert "where onnxruntime spends the time" in out and "QLinearConv" in out and "total (kernels)" in out
    html = report.read_text()  # the report carries the same table
    assert "Where onnxruntime spends the time" in html and "<td class=\"name\">QLinearConv</td>" in html


def test_openvino_profiles_op_types_with_the_precision_they_ran_in(pair):
    pytest.importorskip("openvino", reason="OpenVINO profile test needs openvino (pip install openvino)")
    model, int8, calib = pair
    fp32_ops, int8_ops = profile_ops([model, int8], {"x": calib[:1]}, runs=5, warmup=2, runtime="openvino")
    assert fp32_ops and int8_ops and all(us >= 0 for _, us in (*fp32_ops.values(), *int8_ops.values()))
    # OpenVINO runs the QDQ model's convs as integer convolutions
    assert any(op.startswith("Convolution") and ("(I8)" in op or "(U8)" in op) for op in int8_ops), int8_ops
    assert not any("(I8)" in op or "(U8)" in op for op in fp32_ops if op.startswith("Convolution")), fp32_ops
