"""The CJK-aware search index (scraper/search.py): what it finds, how it follows edits, how
queries are rewritten and hits highlighted, and the Datasette plugin's pieces."""

from __future__ import annotations

import importlib.util
import sqlite3
from collections.abc import Iterator
from types import ModuleType

import pytest
from datasette.utils import escape_fts
from hypothesis import given
from hypothesis import strategies as st

from scraper import search
from scraper.serve import PLUGINS
from scraper.store import Store

TEXTS = {
    1: ("Japan and EU sign defence pact", "Tokyo and Brussels agree.", ""),
    2: ("Japan–EU talks", "The EU's envoy met Japan's minister.", ""),
    3: ("EUR falls against the yen", "Currency markets.", ""),
    4: ("北朝鮮が弾道ミサイルを発射", "防衛省によると、北朝鮮は日本海に向けて発射した。", ""),
    5: ("북한이 탄도미사일을 발사했다", "합동참모본부는 북한이 동해상으로 쐈다고 밝혔다.", ""),
    6: ("欧盟与日本签署防务协议", "双方在布鲁塞尔签署了协议。", ""),
    7: ("North-Korea launches missile", "Pyongyang fired again.", "On defensive moves."),
    8: ("ＥＵ首脳会議が開幕", "全角の ＥＵ も EU として見つかる。", ""),
    9: ("กองทัพไทยเตรียมพร้อม", "ข่าวล่าสุด", ""),
}


def add_items(store: Store, texts: dict[int, tuple[str, str, str]]) -> None:
    with store.transaction():
        store.conn.execute("INSERT OR IGNORE INTO sources (id, name, url) VALUES (1, 'S', 'u')")
        for item_id, (title, summary, content) in texts.items():
            store.conn.execute(
                "INSERT INTO items (id, source_id, key, title, summary, content) VALUES"
                " (?, 1, ?, ?, ?, ?)",
                (item_id, f"k{item_id}", title, summary, content),
            )


@pytest.fixture
def store() -> Iterator[Store]:
    store = Store.memory()
    search.register_functions(store.conn)
    add_items(store, TEXTS)
    store.index_fts()
    yield store
    store.close()


def found(store: Store, query: str) -> list[int]:
    return [
        row[0]
        for row in store.conn.execute(
            "SELECT rowid FROM items_search WHERE items_search MATCH search_query(?)"
            " ORDER BY rowid",
            (query,),
        )
    ]


def escaped(store: Store, query: str) -> list[int]:
    """As Datasette's search box runs it (with the plugin's escape_fts)."""
    return [
        row[0]
        for row in store.conn.execute(
            "SELECT rowid FROM items_search WHERE items_search MATCH search_escape(?)"
            " ORDER BY rowid",
            (query,),
        )
    ]


@pytest.mark.parametrize(
    ("query", "ids"),
    [
        ("EU", [1, 2, 8]),  # a word: "EU's", "Japan–EU", full-width ＥＵ; not "EUR"
        ("北朝鮮", [4]),  # inside a Japanese sentence
        ("북한", [5]),  # inside 북한이
        ("日本", [4, 6]),  # two characters: 日本海, 与日本签署
        ("欧盟", [6]),
        ("ミサイル", [4]),
        ("ไทย", [9]),
        ("ＥＵ", [1, 2, 8]),  # a full-width query too
        ('"North Korea"', [7]),
        ("defen*", [1, 7]),
        ("title:pact", [1]),
        ("title:北朝鮮", [4]),
        ("北朝鮮 OR 북한", [4, 5]),
        ("Japan NOT EU", []),
        ("NEAR(北朝鮮 発射, 8)", [4]),
        ("(unbalanced", []),  # not FTS5 syntax: searched as words, no error
        ('"open quote', []),
        ("", []),
    ],
)
def test_search_finds_words_in_any_script(store: Store, query: str, ids: list[int]) -> None:
    assert found(store, query) == ids


@pytest.mark.parametrize(
    ("query", "ids"),
    [("EU", [1, 2, 8]), ("北朝鮮", [4]), ("북한", [5]), ("北朝鮮 日本海", [4]), ("EU 北朝鮮", [])],
)
def test_search_box_escaping_finds_them_too(store: Store, query: str, ids: list[int]) -> None:
    assert escaped(store, query) == ids


def test_what_the_default_and_trigram_tokenizers_miss(store: Store) -> None:
    """Why items_search exists: unicode61 alone misses CJK words inside running text, and
    trigram misses every term shorter than three characters."""
    fts = "SELECT rowid FROM items_fts WHERE items_fts MATCH ? ORDER BY rowid"
    assert store.conn.execute(fts, ('"北朝鮮"',)).fetchall() == []
    assert store.conn.execute(fts, ('"북한"',)).fetchall() == []
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE VIRTUAL TABLE t USING fts5(title, summary, tokenize='trigram')")
    conn.executemany("INSERT INTO t (rowid, title, summary) VALUES (?, ?, ?)", [
        (i, t, s) for i, (t, s, _) in TEXTS.items()
    ])  # fmt: skip
    trigram = "SELECT rowid FROM t WHERE t MATCH ? ORDER BY rowid"
    assert conn.execute(trigram, ('"北朝鮮"',)).fetchall() == [(4,)]
    assert conn.execute(trigram, ('"북한"',)).fetchall() == []  # two characters
    assert conn.execute(trigram, ('"EU"',)).fetchall() == []


def test_edits_and_deletes_follow(store: Store) -> None:
    with store.transaction():
        store.conn.execute("UPDATE items SET title = 'Japan and Canada sign pact' WHERE id = 1")
        store.conn.execute("UPDATE items SET title = '北朝鮮、再び発射' WHERE id = 1")  # twice
        store.conn.execute("DELETE FROM items WHERE id = 5")
        store.conn.execute("UPDATE items SET summary = summary WHERE id = 2")  # no change
    assert store.conn.execute("SELECT count(*) FROM search_queue").fetchone()[0] == 3
    store.index_fts()
    assert found(store, "title:EU") == [2, 8]
    assert found(store, "北朝鮮") == [1, 4]
    assert found(store, "Canada") == []
    assert found(store, "북한") == []
    assert store.conn.execute("SELECT count(*) FROM search_queue").fetchone()[0] == 0
    store.conn.execute("INSERT INTO items_search (items_search) VALUES ('integrity-check')")
    # new rows after the watermark are indexed by the next call, not queued
    add_items(store, {10: ("北朝鮮の新型", "", "")})
    with store.transaction():
        store.conn.execute("UPDATE items SET title = '북한 신형' WHERE id = 10")
    assert store.conn.execute("SELECT count(*) FROM search_queue").fetchone()[0] == 0
    store.index_fts()
    assert found(store, "북한") == [10]
    assert found(store, "新型") == []


def test_a_new_version_rebuilds_the_index(store: Store) -> None:
    store.conn.execute("UPDATE search_state SET version = 'old'")
    store.migrate()
    assert found(store, "EU") == []  # dropped, not yet re-indexed
    store.index_fts()
    assert found(store, "EU") == [1, 2, 8]
    assert found(store, "北朝鮮") == [4]


def test_index_text() -> None:
    assert search.index_text("EU pact") == "EU pact"
    assert search.index_text("北朝鮮が").split() == ["北", "朝", "鮮", "が"]
    assert search.index_text("ＥＵと日本").split() == ["EU", "と", "日", "本"]
    assert search.index_text("북한이").split() == ["북", "한", "이"]
    assert search.index_text("ที่ไทย").split() == ["ที่", "ไ", "ท", "ย"]  # marks stay on
    assert search.index_text(None) == ""


@given(st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126)))
def test_escape_query_is_datasettes_for_text_without_cjk(query: str) -> None:
    assert search.escape_query(query) == escape_fts(query)


def test_escape_query_with_cjk() -> None:
    assert search.escape_query("EU 北朝鮮") == '"EU" AND ("北 朝 鮮" OR "北朝鮮")'
    assert search.escape_query("日") == '"日"'


def test_rewrite_query_keeps_syntax() -> None:
    assert search.rewrite_query("北朝鮮 OR 북한") == '"北 朝 鮮" OR "북 한"'
    assert search.rewrite_query("title:北朝鮮*") == 'title:"北 朝 鮮"*'
    assert search.rewrite_query('"北朝鮮 missile" NOT defen*') == '"北 朝 鮮 missile" NOT defen*'
    assert search.fts_query("(broken") == '"(broken"'
    assert search.fts_query("  ") == '""'


def test_query_terms() -> None:
    terms = search.query_terms('title:Japan defen* "North Korea" OR 北朝鮮 NOT {title}: x')
    assert terms.phrases == ("Japan", "North Korea", "北朝鮮", "x")
    assert terms.prefixes == ("defen",)


def test_highlight_and_snippet() -> None:
    text = "Japan’s defence pact with the EU; 北朝鮮がミサイル、북한이"
    assert search.highlight(text, "japan defen* EU 北朝鮮 북한") == (
        "**Japan**’s **defence** pact with the **EU**; **北朝鮮**がミサイル、**북한**이"
    )
    assert search.highlight(None, "x") is None
    long = "word " * 100 + "the pact was signed " + "more " * 100
    piece = search.snippet("pact", "no hit in the summary", long)
    assert piece.startswith("…") and piece.endswith("…") and "**pact**" in piece
    assert len(piece) < 230
    assert search.snippet("absent", "", "First text.") == "First text."
    assert search.snippet("x", None, "") == ""


def load_plugin() -> ModuleType:
    path = PLUGINS / "scraper_datasette.py"
    spec = importlib.util.spec_from_file_location("scraper_datasette_test", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_plugin_renders_marks_escaped_and_makes_connections_read_only() -> None:
    plugin = load_plugin()
    html = plugin.render_cell("<b>x</b> **EU** & **北朝鮮**", "snippet")
    assert str(html) == "&lt;b&gt;x&lt;/b&gt; <mark>EU</mark> &amp; <mark>北朝鮮</mark>"
    assert plugin.render_cell("**EU**", "title") is None  # only snippet/highlight columns
    assert plugin.render_cell(3, "snippet") is None
    conn = sqlite3.connect(":memory:")
    plugin.prepare_connection(conn, "news")
    assert conn.execute("SELECT search_query('北朝鮮')").fetchone() == ('"北 朝 鮮"',)
    assert conn.execute("SELECT escape_fts('北朝鮮')").fetchone() == ('("北 朝 鮮" OR "北朝鮮")',)
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        conn.execute("CREATE TABLE t (x)")


def test_plugin_rewrites_raw_searches_of_items_only() -> None:
    plugin = load_plugin()
    scope = {"type": "http", "path": "/news/items.json", "query_string": b""}
    raw = "_search=%E5%8C%97%E6%9C%9D%E9%AE%AE&_searchmode=raw"
    out = plugin._rewrite_raw_search(dict(scope, query_string=raw.encode()))
    assert out["query_string"] == b"_search=%22%E5%8C%97+%E6%9C%9D+%E9%AE%AE%22&_searchmode=raw"
    other = dict(scope, path="/news/stories", query_string=raw.encode())
    assert plugin._rewrite_raw_search(other) is other


def test_a_large_backlog_is_indexed_in_batches() -> None:
    store = Store.memory()
    search.register_functions(store.conn)
    add_items(store, TEXTS)
    calls = []
    while True:
        with store.transaction():
            done = search.index_pending(store.conn, limit=4)
        calls.append(done)
        if not done:
            break
    assert calls == [4, 4, 1, 0]
    assert found(store, "EU") == [1, 2, 8] and found(store, "ไทย") == [9]
    store.close()
