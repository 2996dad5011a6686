"""``admm``: alternating minimisation of ``||x - s*q||^2`` over the scale and the integers.

The vendor's ADMM method is not described publicly; int8kit defines it as the classic
alternating scheme for least-squares quantization (each step can only lower the error):

1. fix the scale ``s`` and quantize: ``q = clip(round(x / s), qmin, qmax)``;
2. fix ``q`` and solve for the scale in closed form: ``s = <x, q> / <q, q>``;

starting from ``s0 = max|x| / qmax``. The threshold is ``T = s * qmax``. Unlike ``mse``'s global
search this finds the local optimum nearest the max-range start, which keeps rare but large
values in range more often.

Symmetric targets (the ``|x|`` histogram; the grid is symmetric): on smooth data the iteration
creeps down by tiny steps and needs thousands of rounds, and on bin centres it stalls early. So
int8kit computes its limit directly: with values uniform inside their bins, ``g(s) = <x,q>/<q,q>``
is a continuous function of ``s`` (closed form per bin edge), the iteration from ``s0`` descends
to the largest fixed point ``s = g(s)`` below ``s0``, and that point is found by scanning ``s``
downwards in 2 % steps and bisecting the first crossing. ``max_iter``/``tol`` do not apply here.

Asymmetric targets model ``x ~ s * (q - z)`` with ``q`` in ``0..2**bits-1`` and an integer zero
point ``z`` (so zero stays exact) and run the iteration itself on the bin centres, at most
``max_iter`` rounds or until ``s`` moves by less than ``tol`` (relative). Step 2 becomes a
least-squares line fit ``x ~ s*q + c``, then ``z = round(-c / s)`` and ``s`` is refitted for that
``z``. Rounding ``z`` can make a round worse, so the best ``(s, z)`` seen is kept. The range is
``(-s*z, s*(L - z))``. Like the raw iteration it may stop short of the true fixed point.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from int8kit.calib.histogram import Histogram
from int8kit.errors import ConfigError
from int8kit.thresholds._error import edge_weights
from int8kit.thresholds.base import Target, finish, is_unsigned, qmax, register

_RATIO = 0.98  # scan spacing of the fixed-point search
_SCAN = 208  # scan points: down to about s0 / 64


@register("admm")
def admm(hist: Histogram, target: Target, *, max_iter: int = 100, tol: float = 1e-6) -> tuple[float, float]:
    """Alternate rounding and closed-form scale fitting until the scale settles."""
    if isinstance(max_iter, bool) or not isinstance(max_iter, (int, np.integer)) or max_iter < 1:
        raise ConfigError(f"admm max_iter must be a positive integer, got {max_iter!r}; the default is 100.")
    if not isinstance(tol, (int, float)) or not tol > 0.0:
        raise ConfigError(f"admm tol must be a positive number, got {tol!r}; the default is 1e-6.")
    if target.symmetric or is_unsigned(hist):
        steps = qmax(hist, target) if target.symmetric else 2 ** int(target.bits) - 1
        return finish(0.0, _fit_scale(hist, steps) * steps, hist, target)
    keep = hist.counts > 0
    lo, hi = _fit_offset(
        hist.centers()[keep], hist.counts[keep].astype(np.float64), hist,
        2 ** int(target.bits) - 1, int(max_iter), float(tol),
    )
    return finish(lo, hi, hist, target)


def _scale_map(edges: np.ndarray, weights: np.ndarray, steps: int) -> Callable[[np.ndarray], np.ndarray]:
    """``g(s) = <x, q> / <q, q>`` with ``q = clip(round(x/s), 0, steps)``, values uniform in bins.

    Both inner products are integrals of piecewise-polynomial functions; with ``m`` the level of
    ``x`` their antiderivatives are ``s^2 (m-1)m(2m-1)/6 + m (x^2 - ((m-1/2)s)^2) / 2`` and
    ``s (m-1)m(2m-1)/6 + m^2 (x - (m-1/2)s)``, evaluated once per bin edge.
    """

    def g(s: np.ndarray) -> np.ndarray:
        s2 = np.asarray(s, dtype=np.float64).reshape(-1, 1)
        m = np.clip(np.rint(edges / s2), 0, steps)
        cells = (m - 1.0) * m * (2.0 * m - 1.0) / 6.0
        start = (m - 0.5) * s2
        num = (s2 * s2 * cells + m * (edges * edges - start * start) / 2.0) @ weights
        den = (s2 * cells + m * m * (edges - start)) @ weights
        return np.divide(num, den, out=np.zeros_like(num), where=den > 0)

    return g


def _fit_scale(hist: Histogram, steps: int) -> float:
    """Largest fixed point ``s = g(s)`` at or below ``s0 = max|x| / steps``; 0 for all-zero data."""
    top = hist.max if is_unsigned(hist) else hist.absmax
    if not top > 0.0:
        return 0.0
    edges, weights = edge_weights(hist.abs_counts(), 0.0, hist.width)
    g = _scale_map(edges, weights, steps)
    s0 = top / steps
    if g(np.array([s0]))[0] >= s0:
        return s0
    # scan downwards in 2 % steps, a chunk at a time, for the first point where g(s) >= s
    above = s0
    for first in range(0, _SCAN, 16):
        grid = s0 * _RATIO ** np.arange(first + 1, first + 17)
        hit = np.nonzero(g(grid) >= grid)[0]
        if hit.size:
            below = float(grid[hit[0]])
            above = float(grid[hit[0] - 1]) if hit[0] > 0 else above
            break
        above = float(grid[-1])
    else:
        return above
    for _ in range(40):  # bisection: g(below) >= below, g(above) < above
        mid = 0.5 * (above + below)
        if g(np.array([mid]))[0] >= mid:
            below = mid
        else:
            above = mid
    return 0.5 * (above + below)


def _fit_offset(
    x: np.ndarray, w: np.ndarray, hist: Histogram, steps: int, max_iter: int, tol: float
) -> tuple[float, float]:
    """Range of the asymmetric problem ``x ~ s * (q - z)``."""
    lo0, hi0 = min(hist.min, 0.0), max(hist.max, 0.0)
    if not hi0 - lo0 > 0.0:
        return 0.0, 0.0
    s = (hi0 - lo0) / steps
    z = float(np.clip(np.rint(-lo0 / s), 0, steps))
    best = (np.inf, s, z)
    for _ in range(max_iter):
        q = np.clip(np.rint(x / s) + z, 0, steps)
        err = float(w @ (x - s * (q - z)) ** 2)
        if err < best[0]:
            best = (err, s, z)
        # weighted least-squares line x ~ a*q + c
        wsum = w.sum()
        qm, xm = float(w @ q) / wsum, float(w @ x) / wsum
        var = float(w @ (q - qm) ** 2)
        if var <= 0.0:
            break
        a = float(w @ ((q - qm) * (x - xm))) / var
        if not a > 0.0:
            break
        c = xm - a * qm
        z = float(np.clip(np.rint(-c / a), 0, steps))
        d = q - z
        new = float(w @ (x * d)) / float(w @ (d * d)) if float(w @ (d * d)) > 0 else a
        done = abs(new - s) <= tol * s
        s = new
        if done:
            break
    q = np.clip(np.rint(x / s) + z, 0, steps)
    err = float(w @ (x - s * (q - z)) ** 2)
    if err < best[0]:
        best = (err, s, z)
    _, s, z = best
    return -s * z, s * (steps - z)
