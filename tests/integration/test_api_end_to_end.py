"""Issue 5's end-to-end check across the front doors at once: a task submitted over REST is
run by a real worker process, and its completion arrives both on a WebSocket subscription
and on a gRPC ``WatchTasks`` stream, each opened before the submit."""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from websockets.asyncio.client import connect

from tests.integration.cli_procs import worker
from tq.api._pb import tq_pb2 as pb
from tq.api._pb.tq_pb2_grpc import TaskQueueStub
from tq.testing import BrokerProcess

pytestmark = pytest.mark.timeout(120)
COMPLETED = pb.TaskState.Value("TASK_STATE_COMPLETED")

ALL_DOORS: dict[str, object] = {
    "api.rest_enabled": True, "api.websocket_enabled": True, "api.grpc_enabled": True,
    "monitoring.prometheus_enabled": True,
}  # fmt: skip


def test_a_rest_submit_completes_on_a_worker_and_on_both_the_websocket_and_grpc_stream(
    tmp_path: Path,
) -> None:
    queue = f"e2e-{uuid.uuid4().hex[:8]}"
    with BrokerProcess(tmp_path / "d", settings=ALL_DOORS) as b:
        rest, grpc_port = b.ports["rest_port"], b.ports["grpc_port"]
        grpc_seen: list[pb.TaskEvent] = []
        grpc_ready = threading.Event()
        channel = grpc.insecure_channel(f"127.0.0.1:{grpc_port}")
        call = TaskQueueStub(channel).WatchTasks(pb.WatchTasksRequest(queues=[queue]), timeout=90)

        def read_stream() -> None:
            assert isinstance(call, grpc.Call)
            call.initial_metadata()  # the subscription is in place once headers arrive
            grpc_ready.set()
            for message in call:
                grpc_seen.extend(message.events)
                if any(e.state == COMPLETED for e in message.events):
                    return

        reader = threading.Thread(target=read_stream, daemon=True)
        reader.start()
        assert grpc_ready.wait(30), "the gRPC watch never started"

        async def scenario() -> dict[str, Any]:
            async with connect(f"ws://127.0.0.1:{rest}/ws") as ws:
                await ws.send(json.dumps({"op": "subscribe", "queues": [queue]}))
                json.loads(await asyncio.wait_for(ws.recv(), 10))  # the "subscribed" ack
                async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{rest}") as http:
                    r = await http.post(
                        "/v1/tasks", json={"task_type": "echo", "queue": queue, "payload": "hi"}
                    )
                    assert r.status_code == 201, r.text
                    task_id = r.json()["id"]
                async with asyncio.timeout(60):
                    while True:
                        msg = json.loads(await ws.recv())
                        if msg.get("task_id") == task_id and msg.get("state") == "completed":
                            return {"id": task_id, **msg}

        with worker(b.url, "tq.worker.examples", f"w-{queue}", tmp_path / "w.log", queues=queue):
            done = asyncio.run(scenario())
        reader.join(60)
        channel.close()
    assert done["result"] == "hi"
    completed = [e for e in grpc_seen if e.state == COMPLETED]
    assert [e.id for e in completed] == [done["id"]]
    assert completed[0].result == b"hi"
