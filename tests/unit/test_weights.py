"""ARQ weight/bias quantization and conv output-channel grouping."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from int8kit.errors import ConfigError
from int8kit.weights.arq import quantize_bias, quantize_weight
from int8kit.weights.conv_group import group_channel_scales, weight_sse


def _np_reference(w: np.ndarray, axis: int | None, bits: int = 8):
    """Plain NumPy symmetric max-abs quantization, written independently of int8kit."""
    qmax = 2 ** (bits - 1) - 1
    if axis is None:
        scale = np.float32(np.abs(w).max() / qmax)
        return np.clip(np.rint(w / scale), -qmax, qmax), scale
    red = tuple(i for i in range(w.ndim) if i != axis)
    amax = np.abs(w).max(axis=red)
    scale = (amax / qmax).astype(np.float32)
    shape = [1] * w.ndim
    shape[axis] = -1
    return np.clip(np.rint(w / scale.reshape(shape)), -qmax, qmax), scale


@pytest.fixture
def conv_w():
    rng = np.random.default_rng(1)
    # channels of very different magnitude, as conv grouping is meant for
    mags = np.geomspace(0.01, 5.0, 16).astype(np.float32)
    return (rng.standard_normal((16, 3, 3, 3)).astype(np.float32) * mags[:, None, None, None]).astype(np.float32)


def test_per_tensor_matches_numpy(conv_w):
    q, s = quantize_weight(conv_w, axis=None)
    q_ref, s_ref = _np_reference(conv_w, None)
    assert q.dtype == np.int8 and s.dtype == np.float32 and s.shape == ()
    assert s == s_ref
    np.testing.assert_array_equal(q, q_ref)
    assert np.abs(q).max() == 127


@pytest.mark.parametrize("axis", [0, 1])
def test_per_channel_matches_numpy(conv_w, axis):
    # axis 1 is the ConvTranspose layout (C_in, C_out/group, kH, kW)
    w = conv_w if axis == 0 else np.ascontiguousarray(conv_w.transpose(1, 0, 2, 3))
    q, s = quantize_weight(w, axis=axis)
    q_ref, s_ref = _np_reference(w, axis)
    assert s.shape == (w.shape[axis],)
    np.testing.assert_array_equal(s, s_ref)
    np.testing.assert_array_equal(q, q_ref)
    # every channel reaches the top code: the grid is fully used
    assert np.all(np.abs(np.moveaxis(q, axis, 0)).reshape(w.shape[axis], -1).max(axis=1) == 127)


def test_zero_channel_gets_safe_scale():
    w = np.ones((3, 4), np.float32)
    w[1] = 0.0
    q, s = quantize_weight(w, axis=0)
    assert np.all(np.isfinite(s)) and np.all(s > 0)
    np.testing.assert_array_equal(q[1], 0)
    q0, s0 = quantize_weight(np.zeros((2, 2), np.float32), axis=None)
    assert s0 > 0 and not q0.any()


def test_denormal_channel_is_a_zero_channel_so_a_16_bit_bias_scale_stays_positive():
    w = np.ones((3, 4), np.float32)
    w[1] = np.float32(3e-40)  # denormal weights, as in one PP-OCRv4 rec channel
    q, s = quantize_weight(w, axis=0)
    assert s[1] == 1.0 and not q[1].any()
    bq, bs = quantize_bias(np.array([0.5, 0.25, -0.5]), 9.46e-05, s)  # a 16-bit input scale
    assert np.all(bs > 0) and np.all(np.abs(bq * bs - [0.5, 0.25, -0.5]) <= bs / 2 * 1.001)  # half an LSB


def test_low_bits_and_bad_inputs():
    w = np.linspace(-1, 1, 11, dtype=np.float32)
    q, s = quantize_weight(w, axis=None, bits=4)
    assert q.min() == -7 and q.max() == 7 and s == np.float32(1 / 7)
    with pytest.raises(ConfigError, match="bit width"):
        quantize_weight(w, axis=None, bits=1)
    with pytest.raises(ConfigError, match="out of range"):
        quantize_weight(w, axis=2)
    with pytest.raises(ConfigError, match="NaN"):
        quantize_weight(np.array([np.nan], np.float32), axis=None)


def test_channel_scales_override(conv_w):
    scales = np.full(16, 0.05, np.float32)
    q, s = quantize_weight(conv_w, axis=0, channel_scales=scales)
    np.testing.assert_array_equal(s, scales)
    np.testing.assert_array_equal(q, np.clip(np.rint(conv_w / np.float32(0.05)), -127, 127))
    with pytest.raises(ConfigError, match="one scale per channel"):
        quantize_weight(conv_w, axis=0, channel_scales=np.ones(3, np.float32))


def test_bias_scale_and_values():
    b = np.array([0.5, -0.25, 1.0], np.float32)
    ws = np.array([0.01, 0.02, 0.04], np.float32)
    q, s = quantize_bias(b, 0.1, ws)
    assert q.dtype == np.int32 and s.dtype == np.float32
    np.testing.assert_array_equal(s, np.float32(0.1) * ws)
    np.testing.assert_array_equal(q, np.rint(b.astype(np.float64) / s.astype(np.float64)))


def test_bias_clipping_warns_with_count(caplog):
    b = np.array([1e6, -1e6, 0.1], np.float32)
    with caplog.at_level(logging.WARNING, logger="int8kit.weights.arq"):
        q, _ = quantize_bias(b, 1e-4, np.float32(1e-4), name="conv1.bias")
    assert q[0] == 2**31 - 1 and q[1] == -(2**31)
    assert "conv1.bias" in caplog.text and "2 of 3" in caplog.text


def test_bias_no_warning_when_in_range(caplog):
    with caplog.at_level(logging.WARNING):
        quantize_bias(np.ones(2, np.float32), 0.1, np.ones(2, np.float32))
    assert not caplog.records


def test_conv_group_extremes_equal_per_tensor_and_per_channel(conv_w):
    _, s_tensor = quantize_weight(conv_w, axis=None)
    _, s_channel = quantize_weight(conv_w, axis=0)
    g1 = group_channel_scales(conv_w, 0, max_groups=1)
    np.testing.assert_array_equal(g1, np.full(16, s_tensor))
    gc = group_channel_scales(conv_w, 0, max_groups=16)
    np.testing.assert_array_equal(gc, s_channel)


def test_conv_group_error_between_extremes(conv_w):
    e_tensor = weight_sse(conv_w, quantize_weight(conv_w, axis=None)[1], None)
    e_channel = weight_sse(conv_w, quantize_weight(conv_w, axis=0)[1], 0)
    errors = [weight_sse(conv_w, group_channel_scales(conv_w, 0, max_groups=g), 0) for g in (1, 2, 4, 8, 16)]
    assert errors[0] == pytest.approx(e_tensor) and errors[-1] == pytest.approx(e_channel)
    assert e_channel < errors[2] < e_tensor
    # more groups allowed never makes the optimum worse
    assert all(a >= b for a, b in zip(errors[:-1], errors[1:-1]))


def test_conv_group_groups_are_contiguous_in_magnitude(conv_w):
    s = group_channel_scales(conv_w, 0, max_groups=3)
    assert 1 <= len(np.unique(s)) <= 3
    amax = np.abs(conv_w).reshape(16, -1).max(axis=1)
    order = np.argsort(amax)
    assert np.all(np.diff(s[order]) >= 0)  # groups follow the sorted magnitudes
    assert np.all(s * 127 >= amax * (1 - 1e-6))  # no channel saturates


def test_conv_group_axis1_and_many_channels():
    rng = np.random.default_rng(2)
    w = rng.standard_normal((4, 200, 3)).astype(np.float32) * rng.uniform(0.1, 3, (1, 200, 1)).astype(np.float32)
    s = group_channel_scales(w, 1, max_groups=4)
    assert s.shape == (200,) and len(np.unique(s)) <= 4
    q, s2 = quantize_weight(w, axis=1, channel_scales=s)
    assert np.abs(q).max() <= 127 and np.array_equal(s, s2)
    with pytest.raises(ConfigError, match="max_groups"):
        group_channel_scales(w, 1, max_groups=0)


@pytest.mark.parametrize("tiny_bias", [0.0, 1e-39])  # zero, and a denormal bias (PP-OCRv4 rec has one)
def test_a_pruned_channel_keeps_its_bias_under_a_wide_input_range(tiny_bias):
    """All-zero weights leave a channel only its bias; with the default zero-channel scale the
    bias step is the input scale, and a wide input range rounded a 0.7 bias to 0."""
    from onnx import TensorProto, helper, numpy_helper

    from int8kit.calib.collect import collect
    from int8kit.config import QuantConfig
    from int8kit.plan.planner import candidate_tensors, plan

    w = np.random.default_rng(0).normal(size=(4, 8, 1, 1)).astype(np.float32)
    w[2] = w[3] = 0.0
    b = np.array([0.1, -0.2, 0.7, tiny_bias], np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w", "b"], ["y"], name="conv")], "pruned",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8, 4, 4])], [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    data = (np.random.default_rng(1).normal(size=(16, 8, 4, 4)) * 1000).astype(np.float32)
    stats = collect(model, data, tensors=candidate_tensors(model), progress=False)
    bias = plan(model, stats, QuantConfig(th_method="max", stem_float=False)).tensors["b"]
    restored = np.asarray(bias.values, np.float64) * np.asarray(bias.scale, np.float64)
    assert abs(restored[2] - 0.7) < 1e-6 and abs(restored[3]) < 1e-6 and np.all(np.asarray(bias.scale) > 0)
