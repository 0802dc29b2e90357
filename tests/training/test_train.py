"""`bertcurve train` end to end on real Chinese text with the tiny preset."""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import pytest

from bertcurve import layout
from bertcurve.cli import main
from bertcurve.errors import UserError
from bertcurve.training.metrics_log import read_records
from bertcurve.stages.train import train
from bertcurve.training.trainer import inject_faults


@pytest.fixture(scope="module")
def tiny_run(tiny_data_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("train") / "run"
    result = train(tiny_data_dir, out, preset="tiny", quiet=True)
    assert result.completed and result.step == 40
    return out


def test_metrics_follow_the_contract(tiny_run):
    records = list(read_records(tiny_run / layout.METRICS))
    assert all(r["format"] == layout.METRICS_FORMAT for r in records)
    train_recs = [r for r in records if r["split"] == "train"]
    eval_recs = [r for r in records if r["split"] == "eval"]
    assert [r["step"] for r in train_recs] == list(range(1, 41))
    assert [r["step"] for r in eval_recs] == [0, 10, 20, 30, 40]
    for r in train_recs:
        for key in ("loss", "mlm_accuracy", "lr", "grad_norm", "tokens_seen", "elapsed_s",
                    "tokens_per_s"):
            assert isinstance(r[key], (int, float)) and math.isfinite(r[key]), key
        assert 0.0 <= r["mlm_accuracy"] <= 1.0
    for r in eval_recs:
        n, acc = r["masked_tokens"], r["mlm_accuracy"]
        assert n >= 200
        assert r["mlm_top5_accuracy"] >= acc
        assert r["mlm_accuracy_se"] == pytest.approx(math.sqrt(acc * (1 - acc) / n))
        assert 0.0 <= r["mlm_accuracy_at_mask"] <= 1.0
    # Fixed eval set: the same number of masked tokens every time; loss falls with training.
    assert len({r["masked_tokens"] for r in eval_recs}) == 1
    assert eval_recs[-1]["loss"] < eval_recs[0]["loss"]
    tokens = [r["tokens_seen"] for r in train_recs]
    assert tokens == sorted(tokens) and tokens[0] > 0


def test_run_dir_layout_and_checkpoints(tiny_run):
    cfg = json.loads((tiny_run / layout.RUN_CONFIG).read_text())
    assert cfg["format"] == layout.RUN_CONFIG_FORMAT
    assert cfg["train"]["model"]["hidden_size"] == 32
    assert cfg["parameters"] > 0 and cfg["eval_set"]["fingerprint"]
    steps = sorted(layout.checkpoint_step(p) for p in (tiny_run / layout.CHECKPOINTS_DIR).iterdir())
    assert steps == [30, 40]  # keep = 2
    meta = json.loads((tiny_run / layout.CHECKPOINTS_DIR / "step-00000040" / layout.CKPT_META).read_text())
    assert meta["format"] == layout.CKPT_META_FORMAT and meta["step"] == 40
    assert meta["config"] == cfg["train"]
    assert set(meta["files"]) >= {layout.CKPT_WEIGHTS, layout.CKPT_TRAINING_STATE}
    assert meta["micro_batches"] == 40 * 2


def test_final_model_loads_offline_with_transformers(tiny_run, monkeypatch):
    from transformers import AutoModelForMaskedLM, AutoTokenizer, pipeline

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    final = tiny_run / layout.FINAL_MODEL_DIR
    model = AutoModelForMaskedLM.from_pretrained(final)
    tok = AutoTokenizer.from_pretrained(final)
    assert model.config.vocab_size == len(tok)
    fill = pipeline("fill-mask", model=str(final), tokenizer=str(final), device="cpu")
    out = fill("今天天气很[MASK]。", top_k=3)
    assert len(out) == 3 and all(isinstance(o["token_str"], str) for o in out)
    # A checkpoint folder loads the same way.
    AutoModelForMaskedLM.from_pretrained(tiny_run / layout.CHECKPOINTS_DIR / "step-00000040")


def test_model_windows_texts_at_the_trained_length(tiny_run):
    # tiny trains on 32-token sequences of a 64-position model: positions 32..63 are
    # untrained, so the saved tokenizer and fill-mask stop at 32 tokens.
    from transformers import AutoTokenizer

    from bertcurve.inference import load_masked_lm

    final = tiny_run / layout.FINAL_MODEL_DIR
    assert AutoTokenizer.from_pretrained(final).model_max_length == 32
    assert load_masked_lm(tiny_run).max_length == 32
    assert load_masked_lm(tiny_run, step=30).max_length == 32


def test_eval_set_is_identical_across_runs(tiny_data_dir, tiny_run):
    from bertcurve.training.batches import SpecialIds, build_eval_set, make_examples
    from bertcurve.data.datadir import DataDir

    dd = DataDir(tiny_data_dir)
    sp = SpecialIds.from_tokenizer(dd.tokenizer())
    ex = make_examples(dd.split("val"), seq_len=32, special=sp, whole_word=False, nsp=False)
    a = build_eval_set(ex, eval_tokens=200, mask_prob=0.15, eval_seed=20251017, batch_size=32)
    b = build_eval_set(ex, eval_tokens=200, mask_prob=0.15, eval_seed=20251017, batch_size=32)
    c = build_eval_set(ex, eval_tokens=200, mask_prob=0.15, eval_seed=1, batch_size=32)
    assert a.fingerprint == b.fingerprint != c.fingerprint
    saved = json.loads((tiny_run / layout.RUN_CONFIG).read_text())["eval_set"]
    assert saved["fingerprint"] == a.fingerprint  # the run scored exactly this set


def test_training_mask_rate_does_not_change_the_eval_set(tiny_data_dir, tiny_run, tmp_path):
    # Runs trained at different masking rates must be scored on the same held-out task.
    out = tmp_path / "m40"
    train(tiny_data_dir, out, preset="tiny", overrides={"mask_prob": 0.4, "max_steps": 2, "warmup_steps": 1},
          quiet=True)
    cfg = json.loads((out / layout.RUN_CONFIG).read_text())
    assert cfg["train"]["data"]["mask_prob"] == 0.4 and cfg["train"]["eval"]["mask_prob"] == 0.15
    saved = json.loads((tiny_run / layout.RUN_CONFIG).read_text())["eval_set"]
    assert cfg["eval_set"]["fingerprint"] == saved["fingerprint"]


def test_nan_loss_stops_with_clear_message_and_keeps_checkpoint(tiny_data_dir, tmp_path, nan_loss_from_step_13):
    out = tmp_path / "nan"
    with pytest.raises(UserError, match=r"loss became nan at step 13.*step-00000010"):
        train(tiny_data_dir, out, preset="tiny", quiet=True)
    assert [p.name for p in (out / layout.CHECKPOINTS_DIR).iterdir()] == ["step-00000010"]
    assert not (out / layout.FINAL_MODEL_DIR).exists()
    assert max(r["step"] for r in read_records(out / layout.METRICS)) == 12


def test_resume_refuses_other_shape_or_tokenizer(tiny_data_dir, tiny_run, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(tiny_run, out)
    with pytest.raises(UserError, match="different model shape"):
        train(tiny_data_dir, out, preset="tiny", overrides={"hidden_size": 48}, quiet=True)
    other = tmp_path / "data"
    shutil.copytree(tiny_data_dir, other)
    vocab = other / layout.VOCAB_TXT
    vocab.write_text(vocab.read_text(encoding="utf-8").replace("的", "地", 1), encoding="utf-8")
    with pytest.raises(UserError, match="different tokenizer"):
        train(other, out, preset="tiny", quiet=True)


def test_second_writer_is_refused_and_stale_lock_taken_over(tiny_data_dir, tiny_run, tmp_path, capsys):
    from bertcurve.training.checkpoint import RunLock

    out = tmp_path / "locked"
    shutil.copytree(tiny_run, out)
    with RunLock(out):
        with pytest.raises(UserError, match=f"in use by process {os.getpid()}"):
            train(tiny_data_dir, out, quiet=True)
    # A lock file left by a dead process (no flock held) is taken over with a warning.
    (out / layout.LOCK_FILE).write_text('{"pid": 999999, "host": "x"}')
    result = train(tiny_data_dir, out, quiet=True)
    assert result.completed
    assert "stale lock of process 999999" in capsys.readouterr().err


def test_cli_errors_are_one_line(tiny_data_dir, tmp_path, capsys):
    code = main(["train", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "not a prepared data directory" in err
    code = main(["train", "--data", str(tiny_data_dir), "--out", str(tmp_path / "r"),
                 "--preset", "tiny", "--lr", "-1", "--heads", "3", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "optim.lr" in err and "divisible" in err


def test_ctrl_c_saves_a_checkpoint_and_resume_finishes(tiny_data_dir, tiny_run, tmp_path, capsys):
    import signal

    def press_ctrl_c(where, step):
        if where == "after-backward" and step == 13:
            os.kill(os.getpid(), signal.SIGINT)

    out = tmp_path / "ctrlc"
    with inject_faults(press_ctrl_c):
        result = train(tiny_data_dir, out, preset="tiny")
    assert not result.completed and result.step == 13
    assert "interrupted: checkpoint saved at step 13/40" in capsys.readouterr().out
    assert (out / layout.CHECKPOINTS_DIR / "step-00000013").is_dir()
    assert not (out / layout.FINAL_MODEL_DIR).exists()
    finished = train(tiny_data_dir, out, quiet=True)
    assert finished.completed and finished.resumed_from == 13
    # Interrupting and resuming changes nothing in the result.
    from safetensors.torch import load_file

    a = load_file(str(tiny_run / layout.FINAL_MODEL_DIR / "model.safetensors"))
    b = load_file(str(out / layout.FINAL_MODEL_DIR / "model.safetensors"))
    assert all(bool((a[k] == b[k]).all()) for k in a)


@pytest.mark.parametrize("option", ["nsp", "whole_word"])
def test_nsp_and_whole_word_runs(tiny_data_dir, tmp_path, option):
    out = tmp_path / option
    result = train(tiny_data_dir, out, preset="tiny", quiet=True,
                   overrides={f"data.{option}": True, "max_steps": 6, "eval_every": 3,
                              "save_every": 6})
    assert result.completed
    records = list(read_records(out / layout.METRICS))
    train_recs = [r for r in records if r["split"] == "train"]
    eval_recs = [r for r in records if r["split"] == "eval"]
    if option == "nsp":
        assert all(0.0 <= r["nsp_accuracy"] <= 1.0 for r in train_recs)
        assert all("nsp_accuracy" in r for r in eval_recs)
        cfg = json.loads((out / layout.FINAL_MODEL_DIR / "config.json").read_text())
        assert cfg["architectures"] == ["BertForPreTraining"]
        from transformers import AutoModelForMaskedLM

        AutoModelForMaskedLM.from_pretrained(out / layout.FINAL_MODEL_DIR)
    else:
        assert all("nsp_accuracy" not in r for r in records)
        assert json.loads((out / layout.RUN_CONFIG).read_text())["train"]["data"]["whole_word"]


def test_forward_counts_hits_at_mask_inputs_apart():
    import numpy as np
    import torch

    from bertcurve.training.batches import SpecialIds, collate
    from bertcurve.training.config import ModelConfig
    from bertcurve.training.masking import IGNORE_INDEX
    from bertcurve.training.model import build_model, forward

    sp = SpecialIds(pad=0, cls=2, sep=3, mask=4, first_regular=5, vocab_size=40)
    rows = [np.array([2] + list(range(5, 35)) + [3]) for _ in range(8)]
    batch = collate(rows, sp, mask_prob=0.3, generator=torch.Generator().manual_seed(0))
    net = build_model(ModelConfig(hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32,
                                  max_position_embeddings=64), 40).eval()
    with torch.no_grad():
        out = forward(net, batch, topk=True, mask_id=sp.mask)
    selected = batch.labels != IGNORE_INDEX
    assert int(out.at_mask) == int((batch.input_ids[selected] == sp.mask).sum()) > 0
    assert 0 <= int(out.at_mask_correct) <= int(out.mlm_correct)
    # where the input shows the answer, copying it scores: the split is what tells them apart
    assert int(out.at_mask) < out.n_masked
