"""Pretrain a BERT masked language model on a prepared data directory.

    bertcurve train --data DATA_DIR --out RUN_DIR [--preset NAME] [--config FILE] [overrides]

Writes RUN_DIR/config.json, RUN_DIR/metrics.jsonl (training and fixed-mask
held-out evaluation records), RUN_DIR/checkpoints/step-XXXXXXXX/ and the
final Hugging Face model in RUN_DIR/final/. A run killed at any moment
continues exactly with `--resume auto` (the default). See docs/run-dir.md.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import os
import shutil
import signal
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from bertcurve import layout
from bertcurve.training.config import (
    PRESET_ALIASES,
    PRESETS,
    SpeedConfig,
    TrainConfig,
    add_setting_arguments,
    build_config,
    preset_names,
    settings_from_args,
    shape_of,
    to_dict,
    validate_speed,
)
from bertcurve.errors import UserError
from bertcurve.fsutil import read_json, staged_directory, write_json

from bertcurve.training.trackers import TENSORBOARD_DIR  # noqa: F401  (re-exported)


# ------------------------------------------------------------ distributed
@dataclass(frozen=True)
class Dist:
    """Rank information; only rank 0 writes files or prints."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls) -> "Dist":
        world = int(os.environ.get("WORLD_SIZE", "1"))
        return cls(int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0")))


def _derived_seed(seed: int, *stream: int) -> int:
    digest = hashlib.sha256(repr((seed, *stream)).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


class _Interrupt:
    """First Ctrl-C / SIGTERM: finish the step, checkpoint, stop. Second: stop now."""

    def __init__(self) -> None:
        self.requested = False
        self._old: dict[int, Any] = {}

    def _handler(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self) -> "_Interrupt":
        import threading

        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


@dataclass
class TrainResult:
    """What a finished (or interrupted) run did."""

    run_dir: Path
    step: int
    max_steps: int
    completed: bool
    final_eval: dict[str, Any] | None = None
    parameters: int = 0
    constant_guess_accuracy: float | None = None
    resumed_from: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _resolve_device(speed: SpeedConfig):
    import torch

    if speed.device == "cuda" or (speed.device == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise UserError("--device cuda was asked for but no CUDA GPU is available; use --device cpu")
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    else:
        device = torch.device("cpu")
    if speed.dtype == "bf16" or (speed.dtype == "auto" and device.type == "cuda"):
        amp = torch.bfloat16
    else:
        amp = None
    return device, amp


def _reads_stall(device) -> bool:
    """Whether reading a value back to Python waits for queued device work (CUDA)."""
    return device.type == "cuda"


def _autocast(device, amp):
    import torch

    if amp is None:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=amp)


def _saved_run_config(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / layout.RUN_CONFIG
    if not path.is_file():
        return None
    obj = read_json(path, "run config")
    if not isinstance(obj, dict) or obj.get("format") != layout.RUN_CONFIG_FORMAT:
        raise UserError(f"{path} is not a bertcurve run config ({layout.RUN_CONFIG_FORMAT}); "
                        "choose another --out")
    return obj


def _diff(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in sorted(set(a) | set(b)):
            out += _diff(a.get(key), b.get(key), f"{prefix}{key}.")
        return out
    return [] if a == b else [f"{prefix[:-1]}: {a!r} -> {b!r}"]


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
    _fault: Callable[[str, int], None] | None = None,
) -> TrainResult:
    """Pretrain BERT on the data dir ``data`` into the run dir ``out``.

    The config is ``preset`` (default ``demo``; when resuming, the run's
    saved config) updated by the JSON file ``config`` and then by
    ``overrides`` (dotted or plain field names, e.g. ``{"lr": 1e-3}``).
    ``resume``: ``"auto"`` continues from the newest intact checkpoint (or
    starts fresh), ``"none"`` refuses to touch a run dir that already has a
    run, a path resumes from that checkpoint folder. Returns a
    :class:`TrainResult`; a Ctrl-C or SIGTERM saves a checkpoint and returns
    with ``completed=False``. ``report_to``: experiment trackers that also get the
    metrics and config (``"tensorboard,mlflow,wandb,trackio"``, ``"all"``, ``"none"``);
    ``tensorboard=True`` is short for adding ``"tensorboard"``. ``init_from``: a Hugging
    Face BERT masked-LM directory whose weights (and shape) a fresh run starts from.
    """
    import torch
    from transformers.utils import logging as hf_logging

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
    from bertcurve.training.trackers import parse_report_to

    report_to = parse_report_to(report_to) + (("tensorboard",) if tensorboard else ())
    report_to = tuple(dict.fromkeys(report_to))  # checked now: a missing package fails before any work
    resume_str = str(resume)
    if resume_str not in ("auto", "none") and not Path(resume_str).is_dir():
        raise UserError(f"--resume {resume_str}: no such checkpoint folder; use auto, none or a "
                        f"{layout.CHECKPOINTS_DIR}/step-N folder")

    from bertcurve.data.datadir import DataDir

    data_dir = DataDir(data)
    tokenizer = data_dir.tokenizer()
    vocab_size = len(tokenizer)
    from bertcurve.training.model import inspect_pretrained, with_pretrained_shape

    pretrained = inspect_pretrained(init_from, tokenizer) if init_from is not None else None
    overrides = with_pretrained_shape(overrides, pretrained)

    from bertcurve.training.checkpoint import RunLock

    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"--out {run_dir} exists and is not a directory")
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = RunLock(run_dir, warn=warn) if dist.is_main else None
    if lock is not None:
        lock.acquire()
    try:
        return _train_locked(torch, data_dir, tokenizer, vocab_size, run_dir, preset, config,
                             overrides, resume_str, speed, report_to, say, warn, dist, _fault,
                             quiet, pretrained)
    finally:
        if lock is not None:
            lock.release()


def _train_locked(torch, data_dir, tokenizer, vocab_size, run_dir, preset, config, overrides,
                  resume_str, speed, report_to, say, warn, dist, _fault, quiet,
                  pretrained=None) -> TrainResult:
    from bertcurve.training import checkpoint as ckpt
    from bertcurve.training import metrics_log
    from bertcurve.training.batches import Prefetcher, SpecialIds, TrainStream, build_eval_set, make_examples
    from bertcurve.training.hostmem import keep_freed_memory
    from bertcurve.training.model import (TrainingModule, build_model, compile_encoder, count_parameters, forward,
                                 load_pretrained, param_groups, use_cpu_dropout)
    from bertcurve.progress import Progress
    from bertcurve.training.schedule import lr_at

    # ---------------------------------------------------------- config
    saved = _saved_run_config(run_dir)
    has_history = bool(ckpt.list_checkpoints(run_dir)) or (run_dir / layout.METRICS).exists()
    if resume_str == "none" and (saved is not None or has_history):
        raise UserError(f"{run_dir} already holds a run; continue it with --resume auto or "
                        "choose a new --out")
    if preset is None and config is None and saved is not None:
        cfg = build_config(None, saved["train"], overrides)
    else:
        cfg = build_config(preset or "demo", config, overrides)
    from bertcurve.training.config import validate

    problems = validate(cfg, vocab_size)
    if problems:
        raise UserError("; ".join(problems))
    tok_hash = ckpt.tokenizer_hash(data_dir.path)

    # ---------------------------------------------------------- resume point
    loaded = None
    if resume_str == "auto":
        if dist.is_main:
            ckpt.remove_temporary(run_dir)
        loaded = ckpt.latest_good_checkpoint(run_dir, warn=warn)
        if loaded is None and ckpt.list_checkpoints(run_dir):
            warn("warning: no intact checkpoint left; starting from step 0")
    elif resume_str != "none":
        try:
            loaded = ckpt.load_checkpoint(Path(resume_str))
        except ckpt.CorruptCheckpoint as exc:
            raise UserError(f"checkpoint {resume_str} is damaged: {exc}; "
                            "resume with --resume auto to use the newest intact one") from None
    if loaded is not None:
        old_cfg = loaded.meta.get("config", {})
        if loaded.meta.get("tokenizer_sha256") != tok_hash:
            raise UserError(
                f"checkpoint {loaded.path.name} was trained with a different tokenizer than "
                f"{data_dir.path} (vocabulary hash differs); resume with the data dir it was "
                "trained on, or start a new run with another --out"
            )
        old_shape = loaded.meta.get("shape")
        if old_shape != shape_of(cfg) or loaded.meta.get("vocab_size") != vocab_size:
            changes = _diff(old_shape, shape_of(cfg)) or ["vocab_size"]
            raise UserError(
                f"checkpoint {loaded.path.name} has a different model shape ({'; '.join(changes)}); "
                "resume with the same model settings, or start a new run with another --out"
            )
        changed = _diff(old_cfg, to_dict(cfg))
        if changed:
            warn("warning: config differs from the checkpoint's (the run is no longer an exact "
                 "continuation): " + "; ".join(changed))
        if loaded.step > cfg.optim.max_steps:
            raise UserError(f"checkpoint is at step {loaded.step}, beyond max_steps "
                            f"{cfg.optim.max_steps}; raise --max-steps")
    start_step = loaded.step if loaded is not None else 0

    # ---------------------------------------------------------- devices, model
    threads = speed.threads or (1 if cfg.model.hidden_size <= 64 else 0)
    if threads:
        # Tiny matrices gain nothing from threads and lose a lot when the CPU is shared.
        torch.set_num_threads(threads)
    device, amp = _resolve_device(speed)
    if device.type == "cpu" and amp is not None:
        warn("warning: bf16 on a CPU without native bf16 support is many times slower than fp32")
    special = SpecialIds.from_tokenizer(tokenizer)
    torch.manual_seed(cfg.seed)
    net = build_model(cfg.model, vocab_size, nsp=cfg.data.nsp, pad_token_id=special.pad)
    if pretrained is not None and loaded is None:
        load_pretrained(pretrained, net)  # continued pretraining: its weights, not random ones
    n_params = count_parameters(net)
    if loaded is not None:
        missing, unexpected = net.load_state_dict(loaded.weights, strict=False)
        tied = set(getattr(net, "_tied_weights_keys", None) or {})
        real_missing = [k for k in missing if k not in tied and not k.endswith("decoder.weight")
                        and not k.endswith("decoder.bias")]
        if real_missing or unexpected:
            raise UserError(f"checkpoint {loaded.path.name} does not match the model "
                            f"(missing {real_missing[:3]}, unexpected {list(unexpected)[:3]})")
        net.tie_weights()
    net.to(device)
    net.train()
    if device.type == "cpu":
        use_cpu_dropout(net)  # draws dropout masks ~3x faster; CUDA's fused kernels are fine
        keep_freed_memory()  # no page faults on every step's fresh activations

    ddp_net = net
    if dist.world_size > 1:
        import torch.distributed as tdist

        if not tdist.is_initialized():
            tdist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        # DDP must see the forward call to synchronise gradients, so it wraps
        # a module whose forward is the masked-positions-only loss.
        ddp_net = torch.nn.parallel.DistributedDataParallel(
            TrainingModule(net), device_ids=[device.index] if device.type == "cuda" else None)

    def step_forward(batch):
        return ddp_net(batch) if dist.world_size > 1 else forward(net, batch)

    fused = device.type in ("cuda", "cpu")
    try:
        opt = torch.optim.AdamW(param_groups(net, cfg.optim.weight_decay), lr=cfg.optim.lr,
                                betas=(cfg.optim.beta1, cfg.optim.beta2), eps=cfg.optim.eps,
                                fused=fused)
    except (RuntimeError, TypeError):
        opt = torch.optim.AdamW(param_groups(net, cfg.optim.weight_decay), lr=cfg.optim.lr,
                                betas=(cfg.optim.beta1, cfg.optim.beta2), eps=cfg.optim.eps)
    if loaded is not None:
        try:
            opt.load_state_dict(loaded.training_state["optimizer"])
        except (KeyError, ValueError, RuntimeError) as exc:
            raise UserError(f"checkpoint {loaded.path.name}: optimizer state does not fit ({exc})") from None
        rng = loaded.training_state.get("rng", {})
        if "torch" in rng:
            torch.set_rng_state(rng["torch"])
        if "cuda" in rng and device.type == "cuda":
            torch.cuda.set_rng_state_all(rng["cuda"])

    # ---------------------------------------------------------- data
    t0 = time.monotonic()
    train_examples = make_examples(data_dir.split("train"), seq_len=cfg.data.seq_len,
                                   special=special, whole_word=cfg.data.whole_word, nsp=cfg.data.nsp)
    val_examples = make_examples(data_dir.split("val"), seq_len=cfg.data.seq_len, special=special,
                                 whole_word=cfg.data.whole_word, nsp=cfg.data.nsp)
    stream = TrainStream(train_examples, micro_batch=cfg.optim.micro_batch,
                         mask_prob=cfg.data.mask_prob, seed=cfg.seed)
    eval_set = build_eval_set(val_examples, eval_tokens=cfg.eval.eval_tokens,
                              mask_prob=cfg.eval.mask_prob, eval_seed=cfg.eval.eval_seed,
                              batch_size=max(cfg.optim.micro_batch, 32))
    labels = torch.cat([b.labels[b.labels >= 0] for b in eval_set.batches])
    constant_guess = float(torch.bincount(labels).max()) / max(1, int(labels.numel()))
    if loaded is not None:
        old_fp = loaded.meta.get("eval_fingerprint")
        if old_fp and old_fp != eval_set.fingerprint:
            warn("warning: the held-out evaluation set differs from the checkpoint's "
                 "(different data or eval settings); eval accuracies are not comparable")
    say(f"data: {len(train_examples):,} training {'pairs' if cfg.data.nsp else 'sequences'}, "
        f"eval set {eval_set.sequences:,} sequences / {eval_set.masked_tokens:,} masked tokens "
        f"(constant-guess accuracy {constant_guess:.4f}), prepared in {time.monotonic() - t0:.1f}s")
    arch = "BertForPreTraining (MLM+NSP)" if cfg.data.nsp else "BertForMaskedLM"
    say(f"model: {arch}, {n_params:,} parameters ({n_params / 1e6:.2f}M), vocab {vocab_size:,}, "
        f"device {device.type}{' bf16 autocast' if amp is not None else ' fp32'}")

    # ---------------------------------------------------------- run files
    from bertcurve.training.trackers import Trackers, open_trackers

    trackers = Trackers()
    if dist.is_main:
        run_config = {
            "format": layout.RUN_CONFIG_FORMAT,
            "train": to_dict(cfg),
            "speed": to_dict(speed),
            "preset": preset,
            "data_dir": str(Path(data_dir.path).resolve()),
            "tokenizer_sha256": tok_hash,
            "vocab_size": vocab_size,
            "parameters": n_params,
            "architecture": arch,
            "eval_set": {"masked_tokens": eval_set.masked_tokens, "sequences": eval_set.sequences,
                         "fingerprint": eval_set.fingerprint,
                         "constant_guess_accuracy": constant_guess},
            "world_size": dist.world_size,
        }
        init_from = ({"name": pretrained.name, "path": str(pretrained.path.resolve())}
                     if pretrained is not None else (saved or {}).get("init_from"))
        if init_from:
            run_config["init_from"] = init_from
        write_json(run_dir / layout.RUN_CONFIG, run_config)
        # Without a checkpoint the run starts over, so every old line goes (step 0 included).
        dropped = metrics_log.truncate_after(run_dir / layout.METRICS,
                                             start_step if loaded is not None else -1)
        if dropped and loaded is not None:
            say(f"resume: dropped {dropped} metrics line(s) newer than step {start_step}")
        trackers = open_trackers(report_to, run_dir, start_step=start_step)
        trackers.log_config(run_config)
    writer = metrics_log.MetricsWriter(run_dir / layout.METRICS if dist.is_main else None)

    # ---------------------------------------------------------- helpers
    elapsed_before = float(loaded.meta.get("elapsed_s", 0.0)) if loaded is not None else 0.0
    tokens_seen = int(loaded.meta.get("tokens_seen", 0)) if loaded is not None else 0
    clock0 = time.monotonic()

    def elapsed() -> float:
        return elapsed_before + time.monotonic() - clock0

    last_good = {"step": start_step if loaded is not None else None}

    def write_record(record: dict[str, Any]) -> None:
        try:
            writer.write(record)
        except OSError as exc:
            raise _write_failure("metrics.jsonl", exc, last_good["step"]) from None
        trackers.log(record, record["step"])

    eval_batches: list = []   # the fixed set, moved to the device once
    eval_pairs = sum(b.next_sentence_label.numel() for b in eval_set.batches
                     if b.next_sentence_label is not None)

    def evaluate(step: int) -> dict[str, Any]:
        started = time.monotonic()
        if not eval_batches:
            eval_batches.extend(b.to(device) for b in eval_set.batches)
        net.eval()
        sums = []
        with torch.inference_mode(), _autocast(device, amp):
            for b in eval_batches:
                o = forward(net, b, topk=True, mask_id=special.mask)
                zero = o.mlm_loss_sum.new_zeros(())
                sums.append(torch.stack([
                    o.mlm_loss_sum.float(), o.mlm_correct.float(), o.mlm_top5.float(),
                    zero if o.nsp_correct is None else o.nsp_correct.float(),
                    o.at_mask_correct.float(), o.at_mask.float()]).double())
        # One read for the whole set: the GPU runs every batch without waiting for Python.
        loss_sum, correct, top5, nsp_correct, at_mask_correct, at_mask = (
            float(x) for x in torch.stack(sums).sum(0).tolist())
        net.train()
        n = eval_set.masked_tokens
        acc = correct / n
        rec = {"step": step, "split": "eval", "loss": loss_sum / n, "mlm_accuracy": acc,
               "mlm_top5_accuracy": top5 / n, "mlm_accuracy_se": math.sqrt(acc * (1 - acc) / n),
               "masked_tokens": n, "tokens_seen": tokens_seen}
        if at_mask:
            rec["mlm_accuracy_at_mask"] = at_mask_correct / at_mask
        if eval_pairs:
            rec["nsp_accuracy"] = nsp_correct / eval_pairs
        rec["elapsed_s"] = round(elapsed(), 3)
        rec["eval_s"] = round(time.monotonic() - started, 3)
        return rec

    def save(step: int) -> None:
        if not dist.is_main:
            return
        state = {"optimizer": opt.state_dict(), "rng": {"torch": torch.get_rng_state()}}
        if device.type == "cuda":
            state["rng"]["cuda"] = torch.cuda.get_rng_state_all()
        meta = {
            "micro_batches": step * cfg.optim.grad_accum,
            "examples_seen": step * cfg.optim.grad_accum * cfg.optim.micro_batch,
            "epoch": stream.epoch_of(step * cfg.optim.grad_accum),
            "tokens_seen": tokens_seen,
            "elapsed_s": round(elapsed(), 3),
            "config": to_dict(cfg),
            "shape": shape_of(cfg),
            "vocab_size": vocab_size,
            "tokenizer_sha256": tok_hash,
            "eval_fingerprint": eval_set.fingerprint,
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        before = (lambda tmp: _fault("checkpoint-before-rename", step)) if _fault else None
        try:
            ckpt.save_checkpoint(run_dir, step, net, state, meta, before_rename=before)
        except OSError as exc:
            raise _write_failure("a checkpoint", exc, last_good["step"]) from None
        last_good["step"] = step
        ckpt.prune_checkpoints(run_dir, cfg.eval.keep, cfg.eval.save_at)

    # ---------------------------------------------------------- loop
    o = cfg.optim
    total_steps = o.max_steps
    progress = Progress(total_steps, start_step, enabled=dist.is_main and not quiet)
    if loaded is not None:
        say(f"resumed from {loaded.path.name} (step {start_step}/{total_steps})")
    if start_step == 0:
        rec = evaluate(0)
        write_record(rec)
        progress.eval_acc = rec["mlm_accuracy"]
    if speed.compile:
        compile_encoder(net)
    interval_tokens, interval_start = 0, time.monotonic()
    last_eval: dict[str, Any] | None = None
    interrupted = False
    step = start_step
    params = [p for p in net.parameters() if p.requires_grad]
    max_norm = o.clip if o.clip > 0 else float("inf")

    def my_micro_batches(step: int) -> list[int]:
        first = (step - 1) * o.grad_accum
        return [first + j for j in range(o.grad_accum) if j % dist.world_size == dist.rank]

    def make_batches(step: int):
        return [stream.batch(k) for k in my_micro_batches(step)]

    depth = speed.prefetch if speed.prefetch >= 0 else (4 if device.type == "cuda" else 0)
    prefetcher = (Prefetcher(make_batches, start_step + 1, total_steps, depth=depth,
                             pin=device.type == "cuda") if depth > 0 else None)
    # On a GPU every read of a device value waits for the queued work, so the step's
    # numbers stay on the device and are read in bulk at log and checkpoint steps.
    defer_reads = _reads_stall(device)
    # Steps not yet read: (step, lr, n_masked, device tensor [loss sum, correct,
    # nsp loss sum, nsp correct, grad norm]).
    pending: list[tuple[int, float, int, Any]] = []

    def fail_loss(value: float, at_step: int, at_lr: float) -> UserError:
        return UserError(
            f"training loss became {value} at step {at_step} (lr {at_lr:.3g}); stopped. "
            f"The last good checkpoint ({_ckpt_name(last_good['step'])}) and "
            "metrics.jsonl are kept; lower --lr or --clip, or check the data")

    def read_pending() -> list[float]:
        """Check every unread step's loss and gradient norm; the newest step's values."""
        values = torch.stack([t for *_, t in pending]).tolist()
        for (at_step, at_lr, masked, _), v in zip(pending, values):
            if not math.isfinite(v[0] / masked):
                raise fail_loss(v[0] / masked, at_step, at_lr)
            if not math.isfinite(v[4]):
                raise UserError(
                    f"gradient norm became {v[4]} at step {at_step} (lr {at_lr:.3g}); stopped. "
                    f"The last good checkpoint ({_ckpt_name(last_good['step'])}) is kept; "
                    "lower --lr or set --clip")
        pending.clear()
        return values[-1]

    with _Interrupt() as interrupt:
        try:
            while step < total_steps:
                step += 1
                lr = lr_at(step, peak_lr=o.lr, warmup_steps=o.warmup_steps, max_steps=o.max_steps,
                           schedule=o.schedule, min_lr_ratio=o.min_lr_ratio)
                for group in opt.param_groups:
                    group["lr"] = lr
                mine = my_micro_batches(step)
                batches = prefetcher.get(step) if prefetcher is not None else make_batches(step)
                n_masked = sum(b.n_masked for b in batches)
                n_pairs = sum(len(b.next_sentence_label) for b in batches
                              if b.next_sentence_label is not None)
                n_tokens = sum(b.n_tokens for b in batches)
                if dist.world_size > 1:
                    import torch.distributed as tdist

                    counts = torch.tensor([n_masked, n_pairs, n_tokens], dtype=torch.long,
                                          device=device)
                    tdist.all_reduce(counts)
                    n_masked, n_pairs, n_tokens = (int(x) for x in counts.tolist())
                    scale = dist.world_size  # DDP averages gradients over ranks
                else:
                    scale = 1
                parts = []
                for i, b in enumerate(batches):
                    # Dropout draws from the global generator: seed it per micro-batch so
                    # a resumed run (or another world size) draws what an uninterrupted
                    # single process would.
                    torch.manual_seed(_derived_seed(cfg.seed, 7, mine[i]))
                    sync = (dist.world_size == 1 or i == len(batches) - 1)
                    ctx = nullcontext() if sync else ddp_net.no_sync()
                    with ctx, _autocast(device, amp):
                        out = step_forward(b.to(device))
                        loss = out.mlm_loss_sum / n_masked
                        if out.nsp_loss_sum is not None:
                            loss = loss + out.nsp_loss_sum / max(1, n_pairs)
                        (loss * scale).backward()
                    zero = out.mlm_loss_sum.new_zeros(())
                    parts.append(torch.stack([
                        out.mlm_loss_sum.detach().float(), out.mlm_correct.float(),
                        zero if out.nsp_loss_sum is None else out.nsp_loss_sum.detach().float(),
                        zero if out.nsp_correct is None else out.nsp_correct.float()]).double())
                if _fault:
                    _fault("after-backward", step)
                stats = parts[0]
                for part in parts[1:]:  # in order, like the single-process sum it replaces
                    stats = stats + part
                if dist.world_size > 1:
                    tdist.all_reduce(stats)
                if not defer_reads and not math.isfinite(float(stats[0]) / n_masked):
                    # Stop before a non-finite loss reaches the weights.
                    raise fail_loss(float(stats[0]) / n_masked, step, lr)
                grad_norm_t = torch.nn.utils.clip_grad_norm_(params, max_norm)
                pending.append((step, lr, n_masked,
                                torch.cat([stats, grad_norm_t.detach().reshape(1).double()])))
                is_log = step % cfg.log_every == 0 or step == total_steps
                is_save = (step % cfg.save_every == 0 or step in cfg.eval.save_at
                           or step == total_steps)
                if not defer_reads or is_log or is_save or interrupt.requested:
                    last = read_pending()
                opt.step()
                opt.zero_grad(set_to_none=True)
                tokens_seen += n_tokens
                interval_tokens += n_tokens

                if is_log:
                    step_loss, correct, nsp_loss_sum, nsp_correct, grad_norm = last
                    step_loss /= n_masked
                    now = time.monotonic()
                    tps = interval_tokens / max(1e-9, now - interval_start)
                    interval_tokens, interval_start = 0, now
                    rec = {"step": step, "split": "train", "loss": step_loss,
                           "mlm_accuracy": correct / n_masked, "lr": lr, "grad_norm": grad_norm,
                           "tokens_seen": tokens_seen,
                           "epoch": round(stream.epoch_of(step * o.grad_accum), 6)}
                    if n_pairs:
                        rec["nsp_accuracy"] = nsp_correct / n_pairs
                        rec["nsp_loss"] = nsp_loss_sum / n_pairs
                    rec["elapsed_s"] = round(elapsed(), 3)
                    rec["tokens_per_s"] = round(tps, 1)
                    write_record(rec)
                    progress.update(step, loss=step_loss, lr=lr, tokens_per_s=tps)
                if step % cfg.eval_every == 0 or step == total_steps:
                    last_eval = evaluate(step) if dist.is_main else None
                    if last_eval is not None:
                        write_record(last_eval)
                        progress.eval_acc = last_eval["mlm_accuracy"]
                    if _fault:
                        _fault("after-eval", step)
                if is_save:
                    save(step)
                    if _fault:
                        _fault("after-checkpoint", step)
                if interrupt.requested:
                    interrupted = True
                    break
        except KeyboardInterrupt:
            progress.close()
            writer.close()
            raise
        except torch.cuda.OutOfMemoryError:
            raise UserError(
                f"CUDA ran out of memory at micro-batch {o.micro_batch} x seq-len "
                f"{cfg.data.seq_len}; lower --micro-batch (raise --grad-accum to keep the "
                "effective batch) or --seq-len"
            ) from None
        finally:
            if prefetcher is not None:
                prefetcher.close()
            progress.close()
            writer.close()
            trackers.close()

    if interrupted:
        if pending:
            read_pending()  # never checkpoint weights whose loss was not checked
        if last_good["step"] != step:
            save(step)
        say(f"interrupted: checkpoint saved at step {step}/{total_steps}; "
            f"continue with `bertcurve train --out {run_dir} --data {data_dir.path}`")
        return TrainResult(run_dir, step, total_steps, False, last_eval, n_params, constant_guess,
                           start_step if loaded is not None else None)

    if dist.is_main:
        if last_eval is None and start_step == total_steps:
            # Resumed a finished run (e.g. killed while writing final/): take the logged eval.
            evals = [r for r in metrics_log.read_records(run_dir / layout.METRICS)
                     if r.get("split") == "eval"]
            last_eval = evals[-1] if evals else None
        try:
            _save_final(net, data_dir.path, run_dir / layout.FINAL_MODEL_DIR, cfg.data.seq_len)
        except OSError as exc:
            raise _write_failure("the final model", exc, last_good["step"]) from None
        if last_eval is not None:
            say(f"done: step {step}, held-out accuracy {last_eval['mlm_accuracy']:.4f} "
                f"± {last_eval.get('mlm_accuracy_se', 0):.4f} (constant guess {constant_guess:.4f}), "
                f"top-5 {last_eval.get('mlm_top5_accuracy', 0):.4f}, "
                f"{elapsed():.0f}s; model in {run_dir / layout.FINAL_MODEL_DIR}")
    if dist.world_size > 1:
        import torch.distributed as tdist

        tdist.barrier()
    return TrainResult(run_dir, step, total_steps, True, last_eval, n_params, constant_guess,
                       start_step if loaded is not None else None)


def _ckpt_name(step: int | None) -> str:
    return "none yet" if step is None else layout.checkpoint_dir_name(step)


def _write_failure(what: str, exc: OSError, last_step: int | None) -> UserError:
    reason = exc.strerror or str(exc)
    return UserError(
        f"could not write {what} ({reason}{': ' + str(exc.filename) if exc.filename else ''}); "
        f"training stopped. The last good checkpoint ({_ckpt_name(last_step)}) and metrics.jsonl "
        "are intact: free space or fix permissions, then run the same command again to resume"
    )


def _save_final(net, data_path: Path, final: Path, seq_len: int) -> None:
    """``final/``: Hugging Face model + the data dir's tokenizer files, atomically.

    The tokenizer's ``model_max_length`` becomes the training sequence length:
    positions beyond it were never trained, so the fill-mask pipeline and
    ``bertcurve fill-mask`` window longer texts instead of reading them.
    """
    from bertcurve.training.checkpoint import save_weights

    with staged_directory(final) as tmp:
        save_weights(net, tmp)  # a full disk surfaces as OSError, not SafetensorError
        for name in os.listdir(data_path):
            if name.startswith("tokenizer") or name in (layout.VOCAB_TXT, "special_tokens_map.json"):
                src = Path(data_path) / name
                if src.is_file():
                    shutil.copy2(src, tmp / name)
        tok_config = tmp / "tokenizer_config.json"
        if tok_config.is_file():
            settings = read_json(tok_config, "tokenizer config")
            if isinstance(settings, dict):
                settings["model_max_length"] = min(seq_len, int(settings.get("model_max_length") or seq_len))
                write_json(tok_config, settings)


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
