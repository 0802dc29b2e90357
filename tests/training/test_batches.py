"""Packing, micro-batch determinism and NSP pairs on small hand-made splits."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bertcurve.training.batches import (
    SentencePairs,
    SpecialIds,
    TrainStream,
    build_eval_set,
    make_examples,
    pack_sequences,
)
from bertcurve.data.datadir import SplitArrays
from bertcurve.training.masking import IGNORE_INDEX

SP = SpecialIds(pad=0, cls=2, sep=3, mask=4, first_regular=5, vocab_size=100)


def _split(doc_sentence_lengths: list[list[int]], word_starts: bool = False) -> SplitArrays:
    sent_off, doc_off, ids = [0], [0], []
    rng = np.random.default_rng(0)
    for doc in doc_sentence_lengths:
        for n in doc:
            ids += list(rng.integers(5, 100, n))
            sent_off.append(len(ids))
        doc_off.append(len(sent_off) - 1)
    arr = np.asarray(ids, dtype=np.uint16)
    ws = (rng.random(len(arr)) < 0.5).astype(np.uint8) if word_starts else None
    return SplitArrays(arr, np.asarray(sent_off, np.int64), np.asarray(doc_off, np.int64), ws)


def test_packing_fills_sequences_and_keeps_every_token_once():
    split = _split([[10, 7, 30], [5], [40, 3, 3], [2, 2, 2, 2], [50]])
    idx = pack_sequences(split, seq_len=16)
    covered = []
    for k in range(len(idx.seg_start)):
        covered += list(range(idx.seg_start[k], idx.seg_end[k]))
    assert covered == list(range(len(split.ids)))  # in order, none lost or repeated
    lengths = []
    for i in range(len(idx)):
        segs = range(idx.seq_offsets[i], idx.seq_offsets[i + 1])
        lengths.append(sum(int(idx.seg_end[k] - idx.seg_start[k]) for k in segs) + len(segs) + 1)
    assert max(lengths) <= 16
    assert all(n == 16 for n in lengths[:-1])  # all but the last are full


def test_sequences_have_cls_sep_and_document_separators():
    split = _split([[4], [3]])
    ex = make_examples(split, seq_len=32, special=SP, whole_word=False, nsp=False)
    ids, ws = ex.sequence(0)
    assert ws is None
    assert ids[0] == SP.cls and ids[-1] == SP.sep
    assert list(ids[1:5]) == list(split.ids[0:4]) and ids[5] == SP.sep
    assert list(ids[6:9]) == list(split.ids[4:7])


def test_stream_is_a_pure_function_of_seed_and_index():
    split = _split([[20] * 5] * 20)
    ex = make_examples(split, seq_len=32, special=SP, whole_word=False, nsp=False)
    a = TrainStream(ex, micro_batch=4, mask_prob=0.15, seed=1)
    b = TrainStream(ex, micro_batch=4, mask_prob=0.15, seed=1)
    for k in (0, 7, 3, 40):  # any order, also past the first epoch
        x, y = a.batch(k), b.batch(k)
        assert torch.equal(x.input_ids, y.input_ids) and torch.equal(x.labels, y.labels)
    c = TrainStream(ex, micro_batch=4, mask_prob=0.15, seed=2)
    assert not torch.equal(a.batch(0).labels, c.batch(0).labels)
    # One epoch visits every sequence once.
    n = len(ex)
    seen = sorted(i for k in range(n // 4) for i in a.example_ids(k))
    assert seen == list(range(n // 4 * 4)) or len(set(seen)) == len(seen)


def test_full_batches_need_no_attention_mask():
    split = _split([[30] * 40])
    ex = make_examples(split, seq_len=32, special=SP, whole_word=False, nsp=False)
    batch = TrainStream(ex, micro_batch=4, mask_prob=0.15, seed=0).batch(0)
    assert batch.attention_mask is None and batch.n_tokens == 4 * 32
    assert batch.n_masked == int((batch.labels != IGNORE_INDEX).sum()) > 0


def test_short_sequences_end_mid_sentence_with_sep_and_are_masked_out_of_attention():
    split = _split([[28] * 150])  # 300 full sequences of 16
    ex = make_examples(split, seq_len=16, special=SP, whole_word=False, nsp=False)
    full = TrainStream(ex, micro_batch=64, mask_prob=0.15, seed=0)
    short = TrainStream(ex, micro_batch=64, mask_prob=0.15, seed=0, short_seq_prob=0.25)
    lengths = []
    for k in range(20):
        b = short.batch(k)
        assert torch.equal(b.input_ids, short.batch(k).input_ids)  # a pure function of (seed, k)
        real = b.attention_mask.bool() if b.attention_mask is not None else torch.ones_like(b.input_ids).bool()
        for row, r in zip(b.input_ids, real):
            n = int(r.sum())
            lengths.append(n)
            # [CLS] first, a [SEP] last, padding after it and nothing masked there
            assert row[0] == SP.cls and row[n - 1] == SP.sep and bool((row[n:] == SP.pad).all())
        assert bool((b.labels[~real] == IGNORE_INDEX).all())
        assert b.n_tokens == int(real.sum())
    share_short = np.mean([n < 16 for n in lengths])
    assert 0.15 < share_short < 0.35                   # about the share asked for
    assert min(lengths) >= 4 and len(set(lengths)) > 8  # [CLS] + 2..13 tokens + [SEP], spread
    # Without it every sequence is full, so [SEP] closes a row only at its last position.
    assert all(full.batch(k).attention_mask is None for k in range(5))


def test_cut_short_keeps_a_prefix_and_word_starts_in_step():
    from bertcurve.training.batches import cut_short

    ids = np.array([SP.cls, 10, 11, 12, 13, 14, 15, SP.sep])
    ws = np.array([0, 1, 0, 1, 1, 0, 1, 0], dtype=np.uint8)
    rng = np.random.default_rng(3)
    for _ in range(50):
        cut, cws = cut_short(ids, ws, rng, SP.sep)
        assert 4 <= len(cut) < len(ids) and cut[-1] == SP.sep
        assert list(cut[:-1]) == list(ids[:len(cut) - 1]) and len(cws) == len(cut) and cws[-1] == 0
    tiny = np.array([SP.cls, 10, 11, SP.sep])
    assert cut_short(tiny, None, rng, SP.sep)[0] is tiny  # nothing to cut


def test_whole_word_needs_word_starts():
    from bertcurve.errors import UserError

    with pytest.raises(UserError, match="whole-word"):
        make_examples(_split([[5]]), seq_len=16, special=SP, whole_word=True, nsp=False)
    ex = make_examples(_split([[12, 9]], word_starts=True), seq_len=16, special=SP,
                       whole_word=True, nsp=False)
    ids, ws = ex.sequence(0)
    assert len(ids) == len(ws) and ws[0] == 0 and ws[1] == 1


def test_nsp_pairs_are_half_adjacent_and_padding_is_masked():
    split = _split([[8, 9, 10, 7]] * 30)
    ex = make_examples(split, seq_len=40, special=SP, whole_word=False, nsp=True)
    assert isinstance(ex, SentencePairs)
    stream = TrainStream(ex, micro_batch=50, mask_prob=0.15, seed=0)
    labels = torch.cat([stream.batch(k).next_sentence_label for k in range(8)])
    assert 0.4 < float(labels.float().mean()) < 0.6
    batch = stream.batch(0)
    assert batch.token_type_ids is not None and batch.attention_mask is not None
    pad = batch.attention_mask == 0
    assert bool((batch.input_ids[pad] == SP.pad).all())
    assert not bool((batch.labels[pad] != IGNORE_INDEX).any())
    for row, label in zip(range(50), batch.next_sentence_label.tolist()):
        types = batch.token_type_ids[row][batch.attention_mask[row] == 1]
        assert types[0] == 0 and types[-1] == 1


def test_eval_set_reaches_the_token_target_deterministically():
    split = _split([[25] * 4] * 50)
    ex = make_examples(split, seq_len=64, special=SP, whole_word=False, nsp=False)
    a = build_eval_set(ex, eval_tokens=300, mask_prob=0.15, eval_seed=7, batch_size=8)
    b = build_eval_set(ex, eval_tokens=300, mask_prob=0.15, eval_seed=7, batch_size=8)
    assert a.masked_tokens >= 300 and a.fingerprint == b.fingerprint
    assert sum(x.n_masked for x in a.batches) == a.masked_tokens
