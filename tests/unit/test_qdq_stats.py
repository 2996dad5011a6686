"""benchmarks/qdq_stats.py counts a compute layer as INT8 only when DequantizeLinear feeds it directly (and a
QuantizeLinear alone reads a conv's output)."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

_ROOT = Path(__file__).resolve().parents[2]
if str(_ROOT) not in sys.path:  # benchmarks/ lives at the repo root, outside the package
    sys.path.insert(0, str(_ROOT))

from benchmarks.qdq_stats import int8_share, ort_int8_compute  # noqa: E402


def _model() -> onnx.ModelProto:
    """x -> Q/DQ -> Conv A (weight through DQ) -> Q/DQ: INT8; DQ -> Pad -> Conv B: float; Conv C (float weight): float."""
    rng = np.random.default_rng(0)
    w_q = numpy_helper.from_array(rng.integers(-127, 127, (4, 3, 3, 3), dtype=np.int8), "w_q")
    w_f = numpy_helper.from_array(rng.normal(size=(2, 4, 1, 1)).astype(np.float32), "w_f")
    inits = [w_q, w_f,
             numpy_helper.from_array(np.array(0.02, np.float32), "s"),
             numpy_helper.from_array(np.array(0, np.uint8), "zp"),
             numpy_helper.from_array(np.array(0, np.int8), "wzp"),
             numpy_helper.from_array(np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64), "pads")]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["xq"]),
        helper.make_node("DequantizeLinear", ["xq", "s", "zp"], ["xd"]),
        helper.make_node("DequantizeLinear", ["w_q", "s", "wzp"], ["wd"]),
        helper.make_node("Conv", ["xd", "wd"], ["a"], pads=[1, 1, 1, 1], name="A"),
        helper.make_node("Pad", ["xd", "pads"], ["xp"]),
        helper.make_node("Conv", ["xp", "wd"], ["b"], name="B"),
        helper.make_node("QuantizeLinear", ["a", "s", "zp"], ["aq"]),  # A's output to one Q alone: QLinearConv
        helper.make_node("DequantizeLinear", ["aq", "s", "zp"], ["ad"]),
        helper.make_node("Conv", ["ad", "w_f"], ["c"], name="C"),
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("b", "c")], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_only_layers_fed_by_dequantize_count_as_int8() -> None:
    share = int8_share(_model(), {"x": np.zeros((2, 3, 8, 8), np.float32)})
    assert (share.layers, share.float_layers) == (3, 2)  # B sits behind a Pad, C has a float weight
    mac_a = 4 * 8 * 8 * 3 * 3 * 3  # out C*H*W x (in C x kernel), at batch 1
    mac_b = mac_a
    mac_c = 2 * 8 * 8 * 4
    assert share.macs == mac_a + mac_b + mac_c
    assert share.int8_macs == mac_a
    assert abs(share.int8_mac_fraction - mac_a / (mac_a + mac_b + mac_c)) < 1e-12


def _conv_to_quantize(bn_between: bool) -> onnx.ModelProto:
    """x -> Q/DQ -> Conv (DQ weight) [-> BatchNormalization] -> Q/DQ -> y."""
    w = numpy_helper.from_array(np.ones((4, 3, 1, 1), np.int8), "w_q")
    inits = [w, numpy_helper.from_array(np.array(0.02, np.float32), "s"),
             numpy_helper.from_array(np.array(0, np.uint8), "zp"),
             numpy_helper.from_array(np.array(0, np.int8), "wzp")]
    inits += [numpy_helper.from_array(np.full(4, v, np.float32), n) for n, v in
              (("g", 1.0), ("b", 0.0), ("m", 0.0), ("v", 1.0))]
    conv_out = "c" if bn_between else "n"
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "s", "zp"], ["xd"]),
             helper.make_node("DequantizeLinear", ["w_q", "s", "wzp"], ["wd"]),
             helper.make_node("Conv", ["xd", "wd"], [conv_out])]
    if bn_between:
        nodes.append(helper.make_node("BatchNormalization", ["c", "g", "b", "m", "v"], ["n"]))
    nodes += [helper.make_node("QuantizeLinear", ["n", "s", "zp"], ["nq"]),
              helper.make_node("DequantizeLinear", ["nq", "s", "zp"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_onnxruntime_runs_the_conv_in_int8_only_when_a_quantize_follows_it(tmp_path) -> None:
    for bn_between, expected in ((False, 1), (True, 0)):
        path = tmp_path / f"bn{bn_between}.onnx"
        onnx.save(_conv_to_quantize(bn_between), str(path))
        # a Conv with dequantized input and weight counts as INT8 only when, as onnxruntime needs, its
        # output goes to a QuantizeLinear: the counts agree with what onnxruntime runs
        assert int8_share(onnx.load(str(path)), {"x": np.zeros((1, 3, 4, 4), np.float32)}).float_layers == 1 - expected
        assert ort_int8_compute(path) == expected
