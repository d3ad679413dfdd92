"""`run --once` end to end: real loopback servers, a real SQLite file, the real parser pool."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers import rows, rss, write_config
from servers import LoopbackServer

from scraper.app import run_once
from scraper.cli import main
from scraper.clock import parse_iso
from scraper.settings import load_settings

NOW = datetime(2024, 11, 1, 5, 30, tzinfo=UTC)

SEED = {
    "title": "Japan and EU sign security and defense partnership",
    "link": "https://example.com/japan-eu-pact?utm_source=rss",
    "guid": "seed-1",
    "description": "<p>TOKYO (AFP) &ndash; Japan and the <b>EU</b> signed a pact.</p>"
    "<script>alert(1)</script>",
}
OTHER = {"title": "Japanese baseball league opens", "link": "https://example.com/b", "guid": "b"}


def settings_for(tmp_path: Path, sources: list[dict[str, object]], **kw: object):  # type: ignore[no-untyped-def]
    return load_settings(write_config(tmp_path, sources, **kw), os.environ)  # type: ignore[arg-type]


class Clock:
    def __init__(self, now: datetime = NOW) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def test_once_archives_then_second_pass_adds_nothing(
    tmp_path: Path, http_server: LoopbackServer
) -> None:
    url = http_server.route(
        "/feed.xml", rss([SEED, OTHER]), content_type="application/rss+xml", etag='"v1"'
    )
    settings = settings_for(tmp_path, [{"name": "Wire", "url": url, "tags": ["japan"]}])
    db = settings.database

    first = run_once(settings, clock=Clock())
    assert [o.ok for o in first.outcomes] == [True]
    assert first.items_new == 2
    items = rows(
        db, "SELECT title, summary, url, guid, published_at, story_id FROM items ORDER BY id"
    )
    assert items[0][0] == SEED["title"]
    assert items[0][1] == "TOKYO (AFP) – Japan and the EU signed a pact."
    assert "script" not in items[0][1] and "alert" not in items[0][1]
    assert items[0][3] == "seed-1"
    assert items[0][4] == "2024-11-01T05:30:00Z"
    assert all(item[5] is not None for item in items)

    second = run_once(settings, clock=Clock(NOW + timedelta(minutes=15)))
    assert second.items_new == 0 and second.outcomes[0].unchanged
    assert http_server.requests[-1].headers.get("if-none-match") == '"v1"'
    fetches = rows(db, "SELECT status, items_new FROM fetches ORDER BY id")
    assert fetches == [("200", 2), ("304", 0)]
    assert rows(db, "SELECT count(*) FROM items") == [(2,)]
    # the FTS index follows
    assert rows(db, "SELECT count(*) FROM items_fts WHERE items_fts MATCH 'partnership'") == [(1,)]


def test_unchanged_body_without_validators_is_not_parsed_again(
    tmp_path: Path, http_server: LoopbackServer
) -> None:
    url = http_server.route("/feed.xml", rss([SEED]), content_type="application/rss+xml")
    settings = settings_for(tmp_path, [{"name": "Wire", "url": url}])
    run_once(settings, clock=Clock())
    second = run_once(settings, clock=Clock(NOW + timedelta(minutes=15)))
    assert second.outcomes[0].unchanged and second.outcomes[0].ok
    assert rows(settings.database, "SELECT status FROM fetches ORDER BY id") == [("200",), ("200",)]


def test_edited_item_updates_in_place(tmp_path: Path, http_server: LoopbackServer) -> None:
    url = http_server.route("/feed.xml", rss([SEED]), content_type="application/rss+xml")
    settings = settings_for(tmp_path, [{"name": "Wire", "url": url}])
    run_once(settings, clock=Clock())
    edited = dict(SEED, title="Japan and EU sign landmark security and defense partnership")
    http_server.route("/feed.xml", rss([edited]), content_type="application/rss+xml")
    summary = run_once(settings, clock=Clock(NOW + timedelta(minutes=15)))
    assert (summary.items_new, summary.items_updated) == (0, 1)
    assert rows(settings.database, "SELECT id, title FROM items") == [(1, edited["title"])]


def test_one_broken_source_is_recorded_and_others_work(
    tmp_path: Path, http_server: LoopbackServer
) -> None:
    good = http_server.route("/good.xml", rss([SEED]), content_type="application/rss+xml")
    broken = http_server.route(
        "/broken.xml", b"<rss><channel><item><title>x", content_type="text/xml"
    )
    missing = http_server.url("/missing.xml")
    settings = settings_for(
        tmp_path,
        [
            {"name": "Good", "url": good},
            {"name": "Broken", "url": broken},
            {"name": "Missing", "url": missing},
        ],
    )
    summary = run_once(settings, clock=Clock())
    by_name = {o.source: o for o in summary.outcomes}
    assert by_name["Good"].ok and by_name["Good"].items_new == 1
    assert not by_name["Missing"].ok and by_name["Missing"].status == "404"
    assert not summary.needs_attention  # some sources could be fetched
    failures = rows(
        settings.database,
        "SELECT name, consecutive_failures, last_status, last_error IS NOT NULL, next_fetch_at"
        " FROM sources WHERE consecutive_failures > 0 ORDER BY name",
    )
    assert [f[0] for f in failures] == ["Missing"] or [f[0] for f in failures] == [
        "Broken",
        "Missing",
    ]
    for _, count, _, has_error, next_fetch in failures:
        assert count == 1 and has_error
        assert parse_iso(next_fetch) > NOW  # type: ignore[operator]
    statuses = dict(
        rows(
            settings.database,
            "SELECT s.name, f.status FROM fetches f JOIN sources s ON s.id = f.source_id",
        )
    )
    assert statuses["Missing"] == "404"


def test_backoff_grows_and_retry_after_is_honoured(
    tmp_path: Path, http_server: LoopbackServer
) -> None:
    failing = http_server.route("/down.xml", status=500)
    busy = http_server.route("/busy.xml", status=429, headers={"Retry-After": "7200"})
    settings = settings_for(
        tmp_path,
        [
            {"name": "Down", "url": failing, "interval": "10m", "jitter": "0%"},
            {"name": "Busy", "url": busy, "interval": "10m", "jitter": "0%"},
        ],
    )
    delays = []
    clock = Clock()
    for _ in range(4):
        run_once(settings, clock=clock)
        (due,) = rows(settings.database, "SELECT next_fetch_at FROM sources WHERE name = 'Down'")[0]
        delays.append((parse_iso(due) - clock.now).total_seconds())  # type: ignore[operator]
        clock.now += timedelta(days=1)
    assert delays == sorted(delays) and delays[-1] > delays[0]
    assert rows(
        settings.database, "SELECT consecutive_failures FROM sources WHERE name='Down'"
    ) == [(4,)]
    (busy_due,) = rows(settings.database, "SELECT next_fetch_at FROM sources WHERE name = 'Busy'")[
        0
    ]
    assert (parse_iso(busy_due) - (clock.now - timedelta(days=1))).total_seconds() >= 7200  # type: ignore[operator]

    # --due skips sources whose time has not come
    http_server.route("/down.xml", rss([SEED]), content_type="application/rss+xml")
    before = len(http_server.requests)
    summary = run_once(settings, clock=Clock(clock.now - timedelta(days=1)), due_only=True)
    assert summary.outcomes == [] and len(http_server.requests) == before
    later = run_once(settings, clock=Clock(clock.now + timedelta(days=30)), due_only=True)
    assert {o.source for o in later.outcomes} == {"Down", "Busy"}
    assert rows(
        settings.database, "SELECT consecutive_failures FROM sources WHERE name='Down'"
    ) == [(0,)]


def test_no_source_fetched_needs_attention(tmp_path: Path, http_server: LoopbackServer) -> None:
    settings = settings_for(tmp_path, [{"name": "Gone", "url": http_server.url("/gone")}])
    assert run_once(settings, clock=Clock()).needs_attention


def test_html_source_by_selectors(tmp_path: Path, http_server: LoopbackServer) -> None:
    page = b"""<html><body>
      <article class="card"><h3>Japan and EU sign pact</h3><a href="/news/1">read</a>
        <time datetime="2024-11-01T14:30:00+09:00">1 Nov</time><p>Tokyo &amp; Brussels</p></article>
      <article class="card"><h3>North Korea fires missile</h3>
        <a href="news/2?utm_medium=x">read</a></article>
      <article class="card"><a href="javascript:alert(1)">bad</a></article>
    </body></html>"""
    url = http_server.route("/press/", page, content_type="text/html; charset=utf-8")
    settings = settings_for(
        tmp_path,
        [
            {
                "name": "Press",
                "url": url,
                "kind": "html",
                "item": "article.card",
                "title": "h3",
                "link": "a[href]",
                "date": "time[datetime]",
                "summary": "p",
            }
        ],
    )
    summary = run_once(settings, clock=Clock())
    assert summary.items_new == 2
    got = rows(settings.database, "SELECT title, url, published_at, summary FROM items ORDER BY id")
    assert got[0] == (
        "Japan and EU sign pact",
        http_server.url("/news/1"),
        "2024-11-01T05:30:00Z",
        "Tokyo & Brussels",
    )
    assert got[1][1].startswith(http_server.url("/press/news/2"))


def test_feed_autodiscovery(tmp_path: Path, http_server: LoopbackServer) -> None:
    feed = http_server.route("/feeds/all.xml", rss([SEED]), content_type="application/rss+xml")
    page = (
        b'<html><head><link rel="alternate" type="application/rss+xml" href="/feeds/all.xml">'
        b"</head><body>hello</body></html>"
    )
    home = http_server.route("/", page, content_type="text/html")
    settings = settings_for(tmp_path, [{"name": "Site", "url": home}])
    summary = run_once(settings, clock=Clock())
    assert summary.items_new == 1
    assert rows(settings.database, "SELECT feed_url FROM sources") == [(feed,)]
    run_once(settings, clock=Clock(NOW + timedelta(hours=1)))
    assert http_server.requests[-1].path == "/feeds/all.xml"


def test_dry_run_writes_nothing(tmp_path: Path, http_server: LoopbackServer) -> None:
    url = http_server.route("/feed.xml", rss([SEED, OTHER]), content_type="application/rss+xml")
    config = write_config(tmp_path, [{"name": "Wire", "url": url}])
    result = CliRunner().invoke(main, ["--config", str(config), "run", "--once", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "2 new item(s) would be archived" in result.output
    assert SEED["title"] in result.output
    assert not (tmp_path / "state" / "news.db").exists()


def test_cli_run_once_summary_and_exit_codes(tmp_path: Path, http_server: LoopbackServer) -> None:
    url = http_server.route("/feed.xml", rss([SEED]), content_type="application/rss+xml")
    config = write_config(
        tmp_path, [{"name": "Wire", "url": url}, {"name": "Down", "url": http_server.url("/x")}]
    )
    result = CliRunner().invoke(main, ["--config", str(config), "run", "--once"])
    assert result.exit_code == 0, result.output
    assert "1 source(s) ok, 1 failed" in result.output
    assert "Down: 404" in result.output
    only = CliRunner().invoke(main, ["--config", str(config), "run", "--once", "--source", "Down"])
    assert only.exit_code == 1
    unknown = CliRunner().invoke(
        main, ["--config", str(config), "run", "--once", "--source", "Nope"]
    )
    assert unknown.exit_code == 2 and 'no source named "Nope"' in unknown.output


def test_config_error_is_one_line_with_exit_2(tmp_path: Path) -> None:
    config = write_config(
        tmp_path, [{"name": "A", "url": "https://example.com/", "intervall": "5m"}]
    )
    result = CliRunner().invoke(main, ["--config", str(config), "run", "--once"])
    assert result.exit_code == 2
    assert "scraper.toml:" in result.output and "intervall" in result.output
    assert "Traceback" not in result.output


@pytest.mark.timeout(120)
def test_the_whole_corpus_in_one_pass(tmp_path: Path, corpus_server: LoopbackServer) -> None:
    """Every corpus feed through the real pipeline: nothing crashes or hangs, well-formed feeds
    archive items, malformed ones are recorded failures or recoveries, and a second pass adds
    nothing."""
    corpus = Path(__file__).resolve().parents[1].parent / "shared" / "corpus" / "feeds"
    files = sorted(p for p in corpus.rglob("*") if p.is_file())
    sources = [
        {
            "name": f"{p.parent.name}/{p.name}",
            "url": corpus_server.url(f"/corpus/feeds/{p.parent.name}/{p.name}"),
        }
        for p in files
    ]
    settings = settings_for(tmp_path, sources, top={"concurrency": 8, "per_host": 8})
    first = run_once(settings, clock=Clock())
    assert len(first.outcomes) == len(files)
    well_formed = [o for o in first.outcomes if not o.source.startswith("malformed/")]
    failed = [(o.source, o.status, o.error) for o in well_formed if not o.ok]
    assert failed == []
    assert sum(1 for o in well_formed if o.items_new > 0) >= len(well_formed) - 5
    assert first.items_new > 3000
    second = run_once(settings, clock=Clock(NOW + timedelta(hours=1)))
    assert second.items_new == 0
    recorded = rows(settings.database, "SELECT count(*) FROM fetches")[0][0]
    assert recorded >= 2 * len(files)


def test_a_secret_in_a_source_url_never_reaches_the_database(
    tmp_path: Path, http_server: LoopbackServer
) -> None:
    http_server.route("/feed.xml", rss([SEED]), content_type="application/rss+xml")
    written = http_server.url("/feed.xml") + "?key=${FEED_KEY}"
    config = write_config(tmp_path, [{"name": "Paid", "url": written}])
    settings = load_settings(config, {"FEED_KEY": "s3cret-feed-key"})
    assert run_once(settings, clock=Clock()).items_new == 1
    assert http_server.requests[-1].path.endswith("key=s3cret-feed-key")  # used to fetch
    db = settings.database
    assert rows(db, "SELECT url FROM sources") == [(written,)]
    assert rows(db, "SELECT DISTINCT url FROM fetches") == [(written,)]
    for path in (db, db.with_name(db.name + "-wal")):
        if path.exists():
            assert b"s3cret-feed-key" not in path.read_bytes()
