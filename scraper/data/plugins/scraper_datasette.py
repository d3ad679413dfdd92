# mypy: disable-error-code="untyped-decorator"
"""The Datasette plugin that `scraper serve` loads (``--plugins-dir``).

- Every connection to the archive is made read-only (``PRAGMA query_only``), on top of
  Datasette's own ``mode=ro``, so no plugin or canned query can write through the server.
- SQL functions for ``items_search`` (see scraper/search.py): ``search_query(q)``,
  ``search_escape(q)``, ``search_highlight(text, q)`` and ``search_snippet(q, text, …)``.
- ``escape_fts`` (what Datasette's search box runs the query through) is replaced by a
  CJK-aware one, so the box on the items table finds 北朝鮮 inside a Japanese sentence and 북한
  inside 북한이; for words without such characters it gives what Datasette's does.
- ``?_searchmode=raw`` searches of the items table have their CJK words rewritten the same way.
- Cells of columns named ``snippet``, ``*_snippet`` or ``*_highlight`` are escaped and their
  ``**hit**`` markers rendered as ``<mark>hit</mark>``.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qsl, urlencode

from datasette import hookimpl
from markupsafe import Markup, escape

from scraper import search

INTERNAL = ("_internal", "_memory")
_TABLE_PATH = re.compile(r"^/[^/]+/items(?:\.\w+)?/?$")
_MARKED = re.compile(r"\*\*(.+?)\*\*", re.DOTALL)

Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[..., Awaitable[Any]], Callable[..., Awaitable[Any]]], Any]


@hookimpl(trylast=True)  # after Datasette's own, so our escape_fts replaces its
def prepare_connection(conn: sqlite3.Connection, database: str) -> None:
    search.register_functions(conn)
    conn.create_function("escape_fts", 1, search.escape_query, deterministic=True)
    if database not in INTERNAL:
        conn.execute("PRAGMA query_only = 1")


@hookimpl
def render_cell(value: object, column: str) -> Markup | None:
    if not isinstance(value, str) or search.MARK not in value:
        return None
    if not (column in ("snippet", "highlight") or column.endswith(("_snippet", "_highlight"))):
        return None
    return Markup(_MARKED.sub(r"<mark>\1</mark>", str(escape(value))))


def _rewrite_raw_search(scope: Scope) -> Scope:
    """A raw-mode search of the items table, with its CJK words rewritten for items_search."""
    if scope.get("type") != "http" or not _TABLE_PATH.match(scope.get("path", "")):
        return scope
    query = scope.get("query_string", b"").decode("latin-1")
    if "_search" not in query or "_searchmode=raw" not in query:
        return scope
    pairs = parse_qsl(query, keep_blank_values=True)
    rewritten = [
        (k, search.rewrite_query(v) if k.startswith("_search") and k != "_searchmode" else v)
        for k, v in pairs
    ]
    return dict(scope, query_string=urlencode(rewritten).encode("latin-1"))


@hookimpl
def asgi_wrapper() -> Callable[[ASGIApp], ASGIApp]:
    def wrap(app: ASGIApp) -> ASGIApp:
        async def rewritten(scope: Scope, receive: Any, send: Any) -> Any:
            return await app(_rewrite_raw_search(scope), receive, send)

        return rewritten

    return wrap
