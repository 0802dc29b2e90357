"""Hostile analysis input: NaN/inf/strings in logs, duplicated steps, torn lines, huge logs.

Documented handling (docs/reliability.md, bertcurve.curves.logs): non-finite values
and non-numeric strings are left out with a note, numeric strings are read as
numbers, a repeated step keeps the value logged last (what a resumed run
re-logged), a torn LAST line is ignored (a crash while appending), anything
else that is damaged is a one-line error.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bertcurve.errors import UserError
from bertcurve.curves.logs import load_log
from reltools import assert_clean_failure


def _curve(step: int) -> float:
    return 0.05 + 0.5 * (1 - math.exp(-step / 60)) + 0.01 * math.sin(step)


def _line(step: int, value, split: str = "train", **extra) -> str:
    rec = {"format": "bertcurve.metrics/1", "step": step, "split": split, "loss": 6 - step / 100,
           "mlm_accuracy": value, **extra}
    return json.dumps(rec, allow_nan=True)


def _write(path: Path, lines: list[str], tail: str = "\n") -> Path:
    path.write_text("\n".join(lines) + tail, encoding="utf-8")
    return path


def _cli(capsys, *args: str) -> subprocess.CompletedProcess:
    """``bertcurve ARGS`` in this process (an escaping exception fails the test, like a traceback)."""
    from bertcurve import cli

    capsys.readouterr()
    code = cli.main(list(args))
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(["bertcurve", *args], code, out, err)


def _strict_json(path: Path):
    def refuse(token):
        raise ValueError(f"{token} is not JSON")

    return json.loads(path.read_text(encoding="utf-8"), parse_constant=refuse)


@pytest.mark.slow
def test_nan_inf_null_and_strings_are_left_out_with_a_note(tmp_path, capsys):
    values = {}
    lines = []
    for step in range(1, 241):
        v = _curve(step)
        if step % 11 == 0:
            v = float("nan")
        elif step % 13 == 0:
            v = float("inf") if step % 2 else float("-inf")
        elif step % 17 == 0:
            v = None
        elif step % 19 == 0:
            v = "n/a"
        elif step % 23 == 0:
            v = f"{_curve(step)!r}"     # a numeric string is a number
        lines.append(_line(step, v))
        if isinstance(v, float) and math.isfinite(v):
            values[step] = v
        elif isinstance(v, str) and v != "n/a":
            values[step] = float(v)
    log = load_log(_write(tmp_path / "metrics.jsonl", lines))
    series = log.metric("train_mlm_accuracy")
    assert series.steps.tolist() == sorted(values)
    assert np.array_equal(series.values, np.array([values[s] for s in sorted(values)]))
    assert any("non-finite" in note for note in log.notes)

    out = tmp_path / "analysis.json"
    proc = _cli(capsys, "analyze", str(tmp_path / "metrics.jsonl"), "--out", str(out), "--bootstrap", "200")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    analysis = _strict_json(out)   # no NaN/Infinity tokens leak into the JSON we write
    assert analysis["format"] == "bertcurve.analysis/2"


def test_duplicated_steps_keep_the_value_logged_last(tmp_path):
    """A resumed run re-logs the steps after its checkpoint; those values are the truth."""
    lines = [_line(s, _curve(s)) for s in range(1, 101)]
    lines += [_line(s, _curve(s) + 0.25) for s in range(61, 101)]      # re-logged after a resume
    lines += [_line(50, 0.9)]                                            # out of order and repeated
    log = load_log(_write(tmp_path / "metrics.jsonl", lines))
    series = log.metric("train_mlm_accuracy")
    assert series.steps.tolist() == list(range(1, 101))
    assert series.values[49] == 0.9
    assert np.allclose(series.values[60:], [_curve(s) + 0.25 for s in range(61, 101)])
    assert any("repeated step" in note for note in log.notes)


def test_torn_last_line_is_ignored_but_a_damaged_middle_line_is_an_error(tmp_path):
    lines = [_line(s, _curve(s)) for s in range(1, 51)]
    torn = _write(tmp_path / "torn.jsonl", lines + [lines[-1][:20]], tail="")
    assert len(load_log(torn).metric("train_mlm_accuracy")) == 50
    middle = tmp_path / "middle.jsonl"
    _write(middle, lines[:20] + ['{"step": 21, "split": "tr'] + lines[21:])
    with pytest.raises(UserError, match=r":21 is not valid JSON"):
        load_log(middle)


DAMAGED_LOGS = {
    "deep.json": lambda: "[" * 100_000 + "]" * 100_000,
    "deep.jsonl": lambda: '{"step": 1, "x": ' + "[" * 100_000 + "]" * 100_000 + "}\n" + '{"step": 2}\n',
    "huge_int.jsonl": lambda: "\n".join('{"step": %d, "split": "train", "mlm_accuracy": 1%s}' % (i, "0" * 5000)
                                        for i in range(5)) + "\n",
    "string_steps.jsonl": lambda: "\n".join(json.dumps({"step": f"x{i}", "mlm_accuracy": 0.1})
                                            for i in range(5)) + "\n",
    "all_nan.jsonl": lambda: "\n".join(json.dumps({"step": i, "mlm_accuracy": None}) for i in range(5)) + "\n",
    "nul.jsonl": lambda: "\x00" * 1000,
    "not_utf8.csv": None,
    "wrong_format.jsonl": lambda: json.dumps({"format": "bertcurve.metrics/9", "step": 1}) + "\n",
    "seed_mismatch.json": lambda: json.dumps({"steps": [1, 2, 3], "mlm_acc": [0.1, 0.2]}),
}


@pytest.mark.parametrize("name", sorted(DAMAGED_LOGS))
def test_damaged_logs_are_one_line_errors(tmp_path, name, capsys):
    path = tmp_path / name
    content = DAMAGED_LOGS[name]
    if content is None:
        path.write_bytes("步骤,准确率\n1,0.1\n".encode("gbk") * 10)
    else:
        path.write_text(content(), encoding="utf-8")
    proc = _cli(capsys, "analyze", str(path), "--out", str(tmp_path / "a.json"))
    assert_clean_failure(proc, code=2)
    assert not (tmp_path / "a.json").exists()


@pytest.mark.parametrize("shape", ["straight", "constant", "two-points", "huge-steps"])
def test_degenerate_curves_do_not_crash(tmp_path, shape, capsys):
    steps = list(range(1, 201))
    if shape == "straight":
        lines = [_line(s, 0.1 + s / 1000) for s in steps]
    elif shape == "constant":
        lines = [_line(s, 0.25) for s in steps]
    elif shape == "two-points":
        lines = [_line(1, 0.1), _line(2, 0.2)]
    else:
        lines = [_line(s * 10**18, _curve(s)) for s in steps]
    path = _write(tmp_path / "metrics.jsonl", lines)
    proc = _cli(capsys, "analyze", str(path), "--out", str(tmp_path / "a.json"), "--bootstrap", "200")
    assert "Traceback" not in proc.stderr, proc.stderr
    if proc.returncode == 0:
        _strict_json(tmp_path / "a.json")
    else:
        assert_clean_failure(proc, code=2)


# ------------------------------------------------------------------ property test
_json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6),
                          st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8))
_json_values = st.recursive(_json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner, max_size=3)), max_leaves=6)


@st.composite
def _records(draw):
    rec = {}
    if draw(st.integers(0, 9)):  # usually a step, sometimes none
        rec["step"] = draw(st.one_of(st.integers(-5, 10**9), st.floats(allow_nan=True), _json_values))
    if draw(st.booleans()):
        rec["split"] = draw(st.sampled_from(["train", "eval", "", "测试"]))
    for key in draw(st.lists(st.sampled_from(["loss", "mlm_accuracy", "lr", "x"]), max_size=4)):
        rec[key] = draw(_json_values)
    return rec


@pytest.mark.slow
@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(records=st.lists(_records(), min_size=0, max_size=30), torn=st.booleans())
def test_any_jsonl_content_loads_or_is_a_user_error(records, torn, tmp_path_factory):
    path = tmp_path_factory.mktemp("prop") / "metrics.jsonl"
    text = "\n".join(json.dumps(r, allow_nan=True) for r in records) + "\n"
    if torn and text.strip():
        text = text[: len(text) // 2]
    path.write_text(text, encoding="utf-8")
    try:
        log = load_log(path)
    except UserError as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    for series in log.series.values():
        assert len(series) > 0
        assert np.all(np.isfinite(series.values)) and np.all(np.diff(series.steps) > 0)


# ------------------------------------------------------------------ memory
_MEASURE = textwrap.dedent("""
    import sys
    from bertcurve.curves.logs import load_log
    def status_kb(field):
        # VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent across fork+exec
        with open("/proc/self/status") as f:
            return next(int(l.split()[1]) for l in f if l.startswith(field + ":"))
    before = status_kb("VmRSS")
    log = load_log(sys.argv[1])
    print(before, status_kb("VmHWM"), sum(len(s) for s in log.series.values()))
""")


def write_big_log(path: Path, lines: int) -> int:
    """A realistic metrics.jsonl of ``lines`` training lines; returns its size in bytes."""
    template = ('{"format": "bertcurve.metrics/1", "step": %d, "split": "train", "loss": %.6f, '
                '"mlm_accuracy": %.6f, "lr": 0.001, "grad_norm": 1.25, "tokens_seen": %d, "epoch": 0.5, '
                '"elapsed_s": %.3f, "tokens_per_s": 1000.0}\n')
    with open(path, "w", encoding="utf-8") as handle:
        for start in range(1, lines + 1, 10_000):
            handle.write("".join(template % (i, 5 - i * 1e-6, 0.1 + i * 1e-7, i * 256, i * 0.01)
                                 for i in range(start, min(start + 10_000, lines + 1))))
    return path.stat().st_size


def measure_load(path: Path) -> tuple[int, int, int]:
    """(RSS before loading, peak RSS, values loaded) in KiB/count, in a fresh process."""
    proc = subprocess.run([sys.executable, "-c", _MEASURE, str(path)], capture_output=True, text=True,
                          timeout=1800)
    assert proc.returncode == 0, proc.stderr
    before, peak, values = (int(x) for x in proc.stdout.split())
    return before, peak, values


@pytest.mark.slow
def test_loading_a_long_log_needs_less_memory_than_the_file_size(tmp_path):
    """Streamed into float64 arrays: 16 bytes a value, below the ~230 bytes a line takes on disk.

    (The first reader held the text, a list of lines and Python floats: ~5x the file size,
    11 GB for a 10-million-line log.)
    """
    size = write_big_log(tmp_path / "metrics.jsonl", 100_000)
    before, peak, values = measure_load(tmp_path / "metrics.jsonl")
    assert values == 100_000 * 8
    growth = (peak - before) * 1024
    assert growth < size, f"loading a {size / 1e6:.0f} MB log grew RSS by {growth / 1e6:.0f} MB"


def test_unicode_line_separators_inside_values_do_not_split_records(tmp_path):
    """metrics.jsonl is written with ensure_ascii=False: U+2028/U+0085 may appear raw inside strings."""
    lines = [json.dumps({"format": "bertcurve.metrics/1", "step": s, "split": "train",
                         "mlm_accuracy": _curve(s), "note": "第\u2028行\u0085x\x1c"}, ensure_ascii=False)
             for s in range(1, 21)]
    log = load_log(_write(tmp_path / "metrics.jsonl", lines))
    assert len(log.metric("train_mlm_accuracy")) == 20
