"""A broker with a certificate serves TLS on every door: a verified connection on each (TCP with
the Python client and a worker process, REST over https, WebSocket over wss, gRPC with TLS
credentials, metrics over https), with certificates made in the test."""

from __future__ import annotations

import asyncio
import json
import signal
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest
from websockets.asyncio.client import connect

from tests.integration.cli_procs import child_env, free_port, run_tq, stop, wait_for
from tests.integration.tls_files import Certs, make_certs
from tq import AsyncClient, Client, TlsConfig
from tq.api._pb import tq_pb2 as pb
from tq.api._pb.tq_pb2_grpc import TaskQueueStub
from tq.testing import BrokerProcess

pytestmark = pytest.mark.timeout(120)
T = 10.0


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory, certs: Certs) -> Iterator[BrokerProcess]:
    with BrokerProcess(tmp_path_factory.mktemp("tls") / "data", tls=certs.broker()) as b:
        yield b


def verified(certs: Certs) -> ssl.SSLContext:
    """What an https/wss client verifies the broker with: our CA, host name checked."""
    return ssl.create_default_context(cafile=str(certs.ca))


def test_the_broker_url_is_tqs_and_its_client_settings_name_the_ca(
    broker: BrokerProcess, certs: Certs
) -> None:
    assert broker.url.startswith("tqs://127.0.0.1:")
    assert broker.client_tls() == TlsConfig(ca_file=certs.ca)


def test_a_task_submitted_over_tqs_is_run_by_a_worker_over_tqs(
    broker: BrokerProcess, certs: Certs, tmp_path: Path
) -> None:
    log = tmp_path / "worker.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [
                sys.executable, "-m", "tq", "--url", broker.url,
                "--set", f"worker.tls_ca_file={certs.ca}",
                "worker", "tq.worker.examples", "--queues", "tls",
            ],
            stdout=out, stderr=subprocess.STDOUT, env=child_env(),
        )  # fmt: skip
        try:
            with Client(broker.url, tls=broker.client_tls()) as client:
                task_id = client.submit("echo", b"over tls", queue="tls")
                assert client.result(task_id, timeout=30) == b"over tls"
                assert any(w.alive for w in client.workers())
        finally:
            stop(proc)
    assert "Traceback" not in log.read_text()


def test_the_async_client_takes_an_ssl_context_of_its_own(
    broker: BrokerProcess, certs: Certs
) -> None:
    async def go() -> None:
        async with AsyncClient(broker.url, tls=verified(certs)) as client:
            task_id = await client.submit("echo", b"x", queue="ctx")
            assert (await client.status(task_id)).queue == "ctx"

    asyncio.run(asyncio.wait_for(go(), 30))


def test_rest_is_served_over_https_verified_against_the_ca(
    broker: BrokerProcess, certs: Certs
) -> None:
    base = f"https://127.0.0.1:{broker.ports['rest_port']}"
    with httpx.Client(base_url=base, verify=verified(certs), timeout=T) as http:
        created = http.post("/v1/tasks", json={"task_type": "echo", "queue": "rest"})
        assert created.status_code == 201, created.text
        task = http.get(f"/v1/tasks/{created.json()['id']}").json()
        assert task["queue"] == "rest"
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(f"{base}/v1/stats", verify=ssl.create_default_context(), timeout=T)


def test_plain_http_to_the_tls_rest_port_gets_no_answer(broker: BrokerProcess) -> None:
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{broker.ports['rest_port']}/v1/stats", timeout=T)


def test_the_websocket_is_served_over_wss(broker: BrokerProcess, certs: Certs) -> None:
    url = f"wss://127.0.0.1:{broker.ports['rest_port']}/ws"

    async def go() -> None:
        async with connect(url, ssl=verified(certs), proxy=None, open_timeout=T) as ws:
            await ws.send(json.dumps({"op": "ping"}))
            reply = json.loads(await asyncio.wait_for(ws.recv(), T))
            assert reply["type"] == "pong"

    asyncio.run(asyncio.wait_for(go(), 30))


def test_grpc_is_served_with_tls_credentials(broker: BrokerProcess, certs: Certs) -> None:
    credentials = grpc.ssl_channel_credentials(root_certificates=certs.ca.read_bytes())
    target = f"127.0.0.1:{broker.ports['grpc_port']}"
    with grpc.secure_channel(target, credentials) as channel:
        stub = TaskQueueStub(channel)
        spec = pb.TaskSpec(task_type="echo", queue="grpc", payload=b"g")
        reply = stub.SubmitTask(pb.SubmitTaskRequest(task=spec), timeout=T)
        task = stub.GetTask(pb.GetTaskRequest(id=reply.id), timeout=T)
        assert task.queue == "grpc"
    with grpc.insecure_channel(target) as plain:
        with pytest.raises(grpc.RpcError) as caught:
            TaskQueueStub(plain).GetTask(pb.GetTaskRequest(id=reply.id), timeout=T)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


def test_metrics_are_served_over_https(broker: BrokerProcess, certs: Certs) -> None:
    url = f"https://127.0.0.1:{broker.ports['metrics_port']}/metrics"
    scraped = httpx.get(url, verify=verified(certs), timeout=T)
    assert scraped.status_code == 200
    assert "tq_tasks_pending" in scraped.text


def test_the_broker_logs_that_tls_is_on(broker: BrokerProcess) -> None:
    wait_for(
        "the listening line",
        lambda: "tls=on client_certs=none" in broker.log_path.read_text() or None,
    )


def test_tq_dev_runs_its_worker_over_tls_when_the_broker_has_a_certificate(
    certs: Certs, tmp_path: Path
) -> None:
    port = free_port()
    url = f"tqs://127.0.0.1:{port}"
    sets = [
        f"broker.port={port}", f"auth.tls_cert_file={certs.cert}",
        f"auth.tls_key_file={certs.key}", f"worker.tls_ca_file={certs.ca}",
    ]  # fmt: skip
    argv = [sys.executable, "-m", "tq", *(a for s in sets for a in ("--set", s)), "dev"]
    log = tmp_path / "dev.log"
    with log.open("wb") as out:
        dev = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, env=child_env(), cwd=tmp_path
        )
        try:

            def one_worker() -> bool | None:
                assert dev.poll() is None, log.read_text()
                done = run_tq("--set", sets[-1], "-o", "json", "stats", url=url)
                return (done.returncode == 0 and json.loads(done.stdout)["workers"] >= 1) or None

            wait_for("tq dev's worker over TLS", one_worker, timeout=60)
        finally:
            stop(dev, signal.SIGINT, timeout=60)
    assert f"  TCP        {url}\n" in log.read_text()
