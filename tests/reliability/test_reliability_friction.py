"""Defects a careful newcomer met (issue 19): one-line errors instead of tracebacks, no silent
wrong results, and messages that name an option that exists."""

from __future__ import annotations

import json
import math
import os
import shutil
import stat
from pathlib import Path

import pytest

from bertcurve import layout
from bertcurve.cli import main
from bertcurve.curves.logs import load_log
from bertcurve.errors import UserError


def _one_line_error(argv: list[str], capsys, *needles: str) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.startswith("bertcurve: error: ") and err.count("\n") == 1, err
    for needle in needles:
        assert needle in err, err
    return err


# ------------------------------------------------------------------ data dir damage
def test_odd_sized_ids_file_is_one_line(tiny_data_dir, tmp_path):
    from bertcurve.data.datadir import DataDir

    data = tmp_path / "data"
    shutil.copytree(tiny_data_dir, data)
    ids = data / layout.ids_file("train")
    with open(ids, "r+b") as handle:
        handle.truncate(ids.stat().st_size - 1)
    with pytest.raises(UserError, match="not a whole number of 2-byte values.*prepare --force"):
        DataDir(data).split("train")


def test_meta_json_that_is_a_list_is_one_line(tiny_data_dir, tmp_path):
    from bertcurve.data.datadir import DataDir

    data = tmp_path / "data"
    shutil.copytree(tiny_data_dir, data)
    (data / layout.DATA_META).write_text("[1, 2, 3]")
    with pytest.raises(UserError, match="not a JSON object"):
        DataDir(data)


# ------------------------------------------------------------------ training settings
def test_negative_seed_is_refused_before_anything_is_written(tiny_data_dir, tmp_path, capsys):
    run = tmp_path / "run"
    _one_line_error(["train", "--data", str(tiny_data_dir), "--out", str(run), "--preset", "tiny",
                     "--seed", "-1"], capsys, "seed must be in 0 .. 4294967295")
    assert not run.exists()


def test_warmup_beyond_max_steps_names_the_option_and_leaves_nothing(tiny_data_dir, tmp_path, capsys):
    run = tmp_path / "run"
    _one_line_error(["train", "--data", str(tiny_data_dir), "--out", str(run), "--preset", "demo",
                     "--max-steps", "100"], capsys, "--warmup-steps")
    assert not run.exists()  # no empty run dir holding a train.lock


def test_deeply_nested_config_is_one_line(tiny_data_dir, tmp_path, capsys):
    deep = tmp_path / "deep.json"
    deep.write_text('{"optim": ' * 5000 + "1" + "}" * 5000)
    _one_line_error(["train", "--data", str(tiny_data_dir), "--out", str(tmp_path / "r"), "--config", str(deep)],
                    capsys, "too deeply")


def test_a_section_that_is_not_an_object_is_named_as_such():
    from bertcurve.training.config import build_config

    with pytest.raises(UserError, match="optim is a section, give it a mapping of its settings"):
        build_config("tiny", {"optim": "fast"})


# ------------------------------------------------------------------ logs
def test_csv_with_huge_steps_or_values_is_one_line(tmp_path, capsys):
    steps = tmp_path / "steps.csv"
    steps.write_text("step,acc\n" + "".join(f"{i}e299,0.{i}\n" for i in range(1, 13)))
    values = tmp_path / "values.csv"
    values.write_text("step,acc\n" + "".join(f"{i * 100},{i}e306\n" for i in range(1, 13)))
    for path in (steps, values):
        _one_line_error(["analyze", str(path), "--bootstrap", "0", "--out", str(tmp_path / "a.json")], capsys,
                        "too large to analyse")


def test_one_na_cell_drops_that_cell_not_the_column(tmp_path):
    path = tmp_path / "log.csv"
    rows = [f"{s},{0.5 * (1 - math.exp(-s / 300)):.4f},{1e-3 * (1 - s / 2000):.3g}" for s in range(50, 1550, 50)]
    rows[7] = rows[7].split(",")[0] + ",n/a," + rows[7].split(",")[2]
    rows[9] = rows[9].split(",")[0] + ",oops," + rows[9].split(",")[2]
    path.write_text("step,accuracy,lr\n" + "\n".join(rows) + "\n")
    log = load_log(path)
    assert len(log.series["accuracy"]) == 28       # 30 rows, one n/a and one text cell dropped
    assert log.default_metric() == "accuracy"       # not silently another column (here lr)
    assert any("dropped 1 cell(s) that are not numbers" in n and "'oops'" in n for n in log.notes)


def test_analyze_and_report_agree_on_a_log_too_short_to_analyse(tmp_path, capsys):
    path = tmp_path / "short.csv"
    path.write_text("step,accuracy\n1,0.1\n2,0.2\n")
    _one_line_error(["analyze", str(path), "--out", str(tmp_path / "a.json")], capsys)
    assert main(["report", str(path), "--out", str(tmp_path / "rep")]) == 0
    assert "no analysis section" in capsys.readouterr().err  # the report says so, never silently


# ------------------------------------------------------------------ other verbs
def test_study_has_the_text_field_its_error_names(capsys):
    with pytest.raises(SystemExit):
        main(["study", "--help"])
    assert "--text-field" in capsys.readouterr().out


def test_exported_files_are_readable_by_others(tmp_path, tiny_data_dir):
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "stages"))
    from test_fillmask import make_run_dir

    from bertcurve.stages.export import export

    run = make_run_dir(tmp_path / "run", tiny_data_dir, steps=(10, 20))
    old = os.umask(0o022)
    try:
        out = export(run, tmp_path / "out")
    finally:
        os.umask(old)
    for path in out.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path


def test_dashboard_shows_learning_rate_zero_as_a_number():
    from bertcurve.stages.dashboard import _PAGE

    assert "r.lr ? " not in _PAGE and 'r.lr === null || r.lr === undefined ? "—"' in _PAGE


def test_train_warnings_carry_the_bertcurve_prefix(tiny_data_dir, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / layout.LOCK_FILE).write_text(json.dumps({"pid": 2 ** 22 + 12345, "host": "gone"}))
    main(["train", "--data", str(tiny_data_dir), "--out", str(run), "--preset", "tiny", "--max-steps", "2",
          "--warmup-steps", "1", "--quiet", "--threads", "1"])
    lines = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert lines and all(line.startswith("bertcurve: warning: ") for line in lines), lines


def test_fill_mask_on_a_long_text_speaks_of_the_window_only(tmp_path, tiny_data_dir, capsys):
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "stages"))
    from test_fillmask import make_run_dir

    run = make_run_dir(tmp_path / "run", tiny_data_dir, steps=(10, 20))
    body = "我们去公园散步。" * 300
    text = "☃" + body + "北京是中国的[MASK]都☂。" + body
    (tmp_path / "long.txt").write_text(text + "\n", encoding="utf-8")
    assert main(["fill-mask", str(run), "--file", str(tmp_path / "long.txt"), "--json"]) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out)["results"][0]
    assert "indexing errors" not in captured.err and "Token indices" not in captured.err
    assert result["unknown"] == ["☂"]                         # ☃ is outside the window the model saw
    start, end = result["kept"]
    assert f"kept text[{start}:{end}]" in captured.err        # one way of writing the range
    assert "☃" not in captured.err


def test_train_says_what_a_newcomer_needs_and_a_resume_keeps_the_preset(tiny_data_dir, tmp_path, capsys):
    run = tmp_path / "run"
    base = ["train", "--data", str(tiny_data_dir), "--out", str(run), "--threads", "1", "--save-every", "2"]
    assert main(base + ["--preset", "tiny", "--max-steps", "2", "--warmup-steps", "1",
                        "--eval-tokens", "100000000"]) == 0
    err = capsys.readouterr()
    text = err.out + err.err
    assert "pass --whole-word to mask whole words" in text           # prepared --whole-word, trained without
    assert "fewer than the 100,000,000 asked" in text                # a held-out set smaller than asked
    assert main(base + ["--max-steps", "4"]) == 0                      # resumed without --preset
    capsys.readouterr()
    assert json.loads((run / layout.RUN_CONFIG).read_text())["preset"] == "tiny"


def test_progress_lines_are_not_stale_or_from_start_up(monkeypatch):
    import io

    from bertcurve import progress as P

    clock = [1000.0]
    monkeypatch.setattr(P.time, "monotonic", lambda: clock[0])
    out = io.StringIO()
    bar = P.Progress(100, 40, stream=out, every_s=10)     # resumed at step 40
    clock[0] += 30                                        # start-up: loading, first slow steps
    bar.update(41, loss=5.0, lr=1e-3, tokens_per_s=864)
    assert out.getvalue() == ""                           # no line from the start-up interval
    for step in range(42, 101):
        clock[0] += 1
        bar.update(step, loss=5.0, lr=1e-3, tokens_per_s=11000)
        if step == 90:
            bar.eval_acc = 0.165
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("step 51/100") and lines[0].endswith("ETA 00:49"), lines[0]  # 1 step/s
    assert "eval_acc 0.1650 (step 90)" in lines[-1] and lines[-1].startswith("step 100/100")
