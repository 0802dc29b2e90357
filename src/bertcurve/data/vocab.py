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
from typing import Iterable

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


# ------------------------------------------------------------ subword tokenizers
# `prepare --tokenizer wordpiece|bpe|DIR`: a Hugging Face `tokenizers` model
# instead of one token per character. The pipeline is bert-base-chinese's:
# every CJK ideograph is its own word (BertNormalizer handle_chinese_chars),
# so Chinese characters stay single tokens, while Latin words and numbers are
# split on whitespace and punctuation (BertPreTokenizer) and then into word
# pieces, continuation pieces starting with "##".

TOKENIZER_KINDS = ("char", "wordpiece", "bpe")
CONTINUATION = "##"
UINT16_VOCAB = 1 << 16     # vocabularies up to this size store ids as uint16, larger ones as uint32
TRAIN_BATCH = 1000         # sentences per batch handed to the tokenizers trainer
# A space next to a CJK ideograph or CJK/full-width punctuation is dropped when
# decoding: "我 们 在 2024 年" reads back "我们在2024年", Latin words keep theirs.
_CJK_SPACE = (r"(?<=[\p{Han}\u3000-\u303f\uff00-\uffef“”‘’]) "
              r"| (?=[\p{Han}\u3000-\u303f\uff00-\uffef“”‘’])")


def id_dtype(vocab_size: int) -> np.dtype:
    """uint16 while every id fits in 16 bits, uint32 beyond."""
    return np.dtype(np.uint16 if vocab_size <= UINT16_VOCAB else np.uint32)


def _untrained_subword(kind: str):
    """An empty WordPiece/BPE tokenizer with the bert-base-chinese pipeline around it."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers

    unk = layout.SPECIAL_TOKENS[1]
    if kind == "wordpiece":
        model = models.WordPiece(unk_token=unk, continuing_subword_prefix=CONTINUATION)
    else:
        model = models.BPE(unk_token=unk, continuing_subword_prefix=CONTINUATION)
    tok = Tokenizer(model)
    # NFKC first, like the cleaning and the char tokenizer; no lower-casing, no accent stripping.
    tok.normalizer = normalizers.Sequence([
        normalizers.NFKC(),
        normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, strip_accents=False,
                                   lowercase=False),
    ])
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.Sequence([decoders.WordPiece(prefix=CONTINUATION, cleanup=True), decoders.Fuse(),
                                     decoders.Replace(Regex(_CJK_SPACE), "")])
    return tok


def _bert_post_processor(tok):
    from tokenizers import processors

    cls, sep = layout.SPECIAL_TOKENS[2], layout.SPECIAL_TOKENS[3]
    return processors.TemplateProcessing(
        single=f"{cls} $A {sep}", pair=f"{cls} $A {sep} $B:1 {sep}:1",
        special_tokens=[(cls, tok.token_to_id(cls)), (sep, tok.token_to_id(sep))],
    )


def subword_alphabet(counts: np.ndarray, limit: int) -> list[str]:
    """The characters a trained vocabulary starts from: most frequent first (ties by code point),
    whitespace left out, at most ``limit``."""
    counts = np.asarray(counts, dtype=np.int64).copy()
    counts[WHITESPACE_CODEPOINTS] = 0
    seen = np.flatnonzero(counts)
    order = np.lexsort((seen, -counts[seen]))
    return [chr(int(cp)) for cp in seen[order][:limit]]


def _is_cjk_ideograph(ch: str) -> bool:
    cp = ord(ch)
    return 0x3400 <= cp <= 0x9FFF or 0xF900 <= cp <= 0xFAFF or 0x20000 <= cp <= 0x3134F


def train_subword(kind: str, batches: Iterable[list[str]], vocab_size: int, min_freq: int = 1,
                  n_sentences: int | None = None, alphabet: list[str] | None = None):
    """Train a WordPiece or BPE ``tokenizers.Tokenizer`` on ``batches`` of sentences (streamed).

    The five specials get ids 0..4 (layout.SPECIAL_TOKENS order). The trainer
    keeps word counts, not text, so memory grows with the distinct words, not
    with the corpus. ``alphabet`` (see :func:`subword_alphabet`) fixes the
    characters and makes the result the same in every run: the trainer numbers
    "##" continuation pieces in hash-map order and breaks ties between equally
    frequent merges by id (huggingface/tokenizers#1794), so they are
    registered up front, in alphabet order, and the alphabet is trimmed here
    rather than by the trainer (which breaks count ties at random too).
    Without ``alphabet`` every character seen is kept and runs may differ.
    """
    from tokenizers import AddedToken, Tokenizer, trainers

    if kind not in ("wordpiece", "bpe"):
        raise ValueError(f"unknown subword kind {kind!r}")
    tok = _untrained_subword(kind)
    specials = list(layout.SPECIAL_TOKENS)
    room = vocab_size - len(specials)
    # Most frequent characters first, while they fit: a Chinese character costs one entry (it is a
    # word of its own, never a continuation), any other two (itself and its "##" form).
    chars: list[str] = []
    for c in alphabet or []:
        cost = 1 if _is_cjk_ideograph(c) else 2
        if cost > room:
            break
        chars.append(c)
        room -= cost
    continuations = [CONTINUATION + c for c in chars if not _is_cjk_ideograph(c)]
    common = dict(vocab_size=vocab_size, min_frequency=min_freq, special_tokens=specials + continuations,
                  continuing_subword_prefix=CONTINUATION, show_progress=False)
    if alphabet is not None:
        # Exactly these characters: the given ones outrank every other, and the rest are trimmed.
        common.update(initial_alphabet=chars, limit_alphabet=len(chars))
    trainer = trainers.WordPieceTrainer(**common) if kind == "wordpiece" else trainers.BpeTrainer(**common)
    tok.train_from_iterator(batches, trainer=trainer, length=n_sentences)
    # The continuation pieces were registered as specials only to fix their ids: make them plain tokens.
    state = json.loads(tok.to_str())
    state["added_tokens"] = [t for t in state["added_tokens"] if t["content"] in specials]
    tok = Tokenizer.from_str(json.dumps(state))
    tok.post_processor = _bert_post_processor(tok)
    # Specials are matched before normalisation, so "今天[MASK]。" keeps its [MASK].
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    return tok


def load_tokenizer_dir(path: Path):
    """The ``tokenizers.Tokenizer`` of a saved tokenizer folder (tokenizer.json, or vocab.txt via transformers).

    It must know the five BERT specials ``[PAD] [UNK] [CLS] [SEP] [MASK]``
    (at any ids, e.g. bert-base-chinese's 0 and 100..103).
    """
    from tokenizers import Tokenizer

    path = Path(path)
    if not path.is_dir():
        raise UserError(f"--tokenizer {path}: not char, wordpiece, bpe or an existing tokenizer folder")
    if (path / layout.TOKENIZER_JSON).is_file():
        try:
            tok = Tokenizer.from_file(str(path / layout.TOKENIZER_JSON))
        except Exception as exc:  # the Rust loader raises a bare Exception
            raise UserError(f"--tokenizer {path}: {layout.TOKENIZER_JSON} cannot be read ({exc}); "
                            "save the tokenizer again with save_pretrained") from None
    elif (path / layout.VOCAB_TXT).is_file():
        from transformers import AutoTokenizer

        try:
            tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True).backend_tokenizer
        except Exception as exc:  # noqa: BLE001 - transformers raises many kinds here
            raise UserError(f"--tokenizer {path}: transformers cannot load it ({str(exc).splitlines()[0]})") from None
    else:
        raise UserError(f"--tokenizer {path}: the folder has neither {layout.TOKENIZER_JSON} nor "
                        f"{layout.VOCAB_TXT}; save a tokenizer there with save_pretrained")
    missing = [t for t in layout.SPECIAL_TOKENS if tok.token_to_id(t) is None]
    if missing:
        raise UserError(f"--tokenizer {path}: its vocabulary lacks {' '.join(missing)}; bertcurve trains BERT "
                        f"models and needs the tokens {' '.join(layout.SPECIAL_TOKENS)}")
    if tok.post_processor is None:
        tok.post_processor = _bert_post_processor(tok)
    return tok


def tokenizer_files_digest(path: Path) -> str:
    """SHA-256 over the tokenizer files of a folder (what a DIR tokenizer contributes to the cache key)."""
    import hashlib

    digest = hashlib.sha256()
    for name in (layout.TOKENIZER_JSON, "tokenizer_config.json", "special_tokens_map.json", layout.VOCAB_TXT):
        file = Path(path) / name
        if file.is_file():
            digest.update(name.encode() + b"\0" + file.read_bytes())
    return digest.hexdigest()


def special_ids(tok) -> dict[str, int]:
    """``{"[PAD]": id, ...}`` of a ``tokenizers.Tokenizer``, in layout.SPECIAL_TOKENS order."""
    return {t: int(tok.token_to_id(t)) for t in layout.SPECIAL_TOKENS}


def vocabulary_characters(tok) -> list[str]:
    """The single characters a tokenizer's vocabulary holds (as word or as ## piece)."""
    chars = set()
    for token in tok.get_vocab(with_added_tokens=False):
        piece = token[len(CONTINUATION):] if token.startswith(CONTINUATION) else token
        if len(piece) == 1:
            chars.add(piece)
    return sorted(chars)


def save_subword(tok, out_dir: Path, model_max_length: int = 512) -> None:
    """tokenizer.json, tokenizer_config.json and vocab.txt for a ``tokenizers.Tokenizer``.

    Loads with ``AutoTokenizer.from_pretrained(out_dir)`` like the char tokenizer.
    """
    out_dir = Path(out_dir)
    tok.save(str(out_dir / layout.TOKENIZER_JSON))
    (out_dir / "tokenizer_config.json").write_text(
        json.dumps(tokenizer_config(model_max_length), ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    vocab = tok.get_vocab(with_added_tokens=True)
    by_id = [""] * (max(vocab.values()) + 1)
    for token, i in vocab.items():
        by_id[i] = token
    (out_dir / layout.VOCAB_TXT).write_text("\n".join(by_id) + "\n", encoding="utf-8")


class SubwordEncoder:
    """Sentences -> ids (and word starts) with a ``tokenizers.Tokenizer``, batched in Rust threads."""

    def __init__(self, tok):
        self.tok = tok
        self.vocab_size = tok.get_vocab_size(with_added_tokens=True)
        self.dtype = id_dtype(self.vocab_size)
        self.unk_id = int(tok.token_to_id(layout.SPECIAL_TOKENS[1]))

    def encode_lines(self, lines: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Ids of all ``lines`` back to back and the number of tokens of each line."""
        if not lines:
            return np.zeros(0, self.dtype), np.zeros(0, np.int64)
        # encode_batch_fast (tokenizers >= 0.21) skips the offsets this does not need.
        encode = getattr(self.tok, "encode_batch_fast", self.tok.encode_batch)
        encodings = encode(lines, add_special_tokens=False)
        lengths = np.fromiter((len(e.ids) for e in encodings), dtype=np.int64, count=len(lines))
        ids = np.fromiter((i for e in encodings for i in e.ids), dtype=self.dtype, count=int(lengths.sum()))
        return ids, lengths

    def word_starts(self, lines: list[str], char_starts: list[np.ndarray]) -> bytes:
        """uint8 per token of ``lines``: 1 where a whole word starts.

        A token starts a word when it is the first piece of its pre-tokenized
        word (never a "##" continuation) and ``char_starts`` (jieba's word
        starts per character of the sentence) marks its first character, so
        the pieces of "Python" and the characters of "模型" are masked together.
        """
        out = []
        for enc, starts in zip(self.tok.encode_batch(lines, add_special_tokens=False), char_starts):
            # A special token written in the text ("[MASK]") has no word: it is a word of its own.
            words = np.asarray([w if w is not None else -1 - k for k, w in enumerate(enc.word_ids)],
                               dtype=np.int64)
            first_piece = np.ones(len(words), dtype=bool)
            first_piece[1:] = words[1:] != words[:-1]
            begin = np.fromiter((s for s, _ in enc.offsets), dtype=np.int64, count=len(words))
            out.append((first_piece & (starts[begin] == 1)).astype(np.uint8))
        return np.concatenate(out).tobytes() if out else b""
