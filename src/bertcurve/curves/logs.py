"""Read a training log of any supported kind into one normalised shape.

``load_log(source)`` accepts

* a bertcurve run directory, or its ``metrics.jsonl`` (``bertcurve.metrics/1``);
* the seed's ``training_history_*.json`` (parallel lists ``steps``, ``mlm_acc``,
  ``loss``, ``nsp_acc``, ``lr``) and what ``bertcurve export-history --format seed``
  writes;
* a Hugging Face ``trainer_state.json`` (its ``log_history``), or a folder holding one
  (the newest ``checkpoint-N/`` is used when the folder itself has none);
* a TensorBoard event directory or event file (needs ``pip install tensorboard``);
* a CSV/TSV file with a header row and a step column.

Every metric becomes a :class:`Series` under a normalised name (see
``docs/CONTRACTS.md``), sorted by step, with non-finite values dropped and
repeated steps resolved (the value written last wins, as after a resumed run);
what was done is written to :attr:`TrainingLog.notes`.
"""

from __future__ import annotations

import codecs
import csv
import json
import math
import re
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from bertcurve import layout
from bertcurve.errors import UserError

KINDS = ("bertcurve-run", "seed-history", "hf-trainer-state", "tensorboard", "csv", "mlperf", "key-value-text",
         "wandb-export")

#: Default metric order: the held-out accuracy when there is one, else the seed-style batch one.
DEFAULT_METRICS = ("eval_mlm_accuracy", "train_mlm_accuracy")

#: Series that describe the run rather than what it learned (never a default metric).
AUXILIARY = {
    "lr", "grad_norm", "tokens_seen", "tokens_per_s", "elapsed_s", "epoch",
    "eval_mlm_accuracy_se", "eval_masked_tokens", "eval_s", "eval_tokens_seen", "eval_elapsed_s",
}

# Seed history keys -> normalised names (unknown keys are kept as they are).
_SEED_NAMES = {
    "mlm_acc": "train_mlm_accuracy",
    "loss": "train_loss",
    "nsp_acc": "train_nsp_accuracy",
    "lr": "lr",
    "eval_mlm_acc": "eval_mlm_accuracy",
    "eval_loss": "eval_loss",
}
_SEED_STEP_KEYS = ("steps", "step")

# metrics.jsonl keys by split -> normalised names.
_RUN_SHARED = {"lr", "grad_norm", "tokens_seen", "tokens_per_s", "elapsed_s"}
_RUN_SKIP = {"format", "step", "split", "time"}

# Hugging Face log_history keys -> normalised names.
_HF_NAMES = {
    "loss": "train_loss",
    "learning_rate": "lr",
    "grad_norm": "grad_norm",
    "eval_loss": "eval_loss",
    "eval_accuracy": "eval_mlm_accuracy",
    "eval_mlm_accuracy": "eval_mlm_accuracy",
    "epoch": "epoch",
}
# Keys of the closing summary entry (run averages, not a point of the curve).
_HF_SUMMARY_KEYS = {"train_runtime", "train_samples_per_second", "total_flos"}
_HF_SKIP = {"step", "epoch"}

from bertcurve.curves.names import TB_NAMES as _TB_NAMES  # noqa: E402  (shared with logformats)

# CSV column names that hold the step, in order of preference.
_STEP_COLUMNS = ("step", "steps", "global_step", "_step", "iteration", "iter", "trainer/global_step")


@dataclass(frozen=True)
class Series:
    """One metric over steps: sorted by step, strictly increasing, finite values only."""

    steps: np.ndarray   # int64 when every step is a whole number, else float64
    values: np.ndarray  # float64

    def __len__(self) -> int:
        return int(self.values.shape[0])

    @property
    def first_step(self) -> float:
        return float(self.steps[0])

    @property
    def last_step(self) -> float:
        return float(self.steps[-1])


@dataclass
class TrainingLog:
    """A training log read by :func:`load_log`."""

    name: str                   # display name: run dir name or file stem
    path: Path                  # what was read
    kind: str                   # one of KINDS
    series: dict[str, Series]   # normalised metric name -> series
    meta: dict = field(default_factory=dict)   # run config.json, trainer_state settings, ...; {} when unknown
    notes: list[str] = field(default_factory=list)  # what was done about odd input
    default: str | None = None  # metric picked by --metric-col / --tag, overrides DEFAULT_METRICS

    def default_metric(self) -> str:
        """The metric to analyse when none is named (see ``docs/CONTRACTS.md``)."""
        if self.default and self.default in self.series:
            return self.default
        for name in DEFAULT_METRICS:
            if name in self.series:
                return name
        learned = [n for n in self.series if n not in AUXILIARY]
        if len(learned) == 1:
            return learned[0]
        raise UserError(
            f"{self.path}: no MLM accuracy in this log and no single obvious metric; "
            f"choose one with --metric ({self._available()})"
        )

    def metric(self, name: str | None = None, *, min_points: int = 1, allow_constant: bool = True) -> Series:
        """The series called ``name`` (default: :meth:`default_metric`).

        ``min_points`` and ``allow_constant=False`` turn a series too short or flat
        to analyse into a UserError instead of a meaningless statistic.
        """
        chosen = self.default_metric() if name is None else name
        if chosen not in self.series:
            raise UserError(f"metric {chosen!r} is not in {self.path}; choose one of: {self._available()}")
        series = self.series[chosen]
        if len(series) < min_points:
            raise UserError(
                f"metric {chosen!r} in {self.path} has {len(series)} usable point(s); "
                f"at least {min_points} are needed (train longer or log more often)"
            )
        if not allow_constant and len(series) and np.ptp(series.values) == 0:
            raise UserError(
                f"metric {chosen!r} in {self.path} is constant ({series.values[0]:g}) over all "
                f"{len(series)} points; there is no curve to analyse"
            )
        return series

    def _available(self) -> str:
        return ", ".join(sorted(self.series)) or "none"


# ------------------------------------------------------------------ helpers
def make_series(steps: Iterable[Any], values: Iterable[Any], *, name: str = "metric") -> tuple[Series, list[str]]:
    """Build a clean :class:`Series` from raw steps and values, and say what was done.

    Non-finite values or steps are dropped; out-of-order steps are sorted (stably);
    when a step repeats, the value that came last in the input wins, because a
    resumed run re-logs the steps after its checkpoint and those are the truth.
    """
    steps_arr = np.asarray(list(steps) if not isinstance(steps, np.ndarray) else steps, dtype=np.float64)
    values_arr = np.asarray(list(values) if not isinstance(values, np.ndarray) else values, dtype=np.float64)
    if steps_arr.shape != values_arr.shape:
        raise UserError(f"{name}: {steps_arr.size} steps but {values_arr.size} values; the log is inconsistent")
    notes: list[str] = []
    finite = np.isfinite(values_arr) & np.isfinite(steps_arr)
    dropped = int(steps_arr.size - finite.sum())
    if dropped:
        notes.append(f"{name}: dropped {dropped} non-finite (NaN/inf/missing) value(s)")
        steps_arr, values_arr = steps_arr[finite], values_arr[finite]
    if steps_arr.size > 1 and np.any(np.diff(steps_arr) < 0):
        out_of_order = int(np.sum(np.diff(steps_arr) < 0))
        notes.append(f"{name}: steps were not in order ({out_of_order} step(s) went backwards); sorted by step")
    order = np.argsort(steps_arr, kind="stable")
    steps_arr, values_arr = steps_arr[order], values_arr[order]
    if steps_arr.size > 1:
        # Within a run of equal steps the stable sort keeps input order, so the last one is the newest.
        keep = np.append(steps_arr[1:] != steps_arr[:-1], True)
        repeated = int(steps_arr.size - keep.sum())
        if repeated:
            notes.append(f"{name}: {repeated} repeated step(s); kept the value logged last for each")
            steps_arr, values_arr = steps_arr[keep], values_arr[keep]
    if steps_arr.size and np.all(steps_arr == np.round(steps_arr)) and np.all(np.abs(steps_arr) < 2**53):
        steps_out = steps_arr.astype(np.int64)
    else:
        steps_out = steps_arr
    return Series(steps=steps_out, values=values_arr), notes


def _within_limits(steps: Any, values: Any, name: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Leave out points a log reader cannot analyse: a step beyond 1e15 or a value beyond ±1e100.

    Squares and sums of numbers like 1e307 overflow every statistic (the analysis printed
    ``None`` and crashed); no training run has 1e15 steps. Said in a note, never silently.
    """
    steps_arr = np.asarray(steps, dtype=np.float64)
    values_arr = np.asarray(values, dtype=np.float64)
    if steps_arr.shape != values_arr.shape:
        return steps_arr, values_arr, []  # make_series reports the inconsistency
    with np.errstate(invalid="ignore"):
        huge = (np.abs(values_arr) > MAX_ABS_VALUE) | (np.abs(steps_arr) > MAX_ABS_STEP)
    huge &= np.isfinite(values_arr) & np.isfinite(steps_arr)
    if not huge.any():
        return steps_arr, values_arr, []
    note = (f"{name}: dropped {int(huge.sum())} point(s) with a step beyond {MAX_ABS_STEP:.0e} or a value "
            f"beyond ±{MAX_ABS_VALUE:.0e} (too large to analyse)")
    return steps_arr[~huge], values_arr[~huge], [note]


def _number(value: Any, where: str) -> float:
    """A finite-or-not float from a JSON value; a string or list is a UserError."""
    if value is None:
        return math.nan
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    raise UserError(f"{where}: {value!r} is not a number; fix or remove that entry")


def _numbers(values: list, where: str) -> np.ndarray:
    """A JSON list as float64 (None -> NaN); the first bad entry is named in the error."""
    try:
        # Fast path for the usual all-numeric list (a 100,000-point history in milliseconds).
        arr = np.asarray(values, dtype=np.float64)
        if arr.ndim == 1:
            return arr
    except (TypeError, ValueError):
        pass
    return np.asarray([_number(v, f"{where}[{i}]") for i, v in enumerate(values)], dtype=np.float64)


def _collect(points: dict[str, tuple[list[float], list[float]]], path: Path) -> tuple[dict[str, Series], list[str]]:
    series: dict[str, Series] = {}
    notes: list[str] = []
    for name, (steps, values) in points.items():
        steps, values, said = _within_limits(steps, values, name)
        s, n = make_series(steps, values, name=name)
        notes += said + n
        if len(s):
            series[name] = s
    if not series:
        why = f" ({notes[-1]})" if notes else ""
        raise UserError(f"{path}: no numeric metric found in the log{why}; is it the right file?")
    return series, notes


def _add(points: dict[str, tuple[list[float], list[float]]], name: str, step: float, value: float) -> None:
    steps, values = points.setdefault(name, ([], []))
    steps.append(step)
    values.append(value)


#: Points beyond these are left out by make_series: no training run has 1e15 steps, and values
#: past 1e100 overflow the statistics (a square of 1e200 is inf).
MAX_ABS_STEP = 1e15
MAX_ABS_VALUE = 1e100
#: Longest line a text log may have (a metrics line is a few hundred bytes).
MAX_LINE_BYTES = 1 << 20
#: Largest .json log read whole (JSON is not streamed; a 400,000-entry trainer_state.json is ~60 MB).
MAX_JSON_BYTES = 64 << 20
_SNIFF_BYTES = 1 << 16


def check_text_file(path: Path) -> int:
    """Refuse a binary or NUL-filled file (e.g. ``truncate -s 2G``) from its first 64 KiB; return its size."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as handle:
            head = handle.read(_SNIFF_BYTES)
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror or exc}") from None
    if b"\0" in head:
        raise UserError(f"{path} holds NUL bytes: it is a binary or zero-filled file, not a text training log")
    return size


def capped_lines(handle: Any, path: Path) -> Iterable[Any]:
    """The lines of ``handle`` (text or binary), each read with a length cap so memory stays bounded."""
    number = 0
    while True:
        line = handle.readline(MAX_LINE_BYTES + 1)
        if not line:
            return
        number += 1
        if len(line) > MAX_LINE_BYTES:
            raise UserError(f"{path}:{number} is longer than {MAX_LINE_BYTES >> 20} MiB without a line break; "
                            "this is not a line-by-line training log")
        if ("\0" if isinstance(line, str) else b"\0") in line:
            raise UserError(f"{path}:{number} holds NUL bytes; the file is binary or was damaged (e.g. zero-filled "
                            "by a crash); cut that part off or point at the right file")
        yield line


def _read_text(path: Path) -> str:
    size = check_text_file(path)
    if size > MAX_JSON_BYTES:
        raise UserError(f"{path} is {size / 2**20:,.0f} MiB; a .json log is read whole and may be at most "
                        f"{MAX_JSON_BYTES >> 20} MiB (write the history as CSV or metrics.jsonl, which are streamed)")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise UserError(f"{path} is not UTF-8 text; is it the right file?") from None
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror or exc}") from None
    if not text.strip():
        raise UserError(f"{path} is empty; point at a log that has data in it")
    return text


# ------------------------------------------------------------------ readers
class RunMetricsParser:
    """metrics.jsonl parsed line by line into float64 arrays (16 bytes per value).

    A log of millions of lines needs less memory than its own size on disk, and
    :meth:`feed` can be called again on the same open file to parse only what was
    appended since (the dashboard's polls).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.points: dict[str, tuple[array, array]] = {}
        self.bad_line: int | None = None   # unparseable; fine only if it turns out to be the last line
        self.seen = False
        self.number = 0

    def feed(self, handle: Any, *, complete_only: bool = False) -> int:
        """Parse the lines of binary ``handle`` from its position; return the bytes consumed.

        ``complete_only`` leaves a last line without its newline unread (a writer may be
        in the middle of it), so the next call starts there.
        """
        path, consumed = self.path, 0
        for raw in capped_lines(handle, path):
            if complete_only and not raw.endswith(b"\n"):
                break
            consumed += len(raw)
            self.number += 1
            number = self.number
            if number == 1 and raw.startswith(codecs.BOM_UTF8):
                raw = raw[len(codecs.BOM_UTF8):]
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise UserError(f"{path} is not UTF-8 text; is it the right file?") from None
            if not line.strip():
                continue
            self.seen = True
            if self.bad_line is not None:
                raise UserError(f"{path}:{self.bad_line} is not valid JSON; the metrics file is damaged")
            try:
                row = json.loads(line)
            except (ValueError, RecursionError):  # JSONDecodeError, a 5000-digit number, "[[[[..." nesting
                self.bad_line = number
                continue
            self._row(row, number)
        return consumed

    def _row(self, row: Any, number: int) -> None:
        path = self.path
        if not isinstance(row, dict):
            raise UserError(f"{path}:{number} is not a JSON object")
        fmt = row.get("format")
        if fmt is not None and fmt != layout.METRICS_FORMAT:
            raise UserError(
                f"{path}:{number} has format {fmt!r}; this bertcurve reads {layout.METRICS_FORMAT!r} "
                f"(upgrade bertcurve to read newer logs)"
            )
        if "step" not in row:
            raise UserError(f"{path}:{number} has no 'step'; the metrics file is damaged")
        step = _number(row["step"], f"{path}:{number} step")
        split = str(row.get("split", "train"))
        if split == "branch":  # an --extend-to/--cooldowns-at branch point: a marker, not a curve point
            return
        for key, value in row.items():
            if key in _RUN_SKIP or isinstance(value, (str, list, dict)) and not _numeric_string(value):
                continue
            if split == "train" and key in _RUN_SHARED:
                name = key
            else:
                name = f"{split}_{key}"
            steps, values = self.points.get(name) or self.points.setdefault(name, (array("d"), array("d")))
            steps.append(step)
            values.append(_number(value, f"{path}:{number} {key}"))

    def log(self, run_dir: Path | None, *, consume: bool = True) -> TrainingLog:
        """The :class:`TrainingLog` of what was fed; ``consume=False`` keeps the arrays for more feeding."""
        path = self.path
        if not self.seen:
            raise UserError(f"{path} is empty; point at a log that has data in it")
        notes: list[str] = []
        if self.bad_line is not None:
            # A crash while appending leaves a torn last line; everything before it is sound.
            notes.append(f"{path.name}: ignored an incomplete last line ({self.bad_line})")
        series: dict[str, Series] = {}
        more: list[str] = []
        for name in list(self.points):
            # consumed: freed metric by metric, so the peak stays near one copy
            steps, values = self.points.pop(name) if consume else self.points[name]
            kept_steps, kept_values, limited = _within_limits(np.frombuffer(steps, dtype=np.float64),
                                                              np.frombuffer(values, dtype=np.float64), name)
            one, said = make_series(kept_steps, kept_values, name=name)
            del steps, values, kept_steps, kept_values
            more += limited + said
            if len(one):
                series[name] = one
        if not series:
            raise UserError(f"{path}: no numeric metric found in the log; is it the right file?")
        meta: dict[str, Any] = {}
        if run_dir is not None and (run_dir / layout.RUN_CONFIG).is_file():
            try:
                meta["config"] = json.loads((run_dir / layout.RUN_CONFIG).read_text(encoding="utf-8"))
            except (OSError, ValueError, RecursionError):
                notes.append(f"{layout.RUN_CONFIG} could not be read; run settings unknown")
        name = run_dir.name if run_dir is not None else path.stem
        if run_dir is not None and run_dir.name == layout.STUDY_RUN_DIR and \
                (run_dir.parent / layout.STUDY_STATE).is_file():
            name = run_dir.parent.name  # a study's run is better known by the study's name
        return TrainingLog(name=name, path=path, kind="bertcurve-run", series=series, meta=meta,
                           notes=notes + more)


def _load_run_metrics(path: Path, run_dir: Path | None) -> TrainingLog:
    check_text_file(path)
    parser = RunMetricsParser(path)
    try:
        handle = open(path, "rb")
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror or exc}") from None
    with handle:
        parser.feed(handle)
    return parser.log(run_dir)


class RunMetricsTail:
    """A metrics.jsonl followed as it grows: each :meth:`read` parses only the bytes appended since.

    A file that shrank or was replaced (truncated, rotated, a new run in the same folder)
    is read again from the start. Memory is that of the parsed arrays, not of the file.
    """

    def __init__(self, path: Path, run_dir: Path | None) -> None:
        self.path, self.run_dir = Path(path), run_dir
        self._identity: tuple[int, int] | None = None
        self._offset = 0
        self._parser = RunMetricsParser(self.path)
        self._cached: tuple[tuple, TrainingLog] | None = None
        self._first = b""  # the log's first bytes: a log rewritten in place starts differently

    def _head(self, n: int) -> bytes:
        try:
            with open(self.path, "rb") as handle:
                return handle.read(n)
        except OSError:
            return b""

    def read(self) -> TrainingLog:
        try:
            st = self.path.stat()
        except OSError as exc:
            raise UserError(f"cannot read {self.path}: {exc.strerror or exc}") from None
        identity = (st.st_dev, st.st_ino)
        # rewritten in place and already longer again: a new log under the same inode
        rewritten = identity == self._identity and bool(self._first) and st.st_size >= self._offset and \
            self._head(len(self._first)) != self._first
        if rewritten or identity != self._identity or st.st_size < self._offset:
            if st.st_size:
                check_text_file(self.path)
            self._identity, self._offset, self._parser, self._cached = identity, 0, RunMetricsParser(self.path), None
            self._first = b""
        config = self.run_dir / layout.RUN_CONFIG if self.run_dir is not None else None
        config_stamp = config.stat().st_mtime_ns if config is not None and config.exists() else None
        version = (identity, st.st_size, st.st_mtime_ns, config_stamp)
        if self._cached is not None and self._cached[0] == version:
            return self._cached[1]
        if st.st_size > self._offset:
            try:
                with open(self.path, "rb") as handle:
                    handle.seek(self._offset)
                    self._offset += self._parser.feed(handle, complete_only=True)
                if len(self._first) < 4096:
                    self._first = self._head(min(4096, self._offset))
            except (UserError, OSError):
                self._identity = None  # half-parsed: start again from the top at the next read
                raise
        log = self._parser.log(self.run_dir, consume=False)
        self._cached = (version, log)
        return log


def _numeric_string(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        float(value)
    except ValueError:
        return False
    return True


def _load_seed(path: Path, data: dict) -> TrainingLog:
    step_key = next(k for k in _SEED_STEP_KEYS if k in data)
    raw_steps = data[step_key]
    if not isinstance(raw_steps, list):
        raise UserError(f"{path}: {step_key!r} is not a list")
    steps = _numbers(raw_steps, f"{path} {step_key}")
    points: dict[str, tuple[list[float], list[float]]] = {}
    meta: dict[str, Any] = {}
    for key, values in data.items():
        if key == step_key:
            continue
        if not isinstance(values, list):
            meta[key] = values
            continue
        if len(values) != len(steps):
            raise UserError(
                f"{path}: {key!r} has {len(values)} entries but {step_key!r} has {len(steps)}; "
                f"the history is inconsistent"
            )
        name = _SEED_NAMES.get(key, key)
        points[name] = (steps, _numbers(values, f"{path} {key}"))
    series, notes = _collect(points, path)
    return TrainingLog(name=path.stem, path=path, kind="seed-history", series=series, meta=meta, notes=notes)


def _load_hf(path: Path, data: dict) -> TrainingLog:
    history = data.get("log_history")
    if not isinstance(history, list):
        raise UserError(f"{path}: 'log_history' is not a list; is it a Hugging Face trainer_state.json?")
    points: dict[str, tuple[list[float], list[float]]] = {}
    notes: list[str] = []
    skipped_summary = 0
    for i, entry in enumerate(history):
        if not isinstance(entry, dict) or "step" not in entry:
            continue
        if _HF_SUMMARY_KEYS & entry.keys():
            skipped_summary += 1  # its train_loss is the run average, not a point of the curve
            continue
        step = _number(entry["step"], f"{path} log_history[{i}].step")
        for key, value in entry.items():
            if key == "step" or isinstance(value, (list, dict)):
                continue
            if isinstance(value, str) and not _numeric_string(value):
                continue
            name = _HF_NAMES.get(key, key)
            if name == "epoch" and points.get("epoch", ([], []))[0][-1:] == [step]:
                continue  # a Trainer logs its train and eval entries of one step with the same epoch
            _add(points, name, step, _number(value, f"{path} log_history[{i}].{key}"))
    if skipped_summary:
        notes.append("left out the closing summary entry of log_history (run averages, not curve points)")
    if not points:
        raise UserError(f"{path}: log_history holds no logged metrics; train with logging_steps set")
    series, more = _collect(points, path)
    meta = {k: v for k, v in data.items() if k != "log_history" and isinstance(v, (int, float, str, bool))}
    name = path.parent.name if path.name == "trainer_state.json" else path.stem
    return TrainingLog(name=name or path.stem, path=path, kind="hf-trainer-state", series=series, meta=meta,
                       notes=notes + more)


def _tb_name(tag: str) -> str:
    if tag in _TB_NAMES:
        return _TB_NAMES[tag]
    # `bertcurve train --tensorboard` writes "<split>/<metrics.jsonl key>": name them as metrics.jsonl is named.
    match = re.fullmatch(r"(train|eval)/([0-9A-Za-z_]+)", tag)
    if match:
        split, key = match.groups()
        return key if split == "train" and key in _RUN_SHARED else f"{split}_{key}"
    return re.sub(r"[^0-9A-Za-z_]+", "_", tag).strip("_").lower() or "value"


def _load_tensorboard(path: Path, tag: str | None) -> TrainingLog:
    try:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    except ImportError:
        raise UserError(
            "reading TensorBoard event files needs the tensorboard package; "
            "install it with `pip install tensorboard` (or `pip install bertcurve[tensorboard]`)"
        ) from None
    directory = path if path.is_dir() else path.parent
    files = sorted(directory.glob("events.out.tfevents*")) if path.is_dir() else [path]
    if not files:
        raise UserError(f"{path}: no TensorBoard event files (events.out.tfevents*) in this folder")
    points: dict[str, tuple[list[float], list[float]]] = {}
    tags_seen: list[str] = []
    for file in files:
        acc = EventAccumulator(str(file), size_guidance={"scalars": 0})
        try:
            acc.Reload()
        except Exception as exc:  # tensorboard raises several types for damaged files
            raise UserError(f"{file}: cannot read TensorBoard events ({exc})") from None
        for t in acc.Tags().get("scalars", []):
            if t not in tags_seen:
                tags_seen.append(t)
            name = _tb_name(t)
            for event in acc.Scalars(t):
                _add(points, name, float(event.step), float(event.value))
    if not points:
        raise UserError(f"{path}: the event files hold no scalar values")
    default = None
    if tag is not None:
        if tag not in tags_seen:
            raise UserError(f"tag {tag!r} is not in {path}; choose one of: {', '.join(sorted(tags_seen))}")
        default = _tb_name(tag)
    series, notes = _collect(points, path)
    if len(files) > 1:
        notes.insert(0, f"merged {len(files)} event files")
    return TrainingLog(name=directory.name, path=path, kind="tensorboard", series=series,
                       meta={"tags": tags_seen}, notes=notes, default=default)


# CSV cells that mean "no value here" (dropped one by one, like NaN).
_CSV_MISSING = {"", "nan", "na", "n/a", "#n/a", "null", "none", "-", "--", "—", "?", "inf", "-inf"}


def _csv_rows(path: Path) -> Iterator[Any]:
    """Header and the streamed rows (line number, cells) of a CSV/TSV log; the file stays open while iterated."""
    if check_text_file(path) == 0:
        raise UserError(f"{path} is empty; point at a log that has data in it")
    try:
        handle = open(path, encoding="utf-8-sig", newline="")
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror or exc}") from None
    with handle:
        try:
            head = handle.read(4096)
            handle.seek(0)
            if path.suffix.lower() == ".tsv":
                delimiter = "\t"
            else:
                try:
                    delimiter = csv.Sniffer().sniff(head, delimiters=",\t;").delimiter
                except csv.Error:
                    delimiter = ","
            reader = csv.reader(capped_lines(handle, path), delimiter=delimiter)
            header: list[str] | None = None
            for row in reader:
                if not any(cell.strip() for cell in row):
                    continue
                if header is None:
                    header = [h.strip() for h in row]
                    yield header
                    continue
                yield reader.line_num, row
        except UnicodeDecodeError:
            raise UserError(f"{path} is not UTF-8 text; is it the right file?") from None
        except csv.Error as exc:  # a field over csv.field_size_limit(), a stray quote, ...
            raise UserError(f"{path}: not a readable CSV file ({exc})") from None
        except OSError as exc:
            raise UserError(f"cannot read {path}: {exc.strerror or exc}") from None
        if header is None:
            raise UserError(f"{path} is empty; point at a log that has data in it")


def _load_csv(path: Path, step_col: str | None, metric_col: str | None) -> TrainingLog:
    rows = _csv_rows(path)
    header = next(rows)
    lowered = [h.lower() for h in header]
    if step_col is None:
        found = next((c for c in _STEP_COLUMNS if c in lowered), None)
        if found is None:
            raise UserError(
                f"{path}: no step column found (looked for {', '.join(_STEP_COLUMNS)}); "
                f"name it with --step-col of analyze, plot or compare (columns: {', '.join(header)})"
            )
        step_index = lowered.index(found)
    else:
        if step_col not in header:
            raise UserError(f"--step-col {step_col!r} is not a column of {path}; columns: {', '.join(header)}")
        step_index = header.index(step_col)
    if metric_col is not None and metric_col not in header:
        raise UserError(f"--metric-col {metric_col!r} is not a column of {path}; columns: {', '.join(header)}")
    names = {j: _csv_name(col) for j, col in enumerate(header) if j != step_index}
    # Streamed into float64 arrays: memory grows with the numbers, not with the text.
    points = {j: (array("d"), array("d")) for j in names}
    numeric = {j: 0 for j in names}
    text_cells: dict[int, list] = {}   # column -> [count, first line, first text]
    n_rows = 0
    for line_no, row in rows:
        n_rows += 1
        cell = row[step_index].strip() if step_index < len(row) else ""
        try:
            step = float(cell)
        except ValueError:
            raise UserError(f"{path}:{line_no}: step {cell!r} is not a number") from None
        for j in names:
            raw = row[j].strip() if j < len(row) else ""
            if raw.lower() in _CSV_MISSING:
                points[j][0].append(step)  # NaN: dropped (and counted) by make_series
                points[j][1].append(math.nan)
                continue
            try:
                value = float(raw)
            except ValueError:
                if metric_col is not None and header[j] == metric_col:
                    raise UserError(f"{path}:{line_no}: column {metric_col!r} holds {raw!r}, which is not a "
                                    "number") from None
                seen = text_cells.setdefault(j, [0, line_no, raw])
                seen[0] += 1
                continue
            numeric[j] += 1
            points[j][0].append(step)
            points[j][1].append(value)
    if n_rows == 0:
        raise UserError(f"{path} has a header but no data rows")
    notes: list[str] = []
    for j, (count, line_no, raw) in text_cells.items():
        if count > numeric[j]:  # mostly text: a label column, not a metric
            points.pop(j)
            notes.append(f"column {header[j]!r} is not numeric (e.g. {raw!r} on line {line_no}); left out")
        else:
            notes.append(f"column {header[j]!r}: dropped {count} cell(s) that are not numbers "
                         f"(e.g. {raw!r} on line {line_no}); its other values are kept")
    by_name: dict[str, tuple[array, array]] = {}
    for j, (steps, values) in points.items():
        if names[j] in by_name:  # two columns with the same normalised name: the later one wins, as before
            notes.append(f"columns named like {names[j]!r} appear twice; kept the last")
        by_name[names[j]] = (steps, values)
    if not by_name:
        raise UserError(f"{path}: no numeric column besides the step column")
    series, more = _collect({k: (np.frombuffer(s, dtype=np.float64), np.frombuffer(v, dtype=np.float64))
                             for k, (s, v) in by_name.items()}, path)
    default = _csv_name(metric_col) if metric_col is not None else None
    if default is not None and default not in series:
        raise UserError(f"--metric-col {metric_col!r} in {path} has no finite value")
    return TrainingLog(name=path.stem, path=path, kind="csv", series=series, meta={"columns": header},
                       notes=notes + more, default=default)


def _csv_name(column: str) -> str:
    """Normalise a CSV column name: known aliases map to the contract names, others are slugged."""
    for table in (_TB_NAMES, _HF_NAMES, _SEED_NAMES):
        if column in table:
            return table[column]
    # CamelCase words are words too: "EvalLoss" is eval_loss (and then the contract name).
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", column.strip())
    slug = re.sub(r"[^0-9A-Za-z_]+", "_", spaced).strip("_").lower()
    return _HF_NAMES.get(slug, _SEED_NAMES.get(slug, slug)) or "value"


# ------------------------------------------------------------------ other tools' formats
def _formats():
    from bertcurve.curves import logformats

    return logformats


def _text_lines(path: Path):
    """The lines of a text log, streamed (undecodable bytes replaced: tools' logs mix in stderr)."""
    try:
        with open(path, encoding="utf-8-sig", errors="replace") as handle:
            yield from handle
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror or exc}") from None


def _load_text_log(path: Path, metric_col: str | None) -> TrainingLog | None:
    """An MLPerf result file or a key:value text log (llm.c, nanoGPT, ...), or None if neither."""
    from itertools import islice

    fmt = _formats()
    head = list(islice(_text_lines(path), 400))
    if any(fmt.looks_like_mllog(line) for line in head):
        log = _load_foreign(path, "mlperf", fmt.read_mllog(path, _text_lines(path)))
    elif fmt.looks_like_key_value(head):
        log = _load_foreign(path, "key-value-text", fmt.read_key_value(path, _text_lines(path)))
    else:
        return None
    if metric_col is not None:
        name = metric_col if metric_col in log.series else _csv_name(metric_col)
        if name not in log.series:
            raise UserError(f"--metric-col {metric_col!r} is not in {path}; metrics: {log._available()}")
        log.default = name
    return log


def _load_foreign(path: Path, kind: str, read: tuple) -> TrainingLog:
    points, meta, notes, default = read
    if not points:
        raise UserError(f"{path}: read as {kind} but no metric with a step was found; is it the right file?")
    series, more = _collect(points, path)
    return TrainingLog(name=path.stem, path=path, kind=kind, series=series, meta=meta, notes=notes + more,
                       default=default)


# ------------------------------------------------------------------ entry point
def load_log(
    source: str | Path,
    *,
    tag: str | None = None,
    step_col: str | None = None,
    metric_col: str | None = None,
) -> TrainingLog:
    """Read a training log of any supported kind (see the module docstring).

    ``tag`` picks a TensorBoard scalar as the default metric; ``step_col`` and
    ``metric_col`` name the CSV columns (the step column is detected when not named).
    Bad input raises :class:`~bertcurve.errors.UserError`.
    """
    path = Path(source).expanduser()
    if not path.exists():
        raise UserError(f"log not found: {path}")
    if path.is_dir():
        if (path / layout.METRICS).is_file():
            return _load_run_metrics(path / layout.METRICS, path)
        if (path / "trainer_state.json").is_file():
            return load_log(path / "trainer_state.json")
        if any(path.glob("events.out.tfevents*")):
            return _load_tensorboard(path, tag)
        checkpoints = sorted(
            (p for p in path.glob("checkpoint-*") if (p / "trainer_state.json").is_file()),
            key=lambda p: int(p.name.split("-")[-1]) if p.name.split("-")[-1].isdigit() else -1,
        )
        if checkpoints:
            log = load_log(checkpoints[-1] / "trainer_state.json")
            log.name = path.name
            log.notes.insert(0, f"read the newest Hugging Face checkpoint, {checkpoints[-1].name}")
            return log
        raise UserError(
            f"{path} holds no training log: expected {layout.METRICS}, trainer_state.json "
            f"or TensorBoard event files"
        )
    if path.name.startswith("events.out.tfevents"):
        return _load_tensorboard(path, tag)
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return _load_run_metrics(path, path.parent if path.name == layout.METRICS else None)
    if suffix in {".csv", ".tsv"}:
        return _load_csv(path, step_col, metric_col)
    if suffix == ".json":
        text = _read_text(path)
        try:
            data = json.loads(text)
        except RecursionError:
            raise UserError(f"{path} is nested too deeply to be a training log") from None
        except ValueError as exc:  # JSONDecodeError, or an integer with more digits than Python parses
            raise UserError(f"{path} is not valid JSON ({exc})") from None
        if isinstance(data, dict) and "log_history" in data:
            return _load_hf(path, data)
        if isinstance(data, dict) and any(isinstance(data.get(k), list) for k in _SEED_STEP_KEYS):
            return _load_seed(path, data)
        if _formats().is_wandb_export(data):
            return _load_foreign(path, "wandb-export", _formats().read_wandb(path, data))
        raise UserError(
            f"{path}: not a training log bertcurve knows (expected a seed-style history with a "
            f"'steps' list or a Hugging Face trainer_state.json with 'log_history')"
        )
    foreign = _load_text_log(path, metric_col)
    if foreign is not None:
        return foreign
    if suffix == ".txt":
        first = next((line for line in _text_lines(path) if line.strip()), "")
        if not any(d in first for d in (",", "\t", ";")):
            raise UserError(f"{path}: neither a CSV/TSV table (its first line has no delimiter) nor a log "
                            f"format bertcurve knows (MLPerf :::MLLOG, llm.c/nanoGPT 'step: key value' lines)")
        return _load_csv(path, step_col, metric_col)
    raise UserError(
        f"{path}: unknown log type {suffix or '(no extension)'!r}; give a run directory, metrics.jsonl, "
        f"a .json history or trainer_state.json, a TensorBoard folder, or a .csv/.tsv file"
    )
