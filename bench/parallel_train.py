"""Train several runs at once, each in a worker process: for benches on a many-core or GPU machine.

A run dir is one ordinary ``bertcurve train`` run. Workers are spawned (a CUDA context does
not survive a fork) and each trains one run after another from a shared queue, so a worker
pays for importing torch once. A run that fails is reported with its error and does not
stop the others; a run already finished (its ``final/`` exists) is not trained again.
"""

from __future__ import annotations

import multiprocessing
import sys
import time
import traceback
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Job:
    """One run to train: ``bertcurve train --data DATA --out RUN --preset PRESET`` + overrides."""

    data: Path
    run: Path
    preset: str = "demo"
    overrides: dict = field(default_factory=dict)
    device: str = "auto"
    threads: int = 0


def _train_one(job: Job) -> float:
    """Train ``job`` in this process; its wall time in seconds (0 when it was already finished)."""
    if str(ROOT / "src") not in sys.path:
        sys.path.insert(0, str(ROOT / "src"))
    from bertcurve.stages.train import train
    from bertcurve.training.config import SpeedConfig

    if (job.run / "final").is_dir():
        return 0.0
    start = time.perf_counter()
    result = train(job.data, job.run, preset=job.preset, overrides=dict(job.overrides),
                   speed=SpeedConfig(device=job.device, threads=job.threads), quiet=True)
    if not result.completed:  # Ctrl-C or SIGTERM: the run saved a checkpoint; stop, take no next job
        raise KeyboardInterrupt
    return time.perf_counter() - start


def _guarded(job: Job) -> tuple[float | None, str]:
    try:
        return _train_one(job), ""
    except Exception as exc:  # reported to the parent, which goes on with the other runs
        last = traceback.format_exception_only(type(exc), exc)[-1].strip()
        return None, last


def train_many(jobs: list[Job], workers: int = 1, log=print) -> dict[Path, tuple[float | None, str]]:
    """Train every job, ``workers`` at a time; per run dir, (wall seconds or None, error or '')."""
    results: dict[Path, tuple[float | None, str]] = {}
    todo = [j for j in jobs if not (j.run / "final").is_dir()]
    for job in jobs:
        if job not in todo:
            results[job.run] = (0.0, "")
    if workers <= 1:
        for job in todo:
            results[job.run] = _guarded(job)
            _report(log, job, results[job.run])
        return results
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {pool.submit(_guarded, job): job for job in todo}
        try:
            for done in as_completed(futures):
                job = futures[done]
                results[job.run] = done.result()
                _report(log, job, results[job.run])
        except KeyboardInterrupt:  # a stopped worker or Ctrl-C here: start no further run
            pool.shutdown(wait=False, cancel_futures=True)
            raise
    return results


def _report(log, job: Job, result: tuple[float | None, str]) -> None:
    seconds, error = result
    if error:
        log(f"  {job.run}: FAILED: {error}")
    else:
        log(f"  {job.run}: trained in {seconds:.0f} s")
