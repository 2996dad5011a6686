"""GPTQ-style weight rounding (``weight_rounding="gptq"``): smaller layer output error on the
calibration data than round-to-nearest, on the plan's own grid, opt-in, and bounded in memory."""

from __future__ import annotations

import tracemalloc

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import int8kit
from int8kit.calib.collect import collect
from int8kit.config import QuantConfig, TuneOptions
from int8kit.errors import ConfigError
from int8kit.plan.planner import candidate_tensors, plan
from int8kit.tune import weight_rounding
from int8kit.tune.weight_rounding import gptq_rounding

RNG = np.random.default_rng(5)
# (node, op, input, weight, bias) of the tiny model's layers
LAYERS = (("conv1", "Conv", "x", "w1", "b1"), ("dw", "Conv", "c", "w2", "b2"), ("fc", "Gemm", "f", "w3", "b3"))


def _model() -> onnx.ModelProto:
    """conv 8->16 3x3, depthwise 3x3, global pool, Gemm 16->6 (transB)."""
    arrays = {"w1": RNG.standard_normal((16, 8, 3, 3)) * 0.2, "b1": RNG.standard_normal(16) * 0.1,
              "w2": RNG.standard_normal((16, 1, 3, 3)) * 0.5, "b2": RNG.standard_normal(16) * 0.1,
              "w3": RNG.standard_normal((6, 16)) * 0.4, "b3": np.zeros(6)}
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w1", "b1"], ["c"], name="conv1", pads=[1, 1, 1, 1]),
         helper.make_node("Conv", ["c", "w2", "b2"], ["d"], name="dw", pads=[1, 1, 1, 1], group=16, strides=[2, 2]),
         helper.make_node("GlobalAveragePool", ["d"], ["p"], name="pool"),
         helper.make_node("Flatten", ["p"], ["f"], name="flat"),
         helper.make_node("Gemm", ["f", "w3", "b3"], ["y"], name="fc", transB=1)],
        "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8, 10, 10])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(v.astype(np.float32), k) for k, v in arrays.items()])
    return onnx.shape_inference.infer_shapes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))


def _data(n: int) -> np.ndarray:
    """Inputs whose channels are correlated (a few latent maps mixed): H is far from diagonal,
    which is where rounding with error feedback differs from rounding each weight alone."""
    latent = RNG.standard_normal((n, 3, 10, 10))
    mix = RNG.standard_normal((8, 3))
    return (np.einsum("ck,nkhw->nchw", mix, latent) + 0.1 * RNG.standard_normal((n, 8, 10, 10))).astype(np.float32)


def _run(model: onnx.ModelProto, feed: dict[str, np.ndarray], names: list[str]) -> list[np.ndarray]:
    m = onnx.ModelProto()
    m.CopyFrom(model)
    del m.graph.output[:]
    m.graph.output.extend(onnx.ValueInfoProto(name=n) for n in names)
    return ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(names, feed)


def _layer_errors(model: onnx.ModelProto, quant_plan, x: np.ndarray) -> dict[str, float]:
    """Per layer, the mean square difference between its FP32 output and its output with the
    plan's dequantized weight and bias, both on the layer's FP32 input."""
    out = {}
    for name, _, inp, w, b in LAYERS:
        node = next(n for n in model.graph.node if n.name == name)
        out_name = node.output[0]
        given, expected = _run(model, {"x": x}, [inp, out_name])
        tq, tb = quant_plan.tensors[w], quant_plan.tensors[b]
        axis_shape = (-1,) + (1,) * (np.ndim(tq.values) - 1)
        wq = np.asarray(tq.values, np.float32) * np.asarray(tq.scale, np.float32).reshape(axis_shape)
        bq = np.asarray(tb.values, np.float32) * np.asarray(tb.scale, np.float32).reshape(-1)
        one = helper.make_graph([node], "one", [helper.make_tensor_value_info(inp, TensorProto.FLOAT, None)],
                                [helper.make_tensor_value_info(out_name, TensorProto.FLOAT, None)],
                                [numpy_helper.from_array(wq, w), numpy_helper.from_array(bq, b)])
        single = helper.make_model(one, opset_imports=[helper.make_opsetid("", 17)])
        got = _run(single, {inp: given}, [out_name])[0]
        out[name] = float(np.mean((got.astype(np.float64) - expected) ** 2))
    return out


def _planned(model: onnx.ModelProto, x: np.ndarray):
    stats = collect(model, x, tensors=candidate_tensors(model), progress=False)
    return plan(model, stats, QuantConfig(th_method="max"))


def test_gptq_lowers_every_layers_output_error_on_the_calibration_data():
    model, x = _model(), _data(48)
    nearest = _planned(model, x)
    rounded, report = gptq_rounding(model, nearest, [{"x": x[:24]}, {"x": x[24:]}], progress=False)
    assert report.layers == 3
    before, after = _layer_errors(model, nearest, x), _layer_errors(model, rounded, x)
    for name in before:  # never worse (a layer that gains nothing keeps its codes) ...
        assert after[name] <= before[name] * 1.001, (name, before, after)
    # ... and clearly better where a conv has many correlated inputs
    assert after["conv1"] < 0.8 * before["conv1"], (before, after)
    assert sum(report.gptq.values()) < sum(report.nearest.values())


def test_weights_stay_on_the_plans_grid():
    model, x = _model(), _data(32)
    nearest = _planned(model, x)
    rounded, _ = gptq_rounding(model, nearest, [{"x": x}], progress=False)
    changed = 0
    for _, _, _, w, b in LAYERS:
        old, new = nearest.tensors[w], rounded.tensors[w]
        assert np.array_equal(old.scale, new.scale) and old.axis == new.axis and old.dtype == new.dtype == "int8"
        assert new.values.dtype == old.values.dtype and new.values.shape == old.values.shape
        assert np.abs(new.values.astype(np.int32)).max() <= 127
        # each weight still takes a grid point near its own value
        step = np.asarray(old.scale, np.float64).reshape((-1,) + (1,) * (old.values.ndim - 1))
        w_float = numpy_helper.to_array(next(t for t in model.graph.initializer if t.name == w))
        assert np.abs(new.values * step - w_float).max() <= 4 * step.max()
        changed += int(np.sum(new.values != old.values))
        assert np.array_equal(nearest.tensors[b].scale, rounded.tensors[b].scale)
    assert changed > 0
    assert nearest.tensors["w1"].values is not rounded.tensors["w1"].values  # the given plan is not modified


def test_default_output_is_unchanged_and_gptq_is_opt_in(tmp_path):
    model, x = _model(), _data(32)
    default = int8kit.quantize(model, x, output_dir=tmp_path / "d", progress=False)
    nearest = int8kit.quantize(model, x, output_dir=tmp_path / "n", weight_rounding="nearest", progress=False)
    gptq = int8kit.quantize(model, x, output_dir=tmp_path / "g", weight_rounding="gptq", progress=False)
    assert TuneOptions().weight_rounding == "nearest" and "weight_rounding" not in default.timings
    assert default.model.SerializeToString() == nearest.model.SerializeToString()
    assert "weight_rounding" in gptq.timings and gptq.run_config.tune.weight_rounding == "gptq"
    weights = [{t.name: numpy_helper.to_array(t) for t in r.model.graph.initializer if t.data_type == TensorProto.INT8}
               for r in (default, gptq)]
    assert weights[0].keys() == weights[1].keys()
    assert any(not np.array_equal(v, weights[1][k]) for k, v in weights[0].items())
    with pytest.raises(ConfigError, match="weight_rounding"):
        TuneOptions(weight_rounding="round")
    stats = tmp_path / "s.npz"
    int8kit.calibrate(model, x, output=stats, progress=False)
    with pytest.raises(ConfigError, match="--data"):
        int8kit.quantize(model, stats=stats, output_dir=tmp_path / "b", weight_rounding="gptq", progress=False)


def test_samples_are_capped_and_layer_inputs_are_not_kept(monkeypatch):
    model, x = _model(), _data(96)
    nearest = _planned(model, x)
    seen: list[int] = []
    real = weight_rounding.make_session

    class Counting:
        def __init__(self, m, **kw):
            self.inner = real(m, **kw)

        def run(self, names, feed):
            seen.append(len(feed["x"]))
            return self.inner.run(names, feed)

    monkeypatch.setattr(weight_rounding, "make_session", Counting)
    peaks = []
    for n in (8, 80):
        seen.clear()
        tracemalloc.start()
        gptq_rounding(model, nearest, [{"x": x[:48]}, {"x": x[48:]}], max_samples=n, progress=False)
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
        assert sum(seen) == n and max(seen) <= weight_rounding._RUN_SAMPLES
    # ten times the samples, about the same peak: inputs are summed into H run by run, not kept
    assert peaks[1] < 1.5 * peaks[0], peaks
