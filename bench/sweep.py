"""How much compute does the forecast pruner save, and does it lose the best trial?

For each sweep seed, trains every trial of a random-search sweep to the end once (the demo
preset narrowed to TRIAL_SETTINGS; a small space: lr x warmup x mask rate), then replays the
same sweep under each pruner: no pruning, Optuna's MedianPruner and bertcurve's
ForecastPruner. With Optuna's RandomSampler the parameters of trial i do not depend on what
happened to earlier trials, so the replay is exact: a pruner sees the very curves the trials
produce, in order, and its decisions, steps spent and best trial are those of a real pruned
sweep.

    python bench/sweep.py [--seeds 0,1,2] [--trials 16] [--steps 500] [--work bench-sweep]
                          [--jobs N] [--device cpu|cuda] [--replay-only]

Prints, per pruner: the best final accuracy found (mean over seeds, and its standard error),
training steps spent as a share of the unpruned sweep, and how often the pruned sweep found
a best trial within one standard error of the unpruned best; then how often the forecast
pruner's intervals, asked at every evaluation, held the trial's final value; and what a pruner
whose analogues knew every other trial's final value (hindsight) would spend. Trained trials
are kept in --work, so a second run only replays.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from demo_recipe import DEMO_BEFORE  # noqa: E402

SPACE = {"lr": {"low": 5e-4, "high": 4e-3, "log": True},
         "warmup_steps": {"low": 10, "high": 80},
         "mask_prob": [0.15, 0.2, 0.3]}
# The trials: the demo preset narrowed to 64 wide and 2 layers, in full windows with a cosine
# schedule (DEMO_BEFORE, but the settings SPACE searches) and the preset's initial weights
# (std 0.05). The demo model itself reads no context at [MASK] for its first several hundred
# steps, so a few-hundred-step sweep of it would have little to choose from; this one leaves
# the constant guess within 150-200 steps even at lr 1e-3 and trains a step in a third of the
# time. At BERT's std 0.02 (DEMO_BEFORE) trials below lr 1.2e-3 never left the constant guess
# in 500 steps (docs/sweep.md).
TRIAL_SETTINGS = {"hidden_size": 64, "num_layers": 2, "num_heads": 2, "intermediate_size": 256,
                  **{k: v for k, v in DEMO_BEFORE.items() if k not in SPACE},
                  "initializer_range": 0.05}


def fixed_settings(steps: int, preset: str = "demo") -> dict:
    """Settings every trial shares: its length, the evaluation cadence and (demo) TRIAL_SETTINGS."""
    narrowed = TRIAL_SETTINGS if preset == "demo" else {}
    return {**narrowed, "max_steps": steps, "eval_every": max(1, steps // 20), "save_every": steps}


def draw(work: Path, seed: int, trials: int, steps: int, preset: str) -> list[tuple[Path, dict]]:
    """(run dir, parameters) of every trial of one random-search sweep. With Optuna's
    RandomSampler trial i's parameters do not depend on earlier trials' results, so all of
    them can be drawn first and the trials trained in any order, in parallel."""
    import optuna

    from bertcurve.tuning import parse_space

    params = parse_space(SPACE, preset, fixed_settings(steps, preset))
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=seed))
    drawn = []
    for i in range(trials):
        trial = study.ask()
        drawn.append((work / preset / f"seed{seed}" / f"trial-{i:03d}", {p.name: p.suggest(trial) for p in params}))
    return drawn


def read_trials(drawn: list[tuple[Path, dict]], steps: int, preset: str) -> list[dict]:
    """The curves of the trained trials, in order, up to the first untrained one."""
    from bertcurve.curves.logs import load_log
    from bertcurve.training.config import build_config
    from bertcurve.tuning import schedule_of

    out = []
    for run, values in drawn:
        if not (run / "final").is_dir():
            break
        log = load_log(run)
        series = log.series["eval_mlm_accuracy"]
        keep = series.steps > 0
        cfg = build_config(preset, overrides={**fixed_settings(steps, preset), **values})
        out.append({"params": values, "steps": series.steps[keep].astype(int), "values": series.values[keep],
                    "schedule": schedule_of(cfg), "se": float(log.series["eval_mlm_accuracy_se"].values[-1])})
    return out


def replay(trials: list[dict], pruner_name: str, seed: int) -> tuple[float, int, float]:
    """(best final accuracy, training steps spent, that accuracy's standard error) of the
    sweep under ``pruner_name``."""
    import optuna

    from bertcurve.tuning import SCHEDULE_ATTR, ForecastPruner

    pruner = {"none": optuna.pruners.NopPruner(),
              "median": optuna.pruners.MedianPruner(n_startup_trials=2,
                                                    n_warmup_steps=int(trials[0]["schedule"]["max_steps"]) // 5),
              "forecast": ForecastPruner()}[pruner_name]
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=seed),
                                pruner=pruner)
    spent = 0
    for t in trials:
        trial = study.ask()
        trial.set_user_attr(SCHEDULE_ATTR, t["schedule"])
        pruned = False
        for step, value in zip(t["steps"], t["values"]):
            trial.report(float(value), int(step))
            if trial.should_prune():
                spent += int(step)
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                pruned = True
                break
        if not pruned:
            spent += int(t["schedule"]["max_steps"])
            study.tell(trial, float(t["values"][-1]))
    return study.best_value, spent, trials[study.best_trial.number]["se"]


def interval_coverage(trials: list[dict], seed: int) -> tuple[int, int, int]:
    """(forecasts, finals at or below the upper end, finals inside the interval) of the forecast
    pruner asked at every evaluation before the last of the unpruned sweep: how honest its
    intervals are, the upper end being the one that prunes."""
    import optuna

    from bertcurve.tuning import SCHEDULE_ATTR, ForecastPruner

    pruner = ForecastPruner()
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=seed))
    made = below = inside = 0
    for t in trials:
        trial = study.ask()
        trial.set_user_attr(SCHEDULE_ATTR, t["schedule"])
        final = float(t["values"][-1])
        for step, value in zip(t["steps"][:-1], t["values"][:-1]):
            trial.report(float(value), int(step))
            pruner.prune(study, study.get_trials(deepcopy=False)[trial.number])   # as the pruner sees it
            got = pruner.forecasts.get(trial.number)
            if got and got["step"] == int(step):
                made += 1
                below += final <= got["high"]
                inside += got["low"] <= final <= got["high"]
        study.tell(trial, final)
    return made, below, inside


def hindsight_share(trials: list[dict], level: float) -> tuple[int, int]:
    """(steps spent, steps of the unpruned sweep) of a pruner that knows more than any real one:
    the forecast pruner's analogues (growth or power, whichever has the smaller leave-one-out
    error), fitted at every evaluation on *all the other* trials of the sweep, later ones
    included, each with its true final value. It prunes, as the real one does, when the upper
    end of its ``level`` interval is below the best finished trial, from the same point on.
    What it spends is what the analogues cost once their calibration is not limited by how few
    trials have finished (the real pruner, on few trials, is sometimes luckier and sometimes
    more cautious)."""
    from bertcurve.tuning import ForecastPruner, best_analogue, recent_mean

    rules = ForecastPruner()   # when the real pruner may prune: its min_fraction, min_evaluations
    spent = full = 0
    best = None
    for i, t in enumerate(trials):
        last = int(t["schedule"]["max_steps"])
        full += last
        others = [o for j, o in enumerate(trials) if j != i]
        stop = None
        for k, step in enumerate(t["steps"][:-1]):
            if best is None or k + 1 < rules.min_evaluations or step < rules.min_fraction * last:
                continue
            pairs = [(recent_mean(o["steps"], o["values"], step), float(o["values"][-1])) for o in others]
            got = best_analogue(recent_mean(t["steps"], t["values"], step), pairs, level)
            if got is not None and got[2] < best:
                stop = int(step)
                break
        spent += last if stop is None else stop
        if stop is None:
            best = max(best or -math.inf, float(t["values"][-1]))
    return spent, full


def main(argv: list[str] | None = None) -> int:
    import optuna

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--preset", default="demo", help="training preset of every trial (tiny: a quick look)")
    parser.add_argument("--work", type=Path, default=Path("bench-sweep"))
    parser.add_argument("--data", type=Path, default=None, help="a prepared data dir (default: the demo corpus)")
    parser.add_argument("--jobs", type=int, default=1,
                        help="trials trained at once, in worker processes (default 1; see parallel_train.py)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                        help="where trials train (default: cuda when available)")
    parser.add_argument("--replay-only", action="store_true",
                        help="train nothing: replay the trials --work already holds (of each seed, those "
                             "before the first untrained one)")
    args = parser.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    seeds = [int(s) for s in args.seeds.split(",")]
    data = args.data
    if data is None:
        from bertcurve.stages.prepare import prepare

        data = args.work / "data"
        if not (data / "meta.json").is_file():
            prepare(["demo"], data, progress=False)
    drawn = {seed: draw(args.work, seed, args.trials, args.steps, args.preset) for seed in seeds}
    if not args.replay_only:
        from parallel_train import Job, train_many

        threads = 1 if args.jobs > 1 else 0
        # trial-major, so that a sweep cut short leaves every seed with its first trials
        fixed = fixed_settings(args.steps, args.preset)
        todo = [Job(data, run, args.preset, {**fixed, **values}, args.device, threads)
                for i in range(args.trials) for seed in seeds for run, values in drawn[seed][i:i + 1]]
        train_many(todo, args.jobs, log=lambda line: print(line, flush=True))
    results: dict[str, list[tuple[float, int, float]]] = {"none": [], "median": [], "forecast": []}
    replayed: dict[int, list[dict]] = {}   # seed -> its trials replayed
    for seed in seeds:
        trials = read_trials(drawn[seed], args.steps, args.preset)
        if len(trials) < 2:
            print(f"seed {seed}: {len(trials)} trained trial(s) in {args.work}, too few to replay")
            continue
        if len(trials) < args.trials:
            print(f"seed {seed}: replaying the {len(trials)} trained trial(s) of {args.trials}")
        replayed[seed] = trials
        for name in results:
            results[name].append(replay(trials, name, seed))
    if not results["none"]:
        return 1
    full = [spent for _, spent, _ in results["none"]]
    print(f"\n{len(full)} sweep seed(s) x {'/'.join(str(len(t)) for t in replayed.values())} trials x {args.steps} steps "
          f"({args.preset} preset, random search)")
    print(f"{'pruner':10s} {'best acc (mean ± se over seeds)':>32s} {'steps spent':>12s} {'share':>7s} "
          f"{'within 1 SE of unpruned best':>30s}")
    for name, rows in results.items():
        best = np.array([b for b, _, _ in rows])
        spent = np.array([s for _, s, _ in rows])
        # within one standard error of the held-out estimate of the unpruned best trial
        within = sum(abs(b - u) <= se for (b, _, _), (u, _, se) in zip(rows, results["none"]))
        spread = best.std(ddof=1) / math.sqrt(len(best)) if len(best) > 1 else 0.0
        print(f"{name:10s} {best.mean():24.4f} ± {spread:.4f} {int(spent.sum()):12,d} "
              f"{spent.sum() / sum(full):7.1%} {within:>24d}/{len(rows)}")
    print("(standard error: of the unpruned best trial's held-out accuracy, from its fixed eval set)")
    made = below = inside = 0
    for seed, trials in replayed.items():
        got = interval_coverage(trials, seed)
        made, below, inside = made + got[0], below + got[1], inside + got[2]
    if made:
        print(f"forecast pruner's 95% intervals, asked at every evaluation of the unpruned sweeps ({made:,} "
              f"forecasts): final at or below the upper end {below / made:.1%} (nominal 97.5%), "
              f"inside {inside / made:.1%} (nominal 95%)")
    # how far the forecasts themselves are from saving more: the analogues calibrated in hindsight
    shares = []
    for level in (0.95, 0.9, 0.8):
        got = [hindsight_share(trials, level) for trials in replayed.values()]
        shares.append(f"{sum(s for s, _ in got) / sum(f for _, f in got):.1%} at the {level:.0%} level")
    print("analogues calibrated in hindsight (on every other trial of the sweep, with its final value) "
          "would spend " + ", ".join(shares))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
