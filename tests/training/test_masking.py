"""Masking: proportions (statistically), special tokens, real [MASK] id, whole words, determinism."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from bertcurve.training.masking import IGNORE_INDEX, generator_for, mask_tokens

MASK_ID, FIRST_REGULAR, VOCAB = 4, 5, 5000


def _batch(rows: int = 400, width: int = 128, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(FIRST_REGULAR, VOCAB, (rows, width), generator=gen)
    special = torch.zeros_like(ids, dtype=torch.bool)
    ids[:, 0], ids[:, -1] = 2, 3  # [CLS] ... [SEP]
    special[:, 0] = special[:, -1] = True
    ids[-50:, 100:] = 0  # padding rows tails
    special[-50:, 100:] = True
    return ids, special


def _within(observed: float, p: float, n: int, z: float = 5.0) -> bool:
    return abs(observed - p) <= z * math.sqrt(p * (1 - p) / n)


def test_proportions_match_bert_recipe():
    ids, special = _batch()
    out = mask_tokens(ids, special, mask_prob=0.15, mask_id=MASK_ID, random_low=FIRST_REGULAR,
                      random_high=VOCAB, generator=generator_for(1, 0))
    selected = out.labels != IGNORE_INDEX
    n_maskable = int((~special).sum())
    n_sel = int(selected.sum())
    assert _within(n_sel / n_maskable, 0.15, n_maskable)
    as_mask = int((out.input_ids[selected] == MASK_ID).sum())
    unchanged = int((out.input_ids[selected] == ids[selected]).sum())
    randomised = n_sel - as_mask - unchanged
    assert _within(as_mask / n_sel, 0.8, n_sel)
    # A random draw equal to the original counts as unchanged (p = 1/4995): negligible.
    assert _within(randomised / n_sel, 0.1, n_sel)
    assert _within(unchanged / n_sel, 0.1, n_sel)
    # Labels are the original ids wherever something is predicted.
    assert torch.equal(out.labels[selected], ids[selected])
    # Nothing outside the selection changes.
    assert torch.equal(out.input_ids[~selected], ids[~selected])


def test_never_special_and_random_ids_are_real_tokens():
    ids, special = _batch(rows=200)
    out = mask_tokens(ids, special, mask_prob=0.5, mask_id=MASK_ID, random_low=FIRST_REGULAR,
                      random_high=VOCAB, generator=generator_for(2, 0))
    assert not (out.labels[special] != IGNORE_INDEX).any()
    assert torch.equal(out.input_ids[special], ids[special])
    changed = (out.input_ids != ids) & (out.input_ids != MASK_ID)
    assert changed.any()
    assert int(out.input_ids[changed].min()) >= FIRST_REGULAR
    assert int(out.input_ids[changed].max()) < VOCAB


def test_mask_id_is_the_given_constant_not_max_plus_one():
    # The seed used max(input_ids)+1; ours is the tokenizer's id whatever the batch holds.
    ids, special = _batch(rows=20)
    for seed in range(3):
        out = mask_tokens(ids[:, :60 + seed], special[:, :60 + seed], mask_prob=0.3, mask_id=MASK_ID,
                          random_low=FIRST_REGULAR, random_high=VOCAB, generator=generator_for(seed))
        masked_values = set(out.input_ids[(out.input_ids != ids[:, :60 + seed])].tolist())
        assert MASK_ID in masked_values
        assert int(ids.max()) + 1 not in masked_values


def test_whole_words_are_masked_together():
    rows, width = 300, 64
    ids, special = _batch(rows, width)
    gen = torch.Generator().manual_seed(5)
    starts = torch.rand(rows, width, generator=gen) < 0.45
    out = mask_tokens(ids, special, mask_prob=0.15, mask_id=MASK_ID, random_low=FIRST_REGULAR,
                      random_high=VOCAB, generator=generator_for(3), word_starts=starts)
    selected = out.labels != IGNORE_INDEX
    for r in range(rows):
        word = -1
        state: dict[int, set[bool]] = {}
        for c in range(width):
            if special[r, c]:
                word += 1  # specials are their own unit
                continue
            if starts[r, c] or c == 0 or special[r, c - 1]:
                word += 1
            state.setdefault(word, set()).add(bool(selected[r, c]))
        assert all(len(v) == 1 for v in state.values()), f"row {r} splits a word"
    frac = float(selected.sum()) / float((~special).sum())
    assert 0.08 < frac < 0.25


def test_same_generator_same_masks_and_streams_differ():
    ids, special = _batch(rows=30)
    kw = dict(mask_prob=0.15, mask_id=MASK_ID, random_low=FIRST_REGULAR, random_high=VOCAB)
    a = mask_tokens(ids, special, generator=generator_for(9, 1, 7), **kw)
    b = mask_tokens(ids, special, generator=generator_for(9, 1, 7), **kw)
    c = mask_tokens(ids, special, generator=generator_for(9, 1, 8), **kw)
    assert torch.equal(a.input_ids, b.input_ids) and torch.equal(a.labels, b.labels)
    assert not torch.equal(a.labels, c.labels)


@settings(max_examples=40, deadline=None)
@given(rows=st.integers(1, 6), width=st.integers(2, 40), prob=st.floats(0.01, 0.95),
       seed=st.integers(0, 2**31))
def test_every_row_with_tokens_gets_a_prediction(rows, width, prob, seed):
    ids = torch.randint(FIRST_REGULAR, VOCAB, (rows, width), generator=torch.Generator().manual_seed(seed))
    special = torch.zeros_like(ids, dtype=torch.bool)
    special[:, 0] = True
    out = mask_tokens(ids, special, mask_prob=prob, mask_id=MASK_ID, random_low=FIRST_REGULAR,
                      random_high=VOCAB, generator=generator_for(seed))
    selected = out.labels != IGNORE_INDEX
    assert not selected[:, 0].any()
    assert bool(selected[:, 1:].any(dim=1).all())


def test_rejects_bad_arguments():
    ids, special = _batch(rows=2)
    with pytest.raises(ValueError):
        mask_tokens(ids, special[:, :5], mask_prob=0.15, mask_id=4, random_low=5, random_high=10,
                    generator=generator_for(0))
    with pytest.raises(ValueError):
        mask_tokens(ids, special, mask_prob=0.15, mask_id=4, random_low=5, random_high=5,
                    generator=generator_for(0))
