"""The HTTP client: limits, a total deadline, a decoded-size cap, conditional GET, redirects.

One :class:`Fetcher` (one ``httpx.Client``) is shared by the pipeline's threads. ``fetch``
returns a :class:`~scraper.models.FetchResult` for every network or HTTP outcome and never
raises for them. How the guarantees are kept:

- Total deadline (``source.timeout``, body included): httpx's timeouts are per operation, so
  the transport runs on a network backend that clamps every connect, TLS handshake, read and
  write to the time left for the fetch running on the calling thread (sync httpx does its I/O
  on the caller's thread). A server dripping one byte a second fails at the deadline.
- Size cap (``source.max_bytes``, decoded size): a Content-Length over the cap is refused
  before reading; otherwise the body is read with ``iter_raw`` and decoded here with bounded
  output (zlib ``max_length``), so a gzip bomb stops as soon as the decoded size passes the cap.
- Limits: ``concurrency`` requests in flight overall and ``per_host`` per host. A request takes
  its host slot first and only then a global slot, so waiting for a busy host holds no global
  slot. Each redirect hop takes the slots of its own host.
- Redirects are followed here (at most 5, http/https only, never from https to http), with the
  conditional headers and the cookies set along the chain; no cookie outlives one fetch.
"""

from __future__ import annotations

import email.utils
import re
import socket
import ssl
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from http.cookiejar import CookieJar, DefaultCookiePolicy
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

import httpcore
import httpx

from scraper.errors import FetchError
from scraper.models import FetchResult, Source

try:  # brotli >= 1.2 can bound its output; older versions cannot, so br is then not offered
    import brotli

    _BROTLI = hasattr(brotli.Decompressor, "can_accept_more_data")
except ImportError:  # pragma: no cover - depends on the environment
    _BROTLI = False

MAX_REDIRECTS = 5
_CHUNK = 64 * 1024  # largest piece of decoded output produced at once
_FEED_ACCEPT = (
    "application/rss+xml, application/atom+xml, application/feed+json, application/xml;q=0.9, "
    "text/xml;q=0.9, application/json;q=0.8, text/html;q=0.7, */*;q=0.5"
)
_HTML_ACCEPT = "text/html, application/xhtml+xml;q=0.9, application/xml;q=0.8, */*;q=0.5"
_ACCEPT_ENCODING = "gzip, deflate, br" if _BROTLI else "gzip, deflate"


def backoff_delay(
    failures: int, interval: float, *, cap: float = 6 * 3600.0, base: float = 60.0
) -> float:
    """Seconds until the next fetch of a source that failed ``failures`` times in a row.

    The source's interval (at least ``base``) doubled for each failure after the first,
    capped at ``cap`` (or at the interval itself when that is longer: a daily source stays
    daily). Always finite: a failing source is slowed down, never disabled.
    """
    if failures <= 0:
        return interval
    step = max(interval, base)
    exponential = step * 2.0 ** min(failures - 1, 64)
    return max(interval, min(cap, exponential))


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Retry-After as seconds from ``now``: delay-seconds or an HTTP-date; None if unusable."""
    if not value:
        return None
    value = value.strip()
    if re.fullmatch(r"\d+(\.\d+)?", value, re.ASCII):
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


class Fetcher:
    """Fetches sources over one shared ``httpx.Client``; safe to call from many threads.

    ``verify``: True (certifi, or $SSL_CERT_FILE), False, a CA bundle file or directory, or an
    SSLContext. ``clock`` is only used to turn a Retry-After HTTP-date into seconds. The
    deadline and ``duration_ms`` run from the moment the first request has its slots: time
    spent queueing behind our own limits is not counted against the server.
    """

    def __init__(
        self,
        *,
        user_agent: str,
        concurrency: int = 16,
        per_host: int = 2,
        verify: bool | str | ssl.SSLContext = True,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        if concurrency < 1 or per_host < 1:
            raise ValueError("concurrency and per_host must be at least 1")
        self._clock = clock
        self._per_host = per_host
        self._global = threading.BoundedSemaphore(concurrency)
        self._hosts: dict[str, threading.BoundedSemaphore] = {}
        self._hosts_lock = threading.Lock()
        self._deadlines = _Deadlines()
        no_cookies = CookieJar(policy=DefaultCookiePolicy(allowed_domains=[]))
        self._client = httpx.Client(
            transport=_Transport(_ssl_context(verify), self._deadlines, concurrency),
            headers={"User-Agent": user_agent, "Accept-Encoding": _ACCEPT_ENCODING},
            cookies=no_cookies,  # the shared jar accepts nothing; see _fetch for per-fetch cookies
            follow_redirects=False,
            trust_env=False,
        )

    def __enter__(self) -> Fetcher:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._client.close()

    def fetch(
        self, source: Source, *, etag: str | None = None, last_modified: str | None = None
    ) -> FetchResult:
        """GET ``source.url``; every network or HTTP outcome is a FetchResult, never raised."""
        attempt = _Attempt(source.url, source.timeout)
        try:
            return self._fetch(source, attempt, etag, last_modified)
        except FetchError as exc:
            return FetchResult(
                url=source.url,
                final_url=attempt.url,
                status=exc.kind,
                error=exc.message,
                duration_ms=attempt.elapsed_ms(),
                bytes=attempt.bytes,
            )

    def _fetch(
        self, source: Source, attempt: _Attempt, etag: str | None, last_modified: str | None
    ) -> FetchResult:
        url = _parse_url(source.url)
        headers = {"Accept": _HTML_ACCEPT if source.kind == "html" else _FEED_ACCEPT}
        if etag:
            headers["If-None-Match"] = etag
        if last_modified:
            headers["If-Modified-Since"] = last_modified
        cookies = httpx.Cookies()  # cookies set along this fetch's redirect chain only
        for _ in range(MAX_REDIRECTS + 1):
            attempt.url = str(url)
            with self._slots(url.host, attempt):
                try:
                    request = self._client.build_request(
                        "GET", url, headers=headers, timeout=source.timeout
                    )
                    cookies.set_cookie_header(request)
                    response = self._client.send(request, stream=True)
                    try:
                        if not response.has_redirect_location:
                            return self._result(response, source, attempt, etag, last_modified)
                        cookies.extract_cookies(response)
                        url = _redirect_target(url, response.headers["Location"])
                    finally:
                        response.close()
                except httpx.TransportError as exc:
                    raise _classify(exc, attempt, url) from exc
        raise FetchError("redirect", f"more than {MAX_REDIRECTS} redirects (stopped before {url})")

    def _result(
        self,
        response: httpx.Response,
        source: Source,
        attempt: _Attempt,
        etag: str | None,
        last_modified: str | None,
    ) -> FetchResult:
        code = response.status_code
        meta: dict[str, Any] = {
            "url": source.url,
            "final_url": str(response.url),
            "status": str(code),
            "content_type": response.headers.get("Content-Type"),
            "etag": response.headers.get("ETag"),
            "last_modified": response.headers.get("Last-Modified"),
            "headers": dict(response.headers),
        }
        if code == 304:  # validators still hold when a 304 omits them
            meta["etag"] = meta["etag"] or etag
            meta["last_modified"] = meta["last_modified"] or last_modified
            return FetchResult(**meta, not_modified=True, duration_ms=attempt.elapsed_ms())
        if 200 <= code < 300 and code not in (204, 205):
            body = self._read_body(response, source.max_bytes, attempt)
            return FetchResult(
                **meta, ok=True, body=body, bytes=len(body), duration_ms=attempt.elapsed_ms()
            )
        error = f"HTTP {code} {response.reason_phrase or httpx.codes.get_reason_phrase(code)}"
        retry_after = None
        if code in (429, 503):
            retry_after = parse_retry_after(response.headers.get("Retry-After"), self._clock())
            if retry_after is not None:
                error += f" (retry after {retry_after:.0f}s)"
        elif 300 <= code < 400 and "Location" not in response.headers:
            error += " without a Location header"
        return FetchResult(
            **meta, error=error, retry_after=retry_after, duration_ms=attempt.elapsed_ms()
        )

    def _read_body(self, response: httpx.Response, cap: int, attempt: _Attempt) -> bytes:
        length = response.headers.get("Content-Length", "")
        if length.isdecimal() and int(length) > cap:
            raise FetchError(
                "too_large", f"Content-Length {length} exceeds max_bytes ({cap} bytes)"
            )
        decoder = _decoder(response.headers.get("Content-Encoding", ""))
        attempt.reading_body = True
        body = bytearray()
        wire = 0
        for raw in _then_empty(response.iter_raw()):  # b"" at the end drains the decoder
            wire += len(raw)
            for piece in decoder.decode(raw):
                body += piece
                attempt.bytes = len(body)
                if len(body) > cap:
                    raise FetchError("too_large", f"decoded body passed max_bytes ({cap} bytes)")
            if wire > cap:
                raise FetchError("too_large", f"body passed max_bytes ({cap} bytes) on the wire")
            if raw and attempt.expired():  # reads are clamped too; this covers buffered data
                raise FetchError("timeout", attempt.deadline_message())
        return bytes(body)

    @contextmanager
    def _slots(self, host: str, attempt: _Attempt) -> Iterator[None]:
        """Hold a slot for ``host``, then a global one, and run the hop under the deadline."""
        with self._hosts_lock:
            host_slot = self._hosts.setdefault(host, threading.BoundedSemaphore(self._per_host))
        if not host_slot.acquire(timeout=attempt.remaining()):
            raise FetchError("timeout", attempt.deadline_message(f"waiting for a slot for {host}"))
        try:
            if not self._global.acquire(timeout=attempt.remaining()):
                raise FetchError("timeout", attempt.deadline_message("waiting for a slot"))
            try:
                attempt.start()
                with self._deadlines.active(attempt.deadline):
                    yield
            finally:
                self._global.release()
        finally:
            host_slot.release()


class _Attempt:
    """Mutable bookkeeping of one fetch: where it is, how long it has run, what it has read."""

    def __init__(self, url: str, timeout: float) -> None:
        self.url = url  # the URL of the current hop (final_url once done)
        self.timeout = timeout
        self.started: float | None = None
        self.deadline = 0.0
        self.bytes = 0
        self.reading_body = False

    def start(self) -> None:
        if self.started is None:
            self.started = time.monotonic()
            self.deadline = self.started + self.timeout

    def remaining(self) -> float | None:
        return None if self.started is None else max(0.0, self.deadline - time.monotonic())

    def expired(self) -> bool:
        return self.started is not None and time.monotonic() >= self.deadline

    def elapsed_ms(self) -> int:
        return 0 if self.started is None else round((time.monotonic() - self.started) * 1000)

    def deadline_message(self, doing: str | None = None) -> str:
        if doing is None:
            doing = (
                f"after {self.bytes} bytes"
                if self.reading_body
                else f"waiting for the response from {httpx.URL(self.url).host}"
            )
        return f"deadline of {self.timeout:g}s exceeded {doing}"


def _parse_url(raw: str) -> httpx.URL:
    try:
        url = httpx.URL(raw)
    except httpx.InvalidURL as exc:
        raise FetchError("invalid_url", f"invalid URL {raw!r}: {exc}") from exc
    if url.scheme not in ("http", "https"):
        raise FetchError("invalid_url", f"{raw!r}: only http and https URLs can be fetched")
    if not url.host:
        raise FetchError("invalid_url", f"{raw!r} has no host")
    return url


def _redirect_target(current: httpx.URL, location: str) -> httpx.URL:
    try:
        target = current.join(location)
    except httpx.InvalidURL as exc:
        raise FetchError("redirect", f"invalid redirect Location {location!r}: {exc}") from exc
    if target.scheme not in ("http", "https") or not target.host:
        raise FetchError("redirect", f"redirect to unsupported URL {target} refused")
    if current.scheme == "https" and target.scheme == "http":
        raise FetchError("redirect", f"redirect from https to http refused (downgrade): {target}")
    return target


def _classify(exc: httpx.TransportError, attempt: _Attempt, url: httpx.URL) -> FetchError:
    """Turn an httpx error into the fetches.status error class with a short message."""
    causes = list(_chain(exc))
    host = url.host
    if isinstance(exc, httpx.ConnectTimeout):
        return FetchError("timeout", attempt.deadline_message(f"connecting to {host}"))
    if isinstance(exc, httpx.TimeoutException):
        return FetchError("timeout", attempt.deadline_message())
    if any(isinstance(c, socket.gaierror) for c in causes):
        return FetchError("dns", f"cannot resolve {host}: {_reason(causes)}")
    tls = next((c for c in causes if isinstance(c, ssl.SSLError | ssl.CertificateError)), None)
    if tls is not None:
        detail = getattr(tls, "verify_message", None) or getattr(tls, "reason", None) or tls
        return FetchError("tls", f"TLS error with {host}: {detail}")
    if isinstance(exc, httpx.ConnectError):
        return FetchError("connect", f"cannot connect to {host}: {_reason(causes)}")
    if isinstance(exc, httpx.NetworkError):
        return FetchError("connect", f"connection to {host} lost: {_reason(causes)}")
    if isinstance(exc, httpx.UnsupportedProtocol):
        return FetchError("invalid_url", str(exc))
    return FetchError("protocol", f"{host}: {exc}")


def _chain(exc: BaseException | None) -> Iterator[BaseException]:
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def _reason(causes: list[BaseException]) -> str:
    root = causes[-1]
    reason = root.strerror if isinstance(root, OSError) else None
    return reason or str(root) or type(root).__name__


def _then_empty(chunks: Iterable[bytes]) -> Iterator[bytes]:
    yield from chunks
    yield b""


def _ssl_context(verify: bool | str | ssl.SSLContext) -> ssl.SSLContext:
    if isinstance(verify, ssl.SSLContext):
        return verify
    if isinstance(verify, str):  # a CA bundle file or a directory of CA certificates
        if Path(verify).is_dir():
            return ssl.create_default_context(capath=verify)
        return ssl.create_default_context(cafile=verify)
    return httpx.create_ssl_context(verify=verify)


# ---- bounded decoding of Content-Encoding ------------------------------------------------


class _Decoder(Protocol):
    def decode(self, data: bytes) -> Iterator[bytes]:
        """Decoded pieces of about _CHUNK bytes at most; ``b""`` drains what is left."""
        ...


class _Identity:
    def decode(self, data: bytes) -> Iterator[bytes]:
        if data:
            yield data


class _Zlib:
    """gzip (several members allowed, trailing junk ignored) or deflate (zlib or raw)."""

    def __init__(self, encoding: str) -> None:
        self._gzip = encoding in ("gzip", "x-gzip")
        self._wbits = 16 + zlib.MAX_WBITS if self._gzip else zlib.MAX_WBITS
        self._obj = zlib.decompressobj(self._wbits)
        self._started = False  # some input was accepted
        self._members = 0
        self._done = False

    def decode(self, data: bytes) -> Iterator[bytes]:
        while not self._done:
            try:
                out = self._obj.decompress(data, _CHUNK)
            except zlib.error as exc:
                if not self._started and not self._gzip and self._wbits > 0:
                    self._wbits = -zlib.MAX_WBITS  # "deflate" sent as a raw deflate stream
                    self._obj = zlib.decompressobj(self._wbits)
                    continue
                if self._members:  # junk after a complete gzip member
                    self._done = True
                    return
                raise FetchError("protocol", f"corrupt compressed body: {exc}") from exc
            self._started = self._started or bool(data)
            data = self._obj.unconsumed_tail
            if out:
                yield out
            if self._obj.eof:
                self._members += 1
                data = self._obj.unused_data
                if not (self._gzip and data):
                    self._done = True
                    return
                self._obj = zlib.decompressobj(self._wbits)  # the next gzip member
                continue
            if not data and len(out) < _CHUNK:
                return


class _Brotli:
    def __init__(self) -> None:
        self._obj = brotli.Decompressor()

    def decode(self, data: bytes) -> Iterator[bytes]:
        while not self._obj.is_finished():
            try:
                out = self._obj.process(data, output_buffer_limit=_CHUNK)
            except brotli.error as exc:
                raise FetchError("protocol", f"corrupt compressed body: {exc}") from exc
            data = b""
            if not out:
                return
            yield out
            # a full buffer may leave output pending even when more input could be taken
            if len(out) < _CHUNK and self._obj.can_accept_more_data():
                return


def _decoder(content_encoding: str) -> _Decoder:
    codings = [c.strip().lower() for c in content_encoding.split(",")]
    codings = [c for c in codings if c and c != "identity"]
    if not codings:
        return _Identity()
    if len(codings) == 1 and codings[0] in ("gzip", "x-gzip", "deflate"):
        return _Zlib(codings[0])
    if codings == ["br"] and _BROTLI:
        return _Brotli()
    raise FetchError("protocol", f"unsupported Content-Encoding {content_encoding!r}")


# ---- transport: httpcore with every socket operation clamped to the fetch's deadline -------


class _Deadlines:
    """The deadline (time.monotonic) of the fetch running on each thread."""

    def __init__(self) -> None:
        self._local = threading.local()

    @contextmanager
    def active(self, deadline: float) -> Iterator[None]:
        previous = getattr(self._local, "deadline", None)
        self._local.deadline = deadline
        try:
            yield
        finally:
            self._local.deadline = previous

    def clamp(self, timeout: float | None, expired: type[Exception]) -> float | None:
        deadline: float | None = getattr(self._local, "deadline", None)
        if deadline is None:
            return timeout
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise expired("deadline exceeded")
        return remaining if timeout is None else min(timeout, remaining)


class _Stream(httpcore.NetworkStream):
    def __init__(self, stream: httpcore.NetworkStream, deadlines: _Deadlines) -> None:
        self._stream = stream
        self._deadlines = deadlines

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(max_bytes, self._deadlines.clamp(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, self._deadlines.clamp(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._stream.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        timeout = self._deadlines.clamp(timeout, httpcore.ConnectTimeout)
        stream = self._stream.start_tls(ssl_context, server_hostname, timeout)
        return _Stream(stream, self._deadlines)

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


class _Backend(httpcore.NetworkBackend):
    """httpcore's sync backend with deadline-clamped streams. DNS lookups cannot be clamped."""

    def __init__(self, deadlines: _Deadlines) -> None:
        self._backend = httpcore.SyncBackend()
        self._deadlines = deadlines

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        timeout = self._deadlines.clamp(timeout, httpcore.ConnectTimeout)
        stream = self._backend.connect_tcp(host, port, timeout, local_address, socket_options)
        return _Stream(stream, self._deadlines)

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.NetworkStream:
        timeout = self._deadlines.clamp(timeout, httpcore.ConnectTimeout)
        stream = self._backend.connect_unix_socket(path, timeout, socket_options)
        return _Stream(stream, self._deadlines)

    def sleep(self, seconds: float) -> None:
        self._backend.sleep(seconds)


# httpcore errors -> httpx errors, most specific first (what httpx.HTTPTransport does too)
_ERRORS: tuple[tuple[type[Exception], type[httpx.TransportError]], ...] = (
    (httpcore.ConnectTimeout, httpx.ConnectTimeout),
    (httpcore.ReadTimeout, httpx.ReadTimeout),
    (httpcore.WriteTimeout, httpx.WriteTimeout),
    (httpcore.PoolTimeout, httpx.PoolTimeout),
    (httpcore.ConnectError, httpx.ConnectError),
    (httpcore.ReadError, httpx.ReadError),
    (httpcore.WriteError, httpx.WriteError),
    (httpcore.UnsupportedProtocol, httpx.UnsupportedProtocol),
    (httpcore.LocalProtocolError, httpx.LocalProtocolError),
    (httpcore.RemoteProtocolError, httpx.RemoteProtocolError),
    (httpcore.TimeoutException, httpx.TimeoutException),
    (httpcore.NetworkError, httpx.NetworkError),
    (httpcore.ProtocolError, httpx.ProtocolError),
)


@contextmanager
def _httpx_errors() -> Iterator[None]:
    try:
        yield
    except Exception as exc:
        for core, mapped in _ERRORS:
            if isinstance(exc, core):
                raise mapped(str(exc)) from exc
        raise


class _Body(httpx.SyncByteStream):
    def __init__(self, stream: Iterable[bytes]) -> None:
        self._stream = stream

    def __iter__(self) -> Iterator[bytes]:
        with _httpx_errors():
            yield from self._stream

    def close(self) -> None:
        close = getattr(self._stream, "close", None)
        if close is not None:
            close()


class _Transport(httpx.BaseTransport):
    def __init__(self, ssl_context: ssl.SSLContext, deadlines: _Deadlines, keepalive: int) -> None:
        self._pool = httpcore.ConnectionPool(
            ssl_context=ssl_context,
            max_connections=None,  # Fetcher's semaphores are the limit
            max_keepalive_connections=keepalive,
            network_backend=_Backend(deadlines),
        )

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        assert isinstance(request.stream, httpx.SyncByteStream)
        core_request = httpcore.Request(
            method=request.method,
            url=httpcore.URL(
                scheme=request.url.raw_scheme,
                host=request.url.raw_host,
                port=request.url.port,
                target=request.url.raw_path,
            ),
            headers=request.headers.raw,
            content=request.stream,
            extensions=request.extensions,
        )
        with _httpx_errors():
            response = self._pool.handle_request(core_request)
        assert isinstance(response.stream, Iterable)
        return httpx.Response(
            status_code=response.status,
            headers=response.headers,
            stream=_Body(response.stream),
            extensions=response.extensions,
        )

    def close(self) -> None:
        self._pool.close()
