"""The batch prefetcher: same batches, in order, errors passed on, clean shutdown."""

from __future__ import annotations

import threading

import pytest
import torch

from bertcurve.training.batches import Batch, Prefetcher


def _batch(step: int) -> list[Batch]:
    ids = torch.full((2, 4), step, dtype=torch.long)
    return [Batch(ids, ids.clone(), None, None, None, 8, 1)]


def test_prefetcher_yields_every_step_in_order():
    pf = Prefetcher(_batch, 3, 40, depth=2)
    try:
        for step in range(3, 41):
            (b,) = pf.get(step)
            assert int(b.input_ids[0, 0]) == step
    finally:
        pf.close()


def test_prefetcher_passes_the_builders_error_to_the_caller():
    def make(step):
        if step == 5:
            raise ValueError("bad sequence 5")
        return _batch(step)

    pf = Prefetcher(make, 1, 10, depth=4)
    try:
        for step in range(1, 5):
            pf.get(step)
        with pytest.raises(ValueError, match="bad sequence 5"):
            pf.get(5)
    finally:
        pf.close()


def test_prefetcher_stops_its_thread_when_closed_early():
    pf = Prefetcher(_batch, 1, 10_000, depth=2)
    pf.get(1)
    pf.close()
    assert not any(t.name == "bertcurve-prefetch" and t.is_alive() for t in threading.enumerate())
