"""export-history: the seed's training_history JSON from metrics.jsonl."""

from __future__ import annotations

import json

import pytest

from bertcurve.cli import main
from bertcurve.errors import UserError
from bertcurve.stages.history import export_history
from bertcurve.training.metrics_log import MetricsWriter


def _run(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    with MetricsWriter(run / "metrics.jsonl") as w:
        w.write({"step": 0, "split": "eval", "loss": 9.0, "mlm_accuracy": 0.0})
        for step in (100, 200, 300):
            w.write({"step": step, "split": "train", "loss": 9.0 - step / 100,
                     "mlm_accuracy": step / 1000, "lr": step * 1e-8, "nsp_accuracy": 0.5})
        w.write({"step": 300, "split": "eval", "loss": 6.5, "mlm_accuracy": 0.25})
    return run


def test_seed_format_has_the_seed_keys(tmp_path):
    path = export_history(_run(tmp_path))
    data = json.loads(path.read_text())
    assert list(data) == ["steps", "mlm_acc", "nsp_acc", "loss", "lr"]
    assert data["steps"] == [100, 200, 300]
    assert data["mlm_acc"] == [0.1, 0.2, 0.3] and data["nsp_acc"] == [0.5] * 3
    assert data["lr"] == pytest.approx([1e-6, 2e-6, 3e-6])


def test_eval_split_and_cli(tmp_path, capsys):
    run = _run(tmp_path)
    out = tmp_path / "hist.json"
    assert main(["export-history", str(run), "--split", "eval", "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["steps"] == [300] and data["mlm_acc"] == [0.25] and data["lr"] == [3e-6]
    assert main(["export-history", str(tmp_path / "missing")]) == 2
    assert "no metrics.jsonl" in capsys.readouterr().err


def test_seed_history_round_trips_through_load_log(tmp_path):
    sources = pytest.importorskip("bertcurve.curves.logs")
    path = export_history(_run(tmp_path))
    log = sources.load_log(path)
    acc = log.series["train_mlm_accuracy"]
    assert list(acc.steps) == [100, 200, 300]
    assert list(acc.values) == pytest.approx([0.1, 0.2, 0.3])
    # ... and our run dir itself reads as the same training curve.
    run_log = sources.load_log(path.parent)
    assert list(run_log.series["train_mlm_accuracy"].values) == pytest.approx([0.1, 0.2, 0.3])


def test_unknown_format(tmp_path):
    with pytest.raises(UserError):
        export_history(_run(tmp_path), format="csv")
