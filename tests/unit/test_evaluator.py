"""The Evaluator (FP32 reference once, cached on disk), the one error accumulator and the chunker."""

from __future__ import annotations

import math

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import int8kit.evaluate.evaluator as evaluator_mod
from int8kit.evaluate import ErrorAccumulator, Evaluator, compare_models
from int8kit.evaluate.store import RecordReader
from int8kit.runtime.chunking import Chunker


def _model(weight: np.ndarray, batch: int | str = "N") -> onnx.ModelProto:
    """x (N,4) -> MatMul(W 4x6) -> scores; Relu(x) -> feat."""
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["scores"]), helper.make_node("Relu", ["x"], ["feat"])],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 4])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [batch, 6]),
         helper.make_tensor_value_info("feat", TensorProto.FLOAT, [batch, 4])],
        [numpy_helper.from_array(weight.astype(np.float32), "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


@pytest.fixture()
def setup():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(4, 6))
    x = rng.normal(size=(40, 4)).astype(np.float32)
    candidates = [_model(w + rng.normal(scale=s, size=w.shape)) for s in (0.01, 0.1, 0.5)]
    return _model(w), x, candidates, (x @ w).argmax(axis=1)


@pytest.fixture()
def runs(monkeypatch):
    """Counts session runs per model: {id(model proto): runs}."""
    counts: dict[int, int] = {}
    real = evaluator_mod.session_for

    def counting(model, *args, **kwargs):
        session = real(model, *args, **kwargs)

        class Counted:
            def __getattr__(self, name):
                return getattr(session, name)

            def run(self, names, feeds):
                counts[id(model)] = counts.get(id(model), 0) + 1
                return session.run(names, feeds)

        return Counted()

    monkeypatch.setattr(evaluator_mod, "session_for", counting)
    return counts


def test_fp32_model_runs_once_for_many_candidates(setup, runs, tmp_path) -> None:
    fp32, x, candidates, labels = setup
    ev = Evaluator(fp32, x, labels=labels, batch_size=8, cache=tmp_path, progress=False)
    results = [ev.evaluate(c, latency=False) for c in candidates]
    assert runs[id(ev.model)] == 5  # 40 samples in batches of 8: one pass, for three candidates
    assert ev.fp32_runs == 1
    assert all(runs[id(c)] == 5 for c in candidates)
    # the same numbers as one-off comparisons
    for c, res in zip(candidates, results):
        alone = compare_models(fp32, c, x, labels=labels, batch_size=8, latency=False, progress=False, cache=False)
        assert res.to_dict() == alone.to_dict()
    errors = [r.outputs[0].relative_error for r in results]
    assert errors == sorted(errors) and errors[0] > 0  # more noise, more error


def test_disk_cache_is_reused_and_invalidated(setup, runs, tmp_path) -> None:
    fp32, x, candidates, _ = setup
    first = Evaluator(fp32, x, cache=tmp_path, progress=False)
    a = first.evaluate(candidates[1], latency=False)
    again = Evaluator(fp32, x.copy(), cache=tmp_path, progress=False)  # same content, another array
    b = again.evaluate(candidates[1], latency=False)
    assert first.fp32_runs == 1 and again.fp32_runs == 0
    assert runs[id(fp32)] == 2  # 40 samples, batches of 32: the first evaluator's one pass only
    assert a.to_dict() == b.to_dict()
    changed = x.copy()
    changed[3, 1] += 1.0
    other_weights = _model(numpy_helper.to_array(fp32.graph.initializer[0]) * 1.01)
    fixed_batch = _model(numpy_helper.to_array(fp32.graph.initializer[0]), batch=8)
    for model, data in ((fp32, changed), (other_weights, x), (fixed_batch, x)):
        ev = Evaluator(model, data, cache=tmp_path, progress=False)
        ev.evaluate(candidates[1], latency=False)
        assert ev.fp32_runs == 1
    # the cache is keyed by content: a .npy file of the same data finds the same reference only by content
    np.save(tmp_path / "x.npy", x)
    from_file = Evaluator(fp32, tmp_path / "x.npy", cache=tmp_path, progress=False)
    from_file.evaluate(candidates[1], latency=False)
    assert from_file.fp32_runs == 1
    second = Evaluator(fp32, tmp_path / "x.npy", cache=tmp_path, progress=False)
    second.evaluate(candidates[1], latency=False)
    assert second.fp32_runs == 0


def test_one_shot_stream_serves_many_candidates(setup, tmp_path) -> None:
    fp32, x, candidates, _ = setup
    stream = ({"x": x[i : i + 8]} for i in range(0, 40, 8))
    ev = Evaluator(fp32, stream, cache=tmp_path, progress=False)
    got = [ev.evaluate(c, latency=False).outputs[0].mean_cosine for c in candidates]
    want = [compare_models(fp32, c, x, batch_size=8, latency=False, progress=False).outputs[0].mean_cosine for c in candidates]
    assert got == want


def test_large_references_are_read_record_by_record(setup, tmp_path, monkeypatch) -> None:
    fp32, x, candidates, _ = setup
    monkeypatch.setattr(evaluator_mod, "IN_MEMORY_BYTES", 0)
    ev = Evaluator(fp32, x, cache=tmp_path, progress=False)
    res = ev.evaluate(candidates[0], latency=False)
    assert ev.reference._held == {}  # nothing held between accesses: memory follows one record
    again = RecordReader(ev.reference.folder, in_memory_bytes=1 << 30)  # small: read into RAM once
    assert np.array_equal(again.record("outputs", 0)["scores"], ev.reference.record("outputs", 0)["scores"])
    assert again._held and res.samples == 40


def test_per_layer_values_too_large_to_keep_are_recomputed(tmp_path, monkeypatch) -> None:
    """Past the store's byte cap the layer reference keeps only the pieces' inputs; the errors and
    the report's histograms are the same, from the FP32 model run again on those inputs."""
    import int8kit.evaluate.reference as reference
    from int8kit.analysis.layerwise import layer_errors, layer_histograms

    rng = np.random.default_rng(6)
    w = rng.normal(size=(4, 6))
    x = rng.normal(size=(10, 4)).astype(np.float32)
    fp32, other = _model(w), _model(w + rng.normal(scale=0.1, size=w.shape))
    kept = Evaluator(fp32, x, cache=tmp_path / "a", progress=False)
    want = layer_errors(fp32, other, None, evaluator=kept)
    real = reference.compute_layer_reference
    monkeypatch.setattr(evaluator_mod, "compute_layer_reference", lambda *a, **k: real(*a, **k, max_bytes=1))
    slim = Evaluator(fp32, x, cache=tmp_path / "b", progress=False)
    got = layer_errors(fp32, other, None, evaluator=slim)
    assert kept.layer_reference().meta["values"] and not slim.layer_reference().meta["values"]
    assert not slim.layer_reference().records("values") and slim.layer_reference().records("inputs")
    assert [(e.name, e.cosine, e.relative_error, e.max_abs_error) for e in got] == \
        [(e.name, e.cosine, e.relative_error, e.max_abs_error) for e in want]
    assert {"scores", "feat"} <= {e.name for e in got} and max(e.relative_error for e in got) > 0.01
    h_kept, h_slim = layer_histograms(kept, ["scores", "feat"]), layer_histograms(slim, ["scores", "feat"])
    assert set(h_kept) == {"scores", "feat"} and all(np.array_equal(h_kept[n].counts, h_slim[n].counts) for n in h_kept)
    assert h_kept["feat"].count == x.size  # every value of the 10 samples


def test_error_accumulator_matches_numpy() -> None:
    rng = np.random.default_rng(1)
    ref = rng.normal(size=(10, 3, 5)).astype(np.float32)
    got = ref + rng.normal(scale=0.1, size=ref.shape).astype(np.float32)
    got[2] = 0.0  # a sample where only one side is all zero: cosine 0
    acc = ErrorAccumulator()
    for part in (slice(0, 3), slice(3, 4), slice(4, 10)):
        acc.add(ref[part], got[part])
    e = acc.result()
    a, b = ref.reshape(10, -1).astype(np.float64), got.reshape(10, -1).astype(np.float64)
    cos = (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-300)
    cos[2] = 0.0
    noise, signal = ((a - b) ** 2).sum(), (a**2).sum()
    assert e.samples == 10
    assert e.cosine == pytest.approx(cos.mean(), abs=1e-12) and e.min_cosine == pytest.approx(cos.min(), abs=1e-12)
    assert e.relative_error == pytest.approx(math.sqrt(noise / signal), rel=1e-12)
    assert e.max_abs_error == pytest.approx(np.abs(a - b).max(), rel=1e-12)
    assert e.sqnr_db == pytest.approx(10 * np.log10(signal / noise), rel=1e-12)
    assert e.peak_relative_error == pytest.approx(np.abs(a - b).max() / np.abs(a).max(), rel=1e-12)
    same = ErrorAccumulator()
    same.add(ref, ref)
    assert same.result().sqnr_db == math.inf and same.result().cosine == 1.0
    clipped = ErrorAccumulator(domain=(-0.5, 0.5))
    clipped.add(ref, np.clip(ref, -0.5, 0.5))  # differences no reader can see are no error
    assert clipped.result().max_abs_error == 0.0


def test_chunker_keeps_each_run_within_its_byte_budget() -> None:
    batch = {"x": np.arange(100, dtype=np.float32).reshape(25, 4)}
    per_sample = 1000  # bytes the fake run returns per sample

    def run(piece):
        return [np.zeros((len(piece["x"]), per_sample), np.uint8)]

    chunker = Chunker(budget=3500)
    sizes, seen = [], []
    for b in (batch, batch):
        for piece in chunker.pieces(b):
            out = run(piece)
            chunker.returned(out, piece)
            sizes.append(sum(o.nbytes for o in out))
            seen.append(piece["x"])
    assert sizes[0] == per_sample and all(s <= 3500 for s in sizes)  # one sample to measure, then 3 at a time
    assert np.array_equal(np.concatenate(seen), np.concatenate([batch["x"], batch["x"]]))
    limited = Chunker(budget=3500, limit=7)
    pieces = [p for p in limited.pieces(batch) if not limited.returned(run(p), p)]
    assert sum(len(p["x"]) for p in pieces) == 7 and limited.done
    whole = Chunker(budget=1, splittable=False)  # a fixed batch size cannot be cut
    assert [len(p["x"]) for p in whole.pieces(batch)] == [25]


def test_convert_compare_prints_the_mean_cosine_and_judges_the_peak_error() -> None:
    """``convert --compare`` shares the accumulator: ``cosine`` is the mean, ``min_cosine`` the
    lowest; pass/fail still reads only the peak relative error against the tolerance."""
    from int8kit.importers.compare import TensorDiff

    ref = np.array([[1.0, 0.0], [1.0, 0.0]], np.float32)
    got = np.array([[1.0, 0.0], [0.0, 1e-4]], np.float32)  # sample 2 points elsewhere, by a tiny amount
    diff = TensorDiff("y", "output")
    diff.update(ref, got)
    assert diff.cosine == pytest.approx(0.5) and diff.min_cosine == pytest.approx(0.0)
    assert diff.max_rel_error == pytest.approx(1.0)  # max |got - ref| / max |ref|
    diff.judge(tolerance=1e-3)
    assert not diff.ok
    close = TensorDiff("y", "output")
    close.update(ref, ref + 1e-5)
    close.judge(tolerance=1e-3)
    assert close.ok and close.min_cosine > 0.9999 and "min_cosine" in close.__dict__
