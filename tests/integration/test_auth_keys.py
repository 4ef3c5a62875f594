"""API keys over real sockets, beyond the permission matrix: revocation on an open
connection, rate limits and the client honouring their retry-after, bcrypt paid once per key
(not per request), the bootstrap admin key, and a broker that will not serve doors open."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import tq
from tests.integration.authrig import call, create_key, ok, until
from tests.integration.cli_procs import wait_for
from tests.integration.rawconn import RawConn, read_nack_then_eof
from tq.client import AsyncClient, Client
from tq.core.keys import KEY_FORMAT
from tq.errors import ErrorCode, TqError
from tq.protocol import (
    GetStats,
    KeyList,
    KeyRevoke,
    KeySpec,
    Nack,
    RateSpec,
    StatsReply,
    SubmitReply,
    SubmitTask,
    TaskSpec,
    Welcome,
    encode,
)
from tq.protocol.codec import FrameDecoder
from tq.testing import BrokerProcess, new_api_key

pytestmark = pytest.mark.timeout(180)

NO_HTTP = {
    "api.rest_enabled": "false",
    "api.websocket_enabled": "false",
    "api.grpc_enabled": "false",
}
READ_LIMIT = RateSpec(rate=5.0, burst=3)


@pytest.fixture
def admin_key() -> str:
    return new_api_key()


@pytest.fixture
def broker(tmp_path: Path, admin_key: str) -> Iterator[BrokerProcess]:
    limits = json.dumps({"read": {"rate": READ_LIMIT.rate, "burst": READ_LIMIT.burst}})
    with BrokerProcess(
        tmp_path / "data", api_key=admin_key, settings={"auth.rate_limits": limits}
    ) as b:
        yield b


def verifications(b: BrokerProcess) -> int:
    url = f"http://127.0.0.1:{b.ports['metrics_port']}/metrics"
    with urllib.request.urlopen(url, timeout=10) as r:
        text = r.read().decode()
    (line,) = [x for x in text.splitlines() if x.startswith("tq_auth_key_verifications_total ")]
    return int(float(line.split()[1]))


async def refused_hello(port: int, secret: str) -> Nack:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(RawConn(reader, writer, api_key=secret).cc.hello())
    nack = await read_nack_then_eof(reader)
    writer.close()
    return nack


def test_a_revoked_key_ends_its_open_connections_at_once_and_is_refused_after(
    broker: BrokerProcess, admin_key: str
) -> None:
    async def main() -> None:
        admin = await RawConn.open(broker.port, api_key=admin_key)
        key_id, secret = await create_key(admin, KeySpec(name="ci", permissions=["submit"]))
        conn = await RawConn.open(broker.port, api_key=secret)
        submit = lambda r: SubmitTask(request_id=r, tasks=[TaskSpec(task_type="t")])  # noqa: E731
        await ok(conn, submit)
        await ok(admin, lambda r: KeyRevoke(request_id=r, key_id=key_id))
        # Ended by the revocation itself, before its reply: NACK 0, then the broker closes.
        ended = await read_nack_then_eof(conn.reader)
        assert (ended.request_id, ended.code) == (0, ErrorCode.UNAUTHENTICATED)
        assert f"API key {key_id} was revoked" in ended.message
        nack = await refused_hello(broker.port, secret)
        assert nack.code == ErrorCode.UNAUTHENTICATED and "revoked" in nack.message
        stats = (await ok(admin, lambda r: GetStats(request_id=r))).stats
        assert stats.totals["submitted"] == 1  # the refused submit did nothing
        await conn.close()
        await admin.close()

    asyncio.run(main())


def test_a_key_that_expires_ends_its_open_connection_at_its_expiry(
    broker: BrokerProcess, admin_key: str
) -> None:
    async def main() -> None:
        admin = await RawConn.open(broker.port, api_key=admin_key)
        expires_at = time.time() + 2.0
        spec = KeySpec(name="short", permissions=["read"], expires_at=expires_at)
        key_id, secret = await create_key(admin, spec)
        conn = await RawConn.open(broker.port, api_key=secret)
        await ok(conn, lambda r: GetStats(request_id=r))
        # Nothing is asked: the broker ends the connection by itself, at the expiry.
        ended = await asyncio.wait_for(read_nack_then_eof(conn.reader), timeout=10)
        assert time.time() >= expires_at - 0.05
        assert (ended.request_id, ended.code) == (0, ErrorCode.UNAUTHENTICATED)
        assert f"API key {key_id} expired" in ended.message
        await conn.close()
        await admin.close()

    asyncio.run(main())


def test_a_burst_beyond_the_bucket_is_refused_with_retry_after_then_allowed_again(
    broker: BrokerProcess, admin_key: str
) -> None:
    async def main() -> None:
        admin = await RawConn.open(broker.port, api_key=admin_key)
        _, secret = await create_key(admin, KeySpec(name="reader", permissions=["read"]))
        conn = await RawConn.open(broker.port, api_key=secret)
        for _ in range(READ_LIMIT.burst):
            await ok(conn, lambda r: GetStats(request_id=r))
        refused = await call(conn, lambda r: GetStats(request_id=r))
        at = time.monotonic()
        assert isinstance(refused, Nack) and refused.code == ErrorCode.RATE_LIMITED
        assert refused.retry_after is not None
        assert 0 < refused.retry_after <= 1 / READ_LIMIT.rate
        after = refused.retry_after
        await until("retry_after passed", lambda: time.monotonic() >= at + after)
        assert isinstance(await call(conn, lambda r: GetStats(request_id=r)), StatsReply)
        await conn.close()
        await admin.close()

    asyncio.run(main())


def test_a_keys_own_limit_applies_and_the_client_waits_it_out(
    broker: BrokerProcess, admin_key: str
) -> None:
    async def main() -> None:
        admin = await RawConn.open(broker.port, api_key=admin_key)
        spec = KeySpec(
            name="slow",
            permissions=["submit"],
            rate_limits={"submit": RateSpec(rate=4.0, burst=2)},
        )
        _, secret = await create_key(admin, spec)
        raw = await RawConn.open(broker.port, api_key=secret)
        submit = lambda r: SubmitTask(request_id=r, tasks=[TaskSpec(task_type="t")])  # noqa: E731
        await ok(raw, submit)
        await ok(raw, submit)
        refused = await call(raw, submit)
        assert isinstance(refused, Nack) and refused.code == ErrorCode.RATE_LIMITED
        await raw.close()
        async with AsyncClient(broker.url, api_key=secret, request_timeout=10) as client:
            start = time.monotonic()
            for _ in range(6):
                await client.submit("t")  # paced by the broker's retry_after, none refused
            # 6 submits from a bucket that was empty: at 4/s the last waits at least ~1.5 s.
            assert time.monotonic() - start >= 1.0
        stats = (await ok(admin, lambda r: GetStats(request_id=r))).stats
        assert stats.totals["submitted"] == 8
        await admin.close()

    asyncio.run(main())


def test_bcrypt_runs_once_per_key_not_per_connection_or_request(
    broker: BrokerProcess, admin_key: str
) -> None:
    async def main() -> None:
        admin = await RawConn.open(broker.port, api_key=admin_key)
        _, secret = await create_key(admin, KeySpec(name="ci", permissions=["submit"]))
        before = verifications(broker)
        for _ in range(3):
            conn = await RawConn.open(broker.port, api_key=secret)
            for _ in range(20):
                await ok(conn, lambda r: SubmitTask(request_id=r, tasks=[TaskSpec(task_type="t")]))
            await conn.close()
        assert verifications(broker) == before + 1
        wrong = secret[:-5] + ("AAAAA" if not secret.endswith("AAAAA") else "BBBBB")
        for _ in range(2):  # a wrong secret is never cached: each attempt pays bcrypt
            assert (await refused_hello(broker.port, wrong)).code == ErrorCode.UNAUTHENTICATED
        assert verifications(broker) == before + 3
        await admin.close()

    asyncio.run(main())


def test_a_new_data_dir_gets_a_generated_bootstrap_key_in_an_owner_only_file(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    settings = {"auth.enabled": "true", **NO_HTTP}
    with BrokerProcess(data, settings=settings, env={"TQ_BOOTSTRAP_API_KEY": ""}) as b:
        path = data / "bootstrap-admin.key"
        secret = path.read_text().strip()
        assert KEY_FORMAT.fullmatch(secret)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600

        async def keys() -> list[str]:
            conn = await RawConn.open(b.port, api_key=secret)
            found = (await ok(conn, lambda r: KeyList(request_id=r))).keys
            await conn.close()
            return [f"{k.name}:{','.join(k.permissions)}" for k in found]

        assert asyncio.run(keys()) == ["bootstrap:admin"]
    log = b.log_path.read_text()
    assert str(path) in log and secret not in log
    # Started again: the data dir holds a key, so none is made and the file stays as it was.
    with BrokerProcess(data, settings=settings, env={"TQ_BOOTSTRAP_API_KEY": ""}) as b:
        assert path.read_text().strip() == secret
        assert asyncio.run(keys()) == ["bootstrap:admin"]


def test_the_bootstrap_key_may_come_from_a_file(tmp_path: Path) -> None:
    secret = new_api_key()
    given = tmp_path / "boot.key"
    given.write_text(secret + "\n")
    settings = {"auth.enabled": "true", "auth.bootstrap_key_file": str(given), **NO_HTTP}
    with BrokerProcess(tmp_path / "data", settings=settings) as b:

        async def main() -> None:
            conn = await RawConn.open(b.port, api_key=secret)
            await ok(conn, lambda r: KeyList(request_id=r))
            await conn.close()

        asyncio.run(main())
    assert not (tmp_path / "data" / "bootstrap-admin.key").exists()


def test_a_malformed_bootstrap_key_stops_the_broker_naming_its_source(tmp_path: Path) -> None:
    env = {"TQ_BOOTSTRAP_API_KEY": "hunter2"}
    with pytest.raises(TqError, match="TQ_BOOTSTRAP_API_KEY: malformed API key") as e:
        BrokerProcess(
            tmp_path / "data", settings={"auth.enabled": "true", **NO_HTTP}, env=env
        ).start()
    assert "hunter2" not in str(e.value)


def scrape(b: BrokerProcess, key: str | None) -> tuple[int, dict[str, str], str]:
    url = f"http://127.0.0.1:{b.ports['metrics_port']}/metrics"
    request = urllib.request.Request(url)
    if key is not None:
        request.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return r.status, dict(r.headers), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read().decode()


def test_protected_metrics_need_a_key_with_the_read_permission(tmp_path: Path) -> None:
    admin_key = new_api_key()
    settings = {"auth.protect_metrics": "true"}
    with BrokerProcess(tmp_path / "data", api_key=admin_key, settings=settings) as b:

        async def make() -> str:
            admin = await RawConn.open(b.port, api_key=admin_key)
            _, secret = await create_key(admin, KeySpec(name="w", permissions=["submit"]))
            await admin.close()
            return secret

        submit_only = asyncio.run(make())
        status, headers, body = scrape(b, None)
        assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer")
        assert "UNAUTHENTICATED" in body
        status, _, body = scrape(b, submit_only)
        assert status == 403 and "lacks the read permission" in body
        status, _, body = scrape(b, admin_key)
        assert status == 200 and "tq_auth_key_verifications_total" in body


WORKER_HANDLERS = """
import tq

@tq.handler("shout")
def shout(payload):
    return payload.upper()
"""


def run_worker(
    tmp_path: Path, b: BrokerProcess, env: dict[str, str], *flags: str
) -> subprocess.CompletedProcess[str]:
    """``tq [FLAGS] worker auth_handlers --burst`` with ``env``, to its end."""
    (tmp_path / "auth_handlers.py").write_text(WORKER_HANDLERS)
    argv = [sys.executable, "-m", "tq", "--url", b.url, *flags, "worker", "auth_handlers"]
    full_env = {**os.environ, "PYTHONPATH": str(tmp_path), **env}
    return subprocess.run(
        [*argv, "--burst"], env=full_env, capture_output=True, text=True, timeout=60, check=False
    )


def test_a_worker_runs_with_a_work_key_and_stops_at_once_without_one(tmp_path: Path) -> None:
    admin_key = new_api_key()
    with BrokerProcess(tmp_path / "data", api_key=admin_key) as b:

        async def keys() -> tuple[str, str]:
            admin = await RawConn.open(b.port, api_key=admin_key)
            _, work = await create_key(admin, KeySpec(name="w", permissions=["work"]))
            _, client = await create_key(admin, KeySpec(name="app", permissions=["submit", "read"]))
            await admin.close()
            return work, client

        work, client_key = asyncio.run(keys())
        with Client(b.url, api_key=client_key) as client:
            task_id = client.submit("shout", b"hi")
            done = run_worker(tmp_path, b, {"TQ_API_KEY": work})
            assert done.returncode == 0, done.stderr[-2000:]
            assert client.result(task_id, timeout=10) == b"HI"
            again = client.submit("shout", b"again")
            flagged = run_worker(tmp_path, b, {"TQ_API_KEY": ""}, "--api-key", work)
            assert flagged.returncode == 0, flagged.stderr[-2000:]
            assert client.result(again, timeout=10) == b"AGAIN"
        refused = run_worker(tmp_path, b, {"TQ_API_KEY": client_key})
        assert refused.returncode == 1, refused.stderr[-2000:]
        assert (
            "PERMISSION_DENIED" in refused.stderr and "lacks the work permission" in refused.stderr
        )
        assert client_key not in refused.stderr


def test_a_worker_whose_key_is_revoked_stops_at_once_saying_why(tmp_path: Path) -> None:
    admin_key = new_api_key()
    with (
        BrokerProcess(tmp_path / "data", api_key=admin_key) as b,
        Client(b.url, api_key=admin_key) as admin,
    ):
        info, work = admin.create_key(KeySpec(name="w", permissions=["work"]))
        (tmp_path / "auth_handlers.py").write_text(WORKER_HANDLERS)
        worker = subprocess.Popen(
            [sys.executable, "-m", "tq", "--url", b.url, "worker", "auth_handlers"],
            env={**os.environ, "PYTHONPATH": str(tmp_path), "TQ_API_KEY": work},
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            wait_for("the worker registered", lambda: admin.workers() or None)
            admin.revoke_key(info.id)
            status = worker.wait(timeout=10)  # not a reconnect loop: the key is gone
            stderr = worker.stderr.read() if worker.stderr else ""
        finally:
            worker.kill()
            worker.wait()
    assert status == 1, stderr[-2000:]
    assert f"[UNAUTHENTICATED] API key {info.id} was revoked" in stderr
    assert "Traceback" not in stderr and work not in stderr


def tq_cli(b: BrokerProcess, key: str | None, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("TQ_API_KEY", "TQ_BROKER_URL")}
    flags = ["--api-key", key] if key is not None else []
    return subprocess.run(
        [sys.executable, "-m", "tq", "--url", b.url, *flags, *args],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_tq_keys_creates_lists_and_revokes_printing_the_secret_once(tmp_path: Path) -> None:
    admin_key = new_api_key()
    with BrokerProcess(tmp_path / "data", api_key=admin_key) as b:
        made = tq_cli(
            b, admin_key, "-o", "json", "keys", "create", "--name", "ci",
            "--permissions", "submit,read", "--queues", "a,b", "--expires", "30d",
            "--rate", "submit=100/200",
        )  # fmt: skip
        assert made.returncode == 0, made.stderr
        created = json.loads(made.stdout)
        assert KEY_FORMAT.fullmatch(created["secret"])
        assert created["queues"] == ["a", "b"] and created["permissions"] == ["submit", "read"]
        assert created["rate_limits"] == {"submit": {"rate": 100.0, "burst": 200}}
        listed = tq_cli(b, admin_key, "-o", "json", "keys", "list")
        assert listed.returncode == 0, listed.stderr
        keys = {k["name"]: k for k in json.loads(listed.stdout)}
        assert sorted(keys) == ["bootstrap", "ci"] and created["secret"] not in listed.stdout
        assert keys["ci"]["expires_at"] is not None and keys["ci"]["revoked_at"] is None
        # The new key works, then stops working once revoked.
        assert tq_cli(b, created["secret"], "stats").returncode == 0
        revoked = tq_cli(b, admin_key, "keys", "revoke", created["id"])
        assert revoked.returncode == 0 and f"revoked {created['id']}" in revoked.stdout
        refused = tq_cli(b, created["secret"], "stats")
        assert refused.returncode == 2 and "[UNAUTHENTICATED]" in refused.stderr
        denied = tq_cli(b, None, "keys", "list")
        assert denied.returncode == 2 and "no API key given" in denied.stderr


@tq.task
def triple(x: int) -> int:
    return 3 * x


def test_task_functions_submit_through_a_default_client_presenting_tq_api_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    admin_key = new_api_key()
    with BrokerProcess(tmp_path / "data", api_key=admin_key) as b:
        monkeypatch.setenv("TQ_BROKER_URL", b.url)
        monkeypatch.setenv("TQ_API_KEY", admin_key)
        tq.set_default_client(None)
        try:
            handle = triple.submit(2)
            assert handle.status().task_type == triple.name
            handle.client.close()
        finally:
            tq.set_default_client(None)


def test_requests_pipelined_behind_hello_wait_for_the_key_and_are_served_in_order(
    broker: BrokerProcess, admin_key: str
) -> None:
    async def main() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", broker.port)
        hello = RawConn(reader, writer, api_key=admin_key).cc.hello()
        spec = TaskSpec(task_type="t")
        pipelined = [encode(SubmitTask(request_id=r, tasks=[spec])) for r in (11, 12)]
        writer.write(hello + b"".join(pipelined) + encode(GetStats(request_id=13)))
        decoder, got = FrameDecoder(), list[Any]()
        async with asyncio.timeout(10):
            while len(got) < 4:
                data = await reader.read(65536)
                assert data, "the broker closed the connection"
                got += decoder.feed(data)
        assert isinstance(got[0], Welcome)
        replies = {m.request_id: m for m in got[1:]}
        assert isinstance(replies[11], SubmitReply) and isinstance(replies[12], SubmitReply)
        # Served in order: the stats saw both submits (their replies wait for durability, so
        # the stats reply may arrive first).
        stats = replies[13]
        assert isinstance(stats, StatsReply) and stats.stats.pending == 2
        writer.close()

    asyncio.run(main())
