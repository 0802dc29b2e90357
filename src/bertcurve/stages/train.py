"""Pretrain a BERT masked language model on a prepared data directory.

    bertcurve train --data DATA_DIR --out RUN_DIR [--preset NAME] [--config FILE] [overrides]

Writes RUN_DIR/config.json, RUN_DIR/metrics.jsonl (training and fixed-mask
held-out evaluation records), RUN_DIR/checkpoints/step-XXXXXXXX/ and the
final Hugging Face model in RUN_DIR/final/. A run killed at any moment
continues exactly with `--resume auto` (the default). See docs/run-dir.md.
The training itself is :class:`bertcurve.training.trainer.Trainer`.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from bertcurve import layout
from bertcurve.training.config import (
    PRESET_ALIASES,
    PRESETS,
    SpeedConfig,
    add_setting_arguments,
    preset_names,
    settings_from_args,
    validate_speed,
)
from bertcurve.errors import UserError

if TYPE_CHECKING:
    from bertcurve.training.trainer import TrainResult


def train(
    data: str | Path,
    out: str | Path,
    *,
    preset: str | None = None,
    config: str | Path | Mapping[str, Any] | None = None,
    overrides: Mapping[str, Any] | None = None,
    resume: str | Path = "auto",
    speed: SpeedConfig | None = None,
    tensorboard: bool = False,
    report_to: str | Sequence[str] | None = None,
    init_from: str | Path | None = None,
    quiet: bool = False,
    log: Callable[[str], None] | None = None,
    on_eval: Callable[[int, Mapping[str, Any]], None] | None = None,
) -> "TrainResult":
    """Pretrain BERT on the data dir ``data`` into the run dir ``out``.

    The config is ``preset`` (default ``demo``; when resuming, the run's
    saved config) updated by the JSON file ``config`` and then by
    ``overrides`` (dotted or plain field names, e.g. ``{"lr": 1e-3}``).
    ``resume``: ``"auto"`` continues from the newest intact checkpoint (or
    starts fresh), ``"none"`` refuses to touch a run dir that already has a
    run, a path resumes from that checkpoint folder. Returns a
    :class:`~bertcurve.training.trainer.TrainResult`; a Ctrl-C or SIGTERM
    saves a checkpoint and returns with ``completed=False``. ``on_eval(step,
    record)`` is called with every held-out evaluation record once it is in
    metrics.jsonl; an exception it raises stops the run there (checkpoints
    and metrics stay as they are, so the run can be continued). ``report_to``:
    experiment trackers that also get the metrics and config
    (``"tensorboard,mlflow,wandb,trackio"``, ``"all"``, ``"none"``); ``tensorboard=True``
    is short for adding ``"tensorboard"``. ``init_from``: a Hugging Face BERT masked-LM
    directory whose weights (and shape) a fresh run starts from.
    """
    from transformers.utils import logging as hf_logging

    from bertcurve.data.datadir import DataDir
    from bertcurve.training.checkpoint import RunLock
    from bertcurve.training.distributed import Dist
    from bertcurve.training.model import inspect_pretrained, with_pretrained_shape
    from bertcurve.training.trackers import parse_report_to
    from bertcurve.training.trainer import Trainer

    hf_logging.disable_progress_bar()  # save_pretrained's shard bar would clutter our output
    dist = Dist.from_env()
    emit = log or (lambda msg: print(msg, flush=True))
    say = (lambda msg: None) if (quiet or not dist.is_main) else emit
    warn = (lambda msg: None) if not dist.is_main else (  # one prefix for every warning: "bertcurve: warning: "
        lambda msg: print(f"bertcurve: {msg}", file=sys.stderr, flush=True))
    speed = speed or SpeedConfig()
    problems = validate_speed(speed)
    if problems:
        raise UserError("invalid speed settings: " + "; ".join(problems))
    # checked now: a missing tracker package fails before any work
    trackers = tuple(dict.fromkeys(parse_report_to(report_to) + (("tensorboard",) if tensorboard else ())))
    run_dir = Path(out)
    resume_str = str(resume)
    if resume_str not in ("auto", "none") and not Path(resume_str).is_dir():
        raise UserError(f"--resume {resume_str}: no such checkpoint folder; use auto, none or a "
                        f"{layout.CHECKPOINTS_DIR}/step-N folder")
    data_dir = DataDir(data)
    tokenizer = data_dir.tokenizer()
    pretrained = inspect_pretrained(init_from, tokenizer) if init_from is not None else None
    overrides = with_pretrained_shape(overrides, pretrained)
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"--out {run_dir} exists and is not a directory")
    created = not run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = RunLock(run_dir, warn=warn) if dist.is_main else None
    if lock is not None:
        lock.acquire()
    try:
        trainer = Trainer(data_dir, tokenizer, run_dir, preset=preset, config=config,
                          overrides=overrides, resume=resume_str, speed=speed,
                          report_to=trackers, quiet=quiet, say=say, warn=warn, dist=dist,
                          on_eval=on_eval, pretrained=pretrained)
        trainer.setup()
        return trainer.fit()
    finally:
        if lock is not None:
            lock.release()
            if created and [p.name for p in run_dir.iterdir()] == [layout.LOCK_FILE]:
                shutil.rmtree(run_dir, ignore_errors=True)  # refused before writing anything: leave no trace


# ------------------------------------------------------------------ CLI
def _preset_help() -> str:
    aliases = "; ".join(f"{alias} is an alias of {target}" for alias, target in PRESET_ALIASES.items())
    return (f"starting settings: {', '.join(PRESETS)} ({aliases}); default: demo, or the run's "
            "saved config when resuming")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, metavar="DATA_DIR", help="prepared data directory (bertcurve prepare)")
    parser.add_argument("--out", required=True, metavar="RUN_DIR", help="run directory to create or continue")
    parser.add_argument("--preset", choices=preset_names(), default=None, metavar="NAME", help=_preset_help())
    parser.add_argument("--config", default=None, metavar="FILE",
                        help="JSON or YAML file of settings ({\"optim\": {\"lr\": 1e-3}, ...}) or a run's "
                             "config.json; applied over the preset, under the flags below")
    parser.add_argument("--resume", default="auto", metavar="auto|none|PATH",
                        help="auto (default: newest intact checkpoint, else start), none (refuse an "
                             "existing run) or a checkpoint folder")
    # One flag per field of the config dataclasses, help from the field's docstring.
    add_setting_arguments(parser)
    parser.add_argument("--init-from", default=None, metavar="HF_DIR",
                        help="continue pretraining a Hugging Face BERT masked-LM directory (weights, "
                             "config; its vocabulary must be the data dir's); the model shape comes "
                             "from it")
    parser.add_argument("--report-to", default=None, metavar="NAMES",
                        help="experiment trackers that also get the metrics and config, comma-"
                             "separated: tensorboard, mlflow, wandb, trackio, all (those installed) "
                             "or none (default)")
    parser.add_argument("--tensorboard", action="store_true",
                        help="same as --report-to tensorboard (events in RUN_DIR/tensorboard)")
    parser.add_argument("--quiet", action="store_true", help="print only errors and warnings")


def run(args: argparse.Namespace) -> int:
    overrides, speed = settings_from_args(args)
    result = train(
        args.data, args.out, preset=args.preset, config=args.config, overrides=overrides,
        resume=args.resume, speed=speed, tensorboard=args.tensorboard, report_to=args.report_to,
        init_from=args.init_from, quiet=args.quiet,
    )
    return 0 if result.completed else 130
