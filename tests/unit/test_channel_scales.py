"""Per-channel activation steps for tensors only depthwise convs read (plan/channel_scales.py)."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from int8kit.calib.collect import collect
from int8kit.emit.qdq import emit_qdq
from int8kit.plan.channel_scales import channel_steps, noise_reduction
from int8kit.config import QuantConfig
from int8kit.plan.planner import candidate_tensors, plan
from int8kit.plan.types import TensorQuant

RNG = np.random.default_rng(7)


def _activation(lo: float, hi: float) -> TensorQuant:
    scale = (hi - lo) / 255.0
    return TensorQuant("t", "activation", "uint8", np.float32(scale), np.uint8(round(-lo / scale)), lo=lo, hi=hi)


def test_steps_hold_every_channel_on_the_shared_grid_and_minimise_the_noise():
    tq = _activation(-0.375, 10.0)  # a HardSwish output: one-sided, a small negative part
    cmin = np.array([-0.375, -0.375, -0.2, 0.0, -0.375])
    cmax = np.array([12.0, 0.5, 3.0, 0.0, 1e-3])  # channel 0 exceeds the tensor's range, 3 is dead
    zero, steps = channel_steps(tq, cmin, cmax)
    hi, lo = np.minimum(cmax, tq.hi), np.maximum(cmin, tq.lo)
    assert np.all((255 - zero) * steps >= hi * (1 - 1e-6))  # no channel clipped beyond the tensor's range
    assert np.all(zero * steps >= -lo * (1 - 1e-6))
    assert steps[3] == pytest.approx(float(tq.scale))  # nothing to gain on a dead channel
    assert steps[1] < float(tq.scale) / 3  # the small channel gets a much finer step
    # brute force over every zero point: the same minimum of the summed squared steps
    costs = []
    for z in range(1, 255):
        s = np.maximum(hi / (255 - z), -lo / z)
        s = np.maximum(np.where(s > 0, s, float(tq.scale)), float(tq.scale) / 16)
        costs.append((np.sum(s**2), z))
    assert zero == min(costs)[1]
    assert noise_reduction(tq, steps) > 2.0


GAINS = np.array([1.0, 0.001, 0.01, 0.5, 0.003, 1.0, 0.05, 0.02], np.float32)  # channel ranges 1000x apart


def _hswish_then_depthwise(extra_reader: bool = False) -> onnx.ModelProto:
    """HardSwish -> depthwise conv -> conv; the depthwise weights undo the channels' range differences."""
    w1 = (RNG.standard_normal((8, 1, 3, 3)) / GAINS.reshape(8, 1, 1, 1) * 0.1).astype(np.float32)
    w2 = (RNG.standard_normal((4, 8, 1, 1)) * 0.3).astype(np.float32)
    nodes = [
        helper.make_node("HardSwish", ["x"], ["h"], name="hswish"),
        helper.make_node("Conv", ["h", "w1"], ["d"], name="dw", group=8, pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["d", "w2"], ["y"], name="pw_out"),
    ]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, 8, 8])]
    if extra_reader:
        nodes.append(helper.make_node("Sigmoid", ["h"], ["s"], name="other"))
        outputs.append(helper.make_tensor_value_info("s", TensorProto.FLOAT, ["N", 8, 8, 8]))
    graph = helper.make_graph(
        nodes, "hswish_dw", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8, 8, 8])], outputs,
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")],
    )
    return onnx.shape_inference.infer_shapes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))


def _data(n: int) -> np.ndarray:
    return (RNG.standard_normal((n, 8, 8, 8)) * 4 * GAINS.reshape(1, 8, 1, 1)).astype(np.float32)


def _run(model: onnx.ModelProto, x: np.ndarray, optimized_path: str | None = None) -> np.ndarray:
    opts = ort.SessionOptions()
    if optimized_path:
        opts.optimized_model_filepath = optimized_path
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"]).run(["y"], {"x": x})[0]


def test_depthwise_inputs_get_channel_steps_that_run_as_qlinearconv_and_cut_the_error(tmp_path):
    model = _hswish_then_depthwise()
    x = _data(64)
    stats = collect(model, x, tensors=candidate_tensors(model), progress=False)
    with_steps = plan(model, stats, QuantConfig(th_method="max"))
    without = plan(model, stats, QuantConfig(th_method="max", channel_scales=False))
    h = with_steps.tensors["h"]
    assert h.channel_step is not None and h.channel_step.shape == (8,) and without.tensors["h"].channel_step is None
    int8 = emit_qdq(model, with_steps)
    onnx.checker.check_model(int8, full_check=True)
    # one per-tensor QuantizeLinear after a per-channel float Mul (onnxruntime's per-axis Q is slow)
    assert not [n for n in int8.graph.node if n.op_type == "QuantizeLinear" and any(a.name == "axis" for a in n.attribute)]
    assert [n.name for n in int8.graph.node if n.op_type == "Mul"] == ["h_channel_gain"]
    fused = tmp_path / "fused.onnx"
    y = _run(model, x[:16])
    y_steps = _run(int8, x[:16], str(fused))
    kernels = [n for n in onnx.load(str(fused)).graph.node if n.op_type == "QLinearConv"]
    assert any(n.name.startswith("dw") for n in kernels), [n.name for n in kernels]  # the depthwise conv stays INT8
    y_tensor = _run(emit_qdq(model, without), x[:16])
    err_steps, err_tensor = np.abs(y_steps - y).mean(), np.abs(y_tensor - y).mean()
    assert err_steps < 0.5 * err_tensor, (err_steps, err_tensor)


def test_channel_steps_only_where_depthwise_convs_alone_read_a_float_ops_output():
    model = _hswish_then_depthwise(extra_reader=True)  # a Sigmoid reads the HardSwish output too
    x = _data(32)
    stats = collect(model, x, tensors=candidate_tensors(model), progress=False)
    assert plan(model, stats, QuantConfig(th_method="max")).tensors["h"].channel_step is None
    # TensorRT's explicit quantization has no per-channel activation steps
    model = _hswish_then_depthwise()
    stats = collect(model, x, tensors=candidate_tensors(model), progress=False)
    assert plan(model, stats, QuantConfig(th_method="max", signed_activations=True)).tensors["h"].channel_step is None


PW_GAINS = np.array([0.01, 1.0, 0.02, 0.05, 0.01, 0.03, 1.0, 0.02], np.float32)  # two wide channels, one per group of 4


@pytest.mark.parametrize("group", [1, 2])
def test_regular_conv_inputs_get_steps_at_most_twice_finer_and_a_smaller_error(group):
    """A pointwise conv shares one weight scale per output channel over its input columns, so the
    channel factors it absorbs stay within 2x; the conv still runs as QLinearConv."""
    # output channels 0-1 read input channels 0-3 when grouped, 2-3 read 4-7
    columns = np.arange(8).reshape(group, 8 // group).repeat(4 // group, axis=0)  # (4, 8 / group)
    w = (RNG.standard_normal((4, 8 // group)) / PW_GAINS[columns] * 0.05).astype(np.float32).reshape(4, 8 // group, 1, 1)
    graph = helper.make_graph(
        [helper.make_node("HardSwish", ["x"], ["h"], name="hswish"),
         helper.make_node("Conv", ["h", "w"], ["y"], name="pw", group=group)],
        "hswish_pw", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, 8, 8])], [numpy_helper.from_array(w, "w")],
    )
    model = onnx.shape_inference.infer_shapes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    x = (RNG.standard_normal((64, 8, 8, 8)) * 4 * PW_GAINS.reshape(1, 8, 1, 1)).astype(np.float32)
    stats = collect(model, x, tensors=candidate_tensors(model), progress=False)
    with_steps = plan(model, stats, QuantConfig(th_method="max"))
    h = with_steps.tensors["h"]
    assert h.channel_step is not None and float(h.channel_step.min()) == pytest.approx(float(h.scale) / 2, rel=1e-5)
    int8 = emit_qdq(model, with_steps)
    onnx.checker.check_model(int8, full_check=True)
    y = _run(model, x[:16])
    y_steps = _run(int8, x[:16])
    y_tensor = _run(emit_qdq(model, plan(model, stats, QuantConfig(th_method="max", channel_scales=False))), x[:16])
    err_steps, err_tensor = np.abs(y_steps - y).mean(), np.abs(y_tensor - y).mean()
    assert err_steps < 0.8 * err_tensor, (err_steps, err_tensor)
