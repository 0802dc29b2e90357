"""The forecast of a learning curve: a combination of curve families weighted by how well each
predicted held-out steps, with intervals calibrated on those same out-of-sample errors.

How it works (docs/analysis.md has the reasoning):

1. Every family (:func:`bertcurve.curves.fits.models_for`) is fitted on all points, and on the
   points up to each backtest cut-off (rolling origin), predicting the rest.
2. Each family's out-of-sample score is the root mean square, over the cut-offs where it
   converged, of its error on the mean of the last quarter of the held-out points, divided by
   how far ahead that is (``ln(step / cut-off)``): error per unit of log-horizon, so short and
   long backtests are on one scale. A cut-off where a family fails is listed with the reason (in
   the table and the JSON); the family is scored on the others.
3. The forecast combines the three best-scored families that converged on all points, weighted
   by the inverse of their scores. With no usable backtest (a very short log) the weights fall
   back to Akaike weights of the full fits, and the reason says so.
4. The interval: the same combination, rebuilt from each cut-off's fits, is scored on bins of the
   held-out points as |error| / ln(step / cut-off) (a normalised conformal score); the
   ``level`` quantile of those scores times ``ln(step / last step)`` gives the out-of-sample
   half-width at a forecast step, added in quadrature to the fit's own delta-method half-width.
5. With the run's planned learning-rate schedule (``schedule=``, from its config), the
   schedule-aware law (:mod:`bertcurve.curves.schedule_law`) is one more candidate, fitted and
   backtested like the families (it needs :data:`LAW_MIN_POINTS` points). Where the schedule
   anneals after the fitted points and those points saw no annealing, the gain is not identified
   by the log: the law's point forecast takes the centre of the open range (half the way to its
   limit, scaled by how far the rate has fallen, with the law's lag: the one rule of
   :func:`bertcurve.curves.schedule_law.unidentified_gain`, which ``analyze --what-if-steps`` uses
   too), and the interval spans the whole range, from the no-gain forecast to the law's limit
   (:meth:`CurveForecast.interval`). The step-only families then follow the plan too: each adds
   the law's :meth:`ScheduleLawFit.plan_change` (its forecast under the plan less its forecast had
   the rate stayed where the log last saw it) to its own extrapolation of the constant-rate curve.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Sequence

import numpy as np
from bertcurve.curves.stats import DEFAULT_LEVEL

from bertcurve.curves.fits import (
    STEP_UNIT, Backtest, Band, FitResult, Limits, _first_crossing, fit_all, fit_curve, models_for,
)

#: Held-out points of a cut-off are scored in this many equal-count bins (bin means average noise).
CALIBRATION_BINS = 4
#: The end of a cut-off's held-out part that scores a family (a forecast is about the end).
END_SHARE = 0.25
#: How many of the best-scored families the forecast combines. Chosen on bench/forecast.py
#: together with the inverse-score weights: combining the best three was more robust than the
#: single best (which a short backtest often picks by luck) and than all families.
COMBINED = 3
#: Backtests use at most this many evenly spaced points (they judge the curve's shape; a
#: 100,000-point log would otherwise be refitted 35 times on every point).
BACKTEST_MAX_POINTS = 5000
#: The schedule law is fitted (on a cut-off or on all points) only with at least this many points:
#: ten per parameter, the usual rule for a nonlinear fit. On fewer, noisy points its four
#: parameters extrapolate wildly (on bench/forecast.py a 38-point log got a loss forecast 0.7 below
#: the truth), and its backtests have too few cut-offs to notice before it carries weight.
LAW_MIN_POINTS = 40
#: The fitted points "saw no annealing" when their lowest planned rate is at least this share of
#: the peak: then the law's annealing coefficient is not identified by the log.
SEEN_ANNEALING = 0.9
#: ... and a forecast step is past unseen annealing when its planned rate is below this share of
#: the lowest rate the fitted points saw (see CurveForecast.interval).
UNSEEN_ANNEALING = 0.5


#: Name of the schedule-aware candidate in weights, rankings and backtests.
SCHEDULE_LAW = "schedule_law"
#: A planned schedule is stored in analysis.json as at most this many (step, rate) knots.
SCHEDULE_KNOTS = 2000


@dataclass(frozen=True)
class ScheduleLawFit:
    """The schedule-aware law (:mod:`bertcurve.curves.schedule_law`) as one more forecasting
    family: the metric as a function of the learning-rate areas S1 and S2 of the run's planned
    schedule, so a decay after the fitted points is foreseen. Quacks like a FitResult where the
    forecast needs it (``predict``, ``confidence_interval``, ``converged``, ``message``)."""

    model: str
    converged: bool
    message: str
    law: object | None = field(default=None, repr=False)         # schedule_law.LawFit
    areas: object | None = field(default=None, repr=False)       # schedule_law.ScheduleAreas
    schedule: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False)
    n: int = 0
    lower: float | None = None
    upper: float | None = None
    fitted_last_step: float = math.nan  # the last step the law was fitted on

    def predict(self, steps: Sequence[float] | np.ndarray) -> np.ndarray:
        """The law at ``steps`` (NaN before step 1 or without a fit). Past the end of the planned
        schedule the run has stopped, so the law holds its value there: steps the plan does not
        contain buy nothing (a longer run is a different plan: ``analyze --what-if-steps``).

        When the fitted points saw no annealing, the law's C is not identified (it was fixed at 0):
        the gain of the annealing still to come lies anywhere between none and all the way to the
        limit L0 (the interval's better edge, :meth:`CurveForecast.interval`). At a step past the
        fitted ones, the law then predicts the centre of that range scaled by how far the planned
        rate has fallen below its peak, ``no_gain - (no_gain - L0) * fallen / 2``, where ``fallen``
        is ``1 - eta`` (``eta`` the rate over its peak) reached with the law's own lag after each drop
        (:meth:`_rate_fallen`). The centre minimises the worst-case error over a range the log cannot
        narrow (:func:`bertcurve.curves.schedule_law.unidentified_gain`; :meth:`gain_taken`)."""
        s = np.asarray(steps, dtype=np.float64).reshape(-1)
        out = np.full(s.shape, np.nan)
        if not self.converged:
            return out
        idx = np.minimum(np.round(s).astype(np.int64), self.areas.last_step)
        ok = idx >= 1
        if ok.any():
            out[ok] = self.law.predict(self.areas, idx[ok]) - self._gain_taken(idx[ok])
        return _clip(out, Limits(self.lower, self.upper))

    @property
    def annealing_seen(self) -> bool:
        """Did the fitted points see the rate fall (else the law's C is not identified)."""
        return self.law is None or self.law.annealing_seen

    @property
    def decay_unidentified(self) -> bool:
        """The plan lowers the rate after the fitted steps, and the fitted points saw no annealing."""
        if not self.converged or self.annealing_seen or not math.isfinite(self.fitted_last_step):
            return False
        ahead = self.schedule[int(self.fitted_last_step) + 1:]
        return bool(ahead.size and float(np.min(ahead)) < float(np.max(self.schedule)))

    def gain_taken(self, steps: Sequence[float] | np.ndarray) -> np.ndarray:
        """How much of the unidentified annealing gain :meth:`predict` took at ``steps``, in the
        metric's units (positive for a falling metric, negative for a rising one; 0 where the fit
        saw annealing, at steps it saw, before the peak, or where the rate has not fallen)."""
        s = np.asarray(steps, dtype=np.float64).reshape(-1)
        if not self.converged:
            return np.zeros(s.shape)
        idx = np.minimum(np.maximum(np.round(s).astype(np.int64), 1), self.areas.last_step)
        return self._gain_taken(idx)

    def _gain_taken(self, idx: np.ndarray) -> np.ndarray:
        from bertcurve.curves import schedule_law as law

        if self.annealing_seen:
            return np.zeros(idx.shape)
        taken, _ = law.unidentified_gain(self.law, self.areas, self._rate_fallen, idx, self.fitted_last_step)
        return taken

    @cached_property
    def _rate_fallen(self) -> np.ndarray:
        """:func:`bertcurve.curves.schedule_law.rate_fallen` of the planned schedule (cached: the
        forecast's searches call :meth:`predict` many times)."""
        from bertcurve.curves import schedule_law as law

        return law.rate_fallen(self.schedule)

    def plan_change(self, steps: Sequence[float] | np.ndarray) -> np.ndarray:
        """What the rest of the planned schedule changes in the metric, by the law: its prediction
        under the plan (:meth:`predict`, with the share of an unidentified gain it takes) less its
        prediction had the rate stayed where the fitted points last saw it. 0 at or before the
        last fitted step, and everywhere without a fit.

        The step-only families extrapolate the curve under the rate they saw; where the plan
        lowers it later, this is what they add to stay on the plan (:meth:`CurveForecast.predict`).
        """
        s = np.asarray(steps, dtype=np.float64).reshape(-1)
        if not self.converged:
            return np.zeros(s.shape)
        idx = np.minimum(np.maximum(np.round(s).astype(np.int64), 1), self.areas.last_step)
        with np.errstate(all="ignore"):
            held = _clip(self.law.predict(self._held_areas, idx), Limits(self.lower, self.upper))
            change = self.predict(idx.astype(np.float64)) - held
        return np.where(s > self.fitted_last_step, np.nan_to_num(change, nan=0.0), 0.0)

    @cached_property
    def _held_areas(self):
        """The law's areas of the schedule that keeps the last fitted step's rate to the end."""
        from bertcurve.curves import schedule_law as law

        held = self.schedule.copy()
        last = min(int(self.fitted_last_step), held.size - 1)
        held[last + 1:] = held[last]
        return law.schedule_areas(held, self.law.momentum)

    def confidence_interval(self, steps: Sequence[float] | np.ndarray, level: float = DEFAULT_LEVEL) -> Band:
        """The law's own uncertainty about the curve: the standard error of a mean of its residuals
        over its four parameters' worth of points (the out-of-sample part of the forecast interval
        carries the rest)."""
        from scipy import stats as sps

        centre = self.predict(steps)
        if not self.converged:
            return Band(centre, centre, level)
        q = sps.t.ppf(0.5 + level / 2, max(self.n - 4, 1))
        half = q * self.law.residual_sd * math.sqrt(4.0 / max(self.n, 4))
        return Band(centre - half, centre + half, level)

    def to_dict(self) -> dict:
        knots = np.unique(np.linspace(0, self.schedule.size - 1, min(self.schedule.size, SCHEDULE_KNOTS))
                          .round().astype(np.int64)) if self.schedule.size else np.zeros(0, dtype=np.int64)
        return {"model": self.model, "converged": self.converged, "message": self.message, "n": self.n,
                "law": self.law.as_dict() if self.converged else None,
                "sign": self.law.sign if self.converged else None,
                "schedule_knots": [[int(i), float(self.schedule[i])] for i in knots],
                "lower": self.lower, "upper": self.upper, "annealing_seen": self.annealing_seen,
                "fitted_last_step": self.fitted_last_step if math.isfinite(self.fitted_last_step) else None}

    @classmethod
    def from_dict(cls, d: dict) -> "ScheduleLawFit":
        from bertcurve.curves import schedule_law as law

        knots = np.asarray(d.get("schedule_knots") or [], dtype=np.float64).reshape(-1, 2)
        schedule = law.lr_from_log(knots[:, 0], knots[:, 1], int(knots[-1, 0])) if len(knots) else np.zeros(0)
        if not d.get("converged") or not d.get("law") or not len(knots):
            return cls(SCHEDULE_LAW, False, d.get("message", ""), schedule=schedule)
        p = d["law"]
        sign = float(d.get("sign") or 1.0)
        fit = law.LawFit(params=(sign * p["L0"], sign * p["A"], p["alpha"], sign * p["C"]),
                         momentum=float(p["momentum"]), sign=sign, residual_sd=float(p["residual_sd"]),
                         n_points=int(p["points"]), annealing_seen=bool(d.get("annealing_seen", True)))
        return cls(SCHEDULE_LAW, True, d.get("message", ""), law=fit,
                   areas=law.schedule_areas(schedule, fit.momentum), schedule=schedule, n=int(d.get("n", 0)),
                   lower=d.get("lower"), upper=d.get("upper"),
                   fitted_last_step=float(d.get("fitted_last_step") or math.nan))


def fit_schedule_law(steps: np.ndarray, values: np.ndarray, schedule: np.ndarray, *, direction: int,
                     limits: Limits = Limits()) -> ScheduleLawFit:
    """Fit the schedule-aware law to the points; never raises, says why when it cannot."""
    from bertcurve.curves import schedule_law as law

    base = dict(schedule=schedule, lower=limits.lower, upper=limits.upper)
    s = np.asarray(steps, dtype=np.float64)
    keep = (s >= 1) & (s <= schedule.size - 1)
    n = int(keep.sum())
    if n < LAW_MIN_POINTS:
        return ScheduleLawFit(SCHEDULE_LAW, False, f"{n} point(s) inside the planned schedule, "
                              f"{LAW_MIN_POINTS} needed for the law's four parameters", n=n, **base)
    fitted = np.round(s[keep]).astype(np.int64)
    try:
        fit = law.fit_law(fitted, np.asarray(values, dtype=np.float64)[keep], schedule,
                          rising=direction > 0, bootstrap=0, bounds=(limits.lower, limits.upper))
    except ValueError as exc:
        return ScheduleLawFit(SCHEDULE_LAW, False, str(exc), n=n, **base)
    areas = law.schedule_areas(schedule, fit.momentum)
    # fit_law fixes C at 0 when the points carry no annealing area: then the gain is unidentified.
    out = ScheduleLawFit(SCHEDULE_LAW, True, f"converged (momentum {fit.momentum})", law=fit, areas=areas, n=n,
                         fitted_last_step=float(fitted.max()), **base)
    if out.decay_unidentified:
        out = replace(out, message=out.message + "; no annealing seen before the planned decay, so the forecast "
                                                 "takes half of its unidentified gain")
    return out


@dataclass(frozen=True)
class CurveForecast:
    """Fitted families, their backtests, the weights that combine them and the calibration."""

    direction: int
    limits: Limits
    level: float
    fits: dict[str, FitResult]
    backtests: list[Backtest]
    weights: dict[str, float]                 # family -> weight (sum 1); converged full fits only
    ranking: list[dict]                       # per family: score, weight, failures, best first
    rule: str                                 # "backtest-weighted" | "akaike-weighted" | "none"
    reason: str
    calibration: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0))
    first_step: float = math.nan
    last_step: float = math.nan
    schedule_fit: ScheduleLawFit | None = None   # the schedule-aware candidate, when a schedule was given
    follow_plan: bool = False                   # the families add the law's plan_change (families_follow_plan)

    # -- what it says -----------------------------------------------------------------
    @property
    def model(self) -> str | None:
        """The curve family (of ``fits``) with the largest weight (the one the text names), or None."""
        curves = {m: w for m, w in self.weights.items() if m in self.fits}
        return max(curves, key=curves.get) if curves else None

    def member(self, name: str):
        """The fitted family or schedule law called ``name`` in the weights."""
        return self.schedule_fit if name == SCHEDULE_LAW else self.fits[name]

    @property
    def converged(self) -> bool:
        return bool(self.weights)

    @property
    def start_step(self) -> float:
        """The first step the combined curve describes: the latest knee of a weighted family fitted
        from its knee on (before it, that family would extrapolate backwards), else the first step."""
        knees = [self.fits[m].first_step for m in self.weights if m in self.fits and self.fits[m].from_knee]
        return max([self.first_step, *knees]) if knees else self.first_step

    @property
    def main_fit(self) -> FitResult | None:
        return self.fits.get(self.model) if self.model else None

    @property
    def whole_fit(self) -> FitResult | None:
        """The leading fit of every point, for what is compared with every point (residuals, the
        trend test, the correlation figure): ``main_fit``, or where that was fitted from the knee,
        the first fit of every point in the ranking (by weight, then out-of-sample score), else
        the same family fitted on all points, else None."""
        main = self.main_fit
        if main is None or not main.from_knee:
            return main
        for row in self.ranking:
            fit = self.fits.get(row["model"])
            if fit is not None and fit.converged and not fit.from_knee and row.get("score") is not None:
                return fit
        same = self.fits.get(main.family)
        return same if same is not None and same.converged else None

    @property
    def families_follow_plan(self) -> bool:
        """Do the step-only families take the schedule law's :meth:`ScheduleLawFit.plan_change`?
        Only where the fitted points saw no annealing and the plan anneals later (``follow_plan``,
        set by :func:`build_forecast`): their curve is then the curve of a constant rate, and the
        change is all the plan's. Where the points saw some annealing, the families' shape carries
        part of its effect already (adding the change there doubled it on bench/forecast.py's
        cosine logs)."""
        return self.follow_plan and self.schedule_fit is not None and self.schedule_fit.converged

    def family_change(self, steps: Sequence[float] | np.ndarray) -> np.ndarray:
        """What each step-only family adds to its own prediction at ``steps``: the law's
        :meth:`ScheduleLawFit.plan_change` where the families follow the plan, else 0."""
        s = np.asarray(steps, dtype=np.float64).reshape(-1)
        return self.schedule_fit.plan_change(s) if self.families_follow_plan else np.zeros(s.shape)

    def _raw_kilo(self, t: np.ndarray) -> np.ndarray:
        out = np.zeros_like(t, dtype=np.float64)
        change = self.family_change(t * STEP_UNIT)
        for m, w in self.weights.items():
            value = self.member(m).predict(t * STEP_UNIT)
            out = out + w * (value if m == SCHEDULE_LAW else value + change)
        return out

    def predict(self, steps: Sequence[float] | np.ndarray) -> np.ndarray:
        """The combined forecast at ``steps`` (NaN when nothing converged)."""
        s = np.asarray(steps, dtype=np.float64).reshape(-1)
        if not self.weights:
            return np.full(s.shape, np.nan)
        with np.errstate(all="ignore"):
            return _clip(self._raw_kilo(s / STEP_UNIT), self.limits)

    def half_width(self, steps: Sequence[float] | np.ndarray, level: float | None = None) -> np.ndarray:
        """Half-width of the forecast interval: the out-of-sample part and the fits' own, in quadrature."""
        level = self.level if level is None else level
        s = np.asarray(steps, dtype=np.float64).reshape(-1)
        ahead = np.log(np.maximum(s, self.last_step) / self.last_step) if self.last_step > 0 else np.zeros_like(s)
        q = conformal_quantile(self.calibration, level)
        own = np.zeros_like(s)
        for m, w in self.weights.items():
            band = self.member(m).confidence_interval(s, level)
            with np.errstate(invalid="ignore"):
                half = np.nan_to_num((band.high - band.low) / 2, nan=0.0)
            own = own + w * half
        return np.sqrt((q * ahead) ** 2 + own ** 2)

    def interval(self, steps: Sequence[float] | np.ndarray, level: float | None = None) -> Band:
        """The forecast interval at ``steps`` for the curve's (mean) value.

        Where the planned schedule anneals further than the fitted points ever saw, the gain of
        that annealing is not identified by the log (no curve of steps sees it, and the law's
        annealing coefficient is unknown without it): the interval's better edge then reaches to
        the fitted asymptote (the level of an endless run at the peak rate, which annealing is
        taken not to pass), instead of pretending the gain is known to be small.
        """
        level = self.level if level is None else level
        s = np.asarray(steps, dtype=np.float64).reshape(-1)
        centre = self.predict(s)
        half = self.half_width(s, level)
        low, high = centre - half, centre + half
        # The law's point forecast took part of an unidentified annealing gain (ScheduleLawFit.predict),
        # and so did every family that follows the plan; the worse edge keeps the no-gain side of that
        # range inside the interval.
        law_w = 1.0 if self.families_follow_plan else self.weights.get(SCHEDULE_LAW, 0.0)
        if law_w > 0 and self.schedule_fit is not None:
            shift = law_w * np.nan_to_num(self.schedule_fit.gain_taken(s), nan=0.0)
            if self.direction < 0:
                high = high + shift
            else:
                low = low + shift
        reach = self.unseen_annealing(s)
        best = self.annealing_reach() if reach.any() else math.nan
        if math.isfinite(best):
            if self.direction < 0:
                low = np.where(reach, np.minimum(low, best), low)
            else:
                high = np.where(reach, np.maximum(high, best), high)
        return Band(_clip(low, self.limits), _clip(high, self.limits), level)

    def unseen_annealing(self, steps: np.ndarray) -> np.ndarray:
        """Per step: did the fitted points see no annealing (their lowest planned rate at least
        SEEN_ANNEALING x the peak) while the planned rate there falls below UNSEEN_ANNEALING x that
        rate? All False without a planned schedule."""
        s = np.asarray(steps, dtype=np.float64).reshape(-1)
        sched = self.schedule_fit.schedule if self.schedule_fit is not None else np.zeros(0)
        if sched.size < 2 or not math.isfinite(self.last_step):
            return np.zeros(s.shape, dtype=bool)
        hi = min(int(self.last_step), sched.size - 1)
        lo = int(np.argmax(sched[:hi + 1]))     # after the warm-up's peak: a rising rate is not annealing
        lo = max(lo, int(self.first_step) if math.isfinite(self.first_step) else 1, 1)
        if hi < lo:
            return np.zeros(s.shape, dtype=bool)
        seen = float(np.min(sched[lo:hi + 1]))
        if not seen >= SEEN_ANNEALING * float(np.max(sched[:hi + 1])):
            return np.zeros(s.shape, dtype=bool)
        idx = np.clip(np.round(s).astype(np.int64), 0, sched.size - 1)
        return (s > self.last_step) & (sched[idx] < UNSEEN_ANNEALING * seen)

    def annealing_reach(self) -> float:
        """How far unseen annealing may take the metric: the schedule law's limit L0 when it was
        fitted, else the power law's asymptote, else the metric's bound (or the forecast itself)."""
        law = self.schedule_fit
        if law is not None and law.converged:
            return float(law.law.sign * law.law.params[0])
        power = self.fits.get("power_law")
        if power is not None and power.converged:
            return float(power.params[0])
        bound = self.limits.lower if self.direction < 0 else self.limits.upper
        return float(bound) if bound is not None else math.nan

    def steps_to_reach(self, target: float, *, horizon_factor: float) -> float | None:
        """First step at which the forecast reaches ``target``, searched up to ``horizon_factor`` x the last step."""
        if not self.weights:
            return None
        return _first_crossing(self._raw_kilo, target, self.direction, self.start_step,
                               self.last_step * horizon_factor)

    def steps_to_reach_band(self, target: float, level: float | None = None, *, horizon_factor: float
                            ) -> tuple[float | None, float | None]:
        """Earliest and latest plausible steps: where the optimistic and pessimistic interval edges reach it."""
        if not self.weights:
            return None, None
        end = self.last_step * horizon_factor

        def edge(sign: int):
            return lambda t: self._raw_kilo(t) + sign * self.direction * self.half_width(t * STEP_UNIT, level)

        return (_first_crossing(edge(+1), target, self.direction, self.start_step, end),
                _first_crossing(edge(-1), target, self.direction, self.start_step, end))

    # -- (de)serialisation ---------------------------------------------------------------
    def to_dict(self) -> dict:
        """The part of analysis.json that, with its ``fits``, rebuilds this forecast."""
        return {
            "rule": self.rule,
            "reason": self.reason,
            "weights": dict(self.weights),
            "level": self.level,
            "calibration_scores": [float(x) for x in self.calibration],
            "first_step": self.first_step,
            "last_step": self.last_step,
            "direction": self.direction,
            "lower": self.limits.lower,
            "upper": self.limits.upper,
            "families_follow_plan": self.follow_plan,
            **({"schedule_law": self.schedule_fit.to_dict()} if self.schedule_fit is not None else {}),
        }

    @classmethod
    def from_dict(cls, d: dict, fits: Sequence[dict], backtests: Sequence[dict] = (),
                  ranking: Sequence[dict] = ()) -> "CurveForecast":
        """Rebuild from analysis.json's ``forecaster`` block and its ``fits``."""
        fitted = {f["model"]: FitResult.from_dict(f) for f in fits}
        sched = ScheduleLawFit.from_dict(d["schedule_law"]) if d.get("schedule_law") else None
        known = set(fitted) | ({SCHEDULE_LAW} if sched is not None and sched.converged else set())
        return cls(
            direction=int(d["direction"]), limits=Limits(d.get("lower"), d.get("upper")), level=float(d["level"]),
            fits=fitted, backtests=[Backtest(**b) for b in backtests],
            weights={m: float(w) for m, w in (d.get("weights") or {}).items() if m in known},
            ranking=list(ranking), rule=d.get("rule", ""), reason=d.get("reason", ""),
            calibration=np.asarray(d.get("calibration_scores") or [], dtype=np.float64),
            first_step=float(d["first_step"]), last_step=float(d["last_step"]), schedule_fit=sched,
            follow_plan=bool(d.get("families_follow_plan", False)),   # files written before it: as they were
        )


def _clip(y: np.ndarray, limits: Limits) -> np.ndarray:
    lo = -np.inf if limits.lower is None else limits.lower
    hi = np.inf if limits.upper is None else limits.upper
    return np.clip(y, lo, hi)


def conformal_quantile(scores: np.ndarray, level: float) -> float:
    """The split-conformal quantile: the ceil((n + 1) level)-th smallest score. With too few
    scores for that rank the largest one stands in (an interval that is honest about being thin
    evidence, rather than an infinite one)."""
    s = np.sort(np.asarray(scores, dtype=np.float64)[np.isfinite(scores)])
    if s.size == 0:
        return 0.0
    rank = int(math.ceil((s.size + 1) * level))
    return float(s[min(rank, s.size) - 1])


# ------------------------------------------------------------------ building it
def _end_error(fit: FitResult, steps: np.ndarray, values: np.ndarray, cutoff: float) -> float | None:
    """|forecast - actual| on the mean of the last END_SHARE of held-out points, per unit log-horizon."""
    k = max(1, int(round(END_SHARE * steps.size)))
    s, v = steps[-k:], values[-k:]
    ahead = math.log(float(np.mean(s)) / cutoff) if cutoff > 0 else math.nan
    err = abs(float(np.mean(fit.predict(s))) - float(np.mean(v)))
    if not (math.isfinite(err) and math.isfinite(ahead) and ahead > 0):
        return None
    return err / ahead


def _split(steps: np.ndarray, fraction: float) -> tuple[float, np.ndarray]:
    cutoff = float(steps[0] + fraction * (steps[-1] - steps[0]))
    return cutoff, steps <= cutoff


def _fit_member(m: str, steps, values, *, direction, limits, schedule):
    if m == SCHEDULE_LAW:
        return fit_schedule_law(steps, values, schedule, direction=direction, limits=limits)
    return fit_curve(m, steps, values, direction=direction, limits=limits)


def _backtests(steps, values, *, direction, limits, fractions, families, level, schedule=None):
    """Fit each family up to each cut-off; return the Backtest rows and the fits by (fraction, family)."""
    rows: list[Backtest] = []
    split_fits: dict[tuple[float, str], FitResult] = {}
    for frac in fractions:
        cutoff, train = _split(steps, frac)
        test = ~train
        n_train, n_test = int(train.sum()), int(test.sum())
        for m in families:
            fit = _fit_member(m, steps[train], values[train], direction=direction, limits=limits,
                              schedule=schedule) if n_test else None
            if fit is None or not fit.converged:
                why = "no held-out point after the cut-off" if fit is None else fit.message
                rows.append(Backtest(m, frac, cutoff, n_train, n_test, False, message=why))
                continue
            split_fits[(frac, m)] = fit
            pred = fit.predict(steps[test])
            err = pred - values[test]
            band = fit.prediction_interval(steps[test], level) if isinstance(fit, FitResult) else None
            tail = max(1, int(round(0.05 * n_test)))
            inside = None if band is None else (values[test] >= band.low) & (values[test] <= band.high)
            rows.append(Backtest(
                m, frac, cutoff, n_train, n_test, True,
                rmse=float(np.sqrt(np.mean(err ** 2))), mae=float(np.mean(np.abs(err))), bias=float(np.mean(err)),
                end_error=float(np.mean(pred[-tail:]) - np.mean(values[test][-tail:])),
                coverage=float(np.mean(inside)) if band is not None and np.all(np.isfinite(band.low)) else None,
            ))
    return rows, split_fits


def _scores(steps, values, fractions, families, split_fits) -> tuple[dict[str, float], dict[str, list]]:
    """Out-of-sample score per family: the RMS, over the cut-offs where it converged, of its
    normalised end error. Cut-offs where it failed are listed (and reported), not imputed: a
    family that needs more points is not punished with another family's error."""
    scores: dict[str, float] = {}
    missing: dict[str, list] = {m: [] for m in families}
    for m in families:
        errs = []
        for frac in fractions:
            fit = split_fits.get((frac, m))
            cutoff, train = _split(steps, frac)
            e = _end_error(fit, steps[~train], values[~train], cutoff) if fit is not None and (~train).any() else None
            if e is None:
                missing[m].append(frac)
            else:
                errs.append(e)
        if errs:
            scores[m] = math.sqrt(float(np.mean(np.square(errs))))
    return scores, missing


def _calibration(steps, values, fractions, weights, split_fits, direction, limits) -> np.ndarray:
    """Normalised conformal scores of the weighted combination on each cut-off's held-out bins."""
    out = []
    for frac in fractions:
        cutoff, train = _split(steps, frac)
        test = ~train
        # Only cut-offs where every family of the combination converged measure *this* forecast
        # (a cut-off where only the straight line fits would score a different forecaster).
        if not weights or any((frac, m) not in split_fits for m in weights) or test.sum() < 1 or cutoff <= 0:
            continue
        ws = dict(weights)
        total = sum(ws.values())
        s_test, v_test = steps[test], values[test]
        for idx in np.array_split(np.arange(s_test.size), min(CALIBRATION_BINS, s_test.size)):
            if idx.size == 0:
                continue
            centre = float(np.mean(s_test[idx]))
            pred = sum(w * float(np.mean(split_fits[(frac, m)].predict(s_test[idx]))) for m, w in ws.items()) / total
            pred = float(_clip(np.array([pred]), limits)[0])
            ahead = math.log(centre / cutoff)
            if ahead > 0 and math.isfinite(pred):
                out.append(abs(pred - float(np.mean(v_test[idx]))) / ahead)
    return np.asarray(out, dtype=np.float64)


def build_forecast(steps: np.ndarray, values: np.ndarray, *, direction: int, limits: Limits = Limits(),
                   level: float = DEFAULT_LEVEL, fractions: Sequence[float] = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8),
                   families: Sequence[str] | None = None, schedule: Sequence[float] | None = None) -> CurveForecast:
    """Fit, backtest, weigh and calibrate (see the module docstring).

    ``schedule``: the run's planned learning rate at every optimizer step 0..N (N at least the
    last step to forecast), e.g. from its config; with it the schedule-aware law is one more
    candidate of the combination, judged on the same backtests.
    """
    steps = np.asarray(steps, dtype=np.float64)
    values = np.asarray(values, dtype=np.float64)
    families = list(families or models_for(direction))
    fits = fit_all(steps, values, direction=direction, limits=limits, models=families)
    sched_fit = None
    candidates = list(families)
    if schedule is not None:
        schedule = np.asarray(schedule, dtype=np.float64)
        sched_fit = fit_schedule_law(steps, values, schedule, direction=direction, limits=limits)
        candidates.append(SCHEDULE_LAW)
    members = {**fits, **({SCHEDULE_LAW: sched_fit} if sched_fit is not None else {})}
    bt_steps, bt_values = steps, values
    if steps.size > BACKTEST_MAX_POINTS:
        keep = np.unique(np.linspace(0, steps.size - 1, BACKTEST_MAX_POINTS).round().astype(np.int64))
        bt_steps, bt_values = steps[keep], values[keep]
    rows, split_fits = _backtests(bt_steps, bt_values, direction=direction, limits=limits, fractions=fractions,
                                  families=candidates, level=level, schedule=schedule)
    scores, imputed = _scores(bt_steps, bt_values, fractions, candidates, split_fits)
    usable = {m: sc for m, sc in scores.items() if members[m].converged}
    # Akaike weights compare fits of the same points: the fits from the knee are left out of them.
    converged = [m for m in families if fits[m].converged and not fits[m].from_knee]
    if usable:
        floor = 1e-12 + 1e-9 * max(usable.values())
        best = sorted(usable, key=usable.get)[:COMBINED]
        raw = {m: 1.0 / max(usable[m], floor) for m in best}
        rule = "backtest-weighted"
    elif converged:
        aic = {m: fits[m].aic for m in converged}
        best = min(aic.values())
        raw = {m: math.exp(-(a - best) / 2) for m, a in aic.items()}
        rule = "akaike-weighted"
    else:
        raw, rule = {}, "none"
    total = sum(raw.values())
    weights = {m: w / total for m, w in sorted(raw.items(), key=lambda kv: -kv[1])} if total > 0 else {}
    ranking = _ranking(candidates, members, rows, scores, imputed, weights)
    reason = _reason(rule, weights, ranking, fractions)
    if sched_fit is not None and SCHEDULE_LAW in weights and sched_fit.decay_unidentified:
        reason += ("; the fitted points saw no annealing, so the gain of the planned decay is not identified: "
                   f"{SCHEDULE_LAW} takes half of the range between no gain and its limit L0 (scaled by how far "
                   "the rate falls), and the interval spans the whole range")
    calib = _calibration(bt_steps, bt_values, fractions, weights, split_fits, direction, limits)
    pos = steps[steps > 0]
    return CurveForecast(direction=direction, limits=limits, level=level, fits=fits, backtests=rows,
                         weights=weights, ranking=ranking, rule=rule, reason=reason, calibration=calib,
                         first_step=float(pos[0]) if pos.size else math.nan,
                         last_step=float(steps[-1]), schedule_fit=sched_fit,
                         follow_plan=bool(sched_fit is not None and sched_fit.decay_unidentified))


def _ranking(families, fits, rows, scores, imputed, weights) -> list[dict]:
    out = []
    for m in families:
        mine = [b for b in rows if b.model == m]
        ok = [b.rmse for b in mine if b.converged and b.rmse is not None]
        out.append({
            "model": m,
            "weight": weights.get(m, 0.0),
            "score": scores.get(m),
            "mean_rmse": float(np.mean(ok)) if ok else None,
            "splits_converged": len(ok),
            "splits": len(mine),
            "full_fit_converged": bool(fits[m].converged),
            "full_fit_message": "" if fits[m].converged else fits[m].message,
            "failed_splits": [{"fraction": b.fraction, "reason": b.message} for b in mine if not b.converged],
            "unscored_splits": list(imputed.get(m, [])),
        })
    out.sort(key=lambda r: (-r["weight"], r["score"] if r["score"] is not None else math.inf))
    return out


def _reason(rule: str, weights: dict[str, float], ranking: list[dict], fractions) -> str:
    if rule == "none":
        return "no curve family converged on all points; there is no forecast"
    used = ", ".join(f"{m} {w:.0%}" for m, w in weights.items() if w >= 0.005)
    dropped = [r for r in ranking if not r["full_fit_converged"]]
    tail = ""
    if dropped:
        by_message: dict[str, list[str]] = {}     # one reason once, e.g. the three fits from a knee there is not
        for r in dropped:
            by_message.setdefault(r["full_fit_message"], []).append(r["model"])
        tail = "; left out (no fit on all points): " + "; ".join(f"{', '.join(names)} ({message})"
                                                                 for message, names in by_message.items())
    failed = [r for r in ranking if r["failed_splits"] and r["full_fit_converged"]]
    if failed:
        tail += "; failed on some backtest cut-offs (scored on the others): " + ", ".join(
            f"{r['model']} ({len(r['failed_splits'])} of {r['splits']})" for r in failed)
    unscored = [r["model"] for r in ranking if r["full_fit_converged"] and r["score"] is None]
    if unscored:
        tail += "; not combined, no backtest cut-off could score them: " + ", ".join(unscored)
    outside = [r["model"] for r in ranking if r["score"] is not None and r["model"] not in weights
               and r["full_fit_converged"]]
    if outside:
        tail += f"; not among the {COMBINED} best scored: " + ", ".join(outside)
    if rule == "akaike-weighted":
        return (f"no backtest cut-off left enough points to score the families out of sample, so they are "
                f"combined by Akaike weights of the full fits: {used}" + tail)
    cuts = f"{min(fractions):.0%}–{max(fractions):.0%}" if len(fractions) > 2 else \
        ", ".join(f"{f:.0%}" for f in fractions)
    return (f"the {COMBINED} families with the smallest out-of-sample error, weighted by its inverse (fitted up "
            f"to {cuts} of the steps, scored on the end of the rest): {used}" + tail)
