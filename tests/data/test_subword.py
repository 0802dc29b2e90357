"""Word-piece tokenizers: mixed Chinese/Latin text, tokenizer folders, id dtypes, word starts."""

from __future__ import annotations

import numpy as np
import pytest

from bertcurve import layout
from bertcurve.data.cleaning import split_latin_sentences
from bertcurve.data.vocab import (
    N_CODEPOINTS, SubwordEncoder, count_codepoints, id_dtype, load_tokenizer_dir, save_subword, special_ids,
    subword_alphabet, train_subword,
)
from bertcurve.errors import UserError

MIXED = [
    "我们在2024年使用Python训练模型,模型的效果很好。",
    "Python是一种编程语言,很多人用Python写程序。",
    "今年是2024年,明年是2025年。",
    "The model was trained with Python in 2024.",
    "Training a model takes time and patience.",
] * 20


def _train(kind: str, vocab_size: int = 300):
    counts = np.zeros(N_CODEPOINTS, dtype=np.int64)
    count_codepoints("".join(MIXED), counts)
    return train_subword(kind, [MIXED[i:i + 7] for i in range(0, len(MIXED), 7)], vocab_size=vocab_size,
                         alphabet=subword_alphabet(counts, vocab_size - 5))


@pytest.fixture(scope="module", params=["wordpiece", "bpe"])
def trained(request):
    return request.param, _train(request.param)


def test_training_is_the_same_in_every_run(trained):
    # The trainer alone numbers "##" pieces in hash-map order (tokenizers#1794); ours fixes them.
    kind, tok = trained
    assert all(_train(kind).to_str() == tok.to_str() for _ in range(3))


def test_vocab_size_caps_the_alphabet_too():
    tok = _train("wordpiece", vocab_size=20)
    assert tok.get_vocab_size() == 20
    assert tok.encode("我们", add_special_tokens=False).tokens.count("[UNK]") >= 1  # rarer characters left out


def test_chinese_characters_stay_single_tokens_and_latin_words_get_pieces(trained):
    kind, tok = trained
    enc = tok.encode("我们在2024年使用Python训练模型", add_special_tokens=False)
    assert enc.tokens[:3] == ["我", "们", "在"]
    assert "2024" in enc.tokens and "Python" in enc.tokens   # whole words, frequent enough to be merged
    assert [t for t in enc.tokens if len(t) == 1] == list("我们在年使用训练模型")
    # an unseen Latin word is split into pieces, never letters glued to Chinese characters
    rare = tok.encode("使用Pytorch训练", add_special_tokens=False).tokens
    assert rare[:2] == ["使", "用"] and rare[-2:] == ["训", "练"]
    assert all(t.startswith("##") for t in rare[3:-2])
    assert tok.decode(enc.ids) == "我们在2024年使用Python训练模型"
    assert tok.decode(tok.encode("The model was trained.").ids) == "The model was trained."
    assert list(special_ids(tok).values()) == [0, 1, 2, 3, 4]


def test_saved_subword_tokenizer_loads_with_autotokenizer(trained, tmp_path):
    from transformers import AutoTokenizer

    kind, tok = trained
    save_subword(tok, tmp_path)
    hf = AutoTokenizer.from_pretrained(str(tmp_path), local_files_only=True)
    assert len(hf) == tok.get_vocab_size(with_added_tokens=True)
    enc = hf("今年[MASK]Python。")
    assert hf.convert_ids_to_tokens(enc["input_ids"]) == ["[CLS]", "今", "年", "[MASK]", "Python", "。", "[SEP]"]
    assert (tmp_path / layout.VOCAB_TXT).read_text(encoding="utf-8").splitlines()[:5] == list(layout.SPECIAL_TOKENS)


def test_id_dtype_is_uint16_while_the_vocabulary_fits():
    assert id_dtype(5) == np.uint16 and id_dtype(65_536) == np.uint16
    assert id_dtype(65_537) == np.uint32 and id_dtype(200_000) == np.uint32


def _bert_base_chinese_like(path, extra: int = 0):
    """A tiny tokenizer folder laid out like bert-base-chinese: [PAD]=0, [unusedN], [UNK]=100..[MASK]=103."""
    from bert_style_tokenizer import save_bert_style_tokenizer

    pieces = list("我们在年使用训练模型今天好。,") + ["20", "##24", "Py", "##thon"] + [f"##x{i}" for i in range(extra)]
    return save_bert_style_tokenizer(path, pieces)


def test_a_bert_base_chinese_style_folder_keeps_its_ids(tmp_path):
    tok = load_tokenizer_dir(_bert_base_chinese_like(tmp_path))
    assert special_ids(tok) == {"[PAD]": 0, "[UNK]": 100, "[CLS]": 101, "[SEP]": 102, "[MASK]": 103}
    ids, lengths = SubwordEncoder(tok).encode_lines(["我们在2024年使用Python", "猫"])
    assert lengths.tolist() == [10, 1] and ids.dtype == np.uint16
    assert [tok.id_to_token(int(i)) for i in ids[:10]] == [*"我们在", "20", "##24", *"年使用", "Py", "##thon"]
    assert ids[-1] == 100   # unknown character -> [UNK] at bert-base-chinese's id


def test_special_ids_from_a_bert_base_chinese_style_tokenizer_skip_the_unused_block(tmp_path):
    from transformers import AutoTokenizer

    from bertcurve.training.batches import SpecialIds

    sp = SpecialIds.from_tokenizer(AutoTokenizer.from_pretrained(str(_bert_base_chinese_like(tmp_path))))
    assert (sp.pad, sp.cls, sp.sep, sp.mask, sp.first_regular) == (0, 101, 102, 103, 104)


def test_a_folder_without_bert_specials_or_files_is_refused(tmp_path):
    with pytest.raises(UserError, match="neither tokenizer.json nor vocab.txt"):
        load_tokenizer_dir(tmp_path)
    from tokenizers import Tokenizer, models

    Tokenizer(models.WordLevel({"<s>": 0, "<unk>": 1, "a": 2}, unk_token="<unk>")).save(str(tmp_path / "tokenizer.json"))
    with pytest.raises(UserError, match=r"lacks \[PAD\] \[UNK\] \[CLS\] \[SEP\] \[MASK\]"):
        load_tokenizer_dir(tmp_path)


def test_whole_word_starts_cover_every_piece_and_follow_jieba_for_chinese(trained):
    from bertcurve.stages.prepare import chunk_char_starts

    kind, tok = trained
    enc = SubwordEncoder(tok)
    lines = ["我们在2024年使用Pytorch训练模型", "Unbelievable results were trained today."]
    per_char = np.frombuffer(chunk_char_starts(lines), dtype=np.uint8)
    cuts = np.cumsum([len(x) for x in lines])[:-1]
    starts = np.frombuffer(enc.word_starts(lines, np.split(per_char, cuts)), dtype=np.uint8)
    tokens = [t for line in lines for t in tok.encode(line, add_special_tokens=False).tokens]
    assert len(starts) == len(tokens)
    marked = dict(zip(range(len(tokens)), starts))
    # "##" continuation pieces never start a word: the whole word is masked together
    assert all(marked[i] == 0 for i, t in enumerate(tokens) if t.startswith("##"))
    assert all(marked[i] == 1 for i, t in enumerate(tokens) if t in ("Unbelievable", "Un", "U", "results", "."))
    # jieba joins 我们 / 训练 / 模型: their second characters continue the word
    first = tokens[:tokens.index("[SEP]")] if "[SEP]" in tokens else tokens
    for word in ("我们", "训练", "模型"):
        k = first.index(word[0])
        assert first[k + 1] == word[1] and (marked[k], marked[k + 1]) == (1, 0)


@pytest.mark.parametrize("text, expected", [
    ("The cat sat on the mat. The dog sat too.", ["The cat sat on the mat.", " The dog sat too."]),
    ("Mr. Smith met Dr. Jones. Then they left.", ["Mr. Smith met Dr. Jones.", " Then they left."]),
    ("It cost 3.5 dollars. \"Why?\" she asked.", ["It cost 3.5 dollars.", " \"Why?\" she asked."]),
    ("J. Smith spoke. It was e.g. short.", ["J. Smith spoke.", " It was e.g. short."]),
    ("我们用Python. 你们呢", ["我们用Python. 你们呢"]),
])
def test_latin_full_stops_end_english_sentences(text, expected):
    assert split_latin_sentences(text) == expected
    assert "".join(split_latin_sentences(text)) == text


def test_a_folder_with_only_vocab_txt_is_converted_by_transformers(tmp_path):
    # Like the original bert-base-chinese upload: vocab.txt and a BertTokenizer config, no tokenizer.json.
    import json

    tokens = ["[PAD]"] + [f"[unused{i}]" for i in range(1, 100)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokens += list("我们在年使用训练模型") + ["20", "##24", "Py", "##thon"]
    (tmp_path / "vocab.txt").write_text("\n".join(tokens) + "\n", encoding="utf-8")
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "BertTokenizer",
                                                                "do_lower_case": False}), encoding="utf-8")
    tok = load_tokenizer_dir(tmp_path)
    assert special_ids(tok)["[MASK]"] == 103
    assert tok.encode("我们在2024年使用Python").tokens == [
        "[CLS]", "我", "们", "在", "20", "##24", "年", "使", "用", "Py", "##thon", "[SEP]"]
