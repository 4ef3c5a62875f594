"""tq.core.times: the one reading of times every interface shares (RFC 3339 with an offset,
unix seconds, ages before a given now) and the one way they are shown."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tq.core.times import (
    AGE_PATTERN,
    MAX_INSTANT,
    UNIX_PATTERN,
    format_rfc3339,
    parse_age,
    parse_instant,
    parse_rfc3339,
)

NOW = 1_700_000_000.0


@pytest.mark.parametrize(
    ("text", "unix"),
    [
        ("2023-11-14T22:13:20Z", NOW),
        ("2023-11-14T23:13:20+01:00", NOW),
        ("2023-11-14T17:43:20-04:30", NOW),
        ("2023-11-14t22:13:20.25z", NOW + 0.25),  # RFC 3339 allows lower case
        ("2016-12-31T23:59:60Z", 1_483_228_800.0),  # a leap second: the next second
        ("1700000000", NOW),
        ("1.7e9", NOW),
        ("0", 0.0),
    ],
)
def test_rfc_3339_and_unix_seconds_are_read(text: str, unix: float) -> None:
    assert parse_instant(text) == unix
    assert parse_instant(text, NOW) == unix


@pytest.mark.parametrize(
    ("text", "unix"),
    [
        ("1969-07-20T20:17:40Z", 0.0),
        ("0000-01-01T00:00:00+23:59", 0.0),
        ("9999-12-31T23:59:59-23:59", MAX_INSTANT),
    ],
)
def test_instants_outside_the_range_are_its_nearer_end(text: str, unix: float) -> None:
    assert parse_instant(text) == unix


@pytest.mark.parametrize(
    ("text", "ago"),
    [("30s", 30), ("10m", 600), ("2h", 7200), ("1.5h", 5400), ("1d", 86400), ("1w", 604800)],
)
def test_an_age_is_that_long_before_now(text: str, ago: float) -> None:
    assert parse_instant(text, NOW) == NOW - ago
    assert parse_age(text, NOW) == NOW - ago


def test_an_age_older_than_the_epoch_is_the_epoch() -> None:
    assert parse_instant("100000w", NOW) == 0.0
    assert parse_instant("9" * 400 + "w", NOW) == 0.0


@pytest.mark.parametrize(
    ("text", "now", "says"),
    [
        ("10m", None, "is an age"),
        ("2023-11-14T22:13:20", None, "no UTC offset: add Z"),
        ("2023-11-14 22:13", NOW, "no UTC offset"),
        ("2023-11-14", None, "e.g. 2023-11-14T00:00:00Z"),
        ("2023-02-29T00:00:00Z", None, "2023-02-29 is not a date"),
        ("2023-11-14T24:00:00Z", None, "24:00:00 is not a time of day"),
        ("2023-11-14T22:13:20+24:00", None, "+24:00 is not a UTC offset"),
        ("-5", None, "outside 0..253402300799"),
        ("1e400", None, "outside 0..253402300799"),
        ("yesterday", None, "2024-07-01T14:00:00+02:00) or unix seconds"),
        ("yesterday", NOW, "unix seconds or an age such as 30s, 10m"),
        (" 10m", NOW, "not a time"),
        ("10M", NOW, "not a time"),
        ("\u0661\u0660m", NOW, "not a time"),  # Arabic-Indic digits: only ASCII ones count
    ],
)  # fmt: skip
def test_anything_else_is_refused_naming_the_forms(text: str, now: float | None, says: str) -> None:
    with pytest.raises(ValueError, match=re.escape(says)):
        parse_instant(text, now)


def test_unix_seconds_as_text_can_be_refused_where_json_has_numbers() -> None:
    with pytest.raises(ValueError, match="give unix seconds as a number"):
        parse_instant("1700000000", unix=False)
    assert parse_instant("2023-11-14T22:13:20Z", unix=False) == NOW


def test_the_published_patterns_are_the_grammars_read() -> None:
    for text in ("10m", "1.5h", "0s", "12w"):
        assert re.fullmatch(AGE_PATTERN, text)
    for text in ("10", "1.5", "1e9", "1E+3", "2.5e-3"):
        assert re.fullmatch(UNIX_PATTERN, text)
        parse_instant(text)
    for text in ("m", "1.m", "1x", ".5h", "10 m"):
        assert not re.fullmatch(AGE_PATTERN, text)


def test_the_latest_instant_is_the_last_second_of_9999() -> None:
    assert datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC).timestamp() == MAX_INSTANT


def test_times_are_shown_in_utc_with_the_date_to_the_millisecond() -> None:
    assert format_rfc3339(NOW + 0.1234) == "2023-11-14T22:13:20.123Z"
    assert format_rfc3339(0) == "1970-01-01T00:00:00.000Z"
    assert format_rfc3339(MAX_INSTANT) == "9999-12-31T23:59:59.000Z"
    assert parse_instant(format_rfc3339(NOW)) == NOW
    for bad in (-1.0, MAX_INSTANT + 1, float("nan")):
        with pytest.raises(ValueError, match="is not an instant"):
            format_rfc3339(bad)


@given(
    st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(9999, 12, 30)),
    st.integers(min_value=-(23 * 60 + 59), max_value=23 * 60 + 59),
)
def test_any_date_time_with_any_offset_reads_as_python_reads_it(
    when: datetime, offset_minutes: int
) -> None:
    aware = when.replace(tzinfo=timezone(timedelta(minutes=offset_minutes)))
    text = aware.isoformat()
    assert parse_rfc3339(text) == pytest.approx(aware.timestamp(), abs=1e-6)
