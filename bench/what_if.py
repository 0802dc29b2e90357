"""Validate the schedule-aware law (``bertcurve analyze --what-if-steps``): our own demo runs
on the CPU, and published curves.

Part 1 (``--demo``, CPU, about an hour on 2 idle cores the first time): trains the demo
preset (seed 0, a held-out set of 10,000 masked tokens) with cosine schedules of 400, 1,200, 800,
2,400, 1,600 and 4,800 steps and linear and constant ones of 800, then asks ``what_if`` what each 3x longer
cosine run will reach from a shorter run and compares with what it did reach. Beside it: the
plain curve against steps (the family combination ``bertcurve analyze`` uses) extrapolated to
the same step. Trained runs stay in ``--runs``; a rerun only re-reads them.
``tests/fixtures/what_if/`` holds their metrics.jsonl files.

Part 2: each case fits the law on one run's held-out loss and its logged learning rate, then
predicts another run of the same model and data under another schedule or a longer horizon,
and prints the error at the end of the target run beside the error of a plain curve fitted
against steps (the chosen family of ``bertcurve analyze``) extrapolated to the same step.

The curves are read in place from ``../shared/curves`` (see its SOURCES.md for licences);
nothing is copied into the repository. Usage::

    python bench/what_if.py [--demo] [--runs bench-what-if-runs] [--data DATA_DIR]
                            [--curves ../shared/curves] [--level 0.95]
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from bertcurve.curves import schedule_law as law  # noqa: E402
from demo_recipe import DEMO_BEFORE  # noqa: E402  (the settings these runs and tests/fixtures/what_if used)
from bertcurve.curves.fits import backtest, choose_model, fit_all  # noqa: E402


def read_mpl_csv(path: Path) -> dict:
    """step,lr,loss rows of the Multi-Power-Law repository."""
    rows = list(csv.DictReader(path.open()))
    return {"steps": np.array([float(r["step"]) for r in rows]),
            "loss": np.array([float(r["loss"]) for r in rows]),
            "lr_steps": np.array([float(r["step"]) for r in rows]),
            "lr": np.array([float(r["lr"]) for r in rows])}


def read_wandb_json(path: Path) -> dict:
    """History export of fabian-sp/lr-scheduling: val loss per 200 it, train lr per 50 it;
    restart segments repeat iterations (keep the last of each)."""
    hist = json.loads(path.read_text())["history"]

    def dedupe(keys, values):
        last = {}
        for k, v in zip(keys, values):
            if v is not None:
                last[float(k)] = float(v)
        ks = np.array(sorted(last))
        return ks, np.array([last[k] for k in ks])

    steps, loss = dedupe(hist["val"]["iter"], hist["val"]["val_loss"])
    lr_steps, lr = dedupe(hist["train"]["iter"], hist["train"]["train_lr"])
    return {"steps": steps, "loss": loss, "lr_steps": lr_steps, "lr": lr}


def load(curves: Path, name: str) -> dict:
    folder = curves / name
    files = sorted(folder.iterdir())
    if files[0].suffix == ".csv":
        return read_mpl_csv(files[0])
    return read_wandb_json(files[0])


def per_step_lr(run: dict, last_step: int) -> np.ndarray:
    return law.lr_from_log(run["lr_steps"], run["lr"], last_step)


def case(curves: Path, fit_on: str, predict: str, level: float, same_shape: bool, describe: str) -> dict:
    """Fit on all of ``fit_on``, predict the mean loss of ``predict``'s last 3 evaluations."""
    src, dst = load(curves, fit_on), load(curves, predict)
    steps, loss = src["steps"], src["loss"]
    last_src = int(src["steps"].max())
    lr_src = per_step_lr(src, last_src)
    fit = law.fit_law(steps, loss, lr_src, rising=False, bootstrap=100)
    last_dst = int(dst["steps"].max())
    lr_dst = per_step_lr(dst, last_dst)
    areas = law.schedule_areas(lr_dst, fit.momentum)
    tail_steps = dst["steps"][-3:].astype(int)
    actual = float(dst["loss"][-3:].mean())
    predicted = float(fit.predict(areas, tail_steps).mean())
    own = law.backtest_error(steps, loss, lr_src, rising=False)
    extra = law.model_error_sd(own, float(tail_steps.mean() - steps.max()))
    if not same_shape:
        extra = float(np.hypot(extra, law.SHAPE_CHANGE_REL_SD * predicted))  # another decay shape
    lo, hi = law.prediction_interval(fit, areas, tail_steps, level, extra_sd=extra)
    lo, hi = float(lo.mean()), float(hi.mean())
    # baseline: a plain curve of the same points against steps, extrapolated
    plain_pred = step_extrapolation(steps, loss, tail_steps)
    return {"case": describe or f"{fit_on} -> {predict}", "actual": actual, "law": predicted,
            "law_err": abs(predicted - actual), "pi": (lo, hi), "covered": lo <= actual <= hi,
            "plain": plain_pred, "plain_err": abs(plain_pred - actual), "momentum": fit.momentum}


def step_extrapolation(steps, values, at_steps, direction: int = -1) -> float:
    """What a curve against steps says: the family ``bertcurve analyze`` picks by backtest."""
    fits = fit_all(steps, values, direction=direction)
    choice = choose_model(backtest(steps, values, direction=direction), fits)
    if choice.model is None:
        return float("nan")
    return float(np.mean(fits[choice.model].predict(np.asarray(at_steps, dtype=float))))


# ------------------------------------------------------------------ part 1: our demo runs

DEMO_RUNS = {          # name -> train overrides (the demo preset before issue 23, seed 0)
    "cos400": {"max_steps": 400},
    "cos1200": {"max_steps": 1200},
    "cos800": {"max_steps": 800},
    "lin800": {"max_steps": 800, "schedule": "linear"},
    "const800": {"max_steps": 800, "schedule": "constant"},
    "cos2400": {"max_steps": 2400},
    # past the demo model's plateau-and-transition (loss ~5.8 until step 500-1,100): the 3x case
    # whose short run has the shape the law assumes
    "cos1600": {"max_steps": 1600},
    "cos4800": {"max_steps": 4800},
}
DEMO_CASES = [         # (fit on, predict, --what-if-schedule, label)
    ("cos1600", "cos4800", None, "demo: cosine 1600 -> cosine 4800 (3x)"),
    ("cos800", "cos2400", None, "demo: cosine 800 -> cosine 2400 (3x)"),
    ("cos400", "cos1200", None, "demo: cosine 400 -> cosine 1200 (3x)"),
    ("lin800", "cos2400", "cosine", "demo: linear 800 -> cosine 2400"),
    ("const800", "cos2400", "cosine", "demo: constant 800 -> cosine 2400"),
]
FLOOR_CASE = "cos1600"  # the floors are checked on the 3x case whose short run is furthest along


def train_demo_runs(runs: Path, data: Path | None) -> None:
    """Train the runs of :data:`DEMO_RUNS` that are not finished yet (resuming any that stopped)."""
    from bertcurve.stages.prepare import prepare
    from bertcurve.stages.train import train

    if data is None:
        data = runs / "data"
        if not (data / "meta.json").is_file():
            prepare(["demo"], data)
    for name, overrides in DEMO_RUNS.items():
        if (runs / name / "final").is_dir():
            continue
        print(f"training {name} ...", flush=True)
        every = 25 if overrides["max_steps"] <= 400 else 50 if overrides["max_steps"] <= 800 else 100
        train(data, runs / name, preset="demo", quiet=True,
              overrides={"seed": 0, "eval_every": every, "eval_tokens": 10_000, **DEMO_BEFORE, **overrides})


def demo_case(runs: Path, fit_on: str, predict: str, shape: str | None, level: float, label: str) -> list[dict]:
    """``what_if`` from the short run against the long run's final held-out loss and accuracy."""
    from bertcurve.curves.logs import load_log
    from bertcurve.what_if import what_if

    short, long = load_log(runs / fit_on), load_log(runs / predict)
    target = int(long.series["eval_loss"].last_step)
    answer = what_if(short, target, shape, level)
    rows = []
    for name, direction in (("eval_loss", -1), ("eval_mlm_accuracy", 1)):
        series = short.series[name]
        keep = series.steps > 0
        actual = float(long.series[name].values[-1])
        pred = answer["predictions"][name]
        plain = step_extrapolation(series.steps[keep], series.values[keep], [target], direction)
        rows.append({"case": f"{label} {'loss' if direction < 0 else 'acc'}", "metric": name, "actual": actual,
                     "law": pred["value"], "law_err": abs(pred["value"] - actual), "pi": tuple(pred["pi"]),
                     "covered": pred["pi"][0] <= actual <= pred["pi"][1], "plain": plain,
                     "plain_err": abs(plain - actual)})
    return rows


def demo_part(runs: Path, data: Path | None, level: float) -> bool:
    """Print part 1; True when the issue's floors hold for the 3x cosine case."""
    train_demo_runs(runs, data)
    print(f"{'case':44s} {'actual':>8s} {'law':>8s} {'error':>8s} {'PI':>17s} {'in':>3s} {'steps-fit':>9s} {'error':>8s}")
    floors_ok = True
    for fit_on, predict, shape, label in DEMO_CASES:
        for r in demo_case(runs, fit_on, predict, shape, level, label):
            print(f"{r['case']:44s} {r['actual']:8.4f} {r['law']:8.4f} {r['law_err']:8.4f} "
                  f"[{r['pi'][0]:.4f}, {r['pi'][1]:.4f}] {'yes' if r['covered'] else 'NO':>3s} "
                  f"{r['plain']:9.4f} {r['plain_err']:8.4f}")
            if fit_on == FLOOR_CASE:
                limit_ok = (r["law_err"] <= 0.02 * r["actual"] if r["metric"] == "eval_loss"
                            else r["law_err"] <= 0.015)
                floors_ok &= limit_ok and r["covered"] and r["law_err"] < r["plain_err"]
    print(f"3x cosine floors (loss within 2 %, accuracy within 0.015, inside the interval, better than "
          f"step extrapolation): {'met' if floors_ok else 'NOT met'}\n")
    return floors_ok


# (fit on, predict, same decay shape?, label)
CASES = [
    # fit one schedule, predict another of the same model (Multi-Power-Law 400M runs)
    ("mpl-400m-cosine-24k", "mpl-400m-wsd-24k", False, "400M: cosine 24k -> WSD 24k"),
    ("mpl-400m-wsd-24k", "mpl-400m-cosine-24k", False, "400M: WSD 24k -> cosine 24k"),
    # a longer horizon: 124M WSD run of 50k steps -> its 200k extension (4x)
    ("lrs-124m-wsd-50k", "lrs-124m-wsd-200k-ext", True, "124M: WSD 50k -> WSD 200k"),
    # cosine and WSD of the same 124M model and length, each way
    ("lrs-124m-cosine0-50k", "lrs-124m-wsd-50k", False, "124M: cosine 50k -> WSD 50k"),
    ("lrs-124m-wsd-50k", "lrs-124m-cosine0-50k", False, "124M: WSD 50k -> cosine 50k"),
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--curves", type=Path, default=ROOT.parent / "shared" / "curves")
    parser.add_argument("--level", type=float, default=0.95)
    parser.add_argument("--demo", action="store_true", help="also train and check our own demo runs (CPU)")
    parser.add_argument("--runs", type=Path, default=Path("bench-what-if-runs"), help="where the demo runs live")
    parser.add_argument("--data", type=Path, help="a prepared data dir (default: prepare demo into --runs)")
    args = parser.parse_args(argv)
    if args.demo:
        demo_part(args.runs, args.data, args.level)
    if not args.curves.is_dir():
        print(f"no published curves at {args.curves}; pass --curves DIR", file=sys.stderr)
        return 2
    print(f"{'case':34s} {'actual':>8s} {'law':>8s} {'err %':>6s} {'PI':>17s} {'in':>3s} "
          f"{'steps-fit':>9s} {'err %':>6s}")
    results = []
    for fit_on, predict, same_shape, describe in CASES:
        r = case(args.curves, fit_on, predict, args.level, same_shape, describe)
        results.append(r)
        print(f"{r['case']:34s} {r['actual']:8.4f} {r['law']:8.4f} {100 * r['law_err'] / r['actual']:6.2f} "
              f"[{r['pi'][0]:.4f}, {r['pi'][1]:.4f}] {'yes' if r['covered'] else 'NO':>3s} "
              f"{r['plain']:9.4f} {100 * r['plain_err'] / r['actual']:6.2f}")
    law_err = np.median([r["law_err"] / r["actual"] for r in results])
    plain_err = np.median([r["plain_err"] / r["actual"] for r in results])
    print(f"\nmedian relative error: law {100 * law_err:.2f} %, step extrapolation {100 * plain_err:.2f} % "
          f"({plain_err / law_err:.1f}x); intervals covered {sum(r['covered'] for r in results)}/{len(results)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
