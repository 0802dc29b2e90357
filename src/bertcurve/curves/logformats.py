"""Readers for training logs other tools write, beside :mod:`bertcurve.curves.logs`' own:

* MLPerf result files (``:::MLLOG {json}`` lines; BERT's ``{'global_steps': N, ...}`` eval lines);
* ``key:value`` text logs of the llm.c / nanoGPT family (``s:250 tel:6.31``,
  ``step 250/5000: train loss 3.1, val loss 3.2``, ``iter 250: loss 3.1, time 12ms``), and lines
  such as MiniMind's ``Epoch:[1/1](250/750), loss: 6.1, lr: 0.0005``;
* Weights & Biases run exports as JSON: a list of history rows (``_step`` plus metrics), or
  ``{"history": {"group": {"iter": [...], "val_loss": [...]}}}`` parallel lists.
  (W&B's CSV export and Lightning's ``metrics.csv`` are CSV files with a step column, which the
  CSV reader of :mod:`bertcurve.curves.logs` reads as they are.)

Each returns ``(points, meta, notes, default)``: raw (step, value) lists per metric, for
:func:`bertcurve.curves.logs._collect` to clean.
"""

from __future__ import annotations

import ast
import json
import math
import re
from pathlib import Path
from typing import Any, Iterable

Points = dict[str, tuple[list[float], list[float]]]

# Names other tools use -> bertcurve's names.
_NAMES = {
    "tel": "eval_loss", "trl": "train_loss", "norm": "grad_norm", "lr": "lr", "learning_rate": "lr",
    "val_loss": "eval_loss", "val loss": "eval_loss", "validation loss": "eval_loss", "valid loss": "eval_loss",
    "train loss": "train_loss", "train_loss": "train_loss", "loss": "train_loss",
    "eval_loss": "eval_loss", "eval_mlm_accuracy": "eval_mlm_accuracy",
}
_STEP_KEYS = ("step", "steps", "iter", "iteration", "s", "global_step", "global_steps", "_step",
              "trainer/global_step")
_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_STEP_AT_START = re.compile(r"^\s*(?:step|iter|iteration|s)\s*[:=]?\s*(\d+)(?:\s*/\s*\d+)?\s*[:,|]?\s*", re.I)
_STEP_OF_TOTAL = re.compile(r"\((\d+)\s*/\s*\d+\)")
_PAIR = re.compile(r"([A-Za-z_][A-Za-z0-9_ /.-]*?)\s*[:=]?\s*(" + _NUMBER + r")(?=[\s,;|%a-zA-Z]|$)")
_MLLOG = ":::MLLOG"


def _add(points: Points, name: str, step: float, value: float) -> None:
    steps, values = points.setdefault(name, ([], []))
    steps.append(float(step))
    values.append(float(value))


def _norm(key: str) -> str:
    k = re.sub(r"\s+", " ", key.strip().lower())
    if k in _NAMES:
        return _NAMES[k]
    return re.sub(r"[^0-9a-z]+", "_", k).strip("_") or "value"


def _preferred_default(points: Points) -> str | None:
    for name in ("eval_mlm_accuracy", "eval_loss", "eval_log_perplexity", "train_loss"):
        if name in points and len(points[name][0]) >= 2:
            return name
    return None


# ------------------------------------------------------------------ sniffing
def looks_like_mllog(head: str) -> bool:
    return _MLLOG in head


def looks_like_key_value(lines: Iterable[str]) -> bool:
    """At least three lines carry a step and a metric in one of the key:value shapes."""
    hits = 0
    for line in lines:
        if _parse_kv_line(line) is not None:
            hits += 1
            if hits >= 3:
                return True
    return False


# ------------------------------------------------------------------ key:value text logs
def _parse_kv_line(line: str) -> tuple[float, dict[str, float]] | None:
    """(step, {metric: value}) of one log line, or None when it is not a metrics line."""
    m = _STEP_AT_START.match(line)
    rest = None
    if m:
        step, rest = float(m.group(1)), line[m.end():]
    else:
        m2 = _STEP_OF_TOTAL.search(line)
        if m2 and re.search(r"loss|acc|ppl|perplexity", line, re.I):
            step, rest = float(m2.group(1)), line[m2.end():]
    if rest is None:
        return None
    found: dict[str, float] = {}
    for chunk in re.split(r"[,;|]\s*|\s{2,}|\s(?=[A-Za-z_]+:)", rest):
        pm = _PAIR.match(chunk.strip())
        if not pm:
            continue
        key = pm.group(1).strip()
        if not key or len(key) > 40 or key.lower() in {"epoch"}:
            continue
        try:
            value = float(pm.group(2))
        except ValueError:
            continue
        if math.isfinite(value):
            found[_norm(key)] = value
    return (step, found) if found else None


def read_key_value(path: Path, lines: Iterable[str]) -> tuple[Points, dict, list[str], str | None]:
    points: Points = {}
    skipped = 0
    for line in lines:
        parsed = _parse_kv_line(line)
        if parsed is None:
            skipped += line.strip() != ""
            continue
        step, found = parsed
        for name, value in found.items():
            _add(points, name, step, value)
    notes = [f"read as a key:value text log; {skipped} line(s) without a step and a metric left out"] \
        if skipped else []
    return points, {"format": "key-value text"}, notes, _preferred_default(points)


# ------------------------------------------------------------------ MLPerf
def read_mllog(path: Path, lines: Iterable[str]) -> tuple[Points, dict, list[str], str | None]:
    """MLPerf result file. Eval points come from BERT's python-dict eval lines when present (they
    carry ``global_steps``); otherwise from ``eval_accuracy`` events, at ``metadata.step`` or, when
    the log counts samples (``samples_count`` / ``epoch_num``), at samples / global batch size."""
    events: list[dict] = []
    dict_lines: list[dict] = []
    for line in lines:
        at = line.find(_MLLOG)
        if at >= 0:
            try:
                ev = json.loads(line[at + len(_MLLOG):])
            except ValueError:
                continue
            if isinstance(ev, dict):
                events.append(ev)
        elif line.lstrip().startswith("{'global_steps'"):
            try:
                d = ast.literal_eval(line.strip())
            except (ValueError, SyntaxError):
                continue
            if isinstance(d, dict):
                dict_lines.append(d)
    meta = {ev["key"]: ev.get("value") for ev in events
            if ev.get("event_type") == "POINT_IN_TIME" and isinstance(ev.get("value"), (int, float, str))
            and ev.get("key") not in {"eval_accuracy", "tracked_stats"}}
    notes: list[str] = []
    points: Points = {}
    target = meta.get("target_accuracy") if isinstance(meta.get("target_accuracy"), (int, float)) else None
    evals = [ev for ev in events if ev.get("key") == "eval_accuracy" and isinstance(ev.get("value"), (int, float))]
    is_ppl = bool(evals) and (max(ev["value"] for ev in evals) > 1.0 or (target is not None and target > 1.0))
    eval_name = "eval_log_perplexity" if is_ppl else "eval_mlm_accuracy"
    if dict_lines:
        for d in dict_lines:
            step = d.get("global_steps")
            if not isinstance(step, (int, float)):
                continue
            for key, value in d.items():
                if key != "global_steps" and isinstance(value, (int, float)):
                    _add(points, _NAMES.get(key, key), step, value)
        notes.append("MLPerf log: steps from the {'global_steps': ...} eval lines")
    elif evals:
        batch = meta.get("global_batch_size")
        for ev in evals:
            md = ev.get("metadata") or {}
            if isinstance(md.get("step"), (int, float)):
                _add(points, eval_name, md["step"], ev["value"])
                continue
            samples = md.get("samples_count", md.get("epoch_num"))
            if not isinstance(samples, (int, float)):
                continue
            _add(points, eval_name, samples / batch if isinstance(batch, (int, float)) and batch > 0 else samples,
                 ev["value"])
        where = "step" if all(isinstance((ev.get("metadata") or {}).get("step"), (int, float)) for ev in evals) \
            else None
        if where is None:
            notes.append(f"MLPerf log counts samples: steps = samples / global_batch_size ({batch})"
                         if isinstance(batch, (int, float)) and batch > 0 else
                         "MLPerf log counts samples and logs no global_batch_size: the step axis is samples")
        if is_ppl:
            notes.append("MLPerf eval_accuracy here is a log-perplexity (values above 1): read as "
                         "eval_log_perplexity, lower is better")
    for ev in events:
        if ev.get("key") == "tracked_stats" and isinstance(ev.get("value"), dict):
            step = (ev.get("metadata") or {}).get("step")
            loss = ev["value"].get("reduced_train_loss", ev["value"].get("train_loss"))
            if isinstance(step, (int, float)) and isinstance(loss, (int, float)):
                _add(points, "train_loss", step, loss)
    if target is not None:
        meta["target_accuracy"] = target
    return points, meta, notes, _preferred_default(points)


# ------------------------------------------------------------------ W&B exports
def is_wandb_export(data: Any) -> bool:
    if isinstance(data, list):
        return bool(data) and all(isinstance(r, dict) for r in data[:5]) and any(
            k in data[0] for k in ("_step", "step", "iter", "trainer/global_step"))
    return isinstance(data, dict) and isinstance(data.get("history"), (dict, list)) and "log_history" not in data


def _step_key(keys: Iterable[str]) -> str | None:
    keys = list(keys)
    return next((k for k in _STEP_KEYS if k in keys), None)


def read_wandb(path: Path, data: Any) -> tuple[Points, dict, list[str], str | None]:
    """A W&B run export: history rows, or groups of parallel lists keyed by a step column."""
    points: Points = {}
    history = data.get("history") if isinstance(data, dict) else data
    groups: list[tuple[str, dict]] = []
    if isinstance(history, list):
        groups.append(("", {"rows": history}))
    elif isinstance(history, dict):
        if any(isinstance(v, list) for v in history.values()):
            groups.append(("", history))
        groups += [(g, v) for g, v in history.items() if isinstance(v, dict)]
    for group, body in groups:
        if "rows" in body and isinstance(body["rows"], list):
            for row in body["rows"]:
                if not isinstance(row, dict):
                    continue
                sk = _step_key(row)
                if sk is None or not isinstance(row[sk], (int, float)):
                    continue
                for key, value in row.items():
                    if key != sk and not key.startswith("_") and isinstance(value, (int, float)) \
                            and not isinstance(value, bool):
                        _add(points, _wandb_name(key), row[sk], value)
            continue
        sk = _step_key(k for k, v in body.items() if isinstance(v, list))
        if sk is None:
            continue
        steps = body[sk]
        for key, values in body.items():
            if key == sk or not isinstance(values, list) or len(values) != len(steps):
                continue
            for st, v in zip(steps, values):
                if isinstance(st, (int, float)) and isinstance(v, (int, float)) and not isinstance(v, bool):
                    _add(points, _wandb_name(key), st, v)
    meta = {}
    if isinstance(data, dict) and isinstance(data.get("config"), dict):
        meta["config"] = data["config"]
    return points, meta, ["read as a Weights & Biases run export"], _preferred_default(points)


def _wandb_name(key: str) -> str:
    from bertcurve.curves.names import TB_NAMES as _TB_NAMES   # HF Trainer names as W&B logs them

    k = key.strip()
    if k in _TB_NAMES:
        return _TB_NAMES[k]
    if k.lower() in _NAMES:
        return _NAMES[k.lower()]
    slug = re.sub(r"[^0-9A-Za-z]+", "_", k).strip("_").lower()
    return {"train_lr": "lr", "val_loss": "eval_loss", "val_acc": "eval_accuracy",
            "train_loss": "train_loss"}.get(slug, slug)
