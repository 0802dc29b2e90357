"""Fault injection and checks shared by tests/reliability and bench/reliability.py.

Training trials run ``bertcurve.cli.main(["train", ...])`` -- the same code
path as the ``bertcurve train`` command -- in processes forked from a
forkserver that imported torch and transformers once, so a trial costs the
training and not ten seconds of imports on a busy machine. A trial is
killed with a real SIGKILL, either from outside at a random moment or from
inside at a chosen point (mid-step, mid-evaluation, mid-checkpoint-write,
mid-metrics-line), and then resumed with ``--resume auto``.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent

# The tiny preset, shrunk so one run takes a few seconds on a shared 2-core CPU, with
# several evaluations and checkpoints so that a kill can land in each phase.
TINY_RUN = ("--preset", "tiny", "--max-steps", "24", "--save-every", "6", "--eval-every", "4",
            "--keep", "2", "--threads", "1", "--device", "cpu", "--quiet")

# Where an in-process SIGKILL can be placed. "time" means: from outside, at a random moment.
KILL_POINTS = ("time", "mid-step", "mid-eval", "after-eval-line", "mid-checkpoint-weights",
               "mid-checkpoint-state", "checkpoint-before-rename", "mid-metrics-line", "mid-prune",
               "mid-final")

_PRELOAD = ["torch", "transformers", "transformers.models.bert.modeling_bert", "safetensors.torch",
            "bertcurve.cli", "bertcurve.stages.train", "bertcurve.training.model", "bertcurve.training.batches",
            "bertcurve.training.checkpoint", "bertcurve.training.metrics_log", "bertcurve.training.config", "bertcurve.data.datadir",
            "reltools"]
_CTX = None


def context():
    """The forkserver context, preloaded with torch/transformers/bertcurve (created once)."""
    global _CTX
    if _CTX is None:
        if str(HERE) not in sys.path:
            sys.path.insert(0, str(HERE))
        _CTX = multiprocessing.get_context("forkserver")
        _CTX.set_forkserver_preload(_PRELOAD)
    return _CTX


def train_argv(data: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "--data", str(data), "--out", str(out), *TINY_RUN, *extra]


# Real Chinese sentences (reviews and news) used to build hostile files that can still succeed.
REAL_SENTENCES = [
    "这家酒店的位置非常好，离地铁站只有五分钟的路程，房间干净整洁，服务员态度也很热情。",
    "早餐的种类比较少，而且味道一般，不过价格还算合理，下次出差可能还会选择这里入住。",
    "这本书的内容很充实，作者用通俗易懂的语言讲述了复杂的历史事件，值得推荐给大家阅读。",
    "新华社北京一月一日电，国家主席在新年讲话中回顾了过去一年经济社会发展取得的成就。",
    "手机的电池续航能力不错，正常使用可以坚持一整天，但是充电速度稍微有点慢，希望改进。",
    "今天天气很好，我们一家人一起去公园散步，孩子们在草地上放风筝，玩得非常开心快乐。",
    "会议指出，要进一步加强农村基础设施建设，提高农民收入水平，推动城乡经济协调发展。",
    "快递送货速度很快，包装也很结实，打开后发现商品和图片上的一模一样，质量非常满意。",
    "据统计，去年全市共接待国内外游客一千多万人次，旅游总收入比前年增长了百分之十五。",
    "房间的隔音效果太差了，晚上能清楚地听到隔壁房间的说话声，整夜都没有睡好，很失望。",
    "这部电影的故事情节紧凑，演员的表演也很自然，特别是结尾部分让人感动得流下了眼泪。",
    "专家认为，随着科学技术的不断进步，人工智能将在医疗教育交通等领域发挥越来越大作用。",
]

# Characters that trip naive text handling.
RTL_AND_FORMAT = ["\u200f", "\u202e", "\u202d", "\u200b", "\u200d", "\ufeff", "\u2066", "\u2069"]
EMOJI = ["😀", "👍🏽", "👨‍👩‍👧‍👦", "🇨🇳", "🀄", "\U0001F9E7"]
ODD_SEPARATORS = ["\r", "\u2028", "\u2029", "\u0085", "\x0b", "\x0c", "\x1c"]


def valid_data_dir(path: Path) -> dict[str, Any]:
    """Assert that ``path`` is a complete, self-consistent data directory; return meta."""
    from bertcurve import layout
    from bertcurve.data.datadir import DataDir

    data = DataDir(path)
    meta = data.meta
    assert meta["vocab_size"] == len(data.tokenizer())
    for split in layout.SPLITS:
        arrays = data.split(split)
        assert arrays.n_sentences == meta["splits"][split]["sentences"] > 0
        assert int(arrays.ids.max()) < meta["vocab_size"]
        assert np.all(np.diff(arrays.sentence_offsets) > 0)
    text = (path / layout.VAL_TEXT).read_bytes().decode("utf-8")  # strict: valid UTF-8
    assert "\x00" not in text
    assert not any(0xD800 <= ord(c) <= 0xDFFF for c in text)
    leftovers = [p.name for p in path.parent.iterdir() if ".staging-" in p.name]
    assert leftovers == [], f"staging folders left behind: {leftovers}"
    return meta


def run_cli(*args: str, timeout: float = 120, env: dict[str, str] | None = None,
            cwd: Path | None = None) -> subprocess.CompletedProcess:
    """``python -m bertcurve ARGS`` in a fresh process (text output, not checked)."""
    full_env = dict(os.environ, PYTHONUNBUFFERED="1", MPLBACKEND="Agg", **(env or {}))
    return subprocess.run([sys.executable, "-m", "bertcurve", *args], capture_output=True, text=True,
                          timeout=timeout, env=full_env, cwd=cwd)


def assert_clean_failure(proc: subprocess.CompletedProcess, *, code: int | None = None) -> str:
    """A refused input: non-zero exit, no traceback, one error line. Returns the error line."""
    assert proc.returncode != 0, proc.stdout + proc.stderr
    if code is not None:
        assert proc.returncode == code, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("bertcurve: error:")]
    assert len(errors) == 1, proc.stderr
    return errors[0]


# ------------------------------------------------------------------ child side
def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _install_fault(point: str, step: int) -> None:
    """Arrange for this process to SIGKILL itself at ``point`` of optimizer step ``step``."""
    import torch

    from bertcurve.training import checkpoint, metrics_log
    from bertcurve.training.trainer import Trainer

    state = {"step": 0}

    def hook(where: str, at: int) -> None:
        state["step"] = at
        if at == step and ((point == "mid-step" and where == "after-backward")
                           or (point == "after-eval-line" and where == "after-eval")
                           or (point == "checkpoint-before-rename" and where == "checkpoint-before-rename")):
            _die()

    Trainer.fault_hook = hook  # this process only: it is about to die

    if point == "mid-eval":
        from bertcurve.training import model

        real_forward = model.forward

        def forward(net, batch, *a, **k):
            # evaluation is the only caller asking for top-k; step counts completed steps
            if k.get("topk") and state["step"] >= step:
                _die()
            return real_forward(net, batch, *a, **k)

        model.forward = forward
    elif point == "mid-checkpoint-state":
        real_save = torch.save

        def half_save(obj, f, *a, **k):
            real_save(obj, f, *a, **k)
            if state["step"] >= step and isinstance(f, (str, Path)):
                size = os.path.getsize(f)
                os.truncate(f, size // 2)  # the kernel had written half when the kill came
                _die()

        torch.save = half_save
    elif point == "mid-prune":
        import shutil as shutil_module

        real_rmtree = shutil_module.rmtree

        def rmtree(path, *a, **k):
            # deleting an old checkpoint (keep-latest-k): the kill comes after its first file went
            folder = Path(path)
            if folder.parent.name == "checkpoints" and (folder / "checkpoint.json").is_file() and \
                    state["step"] >= step:
                victims = sorted(folder.iterdir())
                if victims:
                    victims[0].unlink()
                _die()
            return real_rmtree(path, *a, **k)

        shutil_module.rmtree = rmtree
    elif point == "mid-final":
        import transformers.modeling_utils as mu

        real_final = mu.safe_save_file

        def final_save(tensors, filename, *a, **k):
            real_final(tensors, filename, *a, **k)
            if "/checkpoints/" not in str(filename):   # the final model, written after the last step
                os.truncate(filename, os.path.getsize(filename) // 2)
                _die()

        mu.safe_save_file = final_save
    elif point == "mid-checkpoint-weights":
        import transformers.modeling_utils as mu

        real_safe = mu.safe_save_file

        def half_safe(tensors, filename, *a, **k):
            real_safe(tensors, filename, *a, **k)
            if state["step"] >= step:
                os.truncate(filename, os.path.getsize(filename) // 3)
                _die()

        mu.safe_save_file = half_safe
    elif point == "mid-metrics-line":
        real_write = metrics_log.MetricsWriter.write

        def torn_write(self, record):
            if int(record["step"]) >= step and self._fd is not None:
                line = metrics_log.format_record(record)
                os.write(self._fd, line[: max(1, len(line) // 2)])
                _die()
            return real_write(self, record)

        metrics_log.MetricsWriter.write = torn_write
    del checkpoint  # imported so the module is loaded before the fault patches


def child_main(argv: list[str], point: str | None, step: int, quiet_stderr: bool,
               log: str | None = None, setup: Any = None) -> None:
    """Entry of a trial process: optional in-process fault, then the CLI.

    ``log``: file that receives stdout and stderr; ``setup``: a picklable callable run
    first (it installs a write fault, a resource limit, ...).
    """
    if quiet_stderr or log:
        fd = os.open(log or os.devnull, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
    if setup is not None:
        setup()
    if point and point != "time":
        _install_fault(point, step)
    from bertcurve import cli

    sys.exit(cli.main(argv))


# ------------------------------------------------------------------ parent side
@dataclass
class Outcome:
    exitcode: int | None
    killed: bool
    seconds: float
    output: str = ""


def run_child(argv: list[str], *, point: str | None = None, step: int = 0,
              kill_after: float | None = None, timeout: float = 300, quiet: bool = True,
              log: Path | None = None, setup: Any = None) -> Outcome:
    """Run the CLI in a forked child; SIGKILL it after ``kill_after`` s if given."""
    ctx = context()
    proc = ctx.Process(target=child_main,
                       args=(list(argv), point, step, quiet, str(log) if log else None, setup))
    started = time.monotonic()
    proc.start()
    proc.join(kill_after if kill_after is not None else timeout)
    killed = False
    if proc.is_alive():
        if kill_after is None:
            proc.kill()
            proc.join()
            raise TimeoutError(f"bertcurve {' '.join(argv)} did not finish within {timeout}s")
        proc.kill()
        proc.join()
        killed = True
    code = proc.exitcode
    output = Path(log).read_text(encoding="utf-8", errors="replace") if log and Path(log).exists() else ""
    return Outcome(code, killed or code == -signal.SIGKILL, time.monotonic() - started, output)


def wait_for(predicate, timeout: float, interval: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False


# ------------------------------------------------------------------ checks
def final_weights(run_dir: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(str(Path(run_dir) / "final" / "model.safetensors"))


def same_weights(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    return a.keys() == b.keys() and all(a[k].tobytes() == b[k].tobytes() for k in a)


def metrics_lines(run_dir: Path) -> list[dict[str, Any]]:
    """Every line of metrics.jsonl parsed strictly: a torn or invalid line raises."""
    raw = (Path(run_dir) / "metrics.jsonl").read_bytes()
    if raw and not raw.endswith(b"\n"):
        raise AssertionError("metrics.jsonl ends with a partial line")
    return [json.loads(line) for line in raw.split(b"\n")[:-1]]


def without_timing(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    from bertcurve.training.metrics_log import without_timing as strip

    return [strip(r) for r in records]


def duplicated_keys(records: list[dict[str, Any]]) -> list[tuple[int, str]]:
    seen: set[tuple[int, str]] = set()
    dups = []
    for r in records:
        key = (int(r["step"]), str(r["split"]))
        if key in seen:
            dups.append(key)
        seen.add(key)
    return dups


def visible_checkpoints_verify(run_dir: Path) -> list[str]:
    """Names of visible step-* folders that do NOT verify (should be none after a crash)."""
    from bertcurve.training import checkpoint

    bad = []
    for _, folder in checkpoint.list_checkpoints(Path(run_dir)):
        try:
            checkpoint.verify_checkpoint(folder)
        except checkpoint.CorruptCheckpoint as exc:
            bad.append(f"{folder.name}: {exc}")
    return bad


def leftover_temporaries(run_dir: Path) -> list[str]:
    """Hidden temporary/staging entries left in the run dir and its checkpoints folder."""
    run_dir = Path(run_dir)
    found = [p.name for p in run_dir.iterdir() if p.name.startswith(".")]
    ck = run_dir / "checkpoints"
    if ck.is_dir():
        found += [f"checkpoints/{p.name}" for p in ck.iterdir() if p.name.startswith(".")]
    return found


@dataclass
class TrialResult:
    index: int
    point: str
    step: int
    delay: float
    killed: bool
    problems: list[str]


def kill_trial(index: int, data: Path, run_dir: Path, reference: Path, rng: random.Random,
               *, point: str | None = None, max_steps: int = 24, run_seconds: float = 4.0,
               extra: tuple[str, ...] = ()) -> TrialResult:
    """One kill-anywhere trial: kill, check what is on disk, resume, compare with ``reference``."""
    point = point or rng.choice(KILL_POINTS)
    step = rng.randint(1, max_steps)
    if point in ("mid-eval", "after-eval-line"):
        step = rng.choice([s for s in range(4, max_steps + 1, 4)])
    if point in ("checkpoint-before-rename", "mid-checkpoint-weights", "mid-checkpoint-state", "mid-prune"):
        step = rng.choice([s for s in range(6, max_steps + 1, 6)])
    delay = rng.uniform(0.3, run_seconds) if point == "time" else 0.0
    argv = train_argv(data, run_dir, *extra)
    problems: list[str] = []
    # Sometimes the run is killed twice (a crash while resuming a crashed run).
    kills = 2 if rng.random() < 0.3 else 1
    killed_any = False
    for k in range(kills):
        outcome = run_child(argv, point=point, step=step,
                            kill_after=delay if point == "time" else None)
        retries = 0
        while point == "time" and k == 0 and not outcome.killed and retries < 5:
            # The run was faster than the drawn moment (machines differ): start over, kill earlier.
            import shutil

            shutil.rmtree(run_dir, ignore_errors=True)
            delay = rng.uniform(0.1, max(0.2, min(delay, outcome.seconds) * 0.8))
            outcome = run_child(argv, kill_after=delay)
            retries += 1
        killed_any |= outcome.killed
        if not outcome.killed and outcome.exitcode != 0:
            problems.append(f"run {k + 1} exited with {outcome.exitcode} instead of being killed")
        if (run_dir / "checkpoints").is_dir():
            bad = visible_checkpoints_verify(run_dir)
            if bad:
                problems.append(f"visible checkpoint(s) that do not verify after the kill: {bad}")
        if point != "time":
            break
    resumed = run_child(argv + ["--resume", "auto"])
    if resumed.exitcode != 0:
        problems.append(f"resume exited with {resumed.exitcode}")
        return TrialResult(index, point, step, delay, killed_any, problems)
    try:
        got = metrics_lines(run_dir)
    except (AssertionError, ValueError) as exc:
        problems.append(f"metrics.jsonl damaged after resume: {exc}")
        got = []
    want = metrics_lines(reference)
    if duplicated_keys(got):
        problems.append(f"duplicated metrics lines: {duplicated_keys(got)[:5]}")
    if without_timing(got) != without_timing(want):
        problems.append(f"metrics differ from the uninterrupted run ({len(got)} vs {len(want)} lines)")
    if not same_weights(final_weights(run_dir), final_weights(reference)):
        problems.append("final weights are not bitwise identical to the uninterrupted run")
    if visible_checkpoints_verify(run_dir):
        problems.append("a visible checkpoint does not verify after the resume")
    left = [n for n in leftover_temporaries(run_dir)]
    if left:
        problems.append(f"temporary files left after the resume: {left}")
    return TrialResult(index, point, step, delay, killed_any, problems)


# ------------------------------------------------------------------ write faults (picklable setups)
@dataclass(frozen=True)
class FileSizeLimit:
    """A real kernel limit (``ulimit -f``): writes past ``bytes`` fail with EFBIG, like a full disk."""

    bytes: int

    def __call__(self) -> None:
        import resource

        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # CPython ignores it too; be explicit
        resource.setrlimit(resource.RLIMIT_FSIZE, (self.bytes, self.bytes))


@dataclass(frozen=True)
class MetricsDiskFull:
    """The disk fills up while metrics.jsonl is appended: after ``good`` lines, a short write + ENOSPC."""

    good: int

    def __call__(self) -> None:
        import errno

        real_write = os.write
        state = {"lines": 0}

        def write(fd: int, data: bytes) -> int:
            try:
                target = os.readlink(f"/proc/self/fd/{fd}")
            except OSError:
                target = ""
            if target.endswith("metrics.jsonl"):
                state["lines"] += 1
                if state["lines"] > self.good:
                    real_write(fd, data[: len(data) // 2])
                    raise OSError(errno.ENOSPC, "No space left on device")
            return real_write(fd, data)

        os.write = write


@dataclass(frozen=True)
class CheckpointWriteFault:
    """Checkpoint writing fails from step ``step`` on: ``kind`` is "enospc-weights" (safetensors
    reports a full disk after writing part of the file) or "erofs" (the checkpoints folder became
    read-only, so the temporary folder cannot be created)."""

    kind: str
    step: int

    def __call__(self) -> None:
        import errno

        counter = {"saves": 0}
        if self.kind == "enospc-weights":
            import transformers.modeling_utils as mu
            from safetensors import SafetensorError

            real = mu.safe_save_file

            def safe_save_file(tensors, filename, *a, **k):
                if "/checkpoints/" in str(filename):
                    counter["saves"] += 1
                    if counter["saves"] * 6 >= self.step:   # TINY_RUN saves every 6 steps
                        real(tensors, filename, *a, **k)
                        os.truncate(filename, os.path.getsize(filename) // 2)
                        raise SafetensorError("Error while serializing: I/O error: "
                                              "No space left on device (os error 28)")
                return real(tensors, filename, *a, **k)

            mu.safe_save_file = safe_save_file
        elif self.kind == "erofs":
            real_mkdir = os.mkdir

            def mkdir(path, *a, **k):
                name = os.fspath(path)
                if "/checkpoints/.tmp-step-" in name:
                    counter["saves"] += 1
                    if counter["saves"] * 6 >= self.step:
                        raise OSError(errno.EROFS, "Read-only file system", name)
                return real_mkdir(path, *a, **k)

            os.mkdir = mkdir
        else:
            raise ValueError(self.kind)


@dataclass(frozen=True)
class SlowSteps:
    """Sleep after every optimizer step, so a run stays alive while another process knocks."""

    seconds: float

    def __call__(self) -> None:
        from bertcurve.training.trainer import Trainer

        def hook(where: str, step: int) -> None:
            if where == "after-backward":
                time.sleep(self.seconds)

        Trainer.fault_hook = hook
