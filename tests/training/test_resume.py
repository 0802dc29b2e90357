"""Exact resume: a run killed with SIGKILL and resumed equals an uninterrupted run."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from bertcurve import layout
from bertcurve.training.metrics_log import read_records, without_timing
from bertcurve.stages.train import train

pytestmark = pytest.mark.slow


def _run_cli(data: Path, out: Path, *extra: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-m", "bertcurve", "train", "--data", str(data),
                             "--out", str(out), "--preset", "tiny", "--quiet", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)


def _lines(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def _assert_same_run(a: Path, b: Path) -> None:
    wa = load_file(str(a / layout.FINAL_MODEL_DIR / "model.safetensors"))
    wb = load_file(str(b / layout.FINAL_MODEL_DIR / "model.safetensors"))
    assert wa.keys() == wb.keys()
    for key in wa:
        assert wa[key].dtype == wb[key].dtype
        assert bool((wa[key] == wb[key]).all()), f"{key} differs"
    ra = [without_timing(r) for r in read_records(a / layout.METRICS)]
    rb = [without_timing(r) for r in read_records(b / layout.METRICS)]
    assert ra == rb
    raw = (b / layout.METRICS).read_bytes()
    assert raw.endswith(b"\n") and raw.count(b"\n") == len(rb)  # no partial or extra lines
    steps = [(r["step"], r["split"]) for r in rb]
    assert len(steps) == len(set(steps))  # no duplicates


@pytest.fixture(scope="module")
def reference_run(tiny_data_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("reference") / "run"
    result = train(tiny_data_dir, out, preset="tiny", quiet=True)
    assert result.completed
    return out


def test_sigkill_anywhere_then_resume_is_bitwise_identical(tiny_data_dir, reference_run, tmp_path):
    total = _lines(reference_run / layout.METRICS)
    rng = random.Random(int(os.environ.get("BERTCURVE_KILL_SEED", "0")) or None)
    target = rng.randint(3, total - 3)  # kill after this many metrics lines have appeared
    delay = rng.uniform(0.0, 0.15)      # ... plus a little: mid-step, mid-eval or mid-save
    out = tmp_path / "killed"
    proc = _run_cli(tiny_data_dir, out)
    try:
        deadline = time.monotonic() + 120
        while _lines(out / layout.METRICS) < target and proc.poll() is None:
            assert time.monotonic() < deadline, "training did not start"
            time.sleep(0.005)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    killed = proc.returncode == -signal.SIGKILL
    result = train(tiny_data_dir, out, quiet=True)  # saved config, --resume auto
    assert result.completed
    if killed:
        assert result.resumed_from is None or result.resumed_from < result.max_steps
    # No half-written checkpoint folder is left where a checkpoint is expected.
    names = [p.name for p in (out / layout.CHECKPOINTS_DIR).iterdir()]
    assert all(n.startswith(layout.CHECKPOINT_PREFIX) for n in names), names
    _assert_same_run(reference_run, out)


def test_resume_with_partial_last_line_and_newer_lines(tiny_data_dir, reference_run, tmp_path):
    """Simulates the moment after a kill: a torn last line and lines past the checkpoint."""
    import shutil

    out = tmp_path / "torn"
    shutil.copytree(reference_run, out)
    shutil.rmtree(out / layout.FINAL_MODEL_DIR)
    ckpts = sorted((out / layout.CHECKPOINTS_DIR).iterdir())
    shutil.rmtree(ckpts[-1])  # newest checkpoint lost: resume from the one before
    with open(out / layout.METRICS, "ab") as handle:
        handle.write(b'{"format": "bertcurve.metrics/1", "step": 99, "spl')
    result = train(tiny_data_dir, out, quiet=True)
    assert result.resumed_from == layout.checkpoint_step(ckpts[-2])
    _assert_same_run(reference_run, out)


def test_gpu_style_pipeline_changes_nothing(tiny_data_dir, reference_run, tmp_path, monkeypatch):
    # The CUDA path builds batches ahead on a thread and reads losses only at log and
    # checkpoint steps; both are speed settings, so the run must be bitwise the same.
    import bertcurve.training.trainer as trainer_mod
    from bertcurve.training.config import SpeedConfig

    monkeypatch.setattr(trainer_mod, "reads_stall", lambda device: True)
    out = tmp_path / "pipelined"
    train(tiny_data_dir, out, preset="tiny", quiet=True, speed=SpeedConfig(prefetch=3))
    _assert_same_run(reference_run, out)


def test_deferred_reads_still_catch_the_first_nan_step(tiny_data_dir, tmp_path, monkeypatch,
                                                       nan_loss_from_step_13):
    import bertcurve.training.trainer as trainer_mod
    from bertcurve.training.config import SpeedConfig
    from bertcurve.errors import UserError

    monkeypatch.setattr(trainer_mod, "reads_stall", lambda device: True)
    out = tmp_path / "nan"
    # Logged every 5 steps: step 13 is read at step 15, and still named as the culprit.
    with pytest.raises(UserError, match=r"loss became nan at step 13.*step-00000010"):
        train(tiny_data_dir, out, preset="tiny", overrides={"log_every": 5}, quiet=True,
              speed=SpeedConfig(prefetch=2))
    assert [p.name for p in (out / layout.CHECKPOINTS_DIR).iterdir()] == ["step-00000010"]
    weights = load_file(str(out / layout.CHECKPOINTS_DIR / "step-00000010" / layout.CKPT_WEIGHTS))
    assert all(bool(t.isfinite().all()) for t in weights.values())
