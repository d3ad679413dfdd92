"""Back-testing a rule or an inline query against an archive (read-only)."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from scraper.errors import RuleError
from scraper.rules import RuleSet, backtest, load_rules

SCHEMA = """
CREATE TABLE sources (id INTEGER PRIMARY KEY, name TEXT, url TEXT, kind TEXT, tags TEXT);
CREATE TABLE items (
    id INTEGER PRIMARY KEY, source_id INTEGER REFERENCES sources(id), key TEXT, guid TEXT,
    url TEXT, title TEXT, summary TEXT, content TEXT, author TEXT, published_at TEXT,
    fetched_at TEXT, story_id INTEGER
);
"""
ITEMS = [
    # (source_id, title, summary, published_at, fetched_at)
    (
        1,
        "Japan and EU sign security and defense partnership",
        "Tokyo (AFP)",
        "2024-11-01T05:30:00Z",
        "2024-11-01T05:35:00Z",
    ),
    (1, "Japanese baseball league opens", "", "2024-11-02T00:00:00Z", "2024-11-02T00:01:00Z"),
    (2, "North Korea fires missile", None, None, "2024-11-03T00:00:00Z"),
    (
        2,
        "Japan PM visits Brussels",
        "<p>EU talks</p>",
        "2024-10-01T00:00:00Z",
        "2024-10-01T00:00:00Z",
    ),
    (1, "Tokyo stocks rise", "Japan's Nikkei", "2024-11-04T00:00:00Z", "2024-11-04T00:00:00Z"),
]


@pytest.fixture
def conn(tmp_path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(tmp_path / "news.db")
    db.executescript(SCHEMA)
    db.execute("INSERT INTO sources VALUES (1, 'AFP', 'https://afp', 'feed', '[\"wire\"]')")
    db.execute("INSERT INTO sources VALUES (2, 'Yonhap', 'https://yna', 'feed', 'not json')")
    for i, (sid, title, summary, pub, fetched) in enumerate(ITEMS, start=1):
        db.execute(
            "INSERT INTO items (id, source_id, key, title, summary, published_at, fetched_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (i, sid, f"k{i}", title, summary, pub, fetched),
        )
    db.commit()
    return db


@pytest.fixture
def rules(tmp_path: Path) -> RuleSet:
    folder = tmp_path / "rules"
    folder.mkdir()
    (folder / "_aliases.yaml").write_text("nk: [North Korea, DPRK]\n")
    (folder / "japan.yaml").write_text("query: Japan\n")
    (folder / "wire-japan.yaml").write_text("query: Japan\nsources: [wire]\n")
    (folder / "broken.yaml").write_text("query: Japan AND\n")
    return load_rules(folder)


def test_rule_id_wins_and_items_come_newest_first(conn: sqlite3.Connection, rules: RuleSet) -> None:
    before = conn.total_changes
    result = backtest(conn, "japan", rules=rules)
    assert (result.rule_id, result.query, result.total) == ("japan", "Japan", 3)
    assert [i.item_id for i in result.items] == [5, 1, 4]
    first = result.items[0]
    assert first.source == "AFP" and first.title == "Tokyo stocks rise"
    assert first.published_at == "2024-11-04T00:00:00Z"
    assert first.fields == ("summary",) and first.terms == ("Japan",)
    assert conn.total_changes == before


def test_rule_sources_are_honoured(conn: sqlite3.Connection, rules: RuleSet) -> None:
    result = backtest(conn, "wire-japan", rules=rules)
    assert [i.item_id for i in result.items] == [5, 1]


def test_inline_query_limit_and_since(conn: sqlite3.Connection, rules: RuleSet) -> None:
    result = backtest(conn, "japan", rules=rules, force_query=True, limit=1)
    assert result.rule_id is None and result.total == 3 and len(result.items) == 1
    since = datetime(2024, 11, 1, tzinfo=UTC)
    result = backtest(conn, "Japan OR @nk", rules=rules, since=since)
    assert result.total == 3
    assert [i.item_id for i in result.items] == [5, 3, 1]
    missing = result.items[1]
    assert missing.published_at == "2024-11-03T00:00:00Z"  # the fetch time
    assert missing.terms == ("North Korea",)
    result = backtest(conn, 'summary:EU OR title:"EU sign"', rules=rules, limit=0)
    assert result.total == 2 and result.items == []


def test_bad_query_and_broken_rule_raise(conn: sqlite3.Connection, rules: RuleSet) -> None:
    with pytest.raises(RuleError) as info:
        backtest(conn, "Japan AND (", rules=rules)
    assert info.value.col == 12
    with pytest.raises(RuleError) as info:
        backtest(conn, "@unknown", rules=rules)
    assert "unknown alias" in info.value.message
    with pytest.raises(RuleError) as info:
        backtest(conn, "broken", rules=rules)
    assert info.value.file is not None and info.value.file.endswith("broken.yaml")
    assert info.value.line == 1
    assert backtest(conn, "broken", rules=rules, force_query=True).total == 0
