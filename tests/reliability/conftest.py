"""Fixtures of the reliability suite (crash safety, damaged files, hostile input).

Helpers shared with ``bench/reliability.py`` live in ``reltools.py`` (a module
name that cannot collide with the top-level tests/conftest.py).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # reltools, also used by bench/reliability.py
    sys.path.insert(0, str(HERE))

from reltools import REAL_SENTENCES  # noqa: E402


@pytest.fixture(scope="session")
def hostile_ok_corpus(tmp_path_factory) -> Path:
    """A small real-Chinese .txt that prepare accepts, to mutate in tests."""
    path = tmp_path_factory.mktemp("hostile") / "ok.txt"
    path.write_text("\n".join(REAL_SENTENCES) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def reference_run_dir(tiny_data_dir, tmp_path_factory) -> Path:
    """An uninterrupted tiny run (reltools.TINY_RUN) on the tiny data dir (read only)."""
    import reltools

    out = tmp_path_factory.mktemp("reference") / "run"
    outcome = reltools.run_child(reltools.train_argv(tiny_data_dir, out))
    assert outcome.exitcode == 0, outcome
    return out
