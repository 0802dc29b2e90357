"""Hostile corpus input: `prepare` never crashes, never hangs, never half-writes.

Either a valid data directory comes out, or a :class:`UserError` (on the CLI:
exit 2 and one ``bertcurve: error:`` line, no traceback) and nothing at --out.
"""

from __future__ import annotations

import codecs
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bertcurve.errors import UserError
from bertcurve.stages.prepare import prepare
from reltools import (
    EMOJI, ODD_SEPARATORS, REAL_SENTENCES, RTL_AND_FORMAT, assert_clean_failure, run_cli, valid_data_dir,
)

# Lenient settings so that hostile files which still hold Chinese can succeed.
LENIENT = dict(min_chars=5, val_fraction=0.5, progress=False)


def _prepare_or_refuse(path: Path, out: Path, **options) -> str:
    """Run prepare; return "ok" (after checking the data dir) or "refused" (after checking nothing is left)."""
    try:
        prepare([path], out, **{**LENIENT, **options})
    except UserError as exc:
        message = str(exc)
        assert message and "\n" not in message.strip(), message
        assert not out.exists(), "a refused input left an output directory behind"
        assert not [p for p in out.parent.iterdir() if ".staging-" in p.name]
        return "refused"
    valid_data_dir(out)
    return "ok"


# ------------------------------------------------------------------ hypothesis
_piece = st.one_of(
    st.sampled_from(REAL_SENTENCES),
    st.text(min_size=0, max_size=40),                                   # any Unicode (no surrogates)
    st.text(alphabet=st.characters(categories=["Cs", "Co", "Cc", "Cf", "Mn", "Zl", "Zp"]), max_size=20),
    st.sampled_from(RTL_AND_FORMAT + EMOJI + ODD_SEPARATORS + ["\x00", "\n", "\n\n"]),
)
_encodings = st.sampled_from(["utf-8", "utf-8-surrogates", "gb18030", "utf-16-le", "big5", "raw"])


def _encode(text: str, encoding: str, raw: bytes) -> bytes:
    if encoding == "raw":
        return raw
    if encoding == "utf-8-surrogates":
        return text.encode("utf-8", "surrogatepass")   # lone surrogates as CESU bytes: invalid UTF-8
    return text.encode(encoding, "replace" if encoding != "utf-16-le" else "surrogatepass")


@st.composite
def hostile_files(draw):
    """(suffix, bytes): a mix of real Chinese, odd Unicode and wrongly encoded pieces."""
    chunks = []
    for _ in range(draw(st.integers(1, 12))):
        text = "".join(draw(st.lists(_piece, min_size=1, max_size=6)))
        chunks.append(_encode(text, draw(_encodings), draw(st.binary(max_size=64))))
    kind = draw(st.sampled_from(["txt", "jsonl", "json"]))
    if kind == "txt":
        return ".txt", b"\n".join(chunks)
    if kind == "jsonl":
        lines = []
        for c in chunks:
            text = c.decode("utf-8", "surrogateescape")
            style = draw(st.integers(0, 4))
            if style == 0:
                lines.append(json.dumps({"text": text}, ensure_ascii=draw(st.booleans())).encode("utf-8", "surrogatepass"))
            elif style == 1:
                depth = draw(st.integers(1, 5000))
                lines.append(b"[" * depth + b"]" * depth)
            elif style == 2:
                lines.append(json.dumps({"text": [text, 3, None]}).encode())
            elif style == 3:
                lines.append(c)
            else:
                lines.append(json.dumps({"other": text}).encode())
        return ".jsonl", b"\n".join(lines)
    items = [c.decode("utf-8", "surrogateescape") for c in chunks]
    doc = {"sentences": items} if draw(st.booleans()) else items
    return ".json", json.dumps(doc).encode("utf-8", "surrogatepass")


@pytest.mark.slow
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(case=hostile_files())
def test_hostile_files_give_a_data_dir_or_a_one_line_refusal(case, tmp_path_factory):
    suffix, data = case
    folder = tmp_path_factory.mktemp("hyp")
    path = folder / f"corpus{suffix}"
    path.write_bytes(data)
    _prepare_or_refuse(path, folder / "out")


@pytest.mark.slow
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(extra=st.lists(st.sampled_from(RTL_AND_FORMAT + EMOJI + ["\x00", "\ud800", "\udfff", "\u0301"]),
                      min_size=1, max_size=8),
       position=st.integers(0, 30))
def test_real_text_with_odd_characters_still_makes_a_clean_data_set(extra, position, tmp_path_factory):
    """Odd characters inside real sentences are dropped; the rest of the sentence survives."""
    folder = tmp_path_factory.mktemp("odd")
    lines = [s[:position] + "".join(extra) + s[position:] for s in REAL_SENTENCES]
    path = folder / "corpus.jsonl"
    path.write_text("\n".join(json.dumps({"text": line}) for line in lines) + "\n", encoding="utf-8")
    assert _prepare_or_refuse(path, folder / "out") == "ok"
    text = (folder / "out" / "val.txt").read_text(encoding="utf-8")
    for ch in set(extra) - set(EMOJI) - {"\u0301"}:  # control/format/surrogates carry no text
        assert ch not in text, f"{ch!r} survived cleaning"


# ------------------------------------------------------------------ specific hostile files
def _write(folder: Path, name: str, data: bytes) -> Path:
    path = folder / name
    path.write_bytes(data)
    return path


def test_deeply_nested_json_is_refused_in_one_line(tmp_path):
    """The JSON parser's recursion limit must not surface as a RecursionError traceback."""
    deep = _write(tmp_path, "deep.json", b"[" * 200_000 + b"]" * 200_000)
    proc = run_cli("prepare", str(deep), "--out", str(tmp_path / "o1"), "--quiet")
    assert "nested too deeply" in assert_clean_failure(proc, code=2)
    assert not (tmp_path / "o1").exists()
    good = "\n".join(json.dumps({"text": s}) for s in REAL_SENTENCES * 2)
    nested = _write(tmp_path, "mixed.jsonl",
                    (good + "\n" + "[" * 100_000 + "]" * 100_000 + "\n" + '{"text":' + '{"a":' * 50_000
                     + "1" + "}" * 50_000 + "}\n").encode())
    # Deep lines are skipped like other malformed lines and the good ones are used...
    assert _prepare_or_refuse(nested, tmp_path / "o2") == "ok"
    # ...and with --strict they stop the run with a one-line message.
    with pytest.raises(UserError, match="nested too deeply"):
        prepare([nested], tmp_path / "o3", strict=True, **LENIENT)


HOSTILE_FILES = {
    "random.bin": lambda: os.urandom(50_000),
    "nul_late.txt": lambda: ("\n".join(REAL_SENTENCES) * 30).encode() + b"\x00" * 1000 + b"\n",
    "utf8_then_gbk.txt": lambda: ("\n".join(REAL_SENTENCES) * 40 + "\n").encode()
    + "\n".join(REAL_SENTENCES).encode("gbk"),
    "utf16_no_bom.txt": lambda: "\n".join(REAL_SENTENCES).encode("utf-16-le"),
    "lone_surrogates.txt": lambda: "\n".join(s + "\ud83d" for s in REAL_SENTENCES).encode("utf-8", "surrogatepass"),
    "only_cr.txt": lambda: b"\r" * 200_000,
    "empty.txt": lambda: b"",
    "bom_only.txt": lambda: codecs.BOM_UTF8,
    "giant_line_at_eof.txt": lambda: ("\n".join(REAL_SENTENCES) + "\n").encode() + "汉".encode() * 1_200_000,
    "not_json.json": lambda: b'{"sentences": ["\\ud800\\udc00\\ud800", 1, 2',
    "jsonl_wrong_types.jsonl": lambda: b'{"text": 5}\n[1,2]\n"x"\nnull\n' * 40,
    "rtl_emoji.jsonl": lambda: "\n".join(json.dumps({"text": "\u202e" + s + "👨‍👩‍👧‍👦\u200f"}, ensure_ascii=False)
                                         for s in REAL_SENTENCES).encode(),
}


@pytest.mark.parametrize("name", sorted(HOSTILE_FILES))
def test_cli_on_hostile_files_exits_cleanly(tmp_path, name):
    """Through the real CLI: exit 0 with a valid data dir, or exit 2 with one error line."""
    path = _write(tmp_path, name, HOSTILE_FILES[name]())
    out = tmp_path / "out"
    proc = run_cli("prepare", str(path), "--out", str(out), "--min-chars", "5", "--val-fraction", "0.5",
                   "--quiet", timeout=120)
    assert "Traceback" not in proc.stderr, proc.stderr
    if proc.returncode == 0:
        valid_data_dir(out)
    else:
        assert_clean_failure(proc, code=2)
        assert not out.exists()


def test_time_per_megabyte_is_bounded(tmp_path):
    """A 4 MB hostile mix (long lines, odd separators, emoji, RTL, NULs late) finishes in bounded time."""
    parts = []
    for i in range(4000):
        s = REAL_SENTENCES[i % len(REAL_SENTENCES)]
        parts.append(f"{i}{s}{EMOJI[i % len(EMOJI)]}{RTL_AND_FORMAT[i % len(RTL_AND_FORMAT)]}{s[::-1]}")
    body = "\n".join(parts) + "\n"
    body += ("汉字" * 300_000) + "\n"                    # one 600k-character line
    body += "\u2028".join(REAL_SENTENCES) * 200 + "\n"   # Unicode line separators inside a line
    body += "\x00".join(REAL_SENTENCES) * 50 + "\n"      # NULs after the binary sniffing window
    path = _write(tmp_path, "mix.txt", body.encode("utf-8"))
    megabytes = path.stat().st_size / 1e6
    started = time.perf_counter()
    assert _prepare_or_refuse(path, tmp_path / "out", min_chars=5) == "ok"
    seconds = time.perf_counter() - started
    # Measured ~0.5 s/MB here; 15 s/MB leaves room for a loaded CI machine and still catches a hang
    # or a quadratic blow-up.
    assert seconds / megabytes < 15, f"{seconds:.1f}s for {megabytes:.1f} MB"


# ------------------------------------------------------------------ atheris
@pytest.mark.slow
def test_atheris_fuzzing_finds_no_crash(tmp_path):
    """Coverage-guided fuzzing of prepare's readers (skipped where atheris is not installed)."""
    pytest.importorskip("atheris")
    corpus = tmp_path / "seeds"
    corpus.mkdir()
    (corpus / "txt").write_bytes(b"t" + "\n".join(REAL_SENTENCES[:4]).encode())
    (corpus / "jsonl").write_bytes(b"l" + "\n".join(json.dumps({"text": s}) for s in REAL_SENTENCES[:4]).encode())
    (corpus / "json").write_bytes(b"j" + json.dumps({"sentences": REAL_SENTENCES[:4]}).encode())
    harness = Path(__file__).with_name("fuzz_prepare.py")
    proc = subprocess.run(
        [sys.executable, str(harness), str(corpus), "-runs=400", "-max_total_time=10", "-max_len=4096",
         f"-artifact_prefix={tmp_path}/"],
        capture_output=True, text=True, timeout=180, cwd=tmp_path)
    tail = "\n".join(proc.stderr.splitlines()[-25:])
    assert proc.returncode == 0, tail
    assert "Done" in proc.stderr or "DONE" in proc.stderr, tail


def _limit_file_size(limit: int):
    def apply() -> None:
        import resource
        import signal

        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def test_full_disk_while_preparing_is_one_line_and_keeps_the_old_data_dir(tmp_path, hostile_ok_corpus):
    """A real kernel write limit (ulimit -f) mid-write: one line, no half data dir, old one intact."""
    out = tmp_path / "data"
    corpus = tmp_path / "big.txt"
    corpus.write_text("\n".join(f"{i}{s}" for i in range(3000) for s in REAL_SENTENCES[:2]) + "\n",
                      encoding="utf-8")
    prepare([hostile_ok_corpus], out, min_chars=5, val_fraction=0.5, progress=False)
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    proc = subprocess.run([sys.executable, "-m", "bertcurve", "prepare", str(corpus), "--out", str(out),
                           "--force", "--min-chars", "5", "--quiet"], capture_output=True, text=True,
                          timeout=120, preexec_fn=_limit_file_size(100_000))
    line = assert_clean_failure(proc)
    assert "too large" in line.lower() or "space" in line.lower(), line
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
