"""The daemon: ``scraper run`` without ``--once``, meant to run for months unattended.

Threads and who owns what::

    main        start-up, signals (SIGINT/SIGTERM: stop; SIGHUP: reload scraper.toml), shutdown
    scheduler   APScheduler's thread: fires jobs (scraper.schedule)
    poll-N      poll jobs: fetch and parse one source (no database), hand it to the writer
    writer      the one thread writing polls to the archive (scraper.writer)
    control-N   heartbeat, rule-file watch, watchdog
    courier     delivery and retries, digest and quiet-hours releases, health checks; each
                run opens its own connection, so a Telegram wait never holds up a write

A source's due time lives in ``sources.next_fetch_at``: the writer sets it with each poll and
the poll job is moved there, so a restart resumes where the last run left off. A slow or hung
source holds one poll thread until its fetch deadline and delays nobody else.

Stopping (SIGINT/SIGTERM): no new job starts; the writer writes what is queued and commits
(a transaction is either committed or rolled back, never half-written); a delivery in progress
finishes its message or is abandoned (its rows stay pending: sent at the next start, at worst
twice); polls still on the network are abandoned (they are due again at the next start). All
within :data:`STOP_BUDGET` seconds, exit status 0.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import signal
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO

from apscheduler.triggers.interval import IntervalTrigger

from scraper.alerts import AlertPolicy, AlertQueue
from scraper.clock import Clock, iso, utcnow
from scraper.courier import Courier
from scraper.errors import ConfigError, StoreError
from scraper.fetch import Fetcher
from scraper.isolate import ParserPool
from scraper.logs import event, quiet
from scraper.pipeline import Pipeline
from scraper.polling import Polls
from scraper.reload import RulesReload, RulesWatcher, rule_alerts
from scraper.schedule import JobListener, add_listener, make_scheduler
from scraper.settings import Settings, load_settings
from scraper.store import SourceState, Store
from scraper.writer import Writer

log = logging.getLogger(__name__)

HEARTBEAT_FILE = "heartbeat"  # next to the database: state/heartbeat
HEARTBEAT_EVERY = 15.0
RETENTION_EVERY = 86400.0  # prune once a day when `retention` is set
RETENTION_FIRST = 600.0  # ...the first time ten minutes after start
HEARTBEAT_MAX_AGE = 120.0  # older than this: not alive (the Docker HEALTHCHECK's rule)
RULES_EVERY = 2.0
WATCHDOG_EVERY = 60.0
STUCK = 120.0  # a write or the writer loop this late means the daemon is stuck
STOP_BUDGET = 8.0  # seconds from SIGTERM to exit (Docker waits 10 s before SIGKILL)
RESTART_KEYS = ("database", "concurrency", "per_host", "user_agent", "parse_timeout")
SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def heartbeat_path(settings: Settings) -> Path:
    return settings.database.parent / HEARTBEAT_FILE


def heartbeat_fresh(path: Path, max_age: float = HEARTBEAT_MAX_AGE) -> bool:
    """Whether the daemon using ``path`` is alive and making progress (the HEALTHCHECK)."""
    try:
        return time.time() - path.stat().st_mtime < max_age
    except OSError:
        return False


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _lock(database: Path) -> IO[str] | None:
    """One daemon per archive: an exclusive lock next to the database (None on Windows)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not on POSIX
        return None
    database.parent.mkdir(parents=True, exist_ok=True)
    handle = open(database.with_name(database.name + ".lock"), "a+", encoding="utf-8")  # noqa: SIM115
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.seek(0)
        holder = handle.read().strip() or "?"
        handle.close()
        raise StoreError(
            f"{database}: another `scraper run` daemon is using this archive (pid {holder})"
        ) from None
    handle.truncate(0)
    handle.write(str(os.getpid()))
    handle.flush()
    return handle


def _ignore(signum: int, frame: object) -> None:
    """Our signal handler: the wakeup fd tells the main loop which signal came."""


class Daemon:
    """The long-running scheduler. :meth:`run` blocks until SIGINT or SIGTERM (or
    :meth:`stop`) and returns the exit status."""

    def __init__(
        self,
        settings: Settings,
        *,
        environ: Mapping[str, str] | None = None,
        clock: Clock = utcnow,
    ) -> None:
        self.settings = settings
        self.environ = dict(environ or {})
        self.clock = clock
        self.rules = RulesWatcher(settings.rules)
        self.heartbeat = heartbeat_path(settings)
        self.started = time.monotonic()
        self.writer: Writer | None = None
        self.polls: Polls | None = None
        self._stop = threading.Event()
        self.courier = Courier(clock=clock, stop=self._stop)
        self.listener = JobListener(on_error=self._job_trouble, on_missed=self._job_trouble)
        self._stop_reason = "stop"
        self._rules_lock = threading.Lock()
        self._lock_handle: IO[str] | None = None
        self._failed = False

    # -- start ----------------------------------------------------------------------------------

    def start(self) -> None:
        settings = self.settings
        self._lock_handle = _lock(settings.database)
        with Store.open(settings.database) as store:  # migrates, indexes what a crash left
            store.sync_sources(settings.sources, self.clock())
            states = store.source_states()
        quiet("scraper.notify")  # one "alert" line per message is ours
        loaded = self.rules.load()
        policy = self.courier.configure(settings, loaded.ruleset)
        self.fetcher = Fetcher(
            user_agent=settings.user_agent,
            concurrency=settings.concurrency,
            per_host=settings.per_host,
            clock=self.clock,
        )
        self.parser = ParserPool(workers=os.cpu_count() or 2, timeout=settings.parse_timeout)
        self.pipeline = Pipeline(
            fetcher=self.fetcher,
            parser=self.parser,
            matcher=loaded.matcher,
            after_store=AlertQueue(policy),
            story_window=settings.alerts.story_window,
            clock=self.clock,
        )
        self.polls = Polls(settings.sources, states, pipeline=self.pipeline, stop=self._stop)
        self.writer = Writer(
            settings.database,
            self.pipeline,
            on_written=self.polls.written,
            on_alerts=self.courier.kick,
        )
        self.writer.start()
        self.writer.ready.wait()
        if self.writer.error is not None:
            raise StoreError(f"{settings.database}: cannot open the archive: {self.writer.error}")
        self._log_rules(loaded, initial=True)
        self._install_rules(loaded, policy)

        self.scheduler, self.poll_pool = make_scheduler(settings.concurrency)
        add_listener(self.scheduler, self.listener)
        self.polls.start(self.scheduler, self.writer)
        add = self.scheduler.add_job
        add(self._heartbeat_job, IntervalTrigger(seconds=HEARTBEAT_EVERY), id="heartbeat")
        add(self._rules_job, IntervalTrigger(seconds=RULES_EVERY), id="rules")
        add(self._watchdog_job, IntervalTrigger(seconds=WATCHDOG_EVERY), id="watchdog")
        add(
            self._retention_job,
            IntervalTrigger(seconds=RETENTION_EVERY),
            id="retention",
            next_run_time=datetime.now(UTC) + timedelta(seconds=RETENTION_FIRST),
        )
        self.courier.add_jobs(self.scheduler)
        self._heartbeat_job()
        self.scheduler.start()
        event(
            log,
            logging.INFO,
            "started",
            pid=os.getpid(),
            sources=len(self.polls.sources),
            rules=len(loaded.ruleset.rules),
            targets=len(settings.targets),
            database=str(settings.database),
        )

    def _job_trouble(self, job_id: str) -> None:
        if self.polls is not None:
            self.polls.trouble(job_id)

    # -- rules ----------------------------------------------------------------------------------

    def _rules_job(self) -> None:
        with self._rules_lock:
            loaded = self.rules.poll()
            if loaded is not None:
                self._log_rules(loaded)
                self._install_rules(loaded, self.courier.configure(self.settings, loaded.ruleset))

    def _log_rules(self, loaded: RulesReload, *, initial: bool = False) -> None:
        for failure in loaded.new_failures:
            running = "last good version" if failure.kept else None
            for text in failure.errors:
                event(
                    log, logging.ERROR, "rule-error", file=failure.file, error=text, running=running
                )
        for file in loaded.recovered:
            event(log, logging.INFO, "rule-recovered", file=file)
        event(
            log,
            logging.INFO,
            "rules",
            loaded=len(loaded.ruleset.rules),
            added=None if initial else ",".join(loaded.added) or None,
            removed=None if initial else ",".join(loaded.removed) or None,
            changed=None if initial else ",".join(loaded.changed) or None,
            failing=len(loaded.failing) or None,
        )

    def _install_rules(
        self, loaded: RulesReload, policy: AlertPolicy, *, report: bool = True
    ) -> None:
        """Install the rules on the writer thread (between two polls, so that a poll sees one
        version of them) and queue health alerts for rule files that fail or recover."""
        story_window = self.settings.alerts.story_window
        assert self.writer is not None
        writer = self.writer

        def install(store: Store) -> None:
            self.pipeline.matcher = loaded.matcher
            self.pipeline.after_store = AlertQueue(policy)
            self.pipeline.story_window = story_window
            if report and rule_alerts(store, loaded, policy, self.clock()):
                writer.kick_after_commit()

        writer.call(install)

    # -- configuration (SIGHUP) -----------------------------------------------------------------

    def reload_config(self) -> bool:
        """Read scraper.toml again and apply it without losing state: sources added, removed
        or changed, targets, alert settings, the rules folder. The settings that shape the
        running machinery (RESTART_KEYS) keep their value until a restart. A file with an
        error changes nothing."""
        old = self.settings
        try:
            new = load_settings(old.path, self.environ)
        except ConfigError as exc:
            event(log, logging.ERROR, "config-error", error=str(exc), kept="running configuration")
            return False
        fixed = [key for key in RESTART_KEYS if getattr(old, key) != getattr(new, key)]
        if fixed:
            event(log, logging.WARNING, "config-needs-restart", keys=",".join(fixed))
            new = replace(new, **{key: getattr(old, key) for key in fixed})
        now = self.clock()

        def sync(store: Store) -> dict[str, SourceState]:
            store.sync_sources(new.sources, now)
            return store.source_states()

        assert self.writer is not None and self.polls is not None
        try:
            states = self.writer.call(sync, wait=30.0)
        except Exception as exc:
            event(log, logging.ERROR, "config-error", error=str(exc), kept="running configuration")
            return False
        self.settings = new
        added, removed, changed = self.polls.apply(new.sources, states)
        with self._rules_lock:  # targets, alert settings or the rules folder may be new
            moved = new.rules != old.rules
            loaded = self.rules.move(new.rules) if moved else self.rules.current
            assert loaded is not None
            if moved:
                self._log_rules(loaded)
            self._install_rules(loaded, self.courier.configure(new, loaded.ruleset), report=moved)
        event(
            log,
            logging.INFO,
            "config-reloaded",
            sources=len(self.polls.sources),
            added=added,
            removed=removed,
            changed=changed,
        )
        return True

    # -- the daemon's own health ----------------------------------------------------------------

    def problems(self) -> list[str]:
        """Why the daemon is not alive and making progress (empty: it is)."""
        now = time.monotonic()
        out: list[str] = []
        writer = self.writer
        assert writer is not None
        if not writer.is_alive():
            out.append("the writer has stopped")
        elif writer.busy_since is not None and now - writer.busy_since > STUCK:
            out.append(f"one write has taken {now - writer.busy_since:.0f}s")
        elif now - writer.tick > STUCK:
            out.append(f"the writer has not run for {now - writer.tick:.0f}s")
        if writer.failing_since is not None and now - writer.failing_since > STUCK:
            out.append(f"writes have failed for {now - writer.failing_since:.0f}s")
        busy = self.courier.busy_since
        if busy is not None and now - busy > 10 * STUCK:
            out.append(f"a delivery has run for {now - busy:.0f}s")
        assert self.polls is not None
        stalled = self.polls.stalled(self.settings.parse_timeout, writer.last_write)
        if stalled is not None:
            out.append(f"no poll has finished for {stalled:.0f}s")
        return out

    def _retention_job(self) -> None:
        """With ``retention`` set, prune old item bodies once a day (small batches, so the
        writer only waits for one batch at a time)."""
        settings = self.settings
        if settings.retention is None:
            return
        from scraper.prune import prune

        store = Store.open(settings.database, migrate=False)
        try:
            result = prune(store, settings.retention, utcnow())
        finally:
            store.close()
        event(log, logging.INFO, "pruned", items=result.pruned, before=iso(result.cutoff))

    def _heartbeat_job(self) -> None:
        """Touch the heartbeat file, but only while the daemon is alive and making progress
        (a failing source is not the daemon's problem: it is a health alert)."""
        problems = self.problems()
        if problems:
            event(log, logging.ERROR, "unhealthy", problems="; ".join(problems))
            return
        assert self.writer is not None and self.polls is not None
        info = {
            "pid": os.getpid(),
            "at": iso(datetime.now(UTC)),
            "uptime": round(time.monotonic() - self.started),
            "sources": len(self.polls.sources),
            "polls": self.writer.polls,
            "polls_failed": self.writer.failed,
            "in_flight": len(self.polls.in_flight),
            "alerts_sent": self.courier.sent,
            "job_errors": self.listener.errors,
        }
        try:
            _write_atomic(self.heartbeat, json.dumps(info) + "\n")
        except OSError as exc:
            event(log, logging.ERROR, "heartbeat-failed", error=str(exc))

    def _watchdog_job(self) -> None:
        assert self.polls is not None
        self.polls.watchdog(self.settings.parse_timeout)

    # -- running and stopping -------------------------------------------------------------------

    def run(self) -> int:
        """Start, serve until SIGINT/SIGTERM (or :meth:`stop`), shut down: the exit status.
        Signals are caught from the start, so one that comes while starting is not lost."""
        with self._signals() as wakeup:
            try:
                self.start()
            except BaseException:
                self._abort()
                raise
            try:
                self._serve(wakeup)
            except BaseException:
                log.exception("the daemon failed")
                self._failed = True
            return self.shutdown()

    def stop(self, reason: str = "stop") -> None:
        self._stop_reason = reason
        self._stop.set()

    @contextlib.contextmanager
    def _signals(self) -> Iterator[int | None]:
        """SIGINT, SIGTERM and SIGHUP arrive on a pipe that the main loop reads (a handler
        that did the work itself could run in the middle of anything, holding any lock)."""
        if threading.current_thread() is not threading.main_thread():
            yield None
            return
        read_fd, write_fd = os.pipe()
        os.set_blocking(read_fd, False)
        os.set_blocking(write_fd, False)
        previous = {sig: signal.getsignal(sig) for sig in SIGNALS}
        old_fd = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
        for sig in SIGNALS:
            signal.signal(sig, _ignore)
        try:
            yield read_fd
        finally:
            signal.set_wakeup_fd(old_fd)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            os.close(read_fd)
            os.close(write_fd)

    def _serve(self, wakeup: int | None) -> None:
        while not self._stop.is_set():
            if wakeup is None:
                self._stop.wait(1.0)
            elif select.select([wakeup], [], [], 1.0)[0]:
                with contextlib.suppress(BlockingIOError):
                    for signum in os.read(wakeup, 512):
                        self._on_signal(signum)
            assert self.writer is not None
            if not self.writer.is_alive():
                event(log, logging.CRITICAL, "writer-stopped", error=str(self.writer.error))
                self._failed = True
                self.stop("the writer stopped")

    def _on_signal(self, signum: int) -> None:
        if signum == signal.SIGHUP:
            event(log, logging.INFO, "reload", signal="SIGHUP")
            try:
                self.reload_config()
            except Exception:
                log.exception("reloading the configuration failed")
        elif signum in (signal.SIGINT, signal.SIGTERM):
            self.stop(signal.Signals(signum).name)

    def shutdown(self) -> int:
        """Stop within STOP_BUDGET seconds: see the module's docstring. The exit status."""
        began = time.monotonic()
        self._stop.set()
        in_flight = len(self.polls.in_flight) if self.polls else 0
        event(log, logging.INFO, "stopping", reason=self._stop_reason, in_flight=in_flight)
        with contextlib.suppress(Exception):
            self.scheduler.shutdown(wait=False)
        assert self.writer is not None
        self.writer.stop()
        self.writer.join(STOP_BUDGET / 2)
        if self.writer.is_alive():  # a long backlog: drop the rest, commit what is written
            self.writer.abandon.set()
            self.writer.join(max(0.5, STOP_BUDGET - 1.0 - (time.monotonic() - began)))
        while self.courier.busy_since is not None and time.monotonic() - began < STOP_BUDGET:
            time.sleep(0.05)
        if self.poll_pool.pool.busy == 0 and self.courier.busy_since is None:
            self.fetcher.close()
            self.parser.close()
        # else: threads still on the network are daemon threads and end with the process.
        with contextlib.suppress(OSError):
            self.heartbeat.unlink()
        if self._lock_handle is not None:
            self._lock_handle.close()
        failed = self._failed or self.writer.error is not None
        event(
            log,
            logging.INFO,
            "stopped",
            seconds=round(time.monotonic() - began, 2),
            polls=self.writer.polls,
            abandoned=(len(self.polls.in_flight) if self.polls else 0) or None,
            status=int(failed),
        )
        return int(failed)

    def _abort(self) -> None:
        """Undo a start that failed half-way."""
        self._stop.set()
        with contextlib.suppress(Exception):
            self.scheduler.shutdown(wait=False)
        if self.writer is not None and self.writer.is_alive():
            self.writer.stop()
            self.writer.join(STOP_BUDGET)
        with contextlib.suppress(Exception):
            self.parser.close()
        with contextlib.suppress(Exception):
            self.fetcher.close()
        if self._lock_handle is not None:
            self._lock_handle.close()


def run_daemon(settings: Settings, environ: Mapping[str, str] | None = None) -> int:
    """``scraper run``: the daemon, until SIGINT or SIGTERM. Returns the exit status."""
    return Daemon(settings, environ=environ).run()
