"""The dashboard tells a training run from an interrupted one by a live lock, not a file."""

import json
import subprocess
import sys
import time

from bertcurve import layout
from bertcurve.training.checkpoint import RunLock


def _run_dir(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    rec = {"format": "bertcurve.metrics/1", "step": 5, "split": "train", "loss": 6.0, "mlm_accuracy": 0.1,
           "lr": 1e-3, "elapsed_s": 1.0}
    (run / layout.METRICS).write_text(json.dumps(rec) + "\n")
    return run


def test_a_lock_file_left_by_a_killed_process_is_not_training(tmp_path):
    run = _run_dir(tmp_path)
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from pathlib import Path; from bertcurve.training.checkpoint import RunLock; "
        f"RunLock(Path({str(run)!r})).acquire(); print('held', flush=True); time.sleep(60)")],
        stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    assert RunLock.is_held(run)
    from bertcurve.stages.dashboard import Dashboard

    board = Dashboard([run])
    assert board.status()["runs"][0]["state"] == "training"
    holder.kill()
    holder.wait()
    time.sleep(0.1)
    assert (run / layout.LOCK_FILE).exists()          # the file stays behind a SIGKILL ...
    assert not RunLock.is_held(run)                   # ... but nobody holds it
    assert board.status()["runs"][0]["state"] == "interrupted"
