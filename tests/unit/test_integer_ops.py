"""HardSwish between quantized tensors is written as an INT8 Add and Mul that onnxruntime fuses."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from int8kit.calib.collect import collect
from int8kit.emit.qdq import emit_qdq
from int8kit.plan.channel_scales import _MIN_NOISE_REDUCTION, _MIN_NOISE_REDUCTION_VS_INTEGER, noise_reduction
from int8kit.config import QuantConfig
from int8kit.plan.planner import candidate_tensors, plan

RNG = np.random.default_rng(7)


def _hardswish(form: str) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """c -> h in one of the forms exporters write."""
    if form == "op":
        return [helper.make_node("HardSwish", ["c"], ["h"], name="hswish")], []
    if form == "hardsigmoid":  # PyTorch below opset 14
        return [helper.make_node("HardSigmoid", ["c"], ["g"], name="hsig", alpha=1 / 6, beta=0.5),
                helper.make_node("Mul", ["c", "g"], ["h"], name="hswish")], []
    consts = [numpy_helper.from_array(np.array([v], np.float32), n) for n, v in (("three", 3), ("zero", 0), ("six", 6))]
    return [helper.make_node("Add", ["c", "three"], ["s"], name="add"),  # paddle2onnx below opset 14
            helper.make_node("Clip", ["s", "zero", "six"], ["g"], name="clip"),
            helper.make_node("Mul", ["c", "g"], ["m"], name="mul"),
            helper.make_node("Div", ["m", "six"], ["h"], name="hswish")], consts


def _conv_hswish_conv(gains: np.ndarray, depthwise: bool = False, expose_h: bool = True, form: str = "op") -> onnx.ModelProto:
    """x -> Conv (output channel c scaled by gains[c]) -> HardSwish -> h -> conv -> y (``h`` an output too if asked)."""
    c = gains.size
    w1 = RNG.standard_normal((c, 16, 3, 3))
    w1 = (w1 / np.linalg.norm(w1.reshape(c, -1), axis=1).reshape(c, 1, 1, 1) * 2 * gains.reshape(c, 1, 1, 1)).astype(np.float32)
    w2 = (RNG.standard_normal((c, 1, 3, 3) if depthwise else (4, c, 1, 1)) * 0.3).astype(np.float32)
    second = (helper.make_node("Conv", ["h", "w2"], ["y"], name="reader", group=c, pads=[1, 1, 1, 1]) if depthwise
              else helper.make_node("Conv", ["h", "w2"], ["y"], name="reader"))
    hswish, consts = _hardswish(form)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w1"], ["c"], name="producer", pads=[1, 1, 1, 1]), *hswish, second],
        "conv_hswish_conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16, 8, 8])],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in (["y", "h"] if expose_h else ["y"])],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2"), *consts],
    )
    return onnx.shape_inference.infer_shapes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))


def _run(model: onnx.ModelProto, x: np.ndarray, optimized_path: str | None = None) -> dict[str, np.ndarray]:
    opts = ort.SessionOptions()
    if optimized_path:
        opts.optimized_model_filepath = optimized_path
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return dict(zip(["y", "h"], sess.run(["y", "h"], {"x": x})))


@pytest.mark.parametrize("form", ["op", "hardsigmoid", "parts"])
def test_hardswish_runs_as_qlinearadd_and_qlinearmul_within_one_step_of_the_float_op(form, tmp_path):
    model = _conv_hswish_conv(np.ones(8, np.float32), form=form)
    x = RNG.standard_normal((64, 16, 8, 8)).astype(np.float32) * 2
    stats = collect(model, x, tensors=candidate_tensors(model), progress=False)
    integer = plan(model, stats, QuantConfig(th_method="max"))
    floating = plan(model, stats, QuantConfig(th_method="max", integer_hardswish=False))
    assert set(integer.integer_hardswish) == {"h"} and not floating.integer_hardswish
    int8 = emit_qdq(model, integer)
    onnx.checker.check_model(int8, full_check=True)
    assert not {"HardSwish", "HardSigmoid", "Clip", "Div"} & {n.op_type for n in int8.graph.node}
    fused = tmp_path / "fused.onnx"
    out_int = _run(int8, x[:16], str(fused))
    kernels = {n.op_type for n in onnx.load(str(fused)).graph.node}
    assert {"QLinearAdd", "QLinearMul"} <= kernels and "HardSigmoid" not in kernels, kernels
    out_float = _run(emit_qdq(model, floating), x[:16])
    step = float(integer.tensors["h"].scale)
    diff = np.abs(out_int["h"] - out_float["h"])
    assert diff.max() <= step * 1.01, (diff.max(), step)  # the gate's rounding moves h at most one step
    assert np.mean(diff > 0) < 0.2  # and rarely
    reference = _run(model, x[:16])["y"]
    err_int, err_float = np.abs(out_int["y"] - reference).mean(), np.abs(out_float["y"] - reference).mean()
    assert err_int < 1.1 * err_float, (err_int, err_float)


def test_channel_steps_after_a_hardswish_must_buy_more_when_they_keep_it_float():
    # one wide channel, seven 1.9x narrower: per-channel steps cut the noise 2.3x
    model = _conv_hswish_conv(np.array([1.0] + [1 / 1.9] * 7, np.float32), depthwise=True, expose_h=False)
    x = RNG.standard_normal((64, 16, 8, 8)).astype(np.float32) * 2
    stats = collect(model, x, tensors=candidate_tensors(model), progress=False)
    floating = plan(model, stats, QuantConfig(th_method="max", integer_hardswish=False))
    h = floating.tensors["h"]
    assert h.channel_step is not None
    assert _MIN_NOISE_REDUCTION < noise_reduction(h, h.channel_step) < _MIN_NOISE_REDUCTION_VS_INTEGER
    integer = plan(model, stats, QuantConfig(th_method="max"))
    assert integer.tensors["h"].channel_step is None and set(integer.integer_hardswish) == {"h"}
    # channels 100x apart: the steps are worth the float HardSwish
    wide = _conv_hswish_conv(np.array([1.0] + [0.01] * 7, np.float32), depthwise=True, expose_h=False)
    stats = collect(wide, x, tensors=candidate_tensors(wide), progress=False)
    kept = plan(wide, stats, QuantConfig(th_method="max"))
    assert kept.tensors["h"].channel_step is not None and not kept.integer_hardswish


def test_signed_storage_and_user_float_nodes_keep_the_float_hardswish():
    model = _conv_hswish_conv(np.ones(8, np.float32))
    x = RNG.standard_normal((32, 16, 8, 8)).astype(np.float32)
    stats = collect(model, x, tensors=candidate_tensors(model), progress=False)
    assert not plan(model, stats, QuantConfig(th_method="max", signed_activations=True)).integer_hardswish
    assert not plan(model, stats, QuantConfig(th_method="max", fp_layers=("hswish",))).integer_hardswish
