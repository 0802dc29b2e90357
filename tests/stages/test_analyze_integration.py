"""`bertcurve analyze` and `compare` on logs written by a real (tiny) `bertcurve train` run."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np

import pytest

from bertcurve import layout

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained_run(tiny_data_dir, tmp_path_factory) -> Path:
    from bertcurve.stages.train import train

    out = tmp_path_factory.mktemp("trained") / "run"
    has_tb = importlib.util.find_spec("tensorboard") is not None
    train(tiny_data_dir, out, preset="tiny", overrides={"eval_every": 5}, quiet=True, tensorboard=has_tb)
    return out


def test_analyze_a_real_run(trained_run):
    from bertcurve.stages.analyze import analyze

    res = analyze(trained_run, target=0.2, bootstrap=100)
    assert res["path"] == str(trained_run / layout.ANALYSIS)
    saved = json.loads((trained_run / layout.ANALYSIS).read_text(encoding="utf-8"))
    assert saved["source"]["kind"] == "bertcurve-run"
    assert saved["metric"]["name"] == "eval_mlm_accuracy"
    assert saved["metric"]["n"] >= 5
    assert saved["throughput"] is not None and saved["throughput"]["steps_per_second"] > 0
    assert saved["lr_schedule"] is not None
    assert saved["verdict"]
    loss = analyze(trained_run, metric="train_loss", bootstrap=0, write=False)
    assert loss["metric"]["direction"] == -1
    assert loss["correlation"]["spearman"]["statistic"] < 0  # the loss falls in a real run


def _records(run: Path, split: str) -> list[dict]:
    lines = (run / layout.METRICS).read_text(encoding="utf-8").splitlines()
    return [r for r in map(json.loads, lines) if r["split"] == split]


def test_compare_two_different_real_runs(trained_run, tiny_data_dir, tmp_path):
    from bertcurve.stages.compare import compare
    from bertcurve.stages.train import train

    other = tmp_path / "other"
    train(tiny_data_dir, other, preset="tiny", overrides={"eval_every": 5, "seed": 1, "lr": 4e-3}, quiet=True)
    res = compare([trained_run, other], metric="train_mlm_accuracy", out=tmp_path / "c.json", bootstrap=0)
    rows = res["rows"]
    assert rows[0]["name"] != rows[1]["name"]
    # Each row states its own run's numbers, read here straight from the logs.
    for row, run in zip(rows, (trained_run, other)):
        train_acc = [r["mlm_accuracy"] for r in _records(run, "train")]
        assert row["mean"] == pytest.approx(float(np.mean(train_acc)))
        assert row["max"] == pytest.approx(max(train_acc))
        assert row["final_eval_accuracy"] == pytest.approx(_records(run, "eval")[-1]["mlm_accuracy"])
    diff = res["differences"][0]
    assert rows[0]["mean"] != rows[1]["mean"]
    for key in ("mean", "final_eval_accuracy"):
        assert diff[key]["difference"] == pytest.approx(rows[1][key] - rows[0][key])


def test_tensorboard_events_of_a_real_run_read_like_its_metrics(trained_run):
    from bertcurve.curves.logs import load_log

    pytest.importorskip("tensorboard")  # the fixture wrote events whenever the package is there
    tb_dir = trained_run / "tensorboard"
    assert tb_dir.is_dir() and any(tb_dir.iterdir())
    tb, jsonl = load_log(tb_dir), load_log(trained_run)
    for name in ("train_loss", "eval_mlm_accuracy", "lr"):
        assert name in tb.series, sorted(tb.series)
        assert tb.series[name].steps.tolist() == jsonl.series[name].steps.tolist()
        np.testing.assert_allclose(tb.series[name].values, jsonl.series[name].values, rtol=1e-6)  # float32 events
