"""The client commands of ``tq`` as real processes against a real broker and worker.

One broker and one worker of ``tq.worker.examples`` serve the module (queues ``default`` and
``served-empty``, which no task names); queues that no worker serves (``bulk-*``) hold tasks
still so that depths and listings are predictable.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.cli_procs import free_port, run_tq, worker
from tq.testing import BrokerProcess

pytestmark = pytest.mark.timeout(120)

#: An RFC 3339 UTC time to the second, as tables print them.
TABLE_TIME = re.compile(r"\b\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z\b")


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("cli")
    with (
        BrokerProcess(tmp / "data") as broker,
        worker(
            broker.url,
            "tq.worker.examples",
            "cli-worker",
            tmp / "worker.log",
            queues="default,served-empty",
        ),
    ):
        yield broker.url


def ok(*args: str, url: str, stdin: str | None = None) -> str:
    done = run_tq(*args, url=url, stdin=stdin)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    return done.stdout


def as_json(*args: str, url: str, stdin: str | None = None) -> Any:
    return json.loads(ok("-o", "json", *args, url=url, stdin=stdin))


def test_submit_wait_prints_the_echoed_result_verbatim(url: str) -> None:
    assert ok("submit", "echo", '{"x": 1}', "--wait", url=url) == '{"x": 1}\n'


def test_submit_wait_as_json_carries_the_whole_record(url: str) -> None:
    info = as_json("submit", "echo", '{"x": 1}', "--wait", url=url)
    assert info["state"] == "completed"
    assert info["result"] == '{"x": 1}'
    assert str(uuid.UUID(info["id"])) == info["id"]
    assert info["task_type"] == "echo"


def test_payload_comes_from_stdin_or_a_file(url: str, tmp_path: Path) -> None:
    assert ok("submit", "echo", "-", "--wait", url=url, stdin="from stdin") == "from stdin\n"
    path = tmp_path / "payload.bin"
    path.write_bytes(b"\xff\xfe binary")
    info = yaml.safe_load(ok("-o", "yaml", "submit", "echo", f"@{path}", "--wait", url=url))
    assert info["result"] == {"base64": "//4gYmluYXJ5"}


def test_a_task_that_fails_prints_the_remote_error_and_exits_1(url: str) -> None:
    done = run_tq("submit", "sleep", '{"seconds": "soon"}', "--wait", url=url)
    assert done.returncode == 1
    assert done.stdout == ""
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("error: [TASK_FAILED] task ")
    assert "ended dead_letter" in line
    assert "sleep expects" in line


def test_waiting_gives_up_after_timeout_wait(url: str) -> None:
    args = ("submit", "echo", "{}", "--delay", "3600", "--wait", "--timeout-wait", "0.2")
    done = run_tq(*args, url=url)
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("error: [TIMEOUT]")


def test_submit_prints_the_id_then_status_and_cancel_find_it(url: str) -> None:
    task_id = ok("submit", "echo", "{}", "--delay", "3600", "--tag", "team=cli", url=url).strip()
    assert str(uuid.UUID(task_id)) == task_id
    (info,) = as_json("status", task_id, "--payload", url=url)
    assert info["state"] == "scheduled"
    assert info["tags"] == {"team": "cli"}
    assert info["payload"] == "{}"
    assert info["scheduled_at"] > info["created_at"]  # ISO text sorts as time does
    assert as_json("cancel", task_id, url=url) == {"cancelled": [task_id]}
    (info,) = as_json("status", task_id, url=url)
    assert info["state"] == "cancelled"
    assert task_id in ok("status", task_id, url=url)  # the table names the task


def test_an_unknown_id_is_one_error_line_and_the_others_still_print(url: str) -> None:
    known = ok("submit", "echo", "{}", "--delay", "3600", url=url).strip()
    unknown = str(uuid.uuid4())
    done = run_tq("-o", "json", "status", known, unknown, url=url)
    assert done.returncode == 2
    assert [t["id"] for t in json.loads(done.stdout)] == [known]
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("error: [TASK_NOT_FOUND]")


def test_count_submits_copies_in_batches_and_queues_shows_their_depth(url: str) -> None:
    out = as_json("submit", "echo", "{}", "--count", "1200", "--queue", "bulk-a", url=url)
    assert out["count"] == 1200
    assert len(set(out["ids"])) == 1200
    ok("submit", "echo", "{}", "--count", "3", "-q", "bulk-a", "--priority", "250", url=url)
    depth = as_json("queues", url=url)["bulk-a"]
    assert (depth["high"], depth["normal"], depth["low"]) == (3, 1200, 0)
    table = ok("queues", url=url)
    assert "bulk-a" in table
    assert "1,200" in table


def test_list_filters_and_pages_with_a_cursor(url: str) -> None:
    ok("submit", "echo", "{}", "--count", "5", "--queue", "bulk-b", url=url)
    first = as_json("list", "--queue", "bulk-b", "--limit", "3", url=url)
    assert len(first["tasks"]) == 3
    assert {t["queue"] for t in first["tasks"]} == {"bulk-b"}
    assert first["next_cursor"]
    rest = as_json("list", "--queue", "bulk-b", "--cursor", first["next_cursor"], url=url)
    ids = [t["id"] for t in first["tasks"] + rest["tasks"]]
    assert len(ids) == len(set(ids)) == 5
    assert as_json("list", "--queue", "bulk-b", "--state", "completed", url=url)["tasks"] == []
    assert as_json("list", "--queue", "bulk-b", "--since", "1h", url=url)["tasks"]
    assert as_json("list", "--queue", "bulk-b", "--until", "1h", url=url)["tasks"] == []


def test_count_with_wait_reports_every_outcome(url: str) -> None:
    out = as_json("submit", "echo", "{}", "--count", "20", "--wait", url=url)
    assert out["states"] == {"completed": 20}


def test_stats_and_workers_describe_the_broker(url: str) -> None:
    stats = as_json("stats", url=url)
    assert stats["workers"] >= 1
    assert stats["totals"]
    names = [w["name"] for w in as_json("workers", url=url)]
    assert "cli-worker" in names
    assert "cli-worker" in ok("workers", url=url)
    assert "pending" in ok("stats", url=url)
    assert yaml.safe_load(ok("-o", "yaml", "stats", url=url))["node_id"] == stats["node_id"]


def test_an_unreachable_broker_is_one_clear_line() -> None:
    dead = f"tq://127.0.0.1:{free_port()}"
    done = run_tq("stats", url=dead)
    assert done.returncode == 2
    assert done.stderr == f"error: cannot reach the broker at {dead}: Connection refused\n"


def test_global_options_work_after_the_command(url: str) -> None:
    task_id = ok("submit", "echo", "{}", "--delay", "3600", url=url).strip()
    (info,) = yaml.safe_load(ok("status", task_id, "-o", "yaml", url=url))
    assert info["id"] == task_id
    assert json.loads(ok("stats", "--output", "json", url=url))["workers"] >= 1
    dead = f"tq://127.0.0.1:{free_port()}"
    done = run_tq("stats", "--url", dead, url=url)  # the option beats TQ_BROKER_URL
    assert done.stderr == f"error: cannot reach the broker at {dead}: Connection refused\n"
    assert ok("--version", url=url).startswith("tq ")


def test_list_gathers_more_than_one_broker_page_up_to_its_limit(url: str) -> None:
    ok("submit", "echo", "{}", "--count", "1500", "--queue", "bulk-c", url=url)
    some = as_json("list", "--queue", "bulk-c", "--limit", "1200", url=url)
    assert len(some["tasks"]) == 1200  # the broker's pages hold 1000 at most
    assert some["next_cursor"]
    rest = as_json("list", "--queue", "bulk-c", "--cursor", some["next_cursor"], "--limit",
                   "5000", url=url)  # fmt: skip
    assert len(rest["tasks"]) == 300
    assert rest["next_cursor"] is None
    assert len({t["id"] for t in some["tasks"] + rest["tasks"]}) == 1500


def test_times_are_rfc3339_with_the_date_in_tables_and_data(url: str) -> None:
    ok("submit", "echo", "{}", "--queue", "bulk-d", url=url)
    (task,) = as_json("list", "--queue", "bulk-d", url=url)["tasks"]
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z", task["created_at"])
    assert task["created_at"][:19] + "Z" in ok("list", "--queue", "bulk-d", url=url)
    assert TABLE_TIME.search(ok("workers", url=url))
    assert task["created_at"] in ok("status", task["id"], url=url)  # a record: to the ms
    # A printed time reads back as a --since/--until bound, as REST reads it.
    assert as_json("list", "--queue", "bulk-d", "--since", task["created_at"], url=url)["tasks"]
    assert not as_json("list", "--queue", "bulk-d", "--until", task["created_at"], url=url)["tasks"]


def test_queues_shows_served_empty_queues_and_dead_letter_per_queue(url: str) -> None:
    done = run_tq("submit", "sleep", '{"seconds": "soon"}', "--wait", "-q", "default", url=url)
    assert done.returncode == 1  # the handler rejects it: dead letter
    data = as_json("queues", url=url)
    assert data["served-empty"] == {
        **dict.fromkeys(("high", "normal", "low", "scheduled", "in_progress", "dead_letter"), 0),
        "paused": False,
    }
    assert data["default"]["dead_letter"] >= 1
    table = ok("queues", url=url)
    assert "served-empty" in table
    assert "dead letter" in table


def test_what_only_the_broker_can_judge_is_named_in_the_commands_terms(
    url: str, tmp_path: Path
) -> None:
    payload = tmp_path / "payload.bin"
    payload.write_bytes(b"x" * (11 * 2**20))  # above the 10 MiB payload limit
    done = run_tq("submit", "echo", f"@{payload}", url=url)
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == (
        "error: [PAYLOAD_TOO_LARGE] PAYLOAD: 11534336 bytes are above the limit of 10485760 "
        "bytes (broker.max_payload_size_bytes; tags count within it)\n"
    )
    payload.write_bytes(b"x" * (17 * 2**20))  # above the 16 MiB frame limit: not even sent
    for copies in ("1", "2"):
        done = run_tq("submit", "echo", f"@{payload}", "--count", copies, url=url)
        assert done.returncode == 2
        assert done.stderr.startswith(
            "error: [PAYLOAD_TOO_LARGE] PAYLOAD of 17,825,792 bytes makes the task larger than "
            "the broker's frame limit of 16,777,216 bytes"
        )
    tags = [arg for i in range(70) for arg in ("--tag", f"k{i}=v")]
    done = run_tq("submit", "echo", "{}", *tags, url=url)
    assert done.stderr == "error: [INVALID_ARGUMENT] --tag: 70 tags; at most 64\n"
