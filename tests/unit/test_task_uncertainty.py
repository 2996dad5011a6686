"""Score intervals and the paired drop: known values, coverage on simulated data, pairing."""

from __future__ import annotations

import re

import numpy as np
import pytest
from scipy import stats

from int8kit.errors import DataError
from int8kit.evaluate.uncertainty import Paired, Score, drop, newcombe_paired, score_with_interval, wilson


def _score(values: np.ndarray, key=(0, 0, 1), binary: bool | None = None) -> Score:
    binary = bool(np.isin(values, (0, 1)).all()) if binary is None else binary
    return score_with_interval("m", float(values.mean()), len(values), Paired(key, values.astype(float), None, binary))


def test_wilson_matches_scipy() -> None:
    for hits, n in ((90, 100), (0, 50), (50, 50), (233, 256)):
        ci = stats.binomtest(hits, n).proportion_ci(confidence_level=0.95, method="wilson")
        assert wilson(hits, n) == pytest.approx((ci.low, ci.high), abs=1e-9)


def test_wilson_interval_covers_the_true_accuracy_about_95_percent_of_the_time() -> None:
    rng = np.random.default_rng(1)
    p, n, trials = 0.85, 200, 2000
    hits = rng.binomial(n, p, size=trials)
    covered = np.mean([lo <= p <= hi for lo, hi in (wilson(h, n) for h in hits)])
    assert 0.93 <= covered <= 0.97


def test_bootstrap_interval_covers_the_true_mean_about_95_percent_of_the_time() -> None:
    rng = np.random.default_rng(2)
    covered = []
    for _ in range(150):
        values = rng.beta(8, 2, size=120)  # skewed per-sample values (like cosines), mean 0.8
        s = _score(values)
        assert s.method == "bootstrap" and s.low < s.value < s.high
        covered.append(s.low <= 0.8 <= s.high)
    assert 0.88 <= np.mean(covered) <= 0.99


def test_paired_drop_covers_the_true_drop_and_is_narrower_than_unpaired() -> None:
    rng = np.random.default_rng(3)
    n, covered, widths, unpaired = 256, [], [], []
    for _ in range(600):
        fp = rng.random(n) < 0.9
        q = fp & (rng.random(n) > 0.02)  # INT8 loses 2 % of FP32's hits: true drop 0.9 * 0.02 = 0.018
        lo, hi = newcombe_paired(fp, q)
        covered.append(lo <= 0.018 <= hi)
        widths.append(hi - lo)
        (a, b), (c, d) = wilson(fp.sum(), n), wilson(q.sum(), n)
        unpaired.append(np.hypot(b - a, d - c))
    assert 0.92 <= np.mean(covered) <= 0.995
    assert np.mean(widths) < 0.5 * np.mean(unpaired)  # both models see the same samples


def test_drop_methods_and_significance() -> None:
    fp = np.array([1] * 90 + [0] * 10)
    same = drop(_score(fp), _score(fp.copy()))
    assert same.value == 0 and same.method == "newcombe" and not same.significant
    worse = fp.copy()
    worse[:30] = 0
    d = drop(_score(fp), _score(worse))
    assert d.value == pytest.approx(0.3) and d.significant and d.low > 0.15
    rel = drop(_score(fp), _score(worse), relative=True)
    assert rel.value == pytest.approx(0.3 / 0.9) and rel.method == "bootstrap" and rel.low < rel.value < rel.high
    cos = np.linspace(0.9, 1.0, 100)
    dc = drop(_score(cos), _score(cos - 0.01))
    assert dc.method == "bootstrap" and dc.value == pytest.approx(0.01) and dc.low == pytest.approx(0.01)


def test_drop_refuses_scores_of_different_samples() -> None:
    with pytest.raises(DataError, match="different samples"):
        drop(_score(np.ones(10), key=(0, 10, 1)), _score(np.ones(10), key=(10, 20, 1)))


def test_score_text() -> None:
    s = _score(np.array([1] * 233 + [0] * 23))
    assert re.fullmatch(r"0\.910 ± 0\.03\d \(n=256\)", str(s))
    assert "95 % interval" in str(_score(np.ones(50)))  # at 1.0 the interval is lopsided: both ends shown
    assert "no interval" in str(score_with_interval("m", 0.5, 10, Paired(None)))
    assert Score(float("nan"), 0).to_dict()["value"] is None
