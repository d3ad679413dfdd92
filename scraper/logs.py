"""Log lines: one per poll, alert and error, readable on a terminal and parseable otherwise.

Three formats, chosen with ``--log-format``:

    text   2024-11-01 14:30:05 INFO  poll source="Japan Today" status=200 new=3 ms=412
    kv     time=2024-11-01T05:30:05.123Z level=info logger=scraper.daemon event=poll source=...
    json   {"time": "2024-11-01T05:30:05.123Z", "level": "info", "event": "poll", "source": ...}

``auto`` (the default) is text on a terminal and kv otherwise. Structured lines are written
with :func:`event`; any other record (from a library, or a plain ``log.info("...")``) is kept as
its message (``msg=`` in kv, ``"message"`` in JSON). A traceback stays on the same line in kv
and JSON (escaped), so one error is one line.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, TextIO

FORMATS = ("auto", "text", "kv", "json")
_BARE = re.compile(r"[A-Za-z0-9_.:/@+\-]+")
_HANDLER_MARK = "_scraper_handler"


def _value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.3f}".rstrip("0").rstrip(".")
    if isinstance(value, int):
        return str(value)
    text = str(value)
    return text if _BARE.fullmatch(text) else json.dumps(text, ensure_ascii=False)


def render(name: str, fields: Mapping[str, object]) -> str:
    """``name k=v k=v`` (None values left out), the text of a structured line."""
    parts = [name] + [f"{k}={_value(v)}" for k, v in fields.items() if v is not None]
    return " ".join(parts)


def event(logger: logging.Logger, level: int, name: str, /, **fields: object) -> None:
    """Log one structured line: an event name and its fields."""
    if not logger.isEnabledFor(level):
        return
    clean = {k: v for k, v in fields.items() if v is not None}
    logger.log(level, "%s", render(name, clean), extra={"event": name, "fields": clean})


def _utc(record: logging.LogRecord) -> str:
    stamp = datetime.fromtimestamp(record.created, UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z"


def _structured(record: logging.LogRecord) -> tuple[str | None, dict[str, object] | None]:
    """The event name and fields of a line written by :func:`event`, unless a filter has
    rewritten its message since (the secret filter does): then the message is what counts."""
    name: str | None = getattr(record, "event", None)
    fields: dict[str, object] | None = getattr(record, "fields", None)
    if name is None or fields is None or record.msg != "%s":
        return None, None
    return name, fields


class TextFormatter(logging.Formatter):
    """Local time, level, message: for a person at a terminal."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-5s %(message)s", "%Y-%m-%d %H:%M:%S")


class KeyValueFormatter(logging.Formatter):
    """``time=… level=… logger=… event=… k=v …`` on one line (logfmt)."""

    def format(self, record: logging.LogRecord) -> str:
        head = {
            "time": _utc(record),
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        name, fields = _structured(record)
        if name is not None and fields is not None:
            body: dict[str, object] = {"event": name, **fields}
        else:
            body = {"msg": record.getMessage()}
        if record.exc_info:
            body["exc"] = self.formatException(record.exc_info)
        line = {**head, **body}
        return " ".join(f"{k}={_value(v)}" for k, v in line.items() if v is not None)


class JsonFormatter(logging.Formatter):
    """One JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": _utc(record),
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        name, fields = _structured(record)
        if name is not None and fields is not None:
            out["event"] = name
            for key, value in fields.items():
                out.setdefault(key, value)
        else:
            out["message"] = record.getMessage()
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False, default=str)


def formatter(fmt: str, stream: TextIO) -> logging.Formatter:
    if fmt == "auto":
        fmt = "text" if stream.isatty() else "kv"
    if fmt == "text":
        return TextFormatter()
    if fmt == "kv":
        return KeyValueFormatter()
    if fmt == "json":
        return JsonFormatter()
    raise ValueError(f"unknown log format {fmt!r} (expected one of {', '.join(FORMATS)})")


class _Chatter(logging.Filter):
    """Drops records of some loggers below a level, on our handler only (setting the loggers'
    own levels would also silence them for other handlers, such as pytest's). Off at DEBUG."""

    def __init__(self, thresholds: dict[str, int], enabled: bool) -> None:
        super().__init__()
        self.thresholds = dict(thresholds)
        self.enabled = enabled

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.enabled:
            return True
        name = record.name
        while name:
            limit = self.thresholds.get(name)
            if limit is not None:
                return record.levelno >= limit
            name = name.rpartition(".")[0]
        return True


# Apprise says "Notifying 1 service(s)" for each message; the daemon reports job errors and
# misfires itself, one line each (scraper.schedule.JobListener).
CHATTER = {"apprise": logging.WARNING, "apscheduler.executors": logging.CRITICAL}


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is when a record comes (a test runner swaps it)."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr  # under the handler's lock
        super().emit(record)


def configure(level: int, fmt: str = "auto", stream: TextIO | None = None) -> logging.Handler:
    """Install (or replace) our handler on the root logger; other handlers are left alone.
    Without ``stream``, lines go to standard error."""
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, _HANDLER_MARK, False):
            root.removeHandler(old)
    handler = logging.StreamHandler(stream) if stream is not None else _StderrHandler()
    handler.setFormatter(formatter(fmt, stream or sys.stderr))
    handler.addFilter(_Chatter(CHATTER, enabled=level > logging.DEBUG))
    setattr(handler, _HANDLER_MARK, True)
    root.addHandler(handler)
    root.setLevel(level)
    for noisy in ("httpx", "httpcore", "apscheduler"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
    return handler


def quiet(name: str, below: int = logging.WARNING) -> None:
    """Keep ``name``'s records below ``below`` off our handlers (unless at DEBUG)."""
    for handler in our_handlers():
        for f in handler.filters:
            if isinstance(f, _Chatter):
                f.thresholds[name] = below


def our_handlers() -> list[logging.Handler]:
    return [h for h in logging.getLogger().handlers if getattr(h, _HANDLER_MARK, False)]
