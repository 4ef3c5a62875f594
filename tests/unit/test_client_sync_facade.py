"""The blocking Client's own duties, without a broker: its loop thread's life and its errors."""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Callable

import pytest

from tq.client import Client
from tq.errors import UnavailableError

pytestmark = pytest.mark.timeout(30)


def loop_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "tq-client"]


def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)  # polling a condition with a deadline
    return False


def test_closing_a_client_ends_its_thread_and_later_calls_fail() -> None:
    before = len(loop_threads())
    client = Client("tq://127.0.0.1:1")
    assert len(loop_threads()) == before + 1
    client.close()
    client.close()  # idempotent
    assert len(loop_threads()) == before
    with pytest.raises(UnavailableError, match="closed"):
        client.ping()


def test_a_client_dropped_without_close_does_not_leak_its_thread() -> None:
    before = len(loop_threads())
    for _ in range(3):
        Client("tq://127.0.0.1:1")
    gc.collect()
    assert wait_until(lambda: len(loop_threads()) == before)


def test_an_unreachable_broker_is_unavailable_not_an_os_error() -> None:
    # Port 1 on loopback refuses connections; one attempt, since reconnect is off.
    with (
        Client("tq://127.0.0.1:1", reconnect=False) as client,
        pytest.raises(UnavailableError, match=r"cannot reach the broker at tq://127\.0\.0\.1:1"),
    ):
        client.ping()


def test_a_connect_timeout_bounds_the_wait_for_a_silent_address() -> None:
    # Backoff retries until the request deadline, then gives up with the last reason.
    with Client("tq://127.0.0.1:1", request_timeout=0.5, max_reconnect_delay=0.1) as client:
        start = time.monotonic()
        with pytest.raises(UnavailableError):
            client.status("01900000-0000-7000-8000-000000000000")
        assert time.monotonic() - start < 5
