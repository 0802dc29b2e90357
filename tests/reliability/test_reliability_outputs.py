"""No verb deletes or overwrites what it did not create (fsutil's output guards).

`export --force` replaces only an earlier export (its bertcurve_export.json marker);
`export-history`, `analyze`, `compare` and `report` never write over a run's or a data
dir's own files or over their inputs; `.`, `..` and symbolic links are resolved first.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import pytest

from bertcurve import layout
from bertcurve.cli import main
from bertcurve.errors import UserError

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "stages"))
from test_fillmask import make_run_dir  # noqa: E402


def _fingerprint(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` with its sha256: equal before and after means nothing was touched."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_data_dir) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("guard")
    evals = {10: 0.05, 20: 0.12, 30: 0.2, 40: 0.24, 50: 0.256}
    a = make_run_dir(root / "run-a", tiny_data_dir, steps=(10, 50), evals=evals)
    b = make_run_dir(root / "run-b", tiny_data_dir, steps=(10, 50), evals=evals)
    return a, b


def _cli_refuses(argv: list[str], capsys, *needles: str) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1, err
    for needle in needles:
        assert needle in err, err
    return err


# ----------------------------------------------------------------- export --force
def test_export_force_refuses_another_run(runs, capsys, tmp_path):
    a, b = runs
    before = _fingerprint(b)
    _cli_refuses(["export", str(a), "--out", str(b), "--force"], capsys, "run directory", "even with --force")
    assert _fingerprint(b) == before


def test_export_force_refuses_a_data_dir(runs, tiny_data_dir, capsys):
    before = _fingerprint(tiny_data_dir)
    _cli_refuses(["export", str(runs[0]), "--out", str(tiny_data_dir), "--force"], capsys, "data directory")
    assert _fingerprint(tiny_data_dir) == before


def test_export_force_refuses_any_other_folder(runs, tmp_path, capsys):
    mine = tmp_path / "photos"
    mine.mkdir()
    (mine / "cat.jpg").write_bytes(b"\xff\xd8 not really")
    _cli_refuses(["export", str(runs[0]), "--out", str(mine), "--force"], capsys, "did not write")
    assert (mine / "cat.jpg").read_bytes() == b"\xff\xd8 not really"


def test_export_force_refuses_dot_and_dotdot(runs, tmp_path, capsys, monkeypatch):
    inner = tmp_path / "work" / "inner"
    inner.mkdir(parents=True)
    (tmp_path / "work" / "notes.txt").write_text("mine")
    monkeypatch.chdir(tmp_path / "work")
    _cli_refuses(["export", str(runs[0]), "--out", ".", "--force"], capsys, "current folder")
    _cli_refuses(["export", str(runs[0]), "--out", "inner/..", "--force"], capsys, "current folder")
    assert (tmp_path / "work" / "notes.txt").read_text() == "mine" and inner.is_dir()


def test_export_force_resolves_links_before_judging(runs, tmp_path, capsys):
    link = tmp_path / "looks-new"
    link.symlink_to(runs[1], target_is_directory=True)
    before = _fingerprint(runs[1])
    _cli_refuses(["export", str(runs[0]), "--out", str(link), "--force"], capsys, "run directory")
    assert _fingerprint(runs[1]) == before and link.is_symlink()


def test_export_refuses_a_folder_holding_the_run(runs, capsys):
    _cli_refuses(["export", str(runs[0]), "--out", str(runs[0].parent), "--force"], capsys, "overlaps")


def test_export_force_replaces_an_earlier_export_only(runs, tmp_path, capsys):
    out = tmp_path / "exported"
    assert main(["export", str(runs[0]), "--out", str(out)]) == 0
    capsys.readouterr()
    _cli_refuses(["export", str(runs[0]), "--out", str(out)], capsys, "--force")
    (out / "stale.txt").write_text("from before")
    assert main(["export", str(runs[0]), "--out", str(out), "--force"]) == 0
    assert not (out / "stale.txt").exists() and (out / layout.EXPORT_INFO).is_file()
    # a marker with another format is not an export of ours
    (out / layout.EXPORT_INFO).write_text(json.dumps({"format": "something-else"}))
    capsys.readouterr()
    _cli_refuses(["export", str(runs[0]), "--out", str(out), "--force"], capsys, "did not write")


def test_export_to_a_link_of_an_earlier_export_keeps_the_link(runs, tmp_path, capsys):
    real = tmp_path / "real"
    assert main(["export", str(runs[0]), "--out", str(real)]) == 0
    link = tmp_path / "link"
    link.symlink_to(real, target_is_directory=True)
    assert main(["export", str(runs[0]), "--out", str(link), "--force"]) == 0
    assert link.is_symlink() and (real / layout.EXPORT_INFO).is_file()


# ----------------------------------------------------------- --out of result files
@pytest.mark.parametrize("name", [layout.METRICS, layout.RUN_CONFIG])
def test_export_history_never_overwrites_the_runs_files(runs, capsys, name):
    run = runs[0]
    before = _fingerprint(run)
    _cli_refuses(["export-history", str(run), "--out", str(run / name)], capsys, "Choose another --out")
    assert _fingerprint(run) == before


def test_export_history_out_dir_and_other_files(runs, tmp_path, capsys):
    folder = tmp_path / "hist"
    folder.mkdir()
    assert main(["export-history", str(runs[0]), "--out", str(folder)]) == 0
    assert (folder / layout.SEED_HISTORY).is_file()
    assert main(["export-history", str(runs[0]), "--out", str(folder / layout.SEED_HISTORY)]) == 0  # its own
    notes = tmp_path / "notes.json"
    notes.write_text('{"mine": true}')
    capsys.readouterr()
    _cli_refuses(["export-history", str(runs[0]), "--out", str(notes)], capsys, "not an earlier")
    assert notes.read_text() == '{"mine": true}'
    _cli_refuses(["export-history", str(runs[0]), "--out", str(runs[1])], capsys, "is a folder")


def test_export_history_into_a_data_dir_file(runs, tiny_data_dir, capsys):
    before = _fingerprint(tiny_data_dir)
    _cli_refuses(["export-history", str(runs[0]), "--out", str(tiny_data_dir / layout.DATA_META)], capsys,
                 "data directory")
    assert _fingerprint(tiny_data_dir) == before


@pytest.mark.parametrize("verb", ["analyze", "compare"])
def test_analyze_and_compare_never_overwrite_inputs(runs, tmp_path, capsys, verb):
    a, b = runs
    sources = [str(a)] if verb == "analyze" else [str(a), str(b)]
    for target in (a / layout.METRICS, b / layout.RUN_CONFIG, a / ".." / a.name / layout.METRICS):
        before = _fingerprint(a), _fingerprint(b)
        _cli_refuses([verb, *sources, "--out", str(target), "--bootstrap", "0"], capsys, "--out")
        assert (_fingerprint(a), _fingerprint(b)) == before


def test_analyze_out_is_an_input_log(tmp_path, capsys):
    log = tmp_path / "history.json"
    log.write_text(json.dumps({"steps": list(range(0, 1000, 50)), "mlm_acc": [i / 40 for i in range(20)]}))
    before = log.read_bytes()
    _cli_refuses(["analyze", str(log), "--out", str(log), "--bootstrap", "0"], capsys, "input of this command")
    assert log.read_bytes() == before
    link = tmp_path / "out.json"
    link.symlink_to(log)
    _cli_refuses(["analyze", str(log), "--out", str(link), "--bootstrap", "0"], capsys, "input of this command")
    assert log.read_bytes() == before
    out = tmp_path / "a.json"
    assert main(["analyze", str(log), "--out", str(out), "--bootstrap", "0"]) == 0
    assert main(["analyze", str(log), "--out", str(out), "--bootstrap", "0"]) == 0  # replaces its own result


def test_report_never_replaces_a_file_it_did_not_write(runs, tmp_path, capsys):
    out = tmp_path / "rep"
    out.mkdir()
    (out / layout.REPORT_MD).write_text("my own notes\n")
    _cli_refuses(["report", str(runs[0]), "--out", str(out)], capsys, "not an earlier")
    assert (out / layout.REPORT_MD).read_text() == "my own notes\n"


def test_guard_refuses_fifo_and_folder(tmp_path):
    from bertcurve.fsutil import guard_output_file

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(UserError, match="not a regular file"):
        guard_output_file(fifo)
    with pytest.raises(UserError, match="is a folder"):
        guard_output_file(tmp_path)
    assert guard_output_file(tmp_path / "new.json") == (tmp_path / "new.json").resolve()
