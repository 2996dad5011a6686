"""The convs counted as float because onnxruntime cannot give them an integer kernel are exactly
those onnxruntime itself leaves as float Conv after its graph optimizations."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

import int8kit
from int8kit.analysis.ort_fusion import convs_run_in_float


def _chain(path) -> str:
    """x -> conv_a -> Relu -> conv_b -> Relu -> conv_c -> Add(conv_b's output) -> y."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((8, 8, 3, 3)).astype(np.float32) * 0.2, n) for n in ("wa", "wb", "wc")]
    nodes = [
        helper.make_node("Conv", ["x", "wa"], ["a"], name="conv_a", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["a"], ["ar"], name="relu_a"),
        helper.make_node("Conv", ["ar", "wb"], ["b"], name="conv_b", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["b"], ["br"], name="relu_b"),
        helper.make_node("Conv", ["br", "wc"], ["c"], name="conv_c", pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["c", "br"], ["y"], name="add"),
    ]
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8, 8, 8])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return str(path)


def _float_convs_in_onnxruntime(model: onnx.ModelProto, tmp_path) -> set[str]:
    """Names of the float Conv nodes onnxruntime keeps after optimizing (QLinearConv are integer)."""
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED  # QDQ fusion, no layout rewrites
    opts.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return {n.name for n in onnx.load(opts.optimized_model_filepath).graph.node if n.op_type in ("Conv", "FusedConv")}


def test_a_conv_feeding_a_float_conv_is_named_and_onnxruntime_agrees(tmp_path):
    model = _chain(tmp_path / "chain.onnx")
    calib = np.random.default_rng(1).standard_normal((16, 8, 8, 8)).astype(np.float32)
    plain = int8kit.quantize(model, calib, output_dir=None, th_method="max", stem_float=False, progress=False)
    assert convs_run_in_float(plain.model) == []
    assert _float_convs_in_onnxruntime(plain.model, tmp_path) == set()

    floated = int8kit.quantize(model, calib, output_dir=None, th_method="max", stem_float=False, progress=False,
                               fp_layers=["conv_c"])
    assert "conv_b" not in floated.plan.float_nodes  # planned INT8 ...
    assert convs_run_in_float(floated.model) == ["conv_b"]  # ... but its output also feeds float conv_c
    in_ort = _float_convs_in_onnxruntime(floated.model, tmp_path)
    assert "conv_b" in in_ort and "conv_a" not in in_ort


def test_float_cost_adds_the_feeding_conv_unless_it_is_float_already(tmp_path):
    from int8kit.auto.macs import float_cost, layer_macs

    model = onnx.load(_chain(tmp_path / "chain.onnx"))
    macs = layer_macs(model, {"x": (1, 8, 8, 8)})
    assert set(macs) == {"conv_a", "conv_b", "conv_c"} and all(v > 0 for v in macs.values())
    cost = float_cost(model, macs, set())
    assert cost == {"conv_a": macs["conv_a"], "conv_b": macs["conv_b"] + macs["conv_a"],
                    "conv_c": macs["conv_c"] + macs["conv_b"]}
    assert float_cost(model, macs, {"conv_b"})["conv_c"] == macs["conv_c"]


def test_the_model_summary_and_quantize_name_the_conv_onnxruntime_runs_in_float(tmp_path, capsys):
    from int8kit.analysis.ort_fusion import RUNS_IN_FLOAT
    from int8kit.analysis.summary import model_summary
    from int8kit.cli import main

    model = _chain(tmp_path / "chain.onnx")
    calib = np.random.default_rng(1).standard_normal((16, 8, 8, 8)).astype(np.float32)
    result = int8kit.quantize(model, calib, output_dir=None, th_method="max", stem_float=False, progress=False,
                              fp_layers=["conv_c"])
    shapes = {"x": (1, 8, 8, 8)}
    by_plan = {f.name: f.reason for f in model_summary(result.optimized_model, result.plan, shapes).float_nodes}
    assert "conv_b" not in by_plan and "conv_c" in by_plan
    summary = model_summary(result.optimized_model, result.plan, shapes, result.model)
    reasons = {f.name: f.reason for f in summary.float_nodes}
    assert reasons["conv_b"] == RUNS_IN_FLOAT and "conv_a" not in reasons
    assert summary.int8_mac_share < model_summary(result.optimized_model, result.plan, shapes).int8_mac_share

    np.save(tmp_path / "calib.npy", calib)
    assert main(["quantize", model, "--data", str(tmp_path / "calib.npy"), "-o", str(tmp_path / "out"),
                 "--th-method", "max", "--quantize-stem", "--fp-layers", "conv_c", "--no-progress", "--no-latency-check"]) == 0
    assert f"conv_b: {RUNS_IN_FLOAT}" in capsys.readouterr().out


def test_a_relu_kept_by_signed_activations_is_the_reason_and_onnxruntime_agrees(tmp_path):
    from int8kit.analysis.ort_fusion import ACTIVATION_KEPT, unfused_convs
    from int8kit.analysis.speed import time_costs

    model = _chain(tmp_path / "chain.onnx")
    calib = np.random.default_rng(1).standard_normal((16, 8, 8, 8)).astype(np.float32)
    signed = int8kit.quantize(model, calib, output_dir=None, th_method="max", stem_float=False, progress=False,
                              signed_activations=True)
    # int8 with zero point 0 reaches below 0: each Relu stays between its conv and the QuantizeLinear
    assert unfused_convs(signed.model) == {"conv_a": ACTIVATION_KEPT, "conv_b": ACTIVATION_KEPT}
    assert _float_convs_in_onnxruntime(signed.model, tmp_path) >= {"conv_a", "conv_b"}
    assert any("runs the 2 convs before them in float" in cost for cost in time_costs(signed.model, signed.plan))


def test_a_conv_onnxruntime_runs_in_float_reads_float_weights_with_the_same_values(tmp_path):
    """DequantizeLinear weights keep a conv that runs in float off onnxruntime's fast float kernels;
    the emitter writes them as their dequantized values, so the model computes the same."""
    import dataclasses

    from int8kit.emit.qdq import emit_qdq

    model = _chain(tmp_path / "chain.onnx")
    calib = np.random.default_rng(1).standard_normal((16, 8, 8, 8)).astype(np.float32)
    floated = int8kit.quantize(model, calib, output_dir=None, th_method="max", stem_float=False, progress=False,
                               fp_layers=["conv_c"])
    inits = {t.name: numpy_helper.to_array(t) for t in floated.model.graph.initializer}
    dequantized = {n.output[0] for n in floated.model.graph.node if n.op_type == "DequantizeLinear"}
    assert "wb" in inits and inits["wb"].dtype == np.float32 and "wb" not in dequantized  # conv_b runs in float
    assert "wa" in dequantized and "wa" not in inits  # conv_a still fuses into QLinearConv
    tq = floated.plan.tensors["wb"]
    np.testing.assert_array_equal(inits["wb"], tq.values.astype(np.float32) * np.asarray(tq.scale, np.float32).reshape(-1, 1, 1, 1))

    with_dq = emit_qdq(floated.optimized_model, dataclasses.replace(floated.plan, float_weights_when_unfused=False))
    assert "wb" in {n.output[0] for n in with_dq.graph.node if n.op_type == "DequantizeLinear"}
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # the graphs as written
    x = {"x": calib[:4]}
    outs = [ort.InferenceSession(m.SerializeToString(), opts, providers=["CPUExecutionProvider"]).run(None, x)[0]
            for m in (floated.model, with_dq)]
    np.testing.assert_array_equal(outs[0], outs[1])

    # OpenVINO runs that conv in INT8 with a float output: its weights stay dequantized there
    openvino = int8kit.quantize(model, calib, output_dir=None, th_method="max", stem_float=False, progress=False,
                                fp_layers=["conv_c"], target="openvino")
    assert "wb" in {n.output[0] for n in openvino.model.graph.node if n.op_type == "DequantizeLinear"}


def test_bn_update_leaves_out_a_conv_onnxruntime_runs_in_float(tmp_path):
    """--update-bn re-normalizes INT8 convs through their weights' DequantizeLinear; a conv that runs
    in float has float weights and is not one of them (it used to fail with a KeyError)."""
    from int8kit.tune.bn_update import update_bn

    rng = np.random.default_rng(2)
    model = onnx.load(_chain(tmp_path / "chain.onnx"))
    for conv, bias in zip([n for n in model.graph.node if n.op_type == "Conv"], ("ba", "bb", "bc")):
        model.graph.initializer.append(numpy_helper.from_array(rng.standard_normal(8).astype(np.float32) * 0.1, bias))
        conv.input.append(bias)
    calib = rng.standard_normal((32, 8, 8, 8)).astype(np.float32)
    floated = int8kit.quantize(model, calib, output_dir=None, th_method="max", stem_float=False, progress=False,
                               fp_layers=["conv_c"])
    assert convs_run_in_float(floated.model) == ["conv_b"]
    batches = [{"x": calib[k:k + 8]} for k in range(0, 32, 8)]
    _, report = update_bn(floated.optimized_model, floated.plan, batches, iterations=4, progress=False)
    assert set(report.gains) == {"conv_a"}


def test_analyze_reads_back_the_integer_weights_of_a_conv_written_in_float(tmp_path):
    """``int8kit analyze`` rebuilds the plan from quant.json and the INT8 file; a conv that runs in
    float holds its weights as dequantized floats there, and their integers come back exactly."""
    from int8kit.analysis.sensitivity import resolve_plan

    model = _chain(tmp_path / "chain.onnx")
    calib = np.random.default_rng(1).standard_normal((16, 8, 8, 8)).astype(np.float32)
    np.save(tmp_path / "calib.npy", calib)
    result = int8kit.quantize(model, calib, output_dir=tmp_path / "out", th_method="max", stem_float=False,
                              progress=False, fp_layers=["conv_c"])
    rebuilt, _ = resolve_plan(result.optimized_model, str(result.int8_model))
    for weight in ("wa", "wb"):  # dequantized in the file, and written as floats
        np.testing.assert_array_equal(rebuilt.tensors[weight].values, result.plan.tensors[weight].values)
    analysis = int8kit.analyze(model, str(result.int8_model), str(tmp_path / "calib.npy"), progress=False)
    assert {"conv_a", "conv_b"} <= {layer.layer for layer in analysis.layers}


def test_the_signed_form_keeps_int8_weights_on_the_convs_it_runs_in_float(tmp_path):
    """--signed-activations keeps each Relu as a node (onnxruntime then runs the convs in float),
    but the form is TensorRT's: its weights stay INT8 behind DequantizeLinear."""
    model = _chain(tmp_path / "chain.onnx")
    calib = np.random.default_rng(1).standard_normal((16, 8, 8, 8)).astype(np.float32)
    signed = int8kit.quantize(model, calib, output_dir=None, th_method="max", stem_float=False, progress=False,
                              signed_activations=True)
    dequantized = {n.output[0] for n in signed.model.graph.node if n.op_type == "DequantizeLinear"}
    assert {"wa", "wb", "wc"} <= dequantized
