"""Fetcher against real loopback servers (tests/servers.py): no HTTP mocks, no sleeps."""

from __future__ import annotations

import gzip
import json
import os
import socket
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from servers import CORPUS, TLS, LoopbackServer, gzip_bomb

from scraper.fetch import Fetcher, backoff_delay, parse_retry_after
from scraper.models import Source

UA = "scraper-tests/1.0 (+https://example.invalid/scraper)"
MakeServer = Callable[..., LoopbackServer]


@pytest.fixture
def fetcher() -> Iterator[Fetcher]:
    with Fetcher(user_agent=UA) as fetcher:
        yield fetcher


def src(url: str, **settings: Any) -> Source:
    return Source(name="test", url=url, **settings)


# ---- conditional GET, headers ------------------------------------------------------------


def test_200_with_etag_then_conditional_304(http_server: LoopbackServer, fetcher: Fetcher) -> None:
    url = http_server.route("/feed.xml", b"<rss/>", etag='"v1"', content_type="application/rss+xml")

    first = fetcher.fetch(src(url))
    assert (first.status, first.ok, first.body, first.bytes) == ("200", True, b"<rss/>", 6)
    assert (first.etag, first.content_type, first.final_url) == (
        '"v1"',
        "application/rss+xml",
        url,
    )
    assert first.error is None and first.duration_ms >= 0
    assert "if-none-match" not in http_server.requests[0].headers

    second = fetcher.fetch(src(url), etag=first.etag)
    assert (second.status, second.not_modified, second.ok, second.body) == (
        "304",
        True,
        False,
        None,
    )
    assert second.etag == '"v1"'
    assert http_server.requests[1].headers["if-none-match"] == '"v1"'


def test_last_modified_conditional_get(http_server: LoopbackServer, fetcher: Fetcher) -> None:
    stamp = "Tue, 01 Oct 2024 10:00:00 GMT"
    url = http_server.route("/feed", b"body", last_modified=stamp)

    first = fetcher.fetch(src(url))
    assert first.last_modified == stamp and first.ok

    second = fetcher.fetch(src(url), last_modified=stamp)
    assert second.not_modified and second.status == "304"
    assert second.last_modified == stamp
    assert http_server.requests[-1].headers["if-modified-since"] == stamp


def test_304_without_validators_keeps_the_ones_sent(
    http_server: LoopbackServer, fetcher: Fetcher
) -> None:
    url = http_server.route("/bare-304", status=304, content_type=None)
    result = fetcher.fetch(src(url), etag='"x"', last_modified="Tue, 01 Oct 2024 10:00:00 GMT")
    assert result.not_modified
    assert (result.etag, result.last_modified) == ('"x"', "Tue, 01 Oct 2024 10:00:00 GMT")


def test_sends_user_agent_accept_and_accept_encoding(
    http_server: LoopbackServer, fetcher: Fetcher
) -> None:
    url = http_server.route("/page", b"<html/>")
    fetcher.fetch(src(url))
    fetcher.fetch(src(url, kind="html"))
    feed, page = (r.headers for r in http_server.requests)
    assert feed["user-agent"] == UA
    assert feed["accept"].startswith("application/rss+xml")
    assert page["accept"].startswith("text/html")
    assert "gzip" in feed["accept-encoding"] and "deflate" in feed["accept-encoding"]


def test_content_type_and_bytes_pass_through_untouched(
    http_server: LoopbackServer, fetcher: Fetcher
) -> None:
    body = "<rss><title>Überraschung 北朝鮮</title></rss>".encode()  # UTF-8, labelled Latin-1
    url = http_server.route("/wrong", body, content_type="text/xml; charset=ISO-8859-1")
    result = fetcher.fetch(src(url))
    assert result.body == body
    assert result.content_type == "text/xml; charset=ISO-8859-1"


def test_serves_corpus_files_byte_for_byte(corpus_server: LoopbackServer, fetcher: Fetcher) -> None:
    path = "feeds/rss2/jn-pt-ultimas-noticias_iso-8859-1.xml"
    result = fetcher.fetch(src(corpus_server.url(f"/corpus/{path}")))
    assert result.ok and result.body == (CORPUS / path).read_bytes()
    again = fetcher.fetch(src(result.final_url), etag=result.etag)
    assert again.not_modified


# ---- HTTP errors and Retry-After -----------------------------------------------------------


@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_seconds(http_server: LoopbackServer, fetcher: Fetcher, status: int) -> None:
    url = http_server.route("/busy", status=status, headers={"Retry-After": "120"})
    result = fetcher.fetch(src(url))
    assert (result.status, result.ok, result.retry_after) == (str(status), False, 120.0)
    assert result.error is not None and result.error.startswith(f"HTTP {status} ")


@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_http_date_is_relative_to_the_clock(
    http_server: LoopbackServer, status: int
) -> None:
    now = datetime(2024, 11, 1, 5, 30, tzinfo=UTC)
    url = http_server.route(
        "/busy", status=status, headers={"Retry-After": "Fri, 01 Nov 2024 05:32:30 GMT"}
    )
    with Fetcher(user_agent=UA, clock=lambda: now) as fetcher:
        assert fetcher.fetch(src(url)).retry_after == 150.0


def test_parse_retry_after_edge_cases() -> None:
    now = datetime(2024, 11, 1, 5, 30, tzinfo=UTC)
    assert parse_retry_after("0", now) == 0.0
    assert parse_retry_after(" 30 ", now) == 30.0
    assert parse_retry_after("Fri, 01 Nov 2024 05:00:00 GMT", now) == 0.0  # in the past
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after("-5", now) is None
    assert parse_retry_after(None, now) is None


def test_http_errors_are_results(http_server: LoopbackServer, fetcher: Fetcher) -> None:
    result = fetcher.fetch(src(http_server.url("/missing")))
    assert (result.status, result.ok, result.body) == ("404", False, None)
    assert result.error == "HTTP 404 Not Found"
    assert result.retry_after is None
    no_content = fetcher.fetch(src(http_server.route("/empty", status=204, content_type=None)))
    assert (no_content.status, no_content.ok) == ("204", False)
    empty = fetcher.fetch(src(http_server.route("/zero", b"")))
    assert (empty.status, empty.ok, empty.body) == ("200", True, b"")


# ---- redirects -----------------------------------------------------------------------------


def test_five_redirects_are_followed(http_server: LoopbackServer, fetcher: Fetcher) -> None:
    final = http_server.route("/final", b"done")
    result = fetcher.fetch(src(http_server.redirect_chain("/hop", 5, "/final")))
    assert (result.status, result.ok, result.body, result.final_url) == (
        "200",
        True,
        b"done",
        final,
    )
    assert len(http_server.requests) == 6


def test_six_redirects_fail(http_server: LoopbackServer, fetcher: Fetcher) -> None:
    http_server.route("/final", b"done")
    first = http_server.redirect_chain("/hop", 6, "/final")
    result = fetcher.fetch(src(first))
    assert (result.status, result.ok) == ("redirect", False)
    assert result.error is not None and "more than 5 redirects" in result.error
    assert result.url == first and not http_server.requests_to("/final")


def test_redirect_to_ftp_is_refused(http_server: LoopbackServer, fetcher: Fetcher) -> None:
    result = fetcher.fetch(src(http_server.redirect("/old", "ftp://127.0.0.1/feed.xml")))
    assert result.status == "redirect"
    assert result.error is not None and "ftp://127.0.0.1/feed.xml" in result.error


def test_redirect_keeps_conditional_headers_and_chain_cookies(
    http_server: LoopbackServer, fetcher: Fetcher
) -> None:
    http_server.route(
        "/consent", status=302, headers={"Location": "/feed", "Set-Cookie": "ok=1; Path=/"}
    )
    http_server.route("/feed", b"items")
    result = fetcher.fetch(src(http_server.url("/consent")), etag='"e"')
    assert result.ok and result.final_url == http_server.url("/feed")
    hop = http_server.requests_to("/feed")[0].headers
    assert (hop["cookie"], hop["if-none-match"]) == ("ok=1", '"e"')
    fetcher.fetch(src(http_server.url("/feed")))  # a cookie never outlives its fetch
    assert "cookie" not in http_server.requests[-1].headers


def test_https_to_http_redirect_is_refused(
    https_server: LoopbackServer, http_server: LoopbackServer, tls: TLS
) -> None:
    target = http_server.route("/feed", b"plain")
    with Fetcher(user_agent=UA, verify=tls.client) as fetcher:
        assert fetcher.fetch(src(https_server.route("/ok", b"secure"))).body == b"secure"
        result = fetcher.fetch(src(https_server.redirect("/down", target)))
    assert (result.status, result.ok) == ("redirect", False)
    assert result.error is not None and "https to http" in result.error
    assert not http_server.requests


def test_verify_accepts_a_ca_file_or_false(
    https_server: LoopbackServer, tls: TLS, tmp_path: Path
) -> None:
    url = https_server.route("/feed", b"x")
    (tmp_path / "ca.pem").write_bytes(tls.ca_pem)
    for verify in (str(tmp_path / "ca.pem"), False):
        with Fetcher(user_agent=UA, verify=verify) as fetcher:
            assert fetcher.fetch(src(url)).ok, verify


def test_untrusted_certificate_is_a_tls_error(
    https_server: LoopbackServer, fetcher: Fetcher
) -> None:
    result = fetcher.fetch(src(https_server.route("/feed", b"x")))
    assert result.status == "tls"
    assert result.error is not None and "certificate" in result.error.lower()


# ---- the total deadline -----------------------------------------------------------------------


@pytest.mark.parametrize("drip", [1.0, 0.05], ids=["1-byte-per-s", "20-bytes-per-s"])
def test_slow_drip_fails_at_the_deadline(
    http_server: LoopbackServer, fetcher: Fetcher, drip: float
) -> None:
    url = http_server.route("/drip", b"x" * 1000, drip=drip)
    started = time.monotonic()
    result = fetcher.fetch(src(url, timeout=1.2))
    elapsed = time.monotonic() - started
    assert result.status == "timeout" and not result.ok
    assert 1.2 <= elapsed < 1.7
    assert result.bytes >= 1
    assert result.error == f"deadline of 1.2s exceeded after {result.bytes} bytes"


def test_hanging_server_times_out(http_server: LoopbackServer, fetcher: Fetcher) -> None:
    url = http_server.route("/stuck", hang=True)
    started = time.monotonic()
    result = fetcher.fetch(src(url, timeout=1.0))
    assert 1.0 <= time.monotonic() - started < 1.5
    assert result.status == "timeout"
    assert result.error is not None and "waiting for the response" in result.error


def test_server_stop_ends_hanging_and_dripping_handlers() -> None:
    server = LoopbackServer().start()
    server.route("/stuck", hang=True)
    server.route("/drip", b"x" * 100, drip=10.0)
    clients = [socket.create_connection(server.address()) for _ in range(2)]
    for client, path in zip(clients, ("/stuck", "/drip"), strict=True):
        client.sendall(f"GET {path} HTTP/1.1\r\nHost: test\r\n\r\n".encode())
    assert server.wait_for_requests(2)
    started = time.monotonic()
    server.stop()  # raises if a handler thread is still running
    assert time.monotonic() - started < 1.0
    for client in clients:
        client.close()


# ---- size cap and decoding -----------------------------------------------------------------


def test_content_length_over_the_cap_is_refused_before_reading(
    http_server: LoopbackServer, fetcher: Fetcher
) -> None:
    result = fetcher.fetch(src(http_server.route("/big", b"x" * 5000), max_bytes=1000))
    assert (result.status, result.ok, result.body, result.bytes) == ("too_large", False, None, 0)
    assert result.error == "Content-Length 5000 exceeds max_bytes (1000 bytes)"


def test_streamed_body_over_the_cap_is_refused(
    http_server: LoopbackServer, fetcher: Fetcher
) -> None:
    url = http_server.route("/big", b"x" * 500_000, chunked=True)
    result = fetcher.fetch(src(url, max_bytes=100_000))
    assert result.status == "too_large"
    assert 100_000 < result.bytes <= 100_000 + 64 * 1024


def test_body_at_the_cap_is_accepted(http_server: LoopbackServer, fetcher: Fetcher) -> None:
    url = http_server.route("/exact", b"x" * 1000, chunked=True)
    assert fetcher.fetch(src(url, max_bytes=1000)).bytes == 1000


@pytest.mark.parametrize(
    ("encoding", "encode"),
    [
        ("gzip", gzip.compress),
        ("x-gzip", gzip.compress),
        ("deflate", zlib.compress),  # zlib-wrapped, as the RFC says
        ("deflate", lambda data: zlib.compress(data)[2:-4]),  # raw, as some servers send
        ("gzip", lambda data: gzip.compress(data[:7000]) + gzip.compress(data[7000:])),
    ],
    ids=["gzip", "x-gzip", "deflate-zlib", "deflate-raw", "gzip-2-members"],
)
def test_compressed_bodies_are_decoded(
    http_server: LoopbackServer,
    fetcher: Fetcher,
    encoding: str,
    encode: Callable[[bytes], bytes],
) -> None:
    data = b"".join(b"<item>%d</item>" % i for i in range(20_000))
    url = http_server.route("/z", encode(data), headers={"Content-Encoding": encoding})
    result = fetcher.fetch(src(url))
    assert result.ok and result.body == data and result.bytes == len(data)


def test_brotli_is_decoded_with_bounded_output(
    http_server: LoopbackServer, fetcher: Fetcher
) -> None:
    brotli = pytest.importorskip("brotli")
    if not hasattr(brotli.Decompressor, "can_accept_more_data"):
        pytest.skip("brotli < 1.2 cannot bound its output, so br is not offered")
    data = b"".join(b"<item>%d</item>" % i for i in range(20_000))
    url = http_server.route("/br", brotli.compress(data), headers={"Content-Encoding": "br"})
    assert fetcher.fetch(src(url)).body == data
    assert "br" in http_server.requests[-1].headers["accept-encoding"]
    bomb = brotli.compress(bytes(256 << 20), quality=5)  # 256 MiB in a few hundred bytes
    url = http_server.route("/br-bomb", bomb, headers={"Content-Encoding": "br"})
    result = fetcher.fetch(src(url, max_bytes=1_000_000))
    assert result.status == "too_large" and result.bytes <= 1_000_000 + 128 * 1024


@pytest.mark.parametrize(
    ("body", "encoding"),
    [(b"not gzip at all", "gzip"), (b"whatever", "compress")],
    ids=["corrupt-gzip", "unsupported"],
)
def test_undecodable_bodies_are_protocol_errors(
    http_server: LoopbackServer, fetcher: Fetcher, body: bytes, encoding: str
) -> None:
    url = http_server.route("/z", body, headers={"Content-Encoding": encoding})
    result = fetcher.fetch(src(url))
    assert (result.status, result.ok) == ("protocol", False)


def test_truncated_body_is_a_protocol_error(http_server: LoopbackServer, fetcher: Fetcher) -> None:
    url = http_server.route(
        "/cut", b"short", headers={"Content-Length": "100", "Connection": "close"}
    )
    assert fetcher.fetch(src(url)).status == "protocol"


_RSS_PROBE = """
import json, resource, sys
from scraper.fetch import Fetcher
from scraper.models import Source

scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
with Fetcher(user_agent="rss-probe") as fetcher:
    fetcher.fetch(Source("warm-up", sys.argv[2]))  # imports and code paths, before measuring
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale
    result = fetcher.fetch(Source("bomb", sys.argv[1], max_bytes=10_000_000))
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale
print(json.dumps({"status": result.status, "bytes": result.bytes, "growth": after - before}))
"""


def test_gzip_bomb_is_refused_without_a_memory_spike(http_server: LoopbackServer) -> None:
    """1 GiB of zeros in ~1 MB of gzip. Measured in a fresh process, whose peak RSS
    (ru_maxrss) is its own, unlike this one's, which earlier tests have already raised."""
    bomb = http_server.route(
        "/bomb", gzip_bomb(), headers={"Content-Encoding": "gzip"}, content_type="text/xml"
    )
    warm = http_server.route(
        "/warm", gzip.compress(b"<rss/>"), headers={"Content-Encoding": "gzip"}
    )
    root = Path(__file__).resolve().parents[1]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]),
    }
    probe = subprocess.run(
        [sys.executable, "-c", _RSS_PROBE, bomb, warm],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=True,
    )
    outcome = json.loads(probe.stdout)
    assert outcome["status"] == "too_large"
    assert 10_000_000 < outcome["bytes"] <= 10_000_000 + 64 * 1024
    assert outcome["growth"] < 100 * 1024 * 1024, outcome


def test_gzip_bomb_in_process(http_server: LoopbackServer, fetcher: Fetcher) -> None:
    url = http_server.route("/bomb", gzip_bomb(), headers={"Content-Encoding": "gzip"})
    result = fetcher.fetch(src(url, max_bytes=2_000_000))  # the wire size is ~1 MB
    assert result.status == "too_large" and result.body is None
    assert result.error == "decoded body passed max_bytes (2000000 bytes)"


# ---- concurrency limits --------------------------------------------------------------------


def test_per_host_limit(http_server: LoopbackServer) -> None:
    url = http_server.route("/slow", b"ok", delay=0.15)
    with (
        Fetcher(user_agent=UA, concurrency=16, per_host=2) as fetcher,
        ThreadPoolExecutor(8) as pool,
    ):
        results = list(pool.map(fetcher.fetch, [src(url)] * 8))
    assert all(r.ok for r in results)
    assert http_server.max_in_flight_by_host["127.0.0.1"] == 2


def test_global_limit(make_server: MakeServer) -> None:
    hosts = ("127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.4")
    server = make_server(hosts=hosts)
    server.route("/slow", b"ok", delay=0.15)
    sources = [src(server.url("/slow", host=h)) for h in hosts for _ in range(3)]
    with (
        Fetcher(user_agent=UA, concurrency=3, per_host=2) as fetcher,
        ThreadPoolExecutor(12) as pool,
    ):
        results = list(pool.map(fetcher.fetch, sources))
    assert all(r.ok for r in results)
    assert server.max_in_flight == 3
    assert max(server.max_in_flight_by_host.values()) <= 2


def test_waiting_for_a_busy_host_holds_no_global_slot(make_server: MakeServer) -> None:
    server = make_server(hosts=("127.0.0.1", "127.0.0.2"))
    gate = threading.Event()
    server.route("/held", gate=gate)
    server.route("/free", b"ok")
    held = src(server.url("/held", host="127.0.0.1"), timeout=5.0)
    free = src(server.url("/free", host="127.0.0.2"), timeout=2.0)
    with (
        Fetcher(user_agent=UA, concurrency=2, per_host=1) as fetcher,
        ThreadPoolExecutor(4) as pool,
    ):
        try:
            waiting = [pool.submit(fetcher.fetch, held)]
            assert server.wait_in_flight(1)
            waiting += [pool.submit(fetcher.fetch, held) for _ in range(2)]
            # one global slot is held by the first /held, two more /held wait for their host:
            # /free still gets the second global slot
            assert pool.submit(fetcher.fetch, free).result(timeout=3).ok
            assert server.max_in_flight_by_host["127.0.0.1"] == 1
        finally:
            gate.set()
        assert all(f.result().ok for f in waiting)


# ---- network failures ----------------------------------------------------------------------


def test_dns_failure(fetcher: Fetcher) -> None:
    result = fetcher.fetch(src("http://feed.example.invalid/rss"))
    assert (result.status, result.ok) == ("dns", False)
    assert result.error is not None and "feed.example.invalid" in result.error


def test_connection_refused(fetcher: Fetcher) -> None:
    with socket.socket() as sock:  # a port nothing listens on once closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = fetcher.fetch(src(f"http://127.0.0.1:{port}/feed"))
    assert (result.status, result.ok) == ("connect", False)
    assert result.error is not None and "refused" in result.error.lower()


@pytest.mark.parametrize(
    "url", ["ftp://example.com/feed.xml", "feed.xml", "http:///feed.xml", "http://[::1/"]
)
def test_invalid_urls(fetcher: Fetcher, url: str) -> None:
    result = fetcher.fetch(src(url))
    assert (result.status, result.ok, result.duration_ms) == ("invalid_url", False, 0)


# ---- backoff -------------------------------------------------------------------------------


def test_backoff_delay() -> None:
    assert backoff_delay(0, 900) == 900
    assert [backoff_delay(n, 30) for n in (1, 2, 3, 4)] == [60, 120, 240, 480]
    assert [backoff_delay(n, 600) for n in (1, 2, 3, 4)] == [600, 1200, 2400, 4800]
    assert backoff_delay(1, 900) == 900  # never sooner than the source's own interval
    assert backoff_delay(50, 900) == 6 * 3600  # capped
    assert backoff_delay(10**9, 900) == 6 * 3600  # never overflows, never disables
    assert backoff_delay(5, 2 * 86400) == 2 * 86400  # a daily source stays daily
