"""bertcurve fill-mask: predictions, batching, multi-mask modes, bad input, CLI."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from bertcurve import layout
from bertcurve.cli import main
from bertcurve.errors import UserError
from bertcurve.stages.fillmask import fill_mask, read_texts
from bertcurve.inference import length_buckets, load_masked_lm, mask_logits
from bertcurve.training.config import RunConfig, build_config

TEXT = "今天天气很好，我们去公园散步。北京是中国的首都，人民生活幸福。"


def make_tokenizer_dir(path: Path, max_positions: int = 64) -> Path:
    """A real character tokenizer (the one `prepare` writes) over the characters of TEXT."""
    from bertcurve.data.vocab import build_vocabulary, count_codepoints, save_tokenizer

    counts = np.zeros(0x110000, dtype=np.int64)
    count_codepoints(TEXT, counts)
    path.mkdir(parents=True, exist_ok=True)
    save_tokenizer(build_vocabulary(counts), path, model_max_length=max_positions)
    return path


def make_model(vocab_size: int, max_positions: int = 64, seed: int = 0, tied: bool = True):
    from transformers import BertConfig, BertForMaskedLM

    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=max_positions,
                     tie_word_embeddings=tied, pad_token_id=0)
    net = BertForMaskedLM(cfg)
    # random init gives near-uniform predictions; sharpen them so top-k order is meaningful
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(8.0 if p.dim() > 1 else 1.0)
    return net.eval()


def make_hf_dir(path: Path, max_positions: int = 64, seed: int = 0) -> Path:
    from transformers import AutoTokenizer

    make_tokenizer_dir(path, max_positions)
    tok = AutoTokenizer.from_pretrained(str(path))
    make_model(len(tok), max_positions, seed).save_pretrained(str(path))
    return path


def make_run_dir(path: Path, data_dir: Path, steps: tuple[int, ...] = (10, 20), final: bool = True,
                 evals: dict[int, float] | None = None) -> Path:
    """A run dir laid out exactly as `bertcurve train` writes it (see docs/run-dir.md).

    Checkpoints are save_pretrained folders (config.json + model.safetensors)
    with checkpoint.json; final/ holds the last checkpoint's weights and the
    data dir's tokenizer files. Weights are random (seeded per step): real
    training is tested by the train stage and takes too long here.
    """
    import shutil

    from transformers import AutoTokenizer

    path.mkdir(parents=True)
    vocab = len(AutoTokenizer.from_pretrained(str(data_dir)))
    max_steps = steps[-1]
    train = build_config("tiny", overrides={"max_steps": max_steps, "warmup_steps": 0})
    saved = RunConfig(train=train, preset="tiny", data_dir=str(Path(data_dir).resolve()), vocab_size=vocab)
    (path / layout.RUN_CONFIG).write_text(json.dumps(saved.to_dict()))
    evals = evals if evals is not None else {s: 0.05 + 0.01 * n for n, s in enumerate(steps)}
    with open(path / layout.METRICS, "w", encoding="utf-8") as log:
        for step, acc in sorted(evals.items()):
            log.write(json.dumps({"format": layout.METRICS_FORMAT, "step": step, "split": "train",
                                  "loss": 7.0, "mlm_accuracy": acc - 0.01}) + "\n")
            log.write(json.dumps({"format": layout.METRICS_FORMAT, "step": step, "split": "eval",
                                  "loss": 6.5, "mlm_accuracy": acc, "mlm_top5_accuracy": acc + 0.1,
                                  "mlm_accuracy_se": 0.01, "masked_tokens": 2000}) + "\n")
    for step in steps:
        ck = path / layout.CHECKPOINTS_DIR / layout.checkpoint_dir_name(step)
        make_model(vocab, seed=step).save_pretrained(str(ck))
        (ck / layout.CKPT_META).write_text(json.dumps({"format": layout.CKPT_META_FORMAT, "step": step}))
    if final:
        make_model(vocab, seed=steps[-1]).save_pretrained(str(path / layout.FINAL_MODEL_DIR))
        for name in ("tokenizer.json", "tokenizer_config.json", layout.VOCAB_TXT):
            shutil.copy2(data_dir / name, path / layout.FINAL_MODEL_DIR / name)
    return path


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory) -> Path:
    return make_hf_dir(tmp_path_factory.mktemp("hf") / "model")


@pytest.fixture(scope="module")
def lm(hf_dir):
    return load_masked_lm(hf_dir, device="cpu")


def full_forward_probs(lm, text: str) -> torch.Tensor:
    """Reference: the whole model on one unpadded text, softmax at its masks."""
    enc = lm.tokenizer(text, return_tensors="pt")
    with torch.no_grad():
        logits = lm.model(**{k: v for k, v in enc.items() if k != "token_type_ids"}).logits[0]
    pos = (enc["input_ids"][0] == lm.tokenizer.mask_token_id).nonzero().flatten()
    return torch.softmax(logits[pos], -1)


def test_probabilities_match_full_model_forward(lm):
    text = "今天天气很[MASK]，我们去公园[MASK]步。"
    res = fill_mask(lm, text, top_k=5)[0]
    ref = full_forward_probs(lm, text)
    assert len(res.masks) == 2
    for m, row in zip(res.masks, ref):
        top = torch.topk(row, 5)
        assert [c.token_id for c in m.candidates] == top.indices.tolist()
        np.testing.assert_allclose([c.probability for c in m.candidates], top.values.numpy(), rtol=1e-4)
        assert all(a.probability >= b.probability for a, b in zip(m.candidates, m.candidates[1:]))


def test_batched_by_length_equals_one_by_one(lm):
    texts = ["今[MASK]。", "北京是中国的[MASK]都，人民生活幸福。", "我们去公园散[MASK]。", "天[MASK]很好"]
    together = fill_mask(lm, texts, top_k=3, batch_size=3)
    alone = [fill_mask(lm, t, top_k=3, batch_size=1)[0] for t in texts]
    for a, b in zip(together, alone):
        assert a.text == b.text
        assert [c.token_id for c in a.masks[0].candidates] == [c.token_id for c in b.masks[0].candidates]
        np.testing.assert_allclose([c.probability for c in a.masks[0].candidates],
                                   [c.probability for c in b.masks[0].candidates], rtol=1e-4, atol=1e-6)


def test_filled_text_has_no_spaces_and_keeps_the_rest(lm):
    res = fill_mask(lm, "北京 是[MASK]国的首都。", top_k=2)[0]
    fill = res.masks[0].best.token
    assert res.filled == f"北京 是{fill}国的首都。"
    assert " " not in fill and "#" not in fill
    assert res.masks[0].start == 4 and res.masks[0].end == 10


def test_iterative_fills_every_mask_in_confidence_order(lm):
    text = "今天[MASK][MASK]很好。"
    res = fill_mask(lm, text, top_k=3, iterative=True)[0]
    assert sorted(m.fill_order for m in res.masks) == [0, 1]
    first = min(res.masks, key=lambda m: m.fill_order)
    # the first filled mask is the more confident one in the independent pass
    indep = fill_mask(lm, text, top_k=3)[0]
    best = max(range(2), key=lambda j: indep.masks[j].best.probability)
    assert first.start == indep.masks[best].start
    assert first.candidates == indep.masks[best].candidates
    # the second was predicted with the first filled in: equal to predicting that text
    second = max(res.masks, key=lambda m: m.fill_order)
    partly = text[: first.start] + first.best.token + text[first.end:]
    ref = fill_mask(lm, partly, top_k=3)[0].masks[0]
    assert [c.token_id for c in second.candidates] == [c.token_id for c in ref.candidates]
    assert "[MASK]" not in res.filled


def test_unknown_characters_are_reported(lm):
    res = fill_mask(lm, "今天[MASK]气☃很好𠀀。", top_k=1)[0]
    assert res.unknown == ("☃", "𠀀")
    assert any("[UNK]" in w and "☃" in w for w in res.warnings)


def test_long_text_is_cut_around_the_mask(lm):
    body = "我们去公园散步。" * 30  # 240 characters > 64 positions
    text = body + "北京是中国的[MASK]都。" + body
    res = fill_mask(lm, text, top_k=2)[0]
    assert res.kept is not None
    lo, hi = res.kept
    assert lo <= text.index("[MASK]") and text.index("[MASK]") + 6 <= hi
    assert hi - lo < len(text)
    assert res.warnings and "62" in res.warnings[-1]
    assert res.filled.startswith(body) and res.filled.endswith(body)  # the output keeps the whole text


def test_masks_too_far_apart_is_one_clear_error(lm):
    with pytest.raises(UserError, match="further apart"):
        fill_mask(lm, "[MASK]" + "好" * 100 + "[MASK]")


def test_text_without_mask_is_an_error_naming_it(lm):
    with pytest.raises(UserError, match=r"text 2 .*今天天气很好"):
        fill_mask(lm, ["今[MASK]", "今天天气很好。"])


def test_length_buckets_group_similar_lengths():
    lengths = [5, 50, 6, 49, 7, 48]
    batches = length_buckets(lengths, batch_size=2)
    assert sorted(i for b in batches for i in b) == list(range(6))
    assert [sorted(lengths[i] for i in b) for b in batches] == [[49, 50], [7, 48], [5, 6]]
    assert all(len(b) <= 2 for b in length_buckets(lengths, 4, max_tokens=100))


def test_mask_logits_gathers_the_same_rows_as_full_logits(lm):
    tok = lm.tokenizer
    enc = tok(["今天[MASK]气", "北[MASK]是中国的首[MASK]"], padding=True, return_tensors="pt")
    rows, cols = (enc["input_ids"] == tok.mask_token_id).nonzero(as_tuple=True)
    with torch.no_grad():
        fast = mask_logits(lm, enc["input_ids"], enc["attention_mask"], rows, cols)
        full = lm.model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits[rows, cols]
    torch.testing.assert_close(fast, full, rtol=1e-4, atol=1e-4)


def test_int8_quantization_stays_close(hf_dir, lm):
    q = load_masked_lm(hf_dir, quantize="int8", device="cpu")
    assert any("quantized" in type(m).__module__ for m in q.model.modules())
    texts = ["今天天气很[MASK]。", "北京是中国的[MASK]都。"]
    for a, b in zip(fill_mask(q, texts, top_k=5), fill_mask(lm, texts, top_k=5)):
        ids_a = {c.token_id for c in a.masks[0].candidates}
        ids_b = {c.token_id for c in b.masks[0].candidates}
        assert len(ids_a & ids_b) >= 3


def test_run_dir_final_and_checkpoint_steps(tmp_path, tiny_data_dir):
    run = make_run_dir(tmp_path / "run", tiny_data_dir)
    final = load_masked_lm(run, device="cpu")
    ck20 = load_masked_lm(run, step=20, device="cpu")
    ck10 = load_masked_lm(run, step=10, device="cpu")
    assert ck20.step == 20 and final.step == 20
    text = "今天天气很[MASK]。"
    def probs(lm):
        return [c.probability for c in fill_mask(lm, text)[0].masks[0].candidates]

    # final was saved from the same weights as step 20 (same seed), not as step 10
    np.testing.assert_allclose(probs(final), probs(ck20), rtol=1e-5)
    assert not np.allclose(probs(final), probs(ck10), rtol=1e-3)
    # a checkpoint folder given directly
    direct = load_masked_lm(run / layout.CHECKPOINTS_DIR / layout.checkpoint_dir_name(10), device="cpu")
    assert direct.step == 10
    with pytest.raises(UserError, match="no checkpoint for step 15.*10, 20"):
        load_masked_lm(run, step=15)


def test_run_without_final_model_points_to_steps(tmp_path, tiny_data_dir):
    run = make_run_dir(tmp_path / "run", tiny_data_dir, steps=(10,), final=False)
    with pytest.raises(UserError, match="no final model.*steps 10.*--step"):
        load_masked_lm(run)
    assert load_masked_lm(run, step=10, device="cpu").step == 10


def test_paths_without_a_model(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_masked_lm(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="holds no model"):
        load_masked_lm(tmp_path / "empty")


def test_read_texts_from_args_file_and_stdin(tmp_path):
    f = tmp_path / "in.txt"
    f.write_text("第一[MASK]\n\n第二[MASK]\r\n", encoding="utf-8")
    stdin = io.StringIO("第三[MASK]\n")
    assert read_texts(["零[MASK]", "-"], str(f), stdin) == ["零[MASK]", "第三[MASK]", "第一[MASK]", "第二[MASK]"]
    with pytest.raises(UserError, match="does not exist"):
        read_texts([], str(tmp_path / "missing.txt"), io.StringIO(""))


def test_cli_text_and_json(hf_dir, capsys):
    assert main(["fill-mask", str(hf_dir), "今天天气很[MASK]。", "--top-k", "3"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "今天天气很[MASK]。"
    assert out.splitlines()[1].startswith("  → 今天天气很")
    assert main(["fill-mask", str(hf_dir), "今天[MASK]气很[MASK]。", "--json", "--top-k", "2"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["format"] == "bertcurve.fill-mask/1" and doc["mode"] == "independent"
    res = doc["results"][0]
    assert len(res["masks"]) == 2 and len(res["masks"][0]["candidates"]) == 2
    assert set(res["masks"][0]["candidates"][0]) == {"token", "token_id", "probability"}


def test_cli_bad_input_is_one_line(hf_dir, tmp_path, capsys):
    for argv in (["fill-mask", str(hf_dir), "没有面具"],
                 ["fill-mask", str(tmp_path), "今天[MASK]"],
                 ["fill-mask", str(hf_dir), "今[MASK]", "--step", "3"],
                 ["fill-mask", str(hf_dir), "今[MASK]", "--top-k", "0"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("bertcurve: error: ") and len(err.strip().splitlines()) == 1, err


def test_pretraining_model_with_nsp_head_loads_as_masked_lm(tmp_path, lm):
    """Runs trained with --nsp save BertForPreTraining; its MLM part must predict the same."""
    from transformers import BertForPreTraining

    pre = BertForPreTraining(lm.model.config)
    missing, _ = pre.load_state_dict(lm.model.state_dict(), strict=False)
    assert all("seq_relationship" in k or "pooler" in k for k in missing)
    pre.save_pretrained(str(tmp_path / "pre"))
    lm.tokenizer.save_pretrained(str(tmp_path / "pre"))
    text = "北京是中国的[MASK]都。"
    a = fill_mask(tmp_path / "pre", text)[0].masks[0].candidates
    b = fill_mask(lm, text)[0].masks[0].candidates
    assert [c.token_id for c in a] == [c.token_id for c in b]


def test_model_missing_mlm_weights_is_refused(tmp_path, lm):
    from transformers import BertModel

    BertModel(lm.model.config).save_pretrained(str(tmp_path / "enc"))
    lm.tokenizer.save_pretrained(str(tmp_path / "enc"))
    with pytest.raises(UserError, match="not a masked-LM"):
        load_masked_lm(tmp_path / "enc")


@pytest.mark.gpu
def test_cuda_predictions_match_cpu(hf_dir, lm):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    gpu = load_masked_lm(hf_dir, device="cuda")
    texts = ["今天天气很[MASK]。", "北京是中国的[MASK]都，人民生活幸福。"]
    for a, b in zip(fill_mask(gpu, texts), fill_mask(lm, texts)):
        np.testing.assert_allclose([c.probability for c in a.masks[0].candidates],
                                   [c.probability for c in b.masks[0].candidates], rtol=1e-3, atol=1e-5)


@pytest.mark.slow
def test_end_to_end_on_a_real_training_run(tmp_path, tiny_data_dir, capsys):
    """train (tiny, a few steps) -> fill-mask on final and a checkpoint -> export -> pipeline."""
    from transformers import pipeline

    from bertcurve.stages.export import export
    from bertcurve.stages.train import train

    run = tmp_path / "run"
    train(tiny_data_dir, run, preset="tiny", overrides={"max_steps": 4, "warmup_steps": 1, "eval_every": 2, "save_every": 2},
          quiet=True)
    final = fill_mask(run, "今天天气很[MASK]。", top_k=3)[0]
    assert len(final.masks[0].candidates) == 3
    assert main(["fill-mask", str(run), "--step", "2", "北京是中国的[MASK]都。", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["step"] == 2
    out = export(run, tmp_path / "exported")
    theirs = pipeline("fill-mask", model=str(out), device="cpu")("今天天气很[MASK]。", top_k=3)
    assert [c["token"] for c in theirs] == [c.token_id for c in final.masks[0].candidates]
    card = (out / "README.md").read_text(encoding="utf-8")
    assert "4 of 4 planned optimizer steps" in card and "± " in card
