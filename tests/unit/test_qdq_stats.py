"""benchmarks/qdq_stats.py counts a compute layer as INT8 only when DequantizeLinear feeds it directly."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

_ROOT = Path(__file__).resolve().parents[2]
if str(_ROOT) not in sys.path:  # benchmarks/ lives at the repo root, outside the package
    sys.path.insert(0, str(_ROOT))

from benchmarks.qdq_stats import int8_share  # noqa: E402


def _model() -> onnx.ModelProto:
    """x -> Q/DQ -> Conv A (weight through DQ): INT8; DQ -> Pad -> Conv B: float; Conv C (float weight): float."""
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
        helper.make_node("Conv", ["a", "w_f"], ["c"], name="C"),
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
