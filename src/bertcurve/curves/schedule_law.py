"""Schedule-aware learning-curve law: predict a run's loss curve from its learning-rate schedule.

A curve fitted against steps cannot say what a longer run would reach: the end of a cosine
run flattens because its learning rate reaches zero, and a run twice as long follows another
curve all the way. The scaling law with learning-rate annealing (Tissue et al., 2024,
arXiv:2408.11029) writes the loss as a function of the schedule instead::

    L(s) = L0 + A * S1(s) ** -alpha - C * S2(s)

    S1(s) = sum_{i<=s} eta_i                      forward area: how far the weights travelled
    m_i   = lam * m_{i-1} + (eta_{i-1} - eta_i)     annealing momentum (decay only, after the peak)
    S2(s) = sum_{i<=s} m_i                        annealing area: the gain of lowering the rate

with ``eta`` the learning rate divided by its peak, so S1 counts steps at peak rate. The
same four numbers (L0, A, alpha, C) then predict the curve of any other schedule of the
same model, data, batch and peak rate, including longer ones: that is what
``bertcurve analyze --what-if-steps N`` does.

Everything here is a pure function of arrays: the learning rate per optimizer step is built
by the caller (from the run's config, or interpolated from a log's ``lr`` column).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
from scipy import optimize

# Annealing-momentum decay factors tried; the paper uses 0.999 for runs of tens of
# thousands of steps; short runs need a shorter memory. Chosen by least squares.
MOMENTUM_GRID = (0.9, 0.95, 0.99, 0.995, 0.999, 0.9995)
LAW_NAME = "lr-annealing"   # Tissue et al. 2024
MIN_POINTS = 6              # four parameters, and some left to judge the fit
MAX_POINTS = 300            # longer logs are thinned evenly: enough for four parameters, fast to refit
# Model error of a prediction for another decay shape than the fitted run's, as a share of the
# value: the RMS relative error of the five published cross-schedule cases in bench/what_if.py
# (0.2-1.7 %). A run's own backtest cannot see this error, so it is added in quadrature.
SHAPE_CHANGE_REL_SD = 0.011
#: Where the fitted points saw no annealing (C fixed at 0, not identified), the gain of a later
#: decay lies anywhere between none and the law's limit L0 (scaled by how far the rate falls):
#: predictions take this share of it, the centre of the range, the point that minimises the
#: worst-case error over a range the log cannot narrow (:func:`unidentified_gain`).
UNIDENTIFIED_GAIN_SHARE = 0.5
#: ... and the gain builds up after a drop of the rate with the annealing momentum of Tissue et al.
#: (2024), who use 0.999: without annealing in the points, the fitted momentum is not identified either.
UNIDENTIFIED_MOMENTUM = 0.999
#: Fitted points "saw annealing" when their annealing area S2 reaches this (else C stays 0).
SEEN_AREA = 1e-6


@dataclass(frozen=True)
class ScheduleAreas:
    """S1 and S2 of one schedule at every step 0..T (index = optimizer step)."""

    forward: np.ndarray     # S1
    annealing: np.ndarray   # S2

    @property
    def last_step(self) -> int:
        return len(self.forward) - 1


def schedule_areas(lr_per_step: Sequence[float], momentum: float) -> ScheduleAreas:
    """S1 and S2 of a schedule; ``lr_per_step[s]`` is the rate of update ``s`` (index 0 unused).

    The rate is normalised by its peak. Annealing is counted only after the peak: the
    warm-up's rising rate is not "negative annealing" (the paper's treatment of warm-up).
    """
    eta = np.asarray(lr_per_step, dtype=float)
    if eta.ndim != 1 or len(eta) < 2:
        raise ValueError("need the learning rate of at least one step")
    peak = float(np.max(eta))
    if not peak > 0:
        raise ValueError("the learning rate is never positive")
    eta = eta / peak
    forward = np.cumsum(eta)
    drop = np.zeros_like(eta)
    drop[1:] = eta[:-1] - eta[1:]
    drop[: int(np.argmax(eta)) + 1] = 0.0
    # m_i = lam m_{i-1} + drop_i is a first-order IIR filter; scipy's lfilter runs it in C.
    from scipy.signal import lfilter

    mom = lfilter([1.0], [1.0, -momentum], drop)
    return ScheduleAreas(forward=forward, annealing=np.cumsum(mom))


def law_value(params: Sequence[float], s1: np.ndarray, s2: np.ndarray) -> np.ndarray:
    """L0 + A * S1^-alpha - C * S2 (S1 clipped away from 0 for step 0)."""
    l0, a, alpha, c = params
    return l0 + a * np.power(np.maximum(s1, 1e-9), -alpha) - c * s2


@dataclass
class LawFit:
    """A fitted schedule law for one metric (``sign`` -1 for metrics that rise, like accuracy)."""

    params: tuple[float, float, float, float]   # L0, A, alpha, C in the metric's own units (times sign)
    momentum: float
    sign: float
    residual_sd: float
    n_points: int
    boot_params: np.ndarray = field(default_factory=lambda: np.empty((0, 4)))
    annealing_seen: bool = True     # did the fitted points see the rate fall (else C is fixed at 0)

    def predict(self, areas: ScheduleAreas, steps: Sequence[int]) -> np.ndarray:
        idx = np.asarray(steps, dtype=int)
        return self.sign * law_value(self.params, areas.forward[idx], areas.annealing[idx])

    def predict_boot(self, areas: ScheduleAreas, steps: Sequence[int]) -> np.ndarray:
        """One row per bootstrap refit (empty when none were made)."""
        idx = np.asarray(steps, dtype=int)
        rows = [self.sign * law_value(p, areas.forward[idx], areas.annealing[idx]) for p in self.boot_params]
        return np.asarray(rows).reshape(len(rows), len(idx))

    def as_dict(self) -> dict:
        l0, a, alpha, c = self.params
        return {"law": LAW_NAME, "L0": self.sign * l0, "A": self.sign * a, "alpha": alpha,
                "C": self.sign * c, "momentum": self.momentum, "residual_sd": self.residual_sd,
                "points": self.n_points}


def _fit_params(y: np.ndarray, s1: np.ndarray, s2: np.ndarray, start: Sequence[float] | None = None,
                l0_range: tuple[float, float] | None = None):
    """Least-squares (L0, A, alpha, C) with A, C >= 0 and alpha in (0, 3]; None when it fails.

    L0, the value the run would reach with infinite steps at peak rate, stays within
    ``l0_range`` (by default up to ten spreads beyond the data, never past its best value).
    """
    spread = float(np.ptp(y)) or 1.0
    lo = [float(np.min(y)) - 10 * spread, 0.0, 1e-3, 0.0]
    hi = [float(np.min(y)), np.inf, 3.0, np.inf]
    if l0_range is not None:
        lo[0] = max(lo[0], l0_range[0])
        hi[0] = min(hi[0], l0_range[1])
        if hi[0] <= lo[0]:
            hi[0] = lo[0] + 1e-9
    # No annealing in these points: C cannot be learned from them, so it stays 0 and only
    # (L0, A, alpha) are fitted (a bound of width ~0 on C instead made refits crawl to max_nfev);
    # the caller takes the unidentified gain into account (unidentified_gain).
    free = 4 if float(np.max(s2)) >= SEEN_AREA else 3
    if start is None:
        start = [float(np.min(y)), spread * max(float(np.min(s1[s1 > 0])), 1.0) ** 0.5, 0.5,
                 spread / max(float(np.max(s2)), 1.0) * 0.1]
    lo, hi = lo[:free], hi[:free]
    start = np.clip(np.asarray(start, dtype=float)[:free], np.asarray(lo) + 1e-12,
                    np.where(np.isfinite(hi), np.asarray(hi) - 1e-12, np.inf))

    def full(p):
        return p if free == 4 else np.append(p, 0.0)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            res = optimize.least_squares(lambda p: law_value(full(p), s1, s2) - y, start, bounds=(lo, hi),
                                         x_scale="jac", max_nfev=4000)
        except (ValueError, FloatingPointError):
            return None
    if not np.all(np.isfinite(res.x)):
        return None
    return full(res.x), float(np.sum(res.fun ** 2))


def fit_law(steps: Sequence[int], values: Sequence[float], lr_per_step: Sequence[float], *,
            rising: bool = False, bootstrap: int = 200, block: int | None = None,
            seed: int = 0, bounds: tuple[float | None, float | None] = (None, None)) -> LawFit:
    """Fit the law to ``values`` observed at ``steps`` of the schedule ``lr_per_step``.

    ``rising`` metrics (accuracy) are fitted as their negative, so the same law with
    non-negative A and C describes both. The momentum factor is chosen from
    :data:`MOMENTUM_GRID` by least squares. ``bootstrap`` refits on moving-block resampled
    residuals (blocks keep the autocorrelation of an evaluation curve) give the parameter
    uncertainty. ``bounds`` are the metric's possible values (a loss >= 0, an accuracy in
    [0, 1]); the limit L0 stays inside them. Long logs are thinned to :data:`MAX_POINTS`
    evenly spaced evaluations. Raises ValueError when the points cannot support a fit.
    """
    x = np.asarray(steps, dtype=int)
    sign = -1.0 if rising else 1.0
    y = sign * np.asarray(values, dtype=float)
    keep = (x >= 1) & (x < len(lr_per_step)) & np.isfinite(y)
    x, y = x[keep], y[keep]
    if len(x) > MAX_POINTS:
        pick = np.unique(np.linspace(0, len(x) - 1, MAX_POINTS).round().astype(int))
        x, y = x[pick], y[pick]
    low, high = bounds
    if rising:
        low, high = (None if high is None else -high), (None if low is None else -low)
    l0_range = (-np.inf if low is None else low, np.inf if high is None else high)
    if len(x) < MIN_POINTS:
        raise ValueError(f"the schedule law needs at least {MIN_POINTS} evaluations after step 0, got {len(x)}")
    best = None
    for momentum in MOMENTUM_GRID:
        areas = schedule_areas(lr_per_step, momentum)
        got = _fit_params(y, areas.forward[x], areas.annealing[x], l0_range=l0_range)
        if got is not None and (best is None or got[1] < best[2]):
            best = (momentum, got[0], got[1], areas)
    if best is None:
        raise ValueError("the schedule law did not converge on this curve")
    momentum, params, sse, areas = best
    s1, s2 = areas.forward[x], areas.annealing[x]
    fitted = law_value(params, s1, s2)
    resid = y - fitted
    dof = max(len(y) - 4, 1)
    boot = _block_bootstrap(params, fitted, resid, s1, s2, bootstrap, block, seed, l0_range)
    return LawFit(params=tuple(float(p) for p in params), momentum=momentum, sign=sign,
                  residual_sd=math.sqrt(sse / dof), n_points=len(y), boot_params=boot,
                  annealing_seen=bool(float(np.max(s2)) >= SEEN_AREA))


def _block_bootstrap(params, fitted, resid, s1, s2, n_boot, block, seed, l0_range) -> np.ndarray:
    """Refits of the law on fitted + moving-block resampled residuals."""
    n = len(resid)
    if n_boot <= 0:
        return np.empty((0, 4))
    block = block or max(2, int(round(n ** (1 / 3))))
    rng = np.random.default_rng(seed)
    starts_max = n - block + 1
    rows = []
    for _ in range(n_boot):
        starts = rng.integers(0, starts_max, size=math.ceil(n / block))
        sample = np.concatenate([resid[s:s + block] for s in starts])[:n]
        got = _fit_params(fitted + sample - sample.mean(), s1, s2, start=params, l0_range=l0_range)
        if got is not None:
            rows.append(got[0])
    return np.asarray(rows).reshape(len(rows), 4)


def rate_fallen(lr_per_step: Sequence[float]) -> np.ndarray:
    """Per step, how far the rate has fallen below its peak (0..1), with the law's lag:
    (1 - lam) * S2 at the paper's momentum lam = :data:`UNIDENTIFIED_MOMENTUM`, which tends to
    1 - eta a few 1 / (1 - lam) steps after a drop."""
    annealing = schedule_areas(lr_per_step, UNIDENTIFIED_MOMENTUM).annealing
    return np.clip((1.0 - UNIDENTIFIED_MOMENTUM) * annealing, 0.0, 1.0)


def unidentified_gain(fit: LawFit, areas: ScheduleAreas, fallen: np.ndarray, steps: Sequence[int],
                      fitted_last_step: float) -> tuple[np.ndarray, np.ndarray]:
    """(taken, whole): the annealing gain the fitted points could not identify, at ``steps`` of a
    schedule with ``areas`` (at ``fit.momentum``) and ``fallen`` (:func:`rate_fallen`).

    When the fit saw no annealing its C is 0, so ``fit.predict`` carries no gain of a decay; the
    gain lies anywhere between none and the limit L0: ``whole`` = (no-gain prediction - L0) x how
    far the rate has fallen, at steps after ``fitted_last_step`` (0 elsewhere, and everywhere
    when the fit saw annealing). ``taken`` = :data:`UNIDENTIFIED_GAIN_SHARE` x ``whole`` is what
    a prediction subtracts. Both are in the metric's units (negative for a rising metric).
    """
    idx = np.asarray(steps, dtype=int)
    if fit.annealing_seen or not math.isfinite(fitted_last_step):
        zero = np.zeros(idx.shape)
        return zero, zero
    no_gain = fit.predict(areas, idx)
    limit = fit.sign * fit.params[0]
    whole = np.where(idx > fitted_last_step, (no_gain - limit) * fallen[idx], 0.0)
    return UNIDENTIFIED_GAIN_SHARE * whole, whole


def predict_planned(fit: LawFit, lr_per_step: Sequence[float], steps: Sequence[int],
                    fitted_last_step: float) -> np.ndarray:
    """The law's prediction at ``steps`` of the schedule ``lr_per_step``, with the share of an
    unidentified annealing gain taken (:func:`unidentified_gain`) after ``fitted_last_step``."""
    areas = schedule_areas(lr_per_step, fit.momentum)
    taken, _ = unidentified_gain(fit, areas, _fallen_if_needed(fit, lr_per_step), steps, fitted_last_step)
    return fit.predict(areas, steps) - taken


def _fallen_if_needed(fit: LawFit, lr_per_step: Sequence[float]) -> np.ndarray:
    return np.zeros(0) if fit.annealing_seen else rate_fallen(lr_per_step)


def prediction_interval(fit: LawFit, areas: ScheduleAreas, steps: Sequence[int], level: float,
                        extra_sd: float = 0.0, observation: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Interval for a future evaluation: bootstrap spread of the curve, the evaluation noise
    (the fit's residual SD; left out with ``observation=False``, for the curve itself) and
    ``extra_sd`` (model error measured by backtest), combined in quadrature around the point
    prediction."""
    from scipy.stats import norm

    centre = fit.predict(areas, steps)
    boot = fit.predict_boot(areas, steps)
    curve_sd = boot.std(axis=0, ddof=1) if len(boot) > 2 else np.zeros_like(centre)
    z = float(norm.ppf(0.5 + level / 2))
    noise = fit.residual_sd if observation else 0.0
    half = z * np.sqrt(curve_sd ** 2 + noise ** 2 + extra_sd ** 2)
    return centre - half, centre + half


@dataclass(frozen=True)
class LawForecast:
    """The law's prediction at one step: value, interval, and what the interval is made of."""

    value: float
    low: float
    high: float
    extra_sd: float                          # model error beyond the fit's own (backtest, shape change)
    backtest: tuple[float, float] | None     # (error, horizon) of the run's own backtest, if possible


def forecast_at(fit: LawFit, steps: Sequence[int], values: Sequence[float], lr_per_step: Sequence[float],
                new_lr_per_step: Sequence[float], at: int, *, level: float, observation: bool = True,
                shape_changed: bool = False, bounds: tuple[float | None, float | None] = (None, None),
                model_error: float | None = None) -> LawForecast:
    """Predict the metric at step ``at`` of the schedule ``new_lr_per_step`` from ``fit``
    (fitted to ``values`` at ``steps`` of ``lr_per_step``), with an honest interval.

    The interval combines the fit's bootstrap spread, the evaluation noise (``observation``)
    and the model error: the run's own backtest error grown to this horizon (or
    ``model_error``, a standard deviation measured elsewhere, when given: then no backtest
    is made), plus the published cross-schedule error when the decay shape changes. It is
    clipped to ``bounds``, the metric's possible values.

    When the fitted points saw no annealing (``fit.annealing_seen`` False) and the new schedule
    decays after them, the value takes the centre of the unidentified gain and the interval
    spans the whole range, from the no-gain prediction's worse edge to its better edge moved by
    the whole gain (:func:`unidentified_gain`).
    """
    rising = fit.sign < 0
    backtest = None
    if model_error is None:
        backtest = backtest_error(steps, values, lr_per_step, rising=rising, bounds=bounds)
        extra = model_error_sd(backtest, max(0.0, at - float(np.max(steps))))
    else:
        extra = model_error
    if shape_changed:
        extra = math.hypot(extra, SHAPE_CHANGE_REL_SD * abs(fit.params[0]))
    areas = schedule_areas(new_lr_per_step, fit.momentum)
    taken, whole = unidentified_gain(fit, areas, _fallen_if_needed(fit, new_lr_per_step), [at],
                                     float(np.max(steps)))
    value = float(fit.predict(areas, [at])[0] - taken[0])
    lo, hi = prediction_interval(fit, areas, [at], level, extra_sd=extra, observation=observation)
    # the interval is the no-gain prediction's, its better edge moved by the whole unidentified gain
    lo = float(lo[0]) - max(float(whole[0]), 0.0)
    hi = float(hi[0]) - min(float(whole[0]), 0.0)
    low = -math.inf if bounds[0] is None else bounds[0]
    high = math.inf if bounds[1] is None else bounds[1]
    return LawForecast(value=value, low=min(max(lo, low), high),
                       high=min(max(hi, low), high), extra_sd=extra, backtest=backtest)


# ------------------------------------------------------------------ schedules to predict

def stretched_schedule(lr_per_step: Sequence[float], new_last_step: int, shape: str,
                       decay_fraction: float = 0.2, final: float | None = None) -> np.ndarray:
    """The learning rate per step of a run like ``lr_per_step`` but ``new_last_step`` long.

    The warm-up (steps up to the peak) and the peak rate stay; after them the rate follows
    ``shape`` from the peak to the run's final rate (or ``final``, for a run that never
    decayed) at the new end: ``cosine``, ``linear``, ``constant`` (no decay), or ``wsd``
    (constant, then a linear cooldown over the last ``decay_fraction`` of the steps).
    """
    eta = np.asarray(lr_per_step, dtype=float)
    peak_at = int(np.argmax(eta))
    peak = float(eta[peak_at])
    final = float(eta[-1]) if final is None else float(final)
    if new_last_step <= peak_at:
        raise ValueError(f"{new_last_step:,} steps end inside the warm-up ({peak_at:,} steps)")
    out = np.empty(new_last_step + 1)
    out[: peak_at + 1] = eta[: peak_at + 1]
    s = np.arange(peak_at + 1, new_last_step + 1)
    progress = (s - peak_at) / (new_last_step - peak_at)
    if shape == "cosine":
        out[peak_at + 1:] = final + (peak - final) * 0.5 * (1 + np.cos(np.pi * progress))
    elif shape == "linear":
        out[peak_at + 1:] = final + (peak - final) * (1 - progress)
    elif shape == "constant":
        out[peak_at + 1:] = peak
    elif shape == "wsd":
        decay_start = new_last_step - decay_fraction * (new_last_step - peak_at)
        frac = np.clip((s - decay_start) / max(new_last_step - decay_start, 1), 0, 1)
        out[peak_at + 1:] = peak + (final - peak) * frac
    else:
        raise ValueError(f"unknown schedule shape {shape!r}: use cosine, linear, constant or wsd")
    return out


def lr_from_log(steps: Sequence[float], lrs: Sequence[float], last_step: int) -> np.ndarray:
    """Per-step learning rate from a log's sparse ``lr`` records (linear interpolation;
    before the first record a linear warm-up from 0, after the last record the last rate)."""
    st = np.asarray(steps, dtype=float)
    lr = np.asarray(lrs, dtype=float)
    ok = np.isfinite(st) & np.isfinite(lr)
    st, lr = st[ok], lr[ok]
    order = np.argsort(st, kind="stable")
    st, lr = st[order], lr[order]
    if len(st) == 0:
        raise ValueError("the log has no learning-rate values")
    if st[0] > 0:
        st, lr = np.concatenate([[0.0], st]), np.concatenate([[0.0], lr])
    grid = np.arange(last_step + 1, dtype=float)
    return np.interp(grid, st, lr)


def backtest_error(steps: Sequence[int], values: Sequence[float], lr_per_step: Sequence[float], *,
                   rising: bool = False, fraction: float = 0.6,
                   bounds: tuple[float | None, float | None] = (None, None)) -> tuple[float, float] | None:
    """Model error of the law on this run: fit on evaluations up to ``fraction`` of the steps,
    predict the mean of the last 10 % of evaluations (the schedule is known there).

    Returns (error, horizon): predicted minus actual, and how many steps past the fitted
    points the prediction reached; None when too few points remain on either side.
    """
    x = np.asarray(steps, dtype=float)
    y = np.asarray(values, dtype=float)
    cutoff = x.min() + fraction * (x.max() - x.min())
    # The fitted part must see some annealing, else C is unknown: move the cut to where the
    # rate has made half of its decay (the middle of a WSD cooldown), at most 90 % of the steps.
    eta = np.asarray(lr_per_step, dtype=float)
    peak_at = int(np.argmax(eta))
    half = eta[peak_at] - 0.5 * (eta[peak_at] - eta[-1])
    below = np.nonzero(eta[peak_at:] <= half)[0]
    if len(below):
        cutoff = max(cutoff, min(float(peak_at + below[0]), x.min() + 0.9 * (x.max() - x.min())))
    train = x <= cutoff
    tail = x >= x.max() - 0.1 * (x.max() - x.min())
    if train.sum() < MIN_POINTS + 2 or tail.sum() < 1 or (~train).sum() < 2:
        return None
    try:
        fit = fit_law(x[train], y[train], lr_per_step, rising=rising, bootstrap=0, bounds=bounds)
    except ValueError:
        return None
    predicted = float(predict_planned(fit, lr_per_step, x[tail].astype(int), float(x[train].max())).mean())
    return predicted - float(y[tail].mean()), float(x[tail].mean() - x[train].max())


def model_error_sd(backtest: tuple[float, float] | None, horizon: float) -> float:
    """Model-error standard deviation for a prediction ``horizon`` steps past the fitted data,
    grown from the run's own backtest error like a random walk (sqrt of the horizon ratio)."""
    if backtest is None:
        return 0.0
    error, seen = backtest
    return abs(error) * math.sqrt(max(horizon, seen) / max(seen, 1.0))
