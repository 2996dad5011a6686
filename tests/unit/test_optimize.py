"""Tests for int8kit.graph.optimize on tiny models built with onnx.helper."""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from int8kit.errors import ConfigError
from int8kit.graph.optimize import optimize_model
from int8kit.runtime.session import make_session

RNG = np.random.default_rng(0)


def _init(name: str, shape, low: float = -1.0, high: float = 1.0) -> onnx.TensorProto:
    return numpy_helper.from_array(RNG.uniform(low, high, shape).astype(np.float32), name)


def _bn_inits(prefix: str, c: int) -> list[onnx.TensorProto]:
    return [
        _init(f"{prefix}_g", (c,), 0.5, 1.5),
        _init(f"{prefix}_b", (c,)),
        _init(f"{prefix}_m", (c,)),
        _init(f"{prefix}_v", (c,), 0.2, 2.0),
    ]


def _bn(prefix: str, x: str, y: str, name: str | None = None) -> onnx.NodeProto:
    ins = [x] + [f"{prefix}_{s}" for s in "gbmv"]
    return helper.make_node("BatchNormalization", ins, [y], name=name if name is not None else prefix, epsilon=1e-3)


def _model(nodes, inits, inputs, outputs, opset: int = 17) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in outputs],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    # Outputs carry no shape on purpose (ORT accepts it; the strict checker does not).
    return model


def _run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    return make_session(model, threads=1).run(None, feeds)


def _assert_same(before: onnx.ModelProto, after: onnx.ModelProto, shapes: dict[str, tuple]) -> None:
    feeds = {k: RNG.standard_normal(s).astype(np.float32) for k, s in shapes.items()}
    assert [o.name for o in after.graph.output] == [o.name for o in before.graph.output]
    for a, b in zip(_run(before, feeds), _run(after, feeds)):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5)


def _ops(model: onnx.ModelProto) -> Counter:
    return Counter(n.op_type for n in model.graph.node)


@pytest.mark.parametrize("with_bias", [True, False])
def test_conv_bn_folds(with_bias: bool) -> None:
    inits = [_init("W", (4, 3, 3, 3))] + _bn_inits("bn", 4) + ([_init("B", (4,))] if with_bias else [])
    conv = helper.make_node("Conv", ["x", "W"] + (["B"] if with_bias else []), ["c"], name="conv1", pads=[1, 1, 1, 1])
    model = _model([conv, _bn("bn", "c", "y")], inits, [("x", [1, 3, 8, 8])], ["y"])
    out, log = optimize_model(model, fold_constants=False)
    assert _ops(out) == Counter({"Conv": 1})
    assert len(out.graph.node[0].input) == 3  # bias added when absent
    assert "folded BatchNormalization 'bn' into Conv 'conv1'" in log
    _assert_same(model, out, {"x": (1, 3, 8, 8)})


def test_grouped_convtranspose_bn_folds() -> None:
    # 4 input channels, group 2, 3 output channels per group -> 6 output channels.
    inits = [_init("W", (4, 3, 3, 3)), _init("B", (6,))] + _bn_inits("bn", 6)
    deconv = helper.make_node("ConvTranspose", ["x", "W", "B"], ["c"], name="up", group=2, strides=[2, 2])
    model = _model([deconv, _bn("bn", "c", "y")], inits, [("x", [2, 4, 5, 5])], ["y"])
    out, _ = optimize_model(model)
    assert _ops(out) == Counter({"ConvTranspose": 1})
    _assert_same(model, out, {"x": (2, 4, 5, 5)})


@pytest.mark.parametrize("trans_b", [0, 1])
def test_gemm_bn_folds(trans_b: int) -> None:
    w_shape = (6, 5) if trans_b else (5, 6)
    inits = [_init("W", w_shape), _init("C", (1, 6))] + _bn_inits("bn", 6)
    gemm = helper.make_node("Gemm", ["x", "W", "C"], ["g"], name="fc", transB=trans_b, alpha=0.7, beta=0.5)
    model = _model([gemm, _bn("bn", "g", "y")], inits, [("x", [3, 5])], ["y"])
    out, _ = optimize_model(model)
    assert _ops(out) == Counter({"Gemm": 1})
    _assert_same(model, out, {"x": (3, 5)})


def test_matmul_bn_gets_bias_add() -> None:
    inits = [_init("W", (5, 6))] + _bn_inits("bn", 6)
    mm = helper.make_node("MatMul", ["x", "W"], ["m"], name="mm")
    model = _model([mm, _bn("bn", "m", "y")], inits, [("x", [3, 5])], ["y"])
    out, _ = optimize_model(model)
    assert _ops(out) == Counter({"MatMul": 1, "Add": 1})
    _assert_same(model, out, {"x": (3, 5)})


def test_matmul_bn_on_3d_output_is_not_folded() -> None:
    # BN normalises axis 1, MatMul's channels are the last axis: folding would be wrong.
    inits = [_init("W", (5, 4))] + _bn_inits("bn", 4)
    mm = helper.make_node("MatMul", ["x", "W"], ["m"], name="mm")
    model = _model([mm, _bn("bn", "m", "y")], inits, [("x", [2, 4, 5])], ["y"])
    out, _ = optimize_model(model)
    assert _ops(out)["BatchNormalization"] == 1
    _assert_same(model, out, {"x": (2, 4, 5)})


def test_matmul_add_bias_then_mul_folds_into_both() -> None:
    inits = [_init("W", (5, 6)), _init("b", (6,)), _init("s", (1, 6), 0.5, 2.0)]
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["m"], name="mm"),
        helper.make_node("Add", ["m", "b"], ["a"], name="bias"),
        helper.make_node("Mul", ["a", "s"], ["y"], name="scale"),
    ]
    model = _model(nodes, inits, [("x", [2, 3, 5])], ["y"])
    out, log = optimize_model(model)
    assert _ops(out) == Counter({"MatMul": 1, "Add": 1})
    assert any("folded Mul 'scale' into MatMul 'mm'" in line for line in log)
    _assert_same(model, out, {"x": (2, 3, 5)})


@pytest.mark.parametrize("shape", [(4, 1, 1), (1, 4, 1, 1), (1,), ()])
def test_conv_caffe_scale_bias_folds(shape: tuple) -> None:
    inits = [_init("W", (4, 3, 3, 3)), _init("B", (4,)), _init("s", shape, 0.5, 2.0), _init("t", shape)]
    nodes = [
        helper.make_node("Conv", ["x", "W", "B"], ["c"], name="conv"),
        helper.make_node("Mul", ["s", "c"], ["m"], name="scale"),  # constant first on purpose
        helper.make_node("Add", ["m", "t"], ["y"], name="bias"),
    ]
    model = _model(nodes, inits, [("x", [1, 3, 7, 7])], ["y"])
    out, _ = optimize_model(model)
    assert _ops(out) == Counter({"Conv": 1})
    _assert_same(model, out, {"x": (1, 3, 7, 7)})


def test_mul_on_width_axis_is_not_folded() -> None:
    # Shape (C,) broadcasts over the last (width) axis of NCHW, not channels.
    inits = [_init("W", (4, 3, 1, 1)), _init("s", (4,), 0.5, 2.0)]
    nodes = [
        helper.make_node("Conv", ["x", "W"], ["c"], name="conv"),
        helper.make_node("Mul", ["c", "s"], ["y"], name="scale"),
    ]
    model = _model(nodes, inits, [("x", [1, 3, 4, 4])], ["y"])
    out, _ = optimize_model(model)
    assert _ops(out) == Counter({"Conv": 1, "Mul": 1})
    _assert_same(model, out, {"x": (1, 3, 4, 4)})


def test_no_fusion_when_conv_output_has_other_readers() -> None:
    inits = [_init("W", (4, 3, 3, 3))] + _bn_inits("bn", 4)
    nodes = [
        helper.make_node("Conv", ["x", "W"], ["c"], name="conv"),
        _bn("bn", "c", "y"),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
    ]
    model = _model(nodes, inits, [("x", [1, 3, 6, 6])], ["y", "r"])
    out, _ = optimize_model(model)
    assert _ops(out)["BatchNormalization"] == 1
    _assert_same(model, out, {"x": (1, 3, 6, 6)})


def test_shared_weight_is_copied_not_overwritten() -> None:
    inits = [_init("W", (4, 3, 3, 3))] + _bn_inits("bn", 4)
    nodes = [
        helper.make_node("Conv", ["x", "W"], ["c"], name="conv_a"),
        _bn("bn", "c", "y"),
        helper.make_node("Conv", ["x", "W"], ["z"], name="conv_b"),
    ]
    model = _model(nodes, inits, [("x", [1, 3, 6, 6])], ["y", "z"])
    out, _ = optimize_model(model)
    assert "BatchNormalization" not in _ops(out)
    convs = {n.name: n.input[1] for n in out.graph.node}
    assert convs["conv_b"] == "W" and convs["conv_a"] != "W"
    _assert_same(model, out, {"x": (1, 3, 6, 6)})


def test_identity_and_dropout_chains_removed_keep_output_names() -> None:
    inits = [_init("W", (3, 3, 1, 1))]
    nodes = [
        helper.make_node("Identity", ["x"], ["i0"], name="id0"),
        helper.make_node("Conv", ["i0", "W"], ["c"], name="conv"),
        helper.make_node("Dropout", ["c"], ["d"], name="drop"),
        helper.make_node("Identity", ["d"], ["i1"], name="id1"),
        helper.make_node("Relu", ["i1"], ["r"], name="relu"),
        helper.make_node("Identity", ["r"], ["out"], name="id_out"),  # produces a graph output
        helper.make_node("Identity", ["x"], ["x_copy"], name="id_in"),  # input -> output: must stay
    ]
    model = _model(nodes, inits, [("x", [1, 3, 4, 4])], ["out", "x_copy"])
    out, log = optimize_model(model)
    assert _ops(out) == Counter({"Conv": 1, "Relu": 1, "Identity": 1})
    relu = next(n for n in out.graph.node if n.op_type == "Relu")
    assert list(relu.output) == ["out"]
    assert "removed Dropout 'drop'" in log
    _assert_same(model, out, {"x": (1, 3, 4, 4)})


def test_constant_nodes_become_initializers() -> None:
    w = RNG.standard_normal((4, 3, 3, 3)).astype(np.float32)
    nodes = [
        helper.make_node("Constant", [], ["W"], name="cw", value=numpy_helper.from_array(w)),
        helper.make_node("Constant", [], ["k"], name="ck", value_float=2.5),
        helper.make_node("Constant", [], ["shape"], name="cs", value_ints=[1, -1]),
        helper.make_node("Conv", ["x", "W"], ["c"], name="conv"),
        helper.make_node("Mul", ["c", "k"], ["m"], name="mul"),
        helper.make_node("Reshape", ["m", "shape"], ["y"], name="flat"),
    ]
    model = _model(nodes, [], [("x", [1, 3, 5, 5])], ["y"])
    out, _ = optimize_model(model)
    assert "Constant" not in _ops(out)
    assert _ops(out) == Counter({"Conv": 1, "Reshape": 1})  # the scalar Mul folded into Conv too
    assert {"shape"} <= {t.name for t in out.graph.initializer}
    _assert_same(model, out, {"x": (1, 3, 5, 5)})


def test_constant_folding_and_random_ops_kept() -> None:
    inits = [_init("Wt", (6, 5))]
    nodes = [
        helper.make_node("Transpose", ["Wt"], ["W"], name="tr", perm=[1, 0]),
        helper.make_node("MatMul", ["x", "W"], ["m"], name="mm"),
        helper.make_node("RandomNormalLike", ["m"], ["noise"], name="rnd"),
        helper.make_node("Mul", ["noise", "m"], ["y2"], name="mul"),
    ]
    model = _model(nodes, inits, [("x", [2, 5])], ["m", "y2"])
    out, log = optimize_model(model)
    assert "Transpose" not in _ops(out) and _ops(out)["RandomNormalLike"] == 1
    assert any("folded 1 constant node" in line for line in log)
    feeds = {"x": RNG.standard_normal((2, 5)).astype(np.float32)}
    np.testing.assert_allclose(_run(out, feeds)[0], _run(model, feeds)[0], rtol=1e-4, atol=1e-5)
    kept, _ = optimize_model(model, fold_constants=False)
    assert _ops(kept)["Transpose"] == 1


def test_names_made_unique_and_existing_kept() -> None:
    nodes = [
        helper.make_node("Relu", ["x"], ["a"], name="act"),
        helper.make_node("Relu", ["a"], ["b"], name="act"),
        helper.make_node("Sigmoid", ["b"], ["c"]),
        helper.make_node("Relu", ["c"], ["y"], name="Sigmoid_2"),  # collides with a generated name
    ]
    model = _model(nodes, [], [("x", [2, 3])], ["y"])
    out, _ = optimize_model(model)
    names = [n.name for n in out.graph.node]
    assert names[0] == "act" and names[3] == "Sigmoid_2"
    assert all(names) and len(set(names)) == 4
    assert names[1] == "Relu_1"


def test_dead_nodes_and_unused_initializers_removed() -> None:
    inits = [_init("W", (3, 3, 1, 1)), _init("unused", (10,))]
    nodes = [
        helper.make_node("Conv", ["x", "W"], ["c"], name="conv"),
        helper.make_node("Sigmoid", ["c"], ["dead"], name="dead_sig"),
        helper.make_node("Relu", ["c"], ["y"], name="relu"),
    ]
    model = _model(nodes, inits, [("x", [1, 3, 2, 2])], ["y"])
    out, log = optimize_model(model)
    assert _ops(out) == Counter({"Conv": 1, "Relu": 1})
    assert [t.name for t in out.graph.initializer] == ["W"]
    assert any("dead node" in line for line in log)


def test_no_fuse_keeps_named_pair_and_unknown_name_raises() -> None:
    inits = [_init("W", (4, 3, 3, 3)), _init("W2", (4, 4, 1, 1))] + _bn_inits("bn", 4) + _bn_inits("bn2", 4)
    nodes = [
        helper.make_node("Conv", ["x", "W"], ["c"], name="conv1"),
        _bn("bn", "c", "b"),
        helper.make_node("Conv", ["b", "W2"], ["c2"], name="conv2"),
        _bn("bn2", "c2", "y"),
    ]
    model = _model(nodes, inits, [("x", [1, 3, 6, 6])], ["y"])
    for blocked in (["conv1"], ["bn"]):
        out, log = optimize_model(model, no_fuse=blocked)
        bns = [n.name for n in out.graph.node if n.op_type == "BatchNormalization"]
        assert bns == ["bn"]
        assert any("no_fuse" in line for line in log)
        _assert_same(model, out, {"x": (1, 3, 6, 6)})
    with pytest.raises(ConfigError, match="conv9"):
        optimize_model(model, no_fuse=["conv9"])


def test_input_model_is_not_modified() -> None:
    inits = [_init("W", (4, 3, 3, 3))] + _bn_inits("bn", 4)
    nodes = [helper.make_node("Conv", ["x", "W"], ["c"]), _bn("bn", "c", "y", name="")]
    model = _model(nodes, inits, [("x", [1, 3, 6, 6])], ["y"])
    before = model.SerializeToString()
    out, _ = optimize_model(model)
    assert model.SerializeToString() == before
    assert _ops(out) == Counter({"Conv": 1})


def test_convtranspose_add_then_bn_folds_completely() -> None:
    # Paddle exports the deconv bias as a separate Add before the BN.
    inits = [_init("W", (4, 4, 2, 2)), _init("b", (1, 4, 1, 1))] + _bn_inits("bn", 4)
    nodes = [
        helper.make_node("ConvTranspose", ["x", "W"], ["c"], name="up", strides=[2, 2]),
        helper.make_node("Add", ["c", "b"], ["a"], name="bias"),
        _bn("bn", "a", "y"),
    ]
    model = _model(nodes, inits, [("x", [1, 4, 3, 3])], ["y"])
    out, log = optimize_model(model, no_fuse=())
    assert _ops(out) == Counter({"ConvTranspose": 1})
    assert len(log) == len(set(log))
    _assert_same(model, out, {"x": (1, 4, 3, 3)})


def test_shape_inference_failure_is_logged_not_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(model, *args, **kwargs):
        raise onnx.shape_inference.InferenceError("[ShapeInferenceError] custom op")

    monkeypatch.setattr(onnx.shape_inference, "infer_shapes", broken)
    nodes = [helper.make_node("Relu", ["x"], ["a"], name="r"), helper.make_node("Identity", ["a"], ["y"], name="i")]
    model = _model(nodes, [], [("x", [2, 3])], ["y"])
    model.graph.value_info.append(helper.make_tensor_value_info("a", TensorProto.FLOAT, [2, 3]))
    out, log = optimize_model(model)
    assert sum(line.startswith("shape inference failed") for line in log) == 1
    assert "a" not in {vi.name for vi in out.graph.value_info}  # renamed away by Identity removal
    assert _ops(out) == Counter({"Relu": 1})


def _affine_then_convs(pads: int, group: int = 1, shift: bool = True) -> onnx.ModelProto:
    """HardSwish -> x * s + b (per channel) -> two convs reading it (PP-LCNetV3's affine block)."""
    nodes = [
        helper.make_node("HardSwish", ["x"], ["h"], name="hswish"),
        helper.make_node("Mul", ["h", "s"], ["m"], name="scale"),
        helper.make_node("Conv", ["a", "w1", "b1"], ["y1"], name="conv1", group=group, pads=[pads] * 4),
        helper.make_node("Conv", ["a", "w2"], ["y2"], name="conv2", pads=[pads] * 4),
    ]
    nodes.insert(2, helper.make_node("Add", ["m", "t"], ["a"], name="shift") if shift else
                 helper.make_node("Identity", ["m"], ["a"], name="same"))
    inits = [_init("s", (1, 8, 1, 1), 0.2, 2.0), _init("t", (8, 1, 1)), _init("w1", (6, 8 // group, 3, 3)),
             _init("b1", (6,)), _init("w2", (4, 8, 1, 1))]
    return _model(nodes, inits, [("x", [2, 8, 6, 6])], ["y1", "y2"])


@pytest.mark.parametrize("group", [1, 2])
def test_affine_before_unpadded_convs_folds_into_them(group: int) -> None:
    model = _affine_then_convs(pads=0, group=group)
    out, log = optimize_model(model)
    assert _ops(out) == Counter({"HardSwish": 1, "Conv": 2}), _ops(out)
    assert any("conv(s) reading it" in line for line in log)
    _assert_same(model, out, {"x": (2, 8, 6, 6)})


def test_affine_before_padded_convs_folds_only_without_a_shift() -> None:
    # a padded border would read b instead of 0: the Add stays; a Mul alone folds exactly
    model = _affine_then_convs(pads=1)
    out, _ = optimize_model(model)
    assert _ops(out)["Add"] == 1 and _ops(out)["Mul"] == 1
    _assert_same(model, out, {"x": (2, 8, 6, 6)})
    model = _affine_then_convs(pads=1, shift=False)
    out, _ = optimize_model(model)
    assert "Mul" not in _ops(out)
    _assert_same(model, out, {"x": (2, 8, 6, 6)})


def test_affine_folds_forward_only_when_convs_alone_read_it() -> None:
    model = _affine_then_convs(pads=0)
    model.graph.node.append(helper.make_node("Relu", ["a"], ["r"], name="other"))
    model.graph.output.append(helper.make_tensor_value_info("r", TensorProto.FLOAT, None))
    out, _ = optimize_model(model)
    assert _ops(out)["Add"] == 1 and _ops(out)["Mul"] == 1
    _assert_same(model, out, {"x": (2, 8, 6, 6)})
    out, _ = optimize_model(_affine_then_convs(pads=0), no_fuse=["conv1"])
    assert _ops(out)["Add"] == 1


def test_a_weight_shared_by_two_convs_is_untied_before_folding():
    """One conv weight read twice (a module called twice), BatchNormalization after one reader:
    folding it must not change the other reader."""
    rng = np.random.default_rng(5)
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c1"], name="first", pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c1", "g", "beta", "mu", "var"], ["n1"], name="bn"),
        helper.make_node("Relu", ["n1"], ["r1"], name="relu"),
        helper.make_node("Conv", ["r1", "w", "b"], ["y"], name="second", pads=[1, 1, 1, 1]),
    ]
    arr = lambda *shape: rng.normal(size=shape).astype(np.float32)  # noqa: E731
    inits = [numpy_helper.from_array(a, n) for n, a in [
        ("w", arr(4, 4, 3, 3) * 0.3), ("b", arr(4)), ("g", arr(4) + 2), ("beta", arr(4)), ("mu", arr(4)), ("var", np.abs(arr(4)) + 0.5)]]
    graph = helper.make_graph(nodes, "tied", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4, 6, 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    optimized, log = optimize_model(model)
    assert any("own copy" in line for line in log)
    readers = Counter(i for n in optimized.graph.node if n.op_type == "Conv" for i in n.input[1:])
    assert max(readers.values()) == 1 and "BatchNormalization" not in {n.op_type for n in optimized.graph.node}
    feeds = {"x": arr(2, 4, 6, 6)}
    np.testing.assert_allclose(_run(optimized, feeds)[0], _run(model, feeds)[0], rtol=1e-4, atol=1e-4)
