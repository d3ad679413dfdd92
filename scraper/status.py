"""What `scraper status` and `scraper alerts retry|ack` read and change (no printing here)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from scraper.clock import iso, parse_iso
from scraper.settings import Settings
from scraper.store import Store


@dataclass(frozen=True)
class SourceHealth:
    name: str
    enabled: bool
    last_success_at: datetime | None
    consecutive_failures: int
    next_fetch_at: datetime | None
    last_item_at: datetime | None
    health_state: str
    last_error: str | None

    def needs_attention(self, failures: int) -> bool:
        return self.enabled and (
            self.consecutive_failures >= failures or self.health_state in ("failing", "stale")
        )


@dataclass(frozen=True)
class ProblemAlert:
    id: int
    status: str
    target: str
    title: str
    attempts: int
    last_error: str | None
    created_at: str


@dataclass(frozen=True)
class Status:
    sources: list[SourceHealth]
    ledger: dict[str, int]
    problems: list[ProblemAlert] = field(default_factory=list)
    failures_threshold: int = 5

    @property
    def attention(self) -> list[str]:
        """Reasons to exit 1: failing or stale sources, alerts failed or dead."""
        reasons = [
            f"source {s.name}: {s.health_state if s.health_state != 'ok' else 'failing'}"
            for s in self.sources
            if s.needs_attention(self.failures_threshold)
        ]
        for status in ("failed", "dead"):
            if self.ledger.get(status):
                reasons.append(f"{self.ledger[status]} alert(s) {status}")
        return reasons


def read_status(store: Store, settings: Settings) -> Status:
    sources = [
        SourceHealth(
            name=row[0],
            enabled=bool(row[1]),
            last_success_at=parse_iso(row[2]),
            consecutive_failures=row[3] or 0,
            next_fetch_at=parse_iso(row[4]),
            last_item_at=parse_iso(row[5]),
            health_state=row[6] or "ok",
            last_error=row[7],
        )
        for row in store.conn.execute(
            "SELECT name, enabled, last_success_at, consecutive_failures, next_fetch_at,"
            " last_item_at, health_state, last_error FROM sources ORDER BY name"
        )
    ]
    ledger = dict(
        store.conn.execute("SELECT status, count(*) FROM alerts GROUP BY status").fetchall()
    )
    problems = [
        ProblemAlert(*row)
        for row in store.conn.execute(
            "SELECT a.id, a.status, a.target,"
            " coalesce(i.title, json_extract(a.payload, '$.source'), a.kind),"
            " a.attempts, a.last_error, a.created_at"
            " FROM alerts a LEFT JOIN items i ON i.id = a.item_id"
            " WHERE a.status IN ('failed', 'dead') ORDER BY a.id"
        )
    ]
    return Status(sources, ledger, problems, settings.health.failures)


def retry_alerts(store: Store, ids: Sequence[int], now: datetime) -> int:
    """Requeue dead or failed alerts (all of them when ``ids`` is empty) for a fresh day of
    attempts; returns how many."""
    where = "status IN ('dead', 'failed')"
    params: list[object] = [iso(now)]
    if ids:
        where += f" AND id IN ({','.join('?' * len(ids))})"
        params += list(ids)
    with store.transaction():
        cursor = store.conn.execute(
            "UPDATE alerts SET status = 'pending', next_attempt_at = ?, first_attempt_at = NULL,"
            f" attempts = 0 WHERE {where}",
            params,
        )
    return cursor.rowcount


def ack_alerts(store: Store, ids: Sequence[int]) -> int:
    """Acknowledge dead or failed alerts so status stops reporting them."""
    where = "status IN ('dead', 'failed')"
    params: list[object] = []
    if ids:
        where += f" AND id IN ({','.join('?' * len(ids))})"
        params += list(ids)
    with store.transaction():
        cursor = store.conn.execute(
            f"UPDATE alerts SET status = 'acked' WHERE {where}",
            params,
        )
    return cursor.rowcount


def human_age(then: datetime | None, now: datetime) -> str:
    """ "5m ago", "in 2h", "never"."""
    if then is None:
        return "never"
    seconds = (now - then).total_seconds()
    text = _span(abs(seconds))
    return f"{text} ago" if seconds >= 0 else f"in {text}"


def _span(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    if seconds < 172800:
        return f"{seconds / 3600:.0f}h"
    return f"{seconds / 86400:.0f}d"
