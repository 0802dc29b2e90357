"""Reading training logs of every supported kind into one normalised shape."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as hs

from bertcurve import layout
from bertcurve.errors import UserError
from bertcurve.curves.logs import load_log, make_series

SEED = Path(__file__).resolve().parents[1] / "fixtures" / "seed" / "training_history_100k.json"


def write_metrics(run: Path, rows: list[dict]) -> Path:
    run.mkdir(parents=True, exist_ok=True)
    with open(run / layout.METRICS, "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps({"format": layout.METRICS_FORMAT, **row}) + "\n")
    return run


def train_row(step: int, acc: float, loss: float) -> dict:
    return {"step": step, "split": "train", "loss": loss, "mlm_accuracy": acc, "lr": 1e-4,
            "grad_norm": 1.0, "tokens_seen": step * 4096, "elapsed_s": step * 0.5,
            "tokens_per_s": 8192.0, "time": "2026-01-01T00:00:00"}


def test_seed_history_maps_names_and_keeps_values():
    log = load_log(SEED)
    assert log.kind == "seed-history"
    assert set(log.series) == {"train_mlm_accuracy", "train_loss", "train_nsp_accuracy", "lr"}
    raw = json.loads(SEED.read_text())
    s = log.metric()
    assert log.default_metric() == "train_mlm_accuracy"
    assert s.steps.dtype == np.int64 and len(s) == 1000
    assert s.values.tolist() == raw["mlm_acc"]
    assert log.notes == []


def test_run_dir_eval_metric_is_default_and_splits_are_separate(tmp_path):
    rows = [train_row(s, 0.1 + s / 1000, 5 - s / 100) for s in range(10, 110, 10)]
    rows += [{"step": s, "split": "eval", "loss": 4.0 - s / 100, "mlm_accuracy": 0.2 + s / 1000,
              "mlm_accuracy_se": 0.01, "masked_tokens": 5000, "tokens_seen": s * 4096, "elapsed_s": 1.0}
             for s in (50, 100)]
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / layout.RUN_CONFIG).write_text(json.dumps({"lr": 1e-4}))
    log = load_log(write_metrics(tmp_path / "run", rows))
    assert log.kind == "bertcurve-run" and log.name == "run"
    assert log.meta["config"] == {"lr": 1e-4}
    assert log.default_metric() == "eval_mlm_accuracy"
    assert log.metric().steps.tolist() == [50, 100]
    assert log.metric("train_loss").values[0] == pytest.approx(4.9)
    assert {"lr", "tokens_per_s", "elapsed_s", "eval_loss", "eval_mlm_accuracy_se"} <= set(log.series)
    # the metrics.jsonl path itself reads the same
    assert load_log(tmp_path / "run" / layout.METRICS).name == "run"


def test_resumed_run_repeated_steps_keep_last_and_torn_line_is_ignored(tmp_path):
    rows = [train_row(s, 0.1, 5.0) for s in (10, 20, 30, 40)]
    rows += [train_row(s, 0.9, 1.0) for s in (30, 40, 50, 60)]  # resumed from step 20
    run = write_metrics(tmp_path / "r", rows)
    with open(run / layout.METRICS, "a") as fh:
        fh.write('{"format": "bertcurve.metrics/1", "step": 7')  # crash while appending
    log = load_log(run)
    s = log.metric("train_mlm_accuracy")
    assert s.steps.tolist() == [10, 20, 30, 40, 50, 60]
    assert s.values.tolist() == [0.1, 0.1, 0.9, 0.9, 0.9, 0.9]
    assert any("repeated" in n for n in log.notes)
    assert any("incomplete last line" in n for n in log.notes)


def test_damaged_line_in_the_middle_is_an_error(tmp_path):
    run = tmp_path / "r"
    run.mkdir()
    (run / layout.METRICS).write_text('{"step": 1, "split": "train", "loss": 1}\nnot json\n{"step": 2, "loss": 1}\n')
    with pytest.raises(UserError, match=":2 is not valid JSON"):
        load_log(run)


def test_newer_metrics_format_is_refused(tmp_path):
    run = tmp_path / "r"
    run.mkdir()
    (run / layout.METRICS).write_text('{"format": "bertcurve.metrics/2", "step": 1, "split": "train"}\n')
    with pytest.raises(UserError, match="upgrade"):
        load_log(run)


def test_make_series_sorts_drops_nonfinite_and_dedups():
    s, notes = make_series([30, 10, 20, 10, 40], [3.0, 1.0, float("nan"), 1.5, float("inf")], name="m")
    assert s.steps.tolist() == [10, 30] and s.values.tolist() == [1.5, 3.0]
    assert len(notes) == 3
    s2, notes2 = make_series([0.5, 1.5], [1, 2])
    assert s2.steps.dtype == np.float64 and notes2 == []


def test_hf_trainer_state(tmp_path):
    history = [{"step": s, "epoch": s / 100, "loss": 5 - s / 50, "learning_rate": 5e-5, "grad_norm": 2.0}
               for s in range(10, 110, 10)]
    history += [{"step": s, "eval_loss": 4 - s / 50, "eval_accuracy": 0.1 + s / 500, "eval_runtime": 3.2}
                for s in (20, 40, 60, 80, 100)]
    history.append({"step": 100, "train_runtime": 50.0, "train_loss": 3.3, "total_flos": 1e12})
    out = tmp_path / "mlm-run"
    ckpt = out / "checkpoint-100"
    ckpt.mkdir(parents=True)
    (ckpt / "trainer_state.json").write_text(json.dumps({"global_step": 100, "log_history": history}))
    (out / "checkpoint-50").mkdir()
    log = load_log(out)  # folder without trainer_state.json: newest checkpoint
    assert log.kind == "hf-trainer-state" and log.name == "mlm-run"
    assert log.default_metric() == "eval_mlm_accuracy"
    assert log.metric().steps.tolist() == [20, 40, 60, 80, 100]
    assert log.metric("train_loss").values[-1] == pytest.approx(3.0)  # not the 3.3 run average
    assert log.meta["global_step"] == 100
    assert "lr" in log.series and "eval_runtime" in log.series


def test_csv_autodetects_step_and_metric_col(tmp_path):
    path = tmp_path / "wandb.csv"
    lines = ["Step,train/loss,acc,note"] + [f"{s},{5 - s / 100},{0.1 + s / 1000},x" for s in range(0, 500, 50)]
    path.write_text("\n".join(lines) + "\n")
    log = load_log(path, metric_col="acc")
    assert log.kind == "csv" and log.default_metric() == "acc"
    assert len(log.metric()) == 10 and "train_loss" in log.series
    assert any("'note' is not numeric" in n for n in log.notes)
    tsv = tmp_path / "log.tsv"
    tsv.write_text("iteration\tvalue\n" + "".join(f"{i}\t{i * i}\n" for i in range(6)))
    log2 = load_log(tsv)
    assert log2.default_metric() == "value"


def test_csv_errors(tmp_path):
    path = tmp_path / "a.csv"
    path.write_text("when,acc\n1,0.1\n2,0.2\n")
    with pytest.raises(UserError, match="no step column.*--step-col"):
        load_log(path)
    assert len(load_log(path, step_col="when").metric("acc")) == 2
    with pytest.raises(UserError, match="--metric-col 'nope' is not a column"):
        load_log(path, step_col="when", metric_col="nope")
    path.write_text("step,acc\n1,0.1\n2,zero point two\n")
    with pytest.raises(UserError, match="'zero point two', which is not a number"):
        load_log(path, metric_col="acc")


@pytest.mark.parametrize(
    "content, message",
    [
        ("", "is empty"),
        ("   \n", "is empty"),
        ('{"foo": 1}', "not a training log"),
        ('{"steps": [1, 2, 3], "mlm_acc": [0.1, 0.2]}', "has 2 entries"),
        ('{"steps": [1, 2], "mlm_acc": [0.1, "high"]}', "'high' is not a number"),
        ("{not json", "not valid JSON"),
    ],
)
def test_bad_json_logs(tmp_path, content, message):
    path = tmp_path / "history.json"
    path.write_text(content)
    with pytest.raises(UserError, match=message):
        load_log(path)


def test_missing_and_unknown_sources(tmp_path):
    with pytest.raises(UserError, match="log not found"):
        load_log(tmp_path / "nope.json")
    with pytest.raises(UserError, match="holds no training log"):
        load_log(tmp_path)
    (tmp_path / "x.bin").write_bytes(b"\0")
    with pytest.raises(UserError, match="unknown log type"):
        load_log(tmp_path / "x.bin")


def test_metric_checks_points_constant_and_name(tmp_path):
    path = tmp_path / "h.json"
    path.write_text(json.dumps({"steps": [1, 2, 3, 4], "mlm_acc": [0.1, 0.2, 0.3, 0.4],
                                "loss": [2.0, 2.0, 2.0, 2.0], "lr": [1, 1, 1, 1]}))
    log = load_log(path)
    with pytest.raises(UserError, match="4 usable point.*at least 5"):
        log.metric(min_points=5)
    with pytest.raises(UserError, match="constant"):
        log.metric("train_loss", allow_constant=False)
    with pytest.raises(UserError, match="not in .*choose one of: lr, train_loss, train_mlm_accuracy"):
        log.metric("eval_mlm_accuracy")


def _write_events(folder: Path, tag: str, points: list[tuple[int, float]]) -> None:
    from tensorboard.compat.proto import event_pb2, summary_pb2
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    writer = EventFileWriter(str(folder))
    for step, value in points:
        summary = summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=tag, simple_value=value)])
        writer.add_event(event_pb2.Event(step=step, wall_time=1.0 + step, summary=summary))
    writer.close()


def test_tensorboard_directory_and_tag(tmp_path):
    pytest.importorskip("tensorboard")
    folder = tmp_path / "tb"
    folder.mkdir()
    _write_events(folder, "eval/accuracy", [(s, 0.1 + s / 1000) for s in range(100, 800, 100)])
    _write_events(folder, "custom/Metric A", [(s, float(s)) for s in range(5)])
    _write_events(folder, "train/lr", [(s, 1e-3) for s in range(5)])           # as `bertcurve train` tags them
    _write_events(folder, "eval/mlm_top5_accuracy", [(s, 0.3) for s in range(5)])
    log = load_log(folder)
    assert log.kind == "tensorboard"
    assert {"lr", "eval_mlm_top5_accuracy", "eval_mlm_accuracy"} <= set(log.series)
    assert log.metric().steps.tolist() == list(range(100, 800, 100))
    assert load_log(folder, tag="custom/Metric A").default_metric() == "custom_metric_a"
    with pytest.raises(UserError, match="tag 'nope' is not in .*eval/accuracy"):
        load_log(folder, tag="nope")


def test_tensorboard_missing_package_says_how_to_install(tmp_path, monkeypatch):
    folder = tmp_path / "tb"
    folder.mkdir()
    (folder / "events.out.tfevents.1.host").write_bytes(b"")
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    monkeypatch.setitem(sys.modules, "tensorboard.backend.event_processing.event_accumulator", None)
    with pytest.raises(UserError, match="pip install tensorboard"):
        load_log(folder)



@settings(max_examples=60, deadline=None)
@given(hs.lists(hs.tuples(hs.integers(0, 30), hs.one_of(hs.floats(allow_nan=True, allow_infinity=True),
                                                        hs.just(float("nan")))), min_size=1, max_size=40))
def test_make_series_invariants(points):
    steps = [p[0] for p in points]
    values = [p[1] for p in points]
    s, _ = make_series(steps, values)
    assert np.all(np.diff(s.steps) > 0)          # sorted, no repeats
    assert np.all(np.isfinite(s.values))
    # each kept step holds the last finite value logged for it
    expected = {}
    for step, value in points:
        if np.isfinite(value):
            expected[step] = value
    assert dict(zip(s.steps.tolist(), s.values.tolist())) == expected
