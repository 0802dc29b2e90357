"""analyze --what-if-steps: a run's own schedule, a longer run predicted, logs without lr refused."""

import numpy as np
import pytest

from bertcurve.curves import schedule_law as law
from bertcurve.curves.logs import Series, TrainingLog
from bertcurve.errors import UserError
from bertcurve.training.schedule import lr_at
from bertcurve.what_if import infer_shape, what_if

TRUTH = (1.5, 4.0, 0.45, 0.0015)  # L0, A, alpha, C of the simulated run


def simulated_run(max_steps: int, *, with_config: bool = True, noise: float = 0.004) -> TrainingLog:
    """A cosine run whose held-out loss follows the law, with accuracy a line of the loss."""
    optim = {"lr": 2e-3, "warmup_steps": 50, "max_steps": max_steps, "schedule": "cosine", "min_lr_ratio": 0.0}
    rates = np.array([lr_at(s, peak_lr=2e-3, warmup_steps=50, max_steps=max_steps) for s in range(max_steps + 1)])
    areas = law.schedule_areas(rates, 0.99)
    steps = np.arange(50, max_steps + 1, 25)
    rng = np.random.default_rng(1)
    loss = law.law_value(TRUTH, areas.forward[steps], areas.annealing[steps]) + rng.normal(0, noise, len(steps))
    acc = 0.9 - 0.2 * loss + rng.normal(0, noise / 4, len(steps))
    series = {"eval_loss": Series(steps, loss), "eval_mlm_accuracy": Series(steps, acc)}
    meta = {"config": {"train": {"optim": optim}}} if with_config else {}
    if not with_config:
        log_steps = np.arange(10, max_steps + 1, 10)
        series["lr"] = Series(log_steps, rates[log_steps])
    return TrainingLog(name="sim", path=__import__("pathlib").Path("sim"), kind="bertcurve-run",
                       series=series, meta=meta)


def true_final_loss(max_steps: int) -> float:
    rates = np.array([lr_at(s, peak_lr=2e-3, warmup_steps=50, max_steps=max_steps) for s in range(max_steps + 1)])
    areas = law.schedule_areas(rates, 0.99)
    return float(law.law_value(TRUTH, areas.forward[[max_steps]], areas.annealing[[max_steps]])[0])


@pytest.mark.parametrize("with_config", [True, False])
def test_a_three_times_longer_cosine_run_is_predicted_inside_its_interval(with_config):
    result = what_if(simulated_run(800, with_config=with_config), 2400)
    assert result["max_steps"] == 2400 and result["schedule"] == "cosine" and result["law"] == "lr-annealing"
    loss = result["predictions"]["eval_loss"]
    truth = true_final_loss(2400)
    assert abs(loss["value"] - truth) / truth < 0.02
    assert loss["pi"][0] < truth < loss["pi"][1]
    acc = result["predictions"]["eval_mlm_accuracy"]
    assert abs(acc["value"] - (0.9 - 0.2 * truth)) < 0.015
    # the longer run ends lower than the short run did: more steps buy something
    assert loss["value"] < true_final_loss(800) - 0.01
    assert result["curve"][-1]["step"] == 2400 and "eval_mlm_accuracy" in result["curve"][0]


def test_a_constant_schedule_keeps_the_rate_and_loses_the_annealing_gain():
    run = simulated_run(800)
    cosine = what_if(run, 2400)["predictions"]["eval_loss"]["value"]
    constant = what_if(run, 2400, "constant")
    assert constant["schedule"] == "constant"
    assert constant["predictions"]["eval_loss"]["value"] > cosine


def test_logs_without_a_learning_rate_are_refused_in_one_line():
    run = simulated_run(800, with_config=False)
    del run.series["lr"]
    with pytest.raises(UserError, match="learning rate"):
        what_if(run, 2400)


def test_unknown_shapes_and_warmup_horizons_are_refused():
    run = simulated_run(800)
    with pytest.raises(UserError, match="what-if-schedule"):
        what_if(run, 2400, "triangle")
    with pytest.raises(UserError, match="warm-up"):
        what_if(run, 20)


def test_the_decay_shape_of_a_logged_schedule_is_recognised():
    for shape in ("cosine", "linear", "constant"):
        rates = np.array([lr_at(s, peak_lr=1e-3, warmup_steps=100, max_steps=1000, schedule=shape)
                          for s in range(1001)])
        assert infer_shape(rates) == shape


SEED = __import__("pathlib").Path(__file__).resolve().parents[1] / "fixtures" / "seed" / "training_history_100k.json"


def test_analyze_answers_the_seeds_question_beside_the_step_extrapolation_and_the_line(tmp_path):
    from bertcurve.stages.analyze import analyze, summary_text

    res = analyze(SEED, what_if_steps=200_000, bootstrap=0, out=tmp_path / "a.json")
    w = res["what_if"]
    assert w["max_steps"] == 200_000 and w["schedule"] == "cosine"
    acc = w["predictions"]["train_mlm_accuracy"]
    assert 0 <= acc["pi"][0] < acc["value"] < acc["pi"][1] <= 1
    assert w["compared"]["seed_linear"] > acc["value"]          # the straight line promises more
    assert w["curve"][-1]["step"] == 200_000
    text = summary_text(res)
    assert "what if" in text and "by the seed's straight line" in text


def test_analyze_refuses_what_if_without_a_learning_rate_or_without_steps(tmp_path):
    from bertcurve.cli import main

    csv = tmp_path / "log.csv"
    csv.write_text("step,eval_loss\n" + "".join(f"{s},{5 - s / 1000:.4f}\n" for s in range(100, 1100, 100)))
    assert main(["analyze", str(csv), "--what-if-steps", "5000", "--out", str(tmp_path / "x.json")]) == 2
    assert main(["analyze", str(SEED), "--what-if-schedule", "wsd", "--out", str(tmp_path / "y.json")]) == 2


def constant_run(max_steps: int, noise: float = 0.004) -> TrainingLog:
    """A constant-rate run (its config's min_lr_ratio 0) whose held-out loss follows the law: it
    never anneals, so the law's C is not identified by it."""
    optim = {"lr": 2e-3, "warmup_steps": 50, "max_steps": max_steps, "schedule": "constant", "min_lr_ratio": 0.0}
    rates = np.array([lr_at(s, peak_lr=2e-3, warmup_steps=50, max_steps=max_steps, schedule="constant")
                      for s in range(max_steps + 1)])
    areas = law.schedule_areas(rates, 0.99)
    steps = np.arange(50, max_steps + 1, 25)
    loss = law.law_value(TRUTH, areas.forward[steps], areas.annealing[steps])
    loss = loss + np.random.default_rng(2).normal(0, noise, len(steps))
    series = {"eval_loss": Series(steps, loss), "eval_mlm_accuracy": Series(steps, 0.9 - 0.2 * loss)}
    return TrainingLog(name="const", path=__import__("pathlib").Path("const"), kind="bertcurve-run",
                       series=series, meta={"config": {"train": {"optim": optim}}})


def test_a_run_that_never_annealed_predicts_the_centre_of_the_unidentified_gain():
    run = constant_run(800)
    result = what_if(run, 2400, "cosine")
    loss = result["predictions"]["eval_loss"]
    low, high = loss["pi"]
    # the no-gain prediction of the same fit (C fixed at 0) for a cosine decay to 0 (the config's min_lr_ratio)
    series = run.series["eval_loss"]
    rates = np.array([lr_at(s, peak_lr=2e-3, warmup_steps=50, max_steps=800, schedule="constant") for s in range(801)])
    fit = law.fit_law(series.steps, series.values, rates, bootstrap=0, bounds=(0.0, None))
    assert not fit.annealing_seen
    new = law.stretched_schedule(rates, 2400, "cosine", final=0.0)
    no_gain = float(fit.predict(law.schedule_areas(new, fit.momentum), [2400])[0])
    gain = no_gain - loss["value"]
    assert gain > 0.03                                   # the decay buys something
    assert high > no_gain                                # ... or nothing: the no-gain side stays inside
    assert low <= no_gain - 2 * gain < loss["value"]     # ... or up to twice as much, towards L0
    assert (low + high) / 2 == pytest.approx(loss["value"])
    assert low < true_final_loss(2400) < high            # the truth (C > 0) is inside
    assert result["curve"][-1]["eval_loss"] == pytest.approx(loss["value"])
    acc = result["predictions"]["eval_mlm_accuracy"]
    assert acc["pi"][0] < 0.9 - 0.2 * true_final_loss(2400) < acc["pi"][1]
    assert acc["value"] > 0.9 - 0.2 * no_gain + 0.005   # the accuracy takes the gain too
    assert any("half of the range" in n for n in result["notes"])
    assert any("ends at 0 x the peak rate" in n for n in result["notes"])
    # asked about a constant run, there is no decay and so no gain
    constant = what_if(run, 2400, "constant")["predictions"]["eval_loss"]
    steady = law.stretched_schedule(rates, 2400, "constant")
    assert constant["value"] == pytest.approx(float(fit.predict(law.schedule_areas(steady, fit.momentum), [2400])[0]))


def test_a_run_that_annealed_predicts_the_law_as_fitted():
    run = simulated_run(800)
    series = run.series["eval_loss"]
    rates = np.array([lr_at(s, peak_lr=2e-3, warmup_steps=50, max_steps=800) for s in range(801)])
    fit = law.fit_law(series.steps, series.values, rates, bootstrap=0, bounds=(0.0, None))
    assert fit.annealing_seen
    new = law.stretched_schedule(rates, 2400, "cosine")
    got = law.forecast_at(fit, series.steps, series.values, rates, new, 2400, level=0.95)
    areas = law.schedule_areas(new, fit.momentum)
    assert got.value == float(fit.predict(areas, [2400])[0])
    assert (got.low + got.high) / 2 == pytest.approx(got.value)
    assert not any("half of the range" in n for n in what_if(run, 2400)["notes"])
