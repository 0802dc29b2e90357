"""`train --init-from DIR`: continued pretraining from a Hugging Face BERT masked-LM directory."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch

from bertcurve import layout
from bertcurve.cli import main
from bertcurve.stages.train import train

QUICK = ["--max-steps", "4", "--warmup-steps", "1", "--eval-every", "2", "--save-every", "2"]


def _evals(run_dir: Path) -> dict[int, dict]:
    rows = [json.loads(line) for line in (run_dir / layout.METRICS).read_text().splitlines()]
    return {r["step"]: r for r in rows if r.get("split") == "eval"}


@pytest.fixture(scope="module")
def hf_bert(tiny_data_dir, tmp_path_factory) -> Path:
    """A small BERT saved by plain transformers, with the data dir's tokenizer (as a user's model would be)."""
    from transformers import AutoTokenizer, BertConfig, BertForMaskedLM

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_data_dir))
    torch.manual_seed(3)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=48, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=96, max_position_embeddings=64)
    path = tmp_path_factory.mktemp("hf") / "small-zh-bert"
    model = BertForMaskedLM(config)
    model.config.architectures = ["BertForMaskedLM"]
    model.save_pretrained(str(path))
    tokenizer.save_pretrained(str(path))
    return path


def test_a_hugging_face_bert_gives_its_shape_and_weights(hf_bert, tiny_data_dir, tmp_path):
    out = tmp_path / "adapted"
    assert main(["train", "--data", str(tiny_data_dir), "--out", str(out), "--preset", "tiny",
                 "--init-from", str(hf_bert), "--quiet", *QUICK]) == 0
    cfg = json.loads((out / layout.RUN_CONFIG).read_text())
    model = cfg["train"]["model"]
    assert (model["hidden_size"], model["intermediate_size"], model["max_position_embeddings"]) == (48, 96, 64)
    assert cfg["init_from"]["name"] == "small-zh-bert"
    final = json.loads((out / layout.FINAL_MODEL_DIR / "config.json").read_text())
    assert final["hidden_size"] == 48 and final["architectures"] == ["BertForMaskedLM"]
    # the word embeddings started as the saved model's: training moved them only a little
    from safetensors.torch import load_file

    before = load_file(str(hf_bert / "model.safetensors"))["bert.embeddings.word_embeddings.weight"]
    after = load_file(str(out / layout.FINAL_MODEL_DIR / "model.safetensors"))["bert.embeddings.word_embeddings.weight"]
    fresh = torch.nn.init.normal_(torch.empty_like(before), std=0.02)
    assert (after - before).norm() < 0.5 * (fresh - before).norm()


def test_continuing_a_trained_model_starts_at_its_held_out_accuracy(tiny_data_dir, tmp_path):
    first = tmp_path / "first"
    train(tiny_data_dir, first, preset="tiny", overrides={"max_steps": 12, "eval_every": 6, "save_every": 12},
          quiet=True)
    second = tmp_path / "second"
    assert main(["train", "--data", str(tiny_data_dir), "--out", str(second), "--preset", "tiny",
                 "--init-from", str(first / layout.FINAL_MODEL_DIR), "--quiet", *QUICK]) == 0
    end_of_first, start_of_second = _evals(first)[12], _evals(second)[0]
    # same eval set, same weights: the same numbers
    assert start_of_second["mlm_accuracy"] == pytest.approx(end_of_first["mlm_accuracy"], abs=1e-9)
    assert start_of_second["loss"] == pytest.approx(end_of_first["loss"], rel=1e-5)
    # a resumed continued run rebuilds the same network without --init-from
    assert main(["train", "--data", str(tiny_data_dir), "--out", str(second), "--max-steps", "6",
                 "--quiet"]) == 0
    assert max(_evals(second)) == 6
    assert json.loads((second / layout.RUN_CONFIG).read_text())["init_from"]["name"] == layout.FINAL_MODEL_DIR


def _variant(hf_bert: Path, tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    shutil.copytree(hf_bert, path)
    return path


def _edit_json(path: Path, **changes) -> None:
    obj = json.loads(path.read_text(encoding="utf-8"))
    obj.update(changes)
    path.write_text(json.dumps(obj, ensure_ascii=False), encoding="utf-8")


def _swap_two_tokens(model_dir: Path) -> None:
    tok = json.loads((model_dir / "tokenizer.json").read_text(encoding="utf-8"))
    vocab = tok["model"]["vocab"]
    a, b = sorted(vocab, key=vocab.get)[10:12]
    vocab[a], vocab[b] = vocab[b], vocab[a]
    (model_dir / "tokenizer.json").write_text(json.dumps(tok, ensure_ascii=False), encoding="utf-8")
    if (model_dir / layout.VOCAB_TXT).is_file():
        lines = (model_dir / layout.VOCAB_TXT).read_text(encoding="utf-8").split("\n")
        lines[10], lines[11] = lines[11], lines[10]
        (model_dir / layout.VOCAB_TXT).write_text("\n".join(lines), encoding="utf-8")


def test_models_that_do_not_fit_are_refused_with_a_reason(hf_bert, tiny_data_dir, tmp_path, capsys):
    cases: list[tuple[Path, list[str], str]] = []
    other_vocab = _variant(hf_bert, tmp_path, "other-vocab")
    _swap_two_tokens(other_vocab)
    cases.append((other_vocab, [], "vocabulary .* is not the data dir's .*--tokenizer"))
    bare = _variant(hf_bert, tmp_path, "bare")
    _edit_json(bare / "config.json", architectures=["BertModel"])
    cases.append((bare, [], "BertModel is not a BERT masked language model"))
    relu = _variant(hf_bert, tmp_path, "relu")
    _edit_json(relu / "config.json", hidden_act="relu")
    cases.append((relu, [], "hidden_act is 'relu'"))
    pickled = _variant(hf_bert, tmp_path, "pickled")
    (pickled / "model.safetensors").rename(pickled / "pytorch_model.bin")
    cases.append((pickled, [], "no .safetensors weights"))
    no_tok = _variant(hf_bert, tmp_path, "no-tokenizer")
    for name in ("tokenizer.json", "tokenizer_config.json", layout.VOCAB_TXT, "special_tokens_map.json"):
        (no_tok / name).unlink(missing_ok=True)
    cases.append((no_tok, [], "no tokenizer files"))
    cases.append((tmp_path, [], "no config.json"))
    cases.append((hf_bert, ["--hidden-size", "64"], "shape comes from its config.json; drop model.hidden_size"))
    cases.append((hf_bert, ["--seq-len", "128"], "seq_len .*exceeds model.max_position_embeddings"))
    for n, (model_dir, extra, reason) in enumerate(cases):
        out = tmp_path / f"run{n}"
        code = main(["train", "--data", str(tiny_data_dir), "--out", str(out), "--preset", "tiny",
                     "--init-from", str(model_dir), *extra])
        err = capsys.readouterr().err
        assert code == 2 and len(err.strip().splitlines()) == 1, err
        assert re.search(reason, err), (reason, err)
        assert not (out / layout.METRICS).exists()


def test_domain_adaptation_workflow_from_the_cli(hf_bert, demo_text_file, tmp_path):
    """README's workflow: tokenize a new corpus with the model's tokenizer, continue, analyse, export."""
    data = tmp_path / "reviews"
    assert main(["prepare", str(demo_text_file), "--tokenizer", str(hf_bert), "--out", str(data),
                 "--val-fraction", "0.2", "--quiet"]) == 0
    run = tmp_path / "adapted"
    assert main(["train", "--data", str(data), "--out", str(run), "--preset", "tiny", "--init-from", str(hf_bert),
                 "--quiet", "--max-steps", "8", "--warmup-steps", "1", "--eval-every", "1", "--save-every", "4"]) == 0
    assert len(_evals(run)) == 9
    assert main(["analyze", str(run)]) == 0
    analysis = json.loads((run / "analysis.json").read_text(encoding="utf-8"))
    assert analysis["format"].startswith("bertcurve.analysis/")
    out = tmp_path / "hf-adapted"
    assert main(["export", str(run), "--out", str(out), "--license", "apache-2.0"]) == 0
    card = (out / "README.md").read_text(encoding="utf-8")
    assert "continued from `small-zh-bert`" in card and "license: apache-2.0" in card
