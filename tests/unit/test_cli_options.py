"""Option parsing of the ``tq`` commands and the error lines they print, without a broker."""

from __future__ import annotations

import io
import socket
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from tq.cli import cli
from tq.cli.admin import parse_when
from tq.cli.context import CliContext
from tq.cli.main import hoist_global_options
from tq.cli.submit import read_payload


def run(*args: str, stdin: str | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args), input=stdin)
    return result.exit_code, result.stdout, result.stderr


def test_a_bad_setting_is_one_error_line_with_its_code_and_exit_status_2() -> None:
    code, out, err = run("--set", "broker.port=70000", "config")
    assert code == 2
    assert out == ""
    assert err.startswith("error: [CONFIG_ERROR] invalid configuration: broker.port = '70000'")
    assert len(err.strip().splitlines()) == 1
    assert "Traceback" not in err


def test_a_set_without_equals_sign_is_a_usage_error_naming_the_option() -> None:
    code, _, err = run("--set", "broker.port", "config")
    assert code == 2
    assert "--set" in err
    assert "'broker.port' is not key=value" in err


def broker_url(args: list[str]) -> str:
    ctx = cli.make_context("tq", [*args, "config"])
    with ctx:
        ctx.invoke(cli.callback, **ctx.params)  # type: ignore[arg-type]
        obj: CliContext = ctx.obj
        return obj.url


def test_the_broker_url_is_the_flag_else_the_env_else_the_setting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("TQ_BROKER_URL", raising=False)
    assert broker_url([]) == "tq://127.0.0.1:7420"
    assert broker_url(["--set", "worker.broker_url=tq://set:1"]) == "tq://set:1"
    monkeypatch.setenv("TQ_BROKER_URL", "tq://env:2")
    assert broker_url(["--set", "worker.broker_url=tq://set:1"]) == "tq://env:2"
    assert broker_url(["--url", "tq://flag:3"]) == "tq://flag:3"


def test_a_malformed_dependency_id_is_refused_before_anything_is_sent() -> None:
    # Port 1 would refuse the connection; the id is checked first, so the error names it.
    code, _, err = run("--url", "tq://127.0.0.1:1", "submit", "echo", "--depends-on", "nope")
    assert code == 2
    assert err.strip() == "error: [INVALID_ARGUMENT] task id 'nope' is not a UUID"


def test_copies_sharing_one_idempotency_key_are_refused() -> None:
    code, _, err = run("submit", "echo", "--count", "3", "--idempotency-key", "k")
    assert code == 2
    assert "one key would be one task" in err


def test_a_bad_tag_names_the_option() -> None:
    code, _, err = run("--url", "tq://127.0.0.1:1", "submit", "echo", "--tag", "novalue")
    assert code == 2
    assert "--tag" in err
    assert "'novalue' is not key=value" in err


def test_list_refuses_an_unknown_state_and_an_unreadable_time() -> None:
    code, _, err = run("list", "--state", "sleeping")
    assert code == 2
    assert "'sleeping' is not one of" in err
    code, _, err = run("list", "--since", "yesterday-ish")
    assert code == 2
    assert "'yesterday-ish' is not a time" in err


def test_a_missing_payload_file_is_one_error_line(tmp_path: Path) -> None:
    code, _, err = run("submit", "echo", f"@{tmp_path / 'missing.json'}")
    assert code == 2
    assert err.startswith("error: cannot read payload file")
    assert "No such file or directory" in err


def test_payload_text_is_sent_as_utf8_bytes() -> None:
    assert read_payload('{"x": "é"}') == '{"x": "é"}'.encode()
    assert read_payload("") == b""


def test_payload_at_file_reads_the_files_bytes(tmp_path: Path) -> None:
    path = tmp_path / "p.bin"
    path.write_bytes(b"\x00\xffraw")
    assert read_payload(f"@{path}") == b"\x00\xffraw"


def test_payload_dash_reads_stdin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"from stdin")))
    assert read_payload("-") == b"from stdin"


def test_worker_without_a_module_or_setting_says_what_to_name() -> None:
    code, _, err = run("worker")
    assert code == 2
    assert err.strip() == "error: name the handlers MODULE (or set worker.handlers_module)"


def test_worker_flags_are_validated_as_settings() -> None:
    code, _, err = run("worker", "mod", "--concurrency", "0")
    assert code == 2
    assert "worker.concurrency = 0 from override worker.concurrency" in err


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["mod", "--set", "a.b=1"], ["--set", "a.b=1", "worker", "mod"]),
        (["--url=tq://h:1", "mod", "-c", "2"], ["--url=tq://h:1", "worker", "mod", "-c", "2"]),
        (["-o", "json", "mod"], ["-o", "json", "worker", "mod"]),
        (["-ojson", "mod"], ["-ojson", "worker", "mod"]),
        (["mod", "--", "--set"], ["worker", "mod", "--", "--set"]),
    ],
)
def test_entry_points_accept_global_options_anywhere(argv: list[str], expected: list[str]) -> None:
    assert hoist_global_options("worker", argv) == expected


NOW = 1_700_000_000.0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30s", NOW - 30),
        ("10m", NOW - 600),
        ("2h", NOW - 7200),
        ("1.5d", NOW - 1.5 * 86_400),
        ("1700000000", 1_700_000_000.0),
        ("2023-11-14T22:13:20Z", 1_700_000_000.0),
        ("2023-11-14T22:13:20+00:00", 1_700_000_000.0),
    ],
)
def test_times_are_iso_unix_seconds_or_an_age(text: str, expected: float) -> None:
    assert parse_when(text, NOW) == pytest.approx(expected)


def test_an_unreadable_time_names_the_accepted_forms() -> None:
    with pytest.raises(ValueError, match="ISO 8601"):
        parse_when("soon", NOW)


def test_an_unreachable_broker_is_one_line_naming_the_url_at_once() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    started = time.monotonic()
    code, out, err = run("--url", f"tq://127.0.0.1:{port}", "stats")
    assert (code, out) == (2, "")
    assert err == f"error: cannot reach the broker at tq://127.0.0.1:{port}: Connection refused\n"
    assert time.monotonic() - started < 5  # one attempt, no reconnect backoff


def test_a_malformed_url_is_a_config_error() -> None:
    code, _, err = run("--url", "http://h:1", "stats")
    assert code == 2
    assert err.startswith("error: [CONFIG_ERROR] broker url 'http://h:1'")
