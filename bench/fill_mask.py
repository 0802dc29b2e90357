"""Fill-mask speed: bertcurve.fill_mask against transformers.pipeline("fill-mask").

Same model, same inputs: N real held-out sentences of a prepared data dir, one
[MASK] each (a random non-[UNK] character, seeded). The pipeline is called the
way users usually call it: ``pipeline("fill-mask", model=..., tokenizer=...)``
then ``fill(list_of_sentences)`` with default settings. Ours: ``fill_mask(lm,
sentences)`` with default settings (length-bucketed batches, inference mode,
output layer only at the masks). Ours and the pipeline alternate within each
repeat so background load hits both alike; medians are quoted.

Also: single-sentence latency, int8 dynamic quantization (speed, and held-out
top-1 accuracy change with ~15 % of the characters of every validation
sentence masked, paired standard error), and the top-1 agreement of ours with
the pipeline (a correctness check: should be 100 %).

    python bench/fill_mask.py --data DATA_DIR [--demo-model RUN_OR_MODEL] [--sizes demo seed-48m]

Without --data the built-in demo corpus is prepared into ~/.cache/bertcurve/bench-demo-data.
Without --demo-model (or --seed-model) the model has the preset's shape and
random weights: fine for speed, meaningless for accuracy.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch


def val_sentences(data_dir: Path, max_tokens: int) -> list[list[str]]:
    """Held-out sentences as lists of characters (tokens), those that fit the model."""
    from bertcurve.data.datadir import DataDir

    data = DataDir(data_dir)
    vocab = [line.rstrip("\n") for line in open(data.path / "vocab.txt", encoding="utf-8")]
    split = data.split("val")
    out = []
    for i in range(split.n_sentences):
        ids = split.sentence(i)
        if 0 < len(ids) <= max_tokens:
            out.append([vocab[int(t)] for t in ids])
    return out


def mask_one(sentences: list[list[str]], n: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """``n`` texts with one [MASK] each (at a random non-[UNK] character) and the hidden characters."""
    rng = np.random.default_rng(seed)
    texts, answers = [], []
    for chars in sentences[:n]:
        ok = [i for i, c in enumerate(chars) if c != "[UNK]"]
        i = int(rng.choice(ok))
        texts.append("".join(chars[:i]) + "[MASK]" + "".join(chars[i + 1:]))
        answers.append(chars[i])
    return texts, answers


def mask_many(sentences: list[list[str]], prob: float = 0.15, seed: int = 1) -> tuple[list[str], list[list[str]]]:
    """Every sentence with ``prob`` of its characters masked (at least one): an MLM eval set."""
    rng = np.random.default_rng(seed)
    texts, answers = [], []
    for chars in sentences:
        ok = [i for i, c in enumerate(chars) if c != "[UNK]"]
        k = max(1, int(round(prob * len(chars))))
        pos = set(int(i) for i in rng.choice(ok, size=min(k, len(ok)), replace=False))
        texts.append("".join("[MASK]" if i in pos else c for i, c in enumerate(chars)))
        answers.append([chars[i] for i in sorted(pos)])
    return texts, answers


def top1_hits(results, answers) -> np.ndarray:
    return np.array([m.best.token == a for r, ans in zip(results, answers) for m, a in zip(r.masks, ans)], float)


def load_model(size: str, model_path: str | None, data_dir: Path):
    """(MaskedLM, description): a trained model if given, else the preset's shape with random weights."""
    from bertcurve.inference import load_masked_lm, wrap_model

    if model_path:
        lm = load_masked_lm(model_path, device="cpu")
        return lm, f"trained model {model_path} (step {lm.step})"
    from transformers import AutoTokenizer, BertForMaskedLM

    from bertcurve.training.config import build_config
    from bertcurve.training.model import bert_config

    tok = AutoTokenizer.from_pretrained(str(data_dir))
    cfg = build_config(preset=size).model
    torch.manual_seed(0)
    net = BertForMaskedLM(bert_config(cfg, len(tok)))
    return wrap_model(net, tok, f"{size} (random init)"), f"preset {size}, random init"


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def bench_size(size: str, model_path: str | None, data_dir: Path, n: int, repeats: int,
               latency_n: int, do_int8: bool, eval_sentences: int | None = None) -> dict:
    import copy

    from transformers import pipeline
    from transformers.utils import logging as hf_logging

    from bertcurve.stages.fillmask import fill_mask
    from bertcurve.inference import quantize_int8, wrap_model

    hf_logging.set_verbosity_error()
    lm, what = load_model(size, model_path, data_dir)
    net, tok = lm.model, lm.tokenizer
    n_params = sum(p.numel() for p in {id(p): p for p in net.parameters()}.values())
    sents = val_sentences(data_dir, lm.max_length - 2)
    texts, answers = mask_one(sents, n)
    n_tokens = sum(len(t) - 5 for t in texts)  # characters; [MASK] counts as one
    print(f"\n== {size}: {what}, {n_params / 1e6:.2f}M parameters, {len(texts)} sentences, "
          f"mean {n_tokens / len(texts):.1f} characters", flush=True)

    fill = pipeline("fill-mask", model=net, tokenizer=tok, device="cpu")
    # warm-up (first calls allocate)
    fill(texts[:8])
    fill_mask(lm, texts[:64])

    ours_t, pipe_t = [], []
    for r in range(repeats):
        ours_t.append(timed(lambda: fill_mask(lm, texts)))
        pipe_t.append(timed(lambda: fill(texts)))
        print(f"  repeat {r + 1}: ours {ours_t[-1]:.2f} s, pipeline {pipe_t[-1]:.2f} s", flush=True)
    ours_res = fill_mask(lm, texts)
    pipe_res = fill(texts)
    agree = np.mean([o.masks[0].best.token_id == p[0]["token"] for o, p in zip(ours_res, pipe_res)])

    lat_texts = texts[:latency_n]
    lat_ours = [timed(lambda t=t: fill_mask(lm, [t])) for t in lat_texts]
    lat_pipe = [timed(lambda t=t: fill(t)) for t in lat_texts]

    row = {
        "size": size, "model": what, "parameters": n_params, "sentences": len(texts),
        "threads": torch.get_num_threads(),
        "ours_s": statistics.median(ours_t), "pipeline_s": statistics.median(pipe_t),
        "ours_sentences_per_s": len(texts) / statistics.median(ours_t),
        "pipeline_sentences_per_s": len(texts) / statistics.median(pipe_t),
        "speedup": statistics.median(pipe_t) / statistics.median(ours_t),
        "top1_agreement_with_pipeline": float(agree),
        "latency_ours_ms": 1000 * statistics.median(lat_ours),
        "latency_pipeline_ms": 1000 * statistics.median(lat_pipe),
        "one_mask_top1_accuracy": float(top1_hits(ours_res, [[a] for a in answers]).mean()),
    }
    print(f"  ours {row['ours_sentences_per_s']:.1f} sent/s, pipeline {row['pipeline_sentences_per_s']:.1f} "
          f"sent/s: {row['speedup']:.2f}x (median of {repeats}); top-1 agreement {agree:.1%}")
    print(f"  single-sentence latency (median of {len(lat_texts)}): ours {row['latency_ours_ms']:.1f} ms, "
          f"pipeline {row['latency_pipeline_ms']:.1f} ms")

    if do_int8:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            qlm = wrap_model(quantize_int8(copy.deepcopy(net)), tok, f"{size} int8", quantize=None)
        fill_mask(qlm, texts[:64])
        q_t, f_t = [], []
        for _ in range(repeats):
            q_t.append(timed(lambda: fill_mask(qlm, texts)))
            f_t.append(timed(lambda: fill_mask(lm, texts)))
        row.update({
            "int8_ours_sentences_per_s": len(texts) / statistics.median(q_t),
            "int8_speedup_over_fp32_ours": statistics.median(f_t) / statistics.median(q_t),
            "int8_speedup_over_pipeline": statistics.median(pipe_t) / statistics.median(q_t),
        })
        print(f"  int8: {row['int8_ours_sentences_per_s']:.1f} sent/s = {row['int8_speedup_over_fp32_ours']:.2f}x "
              f"ours fp32, {row['int8_speedup_over_pipeline']:.2f}x pipeline")
        if eval_sentences != 0:
            eval_texts, eval_answers = mask_many(sents[:eval_sentences])
            res_fp, res_q = fill_mask(lm, eval_texts), fill_mask(qlm, eval_texts)
            hits_fp, hits_q = top1_hits(res_fp, eval_answers), top1_hits(res_q, eval_answers)
            same = np.array([a.best.token_id == b.best.token_id for x, y in zip(res_fp, res_q)
                             for a, b in zip(x.masks, y.masks)], float)
            diff = hits_q - hits_fp
            row.update({
                "eval_masked_characters": int(len(hits_fp)),
                "eval_top1_accuracy_fp32": float(hits_fp.mean()),
                "eval_top1_accuracy_int8": float(hits_q.mean()),
                "eval_accuracy_change_int8": float(diff.mean()),
                "eval_accuracy_change_int8_se": float(diff.std(ddof=1) / np.sqrt(len(diff))),
                "int8_top1_agreement_with_fp32": float(same.mean()),
            })
            print(f"  held-out top-1 accuracy on {len(hits_fp):,} masked characters: fp32 "
                  f"{hits_fp.mean():.2%}, int8 {hits_q.mean():.2%}, change {100 * diff.mean():+.2f} "
                  f"± {100 * row['eval_accuracy_change_int8_se']:.2f} points (paired SE); "
                  f"int8 and fp32 agree on {same.mean():.1%} of top-1 predictions")
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, help="prepared data dir (default: prepare the demo corpus)")
    ap.add_argument("--sizes", nargs="+", default=["demo", "seed-48m"], help="training presets to bench")
    ap.add_argument("--demo-model", help="trained run dir / model dir for the demo size")
    ap.add_argument("--seed-model", help="trained run dir / model dir for the seed-48m size")
    ap.add_argument("--sentences", type=int, default=1000, help="held-out sentences, one mask each")
    ap.add_argument("--repeats", type=int, default=3, help="timed repeats (median quoted)")
    ap.add_argument("--latency", type=int, default=30, help="sentences for single-sentence latency")
    ap.add_argument("--no-int8", action="store_true", help="skip the int8 measurements")
    ap.add_argument("--eval-sentences", type=int, default=None,
                    help="validation sentences (15 %% masked) for the int8 accuracy change (default all; 0 skips)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    ap.add_argument("--json-out", type=Path, help="also write the results as JSON here")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    data = args.data
    if data is None:
        from bertcurve.stages.prepare import prepare

        data = prepare(["demo"], Path.home() / ".cache" / "bertcurve" / "bench-demo-data", progress=False)
    models = {"demo": args.demo_model, "seed-48m": args.seed_model}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, data {data}")
    rows = [bench_size(size, models.get(size), Path(data), args.sentences, args.repeats, args.latency,
                       not args.no_int8, args.eval_sentences) for size in args.sizes]
    if args.json_out:
        args.json_out.write_text(json.dumps(rows, indent=1) + "\n", encoding="utf-8")
    print("\nsize      ours sent/s  pipeline sent/s  speedup  latency ours/pipe ms  int8 sent/s  int8 acc change")
    for r in rows:
        q = f"{r['int8_ours_sentences_per_s']:11.1f}" if "int8_ours_sentences_per_s" in r else ""
        if "eval_accuracy_change_int8" in r:
            q += f"  {100 * r['eval_accuracy_change_int8']:+.2f}±{100 * r['eval_accuracy_change_int8_se']:.2f} pt"
        print(f"{r['size']:<9} {r['ours_sentences_per_s']:11.1f}  {r['pipeline_sentences_per_s']:15.1f}  "
              f"{r['speedup']:6.2f}x  {r['latency_ours_ms']:8.1f} / {r['latency_pipeline_ms']:<8.1f}  {q}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
