"""Predict the characters behind [MASK] with a trained model.

    bertcurve fill-mask runs/demo "今天天气很[MASK]。"
    bertcurve fill-mask runs/demo --step 2000 --top-k 3 "北京是中国的[MASK][MASK]。"
    bertcurve fill-mask runs/demo --file sentences.txt --json > predictions.json
    cat sentences.txt | bertcurve fill-mask runs/demo -

MODEL is a run directory (its final model, or --step N for a checkpoint), a
checkpoint folder, or any Hugging Face masked-LM directory. Several [MASK]s in
one text are predicted independently in one forward pass (each sees the others
as [MASK]); --iterative instead fills the most confident mask first and
predicts the rest with it in place. Texts are batched by length.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

from bertcurve.errors import UserError
from bertcurve.inference import (
    QUANTIZE_CHOICES,
    MaskedLM,
    load_masked_lm,
    predict_top_k,
    token_text,
)

FILL_MASK_FORMAT = "bertcurve.fill-mask/1"
DEFAULT_BATCH_SIZE = 32  # best of 4-64 on this 2-core CPU (bench/fill_mask.py); larger batches leave the cache


@dataclass(frozen=True)
class Candidate:
    """One predicted token for a mask."""

    token: str            # as it reads in text (no '##', no spaces)
    token_id: int
    probability: float


@dataclass(frozen=True)
class MaskPrediction:
    """The candidates for one [MASK] of a text."""

    start: int                       # character offset of the [MASK] in the text
    end: int                         # offset just after it
    candidates: tuple[Candidate, ...]  # best first
    fill_order: int                  # 0 for every mask when independent; 0, 1, ... when iterative

    @property
    def best(self) -> Candidate:
        return self.candidates[0]


@dataclass(frozen=True)
class FillMaskResult:
    """The prediction for one input text."""

    text: str                           # the input, unchanged
    filled: str                         # the input with every [MASK] replaced by its fill
    masks: tuple[MaskPrediction, ...]   # in text order
    unknown: tuple[str, ...]            # pieces of the text the vocabulary reads as [UNK]
    kept: tuple[int, int] | None        # character span the model saw, when the text was truncated
    warnings: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["kept"] = list(self.kept) if self.kept else None
        return d


@dataclass(frozen=True)
class _Encoded:
    text: str
    content_ids: list[int]        # tokens of the window the model sees, no special tokens
    mask_spans: list[tuple[int, int]]
    unknown: tuple[str, ...]
    kept: tuple[int, int] | None
    warnings: tuple[str, ...]


def _short(text: str, n: int = 24) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


def _encode(lm: MaskedLM, texts: Sequence[str]) -> list[_Encoded]:
    tok = lm.tokenizer
    mask_id, unk_id = tok.mask_token_id, tok.unk_token_id
    budget = lm.max_length - len(lm.prefix) - len(lm.suffix)
    # verbose=False: long texts are windowed below, transformers' "too long" warning does not apply
    batch = tok(list(texts), add_special_tokens=False, return_offsets_mapping=True, verbose=False)
    encoded: list[_Encoded] = []
    no_mask: list[int] = []
    too_far: list[str] = []
    for n, text in enumerate(texts):
        ids: list[int] = batch["input_ids"][n]
        offsets: list[tuple[int, int]] = batch["offset_mapping"][n]
        mask_pos = [i for i, t in enumerate(ids) if t == mask_id]
        if not mask_pos:
            no_mask.append(n)
            continue
        notes: list[str] = []
        kept = None
        if len(ids) > budget:
            first, last = mask_pos[0], mask_pos[-1]
            if last - first + 1 > budget:
                too_far.append(f"text {n + 1} ({last - first + 1} tokens from first to last mask)")
                continue
            centre = (first + last) // 2
            lo = min(max(0, centre - budget // 2), len(ids) - budget)
            hi = lo + budget
            kept = (offsets[lo][0], offsets[hi - 1][1])
            notes.append(  # the same numbers as "kept" in --json: text[start:end]
                f"text {n + 1}: {len(ids)} tokens but the model sees at most {budget}; "
                f"kept text[{kept[0]}:{kept[1]}] around the {tok.mask_token}"
            )
            ids, offsets = ids[lo:hi], offsets[lo:hi]
        # [UNK] pieces of what the model sees (the window), not of the whole text
        unknown = tuple(text[s:e] for t, (s, e) in zip(ids, offsets) if t == unk_id and unk_id is not None)
        if unknown:
            shown = "、".join(list(dict.fromkeys(unknown))[:20]) + ("…" if len(set(unknown)) > 20 else "")
            notes.append(f"text {n + 1}: not in the vocabulary, read as {tok.unk_token}: {shown}")
        spans = [tuple(offsets[i]) for i, t in enumerate(ids) if t == mask_id]
        encoded.append(_Encoded(text, ids, spans, unknown, kept, tuple(notes)))  # type: ignore[arg-type]
    if no_mask:
        shown = ", ".join(f"text {i + 1} ({_short(texts[i])!r})" for i in no_mask[:3])
        more = f" and {len(no_mask) - 3} more" if len(no_mask) > 3 else ""
        raise UserError(
            f"no {tok.mask_token} in {shown}{more}; write {tok.mask_token} where a character "
            "should be predicted, e.g. 今天天气很[MASK]。"
        )
    if too_far:
        raise UserError(
            f"{'; '.join(too_far[:3])}: the masks are further apart than the model's "
            f"{lm.max_length} positions; split the text so each piece fits"
        )
    return encoded


def _fill_token_ids(lm: MaskedLM) -> set[int]:
    """Control tokens never written into a filled text (they are not text)."""
    tok = lm.tokenizer
    return {i for i in (tok.pad_token_id, tok.cls_token_id, tok.sep_token_id, tok.mask_token_id,
                        tok.bos_token_id, tok.eos_token_id) if i is not None}


def _candidates(lm: MaskedLM, ids: Any, probs: Any) -> tuple[Candidate, ...]:
    return tuple(Candidate(token_text(lm.tokenizer, int(i)), int(i), float(p)) for i, p in zip(ids, probs))


def _fill_choice(cands: tuple[Candidate, ...], control: set[int]) -> Candidate:
    for c in cands:
        if c.token_id not in control:
            return c
    return cands[0]


def _assemble(enc: _Encoded, masks: list[MaskPrediction], fills: list[str]) -> FillMaskResult:
    pieces, pos = [], 0
    for (s, e), fill in zip(enc.mask_spans, fills):
        pieces += [enc.text[pos:s], fill]
        pos = e
    pieces.append(enc.text[pos:])
    return FillMaskResult(enc.text, "".join(pieces), tuple(masks), enc.unknown, enc.kept, enc.warnings)


def fill_mask(
    model: str | Path | MaskedLM,
    texts: str | Sequence[str],
    top_k: int = 5,
    *,
    step: int | None = None,
    iterative: bool = False,
    quantize: str | None = None,
    device: str | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> list[FillMaskResult]:
    """Top-k candidates with probabilities for every [MASK] of every text.

    ``model`` is a run dir (final model, or checkpoint ``step``), a checkpoint
    or Hugging Face model dir, or an already loaded :class:`MaskedLM`
    (``bertcurve.inference.load_masked_lm``). Several masks in one text are
    predicted independently in one forward pass; with ``iterative=True`` the
    most confident mask is filled first and the others are predicted again
    with it in place. Texts longer than the model's positions are cut to a
    window around their masks (noted in ``warnings``). Returns one
    :class:`FillMaskResult` per text, in input order.
    """
    if isinstance(texts, str):
        texts = [texts]
    texts = list(texts)
    if not texts:
        raise UserError("no text given; pass texts containing [MASK]")
    if top_k < 1:
        raise UserError(f"--top-k must be at least 1, not {top_k}")
    if batch_size < 1:
        raise UserError(f"--batch-size must be at least 1, not {batch_size}")
    lm = model if isinstance(model, MaskedLM) else load_masked_lm(model, step, quantize=quantize, device=device)
    encoded = _encode(lm, texts)
    control = _fill_token_ids(lm)
    tok = lm.tokenizer

    if not iterative:
        seqs = [lm.with_specials(e.content_ids) for e in encoded]
        preds = predict_top_k(lm, seqs, top_k, batch_size)
        results = []
        for enc, (ids, probs) in zip(encoded, preds):
            masks = [MaskPrediction(s, e, _candidates(lm, i, p), 0)
                     for (s, e), i, p in zip(enc.mask_spans, ids, probs)]
            results.append(_assemble(enc, masks, [_fill_choice(m.candidates, control).token for m in masks]))
        return results

    # iterative: each round predicts every open mask of every text in one batched
    # pass, then fixes the single most confident mask per text
    content = [list(e.content_ids) for e in encoded]
    open_masks = [list(range(len(e.mask_spans))) for e in encoded]   # indices into mask_spans
    positions = [[i for i, t in enumerate(c) if t == tok.mask_token_id] for c in content]
    done: list[dict[int, MaskPrediction]] = [{} for _ in encoded]
    fills: list[dict[int, str]] = [{} for _ in encoded]
    round_no = 0
    while any(open_masks):
        todo = [n for n, m in enumerate(open_masks) if m]
        seqs = [lm.with_specials(content[n]) for n in todo]
        preds = predict_top_k(lm, seqs, top_k, batch_size)
        for n, (ids, probs) in zip(todo, preds):
            best_row = max(range(len(open_masks[n])), key=lambda r: float(probs[r][0]))
            m = open_masks[n].pop(best_row)
            span = encoded[n].mask_spans[m]
            pred = MaskPrediction(span[0], span[1], _candidates(lm, ids[best_row], probs[best_row]), round_no)
            choice = _fill_choice(pred.candidates, control)
            done[n][m], fills[n][m] = pred, choice.token
            content[n][positions[n][m]] = choice.token_id
        round_no += 1
    return [
        _assemble(enc, [done[n][m] for m in range(len(enc.mask_spans))],
                  [fills[n][m] for m in range(len(enc.mask_spans))])
        for n, enc in enumerate(encoded)
    ]


# --------------------------------------------------------------------- CLI
def read_texts(texts: Sequence[str], file: str | None, stdin: Any = None) -> list[str]:
    """Texts from arguments, a file (one per line) and/or stdin ('-'); blank lines skipped."""
    stdin = sys.stdin if stdin is None else stdin
    out: list[str] = []

    def lines(handle: Iterable[str]) -> list[str]:
        return [line.rstrip("\r\n") for line in handle if line.strip()]

    for t in texts:
        if t == "-":
            out += lines(stdin)
        else:
            out.append(t)
    if file is not None:
        if file == "-":
            out += lines(stdin)
        else:
            path = Path(file)
            try:
                with open(path, encoding="utf-8") as handle:
                    out += lines(handle)
            except FileNotFoundError:
                raise UserError(f"--file {path} does not exist") from None
            except UnicodeDecodeError:
                raise UserError(f"--file {path} is not UTF-8 text; convert it with iconv") from None
            except OSError as exc:
                raise UserError(f"cannot read --file {path}: {exc.strerror or exc}") from None
    if not out and not texts and file is None and not stdin.isatty():
        out = lines(stdin)
    if not out:
        raise UserError(
            'no text given; pass texts with [MASK] (bertcurve fill-mask MODEL "今天天气很[MASK]。"), '
            "--file PATH, or '-' to read standard input"
        )
    return out


def format_text(results: Sequence[FillMaskResult], mask_token: str = "[MASK]") -> str:
    """Human-readable output: the filled text, then the candidates of each mask."""
    lines: list[str] = []
    for n, res in enumerate(results):
        if n:
            lines.append("")
        lines.append(res.text)
        lines.append(f"  → {res.filled}")
        many = len(res.masks) > 1
        for j, m in enumerate(res.masks):
            label = f"{mask_token}{j + 1}" if many else mask_token
            order = f" (第{m.fill_order + 1}步)" if many and any(x.fill_order for x in res.masks) else ""
            cands = "  ".join(f"{c.token} {c.probability:.1%}" for c in m.candidates)
            lines.append(f"  {label}{order}: {cands}")
    return "\n".join(lines)


def to_json(results: Sequence[FillMaskResult], lm_source: str, step: int | None, top_k: int,
            iterative: bool, quantize: str | None) -> dict[str, Any]:
    """The documented ``bertcurve.fill-mask/1`` JSON document."""
    return {
        "format": FILL_MASK_FORMAT,
        "model": lm_source,
        "step": step,
        "top_k": top_k,
        "mode": "iterative" if iterative else "independent",
        "quantize": quantize,
        "results": [r.to_dict() for r in results],
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # TEXT... may come after options (`fill-mask RUN --step 30 "今[MASK]"`); plain
    # parse_args stops matching a '*' positional at the first option
    parser.parse_args = parser.parse_intermixed_args  # type: ignore[method-assign]
    parser.add_argument("model", metavar="MODEL",
                        help="run directory, checkpoint folder or Hugging Face model directory")
    parser.add_argument("texts", metavar="TEXT", nargs="*",
                        help="texts containing [MASK]; '-' reads one text per line from standard input")
    parser.add_argument("--file", "-f", metavar="PATH",
                        help="read texts from a UTF-8 file, one per line ('-' for standard input)")
    parser.add_argument("--step", type=int, metavar="N",
                        help="use the run's checkpoint of optimizer step N instead of its final model")
    parser.add_argument("--top-k", type=int, default=5, metavar="K",
                        help="candidates to show per [MASK] (default 5)")
    parser.add_argument("--iterative", action="store_true",
                        help="with several masks in a text, fill the most confident first and predict "
                             "the rest with it in place (default: all masks independently, one pass)")
    parser.add_argument("--json", action="store_true",
                        help=f"print one JSON document (format {FILL_MASK_FORMAT}) instead of text")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, metavar="B",
                        help=f"texts per forward pass; texts are grouped by length (default {DEFAULT_BATCH_SIZE})")
    parser.add_argument("--quantize", choices=QUANTIZE_CHOICES,
                        help="int8: dynamic int8 quantization of the Linear layers (CPU; faster, "
                             "slightly less accurate, see docs/inference.md)")
    parser.add_argument("--device", default="auto",
                        help="cpu, cuda or auto (default: cuda when available)")


def run(args: argparse.Namespace) -> int:
    texts = read_texts(args.texts, args.file)
    lm = load_masked_lm(args.model, args.step, quantize=args.quantize, device=args.device)
    results = fill_mask(lm, texts, args.top_k, iterative=args.iterative, batch_size=args.batch_size)
    for res in results:
        for note in res.warnings:
            print(f"bertcurve: warning: {note}", file=sys.stderr)
    if args.json:
        doc = to_json(results, args.model, lm.step, args.top_k, args.iterative, args.quantize)
        print(json.dumps(doc, ensure_ascii=False, indent=1))
    else:
        print(format_text(results, lm.mask_token))
    return 0
