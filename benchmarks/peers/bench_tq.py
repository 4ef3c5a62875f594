"""tq in the shared peer harness: ``BENCH_VENV=/work/main/.venv ./run.sh <this file> N REPS``
(run from ../shared/bench; see its README, "Plugging in another system").

tq's own broker runs with its defaults, so every acknowledged submit is fsync-durable (group
commit) and a crashed worker loses nothing (as in ``tq bench``, only backpressure is raised
and the management front doors listen on ephemeral ports); the adapter starts it in
``setup()`` (data dir under the harness scratch) and stops it by PID in ``teardown()``;
run.sh's Redis is ignored.
Workers: 2 x ``python -m tq --set worker.broker_url=URL worker bench_tq --concurrency 8``.
The client is one AsyncClient on one uvloop loop: single submits are sequential awaits of
``noop.submit_async(i)`` (the harness's rule; ``BENCH_TQ_WINDOW=W`` keeps W in flight instead,
variant ``window<W>``), bulk is one ``submit_many``, and e2e waits on ``handle.result()``
(pushed by the broker, not polled).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Coroutine
from typing import Any, TypeVar

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import harness  # type: ignore[import-not-found]  # noqa: E402 - ../shared/bench, on PYTHONPATH

import tq  # noqa: E402
from tq.client import task_spec  # noqa: E402
from tq.core.ids import format_task_id  # noqa: E402

T = TypeVar("T")
WINDOW = int(os.environ.get("BENCH_TQ_WINDOW", "1"))
WORKERS = 2
CONCURRENCY = 8
DURABILITY = "tq fsync (group commit)"
#: Pages of LIST_TASKS when recounting completed tasks (the protocol's maximum page).
PAGE = 1000


@tq.task("noop")
async def noop(x: int) -> int:
    return x


class TqAdapter(harness.Adapter):  # type: ignore[misc]
    name = "tq"
    variant = "default" if WINDOW == 1 else f"window{WINDOW}"
    uses_redis = False
    single_api = "await noop.submit_async(i)  (sequential; acked after the fsync'd group commit)"
    if WINDOW > 1:
        single_api = f"await noop.submit_async(i) x {WINDOW} loops in flight"
    bulk_api = "await client.submit_many(N specs)  (one call, split into frames of <= 16 MiB)"
    result_wait = "await handle.result(timeout)  (terminal event pushed by the broker)"
    worker_desc = (
        f"{WORKERS} x python -m tq worker bench_tq --concurrency {CONCURRENCY} "
        "(asyncio pool, async noop)"
    )
    packages = ("tq", "msgspec", "rocksdict", "uvloop", "psutil")

    def __init__(self, args: Any) -> None:
        super().__init__(args)
        import uvloop

        # Workers import this module by name; the harness gives them only its own folder.
        path = os.environ.get("PYTHONPATH")
        os.environ["PYTHONPATH"] = HERE + (os.pathsep + path if path else "")
        os.environ.pop("TQ_BROKER_URL", None)  # it would beat worker.broker_url
        self.runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
        self.broker: Any = None
        self.client: tq.AsyncClient | None = None
        self.scratch = ""
        self.baseline = 0
        self.reset_at = 0.0

    # ---- lifecycle ----------------------------------------------------------------------
    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.runner.run(coro)

    def _client(self) -> tq.AsyncClient:
        if self.client is None:
            self.setup()
        assert self.client is not None
        return self.client

    def setup(self) -> None:
        """Start the broker (once: the harness asks for its PID before calling setup)."""
        if self.broker is not None:
            return
        from tq.bench.procs import EPHEMERAL_PORTS
        from tq.testing import BrokerProcess

        os.makedirs(harness.SCRATCH, exist_ok=True)
        self.scratch = tempfile.mkdtemp(prefix="tq-peer-", dir=harness.SCRATCH)
        self.broker = BrokerProcess(
            os.path.join(self.scratch, "data"),
            # REST/gRPC/metrics on, as by default, but on ports the OS picks
            settings={"broker.backpressure_threshold": 10_000_000, **EPHEMERAL_PORTS},
            log_file=os.path.join(self.scratch, "broker.log"),
        )
        self.broker.start()

        async def connect() -> tq.AsyncClient:
            client = tq.AsyncClient(self.broker.url)
            await client.connect()
            tq.set_default_client(client)
            return client

        self.client = self._run(connect())

    def teardown(self) -> None:
        if self.client is not None:
            self._run(self.client.close())
            self.client = None
        if self.broker is not None:
            self.broker.stop()
            self.broker = None
        self.runner.close()
        if self.scratch:
            shutil.rmtree(self.scratch, ignore_errors=True)

    def reset(self) -> None:
        """Cancel whatever is still pending; count completions from here on."""
        client = self._client()

        async def go() -> None:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                tasks, _ = await client.list_tasks(state="pending", limit=PAGE)
                if not tasks:
                    break
                await client.cancel_many([format_task_id(t.id) for t in tasks])
            self.baseline = (await client.stats()).totals.get("completed", 0)

        self._run(go())
        self.reset_at = time.time()

    # ---- client side --------------------------------------------------------------------
    def enqueue_single_loop(self, n: int) -> None:
        issued = 0

        async def loop() -> None:
            nonlocal issued
            while issued < n:
                issued += 1
                await noop.submit_async(issued - 1)

        async def go() -> None:
            async with asyncio.TaskGroup() as tg:
                for _ in range(min(WINDOW, n)):
                    tg.create_task(loop())

        self._client()
        self._run(go())

    def enqueue_bulk(self, n: int) -> None:
        client = self._client()
        specs = [task_spec(noop.name, noop.encode_args((i,), {})) for i in range(n)]
        self._run(client.submit_many(specs))

    def e2e_loop(self, values: list[int], deadline: float, timeout: float) -> list[Any]:
        self._client()

        async def go() -> list[tuple[float, float, bool]]:
            out = []
            clock = time.perf_counter
            for v in values:
                if time.monotonic() > deadline:
                    break
                t0 = clock()
                handle = await noop.submit_async(v)
                t1 = clock()
                try:
                    ok = await handle.result(timeout) == v
                except tq.TqError as exc:
                    ok = False
                    self.note_error(f"e2e wait: {exc!r}")
                out.append((t1 - t0, clock() - t0, ok))
            return out

        return self._run(go())

    # ---- broker-side counters -----------------------------------------------------------
    def pending_count(self) -> int:
        return self._run(self._client().stats()).pending

    def done_count(self) -> int:
        return self._run(self._client().stats()).totals.get("completed", 0) - self.baseline

    def verify_done(self) -> int:
        """Exact recount: completed task records created since the last reset."""
        client = self._client()

        async def count() -> int:
            total, cursor = 0, None
            while True:
                tasks, cursor = await client.list_tasks(
                    state="completed", created_after=self.reset_at - 1, limit=PAGE, cursor=cursor
                )
                total += len(tasks)
                if cursor is None:
                    return total

        return self._run(count())

    # ---- workers and broker introspection -----------------------------------------------
    def worker_commands(self) -> list[list[str]]:
        url = self.broker_info()["url"]
        argv = [
            sys.executable, "-m", "tq", "--set", f"worker.broker_url={url}", "worker",
            "bench_tq", "--concurrency", str(CONCURRENCY), "--log-level", "WARNING",
        ]  # fmt: skip
        return [list(argv) for _ in range(WORKERS)]

    def broker_info(self) -> dict[str, Any]:
        self.setup()
        return {
            "kind": "tq",
            "url": self.broker.url,
            "pid": self.broker_pid(),
            "durability": DURABILITY,
            "sync_mode": "fsync",
            "data_dir": str(self.broker.data_dir),
            "tq_version": harness.pkg_version("tq"),
            "redis_version": None,
            "appendonly": None,
            "appendfsync": None,
            "save": None,
        }

    def broker_pid(self) -> int:
        self.setup()
        return int(self.broker.proc.pid)

    def broker_stats(self) -> dict[str, Any]:
        import psutil

        stats = self._run(self._client().stats())
        proc = psutil.Process(self.broker_pid())
        cpu = proc.cpu_times()
        live = stats.pending + stats.scheduled + stats.in_progress + stats.failed
        return {
            "memory_bytes": proc.memory_info().rss,
            "cpu_s": cpu.user + cpu.system,
            "keys": live + stats.dead_letter,
            "pubsub_channels": None,
        }


if __name__ == "__main__":
    # the objects of the importable module, so the task is the one the workers register
    from bench_tq import TqAdapter as _Adapter

    sys.exit(harness.main(_Adapter))
