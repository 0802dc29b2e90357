"""A run analysed with --what-if-steps: the report shows the schedule-aware answer."""

from bertcurve.stages.analyze import analyze
from bertcurve.stages.report import report
from bertcurve.stages.train import train


def test_the_report_shows_what_more_steps_would_buy(tiny_data_dir, tmp_path):
    run = tmp_path / "run"
    train(tiny_data_dir, run, preset="tiny", overrides={"max_steps": 48, "eval_every": 4}, quiet=True)
    res = analyze(run, metric="eval_loss", what_if_steps=144, bootstrap=0)
    assert set(res["what_if"]["predictions"]) == {"eval_loss", "eval_mlm_accuracy"}
    report([run])
    text = (run / "report.md").read_text(encoding="utf-8")
    assert "What would 144 steps buy?" in text and "训练 144 步能得到什么" in text
    assert "step extrapolation" in text
