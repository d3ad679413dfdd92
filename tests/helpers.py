"""Small helpers shared by the end-to-end tests: write a scraper.toml, make feeds, read the db."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(value)


def write_config(
    folder: Path,
    sources: Sequence[Mapping[str, Any]],
    *,
    rules: Mapping[str, str] | None = None,
    aliases: str | None = None,
    top: Mapping[str, Any] | None = None,
    tables: Mapping[str, Mapping[str, Any]] | None = None,
    targets: Sequence[Mapping[str, Any]] = (),
) -> Path:
    """Write folder/scraper.toml (and folder/rules/*.yaml) and return the config path."""
    rules_dir = folder / "rules"
    rules_dir.mkdir(parents=True, exist_ok=True)
    for name, text in (rules or {}).items():
        (rules_dir / f"{name}.yaml").write_text(text, encoding="utf-8")
    if aliases is not None:
        (rules_dir / "_aliases.yaml").write_text(aliases, encoding="utf-8")
    lines = [
        'database = "state/news.db"',
        'rules = "rules"',
        'user_agent = "scraper-tests/0.1 (+https://example.invalid/)"',
        'timezone = "Asia/Tokyo"',
    ]
    for key, value in (top or {}).items():
        lines.append(f"{key} = {toml_value(value)}")
    lines += ["", "[defaults]", 'timeout = "5s"', 'interval = "15m"']
    for name, table in (tables or {}).items():
        lines += ["", f"[{name}]"]
        lines += [f"{k} = {toml_value(v)}" for k, v in table.items()]
    for source in sources:
        lines += ["", "[[sources]]"]
        lines += [f"{k} = {toml_value(v)}" for k, v in source.items()]
    for target in targets:
        lines += ["", "[[targets]]"]
        lines += [f"{k} = {toml_value(v)}" for k, v in target.items()]
    path = folder / "scraper.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def rss(
    items: Iterable[Mapping[str, Any]],
    *,
    title: str = "Test feed",
    now: datetime | None = None,
) -> bytes:
    """An RSS 2.0 document; each item mapping may have title, link, guid, description, date."""
    now = now or datetime(2024, 11, 1, 5, 30, tzinfo=UTC)
    parts = [
        '<?xml version="1.0" encoding="utf-8"?>\n<rss version="2.0"><channel>',
        f"<title>{title}</title><link>https://example.com/</link>",
    ]
    for i, item in enumerate(items):
        parts.append("<item>")
        if "title" in item:
            parts.append(f"<title>{item['title']}</title>")
        if "link" in item:
            parts.append(f"<link>{item['link']}</link>")
        if "guid" in item:
            parts.append(f'<guid isPermaLink="false">{item["guid"]}</guid>')
        if "description" in item:
            parts.append(f"<description><![CDATA[{item['description']}]]></description>")
        when = item.get("date", now - timedelta(minutes=10 * i))
        parts.append(f"<pubDate>{format_datetime(when)}</pubDate>")
        parts.append("</item>")
    parts.append("</channel></rss>")
    return "".join(parts).encode()


def rows(db: Path, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()
