"""Layer sensitivity (isolated / accumulated error per INT8 layer), ``int8kit analyze`` and its
HTML report, on models built here with one layer made sensitive on purpose."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
from html.parser import HTMLParser

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import int8kit
import int8kit.api as api
from int8kit.analysis.explain import clip_reason, methods_headline
from int8kit.analysis.sensitivity import LayerSensitivity, layer_sensitivity, sensitivity_ranking
from int8kit.cli import main
from int8kit.evaluate import Evaluator
from int8kit.plan.graph_facts import GraphFacts

OUTLIER = 400.0  # conv1's channel 0 (conv2's input) is this many times larger than the others


def _outlier_model() -> onnx.ModelProto:
    """conv1 -> relu -> conv2 -> relu -> conv3 -> relu -> GAP -> fc. conv1 writes one channel ~400x
    larger than the rest; conv2 reads that channel with weights 400x smaller, so the channel barely
    reaches conv2's output, but one per-tensor INT8 scale for conv2's input leaves the other
    channels a few levels: conv2 is the one sensitive layer."""
    rng = np.random.default_rng(0)
    w1 = rng.normal(0, 0.4, (8, 3, 3, 3)).astype(np.float32)
    w1[0] *= OUTLIER
    w2 = rng.normal(0, 0.3, (8, 8, 3, 3)).astype(np.float32)
    w2[:, 0] /= OUTLIER
    w3 = rng.normal(0, 0.3, (8, 8, 3, 3)).astype(np.float32)
    wf = rng.normal(0, 0.3, (5, 8)).astype(np.float32)
    inits = [numpy_helper.from_array(a, n) for a, n in ((w1, "w1"), (w2, "w2"), (w3, "w3"), (wf, "wf"),
                                                          (np.zeros(5, np.float32), "bf"))]
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("Conv", ["r2", "w3"], ["c3"], name="conv3", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c3"], ["r3"], name="relu3"),
        helper.make_node("GlobalAveragePool", ["r3"], ["gap"], name="gap"),
        helper.make_node("Flatten", ["gap"], ["flat"], name="flatten"),
        helper.make_node("Gemm", ["flat", "wf", "bf"], ["logits"], name="fc", transB=1),
    ]
    graph = helper.make_graph(nodes, "outlier", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 5])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model


@pytest.fixture(scope="module")
def outlier(tmp_path_factory):
    root = tmp_path_factory.mktemp("sens")
    onnx.save(_outlier_model(), str(root / "net.onnx"))
    rng = np.random.default_rng(1)
    np.save(root / "calib.npy", rng.normal(0, 1, (32, 3, 8, 8)).astype(np.float32))
    np.save(root / "test.npy", rng.normal(0, 1, (24, 3, 8, 8)).astype(np.float32))
    q = api.quantize(root / "net.onnx", root / "calib.npy", output_dir=root / "out", progress=False, check_latency=False,
                     stem_float=False)
    return root, q


def test_outlier_layer_ranks_first(outlier) -> None:
    root, q = outlier
    ev = Evaluator(root / "net.onnx", root / "test.npy", progress=False, cache=False)
    sens = layer_sensitivity(q.optimized_model, q.plan, ev, samples=16)
    assert all(isinstance(s, LayerSensitivity) for s in sens)
    assert [s.layer for s in sens][:3] == ["conv1", "conv2", "conv3"]  # graph order
    assert sensitivity_ranking(sens)[0] == "conv2"  # by the error carried to the model output
    assert sensitivity_ranking(sens, by="isolated")[0] == "conv2"  # and at the layer's own output
    conv2 = next(s for s in sens if s.layer == "conv2")
    others = [s for s in sens if s.layer != "conv2"]
    assert conv2.isolated.sqnr_db < min(s.isolated.sqnr_db for s in others) - 6  # 4x the error of any other
    # the input's range is the larger problem: one scale for the outlier channel and the rest
    assert conv2.isolated_activation.relative_error > conv2.isolated_weight.relative_error
    assert conv2.macs == 8 * 8 * 8 * 8 * 3 * 3  # 8 output channels x 8x8 pixels x 8 inputs x 3x3
    assert conv2.accumulated is not None and conv2.isolated_output is not None
    # the same ranking from the INT8 model and its quant record as from the plan
    assert sensitivity_ranking(q.optimized_model, q.int8_model, ev, samples=16)[0] == "conv2"


def _matmul_model() -> onnx.ModelProto:
    rng = np.random.default_rng(3)
    w = numpy_helper.from_array(rng.normal(0, 0.5, (16, 6)).astype(np.float32), "w")
    node = helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")
    graph = helper.make_graph([node], "mm", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 6])], [w])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_isolated_equals_the_int8_model_on_one_layer(tmp_path) -> None:
    """One MatMul with a float output: the INT8 model is that layer alone, so its accumulated error
    (onnxruntime's integer kernel) and the isolated one (fake-quantized one-node run) agree."""
    onnx.save(_matmul_model(), str(tmp_path / "mm.onnx"))
    x = np.random.default_rng(4).normal(0, 1, (64, 16)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    q = api.quantize(tmp_path / "mm.onnx", tmp_path / "x.npy", output_dir=None, progress=False, check_latency=False)
    ev = Evaluator(tmp_path / "mm.onnx", tmp_path / "x.npy", progress=False, cache=False)
    (s,) = layer_sensitivity(q.optimized_model, q.plan, ev, samples=64)
    assert s.layer == "mm" and s.macs == 16 * 6 and s.isolated_weight is not None
    assert s.isolated.relative_error > 0
    assert s.isolated.relative_error == pytest.approx(s.accumulated.relative_error, rel=1e-3)
    assert s.isolated_output.relative_error == pytest.approx(s.isolated.relative_error, rel=1e-6)  # y is the output


def test_ranking_rejects_unknown_criterion(outlier) -> None:
    with pytest.raises(int8kit.ConfigError, match="by='speed'"):
        sensitivity_ranking([], by="speed")


class _Assets(HTMLParser):
    """Every URL-bearing attribute of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[tuple[str, str, str]] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag, attrs) -> None:
        self.tags.append(tag)
        for key, value in attrs:
            if key in ("src", "href", "data", "poster", "srcset", "action") and value is not None:
                self.urls.append((tag, key, value))


@pytest.fixture(scope="module")
def analyzed(outlier):
    root, q = outlier
    report = root / "analyze.html"
    code = main(["analyze", str(root / "net.onnx"), str(q.int8_model), "--data", str(root / "test.npy"),
                 "--report", str(report), "--no-progress", "--samples", "16"])
    assert code == 0
    return report, report.read_text(encoding="utf-8")


def test_cli_and_report_name_the_outlier_layer(analyzed, capsys) -> None:
    _, text = analyzed
    assert "Most sensitive layer on its own: <code>conv2</code>" in text
    worst = text.index("most sensitive layers")
    assert text.index(">conv2<", worst) < text.index(">conv1<", worst)
    assert "Model summary" in text and "MACs per sample" in text and "Options and data used" in text
    assert "threshold methods that ran:" in text


def test_report_is_self_contained(analyzed) -> None:
    _, text = analyzed
    page = _Assets()
    page.feed(text)
    assert page.urls, "the report has images"
    for tag, key, value in page.urls:
        assert tag == "img" and key == "src" and value.startswith("data:image/png;base64,"), (tag, key, value[:60])
        assert base64.b64decode(value.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(page.urls) >= 2  # the per-layer plot and histograms
    assert "script" not in page.tags and "link" not in page.tags and "iframe" not in page.tags
    assert not re.search(r"https?://", text)


def test_report_renders_in_a_headless_browser(analyzed, tmp_path) -> None:
    browser = next((shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)
    if browser is None:
        pytest.skip("no headless browser (chromium) installed: apt-get install -y chromium renders the report")
    report, _ = analyzed
    shot = tmp_path / "shot.png"
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1200,2400",
                    f"--screenshot={shot}", report.as_uri()], capture_output=True, timeout=120, check=False)
    assert shot.is_file(), "the browser wrote no screenshot"
    from PIL import Image

    pixels = np.asarray(Image.open(shot).convert("L"), dtype=np.float64)
    assert pixels.shape[0] >= 2000 and pixels.std() > 10  # a page with content, not a blank one
    assert (pixels < 100).mean() > 0.005  # text and plot lines drawn


def test_analyze_api_result(outlier) -> None:
    root, q = outlier
    res = int8kit.analyze(root / "net.onnx", q.int8_model, root / "test.npy", samples=8, progress=False)
    assert res.ranking()[0] == "conv2" and res.report is None
    table = res.to_table(worst=2)
    assert "conv2" in table and "worst 2 of" in table
    payload = json.loads(json.dumps(res.to_dict()))
    assert payload["ranking"][0] == "conv2" and payload["layers"][0]["layer"] == "conv1"
    assert res.summary.int8_macs > 0 and res.summary.float_macs == 0  # stem_float=False: every conv INT8


def test_analyze_without_quant_record_is_one_sentence(outlier, tmp_path, capsys) -> None:
    root, q = outlier
    lone = tmp_path / "model.onnx"
    shutil.copy(q.int8_model, lone)
    code = main(["analyze", str(root / "net.onnx"), str(lone), "--data", str(root / "test.npy"), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "no quant record found" in err and "--quant-json" in err and len(err.splitlines()) == 1


def test_headline_counts_the_methods_that_ran(outlier) -> None:
    _, q = outlier
    qdoc = json.loads(q.quant_json.read_text())
    sentence, rows = methods_headline(qdoc, GraphFacts.of(q.optimized_model))
    acts = [r for r in qdoc["tensors"].values() if r["kind"] == "activation"]
    for method in {r["method"] for r in acts}:
        assert f"{method} on {sum(r['method'] == method for r in acts)}" in sentence
    assert sum(r[2] for r in rows) == len(acts)
    # the model input got max by int8kit's rule, not the global kl: the headline says so
    assert any(m == "max" and why == "int8kit rule" for m, why, _ in rows)


def test_clip_reason_names_hardswish() -> None:
    node = helper.make_node("HardSwish", ["c"], ["h"], name="hs")
    conv = helper.make_node("Conv", ["x", "w"], ["c"], name="conv")
    graph = helper.make_graph([conv, node], "hs", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4, 4])],
                              [helper.make_tensor_value_info("h", TensorProto.FLOAT, [1, 1, 4, 4])],
                              [numpy_helper.from_array(np.ones((1, 1, 1, 1), np.float32), "w")])
    facts = GraphFacts.of(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    why = clip_reason(facts, "c", {"lo": -3.0, "hi": 5.0, "min": -20.0, "max": 5.0})
    assert why is not None and "HardSwish" in why and "below -3" in why
    assert clip_reason(facts, "c", {"lo": -5.0, "hi": 5.0, "min": -20.0, "max": 5.0}) is None  # clipped by the method


def test_same_errors_when_the_reference_keeps_only_inputs(outlier, monkeypatch, capsys) -> None:
    """A reference too large to store keeps only its inputs (PP-OCRv4 det): the layers' FP32 inputs
    are computed again piece by piece and every number stays the same; a progress bar shows the layers."""
    import functools

    import int8kit.evaluate.evaluator as evaluator_mod

    root, q = outlier
    stored = layer_sensitivity(q.optimized_model, q.plan, Evaluator(root / "net.onnx", root / "test.npy", progress=False,
                                                                     cache=False), samples=8, accumulated=False)
    monkeypatch.setattr(evaluator_mod, "compute_layer_reference",
                        functools.partial(evaluator_mod.compute_layer_reference, max_bytes=0))
    ev = Evaluator(root / "net.onnx", root / "test.npy", progress=False, cache=False)
    recomputed = layer_sensitivity(q.optimized_model, q.plan, ev, samples=8, accumulated=False, progress=True)
    assert ev.layer_reference(8, []).meta["values"] is False
    assert [s.layer for s in recomputed] == [s.layer for s in stored]
    for a, b in zip(stored, recomputed):
        assert a.isolated.relative_error == pytest.approx(b.isolated.relative_error, rel=1e-6)
        assert a.isolated_output.relative_error == pytest.approx(b.isolated_output.relative_error, rel=1e-6)
    assert "isolated error" in capsys.readouterr().err


def _hardswish_model() -> onnx.ModelProto:
    rng = np.random.default_rng(5)
    inits = [numpy_helper.from_array(rng.normal(0, 1.0, (8, 3, 3, 3)).astype(np.float32), "w1"),
             numpy_helper.from_array(rng.normal(0, 0.3, (4, 8)).astype(np.float32), "wf"),
             numpy_helper.from_array(np.zeros(4, np.float32), "bf")]
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
             helper.make_node("HardSwish", ["c1"], ["h1"], name="hswish"),
             helper.make_node("GlobalAveragePool", ["h1"], ["gap"], name="gap"),
             helper.make_node("Flatten", ["gap"], ["flat"], name="flatten"),
             helper.make_node("Gemm", ["flat", "wf", "bf"], ["logits"], name="fc", transB=1)]
    graph = helper.make_graph(nodes, "hs", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 4])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_reports_name_the_rule_behind_a_range_cut_on_purpose(tmp_path) -> None:
    """The HardSwish input is cut at -3 (HardSwish is flat below): the evaluate report's worst
    table, its histogram captions and the analyze report say so beside the tensor."""
    onnx.save(_hardswish_model(), str(tmp_path / "hs.onnx"))
    np.save(tmp_path / "x.npy", np.random.default_rng(6).normal(0, 1, (24, 3, 8, 8)).astype(np.float32))
    q = api.quantize(tmp_path / "hs.onnx", tmp_path / "x.npy", output_dir=tmp_path / "out", progress=False,
                     check_latency=False, stem_float=False)
    rec = json.loads(q.quant_json.read_text())["tensors"]["c1"]
    assert rec["lo"] == pytest.approx(-3.0) and rec["min"] < -3.0  # the planner did cut it
    html = tmp_path / "eval.html"
    api.evaluate(tmp_path / "hs.onnx", q.int8_model, tmp_path / "x.npy", report=html, latency=False, progress=False)
    text = html.read_text(encoding="utf-8")
    assert "cut below -3 on purpose: HardSwish is flat there" in text
    assert "threshold methods that ran:" in text.split("<h2>")[0]  # in the headline, before the first section
    res = api.analyze(tmp_path / "hs.onnx", q.int8_model, tmp_path / "x.npy", samples=8, progress=False,
                      report=tmp_path / "an.html")
    assert "cut below -3 on purpose: HardSwish is flat there" in res.report.read_text(encoding="utf-8")
    # the HardSwish reading the cut tensor owns that tensor's error, whether it runs as INT8 Add/Mul or in float
    hswish = next(s for s in res.layers if s.layer == "hswish")
    assert hswish.methods == {"c1": rec["method"]} and hswish.isolated.relative_error > 0 and hswish.isolated_weight is None
    assert hswish.int8 == bool(json.loads(q.quant_json.read_text()).get("integer_hardswish"))


def test_method_origin_says_why() -> None:
    from int8kit.analysis.explain import method_origin

    conv = helper.make_node("Conv", ["x", "w"], ["c"], name="conv")
    graph = helper.make_graph([conv], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4, 4])],
                              [helper.make_tensor_value_info("c", TensorProto.FLOAT, [1, 1, 4, 4])],
                              [numpy_helper.from_array(np.ones((1, 1, 1, 1), np.float32), "w")])
    facts = GraphFacts.of(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    signed = {"min": -2.0, "max": 9.0}
    config = {"th_method": "kl", "method_rules": True, "overrides": {}}
    assert method_origin(facts, "c", {**signed, "method": "kl"}, config) == "global --th-method kl"
    assert "signed Conv output" in method_origin(facts, "c", {**signed, "method": "mse"}, config)
    assert "float stem" in method_origin(facts, "c", {**signed, "method": "max"}, config)  # not "signed": max never clips
    assert "model input" in method_origin(facts, "x", {**signed, "method": "max"}, config)
    assert method_origin(facts, "c", {**signed, "method": "mse"}, {**config, "overrides": {"conv": {"th_method": "mse"}}}) \
        == "override for 'conv'"
    assert method_origin(facts, "c", {**signed, "method": "mse"}, {**config, "method_rules": False}) == "chosen by --th-method kl"


def test_ranking_leaves_float_ops_out_unless_asked(outlier) -> None:
    root, q = outlier
    ev = Evaluator(root / "net.onnx", root / "test.npy", progress=False, cache=False)
    sens = layer_sensitivity(q.optimized_model, q.plan, ev, samples=8, accumulated=False)
    float_op = LayerSensitivity("soft", "Softmax", ["logits"], "p", 0, sens[0].isolated, sens[0].isolated, None,
                                isolated_output=sens[0].isolated, int8=False)
    float_op.isolated_output = type(sens[0].isolated)(**{**sens[0].isolated.__dict__, "relative_error": 99.0})
    assert "soft" not in sensitivity_ranking(sens + [float_op])  # the search never floats a float op
    assert sensitivity_ranking(sens + [float_op], int8_only=False)[0] == "soft"
