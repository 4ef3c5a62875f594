"""A fault-injecting TCP proxy between brokers and etcd, for partitions without root's
iptables: each broker gets one proxy per etcd member, and ``cut(i)`` stops every byte between
broker i and etcd (both ways, on open and new connections: nothing is closed, as in a network
partition) until ``heal(i)``, when the held bytes flow again. Runs on its own event loop thread."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import threading
from collections.abc import Coroutine
from typing import Any, Self

from tests.cluster.etcd_procs import free_ports

#: Bytes read at once from either side.
CHUNK = 64 * 1024


class _Link:
    """One broker's proxies: a gate that is open (set) unless the broker is cut off."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.gate.set()
        self.servers: list[asyncio.Server] = []
        self.tasks: set[asyncio.Task[Any]] = set()


class EtcdProxies:
    """``brokers`` x ``len(upstreams)`` proxies on 127.0.0.1; ``endpoints(i)`` are broker i's."""

    def __init__(self, upstreams: list[str], brokers: int) -> None:
        self.upstreams = [(h, int(p)) for h, _, p in (u.rpartition(":") for u in upstreams)]
        self.ports = [free_ports(len(upstreams)) for _ in range(brokers)]
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="tq-etcd-proxy")
        self._links: list[_Link] = []

    def endpoints(self, broker: int) -> list[str]:
        return [f"http://127.0.0.1:{port}" for port in self.ports[broker]]

    def _call(self, coro: Coroutine[Any, Any, None]) -> None:
        asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=10)

    def start(self) -> Self:
        self._thread.start()
        self._call(self._open())
        return self

    async def _open(self) -> None:
        for ports in self.ports:
            link = _Link()
            for port, upstream in zip(ports, self.upstreams, strict=True):
                server = await asyncio.start_server(
                    functools.partial(self._serve, link, upstream), "127.0.0.1", port
                )
                link.servers.append(server)
            self._links.append(link)

    async def _serve(
        self,
        link: _Link,
        upstream: tuple[str, int],
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        link.tasks.add(task)
        try:
            await link.gate.wait()  # a connection made while cut is held, not refused
            up_reader, up_writer = await asyncio.open_connection(*upstream)
        except (OSError, asyncio.CancelledError):
            writer.close()
            return
        try:
            await asyncio.gather(
                self._pump(link, reader, up_writer), self._pump(link, up_reader, writer)
            )
        finally:
            link.tasks.discard(task)
            for w in (writer, up_writer):
                w.close()

    @staticmethod
    async def _pump(link: _Link, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.CancelledError):
            while data := await src.read(CHUNK):
                await link.gate.wait()  # held while cut: delivered on heal, as TCP would
                dst.write(data)
                await dst.drain()
        with contextlib.suppress(OSError):
            dst.close()

    def cut(self, broker: int) -> None:
        self._loop.call_soon_threadsafe(self._links[broker].gate.clear)

    def heal(self, broker: int) -> None:
        self._loop.call_soon_threadsafe(self._links[broker].gate.set)

    def stop(self) -> None:
        async def close() -> None:
            for link in self._links:
                link.gate.set()
                for server in link.servers:
                    server.close()
                for task in list(link.tasks):
                    task.cancel()
                await asyncio.gather(*link.tasks, return_exceptions=True)

        with contextlib.suppress(TimeoutError):
            self._call(close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()
