"""Input domains of saturating consumers: constants as exporters write them."""

from __future__ import annotations

import numpy as np
import pytest
import onnx
from onnx import TensorProto, helper, numpy_helper

from int8kit.plan.domains import consumer_domain
from int8kit.plan.graph_facts import GraphFacts


def _clip_model(shape: tuple[int, ...]) -> onnx.ModelProto:
    """conv -> Clip(0, 6) whose bounds have ``shape`` (paddle2onnx writes [1], torch writes ())."""
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
        helper.make_node("Clip", ["c", "lo", "hi"], ["y"], name="relu6"),
    ]
    inits = [
        numpy_helper.from_array(np.ones((4, 4, 1, 1), np.float32), "w"),
        numpy_helper.from_array(np.zeros(shape, np.float32), "lo"),
        numpy_helper.from_array(np.full(shape, 6.0, np.float32), "hi"),
    ]
    graph = helper.make_graph(
        nodes, "clip", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 12)])


def test_clip_bounds_of_shape_one_give_the_clip_domain():
    for shape in ((), (1,)):
        assert consumer_domain(GraphFacts.of(_clip_model(shape)), "c") == (0.0, 6.0)


def test_clip_bounds_with_several_values_give_no_domain():
    assert consumer_domain(GraphFacts.of(_clip_model((2,))), "c") is None


def _hardswish_parts_model(offset: float = 3.0, clip_hi: float = 6.0, extra_reader: bool = False) -> onnx.ModelProto:
    """conv -> x * Clip(x + offset, 0, clip_hi) / 6: HardSwish as paddle2onnx writes it for opset 12."""
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
        helper.make_node("Add", ["c", "three"], ["shifted"], name="add"),
        helper.make_node("Clip", ["shifted", "lo", "hi"], ["gate"], name="clip"),
        helper.make_node("Mul", ["c", "gate"], ["prod"], name="mul"),
        helper.make_node("Div", ["prod", "six"], ["y"], name="div"),
    ]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)]
    if extra_reader:
        nodes.append(helper.make_node("Sigmoid", ["c"], ["s"], name="sig"))
        outputs.append(helper.make_tensor_value_info("s", TensorProto.FLOAT, None))
    inits = [
        numpy_helper.from_array(np.ones((4, 4, 1, 1), np.float32), "w"),
        numpy_helper.from_array(np.array([offset], np.float32), "three"),
        numpy_helper.from_array(np.array([0.0], np.float32), "lo"),
        numpy_helper.from_array(np.array([clip_hi], np.float32), "hi"),
        numpy_helper.from_array(np.array([6.0], np.float32), "six"),
    ]
    graph = helper.make_graph(
        nodes, "hswish_parts", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, 4, 4])], outputs, inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 12)])


def test_hardswish_written_as_add_clip_mul_has_the_hardswish_domain():
    assert consumer_domain(GraphFacts.of(_hardswish_parts_model()), "c") == (-3.0, np.inf)


def test_any_shift_and_top_give_the_zero_region_as_domain():
    # x * Clip(x + s, 0, t) is 0 exactly for x <= -s, whatever t
    assert consumer_domain(GraphFacts.of(_hardswish_parts_model(offset=2.0)), "c") == (-2.0, np.inf)
    assert consumer_domain(GraphFacts.of(_hardswish_parts_model(clip_hi=5.0)), "c") == (-3.0, np.inf)


def test_other_add_clip_mul_patterns_give_no_domain():
    # a reader outside the pattern sees the whole range; a negative shift has no zero region
    for model in (_hardswish_parts_model(extra_reader=True), _hardswish_parts_model(offset=-1.0)):
        assert consumer_domain(GraphFacts.of(model), "c") is None


def test_x_times_hardsigmoid_of_x_has_the_hardswish_domain():
    """PyTorch exports nn.Hardswish below opset 14 as x * HardSigmoid(x, alpha=1/6, beta=0.5)."""
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
         helper.make_node("HardSigmoid", ["c"], ["g"], name="hsig", alpha=1 / 6, beta=0.5),
         helper.make_node("Mul", ["c", "g"], ["y"], name="mul")],
        "x_hsig", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.ones((4, 4, 1, 1), np.float32), "w")],
    )
    domain = consumer_domain(GraphFacts.of(helper.make_model(graph)), "c")
    assert domain[0] == pytest.approx(-3.0) and domain[1] == np.inf


@pytest.mark.parametrize("override", [{"threshold": 8.0}, {"th_scale": 1.5}])
def test_a_wider_range_on_a_fused_clip_output_keeps_the_clip_bound(override):
    """The fused Clip(0, 6) is the QuantizeLinear's saturation: a user's threshold above 6 must not
    let values past 6 through."""
    import onnxruntime as ort

    from int8kit.calib.collect import collect
    from int8kit.emit.qdq import emit_qdq
    from int8kit.config import LayerOverride, QuantConfig
    from int8kit.plan.planner import candidate_tensors, plan

    model = _clip_model(())
    model.graph.node.append(helper.make_node("Conv", ["y", "w"], ["z"], name="conv2"))  # y gets a quantized reader
    model.graph.output[0].name = "z"
    model = onnx.shape_inference.infer_shapes(model)
    x = np.random.default_rng(0).uniform(0, 3, (32, 4, 4, 4)).astype(np.float32)  # conv sums reach 6-12
    stats = collect(model, x, tensors=candidate_tensors(model), progress=False)
    qplan = plan(model, stats, QuantConfig(th_method="max", stem_float=False, overrides={"y": LayerOverride(**override)}))
    assert "relu6" in qplan.fused and qplan.tensors["y"].hi == pytest.approx(6.0)
    qmodel = emit_qdq(model, qplan)
    qmodel.graph.output.append(helper.make_tensor_value_info("y", TensorProto.FLOAT, None))  # the dequantized y
    sess = ort.InferenceSession(qmodel.SerializeToString(), providers=["CPUExecutionProvider"])
    assert sess.run(["y"], {"x": x})[0].max() <= 6.0 + 1e-6
