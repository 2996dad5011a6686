"""A self-contained HTML report of one quantization: FP32 vs INT8 summary, where the error comes
from layer by layer, and what calibration saw on the worst tensors.

One file, no external assets and no network: plots are PNGs (matplotlib, Agg) embedded as base64.
Matplotlib is optional (``pip install int8kit[report]``); without it the report keeps its tables
and says why the plots are missing.

    from int8kit.analysis.report import write_report
    write_report("report.html", eval_result=res, layer_errors=res.layers,
                 quant_json="out/model_quant.json", stats="model_stats.npz")
"""

from __future__ import annotations

import html
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from int8kit.analysis.explain import clip_reason, methods_headline
from int8kit.analysis.report_plots import WORST_LABELS, histogram_plot, layers_plot, pyplot_figure, quant_label
from int8kit.calib.histogram import Histogram
from int8kit.evaluate.op_profile import op_rows
from int8kit.evaluate.result import SUMMARY_HEADERS, EvalResult, num, summary_rows
from int8kit.graph.io import write_text_atomic

log = logging.getLogger(__name__)

WORST_TABLE = 20  # rows of the worst-layers table
MAX_HISTOGRAMS = 24  # calibration histograms drawn (worst tensors first)

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1200px;color:#222;padding:0 16px}
h1{font-size:1.5em;margin-bottom:4px}h2{font-size:1.2em;margin-top:32px;border-bottom:1px solid #ddd;padding-bottom:4px}
.sub{color:#666;margin-top:0}.note{background:#fff8e1;border-left:4px solid #f0b400;padding:6px 10px;margin:8px 0}
table{border-collapse:collapse;font-size:0.9em;margin:8px 0}th,td{border:1px solid #ddd;padding:3px 8px;text-align:right}
th{background:#f4f4f4}td.name,th.name{text-align:left;font-family:ui-monospace,Menlo,Consolas,monospace;word-break:break-all;max-width:520px}
tr:nth-child(even) td{background:#fafafa}img{max-width:100%}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(360px,1fr));gap:8px}
.grid figure{margin:0;border:1px solid #eee;padding:4px}.grid figcaption{font-size:0.8em;color:#555;word-break:break-all}
"""


# ---------------------------------------------------------------- inputs


def _load_quant_json(quant_json: Any) -> dict | None:
    if quant_json is None or isinstance(quant_json, dict):
        return quant_json
    from int8kit.emit.records import read_quant_json

    return read_quant_json(quant_json)


def _histograms_of(stats: Any) -> dict[str, Histogram] | None:
    """Each tensor's histogram from a ``Stats``, a statistics file, or a name -> ``Histogram`` mapping."""
    if stats is None:
        return None
    if isinstance(stats, (str, os.PathLike)):
        from int8kit.calib.stats import Stats

        stats = Stats.load(stats)
    if isinstance(stats, Mapping):
        return dict(stats)
    return {name: t.hist for name, t in stats.tensors.items()}


def find_quant_json(int8_model: Any) -> Path | None:
    """``<dir>/<stem>_quant.json`` beside a ``<dir>/<stem>_int8.onnx`` written by quantize, if present."""
    if not isinstance(int8_model, (str, os.PathLike)):
        return None
    path = Path(int8_model)
    if not path.name.endswith("_int8.onnx"):
        return None
    candidate = path.with_name(path.name[: -len("_int8.onnx")] + "_quant.json")
    return candidate if candidate.is_file() else None


def graph_facts(model: Any) -> Any:
    """``GraphFacts`` of a model (path or proto), or ``None``: the words beside the numbers need it."""
    if model is None:
        return None
    from int8kit.graph.io import as_model
    from int8kit.plan.graph_facts import GraphFacts

    return GraphFacts.of(as_model(model))


# ---------------------------------------------------------------- html helpers


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _table(headers: list[str], rows: list[list[Any]], name_cols: tuple[int, ...] = (0,)) -> str:
    head = "".join(f'<th class="name">{_e(h)}</th>' if i in name_cols else f"<th>{_e(h)}</th>" for i, h in enumerate(headers))
    body = []
    for row in rows:
        cells = "".join(f'<td class="name">{_e(v)}</td>' if i in name_cols else f"<td>{_e(v)}</td>" for i, v in enumerate(row))
        body.append(f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _img(b64: str, alt: str) -> str:
    return f'<img alt="{_e(alt)}" src="data:image/png;base64,{b64}">'


# ---------------------------------------------------------------- sections


def _summary(result: EvalResult) -> str:
    """The FP32-vs-INT8 table: the rows of ``EvalResult.to_table``, as HTML."""
    title, rows = summary_rows(result)
    return f"<h2>FP32 vs INT8</h2><p>{_e(title)}.</p>" + _table(SUMMARY_HEADERS, rows)


def _layers(errors: list[Any], qdoc: dict | None, Figure: Any, facts: Any = None) -> str:
    tensors = (qdoc or {}).get("tensors", {})
    activations = {n: r for n, r in tensors.items() if r.get("kind") == "activation"}
    index = {e.name: i for i, e in enumerate(errors)}
    worst = sorted(errors, key=lambda e: -e.relative_error)[:WORST_TABLE]
    parts = ["<h2>Per-layer error</h2>"]
    parts.append(
        "<p>Every float tensor present in both models, compared on the same samples. "
        "Errors accumulate along the graph; look for jumps: the tensor where the error first rises is usually "
        "the one to keep in float (<code>--fp-layers</code>) or to calibrate differently (<code>--overrides</code>).</p>"
    )
    if Figure is not None and errors:
        named = min(WORST_LABELS, sum(1 for e in errors if e.relative_error > 0))
        parts.append(f"<p>Relative error of {len(errors)} tensors in graph order (log scale); the worst {named} are named.</p>")
        parts.append(_img(layers_plot(Figure, errors, activations), "per-layer relative error"))
    rows = []
    for e in worst:
        rec = activations.get(e.name)
        scale = ""
        if rec is not None and rec.get("scale"):
            scale = num(rec["scale"][0], ".4g")
        label = quant_label(rec) if qdoc else ""
        why = clip_reason(facts, e.name, rec) if rec is not None else None
        if why:  # a range cut by a rule is no error: say which rule, beside the number
            label += f" ({why})"
        rows.append([e.name, index[e.name], num(e.cosine, ".5f"), num(e.min_cosine, ".5f"), num(e.relative_error, ".4g"),
                     num(e.sqnr_db, ".1f"), num(e.max_abs_error, ".4g"), label, scale])
    headers = ["tensor", "graph #", "cosine", "min cosine", "rel. error", "SQNR dB", "max abs error", "quantization", "scale"]
    parts.append(f"<h3>Worst {len(worst)} tensors</h3>")
    parts.append(_table(headers, rows, (0, 7)))
    return "".join(parts)


def _histograms(errors: list[Any] | None, qdoc: dict | None, hists: dict[str, Histogram], Figure: Any, note: str | None,
                facts: Any = None) -> str:
    tensors = (qdoc or {}).get("tensors", {})
    activations = {n: r for n, r in tensors.items() if r.get("kind") == "activation"}
    by_name = {e.name: e for e in errors or []}
    available = [n for n in hists if hists[n].count > 0]
    if errors:
        ranked = sorted((e for e in errors if e.name in hists), key=lambda e: -e.relative_error)
        # quantized tensors first: their clipping range is what the report is about
        names = [e.name for e in ranked if not activations or e.name in activations]
        names += [e.name for e in ranked if e.name not in names]
    else:
        names = [n for n in activations if n in hists] or available
    names = [n for n in names if n in available][:MAX_HISTOGRAMS]
    if not names:
        return ""
    parts = [f"<h2>Calibration histograms ({len(names)} tensors)</h2>"]
    what = "largest error first" if errors else "graph order"
    parts.append(
        f"<p>Distribution of each tensor ({what}; log count). Dashed: observed min/max; red: the clipping range "
        "chosen by the threshold method. Values outside the red lines saturate; a range much wider than the bulk "
        "of the data wastes resolution.</p>"
    )
    if note:
        parts.append(f'<p class="note">{_e(note)}</p>')
    parts.append('<div class="grid">')
    for name in names:
        rec = activations.get(name)
        why = clip_reason(facts, name, rec) if rec is not None else None
        b64, caption = histogram_plot(Figure, name, hists[name], rec, by_name.get(name), why)
        parts.append(f"<figure>{_img(b64, name)}<figcaption>{_e(name)}{' — ' + _e(caption) if caption else ''}</figcaption></figure>")
    parts.append("</div>")
    return "".join(parts)


def _float_nodes(qdoc: dict, facts: Any = None) -> str:
    nodes = qdoc.get("float_nodes") or {}
    # the methods that actually ran, per tensor: rules and overrides replace the global one
    sentence, rows = methods_headline(qdoc, facts)
    head = (f"<h2>Quantization</h2><p>{_e(sentence)}; {len(nodes)} nodes kept in float.</p>"
            + _table(["method", "why", "tensors"], rows, (0, 1)))
    if not nodes:
        return head
    rows = [[n, r] for n, r in nodes.items()]
    return head + f"<details><summary>float nodes and why</summary>{_table(['node', 'reason'], rows, (0, 1))}</details>"


# ---------------------------------------------------------------- entry points


def _op_profile(result: EvalResult) -> str:
    """Where the runtime spent each model's time, per op type (``evaluate(profile=True)``)."""
    headers, rows = op_rows(result.op_profile)
    return (f"<h2>Where {_e(result.runtime)} spends the time</h2><p>Its own profiler, batch 1, one thread; per op "
            "type of the graph it really runs, the nodes and the median microseconds per inference.</p>"
            + _table(headers, rows))


def write_report(
    path: str | os.PathLike,
    *,
    eval_result: Any = None,
    layer_errors: list[Any] | None = None,
    quant_json: str | os.PathLike | dict | None = None,
    stats: Any = None,
    title: str = "int8kit report",
    stats_note: str | None = None,
    model: Any = None,
) -> Path:
    """Write one self-contained HTML report (atomically) and return its path.

    ``eval_result``: an ``EvalResult`` (summary table; its ``layers`` are used when ``layer_errors``
    is not given). ``layer_errors``: ``layerwise.layer_errors`` output (plot + worst-20 table).
    ``quant_json``: path or ``read_quant_json`` dict (methods, clipping ranges). ``stats``: a
    ``Stats``, a statistics file or a tensor name -> ``Histogram`` mapping (histograms). Any of them
    may be missing; its section is skipped. ``model``: the FP32 model (names the rule behind each
    tensor's method and the ranges cut on purpose). Nothing here runs a model.
    """
    Figure = pyplot_figure()
    qdoc = _load_quant_json(quant_json)
    facts = graph_facts(model)
    hists = _histograms_of(stats)
    if layer_errors is None and eval_result is not None:
        layer_errors = getattr(eval_result, "layers", None)
    from int8kit import __version__

    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{_e(title)}</h1>",
    ]
    model = (qdoc or {}).get("model")
    parts.append(f"<p class='sub'>int8kit {_e(__version__)}{' — model ' + _e(model) if model else ''}</p>")
    if qdoc is not None:  # the methods that actually ran, up front: rules replace the global one on most tensors
        parts.append(f"<p><b>{_e(methods_headline(qdoc, facts)[0])}.</b></p>")
    if Figure is None:
        parts.append("<p class='note'>matplotlib is not installed, so this report has tables only; "
                     "<code>pip install int8kit[report]</code> adds the plots.</p>")
    if eval_result is not None:
        result = eval_result if isinstance(eval_result, EvalResult) else EvalResult.from_dict(dict(eval_result))
        parts.append(_summary(result))
        if result.op_profile:
            parts.append(_op_profile(result))
    if layer_errors:
        parts.append(_layers(list(layer_errors), qdoc, Figure, facts))
    if hists is not None and Figure is not None:
        parts.append(_histograms(layer_errors, qdoc, hists, Figure, stats_note, facts))
    if qdoc is not None:
        parts.append(_float_nodes(qdoc, facts))
    parts.append("</body></html>\n")
    return write_text_atomic(path, "\n".join(parts))


def report_for_models(
    path: str | os.PathLike,
    fp32_model: Any,
    *,
    eval_result: Any = None,
    layer_errors: list[Any] | None = None,
    int8_model: Any = None,
    quant_json: Any = None,
    stats: Any = None,
    evaluator: Any = None,
    max_samples: int = 32,
) -> Path:
    """``write_report`` for ``evaluate``: finds ``<stem>_quant.json`` beside ``<stem>_int8.onnx``
    and, without saved statistics, histograms the worst tensors from the FP32 values the
    evaluator's per-layer pass already stored (its first ``max_samples`` samples; said so in the
    report). It never calibrates."""
    if quant_json is None:
        quant_json = find_quant_json(int8_model)
    note = None
    if isinstance(stats, (str, os.PathLike)):  # saved statistics must come from this model
        from int8kit.calib.stats import Stats, model_fingerprint
        from int8kit.graph.io import as_model
        from int8kit.graph.optimize import optimize_model

        stats = Stats.load(stats, model_id=model_fingerprint(optimize_model(as_model(fp32_model))[0]))
    if stats is None and layer_errors and evaluator is not None and pyplot_figure() is not None:
        from int8kit.analysis.layerwise import layer_histograms

        ranked = sorted(layer_errors, key=lambda e: -e.relative_error)
        stats = layer_histograms(evaluator, [e.name for e in ranked[:MAX_HISTOGRAMS]], max_samples=max_samples)
        shown = evaluator.layer_reference(max_samples, list(stats)).meta["samples"] if stats else 0
        note = (f"No calibration statistics were given (--stats), so these histograms show the {shown} evaluation samples "
                "of the per-layer comparison; min/max lines come from the quant record when there is one.")
    return write_report(path, eval_result=eval_result, layer_errors=layer_errors, quant_json=quant_json,
                        stats=stats, stats_note=note, model=fp32_model)
