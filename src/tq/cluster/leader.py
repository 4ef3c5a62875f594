"""A cluster leader's appender: the batches the broker applied become log entries, and each
batch is answered only once its entry is committed in etcd and written to the local store.

Theory of operation: the service hands over each group-commit batch (its commands, its
mutations, a callback) in the order it applied them. One append is in flight at a time (the
log must stay contiguous); the batches that arrive meanwhile wait, and the next append carries
all of them as one entry (a second level of group commit, sized to the append's latency). Once
etcd has committed the entry, its mutations and the node's applied mark go to the local store
in one WriteBatch, so the store is always a prefix of the log, and the batches' callbacks run
in order. The local write is not fsync'd before answering: etcd holds the entry on a majority,
and a node that loses its unsynced tail applies it again from the log.

Any failure ends this leadership: etcd refused the append (the node was deposed: nothing was
written), or did not answer (the entry may or may not be in the log), or the local write
failed. The callbacks of the entry in flight and of every waiting batch are told why, later
batches are refused at once, and ``on_failed`` tells the node, which steps down and rebuilds
from its store and the log: the log, not this node's memory, is the truth.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from tq.cluster.entry import encode_body
from tq.cluster.log import ReplicatedLog
from tq.core import commands as c
from tq.core.commands import encode_commands
from tq.core.layout import APPLIED_KEY, AppliedMark, Family, Mutation, encode
from tq.errors import ErrorCode, NotLeaderError, StorageError, TqError, UnavailableError

log = logging.getLogger(__name__)

#: An entry's fields around its commands' bytes (version, index, epoch, checksum): at most.
ENTRY_HEADER_BYTES = 48

#: Told None once the batch is committed and written locally, else why it is not (a
#: NotLeaderError: certainly not applied; an UnavailableError: the outcome is unknown).
Done = Callable[[BaseException | None], None]


@dataclass(slots=True)
class _Batch:
    commands: list[c.Command]
    mutations: list[Mutation]
    done: Done


class Replicator:
    """Appends the batches of leader ``epoch`` to ``log`` (see the module docstring).

    ``write`` puts one WriteBatch in the local store (the broker's group commit); ``on_failed``
    is called once, on the loop, when this leadership can append no more. ``on_append``, when
    set, hears each committed entry's seconds in etcd and its number of commands."""

    def __init__(
        self,
        log: ReplicatedLog,
        epoch: int,
        write: Callable[[list[Mutation]], None],
        on_failed: Callable[[BaseException], None],
        *,
        max_entry_bytes: int | None = None,
    ) -> None:
        self.log = log
        self.epoch = epoch
        self._write = write
        self._on_failed = on_failed
        self.max_entry_bytes = max_entry_bytes or log.max_entry_bytes
        self._queue: list[_Batch] = []
        self._wake = asyncio.Event()
        self._failed: BaseException | None = None
        #: How many of the first queued batches ride in the append in flight (0: none).
        self._in_flight = 0
        self._task: asyncio.Task[None] | None = None
        self.on_append: Callable[[float, int], None] | None = None
        #: The index of the last entry committed by this leadership (0: none yet).
        self.applied_index = 0
        self.appends = 0

    @property
    def failed(self) -> BaseException | None:
        return self._failed

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"tq-append-{self.epoch}")

    def submit(self, commands: list[c.Command], mutations: list[Mutation], done: Done) -> None:
        """Queue one applied batch; ``done`` is called once its fate is known."""
        if self._failed is not None:
            done(self._refusal())
            return
        self._queue.append(_Batch(commands, mutations, done))
        self._wake.set()

    @property
    def waiting(self) -> int:
        """Batches not yet committed (queued or in flight)."""
        return len(self._queue)

    async def stop(self) -> None:
        """Stop appending; batches still waiting are refused (not applied)."""
        if self._failed is None:
            self._fail(NotLeaderError("this node stopped leading before the change was logged"))
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait([task], timeout=2.0)

    def _refusal(self) -> NotLeaderError:
        why = self._failed.message if isinstance(self._failed, TqError) else str(self._failed)
        return NotLeaderError(f"not applied: this node is no longer the leader ({why})")

    async def _run(self) -> None:
        while self._failed is None:
            await self._wake.wait()
            self._wake.clear()
            while self._queue and self._failed is None:
                try:
                    await self._append_some()
                except asyncio.CancelledError:
                    raise
                except Exception as e:  # noqa: BLE001 (whatever it is, this leadership ends)
                    self._fail(e)

    async def _append_some(self) -> None:
        """Append the waiting batches as one entry (fewer if it would be too large)."""
        take = len(self._queue)
        while True:
            batches = self._queue[:take]
            commands = [cmd for b in batches for cmd in b.commands]
            if not commands:  # nothing to log (a turn that only served replies): settled
                self._settle(take, None)
                return
            body = encode_commands(commands)  # once: the entry wraps it with its index
            if len(body) + ENTRY_HEADER_BYTES <= self.max_entry_bytes or take == 1:
                break
            take = max(1, take // 2)
        if len(body) + ENTRY_HEADER_BYTES > self.max_entry_bytes:
            raise StorageError(
                f"one batch of {len(commands)} commands takes {len(body)} bytes, above the "
                f"{self.max_entry_bytes} byte limit of a log entry (raise etcd's "
                "--max-request-bytes and the entry limit together)"
            )
        t0 = time.perf_counter()
        self._in_flight = take  # from here on, their entry may reach the log
        try:
            index = await self.log.append(
                lambda i: encode_body(i, self.epoch, body), epoch=self.epoch
            )
        except NotLeaderError:
            self._in_flight = 0  # etcd refused it: certainly not in the log
            raise
        seconds = time.perf_counter() - t0
        mutations = [m for b in batches for m in b.mutations]
        mutations.append((Family.METADATA, APPLIED_KEY, encode(AppliedMark(index, self.epoch))))
        self._write(mutations)  # a StorageError ends the leadership: the log has the entry
        self.applied_index = index
        self.appends += 1
        if self.on_append is not None:
            self.on_append(seconds, len(commands))
        self._in_flight = 0
        self._settle(take, None)

    def _settle(self, n: int, err: BaseException | None) -> None:
        batches, self._queue[:n] = self._queue[:n], []
        for b in batches:
            b.done(err)

    def _fail(self, error: BaseException) -> None:
        if self._failed is not None:
            return
        self._failed = error
        self._wake.set()
        queued, self._queue = self._queue, []
        sent, self._in_flight = self._in_flight, 0
        why = error.message if isinstance(error, TqError) else str(error)
        # The entry in flight may be in the log (an append whose reply was lost, one cut short
        # by a lost lease, a local write failed after the commit): only the log will tell.
        doubt = UnavailableError(
            f"the log append was not confirmed ({why}): the change may or may not be applied",
            ErrorCode.TIMEOUT,
        )
        refusal = self._refusal()
        for i, b in enumerate(queued):
            b.done(doubt if i < sent else refusal)
        self._on_failed(error)
