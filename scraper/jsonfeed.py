"""JSON Feed 1.0 and 1.1 to entries (https://jsonfeed.org/version/1.1), leniently: ids may be
numbers, a missing version is accepted when there are items, and a truncated document still
yields its complete items."""

from __future__ import annotations

import json
import re
from typing import Any

from scraper.feeds import Entry, FeedData
from scraper.text import html_to_text, parse_date, plain_text
from scraper.urls import resolve_link

__all__ = ["parse_json"]

_RE_ITEMS = re.compile(r'"items"\s*:\s*\[')


def _s(value: object) -> str | None:
    """A JSON scalar as a string (ids may be numbers), else None."""
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return None


def _json_author(obj: dict[str, Any]) -> str:
    authors = obj.get("authors")
    if isinstance(authors, list):
        names = [plain_text(_s(a.get("name"))) for a in authors if isinstance(a, dict)]
        names = [n for n in names if n]
        if names:
            return ", ".join(names)
    author = obj.get("author")
    if isinstance(author, dict):
        return plain_text(_s(author.get("name")))
    return ""


def _json_entry(item: dict[str, Any], url: str, feed_author: str) -> Entry:
    guid = _s(item.get("id"))
    guid = guid.strip() if guid else None
    link = resolve_link(_s(item.get("url")), url) or resolve_link(_s(item.get("external_url")), url)
    content = html_to_text(_s(item.get("content_html")) or "") or plain_text(
        _s(item.get("content_text"))
    )
    date_text = ""
    published = None
    for key in ("date_published", "date_modified"):
        text = (_s(item.get(key)) or "").strip()
        if text:
            date_text = date_text or text
            published = parse_date(text)
            if published is not None:
                date_text = text
                break
    return Entry(
        guid=guid or None,
        url=link,
        title=html_to_text(_s(item.get("title")) or ""),
        summary=html_to_text(_s(item.get("summary")) or ""),
        content=content,
        author=_json_author(item) or feed_author,
        published_at=published,
        date_text=date_text,
    )


def _recover_items(text: str) -> list[Any]:
    """The complete items of a truncated JSON Feed, decoded one by one."""
    m = _RE_ITEMS.search(text)
    if not m:
        return []
    decoder = json.JSONDecoder()
    items: list[Any] = []
    pos = m.end()
    while True:
        while pos < len(text) and text[pos] in " \t\r\n,":
            pos += 1
        if pos >= len(text) or text[pos] == "]":
            return items
        try:
            obj, pos = decoder.raw_decode(text, pos)
        except (ValueError, RecursionError):
            return items
        items.append(obj)


def parse_json(text: str, url: str) -> FeedData:
    """A JSON Feed 1.x document (lenient: a missing version is accepted when items exist)."""
    error = None
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError) as exc:
        error = f"invalid JSON: {exc}"
        doc = {"items": _recover_items(text)}
    if not isinstance(doc, dict):
        return FeedData("json", error=error or "JSON document is not a JSON Feed")
    version = _s(doc.get("version")) or ""
    items = doc.get("items")
    if not isinstance(items, list) or (version and "jsonfeed.org" not in version and not items):
        return FeedData("json", error=error or "JSON document is not a JSON Feed (no items)")
    feed_author = _json_author(doc)
    entries = [_json_entry(it, url, feed_author) for it in items if isinstance(it, dict)]
    return FeedData("json", html_to_text(_s(doc.get("title")) or "") or None, entries, error)
