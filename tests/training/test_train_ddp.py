"""torchrun with 2 CPU processes (gloo) gives the same weights as one process."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
from safetensors.torch import load_file

from bertcurve import layout
from bertcurve.training.metrics_log import read_records, without_timing
from bertcurve.stages.train import train

pytestmark = pytest.mark.slow


@pytest.mark.skipif(sys.platform != "linux", reason="gloo test runs on Linux")
def test_two_process_ddp_matches_single_process(tiny_data_dir, tmp_path):
    pytest.importorskip("torch.distributed.run")
    steps = ["--max-steps", "6", "--eval-every", "3", "--save-every", "6"]
    ddp = tmp_path / "ddp"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         "-m", "bertcurve", "train", "--data", str(tiny_data_dir), "--out", str(ddp),
         "--preset", "tiny", "--quiet", *steps],
        capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, [l for l in proc.stderr.splitlines() if "bertcurve" in l][:5]
    single = tmp_path / "single"
    train(tiny_data_dir, single, preset="tiny", quiet=True,
          overrides={"max_steps": 6, "eval_every": 3, "save_every": 6})
    a = load_file(str(ddp / layout.FINAL_MODEL_DIR / "model.safetensors"))
    b = load_file(str(single / layout.FINAL_MODEL_DIR / "model.safetensors"))
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-5
    ra = [without_timing(r) for r in read_records(ddp / layout.METRICS)]
    rb = [without_timing(r) for r in read_records(single / layout.METRICS)]
    assert [(r["step"], r["split"]) for r in ra] == [(r["step"], r["split"]) for r in rb]
    for x, y in zip(ra, rb):
        assert x["loss"] == pytest.approx(y["loss"], rel=1e-5)
