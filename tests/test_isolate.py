"""ParserPool: parsing in worker processes with a per-document time limit."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from scraper.isolate import TEST_CRASH, TEST_HANG, ParserPool
from scraper.models import HtmlSelectors
from scraper.parse import parse_document

FEED = (
    '<rss version="2.0"><channel><title>T</title>'
    + "".join(
        f"<item><title>Story {n}</title><link>https://a.example/{n}</link>"
        f"<pubDate>Mon, 01 Jan 2024 10:00:0{n} GMT</pubDate></item>"
        for n in range(5)
    )
    + "</channel></rss>"
).encode()


class HookedPool(ParserPool):
    """TEST ONLY: honours the x-scraper-test/* content types (a worker that hangs or dies)."""

    _test_hooks = True


@pytest.fixture(scope="module")
def pool() -> Iterator[ParserPool]:
    with HookedPool(workers=2, timeout=1.0) as p:
        yield p


def test_results_match_parse_document(pool: ParserPool) -> None:
    assert pool.parse(FEED, url="https://a.example/f") == parse_document(
        FEED, url="https://a.example/f"
    )
    page = b'<div class="c"><a href="/x">X</a></div>'
    sel = HtmlSelectors(item=".c", title="a", link="a")
    assert pool.parse(page, url="https://a.example/", selectors=sel).items[0].url == (
        "https://a.example/x"
    )


def test_timeout_kills_the_worker_and_recovers(pool: ParserPool) -> None:
    start = time.monotonic()
    result = pool.parse(b"<rss/>", url="https://a.example/", content_type=TEST_HANG)
    assert time.monotonic() - start < 5
    assert result.items == ()
    assert result.error == "parse timed out after 1s"
    for _ in range(3):  # both workers (the replacement included) still serve
        assert len(pool.parse(FEED, url="https://a.example/f").items) == 5


def test_crash_becomes_an_error(pool: ParserPool) -> None:
    result = pool.parse(b"<rss/>", url="https://a.example/", content_type=TEST_CRASH)
    assert result.items == ()
    assert result.error is not None and "died" in result.error
    assert len(pool.parse(FEED, url="https://a.example/f").items) == 5


def test_concurrent_callers(pool: ParserPool) -> None:
    results: list[int] = []
    lock = threading.Lock()

    def work(n: int) -> None:
        ct = TEST_HANG if n == 3 else None
        count = len(pool.parse(FEED, url="https://a.example/f", content_type=ct).items)
        with lock:
            results.append(count)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert sorted(results) == [0] + [5] * 15


def test_hooks_are_ignored_by_a_normal_pool() -> None:
    with ParserPool(workers=1, timeout=5.0) as pool:
        result = pool.parse(FEED, url="https://a.example/f", content_type=TEST_HANG)
        assert len(result.items) == 5


def test_closed_pool_returns_an_error() -> None:
    pool = ParserPool(workers=1, timeout=5.0)
    assert pool.parse(FEED, url="https://a.example/f").error is None
    pool.close()
    pool.close()  # idempotent
    assert pool.parse(FEED, url="https://a.example/f").error == "parser pool is closed"


def test_workers_must_be_positive() -> None:
    with pytest.raises(ValueError):
        ParserPool(workers=0)


def test_workers_match_with_the_rules_they_were_given() -> None:
    from scraper.models import Rule

    feed = (
        b'<?xml version="1.0"?><rss version="2.0"><channel><title>t</title>'
        b"<item><title>Japan and EU sign defense pact</title><guid>1</guid></item>"
        b"<item><title>Weather</title><guid>2</guid></item></channel></rss>"
    )
    with ParserPool(workers=1, timeout=10) as pool:
        plain = pool.parse(feed, url="http://x/", source=("Wire", ("japan",)))
        assert plain.matches is None  # no rules given: nothing matched
        pool.set_rules((Rule(id="japan", name="Japan", query="Japan"),), {})
        first = pool.parse(feed, url="http://x/", source=("Wire", ("japan",)))
        assert first.matches is not None
        assert [[m.rule for m in found] for found in first.matches] == [["japan"], []]
        assert first.matches[0][0].terms == ("Japan",)
        pool.set_rules((Rule(id="weather", name="Weather", query="weather"),), {})
        second = pool.parse(feed, url="http://x/", source=("Wire", ()))
        assert [[m.rule for m in found] for found in second.matches or ()] == [[], ["weather"]]
