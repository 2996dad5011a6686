"""Input domains of saturating consumers, including HardSwish written out as a gated product."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from int8kit.calib.collect import collect
from int8kit.emit.qdq import emit_qdq
from int8kit.plan.config import LayerOverride, QuantConfig
from int8kit.plan.domains import consumer_domain
from int8kit.plan.graph_facts import GraphFacts
from int8kit.plan.planner import candidate_tensors, plan

RNG = np.random.default_rng(3)


def _const(name: str, value: float) -> onnx.TensorProto:
    # shape [1], as paddle2onnx writes its helper constants
    return numpy_helper.from_array(np.array([value], np.float32), name)


def _model(gate: str, extra_reader: bool = False) -> onnx.ModelProto:
    """conv1 -> HardSwish spelled out (``x*Clip(x+3,0,6)/6`` or ``x*HardSigmoid(x)``) -> conv2."""
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c"], name="conv1", pads=[1, 1, 1, 1])]
    if gate == "clip":
        nodes += [
            helper.make_node("Add", ["c", "three"], ["c3"], name="plus3"),
            helper.make_node("Clip", ["c3", "zero", "six"], ["g"], name="relu6"),
            helper.make_node("Mul", ["c", "g"], ["p"], name="prod"),
            helper.make_node("Div", ["p", "six"], ["h"], name="div6"),
        ]
    else:
        nodes += [
            helper.make_node("HardSigmoid", ["c"], ["g"], name="hsig", alpha=1 / 6, beta=0.5),
            helper.make_node("Mul", ["g", "c"], ["h"], name="prod"),
        ]
    out = "h"
    if extra_reader:  # a residual Add reads c too: its negative values matter again
        nodes.append(helper.make_node("Add", ["h", "c"], ["r"], name="residual"))
        out = "r"
    nodes.append(helper.make_node("Conv", [out, "w2"], ["y"], name="conv2"))
    inits = [
        numpy_helper.from_array((RNG.standard_normal((8, 8, 3, 3)) * 1.0).astype(np.float32), "w1"),
        numpy_helper.from_array((RNG.standard_normal((4, 8, 1, 1)) * 0.3).astype(np.float32), "w2"),
        _const("three", 3.0), _const("zero", 0.0), _const("six", 6.0),
    ]
    graph = helper.make_graph(
        nodes, "hswish_decomposed", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits,
    )
    return onnx.shape_inference.infer_shapes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 12)]))


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})[0]


@pytest.mark.parametrize("gate", ["clip", "hardsigmoid"])
def test_decomposed_hardswish_input_gets_the_hardswish_domain(gate):
    model = _model(gate)
    assert consumer_domain(GraphFacts.of(model), "c") == (pytest.approx(-3.0), np.inf)
    x = RNG.standard_normal((64, 8, 8, 8)).astype(np.float32) * 2.0
    stats = collect(model, x, tensors=candidate_tensors(model), progress=False)
    assert stats.tensors["c"].hist.min < -6.0  # the raw conv output reaches far below -3
    qplan = plan(model, stats, QuantConfig(th_method="max"))
    c = qplan.tensors["c"]
    assert c.lo == pytest.approx(-3.0, abs=float(c.scale)) and c.hi == pytest.approx(stats.tensors["c"].hist.max, rel=1e-3)
    # exact for the gated product, and a finer grid: the INT8 model is closer than with the full range
    full = plan(model, stats, QuantConfig(th_method="max", overrides={"c": LayerOverride(threshold=stats.tensors["c"].hist.absmax)}))
    y = _run(model, x[:16])
    err_clamped = np.abs(_run(emit_qdq(model, qplan), x[:16]) - y).mean()
    err_full = np.abs(_run(emit_qdq(model, full), x[:16]) - y).mean()
    assert err_clamped < err_full


def test_no_domain_when_another_reader_sees_the_negative_values():
    assert consumer_domain(GraphFacts.of(_model("clip", extra_reader=True)), "c") is None


def test_no_domain_when_the_gate_has_a_nonzero_floor():
    model = _model("clip")
    for init in model.graph.initializer:
        if init.name == "zero":
            init.CopyFrom(_const("zero", 0.5))
    assert consumer_domain(GraphFacts.of(model), "c") is None


def test_clamped_tensors_use_mse_instead_of_a_divergence_method():
    """Inside its domain a saturating consumer passes every value on at full size (HardSwish's
    large inputs come out unchanged), so the rare large values count like any other: MSE weighs
    them, KL cuts them as a tail (PP-OCRv4 rec: exact match 0.40 -> 0.84)."""
    model = _model("clip")
    x = np.random.default_rng(5).standard_normal((64, 8, 8, 8)).astype(np.float32) * 2.0
    stats = collect(model, x, tensors=candidate_tensors(model), progress=False)
    for method in ("kl", "symkl", "jsd"):
        qplan = plan(model, stats, QuantConfig(th_method=method))
        assert qplan.tensors["c"].method == "mse"
        assert qplan.tensors["h"].method == method  # not clamped: the chosen method stays
    assert plan(model, stats, QuantConfig(th_method="percentile")).tensors["c"].method == "percentile"
    kl = plan(model, stats, QuantConfig(th_method="kl", overrides={"c": LayerOverride(th_method="kl")}))
    assert kl.tensors["c"].method == "kl"  # an explicit override still wins
