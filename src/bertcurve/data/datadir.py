"""Read (and write the arrays of) a prepared data directory.

The format is documented in ``docs/data-dir.md``; file names live in
:mod:`bertcurve.layout`. ``bertcurve prepare`` writes it, ``bertcurve train``
reads it through :class:`DataDir`, memory-mapped so RAM does not grow with
the corpus.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from bertcurve import layout
from bertcurve.errors import UserError
from bertcurve.fsutil import read_json


@dataclass(frozen=True)
class SplitArrays:
    """The memory-mapped arrays of one split."""

    ids: np.ndarray                 # uint16 or uint32 (meta.json id_dtype), all tokens of all sentences back to back
    sentence_offsets: np.ndarray    # int64, n_sentences + 1
    document_offsets: np.ndarray    # int64, n_documents + 1 (indices into sentences)
    word_starts: np.ndarray | None  # uint8 per token, or None without --whole-word

    @property
    def n_sentences(self) -> int:
        return len(self.sentence_offsets) - 1

    @property
    def n_documents(self) -> int:
        return len(self.document_offsets) - 1

    def sentence(self, i: int) -> np.ndarray:
        return self.ids[self.sentence_offsets[i]:self.sentence_offsets[i + 1]]


def _memmap(path: Path, dtype: Any) -> np.ndarray:
    size = path.stat().st_size
    if size % np.dtype(dtype).itemsize:  # cut short (a copy or a disk that filled up)
        raise UserError(f"{path} is damaged: {size:,} bytes is not a whole number of "
                        f"{np.dtype(dtype).itemsize}-byte values; re-run `bertcurve prepare --force`")
    if size == 0:
        return np.zeros(0, dtype=dtype)
    return np.memmap(path, dtype=dtype, mode="r")


class DataDir:
    """A prepared data directory: ``meta``, ``tokenizer()`` and ``split(name)``."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        meta_path = self.path / layout.DATA_META
        if not meta_path.is_file():
            raise UserError(
                f"{self.path} is not a prepared data directory (no {layout.DATA_META}); "
                f"create one with `bertcurve prepare INPUT --out {self.path}`"
            )
        self.meta: dict[str, Any] = read_json(meta_path, "data set metadata")
        if not isinstance(self.meta, dict):
            raise UserError(f"{meta_path} is not a JSON object (found a {type(self.meta).__name__}); "
                            "the data directory is damaged - re-run `bertcurve prepare --force`")
        fmt = self.meta.get("format")
        if fmt != layout.DATA_FORMAT:
            raise UserError(
                f"{meta_path} has format {fmt!r}, this bertcurve reads {layout.DATA_FORMAT!r}; "
                "re-run `bertcurve prepare --force`"
            )

    @cached_property
    def vocab_size(self) -> int:
        return int(self.meta["vocab_size"])

    @cached_property
    def id_dtype(self) -> str:
        """``uint16`` or ``uint32``: how token ids are stored (data dirs before uint32 omit it: uint16)."""
        dtype = self.meta.get("id_dtype", "uint16")
        if dtype not in layout.ID_DTYPES:
            raise UserError(
                f"{self.path / layout.DATA_META} has id_dtype {dtype!r}, this bertcurve reads "
                f"{' or '.join(layout.ID_DTYPES)}; re-run `bertcurve prepare --force`"
            )
        return dtype

    def tokenizer(self):
        """The saved tokenizer (``transformers.PreTrainedTokenizerFast``)."""
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(self.path))
        if len(tok) != self.vocab_size:
            raise UserError(
                f"tokenizer in {self.path} has {len(tok)} tokens but meta.json says "
                f"{self.vocab_size}; re-run `bertcurve prepare --force`"
            )
        return tok

    def split(self, name: str) -> SplitArrays:
        if name not in layout.SPLITS:
            raise ValueError(f"unknown split {name!r}")
        try:
            ids = _memmap(self.path / layout.ids_file(name, self.id_dtype), np.dtype(self.id_dtype))
            sent = np.fromfile(self.path / layout.sentence_offsets_file(name), dtype=np.int64)
            docs = np.fromfile(self.path / layout.document_offsets_file(name), dtype=np.int64)
        except FileNotFoundError as exc:
            raise UserError(
                f"data directory {self.path} is incomplete ({Path(exc.filename).name} missing); "
                "re-run `bertcurve prepare --force`"
            ) from None
        ws_path = self.path / layout.word_starts_file(name)
        word_starts = _memmap(ws_path, np.uint8) if ws_path.exists() else None
        if len(sent) == 0 or sent[-1] != len(ids) or (len(docs) and docs[-1] != len(sent) - 1):
            raise UserError(
                f"data directory {self.path}: {name} offsets do not match its token ids; "
                "re-run `bertcurve prepare --force`"
            )
        return SplitArrays(ids, sent, docs, word_starts)


def write_split_arrays(
    out_dir: Path,
    split: str,
    ids: np.ndarray,
    sentence_offsets: np.ndarray,
    document_offsets: np.ndarray,
    word_starts: np.ndarray | None = None,
) -> None:
    """Write one split's arrays in the documented layout (used by test fixtures).

    ``ids`` keep their dtype when it is uint32 and become uint16 otherwise;
    meta.json's ``id_dtype`` must say the same.
    """
    out_dir = Path(out_dir)
    dtype = "uint32" if np.asarray(ids).dtype == np.uint32 else "uint16"
    np.asarray(ids, dtype=dtype).tofile(out_dir / layout.ids_file(split, dtype))
    np.asarray(sentence_offsets, dtype=np.int64).tofile(out_dir / layout.sentence_offsets_file(split))
    np.asarray(document_offsets, dtype=np.int64).tofile(out_dir / layout.document_offsets_file(split))
    if word_starts is not None:
        np.asarray(word_starts, dtype=np.uint8).tofile(out_dir / layout.word_starts_file(split))
