"""torchrun with 2 CPU processes (gloo) trains what one process trains at the same global batch.

The global batch of an optimizer step is micro_batch x grad_accum x processes
(as in the Hugging Face Trainer), so 2 processes at ``grad_accum`` g equal one
process at 2g: the same micro-batches, masks, dropout and tokens; only the
order of the gradient sums differs.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from bertcurve import layout
from bertcurve.errors import UserError
from bertcurve.stages.train import train
from bertcurve.training import checkpoint as ckpt
from bertcurve.training.metrics_log import read_records, without_timing

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(sys.platform != "linux", reason="gloo test runs on Linux")]

STEPS = {"max_steps": 6, "eval_every": 3, "save_every": 3}
# name -> settings of the 2-process run (grad_accum per process)
CASES = {
    "tied-ga1": {"grad_accum": 1},
    "tied-ga2": {"grad_accum": 2},
    "untied-ga1": {"grad_accum": 1, "model.tie_word_embeddings": False},
    "untied-ga2": {"grad_accum": 2, "model.tie_word_embeddings": False},
}
WORKER = Path(__file__).with_name("ddp_worker.py")


def _torchrun(*args: str, **env_vars: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", **env_vars)
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           "--nproc_per_node=2", *args],
                          capture_output=True, text=True, env=env, timeout=600)


def _failure(proc: subprocess.CompletedProcess) -> list[str]:
    return [line for line in proc.stderr.splitlines() if "Error" in line or "bertcurve" in line][:8]


@pytest.fixture(scope="module")
def two_process_runs(tiny_data_dir, tmp_path_factory) -> Path:
    """Every case trained by one torchrun of 2 processes (one start-up for all of them)."""
    pytest.importorskip("torch.distributed.run")
    root = tmp_path_factory.mktemp("ddp")
    proc = _torchrun(str(WORKER), str(tiny_data_dir), str(root), json.dumps(
        {name: dict(STEPS, **settings) for name, settings in CASES.items()}))
    assert proc.returncode == 0, _failure(proc)
    return root


def _assert_same_training(ddp: Path, single: Path) -> None:
    a = load_file(str(ddp / layout.FINAL_MODEL_DIR / "model.safetensors"))
    b = load_file(str(single / layout.FINAL_MODEL_DIR / "model.safetensors"))
    assert a.keys() == b.keys()
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-5
    ra = [without_timing(r) for r in read_records(ddp / layout.METRICS)]
    rb = [without_timing(r) for r in read_records(single / layout.METRICS)]
    assert [(r["step"], r["split"]) for r in ra] == [(r["step"], r["split"]) for r in rb]
    for x, y in zip(ra, rb):
        assert x["tokens_seen"] == y["tokens_seen"]  # the same data, step by step
        assert x.get("epoch") == y.get("epoch")
        assert x["loss"] == pytest.approx(y["loss"], rel=1e-5)


@pytest.mark.parametrize("case", list(CASES))
def test_two_processes_train_what_one_process_trains_at_the_same_global_batch(
        two_process_runs, tiny_data_dir, tmp_path, case):
    settings = dict(STEPS, **CASES[case])
    settings["grad_accum"] *= 2  # one process does both processes' micro-batches
    single = tmp_path / "single"
    train(tiny_data_dir, single, preset="tiny", quiet=True, overrides=settings)
    _assert_same_training(two_process_runs / case, single)
    saved = json.loads((two_process_runs / case / layout.RUN_CONFIG).read_text())
    assert saved["world_size"] == 2


def test_resume_on_another_number_of_processes_needs_the_same_global_batch(
        two_process_runs, tiny_data_dir, tmp_path):
    # A 2-process run at grad_accum 1, killed after step 3, continued by one process.
    run = tmp_path / "moved"
    shutil.copytree(two_process_runs / "tied-ga1", run)
    shutil.rmtree(run / layout.FINAL_MODEL_DIR)
    shutil.rmtree(run / layout.CHECKPOINTS_DIR / layout.checkpoint_dir_name(6))
    with pytest.raises(UserError, match=r"2 micro-batches per optimizer step.*--grad-accum 2"):
        train(tiny_data_dir, run, quiet=True)  # 1 process x grad_accum 1: half the batch
    assert not (run / layout.FINAL_MODEL_DIR).exists()
    result = train(tiny_data_dir, run, quiet=True, overrides={"grad_accum": 2})
    assert result.completed and result.resumed_from == 3
    single = tmp_path / "single"
    train(tiny_data_dir, single, preset="tiny", quiet=True, overrides=dict(STEPS, grad_accum=2))
    _assert_same_training(run, single)


def test_cli_under_torchrun_matches_one_process(tiny_data_dir, tmp_path):
    pytest.importorskip("torch.distributed.run")
    ddp = tmp_path / "ddp"
    proc = _torchrun("-m", "bertcurve", "train", "--data", str(tiny_data_dir), "--out", str(ddp),
                     "--preset", "tiny", "--quiet", "--max-steps", "6", "--eval-every", "3",
                     "--save-every", "6", "--grad-accum", "1")
    assert proc.returncode == 0, _failure(proc)
    single = tmp_path / "single"
    train(tiny_data_dir, single, preset="tiny", quiet=True,
          overrides={"max_steps": 6, "eval_every": 3, "save_every": 6, "grad_accum": 2})
    _assert_same_training(ddp, single)


# ------------------------------------------------------------------ one rank stopped or killed
def _ranks_exit_codes(proc: subprocess.CompletedProcess) -> dict[int, int]:
    """rank -> exit code, as torchrun's failure summary reports them (failed ranks only)."""
    found = re.findall(r"rank\s*:\s*(\d+) \(local_rank.*?\n\s*exitcode\s*:\s*(-?\d+)", proc.stderr)
    return {int(rank): int(code) for rank, code in found}


def _killed_run(tiny_data_dir, root: Path, fault: str,
                **env_vars: str) -> tuple[subprocess.CompletedProcess, Path]:
    """The tied-ga1 case on 2 processes with ``fault`` on one rank; bounded by _torchrun's timeout."""
    proc = _torchrun(str(WORKER), str(tiny_data_dir), str(root),
                     json.dumps({"run": dict(STEPS, **CASES["tied-ga1"])}), fault, **env_vars)
    return proc, root / "run"


def test_sigterm_on_one_rank_stops_every_rank_at_the_same_step_and_resumes_exactly(
        two_process_runs, tiny_data_dir, tmp_path):
    # Rank 1 alone gets SIGTERM during step 4: both ranks finish step 4, rank 0 checkpoints it,
    # and both exit as interrupted (130) instead of one of them waiting in a collective.
    # (Whichever exits first makes torchrun SIGTERM the other, which may then die of it while
    # exiting: its checkpoint is on disk by then, as the ranks wait for it before returning.)
    proc, run = _killed_run(tiny_data_dir, tmp_path, "1:4:after-backward:SIGTERM")
    codes = _ranks_exit_codes(proc)
    assert proc.returncode != 0 and set(codes) == {0, 1}, _failure(proc)
    assert 130 in codes.values() and set(codes.values()) <= {130, -signal.SIGTERM}, codes
    assert not re.search(r"\[rank\d\]: Traceback", proc.stderr) and "another process" not in proc.stderr
    assert ckpt.latest_good_checkpoint(run).step == 4
    assert max(r["step"] for r in read_records(run / layout.METRICS)) == 4
    resumed = _torchrun(str(WORKER), str(tiny_data_dir), str(tmp_path),
                        json.dumps({"run": dict(STEPS, **CASES["tied-ga1"])}))
    assert resumed.returncode == 0, _failure(resumed)
    _assert_same_training(run, two_process_runs / "tied-ga1")


def test_sigkill_of_one_rank_stops_the_other_with_one_line_and_resume_auto_completes(
        two_process_runs, tiny_data_dir, tmp_path):
    # Rank 1 dies (SIGKILL, as on a crash or OOM kill) in step 5: rank 0 must not hang in the
    # gradient all-reduce; it stops with a one-line error naming the last good checkpoint.
    # torchrun SIGTERMs rank 0 as soon as it sees rank 1 die: the line must be out before
    # the trainer gives SIGTERM back to its default action (the slow exit widens that window).
    proc, run = _killed_run(tiny_data_dir, tmp_path, "1:5:after-backward:SIGKILL",
                            BERTCURVE_TEST_SLOW_EXIT="2")
    assert proc.returncode != 0
    assert "another process of this run stopped" in proc.stderr
    assert "checkpoint (step-00000003) is kept" in proc.stderr
    assert ckpt.latest_good_checkpoint(run).step == 3
    # --resume auto on one process at the same global batch finishes the run exactly.
    result = train(tiny_data_dir, run, quiet=True, overrides={"grad_accum": 2})
    assert result.completed and result.resumed_from == 3
    _assert_same_training(run, two_process_runs / "tied-ga1")
