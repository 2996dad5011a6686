"""int8kit auto: quick mode keeps the fastest trial that meets the budget, full mode floats the one
deliberately sensitive layer, a missed budget still writes the best and says so, a rerun resumes
from the log, Ctrl-C writes the best so far, and bad arguments give one line."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import int8kit
from int8kit.auto.budget import Budget, Score
from int8kit.auto.choose import choose, contenders
from int8kit.auto.search import SearchResult
from int8kit.auto.searchlog import SearchLog
from int8kit.auto.trial import SearchContext, Trial
from int8kit.cli import main
from int8kit.demo_data import demo_model_path, load_demo_data
from int8kit.errors import ConfigError


def _outlier_net(path) -> str:
    """8 -> Conv A -> Relu -> Conv B -> Conv C -> pool -> Gemm: channel 0 of B's output sits near 300
    (B's bias; its weights are ordinary) and C reads it with weights 300x smaller, so C's input
    scale (set by the outlier) wipes out the other channels: C alone is sensitive."""
    rng = np.random.default_rng(0)
    wa = rng.standard_normal((8, 8, 3, 3)).astype(np.float32) * 0.2
    wb = rng.standard_normal((8, 8, 1, 1)).astype(np.float32) * 0.3
    bb = np.zeros(8, np.float32)
    bb[0] = 300.0
    wc = rng.standard_normal((8, 8, 1, 1)).astype(np.float32) * 0.3
    wc[:, 0] /= 300.0
    wg = rng.standard_normal((10, 8)).astype(np.float32)
    inits = [numpy_helper.from_array(a, n) for a, n in ((wa, "wa"), (wb, "wb"), (bb, "bb"), (wc, "wc"), (wg, "wg"))]
    nodes = [
        helper.make_node("Conv", ["x", "wa"], ["a"], name="conv_a", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["a"], ["ar"], name="relu_a"),
        helper.make_node("Conv", ["ar", "wb", "bb"], ["b"], name="conv_b"),
        helper.make_node("Conv", ["b", "wc"], ["c"], name="conv_c"),
        helper.make_node("GlobalAveragePool", ["c"], ["p"], name="pool"),
        helper.make_node("Flatten", ["p"], ["f"], name="flat"),
        helper.make_node("Gemm", ["f", "wg"], ["y"], name="fc", transB=1),
    ]
    graph = helper.make_graph(nodes, "outlier", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, path)
    return str(path)


@pytest.fixture()
def outlier(tmp_path):
    rng = np.random.default_rng(1)
    np.save(tmp_path / "calib.npy", rng.standard_normal((32, 8, 8, 8)).astype(np.float32))
    np.save(tmp_path / "test.npy", rng.standard_normal((64, 8, 8, 8)).astype(np.float32))
    return tmp_path, _outlier_net(tmp_path / "net.onnx")


@pytest.fixture()
def mnist(tmp_path):
    data = load_demo_data()
    np.save(tmp_path / "calib.npy", data["calib"][:32])
    np.save(tmp_path / "test.npy", data["test"][:128])
    np.save(tmp_path / "labels.npy", data["test_labels"][:128])
    return tmp_path, str(demo_model_path())


def _trial(name: str, value: float, ratio: float, *, meets: bool, macs: float = 1.0, size: int = 100) -> Trial:
    return Trial(name, name, "quick", {}, 0, Score(value, 100, value - 0.01, value + 0.01), 1 - value, meets, [],
                 macs, ratio, ratio, 1.0, size, 0.1)


def test_choose_keeps_the_fastest_that_meets_and_the_fewest_float_macs_in_full_mode():
    trials = [_trial("slow", 0.99, 0.8, meets=True), _trial("fast", 0.97, 0.4, meets=True, macs=0.9),
              _trial("fastest but misses", 0.90, 0.3, meets=False), _trial("all int8", 0.98, 0.6, meets=True, macs=1.0)]
    assert choose(trials, full=False) == (trials[1], True)
    assert choose(trials, full=True) == (trials[3], True)
    # nothing meets: the best score
    missed = [_trial("a", 0.90, 0.3, meets=False), _trial("b", 0.95, 0.9, meets=False)]
    assert choose(missed, full=False) == (missed[1], False)
    # within 3 % of the fastest, the smaller model wins
    close = [_trial("big", 0.99, 0.50, meets=True, size=200), _trial("small", 0.99, 0.51, meets=True, size=100)]
    assert choose(close, full=False)[0].name == "small"


def test_full_mode_ranks_int8_macs_before_latency_among_trials_faster_than_fp32():
    trials = [_trial("89.5 %", 0.972, 0.54, meets=True, macs=0.895), _trial("91.5 %", 0.980, 0.56, meets=True, macs=0.915)]
    assert choose(trials, full=True)[0].name == "91.5 %"  # two points of MACs outrank 0.02 of latency
    trials.append(_trial("91.4 %", 0.976, 0.50, meets=True, macs=0.914))
    assert choose(trials, full=True)[0].name == "91.4 %"  # within MAC_TIE: the faster
    trials.append(_trial("all INT8, slower than FP32", 0.972, 1.14, meets=True, macs=1.0))
    assert choose(trials, full=True)[0].name == "91.4 %"
    assert [t.name for t in contenders(trials, full=True)] == ["91.4 %", "91.5 %"]
    assert choose(trials[3:], full=True)[0].name == "all INT8, slower than FP32"  # no faster one: said so, not hidden
    as_good = [_trial("92.0 %", 0.976, 0.458, meets=True, macs=0.920), _trial("92.1 %", 0.984, 0.460, meets=True, macs=0.921)]
    assert choose(as_good, full=True)[0].name == "92.1 %"  # as many MACs, as fast: the better score


def test_contenders_are_the_meeting_trials_and_in_full_mode_only_those_with_the_most_int8_macs():
    trials = [_trial("a", 0.99, 0.8, meets=True, macs=0.9), _trial("b", 0.97, 0.4, meets=True, macs=1.0),
              _trial("c", 0.90, 0.3, meets=False, macs=1.0), _trial("d", 0.98, 0.6, meets=True, macs=1.0)]
    assert [t.name for t in contenders(trials, full=False)] == ["b", "d", "a"]  # fastest first
    assert [t.name for t in contenders(trials, full=True)] == ["b", "d"]
    assert contenders(trials[2:3], full=False) == []


def test_a_chosen_model_slower_than_fp32_names_the_best_faster_trial_and_the_budget_that_gets_it():
    trials = [_trial("base", 0.952, 0.39, meets=False), _trial("float 2", 0.964, 0.48, meets=False),
              _trial("float 20", 0.976, 1.15, meets=True), _trial("16-bit", 0.972, 3.5, meets=True)]
    held = Score(0.97, 100, 0.95, 0.99)
    result = SearchResult(chosen=trials[2], built=None, meets=True, budget=Budget(1.0, 0.03), metric="agreement",
                          full=True, fp32_held_out=Score(1.0, 100, 0.96, 1.0), held_out=held, log=SearchLog("k", trials))
    text = " ".join(result.messages())
    assert "not faster than FP32 (INT8/FP32 latency 1.15)" in text
    assert "#2 'float 2': 0.9640 (drop +0.0360) at 0.48" in text and "--accept-drop 0.0360" in text
    rejudged = Budget(1.0, 0.0360)  # that budget hands back that trial
    for t in trials:
        t.meets = rejudged.meets(t.score.value)
    assert choose(trials, full=True)[0].name == "float 2"
    slow = SearchResult(chosen=trials[2], built=None, meets=True, budget=Budget(1.0, 0.03), metric="agreement",
                        full=True, fp32_held_out=Score(1.0, 100, 0.96, 1.0), held_out=held, log=SearchLog("k", trials[2:]))
    assert "not faster than FP32 (INT8/FP32 latency 1.15); no trial was." in " ".join(slow.messages())


def test_a_chosen_model_whose_output_is_further_from_fp32_than_a_missing_trial_is_said_to_meet_partly_by_chance():
    trials = [_trial("start", 0.956, 0.40, meets=False), _trial("float 3", 0.960, 0.44, meets=False),
              _trial("stem INT8", 0.984, 0.49, meets=True)]
    for t, sqnr in zip(trials, (26.5, 26.9, 25.6)):
        t.output_sqnr_db = sqnr
    held = Score(0.956, 250, 0.923, 0.975)

    def result(log):
        return SearchResult(chosen=trials[2], built=None, meets=True, budget=Budget(1.0, 0.03), metric="agreement",
                            full=True, fp32_held_out=Score(1.0, 250, 0.985, 1.0), held_out=held, log=SearchLog("k", log))

    text = " ".join(result(trials).messages())
    assert "further from FP32's (SQNR 25.6 dB) than that of #2 'float 3' (26.9 dB), which misses the budget at 0.9600" in text
    assert "held-out half is the check (0.956" in text
    trials[1].output_sqnr_db = 25.9  # within CHANCE_DB of the chosen one: nothing to say
    trials[0].output_sqnr_db = None
    assert not any("further from FP32" in m for m in result(trials).messages())


def test_put_back_tries_every_floated_layer_then_once_more_those_still_float(monkeypatch):
    from types import SimpleNamespace

    from int8kit.auto import full

    order = [f"L{i}" for i in range(12)]  # most sensitive first; all 12 were needed by the bisection
    tried: list[frozenset] = []

    def run(floats):  # L0 and L11 must float; L5 may go back to INT8 only once L3 is back
        tried.append(floats)
        return SimpleNamespace(meets={"L0", "L11"} <= floats and ("L5" in floats or "L3" not in floats))

    def floating(names, label, stage):
        return frozenset(names)

    kept = full._put_back(run, order, 12, floating, lambda n: None)
    assert kept == ["L0", "L11"]  # L5 came back in the second pass, after L3
    assert len(tried) == 14  # 11 in the first pass (not 8), then L11, L5, L0 again
    assert tried[-2] == frozenset({"L0", "L11"}) and tried[-3] == frozenset({"L0", "L5"})
    monkeypatch.setattr(full, "MAX_PUT_BACK", 5)
    tried.clear()
    assert full._put_back(run, order, 12, floating, lambda n: None) == ["L0", "L1", "L2", "L3", "L4", "L5", "L11"]
    assert len(tried) == 5


def test_full_mode_last_tries_the_fastest_most_int8_meeting_trial_without_per_channel_steps():
    from types import SimpleNamespace

    from int8kit.auto import full

    ran: list = []
    ctx = SimpleNamespace(uses_channel_steps=lambda: True, base=SimpleNamespace(channel_scales=True))
    trials = [_trial("base", 0.95, 0.95, meets=True, macs=0.95), _trial("no steps", 0.94, 0.70, meets=False, macs=0.95),
              _trial("stem INT8", 0.95, 1.14, meets=True), _trial("stem INT8, slower", 0.95, 1.20, meets=True)]
    trials[2].changes = {"stem_float": False}
    full._without_channel_steps(ctx, ran.append, trials, lambda n: None)
    assert [(c.name, c.changes) for c in ran] == [("stem INT8 + no per-channel steps",
                                                  {"stem_float": False, "channel_scales": False})]
    ran.clear()
    trials[2].changes = {"stem_float": False, "channel_scales": False}  # already without: nothing to try
    full._without_channel_steps(ctx, ran.append, trials, lambda n: None)
    full._without_channel_steps(SimpleNamespace(uses_channel_steps=lambda: False), ran.append, trials[:2], lambda n: None)
    assert ran == []


def test_full_mode_starts_closest_to_fp32_and_keeps_a_tuning_step_that_lowers_the_error_without_losing_the_budget():
    from int8kit.auto import full

    def trial(name, value, sqnr, meets, **changes):
        t = _trial(name, value, 0.5, meets=meets)
        t.output_sqnr_db, t.changes = sqnr, changes
        return t

    quick = [trial("kl", 0.952, 29.6, True), trial("mse", 0.952, 29.7, True), trial("per-tensor", 0.960, 31.0, False),
             trial("float dw", 0.964, 33.0, True, accuracy_opt=True)]
    assert full.starting_point(quick).name == "mse"  # meets, changes no float layer, least output error
    assert full.starting_point([t for t in quick if t.name == "per-tensor"]).name == "per-tensor"
    start = quick[1]
    assert full._improves(trial("tuned", 0.948, 35.0, False), quick[2])  # the start missed anyway: lower error wins
    assert not full._improves(trial("tuned", 0.956, 35.0, False), start)  # loses the budget the start met
    assert not full._improves(trial("tuned", 0.960, 29.0, True), start)  # a better score on n samples is not less error
    assert full._improves(trial("tuned", 0.948, 30.0, True), start)


def test_swap_trades_each_float_layer_most_macs_first_for_a_cheaper_one_that_keeps_the_budget(monkeypatch):
    from types import SimpleNamespace

    from int8kit.auto import full

    order = ["A", "B", "C", "D", "E", "F"]  # most error per MAC first
    cost = {"A": 50, "B": 40, "C": 5, "D": 30, "E": 4, "F": 3}
    tried: list[frozenset] = []

    def run(floats):  # A must float; B's accuracy can come from E instead, nothing else can carry it
        tried.append(floats)
        return SimpleNamespace(meets="A" in floats and bool({"B", "E"} & floats))

    kept = full._swap(run, order, ["A", "B"], cost, lambda names, label, stage: frozenset(names), lambda n: None)
    assert kept == ["A", "E"]
    # A (50 MACs) first: C, D, E, F are cheaper and fail without A; then B: C misses, D misses, E holds
    assert tried == [frozenset(s) for s in ("CB", "DB", "EB", "FB", "AC", "AD", "AE")]
    monkeypatch.setattr(full, "SWAP_TRIES", 2)
    tried.clear()
    assert full._swap(run, order, ["A", "B"], cost, lambda names, label, stage: frozenset(names), lambda n: None) == ["A", "B"]
    assert len(tried) == 4


def test_budget_absolute_and_relative():
    b = Budget(0.9, 0.01)
    assert b.meets(0.89) and not b.meets(0.8899)
    r = Budget(0.8, 0.1, relative=True)
    assert r.threshold == pytest.approx(0.72) and r.drop(0.72) == pytest.approx(0.1)


def test_quick_mode_writes_the_fastest_candidate_meeting_the_budget(mnist):
    folder, model = mnist
    out = folder / "out"
    result = int8kit.auto(model, folder / "calib.npy", folder / "test.npy", labels=folder / "labels.npy", output_dir=out,
                          metric="top1", accept_drop=0.02, progress=False, latency_runs=3)
    assert result.metric == "top1" and len(result.log) >= 6
    meeting = [t for t in result.log.trials.values() if t.meets]
    assert result.meets and result.chosen in meeting
    best = min(t.latency_ratio for t in meeting)
    assert result.chosen.latency_ratio <= best * 1.03 + 1e-9  # the fastest, within the tie margin
    for suffix in ("_int8.onnx", "_quant.json", "_config.json", "_search.json", "_search.txt", "_report.html"):
        assert result.files[suffix].is_file()
    log = json.loads(result.files["_search.json"].read_text())
    assert log["chosen"] == result.chosen.key and len(log["trials"]) == len(result.log)
    # every trial's output error against FP32, from the scoring pass, kept in the log and its table
    assert all(t["output_sqnr_db"] > 10 for t in log["trials"])
    assert "output SQNR dB" in result.files["_search.txt"].read_text()
    html = result.files["_report.html"].read_text()
    assert "Automatic search" in html and "data:image/png;base64" in html
    # the configuration replays: quantize --config gives the same INT8 model
    again = int8kit.quantize(model, folder / "calib.npy", config=result.files["_config.json"], output_dir=None,
                             check_latency=False, progress=False)
    assert again.model.SerializeToString() == result.built.model.SerializeToString()
    assert result.held_out.n == 64 and result.fp32_held_out.n == 64


def test_full_mode_floats_the_sensitive_layer(outlier):
    folder, model = outlier
    result = int8kit.auto(model, folder / "calib.npy", folder / "test.npy", output_dir=folder / "out", metric="cosine",
                          accept_drop=0.002, full=True, progress=False, latency_runs=2, bias_tuning_samples=0)
    base = next(iter(result.log.trials.values()))
    assert not base.meets, "the outlier must make the all-INT8 model miss the budget"
    assert result.meets
    assert "conv_c" in result.chosen.float_layers
    assert "conv_a" not in result.chosen.float_layers
    # float conv_c reads conv_b's output unquantized, so onnxruntime runs conv_b in float too: counted,
    # and the report says why
    assert "conv_b" in result.chosen.float_layers
    from int8kit.analysis.ort_fusion import RUNS_IN_FLOAT

    assert RUNS_IN_FLOAT in result.files["_report.html"].read_text()
    assert any(t.stage == "float-search" for t in result.log.trials.values())
    reference = [t for t in result.log.trials.values() if "16-bit" in t.name]
    assert len(reference) == 1 and reference[0].int8_macs == 0.0 and reference[0] is not result.chosen


def test_nothing_meets_the_budget_still_writes_the_best_and_says_so(outlier, capsys):
    folder, model = outlier
    out = folder / "out"
    code = main([
        "auto", model, "--calib-data", str(folder / "calib.npy"), "--test-data", str(folder / "test.npy"),
        "--metric", "cosine", "--accept-drop", "-0.5", "-o", str(out), "--no-progress", "--latency-runs", "2",
    ])
    text = capsys.readouterr().out
    assert code == 1
    assert "no candidate met the budget" in text and "short" in text and "conv_c" in text  # the costly layer named
    assert (out / "net_int8.onnx").is_file() and (out / "net_search.json").is_file()
    log = json.loads((out / "net_search.json").read_text())
    assert log["meets"] is False and log["costly_layers"][0]["layer"] == "conv_c"


def test_rerun_resumes_from_the_log(mnist, monkeypatch):
    folder, model = mnist
    args = dict(labels=folder / "labels.npy", output_dir=folder / "out", metric="top1", accept_drop=0.02, progress=False,
                latency_runs=2)
    first = int8kit.auto(model, folder / "calib.npy", folder / "test.npy", **args)

    def no_trial(self, candidate):
        raise AssertionError(f"candidate '{candidate.name}' was scored again")

    monkeypatch.setattr(SearchContext, "run", no_trial)
    second = int8kit.auto(model, folder / "calib.npy", folder / "test.npy", **args)
    assert second.resumed == len(first.log) and second.chosen.key == first.chosen.key


def test_ctrl_c_writes_the_best_so_far(mnist, monkeypatch):
    folder, model = mnist
    real = SearchContext.run
    calls = []

    def interrupted_third(self, candidate):
        calls.append(candidate.name)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(self, candidate)

    monkeypatch.setattr(SearchContext, "run", interrupted_third)
    result = int8kit.auto(model, folder / "calib.npy", folder / "test.npy", labels=folder / "labels.npy",
                          output_dir=folder / "out", metric="top1", accept_drop=0.5, progress=False, latency_runs=2)
    assert result.interrupted and len(result.log) == 2
    assert result.chosen.name in calls[:2]
    assert result.files["_int8.onnx"].is_file()
    assert "interrupted" in " ".join(result.messages())
    journal = json.loads(result.files["_search.json"].read_text())
    assert journal["interrupted"] is True and len(journal["trials"]) == 2


@pytest.mark.parametrize("extra, expected", [
    (["--metric", "nonsense"], "--metric 'nonsense' is not a metric"),
    (["--metric", "top1"], "label"),
    (["--relative", "--accept-drop", "1.5"], "--accept-drop with --relative"),
    (["--latency-runs", "0"], "--latency-runs must be at least 1"),
])
def test_bad_arguments_give_one_line(mnist, capsys, extra, expected):
    folder, model = mnist
    code = main(["auto", model, "--calib-data", str(folder / "calib.npy"), "--test-data", str(folder / "test.npy"),
                 "-o", str(folder / "out"), "--no-progress", *extra])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and expected in err and "Traceback" not in err
    assert not (folder / "out" / "net_int8.onnx").exists()


def test_api_refuses_tuning_options():
    with pytest.raises(ConfigError, match="bias tuning"):
        int8kit.auto("m.onnx", "c.npy", "t.npy", bias_tuning=8)


def test_rerun_with_another_budget_rechooses_without_scoring(mnist, monkeypatch):
    folder, model = mnist
    args = dict(labels=folder / "labels.npy", output_dir=folder / "out", metric="top1", progress=False, latency_runs=2)
    first = int8kit.auto(model, folder / "calib.npy", folder / "test.npy", accept_drop=0.5, **args)
    assert all(t.meets for t in first.log.trials.values())
    monkeypatch.setattr(SearchContext, "run", lambda self, c: pytest.fail(f"'{c.name}' scored again"))
    strict = int8kit.auto(model, folder / "calib.npy", folder / "test.npy", accept_drop=-0.5, **args)
    assert not strict.meets and not any(t.meets for t in strict.log.trials.values())


def _stem_net(path) -> str:
    """3 -> stem conv -> Relu -> depthwise conv -> Relu -> pointwise conv -> pool -> Gemm (the MobileNet stem pair)."""
    rng = np.random.default_rng(2)
    arrays = {"ws": rng.standard_normal((8, 3, 3, 3)) * 0.3, "wd": rng.standard_normal((8, 1, 3, 3)) * 0.3,
              "wp": rng.standard_normal((16, 8, 1, 1)) * 0.3, "wg": rng.standard_normal((10, 16))}
    inits = [numpy_helper.from_array(a.astype(np.float32), n) for n, a in arrays.items()]
    nodes = [
        helper.make_node("Conv", ["x", "ws"], ["s"], name="stem", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["s"], ["sr"], name="relu_s"),
        helper.make_node("Conv", ["sr", "wd"], ["d"], name="dw", pads=[1, 1, 1, 1], group=8),
        helper.make_node("Relu", ["d"], ["dr"], name="relu_d"),
        helper.make_node("Conv", ["dr", "wp"], ["p"], name="pw"),
        helper.make_node("GlobalAveragePool", ["p"], ["g"], name="pool"),
        helper.make_node("Flatten", ["g"], ["f"], name="flat"),
        helper.make_node("Gemm", ["f", "wg"], ["y"], name="fc", transB=1),
    ]
    graph = helper.make_graph(nodes, "stem", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return str(path)


def test_full_mode_tries_the_stem_pair_in_int8_both_and_the_depthwise_alone(tmp_path):
    rng = np.random.default_rng(3)
    np.save(tmp_path / "calib.npy", rng.standard_normal((16, 3, 16, 16)).astype(np.float32))
    np.save(tmp_path / "test.npy", rng.standard_normal((32, 3, 16, 16)).astype(np.float32))
    model = _stem_net(tmp_path / "stem.onnx")
    result = int8kit.auto(model, tmp_path / "calib.npy", tmp_path / "test.npy", output_dir=tmp_path / "out",
                          metric="cosine", accept_drop=0.5, full=True, progress=False, latency_runs=2, bias_tuning_samples=0)
    floats = {t.name: t.float_layers for t in result.log.trials.values()}
    assert any(f == ["stem", "dw"] for f in floats.values()), floats  # the base: the stem pair float by rule
    assert any(f == [] for name, f in floats.items() if name.endswith("stem conv INT8")), floats
    assert any(f == ["stem"] for name, f in floats.items() if name.endswith("stem depthwise INT8")), floats


def test_the_search_times_the_openvino_form_in_openvino(mnist):
    pytest.importorskip("openvino", reason="openvino is an optional extra (pip install openvino)")
    folder, model = mnist
    result = int8kit.auto(model, folder / "calib.npy", folder / "test.npy", labels=folder / "labels.npy",
                          output_dir=folder / "ov", metric="top1", accept_drop=0.02, progress=False, latency_runs=2,
                          target="openvino")
    assert result.runtime == "openvino"
    assert all(t.fp32_ms > 0 and t.int8_ms > 0 for t in result.log.trials.values())
    assert "batch 1, openvino" in result.files["_search.txt"].read_text()
    assert json.loads(result.files["_search.json"].read_text())["latency_runtime"] == "openvino"


def _hswish_net(path) -> str:
    """HardSwish -> depthwise conv -> pool -> Gemm, channels 1000x apart in range: the HardSwish output,
    which only the depthwise conv reads, gets per-channel steps."""
    rng = np.random.default_rng(3)
    gains = np.array([1.0, 0.001, 0.01, 0.5, 0.003, 1.0, 0.05, 0.02], np.float32)
    w1 = (rng.standard_normal((8, 1, 3, 3)) / gains.reshape(8, 1, 1, 1) * 0.1).astype(np.float32)
    wg = rng.standard_normal((10, 8)).astype(np.float32)
    nodes = [helper.make_node("HardSwish", ["x"], ["h"], name="hswish"),
             helper.make_node("Conv", ["h", "w1"], ["d"], name="dw", group=8, pads=[1, 1, 1, 1]),
             helper.make_node("GlobalAveragePool", ["d"], ["p"], name="pool"),
             helper.make_node("Flatten", ["p"], ["f"], name="flat"),
             helper.make_node("Gemm", ["f", "wg"], ["y"], name="fc", transB=1)]
    graph = helper.make_graph(nodes, "hswish", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])],
                              [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(wg, "wg")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    np.save(path.parent / "data.npy", (rng.standard_normal((64, 8, 8, 8)) * 4 * gains.reshape(1, 8, 1, 1)).astype(np.float32))
    return str(path)


def test_quick_mode_tries_without_per_channel_steps_only_where_the_plan_has_them(tmp_path, outlier):
    model = _hswish_net(tmp_path / "hswish.onnx")
    data = tmp_path / "data.npy"
    result = int8kit.auto(model, data, data, output_dir=None, metric="cosine", accept_drop=0.5, progress=False,
                          latency_runs=2)
    trials = {t.name: t for t in result.log.trials.values()}
    assert trials["no per-channel steps"].changes == {"channel_scales": False}
    folder, convs_only = outlier  # its Relu folds into the conv's output: no float op, no steps, nothing to drop
    plain = int8kit.auto(convs_only, folder / "calib.npy", folder / "test.npy", output_dir=None, metric="agreement",
                         accept_drop=0.5, progress=False, latency_runs=2)
    assert "th_method max" in {t.name for t in plain.log.trials.values()}
    assert "no per-channel steps" not in {t.name for t in plain.log.trials.values()}
