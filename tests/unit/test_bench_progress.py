"""``tq bench --progress`` on a stderr that is not a terminal: plain lines a log file keeps."""

from __future__ import annotations

import io
import time
from collections.abc import Callable

from rich.console import Console

from tq.bench.measure import Meter
from tq.bench.runner import live_progress, progress_lines


def wait_until(what: str, condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.01)  # polling a condition with a deadline
    raise AssertionError(f"timed out waiting for {what}")


def file_console() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, force_terminal=False, width=200), out


def test_progress_to_a_file_is_a_line_per_step_not_a_redrawn_bar() -> None:
    console, out = file_console()
    assert not console.is_terminal
    meter = Meter()
    with live_progress(meter, console, enabled=True):
        meter.reset("drain: running", 100)
        meter.done = 40
        wait_until("the drain line", lambda: "tq bench: drain: running 40/100 (" in out.getvalue())
        meter.reset("latency: round trips", 0)
        meter.done = 1234
        wait_until("the latency line", lambda: "latency: round trips 1,234 (" in out.getvalue())
    text = out.getvalue()
    assert "\x1b[" not in text and "\r" not in text  # no cursor movement, no colours
    assert all(line.startswith("tq bench: ") for line in text.splitlines())


def test_a_long_step_is_repeated_every_interval() -> None:
    console, out = file_console()
    meter = Meter()
    meter.reset("steady: sending", 10)
    with progress_lines(meter, console, interval=0.2):
        wait_until("two lines", lambda: out.getvalue().count("steady: sending") >= 2)


def test_no_progress_prints_nothing() -> None:
    console, out = file_console()
    meter = Meter()
    with live_progress(meter, console, enabled=False):
        meter.reset("drain: running", 1)
    assert out.getvalue() == ""
