"""The test side of following the leader: a driver that knows every broker's URL and sends
each call to the node that leads, and a workload (a submitter and worker loops on it) that
records what it saw in a ``History``. It needs nothing from the client but one-URL calls.

Rules of the driver. A NOT_LEADER refusal changed nothing: the call goes to the leader it
names, else to the next node. Any other unavailability (refused or lost connection, timeout)
moves on too, but the call's outcome is unknown: the caller is told (``uncertain``), so a
submit is retried with the same idempotency key and a report is marked as possibly applied."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import random
import re
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from tests.cluster.history import Claim, History, Result, Views, result_bytes
from tq.client import AsyncClient
from tq.core.ids import format_task_id
from tq.errors import ErrorCode, TqError, UnavailableError
from tq.protocol import ClaimedTask, TaskInfo, TaskOutcome

T = TypeVar("T")

QUEUE = "chaos"
#: How long one call may take on one node before the driver tries another.
CALL_TIMEOUT_S = 1.5
#: Pause between two rounds over every node (none leads right now).
ROUND_PAUSE_S = 0.05


class Uncertain(Exception):  # noqa: N818 (an outcome, not a failure of the test)
    """The call went unanswered on some node: it may have been applied there."""


class LeaderDriver:
    """One client per broker URL (``reconnect=False``: a dead node fails fast, and its client
    is replaced on the next try); ``call`` runs on whichever node leads."""

    def __init__(self, urls: list[str], name: str, history: History) -> None:
        self.urls = urls
        self.name = name
        self.history = history
        self.current = 0
        self._clients: dict[int, AsyncClient] = {}

    def _client(self, i: int) -> AsyncClient:
        client = self._clients.get(i)
        if client is None:
            client = self._clients[i] = AsyncClient(
                self.urls[i], name=self.name, connect_timeout=CALL_TIMEOUT_S,
                request_timeout=CALL_TIMEOUT_S, reconnect=False, client_kind="worker",
            )  # fmt: skip
        return client

    async def _drop(self, i: int) -> None:
        client = self._clients.pop(i, None)
        if client is not None:
            await client.close()

    async def call(
        self, fn: Callable[[AsyncClient], Awaitable[T]], deadline: float
    ) -> tuple[T, str, bool]:
        """``fn`` on the leader: (its reply, the node's URL, whether an earlier attempt's
        outcome is unknown). TimeoutError past ``deadline`` (monotonic)."""
        uncertain = False
        while time.monotonic() < deadline:
            for _ in range(len(self.urls)):
                i = self.current
                client = self._client(i)
                try:
                    reply = await fn(client)
                    # The node that answered: the client follows a leader a refusal names.
                    return reply, client.url, uncertain
                except UnavailableError as e:
                    if e.code == ErrorCode.NOT_LEADER:  # nothing was applied
                        self.history.error("NOT_LEADER")
                        self.current = self._index(_leader_named(e), i)
                        continue
                    self.history.error(ErrorCode(e.code).name if e.code else "UNAVAILABLE")
                    uncertain = True
                    await self._drop(i)
                    self.current = (i + 1) % len(self.urls)
                if time.monotonic() >= deadline:
                    break
            await asyncio.sleep(ROUND_PAUSE_S)
        raise TimeoutError(f"{self.name}: no node took the call before its deadline")

    def _index(self, leader: str | None, refused_by: int) -> int:
        """The node a NOT_LEADER refusal names, else the one after it."""
        for i, url in enumerate(self.urls):
            if leader and url.endswith(leader):
                return i
        return (refused_by + 1) % len(self.urls)

    async def close(self) -> None:
        for i in list(self._clients):
            await self._drop(i)


def _leader_named(e: UnavailableError) -> str | None:
    """The leader's address a NOT_LEADER refusal names: ``NotLeaderError.leader`` where the
    client raises it, else the refusal's text (``...; the leader is host:port``)."""
    leader = getattr(e, "leader", None)
    if isinstance(leader, str):
        return leader
    found = re.search(r"the leader is ([\w.\-]+:\d+)", e.message)
    return found.group(1) if found else None


class LoopThread:
    """An event loop on a thread of its own: ``run`` a coroutine to its end (bounded), or
    ``spawn`` it and take its result later; ``stop`` ends the loop."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def spawn(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(self, coro: Coroutine[Any, Any, T], timeout_s: float = 30.0) -> T:
        return self.spawn(coro).result(timeout_s)

    def stop(self) -> None:
        async def cancel_rest() -> None:
            rest = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in rest:
                task.cancel()
            await asyncio.gather(*rest, return_exceptions=True)

        self.run(cancel_rest(), 10.0)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10.0)
        assert not self._thread.is_alive(), "an event loop thread did not stop"
        self.loop.close()


class Workload:
    """A submitter and ``workers`` worker loops on the cluster at ``urls``, on an event loop
    thread of their own while the test injects faults; ``stop()`` ends them."""

    def __init__(
        self, urls: list[str], history: History, *, workers: int = 2, renew_id: bool = True
    ) -> None:
        """``renew_id``: a worker whose claim's outcome is unknown goes on under a new id
        (``_Worker.renew`` says why; False shows what happens without it)."""
        self.urls = urls
        self.history = history
        self.workers = workers
        self.renew_id = renew_id
        self._thread = LoopThread("tq-chaos-workload")
        self._stop = asyncio.Event()
        self._submitting = True
        self._stopped = False
        self._main: concurrent.futures.Future[list[BaseException | None]] | None = None

    def start(self) -> Workload:
        self._main = self._thread.spawn(self._run())
        return self

    async def _run(self) -> list[BaseException | None]:
        loops = [self._submitter(), *(self._worker(f"w{i}") for i in range(self.workers))]
        return list(await asyncio.gather(*loops, return_exceptions=True))

    def stop_submitting(self) -> None:
        """Submit no more; workers carry on (to drain what was acknowledged)."""
        self._submitting = False

    def stop(self, timeout_s: float = 30.0) -> None:
        """End every loop (again: nothing); a loop that failed fails the test here."""
        if self._stopped:
            return
        self._stopped = True
        self._submitting = False
        self._thread.loop.call_soon_threadsafe(self._stop.set)
        try:
            outcomes = [] if self._main is None else self._main.result(timeout_s)
        finally:
            self._thread.stop()
        failures = [o for o in outcomes if isinstance(o, BaseException)]
        assert not failures, f"workload loops failed: {failures!r}"

    # ------------------------------------------------------------------ submitter

    async def _submitter(self) -> None:
        driver = LeaderDriver(self.urls, "tq-chaos-submitter", self.history)
        try:
            n = 0
            while self._submitting and not self._stop.is_set():
                n += 1
                await self.submit_once(driver, f"k{n}-{uuid.uuid4().hex[:8]}")
                await asyncio.sleep(0.02)  # a steady stream, not a flood, on 2 shared cores
        finally:
            await driver.close()

    async def submit_once(self, driver: LeaderDriver, key: str) -> None:
        """Submit one task until acknowledged, always with the same idempotency key."""
        rec = self.history.submitted(key, time.monotonic())
        deadline = time.monotonic() + 30.0

        async def submit(client: AsyncClient) -> str:
            rec.attempts += 1
            return await client.submit("chaos", key.encode(), queue=QUEUE, idempotency_key=key)

        task_id, _, _ = await driver.call(submit, deadline)
        self.history.acked(rec, task_id)

    # ------------------------------------------------------------------ workers

    async def _worker(self, name: str) -> None:
        driver = LeaderDriver(self.urls, f"tq-chaos-{name}", self.history)
        beats = LeaderDriver(self.urls, f"tq-chaos-{name}-beat", self.history)
        me = _Worker(name)
        beat = asyncio.create_task(self._heartbeats(beats, me))
        rng = random.Random(name)
        try:
            while not self._stop.is_set():
                sent = time.monotonic()
                worker_id = me.id
                try:
                    ask = functools.partial(_claim, worker_id=worker_id)
                    tasks, node, uncertain = await driver.call(ask, sent + 10.0)
                except TimeoutError:
                    tasks, node, uncertain = [], "", True
                received = time.monotonic()
                for t in tasks:
                    key = t.payload.decode()
                    task_id = format_task_id(t.id)
                    got = Claim(task_id, t.lease_token, node, worker_id, sent, received, key)
                    self.history.claimed(got)
                if uncertain and self.renew_id:
                    me.renew()
                # Every task held is listed in the heartbeats, started or not (as tq.worker
                # does): only listed leases are extended.
                me.running.update(t.id for t in tasks)
                for t in tasks:
                    await asyncio.sleep(rng.uniform(0.0, 0.02))  # the task's work
                    await self._report(driver, t)
                    me.running.discard(t.id)
        finally:
            beat.cancel()
            await asyncio.gather(beat, return_exceptions=True)
            await driver.close()
            await beats.close()

    async def _report(self, driver: LeaderDriver, task: ClaimedTask) -> None:
        outcome = TaskOutcome(
            task_id=task.id, lease_token=task.lease_token, ok=True,
            result=result_bytes(task.lease_token),
        )  # fmt: skip
        sent = time.monotonic()
        try:
            codes, node, uncertain = await driver.call(lambda c: c.report([outcome]), sent + 10.0)
            code: int | None = codes[0]
        except TimeoutError:
            code, node, uncertain = None, "", True
        self.history.reported(
            Result(format_task_id(task.id), task.lease_token, node, sent, code, uncertain)
        )

    async def _heartbeats(self, driver: LeaderDriver, me: _Worker) -> None:
        """Keep the worker alive (and its leases extended) as tq.worker does."""
        while True:
            worker_id, running = me.id, sorted(me.running)
            # A missed beat is tried again next time; it only shortens the leases.
            with contextlib.suppress(TimeoutError, TqError):
                beat = functools.partial(_beat, worker_id=worker_id, running=running)
                await driver.call(beat, time.monotonic() + 2.0)
            await asyncio.sleep(0.5)


async def _claim(client: AsyncClient, worker_id: str) -> list[ClaimedTask]:
    return await client.claim(worker_id, [QUEUE], max_tasks=4, wait=0.3)


async def _beat(client: AsyncClient, worker_id: str, running: list[bytes]) -> None:
    await client.heartbeat(worker_id, cpu_percent=0.0, memory_rss=0, running=running)


class _Worker:
    """A worker loop's identity: ``id`` changes when a claim's outcome was unknown."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.id = name
        self.running: set[bytes] = set()
        self._incarnation = 0

    def renew(self) -> None:
        """Go on under a new worker id. A claim that was lost with its reply left tasks leased
        to the old id, which no one would ever report. (A heartbeat extends only the leases
        it lists, so they return when their lease ends anyway; a new id also has the old one
        reaped, and ``renew_id=False`` runs without it.)"""
        self._incarnation += 1
        self.id = f"{self.name}.{self._incarnation}"


async def node_view(url: str, timeout_s: float = 5.0) -> dict[str, TaskInfo]:
    """Every task the node at ``url`` holds, read from that node (a follower serves reads)."""
    client = AsyncClient(url, request_timeout=timeout_s, name="tq-chaos-checker")
    try:
        out: dict[str, TaskInfo] = {}
        cursor: bytes | None = None
        while True:
            page, cursor = await client.list_tasks(limit=1000, cursor=cursor)
            out.update((format_task_id(t.id), t) for t in page)
            if cursor is None:
                return out
    finally:
        await client.close()


async def node_views(urls: dict[str, str]) -> Views:
    """``node_view`` of each named node at once."""
    views = await asyncio.gather(*(node_view(url) for url in urls.values()))
    return dict(zip(urls, views, strict=True))
