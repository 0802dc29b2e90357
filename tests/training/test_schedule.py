"""Learning-rate schedule values, including the seed's logged learning rates."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from bertcurve.training.schedule import lr_at, rates_agree_through, stable_phase_end

SEED_HISTORY = Path(__file__).resolve().parents[1] / "fixtures" / "seed" / "training_history_100k.json"


def test_warmup_is_linear_from_zero():
    kw = dict(peak_lr=1e-3, warmup_steps=100, max_steps=1000)
    assert lr_at(0, **kw) == 0.0
    assert lr_at(50, **kw) == pytest.approx(5e-4)
    assert lr_at(100, **kw) == pytest.approx(1e-3)


def test_cosine_decays_to_floor_at_max_steps():
    kw = dict(peak_lr=1e-3, warmup_steps=100, max_steps=1100, schedule="cosine")
    assert lr_at(600, **kw) == pytest.approx(5e-4)  # half way: cos = 0
    assert lr_at(1100, **kw) == pytest.approx(0.0, abs=1e-15)
    assert lr_at(5000, **kw) == pytest.approx(0.0, abs=1e-15)
    with_floor = lr_at(1100, **kw, min_lr_ratio=0.1)
    assert with_floor == pytest.approx(1e-4)
    values = [lr_at(s, **kw) for s in range(100, 1101)]
    assert all(a >= b for a, b in zip(values, values[1:]))


def test_linear_and_constant():
    kw = dict(peak_lr=2e-3, warmup_steps=0, max_steps=100)
    assert lr_at(50, **kw, schedule="linear") == pytest.approx(1e-3)
    assert lr_at(100, **kw, schedule="linear") == pytest.approx(0.0)
    assert lr_at(77, **kw, schedule="constant") == 2e-3
    with pytest.raises(ValueError):
        lr_at(5, **kw, schedule="bogus")
    with pytest.raises(ValueError):
        lr_at(-1, **kw)


def test_reproduces_the_seed_learning_rates():
    seed = json.loads(SEED_HISTORY.read_text())
    for step, logged in zip(seed["steps"], seed["lr"]):
        ours = lr_at(step, peak_lr=5e-5, warmup_steps=2000, max_steps=100_000)
        assert math.isclose(ours, logged, rel_tol=1e-9, abs_tol=1e-15), step


def test_wsd_is_flat_at_the_peak_then_cools_down_over_the_last_fraction():
    kw = dict(peak_lr=1e-3, warmup_steps=100, max_steps=1000, schedule="wsd", decay_fraction=0.2)
    assert lr_at(100, **kw) == pytest.approx(1e-3)
    assert lr_at(800, **kw) == pytest.approx(1e-3)          # the stable phase ends at 800
    assert lr_at(900, **kw) == pytest.approx(5e-4)          # linear cooldown: half way
    assert lr_at(1000, **kw) == pytest.approx(0.0, abs=1e-15)
    assert lr_at(900, **kw, decay_shape="cosine") == pytest.approx(5e-4)
    assert lr_at(900, **kw, decay_shape="1-sqrt") == pytest.approx(1e-3 * (1 - math.sqrt(0.5)))
    assert lr_at(1000, **kw, min_lr_ratio=0.1) == pytest.approx(1e-4)
    with pytest.raises(ValueError, match="decay shape"):
        lr_at(900, **kw, decay_shape="step")


def test_wsd_of_a_longer_run_matches_the_shorter_one_through_its_stable_phase():
    short = dict(peak_lr=1e-3, warmup_steps=100, max_steps=1000, schedule="wsd")
    long = dict(short, max_steps=3000)
    assert all(lr_at(s, **short) == lr_at(s, **long) for s in range(0, 801))


def test_inverse_sqrt_decays_with_the_square_root_and_ignores_max_steps():
    kw = dict(peak_lr=1e-3, warmup_steps=100, max_steps=1000, schedule="inverse_sqrt")
    assert lr_at(100, **kw) == pytest.approx(1e-3)
    assert lr_at(400, **kw) == pytest.approx(5e-4)
    assert lr_at(40000, **kw) == pytest.approx(5e-5)
    assert lr_at(40000, **kw, min_lr_ratio=0.1) == pytest.approx(1e-4)


def _optim(**changes):
    base = dict(lr=1e-3, warmup_steps=10, max_steps=100, schedule="wsd", min_lr_ratio=0.0,
                decay_fraction=0.2, decay_shape="linear")
    return dict(base, **changes)


def _rates(optim, upto):
    kwargs = {k: optim[k] for k in ("warmup_steps", "max_steps", "schedule", "min_lr_ratio",
                                    "decay_fraction", "decay_shape")}
    return [lr_at(s, peak_lr=optim["lr"], **kwargs) for s in range(upto + 1)]


def test_stable_phase_end_is_the_last_peak_step_of_wsd_only():
    end = stable_phase_end("wsd", 100, 10, 0.2)
    assert end == 80
    opt = _optim()
    assert _rates(opt, 100)[end] == 1e-3 and _rates(opt, 100)[end + 1] < 1e-3
    assert stable_phase_end("cosine", 100, 10, 0.2) is None
    assert stable_phase_end("constant", 100, 10, 0.2) is None


@pytest.mark.parametrize("old, new, step", [
    (_optim(), _optim(max_steps=300), 80),                       # WSD: the whole stable phase
    (_optim(), _optim(max_steps=300), 81),                       # ... but not the first cooled step
    (_optim(schedule="constant"), _optim(schedule="constant", max_steps=300), 100),
    (_optim(schedule="inverse_sqrt"), _optim(schedule="inverse_sqrt", max_steps=300), 100),
    (_optim(schedule="cosine"), _optim(schedule="cosine", max_steps=300), 50),
    (_optim(schedule="cosine"), _optim(schedule="cosine", max_steps=300), 10),  # warm-up only
    (_optim(), _optim(max_steps=300, lr=2e-3), 5),
])
def test_rates_agree_through_matches_the_rates_themselves(old, new, step):
    expected = _rates(old, step) == _rates(new, step)
    assert rates_agree_through(step, old, new) is expected
