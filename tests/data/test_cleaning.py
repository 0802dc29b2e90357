"""Cleaning and sentence splitting: pure functions, unit and property tests."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bertcurve.data.cleaning import (
    PAIRS,
    Filter,
    normalize,
    split_sentences,
    strip_pos_tags,
    token_length,
)


# ------------------------------------------------------------------ normalize
def test_nfkc_turns_fullwidth_into_ascii():
    assert normalize("ＧＰＴ４是１２３号") == "GPT4是123号"
    assert normalize("你好，世界！") == "你好,世界!"


def test_markup_urls_emails_and_controls_are_removed():
    text = "<p>请访问 https://example.com/a?b=1 或 www.smallstonesoft.com 联系 a.b@example.org</p>\x00谢谢\u200b。"
    assert normalize(text) == "请访问或联系谢谢。"


def test_html_entities_are_unescaped():
    assert normalize("价格&lt;100元&amp;包邮") == "价格<100元&包邮"


def test_whitespace_between_chinese_is_removed_but_kept_between_latin_words():
    assert normalize("今天  天气\t很好 。") == "今天天气很好。"
    assert normalize("我爱 New  York 这座城市") == "我爱 New York 这座城市"
    assert normalize("  \u3000第一行\n第二行  ") == "第一行第二行"


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=60))
def test_normalize_is_idempotent(text):
    once = normalize(text)
    assert normalize(once) == once


# --------------------------------------------------------------- splitting
def test_split_keeps_closing_quotes_and_brackets_with_their_sentence():
    text = "他说:“今天很好。明天也好!”然后走了。你好吗??我很好......真的(笑)。没有句号"
    assert split_sentences(text) == [
        "他说:“今天很好。明天也好!”",
        "然后走了。",
        "你好吗??",
        "我很好......",
        "真的(笑)。",
        "没有句号",
    ]


def test_no_split_inside_book_titles_or_nested_quotes():
    text = "他读了《再见。朋友》这本书。她说:“他说‘走吧。’我就走了。”好。"
    assert split_sentences(text) == ["他读了《再见。朋友》这本书。", "她说:“他说‘走吧。’我就走了。”", "好。"]


def test_closing_mark_right_after_end_punctuation_stays():
    assert split_sentences("“走吧。”他笑了。") == ["“走吧。”", "他笑了。"]


def test_unclosed_quote_runs_to_the_end():
    assert split_sentences("他说:“一。二。三。") == ["他说:“一。二。三。"]


CJK = st.sampled_from(list("我们今天去北京看天安门他说好的中国人民大会堂"))
PUNCT = st.sampled_from(list("。!?,、:;") + ["...", " "])
QUOTED = st.builds(lambda o, body: o + body + PAIRS[o],
                   st.sampled_from(list("“‘「『(《【")),
                   st.lists(st.one_of(CJK, PUNCT), max_size=12).map("".join))
TEXT = st.lists(st.one_of(CJK, PUNCT, QUOTED), max_size=40).map("".join)


@settings(max_examples=150, deadline=None)
@given(TEXT)
def test_split_is_lossless_and_never_cuts_inside_a_quotation(text):
    pieces = split_sentences(text)
    assert "".join(pieces) == text  # no kept text is altered
    assert all(pieces)
    # At each boundary the quotation depth must be zero.
    closers = {v: k for k, v in PAIRS.items()}
    depth = []
    position = 0
    boundaries = set()
    for piece in pieces[:-1]:
        position += len(piece)
        boundaries.add(position)
    for i, ch in enumerate(text):
        if i in boundaries:
            assert not depth, f"boundary inside a quotation at {i} in {text!r}"
        if ch in PAIRS:
            depth.append(ch)
        elif ch in closers and closers[ch] in depth:
            while depth.pop() != closers[ch]:
                pass


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=80))
def test_kept_sentences_are_exact_slices_of_the_normalised_text(raw):
    text = normalize(raw)
    pieces = split_sentences(text)
    assert "".join(pieces) == text
    for piece in pieces:
        assert piece.strip() in text
        assert unicodedata.normalize("NFKC", piece) == piece


# ------------------------------------------------------------------ filters
def test_filter_reasons():
    f = Filter(min_chars=5, max_chars=10, min_cjk_share=0.5)
    assert f.reason("今天天气好") is None
    assert f.reason("今天好") == "too_short"
    assert f.reason("今天天气好今天天气好。") == "too_long"
    assert f.reason("abc def 今") == "low_cjk"
    assert token_length("ab cd 今天") == 6  # spaces are not tokens


def test_strip_pos_tags_of_peoples_daily():
    line = "迈向/v  充满/v  希望/n  的/u  [中共/j  中央/n]nt  （/w  附/v  图片/n  １/m  张/q  ）/w"
    assert strip_pos_tags(line) == "迈向充满希望的中共中央（附图片１张）"


@pytest.mark.parametrize("raw, simplified", [("繁體中文", "繁体中文"), ("計算機", "计算机")])
def test_to_simplified_converts(raw, simplified):
    from bertcurve.data.cleaning import simplified_converter

    assert simplified_converter()(raw) == simplified


def test_to_simplified_without_opencc_says_how_to_install(monkeypatch):
    import sys

    from bertcurve.data.cleaning import simplified_converter
    from bertcurve.errors import UserError

    monkeypatch.setitem(sys.modules, "opencc", None)  # what a missing package looks like to import
    with pytest.raises(UserError, match="pip install opencc-python-reimplemented"):
        simplified_converter()


def test_apostrophe_is_not_a_quotation():
    assert split_sentences("我喜欢don't这个词。很好。") == ["我喜欢don't这个词。", "很好。"]


@settings(max_examples=150, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("我们好\n .。!?…)》”’a")), max_size=40))
def test_fast_path_cuts_like_the_general_splitter(text):
    from bertcurve.data.cleaning import _split_quoted

    assert split_sentences(text) == _split_quoted(text)


@settings(max_examples=150, deadline=None)
@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=60))
def test_normalize_equals_plain_nfkc_on_clean_text(text):
    # The full-width shortcut must not change what NFKC would produce.
    from bertcurve.data.cleaning import _nfkc

    assert _nfkc(text) == unicodedata.normalize("NFKC", text)
