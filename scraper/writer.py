"""The daemon's writer: the one thread that writes polls to the archive.

Poll jobs do the network half on the scheduler's poll threads (:meth:`Pipeline.poll`) and hand
the result here through a queue; this thread owns a :class:`~scraper.store.Store` and writes
each poll (:meth:`Pipeline.write`: one savepoint per poll). While polls keep arriving they share
one transaction for up to a second, committed as soon as the queue is empty (a cold start of
thousands of sources would otherwise spend its time in commits); then, after the commit, it
tells the daemon each source's new due time and whether there are alerts to deliver. It also
keeps the full-text index current and runs other writes the daemon hands it (:meth:`call`).

The queue holds at most :data:`QUEUE_SLOTS` polls: poll threads wait for room, so a slow disk
slows the fetching instead of filling the memory with parsed documents.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scraper.clock import parse_iso, utcnow
from scraper.logs import event
from scraper.pipeline import Pipeline, Polled, SourceOutcome
from scraper.store import SourceState, Store

log = logging.getLogger("scraper.daemon")

QUEUE_SLOTS = 64
WRITE_BATCH = 1.0  # seconds one shared transaction may stay open while polls keep coming
FTS_EVERY = 5.0  # seconds between full-text index updates while items arrive
IDLE_WAIT = 0.5  # seconds: how often an idle writer looks up (and shows it is alive)


@dataclass
class _Call:
    fn: Callable[[Store], Any]
    done: threading.Event = field(default_factory=threading.Event)
    result: Any = None
    error: BaseException | None = None


_STOP = object()


class Writer(threading.Thread):
    """``on_written(name, state)`` and ``on_alerts()`` are called on this thread after each
    commit: a poll was written (``state``: the source's new row; None if it was dropped), and
    alerts were queued."""

    def __init__(
        self,
        database: Path,
        pipeline: Pipeline,
        *,
        on_written: Callable[[str, SourceState | None], None],
        on_alerts: Callable[[], None],
    ) -> None:
        super().__init__(name="writer", daemon=True)
        self.database = database
        self.pipeline = pipeline
        self.on_written = on_written
        self.on_alerts = on_alerts
        self.slots = threading.BoundedSemaphore(QUEUE_SLOTS)
        self.ready = threading.Event()
        self.abandon = threading.Event()  # shutting down and out of time: drop queued polls
        self.error: BaseException | None = None
        self.tick = time.monotonic()  # the loop came round (at least every IDLE_WAIT)
        self.busy_since: float | None = None  # handling one command since
        self.last_write = time.monotonic()
        self.failing_since: float | None = None  # writes have failed (the database) since
        self.polls = 0
        self.failed = 0
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._written: list[tuple[str, SourceState | None]] = []
        self._kick = False
        self._unindexed = False
        self._last_fts = time.monotonic()
        self._batch_started = 0.0

    # -- called from other threads ------------------------------------------------------------

    def put(self, polled: Polled) -> None:
        """Queue a poll; the caller holds one of :attr:`slots` (released once it is written)."""
        self._queue.put(polled)

    def call(self, fn: Callable[[Store], Any], *, wait: float | None = None) -> Any:
        """Run ``fn(store)`` on the writer thread, between polls. With ``wait``, block up to
        that many seconds for its result (re-raising its error); TimeoutError after that."""
        command = _Call(fn)
        self._queue.put(command)
        if wait is None:
            return None
        if not command.done.wait(wait):
            raise TimeoutError("the writer did not answer in time")
        if command.error is not None:
            raise command.error
        return command.result

    def kick_after_commit(self) -> None:
        """(On the writer thread, from a :meth:`call`.) Deliver once this is committed."""
        self._kick = True

    def stop(self) -> None:
        """Write what is queued, commit, close. Polls queued after this are not written."""
        self._queue.put(_STOP)

    # -- the thread -----------------------------------------------------------------------------

    def run(self) -> None:
        try:
            store = Store.open(self.database, migrate=False)
        except BaseException as exc:
            self.error = exc
            self.ready.set()
            return
        self.ready.set()
        try:
            self._loop(store)
        except BaseException as exc:
            self.error = exc
            log.exception("the writer failed")
        finally:
            self._flush(store)
            with contextlib.suppress(Exception):
                store.close()

    def _loop(self, store: Store) -> None:
        while True:
            self.tick = time.monotonic()
            try:
                command = self._queue.get(timeout=IDLE_WAIT)
            except queue.Empty:
                self._flush(store)
                self._index(store)
                continue
            if command is _STOP:
                return
            if not store.conn.in_transaction:
                try:
                    store.begin()
                except sqlite3.Error as exc:  # locked for long: each write tries on its own
                    event(log, logging.ERROR, "begin-failed", error=str(exc))
                self._batch_started = time.monotonic()
            self.busy_since = time.monotonic()
            try:
                if isinstance(command, _Call):
                    self._run_call(store, command)
                else:
                    self._write(store, command)
            finally:
                self.busy_since = None
            if self._queue.empty() or time.monotonic() - self._batch_started >= WRITE_BATCH:
                self._flush(store)
                self._index(store)

    def _run_call(self, store: Store, command: _Call) -> None:
        try:
            command.result = command.fn(store)
        except BaseException as exc:
            command.error = exc
            log.exception("a write on the writer thread failed")
        finally:
            command.done.set()

    def _write(self, store: Store, polled: Polled) -> None:
        name = polled.source.name
        try:
            if self.abandon.is_set():
                self._written.append((name, None))  # not written: polled again after a start
                return
            started = time.monotonic()
            try:
                outcome = self.pipeline.write(store, polled)
                state = store.source_state(name)
            except Exception as exc:  # the database itself fails (disk full, locked for long)
                self.failing_since = self.failing_since or time.monotonic()
                self._written.append((name, None))  # polled again in a minute
                event(log, logging.ERROR, "write-failed", source=name, error=f"{exc}")
                return
            self.failing_since = None
            self._written.append((name, state))
            self.polls += 1
            self.failed += not outcome.ok
            self.last_write = time.monotonic()
            self._unindexed |= outcome.items_new > 0
            self._kick |= outcome.matches > 0
            log_poll(polled, outcome, state, (time.monotonic() - started) * 1000)
        finally:
            self.slots.release()

    def _flush(self, store: Store) -> None:
        """Commit; then tell the daemon what was written (due times, alerts to deliver)."""
        if store.conn.in_transaction:
            try:
                store.commit()
            except sqlite3.Error as exc:  # the batch is lost: its sources are polled again
                event(log, logging.ERROR, "commit-failed", error=str(exc))
                with contextlib.suppress(sqlite3.Error):
                    store.conn.execute("ROLLBACK")
                self._written = [(name, None) for name, _ in self._written]
                self._kick = False
        written, self._written = self._written, []
        for name, state in written:
            try:
                self.on_written(name, state)
            except Exception:
                log.exception("could not schedule the next poll of %s", name)
        if self._kick:
            self._kick = False
            try:
                self.on_alerts()
            except Exception:
                log.exception("could not start a delivery")

    def _index(self, store: Store) -> None:
        if self._unindexed and time.monotonic() - self._last_fts >= FTS_EVERY:
            self._unindexed = False
            self._last_fts = time.monotonic()
            try:
                store.index_fts()
            except sqlite3.Error as exc:
                event(log, logging.ERROR, "fts-failed", error=str(exc))


def log_poll(
    polled: Polled, outcome: SourceOutcome, state: SourceState | None, write_ms: float
) -> None:
    """The one line a poll logs."""
    last = polled.fetches[-1] if polled.fetches else None
    due = parse_iso(state.next_fetch_at) if state else None
    following = round((due - utcnow()).total_seconds()) if due else None
    fields: dict[str, object] = {
        "source": outcome.source,
        "status": outcome.status,
        "ms": last.duration_ms if last else None,
        "next": f"{following}s" if following is not None else None,
    }
    if outcome.ok:
        fields |= {
            "unchanged": True if outcome.unchanged else None,
            "new": outcome.items_new,
            "updated": outcome.items_updated or None,
            "matches": outcome.matches or None,
            "write_ms": round(write_ms, 1),
        }
        event(log, logging.INFO, "poll", **fields)
    else:
        fields |= {"failures": state.consecutive_failures if state else None}
        fields["error"] = outcome.error
        event(log, logging.WARNING, "poll", **fields)
