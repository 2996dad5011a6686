"""numerics.quantize/dequantize against onnx.reference QuantizeLinear/DequantizeLinear."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

from int8kit.errors import ConfigError
from int8kit.numerics import MIN_SCALE, dequantize, quantize, scale_zero_point

_TP = {"int8": TensorProto.INT8, "uint8": TensorProto.UINT8, "int16": TensorProto.INT16, "uint16": TensorProto.UINT16}
_NP = {"int8": np.int8, "uint8": np.uint8, "int16": np.int16, "uint16": np.uint16}


def _qdq_model(shape, dtype: str, nscale: int, axis: int | None):
    """A model computing (QuantizeLinear(x), DequantizeLinear(QuantizeLinear(x)))."""
    sshape = [] if nscale == 1 else [nscale]
    attrs = {} if axis is None else {"axis": axis}
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["q"], **attrs),
        helper.make_node("DequantizeLinear", ["q", "s", "zp"], ["y"], **attrs),
    ]
    graph = helper.make_graph(
        nodes,
        "qdq",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape)),
            helper.make_tensor_value_info("s", TensorProto.FLOAT, sshape),
            helper.make_tensor_value_info("zp", _TP[dtype], sshape),
        ],
        [helper.make_tensor_value_info("q", _TP[dtype], list(shape)), helper.make_tensor_value_info("y", TensorProto.FLOAT, list(shape))],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])


def _reference(x, s, zp, dtype, axis):
    ev = ReferenceEvaluator(_qdq_model(x.shape, dtype, np.asarray(s).size, axis))
    return ev.run(None, {"x": x, "s": np.asarray(s, np.float32), "zp": np.asarray(zp, _NP[dtype])})


@pytest.mark.parametrize("dtype", ["int8", "uint8", "int16", "uint16"])
def test_per_tensor_matches_onnx_including_ties_and_saturation(dtype):
    x = np.array([-1e6, -2.5, -1.5, -0.5, 0.0, 0.5, 1.5, 2.5, 3.5, 126.5, 127.5, 1e6], dtype=np.float32)
    zp = 3 if dtype.startswith("u") else -2
    q_ref, y_ref = _reference(x, np.float32(1.0), zp, dtype, None)
    q = quantize(x, np.float32(1.0), zp, dtype)
    assert q.dtype == q_ref.dtype
    np.testing.assert_array_equal(q, q_ref)
    np.testing.assert_array_equal(dequantize(q, np.float32(1.0), zp), y_ref)


def test_ties_round_half_to_even():
    q = quantize(np.array([0.5, 1.5, 2.5, -0.5, -1.5, -2.5], np.float32), 1.0, 0, "int8")
    np.testing.assert_array_equal(q, [0, 2, 2, 0, -2, -2])


def test_saturation_to_dtype_range():
    q = quantize(np.array([-1000.0, 1000.0], np.float32), 1.0, 0, "int8")
    np.testing.assert_array_equal(q, [-128, 127])
    u = quantize(np.array([-5.0, 300.0], np.float32), 1.0, 0, "uint8")
    np.testing.assert_array_equal(u, [0, 255])


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_per_axis_matches_onnx(axis):
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((3, 4, 5)) * 4).astype(np.float32)
    n = x.shape[axis]
    s = rng.uniform(0.01, 0.1, n).astype(np.float32)
    zp = rng.integers(-10, 10, n).astype(np.int8)
    q_ref, y_ref = _reference(x, s, zp, "int8", axis)
    q = quantize(x, s, zp, "int8", axis=axis)
    np.testing.assert_array_equal(q, q_ref)
    np.testing.assert_array_equal(dequantize(q, s, zp, axis=axis), y_ref)


def test_per_axis_without_axis_or_wrong_length_raises():
    x = np.zeros((2, 3), np.float32)
    with pytest.raises(ConfigError, match="no axis"):
        quantize(x, np.ones(3, np.float32), 0, "int8")
    with pytest.raises(ConfigError, match="one scale per channel"):
        quantize(x, np.ones(3, np.float32), 0, "int8", axis=0)
    with pytest.raises(ConfigError, match="not supported"):
        quantize(x, 1.0, 0, "int7")


def test_int32_bias_range_is_exact():
    x = np.array([2.0**30 + 1, -(2.0**31) - 10], dtype=np.float64)
    q = quantize(x, 1.0, 0, "int32")
    assert q.dtype == np.int32
    np.testing.assert_array_equal(q, [2**30 + 1, -(2**31)])


def test_scale_zero_point_symmetric():
    s, zp = scale_zero_point(-2.0, 1.0, "int8", symmetric=True)
    assert s.dtype == np.float32 and zp == 0
    assert s == np.float32(2.0 / 127)
    s, zp = scale_zero_point(0.0, 5.1, "uint8", symmetric=True)
    assert zp == 0 and s == np.float32(5.1 / 255)
    s, _ = scale_zero_point(-3.0, 3.0, "int16", symmetric=True)
    assert s == np.float32(3.0 / 32767)


def test_scale_zero_point_asymmetric_represents_zero_exactly():
    s, zp = scale_zero_point(-1.0, 3.0, "uint8", symmetric=False)
    assert s == np.float32(4.0 / 255)
    assert zp == 64  # rint(0 - (-1) / (4/255)) = rint(63.75)
    assert dequantize(quantize(np.float32(0.0), s, zp, "uint8"), s, zp) == 0.0
    # a range not containing 0 is widened to include it
    s2, zp2 = scale_zero_point(2.0, 4.0, "uint8", symmetric=False)
    assert zp2 == 0 and s2 == np.float32(4.0 / 255)


def test_scale_never_zero_and_bad_ranges_raise():
    s, zp = scale_zero_point(0.0, 0.0, "int8", symmetric=True)
    assert s == MIN_SCALE and s > 0 and zp == 0
    s, _ = scale_zero_point(0.0, 0.0, "uint8", symmetric=False)
    assert s > 0
    with pytest.raises(ConfigError, match="lo > hi"):
        scale_zero_point(1.0, -1.0, "int8", symmetric=True)
    with pytest.raises(ConfigError, match="not finite"):
        scale_zero_point(0.0, float("inf"), "int8", symmetric=True)
