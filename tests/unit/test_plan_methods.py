"""Which threshold method the planner picks per tensor when the user chose a divergence method."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from int8kit.calib.collect import collect
from int8kit.plan.config import LayerOverride, QuantConfig
from int8kit.plan.planner import candidate_tensors, plan


def _model() -> onnx.ModelProto:
    """conv1 (signed output) -> conv2 -> relu (one-sided, fused) -> conv3."""
    rng = np.random.default_rng(7)
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["s"], name="conv1"),
        helper.make_node("Conv", ["s", "w2"], ["c2"], name="conv2"),
        helper.make_node("Relu", ["c2"], ["r"], name="relu"),
        helper.make_node("Conv", ["r", "w3"], ["y"], name="conv3"),
    ]
    inits = [numpy_helper.from_array(rng.standard_normal((8, 8, 1, 1)).astype(np.float32), w) for w in ("w1", "w2", "w3")]
    graph = helper.make_graph(
        nodes, "signed", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits,
    )
    return onnx.shape_inference.infer_shapes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))


def test_signed_tensors_use_mse_instead_of_a_divergence_method():
    model = _model()
    x = np.random.default_rng(8).standard_normal((64, 8, 4, 4)).astype(np.float32)
    stats = collect(model, x, tensors=candidate_tensors(model), progress=False)
    assert stats.tensors["s"].hist.min < 0 < stats.tensors["s"].hist.max
    for method in ("kl", "symkl", "jsd"):
        qplan = plan(model, stats, QuantConfig(th_method=method))
        assert qplan.tensors["s"].method == "mse"
        assert qplan.tensors["r"].method == method  # one-sided (Relu) output: the chosen method
    assert plan(model, stats, QuantConfig(th_method="percentile")).tensors["s"].method == "percentile"
    explicit = plan(model, stats, QuantConfig(th_method="kl", overrides={"s": LayerOverride(th_method="kl")}))
    assert explicit.tensors["s"].method == "kl"  # an explicit override still wins
