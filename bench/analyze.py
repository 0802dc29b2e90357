"""Benchmark `bertcurve analyze`: the seed history and a 100,000-point synthetic log.

Targets (issue 4): the full analysis of the 1,000-point seed history in under 2 s,
of a 100,000-point log in under 30 s, block bootstrap included.

    python bench/analyze.py [--seed-history PATH] [--repeats 3] [--points 100000]

Prints per-case medians of in-process wall time (imports already done; the cold
import cost is printed once, separately) and the ratio to the target.
"""

from __future__ import annotations

import argparse
import importlib
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

DEFAULT_SEED = Path(__file__).resolve().parents[2] / "shared" / "seed" / "training_history_100k.json"


def synthetic_log(path: Path, n: int, seed: int = 0) -> Path:
    """A seed-like log: saturating accuracy, AR(1) noise, cosine LR with warm-up, n points."""
    rng = np.random.default_rng(seed)
    steps = np.arange(1, n + 1) * 10
    total = steps[-1]
    noise = np.empty(n)
    noise[0] = 0.0
    eps = rng.normal(0, 0.02, n)
    for i in range(1, n):
        noise[i] = 0.6 * noise[i - 1] + eps[i]
    acc = 0.62 - 0.47 * np.exp(-steps / (total / 6)) + noise
    warm = np.minimum(1.0, steps / (total * 0.02))
    lr = 5e-5 * warm * 0.5 * (1 + np.cos(np.pi * steps / total))
    loss = 9.0 - 10.0 * acc
    path.write_text(json.dumps({"steps": steps.tolist(), "mlm_acc": acc.tolist(), "loss": loss.tolist(),
                                "lr": lr.tolist()}))
    return path


def timed(fn, repeats: int) -> tuple[list[float], list[float]]:
    """Wall and process-CPU seconds per call. On a shared machine the CPU time is the steadier number."""
    wall, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return wall, cpu


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed-history", type=Path, default=DEFAULT_SEED, help="the seed's training_history_100k.json")
    ap.add_argument("--repeats", type=int, default=3, help="timed repeats per case (median is printed)")
    ap.add_argument("--points", type=int, default=100_000, help="points of the synthetic log")
    ap.add_argument("--bootstrap", type=int, default=1000, help="block-bootstrap resamples (as the CLI default)")
    args = ap.parse_args()

    t0 = time.perf_counter()
    from bertcurve.stages.analyze import analyze

    importlib.import_module("statsmodels.api")  # imported lazily by the analysis; counted here
    print(f"cold imports: {time.perf_counter() - t0:.2f} s (paid once per CLI call)", flush=True)

    cases = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        if args.seed_history.is_file():
            cases.append(("seed history (1,000 points)", args.seed_history, 2.0))
        else:
            print(f"seed history not found at {args.seed_history}; skipping that case", file=sys.stderr)
        big = synthetic_log(tmp_path / "synthetic.json", args.points)
        cases.append((f"synthetic log ({args.points:,} points)", big, 30.0))
        for label, path, target in cases:
            out = tmp_path / "analysis.json"
            analyze(path, out=out, bootstrap=args.bootstrap)  # warm-up (caches, first-call costs)
            times, cpu = timed(lambda: analyze(path, out=out, bootstrap=args.bootstrap), args.repeats)
            no_boot, _ = timed(lambda: analyze(path, out=out, bootstrap=0), args.repeats)
            med, med_nb, med_cpu = statistics.median(times), statistics.median(no_boot), statistics.median(cpu)
            verdict = "OK" if med < target else "TOO SLOW"
            print(f"{label:<32} median {med:6.2f} s wall, {med_cpu:6.2f} s CPU  (without bootstrap {med_nb:6.2f} s "
                  f"wall)  target < {target:g} s: {med / target:4.2f}x of budget  {verdict}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
