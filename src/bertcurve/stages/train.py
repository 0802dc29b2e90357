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
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

from bertcurve import layout
from bertcurve.training.config import (
    PRESETS,
    SCHEDULES,
    SpeedConfig,
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
    and metrics stay as they are, so the run can be continued).
    """
    from transformers.utils import logging as hf_logging

    from bertcurve.data.datadir import DataDir
    from bertcurve.training.checkpoint import RunLock
    from bertcurve.training.distributed import Dist
    from bertcurve.training.trainer import Trainer

    hf_logging.disable_progress_bar()  # save_pretrained's shard bar would clutter our output
    dist = Dist.from_env()
    emit = log or (lambda msg: print(msg, flush=True))
    say = (lambda msg: None) if (quiet or not dist.is_main) else emit
    warn = (lambda msg: None) if not dist.is_main else (lambda msg: print(msg, file=sys.stderr, flush=True))
    speed = speed or SpeedConfig()
    problems = validate_speed(speed)
    if problems:
        raise UserError("invalid speed settings: " + "; ".join(problems))
    run_dir = Path(out)
    resume_str = str(resume)
    if resume_str not in ("auto", "none") and not Path(resume_str).is_dir():
        raise UserError(f"--resume {resume_str}: no such checkpoint folder; use auto, none or a "
                        f"{layout.CHECKPOINTS_DIR}/step-N folder")
    data_dir = DataDir(data)
    tokenizer = data_dir.tokenizer()
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"--out {run_dir} exists and is not a directory")
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = RunLock(run_dir, warn=warn) if dist.is_main else None
    if lock is not None:
        lock.acquire()
    try:
        trainer = Trainer(data_dir, tokenizer, run_dir, preset=preset, config=config,
                          overrides=overrides, resume=resume_str, speed=speed,
                          tensorboard=tensorboard, quiet=quiet, say=say, warn=warn, dist=dist,
                          on_eval=on_eval)
        trainer.setup()
        return trainer.fit()
    finally:
        if lock is not None:
            lock.release()


# ------------------------------------------------------------------ CLI
_OVERRIDES: list[tuple[str, str, type, str]] = [
    # (option, config field, type, help)
    ("--max-steps", "optim.max_steps", int, "optimizer steps of the whole run"),
    ("--lr", "optim.lr", float, "peak learning rate"),
    ("--warmup-steps", "optim.warmup_steps", int, "linear warm-up steps"),
    ("--schedule", "optim.schedule", str, f"learning-rate decay after warm-up: {', '.join(SCHEDULES)}"),
    ("--min-lr-ratio", "optim.min_lr_ratio", float, "final learning rate as a fraction of --lr"),
    ("--weight-decay", "optim.weight_decay", float, "AdamW weight decay (not on biases/LayerNorm)"),
    ("--micro-batch", "optim.micro_batch", int, "sequences per forward/backward pass"),
    ("--grad-accum", "optim.grad_accum", int, "micro-batches per optimizer step"),
    ("--clip", "optim.clip", float, "gradient-norm clipping threshold (0 disables)"),
    ("--seq-len", "data.seq_len", int, "tokens per sequence including [CLS]/[SEP] (default 128)"),
    ("--mask-prob", "data.mask_prob", float, "fraction of tokens selected for prediction (default 0.15)"),
    ("--hidden-size", "model.hidden_size", int, "model width"),
    ("--layers", "model.num_layers", int, "number of encoder layers"),
    ("--heads", "model.num_heads", int, "attention heads per layer"),
    ("--ffn", "model.intermediate_size", int, "feed-forward inner width"),
    ("--eval-every", "eval.eval_every", int, "steps between held-out evaluations (0: max_steps/100)"),
    ("--eval-tokens", "eval.eval_tokens", int, "masked tokens in the fixed held-out set"),
    ("--eval-seed", "eval.eval_seed", int, "seed of the held-out set's masks"),
    ("--eval-mask-prob", "eval.mask_prob", float,
     "fraction of held-out tokens masked (default 0.15, whatever --mask-prob is)"),
    ("--log-every", "eval.log_every", int, "steps between training-metric lines (0: max_steps/1000)"),
    ("--save-every", "eval.save_every", int, "steps between checkpoints (0: max_steps/10)"),
    ("--keep", "eval.keep", int, "most recent checkpoints to keep (milestones are kept too)"),
    ("--seed", "seed", int, "seed of initialisation, data order, masks and dropout"),
]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, metavar="DATA_DIR", help="prepared data directory (bertcurve prepare)")
    parser.add_argument("--out", required=True, metavar="RUN_DIR", help="run directory to create or continue")
    parser.add_argument("--preset", choices=list(PRESETS), default=None,
                        help="starting settings (default: demo, or the run's saved config when resuming)")
    parser.add_argument("--config", default=None, metavar="FILE",
                        help="JSON file of settings ({\"optim\": {\"lr\": 1e-3}, ...}) or a run's config.json")
    parser.add_argument("--resume", default="auto", metavar="auto|none|PATH",
                        help="auto (default: newest intact checkpoint, else start), none (refuse an "
                             "existing run) or a checkpoint folder")
    results = parser.add_argument_group("settings that change results (override the preset)")
    for option, name, typ, help_text in _OVERRIDES:
        kwargs: dict[str, Any] = {"type": typ, "default": None, "help": help_text,
                                  "dest": "ov_" + name.replace(".", "__"),
                                  "metavar": {int: "N", float: "X"}.get(typ, "NAME")}
        if option == "--schedule":
            kwargs["choices"] = list(SCHEDULES)
            del kwargs["metavar"]
        results.add_argument(option, **kwargs)
    results.add_argument("--save-at", default=None, metavar="STEPS",
                         help="comma-separated milestone steps whose checkpoints are never pruned")
    results.add_argument("--whole-word", action="store_true", default=None,
                         help="mask whole jieba words (data dir prepared with --whole-word)")
    results.add_argument("--nsp", action="store_true", default=None,
                         help="also train next-sentence prediction on 50/50 adjacent/random pairs")
    results.add_argument("--untied", action="store_true", default=None,
                         help="separate MLM output matrix instead of sharing the input embeddings")
    speed = parser.add_argument_group("settings that change speed only")
    speed.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                       help="where to train (auto: CUDA when available)")
    speed.add_argument("--dtype", default="auto", choices=["auto", "fp32", "bf16"],
                       help="auto: bf16 autocast on CUDA, fp32 on CPU")
    speed.add_argument("--compile", action="store_true", help="torch.compile the encoder (GPU)")
    speed.add_argument("--threads", type=int, default=0, metavar="N",
                       help="CPU threads (0: 1 for tiny models, else torch's default)")
    speed.add_argument("--prefetch", type=int, default=-1, metavar="N",
                       help="steps of batches built ahead on a background thread "
                            "(-1: 4 on CUDA, 0 on CPU)")
    parser.add_argument("--tensorboard", action="store_true",
                        help="also write TensorBoard events to RUN_DIR/tensorboard (needs tensorboard)")
    parser.add_argument("--quiet", action="store_true", help="print only errors and warnings")


def _parse_save_at(text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        return tuple(int(x) for x in text.replace(" ", "").split(",") if x)
    except ValueError:
        raise UserError(f"--save-at must be comma-separated step numbers, got {text!r}") from None


def run(args: argparse.Namespace) -> int:
    overrides: dict[str, Any] = {}
    for _, name, _, _ in _OVERRIDES:
        value = getattr(args, "ov_" + name.replace(".", "__"))
        if value is not None:
            overrides[name] = value
    save_at = _parse_save_at(args.save_at)
    if save_at is not None:
        overrides["eval.save_at"] = list(save_at)
    if args.whole_word:
        overrides["data.whole_word"] = True
    if args.nsp:
        overrides["data.nsp"] = True
    if args.untied:
        overrides["model.tie_word_embeddings"] = False
    result = train(
        args.data, args.out, preset=args.preset, config=args.config, overrides=overrides,
        resume=args.resume,
        speed=SpeedConfig(device=args.device, dtype=args.dtype, compile=args.compile,
                          threads=args.threads, prefetch=args.prefetch),
        tensorboard=args.tensorboard, quiet=args.quiet,
    )
    return 0 if result.completed else 130
