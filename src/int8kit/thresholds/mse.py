"""``mse``: the range that minimises the expected squared quantization error.

The error counted is everything the quantized tensor gets wrong: rounding inside the range and
saturation of the values beyond it. A small range rounds finely but clips much; a wide one clips
nothing but rounds coarsely; the minimum lies in between.

Symmetric targets: the error of a candidate ``T`` is computed exactly on the ``|x|`` histogram
(values uniform within their bin, see :mod:`int8kit.thresholds._error`) for the target's real
grid (``0..127`` steps of ``T/127`` for INT8, ``0..255`` for unsigned), and ``T`` is searched
coarse-to-fine over ``(0, max|x|]`` (two passes of 64 candidates, about one bin apart).

Asymmetric targets search ``lo`` and ``hi`` jointly on a 2-D grid, twice (coarse then around
the best pair). To keep that cheap, the rounding part uses the classic ``step**2 / 12`` per
in-range value, while the saturation part stays exact; the two separate into per-``lo`` and
per-``hi`` sums, so the grid costs O(grid) after O(candidates x edges) work. The rounding model
is accurate when a step is small against the spread of the data (8 bits and more); at very low
bit widths the asymmetric result is approximate. Unsigned tensors (``min >= 0``) get ``lo = 0``
and the exact 1-D search.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from int8kit.calib.histogram import Histogram
from int8kit.thresholds._error import coarse_to_fine, edge_weights, expected_error
from int8kit.thresholds.base import Target, finish, is_unsigned, qmax, register

_GRID = 64  # per axis and pass of the asymmetric 2-D search


def symmetric_error_fn(hist: Histogram, steps: int) -> Callable[[np.ndarray], np.ndarray]:
    """Function mapping thresholds ``T`` (1-D array) to expected error on the ``|x|`` histogram."""
    edges, weights = edge_weights(hist.abs_counts(), 0.0, hist.width)

    def evaluate(t: np.ndarray) -> np.ndarray:
        t = np.asarray(t, dtype=np.float64)
        return expected_error(edges, weights, np.zeros_like(t), t, steps)

    return evaluate


@register("mse", aliases=("l2", "min_mse"))
def mse(hist: Histogram, target: Target) -> tuple[float, float]:
    """Minimise expected squared error (rounding plus clipping) over the clipping range."""
    if target.symmetric or is_unsigned(hist):
        limit = hist.max if is_unsigned(hist) else hist.absmax
        steps = qmax(hist, target) if target.symmetric else 2 ** int(target.bits) - 1
        if limit <= 0.0:
            return finish(0.0, 0.0, hist, target)
        t = coarse_to_fine(symmetric_error_fn(hist, steps), 0.0, limit)
        return finish(0.0, t, hist, target)
    return finish(*_asymmetric(hist, 2 ** int(target.bits) - 1), hist, target)


def _asymmetric(hist: Histogram, steps: int) -> tuple[float, float]:
    edges, weights = edge_weights(hist.counts, -hist.edge, hist.width)
    floor_, ceil_ = min(hist.min, 0.0), max(hist.max, 0.0)

    def below(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:  # count <= a, clip error at lo=a
        d = a[:, None] - edges[None, :]
        count = np.minimum(edges[None, :], a[:, None]) @ weights
        return count, -(np.maximum(d, 0.0) ** 3 / 3.0) @ weights

    def above(b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        d = edges[None, :] - b[:, None]
        count = np.minimum(edges[None, :], b[:, None]) @ weights
        return count, (np.maximum(d, 0.0) ** 3 / 3.0) @ weights

    def grid_error(los: np.ndarray, his: np.ndarray) -> np.ndarray:
        count_lo, clip_lo = below(los)
        count_hi, clip_hi = above(his)
        span = his[None, :] - los[:, None]
        inside = np.maximum(count_hi[None, :] - count_lo[:, None], 0.0)
        err = inside * (span / steps) ** 2 / 12.0 + clip_lo[:, None] + clip_hi[None, :]
        return np.where(span > 0, err, np.inf)

    los, his = np.linspace(floor_, 0.0, _GRID), np.linspace(0.0, ceil_, _GRID)
    for _ in range(2):
        err = grid_error(los, his)
        i, j = np.unravel_index(int(np.argmin(err)), err.shape)
        best = (float(los[i]), float(his[j]))
        los = _around(los, i)
        his = _around(his, j)
    return best


def _around(grid: np.ndarray, k: int) -> np.ndarray:
    """A finer grid spanning the neighbours of ``grid[k]``."""
    left = grid[max(k - 1, 0)]
    right = grid[min(k + 1, grid.size - 1)]
    return np.linspace(left, right, _GRID)
