"""Training throughput: bertcurve's trainer vs a Hugging Face Trainer baseline.

Both train the same ``BertForMaskedLM`` config (SDPA attention, fp32 on CPU)
on the same packed sequences of a prepared data dir, with the same batch and
sequence length, one optimizer step per batch. The baseline is
``transformers.Trainer`` + ``DataCollatorForLanguageModeling`` (full
vocabulary logits at every position); ours is the training step of
``bertcurve train`` (vocabulary projection only at masked positions, fused
AdamW, no padding). Runs alternate back to back in one process; the script
prints the median real (non-padding) tokens per second of each and the ratio.

    python bench/train_throughput.py --data DATA_DIR --preset seed-48m --batch 32 --seq-len 128
    python bench/train_throughput.py --data DATA_DIR --preset demo
    python bench/train_throughput.py --data DATA_DIR --preset tiny

Without --data the built-in demo corpus is prepared into a temporary folder.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch


def _setup(data: Path, preset: str, batch: int, seq_len: int | None):
    from bertcurve.batches import SpecialIds, TrainStream, make_examples
    from bertcurve.config import build_config
    from bertcurve.datadir import DataDir

    overrides = {"micro_batch": batch, "grad_accum": 1}
    if seq_len:
        overrides["seq_len"] = seq_len
    cfg = build_config(preset, overrides=overrides)
    dd = DataDir(data)
    tok = dd.tokenizer()
    special = SpecialIds.from_tokenizer(tok)
    examples = make_examples(dd.split("train"), seq_len=cfg.data.seq_len, special=special,
                             whole_word=False, nsp=False)
    stream = TrainStream(examples, micro_batch=batch, mask_prob=cfg.data.mask_prob, seed=0)
    return cfg, tok, special, examples, stream


def run_ours(cfg, tok, special, stream, steps: int, warmup: int) -> float:
    from bertcurve.model import build_model, forward, param_groups

    torch.manual_seed(0)
    net = build_model(cfg.model, len(tok), pad_token_id=special.pad)
    net.train()
    opt = torch.optim.AdamW(param_groups(net, cfg.optim.weight_decay), lr=1e-4, fused=True)
    tokens = 0
    started = None
    for k in range(warmup + steps):
        if k == warmup:
            started = time.perf_counter()
        batch = stream.batch(k)  # masking is part of our step, as in `bertcurve train`
        out = forward(net, batch)
        (out.mlm_loss_sum / out.n_masked).backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if k >= warmup:
            tokens += batch.n_tokens
    return tokens / (time.perf_counter() - started)


def run_hf(cfg, tok, special, examples, stream, steps: int, warmup: int, workdir: Path) -> float:
    from transformers import (DataCollatorForLanguageModeling, Trainer, TrainerCallback,
                              TrainingArguments)

    from bertcurve.model import build_model

    n = (warmup + steps) * stream.micro_batch
    rows = [{"input_ids": examples.sequence(i)[0].tolist()}
            for k in range(warmup + steps) for i in stream.example_ids(k)][:n]

    class Timer(TrainerCallback):
        def __init__(self):
            self.t0 = None
            self.t1 = None

        def on_step_begin(self, args, state, control, **kw):
            if state.global_step == warmup and self.t0 is None:
                self.t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            if state.global_step == warmup + steps:
                self.t1 = time.perf_counter()

    torch.manual_seed(0)
    net = build_model(cfg.model, len(tok), pad_token_id=special.pad)
    timer = Timer()
    args = TrainingArguments(
        output_dir=str(workdir), per_device_train_batch_size=stream.micro_batch,
        gradient_accumulation_steps=1, max_steps=warmup + steps, learning_rate=1e-4,
        weight_decay=cfg.optim.weight_decay, max_grad_norm=1.0, lr_scheduler_type="constant",
        logging_strategy="no", save_strategy="no", eval_strategy="no", report_to=[],
        disable_tqdm=True, use_cpu=not torch.cuda.is_available(), dataloader_num_workers=0,
        seed=0,
    )
    collator = DataCollatorForLanguageModeling(tokenizer=tok, mlm_probability=cfg.data.mask_prob)
    trainer = Trainer(model=net, args=args, train_dataset=rows, data_collator=collator,
                      callbacks=[timer])
    trainer.train()
    real_tokens = sum(len(r["input_ids"]) for r in rows[warmup * stream.micro_batch:])
    return real_tokens / (timer.t1 - timer.t0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=None, help="prepared data dir (default: demo corpus)")
    parser.add_argument("--preset", default="seed-48m", help="model preset (default seed-48m)")
    parser.add_argument("--batch", type=int, default=32, help="sequences per step (default 32)")
    parser.add_argument("--seq-len", type=int, default=128, help="sequence length (default 128)")
    parser.add_argument("--steps", type=int, default=4, help="timed steps per run (default 4)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first (default 1)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each, alternating (default 3)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data
        if data is None:
            from bertcurve.stages.prepare import prepare

            data = prepare(["demo"], Path(tmp) / "data", progress=False)
        cfg, tok, special, examples, stream = _setup(data, args.preset, args.batch, args.seq_len)
        print(f"preset {args.preset}: hidden {cfg.model.hidden_size} x {cfg.model.num_layers} layers, "
              f"vocab {len(tok)}, batch {args.batch}, seq {cfg.data.seq_len}, "
              f"{args.steps} timed steps, torch threads {torch.get_num_threads()}", flush=True)
        ours, hf = [], []
        for r in range(args.repeats):
            hf.append(run_hf(cfg, tok, special, examples, stream, args.steps, args.warmup,
                             Path(tmp) / f"hf{r}"))
            ours.append(run_ours(cfg, tok, special, stream, args.steps, args.warmup))
            print(f"  repeat {r + 1}: HF Trainer {hf[-1]:,.0f} tok/s, bertcurve {ours[-1]:,.0f} tok/s",
                  flush=True)
        mo, mh = statistics.median(ours), statistics.median(hf)
        print(f"median real tokens/s: bertcurve {mo:,.0f}  HF Trainer {mh:,.0f}  ratio {mo / mh:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
