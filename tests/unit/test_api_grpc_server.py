"""The gRPC front door in process, in a uvloop loop as in the broker: grpc.aio serves and
stops there, a busy port is one ConfigError, errors carry their stable code, the generated
code matches the schema and every RPC of the schema is implemented."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
import uvloop
from google.protobuf import descriptor_pb2
from grpc_health.v1 import health_pb2

from tq.api._pb import tq_pb2 as pb
from tq.api.grpc import GrpcServer
from tq.api.grpc_service import ERROR_CODE_KEY, LEADER_KEY, TaskQueueService
from tq.broker.access import Principal
from tq.broker.service import BrokerService
from tq.config import load
from tq.core.machine import Machine
from tq.errors import ConfigError, ErrorCode, NotFoundError, NotLeaderError, TqError
from tq.storage import MemoryStore

ANYONE = Principal.ANYONE

pytestmark = pytest.mark.timeout(60)

REPO = Path(__file__).resolve().parents[2]


def health_check(channel: grpc.aio.Channel) -> Awaitable[health_pb2.HealthCheckResponse]:
    # The typeshed HealthStub declares no methods: call the standard method by its path.
    check = channel.unary_unary(
        "/grpc.health.v1.Health/Check",
        request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
        response_deserializer=health_pb2.HealthCheckResponse.FromString,
    )
    return check(health_pb2.HealthCheckRequest(), timeout=10)


Body = Callable[[BrokerService, grpc.aio.Channel, int], Awaitable[None]]


def serve(body: Body) -> None:
    """Run ``body`` against a GrpcServer in a uvloop loop, the broker's kind of loop."""

    async def main() -> None:
        assert isinstance(asyncio.get_running_loop(), uvloop.Loop)
        settings = load(env={}, overrides={"api.grpc_port": 0})
        service = BrokerService(settings, MemoryStore(), Machine())
        server = GrpcServer(service, settings)
        bound = await server.start()
        try:
            async with (
                asyncio.timeout(30),
                grpc.aio.insecure_channel(f"127.0.0.1:{bound}") as channel,
            ):
                await body(service, channel, bound)
        finally:
            async with asyncio.timeout(10):
                await server.stop()
            await service.commit.close()

    uvloop.run(main())


def test_grpc_aio_serves_in_a_uvloop_loop() -> None:
    async def body(service: BrokerService, channel: grpc.aio.Channel, port: int) -> None:
        submit = channel.unary_unary(
            "/tq.v1.TaskQueue/SubmitTask",
            request_serializer=pb.SubmitTaskRequest.SerializeToString,
            response_deserializer=pb.SubmitTaskResponse.FromString,
        )
        spec = pb.TaskSpec(task_type="echo", payload=b"p")
        replies = await asyncio.gather(
            *(submit(pb.SubmitTaskRequest(task=spec), timeout=10) for _ in range(50))
        )
        assert len({r.id for r in replies}) == 50
        assert service.stats(ANYONE).pending == 50
        reply = await health_check(channel)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING

    serve(body)


def test_health_turns_not_serving_when_storage_fails() -> None:
    async def body(service: BrokerService, channel: grpc.aio.Channel, port: int) -> None:
        service.failed = OSError("disk gone")
        reply = await health_check(channel)
        assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING

    serve(body)


def test_a_second_server_on_the_same_port_is_one_config_error_naming_it() -> None:
    # gRPC sets SO_REUSEPORT unless told not to: two brokers would then share a port.
    async def body(service: BrokerService, channel: grpc.aio.Channel, port: int) -> None:
        settings = load(env={}, overrides={"api.grpc_port": port})
        with pytest.raises(ConfigError, match=f"api.grpc_port: cannot listen on 127.0.0.1:{port}"):
            await GrpcServer(service, settings).start()

    serve(body)


class RecordingContext:
    """The part of a ServicerContext that an aborting RPC uses."""

    def __init__(self) -> None:
        self.aborted: tuple[grpc.StatusCode, str, Any] | None = None

    def done(self) -> bool:
        return False

    async def abort(self, code: grpc.StatusCode, details: str, trailing_metadata: Any) -> None:
        self.aborted = (code, details, trailing_metadata)
        raise grpc.aio.AbortError


def abort_of(error: Exception) -> tuple[grpc.StatusCode, str, Any]:
    from tq.api.grpc_service import _guard

    async def fail() -> None:
        raise error

    ctx = RecordingContext()
    with pytest.raises(grpc.aio.AbortError):
        asyncio.run(_guard(ctx, "Test", fail()))  # type: ignore[arg-type]
    assert ctx.aborted is not None
    return ctx.aborted


@pytest.mark.parametrize("code", list(ErrorCode), ids=lambda c: c.name)
def test_every_error_code_becomes_a_real_status_with_its_number(code: ErrorCode) -> None:
    status, details, metadata = abort_of(TqError("bad thing", code))
    assert status not in (grpc.StatusCode.UNKNOWN, grpc.StatusCode.OK)
    assert "bad thing" in details
    assert metadata == ((ERROR_CODE_KEY, str(int(code))),)


def test_a_bug_is_internal_without_a_traceback(caplog: pytest.LogCaptureFixture) -> None:
    status, details, metadata = abort_of(KeyError("secret"))
    assert (status, metadata) == (grpc.StatusCode.INTERNAL, ((ERROR_CODE_KEY, "9000"),))
    assert "secret" not in details
    assert "Traceback" not in details
    assert "grpc.crashed method=Test" in caplog.text
    assert abort_of(NotFoundError("no task"))[0] == grpc.StatusCode.NOT_FOUND


def test_not_leader_is_unavailable_with_the_leader_in_a_trailer() -> None:
    status, _, metadata = abort_of(NotLeaderError("not applied", leader="10.0.0.2:7420"))
    assert status == grpc.StatusCode.UNAVAILABLE
    assert metadata == ((ERROR_CODE_KEY, "6000"), (LEADER_KEY, "10.0.0.2:7420"))
    # No leader known (an election): no trailer, rather than an empty one.
    assert abort_of(NotLeaderError("not applied"))[2] == ((ERROR_CODE_KEY, "6000"),)


def test_every_rpc_of_the_schema_is_implemented() -> None:
    service = pb.DESCRIPTOR.services_by_name["TaskQueue"]
    names = [m.name for m in service.methods]
    assert names
    assert [n for n in names if n not in vars(TaskQueueService)] == []


def test_the_committed_generated_code_matches_the_schema(tmp_path: Path) -> None:
    # Compares the schema itself, not the generated text, which varies with grpcio-tools'
    # version; `scripts/gen-proto --check` compares the text.
    pytest.importorskip("grpc_tools")
    out = tmp_path / "set.pb"
    protoc = [sys.executable, "-m", "grpc_tools.protoc", f"-I{REPO / 'proto'}"]
    done = subprocess.run(
        [*protoc, f"--descriptor_set_out={out}", "tq/v1/tq.proto"],
        capture_output=True, text=True, timeout=60, check=False, cwd=REPO,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    [fresh] = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file
    for message in fresh.message_type:  # generated Python code leaves json_name out
        for field in [*message.field, *(f for n in message.nested_type for f in n.field)]:
            field.ClearField("json_name")
    committed = descriptor_pb2.FileDescriptorProto.FromString(pb.DESCRIPTOR.serialized_pb)
    assert committed == fresh, "stale generated code: run scripts/gen-proto"
