"""Back-testing: which archived items would a rule (or an inline query) have matched?

Read-only: it runs SELECTs on the connection it is given and streams the rows, newest first.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import NamedTuple, cast

from scraper.models import Rule
from scraper.rules.loader import RuleSet
from scraper.rules.matcher import Matcher
from scraper.rules.query import parse_query

_SQL = """
SELECT i.id, i.source_id, s.name, s.tags, i.title, i.summary, i.content, i.author, i.url,
       COALESCE(i.published_at, i.fetched_at) AS at
FROM items AS i JOIN sources AS s ON s.id = i.source_id
{where}
ORDER BY at DESC, i.id DESC
"""


class BacktestItem(NamedTuple):
    item_id: int
    source: str
    title: str
    url: str | None
    published_at: str | None  # as stored ("2024-11-01T05:30:00Z"); the fetch time if no date
    fields: tuple[str, ...]
    terms: tuple[str, ...]


@dataclass(frozen=True)
class BacktestResult:
    rule_id: str | None  # None for an inline query
    query: str
    total: int  # every matching item since ``since``
    items: list[BacktestItem] = field(default_factory=list)  # the newest ``limit`` of them


def _iso(when: datetime) -> str:
    if when.tzinfo is not None:
        when = when.astimezone(UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def _tags(raw: str | None) -> tuple[str, ...]:
    if not raw:
        return ()
    try:
        value = json.loads(raw)
    except ValueError:
        return ()
    return tuple(str(t) for t in value) if isinstance(value, list) else ()


def resolve(query_or_rule: str, rules: RuleSet, *, force_query: bool = False) -> Rule:
    """The rule to back-test: an existing rule id wins unless ``force_query``; else the text
    is an inline query. Raises :class:`RuleError` for a query that does not parse, or for a
    rule id whose file failed to load."""
    if not force_query:
        rule = rules.get(query_or_rule)
        if rule is not None:
            return rule
        for err in rules.errors:
            if err.file and Path(err.file).stem == query_or_rule:
                raise err
    parse_query(query_or_rule, aliases=rules.aliases)
    return Rule(id="", name="query", query=query_or_rule)


def backtest(
    conn: sqlite3.Connection,
    query_or_rule: str,
    *,
    rules: RuleSet,
    force_query: bool = False,
    since: datetime | None = None,
    limit: int = 20,
) -> BacktestResult:
    """Match a rule (an existing id wins; ``force_query`` forces an inline query) against the
    archive, newest first: the count of matching items since ``since`` and the first ``limit``.
    Changes nothing and sends nothing."""
    rule = resolve(query_or_rule, rules, force_query=force_query)
    inline = not rule.id
    # back-test even a disabled rule: the user asked for it by name
    target = Rule(id=rule.id or "query", name=rule.name, query=rule.query, sources=rule.sources)
    matcher = Matcher.compile([target], rules.aliases)
    if matcher.errors:
        raise matcher.errors[0]
    where, params = "", cast(tuple[str, ...], ())
    if since is not None:
        where, params = "WHERE COALESCE(i.published_at, i.fetched_at) >= ?", (_iso(since),)
    total = 0
    found: list[BacktestItem] = []
    tags_cache: dict[int, tuple[str, ...]] = {}
    cursor = conn.execute(_SQL.format(where=where), params)
    try:
        while rows := cursor.fetchmany(500):
            for (
                item_id,
                source_id,
                source,
                tags_raw,
                title,
                summary,
                content,
                author,
                url,
                at,
            ) in rows:
                tags = tags_cache.get(source_id)
                if tags is None:
                    tags = tags_cache[source_id] = _tags(tags_raw)
                fields = {
                    "title": title or "",
                    "summary": summary or "",
                    "content": content or "",
                    "author": author or "",
                }
                matches = matcher.match(fields, source=source or "", source_tags=tags)
                if not matches:
                    continue
                total += 1
                if len(found) < limit:
                    m = matches[0]
                    found.append(
                        BacktestItem(
                            item_id,
                            source or "",
                            title or "",
                            url,
                            at,
                            m.fields,
                            m.terms,
                        )
                    )
    finally:
        cursor.close()
    return BacktestResult(None if inline else rule.id, rule.query, total, found)
