"""The training forward pass computes what the full Hugging Face model computes, with less work."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bertcurve.training.batches import SpecialIds, collate, query_positions
from bertcurve.training.config import ModelConfig
from bertcurve.training.masking import IGNORE_INDEX
from bertcurve.training.model import build_model, forward

SPECIAL = SpecialIds(pad=0, cls=2, sep=3, mask=4, first_regular=5, vocab_size=40)


def _batch(*, padded: bool, nsp: bool, seed: int = 0):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(8, 30, size=6) if padded else [30] * 6
    rows = [np.array([2] + list(rng.integers(5, 40, size=int(n))) + [3]) for n in lengths]
    extra = {}
    if nsp:
        extra = dict(token_types=[(np.arange(len(r)) > len(r) // 2).astype(np.int64) for r in rows],
                     nsp_labels=[0, 1, 0, 1, 1, 0])
    return collate(rows, SPECIAL, mask_prob=0.3, generator=torch.Generator().manual_seed(seed), **extra)


@pytest.mark.parametrize("padded,nsp", [(False, False), (True, False), (True, True)])
def test_forward_matches_the_full_model(padded, nsp):
    """Loss and every gradient equal the stock model's (full logits) on the same masked batch."""
    batch = _batch(padded=padded, nsp=nsp)
    assert (batch.attention_mask is not None) == padded
    torch.manual_seed(0)
    net = build_model(ModelConfig(hidden_size=32, num_layers=3, num_heads=4, intermediate_size=64,
                                  max_position_embeddings=64), 40, nsp=nsp).eval()

    ours = forward(net, batch)
    ours_loss = ours.mlm_loss_sum + (ours.nsp_loss_sum if nsp else 0)
    ours_loss.backward()
    ours_grads = {n: p.grad.clone() for n, p in net.named_parameters()}
    net.zero_grad()

    full = net(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
               token_type_ids=batch.token_type_ids)
    selected = batch.labels != IGNORE_INDEX
    logits = full.prediction_logits if nsp else full.logits
    loss = F.cross_entropy(logits[selected], batch.labels[selected], reduction="sum")
    assert ours.n_masked == int(selected.sum()) == batch.n_masked
    assert int(ours.mlm_correct) == int((logits[selected].argmax(-1) == batch.labels[selected]).sum())
    if nsp:
        nsp_loss = F.cross_entropy(full.seq_relationship_logits, batch.next_sentence_label, reduction="sum")
        torch.testing.assert_close(ours.nsp_loss_sum, nsp_loss, rtol=1e-5, atol=1e-5)
        loss = loss + nsp_loss
    torch.testing.assert_close(ours_loss, loss, rtol=1e-5, atol=1e-5)
    loss.backward()
    scale = max(float(p.grad.abs().max()) for p in net.parameters())
    for name, p in net.named_parameters():
        # atol against the largest gradient: a key bias's true gradient is 0 (softmax ignores it),
        # so both sides hold rounding noise there
        torch.testing.assert_close(ours_grads[name], p.grad, rtol=1e-4, atol=1e-5 * scale, msg=name)


def test_query_positions_cover_the_masked_tokens_and_cls():
    labels = torch.full((3, 6), IGNORE_INDEX)
    labels[0, [1, 4]] = 7
    labels[2, [2, 3, 5]] = 9  # row 1 has none
    pos = query_positions(labels)
    assert pos.flat.tolist() == [1, 4, 14, 15, 17]
    assert pos.per_row == 3 and pos.mlm is None and pos.first is None
    assert pos.slot.tolist() == [0, 1, 6, 7, 8]  # row * per_row + rank within the row

    with_cls = query_positions(labels, with_first=True)
    assert with_cls.flat.tolist() == [0, 1, 4, 6, 12, 14, 15, 17]
    assert with_cls.per_row == 4
    assert with_cls.flat[with_cls.first].tolist() == [0, 6, 12]
    assert with_cls.flat[with_cls.mlm].tolist() == pos.flat.tolist()
    assert len(set(with_cls.slot.tolist())) == len(with_cls.slot)


def test_cpu_dropout_keeps_the_asked_share_and_scales_it_unbiased():
    from bertcurve.training.model import CpuDropout

    torch.manual_seed(0)
    drop = CpuDropout(0.1).train()
    x = torch.ones(1_000_000, requires_grad=True)
    y = drop(x)
    kept = y > 0
    assert abs(float(kept.float().mean()) - 0.9) < 0.0015  # 5 standard errors
    assert torch.all(y[kept] == 65536 / (65536 - 6554))  # 1 / the exact keep probability
    y.sum().backward()
    assert torch.equal(x.grad, y.detach())  # the gradient passes where the value did, scaled alike
    assert torch.equal(drop.eval()(x), x)
    assert torch.equal(CpuDropout(0.0).train()(x), x)


def test_cpu_attention_ignores_padding_and_matches_sdpa_in_eval():
    from bertcurve.training.model import use_cpu_dropout

    batch = _batch(padded=True, nsp=False)
    real = batch.attention_mask.bool()
    cfg = ModelConfig(hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64,
                      max_position_embeddings=64, hidden_dropout=0.0, attention_dropout=0.5)
    torch.manual_seed(0)
    stock = build_model(cfg, 40).eval()
    fast = build_model(cfg, 40)
    fast.load_state_dict(stock.state_dict())
    use_cpu_dropout(fast)
    assert not any(type(m) is torch.nn.Dropout for m in fast.modules())

    def hidden(net, ids, seed=0):
        torch.manual_seed(seed)
        return net.bert(input_ids=ids, attention_mask=batch.attention_mask).last_hidden_state

    fast.eval()
    torch.testing.assert_close(hidden(fast, batch.input_ids)[real], hidden(stock, batch.input_ids)[real])
    fast.train()
    other_padding = batch.input_ids.masked_fill(~real, 7)
    a, b = hidden(fast, batch.input_ids), hidden(fast, other_padding)
    torch.testing.assert_close(a[real], b[real])  # attention dropout on, padded keys still ignored
    assert not torch.allclose(a, hidden(fast, batch.input_ids, seed=1))  # and dropout does act

    # a rate that rounds to no dropped lane takes the CPU path and must equal plain attention
    for module in fast.modules():
        if hasattr(module, "dropout") and isinstance(module.dropout, torch.nn.Dropout):
            module.dropout.p = 1e-7
    torch.testing.assert_close(hidden(fast, batch.input_ids)[real], hidden(stock, batch.input_ids)[real])
