"""The daemon (`scraper run` without --once): its scheduling pieces in process, then the real
thing as a subprocess against loopback feeds and a webhook receiver, with 1-2 s intervals.

End-to-end tests wait on conditions (the archive, the receiver, the request log) with a
deadline, never on fixed sleeps.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from apscheduler.schedulers.background import BackgroundScheduler
from click.testing import CliRunner
from conftest import MakeServer
from helpers import rows, rss, write_config
from notify_servers import WebhookServer
from servers import LoopbackServer

from scraper.cli import main
from scraper.courier import Courier
from scraper.daemon import heartbeat_fresh
from scraper.logs import JsonFormatter, KeyValueFormatter, TextFormatter, event
from scraper.models import Source
from scraper.reload import RulesWatcher
from scraper.rules import load_rules
from scraper.rules.cron import parse_cron
from scraper.schedule import DaemonThreadPool, cron_trigger, first_runs
from scraper.settings import load_settings

ROOT = Path(__file__).resolve().parents[1]
NOW = datetime(2024, 11, 3, 12, 0, tzinfo=UTC)  # a Sunday


# --- in process: triggers, first runs, rule reload, log lines ----------------------------------


@pytest.mark.parametrize(
    "cron",
    [
        "0 8 * * *",
        "30 7 * * 0",  # Sunday, as cron numbers it
        "30 7 * * 7",  # Sunday again
        "0 9 * * 1-5",
        "15 18 * * sat,sun",
        "*/20 6-8 * * *",
        "0 0 1,15 * 3",  # the 1st, the 15th, or a Wednesday
        "0 12 */2 * 1",  # every other day AND a Monday (a * field: both must match)
        "0 8 29 2 *",
    ],
)
@pytest.mark.parametrize("tz", ["UTC", "Asia/Tokyo"])
def test_cron_trigger_fires_when_standard_cron_does(cron: str, tz: str) -> None:
    zone = ZoneInfo(tz)
    trigger = cron_trigger(cron, tz)
    expected = parse_cron(cron)
    rng = random.Random(cron + tz)
    for _ in range(12):
        start = (NOW + timedelta(minutes=rng.randrange(0, 60 * 24 * 400))).astimezone(zone)
        got = trigger.get_next_fire_time(None, start + timedelta(seconds=1))
        want = expected.next_after(start.replace(tzinfo=None)).replace(tzinfo=zone)
        assert got == want, (cron, start)


def test_cron_sunday_is_not_monday() -> None:
    fire = cron_trigger("0 8 * * 0", "UTC").get_next_fire_time(None, NOW)
    assert fire is not None and fire.strftime("%A") == "Sunday"  # APScheduler's 0 is Monday


def source(name: str, interval: float = 900.0) -> Source:
    return Source(name=name, url=f"https://example.com/{name}", interval=interval, jitter=0.1)


def test_first_runs_spread_overdue_sources_and_keep_future_ones() -> None:
    sources = [source(f"s{i}") for i in range(3000)] + [source("later"), source("shortened", 60)]
    due: dict[str, datetime | None] = {f"s{i}": NOW - timedelta(hours=i % 7) for i in range(3000)}
    due["s0"] = None  # never fetched
    due["later"] = NOW + timedelta(minutes=10)
    due["shortened"] = NOW + timedelta(hours=5)  # its interval was 6h when it was polled
    runs = first_runs(sources, due, NOW)
    assert runs["later"] == NOW + timedelta(minutes=10)  # a restart does not refetch it
    assert runs["shortened"] <= NOW + timedelta(seconds=66)
    overdue = sorted(runs[f"s{i}"] for i in range(3000))
    assert overdue[0] == NOW and overdue[-1] < NOW + timedelta(seconds=60)
    per_second = Counter(int((when - NOW).total_seconds()) for when in overdue)
    assert max(per_second.values()) <= 51  # 3,000 over a minute, evenly
    assert runs["s0"] == NOW  # the never-fetched and most overdue go first
    few = first_runs([source("a"), source("b")], {"a": None, "b": None}, NOW)
    assert max(few.values()) - NOW < timedelta(seconds=1)  # a small start does not dawdle
    backing_off = first_runs([source("x")], {"x": NOW + timedelta(hours=5)}, NOW, failures={"x": 4})
    assert backing_off["x"] == NOW + timedelta(hours=5)  # backoff is respected


def test_digest_and_quiet_hours_release_jobs(tmp_path: Path) -> None:
    config = write_config(
        tmp_path,
        [],
        rules={"morning": "query: Japan\ndigest: '0 8 * * 0'\n", "now": "query: EU\n"},
        tables={"alerts": {"quiet_hours": "23:00-07:00"}},
    )
    settings = load_settings(config, os.environ)  # timezone Asia/Tokyo
    scheduler = BackgroundScheduler(timezone=UTC)  # never started: jobs are only planned
    courier = Courier(clock=lambda: NOW, stop=threading.Event())
    courier.configure(settings, load_rules(settings.rules))
    courier.add_jobs(scheduler)
    jobs = {job.id: job for job in scheduler.get_jobs()}
    assert set(jobs) == {"deliver", "health", "digest:morning", "quiet-end"}
    # Sunday 08:00 in Tokyo (cron's 0), and the end of quiet hours at 07:00 in Tokyo
    digest = jobs["digest:morning"].trigger.get_next_fire_time(None, NOW)
    assert digest == datetime(2024, 11, 9, 23, 0, tzinfo=UTC)
    quiet_end = jobs["quiet-end"].trigger.get_next_fire_time(None, NOW)
    assert quiet_end == datetime(2024, 11, 3, 22, 0, tzinfo=UTC)
    (tmp_path / "rules" / "morning.yaml").unlink()
    courier.configure(settings, load_rules(settings.rules))
    assert {job.id for job in scheduler.get_jobs()} == {"deliver", "health", "quiet-end"}


def test_daemon_thread_pool_runs_jobs_on_daemon_threads() -> None:
    pool = DaemonThreadPool(3, "t")
    futures = [
        pool.submit(lambda x: (x * 2, __import__("threading").current_thread()), i)
        for i in range(10)
    ]
    results = [f.result(timeout=5) for f in futures]
    assert [r[0] for r in results] == [i * 2 for i in range(10)]
    assert all(r[1].daemon for r in results) and len({r[1].name for r in results}) <= 3
    failing = pool.submit(lambda: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        failing.result(timeout=5)
    pool.shutdown(wait=False)
    with pytest.raises(RuntimeError):
        pool.submit(lambda: None)


def test_rules_watcher_keeps_the_last_good_version(tmp_path: Path) -> None:
    folder = tmp_path / "rules"
    folder.mkdir()
    (folder / "_aliases.yaml").write_text("nk: [DPRK, Pyongyang]\n")
    (folder / "japan.yaml").write_text("query: Japan\n")
    (folder / "korea.yaml").write_text("query: '@nk'\n")
    watcher = RulesWatcher(folder)
    first = watcher.load()
    assert [r.id for r in first.ruleset.rules] == ["japan", "korea"] and not first.failing
    assert watcher.poll(settle=0) is None  # nothing changed

    (folder / "japan.yaml").write_text("query: (Japan AND\n")
    os.utime(folder / "japan.yaml", ns=(1, 1))  # a different mtime even on coarse clocks
    second = watcher.poll(settle=0)
    assert second is not None
    assert [r.query for r in second.ruleset.rules] == ["Japan", "@nk"]  # last good japan
    assert second.kept == ("japan",)
    (failure,) = second.new_failures
    assert failure.file == "rules/japan.yaml" and failure.kept
    assert failure.errors[0].startswith("rules/japan.yaml:1:")
    fields = {"title": "Japan and DPRK", "summary": "", "content": "", "author": ""}
    assert {m.rule for m in second.matcher.match(fields, source="s")} == {"japan", "korea"}

    (folder / "_aliases.yaml").write_text("nk: [DPRK, Pyongyang\n")  # broken aliases file
    third = watcher.poll(settle=0)
    assert third is not None and third.ruleset.aliases["nk"] == ("DPRK", "Pyongyang")
    assert {m.rule for m in third.matcher.match(fields, source="s")} == {"japan", "korea"}
    # japan: the same failure as before; korea: fails with the aliases, runs its last version
    assert [(f.file, f.kept) for f in third.new_failures] == [
        ("rules/_aliases.yaml", False),
        ("rules/korea.yaml", True),
    ]

    (folder / "japan.yaml").write_text("query: Tokyo\n")
    (folder / "_aliases.yaml").write_text("nk: [Pyongyang]\n")
    (folder / "korea.yaml").unlink()
    fourth = watcher.poll(settle=0)
    assert fourth is not None and not fourth.failing
    assert sorted(fourth.recovered) == ["rules/_aliases.yaml", "rules/japan.yaml"]
    assert [r.query for r in fourth.ruleset.rules] == ["Tokyo"] and fourth.removed == ("korea",)

    (folder / "new.yaml").write_text("query: (\n")  # broken from the start: nothing to keep
    fifth = watcher.poll(settle=0)
    assert fifth is not None and [r.id for r in fifth.ruleset.rules] == ["japan"]
    assert [(f.file, f.kept) for f in fifth.new_failures] == [("rules/new.yaml", False)]


def record(**extra: Any) -> logging.LogRecord:
    rec = logging.LogRecord("scraper.daemon", logging.WARNING, __file__, 1, "%s", ("x",), None)
    for key, value in extra.items():
        setattr(rec, key, value)
    return rec


def test_log_formats_one_line_each() -> None:
    captured: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, rec: logging.LogRecord) -> None:
            captured.append(rec)

    logger = logging.getLogger("scraper.test-logs")
    logger.addHandler(Keep())
    logger.setLevel(logging.INFO)
    logger.propagate = False
    event(logger, logging.INFO, "poll", source="Japan Today", status="200", new=3, skip=None)
    (rec,) = captured
    assert rec.getMessage() == 'poll source="Japan Today" status=200 new=3'
    kv = KeyValueFormatter().format(rec)
    assert kv.endswith('event=poll source="Japan Today" status=200 new=3')
    assert kv.startswith("time=") and " level=info logger=scraper.test-logs " in kv
    as_json = json.loads(JsonFormatter().format(rec))
    assert as_json["event"] == "poll" and as_json["new"] == 3 and as_json["source"] == "Japan Today"
    assert "poll source=" in TextFormatter().format(rec)
    try:
        raise ValueError("boom\nsecond line")
    except ValueError:
        failing = logging.LogRecord(
            "x", logging.ERROR, __file__, 1, "it failed", (), sys.exc_info()
        )
    line = KeyValueFormatter().format(failing)
    assert "\n" not in line and 'msg="it failed"' in line and "ValueError" in line
    assert "\n" not in JsonFormatter().format(failing)
    scrubbed = record(event="poll", fields={"token": "secret"})
    scrubbed.msg, scrubbed.args = "poll token=****", ()  # what the secret filter does
    assert "secret" not in KeyValueFormatter().format(scrubbed)


def test_heartbeat_freshness(tmp_path: Path) -> None:
    beat = tmp_path / "heartbeat"
    assert not heartbeat_fresh(beat)
    beat.write_text("{}")
    assert heartbeat_fresh(beat)
    old = time.time() - 600
    os.utime(beat, (old, old))
    assert not heartbeat_fresh(beat)


def test_run_rejects_one_pass_options_for_the_daemon(tmp_path: Path) -> None:
    config = write_config(tmp_path, [{"name": "A", "url": "https://example.com/"}])
    result = CliRunner().invoke(main, ["--config", str(config), "run", "--due"])
    assert result.exit_code == 2 and "--once" in result.output


# --- the daemon as a subprocess ------------------------------------------------------------------


class Daemon:
    """`scraper run` in a subprocess, its log (JSON lines) in a file."""

    def __init__(self, config: Path, *extra: str) -> None:
        self.config = config
        self.log_path = config.parent / f"daemon-{time.monotonic_ns()}.log"
        self._log = self.log_path.open("w")
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "scraper",
                "--config",
                str(config),
                "run",
                "--log-format",
                "json",
                *extra,
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=config.parent,
        )

    def lines(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log_path.read_text().splitlines():
            with contextlib.suppress(ValueError):  # the last line may be half-written
                parsed = json.loads(line)
                if isinstance(parsed, dict):
                    out.append(parsed)
        return out

    def events(self, name: str) -> list[dict[str, Any]]:
        return [line for line in self.lines() if line.get("event") == name]

    def wait(self, what: str, check: Callable[[], Any], timeout: float = 15.0) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result = check()
            if result:
                return result
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(
            f"timed out waiting for {what}; log:\n{self.log_path.read_text()[-4000:]}"
        )

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> tuple[int, float]:
        started = time.monotonic()
        self.proc.send_signal(sig)
        code = self.proc.wait(timeout=timeout)
        self._log.close()
        return code, time.monotonic() - started

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=10)
        self._log.close()

    def __enter__(self) -> Daemon:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.kill()


def feed(*items: dict[str, Any]) -> bytes:
    now = datetime.now(UTC)
    return rss([dict(item, date=item.get("date", now)) for item in items], now=now)


def publish(server: LoopbackServer, path: str, *items: dict[str, Any]) -> None:
    body = feed(*items)
    server.route(path, body, content_type="application/rss+xml", etag=f'"{hash(body)}"')


def story(n: int, title: str) -> dict[str, Any]:
    return {"title": title, "link": f"https://news.example/{n}", "guid": f"g{n}"}


def db_rows(db: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if not db.exists():
        return []
    try:
        return rows(db, sql, params)
    except sqlite3.OperationalError:  # not migrated yet
        return []


def alert_titles(hook: WebhookServer) -> list[str]:
    return [f"{b.get('title', '')} {b.get('message', '')}" for b in hook.bodies]


def has_alert(hook: WebhookServer, text: str) -> Callable[[], bool]:
    return lambda: any(text in body for body in alert_titles(hook))


BASE_ITEMS = [story(0, "Weather report for Tuesday")]


@pytest.fixture
def setup(
    tmp_path: Path, http_server: LoopbackServer, webhook: WebhookServer
) -> Iterator[Callable[..., Path]]:
    def make(
        sources: list[dict[str, Any]] | None = None, rules: dict[str, str] | None = None
    ) -> Path:
        publish(http_server, "/wire.xml", *BASE_ITEMS)
        wire = {
            "name": "Wire",
            "url": http_server.url("/wire.xml"),
            "interval": "1s",
            "jitter": "0%",
        }
        return write_config(
            tmp_path,
            [wire, *(sources or [])],
            rules=rules if rules is not None else {"japan": "query: Japan\n"},
            targets=[{"name": "hook", "url": webhook.apprise_url()}],
            tables={"alerts": {"rate_limit": "off"}},
        )

    yield make


def test_polls_alerts_new_items_and_a_hung_source_delays_nobody(
    setup: Callable[..., Path],
    http_server: LoopbackServer,
    make_server: MakeServer,
    webhook: WebhookServer,
) -> None:
    other_host = make_server(hosts=("127.0.0.2",))
    other_host.route("/stuck.xml", hang=True)
    config = setup(
        [{"name": "Stuck", "url": other_host.url("/stuck.xml"), "interval": "1s", "timeout": "30s"}]
    )
    db = config.parent / "state" / "news.db"
    with Daemon(config) as daemon:
        daemon.wait("a hung fetch", lambda: other_host.requests_to("/stuck.xml"))
        stuck_since = time.monotonic()
        daemon.wait("repeated polls", lambda: len(http_server.requests_to("/wire.xml")) >= 4)
        assert (config.parent / "state" / "heartbeat").exists()

        publish(http_server, "/wire.xml", story(1, "Japan and EU sign a defence pact"), *BASE_ITEMS)
        daemon.wait("the alert", has_alert(webhook, "Japan and EU sign a defence pact"))
        # The other source kept its pace while the stuck fetch held a thread all along.
        times = [r.at for r in http_server.requests_to("/wire.xml") if r.at > stuck_since]
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert gaps and max(gaps) < 2.5, gaps
        assert len(other_host.requests_to("/stuck.xml")) == 1  # still hanging

        code, seconds = daemon.stop()
    assert code == 0 and seconds < 10
    assert [e["reason"] for e in daemon.events("stopping")] == ["SIGTERM"]
    polls = daemon.events("poll")
    assert polls and all(p["source"] == "Wire" for p in polls)  # one line per poll
    assert [e["title"] for e in daemon.events("alert")] == ["Japan and EU sign a defence pact"]
    assert db_rows(db, "PRAGMA integrity_check") == [("ok",)]
    assert not (config.parent / "state" / "heartbeat").exists()
    assert db_rows(db, "SELECT status FROM alerts") == [("sent",)]


def test_rule_files_reload_while_running(
    setup: Callable[..., Path], http_server: LoopbackServer, webhook: WebhookServer
) -> None:
    config = setup()
    rules = config.parent / "rules"
    items = list(BASE_ITEMS)

    def add(n: int, title: str) -> None:
        items.insert(0, story(n, title))
        publish(http_server, "/wire.xml", *items)

    with Daemon(config) as daemon:
        daemon.wait("the first poll", lambda: daemon.events("poll"))
        (rules / "korea.yaml").write_text("name: Korea watch\nquery: Korea\n")
        daemon.wait(
            "the new rule", lambda: any(e.get("added") == "korea" for e in daemon.events("rules"))
        )
        add(1, "North Korea fires a missile")
        daemon.wait(
            "an alert from the added rule", has_alert(webhook, "North Korea fires a missile")
        )
        assert "Korea watch" in alert_titles(webhook)[-1]

        (rules / "korea.yaml").write_text("name: Korea watch\nquery: Pyongyang\n")
        daemon.wait(
            "the edit", lambda: any(e.get("changed") == "korea" for e in daemon.events("rules"))
        )
        add(2, "Pyongyang hosts a parade")
        daemon.wait("an alert from the edited rule", has_alert(webhook, "Pyongyang hosts a parade"))

        (rules / "korea.yaml").write_text("name: Korea watch\nquery: (Pyongyang AND\n")
        daemon.wait("the health alert", has_alert(webhook, "rules/korea.yaml is failing"))
        assert daemon.events("rule-error")[0]["file"] == "rules/korea.yaml"
        add(3, "Japan votes")
        add(4, "Pyongyang again")
        daemon.wait(
            "alerts from every rule",
            lambda: has_alert(webhook, "Japan votes")() and has_alert(webhook, "Pyongyang again")(),
        )
        assert daemon.proc.poll() is None
        code, _ = daemon.stop()
    assert code == 0


def test_kill_9_then_a_restart_loses_nothing_and_resumes_due_times(
    setup: Callable[..., Path], http_server: LoopbackServer, webhook: WebhookServer
) -> None:
    publish(http_server, "/hourly.xml", story(50, "Hourly bulletin"))
    config = setup([{"name": "Hourly", "url": http_server.url("/hourly.xml"), "interval": "1h"}])
    db = config.parent / "state" / "news.db"
    fresh = [story(10 + i, f"Japan story number {i}") for i in range(3)]
    with Daemon(config) as first:
        first.wait("the first polls", lambda: len(db_rows(db, "SELECT 1 FROM fetches")) >= 3)
        seen = len(http_server.requests_to("/wire.xml"))
        publish(http_server, "/wire.xml", *fresh, *BASE_ITEMS)
        first.wait(
            "the new items fetched", lambda: len(http_server.requests_to("/wire.xml")) > seen
        )
        first.kill()  # somewhere between the fetch, the write and the delivery

    hourly = len(http_server.requests_to("/hourly.xml"))
    assert hourly == 1
    with Daemon(config) as second:
        for item in fresh:
            second.wait("every alert", has_alert(webhook, item["title"]))
        second.wait("more polls", lambda: len(second.events("poll")) >= 3)
        code, _ = second.stop()
    assert code == 0
    assert len(http_server.requests_to("/hourly.xml")) == hourly  # not due: not refetched
    assert db_rows(db, "PRAGMA integrity_check") == [("ok",)]
    titles = [t for (t,) in db_rows(db, "SELECT title FROM items ORDER BY id")]
    assert sorted(titles) == sorted(
        ["Hourly bulletin", BASE_ITEMS[0]["title"], *(i["title"] for i in fresh)]
    )
    assert db_rows(db, "SELECT count(*), count(DISTINCT story_id) FROM alerts") == [(3, 3)]
    assert db_rows(db, "SELECT DISTINCT status FROM alerts") == [("sent",)]


def test_sigterm_keeps_failed_alerts_for_the_next_start(
    setup: Callable[..., Path], http_server: LoopbackServer, webhook: WebhookServer
) -> None:
    config = setup()
    db = config.parent / "state" / "news.db"
    webhook.fail()
    with Daemon(config) as daemon:
        daemon.wait("the first poll", lambda: daemon.events("poll"))
        publish(http_server, "/wire.xml", story(1, "Japan holds an election"), *BASE_ITEMS)
        daemon.wait(
            "a failed delivery", lambda: db_rows(db, "SELECT 1 FROM alerts WHERE status = 'failed'")
        )
        code, seconds = daemon.stop(signal.SIGINT)
    assert code == 0 and seconds < 10
    assert db_rows(db, "SELECT status FROM alerts") == [("failed",)]
    webhook.recover()
    retried = CliRunner().invoke(main, ["--config", str(config), "alerts", "retry"])
    assert retried.exit_code == 0, retried.output
    with Daemon(config) as daemon:
        daemon.wait("the alert after the restart", has_alert(webhook, "Japan holds an election"))
        daemon.wait(
            "it marked sent", lambda: db_rows(db, "SELECT 1 FROM alerts WHERE status = 'sent'")
        )
        assert daemon.stop()[0] == 0


def test_sighup_reloads_the_configuration(
    setup: Callable[..., Path], http_server: LoopbackServer
) -> None:
    publish(http_server, "/extra.xml", story(30, "Extra feed item"))
    config = setup()
    db = config.parent / "state" / "news.db"
    original = config.read_text()
    with Daemon(config) as daemon:
        daemon.wait("the first poll", lambda: daemon.events("poll"))
        second = subprocess.run(
            [sys.executable, "-m", "scraper", "--config", str(config), "run"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert second.returncode == 1 and "another `scraper run` daemon" in second.stderr
        config.write_text(
            original.replace('name = "Wire"', 'name = "Wire"\nenabled = false')
            + "\n[[sources]]\nname = 'Extra'\ninterval = '1s'\njitter = '0%'\n"
            + f"url = '{http_server.url('/extra.xml')}'\n"
        )
        daemon.proc.send_signal(signal.SIGHUP)
        daemon.wait("the added source", lambda: len(http_server.requests_to("/extra.xml")) >= 2)
        reloaded = daemon.events("config-reloaded")
        assert reloaded and reloaded[0]["added"] == 1 and reloaded[0]["removed"] == 1
        wire_then = len(http_server.requests_to("/wire.xml"))
        daemon.wait(
            "more polls of the added source",
            lambda: len(http_server.requests_to("/extra.xml")) >= 4,
        )
        assert len(http_server.requests_to("/wire.xml")) <= wire_then + 1  # one may be in flight
        assert db_rows(db, "SELECT name, enabled FROM sources ORDER BY name") == [
            ("Extra", 1),
            ("Wire", 0),
        ]

        config.write_text(original + "\n[[sources]]\nname = 'Broken'\n")  # no url: an error
        daemon.proc.send_signal(signal.SIGHUP)
        daemon.wait("the config error", lambda: daemon.events("config-error"))
        extra_then = len(http_server.requests_to("/extra.xml"))
        daemon.wait(
            "polls going on", lambda: len(http_server.requests_to("/extra.xml")) > extra_then
        )
        assert daemon.stop()[0] == 0


def test_retention_job_prunes_old_bodies(tmp_path: Path) -> None:
    """With `retention` set, the daemon's daily job empties old bodies and keeps identities."""
    from datetime import UTC, datetime, timedelta

    from helpers import write_config

    from scraper.daemon import Daemon as RealDaemon
    from scraper.models import Item
    from scraper.settings import load_settings
    from scraper.store import Store

    config = write_config(
        tmp_path, [{"name": "Wire", "url": "https://example.com/feed"}], top={"retention": "30d"}
    )
    settings = load_settings(config, {})
    old = datetime.now(UTC) - timedelta(days=40)
    with Store.open(settings.database) as store:
        store.sync_sources(settings.sources, old)
        sid = store.source_state("Wire").id  # type: ignore[union-attr]
        with store.transaction():
            store.upsert_items(
                sid,
                [Item(key="a", guid="a", url="https://a/1", title="Old", summary="body")],
                now=old,
            )
    RealDaemon(settings)._retention_job()
    assert db_rows(
        settings.database, "SELECT title, summary, pruned_at IS NOT NULL FROM items"
    ) == [("Old", "", 1)]
