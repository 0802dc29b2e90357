"""Every random stream of a training run, by name, and the one way their seeds are derived.

A run draws from nine streams. Each is a pure function of a root seed (the
run's ``seed``, or ``eval.eval_seed`` for the held-out set) and an index such
as the micro-batch number, so a resumed run, a run on another number of
processes and an uninterrupted run draw exactly the same numbers without
carrying any generator state along.

=================  ==========  =================================================
stream             root seed   index
=================  ==========  =================================================
``MODEL_INIT``     seed        (none): the initial weights
``DATA_ORDER``     seed        epoch: the order of the training examples
``TRAIN_MASKS``    seed        micro-batch: which tokens are masked, and how
``NSP_PAIRS``      seed        micro-batch: adjacent or random sentence B
``DROPOUT``        seed        micro-batch: dropout masks (the global generator)
``SHORT_SEQS``     seed        micro-batch: which sequences are cut short, and where
``EVAL_ORDER``     eval_seed   (none): which validation examples form the set
``EVAL_MASKS``     eval_seed   example: the held-out set's masks
``EVAL_NSP_PAIRS`` eval_seed   example: the held-out set's sentence B
=================  ==========  =================================================

A stream's number is part of every seed derived for it, so two numbered
streams never share draws. The numbers (and the two streams without one,
which predate the numbering) are part of every result: renumbering a stream
changes the runs. One overlap is kept for that reason: with ``seed`` equal to
``eval_seed``, ``DATA_ORDER`` of epoch 4 has ``EVAL_ORDER``'s key (the two
permute different splits, of different lengths).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class Stream:
    """A named random stream; ``number`` is mixed into its seeds (None: not, see the module doc)."""

    name: str
    number: int | None


MODEL_INIT = Stream("model-init", None)
DATA_ORDER = Stream("data-order", None)
TRAIN_MASKS = Stream("train-masks", 1)
NSP_PAIRS = Stream("nsp-pairs", 2)
EVAL_MASKS = Stream("eval-masks", 3)
EVAL_ORDER = Stream("eval-order", 4)
EVAL_NSP_PAIRS = Stream("eval-nsp-pairs", 5)
DROPOUT = Stream("dropout", 7)
SHORT_SEQS = Stream("short-seqs", 8)

STREAMS = (MODEL_INIT, DATA_ORDER, TRAIN_MASKS, NSP_PAIRS, EVAL_MASKS, EVAL_ORDER, EVAL_NSP_PAIRS,
           DROPOUT, SHORT_SEQS)


def stream_key(seed: int, stream: Stream, *index: int) -> tuple[int, ...]:
    """The key every generator of ``stream`` at ``index`` is seeded from: (seed, number, *index).

    This is the one seed derivation of a run; the helpers below only feed the
    key to a numpy or torch generator.
    """
    head = (int(seed),) if stream.number is None else (int(seed), stream.number)
    return head + tuple(int(i) for i in index)


def torch_seed(seed: int, stream: Stream, *index: int) -> int:
    """The 63-bit torch seed of ``stream`` at ``index``: the sha256 of its key.

    ``MODEL_INIT`` alone is seeded with the root seed itself: initial weights
    have come from ``torch.manual_seed(seed)`` since the first release.
    """
    if stream == MODEL_INIT:
        return int(seed)
    return hash_key(stream_key(seed, stream, *index))


def hash_key(key: tuple[int, ...]) -> int:
    """A 63-bit integer from the sha256 of a key of integers."""
    digest = hashlib.sha256(repr(tuple(int(k) for k in key)).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def numpy_rng(seed: int, stream: Stream, *index: int) -> np.random.Generator:
    """A numpy generator for ``stream`` at ``index`` (the key is its SeedSequence entropy)."""
    return np.random.default_rng(list(stream_key(seed, stream, *index)))


def torch_generator(seed: int, stream: Stream, *index: int) -> torch.Generator:
    """A CPU ``torch.Generator`` for ``stream`` at ``index``."""
    gen = torch.Generator(device="cpu")
    gen.manual_seed(torch_seed(seed, stream, *index))
    return gen


def seed_global_torch(seed: int, stream: Stream, *index: int) -> None:
    """Seed torch's global generators (CPU and every GPU) for ``stream`` at ``index``.

    For draws torch makes from its global generator: initial weights and dropout.
    """
    torch.manual_seed(torch_seed(seed, stream, *index))
