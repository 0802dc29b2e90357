"""Training sequences, micro-batches and the fixed held-out evaluation set.

Packing: the sentences of a document are concatenated, in order, into
sequences of ``seq_len`` tokens (``[CLS] ... [SEP]``); when a document ends
before the sequence is full, the next document follows after a ``[SEP]``,
and a sentence that does not fit continues in the next sequence, so no
padding is wasted. With ``short_seq_prob`` that share of training sequences is
cut short at a random length and padded, as BERT does. With ``nsp`` the examples are
sentence pairs instead (50 % the next sentence of the same document, 50 % a
random sentence of another document), padded per batch with the padding
masked out of attention.

The data order is a pure function of (seed, epoch) and the masks of a
micro-batch a pure function of (seed, micro-batch number), so the data
position of a run is just the number of micro-batches it consumed.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from bertcurve import layout
from bertcurve.data.datadir import SplitArrays
from bertcurve.errors import UserError
from bertcurve.training import seeds
from bertcurve.training.masking import IGNORE_INDEX, mask_tokens


@dataclass(frozen=True)
class SpecialIds:
    """Ids of the special tokens and the range of real tokens for random replacement."""

    pad: int
    cls: int
    sep: int
    mask: int
    first_regular: int
    vocab_size: int

    @classmethod
    def from_tokenizer(cls, tokenizer) -> "SpecialIds":
        """The specials at whatever ids the tokenizer gives them (0..4 for bertcurve's own,
        0 and 100..103 for bert-base-chinese); random replacements are drawn above the highest."""
        ids = {name: tokenizer.convert_tokens_to_ids(name) for name in layout.SPECIAL_TOKENS}
        n_special = len(layout.SPECIAL_TOKENS)
        size = len(tokenizer)
        # An unknown token maps to the [UNK] id, so a missing special shows up as a duplicate id.
        bad = [name for name, i in ids.items() if i is None or not 0 <= i < size]
        if bad or len(set(ids.values())) != n_special:
            raise UserError(
                f"tokenizer lacks distinct ids for the special tokens {bad or list(ids)}; "
                "prepare with a tokenizer that has [PAD] [UNK] [CLS] [SEP] [MASK] (`bertcurve prepare --force`)"
            )
        first_regular = max(ids.values()) + 1
        if first_regular >= size:
            raise UserError(f"tokenizer has no regular token after its special tokens (ids {sorted(ids.values())})")
        return cls(pad=ids["[PAD]"], cls=ids["[CLS]"], sep=ids["[SEP]"], mask=ids["[MASK]"],
                   first_regular=first_regular, vocab_size=size)


@dataclass
class QueryPositions:
    """Where the model must compute its last encoder layer: the masked tokens, and [CLS] with NSP.

    The losses read the last layer nowhere else, so that layer skips every
    other position (they still serve as its keys and values). Built on the
    host with the batch, so the step needs no device-to-host read to find them.
    """

    flat: torch.Tensor           # int64 [n]: row * width + column, row-major
    slot: torch.Tensor           # int64 [n]: row * per_row + k, the place in a (rows, per_row) grid
    per_row: int                 # most positions in one row (>= 1)
    mlm: torch.Tensor | None     # int64 [n_masked]: which of the n are masked tokens (None: all)
    first: torch.Tensor | None   # int64 [rows]: which of the n are [CLS] (NSP only)

    def _map(self, fn) -> "QueryPositions":
        return QueryPositions(fn(self.flat), fn(self.slot), self.per_row,
                              None if self.mlm is None else fn(self.mlm),
                              None if self.first is None else fn(self.first))


def positions_at(rows: torch.Tensor, cols: torch.Tensor, n_rows: int, width: int) -> QueryPositions:
    """:class:`QueryPositions` for the positions ``(rows[i], cols[i])``, kept in that order."""
    by_row = torch.argsort(rows, stable=True)
    counts = torch.bincount(rows, minlength=n_rows)
    per_row = max(1, int(counts.max())) if len(rows) else 1
    rank_in_row = torch.empty_like(rows)
    rank_in_row[by_row] = (torch.arange(len(rows), device=rows.device)
                           - (counts.cumsum(0) - counts)[rows[by_row]])
    return QueryPositions(flat=rows * width + cols, slot=rows * per_row + rank_in_row,
                          per_row=per_row, mlm=None, first=None)


def query_positions(labels: torch.Tensor, *, with_first: bool = False) -> QueryPositions:
    """The :class:`QueryPositions` of a batch with these labels (``with_first``: add column 0)."""
    need = labels != IGNORE_INDEX
    if with_first:
        need = need.clone()
        need[:, 0] = True
    rows, cols = need.nonzero(as_tuple=True)
    pos = positions_at(rows, cols, *labels.shape)
    if with_first:
        pos.mlm = (cols != 0).nonzero().squeeze(1)
        pos.first = (cols == 0).nonzero().squeeze(1)
    return pos


@dataclass
class Batch:
    """One micro-batch, masked and ready for the model."""

    input_ids: torch.Tensor
    labels: torch.Tensor
    attention_mask: torch.Tensor | None      # None when no row is padded
    token_type_ids: torch.Tensor | None      # None outside NSP
    next_sentence_label: torch.Tensor | None  # 0 = B follows A, 1 = random B
    n_tokens: int                            # real (non-padding) tokens
    n_masked: int
    positions: QueryPositions | None = None  # None: found from the labels when needed

    def _map(self, fn) -> "Batch":
        def opt(t):
            return None if t is None else fn(t)
        return Batch(fn(self.input_ids), fn(self.labels), opt(self.attention_mask),
                     opt(self.token_type_ids), opt(self.next_sentence_label),
                     self.n_tokens, self.n_masked,
                     None if self.positions is None else self.positions._map(fn))

    def to(self, device: torch.device) -> "Batch":
        return self._map(lambda t: t.to(device, non_blocking=True))

    def pin(self) -> "Batch":
        """A copy in page-locked memory, so ``to(cuda)`` copies asynchronously."""
        return self._map(lambda t: t.pin_memory())


@dataclass(frozen=True)
class PackedIndex:
    """Sequence i is segments ``seq_offsets[i]:seq_offsets[i+1]`` joined by [SEP]."""

    seg_start: np.ndarray   # int64 token offsets into the split's ids
    seg_end: np.ndarray
    seq_offsets: np.ndarray  # int64, n_sequences + 1

    def __len__(self) -> int:
        return len(self.seq_offsets) - 1


def pack_sequences(split: SplitArrays, seq_len: int) -> PackedIndex:
    """Pack the split's sentences, in order, into full sequences of ``seq_len`` tokens.

    Sentences of a document follow each other directly (they are contiguous
    in the ids, so they merge into one segment); the next document follows
    after a [SEP]. A sentence that does not fit into what is left of a
    sequence continues in the next one, so every sequence but the last is
    exactly ``seq_len`` tokens long and no batch needs padding.
    """
    cap = seq_len - 2
    sent = np.asarray(split.sentence_offsets, dtype=np.int64)
    docs = np.asarray(split.document_offsets, dtype=np.int64)
    seg_start: list[int] = []
    seg_end: list[int] = []
    seq_offsets: list[int] = [0]
    cur_len = 0      # content tokens + internal [SEP]s of the open sequence
    last_doc = -1    # document of the open sequence's last segment
    for d in range(len(docs) - 1):
        # A document's sentences are one contiguous token range.
        a, b = int(sent[docs[d]]), int(sent[docs[d + 1]])
        while a < b:
            joins = cur_len > 0 and last_doc == d and seg_end[-1] == a
            sep = 0 if (cur_len == 0 or joins) else 1
            room = cap - cur_len - sep
            if room <= 0:
                seq_offsets.append(len(seg_start))
                cur_len = 0
                continue
            take = min(b - a, room)
            if joins:
                seg_end[-1] = a + take
            else:
                seg_start.append(a)
                seg_end.append(a + take)
            cur_len += sep + take
            last_doc = d
            a += take
            if cur_len >= cap:
                seq_offsets.append(len(seg_start))
                cur_len = 0
    if cur_len > 0:
        seq_offsets.append(len(seg_start))
    return PackedIndex(np.asarray(seg_start, dtype=np.int64), np.asarray(seg_end, dtype=np.int64),
                       np.asarray(seq_offsets, dtype=np.int64))


class PackedSequences:
    """Token ids (and word starts) of the packed sequences of one split."""

    def __init__(self, split: SplitArrays, seq_len: int, special: SpecialIds, whole_word: bool):
        if whole_word and split.word_starts is None:
            raise UserError(
                "--whole-word needs word boundaries, but this data directory has none; "
                "re-run `bertcurve prepare --whole-word`"
            )
        self.split = split
        self.special = special
        self.whole_word = whole_word
        self.index = pack_sequences(split, seq_len)

    def __len__(self) -> int:
        return len(self.index)

    def sequence(self, i: int) -> tuple[np.ndarray, np.ndarray | None]:
        """ids with [CLS]/[SEP] and, with whole-word masking, word starts (0 at specials)."""
        idx = self.index
        parts: list[np.ndarray] = [np.array([self.special.cls], dtype=np.int64)]
        starts: list[np.ndarray] = [np.zeros(1, dtype=np.uint8)]
        sep = np.array([self.special.sep], dtype=np.int64)
        for k in range(int(idx.seq_offsets[i]), int(idx.seq_offsets[i + 1])):
            a, b = int(idx.seg_start[k]), int(idx.seg_end[k])
            parts.append(np.asarray(self.split.ids[a:b], dtype=np.int64))
            parts.append(sep)
            if self.whole_word:
                ws = np.array(self.split.word_starts[a:b], dtype=np.uint8)
                if len(ws):
                    ws[0] = 1  # a piece cut out of a long sentence starts a word
                starts += [ws, np.zeros(1, dtype=np.uint8)]
        ids = np.concatenate(parts)
        return ids, (np.concatenate(starts) if self.whole_word else None)


class SentencePairs:
    """NSP examples: sentence A with a next sentence in its document, and a B."""

    def __init__(self, split: SplitArrays, seq_len: int, special: SpecialIds):
        self.split = split
        self.special = special
        self.seq_len = seq_len
        sent = np.asarray(split.sentence_offsets, dtype=np.int64)
        docs = np.asarray(split.document_offsets, dtype=np.int64)
        lengths = np.diff(sent)
        doc_of = np.repeat(np.arange(len(docs) - 1), np.diff(docs))
        has_next = np.zeros(len(lengths), dtype=bool)
        if len(lengths) > 1:
            has_next[:-1] = (doc_of[:-1] == doc_of[1:]) & (lengths[:-1] > 0) & (lengths[1:] > 0)
        self.first = np.nonzero(has_next)[0]
        self.doc_of = doc_of
        if len(self.first) == 0:
            raise UserError(
                "--nsp needs documents with at least two sentences, and this split has none; "
                "train without --nsp or prepare a corpus with multi-sentence documents"
            )
        if len(docs) - 1 < 2:
            raise UserError("--nsp needs at least two documents to draw random sentences from")

    def __len__(self) -> int:
        return len(self.first)

    def pair(self, i: int, gen: np.random.Generator) -> tuple[np.ndarray, np.ndarray, int]:
        """(ids, token_type_ids, label) of example i; ``gen`` decides adjacent or random."""
        split = self.split
        a = int(self.first[i])
        if gen.random() < 0.5:
            b, label = a + 1, 0
        else:
            label = 1
            b = a
            for _ in range(10):  # a B from another document; give up after 10 draws
                b = int(gen.integers(0, split.n_sentences))
                if self.doc_of[b] != self.doc_of[a] and len(split.sentence(b)) > 0:
                    break
        ta = np.asarray(split.sentence(a), dtype=np.int64)
        tb = np.asarray(split.sentence(b), dtype=np.int64)
        budget = self.seq_len - 3
        while len(ta) + len(tb) > budget:  # truncate the longer one, like BERT
            if len(ta) >= len(tb):
                ta = ta[:-1]
            else:
                tb = tb[:-1]
        sp = self.special
        ids = np.concatenate([[sp.cls], ta, [sp.sep], tb, [sp.sep]]).astype(np.int64)
        types = np.concatenate([np.zeros(len(ta) + 2, np.int64), np.ones(len(tb) + 1, np.int64)])
        return ids, types, label


def cut_short(ids: np.ndarray, word_starts: np.ndarray | None, gen: np.random.Generator,
              sep: int) -> tuple[np.ndarray, np.ndarray | None]:
    """The sequence ``ids`` ([CLS] ... [SEP]) cut after a random 2 .. n-3 of its content tokens,
    then closed with [SEP] (BERT's short sequences; the batch pads it back).

    Sequences too short to cut come back whole.
    """
    content = len(ids) - 2
    if content < 3:
        return ids, word_starts
    keep = 1 + int(gen.integers(2, content))          # [CLS] + 2 .. content-1 tokens
    if ids[keep - 1] == sep:                          # already ends at a document boundary
        return ids[:keep], None if word_starts is None else word_starts[:keep]
    cut = np.append(ids[:keep], sep)
    return cut, None if word_starts is None else np.append(word_starts[:keep], 0).astype(np.uint8)


def _pad(rows: list[np.ndarray], value: int) -> np.ndarray:
    width = max(len(r) for r in rows)
    out = np.full((len(rows), width), value, dtype=np.int64)
    for i, r in enumerate(rows):
        out[i, :len(r)] = r
    return out


def collate(
    rows: list[np.ndarray],
    special: SpecialIds,
    *,
    mask_prob: float,
    generator: torch.Generator,
    word_starts: list[np.ndarray] | None = None,
    token_types: list[np.ndarray] | None = None,
    nsp_labels: list[int] | None = None,
) -> Batch:
    """Pad rows to the longest, mask them and build a :class:`Batch`."""
    ids = torch.from_numpy(_pad(rows, special.pad))
    lengths = torch.tensor([len(r) for r in rows])
    real = torch.arange(ids.shape[1])[None, :] < lengths[:, None]
    is_special = (~real) | (ids == special.cls) | (ids == special.sep) | (ids == special.pad)
    ws = torch.from_numpy(_pad(word_starts, 0)).bool() if word_starts is not None else None
    masked = mask_tokens(ids, is_special, mask_prob=mask_prob, mask_id=special.mask,
                         random_low=special.first_regular, random_high=special.vocab_size,
                         generator=generator, word_starts=ws)
    padded = bool((~real).any())
    return Batch(
        input_ids=masked.input_ids,
        labels=masked.labels,
        attention_mask=real.long() if padded else None,
        token_type_ids=torch.from_numpy(_pad(token_types, 0)) if token_types is not None else None,
        next_sentence_label=torch.tensor(nsp_labels) if nsp_labels is not None else None,
        n_tokens=int(lengths.sum()),
        n_masked=int((masked.labels != IGNORE_INDEX).sum()),
        positions=query_positions(masked.labels, with_first=nsp_labels is not None),
    )


class TrainStream:
    """Micro-batch number k of a run, as a pure function of (seed, k).

    Epoch e visits every example once in the order ``permutation(seed, e)``;
    micro-batch k holds examples ``k * micro_batch ... (k + 1) * micro_batch - 1``
    of that endless sequence of epochs.
    """

    def __init__(self, examples: PackedSequences | SentencePairs, *, micro_batch: int,
                 mask_prob: float, seed: int, short_seq_prob: float = 0.0):
        if len(examples) == 0:
            raise UserError("the training split has no tokens; prepare a larger corpus")
        self.examples = examples
        self.micro_batch = micro_batch
        self.mask_prob = mask_prob
        self.seed = seed
        self.short_seq_prob = short_seq_prob
        self._order = lru_cache(maxsize=2)(self._permutation)

    def _permutation(self, epoch: int) -> np.ndarray:
        return seeds.numpy_rng(self.seed, seeds.DATA_ORDER, epoch).permutation(len(self.examples))

    def example_ids(self, k: int) -> list[int]:
        n = len(self.examples)
        out = []
        for g in range(k * self.micro_batch, (k + 1) * self.micro_batch):
            out.append(int(self._order(g // n)[g % n]))
        return out

    def epoch_of(self, k: int) -> float:
        return k * self.micro_batch / len(self.examples)

    def batch(self, k: int) -> Batch:
        ex = self.examples
        gen = seeds.torch_generator(self.seed, seeds.TRAIN_MASKS, k)
        sp = ex.special
        if isinstance(ex, SentencePairs):
            pair_gen = seeds.numpy_rng(self.seed, seeds.NSP_PAIRS, k)
            rows, types, labels = [], [], []
            for i in self.example_ids(k):
                ids, tt, label = ex.pair(i, pair_gen)
                rows.append(ids)
                types.append(tt)
                labels.append(label)
            return collate(rows, sp, mask_prob=self.mask_prob, generator=gen,
                           token_types=types, nsp_labels=labels)
        seqs = [ex.sequence(i) for i in self.example_ids(k)]
        if self.short_seq_prob > 0:
            cut_gen = seeds.numpy_rng(self.seed, seeds.SHORT_SEQS, k)
            short = cut_gen.random(len(seqs)) < self.short_seq_prob
            seqs = [cut_short(ids, ws, cut_gen, sp.sep) if s else (ids, ws)
                    for (ids, ws), s in zip(seqs, short)]
        return collate([s[0] for s in seqs], sp, mask_prob=self.mask_prob, generator=gen,
                       word_starts=[s[1] for s in seqs] if ex.whole_word else None)


@dataclass
class EvalSet:
    """Fixed held-out micro-batches: the same masked tokens at every evaluation."""

    batches: list[Batch]
    masked_tokens: int
    sequences: int
    fingerprint: str   # sha256 of the inputs and labels: equal sets, equal fingerprints


def build_eval_set(
    examples: PackedSequences | SentencePairs,
    *,
    eval_tokens: int,
    mask_prob: float,
    eval_seed: int,
    batch_size: int,
) -> EvalSet:
    """Draw sequences from the validation split until ``eval_tokens`` tokens are masked.

    The order and the masks come only from ``eval_seed`` (each sequence is
    masked with its own generator), so the same data and seed give the same
    set in every run, and a larger ``eval_tokens`` extends a smaller set.
    """
    if len(examples) == 0:
        raise UserError("the validation split is empty; prepare with a validation fraction > 0")
    order = seeds.numpy_rng(eval_seed, seeds.EVAL_ORDER).permutation(len(examples))
    sp = examples.special
    masked_rows: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, int | None]] = []
    total = 0
    for i in order:
        gen = seeds.torch_generator(eval_seed, seeds.EVAL_MASKS, int(i))
        if isinstance(examples, SentencePairs):
            ids, tt, label = examples.pair(int(i), seeds.numpy_rng(eval_seed, seeds.EVAL_NSP_PAIRS, int(i)))
            b = collate([ids], sp, mask_prob=mask_prob, generator=gen, token_types=[tt],
                        nsp_labels=[label])
        else:
            ids, ws = examples.sequence(int(i))
            b = collate([ids], sp, mask_prob=mask_prob, generator=gen,
                        word_starts=[ws] if ws is not None else None)
            tt, label = None, None
        masked_rows.append((b.input_ids[0], b.labels[0], None if tt is None else b.token_type_ids[0],
                            label))
        total += b.n_masked
        if total >= eval_tokens:
            break
    # Sort by length so batches carry little padding; the set itself is unchanged.
    masked_rows.sort(key=lambda r: -len(r[0]))
    digest = hashlib.sha256()
    batches: list[Batch] = []
    for start in range(0, len(masked_rows), batch_size):
        chunk = masked_rows[start:start + batch_size]
        lengths = torch.tensor([len(r[0]) for r in chunk])
        width = int(lengths.max())
        ids = torch.full((len(chunk), width), sp.pad, dtype=torch.long)
        labels = torch.full((len(chunk), width), IGNORE_INDEX, dtype=torch.long)
        types = torch.zeros((len(chunk), width), dtype=torch.long) if chunk[0][2] is not None else None
        for j, (x, y, t, _) in enumerate(chunk):
            ids[j, :len(x)] = x
            labels[j, :len(y)] = y
            if types is not None:
                types[j, :len(t)] = t
        real = torch.arange(width)[None, :] < lengths[:, None]
        nsp = [r[3] for r in chunk]
        for t in (ids, labels):
            digest.update(t.numpy().tobytes())
        batches.append(Batch(
            input_ids=ids, labels=labels,
            attention_mask=real.long() if bool((~real).any()) else None,
            token_type_ids=types,
            next_sentence_label=torch.tensor(nsp) if nsp[0] is not None else None,
            n_tokens=int(lengths.sum()), n_masked=int((labels != IGNORE_INDEX).sum()),
            positions=query_positions(labels, with_first=nsp[0] is not None),
        ))
    return EvalSet(batches=batches, masked_tokens=total, sequences=len(masked_rows),
                   fingerprint=digest.hexdigest())


def make_examples(split: SplitArrays, *, seq_len: int, special: SpecialIds, whole_word: bool,
                  nsp: bool) -> PackedSequences | SentencePairs:
    """The training/eval examples of a split for the chosen objective."""
    if nsp:
        return SentencePairs(split, seq_len, special)
    return PackedSequences(split, seq_len, special, whole_word)


class Prefetcher:
    """Builds the micro-batches of upcoming steps on a background thread.

    ``make(step)`` must be a pure function of the step (``TrainStream`` is),
    so building ahead changes nothing but the time the GPU waits. With
    ``pin`` the batches land in page-locked memory for asynchronous copies.
    """

    def __init__(self, make, first_step: int, last_step: int, *, depth: int = 4, pin: bool = False):
        import queue
        import threading

        self._make, self._pin = make, pin
        self._queue: "queue.Queue" = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._work, args=(first_step, last_step),
                                        name="bertcurve-prefetch", daemon=True)
        self._thread.start()

    def _put(self, item) -> bool:
        import queue

        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _work(self, first_step: int, last_step: int) -> None:
        for step in range(first_step, last_step + 1):
            try:
                batches = self._make(step)
                if self._pin:
                    batches = [b.pin() for b in batches]
            except BaseException as exc:  # handed to the training thread, raised there
                self._put((step, exc))
                return
            if not self._put((step, batches)):
                return

    def get(self, step: int) -> list[Batch]:
        """The micro-batches of ``step`` (steps must be asked for in order)."""
        got, batches = self._queue.get()
        if isinstance(batches, BaseException):
            raise batches
        if got != step:
            raise RuntimeError(f"prefetcher out of order: wanted step {step}, got {got}")
        return batches

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
