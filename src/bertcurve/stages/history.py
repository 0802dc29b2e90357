"""Write a run's metrics in another tool's format.

    bertcurve export-history RUN_DIR --format seed [--split train|eval] [--out FILE]

``--format seed`` writes the seed project's ``training_history`` JSON: an
object of equal-length lists ``steps``, ``mlm_acc``, ``nsp_acc``, ``loss``
and ``lr`` (accuracies as fractions, like the seed's file). From training
records (default) ``mlm_acc`` is the training-batch accuracy the seed
logged; ``--split eval`` exports the fixed-mask held-out accuracy instead.
Runs without next-sentence prediction have ``null`` in ``nsp_acc``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Iterator

from bertcurve import layout
from bertcurve.errors import UserError
from bertcurve.fsutil import folder_kind, guard_output_file, json_format_is, write_json

FORMATS = ("seed",)


def seed_history(records: list[dict[str, Any]], split: str = "train") -> dict[str, list]:
    """The seed's ``{steps, mlm_acc, nsp_acc, loss, lr}`` lists from metrics records.

    One entry per step (a duplicated step keeps its last record); ``lr`` of
    eval entries comes from the training record of the same step when there
    is one, else ``null``.
    """
    lr_by_step = {int(r["step"]): r.get("lr") for r in records if r.get("split") == "train"}
    chosen: dict[int, dict[str, Any]] = {}
    for r in records:
        if r.get("split") == split:
            chosen[int(r["step"])] = r
    steps = sorted(chosen)
    if split == "eval":
        steps = [s for s in steps if s > 0]  # step 0 is the untrained model; the seed starts later
    return {
        "steps": steps,
        "mlm_acc": [chosen[s].get("mlm_accuracy") for s in steps],
        "nsp_acc": [chosen[s].get("nsp_accuracy") for s in steps],
        "loss": [chosen[s].get("loss") for s in steps],
        "lr": [chosen[s].get("lr", lr_by_step.get(s)) for s in steps],
    }


_SEED_FIELDS = ("step", "split", "mlm_accuracy", "nsp_accuracy", "loss", "lr")


def stream_records(path: Path) -> Iterator[dict[str, Any]]:
    """The metrics records of ``path`` read line by line, keeping only the fields the seed format needs.

    Memory follows the number of records, never the file's size: a binary or zero-filled
    file and a line over 1 MiB are one-line errors, a torn last line is skipped.
    """
    from bertcurve.curves.logs import capped_lines, check_text_file

    check_text_file(path)
    with open(path, "rb") as handle:
        for raw in capped_lines(handle, path):
            if not raw.endswith(b"\n"):
                break  # a run still writing (or killed while writing) its last line
            try:
                obj = json.loads(raw)
            except (ValueError, RecursionError):
                continue
            if isinstance(obj, dict) and obj.get("format") == layout.METRICS_FORMAT and \
                    isinstance(obj.get("step"), int) and not isinstance(obj.get("step"), bool):
                yield {k: obj[k] for k in _SEED_FIELDS if k in obj}


def export_history(run_dir: str | Path, format: str = "seed", out: str | Path | None = None,
                   split: str = "train") -> Path:
    """Write ``run_dir``'s metrics as ``format`` to ``out`` (default RUN_DIR/training_history.json)."""
    run_dir = Path(run_dir)
    if format not in FORMATS:
        raise UserError(f"unknown history format {format!r}; choose one of {', '.join(FORMATS)}")
    if split not in ("train", "eval"):
        raise UserError(f"--split must be train or eval, got {split!r}")
    metrics = run_dir / layout.METRICS
    if not metrics.is_file():
        raise UserError(f"{run_dir} has no {layout.METRICS}; is it a run directory of `bertcurve train`?")
    history = seed_history(list(stream_records(metrics)), split)
    if not history["steps"]:
        raise UserError(f"{metrics} has no {split} records to export")
    target = Path(out).expanduser() if out is not None else run_dir / layout.SEED_HISTORY
    if target.is_dir() and folder_kind(target) is None:
        target = target / layout.SEED_HISTORY  # --out DIR: the default file name inside it
    # Replaces only an earlier history (same keys), never metrics.jsonl, config.json or another file.
    target = guard_output_file(target, inputs=[run_dir, metrics], what="seed-format history",
                               replaceable=lambda p: json_format_is(p, keys=("steps", "mlm_acc")))
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create {target.parent}: {exc.strerror or exc}") from None
    write_json(target, history)
    return target


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", metavar="RUN_DIR", help="run directory of `bertcurve train`")
    parser.add_argument("--format", choices=FORMATS, default="seed",
                        help="output format: seed = the seed's training_history JSON (default)")
    parser.add_argument("--split", choices=("train", "eval"), default="train",
                        help="train: training-batch accuracy like the seed (default); "
                             "eval: fixed-mask held-out accuracy")
    parser.add_argument("--out", default=None,
                        help=f"output file, or a folder to write {layout.SEED_HISTORY} into (default: "
                             f"RUN_DIR/{layout.SEED_HISTORY}); never one of the run's own files")


def run(args: argparse.Namespace) -> int:
    path = export_history(args.run_dir, format=args.format, out=args.out, split=args.split)
    print(f"wrote {path}")
    return 0
