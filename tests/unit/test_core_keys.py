"""API key records in the state machine: created and revoked by commands, rebuilt by recovery."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from tq.core import commands as c
from tq.core.effects import Effects
from tq.core.layout import ApiKey, Family, RateLimit, api_key_key, decode_api_key
from tq.core.machine import Machine
from tq.errors import ConflictError, ErrorCode, NotFoundError, ValidationError
from tq.storage.memory import MemoryStore
from tq.storage.recovery import recover


def key(key_id: str = "0123456789ab", **kw: Any) -> ApiKey:
    fields: dict[str, object] = {
        "id": key_id,
        "name": "ci",
        "permissions": ("submit", "read"),
        "queues": None,
        "created_at": 10.0,
        "expires_at": None,
        "revoked_at": None,
        "hash": b"$2b$12$hash",
    }
    fields.update(kw)
    return ApiKey(**fields)  # type: ignore[arg-type]


def test_a_created_key_is_stored_in_the_metadata_family_under_its_id() -> None:
    m, fx = Machine(), Effects()
    m.apply(c.CreateKey(10.0, key()), fx)
    assert m.key("0123456789ab") == key()
    [(family, k, value)] = fx.mutations
    assert (family, k) == (Family.METADATA, api_key_key("0123456789ab"))
    assert value is not None and decode_api_key(value) == key()


def test_a_second_key_with_the_same_id_is_refused_and_changes_nothing() -> None:
    m, fx = Machine(), Effects()
    m.apply(c.CreateKey(10.0, key()), fx)
    fx.clear()
    with pytest.raises(ConflictError) as e:
        m.apply(c.CreateKey(11.0, key(name="other")), fx)
    assert e.value.code is ErrorCode.KEY_ALREADY_EXISTS
    assert m.key("0123456789ab") == key() and fx.mutations == []


def test_revoking_marks_the_key_and_revoking_again_keeps_the_first_time() -> None:
    m, fx = Machine(), Effects()
    m.apply(c.CreateKey(10.0, key()), fx)
    m.apply(c.RevokeKey(20.0, "0123456789ab"), fx)
    m.apply(c.RevokeKey(30.0, "0123456789ab"), fx)
    revoked = m.key("0123456789ab")
    assert revoked is not None and revoked.revoked_at == 20.0
    assert [k.id for k in m.api_keys()] == ["0123456789ab"]  # kept: an id is never reused


def test_revoking_an_unknown_key_is_key_not_found() -> None:
    with pytest.raises(NotFoundError) as e:
        Machine().apply(c.RevokeKey(1.0, "ffffffffffff"), Effects())
    assert e.value.code is ErrorCode.KEY_NOT_FOUND


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"id": "XYZ"}, "key id"),
        ({"name": ""}, "key name"),
        ({"permissions": ()}, "at least one permission"),
        ({"permissions": ("submit", "root")}, "unknown permission 'root'"),
        ({"queues": ()}, "key queues"),
        ({"expires_at": 5.0}, "expiry"),
        ({"revoked_at": 11.0}, "created revoked"),
        ({"hash": b""}, "hash"),
        ({"rate_limits": {"fly": RateLimit(1.0, 1)}}, "unknown permission class 'fly'"),
        ({"rate_limits": {"submit": RateLimit(0.0, 1)}}, "rate > 0"),
        ({"rate_limits": {"submit": RateLimit(1.0, 0)}}, "burst >= 1"),
    ],
)
def test_a_bad_key_is_refused_naming_the_field(changes: dict[str, Any], named: str) -> None:
    m = Machine()
    with pytest.raises(ValidationError, match=named):
        m.apply(c.CreateKey(10.0, key(**changes)), Effects())
    assert m.api_keys() == []


def test_key_commands_survive_the_log_encoding() -> None:
    cmds: list[c.Command] = [
        c.CreateKey(10.0, key(rate_limits={"submit": RateLimit(5.0, 10)}, queues=("a",))),
        c.RevokeKey(11.0, "0123456789ab"),
    ]
    assert c.decode_commands(c.encode_commands(cmds)) == cmds


def test_recovery_rebuilds_the_key_table_from_storage() -> None:
    store = MemoryStore()
    m, fx = Machine(), Effects()
    m.apply(c.CreateKey(10.0, key()), fx)
    m.apply(c.CreateKey(10.0, key("aaaaaaaaaaaa", queues=("a", "b"), expires_at=99.0)), fx)
    m.apply(c.RevokeKey(12.0, "0123456789ab"), fx)
    m.end_batch(fx)
    store.write(fx.mutations, sync=True)
    restored = recover(store, now=50.0).machine
    assert restored.api_keys() == m.api_keys()
    assert restored.snapshot() == m.snapshot()
    revoked = restored.key("0123456789ab")
    assert revoked == msgspec.structs.replace(key(), revoked_at=12.0)
