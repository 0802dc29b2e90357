"""The CPU allocator setting: freed tensors are reused instead of faulting in afresh."""

import os
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")

_PROBE = textwrap.dedent("""
    import resource, sys
    import torch
    from bertcurve.training.hostmem import keep_freed_memory
    applied = keep_freed_memory() if sys.argv[1] == "keep" else False
    def faults():
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    x = torch.ones(48 * 2**20 // 4)  # 48 MiB, above glibc's largest mmap threshold
    for _ in range(10):  # the heap settles into reusing the freed block within a few rounds
        (x * 2).sum()
    rounds = []
    for _ in range(10):
        before = faults()
        (x * 2).sum()
        rounds.append(faults() - before)
    print(int(applied), sorted(rounds)[len(rounds) // 2], *rounds)
""")


def _run(mode: str, **env) -> tuple[int, int, list[str]]:
    out = subprocess.run([sys.executable, "-c", _PROBE, mode], capture_output=True, text=True,
                         check=True, env={**os.environ, **env}).stdout.split()
    return int(out[0]), int(out[1]), out[2:]


def test_freed_tensors_are_reused_without_page_faults():
    _, stock, _ = _run("stock")
    applied, kept, rounds = _run("keep")
    assert applied == 1
    # 48 MiB of fresh pages is ~12,000 faults per multiply; reused memory faults (almost) never
    assert stock > 5_000
    assert kept < stock // 10, f"page faults per round: {rounds}"  # the median round


def test_user_allocator_settings_are_left_alone():
    applied, _, _ = _run("keep", MALLOC_ARENA_MAX="2", MALLOC_TRIM_THRESHOLD_="1000000")
    assert applied == 0
