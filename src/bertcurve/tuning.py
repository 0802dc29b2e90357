"""Hyperparameter search on Optuna: the search-space file and the forecast pruner.

``bertcurve sweep`` (``stages/sweep.py``) runs ordinary ``bertcurve train`` runs as Optuna
trials. What bertcurve adds is :class:`ForecastPruner`: at each held-out evaluation it
forecasts the trial's final metric from its curve so far, by the schedule-aware law
(:mod:`bertcurve.curves.schedule_law`, which knows the rest of the trial's learning-rate
schedule) or by the finished trials' growth from the same point (or a power of the level
there, fitted across them), whichever erred least on the finished trials, and stops the trial
when even the optimistic end of the prediction interval is worse than the best finished trial.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from bertcurve.curves import schedule_law as law
from bertcurve.errors import UserError
from bertcurve.training.config import build_config, settings
from bertcurve.training.schedule import rates_per_step

# Trial user attribute holding the trial's learning-rate schedule (for the forecast pruner).
SCHEDULE_ATTR = "lr_schedule"


@dataclass(frozen=True)
class Param:
    """One searched setting: a range (``low``..``high``, optionally log-scaled) or choices."""

    name: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    integer: bool = False
    choices: tuple[Any, ...] = ()

    def suggest(self, trial: Any) -> Any:
        if self.choices:
            return trial.suggest_categorical(self.name, list(self.choices))
        if self.integer:
            return trial.suggest_int(self.name, int(self.low), int(self.high), log=self.log)
        return trial.suggest_float(self.name, float(self.low), float(self.high), log=self.log)


def read_space_file(path: str | Path) -> Mapping[str, Any]:
    """The mapping in a YAML or JSON space file (YAML is a superset of JSON)."""
    import yaml

    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"--space {file}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"--space {file}: cannot read it ({exc})") from None
    try:
        mapping = yaml.safe_load(text)
    except (yaml.YAMLError, RecursionError) as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" at line {where.line + 1}" if where is not None else ""
        raise UserError(f"--space {file}: not valid YAML or JSON{at}") from None
    if not isinstance(mapping, dict) or not mapping:
        raise UserError(f"--space {file}: expected a mapping of settings to ranges or choices, "
                        "e.g. 'lr: {low: 1e-4, high: 3e-3, log: true}'")
    return mapping


def parse_space(mapping: Mapping[str, Any], preset: str | None = None,
                fixed: Mapping[str, Any] | None = None) -> list[Param]:
    """Validate a search space; every problem is listed in one :class:`UserError`.

    Each key is a train setting (``lr``, ``optim.lr``, ``warmup_steps``, ``dropout``...);
    each value is ``{low, high[, log]}`` or a non-empty list of choices. The ends of every
    range and every choice must be valid values of the setting (checked by building the
    training config with them).
    """
    problems: list[str] = []
    params: list[Param] = []
    fixed_keys = {setting_key(k): k for k in (fixed or {})}
    for name, spec in mapping.items():
        if not isinstance(name, str):
            problems.append(f"{name!r}: setting names are strings")
            continue
        if setting_key(name) in fixed_keys:
            problems.append(f"{name} is searched here and also fixed ({fixed_keys[setting_key(name)]}); "
                            "drop it from the space or from the fixed settings")
            continue
        param = _parse_param(name, spec, problems)
        if param is not None:
            params.append(param)
    for param in params:
        for value in (param.choices or (param.low, param.high)):
            try:
                build_config(preset, overrides={**(fixed or {}), param.name: value})
            except UserError as exc:
                problems.append(f"{param.name}={value!r}: {exc}")
                break
    if problems:
        raise UserError("invalid search space: " + "; ".join(problems))
    return params


def setting_key(name: str) -> str:
    """The dotted name of a train setting given plainly or dotted (``lr`` -> ``optim.lr``),
    resolved as the training config resolves it (first section that has the field); an
    unknown name comes back unchanged."""
    if "." in name or name == "seed":
        return name
    for s in settings():
        if s.section != "speed" and s.key.rsplit(".", 1)[-1] == name:
            return s.key
    return name


def _parse_param(name: str, spec: Any, problems: list[str]) -> Param | None:
    if isinstance(spec, list):
        if not spec:
            problems.append(f"{name}: an empty list of choices")
            return None
        if any(isinstance(v, (dict, list)) for v in spec):
            problems.append(f"{name}: choices must be plain values")
            return None
        return Param(name, choices=tuple(spec))
    if not isinstance(spec, dict):
        problems.append(f"{name}: expected {{low, high[, log]}} or a list of choices, got {spec!r}")
        return None
    unknown = set(spec) - {"low", "high", "log"}
    if unknown:
        problems.append(f"{name}: unknown key(s) {', '.join(sorted(map(str, unknown)))} (use low, high, log)")
    low, high, log = spec.get("low"), spec.get("high"), spec.get("log", False)
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high))
    if not numbers:
        problems.append(f"{name}: low and high must both be numbers (got {low!r}, {high!r})")
        return None
    if not isinstance(log, bool):
        problems.append(f"{name}: log must be true or false")
        return None
    if not (math.isfinite(low) and math.isfinite(high)):
        problems.append(f"{name}: low and high must be finite")
        return None
    if low >= high:
        problems.append(f"{name}: low ({low}) must be below high ({high})")
        return None
    if log and low <= 0:
        problems.append(f"{name}: a log range needs low > 0 (got {low})")
        return None
    integer = isinstance(low, int) and isinstance(high, int)
    return Param(name, low=low, high=high, log=log, integer=integer)


# ------------------------------------------------------------------ the forecast pruner

def schedule_of(cfg: Any) -> dict[str, Any]:
    """The learning-rate schedule of a training config, as stored on a trial."""
    o = cfg.optim
    keys = ("lr", "warmup_steps", "max_steps", "schedule", "min_lr_ratio", "decay_fraction", "decay_shape")
    return {k: getattr(o, k) for k in keys if hasattr(o, k)}


def rates_of(schedule: Mapping[str, Any]) -> np.ndarray:
    """Learning rate at every step 0..max_steps of a stored schedule."""
    return np.array(rates_per_step(schedule))


def fit_curve(steps: np.ndarray, values: np.ndarray, schedule: Mapping[str, Any], *, rising: bool,
              bounds: tuple[float | None, float | None]) -> law.LawFit | None:
    """The schedule law fitted to a trial's curve so far (None when the points cannot support it)."""
    try:
        return law.fit_law(steps, values, rates_of(schedule), rising=rising, bootstrap=40, bounds=bounds)
    except ValueError:
        return None


def forecast_final(steps: np.ndarray, values: np.ndarray, schedule: Mapping[str, Any], *,
                   rising: bool, level: float, bounds: tuple[float | None, float | None],
                   fit: law.LawFit | None = None) -> tuple[float, float, float] | None:
    """(value, low, high) of the metric at the schedule's last step, or None when the curve so
    far cannot support an honest interval (too few points, or no backtest possible yet).
    ``fit``: the curve's :func:`fit_curve`, when already made."""
    rates = rates_of(schedule)
    last = int(schedule["max_steps"])
    if fit is None:
        fit = fit_curve(steps, values, schedule, rising=rising, bounds=bounds)
        if fit is None:
            return None
    got = law.forecast_at(fit, steps, values, rates, rates, last, level=level, bounds=bounds)
    if got.backtest is None:
        return None
    return got.value, got.low, got.high


#: Evaluations whose mean is a trial's level for the analogue forecasts.
RECENT = 3


def recent_mean(steps: np.ndarray, values: np.ndarray, upto: float, window: int = RECENT) -> float | None:
    """Mean of the last ``window`` evaluations at or before step ``upto`` (None before any):
    a trial's level at that point, less noisy than its one evaluation there."""
    seen = values[steps <= upto]
    return float(np.mean(seen[-window:])) if len(seen) else None


ANALOGUES = ("growth", "power")


def _analogue_fit(level: float, pairs: list[tuple[float, float]], kind: str) -> tuple[float, float, int] | None:
    """(log forecast, its standard error for one new trial, degrees of freedom) of the
    analogue regression in log space; None where the pairs cannot say. Degrees of freedom 0:
    a forecast but no spread to make an interval from."""
    logs = np.array([(math.log(then), math.log(final)) for then, final in pairs if then > 0 and final > 0])
    if level <= 0 or not len(logs):
        return None
    x, y, x0, n = logs[:, 0], logs[:, 1], math.log(level), len(logs)
    if kind == "growth":   # log final = log level + mean log ratio
        r = y - x
        spread = float(np.std(r, ddof=1)) if n > 1 else 0.0
        return x0 + float(np.mean(r)), spread * math.sqrt(1 + 1 / n), n - 1
    sxx = float(np.sum((x - x.mean()) ** 2))
    if sxx == 0.0:
        return None
    slope, intercept = np.polyfit(x, y, 1)
    spread = math.sqrt(float(np.sum((y - (intercept + slope * x)) ** 2)) / (n - 2)) if n > 2 else 0.0
    return (float(intercept + slope * x0), spread * math.sqrt(1 + 1 / n + (x0 - float(x.mean())) ** 2 / sxx),
            max(n - 2, 0))


def analogue_forecast(level: float, pairs: list[tuple[float, float]], kind: str = "growth") -> float | None:
    """Final metric of a trial now at ``level``, from finished trials' (level at the same
    share of their steps, final) ``pairs``. ``growth``: ``level`` times the geometric mean of
    their final / level ratios. ``power``: log final as a straight line in log level across
    them (growth is its slope-1 case; the line lets trials lower now grow more, or less).
    None where the pairs cannot say (no positive pair; for ``power``, one level only)."""
    return _value(_analogue_fit(level, pairs, kind))


def _value(fit: tuple[float, float, int] | None) -> float | None:
    """The forecast of an :func:`_analogue_fit`, back from log space (inf where it overflows)."""
    if fit is None:
        return None
    with np.errstate(over="ignore"):
        return float(np.exp(fit[0]))


def analogue_interval(level: float, pairs: list[tuple[float, float]], kind: str,
                      confidence: float) -> tuple[float, float] | None:
    """The ``confidence`` prediction interval of :func:`analogue_forecast`: the normal-theory
    interval of its regression in log space (growth: a mean log ratio, t with n - 1 degrees of
    freedom times their spread times sqrt(1 + 1/n); power: a straight line, t with n - 2,
    grown by the distance of ``level`` from the finished trials' levels). None with too few
    pairs (growth 2, power 3)."""
    return _band(_analogue_fit(level, pairs, kind), confidence)


def _band(fit: tuple[float, float, int] | None, confidence: float) -> tuple[float, float] | None:
    """The ``confidence`` interval of an :func:`_analogue_fit`, back from log space."""
    from scipy.stats import t

    if fit is None or fit[2] < 1:
        return None
    centre, se, df = fit
    half = float(t.ppf((1.0 + confidence) / 2.0, df)) * se
    with np.errstate(over="ignore"):
        return float(np.exp(centre - half)), float(np.exp(centre + half))


def analogue_errors(pairs: list[tuple[float, float]], kind: str = "growth") -> list[float]:
    """Leave-one-out errors (forecast - final) of :func:`analogue_forecast` on finished trials."""
    errors = []
    for i, (then, final) in enumerate(pairs):
        got = analogue_forecast(then, pairs[:i] + pairs[i + 1:], kind)
        if got is not None:
            errors.append(got - final)
    return errors


def best_analogue(level: float, pairs: list[tuple[float, float]], confidence: float, min_errors: int = 1
                  ) -> tuple[float, float, float, list[float], str] | None:
    """(forecast, low, high, leave-one-out errors, kind) of the analogue kind (:data:`ANALOGUES`)
    with the smaller RMS of :func:`analogue_errors` on ``pairs``, among those that give a finite
    forecast of ``level``, a ``confidence`` interval and at least ``min_errors`` errors; None
    where neither does."""
    best = None
    for kind in ANALOGUES:
        errors = analogue_errors(pairs, kind)
        fit = _analogue_fit(level, pairs, kind)
        band = _band(fit, confidence)
        value = _value(fit)
        if band is None or not math.isfinite(value) or len(errors) < min_errors:
            continue
        if best is None or _rms(errors) < _rms(best[3]):
            best = (value, *band, errors, kind)
    return best


def _pruner_base():
    import optuna

    return optuna.pruners.BasePruner


def early_forecast_errors(curves: list[tuple[np.ndarray, np.ndarray, Mapping[str, Any], float]], fraction: float,
                          *, rising: bool, bounds: tuple[float | None, float | None]) -> list[float]:
    """How far the law's forecast of the final metric missed on finished trials when made
    from their first ``fraction`` of steps: (forecast - final) per trial that had enough
    evaluations by then. ``curves``: (steps, values, schedule, final value) per trial."""
    errors = []
    for steps, values, schedule, final in curves:
        last = int(schedule["max_steps"])
        seen = steps <= fraction * last
        if seen.sum() < law.MIN_POINTS:
            continue
        rates = rates_of(schedule)
        try:
            fit = law.fit_law(steps[seen], values[seen], rates, rising=rising, bootstrap=0, bounds=bounds)
        except ValueError:
            continue
        predicted = float(law.predict_planned(fit, rates, [last], float(steps[seen].max()))[0])
        errors.append(predicted - float(final))
    return errors


def predictive_error_sd(errors: list[float], level: float) -> float:
    """The model-error standard deviation that makes a ``level`` normal interval around a
    forecast the exact prediction interval for one more error, when the forecast errors seen
    (``errors``, of trials like this one) are independent draws from N(0, sigma^2): a new
    error over their root mean square is Student-t distributed with n degrees of freedom, so
    the half-width is t_n times the RMS; divided by the normal quantile, that is 6.5 times the
    RMS from one error at 95 %, 2.2 times from two, 1.3 times from five."""
    from scipy.stats import norm, t

    q = (1.0 + level) / 2.0
    return _rms(errors) * float(t.ppf(q, len(errors))) / float(norm.ppf(q))


class ForecastPruner(_pruner_base()):
    """Prune a trial when the optimistic end of its forecast final metric is worse than the
    best finished trial's final metric.

    The forecast's interval includes the law's model error measured on the trials of this
    study that finished (forecast each from the same share of its steps, compare with its
    final value: :func:`early_forecast_errors`; :func:`predictive_error_sd` makes the interval
    one for one more such error), once ``min_calibration`` such errors exist; before that, on
    the trial itself (fit on its first part, predict its last evaluations:
    :func:`forecast_final`; only possible once the curve has seen part of the decay).
    docs/sweep.md says why.

    ``min_fraction``: never prune before this share of the trial's steps (the first part of
    a curve says least about its end). ``min_evaluations``: nor before this many evaluations
    (the analogues' level is the mean of the last :data:`RECENT`; the law needs
    ``law.MIN_POINTS``). ``level``: the prediction interval's level; a higher level prunes
    less and later.
    """

    def __init__(self, *, level: float = 0.95, min_fraction: float = 0.2, min_evaluations: int = RECENT,
                 min_calibration: int = 1):
        self.level = level
        self.min_fraction = min_fraction
        self.min_evaluations = min_evaluations
        self.min_calibration = min_calibration
        self.forecasts: dict[int, dict[str, float]] = {}   # trial number -> its latest forecast
        self._errors: dict[tuple[int, float], list[float]] = {}   # (finished trial, fraction) -> its error

    def prune(self, study: Any, trial: Any) -> bool:
        import optuna

        schedule = trial.user_attrs.get(SCHEDULE_ATTR)
        values = trial.intermediate_values
        if not schedule or len(values) < self.min_evaluations:
            return False
        steps = np.array(sorted(values), dtype=int)
        last = int(schedule["max_steps"])
        if steps[-1] < self.min_fraction * last:
            return False
        finished = [t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
                    if t.value is not None]
        if not finished:
            return False
        maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
        best = max(t.value for t in finished) if maximize else min(t.value for t in finished)
        bounds = (0.0, 1.0) if maximize else (0.0, None)
        curve = np.array([values[s] for s in steps])

        def hopeless(got: tuple[float, float, float], forecaster: str, how: str) -> bool:
            value, low, high = got
            self.forecasts[trial.number] = {"step": int(steps[-1]), "value": value, "low": low, "high": high,
                                            "best": best, "forecaster": forecaster, "error_from": how}
            return high < best if maximize else low > best

        # Forecasters compete, each judged by its errors on the finished trials of this study
        # when forecast from the same share of their steps: the same kind of curve, the same
        # horizon. The one with the smaller error forecasts; its errors make the interval. The
        # law knows the rest of the schedule but extrapolates a curve still bending from a few
        # points badly; the analogues (the final as the finished trials' growth from the same
        # point, or as a power of the level there across them) know nothing of the trial's own
        # schedule, but the trials of one sweep share their curve's shape.
        fraction = round(float(steps[-1]) / last, 4)
        # the law needs law.MIN_POINTS evaluations of this trial; the analogues only its level
        law_errors = self._law_errors(finished, fraction, maximize, bounds) if len(steps) >= law.MIN_POINTS else []
        analogue = self._analogue(finished, steps, curve, fraction)
        if analogue is not None and (len(law_errors) < self.min_calibration
                                     or _rms(analogue[3]) < _rms(law_errors)):
            value, low, high, _, kind = analogue
            top = bounds[1] if bounds[1] is not None else math.inf
            return hopeless((value, max(low, bounds[0]), min(high, top)), kind, "finished trials")
        if len(steps) < law.MIN_POINTS:
            return False
        fit = fit_curve(steps, curve, schedule, rising=maximize, bounds=bounds)
        if fit is None:
            return False
        if len(law_errors) >= self.min_calibration:
            rates = rates_of(schedule)
            got = law.forecast_at(fit, steps, curve, rates, rates, last,
                                  level=self.level, model_error=predictive_error_sd(law_errors, self.level))
            return hopeless((got.value, got.low, got.high), "law", "finished trials")
        # Before any finished trial could be forecast from this share, the trial's own backtest
        # (its first part against its last evaluations) stands in: on a plateau it is too
        # narrow (finished trials may break out of the same plateau later), and with a curve
        # that bends within its few points far too wide to prune anything.
        own = forecast_final(steps, curve, schedule, rising=maximize, level=self.level, bounds=bounds, fit=fit)
        return own is not None and hopeless(own, "law", "own backtest")

    def _law_errors(self, finished: list, fraction: float, maximize: bool,
                    bounds: tuple[float | None, float | None]) -> list[float]:
        """The law's errors on finished trials forecast from ``fraction`` of their steps."""
        errors = []
        for t in finished:
            key = (t.number, fraction)
            if key not in self._errors:
                curve = _finished_curve(t)
                self._errors[key] = [] if curve is None else early_forecast_errors(
                    [(*curve, t.value)], fraction, rising=maximize, bounds=bounds)
            errors += self._errors[key]
        return errors

    def _analogue(self, finished: list, steps: np.ndarray, curve: np.ndarray,
                  fraction: float) -> tuple[float, float, float, list[float], str] | None:
        """:func:`best_analogue` for this trial's level now, from the finished trials' (level
        at ``fraction`` of their steps, final) pairs; None with too few of them."""
        pairs = []
        for t in finished:
            got = _finished_curve(t)
            then = None if got is None else recent_mean(got[0], got[1], fraction * int(got[2]["max_steps"]))
            if then is not None:
                pairs.append((then, float(t.value)))
        return best_analogue(recent_mean(steps, curve, float(steps[-1])), pairs, self.level, self.min_calibration)


def _finished_curve(t: Any) -> tuple[np.ndarray, np.ndarray, Mapping[str, Any]] | None:
    """(steps, values, schedule) of a finished trial's reported curve; None without them."""
    schedule = t.user_attrs.get(SCHEDULE_ATTR) if hasattr(t, "user_attrs") else None
    points = getattr(t, "intermediate_values", None) or {}
    if not schedule or not points:
        return None
    done = np.array(sorted(points), dtype=int)
    return done, np.array([points[s] for s in done]), schedule


def _rms(errors: list[float]) -> float:
    return math.sqrt(float(np.mean(np.square(errors)))) if errors else math.inf


def trial_record(run_dir: Path, state: str, **fields: Any) -> None:
    """``RUN/trial.json``: what the sweep did with this run (read by the sweep report)."""
    path = Path(run_dir) / "trial.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"format": "bertcurve.trial/1", "state": state, **fields}, indent=1) + "\n",
                    encoding="utf-8")
