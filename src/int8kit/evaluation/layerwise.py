"""Layer-by-layer FP32 vs INT8 comparison: where does the quantization error come from?

The QDQ model keeps every original tensor name (a quantized tensor is the output of its
DequantizeLinear), so the same names can be read from both models and compared directly. A tensor
whose every reader is flat outside some interval (a conv output before HardSwish, whose values
below -3 all become 0) is compared as its readers see it, both sides clipped to that interval:
int8kit spends no codes outside it on purpose, and that difference reaches no later layer.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from tabulate import tabulate

from int8kit.calib.taps import activation_tensors, tap_model
from int8kit.data.sources import batches_from, model_input_specs
from int8kit.graph.io import as_model
from int8kit.graph.passes.constants import constants_to_initializers
from int8kit.plan.domains import consumer_domain
from int8kit.plan.graph_facts import GraphFacts
from int8kit.runtime.session import make_session

log = logging.getLogger(__name__)


@dataclass
class LayerError:
    """Error of one tensor of the INT8 model against the same tensor of the FP32 model."""

    name: str
    cosine: float
    relative_error: float  # ||int8 - fp32|| / ||fp32||
    max_abs_error: float


def layer_errors(
    fp32_model: Any,
    int8_model: Any,
    data: Any,
    *,
    tensors: list[str] | None = None,
    max_samples: int = 32,
    batch_size: int | None = None,
) -> list[LayerError]:
    """Compare every tensor both models expose (default: all float activations of the FP32 model
    that also exist in the INT8 model), in graph order, over up to ``max_samples`` samples."""
    fp32, int8 = as_model(fp32_model), as_model(int8_model)
    known = activation_tensors(fp32)
    int8_names = {o for n in int8.graph.node for o in n.output} | {i.name for i in int8.graph.input}
    names = [n for n in (tensors or list(known)) if n in int8_names and n in known]
    domains = _reader_domains(fp32, names)
    tapped_fp32, _ = tap_model(fp32, names, known)
    tapped_int8, _ = tap_model(int8, names, {n: known[n] for n in names})
    s32, s8 = make_session(tapped_fp32), make_session(tapped_int8)
    dot = np.zeros(len(names))
    n32 = np.zeros(len(names))
    n8 = np.zeros(len(names))
    diff = np.zeros(len(names))
    maxabs = np.zeros(len(names))
    seen = 0
    resized: set[str] = set()
    for batch in batches_from(data, model_input_specs(fp32), batch_size=batch_size, iterations=None):
        if seen >= max_samples:
            break
        a_all = s32.run(names, batch)
        b_all = s8.run(names, batch)
        for i, (a, b) in enumerate(zip(a_all, b_all)):
            if a.shape != b.shape:  # data-dependent sizes (NonMaxSuppression, NonZero): not comparable
                resized.add(names[i])
                continue
            a = a.astype(np.float64).ravel()
            b = b.astype(np.float64).ravel()
            if names[i] in domains:
                a, b = np.clip(a, *domains[names[i]]), np.clip(b, *domains[names[i]])
            dot[i] += a @ b
            n32[i] += a @ a
            n8[i] += b @ b
            diff[i] += (a - b) @ (a - b)
            maxabs[i] = max(maxabs[i], float(np.abs(a - b).max()) if a.size else 0.0)
        seen += len(next(iter(batch.values())))
    with np.errstate(divide="ignore", invalid="ignore"):
        cos = np.where((n32 > 0) & (n8 > 0), dot / np.sqrt(n32 * n8), 1.0)
        rel = np.where(n32 > 0, np.sqrt(diff / n32), 0.0)
    if resized:
        log.info("left out %d tensor(s) whose size differs between the models: %s", len(resized), sorted(resized)[:5])
    return [LayerError(n, float(c), float(r), float(m)) for n, c, r, m in zip(names, cos, rel, maxabs) if n not in resized]


def _reader_domains(model: onnx.ModelProto, names: list[str]) -> dict[str, tuple[float, float]]:
    if any(n.op_type == "Constant" for n in model.graph.node):  # exporters' Constant nodes: bounds, shifts
        model = copy.deepcopy(model)
        constants_to_initializers(model, [])
    facts = GraphFacts.of(model)
    domains = {n: consumer_domain(facts, n) for n in names}
    return {n: d for n, d in domains.items() if d is not None}


def layer_table(errors: list[LayerError], *, worst: int | None = None) -> str:
    """A table of per-layer errors; ``worst`` keeps only the largest relative errors."""
    rows = errors
    if worst is not None:
        rows = sorted(errors, key=lambda e: -e.relative_error)[:worst]
    return tabulate(
        [(e.name, f"{e.cosine:.5f}", f"{e.relative_error:.4f}", f"{e.max_abs_error:.4g}") for e in rows],
        headers=["tensor", "cosine", "rel. error", "max abs error"],
    )


def errors_to_dicts(errors: list[LayerError]) -> list[dict[str, Any]]:
    return [e.__dict__.copy() for e in errors]


