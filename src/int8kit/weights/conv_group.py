"""Conv output-channel grouping (the vendor ``-conv_group`` option).

The vendor manual: "split a conv's output channels into groups by output magnitude and quantize
each group separately to reduce error" (channels whose ranges differ a lot are sorted by range
and grouped). This sits between per-tensor quantization (one group) and per-channel
quantization (one group per channel) for back ends that support only a few distinct scales.
"""

from __future__ import annotations

import logging

import numpy as np

from int8kit.errors import ConfigError
from int8kit.weights.arq import ZERO_CHANNEL_SCALE, channel_absmax, normalize_axis, weight_qmax

log = logging.getLogger(__name__)

# Cut points considered when a layer has many channels; keeps the cost table at
# O(candidates x weights) while the DP over candidates stays exact.
MAX_CANDIDATES = 64


def _safe(scale: float) -> float:
    return float(scale) if scale > 0 else float(ZERO_CHANNEL_SCALE)


def weight_sse(w: np.ndarray, scale: np.ndarray, axis: int | None, bits: int = 8) -> float:
    """Sum of squared errors of a symmetric quantize-dequantize round trip of ``w``.

    ``scale`` is a scalar (per-tensor, ``axis`` may be ``None``) or one value per channel along
    ``axis``. Useful to compare per-tensor, grouped and per-channel scales of one weight.
    """
    qmax = weight_qmax(bits)
    w = np.asarray(w, dtype=np.float64)
    s = np.asarray(scale, dtype=np.float32).astype(np.float64)
    if s.size > 1:
        axis = normalize_axis(axis, w.ndim)
        if axis is None or w.shape[axis] != s.size:
            raise ConfigError(f"scale has {s.size} values; expected one per channel along axis {axis}.")
        shape = [1] * w.ndim
        shape[axis] = s.size
        s = s.reshape(shape)
    else:
        s = s.reshape(())
    q = np.clip(np.rint(w / s), -qmax, qmax)
    return float(np.sum((q * s - w) ** 2))


def _candidate_ends(n: int) -> np.ndarray:
    """Inclusive end indices (in sorted channel order) where a group may close."""
    if n <= MAX_CANDIDATES:
        return np.arange(n)
    return np.unique(np.rint(np.linspace(0, n - 1, MAX_CANDIDATES)).astype(int))


def _cost_table(rows: np.ndarray, absmax: np.ndarray, ends: np.ndarray, qmax: int) -> np.ndarray:
    """``prefix[j, c]``: error of sorted channels ``0..c-1`` under the scale of candidate ``j``.

    Candidate ``j``'s scale is the abs max of channel ``ends[j]`` over ``qmax``; a group that
    closes at ``ends[j]`` uses it, since channels are sorted by abs max.
    """
    n = rows.shape[0]
    prefix = np.zeros((len(ends), n + 1), dtype=np.float64)
    for j, end in enumerate(ends):
        s = np.float64(np.float32(_safe(absmax[end] / qmax)))
        block = rows[: end + 1]
        err = ((np.clip(np.rint(block / s), -qmax, qmax) * s - block) ** 2).sum(axis=1)
        prefix[j, 1 : end + 2] = np.cumsum(err)
    return prefix


def _best_partition(prefix: np.ndarray, ends: np.ndarray, max_groups: int) -> list[int]:
    """Exact DP over candidate cuts: group end indices (into ``ends``) of the least-error split.

    ``best[g][j]`` is the least error of covering sorted channels ``0..ends[j]`` with ``g + 1``
    groups. Among splits of equal error the one with fewer groups wins.
    """
    n_cand = len(ends)
    groups = min(max_groups, n_cand)
    inf = np.inf
    best = np.full((groups, n_cand), inf)
    back = np.full((groups, n_cand), -1, dtype=int)
    best[0] = prefix[np.arange(n_cand), ends + 1]
    for g in range(1, groups):
        for j in range(g, n_cand):
            # previous group closes at ends[i]; this one covers ends[i]+1 .. ends[j]
            i = np.arange(g - 1, j)
            cost = best[g - 1, i] + prefix[j, ends[j] + 1] - prefix[j, ends[i] + 1]
            k = int(np.argmin(cost))
            best[g, j], back[g, j] = cost[k], i[k]
    final = best[:, n_cand - 1]
    g = int(np.argmin(final))  # argmin returns the first, i.e. fewest groups, on ties
    cuts, j = [], n_cand - 1
    while g >= 0:
        cuts.append(j)
        j = back[g, j]
        g -= 1
    return cuts[::-1]


def group_channel_scales(w: np.ndarray, axis: int, max_groups: int = 8, *, bits: int = 8) -> np.ndarray:
    """One symmetric scale per output channel, shared within groups of similar magnitude.

    Channels are sorted by their abs max and partitioned into at most ``max_groups``
    contiguous groups (in that sorted order); every channel of a group uses the group's largest
    abs max over ``2**(bits-1) - 1`` as its scale, so nothing saturates. The partition, and the
    number of groups, is the one that minimises the total squared quantize-dequantize error of
    the weight, found exactly by dynamic programming over cut points. Layers with more than
    ``MAX_CANDIDATES`` channels consider cuts only at that many evenly spaced positions of the
    sorted order (the DP stays exact over those). ``max_groups=1`` is per-tensor quantization;
    ``max_groups >= C`` returns the per-channel scales (the C-group case). All-zero channels get
    a safe scale of 1.0 when they form a group of their own.

    Returns a float32 array of shape ``(C,)`` in the original channel order, ready for
    ``quantize_weight(w, axis=axis, channel_scales=...)``.
    """
    w = np.asarray(w)
    if not isinstance(max_groups, (int, np.integer)) or max_groups < 1:
        raise ConfigError(f"conv_group max_groups is {max_groups!r}; expected an integer >= 1, e.g. 8.")
    if w.ndim < 1:
        raise ConfigError("conv_group got a scalar weight; expected a tensor with a channel axis.")
    axis = normalize_axis(axis, w.ndim)
    qmax = weight_qmax(bits)
    absmax = channel_absmax(w, axis)
    n = absmax.size
    if n == 0:
        return np.zeros(0, dtype=np.float32)
    if max_groups >= n:
        return np.array([_safe(m / qmax) for m in absmax], dtype=np.float32)
    order = np.argsort(absmax, kind="stable")
    rows = np.moveaxis(np.asarray(w, dtype=np.float64), axis, 0).reshape(n, -1)[order]
    sorted_max = absmax[order]
    ends = _candidate_ends(n)
    prefix = _cost_table(rows, sorted_max, ends, qmax)
    cuts = _best_partition(prefix, ends, max_groups)
    scales_sorted = np.empty(n, dtype=np.float32)
    start = 0
    for j in cuts:
        end = int(ends[j])
        scales_sorted[start : end + 1] = _safe(sorted_max[end] / qmax)
        start = end + 1
    scales = np.empty(n, dtype=np.float32)
    scales[order] = scales_sorted
    log.debug("conv_group: %d channels in %d groups", n, len(cuts))
    return scales
