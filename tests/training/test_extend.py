"""`bertcurve train --extend-to N`: a WSD run continued from its stable phase equals a run
planned for N steps from the start, also when killed mid-extension and resumed."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from bertcurve import layout
from bertcurve.curves.logs import load_log
from bertcurve.errors import UserError
from bertcurve.stages.train import train
from bertcurve.training.extension import BRANCH_SPLIT
from bertcurve.training.metrics_log import read_records, without_timing

pytestmark = pytest.mark.slow

WSD = {"schedule": "wsd"}   # tiny: 40 steps, warm-up 5, decay_fraction 0.2 -> stable phase ends at 32
STABLE_END = 32
COOLDOWN_AT = 20            # kept with --save-at; a cooldown from it is the 25-step WSD plan


def _weights(run: Path) -> dict:
    return load_file(str(run / layout.FINAL_MODEL_DIR / "model.safetensors"))


def _curve(run: Path) -> list[dict]:
    return [without_timing(r) for r in read_records(run / layout.METRICS) if r["split"] != BRANCH_SPLIT]


def _assert_same(a: Path, b: Path) -> None:
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    for key in wa:
        assert bool((wa[key] == wb[key]).all()), f"{key} differs"
    assert _curve(a) == _curve(b)


@pytest.fixture(scope="module")
def wsd40(tiny_data_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wsd40") / "run"
    assert train(tiny_data_dir, out, preset="tiny", overrides=dict(WSD, save_at=(COOLDOWN_AT,)),
                 quiet=True).completed
    return out


@pytest.fixture(scope="module")
def wsd60(tiny_data_dir, tmp_path_factory) -> Path:
    """What the extension must reproduce: a run planned for 60 steps from the start."""
    out = tmp_path_factory.mktemp("wsd60") / "run"
    assert train(tiny_data_dir, out, preset="tiny", overrides=dict(WSD, max_steps=60), quiet=True).completed
    return out


def test_wsd_run_keeps_its_last_stable_phase_checkpoint(wsd40):
    steps = sorted(int(p.name.split("-")[1]) for p in (wsd40 / layout.CHECKPOINTS_DIR).iterdir())
    assert STABLE_END in steps          # kept although keep=2 prunes 10 and 20
    assert steps == [COOLDOWN_AT, 30, STABLE_END, 40]


def test_extension_equals_a_run_planned_that_long(tiny_data_dir, wsd40, wsd60, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(wsd40, run)
    old_final = _weights(wsd40)
    result = train(tiny_data_dir, run, extend_to=60, quiet=True)
    assert result.completed and result.resumed_from == STABLE_END
    _assert_same(run, wsd60)
    branch_marks = [r for r in read_records(run / layout.METRICS) if r["split"] == BRANCH_SPLIT]
    assert [(r["step"], r["from_max_steps"], r["to_max_steps"]) for r in branch_marks] == [(STABLE_END, 40, 60)]
    # The abandoned cooldown: its lines, checkpoints and final model, apart from the curve.
    branch = run / layout.branch_dir_name(40)
    old_lines = list(read_records(branch / layout.METRICS))
    assert sorted({r["step"] for r in old_lines}) == list(range(STABLE_END + 1, 41))
    assert [without_timing(r) for r in old_lines] == \
        [without_timing(r) for r in read_records(wsd40 / layout.METRICS) if r["step"] > STABLE_END]
    assert (branch / layout.CHECKPOINTS_DIR / layout.checkpoint_dir_name(40)).is_dir()
    assert all(bool((old_final[k] == v).all()) for k, v in _weights(branch).items())
    assert not (run / layout.EXTEND_INTENT).exists()
    # The log reader sees one curve, with no series made of the branch marker.
    log = load_log(run)
    assert not [name for name in log.series if name.startswith("branch")]
    assert log.series["eval_mlm_accuracy"].steps.max() == 60
    # Asking again is a no-op continuation, not a second branch.
    again = train(tiny_data_dir, run, extend_to=60, quiet=True)
    assert again.completed and len([r for r in read_records(run / layout.METRICS)
                                    if r["split"] == BRANCH_SPLIT]) == 1


def _lines(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


@pytest.mark.parametrize("after_lines", [0, 8, 20])
def test_sigkill_during_extension_then_resume_is_bitwise_identical(tiny_data_dir, wsd40, wsd60, tmp_path,
                                                                   after_lines):
    run = tmp_path / "run"
    shutil.copytree(wsd40, run)
    base = _lines(run / layout.METRICS)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "bertcurve", "train", "--data", str(tiny_data_dir),
                             "--out", str(run), "--extend-to", "60", "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        deadline = time.monotonic() + 120
        # after_lines=0: kill as soon as the journal appears (mid-branch); else after new lines.
        while proc.poll() is None:
            assert time.monotonic() < deadline, "the extension did not start"
            branched = not (run / layout.CHECKPOINTS_DIR / layout.checkpoint_dir_name(40)).exists()
            if after_lines == 0 and ((run / layout.EXTEND_INTENT).exists() or branched):
                break
            # After the branch metrics.jsonl holds steps 0-32 and the marker: base - 8 lines.
            if after_lines and branched and _lines(run / layout.METRICS) >= base - 8 + after_lines:
                break
            time.sleep(0.002)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the extension finished before the kill"
    result = train(tiny_data_dir, run, quiet=True)   # --resume auto, no --extend-to
    assert result.completed and result.step == 60
    _assert_same(run, wsd60)
    marks = [r for r in read_records(run / layout.METRICS) if r["split"] == BRANCH_SPLIT]
    assert len(marks) == 1 and marks[0]["step"] == STABLE_END
    assert sorted({r["step"] for r in read_records(run / layout.branch_dir_name(40) / layout.METRICS)}) == \
        list(range(STABLE_END + 1, 41))


def test_cosine_run_is_refused_without_rewarm(tiny_data_dir, tmp_path):
    run = tmp_path / "run"
    assert train(tiny_data_dir, run, preset="tiny", overrides={"max_steps": 20}, quiet=True).completed
    before = (run / layout.METRICS).read_bytes()
    with pytest.raises(UserError, match="learning rate is spent.*--schedule wsd.*--rewarm"):
        train(tiny_data_dir, run, extend_to=30, quiet=True)
    assert (run / layout.METRICS).read_bytes() == before  # nothing touched
    result = train(tiny_data_dir, run, extend_to=30, rewarm=True, quiet=True)
    assert result.completed and result.resumed_from == 20
    lrs = {r["step"]: r["lr"] for r in read_records(run / layout.METRICS) if r["split"] == "train"}
    assert lrs[20] == 0.0 and lrs[21] > 0.0  # the rate rose again: a different curve
    mark = [r for r in read_records(run / layout.METRICS) if r["split"] == BRANCH_SPLIT]
    assert mark and mark[0]["rewarm"] is True and mark[0]["step"] == 20


def test_constant_run_simply_continues(tiny_data_dir, tmp_path):
    short, long = tmp_path / "short", tmp_path / "long"
    assert train(tiny_data_dir, short, preset="tiny", overrides={"schedule": "constant", "max_steps": 20},
                 quiet=True).completed
    assert train(tiny_data_dir, long, preset="tiny", overrides={"schedule": "constant", "max_steps": 30},
                 quiet=True).completed
    result = train(tiny_data_dir, short, extend_to=30, quiet=True)
    assert result.completed and result.resumed_from == 20
    _assert_same(short, long)
    assert not (short / layout.BRANCHES_DIR).exists()


@pytest.mark.parametrize("kwargs, message", [
    ({"extend_to": 30, "overrides": {"max_steps": 50}}, "drop --max-steps"),
    ({"extend_to": 30, "resume": "none"}, "drop --resume"),
    ({"extend_to": 10}, "not beyond the run's 20 steps"),
    ({"rewarm": True}, "only applies with --extend-to"),
])
def test_bad_extension_arguments_are_one_line_errors(tiny_data_dir, tmp_path, kwargs, message):
    run = tmp_path / "run"
    assert train(tiny_data_dir, run, preset="tiny", overrides={"schedule": "constant", "max_steps": 20},
                 quiet=True).completed
    with pytest.raises(UserError, match=message):
        train(tiny_data_dir, run, quiet=True, **kwargs)


def test_extending_nothing_is_refused(tiny_data_dir, tmp_path):
    with pytest.raises(UserError, match="no run to extend"):
        train(tiny_data_dir, tmp_path / "empty", extend_to=30, quiet=True)


@pytest.fixture(scope="module")
def wsd25(tiny_data_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wsd25") / "run"
    assert train(tiny_data_dir, out, preset="tiny", overrides=dict(WSD, max_steps=25), quiet=True).completed
    return out


def test_cooldown_branch_is_the_shorter_wsd_plan_and_compare_draws_the_curve(tiny_data_dir, wsd40, wsd25,
                                                                             tmp_path):
    from bertcurve.stages.compare import compare
    from bertcurve.stages.train import cooldowns
    from bertcurve.training.extension import cooldown_max_steps

    assert cooldown_max_steps(COOLDOWN_AT, 5, 0.2) == 25
    run = tmp_path / "run"
    shutil.copytree(wsd40, run)
    main_metrics = (run / layout.METRICS).read_bytes()
    [result] = cooldowns(tiny_data_dir, run, [COOLDOWN_AT], quiet=True)
    branch = tmp_path / f"run-cooldown-{COOLDOWN_AT}"
    assert result.completed and result.run_dir == branch and result.resumed_from == COOLDOWN_AT
    _assert_same(branch, wsd25)
    assert (run / layout.METRICS).read_bytes() == main_metrics  # the main run is untouched
    res = compare([run, branch], out=tmp_path / "cmp", bootstrap=0)
    points = res["cooldown_curve"]["points"]
    assert [(p["step"], p["name"]) for p in points] == [(25, branch.name), (40, "run")]
    final25 = [r for r in read_records(wsd25 / layout.METRICS) if r["split"] == "eval"][-1]
    assert points[0]["value"] == final25["mlm_accuracy"] and points[0]["se"] == final25["mlm_accuracy_se"]
    assert Path(res["cooldown_figure"]).stat().st_size > 10_000


def test_sigkill_during_a_cooldown_branch_then_resume_is_bitwise_identical(tiny_data_dir, wsd40, wsd25,
                                                                           tmp_path):
    run = tmp_path / "run"
    shutil.copytree(wsd40, run)
    branch = tmp_path / f"run-cooldown-{COOLDOWN_AT}"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    # A finished main run: `train` only resumes it (nothing to do), then runs the branch.
    proc = subprocess.Popen([sys.executable, "-m", "bertcurve", "train", "--data", str(tiny_data_dir),
                             "--out", str(run), "--cooldowns-at", str(COOLDOWN_AT), "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        deadline = time.monotonic() + 120
        while proc.poll() is None and _lines(branch / layout.METRICS) < 30:
            assert time.monotonic() < deadline, "the branch did not start"
            time.sleep(0.002)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the branch finished before the kill"
    assert train(tiny_data_dir, branch, quiet=True).completed   # --resume auto in the branch dir
    _assert_same(branch, wsd25)


def test_cooldown_outside_the_stable_phase_or_without_checkpoint_is_refused(tiny_data_dir, wsd40, tmp_path):
    from bertcurve.stages.train import cooldowns

    run = tmp_path / "run"
    shutil.copytree(wsd40, run)
    with pytest.raises(UserError, match="not in .* stable phase"):
        cooldowns(tiny_data_dir, run, [36], quiet=True)
    with pytest.raises(UserError, match="no intact checkpoint at step 15.*--save-at"):
        cooldowns(tiny_data_dir, run, [15], quiet=True)
    assert not list(tmp_path.glob("run-cooldown-*"))
