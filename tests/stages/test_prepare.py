"""`bertcurve prepare` end to end: the data directory a trainer relies on."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bertcurve import cli, layout
from bertcurve.data.datadir import DataDir
from bertcurve.errors import UserError
from bertcurve.stages.prepare import is_validation_document, prepare


def test_tiny_data_dir_is_a_complete_data_directory(tiny_data_dir):
    data = DataDir(tiny_data_dir)
    meta = data.meta
    assert meta["format"] == layout.DATA_FORMAT
    assert meta["vocab_size"] == len(data.tokenizer())
    assert list(meta["special_tokens"]) == list(layout.SPECIAL_TOKENS)
    total = 0
    for split in layout.SPLITS:
        arrays = data.split(split)
        assert arrays.n_sentences == meta["splits"][split]["sentences"] > 0
        assert arrays.n_documents == meta["splits"][split]["documents"] > 0
        assert arrays.ids.dtype == np.uint16 and len(arrays.ids) == meta["splits"][split]["tokens"]
        assert arrays.ids.max() < meta["vocab_size"]
        lengths = np.diff(arrays.sentence_offsets)
        assert lengths.min() >= meta["config"]["min_chars"] and lengths.max() <= meta["config"]["max_chars"]
        assert arrays.word_starts is not None and len(arrays.word_starts) == len(arrays.ids)
        # every sentence starts a word
        assert np.all(arrays.word_starts[arrays.sentence_offsets[:-1]] == 1)
        sources = np.fromfile(tiny_data_dir / layout.sentence_sources_file(split), dtype=np.uint16)
        assert len(sources) == arrays.n_sentences and sources.max() < len(meta["sources"])
        total += arrays.n_sentences
    assert total == meta["sentences_kept"] == 3000
    assert (tiny_data_dir / layout.DATA_CARD).read_text(encoding="utf-8").startswith("# Dataset card")


def test_autotokenizer_encodes_every_validation_sentence_to_the_stored_ids(tiny_data_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_data_dir), local_files_only=True)
    val = DataDir(tiny_data_dir).split("val")
    lines = (tiny_data_dir / layout.VAL_TEXT).read_text(encoding="utf-8").splitlines()
    assert len(lines) == val.n_sentences
    encoded = tok(lines, add_special_tokens=False)["input_ids"]
    mismatches = [k for k, ids in enumerate(encoded) if val.sentence(k).tolist() != ids]
    assert mismatches == []
    # and decodes back to the sentence text (no spaces between characters)
    assert tok.decode(val.sentence(0).tolist()) == lines[0].replace(" ", "")


def test_word_starts_follow_jieba(tiny_data_dir):
    import jieba

    val = DataDir(tiny_data_dir).split("val")
    line = (tiny_data_dir / layout.VAL_TEXT).read_text(encoding="utf-8").splitlines()[0]
    starts = val.word_starts[val.sentence_offsets[0]:val.sentence_offsets[1]]
    expected = []
    for word in jieba.cut(line.replace(" ", "")):
        expected += [1] + [0] * (len(word) - 1)
    assert starts.tolist() == expected


def test_split_is_by_document_content_and_stable():
    docs = [[f"第{i}篇文章的内容。"] for i in range(2000)]
    flags = [is_validation_document(d, 0.1) for d in docs]
    assert 120 < sum(flags) < 280
    # the same document lands on the same side whatever else is in the corpus
    assert [is_validation_document(d, 0.1) for d in docs[::-1]] == flags[::-1]


def _jsonl(path: Path, records: list, bad_lines: tuple[int, ...] = ()) -> Path:
    lines = [json.dumps(r, ensure_ascii=False) for r in records]
    for at in bad_lines:
        lines.insert(at, '{"paragraphs": ["没有结束')
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_every_input_kind_together(tmp_path, demo_text_file, shared_corpus):
    """txt, gz, jsonl (list of paragraphs, domain field), seed json, HF saved dataset and HF parquet."""
    import datasets

    with open(shared_corpus / "news_xwlb_articles.jsonl", encoding="utf-8") as handle:
        news = [json.loads(line) for _, line in zip(range(60), handle)]
    jsonl = _jsonl(tmp_path / "news.jsonl", news, bad_lines=(3,))
    with open(shared_corpus / "modern_vernacular_lines.txt", encoding="utf-8") as handle:
        vern = [line for _, line in zip(range(400), handle)]
    gz = tmp_path / "vern.txt.gz"
    with gzip.open(gz, "wt", encoding="utf-8") as handle:
        handle.writelines(vern[:200])
    seed = tmp_path / "seed.json"
    seed.write_text(json.dumps({"sentences": [v.strip() for v in vern[200:300]]}, ensure_ascii=False),
                    encoding="utf-8")
    rows = {"text": [v.strip() for v in vern[300:]], "topic": ["史"] * 50 + ["传"] * 50}
    datasets.Dataset.from_dict(rows).save_to_disk(str(tmp_path / "hfdisk"))
    datasets.Dataset.from_dict(rows).to_parquet(str(tmp_path / "rows.parquet"))

    out = prepare([demo_text_file, gz, seed, tmp_path / "hfdisk", tmp_path / "rows.parquet"],
                  tmp_path / "a", progress=False, val_fraction=0.2, min_chars=10)
    meta = DataDir(out).meta
    assert [s["kind"] for s in meta["sources"]] == ["txt", "txt", "json", "hf-disk", "hf-files"]
    assert all(s["documents"] > 0 for s in meta["sources"][:4])
    # the parquet rows equal the saved rows: all of them are duplicates
    assert meta["sources"][4]["documents"] == 0 and meta["dropped"]["duplicate"] > 0

    out = prepare([jsonl], tmp_path / "b", text_field="paragraphs", domain_field="date", progress=False)
    meta = DataDir(out).meta
    assert meta["read_problems"]["malformed_json_lines"] == {"news.jsonl": 1}
    assert any("line 4" in w and "--strict" in w for w in meta["warnings"])
    assert set(meta["domains"]) <= {r["date"] for r in news} and len(meta["domains"]) > 1
    assert sum(meta["domains"].values()) == meta["sentences_kept"]
    with pytest.raises(UserError, match=r"line 4 is not valid JSON"):
        prepare([jsonl], tmp_path / "c", text_field="paragraphs", strict=True, progress=False)
    with pytest.raises(UserError, match=r"--text-field"):
        prepare([jsonl], tmp_path / "c", progress=False)  # default field "text" is absent


def test_cache_reuse_force_and_failure_leaves_output_intact(tmp_path, demo_text_file, capsys):
    out = tmp_path / "data"
    prepare([demo_text_file], out, min_chars=10)
    stamp = (out / layout.DATA_META).stat().st_mtime_ns
    prepare([demo_text_file], out, min_chars=10)
    assert "up to date" in capsys.readouterr().err
    assert (out / layout.DATA_META).stat().st_mtime_ns == stamp
    prepare([demo_text_file], out, min_chars=10, force=True, progress=False)
    assert (out / layout.DATA_META).stat().st_mtime_ns != stamp
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    # A different option rebuilds; a failing rebuild leaves the old directory exactly as it was.
    with pytest.raises(UserError, match="nothing left after filtering"):
        prepare([demo_text_file], out, min_chars=500, max_chars=600, progress=False)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["data"]  # no staging leftovers
    # a folder that is not a data directory is never overwritten
    other = tmp_path / "notes"
    other.mkdir()
    (other / "mine.txt").write_text("x")
    with pytest.raises(UserError, match="not a bertcurve data directory"):
        prepare([demo_text_file], other, progress=False)


def test_cli_prepare_on_a_slice_of_the_news_corpus(tmp_path, shared_corpus):
    with open(shared_corpus / "news_xwlb_articles.jsonl", encoding="utf-8") as handle:
        head = [line for _, line in zip(range(150), handle)]
    src = tmp_path / "news.jsonl"
    src.write_text("".join(head), encoding="utf-8")
    env = {**os.environ, "PYTHONIOENCODING": "utf-8"}
    proc = subprocess.run(
        [sys.executable, "-m", "bertcurve", "prepare", str(src), "--text-field", "paragraphs",
         "--out", str(tmp_path / "d"), "--whole-word", "--min-freq", "2", "-q"],
        capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(tmp_path / "d")
    meta = DataDir(tmp_path / "d").meta
    assert meta["sentences_kept"] > 500 and meta["whole_word"]
    assert 0 < meta["unk_rate_val"] < 0.05  # min-freq 2 leaves some rare characters unknown
    card = (tmp_path / "d" / layout.DATA_CARD).read_text(encoding="utf-8")
    assert "news.jsonl" in card and "[UNK] rate on validation" in card


def test_cli_errors_are_one_line_without_traceback(tmp_path, capsys):
    assert cli.main(["prepare", str(tmp_path / "missing.txt"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "does not exist" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_parallel_word_segmentation_gives_the_same_data(tmp_path, demo_text_file, monkeypatch):
    import bertcurve.stages.prepare as prepare_module

    monkeypatch.setattr(prepare_module, "PARALLEL_MIN_SENTENCES", 1)
    monkeypatch.setattr(prepare_module, "ENCODE_CHUNK", 50)  # several chunks in flight
    one = prepare([demo_text_file], tmp_path / "one", whole_word=True, min_chars=10, workers=1, progress=False)
    two = prepare([demo_text_file], tmp_path / "two", whole_word=True, min_chars=10, workers=2, progress=False)
    for split in layout.SPLITS:
        a, b = DataDir(one).split(split), DataDir(two).split(split)
        assert np.array_equal(a.ids, b.ids) and np.array_equal(a.word_starts, b.word_starts)
        assert len(a.word_starts) == len(a.ids) > 0


def test_length_histogram_bins():
    from bertcurve.stages.prepare import _histogram

    counts = np.zeros(101, dtype=np.int64)
    counts[[30, 55, 100]] = [2, 1, 5]
    assert _histogram(counts) == {"bin_edges": [30, 40, 50, 60, 70, 80, 90, 100, 101],
                                  "counts": [2, 0, 1, 0, 0, 0, 0, 5]}
