"""Pure statistics of a learning curve (step, value): correlations, trend, serial dependence.

Every function takes plain arrays and returns a frozen result object with named
fields (never a bare tuple), in the style of ``scipy.stats``. The heavy lifting is
done by scipy and statsmodels; what is written here is the glue and the few
formulas those libraries do not have (effective sample size, the Fisher interval
at an effective n, the circular block bootstrap of Pearson r). References are in
``docs/analysis.md``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats as sps

#: Confidence level of every interval unless the user asks for another (re-exported by policy).
DEFAULT_LEVEL = 0.95

# ------------------------------------------------------------------ results


@dataclass(frozen=True)
class Descriptive:
    """Summary of the values; ``std`` is the population one (ddof=0), like the seed."""

    n: int
    mean: float
    std: float
    std_sample: float
    min: float
    max: float
    median: float
    first: float
    last: float
    step_of_max: float

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Correlation:
    """A correlation coefficient with its p-value (two-sided) and, when defined, a CI."""

    method: str          # "pearson" | "spearman" | "kendall-tau-b"
    statistic: float
    pvalue: float
    n: float             # sample size the p-value and CI assume
    ci_low: float | None = None
    ci_high: float | None = None
    level: float | None = None

    def confidence_interval(self) -> tuple[float, float]:
        if self.ci_low is None or self.ci_high is None:
            raise ValueError(f"no confidence interval for {self.method}")
        return self.ci_low, self.ci_high

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class LinearTrend:
    """Ordinary least squares y = intercept + slope * step, with naive and HAC slope intervals."""

    slope: float
    intercept: float
    r_squared: float
    slope_se: float            # classical (iid) standard error
    slope_ci_low: float
    slope_ci_high: float
    slope_se_hac: float        # Newey-West standard error, robust to autocorrelation
    slope_ci_hac_low: float
    slope_ci_hac_high: float
    hac_maxlags: int
    level: float

    def per_steps(self, unit: float = 1000.0) -> dict:
        """Slope and its intervals per ``unit`` steps (the seed-style "growth per 1,000 steps")."""
        return {
            "slope": self.slope * unit,
            "se": self.slope_se * unit,
            "ci": [self.slope_ci_low * unit, self.slope_ci_high * unit],
            "se_hac": self.slope_se_hac * unit,
            "ci_hac": [self.slope_ci_hac_low * unit, self.slope_ci_hac_high * unit],
        }

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class ResidualDiagnostics:
    """Serial dependence of residuals: 2 / 0 / >0 means none / perfect / positive autocorrelation."""

    n: int
    durbin_watson: float
    lag1_autocorrelation: float
    ljung_box_lags: int
    ljung_box_statistic: float
    ljung_box_pvalue: float
    effective_sample_size: float   # n (1 - rho1) / (1 + rho1), clipped to [3, n]

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class BootstrapInterval:
    """Circular block bootstrap percentile interval of a statistic."""

    statistic: float
    ci_low: float
    ci_high: float
    level: float
    standard_error: float
    block_length: int
    n_resamples: int
    seed: int

    def confidence_interval(self) -> tuple[float, float]:
        return self.ci_low, self.ci_high

    def to_dict(self) -> dict:
        return asdict(self)


# ------------------------------------------------------------------ helpers


def _as_arrays(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError("x and y must be 1-D arrays of equal length")
    if x.size < 3:
        raise ValueError("need at least 3 points")
    return x, y


def describe(steps: np.ndarray, values: np.ndarray) -> Descriptive:
    """Descriptive statistics of ``values`` (population std like the seed, plus the sample one)."""
    steps, values = _as_arrays(steps, values)
    i_max = int(np.argmax(values))
    return Descriptive(
        n=int(values.size),
        mean=float(np.mean(values)),
        std=float(np.std(values)),
        std_sample=float(np.std(values, ddof=1)),
        min=float(np.min(values)),
        max=float(np.max(values)),
        median=float(np.median(values)),
        first=float(values[0]),
        last=float(values[-1]),
        step_of_max=float(steps[i_max]),
    )


def pearson(x: np.ndarray, y: np.ndarray, level: float = DEFAULT_LEVEL) -> Correlation:
    """Pearson r with the exact t-test p-value and the Fisher-z interval (``scipy.stats.pearsonr``).

    These are the seed's numbers and they assume independent points; see
    :func:`fisher_interval` with an effective n and :func:`block_bootstrap_pearson`.
    """
    x, y = _as_arrays(x, y)
    res = sps.pearsonr(x, y)
    ci = res.confidence_interval(confidence_level=level)
    return Correlation("pearson", float(res.statistic), float(res.pvalue), float(x.size),
                       float(ci.low), float(ci.high), level)


def spearman(x: np.ndarray, y: np.ndarray) -> Correlation:
    """Spearman rank correlation rho (``scipy.stats.spearmanr``)."""
    x, y = _as_arrays(x, y)
    res = sps.spearmanr(x, y)
    return Correlation("spearman", float(res.statistic), float(res.pvalue), float(x.size))


def kendall(x: np.ndarray, y: np.ndarray) -> Correlation:
    """Kendall tau-b (``scipy.stats.kendalltau``, which handles ties as tau-b)."""
    x, y = _as_arrays(x, y)
    res = sps.kendalltau(x, y, variant="b")
    return Correlation("kendall-tau-b", float(res.statistic), float(res.pvalue), float(x.size))


def fisher_interval(r: float, n_eff: float, level: float = DEFAULT_LEVEL) -> tuple[float, float]:
    """Fisher-z interval tanh(atanh r -/+ z / sqrt(n_eff - 3)) for a given (effective) sample size."""
    if n_eff <= 3:
        return -1.0, 1.0
    r = float(np.clip(r, -1 + 1e-15, 1 - 1e-15))
    z = sps.norm.ppf(0.5 + level / 2)
    half = z / math.sqrt(n_eff - 3)
    centre = math.atanh(r)
    return math.tanh(centre - half), math.tanh(centre + half)


def correlation_pvalue(r: float, n_eff: float) -> float:
    """Two-sided t-test p-value of a correlation r when the data carry ``n_eff`` independent points."""
    if n_eff <= 2:
        return 1.0
    r = float(np.clip(r, -1 + 1e-15, 1 - 1e-15))
    t = r * math.sqrt((n_eff - 2) / (1 - r * r))
    return float(2 * sps.t.sf(abs(t), n_eff - 2))


def autocorrelations(residuals: np.ndarray, nlags: int) -> np.ndarray:
    """Sample autocorrelations r_0..r_nlags (the ``statsmodels.tsa.stattools.acf`` estimator, FFT)."""
    from statsmodels.tsa.stattools import acf

    r = np.asarray(residuals, dtype=np.float64)
    if r.size < 3 or np.ptp(r) == 0:
        out = np.zeros(nlags + 1)
        out[0] = 1.0
        return out
    # fft=True: the direct estimator is O(n^2) and takes ~20 s at n = 100,000.
    return np.asarray(acf(r, nlags=nlags, fft=True), dtype=np.float64)


def lag1_autocorrelation(residuals: np.ndarray) -> float:
    """Sample lag-1 autocorrelation of residuals."""
    return float(autocorrelations(residuals, 1)[1])


def effective_sample_size(n: int, rho1: float) -> float:
    """AR(1) effective sample size n (1 - rho) / (1 + rho) (Bretherton et al. 1999), in [3, n].

    Only positive autocorrelation reduces it; a negative rho1 leaves n unchanged
    rather than claiming more information than there are points.
    """
    rho = float(np.clip(rho1, 0.0, 0.999999)) if np.isfinite(rho1) else 0.0
    return float(np.clip(n * (1 - rho) / (1 + rho), min(3.0, n), n))


def dependence_lag(n: int, rho1: float) -> int:
    """Andrews (1991) AR(1) plug-in bandwidth for the Bartlett kernel, used both as the
    Newey-West maximum lag and as the block length: 1.1447 (alpha n)^(1/3),
    alpha = 4 rho^2 / (1 - rho^2)^2; at least 1, at most n // 4."""
    rho = float(np.clip(rho1, 0.0, 0.99)) if np.isfinite(rho1) else 0.0
    if rho == 0.0:
        return 1
    alpha = 4 * rho * rho / (1 - rho * rho) ** 2
    lag = int(math.ceil(1.1447 * (alpha * n) ** (1 / 3)))
    return int(max(1, min(lag, max(1, n // 4))))


def residual_diagnostics(residuals: np.ndarray, lags: int | None = None) -> ResidualDiagnostics:
    """Durbin-Watson, lag-1 autocorrelation, Ljung-Box (statsmodels) and the effective sample size."""
    from statsmodels.stats.stattools import durbin_watson

    r = np.asarray(residuals, dtype=np.float64)
    n = int(r.size)
    if lags is None:
        lags = int(max(1, min(10, n // 5)))
    rho = autocorrelations(r, lags)
    rho1 = float(rho[1])
    # Ljung-Box Q = n (n + 2) sum_k r_k^2 / (n - k), chi-square with `lags` df; the same
    # statistic as statsmodels' acorr_ljungbox, which computes the ACF the slow O(n^2) way.
    k = np.arange(1, lags + 1)
    lb_stat = float(n * (n + 2) * np.sum(rho[1:] ** 2 / (n - k)))
    lb_p = float(sps.chi2.sf(lb_stat, lags))
    dw = float(durbin_watson(r)) if np.any(r) else 2.0
    return ResidualDiagnostics(
        n=n,
        durbin_watson=dw,
        lag1_autocorrelation=rho1,
        ljung_box_lags=int(lags),
        ljung_box_statistic=lb_stat,
        ljung_box_pvalue=lb_p,
        effective_sample_size=effective_sample_size(n, rho1),
    )


def linear_trend(x: np.ndarray, y: np.ndarray, level: float = DEFAULT_LEVEL, hac_maxlags: int | None = None) -> LinearTrend:
    """OLS trend with the classical slope interval and a Newey-West (HAC) one (statsmodels).

    ``hac_maxlags`` defaults to :func:`dependence_lag` of the OLS residuals.
    """
    import statsmodels.api as sm

    x, y = _as_arrays(x, y)
    design = sm.add_constant(x, has_constant="add")
    ols = sm.OLS(y, design).fit()
    if hac_maxlags is None:
        hac_maxlags = dependence_lag(x.size, lag1_autocorrelation(ols.resid))
    hac = sm.OLS(y, design).fit(cov_type="HAC", cov_kwds={"maxlags": int(hac_maxlags)})
    alpha = 1 - level
    ci = ols.conf_int(alpha=alpha)[1]
    ci_hac = hac.conf_int(alpha=alpha)[1]
    return LinearTrend(
        slope=float(ols.params[1]),
        intercept=float(ols.params[0]),
        r_squared=float(ols.rsquared),
        slope_se=float(ols.bse[1]),
        slope_ci_low=float(ci[0]),
        slope_ci_high=float(ci[1]),
        slope_se_hac=float(hac.bse[1]),
        slope_ci_hac_low=float(ci_hac[0]),
        slope_ci_hac_high=float(ci_hac[1]),
        hac_maxlags=int(hac_maxlags),
        level=level,
    )


def _rows_pearson(xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Pearson r of each row pair, vectorised."""
    xc = xs - xs.mean(axis=1, keepdims=True)
    yc = ys - ys.mean(axis=1, keepdims=True)
    num = np.einsum("ij,ij->i", xc, yc)
    den = np.sqrt(np.einsum("ij,ij->i", xc, xc) * np.einsum("ij,ij->i", yc, yc))
    with np.errstate(invalid="ignore", divide="ignore"):
        return num / den


def block_bootstrap_indices(n: int, block_length: int, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """Circular block bootstrap (Politis & Romano 1992): each row strings random blocks of
    consecutive indices, wrapping around the end, to length n.

    Wrapping gives every point the same chance to be drawn. The plain moving-block
    bootstrap (Kuensch 1989) under-samples both ends of the series, which for a
    curved learning curve drops the steep start and biases r upwards.
    """
    block_length = int(max(1, min(block_length, n)))
    n_blocks = -(-n // block_length)
    starts = rng.integers(0, n, size=(n_resamples, n_blocks))
    idx = (starts[:, :, None] + np.arange(block_length)[None, None, :]).reshape(n_resamples, -1) % n
    return idx[:, :n]


def _rows_pearson_reference(x: np.ndarray, y: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """r of each resample by explicit indexing (the slow definition; used to test the fast path)."""
    return _rows_pearson(x[idx], y[idx])


def block_bootstrap_pearson(
    x: np.ndarray,
    y: np.ndarray,
    *,
    block_length: int | None = None,
    n_resamples: int = 1000,
    level: float = DEFAULT_LEVEL,
    seed: int = 0,
    max_cells: int = 1_000_000,
) -> BootstrapInterval:
    """Percentile interval of Pearson r from a pairwise circular block bootstrap (after Mudelsee 2003).

    Blocks of consecutive (step, value) pairs keep the serial dependence that an
    ordinary bootstrap or the Fisher interval ignore. ``block_length`` defaults to
    :func:`dependence_lag` of the linear-fit residuals. Work is done in chunks of
    at most ``max_cells`` block draws, so memory stays small for long logs.
    """
    x, y = _as_arrays(x, y)
    n = x.size
    if block_length is None:
        slope, intercept = np.polyfit(x, y, 1)
        block_length = dependence_lag(n, lag1_autocorrelation(y - (intercept + slope * x)))
    rng = np.random.default_rng(seed)
    block_length = int(max(1, min(block_length, n)))
    n_blocks = -(-n // block_length)
    tail = n - (n_blocks - 1) * block_length  # the last block is cut to make exactly n points
    # r of a resample only needs the sums of x, y, x^2, y^2, xy over its blocks, and each
    # block's sums are differences of prefix sums (wrapped circularly): O(resamples x blocks)
    # work instead of O(resamples x n). Standardising first keeps the differences exact enough.
    xs = (x - x.mean()) / (x.std() or 1.0)
    ys = (y - y.mean()) / (y.std() or 1.0)
    ext = np.arange(n + block_length) % n
    moments = np.stack([np.ones(n), xs, ys, xs * xs, ys * ys, xs * ys])[:, ext]
    prefix = np.concatenate([np.zeros((6, 1)), np.cumsum(moments, axis=1)], axis=1)
    out = np.empty(n_resamples)
    rows_per_chunk = max(1, max_cells // n_blocks)
    done = 0
    while done < n_resamples:
        rows = min(rows_per_chunk, n_resamples - done)
        starts = rng.integers(0, n, size=(rows, n_blocks))
        lengths = np.full(n_blocks, block_length)
        lengths[-1] = tail
        sums = (prefix[:, starts + lengths] - prefix[:, starts]).sum(axis=2)  # (6, rows)
        cnt, sx, sy, sxx, syy, sxy = sums
        cov = sxy - sx * sy / cnt
        with np.errstate(invalid="ignore", divide="ignore"):
            out[done:done + rows] = cov / np.sqrt((sxx - sx * sx / cnt) * (syy - sy * sy / cnt))
        done += rows
    out = out[np.isfinite(out)]
    alpha = 1 - level
    low, high = np.quantile(out, [alpha / 2, 1 - alpha / 2])
    return BootstrapInterval(
        statistic=float(sps.pearsonr(x, y).statistic),
        ci_low=float(low),
        ci_high=float(high),
        level=level,
        standard_error=float(np.std(out, ddof=1)),
        block_length=int(block_length),
        n_resamples=int(out.size),
        seed=seed,
    )


def slope_in_windows(x: np.ndarray, y: np.ndarray, edges: np.ndarray) -> list[dict]:
    """OLS slope, its standard error and the mean of y in each window [edges[i], edges[i+1]].

    The last window includes its right edge; a window with fewer than 3 points gets None slopes.
    """
    x, y = _as_arrays(x, y)
    out = []
    for i in range(len(edges) - 1):
        lo, hi = edges[i], edges[i + 1]
        mask = (x >= lo) & ((x <= hi) if i == len(edges) - 2 else (x < hi))
        n = int(mask.sum())
        entry = {"start_step": float(lo), "end_step": float(hi), "n": n,
                 "mean": float(y[mask].mean()) if n else None, "slope": None, "slope_se": None}
        if n >= 3 and np.ptp(x[mask]) > 0:
            res = sps.linregress(x[mask], y[mask])
            entry["slope"] = float(res.slope)
            entry["slope_se"] = float(res.stderr)
        out.append(entry)
    return out


@dataclass(frozen=True)
class TrendTest:
    """Mann-Kendall trend test with the Hamed & Rao (1998) variance correction."""

    statistic_s: float         # Mann-Kendall S (sum of signs of later minus earlier values)
    tau: float                 # Kendall tau (S over the number of pairs, ties aside)
    z: float
    pvalue: float              # two-sided, after the correction
    variance_factor: float     # n / n*: how much serial dependence inflates var(S); >= 1
    effective_sample_size: float
    residuals_from: str        # what the autocorrelation was measured on
    n: int

    def to_dict(self) -> dict:
        return asdict(self)


def mann_kendall(values: np.ndarray, residuals: np.ndarray | None = None, *, residuals_from: str = "",
                 alpha: float = 0.05, max_points: int = 2000) -> TrendTest:
    """Mann-Kendall test of a monotone trend in ``values`` (in logged order), with var(S)
    corrected for serial dependence after Hamed & Rao (1998): var(S) is multiplied by
    1 + 2 / (n (n-1) (n-2)) * sum_k (n-k)(n-k-1)(n-k-2) rho_k over the significant
    autocorrelations rho_k of the ranks of the *residuals*.

    Hamed & Rao take the residuals of a straight (Sen) trend; for a learning curve the
    curvature then counts as dependence, and a clearly monotone curve can come out "no
    trend". Give ``residuals`` of the fitted learning curve instead, so only the noise around
    the curve counts. Without them the Sen-slope residuals are used (the textbook test).
    Longer series are thinned evenly to ``max_points`` (S needs O(n^2) comparisons).
    """
    y = np.asarray(values, dtype=np.float64)
    res = None if residuals is None else np.asarray(residuals, dtype=np.float64)
    if y.size > max_points:
        keep = np.unique(np.linspace(0, y.size - 1, max_points).round().astype(np.int64))
        y = y[keep]
        res = None if res is None else res[keep]
    n = y.size
    if n < 4:
        raise ValueError("need at least 4 points")
    diff = y[None, :] - y[:, None]
    s = float(np.sum(np.sign(diff[np.triu_indices(n, 1)])))
    _, counts = np.unique(y, return_counts=True)
    var_s = (n * (n - 1) * (2 * n + 5) - np.sum(counts * (counts - 1) * (2 * counts + 5))) / 18.0
    if res is None:
        idx = np.arange(n, dtype=np.float64)
        slopes = diff[np.triu_indices(n, 1)] / (idx[None, :] - idx[:, None])[np.triu_indices(n, 1)]
        res = y - float(np.median(slopes)) * idx
        residuals_from = residuals_from or "a straight (Sen-slope) trend"
    ranks = sps.rankdata(res)
    rho = autocorrelations(ranks, n - 1)[1:]
    band = sps.norm.ppf(1 - alpha / 2) / math.sqrt(n)
    k = np.arange(1, n)
    significant = np.abs(rho) > band
    total = float(np.sum(((n - k) * (n - k - 1) * (n - k - 2) * rho)[significant]))
    factor = max(1.0, 1.0 + 2.0 * total / (n * (n - 1) * (n - 2)))
    var_s *= factor
    z = 0.0 if s == 0 or var_s <= 0 else (s - math.copysign(1.0, s)) / math.sqrt(var_s)
    return TrendTest(statistic_s=s, tau=s / (n * (n - 1) / 2), z=float(z), pvalue=float(2 * sps.norm.sf(abs(z))),
                     variance_factor=factor, effective_sample_size=n / factor, residuals_from=residuals_from, n=n)
