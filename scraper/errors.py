"""The exception tree.

    ScraperError                 anything we raise on purpose; the CLI turns it into a message
    ├── ConfigError              scraper.toml is wrong (file, line, key)        -> exit 2
    ├── RuleError                a rule file or query is wrong (file, line, col) -> exit 1/2
    ├── FetchError               a fetch failed; .kind is the fetches.status class
    ├── ParseError               a document could not be parsed at all
    └── StoreError               the database cannot be used

Library code raises these; only cli.py prints and exits.
"""

from __future__ import annotations

from pathlib import Path


class ScraperError(Exception):
    """Base class of every error the scraper raises on purpose."""


class ConfigError(ScraperError):
    """A configuration error, located as precisely as we can: file, line and key."""

    def __init__(
        self,
        message: str,
        *,
        file: str | Path | None = None,
        line: int | None = None,
        key: str | None = None,
    ) -> None:
        self.message = message
        self.file = str(file) if file is not None else None
        self.line = line
        self.key = key
        super().__init__(str(self))

    def __str__(self) -> str:
        where = ""
        if self.file:
            where = self.file
            if self.line:
                where += f":{self.line}"
            where += ": "
        key = f"{self.key}: " if self.key else ""
        return f"{where}{key}{self.message}"


class RuleError(ScraperError):
    """A rule file or a query is wrong; printed as ``file:line:col: message``."""

    def __init__(
        self,
        message: str,
        *,
        file: str | Path | None = None,
        line: int | None = None,
        col: int | None = None,
    ) -> None:
        self.message = message
        self.file = str(file) if file is not None else None
        self.line = line
        self.col = col
        super().__init__(str(self))

    def __str__(self) -> str:
        parts = [p for p in (self.file, self.line, self.col) if p is not None]
        where = ":".join(str(p) for p in parts)
        return f"{where}: {self.message}" if where else self.message


class FetchError(ScraperError):
    """A fetch failed. ``kind`` is the error class stored in ``fetches.status``:
    timeout, too_large, dns, tls, connect, redirect, http, protocol."""

    def __init__(self, kind: str, message: str) -> None:
        self.kind = kind
        self.message = message
        super().__init__(f"{kind}: {message}")


class ParseError(ScraperError):
    """A document could not be parsed into any item."""


class StoreError(ScraperError):
    """The database cannot be opened or written."""
