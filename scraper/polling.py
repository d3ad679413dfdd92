"""The daemon's poll jobs: one APScheduler job per enabled source.

A job does the network half of a poll on a ``poll`` thread (:meth:`Pipeline.poll`: fetch and
parse, no database) and hands the result to the writer, waiting for room in its queue. After
the writer has committed the poll, :meth:`Polls.written` moves the job to the due time the
write stored in ``sources.next_fetch_at`` (interval with jitter, or backoff, or Retry-After).
The job's own trigger is only a fallback interval, so a source whose result got lost is still
polled; :meth:`Polls.watchdog` and the scheduler's listener (:meth:`Polls.trouble`) make sure
that no source is ever left without a job.
"""

from __future__ import annotations

import contextlib
import logging
import random
import threading
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta

from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers.base import BaseScheduler
from apscheduler.triggers.interval import IntervalTrigger

from scraper.clock import parse_iso
from scraper.logs import event
from scraper.models import Source
from scraper.pipeline import Pipeline
from scraper.schedule import POLL_GRACE, first_runs, poll_job_id, source_of
from scraper.store import SourceState
from scraper.writer import Writer

log = logging.getLogger("scraper.daemon")

RETRY_LOST = 60.0  # seconds until a poll whose result was dropped is tried again


class Polls:
    def __init__(
        self,
        sources: Sequence[Source],
        states: Mapping[str, SourceState],
        *,
        pipeline: Pipeline,
        stop: threading.Event,
    ) -> None:
        self.sources: dict[str, Source] = {s.name: s for s in sources if s.enabled}
        self.states: dict[str, SourceState] = dict(states)
        self.in_flight: dict[str, float] = {}  # source -> time.monotonic() its poll began
        self.pipeline = pipeline
        self.stop = stop
        self.scheduler: BaseScheduler | None = None
        self.writer: Writer | None = None
        self._rng = random.Random()

    def start(self, scheduler: BaseScheduler, writer: Writer) -> None:
        """Add a job for every source: at its stored due time, or soon (spread out) if it is
        overdue or new."""
        self.scheduler, self.writer = scheduler, writer
        for name, when in self._first_runs(list(self.sources.values())).items():
            self._add(self.sources[name], when)

    def _first_runs(self, sources: list[Source]) -> dict[str, datetime]:
        due: dict[str, datetime | None] = {}
        failures: dict[str, int] = {}
        for source in sources:
            state = self.states.get(source.name)
            due[source.name] = parse_iso(state.next_fetch_at) if state else None
            failures[source.name] = state.consecutive_failures if state else 0
        return first_runs(sources, due, datetime.now(UTC), failures=failures)

    def _add(self, source: Source, when: datetime) -> None:
        assert self.scheduler is not None
        fallback = source.interval * (1 + source.jitter) + source.timeout + RETRY_LOST
        self.scheduler.add_job(
            self.job,
            IntervalTrigger(seconds=fallback),
            args=[source.name],
            id=poll_job_id(source.name),
            name=f"poll {source.name}",
            executor="poll",
            next_run_time=when,
            misfire_grace_time=POLL_GRACE,
            replace_existing=True,
        )

    def job(self, name: str) -> None:
        """The network half of one poll, on a poll thread; the writer does the rest."""
        source, state, writer = self.sources.get(name), self.states.get(name), self.writer
        if self.stop.is_set() or source is None or state is None or writer is None:
            return
        if name in self.in_flight:
            return
        self.in_flight[name] = time.monotonic()
        handed = False
        try:
            polled = self.pipeline.poll(source, state)  # records its own failures
            while not writer.slots.acquire(timeout=1.0):
                if self.stop.is_set():
                    return
            writer.put(polled)
            handed = True
        finally:
            if not handed:
                self.in_flight.pop(name, None)
                self.schedule(name, datetime.now(UTC) + timedelta(seconds=RETRY_LOST))

    def written(self, name: str, state: SourceState | None) -> None:
        """The writer committed a poll (on the writer thread): the next one is due when the
        write said (``state`` None: the poll was dropped while stopping)."""
        if state is not None:
            self.states[name] = state
        self.in_flight.pop(name, None)
        due = parse_iso(state.next_fetch_at) if state is not None else None
        self.schedule(name, due or datetime.now(UTC) + timedelta(seconds=RETRY_LOST))

    def schedule(self, name: str, when: datetime) -> None:
        if self.stop.is_set() or self.scheduler is None:
            return
        source = self.sources.get(name)
        try:
            if source is None:  # removed from the configuration meanwhile
                with contextlib.suppress(JobLookupError):
                    self.scheduler.remove_job(poll_job_id(name))
                return
            try:
                self.scheduler.modify_job(poll_job_id(name), next_run_time=when)
            except JobLookupError:
                self._add(source, when)
        except Exception:
            if not self.stop.is_set():  # else: the scheduler is shutting down
                raise

    def soon(self, name: str) -> datetime:
        """A moment within the next minute (or the source's interval), spread at random."""
        source = self.sources.get(name)
        window = min(source.interval if source else 60.0, 60.0)
        return datetime.now(UTC) + timedelta(seconds=self._rng.uniform(0, window))

    def trouble(self, job_id: str) -> None:
        """A poll job raised or missed its time (the listener's last resort): poll it again
        soon, spread out."""
        name = source_of(job_id)
        if name is not None and not self.stop.is_set():
            self.in_flight.pop(name, None)
            self.schedule(name, self.soon(name))

    def apply(
        self, sources: Sequence[Source], states: Mapping[str, SourceState]
    ) -> tuple[int, int, int]:
        """A new configuration's sources (states synced already): jobs for the added ones,
        none for the removed or disabled ones; a changed address is polled soon, a shortened
        interval takes effect at once. Returns (added, removed, changed)."""
        assert self.scheduler is not None
        before, after = self.sources, {s.name: s for s in sources if s.enabled}
        for name, state in states.items():  # the writer keeps the others' current
            was, source = before.get(name), after.get(name)
            if was is None or source is None or was.url != source.url or was.kind != source.kind:
                self.states[name] = state
        self.sources = after
        removed = set(before) - set(after)
        for name in removed:
            with contextlib.suppress(JobLookupError):
                self.scheduler.remove_job(poll_job_id(name))
        added = [after[name] for name in after if name not in before]
        for name, when in self._first_runs(added).items():
            self._add(after[name], when)
        changed = [name for name in after if name in before and after[name] != before[name]]
        for name in changed:
            was, source = before[name], after[name]
            if (was.url, was.kind, was.selectors) != (source.url, source.kind, source.selectors):
                self.schedule(name, self.soon(name))
                continue
            job = self.scheduler.get_job(poll_job_id(name))
            if job is not None and job.next_run_time is not None:
                latest = datetime.now(UTC) + timedelta(
                    seconds=source.interval * (1 + source.jitter)
                )
                self.schedule(name, min(job.next_run_time, latest))
        return len(added), len(removed), len(changed)

    def watchdog(self, parse_timeout: float) -> None:
        """Every source has a job, and no poll is lost between its thread and the writer."""
        assert self.scheduler is not None
        now = time.monotonic()
        for name, since in list(self.in_flight.items()):
            source = self.sources.get(name)
            limit = 2 * (source.timeout if source else 60.0) + parse_timeout + 120.0
            if now - since > limit:
                event(log, logging.WARNING, "poll-lost", source=name, seconds=round(now - since))
                self.in_flight.pop(name, None)
                self.schedule(name, self.soon(name))
        jobs = {job.id for job in self.scheduler.get_jobs()}
        for name, source in list(self.sources.items()):
            if poll_job_id(name) not in jobs and name not in self.in_flight:
                event(log, logging.WARNING, "poll-unscheduled", source=name)
                self._add(source, self.soon(name))

    def stalled(self, parse_timeout: float, last_write: float) -> float | None:
        """Seconds since a poll last finished, if polls are running but none has finished for
        much longer than any fetch may take; else None."""
        now = time.monotonic()
        timeouts = [s.timeout for s in self.sources.values()] or [30.0]
        limit = max(300.0, 3 * max(timeouts) + parse_timeout)
        oldest = min(self.in_flight.values(), default=now)
        if now - oldest > limit and now - last_write > limit:
            return now - last_write
        return None
