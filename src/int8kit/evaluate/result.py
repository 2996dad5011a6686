"""What an evaluation measured (``EvalResult``) and the one FP32-vs-INT8 summary table.

``summary_rows`` is the only place the table's rows are made: ``EvalResult.to_table`` renders them
as text, the HTML report as an HTML table.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from tabulate import tabulate

from int8kit.evaluate.uncertainty import Drop, Score

SUMMARY_HEADERS = ["metric", "FP32", "INT8", "change"]


@dataclasses.dataclass
class OutputSimilarity:
    """How close the INT8 model's output is to the FP32 one (definitions: docs/metrics.md)."""

    name: str
    mean_cosine: float  # mean over samples of each sample's cosine
    max_abs_error: float
    # ||INT8 - FP32|| / ||FP32|| over all samples: meaningful where a per-sample cosine is not
    # (one value per sample: a regression output's cosine is always 1)
    relative_error: float = 0.0
    min_cosine: float | None = None  # the lowest per-sample cosine
    sqnr_db: float | None = None  # 10 log10(||FP32||^2 / ||INT8 - FP32||^2)


@dataclasses.dataclass
class TaskComparison:
    """Both models' task scores on the same samples and the drop (FP32 minus INT8), paired."""

    metric: str
    fp32: Score
    int8: Score
    drop: Drop

    def to_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "fp32": self.fp32.to_dict(), "int8": self.int8.to_dict(), "drop": self.drop.to_dict()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TaskComparison":
        drop = {k: v for k, v in d["drop"].items() if k != "significant"}
        return cls(d["metric"], Score(**d["fp32"]), Score(**d["int8"]), Drop(**drop))


@dataclasses.dataclass
class EvalResult:
    """Everything an evaluation measured. Fields are ``None`` where they do not apply.

    ``latency_ratio`` is INT8 latency / FP32 latency (below 1 means the INT8 model is faster).
    """

    output: str
    samples: int
    fp32_top1: float | None = None
    int8_top1: float | None = None
    fp32_top5: float | None = None
    int8_top5: float | None = None
    top1_agreement: float | None = None
    outputs: list[OutputSimilarity] = dataclasses.field(default_factory=list)
    fp32_latency_ms: float | None = None
    int8_latency_ms: float | None = None
    latency_ratio: float | None = None
    latency_batch: int | None = None  # samples per latency run: 1, or the model's fixed batch
    runtime: str = "onnxruntime"  # where both models ran (accuracy and latency)
    fp32_size_bytes: int | None = None
    int8_size_bytes: int | None = None
    layers: list[Any] | None = None  # per-tensor ``analysis.layerwise.LayerError``s when asked for (evaluate(per_layer=True))
    task: TaskComparison | None = None  # the task metric's scores when asked for (evaluate(metric=...))
    # onnxruntime's time per op type when asked for (evaluate(profile=True)): {"FP32"|"INT8": {op: [nodes, us]}}
    op_profile: dict[str, dict[str, Any]] | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict; non-finite floats become ``None`` (``layers`` only when measured)."""
        d = finite(dataclasses.asdict(self))
        if self.layers is None:
            d.pop("layers")
        if self.op_profile is None:
            d.pop("op_profile")
        if self.task is None:
            d.pop("task")
        else:
            d["task"] = self.task.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "EvalResult":
        """The inverse of ``to_dict`` (layers stay as given)."""
        fields = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in d.items() if k in fields}
        kwargs["outputs"] = [o if isinstance(o, OutputSimilarity) else OutputSimilarity(**o) for o in d.get("outputs") or []]
        if isinstance(kwargs.get("task"), dict):
            kwargs["task"] = TaskComparison.from_dict(kwargs["task"])
        return cls(**kwargs)

    def to_table(self) -> str:
        """A human-readable FP32-vs-INT8 table."""
        title, rows = summary_rows(self)
        return title + "\n" + tabulate(rows, headers=SUMMARY_HEADERS, tablefmt="simple", disable_numparse=True)


def summary_rows(res: EvalResult) -> tuple[str, list[list[str]]]:
    """Title and rows (``SUMMARY_HEADERS`` columns) of the summary table, already formatted."""
    rows: list[list[str]] = []
    if res.task is not None:
        t = res.task
        rows.append([f"{t.metric} (95 % interval)", str(t.fp32), str(t.int8), f"drop {t.drop}"])
    for label, a, b in (("top-1 accuracy", res.fp32_top1, res.int8_top1), ("top-5 accuracy", res.fp32_top5, res.int8_top5)):
        if a is not None and b is not None:
            rows.append([label, pct(a), pct(b), f"{(b - a) * 100:+.2f} pts"])
    if res.top1_agreement is not None:
        rows.append([f"top-1 agreement ({res.output})", "", pct(res.top1_agreement), ""])
    for sim in res.outputs:
        rows.append([f"mean cosine ({sim.name})", "", num(sim.mean_cosine, ".6f"), ""])
        if sim.min_cosine is not None:
            rows.append([f"min cosine ({sim.name})", "", num(sim.min_cosine, ".6f"), ""])
        rows.append([f"max abs error ({sim.name})", "", num(sim.max_abs_error, ".6g"), ""])
        rows.append([f"relative error ({sim.name})", "", num(sim.relative_error, ".6g"), ""])
        if sim.sqnr_db is not None:
            rows.append([f"SQNR dB ({sim.name})", "", num(sim.sqnr_db, ".2f"), ""])
    if res.fp32_latency_ms is not None and res.int8_latency_ms is not None:
        ratio = f"x{res.latency_ratio:.2f}" if res.latency_ratio is not None else ""
        where = "" if res.runtime == "onnxruntime" else f", {res.runtime}"
        rows.append([f"latency, batch {res.latency_batch or 1}{where} (ms)", f"{res.fp32_latency_ms:.3f}", f"{res.int8_latency_ms:.3f}", ratio])
    if res.fp32_size_bytes is not None and res.int8_size_bytes is not None:
        ratio = f"x{res.int8_size_bytes / res.fp32_size_bytes:.2f}" if res.fp32_size_bytes else ""
        rows.append(["model size (KiB)", f"{res.fp32_size_bytes / 1024:.1f}", f"{res.int8_size_bytes / 1024:.1f}", ratio])
    return f"{res.samples} samples, output '{res.output}'", rows


def pct(x: float | None) -> str:
    """A fraction as a percentage with two decimals (``n/a`` when missing or not finite)."""
    return "n/a" if x is None or not math.isfinite(x) else f"{x * 100:.2f}%"


def num(x: float | None, fmt: str) -> str:
    """A number in ``fmt`` (``inf`` printed as such, ``None`` as ``n/a``)."""
    return "n/a" if x is None or math.isnan(x) else format(x, fmt)


def finite(obj: Any) -> Any:
    """Replace NaN/Inf with None so ``json.dumps`` writes valid JSON."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [finite(v) for v in obj]
    return obj
