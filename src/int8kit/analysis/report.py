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

import base64
import html
import io
import logging
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from int8kit.errors import Int8kitError
from int8kit.graph.io import write_text_atomic

log = logging.getLogger(__name__)

WORST_TABLE = 20  # rows of the worst-layers table
WORST_LABELS = 10  # tensors named on the per-layer plot
MAX_HISTOGRAMS = 24  # calibration histograms drawn (worst tensors first)
PLOT_BINS = 160  # about this many bars across the visible range of a histogram

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


def _pyplot_figure() -> Any:
    """A ``matplotlib.figure.Figure`` factory drawing with Agg (no pyplot state), or ``None`` without matplotlib."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except Exception:  # missing or broken install: tables only
        return None

    def agg_figure(**kwargs: Any) -> Any:
        fig = Figure(**kwargs)
        FigureCanvasAgg(fig)  # Agg explicitly, without touching pyplot's global backend
        return fig

    return agg_figure


def _load_quant_json(quant_json: Any) -> dict | None:
    if quant_json is None or isinstance(quant_json, dict):
        return quant_json
    from int8kit.emit.records import read_quant_json

    return read_quant_json(quant_json)


def _load_stats(stats: Any) -> Any:
    if stats is None or not isinstance(stats, (str, os.PathLike)):
        return stats
    from int8kit.calib.stats import Stats

    return Stats.load(stats)


def find_quant_json(int8_model: Any) -> Path | None:
    """``<dir>/<stem>_quant.json`` beside a ``<dir>/<stem>_int8.onnx`` written by quantize, if present."""
    if not isinstance(int8_model, (str, os.PathLike)):
        return None
    path = Path(int8_model)
    if not path.name.endswith("_int8.onnx"):
        return None
    candidate = path.with_name(path.name[: -len("_int8.onnx")] + "_quant.json")
    return candidate if candidate.is_file() else None


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


def _png(fig: Any, dpi: int = 100) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _img(b64: str, alt: str) -> str:
    return f'<img alt="{_e(alt)}" src="data:image/png;base64,{b64}">'


def _short(name: str, n: int = 36) -> str:
    return name if len(name) <= n else "…" + name[-(n - 1):]


def _pct(x: float | None) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{x * 100:.2f}%"


def _g(x: Any, fmt: str = ".4g") -> str:
    return "n/a" if x is None or (isinstance(x, float) and not math.isfinite(x)) else format(x, fmt)


# ---------------------------------------------------------------- sections


def _summary(d: dict[str, Any]) -> str:
    """FP32 vs INT8 metrics from ``EvalResult.to_dict()`` (same rows as ``EvalResult.to_table``)."""
    rows: list[list[Any]] = []
    for label, key in (("top-1 accuracy", "top1"), ("top-5 accuracy", "top5")):
        a, b = d.get(f"fp32_{key}"), d.get(f"int8_{key}")
        if a is not None and b is not None:
            rows.append([label, _pct(a), _pct(b), f"{(b - a) * 100:+.2f} pts"])
    if d.get("top1_agreement") is not None:
        rows.append([f"top-1 agreement ({d.get('output')})", "", _pct(d["top1_agreement"]), ""])
    for sim in d.get("outputs") or []:
        rows.append([f"mean cosine ({sim['name']})", "", _g(sim["mean_cosine"], ".6f"), ""])
        rows.append([f"max abs error ({sim['name']})", "", _g(sim["max_abs_error"], ".6g"), ""])
    fl, il = d.get("fp32_latency_ms"), d.get("int8_latency_ms")
    if fl is not None and il is not None:
        ratio = f"x{d['latency_ratio']:.2f}" if d.get("latency_ratio") is not None else ""
        rows.append(["latency, batch 1 (ms)", f"{fl:.3f}", f"{il:.3f}", ratio])
    fs, is_ = d.get("fp32_size_bytes"), d.get("int8_size_bytes")
    if fs is not None and is_ is not None:
        rows.append(["model size (KiB)", f"{fs / 1024:.1f}", f"{is_ / 1024:.1f}", f"x{is_ / fs:.2f}" if fs else ""])
    caption = f"<p>{_e(d.get('samples'))} samples, compared on output '{_e(d.get('output'))}'.</p>"
    return "<h2>FP32 vs INT8</h2>" + caption + _table(["metric", "FP32", "INT8", "change"], rows)


def _quant_label(rec: dict | None) -> str:
    if rec is None:
        return "float"
    return f"{rec.get('method')} {rec.get('dtype')}"


def _layers_plot(Figure: Any, errors: list[Any], activations: dict[str, dict]) -> str:
    rel = np.array([e.relative_error for e in errors], dtype=np.float64)
    positive = rel[rel > 0]
    floor = float(positive.min()) / 10 if positive.size else 1e-8
    y = np.maximum(rel, floor)
    x = np.arange(len(errors))
    fig = Figure(figsize=(11, 4.2))
    ax = fig.subplots()
    ax.plot(x, y, color="#bbbbbb", linewidth=0.8, zorder=1)
    if activations:
        quant = np.array([e.name in activations for e in errors])
        ax.scatter(x[quant], y[quant], s=14, color="#1f77b4", label="INT8 (quantized tensor)", zorder=2)
        ax.scatter(x[~quant], y[~quant], s=14, color="#ff7f0e", label="float tensor", zorder=2)
    else:
        ax.scatter(x, y, s=14, color="#1f77b4", zorder=2)
    zero = rel <= 0
    if zero.any():
        ax.scatter(x[zero], y[zero], s=14, facecolors="white", edgecolors="#999999", label="exact (0)", zorder=3)
    ax.set_yscale("log")
    ax.set_xlabel("tensor, in graph order")
    ax.set_ylabel("relative error  ||int8 - fp32|| / ||fp32||")
    ax.grid(True, which="major", axis="y", alpha=0.3)
    ax.set_xlim(-1, max(len(errors), 2))
    worst = np.argsort(-rel, kind="stable")[: min(WORST_LABELS, int((rel > 0).sum()))]
    ax.scatter(x[worst], y[worst], s=40, facecolors="none", edgecolors="#b00020", linewidths=1.0, zorder=4)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="lower right")
    # Names stand vertically in a band above the axes, spread apart so neighbours never overlap,
    # each tied to its point by a thin line.
    order = sorted(int(i) for i in worst)
    px_per_unit = ax.get_window_extent().width / (ax.get_xlim()[1] - ax.get_xlim()[0])
    gap = 11.0 / max(px_per_unit, 1e-9)  # one line of 7-pt text, in x units
    spots: list[float] = []
    for i in order:
        spots.append(max(float(x[i]), spots[-1] + gap) if spots else float(x[i]))
    overshoot = spots[-1] - ax.get_xlim()[1] + gap / 2 if spots else 0.0
    if overshoot > 0:  # pushed past the right edge: shift the whole row back
        spots = [max(s - overshoot, ax.get_xlim()[0] + k * gap) for k, s in enumerate(spots)]
    band = ax.get_xaxis_transform()  # x in data units, y in axes fraction
    for i, sx in zip(order, spots):
        ax.annotate(
            _short(errors[i].name, 34),
            (x[i], y[i]),
            xytext=(sx, 1.02),
            textcoords=band,
            fontsize=7,
            rotation=90,
            ha="center",
            va="bottom",
            color="#b00020",
            annotation_clip=False,
            arrowprops={"arrowstyle": "-", "color": "#b00020", "lw": 0.4, "alpha": 0.5, "shrinkA": 0, "shrinkB": 3},
        )
    ax.set_ylim(top=float(y.max()) * 3)
    return _png(fig)


def _layers(errors: list[Any], qdoc: dict | None, Figure: Any) -> str:
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
        parts.append(_img(_layers_plot(Figure, errors, activations), "per-layer relative error"))
    rows = []
    for e in worst:
        rec = activations.get(e.name)
        scale = ""
        if rec is not None and rec.get("scale"):
            scale = _g(rec["scale"][0], ".4g")
        rows.append([e.name, index[e.name], f"{e.cosine:.5f}", f"{e.relative_error:.4g}", f"{e.max_abs_error:.4g}",
                     _quant_label(rec) if qdoc else "", scale])
    headers = ["tensor", "graph #", "cosine", "rel. error", "max abs error", "quantization", "scale"]
    parts.append(f"<h3>Worst {len(worst)} tensors</h3>")
    parts.append(_table(headers, rows))
    return "".join(parts)


def _rebinned(hist: Any, lo: float, hi: float) -> tuple[np.ndarray, np.ndarray]:
    """Counts and edges of ``hist`` cropped to ``[lo, hi]`` and merged to about ``PLOT_BINS`` bars."""
    counts = np.asarray(hist.counts, dtype=np.float64)
    w = hist.width
    first = max(int(math.floor((lo + hist.edge) / w)), 0)
    last = min(int(math.ceil((hi + hist.edge) / w)), counts.size)
    if last <= first:
        first, last = 0, counts.size
    factor = max(1, (last - first) // PLOT_BINS)
    last = first + ((last - first + factor - 1) // factor) * factor
    pad = max(0, last - counts.size)
    sub = np.concatenate([counts[first:], np.zeros(pad)])[: last - first]
    merged = sub.reshape(-1, factor).sum(axis=1)
    edges = -hist.edge + (first + np.arange(merged.size + 1) * factor) * w
    return merged, edges


def _histogram_plot(Figure: Any, name: str, hist: Any, rec: dict | None, error: Any | None) -> tuple[str, str]:
    mn, mx = (rec.get("min"), rec.get("max")) if rec else (None, None)
    mn = hist.min if mn is None else mn
    mx = hist.max if mx is None else mx
    lo, hi = (rec.get("lo"), rec.get("hi")) if rec else (None, None)
    span_lo = min(v for v in (mn, lo, hist.min) if v is not None)
    span_hi = max(v for v in (mx, hi, hist.max) if v is not None)
    margin = 0.05 * max(span_hi - span_lo, hist.width)
    counts, edges = _rebinned(hist, span_lo - margin, span_hi + margin)
    fig = Figure(figsize=(4.6, 2.7))
    ax = fig.subplots()
    ax.stairs(np.where(counts > 0, counts, np.nan), edges, fill=True, color="#7f9fbf", alpha=0.9)
    ax.set_yscale("log")
    if np.any(counts > 0):
        ax.set_ylim(bottom=0.5, top=float(counts.max()) * 3)
    ax.set_xlim(span_lo - margin, span_hi + margin)
    ax.axvline(mn, color="#555555", linestyle="--", linewidth=1, label=f"min/max {mn:.3g} / {mx:.3g}")
    ax.axvline(mx, color="#555555", linestyle="--", linewidth=1)
    caption = ""
    if lo is not None and hi is not None:
        ax.axvline(lo, color="#d62728", linewidth=1.4, label=f"clip lo/hi {lo:.3g} / {hi:.3g}")
        ax.axvline(hi, color="#d62728", linewidth=1.4)
        centers = hist.centers()
        total = max(hist.count, 1)
        clipped = float(hist.counts[(centers < lo) | (centers > hi)].sum()) / total
        caption = f"clipped {clipped * 100:.3g}% of values"
    ax.legend(fontsize=6.5, loc="upper right", framealpha=0.8)
    ax.tick_params(labelsize=7)
    ax.set_ylabel("count", fontsize=7)
    method = _quant_label(rec) if rec else "no quant record"
    ax.set_title(f"{_short(name, 44)}\n{method}", fontsize=8)
    bits = [caption] if caption else []
    if error is not None:
        bits.append(f"rel. error {error.relative_error:.3g}, cosine {error.cosine:.5f}")
    return _png(fig, dpi=90), "; ".join(bits)


def _histograms(errors: list[Any] | None, qdoc: dict | None, stats: Any, Figure: Any, note: str | None) -> str:
    tensors = (qdoc or {}).get("tensors", {})
    activations = {n: r for n, r in tensors.items() if r.get("kind") == "activation"}
    by_name = {e.name: e for e in errors or []}
    available = [n for n in stats.tensors if stats.tensors[n].hist.count > 0]
    if errors:
        ranked = sorted((e for e in errors if e.name in stats.tensors), key=lambda e: -e.relative_error)
        # quantized tensors first: their clipping range is what the report is about
        names = [e.name for e in ranked if not activations or e.name in activations]
        names += [e.name for e in ranked if e.name not in names]
    else:
        names = [n for n in activations if n in stats.tensors] or available
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
        b64, caption = _histogram_plot(Figure, name, stats.tensors[name].hist, activations.get(name), by_name.get(name))
        parts.append(f"<figure>{_img(b64, name)}<figcaption>{_e(name)}{' — ' + _e(caption) if caption else ''}</figcaption></figure>")
    parts.append("</div>")
    return "".join(parts)


def _float_nodes(qdoc: dict) -> str:
    nodes = qdoc.get("float_nodes") or {}
    acts = sum(1 for r in qdoc.get("tensors", {}).values() if r.get("kind") == "activation")
    cfg = qdoc.get("config") or {}
    head = (
        f"<h2>Quantization</h2><p>{acts} activation tensors quantized"
        + (f" with <code>{_e(cfg.get('th_method'))}</code>" if cfg.get("th_method") else "")
        + f"; {len(nodes)} nodes kept in float.</p>"
    )
    if not nodes:
        return head
    rows = [[n, r] for n, r in nodes.items()]
    return head + f"<details><summary>float nodes and why</summary>{_table(['node', 'reason'], rows, (0, 1))}</details>"


# ---------------------------------------------------------------- entry points


def write_report(
    path: str | os.PathLike,
    *,
    eval_result: Any = None,
    layer_errors: list[Any] | None = None,
    quant_json: str | os.PathLike | dict | None = None,
    stats: Any = None,
    title: str = "int8kit report",
    stats_note: str | None = None,
) -> Path:
    """Write one self-contained HTML report (atomically) and return its path.

    ``eval_result``: an ``EvalResult`` (summary table; its ``layers`` are used when ``layer_errors``
    is not given). ``layer_errors``: ``layerwise.layer_errors`` output (plot + worst-20 table).
    ``quant_json``: path or ``read_quant_json`` dict (methods, clipping ranges). ``stats``: a
    ``Stats`` or statistics file (histograms). Any of them may be missing; its section is skipped.
    """
    Figure = _pyplot_figure()
    qdoc = _load_quant_json(quant_json)
    stats = _load_stats(stats)
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
    if Figure is None:
        parts.append("<p class='note'>matplotlib is not installed, so this report has tables only; "
                     "<code>pip install int8kit[report]</code> adds the plots.</p>")
    if eval_result is not None:
        d = eval_result.to_dict() if hasattr(eval_result, "to_dict") else dict(eval_result)
        parts.append(_summary(d))
    if layer_errors:
        parts.append(_layers(list(layer_errors), qdoc, Figure))
    if stats is not None and Figure is not None:
        parts.append(_histograms(layer_errors, qdoc, stats, Figure, stats_note))
    if qdoc is not None:
        parts.append(_float_nodes(qdoc))
    parts.append("</body></html>\n")
    return write_text_atomic(path, "\n".join(parts))


def report_for_models(
    path: str | os.PathLike,
    fp32_model: Any,
    data: Any,
    *,
    eval_result: Any = None,
    layer_errors: list[Any] | None = None,
    int8_model: Any = None,
    quant_json: Any = None,
    stats: Any = None,
    batch_size: int | None = None,
    max_samples: int = 32,
) -> Path:
    """``write_report`` for ``evaluate``: finds ``<stem>_quant.json`` beside ``<stem>_int8.onnx``
    and, without saved statistics, histograms the worst tensors over up to ``max_samples`` samples of
    the evaluation data (said so in the report)."""
    if quant_json is None:
        quant_json = find_quant_json(int8_model)
    note = None
    if isinstance(stats, (str, os.PathLike)):  # saved statistics must come from this model
        from int8kit.calib.stats import Stats, model_fingerprint
        from int8kit.graph.io import as_model
        from int8kit.graph.optimize import optimize_model

        stats = Stats.load(stats, model_id=model_fingerprint(optimize_model(as_model(fp32_model))[0]))
    if stats is None and layer_errors and _pyplot_figure() is not None:
        ranked = sorted(layer_errors, key=lambda e: -e.relative_error)
        names = [e.name for e in ranked[:MAX_HISTOGRAMS]]
        try:
            from int8kit.calib.collect import collect
            from int8kit.graph.io import as_model

            stats = collect(as_model(fp32_model), data, tensors=names, iterations=max_samples, at_most=True,
                            batch_size=batch_size, per_channel_axis=None, progress=False)
            note = (f"No calibration statistics were given (--stats), so these histograms show {stats.samples} "
                    "evaluation samples; min/max lines come from the quant record when there is one.")
        except Int8kitError as exc:
            log.warning("report: no histograms (%s)", exc)
            stats = None
    return write_report(path, eval_result=eval_result, layer_errors=layer_errors, quant_json=quant_json,
                        stats=stats, stats_note=note)
