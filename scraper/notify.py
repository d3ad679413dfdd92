"""The delivery edge: Apprise targets built from settings, one message to one target at a time.

Each [[targets]] entry gets its own ``apprise.Apprise`` object, because one ``notify()`` call
reports a single result for every service it reaches, and the ledger needs one result per
target. ``Notifier.send`` renders the notification for the target's channel, hands it to
Apprise and turns the outcome into a :class:`SendResult`; it never raises for delivery trouble.

What each channel gets (see messages.py for the renderers):

- email (``mailto://``, ``mailtos://``): ``render_html`` declared as HTML. Apprise's email
  plugin then sends ``multipart/alternative`` with a text/plain part (its own conversion of the
  HTML: headings, paragraphs, link texts, which is why links are also written out as visible
  URLs) and the text/html part unchanged. The subject is the notification title.
- Telegram (``tgram://``): ``render_telegram``, passed with no declared format. Apprise then
  sends it with ``parse_mode=HTML`` as is: no splitting (its overflow mode is "upstream"), no
  reduction. (Declaring HTML would run Apprise's TelegramHTMLReducer, which rewrites line
  breaks and spacing; the undeclared path only rewrites markup our renderer never emits: other
  tags, &nbsp;/&quot;/&apos; entities and blank lines.) The title is part of the body.
- JSON, XML and form webhooks: ``render_text`` as TEXT (the title travels in its own field).
- any other service: ``render_markdown`` when the service takes Markdown, else ``render_text``.

Failures: Apprise reports ``False`` and logs why. The WARNING entries Apprise captured for the
call (``AppriseResult.logs()``) become ``SendResult.error``, scrubbed of the target's secrets
and prefixed with the redacted URL. Telegram's 429 answer is logged by Apprise as
"Too Many Requests: retry after N" (the API's own description), which gives ``retry_after``.
"""

from __future__ import annotations

import logging
import re
import urllib.parse
import warnings
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import apprise

from scraper.messages import (
    Notification,
    StoryAlert,
    render_html,
    render_markdown,
    render_telegram,
    render_text,
)

if TYPE_CHECKING:
    from scraper.settings import Settings, Target

__all__ = [
    "Notification",
    "Notifier",
    "SecretFilter",
    "SendResult",
    "StoryAlert",
    "check_targets",
    "render_html",
    "render_markdown",
    "render_telegram",
    "render_text",
]

log = logging.getLogger(__name__)

EMAIL_SCHEMES = frozenset({"mailto", "mailtos"})
TELEGRAM_SCHEMES = frozenset({"tgram"})
WEBHOOK_SCHEMES = frozenset({"json", "jsons", "xml", "xmls", "form", "forms"})
# Query parameters Apprise writes into every URL; dropped from the redacted form at these values.
_NOISE = {"overflow": "upstream", "optional": "no"}
_RETRY_AFTER = re.compile(r"retry[ _-]?after\D{0,3}(\d+(?:\.\d+)?)", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class SendResult:
    """The outcome of sending one notification to one target."""

    ok: bool
    error: str | None = None  # redacted: never holds a secret of the target
    retry_after: float | None = None  # seconds the service asked us to wait (Telegram 429)


def _load(url: str, asset: apprise.AppriseAsset | None = None) -> Any:
    """The Apprise plugin for ``url``, or None when the URL does not load.

    While it parses a URL Apprise logs what it rejects, sometimes verbatim ("The Telegram Bot
    Token specified (...) is invalid"), so its records are dropped meanwhile: our callers
    report a bad URL themselves, redacted. Apprise also imports every plugin on first use, and
    one of them imports the deprecated ``imghdr`` module: that DeprecationWarning is Apprise's,
    not ours, and is silenced too.
    """
    with warnings.catch_warnings(), _apprise_silenced():
        warnings.filterwarnings("ignore", message=".*imghdr", category=DeprecationWarning)
        return apprise.Apprise.instantiate(url, asset=asset or apprise.AppriseAsset())


@contextmanager
def _apprise_silenced() -> Iterator[None]:
    apprise_log = logging.getLogger("apprise")
    drop = _DropAll()
    apprise_log.addFilter(drop)
    try:
        yield
    finally:
        apprise_log.removeFilter(drop)


class _DropAll(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return False


def _scheme(url: str) -> str:
    return url.partition("://")[0].strip().lower()


def redact_url(url: str) -> str:
    """A URL Apprise could not load, made safe to show: the scheme, and the host when it looks
    like a host name; user, password, path and query are hidden whatever they hold."""
    scheme, sep, rest = url.strip().partition("://")
    if not sep or not re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]{0,31}", scheme):
        return "***"
    netloc = rest.split("/", 1)[0].split("?", 1)[0].split("#", 1)[0]
    tail = rest[len(netloc) :]
    _, at, host = netloc.rpartition("@")
    hostname = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    shown = host if re.fullmatch(r"[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+", hostname) else "***"
    return f"{scheme}://{'***@' if at else ''}{shown}{'/…' if tail.strip('/') else ''}"


def _private_values(url: str, plugin: Any) -> set[str]:
    """Every secret the target's URL carries: the URL itself, its password, and the values of
    the plugin's private tokens (bot tokens, API keys, passwords)."""
    values: set[str] = {url}
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        parts = None
    if parts is not None and parts.password:
        values.add(parts.password)
    if parts is not None and plugin is None:  # no plugin to say what is secret: mask it all
        values.add(parts.netloc)
        values.update(segment for segment in parts.path.split("/") if len(segment) >= 6)
        values.update(v for _, v in urllib.parse.parse_qsl(parts.query) if len(v) >= 6)
    if plugin is not None:
        specs = {**getattr(plugin, "template_tokens", {}), **getattr(plugin, "template_args", {})}
        for key, spec in specs.items():
            if isinstance(spec, dict) and spec.get("private"):
                value = getattr(plugin, spec.get("map_to", key), None)
                if isinstance(value, str):
                    values.add(value)
                elif isinstance(value, list | tuple | set):
                    values.update(v for v in value if isinstance(v, str))
        password = getattr(plugin, "password", None)
        if isinstance(password, str):
            values.add(password)
    values |= {urllib.parse.unquote(v) for v in values} | {urllib.parse.quote(v) for v in values}
    return {v for v in values if len(v) >= 4}


def _scrub(text: str, secrets: Iterable[str]) -> str:
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, "****")
    return text


class SecretFilter(logging.Filter):
    """A logging filter that masks the targets' secrets in every record it sees.

    At DEBUG level Apprise logs request URLs and urllib3 logs request paths, and the Telegram
    bot token is part of both. Attach this filter to the log *handlers* (a handler filter sees
    the records of every logger, a logger filter only that logger's) so that no verbosity
    setting can put a secret in the logs: ``handler.addFilter(notifier.log_filter())``.
    """

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self.secrets = sorted(set(secrets), key=len, reverse=True)

    def filter(self, record: logging.LogRecord) -> bool:
        if self.secrets:
            message = record.getMessage()
            scrubbed = _scrub(message, self.secrets)
            if scrubbed != message:
                record.msg, record.args = scrubbed, ()
        return True


@dataclass(frozen=True, slots=True)
class _Channel:
    apprise: apprise.Apprise
    plugin: Any
    kind: str  # "email", "telegram", "markdown" or "text": which renderer and format
    redacted: str
    secrets: frozenset[str]


class Notifier:
    """Sends notifications to Apprise targets, one target per call."""

    def __init__(self, targets: Sequence[Target], *, timezone: str) -> None:
        self.targets = list(targets)
        self.tz = ZoneInfo(timezone or "UTC")
        self.asset = apprise.AppriseAsset(app_id="scraper", app_desc="scraper news alerts")
        self._channels: dict[Target, _Channel | None] = {}
        for target in self.targets:
            self._channel(target)

    def targets_for(self, tags: Sequence[str] | None) -> list[Target]:
        """Every target when ``tags`` is None, else the targets having any of ``tags``."""
        if tags is None:
            return list(self.targets)
        wanted = set(tags)
        return [t for t in self.targets if wanted.intersection(t.tags)]

    def redacted(self, target: Target) -> str:
        """The target's URL in Apprise's privacy form, safe for logs and the database."""
        channel = self._channel(target)
        return channel.redacted if channel else redact_url(target.url)

    def log_filter(self) -> SecretFilter:
        """A logging filter masking every target's secrets (see :class:`SecretFilter`)."""
        secrets: set[str] = set()
        for target in self.targets:
            channel = self._channel(target)
            secrets |= channel.secrets if channel else _private_values(target.url, None)
        return SecretFilter(secrets)

    def send(self, target: Target, n: Notification) -> SendResult:
        """Send ``n`` to ``target`` and report what happened; never raises for delivery trouble."""
        channel = self._channel(target)
        if channel is None:
            return SendResult(False, f"{redact_url(target.url)}: not a valid Apprise URL")
        try:
            body, title, body_format = self._render(channel, n)
            result = channel.apprise.notify(body=body, title=title, body_format=body_format)
        except Exception as e:  # a plugin bug or bad input must not take the caller down
            error = _scrub(f"{type(e).__name__}: {e}", channel.secrets)
            log.warning("notify %s (%s) failed: %s", target.name, channel.redacted, error)
            return SendResult(False, f"{channel.redacted}: {error}")
        if result:
            log.info("notify %s (%s): sent %s", target.name, channel.redacted, n.kind)
            return SendResult(True)
        messages = [e.message for e in _logs(result) if e.level in _PROBLEM_LEVELS]
        retry_after = _retry_after(messages)
        error = _scrub("; ".join(dict.fromkeys(messages)) or "delivery failed", channel.secrets)
        log.warning("notify %s (%s) failed: %s", target.name, channel.redacted, error)
        return SendResult(False, f"{channel.redacted}: {error}", retry_after)

    # --- internals ---

    def _channel(self, target: Target) -> _Channel | None:
        if target in self._channels:
            return self._channels[target]
        plugin = _load(target.url, self.asset)
        channel = None
        if plugin is not None:
            ap = apprise.Apprise(asset=self.asset)
            ap.add(plugin)
            channel = _Channel(
                apprise=ap,
                plugin=plugin,
                kind=_kind(_scheme(target.url), plugin),
                redacted=_privacy_url(plugin),
                secrets=frozenset(_private_values(target.url, plugin)),
            )
        self._channels[target] = channel
        return channel

    def _render(self, channel: _Channel, n: Notification) -> tuple[str, str, str | None]:
        """(body, title, body_format) for this channel. Every body starts with the title; a
        service that has no title field of its own (Apprise would prepend it) gets none."""
        title = " ".join(n.title.split())[:250]
        if getattr(channel.plugin, "title_maxlen", 1) <= 0:
            title = ""
        if channel.kind == "email":
            return render_html(n, self.tz), title, apprise.NotifyFormat.HTML
        if channel.kind == "telegram":
            return render_telegram(n, self.tz), "", None
        if channel.kind == "markdown":
            return render_markdown(n, self.tz), title, apprise.NotifyFormat.MARKDOWN
        return render_text(n, self.tz), title, apprise.NotifyFormat.TEXT


_PROBLEM_LEVELS = frozenset({"WARNING", "ERROR", "CRITICAL"})


def _logs(result: Any) -> Iterator[Any]:
    """The log entries Apprise captured for one notify() call (Apprise 2.x AppriseResult)."""
    logs = getattr(result, "logs", None)
    return iter(logs()) if callable(logs) else iter(())


def _retry_after(messages: Iterable[str]) -> float | None:
    for message in messages:
        m = _RETRY_AFTER.search(message)
        if m:
            return float(m.group(1))
    return None


def _formats(plugin: Any) -> tuple[str, ...]:
    declared = getattr(plugin, "notify_format", ())
    items = declared if isinstance(declared, list | tuple) else (declared,)
    return tuple(str(getattr(f, "value", f)) for f in items)


def _kind(scheme: str, plugin: Any) -> str:
    if scheme in EMAIL_SCHEMES:
        return "email"
    if scheme in TELEGRAM_SCHEMES:
        # A ?format=markdown on the URL makes the plugin speak Telegram Markdown: let Apprise
        # convert our CommonMark then.
        resolve = getattr(plugin, "resolve_format", None)
        if callable(resolve) and resolve(apprise.NotifyFormat.HTML) != apprise.NotifyFormat.HTML:
            return "markdown"
        return "telegram"
    if scheme in WEBHOOK_SCHEMES:
        return "text"
    formats = _formats(plugin)
    return "markdown" if "markdown" in formats else "text"


def _privacy_url(plugin: Any) -> str:
    """``plugin.url(privacy=True)`` without the parameters Apprise writes into every URL when
    they hold their defaults (overflow=upstream, optional=no, retry=0 and its wait)."""
    url = str(plugin.url(privacy=True))
    base, sep, query = url.partition("?")
    if not sep:
        return url
    params = urllib.parse.parse_qsl(query, keep_blank_values=True)
    no_retry = ("retry", "0") in params
    kept = [
        (k, v)
        for k, v in params
        if _NOISE.get(k) != v and not (no_retry and k in ("retry", "wait"))
    ]
    return base + ("?" + urllib.parse.urlencode(kept, safe="/:@*") if kept else "")


def check_targets(settings: Settings) -> list[str]:
    """One message for each target whose Apprise URL does not load (the URL redacted)."""
    problems = []
    for target in settings.targets:
        if _load(target.url) is None:
            problems.append(
                f'[[targets]] "{target.name}": not a valid Apprise URL: {redact_url(target.url)}'
            )
    return problems
