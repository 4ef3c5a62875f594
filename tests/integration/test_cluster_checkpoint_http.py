"""``GET /v1/cluster/checkpoint`` on a real HTTP door over a real RocksDB store, fetched by
``fetch_checkpoint`` over a real socket: the node behind gets the leader's store and mark;
with auth on only an admin key of every queue may take it; the route exists only where a
checkpoint source is wired, and the OpenAPI document declares it."""

from __future__ import annotations

import asyncio
import re
import sys
import time
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tq.api.http import HttpServer
from tq.broker import keyadmin
from tq.broker.access import Principal
from tq.broker.service import BrokerService
from tq.cluster.checkpoint import Snapshot, take_checkpoint_async
from tq.cluster.fetch import CHECKPOINT_PATH, checkpoint_url, fetch_checkpoint
from tq.cluster.install import swap_in
from tq.cluster.replica import applied_mark
from tq.config import load
from tq.core.layout import APPLIED_KEY, AppliedMark, Family, encode
from tq.errors import PermissionDeniedError, UnauthenticatedError, UnavailableError
from tq.protocol.records import KeySpec, TaskSpec
from tq.storage.recovery import recover
from tq.storage.rocksdb import open_store
from tq.testing import new_api_key

pytestmark = pytest.mark.timeout(90)
ADMIN = new_api_key()


def run(test: Coroutine[Any, Any, None]) -> None:
    asyncio.run(asyncio.wait_for(test, 60))


@asynccontextmanager
async def door(
    path: Path, *, auth: bool = False, wired: bool = True
) -> AsyncIterator[tuple[BrokerService, str, list[Snapshot]]]:
    """A service on a RocksDB store in ``path`` holding 20 tasks and an applied mark, behind
    an HTTP door on port 0; the checkpoints it made."""
    made: list[Snapshot] = []
    overrides = {"api.rest_port": 0, "api.grpc_enabled": False, "auth.enabled": auth}
    settings = load(env={}, overrides=overrides)
    store = open_store(path / "db")
    service = BrokerService(settings, store, recover(store, time.time()).machine)

    async def source() -> Snapshot:
        made.append(await take_checkpoint_async(service.store, path / "checkpoints"))
        return made[-1]

    server = HttpServer(service, settings, checkpoint=source if wired else None)
    try:
        if auth:
            await keyadmin.create(service, KeySpec(name="boot", permissions=["admin"]), ADMIN)
            who = await service.authenticate(ADMIN)
        else:
            who = Principal.ANYONE
        _, durable = service.submit(who, [TaskSpec(task_type="t", queue="a")] * 20)
        await service.confirmed(durable)
        store.write([(Family.METADATA, APPLIED_KEY, encode(AppliedMark(42, 7)))])
        port = await server.start()
        yield service, f"127.0.0.1:{port}", made
    finally:
        await server.stop()
        await service.close()
        store.close()


def test_a_node_behind_fetches_the_store_and_mark_of_the_serving_node(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with door(tmp_path / "leader") as (service, address, made):
            target = tmp_path / "node" / "db"
            target.mkdir(parents=True)
            manifest = await fetch_checkpoint(
                checkpoint_url(address), target, have=AppliedMark(3, 1), timeout_s=10
            )
            assert manifest.mark == AppliedMark(42, 7)
            assert not made[0].path.exists()  # the served checkpoint was removed after
            leader_tasks = list(service.store.iterate(Family.PENDING))
        swap_in(target)
        with open_store(target, create=False, read_only=True) as store:
            assert applied_mark(store) == AppliedMark(42, 7)
            assert list(store.iterate(Family.PENDING)) == leader_tasks
            assert len(leader_tasks) == 20

    run(scenario())


def test_a_checkpoint_older_than_the_node_is_refused_and_nothing_is_left(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with door(tmp_path / "leader") as (_, address, _made):
            target = tmp_path / "node" / "db"
            with pytest.raises(Exception, match="older than entry 50"):
                await fetch_checkpoint(checkpoint_url(address), target, have=AppliedMark(50, 7))
            assert sorted(p.name for p in target.parent.iterdir()) == []

    run(scenario())


def test_with_auth_only_an_admin_key_of_every_queue_takes_a_checkpoint(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with door(tmp_path / "leader", auth=True) as (service, address, made):
            url = checkpoint_url(address)
            target = tmp_path / "node" / "db"
            with pytest.raises(UnauthenticatedError):
                await fetch_checkpoint(url, target)
            _, reader = await keyadmin.create(
                service, KeySpec(name="r", permissions=["read", "submit", "work"])
            )
            with pytest.raises(PermissionDeniedError, match="admin"):
                await fetch_checkpoint(url, target, api_key=reader)
            _, scoped = await keyadmin.create(
                service, KeySpec(name="s", permissions=["admin"], queues=["a"])
            )
            with pytest.raises(PermissionDeniedError, match="every queue"):
                await fetch_checkpoint(url, target, api_key=scoped)
            assert made == []  # refused before any checkpoint was made
            manifest = await fetch_checkpoint(url, target, api_key=ADMIN)
            assert manifest.mark == AppliedMark(42, 7)

    run(scenario())


def test_the_route_is_declared_only_where_a_checkpoint_source_is_wired(tmp_path: Path) -> None:
    async def scenario() -> None:
        for wired in (True, False):
            async with (
                door(tmp_path / f"leader-{wired}", wired=wired) as (_, address, _made),
                httpx.AsyncClient(base_url=f"http://{address}") as http,
            ):
                doc = (await http.get("/openapi.json")).json()
                assert (CHECKPOINT_PATH in doc["paths"]) is wired
                head = await http.get(CHECKPOINT_PATH)
                assert head.status_code == (200 if wired else 404)
                if wired:
                    answer = doc["paths"][CHECKPOINT_PATH]["get"]["responses"]["200"]
                    assert list(answer["content"]) == ["application/x-tar"]
                    assert head.headers["content-type"] == "application/x-tar"
                    assert int(head.headers["content-length"]) == len(head.content)
                    assert head.headers["x-tq-applied-index"] == "42"

    run(scenario())


@pytest.mark.parametrize("auth", [False, True])
def test_the_route_conforms_to_its_openapi_document(tmp_path: Path, auth: bool) -> None:
    """schemathesis (every check) on the route, which the broker-process run of
    test_api_schemathesis cannot reach until a broker runs as a cluster node."""

    async def scenario() -> None:
        async with door(tmp_path / "leader", auth=auth) as (_, address, _made):
            argv = [
                str(Path(sys.executable).with_name("schemathesis")), "run",
                f"http://{address}/openapi.json",
                "--include-path", CHECKPOINT_PATH,
                "--checks", "all",
                "--phases", "examples,coverage,fuzzing",
                "--max-examples", "10",
                "--seed", "20240901",
                "--workers", "1",
                "--generation-database", "none",
                "--no-color",
                *(["--header", f"Authorization: Bearer {ADMIN}"] if auth else []),
            ]  # fmt: skip
            proc = await asyncio.create_subprocess_exec(
                *argv,
                cwd=tmp_path,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )
            out, _ = await asyncio.wait_for(proc.communicate(), 50)
            report = out.decode()[-6000:]
            assert proc.returncode == 0, report
            assert "Tested: 1" in report, report

    run(scenario())


def test_an_unreachable_node_is_unavailable_naming_the_url(tmp_path: Path) -> None:
    async def scenario() -> None:
        started = time.monotonic()
        with pytest.raises(UnavailableError, match=re.escape("127.0.0.1:9/")):
            await fetch_checkpoint("http://127.0.0.1:9/v1/cluster/checkpoint", tmp_path / "db")
        assert time.monotonic() - started < 30

    run(scenario())
