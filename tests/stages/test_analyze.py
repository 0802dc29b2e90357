"""`bertcurve analyze`: the seed's published numbers, analysis.json, and the one-line errors."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bertcurve import layout
from bertcurve.stages.analyze import analyze, cumulative_lr, summary_text
from bertcurve.curves.logs import Series
from bertcurve.training.config import EvalSetInfo, RunConfig, build_config

SEED_DIR = Path(__file__).resolve().parents[1] / "fixtures" / "seed"
SEED = SEED_DIR / "training_history_100k.json"


def strict_json(path: Path) -> dict:
    def no_constants(name):
        raise AssertionError(f"non-standard JSON constant {name} in {path}")

    return json.loads(Path(path).read_text(encoding="utf-8"), parse_constant=no_constants)


@pytest.fixture(scope="module")
def seed_result(tmp_path_factory):
    out = tmp_path_factory.mktemp("seed") / "seed.analysis.json"
    analyze(SEED, out=out, bootstrap=400, forecast=[200_000], target=0.6, steps_per_second=1.23)
    return strict_json(out)


def test_reproduces_the_seed_analysis_exactly(seed_result):
    published = json.loads((SEED_DIR / "analysis_100k_result.json").read_text())
    block = seed_result["seed_compatible"]
    assert block["pearson_correlation"] == pytest.approx(published["pearson_correlation"], abs=1e-12)
    assert block["pearson_correlation"] == pytest.approx(0.7869267513375451, abs=1e-12)
    assert block["r_squared"] == pytest.approx(published["r_squared"], abs=1e-12)
    for key in ("mean", "max", "min", "std"):
        assert block["mlm_stats"][key] == published["mlm_stats"][key], key
    assert block["loss_stats"] == published["loss_stats"]
    assert block["total_steps"] == published["total_steps"]
    assert block["data_points"] == published["data_points"]
    p = seed_result["correlation"]["pearson"]
    assert p["pvalue"] == pytest.approx(1.75e-211, rel=0.01)
    assert round(p["ci_low"], 3) == 0.762 and round(p["ci_high"], 3) == 0.809
    assert seed_result["correlation"]["spearman"]["statistic"] == pytest.approx(0.825, abs=5e-4)
    assert seed_result["correlation"]["kendall"]["statistic"] == pytest.approx(0.648, abs=5e-4)


def test_says_in_numbers_why_the_published_interval_is_too_narrow(seed_result):
    dep = seed_result["dependence"]
    assert dep["durbin_watson"] == pytest.approx(0.485, abs=0.005)
    assert dep["lag1_autocorrelation"] == pytest.approx(0.753, abs=0.005)
    assert 120 < dep["effective_sample_size"] < 160
    assert dep["ljung_box_pvalue"] < 1e-10
    assert dep["bootstrap_ci_width"] > 2 * dep["naive_ci_width"]
    assert dep["adjusted_ci_width"] > 2 * dep["naive_ci_width"]
    text = dep["explanation"]
    for number in ("[0.762, 0.809]", "0.48", "0.75", "141"):
        assert number in text
    assert seed_result["linear_trend"]["slope_se_hac"] > 3 * seed_result["linear_trend"]["slope_se"]


def test_seed_curve_is_saturating_and_the_line_loses_the_backtest(seed_result):
    ranking = {r["model"]: r for r in seed_result["backtests"]["ranking"]}
    chosen = seed_result["chosen_model"]["model"]
    assert chosen != "linear"
    assert ranking["linear"]["mean_rmse"] > 3 * ranking[chosen]["mean_rmse"]
    f = seed_result["forecasts"][0]
    assert f["step"] == 200_000 and f["beyond_lr_schedule"] is True
    assert f["pi"][0] < f["value"] < f["pi"][1] <= 1.0
    # the seed's linear cost-benefit extrapolation claimed 87.2 % at 200K; the backtested curve says far less
    assert f["value"] < 0.75 < f["by_model"]["linear"]
    lr = seed_result["lr_schedule"]
    assert lr["decays_to_near_zero"] and lr["quarters"][3]["lr_area_share"] < 0.1
    assert seed_result["phases"][0]["slope_per_1k_steps"] > 10 * abs(seed_result["phases"][3]["slope_per_1k_steps"])
    fits = {f["model"]: f for f in seed_result["fits"]}
    assert set(fits) == {"power_law", "exp_saturation", "log_linear", "logistic_log", "linear",
                         "power_law_from_knee", "exp_saturation_from_knee", "log_linear_from_knee"}
    for f in fits.values():
        if f["converged"] and not f["model"].endswith("_from_knee"):   # those fit fewer points
            assert f["r_squared"] > fits["linear"]["r_squared"] - 1e-12
            assert set(f["params"]) == set(f["param_names"])
    assert seed_result["format"] == layout.ANALYSIS_FORMAT
    assert seed_result["target"]["first_logged_at"] is not None  # one noisy batch touched 0.6 ...
    assert seed_result["verdict"] and "not [0.762, 0.809]" in " ".join(seed_result["verdict"])
    lc = seed_result["loss_curve"]
    assert lc["metric"] == "train_loss" and lc["thinned"] is None
    assert lc["chosen_model"]["model"].removesuffix("_from_knee") in {"power_law", "exp_saturation", "log_linear"}
    loss_fits = {f["model"]: f for f in lc["fits"]}
    assert "logistic_log" not in loss_fits and loss_fits["power_law"]["formula"] == "a + b·t^(−c)"
    assert 0 < lc["forecasts"][0]["value"] < 2.973  # the loss keeps falling past the last logged 2.97


def _run_dir(tmp_path: Path, n: int = 60, total: int = 6000) -> Path:
    """A synthetic bertcurve run: cosine LR, rising accuracy, eval every 10 logs, elapsed time."""
    run = tmp_path / "run"
    run.mkdir()
    rng = np.random.default_rng(0)
    lines = []
    for i in range(1, n + 1):
        step = i * total // n
        lr = 1e-3 * 0.5 * (1 + math.cos(math.pi * step / total))
        acc = 0.6 - 0.5 * math.exp(-step / 1500) + rng.normal(0, 0.01)
        lines.append({"format": layout.METRICS_FORMAT, "step": step, "split": "train", "loss": 8 - 10 * acc,
                      "mlm_accuracy": acc, "lr": lr, "grad_norm": 1.0, "tokens_seen": step * 4096,
                      "elapsed_s": step / 20.0, "tokens_per_s": 4096 * 20.0})
        if i % 5 == 0:
            lines.append({"format": layout.METRICS_FORMAT, "step": step, "split": "eval", "loss": 8 - 10 * acc,
                          "mlm_accuracy": acc + 0.01, "mlm_top5_accuracy": acc + 0.2, "mlm_accuracy_se": 0.003,
                          "masked_tokens": 20000, "tokens_seen": step * 4096, "elapsed_s": step / 20.0, "eval_s": 1.0})
    (run / layout.METRICS).write_text("".join(json.dumps(x) + "\n" for x in lines))
    return run


def test_run_dir_writes_analysis_json_in_the_run(tmp_path):
    run = _run_dir(tmp_path)
    res = analyze(run, metric="train_mlm_accuracy", target=0.55, bootstrap=100)
    path = run / layout.ANALYSIS
    assert res["path"] == str(path)
    on_disk = strict_json(path)
    assert on_disk["metric"]["name"] == "train_mlm_accuracy"
    assert on_disk["throughput"]["steps_per_second"] == pytest.approx(20.0)
    t = on_disk["target"]
    assert t["step"] is not None and t["within_log"] is True  # 0.6 - 0.5 exp(-s/1500) passes 0.55 at ~3,700
    assert t["step"] == pytest.approx(1500 * math.log(10), rel=0.15)
    assert on_disk["lr_schedule"]["decays_to_near_zero"] is True
    assert on_disk["forecasts"][0]["step"] == 12000
    assert on_disk["headline"]["final_eval_mlm_accuracy"] is not None
    assert "verdict" in summary_text(on_disk) or "结论" in summary_text(on_disk)
    # default metric is the held-out one (12 evaluations: too few for a bootstrap)
    res2 = analyze(run, bootstrap=100, out=tmp_path / "eval.json")
    assert res2["metric"]["name"] == "eval_mlm_accuracy" and res2["metric"]["n"] == 12
    assert res2["dependence"]["block_bootstrap"] is None
    assert any("no block bootstrap" in n for n in res2["source"]["notes"])
    # a target beyond the log: 0.6 - 0.5 exp(-s/1500) = 0.598 at s = 1500 ln 250 ~ 8,300; 20 steps/s
    res3 = analyze(run, metric="train_mlm_accuracy", target=0.598, bootstrap=0, write=False)
    t3 = res3["target"]
    assert t3["within_log"] is False
    assert t3["hours_from_last_step"] == pytest.approx((t3["step"] - 6000) / 20 / 3600)
    assert t3["step_range"][0] is None or t3["step_range"][0] <= t3["step"]


def test_cumulative_lr_is_the_integral():
    lr = Series(steps=np.array([0, 10, 20, 30]), values=np.array([1.0, 1.0, 0.5, 0.0]))
    assert cumulative_lr(lr, np.array([0.0, 10, 20, 30, 15])) == pytest.approx([0, 10, 17.5, 20, 13.75])


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bertcurve", *args], capture_output=True, text=True,
                          timeout=120, cwd=cwd)


def _history(path: Path, steps, acc) -> Path:
    path.write_text(json.dumps({"steps": list(steps), "mlm_acc": list(acc), "loss": [1.0] * len(acc)}))
    return path


def test_cli_errors_are_one_line(tmp_path, capsys, monkeypatch):
    from bertcurve import cli

    monkeypatch.chdir(tmp_path)
    empty = tmp_path / "empty.json"
    empty.write_text("")
    short = _history(tmp_path / "short.json", [1, 2, 3, 4], [0.1, 0.2, 0.3, 0.4])
    flat = _history(tmp_path / "flat.json", range(1, 11), [0.3] * 10)
    text = tmp_path / "bad.csv"
    text.write_text("step,acc\n" + "".join(f"{i},{0.1 * i}\n" for i in range(1, 8)) + "8,high\n")
    ok = _history(tmp_path / "ok.json", range(1, 11), [0.1 * i for i in range(1, 11)])
    cases = [
        ([str(tmp_path / "missing.json")], "log not found"),
        ([str(empty)], "is empty"),
        ([str(short)], "at least 5"),
        ([str(flat)], "constant"),
        ([str(text), "--metric-col", "acc"], "not a number"),
        ([str(ok), "--metric", "eval_bleu"], "choose one of: train_loss, train_mlm_accuracy"),
    ]
    for args, message in cases:
        code = cli.main(["analyze", *args, "--out", str(tmp_path / "x.json")])
        err = capsys.readouterr().err
        assert code == 2, (args, err)
        assert message in err, (args, err)
        assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x.json").exists()
    assert cli.main(["analyze", str(ok), "--bootstrap", "50"]) == 0
    out = capsys.readouterr().out
    assert (tmp_path / f"ok.{layout.ANALYSIS}").is_file()
    assert "Pearson r" in out and "结论 verdict" in out


def test_cli_process_error_has_no_traceback(tmp_path):
    proc = run_cli("analyze", str(tmp_path / "missing.json"))
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"bertcurve: error: log not found: {tmp_path / 'missing.json'}"


def test_cli_on_the_seed_prints_the_table(tmp_path, capsys):
    from bertcurve import cli

    assert cli.main(["analyze", str(SEED), "--bootstrap", "200", "--out", str(tmp_path / "a.json")]) == 0
    out = capsys.readouterr().out
    assert "0.7869" in out and "[0.762, 0.809]" in out
    assert "effective n" in out and "141 of 1000" in out
    chosen = json.loads((tmp_path / "a.json").read_text())["chosen_model"]["model"]
    assert f"{chosen} *" in out  # the backtest's choice is marked in the table


def test_held_out_accuracy_at_the_constant_guess_is_called_out(tmp_path):
    run = tmp_path / "r"
    run.mkdir()
    saved = RunConfig(train=build_config("tiny"), eval_set=EvalSetInfo(constant_guess_accuracy=0.03))
    (run / layout.RUN_CONFIG).write_text(json.dumps(saved.to_dict()))
    rows = [{"format": layout.METRICS_FORMAT, "step": s, "split": "eval", "loss": 7.0 - s / 1000,
             "mlm_accuracy": 0.0246 if s else 0.0} for s in range(0, 80, 10)]
    (run / layout.METRICS).write_text("".join(json.dumps(r) + "\n" for r in rows))
    res = analyze(run, bootstrap=0, target=0.1, write=False)
    text = " ".join(res["verdict"])
    assert "not above 0.0300" in text and "character frequencies" in text
    assert res["chosen_model"]["model"] is None and res["forecasts"][0].get("value") is None
    assert "cannot be estimated" in text
    assert "failed" in summary_text(res)


def test_every_source_kind_analyses_end_to_end(tmp_path):
    rng = np.random.default_rng(1)
    steps = np.arange(50, 5050, 50)
    acc = 0.55 - 0.45 * np.exp(-steps / 1200) + rng.normal(0, 0.01, steps.size)
    # Hugging Face trainer_state.json with eval entries
    hf = tmp_path / "hf"
    hf.mkdir()
    history = [{"step": int(s), "loss": float(8 - 10 * a), "learning_rate": 5e-5} for s, a in zip(steps, acc)]
    history += [{"step": int(s), "eval_accuracy": float(a), "eval_loss": float(8 - 10 * a)}
                for s, a in zip(steps[::5], acc[::5])]
    (hf / "trainer_state.json").write_text(json.dumps({"log_history": history}))
    res = analyze(hf, bootstrap=50, write=False)
    assert res["source"]["kind"] == "hf-trainer-state" and res["metric"]["name"] == "eval_mlm_accuracy"
    assert res["metric"]["n"] == 20 and res["chosen_model"]["model"] is not None
    # CSV with shuffled, repeated rows: the notes say what was done
    csv_path = tmp_path / "log.csv"
    order = rng.permutation(steps.size)
    lines = ["global_step,accuracy"] + [f"{steps[i]},{acc[i]}" for i in order] + [f"{steps[0]},{acc[0]}"]
    csv_path.write_text("\n".join(lines) + "\n")
    res = analyze(csv_path, metric_col="accuracy", bootstrap=50, out=tmp_path / "csv.json")
    assert res["metric"]["name"] == "accuracy" and res["metric"]["n"] == steps.size
    notes = " ".join(res["source"]["notes"])
    assert "sorted by step" in notes and "repeated step" in notes
    assert res["correlation"]["pearson"]["statistic"] == pytest.approx(np.corrcoef(steps, acc)[0, 1], abs=1e-12)
