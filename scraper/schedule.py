"""APScheduler 3 for the daemon: executors, triggers, first run times and the job listener.

The daemon (:mod:`scraper.daemon`) builds one :class:`~apscheduler.schedulers.background.
BackgroundScheduler` with three executors, so that no kind of work can starve another:

    poll      settings.concurrency threads: the network half of polls (fetch, parse; no DB)
    default   two threads: heartbeat, rule-file watch, watchdog
    courier   one thread: delivery, retries, digest and quiet-hours releases, health checks
              (one thread, so two deliveries never run at once and send something twice)

Their threads are daemon threads: a fetch stuck on a dead server cannot hold up the exit on
SIGTERM (``concurrent.futures`` would join it at interpreter exit).

Every job has ``coalesce=True`` (runs missed while busy or asleep run once), ``max_instances=1``
(the delivery job 2: a run may queue behind the running one) and a misfire grace time: a job
later than that is skipped and reported, and a poll job is then rescheduled soon, spread out
(:class:`JobListener`). A poll job runs once per due time: its trigger is only a fallback
interval, and after each poll the writer moves the job to the ``sources.next_fetch_at`` it
computed (jitter, backoff and Retry-After included).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from apscheduler.events import (
    EVENT_JOB_ERROR,
    EVENT_JOB_MAX_INSTANCES,
    EVENT_JOB_MISSED,
    JobEvent,
    JobExecutionEvent,
)
from apscheduler.executors.pool import BasePoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.combining import OrTrigger
from apscheduler.triggers.cron import CronTrigger

from scraper.logs import event
from scraper.models import Source
from scraper.rules.cron import parse_cron

log = logging.getLogger(__name__)

POLL_PREFIX = "poll:"
MISFIRE_GRACE = 60  # seconds: a housekeeping job later than this is skipped (and reported)
POLL_GRACE = 300  # polls queue behind a busy pool at a cold start; later than this: respread
STARTUP_RATE = 20.0  # overdue sources started per second at most when the daemon starts
STARTUP_SPREAD = 60.0  # ... and over at most this many seconds (or the source's interval)
_WEEKDAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")  # standard cron: 0 = Sunday


def poll_job_id(name: str) -> str:
    return POLL_PREFIX + name


def source_of(job_id: str) -> str | None:
    return job_id[len(POLL_PREFIX) :] if job_id.startswith(POLL_PREFIX) else None


# --- executors -----------------------------------------------------------------------------


class DaemonThreadPool:
    """The part of ``concurrent.futures.ThreadPoolExecutor`` that APScheduler uses, on daemon
    threads that are never joined at exit. Threads start as work arrives, up to ``workers``."""

    def __init__(self, workers: int, name: str) -> None:
        self._workers = max(1, workers)
        self._name = name
        self._work: queue.SimpleQueue[tuple[Future[Any], Callable[..., Any], tuple[Any, ...]]] = (
            queue.SimpleQueue()
        )
        self._threads: list[threading.Thread] = []
        self._idle = 0
        self._lock = threading.Lock()
        self._shutdown = False
        self.busy = 0  # jobs running now

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future[Any]:
        future: Future[Any] = Future()
        with self._lock:
            if self._shutdown:
                raise RuntimeError("the pool is shut down")
            self._work.put((future, fn, args))
            if self._idle < self._work.qsize() and len(self._threads) < self._workers:
                thread = threading.Thread(
                    target=self._run, name=f"{self._name}-{len(self._threads)}", daemon=True
                )
                self._threads.append(thread)
                thread.start()
        return future

    def _run(self) -> None:
        while True:
            with self._lock:
                self._idle += 1
            future, fn, args = self._work.get()
            with self._lock:
                self._idle -= 1
            if not future.set_running_or_notify_cancel():
                continue
            with self._lock:
                self.busy += 1
            try:
                result = fn(*args)
            except BaseException as exc:
                future.set_exception(exc)
            else:
                future.set_result(result)
            finally:
                with self._lock:
                    self.busy -= 1
                del future, fn, args

    def shutdown(self, wait: bool = True) -> None:
        """Start nothing more; jobs running now go on (``wait`` is ignored: never joins)."""
        with self._lock:
            self._shutdown = True
        while True:  # drop what has not started (cancelling would call APScheduler back)
            try:
                self._work.get_nowait()
            except queue.Empty:
                break


class DaemonPoolExecutor(BasePoolExecutor):  # type: ignore[misc]
    """An APScheduler executor over a :class:`DaemonThreadPool`."""

    def __init__(self, workers: int, name: str) -> None:
        self.pool = DaemonThreadPool(workers, name)
        super().__init__(self.pool)


# --- triggers ------------------------------------------------------------------------------


def _field(values: frozenset[int], low: int, high: int) -> str:
    if values == frozenset(range(low, high + 1)):
        return "*"
    return ",".join(str(v) for v in sorted(values))


def cron_trigger(text: str, timezone: ZoneInfo | str) -> BaseTrigger:
    """An APScheduler trigger for a standard five-field cron string.

    Not ``CronTrigger.from_crontab``: APScheduler 3 numbers weekdays from Monday (0 = Monday),
    cron from Sunday (0 and 7 = Sunday), so weekdays are passed by name. And as in cron (and
    unlike APScheduler, which requires both), a restricted day of the month and a restricted
    weekday fire on a day matching either."""
    cron = parse_cron(text)  # raises CronError; rule files are validated before this
    tz = ZoneInfo(timezone) if isinstance(timezone, str) else timezone
    common = {
        "minute": _field(cron.minutes, 0, 59),
        "hour": _field(cron.hours, 0, 23),
        "month": _field(cron.months, 1, 12),
        "timezone": tz,
    }
    days = _field(cron.days, 1, 31)
    weekdays = (
        "*"
        if cron.weekdays == frozenset(range(7))
        else ",".join(_WEEKDAYS[d] for d in sorted(cron.weekdays))
    )
    if cron.any_day or cron.any_weekday:
        return CronTrigger(day=days, day_of_week=weekdays, **common)
    return OrTrigger(
        [
            CronTrigger(day=days, day_of_week="*", **common),
            CronTrigger(day="*", day_of_week=weekdays, **common),
        ]
    )


def daily_trigger(at: time, timezone: ZoneInfo | str) -> CronTrigger:
    """Every day at a local wall-clock time (the end of quiet hours)."""
    tz = ZoneInfo(timezone) if isinstance(timezone, str) else timezone
    return CronTrigger(hour=at.hour, minute=at.minute, second=at.second, timezone=tz)


# --- when each source is polled first --------------------------------------------------------


def first_runs(
    sources: Sequence[Source],
    due: Mapping[str, datetime | None],
    now: datetime,
    *,
    failures: Mapping[str, int] | None = None,
    spread: float = STARTUP_SPREAD,
    rate: float = STARTUP_RATE,
) -> dict[str, datetime]:
    """When to poll each source first after a start (or after it was added).

    A source whose ``sources.next_fetch_at`` is still ahead keeps it: a restart does not
    refetch everything. One never fetched, or overdue (the daemon was down), is fetched once,
    soon: the overdue ones, most overdue first, are spread evenly over at most ``spread``
    seconds (or the source's own interval, if shorter), at most ``rate`` a second. A due time
    further ahead than one interval (plus jitter) of a healthy source is brought forward: its
    interval was shortened while the daemon was down."""
    failures = failures or {}
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    overdue: list[tuple[datetime, int, Source]] = []
    out: dict[str, datetime] = {}
    for index, source in enumerate(sources):
        when = due.get(source.name)
        if when is None or when <= now:
            overdue.append((when or epoch, index, source))
            continue
        if not failures.get(source.name):
            latest = now + timedelta(seconds=source.interval * (1 + source.jitter))
            when = min(when, latest)
        out[source.name] = when
    overdue.sort(key=lambda entry: (entry[0], entry[1]))
    count = len(overdue)
    for rank, (_, _, source) in enumerate(overdue):
        window = min(source.interval, spread, count / rate)
        out[source.name] = now + timedelta(seconds=window * rank / count)
    return out


# --- the scheduler and its listener ------------------------------------------------------------


def make_scheduler(concurrency: int) -> tuple[BackgroundScheduler, DaemonPoolExecutor]:
    """The scheduler (UTC; not started) and its poll executor."""
    poll = DaemonPoolExecutor(concurrency, "poll")
    scheduler = BackgroundScheduler(
        timezone=UTC,
        executors={
            "default": DaemonPoolExecutor(2, "control"),
            "poll": poll,
            "courier": DaemonPoolExecutor(1, "courier"),
        },
        job_defaults={
            "coalesce": True,
            "max_instances": 1,
            "misfire_grace_time": MISFIRE_GRACE,
        },
    )
    return scheduler, poll


class JobListener:
    """The last resort: APScheduler reports a job that raised (our jobs catch and record
    their own failures, so this means a bug) or missed its time only to its logs. This turns
    each into one log line, counts it, and hands the job id on so that a poll job is never
    left unscheduled."""

    MASK = EVENT_JOB_ERROR | EVENT_JOB_MISSED | EVENT_JOB_MAX_INSTANCES

    def __init__(
        self,
        on_error: Callable[[str], None] | None = None,
        on_missed: Callable[[str], None] | None = None,
    ) -> None:
        self.on_error = on_error
        self.on_missed = on_missed
        self.errors = 0
        self.missed = 0

    def __call__(self, ev: JobEvent) -> None:
        try:
            if ev.code == EVENT_JOB_ERROR:
                assert isinstance(ev, JobExecutionEvent)
                self.errors += 1
                event(
                    log,
                    logging.ERROR,
                    "job-error",
                    job=ev.job_id,
                    error=f"{type(ev.exception).__name__}: {ev.exception}",
                    traceback=(ev.traceback or "").strip() or None,
                )
                if self.on_error is not None:
                    self.on_error(ev.job_id)
            elif ev.code == EVENT_JOB_MISSED:
                assert isinstance(ev, JobExecutionEvent)
                self.missed += 1
                late = datetime.now(UTC) - ev.scheduled_run_time
                event(log, logging.WARNING, "job-missed", job=ev.job_id, late=late.total_seconds())
                if self.on_missed is not None:
                    self.on_missed(ev.job_id)
            elif ev.code == EVENT_JOB_MAX_INSTANCES:
                event(log, logging.DEBUG, "job-busy", job=ev.job_id)
        except Exception:  # a listener must never take the scheduler down
            log.exception("job listener failed")


def add_listener(scheduler: BackgroundScheduler, listener: JobListener) -> None:
    scheduler.add_listener(listener, JobListener.MASK)
