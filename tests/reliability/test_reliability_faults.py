"""Damaged checkpoints, crafted pickles, write failures and the one-writer lock of `bertcurve train`.

Every scenario goes through the real CLI in a separate process and ends with
the strongest check available: after the fault, a plain re-run of the same
command reproduces the uninterrupted run bit for bit.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import reltools

STEP_12 = "checkpoints/step-00000012"
STEP_6 = "checkpoints/step-00000006"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def interrupted_run(tiny_data_dir, tmp_path_factory) -> Path:
    """A run SIGKILLed during the evaluation of step 16: checkpoints at steps 6 and 12 (read only)."""
    out = tmp_path_factory.mktemp("interrupted") / "run"
    outcome = reltools.run_child(reltools.train_argv(tiny_data_dir, out), point="after-eval-line", step=16)
    assert outcome.killed
    assert [p.name for p in sorted((out / "checkpoints").iterdir())] == ["step-00000006", "step-00000012"]
    return out


def _copy(run: Path, tmp_path: Path) -> Path:
    target = tmp_path / "run"
    shutil.copytree(run, target)
    return target


def _train(data: Path, run: Path, tmp_path: Path, *extra: str, setup=None) -> reltools.Outcome:
    log = tmp_path / f"log-{len(list(tmp_path.glob('log-*')))}.txt"
    return reltools.run_child(reltools.train_argv(data, run, *extra), quiet=False, log=log, setup=setup)


def _assert_equals_reference(run: Path, reference: Path) -> None:
    assert reltools.same_weights(reltools.final_weights(run), reltools.final_weights(reference))
    got = reltools.metrics_lines(run)
    assert reltools.duplicated_keys(got) == []
    assert reltools.without_timing(got) == reltools.without_timing(reltools.metrics_lines(reference))
    assert reltools.visible_checkpoints_verify(run) == []


def _rewrite_checksum(folder: Path, name: str) -> None:
    """What an attacker (or a buggy tool) does: make checkpoint.json agree with a replaced file."""
    meta_path = folder / "checkpoint.json"
    meta = json.loads(meta_path.read_text())
    data = (folder / name).read_bytes()
    meta["files"][name] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    meta_path.write_text(json.dumps(meta))


def _flip(path: Path, offset_fraction: float = 0.5) -> None:
    data = bytearray(path.read_bytes())
    i = int(len(data) * offset_fraction)
    data[i] ^= 0x10
    path.write_bytes(bytes(data))


# ------------------------------------------------------------------ corrupted checkpoints
def _truncate_weights(ck: Path) -> None:
    os.truncate(ck / "model.safetensors", 1000)


def _bitflip_weights(ck: Path) -> None:
    _flip(ck / "model.safetensors", 0.7)


def _bitflip_state(ck: Path) -> None:
    _flip(ck / "training_state.pt", 0.3)


def _delete_state(ck: Path) -> None:
    (ck / "training_state.pt").unlink()


def _delete_meta(ck: Path) -> None:
    (ck / "checkpoint.json").unlink()


def _checksum_mismatch(ck: Path) -> None:
    meta = json.loads((ck / "checkpoint.json").read_text())
    meta["files"]["model.safetensors"]["sha256"] = "0" * 64
    (ck / "checkpoint.json").write_text(json.dumps(meta))


def _garbage_meta(ck: Path) -> None:
    (ck / "checkpoint.json").write_bytes(b"\x00\xff{not json")


def _bitflip_weights_consistent_checksum(ck: Path) -> None:
    # Damage the safetensors header itself and make the checksum agree: only the loader can tell.
    path = ck / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[0:8] = (2**62).to_bytes(8, "little")
    path.write_bytes(bytes(data))
    _rewrite_checksum(ck, "model.safetensors")


def _bitflip_state_consistent_checksum(ck: Path) -> None:
    path = ck / "training_state.pt"
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    _rewrite_checksum(ck, "training_state.pt")


CORRUPTIONS = {
    "truncated-weights": _truncate_weights,
    "bitflip-weights": _bitflip_weights,
    "bitflip-state": _bitflip_state,
    "missing-state": _delete_state,
    "missing-checkpoint-json": _delete_meta,
    "checksum-mismatch": _checksum_mismatch,
    "garbage-checkpoint-json": _garbage_meta,
    "bad-safetensors-header-matching-checksum": _bitflip_weights_consistent_checksum,
    "truncated-state-matching-checksum": _bitflip_state_consistent_checksum,
}


@pytest.mark.parametrize("corruption", sorted(CORRUPTIONS))
def test_damaged_newest_checkpoint_is_reported_and_the_previous_one_used(
        corruption, interrupted_run, tiny_data_dir, reference_run_dir, tmp_path):
    run = _copy(interrupted_run, tmp_path)
    CORRUPTIONS[corruption](run / STEP_12)
    outcome = _train(tiny_data_dir, run, tmp_path)
    assert outcome.exitcode == 0, outcome.output
    assert "Traceback" not in outcome.output, outcome.output
    warnings = [line for line in outcome.output.splitlines() if "step-00000012" in line]
    assert len(warnings) == 1 and "damaged" in warnings[0], outcome.output
    _assert_equals_reference(run, reference_run_dir)


def test_no_intact_checkpoint_left_restarts_from_scratch(interrupted_run, tiny_data_dir,
                                                          reference_run_dir, tmp_path):
    run = _copy(interrupted_run, tmp_path)
    _truncate_weights(run / STEP_12)
    _delete_state(run / STEP_6)
    outcome = _train(tiny_data_dir, run, tmp_path)
    assert outcome.exitcode == 0, outcome.output
    assert "no intact checkpoint" in outcome.output and "Traceback" not in outcome.output
    _assert_equals_reference(run, reference_run_dir)


def test_explicit_resume_from_a_damaged_checkpoint_is_refused_in_one_line(interrupted_run, tiny_data_dir,
                                                                           tmp_path):
    run = _copy(interrupted_run, tmp_path)
    _bitflip_weights(run / STEP_12)
    before = (run / "metrics.jsonl").read_bytes()
    outcome = _train(tiny_data_dir, run, tmp_path, "--resume", str(run / STEP_12))
    assert outcome.exitcode == 2
    errors = [line for line in outcome.output.splitlines() if line.startswith("bertcurve: error:")]
    assert len(errors) == 1 and "damaged" in errors[0] and "Traceback" not in outcome.output
    assert (run / "metrics.jsonl").read_bytes() == before   # nothing touched


# ------------------------------------------------------------------ crafted pickles
class _Payload:
    """Unpickling this runs ``touch MARKER`` -- if the loader executes pickled code."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("style", ["raw-pickle", "torch-save-zip"])
def test_crafted_pickle_as_training_state_is_refused_without_running_it(
        style, interrupted_run, tiny_data_dir, reference_run_dir, tmp_path):
    import torch

    run = _copy(interrupted_run, tmp_path)
    marker = tmp_path / "PWNED"
    state = run / STEP_12 / "training_state.pt"
    if style == "raw-pickle":
        state.write_bytes(pickle.dumps(_Payload(marker)))
    else:
        torch.save({"optimizer": _Payload(marker)}, state)
    _rewrite_checksum(run / STEP_12, "training_state.pt")   # the checksum does not save us here

    explicit = _train(tiny_data_dir, run, tmp_path, "--resume", str(run / STEP_12))
    assert explicit.exitcode == 2 and "weights_only" in explicit.output, explicit.output
    assert not marker.exists(), "the crafted pickle was executed"

    auto = _train(tiny_data_dir, run, tmp_path)
    assert auto.exitcode == 0, auto.output
    assert not marker.exists(), "the crafted pickle was executed"
    assert any("step-00000012" in line and "damaged" in line for line in auto.output.splitlines())
    _assert_equals_reference(run, reference_run_dir)


def test_crafted_pickle_as_model_weights_is_refused_by_fill_mask(reference_run_dir, tmp_path):
    """A final/ folder whose weights are a pickle (pytorch_model.bin) must not run it."""
    run = tmp_path / "run"
    shutil.copytree(reference_run_dir, run)
    marker = tmp_path / "PWNED"
    (run / "final" / "model.safetensors").unlink()
    (run / "final" / "pytorch_model.bin").write_bytes(pickle.dumps(_Payload(marker)))
    outcome = reltools.run_child(["fill-mask", str(run), "今天天气很[MASK]。"], quiet=False,
                                 log=tmp_path / "log.txt")
    assert not marker.exists(), "the crafted pickle was executed"
    assert outcome.exitcode == 2 and "Traceback" not in outcome.output, outcome.output
    errors = [line for line in outcome.output.splitlines() if line.startswith("bertcurve: error:")]
    assert len(errors) == 1, outcome.output


# ------------------------------------------------------------------ write failures
WRITE_FAULTS = {
    # real kernel errors (ulimit -f): the weights file / the training-state file cannot be written
    "ulimit-weights": reltools.FileSizeLimit(300_000),
    "ulimit-training-state": reltools.FileSizeLimit(700_000),
    # simulated: disk full in the middle of a metrics line; safetensors reports ENOSPC; read-only folder
    "enospc-metrics": reltools.MetricsDiskFull(good=15),
    "enospc-checkpoint-weights": reltools.CheckpointWriteFault("enospc-weights", 12),
    "erofs-checkpoint": reltools.CheckpointWriteFault("erofs", 12),
}


@pytest.mark.parametrize("fault", sorted(WRITE_FAULTS))
def test_write_failure_stops_cleanly_and_keeps_the_last_good_state(fault, tiny_data_dir, reference_run_dir,
                                                                   tmp_path):
    run = tmp_path / "run"
    failed = _train(tiny_data_dir, run, tmp_path, setup=WRITE_FAULTS[fault])
    assert failed.exitcode not in (0, None) and not failed.killed, failed
    assert "Traceback" not in failed.output, failed.output
    errors = [line for line in failed.output.splitlines() if line.startswith("bertcurve: error:")]
    assert len(errors) == 1, failed.output
    assert "could not write" in errors[0] and "intact" in errors[0], errors[0]
    # What was written before the fault is intact: checkpoints verify, complete metrics lines parse.
    assert reltools.visible_checkpoints_verify(run) == []
    raw = (run / "metrics.jsonl").read_bytes()
    complete = raw[: raw.rfind(b"\n") + 1]
    records = [json.loads(line) for line in complete.split(b"\n")[:-1]]
    reference = reltools.metrics_lines(reference_run_dir)
    assert reltools.without_timing(records) == reltools.without_timing(reference[: len(records)])
    # The space comes back: the same command continues to exactly the uninterrupted result.
    again = _train(tiny_data_dir, run, tmp_path)
    assert again.exitcode == 0, again.output
    _assert_equals_reference(run, reference_run_dir)


# ------------------------------------------------------------------ one writer
def test_second_writer_is_refused_while_the_first_runs(tiny_data_dir, reference_run_dir, tmp_path):
    run = tmp_path / "run"
    ctx = reltools.context()
    first_log = tmp_path / "first.txt"
    first = ctx.Process(target=reltools.child_main,
                        args=(reltools.train_argv(tiny_data_dir, run), None, 0, False, str(first_log),
                              reltools.SlowSteps(0.15)))
    first.start()
    try:
        lock = run / "train.lock"
        assert reltools.wait_for(lambda: lock.exists() and str(first.pid) in lock.read_text(), 120)
        second = _train(tiny_data_dir, run, tmp_path)
        assert first.is_alive(), "the first run ended before the second one knocked; slow it down more"
        assert second.exitcode == 2, second.output
        errors = [line for line in second.output.splitlines() if line.startswith("bertcurve: error:")]
        assert len(errors) == 1 and "in use" in errors[0] and str(first.pid) in errors[0], second.output
    finally:
        first.join(300)
    assert first.exitcode == 0, first_log.read_text()
    _assert_equals_reference(run, reference_run_dir)   # the refused writer changed nothing


@pytest.mark.parametrize("content", ["json", "garbage"])
def test_stale_lock_of_a_dead_process_is_taken_over_with_a_warning(content, interrupted_run, tiny_data_dir,
                                                                    reference_run_dir, tmp_path):
    run = _copy(interrupted_run, tmp_path)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock = run / "train.lock"
    if content == "json":
        lock.write_text(json.dumps({"pid": dead.pid, "host": "somewhere", "started": "2026-01-01"}) + "\n")
    else:
        lock.write_bytes(b"\x00\xffnot a lock")
    outcome = _train(tiny_data_dir, run, tmp_path)
    assert outcome.exitcode == 0, outcome.output
    if content == "json":
        assert any("stale lock" in line and str(dead.pid) in line for line in outcome.output.splitlines())
    _assert_equals_reference(run, reference_run_dir)
