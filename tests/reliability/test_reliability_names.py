"""User text is drawn literally in figures (no mathtext) and escaped in Markdown tables."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from bertcurve import layout
from bertcurve.cli import main
from bertcurve.fsutil import markdown_cell

NASTY = ["$x^$", "cost $5 vs $\\x{", "a|b <!-- c"]


def _run(root: Path, name: str, key: str = "mlm_accuracy") -> Path:
    run = root / name
    run.mkdir(parents=True)
    with open(run / layout.METRICS, "w", encoding="utf-8") as handle:
        for step in range(50, 2050, 50):
            acc = 0.6 * (1 - math.exp(-step / 600))
            handle.write(json.dumps({"format": layout.METRICS_FORMAT, "step": step, "split": "train",
                                     "loss": 8 - 6 * acc, "lr": 1e-4, key: acc}) + "\n")
            if step % 200 == 0:
                handle.write(json.dumps({"format": layout.METRICS_FORMAT, "step": step, "split": "eval",
                                         "loss": 8 - 6 * acc, key: acc + 0.01}) + "\n")
    return run


def _texts_are_literal(fig) -> None:
    from matplotlib.text import Text

    for t in fig.findobj(Text):
        text = t.get_text()
        if "$" in text and "\\$" in text:
            assert t._preprocess_math(text)[1] is False, text  # not parsed as mathtext


def test_plot_and_report_draw_dollar_names_literally(tmp_path, capsys):
    runs = [str(_run(tmp_path, name)) for name in NASTY]
    assert main(["plot", *runs, "--out", str(tmp_path / "fig")]) == 0, capsys.readouterr().err
    assert main(["report", *runs, "--out", str(tmp_path / "rep")]) == 0, capsys.readouterr().err
    md = (tmp_path / "rep" / layout.REPORT_MD).read_text()
    prose = "".join(md.split("```")[0::2])  # code blocks show text literally anyway
    assert "<!--" not in prose and "'" + str(tmp_path / "a|b <!-- c") + "'" in md  # a command that runs
    table: list[int] = []
    for line in md.splitlines() + [""]:
        if line.startswith("|"):
            table.append(line.replace("\\\\", "").replace("\\|", "").count("|"))
        elif table:
            assert len(set(table)) == 1, table  # every row of a table has as many cells as its header
            table = []


def test_figures_escape_user_text():
    from bertcurve.viz import figures as F

    assert F.literal("cost $5 vs $7") == "cost \\$5 vs \\$7"
    assert F.metric_label("eval_a$b^$", "en") == "eval a\\$b^\\$"


def test_dashboard_figure_with_dollar_names(tmp_path):
    import matplotlib

    from bertcurve.curves.logs import load_log
    from bertcurve.viz import figures as F

    logs = [load_log(_run(tmp_path, n, key="acc$x^$")) for n in NASTY]
    with matplotlib.rc_context(F.style()):
        fig = F.live_overview(logs)
        fig.savefig(tmp_path / "live.png")
        _texts_are_literal(fig)
        fig = F.comparison(logs, metric="eval_acc$x^$")
        fig.savefig(tmp_path / "cmp.png")
        _texts_are_literal(fig)


def test_markdown_cells():
    assert markdown_cell("a|b") == "a\\|b"
    assert markdown_cell("x\\|y") == "x\\\\\\|y"          # a backslash cannot undo the escape
    assert markdown_cell("<!-- hide") == "&lt;!-- hide"
    assert markdown_cell("two\nlines") == "two lines"


def test_dataset_card_escapes_domain_labels(tmp_path):
    from bertcurve.stages.prepare import prepare
    from reltools import REAL_SENTENCES

    src = tmp_path / "c.jsonl"
    with open(src, "w", encoding="utf-8") as handle:
        for i, s in enumerate(REAL_SENTENCES * 4):
            handle.write(json.dumps({"text": f"{s}第{i}条", "d": ["新闻|体育", "<!-- 评论", "正常"][i % 3]},
                                    ensure_ascii=False) + "\n")
    out = prepare([src], tmp_path / "data", domain_field="d", min_chars=5, val_fraction=0.5, progress=False)
    card = (out / layout.DATA_CARD).read_text()
    assert "新闻\\|体育" in card and "&lt;!-- 评论" in card and "<!--" not in card
    rows = [line for line in card.split("## Domains")[1].splitlines() if line.startswith("| ")]
    assert all(line.replace("\\|", "").count("|") == 3 for line in rows), rows
