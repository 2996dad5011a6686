"""Task metrics through the Evaluator: built-ins against direct numpy, subsets, FP32 from the
reference, user plugins (module:Class from the current folder) and their errors, LMDB detection labels."""

from __future__ import annotations

import textwrap

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import int8kit.evaluate.evaluator as evaluator_mod
from int8kit.errors import ConfigError, DataError
from int8kit.evaluate import Evaluator, drop, make_metric
from int8kit.evaluate.metrics import sample_cosines
from int8kit.evaluate.tasks import TopK


def _model(weight: np.ndarray, batch: int | str = "N") -> onnx.ModelProto:
    """x (N,4) -> MatMul(W 4x6) -> scores."""
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["scores"])], "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 4])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [batch, 6])],
        [numpy_helper.from_array(weight.astype(np.float32), "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


@pytest.fixture()
def case():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(4, 6))
    x = rng.normal(size=(60, 4)).astype(np.float32)
    labels = (x @ w).argmax(axis=1)
    labels[:9] = (labels[:9] + 1) % 6  # FP32 is wrong on 9 of 60
    q = w + rng.normal(scale=0.3, size=w.shape)
    return _model(w), _model(q), x, labels, x @ w, x @ q


@pytest.fixture()
def fed(monkeypatch):
    """Rows fed to each model's session: {id(model proto): [batch rows, ...]}."""
    seen: dict[int, list[int]] = {}
    real = evaluator_mod.session_for

    def counting(model, *args, **kwargs):
        session = real(model, *args, **kwargs)

        class Counted:
            def __getattr__(self, name):
                return getattr(session, name)

            def run(self, names, feeds):
                seen.setdefault(id(model), []).append(len(next(iter(feeds.values()))))
                return session.run(names, feeds)

        return Counted()

    monkeypatch.setattr(evaluator_mod, "session_for", counting)
    return seen


def test_builtin_metrics_match_numpy(case) -> None:
    fp32, q, x, labels, s_fp, s_q = case
    ev = Evaluator(fp32, x, labels=labels, batch_size=8, cache=False, progress=False)
    top1 = ev.task_score(q, "top1")
    assert top1.value == pytest.approx(np.mean(s_q.argmax(1) == labels), abs=1e-12) and top1.n == 60
    assert top1.method == "wilson" and top1.low < top1.value < top1.high
    assert ev.task_score(None, "top1").value == pytest.approx(51 / 60)
    top5 = np.mean([lab in np.argsort(-row)[:5] for row, lab in zip(s_q, labels)])
    assert ev.task_score(q, "top5").value == pytest.approx(top5)
    assert ev.task_score(q, "agreement").value == pytest.approx(np.mean(s_q.argmax(1) == s_fp.argmax(1)))
    cos = ev.task_score(q, "cosine")
    assert cos.value == pytest.approx(sample_cosines(s_fp, s_q).mean(), rel=1e-5) and cos.method == "bootstrap"
    assert ev.task_score(None, "cosine").value == pytest.approx(1.0)


def test_task_score_folds_the_output_error_of_the_same_rows(case) -> None:
    from int8kit.evaluate.accumulate import ErrorAccumulator, sqnr_db

    fp32, q, x, labels, s_fp, s_q = case
    ev = Evaluator(fp32, x, labels=labels, batch_size=8, cache=False, progress=False)
    error = ErrorAccumulator()
    ev.task_score(q, "top1", samples=slice(5, 30), output_error=error)
    d = (s_fp - s_q)[5:30]
    assert error.samples == 25
    assert error.result().sqnr_db == pytest.approx(sqnr_db(float((d * d).sum()), float((s_fp[5:30] ** 2).sum())), rel=1e-4)


def test_fp32_score_comes_from_the_reference(case, fed) -> None:
    fp32, q, x, labels, *_ = case
    ev = Evaluator(fp32, x, labels=labels, batch_size=8, cache=False, progress=False)
    for metric in ("top1", "agreement", "cosine"):
        ev.task_score(None, metric)
    assert ev.fp32_runs == 1 and len(fed[id(ev.model)]) == 8  # one FP32 pass (60 samples in 8 batches) for all


def test_subset_equals_a_sliced_dataset_and_runs_only_its_rows(case, fed) -> None:
    fp32, q, x, labels, *_ = case
    ev = Evaluator(fp32, x, labels=labels, batch_size=8, cache=False, progress=False)
    for metric in ("top1", "cosine"):
        part = ev.task_score(q, metric, samples=slice(5, 30))
        alone = Evaluator(fp32, x[5:30], labels=labels[5:30], batch_size=8, cache=False, progress=False).task_score(q, metric)
        assert (part.value, part.n, part.low, part.high) == pytest.approx((alone.value, alone.n, alone.low, alone.high))
    fed.clear()
    ev.task_score(q, "top1", samples=range(30, 60))
    assert sum(fed[id(q)]) == 30  # the held-out half: half the INT8 rows, not a full pass


def test_halves_pair_only_with_their_own_half(case) -> None:
    fp32, q, x, labels, *_ = case
    ev = Evaluator(fp32, x, labels=labels, batch_size=8, cache=False, progress=False)
    first = slice(0, 30)
    d = drop(ev.task_score(None, "top1", samples=first), ev.task_score(q, "top1", samples=first))
    assert d.n == 30 and d.method == "newcombe" and d.low <= d.value <= d.high
    with pytest.raises(DataError, match="different samples"):
        drop(ev.task_score(None, "top1", samples=first), ev.task_score(q, "top1", samples=slice(30, 60)))
    with pytest.raises(DataError, match="selects none"):
        ev.task_score(q, "top1", samples=slice(60, 90))


def test_fixed_batch_model_runs_whole_batches_and_picks_rows(case, fed) -> None:
    fp32, q, x, labels, *_ = case
    w_fp, w_q = (numpy_helper.to_array(m.graph.initializer[0]) for m in (fp32, q))
    fixed_fp, fixed_q = _model(w_fp, batch=6), _model(w_q, batch=6)
    ev = Evaluator(fixed_fp, x, labels=labels, cache=False, progress=False)
    part = ev.task_score(fixed_q, "top1", samples=slice(4, 20))
    assert part.value == pytest.approx(np.mean((x[4:20] @ w_q).argmax(1) == labels[4:20])) and part.n == 16
    assert fed[id(fixed_q)] == [6, 6, 6, 6]  # samples 4-19 lie in batches 0-3 of 6; the other six never run


def test_evaluate_with_metric_fills_the_task_row(case) -> None:
    fp32, q, x, labels, *_ = case
    ev = Evaluator(fp32, x, labels=labels, batch_size=8, cache=False, progress=False)
    res = ev.evaluate(q, latency=False, metric="top1")
    assert res.task.int8.value == pytest.approx(res.int8_top1) and res.task.fp32.value == pytest.approx(res.fp32_top1)
    assert res.task.drop.value == pytest.approx(res.fp32_top1 - res.int8_top1)
    assert "top1 (95 % interval)" in res.to_table()
    back = type(res).from_dict(res.to_dict())
    assert back.task.drop.low == pytest.approx(res.task.drop.low)


def test_metric_spec_errors_are_one_clear_line() -> None:
    for spec, message in (("top-1", "did you mean 'top1'"), ("mAP5", "did you mean 'map'"), ("nomodule_xyz:Cls", "cannot be imported")):
        with pytest.raises(ConfigError, match=message) as err:
            make_metric(spec)
        assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="--postprocess applies to --metric map"):
        make_metric("top1", postprocess="a:b")
    assert make_metric("mAP").name == "map"


def test_top1_without_labels_points_at_agreement(case) -> None:
    fp32, q, x, *_ = case
    ev = Evaluator(fp32, x, cache=False, progress=False)
    with pytest.raises(DataError, match="needs labels .* --metric agreement"):
        ev.task_score(q, "top1")


PLUGIN = '''
import numpy as np

class Hits:
    """Top-1 hits, written as a user would."""
    def __init__(self):
        self.hits = []
    def update(self, outputs, labels):
        self.hits += list(outputs["scores"].argmax(1) == np.asarray(labels))
    def score(self):
        return float(np.mean(self.hits))
    def per_sample(self):
        return np.asarray(self.hits, dtype=float)

class VsFP32(Hits):
    labels_from = "fp32"
    def update(self, outputs, labels):
        super().update(outputs, labels["scores"].argmax(1))

class NoUpdate:
    def score(self):
        return 1.0

class Crashes(Hits):
    def update(self, outputs, labels):
        raise KeyError("logits")

class Wordy(Hits):
    def score(self):
        return "great"

class Inconsistent(Hits):
    def score(self):
        return 0.5 + 0.1 * len(self.hits)
'''


def test_plugin_loads_from_the_current_folder(case, tmp_path, monkeypatch) -> None:
    fp32, q, x, labels, s_fp, s_q = case
    (tmp_path / "myscore.py").write_text(textwrap.dedent(PLUGIN))
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))  # undone after the test; load_object adds the cwd itself too
    ev = Evaluator(fp32, x, labels=labels, batch_size=8, cache=False, progress=False)
    hits = ev.task_score(q, "myscore:Hits")
    assert hits.value == pytest.approx(ev.task_score(q, "top1").value) and hits.method == "wilson"
    assert ev.task_score(q, "myscore:VsFP32").value == pytest.approx(np.mean(s_q.argmax(1) == s_fp.argmax(1)))


@pytest.mark.parametrize("name, error, message", [
    ("myscore2:NoUpdate", ConfigError, r"has no update\(\) method"),
    ("myscore2:Crashes", DataError, r"update\(\) failed on evaluation samples 0-7 \(KeyError: 'logits'\)"),
    ("myscore2:Wordy", ConfigError, r"score\(\) did not return a number"),
    ("myscore2:Inconsistent", ConfigError, r"per_sample\(\) values average"),
    ("myscore2:Hitz", ConfigError, r"did you mean 'myscore2:Hits'"),
])
def test_plugin_protocol_errors_are_one_clear_line(case, tmp_path, monkeypatch, name, error, message) -> None:
    fp32, q, x, labels, *_ = case
    (tmp_path / "myscore2.py").write_text(textwrap.dedent(PLUGIN))
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    ev = Evaluator(fp32, x, labels=labels, batch_size=8, cache=False, progress=False)
    with pytest.raises(error, match=message) as err:
        ev.task_score(q, name)
    assert "\n" not in str(err.value)


def _ssd_model(miss_boost: float) -> onnx.ModelProto:
    """DetectionOutput rows as the model's input passes through, the second row's conf raised by
    ``miss_boost``: x (1,1,3,7) -> rows."""
    boost = np.zeros((1, 1, 3, 7), np.float32)
    boost[0, 0, 1, 2] = miss_boost
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "s"], ["detection_out"])], "ssd",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 3, 7])],
        [helper.make_tensor_value_info("detection_out", TensorProto.FLOAT, [1, 1, 3, 7])],
        [numpy_helper.from_array(boost, "s")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def test_map_reads_detection_lines_of_an_lmdb(tmp_path) -> None:
    pytest.importorskip("lmdb", reason="the LMDB data source needs the lmdb package")
    from int8kit.data import LmdbWriter
    from int8kit.data.lmdb_source import LmdbSource

    rows = np.zeros((4, 1, 3, 7), np.float32)  # 4 images; each: one hit (conf .9) and one miss (conf .5)
    truth = []
    for i in range(4):
        rows[i, 0, 0] = [0, 1, 0.9, 0.1, 0.1, 0.3, 0.3]
        rows[i, 0, 1] = [0, 1, 0.5 + 0.1 * i, 0.6, 0.6, 0.7, 0.7]
        rows[i, 0, 2] = [-1, 0, 0, 0, 0, 0, 0]
        truth.append([(1, 0.1, 0.1, 0.3, 0.3), (1, 0.4, 0.4, 0.5, 0.5)])
    db = tmp_path / "det"
    with LmdbWriter(db) as w:
        w.put(rows, labels=truth)
    assert (db / "data.label").read_text().splitlines()[0] == "1,0.1,0.1,0.3,0.3;1,0.4,0.4,0.5,0.5"
    ev = Evaluator(_ssd_model(0.0), LmdbSource(db), cache=False, progress=False)
    fp = ev.task_score(None, "map")
    assert fp.value == pytest.approx(0.5) and fp.n == 4  # every hit ranks above every miss: recall .5 at precision 1
    worse = ev.task_score(_ssd_model(0.5), "map")  # misses' conf 1.0-1.3 now rank above the hits' .9: AP = 0.5 * 4/8
    assert worse.value == pytest.approx(0.25)
    assert drop(fp, worse).value == pytest.approx(0.25)


def test_map_reads_a_labels_text_file_and_top1_refuses_boxes(tmp_path) -> None:
    rows = np.full((2, 1, 3, 7), -1, np.float32)  # image id -1: padding
    rows[0, 0, 0] = [0, 1, 0.9, 0.1, 0.1, 0.3, 0.3]  # image 0: one detection; image 1: none
    (tmp_path / "boxes.txt").write_text("1,0.1,0.1,0.3,0.3\n\n")  # image 1 holds no box
    ev = Evaluator(_ssd_model(0.0), rows, labels=tmp_path / "boxes.txt", batch_size=1, cache=False, progress=False)
    assert ev.task_labels == [[(1, 0.1, 0.1, 0.3, 0.3)], []]
    assert ev.task_score(None, "map").value == pytest.approx(1.0)
    with pytest.raises(DataError, match="reads one class index per sample"):
        TopK(1).update({"scores": np.zeros((2, 3))}, ev.task_labels)


def test_ragged_labels_for_class_scores_are_one_clear_error(case) -> None:
    fp32, _, x, *_ = case
    with pytest.raises(DataError, match="lists of different lengths, not class indices") as err:
        Evaluator(fp32, x[:2], labels=[[1, 2], [3]], cache=False, progress=False)
    assert "\n" not in str(err.value)


def test_eval_cli_prints_both_scores_and_the_drop(case, tmp_path, capsys) -> None:
    import json

    from int8kit.cli import main

    fp32, q, x, labels, *_ = case
    paths = [tmp_path / "fp.onnx", tmp_path / "q.onnx"]
    for model, path in zip((fp32, q), paths):
        onnx.save(model, path)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "labels.npy", labels)
    base = ["eval", *map(str, paths), "--data", str(tmp_path / "x.npy"), "--labels", str(tmp_path / "labels.npy"),
            "--no-latency", "--no-progress"]
    assert main([*base, "--metric", "top1"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    ev = Evaluator(fp32, x, labels=labels, cache=False, progress=False)
    fp, qs = ev.task_score(None, "top1"), ev.task_score(q, "top1")
    assert last.startswith(f"top1: FP32 {fp}, INT8 {qs}; drop {fp.value - qs.value:+.4f}")
    assert main([*base, "--metric", "top1", "--json"]) == 0
    task = json.loads(capsys.readouterr().out)["task"]
    assert task["drop"]["value"] == pytest.approx(fp.value - qs.value) and task["int8"]["method"] == "wilson"
    assert main([*base, "--metric", "top-5"]) != 0
    err = capsys.readouterr().err.strip()
    assert "did you mean 'top5'" in err and len(err.splitlines()) == 1


def test_halves_of_one_candidate_build_its_session_once(case, monkeypatch, tmp_path) -> None:
    fp32, q, x, labels, *_ = case
    path = tmp_path / "q.onnx"
    onnx.save(q, path)
    made = []
    real = evaluator_mod.session_for
    monkeypatch.setattr(evaluator_mod, "session_for", lambda model, *a, **k: made.append(model) or real(model, *a, **k))
    ev = Evaluator(fp32, x, labels=labels, batch_size=8, cache=False, progress=False)
    ev.reference
    made.clear()
    for model in (q, path):
        halves = [ev.task_score(model, "top1", samples=s) for s in (slice(0, 30), slice(30, 60))]
        assert sum(h.value * h.n for h in halves) / 60 == pytest.approx(ev.task_score(model, "top1").value)
    assert len(made) == 2  # one session per candidate, for both halves and the whole
    onnx.save(fp32, path)  # the file changed: a new session
    assert ev.task_score(path, "top1").value == pytest.approx(51 / 60) and len(made) == 3


def test_top1_reads_class_folder_labels(tmp_path) -> None:
    Image = pytest.importorskip("PIL.Image", reason="Pillow reads the image folder")
    import int8kit
    from tests.unit.test_eval_chance import MODEL, PREDICTED  # answers class 7 for every image

    rng = np.random.default_rng(1)
    for name, count in (("0", 6), (str(PREDICTED), 10)):
        (tmp_path / name).mkdir()
        for i in range(count):
            Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(tmp_path / name / f"{i}.png")
    res = int8kit.evaluate(MODEL, MODEL, str(tmp_path), preprocess="resize_h=8,resize_w=8", metric="top1",
                           latency=False, progress=False)
    assert res.task.fp32.value == pytest.approx(10 / 16) and res.task.int8.n == 16  # the 10 images of folder 7/
    assert res.task.drop.value == 0 and not res.task.drop.significant
