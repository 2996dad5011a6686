"""Planner + QDQ emitter on tiny models: INT8 kernels actually run, outputs stay close to FP32."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from int8kit.calib.collect import collect
from int8kit.emit.qdq import emit_qdq
from int8kit.errors import ConfigError
from int8kit.config import LayerOverride, QuantConfig
from int8kit.plan.planner import candidate_tensors, plan

RNG = np.random.default_rng(0)


def _init(name: str, shape: tuple[int, ...], scale: float = 0.3) -> onnx.TensorProto:
    return numpy_helper.from_array((RNG.standard_normal(shape) * scale).astype(np.float32), name)


def small_cnn(in_channels: int = 6) -> onnx.ModelProto:
    """conv-relu → conv → add(residual) → relu → maxpool → concat → gap → flatten → gemm."""
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["c2", "r1"], ["a1"], name="add1"),
        helper.make_node("Relu", ["a1"], ["r2"], name="relu2"),
        helper.make_node("MaxPool", ["r2"], ["p1"], name="pool1", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p1", "w3"], ["c3"], name="dwconv", group=8, pads=[1, 1, 1, 1]),
        helper.make_node("Clip", ["c3", "zero", "six"], ["r3"], name="relu6"),
        helper.make_node("Concat", ["p1", "r3"], ["cat"], name="concat", axis=1),
        helper.make_node("GlobalAveragePool", ["cat"], ["gap"], name="gap"),
        helper.make_node("Flatten", ["gap"], ["flat"], name="flatten"),
        helper.make_node("Gemm", ["flat", "wf", "bf"], ["logits"], name="fc", transB=1),
    ]
    inits = [
        _init("w1", (8, in_channels, 3, 3)),
        _init("b1", (8,), 0.1),
        _init("w2", (8, 8, 3, 3), 0.2),
        _init("b2", (8,), 0.1),
        _init("w3", (8, 1, 3, 3), 0.5),
        numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
        numpy_helper.from_array(np.array(6.0, np.float32), "six"),
        _init("wf", (10, 16), 0.5),
        _init("bf", (10,), 0.1),
    ]
    graph = helper.make_graph(
        nodes,
        "small_cnn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", in_channels, 16, 16])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return onnx.shape_inference.infer_shapes(model)


def _run(model: onnx.ModelProto, x: np.ndarray, optimized_path: str | None = None) -> np.ndarray:
    opts = ort.SessionOptions()
    if optimized_path:
        opts.optimized_model_filepath = optimized_path
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})[0]


@pytest.fixture(scope="module")
def model_and_stats():
    model = small_cnn()
    data = RNG.standard_normal((64, 6, 16, 16)).astype(np.float32)
    stats = collect(model, data, tensors=candidate_tensors(model), progress=False)
    return model, stats, data


@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("offset", [False, True])
def test_int8_model_runs_int8_kernels_and_matches_fp32(model_and_stats, tmp_path, per_channel, offset):
    model, stats, data = model_and_stats
    qplan = plan(model, stats, QuantConfig(th_method="max", per_channel=per_channel, activation_offset=offset))
    qmodel = emit_qdq(model, qplan)
    onnx.checker.check_model(qmodel)

    # Relu and Clip(0, 6) after convs are realised by the output quantizer's saturation.
    assert set(qplan.fused) == {"relu1", "relu2", "relu6"}
    types = [n.op_type for n in qmodel.graph.node]
    assert "Relu" not in types and "Clip" not in types
    int8_inits = [t for t in qmodel.graph.initializer if t.data_type == TensorProto.INT8 and t.name.endswith("_quantized")]
    assert len(int8_inits) == 4

    optimized = tmp_path / "ort_optimized.onnx"
    y_q = _run(qmodel, data[:16], str(optimized))
    y = _run(model, data[:16])
    fused_types = {n.op_type for n in onnx.load(str(optimized)).graph.node}
    # onnxruntime turned the QDQ pattern into integer kernels
    assert "QLinearConv" in fused_types
    assert "QLinearAdd" in fused_types
    assert "Conv" not in fused_types
    cos = np.sum(y * y_q, axis=1) / (np.linalg.norm(y, axis=1) * np.linalg.norm(y_q, axis=1))
    assert cos.mean() > 0.99
    assert (y.argmax(1) == y_q.argmax(1)).mean() >= 0.8


def test_weights_per_channel_have_one_scale_per_output_channel(model_and_stats):
    model, stats, _ = model_and_stats
    qplan = plan(model, stats, QuantConfig(th_method="max", per_channel=True))
    assert qplan.tensors["w1"].scale.shape == (8,)
    assert qplan.tensors["w1"].axis == 0
    assert qplan.tensors["wf"].scale.shape == (10,)
    assert qplan.tensors["wf"].axis == 0  # Gemm with transB=1: rows are output channels
    # bias scale = input scale x weight scale, int32
    b1 = qplan.tensors["b1"]
    assert b1.dtype == "int32"
    np.testing.assert_allclose(b1.scale, qplan.tensors["x"].scale * qplan.tensors["w1"].scale, rtol=1e-6)


def test_scale_sharing_ops_reuse_input_parameters(model_and_stats):
    model, stats, _ = model_and_stats
    qplan = plan(model, stats, QuantConfig(th_method="kl"))
    assert float(qplan.tensors["p1"].scale) == float(qplan.tensors["r2"].scale)
    assert float(qplan.tensors["flat"].scale) == float(qplan.tensors["gap"].scale)
    # the relu output is non-negative: unsigned with zero point 0
    assert qplan.tensors["r1"].dtype == "uint8" and int(qplan.tensors["r1"].zero_point) == 0
    # the model output of the final Gemm stays float for precision
    assert "logits" not in qplan.tensors


def test_fold_concat_scale_gives_inputs_the_output_scale(model_and_stats):
    model, stats, _ = model_and_stats
    qplan = plan(model, stats, QuantConfig(th_method="max", fold_concat_scale=True))
    assert float(qplan.tensors["r3"].scale) == float(qplan.tensors["cat"].scale)


def test_mixed_precision_options(model_and_stats):
    model, stats, data = model_and_stats
    qplan = plan(model, stats, QuantConfig(th_method="max", fp_outputs=("gap",)))
    assert {"gap", "flatten", "fc"} <= set(qplan.float_nodes)
    assert "wf" not in qplan.tensors
    qplan = plan(model, stats, QuantConfig(th_method="max", fp_inputs=("conv1",)))
    assert "w1" not in qplan.tensors and "w2" in qplan.tensors
    qplan = plan(model, stats, QuantConfig(th_method="max", accuracy_opt=True))
    assert "dwconv" in qplan.float_nodes and "w3" not in qplan.tensors
    qplan = plan(model, stats, QuantConfig(th_method="max", fp_op_types=("Add",)))
    assert "add1" in qplan.float_nodes
    qplan = plan(model, stats, QuantConfig(th_method="max", fp_blocks=("relu2",)))
    assert {"relu2", "pool1"} <= set(qplan.float_nodes) and "dwconv" not in qplan.float_nodes
    # the float model still runs and stays close
    y_q = _run(emit_qdq(model, qplan), data[:8])
    assert np.isfinite(y_q).all()


def test_overrides_threshold_and_scale(model_and_stats):
    model, stats, _ = model_and_stats
    base = plan(model, stats, QuantConfig(th_method="max"))
    over = plan(
        model,
        stats,
        QuantConfig(th_method="max", overrides={"conv2": LayerOverride(th_scale=0.5), "x": LayerOverride(threshold=1.0)}),
    )
    assert over.tensors["x"].threshold == pytest.approx(1.0)
    assert over.tensors["c2"].threshold == pytest.approx(0.5 * base.tensors["c2"].threshold, rel=1e-5)


def test_range_overrides_that_reach_no_quantized_tensor_are_errors(model_and_stats):
    model, stats, _ = model_and_stats
    # conv1's own output is fused with relu1: the range lives on r1, and the error names it
    with pytest.raises(ConfigError, match="put it on 'r1'"):
        plan(model, stats, QuantConfig(overrides={"conv1": LayerOverride(threshold=2.0)}))
    with pytest.raises(ConfigError, match="stays float"):
        plan(model, stats, QuantConfig(fp_layers=("fc",), overrides={"fc": LayerOverride(th_method="max")}))
    assert plan(model, stats, QuantConfig(overrides={"relu1": LayerOverride(threshold=2.0)})).tensors["r1"].threshold == 2.0


@pytest.mark.parametrize("raw, needle", [({"threshold": float("nan")}, "threshold"), ({"th_scale": float("inf")}, "th_scale"),
                                         ({"threshold": True}, "threshold"), ({"th_method": 3}, "th_method"),
                                         ({"depthwise_channel_scales": False}, "unknown key")])
def test_override_values_are_checked(raw, needle):
    with pytest.raises(ConfigError, match=needle):
        LayerOverride.from_dict("conv1", raw)


def test_overrides_file_errors(tmp_path):
    from int8kit.config import load_overrides

    (tmp_path / "v.json").write_text('{"version": 99, "layers": {}}')
    (tmp_path / "b.json").write_bytes(b'{"layers": {"\xff\xfe": 1}}'.replace(b"\\xff\\xfe", b"\xff\xfe"))
    with pytest.raises(ConfigError, match="version 99"):
        load_overrides(tmp_path / "v.json")
    with pytest.raises(ConfigError, match="UTF-8"):
        load_overrides(tmp_path / "b.json")
    with pytest.raises(ConfigError, match="is a folder"):
        load_overrides(tmp_path)


def test_unknown_layer_names_are_config_errors(model_and_stats):
    model, stats, _ = model_and_stats
    with pytest.raises(ConfigError, match="conv9"):
        plan(model, stats, QuantConfig(fp_layers=("conv9",)))
    with pytest.raises(ConfigError, match="Softmax"):
        plan(model, stats, QuantConfig(fp_op_types=("Softmax",)))
    with pytest.raises(ConfigError, match="nope"):
        plan(model, stats, QuantConfig(overrides={"nope": LayerOverride(float=True)}))


@pytest.mark.parametrize("config", [{"accuracy_opt": True}, {"fp_layers": ("conv2",)}, {"fp_layers": ("fc",)}])
def test_float_layers_stay_float_under_onnxruntime_optimizations(model_and_stats, config):
    """onnxruntime quantizes a float Conv/Gemm's weights per tensor by itself when its input comes
    straight from a DequantizeLinear; the emitter must prevent that, so optimized and unoptimized
    sessions agree and float layers keep their float weights."""
    model, stats, data = model_and_stats
    qmodel = emit_qdq(model, plan(model, stats, QuantConfig(th_method="max", per_channel=True, **config)))
    outs = []
    for level in (ort.GraphOptimizationLevel.ORT_DISABLE_ALL, ort.GraphOptimizationLevel.ORT_ENABLE_ALL):
        opts = ort.SessionOptions()
        opts.graph_optimization_level = level
        sess = ort.InferenceSession(qmodel.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        outs.append(sess.run(None, {"x": data[:16]})[0])
    np.testing.assert_allclose(outs[0], outs[1], rtol=1e-3, atol=1e-3 * float(np.abs(outs[0]).max()))


def _matmul_model() -> onnx.ModelProto:
    """x -> MatMul(W) -> Relu -> MatMul(W2) -> y: a tiny FFN."""
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"], name="fc1"),
        helper.make_node("Relu", ["h"], ["r"], name="act"),
        helper.make_node("MatMul", ["r", "w2"], ["y"], name="fc2"),
    ]
    graph = helper.make_graph(
        nodes,
        "ffn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8])],
        [_init("w1", (16, 32)), _init("w2", (32, 8))],
    )
    return onnx.shape_inference.infer_shapes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))


def test_outlier_inputs_keep_matmul_float():
    model = _matmul_model()
    w1 = model.graph.initializer[0]
    assert w1.name == "w1"
    quiet = numpy_helper.to_array(w1).copy()
    quiet[5] = 0.0  # fc1 does not pass channel 5 on: fc2's input has no outliers whatever the random weights
    w1.CopyFrom(numpy_helper.from_array(quiet, "w1"))
    x = RNG.standard_normal((4096, 16)).astype(np.float32)
    x[::1024, 5] = 60.0  # rare huge outliers in one channel (0.006 %), as in BERT FFN inputs
    stats = collect(model, x, tensors=candidate_tensors(model), progress=False)
    qplan = plan(model, stats, QuantConfig(th_method="mse"))
    assert "fc1" in qplan.float_nodes and "outliers" in qplan.float_nodes["fc1"]
    assert "fc2" not in qplan.float_nodes
    relaxed = plan(model, stats, QuantConfig(th_method="mse", outlier_ratio=0))
    assert "fc1" not in relaxed.float_nodes



def test_skewed_tensors_get_a_zero_point():
    nodes = [helper.make_node("Add", ["x", "x"], ["s"], name="double"), helper.make_node("MatMul", ["s", "w1"], ["y"], name="fc")]
    graph = helper.make_graph(
        nodes,
        "skew",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 32])],
        [_init("w1", (16, 32))],
    )
    model = onnx.shape_inference.infer_shapes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    x = RNG.standard_normal((512, 16)).astype(np.float32) * 0.2 + 2.0  # like a GELU output: a small negative tail
    x[:, 0] = -0.3
    stats = collect(model, x, tensors=candidate_tensors(model), progress=False)
    skew = plan(model, stats, QuantConfig(th_method="max")).tensors["s"]
    assert skew.dtype == "uint8" and int(skew.zero_point) > 0
    assert skew.lo == pytest.approx(-0.6, rel=1e-3)
    sym = plan(model, stats, QuantConfig(th_method="max", skew_ratio=0)).tensors["s"]
    assert sym.dtype == "int8" and int(sym.zero_point) == 0


def test_probability_like_tensors_are_never_clipped():
    model = _matmul_model()
    x = np.abs(RNG.standard_normal((256, 16)).astype(np.float32)) ** 4
    x /= x.max()  # within [0, 1], heavy tail
    stats = collect(model, x, tensors=candidate_tensors(model), progress=False)
    qplan = plan(model, stats, QuantConfig(th_method="kl", outlier_ratio=0))
    assert qplan.tensors["x"].hi == pytest.approx(float(x.max()), rel=1e-3)


def test_rgb_stem_conv_stays_float_unless_asked():
    model = small_cnn(in_channels=3)
    data = RNG.standard_normal((32, 3, 16, 16)).astype(np.float32)
    stats = collect(model, data, tensors=candidate_tensors(model), progress=False)
    qplan = plan(model, stats, QuantConfig(th_method="max"))
    assert "stem" in qplan.float_nodes["conv1"] and "w1" not in qplan.tensors and "w2" in qplan.tensors
    assert "x" not in qplan.tensors  # nothing quantized reads the model input any more
    assert "w1" in plan(model, stats, QuantConfig(th_method="max", stem_float=False)).tensors
    y = _run(model, data[:8])
    y_q = _run(emit_qdq(model, qplan), data[:8])
    assert np.isfinite(y_q).all() and np.corrcoef(y.ravel(), y_q.ravel())[0, 1] > 0.99


def _mobilenet_stem() -> onnx.ModelProto:
    """RGB conv → HardSwish → depthwise → pointwise → Relu → depthwise (MobileNet-family stem)."""
    nodes = [
        helper.make_node("Conv", ["x", "w0"], ["c0"], name="stem", pads=[1, 1, 1, 1]),
        helper.make_node("HardSwish", ["c0"], ["h0"], name="hswish0"),
        helper.make_node("Conv", ["h0", "w1"], ["c1"], name="dw1", group=8, pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["c1", "w2"], ["c2"], name="pw2"),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("Conv", ["r2", "w3"], ["y"], name="dw3", group=8, pads=[1, 1, 1, 1]),
    ]
    inits = [_init("w0", (8, 3, 3, 3)), _init("w1", (8, 1, 3, 3)), _init("w2", (8, 8, 1, 1)), _init("w3", (8, 1, 3, 3))]
    graph = helper.make_graph(
        nodes, "stem", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8, 8, 8])], inits,
    )
    return onnx.shape_inference.infer_shapes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))


def test_the_depthwise_conv_right_after_the_stem_stays_float_too():
    model = _mobilenet_stem()
    data = RNG.standard_normal((16, 3, 8, 8)).astype(np.float32)
    stats = collect(model, data, tensors=candidate_tensors(model), progress=False)
    qplan = plan(model, stats, QuantConfig(th_method="max"))
    assert "stem" in qplan.float_nodes["stem"] and "stem" in qplan.float_nodes["dw1"]
    assert "w1" not in qplan.tensors and "h0" not in qplan.tensors  # nothing INT8 reads the stem's output
    assert "dw3" not in qplan.float_nodes and "w3" in qplan.tensors  # later depthwise convs stay INT8
    both = plan(model, stats, QuantConfig(th_method="max", stem_float=False))
    assert not {"stem", "dw1"} & set(both.float_nodes) and {"w0", "w1"} <= set(both.tensors)


def test_outputs_of_the_float_stem_are_never_clipped():
    """The first INT8 layer reads the float stem's features: their rare large values carry the
    signal (text strokes), so they keep their full range whatever the threshold method."""
    model = _mobilenet_stem()
    data = (RNG.standard_normal((32, 3, 8, 8)) ** 3).astype(np.float32)  # heavy tails
    stats = collect(model, data, tensors=candidate_tensors(model), progress=False)
    near = plan(model, stats, QuantConfig(th_method="kl")).tensors["c1"]  # dw1 is float: c1 is the stem's output
    h = stats.tensors["c1"].hist
    # the whole range: a symmetric grid may reach past one end (|min| > max), never short of either
    assert near.method == "max" and near.hi >= h.max * (1 - 1e-6) and near.lo <= h.min * (1 - 1e-6)
    inner = plan(model, stats, QuantConfig(th_method="kl", stem_float=False)).tensors["c1"]
    assert inner.method != "max" and inner.hi < near.hi


def test_wider_activations_run_in_onnxruntime_and_are_closer(model_and_stats):
    model, stats, data = model_and_stats
    errors, steps = {}, {}
    for bits in (8, 12, 16):
        qplan = plan(model, stats, QuantConfig(th_method="max", bitwidth=bits))
        acts = [t for t in qplan.tensors.values() if t.kind == "activation"]
        assert {t.dtype for t in acts} <= ({"int8", "uint8"} if bits == 8 else {"int16", "uint16"})
        steps[bits] = {t.name: float(t.scale) for t in acts}
        qmodel = emit_qdq(model, qplan)
        if bits > 8:  # 16-bit Q/DQ come from onnxruntime's contrib domain (the model keeps its opset)
            assert {n.domain for n in qmodel.graph.node if n.op_type == "QuantizeLinear"} == {"com.microsoft"}
        errors[bits] = float(np.abs(_run(qmodel, data[:16]) - _run(model, data[:16])).max())
    assert errors[16] < errors[8] and errors[12] < errors[8]  # weights stay 8-bit: only the activation error shrinks
    # 12 bits in int16 (the manual's int12): 16x finer steps than 8 bits, 16x coarser than 16
    for name, step in steps[12].items():
        assert steps[8][name] / step == pytest.approx(4095 / 255, rel=1e-3) or steps[8][name] / step == pytest.approx(2047 / 127, rel=1e-3)
        assert step / steps[16][name] == pytest.approx(65535 / 4095, rel=1e-3) or step / steps[16][name] == pytest.approx(32767 / 2047, rel=1e-3)


def test_pre_activation_outputs_are_not_tapped_and_a_float_relu_keeps_its_producer_float(model_and_stats):
    model, stats, data = model_and_stats
    assert "c1" not in candidate_tensors(model)  # only read by the Relu fused into conv1
    assert "c2" in candidate_tensors(model)  # read by the residual Add
    qplan = plan(model, stats, QuantConfig(th_method="max", fp_layers=("relu1",)))
    assert "not calibrated" in qplan.float_nodes["conv1"] and "w1" not in qplan.tensors
    assert "w2" in qplan.tensors
    y_q = _run(emit_qdq(model, qplan), data[:8])
    assert np.corrcoef(_run(model, data[:8]).ravel(), y_q.ravel())[0, 1] > 0.99


def test_signed_activations_write_symmetric_int8_for_tensorrt(model_and_stats):
    model, stats, data = model_and_stats
    qplan = plan(model, stats, QuantConfig(th_method="max", signed_activations=True))
    acts = [t for t in qplan.tensors.values() if t.kind == "activation"]
    assert acts and all(t.dtype == "int8" and int(t.zero_point) == 0 for t in acts)
    qmodel = emit_qdq(model, qplan)
    inits = {t.name: t for t in qmodel.graph.initializer}
    for node in qmodel.graph.node:
        if node.op_type == "QuantizeLinear":
            zp = inits[node.input[2]]
            assert zp.data_type == TensorProto.INT8 and int(numpy_helper.to_array(zp)) == 0
    y, y_q = _run(model, data[:16]), _run(qmodel, data[:16])
    cos = np.sum(y * y_q, axis=1) / (np.linalg.norm(y, axis=1) * np.linalg.norm(y_q, axis=1))
    assert cos.mean() > 0.99
    with pytest.raises(ConfigError, match="signed-activations"):
        QuantConfig(signed_activations=True, activation_offset=True)


def test_clip_outputs_keep_their_saturated_values():
    """ReLU6 outputs pile up at 6: the range must reach it, even with KL (which clipped EfficientNet's at 3.5-5)."""
    nodes = [
        helper.make_node("Relu", ["x"], ["r"], name="pre"),
        helper.make_node("Clip", ["r", "zero", "six"], ["c"], name="relu6"),
        helper.make_node("MatMul", ["c", "w1"], ["y"], name="fc"),
    ]
    inits = [numpy_helper.from_array(np.array(0.0, np.float32), "zero"), numpy_helper.from_array(np.array(6.0, np.float32), "six"), _init("w1", (16, 8))]
    graph = helper.make_graph(
        nodes, "relu6", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8])], inits,
    )
    model = onnx.shape_inference.infer_shapes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    x = np.abs(RNG.standard_normal((4096, 16)).astype(np.float32)) * 0.5
    x[::2000] = 9.0  # a few values saturate at 6
    stats = collect(model, x, tensors=candidate_tensors(model), progress=False)
    for method in ("kl", "mse", "percentile"):
        c = plan(model, stats, QuantConfig(th_method=method, outlier_ratio=0)).tensors["c"]
        assert c.hi == pytest.approx(6.0, rel=1e-6), method


def test_layernorm_outputs_use_mse_instead_of_divergence_methods():
    nodes = [
        helper.make_node("LayerNormalization", ["x", "gamma", "beta"], ["n"], name="ln", axis=-1),
        helper.make_node("MatMul", ["n", "w1"], ["y"], name="fc"),
    ]
    inits = [numpy_helper.from_array(np.ones(16, np.float32), "gamma"), numpy_helper.from_array(np.zeros(16, np.float32), "beta"), _init("w1", (16, 8))]
    graph = helper.make_graph(
        nodes, "ln", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8])], inits,
    )
    model = onnx.shape_inference.infer_shapes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    x = RNG.standard_normal((1024, 16)).astype(np.float32)
    stats = collect(model, x, tensors=candidate_tensors(model), progress=False)
    assert plan(model, stats, QuantConfig(th_method="KL", outlier_ratio=0)).tensors["n"].method == "mse"
    assert plan(model, stats, QuantConfig(th_method="percentile", outlier_ratio=0)).tensors["n"].method == "percentile"


def test_hardswish_inputs_are_clamped_to_the_domain_it_distinguishes(monkeypatch):
    """HardSwish maps every x <= -3 to 0: codes below -3 are wasted, so the range starts at -3."""
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("HardSwish", ["c"], ["h"], name="hswish"),
        helper.make_node("Conv", ["h", "w2"], ["y"], name="conv2"),
    ]
    graph = helper.make_graph(
        nodes, "hswish", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [_init("w1", (8, 8, 3, 3), 1.0), _init("w2", (4, 8, 1, 1))],
    )
    model = onnx.shape_inference.infer_shapes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    x = RNG.standard_normal((64, 8, 8, 8)).astype(np.float32) * 2.0
    stats = collect(model, x, tensors=candidate_tensors(model), progress=False)
    assert stats.tensors["c"].hist.min < -6.0  # the raw conv output reaches far below -3
    qplan = plan(model, stats, QuantConfig(th_method="max"))
    c = qplan.tensors["c"]
    unclamped = plan(model, stats, QuantConfig(th_method="max", signed_activations=True)).tensors["c"]
    assert c.lo == pytest.approx(-3.0, abs=float(c.scale)) and c.hi == pytest.approx(unclamped.hi, rel=1e-3)
    assert c.dtype == "uint8" and float(c.scale) < 0.6 * float(unclamped.scale)
    # exact for HardSwish, and finer: the INT8 model is closer than with the full range
    import int8kit.plan.planner as planner

    monkeypatch.setattr(planner, "value_domain", lambda facts, name: None)
    full = plan(model, stats, QuantConfig(th_method="max"))
    assert full.tensors["c"].lo == pytest.approx(-unclamped.hi, rel=1e-3)
    y = _run(model, x[:16])
    err_clamped = np.abs(_run(emit_qdq(model, qplan), x[:16]) - y).mean()
    err_full = np.abs(_run(emit_qdq(model, full), x[:16]) - y).mean()
    assert err_clamped < err_full


def test_initializers_read_only_inside_if_branches_are_kept():
    """An If whose branches read an outer initializer (torch.jit.script control flow): the INT8
    model must keep it, or onnxruntime cannot load the model."""
    out_t = helper.make_tensor_value_info("b", TensorProto.FLOAT, None)

    def branch(name: str, scale: float) -> onnx.GraphProto:
        source = "r" if name == "then" else "c"  # the else branch reads the conv output before the Relu
        nodes = [helper.make_node("Mul", [source, f"{name}_s"], [f"{name}_m"]), helper.make_node("Conv", [f"{name}_m", "w2"], ["b"], pads=[1, 1, 1, 1])]
        return helper.make_graph(nodes, name, [], [out_t], [numpy_helper.from_array(np.array(scale, np.float32), f"{name}_s")])

    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("ReduceMean", ["r"], ["mean"], name="mean", keepdims=0),
        helper.make_node("Greater", ["mean", "half"], ["cond"], name="gt"),
        helper.make_node("If", ["cond"], ["y"], name="branch", then_branch=branch("then", 1.0), else_branch=branch("else", 2.0)),
    ]
    graph = helper.make_graph(nodes, "ifnet", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [_init("w1", (4, 3, 3, 3)), _init("w2", (4, 4, 3, 3)), numpy_helper.from_array(np.array(0.5, np.float32), "half")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    data = RNG.standard_normal((16, 3, 8, 8)).astype(np.float32)
    stats = collect(model, data, tensors=candidate_tensors(model), progress=False)
    qmodel = emit_qdq(model, plan(model, stats, QuantConfig(th_method="max", stem_float=False)))
    assert "w2" in {t.name for t in qmodel.graph.initializer}
    want = _run(model, data[:4])
    got = _run(qmodel, data[:4])
    assert np.abs(got - want).max() < 0.1 * np.abs(want).max()


def test_a_linear_layer_called_twice_runs_the_same_fused_and_unfused(tmp_path):
    """Each reader of a shared weight/bias gets its own INT8 weight and INT32 bias (the bias scale
    depends on the reader's input scale): onnxruntime's fused QGemm must match plain QDQ."""
    import int8kit

    nodes = [
        helper.make_node("Gemm", ["x", "w", "b"], ["h1"], name="fc_a", transB=1),
        helper.make_node("Relu", ["h1"], ["r1"], name="relu_a"),
        helper.make_node("Mul", ["r1", "three"], ["m"], name="scale_up"),
        helper.make_node("Gemm", ["m", "w", "b"], ["h2"], name="fc_b", transB=1),
        helper.make_node("Relu", ["h2"], ["y"], name="relu_b"),
    ]
    graph = helper.make_graph(nodes, "twice", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 16])],
                              [_init("w", (16, 16), 0.4), _init("b", (16,), 0.5), numpy_helper.from_array(np.array(3.0, np.float32), "three")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    data = RNG.standard_normal((256, 16)).astype(np.float32)
    result = int8kit.quantize(model, data, output_dir=tmp_path, progress=False)
    qmodel = onnx.load(str(result.int8_model))
    outs = []
    for level in (ort.GraphOptimizationLevel.ORT_DISABLE_ALL, ort.GraphOptimizationLevel.ORT_ENABLE_ALL):
        opts = ort.SessionOptions()
        opts.graph_optimization_level = level
        outs.append(ort.InferenceSession(qmodel.SerializeToString(), opts, providers=["CPUExecutionProvider"]).run(None, {"x": data[:64]})[0])
    np.testing.assert_allclose(outs[1], outs[0], atol=0.02 * float(np.abs(outs[0]).max()))


def test_a_conv_writing_a_model_output_runs_as_qlinearconv(tmp_path):
    """A detection head: without an output QuantizeLinear onnxruntime runs it in float."""
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="body", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu"),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["y"], name="head"),
    ]
    graph = helper.make_graph(nodes, "head", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [_init("w1", (16, 8, 3, 3)), _init("b1", (16,)), _init("w2", (16, 16, 1, 1)), _init("b2", (16,))])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    data = RNG.standard_normal((64, 8, 8, 8)).astype(np.float32)
    stats = collect(model, data, tensors=candidate_tensors(model), progress=False)
    qmodel = emit_qdq(model, plan(model, stats, QuantConfig(stem_float=False)))
    path = str(tmp_path / "opt.onnx")
    y = _run(qmodel, data[:8], optimized_path=path)
    ops = [n.op_type for n in onnx.load(path).graph.node]
    assert ops.count("QLinearConv") == 2 and "Conv" not in ops
    want = _run(model, data[:8])
    cos = float(np.sum(y * want) / np.linalg.norm(y) / np.linalg.norm(want))
    assert cos > 0.999


def test_a_uint8_image_input_cast_in_the_graph_is_quantized_after_the_cast(tmp_path):
    """uint8 NHWC pixels -> Transpose -> Cast -> /255 -> convs: everything after the Cast is data
    (not an id or a mask) and gets quantized; the uint8 tensors themselves are left alone."""
    import int8kit

    nodes = [
        helper.make_node("Transpose", ["img"], ["t"], perm=[0, 3, 1, 2]),
        helper.make_node("Cast", ["t"], ["f"], to=TensorProto.FLOAT),
        helper.make_node("Div", ["f", "s"], ["n"]),
        helper.make_node("Conv", ["n", "w1", "b1"], ["c"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("Conv", ["r", "w2", "b2"], ["y"], name="conv2"),
    ]
    graph = helper.make_graph(nodes, "pixels", [helper.make_tensor_value_info("img", TensorProto.UINT8, ["N", 16, 16, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(np.array(255, np.float32), "s"), _init("w1", (8, 3, 3, 3)), _init("b1", (8,)),
                               _init("w2", (8, 8, 1, 1)), _init("b2", (8,))])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    x = RNG.integers(0, 256, (64, 16, 16, 3)).astype(np.uint8)
    result = int8kit.quantize(model, x, output_dir=tmp_path, stem_float=False, progress=False)
    assert {"n", "r", "w1", "w2"} <= set(result.plan.tensors) and not {"img", "t"} & set(result.plan.tensors)
    sess = ort.InferenceSession(str(result.int8_model), providers=["CPUExecutionProvider"])
    got, want = sess.run(None, {"img": x[:8]})[0], ort.InferenceSession(model.SerializeToString()).run(None, {"img": x[:8]})[0]
    assert float(np.sum(got * want) / np.linalg.norm(got) / np.linalg.norm(want)) > 0.999


def test_an_add_kept_float_is_not_fused_back_into_qlinearadd(model_and_stats, tmp_path):
    model, stats, data = model_and_stats
    qmodel = emit_qdq(model, plan(model, stats, QuantConfig(fp_layers=("add1",))))
    path = str(tmp_path / "opt.onnx")
    got = _run(qmodel, data[:8], optimized_path=path)
    ops = [n.op_type for n in onnx.load(path).graph.node]
    assert "QLinearAdd" not in ops
    # the add reads float tensors, and no QuantizeLinear is left writing what nothing reads (onnxruntime
    # may now fuse the float add into the float conv before it)
    producers = {o: n.op_type for n in qmodel.graph.node for o in n.output}
    add = next(n for n in qmodel.graph.node if n.name == "add1")
    assert all(producers.get(i) != "DequantizeLinear" for i in add.input)
    read = {i for n in qmodel.graph.node for i in n.input} | {o.name for o in qmodel.graph.output}
    assert all(o in read for n in qmodel.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear") for o in n.output)
    want = _run(model, data[:8])
    assert float(np.sum(got * want) / np.linalg.norm(got) / np.linalg.norm(want)) > 0.99


def test_a_float_mul_with_an_unquantized_input_leaves_its_producer_fused(tmp_path):
    """A Mul by a constant-derived tensor stays float by rule; it must read the dequantized tensor
    (onnxruntime cannot fuse it anyway), or the conv writing that tensor loses QLinearConv."""
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu"),
        helper.make_node("Mul", ["r1", "gain"], ["m"], name="gate"),
        helper.make_node("Conv", ["m", "w2", "b2"], ["y"], name="conv2"),
    ]
    graph = helper.make_graph(nodes, "gate", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [_init("w1", (16, 8, 3, 3)), _init("b1", (16,)), _init("w2", (16, 16, 1, 1)), _init("b2", (16,)),
                               numpy_helper.from_array((RNG.random((1, 16, 1, 1)) + 0.5).astype(np.float32), "gain")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    data = RNG.standard_normal((64, 8, 8, 8)).astype(np.float32)
    stats = collect(model, data, tensors=candidate_tensors(model), progress=False)
    qplan = plan(model, stats, QuantConfig(stem_float=False))
    assert "gate" in qplan.float_nodes
    path = str(tmp_path / "opt.onnx")
    _run(emit_qdq(model, qplan), data[:4], optimized_path=path)
    assert [n.op_type for n in onnx.load(path).graph.node].count("QLinearConv") == 2


def test_a_concat_input_left_a_few_levels_is_warned_about(caplog):
    nodes = [
        helper.make_node("Conv", ["x", "wa"], ["a"], name="big"),
        helper.make_node("Conv", ["x", "wb"], ["b"], name="small"),
        helper.make_node("Concat", ["a", "b"], ["cat"], name="join", axis=1),
        helper.make_node("Conv", ["cat", "wc"], ["y"], name="reader"),
    ]
    graph = helper.make_graph(nodes, "join", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [_init("wa", (8, 8, 1, 1), 10.0), _init("wb", (8, 8, 1, 1), 0.05), _init("wc", (4, 16, 1, 1))])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    stats = collect(model, RNG.standard_normal((32, 8, 4, 4)).astype(np.float32), tensors=candidate_tensors(model), progress=False)
    with caplog.at_level("WARNING"):
        plan(model, stats, QuantConfig(th_method="max"))
    assert "input 'b'" in caplog.text and "keep reader float" in caplog.text and "input 'a'" not in caplog.text


@pytest.mark.parametrize("op, shift", [("Relu", 1.0), ("Softplus", 2.0), ("NegRelu", -0.1)])
def test_divergence_methods_do_not_collapse_one_sided_tensors_away_from_zero(op, shift):
    """relu(x) + 1, softplus(x) + 2, -relu(x) - 0.1: KL compares histograms from zero and would clip
    every value onto one; such tensors take MSE and keep their whole range."""
    first = [helper.make_node("Relu", ["c"], ["r"]), helper.make_node("Neg", ["r"], ["h"])] if op == "NegRelu" else [helper.make_node(op, ["c"], ["h"])]
    nodes = [helper.make_node("Conv", ["x", "w0"], ["c"], name="first"), *first,
             helper.make_node("Add", ["h", "shift"], ["a"], name="offset"), helper.make_node("Conv", ["a", "w"], ["y"], name="conv")]
    graph = helper.make_graph(nodes, "offset", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8, 6, 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(np.array(shift, np.float32), "shift"), _init("w0", (4, 8, 1, 1), 0.5), _init("w", (4, 4, 1, 1))])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    data = RNG.standard_normal((64, 8, 6, 6)).astype(np.float32)
    stats = collect(model, data, tensors=candidate_tensors(model), progress=False)
    tq = plan(model, stats, QuantConfig(th_method="kl", stem_float=False)).tensors["a"]
    assert tq.method == "mse"
    assert max(abs(tq.min), abs(tq.max)) > 0 and tq.threshold >= 0.8 * max(abs(tq.min), abs(tq.max))


@pytest.mark.parametrize("signed", [False, True])
def test_quant_json_describes_the_zero_points_the_model_holds(model_and_stats, tmp_path, signed):
    from int8kit.emit.records import read_quant_json, write_quant_json

    model, stats, _ = model_and_stats
    qplan = plan(model, stats, QuantConfig(th_method="max", signed_activations=signed))
    assert any(t.dtype == "int8" for t in qplan.tensors.values() if t.kind == "activation")  # c2 is signed
    qmodel = emit_qdq(model, qplan)
    doc = read_quant_json(write_quant_json(qplan, tmp_path / "q.json", model_name="m", config={}))
    inits = {t.name: numpy_helper.to_array(t) for t in qmodel.graph.initializer}
    checked = 0
    for node in qmodel.graph.node:
        if node.op_type == "QuantizeLinear" and node.output[0].endswith("_quantized"):
            name = node.output[0][: -len("_quantized")]
            zp = inits[node.input[2]]
            assert doc["tensors"][name]["dtype"] == str(zp.dtype), name
            assert doc["tensors"][name]["zero_point"] == zp.reshape(-1).tolist(), name
            checked += 1
    assert checked >= 5
