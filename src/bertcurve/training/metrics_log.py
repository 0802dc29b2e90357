"""``metrics.jsonl``: append-only, one complete JSON line per write.

Each record is written with a single ``os.write`` of the whole line on a
file opened with ``O_APPEND``, so a crash leaves at most one partial last
line; :func:`truncate_after` removes it (and every line newer than the
checkpoint a run resumes from), which makes a resumed run's file equal an
uninterrupted run's file apart from the timing fields.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Iterator

from bertcurve import layout
from bertcurve.fsutil import atomic_write_bytes

TIMING_FIELDS = ("elapsed_s", "tokens_per_s", "eval_s", "time")


def _clean(value: Any) -> Any:
    """JSON has no NaN/Infinity: write them as null instead of invalid JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def format_record(record: dict[str, Any]) -> bytes:
    """One complete line: ``{"format": ..., "step": ..., "split": ..., ...}\\n``."""
    ordered = {"format": layout.METRICS_FORMAT, "step": int(record["step"]),
               "split": record["split"]}
    ordered.update({k: _clean(v) for k, v in record.items() if k not in ordered})
    return (json.dumps(ordered, ensure_ascii=False, separators=(", ", ": ")) + "\n").encode("utf-8")


class MetricsWriter:
    """Appends records to ``metrics.jsonl``; a do-nothing writer on non-zero ranks."""

    def __init__(self, path: Path | None):
        self.path = path
        self._fd: int | None = None
        if path is not None:
            self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def write(self, record: dict[str, Any]) -> None:
        if self._fd is None:
            return
        line = format_record(record)
        written = os.write(self._fd, line)
        if written != len(line):
            # A short write (disk full) leaves a partial line; resume trims it.
            raise OSError(28, "No space left on device (short write)", str(self.path))

    def close(self) -> None:
        if self._fd is not None:
            try:
                os.fsync(self._fd)
            except OSError:
                pass
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "MetricsWriter":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def read_records(path: Path) -> Iterator[dict[str, Any]]:
    """Complete, parseable lines of a metrics file (a partial last line is skipped)."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return
    for raw in data.split(b"\n")[:-1]:  # the piece after the last newline is partial
        try:
            obj = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue
        if isinstance(obj, dict) and "step" in obj:
            yield obj


def truncate_after(path: Path, step: int) -> int:
    """Keep only complete lines with ``step <= step``; return how many lines were dropped.

    Rewritten atomically, so a crash during the trim leaves the old file.
    """
    path = Path(path)
    if not path.exists():
        return 0
    data = path.read_bytes()
    lines = data.split(b"\n")
    complete, partial = lines[:-1], lines[-1]
    kept: list[bytes] = []
    dropped = 1 if partial else 0
    for raw in complete:
        try:
            obj = json.loads(raw)
            ok = isinstance(obj, dict) and int(obj.get("step", -1)) <= step
        except (json.JSONDecodeError, UnicodeDecodeError, TypeError, ValueError):
            ok = False
        if ok:
            kept.append(raw)
        else:
            dropped += 1
    if dropped:
        atomic_write_bytes(path, b"".join(line + b"\n" for line in kept))
    return dropped


def without_timing(record: dict[str, Any]) -> dict[str, Any]:
    """A record minus the fields that differ between identical runs."""
    return {k: v for k, v in record.items() if k not in TIMING_FIELDS}
