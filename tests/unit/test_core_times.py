"""Instants typed by people (ages, unix seconds, RFC 3339) and printed for them (RFC 3339)."""

from __future__ import annotations

from datetime import datetime

import pytest

from tq.core.times import format_instant, parse_instant

NOW = 1_700_000_000.0  # 2023-11-14T22:13:20Z


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30s", NOW - 30),
        ("10m", NOW - 600),
        ("2h", NOW - 7200),
        ("3d", NOW - 3 * 86_400),
        ("1w", NOW - 604_800),
        ("1.5d", NOW - 1.5 * 86_400),
        (" 10m ", NOW - 600),
        ("1700000000", 1_700_000_000.0),
        ("1700000000.25", 1_700_000_000.25),
        ("2023-11-14T22:13:20Z", NOW),
        ("2023-11-14T22:13:20.500Z", NOW + 0.5),
        ("2023-11-14T23:13:20+01:00", NOW),
        ("2023-11-14 22:13:20Z", NOW),
        ("2023-11-14T22:13:20", NOW),  # no offset: UTC, as every printed time is
        ("2023-11-14", NOW - (22 * 3600 + 13 * 60 + 20)),
    ],
)
def test_ages_unix_seconds_and_rfc3339_times_are_read(text: str, expected: float) -> None:
    assert parse_instant(text, NOW) == pytest.approx(expected)


@pytest.mark.parametrize("text", ["yesterday", "10 minutes", "10M", "nan", "inf", "", "2023-13-01"])
def test_anything_else_is_refused_naming_the_accepted_forms(text: str) -> None:
    with pytest.raises(ValueError, match="is not a time: use an RFC 3339 time") as info:
        parse_instant(text, NOW)
    assert "10m" in str(info.value)


def test_printed_times_are_rfc3339_utc_with_the_date() -> None:
    assert format_instant(NOW) == "2023-11-14T22:13:20.000Z"
    assert format_instant(NOW + 0.25) == "2023-11-14T22:13:20.250Z"
    assert format_instant(NOW + 0.75, "seconds") == "2023-11-14T22:13:20Z"


def test_a_printed_time_reads_back_as_the_same_instant() -> None:
    for seconds in (0.0, NOW, NOW + 0.123, 253_402_300_799.0):
        text = format_instant(seconds)
        assert datetime.fromisoformat(text).timestamp() == pytest.approx(seconds, abs=1e-3)
        assert parse_instant(text, NOW) == pytest.approx(seconds, abs=1e-3)
