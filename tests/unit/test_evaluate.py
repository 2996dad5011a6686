"""Tests for int8kit.evaluate: metric functions and compare_models on tiny in-code models."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from int8kit.errors import DataError
from int8kit.evaluate.compare import (
    LATENCY_TURN_RUNS,
    EvalResult,
    compare_models,
    load_labels,
    measure_latencies,
    measure_latency,
)
from int8kit.evaluate.metrics import max_abs_error, mean_cosine, top1_agreement, topk_accuracy

# ---- metrics ---------------------------------------------------------------------------------

SCORES = np.array(
    [
        [0.1, 0.7, 0.2],  # top-1 = 1, top-2 = {1, 2}
        [0.5, 0.3, 0.2],  # top-1 = 0, top-2 = {0, 1}
        [0.2, 0.3, 0.5],  # top-1 = 2, top-2 = {2, 1}
        [0.6, 0.1, 0.3],  # top-1 = 0, top-2 = {0, 2}
    ]
)


def test_topk_accuracy_hand_computed() -> None:
    labels = np.array([1, 1, 0, 2])
    assert topk_accuracy(SCORES, labels, 1) == pytest.approx(0.25)  # only sample 0
    assert topk_accuracy(SCORES, labels, 2) == pytest.approx(0.75)  # samples 0, 1, 3
    assert topk_accuracy(SCORES, labels, 3) == pytest.approx(1.0)
    assert topk_accuracy(SCORES, labels, 10) == pytest.approx(1.0)  # k > classes


def test_topk_accuracy_rejects_wrong_inputs() -> None:
    with pytest.raises(DataError, match="one label per sample"):
        topk_accuracy(SCORES, np.array([0, 1]), 1)
    with pytest.raises(DataError, match="classes"):
        topk_accuracy(np.zeros((4, 3, 2)), np.zeros(4, dtype=int), 1)
    with pytest.raises(DataError, match="k >= 1"):
        topk_accuracy(SCORES, np.zeros(4, dtype=int), 0)


def test_top1_agreement_hand_computed() -> None:
    other = SCORES.copy()
    other[0] = [0.9, 0.0, 0.1]  # flips sample 0 from class 1 to class 0
    assert top1_agreement(SCORES, SCORES) == 1.0
    assert top1_agreement(SCORES, other) == pytest.approx(0.75)


def test_mean_cosine_hand_computed() -> None:
    a = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
    b = np.array([[0.0, 1.0], [2.0, 2.0], [0.0, 0.0]])
    # cosines: 0 (orthogonal), 1 (parallel), 1 (both zero) -> mean 2/3
    assert mean_cosine(a, b) == pytest.approx(2.0 / 3.0)
    assert mean_cosine(a[:2], -a[:2]) == pytest.approx(-1.0)
    # per-sample flattening of higher-rank outputs
    c = np.arange(24, dtype=np.float32).reshape(2, 3, 4) + 1
    assert mean_cosine(c, c * 3) == pytest.approx(1.0)


def test_max_abs_error_hand_computed() -> None:
    a = np.array([[1.0, -2.0], [3.0, 4.0]])
    b = np.array([[1.5, -2.0], [3.0, 1.0]])
    assert max_abs_error(a, b) == pytest.approx(3.0)
    assert max_abs_error(a, a) == 0.0
    with pytest.raises(DataError, match="shapes"):
        max_abs_error(a, a[:1])


# ---- compare_models ---------------------------------------------------------------------------


def _tiny_model(weight: np.ndarray) -> onnx.ModelProto:
    """x (N,4) -> MatMul(W 4x6) -> scores (N,6); also Relu(x) -> feat (N,4)."""
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "W"], ["scores"]),
            helper.make_node("Relu", ["x"], ["feat"]),
        ],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [
            helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", 6]),
            helper.make_tensor_value_info("feat", TensorProto.FLOAT, ["N", 4]),
        ],
        [numpy_helper.from_array(weight.astype(np.float32), "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


@pytest.fixture()
def tiny() -> tuple[onnx.ModelProto, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    weight = rng.normal(size=(4, 6))
    x = rng.normal(size=(20, 4)).astype(np.float32)
    labels = (x @ weight).argmax(axis=1)
    return _tiny_model(weight), x, labels


def test_compare_model_with_itself(tiny) -> None:
    model, x, labels = tiny
    res = compare_models(model, model, {"x": x}, labels=labels, batch_size=8, latency=False, progress=False)
    assert isinstance(res, EvalResult)
    assert res.samples == 20 and res.output == "scores"
    assert res.top1_agreement == 1.0
    assert res.fp32_top1 == 1.0 and res.int8_top1 == 1.0
    assert res.fp32_top5 is not None and res.fp32_top5 >= res.fp32_top1
    sims = {s.name: s for s in res.outputs}
    assert set(sims) == {"scores", "feat"}
    for sim in sims.values():
        assert sim.mean_cosine == pytest.approx(1.0)
        assert sim.max_abs_error == 0.0
    assert res.fp32_latency_ms is None and res.fp32_size_bytes is None


def test_one_hot_labels_must_be_one_hot_and_as_wide_as_the_output(tiny) -> None:
    model, x, labels = tiny
    res = compare_models(model, model, {"x": x}, labels=np.eye(6)[labels], latency=False, progress=False)
    assert res.fp32_top1 == 1.0  # one-hot over the output's 6 classes: the same as the indices
    res = compare_models(model, model, {"x": x}, labels=np.eye(6, dtype=bool)[labels], latency=False, progress=False)
    assert res.fp32_top1 == 1.0  # boolean one-hot too
    with pytest.raises(DataError, match="one-hot over 3 classes but output 'scores' has 6"):
        compare_models(model, model, {"x": x}, labels=np.eye(3)[labels % 3], latency=False, progress=False)
    with pytest.raises(DataError, match=r"labels of shape \(20, 3\) are not one-hot rows"):
        compare_models(model, model, {"x": x}, labels=np.full((20, 3), 2), latency=False, progress=False)


def test_compare_model_with_perturbed_copy(tiny, tmp_path) -> None:
    model, x, labels = tiny
    w = numpy_helper.to_array(model.graph.initializer[0])
    noisy = _tiny_model(w + np.random.default_rng(1).normal(scale=0.5, size=w.shape))
    fp_path, q_path = tmp_path / "fp.onnx", tmp_path / "q.onnx"
    onnx.save(model, fp_path)
    onnx.save(noisy, q_path)
    np.save(tmp_path / "labels.npy", labels)
    res = compare_models(
        fp_path, q_path, x, labels=tmp_path / "labels.npy", latency=True, progress=False, threads=1
    )
    sims = {s.name: s for s in res.outputs}
    assert sims["scores"].mean_cosine < 0.9999
    assert sims["scores"].max_abs_error > 0.0
    assert sims["feat"].mean_cosine == pytest.approx(1.0)  # the Relu branch is untouched
    assert res.int8_top1 <= 1.0 and res.fp32_top1 == 1.0
    assert res.fp32_size_bytes == fp_path.stat().st_size
    assert res.fp32_latency_ms > 0 and res.int8_latency_ms > 0 and res.latency_ratio > 0
    payload = json.loads(json.dumps(res.to_dict()))
    assert payload["outputs"][0]["name"] == "scores"
    table = res.to_table()
    assert "FP32" in table and "INT8" in table and "top-1 accuracy" in table


def test_compare_chosen_output_without_class_axis_semantics(tiny) -> None:
    model, x, _ = tiny
    batches = [{"x": x[:7]}, {"x": x[7:]}]
    res = compare_models(model, model, batches, output="feat", latency=False, progress=False)
    assert res.output == "feat" and res.samples == 20
    assert res.fp32_top1 is None  # no labels given


def test_compare_label_length_mismatch(tiny) -> None:
    model, x, labels = tiny
    with pytest.raises(DataError, match="labels have 19 entries but the data has 20 samples"):
        compare_models(model, model, {"x": x}, labels=labels[:19], latency=False, progress=False)
    # Unknown length up front (an iterable of batches): detected after the pass.
    with pytest.raises(DataError, match="labels have 21 entries"):
        compare_models(
            model, model, [{"x": x}], labels=np.append(labels, 0), latency=False, progress=False
        )


def test_compare_unknown_output(tiny) -> None:
    model, x, _ = tiny
    with pytest.raises(DataError, match="not an output"):
        compare_models(model, model, {"x": x}, output="nope", latency=False, progress=False)


def test_load_labels_forms(tmp_path) -> None:
    (tmp_path / "l.txt").write_text("3\n1\n2\n")
    assert load_labels(tmp_path / "l.txt").tolist() == [3, 1, 2]
    assert load_labels(np.eye(3)[[2, 0]]).tolist() == [2, 0]  # one-hot
    with pytest.raises(DataError, match="does not exist"):
        load_labels(tmp_path / "missing.npy")
    with pytest.raises(DataError, match="non-integer"):
        load_labels(np.array([0.5, 1.0]))


def test_measure_latency_positive(tiny) -> None:
    model, x, _ = tiny
    ms = measure_latency(model, {"x": x[:1]}, warmup=1, runs=5)
    assert 0.0 < ms < 1000.0


def test_latencies_take_turns_and_rank_a_slower_model_slower(tiny) -> None:
    model, x, _ = tiny
    slow = onnx.ModelProto()
    slow.CopyFrom(model)
    # The same model with a long chain of float Sin/Asin appended to its input: measurably slower.
    graph = slow.graph
    prev = graph.input[0].name
    for i in range(200):
        graph.node.append(onnx.helper.make_node("Sin" if i % 2 == 0 else "Asin", [prev], [f"waste{i}"]))
        prev = f"waste{i}"
    graph.output.append(onnx.helper.make_tensor_value_info(prev, onnx.TensorProto.FLOAT, None))
    fast_ms, slow_ms = measure_latencies([model, slow], {"x": x[:1]}, warmup=1, runs=7)
    assert 0.0 < fast_ms < slow_ms
    with pytest.raises(DataError, match="runs=0"):
        measure_latencies([model], {"x": x[:1]}, runs=0)


def test_latency_turns_run_back_to_back_after_an_uncounted_run(tiny) -> None:
    """Each turn starts with a warming run and then runs one model back to back, as a deployed
    model runs; single-run turns would time every run cold."""
    model, x, _ = tiny
    order: list[str] = []

    class Logged(ort.InferenceSession):
        def __init__(self, tag: str) -> None:
            super().__init__(model.SerializeToString(), providers=["CPUExecutionProvider"])
            self.tag = tag

        def run(self, *args, **kwargs):
            order.append(self.tag)
            return super().run(*args, **kwargs)

    measure_latencies([Logged("a"), Logged("b")], {"x": x[:1]}, warmup=2, runs=LATENCY_TURN_RUNS + 3)
    turns = list("ab" * 2) + ["a"] * (LATENCY_TURN_RUNS + 1) + ["b"] * (LATENCY_TURN_RUNS + 1) + list("aaaabbbb")
    assert order == turns


def test_compare_fixed_batch_model_latency(tiny) -> None:
    model, x, _ = tiny
    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    fixed.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 4  # batch fixed to 4
    res = compare_models(fixed, fixed, {"x": x}, progress=False)
    assert res.samples == 20
    assert res.fp32_latency_ms is not None and res.fp32_latency_ms > 0


def _conv_hardswish(clamp_at: float | None) -> onnx.ModelProto:
    """x -> Conv -> c -> HardSwish -> y; with ``clamp_at`` the conv output is clamped there first."""
    w = np.random.default_rng(3).standard_normal((4, 4, 1, 1)).astype(np.float32) * 3
    nodes = [helper.make_node("Conv", ["x", "w"], ["c_raw" if clamp_at is not None else "c"], name="conv")]
    inits = [numpy_helper.from_array(w, "w")]
    if clamp_at is not None:
        inits.append(numpy_helper.from_array(np.array(clamp_at, np.float32), "lo"))
        nodes.append(helper.make_node("Clip", ["c_raw", "lo"], ["c"], name="clamp"))
    nodes.append(helper.make_node("HardSwish", ["c"], ["y"], name="hswish"))
    graph = helper.make_graph(
        nodes, "conv_hswish", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, 3, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_layer_errors_ignore_differences_no_reader_can_see() -> None:
    """Values below -3 all become 0 in the HardSwish: clamping them there is no error at all,
    clamping at -1 is."""
    from int8kit.analysis.layerwise import layer_errors

    x = np.random.default_rng(4).standard_normal((8, 4, 3, 3)).astype(np.float32)
    reference = _conv_hardswish(None)
    harmless = {e.name: e for e in layer_errors(reference, _conv_hardswish(-3.0), x)}
    assert harmless["c"].relative_error < 1e-6 and harmless["y"].relative_error < 1e-6
    harmful = {e.name: e for e in layer_errors(reference, _conv_hardswish(-1.0), x)}
    assert harmful["c"].relative_error > 0.01 and harmful["y"].relative_error > 0.01


def test_layer_errors_leave_out_tensors_whose_size_depends_on_the_data() -> None:
    """A detector's NonMaxSuppression keeps a different number of boxes in INT8: no crash, no row."""
    from int8kit.analysis.layerwise import layer_errors

    def model(shift: float) -> onnx.ModelProto:
        graph = helper.make_graph(
            [helper.make_node("Add", ["x", "shift"], ["a"], name="add"), helper.make_node("NonZero", ["a"], ["n"], name="nz"),
             helper.make_node("Transpose", ["n"], ["idx"], name="t"), helper.make_node("GatherND", ["a", "idx"], ["g"], name="g")],
            "nonzero", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 6])],
            [helper.make_tensor_value_info("g", TensorProto.FLOAT, None), helper.make_tensor_value_info("a", TensorProto.FLOAT, None)],
            [numpy_helper.from_array(np.array(shift, np.float32), "shift")],
        )
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])

    x = np.array([[0.0, 1.0, -0.5, 0.0, 2.0, 3.0]] * 4, np.float32)  # 4 non-zeros, 5 after the shift
    errors = {e.name: e for e in layer_errors(model(0.0), model(0.5), x, tensors=["a", "g"])}
    assert "g" not in errors and errors["a"].relative_error > 0.1
    assert "g" in {e.name for e in layer_errors(model(0.0), model(0.0), x, tensors=["a", "g"])}


def test_layer_errors_run_in_pieces_of_bounded_size(monkeypatch) -> None:
    """Pieces of one sample (tapped tensors over the byte budget) give the errors of whole batches,
    and stop at max_samples exactly: the FP32 pass cuts them, the INT8 pass runs the same pieces."""
    import int8kit.analysis.layerwise as layerwise
    import int8kit.evaluate.reference as reference
    import int8kit.runtime.chunking as chunking

    x = np.random.default_rng(6).standard_normal((10, 4, 3, 3)).astype(np.float32)
    reference_model, other = _conv_hardswish(None), _conv_hardswish(-1.0)
    whole = layerwise.layer_errors(reference_model, other, x, batch_size=5, max_samples=7)
    pieces: list[int] = []

    def counting(real):
        def make(model):
            session = real(model)

            class Counting:
                def run(self, names, feeds):
                    pieces.append(len(next(iter(feeds.values()))))
                    return session.run(names, feeds)

            return Counting()

        return make

    monkeypatch.setattr(layerwise, "make_session", counting(layerwise.make_session))
    monkeypatch.setattr(reference, "make_session", counting(reference.make_session))
    monkeypatch.setattr(reference, "Chunker", lambda **kw: chunking.Chunker(budget=1, **kw))
    from int8kit.evaluate import Evaluator

    fresh = Evaluator(reference_model, x, batch_size=5, cache=False, progress=False)  # not the cached pieces of `whole`
    small = layerwise.layer_errors(reference_model, other, x, max_samples=7, evaluator=fresh)
    assert pieces == [1] * 14  # 7 samples, one at a time, through both models
    for a, b in zip(whole, small):
        assert a.name == b.name
        assert a.cosine == pytest.approx(b.cosine, abs=1e-12) and a.relative_error == pytest.approx(b.relative_error, abs=1e-12)
        assert a.max_abs_error == b.max_abs_error


def test_relative_error_tells_what_cosine_cannot_for_one_value_per_sample() -> None:
    def model(scale: float) -> onnx.ModelProto:
        graph = helper.make_graph(
            [helper.make_node("Mul", ["x", "s"], ["m"]), helper.make_node("ReduceSum", ["m", "axes"], ["y"], keepdims=1)], "reg",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])], [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1])],
            [numpy_helper.from_array(np.array(scale, np.float32), "s"), numpy_helper.from_array(np.array([1], np.int64), "axes")])
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])

    x = np.random.default_rng(0).normal(size=(20, 4)).astype(np.float32)
    result = compare_models(model(1.0), model(1.5), x, latency=False, progress=False)
    sim = result.outputs[0]
    assert sim.mean_cosine == pytest.approx(1.0) and sim.relative_error == pytest.approx(0.5, rel=1e-5)
    assert "relative error (y)" in result.to_table()


def test_layer_cosine_is_zero_when_only_one_side_is_all_zero() -> None:
    from int8kit.evaluate.accumulate import ErrorAccumulator

    acc = ErrorAccumulator()
    acc.add(np.ones((1, 4), np.float32), np.zeros((1, 4), np.float32))
    err = acc.result()
    assert err.cosine == 0.0 and err.relative_error == pytest.approx(1.0)
