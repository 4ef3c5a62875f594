"""Who may do what with schedules, with auth on: creating one needs ``submit`` on its queue
(its firings submit there), pausing, resuming and deleting need ``admin`` on it, listing and
showing need ``read``; a key limited to some queues sees and touches only their schedules.
A refused call changes nothing."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tq.client import Client
from tq.client.schedules import schedule_spec
from tq.errors import ErrorCode, PermissionDeniedError
from tq.protocol import KeySpec
from tq.testing import BrokerProcess, new_api_key

pytestmark = pytest.mark.timeout(120)
ADMIN = new_api_key()


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    with BrokerProcess(tmp_path_factory.mktemp("sched-auth") / "d", api_key=ADMIN) as b:
        yield b


def key(
    broker: BrokerProcess, name: str, *permissions: str, queues: list[str] | None = None
) -> str:
    with Client(broker.url, api_key=ADMIN) as admin:
        spec = KeySpec(name=name, permissions=list(permissions), queues=queues)  # type: ignore[arg-type]
        return admin.create_key(spec)[1]


def denied(call: object) -> None:
    assert callable(call)
    with pytest.raises(PermissionDeniedError) as refused:
        call()
    assert refused.value.code is ErrorCode.PERMISSION_DENIED


def test_each_call_takes_its_permission(broker: BrokerProcess) -> None:
    spec = schedule_spec("nightly", "auth.nightly", cron="0 1 * * *", queue="jobs")
    with (
        Client(broker.url, api_key=key(broker, "w", "work")) as worker_only,
        Client(broker.url, api_key=key(broker, "s", "submit", "work")) as submitter,
        Client(broker.url, api_key=key(broker, "r", "read")) as reader,
        Client(broker.url, api_key=ADMIN) as admin,
    ):
        denied(lambda: worker_only.create_schedule(spec))
        assert admin.list_schedules() == []
        made = submitter.create_schedule(spec)
        assert [s.name for s in reader.list_schedules()] == ["nightly"]
        assert reader.get_schedule("nightly") == made
        for call in (submitter.pause_schedule, reader.resume_schedule, reader.delete_schedule):
            denied(lambda call=call: call("nightly"))
        assert admin.get_schedule("nightly") == made  # the refusals changed nothing
        assert admin.pause_schedule("nightly").paused
        admin.delete_schedule("nightly")


def test_a_key_limited_to_some_queues_sees_and_touches_only_their_schedules(
    broker: BrokerProcess,
) -> None:
    with (
        Client(broker.url, api_key=ADMIN) as admin,
        Client(broker.url, api_key=key(broker, "mine", "admin", queues=["mine"])) as scoped,
    ):
        admin.create_schedule(schedule_spec("theirs", "auth.t", interval=60, queue="theirs"))
        made = scoped.create_schedule(schedule_spec("ours", "auth.o", interval=60, queue="mine"))
        assert [s.name for s in scoped.list_schedules()] == ["ours"]
        denied(lambda: scoped.get_schedule("theirs"))
        denied(lambda: scoped.pause_schedule("theirs"))
        denied(lambda: scoped.delete_schedule("theirs"))
        denied(lambda: scoped.create_schedule(
            schedule_spec("theirs", "auth.t", interval=30, queue="mine"), replace=True
        ))  # fmt: skip
        assert (
            admin.get_schedule("theirs").interval == 60.0
            and not admin.get_schedule("theirs").paused
        )
        assert scoped.pause_schedule("ours").paused and made.name == "ours"
        assert sorted(s.name for s in admin.list_schedules()) == ["ours", "theirs"]
