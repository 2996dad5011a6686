"""``int8kit.inspect`` returns the layers as data (``Layer`` records, folded layers beside them)
whose ``str()`` is the listing ``int8kit inspect`` prints."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

import int8kit
from int8kit.cli import main
from int8kit.describe import FoldedLayer, Layer

RNG = np.random.default_rng(11)


def conv_bn_model() -> onnx.ModelProto:
    """conv → batchnorm (folded into conv) → relu → identity (removed) → gap."""
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
        helper.make_node("BatchNormalization", ["c", "s", "b", "m", "v"], ["n"], name="bn"),
        helper.make_node("Relu", ["n"], ["r"], name="relu"),
        helper.make_node("Identity", ["r"], ["i"], name="keep_same"),
        helper.make_node("GlobalAveragePool", ["i"], ["y"], name="gap"),
    ]
    inits = [numpy_helper.from_array(RNG.standard_normal((4, 3, 3, 3)).astype(np.float32), "w")]
    inits += [numpy_helper.from_array(RNG.uniform(0.5, 1.5, 4).astype(np.float32), n) for n in "sbmv"]
    graph = helper.make_graph(
        nodes, "conv_bn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, 1, 1])], inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_inspect_returns_layer_records(tmp_path):
    layers = int8kit.inspect(conv_bn_model())
    assert layers.names() == ["conv", "relu", "gap"]
    assert layers[0] == Layer("conv", "Conv", ("x",), ("n",))  # weights left out; the bn's output now the conv's
    assert [layer.op for layer in layers] == ["Conv", "Relu", "GlobalAveragePool"]
    assert layers.folded[0] == FoldedLayer("bn", "BatchNormalization", "conv")
    assert layers.folded[1].name == "keep_same" and layers.folded[1].into.startswith("removed")


def test_str_is_the_listing_the_cli_prints(tmp_path, capsys):
    path = tmp_path / "m.onnx"
    onnx.save(conv_bn_model(), path)
    text = str(int8kit.inspect(path))
    lines = text.splitlines()
    assert lines[0].split() == ["layer", "op", "activation", "inputs", "outputs"]
    assert lines[2].split()[:3] == ["conv", "Conv", "x"]
    assert "Folded or removed by graph optimisation" in text and "BatchNormalization" in text
    assert main(["inspect", str(path)]) == 0
    assert capsys.readouterr().out == text + "\n"
