"""Run the reliability suite's trials at larger counts and print a summary.

    python bench/reliability.py                      # defaults: 30 kill trials, 3 rounds of faults, ...
    python bench/reliability.py --kill-trials 100 --fuzz-runs 5000 --log-lines 10000000

Counts: kill-anywhere trials (SIGKILL at a random moment/phase, resume, compare
bit for bit with an uninterrupted run), corrupted checkpoints, crafted
pickles, write failures (ulimit -f, ENOSPC, EROFS), lock checks, hostile
corpus files (random generator + atheris when installed), hostile logs, and the
time and peak RSS of loading a long metrics.jsonl. Everything uses the same
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
    parser.add_argument("--seed", type=int, default=None, help="seed of all random choices (default: random)")
    parser.add_argument("--only", nargs="*", default=None,
                        choices=["kill", "faults", "corpus", "fuzz", "logs", "long-log"],
                        help="run only these parts")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 30)
    parts = set(args.only or ["kill", "faults", "corpus", "fuzz", "logs", "long-log"])
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

    print(f"bertcurve reliability summary (seed {seed}, {time.perf_counter() - started:.0f} s, "
          f"{os.cpu_count()} CPUs)")
    for group, counter in tally.rows.items():
        shown = ", ".join(f"{k} {v}" if v else k for k, v in counter.items())
        print(f"  {group}: {shown}")
    faults = sum(c.get("faults injected", 0) for c in tally.rows.values())
    fuzzed = sum(v for c in tally.rows.values() for k, v in c.items() if k.startswith(("inputs fuzzed", "logs fuzzed")))
    trials = sum(c.get("trials", 0) for c in tally.rows.values())
    print(f"  TOTAL: trials {trials}, faults injected {faults}, inputs fuzzed {fuzzed}, "
          f"failures {len(tally.failures)}")
    for failure in tally.failures:
        print(f"  FAIL {failure}")
    return 1 if tally.failures else 0


if __name__ == "__main__":
    sys.exit(main())
