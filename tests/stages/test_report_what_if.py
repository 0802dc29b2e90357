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


def test_the_forecast_figure_draws_the_what_if_run(tiny_data_dir, tmp_path):
    from bertcurve.curves.logs import load_log
    from bertcurve.viz import figures as F

    run = tmp_path / "run"
    train(tiny_data_dir, run, preset="tiny", overrides={"max_steps": 48, "eval_every": 4}, quiet=True)
    what_if = analyze(run, metric="eval_loss", what_if_steps=144, bootstrap=0)["what_if"]
    fig = F.forecast(load_log(run), lang="en", metric="eval_loss", what_if=what_if)
    ax = fig.axes[0]
    drawn = [line for line in ax.get_lines() if "what-if" in line.get_label()]
    assert len(drawn) == 1 and drawn[0].get_xdata()[-1] == 144
    assert ax.get_xlim()[1] >= 144
    low, high = what_if["predictions"]["eval_loss"]["pi"]
    assert ax.get_ylim()[0] <= low and ax.get_ylim()[1] >= high
