"""`bertcurve compare`: headline table, differences, common window, like-for-like notes."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from bertcurve import layout
from bertcurve.stages.compare import compare, table_text
from bertcurve.training.config import EvalSetInfo, RunConfig, build_config
from bertcurve.errors import UserError


def history(path: Path, last: int, every: int = 100, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    steps = list(range(every, last + 1, every))
    acc = [0.62 - 0.5 * math.exp(-s / 15000) + float(rng.normal(0, 0.02)) for s in steps]
    loss = [9 - 10 * a for a in acc]
    path.write_text(json.dumps({"steps": steps, "mlm_acc": acc, "loss": loss,
                                "lr": [5e-5] * len(steps), "nsp_acc": [0.5] * len(steps)}))
    return path


def run_dir(path: Path, fingerprint: str, max_steps: int) -> Path:
    path.mkdir()
    saved = RunConfig(train=build_config("tiny", overrides={"max_steps": max_steps}),
                      eval_set=EvalSetInfo(fingerprint=fingerprint, masked_tokens=4000), tokenizer_sha256="abc")
    (path / layout.RUN_CONFIG).write_text(json.dumps(saved.to_dict()))
    rows = []
    for i in range(1, 31):
        step = i * max_steps // 30
        acc = 0.5 - 0.4 * math.exp(-step / (max_steps / 4))
        rows.append({"format": layout.METRICS_FORMAT, "step": step, "split": "eval", "loss": 6 - 5 * acc,
                     "mlm_accuracy": acc + 0.001 * (i % 3)})
    (path / layout.METRICS).write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_compare_two_windows_matches_each_analysis_and_notes_the_window(tmp_path):
    a = history(tmp_path / "h50k.json", 50_000)
    b = history(tmp_path / "h100k.json", 100_000)
    res = compare([a, b], out=tmp_path / "cmp.json", bootstrap=0)
    on_disk = json.loads((tmp_path / "cmp.json").read_text())
    assert on_disk["format"] == layout.COMPARISON_FORMAT
    assert res["common_step"] == 100_000 and res["common_window_end"] == 50_000
    ra, rb = res["rows"]
    raw = json.loads(b.read_text())
    assert rb["pearson_r"] == pytest.approx(np.corrcoef(raw["steps"], raw["mlm_acc"])[0, 1], abs=1e-12)
    assert rb["mean"] == pytest.approx(np.mean(raw["mlm_acc"]))
    assert ra["final_loss"] == pytest.approx(json.loads(a.read_text())["loss"][-1])
    # the common window of the longer run is exactly the shorter window's r when both logs agree there
    win = np.array(raw["steps"]) <= 50_000
    assert rb["window_pearson_r"] == pytest.approx(np.corrcoef(np.array(raw["steps"])[win],
                                                               np.array(raw["mlm_acc"])[win])[0, 1])
    d = res["differences"][0]
    assert d["pearson_r"]["difference"] == pytest.approx(rb["pearson_r"] - ra["pearson_r"])
    assert d["mean"]["percent"] == pytest.approx((rb["mean"] - ra["mean"]) / ra["mean"] * 100)
    assert ra["forecast_is_extrapolation"] and not rb["forecast_is_extrapolation"]
    notes = " ".join(res["notes"])
    assert "different step windows" in notes and "extrapolation" in notes and "one training batch" in notes
    text = table_text(res)
    assert "Pearson r" in text and "Δ" in text and "steps ≤ 50,000" in text


def test_compare_runs_with_different_eval_sets_says_so(tmp_path):
    a = run_dir(tmp_path / "a", "fp-1", 3000)
    b = run_dir(tmp_path / "b", "fp-2", 6000)
    res = compare([a, b], write=False, bootstrap=0)
    notes = " ".join(res["notes"])
    assert "different held-out sets" in notes
    assert "schedules have different lengths" in notes
    assert all(r["metric"] == "eval_mlm_accuracy" for r in res["rows"])
    assert res["rows"][0]["final_eval_accuracy"] is not None


def test_compare_needs_two_sources_and_same_names_stay_apart(tmp_path):
    a = history(tmp_path / "h.json", 20_000)
    with pytest.raises(UserError, match="at least two"):
        compare([a])
    res = compare([a, a], write=False, bootstrap=0)
    assert [r["name"] for r in res["rows"]] == ["h", "h#2"]
    assert res["differences"][0]["pearson_r"]["difference"] == 0
    assert res["notes"] == [n for n in res["notes"] if "different step windows" not in n]
