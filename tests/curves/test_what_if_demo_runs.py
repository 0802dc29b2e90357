"""What-if on our own demo runs: a 400-step cosine run predicts the 1,200-step one."""

from pathlib import Path

from bertcurve.curves import policy
from bertcurve.curves.logs import load_log
from bertcurve.what_if import what_if

RUNS = Path(__file__).parents[1] / "fixtures" / "what_if"


def _step_extrapolation(series, at: int, name: str) -> float:
    """What a curve against steps says at ``at`` (the forecast of ``bertcurve analyze`` without a plan)."""
    keep = series.steps > 0
    fc = policy.fit_and_choose(series.steps[keep].astype(float), series.values[keep],
                               direction=policy.direction_from_name(name), limits=policy.limits_for(name))
    return float(fc.predict([at])[0])


def test_a_400_step_cosine_run_predicts_the_1200_step_run():
    short, long = load_log(RUNS / "cos400"), load_log(RUNS / "cos1200")
    answer = what_if(short, 1200)
    assert answer["schedule"] == "cosine" and answer["max_steps"] == 1200
    for name in ("eval_loss", "eval_mlm_accuracy"):
        actual = float(long.series[name].values[-1])
        low, high = answer["predictions"][name]["pi"]
        assert low <= actual <= high, name
    acc = answer["predictions"]["eval_mlm_accuracy"]["value"]
    actual_acc = float(long.series["eval_mlm_accuracy"].values[-1])
    assert abs(acc - actual_acc) <= 0.015
    # a curve against steps sees the run's end flatten only through its own cosine: it misses far more
    plain = _step_extrapolation(short.series["eval_mlm_accuracy"], 1200, "eval_mlm_accuracy")
    assert abs(plain - actual_acc) > 3 * abs(acc - actual_acc)

