"""`bertcurve compare` over runs that differ only in seed: grouping, mean band, spread, differences."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from bertcurve import layout
from bertcurve.curves import seeds as seedstats
from bertcurve.stages.compare import compare, group_by_seed, table_text
from bertcurve.training.config import EvalSetInfo, RunConfig, build_config


def seed_run(path: Path, seed: int, final: float, *, schedule: str = "cosine", every: int = 100,
             save_every: int = 0, max_steps: int = 3000) -> Path:
    """A synthetic finished run dir: a saturating held-out curve that ends at ``final``."""
    path.mkdir(parents=True)
    overrides = {"max_steps": max_steps, "seed": seed, "schedule": schedule, "eval_every": every}
    if save_every:
        overrides["save_every"] = save_every
    saved = RunConfig(train=build_config("tiny", overrides=overrides),
                      eval_set=EvalSetInfo(fingerprint="fp", masked_tokens=4000), tokenizer_sha256="abc")
    (path / layout.RUN_CONFIG).write_text(json.dumps(saved.to_dict()))
    rows = []
    for step in range(every, max_steps + 1, every):
        shape = 1 - math.exp(-step / (max_steps / 4))
        acc = final * shape / (1 - math.exp(-4))
        rows.append({"format": layout.METRICS_FORMAT, "step": step, "split": "eval", "loss": 6 - 5 * acc,
                     "mlm_accuracy": acc})
    (path / layout.METRICS).write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def last_acc(run: Path) -> float:
    return json.loads((run / layout.METRICS).read_text().splitlines()[-1])["mlm_accuracy"]


def test_compare_groups_seeds_by_config_and_judges_the_difference_against_their_spread(tmp_path):
    cos = [seed_run(tmp_path / "cos" / f"run-seed{s}", s, f) for s, f in zip((0, 1, 2), (0.40, 0.42, 0.38))]
    wsd = [seed_run(tmp_path / "wsd" / f"run-seed{s}", s, f, schedule="wsd")
           for s, f in zip((0, 1, 2), (0.41, 0.43, 0.40))]
    (tmp_path / "cmp").mkdir()
    res = compare(cos + wsd, out=tmp_path / "cmp", bootstrap=0)
    sg = res["seed_groups"]
    assert [g["name"] for g in sg["groups"]] == ["schedule=cosine", "schedule=wsd"]
    assert [g["seeds"] for g in sg["groups"]] == [[0, 1, 2], [0, 1, 2]]
    cos_final = sg["groups"][0]["final"]
    assert cos_final["mean"] == pytest.approx(np.mean([last_acc(r) for r in cos]))
    assert cos_final["sd"] == pytest.approx(np.std([last_acc(r) for r in cos], ddof=1))
    assert cos_final["se"] == pytest.approx(cos_final["sd"] / math.sqrt(3))
    band = sg["groups"][0]["band"]
    assert band["steps"][-1] == 3000 and band["mean"][-1] == pytest.approx(cos_final["mean"])
    d = sg["differences"][0]
    expected = seedstats.difference(seedstats.spread([last_acc(r) for r in cos]),
                                    seedstats.spread([last_acc(r) for r in wsd]))
    assert d["difference"] == pytest.approx(expected.difference)
    assert d["ci_low"] == pytest.approx(expected.ci_low)
    assert d["within_noise"] is True
    assert "cooldown_curve" not in res  # three WSD seeds of one length are no compute curve
    text = table_text(res)
    assert "across seeds" in text and "schedule=wsd vs schedule=cosine: +0.0133" in text
    assert "within seed noise" in text
    on_disk = json.loads((tmp_path / "cmp" / layout.COMPARISON).read_text())
    assert "curves" not in on_disk["seed_groups"]["groups"][0]  # the raw curves stay out of the JSON
    png = tmp_path / "cmp" / "seed_bands.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and res["seed_figure"] == str(png)


def test_a_clear_difference_is_larger_than_seed_noise(tmp_path):
    a = [seed_run(tmp_path / f"a{s}", s, f) for s, f in zip((0, 1, 2), (0.40, 0.41, 0.39))]
    b = [seed_run(tmp_path / f"b{s}", s, f, schedule="wsd") for s, f in zip((0, 1, 2), (0.50, 0.51, 0.49))]
    res = compare(a + b, write=False, bootstrap=0)
    d = res["seed_groups"]["differences"][0]
    assert d["within_noise"] is False and "larger than seed noise" in d["text"]


def test_cadence_and_seed_differences_keep_runs_in_one_group_named_by_the_runs(tmp_path):
    # another eval cadence and checkpoint cadence: same configuration, curves read on common steps
    runs = [seed_run(tmp_path / "run-seed0", 0, 0.40),
            seed_run(tmp_path / "run-seed1", 1, 0.44, every=150, save_every=500)]
    res = compare(runs, write=False, bootstrap=0)
    (g,) = res["seed_groups"]["groups"]
    assert g["name"] == "run" and g["runs"] == ["run-seed0", "run-seed1"]
    assert g["band"]["steps"][:3] == [150, 200, 300]  # union of both cadences inside the shared range
    assert "seed_figure" not in res  # nothing drawn without write or seed_figure


def test_single_seed_runs_are_compared_as_before(tmp_path):
    a = seed_run(tmp_path / "a", 0, 0.40)
    b = seed_run(tmp_path / "b", 0, 0.45, schedule="wsd")
    res = compare([a, b], write=False, bootstrap=0)
    assert "seed_groups" not in res and "across seeds" not in table_text(res)


def test_the_same_seed_twice_is_pointed_out(tmp_path):
    a = seed_run(tmp_path / "a", 0, 0.40)
    res = compare([a, a], write=False, bootstrap=0)
    assert any("same seed appears more than once" in n for n in res["notes"])


def test_group_names_say_every_setting_that_differs():
    def cfg(**kw):
        return RunConfig(train=build_config("tiny", overrides=kw), tokenizer_sha256="abc")

    groups = group_by_seed([cfg(lr=1e-3, seed=0), cfg(lr=1e-3, seed=1), cfg(lr=2e-3, seed=0, warmup_steps=2), None],
                           ["x0", "x1", "y0", "log"], ["eval_mlm_accuracy"] * 4)
    assert [g["members"] for g in groups] == [[0, 1], [2], [3]]
    assert groups[0]["name"] == "lr=0.001, warmup_steps=5" and groups[1]["name"] == "lr=0.002, warmup_steps=2"
    assert groups[2]["name"] == "log"  # a log without a run config is a group of its own
