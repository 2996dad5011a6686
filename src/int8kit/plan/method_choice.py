"""``--th-method auto``: per tensor, the candidate method whose range its readers see least error from.

No single threshold method wins everywhere (benchmarks/bench_methods.py): KL clips the ReLU outputs
of the demo's plain Conv-ReLU classifier too hard (output cosine 0.9968, mse 0.99996), max rounds
coarsely where a few outliers stretch the range, MSE ignores how the next layer adds errors up.
``auto`` computes each candidate's range (thresholds/auto.py ``CANDIDATES``, the memoized threshold
searches) and scores it by the error of the **reading layers' outputs**, estimated from the
calibration statistics and the readers' weights (no extra pass):

* a range's error has a mean (clipping moves every clipped value towards the range) and a
  spread (rounding, and clipping's variation); thresholds/range_error.py gives both;
* a reader ``y_o = sum_i W[o, i] x_i`` passes the spread on weighted by ``sum W**2`` but a mean
  error ``b`` shared by its inputs as ``b * sum_i W[o, i]``: relative to the signal, the output
  error is ``spread + G * b**2`` with the reader's **bias gain**
  ``G = sum_o (sum_i W[o, i])**2 / sum_{o,i} W[o, i]**2`` (1 for weights of random sign, up to
  the fan-in for weights of one sign). A global average of ``N`` values has ``G = N``; any other
  reader sees the error as it is, ``G = 1`` (then the score is the plain MSE).

The score of a range is ``(spread + G * b**2) / E[x**2]`` with ``G`` the mean over the readers
(a reader without weights passes the error on: the readers after it, up to four ops on, count);
the least score wins (ties: the earlier candidate). What the estimate cannot see: per-channel
structure (statistics keep one histogram per tensor; modelling each channel as the histogram
scaled to its extremes predicted worse: PP-OCRv4 rec exact match 0.515 against 0.945) and how
much rare large values matter after a nonlinearity (why the candidates leave out percentile and
ifmr, and why LayerNorm outputs keep max by rule, plan/method_rules.py). The winner, every
candidate's score and the readers are recorded (quant.json ``method_choice``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np
import onnx
from onnx import numpy_helper

from int8kit.calib.stats import TensorStats
from int8kit.plan.graph_facts import GraphFacts, node_attr
from int8kit.plan.params import activation_quant
from int8kit.thresholds import DIVERGENCE_METHODS, resolve
from int8kit.thresholds.auto import CANDIDATES
from int8kit.thresholds.range_error import mean_square, range_error

if TYPE_CHECKING:
    from int8kit.plan.context import PlanContext

_AVERAGING = ("GlobalAveragePool", "ReduceMean")
#: KL (and symkl, jsd) trade squared error for the histogram's shape by design: on most ReLU outputs
#: of the benchmark models their range gives the readers 1-5 times the estimated error of mse's or
#: max's. Far beyond that they cut what the readers need: KL clips the demo CNN's ReLU outputs at 2.0
#: of 4.8 (67-395 times the error; output cosine 0.9968 where max and mse keep 0.9999); PP-OCRv4
#: det has three ReLU outputs at 22-47 times (benchmarks/bench_methods.py prints these ratios).
DIVERGENCE_GUARD = 10.0
_FOLLOW = 4  # ops a tensor's error is followed through to the weighted layer that reads it


@dataclass(frozen=True)
class Choice:
    """The winning method, every candidate's score and the bias gain of the readers."""

    method: str
    scores: dict[str, float]
    gain: float
    readers: tuple[str, ...]
    why: str = "least estimated error of the readers' outputs, (spread + bias_gain * mean**2) / E[x**2]"

    def record(self) -> dict:
        """The quant.json entry."""
        return {"method": self.method, "scores": {k: float(f"{v:.4g}") for k, v in self.scores.items()},
                "bias_gain": float(f"{self.gain:.4g}"), "readers": list(self.readers), "why": self.why}


def choose(ctx: "PlanContext", name: str, tstats: TensorStats, candidates: tuple[str, ...], *, bits: int,
           symmetric: bool, signed: bool, domain: tuple[float, float] | None) -> Choice:
    """The candidate with the least estimated reader error for tensor ``name`` (cached per context:
    the key holds everything the choice reads besides the model and statistics)."""
    hist = tstats.hist
    key = ("auto", id(hist), name, candidates, bits, symmetric, signed, domain)
    return ctx.ranges.get(key, lambda: (hist, _choose(ctx, name, tstats, candidates, bits=bits, symmetric=symmetric,
                                                       signed=signed, domain=domain)))[1]


def _choose(ctx: "PlanContext", name: str, tstats: TensorStats, candidates: tuple[str, ...], *, bits: int,
            symmetric: bool, signed: bool, domain: tuple[float, float] | None) -> Choice:
    hist = tstats.hist
    gains = ctx.facts.memo(("auto bias gains", name), lambda: bias_gains(ctx.facts, name))
    gain = float(np.mean([_averaged(tstats, ctx.stats.samples) if g is None else g for g in gains.values()])) if gains else 1.0
    signal = mean_square(hist)
    scores: dict[str, float] = {}
    for method in candidates:
        tq = activation_quant(name, hist, method=method, params={}, bits=bits, symmetric=symmetric, signed=signed,
                              domain=domain, ranges=ctx.range)
        bias, square = range_error(hist, tq.lo, tq.hi, float(tq.scale), domain)
        scores[method] = (max(square - bias * bias, 0.0) + gain * bias * bias) / (signal if signal > 0 else 1.0)
    best = min(candidates, key=lambda m: scores[m])  # min keeps the first of equal scores
    return Choice(best, scores, gain, tuple(gains))


def guard_divergence(ctx: "PlanContext", name: str, tstats: TensorStats, method: str, *, bits: int,
                     symmetric: bool, signed: bool, domain: tuple[float, float] | None) -> Choice | None:
    """A divergence method's range kept unless its readers' estimated error is over
    :data:`DIVERGENCE_GUARD` times that of the best other candidate (``mse`` or ``max``): then that
    one, with why (``None``: the divergence method stays)."""
    others = tuple(m for m in CANDIDATES if resolve(m)[0] not in DIVERGENCE_METHODS)
    scored = choose(ctx, name, tstats, (method, *others), bits=bits, symmetric=symmetric, signed=signed,
                    domain=domain)
    best = min(others, key=lambda m: scored.scores[m])
    ratio = divergence_ratio(scored.scores, method)
    if not ratio > DIVERGENCE_GUARD:  # (a NaN estimate keeps the divergence method too)
        return None
    return replace(scored, method=best, why=f"{method}'s range would give its readers {ratio:.0f} times the "
                   f"estimated error of {best}'s (more than {DIVERGENCE_GUARD:g} times: the guard on divergence methods)")


def divergence_ratio(scores: dict[str, float], method: str) -> float:
    """The estimated reader error of divergence ``method``'s range over the least of the
    non-divergence candidates' among ``scores`` (what the guard compares with ``DIVERGENCE_GUARD``)."""
    others = [v for m, v in scores.items() if resolve(m)[0] not in DIVERGENCE_METHODS]
    return scores[method] / max(min(others), 1e-30)


def _averaged(tstats: TensorStats, samples: int) -> float:
    """Values a global average reads per channel and sample (1 when the statistics cannot say)."""
    channels = tstats.channel_max.size if tstats.channel_max is not None and tstats.channel_max.size else 0
    if not channels or not tstats.values or samples < 1:
        return 1.0
    return max(tstats.values / samples / channels, 1.0)


def bias_gains(facts: GraphFacts, name: str, depth: int = _FOLLOW) -> dict[str, float | None]:
    """Bias gain of each consumer of ``name``, by node name (``None``: a global average, whose gain
    is the count of values it averages, known from the statistics). A consumer without weights
    (Add, Mul, HardSwish's pieces, Reshape...) passes the error on: it gets the mean gain of the
    weighted readers after it, up to ``depth`` ops on, or 1 when none is that near. Model facts only."""
    out: dict[str, float | None] = {}
    for node in facts.consumers.get(name, []):
        gain: float | None = 1.0
        if node.op_type in ("Conv", "Gemm", "MatMul") and node.input[0] == name and len(node.input) > 1 \
                and node.input[1] in facts.initializers and node.input[1] != name:
            gain = _weight_gain(node, numpy_helper.to_array(facts.initializers[node.input[1]]).astype(np.float64))
        elif node.op_type in _AVERAGING and node.input[0] == name:
            gain = None
        elif depth > 1 and node.output and node.output[0] not in facts.graph_outputs:
            after = [g for g in bias_gains(facts, node.output[0], depth - 1).values() if g is not None]
            gain = float(np.mean(after)) if after else 1.0
        out[node.name or node.output[0]] = gain
    return out


def _weight_gain(node: onnx.NodeProto, w: np.ndarray) -> float:
    """``sum_o (sum_i W[o, i])**2 / sum W**2`` over the inputs ``i`` each output ``o`` reads."""
    if node.op_type == "Conv":
        rows = w.reshape(w.shape[0], -1)  # an output reads its group's channels x the kernel
    elif node.op_type == "Gemm":
        if w.ndim != 2 or int(node_attr(node, "transA", 0)):
            return 1.0
        rows = w if int(node_attr(node, "transB", 0)) else w.T
    elif w.ndim == 2:  # MatMul: (K inputs, N outputs)
        rows = w.T
    else:
        return 1.0
    energy = float(np.sum(rows * rows))
    return float(np.sum(rows.sum(axis=1) ** 2)) / energy if energy > 0 else 1.0
