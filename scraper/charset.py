"""Bytes to text: the character set from a BOM, the bytes themselves, the HTTP header, the
document's own declaration, or sniffing, surviving declarations that lie.

Order of evidence, strongest first:

1. a byte-order mark (UTF-8, UTF-16, UTF-32);
2. the shape of the bytes: UTF-16/32 without a BOM (NUL bytes in a pattern), pure ASCII, or
   bytes that are valid UTF-8 with some non-ASCII in them. Valid multi-byte UTF-8 almost never
   happens by accident, so it beats any declaration (real feeds declare ISO-8859-1, gb2312 or
   Shift_JIS on UTF-8 bytes);
3. the declarations, each tried strictly and skipped when the bytes do not decode: for XML the
   document's ``<?xml encoding=?>`` then the HTTP charset (servers default to a wrong one more
   often than feed generators do); for HTML the HTTP charset then ``<meta charset>``;
4. charset-normalizer's guess;
5. the first declaration, or UTF-8, with replacement characters.

Declared legacy names are widened to the superset that browsers use (ISO-8859-1 is read as
windows-1252, GB2312 as GB18030, Shift_JIS as CP932, EUC-KR as CP949...).
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass

from charset_normalizer import from_bytes

__all__ = ["Decoded", "decode_document", "http_charset"]

_BOMS = (
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
)
# What a declared name is read as: a superset first, then stricter fallbacks.
_WIDEN: dict[str, tuple[str, ...]] = {
    "ascii": ("cp1252", "latin-1"),
    "iso8859-1": ("cp1252", "latin-1"),
    "iso8859-9": ("cp1254", "iso8859-9"),
    "iso8859-11": ("cp874", "iso8859-11"),
    "tis-620": ("cp874", "tis-620"),
    "gb2312": ("gb18030",),
    "gbk": ("gb18030",),
    "shift_jis": ("cp932", "shift_jis_2004"),
    "cp932": ("cp932", "shift_jis_2004"),
    "euc_jp": ("euc_jp", "euc_jis_2004", "cp932"),
    "euc_kr": ("cp949",),
    "big5": ("cp950", "big5hkscs"),
    "utf-16": ("utf-16-le", "utf-16-be"),
    "utf-32": ("utf-32-le", "utf-32-be"),
}
# Labels that browsers know and Python does not.
_ALIASES = {"x-sjis": "cp932", "windows-31j": "cp932", "x-euc-jp": "euc_jp", "x-gbk": "gbk",
            "ks_c_5601-1987": "cp949", "windows-874": "cp874", "x-mac-roman": "mac_roman",
            "iso-8859-8-i": "iso8859-8", "x-cp1252": "cp1252"}  # fmt: skip
_RE_XML_ENCODING = re.compile(rb"""^\s*<\?xml[^>]*?encoding\s*=\s*["']\s*([A-Za-z0-9._:-]+)""")
_RE_META_CHARSET = re.compile(
    rb"""<meta\b[^<>]*?charset\s*=\s*["']?\s*([A-Za-z0-9._:-]+)""", re.IGNORECASE
)
_RE_HTTP_CHARSET = re.compile(r"""charset\s*=\s*["']?\s*([A-Za-z0-9._:-]+)""", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Decoded:
    text: str
    encoding: str  # the Python codec used
    utf8: bool  # the input bytes (after any BOM) were valid UTF-8: reuse them as they are
    bom: int  # length of the byte-order mark that was skipped
    lossy: bool = False  # replacement characters were needed


def http_charset(content_type: str | None) -> str | None:
    """The charset parameter of a Content-Type header value."""
    if not content_type:
        return None
    m = _RE_HTTP_CHARSET.search(content_type)
    return m.group(1) if m else None


def _codec(name: str | None) -> str | None:
    """Python's canonical codec name for a label, or None for an unknown or unsafe one."""
    if not name:
        return None
    label = name.strip().lower()
    label = _ALIASES.get(label, label)
    if label in ("x-user-defined", "utf-7", "unicode-1-1-utf-7", "replacement"):
        return None
    try:
        return codecs.lookup(label).name
    except LookupError:
        return None


def _candidates(name: str | None) -> tuple[str, ...]:
    codec = _codec(name)
    if codec is None:
        return ()
    return _WIDEN.get(codec, (codec,))


def _sniff_wide(body: bytes) -> str | None:
    """UTF-16/32 without a BOM: markup is mostly ASCII, so NULs show the byte order."""
    head = body[:256]
    if len(head) < 4 or b"\x00" not in head[:4]:
        return None
    if head[0] == 0 and head[1] == 0 and head[2] == 0 and head[3] != 0:
        return "utf-32-be"
    if head[0] != 0 and head[1] == 0 and head[2] == 0 and head[3] == 0:
        return "utf-32-le"
    even = head[0::2].count(0)
    odd = head[1::2].count(0)
    half = len(head) // 2
    if even > half * 0.6 and odd < half * 0.1:
        return "utf-16-be"
    if odd > half * 0.6 and even < half * 0.1:
        return "utf-16-le"
    return None


def _try(body: bytes, codec: str) -> str | None:
    try:
        return body.decode(codec)
    except (UnicodeDecodeError, LookupError):
        return None


def _declared(body: bytes, markup: str) -> str | None:
    head = body[:2048]
    if markup != "html":
        m = _RE_XML_ENCODING.match(head)
        if m:
            return m.group(1).decode("ascii")
    if markup != "xml":
        m = _RE_META_CHARSET.search(body[:8192])
        if m:
            return m.group(1).decode("ascii")
    return None


def _sniff(body: bytes) -> str | None:
    """charset-normalizer's guess. Among equally clean single-byte readings it picks one at
    random-looking (cp1250 or cp1257 for plain French or Portuguese), so windows-1252, by far
    the most common one on the web, wins a tie."""
    results = list(from_bytes(body[:200_000]))
    if not results:
        return None
    best = results[0]
    for result in results:
        if result.encoding == "cp1252" and result.chaos <= best.chaos + 0.005:
            return "cp1252"
    return str(best.encoding)


def decode_document(body: bytes, content_type: str | None = None, markup: str = "any") -> Decoded:
    """Decode a document. ``markup`` is "xml", "html" or "any" (which declaration to read)."""
    for bom, codec in _BOMS:
        if body.startswith(bom):
            text = body[len(bom) :].decode(codec, "replace")
            return Decoded(text, codec, codec == "utf-8", len(bom), "\ufffd" in text)
    wide = _sniff_wide(body)
    if wide is not None:
        text = body.decode(wide, "replace")
        return Decoded(text, wide, False, 0, "\ufffd" in text)
    if body.isascii():
        return Decoded(body.decode("ascii"), "ascii", True, 0)
    text_or_none = _try(body, "utf-8")
    if text_or_none is not None:
        return Decoded(text_or_none, "utf-8", True, 0)

    declared = _declared(body, markup)
    header = http_charset(content_type)
    order = (header, declared) if markup == "html" else (declared, header)
    for name in order:
        for codec in _candidates(name):
            if codec in ("utf-8", "utf-16-le", "utf-16-be", "utf-32-le", "utf-32-be"):
                continue  # UTF-8 failed above; UTF-16/32 without NUL patterns is a lie
            text_or_none = _try(body, codec)
            if text_or_none is not None:
                return Decoded(text_or_none, codec, False, 0)

    for codec in _candidates(_sniff(body)):
        text_or_none = _try(body, codec)
        if text_or_none is not None:
            return Decoded(text_or_none, codec, False, 0)

    fallback = next(iter(_candidates(declared) or _candidates(header)), "utf-8")
    text = body.decode(fallback, "replace")
    return Decoded(text, fallback, False, 0, True)
