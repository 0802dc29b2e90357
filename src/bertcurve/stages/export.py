"""Export a run as a Hugging Face model directory with a model card.

    bertcurve export runs/demo --out exported/demo-zh-bert
    bertcurve export runs/demo --out exported/step-600 --step 600

The result holds config.json, model.safetensors, the tokenizer files and a
README.md model card (data set, steps, held-out accuracy with its standard
error, a one-line learning-curve summary, how to load it). It loads offline
with ``transformers.pipeline("fill-mask", model=DIR)`` and with
``bertcurve fill-mask DIR``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bertcurve import __version__, layout
from bertcurve.errors import UserError
from bertcurve.fsutil import guard_output_dir, read_json, staged_directory, write_json
from bertcurve.inference import load_masked_lm
from bertcurve.training.config import load_run_config

EXPORT_INFO = layout.EXPORT_INFO
EXPORT_FORMAT = layout.EXPORT_FORMAT
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", layout.VOCAB_TXT)


# ----------------------------------------------------------- metrics summary
@dataclass(frozen=True)
class EvalPoint:
    """One held-out evaluation of a run."""

    step: int
    mlm_accuracy: float
    mlm_accuracy_se: float | None
    masked_tokens: int | None
    loss: float | None
    mlm_top5_accuracy: float | None


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """The lines of a run's metrics.jsonl; a torn last line (run in progress) is skipped."""
    path = Path(run_dir) / layout.METRICS
    if not path.is_file():
        return []
    from bertcurve.curves.logs import capped_lines, check_text_file

    check_text_file(path)  # a binary or zero-filled file: one line, without reading it
    rows: list[dict[str, Any]] = []
    bad: int | None = None
    with open(path, "rb") as handle:  # streamed: memory follows the records, not the file
        for n, line in enumerate(capped_lines(handle, path), start=1):
            if not line.strip():
                continue
            if bad is not None:
                raise UserError(f"{path} line {bad} is not JSON; the metrics log is damaged")
            try:
                obj = json.loads(line)
            except (ValueError, RecursionError):
                bad = n  # fine only as the last line (a run still writing it)
                continue
            if isinstance(obj, dict) and isinstance(obj.get("step"), int):
                rows.append(obj)
    return rows


def _num(x: Any) -> float | None:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) else None


def eval_curve(rows: list[dict[str, Any]], split: str = "eval") -> list[EvalPoint]:
    """The accuracy series of one split, by step; a step logged twice (resume) keeps its last line."""
    by_step: dict[int, EvalPoint] = {}
    for r in rows:
        acc = _num(r.get("mlm_accuracy"))
        if r.get("split") != split or acc is None:
            continue
        tokens = r.get("masked_tokens") if isinstance(r.get("masked_tokens"), int) else None
        se = _num(r.get("mlm_accuracy_se"))
        if se is None and tokens:
            se = math.sqrt(acc * (1 - acc) / tokens)  # binomial standard error
        by_step[r["step"]] = EvalPoint(r["step"], acc, se, tokens, _num(r.get("loss")),
                                       _num(r.get("mlm_top5_accuracy")))
    return [by_step[s] for s in sorted(by_step)]


def _pct(x: float) -> str:
    return f"{100 * x:.1f} %"


def curve_summary(curve: list[EvalPoint], upto: int | None = None, what: str = "Held-out MLM accuracy") -> str:
    """One line on the shape of a learning curve up to step ``upto``."""
    pts = [p for p in curve if upto is None or p.step <= upto]
    if len(pts) < 2:
        return f"{what}: too few evaluations for a learning curve."
    first, last = pts[0], pts[-1]
    line = (f"{what} rose from {_pct(first.mlm_accuracy)} at step {first.step:,} to "
            f"{_pct(last.mlm_accuracy)} at step {last.step:,}")
    if round(first.mlm_accuracy, 3) == round(last.mlm_accuracy, 3):
        line = (f"{what} stayed at {_pct(last.mlm_accuracy)} from step {first.step:,} to "
                f"step {last.step:,}")
    elif first.mlm_accuracy > last.mlm_accuracy:
        line = (f"{what} went from {_pct(first.mlm_accuracy)} at step {first.step:,} down to "
                f"{_pct(last.mlm_accuracy)} at step {last.step:,}")
    span = last.step - first.step
    if len(pts) >= 4 and span > 0:
        q1 = first.step + span / 4
        q3 = first.step + 3 * span / 4
        at_q1 = min(pts, key=lambda p: abs(p.step - q1))
        at_q3 = min(pts, key=lambda p: abs(p.step - q3))
        early = 100 * (at_q1.mlm_accuracy - first.mlm_accuracy)
        late = 100 * (last.mlm_accuracy - at_q3.mlm_accuracy)
        shape = "still rising about as fast" if late > 0.5 * early else (
            "flattening" if late > 0 else "flat or falling at the end")
        line += (f"; the first quarter of the steps added {early:+.1f} points, the last quarter "
                 f"{late:+.1f} ({shape})")
    return line + "."


# ---------------------------------------------------------------- model card
_LICENSE_ID = re.compile(r"^[a-z0-9][a-z0-9.\-]*$")


def check_license(license: str | None) -> str | None:
    """A Hugging Face Hub licence identifier (``mit``, ``apache-2.0``, ``cc-by-4.0``...), lower-cased."""
    if license is None:
        return None
    value = license.strip().lower()
    if not _LICENSE_ID.match(value):
        raise UserError(f"--license {license!r} is not a licence identifier; use the Hub's id such "
                        "as mit, apache-2.0 or cc-by-sa-4.0")
    return value


def _data_section(data_dir: str | None) -> tuple[str, dict | None]:
    meta = None
    if isinstance(data_dir, str) and (Path(data_dir) / layout.DATA_META).is_file():
        try:
            meta = read_json(Path(data_dir) / layout.DATA_META, "data set metadata")
        except UserError:
            meta = None
    if not isinstance(meta, dict):
        # only the folder's name: the card must not carry paths of the exporting machine
        where = f" (data directory {Path(data_dir).name}, not found now)" if data_dir else ""
        return f"not recorded{where}", None
    sources = meta.get("sources") or []
    names = ", ".join(str(s.get("name", "?")) for s in sources[:6]) or "unknown sources"
    splits = meta.get("splits") or {}
    train = splits.get("train") or {}
    val = splits.get("val") or {}

    def count(d: dict, key: str) -> str:
        v = d.get(key)
        return f"{v:,}" if isinstance(v, int) else "?"

    text = (f"{names}: {count(train, 'sentences')} training sentences ({count(train, 'tokens')} "
            f"characters), {count(val, 'sentences')} held-out sentences")
    return text, meta


def _run_facts(cfg) -> dict[str, Any]:
    """What the card states of a run's typed config (``None`` when it has none)."""
    facts: dict[str, Any] = dict.fromkeys(("preset", "data_dir", "max_steps", "seq_len", "micro_batch",
                                           "grad_accum", "lr", "nsp", "mask_prob", "init_from"))
    if cfg is None:
        return facts
    t = cfg.train
    facts.update(preset=cfg.preset, data_dir=cfg.data_dir, max_steps=t.optim.max_steps,
                 seq_len=t.data.seq_len, micro_batch=t.optim.micro_batch, grad_accum=t.optim.grad_accum,
                 lr=t.optim.lr, nsp=t.data.nsp, mask_prob=t.data.mask_prob)
    init_from = cfg.extra.get("init_from")
    facts["init_from"] = init_from if isinstance(init_from, dict) else None
    return facts


def dataset_identity(data_dir: str | None, meta: dict | None) -> tuple[str, str, list[str]]:
    """``(type, name, hub_ids)`` of the training data for the card's ``model-index`` and ``datasets``.

    ``name`` is what the data dir's card lists as its sources (file or data set names, never
    paths); ``type`` is the Hub id when the data is one Hub data set, else the data dir's
    folder name; ``hub_ids`` are the sources read from the Hub.
    """
    sources = [s for s in (meta or {}).get("sources") or [] if isinstance(s, dict)]
    hub_ids = [str(s.get("location") or s.get("name")).partition(":")[0]
               for s in sources if s.get("kind") == "hf-hub"]
    name = ", ".join(str(s.get("name", "?")) for s in sources) or "unrecorded data"
    if len(hub_ids) == 1 and len(sources) == 1:
        kind = hub_ids[0]
    else:
        kind = Path(data_dir).name if isinstance(data_dir, str) and data_dir else "bertcurve-data"
    return kind, name, hub_ids


def card_data(name: str, point: EvalPoint | None, held_out: bool, data_dir: str | None, meta: dict | None,
              license: str | None, example: str):
    """The card's YAML metadata as a ``huggingface_hub.ModelCardData``, with a ``model-index``
    of the held-out MLM accuracy, top-5 accuracy and loss (training-batch numbers are not
    evaluation results and stay out of it)."""
    from huggingface_hub import EvalResult, ModelCardData

    kind, data_name, hub_ids = dataset_identity(data_dir, meta)
    results = []
    if point is not None and held_out:
        metrics = [("accuracy", "Held-out MLM accuracy", point.mlm_accuracy),
                   ("accuracy", "Held-out MLM top-5 accuracy", point.mlm_top5_accuracy),
                   ("loss", "Held-out MLM loss", point.loss)]
        results = [EvalResult(task_type="fill-mask", task_name="Masked language modeling",
                              dataset_type=kind, dataset_name=data_name, dataset_split="validation",
                              metric_type=mtype, metric_name=mname, metric_value=round(value, 6))
                   for mtype, mname, value in metrics if value is not None]
    return ModelCardData(
        language="zh", license=license, library_name="transformers", pipeline_tag="fill-mask",
        tags=["bert", "fill-mask", "chinese", "bertcurve"], datasets=hub_ids or None,
        model_name=name, eval_results=results or None, widget=[{"text": example}])


def model_card(
    run_dir: Path,
    out: Path,
    step: int | None,
    net_config: Any,
    n_params: int,
    vocab_size: int,
    license: str | None = None,
) -> tuple[str, dict[str, Any]]:
    """The README.md text and the facts it states (also written to bertcurve_export.json).

    The text is a ``huggingface_hub.ModelCard``: YAML metadata (licence, data set,
    ``model-index`` with the held-out numbers) and the Markdown body.
    """
    from huggingface_hub import ModelCard

    run = _run_facts(load_run_config(run_dir, missing_ok=True))
    rows = read_metrics(run_dir)
    curve = eval_curve(rows)
    what = "Held-out MLM accuracy"
    if not curve:
        curve, what = eval_curve(rows, "train"), "MLM accuracy on training batches (no held-out evaluation logged)"
    at = [p for p in curve if step is None or p.step <= step]
    point = at[-1] if at else None
    held_out = what.startswith("Held-out")
    data_text, meta = _data_section(run["data_dir"])
    summary = curve_summary(curve, step, what)
    name = out.name
    example = "今天天气很[MASK]。"
    facts: dict[str, Any] = {
        "format": EXPORT_FORMAT,
        "bertcurve_version": __version__,
        "run_name": Path(run_dir).resolve().name,  # a name, not a path of this machine
        "step": step,
        "max_steps": run["max_steps"],
        "preset": run["preset"],
        "parameters": n_params,
        "vocab_size": vocab_size,
        "license": license,
        "eval": None if point is None else {
            "step": point.step, "split": "eval" if held_out else "train",
            "mlm_accuracy": point.mlm_accuracy, "mlm_accuracy_se": point.mlm_accuracy_se,
            "mlm_top5_accuracy": point.mlm_top5_accuracy, "masked_tokens": point.masked_tokens,
            "loss": point.loss,
        },
        "learning_curve": summary,
        "data": data_text,
    }
    body = _card_body(run, meta, point, what, step, net_config, n_params, vocab_size, data_text,
                      summary, name, example)
    metadata = card_data(name, point, held_out, run["data_dir"], meta, license, example)
    card = ModelCard(f"---\n{metadata.to_yaml()}\n---\n{body}")
    return str(card), facts


def _card_body(run: dict, meta: dict | None, point: EvalPoint | None, what: str, step: int | None,
               c: Any, n_params: int, vocab_size: int, data_text: str, summary: str, name: str,
               example: str) -> str:
    """The Markdown below the card's metadata: facts table, learning curve, how to load, limits."""
    max_steps, preset, seq_len, mask_prob = run["max_steps"], run["preset"], run["seq_len"], run["mask_prob"]
    micro, accum, lr, nsp = run["micro_batch"], run["grad_accum"], run["lr"], run["nsp"]
    if point is None:
        acc_line = "not measured (the run logged no evaluation up to this step)"
    else:
        se = (f" ± {100 * point.mlm_accuracy_se:.1f} % (standard error)"
              if point.mlm_accuracy_se is not None else "")
        tokens = f", {point.masked_tokens:,} masked characters" if point.masked_tokens else ""
        where = "" if point.step == step else f" (last evaluation before the exported step {step:,})"
        acc_line = f"{_pct(point.mlm_accuracy)}{se} at step {point.step:,}{tokens}{where}"
    steps_text = f"{step:,}" if step is not None else "unknown"
    if isinstance(max_steps, int) and step is not None:
        steps_text += f" of {max_steps:,} planned optimizer steps"
    masked = f"{100 * mask_prob:g} % of characters masked" if isinstance(mask_prob, (int, float)) else "characters masked"
    training = []
    if preset:
        training.append(f"preset `{preset}`")
    init_from = run["init_from"]
    if isinstance(init_from, dict) and init_from.get("name"):
        training.append(f"continued from `{init_from['name']}`")
    if isinstance(micro, int):
        batch = micro * (accum if isinstance(accum, int) else 1)
        training.append(f"batch {batch} sequences")
    if seq_len:
        training.append(f"{seq_len} tokens per sequence")
    if lr:
        training.append(f"peak learning rate {lr:g}")
    if nsp is not None:
        training.append("MLM + NSP" if nsp else "MLM only")
    arch = (f"BERT encoder, {c.num_hidden_layers} layers, hidden {c.hidden_size}, "
            f"{c.num_attention_heads} heads, feed-forward {c.intermediate_size}, "
            f"{c.max_position_embeddings} positions; {n_params / 1e6:.2f}M parameters")
    tok_text = f"{vocab_size:,} tokens"
    if meta and meta.get("tokenization"):
        tok_text += f" ({meta['tokenization']})"
    origin = ("continued pretraining of an existing BERT model" if isinstance(init_from, dict)
              else "pretrained from scratch")
    body = f"""
# {name}

A Chinese BERT masked language model {origin} with
[bertcurve](https://pypi.org/project/bertcurve/) {__version__}. It predicts the character behind
`[MASK]` from the characters around it.

| | |
|---|---|
| Model | {arch} |
| Vocabulary | {tok_text} |
| Training data | {data_text} |
| Training | {', '.join(training) or 'not recorded'} |
| Steps | {steps_text} |
| {what.split(' (')[0]} | {acc_line} |
"""
    if point is not None and point.mlm_top5_accuracy is not None:
        body += f"| Top-5 accuracy | {_pct(point.mlm_top5_accuracy)} |\n"
    if point is not None and point.loss is not None:
        body += f"| Loss | {point.loss:.3f} |\n"
    body += f"""
**Learning curve.** {summary}

## How to load it

```python
from transformers import pipeline

fill = pipeline("fill-mask", model="{name}")   # the path of this directory
for c in fill("{example}"):
    print(c["token_str"], round(c["score"], 3))
```

or with bertcurve (batched, faster on a CPU, several masks per text):

```
bertcurve fill-mask {name} "{example}"
```

## Limitations

Accuracy is measured on masked characters of held-out sentences from the same corpus
({masked}); text from other domains will score lower. The tokenizer has one
token per character (after NFKC), so `[MASK]` stands for exactly one character, and characters
outside the vocabulary are read as `[UNK]`. Learning-curve data: `{layout.METRICS}` of the run
named in `{EXPORT_INFO}`.
"""
    return body


# -------------------------------------------------------------------- export
def _copy_tokenizer(src: Path, dst: Path, max_positions: int) -> None:
    copied = False
    for name in TOKENIZER_FILES:
        if (src / name).is_file():
            shutil.copy2(src / name, dst / name)
            copied = True
    if not copied:
        raise UserError(f"no tokenizer files in {src}; the run's tokenizer is missing")
    # the pipeline truncates at model_max_length: it must not exceed the model's positions
    cfg_path = dst / "tokenizer_config.json"
    if cfg_path.is_file():
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
        cur = cfg.get("model_max_length")
        if not isinstance(cur, int) or cur > max_positions:
            cfg["model_max_length"] = max_positions
            cfg_path.write_text(json.dumps(cfg, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")


def export(run_dir: str | Path, out: str | Path, step: int | None = None, *, force: bool = False,
           license: str | None = None) -> Path:
    """Write ``out`` as a Hugging Face model directory with a model card; return its path.

    ``step`` exports the run's checkpoint of that step instead of its final
    model. ``out`` is written aside and renamed into place; an existing
    non-empty ``out`` is replaced only with ``force=True``. ``license`` (a Hub licence id
    such as ``apache-2.0``) goes into the model card's metadata.
    """
    from transformers.utils import logging as hf_logging

    run_dir = Path(run_dir)
    out = Path(out)
    license = check_license(license)
    if not (run_dir / layout.RUN_CONFIG).is_file() and not (run_dir / layout.METRICS).is_file():
        raise UserError(f"{run_dir} is not a run directory (no {layout.RUN_CONFIG}); "
                        "give the --out directory of `bertcurve train`")
    # --force replaces only an earlier export (recognised by its marker file), never a run, a data
    # dir or any other folder; paths are resolved first, so `.`, `inner/..` and links are caught.
    target = guard_output_dir(out, marker=EXPORT_INFO, marker_format=EXPORT_FORMAT, force=force,
                              inputs=[run_dir], what="exported model")
    lm = load_masked_lm(run_dir, step, device="cpu")
    net = lm.model
    net.config.architectures = ["BertForMaskedLM"] if net.config.model_type == "bert" else net.config.architectures
    n_params = sum(p.numel() for p in {id(p): p for p in net.parameters()}.values())
    loc_tok = Path(lm.tokenizer_dir)
    card, facts = model_card(run_dir, out, lm.step, net.config, n_params, len(lm.tokenizer), license)
    hf_logging.disable_progress_bar()
    with staged_directory(target) as tmp:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            net.save_pretrained(str(tmp), safe_serialization=True)
        _copy_tokenizer(loc_tok, tmp, int(net.config.max_position_embeddings))
        (tmp / "README.md").write_text(card, encoding="utf-8")
        write_json(tmp / EXPORT_INFO, facts)
        mask = os.umask(0o022)
        os.umask(mask)
        for path in tmp.iterdir():  # some writers create 0600 files: a shared model must be readable
            if path.is_file():
                os.chmod(path, 0o666 & ~mask)
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", metavar="RUN_DIR", help="run directory written by `bertcurve train`")
    parser.add_argument("--out", "-o", required=True, metavar="DIR",
                        help="folder to write the Hugging Face model directory into")
    parser.add_argument("--step", type=int, metavar="N",
                        help="export the checkpoint of optimizer step N instead of the final model")
    parser.add_argument("--force", action="store_true",
                        help="replace --out if it holds an earlier export (never any other folder)")
    parser.add_argument("--license", metavar="ID", default=None,
                        help="licence of the exported weights for the model card (a Hub id: mit, "
                             "apache-2.0, cc-by-4.0, ...); none is claimed without it")


def run(args: argparse.Namespace) -> int:
    out = export(args.run_dir, args.out, args.step, force=args.force, license=args.license)
    print(f"exported to {out}  (load with transformers.pipeline(\"fill-mask\", model=\"{out}\"))")
    return 0
