"""SNQ: non-uniform INT4 weights (Huawei AMCT's ``snq_quantize``), 16 levels per output channel.

AMCT describes SNQ as clustering that contains a uniform step: the weights are first quantized
uniformly (ARQ, INT8 codes), then each output channel's codes are clustered into 16 levels, so
the channel is stored as 4-bit indices ([0, 15]) into a 16-entry codebook. Here the levels are
rounded back onto the channel's INT8 grid: the fake-quant model is an ordinary per-channel INT8
QDQ model (onnxruntime still runs QLinearConv) whose weight codes take at most 16 distinct
values per channel, and the deploy form (emit/int4_deploy.py) stores indices + codebook.

The clustering is 1-D k-means (Lloyd's iteration) on the histogram of a channel's INT8 codes:
there are at most 255 distinct codes and equal codes always land in the same cluster, so
k-means on the weighted histogram is exactly k-means on every weight, and all channels of a layer
iterate at once in numpy. (scikit-learn's KMeans gives the same iteration but is one call per
channel - tens of thousands of calls for a CNN - and measures its tolerance relative to the data's
variance, not in the manual's absolute ``min_distance``.)

* ``init``: "uniform" places the 16 centres evenly over the channel's [min, max]; "gaussian" at
  the 16 quantiles (k + 0.5) / 16 of a normal with the channel's mean and standard deviation;
  "d2sampling" (k-means++, the third value AMCT's proto lists) draws them, seeded, and keeps the
  best of three starts per channel.
* ``max_iteration`` (500-2000) bounds the iterations; ``min_distance`` (1e-10-1e-3) stops them
  when no centre moved more than that many INT8 steps.
"""

from __future__ import annotations

import numpy as np
from statistics import NormalDist

from int8kit.errors import ConfigError

LEVELS = 16  # 4-bit indices
INITS = ("uniform", "gaussian", "d2sampling")
_RESTARTS = 3  # d2sampling starts per channel
_CODES = np.arange(-127, 128, dtype=np.float64)  # the restricted symmetric INT8 grid of ARQ weights


def cluster_codes(q: np.ndarray, axis: int | None, *, init: str = "uniform", max_iteration: int = 1000,
                  min_distance: float = 1e-10) -> np.ndarray:
    """INT8 weight codes ``q`` re-quantized to at most 16 levels per slice along ``axis`` (the
    whole tensor when ``axis`` is None), each level a code of the same grid. Returns int8 codes of
    ``q``'s shape; a slice with 16 or fewer distinct codes is returned unchanged."""
    q = np.asarray(q)
    if q.dtype != np.int8:
        raise ConfigError(f"SNQ clusters INT8 weight codes, got dtype {q.dtype}; quantize the weights to 8 bits first.")
    if init not in INITS:
        raise ConfigError(f"SNQ init must be one of {', '.join(INITS)}, got {init!r}.")
    rows = (q.reshape(1, -1) if axis is None else np.moveaxis(q, axis, 0).reshape(q.shape[axis], -1)).astype(np.int64)
    flat = (np.arange(rows.shape[0])[:, None] * _CODES.size + rows + 127).reshape(-1)
    counts = np.bincount(flat, minlength=rows.shape[0] * _CODES.size).reshape(rows.shape[0], -1).astype(np.float64)
    table = np.tile(np.arange(-127, 128, dtype=np.int64), (rows.shape[0], 1))  # code -> new code, per channel
    busy = np.count_nonzero(counts, axis=1) > LEVELS
    if busy.any():
        table[busy] = _snap(counts[busy], _cluster(counts[busy], init, max_iteration, min_distance))
    out = np.take_along_axis(table, rows + 127, axis=1).astype(np.int8)
    if axis is None:
        return out.reshape(q.shape)
    moved_shape = (q.shape[axis],) + tuple(np.delete(q.shape, axis))
    return np.moveaxis(out.reshape(moved_shape), 0, axis)


def _cluster(counts: np.ndarray, init: str, max_iteration: int, min_distance: float) -> np.ndarray:
    """Final centres per channel; d2sampling keeps, per channel, the best of a few seeded starts."""
    if init != "d2sampling":
        return _lloyd(counts, _initial_centres(counts, init), max_iteration, min_distance)
    rng = np.random.default_rng(0)  # seeded: the same weights give the same model
    best, best_error = None, None
    for _ in range(_RESTARTS):
        centres = _lloyd(counts, _d2_centres(counts, rng), max_iteration, min_distance)
        error = _squared_error(counts, centres)
        if best is None:
            best, best_error = centres, error
        else:
            better = error < best_error
            best[better], best_error[better] = centres[better], error[better]
    return best


def _squared_error(counts: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Per channel: the summed squared distance of every code to its nearest centre."""
    return (counts * np.min(np.abs(_CODES[None, :, None] - centres[:, None, :]), axis=2) ** 2).sum(axis=1)


def _d2_centres(counts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """k-means++ (AMCT's d2sampling): each next centre a code drawn with probability proportional
    to its count times its squared distance to the nearest centre so far."""
    rows = np.arange(counts.shape[0])
    centres = np.empty((counts.shape[0], LEVELS))
    weight = counts.copy()
    for k in range(LEVELS):
        cumulative = np.cumsum(weight, axis=1)
        draw = rng.random(counts.shape[0]) * cumulative[:, -1]
        pick = np.minimum((cumulative < draw[:, None]).sum(axis=1), _CODES.size - 1)
        centres[:, k] = _CODES[pick]
        nearest = np.min(np.abs(_CODES[None, :, None] - centres[:, None, :k + 1]), axis=2)
        weight = counts * nearest ** 2
        done = weight.sum(axis=1) == 0  # fewer distinct codes than centres drawn: repeat the last
        weight[done] = counts[done]
    return centres[rows]


def _initial_centres(counts: np.ndarray, init: str) -> np.ndarray:
    present = counts > 0
    lo = np.where(present.any(1), _CODES[np.argmax(present, axis=1)], 0.0)
    hi = np.where(present.any(1), _CODES[_CODES.size - 1 - np.argmax(present[:, ::-1], axis=1)], 0.0)
    if init == "uniform":
        return lo[:, None] + (hi - lo)[:, None] * np.linspace(0.0, 1.0, LEVELS)[None, :]
    total = counts.sum(1, keepdims=True)
    mean = (counts * _CODES).sum(1, keepdims=True) / total
    std = np.sqrt((counts * (_CODES - mean) ** 2).sum(1, keepdims=True) / total)
    # the standard library's normal quantiles: scipy is not a dependency of the core
    quantiles = np.array([NormalDist().inv_cdf((k + 0.5) / LEVELS) for k in range(LEVELS)])[None, :]
    return np.clip(mean + std * quantiles, lo[:, None], hi[:, None])


def _assign(centres: np.ndarray) -> np.ndarray:
    """The nearest centre of every code, per channel: (channels, 255) indices."""
    return np.argmin(np.abs(_CODES[None, :, None] - centres[:, None, :]), axis=2)


def _lloyd(counts: np.ndarray, centres: np.ndarray, max_iteration: int, min_distance: float) -> np.ndarray:
    """k-means on the weighted code histograms of all channels at once; a centre left without
    codes stays where it is."""
    weighted = counts * _CODES[None, :]
    for _ in range(max_iteration):
        member = _assign(centres)[:, :, None] == np.arange(LEVELS)  # (channels, codes, centres)
        mass = np.einsum("cv,cvk->ck", counts, member)
        moment = np.einsum("cv,cvk->ck", weighted, member)
        updated = np.where(mass > 0, moment / np.maximum(mass, 1e-300), centres)
        step = float(np.max(np.abs(updated - centres)))
        centres = updated
        if step <= min_distance:
            break
    return centres


def _snap(counts: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Centres rounded onto the INT8 grid (those holding codes), every code moved to the nearest:
    the (channels, 255) table of new codes."""
    nearest = _assign(centres)
    used = np.zeros(centres.shape, dtype=bool)
    np.logical_or.at(used, (np.arange(counts.shape[0])[:, None], nearest), counts > 0)
    grid = np.where(used, np.clip(np.rint(centres), -127, 127), np.inf)  # an empty centre must not attract codes
    return np.take_along_axis(grid, _assign(grid), axis=1).astype(np.int64)


def codebook(q: np.ndarray, axis: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Split clustered codes into 4-bit indices (uint8 values 0-15, ``q``'s shape) and the
    per-channel codebook ((channels, 16) int8, unused entries 0) with ``codebook[c, index] == q``.
    Raises ``ConfigError`` when a channel holds more than 16 distinct codes."""
    q = np.asarray(q, dtype=np.int8)
    rows = q.reshape(1, -1) if axis is None else np.moveaxis(q, axis, 0).reshape(q.shape[axis], -1)
    book = np.zeros((rows.shape[0], LEVELS), dtype=np.int8)
    index = np.empty(rows.shape, dtype=np.uint8)
    for c, row in enumerate(rows):
        values, inverse = np.unique(row, return_inverse=True)
        if values.size > LEVELS:
            raise ConfigError(f"channel {c} holds {values.size} distinct weight codes; a 4-bit codebook holds {LEVELS}, "
                              "so only SNQ-clustered weights can be packed.")
        book[c, :values.size] = values
        index[c] = inverse.reshape(-1)
    if axis is None:
        return index.reshape(q.shape), book
    moved_shape = (q.shape[axis],) + tuple(np.delete(q.shape, axis))
    return np.moveaxis(index.reshape(moved_shape), 0, axis), book
