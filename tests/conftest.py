"""Shared fixtures. Loopback servers (tests/servers.py): ``http_server``, ``https_server``
(with ``tls``), ``corpus_server`` and the ``make_server`` factory for several hosts or TLS."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from notify_servers import SmtpServer, TelegramServer, WebhookServer
from servers import CORPUS, TLS, LoopbackServer, make_tls

MakeServer = Callable[..., LoopbackServer]


@pytest.fixture
def make_server() -> Iterator[MakeServer]:
    """``make_server(hosts=("127.0.0.1", "127.0.0.2"), tls=None)``: started servers, all
    stopped (handler threads joined) when the test ends."""
    servers: list[LoopbackServer] = []

    def make(hosts: tuple[str, ...] = ("127.0.0.1",), tls: TLS | None = None) -> LoopbackServer:
        server = LoopbackServer(hosts, tls=tls.server if tls else None).start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


@pytest.fixture
def http_server(make_server: MakeServer) -> LoopbackServer:
    """A plain HTTP server on 127.0.0.1 with an ephemeral port and no routes yet."""
    return make_server()


@pytest.fixture(scope="session")
def tls() -> TLS:
    """A throwaway CA: ``tls.client`` is the SSLContext to trust (Fetcher(verify=tls.client))."""
    pytest.importorskip("trustme")
    return make_tls("127.0.0.1", "localhost")


@pytest.fixture
def https_server(make_server: MakeServer, tls: TLS) -> LoopbackServer:
    """An HTTPS server on 127.0.0.1 whose certificate ``tls.client`` trusts."""
    return make_server(tls=tls)


@pytest.fixture
def corpus_server(make_server: MakeServer) -> LoopbackServer:
    """Serves ../shared/corpus at /corpus/ (e.g. /corpus/feeds/rss2/...), with ETags."""
    if not CORPUS.is_dir():
        pytest.skip(f"corpus not found at {CORPUS}")
    server = make_server()
    server.serve_dir("/corpus/", CORPUS)
    return server


# --- delivery endpoints (tests/notify_servers.py) ----------------------------------------------


@pytest.fixture
def webhook() -> Iterator[WebhookServer]:
    """A JSON webhook receiver (Apprise json://) that can be told to fail and recover."""
    with WebhookServer() as server:
        yield server


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    """An aiosmtpd SMTP server recording the messages it receives."""
    with SmtpServer() as server:
        yield server


@pytest.fixture
def telegram(monkeypatch: pytest.MonkeyPatch) -> Iterator[TelegramServer]:
    """A stand-in Telegram Bot API; Apprise's Telegram plugin is pointed at it."""
    from apprise.plugins.telegram import NotifyTelegram

    with TelegramServer() as server:
        monkeypatch.setattr(NotifyTelegram, "notify_url", server.api_url)
        yield server
