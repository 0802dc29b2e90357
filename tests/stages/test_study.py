"""`bertcurve study`: the whole pipeline, resumable, skipping what is done."""

from __future__ import annotations

import functools
import json
import os
import signal

import pytest

from bertcurve import layout
from bertcurve.cli import main
from bertcurve.errors import UserError
from bertcurve.stages.study import study

pytestmark = pytest.mark.slow

FAST = dict(train_preset="tiny", train_overrides={"eval_every": 5}, prepare_options={"max_sentences": 1500},
            quiet=True)


def _statuses(result) -> dict[str, str]:
    return {s.name: s.status for s in result.stages}


def test_study_resumes_after_an_interruption_without_redoing_finished_stages(tmp_path, monkeypatch):
    import bertcurve.stages.train as train_module

    out = tmp_path / "study"
    original = train_module.train

    def interrupt_at_step_20(what: str, step: int) -> None:
        # What Ctrl-C does: the trainer finishes the step, checkpoints and returns.
        if what == "after-checkpoint" and step == 20:
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(train_module, "train", functools.partial(original, _fault=interrupt_at_step_20))
    first = study(["demo"], out=out, **FAST)
    assert not first.completed
    assert _statuses(first) == {"prepare": "done", "train": "interrupted"}
    assert not (out / "run" / layout.ANALYSIS).exists()
    meta = out / "data" / layout.DATA_META
    data_mtime = meta.stat().st_mtime_ns

    monkeypatch.setattr(train_module, "train", original)
    second = study(["demo"], out=out, **FAST)
    assert second.completed
    assert _statuses(second) == {"prepare": "skipped", "train": "done", "analyze": "done", "plot": "done",
                                 "report": "done"}
    assert "resumed from step 20" in second.stages[1].detail
    assert meta.stat().st_mtime_ns == data_mtime                  # the data dir was not rebuilt
    records = [json.loads(line) for line in (out / "run" / layout.METRICS).read_text().splitlines()]
    keys = [(r["step"], r["split"]) for r in records]
    assert [s for s, _ in keys] == sorted(s for s, _ in keys)
    # The resumed log is the uninterrupted one: every (step, split) line exactly once, none missing.
    assert len(keys) == len(set(keys)), [k for k in keys if keys.count(k) > 1]
    assert [s for s, split in keys if split == "train"] == list(range(1, 41))   # tiny: 40 steps, log every 1
    assert [s for s, split in keys if split == "eval"] == list(range(0, 41, 5))

    # Everything a reader needs is there.
    for name in ("training_curves", "correlation_analysis", "loss_analysis", "forecast"):
        assert (second.figures_dir / f"{name}.png").is_file()
    md = second.report_md.read_text(encoding="utf-8")
    for section in ("## Summary", "## Dataset card", "## Model and training configuration",
                    "## Throughput and hardware", "## Learning curves", "## Statistics of the learning curve",
                    "## Forecast", "## Notes and reproduction"):
        assert section in md, section
    assert "Held-out MLM accuracy" in md and "BertForMaskedLM" in md and "train split" in md
    assert "interrupted 1 time(s)" in md
    html = second.report_html.read_text(encoding="utf-8")
    assert html.count("<img src=\"data:image/png;base64,") == 4
    assert "http://" not in html and "https://" not in html       # opens offline: nothing external
    assert "@font-face" in html                                    # Chinese renders without a CJK font
    record = json.loads((out / layout.STUDY_STATE).read_text(encoding="utf-8"))
    assert record["format"] == "bertcurve.stages.study/1" and record["hardware"]["cpu_count"]

    # A third call finds everything up to date.
    before = second.report_html.stat().st_mtime_ns
    third = study(["demo"], out=out, **FAST)
    assert set(_statuses(third).values()) == {"skipped"}
    assert second.report_html.stat().st_mtime_ns == before


def test_study_refuses_bad_settings(tmp_path, capsys):
    with pytest.raises(UserError, match="needs a corpus"):
        study(preset="seed-100k", out=tmp_path / "s")
    with pytest.raises(UserError, match="unknown study preset"):
        study(preset="huge", out=tmp_path / "s")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "thesis.tex").write_text("x")
    assert main(["study", "--out", str(tmp_path / "busy")]) == 2
    assert "not a bertcurve study" in capsys.readouterr().err
    assert (tmp_path / "busy" / "thesis.tex").read_text() == "x"
