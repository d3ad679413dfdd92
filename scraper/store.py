"""The SQLite archive: schema, migrations and every write.

The schema is declared once (``TABLES``) and applied idempotently: missing tables are created,
missing columns added, indexes and the FTS index ensured. ``PRAGMA user_version`` records the
schema version for data migrations that a column diff cannot express.

A ``Store`` wraps one connection and belongs to the thread that opened it (sqlite3's rule).
The database runs in WAL mode with a busy timeout, so readers (Datasette, ``scraper status``)
never block the writer. One source poll is one transaction (:meth:`Store.transaction`).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import sqlite_utils

from scraper import search
from scraper.clock import iso, parse_iso
from scraper.errors import StoreError
from scraper.models import Item, Match, Source
from scraper.stories import NEAR_DUP_HOURS, normalise_title

SCHEMA_VERSION = 1
BUSY_TIMEOUT_MS = 15_000

# table -> (columns in order, primary key). Types are SQLite affinities.
TABLES: dict[str, dict[str, type]] = {
    "sources": {
        "id": int,
        "name": str,
        "url": str,
        "kind": str,
        "tags": str,  # JSON list
        "enabled": int,
        "feed_url": str,  # an autodiscovered feed used instead of url
        "title": str,  # the feed's own title
        "etag": str,
        "last_modified": str,
        "body_hash": str,  # sha256 of the last parsed body: an unchanged body is not parsed
        "last_fetch_at": str,
        "last_success_at": str,
        "first_success_at": str,
        "consecutive_failures": int,
        "next_fetch_at": str,
        "retry_after_until": str,
        "last_status": str,
        "last_error": str,
        "last_item_at": str,
        "health_state": str,  # ok | failing | stale: what the last health alert said
        "health_since": str,
        "created_at": str,
    },
    "stories": {
        "id": int,
        "title": str,
        "first_seen_at": str,
        "last_seen_at": str,
        "canonical_url": str,
        "norm_title": str,
        "published_at": str,  # of its first item: copies of one report appear within hours
    },
    "items": {
        "id": int,
        "source_id": int,
        "key": str,
        "guid": str,
        "url": str,
        "canonical_url": str,
        "title": str,
        "summary": str,
        "content": str,
        "author": str,
        "published_at": str,
        "fetched_at": str,
        "updated_at": str,
        "story_id": int,
        "hash": str,  # of the stored fields: an edit changes it
        "pruned_at": str,
    },
    "matches": {
        "id": int,
        "item_id": int,
        "rule": str,
        "fields": str,  # JSON list
        "terms": str,  # JSON list
        "matched_at": str,
    },
    "alerts": {
        "id": int,
        "story_id": int,
        "source_id": int,  # health alerts: the source concerned
        "kind": str,  # story | health | summary
        "rules": str,  # JSON list
        "target": str,
        "status": str,
        "priority": str,
        "attempts": int,
        "next_attempt_at": str,
        "last_error": str,
        "held_reason": str,
        "dedupe_key": str,
        "item_id": int,  # the item whose match raised the alert
        "batch": str,  # released together (digest, quiet hours, rate limit): one message
        "payload": str,  # JSON: what the message needs beyond the story (health event, ...)
        "created_at": str,
        "first_attempt_at": str,
        "sent_at": str,
    },
    "targets": {  # what status and Datasette may know of a target: never its raw URL
        "id": int,
        "name": str,
        "url_redacted": str,
        "tags": str,  # JSON list
        "paused_until": str,  # e.g. after Telegram's 429 retry_after
        "last_sent_at": str,
        "last_error": str,
    },
    "deliveries": {  # one row per message sent: the rate limit and pacing read this
        "id": int,
        "target": str,
        "sent_at": str,
        "kind": str,
        "alerts": int,
    },
    "fetches": {
        "id": int,
        "source_id": int,
        "url": str,
        "started_at": str,
        "duration_ms": int,
        "status": str,
        "bytes": int,
        "items_new": int,
        "items_updated": int,
        "error": str,
    },
}

FOREIGN_KEYS = {
    "items": [("source_id", "sources", "id"), ("story_id", "stories", "id")],
    "matches": [("item_id", "items", "id")],
    "alerts": [("story_id", "stories", "id"), ("source_id", "sources", "id")],
    "fetches": [("source_id", "sources", "id")],
}

NOT_NULL_DEFAULTS: dict[str, dict[str, Any]] = {
    "items": {"title": "", "summary": "", "content": "", "author": ""},
    "alerts": {"attempts": 0, "status": "pending", "priority": "normal", "kind": "story"},
    "sources": {
        "consecutive_failures": 0,
        "enabled": 1,
        "kind": "feed",
        "tags": "[]",
        "health_state": "ok",
    },
}

INDEXES: list[tuple[str, list[str], bool]] = [
    ("sources", ["name"], True),
    ("items", ["source_id", "key"], True),
    ("items", ["canonical_url"], False),
    ("items", ["story_id"], False),
    ("items", ["published_at"], False),
    ("items", ["fetched_at"], False),
    ("stories", ["canonical_url"], False),
    ("stories", ["norm_title"], False),
    ("stories", ["first_seen_at"], False),
    ("matches", ["item_id", "rule"], True),
    ("matches", ["rule", "matched_at"], False),
    ("alerts", ["status", "next_attempt_at"], False),
    ("alerts", ["story_id"], False),
    ("alerts", ["dedupe_key"], True),
    ("alerts", ["target", "status"], False),
    ("items", ["source_id", "published_at"], False),
    ("targets", ["name"], True),
    ("deliveries", ["target", "sent_at"], False),
    ("fetches", ["source_id", "started_at"], False),
]

FTS_COLUMNS = ["title", "summary", "content"]

# Views for browsing in Datasette (facets work on them). Plain SQL: any SQLite client reads them.
VIEWS: dict[str, str] = {
    "item_list": """
        select i.id, i.published_at, s.name as source, i.title, i.url, i.story_id,
            i.fetched_at, i.pruned_at
        from items i join sources s on s.id = i.source_id""",
    "match_list": """
        select m.id, m.matched_at, m.rule, s.name as source, i.title, i.url, m.terms,
            m.fields, i.published_at, i.story_id, m.item_id
        from matches m join items i on i.id = m.item_id join sources s on s.id = i.source_id""",
    "story_copies": """
        select st.id as story_id, st.title, st.first_seen_at, st.last_seen_at,
            count(*) as copies, group_concat(distinct s.name) as sources
        from stories st join items i on i.story_id = st.id join sources s on s.id = i.source_id
        group by st.id having count(*) > 1""",
    "alert_list": """
        select a.id, a.status, a.target, a.kind,
            coalesce(st.title, json_extract(a.payload, '$.source'), a.kind) as about,
            a.rules, a.attempts, a.held_reason, a.last_error, a.created_at,
            a.next_attempt_at, a.sent_at, a.story_id
        from alerts a left join stories st on st.id = a.story_id""",
}


@dataclass(frozen=True, slots=True)
class SourceState:
    """What the database remembers about a source between polls."""

    id: int
    name: str
    url: str
    feed_url: str | None
    etag: str | None
    last_modified: str | None
    body_hash: str | None
    consecutive_failures: int
    next_fetch_at: str | None
    first_success_at: str | None
    last_success_at: str | None


@dataclass(frozen=True, slots=True)
class StoredItem:
    """An item as written: its row id, its story, and whether it is new or was edited."""

    id: int
    story_id: int
    item: Item
    is_new: bool
    title_changed: bool


def item_hash(item: Item) -> str:
    """A digest of the stored fields: it changes when the publisher edits the item."""
    published = item.published_at.timestamp() if item.published_at else ""
    text = f"{item.title}\0{item.summary}\0{item.content}\0{item.author}\0{item.url}\0{published}"
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=12).hexdigest()


def body_hash(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


class Store:
    """One connection to the archive. Open one per thread."""

    def __init__(self, db: sqlite_utils.Database, path: Path | None) -> None:
        self.db = db
        self.path = path
        self.conn: sqlite3.Connection = db.conn
        self._next_ids: dict[str, int] = {}

    # -- opening --------------------------------------------------------------------------

    @classmethod
    def open(cls, path: str | Path, *, migrate: bool = True, readonly: bool = False) -> Store:
        path = Path(path)
        try:
            if readonly:
                if not path.exists():
                    raise StoreError(f"{path}: no archive yet (run `scraper run --once` first)")
                conn = sqlite3.connect(
                    f"file:{path}?mode=ro", uri=True, isolation_level=None, timeout=15
                )
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                conn = sqlite3.connect(str(path), isolation_level=None, timeout=15)
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA cache_size = -16384")  # 16 MiB of page cache
            if not readonly:
                conn.execute("PRAGMA journal_mode = WAL")
                conn.execute("PRAGMA synchronous = NORMAL")
                # Checkpoint (and fsync) every ~64 MiB of WAL rather than every 4 MiB: a cold
                # pass commits once per source, and per-commit checkpoints dominated its time.
                conn.execute("PRAGMA wal_autocheckpoint = 16384")
            conn.execute("PRAGMA foreign_keys = ON")
        except sqlite3.Error as exc:
            raise StoreError(f"{path}: cannot open the database: {exc}") from exc
        store = cls(sqlite_utils.Database(conn), path)
        if migrate and not readonly:
            store.migrate()
            store.index_fts()
        return store

    @classmethod
    def memory(cls) -> Store:
        conn = sqlite3.connect(":memory:", isolation_level=None)
        store = cls(sqlite_utils.Database(conn), None)
        store.migrate()
        return store

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- schema ---------------------------------------------------------------------------

    def migrate(self) -> None:
        """Create or upgrade the schema; safe to run any number of times, from any version."""
        try:
            with self.transaction():
                self._apply_schema()
                self.conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: cannot apply the schema: {exc}") from exc

    def _apply_schema(self) -> None:
        db = self.db
        for name, columns in TABLES.items():
            table = db.table(name)
            if not table.exists():
                table.create(
                    columns,
                    pk="id",
                    not_null=set(NOT_NULL_DEFAULTS.get(name, {})),
                    defaults=NOT_NULL_DEFAULTS.get(name, {}),
                    foreign_keys=FOREIGN_KEYS.get(name, []),
                )
            else:
                existing = set(table.columns_dict)
                for column, col_type in columns.items():
                    if column not in existing:
                        table.add_column(
                            column,
                            col_type,
                            not_null_default=NOT_NULL_DEFAULTS.get(name, {}).get(column),
                        )
        for table_name, cols, unique in INDEXES:
            db.table(table_name).create_index(cols, unique=unique, if_not_exists=True)
        self._apply_fts()
        self.apply_views()

    def apply_views(self) -> None:
        """Create the views in :data:`VIEWS`, or replace those whose definition changed."""
        for name, sql in VIEWS.items():
            create = f"CREATE VIEW [{name}] AS {sql.strip()}"
            (current,) = self.conn.execute(
                "SELECT max(sql) FROM sqlite_master WHERE type = 'view' AND name = ?", (name,)
            ).fetchone()
            if current != create:
                self.conn.execute(f"DROP VIEW IF EXISTS [{name}]")
                self.conn.execute(create)

    def _apply_fts(self) -> None:
        """The full-text index over items (an external-content FTS5 table, as sqlite-utils and
        Datasette expect). New rows are indexed in batches by :meth:`index_fts` (one FTS
        commit per batch instead of per poll: three times faster on a cold pass); edits and
        deletes of already-indexed rows are mirrored at once by triggers."""
        conn = self.conn
        for old in ("items_ai", "items_ad", "items_au"):  # sqlite-utils' per-row triggers
            conn.execute(f"DROP TRIGGER IF EXISTS [{old}]")
        columns = ", ".join(f"[{c}]" for c in FTS_COLUMNS)
        conn.execute(
            f"CREATE VIRTUAL TABLE IF NOT EXISTS [items_fts] USING FTS5 ({columns},"
            " content=[items])"
        )
        conn.execute(
            "CREATE TABLE IF NOT EXISTS fts_state (id INTEGER PRIMARY KEY CHECK (id = 1),"
            " indexed_upto INTEGER NOT NULL)"
        )
        conn.execute("INSERT OR IGNORE INTO fts_state (id, indexed_upto) VALUES (1, 0)")
        old_values = ", ".join(f"old.[{c}]" for c in FTS_COLUMNS)
        new_values = ", ".join(f"new.[{c}]" for c in FTS_COLUMNS)
        indexed = "old.id <= (SELECT indexed_upto FROM fts_state WHERE id = 1)"
        conn.execute(
            f"CREATE TRIGGER IF NOT EXISTS items_fts_ad AFTER DELETE ON items WHEN {indexed}"
            f" BEGIN INSERT INTO items_fts (items_fts, rowid, {columns})"
            f" VALUES ('delete', old.id, {old_values}); END"
        )
        conn.execute(
            "CREATE TRIGGER IF NOT EXISTS items_fts_au AFTER UPDATE OF title, summary, content"
            f" ON items WHEN {indexed} BEGIN"
            f" INSERT INTO items_fts (items_fts, rowid, {columns})"
            f" VALUES ('delete', old.id, {old_values});"
            f" INSERT INTO items_fts (rowid, {columns}) VALUES (new.id, {new_values}); END"
        )
        search.apply_schema(conn)  # items_search: the CJK-aware index (scraper/search.py)

    def index_fts(self) -> int:
        """Index the items added since the last call (in its own transaction); returns how
        many. Called after each pass and periodically by the daemon, and on opening the
        archive, so a crash never leaves rows unindexed for long."""
        columns = ", ".join(f"[{c}]" for c in FTS_COLUMNS)
        with self.transaction():
            search.index_pending(self.conn)  # items_search follows the same way
            upto = self.conn.execute("SELECT indexed_upto FROM fts_state WHERE id = 1").fetchone()
            top = self.conn.execute("SELECT coalesce(max(id), 0) FROM items").fetchone()[0]
            if top <= upto[0]:
                return 0
            self.conn.execute(
                f"INSERT INTO items_fts (rowid, {columns}) SELECT id, {columns} FROM items"
                " WHERE id > ? AND id <= ?",
                (upto[0], top),
            )
            self.conn.execute("UPDATE fts_state SET indexed_upto = ? WHERE id = 1", (top,))
            return int(top - upto[0])

    # -- transactions ---------------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """BEGIN IMMEDIATE … COMMIT, or ROLLBACK on any exception. Inside an open
        transaction (see :meth:`begin`) it is a SAVEPOINT instead, so one poll's failure
        rolls back that poll alone."""
        if self.conn.in_transaction:
            self.conn.execute("SAVEPOINT poll")
            try:
                yield
            except BaseException:
                self.conn.execute("ROLLBACK TO poll")
                self.conn.execute("RELEASE poll")
                raise
            else:
                self.conn.execute("RELEASE poll")
            return
        self.conn.execute("BEGIN IMMEDIATE")
        self._next_ids.clear()
        try:
            yield
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        else:
            self.conn.execute("COMMIT")

    def begin(self) -> None:
        """Open a transaction that several polls share (each in its own savepoint); a
        cold pass writes polls as they arrive and commits whenever it has caught up."""
        if not self.conn.in_transaction:
            self.conn.execute("BEGIN IMMEDIATE")
            self._next_ids.clear()

    def _take_ids(self, table: str, count: int) -> int:
        """Reserve ``count`` row ids in ``table`` (items or stories); returns the last id
        before them. Safe within one write transaction (it holds the write lock); read
        afresh at each BEGIN, and a rolled-back savepoint only leaves a gap."""
        if table not in self._next_ids:
            (top,) = self.conn.execute(f"SELECT coalesce(max(id), 0) FROM {table}").fetchone()
            self._next_ids[table] = int(top)
        start = self._next_ids[table]
        self._next_ids[table] = start + count
        return start

    def commit(self) -> None:
        if self.conn.in_transaction:
            self.conn.execute("COMMIT")

    # -- sources --------------------------------------------------------------------------

    def sync_sources(self, sources: Sequence[Source], now: datetime) -> None:
        """Make the sources table reflect the configuration (by name). A changed URL resets
        the conditional-GET state; sources removed from the config are marked disabled, never
        deleted (their items stay in the archive)."""
        with self.transaction():
            known = {
                row[0]: (row[1], row[2], row[3], row[4])
                for row in self.conn.execute("SELECT name, url, kind, tags, enabled FROM sources")
            }
            names = set()
            for source in sources:
                names.add(source.name)
                tags = json.dumps(list(source.tags), ensure_ascii=False)
                url = source.shown_url  # never a secret expanded from ${VAR}
                if source.name not in known:
                    self.conn.execute(
                        "INSERT INTO sources (name, url, kind, tags, enabled, consecutive_failures,"
                        " created_at) VALUES (?, ?, ?, ?, ?, 0, ?)",
                        (source.name, url, source.kind, tags, int(source.enabled), iso(now)),
                    )
                    continue
                old_url, kind, old_tags, enabled = known[source.name]
                if (old_url, kind, old_tags, enabled) == (
                    url,
                    source.kind,
                    tags,
                    int(source.enabled),
                ):
                    continue  # unchanged: no write
                if old_url != url or kind != source.kind:
                    self.conn.execute(
                        "UPDATE sources SET etag = NULL, last_modified = NULL, body_hash = NULL,"
                        " feed_url = NULL WHERE name = ?",
                        (source.name,),
                    )
                self.conn.execute(
                    "UPDATE sources SET url = ?, kind = ?, tags = ?, enabled = ? WHERE name = ?",
                    (url, source.kind, tags, int(source.enabled), source.name),
                )
            for name in set(known) - names:
                self.conn.execute("UPDATE sources SET enabled = 0 WHERE name = ?", (name,))

    def source_state(self, name: str) -> SourceState | None:
        row = self.conn.execute(
            "SELECT id, name, url, feed_url, etag, last_modified, body_hash,"
            " consecutive_failures, next_fetch_at, first_success_at, last_success_at"
            " FROM sources WHERE name = ?",
            (name,),
        ).fetchone()
        return SourceState(*row) if row else None

    def source_states(self) -> dict[str, SourceState]:
        rows = self.conn.execute(
            "SELECT id, name, url, feed_url, etag, last_modified, body_hash,"
            " consecutive_failures, next_fetch_at, first_success_at, last_success_at FROM sources"
        )
        return {row[1]: SourceState(*row) for row in rows}

    def record_fetch(
        self,
        source_id: int,
        *,
        url: str,
        started_at: datetime,
        duration_ms: int,
        status: str,
        nbytes: int,
        items_new: int = 0,
        items_updated: int = 0,
        error: str | None = None,
    ) -> None:
        self.conn.execute(
            "INSERT INTO fetches (source_id, url, started_at, duration_ms, status, bytes,"
            " items_new, items_updated, error) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                source_id,
                url,
                iso(started_at),
                duration_ms,
                status,
                nbytes,
                items_new,
                items_updated,
                error,
            ),
        )

    def update_source(self, source_id: int, **values: Any) -> None:
        """Set columns of a sources row (names are checked against the schema)."""
        if not values:
            return
        unknown = set(values) - set(TABLES["sources"])
        if unknown:
            raise ValueError(f"unknown sources columns: {sorted(unknown)}")
        assignments = ", ".join(f"{column} = ?" for column in values)
        self.conn.execute(
            f"UPDATE sources SET {assignments} WHERE id = ?",
            (*values.values(), source_id),
        )

    # -- items ----------------------------------------------------------------------------

    def insert_rows(self, statement: str, rows: Sequence[Sequence[Any]]) -> None:
        """``statement VALUES (…), (…), …``: one multi-row INSERT per 500 rows. Each
        statement step releases and re-takes the GIL, which the fetch threads hold often
        during a pass, so one step for a batch is much faster than one per row."""
        if not rows:
            return
        width = len(rows[0])
        group = "(" + ", ".join("?" * width) + ")"
        per = max(1, min(500, 30_000 // width))
        for start in range(0, len(rows), per):
            chunk = rows[start : start + per]
            self.conn.execute(
                f"{statement} VALUES {', '.join([group] * len(chunk))}",
                [value for row in chunk for value in row],
            )

    def known_items(self, source_id: int) -> dict[str, tuple[int, str | None, str]]:
        """key -> (id, hash, title) for every item of a source."""
        rows = self.conn.execute(
            "SELECT key, id, hash, title FROM items WHERE source_id = ?", (source_id,)
        )
        return {key: (item_id, h, title) for key, item_id, h, title in rows}

    def upsert_items(
        self,
        source_id: int,
        items: Sequence[Item],
        *,
        now: datetime,
        story_window: float = 48 * 3600.0,
        canonical: Callable[[str], str] | None = None,
    ) -> list[StoredItem]:
        """Insert new items and update edited ones (matched by key); return what changed.

        Every new item gets a story: an existing one (within ``story_window``) with the same
        canonical URL or the same normalised title, else a new one. An item whose body was
        pruned keeps its identity row, so it is never new again, and edits to it are ignored.
        Batched (a handful of statements per poll); must run inside :meth:`transaction`.
        """
        known = {
            key: (item_id, h, title, story_id, pruned)
            for key, item_id, h, title, story_id, pruned in self.conn.execute(
                "SELECT key, id, hash, title, story_id, pruned_at FROM items WHERE source_id = ?",
                (source_id,),
            )
        }
        fetched = iso(now)
        out: list[StoredItem] = []
        updates: list[tuple[Any, ...]] = []
        fresh: list[tuple[Item, str, str | None, str]] = []  # item, hash, canonical, norm title
        seen: set[str] = set()
        for item in items:
            if item.key in seen:
                continue
            seen.add(item.key)
            h = item_hash(item)
            canon = canonical(item.url) if (canonical and item.url) else item.url
            old = known.get(item.key)
            if old is None:
                fresh.append((item, h, canon, normalise_title(item.title)))
                continue
            item_id, old_hash, old_title, story_id, pruned = old
            if old_hash == h or pruned:
                continue
            updates.append(
                (
                    item.guid,
                    item.url,
                    canon,
                    item.title,
                    item.summary,
                    item.content,
                    item.author,
                    iso(item.published_at),
                    fetched,
                    h,
                    item_id,
                )
            )
            out.append(StoredItem(item_id, story_id, item, False, old_title != item.title))
        if updates:
            self.conn.executemany(
                "UPDATE items SET guid = ?, url = ?, canonical_url = ?, title = ?, summary = ?,"
                " content = ?, author = ?, published_at = ?, updated_at = ?, hash = ?"
                " WHERE id = ?",
                updates,
            )
        if not fresh:
            return out

        story_ids = self._stories_for(fresh, now, story_window)
        next_id = self._take_ids("items", len(fresh))
        rows: list[tuple[Any, ...]] = []
        for (item, h, canon, _), story_id in zip(fresh, story_ids, strict=True):
            next_id += 1
            rows.append(
                (
                    next_id,
                    source_id,
                    item.key,
                    item.guid,
                    item.url,
                    canon,
                    item.title,
                    item.summary,
                    item.content,
                    item.author,
                    iso(item.published_at),
                    fetched,
                    story_id,
                    h,
                )
            )
            out.append(StoredItem(next_id, story_id, item, True, False))
        self.insert_rows(
            "INSERT INTO items (id, source_id, key, guid, url, canonical_url, title, summary,"
            " content, author, published_at, fetched_at, story_id, hash)",
            rows,
        )
        return out

    def _lookup(
        self, urls: set[str], titles: set[str], since: str
    ) -> tuple[dict[str, tuple[int, str]], dict[str, tuple[int, str]]]:
        """For canonical URLs and normalised titles: value -> (id, published_at) of the
        newest story with it first seen since ``since``. One statement for a usual poll."""
        by: dict[str, dict[str, tuple[int, str]]] = {"canonical_url": {}, "norm_title": {}}
        wanted = [("canonical_url", v) for v in sorted(urls)] + [
            ("norm_title", v) for v in sorted(titles)
        ]
        for start in range(0, len(wanted), 500):
            chunk = wanted[start : start + 500]
            parts, params = [], []
            for column in ("canonical_url", "norm_title"):
                values = [v for c, v in chunk if c == column]
                if values:
                    parts.append(
                        f"SELECT '{column}', {column}, max(id), published_at FROM stories"
                        f" WHERE {column} IN ({','.join('?' * len(values))})"
                        f" AND first_seen_at >= ? GROUP BY {column}"
                    )
                    params += [*values, since]
            for column, value, story_id, published in self.conn.execute(
                " UNION ALL ".join(parts), params
            ):
                by[column][value] = (story_id, published)
        return by["canonical_url"], by["norm_title"]

    def _stories_for(
        self,
        fresh: Sequence[tuple[Item, str, str | None, str]],
        now: datetime,
        window: float,
    ) -> list[int]:
        """The story of each new item: an existing one (same canonical URL, or the same
        normalised title of at least three words published within NEAR_DUP_HOURS, first
        seen within the window), one shared with an earlier item of the same batch, or a new
        one. Near-duplicate titles are joined later, by the alerts step, for the items that
        matter to alerts."""
        since = iso(now - timedelta(seconds=window))
        stamp = iso(now)
        titled = {n for _, _, _, n in fresh if len(n.split()) >= 3}
        by_url, by_title = self._lookup({c for _, _, c, _ in fresh if c}, titled, since)
        next_id = self._take_ids("stories", 0)
        new_rows: list[tuple[Any, ...]] = []
        touched: set[int] = set()
        result: list[int] = []
        for item, _, canon, norm in fresh:
            published = item.published_at or now
            story = by_url.get(canon) if canon else None
            if story is None and norm in by_title:
                candidate = by_title[norm]
                other = parse_iso(candidate[1]) or now
                if abs((published - other).total_seconds()) <= NEAR_DUP_HOURS * 3600:
                    story = candidate
            if story is None:
                next_id += 1
                story = (next_id, iso(published) or stamp)
                new_rows.append((next_id, item.title, stamp, stamp, canon, norm or None, story[1]))
            else:
                touched.add(story[0])
            if canon:
                by_url.setdefault(canon, story)
            if norm in titled:
                by_title.setdefault(norm, story)
            result.append(story[0])
        self._next_ids["stories"] = next_id
        self.insert_rows(
            "INSERT INTO stories (id, title, first_seen_at, last_seen_at, canonical_url,"
            " norm_title, published_at)",
            new_rows,
        )
        self.conn.executemany(
            "UPDATE stories SET last_seen_at = ? WHERE id = ?", [(stamp, i) for i in touched]
        )
        return result

    def insert_matches(self, found: Sequence[tuple[int, Sequence[Match]]], now: datetime) -> None:
        """Write the matches of new items (which have none yet) in one statement."""
        stamp = iso(now)
        self.insert_rows(
            "INSERT OR IGNORE INTO matches (item_id, rule, fields, terms, matched_at)",
            [
                (
                    item_id,
                    m.rule,
                    json.dumps(list(m.fields)),
                    json.dumps(list(m.terms), ensure_ascii=False),
                    stamp,
                )
                for item_id, matches in found
                for m in matches
            ],
        )

    def record_matches(self, item_id: int, matches: Sequence[Match], now: datetime) -> None:
        """Write (or refresh) the matches of an item; rules that no longer match are removed."""
        marks = ",".join("?" * len(matches))
        self.conn.execute(
            f"DELETE FROM matches WHERE item_id = ? AND rule NOT IN ({marks})",
            (item_id, *(m.rule for m in matches)),
        )
        self.conn.executemany(
            "INSERT INTO matches (item_id, rule, fields, terms, matched_at) VALUES (?, ?, ?, ?, ?)"
            " ON CONFLICT (item_id, rule) DO UPDATE SET fields = excluded.fields,"
            " terms = excluded.terms",
            [
                (
                    item_id,
                    m.rule,
                    json.dumps(list(m.fields)),
                    json.dumps(list(m.terms), ensure_ascii=False),
                    iso(now),
                )
                for m in matches
            ],
        )

    # -- reading --------------------------------------------------------------------------

    def count(self, table: str) -> int:
        if table not in TABLES and table != "items_fts":
            raise ValueError(table)
        return int(self.conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
