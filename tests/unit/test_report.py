"""The HTML report: summary, per-layer error plot and table, calibration histograms; API and CLI."""

from __future__ import annotations

import base64
import json
import re

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import int8kit.api as api
from int8kit.cli import main
from int8kit.analysis import report as report_mod
from int8kit.analysis.layerwise import LayerError
from int8kit.analysis.report import find_quant_json, write_report

PNG = "data:image/png;base64,"


def _conv_model() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.normal(0, 0.4, (8, 3, 3, 3)).astype(np.float32), "w1")
    b1 = numpy_helper.from_array(rng.normal(0, 0.1, 8).astype(np.float32), "b1")
    w2 = numpy_helper.from_array(rng.normal(0, 0.3, (8, 8, 3, 3)).astype(np.float32), "w2")
    wf = numpy_helper.from_array(rng.normal(0, 0.3, (5, 8)).astype(np.float32), "wf")
    bf = numpy_helper.from_array(np.zeros(5, np.float32), "bf")
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("GlobalAveragePool", ["r2"], ["gap"], name="gap"),
        helper.make_node("Flatten", ["gap"], ["flat"], name="flatten"),
        helper.make_node("Gemm", ["flat", "wf", "bf"], ["logits"], name="fc", transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 5])],
        [w1, b1, w2, wf, bf],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model


@pytest.fixture(scope="module")
def quantized(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    onnx.save(_conv_model(), str(root / "tiny.onnx"))
    data = np.random.default_rng(1).normal(0, 1, (40, 3, 8, 8)).astype(np.float32)
    np.save(root / "data.npy", data)
    stats_path = root / "tiny_stats.npz"
    res = api.quantize(root / "tiny.onnx", root / "data.npy", output_dir=root / "out", dump_stats=stats_path, progress=False)
    return root, res, stats_path


def _png_count(text: str) -> int:
    return text.count(PNG)


def test_evaluate_per_layer_and_report(quantized, tmp_path) -> None:
    root, q, stats_path = quantized
    out = tmp_path / "r.html"
    res = api.evaluate(q.fp32_optimized_model, q.int8_model, root / "data.npy", per_layer=True, report=out,
                       stats=stats_path, latency=False, progress=False)
    assert res.layers and all(isinstance(e, LayerError) for e in res.layers)
    assert "layers" in res.to_dict() and json.dumps(res.to_dict())
    text = out.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>") and text.rstrip().endswith("</html>")
    # summary values, formatted as in EvalResult.to_table
    assert f"{res.outputs[0].mean_cosine:.6f}" in text
    assert f"{res.top1_agreement * 100:.2f}%" in text
    # the worst layer is named in the table
    worst = max(res.layers, key=lambda e: e.relative_error)
    assert worst.name in text and f"{worst.relative_error:.4g}" in text
    # plots: the per-layer plot plus at least one histogram; each is a decodable PNG; no external assets
    assert _png_count(text) >= 2
    first = re.search(r'data:image/png;base64,([A-Za-z0-9+/=]+)"', text).group(1)
    assert base64.b64decode(first)[:8] == b"\x89PNG\r\n\x1a\n"
    assert "http://" not in text and "https://" not in text
    # clipping ranges and methods come from the auto-found quant.json
    assert "Calibration histograms" in text and "clipped" in text and re.search(r"kl u?int8", text)


def test_report_default_keeps_json_and_skips_layers(quantized) -> None:
    root, q, _ = quantized
    res = api.evaluate(q.fp32_optimized_model, q.int8_model, root / "data.npy", latency=False, progress=False)
    assert res.layers is None and "layers" not in res.to_dict()


def test_report_without_stats_histograms_eval_data(quantized, tmp_path) -> None:
    root, q, _ = quantized
    out = tmp_path / "r.html"
    api.evaluate(q.fp32_optimized_model, q.int8_model, root / "data.npy", report=out, latency=False, progress=False)
    text = out.read_text(encoding="utf-8")
    assert "No calibration statistics were given" in text and _png_count(text) >= 2


def test_report_without_matplotlib_writes_tables(monkeypatch, tmp_path) -> None:
    monkeypatch.setattr(report_mod, "pyplot_figure", lambda: None)
    errors = [LayerError("a", 1.0, 0.0, 0.0), LayerError("b/conv<x>", 0.99, 0.05, 0.3), LayerError("c", 0.999, 0.01, 0.1)]
    path = write_report(tmp_path / "sub" / "t.html", layer_errors=errors, title="T & co")
    text = path.read_text(encoding="utf-8")
    assert "matplotlib is not installed" in text and PNG not in text
    assert "b/conv&lt;x&gt;" in text and "T &amp; co" in text  # escaped
    assert text.index("b/conv&lt;x&gt;") < text.index(">c<")  # worst first
    assert not list((tmp_path / "sub").glob("*.tmp"))


def test_write_report_from_parts(quantized, tmp_path) -> None:
    _, q, stats_path = quantized
    # no layer errors: histograms of the quantized activations in graph order
    text = write_report(tmp_path / "h.html", quant_json=q.quant_json, stats=stats_path).read_text(encoding="utf-8")
    assert "graph order" in text and _png_count(text) >= 1 and "activation tensors quantized" in text
    assert find_quant_json(q.int8_model) == q.quant_json
    assert find_quant_json(tmp_path / "model.onnx") is None


def test_cli_eval_per_layer_and_report(quantized, tmp_path, capsys) -> None:
    root, q, stats_path = quantized
    out = tmp_path / "cli.html"
    args = ["eval", str(q.fp32_optimized_model), str(q.int8_model), "--data", str(root / "data.npy"), "--no-latency",
            "--no-progress", "--per-layer", "--report", str(out), "--quant-json", str(q.quant_json), "--stats", str(stats_path)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "worst" in printed and "rel. error" in printed and f"wrote {out}" in printed
    assert out.is_file() and PNG in out.read_text(encoding="utf-8")

    assert main(args[:-6] + ["--per-layer", "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["layers"] and {"name", "cosine", "relative_error", "max_abs_error"} <= set(payload["layers"][0])

    assert main(args[:-7] + ["--json"]) == 0
    assert "layers" not in json.loads(capsys.readouterr().out)


def test_report_never_calibrates_and_shows_the_summary_table(quantized, tmp_path, monkeypatch) -> None:
    """Without --stats the histograms come from the per-layer pass's stored FP32 values, and the
    summary is EvalResult.to_table's rows (one renderer)."""
    import int8kit.calib.collect as collect_mod
    import int8kit.pipeline as pipeline
    from int8kit.evaluate.result import summary_rows

    def no_calibration(*args, **kwargs):
        raise AssertionError("the report calibrated")

    monkeypatch.setattr(collect_mod, "collect", no_calibration)
    monkeypatch.setattr(pipeline, "collect", no_calibration, raising=False)
    root, q, _ = quantized
    out = tmp_path / "r.html"
    res = api.evaluate(q.fp32_optimized_model, q.int8_model, root / "data.npy", report=out, latency=False, progress=False)
    text = out.read_text(encoding="utf-8")
    assert "No calibration statistics were given" in text and _png_count(text) >= 2
    _, rows = summary_rows(res)
    assert len(rows) >= 5 and "min cosine (logits)" in res.to_table() and "SQNR dB (logits)" in res.to_table()
    for row in rows:
        cells = ['<td class="name">' + row[0] + "</td>"] + [f"<td>{v}</td>" for v in row[1:]]
        assert "".join(cells) in text, row
