"""Logs other tools write are read as they are: MLPerf, llm.c / nanoGPT text, W&B exports, Lightning."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bertcurve.curves import policy
from bertcurve.curves.logs import load_log

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "logformats"


def test_mlperf_bert_reads_steps_from_the_eval_lines():
    log = load_log(FIX / "mlperf_bert.txt")
    assert log.kind == "mlperf"
    s = log.metric()
    assert log.default_metric() == "eval_mlm_accuracy"
    assert s.steps.tolist() == [100, 200, 300]
    assert s.values.tolist() == pytest.approx([0.40, 0.55, 0.63])
    assert log.series["eval_loss"].values.tolist() == pytest.approx([3.9, 2.8, 2.2])


def test_mlperf_lm_converts_samples_to_steps_and_says_so():
    log = load_log(FIX / "mlperf_lm.txt")
    s = log.metric()
    assert log.default_metric() == "eval_log_perplexity"
    assert s.steps.tolist() == [100, 200, 300]          # samples / global_batch_size 32
    assert any("global_batch_size (32)" in n for n in log.notes)
    assert policy.direction_of("eval_log_perplexity") == -1
    assert log.series["train_loss"].steps.tolist() == [250]


def test_llmc_key_value_log_ignores_shell_lines():
    log = load_log(FIX / "llmc.log")
    assert log.kind == "key-value-text"
    assert log.default_metric() == "eval_loss"
    assert log.series["eval_loss"].steps.tolist() == [0, 250, 500]
    assert log.series["train_loss"].values.tolist() == pytest.approx([10.9656, 10.8140, 10.5011])
    assert log.series["grad_norm"].values[0] == pytest.approx(15.21)


def test_nanogpt_step_and_iter_lines():
    log = load_log(FIX / "nanogpt.log")
    assert log.series["eval_loss"].steps.tolist() == [0, 250, 500]
    assert log.series["eval_loss"].values.tolist() == pytest.approx([10.9892, 4.2011, 3.81])
    # "iter N: loss X" lines are the training loss; "step N: train loss X" too, at the eval steps
    assert 10 in log.series["train_loss"].steps.tolist()


def test_wandb_history_rows_and_grouped_lists():
    rows = load_log(FIX / "wandb_history.json")
    assert rows.kind == "wandb-export"
    assert rows.series["eval_loss"].steps.tolist() == [0, 200, 300]
    assert "lr" in rows.series and "_runtime" not in rows.series
    grouped = load_log(FIX / "wandb_groups.json")
    val = grouped.series["eval_loss"]
    assert val.steps.tolist() == [0, 200, 400]          # unsorted, repeated 200: sorted, last kept
    assert val.values.tolist() == pytest.approx([10.9, 6.1, 5.4])
    assert grouped.series["lr"].values[-1] == pytest.approx(0.001)


def test_wandb_csv_and_lightning_metrics_csv():
    w = load_log(FIX / "wandb_export.csv", metric_col="run-1 - eval/loss")
    assert w.metric().values.tolist() == pytest.approx([9.9, 4.5, 4.1])
    assert policy.direction_of(w.default_metric()) == -1
    lt = load_log(FIX / "lightning_metrics.csv")
    assert lt.series["val_loss"].steps.tolist() == [99, 199]
    assert lt.series["train_loss_step"].steps.tolist() == [49, 99, 149, 199]
    assert policy.direction_of("val_acc") == 1


def test_camel_case_loss_column_is_a_loss_everywhere(tmp_path):
    log = load_log(FIX / "EvalLoss.tsv")
    name = log.default_metric()
    assert policy.direction_of(name, log.metric().steps, log.metric().values) == -1
    assert policy.limits_for("EvalLoss").lower == 0.0


def test_unknown_text_log_error_names_no_shell_line_as_a_column(tmp_path):
    from bertcurve.errors import UserError

    bad = tmp_path / "out.log"
    bad.write_text("+ python train.py\nstarting\nthis is not a metrics log\n", encoding="utf-8")
    with pytest.raises(UserError) as err:
        load_log(bad)
    assert "--step-col" not in str(err.value) and "python train.py" not in str(err.value)


def test_a_txt_that_is_neither_table_nor_log_says_so(tmp_path):
    from bertcurve.errors import UserError

    bad = tmp_path / "result.txt"
    bad.write_text("+ python train.py --lr 3e-4\nhello\n", encoding="utf-8")
    with pytest.raises(UserError, match="neither a CSV/TSV table") as err:
        load_log(bad)
    assert "columns" not in str(err.value)


def test_trainer_state_epoch_on_train_and_eval_entries_is_not_a_repeated_step(tmp_path):
    import json

    history = []
    for step in range(10, 110, 10):
        history.append({"step": step, "epoch": step / 100, "loss": 3 - step / 100})
        history.append({"step": step, "epoch": step / 100, "eval_loss": 3.1 - step / 100})
    path = tmp_path / "trainer_state.json"
    path.write_text(json.dumps({"log_history": history}), encoding="utf-8")
    log = load_log(path)
    assert not any("repeated" in n for n in log.notes)
    assert len(log.series["epoch"]) == 10
