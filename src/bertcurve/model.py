"""The BERT model and a forward pass that projects only masked positions.

The weights keep the standard ``BertForMaskedLM`` / ``BertForPreTraining``
layout, so the saved model loads with ``AutoModelForMaskedLM`` and the
fill-mask pipeline. Training skips the full ``(batch, seq, vocab)`` logits
tensor: it runs ``model.bert``, gathers the hidden states at masked
positions and applies the MLM head (``model.cls``) to those alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from bertcurve.batches import Batch
from bertcurve.config import ModelConfig
from bertcurve.masking import IGNORE_INDEX


def bert_config(model: ModelConfig, vocab_size: int, pad_token_id: int = 0):
    """A ``transformers.BertConfig`` for these settings."""
    from transformers import BertConfig

    return BertConfig(
        vocab_size=vocab_size,
        hidden_size=model.hidden_size,
        num_hidden_layers=model.num_layers,
        num_attention_heads=model.num_heads,
        intermediate_size=model.intermediate_size,
        max_position_embeddings=model.max_position_embeddings,
        hidden_dropout_prob=model.hidden_dropout,
        attention_probs_dropout_prob=model.attention_dropout,
        tie_word_embeddings=model.tie_word_embeddings,
        pad_token_id=pad_token_id,
        type_vocab_size=2,
    )


def build_model(model: ModelConfig, vocab_size: int, *, nsp: bool = False, pad_token_id: int = 0):
    """A freshly initialised ``BertForMaskedLM`` (``BertForPreTraining`` with ``nsp``), SDPA attention."""
    from transformers import BertForMaskedLM, BertForPreTraining

    cls = BertForPreTraining if nsp else BertForMaskedLM
    net = cls._from_config(bert_config(model, vocab_size, pad_token_id), attn_implementation="sdpa")
    if nsp:
        net.config.architectures = ["BertForPreTraining"]
    else:
        net.config.architectures = ["BertForMaskedLM"]
    return net


def count_parameters(net: torch.nn.Module) -> int:
    """Distinct trainable parameters (a tied matrix counts once)."""
    seen: set[int] = set()
    total = 0
    for p in net.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    return total


@dataclass
class StepOutput:
    """Loss pieces of one micro-batch; sums, so accumulation weights tokens evenly."""

    mlm_loss_sum: torch.Tensor       # summed cross-entropy over masked tokens
    mlm_correct: torch.Tensor        # top-1 hits (no grad)
    mlm_top5: torch.Tensor           # top-5 hits (no grad)
    n_masked: int
    nsp_loss_sum: torch.Tensor | None = None
    nsp_correct: torch.Tensor | None = None
    n_pairs: int = 0
    at_mask_correct: torch.Tensor | None = None  # top-1 hits where the input was [MASK]
    at_mask: torch.Tensor | None = None          # how many inputs were [MASK]


def _mlm_head(net: torch.nn.Module):
    """The prediction head that maps hidden states to vocabulary logits."""
    head = net.cls
    return head.predictions if hasattr(head, "predictions") else head


def forward(net: torch.nn.Module, batch: Batch, *, topk: bool = False,
            mask_id: int | None = None) -> StepOutput:
    """Encoder forward, then the MLM head only at masked positions (and NSP if present).

    With ``mask_id`` the hits are also counted apart for positions whose input
    was ``[MASK]``: the other selected positions show the answer (kept) or a
    random character, and copying the kept ones is learnt long before context.
    """
    kwargs = {}
    if batch.attention_mask is not None:
        kwargs["attention_mask"] = batch.attention_mask
    if batch.token_type_ids is not None:
        kwargs["token_type_ids"] = batch.token_type_ids
    encoder = net.bert
    out = encoder(input_ids=batch.input_ids, **kwargs)
    hidden = out[0]
    selected = batch.labels != IGNORE_INDEX
    targets = batch.labels[selected]
    logits = _mlm_head(net)(hidden[selected]).float()
    loss_sum = F.cross_entropy(logits, targets, reduction="sum")
    with torch.no_grad():
        correct = (logits.argmax(-1) == targets).sum()
        if topk:
            k = min(5, logits.shape[-1])
            top5 = (logits.topk(k, dim=-1).indices == targets[:, None]).any(-1).sum()
        else:
            top5 = torch.zeros((), device=logits.device)
    result = StepOutput(loss_sum, correct, top5, int(targets.numel()))
    if mask_id is not None:
        with torch.no_grad():
            at_mask = batch.input_ids[selected] == mask_id
            result.at_mask = at_mask.sum()
            result.at_mask_correct = ((logits.argmax(-1) == targets) & at_mask).sum()
    if batch.next_sentence_label is not None and hasattr(net.cls, "seq_relationship"):
        pooled = out[1]
        nsp_logits = net.cls.seq_relationship(pooled).float()
        result.nsp_loss_sum = F.cross_entropy(nsp_logits, batch.next_sentence_label, reduction="sum")
        with torch.no_grad():
            result.nsp_correct = (nsp_logits.argmax(-1) == batch.next_sentence_label).sum()
        result.n_pairs = int(batch.next_sentence_label.numel())
    return result


class TrainingModule(torch.nn.Module):
    """Wraps a BERT model so ``forward(batch)`` is :func:`forward` (for DistributedDataParallel)."""

    def __init__(self, net: torch.nn.Module):
        super().__init__()
        self.net = net

    def forward(self, batch: Batch, topk: bool = False) -> StepOutput:  # type: ignore[override]
        return forward(self.net, batch, topk=topk)


def param_groups(net: torch.nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: no weight decay on biases and LayerNorm weights."""
    decay, no_decay = [], []
    seen: set[int] = set()
    for name, p in net.named_parameters():
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        if p.ndim < 2 or "LayerNorm" in name or "layernorm" in name.lower() or name.endswith(".bias"):
            no_decay.append(p)
        else:
            decay.append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
