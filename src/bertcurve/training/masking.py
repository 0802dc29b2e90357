"""BERT masked-language-model masking as a pure function of ids and a generator.

Fixes the seed's defects: the [MASK] id is the tokenizer's real one (never
``max(input_ids) + 1``), special tokens and padding are never selected, and
random replacements are drawn from real (non-special) tokens only.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from bertcurve.training.seeds import hash_key

IGNORE_INDEX = -100  # label of positions that are not predicted (torch's CE default)


@dataclass(frozen=True)
class MaskedBatch:
    """Inputs after masking and the labels to predict (``IGNORE_INDEX`` elsewhere)."""

    input_ids: torch.Tensor
    labels: torch.Tensor


def mask_tokens(
    input_ids: torch.Tensor,
    special: torch.Tensor,
    *,
    mask_prob: float,
    mask_id: int,
    random_low: int,
    random_high: int,
    generator: torch.Generator,
    word_starts: torch.Tensor | None = None,
    mask_frac: float = 0.8,
    random_frac: float = 0.1,
) -> MaskedBatch:
    """Select ``mask_prob`` of the tokens (or whole words) and corrupt them 80/10/10.

    ``special`` is True at [CLS]/[SEP]/[PAD] positions, which are never
    selected. With ``word_starts`` (True where a word begins) every token of a
    word shares one draw, so words are masked whole. Of the selected tokens,
    ``mask_frac`` become ``mask_id``, ``random_frac`` a random id in
    ``[random_low, random_high)`` (the real, non-special tokens) and the rest
    stay unchanged. Each row with at least one maskable token gets at least
    one prediction, so a loss is always defined. Draws come only from
    ``generator``: the same generator state gives the same masks.
    """
    if input_ids.shape != special.shape:
        raise ValueError("input_ids and special must have the same shape")
    if random_high <= random_low:
        raise ValueError("empty range of random replacement ids")
    ids = input_ids.long()
    special = special.bool()
    unit_draw = torch.rand(ids.shape, generator=generator)
    if word_starts is not None:
        starts = word_starts.bool() | special
        starts[:, 0] = True  # a row always begins a unit
        starts[:, 1:] |= special[:, :-1]  # so does the token after [CLS]/[SEP]
        # Every token takes the draw of the position where its word starts.
        positions = torch.arange(ids.shape[1]).expand_as(ids)
        start_of = torch.where(starts, positions, torch.zeros_like(positions)).cummax(dim=1).values
        unit_draw = unit_draw.gather(1, start_of)
    maskable = ~special
    selected = (unit_draw < mask_prob) & maskable
    # Guarantee one prediction per row that has any maskable token.
    empty = ~selected.any(dim=1) & maskable.any(dim=1)
    if empty.any():
        # The unit (token or whole word: its tokens share one draw) with the lowest draw.
        draws = torch.where(maskable, unit_draw, torch.full_like(unit_draw, 2.0))
        lowest = draws.min(dim=1, keepdim=True).values
        selected |= empty[:, None] & maskable & (draws == lowest)
    action = torch.rand(ids.shape, generator=generator)
    replacement = torch.randint(random_low, random_high, ids.shape, generator=generator)
    labels = torch.where(selected, ids, torch.full_like(ids, IGNORE_INDEX))
    out = ids.clone()
    out = torch.where(selected & (action < mask_frac), torch.full_like(ids, mask_id), out)
    use_random = selected & (action >= mask_frac) & (action < mask_frac + random_frac)
    out = torch.where(use_random, replacement, out)
    return MaskedBatch(input_ids=out, labels=labels)


def generator_for(seed: int, *key: int) -> torch.Generator:
    """A CPU generator seeded from ``(seed, *key)`` (e.g. a stream number and a micro-batch number).

    Training takes its generators from :mod:`bertcurve.training.seeds` by
    stream name; this is the same derivation for any key.
    """
    gen = torch.Generator(device="cpu")
    gen.manual_seed(hash_key((seed, *key)))
    return gen
