"""Real HTTP(S) servers on loopback for tests: scripted routes, a request log, in-flight counts.

    server = LoopbackServer().start()          # or the `http_server` fixture (conftest.py)
    url = server.route("/feed.xml", b"<rss/>", content_type="application/rss+xml",
                       etag='"v1"', last_modified="Tue, 01 Oct 2024 10:00:00 GMT")
    server.route("/busy", status=429, headers={"Retry-After": "120"})
    server.route("/slow", b"x" * 100, drip=1.0)          # one byte a second
    server.route("/stuck", hang=True)                    # reads the request, never answers
    first = server.redirect_chain("/hop", 3, "/feed.xml")  # /hop/1 -> /hop/2 -> /hop/3 -> feed
    ...fetch...
    server.requests[-1].headers["if-none-match"]    # what the client sent (names lower-case)
    server.max_in_flight_by_host["127.0.0.1"]        # most requests awaiting an answer at once
    server.stop()                                    # every handler thread has ended on return

A server can listen on several loopback addresses (``hosts=("127.0.0.1", "127.0.0.2")``, one
port each, one shared route table and log) to stand in for several hosts, and can speak TLS
(``tls=make_tls().server``). "In flight" counts a request from its arrival until its response
starts (delay, gate and hang time included), so it never overstates the client's concurrency.
"""

from __future__ import annotations

import contextlib
import email.utils
import functools
import hashlib
import mimetypes
import socket
import socketserver
import ssl
import struct
import threading
import time
import zlib
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Request:
    """One request as the server saw it."""

    method: str
    path: str  # with the query string
    headers: Mapping[str, str]  # names lower-cased
    host: str  # the loopback address it arrived on
    body: bytes = b""
    at: float = 0.0  # time.monotonic() on arrival


@dataclass(frozen=True)
class Route:
    """A scripted response; see :meth:`LoopbackServer.route` for the meaning of each field."""

    body: bytes = b""
    status: int = 200
    content_type: str | None = "text/plain; charset=utf-8"
    headers: Mapping[str, str] = field(default_factory=dict)
    etag: str | None = None
    last_modified: str | None = None
    delay: float = 0.0
    drip: float | None = None
    drip_size: int = 1
    hang: bool = False
    gate: threading.Event | None = None
    chunked: bool = False

    def not_modified(self, request: Request) -> bool:
        """Whether the request's validators match (If-None-Match wins over If-Modified-Since)."""
        if not 200 <= self.status < 300:
            return False
        if_none_match = request.headers.get("if-none-match")
        if if_none_match is not None:
            tags = {t.strip().removeprefix("W/") for t in if_none_match.split(",")}
            return self.etag is not None and ("*" in tags or self.etag.removeprefix("W/") in tags)
        since = request.headers.get("if-modified-since")
        if since and self.last_modified:
            try:
                return email.utils.parsedate_to_datetime(
                    self.last_modified
                ) <= email.utils.parsedate_to_datetime(since)
            except (TypeError, ValueError):
                return False
        return False


class LoopbackServer:
    """A threaded HTTP/1.1 server on 127.0.0.1 (and more loopback addresses) for tests."""

    def __init__(
        self, hosts: tuple[str, ...] = ("127.0.0.1",), *, tls: ssl.SSLContext | None = None
    ) -> None:
        self.hosts = hosts
        self.scheme = "https" if tls else "http"
        self._tls = tls
        self._routes: dict[str, Route] = {}
        self._dirs: dict[str, Path] = {}
        self._requests: list[Request] = []
        self._in_flight: Counter[str] = Counter()
        self.max_in_flight = 0
        self.max_in_flight_by_host: Counter[str] = Counter()
        self._lock = threading.Condition()
        self._stopping = threading.Event()
        self._servers: list[_Server] = []
        self._threads: list[threading.Thread] = []

    # ---- lifecycle --------------------------------------------------------------------------

    def start(self) -> LoopbackServer:
        for host in self.hosts:
            server = _Server((host, 0), self)
            thread = threading.Thread(
                target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
            )
            thread.start()
            self._servers.append(server)
            self._threads.append(thread)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop listening, release hanging/dripping handlers, close connections, join threads."""
        self._stopping.set()
        for server in self._servers:
            server.shutdown()
            server.close_connections()
            server.server_close()
        deadline = time.monotonic() + timeout
        threads = self._threads + [t for s in self._servers for t in s.handler_threads()]
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        alive = [t.name for t in threads if t.is_alive()]
        if alive:
            raise RuntimeError(f"server threads still running after stop: {alive}")

    def __enter__(self) -> LoopbackServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # ---- routes -----------------------------------------------------------------------------

    def address(self, host: str | None = None) -> tuple[str, int]:
        """(host, port) of the listener on ``host`` (default: the first)."""
        host = host or self.hosts[0]
        return host, self._servers[self.hosts.index(host)].port

    def url(self, path: str = "/", *, host: str | None = None) -> str:
        host, port = self.address(host)
        return f"{self.scheme}://{host}:{port}{path}"

    def route(
        self,
        path: str,
        body: bytes | str = b"",
        *,
        status: int = 200,
        content_type: str | None = "text/plain; charset=utf-8",
        headers: Mapping[str, str] | None = None,
        etag: str | None = None,
        last_modified: str | None = None,
        delay: float = 0.0,
        drip: float | None = None,
        drip_size: int = 1,
        hang: bool = False,
        gate: threading.Event | None = None,
        chunked: bool = False,
    ) -> str:
        """Answer GET/HEAD/POST ``path`` (query ignored); returns the URL. Calling it again
        replaces the route, so a test can change a feed between fetches.

        - body: sent as is (a str is UTF-8 encoded); content_type: the Content-Type, verbatim
          (a wrong charset is fine: the body is never re-encoded).
        - headers: extra response headers (Content-Encoding, Retry-After, Location, ...). A
          Content-Length given here replaces the true one: with "Connection: close" it
          scripts a truncated body.
        - etag / last_modified: sent; a matching If-None-Match / If-Modified-Since gets 304.
        - delay: seconds before answering; gate: answer only once the event is set;
          hang: never answer (the handler ends when the server stops).
        - drip: seconds between ``drip_size``-byte pieces of the body (Content-Length is
          announced in full); chunked: Transfer-Encoding chunked, no Content-Length.
        """
        if isinstance(body, str):
            body = body.encode()
        self._routes[path] = Route(
            body=body,
            status=status,
            content_type=content_type,
            headers=dict(headers or {}),
            etag=etag,
            last_modified=last_modified,
            delay=delay,
            drip=drip,
            drip_size=drip_size,
            hang=hang,
            gate=gate,
            chunked=chunked,
        )
        return self.url(path)

    def redirect(self, path: str, to: str, *, status: int = 302) -> str:
        """``path`` answers ``status`` with ``Location: to`` (absolute or relative, as given)."""
        return self.route(path, status=status, headers={"Location": to}, content_type=None)

    def redirect_chain(self, prefix: str, hops: int, to: str, *, status: int = 302) -> str:
        """``hops`` redirects: prefix/1 -> prefix/2 -> ... -> prefix/hops -> ``to``; returns
        the URL of prefix/1."""
        for i in range(1, hops + 1):
            self.redirect(f"{prefix}/{i}", to if i == hops else f"{prefix}/{i + 1}", status=status)
        return self.url(f"{prefix}/1")

    def serve_dir(self, prefix: str, directory: str | Path) -> None:
        """Serve the files under ``directory`` at ``prefix`` + relative path, with a content
        type from the extension, an ETag and a Last-Modified (304s included)."""
        self._dirs[prefix.rstrip("/") + "/"] = Path(directory).resolve()

    # ---- what happened ----------------------------------------------------------------------

    @property
    def requests(self) -> list[Request]:
        with self._lock:
            return list(self._requests)

    def requests_to(self, path: str) -> list[Request]:
        return [r for r in self.requests if r.path.split("?")[0] == path]

    def wait_for_requests(self, count: int, timeout: float = 5.0) -> bool:
        """Block until ``count`` requests have arrived (no polling); False on timeout."""
        with self._lock:
            return self._lock.wait_for(lambda: len(self._requests) >= count, timeout)

    def wait_in_flight(self, count: int, timeout: float = 5.0) -> bool:
        """Block until ``count`` requests are waiting for their answer at once."""
        with self._lock:
            return self._lock.wait_for(lambda: self._in_flight.total() >= count, timeout)

    # ---- serving (called on handler threads) ------------------------------------------------

    def _find(self, path: str) -> Route | None:
        path = path.split("?")[0]
        if path in self._routes:
            return self._routes[path]
        for prefix, directory in self._dirs.items():
            if path.startswith(prefix):
                file = (directory / path[len(prefix) :]).resolve()
                if file.is_file() and file.is_relative_to(directory):
                    data = file.read_bytes()
                    kind = mimetypes.guess_type(file.name)[0] or "application/octet-stream"
                    return Route(
                        data,
                        content_type=kind,
                        etag=f'"{hashlib.sha1(data).hexdigest()[:16]}"',
                        last_modified=email.utils.formatdate(file.stat().st_mtime, usegmt=True),
                    )
        return None

    def _serve(self, handler: _Handler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        request = Request(
            method=handler.command,
            path=handler.path,
            headers={k.lower(): v for k, v in handler.headers.items()},
            host=handler.server.host,
            body=handler.rfile.read(length) if length else b"",
            at=time.monotonic(),
        )
        with self._lock:
            self._requests.append(request)
            self._in_flight[request.host] += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight.total())
            self.max_in_flight_by_host[request.host] = max(
                self.max_in_flight_by_host[request.host], self._in_flight[request.host]
            )
            self._lock.notify_all()
        try:
            route = self._find(request.path) or Route(b"no such route\n", status=404)
            answer = self._hold(route)
        finally:
            with self._lock:  # no longer in flight once the answer starts
                self._in_flight[request.host] -= 1
                self._lock.notify_all()
        if answer:
            self._respond(handler, request, route)
        else:
            handler.close_connection = True

    def _hold(self, route: Route) -> bool:
        """Wait as the route says; False if the request is to get no answer (hang, stopping)."""
        if route.gate is not None:
            while not route.gate.wait(0.05):  # server side: also notice stop() promptly
                if self._stopping.is_set():
                    return False
        if route.delay and self._stopping.wait(route.delay):
            return False
        if route.hang:
            self._stopping.wait()
            return False
        return not self._stopping.is_set()

    def _respond(self, handler: _Handler, request: Request, route: Route) -> None:
        status, body = route.status, route.body
        if route.not_modified(request):
            status, body = 304, b""
        headers = dict(route.headers)
        if route.content_type and status != 304:
            headers.setdefault("Content-Type", route.content_type)
        if route.etag:
            headers["ETag"] = route.etag
        if route.last_modified:
            headers["Last-Modified"] = route.last_modified
        if status != 304:
            if route.chunked:
                headers["Transfer-Encoding"] = "chunked"
            else:
                headers.setdefault("Content-Length", str(len(body)))
        handler.send_response(status)
        for name, value in headers.items():
            handler.send_header(name, value)
        handler.end_headers()
        if request.method == "HEAD" or status == 304:
            return
        step = route.drip_size if route.drip is not None else 64 * 1024
        for i in range(0, len(body), step):
            piece = body[i : i + step]
            handler.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece) if route.chunked else piece)
            if route.drip is not None and self._stopping.wait(route.drip):
                handler.close_connection = True
                return
        if route.chunked:
            handler.wfile.write(b"0\r\n\r\n")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 30  # an idle keep-alive connection ends by itself eventually
    server: _Server

    def setup(self) -> None:
        super().setup()
        if isinstance(self.connection, ssl.SSLSocket):
            self.connection.do_handshake()

    def do_GET(self) -> None:
        self.server.owner._serve(self)

    do_HEAD = do_POST = do_GET

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Server(socketserver.ThreadingMixIn, HTTPServer):
    daemon_threads = True
    block_on_close = False  # LoopbackServer.stop joins the handler threads itself
    host: str
    port: int

    def __init__(self, address: tuple[str, int], owner: LoopbackServer) -> None:
        self.owner = owner
        self._connections: set[socket.socket] = set()
        self._handlers: set[threading.Thread] = set()
        self._track = threading.Lock()
        super().__init__(address, _Handler)

    def server_bind(self) -> None:  # HTTPServer's would do a reverse DNS lookup (getfqdn)
        socketserver.TCPServer.server_bind(self)
        self.host, self.port = self.server_name, self.server_port = self.socket.getsockname()[:2]

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, address = self.socket.accept()
        if self.owner._tls is not None:
            sock = self.owner._tls.wrap_socket(
                sock, server_side=True, do_handshake_on_connect=False
            )
        return sock, address

    def process_request(self, request: Any, client_address: Any) -> None:
        thread = threading.Thread(
            target=self._run, args=(request, client_address), daemon=True, name="loopback-handler"
        )
        with self._track:
            self._connections.add(request)
            self._handlers.add(thread)
        thread.start()

    def _run(self, request: Any, client_address: Any) -> None:
        try:
            self.process_request_thread(request, client_address)
        finally:
            with self._track:
                self._connections.discard(request)
                self._handlers.discard(threading.current_thread())

    def handler_threads(self) -> list[threading.Thread]:
        with self._track:
            return list(self._handlers)

    def close_connections(self) -> None:
        with self._track:
            connections = list(self._connections)
        for sock in connections:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that went away (deadline, size cap, rejected certificate) is expected here.
        pass


# ---- payloads -------------------------------------------------------------------------------


@dataclass(frozen=True)
class TLS:
    """A throwaway CA: ``server`` for LoopbackServer(tls=...); ``client`` (an SSLContext) and
    ``ca_pem`` (the CA certificate, PEM) for a client to trust it."""

    server: ssl.SSLContext
    client: ssl.SSLContext
    ca_pem: bytes


def make_tls(*identities: str) -> TLS:
    """Server and client SSL contexts from a fresh trustme CA (needs the trustme package)."""
    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert(*(identities or ("127.0.0.1", "localhost")))
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    return TLS(server, client, ca.cert_pem.bytes())


@functools.cache
def gzip_bomb(decoded_size: int = 1 << 30) -> bytes:
    """A valid gzip stream of ``decoded_size`` zero bytes: ~1 MB on the wire for 1 GiB, built
    in ~0.3 s. After a full flush the compressor's state is reset, so the compressed form of
    each MiB of zeros is the same bytes, repeated."""
    block = 1 << 20
    count, rest = divmod(decoded_size, block)
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    piece = compressor.compress(bytes(block)) + compressor.flush(zlib.Z_FULL_FLUSH)
    tail = compressor.compress(bytes(rest)) + compressor.flush()
    crc, zeros = 0, bytes(block)
    for _ in range(count):
        crc = zlib.crc32(zeros, crc)
    crc = zlib.crc32(bytes(rest), crc)
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"
    trailer = struct.pack("<II", crc, decoded_size & 0xFFFFFFFF)
    return header + piece * count + tail + trailer


CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"
