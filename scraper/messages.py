"""Alert messages, fitted to each channel: plain text, Markdown, HTML email and Telegram HTML.

Pure functions of a :class:`Notification` and a timezone; no I/O. Every string that came from a
feed (titles, sources, snippets, URLs, rule names, terms) is treated as hostile: it is escaped
for the channel's markup so ``</a><script>``, ``*_[``, ``<b>`` and ``&amp;`` show literally, and
a URL only becomes a link when it is an http(s) URL (percent-encoded so it cannot break out of
an attribute or a Markdown link).

Telegram gets the HTML subset its Bot API accepts (b, i, a href, blockquote), no blank lines
and no named entities other than &lt; &gt; &amp; (so Apprise's Telegram plugin passes it on
unchanged, see notify.py), and at most ``limit`` characters counted in UTF-16 code units as
Telegram counts them. A message that does not fit is cut at a safe boundary (never inside a tag
or an entity, every opened tag closed) and ends with "…" and the story link; a digest keeps
whole stories and ends with "…and N more".
"""

from __future__ import annotations

import html
import re
import urllib.parse
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal
from zoneinfo import ZoneInfo

__all__ = [
    "TELEGRAM_LIMIT",
    "Notification",
    "StoryAlert",
    "format_time",
    "render_html",
    "render_markdown",
    "render_telegram",
    "render_text",
]

Kind = Literal["story", "digest", "summary", "health", "test"]
TELEGRAM_LIMIT = 4096


@dataclass(frozen=True, slots=True)
class StoryAlert:
    """Everything a message about one story shows."""

    title: str
    source: str
    url: str | None
    published_at: datetime | None  # aware, UTC
    rules: tuple[str, ...]  # rule names (human), in order
    terms: tuple[str, ...]  # matched words as they appear
    snippet: str  # plain text; the terms are emphasised when rendering
    also_reported_by: tuple[str, ...] = ()  # other sources carrying the story
    priority: str = "normal"


@dataclass(frozen=True, slots=True)
class Notification:
    """One message to send: a story, a combined message (digest, summary), or a note."""

    kind: Kind
    title: str  # e.g. the story title, "Digest: Japan (12 stories)", "Kyodo is failing"
    stories: tuple[StoryAlert, ...] = ()
    text: str = ""  # plain-text body of health/test messages, or a note above a digest


# --- cleaning (shared by every channel) ----------------------------------------------------------

# Caps on feed-derived fields: a hostile or broken feed cannot make a message unreadable.
TITLE_MAX = 300
DIGEST_TITLE_MAX = 200
SOURCE_MAX = 120
SNIPPET_MAX = 500
NAME_MAX = 120  # a rule name, a term, an "also reported by" source
LIST_MAX = 12  # rule names, terms, also-reported-by names shown
TEXT_MAX = 3000  # the note of a health/test/summary message
URL_MAX = 2048

_CONTROL = dict.fromkeys([*range(0, 9), 11, 12, *range(14, 32), 127, 0xFEFF, 0x2028, 0x2029])
_SPACES = re.compile(r"\s+")
_BLANK_LINES = re.compile(r"\n\s*\n+")
_MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]


def _line(value: str, limit: int) -> str:
    """One line of text: control characters dropped, whitespace collapsed, clipped to limit."""
    return _clip(_SPACES.sub(" ", value.translate(_CONTROL)).strip(), limit)


def _para(value: str, limit: int) -> str:
    """Multi-line text (a note): control characters dropped, lines trimmed, clipped."""
    lines = [_SPACES.sub(" ", ln).strip() for ln in value.translate(_CONTROL).splitlines()]
    return _clip(_BLANK_LINES.sub("\n\n", "\n".join(lines)).strip(), limit)


def _clip(value: str, limit: int) -> str:
    """``value`` cut to at most ``limit`` characters at a word boundary, ending with "…"."""
    if len(value) <= limit:
        return value
    cut = value[: limit - 1]
    space = cut.rfind(" ")
    if space >= limit * 0.8:
        cut = cut[:space]
    return cut.rstrip() + "…"


def _names(values: Iterable[str], limit: int = LIST_MAX) -> list[str]:
    """Cleaned, de-duplicated (case-insensitively) names; "N more" when over the limit."""
    seen: set[str] = set()
    out: list[str] = []
    for value in values:
        name = _line(value, NAME_MAX)
        if name and name.casefold() not in seen:
            seen.add(name.casefold())
            out.append(name)
    if len(out) > limit:
        out = [*out[: limit - 1], f"{len(out) - limit + 1} more"]
    return out


def safe_url(url: str | None) -> str | None:
    """An http(s) URL fit to be a link (percent-encoded: no quote, bracket, space or
    backslash left), or None when the URL is missing, too long or of another scheme."""
    if not url:
        return None
    url = url.translate(_CONTROL).strip()
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return None
    if parts.scheme.lower() not in {"http", "https"} or not parts.netloc:
        return None
    quoted = urllib.parse.quote(url, safe="!#$%&*+,-./:;=?@[]_~")
    return quoted if len(quoted) <= URL_MAX else None


def format_time(moment: datetime, tz: ZoneInfo) -> str:
    """``1 Nov 2024 14:30 JST``: local time in ``tz``, English month names whatever the locale."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    local = moment.astimezone(tz)
    zone = local.tzname() or tz.key
    return f"{local.day} {_MONTHS[local.month - 1]} {local.year} {local:%H:%M} {zone}"


def _cjk(ch: str) -> bool:
    """Han, Kana, Hangul or Thai: scripts whose terms match inside words."""
    o = ord(ch)
    return (
        0x0E00 <= o <= 0x0E7F
        or 0x1100 <= o <= 0x11FF
        or 0x3040 <= o <= 0x30FF
        or 0x3400 <= o <= 0x4DBF
        or 0x4E00 <= o <= 0x9FFF
        or 0xAC00 <= o <= 0xD7AF
        or 0xF900 <= o <= 0xFAFF
        or 0xFF66 <= o <= 0xFF9F
    )


def highlight(text: str, terms: Iterable[str]) -> list[tuple[str, bool]]:
    """``text`` split into (piece, emphasised) runs: every case-insensitive occurrence of a term
    (as a whole word, or anywhere for Han/Kana/Hangul/Thai) is emphasised; touching or
    overlapping occurrences merge into one run."""
    patterns = []
    for term in sorted({t.strip() for t in terms if t.strip()}, key=len, reverse=True):
        pattern = re.escape(term)
        if term[0].isalnum() and not _cjk(term[0]):
            pattern = r"(?<!\w)" + pattern
        if term[-1].isalnum() and not _cjk(term[-1]):
            pattern += r"(?!\w)"
        patterns.append(pattern)
    if not patterns or not text:
        return [(text, False)] if text else []
    found = sorted(
        (m.start(), m.end())
        for pattern in patterns
        for m in re.finditer(pattern, text, re.IGNORECASE)
        if m.end() > m.start()
    )
    spans: list[list[int]] = []
    for start, end in found:
        if spans and start <= spans[-1][1]:
            spans[-1][1] = max(spans[-1][1], end)
        else:
            spans.append([start, end])
    runs: list[tuple[str, bool]] = []
    pos = 0
    for start, end in spans:
        if start > pos:
            runs.append((text[pos:start], False))
        runs.append((text[start:end], True))
        pos = end
    if pos < len(text):
        runs.append((text[pos:], False))
    return runs


@dataclass(frozen=True, slots=True)
class _Story:
    """A StoryAlert cleaned for display."""

    title: str
    source: str
    url: str | None  # safe to link
    raw_url: str  # shown as text when it is not safe to link
    when: str  # local time, or ""
    rules: list[str]
    terms: list[str]
    snippet: str
    also: list[str]
    priority: str


def _story(s: StoryAlert, tz: ZoneInfo, title_max: int = TITLE_MAX) -> _Story:
    url = safe_url(s.url)
    return _Story(
        title=_line(s.title, title_max) or "(untitled)",
        source=_line(s.source, SOURCE_MAX),
        url=url,
        raw_url="" if url or not s.url else _line(s.url, 200),
        when=format_time(s.published_at, tz) if s.published_at else "",
        rules=_names(s.rules),
        terms=_names(s.terms),
        snippet=_line(s.snippet, SNIPPET_MAX),
        also=_names(s.also_reported_by),
        priority=_line(s.priority, 20),
    )


def _meta(s: _Story) -> str:
    return " · ".join(p for p in (s.source, s.when) if p)


def _title(n: Notification) -> str:
    return _line(n.title, TITLE_MAX) or f"scraper {n.kind}"


def _combined(n: Notification) -> bool:
    return n.kind in ("digest", "summary") or len(n.stories) > 1


# --- plain text ----------------------------------------------------------------------------------


def render_text(n: Notification, tz: ZoneInfo) -> str:
    """The message as plain text (webhooks, JSON, services without markup, standard output)."""
    note = _para(n.text, TEXT_MAX)
    if n.stories and not _combined(n):
        s = _story(n.stories[0], tz)
        head = [x for x in (s.title, _meta(s), s.url or s.raw_url) if x]
        blocks = ["\n".join(head)]
        if s.snippet:
            blocks.append(s.snippet)
        facts = _facts(s, lambda label, value: f"{label}: {value}")
        if facts:
            blocks.append("\n".join(facts))
        if note:
            blocks.append(note)
        return "\n\n".join(blocks)
    blocks = [_title(n)]
    if note:
        blocks.append(note)
    for i, story in enumerate(n.stories, 1):
        s = _story(story, tz, DIGEST_TITLE_MAX)
        meta = " · ".join(p for p in (_meta(s), ", ".join(s.rules)) if p)
        blocks.append(
            "\n".join([f"{i}. {s.title}", *(f"   {x}" for x in (meta, s.url or s.raw_url) if x)])
        )
    return "\n\n".join(blocks)


def _facts(s: _Story, fmt: Callable[[str, str], str]) -> list[str]:
    out = []
    if s.priority and s.priority != "normal":
        out.append(fmt("Priority", s.priority))
    if s.rules:
        out.append(fmt("Rules", ", ".join(s.rules)))
    if s.terms:
        out.append(fmt("Matched", ", ".join(s.terms)))
    if s.also:
        out.append(fmt("Also reported by", ", ".join(s.also)))
    return out


# --- Markdown ------------------------------------------------------------------------------------

# Characters with a meaning anywhere in a CommonMark line, and those with a meaning only at the
# start of a line (headings, list items, quotes, thematic breaks, setext underlines).
_MD_INLINE = re.compile(r"([\\`*_\[\]<>&|~])")
_MD_LINE_START = re.compile(r"^(\s*)([#+\-=]|\d+(?=[.)]))", re.MULTILINE)


def md_escape(text: str) -> str:
    """``text`` shown literally by a CommonMark renderer. A fragment is treated as if it began
    a line, so a leading "#", "-", "+", "=" or "1." is escaped too."""
    text = _MD_INLINE.sub(r"\\\1", text)
    return _MD_LINE_START.sub(lambda m: f"{m.group(1)}{_md_lead(m.group(2))}", text)


def _md_lead(lead: str) -> str:
    return f"{lead}\\" if lead[0].isdigit() else f"\\{lead}"


def _md_snippet(s: _Story) -> str:
    return "".join(
        f"**{md_escape(piece)}**" if strong else md_escape(piece)
        for piece, strong in highlight(s.snippet, s.terms)
    )


def _md_title(s: _Story) -> str:
    title = md_escape(s.title)
    return f"[{title}]({s.url})" if s.url else title


def render_markdown(n: Notification, tz: ZoneInfo) -> str:
    """The message as CommonMark (chat services that render Markdown)."""
    note = md_escape(_para(n.text, TEXT_MAX)).replace("\n", "  \n")
    if n.stories and not _combined(n):
        s = _story(n.stories[0], tz)
        blocks = [f"**{_md_title(s)}**  \n{md_escape(_meta(s))}"]
        if s.snippet:
            blocks.append(f"> {_md_snippet(s)}")
        facts = _facts(s, lambda label, value: f"**{label}:** {md_escape(value)}")
        if not s.url and s.raw_url:
            facts.append(f"**Link:** {md_escape(s.raw_url)}")
        if facts:
            blocks.append("  \n".join(facts))
        if note:
            blocks.append(note)
        return "\n\n".join(blocks)
    blocks = [f"**{md_escape(_title(n))}**"]
    if note:
        blocks.append(note)
    for i, story in enumerate(n.stories, 1):
        s = _story(story, tz, DIGEST_TITLE_MAX)
        meta = " · ".join(p for p in (_meta(s), ", ".join(s.rules)) if p)
        link = s.url or md_escape(s.raw_url)
        blocks.append(
            "  \n".join(x for x in (f"{i}. **{_md_title(s)}**", md_escape(meta), link) if x)
        )
    return "\n\n".join(blocks)


# --- HTML (email) --------------------------------------------------------------------------------


def _h(text: str) -> str:
    return html.escape(text, quote=True)


def _html_snippet(s: _Story) -> str:
    return "".join(
        f"<b>{_h(piece)}</b>" if strong else _h(piece)
        for piece, strong in highlight(s.snippet, s.terms)
    )


def _html_link(url: str | None, text: str) -> str:
    return f'<a href="{_h(url)}">{_h(text)}</a>' if url else _h(text)


_CSS = (
    "body{font-family:-apple-system,'Segoe UI',Helvetica,Arial,sans-serif;color:#222;"
    "line-height:1.45;max-width:42em;margin:0 auto;padding:1em}"
    "h1{font-size:1.25em;margin:0 0 .3em}h2{font-size:1.05em;margin:1.2em 0 .2em}"
    ".meta{color:#666;margin:0 0 .8em}.url{color:#666;font-size:.85em;word-break:break-all}"
    "blockquote{margin:0 0 1em;padding:.2em .9em;border-left:3px solid #ccc;color:#333}"
)


def render_html(n: Notification, tz: ZoneInfo) -> str:
    """The message as a complete, self-contained HTML document (email)."""
    title = _title(n)
    note = _para(n.text, TEXT_MAX)
    body: list[str] = []
    if n.stories and not _combined(n):
        s = _story(n.stories[0], tz)
        body.append(f"<h1>{_html_link(s.url, s.title)}</h1>")
        body.append(f'<p class="meta">{_h(_meta(s))}</p>')
        if s.snippet:
            body.append(f"<blockquote>{_html_snippet(s)}</blockquote>")
        facts = _facts(s, lambda label, value: f"<b>{_h(label)}:</b> {_h(value)}")
        if facts:
            body.append("<p>" + "<br>\n".join(facts) + "</p>")
        if s.url or s.raw_url:
            body.append(f'<p class="url">{_html_link(s.url, s.url or s.raw_url)}</p>')
    else:
        body.append(f"<h1>{_h(title)}</h1>")
    if note:
        body.append("<p>" + _h(note).replace("\n", "<br>\n") + "</p>")
    if _combined(n):
        for story in n.stories:
            s = _story(story, tz, DIGEST_TITLE_MAX)
            meta = " · ".join(p for p in (_meta(s), ", ".join(s.rules)) if p)
            body.append(f"<h2>{_html_link(s.url, s.title)}</h2>")
            body.append(f'<p class="meta">{_h(meta)}')
            if s.url or s.raw_url:
                body.append(
                    f'<br>\n<span class="url">{_html_link(s.url, s.url or s.raw_url)}</span>'
                )
            body.append("</p>")
    return (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width">'
        f"<title>{_h(title)}</title><style>{_CSS}</style></head>\n<body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )


# --- Telegram HTML -------------------------------------------------------------------------------


def _t(text: str) -> str:
    """Escape text for Telegram HTML: only &lt; &gt; &amp; (named entities Apprise and Telegram
    both leave alone); newlines stay newlines, blank lines never occur."""
    return html.escape(text, quote=False)


def tg_len(text: str) -> int:
    """Length as Telegram counts it: UTF-16 code units."""
    return len(text) + sum(1 for ch in text if ord(ch) > 0xFFFF)


def _tg_link(url: str | None, text: str) -> str:
    return f'<a href="{html.escape(url, quote=True)}">{_t(text)}</a>' if url else _t(text)


def _tg_snippet(s: _Story) -> str:
    return "".join(
        f"<b>{_t(piece)}</b>" if strong else _t(piece)
        for piece, strong in highlight(s.snippet, s.terms)
    )


def _display_url(url: str) -> str:
    bare = re.sub(r"^https?://(www\.)?", "", url, flags=re.IGNORECASE)
    return _clip(urllib.parse.unquote(bare), 60)


def _tg_story(s: _Story, note: str) -> str:
    lines = [f"<b>{_tg_link(s.url, s.title)}</b>"]
    if _meta(s):
        lines.append(_t(_meta(s)))
    if s.snippet:
        lines.append(f"<blockquote>{_tg_snippet(s)}</blockquote>")
    lines += _facts(s, lambda label, value: f"{_t(label)}: {_t(value)}")
    if not s.url and s.raw_url:
        lines.append(f"Link: {_t(s.raw_url)}")
    if note:
        lines.append(_t(note))
    return "\n".join(lines)


def _tg_digest_line(i: int, s: _Story) -> str:
    meta = " · ".join(p for p in (_meta(s), ", ".join(s.rules)) if p)
    return f"{i}. {_tg_link(s.url, s.title)}" + (f" — {_t(meta)}" if meta else "")


def render_telegram(n: Notification, tz: ZoneInfo, limit: int = TELEGRAM_LIMIT) -> str:
    """The message in Telegram's HTML parse mode, at most ``limit`` UTF-16 code units long."""
    note = _BLANK_LINES.sub("\n", _para(n.text, TEXT_MAX))
    if n.stories and not _combined(n):
        s = _story(n.stories[0], tz)
        full = _tg_story(s, note)
        if tg_len(full) <= limit:
            return full
        tail = f"\n{_tg_link(s.url, _display_url(s.url))}" if s.url else ""
        if tg_len(tail) > limit // 2:
            tail = ""
        return cut_markup(full, limit - tg_len(tail)) + tail

    head = [f"<b>{_t(_title(n))}</b>"]
    if note:
        head.append(_t(note))
    out = "\n".join(head)
    if tg_len(out) > limit:
        return cut_markup(out, limit)
    used = tg_len(out)
    total = len(n.stories)
    for i, story in enumerate(n.stories, 1):
        entry = "\n" + _tg_digest_line(i, _story(story, tz, DIGEST_TITLE_MAX))
        rest = total - i
        more = tg_len(f"\n…and {rest} more") if rest else 0
        if used + tg_len(entry) + more > limit:
            more_line = f"\n…and {total - i + 1} more"
            if used + tg_len(more_line) > limit:  # only when the limit is absurdly small
                return cut_markup(out, limit)
            return out + more_line
        out += entry
        used += tg_len(entry)
    return out


_TOKEN = re.compile(r"<[^>]*>|&(?:#\d+|#x[0-9a-fA-F]+|[A-Za-z]+);|.", re.DOTALL)
_TAG_NAME = re.compile(r"</?([A-Za-z][A-Za-z0-9-]*)")
_ELLIPSIS = "…"


def cut_markup(markup: str, limit: int) -> str:
    """The longest prefix of well-formed ``markup`` that fits ``limit`` (UTF-16 units) with "…"
    and the end tags of every element still open: never cuts inside a tag or an entity,
    prefers a word boundary, drops elements left empty, closes what it keeps open."""
    if tg_len(markup) <= limit:
        return markup
    tokens: list[str] = []
    stack: list[str] = []  # open element names
    used = 0
    closers = 0  # length of the end tags the stack needs
    for tok in _TOKEN.findall(markup):
        if tok.startswith("</") and len(tok) > 2:
            tokens.append(tok)
            stack.pop()
            used += len(tok)
            closers -= len(tok)
            continue
        if tok.startswith("<") and len(tok) > 1:
            name = _TAG_NAME.match(tok)
            assert name is not None
            end = len(name.group(1)) + 3
            if used + len(tok) + closers + end + len(_ELLIPSIS) > limit:
                break
            tokens.append(tok)
            stack.append(name.group(1))
            used += len(tok)
            closers += end
            continue
        cost = tg_len(tok)  # a character, or an entity counted as its markup
        if used + cost + closers + len(_ELLIPSIS) > limit:
            break
        tokens.append(tok)
        used += cost
    # Back off to a word boundary when one is near, then drop empty elements and trailing space.
    back = len(tokens)
    for j in range(len(tokens) - 1, max(-1, len(tokens) - 40), -1):
        if tokens[j].startswith("<"):
            break
        if tokens[j].isspace():
            back = j
            break
    del tokens[back:]
    while tokens and (tokens[-1].isspace() or _opens(tokens[-1])):
        if _opens(tokens[-1]):
            stack.pop()
        tokens.pop()
    return "".join(tokens) + _ELLIPSIS + "".join(f"</{name}>" for name in reversed(stack))


def _opens(tok: str) -> bool:
    return tok.startswith("<") and not tok.startswith("</") and len(tok) > 1
