"""The seed's BERT pretraining model and loss, rebuilt as the throughput baseline.

The original research code trained its 12 x 512 model the textbook way, and this
module keeps every choice that costs time, because the benchmark measures exactly
that cost:

- ``nn.TransformerEncoder`` (batch-first, post-norm, GELU, dropout 0.1) over
  token + position + segment embeddings followed by a LayerNorm;
- an untied full-vocabulary MLM ``Linear`` applied at every position, and an
  NSP ``Linear`` on position 0;
- loss = cross-entropy over the full ``(batch, seq, vocab)`` logits with
  ``ignore_index`` + the NSP cross-entropy, always in fp32;
- sentence pairs padded to the full sequence length with no attention mask
  (the seed attended to padding); plain (non-fused) AdamW, gradient clip 1.0.

With the seed's 10,054-token vocabulary and the ``seed-48m`` shape the model has
48,399,176 parameters (``python bench/seed_style.py`` prints the count).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

SEED_VOCAB = 10_054
IGNORE_INDEX = -100


class SeedBert(nn.Module):
    """Embeddings + ``nn.TransformerEncoder`` + untied MLM head + NSP head."""

    def __init__(self, vocab_size: int, hidden: int, layers: int, heads: int, ffn: int,
                 max_positions: int, dropout: float = 0.1):
        super().__init__()
        self.token = nn.Embedding(vocab_size, hidden)
        self.position = nn.Embedding(max_positions, hidden)
        self.segment = nn.Embedding(2, hidden)
        self.norm = nn.LayerNorm(hidden)
        self.dropout = nn.Dropout(dropout)
        layer = nn.TransformerEncoderLayer(hidden, heads, ffn, dropout, activation="gelu",
                                           batch_first=True, norm_first=False)
        # Nested tensors only apply with a padding mask, which the seed never passed.
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.mlm = nn.Linear(hidden, vocab_size)
        self.nsp = nn.Linear(hidden, 2)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor):
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        x = self.token(input_ids) + self.position(positions)[None] + self.segment(token_type_ids)
        h = self.encoder(self.dropout(self.norm(x)))
        return self.mlm(h), self.nsp(h[:, 0])


def from_model_config(model, vocab_size: int) -> SeedBert:
    """A :class:`SeedBert` with the shape of a ``bertcurve.training.config.ModelConfig``."""
    return SeedBert(vocab_size, model.hidden_size, model.num_layers, model.num_heads,
                    model.intermediate_size, model.max_position_embeddings, dropout=0.1)


def seed_loss(net: SeedBert, input_ids, token_type_ids, labels, nsp_labels) -> torch.Tensor:
    """MLM cross-entropy over every position's full logits (ignored labels skipped) + NSP."""
    mlm_logits, nsp_logits = net(input_ids, token_type_ids)
    mlm = F.cross_entropy(mlm_logits.reshape(-1, mlm_logits.shape[-1]), labels.reshape(-1),
                          ignore_index=IGNORE_INDEX)
    return mlm + F.cross_entropy(nsp_logits, nsp_labels)


def pad_batch(batch, seq_len: int, pad_id: int):
    """``(input_ids, token_type_ids, labels, nsp_labels)`` of a collated batch, padded to ``seq_len``."""
    width = batch.input_ids.shape[1]
    extra = seq_len - width
    if extra < 0:
        raise ValueError(f"batch is {width} tokens wide, more than seq_len {seq_len}")
    types = batch.token_type_ids if batch.token_type_ids is not None else torch.zeros_like(batch.input_ids)
    return (F.pad(batch.input_ids, (0, extra), value=pad_id), F.pad(types, (0, extra), value=0),
            F.pad(batch.labels, (0, extra), value=IGNORE_INDEX), batch.next_sentence_label)


def count_parameters(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


if __name__ == "__main__":
    from bertcurve.training.config import build_config

    cfg = build_config("seed-48m")
    n = count_parameters(from_model_config(cfg.model, SEED_VOCAB))
    print(f"seed-style model, seed-48m shape, vocabulary {SEED_VOCAB:,}: {n:,} parameters ({n / 1e6:.1f}M)")
