"""One home for every learning-curve decision: direction, limits, asymptote, target, level."""

from __future__ import annotations

import numpy as np
import pytest

from bertcurve.curves import fits as cv
from bertcurve.curves import policy
from bertcurve.errors import UserError


@pytest.mark.parametrize("name", ["eval_loss", "EvalLoss", "eval/loss", "val_loss", "perplexity", "train_loss",
                                  "val/perplexity", "tel", "eval_log_perplexity", "ValidationLoss"])
def test_falling_metrics(name):
    rising = np.linspace(0, 1, 20)   # the data would say "up": the name must win
    assert policy.direction_of(name, np.arange(20), rising) == -1


@pytest.mark.parametrize("name", ["accuracy", "eval_mlm_accuracy", "EvalAccuracy", "val/acc", "val_acc", "top1"])
def test_rising_metrics(name):
    falling = np.linspace(1, 0, 20)
    assert policy.direction_of(name, np.arange(20), falling) == 1


def test_unknown_names_follow_the_data_and_the_override_wins():
    assert policy.direction_of("bleurt_x", np.arange(10), np.linspace(3, 1, 10)) == -1
    assert policy.direction_of("bleurt_x", np.arange(10), np.linspace(1, 3, 10)) == 1
    assert policy.direction_of("eval_loss", override="up") == 1
    with pytest.raises(UserError):
        policy.direction_of("x", override="sideways")


def test_limits():
    assert policy.limits_for("EvalAccuracy") == cv.Limits(0.0, 1.0)
    assert policy.limits_for("eval/loss") == cv.Limits(0.0, None)
    assert policy.limits_for("val_perplexity") == cv.Limits(1.0, None)
    assert policy.limits_for("bleurt") == cv.Limits()


def test_asymptote_by_name_and_its_word():
    steps = np.arange(1, 60) * 100.0
    y = 2.0 + 3.0 * (steps / 1000) ** -0.5
    fit = cv.fit_curve("power_law", steps, y, direction=-1, limits=cv.Limits(0, None))
    assert policy.asymptote(fit) == pytest.approx(2.0, abs=1e-3)
    assert policy.asymptote_word(-1)[0] == "floor" and policy.asymptote_word(1)[0] == "ceiling"
    lin = cv.fit_curve("linear", steps, y, direction=-1)
    assert policy.asymptote(lin) is None


def test_level_check():
    assert policy.check_level(0.9) == 0.9
    for bad in (0.4, 1.0, 95):
        with pytest.raises(UserError):
            policy.check_level(bad)
