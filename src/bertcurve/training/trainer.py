"""The training run: set up or restore, step, evaluate, checkpoint, loop.

:class:`Trainer` holds a run's state in named fields and does one thing per
method, in the order a run does them::

    trainer = Trainer(data_dir, tokenizer, run_dir, preset="demo", ...)
    trainer.setup()          # config, resume point, model, optimizer, data, run files
    result = trainer.fit()   # train_step() per step; evaluate() and save_checkpoint() on schedule

``bertcurve.train`` (stages/train.py) checks its arguments, takes the run
directory's lock and calls these two. A run killed at any moment continues
exactly: every random draw is a pure function of the seeds and the
micro-batch number (:mod:`bertcurve.training.seeds`), the learning rate a
pure function of the step, and a checkpoint holds weights, optimizer state
and the data position (the step). See docs/run-dir.md.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import signal
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterator, Mapping

import torch

from bertcurve import layout
from bertcurve.errors import UserError, say_now
from bertcurve.fsutil import read_json, staged_directory, write_json
from bertcurve.progress import Progress
from bertcurve.training import checkpoint as ckpt
from bertcurve.training import metrics_log, seeds
from bertcurve.training import model as model_lib
from bertcurve.training.batches import Batch, Prefetcher, SpecialIds, TrainStream, build_eval_set, make_examples
from bertcurve.training.config import SpeedConfig, build_config, shape_of, to_dict, validate
from bertcurve.training.distributed import (
    Dist,
    autocast,
    is_collective_failure,
    reads_stall,
    resolve_device,
)
from bertcurve.training.hostmem import keep_freed_memory
from bertcurve.training.schedule import lr_at, rates_agree_through, stable_phase_end
from bertcurve.training.trackers import Trackers, open_trackers

FaultHook = Callable[[str, int], None]
"""``hook(point, step)``, called at "after-backward", "after-eval", "checkpoint-before-rename"
and "after-checkpoint" of optimizer step ``step`` (tests kill or interrupt the process there)."""


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


@dataclass(frozen=True)
class StepCounts:
    """What one optimizer step trains on, summed over its micro-batches (and ranks)."""

    masked: int   # masked tokens: the MLM loss is their mean
    pairs: int    # NSP sentence pairs (0 without NSP)
    tokens: int   # real (non-padding) tokens
    stop: bool = False  # some rank was asked to stop (Ctrl-C, SIGTERM): every rank stops here


@dataclass
class PendingStep:
    """A finished step whose numbers are still on the device (read in bulk on a GPU)."""

    step: int
    lr: float
    masked: int
    values: torch.Tensor  # float64 [loss sum, correct, nsp loss sum, nsp correct, grad norm]


class StopRequest:
    """First Ctrl-C / SIGTERM: finish the step, checkpoint, stop. Second: stop now.

    Under torchrun (``distributed``) a repeat does not stop at once: the
    launcher forwards the terminal's Ctrl-C to every worker, so one key press
    arrives twice, and the launcher itself kills workers that outlive its
    grace period. The ranks agree on stopping at a step boundary
    (:meth:`Trainer._count`), so they all checkpoint and stop at the same step.
    """

    def __init__(self, distributed: bool = False) -> None:
        self.requested = False
        self.distributed = distributed
        self._old: dict[int, Any] = {}

    def _handler(self, signum, frame) -> None:
        if self.requested and not self.distributed:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self) -> "StopRequest":
        import threading

        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old.clear()


@contextmanager
def inject_faults(hook: FaultHook) -> Iterator[None]:
    """Run ``hook`` at the trainer's fault points while the block runs (tests only)."""
    previous = Trainer.fault_hook
    Trainer.fault_hook = hook
    try:
        yield
    finally:
        Trainer.fault_hook = previous


class Trainer:
    """One training run of a BERT MLM on a prepared data directory into a run directory."""

    #: Test hook (see :data:`FaultHook`); set it with :func:`inject_faults`.
    fault_hook: ClassVar[FaultHook | None] = None

    def __init__(self, data_dir, tokenizer, run_dir: Path, *, preset: str | None,
                 config: str | Path | Mapping[str, Any] | None,
                 overrides: Mapping[str, Any] | None, resume: str, speed: SpeedConfig,
                 report_to: tuple[str, ...], quiet: bool, say: Callable[[str], None],
                 warn: Callable[[str], None], dist: Dist,
                 on_eval: Callable[[int, Mapping[str, Any]], None] | None = None,
                 pretrained: Any = None):
        self.data_dir = data_dir
        self.tokenizer = tokenizer
        self.vocab_size = len(tokenizer)
        self.run_dir = Path(run_dir)
        self.preset, self.config_source, self.overrides = preset, config, overrides
        self.resume = resume
        self.speed = speed
        self.report_to = report_to      # experiment trackers (training/trackers.py)
        self.pretrained = pretrained    # model_lib.inspect_pretrained(...) of --init-from, or None
        self.saved_init_from: dict | None = None
        self.quiet = quiet
        self.say, self.warn = say, warn
        self.dist = dist
        self.on_eval = on_eval  # called with every evaluation record written
        self.stop = StopRequest(distributed=dist.is_distributed)
        self.step = 0
        self.last_eval: dict[str, Any] | None = None
        self.interrupted = False
        self.pending: list[PendingStep] = []
        self.prefetcher: Prefetcher | None = None
        self.trackers = Trackers()

    # ================================================================ set up or restore
    def setup(self) -> None:
        """Resolve the config and the resume point, then build everything a step needs."""
        self.cfg = self._resolve_config()
        self.tok_hash = ckpt.tokenizer_hash(self.data_dir.path)
        self.loaded = self._find_checkpoint()
        self.micro_batches_per_step = self.dist.micro_batches_per_step(self.cfg.optim.grad_accum)
        if self.loaded is not None:
            self._check_checkpoint_fits(self.loaded)
            self._check_global_batch(self.loaded)
        self.start_step = self.loaded.step if self.loaded is not None else 0
        self.step = self.start_step
        self.total_steps = self.cfg.optim.max_steps
        self.milestones = self._milestones()
        self._build_model()
        self._build_optimizer()
        if self.loaded is not None:
            self._restore_training_state(self.loaded)
        self._build_data()
        self._open_run_files()

    def _milestones(self) -> tuple[int, ...]:
        """Checkpoints never pruned: ``eval.save_at`` and, under WSD, the stable phase's last
        step (``--extend-to`` continues from there, docs/run-dir.md)."""
        o = self.cfg.optim
        end = stable_phase_end(o.schedule, o.max_steps, o.warmup_steps, o.decay_fraction)
        extra = (end,) if end and end < o.max_steps else ()
        return tuple(sorted(set(self.cfg.eval.save_at) | set(extra)))

    def _resolve_config(self):
        """The preset/config file/overrides, or the saved config of the run being continued."""
        run_dir = self.run_dir
        saved = _saved_run_config(run_dir)
        has_history = bool(ckpt.list_checkpoints(run_dir)) or (run_dir / layout.METRICS).exists()
        if self.resume == "none" and (saved is not None or has_history):
            raise UserError(f"{run_dir} already holds a run; continue it with --resume auto or "
                            "choose a new --out")
        if self.preset is None and self.config_source is None and saved is not None:
            cfg = build_config(None, saved["train"], self.overrides)
            self.preset = saved.get("preset")   # a resume without --preset keeps the run's preset
        else:
            cfg = build_config(self.preset or "demo", self.config_source, self.overrides)
        if saved is not None:
            self.saved_init_from = saved.get("init_from")
        problems = validate(cfg, self.vocab_size)
        if problems:
            raise UserError("; ".join(problems))
        return cfg

    def _find_checkpoint(self) -> ckpt.LoadedCheckpoint | None:
        """The checkpoint to continue from (``--resume``), verified, or None to start fresh."""
        if self.resume == "none":
            return None
        if self.resume != "auto":
            try:
                return ckpt.load_checkpoint(Path(self.resume))
            except ckpt.CorruptCheckpoint as exc:
                raise UserError(f"checkpoint {self.resume} is damaged: {exc}; "
                                "resume with --resume auto to use the newest intact one") from None
        if self.dist.is_main:
            ckpt.remove_temporary(self.run_dir)
        loaded = ckpt.latest_good_checkpoint(self.run_dir, warn=self.warn)
        if loaded is None and ckpt.list_checkpoints(self.run_dir):
            self.warn("warning: no intact checkpoint left; starting from step 0")
        return loaded

    def _check_checkpoint_fits(self, loaded: ckpt.LoadedCheckpoint) -> None:
        """Refuse a checkpoint of another tokenizer, model shape or a shorter run; warn on other changes."""
        cfg = self.cfg
        if loaded.meta.get("tokenizer_sha256") != self.tok_hash:
            raise UserError(
                f"checkpoint {loaded.path.name} was trained with a different tokenizer than "
                f"{self.data_dir.path} (vocabulary hash differs); resume with the data dir it was "
                "trained on, or start a new run with another --out"
            )
        old_shape = loaded.meta.get("shape")
        if old_shape != shape_of(cfg) or loaded.meta.get("vocab_size") != self.vocab_size:
            changes = _diff(old_shape, shape_of(cfg)) or ["vocab_size"]
            raise UserError(
                f"checkpoint {loaded.path.name} has a different model shape ({'; '.join(changes)}); "
                "resume with the same model settings, or start a new run with another --out"
            )
        changed = _diff(loaded.meta.get("config", {}), to_dict(cfg))
        if loaded.step and loaded.meta.get("micro_batches") == loaded.step * self.micro_batches_per_step:
            # The same global batch on another number of processes: still the same run.
            changed = [c for c in changed if not c.startswith("optim.grad_accum:")]
        if loaded.step and rates_agree_through(loaded.step, loaded.meta.get("config", {}).get("optim", {}),
                                               to_dict(cfg)["optim"]):
            # A longer WSD/constant/inverse-sqrt run (--extend-to): every step so far is the same.
            changed = [c for c in changed if not c.startswith("optim.max_steps:")]
        if changed:
            self.warn("warning: config differs from the checkpoint's (the run is no longer an exact "
                      "continuation): " + "; ".join(changed))
        if loaded.step > cfg.optim.max_steps:
            raise UserError(f"checkpoint is at step {loaded.step}, beyond max_steps "
                            f"{cfg.optim.max_steps}; raise --max-steps")

    def _check_global_batch(self, loaded: ckpt.LoadedCheckpoint) -> None:
        """Refuse another number of micro-batches per step (grad_accum x processes) than the
        checkpoint's: the data position and the meaning of every step would change."""
        if loaded.step == 0 or "micro_batches" not in loaded.meta:
            return
        then = int(loaded.meta["micro_batches"]) // loaded.step
        world, now = self.dist.world_size, self.micro_batches_per_step
        if then == now:
            return
        fix = (f"resume with --grad-accum {then // world} on {world} process(es)" if then % world == 0
               else f"resume on a number of processes that divides {then}")
        raise UserError(
            f"checkpoint {loaded.path.name} was trained with {then} micro-batches per optimizer step "
            f"(--grad-accum x processes); this run would take {now} ({self.cfg.optim.grad_accum} x "
            f"{world} process(es)), a different global batch; {fix}")

    def _build_model(self) -> None:
        """Threads, device, the initial (or restored) weights, and the module the step calls."""
        cfg = self.cfg
        threads = self.speed.threads or (1 if cfg.model.hidden_size <= 64 else 0)
        if threads:
            # Tiny matrices gain nothing from threads and lose a lot when the CPU is shared.
            torch.set_num_threads(threads)
        self.device, self.amp = resolve_device(self.speed)
        self.dist = self.dist.connect(self.device, self.speed.dist_timeout)
        if self.device.type == "cpu" and self.amp is not None:
            self.warn("warning: bf16 on a CPU without native bf16 support is many times slower than fp32")
        self.special = SpecialIds.from_tokenizer(self.tokenizer)
        seeds.seed_global_torch(cfg.seed, seeds.MODEL_INIT)
        net = model_lib.build_model(cfg.model, self.vocab_size, nsp=cfg.data.nsp,
                                    pad_token_id=self.special.pad)
        if self.pretrained is not None and self.loaded is None:
            model_lib.load_pretrained(self.pretrained, net)  # continued pretraining: its weights, not random ones
        self.n_params = model_lib.count_parameters(net)
        if self.loaded is not None:
            _load_weights(net, self.loaded)
        net.to(self.device)
        net.train()
        if self.device.type == "cpu":
            model_lib.use_cpu_dropout(net)  # draws dropout masks ~3x faster; CUDA's fused kernels are fine
            keep_freed_memory()  # no page faults on every step's fresh activations
        self.net = net
        self.ddp_net = self.dist.wrap(net, self.device)
        self.params = [p for p in net.parameters() if p.requires_grad]
        clip = cfg.optim.clip
        self.max_norm = clip if clip > 0 else float("inf")

    def _build_optimizer(self) -> None:
        """AdamW over :func:`~bertcurve.training.model.param_groups` (fused where torch has it)."""
        o = self.cfg.optim

        def adamw(**fused: bool) -> torch.optim.AdamW:
            return torch.optim.AdamW(model_lib.param_groups(self.net, o.weight_decay), lr=o.lr,
                                     betas=(o.beta1, o.beta2), eps=o.eps, **fused)

        try:
            self.opt = adamw(fused=self.device.type in ("cuda", "cpu"))
        except (RuntimeError, TypeError):
            self.opt = adamw()

    def _restore_training_state(self, loaded: ckpt.LoadedCheckpoint) -> None:
        """Optimizer moments and RNG states from the checkpoint."""
        try:
            self.opt.load_state_dict(loaded.training_state["optimizer"])
        except (KeyError, ValueError, RuntimeError) as exc:
            raise UserError(f"checkpoint {loaded.path.name}: optimizer state does not fit ({exc})") from None
        rng = loaded.training_state.get("rng", {})
        if "torch" in rng:
            torch.set_rng_state(rng["torch"])
        # Older checkpoints also hold every GPU's generator state ("cuda"): not restored, as
        # every micro-batch reseeds; restoring it failed on a machine with fewer GPUs.

    def _build_data(self) -> None:
        """The training stream and the fixed held-out set."""
        cfg = self.cfg
        started = time.monotonic()
        examples = {split: make_examples(self.data_dir.split(split), seq_len=cfg.data.seq_len,
                                         special=self.special, whole_word=cfg.data.whole_word,
                                         nsp=cfg.data.nsp)
                    for split in ("train", "val")}
        self.stream = TrainStream(examples["train"], micro_batch=cfg.optim.micro_batch,
                                  mask_prob=cfg.data.mask_prob, seed=cfg.seed,
                                  short_seq_prob=cfg.data.short_seq_prob)
        self.eval_set = build_eval_set(examples["val"], eval_tokens=cfg.eval.eval_tokens,
                                       mask_prob=cfg.eval.mask_prob, eval_seed=cfg.eval.eval_seed,
                                       batch_size=max(cfg.optim.micro_batch, 32))
        labels = torch.cat([b.labels[b.labels >= 0] for b in self.eval_set.batches])
        self.constant_guess = float(torch.bincount(labels).max()) / max(1, int(labels.numel()))
        self.eval_pairs = sum(b.next_sentence_label.numel() for b in self.eval_set.batches
                              if b.next_sentence_label is not None)
        self.eval_batches: list[Batch] = []  # the fixed set, moved to the device at the first evaluation
        if self.loaded is not None:
            old_fp = self.loaded.meta.get("eval_fingerprint")
            if old_fp and old_fp != self.eval_set.fingerprint:
                self.warn("warning: the held-out evaluation set differs from the checkpoint's "
                          "(different data or eval settings); eval accuracies are not comparable")
        es = self.eval_set
        if es.masked_tokens < cfg.eval.eval_tokens:
            self.warn(f"warning: the held-out set has {es.masked_tokens:,} masked tokens, fewer than the "
                      f"{cfg.eval.eval_tokens:,} asked (the validation split is small): its accuracy has a "
                      "wider standard error")
        if self.data_dir.meta.get("whole_word") and not cfg.data.whole_word:
            self.say("note: the data dir has whole-word boundaries (prepare --whole-word); pass --whole-word "
                     "to mask whole words")
        self.say(f"data: {len(examples['train']):,} training {'pairs' if cfg.data.nsp else 'sequences'}, "
                 f"eval set {es.sequences:,} sequences / {es.masked_tokens:,} masked tokens "
                 f"(constant-guess accuracy {self.constant_guess:.4f}), prepared in "
                 f"{time.monotonic() - started:.1f}s")
        n = self.n_params
        self.say(f"model: {self.architecture}, {n:,} parameters ({n / 1e6:.2f}M), "
                 f"vocab {self.vocab_size:,}, device {self.device.type}"
                 f"{' bf16 autocast' if self.amp is not None else ' fp32'}")

    @property
    def architecture(self) -> str:
        return "BertForPreTraining (MLM+NSP)" if self.cfg.data.nsp else "BertForMaskedLM"

    def _open_run_files(self) -> None:
        """config.json, metrics.jsonl cut back to the resume point, TensorBoard; the run's clocks."""
        run_dir, loaded = self.run_dir, self.loaded
        if self.dist.is_main:
            run_config = self._run_config()
            write_json(run_dir / layout.RUN_CONFIG, run_config)
            # Without a checkpoint the run starts over, so every old line goes (step 0 included).
            dropped = metrics_log.truncate_after(run_dir / layout.METRICS,
                                                 self.start_step if loaded is not None else -1)
            if dropped and loaded is not None:
                self.say(f"resume: dropped {dropped} metrics line(s) newer than step {self.start_step}")
            self.trackers = open_trackers(self.report_to, run_dir, start_step=self.start_step)
            self.trackers.log_config(run_config)
        self.writer = metrics_log.MetricsWriter(run_dir / layout.METRICS if self.dist.is_main else None)
        self.elapsed_before = float(loaded.meta.get("elapsed_s", 0.0)) if loaded is not None else 0.0
        self.tokens_seen = int(loaded.meta.get("tokens_seen", 0)) if loaded is not None else 0
        self.clock0 = time.monotonic()
        self.last_good_step: int | None = self.start_step if loaded is not None else None

    def _run_config(self) -> dict[str, Any]:
        """The run's config.json (docs/run-dir.md)."""
        es = self.eval_set
        return {
            "format": layout.RUN_CONFIG_FORMAT,
            "train": to_dict(self.cfg),
            "speed": to_dict(self.speed),
            "preset": self.preset,
            "data_dir": str(Path(self.data_dir.path).resolve()),
            "tokenizer_sha256": self.tok_hash,
            "vocab_size": self.vocab_size,
            "parameters": self.n_params,
            "architecture": self.architecture,
            "eval_set": {"masked_tokens": es.masked_tokens, "sequences": es.sequences,
                         "fingerprint": es.fingerprint,
                         "constant_guess_accuracy": self.constant_guess},
            "world_size": self.dist.world_size,
            **({"init_from": init_from} if (init_from := self._init_from()) else {}),
        }

    def _init_from(self) -> dict | None:
        """The Hugging Face model this run continued from (kept on resume)."""
        if self.pretrained is not None:
            return {"name": self.pretrained.name, "path": str(self.pretrained.path.resolve())}
        return self.saved_init_from

    def elapsed(self) -> float:
        """Training seconds of the whole run, earlier sessions included."""
        return self.elapsed_before + time.monotonic() - self.clock0

    # ================================================================ the loop
    def fit(self) -> TrainResult:
        """Train from the resume point to ``max_steps``; a Ctrl-C or SIGTERM checkpoints and returns."""
        self._start_loop()
        with self.stop:
            try:
                while self.step < self.total_steps:
                    if not self.train_step(self.step + 1):
                        self.interrupted = True  # every rank stops after the same step
                        break
                    self.step += 1
            except KeyboardInterrupt:
                self.progress.close()
                self.writer.close()
                raise
            except torch.cuda.OutOfMemoryError:
                raise self._said_under_torchrun(UserError(
                    f"CUDA ran out of memory at micro-batch {self.cfg.optim.micro_batch} x seq-len "
                    f"{self.cfg.data.seq_len}; lower --micro-batch (raise --grad-accum to keep the "
                    "effective batch) or --seq-len")) from None
            except RuntimeError as exc:
                if self.dist.is_distributed and is_collective_failure(exc):
                    raise self._said_under_torchrun(self._peer_failure(exc)) from None
                raise
            except UserError as exc:
                raise self._said_under_torchrun(exc)
            finally:
                self._close_loop()
        if self.interrupted:
            return self._stop_early()
        return self._finish()

    def _start_loop(self) -> None:
        """Progress line, the step-0 evaluation, compilation and the batch pipeline."""
        self.progress = Progress(self.total_steps, self.start_step,
                                 enabled=self.dist.is_main and not self.quiet)
        if self.loaded is not None:
            self.say(f"resumed from {self.loaded.path.name} (step {self.start_step}/{self.total_steps})")
        if self.start_step == 0:
            self._log_eval(self.evaluate(0))
        if self.speed.compile:
            model_lib.compile_encoder(self.net)
        self.interval_tokens, self.interval_start = 0, time.monotonic()
        depth = self.speed.prefetch if self.speed.prefetch >= 0 else (4 if self.device.type == "cuda" else 0)
        if depth > 0:
            self.prefetcher = Prefetcher(self.make_batches, self.start_step + 1, self.total_steps,
                                         depth=depth, pin=self.device.type == "cuda")
        # On a GPU every read of a device value waits for the queued work, so the step's
        # numbers stay on the device and are read in bulk at log and checkpoint steps.
        self.defer_reads = reads_stall(self.device)

    def _close_loop(self) -> None:
        if self.prefetcher is not None:
            self.prefetcher.close()
        self.progress.close()
        self.writer.close()
        self.trackers.close()

    def _stop_early(self) -> TrainResult:
        """After a Ctrl-C or SIGTERM: checkpoint the finished step, say how to continue."""
        if self.pending:
            self.read_pending()  # never checkpoint weights whose loss was not checked
        if self.last_good_step != self.step:
            self.save_checkpoint(self.step)
        self.dist.barrier()  # no rank exits (torchrun would kill the rest) before rank 0 has saved
        self.say(f"interrupted: checkpoint saved at step {self.step}/{self.total_steps}; "
                 f"continue with `bertcurve train --out {self.run_dir} --data {self.data_dir.path}`")
        return self._result(completed=False)

    def _finish(self) -> TrainResult:
        """The final model in ``final/`` and the closing line."""
        if self.dist.is_main:
            if self.last_eval is None and self.start_step == self.total_steps:
                # Resumed a finished run (e.g. killed while writing final/): take the logged eval.
                evals = [r for r in metrics_log.read_records(self.run_dir / layout.METRICS)
                         if r.get("split") == "eval"]
                self.last_eval = evals[-1] if evals else None
            try:
                save_final_model(self.net, self.data_dir.path, self.run_dir / layout.FINAL_MODEL_DIR,
                                 self.cfg.data.seq_len)
            except OSError as exc:
                raise _write_failure("the final model", exc, self.last_good_step) from None
            if self.last_eval is not None:
                e = self.last_eval
                self.say(f"done: step {self.step}, held-out accuracy {e['mlm_accuracy']:.4f} "
                         f"± {e.get('mlm_accuracy_se', 0):.4f} (constant guess {self.constant_guess:.4f}), "
                         f"top-5 {e.get('mlm_top5_accuracy', 0):.4f}, "
                         f"{self.elapsed():.0f}s; model in {self.run_dir / layout.FINAL_MODEL_DIR}")
        self.dist.barrier()
        return self._result(completed=True)

    def _result(self, completed: bool) -> TrainResult:
        return TrainResult(self.run_dir, self.step, self.total_steps, completed, self.last_eval,
                           self.n_params, self.constant_guess,
                           self.start_step if self.loaded is not None else None)

    # ================================================================ one training step
    def learning_rate(self, step: int) -> float:
        o = self.cfg.optim
        return lr_at(step, peak_lr=o.lr, warmup_steps=o.warmup_steps, max_steps=o.max_steps,
                     schedule=o.schedule, min_lr_ratio=o.min_lr_ratio, decay_fraction=o.decay_fraction,
                     decay_shape=o.decay_shape)

    def make_batches(self, step: int) -> list[Batch]:
        """This process's micro-batches of ``step`` (a pure function of the step)."""
        return [self.stream.batch(k) for k in self.dist.micro_batches(step, self.cfg.optim.grad_accum)]

    def train_step(self, step: int) -> bool:
        """Optimizer step ``step``: gradients of its micro-batches, clipping, the AdamW update,
        then the step's metrics line, evaluation and checkpoint when they are due.

        False, having trained nothing, when a stop was asked for (on any rank).
        """
        cfg = self.cfg
        batches = self.prefetcher.get(step) if self.prefetcher is not None else self.make_batches(step)
        counts = self._count(batches)
        if counts.stop:
            return False
        lr = self.learning_rate(step)
        for group in self.opt.param_groups:
            group["lr"] = lr
        stats = self._accumulate_gradients(step, batches, counts)
        self._reached("after-backward", step)
        self.dist.sum_over_ranks(stats)
        if not self.defer_reads and not math.isfinite(float(stats[0]) / counts.masked):
            # Stop before a non-finite loss reaches the weights.
            raise self._loss_failure(float(stats[0]) / counts.masked, step, lr)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, self.max_norm)
        self.pending.append(PendingStep(step, lr, counts.masked,
                                        torch.cat([stats, grad_norm.detach().reshape(1).double()])))
        is_log = step % cfg.log_every == 0 or step == self.total_steps
        is_save = step % cfg.save_every == 0 or step in self.milestones or step == self.total_steps
        if not self.defer_reads or is_log or is_save:
            self.last_values = self.read_pending()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        self.tokens_seen += counts.tokens
        self.interval_tokens += counts.tokens
        if is_log:
            self._log_train(step, lr, counts, self.last_values)
        if step % cfg.eval_every == 0 or step == self.total_steps:
            self.last_eval = self.evaluate(step) if self.dist.is_main else None
            if self.last_eval is not None:
                self._log_eval(self.last_eval)
            self._reached("after-eval", step)
        if is_save:
            self.save_checkpoint(step)
            self._reached("after-checkpoint", step)
        return True

    def _count(self, batches: list[Batch]) -> StepCounts:
        """Masked tokens, pairs and tokens of the step, and whether to stop, over every rank.

        One small all-reduce in CPU memory per step: it never waits for the GPU,
        and folding the stop flag into it makes every rank stop at the same step.
        """
        masked = sum(b.n_masked for b in batches)
        pairs = sum(len(b.next_sentence_label) for b in batches if b.next_sentence_label is not None)
        tokens = sum(b.n_tokens for b in batches)
        masked, pairs, tokens, stops = self.dist.sum_on_host(
            [masked, pairs, tokens, int(self.stop.requested)])
        return StepCounts(masked, pairs, tokens, stop=stops > 0)

    def _accumulate_gradients(self, step: int, batches: list[Batch], counts: StepCounts) -> torch.Tensor:
        """Forward and backward of each micro-batch; the step's summed numbers (float64 on the device).

        The loss is the mean over the step's masked tokens (and pairs), so every
        token weighs the same however the micro-batches split them.
        """
        scale = self.dist.world_size if self.dist.is_distributed else 1  # DDP averages over ranks
        numbers = self.dist.micro_batches(step, self.cfg.optim.grad_accum)
        parts = []
        for i, b in enumerate(batches):
            # Dropout draws from the global generator: seed it per micro-batch so a resumed
            # run (or another world size) draws what an uninterrupted single process would.
            seeds.seed_global_torch(self.cfg.seed, seeds.DROPOUT, numbers[i])
            sync = not self.dist.is_distributed or i == len(batches) - 1
            with (nullcontext() if sync else self.ddp_net.no_sync()), autocast(self.device, self.amp):
                out = self._forward(b.to(self.device))
                loss = out.mlm_loss_sum / counts.masked
                if out.nsp_loss_sum is not None:
                    loss = loss + out.nsp_loss_sum / max(1, counts.pairs)
                (loss * scale).backward()
            zero = out.mlm_loss_sum.new_zeros(())
            parts.append(torch.stack([
                out.mlm_loss_sum.detach().float(), out.mlm_correct.float(),
                zero if out.nsp_loss_sum is None else out.nsp_loss_sum.detach().float(),
                zero if out.nsp_correct is None else out.nsp_correct.float()]).double())
        stats = parts[0]
        for part in parts[1:]:  # in order, like the single-process sum it replaces
            stats = stats + part
        return stats

    def _forward(self, batch: Batch) -> model_lib.StepOutput:
        if self.dist.is_distributed:
            return self.ddp_net(batch)
        return model_lib.forward(self.net, batch)

    def read_pending(self) -> list[float]:
        """Check every unread step's loss and gradient norm; the newest step's values."""
        values = torch.stack([p.values for p in self.pending]).tolist()
        for p, v in zip(self.pending, values):
            if not math.isfinite(v[0] / p.masked):
                raise self._loss_failure(v[0] / p.masked, p.step, p.lr)
            if not math.isfinite(v[4]):
                raise UserError(
                    f"gradient norm became {v[4]} at step {p.step} (lr {p.lr:.3g}); stopped. "
                    f"The last good checkpoint ({_ckpt_name(self.last_good_step)}) is kept; "
                    "lower --lr or set --clip")
        self.pending.clear()
        return values[-1]

    def _said_under_torchrun(self, exc: UserError) -> UserError:
        """``exc``, its line already on stderr when distributed.

        torchrun SIGTERMs the other ranks as soon as one exits, and SIGTERM is
        held only while the loop runs: the line must be out before it ends
        (the CLI does not repeat it).
        """
        return say_now(exc) if self.dist.is_distributed else exc

    def _peer_failure(self, exc: RuntimeError) -> UserError:
        # gloo/NCCL messages start with a source location; keep the first sentence after it.
        first = re.sub(r"^\[[^\]]*\]\s*", "", (str(exc).strip().splitlines() or [""])[0])
        first = first.split(". ")[0][:120] or type(exc).__name__
        return UserError(
            f"process {self.dist.rank} of {self.dist.world_size}: another process of this run "
            f"stopped or stopped answering near step {self.step + 1} ({first}); the last good "
            f"checkpoint ({_ckpt_name(self.last_good_step)}) is kept: run the same torchrun "
            "command again to resume")

    def _loss_failure(self, value: float, step: int, lr: float) -> UserError:
        return UserError(
            f"training loss became {value} at step {step} (lr {lr:.3g}); stopped. "
            f"The last good checkpoint ({_ckpt_name(self.last_good_step)}) and "
            "metrics.jsonl are kept; lower --lr or --clip, or check the data")

    def _log_train(self, step: int, lr: float, counts: StepCounts, values: list[float]) -> None:
        """The step's training line in metrics.jsonl and the progress display."""
        loss_sum, correct, nsp_loss_sum, nsp_correct, grad_norm = values
        step_loss = loss_sum / counts.masked
        now = time.monotonic()
        tps = self.interval_tokens / max(1e-9, now - self.interval_start)
        self.interval_tokens, self.interval_start = 0, now
        rec = {"step": step, "split": "train", "loss": step_loss,
               "mlm_accuracy": correct / counts.masked, "lr": lr, "grad_norm": grad_norm,
               "tokens_seen": self.tokens_seen,
               "epoch": round(self.stream.epoch_of(step * self.micro_batches_per_step), 6)}
        if counts.pairs:
            rec["nsp_accuracy"] = nsp_correct / counts.pairs
            rec["nsp_loss"] = nsp_loss_sum / counts.pairs
        rec["elapsed_s"] = round(self.elapsed(), 3)
        rec["tokens_per_s"] = round(tps, 1)
        self.write_record(rec)
        self.progress.update(step, loss=step_loss, lr=lr, tokens_per_s=tps)

    def _log_eval(self, record: dict[str, Any]) -> None:
        self.write_record(record)
        self.progress.eval_acc = record["mlm_accuracy"]
        if self.on_eval is not None:
            self.on_eval(record["step"], record)

    def write_record(self, record: dict[str, Any]) -> None:
        """One line of metrics.jsonl (and the experiment trackers')."""
        try:
            self.writer.write(record)
        except OSError as exc:
            raise _write_failure("metrics.jsonl", exc, self.last_good_step) from None
        self.trackers.log(record, record["step"])

    def _reached(self, point: str, step: int) -> None:
        hook = Trainer.fault_hook
        if hook is not None:
            hook(point, step)

    # ================================================================ evaluate
    def evaluate(self, step: int) -> dict[str, Any]:
        """The metrics record of the fixed held-out set at ``step`` (model back in training mode after)."""
        started = time.monotonic()
        if not self.eval_batches:
            self.eval_batches.extend(b.to(self.device) for b in self.eval_set.batches)
        self.net.eval()
        sums = []
        with torch.inference_mode(), autocast(self.device, self.amp):
            for b in self.eval_batches:
                o = model_lib.forward(self.net, b, topk=True, mask_id=self.special.mask)
                zero = o.mlm_loss_sum.new_zeros(())
                sums.append(torch.stack([
                    o.mlm_loss_sum.float(), o.mlm_correct.float(), o.mlm_top5.float(),
                    zero if o.nsp_correct is None else o.nsp_correct.float(),
                    o.at_mask_correct.float(), o.at_mask.float()]).double())
        # One read for the whole set: the GPU runs every batch without waiting for Python.
        loss_sum, correct, top5, nsp_correct, at_mask_correct, at_mask = (
            float(x) for x in torch.stack(sums).sum(0).tolist())
        self.net.train()
        n = self.eval_set.masked_tokens
        acc = correct / n
        rec = {"step": step, "split": "eval", "loss": loss_sum / n, "mlm_accuracy": acc,
               "mlm_top5_accuracy": top5 / n, "mlm_accuracy_se": math.sqrt(acc * (1 - acc) / n),
               "masked_tokens": n, "tokens_seen": self.tokens_seen}
        if at_mask:
            rec["mlm_accuracy_at_mask"] = at_mask_correct / at_mask
        if self.eval_pairs:
            rec["nsp_accuracy"] = nsp_correct / self.eval_pairs
        rec["elapsed_s"] = round(self.elapsed(), 3)
        rec["eval_s"] = round(time.monotonic() - started, 3)
        return rec

    # ================================================================ checkpoint
    def save_checkpoint(self, step: int) -> None:
        """Checkpoint ``step`` atomically (rank 0) and prune old ones."""
        if not self.dist.is_main:
            return
        # Every draw a step makes is reseeded from the micro-batch number (dropout included),
        # so no GPU generator state is saved: a resume on another machine or number of GPUs
        # draws the same numbers. The CPU state is kept for older readers of checkpoints.
        state = {"optimizer": self.opt.state_dict(), "rng": {"torch": torch.get_rng_state()}}
        try:
            ckpt.save_checkpoint(self.run_dir, step, self.net, state, self._checkpoint_meta(step),
                                 before_rename=lambda tmp: self._reached("checkpoint-before-rename", step))
        except OSError as exc:
            raise _write_failure("a checkpoint", exc, self.last_good_step) from None
        self.last_good_step = step
        ckpt.prune_checkpoints(self.run_dir, self.cfg.eval.keep, self.milestones)

    def _checkpoint_meta(self, step: int) -> dict[str, Any]:
        """checkpoint.json's fields: the data position and what a resume must match."""
        cfg = self.cfg
        micro_batches = step * self.micro_batches_per_step
        return {
            "micro_batches": micro_batches,
            "world_size": self.dist.world_size,
            "examples_seen": micro_batches * cfg.optim.micro_batch,
            "epoch": self.stream.epoch_of(micro_batches),
            "tokens_seen": self.tokens_seen,
            "elapsed_s": round(self.elapsed(), 3),
            "config": to_dict(cfg),
            "shape": shape_of(cfg),
            "vocab_size": self.vocab_size,
            "tokenizer_sha256": self.tok_hash,
            "eval_fingerprint": self.eval_set.fingerprint,
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }


# -------------------------------------------------------------------- helpers
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
    """``key: old -> new`` for every leaf that differs between two nested dicts."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in sorted(set(a) | set(b)):
            out += _diff(a.get(key), b.get(key), f"{prefix}{key}.")
        return out
    return [] if a == b else [f"{prefix[:-1]}: {a!r} -> {b!r}"]


def _load_weights(net: torch.nn.Module, loaded: ckpt.LoadedCheckpoint) -> None:
    """The checkpoint's weights into ``net``; only the tied output matrix may be missing."""
    missing, unexpected = net.load_state_dict(loaded.weights, strict=False)
    tied = set(getattr(net, "_tied_weights_keys", None) or {})
    real_missing = [k for k in missing if k not in tied and not k.endswith("decoder.weight")
                    and not k.endswith("decoder.bias")]
    if real_missing or unexpected:
        raise UserError(f"checkpoint {loaded.path.name} does not match the model "
                        f"(missing {real_missing[:3]}, unexpected {list(unexpected)[:3]})")
    net.tie_weights()


def _ckpt_name(step: int | None) -> str:
    return "none yet" if step is None else layout.checkpoint_dir_name(step)


def _write_failure(what: str, exc: OSError, last_step: int | None) -> UserError:
    reason = exc.strerror or str(exc)
    return UserError(
        f"could not write {what} ({reason}{': ' + str(exc.filename) if exc.filename else ''}); "
        f"training stopped. The last good checkpoint ({_ckpt_name(last_step)}) and metrics.jsonl "
        "are intact: free space or fix permissions, then run the same command again to resume"
    )


def save_final_model(net: torch.nn.Module, data_path: Path, final: Path, seq_len: int) -> None:
    """``final/``: Hugging Face model + the data dir's tokenizer files, atomically.

    The tokenizer's ``model_max_length`` becomes the training sequence length:
    positions beyond it were never trained, so the fill-mask pipeline and
    ``bertcurve fill-mask`` window longer texts instead of reading them.
    """
    with staged_directory(final) as tmp:
        ckpt.save_weights(net, tmp)  # a full disk surfaces as OSError, not SafetensorError
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
