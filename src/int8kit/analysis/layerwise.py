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
import sys
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from tabulate import tabulate
from tqdm import tqdm

from int8kit.calib.taps import activation_tensors, tap_model
from int8kit.data.sources import batches_from, model_input_specs
from int8kit.graph.io import as_model
from int8kit.graph.passes.constants import constants_to_initializers
from int8kit.plan.domains import consumer_domain
from int8kit.plan.graph_facts import GraphFacts
from int8kit.runtime.session import make_session, run_checked

log = logging.getLogger(__name__)


@dataclass
class LayerError:
    """Error of one tensor of the INT8 model against the same tensor of the FP32 model."""

    name: str
    cosine: float
    relative_error: float  # ||int8 - fp32|| / ||fp32||
    max_abs_error: float


# Bytes of tapped tensors one run of both models may return: batches are cut into pieces of about
# this size (at least one sample). Whole batches of every tensor held 8 GB on PP-OCRv4 det (8 pages
# at 640x640); one page at a time holds 1.2 GB.
_RUN_BYTES = 64 << 20


class _Sums:
    """Running dot products, norms and largest difference of each compared tensor."""

    def __init__(self, names: list[str], domains: dict[str, tuple[float, float]]):
        self.names, self.domains = names, domains
        self.dot, self.n32, self.n8, self.diff, self.maxabs = (np.zeros(len(names)) for _ in range(5))
        self.resized: set[str] = set()

    def add(self, a_all: list[np.ndarray], b_all: list[np.ndarray]) -> None:
        for i, (a, b) in enumerate(zip(a_all, b_all)):
            name = self.names[i]
            if a.shape != b.shape:  # data-dependent sizes (NonMaxSuppression, NonZero): not comparable
                self.resized.add(name)
                continue
            a = a.astype(np.float64).ravel()
            b = b.astype(np.float64).ravel()
            if name in self.domains:
                a, b = np.clip(a, *self.domains[name]), np.clip(b, *self.domains[name])
            self.dot[i] += a @ b
            self.n32[i] += a @ a
            self.n8[i] += b @ b
            self.diff[i] += (a - b) @ (a - b)
            self.maxabs[i] = max(self.maxabs[i], float(np.abs(a - b).max()) if a.size else 0.0)

    def errors(self) -> list[LayerError]:
        with np.errstate(divide="ignore", invalid="ignore"):
            # both all zero: equal (1); only one all zero: nothing in common (0)
            cos = np.where((self.n32 > 0) & (self.n8 > 0), self.dot / np.sqrt(self.n32 * self.n8),
                           np.where((self.n32 > 0) | (self.n8 > 0), 0.0, 1.0))
            rel = np.where(self.n32 > 0, np.sqrt(self.diff / self.n32), 0.0)
        if self.resized:
            log.info("left out %d tensor(s) whose size differs between the models: %s", len(self.resized), sorted(self.resized)[:5])
        return [LayerError(n, float(c), float(r), float(m))
                for n, c, r, m in zip(self.names, cos, rel, self.maxabs) if n not in self.resized]


def layer_errors(
    fp32_model: Any,
    int8_model: Any,
    data: Any,
    *,
    tensors: list[str] | None = None,
    max_samples: int = 32,
    batch_size: int | None = None,
    progress: bool = False,
) -> list[LayerError]:
    """Compare every tensor both models expose (default: all float activations of the FP32 model
    that also exist in the INT8 model), in graph order, over up to ``max_samples`` samples.

    Batches run in pieces whose tapped tensors take about ``_RUN_BYTES`` (one sample at least), so
    memory follows one piece, not the batch size."""
    fp32, int8 = as_model(fp32_model), as_model(int8_model)
    known = activation_tensors(fp32)
    int8_names = {o for n in int8.graph.node for o in n.output} | {i.name for i in int8.graph.input}
    names = [n for n in (tensors or list(known)) if n in int8_names and n in known]
    sums = _Sums(names, _reader_domains(fp32, names))
    tapped_fp32, _ = tap_model(fp32, names, known)
    tapped_int8, _ = tap_model(int8, names, {n: known[n] for n in names})
    s32, s8 = make_session(tapped_fp32), make_session(tapped_int8)
    specs = model_input_specs(fp32)
    splittable = all(s.batch_dim is None for s in specs)
    rows, seen = 1, 0
    bar = tqdm(total=max_samples, unit="sample", desc="per-layer", file=sys.stderr, disable=not progress, leave=False)
    for batch in batches_from(data, specs, batch_size=batch_size, iterations=None):
        size = len(next(iter(batch.values()))) if batch else 0
        start = 0
        while start < size and seen < max_samples:
            step = min(rows, max_samples - seen) if splittable else size
            piece = {k: v[start : start + step] for k, v in batch.items()}
            at = f"per-layer samples {seen}-{seen + len(next(iter(piece.values()))) - 1}"
            a_all = run_checked(s32, names, piece, where=f"{at} (FP32 model)")
            b_all = run_checked(s8, names, piece, where=f"{at} (INT8 model)")
            got = len(next(iter(piece.values())))
            if splittable:  # size the next pieces by what this one returned
                per_sample = sum(a.nbytes + b.nbytes for a, b in zip(a_all, b_all)) / max(got, 1)
                rows = max(1, int(_RUN_BYTES // max(per_sample, 1.0)))
            sums.add(a_all, b_all)
            del a_all, b_all
            start, seen = start + got, seen + got
            bar.update(got)
        if seen >= max_samples:
            break
    bar.close()
    return sums.errors()


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


