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
from tq.cli.context import CliContext
from tq.cli.global_options import cli_context
from tq.cli.submit import read_payload
from tq.protocol.records import NAME_MAX_LEN
from tq.version import __version__


def run(*args: str, stdin: str | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args), input=stdin)
    return result.exit_code, result.stdout, result.stderr


def test_a_bad_setting_is_one_error_line_with_its_code_and_exit_status_2() -> None:
    code, out, err = run("--set", "broker.port=70000", "config")
    assert code == 2
    assert out == ""
    assert err.startswith(
        "error: [CONFIG_ERROR] invalid configuration: broker.port = '70000' from "
        "--set broker.port=70000: input should be less than or equal to 65535"
    )
    assert len(err.strip().splitlines()) == 1
    assert "Traceback" not in err


def test_a_set_without_equals_sign_is_a_usage_error_naming_the_option() -> None:
    code, _, err = run("--set", "broker.port", "config")
    assert code == 2
    assert "--set" in err
    assert "'broker.port' is not key=value" in err


def parsed(args: list[str]) -> CliContext:
    """The CliContext that ``tq ARGS`` would run its command with (nothing runs)."""
    at = next(i for i, arg in enumerate(args) if arg in cli.commands)
    name = args[at]
    ctx = cli.make_context("tq", [*args[:at], name])
    with ctx:
        cli.commands[name].make_context(name, args[at + 1 :], parent=ctx)
        return cli_context(ctx)


ID = "0190a2b4-5c6d-7e8f-9a0b-1c2d3e4f5a6b"


def broker_url(args: list[str]) -> str:
    return parsed([*args, "config"]).url


def test_the_broker_url_is_the_flag_else_the_env_else_the_setting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("TQ_BROKER_URL", raising=False)
    assert broker_url([]) == "tq://127.0.0.1:7420"
    assert broker_url(["--set", "worker.broker_url=tq://set:1"]) == "tq://set:1"
    monkeypatch.setenv("TQ_BROKER_URL", "tq://env:2")
    assert broker_url(["--set", "worker.broker_url=tq://set:1"]) == "tq://env:2"
    assert broker_url(["--url", "tq://flag:3"]) == "tq://flag:3"
    assert parsed(["config", "--url", "tq://after:4"]).url == "tq://after:4"


@pytest.mark.parametrize(
    "argv",
    [
        ["-o", "yaml", "--url", "tq://h:1", "--set", "a.b=1", "status", ID],
        ["status", ID, "-o", "yaml", "--url", "tq://h:1", "--set", "a.b=1"],
        ["--set", "a.b=1", "status", "-oyaml", ID, "--url=tq://h:1"],
        ["-o", "json", "--url", "tq://h:0", "status", ID, "-o", "yaml", "--url=tq://h:1"],
    ],
)
def test_global_options_are_accepted_before_and_after_the_command(argv: list[str]) -> None:
    state = parsed(argv if "a.b=1" in argv else [*argv, "--set", "a.b=1"])
    assert (state.output, state.url_flag, state.sets) == ("yaml", "tq://h:1", ("a.b=1",))


def test_set_items_before_and_after_the_command_add_up_and_the_later_wins() -> None:
    state = parsed(["--set", "broker.port=7001", "config", "--set", "broker.port=7002"])
    assert state.sets == ("broker.port=7001", "broker.port=7002")
    assert state.settings.broker.port == 7002
    code, out, _ = run(
        "--set", "broker.port=7001", "config", "-o", "json", "--set", "api.rest_port=0"
    )
    assert code == 0
    assert '"port": 7001' in out
    assert '"rest_port": 0' in out


def test_every_command_takes_every_global_option() -> None:
    for name, command in cli.commands.items():
        opts = {opt for param in command.params for opt in param.opts}
        assert {"--config", "--set", "--output", "-o", "--url", "--tls-ca-file"} <= opts, name


def test_version_prints_the_version() -> None:
    code, out, _ = run("--version")
    assert (code, out) == (0, f"tq {__version__}\n")


def test_a_malformed_id_is_refused_naming_the_option_before_anything_is_sent() -> None:
    # Port 1 would refuse the connection; the id is checked first, so the error names it.
    code, _, err = run("--url", "tq://127.0.0.1:1", "submit", "echo", "--depends-on", "nope")
    assert code == 2
    assert "Invalid value for '--depends-on': 'nope' is not a task id" in err
    code, _, err = run("--url", "tq://127.0.0.1:1", "status", "nope")
    assert code == 2
    assert "Invalid value for 'ID...': 'nope' is not a task id" in err
    assert "cannot reach" not in err


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["list", "--limit", "50000"], "Invalid value for '--limit': 50000 is not in the range"),
        (["list", "--limit", "0"], "Invalid value for '--limit': 0 is not in the range"),
        (["list", "--queue", ""], "Invalid value for '--queue' / '-q': must not be empty"),
        (["list", "--type", "x" * 300], "'--type': is 300 characters long, above the limit of"),
        (["list", "--priority-min", "256"], "Invalid value for '--priority-min': 256 is not in"),
        (["list", "--since", "-5"], "'--since': -5 unix seconds is outside 0..253402300799"),
        (["list", "--since", "10000000000000"], "10000000000000 unix seconds is outside"),
        (["list", "--since", "2024-07-01T12:00:00"], "'--since': '2024-07-01T12:00:00' has no UTC"),
        (["list", "--since", "2024-07-01"], "'2024-07-01' is a date: give a time too"),
        (["submit", ""], "Invalid value for 'TYPE': must not be empty"),
        (["submit", "t" * (NAME_MAX_LEN + 1)], f"'TYPE': is {NAME_MAX_LEN + 1} characters long"),
        (["submit", "echo", "-q", ""], "Invalid value for '--queue' / '-q': must not be empty"),
        (
            ["submit", "echo", "--priority", "300"],
            "'--priority' / '-p': 300 is not in the range 0<=x<=255",
        ),
        (["submit", "echo", "--delay", "1e11"], "Invalid value for '--delay': 100000000000.0 is"),
        (["submit", "echo", "--timeout", "0"], "Invalid value for '--timeout': 0.0 is not in"),
        (["submit", "echo", "--max-retries", "-1"], "Invalid value for '--max-retries': -1 is"),
        (["submit", "echo", "--max-retries", str(2**31)], "'--max-retries': 2147483648 is not"),
        (["submit", "echo", "--idempotency-key", ""], "'--idempotency-key': must not be empty"),
    ],
)
def test_a_value_the_broker_would_refuse_is_refused_first_naming_what_was_typed(
    argv: list[str], expected: str
) -> None:
    code, out, err = run("--url", "tq://127.0.0.1:1", *argv)
    assert (code, out) == (2, "")
    assert expected in err
    assert "$." not in err  # no wire path
    assert "cannot reach" not in err  # refused before connecting


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
    assert "worker.concurrency = 0 from --concurrency: input should be greater than" in err
    code, _, err = run("broker", "--port", "70000")
    assert code == 2
    assert "broker.port = 70000 from --port: input should be less than" in err


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
