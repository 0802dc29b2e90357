"""`bertcurve plot`: every figure from a small real run and from the seed history, without warnings."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bertcurve.viz import figures as F
from bertcurve import layout
from bertcurve.cli import main
from bertcurve.errors import UserError
from bertcurve.stages.plot import ALL_FIGURES, SINGLE_FIGURES, plot

SEED = Path(__file__).resolve().parents[1] / "fixtures" / "seed" / "training_history_100k.json"


@pytest.fixture(scope="module")
def tiny_run(tiny_data_dir, tmp_path_factory) -> Path:
    """A real (tiny) training run with 9 held-out evaluations."""
    from bertcurve.stages.train import train

    out = tmp_path_factory.mktemp("plotrun") / "run"
    result = train(tiny_data_dir, out, preset="tiny", overrides={"eval_every": 5}, quiet=True)
    assert result.completed
    return out


def _plot_clean(caplog, *args, **kwargs):
    """Run plot() and fail on any warning (missing glyphs, font fallback, numpy, matplotlib)."""
    with warnings.catch_warnings(), caplog.at_level(logging.WARNING):
        warnings.simplefilter("error")
        result = plot(*args, **kwargs)
    noisy = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert noisy == []
    return result


def _is_png(path: Path, min_w: int = 800) -> None:
    with Image.open(path) as im:
        assert im.format == "PNG"
        assert im.size[0] >= min_w and im.size[1] >= 300


@pytest.mark.slow
def test_every_figure_from_a_small_real_run(tiny_run, caplog):
    result = _plot_clean(caplog, [tiny_run])
    assert result.out == tiny_run / layout.FIGURES_DIR        # default: RUN_DIR/figures
    assert sorted(p.name for p in result.files) == sorted(f"{n}.png" for n in SINGLE_FIGURES)
    assert result.skipped == []
    for path in result.files:
        _is_png(path)


@pytest.mark.slow
def test_every_figure_from_the_seed_history_and_a_comparison(tiny_run, tmp_path, caplog):
    seed = _plot_clean(caplog, [SEED], out=tmp_path / "seed", dpi=60)
    assert sorted(p.name for p in seed.files) == sorted(f"{n}.png" for n in SINGLE_FIGURES)
    assert seed.skipped == []
    out = tmp_path / "both"
    both = _plot_clean(caplog, [SEED, tiny_run], out=out, dpi=60, figures=["comparison", "training_curves"])
    names = {p.relative_to(out).as_posix() for p in both.files}
    # Several sources: one sub-folder per log, the comparison at the top.
    assert names == {"comparison.png", "training_history_100k/training_curves.png", "run/training_curves.png"}
    _is_png(out / "comparison.png", min_w=500)


def test_svg_and_languages(tmp_path, caplog):
    # A CSV log: one of the foreign formats plot must accept.
    steps = np.arange(100, 3100, 100)
    acc = 0.6 - 0.45 * np.exp(-steps / 800) + 0.01 * np.sin(steps)
    loss = 2.5 + 5 * np.exp(-steps / 700)
    csv = tmp_path / "log.csv"
    csv.write_text("step,mlm_acc,loss\n" + "".join(f"{s},{a},{l}\n" for s, a, l in zip(steps, acc, loss)),
                   encoding="utf-8")
    for lang, wanted in (("zh", ["training_curves", "forecast"]), ("en", ["training_curves"])):
        result = _plot_clean(caplog, [csv], out=tmp_path / lang, fmt="svg", lang=lang, figures=wanted)
        assert [p.name for p in result.files] == [f"{w}.svg" for w in wanted]
        text = result.files[0].read_text(encoding="utf-8")
        assert text.lstrip().startswith("<?xml") and "<svg" in text


def test_a_figure_the_log_cannot_support_is_skipped_not_fatal(tmp_path, caplog):
    csv = tmp_path / "acc_only.csv"
    csv.write_text("step,eval_accuracy\n" + "".join(f"{s},{0.1 + s / 1e4}\n" for s in range(10, 200, 10)),
                   encoding="utf-8")
    result = _plot_clean(caplog, [csv], out=tmp_path / "f", figures=["training_curves", "loss_analysis"])
    assert [p.name for p in result.files] == ["training_curves.png"]
    assert len(result.skipped) == 1 and "loss" in result.skipped[0]


def test_bad_input_is_one_line_error(tmp_path, capsys):
    assert main(["plot", str(tmp_path / "missing.jsonl")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("bertcurve: error:") and err.count("\n") == 1
    with pytest.raises(UserError, match="--format"):
        plot([tmp_path], fmt="pdf")
    with pytest.raises(UserError, match="--lang"):
        plot([tmp_path], lang="fr")
    with pytest.raises(UserError, match="unknown figure"):
        plot([tmp_path], figures=["nope"])
    assert set(SINGLE_FIGURES) < set(ALL_FIGURES)


# ------------------------------------------------------------------ pure helpers
def test_smooth_keeps_length_ends_and_constants():
    v = np.array([9.0, 7, 6, 5, 4.5, 4, 3.8, 3.5, 3.4, 3.3, 3.2])
    sm, w = F.smooth(v, 5)
    assert w == 5 and len(sm) == len(v)
    assert sm[0] == pytest.approx(v[0]) and sm[-1] == pytest.approx(v[-1])  # ends are not biased
    assert sm[2] == pytest.approx(v[:5].mean())
    flat, _ = F.smooth(np.full(50, 0.3))
    assert np.allclose(flat, 0.3)


def test_default_target_is_just_beyond_the_end():
    assert F.default_target("eval_mlm_accuracy", 0.574, 1) == pytest.approx(0.60)
    assert F.default_target("eval_mlm_accuracy", 0.60, 1) == pytest.approx(0.65)
    assert F.default_target("eval_loss", 3.0, -1) == pytest.approx(2.7)
    assert F.tail_mean(np.arange(100.0)) == pytest.approx(97.0)


def test_labels_and_unique_names():
    assert F.label("Loss", "损失", "both") == "Loss | 损失"
    assert F.label("Loss", "损失", "zh") == "损失"
    assert F.block("a", "b", "both") == "a\nb"

    class L:
        def __init__(self, name, path):
            self.name, self.path = name, Path(path)

    names = F.unique_names([L("run", "/a/x/run/metrics.jsonl"), L("run", "/a/y/run/metrics.jsonl")])
    assert names == ["x/run", "y/run"]


def test_fits_come_from_a_matching_analysis(tmp_path):
    from bertcurve.curves.fits import fit_curve
    from bertcurve.curves.forecast import CurveForecast
    from bertcurve.curves.logs import load_log

    steps = np.arange(100, 2100, 100)
    csv = tmp_path / "log.csv"
    csv.write_text("step,mlm_acc\n" + "".join(f"{s},{0.5 - 0.4 * np.exp(-s / 500):.5f}\n" for s in steps),
                   encoding="utf-8")
    log = load_log(csv)
    s = log.series["train_mlm_accuracy"]
    linear = fit_curve("linear", s.steps, s.values, direction=1)
    fc = CurveForecast(direction=1, limits=linear_limits(), level=0.9, fits={"linear": linear}, backtests=[],
                       weights={"linear": 1.0}, ranking=[], rule="given", reason="from analysis.json",
                       first_step=100.0, last_step=2000.0)
    analysis = {"metric": {"name": "train_mlm_accuracy", "level": 0.9}, "fits": [linear.to_dict()],
                "chosen_model": {"model": "linear", "reason": "from analysis.json"}, "forecaster": fc.to_dict()}
    fits = F.LogFits.compute(log, None, with_loss=False, analysis=analysis)
    assert fits.best.model == "linear" and fits.reason == "from analysis.json" and fits.level == 0.9
    # An analysis of another metric is ignored: the figures compute the forecast as analyze does.
    other = dict(analysis, metric={"name": "eval_loss"})
    assert F.LogFits.compute(log, None, with_loss=False, analysis=other).best.model != "linear"


def linear_limits():
    from bertcurve.curves.fits import Limits

    return Limits(0.0, 1.0)


def test_forecast_band_is_the_analysis_interval_at_its_level(tmp_path):
    """`analyze --level 0.8` and the figure drawn from its analysis.json show the same interval."""
    from matplotlib.collections import PolyCollection

    from bertcurve.curves.logs import load_log
    from bertcurve.stages.analyze import analyze

    steps = np.arange(100, 4100, 100)
    noise = np.random.default_rng(0).normal(0, 0.004, steps.size)
    csv = tmp_path / "log.csv"
    csv.write_text("step,eval_mlm_accuracy\n" + "".join(
        f"{s},{0.62 - 0.5 * (s / 1000) ** -0.6 + e:.5f}\n" for s, e in zip(steps, noise)), encoding="utf-8")
    res = analyze(csv, level=0.8, forecast=[8000], bootstrap=0, write=False)
    fits = F.LogFits.compute(load_log(csv), None, with_loss=False, analysis=res)
    assert fits.level == 0.8
    band = fits.forecast.interval([8000.0], fits.level)
    assert [band.low[0], band.high[0]] == pytest.approx(res["forecasts"][0]["pi"], rel=1e-9)
    fig = F.forecast(load_log(csv), lang="en", metric=fits.metric, fit=fits.forecast, level=fits.level)
    ax = fig.axes[0]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any(t.startswith("80% forecast interval") for t in legend)
    poly = next(c for c in ax.collections if isinstance(c, PolyCollection))
    verts = poly.get_paths()[0].vertices
    # the band's edges at the grid point nearest step 8000 match the analysis's interval there
    grid = np.linspace(100.0, 3.0 * 4000, 600)
    i = int(np.argmin(np.abs(grid - 8000)))
    at = fits.forecast.interval([grid[i]], 0.8)
    ys = verts[np.isclose(verts[:, 0], grid[i]), 1]
    assert min(ys) == pytest.approx(at.low[0]) and max(ys) == pytest.approx(at.high[0])


def test_a_study_folder_stands_for_its_run(tmp_path):
    from bertcurve.layout import resolve_run

    study_dir = tmp_path / "study"
    (study_dir / "run").mkdir(parents=True)
    assert resolve_run(study_dir) == study_dir                 # no log yet: left as given
    (study_dir / "run" / layout.METRICS).write_text("", encoding="utf-8")
    assert resolve_run(study_dir) == study_dir / "run"
    assert resolve_run(study_dir / "run") == study_dir / "run"


@pytest.mark.parametrize("n", [1, 2])
def test_a_run_that_just_started_draws_what_it_can(tmp_path, caplog, n):
    csv = tmp_path / "start.csv"
    csv.write_text("step,mlm_acc,loss,lr\n" + "".join(f"{(i + 1) * 10},{0.01 * i},{8 - 0.1 * i},1e-4\n"
                                                      for i in range(n)), encoding="utf-8")
    result = _plot_clean(caplog, [csv], out=tmp_path / "f", dpi=40)
    assert [p.name for p in result.files] == ["training_curves.png"]
    assert len(result.skipped) == 3 and all("point" in why for why in result.skipped)


def test_camel_case_loss_column_is_drawn_as_a_loss(tmp_path):
    """A TSV whose loss column is `EvalLoss`: analysed as a loss, and drawn as one."""
    from bertcurve.curves.logs import load_log
    from bertcurve.stages.analyze import analyze

    path = tmp_path / "run.tsv"
    path.write_text("Step\tEvalLoss\n" + "".join(f"{s}\t{2 + 3 * (s / 1000) ** -0.5:.4f}\n"
                                                  for s in range(1000, 41000, 1000)), encoding="utf-8")
    assert analyze(path, bootstrap=0, write=False)["metric"]["direction"] == -1
    log = load_log(path)
    assert "eval_loss" in log.series
    fig = F.training_curves(log, lang="en")
    loss_panel = fig.axes[2]
    assert loss_panel.lines, "the loss panel draws the EvalLoss column"
    for ax in fig.axes:
        labels = [t.get_text() for t in ax.get_xticklabels()]
        assert not any(lab.endswith("k") and lab.startswith("0.000") for lab in labels)
