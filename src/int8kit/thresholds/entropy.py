"""Divergence-based thresholds: ``kl`` (TensorRT entropy calibration), ``symkl`` and ``jsd``.

All three compare, for every candidate cut ``i`` (in bins), the clipped histogram ``P`` with what
survives quantization, ``Q``, and keep the cut with the smallest divergence:

* ``P`` = the first ``i`` bins, with every value beyond the cut (the outliers) added to the last
  bin, because clipping maps them there.
* ``Q`` = the same first ``i`` bins (without the outliers) merged into ``L`` equal groups (the
  quantized levels; the last group takes the remainder of ``i // L``), each group's count then
  spread evenly over the positions where ``P`` is non-zero. Empty bins stay empty, so ``Q`` only
  differs from ``P`` by the resolution lost to quantization.
* The threshold is ``(i + 0.5) * width`` as in TensorRT, then clamped to the observation.
* ``isolate_zero`` (default true, our one departure from TensorRT): the first bin, ``|x| < width``,
  is a group of its own. Zero is exactly representable and every value in that bin rounds to it
  once a level spans two bins or more, so it must not be smeared over its neighbours; without
  this, the spike of exact zeros after a ReLU makes every cut wider than ``2 L`` bins look
  terrible and the method clips far too much (about 2 sigma on a ReLU'd Gaussian).
  ``isolate_zero=False`` reproduces TensorRT bit for bit.

Candidates run from ``i = L`` to the number of bins per side; ``L`` is ``2**(bits-1)`` for a
signed tensor (128 for INT8) and ``2**bits`` for an unsigned one. When ``L`` exceeds the bins, the
histogram cannot see any quantization loss and the observed maximum is returned.

``kl`` works on the ``|x|`` histogram and ``KL(P||Q) = sum p log(p/q)`` (``0 log 0 = 0``). A
candidate where ``P > 0`` but ``Q = 0`` (the last group is empty yet receives outliers) has
infinite divergence and is never chosen. It is fully vectorised: per group only sums of ``h``,
``h log h`` and of the non-zero count are needed, so prefix sums give every candidate in
O(L) each. Every cut is tried while candidates x ``L`` stays below 500k (all 8-bit and 9-bit
signed cases); wider targets use the coarse-to-fine search described for ``jsd``.

``symkl`` (the vendor's SYMKL; no public description of it exists, so this is our definition)
keeps the sign: ``P`` and ``Q`` are built on the *signed* histogram over ``[-T, T]``, each side
grouped into its own ``L`` levels (groups never straddle zero) with the outliers of each side in
that side's end bin. For skewed tensors this stops one side's shape from hiding the other's;
for unsigned tensors it equals ``kl``.

``jsd`` replaces KL by the Jensen-Shannon divergence ``(KL(p||m) + KL(q||m)) / 2`` with
``m = (p + q) / 2``, which is finite and symmetric. It needs every bin of every candidate, so
the candidates are searched coarse-to-fine: every ``s``-th cut first (``s`` chosen for about 64
of them), then every cut within ``s`` of the best.

Asymmetric targets: each side is searched on its own as a ``|x|`` histogram (the negative side
mirrored) with ``2**(bits-1)`` levels, giving ``lo = -T_neg`` and ``hi = T_pos``; an unsigned
tensor gets ``lo = 0`` and ``hi`` from the positive side with ``2**bits`` levels.
"""

from __future__ import annotations

import logging
from typing import Callable

import numpy as np

from int8kit.calib.histogram import Histogram
from int8kit.errors import ConfigError
from int8kit.thresholds.base import (
    Target,
    finish,
    is_unsigned,
    levels_per_side,
    register,
    side_counts,
)

log = logging.getLogger(__name__)

_EXHAUSTIVE = 500_000  # candidates x levels up to which KL tries every cut


def _xlogx(h: np.ndarray) -> np.ndarray:
    out = np.zeros_like(h, dtype=np.float64)
    pos = h > 0
    out[pos] = h[pos] * np.log(h[pos])
    return out


def _bounds(levels: int, cands: np.ndarray, isolate_zero: bool) -> np.ndarray:
    """Group boundaries (in bins) per candidate; the last group takes the remainder."""
    k = cands // levels
    bounds = k[:, None] * np.arange(levels + 1)[None, :]
    bounds[:, -1] = cands
    if isolate_zero:
        ones = np.ones((cands.size, 1), dtype=bounds.dtype)
        bounds = np.concatenate((bounds[:, :1], ones, bounds[:, 1:]), axis=1)
    return bounds


def _group_of(levels: int, cands: np.ndarray, width: int, isolate_zero: bool) -> np.ndarray:
    """Group index of every bin position ``0..width-1`` per candidate (matches :func:`_bounds`)."""
    j = np.arange(width)[None, :]
    group = np.minimum(j // (cands // levels)[:, None], levels - 1)
    if isolate_zero:
        group = np.where(j == 0, 0, group + 1)
    return group


def _groups(
    h: np.ndarray, levels: int, cands: np.ndarray, isolate_zero: bool
) -> tuple[np.ndarray, ...]:
    """Per candidate and group: sliced count ``S``, count of ``P`` and non-zero positions ``n``."""
    c = np.concatenate(([0.0], np.cumsum(h, dtype=np.float64)))
    nz = np.concatenate(([0], np.cumsum(h > 0)))
    bounds = _bounds(levels, cands, isolate_zero)
    s = np.diff(c[bounds], axis=1)
    n = np.diff(nz[bounds], axis=1).astype(np.float64)
    out = c[-1] - c[cands]
    p = s.copy()
    p[:, -1] += out
    # the last bin becomes non-zero in P when it was empty but receives the outliers
    n[:, -1] += (h[cands - 1] == 0) & (out > 0)
    return s, p, n, out


def _kl_terms(
    h: np.ndarray, levels: int, cands: np.ndarray, isolate_zero: bool
) -> tuple[np.ndarray, np.ndarray]:
    """``sum P log P - sum P log Q`` (unnormalised) and the mass of ``Q`` for every candidate."""
    s, p, n, out = _groups(h, levels, cands, isolate_zero)
    hlogh = np.concatenate(([0.0], np.cumsum(_xlogx(h))))
    last = h[cands - 1] + out
    plogp = hlogh[cands - 1] + _xlogx(last)
    with np.errstate(divide="ignore", invalid="ignore"):
        logq = np.log(s / n)
        plogq = np.where(p > 0, p * logq, 0.0)
    plogq = np.where((p > 0) & (s == 0), -np.inf, plogq)
    return plogp - plogq.sum(axis=1), s.sum(axis=1)


def _kl_curve(
    sides: list[np.ndarray], levels: int, cands: np.ndarray, isolate_zero: bool
) -> np.ndarray:
    """KL divergence of every candidate, the sides sharing one normalisation (symkl)."""
    total = sum(float(h.sum()) for h in sides)
    a = np.zeros(cands.size)
    mass = np.zeros(cands.size)
    for h in sides:
        if h.sum() > 0:
            terms, q = _kl_terms(h.astype(np.float64), levels, cands, isolate_zero)
            a += terms
            mass += q
    with np.errstate(divide="ignore", invalid="ignore"):
        kl = a / total + np.log(mass / total)
    return np.where(np.isnan(kl) | (mass <= 0), np.inf, kl)


def _jsd_curve(h: np.ndarray, levels: int, cands: np.ndarray, isolate_zero: bool) -> np.ndarray:
    """Jensen-Shannon divergence of every candidate (one ``|x|`` side)."""
    h = h.astype(np.float64)
    s, _, n, out = _groups(h, levels, cands, isolate_zero)
    width = int(cands.max())
    j = np.arange(width)[None, :]
    inside = j < cands[:, None]
    group = _group_of(levels, cands, width, isolate_zero)
    p = np.where(inside, h[np.minimum(j, h.size - 1)], 0.0)
    p[np.arange(cands.size), cands - 1] += out
    with np.errstate(divide="ignore", invalid="ignore"):
        per_pos = np.take_along_axis(s / n, group, axis=1)
    q = np.where(p > 0, np.nan_to_num(per_pos), 0.0)
    p /= p.sum(axis=1, keepdims=True)
    qsum = q.sum(axis=1, keepdims=True)
    q = np.divide(q, qsum, out=np.zeros_like(q), where=qsum > 0)
    m = 0.5 * (p + q)
    with np.errstate(divide="ignore", invalid="ignore"):
        tp = np.where(p > 0, p * np.log(p / m), 0.0)
        tq = np.where(q > 0, q * np.log(q / m), 0.0)
    jsd = 0.5 * (tp.sum(axis=1) + tq.sum(axis=1))
    return np.where(qsum[:, 0] > 0, jsd, np.inf)


def _search(
    curve: Callable[[np.ndarray], np.ndarray], n_bins: int, levels: int, coarse: bool
) -> int | None:
    """Best cut in bins, or ``None`` when there are fewer bins than levels."""
    if levels > n_bins:
        log.debug("%d levels exceed %d histogram bins; keeping the observed maximum", levels, n_bins)
        return None
    cands = np.arange(levels, n_bins + 1)
    # exhaustive while cheap (every 8-bit case); wide targets (10+ bits) go coarse-to-fine
    if (not coarse and cands.size * levels <= _EXHAUSTIVE) or cands.size <= 96:
        return int(cands[int(np.argmin(curve(cands)))])
    stride = -(-cands.size // 64)
    first = cands[::stride]
    best = int(first[int(np.argmin(curve(first)))])
    near = cands[(cands >= best - stride) & (cands <= best + stride)]
    return int(near[int(np.argmin(curve(near)))])


def _side_threshold(h: np.ndarray, width: float, levels: int, jsd: bool, iso: bool) -> float:
    if h.sum() <= 0:
        return 0.0
    if jsd:
        cut = _search(lambda c: _jsd_curve(h, levels, c, iso), h.size, levels, coarse=True)
    else:
        cut = _search(lambda c: _kl_curve([h], levels, c, iso), h.size, levels, coarse=False)
    return float("inf") if cut is None else (cut + 0.5) * width


def _per_side(hist: Histogram, target: Target, jsd: bool, iso: bool) -> tuple[float, float]:
    if is_unsigned(hist):
        hi = _side_threshold(side_counts(hist, False), hist.width, 2 ** int(target.bits), jsd, iso)
        return finish(0.0, hi, hist, target)
    levels = 2 ** (int(target.bits) - 1)
    hi = _side_threshold(side_counts(hist, False), hist.width, levels, jsd, iso)
    lo = -_side_threshold(side_counts(hist, True), hist.width, levels, jsd, iso)
    return finish(lo, hi, hist, target)


@register("kl", aliases=("entropy", "kld", "kl_divergence"))
def kl(hist: Histogram, target: Target, *, isolate_zero: bool = True) -> tuple[float, float]:
    """TensorRT-style entropy calibration: minimise KL(P||Q) on the ``|x|`` histogram."""
    return _abs_divergence(hist, target, jsd=False, iso=_check_flag(isolate_zero))


@register("symkl", aliases=("sym_kl", "symmetric_kl"))
def symkl(hist: Histogram, target: Target, *, isolate_zero: bool = True) -> tuple[float, float]:
    """KL(P||Q) on the signed histogram with one symmetric cut, each side quantized separately."""
    iso = _check_flag(isolate_zero)
    if not target.symmetric:
        return _per_side(hist, target, jsd=False, iso=iso)
    levels = levels_per_side(hist, target)
    sides = [side_counts(hist, False).astype(np.float64), side_counts(hist, True).astype(np.float64)]
    cut = _search(lambda c: _kl_curve(sides, levels, c, iso), hist.bins, levels, coarse=False)
    t = float("inf") if cut is None else (cut + 0.5) * hist.width
    return finish(0.0, t, hist, target)


@register("jsd", aliases=("js", "jensen_shannon"))
def jsd(hist: Histogram, target: Target, *, isolate_zero: bool = True) -> tuple[float, float]:
    """Like ``kl`` but minimising the Jensen-Shannon divergence (coarse-to-fine over cuts)."""
    return _abs_divergence(hist, target, jsd=True, iso=_check_flag(isolate_zero))


def _abs_divergence(hist: Histogram, target: Target, *, jsd: bool, iso: bool) -> tuple[float, float]:
    """One cut on the ``|x|`` histogram (symmetric targets), or one cut per side (asymmetric)."""
    if not target.symmetric:
        return _per_side(hist, target, jsd=jsd, iso=iso)
    levels = levels_per_side(hist, target)
    t = _side_threshold(hist.abs_counts(), hist.width, levels, jsd=jsd, iso=iso)
    return finish(0.0, t, hist, target)


def _check_flag(value: object) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise ConfigError(f"isolate_zero must be true or false, got {value!r}; the default is true.")
    return bool(value)
