"""What the TCP door's first-byte check costs a TLS connection: connections per second (connect
plus TLS handshake, one at a time and many at once) through ``tq.broker.tcp_tls.TlsListener``
against a plain ``loop.create_server(ssl=...)`` with the same context, in one process on the
broker's event loop. Not a test: nothing here asserts a number.

    .venv/bin/python benchmarks/tls_accept_bench.py [--connections N] [--rounds N]
"""

from __future__ import annotations

import argparse
import asyncio
import ssl
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import trustme

from tq.broker.service import DoorStats
from tq.broker.tcp_tls import TlsListener, bind
from tq.eventloop import loop_factory


class Quiet(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport


def contexts(tmp: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1")
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    leaf.configure_cert(server)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    return server, client


async def rate(port: int, client: ssl.SSLContext, n: int, parallel: int) -> float:
    """Connections per second: ``n`` connect + handshake, ``parallel`` at a time."""
    loop = asyncio.get_running_loop()
    slots = asyncio.Semaphore(parallel)

    async def one() -> None:
        async with slots:
            transport, _ = await loop.create_connection(Quiet, "127.0.0.1", port, ssl=client)
            transport.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(n)))
    return n / (time.perf_counter() - t0)


async def direct(server: ssl.SSLContext) -> tuple[int, Callable[[], Awaitable[None]]]:
    srv = await asyncio.get_running_loop().create_server(Quiet, "127.0.0.1", 0, ssl=server)

    async def close() -> None:
        srv.close()

    return srv.sockets[0].getsockname()[1], close


async def sniffing(server: ssl.SSLContext) -> tuple[int, Callable[[], Awaitable[None]]]:
    sock = bind("127.0.0.1", 0)
    listener = TlsListener(
        [sock], server, Quiet, DoorStats(), handshake_timeout=10.0, max_handshaking=1000
    )
    listener.start()

    async def close() -> None:
        listener.close()
        await listener.wait_closed()

    return sock.getsockname()[1], close


async def main(n: int, rounds: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        server, client = contexts(Path(tmp))
    best: dict[tuple[str, int], float] = {}
    for _ in range(rounds):
        for name, start in (("create_server(ssl=)", direct), ("TlsListener", sniffing)):
            port, close = await start(server)
            for parallel in (1, 32):
                r = await rate(port, client, n, parallel)
                best[name, parallel] = max(best.get((name, parallel), 0.0), r)
            await close()
    print(f"connections={n} rounds={rounds} (best of rounds, TLS connections/s)")
    for parallel in (1, 32):
        base = best["create_server(ssl=)", parallel]
        ours = best["TlsListener", parallel]
        print(
            f"{parallel:>3} at a time: create_server(ssl=) {base:8,.0f}  "
            f"TlsListener {ours:8,.0f}  ({ours / base:.1%})"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        runner.run(main(args.connections, args.rounds))
