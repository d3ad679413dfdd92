"""The daemon's deliveries: the alert sender and its retries, digest and quiet-hours releases,
and source health checks, as APScheduler jobs on the one-thread ``courier`` executor.

One thread, so two deliveries never run at once (they could send one alert twice). Each run
opens its own connection to the archive (the writer's belongs to the writer's thread) and runs
a :class:`~scraper.delivery.Deliverer` with the real clock; a channel's pacing (Telegram's one
message a second) waits here, never in the writer. The writer asks for a run as soon as a
commit has queued alerts (:meth:`Courier.kick`); a periodic run sends retries as they come due
and, every :data:`HEALTH_EVERY` seconds, checks source health too.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers.base import BaseScheduler
from apscheduler.triggers.interval import IntervalTrigger

from scraper.alerts import AlertPolicy
from scraper.app import alert_policy, make_sender
from scraper.clock import Clock
from scraper.delivery import Deliverer, DeliveryReport, Sender
from scraper.logs import event, our_handlers
from scraper.messages import Notification
from scraper.notify import Notifier, SendResult
from scraper.rules import RuleSet
from scraper.schedule import cron_trigger, daily_trigger
from scraper.settings import Settings, Target
from scraper.store import Store

log = logging.getLogger("scraper.daemon")

DELIVER_EVERY = 15.0  # seconds between periodic runs (retries come due at their own times)
HEALTH_EVERY = 60.0  # seconds between source health checks
DELIVERY_WAIT = 10.0  # seconds one run may wait for a channel's pacing; the rest waits a run
DEFERRED_AGAIN = 5.0  # seconds until the next run when pacing deferred something


class Stopping(Exception):
    """Raised in a pacing wait when the daemon stops: the run ends, its rows stay pending."""


class _Deliverer(Deliverer):
    """A Deliverer that checks source health only when asked (it reads every source)."""

    def __init__(self, *args: Any, health: bool, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._health = health

    def check_health(self, now: datetime) -> int:
        return super().check_health(now) if self._health else 0


class _LoggingSender:
    """One log line per message sent (the Deliverer logs failures)."""

    def __init__(self, inner: Sender, courier: Courier) -> None:
        self.inner = inner
        self.courier = courier

    def send(self, target: Target, n: Notification) -> SendResult:
        result = self.inner.send(target, n)
        if result.ok:
            self.courier.sent += 1
            stories = len(n.stories)
            event(
                log,
                logging.INFO,
                "alert",
                target=target.name,
                kind=n.kind,
                title=n.title,
                stories=stories if stories > 1 else None,
            )
        return result


class Courier:
    def __init__(self, *, clock: Clock, stop: threading.Event) -> None:
        self.clock = clock
        self.stop = stop
        self.scheduler: BaseScheduler | None = None
        self.sent = 0
        self.busy_since: float | None = None  # time.monotonic() a run began
        self._alerting: tuple[Settings, AlertPolicy, Sender, Notifier | None] | None = None
        self._filter: logging.Filter | None = None
        self._wanted = threading.Event()  # run again: alerts were queued during a run
        self._release_jobs: dict[str, str] = {}

    @property
    def policy(self) -> AlertPolicy:
        assert self._alerting is not None
        return self._alerting[1]

    def configure(self, settings: Settings, ruleset: RuleSet) -> AlertPolicy:
        """Build the policy and the sender for these settings and rules; the next run uses
        them. Masks the targets' secrets in every log line."""
        policy = alert_policy(settings, ruleset)
        sender, notifier = make_sender(settings, policy)
        new_filter = notifier.log_filter() if notifier is not None else None
        for handler in our_handlers():
            if self._filter is not None:
                handler.removeFilter(self._filter)
            if new_filter is not None:
                handler.addFilter(new_filter)
        self._filter = new_filter
        self._alerting = (settings, policy, sender, notifier)
        if self.scheduler is not None:
            self.sync_release_jobs()
        return policy

    def add_jobs(self, scheduler: BaseScheduler) -> None:
        self.scheduler = scheduler
        now = datetime.now(UTC)
        scheduler.add_job(
            self.job,
            IntervalTrigger(seconds=DELIVER_EVERY),
            id="deliver",
            executor="courier",
            next_run_time=now,  # what the last run left pending goes out first
            max_instances=2,  # a kick while a run waits for the thread queues one more
        )
        scheduler.add_job(
            self.job,
            IntervalTrigger(seconds=HEALTH_EVERY),
            kwargs={"health": True},
            id="health",
            executor="courier",
            next_run_time=now + timedelta(seconds=5),
        )
        self.sync_release_jobs()

    def sync_release_jobs(self) -> None:
        """A cron job per digest rule and one at the end of quiet hours: each runs a delivery,
        which releases what is held (the periodic run would too, a little later)."""
        assert self._alerting is not None and self.scheduler is not None
        settings, policy, _, _ = self._alerting
        tz = settings.timezone
        quiet = settings.alerts.quiet_hours
        wanted: dict[str, str] = {}
        for rule in policy.rules.values():
            if rule.digest and rule.enabled:
                wanted[f"digest:{rule.id}"] = f"{rule.digest}|{tz}"
        if quiet is not None:
            wanted["quiet-end"] = f"{quiet[1].isoformat()}|{tz}"
        for job_id, spec in list(self._release_jobs.items()):
            if wanted.get(job_id) != spec:
                with contextlib.suppress(JobLookupError):
                    self.scheduler.remove_job(job_id)
                del self._release_jobs[job_id]
        for job_id, spec in wanted.items():
            if job_id in self._release_jobs:
                continue
            trigger: Any = (
                daily_trigger(quiet[1], tz)
                if quiet is not None and job_id == "quiet-end"
                else cron_trigger(spec.split("|")[0], tz)
            )
            self.scheduler.add_job(
                self.job,
                trigger,
                id=job_id,
                executor="courier",
                misfire_grace_time=3600,
                replace_existing=True,
            )
            self._release_jobs[job_id] = spec

    def kick(self) -> None:
        """Alerts were queued (called after their commit): deliver now."""
        self._wanted.set()
        if self.busy_since is None:
            self._run_soon(0.0)

    def _run_soon(self, delay: float) -> None:
        if self.stop.is_set() or self.scheduler is None:
            return
        with contextlib.suppress(Exception):  # JobLookupError, or shutting down
            when = datetime.now(UTC) + timedelta(seconds=delay)
            self.scheduler.modify_job("deliver", next_run_time=when)

    def _pause(self, seconds: float) -> None:
        if self.stop.wait(seconds):
            raise Stopping

    def job(self, health: bool = False) -> None:
        """Deliver what is due (and check source health when asked); again at once if new
        alerts were queued meanwhile. Failures are logged and retried by the next run."""
        if self.stop.is_set():
            return
        self.busy_since = time.monotonic()
        report: DeliveryReport | None = None
        try:
            while True:
                self._wanted.clear()
                report = self.run_once(health)
                health = False
                if self.stop.is_set() or not self._wanted.is_set():
                    break
        except Stopping:
            return
        except Exception as exc:
            event(log, logging.ERROR, "delivery-failed", error=f"{type(exc).__name__}: {exc}")
            log.debug("delivery failed", exc_info=True)
        finally:
            self.busy_since = None
        if self._wanted.is_set():
            self._run_soon(0.0)
        elif report is not None and report.deferred:
            self._run_soon(DEFERRED_AGAIN)

    def run_once(self, health: bool = False) -> DeliveryReport:
        assert self._alerting is not None
        settings, policy, sender, notifier = self._alerting
        with Store.open(settings.database, migrate=False) as store:
            deliverer = _Deliverer(
                store,
                policy,
                _LoggingSender(sender, self),
                sources=settings.sources,
                clock=self.clock,
                sleep=self._pause,
                wait_budget=DELIVERY_WAIT,
                health=health,
            )
            return deliverer.run(redacted=notifier.redacted if notifier else None)
