"""`bertcurve prepare --tokenizer ...` from the CLI: English end to end, traditional Chinese,
tokenizer folders (bert-base-chinese ids, uint32 vocabularies) and option errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bertcurve import cli, layout
from bertcurve.data.datadir import DataDir

ENGLISH = Path(__file__).resolve().parents[1] / "fixtures" / "english" / "sample.txt"
ENGLISH_PREPARE = ["--txt-documents", "block", "--min-cjk-share", "0", "--min-chars", "15", "--max-chars", "300",
                   "--val-fraction", "0.15", "-q"]
TINY_TRAIN = ["--preset", "tiny", "--max-steps", "4", "--warmup-steps", "1", "--eval-every", "2",
              "--save-every", "2", "--quiet"]

# Traditional Chinese written for these tests (three short documents, one sentence each line).
TRADITIONAL = """我們今天在圖書館讀書,學習新的語言和歷史知識。
這個城市的交通非常方便,每天都有很多人坐公車上班。
學校旁邊有一家麵包店,早上總是有剛出爐的麵包。
他們在2024年開始使用電腦學習寫程式,進步很快。
老師說讀書的時候要認真,遇到問題要多問幾個為什麼。
春天來了,公園裡的花都開了,孩子們在草地上玩遊戲。
"""


def _cli(*args: str) -> int:
    return cli.main([str(a) for a in args])


@pytest.fixture(scope="module")
def english_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("english")
    data, run = root / "data", root / "run"
    assert _cli("prepare", ENGLISH, "--out", data, "--tokenizer", "wordpiece", "--vocab-size", "600",
                "--whole-word", *ENGLISH_PREPARE) == 0
    # 8 steps, evaluated every 2: the 5 points analyze needs for a fit
    assert _cli("train", "--data", data, "--out", run, "--whole-word", *TINY_TRAIN, "--max-steps", "8") == 0
    return data, run


def test_english_prepare_makes_word_pieces_not_letters(english_run):
    from transformers import AutoTokenizer

    data, _ = english_run
    meta = DataDir(data).meta
    assert meta["tokenizer"] == {"kind": "wordpiece", "source": None} and meta["id_dtype"] == "uint16"
    assert meta["vocab_size"] == 600
    tok = AutoTokenizer.from_pretrained(str(data), local_files_only=True)
    val = DataDir(data).split("val")
    lines = (data / layout.VAL_TEXT).read_text(encoding="utf-8").splitlines()
    assert [val.sentence(k).tolist() for k in range(val.n_sentences)] == tok(lines, add_special_tokens=False)["input_ids"]
    assert tok.decode(val.sentence(0).tolist()) == lines[0]
    pieces = tok.tokenize("The farmers brought fresh bread to the market.")
    assert {"The", "the", "to", "."} <= set(pieces) and len(pieces) < 20   # words, not 40 letters
    # English paragraphs are cut into sentences at full stops
    assert all(len(line) <= 300 and line[-1] in ".?!\"" for line in lines)
    # whole-word marks: every continuation piece belongs to the word before it
    tokens = tok.convert_ids_to_tokens(val.ids.tolist())
    assert all(s == 0 for t, s in zip(tokens, val.word_starts) if t.startswith("##"))
    assert all(s == 1 for t, s in zip(tokens, val.word_starts) if not t.startswith("##"))


def test_english_trains_analyzes_fills_and_exports(english_run, tmp_path, capsys):
    from transformers import pipeline

    data, run = english_run
    metrics = [json.loads(line) for line in (run / layout.METRICS).read_text().splitlines()]
    assert [m["step"] for m in metrics if m.get("split") == "eval"] == [0, 2, 4, 6, 8]
    capsys.readouterr()
    assert _cli("analyze", run, "--metric", "eval_loss", "--json") == 0
    assert json.loads(capsys.readouterr().out)
    assert _cli("fill-mask", run, "The farmers brought fresh [MASK] to the market.", "--json", "--top-k", "3") == 0
    doc = json.loads(capsys.readouterr().out)
    result = doc["results"][0] if "results" in doc else doc
    candidates = result["masks"][0]["candidates"]
    assert len(candidates) == 3
    out = tmp_path / "exported"
    assert _cli("export", run, "--out", out) == 0
    theirs = pipeline("fill-mask", model=str(out), device="cpu")("The farmers brought fresh [MASK] to the market.",
                                                                 top_k=3)
    assert [c["token"] for c in theirs] == [c["token_id"] for c in candidates]


@pytest.mark.parametrize("tokenizer", ["char", "wordpiece"])
def test_traditional_chinese_with_and_without_to_simplified(tmp_path, tokenizer):
    src = tmp_path / "traditional.txt"
    src.write_text(TRADITIONAL, encoding="utf-8")
    common = ["--min-chars", "10", "--val-fraction", "0.5", "--tokenizer", tokenizer, "-q"]
    assert _cli("prepare", src, "--out", tmp_path / "trad", *common) == 0
    assert _cli("prepare", src, "--out", tmp_path / "simp", "--to-simplified", *common) == 0
    trad = json.loads((tmp_path / "trad" / layout.TOKENIZER_JSON).read_text(encoding="utf-8"))["model"]["vocab"]
    simp = json.loads((tmp_path / "simp" / layout.TOKENIZER_JSON).read_text(encoding="utf-8"))["model"]["vocab"]
    assert {"們", "書", "語", "學"} <= set(trad) and not {"们", "书", "语", "学"} & set(trad)
    assert {"们", "书", "语", "学"} <= set(simp) and not {"們", "書", "語", "學"} & set(simp)
    from bertcurve.data.cleaning import simplified_converter

    to_simplified = simplified_converter()
    for name in ("trad", "simp"):
        meta = DataDir(tmp_path / name).meta
        assert meta["splits"]["train"]["sentences"] + meta["splits"]["val"]["sentences"] == 6
        val = (tmp_path / name / layout.VAL_TEXT).read_text(encoding="utf-8")
        assert (to_simplified(val) == val) == (name == "simp")   # kept as written unless --to-simplified


def _bert_style_folder(path: Path, extra: int) -> Path:
    """A tokenizer folder with bert-base-chinese's layout ([UNK]=100..[MASK]=103) and ``extra`` more pieces."""
    from bert_style_tokenizer import save_bert_style_tokenizer

    chars = sorted(set(ENGLISH.read_text(encoding="utf-8").replace("\n", "").replace(" ", "")))
    return save_bert_style_tokenizer(path, chars + [f"##{c}" for c in chars] + [f"##z{i}" for i in range(extra)])


@pytest.mark.parametrize("extra, dtype", [(0, "uint16"), (70_000, "uint32")])
def test_a_tokenizer_folder_is_used_as_is_and_large_vocabularies_store_uint32(tmp_path, extra, dtype):
    from transformers import AutoTokenizer

    folder = _bert_style_folder(tmp_path / "tok", extra)
    data, run = tmp_path / "data", tmp_path / "run"
    assert _cli("prepare", ENGLISH, "--out", data, "--tokenizer", folder, *ENGLISH_PREPARE) == 0
    dd = DataDir(data)
    assert dd.meta["id_dtype"] == dtype and dd.meta["tokenizer"]["kind"] == "pretrained"
    assert dd.meta["special_tokens"] == {"[PAD]": 0, "[UNK]": 100, "[CLS]": 101, "[SEP]": 102, "[MASK]": 103}
    assert (data / layout.ids_file("train", dtype)).is_file()
    train = dd.split("train")
    assert train.ids.dtype == np.dtype(dtype) and int(train.ids.max()) < dd.vocab_size
    assert len(AutoTokenizer.from_pretrained(str(data))) == dd.vocab_size == 103 + 1 + 2 * len(
        set(ENGLISH.read_text(encoding="utf-8").replace("\n", "").replace(" ", ""))) + extra
    if extra:  # train on the uint32 ids, a few steps
        assert _cli("train", "--data", data, "--out", run, *TINY_TRAIN, "--max-steps", "2") == 0
        assert (run / layout.FINAL_MODEL_DIR / "model.safetensors").is_file()


def test_changing_the_tokenizer_rebuilds_and_the_same_one_is_reused(tmp_path, capsys):
    out = tmp_path / "data"
    args = ["prepare", ENGLISH, "--out", out, *ENGLISH_PREPARE]
    assert _cli(*args, "--tokenizer", "wordpiece", "--vocab-size", "300") == 0
    first = (out / layout.DATA_META).read_text()
    assert _cli(*args, "--tokenizer", "wordpiece", "--vocab-size", "300") == 0
    assert (out / layout.DATA_META).read_text() == first          # up to date
    assert _cli(*args, "--tokenizer", "bpe", "--vocab-size", "300") == 0
    meta = DataDir(out).meta
    assert meta["tokenizer"]["kind"] == "bpe" and meta["vocab_size"] <= 300


@pytest.mark.parametrize("args, message", [
    (["--vocab-size", "500"], "use --max-vocab with --tokenizer char"),
    (["--tokenizer", "wordpiece", "--max-vocab", "500"], "with --tokenizer wordpiece/bpe use --vocab-size"),
    (["--tokenizer", "wordpiece", "--vocab-size", "3"], "--vocab-size must be between 6"),
    (["--tokenizer", "sentencepiece"], "--tokenizer must be char, wordpiece, bpe or a folder"),
])
def test_bad_tokenizer_options_are_one_line_errors(tmp_path, capsys, args, message):
    out = tmp_path / "data"
    assert _cli("prepare", ENGLISH, "--out", out, *ENGLISH_PREPARE, *args) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and err.count("\n") == 0 and not out.exists()


def test_a_folder_that_is_not_a_tokenizer_is_refused_before_reading(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert _cli("prepare", ENGLISH, "--out", tmp_path / "data", "--tokenizer", tmp_path / "empty") == 2
    assert "neither tokenizer.json nor vocab.txt" in capsys.readouterr().err


def test_chinese_wordpiece_whole_word_follows_jieba_in_parallel_too(tmp_path, demo_text_file, monkeypatch):
    import jieba
    from transformers import AutoTokenizer

    import bertcurve.stages.prepare as prepare_module

    monkeypatch.setattr(prepare_module, "PARALLEL_MIN_SENTENCES", 1)
    monkeypatch.setattr(prepare_module, "ENCODE_CHUNK", 50)  # several chunks in flight
    dirs = [prepare_module.prepare([demo_text_file], tmp_path / f"w{n}", tokenizer="wordpiece", vocab_size=3000,
                                   whole_word=True, min_chars=10, workers=n, progress=False) for n in (1, 2)]
    a, b = (DataDir(d).split("val") for d in dirs)
    assert np.array_equal(a.ids, b.ids) and np.array_equal(a.word_starts, b.word_starts)
    tok = AutoTokenizer.from_pretrained(str(dirs[0]))
    lines = (dirs[0] / layout.VAL_TEXT).read_text(encoding="utf-8").splitlines()
    checked = 0
    for k, line in enumerate(lines):
        enc = tok(line, add_special_tokens=False, return_offsets_mapping=True)
        assert enc["input_ids"] == a.sentence(k).tolist()
        if all(e - s == 1 for s, e in enc["offset_mapping"]):  # one character per token: compare with jieba
            expected = []
            for word in jieba.cut(line):
                if not word.isspace():
                    expected += [1] + [0] * (len(word.strip()) - 1)
            assert a.word_starts[a.sentence_offsets[k]:a.sentence_offsets[k + 1]].tolist() == expected
            checked += 1
    assert checked >= 5
