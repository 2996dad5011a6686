"""``int8kit analyze``: where an INT8 model's error comes from, layer by layer.

One ``Evaluator`` serves everything: the FP32 outputs (summary), the FP32 layer reference (the
isolated errors read its inputs, the accumulated errors compare against it) and the histograms.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx
from tabulate import tabulate

from int8kit.analysis.explain import activation_records, clip_reason, method_origin, methods_headline, quant_config
from int8kit.analysis.sensitivity import LayerSensitivity, layer_sensitivity, resolve_plan, sensitivity_ranking
from int8kit.analysis.summary import ModelSummary, model_summary
from int8kit.evaluate.evaluator import Evaluator
from int8kit.evaluate.result import EvalResult, finite
from int8kit.plan.graph_facts import GraphFacts
from int8kit.plan.types import QuantPlan

WORST = 10  # layers in the terminal's worst-layers table


@dataclass
class AnalyzeResult:
    """What ``int8kit.analyze`` found: every INT8 layer's sensitivity (graph order), the model
    summary, the FP32-vs-INT8 evaluation, and which threshold methods ran."""

    layers: list[LayerSensitivity]
    summary: ModelSummary
    evaluation: EvalResult
    headline: str
    methods: list[list[Any]]  # (method, why, tensors)
    quant_record: dict
    plan: QuantPlan
    options: dict[str, Any] = field(default_factory=dict)
    report: Path | None = None
    facts: Any = field(default=None, repr=False)

    def ranking(self, by: str = "isolated_output", int8_only: bool = False) -> list[str]:
        """Layer names, most sensitive first (``sensitivity_ranking``); float ops reading quantized
        tensors are included unless ``int8_only`` (where the error arises, not what to float)."""
        return sensitivity_ranking(self.layers, by=by, int8_only=int8_only)

    def layer_notes(self, s: LayerSensitivity) -> tuple[str, str]:
        """The methods of a layer's quantized inputs with why, and any range cut on purpose."""
        acts = activation_records(self.quant_record)
        config = quant_config(self.quant_record)
        choices = (self.quant_record or {}).get("method_choice")
        methods = "; ".join(f"{m} ({method_origin(self.facts, t, acts.get(t, {}), config, choices)})"
                            for t, m in s.methods.items())
        clips = [clip_reason(self.facts, t, acts[t]) for t in s.methods if t in acts]
        return methods, "; ".join(c for c in clips if c)

    def to_table(self, worst: int = WORST) -> str:
        """The terminal view: headline, summary, the worst layers by isolated error, float nodes."""
        s = self.summary
        lines = [self.headline,
                 f"MACs per sample: {_macs(s.int8_macs)} in INT8, {_macs(s.float_macs)} in float "
                 f"({s.int8_mac_share:.1%} INT8); {len(self.layers)} layers that read quantized tensors analysed on {self.options.get('samples')} samples",
                 "", self.evaluation.to_table(), ""]
        rank = self.ranking()[:worst]
        by = {x.layer: x for x in self.layers}
        rows = []
        for name in rank:
            x = by[name]
            methods, clip = self.layer_notes(x)
            rows.append([name, x.op_type if x.int8 else f"{x.op_type} (float)", _macs(x.macs), _db(x.isolated), _db(x.isolated_weight), _db(x.isolated_activation),
                         _db(x.isolated_output), _db(x.accumulated), methods + (f"; {clip}" if clip else "")])
        lines.append(f"worst {len(rows)} of {len(self.layers)} layers by isolated error at the model output "
                     "(SQNR dB, lower is worse; isolated/weights/inputs: at the layer's own output)")
        lines.append(tabulate(rows, headers=["layer", "op", "MACs", "isolated", "weights", "inputs", "at output",
                                             "accumulated", "input methods (why)"], disable_numparse=True))
        if s.float_nodes:
            lines += ["", f"{len(s.float_nodes)} nodes kept in float (compute nodes, and others a rule keeps float):",
                      tabulate([[f.name, f.op_type, _macs(f.macs), f.reason] for f in s.float_nodes],
                               headers=["node", "op", "MACs", "why"], disable_numparse=True)]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict (non-finite numbers become ``None``)."""
        def err(e: Any) -> dict | None:
            return None if e is None else {k: getattr(e, k) for k in ("sqnr_db", "cosine", "relative_error", "min_cosine",
                                                                      "max_abs_error", "samples")}
        layers = [{"layer": x.layer, "op_type": x.op_type, "int8": x.int8, "tensors": x.tensors, "output": x.output, "macs": x.macs,
                   "methods": x.methods, **{k: err(getattr(x, k)) for k in ("isolated", "isolated_weight",
                   "isolated_activation", "isolated_output", "accumulated")}} for x in self.layers]
        s = self.summary
        return finite({"headline": self.headline, "methods": self.methods, "ranking": self.ranking(), "layers": layers,
                       "summary": {"int8_macs": s.int8_macs, "float_macs": s.float_macs, "ops": s.ops,
                                   "float_nodes": [f.__dict__ for f in s.float_nodes]},
                       "evaluation": self.evaluation.to_dict(), "options": self.options,
                       "report": None if self.report is None else os.fspath(self.report)})


def run_analysis(fp32_model: onnx.ModelProto, optimized: onnx.ModelProto, int8_model: Any, evaluator: Evaluator, *,
                 quant_json: Any, samples: int, latency: bool, progress: bool, options: dict[str, Any]) -> AnalyzeResult:
    """Evaluate, compute every INT8 layer's sensitivity, summarise; ``api.analyze`` checks the
    inputs and writes the report."""
    from int8kit.analysis.report import _load_quant_json, find_quant_json

    record = quant_json if quant_json is not None else find_quant_json(int8_model)
    plan, emitted = resolve_plan(optimized, int8_model, record)  # the INT8 model, loaded once
    qdoc = _load_quant_json(record)
    evaluation = evaluator.evaluate(int8_model, latency=latency)
    layers = layer_sensitivity(optimized, plan, evaluator, samples=samples, accumulated=True, progress=progress)
    first = evaluator.layer_reference(samples, []).record("inputs", 0) if layers else {}
    shapes = {k: (1,) + tuple(v.shape[1:]) for k, v in first.items()}
    facts = GraphFacts.of(optimized)
    headline, methods = methods_headline(qdoc, facts)
    return AnalyzeResult(layers, model_summary(optimized, plan, shapes, emitted), evaluation, headline, methods, qdoc, plan,
                         options={**options, "samples": samples}, facts=facts)


def _db(e: Any) -> str:
    if e is None:
        return "-"
    return "exact" if math.isinf(e.sqnr_db) and e.sqnr_db > 0 else f"{e.sqnr_db:.1f}"


def _macs(n: int) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.3g}{unit}"
    return str(n)
