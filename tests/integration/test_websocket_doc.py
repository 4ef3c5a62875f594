"""docs/websocket.md stays true: its example client runs against a real broker and worker,
the page shows that example verbatim, and its tables name the ops, message types, caps and
close codes the code has."""

from __future__ import annotations

import re
import subprocess
import sys
import typing
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.cli_procs import REPO, child_env, worker
from tq.api import ws, ws_auth
from tq.api.schemas import AuthOp, PingOp, StatsOp, SubscribeOp
from tq.config import load
from tq.testing import BrokerProcess

pytestmark = pytest.mark.timeout(120)

EXAMPLE = REPO / "examples" / "ws_watch.py"
DOC = (REPO / "docs" / "websocket.md").read_text(encoding="utf-8")
SETTINGS = {"api.rest_enabled": True, "api.grpc_enabled": False}


@pytest.fixture(scope="module")
def rest_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A broker with REST and WebSocket, and a worker of tq.worker.examples (as `tq dev`)."""
    tmp = tmp_path_factory.mktemp("ws-doc")
    with (
        BrokerProcess(tmp / "data", settings=SETTINGS) as broker,
        worker(broker.url, "tq.worker.examples", "ws-doc", tmp / "worker.log"),
    ):
        yield f"http://127.0.0.1:{broker.ports['rest_port']}"


def test_the_example_client_follows_a_task_from_submission_to_its_result(rest_url: str) -> None:
    done = subprocess.run(
        [sys.executable, str(EXAMPLE)],
        capture_output=True, text=True, timeout=60, env=child_env(TQ_REST_URL=rest_url),
        cwd=REPO, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    lines = done.stdout.splitlines()
    assert lines == ["pending", "in_progress", "completed: hello"], done.stdout


def test_the_page_shows_the_example_verbatim() -> None:
    assert f"```python\n{EXAMPLE.read_text()}```" in DOC


def first_column(section: str) -> list[str]:
    """The `code` names in the first column of the table under ``### section`` (its
    header row aside)."""
    body = DOC.split(f"### {section}\n", 1)[1].split("\n#", 1)[0]
    rows = re.findall(r"^\| ([^|]+) \|", body, re.MULTILINE)[1:]
    return [name for row in rows for name in re.findall(r"`(\w+)`", row)]


def test_the_client_table_lists_exactly_the_ops() -> None:
    ops = [
        op
        for model in (SubscribeOp, StatsOp, PingOp, AuthOp)
        for op in typing.get_args(model.model_fields["op"].annotation)
    ]
    assert sorted(first_column("Client to server")) == sorted(ops)


def test_the_server_table_lists_exactly_the_message_types() -> None:
    source = Path(ws.__file__).read_text() + Path(ws_auth.__file__).read_text()
    types = set(re.findall(r'"type": "(\w+)"', source))
    types |= {f"{op}d" for op in typing.get_args(SubscribeOp.model_fields["op"].annotation)}
    assert set(first_column("Server to client")) == types


def test_the_caps_and_close_codes_are_the_code_s() -> None:
    broker = load(env={}).broker
    assert f"`broker.max_watched_task_ids` ({broker.max_watched_task_ids:,} task ids)" in DOC
    assert f"`broker.max_watched_queues` ({broker.max_watched_queues:,} queues" in DOC
    assert f"| {ws.SLOW_CONSUMER} | too slow: more than {ws.MAX_BUFFERED:,} messages" in DOC
    assert f"or {ws.MAX_BUFFERED_BYTES >> 20} MiB of results" in DOC
    assert f"below {ws.MIN_STATS_INTERVAL_S} counts as {ws.MIN_STATS_INTERVAL_S}" in DOC
    assert f"| {ws_auth.UNAUTHENTICATED_CLOSE} | not authenticated" in DOC
    assert f"within **{ws_auth.AUTH_TIMEOUT_S:g} seconds**" in DOC
