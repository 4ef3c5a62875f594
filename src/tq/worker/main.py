"""``run_worker``: the process entry point behind ``tq worker MODULE...`` and ``tq-worker``.

Imports the handlers modules, runs a ``Worker`` (``tq.eventloop``) and turns signals into the
shutdown protocol: the first SIGTERM/SIGINT stops gracefully (release unstarted tasks, finish
running ones within the shutdown timeout), the second forces an exit (pool children killed,
nothing reported: leases expire), a third exits on the spot. Logging is the caller's (CLI's).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Sequence

from tq import eventloop
from tq.client import TlsConfig
from tq.errors import TqError
from tq.worker.registry import handlers_of
from tq.worker.worker import PoolName, Worker

_log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_FORCED = 130  # 128 + SIGINT, the shell's convention for "interrupted"


def run_worker(
    modules: str | Sequence[str],
    *,
    url: str | Sequence[str],
    queues: Sequence[str] = ("default",),
    concurrency: int = 4,
    pool: PoolName = "asyncio",
    prefetch: int | None = None,
    heartbeat_interval: float | None = None,
    shutdown_timeout: float = 60.0,
    burst: bool = False,
    name: str | None = None,
    default_timeout: float | None = None,
    api_key: str | None = None,
    tls: TlsConfig | None = None,
) -> int:
    """Serve the handlers of ``modules`` (one name or several) until stopped; the exit status.

    Raises ``ConfigError`` before starting if a module cannot be imported or holds no
    handlers, two modules name the same task type, or an option is invalid. Returns 0 after
    a graceful stop (or a burst run), 1 when the broker refused the worker for good (bad
    credentials, protocol), 130 when a second signal forced the exit.
    """
    worker = Worker(
        handlers_of([modules] if isinstance(modules, str) else modules),
        url=url,
        queues=queues,
        concurrency=concurrency,
        pool=pool,
        prefetch=prefetch,
        heartbeat_interval=heartbeat_interval,
        shutdown_timeout=shutdown_timeout,
        burst=burst,
        name=name,
        default_timeout=default_timeout,
        api_key=api_key,
        tls=tls,
    )
    return eventloop.run(_serve(worker))


async def _serve(worker: Worker) -> int:
    signals_seen = 0

    def on_signal(signum: int) -> None:
        nonlocal signals_seen
        signals_seen += 1
        name = signal.Signals(signum).name
        if signals_seen == 1:
            _log.info("worker.signal signal=%s action=graceful-stop", name)
            worker.request_stop()
        elif signals_seen == 2:
            _log.warning("worker.signal signal=%s action=force-stop", name)
            worker.force_stop()
        else:
            os._exit(EXIT_FORCED)  # the forced stop itself is stuck: leave now

    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    try:
        await worker.run()
    except asyncio.CancelledError:
        if signals_seen < 2:
            raise
        return EXIT_FORCED
    except TqError as exc:
        _log.error("worker.failed id=%s error=%s", worker.worker_id, exc)
        return EXIT_FAILED
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
    return EXIT_OK
