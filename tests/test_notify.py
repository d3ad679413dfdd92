"""Delivery through Apprise to real loopback servers: SMTP, a JSON webhook, a Telegram stand-in."""

from __future__ import annotations

import json
import logging
import socket
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from email.header import decode_header, make_header
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from notify_servers import (
    SmtpServer,
    TelegramServer,
    WebhookServer,
    email_parts,
    telegram_html_text,
)

from scraper.messages import Notification, StoryAlert, render_telegram, render_text
from scraper.notify import Notifier, SecretFilter, SendResult, check_targets
from scraper.settings import Settings, Target

TZ = "Asia/Tokyo"
WHEN = datetime(2024, 11, 1, 5, 30, tzinfo=UTC)
HOSTILE = "</a><script>alert(1)</script> *_[ <b> &amp;"


def story(**changes: Any) -> StoryAlert:
    values: dict[str, Any] = {
        "title": "Japan and EU sign defense pact",
        "source": "Kyodo",
        "url": "https://example.com/news/1?src=feed&x=1",
        "published_at": WHEN,
        "rules": ("Japan–EU defense partnership",),
        "terms": ("Japan", "EU"),
        "snippet": "Japan and the EU agreed a defense pact on Friday.",
        "also_reported_by": ("NHK",),
    }
    values.update(changes)
    return StoryAlert(**values)


def alert(s: StoryAlert | None = None) -> Notification:
    s = s or story()
    return Notification("story", s.title, (s,))


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to resolve a name other than loopback fails the test (no real service)."""
    real = socket.getaddrinfo

    def guarded(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host not in ("127.0.0.1", "localhost", b"127.0.0.1", b"localhost"):
            raise AssertionError(f"test tried to reach {host!r}")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", guarded)


@pytest.fixture(autouse=True)
def no_server_thread_left() -> Iterator[None]:
    before = set(threading.enumerate())
    yield
    left = [t.name for t in set(threading.enumerate()) - before if t.name != "MainThread"]
    # Apprise keeps one process-wide executor for its own dispatch; every server thread is gone.
    assert [name for name in left if not name.startswith("ThreadPoolExecutor")] == []


def notifier(*targets: Target) -> Notifier:
    return Notifier(targets, timezone=TZ)


# --- email -------------------------------------------------------------------------------------


def test_email_has_subject_html_and_text_parts(smtp: SmtpServer) -> None:
    target = Target("mail", smtp.apprise_url(), ("email",))
    s = story(title=f"Japan {HOSTILE}", snippet=f"Japan and EU {HOSTILE}")
    result = notifier(target).send(target, alert(s))
    assert result == SendResult(ok=True)
    assert smtp.logins == ["alerts"]
    [msg] = smtp.messages
    assert str(make_header(decode_header(msg["Subject"]))) == f"Japan {HOSTILE}"
    assert msg.get_content_type() == "multipart/alternative"
    parts = email_parts(msg)
    assert set(parts) == {"text/plain", "text/html"}
    text, html = parts["text/plain"], parts["text/html"]
    assert f"Japan {HOSTILE}" in text
    assert "https://example.com/news/1?src=feed&x=1" in text
    assert "Kyodo · 1 Nov 2024 14:30 JST" in text
    assert "<script>" not in html
    assert "Japan &lt;/a&gt;&lt;script&gt;alert(1)&lt;/script&gt; *_[ &lt;b&gt; &amp;amp;" in html
    assert "<b>Japan</b> and <b>EU</b>" in html
    assert 'href="https://example.com/news/1?src=feed&amp;x=1"' in html


def test_email_digest_is_one_message(smtp: SmtpServer) -> None:
    target = Target("mail", smtp.apprise_url(), ())
    stories = tuple(story(title=f"Story {i}", url=f"https://example.com/{i}") for i in range(30))
    n = Notification("digest", "Digest: Japan (30 stories)", stories)
    assert notifier(target).send(target, n).ok
    [msg] = smtp.messages
    text = email_parts(msg)["text/plain"]
    assert all(f"Story {i}" in text and f"https://example.com/{i}" in text for i in range(30))


# --- webhook -----------------------------------------------------------------------------------


def test_webhook_gets_the_plain_text_message(webhook: WebhookServer) -> None:
    target = Target("hook", webhook.apprise_url(), ())
    n = alert(story(title=f"Japan {HOSTILE}"))
    assert notifier(target).send(target, n) == SendResult(ok=True)
    [body] = webhook.bodies
    assert body["title"] == f"Japan {HOSTILE}"
    assert body["message"] == render_text(n, ZoneInfo(TZ))
    assert body["type"] == "info"


def test_failing_webhook_reports_a_redacted_error_then_recovers(webhook: WebhookServer) -> None:
    target = Target("hook", webhook.apprise_url(user="bob", password="hunter2-secret"), ())
    n = notifier(target)
    webhook.fail()
    result = n.send(target, alert())
    assert not result.ok and result.retry_after is None
    assert result.error is not None
    assert result.error.startswith(n.redacted(target) + ": ")
    assert "500" in result.error
    assert "hunter2-secret" not in result.error
    webhook.recover()
    assert n.send(target, alert()).ok
    assert webhook.failed == 1 and len(webhook.bodies) == 1


def test_unreachable_webhook_is_a_failed_send_not_an_exception() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once closed
    target = Target("down", f"json://user:topsecret-pw@127.0.0.1:{port}/hook", ())
    result = notifier(target).send(target, alert())
    assert not result.ok
    assert result.error and "topsecret-pw" not in result.error


# --- Telegram ----------------------------------------------------------------------------------


def test_telegram_gets_exactly_what_was_rendered(telegram: TelegramServer) -> None:
    target = Target("tg", telegram.apprise_url("-100123"), ("telegram",))
    n = alert()
    assert notifier(target).send(target, n) == SendResult(ok=True)
    [msg] = telegram.messages["-100123"]
    assert msg.parse_mode == "HTML"
    assert msg.text == render_telegram(n, ZoneInfo(TZ))
    assert msg.visible.startswith("Japan and EU sign defense pact\nKyodo · 1 Nov 2024 14:30 JST")
    assert '<a href="https://example.com/news/1?src=feed&amp;x=1">' in msg.text
    assert telegram.calls == ["sendMessage"]


def test_telegram_hostile_story_is_accepted_and_shown_literally(telegram: TelegramServer) -> None:
    target = Target("tg", telegram.apprise_url(), ())
    s = story(title=f"Japan {HOSTILE}", source=f"Src {HOSTILE}", snippet=f"Japan {HOSTILE}")
    assert notifier(target).send(target, alert(s)).ok
    [msg] = telegram.all_messages()
    assert msg.text == render_telegram(alert(s), ZoneInfo(TZ))
    assert msg.visible.count(HOSTILE) == 3
    assert not telegram.rejected


def test_telegram_huge_snippet_and_big_digest_fit(telegram: TelegramServer) -> None:
    target = Target("tg", telegram.apprise_url(), ())
    n = notifier(target)
    huge = story(title="Japan " * 1000, snippet="Japan <b>&amp; EU " * 1200)
    assert n.send(target, alert(huge)).ok
    stories = tuple(
        story(title=f"Story {i} {HOSTILE}", url=f"https://example.com/{i}") for i in range(300)
    )
    digest = Notification("digest", "Digest: Japan (300 stories)", stories)
    assert n.send(target, digest).ok
    assert not telegram.rejected
    first, second = telegram.all_messages()
    assert first.text == render_telegram(alert(huge), ZoneInfo(TZ))
    assert second.text == render_telegram(digest, ZoneInfo(TZ))
    for msg in (first, second):
        assert len(msg.text) <= 4096
        telegram_html_text(msg.text)
    assert second.visible.rstrip().split("\n")[-1].startswith("…and ")


def post(url: str, payload: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        url, json.dumps(payload).encode(), {"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        with e:
            return e.code, json.loads(e.read())


def test_the_stand_in_rejects_what_telegram_rejects(telegram: TelegramServer) -> None:
    send = f"{telegram.api_url}{telegram.token}/sendMessage"
    ok = {"chat_id": "1", "parse_mode": "HTML"}
    assert (
        post(send, {**ok, "text": "<b>bold</b> &lt;&amp;&gt; &#128512; <a href='x'>y</a>"})[0]
        == 200
    )
    for text in (
        "<b>open",
        "<div>x</div>",
        "a &nbsp; b",
        "<b><i>x</b></i>",
        "a & b",
        "a > b",
        "1 < 2",
        "<code><b>x</b></code>",
    ):
        status, answer = post(send, {**ok, "text": text})
        assert status == 400, text
        assert answer["description"].startswith("Bad Request: can't parse entities: "), text
    assert (
        post(send, {**ok, "text": "x" * 4097})[1]["description"]
        == "Bad Request: message is too long"
    )
    assert post(send, {**ok, "text": "&lt;" * 4096})[0] == 200  # counted after parsing
    assert post(send, {**ok, "text": "😀" * 2049})[0] == 400  # UTF-16 code units
    assert post(send, {"chat_id": "1", "text": "<b>open"})[0] == 200  # no parse mode: plain
    assert post(f"{telegram.api_url}0:wrong/sendMessage", {**ok, "text": "x"})[0] == 401
    assert post(f"{telegram.api_url}{telegram.token}/getMe", {})[1]["result"]["is_bot"]
    telegram.throttle(1, retry_after=9)
    status, answer = post(send, {**ok, "text": "x"})
    assert (status, answer["parameters"]) == (429, {"retry_after": 9})
    assert len(telegram.messages["1"]) == 3


def test_telegram_429_gives_retry_after(telegram: TelegramServer) -> None:
    target = Target("tg", telegram.apprise_url(), ())
    n = notifier(target)
    telegram.throttle(1, retry_after=7)
    result = n.send(target, alert())
    assert result.ok is False
    assert result.retry_after == 7.0
    assert result.error and "429" in result.error
    assert telegram.token not in result.error
    assert telegram.token.split(":")[1] not in result.error
    assert n.send(target, alert()).ok  # throttling over


def test_no_secret_reaches_the_logs(
    telegram: TelegramServer, caplog: pytest.LogCaptureFixture
) -> None:
    target = Target("tg", telegram.apprise_url(), ())
    n = notifier(target)
    caplog.handler.addFilter(n.log_filter())  # as cli.py does on its handlers
    caplog.set_level(logging.DEBUG)
    telegram.throttle(1, retry_after=3)
    assert not n.send(target, alert()).ok
    assert n.send(target, alert()).ok
    # Apprise's and urllib3's DEBUG lines carry the bot token in the request path: masked
    assert "Telegram POST URL" in caplog.text and "POST /bot****/sendMessage" in caplog.text
    assert telegram.token not in caplog.text
    assert telegram.token.split(":")[1] not in caplog.text


def test_secret_filter_masks_records() -> None:
    record = logging.LogRecord("apprise", logging.DEBUG, __file__, 1, "POST %s", ("t0ken",), None)
    assert SecretFilter({"t0ken"}).filter(record)
    assert record.getMessage() == "POST ****"


# --- targets -----------------------------------------------------------------------------------


def test_redacted_hides_passwords_and_tokens() -> None:
    mail = Target("mail", "mailtos://me:pa55word-x@smtp.example.com?to=me@example.com", ())
    tg = Target("tg", "tgram://123456789:AAHsecretTokenValue_123/-100123", ())
    hook = Target("hook", "json://user:hookpass99@127.0.0.1:9/x", ())
    n = notifier(mail, tg, hook)
    assert n.redacted(mail).startswith("mailtos://me:****@smtp.example.com")
    assert "pa55word-x" not in n.redacted(mail)
    assert n.redacted(tg).startswith("tgram://1...3/-100123")
    assert "AAHsecretTokenValue_123" not in n.redacted(tg)
    assert n.redacted(hook).startswith("json://user:****@127.0.0.1:9/x")
    assert "overflow=" not in n.redacted(hook)


def test_targets_for_routes_by_tag() -> None:
    a = Target("a", "json://127.0.0.1:9/a", ("email", "admin"))
    b = Target("b", "json://127.0.0.1:9/b", ("telegram",))
    c = Target("c", "json://127.0.0.1:9/c", ())
    n = notifier(a, b, c)
    assert n.targets_for(None) == [a, b, c]
    assert n.targets_for(["admin"]) == [a]
    assert n.targets_for(["telegram", "email"]) == [a, b]
    assert n.targets_for(["nobody"]) == []
    assert n.targets_for([]) == []


def test_invalid_url_is_flagged_and_fails_without_leaking(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    good = Target("ok", "json://127.0.0.1:9/a", ())
    bad = Target("tg", "tgram://123456789:AAH$s3cr3t/123", ())
    unknown = Target("x", "nosuch://user:sup3rs3cret@smtp.example.com/p", ())
    settings = Settings(
        path=Path("scraper.toml"),
        database=Path("news.db"),
        rules=Path("rules"),
        targets=(good, bad, unknown),
    )
    problems = check_targets(settings)
    assert problems == [
        '[[targets]] "tg": not a valid Apprise URL: tgram://***/…',
        '[[targets]] "x": not a valid Apprise URL: nosuch://***@smtp.example.com/…',
    ]
    n = notifier(good, bad)
    result = n.send(bad, alert())
    assert not result.ok and result.error == "tgram://***/…: not a valid Apprise URL"
    assert "s3cr3t" not in n.redacted(bad)
    assert "s3cr3t" not in caplog.text  # Apprise would log the rejected token verbatim
