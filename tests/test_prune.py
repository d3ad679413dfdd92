"""Retention (`scraper prune`): old bodies go, identities stay, pruned items never come back
as new, and the full-text indexes follow. Archives are built by the real pipeline."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

from click.testing import CliRunner
from helpers import rows, rss, write_config
from servers import LoopbackServer

from scraper import prune as retention
from scraper import search
from scraper.app import run_once
from scraper.cli import main
from scraper.settings import Settings, load_settings
from scraper.store import Store

NOW = datetime(2024, 11, 1, 5, 30, tzinfo=UTC)
LATER = NOW + timedelta(days=200)
OLD = [
    {
        "title": "Japan and EU sign defence pact",
        "link": "https://example.com/pact",
        "guid": "pact",
        "description": "Brussels ceremony with zebrafish anecdotes.",
    },
    {
        "title": "北朝鮮が弾道ミサイルを発射",
        "link": "https://example.jp/nk",
        "guid": "nk",
        "description": "防衛省によると、北朝鮮は日本海に向けて発射した。",
    },
]
NEW = {
    "title": "Fresh story",
    "link": "https://example.com/fresh",
    "guid": "fresh",
    "description": "Quokka sightings.",
}


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def archive(tmp_path: Path, server: LoopbackServer, **config: object) -> Settings:
    url = server.route("/feed.xml", rss(OLD, now=NOW), content_type="application/rss+xml")
    path = write_config(tmp_path, [{"name": "Wire", "url": url}], **config)  # type: ignore[arg-type]
    settings = load_settings(path, os.environ)
    run_once(settings, clock=Clock(NOW))
    return settings


def search_ids(store: Store, query: str) -> list[int]:
    search.register_functions(store.conn)
    return [
        r[0]
        for r in store.conn.execute(
            "SELECT rowid FROM items_search WHERE items_search MATCH search_query(?)", (query,)
        )
    ]


def test_prune_drops_bodies_keeps_identity_and_indexes_follow(
    tmp_path: Path, http_server: LoopbackServer
) -> None:
    settings = archive(tmp_path, http_server)
    with Store.open(settings.database) as store:
        assert search_ids(store, "zebrafish") == [1]
        assert retention.prune(store, 180 * 86400, LATER, dry_run=True).pruned == 2
        assert rows(settings.database, "SELECT count(*) FROM items WHERE pruned_at IS NULL") == [
            (2,)
        ]
        result = retention.prune(store, 180 * 86400, LATER, batch=1)  # one item per transaction
        assert result.pruned == 2 and result.cutoff == LATER - timedelta(days=180)
        assert retention.prune(store, 180 * 86400, LATER).pruned == 0  # nothing left to do
        # the bodies' words are gone from both indexes; titles are still found
        assert search_ids(store, "zebrafish") == []
        assert search_ids(store, "日本海") == []
        assert search_ids(store, "北朝鮮") == [2]
        fts = "SELECT rowid FROM items_fts WHERE items_fts MATCH ?"
        assert store.conn.execute(fts, ("zebrafish",)).fetchall() == []
        assert store.conn.execute(fts, ("pact",)).fetchall() == [(1,)]
        for table in ("items_fts", "items_search"):
            store.conn.execute(f"INSERT INTO {table} ({table}) VALUES ('integrity-check')")
        retention.optimize(store)
        retention.vacuum(store)
    kept = rows(
        settings.database,
        "SELECT key, guid, url, title, summary, content, pruned_at, story_id FROM items"
        " ORDER BY id",
    )
    assert kept[0][:6] == ("pact", "pact", "https://example.com/pact", OLD[0]["title"], "", "")
    assert kept[0][6] == "2025-05-20T05:30:00Z" and kept[0][7] is not None


def test_pruned_items_never_return_as_new_and_edits_are_ignored(
    tmp_path: Path, http_server: LoopbackServer
) -> None:
    settings = archive(tmp_path, http_server)
    with Store.open(settings.database) as store:
        retention.prune(store, 180 * 86400, LATER)
    edited = dict(OLD[0], title="Japan and EU sign landmark pact", description="Edited body.")
    http_server.route(
        "/feed.xml", rss([edited, OLD[1], NEW], now=LATER), content_type="application/rss+xml"
    )
    summary = run_once(settings, clock=Clock(LATER))
    assert (summary.items_new, summary.items_updated) == (1, 0)
    got = rows(settings.database, "SELECT guid, title, summary, pruned_at IS NULL FROM items")
    assert got == [
        ("pact", OLD[0]["title"], "", 0),
        ("nk", OLD[1]["title"], "", 0),
        ("fresh", "Fresh story", "Quokka sightings.", 1),
    ]


def test_items_with_undelivered_alerts_keep_their_bodies(
    tmp_path: Path, http_server: LoopbackServer
) -> None:
    settings = archive(tmp_path, http_server)
    with Store.open(settings.database) as store:
        store.conn.execute(
            "INSERT INTO alerts (story_id, item_id, target, status, dedupe_key, created_at)"
            " VALUES (1, 1, 'me', 'failed', 'k', ?)",
            ("2024-11-01T05:30:00Z",),
        )
        assert retention.prune(store, 180 * 86400, LATER).pruned == 1
    assert rows(settings.database, "SELECT id FROM items WHERE pruned_at IS NULL") == [(1,)]


def test_cli_prune_with_age_with_retention_and_without(
    tmp_path: Path, http_server: LoopbackServer
) -> None:
    # The CLI uses the real clock: items archived in 2024 are older than 180 days.
    settings = archive(tmp_path, http_server)
    config = ["--config", str(settings.path)]
    runner = CliRunner()

    missing = runner.invoke(main, [*config, "prune"])
    assert missing.exit_code == 2 and "retention" in missing.output
    typo = runner.invoke(main, [*config, "prune", "--older-than", "180"])
    assert typo.exit_code == 2 and "at least 1d" in typo.output
    bad = runner.invoke(main, [*config, "prune", "--older-than", "soon"])
    assert bad.exit_code == 2 and "--older-than" in bad.output

    dry = runner.invoke(main, [*config, "prune", "--older-than", "180d", "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "2 item(s)" in dry.output and "would be pruned" in dry.output
    assert rows(settings.database, "SELECT count(*) FROM items WHERE pruned_at IS NULL") == [(2,)]

    done = runner.invoke(main, [*config, "prune", "--older-than", "180d", "--optimize"])
    assert done.exit_code == 0, done.output
    assert "2 item(s)" in done.output and "pruned" in done.output
    assert rows(settings.database, "SELECT count(*) FROM items WHERE pruned_at IS NULL") == [(0,)]


def test_cli_prune_uses_the_retention_setting(tmp_path: Path, http_server: LoopbackServer) -> None:
    settings = archive(tmp_path, http_server, top={"retention": "180d"})
    assert settings.retention == 180 * 86400
    result = CliRunner().invoke(main, ["--config", str(settings.path), "prune", "--vacuum"])
    assert result.exit_code == 0, result.output
    assert rows(settings.database, "SELECT count(*) FROM items WHERE pruned_at IS NULL") == [(0,)]
