"""Benchmark `bertcurve prepare` against the ecosystem's usual way, on the same input.

    python bench/prepare.py [--input ../shared/corpus/modern_vernacular_lines.txt] [--repeats 1]
    python bench/prepare.py --lines 100000      # both variants on the first 100k lines (faster)
    python bench/prepare.py --skip-baseline     # bertcurve prepare only
    python bench/prepare.py --tokenizers char wordpiece --skip-baseline   # char vs WordPiece (the default pair)

Runs, each in a fresh subprocess so peak RSS is that run's own:

1. ``bertcurve.stages.prepare`` on the input (cleaning, sentence splitting, dedup,
   split, vocabulary, tokenization, card), forced (no cache), once per
   ``--tokenizers`` entry (``char``: the numpy code-point table; ``wordpiece``/``bpe``:
   a vocabulary of ``--vocab-size`` trained with Hugging Face ``tokenizers`` on the
   train split, then batched Rust encoding), so char and WordPiece are compared
   back to back on the same input;
2. the usual way: ``datasets.load_dataset("text")`` + ``Dataset.map`` with the
   fast tokenizer that run 1 saved (``batched=True``), which only tokenizes
   raw lines: no cleaning, splitting, dedup or statistics.

Prints wall time, lines/s, CPU seconds and peak RSS of each, their ratios
(median over --repeats), and checks the floors of this project on the full
file (<= 120 s, <= 2 GB RSS). On a shared, overloaded machine compare CPU
seconds: wall times then mostly measure the other processes.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DEFAULT_INPUT = Path(__file__).resolve().parents[2] / "shared" / "corpus" / "modern_vernacular_lines.txt"
FLOOR_SECONDS = 120.0
FLOOR_RSS_MB = 2048.0


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def child_ours(path: str, out: str, tokenizer: str = "char", vocab_size: int | None = None) -> dict:
    from bertcurve.stages.prepare import prepare

    start, cpu = time.perf_counter(), _cpu_seconds()
    prepare([path], out, force=True, progress=False, tokenizer=tokenizer,
            vocab_size=vocab_size if tokenizer in ("wordpiece", "bpe") else None)
    return {"seconds": time.perf_counter() - start, "cpu_s": _cpu_seconds() - cpu, "rss_mb": _peak_rss_mb()}


def child_datasets(path: str, tokenizer_dir: str) -> dict:
    import datasets
    from transformers import AutoTokenizer

    datasets.disable_progress_bars()
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    with tempfile.TemporaryDirectory() as cache:
        start, cpu = time.perf_counter(), _cpu_seconds()
        ds = datasets.load_dataset("text", data_files=[path], split="train", cache_dir=cache)
        ds = ds.map(lambda b: tok(b["text"], add_special_tokens=False), batched=True, batch_size=1000,
                    remove_columns=["text"])
        n_tokens = sum(len(x) for x in ds.with_format("numpy")["input_ids"])
        seconds = time.perf_counter() - start
    return {"seconds": seconds, "cpu_s": _cpu_seconds() - cpu, "rss_mb": _peak_rss_mb(), "tokens": int(n_tokens)}


def _run_child(*args: str, vocab_size: int = 30_000) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--child", *args, "--vocab-size", str(vocab_size)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"benchmark child failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", default=str(DEFAULT_INPUT), help="plain-text corpus, one document per line")
    parser.add_argument("--repeats", type=int, default=1, help="runs of each variant (median reported)")
    parser.add_argument("--lines", type=int, default=None,
                        help="benchmark both on the first N lines only (the baseline takes minutes on the full file)")
    parser.add_argument("--skip-baseline", action="store_true", help="time bertcurve prepare only")
    parser.add_argument("--tokenizers", nargs="+", default=["char", "wordpiece"],
                        help="prepare --tokenizer variants to time (default: char wordpiece)")
    parser.add_argument("--vocab-size", type=int, default=30_000, help="vocabulary of wordpiece/bpe runs")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, a, b = args.child
        if kind.startswith("ours:"):
            result = child_ours(a, b, kind.split(":")[1], args.vocab_size)
        else:
            result = child_datasets(a, b)
        print(json.dumps(result))
        return 0
    path = Path(args.input)
    if not path.is_file():
        sys.exit(f"input not found: {path} (pass --input)")
    with tempfile.TemporaryDirectory() as tmp:
        if args.lines:
            sliced = Path(tmp) / f"first_{args.lines}{path.suffix}"
            with open(path, "rb") as src, open(sliced, "wb") as dst:
                for _, line in zip(range(args.lines), src):
                    dst.write(line)
            path = sliced
        with open(path, "rb") as handle:
            n_lines = sum(chunk.count(b"\n") for chunk in iter(lambda: handle.read(1 << 20), b""))
        print(f"input: {args.input}{f' (first {args.lines:,} lines)' if args.lines else ''} "
              f"({path.stat().st_size / 1e6:.1f} MB, {n_lines:,} lines); load average {os.getloadavg()[0]:.1f}",
              flush=True)
        out = str(Path(tmp) / "data")
        ours: dict[str, list[dict]] = {t: [] for t in args.tokenizers}
        metas: dict[str, dict] = {}
        base = []
        for _ in range(args.repeats):  # interleaved, so load changes hit every variant alike
            for tok in args.tokenizers:
                ours[tok].append(_run_child(f"ours:{tok}", str(path), out, vocab_size=args.vocab_size))
                print(f"  prepare --tokenizer {tok}: {ours[tok][-1]}", flush=True)
                metas[tok] = json.loads((Path(out) / "meta.json").read_text(encoding="utf-8"))
                if tok == args.tokenizers[0] and not args.skip_baseline:
                    # the baseline tokenizes with the first variant's saved tokenizer
                    base.append(_run_child("datasets", str(path), out))
                    print(f"  datasets run: {base[-1]}", flush=True)
    summary = {}
    for tok, runs in ours.items():
        meta = metas[tok]
        t, cpu, rss = (statistics.median(r["seconds"] for r in runs), statistics.median(r["cpu_s"] for r in runs),
                       max(r["rss_mb"] for r in runs))
        summary[tok] = (t, cpu, rss)
        print(f"prepare --tokenizer {tok:9s}: {t:7.1f} s  {n_lines / t:10,.0f} lines/s  CPU {cpu:6.1f} s"
              f"  peak RSS {rss:6.0f} MB  ({meta['sentences_kept']:,} sentences, "
              f"{meta['splits']['train']['tokens'] + meta['splits']['val']['tokens']:,} tokens kept, "
              f"vocabulary {meta['vocab_size']:,}, ids {meta.get('id_dtype', 'uint16')})")
    first = args.tokenizers[0]
    for tok in args.tokenizers[1:]:
        (t, cpu, rss), (t0, cpu0, rss0) = summary[tok], summary[first]
        print(f"ratio ({tok} / {first}): wall {t / t0:.2f}x, CPU {cpu / cpu0:.2f}x, peak RSS {rss / rss0:.2f}x")
    t_ours, cpu_ours, rss_ours = summary[first]
    if base:
        t_base = statistics.median(r["seconds"] for r in base)
        cpu_base = statistics.median(r["cpu_s"] for r in base)
        rss_base = max(r["rss_mb"] for r in base)
        print(f"datasets.map + fast tok: {t_base:7.1f} s  {n_lines / t_base:10,.0f} lines/s  CPU {cpu_base:6.1f} s"
              f"  peak RSS {rss_base:6.0f} MB  ({base[0]['tokens']:,} tokens, raw lines, no cleaning)")
        print(f"ratio (prepare {first} / datasets.map): wall {t_ours / t_base:.2f}x, CPU {cpu_ours / cpu_base:.2f}x, "
              f"peak RSS {rss_ours / rss_base:.2f}x")
    load = os.getloadavg()[0]
    if load > (os.cpu_count() or 1):
        print(f"note: load average {load:.1f} on {os.cpu_count()} CPUs - wall times are inflated; "
              "compare CPU seconds")
    ok = all(t <= FLOOR_SECONDS and rss <= FLOOR_RSS_MB for t, _, rss in summary.values())
    print(f"floors (<= {FLOOR_SECONDS:.0f} s, <= {FLOOR_RSS_MB:.0f} MB): {'met' if ok else 'NOT MET'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
