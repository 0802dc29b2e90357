"""Across-seed statistics: spread, mean band on common steps, and differences against seed noise."""

import math

import numpy as np
import pytest
from scipy import stats as sps

from bertcurve.curves import seeds as sd


def test_spread_matches_textbook_t_interval():
    sp = sd.spread([0.20, 0.18, 0.22])
    assert sp.n == 3 and sp.mean == pytest.approx(0.20)
    assert sp.sd == pytest.approx(0.02)
    assert sp.se == pytest.approx(0.02 / math.sqrt(3))
    half = sps.t.ppf(0.975, 2) * 0.02 / math.sqrt(3)
    assert (sp.ci_low, sp.ci_high) == pytest.approx((0.20 - half, 0.20 + half))


def test_spread_of_one_seed_has_no_sd():
    sp = sd.spread([0.3])
    assert sp.mean == 0.3 and sp.sd is None and sp.se is None and sp.ci_low is None


def test_spread_refuses_nan_and_empty():
    with pytest.raises(ValueError):
        sd.spread([0.1, float("nan")])
    with pytest.raises(ValueError):
        sd.spread([])


def test_common_steps_is_the_shared_range_of_all_steps():
    a = np.array([0, 50, 100, 150, 200])
    b = np.array([0, 50, 100, 150])          # stopped early
    c = np.array([25, 75, 125, 175])          # another cadence
    assert sd.common_steps([a, b, c]).tolist() == [25, 50, 75, 100, 125, 150]
    assert sd.common_steps([np.array([0, 1]), np.array([5, 6])]).size == 0


def test_on_steps_interpolates_and_refuses_to_extrapolate():
    out = sd.on_steps(np.array([0, 100]), np.array([0.0, 1.0]), np.array([0, 25, 100]))
    assert out.tolist() == [0.0, 0.25, 1.0]
    with pytest.raises(ValueError):
        sd.on_steps(np.array([0, 100]), np.array([0.0, 1.0]), np.array([150]))


def test_band_mean_sd_and_interval_at_each_step():
    steps = np.array([0, 10, 20])
    curves = [(steps, np.array([0.0, 0.1, 0.2])), (steps, np.array([0.0, 0.3, 0.4])),
              (steps, np.array([0.0, 0.2, 0.3]))]
    b = sd.band(curves)
    assert b.n == 3 and b.steps.tolist() == [0, 10, 20]
    assert b.mean == pytest.approx([0.0, 0.2, 0.3])
    assert b.sd == pytest.approx([0.0, 0.1, 0.1])
    half = sps.t.ppf(0.975, 2) * 0.1 / math.sqrt(3)
    assert b.high[1] - b.mean[1] == pytest.approx(half)
    assert b.low[0] == b.high[0] == 0.0


def test_band_of_runs_with_different_eval_steps_uses_the_common_range():
    b = sd.band([(np.array([0, 100, 200]), np.array([0.0, 1.0, 2.0])),
                 (np.array([0, 50, 150]), np.array([0.0, 0.5, 1.5]))])
    assert b.steps.tolist() == [0, 50, 100, 150]
    assert b.mean == pytest.approx([0.0, 0.5, 1.0, 1.5])  # both lines are value = step / 100


def test_difference_is_welch_t_interval():
    a, b = [0.20, 0.18, 0.22], [0.25, 0.27, 0.26, 0.24]
    d = sd.difference(sd.spread(a), sd.spread(b))
    ref = sps.ttest_ind(b, a, equal_var=False)
    ci = ref.confidence_interval(0.95)
    assert d.difference == pytest.approx(np.mean(b) - np.mean(a))
    assert (d.ci_low, d.ci_high) == pytest.approx((ci.low, ci.high))
    assert d.df == pytest.approx(ref.df)
    assert d.within_noise is False


def test_small_difference_is_within_seed_noise():
    d = sd.difference(sd.spread([0.20, 0.16, 0.24]), sd.spread([0.21, 0.17, 0.23]))
    assert d.within_noise is True
    line = sd.describe_difference("cosine", "wsd", d)
    assert line.startswith("wsd vs cosine: +0.0033 ±") and "within seed noise" in line


def test_one_seed_side_borrows_the_other_sides_spread():
    d = sd.difference(sd.spread([0.20, 0.18, 0.22]), sd.spread([0.35]))
    assert d.pooled_from == "a" and d.df == 2
    assert d.se == pytest.approx(math.sqrt(0.02 ** 2 / 3 + 0.02 ** 2 / 1))
    assert d.within_noise is False
    none = sd.difference(sd.spread([0.2]), sd.spread([0.3]))
    assert none.se is None and none.within_noise is None
    assert "no seed spread" in sd.describe_difference("a", "b", none)
