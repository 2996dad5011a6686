"""Input domains of saturating consumers: constants as exporters write them."""

from __future__ import annotations

import numpy as np
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
