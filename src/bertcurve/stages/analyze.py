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
from bertcurve.curves import stats as st
from bertcurve.errors import UserError
from bertcurve.fsutil import write_result_json
from bertcurve.curves.logs import Series, TrainingLog, load_log

MIN_POINTS = 5
MIN_BOOTSTRAP_POINTS = 20   # fewer points make a handful of blocks and a meaningless percentile interval
BACKTEST_FRACTIONS = (0.3, 0.5, 0.7)


# ------------------------------------------------------------------ pieces
def metric_direction(name: str, series: Series) -> int:
    """+1 for a metric that should grow (accuracy), -1 for one that should fall (loss)."""
    if "loss" in name or "perplexity" in name:
        return -1
    if "accuracy" in name or name.endswith("_acc"):
        return 1
    rho = st.spearman(series.steps, series.values).statistic
    return 1 if not np.isfinite(rho) or rho >= 0 else -1


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


def loss_curve(log: TrainingLog, metric: str, forecast_steps: Sequence[float], level: float) -> dict | None:
    """Learning-curve fits of the loss beside the analysed metric (L_inf + A t^-alpha and the others).

    Only when the analysed metric is not itself a loss. A long loss log is thinned to
    ``LOSS_CURVE_MAX_POINTS`` evenly spaced points: the curve's shape is all this block
    is for, and it keeps a 100,000-point analysis within its time budget.
    """
    if "loss" in metric:
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
    limits = cv.limits_for(name)
    fits = cv.fit_all(steps, values, direction=-1, limits=limits)
    tests = cv.backtest(steps, values, direction=-1, limits=limits, fractions=BACKTEST_FRACTIONS, level=level)
    choice = cv.choose_model(tests, fits)
    chosen = fits.get(choice.model) if choice.model else None
    forecasts = []
    for s in forecast_steps:
        entry: dict[str, Any] = {"step": _num(s), "model": choice.model}
        if chosen is not None:
            pi = chosen.prediction_interval([s], level)
            entry.update(value=float(chosen.predict([s])[0]), pi=[float(pi.low[0]), float(pi.high[0])])
        forecasts.append(entry)
    return {
        "metric": name,
        "n": int(len(series)),
        "thinned": thinned,
        "fits": [f.to_dict() for f in fits.values()],
        "ranking": choice.ranking,
        "chosen_model": {"model": choice.model, "reason": choice.reason},
        "asymptote": None if chosen is None else _asymptote(chosen),
        "asymptote_at_bound": bool(chosen is not None and set(chosen.at_bounds) & {"a", "L"}),
        "forecasts": forecasts,
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
                  f"{q4:.4g} in the last ({q4 / q1:.0%}), so "
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
    level: float = 0.95,
    bootstrap: int = 1000,
    seed: int = 0,
    steps_per_second: float | None = None,
    write: bool = True,
) -> dict:
    """Analyse the learning curve of one metric of a training log and write analysis.json.

    ``forecast``: steps to forecast at (default: twice the last step). ``target``: a
    metric value to reach; the answer is in steps and, with a measured or given
    throughput, hours. ``bootstrap``: circular block bootstrap resamples for the
    dependence-aware interval of Pearson r (0 turns it off). ``out``: where to write
    (default: RUN_DIR/analysis.json for a run, else ./<log name>.analysis.json).
    Returns the analysis as a dict (the JSON written; its ``"path"`` key says where).
    """
    if not 0.5 < level < 1:
        raise UserError(f"--level must be between 0.5 and 1 (got {level})")
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
    direction = metric_direction(name, series)
    limits = cv.limits_for(name)
    notes = list(log.notes)
    if target is not None:
        if not math.isfinite(target):
            raise UserError("--target must be a finite number")
        if limits.upper is not None and target > limits.upper or limits.lower is not None and target < limits.lower:
            raise UserError(f"--target {target} is outside the range [{limits.lower}, {limits.upper}] of {name}")
    forecast_steps = [float(s) for s in forecast] or [float(_round_step(2 * steps[-1]))]
    if any(not (s > 0 and math.isfinite(s)) for s in forecast_steps):
        raise UserError("--forecast steps must be positive numbers")

    # -- correlation and the seed block
    pearson = st.pearson(steps, values, level)
    spearman = st.spearman(steps, values)
    kendall = st.kendall(steps, values)
    trend = st.linear_trend(steps, values, level)
    residuals = values - (trend.intercept + trend.slope * steps)
    diag = st.residual_diagnostics(residuals)
    n_eff = diag.effective_sample_size
    adj_low, adj_high = st.fisher_interval(pearson.statistic, n_eff, level)
    boot = None
    if bootstrap > 0 and n >= MIN_BOOTSTRAP_POINTS:
        boot = st.block_bootstrap_pearson(steps, values, n_resamples=bootstrap, level=level, seed=seed)
    elif bootstrap > 0:
        notes.append(f"no block bootstrap with {n} points (needs {MIN_BOOTSTRAP_POINTS}); "
                     f"the effective-n Fisher interval stands in")

    # -- curve fits, backtests, model choice
    fits = cv.fit_all(steps, values, direction=direction, limits=limits)
    if np.any(steps <= 0):
        notes.append(f"curve fits leave out {int(np.sum(steps <= 0))} point(s) at step <= 0 (t^-c and ln t need t > 0)")
    tests = cv.backtest(steps, values, direction=direction, limits=limits, fractions=BACKTEST_FRACTIONS, level=level)
    choice = cv.choose_model(tests, fits)
    best_in_sample = max((f for f in fits.values() if f.converged and f.model != "linear"),
                         key=lambda f: f.r_squared, default=None)

    # -- forecasts, target, throughput
    speed = throughput(log, steps_per_second)
    lr_info = lr_confound(log, steps, values)
    beyond_schedule = bool(lr_info and lr_info["decays_to_near_zero"])
    forecasts = []
    chosen = fits.get(choice.model) if choice.model else None
    for s in forecast_steps:
        entry: dict[str, Any] = {"step": _num(s), "model": choice.model,
                                 "extrapolation": s > steps[-1],
                                 "beyond_lr_schedule": beyond_schedule and s > steps[-1]}
        if chosen is not None:
            ci = chosen.confidence_interval([s], level)
            pi = chosen.prediction_interval([s], level)
            entry.update(value=float(chosen.predict([s])[0]), ci=[float(ci.low[0]), float(ci.high[0])],
                         pi=[float(pi.low[0]), float(pi.high[0])])
        entry["by_model"] = {m: float(f.predict([s])[0]) for m, f in fits.items() if f.converged}
        forecasts.append(entry)
    target_info = None
    if target is not None:
        target_info = {"value": target, "model": choice.model, "step": None, "step_range": [None, None],
                       "within_log": None, "first_logged_at": None,
                       "hours_from_last_step": None, "hours_range": [None, None]}
        # A single noisy value touching the target says little; the fitted curve is the answer,
        # the first raw hit is reported beside it.
        reached = np.nonzero(direction * (values - target) >= 0)[0]
        if reached.size:
            target_info["first_logged_at"] = _num(steps[reached[0]])
        if chosen is not None:
            at = chosen.steps_to_reach(target)
            early, late = chosen.steps_to_reach_band(target, level)
            target_info["step"] = at
            target_info["step_range"] = [early, late]
            target_info["within_log"] = None if at is None else bool(at <= steps[-1])
            if at is None:
                asym = _asymptote(chosen)
                target_info["note"] = (
                    f"the {choice.model} curve does not reach {target} within 1000x the logged steps"
                    + (f" (its asymptote is {asym:.4g}{', at the bound of its range' if chosen.at_bounds else ''})"
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

    # -- why the naive interval is too narrow
    naive_width = pearson.ci_high - pearson.ci_low
    dependence = {
        **diag.to_dict(),
        "adjusted_fisher_ci": [adj_low, adj_high],
        "adjusted_pvalue": st.correlation_pvalue(pearson.statistic, n_eff),
        "block_bootstrap": boot.to_dict() if boot else None,
        "naive_ci_width": naive_width,
        "adjusted_ci_width": adj_high - adj_low,
        "bootstrap_ci_width": (boot.ci_high - boot.ci_low) if boot else None,
    }
    dependence["explanation"] = _why_too_narrow(pearson, diag, dependence, trend, best_in_sample, level)

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
        "dependence": dependence,
        "fits": [f.to_dict() for f in fits.values()],
        "backtests": {"fractions": list(BACKTEST_FRACTIONS), "results": [b.to_dict() for b in tests],
                      "ranking": choice.ranking},
        "chosen_model": {"model": choice.model, "reason": choice.reason},
        "forecasts": forecasts,
        "target": target_info,
        "throughput": speed,
        "phases": phases(steps, values),
        "lr_schedule": lr_info,
        "headline": headline(log, name, series),
        "loss_curve": loss_curve(log, name, forecast_steps, level),
        "constant_guess_accuracy": ((log.meta.get("config") or {}).get("eval_set") or {}).get("constant_guess_accuracy")
        if isinstance(log.meta.get("config"), dict) else None,
    }
    result["verdict"] = verdict(result)
    result = _clean(result)
    if write:
        path = default_out(log, out)
        write_result_json(path, result, inputs=[log.path])
    return result


def _asymptote(fit: cv.FitResult) -> float | None:
    if fit.model in {"power_law", "exp_saturation"}:
        return float(fit.params[0])
    if fit.model == "logistic_log":
        return float(fit.params[1])
    return None


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
    # Judge the trend at the effective sample size: a handful of dependent points proves little.
    p_trend = st.correlation_pvalue(s["statistic"], dep["effective_sample_size"])
    if p_trend > 0.05:
        how = "shows no clear trend"
    elif (s["statistic"] > 0) == up:
        how = "rises" if up else "falls"
    else:
        how = "moves against the expected direction"
    out = [
        f"{m} {how} with training (trend p = {p_trend:.2g} at the effective sample size; "
        f"Spearman ρ = {s['statistic']:.3f}, Pearson r = {p['statistic']:.3f}, R² = {p['statistic'] ** 2:.3f}, "
        f"{res['metric']['n']} points).",
    ]
    if dep["lag1_autocorrelation"] > 0.2:
        boot = dep.get("block_bootstrap")
        ci = [boot["ci_low"], boot["ci_high"]] if boot else dep["adjusted_fisher_ci"]
        out.append(
            f"The points are not independent (Durbin–Watson {dep['durbin_watson']:.2f}; about "
            f"{dep['effective_sample_size']:.0f} effective of {dep['n']}): an honest interval for r is "
            f"[{ci[0]:.3f}, {ci[1]:.3f}], not [{p['ci_low']:.3f}, {p['ci_high']:.3f}]."
        )
    fits = {f["model"]: f for f in res["fits"]}
    lin = fits.get("linear")
    chosen = res["chosen_model"]["model"]
    ranking = {r["model"]: r for r in res["backtests"]["ranking"]}
    if chosen:
        c = fits[chosen]
        text = (f"The curve is best forecast by the {chosen} model ({c['formula']}; in-sample R² {c['r_squared']:.3f}, "
                f"mean backtest RMSE {ranking[chosen]['mean_rmse']:.4g})")
        if lin and chosen != "linear" and ranking.get("linear", {}).get("mean_rmse"):
            text += (f"; a straight line, the seed's assumption, misses by {ranking['linear']['mean_rmse']:.4g} "
                     f"on the same backtests")
        out.append(text + ".")
        if c["model"] in {"power_law", "exp_saturation"} and c["param_values"]:
            a = c["param_values"][0]
            bound = "a" in c["at_bounds"]
            out.append(f"It levels off towards {a:.4g}" + (" (at the metric's limit: the data do not pin the "
                                                          "asymptote down)" if bound else "") + ".")
    else:
        out.append("No learning-curve model converged well enough to forecast with; forecasts are left out.")
    for f in res["forecasts"]:
        if f.get("value") is not None:
            out.append(
                f"Forecast at step {f['step']:,}: {f['value']:.4g} ({res['metric']['level']:.0%} prediction interval "
                f"{f['pi'][0]:.4g}–{f['pi'][1]:.4g})" + (" — beyond the end of the learning-rate schedule, so it "
                                                         "assumes training the schedule would not do" if
                                                         f.get("beyond_lr_schedule") else "") +
                (f"; linear extrapolation would say {f['by_model']['linear']:.4g}" if "linear" in f["by_model"]
                 and chosen != "linear" else "") + ".")
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
                txt += f", {t['hours_from_last_step']:.1f} more hours at the measured speed"
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
                   + ((" (its asymptote sits on the bound of its range: the data do not determine it)"
                       if lc.get("asymptote_at_bound") else f", levelling off towards {asym:.4g}")
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
                      f" ({last['slope_per_1k_steps'] / first['slope_per_1k_steps']:.0%} of the first)") + ".")
    return out


def _fmt_step(x: float | None) -> str:
    return "beyond horizon" if x is None else f"{x:,.0f}"


# ------------------------------------------------------------------ CLI
def _g(value: Any, spec: str) -> str:
    """Format a number that may be missing (None in analysis.json) as an em dash."""
    return "—" if value is None else format(value, spec)


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
    lines.append(f"{'曲线拟合 fit':<18} {'R²':>7} {'RMSE':>9} {'AIC':>10} {'lag-1':>6} {'backtest RMSE':>14}  note")
    ranking = {r["model"]: r for r in res["backtests"]["ranking"]}
    for f in res["fits"]:
        bt = ranking.get(f["model"], {}).get("mean_rmse")
        mark = " *" if f["model"] == res["chosen_model"]["model"] else ""
        if f["converged"]:
            lines.append(f"{f['model'] + mark:<18} {_g(f['r_squared'], '.4f'):>7} {_g(f['rmse'], '.4g'):>9} "
                         f"{_g(f['aic'], '.1f'):>10} {_g(f['residual_lag1'], '.2f'):>6} {_g(bt, '.4g'):>14}  "
                         + ("at bound: " + ", ".join(f["at_bounds"]) if f["at_bounds"] else ""))
        else:
            lines.append(f"{f['model']:<18} {'failed':>7}  {f['message']}")
    lines.append("(* = chosen for forecasts by backtest)")
    if res["forecasts"] and res["forecasts"][0].get("value") is not None:
        lines.append("")
        for f in res["forecasts"]:
            lines.append(f"预测 forecast @ {f['step']:,}: {f['value']:.4f}  PI [{f['pi'][0]:.4f}, {f['pi'][1]:.4f}]"
                         + ("  (beyond the LR schedule)" if f.get("beyond_lr_schedule") else ""))
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
    parser.add_argument("--step-col", default=None, help="CSV/TSV column holding the step (default: detected)")
    parser.add_argument("--metric-col", default=None, help="CSV/TSV column holding the metric")
    parser.add_argument("--level", type=float, default=0.95, help="confidence level of intervals (default 0.95)")
    parser.add_argument("--bootstrap", type=int, default=1000,
                        help="circular block bootstrap resamples for r's interval (0 = off; default 1000)")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the bootstrap (default 0)")
    parser.add_argument("--steps-per-second", type=float, default=None,
                        help="training speed for hours-to-target when the log has no timing "
                             "(the seed ran at 1.23 steps/s)")
    parser.add_argument("--json", action="store_true", help="print the analysis JSON instead of the table")


def run(args: argparse.Namespace) -> int:
    res = analyze(args.source, metric=args.metric, forecast=args.forecast, target=args.target, out=args.out,
                  tag=args.tag, step_col=args.step_col, metric_col=args.metric_col, level=args.level,
                  bootstrap=args.bootstrap, seed=args.seed, steps_per_second=args.steps_per_second)
    if args.json:
        import json

        print(json.dumps(res, ensure_ascii=False, indent=2))
    else:
        print(summary_text(res))
    return 0
