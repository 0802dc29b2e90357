"""Run the reliability suite's trials at larger counts and print a summary.

    python bench/reliability.py                      # defaults: 30 kill trials, 3 rounds of faults, ...
    python bench/reliability.py --kill-trials 100 --fuzz-runs 5000 --log-lines 10000000

Counts: kill-anywhere trials (SIGKILL at a random moment/phase, resume, compare
bit for bit with an uninterrupted run), corrupted checkpoints, crafted
pickles, write failures (ulimit -f, ENOSPC, EROFS), lock checks, hostile
corpus files (random generator + atheris when installed), hostile logs, the
time and peak RSS of loading a long metrics.jsonl, and (issue 19) --out targets that
would destroy a run, data dir, input or user file, inputs truncated/appended/rewritten
while prepare reads them, growing/truncated/rotated logs under the dashboard's tail,
2 GB sparse files (peak RSS and time of analyze, plot, compare, export-history and the
dashboard), foreign Host headers, and run/metric names with $, | and <!--. Each
group prints inputs tried, handled cleanly and failures. Everything uses the same
fault injectors as tests/reliability (reltools.py). Prints one summary block
for the closing note; exits 1 if any check failed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "reliability"))

import reltools  # noqa: E402


def _prepare_tiny(work: Path) -> Path:
    from bertcurve.stages.prepare import prepare

    return prepare(["demo"], work / "data", max_sentences=3000, whole_word=True, val_fraction=0.1,
                   progress=False)


class Tally:
    def __init__(self) -> None:
        self.rows: dict[str, Counter] = {}
        self.failures: list[str] = []

    def add(self, group: str, key: str, n: int = 1) -> None:
        self.rows.setdefault(group, Counter())[key] += n

    def fail(self, group: str, message: str) -> None:
        self.add(group, "failures")
        self.failures.append(f"{group}: {message}")


# ------------------------------------------------------------------ train-side trials
def kill_trials(data: Path, reference: Path, work: Path, n: int, seed: int, tally: Tally) -> None:
    rng = random.Random(seed)
    for i in range(n):
        run = work / f"kill-{i}"
        point = reltools.KILL_POINTS[i % len(reltools.KILL_POINTS)] if i < 2 * len(reltools.KILL_POINTS) \
            else None
        result = reltools.kill_trial(i, data, run, reference, rng, point=point)
        tally.add("kill", "trials")
        tally.add("kill", f"phase {result.point}")
        if result.killed:
            tally.add("kill", "faults injected")
        if result.problems or not result.killed:
            tally.fail("kill", f"trial {i} ({result.point}, step {result.step}): {result.problems}")
        shutil.rmtree(run, ignore_errors=True)


def fault_trials(data: Path, reference: Path, work: Path, rounds: int, tally: Tally) -> None:
    import test_reliability_faults as tf  # the suite's corruption and write-fault catalogue

    interrupted = work / "interrupted"
    outcome = reltools.run_child(reltools.train_argv(data, interrupted), point="after-eval-line", step=16)
    assert outcome.killed, outcome

    def check_equal(run: Path) -> str | None:
        try:
            tf._assert_equals_reference(run, reference)
        except AssertionError as exc:
            return f"not identical to the uninterrupted run: {exc}"
        return None

    for r in range(rounds):
        for name, corrupt in sorted(tf.CORRUPTIONS.items()):
            case = work / f"corrupt-{r}-{name}"
            run = case / "run"
            shutil.copytree(interrupted, run)
            corrupt(run / tf.STEP_12)
            res = reltools.run_child(reltools.train_argv(data, run), quiet=False, log=case / "log.txt")
            tally.add("corrupted checkpoints", "faults injected")
            warned = [ln for ln in res.output.splitlines() if "step-00000012" in ln and "damaged" in ln]
            problem = (f"exit {res.exitcode}" if res.exitcode != 0 else
                       "traceback" if "Traceback" in res.output else
                       "no one-line warning" if len(warned) != 1 else check_equal(run))
            if problem:
                tally.fail("corrupted checkpoints", f"{name}: {problem}")
            shutil.rmtree(case, ignore_errors=True)

        for style in ("raw-pickle", "torch-save-zip"):
            case = work / f"pickle-{r}-{style}"
            run = case / "run"
            shutil.copytree(interrupted, run)
            marker = case / "PWNED"
            state = run / tf.STEP_12 / "training_state.pt"
            if style == "raw-pickle":
                import pickle

                state.write_bytes(pickle.dumps(tf._Payload(marker)))
            else:
                import torch

                torch.save({"optimizer": tf._Payload(marker)}, state)
            tf._rewrite_checksum(run / tf.STEP_12, "training_state.pt")
            res = reltools.run_child(reltools.train_argv(data, run), quiet=False, log=case / "log.txt")
            tally.add("crafted pickles", "faults injected")
            if marker.exists():
                tally.fail("crafted pickles", f"{style}: the pickle was EXECUTED")
            elif res.exitcode != 0 or check_equal(run):
                tally.fail("crafted pickles", f"{style}: exit {res.exitcode} / {check_equal(run)}")
            shutil.rmtree(case, ignore_errors=True)

        for name, setup in sorted(tf.WRITE_FAULTS.items()):
            case = work / f"write-{r}-{name}"
            run = case / "run"
            case.mkdir(parents=True)
            res = reltools.run_child(reltools.train_argv(data, run), quiet=False, log=case / "log.txt",
                                     setup=setup)
            tally.add("write failures", "faults injected")
            errors = [ln for ln in res.output.splitlines() if ln.startswith("bertcurve: error:")]
            problem = None
            if res.exitcode in (0, None) or "Traceback" in res.output or len(errors) != 1:
                problem = f"exit {res.exitcode}, {len(errors)} error line(s), traceback={'Traceback' in res.output}"
            elif reltools.visible_checkpoints_verify(run):
                problem = "a visible checkpoint does not verify"
            else:
                again = reltools.run_child(reltools.train_argv(data, run))
                problem = f"resume exit {again.exitcode}" if again.exitcode != 0 else check_equal(run)
            if problem:
                tally.fail("write failures", f"{name}: {problem}")
            shutil.rmtree(case, ignore_errors=True)

        # one writer: a stale lock of a dead process is taken over
        case = work / f"lock-{r}"
        run = case / "run"
        shutil.copytree(interrupted, run)
        dead = subprocess.Popen([sys.executable, "-c", "pass"])
        dead.wait()
        (run / "train.lock").write_text(json.dumps({"pid": dead.pid, "host": "x"}) + "\n")
        res = reltools.run_child(reltools.train_argv(data, run), quiet=False, log=case / "log.txt")
        tally.add("lock", "stale locks taken over")
        if res.exitcode != 0 or "stale lock" not in res.output:
            tally.fail("lock", f"stale lock: exit {res.exitcode}")
        shutil.rmtree(case, ignore_errors=True)


# ------------------------------------------------------------------ hostile corpus input
_PIECES = None


def _hostile_bytes(rng: random.Random) -> tuple[str, bytes]:
    from reltools import EMOJI, ODD_SEPARATORS, REAL_SENTENCES, RTL_AND_FORMAT

    specials = RTL_AND_FORMAT + EMOJI + ODD_SEPARATORS + ["\x00", "\ud800", "\udfff", "\n"]
    chunks = []
    for _ in range(rng.randint(1, 40)):
        kind = rng.random()
        if kind < 0.5:
            text = rng.choice(REAL_SENTENCES)
        elif kind < 0.7:
            text = "".join(chr(rng.randint(0, 0x10FFFF)) for _ in range(rng.randint(0, 60)))
        else:
            text = "".join(rng.choice(specials) for _ in range(rng.randint(1, 8)))
        if rng.random() < 0.3:
            pos = rng.randint(0, len(text))
            text = text[:pos] + "".join(rng.choice(specials) for _ in range(3)) + text[pos:]
        enc = rng.choice(["utf-8", "utf-8", "gb18030", "utf-16-le", "raw"])
        if enc == "raw":
            raw = os.urandom(rng.randint(0, 64))
            # NUL bytes make prepare refuse the file as binary at once; keep them rare
            chunks.append(raw if rng.random() < 0.1 else raw.replace(b"\x00", b""))
        elif enc == "utf-16-le":
            chunks.append(text.encode("utf-16-le", "surrogatepass"))
        else:
            chunks.append(text.encode(enc, "surrogatepass" if enc == "utf-8" else "replace"))
    suffix = rng.choice([".txt", ".jsonl", ".json"])
    if suffix == ".txt":
        return suffix, b"\n".join(chunks)
    texts = [c.decode("utf-8", "surrogateescape") for c in chunks]
    if suffix == ".jsonl":
        lines = []
        for t in texts:
            r = rng.random()
            if r < 0.7:
                lines.append(json.dumps({"text": t}).encode())
            elif r < 0.85:
                depth = rng.randint(1, 100_000)
                lines.append(b"[" * depth + b"]" * depth)
            else:
                lines.append(t.encode("utf-8", "surrogateescape"))
        return suffix, b"\n".join(lines)
    return suffix, json.dumps({"sentences": texts}).encode()


def hostile_corpus(work: Path, n: int, seed: int, tally: Tally) -> None:
    from bertcurve.errors import UserError
    from bertcurve.stages.prepare import prepare
    from reltools import valid_data_dir

    rng = random.Random(seed)
    slowest = (0.0, 0)
    quiet = open(os.devnull, "w")  # prepare's per-file warnings would drown the summary
    for i in range(n):
        suffix, data = _hostile_bytes(rng)
        case = work / f"corpus-{i}"
        case.mkdir()
        path = case / f"input{suffix}"
        path.write_bytes(data)
        started = time.perf_counter()
        tally.add("hostile corpus", "inputs fuzzed (random)")
        try:
            with contextlib.redirect_stderr(quiet):
                prepare([path], case / "out", min_chars=5, val_fraction=0.5, progress=False)
            valid_data_dir(case / "out")
            tally.add("hostile corpus", "valid data sets")
        except UserError as exc:
            tally.add("hostile corpus", "one-line refusals")
            if "\n" in str(exc).strip() or (case / "out").exists():
                tally.fail("hostile corpus", f"input {i}: bad refusal {exc!r}")
        except Exception as exc:  # noqa: BLE001 - any other exception is the finding
            tally.fail("hostile corpus", f"input {i} ({suffix}): {type(exc).__name__}: {exc}")
            shutil.copy(path, work.parent / f"crash-{i}{suffix}")
        slowest = max(slowest, (time.perf_counter() - started, len(data)))
        shutil.rmtree(case, ignore_errors=True)
    tally.add("hostile corpus", f"slowest input {slowest[0]:.2f} s ({slowest[1] / 1e3:,.0f} kB)", 0)


def atheris_fuzz(work: Path, runs: int, seconds: int, tally: Tally) -> None:
    try:
        import atheris  # noqa: F401
    except ImportError:
        tally.add("hostile corpus", "atheris not installed (pip install atheris)", 0)
        return
    from reltools import REAL_SENTENCES

    seeds = work / "seeds"
    seeds.mkdir()
    (seeds / "t").write_bytes(b"t" + "\n".join(REAL_SENTENCES).encode())
    (seeds / "l").write_bytes(b"l" + "\n".join(json.dumps({"text": s}) for s in REAL_SENTENCES).encode())
    (seeds / "j").write_bytes(b"j" + json.dumps({"sentences": REAL_SENTENCES}).encode())
    proc = subprocess.run([sys.executable, str(ROOT / "tests" / "reliability" / "fuzz_prepare.py"), str(seeds),
                           f"-runs={runs}", f"-max_total_time={seconds}", "-max_len=8192",
                           f"-artifact_prefix={work.parent}/"], capture_output=True, text=True, cwd=work)
    done = [ln for ln in proc.stderr.splitlines() if ln.startswith("Done ")]
    count = int(done[-1].split()[1]) if done else 0
    tally.add("hostile corpus", "inputs fuzzed (atheris)", count)
    if proc.returncode != 0:
        tally.fail("hostile corpus", "atheris found a crash: " + " | ".join(proc.stderr.splitlines()[-8:]))


# ------------------------------------------------------------------ hostile logs
def hostile_logs(work: Path, n: int, seed: int, tally: Tally) -> None:
    from bertcurve.errors import UserError
    from bertcurve.curves.logs import load_log

    rng = random.Random(seed)
    values = [None, True, "abc", "0.5", float("nan"), float("inf"), -1e308, 1e308, [], {"a": 1}, "",
              "[" * 5000 + "]" * 5000]
    for i in range(n):
        lines = []
        for s in range(rng.randint(0, 200)):
            rec = {"step": rng.choice([s, s, s, s // 2, "x", None, 1e30 * s, -s])}
            for key in rng.sample(["loss", "mlm_accuracy", "lr", "split"], rng.randint(0, 4)):
                rec[key] = rng.random() if rng.random() < 0.7 else rng.choice(values)
            lines.append(json.dumps(rec, allow_nan=True))
        text = "\n".join(lines) + "\n"
        if rng.random() < 0.2:
            text = text[: rng.randint(0, len(text))]
        path = work / f"log-{i}.jsonl"
        path.write_text(text)
        tally.add("hostile logs", "logs fuzzed")
        try:
            load_log(path)
            tally.add("hostile logs", "loaded")
        except UserError:
            tally.add("hostile logs", "one-line refusals")
        except Exception as exc:  # noqa: BLE001
            tally.fail("hostile logs", f"log {i}: {type(exc).__name__}: {exc}")
        path.unlink()


def long_log(work: Path, lines: int, tally: Tally) -> None:
    import test_reliability_analysis as ta

    path = work / "long" / "metrics.jsonl"
    path.parent.mkdir()
    started = time.perf_counter()
    size = ta.write_big_log(path, lines)
    written = time.perf_counter() - started
    started = time.perf_counter()
    before, peak, values = ta.measure_load(path)
    seconds = time.perf_counter() - started
    growth = (peak - before) * 1024
    tally.add("long log", f"{lines:,} lines, {size / 1e6:,.0f} MB (written in {written:.0f} s): "
                          f"load_log {seconds:.1f} s, {values:,} values, peak RSS {peak / 1024:,.0f} MiB "
                          f"(+{growth / 2**20:,.0f} MiB = {growth / size:.2f}x the file)", 0)
    shutil.rmtree(path.parent, ignore_errors=True)



# ------------------------------------------------------------------ issue 19: what the user owns, input limits
def _clean_refusal(argv: list[str]) -> str | None:
    """Run the CLI in process; None when it refused in one line (exit 2, no traceback), else what went wrong."""
    import io
    from contextlib import redirect_stderr, redirect_stdout

    from bertcurve.cli import main as cli

    err, out = io.StringIO(), io.StringIO()
    try:
        with redirect_stderr(err), redirect_stdout(out):
            code = cli(argv)
    except BaseException as exc:  # noqa: BLE001 - a crash is what this counts
        return f"{type(exc).__name__}: {exc}"
    text = err.getvalue()
    if code != 2 or "Traceback" in text or text.count("bertcurve: error:") != 1:
        return f"exit {code}: {text.strip()[-300:]}"
    return None


def _fingerprint(folder: Path) -> dict[str, str]:
    import hashlib

    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def wrong_out_targets(work: Path, tally: Tally) -> None:
    """Every --out that would destroy a run, a data dir, an input or a user's file: refused, nothing touched."""
    sys.path.insert(0, str(ROOT / "tests" / "stages"))
    from test_fillmask import make_run_dir

    from bertcurve import layout

    root = work / "outs"
    data = _prepare_tiny(root)
    evals = {10: 0.05, 20: 0.12, 30: 0.2, 40: 0.24, 50: 0.256}
    a = make_run_dir(root / "run-a", data, steps=(10, 50), evals=evals)
    b = make_run_dir(root / "run-b", data, steps=(10, 50), evals=evals)
    mine = root / "photos"
    mine.mkdir()
    (mine / "cat.jpg").write_bytes(b"\xff\xd8 mine")
    notes = root / "notes.json"
    notes.write_text('{"mine": true}')
    link_run = root / "link-to-run"
    link_run.symlink_to(b, target_is_directory=True)
    link_metrics = root / "link.json"
    link_metrics.symlink_to(a / layout.METRICS)
    seed = ROOT / "tests" / "fixtures" / "seed" / "training_history_100k.json"
    log = root / "history.json"
    shutil.copy2(seed, log)
    (root / "cwd" / "inner").mkdir(parents=True)
    cases = [["export", str(a), "--out", str(b), "--force"], ["export", str(a), "--out", str(data), "--force"],
             ["export", str(a), "--out", str(mine), "--force"], ["export", str(a), "--out", ".", "--force"],
             ["export", str(a), "--out", "inner/..", "--force"], ["export", str(a), "--out", str(link_run), "--force"],
             ["export", str(a), "--out", str(root), "--force"], ["export", str(a), "--out", str(a / "x")]]
    for verb in ("export-history", "analyze"):
        for target in (a / layout.METRICS, a / layout.RUN_CONFIG, data / layout.DATA_META, notes, link_metrics,
                       a / ".." / a.name / layout.METRICS, b):
            cases.append([verb, str(a), "--out", str(target)] + (["--bootstrap", "0"] if verb == "analyze" else []))
    cases += [["analyze", str(log), "--out", str(log), "--bootstrap", "0"],
              ["compare", str(a), str(b), "--out", str(b / layout.METRICS), "--bootstrap", "0"],
              ["compare", str(a), str(log), "--out", str(log), "--bootstrap", "0"]]
    (mine / layout.REPORT_MD).write_text("my notes\n")
    cases.append(["report", str(a), "--out", str(mine)])
    before = {p: _fingerprint(p) for p in (a, b, data, mine)}
    before_files = {p: p.read_bytes() for p in (notes, log)}
    cwd = os.getcwd()
    os.chdir(root / "cwd")
    try:
        for argv in cases:
            tally.add("wrong --out", "inputs tried")
            problem = _clean_refusal(argv)
            after = {p: _fingerprint(p) for p in before}
            if problem is None and after == before and all(p.read_bytes() == v for p, v in before_files.items()):
                tally.add("wrong --out", "handled cleanly")
            else:
                tally.fail("wrong --out", f"{' '.join(argv[:1] + argv[2:])}: {problem or 'something was changed'}")
    finally:
        os.chdir(cwd)
    shutil.rmtree(root, ignore_errors=True)


def _corpus_file(path: Path, lines: int) -> bytes:
    with open(path, "w", encoding="utf-8") as handle:
        for i in range(lines):
            handle.write(f"{reltools.REAL_SENTENCES[i % len(reltools.REAL_SENTENCES)]}第{i}条。\n")
    return path.read_bytes()


def changing_inputs(work: Path, n: int, seed: int, tally: Tally) -> None:
    """prepare while another process truncates, appends to or rewrites the input at a random moment.

    Clean: refused ("changed while prepare read it") with nothing written, or a data dir whose
    recorded sha256 is that of the bytes it read (the file before or after the change).
    """
    import hashlib

    rng = random.Random(seed)
    root = work / "changing"
    root.mkdir()
    src = root / "corpus.txt"
    original = _corpus_file(src, 200_000)
    for i in range(n):
        src.write_bytes(original)
        kind = ("truncate", "append", "rewrite")[i % 3]
        out = root / f"data-{i}"
        proc = subprocess.Popen([sys.executable, "-m", "bertcurve", "prepare", str(src), "--out", str(out),
                                 "--quiet", "--min-chars", "5"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
        time.sleep(rng.uniform(0.5, 5.0))
        if kind == "truncate":
            os.truncate(src, rng.randrange(len(original) // 2))
        elif kind == "append":
            with open(src, "ab") as handle:
                handle.write("新写入的一行，内容还没有写完。\n".encode() * 2000)
        else:
            src.write_bytes(original.replace("酒店".encode(), "旅馆".encode()))
        changed = src.read_bytes()
        _out, err = proc.communicate(timeout=900)
        tally.add("changing inputs", "inputs tried")
        if proc.returncode == 2 and "changed while prepare read it" in err and not out.exists():
            tally.add("changing inputs", "handled cleanly")
            tally.add("changing inputs", f"{kind}: refused")
        elif proc.returncode == 0:
            recorded = json.loads((out / "meta.json").read_text())["sources"][0]["sha256"]
            if recorded in (hashlib.sha256(original).hexdigest(), hashlib.sha256(changed).hexdigest()):
                tally.add("changing inputs", "handled cleanly")
                tally.add("changing inputs", f"{kind}: read whole before/after the change")
            else:
                tally.fail("changing inputs", f"{kind}: exit 0 with a sha256 of neither version")
        else:
            tally.fail("changing inputs", f"{kind}: exit {proc.returncode}: {err.strip()[-300:]}")
        shutil.rmtree(out, ignore_errors=True)
    _growing_logs(root, n * 10, rng, tally)
    shutil.rmtree(root, ignore_errors=True)


def _growing_logs(root: Path, n: int, rng: random.Random, tally: Tally) -> None:
    """The dashboard's tail of a metrics.jsonl that grows, is truncated or rotated: equal to a fresh read."""
    from bertcurve.curves.logs import RunMetricsTail, load_log
    from bertcurve.errors import UserError

    path = root / "run" / "metrics.jsonl"
    path.parent.mkdir()
    tail = RunMetricsTail(path, path.parent)
    step = 0

    def line(s: int) -> str:
        return json.dumps({"format": "bertcurve.metrics/1", "step": s, "split": "train", "loss": 5 - s / 1e4,
                           "mlm_accuracy": s / 1e4}) + "\n"

    path.write_text("")
    for _ in range(n):
        action = rng.choice(["append", "append", "append", "torn", "truncate", "rotate"])
        if action == "truncate":
            step = rng.randrange(0, step + 1)
            path.write_text("".join(line(s) for s in range(1, step + 1)))
        elif action == "rotate":
            step = rng.randrange(1, 50)
            (root / "next.jsonl").write_text("".join(line(s) for s in range(1, step + 1)))
            os.replace(root / "next.jsonl", path)
        else:
            more = rng.randrange(1, 200)
            text = "".join(line(s) for s in range(step + 1, step + more + 1))
            step += more
            if action == "torn":
                text = text[:-rng.randrange(2, 20)]
                step -= 1
            with open(path, "a") as handle:
                handle.write(text)
        tally.add("growing logs", "inputs tried")
        try:
            fresh = load_log(path).series
            fresh = {k: v.steps.tolist() for k, v in fresh.items()}
        except UserError:
            fresh = None
        try:
            got = {k: v.steps.tolist() for k, v in tail.read().series.items()}
        except UserError:
            got = None
        # a torn last line is left for the next poll by the tail, dropped with a note by load_log
        if got == fresh:
            tally.add("growing logs", "handled cleanly")
        else:
            tally.fail("growing logs", f"after {action}: tail and fresh read differ")
        if action == "torn":
            with open(path, "rb+") as handle:  # finish the torn line as a writer would
                data = handle.read()
                handle.seek(data.rfind(b"\n") + 1)
                handle.truncate()


_SPARSE_PROBE = r"""
import sys, time
from bertcurve.stages.dashboard import Dashboard
from pathlib import Path
t = time.perf_counter()
board = Dashboard([Path(sys.argv[1])])
status = board.status()
board.figure_png()
assert status["runs"][0]["state"] == "waiting", status
print(round(time.perf_counter() - t, 2), status["runs"][0]["message"])
"""


_RSS_WRAPPER = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]); "
                "print('PEAK_RSS_KIB', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); "
                "sys.exit(r.returncode)")


def _run_measured(argv: list[str], timeout: float = 300) -> tuple[int, str, float, float]:
    """(exit code, output, peak RSS of the command in MiB, seconds), through a wrapper that reaps only it."""
    started = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, "-c", _RSS_WRAPPER, *argv], capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        return -9, "timed out", 0.0, time.perf_counter() - started
    seconds = time.perf_counter() - started
    lines = proc.stderr.splitlines()
    peak = next((int(x.split()[1]) for x in lines if x.startswith("PEAK_RSS_KIB")), 0) / 1024
    text = "\n".join(x for x in lines if not x.startswith("PEAK_RSS_KIB")) + proc.stdout
    return proc.returncode, text, peak, seconds


def sparse_files(work: Path, tally: Tally) -> None:
    """2 GB sparse (NUL) files and logs with a 2 GB NUL tail: one line within seconds, under 500 MB of memory."""
    root = work / "sparse"
    files = []
    for name in ("x.csv", "x.jsonl", "x.json", "run/metrics.jsonl"):
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
        os.truncate(path, 2 << 30)  # `truncate -s 2G`: a sparse file of zeros
        files.append(path.parent if path.name == "metrics.jsonl" else path)
    tail = root / "tail" / "metrics.jsonl"  # valid lines, then 2 GB of zeros (a crash on some file systems)
    tail.parent.mkdir()
    tail.write_text("".join(json.dumps({"step": s, "split": "train", "mlm_accuracy": s / 100}) + "\n"
                            for s in range(1, 50)))
    os.truncate(tail, 2 << 30)
    files.append(tail.parent)
    other = ROOT / "tests" / "fixtures" / "seed" / "training_history_100k.json"
    py = [sys.executable, "-m", "bertcurve"]
    for path in files:
        commands = [py + ["analyze", str(path), "--out", str(root / "a.json")],
                    py + ["plot", str(path), "--out", str(root / "fig")],
                    py + ["compare", str(path), str(other), "--out", str(root / "c.json")]]
        if path.is_dir():
            commands.append(py + ["export-history", str(path), "--out", str(root / "h.json")])
        for argv in commands:
            tally.add("sparse 2 GB files", "inputs tried")
            code, text, rss, seconds = _run_measured(argv)
            what = f"{argv[3]} {path.relative_to(root)}"
            tally.add("sparse 2 GB files", f"{what}: {rss:.0f} MiB {seconds:.1f} s", 0)
            if code == 2 and "Traceback" not in text and text.count("bertcurve: error:") == 1 and rss < 500 \
                    and seconds < 60:
                tally.add("sparse 2 GB files", "handled cleanly")
            else:
                tally.fail("sparse 2 GB files", f"{what}: exit {code}, {rss:.0f} MiB, {seconds:.1f} s: "
                                                f"{text.strip()[-200:]}")
        if path.is_dir() or path.suffix == ".jsonl":
            tally.add("sparse 2 GB files", "inputs tried")
            code, text, peak, seconds = _run_measured([sys.executable, "-c", _SPARSE_PROBE, str(path)])
            tally.add("sparse 2 GB files", f"dashboard {path.relative_to(root)}: {peak:.0f} MiB {seconds:.1f} s", 0)
            if code == 0 and 0 < peak < 500 and seconds < 60:
                tally.add("sparse 2 GB files", "handled cleanly")
            else:
                tally.fail("sparse 2 GB files", f"dashboard {path}: exit {code}: {text.strip()[-200:]}")
    shutil.rmtree(root, ignore_errors=True)


def host_headers(work: Path, tally: Tally) -> None:
    """DNS rebinding: the dashboard answers only Host headers that name it."""
    import http.client
    import threading

    from bertcurve.stages.dashboard import make_server

    run = work / "hosts" / "run"
    run.mkdir(parents=True)
    (run / "metrics.jsonl").write_text(json.dumps({"step": 1, "split": "eval", "mlm_accuracy": 0.1}) + "\n")
    server = make_server([run], port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    foreign = ["evil.example.com", f"evil.example.com:{port}", "127.0.0.1.nip.io", "localhost.evil.com",
               "attacker.test:80", "", "[::2]", "0x7f000001.evil", "LOCALHOST.evil"]
    own = ["127.0.0.1", f"127.0.0.1:{port}", "localhost", f"LocalHost:{port}", f"[::1]:{port}", "localhost."]
    try:
        for host, want in [(h, 421) for h in foreign] + [(h, 200) for h in own]:
            for path in ("/", "/status.json", "/figure.png"):
                tally.add("host headers", "inputs tried")
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                conn.putrequest("GET", path, skip_host=True)
                if host:
                    conn.putheader("Host", host)
                conn.endheaders()
                res = conn.getresponse()
                body = res.read()
                conn.close()
                if res.status == want and (want == 200 or str(run).encode() not in body):
                    tally.add("host headers", "handled cleanly")
                else:
                    tally.fail("host headers", f"Host {host!r} {path}: HTTP {res.status}")
    finally:
        server.shutdown()
        server.server_close()
    shutil.rmtree(work / "hosts", ignore_errors=True)


def dollar_names(work: Path, tally: Tally) -> None:
    """Run, log and metric names with $, |, <!-- and backslashes: figures and reports without a crash."""
    import math

    root = work / "dollar"
    names = ["$x^$", "cost $5 vs $\\x{", "a|b <!-- c", "$\\frac{1}{0}$", "$$", "\\$5", "50%_$_{}"]
    runs = []
    for name in names:
        run = root / name
        run.mkdir(parents=True)
        with open(run / "metrics.jsonl", "w", encoding="utf-8") as handle:
            for step in range(50, 2050, 50):
                acc = 0.6 * (1 - math.exp(-step / 600))
                handle.write(json.dumps({"step": step, "split": "train", "loss": 8 - 6 * acc, "lr": 1e-4,
                                         "acc$^$": acc}) + "\n")
        runs.append(str(run))
    checks = [["plot", r, "--out", str(root / f"fig-{i}")] for i, r in enumerate(runs)]
    checks += [["plot", r, "--out", str(root / f"fig-m-{i}"), "--metric", "train_acc$^$"] for i, r in enumerate(runs)]
    checks += [["report", *runs[:3], "--out", str(root / "rep-a"), "--metric", "train_acc$^$"],
               ["report", *runs[3:], "--out", str(root / "rep-b"), "--metric", "train_acc$^$"]]
    import io
    from contextlib import redirect_stderr, redirect_stdout

    from bertcurve.cli import main as cli

    for argv in checks:
        tally.add("names with $", "inputs tried")
        err = io.StringIO()
        try:
            with redirect_stderr(err), redirect_stdout(io.StringIO()):
                code = cli(argv)
        except BaseException as exc:  # noqa: BLE001
            code, err = -1, io.StringIO(f"{type(exc).__name__}: {exc}")
        if code == 0:
            tally.add("names with $", "handled cleanly")
        else:
            tally.fail("names with $", f"{argv[0]} {argv[1]}: exit {code}: {err.getvalue().strip()[-200:]}")
    for rep in ("rep-a", "rep-b"):
        md = (root / rep / "report.md").read_text() if (root / rep / "report.md").exists() else ""
        prose = "".join(md.split("```")[0::2])
        tally.add("names with $", "inputs tried")
        if md and "<!--" not in prose:
            tally.add("names with $", "handled cleanly")
        else:
            tally.fail("names with $", f"{rep}/report.md: an unescaped <!-- in its text")
    shutil.rmtree(root, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kill-trials", type=int, default=30, help="kill-anywhere trials (default 30)")
    parser.add_argument("--fault-rounds", type=int, default=2,
                        help="rounds of every corruption, pickle, write fault and lock check (default 2)")
    parser.add_argument("--corpus-inputs", type=int, default=300, help="random hostile corpus files (default 300)")
    parser.add_argument("--fuzz-runs", type=int, default=2000, help="atheris runs on prepare (default 2000)")
    parser.add_argument("--fuzz-seconds", type=int, default=120, help="atheris time limit (default 120)")
    parser.add_argument("--logs", type=int, default=500, help="random hostile metrics logs (default 500)")
    parser.add_argument("--log-lines", type=int, default=1_000_000,
                        help="lines of the long-log memory check (default 1,000,000; 10,000,000 writes a "
                             "2.3 GB file and takes minutes)")
    parser.add_argument("--changing", type=int, default=9,
                        help="prepare runs whose input is truncated/appended/rewritten while read (default 9)")
    parser.add_argument("--seed", type=int, default=None, help="seed of all random choices (default: random)")
    parser.add_argument("--only", nargs="*", default=None,
                        choices=["kill", "faults", "corpus", "fuzz", "logs", "long-log", "outs", "changing",
                                 "sparse", "hosts", "dollar"],
                        help="run only these parts")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 30)
    parts = set(args.only or ["kill", "faults", "corpus", "fuzz", "logs", "long-log", "outs", "changing", "sparse",
                              "hosts", "dollar"])
    tally = Tally()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bertcurve-reliability-") as tmp:
        work = Path(tmp) / "work"
        work.mkdir()
        if parts & {"kill", "faults"}:
            data = _prepare_tiny(Path(tmp))
            reference = work / "reference"
            assert reltools.run_child(reltools.train_argv(data, reference)).exitcode == 0
            if "kill" in parts:
                kill_trials(data, reference, work, args.kill_trials, seed, tally)
            if "faults" in parts:
                fault_trials(data, reference, work, args.fault_rounds, tally)
        if "corpus" in parts:
            hostile_corpus(work, args.corpus_inputs, seed, tally)
        if "fuzz" in parts:
            atheris_fuzz(work, args.fuzz_runs, args.fuzz_seconds, tally)
        if "logs" in parts:
            hostile_logs(work, args.logs, seed, tally)
        if "long-log" in parts:
            long_log(work, args.log_lines, tally)
        if "outs" in parts:
            wrong_out_targets(work, tally)
        if "changing" in parts:
            changing_inputs(work, args.changing, seed, tally)
        if "sparse" in parts:
            sparse_files(work, tally)
        if "hosts" in parts:
            host_headers(work, tally)
        if "dollar" in parts:
            dollar_names(work, tally)

    print(f"bertcurve reliability summary (seed {seed}, {time.perf_counter() - started:.0f} s, "
          f"{os.cpu_count()} CPUs)")
    for group, counter in tally.rows.items():
        shown = ", ".join(f"{k} {v}" if v else k for k, v in counter.items())
        print(f"  {group}: {shown}")
    faults = sum(c.get("faults injected", 0) for c in tally.rows.values())
    fuzzed = sum(v for c in tally.rows.values() for k, v in c.items() if k.startswith(("inputs fuzzed", "logs fuzzed")))
    trials = sum(c.get("trials", 0) for c in tally.rows.values())
    tried = sum(c.get("inputs tried", 0) for c in tally.rows.values())
    clean = sum(c.get("handled cleanly", 0) for c in tally.rows.values())
    print(f"  TOTAL: trials {trials}, faults injected {faults}, inputs fuzzed {fuzzed}, "
          f"inputs tried {tried}, handled cleanly {clean}, failures {len(tally.failures)}")
    for failure in tally.failures:
        print(f"  FAIL {failure}")
    return 1 if tally.failures else 0


if __name__ == "__main__":
    sys.exit(main())
