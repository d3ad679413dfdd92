"""One source: fetch → parse → store → match (→ alerts); and one pass over many sources.

The network half of a poll (:meth:`Pipeline.poll`) runs on worker threads and touches no
database; the writing half (:meth:`Pipeline.write`) runs on the thread that owns the Store, one
transaction per source. A failure of one source is recorded on its own rows and never stops the
others.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Protocol

from scraper.clock import Clock, iso, parse_iso, utcnow
from scraper.fetch import Fetcher, backoff_delay
from scraper.models import FetchResult, Item, Match, ParsedFeed, Source
from scraper.parse import canonical_url
from scraper.store import SourceState, Store, StoredItem, body_hash

log = logging.getLogger(__name__)


class Parser(Protocol):
    def parse(
        self,
        body: bytes,
        *,
        url: str,
        content_type: str | None = None,
        selectors: Any = None,
        source: tuple[str, tuple[str, ...]] | None = None,
    ) -> ParsedFeed: ...


class ItemMatcher(Protocol):
    def match(
        self, fields: dict[str, str], *, source: str, source_tags: Sequence[str] = ()
    ) -> list[Match]: ...


class AfterStore(Protocol):
    """The step after new items are stored, inside the same transaction (alerts hook here)."""

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
    ) -> int: ...


@dataclass(slots=True)
class Polled:
    """The network half of a poll: every fetch attempt and what the parser made of the body."""

    source: Source
    state: SourceState
    started_at: datetime
    fetches: list[FetchResult] = field(default_factory=list)
    parsed: ParsedFeed | None = None
    unchanged: bool = False  # 304, or the same body as last time
    new_body_hash: str | None = None
    feed_url: str | None = None  # discovered through <link rel="alternate">
    error: str | None = None  # an unexpected error (a bug), recorded as status "error"


@dataclass(slots=True)
class SourceOutcome:
    """What one source's poll came to, for the pass summary."""

    source: str
    ok: bool
    status: str
    error: str | None = None
    items_new: int = 0
    items_updated: int = 0
    matches: int = 0
    unchanged: bool = False
    new_items: list[tuple[Item, list[Match]]] = field(default_factory=list)  # dry run


@dataclass(slots=True)
class PassSummary:
    outcomes: list[SourceOutcome]
    duration: float
    dry_run: bool = False
    rule_errors: int = 0
    alerts_sent: int = 0
    alerts_failed: int = 0
    alerts_held: int = 0

    @property
    def ok(self) -> list[SourceOutcome]:
        return [o for o in self.outcomes if o.ok]

    @property
    def failed(self) -> list[SourceOutcome]:
        return [o for o in self.outcomes if not o.ok]

    @property
    def items_new(self) -> int:
        return sum(o.items_new for o in self.outcomes)

    @property
    def items_updated(self) -> int:
        return sum(o.items_updated for o in self.outcomes)

    @property
    def matches(self) -> int:
        return sum(o.matches for o in self.outcomes)

    @property
    def needs_attention(self) -> bool:
        """Exit 1: no source could be fetched at all, or a rule file was skipped."""
        return bool(self.outcomes and not self.ok) or self.rule_errors > 0


def next_fetch_time(
    now: datetime,
    source: Source,
    *,
    failures: int,
    retry_after: float | None,
    rng: random.Random,
) -> datetime:
    """When to poll a source next: its interval with jitter after a success; exponential
    backoff (capped, never disabling) after failures; never before a Retry-After."""
    if failures:
        delay = backoff_delay(failures, source.interval)
    else:
        spread = source.interval * source.jitter
        delay = source.interval + rng.uniform(-spread, spread)
    if retry_after is not None:
        delay = max(delay, retry_after)
    return now + timedelta(seconds=max(1.0, delay))


class Pipeline:
    """Polls sources and writes what they bring. Build once per pass (or per daemon)."""

    def __init__(
        self,
        *,
        fetcher: Fetcher,
        parser: Parser,
        matcher: ItemMatcher | None = None,
        after_store: AfterStore | None = None,
        story_window: float = 48 * 3600.0,
        clock: Clock = utcnow,
        rng: random.Random | None = None,
    ) -> None:
        self.fetcher = fetcher
        self.parser = parser
        self.matcher = matcher
        self.after_store = after_store
        self.story_window = story_window
        self.clock = clock
        self.rng = rng or random.Random()
        self._rng_lock = threading.Lock()

    # -- the network half (worker threads; no database) ------------------------------------

    def poll(self, source: Source, state: SourceState, *, conditional: bool = True) -> Polled:
        polled = Polled(source=source, state=state, started_at=self.clock())
        try:
            self._poll(polled, conditional=conditional)
        except Exception as exc:  # a bug must not take the pass down: record it
            log.exception("unexpected error polling %s", source.name)
            polled.error = f"{type(exc).__name__}: {exc}"
        return polled

    def _poll(self, polled: Polled, *, conditional: bool) -> None:
        source, state = polled.source, polled.state
        url = state.feed_url or source.url
        result = self.fetcher.fetch(
            replace(source, url=url),
            etag=state.etag if conditional else None,
            last_modified=state.last_modified if conditional else None,
        )
        polled.fetches.append(result)
        if result.not_modified:
            polled.unchanged = True
            return
        if not result.ok or result.body is None:
            return
        digest = body_hash(result.body)
        polled.new_body_hash = digest
        if conditional and digest == state.body_hash:
            polled.unchanged = True
            return
        who = (source.name, source.tags)
        parsed = self.parser.parse(
            result.body,
            url=result.final_url,
            content_type=result.content_type,
            selectors=source.selectors if source.kind == "html" else None,
            source=who,
        )
        if parsed.feed_url and source.kind == "feed" and not state.feed_url:
            # An HTML page that names its feed: use the feed, now and from now on.
            polled.feed_url = parsed.feed_url
            result = self.fetcher.fetch(replace(source, url=parsed.feed_url))
            polled.fetches.append(result)
            if not result.ok or result.body is None:
                polled.parsed = None
                return
            polled.new_body_hash = body_hash(result.body)
            parsed = self.parser.parse(
                result.body, url=result.final_url, content_type=result.content_type, source=who
            )
            if parsed.feed_url:
                parsed = replace(parsed, feed_url=None, error="feed link leads to another page")
        polled.parsed = parsed
        polled.fetches = [replace(f, body=None) for f in polled.fetches]  # parsed: free it

    # -- the writing half (the Store's thread; one transaction) ----------------------------

    def match(self, source: Source, item: Item) -> list[Match]:
        if self.matcher is None:
            return []
        return self.matcher.match(item.fields(), source=source.name, source_tags=source.tags)

    def write(self, store: Store, polled: Polled) -> SourceOutcome:
        now = self.clock()
        try:
            with store.transaction():
                return self._write(store, polled, now)
        except Exception as exc:
            log.exception("could not store the poll of %s", polled.source.name)
            error = f"{type(exc).__name__}: {exc}"
            with store.transaction():
                store.record_fetch(
                    polled.state.id,
                    url=polled.source.shown_url,
                    started_at=polled.started_at,
                    duration_ms=0,
                    status="store",
                    nbytes=0,
                    error=error,
                )
                self._failed(store, polled, now, "store", error, None)
            return SourceOutcome(polled.source.name, False, "store", error)

    def _failed(
        self,
        store: Store,
        polled: Polled,
        now: datetime,
        status: str,
        error: str | None,
        retry_after: float | None,
    ) -> None:
        failures = polled.state.consecutive_failures + 1
        with self._rng_lock:
            due = next_fetch_time(
                now, polled.source, failures=failures, retry_after=retry_after, rng=self.rng
            )
        store.update_source(
            polled.state.id,
            last_fetch_at=iso(now),
            consecutive_failures=failures,
            next_fetch_at=iso(due),
            retry_after_until=iso(now + timedelta(seconds=retry_after)) if retry_after else None,
            last_status=status,
            last_error=error,
        )

    def _write(self, store: Store, polled: Polled, now: datetime) -> SourceOutcome:
        source, state = polled.source, polled.state
        name = source.name
        last = polled.fetches[-1] if polled.fetches else None
        parsed = polled.parsed

        # Decide the outcome: failure, unchanged, or items.
        status = last.status if last else "error"
        error = polled.error or (last.error if last else "no fetch attempted")
        failed = polled.error is not None or last is None
        if not failed and not polled.unchanged:
            if not last or not last.ok:
                failed = True
            elif parsed is None or (parsed.error and not parsed.items):
                failed, status = True, "parse"
                error = (parsed.error if parsed else None) or "no feed found"
            elif parsed.feed_url:
                failed, status, error = True, "parse", "the page names a feed that was not used"
            elif parsed.format == "html" and not parsed.items and source.kind == "feed":
                failed, status, error = True, "parse", "an HTML page with no feed link"

        stored: list[StoredItem] = []
        matches: dict[int, list[Match]] = {}
        if not failed and parsed is not None and not polled.unchanged:
            stored = store.upsert_items(
                state.id,
                parsed.items,
                now=now,
                story_window=self.story_window,
                canonical=canonical_url,
            )
            premade = (
                {item.key: list(m) for item, m in zip(parsed.items, parsed.matches, strict=True)}
                if parsed.matches is not None
                else None
            )
            for entry in stored:
                if entry.is_new or entry.title_changed:
                    found = (
                        premade.get(entry.item.key, [])
                        if premade is not None
                        else self.match(source, entry.item)
                    )
                    if not entry.is_new:  # an edit: refresh what it matched
                        store.record_matches(entry.id, found, now)
                    if found:
                        matches[entry.id] = found
            store.insert_matches(
                [
                    (entry.id, matches[entry.id])
                    for entry in stored
                    if entry.is_new and entry.id in matches
                ],
                now,
            )
        items_new = sum(1 for s in stored if s.is_new)
        items_updated = len(stored) - items_new

        for i, result in enumerate(polled.fetches):
            is_last = i == len(polled.fetches) - 1
            row_status = status if is_last and failed and status == "parse" else result.status
            row_error = result.error
            if is_last and parsed is not None and parsed.error:
                row_error = parsed.error if failed else f"recovered from: {parsed.error}"
            store.record_fetch(
                state.id,
                url=source.display_url or result.final_url or result.url,
                started_at=polled.started_at,
                duration_ms=result.duration_ms,
                status=row_status,
                nbytes=result.bytes,
                items_new=items_new if is_last else 0,
                items_updated=items_updated if is_last else 0,
                error=row_error,
            )
        if polled.error and not polled.fetches:
            store.record_fetch(
                state.id,
                url=source.shown_url,
                started_at=polled.started_at,
                duration_ms=0,
                status="error",
                nbytes=0,
                error=polled.error,
            )
            status = "error"

        if failed:
            self._failed(store, polled, now, status, error, last.retry_after if last else None)
            return SourceOutcome(name, False, status, error)

        with self._rng_lock:
            due = next_fetch_time(now, source, failures=0, retry_after=None, rng=self.rng)
        values: dict[str, object] = {
            "last_fetch_at": iso(now),
            "last_success_at": iso(now),
            "consecutive_failures": 0,
            "next_fetch_at": iso(due),
            "retry_after_until": None,
            "last_status": status,
            "last_error": None,
        }
        if state.first_success_at is None:
            values["first_success_at"] = iso(now)
        if last is not None and last.ok:
            values["etag"] = last.etag
            values["last_modified"] = last.last_modified
            values["body_hash"] = polled.new_body_hash
        if polled.feed_url:
            values["feed_url"] = polled.feed_url
        if parsed is not None and parsed.title:
            values["title"] = parsed.title
        if items_new:
            newest = max((s.item.published_at or now for s in stored if s.is_new), default=now)
            values["last_item_at"] = iso(min(newest, now))
        store.update_source(state.id, **values)

        if self.after_store is not None and stored:
            self.after_store(
                store,
                source,
                state,
                stored,
                matches,
                now,
                document_items=len(parsed.items) if parsed is not None else None,
            )
        return SourceOutcome(
            name,
            True,
            status,
            None,
            items_new=items_new,
            items_updated=items_updated,
            matches=sum(len(m) for m in matches.values()),
            unchanged=polled.unchanged,
        )

    def dry_run(self, polled: Polled, known: set[str]) -> SourceOutcome:
        """What a poll would archive and match, written nowhere."""
        name = polled.source.name
        last = polled.fetches[-1] if polled.fetches else None
        parsed = polled.parsed
        if polled.error or last is None or not last.ok or parsed is None:
            error = polled.error or (last.error if last else None) or "nothing parsed"
            return SourceOutcome(name, False, last.status if last else "error", error)
        if parsed.error and not parsed.items:
            return SourceOutcome(name, False, "parse", parsed.error)
        new = [item for item in parsed.items if item.key not in known]
        listed = [(item, self.match(polled.source, item)) for item in new]
        return SourceOutcome(
            name,
            True,
            last.status,
            parsed.error,
            items_new=len(new),
            matches=sum(len(m) for _, m in listed),
            new_items=listed,
        )

    # -- a pass -------------------------------------------------------------------------------

    def run_pass(
        self,
        store: Store | None,
        sources: Sequence[Source],
        *,
        workers: int = 16,
        dry_run: bool = False,
        due_only: bool = False,
        progress: Callable[[SourceOutcome], None] | None = None,
        on_start: Callable[[int], None] | None = None,
    ) -> PassSummary:
        """Poll every given source once. ``store`` is written on this thread; with
        ``dry_run`` it is only read (and may be None when there is no archive yet)."""
        started = time.monotonic()
        now = self.clock()
        states = store.source_states() if store is not None else {}
        todo: list[tuple[Source, SourceState]] = []
        for source in sources:
            state = states.get(source.name) or SourceState(
                0, source.name, source.url, None, None, None, None, 0, None, None, None
            )
            if due_only:
                due = parse_iso(state.next_fetch_at)
                if due is not None and due > now:
                    continue
            todo.append((source, state))

        if on_start is not None:
            on_start(len(todo))
        outcomes: list[SourceOutcome] = []
        indexed = time.monotonic()
        # Workers hand finished polls over a queue, so each result is written and dropped
        # at once (holding 1,000 parsed polls until the end would cost ~150 MB).
        # At most ``workers`` polls wait for the writer: when it falls behind, fetching
        # pauses instead of piling parsed documents up in memory.
        done: queue.Queue[Polled] = queue.Queue()
        backlog = threading.BoundedSemaphore(max(1, workers))

        def work(source: Source, state: SourceState) -> None:
            backlog.acquire()
            done.put(self.poll(source, state, conditional=not dry_run))

        with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="poll") as pool:
            for source, state in todo:
                pool.submit(work, source, state)
            batch_started = time.monotonic()
            for _ in range(len(todo)):
                if store is not None and not dry_run and done.empty():
                    store.commit()  # caught up: make what we have durable
                polled = done.get()
                if store is not None and not dry_run:
                    if not store.conn.in_transaction:
                        batch_started = time.monotonic()
                    elif time.monotonic() - batch_started > 1.0:
                        store.commit()
                        batch_started = time.monotonic()
                    store.begin()
                if dry_run:
                    known = (
                        set(store.known_items(polled.state.id))
                        if store is not None and polled.state.id
                        else set()
                    )
                    outcome = self.dry_run(polled, known)
                else:
                    assert store is not None
                    outcome = self.write(store, polled)
                del polled
                backlog.release()
                outcomes.append(outcome)
                if progress is not None:
                    progress(outcome)
                if store is not None and not dry_run and time.monotonic() - indexed > 5.0:
                    store.commit()
                    store.index_fts()  # keep search current during a long pass
                    indexed = time.monotonic()
            if store is not None and not dry_run:
                store.commit()
        if store is not None and not dry_run:
            store.index_fts()
        order = {source.name: i for i, (source, _) in enumerate(todo)}
        outcomes.sort(key=lambda o: order.get(o.source, 0))
        return PassSummary(outcomes, time.monotonic() - started, dry_run=dry_run)
