"""Demo recipes compared over seeds: held-out accuracy, accuracy at [MASK] inputs, fill-mask.

Trains the demo preset with each recipe (a name and train overrides) for every seed, then
prints per run and per recipe (mean and standard error over seeds): the final held-out MLM
accuracy, the accuracy where the input was [MASK] (the part that needs the context; the rest
of the held-out positions kept their character or got a random one), the held-out loss, the
training time, and how many of six everyday sentences get the expected character in their
top 5. All recipes train the same number of steps, so at equal speed they cost the same time.

    python bench/demo_recipe.py [--seeds 0,1,2] [--recipes cosine,wsd] [--data DATA_DIR]
                                [--work bench-demo-recipe] [--threads 1]

Trained runs stay in --work; a rerun only re-reads them. Without --data the built-in demo
corpus is prepared into --work/data.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

RECIPES = {
    "cosine": {"schedule": "cosine"},                       # the demo preset before WSD
    "wsd": {"schedule": "wsd"},                             # warm-up, stable, 20 % linear cooldown
    "wsd-1sqrt": {"schedule": "wsd", "decay_shape": "1-sqrt"},
}
# (sentence, characters that count as right) — the sentences of the README's fill-mask section
SENTENCES = [
    ("今天天气很[MASK]。", "好"),
    ("我们一起去学[MASK]。", "校习"),
    ("中华人民共和[MASK]", "国"),
    ("这家酒店的服务非常[MASK]。", "好"),
    ("他每天早上喝一杯牛[MASK]。", "奶"),
    ("北京是中国的首[MASK]。", "都"),
]


def train_run(data: Path, run: Path, seed: int, overrides: dict, threads: int) -> float:
    """Train one run unless it is finished; the wall time it took (0 when it was already there)."""
    from bertcurve.stages.train import train
    from bertcurve.training.config import SpeedConfig

    if (run / "final").is_dir():
        return 0.0
    start = time.perf_counter()
    train(data, run, preset="demo", overrides={"seed": seed, **overrides}, speed=SpeedConfig(threads=threads),
          quiet=True)
    return time.perf_counter() - start


def measure(run: Path) -> dict:
    """Final held-out numbers of a run and its fill-mask hits."""
    from bertcurve.stages.fillmask import fill_mask

    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    last = [r for r in records if r.get("split") == "eval"][-1]
    results = fill_mask(run, [s for s, _ in SENTENCES], top_k=5)
    tops = ["".join(c.token for c in r.masks[0].candidates) for r in results]
    hits = sum(any(ch in top for ch in want) for top, (_, want) in zip(tops, SENTENCES))
    return {"acc": last["mlm_accuracy"], "at_mask": last["mlm_accuracy_at_mask"], "loss": last["loss"],
            "train_s": float(last.get("elapsed_s", math.nan)), "fill": hits, "tops": tops}


def mean_se(values: list[float]) -> tuple[float, float]:
    mean = statistics.fmean(values)
    se = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else math.nan
    return mean, se


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--recipes", default="cosine,wsd", help=f"comma-separated, of {', '.join(RECIPES)}")
    parser.add_argument("--data", type=Path, help="a prepared data dir (default: prepare demo into --work)")
    parser.add_argument("--work", type=Path, default=Path("bench-demo-recipe"))
    parser.add_argument("--threads", type=int, default=0, help="torch threads per run (0: the preset's choice)")
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    names = args.recipes.split(",")
    unknown = [n for n in names if n not in RECIPES]
    if unknown:
        parser.error(f"unknown recipe(s) {', '.join(unknown)}; choose from {', '.join(RECIPES)}")
    data = args.data
    if data is None:
        from bertcurve.stages.prepare import prepare

        data = args.work / "data"
        if not (data / "meta.json").is_file():
            prepare(["demo"], data)
    rows: dict[str, list[dict]] = {n: [] for n in names}
    print(f"{'recipe':12s} {'seed':>4s} {'acc':>7s} {'@mask':>7s} {'loss':>6s} {'train s':>8s} {'fill':>5s}  top 5")
    for name in names:
        for seed in seeds:
            run = args.work / f"{name}-seed{seed}"
            train_run(data, run, seed, RECIPES[name], args.threads)
            m = measure(run)
            rows[name].append(m)
            print(f"{name:12s} {seed:4d} {m['acc']:7.4f} {m['at_mask']:7.4f} {m['loss']:6.3f} {m['train_s']:8.0f} "
                  f"{m['fill']:3d}/6  {' '.join(m['tops'])}", flush=True)
    print(f"\n{'recipe':12s} {'acc (mean ± SE)':>18s} {'@mask (mean ± SE)':>19s} {'fill':>5s}   over {len(seeds)} seeds")
    for name in names:
        acc, acc_se = mean_se([m["acc"] for m in rows[name]])
        at, at_se = mean_se([m["at_mask"] for m in rows[name]])
        fill = statistics.fmean([m["fill"] for m in rows[name]])
        print(f"{name:12s} {acc:9.4f} ± {acc_se:.4f} {at:10.4f} ± {at_se:.4f} {fill:5.1f}")
    base = names[0]
    for name in names[1:]:   # paired by seed against the first recipe, the baseline of this run
        diff, diff_se = mean_se([m["acc"] - b["acc"] for m, b in zip(rows[name], rows[base])])
        ratio = statistics.fmean(m["acc"] for m in rows[name]) / statistics.fmean(b["acc"] for b in rows[base])
        print(f"{name} vs {base}: held-out accuracy {diff:+.4f} (paired SE {diff_se:.4f}), {ratio:.3f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
