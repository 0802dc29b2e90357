"""Training throughput: `bertcurve train` vs a Hugging Face Trainer and a seed-style loop.

    python bench/train_throughput.py --data DATA_DIR --preset seed-48m --batch 32 --seq-len 128 \\
        [--grad-accum N] [--device cpu|cuda] [--dtype fp32|bf16] [--compile] \\
        [--engines ours,hf,seed] [--steps N] [--warmup N] [--repeats R] [--threads N] \\
        [--peak-tflops X] [--project-steps N] [--eval-tokens N] [--json OUT]

Engines (same preset shape, data dir, micro-batch, accumulation and sequence length):

- ``ours``: the real ``bertcurve.stages.train.train`` into a temporary run dir.
  Tokens/s come from its own ``metrics.jsonl``: the ``tokens_seen`` and
  ``elapsed_s`` differences between the training records at the end of warm-up
  and at the last step, less the time of any evaluation in between. Its last
  evaluation's ``eval_s`` feeds the wall-time projection.
- ``hf``: ``transformers.Trainer`` + ``DataCollatorForLanguageModeling`` on the
  same packed sequences and the same ``BertForMaskedLM`` (full-vocabulary logits
  at every position); bf16 and ``torch_compile`` follow --dtype and --compile.
- ``seed``: the seed's loop (``bench/seed_style.py``): ``nn.TransformerEncoder``,
  untied full-vocabulary MLM head + NSP, fp32 whatever --dtype says, plain
  AdamW, sentence pairs padded to --seq-len with no attention mask.

Every (engine, repeat) runs in a fresh child process, engines alternating
within a repeat, so peak memory is the engine's own and neither compiled graphs
in memory nor GPU memory carry over (torch's on-disk compile cache may shorten a
later warm-up, which is not timed). Only real (non-padding) tokens count. The table gives
median tokens/s, ratios against the HF Trainer and the seed-style loop, steps/s,
peak memory (RSS on CPU, ``torch.cuda.max_memory_allocated`` on GPU) and, on
GPU, MFU = real tokens/s x model FLOPs per token / peak, where model FLOPs per
token = 6 x non-embedding encoder parameters + 12 x layers x hidden x seq_len,
the same count for every engine (work an engine wastes, such as logits at
unmasked positions or padding, earns nothing).

Without --data the built-in demo corpus is prepared into a temporary folder.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ENGINES = ("ours", "hf", "seed")
LABELS = {"ours": "ours (bertcurve train)", "hf": "HF Trainer", "seed": "seed-style loop"}
# Dense bf16 tensor-core peaks (no sparsity), by device name.
PEAKS = (("H100", 989e12), ("H200", 989e12), ("A100", 312e12))
PROJECT_STUDY = "seed-100k"


# ------------------------------------------------------------------ shared helpers
def flops_per_token(model, seq_len: int) -> float:
    """Model FLOPs per real token: 6 x non-embedding encoder parameters + attention scores."""
    h, f, n = model.hidden_size, model.intermediate_size, model.num_layers
    per_layer = (4 * h * h + 4 * h      # Q, K, V, output projections
                 + 2 * h * f + f + h    # feed-forward
                 + 4 * h)               # two LayerNorms
    return 6.0 * n * per_layer + 12.0 * n * h * seq_len


def peak_flops(device_name: str, override_tflops: float | None) -> tuple[float | None, str]:
    """(peak FLOP/s, where it came from) for MFU; ``None`` when unknown."""
    if override_tflops:
        return override_tflops * 1e12, "--peak-tflops"
    for key, peak in PEAKS:
        if key in device_name:
            return peak, f"{key} dense bf16"
    return None, "unknown"


def _peak_rss_mib() -> float:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 1024  # bytes on macOS, KiB on Linux


def _build_config(args):
    from bertcurve.training.config import build_config

    return build_config(args.preset, overrides={"optim.micro_batch": args.batch,
                                                "optim.grad_accum": args.grad_accum,
                                                "data.seq_len": args.seq_len})


# ------------------------------------------------------------------ engines (child side)
def engine_ours(args, data: Path, workdir: Path) -> dict:
    """The real `bertcurve train`; speed read back from its metrics.jsonl."""
    from bertcurve import layout
    from bertcurve.training.config import SpeedConfig
    from bertcurve.training.metrics_log import read_records
    from bertcurve.stages.train import train

    cfg = _build_config(args)
    max_steps = args.warmup + args.steps
    # Log exactly at the end of warm-up and at the last step (steps is a multiple of warmup).
    # Without --compile one evaluation at the end suffices (the step-0 one already moved the
    # eval set to the device). With --compile the first evaluation after compiling pays for
    # compiling the eval graphs, so one more runs at a log step mid-window: its time is
    # taken out of the window and the final one is warm.
    eval_every = max_steps
    if args.compile:
        eval_every = math.ceil(max_steps / args.warmup / 2) * args.warmup
    overrides = {
        "optim.micro_batch": args.batch, "optim.grad_accum": args.grad_accum,
        "data.seq_len": args.seq_len, "optim.max_steps": max_steps,
        "optim.warmup_steps": min(cfg.optim.warmup_steps, max_steps),  # lr only, not speed
        "eval.log_every": args.warmup, "eval.eval_every": eval_every, "eval.save_every": max_steps,
    }
    if args.eval_tokens:
        overrides["eval.eval_tokens"] = args.eval_tokens
    run_dir = workdir / "run"
    speed = SpeedConfig(device=args.device, dtype=args.dtype, compile=args.compile,
                        threads=args.threads)
    train(data, run_dir, preset=args.preset, overrides=overrides, speed=speed, quiet=True,
          resume="none")
    records = list(read_records(run_dir / layout.METRICS))
    trains = {r["step"]: r for r in records if r.get("split") == "train"}
    evals = [r for r in records if r.get("split") == "eval"]
    first, last = trains[args.warmup], trains[max_steps]
    inside = [e for e in evals if args.warmup <= e["step"] < max_steps]
    seconds = last["elapsed_s"] - first["elapsed_s"] - sum(e["eval_s"] for e in inside)
    tokens = last["tokens_seen"] - first["tokens_seen"]
    final_eval = evals[-1]
    return {"seconds": seconds, "timed_steps": max_steps - args.warmup, "timed_tokens": tokens,
            "eval_s": final_eval["eval_s"], "eval_masked_tokens": final_eval["masked_tokens"],
            "eval_steps": [e["step"] for e in evals], "eval_s_all": [e["eval_s"] for e in evals],
            "eval_subtracted_s": sum(e["eval_s"] for e in inside),
            "eval_tokens_asked": overrides.get("eval.eval_tokens", cfg.eval.eval_tokens),
            "log_every": args.warmup, "eval_every": eval_every}


def _examples(args, cfg, nsp: bool):
    from bertcurve.training.batches import SpecialIds, make_examples
    from bertcurve.data.datadir import DataDir

    dd = DataDir(args.data)
    tok = dd.tokenizer()
    special = SpecialIds.from_tokenizer(tok)
    examples = make_examples(dd.split("train"), seq_len=cfg.data.seq_len, special=special,
                             whole_word=False, nsp=nsp)
    return tok, special, examples


def engine_hf(args, data: Path, workdir: Path) -> dict:
    """transformers.Trainer + DataCollatorForLanguageModeling on our packed sequences."""
    import torch
    from transformers import (DataCollatorForLanguageModeling, Trainer, TrainerCallback,
                              TrainingArguments)

    from bertcurve.training.batches import TrainStream
    from bertcurve.training.model import build_model

    cfg = _build_config(args)
    tok, special, examples = _examples(args, cfg, nsp=False)
    cuda = args.device == "cuda"
    accum, total = args.grad_accum, args.warmup + args.steps
    stream = TrainStream(examples, micro_batch=args.batch, mask_prob=cfg.data.mask_prob, seed=0)
    rows = [{"input_ids": examples.sequence(i)[0].tolist()}
            for k in range(total * accum) for i in stream.example_ids(k)]

    class CountingCollator:
        """Records each micro-batch's real tokens in the order the Trainer draws them."""

        def __init__(self, inner):
            self.inner, self.real = inner, []

        def __call__(self, features):
            self.real.append(sum(len(f["input_ids"]) for f in features))
            return self.inner(features)

    class Timer(TrainerCallback):
        # Window = end of warm-up step to end of last step, like ours' log records.
        def __init__(self):
            self.t0 = self.t1 = None

        def on_step_end(self, args_, state, control, **kw):
            if state.global_step in (args.warmup, total):
                if cuda:
                    torch.cuda.synchronize()
                if state.global_step == args.warmup:
                    self.t0 = time.perf_counter()
                else:
                    self.t1 = time.perf_counter()

    torch.manual_seed(0)
    net = build_model(cfg.model, len(tok), pad_token_id=special.pad)
    timer = Timer()
    targs = TrainingArguments(
        output_dir=str(workdir / "hf"), per_device_train_batch_size=args.batch,
        gradient_accumulation_steps=accum, max_steps=total, learning_rate=cfg.optim.lr,
        weight_decay=cfg.optim.weight_decay, max_grad_norm=cfg.optim.clip or 1.0,
        lr_scheduler_type="constant", logging_strategy="no", save_strategy="no",
        eval_strategy="no", report_to=[], disable_tqdm=True, use_cpu=not cuda,
        bf16=args.dtype == "bf16", torch_compile=args.compile, dataloader_num_workers=0, seed=0,
    )
    collator = CountingCollator(DataCollatorForLanguageModeling(tokenizer=tok,
                                                                mlm_probability=cfg.data.mask_prob))
    trainer = Trainer(model=net, args=targs, train_dataset=rows, data_collator=collator,
                      callbacks=[timer])
    trainer.train()
    tokens = sum(collator.real[args.warmup * accum:total * accum])
    return {"seconds": timer.t1 - timer.t0, "timed_steps": args.steps, "timed_tokens": tokens,
            "hf_optim": getattr(targs.optim, "value", str(targs.optim))}


def engine_seed(args, data: Path, workdir: Path) -> dict:
    """The seed's loop: full-vocabulary fp32 MLM + NSP on padded sentence pairs."""
    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from seed_style import count_parameters, from_model_config, pad_batch, seed_loss

    from bertcurve.training.batches import TrainStream

    cfg = _build_config(args)
    tok, special, examples = _examples(args, cfg, nsp=True)
    device = torch.device(args.device)
    stream = TrainStream(examples, micro_batch=args.batch, mask_prob=cfg.data.mask_prob, seed=0)
    torch.manual_seed(0)
    net = from_model_config(cfg.model, len(tok)).to(device)
    net.train()
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay,
                            fused=False)
    accum, total = args.grad_accum, args.warmup + args.steps
    tokens, t0, running = 0, None, 0.0
    for step in range(total):
        if step == args.warmup:
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
        for j in range(accum):
            # Batches are built in the loop, as with a DataLoader without workers.
            batch = stream.batch(step * accum + j)
            ids, types, labels, nsp = (t.to(device) for t in pad_batch(batch, cfg.data.seq_len,
                                                                       special.pad))
            loss = seed_loss(net, ids, types, labels, nsp) / accum
            loss.backward()
            if step >= args.warmup:
                tokens += batch.n_tokens
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        opt.zero_grad()
        running += loss.item()  # a research loop keeps a running loss for its log lines
    if device.type == "cuda":
        torch.cuda.synchronize()
    return {"seconds": time.perf_counter() - t0, "timed_steps": args.steps, "timed_tokens": tokens,
            "parameters": count_parameters(net)}


def run_child(args) -> dict:
    """One engine, one repeat, in this (fresh) process; returns the raw numbers."""
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    workdir = Path(args.workdir)
    engine = {"ours": engine_ours, "hf": engine_hf, "seed": engine_seed}[args.child]
    out = engine(args, Path(args.data), workdir)
    out["engine"] = args.child
    out["tokens_per_s"] = out["timed_tokens"] / out["seconds"]
    out["steps_per_s"] = out["timed_steps"] / out["seconds"]
    out["peak_rss_mib"] = _peak_rss_mib()
    if args.device == "cuda":
        out["device_name"] = torch.cuda.get_device_name()
        out["peak_cuda_allocated_mib"] = torch.cuda.max_memory_allocated() / 2**20
        out["peak_cuda_reserved_mib"] = torch.cuda.max_memory_reserved() / 2**20
        out["peak_mem_mib"] = out["peak_cuda_allocated_mib"]
    else:
        out["device_name"] = "cpu"
        out["peak_mem_mib"] = out["peak_rss_mib"]
    out["torch_threads"] = torch.get_num_threads()
    return out


# ------------------------------------------------------------------ parent side
_current_child: list[subprocess.Popen] = []
CPU_EVAL_TOKENS = 2_000


def _on_term(signum, frame):
    # `timeout` signals only this process: take the running child (and its GPU memory) along.
    for proc in _current_child:
        proc.kill()
    sys.exit(128 + signum)


def _spawn(args, engine: str, workdir: Path) -> dict:
    argv = [sys.executable, str(Path(__file__).resolve()), "--child", engine,
            "--data", str(args.data), "--preset", args.preset, "--batch", str(args.batch),
            "--seq-len", str(args.seq_len), "--grad-accum", str(args.grad_accum),
            "--device", args.device, "--dtype", args.dtype, "--steps", str(args.steps),
            "--warmup", str(args.warmup), "--threads", str(args.threads),
            "--workdir", str(workdir)]
    if args.compile:
        argv.append("--compile")
    if args.eval_tokens:
        argv += ["--eval-tokens", str(args.eval_tokens)]
    env = dict(os.environ, TOKENIZERS_PARALLELISM="false")
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    started = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE,
                            stderr=None if args.verbose else subprocess.PIPE, text=True, env=env)
    _current_child.append(proc)
    try:
        stdout, stderr = proc.communicate()
    finally:
        _current_child.remove(proc)
    wall = time.perf_counter() - started
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = "\n".join((stderr or "").strip().splitlines()[-15:])
        return {"engine": engine, "error": f"exit {proc.returncode}", "stderr_tail": tail,
                "child_wall_s": wall}
    out = json.loads(lines[-1])
    out["child_wall_s"] = wall
    return out


def _fmt(x: float | None, spec: str, suffix: str = "") -> str:
    return "-" if x is None else format(x, spec) + suffix


def _table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    line = lambda cells: "| " + " | ".join(  # noqa: E731
        c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))) + " |"
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(headers), sep] + [line(r) for r in rows])


def projection(args, summary: dict, ours_runs: list[dict]) -> dict | None:
    """Wall time of a PROJECT_STUDY-length run at the measured speed of ``ours``."""
    from bertcurve.training.config import build_config

    if not ours_runs or "ours" not in summary:
        return None
    study = build_config(PROJECT_STUDY)
    n = args.project_steps or study.optim.max_steps
    tok_s = summary["ours"]["tokens_per_s"]
    tokens_per_step = statistics.median(r["timed_tokens"] / r["timed_steps"] for r in ours_runs)
    eval_s = statistics.median(r["eval_s"] for r in ours_runs)
    masked = statistics.median(r["eval_masked_tokens"] for r in ours_runs)
    # The demo corpus's validation split holds fewer masked tokens than a study's
    # eval_tokens; evaluation time is linear in the set's size, so scale it.
    scale = study.eval.eval_tokens / masked
    n_evals = n // study.eval_every + 1  # + the evaluation at step 0
    train_s = n * tokens_per_step / tok_s
    evals_s = n_evals * eval_s * scale
    return {"study": PROJECT_STUDY, "steps": n, "tokens_per_step": tokens_per_step,
            "tokens_per_s": tok_s, "train_s": train_s, "eval_every": study.eval_every,
            "n_evals": n_evals, "eval_s_measured": eval_s, "eval_masked_tokens_measured": masked,
            "eval_tokens_study": study.eval.eval_tokens, "eval_scale": scale, "evals_s": evals_s,
            "total_s": train_s + evals_s,
            "study_global_batch": study.optim.micro_batch * study.optim.grad_accum,
            "save_every": study.save_every}


def _write_json(args, info: dict, runs: list[dict], **final) -> None:
    """Every raw number so far; rewritten after each run, so a killed benchmark leaves its runs."""
    report = {
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                 if k not in ("child", "workdir")},
        **info, "runs": runs, "complete": bool(final), **final,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.json.with_name(args.json.name + ".tmp")
    tmp.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    tmp.replace(args.json)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Engines, timing windows and the MFU definition: see the module docstring "
               "and docs/PERFORMANCE.md.")
    parser.add_argument("--data", type=Path, default=None, help="prepared data dir (default: demo corpus)")
    parser.add_argument("--preset", default="seed-48m", help="model preset (default seed-48m)")
    parser.add_argument("--batch", type=int, default=None, help="sequences per micro-batch (default: the preset's)")
    parser.add_argument("--seq-len", type=int, default=None, help="sequence length (default: the preset's)")
    parser.add_argument("--grad-accum", type=int, default=None,
                        help="micro-batches per optimizer step (default: the preset's)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: cuda when available")
    parser.add_argument("--dtype", choices=["fp32", "bf16"], default=None,
                        help="default: bf16 on cuda, fp32 on cpu (the seed-style loop is always fp32)")
    parser.add_argument("--compile", action="store_true", help="torch.compile (ours: the encoder; HF: torch_compile)")
    parser.add_argument("--engines", default="ours,hf,seed", help="comma-separated subset of ours,hf,seed")
    parser.add_argument("--steps", type=int, default=4,
                        help="timed optimizer steps per run, rounded up to a multiple of --warmup (default 4)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed optimizer steps first (default 2)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each engine, alternating (default 3)")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch threads (0: 1 for hidden size <= 64 on CPU, as bertcurve train; else torch's default)")
    parser.add_argument("--eval-tokens", type=int, default=0,
                        help=f"ours: masked tokens of the held-out set (default: the preset's; "
                             f"at most {CPU_EVAL_TOKENS:,} on CPU)")
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="peak TFLOP/s for MFU (default: 989 for H100/H200, 312 for A100)")
    parser.add_argument("--project-steps", type=int, default=0,
                        help=f"project the wall time of this many steps (default: {PROJECT_STUDY}'s "
                             "length when the preset is seed-48m, else no projection)")
    parser.add_argument("--json", type=Path, default=None, help="write every raw number here")
    parser.add_argument("--verbose", action="store_true", help="show the child processes' stderr")
    parser.add_argument("--child", choices=ENGINES, help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        print(json.dumps(run_child(args)), flush=True)
        return 0

    import torch

    from bertcurve.training.config import build_config

    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    bad = [e for e in engines if e not in ENGINES]
    if bad or not engines:
        parser.error(f"--engines: unknown {bad}; choose from {','.join(ENGINES)}")
    if args.warmup < 1 or args.steps < 1 or args.repeats < 1:
        parser.error("--warmup, --steps and --repeats must be >= 1")
    if args.eval_tokens < 0:
        parser.error("--eval-tokens must be >= 1 (or 0 for the default)")
    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA GPU is available")
    args.dtype = args.dtype or ("bf16" if args.device == "cuda" else "fp32")
    preset_cfg = build_config(args.preset)
    args.batch = args.batch or preset_cfg.optim.micro_batch
    args.grad_accum = args.grad_accum or preset_cfg.optim.grad_accum
    args.seq_len = args.seq_len or preset_cfg.data.seq_len
    shipped = (preset_cfg.optim.micro_batch, preset_cfg.optim.grad_accum, preset_cfg.data.seq_len)
    if (args.batch, args.grad_accum, args.seq_len) != shipped:
        # A number measured at another shape is not the preset's speed: say so up front.
        print(f"NOTE: measuring micro-batch {args.batch} x grad-accum {args.grad_accum}, seq {args.seq_len}; "
              f"the {args.preset} preset as shipped trains micro-batch {shipped[0]} x grad-accum "
              f"{shipped[1]}, seq {shipped[2]}", flush=True)
    from bertcurve.errors import UserError

    try:
        cfg = _build_config(args)
    except UserError as exc:
        parser.error(str(exc))
    if not args.threads and args.device == "cpu" and cfg.model.hidden_size <= 64:
        args.threads = 1  # what `bertcurve train` picks for tiny models, for every engine alike
    if not args.eval_tokens and args.device == "cpu":
        # A full-size held-out set (60,000 masked tokens) takes minutes per evaluation on a
        # CPU; the evaluation only feeds the projection, which scales its time linearly.
        args.eval_tokens = min(CPU_EVAL_TOKENS, cfg.eval.eval_tokens)
    asked_steps = args.steps
    args.steps = math.ceil(args.steps / args.warmup) * args.warmup
    device_name, peak, peak_src = "cpu", None, ""
    if args.device == "cuda":
        # Asked in a child so that this process holds no CUDA context (GPU memory) meanwhile.
        device_name = subprocess.run(
            [sys.executable, "-c", "import torch; print(torch.cuda.get_device_name())"],
            capture_output=True, text=True, check=True).stdout.strip()
        peak, peak_src = peak_flops(device_name, args.peak_tflops)
        if peak is None:
            parser.error(f"MFU needs the GPU's peak: {device_name!r} is not known; pass --peak-tflops")
    fpt = flops_per_token(cfg.model, args.seq_len)
    do_project = "ours" in engines and (args.project_steps or args.preset == "seed-48m")

    prev_term = signal.signal(signal.SIGTERM, _on_term)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    try:
        with tempfile.TemporaryDirectory(prefix="bertcurve-bench-") as tmp:
            if args.data is None:
                from bertcurve.stages.prepare import prepare

                args.data = prepare(["demo"], Path(tmp) / "data", progress=False)
            args.data = Path(args.data).resolve()
            from bertcurve.data.datadir import DataDir

            vocab = DataDir(args.data).vocab_size
            m = cfg.model
            print(f"preset {args.preset}: hidden {m.hidden_size} x {m.num_layers} layers, "
                  f"{m.num_heads} heads, FFN {m.intermediate_size}, vocab {vocab:,} (data {args.data})")
            print(f"batch {args.batch} x grad-accum {args.grad_accum}, seq {args.seq_len}, "
                  f"device {args.device} ({device_name}), dtype {args.dtype}"
                  f"{' (seed-style loop: fp32)' if args.dtype != 'fp32' and 'seed' in engines else ''}, "
                  f"compile {'on' if args.compile else 'off'}, threads "
                  f"{args.threads or 'default'}, torch {torch.__version__}")
            note = (f" (rounded up from {asked_steps} to a multiple of --warmup, so that `ours` logs "
                    "exactly at the end of warm-up and at the last step)" if args.steps != asked_steps else "")
            print(f"{args.warmup} warm-up + {args.steps} timed optimizer steps{note}, "
                  f"{args.repeats} repeat(s), engines {','.join(engines)}", flush=True)

            info = {"steps_asked": asked_steps, "vocab_size": vocab, "device_name": device_name,
                    "torch": torch.__version__, "flops_per_token": fpt, "peak_flops": peak,
                    "peak_source": peak_src}
            runs: list[dict] = []
            for r in range(args.repeats):
                order = engines[r % len(engines):] + engines[:r % len(engines)]  # none always first
                parts = []
                for engine in order:
                    with tempfile.TemporaryDirectory(prefix=f"{engine}-", dir=tmp) as wd:
                        res = _spawn(args, engine, Path(wd))
                    res["repeat"] = r + 1
                    runs.append(res)
                    if args.json:
                        _write_json(args, info, runs)
                    if "error" in res:
                        parts.append(f"{engine} FAILED ({res['error']})")
                        print(f"  {engine} failed, repeat {r + 1}:\n{res['stderr_tail']}", file=sys.stderr)
                    else:
                        parts.append(f"{engine} {res['tokens_per_s']:,.0f} tok/s "
                                     f"{res['steps_per_s']:.3g} steps/s {res['peak_mem_mib']:,.0f} MiB")
                print(f"  repeat {r + 1}: " + " | ".join(parts), flush=True)
    finally:
        signal.signal(signal.SIGTERM, prev_term)

    summary: dict[str, dict] = {}
    for engine in engines:
        ok = [x for x in runs if x["engine"] == engine and "error" not in x]
        if ok:
            tok_s = statistics.median(x["tokens_per_s"] for x in ok)
            summary[engine] = {
                "tokens_per_s": tok_s, "steps_per_s": statistics.median(x["steps_per_s"] for x in ok),
                "peak_mem_mib": max(x["peak_mem_mib"] for x in ok), "runs": len(ok),
                "mfu": tok_s * fpt / peak if peak else None,
            }
    mem_head = "peak GPU MiB (allocated)" if args.device == "cuda" else "peak RSS MiB"
    headers = ["engine", "median real tok/s", "vs HF Trainer", "vs seed-style", "steps/s", mem_head,
               "MFU"]
    rows = []
    for engine in engines:
        s = summary.get(engine)
        if s is None:
            rows.append([LABELS[engine], "failed", "-", "-", "-", "-", "-"])
            continue
        ratio = lambda base: (s["tokens_per_s"] / summary[base]["tokens_per_s"]  # noqa: E731
                              if base in summary else None)
        rows.append([LABELS[engine], f"{s['tokens_per_s']:,.0f}", _fmt(ratio("hf"), ".2f", "x"),
                     _fmt(ratio("seed"), ".2f", "x"), f"{s['steps_per_s']:.3g}",
                     f"{s['peak_mem_mib']:,.0f}", _fmt(s["mfu"] and 100 * s["mfu"], ".1f", " %")])
    print()
    print(_table(headers, rows))
    if peak:
        print(f"MFU: real tokens/s x {fpt / 1e6:,.1f} MFLOP/token (6 x non-embedding encoder "
              f"parameters + 12 x layers x hidden x seq) / {peak / 1e12:,.0f} TFLOP/s ({peak_src}, "
              f"{device_name}); the same yardstick for every engine, the fp32 seed-style loop included")
    if args.device == "cpu" and hasattr(os, "getloadavg"):
        print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs at the end "
              "(wall-clock figures are inflated when it exceeds the threads used)")

    proj = None
    if do_project:
        proj = projection(args, summary, [x for x in runs if x["engine"] == "ours" and "error" not in x])
    if proj:
        batch_note = ""
        if args.batch * args.grad_accum != proj["study_global_batch"]:
            batch_note = (f"; NB measured at a global batch of {args.batch * args.grad_accum} sequences, "
                          f"the study uses {proj['study_global_batch']}")
        scaled = (f", measured {proj['eval_s_measured']:.2f} s on {proj['eval_masked_tokens_measured']:,.0f} "
                  f"masked tokens, scaled to the study's {proj['eval_tokens_study']:,}"
                  if abs(proj["eval_scale"] - 1) > 1e-9 else "")
        print(f"projection (ours, {proj['steps']:,} steps with {PROJECT_STUDY}'s evaluations): {proj['steps']:,} x "
              f"{proj['tokens_per_step']:,.0f} real tokens/step / {proj['tokens_per_s']:,.0f} tok/s = "
              f"{proj['train_s'] / 60:,.1f} min training + {proj['n_evals']} evaluations x "
              f"{proj['evals_s'] / proj['n_evals']:.2f} s{scaled} = {proj['evals_s'] / 60:,.1f} min "
              f"-> {proj['total_s'] / 60:,.1f} min; checkpoint writes (every "
              f"{proj['save_every']:,} steps) not included{batch_note}")
    if args.json:
        _write_json(args, info, runs, summary=summary, projection=proj)
        print(f"raw numbers: {args.json}")
    return 0 if len(summary) == len(engines) else 1


if __name__ == "__main__":
    sys.exit(main())
