"""Tests for int8kit.graph.graphview (the helper the planner and emitter reuse)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from int8kit.graph.graphview import GraphView, outer_scope_names
from int8kit.graph.optimize import optimize_model
from int8kit.runtime.session import make_session


def _if_model() -> onnx.ModelProto:
    """x -> Identity -> t; an If whose branches read t from the outer scope."""
    then_g = helper.make_graph(
        [helper.make_node("Relu", ["t"], ["o1"])], "then", [], [helper.make_tensor_value_info("o1", TensorProto.FLOAT, None)]
    )
    else_g = helper.make_graph(
        [helper.make_node("Neg", ["t"], ["o2"])], "else", [], [helper.make_tensor_value_info("o2", TensorProto.FLOAT, None)]
    )
    nodes = [
        helper.make_node("Identity", ["x"], ["t"], name="id"),
        helper.make_node("If", ["cond"], ["y"], name="branch", then_branch=then_g, else_branch=else_g),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3]), helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def test_subgraph_reads_count_as_consumers() -> None:
    model = _if_model()
    view = GraphView(model.graph)
    assert outer_scope_names(model.graph.node[1].attribute[0].g) == {"t"}
    assert [n.name for n in view.consumers_of("t")] == ["branch"]
    assert view.sole_consumer("t").name == "branch"


def test_identity_removal_renames_inside_subgraphs() -> None:
    model = _if_model()
    out, _ = optimize_model(model)
    assert [n.op_type for n in out.graph.node] == ["If"]
    x = np.array([[1.0, -2.0, 3.0], [-4.0, 5.0, -6.0]], dtype=np.float32)
    for cond in (True, False):
        feeds = {"x": x, "cond": np.array(cond)}
        ref = make_session(model).run(None, feeds)[0]
        got = make_session(out).run(None, feeds)[0]
        np.testing.assert_array_equal(got, ref)


def test_edits_are_queued_until_commit() -> None:
    nodes = [
        helper.make_node("Relu", ["x"], ["a"], name="r1"),
        helper.make_node("Relu", ["a"], ["b"], name="r2"),
        helper.make_node("Sigmoid", ["b"], ["y"], name="s"),
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
        initializer=[numpy_helper.from_array(np.ones(2, np.float32), "w")],
    )
    view = GraphView(graph)
    r2 = view.node_by_name("r2")
    view.replace_input("b", "a")
    view.remove_node(r2)
    view.insert_after(view.node_by_name("r1"), helper.make_node("Neg", ["a"], ["n"], name="neg"))
    assert len(graph.node) == 3  # nothing written yet
    assert view.producer("b") is None and [n.name for n in view.consumers_of("a")] == ["s", "neg"]
    view.commit()
    assert [n.name for n in graph.node] == ["r1", "neg", "s"]
    assert view.is_constant("w") and view.get_array("w").tolist() == [1.0, 1.0]
    assert view.unique_name("r1") == "r1_1" and view.unique_name("fresh") == "fresh"
    assert view.rank("x") == 1 and view.rank("a") is None
