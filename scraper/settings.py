"""Load and validate scraper.toml, once, into frozen settings.

Every setting is declared once, in ``SCHEMA``: its name, how its value is read (which is its
type), its default and a line of help. Reading is strict: an unknown key is an error that
suggests the close match, a wrong type or a bad value is an error, and every error names the
file, the line and the key. ``${VAR}`` in a string value is read from the ``environ`` mapping
passed in (``$${VAR}`` is a literal ``${VAR}``); this module never reads ``os.environ``.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from scraper import __version__
from scraper.errors import ConfigError
from scraper.models import HtmlSelectors, Source

PROJECT_URL = "https://github.com/scraper-news/scraper"
DEFAULT_CONFIG = "scraper.toml"
CONFIG_ENV = "SCRAPER_CONFIG"


def default_config_path(environ: Mapping[str, str]) -> Path:
    """``$SCRAPER_CONFIG`` when set, else ``scraper.toml`` (relative to the working folder)."""
    return Path(environ.get(CONFIG_ENV) or DEFAULT_CONFIG).expanduser()


# --- value parsers -------------------------------------------------------------------------

_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_DURATION_ALIASES = {
    **{a: "s" for a in ("sec", "secs", "second", "seconds")},
    **{a: "m" for a in ("min", "mins", "minute", "minutes")},
    **{a: "h" for a in ("hr", "hrs", "hour", "hours")},
    **{a: "d" for a in ("day", "days")},
    **{a: "w" for a in ("wk", "wks", "week", "weeks")},
}
_NUMBER_UNIT = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([^\W\d_]*)\s*")
_SIZE_UNITS = {
    "b": 1,
    **{u + "b": 1000**p for p, u in enumerate("kmgt", 1)},
    **{u + "ib": 1024**p for p, u in enumerate("kmgt", 1)},
}


def _number(value: object, what: str) -> float | None:
    """A TOML number as a float (None for a string); bools and non-finite values are errors."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"expected {what}, got {_type_name(value)}")
    if isinstance(value, str):
        return None
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"expected {what}, got {value}")
    return float(value)


def parse_duration(text: str | float) -> float:
    """Seconds in a duration: "90s", "15m", "2h", "1d", "1w" (also "1h30m", "500ms"); a bare
    number is seconds. Raises ValueError with a message that shows the expected form."""
    expected = 'a duration like "90s", "15m", "2h", "1d" or "1w"'
    number = _number(text, expected)
    if number is not None:
        return number
    assert isinstance(text, str)
    total, pos, parts = 0.0, 0, 0
    while pos < len(text) or parts == 0:
        m = _NUMBER_UNIT.match(text, pos)
        unit = m.group(2).lower() if m else ""
        unit = _DURATION_ALIASES.get(unit, unit)
        if not m or m.end() == pos or (unit and unit not in _DURATION_UNITS):
            raise ValueError(f"expected {expected}, got {text!r}")
        if unit == "" and (parts or m.end() < len(text)):
            raise ValueError(f"expected {expected}, got {text!r} (a number needs a unit)")
        total += float(m.group(1)) * _DURATION_UNITS.get(unit, 1.0)
        pos, parts = m.end(), parts + 1
    return total


def parse_size(text: str | int) -> int:
    """Bytes in a size: "500B", "10KB"/"10MB"/"10GB" (powers of 1000), "10KiB"/"10MiB"/"10GiB"
    (powers of 1024), or a bare number of bytes. Raises ValueError."""
    expected = 'a size like "500KB", "10MB" or "10MiB"'
    number = _number(text, expected)
    if number is None:
        assert isinstance(text, str)
        m = _NUMBER_UNIT.fullmatch(text)
        unit = m.group(2).lower() if m else ""
        if not m or (unit and unit not in _SIZE_UNITS):
            raise ValueError(f"expected {expected}, got {text!r}")
        number = float(m.group(1)) * _SIZE_UNITS.get(unit, 1)
    if number != int(number):
        raise ValueError(f"expected a whole number of bytes, got {text!r}")
    return int(number)


def parse_fraction(text: str | float) -> float:
    """A fraction from 0 to 1: "10%" or 0.1 -> 0.1."""
    expected = 'a percentage like "10%"'
    number = _number(text, expected)
    if number is None:
        assert isinstance(text, str)
        m = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*%\s*", text)
        if not m:
            raise ValueError(f"expected {expected}, got {text!r}")
        number = float(m.group(1)) / 100
    if number > 1:
        raise ValueError(f"expected {expected} (at most 100%), got {text!r}")
    return number


_RATE_UNITS = {"s": "1s", "m": "1m", "h": "1h", "d": "1d", "w": "1w"}


def parse_rate(text: str | bool) -> tuple[int, float] | None:
    """A rate as (count, seconds): "30/h", "5/m", "100/d", "30/10m"; "off" or false -> None."""
    if text is False or (isinstance(text, str) and text.strip().lower() in ("off", "none")):
        return None
    expected = 'a rate like "30/h", "100/d" or "30/10m" (or "off")'
    if not isinstance(text, str):
        raise ValueError(f"expected {expected}, got {_type_name(text)}")
    count, _, per = text.partition("/")
    if not count.strip().isdigit() or int(count) < 1 or not per.strip():
        raise ValueError(f"expected {expected}, got {text!r}")
    per = _RATE_UNITS.get(per.strip().lower(), per)
    try:
        seconds = parse_duration(per)
    except ValueError:
        seconds = 0
    if seconds <= 0:
        raise ValueError(f"expected {expected}, got {text!r}")
    return int(count), seconds


def parse_quiet_hours(text: str | bool) -> tuple[time, time] | None:
    """Quiet hours as (start, end): "23:00-07:00" -> (23:00, 07:00); "off"/false -> None."""
    if text is False or (isinstance(text, str) and text.strip().lower() in ("off", "none")):
        return None
    expected = 'hours like "23:00-07:00"'
    m = re.fullmatch(r"\s*(\d{1,2}):(\d{2})\s*[-–]\s*(\d{1,2}):(\d{2})\s*", str(text))
    if not isinstance(text, str) or not m:
        raise ValueError(f"expected {expected}, got {text!r}")
    h1, m1, h2, m2 = (int(g) for g in m.groups())
    if h1 > 23 or h2 > 23 or m1 > 59 or m2 > 59:
        raise ValueError(f"expected {expected} (00:00 to 23:59), got {text!r}")
    if (h1, m1) == (h2, m2):
        raise ValueError(f"quiet hours must not start and end at the same time: {text!r}")
    return time(h1, m1), time(h2, m2)


# --- the readers each key declares -----------------------------------------------------------


def _type_name(value: object) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}
    names |= {list: "an array", dict: "a table"}
    return next((n for t, n in names.items() if type(value) is t), type(value).__name__)


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {_type_name(value)}")
    if not value.strip():
        raise ValueError("must not be empty")
    return value.strip()


def _boolean(value: object) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {_type_name(value)}")
    return value


def _count(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"expected a whole number, got {_type_name(value)}")
    if value < 1:
        raise ValueError(f"expected a number of at least 1, got {value}")
    return value


def _positive_duration(value: Any) -> float:
    seconds = parse_duration(value)
    if seconds <= 0:
        raise ValueError(f"must be longer than zero, got {value!r}")
    return seconds


def _optional_duration(value: Any) -> float | None:
    if value is False or (isinstance(value, str) and value.strip().lower() in ("off", "none")):
        return None
    return _positive_duration(value)


def _positive_size(value: Any) -> int:
    size = parse_size(value)
    if size <= 0:
        raise ValueError(f"must be larger than zero, got {value!r}")
    return size


def _tags(value: object) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(t, str) and t.strip() for t in value):
        raise ValueError('expected an array of strings, e.g. ["japan", "wire"]')
    return tuple(dict.fromkeys(t.strip() for t in value))


def _http_url(value: object) -> str:
    url = _text(value)
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise ValueError(f"expected an http:// or https:// URL, got {url!r}")
    return url


def _apprise_url(value: object) -> str:
    url = _text(value)  # may hold secrets: never echo it
    if not re.match(r"[A-Za-z][A-Za-z0-9+.-]*://", url):
        raise ValueError('expected an Apprise URL such as "mailtos://..." or "tgram://..."')
    return url


def _kind(value: object) -> str:
    if value not in ("feed", "html"):
        raise ValueError(f'expected "feed" or "html", got {value!r}')
    return str(value)


def _selector(value: object) -> str:
    selector = _text(value)
    try:
        import soupsieve  # beautifulsoup4's selector engine; only checked here, never used

        soupsieve.compile(selector)
    except ImportError:  # pragma: no cover - beautifulsoup4 depends on it
        pass
    except Exception as exc:  # soupsieve.SelectorSyntaxError and friends
        first = str(exc).splitlines()[0]
        raise ValueError(f"invalid CSS selector {selector!r}: {first}") from None
    return selector


def _timezone(value: object) -> str:
    name = _text(value)
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f'unknown time zone {name!r} (use a name like "Asia/Tokyo")') from None
    return name


def _path(value: object) -> Path:
    return Path(_text(value)).expanduser()


# --- the schema: every setting, declared once ------------------------------------------------

_REQUIRED: Any = object()


@dataclass(frozen=True, slots=True)
class Key:
    """One setting: its TOML name, its reader (which is its type), its default as a user
    would write it in TOML (``_REQUIRED`` when it has none), and one line of help."""

    name: str
    read: Callable[[Any], Any]
    default: Any
    help: str

    @property
    def value(self) -> Any:
        """The default, read."""
        return None if self.default is None else self.read(self.default)


SELECTOR_KEYS = ("item", "title", "link", "date", "summary")
_SOURCE_DEFAULT_KEYS = (
    Key("interval", _positive_duration, "15m", "how often a source is polled"),
    Key("timeout", _positive_duration, "30s", "time limit of one fetch, body included"),
    Key("max_bytes", _positive_size, "10MB", "decoded size limit of one response"),
    Key("jitter", parse_fraction, "10%", "random spread of each interval"),
)

SCHEMA: dict[str, tuple[Key, ...]] = {
    "": (
        Key("database", _path, "state/news.db", "the SQLite archive (relative to this file)"),
        Key("rules", _path, "rules", "the folder of rule files (relative to this file)"),
        Key("user_agent", _text, f"scraper/{__version__} (+{PROJECT_URL})", "HTTP User-Agent"),
        Key("timezone", _timezone, "UTC", "for digests, quiet hours and times in messages"),
        Key("concurrency", _count, 16, "requests in flight at once"),
        Key("per_host", _count, 2, "requests in flight per host"),
        Key("parse_timeout", _positive_duration, "10s", "time limit for parsing one document"),
        Key("retention", _optional_duration, None, "`scraper prune` keeps bodies this long"),
    ),
    "defaults": _SOURCE_DEFAULT_KEYS,
    "sources": (
        Key("name", _text, _REQUIRED, "unique; used in rules and in the database"),
        Key("url", _http_url, _REQUIRED, "the feed or page"),
        Key("kind", _kind, "feed", '"feed" (RSS, Atom, RDF, JSON Feed) or "html"'),
        Key("tags", _tags, [], "labels that rules select sources by"),
        Key("enabled", _boolean, True, "false stops polling it"),
        *(
            Key(k.name, k.read, None, k.help + " (default: [defaults])")
            for k in _SOURCE_DEFAULT_KEYS
        ),
        Key("item", _selector, None, "html: CSS selector of one item (required)"),
        Key("title", _selector, None, "html: the title inside an item (required)"),
        Key("link", _selector, None, 'html: the link inside an item (default "a[href]")'),
        Key("date", _selector, None, "html: the date inside an item"),
        Key("summary", _selector, None, "html: the summary inside an item"),
    ),
    "alerts": (
        Key("backlog", _boolean, False, "alert on items of a source's first fetch"),
        Key("max_age", _positive_duration, "2d", "older items never alert"),
        Key("rate_limit", parse_rate, "30/h", "alerts per target per period; the rest fold"),
        Key("quiet_hours", parse_quiet_hours, None, 'e.g. "23:00-07:00": alerts are held'),
        Key("story_window", _positive_duration, "48h", "copies of one story alert once"),
    ),
    "targets": (
        Key("name", _text, None, 'unique (default: scheme and position, e.g. "mailtos-1")'),
        Key("url", _apprise_url, _REQUIRED, "an Apprise URL; ${VAR} from the environment"),
        Key("tags", _tags, [], "rules notify targets by tag"),
    ),
    "health": (
        Key("notify", _tags, [], "target tags that hear about failing or silent sources"),
        Key("failures", _count, 5, "consecutive failures before a health alert"),
    ),
}
_TABLES = ("defaults", "alerts", "health")
_ARRAYS = ("sources", "targets")


def _default(section: str, name: str) -> Any:
    return next(k for k in SCHEMA[section] if k.name == name).value


@dataclass(frozen=True, slots=True)
class Target:
    """An Apprise target. ``url`` has ``${VAR}`` expanded: it is a secret, kept out of repr."""

    name: str
    url: str = field(repr=False)
    tags: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class AlertSettings:
    backlog: bool = _default("alerts", "backlog")
    max_age: float = _default("alerts", "max_age")
    rate_limit: tuple[int, float] | None = _default("alerts", "rate_limit")  # (count, seconds)
    quiet_hours: tuple[time, time] | None = _default("alerts", "quiet_hours")
    story_window: float = _default("alerts", "story_window")


@dataclass(frozen=True, slots=True)
class HealthSettings:
    notify: tuple[str, ...] = _default("health", "notify")
    failures: int = _default("health", "failures")


@dataclass(frozen=True, slots=True)
class Settings:
    path: Path  # the config file, absolute
    database: Path  # absolute
    rules: Path  # absolute
    user_agent: str = _default("", "user_agent")
    timezone: str = _default("", "timezone")
    concurrency: int = _default("", "concurrency")
    per_host: int = _default("", "per_host")
    sources: tuple[Source, ...] = ()
    alerts: AlertSettings = AlertSettings()
    targets: tuple[Target, ...] = ()
    health: HealthSettings = HealthSettings()
    parse_timeout: float = _default("", "parse_timeout")
    retention: float | None = _default("", "retention")


# --- where each key is: tomllib keeps no positions, so scan the (valid) text for them --------

_Path = tuple[str | int, ...]
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_QUOTED_KEY = re.compile(r'"(?:[^"\\\n]|\\.)*"|\'[^\'\n]*\'')


def locate_keys(text: str) -> dict[_Path, tuple[int, int]]:
    """Map each header and key of a valid TOML document to its first and last line.

    Paths are as tomllib nests them, with array-of-tables positions (0-based): ``("sources",
    2, "interval")``. Keys inside inline tables are not listed (their enclosing key is)."""
    found: dict[_Path, tuple[int, int]] = {}
    counters: dict[_Path, int] = {}
    table: _Path = ()
    i, line, n = 0, 1, len(text)

    def resolve(parts: Sequence[str]) -> _Path:
        path: _Path = ()
        for part in parts:
            path += (part,)
            if path in counters:
                path += (counters[path] - 1,)
        return path

    try:
        while i < n:
            c = text[i]
            if c == "\n":
                line += 1
            if c in " \t\r\n":
                i += 1
            elif c == "#":
                i = _line_end(text, i)
            elif c == "[":
                aot = text.startswith("[[", i)
                parts, i = _read_key(text, i + (2 if aot else 1))
                i = text.index("]", i) + (2 if aot else 1)
                if aot:
                    array = (*resolve(parts[:-1]), parts[-1])
                    counters[array] = counters.get(array, 0) + 1
                    found.setdefault(array, (line, line))
                    table = (*array, counters[array] - 1)
                else:
                    table = resolve(parts)
                found.setdefault(table, (line, line))
            else:
                parts, i = _read_key(text, i)
                i = text.index("=", i) + 1
                first = line
                i, line = _skip_value(text, i, line)
                for k in range(1, len(parts) + 1):
                    found.setdefault(table + tuple(parts[:k]), (first, line))
    except (ValueError, IndexError):  # not expected on valid TOML; positions are best effort
        pass
    return found


def _line_end(text: str, i: int) -> int:
    end = text.find("\n", i)
    return len(text) if end < 0 else end


def _read_key(text: str, i: int) -> tuple[list[str], int]:
    parts: list[str] = []
    while True:
        while text[i] in " \t":
            i += 1
        m = _BARE_KEY.match(text, i) or _QUOTED_KEY.match(text, i)
        if not m:
            raise ValueError("no key")
        raw = m.group()
        parts.append(raw if raw[0] not in "\"'" else next(iter(tomllib.loads(f"{raw} = 0"))))
        i = m.end()
        while i < len(text) and text[i] in " \t":
            i += 1
        if i < len(text) and text[i] == ".":
            i += 1
            continue
        return parts, i


def _skip_value(text: str, i: int, line: int) -> tuple[int, int]:
    """Skip one value (strings, arrays, inline tables, comments); stop before its newline."""
    depth, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == "\n":
            if depth == 0:
                return i, line
            line += 1
            i += 1
        elif c == "#":
            i = _line_end(text, i)
        elif c in "\"'":
            quote = c * 3 if text.startswith(c * 3, i) else c
            j = i + len(quote)
            while not text.startswith(quote, j):
                if c == '"' and text[j] == "\\":
                    j += 1
                j += 1
            j += len(quote)
            while len(quote) == 3 and j < n and text[j] == c:  # up to two quotes before """
                j += 1
            line += text.count("\n", i, j)
            i = j
        else:
            depth += c in "[{"
            depth -= c in "]}"
            i += 1
    return i, line


# --- reading ---------------------------------------------------------------------------------

_VAR = re.compile(r"\$(\$?)\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _where(section: str, index: int | None = None) -> str:
    if not section:
        return "at top level"
    return f"in [[{section}]] #{index + 1}" if index is not None else f"in [{section}]"


def _dotted(path: _Path) -> str:
    out = ""
    for part in path:
        out += f"[{part + 1}]" if isinstance(part, int) else f".{part}" if out else part
    return out


class _Reader:
    def __init__(self, file: str, text: str, environ: Mapping[str, str]) -> None:
        self.file = file
        self.positions = locate_keys(text)
        self.environ = environ

    def error(self, message: str, path: _Path) -> ConfigError:
        line = None
        for end in range(len(path), 0, -1):
            if path[:end] in self.positions:
                line = self.positions[path[:end]][0]
                break
        return ConfigError(message, file=self.file, line=line, key=_dotted(path) or None)

    def line(self, path: _Path) -> int | None:
        return self.positions.get(path, (None, None))[0]

    def expand(self, value: Any, path: _Path) -> Any:
        if isinstance(value, list):
            return [self.expand(v, path) for v in value]
        if not isinstance(value, str):
            return value

        def substitute(m: re.Match[str]) -> str:
            escaped, name, fallback = m.groups()
            if escaped:
                return m.group()[1:]
            if name in self.environ:
                return self.environ[name]
            if fallback is not None:
                return fallback
            raise self.error(f"environment variable {name} is not set", path)

        return _VAR.sub(substitute, value)

    def table(
        self, data: object, section: str, path: _Path, index: int | None = None
    ) -> dict[str, Any]:
        """Read one table against ``SCHEMA[section]``; absent optional keys are ``None``
        when their default is None, else their default (read)."""
        where = _where(section, index)
        if not isinstance(data, dict):
            header = f"[[{section}]]" if section in _ARRAYS else f"[{section}]"
            raise self.error(f"expected a table ({header}), got {_type_name(data)}", path)
        keys = {k.name: k for k in SCHEMA[section]}
        if section == "":
            keys |= {name: Key(name, _text, None, "") for name in (*_TABLES, *_ARRAYS)}
        for name in data:
            if name not in keys:
                close = difflib.get_close_matches(name, keys, n=1, cutoff=0.6)
                hint = f' (did you mean "{close[0]}"?)' if close else ""
                raise self.error(f'unknown key "{name}" {where}{hint}', (*path, name))
        out: dict[str, Any] = {}
        for key in SCHEMA[section]:
            here = (*path, key.name)
            if key.name not in data:
                if key.default is _REQUIRED:
                    raise self.error(f'missing required key "{key.name}" {where}', here)
                out[key.name] = key.value
                continue
            try:
                out[key.name] = key.read(self.expand(data[key.name], here))
            except ValueError as exc:
                raise self.error(str(exc), here) from None
        return out

    def array(self, data: dict[str, Any], section: str) -> list[dict[str, Any]]:
        value = data.get(section, [])
        if not isinstance(value, list):
            message = f"expected [[{section}]] (an array of tables), got {_type_name(value)}"
            raise self.error(message, (section,))
        return [self.table(item, section, (section, i), i) for i, item in enumerate(value)]

    def source(self, raw: dict[str, Any], index: int, defaults: dict[str, Any]) -> Source:
        path: _Path = ("sources", index)
        selectors = {k: raw[k] for k in SELECTOR_KEYS if raw[k] is not None}
        if raw["kind"] == "feed" and selectors:
            name = next(iter(selectors))
            message = f'"{name}" is only for kind = "html" sources; this one is a feed'
            raise self.error(message, (*path, name))
        html = None
        if raw["kind"] == "html":
            for name in ("item", "title"):
                if name not in selectors:
                    message = f'missing required key "{name}" {_where("sources", index)}'
                    raise self.error(message + ' (kind = "html")', (*path, name))
            html = HtmlSelectors(**selectors)
        timing = {
            k.name: defaults[k.name] if raw[k.name] is None else raw[k.name]
            for k in _SOURCE_DEFAULT_KEYS
        }
        return Source(
            name=raw["name"],
            url=raw["url"],
            kind=raw["kind"],
            tags=raw["tags"],
            enabled=raw["enabled"],
            selectors=html,
            **timing,
        )

    def unique(self, names: list[str], section: str) -> None:
        seen: dict[str, int] = {}
        for i, name in enumerate(names):
            first = seen.setdefault(name.casefold(), i)
            if first != i:
                line = self.line((section, first, "name")) or self.line((section, first))
                message = f'duplicate {section[:-1]} name "{name}" (also {_where(section, first)}'
                raise self.error(
                    message + (f", line {line})" if line else ")"), (section, i, "name")
                )


def toml_syntax_error(exc: tomllib.TOMLDecodeError, file: str) -> ConfigError:
    """A tomllib error as a ConfigError with its line (and the column in the message)."""
    message = str(exc)
    m = re.search(r"\s*\(at line (\d+), column (\d+)\)$", message)
    if not m:
        m2 = re.search(r"\s*\(at end of document\)$", message)
        return ConfigError(
            f"TOML syntax error: {message[: m2.start()] if m2 else message}", file=file
        )
    line, col = int(m.group(1)), int(m.group(2))
    text = f"TOML syntax error at line {line}, column {col}: {message[: m.start()]}"
    return ConfigError(text, file=file, line=line)


def parse_toml(text: str, file: str) -> dict[str, Any]:
    """A TOML document as data; a syntax error is a ConfigError with its line and column."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise toml_syntax_error(exc, file) from None


def load_settings(path: str | Path, environ: Mapping[str, str]) -> Settings:
    """Read and validate a configuration file. Raises ConfigError (file, line, key)."""
    file = str(path)
    absolute = Path(path).expanduser().resolve()
    try:
        raw = absolute.read_bytes()
    except OSError as exc:
        raise ConfigError(
            f"cannot read the configuration file: {exc.strerror}", file=file
        ) from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ConfigError("the file is not valid UTF-8", file=file, line=line) from None
    data = parse_toml(text, file)

    reader = _Reader(file, text, environ)
    top = reader.table(data, "", ())
    tables = {name: reader.table(data.get(name, {}), name, (name,)) for name in _TABLES}

    sources = [
        reader.source(raw_source, i, tables["defaults"])
        for i, raw_source in enumerate(reader.array(data, "sources"))
    ]
    for i, source in enumerate(sources):  # a URL with ${VAR}s is shown as written
        written = data["sources"][i].get("url") if isinstance(data, dict) else None
        if isinstance(written, str) and written != source.url:
            sources[i] = dataclasses.replace(source, display_url=written)
    reader.unique([s.name for s in sources], "sources")

    targets = []
    for i, raw_target in enumerate(reader.array(data, "targets")):
        scheme = raw_target["url"].split("://", 1)[0].lower()
        name = raw_target["name"] or f"{scheme}-{i + 1}"
        targets.append(Target(name=name, url=raw_target["url"], tags=raw_target["tags"]))
    reader.unique([t.name for t in targets], "targets")

    base = absolute.parent
    return Settings(
        path=absolute,
        database=base / top["database"],
        rules=base / top["rules"],
        user_agent=top["user_agent"],
        timezone=top["timezone"],
        concurrency=top["concurrency"],
        per_host=top["per_host"],
        sources=tuple(sources),
        alerts=AlertSettings(**tables["alerts"]),
        targets=tuple(targets),
        health=HealthSettings(**tables["health"]),
        parse_timeout=top["parse_timeout"],
        retention=top["retention"],
    )
