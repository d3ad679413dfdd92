"""The archive: schema applied idempotently, upserts, FTS kept in sync, WAL."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from scraper.models import Item, Match, Source
from scraper.store import SCHEMA_VERSION, TABLES, Store

NOW = datetime(2024, 11, 1, 5, 30, tzinfo=UTC)

SPEC_COLUMNS = {
    "sources": "id name url kind tags etag last_modified last_fetch_at last_success_at "
    "consecutive_failures next_fetch_at last_error",
    "items": "id source_id key guid url title summary content author published_at fetched_at "
    "story_id",
    "stories": "id title first_seen_at",
    "matches": "id item_id rule fields terms matched_at",
    "alerts": "id story_id rules target status attempts next_attempt_at last_error created_at "
    "sent_at",
    "fetches": "id source_id started_at duration_ms status bytes items_new error",
}


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store.open(tmp_path / "state" / "news.db")
    s.sync_sources([Source(name="Japan Today", url="https://japantoday.com/feed")], NOW)
    return s


def item(key: str, title: str = "Japan and EU sign defense pact", **kw: object) -> Item:
    return Item(key=key, guid=key, url=f"https://example.com/{key}", title=title, **kw)  # type: ignore[arg-type]


def test_schema_has_every_spec_column_and_wal(store: Store) -> None:
    for table, columns in SPEC_COLUMNS.items():
        have = set(store.db.table(table).columns_dict)
        assert set(columns.split()) <= have, table
    assert store.db.table("items_fts").exists()
    assert store.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store.conn.execute("PRAGMA busy_timeout").fetchone()[0] >= 5000
    assert store.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_migrate_is_idempotent_and_adds_missing_columns(tmp_path: Path) -> None:
    path = tmp_path / "news.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE sources (id INTEGER PRIMARY KEY, name TEXT, url TEXT)")
    conn.execute("INSERT INTO sources (name, url) VALUES ('old', 'http://x/')")
    conn.commit()
    conn.close()
    for _ in range(3):
        s = Store.open(path)
        s.close()
    s = Store.open(path)
    assert set(TABLES["sources"]) <= set(s.db.table("sources").columns_dict)
    assert s.conn.execute("SELECT name, consecutive_failures FROM sources").fetchall() == [
        ("old", 0)
    ]


def test_refetch_never_duplicates_and_edit_updates_in_place(store: Store) -> None:
    sid = store.source_state("Japan Today").id  # type: ignore[union-attr]
    with store.transaction():
        first = store.upsert_items(sid, [item("a"), item("b", "Other")], now=NOW)
    assert store.index_fts() == 2 and store.index_fts() == 0
    assert [s.is_new for s in first] == [True, True]
    with store.transaction():
        again = store.upsert_items(sid, [item("a"), item("b", "Other")], now=NOW)
    assert again == []
    with store.transaction():
        edited = store.upsert_items(sid, [item("a", "Japan and EU sign security pact")], now=NOW)
    assert len(edited) == 1 and not edited[0].is_new and edited[0].title_changed
    assert edited[0].id == first[0].id
    assert store.count("items") == 2
    rows = store.db.execute(
        "SELECT rowid FROM items_fts WHERE items_fts MATCH 'security'"
    ).fetchall()
    assert rows == [(first[0].id,)]
    assert not store.db.execute(
        "SELECT * FROM items_fts WHERE items_fts MATCH 'defense'"
    ).fetchall()


def test_every_item_has_a_story_and_canonical_url_joins(store: Store) -> None:
    store.sync_sources(
        [
            Source(name="Japan Today", url="https://japantoday.com/feed"),
            Source(name="Kyodo", url="https://english.kyodonews.net/rss/all.xml"),
        ],
        NOW,
    )
    states = store.source_states()
    same_url = "https://example.com/story"
    with store.transaction():
        a = store.upsert_items(
            states["Japan Today"].id,
            [Item(key="a", guid="a", url=same_url, title="Japan and EU sign pact")],
            now=NOW,
        )
        b = store.upsert_items(
            states["Kyodo"].id,
            [Item(key="b", guid="b", url=same_url, title="Japan, EU sign pact")],
            now=NOW + timedelta(hours=1),
        )
        c = store.upsert_items(
            states["Kyodo"].id, [item("other", "Something else")], now=NOW + timedelta(hours=1)
        )
        late = store.upsert_items(
            states["Kyodo"].id,
            [Item(key="late", guid="late", url=same_url, title="Japan, EU sign pact")],
            now=NOW + timedelta(days=5),
        )
    assert a[0].story_id == b[0].story_id
    assert c[0].story_id != a[0].story_id
    assert late[0].story_id != a[0].story_id  # outside the story window
    missing = store.conn.execute("SELECT count(*) FROM items WHERE story_id IS NULL")
    assert missing.fetchone()[0] == 0


def test_matches_refresh(store: Store) -> None:
    sid = store.source_state("Japan Today").id  # type: ignore[union-attr]
    with store.transaction():
        stored = store.upsert_items(sid, [item("a")], now=NOW)
        store.record_matches(
            stored[0].id,
            [Match("japan", ("title",), ("Japan",)), Match("eu", ("title",), ("EU",))],
            NOW,
        )
        store.record_matches(stored[0].id, [Match("japan", ("title",), ("Japan",))], NOW)
    rows = store.conn.execute("SELECT rule, fields, terms FROM matches").fetchall()
    assert rows == [("japan", '["title"]', '["Japan"]')]


def test_transaction_rolls_back(store: Store) -> None:
    sid = store.source_state("Japan Today").id  # type: ignore[union-attr]
    with pytest.raises(RuntimeError), store.transaction():
        store.upsert_items(sid, [item("a")], now=NOW)
        raise RuntimeError("boom")
    assert store.count("items") == 0


def test_removed_source_is_disabled_not_deleted(store: Store) -> None:
    store.sync_sources([], NOW)
    assert store.conn.execute("SELECT name, enabled FROM sources").fetchall() == [
        ("Japan Today", 0)
    ]


def test_changed_url_resets_conditional_state(store: Store) -> None:
    sid = store.source_state("Japan Today").id  # type: ignore[union-attr]
    store.update_source(sid, etag='"v1"', body_hash="abc")
    store.sync_sources([Source(name="Japan Today", url="https://japantoday.com/rss")], NOW)
    state = store.source_state("Japan Today")
    assert state is not None and state.etag is None and state.body_hash is None
    assert state.url == "https://japantoday.com/rss"
