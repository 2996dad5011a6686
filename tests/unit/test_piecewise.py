"""Running a model piece by piece gives what one run gives, and keeps only tensors still needed."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from int8kit.runtime.piecewise import PiecewiseRun

RNG = np.random.default_rng(5)


def _residual() -> onnx.ModelProto:
    """x -> Relu -> a; b = a * k; c = a + b (a residual); y = Sigmoid(c)."""
    k = numpy_helper.from_array(np.full((1, 3, 1, 1), 0.5, np.float32), "k")
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Mul", ["a", "k"], ["b"]),
         helper.make_node("Add", ["a", "b"], ["c"]), helper.make_node("Sigmoid", ["c"], ["y"])],
        "residual", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [k])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _whole(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(["y"], {"x": x})[0]


def test_pieces_give_the_whole_run_and_drop_what_nobody_reads():
    model = _residual()
    batches = [{"x": RNG.standard_normal((2, 3, 4, 4)).astype(np.float32)} for _ in range(3)]
    run = PiecewiseRun(model, batches)
    first = run.pending_for(["b"])
    assert first == [0, 1]  # Relu and Mul; nothing else is needed for b
    run.commit(first, run.run(first))
    assert run.held == {"a", "b"}  # x has no reader left; a is still read by the Add
    rest = run.pending_for(["y"])
    assert rest == [2, 3]
    out = run.run(rest, fetch=["y"])
    run.commit(rest, out)
    for b, y in zip(batches, out["y"]):
        np.testing.assert_allclose(y, _whole(model, b["x"]), rtol=1e-6)
    assert run.held == set()


def test_a_replaced_initializer_counts_for_that_run_only():
    model = _residual()
    x = np.abs(RNG.standard_normal((1, 3, 4, 4))).astype(np.float32)
    run = PiecewiseRun(model, [{"x": x}])
    nodes = run.pending_for(["y"])
    doubled = run.run(nodes, fetch=["c"], initializers={"k": np.full((1, 3, 1, 1), 1.0, np.float32)})["c"][0]
    plain = run.run(nodes, fetch=["c"])["c"][0]
    np.testing.assert_allclose(doubled, 2 * x, rtol=1e-6)
    np.testing.assert_allclose(plain, 1.5 * x, rtol=1e-6)


def test_outer_scope_reads_of_a_subgraph_are_inputs_of_its_node():
    then = helper.make_graph([helper.make_node("Identity", ["a"], ["t"])], "then", [],
                             [helper.make_tensor_value_info("t", TensorProto.FLOAT, None)])
    other = helper.make_graph([helper.make_node("Neg", ["a"], ["e"])], "else", [],
                              [helper.make_tensor_value_info("e", TensorProto.FLOAT, None)])
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Constant", [], ["flag"], value_int=1),
         helper.make_node("Cast", ["flag"], ["cond"], to=TensorProto.BOOL),
         helper.make_node("If", ["cond"], ["y"], then_branch=then, else_branch=other)],
        "branch", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    x = np.array([-1.0, 2.0], np.float32)
    run = PiecewiseRun(model, [{"x": x}])
    relu = run.pending_for(["a"])
    run.commit(relu, run.run(relu))
    assert run.held == {"a"}  # kept: the If's branches read it
    rest = run.pending_for(["y"])
    assert rest == [1, 2, 3]
    np.testing.assert_allclose(run.run(rest, fetch=["y"])["y"][0], [0.0, 2.0])
