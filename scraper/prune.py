"""Retention: `scraper prune` drops the bodies of old items and keeps their identities.

A pruned item keeps its row: id, source, key, guid, url, canonical URL, title, author, dates,
story and hash stay, and ``pruned_at`` is set; summary and content become empty. The identity
means the item is never archived as new again (Store.upsert_items skips pruned items, edits
included); the title and link keep the archive browsable, stories joinable and old matches
readable. The full-text indexes follow by their triggers (and :meth:`Store.index_fts`).

Age is counted from ``fetched_at`` (when the item was archived), which only grows; publication
dates from feeds can be missing, wrong or in the future. Items whose alerts are still pending,
held or failing are kept whole until those alerts are settled.

Pruning frees pages inside the file; the file shrinks only with VACUUM (see :func:`vacuum`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from scraper.clock import iso
from scraper.store import Store

MIN_AGE = 86_400.0  # a day: a smaller age is almost surely a typo ("180" for "180d")
BATCH = 2_000  # items per transaction, so the daemon never waits long for the write lock

_PRUNABLE = (
    "pruned_at IS NULL AND fetched_at < :cutoff AND id NOT IN (SELECT item_id FROM alerts"
    " WHERE item_id IS NOT NULL AND status IN ('pending', 'held', 'failed'))"
)


@dataclass(frozen=True, slots=True)
class PruneResult:
    cutoff: datetime  # items archived before this lost their bodies
    pruned: int  # how many (would have, with dry_run)
    dry_run: bool = False


def prune(
    store: Store, older_than: float, now: datetime, *, dry_run: bool = False, batch: int = BATCH
) -> PruneResult:
    """Drop summary and content of items archived more than ``older_than`` seconds before
    ``now``; keep everything that identifies them. Raises ValueError under :data:`MIN_AGE`."""
    if older_than < MIN_AGE:
        raise ValueError("the age must be at least 1d")
    cutoff = now - timedelta(seconds=older_than)
    params = {"cutoff": iso(cutoff), "now": iso(now), "batch": batch}
    if dry_run:
        (count,) = store.conn.execute(
            f"SELECT count(*) FROM items WHERE {_PRUNABLE}", params
        ).fetchone()
        return PruneResult(cutoff, int(count), dry_run=True)
    total = 0
    while True:
        with store.transaction():
            cursor = store.conn.execute(
                "UPDATE items SET summary = '', content = '', pruned_at = :now"
                f" WHERE id IN (SELECT id FROM items WHERE {_PRUNABLE} LIMIT :batch)",
                params,
            )
        store.index_fts()  # the CJK-aware index re-indexes the pruned rows (title only now)
        total += cursor.rowcount
        if cursor.rowcount < batch:
            return PruneResult(cutoff, total)


def optimize(store: Store) -> None:
    """Merge the full-text indexes' segments (reclaims the space of pruned text inside the
    file; safe while the scraper runs) and refresh the query planner's statistics."""
    with store.transaction():
        for table in ("items_fts", "items_search"):
            store.conn.execute(f"INSERT INTO [{table}] ([{table}]) VALUES ('optimize')")
    store.conn.execute("PRAGMA optimize")


def vacuum(store: Store) -> None:
    """Rewrite the database file without its free pages. Needs free disk space about the
    size of the file and blocks every writer meanwhile: stop the daemon first."""
    store.conn.execute("VACUUM")
