"""The forecast: no family dropped silently, calibrated intervals, honest trend test and asymptotes."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps

from bertcurve.curves import fits as cv
from bertcurve.curves import policy
from bertcurve.curves import stats as st


def ar1(n: int, rho: float, sd: float, rng: np.random.Generator) -> np.ndarray:
    e = np.empty(n)
    e[0] = rng.normal(0, sd / np.sqrt(1 - rho * rho))
    for i in range(1, n):
        e[i] = rho * e[i - 1] + rng.normal(0, sd)
    return e


def test_ar1_inflated_covariance_matches_a_monte_carlo_spread():
    # The slope's standard error, inflated by (1 + rho) / (1 - rho), against the spread of the
    # slope over 300 simulated runs with AR(1) noise: the textbook one is about half of it.
    rng = np.random.default_rng(0)
    steps = np.arange(1, 301) * 100.0
    slopes, se_inflated, se_naive = [], [], []
    for _ in range(300):
        y = 0.2 + 0.01 * steps / 1000 + ar1(steps.size, 0.6, 0.01, rng)
        fit = cv.fit_curve("linear", steps, y, direction=1)
        slopes.append(fit.params[1])
        se = float(np.sqrt(fit.covariance[1, 1]))
        se_inflated.append(se)
        se_naive.append(se / np.sqrt(fit.variance_inflation))
    spread = float(np.std(slopes, ddof=1))
    assert spread / np.mean(se_inflated) == pytest.approx(1.0, abs=0.3)
    assert spread / np.mean(se_naive) > 1.6


@pytest.mark.parametrize("r, n_eff", [(0.5, 12), (0.3, 40), (-0.8, 7)])
def test_adjusted_pvalue_is_the_pvalue_of_n_eff_independent_points(r, n_eff):
    rng = np.random.default_rng(1)
    x = rng.normal(size=n_eff)
    x = (x - x.mean()) / x.std()
    z = rng.normal(size=n_eff)
    z = z - z.mean() - (z @ x) / (x @ x) * x
    z = z / z.std()
    y = r * x + np.sqrt(1 - r * r) * z   # exactly correlation r
    oracle = sps.pearsonr(x, y)
    assert oracle.statistic == pytest.approx(r)
    assert st.correlation_pvalue(r, n_eff) == pytest.approx(oracle.pvalue, rel=1e-9)


def test_mann_kendall_matches_pymannkendall_hamed_rao():
    mk = pytest.importorskip("pymannkendall")
    rng = np.random.default_rng(2)
    y = 0.3 + 0.002 * np.arange(80) + ar1(80, 0.5, 0.03, rng)
    ours, ref = st.mann_kendall(y), mk.hamed_rao_modification_test(y)
    assert ours.statistic_s == ref.s
    assert ours.pvalue == pytest.approx(ref.p, rel=1e-6)


def test_a_strongly_monotone_curved_series_has_a_trend():
    # Accuracy 0.50 -> 0.92 along a saturating curve with autocorrelated noise: around a straight
    # line the curvature looks like dependence; around the fitted curve it does not.
    rng = np.random.default_rng(3)
    steps = np.arange(1, 41) * 500.0
    y = 0.92 - 0.42 * np.exp(-steps / 5000) + ar1(40, 0.4, 0.01, rng)
    fc = policy.fit_and_choose(steps, y, direction=1, limits=policy.limits_for("accuracy"))
    test = st.mann_kendall(y, y - fc.main_fit.predict(steps), residuals_from="curve")
    assert test.pvalue < 1e-3 and test.statistic_s > 0


def test_failed_fits_are_reported_not_dropped():
    # 12 points of an S-shaped accuracy: the 30 % cut-off leaves too few for 3-4 parameters.
    steps = np.arange(1, 13) * 1000.0
    y = 0.2 + 0.6 / (1 + np.exp(-(steps / 1000 - 6)))
    fc = policy.fit_and_choose(steps, y, direction=1, limits=policy.limits_for("accuracy"))
    ranking = {r["model"]: r for r in fc.ranking}
    assert set(ranking) == set(cv.models_for(1))
    failed = [f for r in fc.ranking for f in r["failed_splits"]]
    assert failed and all(f["reason"] for f in failed)
    assert "failed on some backtest cut-offs" in fc.reason
    for m, r in ranking.items():   # every family that fits all points is combined or says why not
        if r["full_fit_converged"] and m not in fc.weights:
            assert m in fc.reason


@pytest.mark.parametrize("direction", [1, -1])
def test_fitted_ceiling_or_floor_is_on_the_right_side_of_the_data(direction):
    # A rising curve whose last nine values sit at 0.7175-0.7200: its ceiling is not below them.
    rng = np.random.default_rng(4)
    steps = np.arange(1, 61) * 200.0
    base = 0.72 - 0.3 * (steps / 1000) ** -0.9
    y = base + rng.normal(0, 0.0008, steps.size)
    y = y if direction > 0 else 3.0 - y
    limits = policy.limits_for("accuracy" if direction > 0 else "loss")
    tail = float(np.mean(y[-6:]))
    for model in ("power_law", "exp_saturation") + (("logistic_log",) if direction > 0 else ()):
        fit = cv.fit_curve(model, steps, y, direction=direction, limits=limits)
        level = policy.asymptote(fit)
        assert direction * (level - tail) > -0.002, (model, level, tail)


def test_interval_scales_with_level_and_covers_the_forecast():
    rng = np.random.default_rng(5)
    steps = np.arange(1, 101) * 100.0
    y = 2.0 + 3.0 * (steps / 1000) ** -0.4 + ar1(100, 0.3, 0.02, rng)
    fc = policy.fit_and_choose(steps, y, direction=-1, limits=policy.limits_for("loss"))
    at = [30000.0]
    wide, narrow = fc.interval(at, 0.95), fc.interval(at, 0.8)
    centre = fc.predict(at)[0]
    assert narrow.low[0] <= centre <= narrow.high[0]
    assert wide.high[0] - wide.low[0] > narrow.high[0] - narrow.low[0] > 0
    assert abs(sum(fc.weights.values()) - 1) < 1e-9


# -- the planned learning-rate schedule (schedule-aware law as a candidate) --------------------
def _law_curve(schedule: np.ndarray, steps: np.ndarray, rng: np.random.Generator, c: float = 2e-4) -> np.ndarray:
    """A loss that follows the annealing law exactly (L0 2.5, A 2, alpha 0.4, C ``c``, momentum 0.999),
    plus a little autocorrelated noise."""
    from bertcurve.curves import schedule_law as law

    areas = law.schedule_areas(schedule, 0.999)
    idx = steps.astype(int)
    return law.law_value((2.5, 2.0, 0.4, c), areas.forward[idx], areas.annealing[idx]) \
        + ar1(steps.size, 0.3, 0.002, rng)


def _cosine(last: int, warmup: int = 200) -> np.ndarray:
    s = np.arange(last + 1, dtype=float)
    out = 1e-3 * (0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * np.clip((s - warmup) / (last - warmup), 0, 1))))
    out[:warmup + 1] = 1e-3 * s[:warmup + 1] / warmup
    return out


def test_a_known_schedule_makes_the_law_a_candidate_and_foresees_the_decay():
    # A cosine run seen up to half its steps: the law, which reads the planned decay, forecasts the
    # end far better than any curve of steps alone, and the combination follows it.
    rng = np.random.default_rng(7)
    schedule = _cosine(20000)
    steps = np.arange(100, 20001, 100).astype(float)
    y = _law_curve(schedule, steps, rng)
    seen = steps <= 10000
    end = steps >= 18000
    with_plan = policy.fit_and_choose(steps[seen], y[seen], direction=-1, limits=policy.limits_for("loss"),
                                      schedule=schedule)
    without = policy.fit_and_choose(steps[seen], y[seen], direction=-1, limits=policy.limits_for("loss"))
    truth = float(np.mean(y[end]))
    err_with = abs(float(np.mean(with_plan.predict(steps[end]))) - truth)
    err_without = abs(float(np.mean(without.predict(steps[end]))) - truth)
    assert "schedule_law" in with_plan.weights and "schedule_law" in {r["model"] for r in with_plan.ranking}
    assert err_with < 0.5 * err_without
    band = with_plan.interval(steps[end])
    assert np.all(band.low <= y[end].mean() + 0.01) and np.all(band.high >= y[end].mean() - 0.01)


def _wsd(last: int = 20000, decay_from: int = 16000) -> np.ndarray:
    schedule = np.full(last + 1, 1e-3)
    schedule[:201] = np.linspace(0, 1e-3, 201)
    schedule[decay_from:] = np.linspace(1e-3, 1e-5, last + 1 - decay_from)
    return schedule


def _wsd_seen_in_its_stable_phase():
    """A warm-up-stable-decay loss (a cooldown worth about 0.05 from step 16,000 on) and its
    forecast from the stable phase alone (up to step 10,000): steps, values, seen, forecast."""
    steps = np.arange(100, 20001, 100).astype(float)
    y = _law_curve(_wsd(), steps, np.random.default_rng(8), c=5e-5)
    seen = steps <= 10000
    fc = policy.fit_and_choose(steps[seen], y[seen], direction=-1, limits=policy.limits_for("loss"),
                               schedule=_wsd())
    return steps, y, seen, fc


def test_unseen_cooldown_takes_half_the_open_gain_and_the_interval_spans_it():
    # Warm-up-stable-decay seen only in its stable phase: the cooldown's gain is not identified
    # (the law's C is fixed at 0). The law's point forecast takes the centre of the open range
    # (between no gain and its limit L0), which is closer to the truth (a cooldown worth about 0.05)
    # than no gain; the interval still spans from the no-gain forecast down towards the limit;
    # the reason says so.
    steps, y, seen, fc = _wsd_seen_in_its_stable_phase()
    law = fc.schedule_fit
    end = steps[steps >= 19000]
    truth = y[steps >= 19000]
    assert not law.annealing_seen and fc.weights.get("schedule_law", 0) > 0
    taken = law.gain_taken(end)
    assert np.all(taken > 0) and not law.gain_taken(np.array([5000.0, 12000.0])).any()   # only after the decay starts
    # Every member took that share: the law itself, and each family through the law's plan_change.
    assert fc.families_follow_plan
    no_gain = fc.predict(end) + taken
    assert truth.mean() < no_gain.mean() - 0.02                       # no gain misses the cooldown
    assert abs(fc.predict(end).mean() - truth.mean()) < abs(no_gain.mean() - truth.mean())
    assert fc.unseen_annealing(end).all() and not fc.unseen_annealing(np.array([12000.0])).any()
    band = fc.interval(end)
    assert np.all(band.low <= truth) and np.all(band.high >= no_gain)
    plain = policy.fit_and_choose(steps[seen], y[seen], direction=-1, limits=policy.limits_for("loss"))
    assert band.low.mean() < plain.interval(end).low.mean()
    assert "no annealing" in fc.reason and "half" in fc.reason


def test_unseen_cooldown_of_a_rising_metric_takes_the_gain_upwards():
    # The same rule for an accuracy: the gain is upwards, and the interval's lower edge keeps the
    # no-gain forecast.
    schedule = _wsd()
    steps = np.arange(100, 20001, 100).astype(float)
    acc = 1.0 - _law_curve(schedule, steps, np.random.default_rng(8), c=5e-5) / 4
    seen = steps <= 10000
    fc = policy.fit_and_choose(steps[seen], acc[seen], direction=1, limits=policy.limits_for("accuracy"),
                               schedule=schedule)
    end = steps[steps >= 19000]
    truth = acc[steps >= 19000]
    taken = fc.schedule_fit.gain_taken(end)
    assert fc.weights.get("schedule_law", 0) > 0 and np.all(taken < 0)
    no_gain = fc.predict(end) + taken
    assert abs(fc.predict(end).mean() - truth.mean()) < abs(no_gain.mean() - truth.mean())
    band = fc.interval(end)
    assert np.all(band.low <= no_gain) and np.all(band.high >= truth)


def test_the_step_only_families_follow_an_unseen_cooldown_of_the_plan():
    # Seen in its stable phase only, a warm-up-stable-decay run's families extrapolate a constant
    # rate; each adds what the law says the plan's cooldown changes, and lands nearer the truth.
    steps, y, seen, fc = _wsd_seen_in_its_stable_phase()
    end = steps >= 19000
    change = fc.schedule_fit.plan_change(steps[end])
    assert np.all(change < 0) and not fc.schedule_fit.plan_change(steps[seen]).any()
    assert not fc.schedule_fit.plan_change(np.array([12000.0, 15000.0])).any()   # the rate has not moved yet
    families = [m for m in fc.weights if m != "schedule_law"]
    assert families
    for m in families:
        own = float(np.mean(fc.fits[m].predict(steps[end])))
        assert abs(own + float(np.mean(change)) - y[end].mean()) < abs(own - y[end].mean())
    weights = fc.weights
    combined = sum(w * (fc.member(m).predict(steps[end]) + (change if m != "schedule_law" else 0))
                   for m, w in weights.items())
    assert fc.predict(steps[end]) == pytest.approx(combined)


def test_an_unseen_step_drop_buys_its_gain_over_the_laws_lag_not_at_once():
    # A two-stage plan (the rate drops to 30 % at step 12000), fitted before the drop: the gain the
    # forecast takes builds up over about 1 / (1 - 0.999) steps after the drop, towards half of the
    # open range times the 70 % fall.
    from bertcurve.curves import forecast as fcm

    schedule = np.full(20001, 1e-3)
    schedule[:201] = np.linspace(0, 1e-3, 201)
    schedule[12000:] = 3e-4
    steps = np.arange(100, 10001, 100).astype(float)
    y = _law_curve(schedule, steps, np.random.default_rng(13), c=5e-5)
    law = fcm.fit_schedule_law(steps, y, schedule, direction=-1, limits=policy.limits_for("loss"))
    assert law.converged and law.decay_unidentified
    at = np.array([11999.0, 12010.0, 13000.0, 19000.0])
    taken = law.gain_taken(at)
    open_range = law.law.predict(law.areas, at.astype(int)) - law.law.params[0]
    assert taken[0] == 0 and 0 < taken[1] < 0.02 * open_range[1]
    assert taken[1] < taken[2] < taken[3] <= 0.5 * 0.7 * open_range[3] + 1e-12
    assert taken[3] > 0.99 * 0.5 * 0.7 * open_range[3]


def test_a_seen_decay_or_a_constant_plan_leaves_the_law_unchanged():
    # The rule is for an unidentified gain only: a run that has seen its cosine decay, and a run
    # whose plan never anneals, forecast exactly what the law says, and the reason is silent.
    from bertcurve.curves import schedule_law as sl

    rng = np.random.default_rng(11)
    for schedule, upto in ((_cosine(20000), 10000), (_wsd(decay_from=20000), 10000)):
        steps = np.arange(100, 20001, 100).astype(float)
        y = _law_curve(schedule, steps, rng)
        seen = steps <= upto
        fc = policy.fit_and_choose(steps[seen], y[seen], direction=-1, limits=policy.limits_for("loss"),
                                   schedule=schedule)
        law = fc.schedule_fit
        at = np.array([12000.0, 19000.0])
        assert not law.gain_taken(at).any() and "no annealing" not in fc.reason
        assert not fc.families_follow_plan          # the families' own curve already holds the plan
        assert law.predict(at) == pytest.approx(law.law.predict(sl.schedule_areas(schedule, law.law.momentum),
                                                                 at.astype(int)))


def test_the_law_needs_enough_points_and_says_so():
    schedule = _cosine(3000)
    steps = np.arange(200, 3001, 200).astype(float)     # 15 points: too few for the law
    y = _law_curve(schedule, steps, np.random.default_rng(9))
    fc = policy.fit_and_choose(steps, y, direction=-1, limits=policy.limits_for("loss"), schedule=schedule)
    row = {r["model"]: r for r in fc.ranking}["schedule_law"]
    assert "schedule_law" not in fc.weights
    assert not row["full_fit_converged"] and "needed" in row["full_fit_message"]
    assert "schedule_law" in fc.reason


def test_a_forecast_with_a_schedule_survives_its_json_round_trip():
    from bertcurve.curves.forecast import CurveForecast

    rng = np.random.default_rng(10)
    schedule = _cosine(20000)
    steps = np.arange(100, 12001, 100).astype(float)
    y = _law_curve(schedule, steps, rng)
    fc = policy.fit_and_choose(steps, y, direction=-1, limits=policy.limits_for("loss"), schedule=schedule)
    assert fc.weights.get("schedule_law", 0) > 0
    back = CurveForecast.from_dict(fc.to_dict(), [f.to_dict() for f in fc.fits.values()])
    at = np.array([14000.0, 19000.0])
    assert back.predict(at) == pytest.approx(fc.predict(at), rel=1e-3)
    assert back.interval(at).low == pytest.approx(fc.interval(at).low, rel=1e-3)


def test_an_unseen_cooldown_forecast_survives_its_json_round_trip():
    from bertcurve.curves.forecast import CurveForecast

    schedule = _wsd()
    steps = np.arange(100, 10001, 100).astype(float)
    y = _law_curve(schedule, steps, np.random.default_rng(12), c=5e-5)
    fc = policy.fit_and_choose(steps, y, direction=-1, limits=policy.limits_for("loss"), schedule=schedule)
    assert not fc.schedule_fit.annealing_seen
    d = fc.to_dict()
    assert d["schedule_law"]["annealing_seen"] is False and d["schedule_law"]["fitted_last_step"] == 10000
    back = CurveForecast.from_dict(d, [f.to_dict() for f in fc.fits.values()])
    at = np.array([14000.0, 19000.0])
    assert back.predict(at) == pytest.approx(fc.predict(at), rel=1e-3)
    assert back.interval(at).high == pytest.approx(fc.interval(at).high, rel=1e-3)
    # Whether the families follow the plan is stored: a file written before it rebuilds as it was made.
    assert d["families_follow_plan"] is True and back.families_follow_plan
    old = {k: v for k, v in d.items() if k != "families_follow_plan"}
    before = CurveForecast.from_dict(old, [f.to_dict() for f in fc.fits.values()])
    assert not before.families_follow_plan
