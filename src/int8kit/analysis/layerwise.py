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
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from tabulate import tabulate
from tqdm import tqdm

from int8kit.calib.histogram import Histogram
from int8kit.calib.running import Buffers, RunningStats
from int8kit.calib.taps import activation_tensors, tap_model
from int8kit.evaluate.accumulate import ErrorAccumulator, ErrorStats
from int8kit.evaluate.evaluator import LAYER_SAMPLES, Evaluator
from int8kit.graph.io import as_model
from int8kit.graph.passes.constants import constants_to_initializers
from int8kit.plan.domains import consumer_domain
from int8kit.plan.graph_facts import GraphFacts
from int8kit.runtime.session import make_session, run_checked

log = logging.getLogger(__name__)


@dataclass
class LayerError:
    """Error of one tensor of the INT8 model against the same tensor of the FP32 model
    (definitions: docs/metrics.md)."""

    name: str
    cosine: float  # mean over samples of each sample's cosine
    relative_error: float  # ||int8 - fp32|| / ||fp32|| over all samples
    max_abs_error: float
    min_cosine: float = math.nan  # the lowest per-sample cosine
    sqnr_db: float = math.inf  # 10 log10(||fp32||^2 / ||int8 - fp32||^2)


def layer_errors(
    fp32_model: Any,
    int8_model: Any,
    data: Any,
    *,
    tensors: list[str] | None = None,
    max_samples: int = LAYER_SAMPLES,
    batch_size: int | None = None,
    progress: bool = False,
    evaluator: Evaluator | None = None,
) -> list[LayerError]:
    """Compare every tensor both models expose (default: all float activations of the FP32 model
    that also exist in the INT8 model), in graph order, over up to ``max_samples`` samples.

    The FP32 side comes from ``evaluator``'s layer reference (made here from ``fp32_model`` and
    ``data`` when not given), computed once in pieces of bounded size (or recomputed on its stored
    inputs when too large to keep); the INT8 model runs the same pieces, so memory follows one
    piece, not the batch size."""
    stats = layer_error_stats(fp32_model, int8_model, data, tensors=tensors, max_samples=max_samples,
                              batch_size=batch_size, progress=progress, evaluator=evaluator)
    return [_layer_error(n, e) for n, e in stats.items()]


def layer_error_stats(
    fp32_model: Any,
    int8_model: Any,
    data: Any,
    *,
    tensors: list[str] | None = None,
    max_samples: int = LAYER_SAMPLES,
    batch_size: int | None = None,
    progress: bool = False,
    evaluator: Evaluator | None = None,
) -> dict[str, ErrorStats]:
    """``layer_errors`` as the accumulator's ``ErrorStats`` per tensor name, in graph order."""
    if evaluator is None:
        evaluator = Evaluator(fp32_model, data, batch_size=batch_size, progress=progress)
    fp32, int8 = evaluator.model, as_model(int8_model)
    known = activation_tensors(fp32)
    int8_names = {o for n in int8.graph.node for o in n.output} | {i.name for i in int8.graph.input}
    # only the tensors both models hold are kept in the reference (EfficientNet-Lite0: 30 of 69 MB a sample)
    names = [n for n in (tensors or known) if n in int8_names and n in known]
    ref = evaluator.layer_reference(max_samples, names)
    domains = _reader_domains(fp32, names)
    sums = {n: ErrorAccumulator(domains.get(n)) for n in names}
    resized: set[str] = set()
    tapped, _ = tap_model(int8, names, {n: known[n] for n in names})
    session = make_session(tapped)
    seen = 0
    # a manual bar: tqdm wrapping the generator would keep the previous piece alive during the next
    bar = tqdm(total=ref.records("inputs"), unit="piece", desc="per-layer", disable=not progress, leave=False)
    for piece, fp32_values in _fp32_pieces(evaluator, ref, names):
        got = len(next(iter(piece.values()))) if piece else 0
        at = f"per-layer samples {seen}-{seen + got - 1}"
        values = run_checked(session, names, piece, where=f"{at} (INT8 model)")
        for name, b in zip(names, values):
            a = fp32_values[name]
            if a.shape != b.shape:  # data-dependent sizes (NonMaxSuppression, NonZero): not comparable
                resized.add(name)
            elif name not in resized:
                sums[name].add(a, b)
        del values, fp32_values
        seen += got
        bar.update(1)
    bar.close()
    if resized:
        log.info("left out %d tensor(s) whose size differs between the models: %s", len(resized), sorted(resized)[:5])
    return {n: sums[n].result() for n in names if n not in resized}


def _layer_error(name: str, e: ErrorStats) -> LayerError:
    return LayerError(name, e.cosine, e.relative_error, e.max_abs_error, e.min_cosine, e.sqnr_db)


def _fp32_pieces(evaluator: Evaluator, ref: Any, names: list[str]) -> Iterator[tuple[dict, dict[str, np.ndarray]]]:
    """Each stored piece's inputs and the FP32 values of ``names`` on it: read from the layer
    reference, or computed again when the reference keeps only the inputs (too large to store)."""
    session = None
    if not ref.meta.get("values"):
        tapped, _ = tap_model(evaluator.model, names, activation_tensors(evaluator.model))
        session = make_session(tapped)
    seen = 0
    for i in range(ref.records("inputs")):
        piece = ref.record("inputs", i)
        if session is None:
            values = {n: ref.get("values", n, i) for n in names}
        else:
            got = len(next(iter(piece.values()))) if piece else 0
            at = f"per-layer samples {seen}-{seen + got - 1} (FP32 model)"
            values = dict(zip(names, run_checked(session, names, piece, where=at)))
            seen += got
        yield piece, values
        del piece, values  # not alive while the next piece runs


def layer_histograms(evaluator: Evaluator, names: list[str], *, max_samples: int = LAYER_SAMPLES,
                     bins: int = 2048) -> dict[str, Histogram]:
    """Histograms of the FP32 values of the per-layer pass's samples, folded piece by piece with
    calibration's streaming histogram (``RunningStats``): the report's view of the data when no
    calibration statistics are given. Reads the stored values (or recomputes them, see
    ``_fp32_pieces``); never calibrates."""
    known = activation_tensors(evaluator.model)
    names = [n for n in names if n in known]
    ref = evaluator.layer_reference(max_samples, names)
    running = {n: RunningStats(n, bins, None) for n in names}
    buffers = Buffers()
    for k, (_, values) in enumerate(_fp32_pieces(evaluator, ref, names)):
        for name, value in values.items():
            if value.size and np.issubdtype(value.dtype, np.floating):
                running[name].update(np.ascontiguousarray(value, dtype=np.float32), k, buffers)
        del values  # not alive while the next piece runs
    return {n: r.result().hist for n, r in running.items() if r.values}


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
        [(e.name, f"{e.cosine:.5f}", f"{e.min_cosine:.5f}", f"{e.relative_error:.4f}", f"{e.sqnr_db:.1f}", f"{e.max_abs_error:.4g}")
         for e in rows],
        headers=["tensor", "cosine", "min cosine", "rel. error", "SQNR dB", "max abs error"],
        disable_numparse=True,
    )


def errors_to_dicts(errors: list[LayerError]) -> list[dict[str, Any]]:
    """Plain dicts of the errors (one per tensor)."""
    return [e.__dict__.copy() for e in errors]


