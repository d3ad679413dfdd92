"""Full-text search that finds words inside Chinese, Japanese, Korean and Thai running text.

SQLite's unicode61 tokenizer makes one token of a run of letters, and these scripts put no
spaces between words: in 北朝鮮が弾道ミサイルを発射 the whole clause is one token, so
北朝鮮 is never found in it, nor 북한 in 북한이 (북한 and a particle). The trigram tokenizer
finds substrings but nothing shorter than three characters (EU, 日本, 북한).

``items_search`` is a second FTS5 index over items (``items_fts`` stays as it is). Its text is
the item's text in NFKC with every character of those scripts made a token of its own (a
character's combining marks stay with it). A phrase of such characters, ``"北 朝 鮮"``,
then matches the substring 北朝鮮 wherever it occurs, ``"북 한"`` matches inside 북한이, and
other words stay words: "EU" is found in "EU", "EU's" and "Japan–EU", not in "EUR".
Queries are rewritten the same way (:func:`escape_query` for a search box, :func:`fts_query`
for FTS5 syntax), and :func:`highlight` / :func:`snippet` mark the hits in the original text.

The table is contentless (``content=''``): the text is not stored a second time. Like
``items_fts`` it follows ``items`` by a watermark (new rows are indexed in batches by
:func:`index_pending`); edits and deletes of indexed rows are queued by triggers with the old
text, which a contentless table needs to remove a row's tokens. The index is rebuilt when
:data:`VERSION` (the text transform, or the Unicode database's version) changes.
"""

from __future__ import annotations

import re
import sqlite3
import threading
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from scraper.rules.text import (
    _NO_SPACE_SCRIPTS,  # the scripts the rule language matches as substrings
    fold,
    highlight_spans,
    word_spans,
    words,
)

TABLE = "items_search"
COLUMNS = ("title", "summary", "content")
VERSION = f"1/unicode-{unicodedata.unidata_version}"
TOKENIZE = "unicode61 remove_diacritics 2 categories 'L* N* Co M*'"
OPERATORS = frozenset({"AND", "OR", "NOT", "NEAR"})
BATCH = 50_000  # new rows indexed per call at most (about 4 s)
MARK = "**"  # around a hit in highlight() and snippet(); the Datasette plugin renders <mark>


def _cluster_pattern() -> re.Pattern[str]:
    """One character of a no-space script (not a mark) and the combining marks after it."""
    marks = "".join(
        re.escape(chr(cp))
        for cp in range(0x300, 0x10000)
        if unicodedata.category(chr(cp)).startswith("M")
    )
    return re.compile(f"(?![{marks}]){_NO_SPACE_SCRIPTS.pattern}[{marks}]*")


_CLUSTER = _cluster_pattern()
_BAREWORD = re.compile(r"[A-Za-z0-9_\x1a\x80-\U0010ffff]+")  # FTS5's bareword characters
_RAW_TOKEN = re.compile(r'"(?:[^"]|"")*"?|[A-Za-z0-9_\x1a\x80-\U0010ffff]+|\s+|.', re.DOTALL)
_ESCAPE_SPLIT = re.compile(r'\s+|(".*?")')  # as datasette.utils.escape_fts splits a query


def index_text(text: str | None) -> str:
    """The text as ``items_search`` indexes it: NFKC, and each character of a script written
    without spaces set apart by spaces (``"北朝鮮が"`` -> ``" 北  朝  鮮  が "``)."""
    if not text:
        return ""
    if text.isascii():
        return text
    text = unicodedata.normalize("NFKC", text)
    if _NO_SPACE_SCRIPTS.search(text) is None:
        return text
    return _CLUSTER.sub(lambda m: f" {m.group()} ", text)


def _phrase(text: str) -> str:
    """An FTS5 phrase (a quoted string) of ``text`` as indexed."""
    spaced = " ".join(index_text(text).split())
    return '"' + spaced.replace('"', '""') + '"'


# -- queries -----------------------------------------------------------------------------------


def escape_query(query: str) -> str:
    """A search-box query made safe for MATCH, as Datasette's ``escape_fts`` does it (every
    word and "quoted phrase" becomes a phrase, all of them required), and CJK-aware: a word in
    a no-space script becomes the phrase of its characters. For words without such characters
    the result is what ``escape_fts`` gives; words with them match ``items_search`` (spaced) or
    an index of whole words (``("北 朝 鮮" OR "北朝鮮")``), so the same function serves both."""
    if query.count('"') % 2:
        query += '"'
    bits = [b for b in _ESCAPE_SPLIT.split(query) if b and b != '""']
    out: list[str] = []
    grouped = False
    for bit in bits:
        inner = bit[1:-1] if bit.startswith('"') else bit
        if _NO_SPACE_SCRIPTS.search(inner) is None:
            normal = unicodedata.normalize("NFKC", inner) if not inner.isascii() else inner
            out.append('"' + normal.replace('"', '""') + '"')
            continue
        spaced, whole = _phrase(inner), '"' + inner.replace('"', '""') + '"'
        if spaced == whole:
            out.append(spaced)
        else:
            out.append(f"({spaced} OR {whole})")
            grouped = True
    return (" AND " if grouped else " ").join(out)


def rewrite_query(query: str) -> str:
    """An FTS5 query (phrases, ``OR``, ``NOT``, ``NEAR(…)``, ``prefix*``, ``title:…``) with
    its words and phrases in no-space scripts rewritten as phrases of their characters, and
    full-width letters made ASCII (NFKC), as :func:`index_text` indexes them. The syntax is not
    checked (see :func:`fts_query`)."""
    out: list[str] = []
    for token in _RAW_TOKEN.findall(query):
        if token.startswith('"'):
            inner = token[1:-1] if len(token) > 1 and token.endswith('"') else token[1:]
            out.append(_phrase(inner.replace('""', '"')))
        elif _BAREWORD.fullmatch(token) and not token.isascii():
            normal = index_text(token)
            out.append(normal if _BAREWORD.fullmatch(normal) else _phrase(token))
        else:
            out.append(token)
    return "".join(out)


_checker = threading.local()


def _syntax_ok(fts: str) -> bool:
    """Whether ``fts`` is a valid query for ``items_search`` (tried on an empty twin)."""
    conn = getattr(_checker, "conn", None)
    if conn is None:
        conn = sqlite3.connect(":memory:", check_same_thread=False)
        conn.execute(
            f"CREATE VIRTUAL TABLE t USING fts5({', '.join(COLUMNS)}, content='',"
            f' tokenize="{TOKENIZE}")'
        )
        _checker.conn = conn
    try:
        conn.execute("SELECT rowid FROM t WHERE t MATCH ?", (fts,)).fetchall()
    except sqlite3.Error:
        return False
    return True


def fts_query(query: str | None) -> str:
    """What to give ``items_search MATCH`` for a query a person typed: FTS5 syntax when it is
    valid (:func:`rewrite_query`), else every word required (:func:`escape_query`), so a stray
    quote or parenthesis is never an error. An empty query matches nothing."""
    query = (query or "").strip()
    if not query:
        return '""'
    rewritten = rewrite_query(query)
    if _syntax_ok(rewritten):
        return rewritten
    escaped = escape_query(query)
    return escaped if escaped and _syntax_ok(escaped) else '""'


# -- highlighting ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Terms:
    """What a query looks for, for highlighting: words and phrases, and word prefixes."""

    phrases: tuple[str, ...]
    prefixes: tuple[str, ...]


def query_terms(query: str | None) -> Terms:
    """The words, "phrases" and prefix* of a query; operators and column names left out."""
    tokens = [t for t in _RAW_TOKEN.findall(query or "") if not t.isspace()]
    phrases: list[str] = []
    prefixes: list[str] = []
    in_braces = False
    for i, token in enumerate(tokens):
        after = tokens[i + 1] if i + 1 < len(tokens) else ""
        if token == "{":
            in_braces = True
        elif token == "}":
            in_braces = False
        elif token.startswith('"'):
            inner = (token[1:-1] if len(token) > 1 and token.endswith('"') else token[1:]).strip()
            if inner:
                (prefixes if after == "*" else phrases).append(inner.replace('""', '"'))
        elif _BAREWORD.fullmatch(token) and not in_braces and after != ":":
            if token in OPERATORS:
                continue
            (prefixes if after == "*" else phrases).append(token)
    return Terms(tuple(dict.fromkeys(phrases)), tuple(dict.fromkeys(prefixes)))


def _prefix_spans(text: str, prefixes: Sequence[str]) -> list[tuple[int, int]]:
    wanted = [w for p in prefixes for w in words(p)[-1:]]
    if not wanted:
        return []
    spans = []
    for start, end in word_spans(text):
        word = fold(text[start:end])
        if any(word.startswith(p) for p in wanted):
            spans.append((start, end))
    return spans


def hit_spans(text: str, terms: Terms) -> list[tuple[int, int]]:
    """Sorted, non-overlapping spans of ``text`` where the query's terms occur."""
    if not text:
        return []
    spans = highlight_spans(text, list(terms.phrases))
    spans += highlight_spans(text, [p for p in terms.prefixes if _NO_SPACE_SCRIPTS.search(p)])
    spans += _prefix_spans(text, [p for p in terms.prefixes if not _NO_SPACE_SCRIPTS.search(p)])
    merged: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


def _mark(text: str, spans: Iterable[tuple[int, int]], offset: int = 0) -> str:
    out, pos = [], 0
    for start, end in spans:
        start, end = max(start - offset, 0), min(end - offset, len(text))
        if end <= start or start < pos:
            continue
        out += [text[pos:start], MARK, text[start:end], MARK]
        pos = end
    out.append(text[pos:])
    return "".join(out)


def highlight(text: str | None, query: str | None) -> str | None:
    """``text`` with the query's hits between ``**`` markers."""
    if text is None:
        return None
    return _mark(text, hit_spans(text, query_terms(query)))


def snippet(query: str | None, *texts: str | None, width: int = 200) -> str:
    """About ``width`` characters of the first of ``texts`` that holds a hit, around the
    first hit, with ``…`` where it was cut and the hits between ``**`` markers; the start of
    the first non-empty text when none holds a hit."""
    terms = query_terms(query)
    chosen, spans = "", []
    for text in texts:
        flat = " ".join((text or "").split())
        if not flat:
            continue
        chosen = chosen or flat
        spans = hit_spans(flat, terms)
        if spans:
            chosen = flat
            break
    if not chosen:
        return ""
    start = max(0, spans[0][0] - width // 3) if spans else 0
    if start:
        space = chosen.find(" ", start, start + 20)
        start = space + 1 if space >= 0 else start
    end = min(len(chosen), start + width)
    if end < len(chosen):
        space = chosen.rfind(" ", end - 20, end)
        end = space if space > start else end
    piece = _mark(chosen[start:end], spans, offset=start)
    return ("…" if start else "") + piece + ("…" if end < len(chosen) else "")


def register_functions(conn: sqlite3.Connection) -> None:
    """SQL functions for queries over ``items_search``: ``search_query(q)`` for MATCH,
    ``search_escape(q)``, ``search_highlight(text, q)`` and ``search_snippet(q, text, …)``."""
    conn.create_function("search_query", 1, fts_query, deterministic=True)
    conn.create_function("search_escape", 1, escape_query, deterministic=True)
    conn.create_function("search_highlight", 2, highlight, deterministic=True)
    conn.create_function("search_snippet", -1, snippet, deterministic=True)


# -- the index ---------------------------------------------------------------------------------


def apply_schema(conn: sqlite3.Connection) -> None:
    """Create ``items_search``, its state and queue tables and its triggers (idempotent);
    start it over when :data:`VERSION` changed. Runs inside the caller's transaction."""
    conn.execute(
        "CREATE TABLE IF NOT EXISTS search_state (id INTEGER PRIMARY KEY CHECK (id = 1),"
        " indexed_upto INTEGER NOT NULL, version TEXT NOT NULL)"
    )
    conn.execute(
        "CREATE TABLE IF NOT EXISTS search_queue (id INTEGER PRIMARY KEY, item_id INTEGER NOT"
        " NULL, title TEXT, summary TEXT, content TEXT)"
    )
    row = conn.execute("SELECT version FROM search_state WHERE id = 1").fetchone()
    if row is not None and row[0] != VERSION:
        conn.execute(f"DROP TABLE IF EXISTS [{TABLE}]")
        conn.execute("DELETE FROM search_queue")
        conn.execute("DELETE FROM search_state")
    conn.execute(
        "INSERT OR IGNORE INTO search_state (id, indexed_upto, version) VALUES (1, 0, ?)",
        (VERSION,),
    )
    conn.execute(
        f"CREATE VIRTUAL TABLE IF NOT EXISTS [{TABLE}] USING fts5({', '.join(COLUMNS)},"
        f" content='', tokenize=\"{TOKENIZE}\")"
    )
    indexed = "old.id <= (SELECT indexed_upto FROM search_state WHERE id = 1)"
    queue = (
        "INSERT INTO search_queue (item_id, title, summary, content)"
        " VALUES (old.id, old.title, old.summary, old.content);"
    )
    conn.execute(
        f"CREATE TRIGGER IF NOT EXISTS items_search_ad AFTER DELETE ON items WHEN {indexed}"
        f" BEGIN {queue} END"
    )
    changed = " OR ".join(f"old.{c} IS NOT new.{c}" for c in COLUMNS)
    conn.execute(
        "CREATE TRIGGER IF NOT EXISTS items_search_au AFTER UPDATE OF title, summary, content"
        f" ON items WHEN {indexed} AND ({changed}) BEGIN {queue} END"
    )


Row = tuple[int, str | None, str | None, str | None]


def _rows(values: Iterable[Row]) -> list[tuple[int | str, ...]]:
    return [(rowid, *(index_text(v) for v in texts)) for rowid, *texts in values]


def index_pending(conn: sqlite3.Connection, limit: int = BATCH) -> int:
    """Bring ``items_search`` up to date (inside the caller's transaction): re-index the rows
    edited or deleted since the last call, then index up to ``limit`` new ones (a first
    indexing of a large archive catches up over several calls instead of holding the write
    lock for a minute). Returns how many rows it indexed."""
    columns = ", ".join(COLUMNS)
    done = 0
    queued = conn.execute(
        "SELECT id, item_id, title, summary, content FROM search_queue ORDER BY id"
    ).fetchall()
    if queued:
        indexed: dict[int, tuple[str | None, str | None, str | None]] = {}
        for _, item_id, *old in queued:
            indexed.setdefault(item_id, (old[0], old[1], old[2]))  # the first is what was indexed
        conn.executemany(
            f"INSERT INTO [{TABLE}] ([{TABLE}], rowid, {columns}) VALUES ('delete', ?, ?, ?, ?)",
            _rows((item_id, *old) for item_id, old in indexed.items()),
        )
        ids = sorted(indexed)
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            current = conn.execute(
                f"SELECT id, {columns} FROM items WHERE id IN ({','.join('?' * len(chunk))})",
                chunk,
            ).fetchall()
            conn.executemany(
                f"INSERT INTO [{TABLE}] (rowid, {columns}) VALUES (?, ?, ?, ?)", _rows(current)
            )
        conn.execute("DELETE FROM search_queue WHERE id <= ?", (queued[-1][0],))
        done += len(indexed)
    (upto,) = conn.execute("SELECT indexed_upto FROM search_state WHERE id = 1").fetchone()
    (top,) = conn.execute("SELECT coalesce(max(id), 0) FROM items").fetchone()
    if top > upto:
        new = conn.execute(
            f"SELECT id, {columns} FROM items WHERE id > ? AND id <= ? ORDER BY id LIMIT ?",
            (upto, top, limit),
        ).fetchall()
        top = new[-1][0] if len(new) == limit else top
        conn.executemany(
            f"INSERT INTO [{TABLE}] (rowid, {columns}) VALUES (?, ?, ?, ?)", _rows(new)
        )
        conn.execute("UPDATE search_state SET indexed_upto = ? WHERE id = 1", (top,))
        done += len(new)
    return done
