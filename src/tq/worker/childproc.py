"""The process pool's child: its messages and its main loop (runs in the spawned process).

Rules: messages are msgspec MessagePack structs tagged by kind, one per ``send_bytes``. The
child imports the handler modules itself (by name), says ``Ready``, then runs one ``Job`` at
a time on its main thread. A reader thread receives everything, so ``Cancel`` reaches the
running handler as its context's flag; EOF on the pipe means the parent is gone, and the
child exits at once rather than run on as an orphan.
"""

from __future__ import annotations

import asyncio
import os
import queue
import signal
import threading
from multiprocessing.connection import Connection

import msgspec

from tq.worker.context import ProgressSink, TaskContext
from tq.worker.outcomes import Result, missing_handler


class Job(msgspec.Struct, tag="job", frozen=True, kw_only=True):
    id: bytes
    task_type: str
    queue: str
    attempt: int
    max_retries: int
    payload: bytes


class Cancel(msgspec.Struct, tag="cancel", frozen=True, kw_only=True):
    id: bytes


class Stop(msgspec.Struct, tag="stop", frozen=True):
    pass


class Ready(msgspec.Struct, tag="ready", frozen=True, kw_only=True):
    pid: int


class Fatal(msgspec.Struct, tag="fatal", frozen=True, kw_only=True):
    error: str


class Done(msgspec.Struct, tag="done", frozen=True, kw_only=True):
    id: bytes
    result: Result


class Progress(msgspec.Struct, tag="progress", frozen=True, kw_only=True):
    id: bytes
    percent: int
    message: str | None = None


ToChild = Job | Cancel | Stop
ToParent = Ready | Fatal | Done | Progress

_encoder = msgspec.msgpack.Encoder()
_to_child: msgspec.msgpack.Decoder[ToChild] = msgspec.msgpack.Decoder(ToChild)
_to_parent: msgspec.msgpack.Decoder[ToParent] = msgspec.msgpack.Decoder(ToParent)


def encode(msg: ToChild | ToParent) -> bytes:
    return _encoder.encode(msg)


def decode_to_parent(data: bytes) -> ToParent:
    return _to_parent.decode(data)


def decode_to_child(data: bytes) -> ToChild:
    return _to_child.decode(data)


class _Child:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.jobs: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self.current: TaskContext | None = None
        # Done comes from the main thread, Progress from whichever thread the handler uses.
        self.send_lock = threading.Lock()

    def send(self, msg: ToParent) -> None:
        with self.send_lock:
            self.conn.send_bytes(encode(msg))

    def read(self) -> None:
        """Reader thread: route jobs to the main thread, cancels to the running context."""
        while True:
            try:
                msg = decode_to_child(self.conn.recv_bytes())
            except (EOFError, OSError):
                os._exit(0)  # the parent is gone: nobody can use our results
            if isinstance(msg, Job):
                self.jobs.put(msg)
            elif isinstance(msg, Cancel):
                ctx = self.current
                if ctx is not None and ctx.raw_id == msg.id:
                    ctx.cancel()
            else:
                self.jobs.put(None)
                return

    def progress_sink(self, task_id: bytes) -> ProgressSink:
        def sink(percent: int, message: str | None) -> None:
            self.send(Progress(id=task_id, percent=percent, message=message))

        return sink


def child_main(conn: Connection, modules: list[str]) -> None:
    """Entry point of a pool child (spawned: everything it needs is imported here)."""
    # The parent owns shutdown: a terminal's Ctrl-C reaches the whole process group, and the
    # tasks running here must be allowed to finish while the parent drains.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from tq.worker.pools import run_async, run_sync  # noqa: PLC0415 - keep spawn import light
    from tq.worker.registry import Registry, handlers_in, import_handlers  # noqa: PLC0415

    child = _Child(conn)
    threading.Thread(target=child.read, name="tq-child-reader", daemon=True).start()
    try:
        registry = Registry(h for name in modules for h in handlers_in(import_handlers(name)))
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which names it
        child.send(Fatal(error=str(exc)))
        return
    child.send(Ready(pid=os.getpid()))
    loop = asyncio.new_event_loop()
    while (job := child.jobs.get()) is not None:
        handler = registry.get(job.task_type)
        if handler is None:
            result: Result = missing_handler(job.task_type, registry.names())
        else:
            ctx = TaskContext(
                raw_id=job.id,
                task_type=job.task_type,
                queue=job.queue,
                attempt=job.attempt,
                max_retries=job.max_retries,
                _sink=child.progress_sink(job.id),
            )
            child.current = ctx
            if handler.is_async:
                result = loop.run_until_complete(run_async(handler, ctx, job.payload))
            else:
                result = run_sync(handler, ctx, job.payload)
            child.current = None
        child.send(Done(id=job.id, result=result))
    loop.close()
