"""The schedule-aware law: areas of known schedules, recovery of known parameters, new schedules."""

import math

import numpy as np
import pytest

from bertcurve.curves import schedule_law as law


def cosine(last: int, warmup: int, peak: float = 1e-3) -> np.ndarray:
    s = np.arange(last + 1, dtype=float)
    out = peak * 0.5 * (1 + np.cos(np.pi * np.clip((s - warmup) / (last - warmup), 0, 1)))
    out[: warmup + 1] = peak * s[: warmup + 1] / warmup
    return out


def test_areas_of_a_constant_rate_count_steps_and_never_anneal():
    areas = law.schedule_areas(np.full(101, 3e-4), momentum=0.99)
    assert areas.forward[100] == pytest.approx(101)  # index 0 included at the peak rate
    assert np.all(areas.annealing == 0)


def test_annealing_area_of_one_drop_follows_the_momentum_sum():
    lr = np.array([0, 1.0, 1.0, 0.5, 0.5, 0.5])   # one drop of 0.5 at step 3
    areas = law.schedule_areas(lr, momentum=0.5)
    # m_3 = 0.5, m_4 = 0.25, m_5 = 0.125 -> S2 = 0.5, 0.75, 0.875
    assert areas.annealing[3:].tolist() == pytest.approx([0.5, 0.75, 0.875])
    assert areas.annealing[:3].tolist() == [0, 0, 0]   # the warm-up's rise is not annealing


def test_fit_recovers_a_known_law_and_predicts_a_three_times_longer_run():
    truth = (2.0, 3.0, 0.4, 0.002)
    short = cosine(1000, 50)
    areas = law.schedule_areas(short, 0.99)
    steps = np.arange(50, 1001, 25)
    rng = np.random.default_rng(0)
    loss = law.law_value(truth, areas.forward[steps], areas.annealing[steps]) + rng.normal(0, 0.002, len(steps))
    fit = law.fit_law(steps, loss, short, bootstrap=50)
    long = law.stretched_schedule(short, 3000, "cosine")
    long_areas = law.schedule_areas(long, fit.momentum)
    expected = law.law_value(truth, *(law.schedule_areas(long, 0.99).forward[[3000]],
                                      law.schedule_areas(long, 0.99).annealing[[3000]]))[0]
    got = fit.predict(long_areas, [3000])[0]
    assert got == pytest.approx(expected, abs=0.02)
    lo, hi = law.prediction_interval(fit, long_areas, [3000], 0.95)
    assert lo[0] < expected < hi[0]
    # a step extrapolation of the flattened end would miss the longer run's gain
    assert got < loss[-3:].mean() - 0.05


def test_rising_metrics_are_fitted_with_the_same_law():
    lr = cosine(800, 40)
    areas = law.schedule_areas(lr, 0.95)
    steps = np.arange(40, 801, 20)
    acc = 0.6 - law.law_value((0.0, 0.5, 0.5, 0.0), areas.forward[steps], areas.annealing[steps]) \
        + 0.003 * areas.annealing[steps]
    fit = law.fit_law(steps, acc, lr, rising=True, bootstrap=0)
    assert np.allclose(fit.predict(law.schedule_areas(lr, fit.momentum), steps), acc, atol=0.01)


def test_stretched_schedules_keep_warmup_peak_and_final_rate():
    run = cosine(1000, 100, peak=5e-4)
    for shape in ("cosine", "linear", "wsd"):
        new = law.stretched_schedule(run, 2500, shape)
        assert len(new) == 2501
        assert np.array_equal(new[:101], run[:101])
        assert new[-1] == pytest.approx(run[-1], abs=1e-12)
        assert new.max() == pytest.approx(5e-4)
    wsd = law.stretched_schedule(run, 2500, "wsd", decay_fraction=0.2)
    assert wsd[2000] == pytest.approx(5e-4) and wsd[2300] < 5e-4
    assert np.all(law.stretched_schedule(run, 2500, "constant")[101:] == pytest.approx(5e-4))
    with pytest.raises(ValueError, match="warm-up"):
        law.stretched_schedule(run, 50, "cosine")
    with pytest.raises(ValueError, match="unknown schedule"):
        law.stretched_schedule(run, 2000, "triangle")


def test_lr_from_a_sparse_log_is_interpolated_with_a_warmup_from_zero():
    lr = law.lr_from_log([100, 200, 300], [1e-3, 5e-4, 0.0], 400)
    assert lr[50] == pytest.approx(5e-4) and lr[150] == pytest.approx(7.5e-4)
    assert lr[400] == 0.0 and len(lr) == 401


def test_too_few_points_are_refused():
    with pytest.raises(ValueError, match="at least"):
        law.fit_law([10, 20, 30], [3.0, 2.5, 2.2], cosine(100, 5))


def test_model_error_grows_with_the_horizon():
    assert law.model_error_sd(None, 1000) == 0.0
    near = law.model_error_sd((0.01, 100.0), 100)
    far = law.model_error_sd((0.01, 100.0), 400)
    assert near == pytest.approx(0.01) and far == pytest.approx(0.02) and math.isfinite(far)
