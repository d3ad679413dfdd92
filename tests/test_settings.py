"""scraper.toml: value syntax, every key's type, error locations, and the shipped file."""

from __future__ import annotations

import re
import textwrap
from datetime import time
from pathlib import Path

import pytest

from scraper.errors import ConfigError
from scraper.models import HtmlSelectors
from scraper.settings import (
    SCHEMA,
    AlertSettings,
    HealthSettings,
    Settings,
    Target,
    default_config_path,
    load_settings,
    locate_keys,
    parse_duration,
    parse_fraction,
    parse_quiet_hours,
    parse_rate,
    parse_size,
)

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "scraper.toml"
CNN_CAPTURE = ROOT.parent / "shared/corpus/pages/listing/cnn-international-homepage.html"


def write(tmp_path: Path, text: str, name: str = "scraper.toml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def load(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> Settings:
    return load_settings(write(tmp_path, text), environ or {})


def config_error(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text, environ)
    return info.value


# --- value syntax ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90s", 90),
        ("15m", 900),
        ("2h", 7200),
        ("1d", 86400),
        ("1w", 604800),
        ("90", 90),
        ("1.5h", 5400),
        ("1h30m", 5400),
        (" 15 m ", 900),
        ("15M", 900),
        ("500ms", 0.5),
        ("2 hours", 7200),
        ("0s", 0),
        (90, 90),
        (2.5, 2.5),
    ],
)
def test_parse_duration(text: str | float, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    "text", ["", "  ", "m", "15x", "15 minutes please", "1h 30", "-5s", "1.2.3s"]
)
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match=r'a duration like "90s", "15m"'):
        parse_duration(text)


@pytest.mark.parametrize("value", [True, -1, float("inf"), None, [1]])
def test_parse_duration_rejects_other_types(value: object) -> None:
    with pytest.raises(ValueError, match="expected a duration"):
        parse_duration(value)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("500B", 500),
        ("1KB", 1000),
        ("10MB", 10_000_000),
        ("2GB", 2_000_000_000),
        ("1KiB", 1024),
        ("10MiB", 10 * 1024**2),
        ("1GiB", 1024**3),
        ("1.5MB", 1_500_000),
        ("10 mb", 10_000_000),
        ("4096", 4096),
        (4096, 4096),
    ],
)
def test_parse_size(text: str | int, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["10M", "MB", "10XB", "1.5", "", "ten MB"])
def test_parse_size_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="expected a"):
        parse_size(text)


@pytest.mark.parametrize("value", [True, -5, 1.5])
def test_parse_size_rejects_other_values(value: object) -> None:
    with pytest.raises(ValueError):
        parse_size(value)  # type: ignore[arg-type]


def test_parse_fraction() -> None:
    assert parse_fraction("10%") == pytest.approx(0.1)
    assert parse_fraction("0%") == 0
    assert parse_fraction(0.25) == 0.25
    for bad in ("10", "110%", 2, "x%"):
        with pytest.raises(ValueError, match="percentage"):
            parse_fraction(bad)


@pytest.mark.parametrize(
    ("text", "rate"),
    [
        ("30/h", (30, 3600.0)),
        ("5/m", (5, 60.0)),
        ("100/d", (100, 86400.0)),
        ("30/10m", (30, 600.0)),
        ("30 / 1h", (30, 3600.0)),
        ("off", None),
        (False, None),
    ],
)
def test_parse_rate(text: str | bool, rate: tuple[int, float] | None) -> None:
    assert parse_rate(text) == rate


@pytest.mark.parametrize("text", ["30", "0/h", "x/h", "30/", "30/x", "30 per hour", True])
def test_parse_rate_rejects(text: str | bool) -> None:
    with pytest.raises(ValueError, match="rate like"):
        parse_rate(text)


def test_parse_quiet_hours() -> None:
    assert parse_quiet_hours("23:00-07:00") == (time(23), time(7))
    assert parse_quiet_hours("9:30 – 17:45") == (time(9, 30), time(17, 45))
    assert parse_quiet_hours("off") is None
    for bad in ("23-07", "25:00-07:00", "23:00-23:00", "23:00", True):
        with pytest.raises(ValueError):
            parse_quiet_hours(bad)


def test_default_config_path() -> None:
    assert default_config_path({}) == Path("scraper.toml")
    assert default_config_path({"SCRAPER_CONFIG": "/etc/scraper.toml"}) == Path("/etc/scraper.toml")
    assert default_config_path({"SCRAPER_CONFIG": ""}) == Path("scraper.toml")


# --- a full configuration --------------------------------------------------------------------

SPEC_EXAMPLE = """\
database = "state/news.db"
rules = "rules"
user_agent = "test-agent/1.0 (+https://example.org)"
timezone = "Asia/Tokyo"
concurrency = 8
per_host = 3
parse_timeout = "5s"
retention = "180d"

[defaults]
interval = "15m"
timeout = "20s"
max_bytes = "5MiB"
jitter = "20%"

[[sources]]
name = "Japan Today"
url = "https://japantoday.com/feed"
tags = ["japan", "wire"]
interval = "10m"
kind = "feed"
enabled = true

[[sources]]
name = "EEAS press"
url = "https://www.eeas.europa.eu/eeas/press-material_en"
kind = "html"
item = "article.card"
title = "h3"
date = "time[datetime]"
summary = "p"
enabled = false
timeout = "1m"
max_bytes = 1000
jitter = 0

[alerts]
backlog = true
max_age = "3d"
rate_limit = "10/10m"
quiet_hours = "23:00-07:00"
story_window = "24h"

[[targets]]
name = "me-by-email"
url = "mailtos://${SMTP_USER}:${SMTP_PASS}@smtp.example.com?to=me@example.com"
tags = ["email", "admin"]
[[targets]]
url = "tgram://${TELEGRAM_BOT_TOKEN}/${TELEGRAM_CHAT_ID}"
tags = ["telegram"]

[health]
notify = ["admin"]
failures = 3
"""

ENV = {
    "SMTP_USER": "me",
    "SMTP_PASS": "s3cret",
    "TELEGRAM_BOT_TOKEN": "123:abc",
    "TELEGRAM_CHAT_ID": "42",
}


def test_full_example(tmp_path: Path) -> None:
    s = load(tmp_path, SPEC_EXAMPLE, ENV)
    assert s.path == tmp_path / "scraper.toml"
    assert s.database == tmp_path / "state/news.db"
    assert s.rules == tmp_path / "rules"
    assert s.user_agent == "test-agent/1.0 (+https://example.org)"
    assert (s.timezone, s.concurrency, s.per_host) == ("Asia/Tokyo", 8, 3)
    assert (s.parse_timeout, s.retention) == (5.0, 180 * 86400.0)

    jt, eeas = s.sources
    assert (jt.name, jt.url, jt.kind, jt.tags) == (
        "Japan Today",
        "https://japantoday.com/feed",
        "feed",
        ("japan", "wire"),
    )
    assert (jt.interval, jt.timeout, jt.max_bytes, jt.jitter) == (600, 20, 5 * 1024**2, 0.2)
    assert jt.enabled and jt.selectors is None
    assert eeas.kind == "html" and not eeas.enabled
    assert eeas.selectors == HtmlSelectors(
        item="article.card", title="h3", link="a[href]", date="time[datetime]", summary="p"
    )
    assert (eeas.interval, eeas.timeout, eeas.max_bytes, eeas.jitter) == (900, 60, 1000, 0)

    assert s.alerts == AlertSettings(
        backlog=True,
        max_age=3 * 86400,
        rate_limit=(10, 600.0),
        quiet_hours=(time(23), time(7)),
        story_window=86400,
    )
    email, telegram = s.targets
    assert email == Target(
        "me-by-email",
        "mailtos://me:s3cret@smtp.example.com?to=me@example.com",
        ("email", "admin"),
    )
    assert telegram.name == "tgram-2"
    assert telegram.url == "tgram://123:abc/42"
    assert s.health == HealthSettings(notify=("admin",), failures=3)


def test_target_repr_hides_the_secret(tmp_path: Path) -> None:
    s = load(tmp_path, SPEC_EXAMPLE, ENV)
    assert "s3cret" not in repr(s.targets) and "s3cret" not in repr(s)
    assert "123:abc" not in repr(s)


def test_empty_file_gives_the_declared_defaults(tmp_path: Path) -> None:
    s = load(tmp_path, "")
    assert s.database == tmp_path / "state/news.db"
    assert s.rules == tmp_path / "rules"
    assert s.user_agent.startswith("scraper/") and "http" in s.user_agent
    assert (s.timezone, s.concurrency, s.per_host) == ("UTC", 16, 2)
    assert (s.sources, s.targets) == ((), ())
    assert s.alerts == AlertSettings()
    assert s.alerts == AlertSettings(False, 2 * 86400.0, (30, 3600.0), None, 48 * 3600.0)
    assert s.health == HealthSettings((), 5)
    assert (s.parse_timeout, s.retention) == (10.0, None)


def test_source_defaults_match_the_model(tmp_path: Path) -> None:
    s = load(tmp_path, '[[sources]]\nname = "a"\nurl = "https://a.example/"\n')
    (source,) = s.sources
    assert (source.interval, source.timeout, source.max_bytes) == (900, 30, 10_000_000)
    assert source.jitter == pytest.approx(0.1)


def test_paths_are_relative_to_the_config_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "conf").mkdir()
    write(tmp_path / "conf", 'database = "../data/news.db"\nrules = "/srv/rules"\n')
    monkeypatch.chdir(tmp_path)
    s = load_settings("conf/scraper.toml", {})
    assert s.path == tmp_path / "conf/scraper.toml"
    assert s.database.resolve() == tmp_path / "data/news.db"
    assert s.rules == Path("/srv/rules")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read") as info:
        load_settings(tmp_path / "nope.toml", {})
    assert info.value.file == str(tmp_path / "nope.toml")


# --- environment variables ---------------------------------------------------------------------


def test_missing_variable_names_the_variable_key_and_line(tmp_path: Path) -> None:
    env = {k: v for k, v in ENV.items() if k != "TELEGRAM_CHAT_ID"}
    err = config_error(tmp_path, SPEC_EXAMPLE, env)
    assert "TELEGRAM_CHAT_ID" in err.message and "not set" in err.message
    assert err.key == "targets[2].url"
    assert (
        err.line
        == SPEC_EXAMPLE.splitlines().index(
            'url = "tgram://${TELEGRAM_BOT_TOKEN}/${TELEGRAM_CHAT_ID}"'
        )
        + 1
    )
    assert "123:abc" not in str(err)  # no secret in the message


def test_variables_anywhere_with_escape_and_fallback(tmp_path: Path) -> None:
    s = load(
        tmp_path,
        """\
        user_agent = "bot/${VERSION} ($${NOT_A_VAR})"
        database = "${STATE:-state}/news.db"
        [[sources]]
        name = "${SITE}"
        url = "https://${SITE}/feed?key=${KEY}"
        tags = ["${TAG}"]
        """,
        {"VERSION": "2", "SITE": "a.example", "KEY": "k", "TAG": "t"},
    )
    assert s.user_agent == "bot/2 (${NOT_A_VAR})"
    assert s.database == tmp_path / "state/news.db"
    assert s.sources[0].url == "https://a.example/feed?key=k"
    assert s.sources[0].tags == ("t",)


def test_environment_is_only_the_mapping_passed_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ONLY_IN_OS_ENVIRON", "x")
    err = config_error(tmp_path, 'user_agent = "${ONLY_IN_OS_ENVIRON}"\n')
    assert "ONLY_IN_OS_ENVIRON" in err.message


# --- unknown keys, wrong types and bad values: each with file, line and key ---------------------

BASE = """\
timezone = "UTC"
concurrency = 4

[defaults]
interval = "15m"

[[sources]]
name = "A"
url = "https://a.example/feed"

[[sources]]
name = "B"
url = "https://b.example/feed"
interval = "1h"

[alerts]
max_age = "2d"

[[targets]]
url = "json://localhost"

[health]
failures = 3
"""


def line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


def written(new: str, key: str) -> str:
    """The line of ``new`` that holds ``key`` (a key line or a table header)."""
    name = key.rsplit(".", 1)[-1]
    return next(line for line in new.splitlines() if re.match(rf"\[?{name}\]? ?=?", line))


def test_base_config_loads(tmp_path: Path) -> None:
    s = load(tmp_path, BASE)
    assert [src.name for src in s.sources] == ["A", "B"]
    assert s.targets[0].name == "json-1"


@pytest.mark.parametrize(
    ("old", "new", "key", "message"),
    [
        (
            "concurrency = 4",
            "concurency = 4",
            "concurency",
            'unknown key "concurency" at top level (did you mean "concurrency"?)',
        ),
        (
            "[alerts]",
            "[alert]",
            "alert",
            'unknown key "alert" at top level (did you mean "alerts"?)',
        ),
        (
            'interval = "15m"',
            'intreval = "15m"',
            "defaults.intreval",
            'unknown key "intreval" in [defaults] (did you mean "interval"?)',
        ),
        (
            'interval = "1h"',
            'intervall = "1h"',
            "sources[2].intervall",
            'unknown key "intervall" in [[sources]] #2 (did you mean "interval"?)',
        ),
        (
            'url = "https://a.example/feed"',
            'url = "https://a.example/feed"\nselectors = "x"',
            "sources[1].selectors",
            'unknown key "selectors" in [[sources]] #1',
        ),
        (
            'max_age = "2d"',
            'maxage = "2d"',
            "alerts.maxage",
            'unknown key "maxage" in [alerts] (did you mean "max_age"?)',
        ),
        (
            'url = "json://localhost"',
            'url = "json://localhost"\ntag = ["x"]',
            "targets[1].tag",
            'unknown key "tag" in [[targets]] #1 (did you mean "tags"?)',
        ),
        (
            "failures = 3",
            "failure = 3",
            "health.failure",
            'unknown key "failure" in [health] (did you mean "failures"?)',
        ),
    ],
)
def test_unknown_keys(tmp_path: Path, old: str, new: str, key: str, message: str) -> None:
    text = BASE.replace(old, new)
    err = config_error(tmp_path, text)
    assert err.message == message
    assert err.key == key
    assert err.file == str(tmp_path / "scraper.toml")
    assert err.line == line_of(text, written(new, key))
    assert str(err).startswith(f"{tmp_path / 'scraper.toml'}:{err.line}: {key}: ")


@pytest.mark.parametrize(
    ("old", "new", "key", "fragment"),
    [
        ('timezone = "UTC"', "timezone = 9", "timezone", "expected a string, got an integer"),
        ('timezone = "UTC"', 'timezone = "Mars/Olympus"', "timezone", "unknown time zone"),
        ('timezone = "UTC"', 'database = 5\ntimezone = "UTC"', "database", "expected a string"),
        ('timezone = "UTC"', 'user_agent = " "', "user_agent", "must not be empty"),
        ('timezone = "UTC"', 'parse_timeout = "0s"', "parse_timeout", "longer than zero"),
        ('timezone = "UTC"', 'retention = "forever"', "retention", "expected a duration"),
        ("concurrency = 4", 'concurrency = "4"', "concurrency", "expected a whole number"),
        ("concurrency = 4", "concurrency = 0", "concurrency", "at least 1"),
        ("concurrency = 4", "per_host = 1.5", "per_host", "expected a whole number"),
        ('interval = "15m"', 'interval = "soon"', "defaults.interval", "expected a duration"),
        ('interval = "15m"', 'timeout = "30"', None, None),  # bare numbers are seconds
        ('interval = "15m"', 'max_bytes = "10M"', "defaults.max_bytes", "expected a size"),
        ('interval = "15m"', 'jitter = "10"', "defaults.jitter", "expected a percentage"),
        ('interval = "15m"', "jitter = 2", "defaults.jitter", "at most 100%"),
        ('interval = "1h"', "interval = true", "sources[2].interval", "got a boolean"),
        ('interval = "1h"', "max_bytes = -1", "sources[2].max_bytes", "expected a size"),
        ('interval = "1h"', 'tags = "japan"', "sources[2].tags", "expected an array of strings"),
        ('interval = "1h"', "tags = [1]", "sources[2].tags", "expected an array of strings"),
        ('interval = "1h"', 'enabled = "yes"', "sources[2].enabled", "expected true or false"),
        ('interval = "1h"', 'kind = "rss"', "sources[2].kind", 'expected "feed" or "html"'),
        (
            'url = "https://b.example/feed"',
            'url = "ftp://b.example/feed"',
            "sources[2].url",
            "expected an http:// or https:// URL",
        ),
        (
            'url = "https://b.example/feed"',
            'url = "b.example/feed"',
            "sources[2].url",
            "expected an http:// or https:// URL",
        ),
        ('name = "B"', 'name = ""', "sources[2].name", "must not be empty"),
        ('max_age = "2d"', "backlog = 1", "alerts.backlog", "expected true or false"),
        ('max_age = "2d"', 'max_age = "2 days ago"', "alerts.max_age", "expected a duration"),
        ('max_age = "2d"', 'rate_limit = "30 per hour"', "alerts.rate_limit", "rate like"),
        ('max_age = "2d"', 'quiet_hours = "23-07"', "alerts.quiet_hours", "hours like"),
        ('max_age = "2d"', 'story_window = "0h"', "alerts.story_window", "longer than zero"),
        (
            'url = "json://localhost"',
            'url = "localhost:8080"',
            "targets[1].url",
            "expected an Apprise URL",
        ),
        ('url = "json://localhost"', "url = 5", "targets[1].url", "expected a string"),
        ("failures = 3", 'notify = "admin"', "health.notify", "expected an array of strings"),
        ("failures = 3", "failures = 2.5", "health.failures", "expected a whole number"),
        ("failures = 3", "failures = 0", "health.failures", "at least 1"),
    ],
)
def test_bad_values(
    tmp_path: Path, old: str, new: str, key: str | None, fragment: str | None
) -> None:
    text = BASE.replace(old, new, 1)
    if key is None:
        load(tmp_path, text)
        return
    err = config_error(tmp_path, text)
    assert fragment is not None and fragment in err.message
    assert err.key == key
    assert err.line == line_of(text, written(new, key))


def test_wrong_table_shapes(tmp_path: Path) -> None:
    err = config_error(tmp_path, '[sources]\nname = "x"\n')
    assert err.key == "sources" and err.line == 1 and "[[sources]]" in err.message
    err = config_error(tmp_path, 'timezone = "UTC"\nalerts = "loud"\n')
    assert err.key == "alerts" and err.line == 2 and "expected a table" in err.message
    err = config_error(tmp_path, 'sources = ["https://a.example/"]\n')
    assert err.key == "sources[1]" and err.line == 1 and "expected a table" in err.message


def test_missing_required_keys_point_at_the_table(tmp_path: Path) -> None:
    err = config_error(
        tmp_path, '[[sources]]\nname = "a"\nurl = "https://a/"\n\n[[sources]]\nname = "b"\n'
    )
    assert err.key == "sources[2].url" and err.line == 5
    assert err.message == 'missing required key "url" in [[sources]] #2'
    err = config_error(tmp_path, '[[targets]]\nname = "x"\n')
    assert err.key == "targets[1].url" and err.line == 1


def test_inline_tables_point_at_their_key(tmp_path: Path) -> None:
    err = config_error(tmp_path, 'timezone = "UTC"\nalerts = { backlogg = true }\n')
    assert err.key == "alerts.backlogg" and err.line == 2
    assert 'did you mean "backlog"' in err.message


def test_toml_syntax_error_has_line_and_column(tmp_path: Path) -> None:
    err = config_error(tmp_path, 'timezone = "UTC"\n\n[defaults]\ninterval = 15m\n')
    assert err.line == 4
    assert "syntax error" in err.message and "line 4, column 14" in err.message
    err = config_error(tmp_path, 'timezone = "UTC"\ntimezone = "UTC"\n')
    assert err.line == 2 and "syntax error" in err.message


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "scraper.toml"
    path.write_bytes(b'timezone = "UTC"\nuser_agent = "caf\xe9"\n')
    with pytest.raises(ConfigError, match="UTF-8") as info:
        load_settings(path, {})
    assert info.value.line == 2


# --- sources and targets --------------------------------------------------------------------


def test_duplicate_source_names(tmp_path: Path) -> None:
    text = BASE.replace('name = "B"', 'name = "a"')
    err = config_error(tmp_path, text)
    assert err.key == "sources[2].name"
    assert err.line == line_of(text, 'name = "a"')
    assert err.message == 'duplicate source name "a" (also in [[sources]] #1, line 8)'


def test_duplicate_target_names_including_defaults(tmp_path: Path) -> None:
    text = BASE + '\n[[targets]]\nname = "json-1"\nurl = "json://elsewhere"\n'
    err = config_error(tmp_path, text)
    assert err.key == "targets[2].name" and "duplicate target name" in err.message
    assert err.line == line_of(text, 'name = "json-1"')


def test_html_sources_need_item_and_title(tmp_path: Path) -> None:
    head = '[[sources]]\nname = "p"\nurl = "https://p.example/"\nkind = "html"\n'
    err = config_error(tmp_path, head + 'title = "h3"\n')
    assert err.key == "sources[1].item" and err.line == 1 and 'kind = "html"' in err.message
    err = config_error(tmp_path, head + 'item = "li"\n')
    assert err.key == "sources[1].title"
    s = load(tmp_path, head + 'item = "li"\ntitle = "a"\n')
    assert s.sources[0].selectors == HtmlSelectors(item="li", title="a", link="a[href]")


def test_selectors_on_a_feed_are_an_error(tmp_path: Path) -> None:
    text = '[[sources]]\nname = "f"\nurl = "https://f.example/rss"\nitem = "li"\n'
    err = config_error(tmp_path, text)
    assert err.key == "sources[1].item" and err.line == 4
    assert 'only for kind = "html"' in err.message


def test_invalid_css_selector(tmp_path: Path) -> None:
    head = '[[sources]]\nname = "p"\nurl = "https://p.example/"\nkind = "html"\n'
    text = head + 'item = "li[["\ntitle = "a"\n'
    err = config_error(tmp_path, text)
    assert err.key == "sources[1].item" and err.line == 5 and "invalid CSS selector" in err.message


def test_quiet_hours_and_rate_limit_off(tmp_path: Path) -> None:
    s = load(tmp_path, '[alerts]\nrate_limit = "off"\nquiet_hours = "22:30-06:15"\n')
    assert s.alerts.rate_limit is None
    assert s.alerts.quiet_hours == (time(22, 30), time(6, 15))


# --- the key locator ---------------------------------------------------------------------------


def test_locate_keys_survives_multiline_values() -> None:
    text = textwrap.dedent(
        '''\
        a = """
        b = 1
        [not.a.table]
        """
        c = [
          "x", # comment with [brackets]
          "]",
        ]
        d.e = 'lit'''
        + "'"
        + """
        "quoted key" = 1
        [[t]]
        x = 1
        [t.sub]
        y = 2
        [[t]]
        x = 2
        [u]   # comment
        v = {w = 1}
        """
    )
    found = locate_keys(text)
    assert found[("a",)] == (1, 4)
    assert ("b",) not in found and ("not",) not in found
    assert found[("c",)] == (5, 8)
    assert found[("d", "e")][0] == 9
    assert found[("quoted key",)][0] == 10
    assert found[("t", 0)][0] == 11
    assert found[("t", 0, "sub", "y")][0] == 14
    assert found[("t", 1, "x")][0] == 16
    assert found[("u", "v")][0] == 18


# --- the shipped scraper.toml ------------------------------------------------------------------


def test_shipped_config_loads() -> None:
    s = load_settings(SHIPPED, {})
    enabled = [src for src in s.sources if src.enabled]
    assert len(enabled) >= 12
    assert s.timezone == "Asia/Tokyo"
    assert s.targets == ()  # alerts print to standard output
    assert re.search(r"scraper/\S+ \(.*https?://", s.user_agent)
    tags = {t for src in s.sources for t in src.tags}
    assert {"japan", "korea", "eu", "world", "wire"} <= tags
    japanese = [src for src in enabled if "ja" in src.tags]
    assert any("nhk.or.jp" in src.url for src in japanese)
    assert len([src for src in s.sources if src.kind == "html"]) == 1
    assert len({src.url.rstrip("/").lower() for src in s.sources}) == len(s.sources)


def test_shipped_config_shows_the_targets_as_comments() -> None:
    text = SHIPPED.read_text(encoding="utf-8")
    assert "# [[targets]]" in text
    assert '# url = "mailtos://${SMTP_USER}:${SMTP_PASS}@' in text
    assert '# url = "tgram://${TELEGRAM_BOT_TOKEN}/${TELEGRAM_CHAT_ID}"' in text


def test_shipped_config_documents_every_key() -> None:
    text = SHIPPED.read_text(encoding="utf-8")
    for section, keys in SCHEMA.items():
        if section:
            assert re.search(rf"^#? ?\[\[?{section}\]\]?", text, re.M), section
        for key in keys:
            assert re.search(rf"^#? ?{key.name} = |[\s#,]{key.name}[\s,]", text, re.M), key.name


def test_shipped_html_selectors_work_on_the_captured_page() -> None:
    bs4 = pytest.importorskip("bs4")
    if not CNN_CAPTURE.exists():
        pytest.skip("the shared corpus is not available")
    (html,) = [src for src in load_settings(SHIPPED, {}).sources if src.kind == "html"]
    assert html.selectors is not None and html.url == "https://edition.cnn.com/"
    soup = bs4.BeautifulSoup(CNN_CAPTURE.read_bytes(), "lxml")
    items = []
    for element in soup.select(html.selectors.item):
        title = element.select_one(html.selectors.title)
        link = element.select_one(html.selectors.link)
        if title and title.get_text(strip=True) and link and link.get("href"):
            items.append((title.get_text(" ", strip=True), link["href"]))
    assert len(items) >= 10
    assert (
        "Two jets shot down in east Ukraine",
        "/2014/07/23/world/europe/ukraine-crisis/index.html?hpt=hp_t2",
    ) in items
