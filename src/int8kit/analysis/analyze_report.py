"""The HTML report of ``int8kit analyze``: one self-contained file (plots as base64 PNGs, no
scripts, no external URLs) saying where the error comes from.

Sections: headline (the methods that actually ran, the most sensitive layer), FP32 vs INT8, model
summary (op counts, MACs in INT8 and float, float nodes and why), accumulated and isolated error
per layer in graph order, the worst layers with their input methods and why, histograms of
their inputs with the chosen range, options and data used.
"""

from __future__ import annotations

import datetime
import json
import os
from pathlib import Path
from typing import Any

from int8kit.analysis.analyze import AnalyzeResult, _db, _macs
from int8kit.analysis.explain import activation_records, clip_reason, quant_config
from int8kit.analysis.report import _CSS, _e, _histograms, _img, _summary, _table
from int8kit.analysis.report_plots import pyplot_figure, sensitivity_plot
from int8kit.graph.io import write_text_atomic

WORST = 20  # rows of the worst-layers table
HISTOGRAMS = 12  # inputs of the worst layers drawn


def write_analyze_report(path: str | os.PathLike, result: AnalyzeResult, *, hists: dict | None = None,
                         hist_note: str | None = None) -> Path:
    """Write the report of ``result`` to ``path`` atomically; ``hists``: tensor name ->
    ``Histogram`` of the worst layers' inputs (calibration statistics or the evaluation samples)."""
    from int8kit import __version__

    Figure = pyplot_figure()
    parts = ["<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
             f"<title>int8kit analyze</title><style>{_CSS}</style></head><body>", "<h1>Where the INT8 error comes from</h1>",
             f"<p class='sub'>int8kit {_e(__version__)} — {_e(result.options.get('int8_model', ''))} — "
             f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC</p>"]
    if Figure is None:
        parts.append("<p class='note'>matplotlib is not installed, so this report has tables only; "
                     "<code>pip install int8kit[report]</code> adds the plots.</p>")
    parts.append(_headline(result))
    parts.append(_summary(result.evaluation))
    parts.append(_model_summary(result))
    parts.append(_per_layer(result, Figure))
    parts.append(_worst(result))
    if hists and Figure is not None:
        worst = [e for e in _input_errors(result) if e.name in hists]
        parts.append(_histograms(worst, result.quant_record, hists, Figure, hist_note, result.facts))
    parts.append(_options(result))
    parts.append("</body></html>\n")
    return write_text_atomic(path, "\n".join(parts))


def worst_inputs(result: AnalyzeResult, count: int = HISTOGRAMS) -> list[str]:
    """The quantized input tensors of the most sensitive layers, worst first (for histograms)."""
    return [e.name for e in _input_errors(result)][:count]


class _InputError:
    """A layer input shown in the histogram grid, with its layer's isolated input-only error."""

    def __init__(self, name: str, error: Any) -> None:
        self.name, self.relative_error, self.cosine = name, error.relative_error, error.cosine


def _input_errors(result: AnalyzeResult) -> list[_InputError]:
    by = {s.layer: s for s in result.layers}
    seen: dict[str, _InputError] = {}
    for name in result.ranking("isolated_activation"):
        for t in by[name].methods:
            seen.setdefault(t, _InputError(t, by[name].isolated_activation))
    return list(seen.values())


def _headline(result: AnalyzeResult) -> str:
    ranking = result.ranking()
    text = [f"<p><b>{_e(result.headline)}.</b></p>"]
    if ranking:
        top = next(s for s in result.layers if s.layer == ranking[0])
        w, a = top.isolated_weight, top.isolated_activation
        share = ""
        if w is not None:
            share = f" (weights alone {_db(w)} dB, inputs alone {_db(a)} dB)"
        methods, clip = result.layer_notes(top)
        kind = top.op_type if top.int8 else f"{top.op_type}, a float op: the error is its quantized input's"
        text.append(f"<p>Most sensitive layer on its own: <code>{_e(top.layer)}</code> ({_e(kind)}): quantized alone it "
                    f"leaves the model output at SQNR {_db(top.isolated_output)} dB; at its own output {_db(top.isolated)} dB"
                    f"{_e(share)}; its inputs use {_e(methods or 'no quantized input')}"
                    f"{'; ' + _e(clip) if clip else ''}.</p>")
    s = result.summary
    text.append(f"<p>{_macs(s.int8_macs)} of {_macs(s.int8_macs + s.float_macs)} MACs per sample run in INT8 "
                f"({s.int8_mac_share:.1%}); {len(s.float_nodes)} nodes are kept float (compute nodes, and others a rule keeps float).</p>")
    text.append(_table(["method", "why", "tensors"], result.methods, (0, 1)))
    return "<h2>Headline</h2>" + "".join(text)


def _model_summary(result: AnalyzeResult) -> str:
    s = result.summary
    parts = ["<h2>Model summary</h2>", _table(["op type", "INT8 nodes", "float nodes"], [list(r) for r in s.ops])]
    parts.append(f"<p>MACs per sample: {_macs(s.int8_macs)} in INT8, {_macs(s.float_macs)} in float.</p>")
    if s.float_nodes:
        parts.append("<h3>Nodes kept in float, and why</h3>")
        parts.append(_table(["node", "op", "MACs", "why"], [[f.name, f.op_type, _macs(f.macs), f.reason] for f in s.float_nodes],
                            (0, 3)))
    other = {n: r for n, r in (result.quant_record.get("float_nodes") or {}).items() if n not in {f.name for f in s.float_nodes}}
    if other:
        parts.append(f"<details><summary>{len(other)} other nodes kept float by a rule</summary>"
                     f"{_table(['node', 'reason'], [[n, r] for n, r in other.items()], (0, 1))}</details>")
    return "".join(parts)


def _per_layer(result: AnalyzeResult, Figure: Any) -> str:
    parts = ["<h2>Error per INT8 layer, in graph order</h2>",
             "<p><b>Accumulated</b>: the INT8 model's error at the layer's output (every earlier layer INT8 too). "
             "<b>Isolated</b>: only this layer's inputs and weights quantized, on exact FP32 inputs; split into weights only "
             "and inputs only; <b>at output</b>: that isolated error carried through the rest of the FP32 model to its output. "
             f"SQNR over {_e(result.options.get('samples'))} samples; a layer's output quantization is counted at its readers.</p>"]
    if Figure is not None and result.layers:
        parts.append(_img(sensitivity_plot(Figure, result.layers), "accumulated and isolated SQNR per layer"))
    rows = [[s.layer, i, s.op_type, _macs(s.macs), _db(s.accumulated), _db(s.isolated), _db(s.isolated_weight),
             _db(s.isolated_activation), _db(s.isolated_output)] for i, s in enumerate(result.layers)]
    parts.append(f"<details><summary>all {len(rows)} layers</summary>"
                 + _table(["layer", "#", "op", "MACs", "accumulated", "isolated", "weights", "inputs", "at output"], rows)
                 + "</details>")
    return "".join(parts)


def _worst(result: AnalyzeResult) -> str:
    by = {s.layer: s for s in result.layers}
    index = {s.layer: i for i, s in enumerate(result.layers)}
    rows = []
    for name in result.ranking()[:WORST]:
        s = by[name]
        methods, clip = result.layer_notes(s)
        rows.append([name, index[name], s.op_type if s.int8 else f"{s.op_type} (float op)", _macs(s.macs), _db(s.isolated), _db(s.isolated_weight),
                     _db(s.isolated_activation), _db(s.isolated_output), _db(s.accumulated), methods, clip or "-"])
    return (f"<h2>The {len(rows)} most sensitive layers (by isolated SQNR at the model output, dB; lower is worse)</h2>"
            "<p>If accuracy must improve, these are the layers to keep float (<code>--fp-layers</code>) or to give another "
            "method (<code>--overrides</code>). <i>Weights</i> low: per-channel weights or keeping the layer float helps; "
            "<i>inputs</i> low: the input's range is the problem.</p>"
            + _table(["layer", "#", "op", "MACs", "isolated", "weights", "inputs", "at output", "accumulated",
                      "input methods (why)", "range cut on purpose"], rows, (0, 9, 10)))


def _options(result: AnalyzeResult) -> str:
    rows = [[k, json.dumps(v) if not isinstance(v, str) else v] for k, v in result.options.items()]
    config = quant_config(result.quant_record)
    cfg_rows = [[k, json.dumps(v)] for k, v in config.items() if k != "version"]
    acts = activation_records(result.quant_record)
    cut = [[t, clip_reason(result.facts, t, r)] for t, r in acts.items() if clip_reason(result.facts, t, r)]
    extra = ""
    if cut:
        extra = (f"<details><summary>{len(cut)} tensors whose range is cut on purpose</summary>"
                 f"{_table(['tensor', 'why'], cut, (0, 1))}</details>")
    return ("<h2>Options and data used</h2>" + _table(["option", "value"], rows, (0, 1))
            + f"<details><summary>quantization configuration (from the quant record)</summary>"
              f"{_table(['option', 'value'], cfg_rows, (0, 1))}</details>" + extra)
