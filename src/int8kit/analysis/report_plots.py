"""The report's plots: per-layer relative error and calibration histograms, as base64 PNGs.

Drawn with matplotlib's Agg canvas (no pyplot state, no display); ``pyplot_figure`` returns
``None`` without matplotlib and the report keeps its tables.
"""

from __future__ import annotations

import base64
import io
import math
from typing import Any

import numpy as np

WORST_LABELS = 10  # tensors named on the per-layer plot
PLOT_BINS = 160  # about this many bars across the visible range of a histogram


def pyplot_figure() -> Any:
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


def png(fig: Any, dpi: int = 100) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def short(name: str, n: int = 36) -> str:
    return name if len(name) <= n else "…" + name[-(n - 1):]


def quant_label(rec: dict | None) -> str:
    if rec is None:
        return "float"
    return f"{rec.get('method')} {rec.get('dtype')}"


def layers_plot(Figure: Any, errors: list[Any], activations: dict[str, dict]) -> str:
    rel = np.array([e.relative_error for e in errors], dtype=np.float64)
    finite = rel[np.isfinite(rel)]
    # inf (the FP32 tensor is all zero, the INT8 one is not) is drawn above the largest finite error
    rel = np.where(np.isfinite(rel), rel, (float(finite.max()) if finite.size else 1.0) * 10)
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
    name_band(ax, [float(x[i]) for i in worst], [float(y[i]) for i in worst], [errors[i].name for i in worst])
    ax.set_ylim(top=float(y.max()) * 3)
    return png(fig)


def name_band(ax: Any, xs: list[float], ys: list[float], names: list[str]) -> None:
    """Names stand vertically in a band above the axes, spread apart so neighbours never overlap,
    each tied to its point (``xs``, ``ys``, data units) by a thin line."""
    order = sorted(range(len(xs)), key=lambda k: xs[k])
    px_per_unit = ax.get_window_extent().width / (ax.get_xlim()[1] - ax.get_xlim()[0])
    gap = 11.0 / max(px_per_unit, 1e-9)  # one line of 7-pt text, in x units
    spots: list[float] = []
    for k in order:
        spots.append(max(xs[k], spots[-1] + gap) if spots else xs[k])
    overshoot = spots[-1] - ax.get_xlim()[1] + gap / 2 if spots else 0.0
    if overshoot > 0:  # pushed past the right edge: shift the whole row back
        spots = [max(s - overshoot, ax.get_xlim()[0] + j * gap) for j, s in enumerate(spots)]
    band = ax.get_xaxis_transform()  # x in data units, y in axes fraction
    for k, sx in zip(order, spots):
        ax.annotate(short(names[k], 34), (xs[k], ys[k]), xytext=(sx, 1.02), textcoords=band, fontsize=7, rotation=90,
                    ha="center", va="bottom", color="#b00020", annotation_clip=False,
                    arrowprops={"arrowstyle": "-", "color": "#b00020", "lw": 0.4, "alpha": 0.5, "shrinkA": 0, "shrinkB": 3})


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


def histogram_plot(Figure: Any, name: str, hist: Any, rec: dict | None, error: Any | None,
                   why: str | None = None) -> tuple[str, str]:
    """One tensor's histogram with its observed and chosen range; ``why``: the reason a range is
    cut on purpose (``explain.clip_reason``), said in the caption beside the clipped share."""
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
        caption = f"clipped {clipped * 100:.3g}% of values" + (f" ({why})" if why else "")
    ax.legend(fontsize=6.5, loc="upper right", framealpha=0.8)
    ax.tick_params(labelsize=7)
    ax.set_ylabel("count", fontsize=7)
    method = quant_label(rec) if rec else "no quant record"
    ax.set_title(f"{short(name, 44)}\n{method}", fontsize=8)
    bits = [caption] if caption else []
    if error is not None:
        bits.append(f"rel. error {error.relative_error:.3g}, cosine {error.cosine:.5f}")
    return png(fig, dpi=90), "; ".join(bits)


def sensitivity_plot(Figure: Any, sens: list[Any], named: int = 8) -> str:
    """SQNR per INT8 layer in graph order: accumulated (the INT8 model) and isolated (the layer
    alone; weights only and inputs only as small marks; carried to the model output as crosses);
    the ``named`` most sensitive (the ranking's order) are circled and named."""
    def sqnr(errors: list[Any]) -> np.ndarray:
        v = np.array([np.nan if e is None else e.sqnr_db for e in errors], dtype=np.float64)
        finite = v[np.isfinite(v)]
        cap = float(finite.max()) + 3 if finite.size else 60.0
        return np.where(np.isposinf(v), cap, v)  # exact layers drawn just above the best one

    x = np.arange(len(sens))
    iso = sqnr([s.isolated for s in sens])
    fig = Figure(figsize=(11, 4.4))
    ax = fig.subplots()
    acc = sqnr([s.accumulated for s in sens])
    if np.isfinite(acc).any():
        ax.plot(x, acc, color="#d62728", linewidth=1.2, marker=".", markersize=4, label="accumulated (INT8 model)")
    ax.scatter(x, iso, s=22, color="#1f77b4", zorder=3, label="isolated (only this layer)")
    ax.scatter(x, sqnr([s.isolated_weight for s in sens]), s=8, marker="v", color="#2ca02c", alpha=0.7, label="weights only")
    ax.scatter(x, sqnr([s.isolated_activation for s in sens]), s=8, marker="^", color="#9467bd", alpha=0.7, label="inputs only")
    out = sqnr([s.isolated_output for s in sens])
    if np.isfinite(out).any():
        ax.scatter(x, out, s=14, marker="x", color="#ff7f0e", alpha=0.8, label="isolated, at the model output")
    ax.set_xlabel("INT8 layer, in graph order")
    ax.set_ylabel("SQNR dB (lower is worse)")
    ax.grid(True, axis="y", alpha=0.3)
    ranked = np.where(np.isfinite(out), out, iso)  # the ranking's error: at the model output where measured
    worst = [int(i) for i in np.argsort(np.where(np.isfinite(ranked), ranked, np.inf), kind="stable")[: min(named, len(sens))]]
    ax.scatter(x[worst], ranked[worst], s=70, facecolors="none", edgecolors="#b00020", zorder=4)
    ax.set_xlim(-1, max(len(sens), 2))
    name_band(ax, [float(x[i]) for i in worst], [float(ranked[i]) for i in worst], [sens[i].layer for i in worst])
    ax.legend(fontsize=7.5, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=5, frameon=False)
    return png(fig)
