"""Why a tensor got its threshold method and range, read from a quant record (``quant.json``) and
the FP32 model: the words the report and ``int8kit analyze`` put beside a number.

* ``method_origin``: the global ``--th-method``, a per-layer override, a user threshold, or one of
  int8kit's method rules (plan/method_rules.py), named by the facts that trigger it;
* ``clip_reason``: a range cut on purpose because every reader is flat outside it (HardSwish
  below -3, a fused Relu/Clip), so a large clipped share is not an error;
* ``methods_headline``: how many tensors each method actually ran on, and why.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import onnx

from int8kit.graph.ops import NORMALIZATIONS
from int8kit.plan.domains import value_domain
from int8kit.plan.graph_facts import GraphFacts


def quant_config(qdoc: dict | None) -> dict:
    """The quantization options of a quant record (its ``config``, or that config's ``quantization`` part)."""
    config = (qdoc or {}).get("config") or {}
    return config.get("quantization", config) if isinstance(config, dict) else {}


def method_origin(facts: GraphFacts | None, name: str, record: dict, config: dict, choices: dict | None = None) -> str:
    """Where the method of activation ``name`` came from, in a few words (``config``: ``quant_config``;
    ``choices``: the quant record's ``method_choice``, where ``auto`` and the guard on divergence
    methods say why)."""
    method, global_method = record.get("method", ""), str(config.get("th_method", ""))
    producer = facts.producer.get(name) if facts is not None else None
    overrides = config.get("overrides") or {}
    if method == "user":
        return "user threshold (override)"
    for key in (name, producer.name if producer is not None else None):
        ov = overrides.get(key) if key else None
        if isinstance(ov, dict) and ov.get("th_method"):
            return f"override for '{key}'"
    if method == global_method:
        return f"global --th-method {global_method}"
    if not config.get("method_rules", True):
        return f"chosen by --th-method {global_method}"
    if global_method == "auto":
        return "--th-method auto: least error of the candidate methods"
    choice = (choices or {}).get(name)
    if choice and choice.get("method") == method and choice.get("why"):  # the guard on divergence methods
        return "int8kit rule: " + choice["why"]
    return "int8kit rule: " + _rule_facts(producer, record)


def _rule_facts(producer: onnx.NodeProto | None, record: dict) -> str:
    """The facts that made int8kit's method rules (plan/method_rules.py) pick this tensor's method,
    said plainly: the method picked narrows the rules that can have fired."""
    lo, hi = record.get("min"), record.get("max")
    span = f"[{lo:.3g}, {hi:.3g}]" if lo is not None and hi is not None else "unknown range"
    op = producer.op_type if producer is not None else ""
    if record.get("method") == "max":  # the rules that never clip
        if producer is None:
            return f"model input {span}, bounded by preprocessing: never clipped"
        if op in ("Softmax", "Sigmoid", "Tanh", "Clip", "HardSigmoid") or (lo is not None and lo >= 0 and hi <= 1):
            return f"bounded {op} output {span}: never clipped"
        return f"{op} output next to the float stem {span}: its rare large values are what later layers read"
    if op in NORMALIZATIONS:
        return f"{op} output {span}: outlier channels matter"
    if lo is not None and hi is not None and lo < 0 < hi:
        return f"signed {op} output {span}: tails read linearly"
    return f"one-sided {op} output {span} away from zero"


def clip_reason(facts: GraphFacts | None, name: str, record: dict) -> str | None:
    """Why the range of ``name`` stops short of the observed values on purpose, or ``None``."""
    if facts is None or name not in facts.producer and name not in facts.graph_inputs:
        return None
    domain = value_domain(facts, name)
    lo, hi, mn, mx = (record.get(k) for k in ("lo", "hi", "min", "max"))
    if domain is None or None in (lo, hi, mn, mx):
        return None
    cut_low = mn < lo and math.isclose(lo, domain[0], rel_tol=1e-5, abs_tol=1e-7)
    cut_high = mx > hi and math.isclose(hi, domain[1], rel_tol=1e-5, abs_tol=1e-7)
    if not (cut_low or cut_high):
        return None
    readers = sorted({n.op_type for n in facts.consumers.get(name, [])}) or [facts.producer[name].op_type]
    bound = f"below {lo:.3g}" if cut_low else f"above {hi:.3g}"
    return f"cut {bound} on purpose: {'/'.join(readers)} is flat there (no reader sees those values)"


def activation_records(qdoc: dict | None) -> dict[str, dict]:
    """The activation entries of a quant record."""
    return {n: r for n, r in ((qdoc or {}).get("tensors") or {}).items() if r.get("kind") == "activation"}


def methods_headline(qdoc: dict, facts: GraphFacts | None = None) -> tuple[str, list[list[Any]]]:
    """One sentence naming the methods that ran, and rows (method, origin, tensors) behind it."""
    acts = activation_records(qdoc)
    config = quant_config(qdoc)
    counts: Counter = Counter()
    for name, rec in acts.items():
        origin = method_origin(facts, name, rec, config, qdoc.get("method_choice"))
        kind = origin.split(":")[0] if origin.startswith("int8kit rule") else origin
        counts[(rec.get("method", "?"), kind)] += 1
    by_method: Counter = Counter()
    for (method, _), n in counts.items():
        by_method[method] += n
    parts = [f"{m} on {n}" for m, n in by_method.most_common()]
    sentence = (f"{len(acts)} activation tensors quantized; threshold methods that ran: {', '.join(parts) or 'none'}"
                f" (global --th-method {config.get('th_method', '?')})")
    rows = [[m, k, n] for (m, k), n in sorted(counts.items(), key=lambda kv: -kv[1])]
    return sentence, rows
