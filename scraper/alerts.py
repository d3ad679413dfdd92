"""Queueing alerts: which matches become alerts, for which targets, in which story.

This is the step after new items are stored (:class:`AlertQueue` is the pipeline's
``after_store`` hook), and it runs inside the same transaction as the items and matches that
cause the alerts: the ledger is an outbox, so a crash either keeps all three or none.

The rules, in order:

* until a source's first successful fetch it only archives (unless ``[alerts] backlog``);
* an item published longer ago than ``max_age`` never alerts;
* a poll where most of a source's items are suddenly new (GUID churn: a feed that re-keyed
  its items) raises one summary per target, never a flood;
* otherwise each matching item's story gets one alert row per target (``dedupe_key``
  ``story:<id>:<target>``): a copy from another source adds its rules to a row not yet sent,
  and alerts only a target that has not had the story.

Rows start ``pending``, or ``held`` for a digest rule or quiet hours (high priority passes
quiet hours); :mod:`scraper.delivery` releases and sends them.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

from scraper.clock import iso, parse_iso
from scraper.models import Match, Rule, Source
from scraper.settings import AlertSettings, HealthSettings, Target
from scraper.store import SourceState, Store, StoredItem
from scraper.stories import TitleKey, near_duplicate

log = logging.getLogger(__name__)

STDOUT = Target(name="stdout", url="", tags=())  # with no [[targets]], alerts print
PRIORITY_ORDER = {"low": 0, "normal": 1, "high": 2}
CHURN_MIN_NEW = 10  # a poll needs at least this many new items to count as churn...
CHURN_SHARE = 0.8  # ...and this share of the document's items new


@dataclass(frozen=True)
class AlertPolicy:
    """Everything alert decisions need, built once from the settings and the rules."""

    alerts: AlertSettings
    health: HealthSettings
    rules: Mapping[str, Rule]
    targets: tuple[Target, ...]
    timezone: ZoneInfo = field(default_factory=lambda: ZoneInfo("UTC"))

    @property
    def effective_targets(self) -> tuple[Target, ...]:
        return self.targets or (STDOUT,)

    def targets_for(self, tags: Sequence[str] | None) -> list[Target]:
        """Targets having any of ``tags``; every target when ``tags`` is None. With no
        targets configured everything goes to standard output."""
        if not self.targets:
            return [STDOUT]
        if tags is None:
            return list(self.targets)
        wanted = set(tags)
        return [t for t in self.targets if wanted.intersection(t.tags)]

    def health_targets(self) -> list[Target]:
        """The targets with a [health] notify tag; every target when none has one (a health
        alert is never dropped for want of a tag: `scraper check` warns about it)."""
        return self.targets_for(self.health.notify or None) or self.targets_for(None)

    def routing_problems(self) -> list[str]:
        """Rules and [health] tags that reach no target (their alerts would go nowhere)."""
        if not self.targets:
            return []
        problems = [
            f"rule {rule.id}: notify {list(rule.notify)} matches no target's tags"
            for rule in self.rules.values()
            if rule.notify and not self.targets_for(list(rule.notify))
        ]
        if self.health.notify and not self.targets_for(list(self.health.notify)):
            problems.append(
                f"[health] notify {list(self.health.notify)} matches no target's tags:"
                " health alerts go to every target"
            )
        return problems

    def in_quiet_hours(self, now: datetime) -> bool:
        return in_quiet_hours(self.alerts.quiet_hours, now.astimezone(self.timezone).time())


def in_quiet_hours(window: tuple[time, time] | None, local: time) -> bool:
    """Whether a local wall-clock time falls in a "23:00-07:00" style window."""
    if window is None:
        return False
    start, end = window
    if start <= end:
        return start <= local < end
    return local >= start or local < end


def initial_status(
    rules: Sequence[Rule], policy: AlertPolicy, now: datetime
) -> tuple[str, str | None, str]:
    """(status, held_reason, priority) for a new alert raised by ``rules``.

    A digest holds the alert only when every rule that raised it is a digest rule (an
    immediate rule wins); quiet hours hold anything below high priority."""
    priority = max((r.priority for r in rules), key=PRIORITY_ORDER.__getitem__, default="normal")
    digests = [r for r in rules if r.digest]
    if rules and len(digests) == len(rules):
        return "held", f"digest:{digests[0].id}", priority
    if priority != "high" and policy.in_quiet_hours(now):
        return "held", "quiet", priority
    return "pending", None, priority


def insert_alert(
    store: Store,
    *,
    dedupe_key: str,
    kind: str,
    target: str,
    now: datetime,
    rules: Sequence[str] = (),
    story_id: int | None = None,
    item_id: int | None = None,
    source_id: int | None = None,
    status: str = "pending",
    held_reason: str | None = None,
    priority: str = "normal",
    payload: Mapping[str, object] | None = None,
) -> bool:
    """Write one ledger row; False when a row with that dedupe key exists already."""
    cursor = store.conn.execute(
        "INSERT INTO alerts (story_id, item_id, source_id, kind, rules, target, status,"
        " priority, attempts, next_attempt_at, held_reason, dedupe_key, payload, created_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, 0, ?, ?, ?, ?, ?) ON CONFLICT (dedupe_key) DO NOTHING",
        (
            story_id,
            item_id,
            source_id,
            kind,
            json.dumps(list(rules)),
            target,
            status,
            priority,
            iso(now),
            held_reason,
            dedupe_key,
            json.dumps(payload or {}, ensure_ascii=False),
            iso(now),
        ),
    )
    return cursor.rowcount > 0


class AlertQueue:
    """The pipeline's after-store step: turn an item's matches into ledger rows."""

    def __init__(self, policy: AlertPolicy) -> None:
        self.policy = policy

    def __call__(
        self,
        store: Store,
        source: Source,
        state: SourceState,
        stored: Sequence[StoredItem],
        matches: dict[int, list[Match]],
        now: datetime,
        *,
        document_items: int | None = None,
    ) -> int:
        """Queue the alerts of one poll; returns how many rows were written or extended."""
        if not matches:
            return 0
        policy = self.policy
        if state.first_success_at is None and not policy.alerts.backlog:
            log.info("source %r: first poll archives only (backlog = false)", source.name)
            return 0
        by_id = {entry.id: entry for entry in stored}
        oldest = now - timedelta(seconds=policy.alerts.max_age)
        fresh = {
            item_id: found
            for item_id, found in matches.items()
            if item_id in by_id and (by_id[item_id].item.published_at or now) >= oldest
        }
        if not fresh:
            return 0
        new_count = sum(1 for entry in stored if entry.is_new)
        total = document_items or len(stored)
        if (
            state.first_success_at is not None
            and new_count >= CHURN_MIN_NEW
            and new_count >= CHURN_SHARE * total
        ):
            return self._churn_summary(store, source, state, fresh, now, new_count)
        queued = 0
        for item_id, found in fresh.items():
            entry = by_id[item_id]
            story_id = self._join_story(store, entry, now)
            queued += self._queue_story(store, story_id, item_id, found, now)
        return queued

    def _rules_of(self, found: Sequence[Match]) -> list[Rule]:
        return [self.policy.rules[m.rule] for m in found if m.rule in self.policy.rules]

    def _route(self, rules: Sequence[Rule]) -> dict[str, list[Rule]]:
        """target name -> the rules that send this item there."""
        routed: dict[str, list[Rule]] = {}
        for rule in rules:
            for target in self.policy.targets_for(list(rule.notify) if rule.notify else None):
                routed.setdefault(target.name, []).append(rule)
        return routed

    def _queue_story(
        self, store: Store, story_id: int, item_id: int, found: Sequence[Match], now: datetime
    ) -> int:
        queued = 0
        for target, rules in self._route(self._rules_of(found)).items():
            key = f"story:{story_id}:{target}"
            row = store.conn.execute(
                "SELECT id, status, rules FROM alerts WHERE dedupe_key = ?", (key,)
            ).fetchone()
            ids = [r.id for r in rules]
            if row is not None:
                alert_id, status, existing = row
                if status in ("sent", "acked", "dead"):
                    continue  # this target has had the story (or gave up on it)
                merged = list(dict.fromkeys([*json.loads(existing or "[]"), *ids]))
                store.conn.execute(
                    "UPDATE alerts SET rules = ? WHERE id = ?", (json.dumps(merged), alert_id)
                )
                queued += 1
                continue
            status, held, priority = initial_status(rules, self.policy, now)
            queued += insert_alert(
                store,
                dedupe_key=key,
                kind="story",
                target=target,
                now=now,
                rules=ids,
                story_id=story_id,
                item_id=item_id,
                status=status,
                held_reason=held,
                priority=priority,
            )
        return queued

    def _churn_summary(
        self,
        store: Store,
        source: Source,
        state: SourceState,
        fresh: Mapping[int, Sequence[Match]],
        now: datetime,
        new_count: int,
    ) -> int:
        """One summary per target instead of an alert per re-keyed item."""
        log.warning(
            "source %r: %d items are new at once (GUID churn?): one summary instead of alerts",
            source.name,
            new_count,
        )
        routed: dict[str, list[Rule]] = {}
        items: dict[str, list[int]] = {}
        for item_id, found in fresh.items():
            for target, rules in self._route(self._rules_of(found)).items():
                routed.setdefault(target, []).extend(rules)
                items.setdefault(target, []).append(item_id)
        queued = 0
        for target, rules in routed.items():
            unique = list({r.id: r for r in rules}.values())
            _, _, priority = initial_status(unique, self.policy, now)
            held = "quiet" if priority != "high" and self.policy.in_quiet_hours(now) else None
            queued += insert_alert(
                store,
                dedupe_key=f"churn:{state.id}:{iso(now)}:{target}",
                kind="summary",
                target=target,
                now=now,
                rules=[r.id for r in unique],
                source_id=state.id,
                item_id=items[target][0],
                status="held" if held else "pending",
                held_reason=held,
                priority=priority,
                payload={"source": source.name, "new": new_count, "items": items[target]},
            )
        return queued

    def _join_story(self, store: Store, entry: StoredItem, now: datetime) -> int:
        """Join the item to a recent alerted story with a near-duplicate title, if any
        (the store already joined identical URLs and titles)."""
        if not entry.is_new:
            return entry.story_id  # an edited item keeps its story: alert rows point at it
        window = iso(now - timedelta(seconds=self.policy.alerts.story_window))
        own = TitleKey.of(entry.item.title)
        if not own.norm:
            return entry.story_id
        (siblings,) = store.conn.execute(
            "SELECT count(*) FROM items WHERE story_id = ?", (entry.story_id,)
        ).fetchone()
        if siblings > 1:
            return entry.story_id  # already joined by URL or identical title
        published = entry.item.published_at or now
        candidates = store.conn.execute(
            "SELECT s.id, s.title, coalesce(s.published_at, min(i.published_at), s.first_seen_at)"
            " FROM stories s JOIN items i ON i.story_id = s.id"
            " WHERE s.first_seen_at >= ? AND s.id != ?"
            " AND EXISTS (SELECT 1 FROM alerts a WHERE a.story_id = s.id)"
            " GROUP BY s.id ORDER BY s.id DESC LIMIT 500",
            (window, entry.story_id),
        ).fetchall()
        for story_id, title, first_published in candidates:
            if near_duplicate(
                own,
                TitleKey.of(title or ""),
                published_a=published,
                published_b=parse_iso(first_published),
            ):
                store.conn.execute(
                    "UPDATE items SET story_id = ? WHERE id = ?", (story_id, entry.id)
                )
                store.conn.execute(
                    "DELETE FROM stories WHERE id = ? AND NOT EXISTS"
                    " (SELECT 1 FROM items WHERE story_id = ?) AND NOT EXISTS"
                    " (SELECT 1 FROM alerts WHERE story_id = ?)",
                    (entry.story_id, entry.story_id, entry.story_id),
                )
                store.conn.execute(
                    "UPDATE stories SET last_seen_at = ? WHERE id = ?", (iso(now), story_id)
                )
                return int(story_id)
        return entry.story_id
