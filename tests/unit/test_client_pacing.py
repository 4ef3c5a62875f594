"""The client's pacing rules: a Deadline is a number of seconds, the Backoff is capped."""

from __future__ import annotations

import asyncio
import math

import pytest

from tq.client.pacing import FIRST_PAUSE, Backoff, Deadline, latest
from tq.errors import ValidationError


@pytest.mark.parametrize("bad", [-1.0, math.nan, "5"])
def test_a_timeout_that_is_not_seconds_is_refused_naming_it(bad: object) -> None:
    async def make() -> Deadline:
        return Deadline.after(bad)  # type: ignore[arg-type]

    with pytest.raises(
        ValidationError, match=f"timeout must be a number of seconds >= 0, got {bad!r}"
    ):
        asyncio.run(make())


def test_no_timeout_or_an_infinite_one_is_no_deadline() -> None:
    async def scenario() -> None:
        for seconds in (None, math.inf):
            deadline = Deadline.after(seconds)
            assert deadline == Deadline(None, None)
            assert deadline.remaining() == math.inf and not deadline.passed
            assert deadline.bound(7.0) == 7.0
            assert deadline.describe() == "without a deadline"
        finite = Deadline.after(2)
        assert 1.9 < finite.remaining() <= 2.0 and finite.describe() == "within 2 s"
        assert finite.bound(0.5) == 0.5 and finite.bound(30) <= 2.0
        assert latest([finite, Deadline.after(None)]).at is None
        assert latest([finite, Deadline.after(0)]) is finite
        assert Deadline.after(0).passed

    asyncio.run(scenario())


def test_backoff_pauses_double_to_the_cap_with_equal_jitter_and_a_success_resets_them() -> None:
    async def scenario() -> None:
        backoff = Backoff(cap=1.0)
        assert backoff.wait() == 0.0  # the first attempt does not wait
        ceilings = [FIRST_PAUSE * 2**i for i in range(5)] + [1.0] * 20
        for ceiling in ceilings:
            pause = backoff.failed()
            assert min(ceiling, 1.0) / 2 <= pause <= min(ceiling, 1.0)
            assert 0 < backoff.wait() <= pause
        assert backoff.failures == len(ceilings)
        backoff.succeeded()
        assert (backoff.wait(), backoff.failures) == (0.0, 0)
        assert backoff.failed() <= FIRST_PAUSE

    asyncio.run(scenario())


def test_a_backoff_cap_must_be_positive() -> None:
    with pytest.raises(ValidationError, match="max_reconnect_delay must be > 0"):
        Backoff(cap=0)
