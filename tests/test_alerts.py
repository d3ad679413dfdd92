"""Alerts end to end: `run --once` with real loopback feeds and real delivery endpoints.

Time is passed in (a fake clock whose sleep advances it), so retries, quiet hours, digests and
rate windows are tested without waiting.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from helpers import rows, rss, write_config
from notify_servers import SmtpServer, TelegramServer, WebhookServer, email_parts
from servers import LoopbackServer

from scraper.app import run_once
from scraper.clock import parse_iso
from scraper.settings import Settings, load_settings

T0 = datetime(2024, 11, 1, 3, 0, tzinfo=UTC)  # 12:00 in Tokyo

SEED = {
    "title": "Japan and EU sign security and defense partnership",
    "link": "https://afp.example/japan-eu-pact",
    "guid": "afp-1",
    "description": "TOKYO (AFP) - Japan and the European Union signed a security and defense"
    " partnership on Friday, as North Korea test-fired a missile.",
}
RULES = {
    "japan-eu-defense": (
        "name: Japan–EU defense partnership\n"
        'query: (Japan OR Tokyo) AND (EU OR "European Union") AND defen* NEAR/3 (pact OR'
        " partnership)\n"
    ),
    "north-korea": "name: North Korea\nquery: '\"North Korea\" OR DPRK OR Pyongyang'\n",
}


class Clock:
    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)

    def advance(self, **kw: float) -> None:
        self.now += timedelta(**kw)


def feed_items(*extra: dict[str, Any], base: datetime = T0) -> bytes:
    filler = [  # one a day: the source's usual gap is a day, so it never looks stale here
        {
            "title": f"Weather report {i}",
            "link": f"https://x.example/w{i}",
            "guid": f"w{i}",
            "date": base - timedelta(days=i + 1),
        }
        for i in range(3)
    ]
    items = [dict(item, date=item.get("date", base)) for item in extra]
    return rss([*items, *filler], now=base)


def setup(
    tmp_path: Path,
    server: LoopbackServer,
    targets: list[dict[str, Any]],
    *,
    rules: dict[str, str] | None = None,
    alerts: dict[str, Any] | None = None,
    health: dict[str, Any] | None = None,
    sources: int = 1,
) -> Settings:
    srcs = []
    for i in range(sources):
        url = server.route(f"/feed{i}.xml", feed_items(), content_type="application/rss+xml")
        srcs.append({"name": f"Source {i}", "url": url, "tags": ["wire"], "jitter": "0%"})
    tables: dict[str, dict[str, Any]] = {"alerts": {"rate_limit": "off", **(alerts or {})}}
    if health:
        tables["health"] = health
    config = write_config(
        tmp_path, srcs, rules=RULES if rules is None else rules, targets=targets, tables=tables
    )
    return load_settings(config, os.environ)


def publish(server: LoopbackServer, i: int, *items: dict[str, Any], base: datetime = T0) -> None:
    server.route(f"/feed{i}.xml", feed_items(*items, base=base), content_type="application/rss+xml")


def alerts(settings: Settings) -> list[tuple[Any, ...]]:
    return rows(settings.database, "SELECT target, status, rules, kind FROM alerts ORDER BY id")


def test_first_poll_archives_then_a_new_story_alerts_once(
    tmp_path: Path, http_server: LoopbackServer, webhook: WebhookServer
) -> None:
    settings = setup(tmp_path, http_server, [{"name": "hook", "url": webhook.apprise_url()}])
    clock = Clock()
    publish(http_server, 0, dict(SEED, guid="old", link="https://afp.example/old"))
    first = run_once(settings, clock=clock, sleep=clock.sleep)
    assert first.matches == 2 and first.alerts_sent == 0  # the backlog only archives
    assert webhook.bodies == []

    clock.advance(minutes=15)
    publish(http_server, 0, SEED, base=clock.now)
    second = run_once(settings, clock=clock, sleep=clock.sleep)
    assert second.alerts_sent == 1
    assert len(webhook.bodies) == 1
    body = webhook.bodies[0]
    assert SEED["title"] in body["title"] + body["message"]
    assert "Japan–EU defense partnership" in body["message"]
    assert "https://afp.example/japan-eu-pact" in body["message"]
    assert alerts(settings) == [("hook", "sent", '["japan-eu-defense", "north-korea"]', "story")]

    clock.advance(minutes=15)
    third = run_once(settings, clock=clock, sleep=clock.sleep)
    assert third.alerts_sent == 0 and len(webhook.bodies) == 1


def test_a_syndicated_copy_is_linked_and_does_not_alert_again(
    tmp_path: Path, http_server: LoopbackServer, webhook: WebhookServer
) -> None:
    settings = setup(
        tmp_path,
        http_server,
        [{"name": "hook", "url": webhook.apprise_url()}],
        alerts={"backlog": True},
        sources=2,
    )
    clock = Clock()
    publish(http_server, 0, SEED)
    run_once(settings, clock=clock, sleep=clock.sleep)
    assert len(webhook.bodies) == 1
    copy = dict(
        SEED,
        title="Japan, EU sign security and defense partnership - Kyodo News",
        link="https://kyodo.example/pact",
        guid="kyodo-9",
    )
    clock.advance(minutes=30)
    publish(http_server, 1, copy, base=clock.now)
    run_once(settings, clock=clock, sleep=clock.sleep)
    assert len(webhook.bodies) == 1  # same story: no second alert
    stories = rows(settings.database, "SELECT DISTINCT story_id FROM items WHERE title LIKE '%EU%'")
    assert len(stories) == 1


def test_two_different_missile_reports_stay_two_stories(
    tmp_path: Path, http_server: LoopbackServer, webhook: WebhookServer
) -> None:
    settings = setup(
        tmp_path,
        http_server,
        [{"name": "hook", "url": webhook.apprise_url()}],
        alerts={"backlog": True, "max_age": "5d"},
    )
    clock = Clock()
    one = {
        "title": "North Korea fires ballistic missile into sea",
        "link": "https://a/1",
        "guid": "1",
    }
    publish(http_server, 0, one)
    run_once(settings, clock=clock, sleep=clock.sleep)
    clock.advance(days=2)
    two = {
        "title": "North Korea fires ballistic missile into sea",
        "link": "https://a/2",
        "guid": "2",
    }
    publish(http_server, 0, one, dict(two, date=clock.now), base=clock.now)
    run_once(settings, clock=clock, sleep=clock.sleep)
    assert len(webhook.bodies) == 2


def test_old_items_never_alert_and_churn_sends_one_summary(
    tmp_path: Path, http_server: LoopbackServer, webhook: WebhookServer
) -> None:
    settings = setup(tmp_path, http_server, [{"name": "hook", "url": webhook.apprise_url()}])
    clock = Clock()
    run_once(settings, clock=clock, sleep=clock.sleep)  # first poll: archive only
    clock.advance(hours=1)
    stale = dict(SEED, guid="stale", date=clock.now - timedelta(days=3))
    publish(http_server, 0, stale, base=clock.now)
    run_once(settings, clock=clock, sleep=clock.sleep)
    assert webhook.bodies == []  # older than max_age (2d)

    clock.advance(hours=1)
    rekeyed = [
        {"title": f"North Korea story {i}", "link": f"https://nk/{i}", "guid": f"new-{i}"}
        for i in range(12)
    ]
    publish(http_server, 0, *[dict(r, date=clock.now) for r in rekeyed], base=clock.now)
    run_once(settings, clock=clock, sleep=clock.sleep)
    assert len(webhook.bodies) == 1
    assert "12" in webhook.bodies[0]["title"] + webhook.bodies[0]["message"]
    assert [a[3] for a in alerts(settings)] == ["summary"]


def test_a_target_down_for_a_while_gets_each_alert_once(
    tmp_path: Path, http_server: LoopbackServer, webhook: WebhookServer
) -> None:
    settings = setup(
        tmp_path,
        http_server,
        [{"name": "hook", "url": webhook.apprise_url()}],
        alerts={"backlog": True},
    )
    clock = Clock()
    webhook.fail()
    publish(http_server, 0, SEED)
    summary = run_once(settings, clock=clock, sleep=clock.sleep)
    assert summary.alerts_failed == 1
    (row,) = rows(
        settings.database, "SELECT status, attempts, next_attempt_at, last_error FROM alerts"
    )
    assert row[0] == "failed" and row[1] == 1 and row[3]
    assert "s3cret" not in row[3]
    # not due yet: nothing is attempted
    run_once(settings, clock=clock, sleep=clock.sleep)
    assert rows(settings.database, "SELECT attempts FROM alerts") == [(1,)]
    for _ in range(3):  # still down: backoff grows
        clock.advance(hours=1)
        run_once(settings, clock=clock, sleep=clock.sleep)
    attempts, due = rows(settings.database, "SELECT attempts, next_attempt_at FROM alerts")[0]
    assert attempts == 4
    assert parse_iso(due) - clock.now == timedelta(seconds=240)  # 30 s doubling
    webhook.recover()
    clock.advance(hours=2)
    run_once(settings, clock=clock, sleep=clock.sleep)
    assert rows(settings.database, "SELECT status FROM alerts") == [("sent",)]
    received = [b for b in webhook.bodies if SEED["title"] in b["title"] + b["message"]]
    assert len(received) == 1


def test_an_alert_failing_for_a_day_becomes_dead(
    tmp_path: Path, http_server: LoopbackServer, webhook: WebhookServer
) -> None:
    settings = setup(
        tmp_path,
        http_server,
        [{"name": "hook", "url": webhook.apprise_url()}],
        alerts={"backlog": True},
    )
    clock = Clock()
    webhook.fail()
    publish(http_server, 0, SEED)
    run_once(settings, clock=clock, sleep=clock.sleep)
    for _ in range(30):
        clock.advance(hours=1)
        run_once(settings, clock=clock, sleep=clock.sleep)
    status, error = rows(settings.database, "SELECT status, last_error FROM alerts")[0]
    assert status == "dead" and error


def test_routing_by_rule_tags(
    tmp_path: Path, http_server: LoopbackServer, webhook: WebhookServer, smtp: SmtpServer
) -> None:
    rules = {
        "japan-eu-defense": RULES["japan-eu-defense"] + "notify: [email]\n",
        "north-korea": RULES["north-korea"] + "notify: [chat]\n",
    }
    settings = setup(
        tmp_path,
        http_server,
        [
            {"name": "mail", "url": smtp.apprise_url(), "tags": ["email"]},
            {"name": "hook", "url": webhook.apprise_url(), "tags": ["chat"]},
        ],
        rules=rules,
        alerts={"backlog": True},
    )
    clock = Clock()
    nk = {"title": "Pyongyang tests new engine", "link": "https://a/nk", "guid": "nk"}
    publish(http_server, 0, dict(SEED, description="Tokyo talks."), nk)
    run_once(settings, clock=clock, sleep=clock.sleep)
    assert len(smtp.messages) == 1 and len(webhook.bodies) == 1
    message = smtp.messages[0]
    assert SEED["title"] in message["Subject"]
    parts = email_parts(message)
    assert SEED["title"] in parts["text/plain"] and SEED["link"] in parts["text/plain"]
    assert "<html" in parts["text/html"].lower() or "<b>" in parts["text/html"]
    assert "Pyongyang" in webhook.bodies[0]["title"] + webhook.bodies[0]["message"]
    targets = rows(settings.database, "SELECT name, url_redacted, tags FROM targets ORDER BY name")
    assert [t[0] for t in targets] == ["hook", "mail"]
    assert all("s3cret" not in (t[1] or "") for t in targets)


def test_quiet_hours_hold_and_release_as_one_message(
    tmp_path: Path, http_server: LoopbackServer, webhook: WebhookServer
) -> None:
    rules = dict(RULES, urgent="name: Urgent\nquery: missile\npriority: high\n")
    settings = setup(
        tmp_path,
        http_server,
        [{"name": "hook", "url": webhook.apprise_url()}],
        rules=rules,
        alerts={"backlog": True, "quiet_hours": "23:00-07:00"},
    )
    clock = Clock(datetime(2024, 11, 1, 15, 0, tzinfo=UTC))  # 00:00 in Tokyo
    stories = [
        {"title": "North Korea envoy visits Moscow", "link": "https://a/1", "guid": "1"},
        {"title": "Pyongyang hosts trade fair", "link": "https://a/2", "guid": "2"},
        {"title": "Missile launch reported off coast", "link": "https://a/3", "guid": "3"},
    ]
    publish(http_server, 0, *stories, base=clock.now)
    run_once(settings, clock=clock, sleep=clock.sleep)
    assert len(webhook.bodies) == 1  # only the high-priority one
    assert "Missile" in webhook.bodies[0]["title"] + webhook.bodies[0]["message"]
    assert rows(settings.database, "SELECT count(*) FROM alerts WHERE status = 'held'") == [(2,)]
    clock.advance(hours=3)  # 03:00: still quiet
    run_once(settings, clock=clock, sleep=clock.sleep)
    assert len(webhook.bodies) == 1
    clock.advance(hours=5)  # 08:00 in Tokyo
    run_once(settings, clock=clock, sleep=clock.sleep)
    assert len(webhook.bodies) == 2
    combined = webhook.bodies[1]["title"] + webhook.bodies[1]["message"]
    assert "envoy" in combined and "trade fair" in combined
    assert rows(settings.database, "SELECT count(*) FROM alerts WHERE status = 'sent'") == [(3,)]


def test_digest_rule_batches_until_its_cron_time(
    tmp_path: Path, http_server: LoopbackServer, webhook: WebhookServer
) -> None:
    rules = {"north-korea": RULES["north-korea"] + 'digest: "0 8 * * *"\n'}
    settings = setup(
        tmp_path,
        http_server,
        [{"name": "hook", "url": webhook.apprise_url()}],
        rules=rules,
        alerts={"backlog": True, "max_age": "3d"},
    )
    clock = Clock(datetime(2024, 11, 1, 3, 0, tzinfo=UTC))  # 12:00 in Tokyo
    for i in range(3):
        item = {"title": f"North Korea update {i}", "link": f"https://a/{i}", "guid": str(i)}
        publish(
            http_server,
            0,
            *[
                {"title": f"North Korea update {j}", "link": f"https://a/{j}", "guid": str(j)}
                for j in range(i + 1)
            ],
            base=clock.now,
        )
        run_once(settings, clock=clock, sleep=clock.sleep)
        del item
        clock.advance(hours=4)
    assert webhook.bodies == []
    clock.now = datetime(2024, 11, 1, 23, 1, tzinfo=UTC)  # 08:01 on 2 Nov in Tokyo
    run_once(settings, clock=clock, sleep=clock.sleep)
    assert len(webhook.bodies) == 1
    text = webhook.bodies[0]["title"] + webhook.bodies[0]["message"]
    assert "Digest" in text and all(f"update {i}" in text for i in range(3))


def test_rate_limit_holds_the_rest_and_folds_them_into_one_summary(
    tmp_path: Path, http_server: LoopbackServer, webhook: WebhookServer
) -> None:
    settings = setup(
        tmp_path,
        http_server,
        [{"name": "hook", "url": webhook.apprise_url()}],
        alerts={"backlog": True, "rate_limit": "2/h"},
    )
    clock = Clock()
    many = [
        {"title": f"Pyongyang report number {i}", "link": f"https://a/{i}", "guid": str(i)}
        for i in range(5)
    ]
    publish(http_server, 0, *many)
    summary = run_once(settings, clock=clock, sleep=clock.sleep)
    assert len(webhook.bodies) == 2 and summary.alerts_held == 3
    clock.advance(minutes=30)
    run_once(settings, clock=clock, sleep=clock.sleep)
    assert len(webhook.bodies) == 2  # still no room
    clock.advance(minutes=31)
    run_once(settings, clock=clock, sleep=clock.sleep)
    assert len(webhook.bodies) == 3
    assert "3 stories" in webhook.bodies[2]["title"] + webhook.bodies[2]["message"]
    assert rows(settings.database, "SELECT status, count(*) FROM alerts GROUP BY status") == [
        ("sent", 5)
    ]


def test_telegram_pacing_and_429(
    tmp_path: Path, http_server: LoopbackServer, telegram: TelegramServer
) -> None:
    settings = setup(
        tmp_path,
        http_server,
        [{"name": "tg", "url": telegram.apprise_url("-100123")}],
        alerts={"backlog": True},
    )
    clock = Clock()
    many = [
        {"title": f"Pyongyang report number {i}", "link": f"https://a/{i}", "guid": str(i)}
        for i in range(25)
    ]
    publish(http_server, 0, *many)
    telegram.throttle(1, retry_after=7)
    start = clock.now
    run_once(settings, clock=clock, sleep=clock.sleep)
    sent = telegram.messages["-100123"]
    # one 429 (paused 7 s), then at most 20 a minute within the 30 s the pass may wait
    assert 1 <= len(sent) <= 20
    stamps = rows(settings.database, "SELECT sent_at FROM deliveries ORDER BY id")
    assert len(stamps) == len(sent)
    assert (clock.now - start).total_seconds() >= 7
    for _ in range(5):
        clock.advance(minutes=1)
        run_once(settings, clock=clock, sleep=clock.sleep)
    assert len(telegram.messages["-100123"]) == 25
    assert rows(settings.database, "SELECT count(*) FROM alerts WHERE status = 'sent'") == [(25,)]
    assert rows(settings.database, "SELECT count(*) FROM alerts WHERE attempts = 2") == [(1,)]
    assert [r.error_code for r in telegram.rejected] == [429]  # only the scripted one


def test_health_failing_once_and_recovered_once(
    tmp_path: Path, http_server: LoopbackServer, webhook: WebhookServer
) -> None:
    settings = setup(
        tmp_path,
        http_server,
        [{"name": "ops", "url": webhook.apprise_url(), "tags": ["admin"]}],
        health={"notify": ["admin"], "failures": 3},
    )
    clock = Clock()
    run_once(settings, clock=clock, sleep=clock.sleep)
    http_server.route("/feed0.xml", status=500)
    for _ in range(5):
        clock.advance(days=1)
        run_once(settings, clock=clock, sleep=clock.sleep)
    failing = [b for b in webhook.bodies if "failing" in b["title"]]
    assert len(failing) == 1
    publish(http_server, 0, base=clock.now)
    clock.advance(days=1)
    run_once(settings, clock=clock, sleep=clock.sleep)
    recovered = [b for b in webhook.bodies if "recovered" in b["title"]]
    assert len(recovered) == 1 and len(webhook.bodies) == 2


def test_health_stale_source(
    tmp_path: Path, http_server: LoopbackServer, webhook: WebhookServer
) -> None:
    settings = setup(tmp_path, http_server, [{"name": "ops", "url": webhook.apprise_url()}])
    clock = Clock()
    hourly = [
        {
            "title": f"Hourly bulletin {i}",
            "link": f"https://a/h{i}",
            "guid": f"h{i}",
            "date": clock.now - timedelta(hours=i),
        }
        for i in range(10)
    ]
    publish(http_server, 0, *hourly)
    run_once(settings, clock=clock, sleep=clock.sleep)
    clock.advance(hours=3)
    run_once(settings, clock=clock, sleep=clock.sleep)
    assert webhook.bodies == []
    clock.advance(hours=3)  # six hours of silence, five times the usual hour
    run_once(settings, clock=clock, sleep=clock.sleep)
    assert [b["title"] for b in webhook.bodies] == ["Source 0 has gone quiet"]
    clock.advance(hours=1)
    publish(
        http_server,
        0,
        *hourly,
        {"title": "Hourly bulletin again", "link": "https://a/n", "guid": "n", "date": clock.now},
        base=clock.now,
    )
    run_once(settings, clock=clock, sleep=clock.sleep)
    assert [b["title"] for b in webhook.bodies][-1] == "Source 0 has recovered"


def test_no_targets_prints_alerts_to_stdout(
    tmp_path: Path, http_server: LoopbackServer, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = setup(tmp_path, http_server, [], alerts={"backlog": True})
    publish(http_server, 0, SEED)
    clock = Clock()
    run_once(settings, clock=clock, sleep=clock.sleep)
    out = capsys.readouterr().out
    assert SEED["title"] in out and "Japan–EU defense partnership" in out
    assert rows(settings.database, "SELECT target, status FROM alerts") == [("stdout", "sent")]
    assert json.loads(rows(settings.database, "SELECT rules FROM alerts")[0][0])


def test_an_edit_into_a_near_duplicate_title_does_not_jam_the_source(
    tmp_path: Path, http_server: LoopbackServer, webhook: WebhookServer
) -> None:
    settings = setup(
        tmp_path,
        http_server,
        [{"name": "hook", "url": webhook.apprise_url()}],
        alerts={"backlog": True},
    )
    clock = Clock()
    a = {
        "title": "North Korea fires ballistic missile into the East Sea",
        "link": "https://a/a",
        "guid": "a",
    }
    b = {"title": "Pyongyang holds a military parade downtown", "link": "https://a/b", "guid": "b"}
    publish(http_server, 0, a, b)
    run_once(settings, clock=clock, sleep=clock.sleep)
    assert len(webhook.bodies) == 2
    clock.advance(minutes=10)
    edited = dict(b, title="North Korea fires ballistic missile into East Sea")
    c = {"title": "DPRK envoy arrives in Moscow", "link": "https://a/c", "guid": "c"}
    publish(http_server, 0, a, edited, dict(c, date=clock.now), base=clock.now)
    summary = run_once(settings, clock=clock, sleep=clock.sleep)
    assert summary.failed == [] and summary.items_new == 1
    assert "DPRK envoy" in webhook.bodies[-1]["title"]
