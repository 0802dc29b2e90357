"""`train --report-to`: metrics and config reach each named experiment tracker, and only those.

MLflow, W&B and trackio are optional packages: their tests run where the package is installed
(`pip install bertcurve[mlflow]`, ...), offline or against a local store, and skip otherwise.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from bertcurve import layout
from bertcurve.cli import main
from bertcurve.errors import UserError
from bertcurve.stages.train import train
from bertcurve.training.trackers import flatten, parse_report_to, scalars

QUICK = {"max_steps": 4, "warmup_steps": 1, "eval_every": 2, "save_every": 2, "log_every": 1}


def _records(run_dir: Path, split: str) -> dict[int, dict]:
    rows = [json.loads(line) for line in (run_dir / layout.METRICS).read_text().splitlines()]
    return {r["step"]: r for r in rows if r.get("split") == split}


def test_report_to_names_follow_hugging_face(monkeypatch):
    import bertcurve.training.trackers as trackers

    monkeypatch.setattr(trackers, "_installed", lambda module: module != "trackio")
    assert parse_report_to(None) == () and parse_report_to("none") == () and parse_report_to("") == ()
    assert parse_report_to(" TensorBoard , tensorboard") == ("tensorboard",)
    assert parse_report_to("all") == ("tensorboard", "mlflow", "wandb")  # those installed
    with pytest.raises(UserError, match="unknown tracker comet.*tensorboard, mlflow, wandb, trackio"):
        parse_report_to("tensorboard,comet")
    with pytest.raises(UserError, match="none cannot be combined"):
        parse_report_to("none,mlflow")


def test_scalars_and_flat_config():
    rec = {"step": 7, "split": "eval", "loss": 3, "mlm_accuracy": 0.25, "done": True, "note": "x"}
    assert scalars(rec) == {"eval/loss": 3.0, "eval/mlm_accuracy": 0.25}
    assert flatten({"train": {"optim": {"lr": 0.1}, "save_at": [1, 2]}, "preset": None}) == {
        "train.optim.lr": 0.1, "train.save_at": "[1, 2]", "preset": None}


@pytest.mark.parametrize("name", ["mlflow", "wandb", "trackio", "tensorboard"])
def test_missing_package_is_a_one_line_install_hint_before_any_work(name, tiny_data_dir, tmp_path,
                                                                     capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, name, None)  # what importlib sees when it is not installed
    out = tmp_path / "run"
    code = main(["train", "--data", str(tiny_data_dir), "--out", str(out), "--preset", "tiny",
                 "--report-to", f"{name}"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert f"pip install {name}" in err and "Traceback" not in err
    assert not out.exists()


def test_no_tracker_package_is_imported_unless_named(tiny_data_dir, tmp_path):
    code = f"""
import sys
from bertcurve.stages.train import train
train({str(tiny_data_dir)!r}, {str(tmp_path / 'run')!r}, preset="tiny", overrides={QUICK!r},
      quiet=True, report_to="none")
loaded = sorted(m for m in ("mlflow", "wandb", "trackio", "tensorboard", "torch.utils.tensorboard")
                if m in sys.modules)
assert not loaded, loaded
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert not (tmp_path / "run" / "tensorboard").exists()


def test_tensorboard_gets_every_metric_and_the_alias_still_works(tiny_data_dir, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    for how in ({"report_to": "tensorboard"}, {"tensorboard": True}):
        out = tmp_path / next(iter(how))
        train(tiny_data_dir, out, preset="tiny", overrides=QUICK, quiet=True, **how)
        events = EventAccumulator(str(out / "tensorboard"))
        events.Reload()
        evals = _records(out, "eval")
        got = {e.step: e.value for e in events.Scalars("eval/mlm_accuracy")}
        assert got.keys() == evals.keys()
        assert all(got[s] == pytest.approx(evals[s]["mlm_accuracy"]) for s in got)
        assert {e.step for e in events.Scalars("train/loss")} == set(_records(out, "train"))
        config_text = events.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()
        assert '"architecture": "BertForMaskedLM"' in config_text


def test_mlflow_run_with_a_local_store_and_resume_continues_it(tiny_data_dir, tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "bertcurve-test")
    out = tmp_path / "run"
    train(tiny_data_dir, out, preset="tiny", overrides=QUICK, quiet=True, report_to="mlflow")
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("bertcurve-test")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1 and runs[0].info.run_name == "run" and runs[0].info.status == "FINISHED"
    run_id = runs[0].info.run_id
    assert float(runs[0].data.params["train.optim.lr"]) == pytest.approx(2e-3)
    assert runs[0].data.params["architecture"] == "BertForMaskedLM"

    # resume to step 6: the same MLflow run continues
    train(tiny_data_dir, out, overrides={"max_steps": 6}, quiet=True, report_to="mlflow")
    assert len(client.search_runs([experiment.experiment_id])) == 1
    history = {m.step: m.value for m in client.get_metric_history(run_id, "eval/mlm_accuracy")}
    evals = _records(out, "eval")
    assert set(history) == set(evals) and max(history) == 6
    assert all(history[s] == pytest.approx(evals[s]["mlm_accuracy"]) for s in evals)
    losses = {m.step for m in client.get_metric_history(run_id, "train/loss")}
    assert losses == set(_records(out, "train"))


def test_wandb_offline_run_holds_the_metrics(tiny_data_dir, tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    out = tmp_path / "run"
    train(tiny_data_dir, out, preset="tiny", overrides=QUICK, quiet=True, report_to="wandb")
    runs = list((out / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    # the offline run log (what `wandb sync` uploads) holds every eval value and the config
    log = next(runs[0].glob("run-*.wandb")).read_bytes()
    for record in _records(out, "eval").values():
        assert json.dumps(record["mlm_accuracy"]).encode() in log
        assert json.dumps(record["loss"]).encode() in log
    assert b"eval/mlm_accuracy" in log and b"train/loss" in log and b"BertForMaskedLM" in log
    saved = json.loads((out / layout.TRACKERS_STATE).read_text())
    assert saved["runs"]["wandb"] in runs[0].name


def test_trackio_local_run_holds_the_metrics(tiny_data_dir, tmp_path, monkeypatch):
    if importlib.util.find_spec("trackio") is None:
        pytest.skip("trackio is not installed")
    if "trackio" in sys.modules:
        pytest.skip("trackio was imported earlier: its TRACKIO_DIR is fixed at import")
    monkeypatch.setenv("TRACKIO_DIR", str(tmp_path / "trackio"))  # read when trackio is imported
    monkeypatch.setenv("TRACKIO_PROJECT", "bertcurve-test")
    out = tmp_path / "run"
    train(tiny_data_dir, out, preset="tiny", overrides=QUICK, quiet=True, report_to="trackio")
    from trackio.sqlite_storage import SQLiteStorage

    logs = SQLiteStorage.get_logs("bertcurve-test", "run")
    got = {row["step"]: row["eval/mlm_accuracy"] for row in logs if "eval/mlm_accuracy" in row}
    evals = _records(out, "eval")
    assert set(got) == set(evals)
    assert all(got[s] == pytest.approx(evals[s]["mlm_accuracy"]) for s in evals)
    assert (tmp_path / "trackio" / "bertcurve-test.db").is_file()


def test_a_tracker_that_cannot_start_is_a_one_line_error(tiny_data_dir, tmp_path, capsys, monkeypatch):
    pytest.importorskip("mlflow")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "nosuchscheme://nowhere")
    code = main(["train", "--data", str(tiny_data_dir), "--out", str(tmp_path / "run"), "--preset", "tiny",
                 "--report-to", "mlflow", "--max-steps", "2", "--warmup-steps", "1"])
    err = capsys.readouterr().err
    assert code == 2 and "--report-to mlflow: could not start a run" in err
    assert len(err.strip().splitlines()) == 1, err
