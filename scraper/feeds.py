"""XML feeds to entries: RSS 0.9x/1.0/2.0 and Atom 0.3/1.0, through lxml.

Elements are matched by local name, with namespaces compared loosely (any case, with or
without a trailing slash), because real feeds put the RSS namespace on ``<channel>``, use a
default namespace on ``<rss>``, or spell namespace URIs in the wrong case. Broken XML is
repaired (HTML entities, bare ampersands, control characters) and re-parsed, then parsed in
libxml2's recovery mode, so that a broken feed still yields what it holds.
"""

from __future__ import annotations

import html.entities
import re
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from typing import Any

from lxml import etree
from lxml.etree import _Element as Element

from scraper.text import html_to_text, parse_date, plain_text
from scraper.urls import resolve_link

__all__ = ["Entry", "FeedData", "extract_xml", "find_feed_root", "parse_xml"]


@dataclass(slots=True)
class Entry:
    """One entry as read from the document, before identity is assigned."""

    guid: str | None
    url: str | None
    title: str
    summary: str = ""
    content: str = ""
    author: str = ""
    published_at: datetime | None = None
    date_text: str = ""  # the date as written, for identity when it does not parse


@dataclass(slots=True)
class FeedData:
    format: str
    title: str | None = None
    entries: list[Entry] = field(default_factory=list)
    error: str | None = None


# --- XML ---------------------------------------------------------------------------------

# Namespace (lower-cased, trailing "/" and "#" removed) -> the prefix we look fields up by.
# The RSS and Atom namespaces map to "" : their elements are the core fields.
_NAMESPACES = {
    "http://purl.org/rss/1.0": "",
    "http://my.netscape.com/rdf/simple/0.9": "",
    "http://backend.userland.com/rss2": "",
    "http://blogs.law.harvard.edu/tech/rss": "",
    "https://cyber.harvard.edu/rss/rss.html": "",
    "http://www.w3.org/2005/atom": "atom",
    "http://purl.org/atom/ns": "atom",
    "http://purl.org/dc/elements/1.1": "dc",
    "http://purl.org/dc/terms": "dc",
    "http://purl.org/rss/1.0/modules/content": "content",
    "http://search.yahoo.com/mrss": "media",
    "http://www.itunes.com/dtds/podcast-1.0.dtd": "itunes",
    "http://rssnamespace.org/feedburner/ext/1.0": "feedburner",
    "http://www.w3.org/1999/xhtml": "xhtml",
    "http://www.w3.org/1999/02/22-rdf-syntax-ns": "rdf",
}


@lru_cache(maxsize=512)
def _prefix(ns: str) -> str:
    key = ns.strip().lower().rstrip("/#")
    return _NAMESPACES.get(key, key)


def _split(tag: str) -> tuple[str, str]:
    """'{ns}local' -> (ns, local)."""
    if tag[0] == "{":
        ns, _, local = tag[1:].partition("}")
        return ns, local
    return "", tag


_KEYS: dict[tuple[str, str], str] = {}


def _key(own_ns: str, tag: str) -> str:
    ns, local = _split(tag)
    local = local.lower()
    if ns and ns != own_ns:
        prefix = _prefix(ns)
        if prefix:
            local = f"{prefix}:{local}"
    if len(_KEYS) < 4096:  # hostile documents could invent endless tags
        _KEYS[(own_ns, tag)] = local
    return local


def _children(el: Element) -> dict[str, list[Element]]:
    """Direct children by key: the lower-cased local name for core fields (the element's own
    namespace, no namespace, or an RSS namespace), else "prefix:local"."""
    tag = el.tag
    own_ns = tag[1 : tag.index("}")] if isinstance(tag, str) and tag[0] == "{" else ""
    out: dict[str, list[Element]] = {}
    keys = _KEYS
    for child in el:
        tag = child.tag
        if not isinstance(tag, str):
            continue  # comments, processing instructions, entities
        key = keys.get((own_ns, tag)) or _key(own_ns, tag)
        if key in out:
            out[key].append(child)
        else:
            out[key] = [child]
    return out


def _first(c: dict[str, list[Element]], *keys: str) -> Element | None:
    for key in keys:
        els = c.get(key)
        if els:
            return els[0]
    return None


def _raw(el: Element | None) -> str:
    """The element's content as markup: its text, or its children serialised when it has
    any (unescaped HTML in RSS, xhtml content in Atom)."""
    if el is None:
        return ""
    if len(el) == 0:
        return el.text or ""
    parts = [el.text or ""]
    parts.extend(etree.tostring(child, encoding="unicode") for child in el)
    return "".join(parts)


def _value(el: Element | None) -> str:
    """A short value (id, link, date): the element's text, stripped."""
    if el is None:
        return ""
    text = el.text if len(el) == 0 else "".join(el.itertext())
    return (text or "").strip()


def _html(el: Element | None) -> str:
    return html_to_text(_raw(el)) if el is not None else ""


def _atom_text(el: Element | None) -> str:
    """An Atom text construct (1.0 type=text|html|xhtml; 0.3 mode=escaped|xml|base64)."""
    if el is None:
        return ""
    kind = (el.get("type") or "text").strip().lower()
    if el.get("src") is not None or el.get("mode", "").lower() == "base64":
        return ""  # out-of-line or encoded content: nothing to read here
    if kind in ("text", "text/plain") and len(el) == 0:
        return plain_text(el.text)
    if kind.startswith(("image/", "audio/", "video/", "application/octet")):
        return ""
    return html_to_text(_raw(el))


_PARSER_OPTIONS: dict[str, Any] = {
    "encoding": "utf-8",  # the text is always handed over as UTF-8 bytes
    "remove_comments": True,
    "remove_pis": True,
    "no_network": True,
    "load_dtd": False,
    "resolve_entities": False,
    "strip_cdata": True,
}


def _parser(recover: bool = False) -> etree.XMLParser:
    """A fresh parser per document (0.6 µs): parser objects must not be shared between threads,
    and a reused parser's error log keeps entries from earlier documents."""
    return etree.XMLParser(recover=recover, **_PARSER_OPTIONS)


_RE_PROLOG = re.compile(rb"\A\s*+((?>\s*+<!--.*?-->)*+\s*+)<\?xml\b[^>]*+\?>", re.DOTALL)
_RE_REPAIR_ENTITY = re.compile(
    r"&(?:(#[0-9]{1,8}|#[xX][0-9a-fA-F]{1,8}|[A-Za-z][A-Za-z0-9]{0,31});)?"
)
_RE_BAD_CHARS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
_XML_ENTITIES = frozenset({"amp", "lt", "gt", "quot", "apos"})


def _xml_char_ok(cp: int) -> bool:
    return (
        cp in (9, 10, 13)
        or 0x20 <= cp <= 0xD7FF
        or 0xE000 <= cp <= 0xFFFD
        or (0x10000 <= cp <= 0x10FFFF)
    )


def _repair_entity(m: re.Match[str]) -> str:
    ref = m.group(1)
    if ref is None:
        return "&amp;"  # a bare ampersand
    if ref[0] == "#":
        try:
            cp = int(ref[2:], 16) if ref[1] in "xX" else int(ref[1:])
        except ValueError:
            return ""
        return m.group(0) if _xml_char_ok(cp) else ""
    if ref in _XML_ENTITIES:
        return m.group(0)
    chars = html.entities.html5.get(ref + ";")
    if chars is None:
        return f"&amp;{ref};"
    return "".join(f"&#{ord(ch)};" for ch in chars)


def _repair(data: bytes) -> bytes:
    """Fix what most often breaks real feeds: HTML entities and bare '&' in XML, and control
    characters that XML 1.0 forbids."""
    text = data.decode("utf-8", "replace")
    text = _RE_REPAIR_ENTITY.sub(_repair_entity, text)
    text = _RE_BAD_CHARS.sub("", text)
    return text.encode("utf-8")


def _syntax_error(exc: etree.XMLSyntaxError) -> str:
    msg = str(exc.msg if getattr(exc, "msg", None) else exc).strip()
    return f"not well-formed XML: {msg}"


def parse_xml(data: bytes, base_url: str) -> tuple[Element | None, str | None]:
    """Parse UTF-8 XML bytes: strictly, then repaired, then in recovery mode. Returns the root
    (or None) and an error message when the document was not well-formed."""
    m = _RE_PROLOG.match(data)  # an XML declaration not at the very start is fatal to libxml2
    if m:
        data = m.group(1) + data[m.end() :]
    data = data.lstrip()
    error: str | None = None
    strict = _parser()
    try:
        return etree.fromstring(data, strict, base_url=base_url), None
    except etree.XMLSyntaxError as exc:
        log = strict.error_log  # this document's entries only (exc.error_log is thread-global)
        if len(log) and all(e.type_name.startswith("WAR_") for e in log):
            # only warnings that lxml raises anyway (a namespace name that is not a valid
            # URI): the document is well-formed, and recovery mode reads it whole
            root = etree.fromstring(data, _parser(recover=True), base_url=base_url)
            if root is not None:
                return root, None
        error = _syntax_error(exc)
    repaired = _repair(data)
    try:
        return etree.fromstring(repaired, _parser(), base_url=base_url), error
    except etree.XMLSyntaxError:
        pass
    try:
        root = etree.fromstring(repaired, _parser(recover=True), base_url=base_url)
    except etree.XMLSyntaxError:
        root = None
    return root, error


def find_feed_root(root: Element) -> tuple[Element, str] | None:
    """The feed element and its format ("rss", "rdf" or "atom"), searched below the root too
    (Atom wrapped in an XHTML page), or None."""
    for el in (root, *root.iter("{*}rss", "{*}RDF", "{*}feed", "{*}channel")):
        if not isinstance(el.tag, str):
            continue
        local = _split(el.tag)[1].lower()
        if local == "rss" or local == "channel":
            return el, "rss"
        if local == "rdf":
            return el, "rdf"
        if local == "feed":
            return el, "atom"
    return None


def _link_base(el: Element, url: str, has_base: bool) -> str:
    if has_base:
        try:
            return el.base or url
        except ValueError:
            return url
    return url


def _date(c: dict[str, list[Element]], *keys: str) -> tuple[datetime | None, str]:
    first_text = ""
    for key in keys:
        for el in c.get(key, ()):
            text = _value(el)
            if not text:
                continue
            dt = parse_date(text)
            if dt is not None:
                return dt, text
            first_text = first_text or text
    return None, first_text


def _person(el: Element | None) -> str:
    """An Atom person's name, or an RSS author ("jo@example.com (Jo Smith)" -> "Jo Smith")."""
    if el is None:
        return ""
    if len(el):
        name = _first(_children(el), "name", "atom:name")
        if name is not None:
            return plain_text(_value(name))
        email = _first(_children(el), "email", "atom:email")
        return plain_text(_value(email))
    text = plain_text(el.text)
    if text.endswith(")") and "(" in text and "@" in text.partition("(")[0]:
        return text[text.index("(") + 1 : -1].strip() or text
    return text


def _media_description(c: dict[str, list[Element]]) -> str:
    el = _first(c, "media:description")
    if el is None:
        group = _first(c, "media:group")
        if group is not None:
            el = _first(_children(group), "description", "media:description")
    return _html(el)


def _atom_link(c: dict[str, list[Element]], url: str, has_base: bool, key: str) -> str | None:
    """The best alternate link among Atom <link> elements: rel=alternate (or no rel), HTML
    first; then any link that is not self/edit/replies/enclosure/hub."""
    best: tuple[int, Element] | None = None
    for el in c.get(key, ()):
        href = el.get("href")
        if not href or not href.strip():
            continue
        rel = (el.get("rel") or "alternate").strip().lower()
        typ = (el.get("type") or "text/html").strip().lower()
        if rel == "alternate":
            rank = 0 if typ in ("text/html", "application/xhtml+xml") else 1
        elif rel in ("self", "edit", "replies", "enclosure", "hub", "license", "next"):
            continue
        else:
            rank = 2
        if best is None or rank < best[0]:
            best = (rank, el)
    if best is None:
        return None
    return resolve_link(best[1].get("href"), _link_base(best[1], url, has_base))


def _rss_entry(item: Element, url: str, has_base: bool) -> Entry:
    c = _children(item)
    guid_el = _first(c, "guid")
    guid = _value(guid_el) or None
    link: str | None = None
    for key in ("feedburner:origlink", "link"):
        el = _first(c, key)
        if el is not None and _value(el):
            link = resolve_link(_value(el), _link_base(el, url, has_base))
            if link:
                break
    if link is None:
        link = _atom_link(c, url, has_base, "atom:link")
    if link is None and guid and guid_el is not None:
        permalink = (guid_el.get("isPermaLink") or "").strip().lower()
        if permalink == "true" or (not permalink and guid.startswith(("http://", "https://"))):
            link = resolve_link(guid, _link_base(guid_el, url, has_base))
    published, date_text = _date(c, "pubdate", "dc:date", "atom:published", "atom:updated")
    summary = _html(_first(c, "description"))
    if not summary:
        summary = _html(_first(c, "itunes:summary", "itunes:subtitle")) or _media_description(c)
    return Entry(
        guid=guid,
        url=link,
        title=_html(_first(c, "title")),
        summary=summary,
        content=_html(_first(c, "content:encoded", "xhtml:body")),
        author=_person(_first(c, "author", "dc:creator", "itunes:author")),
        published_at=published,
        date_text=date_text,
    )


def _atom_entry(entry: Element, url: str, has_base: bool, feed_author: str) -> Entry:
    c = _children(entry)
    published, date_text = _date(
        c, "published", "issued", "created", "updated", "modified", "dc:date"
    )
    author = _person(_first(c, "author", "dc:creator"))
    if not author:
        source = _first(c, "source")
        if source is not None:
            author = _person(_first(_children(source), "author"))
    link = _atom_link(c, url, has_base, "link")
    if link is None:
        origlink = _first(c, "feedburner:origlink")
        link = resolve_link(_value(origlink), url) if origlink is not None else None
    return Entry(
        guid=_value(_first(c, "id")) or None,
        url=link,
        title=_atom_text(_first(c, "title")),
        summary=_atom_text(_first(c, "summary")) or _media_description(c),
        content=_atom_text(_first(c, "content")),
        author=author or feed_author,
        published_at=published,
        date_text=date_text,
    )


def _core(el: Element, feed_ns: str) -> bool:
    ns = _split(el.tag)[0] if isinstance(el.tag, str) else "?"
    return not ns or ns == feed_ns or _prefix(ns) == ""


def extract_xml(feed: Element, fmt: str, url: str, has_base: bool) -> FeedData:
    """Entries of a parsed RSS/RDF/Atom feed element."""
    feed_ns = _split(feed.tag)[0]
    if fmt == "atom":
        c = _children(feed)
        title = _atom_text(_first(c, "title")) or None
        feed_author = _person(_first(c, "author"))
        entries = [
            _atom_entry(el, url, has_base, feed_author)
            for el in feed.iter("{*}entry")
            if (ns := _split(el.tag)[0]) == feed_ns or not ns or _prefix(ns) == "atom"
        ]
        return FeedData("atom", title, entries)
    channel = feed if _split(feed.tag)[1].lower() == "channel" else None
    if channel is None:
        channel = next((el for el in feed if _split(str(el.tag))[1].lower() == "channel"), None)
    title = None
    if channel is not None:
        title = _html(_first(_children(channel), "title")) or None
    entries = [_rss_entry(el, url, has_base) for el in feed.iter("{*}item") if _core(el, feed_ns)]
    return FeedData(fmt, title, entries)
