"""Which INT8 layers hurt most: the order in which the full search floats them.

``int8kit.analysis.sensitivity`` measures each layer's isolated error (the layer alone quantized,
fed exact FP32 inputs) from cached FP32 tensors; when that module is not present, a cheaper proxy
ranks by the quantization noise each layer's own inputs carry, computed from the calibration
histograms and the quantized weights alone (no inference): the noise-to-signal ratio of its
activation input (rounding within the clipping range, clipping outside it) plus that of its weight.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from int8kit.calib.stats import Stats
from int8kit.numerics import dequantize
from int8kit.plan.types import QuantPlan, TensorQuant

log = logging.getLogger(__name__)


def sensitivity_ranking(optimized: onnx.ModelProto, stats: Stats, quant_plan: QuantPlan, layers: list[str],
                        evaluator: Any = None) -> list[tuple[str, float]]:
    """``layers`` (compute node names the plan runs in INT8) with their error, most sensitive first."""
    measured = _measured(optimized, quant_plan, layers, evaluator)
    if measured is not None:
        return measured
    weights = {t.name: t for t in optimized.graph.initializer}
    by_name = {n.name: n for n in optimized.graph.node}
    ranked = []
    for name in layers:
        node = by_name[name]
        error = 0.0
        for tensor in node.input:
            tq = quant_plan.tensors.get(tensor)
            if tq is None:
                continue
            if tq.kind == "activation" and tensor in stats:
                error += _activation_nsr(stats[tensor].hist, tq)
            elif tq.kind == "weight" and tensor in weights:
                error += _weight_nsr(numpy_helper.to_array(weights[tensor]), tq)
        ranked.append((name, error))
    return sorted(ranked, key=lambda item: -item[1])


def _measured(optimized: onnx.ModelProto, quant_plan: QuantPlan, layers: list[str], evaluator: Any) -> list | None:
    """The isolated errors of ``analysis.sensitivity`` when that module is present."""
    try:
        sensitivity = importlib.import_module("int8kit.analysis.sensitivity")
    except ImportError:
        return None
    ranking = getattr(sensitivity, "sensitivity_ranking", None)
    if ranking is None or evaluator is None:
        return None
    wanted = set(layers)
    try:
        ranked = ranking(optimized, quant_plan, evaluator=evaluator)
    except TypeError as exc:  # another signature than this search was written for: the proxy serves
        log.info("analysis.sensitivity.sensitivity_ranking not usable here (%s); ranking by the histogram proxy", exc)
        return None
    out = [(getattr(r, "name", r[0] if isinstance(r, tuple) else r), float(getattr(r, "error", r[1] if isinstance(r, tuple) else 0.0)))
           for r in ranked]
    return [(name, err) for name, err in out if name in wanted]


def _activation_nsr(hist: Any, tq: TensorQuant) -> float:
    """Expected squared error over signal power of quantizing values distributed as ``hist``."""
    centers, counts = hist.centers(), hist.counts.astype(np.float64)
    power = float(np.sum(counts * centers**2))
    if power <= 0:
        return 0.0
    scale = float(np.max(np.asarray(tq.scale)))  # per-channel steps: the coarsest
    lo, hi = tq.lo, tq.hi
    clipped = np.clip(centers, lo, hi)
    noise = np.where(centers == clipped, scale * scale / 12.0, (centers - clipped) ** 2)
    return float(np.sum(counts * noise)) / power


def _weight_nsr(w: np.ndarray, tq: TensorQuant) -> float:
    if tq.values is None or not w.size:
        return 0.0
    restored = dequantize(tq.values, tq.scale, tq.zero_point, axis=tq.axis)
    power = float(np.sum(w.astype(np.float64) ** 2))
    return float(np.sum((w - restored.reshape(w.shape)) ** 2)) / power if power > 0 else 0.0
