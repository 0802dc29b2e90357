"""prepare on inputs that change while read, and on legacy encodings (Big5, GBK, UTF-16)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from bertcurve import layout
from bertcurve.data import corpus
from bertcurve.errors import UserError
from bertcurve.stages.prepare import prepare
from reltools import REAL_SENTENCES

LENIENT = dict(min_chars=5, val_fraction=0.5, progress=False)
TRADITIONAL = [
    "今天天氣很好，我們去公園散步，順便買了幾本書。",
    "這家餐廳的服務態度非常好，菜也很好吃，價格合理，下次還會再來。",
    "臺灣的夜市文化很有名，每到晚上都有許多觀光客。",
    "這本書的內容很充實，作者用通俗易懂的語言講述歷史。",
    "飯店離捷運站只有五分鐘，房間乾淨整潔，櫃檯人員也很熱情。",
    "早餐的種類比較少，而且味道一般，不過價格還算合理。",
]


def _corpus(tmp_path: Path, lines: int = 3000) -> Path:
    path = tmp_path / "corpus.txt"
    with open(path, "w", encoding="utf-8") as handle:
        for i in range(lines):
            handle.write(f"{REAL_SENTENCES[i % len(REAL_SENTENCES)]}第{i}条。\n")
    return path


def _change_after_open(monkeypatch, change) -> None:
    """Apply ``change(path)`` right after prepare opens an input for reading (after it was hashed)."""
    real = corpus._open_counted

    def opened(path: Path):
        handles = real(path)
        change(Path(path))
        return handles

    monkeypatch.setattr(corpus, "_open_counted", opened)


@pytest.mark.parametrize("change", ["truncate", "append", "rewrite-same-size"])
def test_a_file_changed_while_read_is_refused(tmp_path, monkeypatch, change):
    src = _corpus(tmp_path)
    original = src.read_bytes()

    def mutate(path: Path) -> None:
        if change == "truncate":
            os.truncate(path, len(original) // 20)
        elif change == "append":
            with open(path, "ab") as handle:
                handle.write(("新的一行内容，正在写入。\n" * 100).encode())
        else:
            path.write_bytes(original.replace("酒店".encode(), "旅馆".encode()))

    _change_after_open(monkeypatch, mutate)
    out = tmp_path / "data"
    with pytest.raises(UserError, match="changed while prepare read it"):
        prepare([src], out, **LENIENT)
    assert not out.exists()
    monkeypatch.undo()
    src.write_bytes(original)  # restored: a real build, not "up to date"
    prepare([src], out, **LENIENT)
    meta = json.loads((out / layout.DATA_META).read_text())
    assert meta["sources"][0]["sha256"] == hashlib.sha256(original).hexdigest()


def test_truncated_while_read_with_an_early_stop(tmp_path, monkeypatch):
    """Even when prepare stops before the end (--max-sentences) the change is seen (size/mtime)."""
    src = _corpus(tmp_path)
    _change_after_open(monkeypatch, lambda p: os.truncate(p, p.stat().st_size - 100))
    with pytest.raises(UserError, match="changed while prepare read it"):
        prepare([src], tmp_path / "data", max_sentences=50, **LENIENT)


def test_the_recorded_hash_is_of_what_was_read(tmp_path):
    src = _corpus(tmp_path, 500)
    out = prepare([src], tmp_path / "data", **LENIENT)
    meta = json.loads((out / layout.DATA_META).read_text())
    assert meta["sources"][0]["sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()


def _write(tmp_path: Path, lines: list[str], encoding: str, name: str = "big.txt", bom: bytes = b"") -> Path:
    path = tmp_path / name
    path.write_bytes(bom + ("\n".join(lines * 20) + "\n").encode(encoding))
    return path


def test_big5_is_diagnosed_as_big5_and_reads_right(tmp_path):
    path = _write(tmp_path, TRADITIONAL, "big5")
    with pytest.raises(UserError, match=r"Big5.*--encoding big5"):
        prepare([path], tmp_path / "a", **LENIENT)
    with pytest.raises(UserError, match=r"does not read as gb18030.*--encoding big5"):
        prepare([path], tmp_path / "b", encoding="gb18030", **LENIENT)  # the old advice: refused, not garbled
    out = prepare([path], tmp_path / "c", encoding="big5", **LENIENT)
    text = (out / layout.VAL_TEXT).read_text(encoding="utf-8") + (out / layout.VOCAB_TXT).read_text()
    assert "們" in text and "氣" in text and "\ufffd" not in text


def test_gbk_is_diagnosed_as_gbk(tmp_path):
    path = _write(tmp_path, REAL_SENTENCES, "gb18030", "gbk.txt")
    with pytest.raises(UserError, match=r"GBK.*--encoding gb18030"):
        prepare([path], tmp_path / "a", **LENIENT)
    with pytest.raises(UserError, match=r"does not read as big5.*--encoding gb18030"):
        prepare([path], tmp_path / "b", encoding="big5", **LENIENT)
    prepare([path], tmp_path / "c", encoding="gb18030", **LENIENT)


@pytest.mark.parametrize("codec,bom,advice", [("utf-16-le", b"\xff\xfe", "utf-16"), ("utf-16-be", b"\xfe\xff", "utf-16"),
                                              ("utf-16-le", b"", "utf-16-le")])
def test_utf16_is_diagnosed_and_reads(tmp_path, codec, bom, advice):
    path = _write(tmp_path, REAL_SENTENCES, codec, "u16.txt", bom)
    with pytest.raises(UserError, match=f"UTF-16.*--encoding {advice}$"):
        prepare([path], tmp_path / "a", **LENIENT)
    out = prepare([path], tmp_path / "b", encoding=advice, **LENIENT)
    text = (out / layout.VOCAB_TXT).read_text() + (out / layout.VAL_TEXT).read_text()
    assert "的" in text and "酒" in text and "\ufffd" not in text
