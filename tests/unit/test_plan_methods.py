"""Which threshold method the planner picks per tensor when the user chose a divergence method."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from int8kit.calib.collect import collect
from int8kit.config import LayerOverride, QuantConfig
from int8kit.emit.qdq import emit_qdq
from int8kit.plan import method_choice
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


def test_signed_tensors_use_mse_instead_of_a_divergence_method(monkeypatch):
    monkeypatch.setattr(method_choice, "DIVERGENCE_GUARD", float("inf"))  # the guard has its own test below
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


def _stats():
    model = _model()
    x = np.random.default_rng(8).standard_normal((64, 8, 4, 4)).astype(np.float32)
    return model, collect(model, x, tensors=candidate_tensors(model), progress=False)


def test_no_method_rules_applies_the_global_method_to_every_tensor():
    model, stats = _stats()
    ruled = plan(model, stats, QuantConfig(th_method="kl"))
    assert ruled.tensors["x"].method == "max" and ruled.tensors["s"].method == "mse"
    plain = plan(model, stats, QuantConfig(th_method="kl", method_rules=False))
    assert {t.method for t in plain.tensors.values() if t.kind == "activation"} == {"kl"}


def test_an_override_inherits_the_global_parameters_of_its_method_or_takes_its_own():
    model, stats = _stats()
    glob = plan(model, stats, QuantConfig(th_method="percentile", th_params={"percentile": 99.0}))
    same = plan(model, stats, QuantConfig(th_method="percentile", th_params={"percentile": 99.0},
                                          overrides={"r": LayerOverride(th_method="percentile")}))
    own = plan(model, stats, QuantConfig(th_method="percentile", th_params={"percentile": 99.0},
                                         overrides={"r": LayerOverride.from_dict("r", {"th_method": "percentile",
                                                                                       "th_params": {"percentile": 100.0}})}))
    assert same.tensors["r"].hi == glob.tensors["r"].hi
    assert own.tensors["r"].hi == stats.tensors["r"].hist.max > glob.tensors["r"].hi
    # the manual's per-layer IFMR search (conv1: range 0.8-1.2, step 0.02) under another global method
    ifmr = {"th_method": "ifmr", "th_params": {"search_range_start": 0.2, "search_range_end": 0.3, "search_step": 0.1}}
    narrow = plan(model, stats, QuantConfig(th_method="kl", overrides={"r": LayerOverride.from_dict("r", ifmr)}))
    default = plan(model, stats, QuantConfig(th_method="kl", overrides={"r": LayerOverride(th_method="ifmr")}))
    assert narrow.tensors["r"].method == "ifmr" and narrow.tensors["r"].hi < default.tensors["r"].hi


def _output_error(model: onnx.ModelProto, qplan) -> float:
    import onnxruntime as ort

    x = {"x": np.random.default_rng(9).standard_normal((32, 8, 4, 4)).astype(np.float32)}
    fp32, int8 = (ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, x)[0]
                  for m in (model, emit_qdq(model, qplan)))
    return float(np.mean((fp32 - int8) ** 2))


def test_a_divergence_range_that_costs_its_readers_far_more_error_is_replaced(monkeypatch):
    model, stats = _stats()
    guarded = plan(model, stats, QuantConfig(th_method="kl"))
    why = guarded.method_choices["r"]
    ratio = why["scores"]["kl"] / why["scores"][why["method"]]
    # KL clips this ReLU output hard (64 samples): its readers' estimated error is > 10x max's or mse's
    assert ratio > method_choice.DIVERGENCE_GUARD
    assert guarded.tensors["r"].method == why["method"] in ("mse", "max") and "guard" in why["why"]
    monkeypatch.setattr(method_choice, "DIVERGENCE_GUARD", ratio * 1.01)  # just above: KL's range stays
    kept = plan(model, stats, QuantConfig(th_method="kl"))
    assert kept.tensors["r"].method == "kl" and "r" not in kept.method_choices
    assert kept.tensors["r"].hi < guarded.tensors["r"].hi
    # the estimate is right about the outputs: the replaced range gives the model a smaller output error
    assert _output_error(model, guarded) < _output_error(model, kept) / 2
    monkeypatch.setattr(method_choice, "DIVERGENCE_GUARD", ratio * 0.99)
    assert plan(model, stats, QuantConfig(th_method="jsd")).tensors["r"].method in ("mse", "max")
    # the user's own choices are not second-guessed: no rules, an override, th_params
    assert plan(model, stats, QuantConfig(th_method="kl", method_rules=False)).tensors["r"].method == "kl"
    explicit = plan(model, stats, QuantConfig(th_method="kl", overrides={"r": LayerOverride(th_method="kl")}))
    assert explicit.tensors["r"].method == "kl" and not explicit.method_choices


def test_the_guard_is_recorded_and_named_where_the_methods_are_explained(tmp_path):
    import json

    import int8kit
    from int8kit.analysis.explain import method_origin, quant_config
    from int8kit.plan.graph_facts import GraphFacts

    model = _model()
    onnx.save(model, tmp_path / "m.onnx")
    x = np.random.default_rng(8).standard_normal((64, 8, 4, 4)).astype(np.float32)
    result = int8kit.quantize(str(tmp_path / "m.onnx"), x, output_dir=tmp_path / "out", check_latency=False,
                              progress=False)
    doc = json.loads(result.quant_json.read_text())
    choice = doc["method_choice"]["r"]
    assert doc["tensors"]["r"]["method"] == choice["method"] != "kl" and "guard" in choice["why"]
    origin = method_origin(GraphFacts.of(model), "r", doc["tensors"]["r"], quant_config(doc), doc["method_choice"])
    assert origin.startswith("int8kit rule: kl's range would give its readers") and "guard" in origin


def test_the_manuals_th_strategy_values():
    model, stats = _stats()
    assert LayerOverride.from_dict("r", {"th_method": "USE_DEFAULT"}).th_method is None
    assert LayerOverride.from_dict("r", {"th_method": "use_max"}).th_method == "max"
    use_kl = {"r": LayerOverride.from_dict("r", {"th_method": "USE_KL"})}
    assert plan(model, stats, QuantConfig(th_method="symkl", overrides=use_kl)).tensors["r"].method == "symkl"
    assert plan(model, stats, QuantConfig(th_method="max", overrides=use_kl)).tensors["r"].method == "kl"


def test_parameters_a_method_does_not_take_fail_when_the_config_is_made():
    import pytest

    from int8kit.errors import ConfigError

    with pytest.raises(ConfigError, match="--th-param gives threshold method 'kl' unknown parameter"):
        QuantConfig(th_method="kl", th_params={"search_step": 0.05})
    bad = {"r": LayerOverride.from_dict("r", {"th_method": "ifmr", "th_params": {"percentile": 99}})}
    with pytest.raises(ConfigError, match="the override for 'r' gives threshold method 'ifmr'"):
        QuantConfig(th_method="kl", overrides=bad)
    use_kl = {"r": LayerOverride.from_dict("r", {"th_method": "USE_KL", "th_params": {"bogus": 1}})}
    with pytest.raises(ConfigError, match="the override for 'r' gives threshold method 'symkl'"):
        QuantConfig(th_method="symkl", overrides=use_kl)
    with pytest.raises(ConfigError, match="th_params without a method"):
        LayerOverride.from_dict("r", {"th_params": {"percentile": 99}})
