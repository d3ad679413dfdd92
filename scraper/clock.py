"""Time helpers: every time we store is ISO 8601 in UTC with a Z (``2024-11-01T05:30:00Z``).

Functions that depend on the clock take ``now`` (or a ``clock`` callable); this module only
formats and parses, so tests can pass any time they like.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import overload

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    """The real clock: an aware UTC datetime, to the second."""
    return datetime.now(UTC).replace(microsecond=0)


@overload
def iso(dt: datetime) -> str: ...
@overload
def iso(dt: None) -> None: ...
def iso(dt: datetime | None) -> str | None:
    """Format an aware datetime as ``YYYY-MM-DDTHH:MM:SSZ`` (naive ones are taken as UTC)."""
    if dt is None:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    elif dt.utcoffset():
        dt = dt.astimezone(UTC)
    # isoformat is several times faster than strftime, and this runs for every stored item
    return dt.replace(tzinfo=None, microsecond=0).isoformat() + "Z"


def parse_iso(text: str | None) -> datetime | None:
    """Parse what :func:`iso` wrote (and any ISO 8601 with an offset) back to aware UTC."""
    if not text:
        return None
    dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC)
