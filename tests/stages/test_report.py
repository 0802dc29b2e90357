"""`bertcurve report`: report.md and a self-contained report.html with every section."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from bertcurve.stages.report import Doc, cjk_font_face, report


def _csv(path: Path, steps: np.ndarray, scale: float = 1.0) -> Path:
    acc = 0.6 * scale - 0.45 * np.exp(-steps / 900) + 0.012 * np.cos(steps * 1.7)
    loss = 2.5 / scale + 5 * np.exp(-steps / 700) + 0.05 * np.sin(steps * 1.3)
    lr = np.minimum(steps / 300, 1.0) * 1e-3
    path.write_text("step,mlm_acc,loss,lr\n" + "".join(
        f"{s},{a:.5f},{l:.5f},{r:.3g}\n" for s, a, l, r in zip(steps, acc, loss, lr)), encoding="utf-8")
    return path


class _Assets(HTMLParser):
    """Every URL the page would fetch."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if name in ("src", "href") and value and not value.startswith(("#", "data:")):
                self.urls.append(value)


@pytest.mark.slow
def test_report_has_every_section_and_is_self_contained(tmp_path):
    main = _csv(tmp_path / "long_run.csv", np.arange(50, 4050, 50))
    other = _csv(tmp_path / "short_run.csv", np.arange(50, 2050, 50), scale=0.9)
    result = report([main, other], out=tmp_path / "rep", lang="both")
    assert result.sections == ["summary", "dataset", "model", "throughput", "curves", "analysis", "forecast",
                               "comparison", "notes"]
    md = result.markdown.read_text(encoding="utf-8")
    for heading in ("Summary · 摘要", "Dataset card · 数据集", "Model and training configuration",
                    "Throughput and hardware", "Learning curves", "Statistics of the learning curve",
                    "Forecast · 预测", "Comparison of runs", "Notes and reproduction"):
        assert f"## {heading}" in md, heading
    # Markdown points at figure files that exist, relative to the report.
    for rel in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md):
        assert (result.markdown.parent / rel).is_file(), rel
    assert "Pearson r" in md and "Backtest RMSE" in md and "(chosen)" in md
    html = result.html.read_text(encoding="utf-8")
    parser = _Assets()
    parser.feed(html)
    assert parser.urls == []                                        # nothing to fetch: opens offline
    assert html.count('src="data:image/png;base64,') == 5            # 4 figures + the comparison
    assert html.startswith("<!DOCTYPE html>") and "</html>" in html


def test_doc_renders_the_same_blocks_to_markdown_and_html():
    doc = Doc("标题 Title")
    doc.h2("Summary · 摘要", "summary")
    doc.p("a **bold** and `code` | pipe")
    doc.table(["a", "b"], [[1.0, None], ["x|y", 0.000012]])
    doc.bullets(["one", "二"])
    md = doc.markdown()
    assert "| 1 | — |" in md and "x\\|y" in md and "- 二" in md
    html = doc.html()
    assert "<strong>bold</strong>" in html and "<code>code</code>" in html
    assert '<a href="#summary">' in html and "1.2e-05" in html


def test_cjk_font_is_subset_to_the_characters_used():
    face = cjk_font_face("学习曲线")
    assert face.startswith("@font-face") and "base64," in face
    # Four characters need a few kilobytes, not the 8 MB font.
    assert len(face) < 40_000
    assert cjk_font_face("plain ASCII only") == ""


@pytest.mark.slow
def test_report_states_the_runs_initial_weights_cooldown_and_short_sequences(tmp_path, tiny_data_dir):
    from bertcurve.stages.train import train

    run = tmp_path / "run"
    train(tiny_data_dir, run, preset="tiny", quiet=True,
          overrides={"max_steps": 20, "warmup_steps": 4, "schedule": "wsd", "initializer_range": 0.03,
                     "short_seq_prob": 0.25})
    md = report([run], out=tmp_path / "rep").markdown.read_text(encoding="utf-8")
    assert "normal, std 0.03" in md
    assert "then wsd to 0 × lr (cooldown over the last 20% of the steps)" in md
    assert "32 (25% of training sequences cut short)" in md
