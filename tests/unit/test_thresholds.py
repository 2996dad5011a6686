"""Threshold methods against brute-force NumPy references, plus the range rules they share."""

from __future__ import annotations

import numpy as np
import pytest

from int8kit.calib.histogram import Histogram
from int8kit.errors import CalibrationError, ConfigError
from int8kit.thresholds import METHODS, Target, compute_range
from int8kit.thresholds.aciq import clip_factor

N = 100_000


def _make(kind: str) -> np.ndarray:
    rng = np.random.default_rng({"gauss": 1, "laplace": 2, "relu": 3, "outliers": 4}[kind])
    if kind == "laplace":
        return rng.laplace(0.3, 1.0, N)
    x = rng.normal(0.0, 1.0, N)
    if kind == "relu":
        return np.maximum(x, 0.0)
    if kind == "outliers":  # 0.01 % of the values at 50 sigma, both signs
        idx = rng.choice(N, N // 10_000, replace=False)
        x[idx] = 50.0 * np.where(np.arange(idx.size) % 2 == 0, 1.0, -1.0)
    return x


KINDS = ["gauss", "laplace", "relu", "outliers"]
DATA = {k: _make(k) for k in KINDS}
HISTS = {k: Histogram.from_values(v) for k, v in DATA.items()}
SMALL = {k: Histogram.from_values(v, bins=512) for k, v in DATA.items()}


# ------------------------------------------------------------------ reference implementations


def _q_sym(x: np.ndarray, t: float, qmax: int) -> np.ndarray:
    s = t / qmax
    return np.clip(np.rint(x / s), -qmax, qmax) * s


def _q_asym(x: np.ndarray, lo: float, hi: float, steps: int) -> np.ndarray:
    s = (hi - lo) / steps
    z = np.rint(-lo / s)
    return (np.clip(np.rint(x / s) + z, 0, steps) - z) * s


def _qmax(x: np.ndarray, bits: int = 8) -> int:
    return 2**bits - 1 if x.min() >= 0 else 2 ** (bits - 1) - 1


def _loss_sym(x: np.ndarray, t: float, bits: int = 8) -> float:
    return float(np.mean((x - _q_sym(x, t, _qmax(x, bits))) ** 2))


def _loss_asym(x: np.ndarray, lo: float, hi: float, bits: int = 8) -> float:
    return float(np.mean((x - _q_asym(x, lo, hi, 2**bits - 1)) ** 2))


def _divergence(h: list[np.ndarray], levels: int, i: int, iso: bool, kind: str) -> float:
    """Straightforward P/Q construction for one cut ``i`` over one or two |x| sides."""
    ps, qs = [], []
    for side in h:
        side = side.astype(np.float64)
        p = side[:i].copy()
        p[i - 1] += side[i:].sum()
        k = i // levels
        g = np.minimum(np.arange(i) // k, levels - 1)
        if iso:
            g = np.where(np.arange(i) == 0, 0, g + 1)
        sums = np.bincount(g, weights=side[:i], minlength=levels + 1)
        nonzero = np.bincount(g, weights=(p > 0).astype(float), minlength=levels + 1)
        q = np.where(p > 0, sums[g] / np.maximum(nonzero[g], 1), 0.0)
        ps.append(p)
        qs.append(q)
    p, q = np.concatenate(ps), np.concatenate(qs)
    if q.sum() == 0:
        return np.inf
    p, q = p / p.sum(), q / q.sum()
    if kind == "kl":
        if np.any((p > 0) & (q == 0)):
            return np.inf
        m = p > 0
        return float(np.sum(p[m] * np.log(p[m] / q[m])))
    mid = (p + q) / 2
    a, b = p > 0, q > 0
    return float(0.5 * np.sum(p[a] * np.log(p[a] / mid[a])) + 0.5 * np.sum(q[b] * np.log(q[b] / mid[b])))


def _curve(sides: list[np.ndarray], levels: int, iso: bool, kind: str) -> np.ndarray:
    return np.array([_divergence(sides, levels, i, iso, kind) for i in range(levels, sides[0].size + 1)])


def _best_matching(t: float, curve: np.ndarray, levels: int, h: Histogram) -> float:
    """Smallest reference divergence among the cuts that yield threshold ``t`` after clamping."""
    cuts = np.arange(levels, levels + curve.size)
    thresholds = np.minimum((cuts + 0.5) * h.width, h.absmax)
    match = np.isclose(thresholds, t, rtol=1e-9, atol=0.0)
    assert match.any(), f"threshold {t} is no candidate cut"
    return float(curve[match].min())


# ------------------------------------------------------------------ per-method comparisons


def test_max_returns_observed_extremes() -> None:
    for kind, h in HISTS.items():
        x = DATA[kind]
        lo, hi = compute_range("max", h, Target())
        assert hi == pytest.approx(np.abs(x).max())
        assert lo == (0.0 if kind == "relu" else -hi)
        lo, hi = compute_range("max", h, Target(symmetric=False))
        assert (lo, hi) == (pytest.approx(min(x.min(), 0.0)), pytest.approx(x.max()))


@pytest.mark.parametrize("kind", KINDS)
def test_percentile_matches_numpy(kind: str) -> None:
    h, x = HISTS[kind], DATA[kind]
    _, t = compute_range("percentile", h, Target(), percentile=99.9)
    assert abs(t - np.percentile(np.abs(x), 99.9)) <= 2 * h.width
    lo, hi = compute_range("percentile", h, Target(symmetric=False), percentile=99.9)
    assert abs(hi - np.percentile(x, 99.9)) <= 2 * h.width
    assert abs(lo - min(np.percentile(x, 0.1), 0.0)) <= 2 * h.width


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("iso", [True, False])
def test_kl_is_optimal_under_loop_reference(kind: str, iso: bool) -> None:
    h = SMALL[kind]
    levels = 256 if kind == "relu" else 128
    curve = _curve([h.abs_counts()], levels, iso, "kl")
    _, t = compute_range("kl", h, Target(), isolate_zero=iso)
    assert _best_matching(t, curve, levels, h) <= curve.min() + 1e-12


@pytest.mark.parametrize("kind", ["laplace", "outliers"])
def test_kl_wide_target_coarse_search_is_near_optimal(kind: str) -> None:
    h = HISTS[kind]  # 10 bits: 512 levels x 1537 cuts is searched coarse-to-fine
    curve = _curve([h.abs_counts()], 512, True, "kl")
    _, t = compute_range("kl", h, Target(bits=10))
    assert _best_matching(t, curve, 512, h) <= curve.min() * 1.05 + 1e-9


def test_kl_isolate_zero_keeps_relu_range() -> None:
    h = HISTS["relu"]
    # TensorRT's grouping smears the spike of zeros and clips a ReLU'd Gaussian near 2 sigma
    assert compute_range("kl", h, Target(), isolate_zero=False)[1] < 2.5
    assert compute_range("kl", h, Target())[1] > 3.5


@pytest.mark.parametrize("kind", KINDS)
def test_symkl_is_optimal_under_loop_reference(kind: str) -> None:
    h = SMALL[kind]
    n = h.bins
    levels = 256 if kind == "relu" else 128
    curve = _curve([h.counts[n:], h.counts[:n][::-1]], levels, True, "kl")
    _, t = compute_range("symkl", h, Target())
    assert _best_matching(t, curve, levels, h) <= curve.min() + 1e-12


@pytest.mark.parametrize("kind", KINDS)
def test_jsd_is_near_optimal_under_loop_reference(kind: str) -> None:
    h = SMALL[kind]
    levels = 256 if kind == "relu" else 128
    curve = _curve([h.abs_counts()], levels, True, "jsd")
    _, t = compute_range("jsd", h, Target())
    # coarse-to-fine may land next to the optimum, never far from its divergence
    assert _best_matching(t, curve, levels, h) <= curve.min() * 1.05 + 1e-9


@pytest.mark.parametrize("kind", ["gauss", "laplace", "outliers"])
def test_kl_asymmetric_searches_each_side(kind: str) -> None:
    h = SMALL[kind]
    n = h.bins
    lo, hi = compute_range("kl", h, Target(symmetric=False))
    for side, got in ((h.counts[n:], hi), (h.counts[:n][::-1], -lo)):
        curve = _curve([side], 128, True, "kl")
        top = h.max if side is not None and got == hi else -h.min
        cuts = np.arange(128, 128 + curve.size)
        match = np.isclose(np.minimum((cuts + 0.5) * h.width, top), got, rtol=1e-9)
        assert match.any() and curve[match].min() <= curve.min() + 1e-12


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("bits", [8, 4])
def test_mse_matches_brute_force_on_samples(kind: str, bits: int) -> None:
    x, h = DATA[kind], HISTS[kind]
    _, t = compute_range("mse", h, Target(bits=bits))
    grid = np.linspace(np.abs(x).max() / 300, np.abs(x).max(), 300)
    best = min(_loss_sym(x, g, bits) for g in grid)
    assert _loss_sym(x, t, bits) <= best * 1.01


@pytest.mark.parametrize("kind", ["gauss", "laplace", "outliers"])
def test_mse_asymmetric_matches_brute_force_on_samples(kind: str) -> None:
    x = DATA[kind][:30_000]
    lo, hi = compute_range("mse", Histogram.from_values(x), Target(symmetric=False))
    los = np.linspace(x.min(), 0.0, 41)[:-1]
    his = np.linspace(0.0, x.max(), 41)[1:]
    best = min(_loss_asym(x, a, b) for a in los for b in his)
    assert _loss_asym(x, lo, hi) <= best * 1.03


@pytest.mark.parametrize("kind", KINDS)
def test_admm_is_the_first_fixed_point_of_the_raw_iteration(kind: str) -> None:
    x = np.abs(DATA[kind])
    qmax = _qmax(DATA[kind])

    def step(s: float) -> float:  # one round of the alternating iteration on the raw samples
        q = np.clip(np.rint(x / s), 0, qmax)
        return float(x @ q) / float(q @ q)

    _, t = compute_range("admm", HISTS[kind], Target())
    s = t / qmax
    assert step(s) == pytest.approx(s, rel=0.01)
    # descending from max|x| the iteration meets no other fixed point before s
    for above in np.linspace(s * 1.03, 0.99 * x.max() / qmax, 25):
        assert step(above) < above


def test_aciq_constants_match_the_paper() -> None:
    laplace = [2.83, 3.89, 5.03, 6.20, 7.41, 8.64, 9.89, 11.16]
    gauss = [1.71, 2.15, 2.55, 2.94, 3.29, 3.61, 3.92, 4.20]
    for m, (cl, cg) in enumerate(zip(laplace, gauss), start=2):
        assert clip_factor("laplace", m) == pytest.approx(cl, abs=0.01)
        assert clip_factor("gauss", m) == pytest.approx(cg, abs=0.02)
    assert clip_factor("laplace", 16) > clip_factor("laplace", 12) > clip_factor("laplace", 9)


@pytest.mark.parametrize("kind", KINDS)
def test_aciq_matches_closed_formula_from_sample_moments(kind: str) -> None:
    x, h = DATA[kind], HISTS[kind]
    if kind == "relu":  # one-sided: mirrored moments, one extra bit (see aciq.py)
        lap, gau = 11.16 * np.mean(x), 4.216 * np.sqrt(np.mean(x**2))
    else:
        mu = x.mean()
        lap = abs(mu) + 9.89 * np.mean(np.abs(x - mu))
        gau = abs(mu) + 3.924 * x.std()
    top = x.max() if kind == "relu" else np.abs(x).max()
    assert compute_range("aciq_laplace", h, Target())[1] == pytest.approx(min(lap, top), rel=0.01)
    assert compute_range("aciq_gauss", h, Target())[1] == pytest.approx(min(gau, top), rel=0.01)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("symmetric", [True, False])
def test_ifmr_matches_brute_force_on_samples(kind: str, symmetric: bool) -> None:
    x, h = DATA[kind], HISTS[kind]
    p = 0.9999
    lo, hi = compute_range("ifmr", h, Target(symmetric=symmetric), max_percentile=p, min_percentile=p)
    max0, min0 = max(np.quantile(x, p), 0.0), min(np.quantile(x, 1 - p), 0.0)
    factors = np.arange(0.7, 1.3 + 1e-9, 0.01)
    if symmetric:
        start, top = max(-min0, max0), (x.max() if kind == "relu" else np.abs(x).max())
        best = min(_loss_sym(x, min(f * start, top)) for f in factors)
        assert _loss_sym(x, hi) <= best * 1.01
    else:
        best = min(_loss_asym(x, max(f * min0, x.min()), min(f * max0, x.max())) for f in factors)
        assert _loss_asym(x, lo, hi) <= best * 1.01


# ------------------------------------------------------------------ properties


@pytest.mark.parametrize("method", ["kl", "symkl", "jsd", "percentile"])
def test_outliers_are_clipped(method: str) -> None:
    h = HISTS["outliers"]
    _, t = compute_range(method, h, Target())
    assert t < 0.2 * h.absmax


def test_mse_clips_outliers_only_when_levels_are_scarce() -> None:
    h = HISTS["outliers"]
    # at 8 bits keeping 0.01 % of values at 50 sigma costs less error than clipping them
    assert compute_range("mse", h, Target(bits=8))[1] > 0.5 * h.absmax
    assert compute_range("mse", h, Target(bits=4))[1] < 0.2 * h.absmax


@pytest.mark.parametrize("method", sorted(METHODS))
@pytest.mark.parametrize("bits", [2, 4, 8, 12, 16])
def test_ranges_obey_the_shared_rules(method: str, bits: int) -> None:
    for kind, h in HISTS.items():
        lo, hi = compute_range(method, h, Target(bits=bits))
        assert 0.0 < hi <= h.absmax + 1e-12
        assert lo == (0.0 if kind == "relu" else -hi)
        lo, hi = compute_range(method, h, Target(bits=bits, symmetric=False))
        assert min(h.min, 0.0) - 1e-12 <= lo <= 0.0 <= hi <= max(h.max, 0.0) + 1e-12
        assert hi > lo
        if kind == "relu":
            assert lo == 0.0


@pytest.mark.parametrize("method", sorted(METHODS))
def test_all_zero_histogram(method: str) -> None:
    h = Histogram.from_values(np.zeros(1000))
    lo, hi = compute_range(method, h, Target())
    assert lo == 0.0 and hi > 0.0
    lo, hi = compute_range(method, h, Target(symmetric=False))
    assert lo <= 0.0 < hi


def test_names_and_aliases() -> None:
    h = HISTS["gauss"]
    assert set(METHODS) == {
        "max", "percentile", "kl", "symkl", "jsd", "mse", "admm", "aciq_laplace", "aciq_gauss", "ifmr", "auto",
    }
    assert compute_range("PERCENTILE9999", h, Target()) == compute_range(
        "percentile", h, Target(), percentile=99.99
    )
    assert compute_range("percentile999", h, Target()) == compute_range(
        "percentile", h, Target(), percentile=99.9
    )
    assert compute_range("ACIQ", h, Target()) == compute_range("aciq_laplace", h, Target())
    assert compute_range("KL", h, Target()) == compute_range("kl", h, Target())
    assert compute_range("Sym-KL", h, Target()) == compute_range("symkl", h, Target())


def test_errors() -> None:
    h = HISTS["gauss"]
    with pytest.raises(ConfigError, match="symkl"):
        compute_range("entropy2", h, Target())
    with pytest.raises(ConfigError, match="search_step"):
        compute_range("ifmr", h, Target(), step=0.1)
    with pytest.raises(ConfigError, match="none"):
        compute_range("max", h, Target(), percentile=99.0)
    with pytest.raises(ConfigError, match="percentile"):
        compute_range("percentile", h, Target(), percentile=150)
    with pytest.raises(ConfigError, match="search_range"):
        compute_range("ifmr", h, Target(), search_range=(1.3, 0.7))
    with pytest.raises(ConfigError, match="implies"):
        compute_range("PERCENTILE9999", h, Target(), percentile=99.0)
    with pytest.raises(ConfigError, match="bits"):
        Target(bits=17)
    with pytest.raises(ConfigError, match="bits"):
        Target(bits=1)
    empty = Histogram(counts=np.zeros(64, dtype=np.int64), edge=1.0, min=0.0, max=0.0)
    with pytest.raises(CalibrationError, match="empty"):
        compute_range("kl", empty, Target())


def test_ifmr_takes_the_manuals_cfg_names_and_a_step_as_wide_as_the_range() -> None:
    h = HISTS["gauss"]
    assert compute_range("ifmr", h, Target(), search_range_start=0.5, search_range_end=0.6, search_step=0.1) == \
        compute_range("ifmr", h, Target(), search_range=(0.5, 0.6), search_step=0.1)  # 0.6 - 0.5 < 0.1 in floats
    assert compute_range("ifmr", h, Target(), search_range_end=0.8) == \
        compute_range("ifmr", h, Target(), search_range=(0.7, 0.8))
    with pytest.raises(ConfigError, match="search_step"):
        compute_range("ifmr", h, Target(), search_range=(0.5, 0.6), search_step=0.1001)
    with pytest.raises(ConfigError, match="give the range one way"):
        compute_range("ifmr", h, Target(), search_range=(0.7, 1.3), search_range_start=0.8)
