"""``tq retry``, ``tq delete``, ``tq purge``, ``tq dead-letters`` and the error column of
``tq list`` as real processes against a real broker. Dead letters are made by the test
playing a worker (``dead_letters``), in queues of each test's own that no worker serves."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.integration.cli_procs import child_env, run_tq
from tests.integration.dead_letters import dead_lettered
from tq.client import Client
from tq.testing import BrokerProcess

pytestmark = pytest.mark.timeout(180)
FAR = 3600.0


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    with BrokerProcess(tmp_path_factory.mktemp("cli-bulk") / "data") as b:
        yield b


@pytest.fixture(scope="module")
def url(broker: BrokerProcess) -> str:
    return broker.url


@pytest.fixture(scope="module")
def client(url: str) -> Iterator[Client]:
    with Client(url) as c:
        yield c


@pytest.fixture
def queue() -> str:
    return f"q-{uuid.uuid4().hex[:12]}"


def ok(*args: str, url: str) -> subprocess.CompletedProcess[str]:
    done = run_tq(*args, url=url, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    return done


def as_json(*args: str, url: str) -> Any:
    return json.loads(ok("-o", "json", *args, url=url).stdout)


def refused(*args: str, url: str) -> str:
    """The one-line error of a command that must exit 2; its stderr."""
    done = run_tq(*args, url=url)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    return done.stderr


def in_a_terminal(*args: str, url: str, answer: str) -> subprocess.CompletedProcess[str]:
    """``tq ARGS`` with a terminal as stdin, typing ``answer`` (stdout and stderr piped)."""
    main, child = pty.openpty()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tq", *args], stdin=child, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, env=child_env(url),
        )  # fmt: skip
        os.write(main, answer.encode())
        stdout, stderr = proc.communicate(timeout=60)
        return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
    finally:
        os.close(main)
        os.close(child)


def states(client: Client, ids: list[str]) -> list[str | None]:
    return [None if t is None else t.state for t in client.status_many(ids)]


def test_retry_by_id_requeues_and_names_each_task_it_could_not(
    url: str, client: Client, queue: str
) -> None:
    dead = dead_lettered(client, queue, 2)
    assert as_json("retry", *dead, url=url) == {"retried": dead}
    assert states(client, dead) == ["pending", "pending"]
    unknown = str(uuid.uuid4())
    (again,) = dead_lettered(client, f"{queue}-again", 1)  # not claiming the retried ones
    done = run_tq("retry", dead[0], unknown, again, url=url)
    assert done.returncode == 2
    assert done.stdout == f"retried {again}\n"
    assert done.stderr.splitlines() == [
        f"error: [INVALID_STATE] cannot retry task {dead[0]}: only dead_letter tasks can be "
        "retried, and it is pending",
        f"error: [TASK_NOT_FOUND] no task with id {unknown}",
    ]


def test_retry_by_filter_pages_through_more_than_ten_thousand_with_progress(
    url: str, client: Client, queue: str
) -> None:
    n = 10_500
    ids = dead_lettered(client, queue, n)
    done = ok("retry", "--state", "dead_letter", "--queue", queue, url=url)
    assert done.stdout == f"retried {n:,} tasks (state=dead_letter, queue={queue})\n"
    # Not a terminal: the bar's last state only, on stderr.
    assert f"{n:,} tasks" in done.stderr and "retry" in done.stderr
    assert client.list_tasks(queue=queue, state="dead_letter") == ([], None)
    assert set(states(client, [ids[0], ids[-1]])) == {"pending"}


def test_retry_by_filter_takes_only_dead_letters_and_says_so_as_json(
    url: str, client: Client, queue: str
) -> None:
    dead = dead_lettered(client, queue, 3)
    live = client.submit("t", queue=queue, delay=FAR)
    assert as_json("retry", "--queue", queue, url=url) == {"retried": 3, "failed": 0}
    assert states(client, [*dead, live]) == ["pending"] * 3 + ["scheduled"]
    done = ok("retry", "--queue", queue, url=url)  # nothing left to retry: still fine
    assert done.stdout.startswith("retried 0 tasks")
    assert done.stderr == ""  # one call: no bar


def test_retry_needs_ids_or_a_filter_and_not_both(url: str) -> None:
    assert "give task IDs, or --state dead_letter" in refused("retry", url=url)
    both = refused("retry", str(uuid.uuid4()), "--queue", "q", url=url)
    assert "not both" in both
    assert "'pending' is not 'dead_letter'" in refused("retry", "--state", "pending", url=url)


def test_delete_removes_finished_tasks_and_refuses_live_ones(
    url: str, client: Client, queue: str
) -> None:
    dead = dead_lettered(client, queue, 2)
    live = client.submit("t", queue=queue, delay=FAR)
    assert as_json("delete", dead[0], url=url) == {"deleted": [dead[0]]}
    done = run_tq("-o", "yaml", "delete", live, dead[1], url=url)
    assert done.returncode == 2
    assert done.stdout == f"deleted:\n- {dead[1]}\n"
    assert "cancel it first" in done.stderr
    assert states(client, [*dead, live]) == [None, None, "scheduled"]


def test_purge_without_a_terminal_refuses_unless_yes(url: str, client: Client, queue: str) -> None:
    dead = dead_lettered(client, queue, 3)
    live = client.submit("t", queue=queue, delay=FAR)
    error = refused("purge", "--queue", queue, url=url)
    assert error == (
        f"error: refusing to delete 3 tasks (queue={queue}, every finished state) unasked: "
        "stdin is not a terminal to confirm on; pass --yes\n"
    )
    assert states(client, dead) == ["dead_letter"] * 3
    out = as_json("purge", "--queue", queue, "--state", "dead_letter", "--yes", url=url)
    assert out == {"matched": 3, "deleted": 3, "failed": 0}
    assert states(client, [*dead, live]) == [None, None, None, "scheduled"]
    nothing = ok("purge", "--queue", queue, "--yes", url=url).stdout
    assert nothing == f"no finished tasks match (queue={queue}, every finished state)\n"


def test_purge_in_a_terminal_asks_first_and_deletes_only_on_yes(
    url: str, client: Client, queue: str
) -> None:
    dead = dead_lettered(client, queue, 2)
    cancelled = client.submit("t", queue=queue, delay=FAR)
    client.cancel(cancelled)
    args = ("purge", "-q", queue, "--state", "dead_letter", "--state", "cancelled")
    prompt = f"delete 3 tasks (queue={queue}, state=dead_letter|cancelled)? [y/N]: "
    declined = in_a_terminal(*args, url=url, answer="n\n")
    assert declined.returncode == 130
    assert declined.stderr == f"{prompt}aborted\n"
    assert states(client, [*dead, cancelled]) == ["dead_letter"] * 2 + ["cancelled"]
    accepted = in_a_terminal(*args, url=url, answer="y\n")
    assert accepted.returncode == 0, accepted.stderr
    assert accepted.stderr == prompt
    assert accepted.stdout == f"deleted 3 tasks (queue={queue}, state=dead_letter|cancelled)\n"
    assert states(client, [*dead, cancelled]) == [None, None, None]


def test_purge_of_many_tasks_shows_its_progress(url: str, client: Client, queue: str) -> None:
    dead_lettered(client, queue, 2500)
    done = ok("purge", "--queue", queue, "--yes", url=url)
    assert done.stdout == f"deleted 2,500 tasks (queue={queue}, every finished state)\n"
    assert "delete" in done.stderr and "2,500/2,500 tasks" in done.stderr


def test_purge_needs_a_filter(url: str) -> None:
    assert "purge needs --queue, --state or another filter" in refused("purge", "--yes", url=url)


def test_list_shows_why_failed_tasks_failed(url: str, client: Client, queue: str) -> None:
    (dead,) = dead_lettered(client, queue, 1, error="disk full")
    live = client.submit("t", queue=queue, delay=FAR)
    table = ok("list", "--queue", queue, url=url).stdout
    (header,) = [line for line in table.splitlines() if " id " in line]
    assert header.split()[-1] == "error"
    (dead_row,) = [line for line in table.splitlines() if dead in line]
    assert dead_row.rstrip().endswith("ValueError: disk full")
    (live_row,) = [line for line in table.splitlines() if live in line]
    assert "disk full" not in live_row
    (data,) = [t for t in as_json("list", "--queue", queue, url=url)["tasks"] if t["id"] == dead]
    assert (data["error"], data["error_type"]) == ("disk full", "ValueError")
    assert "error" not in ok("list", "--queue", queue, "--state", "scheduled", url=url).stdout


def test_dead_letters_lists_them_with_their_error(url: str, client: Client, queue: str) -> None:
    dead = dead_lettered(client, queue, 2, error="no route to host")
    client.submit("t", queue=queue, delay=FAR)
    out = as_json("dead-letters", "--queue", queue, url=url)
    assert [t["id"] for t in out["tasks"]] == dead
    assert {t["error"] for t in out["tasks"]} == {"no route to host"}
    table = ok("dead-letters", "-q", queue, url=url).stdout
    assert "dead letters (2)" in table
    assert table.count("ValueError: no route to host") == 2
