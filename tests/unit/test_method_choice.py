"""``--th-method auto``: per tensor, the candidate method with least estimated error of its readers' outputs."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import int8kit
from int8kit.calib.collect import collect
from int8kit.calib.histogram import Histogram
from int8kit.calib.stats import Stats, TensorStats
from int8kit.config import LayerOverride, QuantConfig
from int8kit.plan.context import clear_plan_caches
from int8kit.plan.method_choice import _weight_gain
from int8kit.plan.planner import candidate_tensors, plan
from int8kit.thresholds import Target, compute_range
from int8kit.thresholds.auto import CANDIDATES
from int8kit.thresholds.range_error import range_error


def _mlp(w1: np.ndarray, w2: np.ndarray) -> onnx.ModelProto:
    """x -> MatMul(w1) -> Relu -> r -> MatMul(w2) -> y."""
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"], name="mm1"), helper.make_node("Relu", ["h"], ["r"], name="relu"),
             helper.make_node("MatMul", ["r", "w2"], ["y"], name="mm2")]
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", w1.shape[0]])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(w1.astype(np.float32), "w1"), numpy_helper.from_array(w2.astype(np.float32), "w2")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.fixture()
def summing_reader():
    """A Relu output read by a MatMul with weights of one sign: every clipped value shifts every output
    the same way, so KL's clipping (the Relu tail) adds up in the reader."""
    clear_plan_caches()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((512, 16)).astype(np.float32)
    w1, w2 = rng.standard_normal((16, 32)) / 4, np.abs(rng.standard_normal((32, 8)))
    model = _mlp(w1, w2)
    stats = collect(model, x, tensors=candidate_tensors(model), progress=False)
    r = np.maximum(x.astype(np.float64) @ w1, 0.0)
    return model, stats, r, w2


def _reader_error(tq, r: np.ndarray, w2: np.ndarray) -> float:
    """Mean squared error of the reader's output with ``r`` quantized as ``tq`` says (uint8 grid)."""
    scale = float(tq.scale)
    q = np.clip(np.round(r / scale) + int(tq.zero_point), 0, 255) - int(tq.zero_point)
    return float(np.mean(((q * scale) @ w2 - r @ w2) ** 2))


def test_auto_avoids_kl_where_its_clipping_adds_up_in_the_reader(summing_reader):
    model, stats, r, w2 = summing_reader
    auto = plan(model, stats, QuantConfig(th_method="auto"))
    kl = plan(model, stats, QuantConfig(th_method="kl"))
    choice = auto.method_choices["r"]
    assert kl.tensors["r"].hi < 0.95 * stats.tensors["r"].hist.max  # KL clips the tail here
    assert choice["method"] != "kl" and auto.tensors["r"].method == choice["method"]
    assert choice["bias_gain"] > 5  # positive weights: a shared error adds up over the inputs
    assert choice["scores"]["kl"] > 1.5 * choice["scores"][choice["method"]]
    # what the estimate predicts is what the reader's output really gets
    assert _reader_error(auto.tensors["r"], r, w2) < 0.7 * _reader_error(kl.tensors["r"], r, w2)


def test_auto_clips_a_far_outlier_that_max_would_keep():
    """One value 50x beyond a hundred million others: keeping it (max) costs every value its
    rounding, clipping it costs one value: here clipping helps, and auto clips where max does not."""
    clear_plan_caches()
    rng = np.random.default_rng(1)
    bulk = np.abs(rng.standard_normal(200_000))
    hist = Histogram.from_values(np.concatenate([bulk, [50.0]]))
    counts = hist.counts * 500  # 10**8 values of the same shape, and still one at 50
    counts[min(int((50.0 + hist.edge) / hist.width), counts.size - 1)] = 1
    far = Histogram(counts=counts, edge=hist.edge, min=0.0, max=50.0)
    model = _mlp(np.eye(4), rng.standard_normal((4, 4)))
    stats = Stats({"x": TensorStats(Histogram.from_values(rng.standard_normal(1000))), "r": TensorStats(far)}, 64, "", far.bins)
    auto = plan(model, stats, QuantConfig(th_method="auto"))
    assert auto.method_choices["r"]["method"] != "max"
    assert auto.tensors["r"].hi < 0.5 * far.max
    # the exact error of QuantizeLinear's grid over the histogram: auto's range beats max's
    def exact(hi: float) -> float:
        v, n = far.centers(), far.counts.astype(np.float64)
        q = np.clip(np.round(v / (hi / 255)), 0, 255) * (hi / 255)
        return float(n @ (q - v) ** 2 / n.sum())
    assert exact(auto.tensors["r"].hi) < 0.1 * exact(far.max)


def test_the_choice_is_recorded_in_quant_json(summing_reader, tmp_path):
    model, _, _, _ = summing_reader
    x = np.random.default_rng(0).standard_normal((256, 16)).astype(np.float32)
    res = int8kit.quantize(model, x, output_dir=tmp_path, th_method="auto", progress=False, check_latency=False)
    doc = json.loads(res.quant_json.read_text())
    entry = doc["method_choice"]["r"]
    assert entry["method"] == doc["tensors"]["r"]["method"] != "auto"
    assert set(entry["scores"]) == set(CANDIDATES) and entry["readers"] == ["mm2"]
    assert entry["method"] == min(entry["scores"], key=entry["scores"].get)
    assert doc["config"]["quantization"]["th_method"] == "auto"
    # a plan under one method (no choice made) writes no method_choice at all
    kl = int8kit.quantize(model, x, output_dir=tmp_path / "kl", th_method="kl", progress=False, check_latency=False)
    assert "method_choice" not in json.loads(kl.quant_json.read_text())


def test_overrides_win_over_auto_and_can_ask_for_it(summing_reader):
    model, stats, _, _ = summing_reader
    fixed = plan(model, stats, QuantConfig(th_method="auto", overrides={"r": LayerOverride(th_method="kl")}))
    assert fixed.tensors["r"].method == "kl" and "r" not in fixed.method_choices
    asked = plan(model, stats, QuantConfig(th_method="kl", overrides={"relu": LayerOverride(th_method="auto")}))
    assert asked.tensors["r"].method == asked.method_choices["r"]["method"] != "kl"
    # rules still come first: the model input keeps max
    assert plan(model, stats, QuantConfig(th_method="auto")).tensors["x"].method == "max"


def test_replans_with_auto_equal_fresh_plans(summing_reader):
    model, stats, _, _ = summing_reader
    config = QuantConfig(th_method="auto")
    first = plan(model, stats, config)
    plan(model, stats, QuantConfig(th_method="kl"))
    again = plan(model, stats, config)
    clear_plan_caches()
    fresh = plan(model, stats, config)
    for other in (again, fresh):
        assert other.method_choices == first.method_choices
        for name, tq in first.tensors.items():
            assert other.tensors[name].method == tq.method
            np.testing.assert_array_equal(other.tensors[name].scale, tq.scale)
            np.testing.assert_array_equal(other.tensors[name].zero_point, tq.zero_point)


def test_bias_gain_of_a_reader():
    rng = np.random.default_rng(2)
    conv = helper.make_node("Conv", ["x", "w"], ["y"], name="c")
    ones = np.ones((4, 3, 3, 3))
    assert _weight_gain(conv, ones) == pytest.approx(27.0)  # every output adds 27 equal weights
    signed = np.concatenate([ones, -ones], axis=1)  # +w and -w: a shared error cancels
    assert _weight_gain(conv, signed) == pytest.approx(0.0)
    w = rng.standard_normal((64, 256))  # MatMul (K, N) of random sign: close to 1
    assert 0.5 < _weight_gain(helper.make_node("MatMul", ["x", "w"], ["y"]), w) < 2.0


@pytest.mark.parametrize("lo, hi", [(0.0, 4.5), (0.0, 1.5), (-1.0, 2.0)])
def test_range_error_matches_simulation(lo, hi):
    rng = np.random.default_rng(3)
    x = np.abs(rng.standard_normal(400_000)) if lo == 0.0 else rng.standard_normal(400_000)
    step = (hi - lo) / 255
    q = np.clip(np.round((x - lo) / step), 0, 255) * step + lo
    bias, square = range_error(Histogram.from_values(x), lo, hi, step)
    assert bias == pytest.approx(np.mean(q - x), rel=0.05, abs=1e-4)
    assert square == pytest.approx(np.mean((q - x) ** 2), rel=0.05)
    if lo == 0.0 and hi < x.max():
        assert bias < 0  # clipping the top pulls values down


def test_auto_on_a_histogram_alone_is_the_least_mse_candidate():
    h = Histogram.from_values(np.abs(np.random.default_rng(4).standard_t(3, 100_000)))
    lo, hi = compute_range("auto", h, Target())
    ranges = {m: compute_range(m, h, Target()) for m in CANDIDATES}
    assert (lo, hi) in ranges.values()
    errors = {m: range_error(h, *r, r[1] / 255)[1] for m, r in ranges.items()}
    assert range_error(h, lo, hi, hi / 255)[1] == min(errors.values())


def test_layernorm_outputs_keep_max_under_auto():
    """The rule before the estimate: a transformer's few outlier features stay inside the range."""
    clear_plan_caches()
    rng = np.random.default_rng(5)
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"], name="mm1"),
             helper.make_node("LayerNormalization", ["h", "g", "b"], ["n"], name="ln", axis=-1),
             helper.make_node("MatMul", ["n", "w2"], ["y"], name="mm2")]
    inits = [numpy_helper.from_array(a.astype(np.float32), k) for k, a in
             (("w1", rng.standard_normal((16, 16))), ("g", np.ones(16)), ("b", np.zeros(16)), ("w2", rng.standard_normal((16, 4))))]
    graph = helper.make_graph(nodes, "ln", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    x = rng.standard_normal((256, 16)).astype(np.float32)
    stats = collect(model, x, tensors=candidate_tensors(model), progress=False)
    auto = plan(model, stats, QuantConfig(th_method="auto"))
    assert auto.tensors["n"].method == "max" and "n" not in auto.method_choices
    assert plan(model, stats, QuantConfig(th_method="kl")).tensors["n"].method == "mse"  # the kl rule is unchanged
