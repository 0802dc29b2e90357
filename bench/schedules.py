"""WSD against cosine on the demo preset: final quality across seeds, and the cost of a curve.

1. Equal steps: ``--seeds`` runs of each schedule (``--schedule cosine`` and ``--schedule wsd``,
   default decay fraction and shape) for ``--steps`` steps; the final held-out MLM accuracy of
   each, its mean, SD and standard error over seeds, and the WSD − cosine difference with its
   Welch t interval (``bertcurve.curves.seeds``).
2. A three-point compute curve: the finished models at three lengths. With WSD that is one run
   of ``--steps`` plus ``--cooldowns-at`` branches from its stable-phase checkpoints (each
   ``bertcurve train --cooldowns-at``); with cosine it is three separate runs of those lengths.
   Printed: each point's final accuracy, and the training steps and wall time of each way
   (wall time from the runs' own ``elapsed_s``, so it is the training and evaluation time).

    python bench/schedules.py --data DATA_DIR [--steps 800] [--seeds 0,1,2]
                              [--cooldowns-at 200,400] [--work bench-schedules]

Trained runs are kept in --work, so a second call only re-reads them. The curve uses the
first seed's WSD and cosine runs of part 1 as its longest point.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from bertcurve import layout  # noqa: E402
from bertcurve.curves import seeds as sd  # noqa: E402


def records(run_dir: Path) -> list[dict]:
    from bertcurve.training.metrics_log import read_records

    return list(read_records(run_dir / layout.METRICS))


def finished(run_dir: Path, max_steps: int) -> bool:
    """The run wrote its final model and its log reached ``max_steps``."""
    if not (run_dir / layout.FINAL_MODEL_DIR).is_dir():
        return False
    return any(int(r["step"]) >= max_steps for r in records(run_dir))


def final_eval(run_dir: Path) -> dict:
    evals = [r for r in records(run_dir) if r.get("split") == "eval"]
    if not evals:
        raise SystemExit(f"{run_dir} has no held-out evaluation")
    return evals[-1]


def elapsed_at(run_dir: Path, step: int) -> float:
    """The run's own clock (``elapsed_s``, carried over resumes and into branches) at ``step``."""
    times = [float(r["elapsed_s"]) for r in records(run_dir) if "elapsed_s" in r and int(r["step"]) <= step
             and r.get("split") != "branch"]
    return max(times) if times else 0.0


def train_run(data: Path, run_dir: Path, preset: str, overrides: dict, say, speed=None) -> None:
    from bertcurve.stages.train import train

    steps = overrides["max_steps"]
    if finished(run_dir, steps):
        say(f"  {run_dir.name}: finished earlier, re-read")
        return
    started = time.perf_counter()
    res = train(data, run_dir, preset=preset, overrides=overrides, quiet=True, speed=speed)
    if not res.completed:
        raise SystemExit(f"{run_dir} was interrupted at step {res.step}; run the bench again to resume it")
    say(f"  {run_dir.name}: {steps} steps in {time.perf_counter() - started:.0f} s, "
        f"held-out accuracy {final_eval(run_dir)['mlm_accuracy']:.4f}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True, help="a prepared data dir (bertcurve prepare demo)")
    ap.add_argument("--work", type=Path, default=Path("bench-schedules"), help="where the runs are kept")
    ap.add_argument("--steps", type=int, default=800, help="steps of every equal-length run (default 800)")
    ap.add_argument("--seeds", default="0,1,2", help="seeds of part 1 (default 0,1,2)")
    ap.add_argument("--threads", type=int, default=0,
                    help="CPU threads per training (default 0: torch's choice; 1 is faster on a busy machine)")
    ap.add_argument("--preset", default="demo", help="training preset (default demo; tiny for a smoke test)")
    ap.add_argument("--cooldowns-at", default=None,
                    help="stable-phase steps the two shorter curve points cool down from "
                         "(default: a quarter and a half of --steps)")
    args = ap.parse_args(argv)
    from bertcurve.stages.train import cooldowns
    from bertcurve.training.config import SpeedConfig, build_config
    from bertcurve.training.extension import cooldown_dir, cooldown_max_steps

    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    steps = args.steps
    points = ([int(s) for s in args.cooldowns_at.split(",")] if args.cooldowns_at
              else [steps // 4, steps // 2])
    base = build_config(args.preset, None, {"max_steps": steps, "schedule": "wsd"})
    warmup, frac = base.optim.warmup_steps, base.optim.decay_fraction
    # Same checkpoint cadence for every run (only the seed and the schedule differ); the WSD runs
    # keep their cooldown starting points as milestones.
    fixed = {"max_steps": steps, "save_every": steps, "save_at": tuple(points)}
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    say = lambda msg: print(msg, flush=True)  # noqa: E731
    speed = SpeedConfig(threads=args.threads)

    say(f"training into {work} ({args.preset} preset, {steps} steps, seeds {seeds}, warmup {warmup}, "
        f"WSD decay fraction {frac})")
    runs: dict[str, list[Path]] = {"cosine": [], "wsd": []}
    for seed in seeds:
        for schedule in runs:
            run_dir = work / f"{schedule}-{steps}-seed{seed}"
            train_run(args.data, run_dir, args.preset, dict(fixed, seed=seed, schedule=schedule), say, speed)
            runs[schedule].append(run_dir)

    # ---------------------------------------------------------------- part 1
    level = 0.95
    finals = {s: [final_eval(d)["mlm_accuracy"] for d in dirs] for s, dirs in runs.items()}
    spreads = {s: sd.spread(v, level) for s, v in finals.items()}
    print()
    print(f"1. equal steps ({steps}), final held-out MLM accuracy over seeds {seeds}")
    print(f"   {'schedule':<8} {'per seed':<30} {'mean':>8} {'SD':>8} {'SE':>8}")
    for s, sp in spreads.items():
        per = " ".join(f"{v:.4f}" for v in sp.values)
        print(f"   {s:<8} {per:<30} {sp.mean:8.4f} {sp.sd or 0:8.4f} {sp.se or 0:8.4f}")
    d = sd.difference(spreads["cosine"], spreads["wsd"])
    print("   " + sd.describe_difference("cosine", "wsd", d))
    eval_se = [final_eval(x).get("mlm_accuracy_se") for x in runs["wsd"] + runs["cosine"]]
    eval_se = [e for e in eval_se if e is not None]
    if eval_se:
        print(f"   (each run's own held-out binomial SE is about {sum(eval_se) / len(eval_se):.4f})")

    main_wsd = runs["wsd"][0]
    lengths = [cooldown_max_steps(p, warmup, frac) for p in points]
    branch_dirs = [cooldown_dir(main_wsd, p) for p in points]
    if not all(finished(b, n) for b, n in zip(branch_dirs, lengths)):
        started = time.perf_counter()
        results = cooldowns(args.data, main_wsd, points, quiet=True, speed=speed)
        if not all(r.completed for r in results):
            raise SystemExit("a cooldown branch was interrupted; run the bench again to resume it")
        say(f"  cooldown branches {', '.join(b.name for b in branch_dirs)} in {time.perf_counter() - started:.0f} s")
    cosine_short = []
    for n in lengths:
        run_dir = work / f"cosine-{n}-seed{seeds[0]}"
        train_run(args.data, run_dir, args.preset, dict(fixed, max_steps=n, seed=seeds[0], schedule="cosine",
                                           save_every=n, save_at=()), say, speed)
        cosine_short.append(run_dir)

    # ---------------------------------------------------------------- part 2
    curve_lengths = lengths + [steps]
    wsd_points = branch_dirs + [main_wsd]
    cos_points = cosine_short + [runs["cosine"][0]]
    wsd_steps = steps + sum(n - p for n, p in zip(lengths, points))
    wsd_wall = elapsed_at(main_wsd, steps) + sum(
        elapsed_at(b, n) - elapsed_at(b, p) for b, n, p in zip(branch_dirs, lengths, points))
    cos_steps = sum(curve_lengths)
    cos_wall = sum(elapsed_at(d_, n) for d_, n in zip(cos_points, curve_lengths))
    print()
    print(f"2. a three-point compute curve (seed {seeds[0]}): finished models at {curve_lengths} steps")
    print(f"   {'steps':>6} {'WSD (branch from)':<24} {'acc':>8} {'cosine run':>12} {'acc':>8}")
    for n, w, c, p in zip(curve_lengths, wsd_points, cos_points, points + [None]):
        origin = f"cooldown from {p}" if p is not None else "the main run"
        print(f"   {n:>6} {origin:<24} {final_eval(w)['mlm_accuracy']:8.4f} {'separate':>12} "
              f"{final_eval(c)['mlm_accuracy']:8.4f}")
    print(f"   cost  WSD: one run + {len(points)} cooldowns = {wsd_steps:,} steps, {wsd_wall / 60:.1f} min")
    print(f"         cosine: {len(curve_lengths)} separate runs = {cos_steps:,} steps, {cos_wall / 60:.1f} min")
    print(f"         WSD / cosine: {wsd_steps / cos_steps:.2f} of the steps, {wsd_wall / cos_wall:.2f} of the time")
    summary = {"steps": steps, "seeds": seeds, "final": finals, "difference": d.to_dict(),
               "curve": {"lengths": curve_lengths,
                         "wsd": [final_eval(w)["mlm_accuracy"] for w in wsd_points],
                         "cosine": [final_eval(c)["mlm_accuracy"] for c in cos_points],
                         "wsd_steps": wsd_steps, "cosine_steps": cos_steps,
                         "wsd_wall_s": wsd_wall, "cosine_wall_s": cos_wall}}
    (work / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    print(f"\nwrote {work / 'summary.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
