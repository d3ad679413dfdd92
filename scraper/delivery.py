"""Delivering the ledger: releases, pacing, sending, retries and health alerts.

:meth:`Deliverer.run` does everything that is due at ``now`` (the clock is passed in, so
``run --once``, the daemon and the tests share it):

1. health: sources failing ``[health] failures`` times in a row, or silent for five times
   their usual gap between items, queue one alert; recovery queues one more;
2. release: held rows whose digest cron has fired, whose quiet hours ended, or whose target's
   rate window has room again become ``pending`` with a shared ``batch``: one message each;
3. send, target by target: each message is one Apprise call (Apprise reports one boolean per
   call), its rows are marked ``sent`` only after it succeeded, in their own transaction. A
   kill between the send and that commit re-sends that one message after a restart; nothing
   else can duplicate or lose an alert. A failure is retried with exponential backoff
   (30 s doubling, capped at an hour) until a day after the first attempt, then ``dead``.

Pacing: beyond ``rate_limit`` messages per window a target's alerts are held and later folded
into one summary; Telegram gets at most one message a second per target and 20 a minute to a
group or channel, and a 429's ``retry_after`` pauses the target.
"""

from __future__ import annotations

import itertools
import json
import logging
import statistics
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol, TextIO

from scraper.alerts import AlertPolicy, insert_alert
from scraper.clock import Clock, iso, parse_iso
from scraper.messages import Notification, StoryAlert, render_text
from scraper.models import Source
from scraper.notify import SendResult
from scraper.rules.cron import parse_cron
from scraper.settings import Target
from scraper.store import Store

log = logging.getLogger(__name__)

RETRY_BASE = 30.0
RETRY_CAP = 3600.0
DEAD_AFTER = 86400.0
STALE_FACTOR = 5
SNIPPET = 300


class Sender(Protocol):
    def send(self, target: Target, n: Notification) -> SendResult: ...


class StdoutSender:
    """The sender used when no targets are configured: messages print as plain text."""

    def __init__(self, policy: AlertPolicy, stream: TextIO | None = None) -> None:
        self.policy = policy
        self.stream = stream

    def send(self, target: Target, n: Notification) -> SendResult:
        stream = self.stream or sys.stdout
        stream.write("\n" + render_text(n, self.policy.timezone).rstrip() + "\n")
        stream.flush()
        return SendResult(True)


def retry_delay(attempts: int) -> float:
    """Seconds before retry number ``attempts`` (1-based): 30 s doubling, capped at an hour."""
    return min(RETRY_CAP, RETRY_BASE * 2.0 ** max(0, min(attempts - 1, 20)))


def pacing(target: Target) -> list[tuple[int, float]]:
    """(messages, seconds) limits a channel imposes on one target (Telegram's Bot API)."""
    url = target.url
    if not url.startswith(("tgram://", "telegram://")):
        return []
    chats = url.split("://", 1)[1].split("?", 1)[0].split("/")[1:]
    limits = [(1, 1.0)]  # one message a second to a chat
    if any(c.startswith(("-", "@")) for c in chats if c):
        limits.append((20, 60.0))  # twenty a minute to a group or channel
    return limits


@dataclass
class DeliveryReport:
    messages: int = 0  # messages sent
    sent: int = 0  # alert rows marked sent
    failed: int = 0  # rows that failed this time (retry scheduled)
    dead: int = 0  # rows given up on this time
    held: int = 0  # rows held by the rate limit this time
    released: int = 0  # held rows released
    deferred: int = 0  # rows left pending by pacing or a paused target
    health: int = 0  # health alerts queued


@dataclass
class _Row:
    id: int
    kind: str
    story_id: int | None
    item_id: int | None
    source_id: int | None
    rules: list[str]
    priority: str
    batch: str | None
    payload: dict[str, Any]
    attempts: int
    first_attempt_at: str | None


class Deliverer:
    """Delivers what is due; build one per run (or per daemon tick) on the writer's thread."""

    def __init__(
        self,
        store: Store,
        policy: AlertPolicy,
        sender: Sender,
        *,
        sources: Sequence[Source] = (),
        clock: Clock,
        sleep: Callable[[float], None] | None = None,
        wait_budget: float = 0.0,
    ) -> None:
        self.store = store
        self.policy = policy
        self.sender = sender
        self.sources = {s.name: s for s in sources}
        self.clock = clock
        self.sleep = sleep
        self.wait_budget = wait_budget
        self.targets = {t.name: t for t in policy.effective_targets}

    # -- the whole job ---------------------------------------------------------------------

    def run(self, *, redacted: Callable[[Target], str] | None = None) -> DeliveryReport:
        report = DeliveryReport()
        now = self.clock()
        self.sync_targets(redacted)
        report.health = self.check_health(now)
        report.released = self.release_held(now)
        for name in self._targets_with_due(now):
            self._deliver_target(name, report)
        return report

    def sync_targets(self, redacted: Callable[[Target], str] | None = None) -> None:
        """Record each target's name, tags and redacted URL (never the URL itself)."""
        with self.store.transaction():
            for target in self.targets.values():
                shown = redacted(target) if redacted else ("stdout" if not target.url else "")
                self.store.conn.execute(
                    "INSERT INTO targets (name, url_redacted, tags) VALUES (?, ?, ?)"
                    " ON CONFLICT (name) DO UPDATE SET url_redacted = excluded.url_redacted,"
                    " tags = excluded.tags",
                    (target.name, shown, json.dumps(list(target.tags))),
                )

    # -- health ----------------------------------------------------------------------------

    def usual_gap(self, source_id: int) -> float | None:
        """The median gap in seconds between a source's last 21 items, if it has 10 or more."""
        stamps = [
            parse_iso(row[0])
            for row in self.store.conn.execute(
                "SELECT coalesce(published_at, fetched_at) AS t FROM items WHERE source_id = ?"
                " ORDER BY t DESC LIMIT 21",
                (source_id,),
            )
        ]
        times = sorted(t for t in stamps if t is not None)
        if len(times) < 10:
            return None  # too little history to know what is usual
        gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(times)]
        return max(60.0, statistics.median(gaps))

    def check_health(self, now: datetime) -> int:
        """Queue failing / stale / recovered alerts; returns how many events were raised."""
        rows = self.store.conn.execute(
            "SELECT id, name, consecutive_failures, health_state, health_since, last_item_at,"
            " first_success_at, last_error, last_status FROM sources WHERE enabled = 1"
        ).fetchall()
        events = 0
        threshold = self.policy.health.failures
        for sid, name, failures, state, since, last_item, first_ok, error, status in rows:
            state = state or "ok"
            event: tuple[str, str] | None = None
            if state != "failing" and failures >= threshold:
                event = ("failing", f"{failures} failed polls in a row; last: {status}: {error}")
            elif state == "failing" and failures == 0:
                event = ("recovered", "polls succeed again")
            elif state == "stale" and last_item and since and last_item > since:
                event = ("recovered", "new items again")
            elif state == "ok" and last_item and first_ok and failures == 0:
                source = self.sources.get(name)
                interval = source.interval if source else 0.0
                seen = [t for t in (parse_iso(last_item), parse_iso(first_ok)) if t]
                quiet_for = (now - max(seen)).total_seconds() if seen else 0.0
                # the limit is at least five intervals: below that, no need to measure the gap
                gap = self.usual_gap(sid) if quiet_for > STALE_FACTOR * interval else None
                if gap is not None:
                    limit = STALE_FACTOR * max(gap, interval)
                    # silent since its last item, or since we started watching it
                    silent = quiet_for
                    if silent > limit:
                        event = (
                            "stale",
                            f"no new item for {_human(silent)} (usually one every {_human(gap)})",
                        )
            if event is None:
                continue
            kind, detail = event
            new_state = {"failing": "failing", "stale": "stale"}.get(kind, "ok")
            with self.store.transaction():
                self.store.update_source(sid, health_state=new_state, health_since=iso(now))
                for target in self.policy.health_targets():
                    insert_alert(
                        self.store,
                        dedupe_key=f"health:{sid}:{kind}:{iso(now)}:{target.name}",
                        kind="health",
                        target=target.name,
                        now=now,
                        source_id=sid,
                        priority="high",
                        payload={"source": name, "event": kind, "detail": detail},
                    )
            log.warning("health source=%r event=%s %s", name, kind, detail)
            events += 1
        return events

    # -- releasing held alerts -------------------------------------------------------------

    def _room(self, target: str, now: datetime) -> bool:
        """Whether the target's rate limit lets one more message go now."""
        limit = self.policy.alerts.rate_limit
        if limit is None:
            return True
        count, seconds = limit
        (sent,) = self.store.conn.execute(
            "SELECT count(*) FROM deliveries WHERE target = ? AND sent_at > ?",
            (target, iso(now - timedelta(seconds=seconds))),
        ).fetchone()
        return bool(sent < count)

    def release_held(self, now: datetime) -> int:
        rows = self.store.conn.execute(
            "SELECT id, target, held_reason, created_at, priority FROM alerts"
            " WHERE status = 'held' ORDER BY id"
        ).fetchall()
        quiet = self.policy.in_quiet_hours(now)
        local_now = now.astimezone(self.policy.timezone)
        release: list[tuple[str, int]] = []
        requiet: list[int] = []
        room: dict[str, bool] = {}
        for alert_id, target, reason, created, priority in rows:
            reason = reason or ""
            batch: str | None = None
            if reason == "quiet":
                if not quiet:
                    batch = f"quiet:{iso(now)}"
            elif reason.startswith("digest:"):
                rule = self.policy.rules.get(reason.split(":", 1)[1])
                created_at = parse_iso(created) or now
                if rule is None or not rule.digest:
                    batch = f"digest:{reason}:{iso(now)}"
                else:
                    fire = parse_cron(rule.digest).next_after(
                        created_at.astimezone(self.policy.timezone)
                    )
                    if fire <= local_now:
                        if quiet and priority != "high":
                            requiet.append(alert_id)
                            continue
                        batch = f"{reason}:{iso(fire)}"
            elif reason == "rate":
                if target not in room:
                    room[target] = self._room(target, now)
                if room[target]:
                    batch = f"rate:{iso(now)}"
            if batch is not None:
                release.append((batch, alert_id))
        with self.store.transaction():
            self.store.conn.executemany(
                "UPDATE alerts SET status = 'pending', batch = ?, held_reason = NULL,"
                " next_attempt_at = ? WHERE id = ?",
                [(batch, iso(now), alert_id) for batch, alert_id in release],
            )
            self.store.conn.executemany(
                "UPDATE alerts SET held_reason = 'quiet' WHERE id = ?", [(i,) for i in requiet]
            )
        return len(release)

    # -- sending ---------------------------------------------------------------------------

    def _targets_with_due(self, now: datetime) -> list[str]:
        return [
            row[0]
            for row in self.store.conn.execute(
                "SELECT DISTINCT target FROM alerts WHERE status IN ('pending', 'failed')"
                " AND next_attempt_at <= ? ORDER BY target",
                (iso(now),),
            )
        ]

    def _due_rows(self, target: str, now: datetime) -> list[_Row]:
        rows = self.store.conn.execute(
            "SELECT id, kind, story_id, item_id, source_id, rules, priority, batch, payload,"
            " attempts, first_attempt_at FROM alerts WHERE target = ?"
            " AND status IN ('pending', 'failed') AND next_attempt_at <= ?"
            " ORDER BY CASE priority WHEN 'high' THEN 0 WHEN 'normal' THEN 1 ELSE 2 END, id",
            (target, iso(now)),
        ).fetchall()
        return [
            _Row(
                r[0],
                r[1],
                r[2],
                r[3],
                r[4],
                json.loads(r[5] or "[]"),
                r[6],
                r[7],
                json.loads(r[8] or "{}"),
                r[9],
                r[10],
            )
            for r in rows
        ]

    def _pace_wait(self, target: Target, now: datetime) -> float:
        """Seconds to wait before the next message to ``target`` (0: go now)."""
        wait = 0.0
        (paused,) = self.store.conn.execute(
            "SELECT paused_until FROM targets WHERE name = ?", (target.name,)
        ).fetchone() or (None,)
        until = parse_iso(paused)
        if until and until > now:
            wait = (until - now).total_seconds()
        for count, seconds in pacing(target):
            stamps = [
                parse_iso(r[0])
                for r in self.store.conn.execute(
                    "SELECT sent_at FROM deliveries WHERE target = ? AND sent_at > ?"
                    " ORDER BY sent_at DESC LIMIT ?",
                    (target.name, iso(now - timedelta(seconds=seconds)), count),
                )
            ]
            if len(stamps) >= count and stamps[-1] is not None:
                wait = max(wait, (stamps[-1] + timedelta(seconds=seconds) - now).total_seconds())
        return max(0.0, wait)

    def _deliver_target(self, name: str, report: DeliveryReport) -> None:
        target = self.targets.get(name)
        now = self.clock()
        rows = self._due_rows(name, now)
        if target is None:  # removed from the configuration: keep the rows, say why
            with self.store.transaction():
                self.store.conn.executemany(
                    "UPDATE alerts SET status = 'failed', last_error = ?, next_attempt_at = ?"
                    " WHERE id = ?",
                    [
                        (
                            f'no target named "{name}" in the configuration',
                            iso(now + timedelta(hours=1)),
                            r.id,
                        )
                        for r in rows
                    ],
                )
            report.deferred += len(rows)
            return
        units: list[list[_Row]] = []
        batches: dict[str, list[_Row]] = {}
        for row in rows:
            if row.batch:
                if row.batch not in batches:
                    batches[row.batch] = []
                    units.append(batches[row.batch])
                batches[row.batch].append(row)
            else:
                units.append([row])
        for i, unit in enumerate(units):
            now = self.clock()
            if not self._room(name, now):
                self._hold_for_rate([r for u in units[i:] for r in u], report)
                return
            wait = self._pace_wait(target, now)
            if wait > 0:
                if self.sleep is None or wait > self.wait_budget:
                    report.deferred += sum(len(u) for u in units[i:])
                    return
                self.wait_budget -= wait
                self.sleep(wait)
                now = self.clock()
            notification = self._notification(unit)
            result = self.sender.send(target, notification)
            self._record(target, unit, result, report)

    def _hold_for_rate(self, rows: Sequence[_Row], report: DeliveryReport) -> None:
        with self.store.transaction():
            self.store.conn.executemany(
                "UPDATE alerts SET status = 'held', held_reason = 'rate', batch = NULL"
                " WHERE id = ?",
                [(r.id,) for r in rows],
            )
        report.held += len(rows)

    def _record(
        self, target: Target, unit: Sequence[_Row], result: SendResult, report: DeliveryReport
    ) -> None:
        now = self.clock()
        stamp = iso(now)
        with self.store.transaction():
            if result.ok:
                self.store.conn.executemany(
                    "UPDATE alerts SET status = 'sent', sent_at = ?, attempts = attempts + 1,"
                    " first_attempt_at = coalesce(first_attempt_at, ?), last_error = NULL"
                    " WHERE id = ?",
                    [(stamp, stamp, r.id) for r in unit],
                )
                self.store.conn.execute(
                    "INSERT INTO deliveries (target, sent_at, kind, alerts) VALUES (?, ?, ?, ?)",
                    (target.name, stamp, unit[0].kind if len(unit) == 1 else "combined", len(unit)),
                )
                self.store.conn.execute(
                    "UPDATE targets SET last_sent_at = ?, last_error = NULL WHERE name = ?",
                    (stamp, target.name),
                )
                report.messages += 1
                report.sent += len(unit)
                return
            error = result.error or "delivery failed"
            if result.retry_after:
                pause = iso(now + timedelta(seconds=result.retry_after))
                self.store.conn.execute(
                    "UPDATE targets SET paused_until = ? WHERE name = ?", (pause, target.name)
                )
            self.store.conn.execute(
                "UPDATE targets SET last_error = ? WHERE name = ?", (error, target.name)
            )
            for row in unit:
                attempts = row.attempts + 1
                first = parse_iso(row.first_attempt_at) or now
                delay = max(retry_delay(attempts), result.retry_after or 0.0)
                dead = (now - first).total_seconds() >= DEAD_AFTER
                self.store.conn.execute(
                    "UPDATE alerts SET status = ?, attempts = ?, first_attempt_at = ?,"
                    " next_attempt_at = ?, last_error = ? WHERE id = ?",
                    (
                        "dead" if dead else "failed",
                        attempts,
                        iso(first),
                        iso(now + timedelta(seconds=delay)),
                        error,
                        row.id,
                    ),
                )
                if dead:
                    report.dead += 1
                else:
                    report.failed += 1
        log.warning("alert target=%s rows=%d failed: %s", target.name, len(unit), error)

    # -- building messages -----------------------------------------------------------------

    def _rule_names(self, ids: Sequence[str]) -> tuple[str, ...]:
        return tuple(self.policy.rules[i].name if i in self.policy.rules else i for i in ids)

    def story_alert(self, item_id: int | None, rules: Sequence[str], priority: str) -> StoryAlert:
        row = self.store.conn.execute(
            "SELECT i.title, i.url, i.published_at, i.summary, i.content, s.name, i.story_id,"
            " i.source_id FROM items i JOIN sources s ON s.id = i.source_id WHERE i.id = ?",
            (item_id,),
        ).fetchone()
        if row is None:
            return StoryAlert(
                "(item no longer in the archive)",
                "",
                None,
                None,
                self._rule_names(rules),
                (),
                "",
                priority=priority,
            )
        title, url, published, summary, content, source, story_id, source_id = row
        marks = ",".join("?" * len(rules))
        terms: list[str] = []
        for (found,) in self.store.conn.execute(
            f"SELECT m.terms FROM matches m JOIN items i ON i.id = m.item_id"
            f" WHERE i.story_id = ? AND m.rule IN ({marks}) ORDER BY m.item_id = ? DESC, m.id",
            (story_id, *rules, item_id),
        ):
            terms.extend(json.loads(found or "[]"))
        also = [
            r[0]
            for r in self.store.conn.execute(
                "SELECT DISTINCT s.name FROM items i JOIN sources s ON s.id = i.source_id"
                " WHERE i.story_id = ? AND i.source_id != ? ORDER BY i.id",
                (story_id, source_id),
            )
        ]
        unique_terms = tuple(dict.fromkeys(terms))
        return StoryAlert(
            title=title or (summary or content or "")[:120] or "(untitled)",
            source=source,
            url=url,
            published_at=parse_iso(published),
            rules=self._rule_names(rules),
            terms=unique_terms,
            snippet=snippet(summary or content or "", unique_terms),
            also_reported_by=tuple(also),
            priority=priority,
        )

    def _notification(self, unit: Sequence[_Row]) -> Notification:
        first = unit[0]
        if len(unit) == 1 and first.kind == "story":
            story = self.story_alert(first.item_id, first.rules, first.priority)
            return Notification("story", story.title, (story,))
        if len(unit) == 1 and first.kind == "health":
            p = first.payload
            titles = {
                "failing": f"{p.get('source')} is failing",
                "stale": f"{p.get('source')} has gone quiet",
                "recovered": f"{p.get('source')} has recovered",
            }
            return Notification(
                "health",
                titles.get(str(p.get("event")), "Source health"),
                text=str(p.get("detail", "")),
            )
        stories: list[StoryAlert] = []
        notes: list[str] = []
        for row in unit:
            if row.kind == "story":
                stories.append(self.story_alert(row.item_id, row.rules, row.priority))
            elif row.kind == "summary":
                p = row.payload
                notes.append(
                    f"{p.get('source')}: {p.get('new')} items appeared at once (the feed"
                    " probably re-keyed its items); the matching ones are listed."
                )
                for item_id in list(p.get("items", []))[:50]:
                    stories.append(self.story_alert(int(item_id), row.rules, row.priority))
            elif row.kind == "health":
                notes.append(f"{row.payload.get('source')}: {row.payload.get('detail')}")
        batch = first.batch or ""
        count = f"{len(stories)} stor{'y' if len(stories) == 1 else 'ies'}"
        if batch.startswith("digest:"):
            rule_id = batch.split(":")[1]
            rule = self.policy.rules.get(rule_id)
            title = f"Digest: {rule.name if rule else rule_id} ({count})"
            kind = "digest"
        elif batch.startswith("quiet:"):
            title, kind = f"While you were away: {count}", "digest"
        elif batch.startswith("rate:"):
            title, kind = f"{count} held back by the rate limit", "summary"
        else:
            title, kind = (f"{unit[0].payload.get('source', 'Summary')}: {count}", "summary")
        return Notification(kind, title, tuple(stories), text="\n".join(notes))  # type: ignore[arg-type]


def snippet(text: str, terms: Sequence[str], size: int = SNIPPET) -> str:
    """A window of ``text`` around the first matched term (or its start)."""
    text = " ".join(text.split())
    if len(text) <= size:
        return text
    folded = text.casefold()
    positions = [p for p in (folded.find(t.casefold()) for t in terms if t) if p >= 0]
    start = max(0, min(positions) - size // 3) if positions else 0
    if start:
        space = text.find(" ", start)
        start = space + 1 if 0 <= space < start + 20 else start
    end = min(len(text), start + size)
    if end < len(text):
        space = text.rfind(" ", start, end)
        end = space if space > start + size // 2 else end
    return ("…" if start else "") + text[start:end] + ("…" if end < len(text) else "")


def _human(seconds: float) -> str:
    if seconds >= 2 * 86400:
        return f"{seconds / 86400:.0f} days"
    if seconds >= 2 * 3600:
        return f"{seconds / 3600:.0f} hours"
    return f"{max(1.0, seconds / 60):.0f} minutes"


def ledger_counts(store: Store) -> Mapping[str, int]:
    """Alert rows by status, for status reports."""
    return dict(
        store.conn.execute("SELECT status, count(*) FROM alerts GROUP BY status").fetchall()
    )
