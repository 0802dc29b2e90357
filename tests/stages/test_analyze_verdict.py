"""The verdict's wording: trends of curved series, floors and ceilings, ratios, one forecast sentence."""

from __future__ import annotations

import numpy as np
import pytest

from bertcurve.stages.analyze import _ratio_words, analyze


def _csv(tmp_path, name, steps, values):
    path = tmp_path / "log.csv"
    path.write_text(f"step,{name}\n" + "".join(f"{s},{v:.6f}\n" for s, v in zip(steps, values)), encoding="utf-8")
    return path


def ar1(n, rho, sd, seed):
    rng = np.random.default_rng(seed)
    e = np.zeros(n)
    for i in range(1, n):
        e[i] = rho * e[i - 1] + rng.normal(0, sd)
    return e


def test_monotone_curves_are_never_no_clear_trend(tmp_path):
    # accuracy 0.50 -> 0.92 (saturating) and a loss 1.46 -> 0.2 with autocorrelated noise
    steps = np.arange(1, 31) * 1000
    acc = 0.92 - 0.42 * np.exp(-steps / 6000) + ar1(30, 0.5, 0.01, 0)
    res = analyze(_csv(tmp_path, "eval_accuracy", steps, acc), bootstrap=0, write=False)
    assert res["verdict"][0].startswith("eval_mlm_accuracy rises")
    loss = 0.2 + 1.26 * (steps / 1000) ** -0.8 + ar1(30, 0.5, 0.01, 1)
    res = analyze(_csv(tmp_path, "eval_loss", steps, loss), bootstrap=0, write=False)
    assert res["verdict"][0].startswith("eval_loss falls")


def test_loss_floor_is_a_floor_and_one_sentence_covers_every_forecast(tmp_path):
    steps = np.arange(1, 61) * 500
    loss = 2.0 + 3.0 * (steps / 1000) ** -0.5 + np.random.default_rng(2).normal(0, 0.01, 60)
    res = analyze(_csv(tmp_path, "eval_loss", steps, loss), forecast=[40000, 50000, 60000], bootstrap=0, write=False)
    text = " ".join(res["verdict"])
    assert "ceiling" not in text
    assert res["asymptote_kind"] == "floor"
    forecast_lines = [v for v in res["verdict"] if v.startswith("Forecast")]
    assert len(forecast_lines) == 1 and "40,000" in forecast_lines[0] and "60,000" in forecast_lines[0]


def test_floor_on_its_bound_is_not_reported_as_a_level(tmp_path):
    # a loss falling towards 0: the fitted floor sits on the bound 0 and is undetermined
    steps = np.arange(1, 41) * 100
    loss = 1.46 * (steps / 100) ** -0.55 + np.random.default_rng(3).normal(0, 0.002, 40)
    res = analyze(_csv(tmp_path, "train_loss", steps, loss), bootstrap=0, write=False)
    text = " ".join(res["verdict"])
    floors = [v for v in res["verdict"] if "levels off towards a floor of" in v]
    assert not floors or res["asymptote"] > 1e-3, floors


def test_ratios_are_ratios():
    assert _ratio_words(0.2881, -0.09189) == " (the sign reversed)"
    assert _ratio_words(0.2, 0.05) == " (0.25× the first)"
    assert "%" not in _ratio_words(0.2, 0.05)
