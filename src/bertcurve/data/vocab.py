"""Character vocabulary and the tokenizer built from it.

Tokenization rule (the same for every script, decided once): after NFKC,
**every non-whitespace character is one token**; whitespace separates nothing
and is dropped. Latin letters and digits are therefore single-character
tokens too ("GPT4" -> G P T 4), never a WordPiece ``[UNK]``; a character that
is not in the vocabulary becomes ``[UNK]``. Decoding joins tokens without
spaces, so Chinese text comes back as written (spaces between Latin words are
not recoverable, which is the price of a character model).

The tokenizer is a ``tokenizers`` WordLevel model with an NFKC normaliser, a
whitespace-removing + character-isolating pre-tokenizer, a BERT
``[CLS] A [SEP] B [SEP]`` post-processor and a ``Fuse`` decoder, wrapped in
``transformers.PreTrainedTokenizerFast`` so ``AutoTokenizer.from_pretrained``
loads it offline. For speed, ``prepare`` encodes with :class:`CharEncoder`, a
numpy lookup table over code points that implements the same rule and is
checked against the tokenizer on the whole validation split.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bertcurve import layout
from bertcurve.errors import UserError

N_CODEPOINTS = 0x110000
DROP = np.uint16(0xFFFF)  # lookup-table marker for whitespace (no token)
MAX_VOCAB = 0xFFFF        # ids must fit uint16 and stay below DROP

# Unicode White_Space (what the Rust tokenizer's WhitespaceSplit removes).
WHITESPACE_CODEPOINTS = (
    list(range(0x09, 0x0E)) + [0x20, 0x85, 0xA0, 0x1680] + list(range(0x2000, 0x200B))
    + [0x2028, 0x2029, 0x202F, 0x205F, 0x3000]
)


def count_codepoints(text: str, counts: np.ndarray) -> None:
    """Add the code-point histogram of ``text`` to ``counts`` (int64, N_CODEPOINTS)."""
    if not text:
        return
    cps = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    counts += np.bincount(cps, minlength=N_CODEPOINTS)


@dataclass(frozen=True)
class Vocabulary:
    """Specials (ids 0..4, layout.SPECIAL_TOKENS order) then characters by frequency."""

    tokens: tuple[str, ...]

    @property
    def size(self) -> int:
        return len(self.tokens)

    @property
    def characters(self) -> tuple[str, ...]:
        return self.tokens[len(layout.SPECIAL_TOKENS):]

    def to_dict(self) -> dict[str, int]:
        return {tok: i for i, tok in enumerate(self.tokens)}


def build_vocabulary(counts: np.ndarray, min_freq: int = 1, max_vocab: int | None = None) -> Vocabulary:
    """Characters seen at least ``min_freq`` times, most frequent first, ties by code point.

    ``max_vocab`` caps the total size including the 5 specials. Whitespace
    never enters the vocabulary (it is not a token).
    """
    if min_freq < 1:
        raise UserError(f"--min-freq must be at least 1, got {min_freq}")
    n_special = len(layout.SPECIAL_TOKENS)
    cap = MAX_VOCAB if max_vocab is None else max_vocab
    if cap <= n_special or cap > MAX_VOCAB:
        raise UserError(f"--max-vocab must be between {n_special + 1} and {MAX_VOCAB}, got {max_vocab}")
    counts = np.asarray(counts, dtype=np.int64).copy()
    counts[WHITESPACE_CODEPOINTS] = 0
    candidates = np.flatnonzero(counts >= min_freq)
    # Sort by descending count, then ascending code point: deterministic.
    order = np.lexsort((candidates, -counts[candidates]))
    chosen = candidates[order][: cap - n_special]
    chars = tuple(chr(int(cp)) for cp in chosen)
    specials = set(layout.SPECIAL_TOKENS)
    return Vocabulary(tuple(layout.SPECIAL_TOKENS) + tuple(c for c in chars if c not in specials))


class CharEncoder:
    """Vectorised text -> ids with the tokenizer's rule (code-point lookup table)."""

    def __init__(self, vocab: Vocabulary):
        unk = layout.SPECIAL_TOKENS.index("[UNK]")
        self.lut = np.full(N_CODEPOINTS, unk, dtype=np.uint16)
        for i, ch in enumerate(vocab.characters, start=len(layout.SPECIAL_TOKENS)):
            self.lut[ord(ch)] = i
        self.lut[WHITESPACE_CODEPOINTS] = DROP
        self.unk_id = unk

    def encode_lines(self, lines: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Ids of all ``lines`` back to back and the number of tokens of each line."""
        if not lines:
            return np.zeros(0, np.uint16), np.zeros(0, np.int64)
        text = "\n".join(lines) + "\n"
        cps = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
        ids = self.lut[cps]
        keep = ids != DROP
        kept_before = np.cumsum(keep, dtype=np.int64)
        ends = kept_before[cps == 10]  # tokens up to each line's "\n"
        lengths = np.diff(ends, prepend=0)
        return ids[keep], lengths

    def encode(self, text: str) -> np.ndarray:
        ids, _ = self.encode_lines([text])
        return ids


def build_backend(vocab: Vocabulary):
    """The ``tokenizers.Tokenizer`` for ``vocab`` (see the module docstring for the rule)."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    pad, unk, cls, sep, mask = layout.SPECIAL_TOKENS
    ids = vocab.to_dict()
    tok = Tokenizer(models.WordLevel(vocab=ids, unk_token=unk))
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.WhitespaceSplit(),
        pre_tokenizers.Split(Regex("."), behavior="isolated"),
    ])
    tok.decoder = decoders.Fuse()
    tok.post_processor = processors.TemplateProcessing(
        single=f"{cls} $A {sep}",
        pair=f"{cls} $A {sep} $B:1 {sep}:1",
        special_tokens=[(cls, ids[cls]), (sep, ids[sep])],
    )
    # Specials are matched before normalisation, so "今天[MASK]。" keeps its [MASK].
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in layout.SPECIAL_TOKENS])
    return tok


def tokenizer_config(model_max_length: int = 512) -> dict:
    """``tokenizer_config.json``: what ``AutoTokenizer`` needs besides tokenizer.json."""
    pad, unk, cls, sep, mask = layout.SPECIAL_TOKENS
    return {
        # "PreTrainedTokenizerFast" resolves in transformers 4 and 5 (5 writes
        # "TokenizersBackend", which 4 cannot load); both read tokenizer.json.
        "tokenizer_class": "PreTrainedTokenizerFast",
        "pad_token": pad, "unk_token": unk, "cls_token": cls, "sep_token": sep, "mask_token": mask,
        "model_max_length": model_max_length,
        "model_input_names": ["input_ids", "token_type_ids", "attention_mask"],
        "clean_up_tokenization_spaces": False,
    }


def save_tokenizer(vocab: Vocabulary, out_dir: Path, model_max_length: int = 512) -> None:
    """Write tokenizer.json, tokenizer_config.json and vocab.txt.

    ``transformers.AutoTokenizer.from_pretrained(out_dir)`` loads them offline.
    Written with ``tokenizers`` alone: importing transformers (and torch) would
    triple the time of a small ``prepare``.
    """
    out_dir = Path(out_dir)
    build_backend(vocab).save(str(out_dir / layout.TOKENIZER_JSON))
    (out_dir / "tokenizer_config.json").write_text(
        json.dumps(tokenizer_config(model_max_length), ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    # One token per line in id order: readable, and what BERT tools expect to see.
    (out_dir / layout.VOCAB_TXT).write_text("\n".join(vocab.tokens) + "\n", encoding="utf-8")
