"""A cluster node's store following the replicated log: entries applied in order, each one
whole, through the same ``Machine.apply`` the leader used, into the node's own store.

Theory of operation: an entry's mutations, the machine's record and the node's applied mark
(``layout.APPLIED_KEY``: index and epoch) go to the store in ONE WriteBatch, so after a crash
the store holds a prefix of the log and says exactly which one; ``Replica.open`` recovers the
machine from the families as a broker's recovery does and resumes after that mark. An entry
at or below the mark is a redelivery and is skipped; one beyond the next index is a gap and
is refused. An entry that cannot be decoded, or whose command this machine refuses (the nodes
would diverge), changes nothing: memory is rebuilt from the store, which was not written.
Writes are not fsync'd here (``sync`` does it): the log is the truth, so a node that loses its
unsynced tail in a power loss applies those entries again from its mark.
"""

from __future__ import annotations

from collections.abc import Callable

import msgspec

from tq.cluster.entry import decode_entry
from tq.core.effects import Effects, TaskEvent
from tq.core.layout import APPLIED_KEY, AppliedMark, Family, Mutation, decode_applied, encode
from tq.core.machine import Machine
from tq.errors import StorageError
from tq.storage.base import Store
from tq.storage.recovery import recover

#: Recovery's clock: a replica must not write repairs (they are not in the log), so the time
#: they would be stamped with never reaches storage.
_NO_REPAIR_TIME = 0.0


class LogOrderError(StorageError):
    """An entry that cannot follow the ones applied (a gap, or an older leader's epoch)."""


class DivergenceError(StorageError):
    """This node's machine refused a command the leader applied: nothing of the entry is
    applied, since applying the rest would make this node's state differ from the leader's."""


class Replica:
    """One node's machine and store, at a known place in the log (see the module docstring).

    The store stays the caller's: it opens it before ``Replica.open`` and closes it after."""

    def __init__(
        self,
        store: Store,
        machine: Machine,
        mark: AppliedMark,
        *,
        write: Callable[[list[Mutation]], None] | None = None,
    ) -> None:
        self._store = store
        self._machine = machine
        self._mark = mark
        #: How an entry's WriteBatch reaches the store: ``store.write``, or a broker's group
        #: commit (whose fsync timer then covers the entries applied).
        self._write = store.write if write is None else write

    @classmethod
    def open(
        cls, store: Store, *, write: Callable[[list[Mutation]], None] | None = None
    ) -> Replica:
        """The node as its store left it: the machine recovered from the families exactly as a
        broker recovers, and the applied mark read with it."""
        mark = applied_mark(store)
        rec = recover(store, _NO_REPAIR_TIME)
        if rec.repairs.mutations:
            raise StorageError(
                f"the store of this node needs {len(rec.repairs.mutations)} repairs (a "
                "dependant of a failed task is still waiting): it was edited outside tq; "
                "install a checkpoint from the leader instead"
            )
        return cls(store, rec.machine, mark, write=write)

    @property
    def applied_index(self) -> int:
        """The index of the last entry applied (0: none)."""
        return self._mark.index

    @property
    def applied_epoch(self) -> int:
        """The epoch of the leader that appended the last entry applied (0: none)."""
        return self._mark.epoch

    @property
    def machine(self) -> Machine:
        """The machine as of ``applied_index`` (read it; only ``apply_entry`` changes it)."""
        return self._machine

    def apply_entry(self, index: int, data: bytes) -> list[TaskEvent] | None:
        """Apply the entry stored at ``index`` in the log: its task events, or None when it
        was applied before (a redelivery changes nothing). ``LogOrderError`` for a gap or an
        epoch older than the last entry's, ``CorruptEntryError`` for bytes that are no whole
        entry, ``DivergenceError`` for a command refused here; after any of them (and after a
        failed write) nothing of the entry is applied, in memory or on disk."""
        mark = self._mark
        if index <= mark.index:
            return None
        if index != mark.index + 1:
            raise LogOrderError(
                f"log entry {index} cannot be applied after entry {mark.index}: entries "
                f"{mark.index + 1} to {index - 1} are missing (entries apply in order)"
            )
        entry = decode_entry(index, data)
        if entry.epoch < mark.epoch:
            raise LogOrderError(
                f"log entry {index} is of epoch {entry.epoch}, older than epoch {mark.epoch} "
                f"of entry {mark.index}: a deposed leader's append must never be applied"
            )
        fx = Effects()
        for n, cmd in enumerate(entry.commands, 1):
            try:
                self._machine.apply(cmd, fx)
            except Exception as e:  # any failure here means the nodes would diverge
                self._rebuild()
                why = getattr(e, "message", None) or f"{type(e).__name__}: {e}"
                raise DivergenceError(
                    f"log entry {index}: command {n} of {len(entry.commands)} "
                    f"({type(cmd).__name__}) was refused by this node: {why}; nothing of the "
                    "entry was applied"
                ) from e
        self._machine.end_batch(fx)
        new_mark = AppliedMark(index, entry.epoch)
        fx.put(Family.METADATA, APPLIED_KEY, encode(new_mark))
        try:
            self._write(fx.mutations)
        except StorageError:
            self._rebuild()  # memory went ahead of a store that did not take the batch
            raise
        self._mark = new_mark
        return fx.events

    def sync(self) -> None:
        """Make every entry applied so far durable (fsync the store's write-ahead log)."""
        self._store.sync_wal()

    def _rebuild(self) -> None:
        self._machine = recover(self._store, _NO_REPAIR_TIME).machine


def applied_mark(store: Store) -> AppliedMark:
    """Where ``store`` stands in the replicated log (index 0: it applied no entry)."""
    raw = store.get(Family.METADATA, APPLIED_KEY)
    if raw is None:
        return AppliedMark()
    try:
        return decode_applied(raw)
    except msgspec.DecodeError as e:
        raise StorageError(
            f"corrupt record in family metadata under key {APPLIED_KEY.decode()}: {e}"
        ) from e
