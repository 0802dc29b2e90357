"""Learning-curve models, fits, backtests, forecasts and steps-to-target. Pure functions.

Time enters every model as ``t = step / 1000`` (thousands of steps), which keeps
the parameters of a 100-step and a 1,000,000-step run on comparable scales. The
``direction`` of a metric is +1 when it grows (accuracy) and -1 when it falls
(loss); the models are written so their parameters keep one meaning either way:

=================  ======================================  =====================
model              increasing (accuracy)                   decreasing (loss)
=================  ======================================  =====================
``power_law``      a - b t^(-c)                            a + b t^(-c) (L_inf + A t^-alpha)
``exp_saturation`` a - b exp(-t / tau)                     a + b exp(-t / tau)
``log_linear``     a + b ln t                              a + b ln t
``logistic_log``   y0 + (L - y0) / (1 + exp(-k (ln t - m)))  (accuracy-like metrics only)
``linear``         a + b t (the seed's assumption; a baseline)
=================  ======================================  =====================

``power_law_from_knee``, ``exp_saturation_from_knee`` and ``log_linear_from_knee`` are the same
families fitted only on the points after the curve's knee (:func:`knee_index`): where a run starts
with a steep transient (a resumed phase-2 run, a from-scratch loss falling from ln(vocab)), the
families describe the slow regime after it, which the transient would otherwise bend.

Fits use ``scipy.optimize.curve_fit`` (trust-region reflective, bounded, analytic
Jacobians). Starting points come from a grid over the nonlinear parameter with the
linear ones solved exactly (variable projection), on a subsample for speed; the
two best starts are refined on all points. Parameter covariances are inflated by
(1 + rho1) / (1 - rho1) for lag-1 residual autocorrelation rho1, because serially
dependent residuals make the textbook covariance far too small.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
from scipy import optimize
from scipy import stats as sps

from bertcurve.curves.stats import DEFAULT_LEVEL, lag1_autocorrelation

STEP_UNIT = 1000.0
_SUBSAMPLE = 2000      # points used to rank starting values
_EPS = 1e-12


# ------------------------------------------------------------------ model definitions
@dataclass(frozen=True)
class CurveModel:
    """A learning-curve family: value and Jacobian as functions of t (kilo-steps)."""

    name: str
    param_names: tuple[str, ...]
    formula_up: str
    formula_down: str
    saturating: bool
    func: Callable[..., np.ndarray] = field(repr=False)
    jac: Callable[..., np.ndarray] = field(repr=False)
    from_knee: bool = False     # fitted on the points after the knee only (knee_index)

    def formula(self, direction: int) -> str:
        return self.formula_up if direction > 0 else self.formula_down

    @property
    def family(self) -> str:
        """The family's own name (without ``_from_knee``)."""
        return self.name.removesuffix(FROM_KNEE)


def _power(t, s, a, b, c):
    return a - s * b * t ** (-c)


def _power_jac(t, s, a, b, c):
    tc = t ** (-c)
    return np.column_stack([np.ones_like(t), -s * tc, s * b * tc * np.log(t)])


def _exp(t, s, a, b, tau):
    return a - s * b * np.exp(-t / tau)


def _exp_jac(t, s, a, b, tau):
    e = np.exp(-t / tau)
    return np.column_stack([np.ones_like(t), -s * e, -s * b * e * t / (tau * tau)])


def _loglin(t, s, a, b):
    return a + b * np.log(t)


def _loglin_jac(t, s, a, b):
    return np.column_stack([np.ones_like(t), np.log(t)])


def _linear(t, s, a, b):
    return a + b * t


def _linear_jac(t, s, a, b):
    return np.column_stack([np.ones_like(t), t])


def _sigmoid(u):
    return 0.5 * (1.0 + np.tanh(0.5 * u))  # overflow-free logistic


def _logistic(t, s, y0, top, k, m):
    return y0 + (top - y0) * _sigmoid(k * (np.log(t) - m))


def _logistic_jac(t, s, y0, top, k, m):
    lt = np.log(t) - m
    g = _sigmoid(k * lt)
    dg = g * (1 - g)
    return np.column_stack([1 - g, g, (top - y0) * dg * lt, -(top - y0) * dg * k])


MODELS: dict[str, CurveModel] = {
    "power_law": CurveModel("power_law", ("a", "b", "c"), "a − b·t^(−c)", "a + b·t^(−c)", True, _power, _power_jac),
    "exp_saturation": CurveModel("exp_saturation", ("a", "b", "tau"), "a − b·exp(−t/τ)", "a + b·exp(−t/τ)", True,
                                 _exp, _exp_jac),
    "log_linear": CurveModel("log_linear", ("a", "b"), "a + b·ln t", "a + b·ln t", False, _loglin, _loglin_jac),
    "logistic_log": CurveModel("logistic_log", ("y0", "L", "k", "m"), "y0 + (L − y0)/(1 + exp(−k(ln t − m)))",
                               "", True, _logistic, _logistic_jac),
    "linear": CurveModel("linear", ("a", "b"), "a + b·t", "a + b·t", False, _linear, _linear_jac),
}


#: Suffix of the families fitted from the knee on, and the families that have such a variant.
FROM_KNEE = "_from_knee"
KNEE_FAMILIES = ("power_law", "exp_saturation", "log_linear")
for _name in KNEE_FAMILIES:
    _spec = MODELS[_name]
    MODELS[_name + FROM_KNEE] = CurveModel(
        _name + FROM_KNEE, _spec.param_names, _spec.formula_up + " after the knee",
        _spec.formula_down + " after the knee", _spec.saturating, _spec.func, _spec.jac, from_knee=True)

#: The knee (:func:`knee_index`): the first point after which less than this share of the curve's
#: whole change (in its direction) is left ...
KNEE_REMAINING = 0.1
#: ... when that point lies within this share of the step range (a transient at the start, not a
#: curve still on its way). Both chosen on bench/forecast.py; 0.05-0.15 and 0.3-0.5 did about as well.
KNEE_WITHIN = 0.3
#: A family is fitted from the knee only with at least this many points after it.
KNEE_MIN_POINTS = 6


def models_for(direction: int) -> list[str]:
    """The model names that make sense for a metric that grows (+1) or falls (-1)."""
    names = ["power_law", "exp_saturation", "log_linear", "linear"]
    if direction > 0:
        names.insert(3, "logistic_log")
    return names + [m + FROM_KNEE for m in KNEE_FAMILIES]


def knee_index(steps: np.ndarray, values: np.ndarray, direction: int) -> int | None:
    """Index of the curve's knee: the first point after which less than KNEE_REMAINING of its
    whole change (first to last point) is left, when that comes within KNEE_WITHIN of the step
    range and after the first point; else None. Steps and values as fitted (step > 0)."""
    y = direction * np.asarray(values, dtype=np.float64)
    steps = np.asarray(steps, dtype=np.float64)
    if y.size < 3 or not (y[-1] - y[0]) > 0:
        return None
    remaining = (y[-1] - y) / (y[-1] - y[0])
    hit = np.flatnonzero(remaining < KNEE_REMAINING)
    if hit.size == 0 or hit[0] == 0:
        return None
    i = int(hit[0])
    return i if steps[i] - steps[0] <= KNEE_WITHIN * (steps[-1] - steps[0]) else None


# ------------------------------------------------------------------ results
@dataclass(frozen=True)
class Band:
    """A pointwise interval (arrays of the same shape as the steps asked for)."""

    low: np.ndarray
    high: np.ndarray
    level: float


@dataclass(frozen=True)
class FitResult:
    """A fitted learning curve. ``predict`` and the interval methods take steps (not kilo-steps)."""

    model: str
    formula: str
    direction: int
    param_names: tuple[str, ...]
    params: np.ndarray
    covariance: np.ndarray | None       # inflated for residual autocorrelation; None if unavailable
    converged: bool
    message: str
    n: int = 0
    sigma: float = math.nan             # residual standard deviation, sqrt(SSE / (n - p))
    r_squared: float = math.nan
    rmse: float = math.nan
    aic: float = math.nan
    bic: float = math.nan
    residual_lag1: float = math.nan
    variance_inflation: float = 1.0     # (1 + rho1) / (1 - rho1) applied to the covariance
    at_bounds: tuple[str, ...] = ()
    first_step: float = math.nan
    last_step: float = math.nan
    lower: float | None = None          # predictions are clipped to [lower, upper]
    upper: float | None = None

    @property
    def family(self) -> str:
        """The curve family (``power_law`` also for ``power_law_from_knee``)."""
        return MODELS[self.model].family

    @property
    def from_knee(self) -> bool:
        """Fitted on the points after the knee only (``first_step`` is the knee)."""
        return MODELS[self.model].from_knee

    # -- prediction -------------------------------------------------------------
    def _raw(self, t: np.ndarray, params: np.ndarray | None = None) -> np.ndarray:
        p = self.params if params is None else params
        return MODELS[self.model].func(t, self.direction, *p)

    def _clip(self, y: np.ndarray) -> np.ndarray:
        lo = -np.inf if self.lower is None else self.lower
        hi = np.inf if self.upper is None else self.upper
        return np.clip(y, lo, hi)

    def predict(self, steps: Sequence[float] | np.ndarray) -> np.ndarray:
        """Fitted value at ``steps`` (NaN when the fit did not converge)."""
        t = _to_t(steps)
        if not self.converged:
            return np.full(t.shape, np.nan)
        with np.errstate(all="ignore"):
            return self._clip(self._raw(t))

    def _se_mean(self, t: np.ndarray) -> np.ndarray:
        if self.covariance is None:
            return np.full(t.shape, np.nan)
        jac = MODELS[self.model].jac(t, self.direction, *self.params)
        return np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", jac, self.covariance, jac), 0.0))

    def confidence_interval(self, steps: Sequence[float] | np.ndarray, level: float = DEFAULT_LEVEL) -> Band:
        """Delta-method interval of the fitted curve itself (where the mean lies)."""
        return self._band(steps, level, with_noise=False)

    def prediction_interval(self, steps: Sequence[float] | np.ndarray, level: float = DEFAULT_LEVEL) -> Band:
        """Interval for a new logged value at ``steps``: curve uncertainty plus residual noise."""
        return self._band(steps, level, with_noise=True)

    def _band(self, steps, level: float, with_noise: bool) -> Band:
        t = _to_t(steps)
        if not self.converged:
            nan = np.full(t.shape, np.nan)
            return Band(nan, nan, level)
        with np.errstate(all="ignore"):
            centre = self._raw(t)
            var = self._se_mean(t) ** 2
            if with_noise:
                var = var + self.sigma ** 2
            q = sps.t.ppf(0.5 + level / 2, max(self.n - len(self.params), 1))
            half = q * np.sqrt(var)
            return Band(self._clip(centre - half), self._clip(centre + half), level)

    def steps_to_reach(self, target: float, *, horizon_factor: float = 1000.0) -> float | None:
        """First step at which the fitted curve reaches ``target`` (None if not within the horizon)."""
        return _first_crossing(lambda t: self._raw(t), target, self.direction, self.first_step,
                               self.last_step * horizon_factor) if self.converged else None

    def steps_to_reach_band(self, target: float, level: float = DEFAULT_LEVEL, *, horizon_factor: float = 1000.0
                            ) -> tuple[float | None, float | None]:
        """Earliest and latest plausible steps: where the upper and lower confidence bounds reach ``target``."""
        if not self.converged or self.covariance is None:
            return None, None
        q = sps.t.ppf(0.5 + level / 2, max(self.n - len(self.params), 1))

        def bound(sign: int):
            return lambda t: self._raw(t) + sign * q * self._se_mean(t)

        lo_s, hi_s = (1, -1) if self.direction > 0 else (-1, 1)
        early = _first_crossing(bound(lo_s), target, self.direction, self.first_step, self.last_step * horizon_factor)
        late = _first_crossing(bound(hi_s), target, self.direction, self.first_step, self.last_step * horizon_factor)
        return early, late

    # -- (de)serialisation --------------------------------------------------------
    def to_dict(self) -> dict:
        se = (np.sqrt(np.diag(self.covariance)) if self.covariance is not None
              else np.full(len(self.params), np.nan))
        return {
            "model": self.model,
            "formula": self.formula,
            "direction": self.direction,
            "converged": self.converged,
            "message": self.message,
            "time_unit_steps": STEP_UNIT,
            "params": {name: {"value": _f(v), "se": _f(s)} for name, v, s in zip(self.param_names, self.params, se)}
            if self.converged else {},
            "param_names": list(self.param_names),
            "param_values": [_f(v) for v in self.params] if self.converged else [],
            "covariance": self.covariance.tolist() if self.converged and self.covariance is not None else None,
            "n": self.n,
            "sigma": _f(self.sigma),
            "r_squared": _f(self.r_squared),
            "rmse": _f(self.rmse),
            "aic": _f(self.aic),
            "bic": _f(self.bic),
            "residual_lag1": _f(self.residual_lag1),
            "variance_inflation": _f(self.variance_inflation),
            "at_bounds": list(self.at_bounds),
            "first_step": _f(self.first_step),
            "last_step": _f(self.last_step),
            "lower": self.lower,
            "upper": self.upper,
        }

    @classmethod
    def from_dict(cls, d: dict) -> "FitResult":
        """Rebuild a fit from its ``to_dict`` form (e.g. an entry of analysis.json's ``fits``)."""
        names = tuple(d["param_names"])
        values = d.get("param_values") or [math.nan] * len(names)
        cov = d.get("covariance")
        return cls(
            model=d["model"], formula=d["formula"], direction=int(d["direction"]), param_names=names,
            params=np.asarray([math.nan if v is None else v for v in values], dtype=np.float64),
            covariance=None if cov is None else np.asarray(cov, dtype=np.float64),
            converged=bool(d["converged"]), message=d.get("message", ""), n=int(d.get("n", 0)),
            sigma=_nan(d.get("sigma")), r_squared=_nan(d.get("r_squared")), rmse=_nan(d.get("rmse")),
            aic=_nan(d.get("aic")), bic=_nan(d.get("bic")), residual_lag1=_nan(d.get("residual_lag1")),
            variance_inflation=_nan(d.get("variance_inflation", 1.0)), at_bounds=tuple(d.get("at_bounds", ())),
            first_step=_nan(d.get("first_step")), last_step=_nan(d.get("last_step")),
            lower=d.get("lower"), upper=d.get("upper"),
        )


def _f(v) -> float | None:
    """JSON-safe float: NaN/inf become None."""
    v = float(v)
    return v if math.isfinite(v) else None


def _nan(v) -> float:
    return math.nan if v is None else float(v)


def _to_t(steps) -> np.ndarray:
    return np.asarray(steps, dtype=np.float64).reshape(-1) / STEP_UNIT


def _first_crossing(f: Callable[[np.ndarray], np.ndarray], target: float, direction: int,
                    start_step: float, end_step: float) -> float | None:
    """First step in [start, end] where f (in kilo-steps) reaches target in the metric's direction."""
    lo, hi = max(start_step, 1e-9) / STEP_UNIT, max(end_step, start_step * 1.0001) / STEP_UNIT
    grid = np.geomspace(lo, hi, 4000)
    with np.errstate(all="ignore"):
        g = direction * (f(grid) - target)
    ok = np.isfinite(g)
    hit = np.nonzero(ok & (g >= 0))[0]
    if hit.size == 0:
        return None
    i = int(hit[0])
    if i == 0:
        return float(grid[0] * STEP_UNIT)
    root = optimize.brentq(lambda x: float(direction * (f(np.array([x]))[0] - target)), grid[i - 1], grid[i])
    return float(root * STEP_UNIT)


# ------------------------------------------------------------------ fitting
@dataclass(frozen=True)
class Limits:
    """What the metric can be: predictions and asymptotes are kept inside [lower, upper]."""

    lower: float | None = None
    upper: float | None = None


def _bounds(model: str, direction: int, y: np.ndarray, t: np.ndarray, limits: Limits
            ) -> tuple[list[float], list[float]]:
    inf = np.inf
    lo_lim = -inf if limits.lower is None else limits.lower
    hi_lim = inf if limits.upper is None else limits.upper
    # A ceiling (floor) is never below (above) where the curve already is: at least the mean of its
    # last tenth, less (plus) two standard errors of that mean, so noise alone cannot push it out.
    end_level, end_slack = _end_level(y)
    if model in {"power_law", "exp_saturation"}:
        # the asymptote a lies beyond the data in the metric's direction, inside the limits
        if direction > 0:
            a_lo, a_hi = min(end_level - end_slack, hi_lim - 1e-9), hi_lim
        else:
            a_lo, a_hi = lo_lim, max(end_level + end_slack, lo_lim + 1e-9 if math.isfinite(lo_lim) else -inf)
        third = [1e-3, 5.0] if model == "power_law" else [float(t.min()) * 1e-2, float(t.max()) * 1e3]
        return [a_lo, 0.0, third[0]], [a_hi, inf, third[1]]
    if model == "logistic_log":
        ln_t = np.log(t)
        top_lo = min(end_level - end_slack, hi_lim - 1e-9)
        return ([lo_lim, top_lo, 1e-2, float(ln_t.min()) - 5],
                [float(np.max(y)), hi_lim, 50.0, float(ln_t.max()) + 10])
    return [-inf, -inf], [inf, inf]


def _end_level(y: np.ndarray) -> tuple[float, float]:
    """Mean of the last tenth of ``y`` (at least 3 points) and two standard errors of it, with the
    noise taken from successive differences so the curve's own trend does not count as noise."""
    k = max(3, y.size // 10)
    tail = y[-k:]
    # Robust scale of successive differences over the later half (the steep start is trend, not noise).
    d = np.diff(y[-max(4, y.size // 2):])
    noise = float(1.4826 * np.median(np.abs(d - np.median(d))) / math.sqrt(2)) if d.size else 0.0
    return float(np.mean(tail)), 2.0 * noise / math.sqrt(tail.size)


def _starts(model: str, direction: int, t: np.ndarray, y: np.ndarray, lb, ub) -> list[np.ndarray]:
    """Candidate starting points: a grid over the nonlinear parameters, linear ones by least squares."""
    s = direction
    cands: list[tuple[float, np.ndarray]] = []

    def solve(basis: np.ndarray, make: Callable[[np.ndarray], np.ndarray | None]) -> None:
        design = np.column_stack([np.ones_like(t), basis])
        coef, *_ = np.linalg.lstsq(design, y, rcond=None)
        p = make(coef)
        if p is None:
            return
        p = np.clip(p, _inside(lb, +1), _inside(ub, -1))
        with np.errstate(all="ignore"):
            sse = float(np.sum((MODELS[model].func(t, s, *p) - y) ** 2))
        if math.isfinite(sse):
            cands.append((sse, p))

    if model == "power_law":
        for c in np.geomspace(0.02, 3.0, 24):
            solve(t ** (-c), lambda coef, c=c: np.array([coef[0], max(-s * coef[1], 1e-9), c]))
    elif model == "exp_saturation":
        for tau in float(t.max()) * np.geomspace(0.01, 10.0, 24):
            solve(np.exp(-t / tau), lambda coef, tau=tau: np.array([coef[0], max(-s * coef[1], 1e-9), tau]))
    elif model == "logistic_log":
        ln_t = np.log(t)
        for k in (0.5, 1.0, 2.0, 4.0, 8.0):
            for m in np.linspace(ln_t.min() - 1, ln_t.max() + 2, 10):
                g = _sigmoid(k * (ln_t - m))
                # y = y0 + (L - y0) g  ->  intercept y0, slope (L - y0)
                solve(g, lambda coef, k=k, m=m: np.array([coef[0], coef[0] + coef[1], k, m]))
    cands.sort(key=lambda c: c[0])
    return [p for _, p in cands[:2]]


def _inside(bound: Sequence[float], sign: int) -> np.ndarray:
    """Nudge finite bounds inwards so a start is strictly feasible (curve_fit requires it)."""
    b = np.asarray(bound, dtype=np.float64)
    finite = np.isfinite(b)
    out = b.copy()
    out[finite] = b[finite] + sign * 1e-9 * (np.abs(b[finite]) + 1)
    return out


def _subsample(n: int, size: int = _SUBSAMPLE) -> np.ndarray:
    return np.unique(np.linspace(0, n - 1, min(n, size)).round().astype(np.int64))


def _fit_nonlinear(model: str, t: np.ndarray, y: np.ndarray, direction: int,
                   limits: Limits) -> tuple[np.ndarray, tuple[str, ...], str] | str:
    """Bounded least squares from several starts: (params, parameters at a bound, message),
    or why it failed."""
    spec = MODELS[model]
    n = y.size
    lb, ub = _bounds(model, direction, y, t, limits)
    sub = _subsample(n)
    starts = _starts(model, direction, t[sub], y[sub], lb, ub)
    if not starts:
        return "no finite starting point"
    errors: list[str] = []

    def solve(tt: np.ndarray, yy: np.ndarray, p0: np.ndarray) -> tuple[float, np.ndarray] | None:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                popt, _ = optimize.curve_fit(
                    lambda x, *q: spec.func(x, direction, *q), tt, yy, p0=p0, bounds=(lb, ub),
                    jac=lambda x, *q: spec.jac(x, direction, *q), method="trf", max_nfev=2000,
                )
        except (RuntimeError, ValueError, FloatingPointError) as exc:
            errors.append(str(exc).split("\n")[0])
            return None
        with np.errstate(all="ignore"):
            sse = float(np.sum((spec.func(tt, direction, *popt) - yy) ** 2))
        return (sse, popt) if math.isfinite(sse) else None

    # Converge from each start on the subsample, then polish the best on all points: on a
    # 100,000-point log the full-data fit then needs a few iterations instead of dozens.
    best: tuple[float, np.ndarray] | None = None
    for p0 in starts:
        got = solve(t[sub], y[sub], p0) if sub.size < n else solve(t, y, p0)
        if got is not None and (best is None or got[0] < best[0]):
            best = got
    if best is not None and sub.size < n:
        polished = solve(t, y, np.clip(best[1], _inside(lb, +1), _inside(ub, -1)))
        best = polished
    if best is None:
        return "the optimiser did not converge from any start" + (f" ({errors[0]})" if errors else "")
    params = best[1]
    at_bounds = tuple(
        name for name, v, lo, hi in zip(spec.param_names, params, lb, ub)
        if (math.isfinite(lo) and abs(v - lo) <= 1e-6 * max(1.0, abs(lo)))
        or (math.isfinite(hi) and abs(v - hi) <= 1e-6 * max(1.0, abs(hi)))
    )
    message = "converged" + (f"; at the bound of its range: {', '.join(at_bounds)}" if at_bounds else "")
    return params, at_bounds, message


def _covariance(jac: np.ndarray, param_names: Sequence[str], at_bounds: tuple[str, ...], sigma2: float,
                inflation: float) -> np.ndarray | None:
    """The parameters' covariance, inflated for AR(1) residuals; None when the Jacobian is singular."""
    p = len(param_names)
    try:
        # Fixed parameters at a bound carry no information; their rows are left out of the inverse.
        free = [i for i, name in enumerate(param_names) if name not in at_bounds]
        jf = jac[:, free]
        cov_free = np.linalg.pinv(jf.T @ jf) * sigma2 * inflation
        cov = np.zeros((p, p))
        cov[np.ix_(free, free)] = cov_free
        if not np.all(np.isfinite(cov)):
            raise np.linalg.LinAlgError
    except np.linalg.LinAlgError:
        return None
    return cov


def fit_curve(model: str, steps: np.ndarray, values: np.ndarray, *, direction: int,
              limits: Limits = Limits()) -> FitResult:
    """Fit one model; never raises on a bad fit, but returns ``converged=False`` with the reason."""
    spec = MODELS[model]
    family = spec.family
    steps = np.asarray(steps, dtype=np.float64)
    y = np.asarray(values, dtype=np.float64)
    keep = steps > 0
    t, y = steps[keep] / STEP_UNIT, y[keep]
    knee = knee_index(t, y, direction) if spec.from_knee else None
    if knee is not None:
        t, y = t[knee:], y[knee:]
    n, p = y.size, len(spec.param_names)
    base = dict(model=model, formula=spec.formula(direction), direction=direction, param_names=spec.param_names,
                n=int(n), lower=limits.lower, upper=limits.upper,
                first_step=float(t[0] * STEP_UNIT) if n else math.nan,
                last_step=float(t[-1] * STEP_UNIT) if n else math.nan)

    def failed(msg: str) -> FitResult:
        return FitResult(params=np.full(p, np.nan), covariance=None, converged=False, message=msg, **base)

    if family == "logistic_log" and direction < 0:
        return failed("the logistic model is only used for metrics that grow (accuracy)")
    if spec.from_knee and knee is None:
        return failed(f"no knee: the curve has no steep start that leaves less than {KNEE_REMAINING:.0%} of its "
                      f"change within the first {KNEE_WITHIN:.0%} of its steps")
    if spec.from_knee and n < KNEE_MIN_POINTS:
        return failed(f"{n} points after the knee at step {t[0] * STEP_UNIT:g}, {KNEE_MIN_POINTS} needed")
    if n < p + 2:
        return failed(f"{n} points with step > 0 are too few for {p} parameters")
    if np.ptp(y) == 0:
        return failed(f"the {n} values with step > 0 are all {y[0]:g}; there is no curve to fit")
    if family in {"linear", "log_linear"}:
        basis = t if family == "linear" else np.log(t)
        design = np.column_stack([np.ones_like(t), basis])
        params, *_ = np.linalg.lstsq(design, y, rcond=None)
        at_bounds: tuple[str, ...] = ()
        message = "closed-form least squares"
    else:
        got = _fit_nonlinear(family, t, y, direction, limits)
        if isinstance(got, str):
            return failed(got)
        params, at_bounds, message = got
    if knee is not None:
        message += f"; fitted from the knee at step {t[0] * STEP_UNIT:g}"
    with np.errstate(all="ignore"):
        fitted = spec.func(t, direction, *params)
        jac = spec.jac(t, direction, *params)
    resid = y - fitted
    sse = float(np.sum(resid ** 2))
    if not (math.isfinite(sse) and np.all(np.isfinite(params))):
        return failed("the fit produced non-finite values")
    sst = float(np.sum((y - y.mean()) ** 2))
    dof = max(n - p, 1)
    sigma2 = sse / dof
    rho1 = lag1_autocorrelation(resid)
    inflation = (1 + max(rho1, 0.0)) / (1 - min(max(rho1, 0.0), 0.99))
    cov = _covariance(jac, spec.param_names, at_bounds, sigma2, inflation)
    if cov is None:
        message += "; parameter uncertainty unavailable (singular Jacobian)"
    # AIC/BIC of the Gaussian likelihood, counting the noise variance as a parameter.
    k = p + 1
    log_term = n * math.log(max(sse / n, _EPS))
    return FitResult(
        params=np.asarray(params, dtype=np.float64), covariance=cov, converged=True, message=message,
        sigma=math.sqrt(sigma2), r_squared=1 - sse / sst if sst > 0 else math.nan, rmse=math.sqrt(sse / n),
        aic=log_term + 2 * k, bic=log_term + k * math.log(n), residual_lag1=rho1, variance_inflation=inflation,
        at_bounds=at_bounds, **base,
    )


def fit_all(steps: np.ndarray, values: np.ndarray, *, direction: int, limits: Limits = Limits(),
            models: Sequence[str] | None = None) -> dict[str, FitResult]:
    """Fit every model that suits the direction; keys are model names in a fixed order."""
    return {m: fit_curve(m, steps, values, direction=direction, limits=limits)
            for m in (models or models_for(direction))}


# ------------------------------------------------------------------ backtests
@dataclass(frozen=True)
class Backtest:
    """One out-of-sample test: fit on steps <= cutoff, predict the rest."""

    model: str
    fraction: float
    cutoff_step: float
    n_train: int
    n_test: int
    converged: bool
    rmse: float | None = None
    mae: float | None = None
    bias: float | None = None           # mean(predicted - actual): > 0 means the model over-predicts
    end_error: float | None = None      # predicted - actual mean over the last 5 % of held-out points
    coverage: float | None = None       # share of held-out points inside the prediction interval
    message: str = ""                   # why the fit failed on this split ("" when it converged)

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def backtest(steps: np.ndarray, values: np.ndarray, *, direction: int, limits: Limits = Limits(),
             fractions: Sequence[float] = (0.3, 0.5, 0.7), models: Sequence[str] | None = None,
             level: float = DEFAULT_LEVEL) -> list[Backtest]:
    """Fit each model on the first ``fraction`` of the step range and score it on the remainder."""
    steps = np.asarray(steps, dtype=np.float64)
    values = np.asarray(values, dtype=np.float64)
    out: list[Backtest] = []
    first, last = float(steps[0]), float(steps[-1])
    for frac in fractions:
        cutoff = first + frac * (last - first)
        train = steps <= cutoff
        test = ~train
        for m in (models or models_for(direction)):
            n_train, n_test = int(train.sum()), int(test.sum())
            need = len(MODELS[m].param_names) + 2
            if n_train < need or n_test < 1:
                why = (f"{n_train} point(s) up to the cut-off, {need} needed for {len(MODELS[m].param_names)} "
                       f"parameters" if n_train < need else "no held-out point after the cut-off")
                out.append(Backtest(m, frac, cutoff, n_train, n_test, False, message=why))
                continue
            fit = fit_curve(m, steps[train], values[train], direction=direction, limits=limits)
            if not fit.converged:
                out.append(Backtest(m, frac, cutoff, n_train, n_test, False, message=fit.message))
                continue
            pred = fit.predict(steps[test])
            err = pred - values[test]
            band = fit.prediction_interval(steps[test], level)
            tail = max(1, int(round(0.05 * n_test)))
            inside = (values[test] >= band.low) & (values[test] <= band.high)
            out.append(Backtest(
                m, frac, cutoff, n_train, n_test, True,
                rmse=float(np.sqrt(np.mean(err ** 2))), mae=float(np.mean(np.abs(err))), bias=float(np.mean(err)),
                end_error=float(np.mean(pred[-tail:]) - np.mean(values[test][-tail:])),
                coverage=float(np.mean(inside)) if np.all(np.isfinite(band.low)) else None,
            ))
    return out


@dataclass(frozen=True)
class ModelChoice:
    """The forecasting model picked by out-of-sample error, with the ranking behind it."""

    model: str | None
    reason: str
    ranking: list[dict]   # [{"model", "mean_rmse", "splits_converged", "splits"}], best first


def choose_model(backtests: Sequence[Backtest], fits: dict[str, FitResult]) -> ModelChoice:
    """Pick the model with the lowest mean backtest RMSE among those that converged in every split
    and on all data; models failing a split rank after every model that never failed."""
    by_model: dict[str, list[Backtest]] = {}
    for b in backtests:
        by_model.setdefault(b.model, []).append(b)
    ranking = []
    for m, items in by_model.items():
        ok = [b.rmse for b in items if b.converged and b.rmse is not None]
        ranking.append({
            "model": m,
            "mean_rmse": float(np.mean(ok)) if ok else None,
            "splits_converged": len(ok),
            "splits": len(items),
            "full_fit_converged": bool(fits.get(m) and fits[m].converged),
        })
    ranking.sort(key=lambda r: (not (r["full_fit_converged"] and r["splits_converged"] == r["splits"]),
                                r["mean_rmse"] if r["mean_rmse"] is not None else math.inf))
    eligible = [r for r in ranking if r["full_fit_converged"] and r["mean_rmse"] is not None]
    if not eligible:
        return ModelChoice(None, "no model converged both on all data and in the backtests", ranking)
    best = eligible[0]
    reason = (f"lowest mean out-of-sample RMSE ({best['mean_rmse']:.4g}) over "
              f"{best['splits_converged']} backtest split(s)")
    return ModelChoice(best["model"], reason, ranking)
