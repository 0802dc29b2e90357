"""Every statistic against scipy / statsmodels or its textbook formula, on randomized inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as hs
from scipy import stats as sps

from bertcurve.curves import stats as st


def ar1(n: int, rho: float, rng: np.random.Generator) -> np.ndarray:
    e = rng.normal(size=n)
    out = np.empty(n)
    out[0] = e[0] / math.sqrt(1 - rho * rho)
    for i in range(1, n):
        out[i] = rho * out[i - 1] + e[i]
    return out


def curve(n: int, seed: int, rho: float = 0.0, noise: float = 0.03) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = np.arange(1, n + 1, dtype=float) * 100
    y = 0.7 - 0.5 * (x / 1000) ** -0.4 + noise * (ar1(n, rho, rng) * math.sqrt(1 - rho * rho) if rho else rng.normal(size=n))
    return x, y


@settings(max_examples=25, deadline=None)
@given(n=hs.integers(5, 200), seed=hs.integers(0, 10_000), level=hs.sampled_from([0.8, 0.9, 0.95, 0.99]))
def test_correlations_match_scipy(n, seed, level):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n).cumsum()
    y = 0.3 * x + rng.normal(size=n)
    p = st.pearson(x, y, level)
    assert p.statistic == pytest.approx(np.corrcoef(x, y)[0, 1], abs=1e-12)
    ref = sps.pearsonr(x, y)
    assert p.pvalue == pytest.approx(ref.pvalue, rel=1e-9, abs=1e-300)
    # Fisher z by hand
    z = math.atanh(p.statistic)
    half = sps.norm.ppf(0.5 + level / 2) / math.sqrt(n - 3)
    assert p.confidence_interval() == pytest.approx((math.tanh(z - half), math.tanh(z + half)), abs=1e-12)
    assert st.fisher_interval(p.statistic, n, level) == pytest.approx(p.confidence_interval(), abs=1e-12)
    assert st.correlation_pvalue(p.statistic, n) == pytest.approx(ref.pvalue, rel=1e-6, abs=1e-300)
    rho = st.spearman(x, y)
    assert rho.statistic == pytest.approx(np.corrcoef(sps.rankdata(x), sps.rankdata(y))[0, 1], abs=1e-12)
    tau = st.kendall(x, y)
    assert tau.statistic == pytest.approx(sps.kendalltau(x, y).statistic, abs=1e-12)
    assert tau.method == "kendall-tau-b"


def test_kendall_is_tau_b_with_ties():
    x = np.array([1, 1, 2, 2, 3, 3, 4, 5], dtype=float)
    y = np.array([1, 2, 2, 2, 3, 4, 4, 4], dtype=float)
    # tau-b = (C - D) / sqrt((n0 - n1)(n0 - n2)), counted by hand
    c = d = 0
    for i in range(len(x)):
        for j in range(i + 1, len(x)):
            s = np.sign(x[i] - x[j]) * np.sign(y[i] - y[j])
            c += s > 0
            d += s < 0
    n0 = len(x) * (len(x) - 1) / 2
    n1 = sum(k * (k - 1) / 2 for k in np.unique(x, return_counts=True)[1])
    n2 = sum(k * (k - 1) / 2 for k in np.unique(y, return_counts=True)[1])
    assert st.kendall(x, y).statistic == pytest.approx((c - d) / math.sqrt((n0 - n1) * (n0 - n2)), abs=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_residual_diagnostics_match_statsmodels(seed):
    from statsmodels.stats.diagnostic import acorr_ljungbox
    from statsmodels.tsa.stattools import acf

    rng = np.random.default_rng(seed)
    n = int(rng.integers(30, 400))
    r = ar1(n, float(rng.uniform(-0.5, 0.9)), rng)
    d = st.residual_diagnostics(r, lags=7)
    assert d.durbin_watson == pytest.approx(np.sum(np.diff(r) ** 2) / np.sum(r ** 2), rel=1e-12)
    assert d.lag1_autocorrelation == pytest.approx(acf(r, nlags=1, fft=False)[1], abs=1e-10)
    lb = acorr_ljungbox(r, lags=[7])
    assert d.ljung_box_statistic == pytest.approx(float(lb["lb_stat"].iloc[0]), rel=1e-9)
    assert d.ljung_box_pvalue == pytest.approx(float(lb["lb_pvalue"].iloc[0]), rel=1e-6, abs=1e-300)
    rho = max(d.lag1_autocorrelation, 0.0)
    assert d.effective_sample_size == pytest.approx(max(min(n * (1 - rho) / (1 + rho), n), 3), rel=1e-12)


def test_effective_sample_size_limits():
    assert st.effective_sample_size(1000, 0.0) == 1000
    assert st.effective_sample_size(1000, -0.4) == 1000  # never more than n
    assert st.effective_sample_size(1000, 0.75) == pytest.approx(1000 * 0.25 / 1.75)
    assert st.effective_sample_size(1000, 0.99999999) == 3.0
    assert st.dependence_lag(1000, 0.0) == 1
    assert st.dependence_lag(1000, 0.3) < st.dependence_lag(1000, 0.75) < st.dependence_lag(1000, 0.95)
    assert st.dependence_lag(20, 0.99) <= 5


def newey_west_slope_se(x: np.ndarray, y: np.ndarray, lags: int) -> float:
    """Textbook Newey-West sandwich with Bartlett weights and statsmodels' small-sample-free scaling."""
    X = np.column_stack([np.ones_like(x), x])
    beta = np.linalg.lstsq(X, y, rcond=None)[0]
    u = y - X @ beta
    g = X * u[:, None]
    s = g.T @ g
    for lag in range(1, lags + 1):
        w = 1 - lag / (lags + 1)
        gamma = g[lag:].T @ g[:-lag]
        s += w * (gamma + gamma.T)
    bread = np.linalg.inv(X.T @ X)
    return float(np.sqrt((bread @ s @ bread)[1, 1]))


@pytest.mark.parametrize("seed", range(4))
def test_linear_trend_naive_and_hac(seed):
    x, y = curve(300, seed, rho=0.8)
    lt = st.linear_trend(x, y, hac_maxlags=9)
    ref = sps.linregress(x, y)
    assert lt.slope == pytest.approx(ref.slope, rel=1e-10)
    assert lt.intercept == pytest.approx(ref.intercept, rel=1e-10)
    assert lt.slope_se == pytest.approx(ref.stderr, rel=1e-8)
    assert lt.r_squared == pytest.approx(ref.rvalue ** 2, rel=1e-10)
    q = sps.t.ppf(0.975, 298)
    assert (lt.slope_ci_low, lt.slope_ci_high) == pytest.approx((ref.slope - q * ref.stderr, ref.slope + q * ref.stderr))
    assert lt.slope_se_hac == pytest.approx(newey_west_slope_se(x, y, 9), rel=1e-8)
    # dependent residuals: the HAC error is the larger one
    assert lt.slope_se_hac > lt.slope_se
    assert lt.per_steps(1000)["slope"] == pytest.approx(lt.slope * 1000)


def test_block_bootstrap_indices_are_blocks():
    rng = np.random.default_rng(0)
    idx = st.block_bootstrap_indices(103, 10, 7, rng)
    assert idx.shape == (7, 103)
    assert idx.min() >= 0 and idx.max() < 103
    # within each block of 10 the indices are consecutive, wrapping around the end
    blocks = idx[:, :100].reshape(7, 10, 10)
    assert np.all(np.diff(blocks, axis=2) % 103 == 1)
    # circular: every index is equally likely, the ends included
    counts = np.bincount(st.block_bootstrap_indices(50, 10, 4000, rng).ravel(), minlength=50)
    assert counts.min() > 0.9 * counts.mean() and counts.max() < 1.1 * counts.mean()


@pytest.mark.parametrize("n, block", [(500, 24), (103, 10), (50, 1), (64, 64)])
def test_block_bootstrap_fast_path_equals_explicit_resampling(n, block):
    x, y = curve(n, 1, rho=0.7)
    fast = st.block_bootstrap_pearson(x, y, block_length=block, n_resamples=300, seed=3)
    idx = st.block_bootstrap_indices(n, block, 300, np.random.default_rng(3))
    ref = st._rows_pearson_reference(x, y, idx)
    assert (fast.ci_low, fast.ci_high) == pytest.approx(tuple(np.quantile(ref, [0.025, 0.975])), abs=1e-9)
    assert fast.standard_error == pytest.approx(np.std(ref, ddof=1), rel=1e-7)


def test_block_bootstrap_is_reproducible():
    x, y = curve(500, 1, rho=0.7)
    a = st.block_bootstrap_pearson(x, y, n_resamples=300, seed=3)
    b = st.block_bootstrap_pearson(x, y, n_resamples=300, seed=3)
    assert a == b
    assert a.ci_low < a.statistic < a.ci_high
    assert a.statistic == pytest.approx(sps.pearsonr(x, y).statistic)


def test_block_bootstrap_widens_under_dependence_and_matches_iid_without_it():
    x, y = curve(400, 2, rho=0.0, noise=0.1)
    iid = st.block_bootstrap_pearson(x, y, block_length=1, n_resamples=2000, seed=0)
    naive = st.pearson(x, y)
    width_naive = naive.ci_high - naive.ci_low
    assert (iid.ci_high - iid.ci_low) == pytest.approx(width_naive, rel=0.3)
    xd, yd = curve(400, 2, rho=0.9, noise=0.1)
    dep = st.block_bootstrap_pearson(xd, yd, n_resamples=1000, seed=0)
    naive_d = st.pearson(xd, yd)
    assert dep.block_length > 5
    assert (dep.ci_high - dep.ci_low) > 1.5 * (naive_d.ci_high - naive_d.ci_low)


def test_describe_population_std_and_argmax():
    rng = np.random.default_rng(5)
    x = np.arange(50.0)
    y = rng.normal(size=50)
    d = st.describe(x, y)
    assert d.std == pytest.approx(np.std(y)) and d.std_sample == pytest.approx(np.std(y, ddof=1))
    assert d.step_of_max == x[np.argmax(y)] and d.first == y[0] and d.last == y[-1]


def test_slope_in_windows():
    x = np.arange(0, 100, dtype=float)
    y = np.where(x < 50, 2 * x, 100 + 0.5 * (x - 50))
    w = st.slope_in_windows(x, y, np.array([0, 50, 99]))
    assert w[0]["slope"] == pytest.approx(2) and w[1]["slope"] == pytest.approx(0.5)
    assert w[0]["n"] == 50 and w[1]["n"] == 50  # the last window includes its right edge
