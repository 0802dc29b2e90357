"""metrics.jsonl writer: complete lines, NaN as null, trimming on resume."""

from __future__ import annotations

import json

from bertcurve.training.metrics_log import MetricsWriter, read_records, truncate_after, without_timing


def test_lines_are_complete_versioned_json(tmp_path):
    path = tmp_path / "metrics.jsonl"
    with MetricsWriter(path) as w:
        w.write({"step": 1, "split": "train", "loss": 2.5, "grad_norm": float("nan")})
        w.write({"step": 1, "split": "eval", "loss": 3.0, "elapsed_s": 1.0})
    lines = path.read_text(encoding="utf-8").splitlines()
    first = json.loads(lines[0])
    assert list(first)[:3] == ["format", "step", "split"]
    assert first["format"] == "bertcurve.metrics/1" and first["grad_norm"] is None
    assert len(list(read_records(path))) == 2


def test_truncate_drops_partial_and_newer_lines(tmp_path):
    path = tmp_path / "metrics.jsonl"
    with MetricsWriter(path) as w:
        for step in range(1, 6):
            w.write({"step": step, "split": "train", "loss": 1.0 / step})
    with open(path, "ab") as handle:
        handle.write(b'{"format": "bertcurve.metrics/1", "step": 6, "sp')
    assert [r["step"] for r in read_records(path)] == [1, 2, 3, 4, 5]
    dropped = truncate_after(path, 3)
    assert dropped == 3
    assert [r["step"] for r in read_records(path)] == [1, 2, 3]
    assert path.read_bytes().endswith(b"\n")
    assert truncate_after(path, 3) == 0
    assert truncate_after(path, -1) == 3 and path.read_bytes() == b""


def test_without_timing_removes_only_timing_fields():
    rec = {"step": 1, "split": "eval", "loss": 1.0, "elapsed_s": 3.0, "eval_s": 0.1,
           "tokens_per_s": 9.0}
    assert without_timing(rec) == {"step": 1, "split": "eval", "loss": 1.0}
