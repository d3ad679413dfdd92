"""Digest cron strings: five fields, standard numbering (0 or 7 = Sunday)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from scraper.rules.cron import CronError, parse_cron


def test_fields() -> None:
    c = parse_cron("0 8 * * *")
    assert c.minutes == {0} and c.hours == {8} and c.days == set(range(1, 32))
    c = parse_cron("*/15 9-17/4 1,15 jan-MAR 1-5")
    assert c.minutes == {0, 15, 30, 45} and c.hours == {9, 13, 17}
    assert c.days == {1, 15} and c.months == {1, 2, 3} and c.weekdays == {1, 2, 3, 4, 5}
    assert parse_cron("0 0 * * 7").weekdays == {0} == parse_cron("0 0 * * sun").weekdays
    assert parse_cron("5/20 * * * *").minutes == {5, 25, 45}


@pytest.mark.parametrize(
    ("text", "offset", "message"),
    [
        ("0 8 * *", 0, "expected 5 fields"),
        ("0 8 * * * *", 10, "expected 5 fields"),
        ("60 * * * *", 0, "out of range"),
        ("0 24 * * *", 2, "out of range"),
        ("0 0 0 * *", 4, "out of range"),
        ("0 0 * 13 *", 6, "out of range"),
        ("0 0 * * 8", 8, "out of range"),
        ("*/0 * * * *", 2, "step"),
        ("5-1 * * * *", 0, "backwards"),
        ("a * * * *", 0, "expected a number"),
        ("1,,2 * * * *", 2, "empty item"),
        ("0 0 30 2 *", 4, "never comes"),
    ],
)
def test_errors(text: str, offset: int, message: str) -> None:
    with pytest.raises(CronError) as info:
        parse_cron(text)
    assert info.value.offset == offset and message in info.value.message


def test_next_after() -> None:
    daily = parse_cron("0 8 * * *")
    assert daily.next_after(datetime(2024, 11, 1, 7, 59, 30, tzinfo=UTC)) == datetime(
        2024, 11, 1, 8, 0, tzinfo=UTC
    )
    assert daily.next_after(datetime(2024, 11, 1, 8, 0, tzinfo=UTC)) == datetime(
        2024, 11, 2, 8, 0, tzinfo=UTC
    )
    sunday = parse_cron("30 6 * * 0")  # 3 Nov 2024 was a Sunday
    assert sunday.next_after(datetime(2024, 11, 1)) == datetime(2024, 11, 3, 6, 30)
    either = parse_cron("0 0 13 * 5")  # the 13th or a Friday, as in cron
    assert either.next_after(datetime(2024, 11, 1)) == datetime(2024, 11, 8)
    assert either.matches(datetime(2024, 11, 13)) and not either.matches(datetime(2024, 11, 14))
    leap = parse_cron("0 0 29 2 *")
    assert leap.next_after(datetime(2025, 1, 1)) == datetime(2028, 2, 29)
