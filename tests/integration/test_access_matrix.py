"""The access matrix: every operation of every door (TCP, REST, WebSocket, gRPC, metrics)
called as every kind of caller — no key, a malformed one, a wrong one, a revoked one, an
expired one, a key of each permission, and an admin key limited to another queue — gets
exactly what the one rule in ``tq.broker.service`` says: permitted calls are done, the others
are refused with UNAUTHENTICATED (HTTP 401, gRPC UNAUTHENTICATED, NACK 5000, WebSocket close
4401) or PERMISSION_DENIED (403, PERMISSION_DENIED, NACK 5001, an error message), and a
refused call changes nothing (tasks, keys and workers compared before and after).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest

from tests.integration.access_doors import (
    OPS,
    PERMISSION_DENIED,
    UNAUTHENTICATED,
    Doors,
    Op,
    Setup,
    bearer,
)
from tq.testing import BrokerProcess, new_api_key

pytestmark = pytest.mark.timeout(300)

SETTINGS: dict[str, object] = {
    "api.rest_enabled": True, "api.websocket_enabled": True, "api.grpc_enabled": True,
    "monitoring.prometheus_enabled": True, "auth.protect_metrics": True,
    # The matrix compares snapshots before and after each refused call for about a minute on
    # a loaded machine: no lease may expire and no worker be reaped meanwhile.
    "broker.lease_duration_s": 900, "broker.heartbeat_interval_s": 120,
}  # fmt: skip
ADMIN = new_api_key()
#: Callers a key cannot be verified for: refused on every operation.
NOBODY = ("no key", "malformed", "wrong", "revoked", "expired")
KEYED = ("submit", "read", "work", "admin", "admin of another queue")


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    data = tmp_path_factory.mktemp("access") / "d"
    with BrokerProcess(data, settings=SETTINGS, api_key=ADMIN) as b:
        yield b


def expected(caller: str, op: Op) -> int:
    if caller in NOBODY:
        return UNAUTHENTICATED
    if caller == "admin of another queue":
        return 0 if op.scoped_ok else PERMISSION_DENIED
    return 0 if caller in (op.permission, "admin") else PERMISSION_DENIED


async def callers(setup: Setup) -> dict[str, str | None]:
    """A secret for every kind of caller (made by the admin over REST)."""
    secrets: dict[str, str | None] = {"no key": None, "malformed": "tq_not-a-key"}
    for permission in ("submit", "read", "work", "admin"):
        secrets[permission] = (await setup.key(permission, [permission]))["secret"]
    other = await setup.key("other", ["admin"], queues=[f"other-{setup.queue}"])
    secrets["admin of another queue"] = other["secret"]
    read = secrets["read"]
    assert read is not None
    secrets["wrong"] = read[:16] + ("A" if read[16] != "A" else "B") + read[17:]
    revoked = await setup.key("revoked", ["admin"])
    r = await setup.http.delete(f"/v1/keys/{revoked['key']['id']}")
    assert r.status_code == 200, r.text
    secrets["revoked"] = revoked["secret"]
    expired = await setup.key("expired", ["admin"], expires_in=1)
    secrets["expired"] = expired["secret"]
    async with asyncio.timeout(10):  # until the broker's clock has passed its expiry
        while (
            await setup.http.get("/v1/stats", headers=bearer(expired["secret"]))
        ).status_code != 401:
            await asyncio.sleep(0.05)
    return secrets


def test_every_door_permits_exactly_what_the_key_allows_and_refusals_change_nothing(
    broker: BrokerProcess,
) -> None:
    async def main() -> dict[tuple[str, str, str], tuple[int, int]]:
        queue = f"access-{uuid.uuid4().hex[:8]}"
        setup = Setup(broker.ports, ADMIN, queue)
        wrong: dict[tuple[str, str, str], tuple[int, int]] = {}
        try:
            secrets = await callers(setup)
            for caller, secret in secrets.items():
                doors = Doors(broker.ports, secret, queue)
                try:
                    for op in OPS:
                        want = expected(caller, op)
                        for door in op.doors:
                            target = await setup.target(op.target)
                            before = await setup.snapshot() if want else None
                            got = await doors.call(door, op.name, target)
                            if got != want:
                                wrong[(caller, op.name, door)] = (got, want)
                            elif before is not None:
                                assert await setup.snapshot() == before, (caller, op, door)
                finally:
                    await doors.close()
        finally:
            await setup.close()
        return wrong

    t0 = time.monotonic()
    wrong = asyncio.run(main())
    assert not wrong, "\n".join(f"{k}: got {g}, want {w}" for k, (g, w) in sorted(wrong.items()))
    assert time.monotonic() - t0 < 240


def test_health_and_documents_stay_open_with_auth_on(broker: BrokerProcess) -> None:
    base = f"http://127.0.0.1:{broker.ports['rest_port']}"
    for path in ("/healthz", "/readyz", "/openapi.json", "/docs"):
        assert httpx.get(base + path).status_code == 200, path
    refused = httpx.get(base + "/v1/stats")
    assert refused.status_code == 401
    assert refused.headers["WWW-Authenticate"] == "Bearer"
    assert refused.json()["error"] == {
        "code": 5000, "name": "UNAUTHENTICATED",
        "message": "no API key given: this broker requires one",
    }  # fmt: skip
