"""A corrupt record found while recovering names where it is as a user can find it again: a
task's record by the task's id in the 36-character form every interface shows."""

from __future__ import annotations

import uuid

import pytest

from tq.core.layout import WORKER_PREFIX, Family
from tq.errors import StorageError
from tq.storage import MemoryBacking, MemoryStore
from tq.storage.recovery import recover

NOT_MSGPACK = b"\xc1 is no MessagePack"


@pytest.mark.parametrize("family", [Family.PENDING, Family.IN_PROGRESS])
def test_a_corrupt_task_record_is_named_by_its_task_id(family: Family) -> None:
    task_id = uuid.UUID(int=42)
    store = MemoryStore(MemoryBacking())
    store.write([(family, task_id.bytes, NOT_MSGPACK)])
    with pytest.raises(StorageError, match=f"in family {family.cf_name} under task {task_id}: "):
        recover(store, 0.0)


def test_a_corrupt_record_of_another_kind_is_named_by_its_key() -> None:
    store = MemoryStore(MemoryBacking())
    key = WORKER_PREFIX + b"w1"
    store.write([(Family.METADATA, key, NOT_MSGPACK)])
    with pytest.raises(StorageError, match=f"in family metadata under key {key.hex()}: "):
        recover(store, 0.0)
