"""`bertcurve study --seeds`: one run per seed, each a normal run dir, aggregated in the study folder."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bertcurve import layout
from bertcurve.cli import main
from bertcurve.errors import UserError
from bertcurve.stages.study import _where, parse_seeds, study

FAST = dict(train_preset="tiny", train_overrides={"eval_every": 5}, prepare_options={"max_sentences": 1500},
            quiet=True)


@pytest.mark.slow
def test_study_with_seeds_trains_each_seed_and_aggregates_them(tmp_path):
    out = tmp_path / "study"
    res = study(["demo"], out=out, seeds=[0, 1], **FAST)
    assert res.completed
    assert [s.name for s in res.stages] == ["prepare", "train seed 0", "analyze seed 0", "plot seed 0",
                                            "report seed 0", "train seed 1", "analyze seed 1", "plot seed 1",
                                            "report seed 1", "seeds"]
    assert not (out / layout.STUDY_RUN_DIR).exists()
    finals, losses = [], []
    for seed in (0, 1):
        run = out / f"run-seed{seed}"
        assert json.loads((run / layout.RUN_CONFIG).read_text())["train"]["seed"] == seed
        assert (run / layout.REPORT_HTML).is_file() and (run / layout.ANALYSIS).is_file()
        evals = [json.loads(line) for line in (run / layout.METRICS).read_text().splitlines()
                 if json.loads(line)["split"] == "eval"]
        finals.append(evals[-1]["mlm_accuracy"])
        losses.append(evals[-1]["loss"])
    assert losses[0] != losses[1]  # the seeds really differ (tiny's accuracy may not)

    cmp = json.loads((out / layout.COMPARISON).read_text())
    (group,) = cmp["seed_groups"]["groups"]
    assert group["seeds"] == [0, 1] and group["runs"] == ["run-seed0", "run-seed1"]
    assert group["final"]["mean"] == pytest.approx(np.mean(finals))
    assert group["final"]["sd"] == pytest.approx(np.std(finals, ddof=1))
    assert (out / "seed_bands.png").read_bytes()[:4] == b"\x89PNG"
    md = (out / layout.REPORT_MD).read_text(encoding="utf-8")
    assert "Across seeds" in md and "95% CI of the mean" in md
    assert res.report_html == out / layout.REPORT_HTML
    html = res.report_html.read_text(encoding="utf-8")
    assert html.count("<img src=\"data:image/png;base64,") >= 6  # the run's 4, the comparison, the seed bands
    summary = _where(res)
    assert "across 2 seeds" in summary and "run-seed0, run-seed1" in summary
    record = json.loads((out / layout.STUDY_STATE).read_text())
    assert record["seeds"] == [0, 1]

    again = study(["demo"], out=out, seeds=[0, 1], **FAST)
    assert {s.status for s in again.stages} == {"skipped"}


def test_seeds_are_parsed_and_bad_ones_refused(tmp_path, capsys):
    assert parse_seeds("0,1,2") == [0, 1, 2] and parse_seeds("3-5") == [3, 4, 5]
    with pytest.raises(UserError, match="whole numbers"):
        parse_seeds("a,b")
    with pytest.raises(UserError, match="distinct seeds"):
        study(["demo"], out=tmp_path / "s", seeds=[1, 1], **FAST)
    with pytest.raises(UserError, match="not both"):
        study(["demo"], out=tmp_path / "s", seeds=[0, 1], **dict(FAST, train_overrides={"seed": 3}))
    assert main(["study", "--seeds", "x", "--out", str(tmp_path / "t")]) == 2
    assert "--seeds 'x'" in capsys.readouterr().err
    assert not (tmp_path / "s").exists() and not (tmp_path / "t").exists()  # refused before anything is written


def test_a_seeds_study_folder_stands_for_its_seed_runs(tmp_path):
    """plot, report, compare and the dashboard take `studies/demo` for run-seed0, run-seed1, ..."""
    import shutil
    from pathlib import Path

    from bertcurve import layout
    from bertcurve.stages.compare import compare

    runs = Path(__file__).parents[1] / "fixtures" / "what_if"
    study = tmp_path / "study"
    for seed, name in ((10, "cos800"), (2, "cos400")):
        shutil.copytree(runs / name, study / f"run-seed{seed}")
    (study / "run-seedx").mkdir()          # not a seed run: no number, no metrics
    assert layout.resolve_runs([study]) == [study / "run-seed2", study / "run-seed10"]
    assert layout.resolve_runs([study / "run-seed2"]) == [study / "run-seed2"]
    res = compare([study], out=tmp_path / "comparison.json")
    assert [r["name"] for r in res["rows"]] == ["run-seed2", "run-seed10"]
