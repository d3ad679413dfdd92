"""Commands around the pipeline: check, status, alerts retry|ack, notify test, rules, sources."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

from click.testing import CliRunner
from helpers import rows, rss, write_config
from notify_servers import WebhookServer
from servers import LoopbackServer

from scraper.cli import main

RULE = "name: North Korea\nquery: Pyongyang OR DPRK\n"


def invoke(config: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["--config", str(config), *args])
    return result.exit_code, result.output


def test_check_reports_bad_targets_and_unroutable_rules(tmp_path: Path) -> None:
    config = write_config(
        tmp_path,
        [{"name": "A", "url": "https://example.com/feed"}],
        rules={"nk": RULE + "notify: [nobody]\n"},
        targets=[{"name": "bad", "url": "notaservice://s3cret@x"}],
    )
    code, out = invoke(config, "check")
    assert code == 2
    assert "bad" in out and "s3cret" not in out
    assert "rule nk: notify ['nobody'] matches no target" in out


def test_check_ok_and_rules_check_errors(tmp_path: Path) -> None:
    config = write_config(
        tmp_path, [{"name": "A", "url": "https://example.com/feed"}], rules={"nk": RULE}
    )
    code, out = invoke(config, "check")
    assert code == 0 and "ok (1 sources, 1 rules" in out
    (tmp_path / "rules" / "broken.yaml").write_text("name: x\nquery: Japan AND (EU\n")
    code, out = invoke(config, "rules", "check")
    assert code == 1
    assert "broken.yaml:2:" in out
    code, out = invoke(config, "check")
    assert code == 2


def build_archive(tmp_path: Path, server: LoopbackServer, hook: WebhookServer) -> Path:
    items = [
        {"title": "Pyongyang fires missile", "link": "https://a/1", "guid": "1"},
        {"title": "Tokyo weather", "link": "https://a/2", "guid": "2"},
    ]
    url = server.route(
        "/f.xml", rss(items, now=datetime.now(UTC)), content_type="application/rss+xml"
    )
    return write_config(
        tmp_path,
        [{"name": "Wire", "url": url}],
        rules={"nk": RULE},
        targets=[{"name": "hook", "url": hook.apprise_url()}],
        tables={"alerts": {"backlog": True}},
    )


def test_status_retry_and_ack(
    tmp_path: Path, http_server: LoopbackServer, webhook: WebhookServer
) -> None:
    config = build_archive(tmp_path, http_server, webhook)
    webhook.fail()
    code, out = invoke(config, "run", "--once")
    assert code == 0 and "1 failed" in out
    db = tmp_path / "state" / "news.db"
    conn = sqlite3.connect(db)
    conn.execute("UPDATE alerts SET status = 'dead'")
    conn.commit()
    conn.close()
    code, out = invoke(config, "status")
    assert code == 1
    assert "Wire" in out and "1 dead" in out and "Pyongyang fires missile" in out

    code, out = invoke(config, "alerts", "retry")
    assert code == 0 and "1 alert(s) requeued" in out
    webhook.recover()
    code, out = invoke(config, "run", "--once")
    assert "1 alert(s) sent" in out
    assert rows(db, "SELECT status, attempts FROM alerts") == [("sent", 1)]
    code, out = invoke(config, "status")
    assert code == 0 and "1 sent" in out

    conn = sqlite3.connect(db)
    conn.execute("UPDATE alerts SET status = 'failed'")
    conn.commit()
    conn.close()
    code, out = invoke(config, "alerts", "ack", "1")
    assert code == 0 and "1 alert(s) acknowledged" in out
    code, _ = invoke(config, "status")
    assert code == 0


def test_notify_test_reports_each_target(tmp_path: Path, webhook: WebhookServer) -> None:
    config = write_config(
        tmp_path,
        [{"name": "A", "url": "https://example.com/feed"}],
        targets=[
            {"name": "hook", "url": webhook.apprise_url(), "tags": ["chat"]},
            {"name": "down", "url": "json://127.0.0.1:9/none", "tags": ["ops"]},
        ],
    )
    code, out = invoke(config, "notify", "test", "--tag", "chat")
    assert code == 0 and "ok      hook" in out
    assert len(webhook.bodies) == 1 and "test" in webhook.bodies[0]["title"]
    code, out = invoke(config, "notify", "test")
    assert code == 1 and "FAILED  down" in out


def test_rules_test_backtests_the_archive(
    tmp_path: Path, http_server: LoopbackServer, webhook: WebhookServer
) -> None:
    config = build_archive(tmp_path, http_server, webhook)
    invoke(config, "run", "--once")
    before = rows(tmp_path / "state" / "news.db", "SELECT count(*) FROM alerts")
    code, out = invoke(config, "rules", "test", "nk")
    assert code == 0
    assert "rule nk" in out and "1 item(s) matched" in out and "Pyongyang fires missile" in out
    code, out = invoke(config, "rules", "test", "--query", "weather")
    assert "1 item(s) matched" in out and "Tokyo weather" in out
    code, out = invoke(config, "rules", "test", "--query", "Japan AND (")
    assert code == 2 and "query, column 12: expected" in out and "           ^" in out
    assert rows(tmp_path / "state" / "news.db", "SELECT count(*) FROM alerts") == before


def test_sources_import_export_round_trip(tmp_path: Path) -> None:
    config = write_config(tmp_path, [{"name": "A", "url": "https://example.com/feed"}])
    opml = tmp_path / "feeds.opml"
    opml.write_text(
        '<?xml version="1.0"?><opml version="2.0"><body><outline text="Asia">'
        '<outline type="rss" text="Korea Wire" xmlUrl="https://korea.example/rss"/>'
        '<outline type="rss" text="Dup" xmlUrl="https://EXAMPLE.com/feed"/>'
        "</outline></body></opml>"
    )
    code, out = invoke(config, "sources", "import", str(opml))
    assert code == 0 and "1 source(s) added, 1 already present" in out
    code, out = invoke(config, "sources", "list")
    assert "Korea Wire" in out and "[asia]" in out
    code, out = invoke(config, "sources", "export")
    assert 'xmlUrl="https://korea.example/rss"' in out
