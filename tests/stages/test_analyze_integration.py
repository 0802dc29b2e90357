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


def test_compare_a_real_run_with_the_seed_shape(trained_run, tmp_path):
    from bertcurve.stages.compare import compare

    res = compare([trained_run, trained_run], metric="train_mlm_accuracy", out=tmp_path / "c.json", bootstrap=0)
    assert res["rows"][0]["final_eval_accuracy"] is not None
    assert res["differences"][0]["mean"]["difference"] == 0


def test_tensorboard_events_of_a_real_run_read_like_its_metrics(trained_run):
    from bertcurve.curves.logs import load_log

    tb_dir = trained_run / "tensorboard"
    if not tb_dir.is_dir():
        pytest.skip("tensorboard not installed")
    tb, jsonl = load_log(tb_dir), load_log(trained_run)
    for name in ("train_loss", "eval_mlm_accuracy", "lr"):
        assert name in tb.series, sorted(tb.series)
        assert tb.series[name].steps.tolist() == jsonl.series[name].steps.tolist()
        np.testing.assert_allclose(tb.series[name].values, jsonl.series[name].values, rtol=1e-6)  # float32 events
