"""API keys on the TCP door, against a real broker with auth on: every operation under every
kind of key (none, malformed, wrong, revoked, expired, each permission, a key of another
queue) succeeds exactly when the documented model permits it, and a refusal changes nothing."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.authrig import (
    OPS,
    Build,
    call,
    create_key,
    ok,
    permits,
    snapshot,
    until,
)
from tests.integration.rawconn import RawConn, read_nack_then_eof
from tq.errors import ErrorCode
from tq.protocol import GetStats, KeyList, KeyRevoke, KeySpec, Nack, encode
from tq.testing import BrokerProcess, new_api_key

pytestmark = pytest.mark.timeout(300)

ADMIN = new_api_key()
#: Keys by permission set and queue scope (None: every queue).
GRANTED: dict[str, tuple[frozenset[str], frozenset[str] | None]] = {
    "submit": (frozenset({"submit"}), None),
    "read": (frozenset({"read"}), None),
    "work": (frozenset({"work"}), None),
    "admin": (frozenset({"admin"}), None),
    "other-queue": (frozenset({"submit", "read", "work", "admin"}), frozenset({"elsewhere"})),
}
REFUSED = ("none", "malformed", "wrong", "revoked", "expired")


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    with BrokerProcess(tmp_path_factory.mktemp("auth") / "data", api_key=ADMIN) as b:
        yield b


@pytest.fixture(scope="module")
def secrets(broker: BrokerProcess) -> dict[str, str | None]:
    """The secret presented for each identity of the matrix."""

    async def make() -> dict[str, str | None]:
        admin = await RawConn.open(broker.port, api_key=ADMIN)
        out: dict[str, str | None] = {"none": None, "malformed": "tq_not-a-key"}
        for name, (perms, queues) in GRANTED.items():
            spec = KeySpec(
                name=name,
                permissions=sorted(perms),  # type: ignore[arg-type]
                queues=None if queues is None else sorted(queues),
            )
            _, out[name] = await create_key(admin, spec)
        key_id, _ = await create_key(admin, KeySpec(name="wrong", permissions=["admin"]))
        out["wrong"] = f"tq_{key_id}_{'A' * 43}"  # its id, another secret
        key_id, out["revoked"] = await create_key(
            admin, KeySpec(name="revoked", permissions=["admin"])
        )
        await ok(admin, lambda r: KeyRevoke(request_id=r, key_id=key_id))
        expires = time.time() + 1.0
        spec = KeySpec(name="expired", permissions=["admin"], expires_at=expires)
        _, out["expired"] = await create_key(admin, spec)
        await until("the key expired", lambda: time.time() > expires + 0.01)
        await admin.close()
        return out

    return asyncio.run(make())


async def refused_at_hello(port: int, secret: str | None, build: Build) -> Nack:
    """HELLO with ``secret`` and the request pipelined right behind it: the broker must NACK
    the HELLO and close without serving the request."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    raw = RawConn(reader, writer, api_key=secret)
    writer.write(raw.cc.hello() + encode(build(99)))
    nack = await read_nack_then_eof(reader)
    writer.close()
    return nack


@pytest.mark.parametrize("who", REFUSED)
def test_a_missing_or_bad_key_is_refused_at_hello_and_no_request_is_served(
    broker: BrokerProcess, secrets: dict[str, str | None], who: str
) -> None:
    async def main() -> None:
        admin = await RawConn.open(broker.port, api_key=ADMIN)
        for op in OPS:
            build = await op.prepare(admin)
            before = await snapshot(admin)
            nack = await refused_at_hello(broker.port, secrets[who], build)
            assert nack.code == ErrorCode.UNAUTHENTICATED, (who, op.name, nack)
            assert await snapshot(admin) == before, f"{who}: {op.name} changed state"
        await admin.close()

    asyncio.run(main())


@pytest.mark.parametrize("who", sorted(GRANTED))
def test_each_key_is_permitted_exactly_what_its_permissions_and_queues_allow(
    broker: BrokerProcess, secrets: dict[str, str | None], who: str
) -> None:
    perms, queues = GRANTED[who]

    async def main() -> None:
        admin = await RawConn.open(broker.port, api_key=ADMIN)
        conn = await RawConn.open(broker.port, api_key=secrets[who])
        for op in OPS:
            build = await op.prepare(admin)
            assert isinstance(build(1), op.request)
            before = await snapshot(admin)
            reply = await call(conn, build)
            if permits(perms, queues, op):
                assert isinstance(reply, op.reply), (who, op.name, reply)
            else:
                assert isinstance(reply, Nack), (who, op.name, reply)
                assert reply.code == ErrorCode.PERMISSION_DENIED, (who, op.name, reply)
                assert await snapshot(admin) == before, f"{who}: refused {op.name} changed state"
        await conn.close()
        await admin.close()

    asyncio.run(main())


def test_the_matrix_drives_every_request_type_but_hello() -> None:
    from tq.protocol.registry import REQUEST_CLASSES

    assert sorted(op.request.__name__ for op in OPS) == sorted(
        cls.__name__ for cls in REQUEST_CLASSES if cls.__name__ != "Hello"
    )


def test_keys_survive_a_broker_restart(tmp_path: Path) -> None:
    admin_key = new_api_key()
    data = tmp_path / "data"

    async def create(port: int) -> str:
        admin = await RawConn.open(port, api_key=admin_key)
        _, secret = await create_key(admin, KeySpec(name="ci", permissions=["read"]))
        await admin.close()
        return secret

    with BrokerProcess(data, api_key=admin_key) as b:
        secret = asyncio.run(create(b.port))
    # Started again without the bootstrap variable: the stored keys are what authenticates.
    with BrokerProcess(data, settings={"auth.enabled": "true", **_NO_HTTP}) as b:

        async def use() -> None:
            conn = await RawConn.open(b.port, api_key=secret)
            await ok(conn, lambda r: GetStats(request_id=r))
            await conn.close()
            admin = await RawConn.open(b.port, api_key=admin_key)
            keys = (await ok(admin, lambda r: KeyList(request_id=r))).keys
            assert sorted(k.name for k in keys) == ["bootstrap", "ci"]
            await admin.close()

        asyncio.run(use())


_NO_HTTP = {
    "api.rest_enabled": "false",
    "api.websocket_enabled": "false",
    "api.grpc_enabled": "false",
}
