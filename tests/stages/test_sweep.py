"""bertcurve sweep: the space file, train flags, the forecast pruner's decision, a sweep that
survives a kill and a Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

optuna = pytest.importorskip("optuna")

from bertcurve.curves import schedule_law as law  # noqa: E402
from bertcurve.errors import UserError  # noqa: E402
from bertcurve.tuning import (SCHEDULE_ATTR, ForecastPruner, analogue_errors, analogue_forecast,  # noqa: E402
                              analogue_interval, parse_space, predictive_error_sd, rates_of)


def test_a_bad_space_lists_every_problem_and_runs_nothing(tmp_path):
    space = {"lr": {"low": 1e-2, "high": 1e-4}, "optim": {"low": 1, "high": 2}, "warmup_steps": [],
             "mask_prob": {"low": "a", "high": 0.3}, "dropout_rate": {"low": 0, "high": 1, "step": 2},
             "heads": {"low": 0, "high": 3}}
    with pytest.raises(UserError) as info:
        parse_space(space, "tiny")
    text = str(info.value)
    for expected in ("lr: low (0.01) must be below high", "warmup_steps: an empty list",
                     "mask_prob: low and high must both be numbers", "unknown key(s) step",
                     "unknown setting 'optim'", "heads=0"):
        assert expected in text, expected


def test_a_good_space_gives_ranges_and_choices():
    params = parse_space({"lr": {"low": 1e-4, "high": 3e-3, "log": True}, "warmup_steps": {"low": 5, "high": 20},
                          "schedule": ["cosine", "linear"]}, "tiny")
    by_name = {p.name: p for p in params}
    assert by_name["lr"].log and not by_name["lr"].integer
    assert by_name["warmup_steps"].integer
    assert by_name["schedule"].choices == ("cosine", "linear")


class _Trial:
    def __init__(self, number, schedule, values):
        self.number = number
        self.user_attrs = {SCHEDULE_ATTR: schedule}
        self.intermediate_values = values


class _Study:
    def __init__(self, best=None, finished=()):
        self._finished = list(finished) or [type("T", (), {"value": best, "number": 0})()]
        self.direction = optuna.study.StudyDirection.MAXIMIZE

    def get_trials(self, deepcopy=False, states=()):
        return self._finished


class _Finished(_Trial):
    def __init__(self, number, schedule, values):
        super().__init__(number, schedule, values)
        self.value = values[max(values)]


def _accuracy_curve(schedule, floor, steps):
    """Accuracy of a run whose held-out loss follows the law down to ``floor``."""
    rates = rates_of(schedule)
    areas = law.schedule_areas(rates, 0.99)
    loss = law.law_value((floor, 2.0, 0.5, 0.002), areas.forward[steps], areas.annealing[steps])
    rng = np.random.default_rng(0)
    return 1.2 - 0.3 * loss + rng.normal(0, 0.002, len(steps))


def test_the_forecast_pruner_stops_a_hopeless_trial_and_keeps_a_promising_one():
    schedule = {"lr": 1e-3, "warmup_steps": 20, "max_steps": 400, "schedule": "cosine", "min_lr_ratio": 0.0}
    steps = np.arange(20, 201, 10)
    bad = _accuracy_curve(schedule, 1.8, steps)      # 0.24 less accuracy all the way
    good = _accuracy_curve(schedule, 1.0, steps)
    best_final = float(_accuracy_curve(schedule, 1.0, np.array([400]))[0])
    pruner = ForecastPruner()
    assert pruner.prune(_Study(best_final), _Trial(1, schedule, dict(zip(steps.tolist(), bad))))
    assert pruner.forecasts[1]["high"] < best_final
    assert not pruner.prune(_Study(best_final), _Trial(2, schedule, dict(zip(steps.tolist(), good))))
    # never before min_fraction of the steps, never without a finished trial to beat
    early = {int(s): v for s, v in zip(steps[:6], bad[:6])}
    assert not pruner.prune(_Study(best_final), _Trial(3, schedule, early))


def _break_curve(schedule, steps, late_gain):
    """Accuracy on a plateau at 0.05 up to step 150, then rising by ``late_gain`` to the end:
    the shape the law cannot foresee from the plateau."""
    rng = np.random.default_rng(int(late_gain * 1000))
    rise = np.clip((steps - 150) / (schedule["max_steps"] - 150), 0, None) ** 0.7
    return 0.05 + late_gain * rise + rng.normal(0, 0.001, len(steps))


def test_before_its_own_backtest_the_forecast_pruner_borrows_the_error_of_finished_trials():
    schedule = {"lr": 1e-3, "warmup_steps": 20, "max_steps": 400, "schedule": "cosine", "min_lr_ratio": 0.0}
    steps = np.arange(10, 401, 10)
    early = steps <= 100    # a quarter of the steps: no backtest on the trial itself yet
    finished = [_Finished(i, schedule, dict(zip(steps.tolist(), _accuracy_curve(schedule, floor, steps))))
                for i, floor in enumerate((1.0, 1.1, 1.2))]
    bad = _accuracy_curve(schedule, 1.8, steps[early])
    pruner = ForecastPruner()
    assert pruner.prune(_Study(finished=finished), _Trial(5, schedule, dict(zip(steps[early].tolist(), bad))))
    assert pruner.forecasts[5]["error_from"] == "finished trials"
    # one that will end a little above the best finished trial runs on
    close = _accuracy_curve(schedule, 0.97, steps[early])
    assert not pruner.prune(_Study(finished=finished), _Trial(6, schedule, dict(zip(steps[early].tolist(), close))))
    # one finished trial measures the law's error too loosely (the 95 % interval for one more
    # error is 12.7 times the error seen) to prune at a quarter of the steps
    assert not pruner.prune(_Study(finished=finished[:1]), _Trial(7, schedule, dict(zip(steps[early].tolist(), bad))))


def test_the_forecast_pruner_keeps_a_plateaued_trial_when_finished_trials_broke_out_of_the_same_plateau():
    schedule = {"lr": 1e-3, "warmup_steps": 20, "max_steps": 400, "schedule": "cosine", "min_lr_ratio": 0.0}
    steps = np.arange(10, 401, 10)
    finished = [_Finished(i, schedule, dict(zip(steps.tolist(), _break_curve(schedule, steps, gain))))
                for i, gain in enumerate((0.05, 0.08, 0.1))]
    # this trial sits on the same plateau at a third of its steps; it may break out as they did
    flat = _break_curve(schedule, steps, 0.12)[steps <= 130]
    pruner = ForecastPruner()
    assert not pruner.prune(_Study(finished=finished), _Trial(9, schedule, dict(zip(steps[steps <= 130].tolist(),
                                                                                     flat))))
    assert pruner.forecasts[9]["high"] > 0.15
    # also when only one trial has finished (its own backtest alone would prune it)
    assert not pruner.prune(_Study(finished=finished[2:]), _Trial(10, schedule, dict(zip(steps[steps <= 130].tolist(),
                                                                                          flat))))


def test_the_model_error_from_a_few_errors_makes_an_exact_prediction_interval():
    # n errors of a forecaster, then one more: the interval made from the n covers the next one
    # in `level` of the cases (not more, as a confidence bound on their spread times z would)
    rng = np.random.default_rng(0)
    z = 1.959963984540054
    for n in (1, 2, 5):
        draws = rng.normal(0.0, 0.01, size=(20000, n + 1))
        covered = [abs(d[-1]) <= z * predictive_error_sd(list(d[:-1]), 0.95) for d in draws]
        assert np.mean(covered) == pytest.approx(0.95, abs=0.006), n


def test_the_analogue_forecast_grows_a_trial_as_finished_trials_grew_from_the_same_point():
    # finished trials doubled and quadrupled from where this trial is now: it grows by their
    # geometric mean, and each finished trial forecast from the others misses its final
    pairs = [(0.05, 0.10), (0.05, 0.20)]
    assert analogue_forecast(0.06, pairs) == pytest.approx(0.06 * 2 * 2 ** 0.5)
    assert analogue_errors(pairs) == pytest.approx([0.20 - 0.10, 0.10 - 0.20])
    assert analogue_forecast(0.06, []) is None


@pytest.mark.parametrize("kind", ["growth", "power"])
def test_the_analogue_interval_covers_a_new_trial_as_often_as_its_level_says(kind):
    # finished trials whose final is a power of their level then, with noise: the interval for
    # one more trial (here often beyond the finished trials' levels) covers its final 95 % of
    # the time; growth is told the truth (slope 1), power must fit the slope
    rng = np.random.default_rng(1)
    slope = 1.0 if kind == "growth" else 0.6
    inside = []
    for _ in range(3000):
        levels = rng.uniform(0.05, 0.12, 6)
        finals = np.exp(0.5 + slope * np.log(levels) + rng.normal(0, 0.05, 6))
        low, high = analogue_interval(float(levels[-1]), list(zip(levels[:-1], finals[:-1])), kind, 0.95)
        inside.append(low <= finals[-1] <= high)
    assert np.mean(inside) == pytest.approx(0.95, abs=0.012)
    assert analogue_interval(0.1, [(0.05, 0.1)], kind, 0.95) is None


def test_the_forecast_pruner_takes_the_forecaster_with_the_smaller_error_on_finished_trials():
    # finished trials sit on the plateau, then rise: the law fitted to a third of such a curve
    # misses its end badly; the growth the finished trials made from a third of their steps
    # does not, so it forecasts. A trial on the plateau when they had all risen is hopeless.
    schedule = {"lr": 1e-3, "warmup_steps": 20, "max_steps": 400, "schedule": "cosine", "min_lr_ratio": 0.0}
    steps = np.arange(10, 401, 10)
    finished = [_Finished(i, schedule, dict(zip(steps.tolist(), 0.05 + gain * np.clip((steps - 60) / 340, 0, 1)
                                                + np.random.default_rng(i).normal(0, 0.001, len(steps)))))
                for i, gain in enumerate((0.06, 0.08, 0.1, 0.12))]
    third = steps <= 130
    pruner = ForecastPruner()
    stuck = 0.05 + np.random.default_rng(9).normal(0, 0.001, third.sum())
    assert pruner.prune(_Study(finished=finished), _Trial(9, schedule, dict(zip(steps[third].tolist(), stuck))))
    assert pruner.forecasts[9]["forecaster"] in ("growth", "power")
    assert pruner.forecasts[9]["error_from"] == "finished trials"
    assert pruner.forecasts[9]["high"] < 0.17
    # as high as the best finished trial was by then: it may end as well, so it runs on
    rising = [float(finished[3].intermediate_values[int(s)]) for s in steps[third]]
    assert not pruner.prune(_Study(finished=finished), _Trial(10, schedule, dict(zip(steps[third].tolist(),
                                                                                      rising))))
    assert pruner.forecasts[10]["low"] < 0.17 < pruner.forecasts[10]["high"]
    # the analogues need only the trial's level: three evaluations (too few for the law) do
    few = {100: 0.05, 115: 0.0505, 130: 0.0498}
    assert pruner.prune(_Study(finished=finished), _Trial(11, schedule, few))
    assert pruner.forecasts[11]["forecaster"] in ("growth", "power")


SPACE = "lr: {low: 1.0e-3, high: 4.0e-3, log: true}\nwarmup_steps: [3, 6]\n"


def _sweep_cmd(data, out, space, trials, *extra, steps=20, every=4):
    return [sys.executable, "-m", "bertcurve", "sweep", "--data", str(data), "--out", str(out), "--space", str(space),
            "--trials", str(trials), "--preset", "tiny", "--max-steps", str(steps), "--eval-every", str(every),
            "--save-every", str(every), *extra]


def _parse(*argv):
    import argparse

    from bertcurve.stages import sweep as stage

    parser = argparse.ArgumentParser()
    stage.add_arguments(parser)
    return stage._fixed_settings(parser.parse_args(["--data", "d", "--out", "o", "--space", "s", "--trials", "2",
                                                    *argv]))


def test_train_flags_fix_settings_for_every_trial_and_set_is_the_same():
    fixed, speed = _parse("--max-steps", "60", "--eval-every", "10", "--mask-prob", "0.2", "--untied",
                          "--set", "warmup_steps=7", "--set", "max_steps=60", "--threads", "1")
    assert fixed == {"optim.max_steps": 60, "eval.eval_every": 10, "data.mask_prob": 0.2,
                     "model.tie_word_embeddings": False, "optim.warmup_steps": 7}
    assert speed.threads == 1
    with pytest.raises(UserError, match="optim.max_steps is given twice"):
        _parse("--max-steps", "60", "--set", "max_steps=80")


def test_a_setting_both_fixed_and_searched_is_refused_in_one_line_and_nothing_is_written(
        tiny_data_dir, tmp_path, capsys):
    from bertcurve.cli import main

    space = tmp_path / "space.yaml"
    space.write_text("lr: {low: 1.0e-3, high: 4.0e-3}\nmask_prob: [0.15, 0.3]\n", encoding="utf-8")
    out = tmp_path / "sweep"
    code = main(["sweep", "--data", str(tiny_data_dir), "--out", str(out), "--space", str(space), "--trials", "2",
                 "--preset", "tiny", "--lr", "1e-3", "--set", "data.mask_prob=0.2"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "lr is searched here and also fixed (optim.lr)" in err
    assert "mask_prob is searched here and also fixed (data.mask_prob)" in err
    assert not out.exists()
    # the held-out mask rate is another setting: fixing it while searching the training one is fine
    assert [p.name for p in parse_space({"mask_prob": [0.15, 0.3]}, "tiny", {"eval.mask_prob": 0.15})] == [
        "mask_prob"]


@pytest.mark.slow
def test_a_sweep_runs_trials_as_run_dirs_and_a_killed_sweep_finishes_without_repeats(tiny_data_dir, tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text(SPACE, encoding="utf-8")
    out = tmp_path / "sweep"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(_sweep_cmd(tiny_data_dir, out, space, 3, "--pruner", "none"),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    # kill it (SIGKILL) once the second trial has written a checkpoint
    deadline = time.time() + 300
    while time.time() < deadline:
        if list((out / "trials").glob("trial-0001/checkpoints/step-*")):
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = subprocess.run(_sweep_cmd(tiny_data_dir, out, space, 3, "--pruner", "none"),
                          capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "resumed" in done.stdout
    study = optuna.load_study(study_name="bertcurve-sweep", storage=f"sqlite:///{out / 'optuna.db'}")
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 3
    run_dirs = [t.user_attrs["run_dir"] for t in complete]
    assert len(set(run_dirs)) == 3          # no trial repeated; the killed one resumed its own run dir
    for rel in run_dirs:
        record = json.loads((out / rel / "trial.json").read_text())
        assert record["state"] == "complete" and record["step"] == 20
        assert (out / rel / "final" / "model.safetensors").is_file()
    assert (out / "report.html").is_file() and "最佳试验" in (out / "report.html").read_text(encoding="utf-8")
    again = subprocess.run(_sweep_cmd(tiny_data_dir, out, space, 3, "--pruner", "none"),
                           capture_output=True, text=True, env=env, timeout=600)
    assert "3 of 3 trial(s) finished" in again.stdout
    assert len(optuna.load_study(study_name="bertcurve-sweep",
                                 storage=f"sqlite:///{out / 'optuna.db'}").trials) == len(study.trials)


def test_another_sweep_in_the_same_folder_is_refused(tiny_data_dir, tmp_path):
    from bertcurve.stages.sweep import _check_out

    out = tmp_path / "sweep"
    _check_out(out, {"data": "d", "space": {"lr": [1]}, "objective": "accuracy", "preset": None,
                     "overrides": {"max_steps": 20}})
    # the same sweep continued with the train flag instead of `--set max_steps=20`
    _check_out(out, {"data": "d", "space": {"lr": [1]}, "objective": "accuracy", "preset": None,
                     "overrides": {"optim.max_steps": 20}})
    with pytest.raises(UserError, match="different overrides"):
        _check_out(out, {"data": "d", "space": {"lr": [1]}, "objective": "accuracy", "preset": None,
                         "overrides": {"optim.max_steps": 40}})
    with pytest.raises(UserError, match="another sweep"):
        _check_out(out, {"data": "d", "space": {"lr": [2]}, "objective": "accuracy", "preset": None, "overrides": {}})
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "keep.txt").write_text("mine")
    with pytest.raises(UserError, match="not a bertcurve sweep"):
        _check_out(tmp_path / "other", {})


def _study(out):
    return optuna.load_study(study_name="bertcurve-sweep", storage=f"sqlite:///{out / 'optuna.db'}")


@pytest.mark.slow
def test_ctrl_c_leaves_the_study_consistent_and_the_same_command_finishes_it(tiny_data_dir, tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text(SPACE, encoding="utf-8")
    out = tmp_path / "sweep"
    cmd = _sweep_cmd(tiny_data_dir, out, space, 3, "--pruner", "none", steps=60, every=10)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    # Ctrl-C in the middle of the second trial, once it has saved a checkpoint
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if list((out / "trials").glob("trial-0001/checkpoints/step-*")):
            break
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 130, stdout + stderr
    assert "Traceback" not in stderr and len(stderr.strip().splitlines()) == 1, stderr
    assert "run the same command again" in stderr
    TS = optuna.trial.TrialState
    trials = _study(out).trials
    assert [t.state for t in trials] == [TS.COMPLETE, TS.FAIL]     # nothing left RUNNING
    assert trials[1].user_attrs["interrupted"] and trials[1].user_attrs["run_dir"] == "trials/trial-0001"
    first = out / "trials" / "trial-0000"
    finished = {name: (first / name).read_bytes() for name in ("metrics.jsonl", "trial.json")}

    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 of 3 trial(s) finished, 1 resumed" in done.stdout
    trials = _study(out).trials
    complete = [t for t in trials if t.state == TS.COMPLETE]
    assert len(complete) == 3 and [t.state for t in trials].count(TS.RUNNING) == 0
    run_dirs = [t.user_attrs["run_dir"] for t in complete]
    # the interrupted trial resumed its own run dir (as Optuna trial 2); the last is trial 3
    assert run_dirs == ["trials/trial-0000", "trials/trial-0001", "trials/trial-0003"]
    assert complete[1].params == trials[1].params
    for rel in run_dirs:
        assert json.loads((out / rel / "trial.json").read_text())["step"] == 60
    assert {name: (first / name).read_bytes() for name in finished} == finished   # not trained again


def test_the_sweep_report_says_which_forecast_pruned_each_trial(tmp_path):
    from bertcurve.stages.sweep import summarize, write_sweep_report

    study = optuna.create_study(direction="maximize")
    dist = {"lr": optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True)}
    study.add_trial(optuna.trial.create_trial(params={"lr": 3e-3}, distributions=dist, value=0.1323,
                                              intermediate_values={400: 0.1323}, user_attrs={"steps": 400}))
    forecast = {"step": 140, "value": 0.1055, "low": 0.0834, "high": 0.1276, "best": 0.1323,
                "forecaster": "growth", "error_from": "finished trials"}
    study.add_trial(optuna.trial.create_trial(params={"lr": 2e-3}, distributions=dist,
                                              state=optuna.trial.TrialState.PRUNED,
                                              intermediate_values={140: 0.056},
                                              user_attrs={"steps": 140, "forecast": forecast}))
    # an older sweep keeps the forecast only in trial.json; a damaged one leaves the cell empty
    for i, text in enumerate(['{"state": "pruned", "forecast": ' + json.dumps({**forecast, "value": 0.1}) + "}",
                              "[1, 2]", '{"forecast": {"value": 1}}', "not json"]):
        run = tmp_path / f"trials/old-{i}"
        run.mkdir(parents=True)
        (run / "trial.json").write_text(text, encoding="utf-8")
        study.add_trial(optuna.trial.create_trial(params={"lr": 1e-3}, distributions=dist,
                                                  state=optuna.trial.TrialState.PRUNED, intermediate_values={100: 0.05},
                                                  user_attrs={"steps": 100, "run_dir": f"trials/old-{i}"}))
    result = summarize(study, tmp_path, "sqlite://")
    assert result.steps_trained == 940
    write_sweep_report(study, tmp_path, result, "accuracy")
    report = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert "| pruned by |" in report
    assert "growth 0.1055 (0.0834-0.1276; best 0.1323)" in report
    assert "growth 0.1000 (0.0834-0.1276; best 0.1323)" in report
    assert (tmp_path / "trials/old-3/trial.json").read_text(encoding="utf-8") == "not json"
