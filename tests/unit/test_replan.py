"""Re-planning from one set of statistics: cached results are hit, and every plan equals the plan a
fresh planner (no caches) makes for the same configuration."""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx
import onnx.parser
import pytest
from onnx import helper, numpy_helper

from int8kit.calib.collect import collect
from int8kit.config import QuantConfig
from int8kit.emit.qdq import emit_qdq
from int8kit.graph.ops import op_info
from int8kit.plan.context import MAX_CONTEXTS, clear_plan_caches, context_for
from int8kit.graph.model_memo import Memo
from int8kit.plan.memo import frozen
from int8kit.plan.planner import candidate_tensors, plan
from int8kit.plan.types import QuantPlan

RNG = np.random.default_rng(5)


_GRAPH = """
<ir_version: 8, opset_import: ["" : 17]>
replan (float[N, 6, 16, 16] x) => (float[N, 10] logits) <float zero = {0.0}, float six = {6.0}> {
    c1 = Conv <pads = [1, 1, 1, 1]> (x, w1, b1)
    r1 = Relu (c1)
    c2 = Conv <pads = [1, 1, 1, 1]> (r1, w2, b2)
    a1 = Add (c2, r1)
    r2 = Relu (a1)
    p1 = MaxPool <kernel_shape = [2, 2], strides = [2, 2]> (r2)
    c3 = Conv <group = 8, pads = [1, 1, 1, 1]> (p1, w3)
    r3 = Clip (c3, zero, six)
    cat = Concat <axis = 1> (p1, r3)
    gap = GlobalAveragePool (cat)
    flat = Flatten (gap)
    logits = Gemm <transB = 1> (flat, wf, bf)
}
"""
_WEIGHTS = {"w1": (8, 6, 3, 3), "b1": (8,), "w2": (8, 8, 3, 3), "b2": (8,), "w3": (8, 1, 3, 3), "wf": (10, 16), "bf": (10,)}


def small_cnn() -> onnx.ModelProto:
    """Conv-Relu, a residual Add, MaxPool, a depthwise Conv-Clip(0, 6), Concat and a Gemm with transB;
    nodes are named after their outputs (r2 names both the Relu and its output)."""
    model = onnx.parser.parse_model(_GRAPH)
    for node in model.graph.node:
        node.name = node.output[0]
    model.graph.initializer.extend(numpy_helper.from_array((RNG.standard_normal(shape) * 0.3).astype(np.float32), name)
                                   for name, shape in _WEIGHTS.items())
    return model


@pytest.fixture()
def model_and_stats():
    clear_plan_caches()
    model = small_cnn()
    data = RNG.standard_normal((32, 6, 16, 16)).astype(np.float32)
    return model, collect(model, data, tensors=candidate_tensors(model), progress=False)


def _fresh(model, stats, config) -> QuantPlan:
    clear_plan_caches()
    return plan(model, stats, config)


def assert_same_plan(a: QuantPlan, b: QuantPlan) -> None:
    """Every field of every TensorQuant equal (arrays exactly), and the plan's other decisions."""
    assert list(a.tensors) == list(b.tensors)
    for name, ta in a.tensors.items():
        for f in dataclasses.fields(ta):
            x, y = getattr(ta, f.name), getattr(b.tensors[name], f.name)
            if isinstance(x, np.ndarray) or isinstance(y, np.ndarray):
                assert x is not None and y is not None and np.asarray(x).dtype == np.asarray(y).dtype, (name, f.name)
                np.testing.assert_array_equal(x, y, err_msg=f"{name}.{f.name}")
            else:
                assert x == y, (name, f.name, x, y)
    assert (a.fused, a.float_nodes, a.integer_hardswish) == (b.fused, b.float_nodes, b.integer_hardswish)
    assert (a.signed_storage, a.keep_activation_nodes) == (b.signed_storage, b.keep_activation_nodes)


CHANGES = [
    {"fp_layers": ("c2",)},
    {"overrides": {"r2": {"th_method": "max"}}},
    {"overrides": {"r2": {"th_method": "percentile", "th_params": {"percentile": 99.0}}}},
    {"overrides": {"r2": {"threshold": 1.5}}},
    {"overrides": {"r2": {"th_scale": 0.5}}},
    {"per_channel": False},
    {"th_method": "mse"},
    {"bias_correction": False},
    {"activation_offset": True},
    {"fp_layers": ("r1",)},
]


def test_every_replan_equals_a_fresh_plan(model_and_stats):
    model, stats = model_and_stats
    replanned = [plan(model, stats, QuantConfig())]
    replanned += [plan(model, stats, QuantConfig(**change)) for change in CHANGES]
    replanned.append(plan(model, stats, QuantConfig()))  # back to the default after all the others
    fresh = [_fresh(model, stats, QuantConfig(**c)) for c in [{}] + CHANGES + [{}]]
    for got, want in zip(replanned, fresh):
        assert_same_plan(got, want)


def test_a_changed_override_is_never_answered_from_the_cache(model_and_stats):
    model, stats = model_and_stats
    one = plan(model, stats, QuantConfig(overrides={"r2": {"threshold": 1.0}}))
    two = plan(model, stats, QuantConfig(overrides={"r2": {"threshold": 2.0}}))
    assert two.tensors["r2"].scale == pytest.approx(2 * one.tensors["r2"].scale)
    assert_same_plan(two, _fresh(model, stats, QuantConfig(overrides={"r2": {"threshold": 2.0}})))


def test_a_replan_that_changes_one_layer_reuses_the_rest(model_and_stats):
    model, stats = model_and_stats
    plan(model, stats, QuantConfig())
    ctx = context_for(model, stats)
    ranges, weights, hits = ctx.ranges.misses, ctx.weights.misses, ctx.ranges.hits
    again = plan(model, stats, QuantConfig())  # the same configuration again: nothing is computed
    assert (ctx.ranges.misses, ctx.weights.misses) == (ranges, weights)
    # every activation's range comes from the cache (a guarded choice is one hit for its candidates)
    assert ctx.ranges.hits - hits >= sum(t.kind == "activation" for t in again.tensors.values())
    assert ctx.weights.hits >= weights
    plan(model, stats, QuantConfig(overrides={"r2": {"th_method": "max"}}))
    assert ctx.ranges.misses <= ranges + 1  # at most r2's new search
    assert ctx.weights.misses <= weights + 2  # at most the two layers that read r2 (conv-after-pool reads p1 = r2's grid)


def test_new_statistics_or_a_new_model_get_their_own_caches(model_and_stats):
    model, stats = model_and_stats
    base = plan(model, stats, QuantConfig())
    ctx = context_for(model, stats)
    other_data = RNG.standard_normal((32, 6, 16, 16)).astype(np.float32) * 3
    other_stats = collect(model, other_data, tensors=candidate_tensors(model), progress=False)
    moved = plan(model, other_stats, QuantConfig())
    assert context_for(model, other_stats) is not ctx
    assert moved.tensors["x"].scale != base.tensors["x"].scale
    assert_same_plan(moved, _fresh(model, other_stats, QuantConfig()))

    heavier = onnx.ModelProto()
    heavier.CopyFrom(model)
    w1 = next(t for t in heavier.graph.initializer if t.name == "w1")
    w1.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(w1) * 2, "w1"))
    assert not np.array_equal(plan(heavier, stats, QuantConfig()).tensors["w1"].scale, base.tensors["w1"].scale)


def test_a_model_changed_in_place_is_noticed_when_nodes_are_added(model_and_stats):
    model, stats = model_and_stats
    plan(model, stats, QuantConfig())
    ctx = context_for(model, stats)
    model.graph.node.append(helper.make_node("Identity", ["logits"], ["extra"], name="extra"))
    assert context_for(model, stats) is not ctx


def test_cached_arrays_cannot_be_changed_through_a_plan(model_and_stats):
    model, stats = model_and_stats
    first = plan(model, stats, QuantConfig())
    with pytest.raises(ValueError):
        first.tensors["w2"].values[...] = 0
    first.tensors["w2"].scale = np.zeros(8, np.float32)  # replacing a field changes this plan only
    np.testing.assert_array_equal(plan(model, stats, QuantConfig()).tensors["w2"].scale,
                                  _fresh(model, stats, QuantConfig()).tensors["w2"].scale)


def test_plan_leaves_model_and_statistics_as_they_were(model_and_stats):
    model, stats = model_and_stats
    before = model.SerializeToString()
    counts = {n: t.hist.counts.copy() for n, t in stats.tensors.items()}
    for change in CHANGES:
        emit_qdq(model, plan(model, stats, QuantConfig(**change)))
    assert model.SerializeToString() == before
    assert all(np.array_equal(counts[n], t.hist.counts) for n, t in stats.tensors.items())


def test_contexts_and_memos_are_bounded(model_and_stats):
    model, stats = model_and_stats
    copies = []
    for _ in range(MAX_CONTEXTS + 2):
        copies.append(onnx.ModelProto())
        copies[-1].CopyFrom(model)
        plan(copies[-1], stats, QuantConfig())
    first = context_for(copies[-1], stats)
    assert context_for(copies[-1], stats) is first  # the newest is still there
    memo = Memo(2)
    for key in "abc":
        memo.get(key, lambda k=key: k.upper())
    assert len(memo) == 2 and memo.get("a", lambda: "again") == "again"  # "a" was the oldest: dropped


def test_frozen_keys_follow_equality():
    assert frozen({"b": [1, 2], "a": 1.0}) == frozen({"a": 1, "b": (1, 2)})
    assert frozen(np.array([1.0, 2.0], np.float32)) != frozen(np.array([1.0, 2.5], np.float32))
    assert hash(frozen({"p": np.float64(99.9)})) == hash(frozen({"p": 99.9}))


@pytest.mark.parametrize(("op", "attrs", "rank", "axis"), [
    ("Conv", {}, 4, 0), ("ConvTranspose", {}, 4, 1), ("Gemm", {}, 2, 1), ("Gemm", {"transB": 1}, 2, 0),
    ("MatMul", {}, 2, 1),
])
def test_the_weight_axis_comes_from_the_op_table(op, attrs, rank, axis):
    node = helper.make_node(op, ["x", "w"], ["y"], **attrs)
    assert op_info(op).channel_axis(node, rank) == axis


def test_a_gemm_with_transposed_weights_gets_one_scale_per_output_row(model_and_stats):
    model, stats = model_and_stats
    tq = plan(model, stats, QuantConfig()).tensors["wf"]  # the Gemm: transB=1, wf is (10, 16)
    assert tq.axis == 0 and np.size(tq.scale) == 10


def test_advice_is_logged_once_however_often_the_model_is_replanned(caplog):
    clear_plan_caches()
    model = onnx.parser.parse_model("""
    <ir_version: 8, opset_import: ["" : 17]>
    narrow (float[N, 4, 8, 8] x) => (float[N, 4, 8, 8] y) {
        big = Conv (x, wbig)
        cat = Concat <axis = 1> (x, big)
        y = Conv (cat, wout)
    }
    """)
    for name, shape, scale in (("wbig", (4, 4, 1, 1), 200.0), ("wout", (4, 8, 1, 1), 0.3)):
        model.graph.initializer.append(numpy_helper.from_array((RNG.standard_normal(shape) * scale).astype(np.float32), name))
    for node in model.graph.node:
        node.name = node.output[0]
    data = RNG.standard_normal((16, 4, 8, 8)).astype(np.float32)
    stats = collect(model, data, tensors=candidate_tensors(model), progress=False)
    config = QuantConfig(stem_float=False)
    with caplog.at_level("WARNING", logger="int8kit.plan.advice"):
        for _ in range(3):
            plan(model, stats, config)
    assert sum("Concat 'cat'" in r.getMessage() for r in caplog.records) == 1
