"""Training checked against oracles that do not share its code.

The other training tests compare runs of the same code with each other, so a
change that alters every run alike (no gradient clipping, the learning rate
stuck at its peak, word boundaries lost on the way to the model) passes them.
These tests compute what the first optimizer step, the learning rate of every
step and the whole-word masks must be from first principles: Hugging Face's
own loss, AdamW written out by hand, the schedule's formula, jieba.
"""

from __future__ import annotations

import math

import pytest
import torch
from safetensors.torch import load_file
from torch.optim.optimizer import register_optimizer_step_pre_hook

from bertcurve import layout
from bertcurve.data.datadir import DataDir
from bertcurve.stages.train import train
from bertcurve.training.batches import SpecialIds, TrainStream, make_examples
from bertcurve.training.config import build_config
from bertcurve.training.masking import IGNORE_INDEX
from bertcurve.training.metrics_log import read_records
from bertcurve.training.model import build_model

# One optimizer step whose every ingredient shows in the weights: an eps near the typical
# gradient entry makes the Adam update depend on the gradient's scale (at step 1 Adam's
# update is otherwise lr * sign(g), blind to clipping); a clip threshold well below the
# gradient norm; a weight decay large enough to see on every decayed weight.
ONE_STEP = {"max_steps": 1, "warmup_steps": 0, "schedule": "constant", "lr": 1e-2,
            "weight_decay": 3.0, "clip": 0.2, "optim.eps": 3e-3, "beta1": 0.8, "beta2": 0.9,
            "model.hidden_dropout": 0.0, "model.attention_dropout": 0.0,
            "eval_every": 1, "save_every": 1}


def _takes_no_decay(name: str) -> bool:
    """The rule the optimizer is meant to follow: biases and LayerNorm weights are not decayed."""
    return name.endswith("bias") or "LayerNorm" in name


def _oracle_first_step(data_dir, overrides) -> tuple[dict[str, torch.Tensor], float]:
    """Weights after one AdamW step computed by hand in float64, and the gradient norm before clipping."""
    cfg = build_config("tiny", None, overrides)
    o = cfg.optim
    data = DataDir(data_dir)
    tokenizer = data.tokenizer()
    special = SpecialIds.from_tokenizer(tokenizer)
    torch.manual_seed(cfg.seed)  # the initial weights of a run with this seed
    net = build_model(cfg.model, len(tokenizer), pad_token_id=special.pad).double()
    stream = TrainStream(make_examples(data.split("train"), seq_len=cfg.data.seq_len, special=special,
                                       whole_word=cfg.data.whole_word, nsp=False),
                         micro_batch=o.micro_batch, mask_prob=cfg.data.mask_prob, seed=cfg.seed)
    batches = [stream.batch(k) for k in range(o.grad_accum)]
    n_masked = sum(int((b.labels != IGNORE_INDEX).sum()) for b in batches)
    # The loss of the step: mean cross-entropy over all masked tokens of its micro-batches,
    # from the model's own full-vocabulary forward pass.
    for b in batches:
        out = net(input_ids=b.input_ids, attention_mask=b.attention_mask, labels=b.labels)
        masked_here = int((b.labels != IGNORE_INDEX).sum())
        (out.loss * masked_here / n_masked).backward()
    named = dict(net.named_parameters())  # shared (tied) matrices appear once
    grad_norm = math.sqrt(sum(float((p.grad ** 2).sum()) for p in named.values()))
    clip_coef = min(1.0, o.clip / (grad_norm + 1e-6))
    lr = o.lr  # constant schedule, no warm-up
    after = {}
    for name, p in named.items():
        g = p.grad * clip_coef
        m_hat = (1 - o.beta1) * g / (1 - o.beta1)        # bias-corrected first moment
        v_hat = (1 - o.beta2) * g * g / (1 - o.beta2)    # bias-corrected second moment
        decay = 0.0 if _takes_no_decay(name) else o.weight_decay
        after[name] = p.detach() * (1 - lr * decay) - lr * m_hat / (v_hat.sqrt() + o.eps)
    return after, grad_norm


def test_first_step_is_adamw_with_clipping_and_decoupled_weight_decay(tiny_data_dir, tmp_path):
    out = tmp_path / "one-step"
    result = train(tiny_data_dir, out, preset="tiny", overrides=ONE_STEP, quiet=True)
    assert result.completed and result.step == 1
    expected, grad_norm = _oracle_first_step(tiny_data_dir, ONE_STEP)
    assert grad_norm > 3 * ONE_STEP["clip"]  # so clipping matters
    logged = [r for r in read_records(out / layout.METRICS) if r["split"] == "train"]
    assert logged[0]["grad_norm"] == pytest.approx(grad_norm, rel=1e-4)  # the norm before clipping
    saved = load_file(str(out / layout.FINAL_MODEL_DIR / "model.safetensors"))
    assert set(saved) <= set(expected) and len(saved) >= len(expected) - 2  # a tied matrix saved once
    no_decay = [name for name in expected if _takes_no_decay(name)]
    assert any("LayerNorm.weight" in n for n in no_decay) and any(n.endswith("bias") for n in no_decay)
    for name, weights in saved.items():
        # float32 training against a float64 oracle: far below the smallest effect tested
        # (decay moves a 0.02 weight by 6e-4, clipping changes updates by ~1e-3).
        err = float((weights.double() - expected[name]).abs().max())
        assert err < 2e-5, f"{name} differs from the hand-computed AdamW step by {err:.3g}"


def _schedule(step: int, *, peak: float, warmup: int, total: int, floor_ratio: float, kind: str) -> float:
    """Linear warm-up to ``peak``, then cosine or linear decay to ``floor_ratio * peak`` at ``total``."""
    if step <= warmup:
        return peak * step / warmup
    floor = peak * floor_ratio
    done = (step - warmup) / (total - warmup)
    if kind == "cosine":
        return floor + (peak - floor) * (1 + math.cos(math.pi * done)) / 2
    return floor + (peak - floor) * (1 - done)


@pytest.mark.parametrize("kind", ["cosine", "linear"])
def test_optimizer_uses_the_scheduled_learning_rate_at_every_step(tiny_data_dir, tmp_path, kind):
    seen: list[list[float]] = []

    def record(optimizer, args, kwargs):
        seen.append([group["lr"] for group in optimizer.param_groups])

    settings = {"max_steps": 12, "warmup_steps": 4, "lr": 3e-3, "schedule": kind,
                "min_lr_ratio": 0.1, "eval_every": 12, "save_every": 12}
    handle = register_optimizer_step_pre_hook(record)
    try:
        train(tiny_data_dir, tmp_path / kind, preset="tiny", overrides=settings, quiet=True)
    finally:
        handle.remove()
    expected = [_schedule(s, peak=3e-3, warmup=4, total=12, floor_ratio=0.1, kind=kind)
                for s in range(1, 13)]
    assert len(seen) == 12
    for step, (groups, lr) in enumerate(zip(seen, expected), start=1):
        assert len(groups) == 2 and all(g == pytest.approx(lr, rel=1e-12) for g in groups), step
    logged = [r["lr"] for r in read_records(tmp_path / kind / layout.METRICS) if r["split"] == "train"]
    assert logged == pytest.approx(expected, rel=1e-12)


def _jieba_words(chars: list[str]) -> list[tuple[int, int]]:
    """(start, end) token spans of the multi-character jieba words of a run of one-character tokens."""
    import jieba

    spans, pos = [], 0
    for word in jieba.cut("".join(chars), HMM=True):
        if len(word) > 1:
            spans.append((pos, pos + len(word)))
        pos += len(word)
    return spans


def test_whole_word_training_batches_mask_every_character_of_a_jieba_word(tiny_data_dir, tmp_path,
                                                                         monkeypatch):
    import bertcurve.training.model as model_mod

    seen = []
    real_forward = model_mod.forward

    def recording_forward(net, batch, **kw):
        if net.training:
            seen.append(batch)
        return real_forward(net, batch, **kw)

    monkeypatch.setattr(model_mod, "forward", recording_forward)
    train(tiny_data_dir, tmp_path / "ww", preset="tiny", quiet=True,
          overrides={"whole_word": True, "max_steps": 8, "eval_every": 8, "save_every": 8})
    assert len(seen) == 8 * 2  # 8 steps of 2 micro-batches
    tokenizer = DataDir(tiny_data_dir).tokenizer()
    special = SpecialIds.from_tokenizer(tokenizer)
    whole = split = 0
    for batch in seen:
        selected = batch.labels != IGNORE_INDEX
        original = torch.where(selected, batch.labels, batch.input_ids)  # undo the corruption
        for row in range(original.shape[0]):
            ids = original[row].tolist()
            seps = [i for i, t in enumerate(ids) if t in (special.cls, special.sep, special.pad)]
            for a, b in zip(seps, seps[1:]):
                chars = tokenizer.convert_ids_to_tokens(ids[a + 1:b])
                if any(len(c) != 1 for c in chars):
                    continue  # [UNK] and the like: not one character each
                words = _jieba_words(chars)
                # Packing cuts sentences at the row's edges, perhaps inside a word.
                words = [(s, e) for s, e in words
                         if not (a == 0 and s == 0) and not (b == seps[-1] and e == b - a - 1)]
                for start, end in words:
                    picked = selected[row, a + 1 + start:a + 1 + end].tolist()
                    if any(picked):
                        whole += all(picked)
                        split += not all(picked)
    assert whole >= 20  # enough selected multi-character words to mean something
    assert split == 0, f"{split} jieba words were masked in part ({whole} whole)"
