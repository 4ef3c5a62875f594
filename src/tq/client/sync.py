"""Client: the blocking facade of AsyncClient, for code that has no event loop.

It owns a private event loop on a daemon thread and runs AsyncClient's coroutines there
(``run_coroutine_threadsafe``); every method is a one-line hand-off, so the two clients cannot
drift apart. Safe to share between threads: calls from many threads pipeline on one connection.
"""

from __future__ import annotations

import asyncio
import ssl
import threading
import weakref
from collections.abc import Coroutine, Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any, Literal, Self, TypeVar

from tq.client.bulk import ActionResult, BulkOutcome, ProgressCallback, TaskFilter
from tq.client.client import AsyncClient
from tq.client.control import WorkerDetail
from tq.client.specs import task_spec
from tq.client.subscription import Subscription
from tq.client.tls import TlsConfig
from tq.errors import UnavailableError
from tq.protocol import (
    MAX_ACT_TASKS,
    ClaimedTask,
    HeartbeatReply,
    KeyInfo,
    KeySpec,
    RegisterReply,
    RetrySpec,
    ScheduleInfo,
    ScheduleSpec,
    Stats,
    TaskEvent,
    TaskInfo,
    TaskOutcome,
    TaskSpec,
    WorkerInfo,
    WorkerOrderInfo,
)
from tq.protocol.records import ClusterStatus, LimitInfo, QueueState

T = TypeVar("T")


class _LoopThread:
    """An event loop running forever on a daemon thread until ``stop()``."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="tq-client", daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        if self.loop.is_closed():
            coro.close()
            raise UnavailableError("the client is closed")
        if threading.current_thread() is self.thread:
            coro.close()
            raise RuntimeError("a blocking tq.Client call from its own event loop would deadlock")
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result()
        except BaseException:
            future.cancel()  # e.g. KeyboardInterrupt: do not leave the call running
            raise

    def stop(self) -> None:
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()
        self.loop.close()

    def abandon(self) -> None:
        """Let the thread end (from a finalizer: no joining, the loop may be mid-call)."""
        if not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self.loop.stop)


class SyncSubscription:
    """Blocking iterator of task events; ``close()`` (or leaving ``with``) unsubscribes."""

    def __init__(self, runner: _LoopThread, subscription: Subscription) -> None:
        self._runner = runner
        self._sub = subscription

    def __iter__(self) -> Iterator[TaskEvent]:
        return self

    def __next__(self) -> TaskEvent:
        try:
            return self._runner.run(self._sub.__anext__())
        except StopAsyncIteration:
            raise StopIteration from None

    def close(self) -> None:
        self._runner.run(self._sub.aclose())

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class Client:
    """Blocking tq client; the arguments, methods and errors are AsyncClient's."""

    spec = staticmethod(task_spec)

    def __init__(
        self,
        url: str | Sequence[str] | None = None,
        *,
        api_key: str | None = None,
        name: str | None = None,
        connect_timeout: float = 5.0,
        request_timeout: float = 30.0,
        reconnect: bool = True,
        max_reconnect_delay: float = 5.0,
        client_kind: Literal["client", "worker"] = "client",
        tls: TlsConfig | ssl.SSLContext | None = None,
    ) -> None:
        self._async = AsyncClient(
            url,
            api_key=api_key,
            name=name,
            connect_timeout=connect_timeout,
            request_timeout=request_timeout,
            reconnect=reconnect,
            max_reconnect_delay=max_reconnect_delay,
            client_kind=client_kind,
            tls=tls,
        )
        self._runner = _LoopThread()
        # A Client dropped without close() must not leave its thread spinning forever.
        weakref.finalize(self, self._runner.abandon)

    @property
    def url(self) -> str:
        """The node calls go to now (the leader, once a node named it)."""
        return self._async.url

    @property
    def urls(self) -> list[str]:
        """Every node the client was given, in order."""
        return self._async.urls

    @property
    def async_client(self) -> AsyncClient:
        """The AsyncClient underneath, bound to this Client's private loop."""
        return self._async

    def __repr__(self) -> str:
        return f"Client({','.join(self.urls)!r})"

    def connect(self, timeout: float | None = None, *, retry: bool = True) -> None:
        self._runner.run(self._async.connect(timeout, retry=retry))

    def close(self) -> None:
        if not self._runner.loop.is_closed():
            self._runner.run(self._async.close())
            self._runner.stop()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def submit(
        self,
        task_type: str,
        payload: bytes = b"",
        *,
        queue: str = "default",
        priority: int = 128,
        delay: float | None = None,
        scheduled_at: float | None = None,
        max_retries: int | None = None,
        timeout: float | None = None,
        retry: RetrySpec | None = None,
        depends_on: Sequence[str] = (),
        tags: Mapping[str, str] | None = None,
        idempotency_key: str | None = None,
        expires_at: float | None = None,
        task_id: str | None = None,
        result_ttl: float | None = None,
        failure_ttl: float | None = None,
        aging: bool = True,
    ) -> str:
        return self._runner.run(
            self._async.submit(
                task_type, payload, queue=queue, priority=priority, delay=delay,
                scheduled_at=scheduled_at, max_retries=max_retries, timeout=timeout,
                retry=retry, depends_on=depends_on, tags=tags,
                idempotency_key=idempotency_key, expires_at=expires_at, task_id=task_id,
                result_ttl=result_ttl, failure_ttl=failure_ttl, aging=aging,
            )
        )  # fmt: skip

    def submit_many(self, specs: Sequence[TaskSpec]) -> list[str]:
        return self._runner.run(self._async.submit_many(specs))

    def status(self, task_id: str, *, include_payload: bool = False) -> TaskInfo:
        return self._runner.run(self._async.status(task_id, include_payload=include_payload))

    def status_many(self, ids: Sequence[str]) -> list[TaskInfo | None]:
        return self._runner.run(self._async.status_many(ids))

    def cancel(self, task_id: str) -> None:
        self._runner.run(self._async.cancel(task_id))

    def cancel_many(self, ids: Sequence[str]) -> list[int]:
        return self._runner.run(self._async.cancel_many(ids))

    def retry(self, task_id: str) -> None:
        self._runner.run(self._async.retry(task_id))

    def retry_many(
        self,
        ids: Sequence[str],
        *,
        page_size: int = MAX_ACT_TASKS,
        progress: ProgressCallback | None = None,
    ) -> list[ActionResult]:
        return self._runner.run(self._async.retry_many(ids, page_size=page_size, progress=progress))

    def delete(self, task_id: str) -> None:
        self._runner.run(self._async.delete(task_id))

    def delete_many(
        self,
        ids: Sequence[str],
        *,
        page_size: int = MAX_ACT_TASKS,
        progress: ProgressCallback | None = None,
    ) -> list[ActionResult]:
        return self._runner.run(
            self._async.delete_many(ids, page_size=page_size, progress=progress)
        )

    def retry_where(
        self,
        where: TaskFilter,
        *,
        page_size: int = 1000,
        progress: ProgressCallback | None = None,
    ) -> BulkOutcome:
        """``progress`` is called on the client's loop thread, after each page."""
        return self._runner.run(
            self._async.retry_where(where, page_size=page_size, progress=progress)
        )

    def delete_where(
        self,
        where: TaskFilter,
        *,
        page_size: int = 1000,
        progress: ProgressCallback | None = None,
    ) -> BulkOutcome:
        return self._runner.run(
            self._async.delete_where(where, page_size=page_size, progress=progress)
        )

    def cancel_where(
        self,
        where: TaskFilter,
        *,
        page_size: int = 1000,
        progress: ProgressCallback | None = None,
    ) -> BulkOutcome:
        return self._runner.run(
            self._async.cancel_where(where, page_size=page_size, progress=progress)
        )

    def list_tasks(
        self,
        *,
        state: str | None = None,
        queue: str | None = None,
        task_type: str | None = None,
        priority_min: int | None = None,
        priority_max: int | None = None,
        created_after: float | None = None,
        created_before: float | None = None,
        limit: int = 100,
        cursor: bytes | None = None,
    ) -> tuple[list[TaskInfo], bytes | None]:
        return self._runner.run(
            self._async.list_tasks(
                state=state, queue=queue, task_type=task_type, priority_min=priority_min,
                priority_max=priority_max, created_after=created_after,
                created_before=created_before, limit=limit, cursor=cursor,
            )
        )  # fmt: skip

    def stats(self) -> Stats:
        return self._runner.run(self._async.stats())

    def workers(self) -> list[WorkerInfo]:
        return self._runner.run(self._async.workers())

    def inspect_worker(self, worker_id: str) -> WorkerDetail:
        """What a worker runs, reserved and is ordered (``AsyncClient.inspect_worker``)."""
        return self._runner.run(self._async.inspect_worker(worker_id))

    def shutdown_worker(self, worker_id: str) -> WorkerOrderInfo | None:
        """Ask a worker to stop gracefully, as SIGTERM does (admin)."""
        return self._runner.run(self._async.shutdown_worker(worker_id))

    def consume(self, worker_id: str, queue: str) -> WorkerOrderInfo | None:
        """Ask a worker to claim tasks of ``queue`` too (admin)."""
        return self._runner.run(self._async.consume(worker_id, queue))

    def stop_consuming(self, worker_id: str, queue: str) -> WorkerOrderInfo | None:
        """Ask a worker to claim no more tasks of ``queue`` (admin)."""
        return self._runner.run(self._async.stop_consuming(worker_id, queue))

    def cluster_status(self) -> ClusterStatus:
        """The cluster as the connected node sees it (``AsyncClient.cluster_status``)."""
        return self._runner.run(self._async.cluster_status())

    def ping(self) -> float:
        return self._runner.run(self._async.ping())

    def create_key(self, spec: KeySpec) -> tuple[KeyInfo, str]:
        return self._runner.run(self._async.create_key(spec))

    def list_keys(self) -> list[KeyInfo]:
        return self._runner.run(self._async.list_keys())

    def revoke_key(self, key_id: str) -> KeyInfo:
        return self._runner.run(self._async.revoke_key(key_id))

    def create_schedule(self, spec: ScheduleSpec, *, replace: bool = False) -> ScheduleInfo:
        return self._runner.run(self._async.create_schedule(spec, replace=replace))

    def list_schedules(self) -> list[ScheduleInfo]:
        return self._runner.run(self._async.list_schedules())

    def get_schedule(self, name: str) -> ScheduleInfo:
        return self._runner.run(self._async.get_schedule(name))

    def pause_schedule(self, name: str) -> ScheduleInfo:
        return self._runner.run(self._async.pause_schedule(name))

    def resume_schedule(self, name: str) -> ScheduleInfo:
        return self._runner.run(self._async.resume_schedule(name))

    def delete_schedule(self, name: str) -> ScheduleInfo:
        return self._runner.run(self._async.delete_schedule(name))

    def pause_queue(self, queue: str) -> QueueState:
        return self._runner.run(self._async.pause_queue(queue))

    def resume_queue(self, queue: str) -> QueueState:
        return self._runner.run(self._async.resume_queue(queue))

    def set_limit(
        self,
        *,
        queue: str | None = None,
        task_type: str | None = None,
        rate: float | None = None,
        burst: int | None = None,
        concurrency: int | None = None,
    ) -> LimitInfo:
        """See ``AsyncClient.set_limit``."""
        return self._runner.run(
            self._async.set_limit(
                queue=queue, task_type=task_type, rate=rate, burst=burst, concurrency=concurrency
            )
        )

    def clear_limit(self, *, queue: str | None = None, task_type: str | None = None) -> None:
        self._runner.run(self._async.clear_limit(queue=queue, task_type=task_type))

    def limits(self) -> list[LimitInfo]:
        return self._runner.run(self._async.limits())

    def wait(self, task_id: str, timeout: float | None = None) -> TaskInfo:
        return self._runner.run(self._async.wait(task_id, timeout))

    def result(self, task_id: str, timeout: float | None = None) -> bytes:
        return self._runner.run(self._async.result(task_id, timeout))

    def subscribe(
        self, *, task_ids: Sequence[str] = (), queues: Sequence[str] = (), all: bool = False
    ) -> SyncSubscription:
        """Subscribed on return; iterate it for events, ``close()`` it when done."""
        sub = self._async.subscribe(task_ids=task_ids, queues=queues, all=all)
        return SyncSubscription(self._runner, self._runner.run(sub.start()))

    def register_worker(
        self,
        worker_id: str,
        *,
        name: str,
        queues: Sequence[str],
        concurrency: int,
        hostname: str,
        pid: int,
        pool: str,
    ) -> RegisterReply:
        return self._runner.run(
            self._async.register_worker(
                worker_id, name=name, queues=queues, concurrency=concurrency,
                hostname=hostname, pid=pid, pool=pool,
            )
        )  # fmt: skip

    def claim(
        self,
        worker_id: str,
        queues: Sequence[str],
        max_tasks: int | None = None,
        wait: float = 0.0,
    ) -> list[ClaimedTask]:
        return self._runner.run(self._async.claim(worker_id, queues, max_tasks, wait))

    def report(self, outcomes: Sequence[TaskOutcome]) -> list[int]:
        return self._runner.run(self._async.report(outcomes))

    def heartbeat(
        self, worker_id: str, *, cpu_percent: float, memory_rss: int, running: Sequence[bytes]
    ) -> HeartbeatReply:
        return self._runner.run(
            self._async.heartbeat(
                worker_id, cpu_percent=cpu_percent, memory_rss=memory_rss, running=running
            )
        )

    def progress(
        self, task_id: bytes, lease_token: int, percent: int, message: str | None = None
    ) -> None:
        self._runner.run(self._async.progress(task_id, lease_token, percent, message))

    def release(self, worker_id: str, claimed: Sequence[ClaimedTask]) -> None:
        self._runner.run(self._async.release(worker_id, claimed))

    def deregister(self, worker_id: str) -> None:
        self._runner.run(self._async.deregister(worker_id))
