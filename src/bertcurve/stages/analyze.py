"""Learning-curve statistics, fits and forecasts of a training log.

Reads a bertcurve run directory (or its metrics.jsonl), the seed's
training_history_*.json, a Hugging Face trainer_state.json, a TensorBoard event
directory or a CSV/TSV file; writes a versioned analysis.json and prints a summary
table with a plain-words verdict. See docs/analysis.md for every statistic.

examples:
  bertcurve analyze runs/demo
  bertcurve analyze tests/fixtures/seed/training_history_100k.json --forecast 150000 200000 --target 0.6
  bertcurve analyze trainer_state.json --metric eval_loss --out eval_loss.analysis.json
"""

from __future__ import annotations

import argparse
import datetime as _dt
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from bertcurve import __version__, layout
from bertcurve.curves import fits as cv
from bertcurve.curves import policy
from bertcurve.curves import stats as st
from bertcurve.curves.forecast import CurveForecast
from bertcurve.errors import UserError
from bertcurve.progress import more_time
from bertcurve.fsutil import write_result_json
from bertcurve.curves.logs import Series, TrainingLog, load_log
from bertcurve.training.config import run_config_in
from bertcurve.what_if import planned_schedule

MIN_POINTS = policy.MIN_POINTS
MIN_BOOTSTRAP_POINTS = 20   # fewer points make a handful of blocks and a meaningless percentile interval
BACKTEST_FRACTIONS = policy.BACKTEST_FRACTIONS


# ------------------------------------------------------------------ pieces
def forecast_block(fc: CurveForecast) -> dict:
    """The fits, backtests and forecaster of analysis.json: everything plot and report redraw from."""
    level, at_bound = policy.forecast_asymptote(fc)
    return {
        "fits": [f.to_dict() for f in fc.fits.values()],
        "backtests": {"fractions": list(BACKTEST_FRACTIONS), "results": [b.to_dict() for b in fc.backtests],
                      "ranking": fc.ranking},
        "chosen_model": {"model": fc.model, "reason": fc.reason, "weights": dict(fc.weights), "rule": fc.rule},
        "forecaster": fc.to_dict(),
        "asymptote": level,
        "asymptote_at_bound": at_bound,
        "asymptote_kind": policy.asymptote_word(fc.direction)[0],
    }


def forecast_entry(fc: CurveForecast, step: float, level: float) -> dict[str, Any]:
    """One forecast: the combined value and its calibrated interval, and each family's own value."""
    entry: dict[str, Any] = {"step": _num(step), "model": fc.model}
    if fc.converged:
        band = fc.interval([step], level)
        entry.update(value=float(fc.predict([step])[0]), pi=[float(band.low[0]), float(band.high[0])])
    # Each family's own value; where the families follow the planned schedule, with the plan's change.
    change = float(fc.family_change([step])[0])
    entry["by_model"] = {m: float(f.predict([step])[0]) + change for m, f in fc.fits.items() if f.converged}
    return entry


def _loss_series(log: TrainingLog, metric: str) -> tuple[str, Series] | tuple[None, None]:
    preferred = ["eval_loss", "train_loss"] if metric.startswith("eval_") else ["train_loss", "eval_loss"]
    for name in preferred:
        if name in log.series and len(log.series[name]):
            return name, log.series[name]
    return None, None


def choose_metric(log: TrainingLog, metric: str | None) -> str:
    """The metric to analyse: ``metric`` if given, else the log's default, except that a
    held-out accuracy with fewer than MIN_POINTS evaluations gives way to the batch
    accuracy (a short run's only curve), with a note in ``log.notes``."""
    name = metric or log.default_metric()
    if metric is None and name == "eval_mlm_accuracy" and len(log.series[name]) < MIN_POINTS \
            and len(log.series.get("train_mlm_accuracy", ())) >= MIN_POINTS:
        log.notes.append(f"eval_mlm_accuracy has only {len(log.series[name])} point(s); analysed "
                         f"train_mlm_accuracy instead (choose with --metric)")
        name = "train_mlm_accuracy"
    return name


LOSS_CURVE_MAX_POINTS = 5000


def loss_curve(log: TrainingLog, metric: str, forecast_steps: Sequence[float], level: float,
               schedule: np.ndarray | None = None) -> dict | None:
    """Learning-curve fits of the loss beside the analysed metric (L_inf + A t^-alpha and the others).

    Only when the analysed metric is not itself a loss. A long loss log is thinned to
    ``LOSS_CURVE_MAX_POINTS`` evenly spaced points: the curve's shape is all this block
    is for, and it keeps a 100,000-point analysis within its time budget. ``schedule``: the
    run's planned learning rate per step, when known (see :func:`analyze`).
    """
    if policy.direction_from_name(metric) == -1:
        return None
    name, series = _loss_series(log, metric)
    if series is None or len(series) < MIN_POINTS or np.ptp(series.values) == 0:
        return None
    steps, values = series.steps.astype(np.float64), series.values
    thinned = None
    if len(series) > LOSS_CURVE_MAX_POINTS:
        keep = np.unique(np.linspace(0, len(series) - 1, LOSS_CURVE_MAX_POINTS).round().astype(np.int64))
        thinned = f"fitted on {keep.size:,} of {len(series):,} evenly spaced points"
        steps, values = steps[keep], values[keep]
    fc = policy.fit_and_choose(steps, values, direction=-1, limits=policy.limits_for(name), level=level,
                               schedule=schedule)
    block = forecast_block(fc)
    return {
        "metric": name,
        "n": int(len(series)),
        "thinned": thinned,
        **{k: block[k] for k in ("fits", "chosen_model", "forecaster", "asymptote", "asymptote_at_bound",
                                 "asymptote_kind")},
        "ranking": fc.ranking,
        "forecasts": [forecast_entry(fc, s, level) for s in forecast_steps],
    }


def seed_block(log: TrainingLog, metric: str, series: Series, pearson: st.Correlation) -> dict:
    """The seed's own analysis fields (analysis_100k_result.json), computed the seed's way."""
    v = series.values
    loss_name, loss = _loss_series(log, metric)
    block: dict[str, Any] = {
        "timestamp": _dt.datetime.now().isoformat(),
        "total_steps": _num(series.steps[-1]),
        "data_points": int(len(series)),
        "pearson_correlation": pearson.statistic,
        "r_squared": pearson.statistic ** 2,
        "mlm_stats": {"mean": float(np.mean(v)), "max": float(np.max(v)), "min": float(np.min(v)),
                      "std": float(np.std(v))},
        "loss_stats": None,
    }
    if loss is not None:
        block["loss_stats"] = {"initial": float(loss.values[0]), "final": float(loss.values[-1]),
                               "decrease": float(loss.values[0] - loss.values[-1])}
        block["loss_metric"] = loss_name
    return block


def _num(x: Any) -> int | float:
    f = float(x)
    return int(f) if f.is_integer() else f


def throughput(log: TrainingLog, steps_per_second: float | None = None) -> dict | None:
    """Measured training speed in steps per second, from the log or as given."""
    if steps_per_second is not None:
        if not (steps_per_second > 0 and math.isfinite(steps_per_second)):
            raise UserError("--steps-per-second must be a positive number")
        return {"steps_per_second": float(steps_per_second), "source": "given (--steps-per-second)"}
    elapsed = log.series.get("elapsed_s")
    if elapsed is not None and len(elapsed) >= 3:
        ds, de = np.diff(elapsed.steps.astype(float)), np.diff(elapsed.values)
        ok = (ds > 0) & (de > 0)  # a resumed run may restart its clock: skip those intervals
        if ok.sum() >= 2:
            rates = ds[ok] / de[ok]
            recent = rates[len(rates) // 2:]
            return {"steps_per_second": float(np.median(recent)), "source": "elapsed_s (median of the later half)"}
    tps, seen = log.series.get("tokens_per_s"), log.series.get("tokens_seen")
    if tps is not None and seen is not None and len(seen) >= 2 and len(tps):
        per_step = np.diff(seen.values) / np.diff(seen.steps.astype(float))
        per_step = per_step[np.isfinite(per_step) & (per_step > 0)]
        if per_step.size:
            tokens_per_step = float(np.median(per_step))
            rate = float(np.median(tps.values[len(tps.values) // 2:]))
            if rate > 0:
                return {"steps_per_second": rate / tokens_per_step, "tokens_per_second": rate,
                        "tokens_per_step": tokens_per_step, "source": "tokens_per_s / tokens per step"}
    return None


def phases(steps: np.ndarray, values: np.ndarray, quarters: int = 4) -> list[dict]:
    """Growth per 1,000 steps (OLS slope) and mean in each quarter of the step range."""
    edges = np.linspace(float(steps[0]), float(steps[-1]), quarters + 1)
    out = []
    for i, w in enumerate(st.slope_in_windows(steps, values, edges), start=1):
        out.append({
            "quarter": i, "start_step": w["start_step"], "end_step": w["end_step"], "n": w["n"], "mean": w["mean"],
            "slope_per_1k_steps": None if w["slope"] is None else w["slope"] * 1000,
            "slope_se_per_1k_steps": None if w["slope_se"] is None else w["slope_se"] * 1000,
        })
    return out


def cumulative_lr(lr: Series, at_steps: np.ndarray) -> np.ndarray:
    """Integral of the learning rate over steps, sum of lr x step, at ``at_steps``.

    Trapezoid rule between logged points; before the first logged point the lr is
    taken as the first logged value (a warm-up makes that an over-estimate of a few
    hundred steps' worth, negligible over a run).
    """
    s = lr.steps.astype(np.float64)
    v = lr.values
    cum = np.concatenate([[v[0] * s[0]], v[0] * s[0] + np.cumsum(np.diff(s) * (v[1:] + v[:-1]) / 2)])
    return np.interp(at_steps, s, cum)


def lr_confound(log: TrainingLog, steps: np.ndarray, values: np.ndarray) -> dict | None:
    """How much of the curve's shape the learning-rate schedule explains (None without an lr series)."""
    lr = log.series.get("lr")
    if lr is None or len(lr) < 3 or np.max(lr.values) <= 0:
        return None
    cum = cumulative_lr(lr, steps.astype(np.float64))
    peak = float(np.max(lr.values))
    final = float(lr.values[-1])
    total = float(cum[-1]) if cum[-1] > 0 else math.nan
    edges = np.linspace(float(steps[0]), float(steps[-1]), 5)
    cum_edges = np.interp(edges, steps.astype(np.float64), cum)
    quarters = []
    for i in range(4):
        lo, hi = edges[i], edges[i + 1]
        mask = (steps >= lo) & ((steps <= hi) if i == 3 else (steps < hi))
        share = float((cum_edges[i + 1] - cum_edges[i]) / total) if math.isfinite(total) else None
        per_lr = None
        if mask.sum() >= 3 and np.ptp(cum[mask]) > 0:
            per_lr = float(np.polyfit(cum[mask], values[mask], 1)[0])
        quarters.append({"quarter": i + 1, "lr_area_share": share, "slope_per_unit_cumulative_lr": per_lr,
                         "mean_lr": float(np.mean(np.interp(steps[mask], lr.steps, lr.values))) if mask.any() else None})
    constant = np.ptp(cum) == 0
    r_step = st.pearson(steps, values).statistic
    r_cum = math.nan if constant else st.pearson(cum, values).statistic
    rho_cum = math.nan if constant else st.spearman(cum, values).statistic
    decays = final <= 0.1 * peak
    q1, q4 = quarters[0]["slope_per_unit_cumulative_lr"], quarters[3]["slope_per_unit_cumulative_lr"]
    per_lr = ""
    if q1 is not None and q4 is not None and q1 != 0:
        per_lr = (f" Per unit of cumulative learning rate the growth goes from {q1:.4g} in the first quarter to "
                  f"{q4:.4g} in the last{_ratio_words(q1, q4)}, so "
                  + ("the model also saturates beyond what the schedule explains." if q4 / q1 < 0.5 else
                     "most of the flattening is the schedule's doing."))
    note = (
        f"The learning rate ends at {final / peak:.1%} of its peak; the last quarter of steps gets "
        f"{quarters[3]['lr_area_share']:.1%} of the total learning-rate area, so the curve flattens at the end "
        f"partly because the schedule stops the updates, not only because the model saturates. "
        f"Forecasts beyond the last step assume training that this schedule does not provide." + per_lr
        if decays and quarters[3]["lr_area_share"] is not None else
        "The learning rate does not decay to near zero, so the schedule explains little of the flattening."
    )
    return {
        "peak_lr": peak,
        "final_lr": final,
        "final_over_peak": final / peak,
        "decays_to_near_zero": bool(decays),
        "total_cumulative_lr": total,
        "pearson_step": r_step,
        "pearson_cumulative_lr": _clean(r_cum),
        "spearman_cumulative_lr": _clean(rho_cum),
        "quarters": quarters,
        "note": note,
    }


def _clean(x: Any) -> Any:
    """Replace NaN/inf by None, recursively, so analysis.json is strict JSON."""
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, (np.floating, float)):
        f = float(x)
        return f if math.isfinite(f) else None
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.bool_):
        return bool(x)
    return x


def _round_step(x: float) -> int:
    """A readable step: 2 significant digits above 1,000."""
    if x < 1000:
        return int(round(x))
    mag = 10 ** (int(math.log10(x)) - 1)
    return int(round(x / mag) * mag)


def _check_target(target: float | None, limits: cv.Limits, name: str) -> None:
    """A target must be finite and inside the metric's range."""
    if target is None:
        return
    if not math.isfinite(target):
        raise UserError("--target must be a finite number")
    if limits.upper is not None and target > limits.upper or limits.lower is not None and target < limits.lower:
        raise UserError(f"--target {target} is outside the range [{limits.lower}, {limits.upper}] of {name}")


def _forecast_steps(forecast: Sequence[float], last_step: float) -> list[float]:
    """The steps to forecast at: the ones asked for, else twice the last step (rounded)."""
    forecast_steps = [float(s) for s in forecast] or [float(_round_step(2 * last_step))]
    if any(not (s > 0 and math.isfinite(s)) for s in forecast_steps):
        raise UserError("--forecast steps must be positive numbers")
    return forecast_steps


def _bootstrap_pearson(steps: np.ndarray, values: np.ndarray, bootstrap: int, level: float, seed: int,
                       notes: list[str]) -> st.BootstrapInterval | None:
    """The block-bootstrap interval of Pearson r, or None (with a note when there are too few points)."""
    n = len(values)
    if bootstrap > 0 and n >= MIN_BOOTSTRAP_POINTS:
        return st.block_bootstrap_pearson(steps, values, n_resamples=bootstrap, level=level, seed=seed)
    if bootstrap > 0:
        notes.append(f"no block bootstrap with {n} points (needs {MIN_BOOTSTRAP_POINTS}); "
                     f"the effective-n Fisher interval stands in")
    return None


def _forecast_entries(fc: CurveForecast, forecast_steps: Sequence[float], last_step: float,
                      beyond_schedule: bool, level: float) -> list[dict]:
    """One entry per forecast step, flagged when it extrapolates (and past a decayed schedule)."""
    forecasts = []
    for s in forecast_steps:
        entry = forecast_entry(fc, s, level)
        entry.update(extrapolation=s > last_step, beyond_lr_schedule=beyond_schedule and s > last_step)
        forecasts.append(entry)
    return forecasts


def _target_block(target: float, fc: CurveForecast, steps: np.ndarray, values: np.ndarray, direction: int,
                  level: float, speed: dict | None) -> dict:
    """When the fitted curve reaches ``target`` (steps, band, hours), and when the log first touched it."""
    target_info: dict[str, Any] = {"value": target, "model": fc.model, "step": None, "step_range": [None, None],
                                   "within_log": None, "first_logged_at": None,
                                   "hours_from_last_step": None, "hours_range": [None, None]}
    # A single noisy value touching the target says little; the fitted curve is the answer,
    # the first raw hit is reported beside it.
    reached = np.nonzero(direction * (values - target) >= 0)[0]
    if reached.size:
        target_info["first_logged_at"] = _num(steps[reached[0]])
    if fc.converged:
        at = fc.steps_to_reach(target, horizon_factor=policy.HORIZON_FACTOR)
        early, late = fc.steps_to_reach_band(target, level, horizon_factor=policy.HORIZON_FACTOR)
        target_info["step"] = at
        target_info["step_range"] = [early, late]
        target_info["within_log"] = None if at is None else bool(at <= steps[-1])
        if at is None:
            asym, at_bound = policy.forecast_asymptote(fc)
            word = policy.asymptote_word(direction)[0]
            target_info["note"] = (
                f"the forecast does not reach {target} within {policy.HORIZON_FACTOR:g}x the logged steps"
                + (f" (its {word} is {asym:.4g}{', at the bound of its range' if at_bound else ''})"
                   if asym is not None else "")
            )
        if speed is not None:
            sps_ = speed["steps_per_second"]

            def hours(x):
                return None if x is None else max(0.0, x - steps[-1]) / sps_ / 3600

            target_info["hours_from_last_step"] = hours(at)
            target_info["hours_range"] = [hours(early), hours(late)]
    if speed is None:
        target_info["hours_note"] = "no throughput in the log; give --steps-per-second to get hours"
    return target_info


def _dependence_block(pearson: st.Correlation, diag: st.ResidualDiagnostics, trend: st.LinearTrend,
                      boot: st.BootstrapInterval | None, best_in_sample: Any, level: float) -> dict:
    """Why the naive interval of Pearson r is too narrow: the intervals that allow for autocorrelation."""
    n_eff = diag.effective_sample_size
    adj_low, adj_high = st.fisher_interval(pearson.statistic, n_eff, level)
    dependence = {
        **diag.to_dict(),
        "adjusted_fisher_ci": [adj_low, adj_high],
        "adjusted_pvalue": st.correlation_pvalue(pearson.statistic, n_eff),
        "block_bootstrap": boot.to_dict() if boot else None,
        "naive_ci_width": pearson.ci_high - pearson.ci_low,
        "adjusted_ci_width": adj_high - adj_low,
        "bootstrap_ci_width": (boot.ci_high - boot.ci_low) if boot else None,
    }
    dependence["explanation"] = _why_too_narrow(pearson, diag, dependence, trend, best_in_sample, level)
    return dependence


# ------------------------------------------------------------------ the analysis
def analyze(
    source: str | Path,
    *,
    metric: str | None = None,
    forecast: Sequence[float] = (),
    target: float | None = None,
    out: str | Path | None = None,
    tag: str | None = None,
    step_col: str | None = None,
    metric_col: str | None = None,
    level: float = policy.DEFAULT_LEVEL,
    bootstrap: int = 1000,
    seed: int = 0,
    steps_per_second: float | None = None,
    direction: str | None = None,
    what_if_steps: int | None = None,
    what_if_schedule: str | None = None,
    write: bool = True,
) -> dict:
    """Analyse the learning curve of one metric of a training log and write analysis.json.

    ``forecast``: steps to forecast at (default: twice the last step). ``target``: a
    metric value to reach; the answer is in steps and, with a measured or given
    throughput, hours. ``bootstrap``: circular block bootstrap resamples for the
    dependence-aware interval of Pearson r (0 turns it off). ``out``: where to write
    (default: RUN_DIR/analysis.json for a run, else ./<log name>.analysis.json).
    ``direction``: "up" or "down" when the metric's name does not say which way is better.
    ``what_if_steps``: predict a new run of that many steps with the same settings from the
    run's learning-rate schedule (``what_if_schedule`` changes the decay shape; see
    docs/what-if.md). Returns the analysis as a dict (the JSON written; its ``"path"`` key says where).
    """
    level = policy.check_level(level)
    if bootstrap < 0:
        raise UserError("--bootstrap must be >= 0")
    log = load_log(source, tag=tag, step_col=step_col, metric_col=metric_col)
    name = choose_metric(log, metric)
    series = log.metric(name, min_points=MIN_POINTS, allow_constant=False)
    if np.ptp(series.steps) == 0:
        raise UserError(f"all points of {name!r} are at one step; there is no curve to analyse")
    steps = series.steps.astype(np.float64)
    values = series.values
    n = len(series)
    direction = policy.direction_of(name, steps, values, override=direction)
    limits = policy.limits_for(name)
    notes = list(log.notes)
    _check_target(target, limits, name)
    if what_if_schedule is not None and what_if_steps is None:
        raise UserError("--what-if-schedule needs --what-if-steps N (the length of the run to predict)")
    forecast_steps = _forecast_steps(forecast, steps[-1])

    # -- correlation and the seed block
    pearson = st.pearson(steps, values, level)
    spearman = st.spearman(steps, values)
    kendall = st.kendall(steps, values)
    trend = st.linear_trend(steps, values, level)
    residuals = values - (trend.intercept + trend.slope * steps)
    diag = st.residual_diagnostics(residuals)
    boot = _bootstrap_pearson(steps, values, bootstrap, level, seed, notes)

    # -- curve fits, backtests, the forecast
    schedule = planned_schedule(log)   # the run's plan, when its config gives one
    fc = policy.fit_and_choose(steps, values, direction=direction, limits=limits, level=level,
                               schedule=schedule)
    if np.any(steps <= 0):
        notes.append(f"curve fits leave out {int(np.sum(steps <= 0))} point(s) at step <= 0 (t^-c and ln t need t > 0)")
    # R² compares fits of the same points: the fits from the knee (fewer points) are left out.
    best_in_sample = max((f for f in fc.fits.values() if f.converged and f.model != "linear" and not f.from_knee),
                         key=lambda f: f.r_squared, default=None)
    resid_fit = fc.whole_fit    # residuals of every point, not of an extrapolation back past a knee
    trend_test = st.mann_kendall(
        values, None if resid_fit is None else values - resid_fit.predict(steps),
        residuals_from=f"the {resid_fit.model} curve" if resid_fit is not None else "")

    # -- forecasts, target, throughput
    speed = throughput(log, steps_per_second)
    lr_info = lr_confound(log, steps, values)
    beyond_schedule = bool(lr_info and lr_info["decays_to_near_zero"])
    forecasts = _forecast_entries(fc, forecast_steps, steps[-1], beyond_schedule, level)
    target_info = None if target is None else _target_block(target, fc, steps, values, direction, level, speed)

    result: dict[str, Any] = {
        "format": layout.ANALYSIS_FORMAT,
        "generated_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "bertcurve_version": __version__,
        "source": {"path": str(log.path), "name": log.name, "kind": log.kind,
                   "metrics": sorted(log.series), "notes": notes},
        "metric": {"name": name, "direction": direction, "lower": limits.lower, "upper": limits.upper,
                   "n": n, "first_step": _num(steps[0]), "last_step": _num(steps[-1]), "level": level},
        "seed_compatible": seed_block(log, name, series, pearson),
        "descriptive": st.describe(steps, values).to_dict(),
        "correlation": {"pearson": pearson.to_dict(), "spearman": spearman.to_dict(), "kendall": kendall.to_dict()},
        "linear_trend": {**trend.to_dict(), "per_1k_steps": trend.per_steps(1000.0)},
        # why the naive interval is too narrow
        "dependence": _dependence_block(pearson, diag, trend, boot, best_in_sample, level),
        **forecast_block(fc),
        "trend_test": trend_test.to_dict(),
        "forecasts": forecasts,
        "target": target_info,
        "throughput": speed,
        "phases": phases(steps, values),
        "lr_schedule": lr_info,
        "headline": headline(log, name, series),
        "loss_curve": loss_curve(log, name, forecast_steps, level, schedule),
        "constant_guess_accuracy": _constant_guess(log, notes),
    }
    if what_if_steps is not None:
        result["what_if"] = what_if_block(log, what_if_steps, what_if_schedule, level, fc, trend, name)
    result["verdict"] = verdict(result)
    result = _clean(result)
    if write:
        path = default_out(log, out)
        write_result_json(path, result, inputs=[log.path])
    return result


def what_if_block(log: TrainingLog, steps: int, schedule: str | None, level: float, fc: CurveForecast,
                  trend: st.LinearTrend, metric: str) -> dict:
    """The schedule-aware prediction at ``steps``, beside what the analysed metric's step
    extrapolation and the seed's straight line say there."""
    from bertcurve.what_if import what_if

    block = what_if(log, steps, schedule, level)
    plain = forecast_entry(fc, float(steps), level)
    block["compared"] = {
        "metric": metric,
        "step_extrapolation": {"value": plain.get("value"), "pi": plain.get("pi")},
        "seed_linear": float(trend.intercept + trend.slope * steps),
    }
    return block


def _constant_guess(log: TrainingLog, notes: list[str]) -> float | None:
    """The best constant guess's accuracy on the run's held-out set (from its config), if known."""
    cfg = run_config_in(log.meta, notes)
    return cfg.eval_set.constant_guess_accuracy if cfg is not None else None



def headline(log: TrainingLog, metric: str, series: Series) -> dict:
    """Final values of the main series, for `compare` and reports."""
    out: dict[str, Any] = {"metric": metric, "final": float(series.values[-1]),
                           "mean_last_10pct": float(np.mean(series.values[-max(1, len(series) // 10):]))}
    for key in ("train_loss", "eval_loss", "eval_mlm_accuracy", "train_mlm_accuracy", "eval_mlm_accuracy_se",
                "eval_masked_tokens"):
        s = log.series.get(key)
        if s is not None and len(s):
            out[f"final_{key}"] = float(s.values[-1])
            out[f"final_{key}_step"] = _num(s.steps[-1])
    return out


def default_out(log: TrainingLog, out: str | Path | None) -> Path:
    """RUN_DIR/analysis.json for a bertcurve run; else ./<name>.analysis.json (the source may be read-only)."""
    if out is not None:
        path = Path(out).expanduser()
        return path / layout.ANALYSIS if path.is_dir() else path
    if log.kind == "bertcurve-run" and log.path.name == layout.METRICS:
        return log.path.parent / layout.ANALYSIS
    return Path.cwd() / f"{log.name}.{layout.ANALYSIS}"


def _times(a: float, b: float) -> str:
    """``a / b`` as "2.3x"; a perfectly straight series has zero widths, and no ratio."""
    return f"{a / b:.1f}x" if b > 0 and math.isfinite(a / b) else "n/a"


def _why_too_narrow(pearson: st.Correlation, diag: st.ResidualDiagnostics, dep: dict, trend: st.LinearTrend,
                    best: cv.FitResult | None, level: float) -> str:
    pct = f"{level:.0%}"
    parts = [
        f"The naive {pct} Fisher interval [{pearson.ci_low:.3f}, {pearson.ci_high:.3f}] (width {dep['naive_ci_width']:.3f}) "
        f"assumes {diag.n} independent points scattered around a straight line."
    ]
    if diag.lag1_autocorrelation > 0.2 or diag.durbin_watson < 1.5:
        parts.append(
            f"The residuals of the line are serially dependent (Durbin–Watson {diag.durbin_watson:.2f}, "
            f"lag-1 autocorrelation {diag.lag1_autocorrelation:.2f}, Ljung–Box p = {diag.ljung_box_pvalue:.2g}), "
            f"so the {diag.n} points carry about {diag.effective_sample_size:.0f} independent ones."
        )
        parts.append(
            f"At that effective sample size the interval is [{dep['adjusted_fisher_ci'][0]:.3f}, "
            f"{dep['adjusted_fisher_ci'][1]:.3f}] (width {dep['adjusted_ci_width']:.3f}, "
            f"{_times(dep['adjusted_ci_width'], dep['naive_ci_width'])})"
            + (f"; a circular block bootstrap (block {dep['block_bootstrap']['block_length']}) gives "
               f"[{dep['block_bootstrap']['ci_low']:.3f}, {dep['block_bootstrap']['ci_high']:.3f}] "
               f"(width {dep['bootstrap_ci_width']:.3f}, {_times(dep['bootstrap_ci_width'], dep['naive_ci_width'])})"
               if dep.get("block_bootstrap") else "")
            + f". The slope's Newey–West standard error is {_times(trend.slope_se_hac, trend.slope_se)} the textbook one."
        )
    else:
        parts.append(f"The residuals show little serial dependence (Durbin–Watson {diag.durbin_watson:.2f}), "
                     f"so the naive interval is roughly right.")
    if best is not None and best.r_squared - trend.r_squared > 0.05:
        parts.append(
            f"And the relation is not linear: the {best.model} curve explains R² = {best.r_squared:.3f} against "
            f"{trend.r_squared:.3f} for the line, so r measures how straight a curved relation looks rather than "
            f"how strongly training helps."
        )
    return " ".join(parts)


def verdict(res: dict) -> list[str]:
    """Plain-words conclusions, one sentence per item."""
    m = res["metric"]["name"]
    p, s = res["correlation"]["pearson"], res["correlation"]["spearman"]
    dep = res["dependence"]
    up = res["metric"]["direction"] > 0
    # Mann-Kendall with the Hamed-Rao correction, the dependence measured around the fitted curve:
    # curvature is the signal, not serial dependence (a straight line's residuals would count it).
    tt = res.get("trend_test") or {}
    p_trend = tt.get("pvalue", 1.0)
    if p_trend > 0.05:
        how = "shows no clear trend"
    elif (tt.get("statistic_s", 0) > 0) == up:
        how = "rises" if up else "falls"
    else:
        how = "moves against the expected direction"
    out = [
        f"{m} {how} with training (Mann–Kendall trend p = {p_trend:.2g}, corrected for serial dependence "
        f"around {tt.get('residuals_from') or 'the trend'}; Spearman ρ = {s['statistic']:.3f}, "
        f"Pearson r = {p['statistic']:.3f}, R² = {p['statistic'] ** 2:.3f}, {res['metric']['n']} points).",
    ]
    if dep["lag1_autocorrelation"] > 0.2:
        boot = dep.get("block_bootstrap")
        ci = [boot["ci_low"], boot["ci_high"]] if boot else dep["adjusted_fisher_ci"]
        out.append(
            f"The points are not independent (Durbin–Watson {dep['durbin_watson']:.2f}; about "
            f"{dep['effective_sample_size']:.0f} effective of {dep['n']}): an honest interval for r is "
            f"[{ci[0]:.3f}, {ci[1]:.3f}], not [{p['ci_low']:.3f}, {p['ci_high']:.3f}]."
        )
    out += _forecast_sentences(res, up)
    t = res.get("target")
    if t:
        raw = (f" (single logged values first touch it at step {t['first_logged_at']:,})"
               if t.get("first_logged_at") is not None else "")
        if t.get("within_log"):
            out.append(f"The fitted curve reaches the target {t['value']} at step {t['step']:,.0f}, "
                       f"inside the log{raw}.")
        elif t.get("step") is not None:
            rng = t["step_range"]
            txt = f"The target {t['value']} is reached at about step {t['step']:,.0f}"
            if rng[0] is not None or rng[1] is not None:
                txt += f" (range {_fmt_step(rng[0])}–{_fmt_step(rng[1])})"
            if t.get("hours_from_last_step") is not None:
                txt += f", {more_time(t['hours_from_last_step'])} at the measured speed"
            out.append(txt + raw + ".")
        elif t.get("model") is None:
            out.append(f"Steps to the target {t['value']} cannot be estimated: no learning-curve model converged{raw}.")
        else:
            out.append(f"The target {t['value']} is not reached by the forecasting curve: {t.get('note', '')}{raw}.")
    lc = res.get("loss_curve")
    if lc and lc["chosen_model"]["model"]:
        fc = next((f for f in lc["forecasts"] if f.get("value") is not None), None)
        asym = lc.get("asymptote")
        out.append(f"The {lc['metric']} is best forecast by the {lc['chosen_model']['model']} model"
                   + ((" (its floor sits on the bound of its range: the data do not determine it)"
                       if lc.get("asymptote_at_bound") else f", levelling off towards a floor of {asym:.4g}")
                      if asym is not None else "")
                   + (f"; at step {fc['step']:,} it would be {fc['value']:.4g}" if fc else "") + ".")
    guess = res.get("constant_guess_accuracy")
    if guess is not None and m == "eval_mlm_accuracy" and res["headline"]["mean_last_10pct"] <= guess + 0.005:
        out.append(f"The held-out accuracy ({res['headline']['mean_last_10pct']:.4f} at the end) is not above "
                   f"{guess:.4f}, what always guessing the most frequent character scores on this eval set: "
                   f"the model has not learned anything beyond character frequencies yet.")
    if res.get("lr_schedule") and res["lr_schedule"]["decays_to_near_zero"]:
        out.append(res["lr_schedule"]["note"])
    ph = [q for q in res["phases"] if q["slope_per_1k_steps"] is not None]
    if len(ph) == 4 and ph[0]["slope_per_1k_steps"]:
        first, last = ph[0], ph[3]
        flat = last["slope_se_per_1k_steps"] and abs(last["slope_per_1k_steps"]) < 2 * last["slope_se_per_1k_steps"]
        out.append(f"Change per 1,000 steps goes from {first['slope_per_1k_steps']:.4g} in the first quarter to "
                   f"{last['slope_per_1k_steps']:.4g} in the last"
                   + (" (within two standard errors of zero: flat)" if flat else
                      _ratio_words(first["slope_per_1k_steps"], last["slope_per_1k_steps"])) + ".")
    return out


def _forecast_sentences(res: dict, up: bool) -> list[str]:
    """Which families the forecast combines and why, where it levels off, and one sentence for
    all forecast steps."""
    fits = {f["model"]: f for f in res["fits"]}
    chosen = res["chosen_model"]["model"]
    ranking = {r["model"]: r for r in res["backtests"]["ranking"]}
    if not chosen:
        return ["No learning-curve model converged well enough to forecast with; forecasts are left out."]
    out = []
    c = fits[chosen]
    weights = res["chosen_model"].get("weights") or {chosen: 1.0}
    mix = ", ".join(f"{m} {w:.0%}" for m, w in weights.items() if w >= 0.005)
    on = (f" on the {c['n']} points from the knee at step {c['first_step']:,.0f}"
          if chosen.endswith(cv.FROM_KNEE) and c.get("first_step") is not None else "")
    text = (f"The forecast combines {mix} ({res['chosen_model'].get('rule', 'backtest-weighted')}); the leading "
            f"{chosen} model is {c['formula']} (in-sample R² {c['r_squared']:.3f}{on})")
    lin = ranking.get("linear", {}).get("mean_rmse")
    if chosen != "linear" and lin and ranking[chosen].get("mean_rmse"):
        text += (f"; on the backtests it misses by {ranking[chosen]['mean_rmse']:.4g} (RMSE), a straight line, the "
                 f"seed's assumption, by {lin:.4g}")
    out.append(text + ".")
    # Families with no fit on all points are named by the reason (left out); these were scored.
    failed = [r for r in res["backtests"]["ranking"] if r.get("failed_splits") and r.get("full_fit_converged", True)]
    if failed:
        # One line however many cut-offs failed: the table and analysis.json hold every reason.
        first = failed[0]["failed_splits"][0]
        out.append("Fits that failed on backtest cut-offs: " + ", ".join(
            f"{r['model']} on {len(r['failed_splits'])}" for r in failed)
            + f" (for example {failed[0]['model']} on the {first['fraction']:.0%} cut-off: {first['reason']}); "
            "the table gives every reason.")
    asym, word = res.get("asymptote"), res.get("asymptote_kind") or ("ceiling" if up else "floor")
    if asym is not None:
        if res.get("asymptote_at_bound"):
            out.append(f"Its {word} is not determined by the data (the fit sits on the bound of its range, "
                       f"{asym:.4g}).")
        else:
            out.append(f"It levels off towards a {word} of {asym:.4g}.")
    fc = [f for f in res["forecasts"] if f.get("value") is not None]
    if fc:
        level = res["metric"]["level"]
        parts = [f"{f['value']:.4g} at step {f['step']:,} ({f['pi'][0]:.4g}–{f['pi'][1]:.4g})" for f in fc]
        text = f"Forecast ({level:.0%} interval calibrated on backtest errors): " + "; ".join(parts)
        lin_vals = [f["by_model"]["linear"] for f in fc if "linear" in f["by_model"]]
        if chosen != "linear" and len(lin_vals) == len(fc):
            text += "; a straight line would say " + ", ".join(f"{v:.4g}" for v in lin_vals)
        if any(f.get("beyond_lr_schedule") for f in fc):
            text += " — beyond the end of the learning-rate schedule, so it assumes training the schedule would not do"
        out.append(text + ".")
    return out


def _ratio_words(first: float, last: float) -> str:
    """How the last of two rates compares with the first, as a ratio (never a percentage)."""
    if first == 0:
        return ""
    ratio = last / first
    if ratio < 0:
        return " (the sign reversed)"
    return f" ({ratio:.2g}× the first)"


def _fmt_step(x: float | None) -> str:
    return "beyond horizon" if x is None else f"{x:,.0f}"


# ------------------------------------------------------------------ CLI
def _g(value: Any, spec: str) -> str:
    """Format a number that may be missing (None in analysis.json) as an em dash."""
    return "—" if value is None else format(value, spec)


def _failed_cutoffs(failed: list[dict]) -> str:
    """'failed on 20%, 30% cut-offs: reason' with each reason once, in the order first met."""
    by_reason: dict[str, list[str]] = {}
    for x in failed:
        by_reason.setdefault(x["reason"], []).append(f"{x['fraction']:.0%}")
    return "; ".join(f"failed on {', '.join(cuts)} cut-off{'s' if len(cuts) > 1 else ''}: {reason}"
                     for reason, cuts in by_reason.items())


def summary_text(res: dict) -> str:
    """A readable table of the analysis (bilingual labels) and the verdict."""
    m = res["metric"]
    p = res["correlation"]["pearson"]
    dep = res["dependence"]
    lt = res["linear_trend"]["per_1k_steps"]
    d = res["descriptive"]
    rows = [
        ("来源 source", f"{res['source']['name']} ({res['source']['kind']})"),
        ("指标 metric", f"{m['name']}  n = {m['n']}, steps {m['first_step']:,}–{m['last_step']:,}"),
        ("均值/最大/最小 mean/max/min", f"{d['mean']:.4f} / {d['max']:.4f} / {d['min']:.4f}  (std {d['std']:.4f})"),
        ("Pearson r", f"{p['statistic']:.4f}  R² {p['statistic'] ** 2:.4f}  p = {_g(p['pvalue'], '.3g')}"),
        (f"朴素区间 naive {p['level']:.0%} CI", f"[{p['ci_low']:.3f}, {p['ci_high']:.3f}]  (Fisher z, assumes independence)"),
        ("Spearman ρ / Kendall τ-b", f"{res['correlation']['spearman']['statistic']:.4f} / "
                                      f"{res['correlation']['kendall']['statistic']:.4f}"),
        ("斜率 slope / 1k steps", f"{lt['slope']:.4g}  (naive ± {lt['se']:.2g}, Newey–West ± {lt['se_hac']:.2g})"),
        ("Durbin–Watson / lag-1", f"{_g(dep['durbin_watson'], '.3f')} / {_g(dep['lag1_autocorrelation'], '.3f')}  "
                                  f"Ljung–Box p = {_g(dep['ljung_box_pvalue'], '.3g')}"),
        ("有效样本量 effective n", f"{dep['effective_sample_size']:.0f} of {dep['n']}"),
        ("校正区间 adjusted CI", f"[{dep['adjusted_fisher_ci'][0]:.3f}, {dep['adjusted_fisher_ci'][1]:.3f}]  (Fisher z at effective n)"),
    ]
    if dep.get("block_bootstrap"):
        b = dep["block_bootstrap"]
        rows.append(("块自助区间 block bootstrap", f"[{b['ci_low']:.3f}, {b['ci_high']:.3f}]  (block {b['block_length']}, "
                                                    f"{b['n_resamples']} resamples)"))
    lines = [f"{k:<28} {v}" for k, v in rows]
    lines.append("")
    tt = res.get("trend_test")
    if tt:
        lines.insert(len(rows), f"{'趋势检验 Mann–Kendall':<28} p = {tt['pvalue']:.3g}  (Hamed–Rao variance x"
                                f"{tt['variance_factor']:.2f}, around {tt['residuals_from']})")
    width = max([18] + [len(f["model"]) + 2 for f in res["fits"]])
    lines.append(f"{'曲线拟合 fit':<{width - 2}} {'R²':>7} {'RMSE':>9} {'AIC':>10} {'lag-1':>6} {'backtest RMSE':>14} "
                 f"{'weight':>7}  note")
    ranking = {r["model"]: r for r in res["backtests"]["ranking"]}
    for f in res["fits"]:
        r = ranking.get(f["model"], {})
        mark = " *" if f["model"] == res["chosen_model"]["model"] else ""
        if f["converged"]:
            knee = (f"fitted from the knee at step {f['first_step']:,.0f} ({f['n']} points)"
                    if f["model"].endswith(cv.FROM_KNEE) and f.get("first_step") is not None else "")
            bound = ("at bound: " + ", ".join(f["at_bounds"])) if f["at_bounds"] else ""
            lines.append(f"{f['model'] + mark:<{width}} {_g(f['r_squared'], '.4f'):>7} {_g(f['rmse'], '.4g'):>9} "
                         f"{_g(f['aic'], '.1f'):>10} {_g(f['residual_lag1'], '.2f'):>6} {_g(r.get('mean_rmse'), '.4g'):>14} "
                         f"{r.get('weight', 0):>7.0%}  "
                         + "; ".join(x for x in (knee, bound, _failed_cutoffs(r.get("failed_splits", []))) if x))
        else:
            lines.append(f"{f['model']:<{width}} {'failed':>7}  {f['message']}")
    lines.append(f"(* = leading family; weight = share in the forecast: {res['chosen_model']['reason']})")
    if res["forecasts"] and res["forecasts"][0].get("value") is not None:
        lines.append("")
        for f in res["forecasts"]:
            lines.append(f"预测 forecast @ {f['step']:,}: {f['value']:.4f}  "
                         f"{res['metric']['level']:.0%} interval [{f['pi'][0]:.4f}, {f['pi'][1]:.4f}]"
                         + ("  (beyond the LR schedule)" if f.get("beyond_lr_schedule") else ""))
    if res.get("what_if"):
        lines += [""] + what_if_lines(res)
    lines.append("")
    lines.append("结论 verdict:")
    lines += [f"  - {v}" for v in res["verdict"]]
    lines.append("")
    lines.append("为什么原区间太窄 why the naive interval is too narrow:")
    lines.append(f"  {dep['explanation']}")
    for note in res["source"]["notes"]:
        lines.append(f"注 note: {note}")
    if res.get("path"):
        lines.append(f"\nwrote {res['path']}")
    return "\n".join(lines)


def what_if_lines(res: dict) -> list[str]:
    """The what-if table: the schedule law's prediction beside the step extrapolation and the
    seed's straight line."""
    w = res["what_if"]
    pct = f"{res['metric']['level']:.0%}"
    out = [f"假如训练 what if: a new run of {w['max_steps']:,} steps, {w['schedule']} decay "
           f"(law: {w['law']}; {w['assumptions']})"]
    for name, p in w["predictions"].items():
        out.append(f"  {name:<24} {p['value']:.4f}  {pct} interval [{p['pi'][0]:.4f}, {p['pi'][1]:.4f}]")
    c = w.get("compared") or {}
    if c.get("step_extrapolation", {}).get("value") is not None:
        out.append(f"  {c['metric']:<24} {c['step_extrapolation']['value']:.4f}  by step extrapolation "
                   f"of this run's curve (ignores the schedule)")
    if c.get("seed_linear") is not None:
        out.append(f"  {c['metric']:<24} {c['seed_linear']:.4f}  by the seed's straight line")
    if w.get("accuracy_method"):
        out.append(f"  accuracy: {w['accuracy_method']}")
    out += [f"  注 note: {n}" for n in w.get("notes", [])]
    return out


def add_column_arguments(parser: argparse.ArgumentParser) -> None:
    """--step-col / --metric-col: shared by analyze, plot and compare, so every error that names
    them names a flag the verb has."""
    parser.add_argument("--step-col", default=None, help="CSV/TSV column holding the step (default: detected)")
    parser.add_argument("--metric-col", default=None,
                        help="CSV/TSV column (or text-log key) holding the metric")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", help="run directory, metrics.jsonl, seed training_history_*.json, "
                                       "trainer_state.json, TensorBoard event folder, or CSV/TSV file")
    parser.add_argument("--metric", default=None,
                        help="metric to analyse (default: eval_mlm_accuracy if logged, else train_mlm_accuracy)")
    parser.add_argument("--forecast", nargs="+", type=float, default=[], metavar="STEP",
                        help="steps to forecast the metric at (default: twice the last step)")
    parser.add_argument("--target", type=float, default=None,
                        help="metric value to reach: report the step (and hours, with throughput) it is reached")
    parser.add_argument("--out", default=None,
                        help="where to write analysis.json (default: RUN_DIR/analysis.json for a run, "
                             "else ./NAME.analysis.json)")
    parser.add_argument("--tag", default=None, help="TensorBoard scalar tag to analyse")
    add_column_arguments(parser)
    parser.add_argument("--level", type=float, default=policy.DEFAULT_LEVEL,
                        help=f"confidence level of intervals (default {policy.DEFAULT_LEVEL})")
    parser.add_argument("--direction", choices=("up", "down"), default=None,
                        help="whether the metric should grow (up) or fall (down); default: from its name "
                             "(loss, perplexity: down; accuracy: up), else from the data")
    parser.add_argument("--bootstrap", type=int, default=1000,
                        help="circular block bootstrap resamples for r's interval (0 = off; default 1000)")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the bootstrap (default 0)")
    parser.add_argument("--steps-per-second", type=float, default=None,
                        help="training speed for hours-to-target when the log has no timing "
                             "(the seed ran at 1.23 steps/s)")
    parser.add_argument("--what-if-steps", type=int, default=None, metavar="N",
                        help="predict a new run of N steps with the same settings from this run's "
                             "learning-rate schedule (needs a logged learning rate; docs/what-if.md)")
    parser.add_argument("--what-if-schedule", default=None, choices=("cosine", "linear", "constant", "wsd"),
                        help="decay shape of the predicted run (default: this run's)")
    parser.add_argument("--json", action="store_true", help="print the analysis JSON instead of the table")


def run(args: argparse.Namespace) -> int:
    res = analyze(args.source, metric=args.metric, forecast=args.forecast, target=args.target, out=args.out,
                  tag=args.tag, step_col=args.step_col, metric_col=args.metric_col, level=args.level,
                  bootstrap=args.bootstrap, seed=args.seed, steps_per_second=args.steps_per_second,
                  direction=args.direction, what_if_steps=args.what_if_steps,
                  what_if_schedule=args.what_if_schedule)
    if args.json:
        import json

        print(json.dumps(res, ensure_ascii=False, indent=2))
    else:
        print(summary_text(res))
    return 0
