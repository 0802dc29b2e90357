"""Pretrain a BERT masked language model on a prepared data directory.

    bertcurve train --data DATA_DIR --out RUN_DIR [--preset NAME] [--config FILE] [overrides]
    bertcurve train --data DATA_DIR --out RUN_DIR --extend-to N [--rewarm]
    bertcurve train --data DATA_DIR --out RUN_DIR --cooldowns-at A,B,...

Writes RUN_DIR/config.json, RUN_DIR/metrics.jsonl (training and fixed-mask
held-out evaluation records), RUN_DIR/checkpoints/step-XXXXXXXX/ and the
final Hugging Face model in RUN_DIR/final/. A run killed at any moment
continues exactly with `--resume auto` (the default). See docs/run-dir.md.
The training itself is :class:`bertcurve.training.trainer.Trainer`.
"""

from __future__ import annotations

import argparse
import os
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
    extend_to: int | None = None,
    rewarm: bool = False,
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

    ``extend_to``: continue the run in ``out`` to this many steps
    (:mod:`bertcurve.training.extension`): a WSD run from its last stable-phase
    checkpoint with the cooldown moved to the new end, a constant or
    inverse-sqrt run from its newest checkpoint; a cosine or linear run only
    with ``rewarm`` (which raises the rate again: a different curve).
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
    if extend_to is not None:
        _check_extension_args(extend_to, resume_str, preset, config, overrides)
        if init_from is not None:
            raise UserError("--init-from starts a new run; --extend-to continues one: drop one of them")
    elif rewarm:
        raise UserError("--rewarm only applies with --extend-to N")
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
        if dist.is_distributed and (extend_to is not None or (run_dir / layout.EXTEND_INTENT).exists()):
            # Every rank reads the checkpoint the branch chooses, before any process group exists.
            raise UserError("--extend-to rearranges the run dir before training: run it in one process "
                            "(without torchrun), stop it with Ctrl-C once it trains, then continue "
                            "under torchrun")
        _extend(run_dir, extend_to, rewarm, say, warn)
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


def _check_extension_args(extend_to: int, resume: str, preset, config, overrides) -> None:
    if extend_to < 1:
        raise UserError(f"--extend-to {extend_to}: give the new total number of steps (> 0)")
    if resume != "auto":
        raise UserError("--extend-to continues the run's own checkpoints; drop --resume")
    if preset is not None or config is not None:
        raise UserError("--extend-to continues the run with its saved config; drop --preset/--config")
    if overrides and ("max_steps" in overrides or "optim.max_steps" in overrides):
        raise UserError("--extend-to N sets max_steps to N; drop --max-steps")


def _extend(run_dir: Path, extend_to: int | None, rewarm: bool,
            say: Callable[[str], None], warn: Callable[[str], None]) -> None:
    """Finish an extension a kill interrupted, then start the one asked for (lock held)."""
    from bertcurve.training import extension

    pending = extension.finish_pending(run_dir)
    if pending is not None:
        say(f"extension: finished the branch at step {pending.step} interrupted earlier")
    if extend_to is None:
        return
    plan = extension.plan_extension(run_dir, extend_to, rewarm=rewarm, warn=warn)
    if plan is None:
        say(f"extension: the run already plans {extend_to} steps; continuing it")
        return
    extension.begin(run_dir, plan)
    moved = (f"; the old cooldown is in {run_dir / layout.branch_dir_name(plan.from_max_steps)}"
             if plan.abandons else "")
    say(f"extension: {plan.from_max_steps} -> {plan.to_max_steps} steps from step {plan.step}"
        f"{' (rewarmed)' if plan.rewarm else ''}{moved}")


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
    parser.add_argument("--extend-to", type=int, default=None, metavar="N",
                        help="continue the run in --out to N steps in all: a wsd run restarts from its "
                             "last stable-phase checkpoint and cools down at N; constant and inverse_sqrt "
                             "runs continue; cosine/linear runs need --rewarm")
    parser.add_argument("--cooldowns-at", default=None, metavar="A,B,...",
                        help="after (or instead of) training the wsd run in --out, cool it down from its "
                             "checkpoints at these stable-phase steps, each into RUN-cooldown-STEP/ "
                             "(train the run with --save-at A,B,... so they are kept)")
    parser.add_argument("--rewarm", action="store_true",
                        help="with --extend-to: allow extending a cosine/linear (or finished wsd) run "
                             "from its newest checkpoint; the rate rises again, changing the curve")
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


def cooldowns(data: str | Path, out: str | Path, steps: list[int], *, speed: SpeedConfig | None = None,
              quiet: bool = False, log: Callable[[str], None] | None = None) -> list["TrainResult"]:
    """Cool the WSD run in ``out`` down from its checkpoint at each of ``steps``, each into a run
    dir of its own (``RUN-cooldown-STEP/``, :func:`bertcurve.training.extension.make_cooldown_branch`);
    a branch already there is continued (``--resume auto``). Returns the branches' results."""
    from bertcurve.training.extension import make_cooldown_branch

    emit = log or (lambda msg: print(msg, flush=True))
    results = []
    for step in steps:
        branch = make_cooldown_branch(Path(out), step)
        if not quiet:
            emit(f"cooldown from step {step} into {branch}")
        result = train(data, branch, speed=speed, quiet=quiet, log=log)
        results.append(result)
        if not result.completed:
            break
    return results


def _parse_steps(text: str) -> list[int]:
    try:
        steps = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise UserError(f"--cooldowns-at {text!r}: give whole steps separated by commas, e.g. 400,800,1600") from None
    if not steps or steps[0] < 1:
        raise UserError(f"--cooldowns-at {text!r}: give positive steps, e.g. 400,800,1600")
    return steps


def run(args: argparse.Namespace) -> int:
    overrides, speed = settings_from_args(args)
    cooldown_steps = _parse_steps(args.cooldowns_at) if args.cooldowns_at is not None else None
    if cooldown_steps and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise UserError("--cooldowns-at creates its branch dirs in one process: run it without torchrun, "
                        "or continue a branch under torchrun with --out RUN-cooldown-STEP")
    result = train(
        args.data, args.out, preset=args.preset, config=args.config, overrides=overrides,
        resume=args.resume, speed=speed, tensorboard=args.tensorboard, report_to=args.report_to,
        init_from=args.init_from, quiet=args.quiet,
        extend_to=args.extend_to, rewarm=args.rewarm,
    )
    if result.completed and cooldown_steps:
        branches = cooldowns(args.data, args.out, cooldown_steps, speed=speed, quiet=args.quiet)
        if not all(b.completed for b in branches):
            return 130
        if not args.quiet:
            print(f"cooldown branches done; compare them with `bertcurve compare {args.out} "
                  + " ".join(str(b.run_dir) for b in branches) + "`", flush=True)
    return 0 if result.completed else 130
