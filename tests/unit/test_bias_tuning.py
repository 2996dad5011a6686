"""Empirical bias correction moves INT32 biases until each conv's output mean matches FP32."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import int8kit
from int8kit.calib.collect import collect
from int8kit.tune.bias_tuning import tune_biases
from int8kit.emit.qdq import emit_qdq
from int8kit.errors import ConfigError, DataError
from int8kit.config import QuantConfig, TuneOptions
from int8kit.plan.planner import candidate_tensors, plan

RNG = np.random.default_rng(11)


def _two_convs() -> onnx.ModelProto:
    w1 = (RNG.standard_normal((8, 8, 3, 3)) * 0.2).astype(np.float32)
    w2 = (RNG.standard_normal((4, 8, 1, 1)) * 0.3).astype(np.float32)
    b1, b2 = (RNG.standard_normal(8) * 0.1).astype(np.float32), np.zeros(4, np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w1", "b1"], ["c"], name="conv1", pads=[1, 1, 1, 1]),
         helper.make_node("Conv", ["c", "w2", "b2"], ["y"], name="conv2")],
        "two_convs", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(a, n) for a, n in ((w1, "w1"), (w2, "w2"), (b1, "b1"), (b2, "b2"))],
    )
    return onnx.shape_inference.infer_shapes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))


def _channel_means(model: onnx.ModelProto, x: np.ndarray, name: str) -> np.ndarray:
    m = onnx.ModelProto()
    m.CopyFrom(model)
    del m.graph.output[:]
    m.graph.output.extend([onnx.ValueInfoProto(name=name)])
    out = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run([name], {"x": x})[0]
    return out.mean(axis=(0, 2, 3))


def test_a_shifted_bias_is_moved_back_conv_by_conv():
    model = _two_convs()
    x = RNG.standard_normal((32, 8, 6, 6)).astype(np.float32)
    stats = collect(model, x, tensors=candidate_tensors(model), progress=False)
    quant_plan = plan(model, stats, QuantConfig(th_method="max"))
    int8 = emit_qdq(model, quant_plan)
    # knock conv1's channel 0 off by 0.5: conv2's output moves with it
    bias = next(t for t in int8.graph.initializer if t.name == "b1_quantized")
    steps = int(round(0.5 / float(np.asarray(quant_plan.tensors["b1"].scale).reshape(-1)[0])))
    shifted = numpy_helper.to_array(bias).copy()
    shifted[0] += steps
    bias.CopyFrom(numpy_helper.from_array(shifted, bias.name))
    before = np.abs(_channel_means(int8, x, "y") - _channel_means(model, x, "y")).max()
    tuned, changed = tune_biases(model, int8, quant_plan, [{"x": x[:16]}, {"x": x[16:]}], progress=False)
    after = np.abs(_channel_means(tuned, x, "y") - _channel_means(model, x, "y")).max()
    assert changed >= 1 and after < before / 10, (before, after)
    tuned_bias = next(numpy_helper.to_array(t) for t in tuned.graph.initializer if t.name == "b1_quantized")
    assert abs(int(tuned_bias[0]) - int(shifted[0]) + steps) <= 0.05 * steps  # moved back by about the shift


def test_quantize_with_bias_tuning_reads_the_first_samples_again(tmp_path):
    model = _two_convs()
    x = RNG.standard_normal((24, 8, 6, 6)).astype(np.float32)
    batches = ({"x": x[i:i + 4]} for i in range(0, 24, 4))  # a one-shot stream
    result = int8kit.quantize(model, batches, output_dir=tmp_path, bias_tuning=8, progress=False)
    assert "bias_tuning" in result.timings and result.run_config.tune.bias_tuning == 8
    plain = int8kit.quantize(model, x, output_dir=tmp_path / "plain", progress=False)
    biases = [{t.name: numpy_helper.to_array(t) for t in onnx.load(r.int8_model).graph.initializer
               if t.data_type == TensorProto.INT32} for r in (result, plain)]
    assert result.bias_tuned == sum(not np.array_equal(v, biases[1][k]) for k, v in biases[0].items())
    with pytest.raises(ConfigError, match="--data"):
        stats = tmp_path / "s.npz"
        int8kit.calibrate(model, x, output=stats, progress=False)
        int8kit.quantize(model, stats=stats, output_dir=tmp_path / "b", bias_tuning=8, progress=False)
    with pytest.raises(ConfigError, match="bias-tuning"):
        TuneOptions(bias_tuning=-1)


def test_tuning_runs_split_batches_by_input_bytes_and_keep_every_sample():
    from int8kit.tune.bias_tuning import _split

    x = np.arange(10 * 256, dtype=np.float32).reshape(10, 256)  # 1 KiB a sample
    ids = np.arange(10, dtype=np.int64)[:, None]
    parts = _split([{"x": x[:7], "ids": ids[:7]}, {"x": x[7:], "ids": ids[7:]}], budget=3 * 1032)
    assert [len(p["x"]) for p in parts] == [3, 3, 1, 3]
    np.testing.assert_array_equal(np.concatenate([p["x"] for p in parts]), x)
    np.testing.assert_array_equal(np.concatenate([p["ids"] for p in parts]), ids)
    assert [len(p["x"]) for p in _split([{"x": x}], budget=10)] == [1] * 10  # one sample at least


def test_a_fixed_batch_size_is_not_split(tmp_path, monkeypatch):
    import int8kit.tune.bias_tuning as bt

    monkeypatch.setattr(bt, "_RUN_INPUT_BYTES", 1)  # would split every batch into single samples
    model = _two_convs()
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 4  # the model takes 4 samples a run
    x = RNG.standard_normal((16, 8, 6, 6)).astype(np.float32)
    result = int8kit.quantize(model, x, output_dir=tmp_path, bias_tuning=8, batch_size=4, progress=False)
    assert "bias_tuning" in result.timings


def test_only_values_inside_the_range_count_as_following_the_bias():
    from int8kit.tune.bias_tuning import _Target

    relu6 = _Target(bias="b", bias_scale=np.ones(2), step_inputs=(), quantized="q", scale=6 / 255, zero_point=0,
                    tensor="t", lo=0.0, hi=6.0)
    q = np.zeros((2, 2, 10), np.uint8)
    q[:, 0, :5] = 100  # channel 0: half at 0 (clipped), half inside
    q[:, 1, :8] = 40
    q[:, 1, 8:] = 255  # channel 1: 80 % inside, 20 % at the top
    np.testing.assert_allclose(relu6.active([q[:1], q[1:]]), [0.5, 0.8])
    np.testing.assert_allclose(relu6.mean([q]), [50 * 6 / 255, (0.8 * 40 + 0.2 * 255) * 6 / 255])


def test_a_bias_pushed_into_the_relu_floor_is_moved_back_in_one_step():
    """With half a channel clipped at 0, the mean follows a bias change only half as much."""
    model = _two_convs()
    relu = helper.make_node("Relu", ["c"], ["c_relu"], name="relu")
    model.graph.node.insert(1, relu)
    model.graph.node[2].input[0] = "c_relu"
    x = RNG.standard_normal((32, 8, 6, 6)).astype(np.float32)
    stats = collect(model, x, tensors=candidate_tensors(model), progress=False)
    quant_plan = plan(model, stats, QuantConfig(th_method="max"))
    int8 = emit_qdq(model, quant_plan)
    bias = next(t for t in int8.graph.initializer if t.name == "b1_quantized")
    step = float(np.asarray(quant_plan.tensors["b1"].scale).reshape(-1)[0])
    shifted = numpy_helper.to_array(bias).copy()
    shifted -= int(round(0.3 / step))  # every channel pushed down: more values fall below 0
    bias.CopyFrom(numpy_helper.from_array(shifted, bias.name))
    tuned, _ = tune_biases(model, int8, quant_plan, [{"x": x}], progress=False)
    ref = _channel_means(model, x, "c_relu")
    before = np.abs(_channel_means(int8, x, "c_relu") - ref).max()
    after = np.abs(_channel_means(tuned, x, "c_relu") - ref).max()
    assert after < before / 4, (before, after)  # 0.25 -> 0.05; 0.15 without dividing by the active share


def test_bias_tuning_samples_are_bounded_in_memory(tmp_path, monkeypatch):
    import int8kit.pipeline as pipeline

    model = _two_convs()
    x = RNG.standard_normal((24, 8, 6, 6)).astype(np.float32)  # 1152 bytes a sample
    monkeypatch.setattr(pipeline, "TUNING_BYTES", 10 * 1152)
    with pytest.raises(DataError, match=r"--bias-tuning 16 \(16 samples\) are kept in memory.*ask for at most 10 samples"):
        int8kit.quantize(model, x, output_dir=tmp_path, bias_tuning=16, progress=False)
    assert int8kit.quantize(model, x, output_dir=tmp_path, bias_tuning=8, progress=False).bias_tuned >= 0
