"""`scraper serve`: a real Datasette process on loopback over an archive built by a real
`run --once` (feeds from a loopback server, a target whose URL carries a password)."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from helpers import rss, write_config
from servers import LoopbackServer

from scraper.app import run_once
from scraper.cli import main
from scraper.serve import Server, ensure_views, load_metadata, start
from scraper.settings import Settings, load_settings
from scraper.store import VIEWS, Store

SECRET = "Pa55-w0rd-XYZZY-31337"
ENV = {"HOOK_PASS": SECRET}
WIRE = [
    {
        "title": "Japan and EU sign security and defense partnership",
        "link": "https://example.com/japan-eu-pact?utm_source=rss",
        "guid": "pact",
        "description": "TOKYO – Japan and the EU signed a defence pact in Brussels.",
    },
    {
        "title": "北朝鮮が弾道ミサイルを発射、日本政府が抗議",
        "link": "https://example.jp/nk",
        "guid": "nk-ja",
        "description": "防衛省によると、北朝鮮は日本海に向けて弾道ミサイルを発射した。",
    },
    {
        "title": "북한이 탄도미사일을 발사했다",
        "link": "https://example.kr/nk",
        "guid": "nk-ko",
        "description": "합동참모본부는 북한이 동해상으로 미사일을 쐈다고 밝혔다.",
    },
    {"title": "EUR slips against the yen", "link": "https://example.com/fx", "guid": "fx"},
]
OTHER = [  # another copy of the pact story (same canonical URL): "also reported by"
    {
        "title": "Japan, EU seal defence partnership",
        "link": "https://example.com/japan-eu-pact",
        "guid": "other-pact",
        "description": "The EU and Japan agreed on closer defence ties.",
    }
]
RULES = {
    "north-korea": 'name: North Korea\nquery: 北朝鮮 OR 북한 OR "North Korea"\n',
    "japan-eu": "name: Japan and the EU\nquery: Japan AND EU\n",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback, no proxy


def fetch(url: str) -> tuple[int, bytes]:
    try:
        with OPENER.open(url, timeout=20) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def wait_until_up(url: str, process: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, f"exited with {process.returncode}"
        try:
            if fetch(f"{url}-/versions.json")[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"no answer from {url}")


@dataclass
class Archive:
    folder: Path
    config: Path
    settings: Settings
    feeds: LoopbackServer

    @property
    def database(self) -> Path:
        return self.settings.database


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Archive]:
    folder = tmp_path_factory.mktemp("serve")
    feeds = LoopbackServer().start()
    now = datetime.now(UTC)
    kind = "application/rss+xml"
    closed = free_port()  # deliveries fail: alerts end up failed, with an error recorded
    config = write_config(
        folder,
        [
            {
                "name": "Wire",
                "url": feeds.route("/wire.xml", rss(WIRE, now=now), content_type=kind),
            },
            {"name": "Other", "url": feeds.route("/o.xml", rss(OTHER, now=now), content_type=kind)},
            {"name": "Gone", "url": feeds.url("/gone.xml")},
        ],
        rules=RULES,
        tables={"alerts": {"backlog": True}},
        targets=[{"name": "hook", "url": f"json://alice:${{HOOK_PASS}}@127.0.0.1:{closed}/hook"}],
    )
    result = CliRunner(env=ENV).invoke(main, ["--config", str(config), "run", "--once"])
    assert result.exit_code == 0, result.output
    assert "5 item(s) new" in result.output
    settings = load_settings(config, {**os.environ, **ENV})
    yield Archive(folder, config, settings, feeds)
    feeds.stop()


@pytest.fixture(scope="module")
def served(archive: Archive) -> Iterator[Server]:
    log = (archive.folder / "datasette.log").open("wb")
    server = start(archive.database, port=free_port(), stdout=log, stderr=subprocess.STDOUT)
    with server:
        server.wait_ready()
        yield server
    log.close()
    text = (archive.folder / "datasette.log").read_text("utf-8", "replace")
    assert "database is locked" not in text


def get_json(server: Server, path: str, **params: str) -> Any:
    query = urllib.parse.urlencode(params)
    status, body = fetch(f"{server.url}{path}{'?' + query if query else ''}")
    assert status == 200, (path, params, body[:500])
    return json.loads(body)


def titles(rows: list[dict[str, Any]]) -> list[str]:
    return sorted(row["title"] for row in rows)


def test_search_box_finds_stories_in_any_script(served: Server) -> None:
    def search(q: str) -> list[str]:
        return titles(get_json(served, "news/items.json", _search=q, _shape="array"))

    assert search("EU") == sorted([WIRE[0]["title"], OTHER[0]["title"]])  # not "EUR"
    assert search("北朝鮮") == [WIRE[1]["title"]]  # inside a Japanese sentence
    assert search("북한") == [WIRE[2]["title"]]  # inside 북한이
    assert search("日本海") == [WIRE[1]["title"]]
    assert search("defence Brussels") == [WIRE[0]["title"]]
    assert titles(
        get_json(
            served, "news/items.json", _search="北朝鮮 OR 북한", _searchmode="raw", _shape="array"
        )
    ) == sorted([WIRE[1]["title"], WIRE[2]["title"]])
    # the page keeps the words as typed in the search box
    status, page = fetch(f"{served.url}news/items?_search={urllib.parse.quote('北朝鮮')}")
    assert status == 200
    assert 'name="_search" value="北朝鮮"' in page.decode()


def test_every_canned_query_answers(archive: Archive, served: Server) -> None:
    queries = load_metadata(archive.database)["databases"]["news"]["queries"]
    assert len(queries) >= 6
    answers = {name: get_json(served, f"news/{name}.json", _shape="array") for name in queries}
    assert all(isinstance(rows, list) for rows in answers.values())

    # search: highlighted title and snippet, rendered as <mark> in the HTML page
    (hit,) = get_json(served, "news/search.json", q="北朝鮮", _shape="array")
    assert hit["title_highlight"] == "**北朝鮮**が弾道ミサイルを発射、日本政府が抗議"
    assert "**北朝鮮**は日本海" in hit["snippet"]
    rows = get_json(served, "news/search.json", q="defen* NOT Brussels", _shape="array")
    assert titles([{"title": r["url"]} for r in rows]) == ["https://example.com/japan-eu-pact"]
    status, page = fetch(f"{served.url}news/search?q={urllib.parse.quote('EU pact')}")
    assert status == 200 and "<mark>EU</mark>" in page.decode()

    # latest matches of one rule, with links
    matches = get_json(served, "news/latest_matches.json", rule="north-korea", _shape="array")
    assert {m["rule"] for m in matches} == {"north-korea"} and len(matches) == 2
    assert {m["url"] for m in matches} == {"https://example.jp/nk", "https://example.kr/nk"}
    assert len(answers["latest_matches"]) == 4  # every rule: 2 + the two copies of the pact

    # one story with its copies
    shared = answers["story"]
    assert {r["source"] for r in shared} == {"Wire", "Other"}  # polled concurrently
    assert sorted(r["copy"] for r in shared) == ["also reported by", "first"]
    story = get_json(served, "news/story.json", story_id=str(shared[0]["story_id"]), _shape="array")
    assert len(story) == 2

    attention = answers["sources_needing_attention"]
    assert [(s["name"], s["problem"]) for s in attention] == [("Gone", "failing")]

    undelivered = answers["alerts_not_delivered"]
    assert undelivered and {a["status"] for a in undelivered} == {"failed"}
    assert {a["target"] for a in undelivered} == {"hook"}
    assert all(a["reason"] for a in undelivered)

    per_day = answers["items_per_source_per_day"]
    assert {(r["source"], r["items"]) for r in per_day} == {("Wire", 4), ("Other", 1)}


def test_metadata_views_and_facets(served: Server) -> None:
    metadata = get_json(served, "-/metadata.json")
    items = metadata["databases"]["news"]["tables"]["items"]
    assert items["fts_table"] == "items_search" and items["columns"]["story_id"]
    for view in ("item_list", "match_list", "story_copies", "alert_list"):
        assert get_json(served, f"news/{view}.json", _shape="array")
    facets = get_json(served, "news/alerts.json", _facet="status")["facet_results"]
    assert "status" in facets
    assert get_json(served, "news/story_copies.json", _shape="array")[0]["copies"] == 2


def test_the_served_database_is_read_only(archive: Archive, served: Server) -> None:
    (database,) = [d for d in get_json(served, "-/databases.json") if d["name"] == "news"]
    assert database["is_mutable"] is True  # not immutable: the scraper keeps writing
    for sql in (
        "delete from items",
        "update items set title = 'x'",
        "select 1; delete from items",
        "attach database ':memory:' as x",
    ):
        status, _ = fetch(f"{served.url}news.json?sql={urllib.parse.quote(sql)}")
        assert status == 400, sql
    conn = sqlite3.connect(archive.database)
    assert conn.execute("SELECT count(*) FROM items WHERE title = 'x'").fetchone() == (0,)
    conn.close()


def test_secrets_never_reach_the_database(archive: Archive, served: Server) -> None:
    conn = sqlite3.connect(archive.database)
    conn.text_factory = bytes
    needle = SECRET.encode()
    tables = [
        r[0].decode() for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
    ]
    assert "targets" in tables and "items_search_data" in tables
    for table in tables:
        for row in conn.execute(f"SELECT * FROM [{table}]"):
            for value in row:
                if isinstance(value, bytes):
                    assert needle not in value, table
    redacted = conn.execute("SELECT url_redacted FROM targets").fetchall()
    conn.close()
    assert redacted and all(r[0] for r in redacted)
    for path in archive.database.parent.glob(f"{archive.database.name}*"):  # -wal included
        assert needle not in path.read_bytes(), path
    status, body = fetch(f"{served.url}news/targets.json?_shape=array")
    assert status == 200 and needle not in body and b"hook" in body


def test_the_scraper_writes_while_datasette_reads(archive: Archive, served: Server) -> None:
    paths = [
        "news/items.json?_search=EU&_shape=array",
        f"news/items.json?_search={urllib.parse.quote('北朝鮮')}",
        f"news/search.json?q={urllib.parse.quote('北朝鮮 OR story')}",
        "news/latest_matches.json?rule=",
        "news/items_per_source_per_day.json",
        "news/alert_list.json",
        "news/items?_facet=source_id",
        "news.json?sql=" + urllib.parse.quote("select count(*) from items"),
    ]
    problems: list[tuple[str, int, bytes]] = []
    answered = 0
    stop = threading.Event()

    def read() -> None:
        nonlocal answered
        while not stop.is_set():
            for path in paths:
                status, body = fetch(served.url + path)
                answered += 1
                if status != 200 or b"locked" in body:
                    problems.append((path, status, body[:300]))

    readers = [threading.Thread(target=read) for _ in range(3)]
    for reader in readers:
        reader.start()
    try:
        now = datetime.now(UTC)
        for n in range(4):
            batch = [
                {
                    "title": f"Story {n}-{i}: North Korea and the EU",
                    "link": f"https://example.com/s/{n}/{i}",
                    "guid": f"s-{n}-{i}",
                    "description": "北朝鮮 " * 50 + f"body {n} {i}",
                }
                for i in range(40)
            ]
            archive.feeds.route(
                "/wire.xml", rss(batch + WIRE, now=now), content_type="application/rss+xml"
            )
            summary = run_once(archive.settings)
            assert summary.items_new == 40
            errors = [o.error or "" for o in summary.outcomes if not o.ok]
            assert not any("locked" in e for e in errors), errors
    finally:
        stop.set()
        for reader in readers:
            reader.join()
    assert problems == []
    assert answered >= 2 * len(paths)  # reads really overlapped the passes
    rows = get_json(served, "news/search.json", q="Story 3-39", _shape="array")
    assert rows and rows[0]["title_highlight"].startswith("**Story** **3**-**39**")


def querying_doc() -> str:
    """The "Querying the archive" section: in the README once merged, else its draft."""
    root = Path(__file__).resolve().parents[1]
    readme = (root / "README.md").read_text(encoding="utf-8")
    if "## Querying the archive" in readme:
        return readme.split("## Querying the archive", 1)[1].split("\n## ", 1)[0]
    return (root / "docs" / "querying.md").read_text(encoding="utf-8")


def test_the_documented_example_queries_answer(served: Server) -> None:
    blocks = re.findall(r"```sql\n(.*?)```", querying_doc(), re.S)
    assert len(blocks) >= 3
    for sql in blocks:
        rows = get_json(served, "news.json", sql=sql, q="北朝鮮", _shape="array")
        assert rows, sql


def test_metadata_follows_the_database_name_and_views_are_made_once(tmp_path: Path) -> None:
    metadata = load_metadata(tmp_path / "archive.db")
    assert list(metadata["databases"]) == ["archive"]
    assert 'href="/archive/search"' in metadata["description_html"]
    assert "/news/" not in json.dumps(metadata)
    with Store.open(tmp_path / "archive.db") as store:
        ensure_views(store)
        before = store.conn.execute("PRAGMA schema_version").fetchone()
        ensure_views(store)  # unchanged definitions are left alone
        assert store.conn.execute("PRAGMA schema_version").fetchone() == before
        views = store.conn.execute("SELECT name FROM sqlite_master WHERE type = 'view'")
        assert {v[0] for v in views} == set(VIEWS)


def test_serve_without_an_archive_is_an_error(tmp_path: Path) -> None:
    config = write_config(tmp_path, [{"name": "A", "url": "https://example.com/feed"}])
    result = CliRunner().invoke(main, ["--config", str(config), "serve", "--port", "1"])
    assert result.exit_code == 1 and "no archive yet" in result.output


def test_cli_serve_on_loopback_and_ctrl_c_stops_it(archive: Archive) -> None:
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "scraper",
            "--config",
            str(archive.config),
            "serve",
            "--port",
            str(port),
        ],
        env={**os.environ, **ENV},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_until_up(url, process)
        status, body = fetch(f"{url}-/metadata.json")
        assert status == 200 and json.loads(body)["title"] == "News archive"
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=15)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, output.decode()
    assert f"http://127.0.0.1:{port}/" in output.decode()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
