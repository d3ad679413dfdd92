"""The whole shared corpus (../shared/corpus, MANIFEST.tsv) through parse_document.

Well-formed feeds must yield at least the manifest's item count, with a title or link on every
item, GUIDs where the manifest counts them and dates where the entries carry parseable ones.
Malformed feeds and HTML pages must never raise or hang. Nothing may carry script.
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass
from pathlib import Path

import pytest
from lxml import etree

from scraper.models import Item, ParsedFeed
from scraper.parse import parse_document
from scraper.text import parse_date

CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "corpus"
FEED_KINDS = ("rss2", "atom", "rdf", "jsonfeed")

# Files that cannot meet the manifest's item count, and why.
ITEM_COUNT_EXCEPTIONS = {
    "feeds/jsonfeed/authors-variants_v1.1.json": (
        "SYNTHETIC: its 4 items carry only an id and authors, no title, link or content; by SPEC "
        "'Item identity' an entry with no title, no link and no content is not an item"
    ),
    "feeds/malformed/atom-entry-only-empty-author_synthetic.xml": (
        "SYNTHETIC: its one entry has no id, title, link, date or content: not an item"
    ),
}


@dataclass(frozen=True)
class Row:
    path: str
    kind: str
    notes: str

    @property
    def items(self) -> int | None:
        m = re.search(r"(?:^|; )items=(\d+)", self.facts)
        return int(m.group(1)) if m else None

    @property
    def with_guid(self) -> int:
        m = re.search(r"items-with-(?:guid/id|id)=(\d+)", self.facts)
        return int(m.group(1)) if m else 0

    @property
    def facts(self) -> str:
        return self.notes.partition(" || ")[2]


def _rows() -> list[Row]:
    manifest = CORPUS / "MANIFEST.tsv"
    if not manifest.exists():
        return []
    with manifest.open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f, delimiter="\t")
        return [Row(r["path_in_corpus"], r["kind"], r["notes"]) for r in reader]


ROWS = _rows()
pytestmark = pytest.mark.skipif(not ROWS, reason=f"corpus not found at {CORPUS}")
WELL_FORMED = [r for r in ROWS if r.kind in FEED_KINDS]
MALFORMED = [r for r in ROWS if r.kind == "malformed"]
PAGES = [r for r in ROWS if r.kind in ("article-html", "listing-html")]


def _parse(row: Row) -> ParsedFeed:
    body = (CORPUS / row.path).read_bytes()
    result = parse_document(body, url=f"https://corpus.example/{row.path}")
    assert isinstance(result, ParsedFeed)
    return result


def _assert_clean(item: Item) -> None:
    for name in ("key", "guid", "url", "title", "summary", "content", "author"):
        value = getattr(item, name) or ""
        assert "<script" not in value.lower(), f"{name} carries script: {value[:200]!r}"
    if item.url:
        scheme = item.url.split(":", 1)[0].strip().lower()
        assert scheme not in ("javascript", "data", "vbscript"), item.url
    for name in ("title", "summary", "content", "author"):
        value: str = getattr(item, name)
        assert value == value.strip() and "  " not in value and "\n" not in value, name
    if item.published_at is not None:
        assert item.published_at.utcoffset() is not None
        assert item.published_at.utcoffset().total_seconds() == 0  # type: ignore[union-attr]


_DATE_TAGS = frozenset({"pubdate", "date", "published", "updated", "issued", "modified"})


def _entries_with_parseable_dates(row: Row) -> int:
    """An independent count of entries whose date element (or JSON field) parses."""
    body = (CORPUS / row.path).read_bytes()
    if row.kind == "jsonfeed":
        items = json.loads(body).get("items", [])
        return sum(
            1
            for it in items
            if parse_date(it.get("date_published") or it.get("date_modified") or "")
        )
    parser = etree.XMLParser(recover=True, resolve_entities=False, no_network=True)
    root = etree.fromstring(body, parser)
    count = 0
    for el in root.iter("{*}item", "{*}entry"):
        dates = [
            child.text
            for child in el
            if isinstance(child.tag, str)
            and etree.QName(child).localname.lower() in _DATE_TAGS
            and child.text
        ]
        if any(parse_date(d) for d in dates) and (len(el) > 0):
            count += 1
    return count


@pytest.mark.parametrize("row", WELL_FORMED, ids=lambda r: r.path)
def test_well_formed_feed(row: Row) -> None:
    result = _parse(row)
    assert result.error is None, result.error
    assert result.format in ("rss", "rdf", "atom", "json")
    expected = row.items or 0
    if row.path not in ITEM_COUNT_EXCEPTIONS:
        assert len(result.items) >= expected
    for item in result.items:
        assert item.title or item.url, item
        _assert_clean(item)
    assert len({item.key for item in result.items}) == len(result.items), "keys not unique"
    with_guid = sum(1 for item in result.items if item.guid)
    assert with_guid >= min(row.with_guid, len(result.items))
    with_dates = sum(1 for item in result.items if item.published_at is not None)
    assert with_dates >= _entries_with_parseable_dates(row)


@pytest.mark.timeout(20)
@pytest.mark.parametrize("row", MALFORMED, ids=lambda r: r.path)
def test_malformed_feed_never_raises(row: Row) -> None:
    result = _parse(row)
    for item in result.items:
        _assert_clean(item)
    assert len({item.key for item in result.items}) == len(result.items)
    if row.path in ITEM_COUNT_EXCEPTIONS:
        return
    if not result.items and result.feed_url is None and (row.items or 0) > 0:
        pytest.fail(f"lost every item of a feed the manifest counts {row.items} in")


@pytest.mark.timeout(20)
@pytest.mark.parametrize("row", PAGES, ids=lambda r: r.path)
def test_html_page_as_feed_source(row: Row) -> None:
    """A feed source that serves an HTML page: autodiscovery or an error, never a crash."""
    result = _parse(row)
    assert result.items == ()
    assert result.format == "html"
    assert (result.feed_url is None) != (result.error is None)
    if result.feed_url:
        assert result.feed_url.startswith(("http://", "https://"))


def test_whole_corpus_is_fast() -> None:
    """Every feed file once: well inside the test budget (about 0.5 s on the dev machine)."""
    import time

    start = time.perf_counter()
    for row in WELL_FORMED + MALFORMED:
        _parse(row)
    assert time.perf_counter() - start < 10.0
