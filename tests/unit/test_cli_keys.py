"""``tq keys`` options: permissions, expiry and rate limits read as documented, refused naming
the option otherwise (nothing reaches the broker)."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from tq.cli.keys import parse_expiry, parse_permissions, parse_rates
from tq.cli.main import cli
from tq.protocol import RateSpec

NOW = 1_700_000_000.0


def test_permissions_are_a_comma_separated_list_of_the_four_classes() -> None:
    assert parse_permissions("submit, read,submit") == ["submit", "read"]
    with pytest.raises(click.BadParameter, match="root: expected"):
        parse_permissions("read,root")
    with pytest.raises(click.BadParameter, match="none given"):
        parse_permissions(" , ")


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90m", 5400.0), ("12h", 43_200.0), ("30d", 2_592_000.0), ("2w", 1_209_600.0)],
)
def test_an_expiry_is_a_lifetime_from_now(text: str, seconds: float) -> None:
    assert parse_expiry(text, NOW) == NOW + seconds


def test_an_expiry_may_be_an_rfc3339_time_in_the_future_only() -> None:
    assert parse_expiry("2030-01-01T00:00:00Z", NOW) == 1_893_456_000.0
    with pytest.raises(click.BadParameter, match="in the past"):
        parse_expiry("2020-01-01T00:00:00Z", NOW)
    with pytest.raises(click.BadParameter, match="duration such as 30d"):
        parse_expiry("soon", NOW)


def test_rates_are_class_rate_burst_per_permission_class() -> None:
    assert parse_rates(("submit=100/200", "read=0.5/1")) == {
        "submit": RateSpec(rate=100.0, burst=200),
        "read": RateSpec(rate=0.5, burst=1),
    }
    assert parse_rates(()) is None
    for bad in ("submit=100", "fly=1/1", "submit=0/5", "read=1/0"):
        with pytest.raises(click.BadParameter, match="CLASS=RATE/BURST"):
            parse_rates((bad,))


def test_a_bad_option_is_refused_before_any_connection() -> None:
    result = CliRunner().invoke(
        cli, ["--url", "tq://127.0.0.1:1", "keys", "create", "--name", "x", "--permissions", "su"]
    )
    assert result.exit_code == 2
    assert "Invalid value for --permissions: su: expected" in result.output
