"""fold_pads: a constant zero Pad before a Conv becomes the Conv's pads, with identical outputs."""

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from int8kit.graph.optimize import optimize_model


def _model(pad_value: float = 0.0) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.normal(size=(4, 1, 3, 3)).astype(np.float32), "w")
    pads = numpy_helper.from_array(np.array([0, 0, 0, 0, 0, 0, 1, 1], dtype=np.int64), "pads")
    value = numpy_helper.from_array(np.array(pad_value, dtype=np.float32), "value")
    nodes = [
        helper.make_node("Pad", ["x", "pads", "value"], ["p"], name="pad"),
        helper.make_node("Conv", ["p", "w"], ["y"], name="conv", group=4, strides=[2, 2], pads=[1, 0, 0, 1]),
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 9, 9])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [w, pads, value],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def test_zero_pad_folds_into_conv_pads() -> None:
    model = _model()
    out, log = optimize_model(model)
    assert [n.op_type for n in out.graph.node] == ["Conv"]
    conv = out.graph.node[0]
    assert conv.input[0] == "x"
    assert list(next(a for a in conv.attribute if a.name == "pads").ints) == [1, 0, 1, 2]
    assert any("folded Pad 'pad'" in line for line in log)
    x = np.random.default_rng(1).normal(size=(1, 4, 9, 9)).astype(np.float32)
    np.testing.assert_allclose(_run(out, x), _run(model, x), rtol=1e-5, atol=1e-5)


def test_nonzero_pad_value_is_kept() -> None:
    out, _ = optimize_model(_model(pad_value=1.0))
    assert [n.op_type for n in out.graph.node] == ["Pad", "Conv"]
