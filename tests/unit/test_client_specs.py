"""Client-side building blocks: broker URLs, task specs, frame-sized batches, task outcomes."""

from __future__ import annotations

import pytest

from tq.client import AsyncClient, Client, TaskInfo, task_outcome, task_spec
from tq.client.address import BrokerAddress, parse_url
from tq.client.specs import batches
from tq.core.ids import format_task_id, make_task_id
from tq.errors import ConfigError, ErrorCode, TaskFailedError, TqError, ValidationError
from tq.protocol import SubmitTask, TaskSpec, encode, frame_size

ID = make_task_id(1_700_000_000_000, 12345)
ID_TEXT = format_task_id(ID)


@pytest.mark.parametrize(
    ("url", "address"),
    [
        ("tq://broker.local:7500", BrokerAddress("broker.local", 7500, tls=False)),
        ("tq://127.0.0.1", BrokerAddress("127.0.0.1", 7420, tls=False)),
        ("tqs://secure:443/", BrokerAddress("secure", 443, tls=True)),
        ("tq://[::1]:7420", BrokerAddress("::1", 7420, tls=False)),
    ],
)
def test_broker_urls_parse_to_host_port_and_tls(url: str, address: BrokerAddress) -> None:
    assert parse_url(url) == address


def test_an_address_prints_back_as_a_url() -> None:
    assert parse_url("tq://[::1]:1").url == "tq://[::1]:1"
    assert parse_url("tqs://h").url == "tqs://h:7420"


@pytest.mark.parametrize(
    "url",
    ["http://host:7420", "tq://", "tq://host:notaport", "tq://host:99999", "host:7420",
     "tq://host:7420/path", "tq://host:7420?x=1"],
)  # fmt: skip
def test_a_bad_broker_url_is_a_config_error_naming_it(url: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_url(url)
    assert repr(url) in info.value.message


def test_clients_refuse_a_bad_url_when_built() -> None:
    with pytest.raises(ConfigError):
        AsyncClient("http://nope")
    with pytest.raises(ConfigError):
        Client("tq://host:-1")


def test_the_default_url_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TQ_BROKER_URL", raising=False)
    assert AsyncClient().url == "tq://127.0.0.1:7420"
    monkeypatch.setenv("TQ_BROKER_URL", "tq://elsewhere:7000")
    assert AsyncClient().url == "tq://elsewhere:7000"
    assert AsyncClient("tq://explicit:1").url == "tq://explicit:1"


def test_task_spec_carries_text_ids_as_16_bytes() -> None:
    spec = task_spec(
        "t", b"p", queue="q", priority=7, depends_on=[ID_TEXT], task_id=ID_TEXT,
        tags={"k": "v"}, idempotency_key="key",
    )  # fmt: skip
    assert spec.id == ID
    assert spec.depends_on == (ID,)
    assert (spec.queue, spec.priority, spec.tags, spec.idempotency_key) == (
        "q",
        7,
        {"k": "v"},
        "key",
    )


def test_task_spec_refuses_a_text_payload_and_a_bare_string_of_dependencies() -> None:
    with pytest.raises(ValidationError, match="bytes"):
        task_spec("t", "text")  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="depends_on"):
        task_spec("t", depends_on=ID_TEXT)
    with pytest.raises(ValidationError, match="not a UUID"):
        task_spec("t", depends_on=["nope"])


def _frame_size(specs: list[TaskSpec]) -> int:
    return frame_size(encode(SubmitTask(request_id=2**64 - 1, tasks=specs)))


def test_batches_fit_the_frame_limit_and_keep_the_order() -> None:
    specs = [task_spec("t", bytes([i]) * 1000) for i in range(50)]
    runs = batches(specs, max_frame_size=10_000)
    assert len(runs) > 1
    assert [s for run in runs for s in run] == specs
    assert all(_frame_size(list(run)) <= 10_000 for run in runs)
    assert batches(specs, max_frame_size=16 * 1024 * 1024) == [specs]
    assert batches([], max_frame_size=100) == [[]]


def test_batches_keep_each_submit_reply_within_the_clients_own_frame_limit() -> None:
    specs = [task_spec("t") for _ in range(10_000)]  # tiny specs: replies outgrow requests
    runs = batches(specs, max_frame_size=16 * 1024 * 1024, reply_frame_size=65_536)
    assert [s for run in runs for s in run] == specs
    assert max(len(run) for run in runs) == (65_536 - 64) // 19
    assert len(runs) == 3


def test_a_single_task_above_the_frame_limit_is_refused_naming_it() -> None:
    with pytest.raises(ValidationError, match=r"tasks\[1\]") as info:
        batches([task_spec("a"), task_spec("big", b"x" * 5000)], max_frame_size=4096)
    assert info.value.code is ErrorCode.PAYLOAD_TOO_LARGE


def _info(state: str, **fields: object) -> TaskInfo:
    return TaskInfo(
        id=ID, task_type="t", queue="q", state=state, created_at=1.0, updated_at=2.0,
        max_retries=3, **fields,  # type: ignore[arg-type]
    )  # fmt: skip


def test_a_completed_task_yields_its_result_bytes() -> None:
    assert task_outcome(_info("completed", result=b"r")) == b"r"
    assert task_outcome(_info("completed")) == b""


def test_a_dead_lettered_task_raises_with_the_remote_type_and_message() -> None:
    with pytest.raises(TaskFailedError) as info:
        task_outcome(_info("dead_letter", error="boom", error_type="ValueError"))
    err = info.value
    assert err.code is ErrorCode.TASK_FAILED
    assert err.remote_type == "ValueError"
    assert err.task_id == ID_TEXT
    assert err.message == f"task {ID_TEXT} failed: ValueError: boom"


def test_a_cancelled_task_raises_task_cancelled() -> None:
    with pytest.raises(TaskFailedError) as info:
        task_outcome(_info("cancelled"))
    assert info.value.code is ErrorCode.TASK_CANCELLED


def test_an_unfinished_task_has_no_outcome_yet() -> None:
    with pytest.raises(TqError, match="pending"):
        task_outcome(_info("pending"))
