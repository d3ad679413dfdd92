"""Text as the rule language sees it: normalisation, words, and highlighting.

The SPEC's "Rule files" section: HTML stripped, entities decoded, Unicode NFKC, case-folded;
words are runs of Unicode letters, marks and digits; a word in Han, Kana, Hangul or Thai script
(and the other scripts written without spaces: Lao, Khmer, Myanmar) matches as a substring.

Words are kept as one string with NUL between them (``"north\\0korea"``): a C-speed regex
substitution builds it, and the matcher runs one Aho-Corasick pass over it, where a pattern
``"\\0korea\\0"`` can only match a whole word and ``"\\0defen"`` only the start of one.
"""

from __future__ import annotations

import html
import re
import unicodedata
from collections.abc import Sequence
from functools import cache

SEP = "\x00"  # between words in a word string
_SPECIALS = "\x00\x01"  # never in our own word strings; blanked out of input text

_TAG = re.compile(
    r"<(script|style)\b[^>\x01]*>[^\x01]*?</\1\s*>"  # a script or style element, with its body
    r"|<!--[^\x01]*?-->"  # a comment
    r"|</?[A-Za-z][^<>\x00\x01]*>"  # a tag
    r"|<![A-Za-z][^<>\x00\x01]*>",  # a doctype or other declaration
    re.IGNORECASE | re.DOTALL,
)
_ENTITY = re.compile(r"&(?:#[0-9]+|#[xX][0-9a-fA-F]+|[A-Za-z][A-Za-z0-9]*);?")
_ASTRAL = re.compile("[\U00010000-\U0010ffff]")
_NO_SPACE_SCRIPTS = re.compile(
    "["
    "\u0e00-\u0eff"  # Thai, Lao
    "\u1000-\u109f"  # Myanmar
    "\u1100-\u11ff"  # Hangul Jamo
    "\u1780-\u17ff"  # Khmer
    "\u3005-\u3007\u3021-\u3029\u3031-\u3035\u303b"  # ideographic iteration marks, numerals
    "\u3040-\u30ff"  # Hiragana, Katakana
    "\u3100-\u312f\u31a0-\u31bf"  # Bopomofo
    "\u3130-\u318f"  # Hangul compatibility Jamo
    "\u31f0-\u31ff"  # Katakana phonetic extensions
    "\u3400-\u4dbf\u4e00-\u9fff"  # CJK ideographs
    "\ua960-\ua97f\uac00-\ud7ff"  # Hangul
    "\uf900-\ufaff"  # CJK compatibility ideographs
    "\uff66-\uff9f\uffa0-\uffdc"  # half-width Katakana and Hangul
    "\U0001b000-\U0001b16f"  # Kana supplement
    "\U00020000-\U0003ffff"  # CJK extensions B and later
    "]"
)
_BLANK_SPECIALS = {0: " ", 1: " "}
# ASCII letters and digits stay, \x01 (between joined fields) stays, the rest is a space
_ASCII_WORDS = str.maketrans({i: chr(i) if chr(i).isalnum() or i == 1 else " " for i in range(128)})
_TYPOGRAPHY = "\u2019\u2018\u201c\u201d\u2013\u2014\u2022"  # ’ ‘ “ ” – — •
DASHES = frozenset("-\u2010\u2011\u2012\u2013\u2014\u2015\u2212\ufe58\ufe63\uff0d")


def _ranges(codepoints: list[int]) -> str:
    """A regex character-class body for sorted code points."""
    parts: list[str] = []
    start = prev = -2
    for cp in [*codepoints, -2]:
        if cp == prev + 1:
            prev = cp
            continue
        if start >= 0:
            parts.append(re.escape(chr(start)))
            if prev > start:
                parts.append("-" + re.escape(chr(prev)))
        start = prev = cp
    return "".join(parts)


@cache
def _separators() -> tuple[re.Pattern[str], re.Pattern[str], re.Pattern[str], re.Pattern[str]]:
    """Regexes for runs of non-word characters and for words, each fast and full.

    A \\x01 is neither: it stays, alone, where the matcher joined two fields.

    ``\\w`` is letters and digits (and ``_``, which callers blank out first); marks are added
    by hand. The fast one knows only the BMP's marks, which lets re use a bitmap and run as
    fast as ``\\W``; the full one, slower, is for text holding astral characters.
    """
    marks = [
        cp
        for cp in (*range(0x300, 0x1E950), *range(0xE0100, 0xE01F0))
        if unicodedata.category(chr(cp))[0] == "M" and not chr(cp).isalnum()
    ]
    bmp = _ranges([cp for cp in marks if cp < 0x10000])
    full = _ranges(marks)
    return (
        re.compile(rf"[^\w{bmp}\x01]+"),
        re.compile(rf"[^\w{full}\x01]+"),
        re.compile(rf"[\w{bmp}]+"),
        re.compile(rf"[\w{full}]+"),
    )


def _unescape(text: str) -> str:
    out = html.unescape(text)
    if out != text and _ENTITY.search(out):  # double-escaped: "&amp;#8217;"
        out = html.unescape(out)
    return out


def clean(text: str) -> str:
    """Strip stray HTML tags and decode entities, keeping the text's own case and width.

    This is the text a reader sees; matched terms are quoted from it.
    """
    if "\x00" in text or "\x01" in text:
        text = text.translate(_BLANK_SPECIALS)
    return strip_markup(text)


def strip_markup(text: str) -> str:
    """:func:`clean` for text known to hold no NUL or \\x01 (which it leaves alone, so that
    fields joined by \\x01 can be cleaned in one go: no tag or entity spans one)."""
    if "<" in text:
        text = _TAG.sub(" ", text)
    if "&" in text:
        decoded = _unescape(text)  # never yields NUL or \\x01 (they decode to U+FFFD)
        if decoded != text:
            text = decoded
            if "<" in text:  # escaped markup, now unescaped
                text = _TAG.sub(" ", text)
    return text


def fold(text: str) -> str:
    """NFKC and case folding (of text already :func:`clean`)."""
    if text.isascii():
        return text.lower()
    # NFKC, fold, then NFKC again: folding can leave a decomposed sequence ("ǰ").
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold())


def normalise(text: str) -> str:
    """The SPEC's normal form: HTML stripped, entities decoded, NFKC, case-folded."""
    return fold(clean(text))


def word_string(folded: str) -> str:
    """The words of normalised text joined by NUL, without a NUL at either end."""
    if not folded.isascii():
        for ch in _TYPOGRAPHY:  # often the only non-ASCII characters of English text
            if ch in folded:
                folded = folded.replace(ch, " ")
    if folded.isascii():  # str.translate has a fast path for ASCII; split() is C
        return SEP.join(folded.translate(_ASCII_WORDS).split())
    if "_" in folded:
        folded = folded.replace("_", " ")
    fast, full, _, _ = _separators()
    sep = full if _ASTRAL.search(folded) else fast
    return sep.sub(SEP, folded).strip(SEP)


def words(text: str) -> list[str]:
    """The normalised words of ``text``: ``words("Japan's North-Korea")`` is
    ``["japan", "s", "north", "korea"]``."""
    ws = word_string(normalise(text))
    return ws.split(SEP) if ws else []


def word_spans(text: str) -> list[tuple[int, int]]:
    """Start and end offsets of the words of ``text`` (as it is: no normalisation)."""
    if "_" in text:
        text = text.replace("_", " ")
    _, _, fast, full = _separators()
    word = full if not text.isascii() and _ASTRAL.search(text) else fast
    return [m.span() for m in word.finditer(text)]


def is_substring_script(word: str) -> bool:
    """True when ``word`` holds a character of a script written without spaces between words
    (Han, Kana, Hangul, Thai, ...): such a term matches anywhere, as a substring."""
    return _NO_SPACE_SCRIPTS.search(word) is not None


def hyphen_joined(chunk: str) -> str | None:
    """``"f-35"`` -> ``"f35"``: the one-word spelling of a normalised chunk whose words are
    joined by single hyphens or dashes, or None."""
    if "_" in chunk or is_substring_script(chunk):
        return None
    sep = _separators()[1]
    gaps = sep.findall(chunk)
    parts = word_string(chunk).split(SEP)
    if len(parts) < 2 or len(gaps) != len(parts) - 1:  # also rejects punctuation at either end
        return None
    if not all(len(g) == 1 and g in DASHES for g in gaps):
        return None
    return "".join(parts)


def _masked(text: str) -> str:
    """``text`` with markup and entities blanked out, offsets unchanged."""

    def blank(m: re.Match[str]) -> str:
        return " " * (m.end() - m.start())

    if "<" in text:
        text = _TAG.sub(blank, text)
    if "&" in text:
        text = _ENTITY.sub(blank, text)
    return text


def highlight_spans(text: str, terms: Sequence[str]) -> list[tuple[int, int]]:
    """Spans of ``text`` to emphasise: where the matched ``terms`` occur, as whole words (or as
    substrings for Han, Kana, Hangul and Thai terms), ignoring case, width and punctuation
    between the words of a term. Sorted, non-overlapping, as ``(start, end)`` offsets."""
    if not text or not terms:
        return []
    masked = _masked(text)
    tokens: list[tuple[str, int, int]] = []  # (normalised word, start, end)
    for start, end in word_spans(masked):
        for w in words(masked[start:end]):
            tokens.append((w, start, end))
    index: dict[str, list[int]] = {}
    for i, (w, _, _) in enumerate(tokens):
        index.setdefault(w, []).append(i)
    found: list[tuple[int, int]] = []
    for term in terms:
        tw = words(term)
        if not tw:
            continue
        if is_substring_script(term):
            found.extend(_substring_spans(masked, tokens, term, tw))
            continue
        for i in index.get(tw[0], ()):
            j = i + len(tw)
            if j <= len(tokens) and [t[0] for t in tokens[i:j]] == tw:
                found.append((tokens[i][1], tokens[j - 1][2]))
    return _merge(found)


def _substring_spans(
    masked: str, tokens: list[tuple[str, int, int]], term: str, tw: list[str]
) -> list[tuple[int, int]]:
    spans = [(m.start(), m.end()) for m in re.finditer(re.escape(term), masked, re.IGNORECASE)]
    if spans or len(tw) != 1:
        return spans
    needle = tw[0]  # the term as normalised: find it inside words whose width did not change
    for w, start, end in tokens:
        if needle in w and len(w) == end - start:
            at = w.find(needle)
            while at >= 0:
                spans.append((start + at, start + at + len(needle)))
                at = w.find(needle, at + 1)
    return spans


def _merge(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if out and start <= out[-1][1]:
            if end > out[-1][1]:
                out[-1] = (out[-1][0], end)
        else:
            out.append((start, end))
    return out
