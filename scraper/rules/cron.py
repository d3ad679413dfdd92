"""Digest schedules: five-field cron strings with standard numbering.

    minute hour day-of-month month day-of-week        "0 8 * * 1-5"

Each field is ``*``, a number, a range ``a-b``, a step ``*/n`` or ``a-b/n`` (``a/n`` runs from
``a`` to the end), or a comma list of those. Months and weekdays may be named (``jan``,
``mon-fri``). Weekdays are 0-7 with 0 and 7 both Sunday, as in cron (APScheduler's own
``day_of_week`` counts from Monday: do not hand it these numbers). As in cron, when both the day
of the month and the weekday are restricted, a day matching either one fires.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta

_MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
_DAYS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]
_FIELDS = (  # name, low, high, names (numbered from low)
    ("minute", 0, 59, None),
    ("hour", 0, 23, None),
    ("day of month", 1, 31, None),
    ("month", 1, 12, _MONTHS),
    ("day of week", 0, 7, _DAYS),
)
_DAYS_IN_MONTH = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


class CronError(ValueError):
    """A cron string is wrong; ``offset`` is the 0-based position of the problem in it."""

    def __init__(self, message: str, offset: int) -> None:
        super().__init__(message)
        self.message = message
        self.offset = offset


@dataclass(frozen=True, slots=True)
class Cron:
    text: str
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday ... 6 = Saturday
    any_day: bool  # the day-of-month field starts with "*"
    any_weekday: bool

    def day_matches(self, when: datetime) -> bool:
        if when.month not in self.months:
            return False
        day = when.day in self.days
        weekday = (when.isoweekday() % 7) in self.weekdays
        if self.any_day or self.any_weekday:
            return day and weekday
        return day or weekday

    def matches(self, when: datetime) -> bool:
        return when.minute in self.minutes and when.hour in self.hours and self.day_matches(when)

    def next_after(self, when: datetime) -> datetime:
        """The first time after ``when`` that fires, on ``when``'s wall clock (and tzinfo)."""
        start = when.replace(second=0, microsecond=0) + timedelta(minutes=1)
        hours, minutes = sorted(self.hours), sorted(self.minutes)
        day = start.replace(hour=0, minute=0)
        for _ in range(366 * 8):  # a 29 February on a given weekday can be years away
            if self.day_matches(day):
                for h in hours:
                    for m in minutes:
                        candidate = day.replace(hour=h, minute=m)
                        if candidate >= start:
                            return candidate
            day = (day + timedelta(days=1)).replace(hour=0, minute=0)
        raise ValueError(f"cron {self.text!r} never fires")  # pragma: no cover - parse checks


def parse_cron(text: str) -> Cron:
    """Parse a five-field cron string; raises :class:`CronError` saying where and what."""
    fields = [(m.group(), m.start()) for m in re.finditer(r"\S+", text)]
    if len(fields) != 5:
        at = fields[5][1] if len(fields) > 5 else len(text)
        raise CronError(
            f"expected 5 fields (minute hour day-of-month month day-of-week), "
            f'found {len(fields)}, as in "0 8 * * *"',
            at if len(fields) > 5 else 0,
        )
    values = [_field(field, at, *spec) for (field, at), spec in zip(fields, _FIELDS, strict=True)]
    weekdays = frozenset(d % 7 for d in values[4])
    any_day, any_weekday = fields[2][0].startswith("*"), fields[4][0].startswith("*")
    possible = any(d <= _DAYS_IN_MONTH[m - 1] for m in values[3] for d in values[2])
    if any_weekday and not possible:
        raise CronError("that day never comes in those months", fields[2][1])
    return Cron(text, values[0], values[1], values[2], values[3], weekdays, any_day, any_weekday)


def _field(
    text: str, at: int, name: str, low: int, high: int, names: list[str] | None
) -> frozenset[int]:
    out: set[int] = set()
    offset = at
    for part in text.split(","):
        if not part:
            raise CronError(f"empty item in the {name} field", offset)
        body, _, step_text = part.partition("/")
        step = 1
        if step_text or part.endswith("/"):
            if not step_text.isascii() or not step_text.isdigit() or int(step_text) == 0:
                raise CronError(
                    f"expected a step of 1 or more after '/' in the {name} field",
                    offset + len(body) + 1,
                )
            step = int(step_text)
        if body == "*":
            first, last = low, high
        else:
            left, dash, right = body.partition("-")
            first = _value(left, offset, name, low, high, names)
            if dash:
                last = _value(right, offset + len(left) + 1, name, low, high, names)
                if last < first:
                    raise CronError(f"range {body} in the {name} field runs backwards", offset)
            else:
                last = high if step_text else first
        out.update(range(first, last + 1, step))
        offset += len(part) + 1
    return frozenset(out)


def _value(text: str, offset: int, name: str, low: int, high: int, names: list[str] | None) -> int:
    if names and text.lower() in names:
        return names.index(text.lower()) + (1 if name == "month" else 0)
    if not text.isascii() or not text.isdigit():
        named = f" or a name ({names[0]}…)" if names else ""
        raise CronError(f"expected a number {low}-{high}{named} in the {name} field", offset)
    value = int(text)
    if not low <= value <= high:
        raise CronError(f"{value} is out of range for the {name} field ({low}-{high})", offset)
    return value
