"""Learning-curve fits recover known curves, stay in bounds, say when they fail, and forecast honestly."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import optimize

from bertcurve.curves import fits as cv
from bertcurve.curves import policy

STEPS = np.arange(1, 401, dtype=float) * 250  # 250 .. 100,000


def noisy(f, sd: float, seed: int = 0, steps: np.ndarray = STEPS) -> np.ndarray:
    return f(steps / 1000) + np.random.default_rng(seed).normal(0, sd, steps.size)


@pytest.mark.parametrize(
    "model, truth, direction, limits",
    [
        ("power_law", (0.75, 0.4, 0.5), 1, cv.Limits(0, 1)),
        ("exp_saturation", (0.6, 0.45, 12.0), 1, cv.Limits(0, 1)),
        ("logistic_log", (0.15, 0.65, 2.0, 2.0), 1, cv.Limits(0, 1)),
        ("power_law", (2.0, 5.0, 0.4), -1, cv.Limits(0, None)),   # loss: L_inf + A t^-alpha
        ("log_linear", (0.2, 0.08), 1, cv.Limits()),
    ],
)
def test_fit_recovers_known_curve(model, truth, direction, limits):
    spec = cv.MODELS[model]
    y = noisy(lambda t: spec.func(t, direction, *truth), 0.01)
    fit = cv.fit_curve(model, STEPS, y, direction=direction, limits=limits)
    assert fit.converged, fit.message
    assert fit.params == pytest.approx(truth, rel=0.12, abs=0.02)
    assert fit.r_squared > 0.95
    assert fit.rmse == pytest.approx(0.01, rel=0.2)
    # the true parameters are inside ~4 standard errors
    se = np.sqrt(np.diag(fit.covariance))
    assert np.all(np.abs(fit.params - np.array(truth)) < 4 * se + 1e-9)


def test_fit_matches_scipy_least_squares_on_the_same_data():
    y = noisy(lambda t: 0.7 - 0.3 * t ** -0.6, 0.02, seed=3)
    fit = cv.fit_curve("power_law", STEPS, y, direction=1, limits=cv.Limits(0, 1))
    ref, _ = optimize.curve_fit(lambda t, a, b, c: a - b * t ** -c, STEPS / 1000, y, p0=(0.6, 0.2, 0.5))
    assert fit.params == pytest.approx(ref, rel=1e-4)
    sse = np.sum((fit.predict(STEPS) - y) ** 2)
    n, k = y.size, 4
    assert fit.aic == pytest.approx(n * math.log(sse / n) + 2 * k)
    assert fit.bic == pytest.approx(n * math.log(sse / n) + k * math.log(n))


def test_accuracy_asymptote_never_exceeds_one():
    # a straight rise would have a power-law asymptote far above 1 without the bound
    y = 0.1 + 0.008 * STEPS / 1000 + np.random.default_rng(1).normal(0, 0.01, STEPS.size)
    fit = cv.fit_curve("power_law", STEPS, y, direction=1, limits=cv.Limits(0, 1))
    assert fit.converged and fit.params[0] <= 1.0
    assert "a" in fit.at_bounds and "bound" in fit.message
    assert np.all(fit.predict([1e6, 1e7]) <= 1.0)
    assert np.all(fit.prediction_interval([1e6]).high <= 1.0)


def test_failed_fit_says_so_and_predicts_nothing():
    fit = cv.fit_curve("logistic_log", STEPS[:4], np.array([0.1, 0.2, 0.3, 0.35]), direction=1)
    assert not fit.converged and "too few" in fit.message
    assert np.isnan(fit.predict([1000])).all()
    assert fit.steps_to_reach(0.5) is None
    d = fit.to_dict()
    assert d["params"] == {} and d["r_squared"] is None
    down = cv.fit_curve("logistic_log", STEPS, np.linspace(5, 1, STEPS.size), direction=-1)
    assert not down.converged and "only used" in down.message


def test_prediction_interval_covers_new_points_and_contains_the_mean_band():
    truth = lambda t: 0.6 - 0.45 * np.exp(-t / 12.0)  # noqa: E731
    y = noisy(truth, 0.02, seed=7)
    fit = cv.fit_curve("exp_saturation", STEPS, y, direction=1, limits=cv.Limits(0, 1))
    fresh = noisy(truth, 0.02, seed=8)
    band = fit.prediction_interval(STEPS, 0.95)
    coverage = np.mean((fresh >= band.low) & (fresh <= band.high))
    assert 0.92 <= coverage <= 0.99
    ci = fit.confidence_interval(STEPS, 0.95)
    assert np.all(ci.low >= band.low - 1e-12) and np.all(ci.high <= band.high + 1e-12)
    assert np.all(band.low <= fit.predict(STEPS)) and np.all(fit.predict(STEPS) <= band.high)


def test_autocorrelated_residuals_inflate_the_covariance():
    rng = np.random.default_rng(0)
    e = np.zeros(STEPS.size)
    for i in range(1, e.size):
        e[i] = 0.9 * e[i - 1] + rng.normal(0, 0.01)
    y = 0.7 - 0.3 * (STEPS / 1000) ** -0.5 + e
    fit = cv.fit_curve("power_law", STEPS, y, direction=1, limits=cv.Limits(0, 1))
    assert fit.residual_lag1 > 0.7
    assert fit.variance_inflation == pytest.approx((1 + fit.residual_lag1) / (1 - fit.residual_lag1))


def test_round_trip_through_dict_keeps_predictions_and_intervals():
    y = noisy(lambda t: 0.7 - 0.3 * t ** -0.5, 0.02)
    fit = cv.fit_curve("power_law", STEPS, y, direction=1, limits=cv.Limits(0, 1))
    again = cv.FitResult.from_dict(fit.to_dict())
    q = [500, 5e4, 2e5]
    assert again.predict(q) == pytest.approx(fit.predict(q))
    assert again.prediction_interval(q).low == pytest.approx(fit.prediction_interval(q).low)


def test_steps_to_reach_matches_the_analytic_inverse():
    a, b, c = 0.75, 0.4, 0.5
    y = noisy(lambda t: a - b * t ** -c, 0.0005)
    fit = cv.fit_curve("power_law", STEPS, y, direction=1, limits=cv.Limits(0, 1))
    fa, fb, fc = fit.params
    target = 0.74
    expected = ((fa - target) / fb) ** (-1 / fc) * 1000
    assert fit.steps_to_reach(target) == pytest.approx(expected, rel=1e-4)
    early, late = fit.steps_to_reach_band(target)
    assert early < expected < late
    assert fit.steps_to_reach(0.99) is None  # above the asymptote


def test_backtest_prefers_a_saturating_model_over_a_line():
    y = noisy(lambda t: 0.6 - 0.45 * np.exp(-t / 15.0), 0.02, seed=2)
    fits = cv.fit_all(STEPS, y, direction=1, limits=cv.Limits(0, 1))
    tests = cv.backtest(STEPS, y, direction=1, limits=cv.Limits(0, 1))
    assert {b.fraction for b in tests} == {0.3, 0.5, 0.7}
    lin = [b for b in tests if b.model == "linear"]
    sat = [b for b in tests if b.model == "exp_saturation"]
    assert all(b.converged for b in sat)
    assert np.mean([b.rmse for b in lin]) > 3 * np.mean([b.rmse for b in sat])
    assert all(b.bias > 0 for b in lin)  # a line over-predicts a saturating curve
    choice = cv.choose_model(tests, fits)
    assert choice.model in {"exp_saturation", "logistic_log", "power_law"}
    assert choice.ranking[0]["model"] == choice.model
    b = sat[0]
    test_mask = STEPS > b.cutoff_step
    assert b.n_test == int(test_mask.sum()) and b.n_train == STEPS.size - b.n_test


def test_choose_model_skips_models_that_failed():
    fits = {"a": cv.FitResult("linear", "", 1, ("a", "b"), np.ones(2), None, True, ""),
            "b": cv.FitResult("linear", "", 1, ("a", "b"), np.ones(2), None, False, "")}
    tests = [cv.Backtest("a", 0.5, 1, 10, 10, True, rmse=0.5), cv.Backtest("b", 0.5, 1, 10, 10, True, rmse=0.1)]
    assert cv.choose_model(tests, fits).model == "a"
    assert cv.choose_model([], {}).model is None


def test_limits_for_metric_names():
    assert policy.limits_for("eval_mlm_accuracy") == cv.Limits(0.0, 1.0)
    assert policy.limits_for("train_loss") == cv.Limits(0.0, None)
    assert policy.limits_for("custom") == cv.Limits()


def test_flat_values_are_a_failed_fit_not_nonsense():
    fit = cv.fit_curve("exp_saturation", STEPS, np.full(STEPS.size, 0.0246), direction=1, limits=cv.Limits(0, 1))
    assert not fit.converged and "no curve to fit" in fit.message


# ------------------------------------------------------------------ fits from the knee
def _restart_curve(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A resumed run: a steep climb over its first 3,000 steps, then a slow power law (a = 0.74)."""
    steps = np.arange(1, 61, dtype=float) * 500
    slow = 0.74 - 0.05 * (steps / 1000) ** -0.5
    climb = np.where(steps <= 3000, (3000 - steps) / 2500 * 0.3, 0.0)
    return steps, slow - climb + np.random.default_rng(seed).normal(0, 0.0005, steps.size)


def test_the_knee_is_where_a_steep_start_ends_and_nowhere_on_a_curve_still_on_its_way():
    steps, y = _restart_curve()
    knee = cv.knee_index(steps, y, 1)
    assert knee is not None and 3000 <= steps[knee] <= 4000
    line = np.arange(1, 40, dtype=float)
    assert cv.knee_index(line * 1000, 0.1 + 0.01 * line, 1) is None          # still on its way
    assert cv.knee_index(steps, -y, -1) == knee                               # a loss the same way
    assert cv.knee_index(steps, np.full(steps.size, 0.5), 1) is None          # no change at all


def test_a_fit_from_the_knee_describes_the_slow_regime_the_transient_bends():
    steps, y = _restart_curve()
    whole = cv.fit_curve("power_law", steps, y, direction=1, limits=cv.Limits(0, 1))
    late = cv.fit_curve("power_law_from_knee", steps, y, direction=1, limits=cv.Limits(0, 1))
    assert late.converged and late.family == "power_law" and late.from_knee and not whole.from_knee
    assert 3000 <= late.first_step <= 4000 and late.n < steps.size and "knee at step" in late.message
    assert abs(policy.asymptote(late) - 0.74) < 0.005 < abs(policy.asymptote(whole) - 0.74)
    again = cv.FitResult.from_dict(late.to_dict())
    assert again.from_knee and again.predict([1e5]) == pytest.approx(late.predict([1e5]))


def test_a_fit_from_the_knee_says_why_it_could_not_be_made():
    line = np.arange(1, 40, dtype=float)
    fit = cv.fit_curve("exp_saturation_from_knee", line * 1000, 0.1 + 0.01 * line, direction=1)
    assert not fit.converged and "no knee" in fit.message
    steps, y = np.arange(1, 7) * 1000.0, np.array([0.3, 0.7, 0.71, 0.712, 0.713, 0.714])
    few = cv.fit_curve("log_linear_from_knee", steps, y, direction=1)
    assert not few.converged and "after the knee" in few.message


def test_a_forecast_led_by_fits_from_the_knee_describes_the_curve_from_the_knee_on():
    # The slow regime after a restart is what the fits from the knee describe and the forecast
    # weighs them; its curve (and the figures' line) starts at the knee, not before.
    steps, y = _restart_curve()
    fc = policy.fit_and_choose(steps, y, direction=1, limits=policy.limits_for("accuracy"))
    from_knee = [m for m in fc.weights if fc.fits[m].from_knee]
    assert from_knee and fc.start_step == max(fc.fits[m].first_step for m in from_knee) > fc.first_step
    assert abs(float(fc.predict([60_000])[0]) - (0.74 - 0.05 * 60 ** -0.5)) < 0.003


def test_what_compares_with_every_point_uses_a_fit_of_every_point():
    # Targets inside the log are looked for from the knee on (not on a backwards extrapolation),
    # and residuals come from the same family fitted on all points.
    steps, y = _restart_curve()
    fc = policy.fit_and_choose(steps, y, direction=1, limits=policy.limits_for("accuracy"))
    assert fc.main_fit.from_knee and not fc.whole_fit.from_knee
    ranked = [r["model"] for r in fc.ranking if not fc.fits[r["model"]].from_knee]
    assert fc.whole_fit.model == ranked[0]          # the weightiest (then best-scored) fit of every point
    assert fc.steps_to_reach(0.5, horizon_factor=100) >= fc.start_step
    early, late = fc.steps_to_reach_band(0.5, horizon_factor=100)
    assert early >= fc.start_step and late >= fc.start_step
