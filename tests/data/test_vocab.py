"""Character vocabulary, the saved tokenizer and the vectorised encoder agree."""

from __future__ import annotations

import numpy as np
import pytest

from bertcurve import layout
from bertcurve.data.vocab import (
    N_CODEPOINTS,
    CharEncoder,
    build_vocabulary,
    count_codepoints,
    save_tokenizer,
)
from bertcurve.errors import UserError


def _counts(text: str) -> np.ndarray:
    counts = np.zeros(N_CODEPOINTS, dtype=np.int64)
    count_codepoints(text, counts)
    return counts


def test_specials_first_then_by_frequency_then_codepoint():
    vocab = build_vocabulary(_counts("的的的是是了 了 a"))
    assert vocab.tokens[:5] == layout.SPECIAL_TOKENS
    # ties (是/了 both twice) are broken by code point: 了 U+4E86 < 是 U+662F
    assert vocab.tokens[5:] == ("的", "了", "是", "a")
    assert " " not in vocab.tokens


def test_min_freq_and_max_vocab():
    counts = _counts("的的的是是了")
    assert build_vocabulary(counts, min_freq=2).characters == ("的", "是")
    assert build_vocabulary(counts, max_vocab=6).characters == ("的",)
    with pytest.raises(UserError, match="--max-vocab"):
        build_vocabulary(counts, max_vocab=5)
    with pytest.raises(UserError, match="--min-freq"):
        build_vocabulary(counts, min_freq=0)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    corpus = "今天天气很好。我们去北京看GPT4和BERT模型,价格100元!"
    vocab = build_vocabulary(_counts(corpus))
    out = tmp_path_factory.mktemp("tok")
    save_tokenizer(vocab, out)
    return vocab, out


def test_autotokenizer_loads_offline_with_every_special(saved):
    from transformers import AutoTokenizer

    vocab, out = saved
    tok = AutoTokenizer.from_pretrained(str(out), local_files_only=True)
    assert len(tok) == vocab.size
    assert [tok.pad_token_id, tok.unk_token_id, tok.cls_token_id, tok.sep_token_id, tok.mask_token_id] == [
        0, 1, 2, 3, 4]
    assert (out / layout.VOCAB_TXT).read_text(encoding="utf-8").splitlines() == list(vocab.tokens)


def test_tokenizer_rule_latin_digits_whitespace_unknown_and_mask(saved):
    from transformers import AutoTokenizer

    vocab, out = saved
    tok = AutoTokenizer.from_pretrained(str(out))
    ids = vocab.to_dict()
    enc = tok("今天 GPT4 很[MASK]。", add_special_tokens=False)["input_ids"]
    assert enc == [ids[c] for c in "今天GPT4很"] + [4, ids["。"]]
    # Unknown characters are [UNK]; full-width forms are NFKC-normalised first.
    assert tok("猫ＧＰＴ", add_special_tokens=False)["input_ids"] == [1, ids["G"], ids["P"], ids["T"]]
    pair = tok("今天", "很好")
    assert pair["input_ids"] == [2, ids["今"], ids["天"], 3, ids["很"], ids["好"], 3]
    assert pair["token_type_ids"] == [0, 0, 0, 0, 1, 1, 1]
    # Decoding joins characters without spaces.
    assert tok.decode(tok("今天天气很好。")["input_ids"], skip_special_tokens=True) == "今天天气很好。"


def test_vectorised_encoder_matches_the_tokenizer(saved):
    from tokenizers import Tokenizer

    vocab, out = saved
    tok = Tokenizer.from_file(str(out / layout.TOKENIZER_JSON))
    lines = ["今天 天气很好。", "GPT4 和 BERT 模型 猫狗", "a b  c", "价格100元!"]
    ids, lengths = CharEncoder(vocab).encode_lines(lines)
    expected = [tok.encode(line, add_special_tokens=False).ids for line in lines]
    assert lengths.tolist() == [len(e) for e in expected]
    assert ids.tolist() == [i for e in expected for i in e]
    assert ids.dtype == np.uint16
