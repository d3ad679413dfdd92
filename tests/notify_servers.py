"""Real delivery endpoints on loopback for the notify tests: SMTP, a JSON webhook, Telegram.

    with SmtpServer() as smtp:                 # aiosmtpd on 127.0.0.1, ephemeral port, AUTH
        url = smtp.apprise_url()               # mailto://user:pass@127.0.0.1:PORT?from=..&to=..
        ...send...
        msg = smtp.messages[-1]                # email.message.Message (subject, parts)

    with WebhookServer() as hook:              # Apprise json://127.0.0.1:PORT/hook
        hook.fail(2)                           # the next two requests get HTTP 500
        hook.fail()                            # ...or every request until hook.recover()
        hook.bodies[-1]["message"]             # the JSON bodies received, in order
        hook.slow(0.05)                        # hold each answer 50 ms after the body arrived
        hook.hold(gate)                        # ...or until a threading.Event is set
        hook.wait_for(3, timeout=5)            # block until three posts were received
        hook.drain()                           # every connection made so far is handled

    with TelegramServer() as tg:               # a stand-in Bot API: /bot<token>/<method>
        tg.throttle(1, retry_after=7)          # the next sendMessage gets 429 retry_after=7
        tg.messages["-100123"][-1].text        # accepted messages per chat
        tg.rejected[-1].description            # "Bad Request: can't parse entities: ..."

Apprise hard-codes https://api.telegram.org in ``NotifyTelegram.notify_url``; tests point it
at ``tg.api_url`` (monkeypatch the class attribute). The stand-in enforces what Telegram
enforces for ``parse_mode=HTML``: only its tag subset, properly nested and closed, only
&lt; &gt; &amp; &quot; and numeric entities, and at most 4,096 characters of text after entity
parsing (counted in UTF-16 code units, as Telegram does). It is stricter than the real API
where the API is lenient but its documentation is not: a bare "&" or ">" is rejected too.
Each server serves on its own thread and ``stop()`` (or leaving the ``with``) joins it: no
thread outlives the block.
"""

from __future__ import annotations

import email
import email.message
import html
import json
import re
import socket
import sys
import threading
import time
import urllib.parse
from collections.abc import Awaitable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, HTTPServer
from types import TracebackType
from typing import Any, Self

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

LOOPBACK = "127.0.0.1"

# --- SMTP --------------------------------------------------------------------------------------


class _Recorder:
    """aiosmtpd handler: keeps every message it is given."""

    def __init__(self) -> None:
        self.envelopes: list[Envelope] = []
        self.lock = threading.Lock()

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        with self.lock:
            self.envelopes.append(envelope)
        return "250 Message accepted for delivery"


class _SocketController(Controller):
    """A Controller serving on a socket we bound ourselves (port 0: no port race)."""

    def __init__(self, handler: Any, sock: socket.socket, **kwargs: Any) -> None:
        super().__init__(handler, hostname=LOOPBACK, port=sock.getsockname()[1], **kwargs)
        self._sock = sock

    def _create_server(self) -> Awaitable[Any]:
        return self.loop.create_server(self._factory_invoker, sock=self._sock)


class SmtpServer:
    """An SMTP server on loopback that accepts AUTH LOGIN/PLAIN without TLS and records mail."""

    def __init__(self, user: str = "alerts", password: str = "s3cret-smtp-pass") -> None:
        self.user = user
        self.password = password
        self.logins: list[str] = []
        self._recorder = _Recorder()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((LOOPBACK, 0))
        self.port: int = sock.getsockname()[1]
        self._controller = _SocketController(
            self._recorder,
            sock,
            authenticator=self._authenticate,
            auth_require_tls=False,
            auth_required=False,
        )

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        ok = (
            isinstance(data, LoginPassword)
            and data.login.decode() == self.user
            and data.password.decode() == self.password
        )
        if ok:
            self.logins.append(self.user)
        return AuthResult(success=ok, handled=False)

    def apprise_url(
        self, to: str = "reader@example.com", sender: str = "scraper@example.com"
    ) -> str:
        """An Apprise mailto:// URL for this server (plain SMTP, no TLS, with AUTH)."""
        query = urllib.parse.urlencode({"from": sender, "to": to})
        return f"mailto://{self.user}:{self.password}@{LOOPBACK}:{self.port}?{query}"

    @property
    def messages(self) -> list[email.message.Message]:
        with self._recorder.lock:
            envelopes = list(self._recorder.envelopes)
        return [email.message_from_bytes(e.original_content or b"") for e in envelopes]

    def start(self) -> Self:
        self._controller.start()
        return self

    def stop(self) -> None:
        self._controller.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def email_parts(msg: email.message.Message) -> dict[str, str]:
    """The decoded text parts of a message by content type ("text/plain", "text/html")."""
    parts: dict[str, str] = {}
    for part in msg.walk():
        if part.get_content_maintype() == "text":
            payload = part.get_payload(decode=True)
            assert isinstance(payload, bytes)
            parts[part.get_content_type()] = payload.decode(part.get_content_charset() or "utf-8")
    return parts


# --- HTTP base ---------------------------------------------------------------------------------


class _HttpServer(HTTPServer):
    """One thread serves every request in turn (Apprise posts one at a time)."""

    allow_reuse_address = True
    owner: _LoopbackHttp

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError):
            return  # the sender went away before our answer (killed, timed out): expected
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    server: _HttpServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _reply(self, status: int, payload: Any) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:
        status, payload = self.server.owner.handle("POST", self.path, self.headers, self._body())
        self._reply(status, payload)

    def do_GET(self) -> None:
        status, payload = self.server.owner.handle("GET", self.path, self.headers, b"")
        self._reply(status, payload)


class _LoopbackHttp:
    """Start/stop plumbing shared by the webhook receiver and the Telegram stand-in."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self._server = _HttpServer((LOOPBACK, 0), _Handler)
        self._server.owner = self
        self.port: int = self._server.server_address[1]
        self._thread: threading.Thread | None = None

    def handle(self, method: str, path: str, headers: Any, body: bytes) -> tuple[int, Any]:
        raise NotImplementedError

    def start(self) -> Self:
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=type(self).__name__,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


# --- JSON webhook ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Hook:
    path: str
    headers: dict[str, str]
    body: Any  # the parsed JSON (or the raw text when it was not JSON)
    at: float = 0.0  # time.monotonic() when the whole body had arrived (before any delay)


class WebhookServer(_LoopbackHttp):
    """Receives Apprise ``json://`` posts; can be told to fail with HTTP 500, and to hold each
    answer (``delay`` seconds, or until a ``gate`` event is set) after the body has arrived and
    been recorded: the window in which a sender that dies has delivered but not heard so."""

    DRAIN_PATH = "/_drain"  # answered at once and not recorded: see drain()

    def __init__(self, *, delay: float = 0.0, gate: threading.Event | None = None) -> None:
        super().__init__()
        self.received: list[Hook] = []
        self.failed = 0  # requests answered 500 so far
        self.incomplete = 0  # requests whose body ended early (not recorded)
        self._fail_next: int | None = 0  # None: fail until recover()
        self._delay = delay
        self._gate = gate
        self._arrived = threading.Condition(self.lock)
        self._stopping = threading.Event()

    def apprise_url(self, path: str = "/hook", user: str = "", password: str = "") -> str:
        auth = f"{user}:{password}@" if user or password else ""
        return f"json://{auth}{LOOPBACK}:{self.port}{path}"

    def fail(self, times: int | None = None) -> None:
        """Answer 500 to the next ``times`` requests, or to every request until recover()."""
        with self.lock:
            self._fail_next = times

    def recover(self) -> None:
        with self.lock:
            self._fail_next = 0

    def slow(self, delay: float) -> None:
        """Hold each later answer ``delay`` seconds after recording its body (0: answer at once)."""
        with self.lock:
            self._delay = delay

    def hold(self, gate: threading.Event | None) -> None:
        """Answer later requests only once ``gate`` is set (None: no gate)."""
        with self.lock:
            self._gate = gate

    @property
    def bodies(self) -> list[Any]:
        with self.lock:
            return [h.body for h in self.received]

    def wait_for(self, count: int, timeout: float = 5.0) -> bool:
        """Block until ``count`` requests have been recorded (no polling); False on timeout."""
        with self._arrived:
            return self._arrived.wait_for(lambda: len(self.received) >= count, timeout)

    def drain(self, timeout: float = 5.0) -> None:
        """Return once every connection made before this call has been handled (recorded or
        dropped). The server handles connections one at a time in arrival order, so a request
        of its own, queued behind them, is answered last; it is not recorded or held."""
        with socket.create_connection((LOOPBACK, self.port), timeout=timeout) as sock:
            sock.sendall(
                f"GET {self.DRAIN_PATH} HTTP/1.1\r\nHost: {LOOPBACK}\r\n"
                "Connection: close\r\n\r\n".encode()
            )
            while sock.recv(4096):
                pass

    def stop(self) -> None:
        self._stopping.set()  # release a held answer
        super().stop()

    def handle(self, method: str, path: str, headers: Any, body: bytes) -> tuple[int, Any]:
        if path == self.DRAIN_PATH:
            return 200, {"ok": True}
        if len(body) < int(headers.get("Content-Length") or 0):
            with self.lock:  # the sender died mid-request: nothing was received
                self.incomplete += 1
            return 400, {"error": "incomplete body"}
        with self.lock:
            if self._fail_next is None or self._fail_next > 0:
                if self._fail_next is not None:
                    self._fail_next -= 1
                self.failed += 1
                return 500, {"error": "internal server error"}
            text = body.decode("utf-8", "replace")
            try:
                parsed: Any = json.loads(text)
            except ValueError:
                parsed = text
            headers = {k.lower(): v for k, v in headers.items()}
            self.received.append(Hook(path, headers, parsed, time.monotonic()))
            self._arrived.notify_all()
            delay, gate = self._delay, self._gate
        if gate is not None:
            while not gate.wait(0.05):  # also notice stop() promptly
                if self._stopping.is_set():
                    break
        if delay:
            self._stopping.wait(delay)
        return 200, {"ok": True}


# --- Telegram ----------------------------------------------------------------------------------

TELEGRAM_LIMIT = 4096
# Tags of Telegram's HTML parse mode (https://core.telegram.org/bots/api#html-style).
_TG_TAGS = frozenset(
    {
        *("b", "strong", "i", "em", "u", "ins", "s", "strike", "del"),
        *("span", "tg-spoiler", "a", "tg-emoji", "code", "pre", "blockquote"),
    }
)
_TG_NAMED_ENTITIES = {"lt": "<", "gt": ">", "amp": "&", "quot": '"'}
_TG_TAG_RE = re.compile(
    r"<(/?)([A-Za-z][A-Za-z0-9-]*)((?:\s+[A-Za-z-]+(?:\s*=\s*(?:\"[^\"]*\"|'[^']*'|[^\s>]+))?)*)"
    r"\s*>"
)
_TG_ATTR_RE = re.compile(r"([A-Za-z-]+)(?:\s*=\s*(?:\"([^\"]*)\"|'([^']*)'|([^\s>]+)))?")
_TG_ENTITY_RE = re.compile(r"&(#[0-9]{1,7}|#[xX][0-9A-Fa-f]{1,6}|[A-Za-z][A-Za-z0-9]*);")


class TelegramParseError(ValueError):
    """The text is not valid Telegram HTML; str() is the API's description suffix."""


def telegram_html_text(markup: str) -> str:
    """Parse ``markup`` as Telegram's HTML parse mode does and return the visible text.

    Raises TelegramParseError (with a message shaped like the API's) for an unsupported or
    unclosed tag, a misnested end tag, nested links or quotes, markup inside code, or an
    unsupported named entity.
    """
    out: list[str] = []
    stack: list[str] = []
    pos = 0
    while pos < len(markup):
        ch = markup[pos]
        if ch == "<":
            m = _TG_TAG_RE.match(markup, pos)
            if m is None:
                raise TelegramParseError(f"Unsupported start tag at byte offset {pos}")
            closing, name, attrs = m.group(1), m.group(2).lower(), m.group(3)
            if closing:
                if not stack:
                    raise TelegramParseError(f'Unexpected end tag "{name}" at byte offset {pos}')
                if stack[-1] != name:
                    raise TelegramParseError(
                        f'Unmatched end tag at byte offset {pos}, expected "</{stack[-1]}>", '
                        f'found "</{name}>"'
                    )
                stack.pop()
            else:
                if name not in _TG_TAGS:
                    raise TelegramParseError(f'Unsupported start tag "{name}" at byte offset {pos}')
                values = {
                    a.group(1).lower(): a.group(2) or a.group(3) or a.group(4) or ""
                    for a in _TG_ATTR_RE.finditer(attrs)
                }
                if ("code" in stack or "pre" in stack) and not (
                    name == "code" and stack[-1:] == ["pre"]
                ):
                    raise TelegramParseError(
                        f'Can\'t use "{name}" inside code at byte offset {pos}'
                    )
                if name == "a":
                    if "a" in stack:
                        raise TelegramParseError(f"Nested links at byte offset {pos}")
                    href = html.unescape(values.get("href", ""))
                    if not href or any(c.isspace() for c in href):
                        raise TelegramParseError(f"Wrong HTTP URL at byte offset {pos}")
                if name == "blockquote" and "blockquote" in stack:
                    raise TelegramParseError(f"Nested blockquotes at byte offset {pos}")
                if name == "span" and values.get("class") != "tg-spoiler":
                    raise TelegramParseError(f'Unsupported start tag "span" at byte offset {pos}')
                stack.append(name)
            pos = m.end()
        elif ch == "&":
            m = _TG_ENTITY_RE.match(markup, pos)
            if m is None:  # the API asks for every literal & to be written &amp;
                raise TelegramParseError(f"Unescaped ampersand at byte offset {pos}")
            ref = m.group(1)
            if ref.startswith("#"):
                code = int(ref[2:], 16) if ref[1:2] in "xX" else int(ref[1:])
                out.append(chr(code) if 0 < code < 0x110000 else "\ufffd")
            elif ref.lower() in _TG_NAMED_ENTITIES:
                out.append(_TG_NAMED_ENTITIES[ref.lower()])
            else:
                raise TelegramParseError(f'Unsupported HTML entity "&{ref};" at byte offset {pos}')
            pos = m.end()
        elif ch == ">":
            raise TelegramParseError(f"Unescaped greater-than sign at byte offset {pos}")
        else:
            out.append(ch)
            pos += 1
    if stack:
        raise TelegramParseError(f'Can\'t find end tag corresponding to start tag "{stack[-1]}"')
    return "".join(out)


def utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


@dataclass(frozen=True)
class TelegramMessage:
    chat_id: str
    text: str  # as received (markup)
    parse_mode: str | None
    visible: str  # the text a user sees (markup parsed)
    payload: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TelegramRejection:
    chat_id: str
    text: str
    error_code: int
    description: str


class TelegramServer(_LoopbackHttp):
    """A stand-in Telegram Bot API: getMe, getUpdates, sendMessage (and sendPhoto, recorded)."""

    def __init__(self, token: str = "123456789:AAHtestTokenForLoopbackOnly_xyz") -> None:
        super().__init__()
        self.token = token
        self.messages: dict[str, list[TelegramMessage]] = {}
        self.rejected: list[TelegramRejection] = []
        self.calls: list[str] = []  # method names, in order
        self._throttle = 0
        self._retry_after = 0

    @property
    def api_url(self) -> str:
        """What NotifyTelegram.notify_url should be: the token and method are appended."""
        return f"http://{LOOPBACK}:{self.port}/bot"

    def apprise_url(self, chat_id: str = "-100123") -> str:
        return f"tgram://{self.token}/{chat_id}"

    def throttle(self, times: int, retry_after: int) -> None:
        """Answer the next ``times`` sendMessage calls with 429 and this retry_after."""
        with self.lock:
            self._throttle = times
            self._retry_after = retry_after

    def all_messages(self) -> list[TelegramMessage]:
        with self.lock:
            return [m for chat in self.messages.values() for m in chat]

    def handle(self, method: str, path: str, headers: Any, body: bytes) -> tuple[int, Any]:
        m = re.fullmatch(r"/bot([^/]+)/([A-Za-z]+)(?:\?.*)?", path)
        if m is None:
            return 404, {"ok": False, "error_code": 404, "description": "Not Found"}
        token, api_method = m.groups()
        with self.lock:
            self.calls.append(api_method)
            if token != self.token:
                return 401, {"ok": False, "error_code": 401, "description": "Unauthorized"}
            params = self._params(headers, body)
            if api_method == "getMe":
                bot = {"id": int(self.token.split(":")[0]), "is_bot": True, "first_name": "Test"}
                return 200, {"ok": True, "result": bot}
            if api_method == "getUpdates":
                return 200, {"ok": True, "result": []}
            if api_method == "sendMessage":
                return self._send_message(params)
            if api_method in {"sendPhoto", "sendDocument", "sendChatAction"}:
                return 200, {"ok": True, "result": {"message_id": len(self.calls)}}
            return 404, {"ok": False, "error_code": 404, "description": "Not Found"}

    @staticmethod
    def _params(headers: Any, body: bytes) -> dict[str, Any]:
        ctype = (headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if ctype == "application/json":
            loaded = json.loads(body or b"{}")
            return loaded if isinstance(loaded, dict) else {}
        return dict(urllib.parse.parse_qsl(body.decode("utf-8", "replace")))

    def _reject(self, chat_id: str, text: str, code: int, description: str) -> tuple[int, Any]:
        self.rejected.append(TelegramRejection(chat_id, text, code, description))
        return code, {"ok": False, "error_code": code, "description": description}

    def _send_message(self, params: dict[str, Any]) -> tuple[int, Any]:
        chat_id = str(params.get("chat_id", ""))
        text = str(params.get("text", ""))
        if self._throttle > 0:
            self._throttle -= 1
            retry = self._retry_after
            self.rejected.append(
                TelegramRejection(chat_id, text, 429, f"Too Many Requests: retry after {retry}")
            )
            return 429, {
                "ok": False,
                "error_code": 429,
                "description": f"Too Many Requests: retry after {retry}",
                "parameters": {"retry_after": retry},
            }
        if not chat_id:
            return self._reject(chat_id, text, 400, "Bad Request: chat not found")
        parse_mode = params.get("parse_mode")
        visible = text
        if isinstance(parse_mode, str) and parse_mode.upper() == "HTML":
            try:
                visible = telegram_html_text(text)
            except TelegramParseError as e:
                return self._reject(chat_id, text, 400, f"Bad Request: can't parse entities: {e}")
        if not visible.strip():
            return self._reject(chat_id, text, 400, "Bad Request: message text is empty")
        if utf16_len(visible) > TELEGRAM_LIMIT:
            return self._reject(chat_id, text, 400, "Bad Request: message is too long")
        message = TelegramMessage(chat_id, text, parse_mode, visible, dict(params))
        self.messages.setdefault(chat_id, []).append(message)
        result = {"message_id": len(self.calls), "chat": {"id": chat_id}, "text": visible}
        return 200, {"ok": True, "result": result}
