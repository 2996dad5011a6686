"""The search's own files: the log as JSON and as a table, and the HTML report of the chosen model
with every candidate's score against its latency (the report of ``analysis.report`` with the
search section put in front)."""

from __future__ import annotations

import html
import logging
import tempfile
from pathlib import Path
from typing import Any

from int8kit.analysis.ort_fusion import float_as_run
from int8kit.analysis.report import write_report
from int8kit.analysis.report_plots import png, pyplot_figure
from int8kit.auto.search import SearchResult
from int8kit.graph.io import write_text_atomic

log = logging.getLogger(__name__)
HISTOGRAM_LAYERS = 4  # layers whose input histograms the report draws (about a second each on EfficientNet-Lite0)


def summary_lines(result: SearchResult) -> list[str]:
    """The head of the table file and of the CLI's output: budget, choice, held-out check."""
    c = result.chosen
    mode = "full" if result.full else "quick"
    lines = [
        f"metric {result.metric}; budget: {result.budget.text()}; {mode} search, {len(result.log)} trials "
        f"({result.resumed} read from an earlier log), {result.seconds:.1f} s",
        f"chosen: {c.name}: validation {c.score.text()} on {c.score.n} samples ({'meets' if result.meets else 'misses'} "
        f"the budget), held-out {result.held_out.text()} on {result.held_out.n} samples (FP32 {result.fp32_held_out.value:.4f}; "
        f"{'holds' if result.held_out_holds else 'does not hold'} within its uncertainty)",
        f"float layers {len(c.float_layers)}, MACs in INT8 {c.int8_macs * 100:.1f}%, INT8/FP32 latency {c.latency_ratio:.2f} "
        f"({c.int8_ms:.2f} / {c.fp32_ms:.2f} ms, one thread, batch 1, {result.runtime})",
    ]
    return lines + result.messages()


def search_dict(result: SearchResult) -> dict[str, Any]:
    """The JSON form of the whole search (the log's trials plus the outcome)."""
    return result.log.to_dict(
        metric=result.metric, mode="full" if result.full else "quick",
        budget={"fp32": result.budget.fp32, "accept_drop": result.budget.accept_drop, "relative": result.budget.relative,
                "threshold": result.budget.threshold},
        chosen=result.chosen.key, meets=result.meets, interrupted=result.interrupted,
        held_out={"fp32": result.fp32_held_out.to_dict(), "int8": result.held_out.to_dict(), "holds": result.held_out_holds},
        costly_layers=[{"layer": n, "error": e} for n, e in result.costly_layers], seconds=result.seconds,
        latency_runtime=result.runtime,
        messages=result.messages())


def write_search_files(result: SearchResult, json_path: Path, table_path: Path) -> None:
    """The log as JSON and as a text table (with the summary lines above it)."""
    import json

    write_text_atomic(json_path, json.dumps(search_dict(result), indent=2) + "\n")
    write_text_atomic(table_path, "\n".join(summary_lines(result)) + "\n\n" + result.log.table(result.chosen.key) + "\n")


def candidates_plot(result: SearchResult) -> str | None:
    """Score against INT8/FP32 latency of every trial, with intervals and the budget line (base64 PNG)."""
    Figure = pyplot_figure()
    if Figure is None:
        return None
    fig = Figure(figsize=(8, 4.5))
    ax = fig.add_subplot(1, 1, 1)
    for meets, colour, label in ((True, "tab:green", "meets the budget"), (False, "tab:red", "misses")):
        ts = [t for t in result.log.trials.values() if t.meets == meets]
        if ts:
            ax.errorbar([t.latency_ratio for t in ts], [t.score.value for t in ts],
                        yerr=[[max(0.0, t.score.value - t.score.low) for t in ts], [max(0.0, t.score.high - t.score.value) for t in ts]],
                        fmt="o", color=colour, ecolor=colour, alpha=0.7, capsize=2, label=label)
    for i, t in enumerate(result.log.trials.values(), 1):  # the numbers of the table's first column
        ax.annotate(str(i), (t.latency_ratio, t.score.value), textcoords="offset points", xytext=(4, 3), fontsize=7)
    c = result.chosen
    ax.plot([c.latency_ratio], [c.score.value], marker="*", markersize=16, color="gold", markeredgecolor="k",
            linestyle="none", label=f"chosen: {c.name}")
    ax.axhline(result.budget.threshold, color="grey", linestyle="--", label="budget")
    ax.axvline(1.0, color="k", linewidth=0.8, linestyle=":", label="FP32 latency")
    ax.set_xlabel("INT8 / FP32 latency (lower is faster)")
    ax.set_ylabel(f"{result.metric} (validation half)")
    ax.legend(fontsize=8, loc="best")
    ax.grid(alpha=0.3)
    return png(fig)


def _section(result: SearchResult) -> str:
    e = lambda s: html.escape(str(s), quote=True)  # noqa: E731
    parts = ["<h2>Automatic search</h2>"]
    parts += [f"<p>{e(line)}</p>" for line in summary_lines(result)[:3]]
    parts += [f"<p class='note'>{e(m)}</p>" for m in result.messages()]
    plot = candidates_plot(result)
    if plot:
        parts.append(f'<img alt="score against latency of every candidate" src="data:image/png;base64,{plot}">')
    parts.append(f"<pre>{e(result.log.table(result.chosen.key))}</pre>")
    return "\n".join(parts)


def _worst_histograms(result: SearchResult, optimized: Any, stats: Any) -> dict[str, Any]:
    """Calibration histograms of the activations the most sensitive INT8 layers read (drawing
    every tensor's would take longer than the search)."""
    inputs = {n.name: list(n.input) for n in optimized.graph.node}
    out = {}
    for name, _ in result.ranking[:HISTOGRAM_LAYERS]:
        for tensor in inputs.get(name, []):
            tq = result.built.plan.tensors.get(tensor)
            if tq is not None and tq.kind == "activation" and tensor in stats:
                out[tensor] = stats[tensor].hist
    return out


def report_html(result: SearchResult, optimized: Any, *, model_name: str, stats: Any = None, layer_errors: list[Any] | None = None) -> str:
    """The chosen model's report (``analysis.report``) with the search section in front, as text
    (made before the output set is staged: the base report is written to a private folder first)."""
    from int8kit.emit.records import tensor_record

    plan = result.built.plan
    qdoc = {"model": model_name, "config": result.built.config.to_dict(),
            "tensors": {n: tensor_record(tq, plan.signed_storage) for n, tq in plan.tensors.items()},
            "float_nodes": dict(sorted(float_as_run(result.built.model, plan, result.built.config.inputs_only).items())),
            "fused": dict(plan.fused)}
    hists = _worst_histograms(result, optimized, stats) if stats is not None else None
    with tempfile.TemporaryDirectory(prefix="int8kit-auto-") as tmp:
        base = write_report(Path(tmp) / "report.html", layer_errors=layer_errors, quant_json=qdoc, stats=hists,
                            title="int8kit auto: the chosen INT8 model")
        page = base.read_text()
    at = page.find("<h2")
    at = at if at >= 0 else page.rfind("</body>")
    return page[:at] + _section(result) + "\n" + page[at:]
