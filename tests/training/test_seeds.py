"""Named random streams: distinct, and drawing exactly the numbers of earlier releases."""

from __future__ import annotations

import hashlib

import numpy as np
import torch

from bertcurve.training import seeds


def _sha_seed(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") & ((1 << 63) - 1)


def test_every_stream_has_its_own_name_and_number():
    names = [s.name for s in seeds.STREAMS]
    numbers = [s.number for s in seeds.STREAMS if s.number is not None]
    assert len(set(names)) == len(names) == 9
    assert len(set(numbers)) == len(numbers)
    numbered = [s for s in seeds.STREAMS if s.number is not None]
    keys = {seeds.stream_key(3, s, 41) for s in numbered}
    assert len(keys) == len(numbered)


def test_streams_draw_what_earlier_releases_drew():
    # Spelled out, so a change of the derivation (which would change every run) fails here.
    assert seeds.torch_seed(3, seeds.MODEL_INIT) == 3
    assert seeds.torch_seed(3, seeds.TRAIN_MASKS, 41) == _sha_seed("(3, 1, 41)")
    assert seeds.torch_seed(3, seeds.EVAL_MASKS, 41) == _sha_seed("(3, 3, 41)")
    assert seeds.torch_seed(3, seeds.DROPOUT, 41) == _sha_seed("(3, 7, 41)")
    gen = torch.Generator().manual_seed(_sha_seed("(3, 1, 41)"))
    assert torch.equal(torch.rand(5, generator=seeds.torch_generator(3, seeds.TRAIN_MASKS, 41)),
                       torch.rand(5, generator=gen))
    for stream, entropy in [(seeds.DATA_ORDER, [3, 2]), (seeds.NSP_PAIRS, [3, 2, 2]),
                            (seeds.EVAL_ORDER, [3, 4]), (seeds.EVAL_NSP_PAIRS, [3, 5, 2])]:
        index = () if stream == seeds.EVAL_ORDER else (2,)
        assert np.array_equal(seeds.numpy_rng(3, stream, *index).permutation(20),
                              np.random.default_rng(entropy).permutation(20)), stream.name


def test_seeding_the_global_generator_repeats_its_draws():
    seeds.seed_global_torch(5, seeds.DROPOUT, 9)
    first = torch.rand(4)
    torch.rand(100)
    seeds.seed_global_torch(5, seeds.DROPOUT, 9)
    assert torch.equal(torch.rand(4), first)
    seeds.seed_global_torch(5, seeds.DROPOUT, 10)
    assert not torch.equal(torch.rand(4), first)
