"""Frozen values passed between the layers. No I/O, no behaviour beyond small helpers."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

SourceKind = Literal["feed", "html"]
Priority = Literal["low", "normal", "high"]
FIELDS = ("title", "summary", "content", "author", "source")


@dataclass(frozen=True, slots=True)
class HtmlSelectors:
    """CSS selectors of a ``kind = "html"`` source; ``date`` and ``summary`` are optional."""

    item: str
    title: str
    link: str = "a[href]"
    date: str | None = None
    summary: str | None = None


@dataclass(frozen=True, slots=True)
class Source:
    """One configured source, with its per-source settings resolved against [defaults]."""

    name: str
    url: str
    kind: SourceKind = "feed"
    tags: tuple[str, ...] = ()
    interval: float = 900.0  # seconds
    timeout: float = 30.0  # seconds, total deadline of one fetch (body included)
    max_bytes: int = 10_000_000  # decoded size cap
    jitter: float = 0.10  # fraction of the interval
    enabled: bool = True
    selectors: HtmlSelectors | None = None
    # The URL as written when it holds ${VAR}s (a key in a query string, say): what the
    # database and the logs show instead of ``url``, which has them expanded.
    display_url: str | None = None

    @property
    def shown_url(self) -> str:
        return self.display_url or self.url


@dataclass(frozen=True, slots=True)
class FetchResult:
    """The outcome of one fetch attempt; never raised, always returned.

    ``status`` is what goes into ``fetches.status``: the HTTP status as text ("200", "304",
    "404") or an error class (timeout, too_large, dns, tls, connect, redirect, protocol).
    ``ok`` is true for a 2xx body that should be parsed; ``not_modified`` for a 304.
    """

    url: str  # the URL asked for
    final_url: str  # after redirects
    status: str
    ok: bool = False
    not_modified: bool = False
    body: bytes | None = None
    content_type: str | None = None
    etag: str | None = None
    last_modified: str | None = None
    retry_after: float | None = None  # seconds, from Retry-After on 429/503
    error: str | None = None
    duration_ms: int = 0
    bytes: int = 0  # decoded body size
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Item:
    """One parsed entry. Text fields are clean text (no markup), never None."""

    key: str  # identity within the source (see SPEC "Item identity")
    guid: str | None
    url: str | None
    title: str
    summary: str = ""
    content: str = ""
    author: str = ""
    published_at: datetime | None = None  # aware, UTC

    def fields(self) -> dict[str, str]:
        """The text fields a rule matches (``source`` is added by the matcher's caller)."""
        return {
            "title": self.title,
            "summary": self.summary,
            "content": self.content,
            "author": self.author,
        }


@dataclass(frozen=True, slots=True)
class ParsedFeed:
    """What the parser made of one document. ``error`` is set when the document was broken
    (bozo): items may still hold whatever could be recovered."""

    items: tuple[Item, ...]
    title: str | None = None
    format: str | None = None  # rss, atom, rdf, json, html
    error: str | None = None
    feed_url: str | None = None  # an autodiscovered feed (<link rel="alternate">) to use instead
    matches: tuple[tuple[Match, ...], ...] | None = None  # per item, when matched by the parser


@dataclass(frozen=True, slots=True)
class Rule:
    """A rule file, loaded. ``id`` is the file's stem."""

    id: str
    name: str
    query: str
    notify: tuple[str, ...] | None = None  # Apprise tags; None = every target
    sources: tuple[str, ...] | None = None  # source names or tags; None = every source
    digest: str | None = None  # cron string
    priority: Priority = "normal"
    enabled: bool = True
    path: str | None = None


@dataclass(frozen=True, slots=True)
class Match:
    """One rule matching one item: which fields and which words (as they appear)."""

    rule: str
    fields: tuple[str, ...]
    terms: tuple[str, ...]
