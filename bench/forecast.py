"""Benchmark bertcurve's forecasts on real, published learning curves (issue 15).

    python bench/forecast.py [--curves ../shared/curves] [--fractions 0.3 0.5] [--only NAME ...]
                             [--no-schedule] [--json FILE]

For each curve listed in CURVES/index.json (read in place, never copied), and each fraction f:
fit on the points up to f of the step range, forecast the mean of the last 10 % of the step
range, and compare with what was logged there. Printed per log and fraction: bertcurve's error
and 95 % interval, and the errors of plain least-squares fits of each single family (power law,
exponential saturation, log-linear, linear) on the same points. Then:

* share of cases where bertcurve is no worse than the best single family chosen in hindsight
  for that case, within a tolerance (0.003 for accuracies, 0.5 % of the value for losses);
* the worst and the mean ratio of bertcurve's error to the hindsight-best error, where an
  error below the tolerance counts as the tolerance (differences below it are not resolved);
* coverage of the 95 % intervals.

Floors (issue 15): >= 80 % no worse, worst ratio <= 2, mean ratio <= 1.0, coverage 85-98 %.
Logs are read with bertcurve's own readers (``load_log``), by the metric and step key the index
names, so the benchmark also exercises them.

Where the index says the log records its learning rate (``has_lr``), the whole run's logged rate
is passed as the *planned* schedule (``fit_and_choose(schedule=...)``): a user forecasting a run
in progress knows the schedule of the remaining steps from its config, and these runs followed
their planned schedules, so the logged rate of the unseen part stands for that plan. Nothing else
of the unseen part is used. ``--no-schedule`` forecasts from the steps alone, as for a log whose
plan is unknown (the five logs without a logged rate are always forecast that way).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from scipy import optimize

# ../shared/curves beside the checkout (or a worktree's parent's), found by walking up.
DEFAULT_CURVES = next((p / "shared" / "curves" for p in Path(__file__).resolve().parents
                       if (p / "shared" / "curves" / "index.json").is_file()), Path("../shared/curves"))
PLAIN_FAMILIES = ("power_law", "exp_saturation", "log_linear", "linear")
FLOORS = {"no_worse_share": 0.80, "worst_ratio": 2.0, "mean_ratio": 1.0, "coverage": (0.85, 0.98)}


def load_curve(root: Path, entry: dict) -> tuple[np.ndarray, np.ndarray, str, np.ndarray | None]:
    """Steps and values of the index entry's metric, through bertcurve's readers, and the run's
    learning rate per step when the log records it (else None)."""
    from bertcurve.curves import schedule_law as law
    from bertcurve.curves.logs import load_log

    log = load_log(root / entry["file"], metric_col=entry.get("read_metric"))
    name = entry.get("read_metric") or log.default_metric()
    s = log.metric(name)
    lr = log.series.get("lr")
    schedule = None
    if entry.get("has_lr") and lr is not None and len(lr) >= 3:
        schedule = law.lr_from_log(lr.steps, lr.values, int(max(lr.last_step, s.last_step)))
    return s.steps.astype(np.float64), s.values.astype(np.float64), name, schedule


def plain_fit(model: str, steps: np.ndarray, values: np.ndarray, direction: int):
    """Plain (unbounded) least squares of one family, the best of the family's grid of starts;
    returns a predict(steps) function or None when no start converges."""
    from bertcurve.curves import fits as cv

    spec = cv.MODELS[model]
    keep = steps > 0
    t, y = steps[keep] / cv.STEP_UNIT, values[keep]
    if model in ("linear", "log_linear"):
        basis = t if model == "linear" else np.log(t)
        coef, *_ = np.linalg.lstsq(np.column_stack([np.ones_like(t), basis]), y, rcond=None)
        return lambda s: spec.func(np.asarray(s) / cv.STEP_UNIT, direction, *coef)
    inf = [np.inf] * len(spec.param_names)
    best = None
    for p0 in cv._starts(model, direction, t, y, [-x for x in inf], inf):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                popt, _ = optimize.curve_fit(lambda x, *q: spec.func(x, direction, *q), t, y, p0=p0,
                                             maxfev=5000)
        except (RuntimeError, ValueError, FloatingPointError):
            continue
        with np.errstate(all="ignore"):
            sse = float(np.sum((spec.func(t, direction, *popt) - y) ** 2))
        if math.isfinite(sse) and (best is None or sse < best[0]):
            best = (sse, popt)
    if best is None:
        return None
    popt = best[1]
    return lambda s: spec.func(np.asarray(s) / cv.STEP_UNIT, direction, *popt)


def one_case(steps, values, name: str, fraction: float, direction: int, level: float,
             schedule: np.ndarray | None = None) -> dict:
    from bertcurve.curves import policy

    first, last = float(steps[0]), float(steps[-1])
    train = steps <= first + fraction * (last - first)
    region = steps >= first + 0.9 * (last - first)
    actual = float(np.mean(values[region]))
    limits = policy.limits_for(name)
    fc = policy.fit_and_choose(steps[train], values[train], direction=direction, limits=limits, level=level,
                               schedule=schedule)
    pred = float(np.mean(fc.predict(steps[region])))
    band = fc.interval(steps[region], level)
    lo, hi = float(np.mean(band.low)), float(np.mean(band.high))
    plain = {}
    for m in PLAIN_FAMILIES:
        f = plain_fit(m, steps[train], values[train], direction)
        with np.errstate(all="ignore"):
            p = float(np.mean(f(steps[region]))) if f is not None else math.nan
        plain[m] = abs(p - actual) if math.isfinite(p) else math.nan
    return {"fraction": fraction, "n_train": int(train.sum()), "actual": actual, "forecast": pred,
            "error": abs(pred - actual), "interval": [lo, hi], "covered": lo <= actual <= hi,
            "plain": plain, "weights": fc.weights, "rule": fc.rule}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--curves", type=Path, default=DEFAULT_CURVES)
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.3, 0.5])
    parser.add_argument("--level", type=float, default=0.95)
    parser.add_argument("--only", nargs="+", default=None, help="names of index entries to run")
    parser.add_argument("--json", type=Path, default=None, help="also write every case to this file")
    parser.add_argument("--no-schedule", action="store_true",
                        help="forecast from steps only, even where the log records its learning rate")
    args = parser.parse_args(argv)
    from bertcurve.curves import policy

    index = json.loads((args.curves / "index.json").read_text(encoding="utf-8"))
    cases = []
    t0 = time.perf_counter()
    print(f"{'log':<28} {'cut':>4} {'n':>4} {'actual':>8} {'bertcurve':>9} {'error':>8} "
          f"{'95% interval':>19} {'power':>8} {'exp':>8} {'loglin':>8} {'linear':>8} {'ratio':>6}")
    for entry in index:
        if args.only and entry["name"] not in args.only:
            continue
        steps, values, name, schedule = load_curve(args.curves, entry)
        if args.no_schedule:
            schedule = None
        direction = policy.direction_of(name, steps, values, override=entry.get("direction"))
        accuracy = policy.is_accuracy(name) or (direction > 0 and values.max() <= 1)
        for frac in args.fractions:
            c = one_case(steps, values, name, frac, direction, args.level, schedule)
            tol = 0.003 if accuracy else 0.005 * abs(c["actual"])
            finite = [e for e in c["plain"].values() if math.isfinite(e)]
            best = min(finite) if finite else math.inf
            c.update(name=entry["name"], tolerance=tol, best_plain=best,
                     no_worse=c["error"] <= best + tol, ratio=c["error"] / max(best, tol))
            cases.append(c)
            p = c["plain"]
            print(f"{entry['name']:<28} {frac:>4.0%} {c['n_train']:>4} {c['actual']:>8.4f} {c['forecast']:>9.4f} "
                  f"{c['error']:>8.4f} [{c['interval'][0]:>8.4f},{c['interval'][1]:>8.4f}] "
                  + " ".join(f"{p[m]:>8.4f}" for m in PLAIN_FAMILIES)
                  + f" {c['ratio']:>6.2f}" + ("" if c["no_worse"] else "  worse") + ("" if c["covered"] else "  miss"))
    n = len(cases)
    share = sum(c["no_worse"] for c in cases) / n
    ratios = [c["ratio"] for c in cases]
    coverage = sum(c["covered"] for c in cases) / n
    print(f"\n{n} cases ({len({c['name'] for c in cases})} logs x {len(args.fractions)} cut-offs), "
          f"{time.perf_counter() - t0:.0f} s")
    print(f"no worse than the hindsight-best single family: {share:.0%} (floor {FLOORS['no_worse_share']:.0%})")
    print(f"worst ratio to hindsight best: {max(ratios):.2f} (floor {FLOORS['worst_ratio']:.1f})")
    print(f"mean ratio to hindsight best:  {np.mean(ratios):.2f} (floor {FLOORS['mean_ratio']:.1f})")
    print(f"coverage of the {args.level:.0%} intervals: {coverage:.0%} (floor {FLOORS['coverage'][0]:.0%}-"
          f"{FLOORS['coverage'][1]:.0%})")
    if args.json:
        args.json.write_text(json.dumps(cases, indent=1, default=float), encoding="utf-8")
    ok = (share >= FLOORS["no_worse_share"] and max(ratios) <= FLOORS["worst_ratio"]
          and np.mean(ratios) <= FLOORS["mean_ratio"] and FLOORS["coverage"][0] <= coverage <= FLOORS["coverage"][1])
    print("floors: " + ("all hold" if ok else "NOT all hold"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
